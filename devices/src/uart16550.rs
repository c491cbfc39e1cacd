//! 16550A UART, as found on COM1 (I/O base 0x3F8, IRQ 4).
//!
//! The device sees only the register offset 0..=7. Transmission is
//! instantaneous: a byte written to THR is appended to a host-side output
//! buffer (drained with [`Uart16550::take_output`]) and THR is empty again at
//! once, so LSR.THRE and LSR.TEMT always read as 1.
//!
//! Interrupt identification (IIR), highest priority first:
//!
//! | IIR  | source                    | enabled by | cleared by                    |
//! |------|---------------------------|------------|-------------------------------|
//! | 0x06 | receiver line status (OE) | IER bit 2  | reading LSR                   |
//! | 0x04 | received data available   | IER bit 0  | reading RBR below the trigger |
//! | 0x0C | character timeout (FIFO)  | IER bit 0  | reading RBR until empty       |
//! | 0x02 | THR empty                 | IER bit 1  | reading IIR (when the source) or writing THR |
//! | 0x00 | modem status (MSR deltas) | IER bit 3  | reading MSR                   |
//! | 0x01 | none pending              |            |                               |
//!
//! With the FIFOs enabled IIR bits 7:6 read 0b11. Deviations, all
//! deterministic: the character timeout fires as soon as the FIFO holds
//! data below the trigger level (there is no character time to wait for), and
//! a new THRE interrupt is raised immediately after each THR write (real
//! hardware raises it once the byte moves to the shift register).
//!
//! The interrupt line that reaches the PIC is gated by MCR.OUT2, as on PC
//! boards; in loopback mode the modem outputs (and so OUT2) are forced
//! inactive and the line is not driven.
//!
//! Reset values follow QEMU (divisor 12 = 9600 baud, MCR.OUT2 set, MSR with
//! DCD/DSR/CTS asserted) so guests developed against QEMU see the same UART.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// I/O base of COM1 on a PC.
pub const COM1_BASE: u16 = 0x3F8;
/// ISA IRQ line of COM1 on a PC.
pub const COM1_IRQ: u8 = 4;
/// Depth of the 16550A receive FIFO.
pub const UART_FIFO_SIZE: usize = 16;

// Register offsets from the I/O base.
/// RBR (read) / THR (write); DLL, divisor low byte, when LCR.DLAB is set.
const REG_DATA: u8 = 0;
/// IER; DLM, divisor high byte, when LCR.DLAB is set.
const REG_IER: u8 = 1;
/// IIR (read) / FCR (write).
const REG_IIR_FCR: u8 = 2;
/// Line control: word length, parity, stop bits, DLAB.
const REG_LCR: u8 = 3;
/// Modem control: DTR, RTS, OUT1, OUT2, loopback.
const REG_MCR: u8 = 4;
/// Line status.
const REG_LSR: u8 = 5;
/// Modem status.
const REG_MSR: u8 = 6;
/// Scratch register: plain storage, used by drivers to probe for a UART.
const REG_SCR: u8 = 7;

// IER bits (only the low four exist on a 16550A).
/// Received data available (and character timeout) interrupt enable.
const IER_RDI: u8 = 0x01;
/// THR empty interrupt enable.
const IER_THRI: u8 = 0x02;
/// Receiver line status interrupt enable.
const IER_RLSI: u8 = 0x04;
/// Modem status interrupt enable.
const IER_MSI: u8 = 0x08;
/// Writable IER bits.
const IER_MASK: u8 = 0x0F;

// IIR values.
/// Bit 0 set: no interrupt pending.
const IIR_NONE: u8 = 0x01;
/// Modem status change.
const IIR_MSI: u8 = 0x00;
/// THR empty.
const IIR_THRI: u8 = 0x02;
/// Received data available at or above the trigger level.
const IIR_RDI: u8 = 0x04;
/// Receiver line status (overrun etc.).
const IIR_RLSI: u8 = 0x06;
/// Character timeout: data below the trigger level.
const IIR_CTI: u8 = 0x0C;
/// Bits 7:6 set when the FIFOs are enabled (distinguishes a 16550A).
const IIR_FIFO_ENABLED: u8 = 0xC0;

// FCR bits.
/// Enable both FIFOs; toggling it clears them.
const FCR_ENABLE: u8 = 0x01;
/// Clear the receive FIFO (self-clearing).
const FCR_CLEAR_RX: u8 = 0x02;
/// Bits kept in the state: enable, DMA mode, trigger level (7:6).
const FCR_KEEP: u8 = 0xC9;

// LCR bits.
/// Divisor latch access bit: offsets 0/1 become DLL/DLM.
const LCR_DLAB: u8 = 0x80;

// MCR bits.
/// Data terminal ready.
const MCR_DTR: u8 = 0x01;
/// Request to send.
const MCR_RTS: u8 = 0x02;
/// Auxiliary output 1 (loops back to RI).
const MCR_OUT1: u8 = 0x04;
/// Auxiliary output 2: on a PC it enables the IRQ driver to the PIC.
const MCR_OUT2: u8 = 0x08;
/// Local loopback.
const MCR_LOOP: u8 = 0x10;
/// Writable MCR bits on a 16550A.
const MCR_MASK: u8 = 0x1F;

// LSR bits.
/// Data ready: the receive FIFO/holding register is not empty.
const LSR_DR: u8 = 0x01;
/// Overrun error: a byte arrived with no room for it.
const LSR_OE: u8 = 0x02;
/// THR empty.
const LSR_THRE: u8 = 0x20;
/// Transmitter empty (THR and shift register).
const LSR_TEMT: u8 = 0x40;

// MSR bits.
/// Delta CTS.
const MSR_DCTS: u8 = 0x01;
/// Delta DSR.
const MSR_DDSR: u8 = 0x02;
/// Trailing edge of RI.
const MSR_TERI: u8 = 0x04;
/// Delta DCD.
const MSR_DDCD: u8 = 0x08;
/// All delta bits.
const MSR_DELTAS: u8 = 0x0F;
/// Clear to send.
const MSR_CTS: u8 = 0x10;
/// Data set ready.
const MSR_DSR: u8 = 0x20;
/// Ring indicator.
const MSR_RI: u8 = 0x40;
/// Data carrier detect.
const MSR_DCD: u8 = 0x80;
/// Modem inputs seen when not in loopback: the host side is always "there".
const MSR_EXTERNAL: u8 = MSR_DCD | MSR_DSR | MSR_CTS;

/// Saved state of a [`Uart16550`]: every guest-visible bit. `Default` is the
/// power-on state. The host-side output buffer is deliberately not included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uart16550State {
    /// Baud rate divisor latch (DLM:DLL).
    pub divisor: u16,
    /// Interrupt enable register (low four bits).
    pub ier: u8,
    /// FIFO control bits kept: enable, DMA mode, trigger level.
    pub fcr: u8,
    /// Line control register.
    pub lcr: u8,
    /// Modem control register.
    pub mcr: u8,
    /// Modem status register (status bits and sticky delta bits).
    pub msr: u8,
    /// Scratch register.
    pub scr: u8,
    /// Sticky overrun error, reported in LSR bit 1 until LSR is read.
    pub overrun: bool,
    /// A THR-empty interrupt is pending (cleared by reading IIR when it is
    /// the source, or by writing THR).
    pub thr_interrupt_pending: bool,
    /// Received bytes not yet read, oldest first (at most 16; at most 1 when
    /// the FIFOs are disabled).
    pub rx_fifo: VecDeque<u8>,
}

impl Default for Uart16550State {
    fn default() -> Self {
        Uart16550State {
            divisor: 12,
            ier: 0,
            fcr: 0,
            lcr: 0x03,
            mcr: MCR_OUT2,
            msr: MSR_EXTERNAL,
            scr: 0,
            overrun: false,
            thr_interrupt_pending: false,
            rx_fifo: VecDeque::new(),
        }
    }
}

/// A 16550A UART. See the module documentation for the register map.
#[derive(Clone, Debug)]
pub struct Uart16550 {
    state: Uart16550State,
    /// Transmitted bytes not yet taken by the host (not guest-visible).
    output: Vec<u8>,
}

impl Default for Uart16550 {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart16550 {
    /// A UART in its power-on state.
    pub fn new() -> Self {
        Self::from_state(&Uart16550State::default())
    }

    /// Rebuilds a UART from saved state, with an empty output buffer.
    /// Out-of-range values a hostile snapshot might carry are clamped.
    pub fn from_state(state: &Uart16550State) -> Self {
        let mut state = state.clone();
        state.ier &= IER_MASK;
        state.mcr &= MCR_MASK;
        let cap = if state.fcr & FCR_ENABLE != 0 {
            UART_FIFO_SIZE
        } else {
            1
        };
        state.rx_fifo.truncate(cap);
        Uart16550 {
            state,
            output: Vec::new(),
        }
    }

    /// The guest-visible state, for a snapshot.
    pub fn state(&self) -> Uart16550State {
        self.state.clone()
    }

    /// Reads the register at `offset` (0..=7 from the I/O base). Offsets past
    /// 7 read as a floating bus (0xFF).
    pub fn read(&mut self, offset: u8) -> u8 {
        let dlab = self.state.lcr & LCR_DLAB != 0;
        match offset {
            REG_DATA if dlab => self.state.divisor as u8,
            REG_DATA => self.state.rx_fifo.pop_front().unwrap_or(0),
            REG_IER if dlab => (self.state.divisor >> 8) as u8,
            REG_IER => self.state.ier,
            REG_IIR_FCR => {
                let id = self.interrupt_id();
                if id == IIR_THRI {
                    // Reading IIR acknowledges a THR-empty interrupt.
                    self.state.thr_interrupt_pending = false;
                }
                if self.fifo_enabled() {
                    id | IIR_FIFO_ENABLED
                } else {
                    id
                }
            }
            REG_LCR => self.state.lcr,
            REG_MCR => self.state.mcr,
            REG_LSR => {
                let lsr = self.lsr();
                self.state.overrun = false;
                lsr
            }
            REG_MSR => {
                let msr = self.state.msr;
                self.state.msr &= !MSR_DELTAS;
                msr
            }
            REG_SCR => self.state.scr,
            _ => 0xFF,
        }
    }

    /// Writes `value` to the register at `offset` (0..=7 from the I/O base).
    /// Writes past offset 7 and to read-only registers are ignored.
    pub fn write(&mut self, offset: u8, value: u8) {
        let dlab = self.state.lcr & LCR_DLAB != 0;
        match offset {
            REG_DATA if dlab => {
                self.state.divisor = (self.state.divisor & 0xFF00) | u16::from(value);
            }
            REG_DATA => self.transmit(value),
            REG_IER if dlab => {
                self.state.divisor = (self.state.divisor & 0x00FF) | (u16::from(value) << 8);
            }
            REG_IER => {
                let new = value & IER_MASK;
                let changed = self.state.ier ^ new;
                self.state.ier = new;
                // Enabling THRI while THR is empty raises the interrupt at once
                // (Windows relies on it; QEMU and Bochs do the same on the
                // rising edge of IER.THRI). THR is always empty here.
                if changed & IER_THRI != 0 {
                    self.state.thr_interrupt_pending = new & IER_THRI != 0;
                }
            }
            REG_IIR_FCR => self.write_fcr(value),
            REG_LCR => self.state.lcr = value,
            REG_MCR => {
                self.state.mcr = value & MCR_MASK;
                self.update_msr();
            }
            REG_SCR => self.state.scr = value,
            // LSR and MSR are read-only (factory test writes are ignored).
            _ => {}
        }
    }

    /// Level of the interrupt line as seen by the PIC: an interrupt is
    /// pending and MCR.OUT2 drives it (never in loopback mode).
    pub fn irq_level(&self) -> bool {
        let mcr = self.state.mcr;
        mcr & MCR_OUT2 != 0 && mcr & MCR_LOOP == 0 && self.interrupt_id() != IIR_NONE
    }

    /// Delivers one byte of external input to the receiver. With no room
    /// (see [`Uart16550::rx_room`]) the overrun flag is set and the byte is
    /// lost (FIFO mode) or replaces the unread one (non-FIFO mode), as on
    /// hardware. In loopback mode the serial input is disconnected and the
    /// byte is dropped. The machine should record every byte it pushes.
    pub fn push_input(&mut self, byte: u8) {
        if self.state.mcr & MCR_LOOP != 0 {
            return;
        }
        self.receive(byte);
    }

    /// How many bytes [`Uart16550::push_input`] can take without an overrun:
    /// free FIFO slots (one holding register when the FIFOs are disabled),
    /// and 0 in loopback mode, where external input is disconnected.
    pub fn rx_room(&self) -> usize {
        if self.state.mcr & MCR_LOOP != 0 {
            return 0;
        }
        self.rx_capacity().saturating_sub(self.state.rx_fifo.len())
    }

    /// Whether the guest drives the receiver by interrupt: IER's
    /// received-data interrupt and MCR.OUT2 are both on, as an OS driver
    /// sets them when a program opens the port.
    pub fn receive_interrupts_enabled(&self) -> bool {
        self.state.ier & IER_RDI != 0 && self.state.mcr & MCR_OUT2 != 0
    }

    /// Takes the bytes transmitted since the last call (host-side buffer).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    fn fifo_enabled(&self) -> bool {
        self.state.fcr & FCR_ENABLE != 0
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled() {
            UART_FIFO_SIZE
        } else {
            1
        }
    }

    /// Receive FIFO trigger level selected by FCR bits 7:6.
    fn rx_trigger(&self) -> usize {
        if !self.fifo_enabled() {
            return 1;
        }
        match self.state.fcr >> 6 {
            0 => 1,
            1 => 4,
            2 => 8,
            _ => 14,
        }
    }

    fn lsr(&self) -> u8 {
        let mut lsr = LSR_THRE | LSR_TEMT;
        if !self.state.rx_fifo.is_empty() {
            lsr |= LSR_DR;
        }
        if self.state.overrun {
            lsr |= LSR_OE;
        }
        lsr
    }

    /// The highest-priority pending interrupt, as IIR bits 3:0.
    fn interrupt_id(&self) -> u8 {
        let s = &self.state;
        if s.ier & IER_RLSI != 0 && s.overrun {
            IIR_RLSI
        } else if s.ier & IER_RDI != 0 && !s.rx_fifo.is_empty() {
            if s.rx_fifo.len() >= self.rx_trigger() {
                IIR_RDI
            } else {
                IIR_CTI
            }
        } else if s.ier & IER_THRI != 0 && s.thr_interrupt_pending {
            IIR_THRI
        } else if s.ier & IER_MSI != 0 && s.msr & MSR_DELTAS != 0 {
            IIR_MSI
        } else {
            IIR_NONE
        }
    }

    fn transmit(&mut self, value: u8) {
        if self.state.mcr & MCR_LOOP != 0 {
            self.receive(value);
        } else {
            self.output.push(value);
        }
        // Writing THR clears the THRE interrupt; the byte leaves at once,
        // so THR is empty again and the interrupt is re-raised.
        self.state.thr_interrupt_pending = self.state.ier & IER_THRI != 0;
    }

    fn receive(&mut self, byte: u8) {
        if self.state.rx_fifo.len() < self.rx_capacity() {
            self.state.rx_fifo.push_back(byte);
        } else {
            self.state.overrun = true;
            if !self.fifo_enabled() {
                // The holding register is overwritten by the new character.
                self.state.rx_fifo.clear();
                self.state.rx_fifo.push_back(byte);
            }
        }
    }

    fn write_fcr(&mut self, value: u8) {
        let was_enabled = self.fifo_enabled();
        let enable = value & FCR_ENABLE != 0;
        if enable != was_enabled {
            // Switching FIFO mode on or off clears both FIFOs.
            self.state.rx_fifo.clear();
        }
        if !enable {
            // The other FCR bits only take when FCR bit 0 is written as 1.
            self.state.fcr = 0;
            return;
        }
        self.state.fcr = value & FCR_KEEP;
        if value & FCR_CLEAR_RX != 0 {
            self.state.rx_fifo.clear();
        }
        // Clearing the transmit FIFO (bit 2) is a no-op: it is always empty.
    }

    /// Recomputes the MSR status bits after an MCR change and latches deltas.
    fn update_msr(&mut self) {
        let mcr = self.state.mcr;
        let status = if mcr & MCR_LOOP != 0 {
            // Loopback wires RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD.
            let mut st = 0;
            if mcr & MCR_RTS != 0 {
                st |= MSR_CTS;
            }
            if mcr & MCR_DTR != 0 {
                st |= MSR_DSR;
            }
            if mcr & MCR_OUT1 != 0 {
                st |= MSR_RI;
            }
            if mcr & MCR_OUT2 != 0 {
                st |= MSR_DCD;
            }
            st
        } else {
            MSR_EXTERNAL
        };
        let old = self.state.msr;
        let changed = old ^ status;
        let mut deltas = old & MSR_DELTAS;
        if changed & MSR_CTS != 0 {
            deltas |= MSR_DCTS;
        }
        if changed & MSR_DSR != 0 {
            deltas |= MSR_DDSR;
        }
        if old & MSR_RI != 0 && status & MSR_RI == 0 {
            deltas |= MSR_TERI;
        }
        if changed & MSR_DCD != 0 {
            deltas |= MSR_DDCD;
        }
        self.state.msr = (status & !MSR_DELTAS) | deltas;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts rising edges of the IRQ line, as an edge-triggered PIC would.
    struct EdgeCounter {
        last: bool,
        edges: u32,
    }

    impl EdgeCounter {
        fn new() -> Self {
            EdgeCounter {
                last: false,
                edges: 0,
            }
        }
        fn sample(&mut self, uart: &Uart16550) {
            let level = uart.irq_level();
            if level && !self.last {
                self.edges += 1;
            }
            self.last = level;
        }
    }

    #[test]
    fn power_on_registers() {
        let mut u = Uart16550::new();
        assert_eq!(u.read(REG_IER), 0);
        assert_eq!(u.read(REG_IIR_FCR), IIR_NONE);
        assert_eq!(u.read(REG_LCR), 0x03);
        assert_eq!(u.read(REG_MCR), MCR_OUT2);
        assert_eq!(u.read(REG_LSR), LSR_THRE | LSR_TEMT);
        assert_eq!(u.read(REG_MSR), MSR_EXTERNAL);
        assert!(!u.irq_level());
        assert_eq!(u.rx_room(), 1);
        assert_eq!(u.read(8), 0xFF);
        assert_eq!(u.read(0xFF), 0xFF);
    }

    #[test]
    fn transmit_goes_to_output() {
        let mut u = Uart16550::new();
        for &b in b"hello" {
            u.write(REG_DATA, b);
        }
        assert_eq!(u.take_output(), b"hello");
        assert!(u.take_output().is_empty());
        assert_eq!(u.read(REG_LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
    }

    #[test]
    fn dlab_selects_divisor_latch() {
        let mut u = Uart16550::new();
        u.write(REG_LCR, LCR_DLAB | 0x03);
        u.write(REG_DATA, 0x01);
        u.write(REG_IER, 0x00);
        assert_eq!(u.read(REG_DATA), 0x01);
        assert_eq!(u.read(REG_IER), 0x00);
        assert_eq!(u.state().divisor, 1);
        // No byte was transmitted and IER untouched.
        assert!(u.take_output().is_empty());
        u.write(REG_LCR, 0x03);
        assert_eq!(u.read(REG_IER), 0);
        u.write(REG_IER, 0xFF);
        assert_eq!(u.read(REG_IER), IER_MASK);
        u.write(REG_LCR, LCR_DLAB);
        u.write(REG_IER, 0x12);
        assert_eq!(u.state().divisor, 0x1201);
    }

    #[test]
    fn thre_interrupt_semantics() {
        let mut u = Uart16550::new();
        let mut irq = EdgeCounter::new();
        u.write(REG_MCR, MCR_OUT2 | MCR_DTR | MCR_RTS);
        u.write(REG_IER, IER_THRI);
        irq.sample(&u);
        assert_eq!(irq.edges, 1, "enabling THRI with THR empty interrupts");
        assert_eq!(u.read(REG_IIR_FCR), IIR_THRI);
        irq.sample(&u);
        assert!(!u.irq_level(), "reading IIR cleared the THRE source");
        assert_eq!(u.read(REG_IIR_FCR), IIR_NONE);
        u.write(REG_DATA, b'a');
        irq.sample(&u);
        assert_eq!(irq.edges, 2, "THR empties again after the write");
        // Re-writing IER with THRI still set does not re-arm it...
        u.read(REG_IIR_FCR);
        u.write(REG_IER, IER_THRI);
        irq.sample(&u);
        assert_eq!(irq.edges, 2);
        // ...but toggling it off and on does.
        u.write(REG_IER, 0);
        u.write(REG_IER, IER_THRI);
        irq.sample(&u);
        assert_eq!(irq.edges, 3);
        u.write(REG_IER, 0);
        irq.sample(&u);
        assert!(!u.irq_level());
    }

    #[test]
    fn out2_gates_the_line() {
        let mut u = Uart16550::new();
        u.write(REG_MCR, 0);
        u.write(REG_IER, IER_THRI);
        assert!(!u.irq_level(), "OUT2 clear: line not driven");
        assert_eq!(u.read(REG_IIR_FCR) & 0x0F, IIR_THRI, "still pending inside");
        u.write(REG_IER, 0);
        u.write(REG_IER, IER_THRI);
        u.write(REG_MCR, MCR_OUT2);
        assert!(u.irq_level());
    }

    #[test]
    fn rx_interrupt_and_line_status() {
        let mut u = Uart16550::new();
        let mut irq = EdgeCounter::new();
        u.write(REG_IER, IER_RDI | IER_RLSI);
        assert_eq!(u.rx_room(), 1);
        u.push_input(b'x');
        irq.sample(&u);
        assert_eq!(irq.edges, 1);
        assert_eq!(u.read(REG_IIR_FCR), IIR_RDI);
        assert_eq!(u.read(REG_LSR) & LSR_DR, LSR_DR);
        assert_eq!(u.rx_room(), 0);
        // Overrun without a FIFO: the new byte replaces the old one.
        u.push_input(b'y');
        assert_eq!(u.read(REG_IIR_FCR), IIR_RLSI, "line status outranks data");
        let lsr = u.read(REG_LSR);
        assert_eq!(lsr & (LSR_OE | LSR_DR), LSR_OE | LSR_DR);
        assert_eq!(u.read(REG_IIR_FCR), IIR_RDI, "OE cleared by reading LSR");
        assert_eq!(u.read(REG_DATA), b'y');
        irq.sample(&u);
        assert!(!u.irq_level());
        assert_eq!(u.read(REG_LSR) & LSR_DR, 0);
        assert_eq!(u.read(REG_IIR_FCR), IIR_NONE);
    }

    #[test]
    fn iir_priority_order() {
        let mut u = Uart16550::new();
        u.write(REG_MCR, MCR_OUT2 | MCR_LOOP);
        // Loopback: raising RTS changes CTS => modem status delta.
        u.write(REG_MCR, MCR_OUT2 | MCR_LOOP | MCR_RTS);
        u.write(REG_IER, IER_MASK);
        u.write(REG_DATA, b'q'); // loops back into RX
        assert_eq!(u.read(REG_IIR_FCR), IIR_RDI);
        assert_eq!(u.read(REG_DATA), b'q');
        assert_eq!(u.read(REG_IIR_FCR), IIR_THRI);
        // THRI acknowledged by that read; modem status is next.
        assert_eq!(u.read(REG_IIR_FCR), IIR_MSI);
        let msr = u.read(REG_MSR);
        assert_eq!(msr & (MSR_CTS | MSR_DCTS), MSR_CTS | MSR_DCTS);
        assert_eq!(u.read(REG_IIR_FCR), IIR_NONE);
    }

    #[test]
    fn loopback_mirrors_modem_lines() {
        let mut u = Uart16550::new();
        // The classic probe: MCR=0x1A (loop, OUT2, RTS) => MSR high nibble 0x90.
        u.write(REG_MCR, 0x1A);
        assert_eq!(u.read(REG_MSR) & 0xF0, MSR_DCD | MSR_CTS);
        u.write(REG_MCR, 0x1F);
        assert_eq!(u.read(REG_MSR) & 0xF0, 0xF0);
        // RI trailing edge.
        u.write(REG_MCR, 0x1B);
        assert_eq!(u.read(REG_MSR) & MSR_TERI, MSR_TERI);
        // Loopback disconnects the line and the IRQ output.
        assert_eq!(u.rx_room(), 0);
        u.push_input(b'z');
        assert_eq!(u.read(REG_LSR) & LSR_DR, 0);
        u.write(REG_IER, IER_THRI);
        assert!(!u.irq_level());
        u.write(REG_DATA, 0x55);
        assert!(u.take_output().is_empty());
        assert_eq!(u.read(REG_DATA), 0x55);
        u.write(REG_MCR, 0x0B);
        assert!(u.irq_level());
    }

    #[test]
    fn fifo_mode() {
        let mut u = Uart16550::new();
        u.write(REG_IIR_FCR, 0xC7); // enable, clear both, trigger 14
        assert_eq!(u.read(REG_IIR_FCR) & IIR_FIFO_ENABLED, IIR_FIFO_ENABLED);
        u.write(REG_IER, IER_RDI);
        assert_eq!(u.rx_room(), UART_FIFO_SIZE);
        for i in 0..3u8 {
            u.push_input(i);
        }
        assert_eq!(u.read(REG_IIR_FCR), IIR_FIFO_ENABLED | IIR_CTI);
        for i in 3..14u8 {
            u.push_input(i);
        }
        assert_eq!(u.read(REG_IIR_FCR), IIR_FIFO_ENABLED | IIR_RDI);
        u.push_input(14);
        u.push_input(15);
        assert_eq!(u.rx_room(), 0);
        u.push_input(99); // lost
        assert_eq!(u.read(REG_LSR) & LSR_OE, LSR_OE);
        for i in 0..16u8 {
            assert_eq!(u.read(REG_DATA), i);
        }
        assert_eq!(u.read(REG_LSR) & LSR_DR, 0);
        // Clear RX FIFO via FCR bit 1.
        u.push_input(1);
        u.write(REG_IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX);
        assert_eq!(u.read(REG_LSR) & LSR_DR, 0);
        // Disabling the FIFO clears it and drops bits 7:6 from IIR.
        u.push_input(2);
        u.write(REG_IIR_FCR, 0xC0);
        assert_eq!(u.read(REG_LSR) & LSR_DR, 0);
        assert_eq!(u.read(REG_IIR_FCR), IIR_NONE);
        assert_eq!(u.rx_room(), 1);
    }

    #[test]
    fn never_panics_on_any_access() {
        let mut u = Uart16550::new();
        for off in 0..=255u8 {
            for v in [0u8, 0x55, 0xAA, 0xFF] {
                u.write(off, v);
                let _ = u.read(off);
                u.push_input(v);
            }
        }
    }

    #[test]
    fn snapshot_roundtrip() {
        let mut u = Uart16550::new();
        u.write(REG_IIR_FCR, 0x41);
        u.write(REG_IER, IER_RDI | IER_THRI);
        u.write(REG_SCR, 0x5A);
        u.push_input(b'a');
        u.push_input(b'b');
        let saved = u.state();
        let level = u.irq_level();

        u.read(REG_DATA);
        u.write(REG_SCR, 0);
        u.write(REG_LCR, LCR_DLAB);
        u.write(REG_DATA, 3);
        assert_ne!(u.state(), saved);

        let mut r = Uart16550::from_state(&saved);
        assert_eq!(r.state(), saved);
        assert_eq!(r.irq_level(), level);
        assert_eq!(r.read(REG_SCR), 0x5A);
        assert_eq!(r.read(REG_DATA), b'a');
        assert_eq!(r.read(REG_DATA), b'b');
    }
}
