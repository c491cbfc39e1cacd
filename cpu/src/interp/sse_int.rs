//! Packed integer instructions, MMX forms (on mm, mm/m64) and SSE2 forms
//! (on xmm, xmm/m128, 16-byte aligned): PADD*/PSUB* (wrapping and
//! saturating), PMULLW/PMULHW/PMULHUW/PMULUDQ/PMADDWD, PAVGB/W, PMIN/PMAX
//! UB/SW, PSADBW, PAND/PANDN/POR/PXOR (and the bitwise ANDPS/ANDNPS/ORPS/
//! XORPS/PD, identical on bits), PCMPEQ*/PCMPGT*, the shifts by register
//! and immediate, PSLLDQ/PSRLDQ, the packs and unpacks (UNPCKL/HPS/PD
//! too), PSHUFD/PSHUFHW/PSHUFLW/PSHUFW, SHUFPS/SHUFPD, PEXTRW/PINSRW and
//! EMMS.
//!
//! One generic handler per shape, instantiated per operation (`OP`, a
//! constant), so each instruction gets its own monomorphic handler. MMX
//! forms run the 128-bit lane functions of [`crate::simd`] on the
//! zero-extended 64-bit values: lane-wise operations keep their low half;
//! the packs and unpacks, whose lanes cross halves, are rearranged (see
//! [`mmx_op`]).

use iced_x86::{Code, Instruction};

use super::sse_mov::gpr_or_mem;
use super::{commit_mm, load128, md, mm_src, xd};
use crate::block::Handler;
use crate::fault::Result;
use crate::interp::fp::{check_mmx, check_sse, is_reg, mm_index, xmm_index};
use crate::interp::operand::write_reg;
use crate::interp::Ctx;
use crate::simd;

// Operation numbers (the `OP` parameter of the generic handlers).
const PADDB: u8 = 0;
const PADDW: u8 = 1;
const PADDD: u8 = 2;
const PADDQ: u8 = 3;
const PSUBB: u8 = 4;
const PSUBW: u8 = 5;
const PSUBD: u8 = 6;
const PSUBQ: u8 = 7;
const PADDSB: u8 = 8;
const PADDSW: u8 = 9;
const PSUBSB: u8 = 10;
const PSUBSW: u8 = 11;
const PADDUSB: u8 = 12;
const PADDUSW: u8 = 13;
const PSUBUSB: u8 = 14;
const PSUBUSW: u8 = 15;
const PMULLW: u8 = 16;
const PMULHW: u8 = 17;
const PMULHUW: u8 = 18;
const PMULUDQ: u8 = 19;
const PMADDWD: u8 = 20;
const PAVGB: u8 = 21;
const PAVGW: u8 = 22;
const PMINUB: u8 = 23;
const PMAXUB: u8 = 24;
const PMINSW: u8 = 25;
const PMAXSW: u8 = 26;
const PSADBW: u8 = 27;
const PAND: u8 = 28;
const PANDN: u8 = 29;
const POR: u8 = 30;
const PXOR: u8 = 31;
const PCMPEQB: u8 = 32;
const PCMPEQW: u8 = 33;
const PCMPEQD: u8 = 34;
const PCMPGTB: u8 = 35;
const PCMPGTW: u8 = 36;
const PCMPGTD: u8 = 37;
const PACKSSWB: u8 = 38;
const PACKSSDW: u8 = 39;
const PACKUSWB: u8 = 40;
const PUNPCKLBW: u8 = 41;
const PUNPCKLWD: u8 = 42;
const PUNPCKLDQ: u8 = 43;
const PUNPCKLQDQ: u8 = 44;
const PUNPCKHBW: u8 = 45;
const PUNPCKHWD: u8 = 46;
const PUNPCKHDQ: u8 = 47;
const PUNPCKHQDQ: u8 = 48;
const PSLLW: u8 = 49;
const PSLLD: u8 = 50;
const PSLLQ: u8 = 51;
const PSRLW: u8 = 52;
const PSRLD: u8 = 53;
const PSRLQ: u8 = 54;
const PSRAW: u8 = 55;
const PSRAD: u8 = 56;
const PSLLDQ: u8 = 57;
const PSRLDQ: u8 = 58;
const PSHUFD: u8 = 59;
const PSHUFHW: u8 = 60;
const PSHUFLW: u8 = 61;
const SHUFPS: u8 = 62;
const SHUFPD: u8 = 63;

pub(super) fn handler(code: Code) -> Option<Handler> {
    use Code::*;
    Some(match code {
        Paddb_xmm_xmmm128 => xmm_bin::<PADDB>,
        Paddw_xmm_xmmm128 => xmm_bin::<PADDW>,
        Paddd_xmm_xmmm128 => xmm_bin::<PADDD>,
        Paddq_xmm_xmmm128 => xmm_bin::<PADDQ>,
        Psubb_xmm_xmmm128 => xmm_bin::<PSUBB>,
        Psubw_xmm_xmmm128 => xmm_bin::<PSUBW>,
        Psubd_xmm_xmmm128 => xmm_bin::<PSUBD>,
        Psubq_xmm_xmmm128 => xmm_bin::<PSUBQ>,
        Paddsb_xmm_xmmm128 => xmm_bin::<PADDSB>,
        Paddsw_xmm_xmmm128 => xmm_bin::<PADDSW>,
        Psubsb_xmm_xmmm128 => xmm_bin::<PSUBSB>,
        Psubsw_xmm_xmmm128 => xmm_bin::<PSUBSW>,
        Paddusb_xmm_xmmm128 => xmm_bin::<PADDUSB>,
        Paddusw_xmm_xmmm128 => xmm_bin::<PADDUSW>,
        Psubusb_xmm_xmmm128 => xmm_bin::<PSUBUSB>,
        Psubusw_xmm_xmmm128 => xmm_bin::<PSUBUSW>,
        Pmullw_xmm_xmmm128 => xmm_bin::<PMULLW>,
        Pmulhw_xmm_xmmm128 => xmm_bin::<PMULHW>,
        Pmulhuw_xmm_xmmm128 => xmm_bin::<PMULHUW>,
        Pmuludq_xmm_xmmm128 => xmm_bin::<PMULUDQ>,
        Pmaddwd_xmm_xmmm128 => xmm_bin::<PMADDWD>,
        Pavgb_xmm_xmmm128 => xmm_bin::<PAVGB>,
        Pavgw_xmm_xmmm128 => xmm_bin::<PAVGW>,
        Pminub_xmm_xmmm128 => xmm_bin::<PMINUB>,
        Pmaxub_xmm_xmmm128 => xmm_bin::<PMAXUB>,
        Pminsw_xmm_xmmm128 => xmm_bin::<PMINSW>,
        Pmaxsw_xmm_xmmm128 => xmm_bin::<PMAXSW>,
        Psadbw_xmm_xmmm128 => xmm_bin::<PSADBW>,
        Pand_xmm_xmmm128 | Andps_xmm_xmmm128 | Andpd_xmm_xmmm128 => xmm_bin::<PAND>,
        Pandn_xmm_xmmm128 | Andnps_xmm_xmmm128 | Andnpd_xmm_xmmm128 => xmm_bin::<PANDN>,
        Por_xmm_xmmm128 | Orps_xmm_xmmm128 | Orpd_xmm_xmmm128 => xmm_bin::<POR>,
        Pxor_xmm_xmmm128 | Xorps_xmm_xmmm128 | Xorpd_xmm_xmmm128 => xmm_bin::<PXOR>,
        Pcmpeqb_xmm_xmmm128 => xmm_bin::<PCMPEQB>,
        Pcmpeqw_xmm_xmmm128 => xmm_bin::<PCMPEQW>,
        Pcmpeqd_xmm_xmmm128 => xmm_bin::<PCMPEQD>,
        Pcmpgtb_xmm_xmmm128 => xmm_bin::<PCMPGTB>,
        Pcmpgtw_xmm_xmmm128 => xmm_bin::<PCMPGTW>,
        Pcmpgtd_xmm_xmmm128 => xmm_bin::<PCMPGTD>,
        Packsswb_xmm_xmmm128 => xmm_bin::<PACKSSWB>,
        Packssdw_xmm_xmmm128 => xmm_bin::<PACKSSDW>,
        Packuswb_xmm_xmmm128 => xmm_bin::<PACKUSWB>,
        Punpcklbw_xmm_xmmm128 => xmm_bin::<PUNPCKLBW>,
        Punpcklwd_xmm_xmmm128 => xmm_bin::<PUNPCKLWD>,
        Punpckldq_xmm_xmmm128 | Unpcklps_xmm_xmmm128 => xmm_bin::<PUNPCKLDQ>,
        Punpcklqdq_xmm_xmmm128 | Unpcklpd_xmm_xmmm128 => xmm_bin::<PUNPCKLQDQ>,
        Punpckhbw_xmm_xmmm128 => xmm_bin::<PUNPCKHBW>,
        Punpckhwd_xmm_xmmm128 => xmm_bin::<PUNPCKHWD>,
        Punpckhdq_xmm_xmmm128 | Unpckhps_xmm_xmmm128 => xmm_bin::<PUNPCKHDQ>,
        Punpckhqdq_xmm_xmmm128 | Unpckhpd_xmm_xmmm128 => xmm_bin::<PUNPCKHQDQ>,
        Psllw_xmm_xmmm128 => xmm_bin::<PSLLW>,
        Pslld_xmm_xmmm128 => xmm_bin::<PSLLD>,
        Psllq_xmm_xmmm128 => xmm_bin::<PSLLQ>,
        Psrlw_xmm_xmmm128 => xmm_bin::<PSRLW>,
        Psrld_xmm_xmmm128 => xmm_bin::<PSRLD>,
        Psrlq_xmm_xmmm128 => xmm_bin::<PSRLQ>,
        Psraw_xmm_xmmm128 => xmm_bin::<PSRAW>,
        Psrad_xmm_xmmm128 => xmm_bin::<PSRAD>,
        Psllw_xmm_imm8 => xmm_imm::<PSLLW>,
        Pslld_xmm_imm8 => xmm_imm::<PSLLD>,
        Psllq_xmm_imm8 => xmm_imm::<PSLLQ>,
        Psrlw_xmm_imm8 => xmm_imm::<PSRLW>,
        Psrld_xmm_imm8 => xmm_imm::<PSRLD>,
        Psrlq_xmm_imm8 => xmm_imm::<PSRLQ>,
        Psraw_xmm_imm8 => xmm_imm::<PSRAW>,
        Psrad_xmm_imm8 => xmm_imm::<PSRAD>,
        Pslldq_xmm_imm8 => xmm_imm::<PSLLDQ>,
        Psrldq_xmm_imm8 => xmm_imm::<PSRLDQ>,
        Pshufd_xmm_xmmm128_imm8 => xmm_shuf::<PSHUFD>,
        Pshufhw_xmm_xmmm128_imm8 => xmm_shuf::<PSHUFHW>,
        Pshuflw_xmm_xmmm128_imm8 => xmm_shuf::<PSHUFLW>,
        Shufps_xmm_xmmm128_imm8 => xmm_shuf::<SHUFPS>,
        Shufpd_xmm_xmmm128_imm8 => xmm_shuf::<SHUFPD>,
        Pextrw_r32_xmm_imm8 | Pextrw_r64_xmm_imm8 => pextrw_xmm,
        Pinsrw_xmm_r32m16_imm8 | Pinsrw_xmm_r64m16_imm8 => pinsrw_xmm,

        Paddb_mm_mmm64 => mmx_bin::<PADDB>,
        Paddw_mm_mmm64 => mmx_bin::<PADDW>,
        Paddd_mm_mmm64 => mmx_bin::<PADDD>,
        Paddq_mm_mmm64 => mmx_bin::<PADDQ>,
        Psubb_mm_mmm64 => mmx_bin::<PSUBB>,
        Psubw_mm_mmm64 => mmx_bin::<PSUBW>,
        Psubd_mm_mmm64 => mmx_bin::<PSUBD>,
        Psubq_mm_mmm64 => mmx_bin::<PSUBQ>,
        Paddsb_mm_mmm64 => mmx_bin::<PADDSB>,
        Paddsw_mm_mmm64 => mmx_bin::<PADDSW>,
        Psubsb_mm_mmm64 => mmx_bin::<PSUBSB>,
        Psubsw_mm_mmm64 => mmx_bin::<PSUBSW>,
        Paddusb_mm_mmm64 => mmx_bin::<PADDUSB>,
        Paddusw_mm_mmm64 => mmx_bin::<PADDUSW>,
        Psubusb_mm_mmm64 => mmx_bin::<PSUBUSB>,
        Psubusw_mm_mmm64 => mmx_bin::<PSUBUSW>,
        Pmullw_mm_mmm64 => mmx_bin::<PMULLW>,
        Pmulhw_mm_mmm64 => mmx_bin::<PMULHW>,
        Pmulhuw_mm_mmm64 => mmx_bin::<PMULHUW>,
        Pmuludq_mm_mmm64 => mmx_bin::<PMULUDQ>,
        Pmaddwd_mm_mmm64 => mmx_bin::<PMADDWD>,
        Pavgb_mm_mmm64 => mmx_bin::<PAVGB>,
        Pavgw_mm_mmm64 => mmx_bin::<PAVGW>,
        Pminub_mm_mmm64 => mmx_bin::<PMINUB>,
        Pmaxub_mm_mmm64 => mmx_bin::<PMAXUB>,
        Pminsw_mm_mmm64 => mmx_bin::<PMINSW>,
        Pmaxsw_mm_mmm64 => mmx_bin::<PMAXSW>,
        Psadbw_mm_mmm64 => mmx_bin::<PSADBW>,
        Pand_mm_mmm64 => mmx_bin::<PAND>,
        Pandn_mm_mmm64 => mmx_bin::<PANDN>,
        Por_mm_mmm64 => mmx_bin::<POR>,
        Pxor_mm_mmm64 => mmx_bin::<PXOR>,
        Pcmpeqb_mm_mmm64 => mmx_bin::<PCMPEQB>,
        Pcmpeqw_mm_mmm64 => mmx_bin::<PCMPEQW>,
        Pcmpeqd_mm_mmm64 => mmx_bin::<PCMPEQD>,
        Pcmpgtb_mm_mmm64 => mmx_bin::<PCMPGTB>,
        Pcmpgtw_mm_mmm64 => mmx_bin::<PCMPGTW>,
        Pcmpgtd_mm_mmm64 => mmx_bin::<PCMPGTD>,
        Packsswb_mm_mmm64 => mmx_bin::<PACKSSWB>,
        Packssdw_mm_mmm64 => mmx_bin::<PACKSSDW>,
        Packuswb_mm_mmm64 => mmx_bin::<PACKUSWB>,
        Punpcklbw_mm_mmm32 => mmx_bin::<PUNPCKLBW>,
        Punpcklwd_mm_mmm32 => mmx_bin::<PUNPCKLWD>,
        Punpckldq_mm_mmm32 => mmx_bin::<PUNPCKLDQ>,
        Punpckhbw_mm_mmm64 => mmx_bin::<PUNPCKHBW>,
        Punpckhwd_mm_mmm64 => mmx_bin::<PUNPCKHWD>,
        Punpckhdq_mm_mmm64 => mmx_bin::<PUNPCKHDQ>,
        Psllw_mm_mmm64 => mmx_bin::<PSLLW>,
        Pslld_mm_mmm64 => mmx_bin::<PSLLD>,
        Psllq_mm_mmm64 => mmx_bin::<PSLLQ>,
        Psrlw_mm_mmm64 => mmx_bin::<PSRLW>,
        Psrld_mm_mmm64 => mmx_bin::<PSRLD>,
        Psrlq_mm_mmm64 => mmx_bin::<PSRLQ>,
        Psraw_mm_mmm64 => mmx_bin::<PSRAW>,
        Psrad_mm_mmm64 => mmx_bin::<PSRAD>,
        Psllw_mm_imm8 => mmx_imm::<PSLLW>,
        Pslld_mm_imm8 => mmx_imm::<PSLLD>,
        Psllq_mm_imm8 => mmx_imm::<PSLLQ>,
        Psrlw_mm_imm8 => mmx_imm::<PSRLW>,
        Psrld_mm_imm8 => mmx_imm::<PSRLD>,
        Psrlq_mm_imm8 => mmx_imm::<PSRLQ>,
        Psraw_mm_imm8 => mmx_imm::<PSRAW>,
        Psrad_mm_imm8 => mmx_imm::<PSRAD>,
        Pshufw_mm_mmm64_imm8 => pshufw,
        Pextrw_r32_mm_imm8 | Pextrw_r64_mm_imm8 => pextrw_mm,
        Pinsrw_mm_r32m16_imm8 | Pinsrw_mm_r64m16_imm8 => pinsrw_mm,
        Emms => emms,
        _ => return None,
    })
}

/// The operation `OP` on two 128-bit values (`b` is the shift count for
/// the shifts by register: its low quadword).
#[inline(always)]
fn int_op<const OP: u8>(a: u128, b: u128) -> u128 {
    let count = b as u64;
    match OP {
        PADDB => simd::padd(a, b, 8),
        PADDW => simd::padd(a, b, 16),
        PADDD => simd::padd(a, b, 32),
        PADDQ => simd::padd(a, b, 64),
        PSUBB => simd::psub(a, b, 8),
        PSUBW => simd::psub(a, b, 16),
        PSUBD => simd::psub(a, b, 32),
        PSUBQ => simd::psub(a, b, 64),
        PADDSB => simd::padds(a, b, 8),
        PADDSW => simd::padds(a, b, 16),
        PSUBSB => simd::psubs(a, b, 8),
        PSUBSW => simd::psubs(a, b, 16),
        PADDUSB => simd::paddus(a, b, 8),
        PADDUSW => simd::paddus(a, b, 16),
        PSUBUSB => simd::psubus(a, b, 8),
        PSUBUSW => simd::psubus(a, b, 16),
        PMULLW => simd::pmullw(a, b),
        PMULHW => simd::pmulhw(a, b),
        PMULHUW => simd::pmulhuw(a, b),
        PMULUDQ => simd::pmuludq(a, b),
        PMADDWD => simd::pmaddwd(a, b),
        PAVGB => simd::pavg(a, b, 8),
        PAVGW => simd::pavg(a, b, 16),
        PMINUB => simd::pminub(a, b),
        PMAXUB => simd::pmaxub(a, b),
        PMINSW => simd::pminsw(a, b),
        PMAXSW => simd::pmaxsw(a, b),
        PSADBW => simd::psadbw(a, b),
        PAND => a & b,
        PANDN => !a & b,
        POR => a | b,
        PXOR => a ^ b,
        PCMPEQB => simd::pcmpeq(a, b, 8),
        PCMPEQW => simd::pcmpeq(a, b, 16),
        PCMPEQD => simd::pcmpeq(a, b, 32),
        PCMPGTB => simd::pcmpgt(a, b, 8),
        PCMPGTW => simd::pcmpgt(a, b, 16),
        PCMPGTD => simd::pcmpgt(a, b, 32),
        PACKSSWB => simd::packsswb(a, b),
        PACKSSDW => simd::packssdw(a, b),
        PACKUSWB => simd::packuswb(a, b),
        PUNPCKLBW => simd::punpckl(a, b, 8),
        PUNPCKLWD => simd::punpckl(a, b, 16),
        PUNPCKLDQ => simd::punpckl(a, b, 32),
        PUNPCKLQDQ => simd::punpckl(a, b, 64),
        PUNPCKHBW => simd::punpckh(a, b, 8),
        PUNPCKHWD => simd::punpckh(a, b, 16),
        PUNPCKHDQ => simd::punpckh(a, b, 32),
        PUNPCKHQDQ => simd::punpckh(a, b, 64),
        PSLLW => simd::psll(a, count, 16),
        PSLLD => simd::psll(a, count, 32),
        PSLLQ => simd::psll(a, count, 64),
        PSRLW => simd::psrl(a, count, 16),
        PSRLD => simd::psrl(a, count, 32),
        PSRLQ => simd::psrl(a, count, 64),
        PSRAW => simd::psra(a, count, 16),
        PSRAD => simd::psra(a, count, 32),
        PSLLDQ => simd::pslldq(a, count.min(255) as u8),
        PSRLDQ => simd::psrldq(a, count.min(255) as u8),
        _ => a,
    }
}

/// The operation `OP` on two MMX values. Lane-wise operations use the
/// low half of the 128-bit operation on the zero-extended values. A pack
/// of `a` then `b` is the low half of the 128-bit pack of `b:a` (whose
/// lanes are `a`'s then `b`'s). Unpacking the low halves of `a` and `b`
/// interleaves their low dwords, the low half of the 128-bit unpack; the
/// high halves give its high half.
#[inline(always)]
fn mmx_op<const OP: u8>(a: u64, b: u64) -> u64 {
    let (a, b) = (a as u128, b as u128);
    let r = match OP {
        PACKSSWB | PACKSSDW | PACKUSWB => int_op::<OP>(a | b << 64, 0),
        PUNPCKHBW => simd::punpckl(a, b, 8) >> 64,
        PUNPCKHWD => simd::punpckl(a, b, 16) >> 64,
        PUNPCKHDQ => simd::punpckl(a, b, 32) >> 64,
        _ => int_op::<OP>(a, b),
    };
    r as u64
}

/// `OP` xmm, xmm/m128 (aligned).
fn xmm_bin<const OP: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = if is_reg(insn, 1) {
        ctx.cpu.xmm[xmm_index(insn.op1_register())]
    } else {
        load128(ctx, insn, true)?
    };
    let d = xd(insn);
    ctx.cpu.xmm[d] = int_op::<OP>(ctx.cpu.xmm[d], b);
    Ok(())
}

/// `OP` xmm, imm8 (shifts).
fn xmm_imm<const OP: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let d = xd(insn);
    ctx.cpu.xmm[d] = int_op::<OP>(ctx.cpu.xmm[d], insn.immediate8() as u128);
    Ok(())
}

/// `OP` xmm, xmm/m128 (aligned), imm8: the shuffles.
fn xmm_shuf<const OP: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let b = if is_reg(insn, 1) {
        ctx.cpu.xmm[xmm_index(insn.op1_register())]
    } else {
        load128(ctx, insn, true)?
    };
    let imm = insn.immediate8();
    let d = xd(insn);
    ctx.cpu.xmm[d] = match OP {
        PSHUFD => simd::pshufd(b, imm),
        PSHUFHW => simd::pshufhw(b, imm),
        PSHUFLW => simd::pshuflw(b, imm),
        SHUFPS => simd::shufps(ctx.cpu.xmm[d], b, imm),
        _ => simd::shufpd(ctx.cpu.xmm[d], b, imm),
    };
    Ok(())
}

/// `OP` mm, mm/m64 (m32 for the PUNPCKL forms).
fn mmx_bin<const OP: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_mmx(ctx.cpu)?;
    let b = mm_src(ctx, insn, 1)?;
    let d = md(insn);
    let r = mmx_op::<OP>(ctx.cpu.mm(d), b);
    commit_mm(ctx.cpu, d, r);
    Ok(())
}

/// `OP` mm, imm8 (shifts).
fn mmx_imm<const OP: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_mmx(ctx.cpu)?;
    let d = md(insn);
    let r = mmx_op::<OP>(ctx.cpu.mm(d), insn.immediate8() as u64);
    commit_mm(ctx.cpu, d, r);
    Ok(())
}

/// PSHUFW mm, mm/m64, imm8 (PSHUFLW on the low quadword).
fn pshufw(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_mmx(ctx.cpu)?;
    let b = mm_src(ctx, insn, 1)?;
    let r = simd::pshuflw(b as u128, insn.immediate8()) as u64;
    commit_mm(ctx.cpu, md(insn), r);
    Ok(())
}

/// PEXTRW r32/r64, xmm, imm8: word `imm & 7`, zero-extended.
fn pextrw_xmm(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let v = simd::pextrw(
        ctx.cpu.xmm[xmm_index(insn.op1_register())],
        insn.immediate8(),
    );
    write_reg(ctx.cpu, insn.op0_register(), v as u64);
    Ok(())
}

/// PEXTRW r32/r64, mm, imm8: word `imm & 3`.
fn pextrw_mm(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_mmx(ctx.cpu)?;
    let v = simd::pextrw(
        ctx.cpu.mm(mm_index(insn.op1_register())) as u128,
        insn.immediate8() & 3,
    );
    write_reg(ctx.cpu, insn.op0_register(), v as u64);
    ctx.cpu.mmx_enter();
    Ok(())
}

/// PINSRW xmm, r32/m16, imm8: word `imm & 7`.
fn pinsrw_xmm(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let v = gpr_or_mem(ctx, insn, 1, 2)? as u32;
    let d = xd(insn);
    ctx.cpu.xmm[d] = simd::pinsrw(ctx.cpu.xmm[d], v, insn.immediate8());
    Ok(())
}

/// PINSRW mm, r32/m16, imm8: word `imm & 3`.
fn pinsrw_mm(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_mmx(ctx.cpu)?;
    let v = gpr_or_mem(ctx, insn, 1, 2)? as u32;
    let d = md(insn);
    let r = simd::pinsrw(ctx.cpu.mm(d) as u128, v, insn.immediate8() & 3) as u64;
    commit_mm(ctx.cpu, d, r);
    Ok(())
}

/// EMMS: all x87 tags empty and TOP = 0 (SDM vol. 1 table 9-2; the host
/// agrees). The other FSW bits are kept.
fn emms(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    check_mmx(ctx.cpu)?;
    ctx.cpu.fpu.set_top(0);
    ctx.cpu.fpu.tw = 0xffff;
    Ok(())
}
