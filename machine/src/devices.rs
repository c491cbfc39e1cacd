//! The PC's legacy devices and how they are wired: which ports reach which
//! device, which interrupt line each drives, and where console output goes.
//!
//! | ports          | device                           | IRQ |
//! |----------------|----------------------------------|-----|
//! | 0x20–0x21      | master i8259 PIC                 |     |
//! | 0x40–0x43      | i8254 PIT                        | 0   |
//! | 0x60, 0x64     | i8042 keyboard controller        | 1, 12 |
//! | 0x61           | system control port B (PIT ch 2) |     |
//! | 0x70–0x71      | CMOS RAM and MC146818 RTC        | 8   |
//! | 0x80           | POST code port (writes ignored)  |     |
//! | 0xA0–0xA1      | slave i8259 PIC                  |     |
//! | 0xE9           | debug console                    |     |
//! | 0xF4           | isa-debug-exit                   |     |
//! | 0x3F8–0x3FF    | COM1 16550A UART                 | 4   |
//! | 0x4D0–0x4D1    | PIC edge/level control (ELCR)    |     |
//! | 0x600–0x60B    | ACPI PM1 event/control, PM timer | 9 (SCI) |
//! | 0xCF8–0xCFF    | PCI configuration mechanism #1, reset control 0xCF9 | |
//!
//! Unclaimed ports read as all ones and ignore writes (an empty ISA bus).
//! ISA devices are byte-wide: a 16- or 32-bit access is split into byte
//! accesses at consecutive ports, as the ISA bus does; debug-exit and the
//! PCI ports take the whole access (QEMU's `iosize`).
//!
//! MMIO: the legacy VGA window reads as all ones; the I/O APIC answers at
//! 0xFEC00000 and each vCPU sees its own local APIC at 0xFEE00000.
//!
//! Interrupt lines are levels. [`PcDevices::update_irq_lines`] samples the
//! device outputs and drives a PIC input, and the I/O APIC input the MADT
//! and MP table name for it (ISA IRQ n on pin n, except IRQ 0 on pin 2),
//! only when its level changes, so re-initialising the PIC (which resets
//! its edge detector) needs a real low-to-high transition before it latches
//! a new request, as the 8259A datasheet says.

use hindsight_devices::{
    AcpiPm, AcpiPmState, CmosRtc, CmosRtcState, DebugExit, DebugExitState, Debugcon, DebugconState,
    DualPic, DualPicState, I8042State, PciHost, PciHostState, Pit, PitState, Uart16550,
    Uart16550State, ACPI_PM_BASE, ACPI_PM_LEN, CMOS_INDEX_PORT, COM1_BASE, COM1_IRQ, DEBUGCON_PORT,
    DEBUG_EXIT_PORT, I8042, I8042_AUX_IRQ, I8042_COMMAND_PORT, I8042_DATA_PORT, I8042_KBD_IRQ,
    PCI_CONFIG_ADDRESS_PORT, PIC_ELCR_MASTER, PIC_MASTER_CMD, PIC_SLAVE_CMD, PIT_BASE, PIT_IRQ,
    PORT61, RTC_IRQ, SCI_IRQ,
};
use serde::{Deserialize, Serialize};

use crate::apic::{ApicBus, ApicBusState};
use crate::bus::{MmioBus, PortBus, PORT_SPACE};
use crate::layout::{IOAPIC_SIZE, IOAPIC_START, LAPIC_SIZE, LAPIC_START, VGA_END, VGA_START};

// The ACPI tables describe the devices wired here.
const _: () = {
    use hindsight_firmware::acpi;
    assert!(acpi::PM1A_EVT_BLK == ACPI_PM_BASE);
    assert!(acpi::PM1A_CNT_BLK == ACPI_PM_BASE + 4);
    assert!(acpi::PM_TMR_BLK == ACPI_PM_BASE + 8);
    assert!(acpi::SCI_IRQ == SCI_IRQ);
    assert!(acpi::SLP_TYP_S5 == hindsight_devices::SLP_TYP_S5);
    assert!(acpi::RESET_PORT == PCI_CONFIG_ADDRESS_PORT + 1);
};

/// The POST code port: BIOSes write progress codes here; ignored.
pub const POST_CODE_PORT: u16 = 0x80;

/// The I/O APIC input an ISA IRQ drives: identity, except that the PIT's
/// IRQ 0 arrives on pin 2 (the interrupt source override in the MADT and
/// the MP table).
pub const fn ioapic_pin(irq: u8) -> u8 {
    if irq == 0 {
        2
    } else {
        irq
    }
}

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
    /// CMOS/RTC index and data ports (offset 0..=1).
    Cmos,
    /// i8042 data (0x60) and command/status (0x64) ports.
    I8042,
    /// PCI configuration address/data and reset control (offset from 0xCF8).
    Pci,
    /// ACPI power-management registers (offset from 0x600).
    AcpiPm,
}

/// A device reachable through the MMIO bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioDevice {
    /// The legacy VGA window with no adapter behind it: all ones, writes ignored.
    VgaWindow,
    /// The I/O APIC register window.
    Ioapic,
    /// The local APIC page (each vCPU reaches its own).
    Lapic,
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

/// What the devices need to know about the machine they sit in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Number of vCPUs (one local APIC each).
    pub cpus: usize,
    /// Wall-clock time at boot, Unix seconds (an input of the run).
    pub rtc_unix_secs: i64,
    /// RAM below 4 GiB, for the CMOS memory-size bytes.
    pub ram_below_4g: u64,
    /// RAM above 4 GiB.
    pub ram_above_4g: u64,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            cpus: 1,
            rtc_unix_secs: 0,
            ram_below_4g: 0,
            ram_above_4g: 0,
        }
    }
}

/// The PC devices, their port and MMIO maps, and their interrupt wiring.
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
    /// CMOS RAM and the real-time clock.
    pub cmos: CmosRtc,
    /// The keyboard controller.
    pub i8042: I8042,
    /// The PCI host bridge (configuration space, reset control).
    pub pci: PciHost,
    /// ACPI power management: PM1 registers, PM timer, S5 power-off.
    pub acpi_pm: AcpiPm,
    /// Local APICs and the I/O APIC.
    pub apic: ApicBus,
    /// Levels currently driven into the PIC inputs (bit n = IRQ n).
    lines: u16,
    /// Bumped on every PIT access, so cached timer deadlines are recomputed.
    pub(crate) timer_epoch: u64,
}

/// Saved state of [`PcDevices`]: every device's guest-visible state and
/// the interrupt line levels. The port and MMIO maps are fixed wiring, and
/// console output buffers belong to the host: neither is saved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcDevicesState {
    /// COM1.
    pub uart: Uart16550State,
    /// The master/slave PIC pair.
    pub pic: DualPicState,
    /// The PIT and port 0x61.
    pub pit: PitState,
    /// isa-debug-exit.
    pub debug_exit: DebugExitState,
    /// The 0xE9 debug console.
    pub debugcon: DebugconState,
    /// CMOS RAM and the RTC.
    pub cmos: CmosRtcState,
    /// The keyboard controller.
    pub i8042: I8042State,
    /// The PCI host bridge.
    pub pci: PciHostState,
    /// ACPI power management.
    pub acpi_pm: AcpiPmState,
    /// The local APICs, the I/O APIC and pending INIT/SIPI signals.
    pub apic: ApicBusState,
    /// Levels driven into the PIC inputs (bit n = IRQ n); the I/O APIC
    /// pins follow the same levels and keep their own copy.
    pub irq_lines: u16,
}

impl Default for PcDevices {
    fn default() -> Self {
        Self::new(&DeviceConfig::default())
    }
}

impl PcDevices {
    /// The devices in their power-on state, wired as in the module table.
    pub fn new(cfg: &DeviceConfig) -> PcDevices {
        let mut ports = PortBus::new(PORT_SPACE);
        let map: [(u16, u64, PortDevice); 14] = [
            (PIC_MASTER_CMD, 2, PortDevice::Pic),
            (PIT_BASE, 4, PortDevice::Pit),
            (I8042_DATA_PORT, 1, PortDevice::I8042),
            (PORT61, 1, PortDevice::Port61),
            (I8042_COMMAND_PORT, 1, PortDevice::I8042),
            (CMOS_INDEX_PORT, 2, PortDevice::Cmos),
            (POST_CODE_PORT, 1, PortDevice::PostCode),
            (PIC_SLAVE_CMD, 2, PortDevice::Pic),
            (DEBUGCON_PORT, 1, PortDevice::Debugcon),
            (DEBUG_EXIT_PORT, 1, PortDevice::DebugExit),
            (COM1_BASE, 8, PortDevice::Com1),
            (PIC_ELCR_MASTER, 2, PortDevice::Pic),
            (ACPI_PM_BASE, u64::from(ACPI_PM_LEN), PortDevice::AcpiPm),
            (PCI_CONFIG_ADDRESS_PORT, 8, PortDevice::Pci),
        ];
        for (base, len, dev) in map {
            ports
                .insert(u64::from(base), len, dev)
                .expect("the fixed PC port map has no overlaps (tested)");
        }
        let mut mmio = MmioBus::new(u64::MAX);
        for (base, len, dev) in [
            (VGA_START, VGA_END - VGA_START, MmioDevice::VgaWindow),
            (IOAPIC_START, IOAPIC_SIZE, MmioDevice::Ioapic),
            (LAPIC_START, LAPIC_SIZE, MmioDevice::Lapic),
        ] {
            mmio.insert(base, len, dev)
                .expect("the fixed PC MMIO map has no overlaps (tested)");
        }
        let (port_table, port_ranges) = dense_port_table(&ports);
        let cpus = cfg.cpus.max(1);
        let ioapic_id = hindsight_firmware::mptable::ioapic_id(cpus);
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
            cmos: CmosRtc::with_config(cfg.rtc_unix_secs, cfg.ram_below_4g, cfg.ram_above_4g),
            i8042: I8042::new(),
            pci: PciHost::new(),
            acpi_pm: AcpiPm::new(),
            apic: ApicBus::new(cpus, ioapic_id),
            lines: 0,
            timer_epoch: 0,
        };
        // The lines carry their power-on levels from time 0 (the PIT's OUT
        // is high in its reset mode 3), as on a PC coming out of reset.
        d.update_irq_lines(0);
        d
    }

    /// The state to save in a snapshot.
    pub fn state(&self) -> PcDevicesState {
        PcDevicesState {
            uart: self.uart.state(),
            pic: self.pic.state(),
            pit: self.pit.state(),
            debug_exit: self.debug_exit.state(),
            debugcon: self.debugcon.state(),
            cmos: self.cmos.state(),
            i8042: self.i8042.state(),
            pci: self.pci.state(),
            acpi_pm: self.acpi_pm.state(),
            apic: self.apic.state(),
            irq_lines: self.lines,
        }
    }

    /// Replaces every device's state with `s` (the caller checked that it
    /// has one local APIC per vCPU). Host-side output buffers are emptied;
    /// cached timer deadlines must be recomputed (the timer epoch moves).
    pub fn restore(&mut self, s: &PcDevicesState) {
        self.uart = Uart16550::from_state(&s.uart);
        self.pic = DualPic::from_state(&s.pic);
        self.pit = Pit::from_state(&s.pit);
        self.debug_exit = DebugExit::from_state(&s.debug_exit);
        self.debugcon = Debugcon::from_state(&s.debugcon);
        self.cmos = CmosRtc::from_state(&s.cmos);
        self.i8042 = I8042::from_state(&s.i8042);
        self.pci = PciHost::from_state(&s.pci);
        self.acpi_pm = AcpiPm::from_state(&s.acpi_pm);
        self.apic.restore(&s.apic);
        self.lines = s.irq_lines;
        self.timer_epoch += 1;
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
        match self.port(port) {
            Some((_, PortDevice::DebugExit)) => return self.debug_exit.read(),
            Some((off, PortDevice::Pci)) => return self.pci.read(off, size),
            _ => {}
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
        match self.port(port) {
            Some((_, PortDevice::DebugExit)) => {
                self.debug_exit.write(value);
                return;
            }
            Some((off, PortDevice::Pci)) => {
                self.pci.write(off, size, value);
                return;
            }
            _ => {}
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
            PortDevice::Cmos => self.cmos.read(now, off),
            PortDevice::I8042 => self.i8042.read(now, (port - I8042_DATA_PORT) as u8),
            PortDevice::Pci => self.pci.read(off, 1) as u8,
            PortDevice::AcpiPm => self.acpi_pm.read(now, off),
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
            PortDevice::Cmos => self.cmos.write(now, off, value),
            PortDevice::I8042 => self.i8042.write(now, (port - I8042_DATA_PORT) as u8, value),
            PortDevice::Pci => self.pci.write(off, 1, u32::from(value)),
            PortDevice::AcpiPm => self.acpi_pm.write(now, off, value),
        }
    }

    /// A read of `size` bytes from guest-physical `addr` that is not RAM,
    /// by vCPU `cpu` at virtual time `now`.
    pub fn mmio_read(&mut self, addr: u64, size: u8, cpu: usize, now: u64) -> u64 {
        let ones = if size >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * size)) - 1
        };
        match self.mmio.find(addr) {
            Some((off, MmioDevice::Ioapic)) => {
                let v = self.apic.ioapic.read((off & !3) as u32);
                u64::from(v >> (8 * (off & 3))) & ones
            }
            Some((off, MmioDevice::Lapic)) => match self.apic.lapics.get_mut(cpu) {
                Some(l) => u64::from(l.read(now, (off & !3) as u32) >> (8 * (off & 3))) & ones,
                None => ones,
            },
            Some((_, MmioDevice::VgaWindow)) | None => ones,
        }
    }

    /// A write to guest-physical `addr` that is not writable RAM (MMIO, ROM,
    /// unmapped) by vCPU `cpu` at virtual time `now`. The APICs take
    /// aligned 32-bit writes (a wider write reaches the low register).
    pub fn mmio_write(&mut self, addr: u64, size: u8, value: u64, cpu: usize, now: u64) {
        match self.mmio.find(addr) {
            Some((off, MmioDevice::Ioapic)) if size >= 4 && off & 3 == 0 => {
                self.apic.ioapic_write(off as u32, value as u32);
            }
            Some((off, MmioDevice::Lapic)) if size >= 4 && off & 3 == 0 => {
                self.apic.lapic_write(cpu, now, off as u32, value as u32);
            }
            _ => {}
        }
    }

    /// Samples the device outputs at virtual time `now` and drives the
    /// interrupt inputs whose level changed.
    pub fn update_irq_lines(&mut self, now: u64) {
        self.update_irq_lines_at(now, true);
    }

    /// Like [`PcDevices::update_irq_lines`], sampling the PIT (a 128-bit
    /// division) only when `sample_pit`: the run loop knows its output
    /// cannot have changed since the last sample unless a deadline was
    /// reached or the PIT was accessed.
    #[inline]
    pub(crate) fn update_irq_lines_at(&mut self, now: u64, sample_pit: bool) {
        self.apic.advance(now);
        let uart = self.uart.irq_level();
        self.drive(COM1_IRQ, uart);
        if sample_pit {
            let pit = self.pit.irq0_level(now);
            self.drive(PIT_IRQ, pit);
        }
        let rtc = self.cmos.irq_level(now);
        self.drive(RTC_IRQ, rtc);
        let kbd = self.i8042.irq1_level(now);
        self.drive(I8042_KBD_IRQ, kbd);
        let aux = self.i8042.irq12_level(now);
        self.drive(I8042_AUX_IRQ, aux);
        let sci = self.acpi_pm.sci_level(now);
        self.drive(SCI_IRQ, sci);
    }

    #[inline]
    fn drive(&mut self, irq: u8, level: bool) {
        let bit = 1u16 << irq;
        if (self.lines & bit != 0) != level {
            self.lines ^= bit;
            self.pic.set_irq(irq, level);
            self.apic.set_ioapic_pin(ioapic_pin(irq), level);
        }
    }

    /// Whether the next edge of the PIT's output could raise an interrupt:
    /// through the PIC (given its masks and in-service bits) or through an
    /// unmasked I/O APIC pin. With every CPU halted nothing else changes the
    /// interrupt controllers, so if this is false the PIT can never wake one.
    pub fn timer_edge_would_interrupt(&self) -> bool {
        let mut pic = self.pic.clone();
        pic.set_irq(PIT_IRQ, false);
        pic.set_irq(PIT_IRQ, true);
        pic.has_interrupt()
            || self.apic.ioapic.redirection_entry(ioapic_pin(PIT_IRQ)) & (1 << 16) == 0
    }

    /// Earliest deadline after `now` of the timed devices other than the PIT
    /// (local APIC timers, RTC, keyboard controller).
    pub(crate) fn other_deadline(&self, now: u64) -> Option<u64> {
        [
            self.apic.next_deadline(now),
            self.cmos.next_deadline(now),
            self.i8042.next_deadline(now),
            self.acpi_pm.next_deadline(now),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The guest asked to power off (ACPI S5).
    pub fn poweroff_requested(&self) -> bool {
        self.acpi_pm.poweroff_requested()
    }

    /// The guest asked for a reset (i8042 command 0xFE or port 0xCF9).
    pub fn reset_requested(&self) -> bool {
        self.i8042.reset_requested() || self.pci.reset_requested()
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
        let d = PcDevices::default();
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
        assert_eq!(p.find(0x70), Some((0, &PortDevice::Cmos)));
        assert_eq!(p.find(0x64), Some((0, &PortDevice::I8042)));
        assert_eq!(p.find(0xCFC), Some((4, &PortDevice::Pci)));
        assert_eq!(p.find(0x604), Some((4, &PortDevice::AcpiPm)));
        assert_eq!(p.iter().count(), 14);
        let mut d = PcDevices::default();
        assert_eq!(d.io_read(0x1234, 1, 0), 0xFF);
        assert_eq!(d.io_read(0x1234, 2, 0), 0xFFFF);
        assert_eq!(d.io_read(0x1234, 4, 0), 0xFFFF_FFFF);
        assert_eq!(d.io_read(0x80, 1, 0), 0xFF);
        assert_eq!(d.io_read(0xE9, 1, 0), 0xE9);
        assert_eq!(d.io_read(0xF4, 4, 0), 0);
        assert_eq!(d.mmio_read(VGA_START, 4, 0, 0), 0xFFFF_FFFF);
        // The local APIC answers: its version register.
        assert_eq!(d.mmio_read(0xFEE0_0030, 4, 0, 0), 0x0005_0014);
        assert_eq!(d.mmio_read(0xFED0_0000, 8, 0, 0), u64::MAX);
    }

    #[test]
    fn dense_table_agrees_with_the_bus() {
        let d = PcDevices::default();
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
        let mut d = PcDevices::default();
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
        let mut d = PcDevices::default();
        d.io_write(0xF4, 2, 0x1_0102, 0, &mut buffer());
        assert_eq!(d.debug_exit.exit_status(), Some(0x205));
    }

    #[test]
    fn pit_drives_irq0_through_the_pic() {
        let mut d = PcDevices::default();
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
        let mut d = PcDevices::default();
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
