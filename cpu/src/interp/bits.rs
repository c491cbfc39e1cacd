//! Bit instructions: BT, BTS, BTR, BTC (register and immediate bit offsets),
//! BSF, BSR, POPCNT, LZCNT and TZCNT.
//!
//! BT* with a register bit offset and a memory operand address memory beyond
//! the operand: the offset is signed and selects the operand-sized unit at
//! `ea + size * (offset >> log2(bits))` (SDM Vol. 2 "BT"); an immediate offset
//! is taken modulo the operand width.
//!
//! Undefined flags follow this host (an Intel core), as checked by the
//! differential tester (`--strict`): BT* change only CF; BSF/BSR clear CF,
//! OF, SF and AF, set ZF = (source == 0) and PF from the index (from 0 for a
//! zero source, whose destination is left unchanged: a 32-bit destination
//! keeps its upper half); LZCNT/TZCNT clear OF, SF, AF and PF.

use iced_x86::{Instruction, Mnemonic, OpKind};

use crate::block::Handler;
use crate::fault::Result;
use crate::flags::{self, sign_extend, CF, PF, STATUS, ZF};
use crate::interp::operand::{addr_mask, addr_size, mem_operand, read_reg, reg_size, write_reg};
use crate::interp::Ctx;

/// The handler for `insn` if this group implements it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    let h: Handler = match insn.mnemonic() {
        Mnemonic::Bt => bt::<BT>,
        Mnemonic::Bts => bt::<BTS>,
        Mnemonic::Btr => bt::<BTR>,
        Mnemonic::Btc => bt::<BTC>,
        Mnemonic::Bsf => bsf_bsr::<false>,
        Mnemonic::Bsr => bsf_bsr::<true>,
        Mnemonic::Popcnt => popcnt,
        Mnemonic::Lzcnt => lzcnt_tzcnt::<true>,
        Mnemonic::Tzcnt => lzcnt_tzcnt::<false>,
        _ => return None,
    };
    Some(super::alu::lock_checked(insn, h))
}

const BT: u8 = 0;
const BTS: u8 = 1;
const BTR: u8 = 2;
const BTC: u8 = 3;

/// The new value of the unit holding the bit (`mask` selects it) for op `OP`.
#[inline(always)]
fn apply<const OP: u8>(v: u64, mask: u64) -> u64 {
    match OP {
        BTS => v | mask,
        BTR => v & !mask,
        BTC => v ^ mask,
        _ => v,
    }
}

/// BT/BTS/BTR/BTC r/m, r|imm8: CF = the selected bit, which BTS/BTR/BTC then set, clear or flip.
fn bt<const OP: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let size = ctx.op_size(insn, 0);
    let bits = size as u64 * 8;
    let reg_offset = insn.op1_kind() == OpKind::Register;
    let raw = if reg_offset {
        read_reg(ctx.cpu, insn.op1_register())
    } else {
        insn.immediate(1)
    };
    let bit = raw & (bits - 1);
    let mask = 1u64 << bit;
    let (set, result) = if insn.op0_kind() == OpKind::Register {
        let r0 = insn.op0_register();
        let v = read_reg(ctx.cpu, r0);
        let out = apply::<OP>(v, mask);
        if OP != BT {
            write_reg(ctx.cpu, r0, out);
        }
        (v & mask != 0, Ok(()))
    } else {
        let (s, mut off) = mem_operand(ctx.cpu, insn);
        if reg_offset {
            // Signed bit offset: displace by whole operand-sized units.
            let offset = sign_extend(raw, size) as i64;
            let units = offset >> bits.trailing_zeros();
            off = off.wrapping_add((units as u64).wrapping_mul(size as u64))
                & addr_mask(addr_size(insn));
        }
        let lin = ctx.seg_addr(s, off, size, OP != BT)?;
        let v = ctx.read_lin(lin, size)?;
        let r = if OP != BT {
            ctx.write_lin(lin, size, apply::<OP>(v, mask))
        } else {
            Ok(())
        };
        (v & mask != 0, r)
    };
    result?;
    ctx.cpu.rflags = (ctx.cpu.rflags & !CF) | set as u64;
    Ok(())
}

/// Reads the r/m source (operand 1) of a bit-scan/count instruction.
#[inline(always)]
fn source(ctx: &mut Ctx, insn: &Instruction, size: u8) -> Result<u64> {
    if insn.op1_kind() == OpKind::Register {
        Ok(read_reg(ctx.cpu, insn.op1_register()))
    } else {
        ctx.read_op(insn, 1, size)
    }
}

/// BSF/BSR: index of the lowest/highest set bit. A zero source sets ZF and
/// leaves the destination untouched (as Intel and AMD hardware do); the
/// undefined flags follow this host (see the module comment).
fn bsf_bsr<const REVERSE: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let r0 = insn.op0_register();
    let size = reg_size(r0);
    let v = source(ctx, insn, size)? & flags::mask(size);
    if v == 0 {
        ctx.cpu.rflags = (ctx.cpu.rflags & !STATUS) | ZF | PF;
        return Ok(());
    }
    let idx = if REVERSE {
        63 - v.leading_zeros() as u64
    } else {
        v.trailing_zeros() as u64
    };
    write_reg(ctx.cpu, r0, idx);
    ctx.cpu.rflags = (ctx.cpu.rflags & !STATUS) | flags::parity(idx);
    Ok(())
}

/// POPCNT: ZF = (source == 0), every other status flag cleared.
fn popcnt(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let r0 = insn.op0_register();
    let size = reg_size(r0);
    let v = source(ctx, insn, size)? & flags::mask(size);
    write_reg(ctx.cpu, r0, v.count_ones() as u64);
    ctx.cpu.rflags = (ctx.cpu.rflags & !STATUS) | if v == 0 { ZF } else { 0 };
    Ok(())
}

/// LZCNT/TZCNT: count of leading/trailing zero bits (the operand width for a
/// zero source); CF = (source == 0), ZF = (result == 0), the rest cleared (this host).
fn lzcnt_tzcnt<const LEADING: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let r0 = insn.op0_register();
    let size = reg_size(r0);
    let bits = size as u32 * 8;
    let v = source(ctx, insn, size)? & flags::mask(size);
    let n = if v == 0 {
        bits
    } else if LEADING {
        v.leading_zeros() - (64 - bits)
    } else {
        v.trailing_zeros()
    };
    write_reg(ctx.cpu, r0, n as u64);
    let mut f = ctx.cpu.rflags & !STATUS;
    if v == 0 {
        f |= CF;
    }
    if n == 0 {
        f |= ZF;
    }
    ctx.cpu.rflags = f;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::flags::{CF, ZF};
    use crate::interp::RunExit;
    use crate::testutil::{run_asm, TestMode, DATA};
    use iced_x86::code_asm::*;

    fn run64(
        f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
    ) -> (crate::state::Cpu, crate::testutil::TestBus) {
        let (cpu, bus, exit) = run_asm(TestMode::Long64, f, |_, _| {});
        assert_eq!(exit, RunExit::Halted);
        (cpu, bus)
    }

    #[test]
    fn bt_register_forms() {
        let (cpu, _) = run64(|a| {
            a.mov(eax, 0b1010u32)?;
            a.bt(eax, 1)?; // CF=1
            a.setc(bl)?;
            a.mov(ecx, 33u32)?; // masked to 1 for 32-bit
            a.btr(eax, ecx)?;
            a.bts(ax, 0)?;
            a.mov(rdx, 0u64)?;
            a.btc(rdx, 63)?;
            a.hlt()
        });
        assert_eq!(cpu.gpr[3] & 0xff, 1);
        assert_eq!(cpu.gpr[0], 0b1001);
        assert_eq!(cpu.gpr[2], 1 << 63);
        assert_eq!(cpu.rflags & CF, 0);
    }

    #[test]
    fn bt_memory_with_register_offsets() {
        let (cpu, bus) = run64(|a| {
            a.mov(rdi, DATA + 0x100)?;
            a.mov(rcx, 70u64)?; // qword 1, bit 6
            a.bts(qword_ptr(rdi), rcx)?;
            a.mov(rcx, -1i64 as u64)?; // bit 31 of the dword before
            a.bts(dword_ptr(rdi), ecx)?;
            a.mov(edx, 0xfff0u32)?; // -16: bit 0 of the word at -2
            a.lock().btc(word_ptr(rdi), dx)?;
            a.bt(word_ptr(rdi), 0x14)?; // immediate masked: bit 4
            a.setc(bl)?;
            a.hlt()
        });
        assert_eq!(bus.read(DATA + 0x108, 8), 1 << 6);
        assert_eq!(bus.read(DATA + 0xfc, 4), 0x8000_0000 | 0x0001_0000);
        assert_eq!(cpu.gpr[3] & 0xff, 0);
    }

    #[test]
    fn bsf_bsr() {
        let (cpu, _) = run64(|a| {
            a.mov(eax, 0x0001_0100u32)?;
            a.bsf(ecx, eax)?; // 8
            a.bsr(edx, eax)?; // 16
            a.mov(rbx, u64::MAX)?;
            a.mov(esi, 0u32)?;
            a.bsf(rbx, rsi)?; // zero source: rbx unchanged, ZF=1
            a.hlt()
        });
        assert_eq!(cpu.gpr[1], 8);
        assert_eq!(cpu.gpr[2], 16);
        assert_eq!(cpu.gpr[3], u64::MAX);
        assert!(cpu.rflags & ZF != 0);
    }

    #[test]
    fn popcnt_lzcnt_tzcnt() {
        let (cpu, _) = run64(|a| {
            a.mov(rax, 0xf0f0u64)?;
            a.popcnt(rcx, rax)?; // 8
            a.lzcnt(dx, ax)?; // 0
            a.tzcnt(esi, eax)?; // 4
            a.hlt()
        });
        assert_eq!(cpu.gpr[1], 8);
        assert_eq!(cpu.gpr[2], 0);
        assert_eq!(cpu.gpr[6], 4);
        assert_eq!(cpu.rflags & (CF | ZF), 0);
        let (cpu, _) = run64(|a| {
            a.mov(eax, 0u32)?;
            a.lzcnt(rdx, rax)?; // 64, CF=1
            a.hlt()
        });
        assert_eq!(cpu.gpr[2], 64);
        assert_eq!(cpu.rflags & (CF | ZF), CF);
        let (cpu, _) = run64(|a| {
            a.mov(eax, 1u32)?;
            a.tzcnt(edx, eax)?; // 0, ZF=1
            a.popcnt(ecx, ebx)?; // ebx = 0 → ZF
            a.hlt()
        });
        assert_eq!(cpu.gpr[2], 0);
        assert_eq!(cpu.rflags & (CF | ZF), ZF);
    }

    /// BSF/BSR and LZCNT/TZCNT undefined flags as this host leaves them.
    #[test]
    fn undefined_flags_as_host() {
        use crate::flags::{AF, OF, PF, SF};
        let all = CF | PF | AF | ZF | SF | OF;
        let (cpu, _, _) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(eax, 0x30u32)?;
                a.bsr(ecx, eax)?; // 5: parity even
                a.hlt()
            },
            |c, _| c.rflags |= all,
        );
        assert_eq!(cpu.gpr[1], 5);
        assert_eq!(cpu.rflags & all, PF);
        let (cpu, _, _) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(rcx, u64::MAX)?;
                a.mov(eax, 0u32)?;
                a.bsf(ecx, eax)?; // zero source: ZF PF, rcx untouched (upper half too)
                a.hlt()
            },
            |c, _| c.rflags |= all,
        );
        assert_eq!(cpu.gpr[1], u64::MAX);
        assert_eq!(cpu.rflags & all, ZF | PF);
        let (cpu, _, _) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(eax, 0x10u32)?;
                a.lzcnt(ecx, eax)?; // 27
                a.hlt()
            },
            |c, _| c.rflags |= all,
        );
        assert_eq!(cpu.gpr[1], 27);
        assert_eq!(cpu.rflags & all, 0);
    }
}
