//! MMX, SSE and SSE2 instructions in their legacy encodings: moves
//! ([`sse_mov`]), packed/scalar floating point and conversions
//! ([`sse_float`]), packed integer on MMX and XMM registers ([`sse_int`]),
//! and LDMXCSR/STMXCSR. VEX/EVEX forms are other `Code`s and stay
//! unclaimed (#UD). MOVNTI, the fences, PAUSE, the PREFETCHh hints and
//! CLFLUSH belong to the data group.
//!
//! Every handler first makes its device checks ([`check_sse`] for XMM and
//! MXCSR forms, [`check_mmx`] for MMX forms, which includes the #MF for a
//! pending x87 exception), then reads its operands
//! (16-byte memory operands of the non-"U" forms must be 16-byte aligned,
//! #GP(0)), computes, merges the SIMD floating-point flags (an unmasked
//! one raises #XM/#UD before anything is written, see [`fp_flags`]) and
//! only then writes its destination and, for MMX forms, enters MMX state
//! (TOP = 0, all tags valid). So a faulting instruction changes nothing
//! but the MXCSR flags of an #XM.
//!
//! The hot forms of glibc's string functions (MOVDQA/MOVDQU, PCMPEQB,
//! PMOVMSKB, PXOR, MOVD/MOVQ, PSHUFD, PUNPCKLBW, ...) go through
//! allocation-free register and single-page memory paths ([`load128`],
//! [`store128`]) and word-parallel lane arithmetic.

#[path = "sse_float.rs"]
mod sse_float;
#[path = "sse_int.rs"]
mod sse_int;
#[path = "sse_mov.rs"]
mod sse_mov;
#[cfg(test)]
#[path = "sse_tests.rs"]
mod tests;

use iced_x86::{Code, Instruction};

use crate::block::Handler;
use crate::fault::{Fault, Result};
use crate::interp::fp::{check_sse, is_reg, mm_index, xmm_index};
use crate::interp::operand::mem_operand;
use crate::interp::Ctx;
use crate::simd::{self, Mxcsr};
use crate::state::Cpu;

/// The handler for `insn` if this group owns it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    let code = insn.code();
    sse_mov::handler(code)
        .or_else(|| sse_int::handler(code))
        .or_else(|| sse_float::handler(code))
        .or_else(|| {
            Some(match code {
                Code::Ldmxcsr_m32 => ldmxcsr,
                Code::Stmxcsr_m32 => stmxcsr,
                _ => return None,
            })
        })
}

/// Merges the MXCSR flags `fl` an SSE floating-point instruction raised
/// (as computed by [`crate::simd`], the masked responses) in one
/// computation step. When one of the pre-computation exceptions (IE, DE,
/// ZE) it raised is unmasked, no result is computed, so only those flags
/// are recorded (SDM vol. 1 11.5.2: post-computation exceptions are then
/// not reported; see [`simd::resolve`]). The instruction faults (#XM or
/// #UD) when any recorded flag is unmasked.
#[inline]
pub(super) fn fp_flags(ctx: &mut Ctx, fl: u32) -> Result<()> {
    if fl == 0 {
        return Ok(());
    }
    let fl = simd::resolve(fl, Mxcsr(ctx.cpu.mxcsr));
    ctx.simd_fp_exceptions(fl)
}

/// MXCSR as the arithmetic core takes it.
#[inline]
pub(super) fn mx(ctx: &Ctx) -> Mxcsr {
    Mxcsr(ctx.cpu.mxcsr)
}

/// Reads the 16-byte memory operand; `aligned` demands 16-byte alignment
/// (#GP(0)). Accesses within one page take two 8-byte reads through the
/// TLB (if the first faults nothing happened; the second then cannot
/// fault); page-crossing ones check both pages first.
#[inline]
pub(super) fn load128(ctx: &mut Ctx, insn: &Instruction, aligned: bool) -> Result<u128> {
    let (s, off) = mem_operand(ctx.cpu, insn);
    let lin = ctx.seg_addr(s, off, 16, false)?;
    if aligned && lin & 15 != 0 {
        return Err(Fault::gp(0));
    }
    if lin & 0xfff <= 0xff0 {
        let lo = ctx.read_lin(lin, 8)?;
        let hi = ctx.read_lin(lin.wrapping_add(8), 8)?;
        return Ok(lo as u128 | (hi as u128) << 64);
    }
    let mut b = [0u8; 16];
    ctx.read_bytes(s, off, &mut b, 1)?;
    Ok(u128::from_le_bytes(b))
}

/// Writes the 16-byte memory operand (see [`load128`]); a page-crossing
/// store checks both pages before writing either.
#[inline]
pub(super) fn store128(ctx: &mut Ctx, insn: &Instruction, v: u128, aligned: bool) -> Result<()> {
    let (s, off) = mem_operand(ctx.cpu, insn);
    let lin = ctx.seg_addr(s, off, 16, true)?;
    if aligned && lin & 15 != 0 {
        return Err(Fault::gp(0));
    }
    if lin & 0xfff <= 0xff0 {
        ctx.write_lin(lin, 8, v as u64)?;
        return ctx.write_lin(lin.wrapping_add(8), 8, (v >> 64) as u64);
    }
    ctx.write_bytes(s, off, &v.to_le_bytes(), 1)
}

/// Reads the memory operand of `size` (1..=8) bytes, zero-extended.
#[inline]
pub(super) fn load_small(ctx: &mut Ctx, insn: &Instruction, size: u8) -> Result<u64> {
    let (s, off) = mem_operand(ctx.cpu, insn);
    ctx.read_seg(s, off, size)
}

/// Writes the low `size` (1..=8) bytes of `v` to the memory operand.
#[inline]
pub(super) fn store_small(ctx: &mut Ctx, insn: &Instruction, size: u8, v: u64) -> Result<()> {
    let (s, off) = mem_operand(ctx.cpu, insn);
    ctx.write_seg(s, off, size, v)
}

/// Operand `i` as 128 bits: an XMM register, a 16-byte memory operand
/// (aligned when `aligned`) or a smaller one (scalar and half forms,
/// zero-extended, never alignment-checked).
#[inline]
pub(super) fn xmm_src(ctx: &mut Ctx, insn: &Instruction, i: u32, aligned: bool) -> Result<u128> {
    if is_reg(insn, i) {
        return Ok(ctx.cpu.xmm[xmm_index(insn.op_register(i))]);
    }
    match insn.memory_size().size() {
        16 => load128(ctx, insn, aligned),
        n => Ok(load_small(ctx, insn, n.clamp(1, 8) as u8)? as u128),
    }
}

/// Operand `i` as 64 bits: an MMX register or a memory operand (8 bytes,
/// or 4 for the PUNPCKL* forms, zero-extended).
#[inline]
pub(super) fn mm_src(ctx: &mut Ctx, insn: &Instruction, i: u32) -> Result<u64> {
    if is_reg(insn, i) {
        return Ok(ctx.cpu.mm(mm_index(insn.op_register(i))));
    }
    let n = insn.memory_size().size().clamp(1, 8) as u8;
    load_small(ctx, insn, n)
}

/// Index of the XMM register operand 0.
#[inline]
pub(super) fn xd(insn: &Instruction) -> usize {
    xmm_index(insn.op0_register())
}

/// Index of the MMX register operand 0.
#[inline]
pub(super) fn md(insn: &Instruction) -> usize {
    mm_index(insn.op0_register())
}

/// Writes MMi and enters MMX state: the commit of an MMX instruction.
#[inline]
pub(super) fn commit_mm(cpu: &mut Cpu, i: usize, v: u64) {
    cpu.mmx_enter();
    cpu.set_mm(i, v);
}

/// Bits of MXCSR that software may set (MXCSR_MASK; DAZ supported).
pub(super) const MXCSR_MASK: u32 = 0x0000_ffff;

/// LDMXCSR m32: reserved bits set → #GP(0).
fn ldmxcsr(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let v = load_small(ctx, insn, 4)? as u32;
    if v & !MXCSR_MASK != 0 {
        return Err(Fault::gp(0));
    }
    ctx.cpu.mxcsr = v;
    Ok(())
}

/// STMXCSR m32.
fn stmxcsr(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let v = ctx.cpu.mxcsr;
    store_small(ctx, insn, 4, v as u64)
}
