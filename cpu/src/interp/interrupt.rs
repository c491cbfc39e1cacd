//! Interrupt and exception delivery, and the instructions that raise or
//! return from them: INT n, INT3, INTO, INT1 (ICEBP) and IRET/IRETD/IRETQ.
//!
//! Delivery follows the SDM (vol. 2 "INT n/INTO/INT3/INT1", vol. 3 ch. 6):
//! the real-mode IVT; protected-mode interrupt and trap gates (16/32-bit)
//! with a stack switch from the TSS on a privilege change, including
//! interrupts from virtual-8086 mode; and long-mode 16-byte gates with
//! RSPn/IST stacks, 16-byte alignment and an unconditional SS:RSP push.
//! Every check and every push is validated before any state changes, so a
//! fault during delivery leaves the machine as it was and the nested fault
//! is delivered instead (#DF and triple fault per SDM table 6-5).
//!
//! Not supported (the machine stops with `StopKind::Unsupported`): task
//! gates in the IDT and IRET with EFLAGS.NT = 1 (hardware task switches).
//! Virtual-8086 mode extensions (CR4.VME) are not advertised, so INT n and
//! IRET in V86 mode with IOPL < 3 raise #GP(0).

use iced_x86::{Code, Instruction};

use crate::block::Handler;
use crate::fault::{vector, Fault, Result, StopKind};
use crate::flags;
use crate::interp::descriptor::{
    is_null, null_segment, null_ss, real_segment, sel_code, v86_segment, Desc, StackBuilder,
};
use crate::interp::Ctx;
use crate::memory::is_canonical;
use crate::state::{cr, reg, Mode, SegReg};

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

    /// The EXT bit of error codes raised while delivering this event: clear
    /// only for INT n, INT3 and INTO.
    #[inline]
    fn ext(&self) -> u32 {
        match self {
            Event::Software { soft: true, .. } => 0,
            _ => 1,
        }
    }

    /// INT n / INT3 / INTO: subject to the gate DPL check.
    #[inline]
    fn is_soft(&self) -> bool {
        matches!(self, Event::Software { soft: true, .. })
    }

    #[inline]
    fn error_code(&self) -> Option<u32> {
        match *self {
            Event::Exception { error_code, .. } => error_code,
            _ => None,
        }
    }
}

/// The handler for `insn` if this group implements it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    Some(match insn.code() {
        Code::Int_imm8 => int_n,
        Code::Int3 => int3,
        Code::Into => into,
        Code::Int1 => int1,
        Code::Iretw | Code::Iretd | Code::Iretq => iret,
        Code::Bound_r16_m1616 => bound::<2>,
        Code::Bound_r32_m3232 => bound::<4>,
        _ => return None,
    })
}

/// BOUND: #BR (a fault) unless lower <= index <= upper, all signed, with
/// the two bounds read from memory (legacy modes only; 62h is EVEX in 64-bit mode).
fn bound<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> crate::fault::Result<()> {
    let (s, off) = crate::interp::operand::mem_operand(ctx.cpu, insn);
    let mask = crate::interp::operand::addr_mask(crate::interp::operand::addr_size(insn));
    let lower = crate::flags::sign_extend(ctx.read_seg(s, off, N)?, N) as i64;
    let upper_off = off.wrapping_add(N as u64) & mask;
    let upper = crate::flags::sign_extend(ctx.read_seg(s, upper_off, N)?, N) as i64;
    let index = crate::interp::operand::read_reg(ctx.cpu, insn.op0_register());
    let index = crate::flags::sign_extend(index, N) as i64;
    if index < lower || index > upper {
        return Err(crate::fault::Fault::exc(vector::BR));
    }
    Ok(())
}

/// Fault-class exceptions push EFLAGS with RF set (all but #DB, which may be
/// a trap, and the aborts #DF/#MC; #BP and #OF are traps).
#[inline]
fn is_fault_class(v: u8) -> bool {
    matches!(
        v,
        vector::DE
            | vector::BR
            | vector::UD
            | vector::NM
            | vector::TS
            | vector::NP
            | vector::SS
            | vector::GP
            | vector::PF
            | vector::MF
            | vector::AC
            | vector::XM
            | 20
            | 21
    )
}

/// Whether a fault during delivery of `first` turns into #DF (SDM table 6-5):
/// contributory after contributory, contributory or #PF after #PF.
fn is_double_fault(first: u8, second: u8) -> bool {
    let contributory = |v: u8| {
        matches!(
            v,
            vector::DE | vector::TS | vector::NP | vector::SS | vector::GP
        )
    };
    (contributory(first) && contributory(second))
        || (first == vector::PF && (contributory(second) || second == vector::PF))
}

impl Ctx<'_> {
    /// Delivers an event, escalating nested faults to #DF and triple fault.
    /// A fault raised while delivering an event is delivered in its place
    /// (benign combinations), or becomes #DF(0); any fault while delivering
    /// #DF is a triple fault.
    ///
    /// INT n and friends use [`Ctx::software_interrupt`] instead, so that a
    /// fault in their delivery is reported at the instruction.
    pub(crate) fn deliver(&mut self, ev: Event) -> std::result::Result<(), StopKind> {
        let mut ev = ev;
        loop {
            if let Event::Exception { vector, .. } = ev {
                if is_fault_class(vector) {
                    self.cpu.rflags |= flags::RF;
                }
            }
            self.cpu.delivering = Some(ev.vector());
            let r = self.deliver_once(ev);
            self.cpu.delivering = None;
            match r {
                Ok(()) => return Ok(()),
                Err(Fault::Stop(kind)) => return Err(kind),
                Err(Fault::Exception {
                    vector: second,
                    error_code,
                }) => {
                    let first = match ev {
                        Event::Exception { vector, .. } => Some(vector),
                        _ => None,
                    };
                    ev = match first {
                        Some(vector::DF) => {
                            return Err(StopKind::TripleFault {
                                vector: second,
                                error_code,
                            })
                        }
                        Some(f) if is_double_fault(f, second) => Event::Exception {
                            vector: vector::DF,
                            error_code: Some(0),
                        },
                        _ => Event::Exception {
                            vector: second,
                            error_code,
                        },
                    };
                }
            }
        }
    }

    /// INT n / INT3 / INTO (`soft`) or INT1: delivers the interrupt with RIP
    /// after the instruction. A fault during delivery is returned, so the run
    /// loop reports it at the instruction (with EXT clear for INT n).
    pub(crate) fn software_interrupt(&mut self, vector: u8, soft: bool) -> Result<()> {
        self.cpu.delivering = Some(vector);
        let r = self.deliver_once(Event::Software { vector, soft });
        self.cpu.delivering = None;
        r
    }

    /// One delivery attempt: all or nothing.
    fn deliver_once(&mut self, ev: Event) -> Result<()> {
        if self.cpu.cr0 & cr::CR0_PE == 0 {
            self.deliver_real(ev)
        } else if self.cpu.efer & cr::EFER_LMA != 0 {
            self.deliver_long(ev)
        } else {
            self.deliver_protected(ev)
        }
    }

    /// Real mode: FLAGS, CS, IP through the IVT.
    fn deliver_real(&mut self, ev: Event) -> Result<()> {
        let v = ev.vector() as u64;
        if v * 4 + 3 > self.cpu.idtr.limit as u64 {
            return Err(Fault::gp(0));
        }
        let entry = self.read_lin_sys(self.cpu.idtr.base.wrapping_add(v * 4), 4)?;
        let mut st = StackBuilder::new(
            self.cpu.seg[SegReg::Ss as usize],
            self.sp(),
            false,
            Fault::ss(0),
        );
        st.push(2, self.cpu.rflags)?;
        st.push(2, self.cpu.seg[SegReg::Cs as usize].selector as u64)?;
        st.push(2, self.cpu.rip)?;
        st.probe(self, false)?;
        let cs = &mut self.cpu.seg[SegReg::Cs as usize];
        *cs = real_segment(*cs, (entry >> 16) as u16);
        self.cpu.rflags &= !(flags::IF | flags::TF | flags::AC | flags::RF);
        self.cpu.rip = entry & 0xffff;
        self.set_sp(st.sp);
        self.cpu.update_mode();
        st.commit(self)
    }

    /// Reads and checks the code segment an IDT gate names.
    fn gate_code_segment(&mut self, sel: u16, ext: u32) -> Result<(Desc, u64)> {
        if is_null(sel) {
            return Err(Fault::gp(ext));
        }
        let gp = Fault::gp(sel_code(sel) | ext);
        let Some((d, addr)) = self.read_desc(sel)? else {
            return Err(gp);
        };
        if !d.is_code() || d.dpl() > self.cpu.cpl {
            return Err(gp);
        }
        if !d.present() {
            return Err(Fault::np(sel_code(sel) | ext));
        }
        Ok((d, addr))
    }

    /// Protected mode (legacy): 16/32-bit interrupt and trap gates.
    fn deliver_protected(&mut self, ev: Event) -> Result<()> {
        let v = ev.vector();
        let ext = ev.ext();
        let idt_err = ((v as u32) << 3) | 2 | ext;
        let off = (v as u64) * 8;
        if off + 7 > self.cpu.idtr.limit as u64 {
            return Err(Fault::gp(idt_err));
        }
        let gate = Desc {
            lo: self.read_lin_sys(self.cpu.idtr.base.wrapping_add(off), 8)?,
            hi: 0,
        };
        let ty = gate.sys_type();
        if gate.is_seg() || !matches!(ty, 5 | 6 | 7 | 0xe | 0xf) {
            return Err(Fault::gp(idt_err));
        }
        let cpl = self.cpu.cpl;
        if ev.is_soft() && gate.dpl() < cpl {
            return Err(Fault::gp(((v as u32) << 3) | 2));
        }
        if !gate.present() {
            return Err(Fault::np(idt_err));
        }
        if ty == 5 {
            return Err(Fault::Stop(StopKind::Unsupported(format!(
                "task switch through the task gate of vector {v:#x}"
            ))));
        }
        let size: u8 = if ty & 8 != 0 { 4 } else { 2 };
        let interrupt_gate = ty & 1 == 0;
        let eip = gate.gate_offset() & flags::mask(size);
        let cs_sel = gate.gate_selector();
        let (cd, cs_addr) = self.gate_code_segment(cs_sel, ext)?;
        let vm = self.cpu.rflags & flags::VM != 0;
        let dpl = cd.dpl();
        let old_flags = self.cpu.rflags;
        let old_cs = self.cpu.seg[SegReg::Cs as usize].selector as u64;
        let old_ip = self.cpu.rip;
        let err = ev.error_code();

        let st = if !cd.conforming() && dpl < cpl {
            // Inter-privilege (or from virtual-8086 mode, to ring 0 only).
            if vm && dpl != 0 {
                return Err(Fault::gp(sel_code(cs_sel) | ext));
            }
            let (ss_sel, esp) = self.tss_stack_legacy(dpl, ext)?;
            let (ss_seg, ss_addr, ss_desc) = self.inner_stack_segment(ss_sel, dpl, ext)?;
            let mut st = StackBuilder::new(ss_seg, esp, false, Fault::ss(sel_code(ss_sel) | ext));
            if vm {
                for s in [SegReg::Gs, SegReg::Fs, SegReg::Ds, SegReg::Es] {
                    st.push(size, self.cpu.seg[s as usize].selector as u64)?;
                }
            }
            st.push(size, self.cpu.seg[SegReg::Ss as usize].selector as u64)?;
            st.push(size, self.cpu.gpr[reg::RSP])?;
            st.push(size, old_flags)?;
            st.push(size, old_cs)?;
            st.push(size, old_ip)?;
            if let Some(e) = err {
                st.push(size, e as u64)?;
            }
            if eip > cd.limit() as u64 {
                return Err(Fault::gp(ext));
            }
            st.probe(self, false)?;
            self.set_accessed(cs_addr, &cd)?;
            self.set_accessed(ss_addr, &ss_desc)?;
            if vm {
                // The V86 segment registers were saved; they become null.
                for s in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
                    self.cpu.seg[s as usize] = null_segment(0);
                }
            }
            self.cpu.seg[SegReg::Ss as usize] = ss_seg;
            // A 16-bit stack keeps the upper half of the ESP the TSS supplied.
            self.cpu.gpr[reg::RSP] = ((esp & !st.mask()) | st.sp) & 0xffff_ffff;
            self.cpu.seg[SegReg::Cs as usize] = cd.segment((cs_sel & !3) | dpl as u16);
            self.cpu.cpl = dpl;
            st
        } else {
            // Intra-privilege: conforming code, or DPL = CPL.
            if vm {
                return Err(Fault::gp(sel_code(cs_sel) | ext));
            }
            let mut st = StackBuilder::new(
                self.cpu.seg[SegReg::Ss as usize],
                self.sp(),
                false,
                Fault::ss(ext),
            );
            st.push(size, old_flags)?;
            st.push(size, old_cs)?;
            st.push(size, old_ip)?;
            if let Some(e) = err {
                st.push(size, e as u64)?;
            }
            if eip > cd.limit() as u64 {
                return Err(Fault::gp(ext));
            }
            st.probe(self, cpl == 3)?;
            self.set_accessed(cs_addr, &cd)?;
            self.set_sp(st.sp);
            self.cpu.seg[SegReg::Cs as usize] = cd.segment((cs_sel & !3) | cpl as u16);
            st
        };
        self.finish_delivery(&st, eip, interrupt_gate)
    }

    /// IA-32e mode: 16-byte interrupt and trap gates, RSPn or IST stacks.
    fn deliver_long(&mut self, ev: Event) -> Result<()> {
        let v = ev.vector();
        let ext = ev.ext();
        let idt_err = ((v as u32) << 3) | 2 | ext;
        let off = (v as u64) * 16;
        if off + 15 > self.cpu.idtr.limit as u64 {
            return Err(Fault::gp(idt_err));
        }
        let base = self.cpu.idtr.base.wrapping_add(off);
        let gate = Desc {
            lo: self.read_lin_sys(base, 8)?,
            hi: self.read_lin_sys(base.wrapping_add(8), 8)?,
        };
        let ty = gate.sys_type();
        if gate.is_seg() || !matches!(ty, 0xe | 0xf) {
            return Err(Fault::gp(idt_err));
        }
        let cpl = self.cpu.cpl;
        if ev.is_soft() && gate.dpl() < cpl {
            return Err(Fault::gp(((v as u32) << 3) | 2));
        }
        if !gate.present() {
            return Err(Fault::np(idt_err));
        }
        let interrupt_gate = ty & 1 == 0;
        let rip = gate.gate_offset();
        let cs_sel = gate.gate_selector();
        let (cd, cs_addr) = self.gate_code_segment(cs_sel, ext)?;
        if !cd.long() || cd.db() {
            return Err(Fault::gp(sel_code(cs_sel) | ext));
        }
        let inter = !cd.conforming() && cd.dpl() < cpl;
        let new_cpl = if inter { cd.dpl() } else { cpl };
        let ist = gate.gate_ist();
        let rsp = if inter || ist != 0 {
            self.tss_stack_long(new_cpl, ist, ext)?
        } else {
            self.cpu.gpr[reg::RSP]
        };
        if !is_canonical(rsp) {
            return Err(Fault::ss(ext));
        }
        if !is_canonical(rip) {
            return Err(Fault::gp(ext));
        }
        let mut st = StackBuilder::new(
            self.cpu.seg[SegReg::Ss as usize],
            rsp & !0xf,
            true,
            Fault::ss(ext),
        );
        st.push(8, self.cpu.seg[SegReg::Ss as usize].selector as u64)?;
        st.push(8, self.cpu.gpr[reg::RSP])?;
        st.push(8, self.cpu.rflags)?;
        st.push(8, self.cpu.seg[SegReg::Cs as usize].selector as u64)?;
        st.push(8, self.cpu.rip)?;
        if let Some(e) = ev.error_code() {
            st.push(8, e as u64)?;
        }
        st.probe(self, new_cpl == 3)?;
        self.set_accessed(cs_addr, &cd)?;
        if inter {
            self.cpu.seg[SegReg::Ss as usize] = null_ss(new_cpl);
        }
        self.cpu.gpr[reg::RSP] = st.sp;
        self.cpu.seg[SegReg::Cs as usize] = cd.segment((cs_sel & !3) | new_cpl as u16);
        self.cpu.cpl = new_cpl;
        self.finish_delivery(&st, rip, interrupt_gate)
    }

    /// The common end of protected- and long-mode delivery: flags, RIP,
    /// mode, then the (already validated) pushes.
    fn finish_delivery(&mut self, st: &StackBuilder, rip: u64, interrupt_gate: bool) -> Result<()> {
        self.cpu.rflags &= !(flags::TF | flags::NT | flags::RF | flags::VM);
        if interrupt_gate {
            self.cpu.rflags &= !flags::IF;
        }
        self.cpu.rip = rip;
        self.cpu.update_mode();
        st.commit(self)
    }
}

fn int_n(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    // Without VME, INT n in virtual-8086 mode is IOPL-sensitive (INT3/INTO are not).
    if ctx.cpu.mode == Mode::Virtual8086 && ctx.cpu.iopl() < 3 {
        return Err(Fault::gp(0));
    }
    ctx.software_interrupt(insn.immediate8(), true)
}

fn int3(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    ctx.software_interrupt(vector::BP, true)
}

fn into(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    if ctx.cpu.rflags & flags::OF != 0 {
        ctx.software_interrupt(vector::OF, true)
    } else {
        Ok(())
    }
}

fn int1(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    ctx.software_interrupt(vector::DB, false)
}

/// EFLAGS bits a 16-bit image can hold (bit 1 is fixed, 3, 5 and 15 are zero).
const FLAGS16: u64 = 0x7fd5;

/// EFLAGS after a protected/long-mode IRET from privilege `cpl`.
fn iret_flags(old: u64, new: u64, size: u8, cpl: u8, iopl: u8) -> u64 {
    let mut m = flags::STATUS | flags::TF | flags::DF | flags::NT;
    if size >= 4 {
        m |= flags::RF | flags::AC | flags::ID;
    }
    if cpl <= iopl {
        m |= flags::IF;
    }
    if cpl == 0 {
        m |= flags::IOPL;
        if size >= 4 {
            m |= flags::VIF | flags::VIP;
        }
    }
    (old & !m) | (new & m) | flags::FIXED
}

fn iret(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let size: u8 = match insn.code() {
        Code::Iretw => 2,
        Code::Iretd => 4,
        _ => 8,
    };
    let old_if = ctx.cpu.rflags & flags::IF;
    match ctx.cpu.mode {
        Mode::Real => iret_real(ctx, size)?,
        Mode::Virtual8086 => iret_v86(ctx, size)?,
        _ => {
            if ctx.cpu.rflags & flags::NT != 0 {
                if ctx.cpu.efer & cr::EFER_LMA != 0 {
                    return Err(Fault::gp(0));
                }
                return Err(Fault::Stop(StopKind::Unsupported(
                    "task return (IRET with EFLAGS.NT set)".into(),
                )));
            }
            if ctx.cpu.efer & cr::EFER_LMA != 0 {
                iret_long(ctx, size)?
            } else {
                iret_protected(ctx, size)?
            }
        }
    }
    if old_if == 0 && ctx.cpu.rflags & flags::IF != 0 {
        // Interrupts may be deliverable now.
        ctx.cpu.exit_request = true;
    }
    ctx.cpu.end_block = true;
    Ok(())
}

fn iret_real(ctx: &mut Ctx, size: u8) -> Result<()> {
    let ip = ctx.peek(0, size)?;
    let cs = ctx.peek(size as u64, size)? as u16;
    let fl = ctx.peek(2 * size as u64, size)?;
    if ip > ctx.cpu.seg[SegReg::Cs as usize].limit as u64 {
        return Err(Fault::gp(0));
    }
    let sp = ctx.sp().wrapping_add(3 * size as u64);
    ctx.set_sp(sp);
    let old = ctx.cpu.rflags;
    ctx.cpu.rflags = if size == 4 {
        // VM, VIF and VIP keep their values.
        (fl & 0x25_7fd5) | (old & 0x1a_0000) | flags::FIXED
    } else {
        (old & !0xffff) | (fl & FLAGS16) | flags::FIXED
    };
    let c = &mut ctx.cpu.seg[SegReg::Cs as usize];
    *c = real_segment(*c, cs);
    ctx.cpu.rip = ip;
    ctx.cpu.update_mode();
    Ok(())
}

fn iret_v86(ctx: &mut Ctx, size: u8) -> Result<()> {
    if ctx.cpu.iopl() < 3 {
        return Err(Fault::gp(0));
    }
    let ip = ctx.peek(0, size)?;
    let cs = ctx.peek(size as u64, size)? as u16;
    let fl = ctx.peek(2 * size as u64, size)?;
    if ip > 0xffff {
        return Err(Fault::gp(0));
    }
    let sp = ctx.sp().wrapping_add(3 * size as u64);
    ctx.set_sp(sp);
    let old = ctx.cpu.rflags;
    // VM, IOPL, VIP and VIF are not changed by the popped image.
    let m = if size == 4 {
        flags::ALL_DEFINED & !(flags::VM | flags::IOPL | flags::VIP | flags::VIF | flags::FIXED)
    } else {
        FLAGS16 & !flags::IOPL
    };
    ctx.cpu.rflags = (old & !m) | (fl & m) | flags::FIXED;
    ctx.cpu.seg[SegReg::Cs as usize] = v86_segment(cs);
    ctx.cpu.rip = ip;
    ctx.cpu.update_mode();
    Ok(())
}

/// IRET from CPL 0 with VM set in the popped EFLAGS: back to virtual-8086 mode.
fn iret_to_v86(ctx: &mut Ctx, eip: u64, cs: u16, fl: u64) -> Result<()> {
    let mut v = [0u64; 6];
    for (i, x) in v.iter_mut().enumerate() {
        *x = ctx.peek(12 + 4 * i as u64, 4)?;
    }
    let [esp, ss, es, ds, fs, gs] = v;
    if eip > 0xffff {
        return Err(Fault::gp(0));
    }
    ctx.cpu.rflags = (fl & flags::ALL_DEFINED) | flags::FIXED;
    let seg = &mut ctx.cpu.seg;
    seg[SegReg::Cs as usize] = v86_segment(cs);
    seg[SegReg::Ss as usize] = v86_segment(ss as u16);
    seg[SegReg::Es as usize] = v86_segment(es as u16);
    seg[SegReg::Ds as usize] = v86_segment(ds as u16);
    seg[SegReg::Fs as usize] = v86_segment(fs as u16);
    seg[SegReg::Gs as usize] = v86_segment(gs as u16);
    ctx.cpu.gpr[reg::RSP] = esp & 0xffff_ffff;
    ctx.cpu.rip = eip;
    ctx.cpu.cpl = 3;
    ctx.cpu.update_mode();
    Ok(())
}

fn iret_protected(ctx: &mut Ctx, size: u8) -> Result<()> {
    let cpl = ctx.cpu.cpl;
    let eip = ctx.peek(0, size)?;
    let cs_sel = ctx.peek(size as u64, size)? as u16;
    let fl = ctx.peek(2 * size as u64, size)?;
    if size == 4 && fl & flags::VM != 0 && cpl == 0 {
        return iret_to_v86(ctx, eip, cs_sel, fl);
    }
    let (cd, cs_addr) = ctx.return_code_segment(cs_sel)?;
    let rpl = (cs_sel & 3) as u8;
    let iopl = ctx.cpu.iopl();
    let new_flags = iret_flags(ctx.cpu.rflags, fl, size, cpl, iopl);
    if rpl > cpl {
        let esp = ctx.peek(3 * size as u64, size)?;
        let ss_sel = ctx.peek(4 * size as u64, size)? as u16;
        if eip > cd.limit() as u64 {
            return Err(Fault::gp(0));
        }
        let (ss_seg, ss_acc) = ctx.outer_stack_segment(ss_sel, rpl, false)?;
        ctx.set_accessed(cs_addr, &cd)?;
        if let Some((a, d)) = ss_acc {
            ctx.set_accessed(a, &d)?;
        }
        ctx.cpu.rflags = new_flags;
        ctx.cpu.seg[SegReg::Cs as usize] = cd.segment(cs_sel);
        ctx.cpu.seg[SegReg::Ss as usize] = ss_seg;
        ctx.cpu.cpl = rpl;
        ctx.cpu.rip = eip;
        ctx.cpu.update_mode();
        ctx.set_sp(esp);
        ctx.invalidate_data_segments();
    } else {
        if eip > cd.limit() as u64 {
            return Err(Fault::gp(0));
        }
        ctx.set_accessed(cs_addr, &cd)?;
        let sp = ctx.sp().wrapping_add(3 * size as u64);
        ctx.set_sp(sp);
        ctx.cpu.rflags = new_flags;
        ctx.cpu.seg[SegReg::Cs as usize] = cd.segment(cs_sel);
        ctx.cpu.rip = eip;
        ctx.cpu.update_mode();
    }
    Ok(())
}

/// IRET in IA-32e mode: 64-bit mode always pops SS:RSP; compatibility mode
/// only on a privilege change.
fn iret_long(ctx: &mut Ctx, size: u8) -> Result<()> {
    let cpl = ctx.cpu.cpl;
    let rip = ctx.peek(0, size)?;
    let cs_sel = ctx.peek(size as u64, size)? as u16;
    // There is no virtual-8086 mode in IA-32e mode: VM in the image is ignored.
    let fl = ctx.peek(2 * size as u64, size)? & !flags::VM;
    let (cd, cs_addr) = ctx.return_code_segment(cs_sel)?;
    let rpl = (cs_sel & 3) as u8;
    let to64 = cd.long();
    let pop_ss = rpl > cpl || ctx.cpu.bitness == 64;
    if to64 {
        if !is_canonical(rip) {
            return Err(Fault::gp(0));
        }
    } else if rip > cd.limit() as u64 {
        return Err(Fault::gp(0));
    }
    let stack = if pop_ss {
        let rsp = ctx.peek(3 * size as u64, size)?;
        let ss_sel = ctx.peek(4 * size as u64, size)? as u16;
        let (ss_seg, ss_acc) = ctx.outer_stack_segment(ss_sel, rpl, to64)?;
        Some((rsp, ss_seg, ss_acc))
    } else {
        None
    };
    ctx.set_accessed(cs_addr, &cd)?;
    if let Some((_, _, Some((a, d)))) = stack {
        ctx.set_accessed(a, &d)?;
    }
    let iopl = ctx.cpu.iopl();
    ctx.cpu.rflags = iret_flags(ctx.cpu.rflags, fl, size, cpl, iopl);
    if stack.is_none() {
        // Same privilege from compatibility mode: release the frame on the current stack.
        let sp = ctx.sp().wrapping_add(3 * size as u64);
        ctx.set_sp(sp);
    }
    ctx.cpu.seg[SegReg::Cs as usize] = cd.segment(cs_sel);
    ctx.cpu.cpl = rpl;
    ctx.cpu.rip = rip;
    if let Some((rsp, ss_seg, _)) = stack {
        ctx.cpu.seg[SegReg::Ss as usize] = ss_seg;
        ctx.cpu.update_mode();
        ctx.set_sp(rsp);
    } else {
        ctx.cpu.update_mode();
    }
    if rpl > cpl {
        ctx.invalidate_data_segments();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::block::CodeCache;
    use crate::fault::{vector, StopKind};
    use crate::flags;
    use crate::interp::descriptor::testkit::*;
    use crate::interp::{Ctx, RunExit};
    use crate::state::{reg, Cpu, Mode, SegReg};
    use crate::testutil::{
        assemble, cpu_in, install_tables, run, run_asm, sel, TestBus, TestMode, CODE, IDT, STACK,
    };
    use iced_x86::code_asm::*;

    /// Where tests put their own handlers.
    const H: u64 = 0x21_0000;

    fn rd(bus: &TestBus, cpu: &Cpu, slot: u64, size: u64) -> u64 {
        bus.read(
            (cpu.gpr[reg::RSP]
                & if cpu.bitness == 64 {
                    u64::MAX
                } else {
                    0xffff_ffff
                })
                + slot * size,
            size as usize,
        )
    }

    fn stop_kind(exit: RunExit) -> StopKind {
        match exit {
            RunExit::Stop(s) => s.kind,
            e => panic!("expected a stop, got {e:?}"),
        }
    }

    #[test]
    fn real_mode_int_and_iret() {
        let h = asm_at(16, 0x10, |a| {
            a.mov(bx, 0x55u32)?;
            a.pushf()?;
            a.pop(dx)?;
            a.iret()
        });
        let (cpu, _, exit) = run_asm(
            TestMode::Real,
            |a| {
                a.int(0x21)?;
                a.mov(cx, 1u32)?;
                a.hlt()
            },
            |cpu, bus| {
                bus.put(0x21 * 4, 4, 0x2000_0010);
                bus.write(0x2_0010, &h);
                cpu.rflags |= flags::IF | flags::TF;
                cpu.rflags &= !flags::TF;
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX] & 0xffff, 0x55);
        assert_eq!(cpu.gpr[reg::RCX] & 0xffff, 1);
        assert_eq!(cpu.gpr[reg::RDX] & flags::IF, 0, "IF clear in the handler");
        assert_ne!(cpu.rflags & flags::IF, 0, "IF restored by IRET");
        assert_eq!(cpu.gpr[reg::RSP], 0x8000);
        assert_eq!(cpu.sreg(SegReg::Cs).selector, 0x1000);
    }

    #[test]
    fn real_mode_exception_uses_ivt() {
        let (cpu, bus, exit) = run_asm(
            TestMode::Real,
            |a| {
                a.mov(bx, 0xffffu32)?;
                a.ud2()
            },
            |cpu, bus| install_handlers(cpu, bus),
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX] & 0xffff, vector::UD as u64);
        // FLAGS, CS, IP: IP points at UD2 (offset 3).
        assert_eq!(bus.read(0x8000 - 6, 2), 3);
        assert_eq!(bus.read(0x8000 - 4, 2), 0x1000);
    }

    #[test]
    fn triple_faults() {
        // Real mode with an empty IVT: INT3 → #GP → #DF → triple fault.
        let (_, _, exit) = run_asm(TestMode::Real, |a| a.int3(), |cpu, _| cpu.idtr.limit = 0);
        assert!(matches!(stop_kind(exit), StopKind::TripleFault { .. }));
        // Protected mode with an empty IDT: #UD → #GP (benign first) → #DF → triple.
        let (cpu, _, exit) = run_asm(
            TestMode::Protected32,
            |a| a.ud2(),
            |cpu, _| cpu.idtr.limit = 0,
        );
        assert_eq!(
            stop_kind(exit),
            StopKind::TripleFault {
                vector: vector::GP,
                error_code: Some(8 * 8 + 2 + 1)
            }
        );
        assert_eq!(
            cpu.rip, CODE,
            "the machine stops at the faulting instruction"
        );
        // Long mode, IDT entries not present.
        let (_, _, exit) = run_asm(TestMode::Long64, |a| a.ud2(), |_, _| {});
        assert!(matches!(stop_kind(exit), StopKind::TripleFault { .. }));
    }

    #[test]
    fn ring3_interrupt_gate_and_iret() {
        let h = asm_at(32, H, |a| {
            a.mov(esi, dword_ptr(esp))?;
            a.mov(edi, dword_ptr(esp + 4))?;
            a.mov(ebp, dword_ptr(esp + 16))?;
            a.mov(edx, esp)?;
            a.mov(eax, 0x99u32)?;
            a.iretd()
        });
        let (cpu, bus, exit) = run_asm(
            TestMode::Protected32,
            |a| {
                a.mov(eax, 1u32)?;
                a.int(0x80)?;
                a.mov(ecx, eax)?;
                a.hlt()
            },
            |cpu, bus| {
                install_handlers(cpu, bus);
                set_idt32(bus, 0x80, gate(sel::CODE32, H, 0xee, 0));
                bus.write(H, &h);
                to_user(cpu);
                cpu.rflags |= flags::IF;
            },
        );
        assert_eq!(exit, RunExit::Halted);
        let after_int = CODE + 5 + 2;
        assert_eq!(cpu.gpr[reg::RSI], after_int);
        assert_eq!(cpu.gpr[reg::RDI], sel::CODE32_USER as u64);
        assert_eq!(cpu.gpr[reg::RBP], sel::DATA32_USER as u64);
        assert_eq!(cpu.gpr[reg::RDX], ESP0 - 20);
        assert_eq!(cpu.gpr[reg::RCX], 0x99);
        // HLT at CPL 3 → #GP(0) on the ring-0 stack.
        assert_eq!(cpu.gpr[reg::RBX], vector::GP as u64);
        assert_eq!((cpu.cpl, cpu.mode), (0, Mode::Protected));
        assert_eq!(cpu.gpr[reg::RSP], ESP0 - 24);
        assert_eq!(rd(&bus, &cpu, 0, 4), 0, "error code");
        assert_eq!(rd(&bus, &cpu, 1, 4), after_int + 2, "EIP of the HLT");
        assert_eq!(rd(&bus, &cpu, 2, 4), sel::CODE32_USER as u64);
        let pushed = rd(&bus, &cpu, 3, 4);
        assert_eq!(
            pushed & (flags::IF | flags::RF),
            flags::IF | flags::RF,
            "IF, and RF for a fault"
        );
        assert_eq!(rd(&bus, &cpu, 4, 4), USER_STACK);
        assert_eq!(rd(&bus, &cpu, 5, 4), sel::DATA32_USER as u64);
        assert_eq!(cpu.rflags & (flags::IF | flags::RF), 0);
        assert_eq!(cpu.sreg(SegReg::Ss).selector, sel::DATA32);
    }

    /// Runs user-mode code with handlers installed; returns (vector, error code or top of stack).
    fn user_fault(
        build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
        setup: impl FnOnce(&mut Cpu, &mut TestBus),
    ) -> (u8, u64, Cpu, TestBus) {
        let (cpu, bus, exit) = run_asm(TestMode::Protected32, build, |cpu, bus| {
            install_handlers(cpu, bus);
            to_user(cpu);
            setup(cpu, bus);
        });
        assert_eq!(exit, RunExit::Halted);
        let top = rd(&bus, &cpu, 0, 4);
        (cpu.gpr[reg::RBX] as u8, top, cpu, bus)
    }

    #[test]
    fn software_interrupt_privilege_checks() {
        // INT n through a DPL-0 gate: #GP(vector*8+2), EXT clear.
        let (v, e, _, _) = user_fault(|a| a.int(0x81), |_, _| {});
        assert_eq!((v, e), (vector::GP, 0x81 * 8 + 2));
        let (v, e, _, _) = user_fault(|a| a.int3(), |_, _| {});
        assert_eq!((v, e), (vector::GP, 3 * 8 + 2));
        // INT1 skips the DPL check.
        let (v, e, _, _) = user_fault(|a| a.int1(), |_, _| {});
        assert_eq!((v, e), (vector::DB, CODE + 1), "INT1 pushes the next EIP");
        // INTO with OF set delivers #OF after the instruction; with OF clear it does nothing.
        let code = assemble(TestMode::Protected32, |a| {
            a.into()?;
            a.mov(eax, 0x7fff_ffffu32)?;
            a.add(eax, 1)?;
            a.into()?;
            a.hlt()
        });
        let (cpu, bus, exit) = run(TestMode::Protected32, &code, 1000, |cpu, bus| {
            install_handlers(cpu, bus)
        });
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], vector::OF as u64);
        assert_eq!(rd(&bus, &cpu, 0, 4), CODE + code.len() as u64 - 1);
        assert_eq!(rd(&bus, &cpu, 2, 4) & flags::RF, 0, "traps do not set RF");
        // A not-present gate for INT n: #NP(vector*8+2).
        let (v, e, _, _) = user_fault(
            |a| a.int(0x81),
            |_, bus| set_idt32(bus, 0x81, gate(sel::CODE32, H, 0x6e, 0)),
        );
        assert_eq!((v, e), (vector::NP, 0x81 * 8 + 2));
        // A gate that is not an interrupt/trap/task gate: #GP(vector*8+2).
        let (v, e, _, _) = user_fault(
            |a| a.int(0x81),
            |_, bus| set_idt32(bus, 0x81, gate(sel::CODE32, H, 0xec, 0)),
        );
        assert_eq!((v, e), (vector::GP, 0x81 * 8 + 2));
    }

    #[test]
    fn external_interrupt_errors_have_ext() {
        let mut bus = TestBus::new();
        install_tables(&mut bus);
        let mut cpu = cpu_in(TestMode::Protected32);
        install_handlers(&cpu, &mut bus);
        set_idt32(&mut bus, 0x30, gate(sel::CODE32, H, 0x0e, 0)); // not present
        let mut cache = CodeCache::new();
        cpu.rflags |= flags::IF;
        Ctx::new(&mut cpu, &mut bus, &mut cache)
            .interrupt(0x30)
            .expect("delivered");
        assert_eq!(cpu.rip, handler_addr(vector::NP));
        assert_eq!(rd(&bus, &cpu, 0, 4), 0x30 * 8 + 2 + 1);
        assert_eq!(rd(&bus, &cpu, 1, 4), CODE, "the interrupted EIP");
        // A working external interrupt through a trap gate keeps IF.
        set_idt32(
            &mut bus,
            0x31,
            gate(sel::CODE32, handler_addr(0x31), 0x8f, 0),
        );
        cpu.rflags |= flags::IF;
        Ctx::new(&mut cpu, &mut bus, &mut cache)
            .interrupt(0x31)
            .expect("delivered");
        assert_eq!(cpu.rip, handler_addr(0x31));
        assert_ne!(cpu.rflags & flags::IF, 0);
    }

    #[test]
    fn long_mode_interrupt_with_ist_and_alignment() {
        let (cpu, bus, exit) = run_asm(
            TestMode::Long64,
            |a| {
                a.int(0x40)?;
                a.hlt()
            },
            |cpu, bus| {
                install_handlers(cpu, bus);
                set_idt64(bus, 0x40, sel::CODE64, handler_addr(0x40), 0x8e, 1);
                bus.put(0x3000 + 0x24, 8, 0x7f_0008); // IST1, misaligned
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], 0x40);
        assert_eq!(cpu.gpr[reg::RSP], 0x7f_0000 - 40);
        assert_eq!(rd(&bus, &cpu, 0, 8), CODE + 2);
        assert_eq!(rd(&bus, &cpu, 1, 8), sel::CODE64 as u64);
        assert_eq!(rd(&bus, &cpu, 3, 8), STACK);
        assert_eq!(rd(&bus, &cpu, 4, 8), sel::DATA32 as u64);
        // An exception with an error code, from a misaligned stack, without IST.
        let (cpu, bus, exit) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(eax, 0x78u32)?;
                a.mov(ds, ax)?;
                a.hlt()
            },
            |cpu, bus| {
                install_handlers(cpu, bus);
                cpu.gpr[reg::RSP] = 0x8f_fff8;
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], vector::GP as u64);
        assert_eq!(cpu.gpr[reg::RSP], 0x8f_fff0 - 48);
        assert_eq!(rd(&bus, &cpu, 0, 8), 0x78);
        assert_eq!(rd(&bus, &cpu, 1, 8), CODE + 5);
        assert_eq!(rd(&bus, &cpu, 4, 8), 0x8f_fff8);
    }

    #[test]
    fn long_mode_ring3_to_ring0_and_iretq() {
        let h = asm_at(64, H, |a| {
            a.mov(rsi, qword_ptr(rsp))?;
            a.mov(rdi, qword_ptr(rsp + 8))?;
            a.mov(rbp, qword_ptr(rsp + 32))?;
            a.mov(r8, ss)?;
            a.mov(r9, rsp)?;
            a.iretq()
        });
        let (cpu, bus, exit) = run_asm(
            TestMode::Long64,
            |a| {
                a.int(0x80)?;
                a.mov(ecx, 7u32)?;
                a.hlt()
            },
            |cpu, bus| {
                install_handlers(cpu, bus);
                set_idt64(bus, 0x80, sel::CODE64, H, 0xee, 0);
                bus.write(H, &h);
                // RSP0 is 8 bytes in a 64-bit TSS.
                bus.put(0x3004, 8, ESP0);
                to_user(cpu);
                cpu.gpr[8] = 0x1234;
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RSI], CODE + 2);
        assert_eq!(cpu.gpr[reg::RDI], sel::CODE64_USER as u64);
        assert_eq!(cpu.gpr[reg::RBP], sel::DATA32_USER as u64);
        assert_eq!(cpu.gpr[8], 0, "SS is a null selector with RPL 0");
        assert_eq!(cpu.gpr[9], ESP0 - 40);
        assert_eq!(cpu.gpr[reg::RCX], 7);
        assert_eq!(cpu.gpr[reg::RBX], vector::GP as u64);
        assert_eq!(cpu.gpr[reg::RSP], ESP0 - 48);
        assert_eq!(rd(&bus, &cpu, 1, 8), CODE + 2 + 5);
        assert_eq!(rd(&bus, &cpu, 4, 8), USER_STACK);
        assert_eq!(rd(&bus, &cpu, 5, 8), sel::DATA32_USER as u64);
        assert_eq!(cpu.mode, Mode::Long64);
    }

    #[test]
    fn v86_entry_by_iret_and_interrupt_back() {
        let v86 = asm_at(16, 0, |a| {
            a.mov(ax, 0x4000u32)?;
            a.mov(es, ax)?;
            a.mov(word_ptr(0), 0xbeefu32)?; // DS = 0x1234
            a.mov(word_ptr(0).es(), 0xcafeu32)?;
            a.int(0x20)
        });
        let enter = |iopl: u32| {
            move |a: &mut CodeAssembler| -> Result<(), IcedError> {
                for v in [
                    0u32,
                    0,
                    0x1234,
                    0,
                    0x6000,
                    0x1000,
                    0x2_0002 | (iopl << 12),
                    0x5000,
                    0,
                ] {
                    a.push(v)?;
                }
                a.iretd()
            }
        };
        let (cpu, bus, exit) = run_asm(TestMode::Protected32, enter(3), |cpu, bus| {
            install_handlers(cpu, bus);
            set_idt32(bus, 0x20, gate(sel::CODE32, handler_addr(0x20), 0xee, 0));
            bus.write(0x5_0000, &v86);
        });
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(bus.read(0x1_2340, 2), 0xbeef);
        assert_eq!(bus.read(0x4_0000, 2), 0xcafe);
        assert_eq!(cpu.gpr[reg::RBX], 0x20);
        assert_eq!((cpu.cpl, cpu.mode), (0, Mode::Protected));
        for s in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
            assert_eq!(cpu.sreg(s).selector, 0, "{s:?} nulled");
        }
        assert_eq!(cpu.gpr[reg::RSP], ESP0 - 36);
        let frame: Vec<u64> = (0..9).map(|i| rd(&bus, &cpu, i, 4)).collect();
        assert_eq!(frame[0], v86.len() as u64, "EIP after INT 0x20");
        assert_eq!(frame[1], 0x5000);
        assert_eq!(
            frame[2] & (flags::VM | flags::IOPL),
            flags::VM | flags::IOPL
        );
        assert_eq!(&frame[3..], &[0x1000, 0x6000, 0x4000, 0x1234, 0, 0]);
        assert_eq!(cpu.rflags & flags::VM, 0);

        // IOPL 0: INT n faults with #GP(0) from V86 mode (to ring 0).
        let (cpu, bus, exit) = run_asm(TestMode::Protected32, enter(0), |cpu, bus| {
            install_handlers(cpu, bus);
            bus.write(0x5_0000, &v86);
        });
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], vector::GP as u64);
        assert_eq!(cpu.gpr[reg::RSP], ESP0 - 40);
        assert_eq!(rd(&bus, &cpu, 0, 4), 0);
        assert_eq!(
            rd(&bus, &cpu, 1, 4),
            v86.len() as u64 - 2,
            "EIP of INT 0x20"
        );
    }

    #[test]
    fn v86_iret_and_hlt() {
        // In V86 mode with IOPL 3, IRET works like real mode; HLT faults.
        let v86 = asm_at(16, 0, |a| {
            a.push(0x0202u32)?; // FLAGS (IOPL bits ignored)
            a.push(0x5000u32)?;
            a.push(0x40u32)?;
            a.iret()
        });
        let (cpu, bus, exit) = run_asm(
            TestMode::Protected32,
            |a| {
                for v in [0u32, 0, 0, 0, 0x6000, 0x1000, 0x2_3002, 0x5000, 0] {
                    a.push(v)?;
                }
                a.iretd()
            },
            |cpu, bus| {
                install_handlers(cpu, bus);
                bus.write(0x5_0000, &v86);
                bus.write(0x5_0040, &[0xf4]);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], vector::GP as u64);
        assert_eq!(rd(&bus, &cpu, 1, 4), 0x40, "EIP of HLT");
        assert_eq!(
            rd(&bus, &cpu, 3, 4) & (flags::IF | flags::IOPL),
            flags::IF | flags::IOPL
        );
    }

    #[test]
    fn double_fault_escalation() {
        // #GP whose gate is not present: #NP during #GP delivery → #DF(0).
        let (cpu, bus, exit) = run_asm(
            TestMode::Protected32,
            |a| {
                a.mov(ax, 0x78u32)?;
                a.mov(ds, ax)?;
                a.hlt()
            },
            |cpu, bus| {
                install_handlers(cpu, bus);
                set_idt32(bus, vector::GP, gate(sel::CODE32, H, 0x0e, 0));
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], vector::DF as u64);
        assert_eq!(rd(&bus, &cpu, 0, 4), 0);
        assert_eq!(rd(&bus, &cpu, 1, 4), CODE + 4, "EIP of the faulting MOV DS");

        // #PF while pushing a #PF frame (IST stack unmapped) → #DF on IST2.
        let (cpu, bus, exit) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(rax, qword_ptr(0x5000_0000))?;
                a.hlt()
            },
            |cpu, bus| {
                install_handlers(cpu, bus);
                set_idt64(
                    bus,
                    vector::PF,
                    sel::CODE64,
                    handler_addr(vector::PF),
                    0x8e,
                    1,
                );
                set_idt64(
                    bus,
                    vector::DF,
                    sel::CODE64,
                    handler_addr(vector::DF),
                    0x8e,
                    2,
                );
                bus.put(0x3000 + 0x24, 8, 0x4000_1000);
                bus.put(0x3000 + 0x2c, 8, 0x7f_0000);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], vector::DF as u64);
        assert_eq!(cpu.cr2, 0x4000_0ff8);
        assert_eq!(rd(&bus, &cpu, 0, 8), 0);
        assert_eq!(cpu.gpr[reg::RSP], 0x7f_0000 - 48);

        // #PF while delivering #GP (contributory, then page fault): handled serially.
        let (cpu, bus, exit) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(eax, 0x78u32)?;
                a.mov(ds, ax)?;
                a.hlt()
            },
            |cpu, bus| {
                install_handlers(cpu, bus);
                set_idt64(
                    bus,
                    vector::GP,
                    sel::CODE64,
                    handler_addr(vector::GP),
                    0x8e,
                    1,
                );
                bus.put(0x3000 + 0x24, 8, 0x4000_1000);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], vector::PF as u64);
        assert_eq!(
            rd(&bus, &cpu, 0, 8),
            2,
            "#PF error code: supervisor write, not present"
        );
        assert_eq!(rd(&bus, &cpu, 1, 8), CODE + 5, "RIP of the MOV DS");
    }

    #[test]
    fn task_gate_stops_the_machine() {
        let (_, _, exit) = run_asm(
            TestMode::Protected32,
            |a| a.int(0x22),
            |cpu, bus| {
                install_handlers(cpu, bus);
                bus.put(IDT + 0x22 * 8, 8, gate(sel::TSS, 0, 0x85, 0));
            },
        );
        assert!(matches!(stop_kind(exit), StopKind::Unsupported(s) if s.contains("task gate")));
        let (_, _, exit) = run_asm(
            TestMode::Protected32,
            |a| a.iretd(),
            |cpu, _| cpu.rflags |= flags::NT,
        );
        assert!(matches!(stop_kind(exit), StopKind::Unsupported(s) if s.contains("task return")));
    }

    #[test]
    fn iret_to_ring3_and_flag_rules() {
        let user = asm_at(32, H, |a| {
            // At CPL 3 with IOPL 0, IRET cannot change IF or IOPL.
            a.push(0x3002u32)?;
            a.push(sel::CODE32_USER as u32)?;
            a.push((H + 0x40) as u32)?;
            a.iretd()
        });
        let (cpu, bus, exit) = run_asm(
            TestMode::Protected32,
            |a| {
                a.mov(ax, sel::DATA32_USER as u32)?;
                a.mov(fs, ax)?;
                a.push(sel::DATA32_USER as u32)?;
                a.push(USER_STACK as u32)?;
                a.push(0x202u32)?;
                a.push(sel::CODE32_USER as u32)?;
                a.push(H as u32)?;
                a.iretd()
            },
            |cpu, bus| {
                install_handlers(cpu, bus);
                set_idt32(bus, 0x81, gate(sel::CODE32, handler_addr(0x81), 0xee, 0));
                bus.write(H, &user);
                bus.write(H + 0x40, &[0xcd, 0x81]);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], 0x81);
        // DS/ES/GS (DPL 0) were nulled on the way to ring 3; FS (DPL 3) kept.
        for s in [SegReg::Ds, SegReg::Es, SegReg::Gs] {
            assert_eq!((cpu.sreg(s).selector, cpu.sreg(s).attr), (0, 0), "{s:?}");
        }
        assert_eq!(cpu.sreg(SegReg::Fs).selector, sel::DATA32_USER);
        let fl = rd(&bus, &cpu, 2, 4);
        assert_eq!(
            fl & (flags::IF | flags::IOPL),
            flags::IF,
            "IF kept, IOPL unchanged"
        );
        assert_eq!(rd(&bus, &cpu, 3, 4), USER_STACK);
    }
}
