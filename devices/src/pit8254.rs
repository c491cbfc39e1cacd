//! The i8254 programmable interval timer (ports 0x40..=0x43) and the PC's
//! system control port B (port 0x61), which gates and reads channel 2.
//!
//! # Time
//!
//! The PIT input clock runs at [`PIT_HZ`]. The number of clock pulses that
//! have happened by virtual time `now_ns` is
//! `tick(now_ns) = floor(now_ns * PIT_HZ / NS_PER_SEC)`, computed in u128 from
//! absolute time, so it never drifts. Pulse `k` is the instant `tick` reaches
//! `k`; an access at tick `t` takes effect from pulse `t + 1` on.
//!
//! Each channel keeps a *segment*: at pulse `base_tick` its counting element
//! (CE) held `base_count`, and from then on its count and OUT follow from the
//! mode and the number of pulses since. Gate changes, count writes and control
//! words start new segments. Nothing is stepped: every value is a closed-form
//! function of the tick, so any `now_ns` can be asked about in any order.
//!
//! # Modes (N = initial count, 0 meaning 65536; L = pulse that loads N)
//!
//! | mode | OUT                                              | gate low      | gate rising          |
//! |------|--------------------------------------------------|---------------|----------------------|
//! | 0    | low at the count write, high at pulse L+N         | pauses        | resumes              |
//! | 1    | low from trigger load L to L+N, then high         | -             | (re)triggers         |
//! | 2    | high, low for the one pulse where CE = 1, period N| OUT high, stop| reloads, restarts    |
//! | 3    | high for ceil(N/2) pulses, low for floor(N/2)      | OUT high, stop| reloads, restarts    |
//! | 4    | high, low for one pulse at L+N                     | pauses        | resumes              |
//! | 5    | like 4, started by a gate trigger                  | -             | (re)triggers         |
//!
//! L is the pulse after the count write (so mode 0 OUT rises N+1 pulses after
//! the write, as the datasheet says). A new count written to a running mode 2
//! or 3 counter takes effect at the end of the current period (the datasheet
//! says half-period for mode 3; the difference is not modelled). Modes 1 and
//! 5 never trigger on channels 0 and 1, whose gates are tied high. BCD
//! counting is supported.
//!
//! # Port 0x61
//!
//! Bit 0 gates channel 2, bit 1 enables the speaker data, bits 2..=3 are
//! plain read/write (parity and channel check enables); bit 4 is the DRAM
//! refresh request, which toggles every 18 PIT pulses (~15.09 us, as clocked
//! by channel 1 on the original PC) derived from virtual time; bit 5 is
//! channel 2's OUT. Bits 6..=7 (parity / I/O channel errors) read as 0.
//!
//! Power-on state follows QEMU: every channel in mode 3 with count 65536,
//! counting from time 0 (channel 2's gate is low, so it waits).

use serde::{Deserialize, Serialize};

use crate::NS_PER_SEC;

/// Input clock of the PIT in Hz.
pub const PIT_HZ: u64 = 1_193_182;
/// First I/O port of the PIT (channels 0..=2 at +0..=2, control word at +3).
pub const PIT_BASE: u16 = 0x40;
/// System control port B (channel 2 gate and OUT, speaker, refresh toggle).
pub const PORT61: u16 = 0x61;
/// The ISA IRQ line driven by channel 0's OUT.
pub const PIT_IRQ: u8 = 0;

/// Offset of the write-only control word register.
const REG_CONTROL: u8 = 3;

// Control word fields.
/// Select counter (bits 7:6) value 3: read-back command.
const SC_READBACK: u8 = 3;
/// Read/write access (bits 5:4) value 0: counter latch command.
const RW_LATCH: u8 = 0;
/// Access: low byte only.
const RW_LO: u8 = 1;
/// Access: high byte only.
const RW_HI: u8 = 2;
/// Access: low byte then high byte.
const RW_LOHI: u8 = 3;

// Read-back command bits.
/// Clear to latch the count of the selected counters.
const RB_NO_COUNT: u8 = 0x20;
/// Clear to latch the status of the selected counters.
const RB_NO_STATUS: u8 = 0x10;

// Status byte bits (read-back).
/// Current state of OUT.
const STATUS_OUT: u8 = 0x80;
/// Null count: the last count written has not been loaded into the CE yet.
const STATUS_NULL_COUNT: u8 = 0x40;

// Port 0x61 bits.
/// Channel 2 gate.
const P61_GATE2: u8 = 0x01;
/// Bits that read back what was written (gate 2, speaker, check enables).
const P61_WRITABLE: u8 = 0x0F;
/// Refresh request toggle.
const P61_REFRESH: u8 = 0x10;
/// Channel 2 OUT.
const P61_OUT2: u8 = 0x20;
/// PIT pulses per refresh toggle (channel 1's count of 18 on the PC/XT).
const REFRESH_TICKS: u64 = 18;

/// Number of PIT clock pulses that have happened by virtual time `now_ns`.
pub fn ticks_at(now_ns: u64) -> u64 {
    // At most ~2.2e16 for now_ns = u64::MAX, so the cast cannot truncate.
    (u128::from(now_ns) * u128::from(PIT_HZ) / u128::from(NS_PER_SEC)) as u64
}

/// Earliest virtual time at which pulse `tick` has happened:
/// `ceil(tick * NS_PER_SEC / PIT_HZ)`, or `None` past the end of time.
pub fn ns_of_tick(tick: u64) -> Option<u64> {
    let num = u128::from(tick) * u128::from(NS_PER_SEC);
    let hz = u128::from(PIT_HZ);
    u64::try_from(num.div_ceil(hz)).ok()
}

/// Saved state of one PIT channel. `Default` is channel 0 at power-on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitChannelState {
    /// Mode bits 3:1 of the control word as written (6 and 7 alias 2 and 3).
    pub mode: u8,
    /// BCD counting (control word bit 0).
    pub bcd: bool,
    /// Access mode: 1 low byte, 2 high byte, 3 low then high.
    pub access: u8,
    /// Count register: the last initial count written (1..=65536, or
    /// 1..=10000 in BCD).
    pub reload: u32,
    /// A count has been written since the last control word.
    pub armed: bool,
    /// The CE is counting (false while waiting for a count or trigger, or
    /// paused/stopped by the gate).
    pub running: bool,
    /// Pulse at which the current segment starts (CE == `base_count`).
    pub base_tick: u64,
    /// CE value at `base_tick`; while not running, the frozen CE value.
    pub base_count: u32,
    /// Modes 0/4/5: the terminal count was already reached before this
    /// segment, so OUT stays high.
    pub tc_done: bool,
    /// OUT before `base_tick`, and while not running.
    pub preload_out: bool,
    /// Mode 2/3: a count written while running, loaded at the given pulse
    /// (the end of the current period).
    pub pending_reload: Option<(u64, u32)>,
    /// Modes 1/5: a count was written that no trigger has loaded yet.
    pub cr_unloaded: bool,
    /// Gate input level.
    pub gate: bool,
    /// Low/high access: the next write is the high byte.
    pub write_hi_next: bool,
    /// Low byte held until the high byte is written.
    pub write_lo: u8,
    /// Low/high access: the next read is the high byte.
    pub read_hi_next: bool,
    /// Count latched by a latch or read-back command, not yet fully read.
    pub latched_count: Option<u16>,
    /// Status latched by a read-back command, not yet read.
    pub latched_status: Option<u8>,
}

impl Default for PitChannelState {
    fn default() -> Self {
        PitChannelState {
            mode: 3,
            bcd: false,
            access: RW_LOHI,
            reload: 0x10000,
            armed: true,
            running: true,
            base_tick: 0,
            base_count: 0x10000,
            tc_done: false,
            preload_out: true,
            pending_reload: None,
            cr_unloaded: false,
            gate: true,
            write_hi_next: false,
            write_lo: 0,
            read_hi_next: false,
            latched_count: None,
            latched_status: None,
        }
    }
}

/// Saved state of the PIT and port 0x61. `Default` is the power-on state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitState {
    /// Channels 0, 1, 2.
    pub channels: [PitChannelState; 3],
    /// Port 0x61 bits 0..=3 as last written (bit 0 mirrors channel 2's gate).
    pub port61: u8,
}

impl Default for PitState {
    fn default() -> Self {
        let ch2 = PitChannelState {
            gate: false,
            running: false,
            ..PitChannelState::default()
        };
        PitState {
            channels: [PitChannelState::default(), PitChannelState::default(), ch2],
            port61: 0,
        }
    }
}

/// One counting segment: what the CE does from pulse `l` on.
#[derive(Clone, Copy, Debug)]
struct Seg {
    /// Normalized mode 0..=5.
    mode: u8,
    /// Pulse at which the CE holds `n`.
    l: u64,
    /// CE value at `l` (at least 1).
    n: u64,
    tc_done: bool,
    preload_out: bool,
}

impl Seg {
    fn out(&self, t: u64) -> bool {
        if t < self.l {
            return self.preload_out;
        }
        let e = t - self.l;
        let n = self.n;
        match self.mode {
            0 => self.tc_done || e >= n,
            1 => e >= n,
            2 => e % n != n - 1,
            3 => e % n < n.div_ceil(2),
            _ => self.tc_done || e != n,
        }
    }

    /// Raw CE value at tick `t`, reduced modulo `modulus`.
    fn count(&self, t: u64, modulus: u64) -> u64 {
        let n = self.n;
        if t < self.l {
            return n % modulus;
        }
        let e = t - self.l;
        match self.mode {
            2 => (n - e % n) % modulus,
            3 => {
                // The CE counts down by two; odd counts spend one more pulse
                // high than low.
                let p = e % n;
                let high = n.div_ceil(2);
                let even = n & !1;
                let q = if p < high { p } else { p - high };
                even.saturating_sub(2 * q) % modulus
            }
            _ => (n % modulus + modulus - e % modulus) % modulus,
        }
    }

    /// First tick after `t` at which OUT differs from OUT at `t`.
    fn next_change(&self, t: u64) -> Option<u64> {
        if t < self.l {
            if self.out(self.l) != self.preload_out {
                return Some(self.l);
            }
            return self.next_change(self.l);
        }
        let e = t - self.l;
        let n = self.n;
        let at = |k: u64| Some(self.l.saturating_add(k));
        match self.mode {
            0 | 1 => {
                if (self.mode == 0 && self.tc_done) || e >= n {
                    None
                } else {
                    at(n)
                }
            }
            2 => {
                if n <= 1 {
                    return None;
                }
                let p = e % n;
                if p < n - 1 {
                    Some(t.saturating_add(n - 1 - p))
                } else {
                    Some(t.saturating_add(1))
                }
            }
            3 => {
                let high = n.div_ceil(2);
                if high >= n {
                    return None;
                }
                let p = e % n;
                if p < high {
                    Some(t.saturating_add(high - p))
                } else {
                    Some(t.saturating_add(n - p))
                }
            }
            _ => {
                if self.tc_done || e > n {
                    None
                } else if e < n {
                    at(n)
                } else {
                    Some(t.saturating_add(1))
                }
            }
        }
    }
}

fn bcd_to_bin(v: u16) -> u32 {
    let d = |shift: u32| u32::from((v >> shift) & 0xF);
    d(12) * 1000 + d(8) * 100 + d(4) * 10 + d(0)
}

fn bin_to_bcd(v: u64) -> u16 {
    let v = v % 10000;
    let digit = |div: u64| ((v / div) % 10) as u16;
    (digit(1000) << 12) | (digit(100) << 8) | (digit(10) << 4) | digit(1)
}

/// One channel, operating on its saved state.
impl PitChannelState {
    /// Mode with the 6/7 aliases folded onto 2/3.
    fn norm_mode(&self) -> u8 {
        match self.mode & 7 {
            6 => 2,
            7 => 3,
            m => m,
        }
    }

    fn modulus(&self) -> u64 {
        if self.bcd {
            10000
        } else {
            0x10000
        }
    }

    fn seg(&self) -> Seg {
        Seg {
            mode: self.norm_mode(),
            l: self.base_tick,
            n: u64::from(self.base_count).max(1),
            tc_done: self.tc_done,
            preload_out: self.preload_out,
        }
    }

    fn pending_seg(&self, pt: u64, pc: u32) -> Seg {
        Seg {
            mode: self.norm_mode(),
            l: pt,
            n: u64::from(pc).max(1),
            tc_done: false,
            preload_out: true,
        }
    }

    /// The segment in force at tick `t`.
    fn seg_at(&self, t: u64) -> Seg {
        match self.pending_reload {
            Some((pt, pc)) if t >= pt => self.pending_seg(pt, pc),
            _ => self.seg(),
        }
    }

    fn out(&self, t: u64) -> bool {
        if !self.running {
            return self.preload_out;
        }
        self.seg_at(t).out(t)
    }

    /// CE value at `t` as the guest reads it (BCD-encoded in BCD mode).
    fn count(&self, t: u64) -> u16 {
        let raw = if self.running {
            self.seg_at(t).count(t, self.modulus())
        } else {
            u64::from(self.base_count) % self.modulus()
        };
        if self.bcd {
            bin_to_bcd(raw)
        } else {
            raw as u16
        }
    }

    fn next_change(&self, t: u64) -> Option<u64> {
        if !self.running {
            return None;
        }
        match self.pending_reload {
            Some((pt, pc)) if t < pt => {
                let old = self.seg();
                if let Some(c) = old.next_change(t) {
                    if c < pt {
                        return Some(c);
                    }
                }
                let new = self.pending_seg(pt, pc);
                if new.out(pt) != old.out(t) {
                    return Some(pt);
                }
                new.next_change(pt)
            }
            _ => self.seg_at(t).next_change(t),
        }
    }

    fn null_count(&self, t: u64) -> bool {
        !self.armed
            || self.cr_unloaded
            || (self.running && t < self.base_tick)
            || matches!(self.pending_reload, Some((pt, _)) if t < pt)
    }

    fn status(&self, t: u64) -> u8 {
        let mut st = ((self.access & 3) << 4) | ((self.mode & 7) << 1) | u8::from(self.bcd);
        if self.out(t) {
            st |= STATUS_OUT;
        }
        if self.null_count(t) {
            st |= STATUS_NULL_COUNT;
        }
        st
    }

    /// Folds a pending reload whose pulse has come into the base segment.
    fn settle(&mut self, t: u64) {
        if let Some((pt, pc)) = self.pending_reload {
            if t >= pt {
                self.base_tick = pt;
                self.base_count = pc;
                self.tc_done = false;
                self.preload_out = true;
                self.pending_reload = None;
            }
        }
    }

    /// Stops counting at tick `t`, keeping the CE value and OUT.
    fn freeze(&mut self, t: u64) {
        self.settle(t);
        if !self.running {
            return;
        }
        let seg = self.seg();
        let out = seg.out(t);
        if t >= seg.l {
            let e = t - seg.l;
            match seg.mode {
                0 | 1 | 4 | 5 if e < seg.n => self.base_count = (seg.n - e) as u32,
                0 | 1 | 4 | 5 => {
                    self.tc_done = true;
                    let m = self.modulus();
                    let v = seg.count(t, m);
                    self.base_count = if v == 0 { m as u32 } else { v as u32 };
                }
                _ => self.base_count = seg.count(t, self.modulus()) as u32,
            }
        }
        self.preload_out = out;
        self.running = false;
        self.pending_reload = None;
    }

    /// Loads `n` into the CE on the pulse after tick `t`.
    fn load_next_pulse(&mut self, t: u64, n: u32, preload_out: bool) {
        self.base_tick = t.saturating_add(1);
        self.base_count = n;
        self.tc_done = false;
        self.preload_out = preload_out;
        self.pending_reload = None;
        self.running = true;
    }

    fn set_gate(&mut self, t: u64, level: bool) {
        self.settle(t);
        let was = self.gate;
        self.gate = level;
        if was == level {
            return;
        }
        let mode = self.norm_mode();
        match (mode, level) {
            (0 | 4, false) => {
                self.freeze(t);
                if mode == 4 {
                    self.preload_out = true;
                }
            }
            (0 | 4, true) => {
                if self.armed && !self.running {
                    // Resume: the CE holds base_count now, counts from t+1.
                    self.base_tick = t;
                    self.running = true;
                }
            }
            (2 | 3, false) => {
                self.freeze(t);
                self.preload_out = true;
            }
            (2 | 3, true) => {
                if self.armed {
                    self.load_next_pulse(t, self.reload, true);
                }
            }
            (_, true) => {
                // Modes 1 and 5: a rising gate (re)triggers the one-shot.
                if self.armed {
                    let out = if mode == 1 { self.out(t) } else { true };
                    self.load_next_pulse(t, self.reload, out);
                    self.cr_unloaded = false;
                }
            }
            (_, false) => {}
        }
    }

    fn write_control(&mut self, t: u64, value: u8) {
        // Keep the CE value visible to reads; all control logic resets.
        self.freeze(t);
        self.mode = (value >> 1) & 7;
        self.bcd = value & 1 != 0;
        self.access = (value >> 4) & 3;
        self.armed = false;
        self.running = false;
        self.tc_done = false;
        self.cr_unloaded = false;
        self.pending_reload = None;
        self.preload_out = self.norm_mode() != 0;
        self.write_hi_next = false;
        self.read_hi_next = false;
    }

    fn latch_count(&mut self, t: u64) {
        if self.latched_count.is_none() {
            self.latched_count = Some(self.count(t));
        }
    }

    fn latch_status(&mut self, t: u64) {
        if self.latched_status.is_none() {
            self.latched_status = Some(self.status(t));
        }
    }

    /// Picks the byte of `value` the access mode says is next.
    fn next_read_byte(&mut self, value: u16) -> (u8, bool) {
        let [lo, hi] = value.to_le_bytes();
        match self.access {
            RW_LO => (lo, true),
            RW_HI => (hi, true),
            _ => {
                if self.read_hi_next {
                    self.read_hi_next = false;
                    (hi, true)
                } else {
                    self.read_hi_next = true;
                    (lo, false)
                }
            }
        }
    }

    fn read(&mut self, t: u64) -> u8 {
        self.settle(t);
        if let Some(st) = self.latched_status.take() {
            return st;
        }
        if let Some(c) = self.latched_count {
            let (b, done) = self.next_read_byte(c);
            if done {
                self.latched_count = None;
            }
            return b;
        }
        let c = self.count(t);
        self.next_read_byte(c).0
    }

    fn write(&mut self, t: u64, value: u8) {
        self.settle(t);
        match self.access {
            RW_LO => self.write_count(t, u16::from(value)),
            RW_HI => self.write_count(t, u16::from(value) << 8),
            _ => {
                if self.write_hi_next {
                    self.write_hi_next = false;
                    self.write_count(t, u16::from_le_bytes([self.write_lo, value]));
                } else {
                    self.write_hi_next = true;
                    self.write_lo = value;
                    if self.norm_mode() == 0 && self.armed {
                        // Mode 0: the first byte stops counting, OUT goes low.
                        self.freeze(t);
                        self.preload_out = false;
                        self.tc_done = false;
                    }
                }
            }
        }
    }

    /// A complete initial count `raw` has been written at tick `t`.
    fn write_count(&mut self, t: u64, raw: u16) {
        let n = if self.bcd {
            match bcd_to_bin(raw) {
                0 => 10000,
                v => v,
            }
        } else {
            match raw {
                0 => 0x10000,
                v => u32::from(v),
            }
        };
        self.reload = n;
        let first = !self.armed;
        self.armed = true;
        match self.norm_mode() {
            m @ (0 | 4) => {
                // Loaded on the next pulse; counts only while the gate is high.
                self.load_next_pulse(t, n, m == 4);
                self.running = self.gate;
            }
            2 | 3 => {
                if !self.running {
                    // Waiting for a count (or gate): start now if gated on.
                    self.base_count = n;
                    self.preload_out = true;
                    if self.gate {
                        self.load_next_pulse(t, n, true);
                    }
                } else if first || t < self.base_tick {
                    self.load_next_pulse(t, n, true);
                } else if let Some((pt, _)) = self.pending_reload {
                    self.pending_reload = Some((pt, n));
                } else {
                    // Load at the end of the current period.
                    let seg = self.seg();
                    let periods = (t - seg.l) / seg.n + 1;
                    let pt = seg.l.saturating_add(periods.saturating_mul(seg.n));
                    self.pending_reload = Some((pt, n));
                }
            }
            _ => {
                // Modes 1/5: the count waits for a gate trigger.
                self.cr_unloaded = true;
                if first {
                    self.running = false;
                    self.preload_out = true;
                    self.base_count = n;
                }
            }
        }
    }
}

/// The i8254 PIT plus port 0x61. See the module documentation.
#[derive(Clone, Debug)]
pub struct Pit {
    state: PitState,
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit {
    /// A PIT in its power-on state.
    pub fn new() -> Self {
        Self::from_state(&PitState::default())
    }

    /// Rebuilds the PIT from saved state.
    pub fn from_state(state: &PitState) -> Self {
        Pit {
            state: state.clone(),
        }
    }

    /// The guest-visible state, for a snapshot.
    pub fn state(&self) -> PitState {
        self.state.clone()
    }

    /// Reads port `PIT_BASE + offset` (offset 0..=3) at virtual time
    /// `now_ns`. The control register is write-only and, like offsets past
    /// 3, reads as a floating bus (0xFF).
    pub fn read(&mut self, now_ns: u64, offset: u8) -> u8 {
        let t = ticks_at(now_ns);
        match self.state.channels.get_mut(usize::from(offset)) {
            Some(ch) => ch.read(t),
            None => 0xFF,
        }
    }

    /// Writes port `PIT_BASE + offset` (offset 0..=3) at virtual time
    /// `now_ns`. Offsets past 3 are ignored.
    pub fn write(&mut self, now_ns: u64, offset: u8, value: u8) {
        let t = ticks_at(now_ns);
        if offset == REG_CONTROL {
            self.write_control(t, value);
        } else if let Some(ch) = self.state.channels.get_mut(usize::from(offset)) {
            ch.write(t, value);
        }
    }

    /// Level of channel 0's OUT, which drives IRQ 0, at `now_ns`.
    pub fn irq0_level(&self, now_ns: u64) -> bool {
        self.output(0, now_ns)
    }

    /// Level of channel `channel`'s OUT at `now_ns` (false for channels
    /// past 2).
    pub fn output(&self, channel: usize, now_ns: u64) -> bool {
        self.state
            .channels
            .get(channel)
            .is_some_and(|ch| ch.out(ticks_at(now_ns)))
    }

    /// Absolute virtual time (ns, greater than `now_ns`) at which channel 0's
    /// OUT next changes, or `None` if it never will without a guest access.
    /// At the returned time the PIT pulse has happened; one ns earlier it
    /// has not.
    pub fn next_deadline(&self, now_ns: u64) -> Option<u64> {
        let ch = &self.state.channels[0];
        ch.next_change(ticks_at(now_ns)).and_then(ns_of_tick)
    }

    /// Reads port 0x61 at `now_ns`: written bits 0..=3, the refresh toggle
    /// (bit 4) and channel 2's OUT (bit 5).
    pub fn read_port61(&self, now_ns: u64) -> u8 {
        let t = ticks_at(now_ns);
        let mut v = self.state.port61 & P61_WRITABLE;
        if (t / REFRESH_TICKS) & 1 != 0 {
            v |= P61_REFRESH;
        }
        if self.state.channels[2].out(t) {
            v |= P61_OUT2;
        }
        v
    }

    /// Writes port 0x61 at `now_ns`: bit 0 drives channel 2's gate, bits
    /// 1..=3 are stored; the read-only bits are ignored.
    pub fn write_port61(&mut self, now_ns: u64, value: u8) {
        let t = ticks_at(now_ns);
        self.state.port61 = value & P61_WRITABLE;
        self.state.channels[2].set_gate(t, value & P61_GATE2 != 0);
    }

    /// The speaker is sounding channel 2: port 0x61 bits 0 and 1 both set.
    pub fn speaker_enabled(&self) -> bool {
        self.state.port61 & 0x03 == 0x03
    }

    fn write_control(&mut self, t: u64, value: u8) {
        let sc = value >> 6;
        if sc == SC_READBACK {
            for (i, ch) in self.state.channels.iter_mut().enumerate() {
                if value & (2 << i) == 0 {
                    continue;
                }
                ch.settle(t);
                // Status is latched first so it reads out before the count.
                if value & RB_NO_STATUS == 0 {
                    ch.latch_status(t);
                }
                if value & RB_NO_COUNT == 0 {
                    ch.latch_count(t);
                }
            }
            return;
        }
        let ch = &mut self.state.channels[usize::from(sc)];
        if (value >> 4) & 3 == RW_LATCH {
            ch.settle(t);
            ch.latch_count(t);
        } else {
            ch.write_control(t, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CH0: u8 = 0;
    const CH2: u8 = 2;

    /// Time at which pulse `k` has just happened.
    fn ns(k: u64) -> u64 {
        ns_of_tick(k).unwrap()
    }

    fn program(pit: &mut Pit, now: u64, ch: u8, mode: u8, count: u16) {
        pit.write(now, REG_CONTROL, (ch << 6) | (RW_LOHI << 4) | (mode << 1));
        let [lo, hi] = count.to_le_bytes();
        pit.write(now, ch, lo);
        pit.write(now, ch, hi);
    }

    fn read16(pit: &mut Pit, now: u64, ch: u8) -> u16 {
        let lo = pit.read(now, ch);
        let hi = pit.read(now, ch);
        u16::from_le_bytes([lo, hi])
    }

    #[test]
    fn tick_conversion_is_exact() {
        assert_eq!(ticks_at(0), 0);
        assert_eq!(ticks_at(NS_PER_SEC), PIT_HZ);
        assert_eq!(ticks_at(NS_PER_SEC * 3600), PIT_HZ * 3600);
        for k in [1u64, 2, 1193, 1_193_182, 123_456_789, 1 << 40] {
            let t = ns(k);
            assert_eq!(ticks_at(t), k);
            assert_eq!(ticks_at(t - 1), k - 1);
        }
        let last = ticks_at(u64::MAX);
        assert_eq!(last, 22_010_322_987_356_910);
        assert!(ns_of_tick(last).is_some_and(|t| ticks_at(t) == last));
        assert!(ns_of_tick(u64::MAX).is_none());
    }

    #[test]
    fn power_on_channel0_runs_mode3_65536() {
        let pit = Pit::new();
        assert!(pit.irq0_level(0));
        let d = pit.next_deadline(0).unwrap();
        assert_eq!(d, ns(32768));
        assert!(!pit.irq0_level(d));
        assert_eq!(pit.next_deadline(d), Some(ns(65536)));
        assert!(pit.irq0_level(ns(65536)));
        // Channel 2 is gated off.
        assert_eq!(pit.read_port61(0) & P61_OUT2, P61_OUT2);
    }

    #[test]
    fn mode2_rate_generator_1ms() {
        let mut pit = Pit::new();
        let t0 = 5_000;
        program(&mut pit, t0, CH0, 2, 1193);
        let w = ticks_at(t0);
        // Loaded at pulse w+1; OUT low when the CE reaches 1.
        let low = w + 1 + 1192;
        let d = pit.next_deadline(t0).unwrap();
        assert_eq!(d, ns(low));
        assert!(pit.irq0_level(d - 1));
        assert!(!pit.irq0_level(d));
        let up = pit.next_deadline(d).unwrap();
        assert_eq!(up, ns(low + 1));
        assert!(!pit.irq0_level(up - 1));
        assert!(pit.irq0_level(up));
        // Period of the rising edges: 1193 pulses ~ 999.85 us.
        let mut now = up;
        let mut rises = vec![up];
        while rises.len() < 4 {
            now = pit.next_deadline(now).unwrap();
            if pit.irq0_level(now) {
                rises.push(now);
            }
        }
        for w in rises.windows(2) {
            let period = w[1] - w[0];
            assert!((999_846..=999_848).contains(&period), "{period}");
        }
    }

    #[test]
    fn mode2_no_drift_over_a_second() {
        let mut pit = Pit::new();
        program(&mut pit, 0, CH0, 2, 1193);
        let mut now = 0;
        let mut level = pit.irq0_level(0);
        let mut rises = 0;
        while let Some(d) = pit.next_deadline(now) {
            if d > NS_PER_SEC * 10 {
                break;
            }
            let l = pit.irq0_level(d);
            assert_ne!(l, level, "deadline must be an output change");
            if l {
                rises += 1;
            }
            level = l;
            now = d;
        }
        // Rising edges at pulses 1 + 1193k for k >= 1 within 11_931_820 pulses.
        assert_eq!(rises, (PIT_HZ * 10 - 1) / 1193);
    }

    #[test]
    fn mode0_interrupt_on_terminal_count() {
        let mut pit = Pit::new();
        let t0 = ns(1000) + 3;
        pit.write(t0, REG_CONTROL, 0x30);
        assert!(!pit.irq0_level(t0), "mode 0 OUT low after control word");
        assert_eq!(pit.next_deadline(t0), None, "no count yet");
        pit.write(t0, 0, 100);
        pit.write(t0, 0, 0);
        let d = pit.next_deadline(t0).unwrap();
        assert_eq!(d, ns(1000 + 101));
        assert!(!pit.irq0_level(d - 1));
        assert!(pit.irq0_level(d));
        assert_eq!(pit.next_deadline(d), None);
        // Counter keeps counting down through zero.
        assert_eq!(read16(&mut pit, ns(1000 + 1), 0), 100);
        assert_eq!(read16(&mut pit, ns(1000 + 51), 0), 50);
        assert_eq!(read16(&mut pit, ns(1000 + 102), 0), 0xFFFF);
        // Rewriting the count: first byte drops OUT and stops counting.
        let t1 = ns(2000);
        pit.write(t1, 0, 10);
        assert!(!pit.irq0_level(t1));
        assert_eq!(pit.next_deadline(t1), None);
        pit.write(ns(2005), 0, 0);
        assert_eq!(pit.next_deadline(ns(2005)), Some(ns(2005 + 11)));
    }

    #[test]
    fn mode0_count_zero_is_65536() {
        let mut pit = Pit::new();
        program(&mut pit, 0, CH0, 0, 0);
        assert_eq!(pit.next_deadline(0), Some(ns(65537)));
    }

    #[test]
    fn mode3_square_wave_even_and_odd() {
        let mut pit = Pit::new();
        program(&mut pit, 0, CH0, 3, 4);
        let expect = [true, true, true, false, false, true, true, false, false];
        for (k, &e) in expect.iter().enumerate() {
            assert_eq!(pit.irq0_level(ns(k as u64)), e, "pulse {k}");
        }
        assert_eq!(pit.next_deadline(ns(1)), Some(ns(3)));
        assert_eq!(pit.next_deadline(ns(3)), Some(ns(5)));
        program(&mut pit, ns(100), CH0, 3, 5);
        // Load at 101: high 101..=103, low 104..=105, high from 106.
        let outs: Vec<bool> = (100..108).map(|k| pit.irq0_level(ns(k))).collect();
        assert_eq!(outs, [true, true, true, true, false, false, true, true]);
        assert_eq!(pit.next_deadline(ns(101)), Some(ns(104)));
        assert_eq!(pit.next_deadline(ns(104)), Some(ns(106)));
    }

    #[test]
    fn mode4_software_strobe() {
        let mut pit = Pit::new();
        program(&mut pit, 0, CH0, 4, 10);
        assert!(pit.irq0_level(0));
        let d = pit.next_deadline(0).unwrap();
        assert_eq!(d, ns(11));
        assert!(pit.irq0_level(d - 1));
        assert!(!pit.irq0_level(d));
        assert_eq!(pit.next_deadline(d), Some(ns(12)));
        assert!(pit.irq0_level(ns(12)));
        assert_eq!(pit.next_deadline(ns(12)), None);
    }

    #[test]
    fn mode1_and_5_need_a_gate_trigger() {
        let mut pit = Pit::new();
        program(&mut pit, 0, CH2, 1, 10);
        assert_eq!(pit.read_port61(0) & P61_OUT2, P61_OUT2);
        pit.write_port61(ns(5), 0x01);
        assert_eq!(pit.read_port61(ns(5)) & P61_OUT2, P61_OUT2);
        assert_eq!(pit.read_port61(ns(6)) & P61_OUT2, 0);
        assert_eq!(pit.read_port61(ns(15)) & P61_OUT2, 0);
        assert_eq!(pit.read_port61(ns(16)) & P61_OUT2, P61_OUT2);
        program(&mut pit, ns(20), CH2, 5, 3);
        pit.write_port61(ns(21), 0x00);
        pit.write_port61(ns(22), 0x01);
        let outs: Vec<bool> = (22..28).map(|k| pit.output(2, ns(k))).collect();
        assert_eq!(outs, [true, true, true, true, false, true]);
        // Channel 0 never triggers in mode 1: OUT stays high.
        program(&mut pit, 0, CH0, 1, 10);
        assert!(pit.irq0_level(ns(50)));
        assert_eq!(pit.next_deadline(0), None);
    }

    #[test]
    fn counter_latch() {
        let mut pit = Pit::new();
        program(&mut pit, 0, CH0, 2, 1000);
        pit.write(ns(101), REG_CONTROL, 0x00); // latch channel 0
        pit.write(ns(200), REG_CONTROL, 0x00); // ignored: already latched
        assert_eq!(read16(&mut pit, ns(300), 0), 900);
        assert_eq!(read16(&mut pit, ns(301), 0), 700);
        // Low-byte-only access reads one byte of the latch.
        pit.write(ns(400), REG_CONTROL, 0x14); // ch0, lo, mode 2
        pit.write(ns(400), 0, 50);
        pit.write(ns(411), REG_CONTROL, 0x00);
        assert_eq!(pit.read(ns(420), 0), 40);
        assert_eq!(pit.read(ns(420), 0), 31);
    }

    #[test]
    fn read_back_status_and_count() {
        let mut pit = Pit::new();
        pit.write(0, REG_CONTROL, 0xB0); // ch2, lohi, mode 0
        pit.write(0, REG_CONTROL, 0xE8); // read-back status of ch2
        assert_eq!(pit.read(0, 2), 0x70, "OUT low, null count, lohi, mode 0");
        pit.write(0, 2, 0x34);
        pit.write(0, 2, 0x12);
        pit.write_port61(ns(10), 0x01);
        // Count and status latched together: status first.
        pit.write(ns(20), REG_CONTROL, 0xC8);
        assert_eq!(pit.read(ns(30), 2), 0x30);
        assert_eq!(read16(&mut pit, ns(30), 2), 0x1234 - 10);
        // Read-back count only, several channels.
        program(&mut pit, 0, CH0, 2, 500);
        pit.write(ns(51), REG_CONTROL, 0xDA); // count only, ch0 and ch2
        assert_eq!(read16(&mut pit, ns(60), 0), 450);
        assert_eq!(read16(&mut pit, ns(60), 2), 0x1234 - 51 + 10);
        assert_eq!(pit.read(ns(60), 3), 0xFF);
    }

    #[test]
    fn channel2_through_port61() {
        let mut pit = Pit::new();
        pit.write_port61(0, 0x00);
        program(&mut pit, 0, CH2, 0, 1000);
        assert_eq!(pit.read_port61(ns(5000)) & P61_OUT2, 0, "gate low: paused");
        pit.write_port61(ns(5000), 0x03);
        assert!(pit.speaker_enabled());
        assert_eq!(pit.read_port61(ns(5000)) & 0x0F, 0x03);
        assert_eq!(pit.read_port61(ns(5999)) & P61_OUT2, 0);
        assert_eq!(pit.read_port61(ns(6000)) & P61_OUT2, P61_OUT2);
        // Pause mid-count, resume later.
        program(&mut pit, ns(7000), CH2, 0, 100);
        pit.write_port61(ns(7051), 0x00);
        assert_eq!(read16(&mut pit, ns(9000), 2), 50);
        pit.write_port61(ns(9000), 0x01);
        assert_eq!(pit.read_port61(ns(9049)) & P61_OUT2, 0);
        assert_eq!(pit.read_port61(ns(9050)) & P61_OUT2, P61_OUT2);
        // Mode 2 with gate low: OUT forced high; rising gate restarts.
        program(&mut pit, ns(10_000), CH2, 2, 4);
        pit.write_port61(ns(10_002), 0x00);
        assert_eq!(pit.read_port61(ns(10_500)) & P61_OUT2, P61_OUT2);
        pit.write_port61(ns(10_500), 0x01);
        assert_eq!(pit.read_port61(ns(10_503)) & P61_OUT2, P61_OUT2);
        assert_eq!(pit.read_port61(ns(10_504)) & P61_OUT2, 0);
        assert_eq!(pit.read_port61(ns(10_505)) & P61_OUT2, P61_OUT2);
    }

    #[test]
    fn refresh_toggle_is_virtual_time() {
        let pit = Pit::new();
        assert_eq!(pit.read_port61(0) & P61_REFRESH, 0);
        assert_eq!(pit.read_port61(ns(17)) & P61_REFRESH, 0);
        assert_eq!(pit.read_port61(ns(18)) & P61_REFRESH, P61_REFRESH);
        assert_eq!(pit.read_port61(ns(36)) & P61_REFRESH, 0);
        let mut toggles = 0;
        let mut last = 0;
        for us in 0..1000u64 {
            let b = pit.read_port61(us * 1000) & P61_REFRESH;
            if b != last {
                toggles += 1;
            }
            last = b;
        }
        assert!((60..=70).contains(&toggles), "{toggles}");
    }

    #[test]
    fn mode2_new_count_waits_for_period_end() {
        let mut pit = Pit::new();
        program(&mut pit, 0, CH0, 2, 10);
        // Load at 1: low at 10, 20, ...; write new count 5 at pulse 13.
        pit.write(ns(13), 0, 5);
        pit.write(ns(13), 0, 0);
        assert_eq!(pit.next_deadline(ns(13)), Some(ns(20)));
        assert_eq!(pit.next_deadline(ns(20)), Some(ns(21)));
        // New period from pulse 21: low at 25, 30.
        assert_eq!(pit.next_deadline(ns(21)), Some(ns(25)));
        assert!(!pit.irq0_level(ns(30)));
        assert_eq!(read16(&mut pit, ns(22), 0), 4);
    }

    #[test]
    fn bcd_counting() {
        let mut pit = Pit::new();
        pit.write(0, REG_CONTROL, 0x31); // ch0 lohi mode 0 BCD
        pit.write(0, 0, 0x00);
        pit.write(0, 0, 0x10); // 1000 decimal
        assert_eq!(pit.next_deadline(0), Some(ns(1001)));
        assert_eq!(read16(&mut pit, ns(1 + 1), 0), 0x0999);
        // BCD 0 is 10000.
        pit.write(0, 0, 0);
        pit.write(0, 0, 0);
        assert_eq!(pit.next_deadline(0), Some(ns(10001)));
        assert_eq!(read16(&mut pit, ns(10002), 0), 0x9999);
        // Invalid digits do not panic.
        pit.write(0, 0, 0xFF);
        pit.write(0, 0, 0xFF);
        let _ = read16(&mut pit, ns(20000), 0);
    }

    #[test]
    fn lo_and_hi_access_modes() {
        let mut pit = Pit::new();
        pit.write(0, REG_CONTROL, 0x24); // ch0, hi only, mode 2
        pit.write(0, 0, 0x02); // count 0x200
        assert_eq!(pit.read(ns(1), 0), 0x02);
        assert_eq!(pit.read(ns(2), 0), 0x01);
        assert_eq!(pit.next_deadline(0), Some(ns(1 + 0x1FF)));
    }

    #[test]
    fn garbage_never_panics() {
        let mut pit = Pit::new();
        let mut now = 0u64;
        let mut x = 0x1234_5678u32;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let [a, b, c, _] = x.to_le_bytes();
            now = now.wrapping_add(u64::from(c) * 37);
            match a % 4 {
                0 => pit.write(now, b % 5, c),
                1 => {
                    let _ = pit.read(now, b % 5);
                }
                2 => pit.write_port61(now, b),
                _ => {
                    let _ = pit.read_port61(now);
                }
            }
            if let Some(d) = pit.next_deadline(now) {
                assert!(d > now);
                assert_ne!(pit.irq0_level(d), pit.irq0_level(d - 1));
            }
        }
        // Times near the end of u64 and a hostile snapshot.
        let _ = pit.next_deadline(u64::MAX);
        let _ = pit.read(u64::MAX, 0);
        let mut st = pit.state();
        for ch in st.channels.iter_mut() {
            ch.base_count = 0;
            ch.base_tick = u64::MAX;
            ch.pending_reload = Some((u64::MAX, 0));
            ch.access = 0xFF;
            ch.mode = 0xFF;
        }
        let mut pit = Pit::from_state(&st);
        for off in 0..4 {
            let _ = pit.read(1, off);
            pit.write(2, off, 0xFF);
        }
        let _ = pit.next_deadline(5);
        let _ = pit.next_deadline(u64::MAX);
    }

    #[test]
    fn snapshot_roundtrip() {
        let mut pit = Pit::new();
        program(&mut pit, 100, CH0, 2, 1193);
        program(&mut pit, 100, CH2, 3, 77);
        pit.write_port61(200, 0x03);
        pit.write(300, REG_CONTROL, 0x00);
        let saved = pit.state();
        let deadline = pit.next_deadline(500);

        pit.write(600, REG_CONTROL, 0x30);
        pit.write_port61(600, 0);
        let _ = pit.read(600, 0);
        assert_ne!(pit.state(), saved);

        let mut r = Pit::from_state(&saved);
        assert_eq!(r.state(), saved);
        assert_eq!(r.next_deadline(500), deadline);
        let latched = read16(&mut r, 900, 0);
        assert_eq!(latched, 1193);
    }
}
