//! SSE/SSE2 floating point: ADD/SUB/MUL/DIV/MIN/MAX/SQRT in packed and
//! scalar single/double forms, RCPPS/RCPSS/RSQRTPS/RSQRTSS, CMPccPS/PD/
//! SS/SD, COMISS/COMISD/UCOMISS/UCOMISD, and the conversions (CVT*,
//! including the MMX/XMM ones, which enter MMX state when they touch an
//! MMX register). The arithmetic is [`crate::simd`]'s (MXCSR rounding,
//! FTZ, DAZ; bit-exact with the hardware); the flags it raises go
//! through [`fp_flags`] before the destination is written.
//!
//! RCPPS/RCPSS/RSQRTPS/RSQRTSS are approximations on hardware (relative
//! error at most 1.5 × 2^-12, different between processor generations).
//! Here they are deterministic: the exact reciprocal (of the rounded
//! square root) rounded to nearest, with denormal inputs read as zero and
//! tiny results flushed to zero as the hardware does, then truncated to
//! 12 fraction bits (error below 2^-12). They raise no MXCSR flags and
//! ignore MXCSR, like the hardware. Differential tests against a host
//! must skip them.

use iced_x86::{Code, Instruction};

use super::{fp_flags, md, mm_src, mx, xd, xmm_src};
use crate::block::Handler;
use crate::fault::Result;
use crate::flags;
use crate::interp::fp::{check_sse, is_reg, x87_pending};
use crate::interp::operand::{read_reg, reg_size, write_reg};
use crate::interp::Ctx;
use crate::simd::{self, Fmt, Mxcsr, Op, F32, F64};

const LO64: u128 = u64::MAX as u128;

// Arithmetic operations (the `OP` parameter).
const ADD: u8 = 0;
const SUB: u8 = 1;
const MUL: u8 = 2;
const DIV: u8 = 3;
const MIN: u8 = 4;
const MAX: u8 = 5;

pub(super) fn handler(code: Code) -> Option<Handler> {
    use Code::*;
    Some(match code {
        Addps_xmm_xmmm128 => packed::<false, ADD>,
        Addpd_xmm_xmmm128 => packed::<true, ADD>,
        Addss_xmm_xmmm32 => scalar::<false, ADD>,
        Addsd_xmm_xmmm64 => scalar::<true, ADD>,
        Subps_xmm_xmmm128 => packed::<false, SUB>,
        Subpd_xmm_xmmm128 => packed::<true, SUB>,
        Subss_xmm_xmmm32 => scalar::<false, SUB>,
        Subsd_xmm_xmmm64 => scalar::<true, SUB>,
        Mulps_xmm_xmmm128 => packed::<false, MUL>,
        Mulpd_xmm_xmmm128 => packed::<true, MUL>,
        Mulss_xmm_xmmm32 => scalar::<false, MUL>,
        Mulsd_xmm_xmmm64 => scalar::<true, MUL>,
        Divps_xmm_xmmm128 => packed::<false, DIV>,
        Divpd_xmm_xmmm128 => packed::<true, DIV>,
        Divss_xmm_xmmm32 => scalar::<false, DIV>,
        Divsd_xmm_xmmm64 => scalar::<true, DIV>,
        Minps_xmm_xmmm128 => packed::<false, MIN>,
        Minpd_xmm_xmmm128 => packed::<true, MIN>,
        Minss_xmm_xmmm32 => scalar::<false, MIN>,
        Minsd_xmm_xmmm64 => scalar::<true, MIN>,
        Maxps_xmm_xmmm128 => packed::<false, MAX>,
        Maxpd_xmm_xmmm128 => packed::<true, MAX>,
        Maxss_xmm_xmmm32 => scalar::<false, MAX>,
        Maxsd_xmm_xmmm64 => scalar::<true, MAX>,
        Sqrtps_xmm_xmmm128 => sqrt_packed::<false>,
        Sqrtpd_xmm_xmmm128 => sqrt_packed::<true>,
        Sqrtss_xmm_xmmm32 => sqrt_scalar::<false>,
        Sqrtsd_xmm_xmmm64 => sqrt_scalar::<true>,
        Rcpps_xmm_xmmm128 => approx_packed::<false>,
        Rsqrtps_xmm_xmmm128 => approx_packed::<true>,
        Rcpss_xmm_xmmm32 => approx_scalar::<false>,
        Rsqrtss_xmm_xmmm32 => approx_scalar::<true>,
        Cmpps_xmm_xmmm128_imm8 => cmp_packed::<false>,
        Cmppd_xmm_xmmm128_imm8 => cmp_packed::<true>,
        Cmpss_xmm_xmmm32_imm8 => cmp_scalar::<false>,
        Cmpsd_xmm_xmmm64_imm8 => cmp_scalar::<true>,
        Comiss_xmm_xmmm32 => comi::<false, true>,
        Comisd_xmm_xmmm64 => comi::<true, true>,
        Ucomiss_xmm_xmmm32 => comi::<false, false>,
        Ucomisd_xmm_xmmm64 => comi::<true, false>,
        Cvtsi2ss_xmm_rm32 | Cvtsi2ss_xmm_rm64 => cvtsi2s::<false>,
        Cvtsi2sd_xmm_rm32 | Cvtsi2sd_xmm_rm64 => cvtsi2s::<true>,
        Cvtss2si_r32_xmmm32 | Cvtss2si_r64_xmmm32 => cvts2si::<false, false>,
        Cvttss2si_r32_xmmm32 | Cvttss2si_r64_xmmm32 => cvts2si::<false, true>,
        Cvtsd2si_r32_xmmm64 | Cvtsd2si_r64_xmmm64 => cvts2si::<true, false>,
        Cvttsd2si_r32_xmmm64 | Cvttsd2si_r64_xmmm64 => cvts2si::<true, true>,
        Cvtss2sd_xmm_xmmm32 => cvt_scalar::<false>,
        Cvtsd2ss_xmm_xmmm64 => cvt_scalar::<true>,
        Cvtps2pd_xmm_xmmm64 => cvt_packed::<false>,
        Cvtpd2ps_xmm_xmmm128 => cvt_packed::<true>,
        Cvtdq2ps_xmm_xmmm128 => cvtdq2p::<false>,
        Cvtdq2pd_xmm_xmmm64 => cvtdq2p::<true>,
        Cvtps2dq_xmm_xmmm128 => cvtp2dq::<false, false>,
        Cvttps2dq_xmm_xmmm128 => cvtp2dq::<false, true>,
        Cvtpd2dq_xmm_xmmm128 => cvtp2dq::<true, false>,
        Cvttpd2dq_xmm_xmmm128 => cvtp2dq::<true, true>,
        Cvtpi2ps_xmm_mmm64 => cvtpi2ps,
        Cvtpi2pd_xmm_mmm64 => cvtpi2pd,
        Cvtps2pi_mm_xmmm64 => cvtp2pi::<false, false>,
        Cvttps2pi_mm_xmmm64 => cvtp2pi::<false, true>,
        Cvtpd2pi_mm_xmmm128 => cvtp2pi::<true, false>,
        Cvttpd2pi_mm_xmmm128 => cvtp2pi::<true, true>,
        _ => return None,
    })
}

#[inline(always)]
fn fmt<const D: bool>() -> Fmt {
    if D {
        F64
    } else {
        F32
    }
}

#[inline(always)]
fn op<const OP: u8>() -> Op {
    match OP {
        ADD => Op::Add,
        SUB => Op::Sub,
        MUL => Op::Mul,
        DIV => Op::Div,
        MIN => Op::Min,
        _ => Op::Max,
    }
}

/// The second operand of a packed form (xmm or aligned m128) or a scalar
/// one (xmm or m32/m64, never alignment-checked).
#[inline(always)]
fn src(ctx: &mut Ctx, insn: &Instruction) -> Result<u128> {
    xmm_src(ctx, insn, 1, true)
}

/// ADDPS…MAXPD xmm, xmm/m128.
fn packed<const D: bool, const OP: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = src(ctx, insn)?;
    let d = xd(insn);
    let (r, fl) = simd::packed(fmt::<D>(), op::<OP>(), ctx.cpu.xmm[d], b, mx(ctx));
    fp_flags(ctx, fl)?;
    ctx.cpu.xmm[d] = r;
    Ok(())
}

/// ADDSS…MAXSD xmm, xmm/m32|m64.
fn scalar<const D: bool, const OP: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = src(ctx, insn)?;
    let d = xd(insn);
    let (r, fl) = simd::scalar(fmt::<D>(), op::<OP>(), ctx.cpu.xmm[d], b, mx(ctx));
    fp_flags(ctx, fl)?;
    ctx.cpu.xmm[d] = r;
    Ok(())
}

/// SQRTPS/SQRTPD.
fn sqrt_packed<const D: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = src(ctx, insn)?;
    let (r, fl) = simd::sqrt_packed(fmt::<D>(), b, mx(ctx));
    fp_flags(ctx, fl)?;
    ctx.cpu.xmm[xd(insn)] = r;
    Ok(())
}

/// SQRTSS/SQRTSD.
fn sqrt_scalar<const D: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = src(ctx, insn)?;
    let d = xd(insn);
    let (r, fl) = simd::sqrt_scalar(fmt::<D>(), ctx.cpu.xmm[d], b, mx(ctx));
    fp_flags(ctx, fl)?;
    ctx.cpu.xmm[d] = r;
    Ok(())
}

/// The RCP/RSQRT stand-in for one single (see the module comment).
pub(super) fn approx(x: u32, rsqrt: bool) -> u32 {
    if x & 0x7f80_0000 == 0x7f80_0000 && x & 0x7f_ffff != 0 {
        return x | 0x40_0000; // NaN: quieted
    }
    let mx = Mxcsr(Mxcsr::DEFAULT.0 | Mxcsr::DAZ | Mxcsr::FTZ);
    let mut fl = 0;
    let one = 1.0f32.to_bits() as u64;
    let d = if rsqrt {
        simd::sqrt(F32, x as u64, mx, &mut fl)
    } else {
        x as u64
    };
    let r = simd::arith(F32, Op::Div, one, d, mx, &mut fl) as u32;
    let e = r & 0x7f80_0000;
    if e != 0 && e != 0x7f80_0000 {
        r & !0x7ff
    } else {
        r
    }
}

/// RCPPS/RSQRTPS xmm, xmm/m128.
fn approx_packed<const RSQRT: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = src(ctx, insn)?;
    let mut r = 0u128;
    for i in 0..4 {
        r |= (approx((b >> (32 * i)) as u32, RSQRT) as u128) << (32 * i);
    }
    ctx.cpu.xmm[xd(insn)] = r;
    Ok(())
}

/// RCPSS/RSQRTSS xmm, xmm/m32.
fn approx_scalar<const RSQRT: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = src(ctx, insn)?;
    let d = xd(insn);
    let r = approx(b as u32, RSQRT) as u128;
    ctx.cpu.xmm[d] = (ctx.cpu.xmm[d] & !(u32::MAX as u128)) | r;
    Ok(())
}

/// CMPPS/CMPPD xmm, xmm/m128, imm8 (predicates 0..7: imm8 bits 3..7 are
/// ignored in the legacy encoding).
fn cmp_packed<const D: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = src(ctx, insn)?;
    let d = xd(insn);
    let pred = insn.immediate8() & 7;
    let (r, fl) = simd::cmp_packed(fmt::<D>(), pred, ctx.cpu.xmm[d], b, mx(ctx));
    fp_flags(ctx, fl)?;
    ctx.cpu.xmm[d] = r;
    Ok(())
}

/// CMPSS/CMPSD xmm, xmm/m32|m64, imm8.
fn cmp_scalar<const D: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = src(ctx, insn)?;
    let d = xd(insn);
    let pred = insn.immediate8() & 7;
    let (r, fl) = simd::cmp_scalar(fmt::<D>(), pred, ctx.cpu.xmm[d], b, mx(ctx));
    fp_flags(ctx, fl)?;
    ctx.cpu.xmm[d] = r;
    Ok(())
}

/// COMISS/COMISD (`SIGNAL`: IE on any NaN) and UCOMISS/UCOMISD: ZF, PF,
/// CF from the comparison; OF, SF and AF cleared.
fn comi<const D: bool, const SIGNAL: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = src(ctx, insn)?;
    let a = ctx.cpu.xmm[xd(insn)];
    let (zpc, fl) = simd::comi_scalar(fmt::<D>(), SIGNAL, a, b, mx(ctx));
    fp_flags(ctx, fl)?;
    ctx.cpu.rflags = (ctx.cpu.rflags & !flags::STATUS) | zpc as u64;
    Ok(())
}

/// CVTSI2SS/CVTSI2SD xmm, r/m32|r/m64.
fn cvtsi2s<const D: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let (size, v) = if is_reg(insn, 1) {
        let r = insn.op1_register();
        (reg_size(r), read_reg(ctx.cpu, r))
    } else {
        let n = insn.memory_size().size().clamp(1, 8) as u8;
        (n, super::load_small(ctx, insn, n)?)
    };
    let x = if size == 8 {
        v as i64
    } else {
        v as u32 as i32 as i64
    };
    let d = xd(insn);
    let (r, fl) = simd::cvtsi2s(fmt::<D>(), ctx.cpu.xmm[d], x, mx(ctx));
    fp_flags(ctx, fl)?;
    ctx.cpu.xmm[d] = r;
    Ok(())
}

/// CVT(T)SS2SI/CVT(T)SD2SI r32|r64, xmm/m32|m64 (`T`: truncating).
fn cvts2si<const D: bool, const T: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = src(ctx, insn)?;
    let r = insn.op0_register();
    let bits = if reg_size(r) == 8 { 64 } else { 32 };
    let f = fmt::<D>();
    let lane = if D { b as u64 } else { b as u32 as u64 };
    let mut fl = 0;
    let v = simd::to_int(f, lane, bits, T, mx(ctx), &mut fl);
    fp_flags(ctx, fl)?;
    write_reg(ctx.cpu, r, v);
    Ok(())
}

/// CVTSS2SD (`D` false: from single) / CVTSD2SS.
fn cvt_scalar<const D: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = src(ctx, insn)?;
    let d = xd(insn);
    let (r, fl) = simd::cvt_scalar(fmt::<D>(), ctx.cpu.xmm[d], b, mx(ctx));
    fp_flags(ctx, fl)?;
    ctx.cpu.xmm[d] = r;
    Ok(())
}

/// CVTPS2PD xmm, xmm/m64 (`D` false) / CVTPD2PS xmm, xmm/m128.
fn cvt_packed<const D: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = src(ctx, insn)?;
    let (r, fl) = simd::cvt_packed(fmt::<D>(), b, mx(ctx));
    fp_flags(ctx, fl)?;
    ctx.cpu.xmm[xd(insn)] = r;
    Ok(())
}

/// CVTDQ2PS xmm, xmm/m128 (`D` false) / CVTDQ2PD xmm, xmm/m64.
fn cvtdq2p<const D: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = src(ctx, insn)?;
    let (r, fl) = simd::cvt_dq2p(fmt::<D>(), b, mx(ctx));
    fp_flags(ctx, fl)?;
    ctx.cpu.xmm[xd(insn)] = r;
    Ok(())
}

/// CVT(T)PS2DQ / CVT(T)PD2DQ xmm, xmm/m128.
fn cvtp2dq<const D: bool, const T: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = src(ctx, insn)?;
    let (r, fl) = simd::cvt_p2dq(fmt::<D>(), b, T, mx(ctx));
    fp_flags(ctx, fl)?;
    ctx.cpu.xmm[xd(insn)] = r;
    Ok(())
}

/// The MMX source of CVTPI2PS/CVTPI2PD: an MMX register (after the #MF
/// check) or m64. Returns the value and whether it was a register.
fn mmx_source(ctx: &mut Ctx, insn: &Instruction) -> Result<(u64, bool)> {
    let reg = is_reg(insn, 1);
    if reg {
        x87_pending(ctx.cpu)?;
    }
    Ok((mm_src(ctx, insn, 1)?, reg))
}

/// CVTPI2PS xmm, mm/m64: two dwords to the low two singles (rounded per
/// MXCSR), the high quadword kept. Enters MMX state with a register source.
fn cvtpi2ps(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let (b, reg) = mmx_source(ctx, insn)?;
    let d = xd(insn);
    let (mut r, mut fl) = (ctx.cpu.xmm[d] & !LO64, 0);
    for i in 0..2 {
        let x = (b >> (32 * i)) as u32 as i32 as i64;
        r |= (simd::from_int(F32, x, mx(ctx), &mut fl) as u128) << (32 * i);
    }
    // The MMX state change happens even when the conversion then faults
    // with an unmasked precision exception (#XM), as on the host.
    if reg {
        ctx.cpu.mmx_enter();
    }
    fp_flags(ctx, fl)?;
    ctx.cpu.xmm[d] = r;
    Ok(())
}

/// CVTPI2PD xmm, mm/m64: two dwords to two doubles (exact).
fn cvtpi2pd(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let (b, reg) = mmx_source(ctx, insn)?;
    let (mut r, mut fl) = (0u128, 0);
    for i in 0..2 {
        let x = (b >> (32 * i)) as u32 as i32 as i64;
        r |= (simd::from_int(F64, x, mx(ctx), &mut fl) as u128) << (64 * i);
    }
    fp_flags(ctx, fl)?;
    ctx.cpu.xmm[xd(insn)] = r;
    if reg {
        ctx.cpu.mmx_enter();
    }
    Ok(())
}

/// CVT(T)PS2PI mm, xmm/m64 and CVT(T)PD2PI mm, xmm/m128: two lanes to two
/// dwords in an MMX register (always entering MMX state, also on #XM).
fn cvtp2pi<const D: bool, const T: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    x87_pending(ctx.cpu)?;
    let b = src(ctx, insn)?;
    let f = fmt::<D>();
    let (mut r, mut fl) = (0u64, 0);
    for i in 0..2 {
        let lane = if D {
            (b >> (64 * i)) as u64
        } else {
            (b >> (32 * i)) as u32 as u64
        };
        r |= simd::to_int(f, lane, 32, T, mx(ctx), &mut fl) << (32 * i);
    }
    // The host enters MMX state (TOP = 0, all tags valid) before an
    // unmasked exception (#XM) leaves the destination unwritten; a fault
    // reading the memory source (above) changes nothing.
    ctx.cpu.mmx_enter();
    fp_flags(ctx, fl)?;
    ctx.cpu.set_mm(md(insn), r);
    Ok(())
}
