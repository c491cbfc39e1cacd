//! SSE3, SSSE3, SSE4.1 and SSE4.2 instructions in their legacy encodings
//! (VEX forms are not claimed and stay #UD):
//! - SSE3: ADDSUBPS/PD, HADDPS/PD, HSUBPS/PD, MOVSLDUP, MOVSHDUP, MOVDDUP,
//!   LDDQU (FISTTP belongs to the x87 group; MONITOR/MWAIT are not
//!   advertised);
//! - SSSE3 on XMM and on MMX registers: PSHUFB, PHADDW/D/SW, PHSUBW/D/SW,
//!   PMADDUBSW, PMULHRSW, PSIGNB/W/D, PABSB/W/D, PALIGNR;
//! - SSE4.1: PMOVSX*/PMOVZX*, PMULDQ, PMULLD, PMINS*/PMAXS*/PMINU*/PMAXU*,
//!   PCMPEQQ, PACKUSDW, PTEST, PBLENDW, BLENDPS/PD, BLENDVPS/PD, PBLENDVB,
//!   PEXTRB/W/D/Q, PINSRB/D/Q, EXTRACTPS, INSERTPS, PHMINPOSUW, MPSADBW,
//!   DPPS/DPPD, ROUNDPS/PD/SS/SD, MOVNTDQA;
//! - SSE4.2: PCMPGTQ, CRC32, PCMPESTRI/PCMPESTRM/PCMPISTRI/PCMPISTRM
//!   (POPCNT lives in the bits group).
//!
//! Exceptions: CRC32 works on general registers and needs no SSE state;
//! the XMM forms make the SSE device checks first, the MMX forms the MMX
//! ones (#UD, #NM, then #MF for a pending x87 exception) and then enter
//! MMX state. 16-byte memory operands must be aligned
//! except for LDDQU and PCMPxSTRx (SDM vol. 2 table 2-21, note 1, checked
//! on hardware); narrower operands never need alignment. SIMD
//! floating-point exceptions are merged before the destination is written.
//!
//! The arithmetic lives in pure modules: [`ops`] (integer, strings, CRC)
//! and [`fp`] (floating point).

use iced_x86::{Code, Instruction, Register};

use crate::block::Handler;
use crate::fault::Result;
use crate::flags;
use crate::interp::fp::{check_mmx, check_sse, is_reg, mm_index, xmm_index};
use crate::interp::operand::{read_reg, reg_size, write_reg};
use crate::interp::Ctx;
use crate::simd::{lane, set_lane, Mxcsr, F32, F64};

#[path = "sse4_fp.rs"]
mod fp;
#[path = "sse4_ops.rs"]
mod ops;
#[cfg(test)]
#[path = "sse4_tests.rs"]
mod tests;

use ops::Hop;

/// The handler for `insn` if this group owns it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    use Code::*;
    Some(match insn.code() {
        // SSE3
        Addsubps_xmm_xmmm128 => addsubps,
        Addsubpd_xmm_xmmm128 => addsubpd,
        Haddps_xmm_xmmm128 => haddps,
        Haddpd_xmm_xmmm128 => haddpd,
        Hsubps_xmm_xmmm128 => hsubps,
        Hsubpd_xmm_xmmm128 => hsubpd,
        Movsldup_xmm_xmmm128 => movsldup,
        Movshdup_xmm_xmmm128 => movshdup,
        Movddup_xmm_xmmm64 => movddup,
        Lddqu_xmm_m128 => lddqu,
        // SSSE3
        Pshufb_xmm_xmmm128 => pshufb_x,
        Pshufb_mm_mmm64 => pshufb_m,
        Phaddw_xmm_xmmm128 => phaddw_x,
        Phaddw_mm_mmm64 => phaddw_m,
        Phaddd_xmm_xmmm128 => phaddd_x,
        Phaddd_mm_mmm64 => phaddd_m,
        Phaddsw_xmm_xmmm128 => phaddsw_x,
        Phaddsw_mm_mmm64 => phaddsw_m,
        Phsubw_xmm_xmmm128 => phsubw_x,
        Phsubw_mm_mmm64 => phsubw_m,
        Phsubd_xmm_xmmm128 => phsubd_x,
        Phsubd_mm_mmm64 => phsubd_m,
        Phsubsw_xmm_xmmm128 => phsubsw_x,
        Phsubsw_mm_mmm64 => phsubsw_m,
        Pmaddubsw_xmm_xmmm128 => pmaddubsw_x,
        Pmaddubsw_mm_mmm64 => pmaddubsw_m,
        Pmulhrsw_xmm_xmmm128 => pmulhrsw_x,
        Pmulhrsw_mm_mmm64 => pmulhrsw_m,
        Psignb_xmm_xmmm128 => psignb_x,
        Psignb_mm_mmm64 => psignb_m,
        Psignw_xmm_xmmm128 => psignw_x,
        Psignw_mm_mmm64 => psignw_m,
        Psignd_xmm_xmmm128 => psignd_x,
        Psignd_mm_mmm64 => psignd_m,
        Pabsb_xmm_xmmm128 => pabsb_x,
        Pabsb_mm_mmm64 => pabsb_m,
        Pabsw_xmm_xmmm128 => pabsw_x,
        Pabsw_mm_mmm64 => pabsw_m,
        Pabsd_xmm_xmmm128 => pabsd_x,
        Pabsd_mm_mmm64 => pabsd_m,
        Palignr_xmm_xmmm128_imm8 => palignr_x,
        Palignr_mm_mmm64_imm8 => palignr_m,
        // SSE4.1
        Pmovsxbw_xmm_xmmm64 => pmovsxbw,
        Pmovsxbd_xmm_xmmm32 => pmovsxbd,
        Pmovsxbq_xmm_xmmm16 => pmovsxbq,
        Pmovsxwd_xmm_xmmm64 => pmovsxwd,
        Pmovsxwq_xmm_xmmm32 => pmovsxwq,
        Pmovsxdq_xmm_xmmm64 => pmovsxdq,
        Pmovzxbw_xmm_xmmm64 => pmovzxbw,
        Pmovzxbd_xmm_xmmm32 => pmovzxbd,
        Pmovzxbq_xmm_xmmm16 => pmovzxbq,
        Pmovzxwd_xmm_xmmm64 => pmovzxwd,
        Pmovzxwq_xmm_xmmm32 => pmovzxwq,
        Pmovzxdq_xmm_xmmm64 => pmovzxdq,
        Pmuldq_xmm_xmmm128 => pmuldq,
        Pmulld_xmm_xmmm128 => pmulld,
        Pminsb_xmm_xmmm128 => pminsb,
        Pminsd_xmm_xmmm128 => pminsd,
        Pminuw_xmm_xmmm128 => pminuw,
        Pminud_xmm_xmmm128 => pminud,
        Pmaxsb_xmm_xmmm128 => pmaxsb,
        Pmaxsd_xmm_xmmm128 => pmaxsd,
        Pmaxuw_xmm_xmmm128 => pmaxuw,
        Pmaxud_xmm_xmmm128 => pmaxud,
        Pcmpeqq_xmm_xmmm128 => pcmpeqq,
        Packusdw_xmm_xmmm128 => packusdw,
        Ptest_xmm_xmmm128 => ptest,
        Pblendw_xmm_xmmm128_imm8 => pblendw,
        Blendps_xmm_xmmm128_imm8 => blendps,
        Blendpd_xmm_xmmm128_imm8 => blendpd,
        Pblendvb_xmm_xmmm128 => pblendvb,
        Blendvps_xmm_xmmm128 => blendvps,
        Blendvpd_xmm_xmmm128 => blendvpd,
        Pextrb_r32m8_xmm_imm8 | Pextrb_r64m8_xmm_imm8 => pextrb,
        Pextrw_r32m16_xmm_imm8 | Pextrw_r64m16_xmm_imm8 => pextrw,
        Pextrd_rm32_xmm_imm8 => pextrd,
        Pextrq_rm64_xmm_imm8 => pextrq,
        Extractps_rm32_xmm_imm8 | Extractps_r64m32_xmm_imm8 => extractps,
        Pinsrb_xmm_r32m8_imm8 | Pinsrb_xmm_r64m8_imm8 => pinsrb,
        Pinsrd_xmm_rm32_imm8 => pinsrd,
        Pinsrq_xmm_rm64_imm8 => pinsrq,
        Insertps_xmm_xmmm32_imm8 => insertps,
        Phminposuw_xmm_xmmm128 => phminposuw,
        Mpsadbw_xmm_xmmm128_imm8 => mpsadbw,
        Dpps_xmm_xmmm128_imm8 => dpps,
        Dppd_xmm_xmmm128_imm8 => dppd,
        Roundps_xmm_xmmm128_imm8 => roundps,
        Roundpd_xmm_xmmm128_imm8 => roundpd,
        Roundss_xmm_xmmm32_imm8 => roundss,
        Roundsd_xmm_xmmm64_imm8 => roundsd,
        Movntdqa_xmm_m128 => movntdqa,
        // SSE4.2
        Pcmpgtq_xmm_xmmm128 => pcmpgtq,
        Crc32_r32_rm8 | Crc32_r64_rm8 | Crc32_r32_rm16 | Crc32_r32_rm32 | Crc32_r64_rm64 => crc32,
        Pcmpestri_xmm_xmmm128_imm8 => pcmpestri,
        Pcmpestri64_xmm_xmmm128_imm8 => pcmpestri64,
        Pcmpestrm_xmm_xmmm128_imm8 => pcmpestrm,
        Pcmpestrm64_xmm_xmmm128_imm8 => pcmpestrm64,
        Pcmpistri_xmm_xmmm128_imm8 => pcmpistri,
        Pcmpistrm_xmm_xmmm128_imm8 => pcmpistrm,
        _ => return None,
    })
}

// ---------------------------------------------------------------------
// Operand plumbing
// ---------------------------------------------------------------------

/// Index of the XMM destination (operand 0).
#[inline(always)]
fn dst(insn: &Instruction) -> usize {
    xmm_index(insn.op0_register())
}

/// `xmm1 = f(xmm1, xmm2/m)`; 16-byte memory operands must be aligned.
#[inline(always)]
fn xmm_op(ctx: &mut Ctx, insn: &Instruction, f: impl FnOnce(u128, u128) -> u128) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = ctx.xmm_operand(insn, 1, true)?;
    let d = dst(insn);
    ctx.cpu.xmm[d] = f(ctx.cpu.xmm[d], b);
    Ok(())
}

/// `xmm1 = f(xmm1, xmm2/m, imm8)`.
#[inline(always)]
fn xmm_imm(
    ctx: &mut Ctx,
    insn: &Instruction,
    f: impl FnOnce(u128, u128, u8) -> u128,
) -> Result<()> {
    let imm = insn.immediate8();
    xmm_op(ctx, insn, |a, b| f(a, b, imm))
}

/// `mm1 = f(mm1, mm2/m64)`, entering MMX state.
#[inline(always)]
fn mm_op(ctx: &mut Ctx, insn: &Instruction, f: impl FnOnce(u128, u128) -> u128) -> Result<()> {
    check_mmx(ctx.cpu)?;
    let b = ctx.mm_operand(insn, 1)?;
    let d = mm_index(insn.op0_register());
    ctx.cpu.mmx_enter();
    let r = f(ctx.cpu.mm(d) as u128, b as u128);
    ctx.cpu.set_mm(d, r as u64);
    Ok(())
}

/// `xmm1 = f(xmm1, xmm2/m, MXCSR)` for floating point: the exceptions are
/// merged (and may fault) before the destination is written. `f` returns
/// the flags to report, already resolved per computation step (see
/// [`fp`]), so they are merged as they are.
#[inline(always)]
fn xmm_fp(
    ctx: &mut Ctx,
    insn: &Instruction,
    f: impl FnOnce(u128, u128, Mxcsr) -> (u128, u32),
) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = ctx.xmm_operand(insn, 1, true)?;
    let d = dst(insn);
    let (r, fl) = f(ctx.cpu.xmm[d], b, Mxcsr(ctx.cpu.mxcsr));
    ctx.simd_fp_exceptions(fl)?;
    ctx.cpu.xmm[d] = r;
    Ok(())
}

/// Defines the XMM and MMX handlers of SSSE3 operations `$e(a, b, n)`
/// (`n` = register width in bytes). Brace-delimited tables, one per line.
macro_rules! ssse3 {
    ($($x:ident, $m:ident => |$a:ident, $b:ident, $n:ident| $e:expr;)*) => {$(
        fn $x(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
            let $n = 16;
            xmm_op(ctx, insn, |$a, $b| $e)
        }
        fn $m(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
            let $n = 8;
            mm_op(ctx, insn, |$a, $b| $e)
        }
    )*};
}

/// Defines XMM handlers `xmm1 = $e(a, b)`.
macro_rules! xmm2 {
    ($($name:ident => |$a:ident, $b:ident| $e:expr;)*) => {$(
        fn $name(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
            xmm_op(ctx, insn, |$a, $b| $e)
        }
    )*};
}

/// Defines XMM handlers `xmm1 = $e(a, b, imm8)`.
macro_rules! xmm_imm {
    ($($name:ident => |$a:ident, $b:ident, $i:ident| $e:expr;)*) => {$(
        fn $name(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
            xmm_imm(ctx, insn, |$a, $b, $i| $e)
        }
    )*};
}

/// Defines floating-point XMM handlers `(xmm1, flags) = $e(a, b, MXCSR, imm8)`.
macro_rules! xmm_fp {
    ($($name:ident => |$a:ident, $b:ident, $mx:ident, $i:ident| $e:expr;)*) => {$(
        fn $name(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
            let $i = insn.immediate8();
            xmm_fp(ctx, insn, |$a, $b, $mx| $e)
        }
    )*};
}

// ---------------------------------------------------------------------
// SSE3
// ---------------------------------------------------------------------

xmm_fp! {
    addsubps => |a, b, mx, _i| fp::addsub(F32, a, b, mx);
    addsubpd => |a, b, mx, _i| fp::addsub(F64, a, b, mx);
    haddps => |a, b, mx, _i| fp::hop(F32, false, a, b, mx);
    haddpd => |a, b, mx, _i| fp::hop(F64, false, a, b, mx);
    hsubps => |a, b, mx, _i| fp::hop(F32, true, a, b, mx);
    hsubpd => |a, b, mx, _i| fp::hop(F64, true, a, b, mx);
}

// MOVDDUP reads 8 bytes from memory (no alignment), or the register's low
// quadword.
xmm2! {
    movsldup => |_a, b| dup32(lane(b, 32, 0), lane(b, 32, 2));
    movshdup => |_a, b| dup32(lane(b, 32, 1), lane(b, 32, 3));
    movddup => |_a, b| (b as u64 as u128) * (1 | 1 << 64);
}

/// `[lo, lo, hi, hi]` in dwords.
#[inline(always)]
fn dup32(lo: u64, hi: u64) -> u128 {
    (lo as u128 | (hi as u128) << 64) * (1 | 1 << 32)
}

/// LDDQU: an unaligned 16-byte load.
fn lddqu(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let v = ctx.read_m128(insn, false)?;
    ctx.cpu.xmm[dst(insn)] = v;
    Ok(())
}

// ---------------------------------------------------------------------
// SSSE3
// ---------------------------------------------------------------------

// The lane-wise operations need no width: an MMX value's upper half is
// zero and the result is truncated to 64 bits.
ssse3! {
    pshufb_x, pshufb_m => |a, b, n| ops::pshufb(a, b, n);
    phaddw_x, phaddw_m => |a, b, n| ops::phop(a, b, 16, Hop::Add, n);
    phaddd_x, phaddd_m => |a, b, n| ops::phop(a, b, 32, Hop::Add, n);
    phaddsw_x, phaddsw_m => |a, b, n| ops::phop(a, b, 16, Hop::AddSat, n);
    phsubw_x, phsubw_m => |a, b, n| ops::phop(a, b, 16, Hop::Sub, n);
    phsubd_x, phsubd_m => |a, b, n| ops::phop(a, b, 32, Hop::Sub, n);
    phsubsw_x, phsubsw_m => |a, b, n| ops::phop(a, b, 16, Hop::SubSat, n);
    pmaddubsw_x, pmaddubsw_m => |a, b, _n| ops::pmaddubsw(a, b);
    pmulhrsw_x, pmulhrsw_m => |a, b, _n| ops::pmulhrsw(a, b);
    psignb_x, psignb_m => |a, b, _n| ops::psign(a, b, 8);
    psignw_x, psignw_m => |a, b, _n| ops::psign(a, b, 16);
    psignd_x, psignd_m => |a, b, _n| ops::psign(a, b, 32);
    pabsb_x, pabsb_m => |_a, b, _n| ops::pabs(b, 8);
    pabsw_x, pabsw_m => |_a, b, _n| ops::pabs(b, 16);
    pabsd_x, pabsd_m => |_a, b, _n| ops::pabs(b, 32);
}

fn palignr_x(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    xmm_imm(ctx, insn, |a, b, i| ops::palignr(a, b, i, 16))
}

fn palignr_m(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let imm = insn.immediate8();
    mm_op(ctx, insn, |a, b| ops::palignr(a, b, imm, 8))
}

// ---------------------------------------------------------------------
// SSE4.1 integer
// ---------------------------------------------------------------------

xmm2! {
    pmovsxbw => |_a, b| ops::pmovx(b, 8, 16, true);
    pmovsxbd => |_a, b| ops::pmovx(b, 8, 32, true);
    pmovsxbq => |_a, b| ops::pmovx(b, 8, 64, true);
    pmovsxwd => |_a, b| ops::pmovx(b, 16, 32, true);
    pmovsxwq => |_a, b| ops::pmovx(b, 16, 64, true);
    pmovsxdq => |_a, b| ops::pmovx(b, 32, 64, true);
    pmovzxbw => |_a, b| ops::pmovx(b, 8, 16, false);
    pmovzxbd => |_a, b| ops::pmovx(b, 8, 32, false);
    pmovzxbq => |_a, b| ops::pmovx(b, 8, 64, false);
    pmovzxwd => |_a, b| ops::pmovx(b, 16, 32, false);
    pmovzxwq => |_a, b| ops::pmovx(b, 16, 64, false);
    pmovzxdq => |_a, b| ops::pmovx(b, 32, 64, false);
    pmuldq => |a, b| ops::pmuldq(a, b);
    pmulld => |a, b| ops::pmulld(a, b);
    pminsb => |a, b| ops::pminmax_s(a, b, 8, false);
    pminsd => |a, b| ops::pminmax_s(a, b, 32, false);
    pminuw => |a, b| ops::pminmax_u(a, b, 16, false);
    pminud => |a, b| ops::pminmax_u(a, b, 32, false);
    pmaxsb => |a, b| ops::pminmax_s(a, b, 8, true);
    pmaxsd => |a, b| ops::pminmax_s(a, b, 32, true);
    pmaxuw => |a, b| ops::pminmax_u(a, b, 16, true);
    pmaxud => |a, b| ops::pminmax_u(a, b, 32, true);
    pcmpeqq => |a, b| ops::pcmpeqq(a, b);
    packusdw => |a, b| ops::packusdw(a, b);
    phminposuw => |_a, b| ops::phminposuw(b);
}

xmm_imm! {
    pblendw => |a, b, i| ops::blend_imm(a, b, 16, i);
    blendps => |a, b, i| ops::blend_imm(a, b, 32, i & 0xf);
    blendpd => |a, b, i| ops::blend_imm(a, b, 64, i & 3);
    mpsadbw => |a, b, i| ops::mpsadbw(a, b, i);
    insertps_reg => |a, b, i| ops::insertps(a, lane(b, 32, (i >> 6) as u32) as u32, i);
}

/// Variable blends: the mask is the implicit XMM0.
fn blendv(ctx: &mut Ctx, insn: &Instruction, bits: u32) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = ctx.xmm_operand(insn, 1, true)?;
    let d = dst(insn);
    ctx.cpu.xmm[d] = ops::blendv(ctx.cpu.xmm[d], b, ctx.cpu.xmm[0], bits);
    Ok(())
}

fn pblendvb(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    blendv(ctx, insn, 8)
}

fn blendvps(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    blendv(ctx, insn, 32)
}

fn blendvpd(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    blendv(ctx, insn, 64)
}

/// PTEST: ZF and CF from the AND / ANDN tests; AF, OF, PF, SF cleared.
fn ptest(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = ctx.xmm_operand(insn, 1, true)?;
    let (zf, cf) = ops::ptest(ctx.cpu.xmm[dst(insn)], b);
    let f = if zf { flags::ZF } else { 0 } | if cf { flags::CF } else { 0 };
    ctx.cpu.rflags = (ctx.cpu.rflags & !flags::STATUS) | f;
    Ok(())
}

/// INSERTPS: from a register, lane imm8[7:6] of the source; from memory,
/// the 32-bit operand (imm8[7:6] ignored).
fn insertps(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    if is_reg(insn, 1) {
        return insertps_reg(ctx, insn);
    }
    check_sse(ctx.cpu)?;
    let src = ctx.xmm_operand(insn, 1, false)? as u32;
    let d = dst(insn);
    ctx.cpu.xmm[d] = ops::insertps(ctx.cpu.xmm[d], src, insn.immediate8());
    Ok(())
}

/// MOVNTDQA: an aligned 16-byte load (the non-temporal hint is moot).
fn movntdqa(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let v = ctx.read_m128(insn, true)?;
    ctx.cpu.xmm[dst(insn)] = v;
    Ok(())
}

/// PEXTRB/W/D/Q and EXTRACTPS: lane imm8 (modulo the lane count) of the
/// XMM source to a general register (zero-extended to its full width) or
/// to memory of the lane's size.
fn extract(ctx: &mut Ctx, insn: &Instruction, bits: u32) -> Result<()> {
    check_sse(ctx.cpu)?;
    let i = insn.immediate8() as u32 & (128 / bits - 1);
    let v = lane(ctx.cpu.xmm[xmm_index(insn.op1_register())], bits, i);
    if is_reg(insn, 0) {
        write_reg(ctx.cpu, insn.op0_register(), v);
        Ok(())
    } else {
        ctx.write_op(insn, 0, (bits / 8) as u8, v)
    }
}

fn pextrb(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    extract(ctx, insn, 8)
}

fn pextrw(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    extract(ctx, insn, 16)
}

fn pextrd(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    extract(ctx, insn, 32)
}

fn pextrq(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    extract(ctx, insn, 64)
}

fn extractps(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    extract(ctx, insn, 32)
}

/// PINSRB/D/Q: the low `bits` of a general register or memory operand into
/// lane imm8 (modulo the lane count).
fn insert(ctx: &mut Ctx, insn: &Instruction, bits: u32) -> Result<()> {
    check_sse(ctx.cpu)?;
    let v = if is_reg(insn, 1) {
        read_reg(ctx.cpu, insn.op1_register())
    } else {
        ctx.read_op(insn, 1, (bits / 8) as u8)?
    };
    let i = insn.immediate8() as u32 & (128 / bits - 1);
    let d = dst(insn);
    ctx.cpu.xmm[d] = set_lane(ctx.cpu.xmm[d], bits, i, v);
    Ok(())
}

fn pinsrb(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    insert(ctx, insn, 8)
}

fn pinsrd(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    insert(ctx, insn, 32)
}

fn pinsrq(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    insert(ctx, insn, 64)
}

// ---------------------------------------------------------------------
// SSE4.1 floating point
// ---------------------------------------------------------------------

xmm_fp! {
    dpps => |a, b, mx, i| fp::dpps(a, b, i, mx);
    dppd => |a, b, mx, i| fp::dppd(a, b, i, mx);
    roundps => |_a, b, mx, i| fp::round_packed(F32, b, i, mx);
    roundpd => |_a, b, mx, i| fp::round_packed(F64, b, i, mx);
    roundss => |a, b, mx, i| fp::round_scalar(F32, a, b, i, mx);
    roundsd => |a, b, mx, i| fp::round_scalar(F64, a, b, i, mx);
}

// ---------------------------------------------------------------------
// SSE4.2
// ---------------------------------------------------------------------

xmm2! {
    pcmpgtq => |a, b| ops::pcmpgtq(a, b);
}

/// CRC32 r32/r64, r/m8/16/32/64: CRC-32C of the source bytes accumulated
/// into the low 32 bits of the destination, zero-extended. A general
/// register instruction: no SSE device checks, flags unaffected.
fn crc32(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let (v, size) = if is_reg(insn, 1) {
        let r = insn.op1_register();
        (read_reg(ctx.cpu, r), reg_size(r))
    } else {
        let size = insn.memory_size().size() as u8;
        (ctx.read_op(insn, 1, size)?, size)
    };
    let d = insn.op0_register();
    let crc = ops::crc32c(read_reg(ctx.cpu, d) as u32, v, size);
    write_reg(ctx.cpu, d, crc as u64);
    Ok(())
}

/// Which result a PCMPxSTRx produces.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StrOut {
    Index,
    Mask,
}

/// Length registers of the explicit-length forms.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StrLen {
    Implicit,
    /// EAX/EDX as signed 32-bit values.
    Explicit32,
    /// RAX/RDX (REX.W) as signed 64-bit values.
    Explicit64,
}

/// PCMPESTRI/PCMPESTRM/PCMPISTRI/PCMPISTRM: index to ECX or mask to XMM0,
/// and CF/ZF/SF/OF (AF, PF cleared). Memory operands need no alignment.
#[inline(always)]
fn pcmpstr(ctx: &mut Ctx, insn: &Instruction, len: StrLen, out: StrOut) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = ctx.xmm_operand(insn, 1, false)?;
    let a = ctx.cpu.xmm[dst(insn)];
    let imm = insn.immediate8();
    let (la, lb) = match len {
        StrLen::Implicit => (ops::str_len_implicit(a, imm), ops::str_len_implicit(b, imm)),
        StrLen::Explicit32 => (
            ops::str_len_explicit(read_reg(ctx.cpu, Register::EAX) as i32 as i64, imm),
            ops::str_len_explicit(read_reg(ctx.cpu, Register::EDX) as i32 as i64, imm),
        ),
        StrLen::Explicit64 => (
            ops::str_len_explicit(read_reg(ctx.cpu, Register::RAX) as i64, imm),
            ops::str_len_explicit(read_reg(ctx.cpu, Register::RDX) as i64, imm),
        ),
    };
    let (res, f) = ops::pcmpstr(a, b, la, lb, imm);
    match out {
        StrOut::Index => write_reg(ctx.cpu, Register::ECX, ops::str_index(res, imm) as u64),
        StrOut::Mask => ctx.cpu.xmm[0] = ops::str_mask(res, imm),
    }
    ctx.cpu.rflags = (ctx.cpu.rflags & !flags::STATUS) | f;
    Ok(())
}

fn pcmpestri(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    pcmpstr(ctx, insn, StrLen::Explicit32, StrOut::Index)
}

fn pcmpestri64(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    pcmpstr(ctx, insn, StrLen::Explicit64, StrOut::Index)
}

fn pcmpestrm(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    pcmpstr(ctx, insn, StrLen::Explicit32, StrOut::Mask)
}

fn pcmpestrm64(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    pcmpstr(ctx, insn, StrLen::Explicit64, StrOut::Mask)
}

fn pcmpistri(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    pcmpstr(ctx, insn, StrLen::Implicit, StrOut::Index)
}

fn pcmpistrm(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    pcmpstr(ctx, insn, StrLen::Implicit, StrOut::Mask)
}
