//! The PC's pair of i8259A programmable interrupt controllers.
//!
//! The master serves IRQ 0..=7 at ports 0x20/0x21, the slave IRQ 8..=15 at
//! 0xA0/0xA1, its INT output cascaded into the master's IRQ 2. The ELCR at
//! 0x4D0/0x4D1 selects level (1) or edge (0) triggering per IRQ. The model
//! follows the 8259A datasheet and QEMU's `i8259.c`:
//!
//! * IRR latches a rising edge (edge mode) or follows the input (level mode);
//!   an acknowledged edge request is cleared from IRR, a level one is not.
//! * The INT output is raised when the highest-priority unmasked request
//!   outranks the highest-priority in-service interrupt (with rotation
//!   applied, special mask mode and special fully nested mode honoured).
//! * If a request vanishes between INT and INTA the master answers with its
//!   IRQ 7 vector without setting ISR (spurious IRQ 7). If the slave has
//!   nothing when the master acknowledges IRQ 2, the master still sets
//!   ISR bit 2 and the slave answers with its IRQ 7 vector (spurious IRQ 15).
//! * Poll mode (OCW3 bit 2) makes the next read of either port an INTA.
//!
//! Not modelled: buffered mode and 8080/8085 mode (ICW4 bits 0, 2, 3);
//! they do not change what an x86 guest sees.

use serde::{Deserialize, Serialize};

/// Master command port (ICW1, OCW2, OCW3; reads IRR or ISR).
pub const PIC_MASTER_CMD: u16 = 0x20;
/// Master data port (ICW2-4, OCW1 = IMR).
pub const PIC_MASTER_DATA: u16 = 0x21;
/// Slave command port.
pub const PIC_SLAVE_CMD: u16 = 0xA0;
/// Slave data port.
pub const PIC_SLAVE_DATA: u16 = 0xA1;
/// Edge/level control register for IRQ 0..=7 (PIIX/ICH).
pub const PIC_ELCR_MASTER: u16 = 0x4D0;
/// Edge/level control register for IRQ 8..=15.
pub const PIC_ELCR_SLAVE: u16 = 0x4D1;

/// Master IRQ input wired to the slave's INT output.
const CASCADE_IRQ: u8 = 2;
/// IRQ 0, 1, 2 (timer, keyboard, cascade) are always edge triggered.
const ELCR_MASTER_MASK: u8 = 0xF8;
/// IRQ 8 (RTC) and 13 (FPU error) are always edge triggered.
const ELCR_SLAVE_MASK: u8 = 0xDE;

// Command port decoding.
/// ICW1: bit 4 set starts initialization.
const ICW1_INIT: u8 = 0x10;
/// ICW1: ICW4 will follow.
const ICW1_IC4: u8 = 0x01;
/// ICW1: single mode (no cascade, no ICW3).
const ICW1_SNGL: u8 = 0x02;
/// ICW1: level-triggered mode for all inputs.
const ICW1_LTIM: u8 = 0x08;
/// OCW3 when bit 3 is set (and bit 4 clear); OCW2 when both are clear.
const OCW3_SELECT: u8 = 0x08;
/// OCW3: poll command.
const OCW3_POLL: u8 = 0x04;
/// OCW3: bit 0 selects the register read (when bit 1 is set).
const OCW3_READ_REG: u8 = 0x02;
/// OCW3: bit 5 sets/clears special mask mode (when bit 6 is set).
const OCW3_SPECIAL_MASK: u8 = 0x40;
/// ICW4: automatic end of interrupt.
const ICW4_AEOI: u8 = 0x02;
/// ICW4: special fully nested mode.
const ICW4_SFNM: u8 = 0x10;

/// Progress through the ICW sequence (stored in [`PicChipState::init_state`]).
const INIT_READY: u8 = 0;
/// Next data-port write is ICW2 (vector base).
const INIT_ICW2: u8 = 1;
/// Next data-port write is ICW3 (cascade wiring).
const INIT_ICW3: u8 = 2;
/// Next data-port write is ICW4 (mode).
const INIT_ICW4: u8 = 3;

/// Saved state of one i8259A. `Default` is the power-on state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicChipState {
    /// Input levels last seen, for edge detection.
    pub last_irr: u8,
    /// Interrupt request register.
    pub irr: u8,
    /// Interrupt mask register (OCW1).
    pub imr: u8,
    /// In-service register.
    pub isr: u8,
    /// Lowest-priority IRQ + 1: priority rotation offset.
    pub priority_add: u8,
    /// Vector base from ICW2 (low three bits clear).
    pub irq_base: u8,
    /// OCW3 read register select: false = IRR, true = ISR.
    pub read_isr: bool,
    /// Poll command pending: the next read is an INTA.
    pub poll: bool,
    /// Special mask mode (OCW3).
    pub special_mask: bool,
    /// ICW sequence position (0 ready, 1 expect ICW2, 2 ICW3, 3 ICW4).
    pub init_state: u8,
    /// Automatic EOI mode (ICW4).
    pub auto_eoi: bool,
    /// Rotate on automatic EOI (OCW2 commands 0/4).
    pub rotate_on_auto_eoi: bool,
    /// Special fully nested mode (ICW4, meaningful on the master).
    pub special_fully_nested: bool,
    /// ICW1 asked for ICW4.
    pub init4: bool,
    /// ICW1 single mode (no ICW3).
    pub single_mode: bool,
    /// ICW1 LTIM: all inputs level triggered.
    pub ltim: bool,
    /// Edge/level control register (1 = level); survives ICW1.
    pub elcr: u8,
}

/// Saved state of the master/slave pair. `Default` is the power-on state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DualPicState {
    /// The master (IRQ 0..=7).
    pub master: PicChipState,
    /// The slave (IRQ 8..=15), cascaded on master IRQ 2.
    pub slave: PicChipState,
}

/// One i8259A; the pair is driven through [`DualPic`].
#[derive(Clone, Debug)]
struct Chip {
    s: PicChipState,
    /// Bits of ELCR the hardware implements.
    elcr_mask: u8,
    /// This is the master (matters for special fully nested mode).
    is_master: bool,
}

impl Chip {
    /// Priority (0 highest) of the best request in `mask`, 8 if none.
    fn priority(&self, mask: u8) -> u8 {
        if mask == 0 {
            return 8;
        }
        let mut p = 0u8;
        while p < 8 && mask & (1 << ((p.wrapping_add(self.s.priority_add)) & 7)) == 0 {
            p += 1;
        }
        p
    }

    /// The IRQ this chip wants to raise INT for, if any.
    fn pending_irq(&self) -> Option<u8> {
        let p = self.priority(self.s.irr & !self.s.imr);
        if p == 8 {
            return None;
        }
        let mut in_service = self.s.isr;
        if self.s.special_mask {
            in_service &= !self.s.imr;
        }
        if self.s.special_fully_nested && self.is_master {
            // A slave request may interrupt a slave handler still in service.
            in_service &= !(1 << CASCADE_IRQ);
        }
        if p < self.priority(in_service) {
            Some(p.wrapping_add(self.s.priority_add) & 7)
        } else {
            None
        }
    }

    fn level_triggered(&self, mask: u8) -> bool {
        self.s.ltim || self.s.elcr & mask != 0
    }

    fn set_input(&mut self, irq: u8, level: bool) {
        let mask = 1u8 << (irq & 7);
        if self.level_triggered(mask) {
            if level {
                self.s.irr |= mask;
                self.s.last_irr |= mask;
            } else {
                self.s.irr &= !mask;
                self.s.last_irr &= !mask;
            }
        } else if level {
            if self.s.last_irr & mask == 0 {
                self.s.irr |= mask;
            }
            self.s.last_irr |= mask;
        } else {
            self.s.last_irr &= !mask;
        }
    }

    /// INTA for `irq`: set ISR (unless AEOI) and drop an edge request.
    fn intack(&mut self, irq: u8) {
        let mask = 1u8 << (irq & 7);
        if self.s.auto_eoi {
            if self.s.rotate_on_auto_eoi {
                self.s.priority_add = irq.wrapping_add(1) & 7;
            }
        } else {
            self.s.isr |= mask;
        }
        if !self.level_triggered(mask) {
            self.s.irr &= !mask;
        }
    }

    /// Initialization-time reset caused by ICW1 (ELCR is kept).
    fn init_reset(&mut self) {
        let elcr = self.s.elcr;
        self.s = PicChipState {
            irr: self.s.irr & elcr,
            elcr,
            ..PicChipState::default()
        };
    }

    fn write_cmd(&mut self, val: u8) {
        if val & ICW1_INIT != 0 {
            self.init_reset();
            self.s.init_state = INIT_ICW2;
            self.s.init4 = val & ICW1_IC4 != 0;
            self.s.single_mode = val & ICW1_SNGL != 0;
            self.s.ltim = val & ICW1_LTIM != 0;
        } else if val & OCW3_SELECT != 0 {
            if val & OCW3_POLL != 0 {
                self.s.poll = true;
            }
            if val & OCW3_READ_REG != 0 {
                self.s.read_isr = val & 1 != 0;
            }
            if val & OCW3_SPECIAL_MASK != 0 {
                self.s.special_mask = val & 0x20 != 0;
            }
        } else {
            // OCW2: bits 7:5 are R, SL, EOI; bits 2:0 the level.
            match val >> 5 {
                // Clear / set rotate in automatic EOI mode.
                0 => self.s.rotate_on_auto_eoi = false,
                4 => self.s.rotate_on_auto_eoi = true,
                // Non-specific EOI (1), rotate on non-specific EOI (5).
                cmd @ (1 | 5) => {
                    let p = self.priority(self.s.isr);
                    if p != 8 {
                        let irq = p.wrapping_add(self.s.priority_add) & 7;
                        self.s.isr &= !(1 << irq);
                        if cmd == 5 {
                            self.s.priority_add = irq.wrapping_add(1) & 7;
                        }
                    }
                }
                // Specific EOI.
                3 => self.s.isr &= !(1 << (val & 7)),
                // Set priority: the given level becomes the lowest.
                6 => self.s.priority_add = val.wrapping_add(1) & 7,
                // Rotate on specific EOI.
                7 => {
                    let irq = val & 7;
                    self.s.isr &= !(1 << irq);
                    self.s.priority_add = irq.wrapping_add(1) & 7;
                }
                // 2: no operation.
                _ => {}
            }
        }
    }

    fn write_data(&mut self, val: u8) {
        match self.s.init_state {
            INIT_ICW2 => {
                self.s.irq_base = val & 0xF8;
                self.s.init_state = if !self.s.single_mode {
                    INIT_ICW3
                } else if self.s.init4 {
                    INIT_ICW4
                } else {
                    INIT_READY
                };
            }
            INIT_ICW3 => {
                // Cascade wiring is fixed on a PC; the value is not kept.
                self.s.init_state = if self.s.init4 { INIT_ICW4 } else { INIT_READY };
            }
            INIT_ICW4 => {
                self.s.special_fully_nested = val & ICW4_SFNM != 0;
                self.s.auto_eoi = val & ICW4_AEOI != 0;
                self.s.init_state = INIT_READY;
            }
            // Ready (or an out-of-range value from a snapshot): OCW1.
            _ => {
                self.s.init_state = INIT_READY;
                self.s.imr = val;
            }
        }
    }

    fn read_reg(&self, data_port: bool) -> u8 {
        if data_port {
            self.s.imr
        } else if self.s.read_isr {
            self.s.isr
        } else {
            self.s.irr
        }
    }
}

/// The master/slave i8259A pair of a PC, with its ELCR.
#[derive(Clone, Debug)]
pub struct DualPic {
    master: Chip,
    slave: Chip,
}

impl Default for DualPic {
    fn default() -> Self {
        Self::new()
    }
}

impl DualPic {
    /// A PIC pair in its power-on state.
    pub fn new() -> Self {
        Self::from_state(&DualPicState::default())
    }

    /// Rebuilds the pair from saved state.
    pub fn from_state(state: &DualPicState) -> Self {
        let mut pic = DualPic {
            master: Chip {
                s: state.master.clone(),
                elcr_mask: ELCR_MASTER_MASK,
                is_master: true,
            },
            slave: Chip {
                s: state.slave.clone(),
                elcr_mask: ELCR_SLAVE_MASK,
                is_master: false,
            },
        };
        pic.master.s.elcr &= pic.master.elcr_mask;
        pic.slave.s.elcr &= pic.slave.elcr_mask;
        pic.update_cascade();
        pic
    }

    /// The guest-visible state, for a snapshot.
    pub fn state(&self) -> DualPicState {
        DualPicState {
            master: self.master.s.clone(),
            slave: self.slave.s.clone(),
        }
    }

    /// Drives input line `irq` (0..=15) to `level`. IRQ 2 is the internal
    /// cascade input and out-of-range numbers are ignored (on a PC the ISA
    /// IRQ 2 pin is routed to IRQ 9).
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            CASCADE_IRQ => {}
            0..=7 => self.master.set_input(irq, level),
            8..=15 => {
                self.slave.set_input(irq - 8, level);
                self.update_cascade();
            }
            _ => {}
        }
    }

    /// Level of the INTR line to the CPU.
    pub fn has_interrupt(&self) -> bool {
        self.master.pending_irq().is_some()
    }

    /// The INTA cycle: returns the vector to deliver and updates ISR/IRR.
    /// If no request is pending any more this is a spurious interrupt and
    /// the vector is the master's IRQ 7 (or, via the cascade, the slave's).
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.master.pending_irq() {
            Some(CASCADE_IRQ) => {
                let slave_irq = match self.slave.pending_irq() {
                    Some(irq) => {
                        self.slave.intack(irq);
                        irq
                    }
                    // Spurious on the slave: IRQ 2 still goes in service.
                    None => 7,
                };
                self.update_cascade();
                self.master.intack(CASCADE_IRQ);
                self.slave.s.irq_base.wrapping_add(slave_irq)
            }
            Some(irq) => {
                self.master.intack(irq);
                self.master.s.irq_base.wrapping_add(irq)
            }
            None => self.master.s.irq_base.wrapping_add(7),
        };
        self.update_cascade();
        vector
    }

    /// Reads an absolute I/O port (0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1).
    /// Other ports read as a floating bus (0xFF).
    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            PIC_MASTER_CMD | PIC_MASTER_DATA => {
                if self.master.s.poll {
                    self.master.s.poll = false;
                    self.poll_master()
                } else {
                    self.master.read_reg(port == PIC_MASTER_DATA)
                }
            }
            PIC_SLAVE_CMD | PIC_SLAVE_DATA => {
                if self.slave.s.poll {
                    self.slave.s.poll = false;
                    let v = match self.slave.pending_irq() {
                        Some(irq) => {
                            self.slave.intack(irq);
                            0x80 | irq
                        }
                        None => 0,
                    };
                    self.update_cascade();
                    v
                } else {
                    self.slave.read_reg(port == PIC_SLAVE_DATA)
                }
            }
            PIC_ELCR_MASTER => self.master.s.elcr,
            PIC_ELCR_SLAVE => self.slave.s.elcr,
            _ => 0xFF,
        }
    }

    /// Writes an absolute I/O port (0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1).
    /// Other ports are ignored.
    pub fn write(&mut self, port: u16, value: u8) {
        match port {
            PIC_MASTER_CMD => self.master.write_cmd(value),
            PIC_MASTER_DATA => self.master.write_data(value),
            PIC_SLAVE_CMD => self.slave.write_cmd(value),
            PIC_SLAVE_DATA => self.slave.write_data(value),
            PIC_ELCR_MASTER => self.master.s.elcr = value & self.master.elcr_mask,
            PIC_ELCR_SLAVE => self.slave.s.elcr = value & self.slave.elcr_mask,
            _ => {}
        }
        self.update_cascade();
    }

    /// Poll-mode read of the master: an INTA whose result is returned as
    /// `0x80 | level` (or 0 when nothing is pending) instead of a vector.
    fn poll_master(&mut self) -> u8 {
        match self.master.pending_irq() {
            Some(irq) => {
                self.master.intack(irq);
                0x80 | irq
            }
            None => 0,
        }
    }

    /// Propagates the slave's INT output to the master's IRQ 2 input.
    fn update_cascade(&mut self) {
        let level = self.slave.pending_irq().is_some();
        self.master.set_input(CASCADE_IRQ, level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The BIOS/Linux init sequence: master at 0x08 (or `mbase`), slave at
    /// `sbase`, cascade on IRQ 2, 8086 mode, all unmasked.
    fn init(pic: &mut DualPic, mbase: u8, sbase: u8, icw4: u8) {
        pic.write(0x20, 0x11); // ICW1: edge, cascade, ICW4 needed
        pic.write(0x21, mbase); // ICW2
        pic.write(0x21, 0x04); // ICW3: slave on IRQ 2
        pic.write(0x21, icw4); // ICW4
        pic.write(0xA0, 0x11);
        pic.write(0xA1, sbase);
        pic.write(0xA1, 0x02); // ICW3: slave id 2
        pic.write(0xA1, icw4);
        pic.write(0x21, 0x00); // OCW1
        pic.write(0xA1, 0x00);
    }

    fn pulse(pic: &mut DualPic, irq: u8) {
        pic.set_irq(irq, true);
        pic.set_irq(irq, false);
    }

    #[test]
    fn init_sequence_byte_by_byte() {
        let mut pic = DualPic::new();
        pic.write(0x20, 0x11);
        assert_eq!(pic.state().master.init_state, INIT_ICW2);
        pic.write(0x21, 0x20);
        assert_eq!(pic.state().master.irq_base, 0x20);
        assert_eq!(pic.state().master.init_state, INIT_ICW3);
        pic.write(0x21, 0x04);
        assert_eq!(pic.state().master.init_state, INIT_ICW4);
        pic.write(0x21, 0x01);
        assert_eq!(pic.state().master.init_state, INIT_READY);
        assert!(!pic.state().master.auto_eoi);
        pic.write(0x21, 0xFB);
        assert_eq!(pic.read(0x21), 0xFB);
        // Single mode without ICW4: ICW2 ends the sequence.
        pic.write(0xA0, 0x12);
        pic.write(0xA1, 0x77);
        assert_eq!(pic.state().slave.irq_base, 0x70);
        assert_eq!(pic.state().slave.init_state, INIT_READY);
        pic.write(0xA1, 0x5A);
        assert_eq!(pic.read(0xA1), 0x5A);
    }

    #[test]
    fn deliver_and_eoi() {
        let mut pic = DualPic::new();
        init(&mut pic, 0x08, 0x70, 0x01);
        assert!(!pic.has_interrupt());
        pulse(&mut pic, 0);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x08);
        assert!(!pic.has_interrupt());
        pic.write(0x20, 0x0B); // OCW3: read ISR
        assert_eq!(pic.read(0x20), 0x01);
        // A lower-priority request waits for EOI; a higher one does not.
        pulse(&mut pic, 3);
        assert!(!pic.has_interrupt());
        pic.write(0x20, 0x0A); // OCW3: read IRR
        assert_eq!(pic.read(0x20), 0x08);
        pic.write(0x20, 0x20); // non-specific EOI
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x0B);
        pulse(&mut pic, 1);
        assert!(pic.has_interrupt(), "IRQ1 outranks IRQ3 in service");
        assert_eq!(pic.acknowledge(), 0x09);
        pic.write(0x20, 0x63); // specific EOI for IRQ3
        pic.write(0x20, 0x0B);
        assert_eq!(pic.read(0x20), 0x02);
        pic.write(0x20, 0x20);
        assert_eq!(pic.read(0x20), 0x00);
    }

    #[test]
    fn masked_irqs_stay_pending() {
        let mut pic = DualPic::new();
        init(&mut pic, 0x20, 0x28, 0x01);
        pic.write(0x21, 0x01);
        pulse(&mut pic, 0);
        assert!(!pic.has_interrupt());
        pic.write(0x21, 0x00);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x20);
        // Slave masked at the slave.
        pic.write(0xA1, 0x10);
        pulse(&mut pic, 12);
        assert!(!pic.has_interrupt());
        pic.write(0x20, 0x20);
        pic.write(0xA1, 0x00);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x2C);
    }

    #[test]
    fn cascade_through_irq2() {
        let mut pic = DualPic::new();
        init(&mut pic, 0x08, 0x70, 0x01);
        pulse(&mut pic, 8);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x70);
        let st = pic.state();
        assert_eq!(st.master.isr, 0x04);
        assert_eq!(st.slave.isr, 0x01);
        // Another slave IRQ must wait for both EOIs (master has IRQ2 in
        // service and the slave IRQ8).
        pulse(&mut pic, 14);
        assert!(!pic.has_interrupt());
        pic.write(0xA0, 0x20);
        assert!(!pic.has_interrupt(), "master IRQ2 still in service");
        pic.write(0x20, 0x20);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x76);
        // Master IRQ2 masks all slave IRQs.
        pic.write(0xA0, 0x20);
        pic.write(0x20, 0x20);
        pic.write(0x21, 0x04);
        pulse(&mut pic, 9);
        assert!(!pic.has_interrupt());
        pic.write(0x21, 0x00);
        assert_eq!(pic.acknowledge(), 0x71);
        // set_irq(2) is the cascade input and cannot be driven from outside.
        pic.write(0xA0, 0x20);
        pic.write(0x20, 0x20);
        pulse(&mut pic, 2);
        assert!(!pic.has_interrupt());
    }

    #[test]
    fn level_vs_edge_via_elcr() {
        let mut pic = DualPic::new();
        init(&mut pic, 0x08, 0x70, 0x01);
        pic.write(0x4D1, 0xFF);
        assert_eq!(pic.read(0x4D1), ELCR_SLAVE_MASK);
        pic.write(0x4D0, 0xFF);
        assert_eq!(pic.read(0x4D0), ELCR_MASTER_MASK);
        pic.write(0x4D0, 0x00);
        pic.write(0x4D1, 0x0C); // IRQ 10, 11 level
                                // Level: stays requested while asserted, re-fires after EOI.
        pic.set_irq(11, true);
        assert_eq!(pic.acknowledge(), 0x73);
        pic.write(0xA0, 0x20);
        pic.write(0x20, 0x20);
        assert!(pic.has_interrupt(), "level still asserted");
        // Dropping the level withdraws the slave request, but the master
        // already latched the cascade edge: INTA yields spurious IRQ 15.
        pic.set_irq(11, false);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x77);
        pic.write(0x20, 0x20);
        assert!(!pic.has_interrupt());
        // A master level IRQ that drops before INTA takes INTR down with it.
        pic.write(0x4D0, 0x80);
        pic.set_irq(7, true);
        assert!(pic.has_interrupt());
        pic.set_irq(7, false);
        assert!(!pic.has_interrupt());
        // Edge: one interrupt per rising edge, even if held high.
        pic.set_irq(5, true);
        assert_eq!(pic.acknowledge(), 0x0D);
        pic.write(0x20, 0x20);
        assert!(!pic.has_interrupt());
        pic.set_irq(5, true);
        assert!(!pic.has_interrupt(), "no new edge");
        pic.set_irq(5, false);
        pic.set_irq(5, true);
        assert!(pic.has_interrupt());
    }

    #[test]
    fn spurious_irq7_and_irq15() {
        let mut pic = DualPic::new();
        init(&mut pic, 0x08, 0x70, 0x01);
        pic.write(0x4D0, 0x08); // IRQ3 level
        pic.set_irq(3, true);
        assert!(pic.has_interrupt());
        pic.set_irq(3, false); // request vanishes before INTA
        assert_eq!(pic.acknowledge(), 0x0F);
        assert_eq!(pic.state().master.isr, 0, "spurious IRQ7 sets no ISR bit");
        // Slave-side spurious: master's IRQ2 goes in service.
        pic.write(0x4D1, 0x02); // IRQ9 level
        pic.set_irq(9, true);
        assert!(pic.has_interrupt());
        pic.set_irq(9, false);
        // The slave INT dropped, but the master latched the edge on IRQ2.
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x77);
        let st = pic.state();
        assert_eq!(st.master.isr, 0x04);
        assert_eq!(st.slave.isr, 0x00);
    }

    #[test]
    fn auto_eoi_and_poll() {
        let mut pic = DualPic::new();
        init(&mut pic, 0x08, 0x70, 0x03); // AEOI
        pulse(&mut pic, 4);
        assert_eq!(pic.acknowledge(), 0x0C);
        assert_eq!(pic.state().master.isr, 0);
        pulse(&mut pic, 6);
        pic.write(0x20, 0x0C); // OCW3 poll
        assert_eq!(pic.read(0x20), 0x86);
        assert!(!pic.has_interrupt());
        pic.write(0x20, 0x0C);
        assert_eq!(pic.read(0x21), 0x00);
    }

    #[test]
    fn rotation() {
        let mut pic = DualPic::new();
        init(&mut pic, 0x08, 0x70, 0x01);
        pic.write(0x20, 0xC4); // set priority: IRQ4 lowest, IRQ5 highest
        pulse(&mut pic, 0);
        pulse(&mut pic, 6);
        assert_eq!(pic.acknowledge(), 0x0E);
        pic.write(0x20, 0xA0); // rotate on non-specific EOI: IRQ6 lowest
        assert_eq!(pic.state().master.priority_add, 7);
        assert_eq!(pic.acknowledge(), 0x08);
    }

    #[test]
    fn icw1_reset_keeps_elcr_and_level_requests() {
        let mut pic = DualPic::new();
        init(&mut pic, 0x08, 0x70, 0x01);
        pic.write(0x4D1, 0x08);
        pic.set_irq(11, true);
        pic.write(0x21, 0xFF);
        init(&mut pic, 0x20, 0x28, 0x01);
        assert_eq!(pic.read(0x4D1), 0x08);
        assert_eq!(pic.read(0x21), 0x00);
        assert_eq!(pic.acknowledge(), 0x2B);
    }

    #[test]
    fn unknown_ports_and_garbage_never_panic() {
        let mut pic = DualPic::new();
        assert_eq!(pic.read(0x22), 0xFF);
        pic.write(0x22, 0x12);
        for port in [0x20u16, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1] {
            for v in 0..=255u8 {
                pic.write(port, v);
                let _ = pic.read(port);
                pic.set_irq(v & 0x1F, v & 1 != 0);
                if pic.has_interrupt() {
                    let _ = pic.acknowledge();
                }
            }
        }
        let mut st = pic.state();
        st.master.init_state = 200;
        st.master.priority_add = 250;
        st.master.irq_base = 0xFF;
        let mut pic = DualPic::from_state(&st);
        pic.write(0x21, 0);
        pic.set_irq(1, true);
        let _ = pic.acknowledge();
    }

    #[test]
    fn snapshot_roundtrip() {
        let mut pic = DualPic::new();
        init(&mut pic, 0x08, 0x70, 0x01);
        pic.write(0x4D1, 0x0C);
        pulse(&mut pic, 8);
        pulse(&mut pic, 3);
        let saved = pic.state();
        assert!(pic.has_interrupt());

        assert_eq!(pic.acknowledge(), 0x70);
        pic.write(0x20, 0x20);
        pic.write(0x21, 0xFF);
        pic.write(0x20, 0x11);
        assert_ne!(pic.state(), saved);

        let mut r = DualPic::from_state(&saved);
        assert_eq!(r.state(), saved);
        assert!(r.has_interrupt());
        assert_eq!(r.acknowledge(), 0x70);
        assert_eq!(r.acknowledge(), 0x0F, "IRQ3 waits behind IRQ2 in service");
    }
}
