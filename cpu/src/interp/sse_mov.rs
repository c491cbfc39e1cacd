//! SSE/SSE2/MMX data movement: MOVAPS/MOVUPS/MOVAPD/MOVUPD/MOVDQA/MOVDQU,
//! the non-temporal stores (MOVNTPS/MOVNTPD/MOVNTDQ/MOVNTQ: plain stores
//! here, there is no cache to bypass), MOVSS/MOVSD, MOVLPS/MOVHPS/MOVLPD/
//! MOVHPD/MOVHLPS/MOVLHPS, MOVD/MOVQ in all their forms (general
//! registers, MMX, XMM, memory; MOVQ2DQ/MOVDQ2Q), MASKMOVQ/MASKMOVDQU and
//! the sign-mask extractions MOVMSKPS/MOVMSKPD/PMOVMSKB.

use iced_x86::{Code, Instruction, OpKind, Register};

use super::{commit_mm, load128, load_small, md, mm_src, store128, store_small, xd, xmm_src};
use crate::block::Handler;
use crate::fault::Result;
use crate::interp::fp::{check_mmx, check_sse, is_reg, mm_index, x87_pending, xmm_index};
use crate::interp::operand::{read_reg, reg_size, write_reg};
use crate::interp::Ctx;
use crate::simd;

const LO64: u128 = u64::MAX as u128;
const LO32: u128 = u32::MAX as u128;

pub(super) fn handler(code: Code) -> Option<Handler> {
    use Code::*;
    Some(match code {
        Movaps_xmm_xmmm128 | Movapd_xmm_xmmm128 | Movdqa_xmm_xmmm128 => load_a,
        Movups_xmm_xmmm128 | Movupd_xmm_xmmm128 | Movdqu_xmm_xmmm128 => load_u,
        Movaps_xmmm128_xmm | Movapd_xmmm128_xmm | Movdqa_xmmm128_xmm => store_a,
        Movntps_m128_xmm | Movntpd_m128_xmm | Movntdq_m128_xmm => store_a,
        Movups_xmmm128_xmm | Movupd_xmmm128_xmm | Movdqu_xmmm128_xmm => store_u,
        Movss_xmm_xmmm32 => movss_load,
        Movsd_xmm_xmmm64 => movsd_load,
        Movss_xmmm32_xmm => movss_store,
        Movsd_xmmm64_xmm => movsd_store,
        Movlps_xmm_m64 | Movlpd_xmm_m64 => movlp_load,
        Movhps_xmm_m64 | Movhpd_xmm_m64 => movhp_load,
        Movlps_m64_xmm | Movlpd_m64_xmm => movlp_store,
        Movhps_m64_xmm | Movhpd_m64_xmm => movhp_store,
        Movhlps_xmm_xmm => movhlps,
        Movlhps_xmm_xmm => movlhps,
        Movd_xmm_rm32 | Movq_xmm_rm64 => movd_to_xmm,
        Movd_rm32_xmm | Movq_rm64_xmm => movd_from_xmm,
        Movq_xmm_xmmm64 => movq_to_xmm,
        Movq_xmmm64_xmm => movq_from_xmm,
        Movd_mm_rm32 | Movq_mm_rm64 => movd_to_mm,
        Movd_rm32_mm | Movq_rm64_mm => movd_from_mm,
        Movq_mm_mmm64 => movq_to_mm,
        Movq_mmm64_mm | Movntq_m64_mm => movq_from_mm,
        Movq2dq_xmm_mm => movq2dq,
        Movdq2q_mm_xmm => movdq2q,
        Maskmovq_rDI_mm_mm => maskmovq,
        Maskmovdqu_rDI_xmm_xmm => maskmovdqu,
        Movmskps_r32_xmm | Movmskps_r64_xmm => movmskps,
        Movmskpd_r32_xmm | Movmskpd_r64_xmm => movmskpd,
        Pmovmskb_r32_xmm | Pmovmskb_r64_xmm => pmovmskb_xmm,
        Pmovmskb_r32_mm | Pmovmskb_r64_mm => pmovmskb_mm,
        _ => return None,
    })
}

/// MOVAPS/MOVAPD/MOVDQA xmm, xmm/m128 (aligned).
fn load_a(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let v = if is_reg(insn, 1) {
        ctx.cpu.xmm[xmm_index(insn.op1_register())]
    } else {
        load128(ctx, insn, true)?
    };
    ctx.cpu.xmm[xd(insn)] = v;
    Ok(())
}

/// MOVUPS/MOVUPD/MOVDQU xmm, xmm/m128.
fn load_u(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let v = if is_reg(insn, 1) {
        ctx.cpu.xmm[xmm_index(insn.op1_register())]
    } else {
        load128(ctx, insn, false)?
    };
    ctx.cpu.xmm[xd(insn)] = v;
    Ok(())
}

/// MOVAPS/MOVAPD/MOVDQA xmm/m128, xmm and MOVNTPS/MOVNTPD/MOVNTDQ m128, xmm.
fn store_a(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let v = ctx.cpu.xmm[xmm_index(insn.op1_register())];
    if is_reg(insn, 0) {
        ctx.cpu.xmm[xd(insn)] = v;
        return Ok(());
    }
    store128(ctx, insn, v, true)
}

/// MOVUPS/MOVUPD/MOVDQU xmm/m128, xmm.
fn store_u(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let v = ctx.cpu.xmm[xmm_index(insn.op1_register())];
    if is_reg(insn, 0) {
        ctx.cpu.xmm[xd(insn)] = v;
        return Ok(());
    }
    store128(ctx, insn, v, false)
}

/// MOVSS xmm, xmm/m32: a register source replaces the low dword, a
/// memory source zeroes the rest of the register.
fn movss_load(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let d = xd(insn);
    if is_reg(insn, 1) {
        let s = ctx.cpu.xmm[xmm_index(insn.op1_register())];
        ctx.cpu.xmm[d] = (ctx.cpu.xmm[d] & !LO32) | (s & LO32);
    } else {
        ctx.cpu.xmm[d] = load_small(ctx, insn, 4)? as u128;
    }
    Ok(())
}

/// MOVSD xmm, xmm/m64 (as MOVSS, on the low quadword).
fn movsd_load(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let d = xd(insn);
    if is_reg(insn, 1) {
        let s = ctx.cpu.xmm[xmm_index(insn.op1_register())];
        ctx.cpu.xmm[d] = (ctx.cpu.xmm[d] & !LO64) | (s & LO64);
    } else {
        ctx.cpu.xmm[d] = load_small(ctx, insn, 8)? as u128;
    }
    Ok(())
}

/// MOVSS xmm/m32, xmm (the register form merges like the load form).
fn movss_store(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let s = ctx.cpu.xmm[xmm_index(insn.op1_register())];
    if is_reg(insn, 0) {
        let d = xd(insn);
        ctx.cpu.xmm[d] = (ctx.cpu.xmm[d] & !LO32) | (s & LO32);
        return Ok(());
    }
    store_small(ctx, insn, 4, s as u64)
}

/// MOVSD xmm/m64, xmm.
fn movsd_store(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let s = ctx.cpu.xmm[xmm_index(insn.op1_register())];
    if is_reg(insn, 0) {
        let d = xd(insn);
        ctx.cpu.xmm[d] = (ctx.cpu.xmm[d] & !LO64) | (s & LO64);
        return Ok(());
    }
    store_small(ctx, insn, 8, s as u64)
}

/// MOVLPS/MOVLPD xmm, m64: the low quadword.
fn movlp_load(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let v = load_small(ctx, insn, 8)?;
    let d = xd(insn);
    ctx.cpu.xmm[d] = (ctx.cpu.xmm[d] & !LO64) | v as u128;
    Ok(())
}

/// MOVHPS/MOVHPD xmm, m64: the high quadword.
fn movhp_load(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let v = load_small(ctx, insn, 8)?;
    let d = xd(insn);
    ctx.cpu.xmm[d] = (ctx.cpu.xmm[d] & LO64) | (v as u128) << 64;
    Ok(())
}

/// MOVLPS/MOVLPD m64, xmm.
fn movlp_store(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let v = ctx.cpu.xmm[xmm_index(insn.op1_register())] as u64;
    store_small(ctx, insn, 8, v)
}

/// MOVHPS/MOVHPD m64, xmm.
fn movhp_store(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let v = (ctx.cpu.xmm[xmm_index(insn.op1_register())] >> 64) as u64;
    store_small(ctx, insn, 8, v)
}

/// MOVHLPS xmm1, xmm2: xmm1[63:0] = xmm2[127:64].
fn movhlps(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let s = ctx.cpu.xmm[xmm_index(insn.op1_register())];
    let d = xd(insn);
    ctx.cpu.xmm[d] = (ctx.cpu.xmm[d] & !LO64) | s >> 64;
    Ok(())
}

/// MOVLHPS xmm1, xmm2: xmm1[127:64] = xmm2[63:0].
fn movlhps(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let s = ctx.cpu.xmm[xmm_index(insn.op1_register())];
    let d = xd(insn);
    ctx.cpu.xmm[d] = (ctx.cpu.xmm[d] & LO64) | s << 64;
    Ok(())
}

/// A general-register or memory source of MOVD/MOVQ/PINSRW-like forms,
/// `size` bytes when in memory.
#[inline]
pub(super) fn gpr_or_mem(ctx: &mut Ctx, insn: &Instruction, i: u32, size: u8) -> Result<u64> {
    if is_reg(insn, i) {
        Ok(read_reg(ctx.cpu, insn.op_register(i)))
    } else {
        load_small(ctx, insn, size)
    }
}

/// Size in bytes of the general-register/memory operand `i` of MOVD (4)
/// or MOVQ (8).
#[inline]
fn rm_size(insn: &Instruction, i: u32) -> u8 {
    if is_reg(insn, i) {
        reg_size(insn.op_register(i))
    } else {
        insn.memory_size().size().clamp(1, 8) as u8
    }
}

/// Writes a general-register (32-bit writes zero-extend) or memory destination.
#[inline]
fn to_gpr_or_mem(ctx: &mut Ctx, insn: &Instruction, size: u8, v: u64) -> Result<()> {
    if is_reg(insn, 0) {
        write_reg(ctx.cpu, insn.op0_register(), v);
        Ok(())
    } else {
        store_small(ctx, insn, size, v)
    }
}

/// MOVD xmm, r/m32 and MOVQ xmm, r/m64: zero-extended.
fn movd_to_xmm(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let size = rm_size(insn, 1);
    let v = gpr_or_mem(ctx, insn, 1, size)? & crate::flags::mask(size);
    ctx.cpu.xmm[xd(insn)] = v as u128;
    Ok(())
}

/// MOVD r/m32, xmm and MOVQ r/m64, xmm.
fn movd_from_xmm(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let size = rm_size(insn, 0);
    let v = ctx.cpu.xmm[xmm_index(insn.op1_register())] as u64 & crate::flags::mask(size);
    to_gpr_or_mem(ctx, insn, size, v)
}

/// MOVQ xmm, xmm/m64 (F3 0F 7E): zero-extends the low quadword.
fn movq_to_xmm(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let v = xmm_src(ctx, insn, 1, false)? & LO64;
    ctx.cpu.xmm[xd(insn)] = v;
    Ok(())
}

/// MOVQ xmm/m64, xmm (66 0F D6): a register destination is zero-extended.
fn movq_from_xmm(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let v = ctx.cpu.xmm[xmm_index(insn.op1_register())] & LO64;
    if is_reg(insn, 0) {
        ctx.cpu.xmm[xd(insn)] = v;
        return Ok(());
    }
    store_small(ctx, insn, 8, v as u64)
}

/// MOVD mm, r/m32 and MOVQ mm, r/m64.
fn movd_to_mm(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_mmx(ctx.cpu)?;
    let size = rm_size(insn, 1);
    let v = gpr_or_mem(ctx, insn, 1, size)? & crate::flags::mask(size);
    commit_mm(ctx.cpu, md(insn), v);
    Ok(())
}

/// MOVD r/m32, mm and MOVQ r/m64, mm.
fn movd_from_mm(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_mmx(ctx.cpu)?;
    let size = rm_size(insn, 0);
    let v = ctx.cpu.mm(mm_index(insn.op1_register())) & crate::flags::mask(size);
    to_gpr_or_mem(ctx, insn, size, v)?;
    ctx.cpu.mmx_enter();
    Ok(())
}

/// MOVQ mm, mm/m64.
fn movq_to_mm(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_mmx(ctx.cpu)?;
    let v = mm_src(ctx, insn, 1)?;
    commit_mm(ctx.cpu, md(insn), v);
    Ok(())
}

/// MOVQ mm/m64, mm and MOVNTQ m64, mm.
fn movq_from_mm(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_mmx(ctx.cpu)?;
    let v = ctx.cpu.mm(mm_index(insn.op1_register()));
    if is_reg(insn, 0) {
        commit_mm(ctx.cpu, md(insn), v);
        return Ok(());
    }
    store_small(ctx, insn, 8, v)?;
    ctx.cpu.mmx_enter();
    Ok(())
}

/// MOVQ2DQ xmm, mm: an SSE2 instruction (OSFXSR checks) that also enters
/// MMX state.
fn movq2dq(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    x87_pending(ctx.cpu)?;
    let v = ctx.cpu.mm(mm_index(insn.op1_register()));
    ctx.cpu.xmm[xd(insn)] = v as u128;
    ctx.cpu.mmx_enter();
    Ok(())
}

/// MOVDQ2Q mm, xmm.
fn movdq2q(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    x87_pending(ctx.cpu)?;
    let v = ctx.cpu.xmm[xmm_index(insn.op1_register())] as u64;
    commit_mm(ctx.cpu, md(insn), v);
    Ok(())
}

/// Stores the bytes of `data` (`n` bytes) whose `mask` byte has its top
/// bit set to DS:rDI (segment overridable), the address size given by
/// the implicit operand. An all-zero mask accesses no memory and never
/// faults (the SDM leaves that implementation-dependent). Otherwise the
/// span from the first to the last selected byte is checked as a write
/// before any byte is stored, so a fault stores nothing; unselected bytes
/// are never written (they may be MMIO).
fn masked_store(ctx: &mut Ctx, insn: &Instruction, data: u128, mask: u128, n: u32) -> Result<()> {
    let sel: u32 = (0..n).fold(0, |m, i| m | (((mask >> (8 * i + 7)) & 1) as u32) << i);
    if sel == 0 {
        return Ok(());
    }
    let (base, amask) = match insn.op0_kind() {
        OpKind::MemorySegDI => (Register::DI, 0xffffu64),
        OpKind::MemorySegEDI => (Register::EDI, 0xffff_ffff),
        _ => (Register::RDI, u64::MAX),
    };
    let seg = crate::interp::operand::seg_of(insn.memory_segment());
    let di = read_reg(ctx.cpu, base);
    let first = sel.trailing_zeros();
    let last = 31 - sel.leading_zeros();
    let span = (last - first + 1) as usize;
    ctx.check_range(seg, di.wrapping_add(first as u64) & amask, span, 1, true)?;
    for i in first..=last {
        if sel >> i & 1 != 0 {
            let off = di.wrapping_add(i as u64) & amask;
            ctx.write_seg(seg, off, 1, (data >> (8 * i)) as u64 & 0xff)?;
        }
    }
    Ok(())
}

/// MASKMOVQ mm1, mm2: byte-masked store of mm1 to [rDI].
fn maskmovq(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_mmx(ctx.cpu)?;
    let data = ctx.cpu.mm(mm_index(insn.op1_register()));
    let mask = ctx.cpu.mm(mm_index(insn.op2_register()));
    masked_store(ctx, insn, data as u128, mask as u128, 8)?;
    ctx.cpu.mmx_enter();
    Ok(())
}

/// MASKMOVDQU xmm1, xmm2: byte-masked store of xmm1 to [rDI].
fn maskmovdqu(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let data = ctx.cpu.xmm[xmm_index(insn.op1_register())];
    let mask = ctx.cpu.xmm[xmm_index(insn.op2_register())];
    masked_store(ctx, insn, data, mask, 16)
}

/// MOVMSKPS r32/r64, xmm (zero-extended).
fn movmskps(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let m = simd::movmskps(ctx.cpu.xmm[xmm_index(insn.op1_register())]);
    write_reg(ctx.cpu, insn.op0_register(), m as u64);
    Ok(())
}

/// MOVMSKPD r32/r64, xmm.
fn movmskpd(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let m = simd::movmskpd(ctx.cpu.xmm[xmm_index(insn.op1_register())]);
    write_reg(ctx.cpu, insn.op0_register(), m as u64);
    Ok(())
}

/// PMOVMSKB r32/r64, xmm.
fn pmovmskb_xmm(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_sse(ctx.cpu)?;
    let m = simd::pmovmskb(ctx.cpu.xmm[xmm_index(insn.op1_register())]);
    write_reg(ctx.cpu, insn.op0_register(), m as u64);
    Ok(())
}

/// PMOVMSKB r32/r64, mm.
fn pmovmskb_mm(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_mmx(ctx.cpu)?;
    let m = simd::pmovmskb(ctx.cpu.mm(mm_index(insn.op1_register())) as u128);
    write_reg(ctx.cpu, insn.op0_register(), m as u64);
    ctx.cpu.mmx_enter();
    Ok(())
}
