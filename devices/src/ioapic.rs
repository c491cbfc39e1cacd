//! The 82093AA I/O APIC (version 0x11, 24 pins), at 0xFEC00000.
//!
//! The guest selects a register by writing its index to IOREGSEL (offset
//! 0x00) and reads or writes it through IOWIN (offset 0x10), both 32-bit.
//! Register 0x00 is the ID (bits 27:24), 0x01 the version, 0x02 the
//! arbitration ID, and 0x10 + 2n / 0x11 + 2n the low / high halves of
//! redirection entry n.
//!
//! Interrupt inputs arrive through [`Ioapic::set_irq`] as *asserted* levels
//! (the polarity bit is stored for the guest but not applied, as in QEMU:
//! the machine reports an active-low PCI line as asserted, not as low).
//! What the IOAPIC sends is returned to the caller as [`IoapicDelivery`]
//! values for the machine to route to the local APICs at once:
//!
//! * edge-triggered pins send on each rising edge; an edge on a masked pin
//!   is ignored, as the datasheet says (it is not held pending);
//! * level-triggered pins send while asserted, unmasked and with remote IRR
//!   clear, and set remote IRR; [`Ioapic::eoi`] (forwarded from a local
//!   APIC's EOI of a level vector) clears remote IRR and sends again if the
//!   line is still asserted. Unmasking an asserted level pin sends too.
//!
//! Delivery is immediate, so the delivery status bit always reads idle.

use serde::{Deserialize, Serialize};

use crate::lapic::DeliveryMode;

/// Default physical base of the IOAPIC's registers.
pub const IOAPIC_DEFAULT_BASE: u64 = 0xFEC0_0000;
/// Number of interrupt input pins (redirection entries).
pub const IOAPIC_PINS: usize = 24;
/// Value of the version register: version 0x11, max redirection entry 23.
pub const IOAPIC_VERSION: u32 = 0x0017_0011;

// MMIO offsets.
/// Register select (bits 7:0).
const MMIO_IOREGSEL: u32 = 0x00;
/// Window onto the selected register.
const MMIO_IOWIN: u32 = 0x10;

// Indirect register indices.
/// IOAPIC ID (bits 27:24).
const REG_ID: u8 = 0x00;
/// Version (read-only).
const REG_VERSION: u8 = 0x01;
/// Arbitration ID (read-only, bits 27:24).
const REG_ARB: u8 = 0x02;
/// First redirection table register (entry 0, low half).
const REG_REDIR_BASE: u8 = 0x10;

// Redirection entry bits.
/// Destination mode: logical.
const RE_LOGICAL: u64 = 1 << 11;
/// Remote IRR (level only, read-only): a level interrupt awaits its EOI.
const RE_REMOTE_IRR: u64 = 1 << 14;
/// Trigger mode: level.
const RE_LEVEL: u64 = 1 << 15;
/// Mask.
const RE_MASKED: u64 = 1 << 16;
/// Writable bits of the low half: vector, delivery mode, destination mode,
/// polarity, trigger mode, mask.
const RE_LOW_WRITABLE: u64 = 0x0001_AFFF;
/// Writable bits of the high half: destination (bits 63:56).
const RE_HIGH_WRITABLE: u64 = 0xFF00_0000 << 32;

/// An interrupt message the IOAPIC sends, for the machine to route to the
/// local APIC(s) the destination names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoapicDelivery {
    /// Input pin that caused it.
    pub pin: u8,
    /// Vector.
    pub vector: u8,
    /// Delivery mode (fixed, lowest priority, NMI, ExtINT...).
    pub mode: DeliveryMode,
    /// Logical (true) or physical destination mode.
    pub logical: bool,
    /// Destination (APIC ID or logical mask).
    pub destination: u8,
    /// Level-triggered: the local APIC must record it in TMR, and its EOI
    /// comes back through [`Ioapic::eoi`].
    pub level_triggered: bool,
}

/// Saved state of an [`Ioapic`]. `Default` is the power-on state with ID 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoapicState {
    /// IOAPIC ID (4 bits).
    pub id: u8,
    /// Selected register index.
    pub ioregsel: u8,
    /// Redirection entries (remote IRR included; delivery status is
    /// always 0).
    pub redir: [u64; IOAPIC_PINS],
    /// Asserted input lines, bit n for pin n.
    pub lines: u32,
}

impl Default for IoapicState {
    fn default() -> Self {
        IoapicState {
            id: 0,
            ioregsel: 0,
            redir: [RE_MASKED; IOAPIC_PINS],
            lines: 0,
        }
    }
}

/// An I/O APIC. See the module documentation.
#[derive(Clone, Debug)]
pub struct Ioapic {
    state: IoapicState,
}

impl Default for Ioapic {
    fn default() -> Self {
        Self::new()
    }
}

impl Ioapic {
    /// An IOAPIC with ID 0 in its power-on state (every pin masked).
    pub fn new() -> Self {
        Self::from_state(&IoapicState::default())
    }

    /// An IOAPIC with ID `id` (low four bits) in its power-on state.
    pub fn with_id(id: u8) -> Self {
        Self::from_state(&IoapicState {
            id,
            ..IoapicState::default()
        })
    }

    /// Rebuilds the IOAPIC from saved state.
    pub fn from_state(state: &IoapicState) -> Self {
        let mut state = state.clone();
        state.id &= 0x0F;
        state.lines &= (1 << IOAPIC_PINS) - 1;
        for e in state.redir.iter_mut() {
            *e &= RE_LOW_WRITABLE | RE_HIGH_WRITABLE | RE_REMOTE_IRR;
        }
        Ioapic { state }
    }

    /// The guest-visible state, for a snapshot.
    pub fn state(&self) -> IoapicState {
        self.state.clone()
    }

    /// Reads the 32-bit register at `offset` (IOREGSEL or IOWIN); other
    /// offsets read 0, as do unimplemented indirect registers.
    pub fn read(&self, offset: u32) -> u32 {
        match offset {
            MMIO_IOREGSEL => u32::from(self.state.ioregsel),
            MMIO_IOWIN => self.read_indirect(self.state.ioregsel),
            _ => 0,
        }
    }

    /// Writes the 32-bit register at `offset`. Unmasking an asserted
    /// level-triggered pin sends its interrupt, which is returned.
    pub fn write(&mut self, offset: u32, value: u32) -> Option<IoapicDelivery> {
        match offset {
            MMIO_IOREGSEL => {
                self.state.ioregsel = value as u8;
                None
            }
            MMIO_IOWIN => self.write_indirect(self.state.ioregsel, value),
            _ => None,
        }
    }

    /// Sets the asserted level of input `pin`; returns the interrupt this
    /// sends, if any. Pins past 23 are ignored.
    pub fn set_irq(&mut self, pin: u8, level: bool) -> Option<IoapicDelivery> {
        let p = usize::from(pin);
        if p >= IOAPIC_PINS {
            return None;
        }
        let bit = 1u32 << p;
        let was = self.state.lines & bit != 0;
        if level {
            self.state.lines |= bit;
        } else {
            self.state.lines &= !bit;
        }
        let entry = self.state.redir[p];
        if entry & RE_LEVEL != 0 {
            self.service_level(p)
        } else if level && !was && entry & RE_MASKED == 0 {
            Some(self.delivery(p))
        } else {
            None
        }
    }

    /// A local APIC retired level-triggered `vector`: clears remote IRR of
    /// every level pin with that vector and returns the interrupts re-sent
    /// for lines still asserted.
    pub fn eoi(&mut self, vector: u8) -> Vec<IoapicDelivery> {
        let mut out = Vec::new();
        for p in 0..IOAPIC_PINS {
            let e = self.state.redir[p];
            if e as u8 == vector && e & RE_REMOTE_IRR != 0 {
                self.state.redir[p] &= !RE_REMOTE_IRR;
                out.extend(self.service_level(p));
            }
        }
        out
    }

    /// Redirection entry `pin` as the guest sees it (0 past pin 23).
    pub fn redirection_entry(&self, pin: u8) -> u64 {
        self.state.redir.get(usize::from(pin)).copied().unwrap_or(0)
    }

    fn read_indirect(&self, index: u8) -> u32 {
        match index {
            REG_ID | REG_ARB => u32::from(self.state.id) << 24,
            REG_VERSION => IOAPIC_VERSION,
            i if i >= REG_REDIR_BASE => {
                let n = usize::from((i - REG_REDIR_BASE) / 2);
                match self.state.redir.get(n) {
                    Some(&e) if i % 2 == 0 => e as u32,
                    Some(&e) => (e >> 32) as u32,
                    None => 0,
                }
            }
            _ => 0,
        }
    }

    fn write_indirect(&mut self, index: u8, value: u32) -> Option<IoapicDelivery> {
        match index {
            REG_ID => {
                self.state.id = ((value >> 24) & 0x0F) as u8;
                None
            }
            i if i >= REG_REDIR_BASE => {
                let n = usize::from((i - REG_REDIR_BASE) / 2);
                let old = *self.state.redir.get(n)?;
                let new = if i % 2 == 0 {
                    let mut e = (old & !RE_LOW_WRITABLE) | (u64::from(value) & RE_LOW_WRITABLE);
                    if e & RE_LEVEL == 0 {
                        // Remote IRR is only defined for level triggering.
                        e &= !RE_REMOTE_IRR;
                    }
                    e
                } else {
                    (old & !RE_HIGH_WRITABLE) | ((u64::from(value) << 32) & RE_HIGH_WRITABLE)
                };
                self.state.redir[n] = new;
                if new & RE_LEVEL != 0 {
                    self.service_level(n)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Sends a level-triggered pin's interrupt if it is asserted, unmasked
    /// and not awaiting an EOI.
    fn service_level(&mut self, p: usize) -> Option<IoapicDelivery> {
        let e = self.state.redir[p];
        let asserted = self.state.lines & (1 << p) != 0;
        if e & RE_LEVEL == 0 || !asserted || e & (RE_MASKED | RE_REMOTE_IRR) != 0 {
            return None;
        }
        self.state.redir[p] |= RE_REMOTE_IRR;
        Some(self.delivery(p))
    }

    fn delivery(&self, p: usize) -> IoapicDelivery {
        let e = self.state.redir[p];
        IoapicDelivery {
            pin: p as u8,
            vector: e as u8,
            mode: DeliveryMode::from_bits((e >> 8) as u32),
            logical: e & RE_LOGICAL != 0,
            destination: (e >> 56) as u8,
            level_triggered: e & RE_LEVEL != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_reg(io: &mut Ioapic, index: u8, value: u32) -> Option<IoapicDelivery> {
        io.write(MMIO_IOREGSEL, u32::from(index));
        io.write(MMIO_IOWIN, value)
    }

    fn read_reg(io: &mut Ioapic, index: u8) -> u32 {
        io.write(MMIO_IOREGSEL, u32::from(index));
        io.read(MMIO_IOWIN)
    }

    fn program(io: &mut Ioapic, pin: u8, low: u32, dest: u8) -> Option<IoapicDelivery> {
        write_reg(io, REG_REDIR_BASE + 2 * pin + 1, u32::from(dest) << 24);
        write_reg(io, REG_REDIR_BASE + 2 * pin, low)
    }

    #[test]
    fn identification_registers() {
        let mut io = Ioapic::with_id(2);
        assert_eq!(read_reg(&mut io, REG_ID), 2 << 24);
        assert_eq!(read_reg(&mut io, REG_VERSION), 0x0017_0011);
        assert_eq!(read_reg(&mut io, REG_ARB), 2 << 24);
        write_reg(&mut io, REG_ID, 0xFF00_0000);
        assert_eq!(read_reg(&mut io, REG_ID), 0x0F00_0000);
        write_reg(&mut io, REG_VERSION, 0);
        assert_eq!(read_reg(&mut io, REG_VERSION), 0x0017_0011);
        assert_eq!(io.read(MMIO_IOREGSEL), u32::from(REG_VERSION));
        assert_eq!(io.read(0x20), 0);
        // Every entry starts masked.
        for pin in 0..24u8 {
            assert_eq!(read_reg(&mut io, REG_REDIR_BASE + 2 * pin), 0x1_0000);
            assert_eq!(read_reg(&mut io, REG_REDIR_BASE + 2 * pin + 1), 0);
        }
        assert_eq!(read_reg(&mut io, REG_REDIR_BASE + 48), 0, "past pin 23");
    }

    #[test]
    fn edge_triggered_delivery() {
        let mut io = Ioapic::new();
        assert_eq!(program(&mut io, 2, 0x0000_0830, 0x01), None);
        let d = io.set_irq(2, true).unwrap();
        assert_eq!(
            d,
            IoapicDelivery {
                pin: 2,
                vector: 0x30,
                mode: DeliveryMode::Fixed,
                logical: true,
                destination: 1,
                level_triggered: false,
            }
        );
        assert_eq!(io.set_irq(2, true), None, "no new edge");
        assert_eq!(io.set_irq(2, false), None);
        assert!(io.set_irq(2, true).is_some());
        // Masked edges are dropped, not held.
        io.set_irq(2, false);
        program(&mut io, 2, 0x0001_0830, 0x01);
        assert_eq!(io.set_irq(2, true), None);
        assert_eq!(program(&mut io, 2, 0x0000_0830, 0x01), None);
        assert_eq!(io.set_irq(99, true), None);
    }

    #[test]
    fn level_triggered_remote_irr() {
        let mut io = Ioapic::new();
        // Pin 11: vector 0x41, level, active low, physical dest 0.
        program(&mut io, 11, 0x0000_A041, 0);
        let d = io.set_irq(11, true).unwrap();
        assert!(d.level_triggered);
        assert_ne!(io.redirection_entry(11) & RE_REMOTE_IRR, 0);
        assert_eq!(io.set_irq(11, true), None, "awaiting EOI");
        // EOI with the line still asserted re-sends.
        assert_eq!(io.eoi(0x41), vec![d]);
        // EOI after the line dropped just clears remote IRR.
        io.set_irq(11, false);
        assert!(io.eoi(0x41).is_empty());
        assert_eq!(io.redirection_entry(11) & RE_REMOTE_IRR, 0);
        assert!(io.eoi(0x41).is_empty(), "spurious EOI");
        // Remote IRR is read-only; masked + asserted delivers on unmask.
        program(&mut io, 11, 0x0001_E041, 0);
        assert_eq!(io.redirection_entry(11) & RE_REMOTE_IRR, 0);
        assert_eq!(io.set_irq(11, true), None);
        let d = program(&mut io, 11, 0x0000_A041, 0).unwrap();
        assert_eq!(d.vector, 0x41);
        // Switching to edge clears remote IRR.
        program(&mut io, 11, 0x0000_2041, 0);
        assert_eq!(io.redirection_entry(11) & RE_REMOTE_IRR, 0);
    }

    #[test]
    fn shared_vector_eoi_and_modes() {
        let mut io = Ioapic::new();
        program(&mut io, 16, 0x0000_8050, 0);
        program(&mut io, 17, 0x0000_8050, 0);
        io.set_irq(16, true).unwrap();
        io.set_irq(17, true).unwrap();
        let again = io.eoi(0x50);
        assert_eq!(again.len(), 2);
        program(&mut io, 0, 0x0000_0700, 0);
        assert_eq!(io.set_irq(0, true).unwrap().mode, DeliveryMode::ExtInt);
        program(&mut io, 1, 0x0000_0400, 0);
        assert_eq!(io.set_irq(1, true).unwrap().mode, DeliveryMode::Nmi);
    }

    #[test]
    fn garbage_never_panics() {
        let mut io = Ioapic::new();
        let mut x = 0x1357_9BDFu32;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match x % 4 {
                0 => {
                    let _ = io.write((x >> 4) & 0x1F, x.rotate_left(9));
                }
                1 => {
                    let _ = io.read((x >> 4) & 0x1F);
                }
                2 => {
                    let _ = io.set_irq((x >> 8) as u8 % 32, x & 0x100 != 0);
                }
                _ => {
                    let _ = io.eoi((x >> 8) as u8);
                }
            }
        }
        let st = IoapicState {
            id: 0xFF,
            ioregsel: 0xFF,
            redir: [u64::MAX; IOAPIC_PINS],
            lines: u32::MAX,
        };
        let mut io = Ioapic::from_state(&st);
        let _ = io.read(MMIO_IOWIN);
        let _ = io.write(MMIO_IOWIN, u32::MAX);
        let _ = io.eoi(0xFF);
    }

    #[test]
    fn snapshot_roundtrip() {
        let mut io = Ioapic::with_id(1);
        program(&mut io, 4, 0x0000_0024, 0);
        program(&mut io, 9, 0x0000_8029, 0);
        io.set_irq(9, true);
        io.write(MMIO_IOREGSEL, 0x22);
        let saved = io.state();

        io.set_irq(9, false);
        io.eoi(0x29);
        program(&mut io, 4, 0x0001_0000, 0);
        assert_ne!(io.state(), saved);

        let mut r = Ioapic::from_state(&saved);
        assert_eq!(r.state(), saved);
        assert_eq!(r.read(MMIO_IOWIN), 0x0000_C029);
        assert_eq!(r.eoi(0x29).len(), 1, "line still asserted");
        assert!(r.set_irq(4, true).is_some());
    }
}
