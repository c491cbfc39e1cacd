//! Saving and restoring the x87/SSE state: FNSTENV/FLDENV and
//! FNSAVE/FRSTOR (16- and 32-bit layouts; the protected-mode format, and
//! the real/virtual-8086 format with 20/32-bit linear pointers),
//! FXSAVE/FXRSTOR (and the REX.W forms with 64-bit FIP/FDP),
//! XSAVE/XRSTOR (and the REX.W forms) for state components 0 (x87) and
//! 1 (SSE) in the standard format, and XGETBV/XSETBV.
//!
//! Every image is checked as a whole (segment limits, pages, alignment)
//! before any byte moves or any state changes, so a faulting instruction
//! has no effect.
//!
//! FXSAVE writes the defined part of its area (bytes 0..288, or 0..416
//! with XMM8-15 in 64-bit mode) and leaves the rest alone, as the host
//! does. MXCSR_MASK is 0x0000FFFF (DAZ supported); FXRSTOR and XRSTOR
//! raise #GP(0) for MXCSR bits outside it.
//!
//! XSAVE: XINUSE is taken to be all ones (the SDM allows it), so
//! XSTATE_BV gains every requested component; only XSTATE_BV of the
//! header is written (XCOMP_BV and the reserved bytes are left alone, per
//! the SDM pseudocode). XRSTOR accepts only the standard format: #GP(0)
//! when XCOMP_BV is not zero (the compacted format is not supported),
//! when header bytes 16..23 are not zero, or when XSTATE_BV has bits
//! outside XCR0; components requested but clear in XSTATE_BV are
//! initialised (x87: the FNINIT state with zeroed registers; SSE: the
//! XMM registers of the current mode zeroed); MXCSR is loaded from memory
//! whenever the SSE component is requested. XGETBV with ECX = 1 returns
//! XCR0 (XINUSE reported as all enabled components).

use iced_x86::{Instruction, MemorySize, Mnemonic};

use super::{begin, set_cw, B, ES, FLAGS};
use crate::fault::{Fault, Result};
use crate::interp::fp::check_x87;
use crate::interp::operand::mem_operand;
use crate::interp::Ctx;
use crate::state::{cr, reg, Cpu, Mode};
use crate::x87::{Fpu, F80};

/// MXCSR bits FXRSTOR/XRSTOR accept (stored at offset 28 of the image).
pub const MXCSR_MASK: u32 = 0x0000_ffff;
/// The XCR0 components this model supports: x87 and SSE.
pub const XCR0_SUPPORTED: u64 = 3;
/// Size of the standard-format XSAVE area (legacy region and header).
pub const XSAVE_SIZE: usize = 576;

/// (32-bit layout, real/virtual-8086 format) of an FNSTENV-family image.
fn env_format(cpu: &Cpu, insn: &Instruction) -> (bool, bool) {
    let op32 = matches!(
        insn.memory_size(),
        MemorySize::FpuEnv28 | MemorySize::FpuState108
    );
    let real = matches!(cpu.mode, Mode::Real | Mode::Virtual8086);
    (op32, real)
}

/// Writes the FNSTENV image into `out`; returns its length (14 or 28).
fn store_env(f: &Fpu, op32: bool, real: bool, out: &mut [u8]) -> usize {
    if !real {
        let img = f.store_env(op32);
        out[..img.len()].copy_from_slice(&img);
        return img.len();
    }
    // Real-address and virtual-8086 mode: 20/32-bit linear pointers.
    let ip = ((f.fcs as u32) << 4).wrapping_add(f.fip as u32);
    let dp = ((f.fds as u32) << 4).wrapping_add(f.fdp as u32);
    let fop = (f.fop & 0x7ff) as u32;
    let tw = f.stored_tag_word();
    if op32 {
        let words = [
            f.cw as u32 | 0xffff_0000,
            f.sw as u32 | 0xffff_0000,
            tw as u32 | 0xffff_0000,
            (ip & 0xffff) | 0xffff_0000,
            ((ip & 0xffff_0000) >> 4) | fop,
            (dp & 0xffff) | 0xffff_0000,
            (dp & 0xffff_0000) >> 4,
        ];
        for (i, w) in words.iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        28
    } else {
        let words = [
            f.cw,
            f.sw,
            tw,
            ip as u16,
            (((ip & 0xf_0000) >> 4) | fop) as u16,
            dp as u16,
            ((dp & 0xf_0000) >> 4) as u16,
        ];
        for (i, w) in words.iter().enumerate() {
            out[2 * i..2 * i + 2].copy_from_slice(&w.to_le_bytes());
        }
        14
    }
}

/// Loads an FNSTENV image (the control word as stored; the caller
/// normalizes it); returns its length.
fn load_env(f: &mut Fpu, img: &[u8], op32: bool, real: bool) -> usize {
    if !real {
        let n = f.load_env(img, op32);
        if !op32 {
            f.fop = 0; // the 16-bit protected-mode image has no opcode
        }
        return n;
    }
    let w16 = |o: usize| u16::from_le_bytes([img[o], img[o + 1]]) as u32;
    let w32 = |o: usize| u32::from_le_bytes([img[o], img[o + 1], img[o + 2], img[o + 3]]);
    let (cw, sw, tw, ip, fop, dp, n) = if op32 {
        let (a, b) = (w32(12), w32(16));
        let (c, d) = (w32(20), w32(24));
        (
            w16(0),
            w16(4),
            w16(8),
            (a & 0xffff) | ((b & 0x0fff_f000) << 4),
            b & 0x7ff,
            (c & 0xffff) | ((d & 0x0fff_f000) << 4),
            28,
        )
    } else {
        let (a, b) = (w16(6), w16(8));
        let (c, d) = (w16(10), w16(12));
        (
            w16(0),
            w16(2),
            w16(4),
            a | ((b & 0xf000) << 4),
            b & 0x7ff,
            c | ((d & 0xf000) << 4),
            14,
        )
    };
    f.cw = cw as u16;
    f.sw = sw as u16;
    f.tw = tw as u16;
    f.fip = ip as u64;
    f.fcs = 0;
    f.fop = fop as u16;
    f.fdp = dp as u64;
    f.fds = 0;
    n
}

/// FNSTENV m14/m28: stores the environment, then masks all exceptions
/// (which clears ES and B).
pub(super) fn fnstenv(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_x87(ctx.cpu)?;
    let (op32, real) = env_format(ctx.cpu, insn);
    let mut img = [0u8; 28];
    let n = store_env(&ctx.cpu.fpu, op32, real, &mut img);
    ctx.write_mem(insn, &img[..n], 1)?;
    let f = &mut ctx.cpu.fpu;
    f.cw |= FLAGS;
    f.sw &= !(ES | B);
    Ok(())
}

/// FLDENV m14/m28.
pub(super) fn fldenv(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let (op32, real) = env_format(ctx.cpu, insn);
    let mut img = [0u8; 28];
    let n = if op32 { 28 } else { 14 };
    ctx.read_mem(insn, &mut img[..n], 1)?;
    let f = &mut ctx.cpu.fpu;
    load_env(f, &img, op32, real);
    set_cw(f, f.cw);
    Ok(())
}

/// FNSAVE m94/m108: the environment and ST(0)..ST(7), then FNINIT.
pub(super) fn fnsave(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_x87(ctx.cpu)?;
    let (op32, real) = env_format(ctx.cpu, insn);
    let mut img = [0u8; 108];
    let f = &ctx.cpu.fpu;
    let mut n = store_env(f, op32, real, &mut img);
    for i in 0..8 {
        img[n..n + 10].copy_from_slice(&f.st(i).to_bytes());
        n += 10;
    }
    ctx.write_mem(insn, &img[..n], 1)?;
    ctx.cpu.fpu.init();
    Ok(())
}

/// FRSTOR m94/m108.
pub(super) fn frstor(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let (op32, real) = env_format(ctx.cpu, insn);
    let mut img = [0u8; 108];
    let len = if op32 { 108 } else { 94 };
    ctx.read_mem(insn, &mut img[..len], 1)?;
    let f = &mut ctx.cpu.fpu;
    let mut o = load_env(f, &img, op32, real);
    for i in 0..8 {
        let mut b = [0u8; 10];
        b.copy_from_slice(&img[o..o + 10]);
        let p = f.phys(i);
        f.regs[p] = F80::from_bytes(b);
        o += 10;
    }
    set_cw(f, f.cw);
    Ok(())
}

/// Number of XMM registers of the current mode.
fn xmm_count(cpu: &Cpu) -> usize {
    if cpu.bitness == 64 {
        16
    } else {
        8
    }
}

/// The FXSAVE legacy region; returns how many bytes are defined.
fn legacy_image(cpu: &Cpu, img: &mut [u8; 512], rex_w: bool) -> usize {
    cpu.fpu.fxsave_x87(&mut img[..160], rex_w);
    img[24..28].copy_from_slice(&cpu.mxcsr.to_le_bytes());
    img[28..32].copy_from_slice(&MXCSR_MASK.to_le_bytes());
    let n = xmm_count(cpu);
    for i in 0..n {
        img[160 + 16 * i..176 + 16 * i].copy_from_slice(&cpu.xmm[i].to_le_bytes());
    }
    160 + 16 * n
}

/// Loads the XMM registers of the current mode from a legacy region.
fn load_xmm(cpu: &mut Cpu, img: &[u8]) {
    for i in 0..xmm_count(cpu) {
        let mut b = [0u8; 16];
        b.copy_from_slice(&img[160 + 16 * i..176 + 16 * i]);
        cpu.xmm[i] = u128::from_le_bytes(b);
    }
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn le64(b: &[u8], o: usize) -> u64 {
    le32(b, o) as u64 | (le32(b, o + 4) as u64) << 32
}

/// Restores the x87 part of a legacy region (control word normalized,
/// ES/B recomputed).
fn restore_x87(f: &mut Fpu, img: &[u8], rex_w: bool) {
    f.fxrstor_x87(img, rex_w);
    set_cw(f, f.cw);
}

/// FXSAVE/FXSAVE64 m512 (16-byte aligned).
pub(super) fn fxsave(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_x87(ctx.cpu)?;
    let rex_w = insn.mnemonic() == Mnemonic::Fxsave64;
    let (s, off) = mem_operand(ctx.cpu, insn);
    ctx.check_range(s, off, 512, 16, true)?;
    let mut img = [0u8; 512];
    let n = legacy_image(ctx.cpu, &mut img, rex_w);
    ctx.write_bytes(s, off, &img[..n], 1)
}

/// FXRSTOR/FXRSTOR64 m512 (16-byte aligned; #GP(0) for reserved MXCSR bits).
pub(super) fn fxrstor(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_x87(ctx.cpu)?;
    let rex_w = insn.mnemonic() == Mnemonic::Fxrstor64;
    let mut img = [0u8; 512];
    ctx.read_mem(insn, &mut img, 16)?;
    let mxcsr = le32(&img, 24);
    if mxcsr & !MXCSR_MASK != 0 {
        return Err(Fault::gp(0));
    }
    let cpu = &mut *ctx.cpu;
    restore_x87(&mut cpu.fpu, &img, rex_w);
    cpu.mxcsr = mxcsr;
    load_xmm(cpu, &img);
    Ok(())
}

/// The checks of XSAVE/XRSTOR: #UD without CR4.OSXSAVE, #NM with CR0.TS.
fn xsave_checks(cpu: &Cpu) -> Result<()> {
    if cpu.cr4 & cr::CR4_OSXSAVE == 0 {
        return Err(Fault::ud());
    }
    if cpu.cr0 & cr::CR0_TS != 0 {
        return Err(Fault::nm());
    }
    Ok(())
}

/// The requested-feature bitmap: XCR0 AND EDX:EAX.
fn rfbm(cpu: &Cpu) -> u64 {
    let edx_eax = (cpu.gpr[reg::RDX] & 0xffff_ffff) << 32 | (cpu.gpr[reg::RAX] & 0xffff_ffff);
    cpu.xcr0 & edx_eax
}

/// XSAVE/XSAVE64 mem (64-byte aligned, standard format).
pub(super) fn xsave(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    xsave_checks(ctx.cpu)?;
    let rex_w = insn.mnemonic() == Mnemonic::Xsave64;
    let rfbm = rfbm(ctx.cpu);
    let (s, off) = mem_operand(ctx.cpu, insn);
    ctx.check_range(s, off, XSAVE_SIZE, 64, true)?;
    let at = |o: u64| off.wrapping_add(o);
    let mut hdr = [0u8; 8];
    ctx.read_bytes(s, at(512), &mut hdr, 1)?;
    let mut img = [0u8; 512];
    let n = legacy_image(ctx.cpu, &mut img, rex_w);
    if rfbm & 1 != 0 {
        ctx.write_bytes(s, off, &img[..24], 1)?;
        ctx.write_bytes(s, at(32), &img[32..160], 1)?;
    }
    if rfbm & 2 != 0 {
        ctx.write_bytes(s, at(24), &img[24..32], 1)?;
        ctx.write_bytes(s, at(160), &img[160..n], 1)?;
    }
    let bv = u64::from_le_bytes(hdr) | rfbm;
    ctx.write_bytes(s, at(512), &bv.to_le_bytes(), 1)
}

/// XRSTOR/XRSTOR64 mem (64-byte aligned, standard format only).
pub(super) fn xrstor(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    xsave_checks(ctx.cpu)?;
    let rex_w = insn.mnemonic() == Mnemonic::Xrstor64;
    let rfbm = rfbm(ctx.cpu);
    let mut img = [0u8; XSAVE_SIZE];
    ctx.read_mem(insn, &mut img, 64)?;
    let xstate_bv = le64(&img, 512);
    let xcomp_bv = le64(&img, 520);
    let reserved = le64(&img, 528);
    if xcomp_bv != 0 || reserved != 0 || xstate_bv & !ctx.cpu.xcr0 != 0 {
        return Err(Fault::gp(0));
    }
    let mxcsr = le32(&img, 24);
    if rfbm & 2 != 0 && mxcsr & !MXCSR_MASK != 0 {
        return Err(Fault::gp(0));
    }
    let cpu = &mut *ctx.cpu;
    if rfbm & 1 != 0 {
        if xstate_bv & 1 != 0 {
            restore_x87(&mut cpu.fpu, &img, rex_w);
        } else {
            cpu.fpu = Fpu::new();
        }
    }
    if rfbm & 2 != 0 {
        cpu.mxcsr = mxcsr;
        if xstate_bv & 2 != 0 {
            load_xmm(cpu, &img);
        } else {
            let n = xmm_count(cpu);
            cpu.xmm[..n].fill(0);
        }
    }
    Ok(())
}

/// XGETBV: EDX:EAX = XCR[ECX] (0: XCR0; 1: XINUSE, reported as XCR0).
pub(super) fn xgetbv(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    let cpu = &mut *ctx.cpu;
    if cpu.cr4 & cr::CR4_OSXSAVE == 0 {
        return Err(Fault::ud());
    }
    let v = match cpu.gpr[reg::RCX] as u32 {
        0 | 1 => cpu.xcr0,
        _ => return Err(Fault::gp(0)),
    };
    cpu.gpr[reg::RAX] = v & 0xffff_ffff;
    cpu.gpr[reg::RDX] = v >> 32;
    Ok(())
}

/// XSETBV: XCR[ECX] = EDX:EAX at CPL 0; only XCR0 with x87 set and
/// nothing beyond x87|SSE.
pub(super) fn xsetbv(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    let cpu = &mut *ctx.cpu;
    if cpu.cr4 & cr::CR4_OSXSAVE == 0 {
        return Err(Fault::ud());
    }
    if cpu.cpl != 0 || cpu.gpr[reg::RCX] as u32 != 0 {
        return Err(Fault::gp(0));
    }
    let v = (cpu.gpr[reg::RDX] & 0xffff_ffff) << 32 | (cpu.gpr[reg::RAX] & 0xffff_ffff);
    if v & 1 == 0 || v & !XCR0_SUPPORTED != 0 {
        return Err(Fault::gp(0));
    }
    cpu.xcr0 = v;
    Ok(())
}
