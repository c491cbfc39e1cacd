//! Far control transfers: JMP far, CALL far and RET far (RETF, RETF imm16)
//! in real, virtual-8086, protected and IA-32e mode, following the SDM
//! pseudo-code: conforming and non-conforming code segments, call gates
//! (16/32-bit in legacy mode, 64-bit in long mode) with the stack switch
//! through the TSS and parameter copy on a call to an inner privilege
//! level, and returns to an outer privilege level that pop SS:ESP and null
//! the data segment registers the new CPL may not use. Far transfers between
//! 64-bit and compatibility code follow from the target's L bit.
//!
//! Not supported: task switches (a far JMP/CALL to a TSS or task gate stops
//! the machine with `StopKind::Unsupported`).

use iced_x86::{Code, Instruction};

use crate::block::Handler;
use crate::fault::{Fault, Result, StopKind};
use crate::interp::descriptor::{is_null, null_ss, real_segment, sel_code, v86_segment, Desc, StackBuilder};
use crate::interp::operand::{addr_mask, addr_size, mem_operand};
use crate::interp::Ctx;
use crate::memory::is_canonical;
use crate::state::{cr, reg, Mode, SegReg};

/// The handler for `insn` if this group implements it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    use Code::*;
    Some(match insn.code() {
        Jmp_ptr1616 | Jmp_ptr1632 | Jmp_m1616 | Jmp_m1632 | Jmp_m1664 => jmp_far,
        Call_ptr1616 | Call_ptr1632 | Call_m1616 | Call_m1632 | Call_m1664 => call_far,
        Retfw | Retfd | Retfq | Retfw_imm16 | Retfd_imm16 | Retfq_imm16 => ret_far,
        _ => return None,
    })
}

/// Target selector, offset and operand size of a far JMP/CALL.
fn far_target(ctx: &mut Ctx, insn: &Instruction) -> Result<(u16, u64, u8)> {
    use Code::*;
    Ok(match insn.code() {
        Jmp_ptr1616 | Call_ptr1616 => (insn.far_branch_selector(), insn.far_branch16() as u64, 2),
        Jmp_ptr1632 | Call_ptr1632 => (insn.far_branch_selector(), insn.far_branch32() as u64, 4),
        code => {
            let size: u8 = match code {
                Jmp_m1616 | Call_m1616 => 2,
                Jmp_m1632 | Call_m1632 => 4,
                _ => 8,
            };
            let (s, off) = mem_operand(ctx.cpu, insn);
            let offset = ctx.read_seg(s, off, size)?;
            let sel_off = off.wrapping_add(size as u64) & addr_mask(addr_size(insn));
            let sel = ctx.read_seg(s, sel_off, 2)? as u16;
            (sel, offset, size)
        }
    })
}

/// Instruction-pointer mask of an operand size.
#[inline]
fn ip_mask(size: u8) -> u64 {
    match size {
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

fn jmp_far(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let (sel, off, size) = far_target(ctx, insn)?;
    match ctx.cpu.mode {
        Mode::Real | Mode::Virtual8086 => ctx.far_real(sel, off, size, false),
        _ => ctx.far_protected(sel, off, size, false),
    }
}

fn call_far(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let (sel, off, size) = far_target(ctx, insn)?;
    match ctx.cpu.mode {
        Mode::Real | Mode::Virtual8086 => ctx.far_real(sel, off, size, true),
        _ => ctx.far_protected(sel, off, size, true),
    }
}

impl Ctx<'_> {
    /// Far JMP/CALL in real or virtual-8086 mode.
    fn far_real(&mut self, sel: u16, ip: u64, size: u8, call: bool) -> Result<()> {
        let v86 = self.cpu.mode == Mode::Virtual8086;
        let cs = self.cpu.seg[SegReg::Cs as usize];
        // Real mode keeps the CS limit across loads; V86 segments are 64 KiB.
        let limit = if v86 { 0xffff } else { cs.limit as u64 };
        let mut st = StackBuilder::new(self.cpu.seg[SegReg::Ss as usize], self.sp(), false, Fault::ss(0));
        if call {
            st.push(size, cs.selector as u64)?;
            st.push(size, self.cpu.rip)?;
        }
        if ip > limit {
            return Err(Fault::gp(0));
        }
        st.probe(self, self.cpu.cpl == 3)?;
        self.cpu.seg[SegReg::Cs as usize] = if v86 { v86_segment(sel) } else { real_segment(cs, sel) };
        self.cpu.rip = ip;
        if call {
            self.set_sp(st.sp);
        }
        self.cpu.update_mode();
        st.commit(self)
    }

    /// Far JMP/CALL in protected or IA-32e mode.
    fn far_protected(&mut self, sel: u16, offset: u64, size: u8, call: bool) -> Result<()> {
        if is_null(sel) {
            return Err(Fault::gp(0));
        }
        let gp = Fault::gp(sel_code(sel));
        let long_mode = self.cpu.efer & cr::EFER_LMA != 0;
        let Some((d, addr)) = self.read_desc_long(sel)? else {
            return Err(gp);
        };
        let cpl = self.cpu.cpl;
        let rpl = (sel & 3) as u8;
        if d.is_seg() {
            if !d.is_code() || (long_mode && d.long() && d.db()) {
                return Err(gp);
            }
            if d.conforming() {
                if d.dpl() > cpl {
                    return Err(gp);
                }
            } else if rpl > cpl || d.dpl() != cpl {
                return Err(gp);
            }
            if !d.present() {
                return Err(Fault::np(sel_code(sel)));
            }
            let to64 = long_mode && d.long();
            let ip = offset & if to64 { ip_mask(size) } else { ip_mask(size.min(4)) };
            return self.same_privilege(sel, &d, addr, ip, size, to64, call);
        }
        let ty = d.sys_type();
        let valid = if long_mode { ty == 0xc } else { matches!(ty, 1 | 4 | 5 | 9 | 0xc) };
        if !valid {
            return Err(gp);
        }
        if d.dpl() < cpl || d.dpl() < rpl {
            return Err(gp);
        }
        if !d.present() {
            return Err(Fault::np(sel_code(sel)));
        }
        if matches!(ty, 1 | 5 | 9) {
            return Err(Fault::Stop(StopKind::Unsupported(format!(
                "task switch by far {} to selector {sel:#x}",
                if call { "CALL" } else { "JMP" }
            ))));
        }
        if long_mode && d.upper_type() != 0 {
            return Err(gp);
        }
        self.call_gate(&d, call)
    }

    /// JMP/CALL to a code segment (directly or through a call gate) without
    /// a privilege change: CS.RPL becomes CPL.
    #[allow(clippy::too_many_arguments)]
    fn same_privilege(&mut self, sel: u16, d: &Desc, addr: u64, ip: u64, size: u8, to64: bool, call: bool) -> Result<()> {
        let cpl = self.cpu.cpl;
        let mut st = StackBuilder::new(
            self.cpu.seg[SegReg::Ss as usize],
            self.sp(),
            self.cpu.bitness == 64,
            Fault::ss(0),
        );
        if call {
            st.push(size, self.cpu.seg[SegReg::Cs as usize].selector as u64)?;
            st.push(size, self.cpu.rip)?;
        }
        if to64 {
            if !is_canonical(ip) {
                return Err(Fault::gp(0));
            }
        } else if ip > d.limit() as u64 {
            return Err(Fault::gp(0));
        }
        st.probe(self, cpl == 3)?;
        self.set_accessed(addr, d)?;
        if call {
            self.set_sp(st.sp);
        }
        self.cpu.seg[SegReg::Cs as usize] = d.segment((sel & !3) | cpl as u16);
        self.cpu.rip = ip;
        self.cpu.update_mode();
        st.commit(self)
    }

    /// JMP/CALL through a call gate `gate` (already checked for type, DPL and presence).
    fn call_gate(&mut self, gate: &Desc, call: bool) -> Result<()> {
        let cpl = self.cpu.cpl;
        let long_mode = self.cpu.efer & cr::EFER_LMA != 0;
        let cs_sel = gate.gate_selector();
        if is_null(cs_sel) {
            return Err(Fault::gp(0));
        }
        let gp = Fault::gp(sel_code(cs_sel));
        let Some((cd, cs_addr)) = self.read_desc(cs_sel)? else {
            return Err(gp);
        };
        if !cd.is_code() {
            return Err(gp);
        }
        let bad_dpl = if call {
            cd.dpl() > cpl
        } else {
            (cd.conforming() && cd.dpl() > cpl) || (!cd.conforming() && cd.dpl() != cpl)
        };
        if bad_dpl || (long_mode && (!cd.long() || cd.db())) {
            return Err(gp);
        }
        if !cd.present() {
            return Err(Fault::np(sel_code(cs_sel)));
        }
        let gate_size: u8 = if long_mode {
            8
        } else if gate.sys_type() == 0xc {
            4
        } else {
            2
        };
        let ip = gate.gate_offset() & ip_mask(gate_size);
        if !call || cd.conforming() || cd.dpl() == cpl {
            return self.same_privilege(cs_sel, &cd, cs_addr, ip, gate_size, long_mode, call);
        }

        // CALL to an inner privilege level: new stack from the TSS.
        let new_cpl = cd.dpl();
        let old_ss = self.cpu.seg[SegReg::Ss as usize].selector as u64;
        let old_sp = self.cpu.gpr[reg::RSP];
        let old_cs = self.cpu.seg[SegReg::Cs as usize].selector as u64;
        let old_ip = self.cpu.rip;
        if long_mode {
            let rsp = self.tss_stack_long(new_cpl, 0, 0)?;
            let mut st = StackBuilder::new(null_ss(new_cpl), rsp, true, Fault::ss(0));
            st.push(8, old_ss)?;
            st.push(8, old_sp)?;
            st.push(8, old_cs)?;
            st.push(8, old_ip)?;
            if !is_canonical(ip) {
                return Err(Fault::gp(0));
            }
            st.probe(self, false)?;
            self.set_accessed(cs_addr, &cd)?;
            self.cpu.seg[SegReg::Ss as usize] = null_ss(new_cpl);
            self.cpu.gpr[reg::RSP] = st.sp;
            self.finish_inner_call(&st, cs_sel, &cd, ip)
        } else {
            let (ss_sel, esp) = self.tss_stack_legacy(new_cpl, 0)?;
            let (ss_seg, ss_addr, ss_desc) = self.inner_stack_segment(ss_sel, new_cpl, 0)?;
            let mut st = StackBuilder::new(ss_seg, esp, false, Fault::ss(sel_code(ss_sel)));
            st.push(gate_size, old_ss)?;
            st.push(gate_size, old_sp)?;
            // Copy the parameters, keeping their order on the new stack.
            let count = gate.gate_params() as u64;
            let old_mask = crate::interp::stack::ss_mask(self.cpu.stack_size());
            let base_sp = self.sp();
            for i in (0..count).rev() {
                let off = base_sp.wrapping_add(i * gate_size as u64) & old_mask;
                let v = self.read_seg(SegReg::Ss, off, gate_size)?;
                st.push(gate_size, v)?;
            }
            st.push(gate_size, old_cs)?;
            st.push(gate_size, old_ip)?;
            if ip > cd.limit() as u64 {
                return Err(Fault::gp(0));
            }
            st.probe(self, false)?;
            self.set_accessed(cs_addr, &cd)?;
            self.set_accessed(ss_addr, &ss_desc)?;
            self.cpu.seg[SegReg::Ss as usize] = ss_seg;
            self.cpu.gpr[reg::RSP] = ((esp & !st.mask()) | st.sp) & 0xffff_ffff;
            self.finish_inner_call(&st, cs_sel, &cd, ip)
        }
    }

    fn finish_inner_call(&mut self, st: &StackBuilder, cs_sel: u16, cd: &Desc, ip: u64) -> Result<()> {
        let new_cpl = cd.dpl();
        self.cpu.seg[SegReg::Cs as usize] = cd.segment((cs_sel & !3) | new_cpl as u16);
        self.cpu.cpl = new_cpl;
        self.cpu.rip = ip;
        self.cpu.update_mode();
        st.commit(self)
    }

    /// Reads and checks the code segment RET far or IRET returns to.
    pub(super) fn return_code_segment(&mut self, sel: u16) -> Result<(Desc, u64)> {
        if is_null(sel) {
            return Err(Fault::gp(0));
        }
        let gp = Fault::gp(sel_code(sel));
        let Some((d, addr)) = self.read_desc(sel)? else {
            return Err(gp);
        };
        if !d.is_code() || (self.cpu.efer & cr::EFER_LMA != 0 && d.long() && d.db()) {
            return Err(gp);
        }
        let rpl = (sel & 3) as u8;
        if rpl < self.cpu.cpl {
            return Err(gp);
        }
        if (d.conforming() && d.dpl() > rpl) || (!d.conforming() && d.dpl() != rpl) {
            return Err(gp);
        }
        if !d.present() {
            return Err(Fault::np(sel_code(sel)));
        }
        Ok((d, addr))
    }
}

fn ret_far(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    use Code::*;
    let size: u8 = match insn.code() {
        Retfw | Retfw_imm16 => 2,
        Retfd | Retfd_imm16 => 4,
        _ => 8,
    };
    let imm = match insn.code() {
        Retfw_imm16 | Retfd_imm16 | Retfq_imm16 => insn.immediate16() as u64,
        _ => 0,
    };
    let ip = ctx.peek(0, size)?;
    let cs_sel = ctx.peek(size as u64, size)? as u16;
    let frame = 2 * size as u64 + imm;
    match ctx.cpu.mode {
        Mode::Real | Mode::Virtual8086 => {
            let v86 = ctx.cpu.mode == Mode::Virtual8086;
            let cs = ctx.cpu.seg[SegReg::Cs as usize];
            let limit = if v86 { 0xffff } else { cs.limit as u64 };
            if ip > limit {
                return Err(Fault::gp(0));
            }
            let sp = ctx.sp().wrapping_add(frame);
            ctx.set_sp(sp);
            ctx.cpu.seg[SegReg::Cs as usize] = if v86 { v86_segment(cs_sel) } else { real_segment(cs, cs_sel) };
            ctx.cpu.rip = ip;
            ctx.cpu.update_mode();
            return Ok(());
        }
        _ => {}
    }
    let cpl = ctx.cpu.cpl;
    let (cd, cs_addr) = ctx.return_code_segment(cs_sel)?;
    let rpl = (cs_sel & 3) as u8;
    let to64 = ctx.cpu.efer & cr::EFER_LMA != 0 && cd.long();
    let check_ip = |ip: u64| {
        if to64 {
            if !is_canonical(ip) {
                return Err(Fault::gp(0));
            }
        } else if ip > cd.limit() as u64 {
            return Err(Fault::gp(0));
        }
        Ok(())
    };
    if rpl > cpl {
        // Return to an outer privilege level: SS:ESP follow the parameters.
        let sp = ctx.peek(frame, size)?;
        let ss_sel = ctx.peek(frame + size as u64, size)? as u16;
        let (ss_seg, ss_acc) = ctx.outer_stack_segment(ss_sel, rpl, to64)?;
        check_ip(ip)?;
        ctx.set_accessed(cs_addr, &cd)?;
        if let Some((a, d)) = ss_acc {
            ctx.set_accessed(a, &d)?;
        }
        ctx.cpu.seg[SegReg::Cs as usize] = cd.segment(cs_sel);
        ctx.cpu.seg[SegReg::Ss as usize] = ss_seg;
        ctx.cpu.cpl = rpl;
        ctx.cpu.rip = ip;
        ctx.cpu.update_mode();
        // The immediate also releases parameters from the caller's stack.
        let size_mask = crate::interp::stack::ss_mask(ctx.cpu.stack_size());
        ctx.set_sp(sp.wrapping_add(imm) & size_mask);
        ctx.invalidate_data_segments();
    } else {
        check_ip(ip)?;
        ctx.set_accessed(cs_addr, &cd)?;
        let sp = ctx.sp().wrapping_add(frame);
        ctx.set_sp(sp);
        ctx.cpu.seg[SegReg::Cs as usize] = cd.segment(cs_sel);
        ctx.cpu.rip = ip;
        ctx.cpu.update_mode();
    }
    Ok(())
}
