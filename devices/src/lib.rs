//! PC device models for hindsight, written as pure state machines driven by
//! virtual time.
//!
//! This crate owns the guest-visible behaviour of the legacy PC devices: the
//! 16550A UART, the dual i8259 PIC, the i8254 PIT (with system control port
//! 0x61), QEMU's isa-debug-exit and the 0xE9 debug console. Each device is a
//! plain struct with no bus, thread, file descriptor or host clock inside it:
//!
//! * registers are reached with `read(offset)` / `write(offset, value)`, the
//!   machine deciding which port range maps to which device;
//! * interrupt outputs are levels the machine samples (`irq_level`,
//!   `irq0_level`) and wires into the PIC with [`DualPic::set_irq`];
//! * timed devices take `now_ns`, the virtual time in nanoseconds (one
//!   retired instruction is one nanosecond), and report through
//!   `next_deadline(now_ns)` the absolute virtual time at which their output
//!   next changes, so the machine can run the CPU exactly up to it and a
//!   halted CPU can skip straight to it;
//! * every guest-visible bit lives in a separate serde state struct whose
//!   `Default` is the power-on state (`state()` / `from_state()`); host-side
//!   output buffers are not part of that state.
//!
//! Nothing here reads host time or host randomness, so a run is a pure
//! function of the initial state and the recorded external input.

#![deny(missing_docs)]

pub mod acpi_pm;
pub mod cmos_rtc;
pub mod debug_exit;
pub mod debugcon;
pub mod i8042;
pub mod ioapic;
pub mod lapic;
pub mod pci_host;
pub mod pic8259;
pub mod pit8254;
pub mod uart16550;

pub use acpi_pm::{AcpiPm, AcpiPmState, ACPI_PM_BASE, ACPI_PM_LEN, SCI_IRQ, SLP_TYP_S5};
pub use cmos_rtc::{CmosRtc, CmosRtcState, CMOS_DATA_PORT, CMOS_INDEX_PORT, CMOS_SIZE, RTC_IRQ};
pub use debug_exit::{DebugExit, DebugExitState, DEBUG_EXIT_PORT};
pub use debugcon::{Debugcon, DebugconState, DEBUGCON_PORT};
pub use i8042::{
    I8042Source, I8042State, I8042, I8042_AUX_IRQ, I8042_COMMAND_PORT, I8042_DATA_PORT,
    I8042_KBD_IRQ, I8042_REFILL_NS,
};
pub use ioapic::{
    Ioapic, IoapicDelivery, IoapicState, IOAPIC_DEFAULT_BASE, IOAPIC_PINS, IOAPIC_VERSION,
};
pub use lapic::{
    DeliveryMode, DestShorthand, IpiRequest, Lapic, LapicEvent, LapicState, LAPIC_DEFAULT_BASE,
    LAPIC_VERSION,
};
pub use pci_host::{
    PciHost, PciHostState, PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_DATA_PORT, PCI_RESET_CONTROL_PORT,
};
pub use pic8259::{
    DualPic, DualPicState, PicChipState, PIC_ELCR_MASTER, PIC_ELCR_SLAVE, PIC_MASTER_CMD,
    PIC_MASTER_DATA, PIC_SLAVE_CMD, PIC_SLAVE_DATA,
};
pub use pit8254::{
    ns_of_tick, ticks_at, Pit, PitChannelState, PitState, PIT_BASE, PIT_HZ, PIT_IRQ, PORT61,
};
pub use uart16550::{Uart16550, Uart16550State, COM1_BASE, COM1_IRQ, UART_FIFO_SIZE};

/// Nanoseconds per second of virtual time (the virtual CPU retires one
/// instruction per nanosecond, i.e. runs at 1 GHz).
pub const NS_PER_SEC: u64 = 1_000_000_000;
