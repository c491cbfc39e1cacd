//! The local APIC of one vCPU, in xAPIC mode (a 4 KiB MMIO page, by
//! default at 0xFEE00000).
//!
//! Registers are 32 bits wide at 16-byte aligned offsets; accesses at other
//! offsets read 0 and are ignored. The machine maps the page, routes the
//! [`IpiRequest`]s that ICR writes produce, EOIs the IOAPIC for the vectors
//! [`LapicEvent::LevelEoi`] names, and owns the IA32_APIC_BASE MSR (the
//! hardware enable), which this model does not see.
//!
//! # Interrupts
//!
//! [`Lapic::accept_irq`] puts a fixed interrupt in IRR (and records its
//! trigger mode in TMR). [`Lapic::pending_vector`] is the highest IRR
//! vector whose priority class (bits 7:4) is above the processor priority
//! (PPR, derived from TPR and the highest in-service vector);
//! [`Lapic::acknowledge`] moves it from IRR to ISR, as INTA does. A write to
//! EOI clears the highest ISR bit. Vectors 0..=15 are illegal: they are
//! dropped and reported in ESR. While the APIC is software-disabled (SVR
//! bit 8 clear) every LVT entry stays masked and fixed interrupts are not
//! accepted, as in KVM.
//!
//! # Timer
//!
//! The TSC counts virtual nanoseconds (1 GHz). The APIC timer counts the
//! same 1 GHz bus clock divided by the divide configuration (1..=128), so
//! with divide 1 the current count drops by one per instruction. Periodic
//! and one-shot counts and firing times are closed-form functions of virtual
//! time; TSC-deadline mode fires when the TSC (= `now_ns`) reaches the value
//! written to IA32_TSC_DEADLINE through [`Lapic::set_tsc_deadline`], after
//! which the MSR reads 0. Switching the timer into or out of TSC-deadline
//! mode disarms it (clears the initial count and the deadline), as KVM
//! does. Changing the divider or the mode of a running timer keeps the
//! current count and counts on at the new rate.
//!
//! Timer expiries take effect in [`Lapic::advance`] (called by every
//! register access too): the machine runs the vCPU up to
//! [`Lapic::next_deadline`] and calls `advance` there. Several periods
//! elapsed at once set IRR once, as on hardware.

use serde::{Deserialize, Serialize};

/// Default physical base of the local APIC page.
pub const LAPIC_DEFAULT_BASE: u64 = 0xFEE0_0000;
/// Value of the version register: version 0x14 (integrated xAPIC), six LVT
/// entries (max LVT index 5).
pub const LAPIC_VERSION: u32 = 0x0005_0014;

// Register offsets within the page.
/// Local APIC ID (bits 31:24).
const REG_ID: u32 = 0x20;
/// Version (read-only).
const REG_VERSION: u32 = 0x30;
/// Task priority.
const REG_TPR: u32 = 0x80;
/// Arbitration priority (read-only).
const REG_APR: u32 = 0x90;
/// Processor priority (read-only).
const REG_PPR: u32 = 0xA0;
/// End of interrupt (write-only).
const REG_EOI: u32 = 0xB0;
/// Remote read (read-only, unused).
const REG_RRD: u32 = 0xC0;
/// Logical destination (bits 31:24).
const REG_LDR: u32 = 0xD0;
/// Destination format (bits 31:28 model; the rest reads 1).
const REG_DFR: u32 = 0xE0;
/// Spurious interrupt vector and software enable.
const REG_SVR: u32 = 0xF0;
/// In-service register, eight 32-bit words.
const REG_ISR: u32 = 0x100;
/// Trigger mode register, eight words.
const REG_TMR: u32 = 0x180;
/// Interrupt request register, eight words.
const REG_IRR: u32 = 0x200;
/// Error status.
const REG_ESR: u32 = 0x280;
/// Interrupt command, low half (a write sends the IPI).
const REG_ICR_LOW: u32 = 0x300;
/// Interrupt command, high half (destination in bits 31:24).
const REG_ICR_HIGH: u32 = 0x310;
/// First LVT entry (timer); entries follow every 0x10 up to error (0x370).
const REG_LVT_TIMER: u32 = 0x320;
/// LVT error, the last LVT entry.
const REG_LVT_ERROR: u32 = 0x370;
/// Timer initial count.
const REG_TIMER_INITIAL: u32 = 0x380;
/// Timer current count (read-only).
const REG_TIMER_CURRENT: u32 = 0x390;
/// Timer divide configuration.
const REG_TIMER_DIVIDE: u32 = 0x3E0;

// Indices into the LVT array.
/// LVT timer (thermal sensor and performance counter follow at 1 and 2).
const LVT_TIMER: usize = 0;
/// LVT LINT0 (the PIC's INTR in virtual-wire mode).
const LVT_LINT0: usize = 3;
/// LVT LINT1 (NMI on PCs).
const LVT_LINT1: usize = 4;
/// LVT error.
const LVT_ERROR: usize = 5;
/// Writable bits of each LVT entry: timer (vector, mask, mode), thermal and
/// perf (vector, delivery mode, mask), LINT0/1 (also polarity and trigger),
/// error (vector, mask). Delivery status and remote IRR are read-only.
const LVT_WRITABLE: [u32; 6] = [
    0x0007_00FF,
    0x0001_07FF,
    0x0001_07FF,
    0x0001_A7FF,
    0x0001_A7FF,
    0x0001_00FF,
];

/// LVT mask bit.
const LVT_MASKED: u32 = 1 << 16;
/// LVT timer mode field (bits 18:17).
const LVT_TIMER_MODE_SHIFT: u32 = 17;
/// Timer mode: one-shot.
const TIMER_ONESHOT: u32 = 0;
/// Timer mode: periodic.
const TIMER_PERIODIC: u32 = 1;
/// Timer mode: TSC deadline.
const TIMER_TSC_DEADLINE: u32 = 2;

// SVR.
/// APIC software enable.
const SVR_ENABLE: u32 = 1 << 8;
/// Writable bits: vector, enable, focus processor checking.
const SVR_WRITABLE: u32 = 0x3FF;

// ESR bits.
/// Send illegal vector: an ICR write named a vector below 16.
const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// Receive illegal vector: an interrupt with a vector below 16 arrived.
const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;

// ICR low fields.
/// Destination mode: logical.
const ICR_LOGICAL: u32 = 1 << 11;
/// Level: assert (0 = de-assert, used by INIT level de-assert).
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
/// Trigger mode: level.
const ICR_LEVEL_TRIGGER: u32 = 1 << 15;
/// Writable bits of ICR low (delivery status, bit 12, always reads idle).
const ICR_LOW_WRITABLE: u32 = 0x000C_CFFF;

/// Timer divide configuration bits (0, 1 and 3).
const DIVIDE_WRITABLE: u32 = 0xB;
/// Lowest legal vector; 0..=15 are reserved for exceptions.
const FIRST_LEGAL_VECTOR: u8 = 16;

/// Delivery mode of an interrupt message (ICR, LVT or IOAPIC redirection
/// entry bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryMode {
    /// 000: deliver the vector to the destination(s).
    Fixed,
    /// 001: deliver to the lowest-priority processor among the destinations.
    LowestPriority,
    /// 010: system management interrupt.
    Smi,
    /// 100: non-maskable interrupt (vector ignored).
    Nmi,
    /// 101: INIT (reset the destination's APIC and CPU to wait-for-SIPI).
    Init,
    /// 110: start-up IPI; the vector is the start page number.
    StartUp,
    /// 111: external interrupt, the vector comes from the PIC (IOAPIC and
    /// LVT only).
    ExtInt,
    /// 011 (reserved).
    Reserved,
}

impl DeliveryMode {
    /// Decodes the three-bit field (only the low three bits of `bits` are
    /// used).
    pub fn from_bits(bits: u32) -> Self {
        match bits & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            7 => DeliveryMode::ExtInt,
            _ => DeliveryMode::Reserved,
        }
    }
}

/// ICR destination shorthand (bits 19:18).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DestShorthand {
    /// 00: use the destination field.
    None,
    /// 01: the sending APIC only.
    SelfOnly,
    /// 10: every APIC, the sender included.
    AllIncludingSelf,
    /// 11: every APIC but the sender.
    AllExcludingSelf,
}

/// An inter-processor interrupt requested by a write to ICR low, for the
/// machine to route to the destination APICs (see
/// [`Lapic::matches_destination`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpiRequest {
    /// APIC ID of the sender.
    pub source: u8,
    /// Destination field (ICR high bits 31:24), meaningful when `shorthand`
    /// is [`DestShorthand::None`].
    pub destination: u8,
    /// Logical (true) or physical destination mode.
    pub logical: bool,
    /// Delivery mode.
    pub mode: DeliveryMode,
    /// Vector (start page for SIPI; ignored for NMI, INIT, SMI).
    pub vector: u8,
    /// Level assert (false for the INIT level de-assert message, which
    /// modern processors ignore).
    pub assert: bool,
    /// Level-triggered (true) or edge-triggered.
    pub level_triggered: bool,
    /// Destination shorthand.
    pub shorthand: DestShorthand,
}

/// Something a register write asks the machine to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LapicEvent {
    /// Route this IPI.
    Ipi(IpiRequest),
    /// An EOI retired this level-triggered vector: EOI the IOAPIC(s).
    LevelEoi(u8),
}

/// Saved state of a [`Lapic`]. `Default` is the power-on state of the APIC
/// with ID 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LapicState {
    /// Local APIC ID.
    pub id: u8,
    /// Task priority register (bits 7:0).
    pub tpr: u8,
    /// Logical destination register (bits 31:24 significant).
    pub ldr: u32,
    /// Destination format register (bits 31:28 significant).
    pub dfr: u32,
    /// Spurious interrupt vector register.
    pub svr: u32,
    /// In-service register, vector `v` at word `v / 32`, bit `v % 32`.
    pub isr: [u32; 8],
    /// Trigger mode register (1 = level) for the accepted vectors.
    pub tmr: [u32; 8],
    /// Interrupt request register.
    pub irr: [u32; 8],
    /// Error status as last latched by an ESR write (what reads return).
    pub esr: u32,
    /// Errors detected since the last ESR write.
    pub esr_pending: u32,
    /// Interrupt command register, low half.
    pub icr_low: u32,
    /// Interrupt command register, high half.
    pub icr_high: u32,
    /// LVT timer, thermal, perf, LINT0, LINT1, error.
    pub lvt: [u32; 6],
    /// Timer initial count register.
    pub timer_initial: u32,
    /// Timer divide configuration register (bits 0, 1, 3).
    pub timer_divide: u32,
    /// Virtual time at which the current count held `timer_base_count`
    /// (a tick boundary of the divided clock).
    pub timer_base_ns: u64,
    /// Current count at `timer_base_ns` (0: the timer is not counting).
    pub timer_base_count: u32,
    /// Next timer expiry not yet taken by `advance`.
    pub timer_next: Option<u64>,
    /// IA32_TSC_DEADLINE (0 = disarmed).
    pub tsc_deadline: u64,
}

impl Default for LapicState {
    fn default() -> Self {
        LapicState {
            id: 0,
            tpr: 0,
            ldr: 0,
            dfr: 0xFFFF_FFFF,
            svr: 0xFF,
            isr: [0; 8],
            tmr: [0; 8],
            irr: [0; 8],
            esr: 0,
            esr_pending: 0,
            icr_low: 0,
            icr_high: 0,
            lvt: [LVT_MASKED; 6],
            timer_initial: 0,
            timer_divide: 0,
            timer_base_ns: 0,
            timer_base_count: 0,
            timer_next: None,
            tsc_deadline: 0,
        }
    }
}

/// Highest set bit of a 256-bit register, as a vector.
fn highest(reg: &[u32; 8]) -> Option<u8> {
    (0..8).rev().find_map(|w| {
        let bits = reg[w];
        (bits != 0).then(|| (w * 32 + 31 - bits.leading_zeros() as usize) as u8)
    })
}

fn set_bit(reg: &mut [u32; 8], v: u8, on: bool) {
    let (w, b) = (usize::from(v / 32), u32::from(v % 32));
    if on {
        reg[w] |= 1 << b;
    } else {
        reg[w] &= !(1 << b);
    }
}

fn get_bit(reg: &[u32; 8], v: u8) -> bool {
    reg[usize::from(v / 32)] & (1 << (v % 32)) != 0
}

/// A local APIC. See the module documentation.
#[derive(Clone, Debug)]
pub struct Lapic {
    state: LapicState,
}

impl Default for Lapic {
    fn default() -> Self {
        Self::new()
    }
}

impl Lapic {
    /// The APIC with ID 0 in its power-on state.
    pub fn new() -> Self {
        Self::from_state(&LapicState::default())
    }

    /// The APIC with ID `id` in its power-on state.
    pub fn with_id(id: u8) -> Self {
        Self::from_state(&LapicState {
            id,
            ..LapicState::default()
        })
    }

    /// Rebuilds the APIC from saved state.
    pub fn from_state(state: &LapicState) -> Self {
        let mut state = state.clone();
        for (lvt, mask) in state.lvt.iter_mut().zip(LVT_WRITABLE) {
            *lvt &= mask;
        }
        state.svr &= SVR_WRITABLE;
        state.timer_divide &= DIVIDE_WRITABLE;
        let mut lapic = Lapic { state };
        if !lapic.software_enabled() {
            for lvt in lapic.state.lvt.iter_mut() {
                *lvt |= LVT_MASKED;
            }
        }
        lapic
    }

    /// The guest-visible state, for a snapshot.
    pub fn state(&self) -> LapicState {
        self.state.clone()
    }

    /// Resets the APIC on INIT: everything returns to the power-on state
    /// except the APIC ID.
    pub fn init_reset(&mut self) {
        *self = Self::with_id(self.state.id);
    }

    /// Local APIC ID.
    pub fn id(&self) -> u8 {
        self.state.id
    }

    /// SVR bit 8: the APIC is software-enabled.
    pub fn software_enabled(&self) -> bool {
        self.state.svr & SVR_ENABLE != 0
    }

    /// Reads the register at `offset` within the page at virtual time
    /// `now_ns` (timer expiries up to `now_ns` are taken first). Reserved
    /// and write-only registers and unaligned offsets read 0.
    pub fn read(&mut self, now_ns: u64, offset: u32) -> u32 {
        self.advance(now_ns);
        let s = &self.state;
        match offset {
            REG_ID => u32::from(s.id) << 24,
            REG_VERSION => LAPIC_VERSION,
            REG_TPR => u32::from(s.tpr),
            REG_APR => u32::from(self.apr()),
            REG_PPR => u32::from(self.ppr()),
            REG_LDR => s.ldr & 0xFF00_0000,
            REG_DFR => s.dfr | 0x0FFF_FFFF,
            REG_SVR => s.svr,
            o @ REG_ISR..=0x170 if o % 16 == 0 => s.isr[((o - REG_ISR) / 16) as usize],
            o @ REG_TMR..=0x1F0 if o % 16 == 0 => s.tmr[((o - REG_TMR) / 16) as usize],
            o @ REG_IRR..=0x270 if o % 16 == 0 => s.irr[((o - REG_IRR) / 16) as usize],
            REG_ESR => s.esr,
            REG_ICR_LOW => s.icr_low,
            REG_ICR_HIGH => s.icr_high,
            o @ REG_LVT_TIMER..=REG_LVT_ERROR if o % 16 == 0 => {
                s.lvt[((o - REG_LVT_TIMER) / 16) as usize]
            }
            REG_TIMER_INITIAL => s.timer_initial,
            REG_TIMER_CURRENT => self.current_count(now_ns),
            REG_TIMER_DIVIDE => s.timer_divide,
            // EOI is write-only; remote read is not implemented (xAPICs
            // never complete a remote read).
            REG_EOI | REG_RRD => 0,
            _ => 0,
        }
    }

    /// Writes the register at `offset` within the page at virtual time
    /// `now_ns`. Returns what the machine must do about it: an IPI to route
    /// (ICR low) or a level-triggered EOI to forward (EOI). Writes to
    /// read-only or reserved registers and unaligned offsets are ignored.
    pub fn write(&mut self, now_ns: u64, offset: u32, value: u32) -> Option<LapicEvent> {
        self.advance(now_ns);
        match offset {
            REG_ID => self.state.id = (value >> 24) as u8,
            REG_TPR => self.state.tpr = value as u8,
            REG_EOI => return self.eoi().map(LapicEvent::LevelEoi),
            REG_LDR => self.state.ldr = value & 0xFF00_0000,
            REG_DFR => self.state.dfr = value | 0x0FFF_FFFF,
            REG_SVR => {
                self.state.svr = value & SVR_WRITABLE;
                if !self.software_enabled() {
                    for lvt in self.state.lvt.iter_mut() {
                        *lvt |= LVT_MASKED;
                    }
                }
            }
            REG_ESR => {
                // Write-then-read: a write latches the errors seen so far.
                self.state.esr = self.state.esr_pending;
                self.state.esr_pending = 0;
            }
            REG_ICR_LOW => {
                self.state.icr_low = value & ICR_LOW_WRITABLE;
                return self.send_ipi().map(LapicEvent::Ipi);
            }
            REG_ICR_HIGH => self.state.icr_high = value & 0xFF00_0000,
            o @ REG_LVT_TIMER..=REG_LVT_ERROR if o % 16 == 0 => {
                let i = ((o - REG_LVT_TIMER) / 16) as usize;
                self.write_lvt(now_ns, i, value);
            }
            REG_TIMER_INITIAL => self.write_initial_count(now_ns, value),
            REG_TIMER_DIVIDE => {
                let count = self.current_count(now_ns);
                self.state.timer_divide = value & DIVIDE_WRITABLE;
                self.rebase(now_ns, count);
            }
            _ => {}
        }
        None
    }

    /// A fixed interrupt with `vector` arrives from the IOAPIC, an IPI or
    /// an LVT source; `level_triggered` is recorded in TMR so the EOI can
    /// be forwarded. Illegal vectors (below 16) are dropped and reported in
    /// ESR; nothing is accepted while the APIC is software-disabled.
    pub fn accept_irq(&mut self, vector: u8, level_triggered: bool) {
        if !self.software_enabled() {
            return;
        }
        if vector < FIRST_LEGAL_VECTOR {
            self.error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return;
        }
        set_bit(&mut self.state.irr, vector, true);
        set_bit(&mut self.state.tmr, vector, level_triggered);
    }

    /// Processor priority: TPR, or the class of the highest in-service
    /// vector if that is higher.
    pub fn ppr(&self) -> u8 {
        let isrv = highest(&self.state.isr).unwrap_or(0);
        let tpr = self.state.tpr;
        if tpr >> 4 >= isrv >> 4 {
            tpr
        } else {
            isrv & 0xF0
        }
    }

    /// The vector the APIC presents to the CPU: the highest IRR vector
    /// whose priority class is above PPR's, if any. The CPU takes it when
    /// RFLAGS.IF allows, with [`Lapic::acknowledge`].
    pub fn pending_vector(&self) -> Option<u8> {
        let v = highest(&self.state.irr)?;
        (v >> 4 > self.ppr() >> 4).then_some(v)
    }

    /// INTA: moves the pending vector (see [`Lapic::pending_vector`]) from
    /// IRR to ISR and returns it; `None` if nothing is deliverable.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let v = self.pending_vector()?;
        set_bit(&mut self.state.irr, v, false);
        set_bit(&mut self.state.isr, v, true);
        Some(v)
    }

    /// The spurious-interrupt vector (SVR bits 7:0).
    pub fn spurious_vector(&self) -> u8 {
        self.state.svr as u8
    }

    /// LINT0 passes the PIC's INTR through (unmasked, ExtINT delivery):
    /// the BIOS's virtual-wire mode. The machine also lets PIC interrupts
    /// through while the APIC is hardware-disabled in IA32_APIC_BASE.
    pub fn lint0_extint_enabled(&self) -> bool {
        let lvt = self.state.lvt[LVT_LINT0];
        lvt & LVT_MASKED == 0 && DeliveryMode::from_bits(lvt >> 8) == DeliveryMode::ExtInt
    }

    /// LINT1 is unmasked with NMI delivery (where PCs wire the NMI line).
    pub fn lint1_nmi_enabled(&self) -> bool {
        let lvt = self.state.lvt[LVT_LINT1];
        lvt & LVT_MASKED == 0 && DeliveryMode::from_bits(lvt >> 8) == DeliveryMode::Nmi
    }

    /// Whether an interrupt message addressed to `destination` in physical
    /// (`logical == false`) or logical mode targets this APIC: physical
    /// matches the ID or the broadcast 0xFF; logical uses the flat model
    /// (DFR bits 31:28 = 1111, LDR bits AND destination) or the cluster
    /// model (DFR = 0000, same cluster in bits 7:4 and a common bit in 3:0;
    /// 0xFF is broadcast).
    pub fn matches_destination(&self, destination: u8, logical: bool) -> bool {
        if !logical {
            return destination == 0xFF || destination == self.state.id;
        }
        let ldr = (self.state.ldr >> 24) as u8;
        if self.state.dfr >> 28 == 0xF {
            ldr & destination != 0
        } else {
            destination == 0xFF || (ldr >> 4 == destination >> 4 && ldr & destination & 0x0F != 0)
        }
    }

    /// Writes IA32_TSC_DEADLINE at `now_ns` (TSC = virtual ns). Ignored
    /// unless the LVT timer is in TSC-deadline mode; 0 disarms the timer; a
    /// deadline already reached fires at once.
    pub fn set_tsc_deadline(&mut self, now_ns: u64, value: u64) {
        self.advance(now_ns);
        if self.timer_mode() != TIMER_TSC_DEADLINE {
            return;
        }
        self.state.tsc_deadline = value;
        self.state.timer_next = (value != 0).then_some(value.max(now_ns));
        self.advance(now_ns);
    }

    /// IA32_TSC_DEADLINE as the guest reads it (0 once it has fired).
    pub fn tsc_deadline(&self) -> u64 {
        self.state.tsc_deadline
    }

    /// Absolute virtual time of the next timer expiry not yet taken by
    /// [`Lapic::advance`], or `None` if the timer is idle. It is greater
    /// than `now_ns` unless `advance(now_ns)` has not been called yet.
    pub fn next_deadline(&self, _now_ns: u64) -> Option<u64> {
        self.state.timer_next
    }

    /// Takes the timer expiries up to `now_ns`: the LVT timer vector goes
    /// into IRR (unless masked) and the next expiry is scheduled.
    pub fn advance(&mut self, now_ns: u64) {
        let Some(t) = self.state.timer_next else {
            return;
        };
        if t > now_ns {
            return;
        }
        self.state.timer_next = match self.timer_mode() {
            TIMER_PERIODIC => {
                // First expiry after now_ns in the periodic sequence.
                let period = self.period_ns();
                let n = (now_ns - t) / period + 1;
                n.checked_mul(period).and_then(|d| t.checked_add(d))
            }
            TIMER_TSC_DEADLINE => {
                self.state.tsc_deadline = 0;
                None
            }
            TIMER_ONESHOT => None,
            // The reserved mode 3 behaves as one-shot.
            _ => None,
        };
        let lvt = self.state.lvt[LVT_TIMER];
        if lvt & LVT_MASKED == 0 {
            self.accept_irq(lvt as u8, false);
        }
    }

    fn timer_mode(&self) -> u32 {
        (self.state.lvt[LVT_TIMER] >> LVT_TIMER_MODE_SHIFT) & 3
    }

    /// Bus clock divisor selected by the divide configuration register.
    fn divisor(&self) -> u64 {
        let d = self.state.timer_divide;
        let code = ((d >> 1) & 4) | (d & 3);
        if code == 7 {
            1
        } else {
            2 << code
        }
    }

    /// Periodic reload period in ns (at least 1).
    fn period_ns(&self) -> u64 {
        (u64::from(self.state.timer_initial) * self.divisor()).max(1)
    }

    /// Current count register at `now_ns`.
    fn current_count(&self, now_ns: u64) -> u32 {
        let s = &self.state;
        if s.timer_base_count == 0 || self.timer_mode() == TIMER_TSC_DEADLINE {
            return 0;
        }
        let k = now_ns.saturating_sub(s.timer_base_ns) / self.divisor();
        let base = u64::from(s.timer_base_count);
        if k < base {
            return (base - k) as u32;
        }
        if self.timer_mode() == TIMER_PERIODIC && s.timer_initial != 0 {
            let init = u64::from(s.timer_initial);
            (init - (k - base) % init) as u32
        } else {
            0
        }
    }

    /// Restarts the count from `count` at `now_ns` with the current divider
    /// and mode (`count` 0 stops the timer).
    fn rebase(&mut self, now_ns: u64, count: u32) {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            return;
        }
        self.state.timer_base_ns = now_ns;
        self.state.timer_base_count = count;
        self.state.timer_next = if count == 0 {
            None
        } else {
            (u64::from(count) * self.divisor()).checked_add(now_ns)
        };
    }

    fn write_initial_count(&mut self, now_ns: u64, value: u32) {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            return;
        }
        self.state.timer_initial = value;
        self.rebase(now_ns, value);
    }

    fn write_lvt(&mut self, now_ns: u64, i: usize, value: u32) {
        let mut value = value & LVT_WRITABLE[i];
        if !self.software_enabled() {
            value |= LVT_MASKED;
        }
        if i != LVT_TIMER {
            self.state.lvt[i] = value;
            return;
        }
        let old_mode = self.timer_mode();
        let count = self.current_count(now_ns);
        self.state.lvt[LVT_TIMER] = value;
        let new_mode = self.timer_mode();
        if (old_mode == TIMER_TSC_DEADLINE) != (new_mode == TIMER_TSC_DEADLINE) {
            // Entering or leaving TSC-deadline mode disarms the timer.
            self.state.timer_initial = 0;
            self.state.timer_base_count = 0;
            self.state.tsc_deadline = 0;
            self.state.timer_next = None;
        } else if old_mode != new_mode {
            self.rebase(now_ns, count);
        }
    }

    fn apr(&self) -> u8 {
        let tpr = self.state.tpr;
        let irrv = highest(&self.state.irr).unwrap_or(0);
        let isrv = highest(&self.state.isr).unwrap_or(0);
        let m = irrv.max(isrv);
        if tpr >> 4 >= m >> 4 {
            tpr
        } else {
            m & 0xF0
        }
    }

    /// Retires the highest in-service vector; returns it if it was
    /// level-triggered.
    fn eoi(&mut self) -> Option<u8> {
        let v = highest(&self.state.isr)?;
        set_bit(&mut self.state.isr, v, false);
        let level = get_bit(&self.state.tmr, v);
        set_bit(&mut self.state.tmr, v, false);
        level.then_some(v)
    }

    /// Records an error and signals it through LVT error if unmasked.
    fn error(&mut self, bits: u32) {
        self.state.esr_pending |= bits;
        let lvt = self.state.lvt[LVT_ERROR];
        let vector = lvt as u8;
        if lvt & LVT_MASKED == 0 && vector >= FIRST_LEGAL_VECTOR && self.software_enabled() {
            set_bit(&mut self.state.irr, vector, true);
            set_bit(&mut self.state.tmr, vector, false);
        }
    }

    fn send_ipi(&mut self) -> Option<IpiRequest> {
        let low = self.state.icr_low;
        let mode = DeliveryMode::from_bits(low >> 8);
        let vector = low as u8;
        if matches!(mode, DeliveryMode::Fixed | DeliveryMode::LowestPriority)
            && vector < FIRST_LEGAL_VECTOR
        {
            self.error(ESR_SEND_ILLEGAL_VECTOR);
            return None;
        }
        let shorthand = match (low >> 18) & 3 {
            0 => DestShorthand::None,
            1 => DestShorthand::SelfOnly,
            2 => DestShorthand::AllIncludingSelf,
            _ => DestShorthand::AllExcludingSelf,
        };
        Some(IpiRequest {
            source: self.state.id,
            destination: (self.state.icr_high >> 24) as u8,
            logical: low & ICR_LOGICAL != 0,
            mode,
            vector,
            assert: low & ICR_LEVEL_ASSERT != 0,
            level_triggered: low & ICR_LEVEL_TRIGGER != 0,
            shorthand,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> Lapic {
        let mut l = Lapic::with_id(3);
        l.write(0, REG_SVR, 0x1FF);
        l
    }

    fn lvt_timer(mode: u32, vector: u8) -> u32 {
        (mode << LVT_TIMER_MODE_SHIFT) | u32::from(vector)
    }

    #[test]
    fn reset_values() {
        let mut l = Lapic::with_id(3);
        assert_eq!(l.read(0, REG_ID), 3 << 24);
        assert_eq!(l.read(0, REG_VERSION), 0x50014);
        assert_eq!(l.read(0, REG_SVR), 0xFF);
        assert_eq!(l.read(0, REG_DFR), 0xFFFF_FFFF);
        for o in (REG_LVT_TIMER..=REG_LVT_ERROR).step_by(16) {
            assert_eq!(l.read(0, o), LVT_MASKED);
        }
        assert_eq!(l.read(0, 0x324), 0, "unaligned");
        assert_eq!(l.read(0, REG_RRD), 0);
        assert!(!l.software_enabled());
        // Disabled: LVT stays masked, interrupts are not accepted.
        l.write(0, REG_LVT_TIMER, 0x30);
        assert_eq!(l.read(0, REG_LVT_TIMER), LVT_MASKED | 0x30);
        l.accept_irq(0x40, false);
        assert_eq!(l.pending_vector(), None);
    }

    #[test]
    fn priority_ack_and_eoi() {
        let mut l = enabled();
        l.accept_irq(0x31, false);
        l.accept_irq(0x52, true);
        l.accept_irq(0x55, false);
        assert_eq!(l.pending_vector(), Some(0x55));
        l.write(0, REG_TPR, 0x50);
        assert_eq!(l.pending_vector(), None, "class 5 not above TPR 5");
        assert_eq!(l.acknowledge(), None);
        l.write(0, REG_TPR, 0x40);
        assert_eq!(l.acknowledge(), Some(0x55));
        assert_eq!(l.read(0, REG_PPR), 0x50);
        assert_eq!(l.read(0, REG_ISR + 0x20), 1 << (0x55 - 0x40));
        assert_eq!(l.pending_vector(), None, "0x52 is in the same class");
        assert_eq!(l.write(0, REG_EOI, 0), None, "edge: nothing to forward");
        assert_eq!(l.acknowledge(), Some(0x52));
        assert_eq!(l.read(0, REG_TMR + 0x20), 1 << (0x52 - 0x40));
        l.accept_irq(0x80, false);
        assert_eq!(l.acknowledge(), Some(0x80), "nesting: higher class");
        assert_eq!(l.write(0, REG_EOI, 0), None);
        assert_eq!(l.write(0, REG_EOI, 0), Some(LapicEvent::LevelEoi(0x52)));
        l.write(0, REG_TPR, 0);
        assert_eq!(l.acknowledge(), Some(0x31));
        assert_eq!(l.read(0, REG_PPR), 0x30);
        assert_eq!(l.read(0, REG_APR), 0x30);
        assert_eq!(l.write(0, REG_EOI, 0), None);
        assert_eq!(l.write(0, REG_EOI, 0), None, "EOI with nothing in service");
    }

    #[test]
    fn illegal_vectors_and_esr() {
        let mut l = enabled();
        l.write(0, REG_LVT_ERROR, 0xFE);
        l.accept_irq(5, false);
        assert_eq!(l.read(0, REG_ESR), 0, "not latched before a write");
        l.write(0, REG_ESR, 0);
        assert_eq!(l.read(0, REG_ESR), ESR_RECEIVE_ILLEGAL_VECTOR);
        assert_eq!(l.pending_vector(), Some(0xFE), "error interrupt");
        l.write(0, REG_ICR_HIGH, 1 << 24);
        assert_eq!(l.write(0, REG_ICR_LOW, 0x0000_0007), None);
        l.write(0, REG_ESR, 0);
        assert_eq!(l.read(0, REG_ESR), ESR_SEND_ILLEGAL_VECTOR);
        l.write(0, REG_ESR, 0);
        assert_eq!(l.read(0, REG_ESR), 0);
    }

    #[test]
    fn icr_produces_ipis() {
        let mut l = enabled();
        l.write(0, REG_ICR_HIGH, 0x0200_0000);
        // INIT, level assert, physical.
        let e = l.write(0, REG_ICR_LOW, 0x0000_C500);
        assert_eq!(
            e,
            Some(LapicEvent::Ipi(IpiRequest {
                source: 3,
                destination: 2,
                logical: false,
                mode: DeliveryMode::Init,
                vector: 0,
                assert: true,
                level_triggered: true,
                shorthand: DestShorthand::None,
            }))
        );
        // SIPI with vector 0x9A, then a fixed IPI to all but self, logical.
        let Some(LapicEvent::Ipi(sipi)) = l.write(0, REG_ICR_LOW, 0x0000_069A) else {
            panic!("no SIPI");
        };
        assert_eq!((sipi.mode, sipi.vector), (DeliveryMode::StartUp, 0x9A));
        let Some(LapicEvent::Ipi(all)) = l.write(0, REG_ICR_LOW, 0x000C_0840) else {
            panic!("no IPI");
        };
        assert_eq!(all.shorthand, DestShorthand::AllExcludingSelf);
        assert!(all.logical);
        assert_eq!(l.read(0, REG_ICR_LOW) & (1 << 12), 0, "always idle");
        let Some(LapicEvent::Ipi(nmi)) = l.write(0, REG_ICR_LOW, 0x0004_0400) else {
            panic!("no NMI");
        };
        assert_eq!(
            (nmi.mode, nmi.shorthand),
            (DeliveryMode::Nmi, DestShorthand::SelfOnly)
        );
    }

    #[test]
    fn destination_matching() {
        let mut l = enabled();
        assert!(l.matches_destination(3, false));
        assert!(l.matches_destination(0xFF, false));
        assert!(!l.matches_destination(2, false));
        l.write(0, REG_LDR, 0x0400_0000);
        assert!(l.matches_destination(0x0C, true));
        assert!(!l.matches_destination(0x03, true));
        l.write(0, REG_DFR, 0x0FFF_FFFF); // cluster model
        l.write(0, REG_LDR, 0x2100_0000);
        assert!(l.matches_destination(0x23, true));
        assert!(!l.matches_destination(0x13, true));
        assert!(l.matches_destination(0xFF, true));
    }

    #[test]
    fn oneshot_timer() {
        let mut l = enabled();
        l.write(100, REG_TIMER_DIVIDE, 0x3); // divide by 16
        l.write(100, REG_LVT_TIMER, lvt_timer(TIMER_ONESHOT, 0xEC));
        l.write(100, REG_TIMER_INITIAL, 1000);
        assert_eq!(l.next_deadline(100), Some(100 + 16_000));
        assert_eq!(l.read(100, REG_TIMER_CURRENT), 1000);
        assert_eq!(l.read(100 + 15, REG_TIMER_CURRENT), 1000);
        assert_eq!(l.read(100 + 16, REG_TIMER_CURRENT), 999);
        assert_eq!(l.read(100 + 15_999, REG_TIMER_CURRENT), 1);
        l.advance(100 + 15_999);
        assert_eq!(l.pending_vector(), None);
        l.advance(100 + 16_000);
        assert_eq!(l.pending_vector(), Some(0xEC));
        assert_eq!(l.read(100 + 16_000, REG_TIMER_CURRENT), 0);
        assert_eq!(l.next_deadline(100 + 16_000), None);
        // Divide by 1 (code 0b1011): one tick per ns.
        l.write(50_000, REG_TIMER_DIVIDE, 0xB);
        l.write(50_000, REG_TIMER_INITIAL, 10);
        assert_eq!(l.next_deadline(50_000), Some(50_010));
        // Initial count 0 stops the timer.
        l.write(50_001, REG_TIMER_INITIAL, 0);
        assert_eq!(l.next_deadline(50_001), None);
    }

    #[test]
    fn periodic_timer_and_divider_change() {
        let mut l = enabled();
        l.write(0, REG_TIMER_DIVIDE, 0x0); // divide by 2
        l.write(0, REG_LVT_TIMER, lvt_timer(TIMER_PERIODIC, 0x40));
        l.write(0, REG_TIMER_INITIAL, 500);
        let mut now = 0;
        for k in 1..=4 {
            let d = l.next_deadline(now).unwrap();
            assert_eq!(d, k * 1000);
            l.advance(d);
            assert_eq!(l.acknowledge(), Some(0x40));
            l.write(d, REG_EOI, 0);
            now = d;
        }
        assert_eq!(l.read(4000, REG_TIMER_CURRENT), 500);
        assert_eq!(l.read(4500, REG_TIMER_CURRENT), 250);
        // Skipping several periods sets IRR once and keeps the phase.
        l.advance(9_999);
        assert_eq!(l.acknowledge(), Some(0x40));
        assert_eq!(l.acknowledge(), None);
        assert_eq!(l.next_deadline(9_999), Some(10_000));
        // Divide by 8 from count 250 at 10_500: next expiry 2000 ns later.
        l.write(10_500, REG_TIMER_DIVIDE, 0x2);
        assert_eq!(l.read(10_500, REG_TIMER_CURRENT), 250);
        assert_eq!(l.next_deadline(10_500), Some(12_500));
        l.advance(12_500);
        assert_eq!(l.next_deadline(12_500), Some(16_500));
        // Masked: counts on, no interrupt.
        l.write(12_500, REG_EOI, 0);
        l.acknowledge();
        l.write(
            13_000,
            REG_LVT_TIMER,
            LVT_MASKED | lvt_timer(TIMER_PERIODIC, 0x40),
        );
        l.advance(16_500);
        assert_eq!(l.pending_vector(), None);
        assert_eq!(l.next_deadline(16_500), Some(20_500));
    }

    #[test]
    fn tsc_deadline_timer() {
        let mut l = enabled();
        l.set_tsc_deadline(0, 5000);
        assert_eq!(l.tsc_deadline(), 0, "ignored outside TSC-deadline mode");
        l.write(0, REG_TIMER_INITIAL, 100);
        l.write(10, REG_LVT_TIMER, lvt_timer(TIMER_TSC_DEADLINE, 0xEF));
        assert_eq!(l.read(10, REG_TIMER_INITIAL), 0, "mode switch disarms");
        assert_eq!(l.next_deadline(10), None);
        l.write(10, REG_TIMER_INITIAL, 100);
        assert_eq!(l.read(10, REG_TIMER_INITIAL), 0, "ignored in TSC mode");
        l.set_tsc_deadline(20, 5000);
        assert_eq!(l.tsc_deadline(), 5000);
        assert_eq!(l.next_deadline(20), Some(5000));
        l.advance(4999);
        assert_eq!(l.pending_vector(), None);
        l.advance(5000);
        assert_eq!(l.pending_vector(), Some(0xEF));
        assert_eq!(l.tsc_deadline(), 0);
        assert_eq!(l.next_deadline(5000), None);
        // A deadline in the past fires at once.
        l.acknowledge();
        l.write(6000, REG_EOI, 0);
        l.set_tsc_deadline(6000, 1);
        assert_eq!(l.pending_vector(), Some(0xEF));
        // Disarm with 0.
        l.set_tsc_deadline(7000, 9000);
        l.set_tsc_deadline(7000, 0);
        assert_eq!(l.next_deadline(7000), None);
    }

    #[test]
    fn svr_disable_masks_lvts_and_lint_helpers() {
        let mut l = enabled();
        l.write(0, 0x350, 0x700); // LINT0 ExtINT
        l.write(0, 0x360, 0x400); // LINT1 NMI
        assert!(l.lint0_extint_enabled());
        assert!(l.lint1_nmi_enabled());
        l.write(0, REG_SVR, 0xFF);
        assert!(!l.lint0_extint_enabled());
        assert_eq!(l.read(0, 0x350), 0x10700);
        assert_eq!(l.spurious_vector(), 0xFF);
        l.init_reset();
        assert_eq!(l.id(), 3);
        assert_eq!(l.state(), Lapic::with_id(3).state());
    }

    #[test]
    fn garbage_never_panics() {
        let mut l = Lapic::new();
        let mut x = 0x2545_F491u32;
        let mut now = 0u64;
        for _ in 0..30_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            now += u64::from(x % 97);
            let off = (x >> 8) & 0x3FF;
            match x % 5 {
                0 => {
                    let _ = l.read(now, off);
                }
                1 | 2 => {
                    let _ = l.write(now, off & !0xF, x.rotate_left(7));
                }
                3 => l.set_tsc_deadline(now, u64::from(x) * 3),
                _ => {
                    l.accept_irq(x as u8, x & 1 != 0);
                    let _ = l.acknowledge();
                }
            }
            l.advance(now);
            if let Some(d) = l.next_deadline(now) {
                assert!(d > now);
            }
        }
        let mut st = l.state();
        st.timer_base_ns = u64::MAX;
        st.timer_next = Some(0);
        st.timer_initial = u32::MAX;
        st.timer_divide = 0xFF;
        st.lvt = [u32::MAX; 6];
        let mut l = Lapic::from_state(&st);
        l.advance(u64::MAX);
        let _ = l.read(u64::MAX, REG_TIMER_CURRENT);
        l.write(u64::MAX, REG_TIMER_INITIAL, u32::MAX);
        l.write(u64::MAX, REG_TIMER_DIVIDE, 0);
    }

    #[test]
    fn snapshot_roundtrip() {
        let mut l = enabled();
        l.write(0, REG_LVT_TIMER, lvt_timer(TIMER_PERIODIC, 0x41));
        l.write(0, REG_TIMER_INITIAL, 300);
        l.accept_irq(0x60, true);
        l.acknowledge();
        l.accept_irq(0x70, false);
        l.write(0, REG_TPR, 0x20);
        let saved = l.state();
        let deadline = l.next_deadline(10);

        l.write(50, REG_EOI, 0);
        l.write(50, REG_TIMER_INITIAL, 7);
        l.write(50, REG_SVR, 0);
        assert_ne!(l.state(), saved);

        let mut r = Lapic::from_state(&saved);
        assert_eq!(r.state(), saved);
        assert_eq!(r.next_deadline(10), deadline);
        assert_eq!(r.read(150, REG_TIMER_CURRENT), 225);
        assert_eq!(r.pending_vector(), Some(0x70));
        r.acknowledge();
        r.write(200, REG_EOI, 0);
        assert_eq!(r.write(200, REG_EOI, 0), Some(LapicEvent::LevelEoi(0x60)));
    }
}
