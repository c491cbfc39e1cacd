//! Data movement: MOV (general registers, memory, immediates), MOVNTI, MOVZX/MOVSX/
//! MOVSXD, LEA, XCHG, BSWAP, MOVBE, CMOVcc, SETcc, CBW…CQO, LAHF/SAHF, XLAT,
//! flag bit instructions (CLC/STC/CMC/CLD/STD), SALC, the NOP forms and
//! the hints that are NOPs here (PAUSE, fences, prefetches, CLFLUSH).
//! Moves involving segment, control or debug registers live with the system groups.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use crate::block::Handler;
use crate::fault::Result;
use crate::flags::{self, sign_extend};
use crate::interp::operand::{effective_address, read_reg, reg_size, write_reg};
use crate::interp::Ctx;
use crate::state::reg;

/// The handler for `insn` if this group implements it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    let touches_special = (0..insn.op_count()).any(|i| {
        insn.op_kind(i) == OpKind::Register && {
            let r = insn.op_register(i);
            !(r.is_gpr())
        }
    });
    Some(match insn.mnemonic() {
        Mnemonic::Mov if !touches_special => mov,
        // MOVNTI: a store with a non-temporal hint; there is no cache to bypass.
        Mnemonic::Movnti => mov,
        Mnemonic::Movzx => movzx,
        Mnemonic::Movsx | Mnemonic::Movsxd => movsx,
        Mnemonic::Lea => lea,
        Mnemonic::Xchg => xchg,
        Mnemonic::Bswap => bswap,
        Mnemonic::Movbe => movbe,
        Mnemonic::Cmovo
        | Mnemonic::Cmovno
        | Mnemonic::Cmovb
        | Mnemonic::Cmovae
        | Mnemonic::Cmove
        | Mnemonic::Cmovne
        | Mnemonic::Cmovbe
        | Mnemonic::Cmova
        | Mnemonic::Cmovs
        | Mnemonic::Cmovns
        | Mnemonic::Cmovp
        | Mnemonic::Cmovnp
        | Mnemonic::Cmovl
        | Mnemonic::Cmovge
        | Mnemonic::Cmovle
        | Mnemonic::Cmovg => cmovcc,
        Mnemonic::Seto
        | Mnemonic::Setno
        | Mnemonic::Setb
        | Mnemonic::Setae
        | Mnemonic::Sete
        | Mnemonic::Setne
        | Mnemonic::Setbe
        | Mnemonic::Seta
        | Mnemonic::Sets
        | Mnemonic::Setns
        | Mnemonic::Setp
        | Mnemonic::Setnp
        | Mnemonic::Setl
        | Mnemonic::Setge
        | Mnemonic::Setle
        | Mnemonic::Setg => setcc,
        Mnemonic::Cbw => cbw,
        Mnemonic::Cwde => cwde,
        Mnemonic::Cdqe => cdqe,
        Mnemonic::Cwd => cwd,
        Mnemonic::Cdq => cdq,
        Mnemonic::Cqo => cqo,
        Mnemonic::Lahf => lahf,
        Mnemonic::Sahf => sahf,
        Mnemonic::Xlatb => xlat,
        Mnemonic::Clc => clc,
        Mnemonic::Stc => stc,
        Mnemonic::Cmc => cmc,
        Mnemonic::Cld => cld,
        Mnemonic::Std => std_,
        Mnemonic::Salc => salc,
        Mnemonic::Nop
        | Mnemonic::Pause
        | Mnemonic::Endbr32
        | Mnemonic::Endbr64
        | Mnemonic::Lfence
        | Mnemonic::Sfence
        | Mnemonic::Mfence => nop,
        // Prefetch hints never fault, even on unmapped addresses.
        Mnemonic::Prefetchnta
        | Mnemonic::Prefetcht0
        | Mnemonic::Prefetcht1
        | Mnemonic::Prefetcht2
        | Mnemonic::Prefetchw => nop,
        Mnemonic::Clflush | Mnemonic::Clflushopt => clflush,
        _ => return None,
    })
}

/// Condition nibble (0 = O … 15 = G) of a Jcc/SETcc/CMOVcc instruction.
#[inline(always)]
pub(super) fn cc(insn: &Instruction) -> u8 {
    (insn.condition_code() as u8).wrapping_sub(1)
}

fn nop(_: &mut Ctx, _: &Instruction) -> Result<()> {
    Ok(())
}

/// CLFLUSH: no cache to flush, but the address is checked like a byte load
/// (segment limit, paging), as the SDM specifies.
fn clflush(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let (s, off) = crate::interp::operand::mem_operand(ctx.cpu, insn);
    ctx.read_seg(s, off, 1).map(|_| ())
}

fn mov(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let size = ctx.op_size(insn, 0);
    let v = ctx.read_op(insn, 1, size)?;
    ctx.write_op(insn, 0, size, v)
}

fn movzx(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let src = ctx.op_size(insn, 1);
    let v = ctx.read_op(insn, 1, src)?;
    let dst = ctx.op_size(insn, 0);
    ctx.write_op(insn, 0, dst, v)
}

fn movsx(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let src = ctx.op_size(insn, 1);
    let dst = ctx.op_size(insn, 0);
    let v = ctx.read_op(insn, 1, src.min(dst))?;
    ctx.write_op(
        insn,
        0,
        dst,
        sign_extend(v, src.min(dst)) & flags::mask(dst),
    )
}

fn lea(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let a = effective_address(ctx.cpu, insn);
    write_reg(ctx.cpu, insn.op0_register(), a);
    Ok(())
}

fn xchg(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let size = ctx.op_size(insn, 0);
    if insn.op0_kind() == OpKind::Memory {
        // Memory form: check the write first so a fault leaves the register intact.
        let (s, off) = crate::interp::operand::mem_operand(ctx.cpu, insn);
        ctx.probe_write(s, off, size)?;
        let m = ctx.read_seg(s, off, size)?;
        let r = read_reg(ctx.cpu, insn.op1_register());
        ctx.write_seg(s, off, size, r)?;
        write_reg(ctx.cpu, insn.op1_register(), m);
        return Ok(());
    }
    let a = read_reg(ctx.cpu, insn.op0_register());
    let b = ctx.read_op(insn, 1, size)?;
    if insn.op1_kind() == OpKind::Memory {
        let (s, off) = crate::interp::operand::mem_operand(ctx.cpu, insn);
        ctx.write_seg(s, off, size, a)?;
    } else {
        write_reg(ctx.cpu, insn.op1_register(), a);
    }
    write_reg(ctx.cpu, insn.op0_register(), b);
    Ok(())
}

fn bswap(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let r = insn.op0_register();
    let v = read_reg(ctx.cpu, r);
    let out = match reg_size(r) {
        4 => (v as u32).swap_bytes() as u64,
        8 => v.swap_bytes(),
        // BSWAP of a 16-bit register is undefined; this host's CPUs give zero.
        _ => 0,
    };
    write_reg(ctx.cpu, r, out);
    Ok(())
}

fn movbe(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let size = ctx.op_size(insn, 0);
    let v = ctx.read_op(insn, 1, size)?;
    let swapped = match size {
        2 => (v as u16).swap_bytes() as u64,
        4 => (v as u32).swap_bytes() as u64,
        _ => v.swap_bytes(),
    };
    ctx.write_op(insn, 0, size, swapped)
}

fn cmovcc(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let size = ctx.op_size(insn, 0);
    // The source is read (and may fault) whether or not the condition holds.
    let v = ctx.read_op(insn, 1, size)?;
    if flags::condition(ctx.cpu.rflags, cc(insn)) {
        write_reg(ctx.cpu, insn.op0_register(), v);
    } else if size == 4 {
        // A 32-bit CMOV zero-extends its destination even when it does not move.
        let r = insn.op0_register();
        let old = read_reg(ctx.cpu, r);
        write_reg(ctx.cpu, r, old);
    }
    Ok(())
}

fn setcc(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let v = flags::condition(ctx.cpu.rflags, cc(insn)) as u64;
    ctx.write_op(insn, 0, 1, v)
}

fn cbw(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    let v = sign_extend(ctx.cpu.gpr[reg::RAX] & 0xff, 1);
    write_reg(ctx.cpu, Register::AX, v);
    Ok(())
}

fn cwde(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    let v = sign_extend(ctx.cpu.gpr[reg::RAX] & 0xffff, 2);
    write_reg(ctx.cpu, Register::EAX, v);
    Ok(())
}

fn cdqe(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    ctx.cpu.gpr[reg::RAX] = sign_extend(ctx.cpu.gpr[reg::RAX], 4);
    Ok(())
}

fn cwd(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    let hi = if ctx.cpu.gpr[reg::RAX] & 0x8000 != 0 {
        0xffff
    } else {
        0
    };
    write_reg(ctx.cpu, Register::DX, hi);
    Ok(())
}

fn cdq(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    let hi = if ctx.cpu.gpr[reg::RAX] & 0x8000_0000 != 0 {
        0xffff_ffff
    } else {
        0
    };
    write_reg(ctx.cpu, Register::EDX, hi);
    Ok(())
}

fn cqo(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    ctx.cpu.gpr[reg::RDX] = ((ctx.cpu.gpr[reg::RAX] as i64) >> 63) as u64;
    Ok(())
}

/// Flags LAHF/SAHF move: SF, ZF, AF, PF, CF.
const AH_FLAGS: u64 = flags::SF | flags::ZF | flags::AF | flags::PF | flags::CF;

fn lahf(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    let v = (ctx.cpu.rflags & AH_FLAGS) | flags::FIXED;
    write_reg(ctx.cpu, Register::AH, v);
    Ok(())
}

fn sahf(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    let ah = (ctx.cpu.gpr[reg::RAX] >> 8) & AH_FLAGS;
    ctx.cpu.rflags = (ctx.cpu.rflags & !AH_FLAGS) | ah;
    Ok(())
}

fn xlat(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let size = crate::interp::operand::addr_size(insn);
    let base = read_reg(ctx.cpu, insn.memory_base());
    let off =
        base.wrapping_add(ctx.cpu.gpr[reg::RAX] & 0xff) & crate::interp::operand::addr_mask(size);
    let seg = crate::interp::operand::seg_of(insn.memory_segment());
    let v = ctx.read_seg(seg, off, 1)?;
    write_reg(ctx.cpu, Register::AL, v);
    Ok(())
}

fn clc(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    ctx.cpu.rflags &= !flags::CF;
    Ok(())
}

fn stc(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    ctx.cpu.rflags |= flags::CF;
    Ok(())
}

fn cmc(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    ctx.cpu.rflags ^= flags::CF;
    Ok(())
}

fn cld(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    ctx.cpu.rflags &= !flags::DF;
    Ok(())
}

fn std_(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    ctx.cpu.rflags |= flags::DF;
    Ok(())
}

fn salc(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    let v = if ctx.cpu.rflags & flags::CF != 0 {
        0xff
    } else {
        0
    };
    write_reg(ctx.cpu, Register::AL, v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::interp::RunExit;
    use crate::testutil::{run_asm, TestMode, DATA};
    use iced_x86::code_asm::*;

    #[test]
    fn mov_lea_cmov_in_every_mode() {
        for mode in [TestMode::Real, TestMode::Protected32, TestMode::Long64] {
            let (cpu, _, exit) = run_asm(
                mode,
                |a| {
                    a.mov(eax, 0x1234_5678u32)?;
                    a.mov(bl, 0x80u32)?;
                    a.movsx(ecx, bl)?;
                    a.movzx(edx, bl)?;
                    a.lea(esi, dword_ptr(eax + ecx * 2 + 4))?;
                    a.stc()?;
                    a.cmovb(edi, eax)?;
                    a.hlt()
                },
                |_, _| {},
            );
            assert_eq!(exit, RunExit::Halted, "{mode:?}");
            assert_eq!(cpu.gpr[0] & 0xffff_ffff, 0x1234_5678);
            assert_eq!(cpu.gpr[1] & 0xffff_ffff, 0xffff_ff80);
            assert_eq!(cpu.gpr[2] & 0xffff_ffff, 0x80);
            assert_eq!(
                cpu.gpr[6] & 0xffff_ffff,
                0x1234_5678u32.wrapping_add(0xffff_ff00).wrapping_add(4) as u64
            );
            assert_eq!(cpu.gpr[7] & 0xffff_ffff, 0x1234_5678);
        }
    }

    #[test]
    fn memory_store_and_load_64() {
        let (cpu, bus, exit) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(rax, 0x1122_3344_5566_7788u64)?;
                a.mov(rbx, DATA)?;
                a.mov(qword_ptr(rbx + 8), rax)?;
                a.mov(cx, word_ptr(rbx + 10))?;
                a.xchg(qword_ptr(rbx + 8), rdx)?;
                a.bswap(rax)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[1] & 0xffff, 0x5566);
        assert_eq!(cpu.gpr[2], 0x1122_3344_5566_7788);
        assert_eq!(
            bus.read(DATA + 8, 8),
            crate::cpuid::SIGNATURE as u64,
            "RDX holds the reset signature"
        );
        assert_eq!(cpu.gpr[0], 0x8877_6655_4433_2211);
    }

    #[test]
    fn movnti_stores() {
        // Found by fuzzing (it stopped the machine as unimplemented): MOVNTI
        // is a plain store here (no cache to bypass), 32- and 64-bit.
        let (cpu, bus, exit) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(rax, 0x1122_3344_5566_7788u64)?;
                a.mov(rbx, DATA)?;
                a.movnti(qword_ptr(rbx), rax)?;
                a.movnti(dword_ptr(rbx + 8), eax)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(bus.read(DATA, 8), 0x1122_3344_5566_7788);
        assert_eq!(bus.read(DATA + 8, 8), 0x5566_7788);
        assert_eq!(cpu.icount, 5);
    }
}
