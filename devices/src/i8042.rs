//! The i8042 PS/2 controller (data port 0x60, status/command port 0x64)
//! with a keyboard on its first port and a mouse on its second.
//!
//! Enough is modelled for Linux's `i8042` and `atkbd`/`psmouse` probes and
//! for firmware that uses the controller for A20 and reset:
//!
//! * controller commands: read/write the command byte (0x20/0x60) and the
//!   rest of its RAM (0x21..=0x3F / 0x61..=0x7F), self-test 0xAA (answers
//!   0x55 and sets the system flag), interface tests 0xAB/0xA9 (answer
//!   0x00), disable/enable the ports 0xAD/0xAE/0xA7/0xA8, read/write the
//!   output port 0xD0/0xD1 (bit 0 low = reset, bit 1 = A20), write the
//!   keyboard or mouse output buffer 0xD2/0xD3 (0xD3 is the AUX loopback
//!   Linux tests IRQ 12 with), send to the mouse 0xD4, A20 off/on
//!   0xDD/0xDF, read input port 0xC0 and test inputs 0xE0, and pulse output
//!   lines 0xF0..=0xFF (an even value such as 0xFE pulses reset);
//! * keyboard commands: reset 0xFF (0xFA 0xAA), identify 0xF2 (0xFA 0xAB
//!   0x83), set LEDs 0xED, typematic 0xF3, scan code set 0xF0, enable/
//!   disable scanning 0xF4/0xF5, defaults 0xF6, echo 0xEE; anything else is
//!   answered 0xFE (resend);
//! * mouse commands: reset 0xFF (0xFA 0xAA 0x00), identify 0xF2 (0xFA
//!   0x00), status 0xE9, sample rate 0xF3 and resolution 0xE8 with their
//!   parameter, and the mode commands, all acknowledged with 0xFA.
//!
//! Every answer is deterministic: the input buffer is never full (status
//! bit 1 reads 0) and answers queue up until the guest reads them. The
//! single output buffer is loaded, in order, from controller answers, then
//! keyboard bytes (while the keyboard port is enabled), then mouse bytes
//! (while the mouse port is enabled). IRQ 1 is high while the output buffer
//! holds a keyboard byte and command byte bit 0 is set; IRQ 12 likewise for
//! a mouse byte and bit 1.
//!
//! # Time
//!
//! An empty output buffer is loaded at once, except for
//! [`I8042_REFILL_NS`] of virtual time after each read of the data port.
//! That gap is what real controllers have (the next byte still has to be
//! clocked in), and it matters: IRQ 1 and 12 are edge-triggered at the PIC,
//! so each queued byte must raise its line anew after the previous one was
//! read. The machine samples the levels at [`I8042::next_deadline`].
//!
//! Not modelled: scan code translation (command byte bit 6 is stored; the
//! machine pushes key bytes in the form the guest reads them), keyboard
//! typematic repeat, mouse movement, parity and timeout errors.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// Status (read) / command (write) port.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// ISA IRQ of the keyboard port.
pub const I8042_KBD_IRQ: u8 = 1;
/// ISA IRQ of the mouse port.
pub const I8042_AUX_IRQ: u8 = 12;

/// Virtual time (ns) after a data port read before the next waiting byte
/// is loaded into the output buffer (10 us, less than the 50 us Linux waits
/// between status polls).
pub const I8042_REFILL_NS: u64 = 10_000;

/// Offset of the data port from 0x60.
const OFF_DATA: u8 = 0;
/// Offset of the status/command port from 0x60.
const OFF_COMMAND: u8 = 4;

/// Most bytes a device queue holds before new ones are dropped (a real
/// keyboard buffers 16 keys).
const QUEUE_LIMIT: usize = 16;

// Status register.
/// Output buffer full.
const STS_OBF: u8 = 0x01;
/// System flag (copy of command byte bit 2, set by a self-test).
const STS_SYS: u8 = 0x04;
/// Last write was to the command port.
const STS_CMD: u8 = 0x08;
/// Keyboard not inhibited (the keylock is open).
const STS_UNLOCKED: u8 = 0x10;
/// The output buffer holds a mouse byte.
const STS_AUX_OBF: u8 = 0x20;

// Command byte (controller RAM byte 0).
/// IRQ 1 enable.
const CTR_KBD_INT: u8 = 0x01;
/// IRQ 12 enable.
const CTR_AUX_INT: u8 = 0x02;
/// System flag.
const CTR_SYS: u8 = 0x04;
/// Keyboard port disabled.
const CTR_KBD_DISABLED: u8 = 0x10;
/// Mouse port disabled.
const CTR_AUX_DISABLED: u8 = 0x20;

// Output port.
/// Bit 0: system reset line (active low).
const OUT_RESET: u8 = 0x01;
/// Bit 1: A20 gate.
const OUT_A20: u8 = 0x02;

// Controller commands.
/// Read controller RAM byte 0 (the command byte); 0x21..=0x3F read the
/// other bytes.
const CMD_READ_RAM: u8 = 0x20;
/// Last "read RAM" command.
const CMD_READ_RAM_LAST: u8 = 0x3F;
/// Write controller RAM byte 0; 0x61..=0x7F write the others.
const CMD_WRITE_RAM: u8 = 0x60;
/// Last "write RAM" command.
const CMD_WRITE_RAM_LAST: u8 = 0x7F;
/// Disable the mouse port.
const CMD_AUX_DISABLE: u8 = 0xA7;
/// Enable the mouse port.
const CMD_AUX_ENABLE: u8 = 0xA8;
/// Test the mouse port.
const CMD_AUX_TEST: u8 = 0xA9;
/// Controller self-test.
const CMD_SELF_TEST: u8 = 0xAA;
/// Test the keyboard port.
const CMD_KBD_TEST: u8 = 0xAB;
/// Disable the keyboard port.
const CMD_KBD_DISABLE: u8 = 0xAD;
/// Enable the keyboard port.
const CMD_KBD_ENABLE: u8 = 0xAE;
/// Read the input port.
const CMD_READ_INPUT: u8 = 0xC0;
/// Read the output port.
const CMD_READ_OUTPUT: u8 = 0xD0;
/// Write the output port (next data byte).
const CMD_WRITE_OUTPUT: u8 = 0xD1;
/// Put the next data byte in the output buffer as if from the keyboard.
const CMD_WRITE_KBD_OBUF: u8 = 0xD2;
/// Put the next data byte in the output buffer as if from the mouse.
const CMD_WRITE_AUX_OBUF: u8 = 0xD3;
/// Send the next data byte to the mouse.
const CMD_WRITE_AUX: u8 = 0xD4;
/// Disable A20 (some controllers).
const CMD_A20_OFF: u8 = 0xDD;
/// Enable A20 (some controllers).
const CMD_A20_ON: u8 = 0xDF;
/// Read the test inputs.
const CMD_READ_TEST: u8 = 0xE0;
/// First "pulse output lines" command; the low nibble's clear bits pulse.
const CMD_PULSE_FIRST: u8 = 0xF0;

// Device (keyboard and mouse) protocol bytes.
/// Acknowledge.
const ACK: u8 = 0xFA;
/// Resend / unknown command.
const RESEND: u8 = 0xFE;
/// Basic assurance test passed (after reset).
const BAT_OK: u8 = 0xAA;

/// Where a byte in the output buffer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum I8042Source {
    /// The keyboard port (or a controller answer): raises IRQ 1.
    Keyboard,
    /// The mouse port: raises IRQ 12.
    Aux,
}

/// Saved state of an [`I8042`]. `Default` is the power-on state (QEMU's
/// reset values).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {
    /// Controller RAM; byte 0 is the command byte.
    pub ram: [u8; 32],
    /// Output port (bit 0 reset line, bit 1 A20).
    pub output_port: u8,
    /// Last write went to the command port (status bit 3).
    pub last_was_command: bool,
    /// A controller command awaiting its data byte.
    pub pending_command: Option<u8>,
    /// The byte in the output buffer, if full.
    pub obuf: Option<(u8, I8042Source)>,
    /// The byte last read from the data port (read again when empty).
    pub last_read: u8,
    /// The output buffer cannot be loaded before this virtual time (set
    /// by data port reads).
    pub refill_at: u64,
    /// Controller answers waiting for the output buffer.
    pub controller_queue: VecDeque<(u8, I8042Source)>,
    /// Keyboard bytes waiting for the output buffer.
    pub kbd_queue: VecDeque<u8>,
    /// Mouse bytes waiting for the output buffer.
    pub aux_queue: VecDeque<u8>,
    /// Keyboard command awaiting its parameter byte.
    pub kbd_pending: Option<u8>,
    /// Keyboard scanning enabled.
    pub kbd_scanning: bool,
    /// Keyboard LEDs (set with 0xED).
    pub kbd_leds: u8,
    /// Keyboard scan code set (1..=3).
    pub kbd_scan_set: u8,
    /// Keyboard typematic rate/delay byte.
    pub kbd_typematic: u8,
    /// Mouse command awaiting its parameter byte.
    pub aux_pending: Option<u8>,
    /// Mouse data reporting enabled.
    pub aux_reporting: bool,
    /// Mouse sample rate.
    pub aux_sample_rate: u8,
    /// Mouse resolution.
    pub aux_resolution: u8,
    /// Mouse 2:1 scaling.
    pub aux_scaling_2to1: bool,
    /// Mouse remote mode.
    pub aux_remote: bool,
    /// Mouse wrap (echo) mode.
    pub aux_wrap: bool,
    /// The guest asked for a system reset.
    pub reset_requested: bool,
}

impl Default for I8042State {
    fn default() -> Self {
        let mut ram = [0u8; 32];
        ram[0] = CTR_KBD_INT | CTR_AUX_INT;
        I8042State {
            ram,
            output_port: 0xCF,
            last_was_command: true,
            pending_command: None,
            obuf: None,
            last_read: 0,
            refill_at: 0,
            controller_queue: VecDeque::new(),
            kbd_queue: VecDeque::new(),
            aux_queue: VecDeque::new(),
            kbd_pending: None,
            kbd_scanning: true,
            kbd_leds: 0,
            kbd_scan_set: 2,
            kbd_typematic: 0x2B,
            aux_pending: None,
            aux_reporting: false,
            aux_sample_rate: 100,
            aux_resolution: 2,
            aux_scaling_2to1: false,
            aux_remote: false,
            aux_wrap: false,
            reset_requested: false,
        }
    }
}

/// The i8042 controller with its keyboard and mouse. See the module
/// documentation.
#[derive(Clone, Debug)]
pub struct I8042 {
    state: I8042State,
}

impl Default for I8042 {
    fn default() -> Self {
        Self::new()
    }
}

impl I8042 {
    /// A controller in its power-on state.
    pub fn new() -> Self {
        Self::from_state(&I8042State::default())
    }

    /// Rebuilds the controller from saved state (over-long queues are cut).
    pub fn from_state(state: &I8042State) -> Self {
        let mut state = state.clone();
        state.controller_queue.truncate(QUEUE_LIMIT);
        state.kbd_queue.truncate(QUEUE_LIMIT);
        state.aux_queue.truncate(QUEUE_LIMIT);
        I8042 { state }
    }

    /// The guest-visible state, for a snapshot.
    pub fn state(&self) -> I8042State {
        self.state.clone()
    }

    /// Reads port `0x60 + offset` at virtual time `now_ns`: offset 0 is the
    /// data port, 4 the status register. Other offsets read 0xFF.
    pub fn read(&mut self, now_ns: u64, offset: u8) -> u8 {
        self.refill(now_ns);
        match offset {
            OFF_DATA => {
                if let Some((b, _)) = self.state.obuf.take() {
                    self.state.last_read = b;
                }
                self.state.refill_at = now_ns.saturating_add(I8042_REFILL_NS);
                self.state.last_read
            }
            OFF_COMMAND => self.status(),
            _ => 0xFF,
        }
    }

    /// Writes port `0x60 + offset` at virtual time `now_ns`: offset 0 is
    /// the data port, 4 the command port. Other offsets are ignored.
    pub fn write(&mut self, now_ns: u64, offset: u8, value: u8) {
        self.refill(now_ns);
        match offset {
            OFF_DATA => {
                self.state.last_was_command = false;
                self.write_data(value);
            }
            OFF_COMMAND => {
                self.state.last_was_command = true;
                self.state.pending_command = None;
                self.command(value);
            }
            _ => {}
        }
        self.refill(now_ns);
    }

    /// Level of IRQ 1 at `now_ns`: the output buffer holds a keyboard byte
    /// and command byte bit 0 is set.
    pub fn irq1_level(&self, now_ns: u64) -> bool {
        matches!(self.output_buffer(now_ns), Some((_, I8042Source::Keyboard)))
            && self.command_byte() & CTR_KBD_INT != 0
    }

    /// Level of IRQ 12 at `now_ns`: the output buffer holds a mouse byte
    /// and command byte bit 1 is set.
    pub fn irq12_level(&self, now_ns: u64) -> bool {
        matches!(self.output_buffer(now_ns), Some((_, I8042Source::Aux)))
            && self.command_byte() & CTR_AUX_INT != 0
    }

    /// Absolute virtual time (greater than `now_ns`) at which a waiting
    /// byte will be loaded into the empty output buffer, or `None`.
    pub fn next_deadline(&self, now_ns: u64) -> Option<u64> {
        let s = &self.state;
        (s.obuf.is_none() && s.refill_at > now_ns && self.next_in_line().is_some())
            .then_some(s.refill_at)
    }

    /// The guest asked for a system reset (command 0xFE or another pulse of
    /// the reset line, or an output port write with bit 0 clear). Sticky:
    /// the machine resets, which rebuilds the controller.
    pub fn reset_requested(&self) -> bool {
        self.state.reset_requested
    }

    /// The output port's A20 gate bit.
    pub fn a20_enabled(&self) -> bool {
        self.state.output_port & OUT_A20 != 0
    }

    /// The command byte (controller RAM byte 0).
    pub fn command_byte(&self) -> u8 {
        self.state.ram[0]
    }

    /// Key bytes typed on the keyboard at `now_ns` (external input the
    /// machine records), in the form the guest reads them. Dropped while
    /// scanning is disabled; bytes beyond the 16-byte buffer are lost.
    pub fn push_keyboard_input(&mut self, now_ns: u64, bytes: &[u8]) {
        if !self.state.kbd_scanning {
            return;
        }
        self.refill(now_ns);
        for &b in bytes {
            Self::enqueue(&mut self.state.kbd_queue, b);
        }
        self.refill(now_ns);
    }

    fn enqueue(q: &mut VecDeque<u8>, b: u8) {
        if q.len() < QUEUE_LIMIT {
            q.push_back(b);
        }
    }

    fn answer(&mut self, b: u8, src: I8042Source) {
        if self.state.controller_queue.len() < QUEUE_LIMIT {
            self.state.controller_queue.push_back((b, src));
        }
    }

    /// The byte the output buffer holds at `now_ns` (loading it if due).
    fn output_buffer(&self, now_ns: u64) -> Option<(u8, I8042Source)> {
        match self.state.obuf {
            Some(e) => Some(e),
            None if now_ns >= self.state.refill_at => self.next_in_line(),
            None => None,
        }
    }

    /// The byte that would be loaded next into an empty output buffer.
    fn next_in_line(&self) -> Option<(u8, I8042Source)> {
        let s = &self.state;
        let ctr = self.command_byte();
        if let Some(&e) = s.controller_queue.front() {
            Some(e)
        } else if let (0, Some(&b)) = (ctr & CTR_KBD_DISABLED, s.kbd_queue.front()) {
            Some((b, I8042Source::Keyboard))
        } else if let (0, Some(&b)) = (ctr & CTR_AUX_DISABLED, s.aux_queue.front()) {
            Some((b, I8042Source::Aux))
        } else {
            None
        }
    }

    fn status(&self) -> u8 {
        let mut st = STS_UNLOCKED;
        match self.state.obuf {
            Some((_, I8042Source::Aux)) => st |= STS_OBF | STS_AUX_OBF,
            Some(_) => st |= STS_OBF,
            None => {}
        }
        if self.command_byte() & CTR_SYS != 0 {
            st |= STS_SYS;
        }
        if self.state.last_was_command {
            st |= STS_CMD;
        }
        st
    }

    /// Moves the next waiting byte into an empty output buffer, unless a
    /// data port read emptied it less than [`I8042_REFILL_NS`] ago.
    fn refill(&mut self, now_ns: u64) {
        if self.state.obuf.is_some() || now_ns < self.state.refill_at {
            return;
        }
        let Some(e) = self.next_in_line() else {
            return;
        };
        let s = &mut self.state;
        if !s.controller_queue.is_empty() {
            s.controller_queue.pop_front();
        } else if e.1 == I8042Source::Keyboard {
            s.kbd_queue.pop_front();
        } else {
            s.aux_queue.pop_front();
        }
        s.obuf = Some(e);
    }

    fn set_output_port(&mut self, value: u8) {
        self.state.output_port = value;
        if value & OUT_RESET == 0 {
            self.state.reset_requested = true;
        }
    }

    fn command(&mut self, cmd: u8) {
        use I8042Source::Keyboard as K;
        match cmd {
            CMD_READ_RAM..=CMD_READ_RAM_LAST => {
                let b = self.state.ram[usize::from(cmd - CMD_READ_RAM)];
                self.answer(b, K);
            }
            CMD_WRITE_RAM..=CMD_WRITE_RAM_LAST | CMD_WRITE_OUTPUT..=CMD_WRITE_AUX => {
                self.state.pending_command = Some(cmd);
            }
            CMD_AUX_DISABLE => self.state.ram[0] |= CTR_AUX_DISABLED,
            CMD_AUX_ENABLE => self.state.ram[0] &= !CTR_AUX_DISABLED,
            CMD_AUX_TEST | CMD_KBD_TEST => self.answer(0x00, K),
            CMD_SELF_TEST => {
                self.state.ram[0] |= CTR_SYS;
                self.answer(0x55, K);
            }
            CMD_KBD_DISABLE => self.state.ram[0] |= CTR_KBD_DISABLED,
            CMD_KBD_ENABLE => self.state.ram[0] &= !CTR_KBD_DISABLED,
            // Input port: keyboard not inhibited (bit 7), colour display
            // jumper clear, as QEMU reports 0x80.
            CMD_READ_INPUT => self.answer(0x80, K),
            CMD_READ_OUTPUT => {
                let mut v = self.state.output_port & !0x30;
                // Bits 4 and 5 mirror the output buffer full lines.
                match self.state.obuf {
                    Some((_, I8042Source::Keyboard)) => v |= 0x10,
                    Some((_, I8042Source::Aux)) => v |= 0x20,
                    None => {}
                }
                self.answer(v, K);
            }
            CMD_A20_OFF => self.state.output_port &= !OUT_A20,
            CMD_A20_ON => self.state.output_port |= OUT_A20,
            CMD_READ_TEST => self.answer(0x00, K),
            // Pulsing output lines: a clear bit 0 pulses the reset line.
            CMD_PULSE_FIRST..=0xFF if cmd & OUT_RESET == 0 => self.state.reset_requested = true,
            _ => {}
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.state.pending_command.take() {
            Some(cmd @ CMD_WRITE_RAM..=CMD_WRITE_RAM_LAST) => {
                self.state.ram[usize::from(cmd - CMD_WRITE_RAM)] = value;
            }
            Some(CMD_WRITE_OUTPUT) => self.set_output_port(value),
            Some(CMD_WRITE_KBD_OBUF) => self.answer(value, I8042Source::Keyboard),
            Some(CMD_WRITE_AUX_OBUF) => self.answer(value, I8042Source::Aux),
            Some(CMD_WRITE_AUX) => self.aux_write(value),
            _ => self.kbd_write(value),
        }
    }

    fn kbd_reply(&mut self, bytes: &[u8]) {
        for &b in bytes {
            Self::enqueue(&mut self.state.kbd_queue, b);
        }
    }

    fn kbd_write(&mut self, value: u8) {
        if let Some(cmd) = self.state.kbd_pending.take() {
            match cmd {
                0xED => self.state.kbd_leds = value & 7,
                0xF3 => self.state.kbd_typematic = value & 0x7F,
                _ => {
                    // 0xF0: 0 asks for the current set, 1..=3 select one.
                    if value == 0 {
                        let set = self.state.kbd_scan_set;
                        self.kbd_reply(&[ACK, set]);
                        return;
                    }
                    if (1..=3).contains(&value) {
                        self.state.kbd_scan_set = value;
                    }
                }
            }
            self.kbd_reply(&[ACK]);
            return;
        }
        match value {
            0xED | 0xF3 | 0xF0 => {
                self.state.kbd_pending = Some(value);
                self.kbd_reply(&[ACK]);
            }
            0xEE => self.kbd_reply(&[0xEE]),
            0xF2 => self.kbd_reply(&[ACK, 0xAB, 0x83]),
            0xF4 => {
                self.state.kbd_scanning = true;
                self.kbd_reply(&[ACK]);
            }
            0xF5 | 0xF6 => {
                self.state.kbd_scanning = value == 0xF6;
                self.state.kbd_leds = 0;
                self.state.kbd_scan_set = 2;
                self.state.kbd_typematic = 0x2B;
                self.kbd_reply(&[ACK]);
            }
            0xFF => {
                self.state.kbd_queue.clear();
                self.state.kbd_scanning = true;
                self.state.kbd_leds = 0;
                self.state.kbd_scan_set = 2;
                self.state.kbd_typematic = 0x2B;
                self.kbd_reply(&[ACK, BAT_OK]);
            }
            0xF7..=0xFD => self.kbd_reply(&[ACK]),
            _ => self.kbd_reply(&[RESEND]),
        }
    }

    fn aux_reply(&mut self, bytes: &[u8]) {
        for &b in bytes {
            Self::enqueue(&mut self.state.aux_queue, b);
        }
    }

    fn aux_defaults(&mut self) {
        let s = &mut self.state;
        s.aux_reporting = false;
        s.aux_sample_rate = 100;
        s.aux_resolution = 2;
        s.aux_scaling_2to1 = false;
        s.aux_remote = false;
    }

    fn aux_write(&mut self, value: u8) {
        if let Some(cmd) = self.state.aux_pending.take() {
            if cmd == 0xF3 {
                self.state.aux_sample_rate = value;
            } else {
                self.state.aux_resolution = value & 3;
            }
            self.aux_reply(&[ACK]);
            return;
        }
        if self.state.aux_wrap && value != 0xEC && value != 0xFF {
            self.aux_reply(&[value]);
            return;
        }
        match value {
            0xE8 | 0xF3 => {
                self.state.aux_pending = Some(value);
                self.aux_reply(&[ACK]);
            }
            0xE6 | 0xE7 => {
                self.state.aux_scaling_2to1 = value == 0xE7;
                self.aux_reply(&[ACK]);
            }
            0xE9 => {
                let s = &self.state;
                let status = (u8::from(s.aux_remote) << 6)
                    | (u8::from(s.aux_reporting) << 5)
                    | (u8::from(s.aux_scaling_2to1) << 4);
                let (res, rate) = (s.aux_resolution, s.aux_sample_rate);
                self.aux_reply(&[ACK, status, res, rate]);
            }
            0xEA | 0xF0 => {
                self.state.aux_remote = value == 0xF0;
                self.aux_reply(&[ACK]);
            }
            // Read data: no movement, no buttons.
            0xEB => self.aux_reply(&[ACK, 0x08, 0x00, 0x00]),
            0xEC | 0xEE => {
                self.state.aux_wrap = value == 0xEE;
                self.aux_reply(&[ACK]);
            }
            0xF2 => self.aux_reply(&[ACK, 0x00]),
            0xF4 => {
                self.state.aux_reporting = true;
                self.aux_reply(&[ACK]);
            }
            0xF5 | 0xF6 => {
                self.aux_defaults();
                self.aux_reply(&[ACK]);
            }
            0xFF => {
                self.state.aux_queue.clear();
                self.state.aux_wrap = false;
                self.aux_defaults();
                self.aux_reply(&[ACK, BAT_OK, 0x00]);
            }
            _ => self.aux_reply(&[RESEND]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A controller whose clock moves on by the refill gap before every
    /// access, so each access sees the buffer settled.
    struct Tb {
        k: I8042,
        now: u64,
    }

    impl Tb {
        fn new() -> Self {
            Self::from(I8042::new())
        }

        fn from(k: I8042) -> Self {
            Tb { k, now: 0 }
        }

        fn tick(&mut self) -> u64 {
            self.now += I8042_REFILL_NS;
            self.now
        }

        fn read(&mut self, off: u8) -> u8 {
            let t = self.tick();
            self.k.read(t, off)
        }

        fn write(&mut self, off: u8, v: u8) {
            let t = self.tick();
            self.k.write(t, off, v);
        }

        fn push_keyboard_input(&mut self, bytes: &[u8]) {
            let t = self.tick();
            self.k.push_keyboard_input(t, bytes);
        }

        fn irq1_level(&self) -> bool {
            self.k.irq1_level(self.now)
        }

        fn irq12_level(&self) -> bool {
            self.k.irq12_level(self.now)
        }
    }

    impl std::ops::Deref for Tb {
        type Target = I8042;
        fn deref(&self) -> &I8042 {
            &self.k
        }
    }

    fn cmd(k: &mut Tb, c: u8) {
        k.write(OFF_COMMAND, c);
    }

    fn data(k: &mut Tb, v: u8) {
        k.write(OFF_DATA, v);
    }

    /// Reads every waiting byte (as Linux's `i8042_flush` does).
    fn drain(k: &mut Tb) -> Vec<u8> {
        let mut out = Vec::new();
        while k.read(OFF_COMMAND) & STS_OBF != 0 {
            out.push(k.read(OFF_DATA));
        }
        out
    }

    #[test]
    fn power_on_status() {
        let mut k = Tb::new();
        assert_eq!(k.read(OFF_COMMAND), STS_UNLOCKED | STS_CMD);
        assert_eq!(k.command_byte(), 0x03);
        assert!(k.a20_enabled());
        assert!(!k.irq1_level() && !k.irq12_level());
        assert_eq!(k.read(OFF_DATA), 0, "empty buffer rereads last byte");
        assert_eq!(k.read(1), 0xFF);
    }

    #[test]
    fn linux_controller_probe() {
        let mut k = Tb::new();
        cmd(&mut k, CMD_SELF_TEST);
        assert_eq!(k.read(OFF_COMMAND) & (STS_OBF | STS_SYS), STS_OBF | STS_SYS);
        assert!(k.irq1_level());
        assert_eq!(drain(&mut k), [0x55]);
        assert!(!k.irq1_level());
        // Read the command byte, disable both ports and IRQs, write it.
        cmd(&mut k, CMD_READ_RAM);
        let ctr = drain(&mut k)[0];
        assert_eq!(ctr, 0x07);
        cmd(&mut k, CMD_WRITE_RAM);
        assert_eq!(k.read(OFF_COMMAND) & STS_CMD, STS_CMD);
        data(&mut k, (ctr | 0x30) & !0x03);
        assert_eq!(k.read(OFF_COMMAND) & STS_CMD, 0);
        assert_eq!(k.command_byte(), 0x34);
        cmd(&mut k, CMD_KBD_TEST);
        assert_eq!(drain(&mut k), [0x00]);
        cmd(&mut k, CMD_AUX_TEST);
        assert_eq!(drain(&mut k), [0x00]);
        // AUX loopback answers as the mouse.
        cmd(&mut k, CMD_WRITE_AUX_OBUF);
        data(&mut k, 0x5A);
        assert_eq!(
            k.read(OFF_COMMAND) & (STS_OBF | STS_AUX_OBF),
            STS_OBF | STS_AUX_OBF
        );
        assert!(!k.irq12_level(), "AUX interrupt disabled");
        assert_eq!(k.read(OFF_DATA), 0x5A);
        // Port enable bits.
        cmd(&mut k, CMD_AUX_ENABLE);
        assert_eq!(k.command_byte() & CTR_AUX_DISABLED, 0);
        cmd(&mut k, CMD_AUX_DISABLE);
        assert_ne!(k.command_byte() & CTR_AUX_DISABLED, 0);
        cmd(&mut k, CMD_KBD_ENABLE);
        assert_eq!(k.command_byte() & CTR_KBD_DISABLED, 0);
        cmd(&mut k, CMD_KBD_DISABLE);
        assert_ne!(k.command_byte() & CTR_KBD_DISABLED, 0);
        // IRQ 12 via the loopback with AUXINT enabled.
        cmd(&mut k, CMD_WRITE_RAM);
        data(&mut k, 0x07);
        cmd(&mut k, CMD_WRITE_AUX_OBUF);
        data(&mut k, 0xA5);
        assert!(k.irq12_level());
        assert!(!k.irq1_level());
        assert_eq!(k.read(OFF_DATA), 0xA5);
        assert!(!k.irq12_level());
    }

    #[test]
    fn output_port_a20_and_reset() {
        let mut k = Tb::new();
        cmd(&mut k, CMD_READ_OUTPUT);
        assert_eq!(drain(&mut k), [0xCF]);
        cmd(&mut k, CMD_WRITE_OUTPUT);
        data(&mut k, 0xCD);
        assert!(!k.a20_enabled());
        assert!(!k.reset_requested());
        cmd(&mut k, CMD_A20_ON);
        assert!(k.a20_enabled());
        cmd(&mut k, CMD_WRITE_OUTPUT);
        data(&mut k, 0xDF);
        assert!(k.a20_enabled());
        cmd(&mut k, 0xFF); // pulse nothing
        assert!(!k.reset_requested());
        cmd(&mut k, 0xFE);
        assert!(k.reset_requested());
        let mut k = Tb::new();
        cmd(&mut k, CMD_WRITE_OUTPUT);
        data(&mut k, 0x00);
        assert!(k.reset_requested());
    }

    #[test]
    fn keyboard_commands() {
        let mut k = Tb::new();
        data(&mut k, 0xFF);
        assert!(k.irq1_level());
        assert_eq!(drain(&mut k), [ACK, BAT_OK]);
        data(&mut k, 0xF2);
        assert_eq!(drain(&mut k), [ACK, 0xAB, 0x83]);
        data(&mut k, 0xED);
        data(&mut k, 0x07);
        assert_eq!(drain(&mut k), [ACK, ACK]);
        assert_eq!(k.state().kbd_leds, 7);
        data(&mut k, 0xF0);
        data(&mut k, 0x00);
        assert_eq!(drain(&mut k), [ACK, ACK, 2]);
        data(&mut k, 0xEE);
        assert_eq!(drain(&mut k), [0xEE]);
        data(&mut k, 0x12);
        assert_eq!(drain(&mut k), [RESEND]);
        // Keyboard bytes wait while the port is disabled.
        cmd(&mut k, CMD_KBD_DISABLE);
        data(&mut k, 0xF5);
        assert_eq!(drain(&mut k), [0u8; 0]);
        cmd(&mut k, CMD_KBD_ENABLE);
        assert_eq!(drain(&mut k), [ACK]);
        k.push_keyboard_input(&[0x1E]);
        assert_eq!(drain(&mut k), [0u8; 0], "scanning disabled");
        data(&mut k, 0xF4);
        k.push_keyboard_input(&[0x1E, 0x9E]);
        assert_eq!(drain(&mut k), [ACK, 0x1E, 0x9E]);
        k.push_keyboard_input(&[0x55; 40]);
        assert_eq!(drain(&mut k).len(), QUEUE_LIMIT);
    }

    #[test]
    fn mouse_commands() {
        let mut k = Tb::new();
        cmd(&mut k, CMD_WRITE_AUX);
        data(&mut k, 0xFF);
        assert!(k.irq12_level());
        assert_eq!(drain(&mut k), [ACK, BAT_OK, 0x00]);
        for (c, p) in [(0xF3u8, 200u8), (0xF3, 100), (0xF3, 80), (0xE8, 3)] {
            cmd(&mut k, CMD_WRITE_AUX);
            data(&mut k, c);
            cmd(&mut k, CMD_WRITE_AUX);
            data(&mut k, p);
        }
        assert_eq!(drain(&mut k), [ACK; 8]);
        cmd(&mut k, CMD_WRITE_AUX);
        data(&mut k, 0xF2);
        assert_eq!(drain(&mut k), [ACK, 0x00]);
        cmd(&mut k, CMD_WRITE_AUX);
        data(&mut k, 0xF4);
        cmd(&mut k, CMD_WRITE_AUX);
        data(&mut k, 0xE9);
        assert_eq!(drain(&mut k), [ACK, ACK, 0x20, 3, 80]);
        // Mouse bytes wait while the mouse port is disabled.
        cmd(&mut k, CMD_AUX_DISABLE);
        cmd(&mut k, CMD_WRITE_AUX);
        data(&mut k, 0xF5);
        assert_eq!(drain(&mut k), [0u8; 0]);
        cmd(&mut k, CMD_AUX_ENABLE);
        assert_eq!(drain(&mut k), [ACK]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut k = Tb::new();
        let mut x = 0xDEAD_BEEFu32;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let [a, b, c, _] = x.to_le_bytes();
            match a % 5 {
                0 => k.write(OFF_COMMAND, b),
                1 | 2 => k.write(b % 6, c),
                3 => {
                    let _ = k.read(b % 6);
                }
                _ => k.push_keyboard_input(&[b, c]),
            }
            let _ = (k.irq1_level(), k.irq12_level());
            if let Some(d) = k.k.next_deadline(k.now) {
                assert!(d > k.now);
            }
        }
        let mut st = k.state();
        st.kbd_queue = vec![1; 1000].into();
        st.pending_command = Some(0xFF);
        st.kbd_pending = Some(0x00);
        st.aux_pending = Some(0x00);
        let mut k = Tb::from(I8042::from_state(&st));
        k.write(OFF_DATA, 1);
        cmd(&mut k, CMD_WRITE_AUX);
        k.write(OFF_DATA, 1);
        drain(&mut k);
    }

    #[test]
    fn each_byte_raises_the_irq_anew() {
        let mut k = I8042::new();
        k.write(100, OFF_DATA, 0xFF); // keyboard reset: ACK, BAT
        assert!(k.irq1_level(100));
        assert_eq!(k.next_deadline(100), None);
        assert_eq!(k.read(200, OFF_DATA), ACK);
        // The line drops: the PIC will see a new edge for the next byte.
        assert!(!k.irq1_level(200));
        assert_eq!(k.read(201, OFF_COMMAND) & STS_OBF, 0);
        let d = k.next_deadline(201).unwrap();
        assert_eq!(d, 200 + I8042_REFILL_NS);
        assert!(!k.irq1_level(d - 1));
        assert!(k.irq1_level(d));
        assert_eq!(k.read(d, OFF_COMMAND) & STS_OBF, STS_OBF);
        assert_eq!(k.read(d, OFF_DATA), BAT_OK);
        assert_eq!(k.next_deadline(d), None, "nothing left");
        // A command answered inside the gap waits for it too.
        k.write(d + 1, OFF_COMMAND, CMD_SELF_TEST);
        assert!(!k.irq1_level(d + 1));
        assert_eq!(k.next_deadline(d + 1), Some(d + I8042_REFILL_NS));
        assert_eq!(k.read(d + I8042_REFILL_NS, OFF_DATA), 0x55);
    }

    #[test]
    fn snapshot_roundtrip() {
        let mut k = Tb::new();
        data(&mut k, 0xF2);
        cmd(&mut k, CMD_WRITE_RAM);
        let saved = k.state();
        let irq = k.irq1_level();

        data(&mut k, 0x00);
        drain(&mut k);
        cmd(&mut k, 0xFE);
        assert_ne!(k.state(), saved);

        let mut r = Tb::from(I8042::from_state(&saved));
        assert_eq!(r.state(), saved);
        assert_eq!(r.irq1_level(), irq);
        data(&mut r, 0x47);
        assert_eq!(r.command_byte(), 0x47);
        assert_eq!(drain(&mut r), [ACK, 0xAB, 0x83]);
        assert!(!r.reset_requested());
    }
}
