//! Integer arithmetic and logic: ADD, ADC, SUB, SBB, CMP, AND, OR, XOR, TEST,
//! INC, DEC, NEG, NOT, XADD, CMPXCHG, CMPXCHG8B and CMPXCHG16B.
//!
//! Also owns the LOCK-prefix check shared by the arithmetic, shift, multiply,
//! BCD and bit groups ([`lock_checked`]): a machine runs one vCPU at a time, so
//! LOCK has no effect of its own, but LOCK on a non-lockable instruction or a
//! register destination raises #UD (iced's decoder already rejects most such
//! encodings; the check keeps the handlers honest for any decoder options).
//!
//! Memory destinations are checked for write access before anything changes,
//! so a faulting instruction leaves no trace.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use crate::block::Handler;
use crate::fault::{Fault, Result};
use crate::flags::{self, CF, STATUS, ZF};
use crate::interp::operand::{mem_operand, read_reg, write_reg};
use crate::interp::Ctx;
use crate::state::reg;

/// The handler for `insn` if this group implements it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    let h: Handler = match insn.mnemonic() {
        Mnemonic::Add => arith::<ADD>,
        Mnemonic::Adc => arith::<ADC>,
        Mnemonic::Sub => arith::<SUB>,
        Mnemonic::Sbb => arith::<SBB>,
        Mnemonic::Cmp => arith::<CMP>,
        Mnemonic::And => arith::<AND>,
        Mnemonic::Or => arith::<OR>,
        Mnemonic::Xor => arith::<XOR>,
        Mnemonic::Test => arith::<TEST>,
        Mnemonic::Inc => incdec::<false>,
        Mnemonic::Dec => incdec::<true>,
        Mnemonic::Neg => neg,
        Mnemonic::Not => not,
        Mnemonic::Xadd => xadd,
        Mnemonic::Cmpxchg => cmpxchg,
        Mnemonic::Cmpxchg8b => cmpxchg8b,
        Mnemonic::Cmpxchg16b => cmpxchg16b,
        _ => return None,
    };
    Some(lock_checked(insn, h))
}

/// Whether `m` may carry a LOCK prefix (with a memory destination), SDM Vol. 2 "LOCK".
pub(super) fn lockable(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Add
            | Mnemonic::Adc
            | Mnemonic::And
            | Mnemonic::Btc
            | Mnemonic::Btr
            | Mnemonic::Bts
            | Mnemonic::Cmpxchg
            | Mnemonic::Cmpxchg8b
            | Mnemonic::Cmpxchg16b
            | Mnemonic::Dec
            | Mnemonic::Inc
            | Mnemonic::Neg
            | Mnemonic::Not
            | Mnemonic::Or
            | Mnemonic::Sbb
            | Mnemonic::Sub
            | Mnemonic::Xor
            | Mnemonic::Xadd
            | Mnemonic::Xchg
    )
}

/// Returns `h`, or a #UD handler when `insn` carries a LOCK prefix it may not
/// have (non-lockable instruction or a destination that is not memory).
/// Resolved once at decode time, so it costs nothing per execution.
pub(super) fn lock_checked(insn: &Instruction, h: Handler) -> Handler {
    if insn.has_lock_prefix() && !(lockable(insn.mnemonic()) && insn.op0_kind() == OpKind::Memory) {
        return lock_ud;
    }
    h
}

fn lock_ud(_: &mut Ctx, _: &Instruction) -> Result<()> {
    Err(Fault::ud())
}

const ADD: u8 = 0;
const ADC: u8 = 1;
const SUB: u8 = 2;
const SBB: u8 = 3;
const CMP: u8 = 4;
const AND: u8 = 5;
const OR: u8 = 6;
const XOR: u8 = 7;
const TEST: u8 = 8;

/// Result and status flags of two-operand operation `OP` (CMP/TEST results are discarded).
#[inline(always)]
fn compute<const OP: u8>(a: u64, b: u64, rflags: u64, size: u8) -> (u64, u64) {
    match OP {
        ADD => flags::add(a, b, 0, size),
        ADC => flags::add(a, b, rflags & CF, size),
        SUB | CMP => flags::sub(a, b, 0, size),
        SBB => flags::sub(a, b, rflags & CF, size),
        AND | TEST => {
            let r = a & b;
            (r, flags::logic(r, size))
        }
        OR => {
            let r = (a | b) & flags::mask(size);
            (r, flags::logic(r, size))
        }
        _ => {
            let r = (a ^ b) & flags::mask(size);
            (r, flags::logic(r, size))
        }
    }
}

/// ADD/ADC/SUB/SBB/CMP/AND/OR/XOR/TEST in all their forms. AF after the
/// logical operations is undefined; this host clears it (as `flags::logic` does).
fn arith<const OP: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let writes = OP != CMP && OP != TEST;
    if insn.op0_kind() == OpKind::Register {
        let r0 = insn.op0_register();
        let size = crate::interp::operand::reg_size(r0);
        let a = read_reg(ctx.cpu, r0);
        let b = if insn.op1_kind() == OpKind::Register {
            read_reg(ctx.cpu, insn.op1_register())
        } else {
            ctx.read_op(insn, 1, size)?
        };
        let (r, f) = compute::<OP>(a, b, ctx.cpu.rflags, size);
        if writes {
            write_reg(ctx.cpu, r0, r);
        }
        ctx.cpu.rflags = (ctx.cpu.rflags & !STATUS) | f;
        return Ok(());
    }
    let size = ctx.op_size(insn, 0);
    let (s, off) = mem_operand(ctx.cpu, insn);
    let lin = ctx.seg_addr(s, off, size, writes)?;
    let a = ctx.read_lin(lin, size)?;
    let b = ctx.read_op(insn, 1, size)?;
    let (r, f) = compute::<OP>(a, b, ctx.cpu.rflags, size);
    if writes {
        ctx.write_lin(lin, size, r)?;
    }
    ctx.cpu.rflags = (ctx.cpu.rflags & !STATUS) | f;
    Ok(())
}

/// Reads the destination (operand 0) for a read-modify-write; returns the
/// linear address for memory operands (write access already checked).
#[inline(always)]
fn rmw_read(ctx: &mut Ctx, insn: &Instruction, size: u8) -> Result<(u64, Option<u64>)> {
    if insn.op0_kind() == OpKind::Register {
        return Ok((read_reg(ctx.cpu, insn.op0_register()), None));
    }
    let (s, off) = mem_operand(ctx.cpu, insn);
    let lin = ctx.seg_addr(s, off, size, true)?;
    Ok((ctx.read_lin(lin, size)?, Some(lin)))
}

/// Writes the destination of a read-modify-write.
#[inline(always)]
fn rmw_write(ctx: &mut Ctx, insn: &Instruction, lin: Option<u64>, size: u8, v: u64) -> Result<()> {
    match lin {
        None => {
            write_reg(ctx.cpu, insn.op0_register(), v);
            Ok(())
        }
        Some(lin) => ctx.write_lin(lin, size, v),
    }
}

/// INC/DEC: like ADD/SUB 1 but CF is preserved.
fn incdec<const DEC: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let size = ctx.op_size(insn, 0);
    let (a, lin) = rmw_read(ctx, insn, size)?;
    let (r, f) = if DEC {
        flags::sub(a, 1, 0, size)
    } else {
        flags::add(a, 1, 0, size)
    };
    rmw_write(ctx, insn, lin, size, r)?;
    ctx.cpu.rflags = (ctx.cpu.rflags & !(STATUS & !CF)) | (f & !CF);
    Ok(())
}

/// NEG: 0 - dest; CF is set unless the operand was zero.
fn neg(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let size = ctx.op_size(insn, 0);
    let (a, lin) = rmw_read(ctx, insn, size)?;
    let (r, f) = flags::sub(0, a, 0, size);
    rmw_write(ctx, insn, lin, size, r)?;
    ctx.cpu.rflags = (ctx.cpu.rflags & !STATUS) | f;
    Ok(())
}

/// NOT: no flags.
fn not(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let size = ctx.op_size(insn, 0);
    let (a, lin) = rmw_read(ctx, insn, size)?;
    rmw_write(ctx, insn, lin, size, !a & flags::mask(size))
}

/// XADD: TEMP = SRC + DEST; SRC = DEST; DEST = TEMP (the destination is written
/// last, so `xadd eax, eax` leaves the sum).
fn xadd(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let size = ctx.op_size(insn, 0);
    let src_reg = insn.op1_register();
    let (d, lin) = rmw_read(ctx, insn, size)?;
    let s = read_reg(ctx.cpu, src_reg);
    let (r, f) = flags::add(d, s, 0, size);
    match lin {
        None => {
            write_reg(ctx.cpu, src_reg, d);
            write_reg(ctx.cpu, insn.op0_register(), r);
        }
        Some(lin) => {
            ctx.write_lin(lin, size, r)?;
            write_reg(ctx.cpu, src_reg, d);
        }
    }
    ctx.cpu.rflags = (ctx.cpu.rflags & !STATUS) | f;
    Ok(())
}

/// The accumulator register of `size` bytes.
#[inline(always)]
fn accumulator(size: u8) -> Register {
    match size {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    }
}

/// CMPXCHG: compares the accumulator with the destination; equal → DEST = SRC,
/// else accumulator = DEST. Flags as CMP accumulator, DEST. A memory
/// destination is always written (with its old value on failure), as the
/// locked read-modify-write of real hardware does. A register destination is
/// left alone on failure (this host does not zero-extend it then), and the
/// accumulator is not written on success.
fn cmpxchg(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let size = ctx.op_size(insn, 0);
    let (d, lin) = rmw_read(ctx, insn, size)?;
    let acc = accumulator(size);
    let a = read_reg(ctx.cpu, acc);
    let (_, f) = flags::sub(a, d, 0, size);
    if f & ZF != 0 {
        let s = read_reg(ctx.cpu, insn.op1_register());
        rmw_write(ctx, insn, lin, size, s)?;
    } else {
        if let Some(lin) = lin {
            ctx.write_lin(lin, size, d)?;
        }
        write_reg(ctx.cpu, acc, d);
    }
    ctx.cpu.rflags = (ctx.cpu.rflags & !STATUS) | f;
    Ok(())
}

/// CMPXCHG8B m64: EDX:EAX vs m64; equal → m64 = ECX:EBX, else EDX:EAX = m64.
/// Only ZF changes. The memory is written back either way.
fn cmpxchg8b(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let (s, off) = mem_operand(ctx.cpu, insn);
    let lin = ctx.seg_addr(s, off, 8, true)?;
    let m = ctx.read_lin(lin, 8)?;
    let g = &ctx.cpu.gpr;
    let cmp = (g[reg::RAX] & 0xffff_ffff) | (g[reg::RDX] << 32);
    if m == cmp {
        let new = (g[reg::RBX] & 0xffff_ffff) | (g[reg::RCX] << 32);
        ctx.write_lin(lin, 8, new)?;
        ctx.cpu.rflags |= ZF;
    } else {
        ctx.write_lin(lin, 8, m)?;
        // 32-bit register writes: the upper halves are zeroed.
        ctx.cpu.gpr[reg::RAX] = m & 0xffff_ffff;
        ctx.cpu.gpr[reg::RDX] = m >> 32;
        ctx.cpu.rflags &= !ZF;
    }
    Ok(())
}

/// CMPXCHG16B m128: RDX:RAX vs m128; the operand must be 16-byte aligned (#GP(0)).
fn cmpxchg16b(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let (s, off) = mem_operand(ctx.cpu, insn);
    let lin = ctx.seg_addr(s, off, 16, true)?;
    if lin & 15 != 0 {
        return Err(Fault::gp(0));
    }
    // Aligned: both halves are in one page, so probing the first byte's
    // page covers the whole operand.
    ctx.probe_write(s, off, 16)?;
    let lo = ctx.read_lin(lin, 8)?;
    let hi = ctx.read_lin(lin.wrapping_add(8), 8)?;
    let g = ctx.cpu.gpr;
    let (nlo, nhi) = if lo == g[reg::RAX] && hi == g[reg::RDX] {
        ctx.cpu.rflags |= ZF;
        (g[reg::RBX], g[reg::RCX])
    } else {
        ctx.cpu.gpr[reg::RAX] = lo;
        ctx.cpu.gpr[reg::RDX] = hi;
        ctx.cpu.rflags &= !ZF;
        (lo, hi)
    };
    ctx.write_lin(lin, 8, nlo)?;
    ctx.write_lin(lin.wrapping_add(8), 8, nhi)
}

#[cfg(test)]
mod tests {
    use crate::fault::vector;
    use crate::flags::{AF, CF, OF, PF, SF, ZF};
    use crate::interp::RunExit;
    use crate::testutil::{run_asm, TestMode, DATA};
    use iced_x86::code_asm::*;

    const ST: u64 = CF | PF | AF | ZF | SF | OF;

    /// Runs `f` in 64-bit mode and returns the status flags at HLT.
    fn flags_of(
        f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
    ) -> (crate::state::Cpu, u64) {
        let (cpu, _, exit) = run_asm(TestMode::Long64, f, |_, _| {});
        assert_eq!(exit, RunExit::Halted);
        let f = cpu.rflags & ST;
        (cpu, f)
    }

    #[test]
    fn add_sub_flags_all_sizes() {
        let (cpu, f) = flags_of(|a| {
            a.mov(rax, 0x1122_3344_5566_77ffu64)?;
            a.add(al, 1)?;
            a.hlt()
        });
        assert_eq!(cpu.gpr[0], 0x1122_3344_5566_7700);
        assert_eq!(f, CF | ZF | AF | PF);
        let (cpu, f) = flags_of(|a| {
            a.mov(ecx, 0x7fff_ffffu32)?;
            a.add(ecx, 1)?;
            a.hlt()
        });
        assert_eq!(cpu.gpr[1], 0x8000_0000);
        assert_eq!(f, OF | SF | AF | PF);
        let (cpu, f) = flags_of(|a| {
            a.mov(rsi, 0u64)?;
            a.sub(rsi, 1)?;
            a.hlt()
        });
        assert_eq!(cpu.gpr[6], u64::MAX);
        assert_eq!(f, CF | SF | AF | PF);
        let (cpu, f) = flags_of(|a| {
            a.mov(edx, 0x8000u32)?;
            a.sub(dx, 1)?;
            a.hlt()
        });
        assert_eq!(cpu.gpr[2], 0x7fff);
        assert_eq!(f, OF | AF | PF);
    }

    fn run64(
        f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
        setup: impl FnOnce(&mut crate::state::Cpu, &mut crate::testutil::TestBus),
    ) -> (crate::state::Cpu, crate::testutil::TestBus) {
        let (cpu, bus, exit) = run_asm(TestMode::Long64, f, setup);
        assert_eq!(exit, RunExit::Halted);
        (cpu, bus)
    }

    #[test]
    fn adc_sbb_carry_chain() {
        let (cpu, _) = run64(
            |a| {
                a.mov(rax, u64::MAX)?;
                a.mov(rdx, 0u64)?;
                a.add(rax, 1)?;
                a.adc(rdx, 0)?;
                a.mov(ecx, 0u32)?;
                a.mov(ebx, 0u32)?;
                a.sub(cx, 1)?;
                a.sbb(bx, 0)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(cpu.gpr[0], 0);
        assert_eq!(cpu.gpr[2], 1);
        assert_eq!(cpu.gpr[1], 0xffff);
        assert_eq!(cpu.gpr[3], 0xffff);
        assert_eq!(cpu.rflags & ST, CF | SF | AF | PF);
    }

    #[test]
    fn logic_and_test_clear_of_cf_af() {
        for mode in [TestMode::Real, TestMode::Protected32, TestMode::Long64] {
            let (cpu, _, exit) = run_asm(
                mode,
                |a| {
                    a.stc()?;
                    a.mov(eax, 0xf0f0u32)?;
                    a.and(ax, 0x0ff0)?;
                    a.or(eax, 0x8000_0001u32)?;
                    a.xor(al, 0x01)?;
                    a.test(eax, eax)?;
                    a.hlt()
                },
                |cpu, _| cpu.rflags |= AF | OF,
            );
            assert_eq!(exit, RunExit::Halted);
            assert_eq!(cpu.gpr[0] & 0xffff_ffff, 0x8000_00f0);
            assert_eq!(cpu.rflags & ST, SF | PF, "{mode:?}");
        }
    }

    #[test]
    fn cmp_memory_and_32bit_zero_extension() {
        let (cpu, bus) = run64(
            |a| {
                a.mov(rbx, DATA)?;
                a.mov(qword_ptr(rbx), 5)?;
                a.cmp(qword_ptr(rbx), 6)?;
                a.mov(rcx, u64::MAX)?;
                a.add(ecx, 1)?; // 32-bit write zero-extends
                a.add(byte_ptr(rbx + 1), 0xff)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(cpu.gpr[1], 0);
        assert_eq!(bus.read(DATA, 8), 0xff05);
    }

    #[test]
    fn inc_dec_preserve_cf() {
        let (cpu, bus) = run64(
            |a| {
                a.stc()?;
                a.mov(eax, 0xffu32)?;
                a.inc(al)?; // ZF AF, CF kept
                a.mov(rbx, DATA)?;
                a.mov(dword_ptr(rbx), 0x8000_0000u32)?;
                a.dec(dword_ptr(rbx))?; // OF, AF
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(cpu.gpr[0], 0);
        assert_eq!(bus.read(DATA, 4), 0x7fff_ffff);
        assert_eq!(cpu.rflags & ST, CF | OF | AF | PF);
    }

    #[test]
    fn neg_not() {
        let (cpu, _) = run64(
            |a| {
                a.mov(eax, 0u32)?;
                a.neg(eax)?; // CF = 0, ZF
                a.mov(rbx, 0x80u64)?;
                a.neg(bl)?; // 0x80: OF CF SF
                a.mov(rcx, 0x00ffu64)?;
                a.not(cx)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(cpu.gpr[3], 0x80);
        assert_eq!(cpu.gpr[1], 0xff00);
        assert_eq!(cpu.rflags & ST, OF | CF | SF);
    }

    #[test]
    fn xadd_forms() {
        let (cpu, bus) = run64(
            |a| {
                a.mov(eax, 5u32)?;
                a.mov(ecx, 7u32)?;
                a.xadd(eax, ecx)?; // eax 12, ecx 5
                a.mov(edx, 3u32)?;
                a.xadd(edx, edx)?; // 6
                a.mov(rbx, DATA)?;
                a.mov(word_ptr(rbx), 0xffff)?;
                a.mov(esi, 1u32)?;
                a.lock().xadd(word_ptr(rbx), si)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(cpu.gpr[0], 12);
        assert_eq!(cpu.gpr[1], 5);
        assert_eq!(cpu.gpr[2], 6);
        assert_eq!(cpu.gpr[6], 0xffff);
        assert_eq!(bus.read(DATA, 2), 0);
        assert_eq!(cpu.rflags & (CF | ZF), CF | ZF);
    }

    #[test]
    fn cmpxchg_success_and_failure() {
        let (cpu, bus) = run64(
            |a| {
                a.mov(rbx, DATA)?;
                a.mov(dword_ptr(rbx), 10)?;
                a.mov(eax, 10u32)?;
                a.mov(ecx, 20u32)?;
                a.lock().cmpxchg(dword_ptr(rbx), ecx)?; // success: mem = 20
                a.setz(dl)?;
                a.mov(eax, 1u32)?;
                a.cmpxchg(dword_ptr(rbx), ecx)?; // failure: eax = 20
                a.mov(r8, 0x55u64)?;
                a.mov(r9, 0x66u64)?;
                a.mov(eax, 0x66u32)?;
                a.cmpxchg(r9b, r8b)?; // success: r9b = 0x55
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(bus.read(DATA, 4), 20);
        assert_eq!(cpu.gpr[2] & 0xff, 1);
        assert_eq!(cpu.gpr[0], 0x66);
        assert_eq!(cpu.gpr[9], 0x55);
        assert!(cpu.rflags & ZF != 0);
    }

    #[test]
    fn cmpxchg8b_16b() {
        let (cpu, bus) = run64(
            |a| {
                a.mov(rdi, DATA)?;
                a.mov(rax, 0x1111_2222_3333_4444u64)?;
                a.mov(qword_ptr(rdi), rax)?;
                a.mov(eax, 0x3333_4444u32)?;
                a.mov(edx, 0x1111_2222u32)?;
                a.mov(ebx, 0xaaaa_aaaau32)?;
                a.mov(ecx, 0xbbbb_bbbbu32)?;
                a.lock().cmpxchg8b(qword_ptr(rdi))?;
                a.setz(r8b)?;
                a.cmpxchg8b(qword_ptr(rdi))?; // fails now: edx:eax = bbbb..:aaaa..
                a.setz(r9b)?;
                // 16-byte at DATA+16
                a.mov(rax, 1u64)?;
                a.mov(rdx, 2u64)?;
                a.mov(rbx, 3u64)?;
                a.mov(rcx, 4u64)?;
                a.cmpxchg16b(xmmword_ptr(rdi + 16))?; // memory 0:0 → fails
                a.cmpxchg16b(xmmword_ptr(rdi + 16))?; // rdx:rax = 0:0 now → succeeds
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(cpu.gpr[8] & 0xff, 1);
        assert_eq!(cpu.gpr[9] & 0xff, 0);
        assert_eq!(bus.read(DATA, 8), 0xbbbb_bbbb_aaaa_aaaa);
        assert_eq!(bus.read(DATA + 16, 8), 3);
        assert_eq!(bus.read(DATA + 24, 8), 4);
        assert_eq!(cpu.gpr[0], 0);
        assert!(cpu.rflags & ZF != 0);
    }

    #[test]
    fn cmpxchg16b_misaligned_is_gp_and_lock_reg_is_ud() {
        use crate::fault::Fault;
        use crate::interp::Ctx;
        use iced_x86::{Decoder, DecoderOptions};
        // Misaligned CMPXCHG16B: run the handler directly to see the fault.
        let code = crate::testutil::assemble(TestMode::Long64, |a| {
            a.cmpxchg16b(xmmword_ptr(rdi + 8))?;
            a.add(eax, ebx)
        });
        let mut bus = crate::testutil::TestBus::new();
        crate::testutil::install_tables(&mut bus);
        let mut cpu = crate::testutil::cpu_in(TestMode::Long64);
        cpu.gpr[7] = DATA;
        let mut cache = crate::block::CodeCache::new();
        let mut dec = Decoder::with_ip(64, &code, crate::testutil::CODE, DecoderOptions::NONE);
        let insn = dec.decode();
        let h = crate::interp::dispatch::handler_for(&insn);
        let mut ctx = Ctx::new(&mut cpu, &mut bus, &mut cache);
        assert_eq!(h(&mut ctx, &insn), Err(Fault::gp(0)));
        // LOCK with a register destination (decoded without iced's own check).
        let bytes = [0xf0, 0x01, 0xd8]; // lock add eax, ebx
        let mut dec = Decoder::with_ip(64, &bytes, 0, DecoderOptions::NO_INVALID_CHECK);
        let insn = dec.decode();
        let h = crate::interp::dispatch::handler_for(&insn);
        let e = h(&mut ctx, &insn).unwrap_err();
        assert_eq!(
            e,
            Fault::Exception {
                vector: vector::UD,
                error_code: None
            }
        );
    }
}
