//! Interrupt and exception delivery (real-mode IVT; protected- and long-mode
//! IDT are to be completed), plus INT n / INT3 / INTO / IRET.

use iced_x86::Instruction;

use crate::block::Handler;
use crate::fault::{vector, StopKind};
use crate::flags;
use crate::interp::Ctx;
use crate::state::{attr, SegReg, Segment};

/// Something to deliver through the IVT/IDT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A fault or abort raised by an instruction (RIP points at it).
    Exception { vector: u8, error_code: Option<u32> },
    /// INT n, INT3, INTO or INT1 (RIP points after it). `soft` is false for
    /// INT1/ICEBP, which skips the gate DPL check.
    Software { vector: u8, soft: bool },
    /// A maskable interrupt from the interrupt controller.
    External { vector: u8 },
}

impl Event {
    /// The vector number.
    pub fn vector(&self) -> u8 {
        match *self {
            Event::Exception { vector, .. }
            | Event::Software { vector, .. }
            | Event::External { vector } => vector,
        }
    }
}

/// The handler for `insn` if this group implements it.
pub(super) fn handler(_insn: &Instruction) -> Option<Handler> {
    None
}

impl Ctx<'_> {
    /// Delivers an event, escalating nested faults to #DF and triple fault.
    pub(crate) fn deliver(&mut self, ev: Event) -> std::result::Result<(), StopKind> {
        let first = self.cpu.delivering;
        let v = ev.vector();
        if let Event::Exception { vector: ve, error_code } = ev {
            if first == Some(vector::DF) {
                return Err(StopKind::TripleFault {
                    vector: ve,
                    error_code,
                });
            }
            if let Some(prev) = first {
                if is_contributory_pair(prev, ve) {
                    self.cpu.delivering = None;
                    return self.deliver(Event::Exception {
                        vector: vector::DF,
                        error_code: Some(0),
                    });
                }
            }
        }
        self.cpu.delivering = Some(v);
        let r = self.deliver_real(ev);
        let r = match r {
            Ok(()) => Ok(()),
            Err(crate::fault::Fault::Exception { vector, error_code }) => {
                self.deliver(Event::Exception { vector, error_code })
            }
            Err(crate::fault::Fault::Stop(kind)) => Err(kind),
        };
        self.cpu.delivering = None;
        r
    }

    fn deliver_real(&mut self, ev: Event) -> crate::fault::Result<()> {
        let v = ev.vector() as u64;
        if v * 4 + 3 > self.cpu.idtr.limit as u64 {
            return Err(crate::fault::Fault::gp(0));
        }
        let entry = self.read_lin_sys(self.cpu.idtr.base.wrapping_add(v * 4), 4)?;
        let flags_v = self.cpu.rflags as u16 as u64;
        let cs = self.cpu.seg[SegReg::Cs as usize].selector as u64;
        let ip = self.cpu.rip & 0xffff;
        self.push16(flags_v)?;
        self.push16(cs)?;
        self.push16(ip)?;
        self.cpu.rflags &= !(flags::IF | flags::TF | flags::AC | flags::RF);
        self.cpu.seg[SegReg::Cs as usize] = Segment {
            attr: self.cpu.seg[SegReg::Cs as usize].attr | attr::PRESENT,
            ..Segment::real((entry >> 16) as u16, self.cpu.seg[SegReg::Cs as usize].attr)
        };
        self.cpu.rip = entry & 0xffff;
        self.cpu.update_mode();
        Ok(())
    }

    fn push16(&mut self, v: u64) -> crate::fault::Result<()> {
        let sp = self.cpu.gpr[crate::state::reg::RSP].wrapping_sub(2) & 0xffff;
        self.write_seg(SegReg::Ss, sp, 2, v)?;
        let g = &mut self.cpu.gpr[crate::state::reg::RSP];
        *g = (*g & !0xffff) | sp;
        Ok(())
    }
}

/// Whether a fault during delivery of `first` turns into #DF (SDM table 6-5).
fn is_contributory_pair(first: u8, second: u8) -> bool {
    let contributory = |v: u8| matches!(v, vector::DE | vector::TS | vector::NP | vector::SS | vector::GP);
    (contributory(first) && contributory(second))
        || (first == vector::PF && (contributory(second) || second == vector::PF))
}
