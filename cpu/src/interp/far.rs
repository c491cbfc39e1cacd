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
use crate::interp::descriptor::{
    is_null, null_ss, real_segment, sel_code, v86_segment, Desc, StackBuilder,
};
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
        let mut st = StackBuilder::new(
            self.cpu.seg[SegReg::Ss as usize],
            self.sp(),
            false,
            Fault::ss(0),
        );
        if call {
            st.push(size, cs.selector as u64)?;
            st.push(size, self.cpu.rip)?;
        }
        if ip > limit {
            return Err(Fault::gp(0));
        }
        st.probe(self, self.cpu.cpl == 3)?;
        self.cpu.seg[SegReg::Cs as usize] = if v86 {
            v86_segment(sel)
        } else {
            real_segment(cs, sel)
        };
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
            let ip = offset
                & if to64 {
                    ip_mask(size)
                } else {
                    ip_mask(size.min(4))
                };
            return self.same_privilege(sel, &d, addr, ip, size, to64, call);
        }
        let ty = d.sys_type();
        let valid = if long_mode {
            ty == 0xc
        } else {
            matches!(ty, 1 | 4 | 5 | 9 | 0xc)
        };
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
    fn same_privilege(
        &mut self,
        sel: u16,
        d: &Desc,
        addr: u64,
        ip: u64,
        size: u8,
        to64: bool,
        call: bool,
    ) -> Result<()> {
        let cpl = self.cpu.cpl;
        // 64-bit mode, or a 64-bit call gate (also from compatibility mode):
        // the pushes use the 64-bit RSP.
        let long_stack = self.cpu.bitness == 64 || size == 8;
        let sp = if long_stack {
            self.cpu.gpr[reg::RSP]
        } else {
            self.sp()
        };
        let mut st = StackBuilder::new(
            self.cpu.seg[SegReg::Ss as usize],
            sp,
            long_stack,
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
            if long_stack {
                self.cpu.gpr[reg::RSP] = st.sp;
            } else {
                self.set_sp(st.sp);
            }
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

    fn finish_inner_call(
        &mut self,
        st: &StackBuilder,
        cs_sel: u16,
        cd: &Desc,
        ip: u64,
    ) -> Result<()> {
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
            ctx.cpu.seg[SegReg::Cs as usize] = if v86 {
                v86_segment(cs_sel)
            } else {
                real_segment(cs, cs_sel)
            };
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

#[cfg(test)]
mod tests {
    use crate::fault::{vector, StopKind};
    use crate::interp::descriptor::testkit::*;
    use crate::interp::RunExit;
    use crate::state::{reg, Cpu, Mode, SegReg};
    use crate::testutil::{run_asm, sel, TestBus, TestMode, CODE, DATA, STACK};
    use iced_x86::code_asm::*;

    const H: u64 = 0x21_0000;

    fn rd(bus: &TestBus, cpu: &Cpu, slot: u64, size: u64) -> u64 {
        let m = if cpu.bitness == 64 {
            u64::MAX
        } else {
            0xffff_ffff
        };
        bus.read((cpu.gpr[reg::RSP] & m) + slot * size, size as usize)
    }

    #[test]
    fn real_mode_far_call_ret_jmp() {
        let sub = asm_at(16, 0x10, |a| {
            a.mov(bx, 0x22u32)?;
            a.retf_1(2)
        });
        let (cpu, _, exit) = run_asm(
            TestMode::Real,
            |a| {
                a.push(0x77u32)?;
                a.call_far(0x2000, 0x10)?;
                a.mov(cx, 1u32)?;
                a.jmp_far(0x3000, 0x4)
            },
            |_, bus| {
                bus.write(0x2_0010, &sub);
                bus.write(0x3_0004, &[0xf4]);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX] & 0xffff, 0x22);
        assert_eq!(cpu.gpr[reg::RCX] & 0xffff, 1);
        assert_eq!(cpu.gpr[reg::RSP], 0x8000);
        assert_eq!(
            (cpu.sreg(SegReg::Cs).selector, cpu.sreg(SegReg::Cs).base),
            (0x3000, 0x3_0000)
        );
        assert_eq!(cpu.rip, 5);
    }

    #[test]
    fn protected_far_call_and_ret_same_privilege() {
        let sub32 = asm_at(32, H, |a| {
            a.mov(ebx, esp)?;
            a.retf()
        });
        // 16-bit code segment (limit 64 KiB) returning to 32-bit code with o32 RETF.
        let sub16 = asm_at(16, 0x8000, |a| {
            a.mov(dx, 0x1616u32)?;
            a.db(&[0x66, 0xcb])
        });
        let (cpu, _, exit) = run_asm(
            TestMode::Protected32,
            |a| {
                a.call_far(sel::CODE32, H as u32)?;
                a.call_far(sel::CODE16, 0x8000)?;
                a.mov(esi, esp)?;
                a.hlt()
            },
            |_, bus| {
                bus.write(H, &sub32);
                bus.write(0x8000, &sub16);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], STACK - 8);
        assert_eq!(cpu.gpr[reg::RDX] & 0xffff, 0x1616);
        assert_eq!(cpu.gpr[reg::RSI], STACK);
        assert_eq!(
            (cpu.bitness, cpu.sreg(SegReg::Cs).selector),
            (32, sel::CODE32)
        );
    }

    /// Runs `build` (after setting EBX to -1) with fault handlers installed.
    fn faulting(
        mode: TestMode,
        build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
        setup: impl FnOnce(&mut Cpu, &mut TestBus),
    ) -> (Cpu, TestBus, RunExit) {
        run_asm(
            mode,
            |a| {
                a.mov(ebx, 0xffff_ffffu32)?;
                build(a)
            },
            |cpu, bus| {
                install_handlers(cpu, bus);
                set_gdt(cpu, bus, 11, seg_desc(0, 0xfffff, 0x1a, 0xc)); // 0x58: code, not present
                set_gdt(cpu, bus, 13, seg_desc(0, 0xfffff, 0x9e, 0xc)); // 0x68: conforming code, DPL 0
                setup(cpu, bus);
            },
        )
    }

    #[test]
    fn far_jmp_checks() {
        let cases: [(u16, u32, u8, u64); 6] = [
            (sel::DATA32, 0, vector::GP, sel::DATA32 as u64),
            (0x58, 0, vector::NP, 0x58),
            (0x3, 0, vector::GP, 0),
            (sel::CODE32_USER, 0, vector::GP, 0x30), // DPL 3 non-conforming at CPL 0
            (sel::CODE16, 0x2_0000, vector::GP, 0),  // beyond the limit
            (sel::CODE32 | 3, 0, vector::GP, sel::CODE32 as u64), // RPL > CPL
        ];
        for (i, (s, off, v, e)) in cases.into_iter().enumerate() {
            let (cpu, bus, exit) =
                faulting(TestMode::Protected32, |a| a.jmp_far(s, off), |_, _| {});
            assert_eq!(exit, RunExit::Halted, "case {i}");
            assert_eq!(
                (cpu.gpr[reg::RBX] as u8, rd(&bus, &cpu, 0, 4)),
                (v, e),
                "case {i}"
            );
        }
        // A conforming segment keeps CPL 3 and gets RPL 3.
        let (cpu, bus, exit) = faulting(
            TestMode::Protected32,
            |a| a.jmp_far(0x68, H as u32),
            |cpu, bus| {
                to_user(cpu);
                set_idt32(bus, 0x81, gate(sel::CODE32, handler_addr(0x81), 0xee, 0));
                bus.write(H, &[0xcd, 0x81]);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], 0x81);
        assert_eq!(
            rd(&bus, &cpu, 1, 4),
            0x6b,
            "CS pushed by INT: conforming, RPL = CPL 3"
        );
        // A far JMP to a TSS is a task switch.
        let (_, _, exit) = faulting(TestMode::Protected32, |a| a.jmp_far(sel::TSS, 0), |_, _| {});
        assert!(
            matches!(exit, RunExit::Stop(s) if matches!(&s.kind, StopKind::Unsupported(m) if m.contains("task switch")))
        );
    }

    #[test]
    fn call_gate_to_ring0_with_parameters() {
        let h = asm_at(32, H, |a| {
            a.mov(esi, dword_ptr(esp + 8))?;
            a.mov(ebp, dword_ptr(esp + 12))?;
            a.mov(ecx, dword_ptr(esp + 4))?;
            a.mov(edx, dword_ptr(esp + 16))?;
            a.mov(eax, esp)?;
            a.retf_1(8)
        });
        let (cpu, bus, exit) = faulting(
            TestMode::Protected32,
            |a| {
                a.push(0x11)?;
                a.push(0x22)?;
                a.call_far(0x63, 0)?;
                a.mov(edi, esp)?;
                a.int(0x81)
            },
            |cpu, bus| {
                set_gdt(cpu, bus, 12, gate(sel::CODE32, H, 0xec, 2)); // 0x60: DPL-3 32-bit call gate
                set_idt32(bus, 0x81, gate(sel::CODE32, handler_addr(0x81), 0xee, 0));
                bus.write(H, &h);
                to_user(cpu);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], 0x81);
        assert_eq!(
            (cpu.gpr[reg::RSI], cpu.gpr[reg::RBP]),
            (0x22, 0x11),
            "parameters copied in order"
        );
        assert_eq!(cpu.gpr[reg::RCX], sel::CODE32_USER as u64);
        assert_eq!(cpu.gpr[reg::RDX], USER_STACK - 8);
        assert_eq!(cpu.gpr[reg::RAX], ESP0 - 24);
        assert_eq!(
            cpu.gpr[reg::RDI],
            USER_STACK,
            "RETF 8 released the parameters on both stacks"
        );
        // Back at CPL 3 before INT 0x81: its frame holds the user SS:ESP.
        assert_eq!(rd(&bus, &cpu, 3, 4), USER_STACK);
        assert_eq!(rd(&bus, &cpu, 4, 4), sel::DATA32_USER as u64);
        // The gate's DPL must be ≥ CPL: a DPL-0 gate from CPL 3 is #GP(gate).
        let (cpu, bus, _) = faulting(
            TestMode::Protected32,
            |a| a.call_far(0x60, 0),
            |cpu, bus| {
                set_gdt(cpu, bus, 12, gate(sel::CODE32, H, 0x8c, 0));
                to_user(cpu);
            },
        );
        assert_eq!(
            (cpu.gpr[reg::RBX] as u8, rd(&bus, &cpu, 0, 4)),
            (vector::GP, 0x60)
        );
    }

    #[test]
    fn long_mode_far_transfers_between_64_and_compat() {
        let compat = asm_at(32, 0x11_0000, |a| {
            a.mov(eax, 0x32u32)?;
            a.jmp_far(sel::CODE64, 0x12_0000)
        });
        let back64 = asm_at(64, 0x12_0000, |a| {
            a.call(fword_ptr(DATA + 8))?;
            a.hlt()
        });
        let sub = asm_at(32, 0x13_0000, |a| {
            a.mov(ecx, 0x99u32)?;
            a.mov(edx, esp)?;
            a.retf()
        });
        let (cpu, _, exit) = run_asm(
            TestMode::Long64,
            |a| a.jmp(fword_ptr(DATA)),
            |_, bus| {
                bus.put(DATA, 4, 0x11_0000);
                bus.put(DATA + 4, 2, sel::CODE32 as u64);
                bus.put(DATA + 8, 4, 0x13_0000);
                bus.put(DATA + 12, 2, sel::CODE32 as u64);
                bus.write(0x11_0000, &compat);
                bus.write(0x12_0000, &back64);
                bus.write(0x13_0000, &sub);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RAX], 0x32);
        assert_eq!(cpu.gpr[reg::RCX], 0x99);
        assert_eq!(cpu.gpr[reg::RDX], STACK - 8);
        assert_eq!(cpu.gpr[reg::RSP], STACK);
        assert_eq!((cpu.mode, cpu.rip), (Mode::Long64, 0x12_0000 + 8));
    }

    #[test]
    fn long_mode_call_gate_and_retfq_to_ring3() {
        let h = asm_at(64, H, |a| {
            a.mov(rsi, qword_ptr(rsp))?;
            a.mov(rdi, qword_ptr(rsp + 8))?;
            a.mov(rbp, qword_ptr(rsp + 16))?;
            a.mov(rdx, qword_ptr(rsp + 24))?;
            a.mov(r8, ss)?;
            a.mov(r9, rsp)?;
            a.db(&[0x48, 0xcb])
        });
        let (cpu, bus, exit) = faulting(
            TestMode::Long64,
            |a| {
                a.call(fword_ptr(DATA))?;
                a.int(0x81)
            },
            |cpu, bus| {
                set_gdt(cpu, bus, 12, gate(sel::CODE64, H, 0xec, 0)); // 0x60: 64-bit call gate, DPL 3
                set_gdt(cpu, bus, 13, H >> 32);
                set_idt64(bus, 0x81, sel::CODE64, handler_addr(0x81), 0xee, 0);
                bus.put(DATA, 4, 0);
                bus.put(DATA + 4, 2, 0x63);
                bus.put(0x3004, 8, ESP0);
                bus.write(H, &h);
                to_user(cpu);
                cpu.gpr[8] = 0x1234;
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], 0x81);
        assert_eq!(cpu.gpr[reg::RSI], CODE + 5 + 7);
        assert_eq!(cpu.gpr[reg::RDI], sel::CODE64_USER as u64);
        assert_eq!(cpu.gpr[reg::RBP], USER_STACK);
        assert_eq!(cpu.gpr[reg::RDX], sel::DATA32_USER as u64);
        assert_eq!(cpu.gpr[8], 0, "null SS with RPL 0");
        assert_eq!(cpu.gpr[9], ESP0 - 32);
        // The INT 0x81 frame shows the restored user stack and CS.
        assert_eq!(rd(&bus, &cpu, 1, 8), sel::CODE64_USER as u64);
        assert_eq!(rd(&bus, &cpu, 3, 8), USER_STACK);
    }

    #[test]
    fn compat_mode_call_through_64_bit_gate() {
        let compat = asm_at(32, 0x11_0000, |a| {
            a.call_far(0x60, 0)?;
            a.mov(edi, esp)?;
            a.hlt()
        });
        let h = asm_at(64, H, |a| {
            a.mov(rsi, rsp)?;
            a.mov(rdx, qword_ptr(rsp + 8))?;
            a.db(&[0x48, 0xcb]) // RETFQ back to compatibility mode
        });
        let (cpu, _, exit) = faulting(
            TestMode::Long64,
            |a| a.jmp(fword_ptr(DATA)),
            |cpu, bus| {
                set_gdt(cpu, bus, 12, gate(sel::CODE64, H, 0x8c, 0));
                set_gdt(cpu, bus, 13, 0);
                bus.put(DATA, 4, 0x11_0000);
                bus.put(DATA + 4, 2, sel::CODE32 as u64);
                bus.write(0x11_0000, &compat);
                bus.write(H, &h);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], 0xffff_ffff, "no fault");
        assert_eq!(
            cpu.gpr[reg::RSI],
            STACK - 16,
            "8-byte pushes on the 64-bit stack"
        );
        assert_eq!(cpu.gpr[reg::RDX], sel::CODE32 as u64);
        assert_eq!(cpu.gpr[reg::RDI], STACK);
        assert_eq!((cpu.mode, cpu.bitness), (Mode::Compat, 32));
    }
}
