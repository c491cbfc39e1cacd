//! Near control transfers: JMP (relative and r/m), Jcc, CALL (relative and
//! r/m), RET and RET imm16, LOOP/LOOPE/LOOPNE and JCXZ/JECXZ/JRCXZ.
//! Far JMP/CALL/RET live in `far.rs`; INT/IRET in `interrupt.rs`.
//!
//! Every branch validates its target before changing anything: beyond the CS
//! limit in legacy modes, or non-canonical in 64-bit mode, is #GP(0) reported
//! at the branch itself (the run loop restores RIP on an error), with RSP, the
//! counter register and memory untouched. CALL pushes its return address only
//! after the target passed, and commits RIP only after the push succeeded.
//!
//! Targets wrap at the operand size: iced already truncates relative targets
//! (`near_branch_target`) to 16 or 32 bits for 16/32-bit operand sizes, and
//! r/m or popped targets are read at the operand size (zero-extended).

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use crate::block::Handler;
use crate::fault::{Fault, Result};
use crate::flags;
use crate::interp::data::cc;
use crate::interp::operand::addr_mask;
use crate::interp::stack::write_gpr;
use crate::interp::Ctx;
use crate::memory::is_canonical;
use crate::state::{reg, SegReg};

/// The handler for `insn` if this group implements it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    use Code::*;
    let h: Handler = match insn.code() {
        Jmp_rel8_16 | Jmp_rel8_32 | Jmp_rel8_64 | Jmp_rel16 | Jmp_rel32_32 | Jmp_rel32_64 => {
            jmp_rel
        }
        Jmp_rm16 => jmp_rm::<2>,
        Jmp_rm32 => jmp_rm::<4>,
        Jmp_rm64 => jmp_rm::<8>,
        Call_rel16 => call_rel::<2>,
        Call_rel32_32 => call_rel::<4>,
        Call_rel32_64 => call_rel::<8>,
        Call_rm16 => call_rm::<2>,
        Call_rm32 => call_rm::<4>,
        Call_rm64 => call_rm::<8>,
        Retnw => ret::<2>,
        Retnd => ret::<4>,
        Retnq => ret::<8>,
        Retnw_imm16 => ret_imm::<2>,
        Retnd_imm16 => ret_imm::<4>,
        Retnq_imm16 => ret_imm::<8>,
        Loop_rel8_16_CX | Loop_rel8_32_CX => loop_::<2, LOOP>,
        Loop_rel8_16_ECX | Loop_rel8_32_ECX | Loop_rel8_64_ECX => loop_::<4, LOOP>,
        Loop_rel8_16_RCX | Loop_rel8_64_RCX => loop_::<8, LOOP>,
        Loope_rel8_16_CX | Loope_rel8_32_CX => loop_::<2, LOOPE>,
        Loope_rel8_16_ECX | Loope_rel8_32_ECX | Loope_rel8_64_ECX => loop_::<4, LOOPE>,
        Loope_rel8_16_RCX | Loope_rel8_64_RCX => loop_::<8, LOOPE>,
        Loopne_rel8_16_CX | Loopne_rel8_32_CX => loop_::<2, LOOPNE>,
        Loopne_rel8_16_ECX | Loopne_rel8_32_ECX | Loopne_rel8_64_ECX => loop_::<4, LOOPNE>,
        Loopne_rel8_16_RCX | Loopne_rel8_64_RCX => loop_::<8, LOOPNE>,
        Jcxz_rel8_16 | Jcxz_rel8_32 => jcxz::<2>,
        Jecxz_rel8_16 | Jecxz_rel8_32 | Jecxz_rel8_64 => jcxz::<4>,
        Jrcxz_rel8_16 | Jrcxz_rel8_64 => jcxz::<8>,
        _ => {
            // Jcc: every near conditional branch with a relative target.
            let is_jcc = matches!(
                insn.mnemonic(),
                Mnemonic::Jo
                    | Mnemonic::Jno
                    | Mnemonic::Jb
                    | Mnemonic::Jae
                    | Mnemonic::Je
                    | Mnemonic::Jne
                    | Mnemonic::Jbe
                    | Mnemonic::Ja
                    | Mnemonic::Js
                    | Mnemonic::Jns
                    | Mnemonic::Jp
                    | Mnemonic::Jnp
                    | Mnemonic::Jl
                    | Mnemonic::Jge
                    | Mnemonic::Jle
                    | Mnemonic::Jg
            ) && matches!(
                insn.op0_kind(),
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
            );
            if !is_jcc {
                return None;
            }
            jcc
        }
    };
    Some(h)
}

/// #GP(0) unless `target` is a valid near-branch destination: within the CS
/// limit in legacy modes, canonical in 64-bit mode.
#[inline(always)]
pub(super) fn check_near_target(ctx: &Ctx, target: u64) -> Result<()> {
    let ok = if ctx.cpu.bitness == 64 {
        is_canonical(target)
    } else {
        target <= ctx.cpu.seg[SegReg::Cs as usize].limit as u64
    };
    if ok {
        Ok(())
    } else {
        Err(Fault::gp(0))
    }
}

/// Validates `target` and moves RIP there.
#[inline(always)]
fn jump(ctx: &mut Ctx, target: u64) -> Result<()> {
    check_near_target(ctx, target)?;
    ctx.cpu.rip = target;
    Ok(())
}

fn jmp_rel(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    jump(ctx, insn.near_branch_target())
}

fn jcc(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    if flags::condition(ctx.cpu.rflags, cc(insn)) {
        jump(ctx, insn.near_branch_target())
    } else {
        Ok(())
    }
}

fn jmp_rm<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let target = ctx.read_op(insn, 0, N)? & flags::mask(N);
    jump(ctx, target)
}

/// Validates `target`, pushes the return address (RIP already holds the
/// next instruction's address) and jumps.
#[inline(always)]
fn call_to<const N: u8>(ctx: &mut Ctx, target: u64) -> Result<()> {
    check_near_target(ctx, target)?;
    let ret = ctx.cpu.rip;
    ctx.push(N, ret)?;
    ctx.cpu.rip = target;
    Ok(())
}

fn call_rel<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    call_to::<N>(ctx, insn.near_branch_target())
}

fn call_rm<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    // The operand is read with RSP before the push (CALL [RSP] uses the old top).
    let target = ctx.read_op(insn, 0, N)? & flags::mask(N);
    call_to::<N>(ctx, target)
}

/// Pops a return address of `N` bytes and releases `extra` more bytes.
#[inline(always)]
fn ret_common<const N: u8>(ctx: &mut Ctx, extra: u64) -> Result<()> {
    let target = ctx.peek(0, N)?;
    check_near_target(ctx, target)?;
    let sp = ctx.sp();
    ctx.set_sp(sp.wrapping_add(N as u64).wrapping_add(extra));
    ctx.cpu.rip = target;
    Ok(())
}

fn ret<const N: u8>(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    ret_common::<N>(ctx, 0)
}

fn ret_imm<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    ret_common::<N>(ctx, insn.immediate16() as u64)
}

const LOOP: u8 = 0;
const LOOPE: u8 = 1;
const LOOPNE: u8 = 2;

/// LOOP/LOOPE/LOOPNE with a counter of `A` bytes (CX, ECX or RCX: the address size).
fn loop_<const A: u8, const KIND: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let count = ctx.cpu.gpr[reg::RCX].wrapping_sub(1) & addr_mask(A);
    let zf = ctx.cpu.rflags & flags::ZF != 0;
    let taken = count != 0
        && match KIND {
            LOOPE => zf,
            LOOPNE => !zf,
            _ => true,
        };
    if taken {
        // Validate before the counter changes so a #GP leaves it intact.
        check_near_target(ctx, insn.near_branch_target())?;
        ctx.cpu.rip = insn.near_branch_target();
    }
    write_gpr(ctx.cpu, reg::RCX, A, count);
    Ok(())
}

/// JCXZ/JECXZ/JRCXZ: branch when the `A`-byte counter is zero.
fn jcxz<const A: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    if ctx.cpu.gpr[reg::RCX] & addr_mask(A) == 0 {
        jump(ctx, insn.near_branch_target())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::stack::testkit::{step, step_bytes, vec_of};
    use crate::fault::vector;
    use crate::flags::{CF, FIXED, OF, PF, SF, ZF};
    use crate::interp::RunExit;
    use crate::state::{reg, SegReg};
    use crate::testutil::{run, run_asm, TestMode, CODE, CODE_REAL, DATA, STACK};
    use iced_x86::code_asm::*;

    #[test]
    fn call_ret_jmp_every_mode() {
        for mode in [TestMode::Real, TestMode::Protected32, TestMode::Long64] {
            let (cpu, _, exit) = run_asm(
                mode,
                |a| {
                    let mut f = a.create_label();
                    let mut g = a.create_label();
                    let mut done = a.create_label();
                    a.mov(eax, 0u32)?;
                    a.call(f)?;
                    a.lea(eax, dword_ptr(eax + 0x10))?;
                    a.jmp(done)?;
                    a.set_label(&mut f)?;
                    a.lea(eax, dword_ptr(eax + 1))?;
                    a.call(g)?;
                    a.ret()?;
                    a.set_label(&mut g)?;
                    a.lea(eax, dword_ptr(eax + 0x100))?;
                    a.ret()?;
                    a.set_label(&mut done)?;
                    a.hlt()
                },
                |_, _| {},
            );
            assert_eq!(exit, RunExit::Halted, "{mode:?}");
            assert_eq!(cpu.gpr[reg::RAX], 0x111, "{mode:?}");
            let top = if mode == TestMode::Real {
                0x8000
            } else {
                STACK
            };
            assert_eq!(cpu.gpr[reg::RSP], top, "{mode:?}");
        }
    }

    /// Independent truth table of the 16 conditions.
    fn expected(cc: u8, f: u64) -> bool {
        let (o, c, z, s, p) = (
            f & OF != 0,
            f & CF != 0,
            f & ZF != 0,
            f & SF != 0,
            f & PF != 0,
        );
        let r = match cc >> 1 {
            0 => o,
            1 => c,
            2 => z,
            3 => c || z,
            4 => s,
            5 => p,
            6 => s != o,
            _ => z || s != o,
        };
        r != (cc & 1 == 1)
    }

    #[test]
    fn jcc_all_conditions_short_and_near() {
        let samples = [
            0,
            CF,
            ZF,
            SF,
            OF,
            PF,
            SF | OF,
            ZF | SF,
            CF | ZF,
            OF | ZF,
            CF | PF | SF,
        ];
        for cc in 0..16u8 {
            for &f in &samples {
                for mode in [TestMode::Protected32, TestMode::Long64] {
                    let short = [0x70 | cc, 0x10];
                    let near = [0x0f, 0x80 | cc, 0x00, 0x01, 0, 0];
                    for (bytes, target) in
                        [(&short[..], CODE + 2 + 0x10), (&near[..], CODE + 6 + 0x100)]
                    {
                        let (cpu, _, r) = step_bytes(mode, bytes, |cpu, _| cpu.rflags = FIXED | f);
                        assert!(r.is_ok());
                        let want = if expected(cc, f) {
                            target
                        } else {
                            CODE + bytes.len() as u64
                        };
                        assert_eq!(cpu.rip, want, "cc {cc:x} flags {f:#x} {mode:?}");
                    }
                }
            }
        }
        // Real mode, 16-bit targets.
        let (cpu, _, _) = step_bytes(TestMode::Real, &[0x74, 0xfe], |cpu, _| {
            cpu.rflags = FIXED | ZF
        });
        assert_eq!(cpu.rip, 0);
    }

    #[test]
    fn ip_wraps_at_16_bits() {
        // Forward: JMP short at IP 0xfff0 with +0x20 lands at 0x0012.
        let (cpu, _, exit) = run(TestMode::Real, &[], 10, |cpu, bus| {
            bus.write(CODE_REAL + 0xfff0, &[0xeb, 0x20]);
            bus.write(CODE_REAL + 0x12, &[0xf4]);
            cpu.rip = 0xfff0;
        });
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.rip, 0x13);
        // Backward: JMP short at IP 2 with -0x10 lands at 0xfff4.
        let (cpu, _, exit) = run(TestMode::Real, &[], 10, |cpu, bus| {
            bus.write(CODE_REAL + 2, &[0xeb, 0xf0]);
            bus.write(CODE_REAL + 0xfff4, &[0xf4]);
            cpu.rip = 2;
        });
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.rip, 0xfff5);
        // Near JMP rel16 wraps too; CALL pushes the wrapped return IP.
        let (cpu, bus, exit) = run(TestMode::Real, &[], 10, |cpu, bus| {
            bus.write(CODE_REAL + 0xfffd, &[0xe8, 0x10, 0x00]); // call +0x10 -> 0x0010
            bus.write(CODE_REAL + 0x10, &[0xf4]);
            cpu.rip = 0xfffd;
        });
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.rip, 0x11);
        assert_eq!(bus.read(0x7ffe, 2), 0x0000, "return address wrapped to 0");
        // 66h JMP rel16 in 32-bit code truncates EIP to 16 bits.
        let (cpu, _, r) = step_bytes(TestMode::Protected32, &[0x66, 0xe9, 0x00, 0x00], |_, _| {});
        assert!(r.is_ok());
        assert_eq!(cpu.rip, (CODE + 4) & 0xffff);
        // 66h CALL rel16 in 32-bit code pushes a 16-bit IP.
        let (cpu, bus, _) = step_bytes(TestMode::Protected32, &[0x66, 0xe8, 0x10, 0x00], |_, _| {});
        assert_eq!(cpu.rip, (CODE + 4 + 0x10) & 0xffff);
        assert_eq!(cpu.gpr[reg::RSP], STACK - 2);
        assert_eq!(bus.read(STACK - 2, 2), (CODE + 4) & 0xffff);
    }

    #[test]
    fn indirect_jmp_and_call() {
        // JMP r16 in 32-bit code: EIP = zero-extended AX.
        let (cpu, _, _) = step_bytes(TestMode::Protected32, &[0x66, 0xff, 0xe0], |cpu, _| {
            cpu.gpr[reg::RAX] = 0x1234_5678
        });
        assert_eq!(cpu.rip, 0x5678);
        // JMP [mem] 64-bit absolute.
        let (cpu, _, _) = step(
            TestMode::Long64,
            |a| a.jmp(qword_ptr(rbx + 8)),
            |cpu, bus| {
                cpu.gpr[reg::RBX] = DATA;
                bus.put(DATA + 8, 8, 0x7fff_ffff_f000);
            },
        );
        assert_eq!(cpu.rip, 0x7fff_ffff_f000);
        // CALL [RSP] reads the old top, then pushes.
        let (cpu, bus, r) = step(
            TestMode::Long64,
            |a| a.call(qword_ptr(rsp)),
            |cpu, bus| {
                cpu.gpr[reg::RSP] = STACK - 8;
                bus.put(STACK - 8, 8, 0x20_0000);
            },
        );
        assert!(r.is_ok());
        assert_eq!(cpu.rip, 0x20_0000);
        assert_eq!(cpu.gpr[reg::RSP], STACK - 16);
        assert_eq!(bus.read(STACK - 16, 8), CODE + 3);
        // CALL r32 in protected mode.
        let (cpu, bus, _) = step(
            TestMode::Protected32,
            |a| a.call(ecx),
            |cpu, _| cpu.gpr[reg::RCX] = 0x1000,
        );
        assert_eq!(cpu.rip, 0x1000);
        assert_eq!(bus.read(STACK - 4, 4), CODE + 2);
        // CALL r16 in real mode.
        let (cpu, bus, _) = step(
            TestMode::Real,
            |a| a.call(si),
            |cpu, _| cpu.gpr[reg::RSI] = 0xbeef_4000,
        );
        assert_eq!(cpu.rip, 0x4000);
        assert_eq!(cpu.gpr[reg::RSP], 0x7ffe);
        assert_eq!(bus.read(0x7ffe, 2), 2);
    }

    #[test]
    fn ret_forms() {
        let (cpu, _, r) = step(
            TestMode::Protected32,
            |a| a.ret_1(8),
            |cpu, bus| {
                cpu.gpr[reg::RSP] = STACK - 16;
                bus.put(STACK - 16, 4, 0x12_3456);
            },
        );
        assert!(r.is_ok());
        assert_eq!(cpu.rip, 0x12_3456);
        assert_eq!(cpu.gpr[reg::RSP], STACK - 16 + 4 + 8);
        // 16-bit stack: SP wraps, upper ESP bits are kept.
        let (cpu, _, _) = step(
            TestMode::Real,
            |a| a.ret_1(4),
            |cpu, bus| {
                cpu.gpr[reg::RSP] = 0x1234_fffe;
                bus.put(0xfffe, 2, 0x0042);
            },
        );
        assert_eq!(cpu.rip, 0x42);
        assert_eq!(cpu.gpr[reg::RSP], 0x1234_0004);
        // 66h RET in 32-bit code pops 16 bits.
        let (cpu, _, _) = step_bytes(TestMode::Protected32, &[0x66, 0xc3], |cpu, bus| {
            bus.put(STACK - 4, 4, 0xaaaa_1234);
            cpu.gpr[reg::RSP] = STACK - 4;
        });
        assert_eq!(cpu.rip, 0x1234);
        assert_eq!(cpu.gpr[reg::RSP], STACK - 2);
        // 64-bit.
        let (cpu, _, _) = step(
            TestMode::Long64,
            |a| a.ret(),
            |cpu, bus| {
                bus.put(STACK - 8, 8, 0x1_0000_0000);
                cpu.gpr[reg::RSP] = STACK - 8;
            },
        );
        assert_eq!(cpu.rip, 0x1_0000_0000);
        assert_eq!(cpu.gpr[reg::RSP], STACK);
    }

    #[test]
    fn cs_limit_faults_at_the_branch() {
        let limit = |cpu: &mut crate::state::Cpu| cpu.seg[SegReg::Cs as usize].limit = 0x10_0fff;
        let (cpu, _, r) = step_bytes(
            TestMode::Protected32,
            &[0xe9, 0x00, 0x20, 0, 0],
            |cpu, _| limit(cpu),
        );
        assert_eq!(vec_of(&r), Some((vector::GP, Some(0))));
        assert_eq!(cpu.rip, CODE + 5, "RIP untouched by the handler");
        // Within the limit is fine.
        let (cpu, _, r) = step_bytes(
            TestMode::Protected32,
            &[0xe9, 0x00, 0x0f, 0, 0],
            |cpu, _| limit(cpu),
        );
        assert!(r.is_ok());
        assert_eq!(cpu.rip, CODE + 5 + 0xf00);
        // CALL beyond the limit: nothing pushed.
        let (cpu, bus, r) = step_bytes(
            TestMode::Protected32,
            &[0xe8, 0x00, 0x20, 0, 0],
            |cpu, _| limit(cpu),
        );
        assert_eq!(vec_of(&r), Some((vector::GP, Some(0))));
        assert_eq!(cpu.gpr[reg::RSP], STACK);
        assert_eq!(bus.read(STACK - 4, 4), 0);
        // RET beyond the limit: RSP unchanged.
        let (cpu, _, r) = step(
            TestMode::Protected32,
            |a| a.ret(),
            |cpu, bus| {
                limit(cpu);
                cpu.gpr[reg::RSP] = STACK - 4;
                bus.put(STACK - 4, 4, 0x20_0000);
            },
        );
        assert_eq!(vec_of(&r), Some((vector::GP, Some(0))));
        assert_eq!(cpu.gpr[reg::RSP], STACK - 4);
        // Jcc not taken never faults; taken does.
        let (_, _, r) = step_bytes(
            TestMode::Protected32,
            &[0x0f, 0x84, 0, 0x20, 0, 0],
            |cpu, _| limit(cpu),
        );
        assert!(r.is_ok());
        let (_, _, r) = step_bytes(
            TestMode::Protected32,
            &[0x0f, 0x84, 0, 0x20, 0, 0],
            |cpu, _| {
                limit(cpu);
                cpu.rflags |= ZF;
            },
        );
        assert_eq!(vec_of(&r), Some((vector::GP, Some(0))));
        // Real mode with a reduced CS limit.
        let (_, _, r) = step_bytes(TestMode::Real, &[0xeb, 0x7f], |cpu, _| {
            cpu.seg[SegReg::Cs as usize].limit = 0x40
        });
        assert_eq!(vec_of(&r), Some((vector::GP, Some(0))));
    }

    #[test]
    fn non_canonical_targets_fault_in_64_bit_mode() {
        let bad = 0x0000_8000_0000_0000u64;
        let (cpu, _, r) = step(
            TestMode::Long64,
            |a| a.jmp(rax),
            |cpu, _| cpu.gpr[reg::RAX] = bad,
        );
        assert_eq!(vec_of(&r), Some((vector::GP, Some(0))));
        assert_eq!(cpu.rip, CODE + 2);
        let (cpu, bus, r) = step(
            TestMode::Long64,
            |a| a.call(rax),
            |cpu, _| cpu.gpr[reg::RAX] = bad,
        );
        assert_eq!(vec_of(&r), Some((vector::GP, Some(0))));
        assert_eq!(cpu.gpr[reg::RSP], STACK);
        assert_eq!(bus.read(STACK - 8, 8), 0);
        let (cpu, _, r) = step(
            TestMode::Long64,
            |a| a.ret(),
            |cpu, bus| {
                cpu.gpr[reg::RSP] = STACK - 8;
                bus.put(STACK - 8, 8, bad);
            },
        );
        assert_eq!(vec_of(&r), Some((vector::GP, Some(0))));
        assert_eq!(cpu.gpr[reg::RSP], STACK - 8);
        // Canonical upper-half address is fine.
        let (cpu, _, r) = step(
            TestMode::Long64,
            |a| a.jmp(rax),
            |cpu, _| cpu.gpr[reg::RAX] = 0xffff_8000_0000_0000,
        );
        assert!(r.is_ok());
        assert_eq!(cpu.rip, 0xffff_8000_0000_0000);
    }

    #[test]
    fn call_push_fault_leaves_rip() {
        let (cpu, _, r) = step_bytes(TestMode::Long64, &[0xe8, 0x10, 0, 0, 0], |cpu, _| {
            cpu.gpr[reg::RSP] = 0x8000_0000_0000_0000
        });
        assert_eq!(vec_of(&r), Some((vector::SS, Some(0))));
        assert_eq!(cpu.rip, CODE + 5, "RIP not moved to the target");
        assert_eq!(cpu.gpr[reg::RSP], 0x8000_0000_0000_0000);
        // Page fault on the push in long mode (stack below the mapped 1 GiB).
        let (cpu, _, r) = step_bytes(TestMode::Long64, &[0xe8, 0x10, 0, 0, 0], |cpu, _| {
            cpu.gpr[reg::RSP] = 0x4000_0008 + 8
        });
        assert_eq!(vec_of(&r).map(|v| v.0), Some(vector::PF));
        assert_eq!(cpu.cr2, 0x4000_0008);
        assert_eq!(cpu.rip, CODE + 5);
    }

    #[test]
    fn loop_family() {
        for mode in [TestMode::Real, TestMode::Protected32, TestMode::Long64] {
            let (cpu, _, exit) = run_asm(
                mode,
                |a| {
                    let mut l = a.create_label();
                    a.mov(ecx, 5u32)?;
                    a.mov(eax, 0u32)?;
                    a.set_label(&mut l)?;
                    a.lea(eax, dword_ptr(eax + 2))?;
                    a.loop_(l)?;
                    a.hlt()
                },
                |_, _| {},
            );
            assert_eq!(exit, RunExit::Halted, "{mode:?}");
            assert_eq!(cpu.gpr[reg::RAX], 10, "{mode:?}");
            assert_eq!(cpu.gpr[reg::RCX], 0, "{mode:?}");
        }
        // LOOPE / LOOPNE: E2/E1/E0 with rel8 = 0x10.
        let cases = [
            // (opcode, rcx, zf, taken)
            (0xe1u8, 3u64, true, true),
            (0xe1, 3, false, false),
            (0xe1, 1, true, false),
            (0xe0, 3, false, true),
            (0xe0, 3, true, false),
            (0xe2, 1, false, false),
            (0xe2, 0, false, true), // 0 - 1 = all ones: taken
        ];
        for (op, count, zf, taken) in cases {
            let (cpu, _, _) = step_bytes(TestMode::Long64, &[op, 0x10], |cpu, _| {
                cpu.gpr[reg::RCX] = count;
                if zf {
                    cpu.rflags |= ZF;
                }
            });
            assert_eq!(
                cpu.gpr[reg::RCX],
                count.wrapping_sub(1),
                "{op:x} {count} {zf}"
            );
            let want = if taken { CODE + 0x12 } else { CODE + 2 };
            assert_eq!(cpu.rip, want, "{op:x} {count} {zf}");
        }
        // 67h in 64-bit mode: ECX counter, zero-extended write.
        let (cpu, _, _) = step_bytes(TestMode::Long64, &[0x67, 0xe2, 0x10], |cpu, _| {
            cpu.gpr[reg::RCX] = 0xffff_ffff_0000_0005
        });
        assert_eq!(cpu.gpr[reg::RCX], 4);
        assert_eq!(cpu.rip, CODE + 0x13);
        // 67h in 32-bit mode: CX counter, upper ECX kept.
        let (cpu, _, _) = step_bytes(TestMode::Protected32, &[0x67, 0xe2, 0x10], |cpu, _| {
            cpu.gpr[reg::RCX] = 0x1234_0001
        });
        assert_eq!(cpu.gpr[reg::RCX], 0x1234_0000);
        assert_eq!(cpu.rip, CODE + 3, "CX reached zero");
        // A faulting LOOP leaves the counter alone.
        let (cpu, _, r) = step_bytes(TestMode::Protected32, &[0xe2, 0x10], |cpu, _| {
            cpu.gpr[reg::RCX] = 7;
            cpu.seg[SegReg::Cs as usize].limit = 0x10_0008;
        });
        assert_eq!(vec_of(&r), Some((vector::GP, Some(0))));
        assert_eq!(cpu.gpr[reg::RCX], 7);
    }

    #[test]
    fn jcxz_family() {
        let cases: [(TestMode, &[u8], u64, bool); 8] = [
            (TestMode::Protected32, &[0xe3, 0x10], 0, true), // jecxz
            (TestMode::Protected32, &[0xe3, 0x10], 0x1_0000, false),
            (TestMode::Protected32, &[0x67, 0xe3, 0x10], 0x1_0000, true), // jcxz
            (TestMode::Real, &[0xe3, 0x10], 0xffff_0000, true),           // jcxz
            (TestMode::Real, &[0x67, 0xe3, 0x10], 0xffff_0000, false),    // jecxz
            (TestMode::Long64, &[0xe3, 0x10], 1 << 32, false),            // jrcxz
            (TestMode::Long64, &[0x67, 0xe3, 0x10], 1 << 32, true),       // jecxz
            (TestMode::Long64, &[0xe3, 0x10], 0, true),
        ];
        for (mode, bytes, count, taken) in cases {
            let (cpu, _, r) = step_bytes(mode, bytes, |cpu, _| cpu.gpr[reg::RCX] = count);
            assert!(r.is_ok());
            let base = if mode == TestMode::Real { 0 } else { CODE };
            let next = base + bytes.len() as u64;
            let want = if taken { next + 0x10 } else { next };
            assert_eq!(cpu.rip, want, "{mode:?} {bytes:x?} {count:#x}");
            assert_eq!(cpu.gpr[reg::RCX], count, "counter untouched");
        }
    }

    #[test]
    fn branch_in_v86_and_compat_like_16_bit_code() {
        // A 16-bit protected-mode code segment: targets are 16-bit.
        let (cpu, _, r) = step_bytes(TestMode::Protected32, &[0xeb, 0x10], |cpu, _| {
            let code = &mut cpu.seg[SegReg::Cs as usize];
            code.attr &= !crate::state::attr::DB;
            code.limit = 0xffff;
            cpu.rip = 0xfff0;
            cpu.update_mode();
        });
        assert!(r.is_ok());
        assert_eq!(cpu.rip, 0x0002);
    }
}
