//! The PC's legacy devices and how they are wired: which ports reach which
//! device, which interrupt line each drives, and where console output goes.
//!
//! | ports          | device                           | IRQ |
//! |----------------|----------------------------------|-----|
//! | 0x20–0x21      | master i8259 PIC                 |     |
//! | 0x40–0x43      | i8254 PIT                        | 0   |
//! | 0x61           | system control port B (PIT ch 2) |     |
//! | 0x80           | POST code port (writes ignored)  |     |
//! | 0xA0–0xA1      | slave i8259 PIC                  |     |
//! | 0xE9           | debug console                    |     |
//! | 0xF4           | isa-debug-exit                   |     |
//! | 0x3F8–0x3FF    | COM1 16550A UART                 | 4   |
//! | 0x4D0–0x4D1    | PIC edge/level control (ELCR)    |     |
//!
//! Unclaimed ports read as all ones and ignore writes (an empty ISA bus).
//! Devices are byte-wide: a 16- or 32-bit access is split into byte accesses
//! at consecutive ports, as the ISA bus does, except for debug-exit, which
//! takes the whole value (QEMU's `iosize`).
//!
//! MMIO: the legacy VGA window reads as all ones; nothing else is claimed
//! yet (the LAPIC and IOAPIC windows are reserved in [`crate::layout`]).
//!
//! Interrupt lines are levels. [`PcDevices::update_irq_lines`] samples the
//! UART's and the PIT's outputs and drives a PIC input only when its level
//! changes, so re-initialising the PIC (which resets its edge detector)
//! needs a real low-to-high transition before it latches a new request, as
//! the 8259A datasheet says.

use hindsight_devices::{
    DebugExit, Debugcon, DualPic, Pit, Uart16550, COM1_BASE, COM1_IRQ, DEBUGCON_PORT,
    DEBUG_EXIT_PORT, PIC_ELCR_MASTER, PIC_MASTER_CMD, PIC_SLAVE_CMD, PIT_BASE, PIT_IRQ, PORT61,
};

use crate::bus::{MmioBus, PortBus, PORT_SPACE};
use crate::layout::{VGA_END, VGA_START};

/// The POST code port: BIOSes write progress codes here; ignored.
pub const POST_CODE_PORT: u16 = 0x80;

/// A device reachable through the I/O port bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortDevice {
    /// COM1, 16550A UART (offset = register).
    Com1,
    /// Both i8259s and the ELCR (the device decodes absolute ports).
    Pic,
    /// i8254 PIT channels and control word (offset 0..=3).
    Pit,
    /// System control port B.
    Port61,
    /// QEMU's isa-debug-exit.
    DebugExit,
    /// The 0xE9 debug console.
    Debugcon,
    /// Port 0x80: writes ignored, reads all ones.
    PostCode,
}

/// A device reachable through the MMIO bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioDevice {
    /// The legacy VGA window with no adapter behind it: all ones, writes ignored.
    VgaWindow,
}

/// A host callback receiving console output as the guest produces it.
pub type ConsoleSink = Box<dyn FnMut(&[u8])>;

/// Where console output (COM1 transmit and the debug console) goes.
pub(crate) enum Console {
    /// Kept until [`crate::Machine::take_console_output`].
    Buffer(Vec<u8>),
    /// Handed to a host callback as it is produced.
    Sink(ConsoleSink),
}

impl Console {
    /// Emits `bytes` (no-op when empty).
    pub(crate) fn emit(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match self {
            Console::Buffer(buf) => buf.extend_from_slice(bytes),
            Console::Sink(f) => f(bytes),
        }
    }
}

/// The legacy PC devices, their port and MMIO maps, and their interrupt wiring.
pub struct PcDevices {
    ports: PortBus<PortDevice>,
    /// Dense copy of `ports` for the hot path: for each port, 1 + the index
    /// of its range in `port_ranges`, or 0 when unclaimed.
    port_table: Box<[u8]>,
    /// The ranges of `ports` as (base, device), indexed by `port_table`.
    port_ranges: Vec<(u16, PortDevice)>,
    mmio: MmioBus<MmioDevice>,
    /// COM1.
    pub uart: Uart16550,
    /// The master/slave PIC pair.
    pub pic: DualPic,
    /// The PIT with port 0x61.
    pub pit: Pit,
    /// isa-debug-exit at 0xF4.
    pub debug_exit: DebugExit,
    /// The debug console at 0xE9.
    pub debugcon: Debugcon,
    /// Levels currently driven into the PIC inputs (bit n = IRQ n).
    lines: u16,
    /// Bumped on every PIT access, so cached timer deadlines are recomputed.
    pub(crate) timer_epoch: u64,
}

impl Default for PcDevices {
    fn default() -> Self {
        Self::new()
    }
}

impl PcDevices {
    /// The devices in their power-on state, wired as in the module table.
    pub fn new() -> PcDevices {
        let mut ports = PortBus::new(PORT_SPACE);
        let map: [(u16, u64, PortDevice); 9] = [
            (PIC_MASTER_CMD, 2, PortDevice::Pic),
            (PIT_BASE, 4, PortDevice::Pit),
            (PORT61, 1, PortDevice::Port61),
            (POST_CODE_PORT, 1, PortDevice::PostCode),
            (PIC_SLAVE_CMD, 2, PortDevice::Pic),
            (DEBUGCON_PORT, 1, PortDevice::Debugcon),
            (DEBUG_EXIT_PORT, 1, PortDevice::DebugExit),
            (COM1_BASE, 8, PortDevice::Com1),
            (PIC_ELCR_MASTER, 2, PortDevice::Pic),
        ];
        for (base, len, dev) in map {
            ports
                .insert(u64::from(base), len, dev)
                .expect("the fixed PC port map has no overlaps (tested)");
        }
        let mut mmio = MmioBus::new(u64::MAX);
        mmio.insert(VGA_START, VGA_END - VGA_START, MmioDevice::VgaWindow)
            .expect("the fixed PC MMIO map has no overlaps (tested)");
        let (port_table, port_ranges) = dense_port_table(&ports);
        let mut d = PcDevices {
            ports,
            port_table,
            port_ranges,
            mmio,
            uart: Uart16550::new(),
            pic: DualPic::new(),
            pit: Pit::new(),
            debug_exit: DebugExit::new(),
            debugcon: Debugcon::new(),
            lines: 0,
            timer_epoch: 0,
        };
        // The lines carry their power-on levels from time 0 (the PIT's OUT
        // is high in its reset mode 3), as on a PC coming out of reset.
        d.update_irq_lines(0);
        d
    }

    /// The device claiming `port` and the offset of `port` into its range.
    #[inline]
    fn port(&self, port: u16) -> Option<(u8, PortDevice)> {
        let slot = self.port_table[usize::from(port)];
        let &(base, dev) = self.port_ranges.get(usize::from(slot).checked_sub(1)?)?;
        Some(((port - base) as u8, dev))
    }

    /// The port map (for diagnostics and tests).
    pub fn ports(&self) -> &PortBus<PortDevice> {
        &self.ports
    }

    /// IN of `size` bytes from `port` at virtual time `now`.
    pub fn io_read(&mut self, port: u16, size: u8, now: u64) -> u32 {
        if size == 1 {
            return u32::from(self.read8(port, now));
        }
        if let Some((_, PortDevice::DebugExit)) = self.port(port) {
            return self.debug_exit.read();
        }
        let mut v = 0u32;
        for i in 0..size.min(4) {
            v |= u32::from(self.read8(port.wrapping_add(u16::from(i)), now)) << (8 * i);
        }
        v
    }

    /// OUT of `size` bytes of `value` to `port` at virtual time `now`;
    /// console bytes go to `console`.
    pub(crate) fn io_write(
        &mut self,
        port: u16,
        size: u8,
        value: u32,
        now: u64,
        console: &mut Console,
    ) {
        let value = if size >= 4 {
            value
        } else {
            value & ((1u32 << (8 * size)) - 1)
        };
        if let Some((_, PortDevice::DebugExit)) = self.port(port) {
            self.debug_exit.write(value);
            return;
        }
        for i in 0..size.min(4) {
            let p = port.wrapping_add(u16::from(i));
            self.write8(p, (value >> (8 * i)) as u8, now, console);
        }
    }

    fn read8(&mut self, port: u16, now: u64) -> u8 {
        let Some((off, dev)) = self.port(port) else {
            return 0xFF;
        };
        match dev {
            PortDevice::Com1 => self.uart.read(off),
            PortDevice::Pic => self.pic.read(port),
            PortDevice::Pit => {
                self.timer_epoch += 1;
                self.pit.read(now, off)
            }
            PortDevice::Port61 => self.pit.read_port61(now),
            PortDevice::DebugExit => self.debug_exit.read() as u8,
            PortDevice::Debugcon => self.debugcon.read(),
            PortDevice::PostCode => 0xFF,
        }
    }

    fn write8(&mut self, port: u16, value: u8, now: u64, console: &mut Console) {
        let Some((off, dev)) = self.port(port) else {
            return;
        };
        match dev {
            PortDevice::Com1 => {
                self.uart.write(off, value);
                console.emit(&self.uart.take_output());
            }
            PortDevice::Pic => self.pic.write(port, value),
            PortDevice::Pit => {
                self.timer_epoch += 1;
                self.pit.write(now, off, value);
            }
            PortDevice::Port61 => {
                self.timer_epoch += 1;
                self.pit.write_port61(now, value);
            }
            PortDevice::DebugExit => self.debug_exit.write(u32::from(value)),
            PortDevice::Debugcon => {
                self.debugcon.write(value);
                console.emit(&self.debugcon.take_output());
            }
            PortDevice::PostCode => {}
        }
    }

    /// A read of `size` bytes from guest-physical `addr` that is not RAM.
    pub fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
        let ones = if size >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * size)) - 1
        };
        match self.mmio.find(addr) {
            Some((_, MmioDevice::VgaWindow)) | None => ones,
        }
    }

    /// A write to guest-physical `addr` that is not writable RAM (MMIO, ROM,
    /// unmapped): ignored by everything that exists so far.
    pub fn mmio_write(&mut self, addr: u64, _size: u8, _value: u64) {
        match self.mmio.find(addr) {
            Some((_, MmioDevice::VgaWindow)) | None => {}
        }
    }

    /// Samples the device outputs at virtual time `now` and drives the PIC
    /// inputs whose level changed.
    pub fn update_irq_lines(&mut self, now: u64) {
        self.update_irq_lines_at(now, true);
    }

    /// Like [`PcDevices::update_irq_lines`], sampling the PIT (a 128-bit
    /// division) only when `sample_pit`: the run loop knows its output
    /// cannot have changed since the last sample unless a deadline was
    /// reached or the PIT was accessed.
    #[inline]
    pub(crate) fn update_irq_lines_at(&mut self, now: u64, sample_pit: bool) {
        let uart = self.uart.irq_level();
        self.drive(COM1_IRQ, uart);
        if sample_pit {
            let pit = self.pit.irq0_level(now);
            self.drive(PIT_IRQ, pit);
        }
    }

    #[inline]
    fn drive(&mut self, irq: u8, level: bool) {
        let bit = 1u16 << irq;
        if (self.lines & bit != 0) != level {
            self.lines ^= bit;
            self.pic.set_irq(irq, level);
        }
    }

    /// Whether the next edge of the PIT's output could raise the CPU's
    /// interrupt line, given the PIC's current masks and in-service bits.
    /// With the CPU halted nothing else changes the PIC, so if this is false
    /// the timer can never wake it.
    pub fn timer_edge_would_interrupt(&self) -> bool {
        let mut pic = self.pic.clone();
        pic.set_irq(PIT_IRQ, false);
        pic.set_irq(PIT_IRQ, true);
        pic.has_interrupt()
    }
}

/// Builds the dense lookup table of a port bus (at most 255 ranges).
fn dense_port_table(ports: &PortBus<PortDevice>) -> (Box<[u8]>, Vec<(u16, PortDevice)>) {
    let mut table = vec![0u8; PORT_SPACE as usize].into_boxed_slice();
    let mut ranges = Vec::new();
    for (i, (base, len, &dev)) in ports.iter().enumerate() {
        let slot = u8::try_from(i + 1).expect("at most 255 port ranges");
        table[base as usize..(base + len) as usize].fill(slot);
        ranges.push((base as u16, dev));
    }
    (table, ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer() -> Console {
        Console::Buffer(Vec::new())
    }

    #[test]
    fn port_map_routes_and_floats() {
        let d = PcDevices::new();
        let p = d.ports();
        assert_eq!(p.find(0x3F8), Some((0, &PortDevice::Com1)));
        assert_eq!(p.find(0x3FF), Some((7, &PortDevice::Com1)));
        assert_eq!(p.find(0x400), None);
        assert_eq!(p.find(0x21), Some((1, &PortDevice::Pic)));
        assert_eq!(p.find(0xA1), Some((1, &PortDevice::Pic)));
        assert_eq!(p.find(0x4D1), Some((1, &PortDevice::Pic)));
        assert_eq!(p.find(0x43), Some((3, &PortDevice::Pit)));
        assert_eq!(p.find(0x44), None);
        assert_eq!(p.find(0x61), Some((0, &PortDevice::Port61)));
        assert_eq!(p.find(0xE9), Some((0, &PortDevice::Debugcon)));
        assert_eq!(p.find(0xF4), Some((0, &PortDevice::DebugExit)));
        assert_eq!(p.find(0x80), Some((0, &PortDevice::PostCode)));
        assert_eq!(p.iter().count(), 9);
        let mut d = PcDevices::new();
        assert_eq!(d.io_read(0x1234, 1, 0), 0xFF);
        assert_eq!(d.io_read(0x1234, 2, 0), 0xFFFF);
        assert_eq!(d.io_read(0x1234, 4, 0), 0xFFFF_FFFF);
        assert_eq!(d.io_read(0x80, 1, 0), 0xFF);
        assert_eq!(d.io_read(0xE9, 1, 0), 0xE9);
        assert_eq!(d.io_read(0xF4, 4, 0), 0);
        assert_eq!(d.mmio_read(VGA_START, 4), 0xFFFF_FFFF);
        assert_eq!(d.mmio_read(0xFEE0_0000, 8), u64::MAX);
    }

    #[test]
    fn dense_table_agrees_with_the_bus() {
        let d = PcDevices::new();
        for port in 0..=u16::MAX {
            let via_bus = d
                .ports()
                .find(u64::from(port))
                .map(|(o, &dev)| (o as u8, dev));
            assert_eq!(d.port(port), via_bus, "port {port:#x}");
        }
    }

    #[test]
    fn console_bytes_in_order() {
        let mut d = PcDevices::new();
        let mut c = buffer();
        d.io_write(0x3F8, 1, u32::from(b'a'), 0, &mut c);
        d.io_write(0xE9, 1, u32::from(b'b'), 0, &mut c);
        // A word write splits into bytes: THR then IER.
        d.io_write(0x3F8, 2, u32::from(b'c'), 0, &mut c);
        d.io_write(0x80, 1, 0x55, 0, &mut c);
        let Console::Buffer(out) = c else { panic!() };
        assert_eq!(out, b"abc");
    }

    #[test]
    fn debug_exit_takes_the_whole_value() {
        let mut d = PcDevices::new();
        d.io_write(0xF4, 2, 0x1_0102, 0, &mut buffer());
        assert_eq!(d.debug_exit.exit_status(), Some(0x205));
    }

    #[test]
    fn pit_drives_irq0_through_the_pic() {
        let mut d = PcDevices::new();
        let mut c = buffer();
        // PIC: ICW1..4, vectors 0x20/0x28, unmask IRQ0 only.
        for (port, v) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 4),
            (0x21, 1),
            (0x21, 0xFE),
        ] {
            d.io_write(port, 1, v, 0, &mut c);
        }
        // PIT channel 0, mode 2, count 1000.
        d.io_write(0x43, 1, 0x34, 0, &mut c);
        d.io_write(0x40, 1, 1000 & 0xff, 0, &mut c);
        d.io_write(0x40, 1, 1000 >> 8, 0, &mut c);
        d.update_irq_lines(0);
        assert!(!d.pic.has_interrupt(), "no edge yet");
        assert!(d.timer_edge_would_interrupt());
        let mut now = 0;
        let mut edges = 0;
        while edges < 3 {
            now = d.pit.next_deadline(now).unwrap();
            d.update_irq_lines(now);
            if d.pic.has_interrupt() {
                assert_eq!(d.pic.acknowledge(), 0x20);
                d.io_write(0x20, 1, 0x20, now, &mut c); // EOI
                edges += 1;
            }
        }
        // Masking IRQ0 means the timer can no longer wake a halted CPU.
        d.io_write(0x21, 1, 0xFF, now, &mut c);
        assert!(!d.timer_edge_would_interrupt());
    }

    #[test]
    fn uart_interrupt_reaches_irq4() {
        let mut d = PcDevices::new();
        let mut c = buffer();
        for (port, v) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 4),
            (0x21, 1),
            (0x21, 0xEF),
        ] {
            d.io_write(port, 1, v, 0, &mut c);
        }
        d.io_write(0x3F9, 1, 1, 0, &mut c); // IER: received data available
        d.update_irq_lines(0);
        assert!(!d.pic.has_interrupt());
        d.uart.push_input(b'x');
        d.update_irq_lines(0);
        assert!(d.pic.has_interrupt());
        assert_eq!(d.pic.acknowledge(), 0x24);
        assert_eq!(d.io_read(0x3F8, 1, 0), u32::from(b'x'));
        d.update_irq_lines(0);
        assert!(!d.pic.has_interrupt());
    }
}
