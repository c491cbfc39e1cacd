//! The MC146818 real-time clock and its 128 bytes of CMOS RAM (ports
//! 0x70/0x71, IRQ 8).
//!
//! Port 0x70 selects a register (bits 6:0) and masks NMI (bit 7); port 0x71
//! reads or writes the selected register. Registers 0x00..=0x09 hold the
//! time, 0x0A..=0x0D are status registers A..D, 0x32 is the century (as
//! QEMU and ACPI's FADT `century` field place it) and the rest is plain
//! battery-backed RAM, which the machine fills with the memory-size bytes
//! SeaBIOS reads.
//!
//! # Time
//!
//! The wall-clock time at boot is an external input: it is given once, as
//! Unix seconds, to [`CmosRtc::with_config`] (the machine records it in the
//! trace). From then on the clock is a pure function of virtual time: the
//! divider chain runs at 32768 Hz of virtual time, `tick(now) =
//! floor((now_ns - origin_ns) * 32768 / 10^9)`, and an *update cycle* (the
//! time registers advancing by one second) happens every 32768 ticks, i.e.
//! at `origin_ns + k * 10^9`. At power-on `origin_ns` is 0, so at virtual
//! time `t` the clock reads `boot + floor(t / 10^9)`.
//!
//! * Register A bit 7 (UIP) is high for the 8 ticks (244.14 us) before each
//!   update, the warning the datasheet guarantees; the update itself is
//!   instantaneous, so time registers always read consistent values.
//! * Setting register B's SET bit, or holding the divider in reset
//!   (register A DV bits 6:4 not 000/001/010, as QEMU decides), stops the
//!   clock: the time registers then hold plain bytes that the guest can
//!   rewrite. Clearing SET restarts the clock from those bytes in the same
//!   update phase; releasing the divider from reset restarts it with the
//!   first update 500 ms later, as the datasheet says. A time register
//!   written while the clock runs sets the clock at once (as in QEMU).
//! * The periodic interrupt flag (PF) rises every `2^(RS-1)` ticks (RS =
//!   register A bits 3:0; RS 1 and 2 behave as 8 and 9, RS 0 disables it)
//!   counted from the same origin, whenever the divider runs. The
//!   update-ended flag (UF) rises at every update, the alarm flag (AF) at
//!   every update whose new time matches the alarm registers (a value with
//!   bits 7:6 set matches anything). IRQF and the IRQ 8 level are
//!   `(PF & PIE) | (AF & AIE) | (UF & UIE)`. Reading register C returns and
//!   clears the flags, which lowers IRQ 8.
//!
//! Flags are computed lazily: the state holds the flags raised up to
//! `flags_ns`, and any later event follows in closed form from the register
//! values, which are folded in ("settled") before every register change.
//!
//! Not modelled: daylight-saving switching (register B bit 0 is stored
//! only), the square-wave output, and the oscillator frequencies selected by
//! DV 000/001 (every running divider is treated as the 32768 Hz one). The
//! day-of-week register follows the date while the clock runs; a value
//! written to it only survives while the clock is stopped.

use serde::{Deserialize, Serialize};

use crate::NS_PER_SEC;

/// The index port (register select, bit 7 = NMI mask).
pub const CMOS_INDEX_PORT: u16 = 0x70;
/// The data port.
pub const CMOS_DATA_PORT: u16 = 0x71;
/// The ISA IRQ line the RTC drives.
pub const RTC_IRQ: u8 = 8;
/// Bytes of CMOS RAM, status and time registers included.
pub const CMOS_SIZE: usize = 128;

// Register indices.
/// Seconds.
const REG_SECONDS: usize = 0x00;
/// Seconds alarm.
const REG_SECONDS_ALARM: usize = 0x01;
/// Minutes.
const REG_MINUTES: usize = 0x02;
/// Minutes alarm.
const REG_MINUTES_ALARM: usize = 0x03;
/// Hours (bit 7 = PM in 12-hour mode).
const REG_HOURS: usize = 0x04;
/// Hours alarm.
const REG_HOURS_ALARM: usize = 0x05;
/// Day of week, 1 = Sunday.
const REG_DAY_OF_WEEK: usize = 0x06;
/// Day of month, 1..=31.
const REG_DAY_OF_MONTH: usize = 0x07;
/// Month, 1..=12.
const REG_MONTH: usize = 0x08;
/// Year within the century, 0..=99.
const REG_YEAR: usize = 0x09;
/// Status register A: UIP, divider, rate select.
const REG_A: usize = 0x0A;
/// Status register B: SET, interrupt enables, data mode, 24-hour mode.
const REG_B: usize = 0x0B;
/// Status register C: interrupt flags, read-only, cleared by reading.
const REG_C: usize = 0x0C;
/// Status register D: valid RAM and time, read-only.
const REG_D: usize = 0x0D;
/// Century, in the same encoding as the other time registers (QEMU's and
/// the ACPI FADT's choice of index).
const REG_CENTURY: usize = 0x32;

// Memory-size bytes read by SeaBIOS (QEMU's `pc_cmos_init` layout).
/// Base memory in KiB (16 bits, at most 640).
const REG_BASE_MEM: usize = 0x15;
/// Extended memory above 1 MiB in KiB (16 bits, capped at 65535).
const REG_EXT_MEM: usize = 0x17;
/// Copy of the extended memory size (the "actual" size POST found).
const REG_EXT_MEM2: usize = 0x30;
/// Memory between 16 MiB and 4 GiB in 64 KiB units (16 bits).
const REG_MEM_ABOVE_16M: usize = 0x34;
/// Memory above 4 GiB in 64 KiB units (24 bits).
const REG_MEM_ABOVE_4G: usize = 0x5B;

// Register A.
/// Update in progress (read-only).
const A_UIP: u8 = 0x80;
/// Divider chain select, bits 6:4.
const A_DV_MASK: u8 = 0x70;
/// Highest DV value with the divider running (010 = 32.768 kHz crystal).
const A_DV_RUNNING_MAX: u8 = 0x20;
/// Rate select, bits 3:0.
const A_RS_MASK: u8 = 0x0F;

// Register B.
/// Inhibit updates so the time can be set.
const B_SET: u8 = 0x80;
/// Periodic interrupt enable.
const B_PIE: u8 = 0x40;
/// Alarm interrupt enable.
const B_AIE: u8 = 0x20;
/// Update-ended interrupt enable.
const B_UIE: u8 = 0x10;
/// Data mode: 1 = binary, 0 = BCD.
const B_DM_BINARY: u8 = 0x04;
/// Hour format: 1 = 24-hour, 0 = 12-hour.
const B_24H: u8 = 0x02;

// Register C.
/// Some enabled flag is set (IRQ asserted).
const C_IRQF: u8 = 0x80;
/// Periodic flag.
const C_PF: u8 = 0x40;
/// Alarm flag.
const C_AF: u8 = 0x20;
/// Update-ended flag.
const C_UF: u8 = 0x10;
/// The three event flags; they sit at the same bits as their enables in B.
const C_FLAGS: u8 = C_PF | C_AF | C_UF;

// Register D.
/// Valid RAM and time: the battery is fine.
const D_VRT: u8 = 0x80;

/// NMI mask bit of the index port.
const INDEX_NMI_MASK: u8 = 0x80;
/// Alarm register values at or above this match any time ("don't care").
const ALARM_DONT_CARE: u8 = 0xC0;

/// Divider chain frequency in Hz: 32768 ticks per second of virtual time.
const DIVIDER_HZ: i128 = 32768;
/// Ticks before an update during which UIP reads 1 (244.14 us).
const UIP_TICKS: i128 = 8;
/// Seconds per day.
const SECS_PER_DAY: i64 = 86_400;

/// Saved state of a [`CmosRtc`]. `Default` is the power-on state with a
/// boot time of 1970-01-01 00:00:00 and no memory-size bytes; the machine
/// uses [`CmosRtc::with_config`] instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmosRtcState {
    /// The 128 bytes of CMOS RAM. The time registers (0x00..=0x09 except
    /// the alarms, and 0x32) are only meaningful here while the clock is
    /// stopped; register C lives in `flags`, register D is constant.
    pub ram: Vec<u8>,
    /// Register selected through port 0x70 (bits 6:0).
    pub index: u8,
    /// NMI masked through port 0x70 bit 7.
    pub nmi_masked: bool,
    /// Clock reading (seconds since 1970-01-01 00:00:00, in the RTC's own
    /// time zone) at update boundary 0.
    pub base_secs: i64,
    /// Virtual time of update boundary 0: the divider chain's phase.
    /// Updates happen at `origin_ns + k * 10^9` (may be negative).
    pub origin_ns: i64,
    /// Flags (PF, AF, UF) raised up to `flags_ns` and not yet read.
    pub flags: u8,
    /// Events up to and including this virtual time are in `flags`.
    pub flags_ns: u64,
}

impl Default for CmosRtcState {
    fn default() -> Self {
        let mut ram = vec![0u8; CMOS_SIZE];
        // QEMU's reset values: 32.768 kHz divider, 1024 Hz rate; BCD,
        // 24-hour mode; valid RAM.
        ram[REG_A] = 0x26;
        ram[REG_B] = B_24H;
        ram[REG_D] = D_VRT;
        CmosRtcState {
            ram,
            index: 0,
            nmi_masked: false,
            base_secs: 0,
            origin_ns: 0,
            flags: 0,
            flags_ns: 0,
        }
    }
}

/// Broken-down calendar time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Calendar {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    /// 1 = Sunday.
    weekday: i64,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (month 1..=12).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Calendar time of `secs` seconds since 1970-01-01 00:00:00.
fn civil_from_secs(secs: i64) -> Calendar {
    let days = secs.div_euclid(SECS_PER_DAY);
    let tod = secs.rem_euclid(SECS_PER_DAY);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Calendar {
        year,
        month,
        day,
        hour: tod / 3600,
        minute: tod / 60 % 60,
        second: tod % 60,
        // 1970-01-01 was a Thursday (5 with Sunday = 1).
        weekday: (days + 4).rem_euclid(7) + 1,
    }
}

/// Floor division for the i128 time arithmetic.
fn floor_div(a: i128, b: i128) -> i128 {
    a.div_euclid(b)
}

/// Ceiling division (b > 0).
fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a.div_euclid(b);
    if a.rem_euclid(b) != 0 {
        q + 1
    } else {
        q
    }
}

/// The MC146818 RTC and CMOS RAM. See the module documentation.
#[derive(Clone, Debug)]
pub struct CmosRtc {
    state: CmosRtcState,
}

impl Default for CmosRtc {
    fn default() -> Self {
        Self::new()
    }
}

impl CmosRtc {
    /// An RTC in its power-on state, reading 1970-01-01 00:00:00 at virtual
    /// time 0, with no memory-size bytes.
    pub fn new() -> Self {
        Self::from_state(&CmosRtcState::default())
    }

    /// An RTC at power-on whose clock reads `boot_unix_secs` (the recorded
    /// wall-clock time at boot, in the time zone the guest expects the RTC
    /// in, usually UTC) at virtual time 0, with the memory-size bytes filled
    /// as QEMU does for `ram_below_4g` bytes of RAM below 4 GiB and
    /// `ram_above_4g` bytes above it.
    pub fn with_config(boot_unix_secs: i64, ram_below_4g: u64, ram_above_4g: u64) -> Self {
        let mut rtc = Self::new();
        rtc.state.base_secs = boot_unix_secs;
        rtc.set_memory_size(ram_below_4g, ram_above_4g);
        rtc
    }

    /// Rebuilds the RTC from saved state. A RAM image of the wrong length
    /// is truncated or zero-padded to 128 bytes.
    pub fn from_state(state: &CmosRtcState) -> Self {
        let mut state = state.clone();
        state.ram.resize(CMOS_SIZE, 0);
        state.index &= !INDEX_NMI_MASK;
        state.flags &= C_FLAGS;
        CmosRtc { state }
    }

    /// The guest-visible state, for a snapshot.
    pub fn state(&self) -> CmosRtcState {
        self.state.clone()
    }

    /// Fills the memory-size bytes SeaBIOS reads (0x15/0x16 base memory,
    /// 0x17/0x18 and 0x30/0x31 extended memory, 0x34/0x35 memory between
    /// 16 MiB and 4 GiB, 0x5B..=0x5D memory above 4 GiB), as QEMU's
    /// `pc_cmos_init` does.
    pub fn set_memory_size(&mut self, ram_below_4g: u64, ram_above_4g: u64) {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        let base = (ram_below_4g / KIB).min(640);
        let ext = (ram_below_4g.saturating_sub(MIB) / KIB).min(0xFFFF);
        let above16 = (ram_below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xFFFF);
        let above4g = (ram_above_4g / (64 * KIB)).min(0xFF_FFFF);
        let ram = &mut self.state.ram;
        let mut put = |at: usize, value: u64, bytes: usize| {
            for i in 0..bytes {
                ram[at + i] = (value >> (8 * i)) as u8;
            }
        };
        put(REG_BASE_MEM, base, 2);
        put(REG_EXT_MEM, ext, 2);
        put(REG_EXT_MEM2, ext, 2);
        put(REG_MEM_ABOVE_16M, above16, 2);
        put(REG_MEM_ABOVE_4G, above4g, 3);
    }

    /// Sets a byte of CMOS RAM directly, for machine setup (boot order, CPU
    /// count and the like). Indices past 127 wrap; the status registers and
    /// the running clock's time registers are not meant to be set this way.
    pub fn set_cmos_byte(&mut self, index: u8, value: u8) {
        self.state.ram[usize::from(index) % CMOS_SIZE] = value;
    }

    /// A byte of CMOS RAM as stored (no side effects; time and status
    /// registers may be stale, see [`CmosRtcState::ram`]).
    pub fn cmos_byte(&self, index: u8) -> u8 {
        self.state.ram[usize::from(index) % CMOS_SIZE]
    }

    /// NMI is masked through port 0x70 bit 7.
    pub fn nmi_masked(&self) -> bool {
        self.state.nmi_masked
    }

    /// The clock reading at `now_ns` in seconds since 1970-01-01 00:00:00,
    /// from the running clock or, while it is stopped, from the time
    /// registers.
    pub fn clock_secs(&self, now_ns: u64) -> i64 {
        if self.clock_running() {
            self.running_secs(now_ns)
        } else {
            self.secs_from_registers(&self.state.ram)
        }
    }

    /// Reads port `0x70 + offset` (offset 0 or 1) at virtual time `now_ns`.
    /// The index port is write-only and reads as 0xFF, as in QEMU; so do
    /// other offsets.
    pub fn read(&mut self, now_ns: u64, offset: u8) -> u8 {
        if offset != 1 {
            return 0xFF;
        }
        let idx = usize::from(self.state.index);
        match idx {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_DAY_OF_WEEK..=REG_YEAR | REG_CENTURY
                if self.clock_running() =>
            {
                self.time_registers(now_ns)[idx]
            }
            REG_A => {
                let mut a = self.state.ram[REG_A] & !A_UIP;
                if self.uip(now_ns) {
                    a |= A_UIP;
                }
                a
            }
            REG_C => {
                self.settle(now_ns);
                let flags = self.state.flags;
                self.state.flags = 0;
                if flags & self.state.ram[REG_B] & C_FLAGS != 0 {
                    flags | C_IRQF
                } else {
                    flags
                }
            }
            REG_D => D_VRT,
            _ => self.state.ram[idx],
        }
    }

    /// Writes port `0x70 + offset` (offset 0 or 1) at virtual time `now_ns`.
    /// Writes to registers C and D, to UIP and to other offsets are ignored.
    pub fn write(&mut self, now_ns: u64, offset: u8, value: u8) {
        match offset {
            0 => {
                self.state.index = value & !INDEX_NMI_MASK;
                self.state.nmi_masked = value & INDEX_NMI_MASK != 0;
            }
            1 => self.write_data(now_ns, value),
            _ => {}
        }
    }

    /// Level of IRQ 8 at `now_ns`: IRQF, some enabled flag is set.
    pub fn irq_level(&self, now_ns: u64) -> bool {
        let enabled = self.state.ram[REG_B] & C_FLAGS;
        self.pending_flags(now_ns, enabled) & enabled != 0
    }

    /// Absolute virtual time (greater than `now_ns`) at which IRQ 8 next
    /// rises, or `None` if it is already high (it only falls when the
    /// guest reads register C) or no enabled event is coming.
    pub fn next_deadline(&self, now_ns: u64) -> Option<u64> {
        if self.irq_level(now_ns) {
            return None;
        }
        let b = self.state.ram[REG_B];
        let mut best: Option<u64> = None;
        let mut consider = |t: Option<u64>| {
            if let Some(t) = t {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        };
        if b & B_PIE != 0 {
            consider(self.next_periodic(now_ns));
        }
        if b & B_UIE != 0 {
            consider(self.next_update(now_ns));
        }
        if b & B_AIE != 0 {
            consider(self.next_alarm(now_ns));
        }
        best.filter(|&t| t > now_ns)
    }

    fn write_data(&mut self, now_ns: u64, value: u8) {
        let idx = usize::from(self.state.index);
        self.settle(now_ns);
        match idx {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_DAY_OF_WEEK..=REG_YEAR | REG_CENTURY => {
                if self.clock_running() {
                    let mut regs = self.time_registers(now_ns);
                    regs[idx] = value;
                    self.store_time_registers(&regs);
                    self.start_clock(now_ns);
                } else {
                    self.state.ram[idx] = value;
                }
            }
            REG_A => {
                let was_running = self.divider_running();
                let was_clock = self.clock_running();
                if was_clock {
                    self.freeze(now_ns);
                }
                self.state.ram[REG_A] = value & !A_UIP;
                if self.divider_running() && !was_running {
                    // Released from reset: the first update is 500 ms away.
                    let now = i128::from(now_ns);
                    let origin = now + i128::from(NS_PER_SEC / 2) - i128::from(NS_PER_SEC);
                    self.state.origin_ns = origin as i64;
                }
                if self.clock_running() {
                    self.start_clock(now_ns);
                }
            }
            REG_B => {
                let mut value = value;
                if value & B_SET != 0 {
                    if self.clock_running() {
                        self.freeze(now_ns);
                    }
                    // Setting SET clears UIE (datasheet, QEMU).
                    value &= !B_UIE;
                    self.state.ram[REG_B] = value;
                } else {
                    let was_set = self.state.ram[REG_B] & B_SET != 0;
                    self.state.ram[REG_B] = value;
                    if was_set && self.clock_running() {
                        self.start_clock(now_ns);
                    }
                }
            }
            REG_C | REG_D => {}
            _ => self.state.ram[idx] = value,
        }
    }

    fn divider_running(&self) -> bool {
        self.state.ram[REG_A] & A_DV_MASK <= A_DV_RUNNING_MAX
    }

    fn clock_running(&self) -> bool {
        self.divider_running() && self.state.ram[REG_B] & B_SET == 0
    }

    /// Divider ticks since the origin at `now_ns` (floor).
    fn ticks(&self, now_ns: u64) -> i128 {
        let elapsed = i128::from(now_ns) - i128::from(self.state.origin_ns);
        floor_div(elapsed * DIVIDER_HZ, i128::from(NS_PER_SEC))
    }

    /// First virtual time at which `ticks` reaches `k`, if representable.
    fn time_of_tick(&self, k: i128) -> Option<u64> {
        let t = i128::from(self.state.origin_ns) + ceil_div(k * i128::from(NS_PER_SEC), DIVIDER_HZ);
        u64::try_from(t).ok()
    }

    /// Index of the last update boundary at or before `now_ns`.
    fn second_index(&self, now_ns: u64) -> i128 {
        floor_div(self.ticks(now_ns), DIVIDER_HZ)
    }

    fn running_secs(&self, now_ns: u64) -> i64 {
        let s = i128::from(self.state.base_secs) + self.second_index(now_ns);
        s.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    fn uip(&self, now_ns: u64) -> bool {
        self.clock_running() && self.ticks(now_ns).rem_euclid(DIVIDER_HZ) >= DIVIDER_HZ - UIP_TICKS
    }

    /// Periodic interrupt period in divider ticks, if enabled by RS.
    fn periodic_ticks(&self) -> Option<i128> {
        match self.state.ram[REG_A] & A_RS_MASK {
            0 => None,
            rs @ 1..=2 => Some(1 << (rs + 6)),
            rs => Some(1 << (rs - 1)),
        }
    }

    fn next_periodic(&self, now_ns: u64) -> Option<u64> {
        if !self.divider_running() {
            return None;
        }
        let p = self.periodic_ticks()?;
        self.time_of_tick((floor_div(self.ticks(now_ns), p) + 1) * p)
    }

    fn next_update(&self, now_ns: u64) -> Option<u64> {
        if !self.clock_running() {
            return None;
        }
        self.time_of_tick((self.second_index(now_ns) + 1) * DIVIDER_HZ)
    }

    /// Time of the first update after `now_ns` whose new time matches the
    /// alarm registers.
    fn next_alarm(&self, now_ns: u64) -> Option<u64> {
        if !self.clock_running() {
            return None;
        }
        let k0 = self.second_index(now_ns) + 1;
        let s0 = i128::from(self.state.base_secs) + k0;
        let s0 = i64::try_from(s0).ok()?;
        let j = self.alarm_offset(s0)?;
        self.time_of_tick((k0 + i128::from(j)) * DIVIDER_HZ)
    }

    /// Smallest `j >= 0` such that the time `s0 + j` matches the alarm, or
    /// `None` if no time of day does.
    fn alarm_offset(&self, s0: i64) -> Option<i64> {
        let ram = &self.state.ram;
        let want = [
            ram[REG_HOURS_ALARM],
            ram[REG_MINUTES_ALARM],
            ram[REG_SECONDS_ALARM],
        ];
        let matches = |want: u8, have: u8| want >= ALARM_DONT_CARE || want == have;
        let mut j = 0i64;
        // Each step either matches or skips to the next hour, minute or
        // second, so a day is scanned in a few thousand steps at most.
        while j <= SECS_PER_DAY {
            let tod = s0.wrapping_add(j).rem_euclid(SECS_PER_DAY);
            let (h, m, s) = (tod / 3600, tod / 60 % 60, tod % 60);
            if !matches(want[0], self.hour_register(h)) {
                j += 3600 - (tod % 3600);
            } else if !matches(want[1], self.encode(m)) {
                j += 60 - s;
            } else if !matches(want[2], self.encode(s)) {
                j += 1;
            } else {
                return Some(j);
            }
        }
        None
    }

    /// Flags raised by events in `(flags_ns, now_ns]`, plus the stored ones;
    /// only the flags in `wanted` are computed (the alarm search is the
    /// costly one).
    fn pending_flags(&self, now_ns: u64, wanted: u8) -> u8 {
        let mut flags = self.state.flags;
        let from = self.state.flags_ns;
        if now_ns <= from {
            return flags;
        }
        let due = |t: Option<u64>| t.is_some_and(|t| t <= now_ns);
        if wanted & C_PF != 0 && due(self.next_periodic(from)) {
            flags |= C_PF;
        }
        if wanted & C_UF != 0 && due(self.next_update(from)) {
            flags |= C_UF;
        }
        if wanted & C_AF != 0 && flags & C_AF == 0 && due(self.next_alarm(from)) {
            flags |= C_AF;
        }
        flags
    }

    /// Folds the events up to `now_ns` into the stored flags, so register
    /// changes only affect what happens after `now_ns`.
    fn settle(&mut self, now_ns: u64) {
        self.state.flags = self.pending_flags(now_ns, C_FLAGS);
        self.state.flags_ns = self.state.flags_ns.max(now_ns);
    }

    fn binary_mode(&self) -> bool {
        self.state.ram[REG_B] & B_DM_BINARY != 0
    }

    /// A value 0..=99 in the current data mode.
    fn encode(&self, v: i64) -> u8 {
        let v = v.rem_euclid(100) as u8;
        if self.binary_mode() {
            v
        } else {
            ((v / 10) << 4) | (v % 10)
        }
    }

    /// A register value in the current data mode (garbage BCD digits are
    /// taken at face value, never rejected).
    fn decode(&self, v: u8) -> i64 {
        if self.binary_mode() {
            i64::from(v)
        } else {
            i64::from(v >> 4) * 10 + i64::from(v & 0x0F)
        }
    }

    /// The hours register for hour `h` (0..=23) in the current modes.
    fn hour_register(&self, h: i64) -> u8 {
        if self.state.ram[REG_B] & B_24H != 0 {
            self.encode(h)
        } else {
            let h12 = if h % 12 == 0 { 12 } else { h % 12 };
            let pm = if h >= 12 { 0x80 } else { 0 };
            self.encode(h12) | pm
        }
    }

    /// Hour 0..=23 from an hours register in the current modes.
    fn decode_hour(&self, v: u8) -> i64 {
        if self.state.ram[REG_B] & B_24H != 0 {
            self.decode(v)
        } else {
            let h = self.decode(v & 0x7F) % 12;
            if v & 0x80 != 0 {
                h + 12
            } else {
                h
            }
        }
    }

    /// The running clock's time registers at `now_ns` (indexed like RAM;
    /// only the time and century entries are filled).
    fn time_registers(&self, now_ns: u64) -> [u8; CMOS_SIZE] {
        let c = civil_from_secs(self.running_secs(now_ns));
        let mut regs = [0u8; CMOS_SIZE];
        regs[REG_SECONDS] = self.encode(c.second);
        regs[REG_MINUTES] = self.encode(c.minute);
        regs[REG_HOURS] = self.hour_register(c.hour);
        regs[REG_DAY_OF_WEEK] = self.encode(c.weekday);
        regs[REG_DAY_OF_MONTH] = self.encode(c.day);
        regs[REG_MONTH] = self.encode(c.month);
        regs[REG_YEAR] = self.encode(c.year.rem_euclid(100));
        regs[REG_CENTURY] = self.encode(c.year.div_euclid(100));
        regs
    }

    fn store_time_registers(&mut self, regs: &[u8; CMOS_SIZE]) {
        for idx in [
            REG_SECONDS,
            REG_MINUTES,
            REG_HOURS,
            REG_DAY_OF_WEEK,
            REG_DAY_OF_MONTH,
            REG_MONTH,
            REG_YEAR,
            REG_CENTURY,
        ] {
            self.state.ram[idx] = regs[idx];
        }
    }

    /// Seconds since 1970 named by the time registers in `ram`.
    fn secs_from_registers(&self, ram: &[u8]) -> i64 {
        let year = self.decode(ram[REG_CENTURY]) * 100 + self.decode(ram[REG_YEAR]);
        let month = self.decode(ram[REG_MONTH]).clamp(1, 12);
        let day = self.decode(ram[REG_DAY_OF_MONTH]);
        let days = days_from_civil(year, month, day);
        days * SECS_PER_DAY
            + self.decode_hour(ram[REG_HOURS]) * 3600
            + self.decode(ram[REG_MINUTES]) * 60
            + self.decode(ram[REG_SECONDS])
    }

    /// Stops the clock at `now_ns`: its reading goes into the registers.
    fn freeze(&mut self, now_ns: u64) {
        let regs = self.time_registers(now_ns);
        self.store_time_registers(&regs);
    }

    /// (Re)starts the clock at `now_ns` from the time registers, keeping
    /// the update phase: the registers' time is the reading until the next
    /// update boundary.
    fn start_clock(&mut self, now_ns: u64) {
        let secs = i128::from(self.secs_from_registers(&self.state.ram));
        let base = secs - self.second_index(now_ns);
        self.state.base_secs = base.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = NS_PER_SEC;

    fn rd(rtc: &mut CmosRtc, now: u64, idx: usize) -> u8 {
        rtc.write(now, 0, idx as u8);
        rtc.read(now, 1)
    }

    fn wr(rtc: &mut CmosRtc, now: u64, idx: usize, v: u8) {
        rtc.write(now, 0, idx as u8);
        rtc.write(now, 1, v);
    }

    /// (year, month, day, hour, minute, second, weekday, century) as read.
    fn read_time(rtc: &mut CmosRtc, now: u64) -> [u8; 8] {
        [
            rd(rtc, now, REG_YEAR),
            rd(rtc, now, REG_MONTH),
            rd(rtc, now, REG_DAY_OF_MONTH),
            rd(rtc, now, REG_HOURS),
            rd(rtc, now, REG_MINUTES),
            rd(rtc, now, REG_SECONDS),
            rd(rtc, now, REG_DAY_OF_WEEK),
            rd(rtc, now, REG_CENTURY),
        ]
    }

    #[test]
    fn calendar_conversion() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for secs in [0i64, 951_782_400, 4_107_542_399, -1, 1_709_164_800] {
            let c = civil_from_secs(secs);
            let back = days_from_civil(c.year, c.month, c.day) * SECS_PER_DAY
                + c.hour * 3600
                + c.minute * 60
                + c.second;
            assert_eq!(back, secs);
        }
        // 2024-02-29 was a Thursday.
        let c = civil_from_secs(1_709_164_800);
        assert_eq!((c.year, c.month, c.day, c.weekday), (2024, 2, 29, 5));
    }

    #[test]
    fn y2k_rollover_bcd() {
        // 1999-12-31 23:59:59 UTC, a Friday.
        let mut rtc = CmosRtc::with_config(946_684_799, 0, 0);
        assert_eq!(
            read_time(&mut rtc, 0),
            [0x99, 0x12, 0x31, 0x23, 0x59, 0x59, 6, 0x19]
        );
        assert_eq!(
            read_time(&mut rtc, SEC - 1),
            [0x99, 0x12, 0x31, 0x23, 0x59, 0x59, 6, 0x19]
        );
        // Saturday 2000-01-01 00:00:00.
        assert_eq!(
            read_time(&mut rtc, SEC),
            [0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 7, 0x20]
        );
        assert_eq!(rtc.clock_secs(SEC), 946_684_800);
    }

    #[test]
    fn leap_days() {
        // 2024-02-28 23:59:59 -> 2024-02-29.
        let mut rtc = CmosRtc::with_config(1_709_164_799, 0, 0);
        assert_eq!(&read_time(&mut rtc, SEC)[..3], &[0x24, 0x02, 0x29]);
        // 2000 is a leap year (divisible by 400).
        let mut rtc = CmosRtc::with_config(951_782_399, 0, 0);
        assert_eq!(&read_time(&mut rtc, SEC)[..3], &[0x00, 0x02, 0x29]);
        // 2100 is not: 2100-02-28 23:59:59 -> 2100-03-01.
        let mut rtc = CmosRtc::with_config(4_107_542_399, 0, 0);
        assert_eq!(&read_time(&mut rtc, 0)[..3], &[0x00, 0x02, 0x28]);
        assert_eq!(&read_time(&mut rtc, SEC)[..3], &[0x00, 0x03, 0x01]);
        assert_eq!(rd(&mut rtc, SEC, REG_CENTURY), 0x21);
    }

    #[test]
    fn binary_and_12_hour_modes() {
        // 2023-07-14 13:05:09.
        let mut rtc = CmosRtc::with_config(1_689_339_909, 0, 0);
        assert_eq!(rd(&mut rtc, 0, REG_HOURS), 0x13);
        assert_eq!(rd(&mut rtc, 0, REG_SECONDS), 0x09);
        wr(&mut rtc, 0, REG_B, B_DM_BINARY | B_24H);
        assert_eq!(
            read_time(&mut rtc, 0),
            [23, 7, 14, 13, 5, 9, 6, 20],
            "binary mode"
        );
        wr(&mut rtc, 0, REG_B, B_DM_BINARY);
        assert_eq!(rd(&mut rtc, 0, REG_HOURS), 0x80 | 1, "1 PM binary");
        wr(&mut rtc, 0, REG_B, 0);
        assert_eq!(rd(&mut rtc, 0, REG_HOURS), 0x81, "1 PM BCD");
        // Midnight and noon in 12-hour mode.
        let mut rtc = CmosRtc::with_config(1_689_292_800, 0, 0);
        wr(&mut rtc, 0, REG_B, 0);
        assert_eq!(rd(&mut rtc, 0, REG_HOURS), 0x12);
        let noon = 12 * 3600 * SEC;
        assert_eq!(rd(&mut rtc, noon, REG_HOURS), 0x92);
        assert_eq!(rd(&mut rtc, noon + 3600 * SEC * 11, REG_HOURS), 0x91);
    }

    #[test]
    fn set_time_with_set_bit() {
        let mut rtc = CmosRtc::with_config(0, 0, 0);
        let t = SEC * 10 + 300_000_000;
        wr(&mut rtc, t, REG_B, B_SET | B_24H | B_UIE);
        assert_eq!(rd(&mut rtc, t, REG_B), B_SET | B_24H, "SET clears UIE");
        // Frozen: the clock does not advance.
        assert_eq!(rd(&mut rtc, t + 5 * SEC, REG_SECONDS), 0x10);
        // Set 2038-01-19 03:14:07 (BCD).
        for (idx, v) in [
            (REG_CENTURY, 0x20),
            (REG_YEAR, 0x38),
            (REG_MONTH, 0x01),
            (REG_DAY_OF_MONTH, 0x19),
            (REG_HOURS, 0x03),
            (REG_MINUTES, 0x14),
            (REG_SECONDS, 0x07),
        ] {
            wr(&mut rtc, t + 6 * SEC, idx, v);
        }
        assert_eq!(rtc.clock_secs(t + 6 * SEC), 2_147_483_647);
        let t2 = t + 6 * SEC + 500_000_000; // phase .8 s
        wr(&mut rtc, t2, REG_B, B_24H);
        // The update phase is kept: next update at the next whole second.
        assert_eq!(rd(&mut rtc, 17 * SEC - 1, REG_SECONDS), 0x07);
        assert_eq!(rd(&mut rtc, 17 * SEC, REG_SECONDS), 0x08);
        assert_eq!(rtc.clock_secs(17 * SEC), 2_147_483_648);
        // Writing a time register while running sets the clock at once.
        wr(&mut rtc, 18 * SEC, REG_MINUTES, 0x30);
        assert_eq!(rd(&mut rtc, 18 * SEC, REG_MINUTES), 0x30);
        assert_eq!(rd(&mut rtc, 19 * SEC, REG_SECONDS), 0x10);
    }

    #[test]
    fn divider_reset_and_release() {
        let mut rtc = CmosRtc::with_config(1000, 0, 0);
        wr(&mut rtc, SEC / 4, REG_A, 0x70); // divider reset: stopped
        assert_eq!(rtc.clock_secs(5 * SEC), 1000);
        assert!(!rtc.uip(5 * SEC - 1000));
        wr(&mut rtc, 5 * SEC, REG_A, 0x26);
        // First update 500 ms after release.
        assert_eq!(rtc.clock_secs(5 * SEC + SEC / 2 - 1), 1000);
        assert_eq!(rtc.clock_secs(5 * SEC + SEC / 2), 1001);
    }

    #[test]
    fn uip_window_is_virtual_time() {
        let mut rtc = CmosRtc::with_config(0, 0, 0);
        let window_start = SEC - 244_140; // tick 32760 at ceil(32760e9/32768)
        assert_eq!(rd(&mut rtc, window_start - 1, REG_A) & A_UIP, 0);
        assert_eq!(rd(&mut rtc, window_start, REG_A) & A_UIP, A_UIP);
        assert_eq!(rd(&mut rtc, SEC - 1, REG_A) & A_UIP, A_UIP);
        assert_eq!(rd(&mut rtc, SEC, REG_A), 0x26);
        // Register A keeps what was written, UIP excluded.
        wr(&mut rtc, SEC, REG_A, 0xA3);
        assert_eq!(rd(&mut rtc, SEC, REG_A), 0x23);
        // SET inhibits updates and UIP.
        wr(&mut rtc, SEC, REG_B, B_SET);
        assert_eq!(rd(&mut rtc, 2 * SEC - 1, REG_A) & A_UIP, 0);
    }

    #[test]
    fn periodic_interrupt() {
        let mut rtc = CmosRtc::new();
        // 1024 Hz (RS 6): period 32 ticks = 976_562.5 ns.
        assert_eq!(rtc.next_deadline(0), None, "PIE off");
        wr(&mut rtc, 0, REG_B, B_PIE | B_24H);
        let d = rtc.next_deadline(0).unwrap();
        assert_eq!(d, 976_563);
        assert!(!rtc.irq_level(d - 1));
        assert!(rtc.irq_level(d));
        assert_eq!(rtc.next_deadline(d), None, "stays high until C is read");
        assert_eq!(rd(&mut rtc, d + 10, REG_C), C_IRQF | C_PF);
        assert!(!rtc.irq_level(d + 10));
        assert_eq!(rd(&mut rtc, d + 10, REG_C), 0);
        assert_eq!(rtc.next_deadline(d + 10), Some(1_953_125));
        // Count interrupts over one second at 8 Hz (RS 13 = 4096 ticks).
        wr(&mut rtc, 2 * SEC, REG_A, 0x2D);
        let mut now = 2 * SEC;
        rd(&mut rtc, now, REG_C);
        let mut n = 0;
        while let Some(d) = rtc.next_deadline(now) {
            if d > 3 * SEC {
                break;
            }
            assert_eq!(d % (SEC / 8), 0);
            now = d;
            rd(&mut rtc, now, REG_C);
            n += 1;
        }
        assert_eq!(n, 8);
        // RS 1 behaves as RS 8 (256 Hz); RS 0 disables.
        wr(&mut rtc, 5 * SEC, REG_A, 0x21);
        rd(&mut rtc, 5 * SEC, REG_C);
        assert_eq!(rtc.next_deadline(5 * SEC), Some(5 * SEC + 3_906_250));
        wr(&mut rtc, 5 * SEC, REG_A, 0x20);
        assert_eq!(rtc.next_deadline(5 * SEC), None);
        // PF is raised even with PIE off, without asserting IRQ 8.
        wr(&mut rtc, 6 * SEC, REG_A, 0x26);
        wr(&mut rtc, 6 * SEC, REG_B, B_24H);
        assert!(!rtc.irq_level(7 * SEC));
        assert_eq!(rd(&mut rtc, 7 * SEC, REG_C), C_PF | C_UF);
    }

    #[test]
    fn update_ended_interrupt_once_per_second() {
        let mut rtc = CmosRtc::with_config(100, 0, 0);
        wr(&mut rtc, 300, REG_B, B_UIE | B_24H);
        let mut now = 300;
        for k in 1..=5u64 {
            let d = rtc.next_deadline(now).unwrap();
            assert_eq!(d, k * SEC);
            assert!(rtc.irq_level(d));
            assert_eq!(rd(&mut rtc, d, REG_C), C_IRQF | C_PF | C_UF);
            assert_eq!(rtc.clock_secs(d), 100 + k as i64);
            now = d;
        }
    }

    #[test]
    fn alarm_interrupt() {
        // 00:00:00 on 1970-01-02.
        let mut rtc = CmosRtc::with_config(86_400, 0, 0);
        wr(&mut rtc, 0, REG_HOURS_ALARM, 0x01);
        wr(&mut rtc, 0, REG_MINUTES_ALARM, 0x02);
        wr(&mut rtc, 0, REG_SECONDS_ALARM, 0x03);
        wr(&mut rtc, 0, REG_B, B_AIE | B_24H);
        let at = 3723 * SEC;
        assert_eq!(rtc.next_deadline(0), Some(at));
        assert!(!rtc.irq_level(at - 1));
        assert!(rtc.irq_level(at));
        assert_eq!(rd(&mut rtc, at, REG_C), C_IRQF | C_PF | C_AF | C_UF);
        // Next match is a day later.
        assert_eq!(rtc.next_deadline(at), Some(at + 86_400 * SEC));
        // Don't-care seconds and minutes: every second of hour 02.
        wr(&mut rtc, at, REG_MINUTES_ALARM, 0xFF);
        wr(&mut rtc, at, REG_SECONDS_ALARM, 0xC0);
        wr(&mut rtc, at, REG_HOURS_ALARM, 0x02);
        assert_eq!(rtc.next_deadline(at), Some(7200 * SEC));
        rd(&mut rtc, 7200 * SEC + 5, REG_C);
        assert_eq!(rtc.next_deadline(7200 * SEC + 5), Some(7201 * SEC));
        // Alarm that can never match.
        wr(&mut rtc, 7300 * SEC, REG_SECONDS_ALARM, 0x75);
        rd(&mut rtc, 7300 * SEC, REG_C);
        assert_eq!(rtc.next_deadline(7300 * SEC), None);
    }

    #[test]
    fn enabling_with_flag_already_set_raises_irq() {
        let mut rtc = CmosRtc::new();
        assert!(!rtc.irq_level(SEC));
        wr(&mut rtc, SEC, REG_B, B_UIE | B_24H);
        assert!(rtc.irq_level(SEC), "UF from the update at 1 s");
    }

    #[test]
    fn memory_size_bytes() {
        let rtc = CmosRtc::with_config(0, 3 << 30, 5 << 30);
        let w = |i: u8| u16::from_le_bytes([rtc.cmos_byte(i), rtc.cmos_byte(i + 1)]);
        assert_eq!(w(0x15), 640);
        assert_eq!(w(0x17), 0xFFFF);
        assert_eq!(w(0x30), 0xFFFF);
        assert_eq!(u32::from(w(0x34)), ((3u32 << 30) - (16 << 20)) / 65536);
        let above = u32::from_le_bytes([
            rtc.cmos_byte(0x5B),
            rtc.cmos_byte(0x5C),
            rtc.cmos_byte(0x5D),
            0,
        ]);
        assert_eq!(above, 5 << 14);
        let small = CmosRtc::with_config(0, 8 << 20, 0);
        assert_eq!(small.cmos_byte(0x17), 0x00);
        assert_eq!(small.cmos_byte(0x18), 0x1C); // 7168 KiB
        assert_eq!(small.cmos_byte(0x34), 0);
    }

    #[test]
    fn ram_nmi_and_read_only_registers() {
        let mut rtc = CmosRtc::new();
        rtc.write(0, 0, 0x80 | 0x40);
        assert!(rtc.nmi_masked());
        rtc.write(0, 1, 0xAB);
        assert_eq!(rtc.read(0, 1), 0xAB);
        assert_eq!(rtc.read(0, 0), 0xFF);
        rtc.write(0, 0, 0x40);
        assert!(!rtc.nmi_masked());
        assert_eq!(rtc.read(0, 1), 0xAB);
        wr(&mut rtc, 0, REG_D, 0);
        assert_eq!(rd(&mut rtc, 0, REG_D), D_VRT);
        wr(&mut rtc, 0, REG_C, 0xFF);
        assert_eq!(rd(&mut rtc, 0, REG_C), 0);
    }

    #[test]
    fn garbage_never_panics() {
        let mut rtc = CmosRtc::with_config(i64::MAX - 5, u64::MAX, u64::MAX);
        let mut x = 0x9E37_79B9u32;
        let mut now = 0u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let [a, b, c, _] = x.to_le_bytes();
            now += u64::from(c) * 1_000_003;
            if a & 1 == 0 {
                rtc.write(now, a >> 7, b);
            } else {
                let _ = rtc.read(now, a >> 7);
            }
            if let Some(d) = rtc.next_deadline(now) {
                assert!(d > now);
                assert!(rtc.irq_level(d));
            }
        }
        let _ = rtc.next_deadline(u64::MAX);
        let _ = rtc.read(u64::MAX, 1);
        let st = CmosRtcState {
            ram: vec![0xFF; 3],
            index: 0xFF,
            base_secs: i64::MIN,
            origin_ns: i64::MAX,
            flags: 0xFF,
            flags_ns: u64::MAX,
            nmi_masked: true,
        };
        let mut rtc = CmosRtc::from_state(&st);
        for i in 0..=255u8 {
            wr(&mut rtc, 7, usize::from(i), 0xFF);
            let _ = rd(&mut rtc, 9, usize::from(i));
        }
        let _ = rtc.next_deadline(0);
        let _ = rtc.clock_secs(u64::MAX);
    }

    #[test]
    fn snapshot_roundtrip() {
        let mut rtc = CmosRtc::with_config(1_700_000_000, 128 << 20, 0);
        wr(&mut rtc, 10, REG_B, B_PIE | B_UIE | B_24H);
        wr(&mut rtc, 10, 0x40, 0x5A);
        rtc.write(10, 0, REG_SECONDS as u8);
        let saved = rtc.state();
        let deadline = rtc.next_deadline(20);
        let secs = rtc.clock_secs(3 * SEC);

        wr(&mut rtc, 2 * SEC, REG_B, B_SET);
        wr(&mut rtc, 2 * SEC, REG_SECONDS, 0);
        wr(&mut rtc, 2 * SEC, 0x40, 0);
        let _ = rd(&mut rtc, 2 * SEC, REG_C);
        assert_ne!(rtc.state(), saved);

        let mut r = CmosRtc::from_state(&saved);
        assert_eq!(r.state(), saved);
        assert_eq!(r.next_deadline(20), deadline);
        assert_eq!(r.clock_secs(3 * SEC), secs);
        assert_eq!(r.read(3 * SEC, 1), 0x23, "index kept: 22:13:23 + 3 s");
        assert_eq!(rd(&mut r, 3 * SEC, 0x40), 0x5A);
    }
}
