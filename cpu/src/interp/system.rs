//! System instructions: HLT, MOV to/from control and debug registers,
//! INVLPG, WBINVD/INVD, CPUID (model in `crate::cpuid`), RDTSC/RDTSCP,
//! RDMSR/WRMSR (model in `crate::msr`), CLI/STI, SWAPGS, SYSCALL/SYSRET,
//! SYSENTER/SYSEXIT and the UD0/UD1/UD2 opcodes.
//!
//! Not modelled: virtual-8086 mode extensions and protected-mode virtual
//! interrupts (CR4.VME/PVI are not advertised, so CLI/STI simply fault when
//! IOPL is too low); debug registers are storage only (no breakpoints, GD
//! ignored); PCID.

use iced_x86::{Code, Instruction, Register};

use crate::block::Handler;
use crate::cpuid;
use crate::fault::{Fault, Result};
use crate::flags;
use crate::interp::operand::{mem_operand, read_reg, write_reg};
use crate::interp::Ctx;
use crate::memory::is_canonical;
use crate::msr;
use crate::state::{attr, cr, reg, Mode, SegReg, Segment};

/// The handler for `insn` if this group implements it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    use Code::*;
    Some(match insn.code() {
        Hlt => hlt,
        Mov_r32_cr | Mov_r64_cr => mov_from_cr,
        Mov_cr_r32 | Mov_cr_r64 => mov_to_cr,
        Mov_r32_dr | Mov_r64_dr => mov_from_dr,
        Mov_dr_r32 | Mov_dr_r64 => mov_to_dr,
        Invlpg_m => invlpg,
        Wbinvd | Invd => wbinvd,
        Cpuid => cpuid_,
        Rdtsc => rdtsc,
        Rdtscp => rdtscp,
        Rdmsr => rdmsr,
        Wrmsr => wrmsr,
        Cli => cli,
        Sti => sti,
        Swapgs => swapgs,
        Syscall => syscall,
        Sysretd | Sysretq => sysret,
        Sysenter => sysenter,
        Sysexitd | Sysexitq => sysexit,
        Ud2 | Ud0 | Ud0_r16_rm16 | Ud0_r32_rm32 | Ud0_r64_rm64 | Ud1_r16_rm16 | Ud1_r32_rm32 | Ud1_r64_rm64 => ud,
        _ => return None,
    })
}

/// CR0 bits that exist (the rest are ignored on write and read as zero).
const CR0_DEFINED: u64 = cr::CR0_PE
    | cr::CR0_MP
    | cr::CR0_EM
    | cr::CR0_TS
    | cr::CR0_ET
    | cr::CR0_NE
    | cr::CR0_WP
    | cr::CR0_AM
    | cr::CR0_NW
    | cr::CR0_CD
    | cr::CR0_PG;

/// #GP(0) unless at CPL 0 (V86 mode runs at CPL 3).
#[inline]
fn cpl0(ctx: &Ctx) -> Result<()> {
    if ctx.cpu.cpl != 0 {
        return Err(Fault::gp(0));
    }
    Ok(())
}

fn hlt(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    cpl0(ctx)?;
    ctx.cpu.halted = true;
    ctx.cpu.end_block = true;
    ctx.cpu.exit_request = true;
    Ok(())
}

fn ud(_: &mut Ctx, _: &Instruction) -> Result<()> {
    Err(Fault::ud())
}

/// Writes CR0 with the SDM's checks, activating or deactivating long mode
/// (EFER.LMA) as paging is switched with EFER.LME set.
pub(super) fn write_cr0(ctx: &mut Ctx, v: u64) -> Result<()> {
    if v >> 32 != 0 {
        return Err(Fault::gp(0));
    }
    // ET is hardwired to 1 on P6 and later; undefined bits are ignored.
    let v = (v & CR0_DEFINED) | cr::CR0_ET;
    if (v & cr::CR0_PG != 0 && v & cr::CR0_PE == 0) || (v & cr::CR0_NW != 0 && v & cr::CR0_CD == 0) {
        return Err(Fault::gp(0));
    }
    let cpu = &mut *ctx.cpu;
    let old = cpu.cr0;
    let pg_on = v & cr::CR0_PG != 0 && old & cr::CR0_PG == 0;
    let pg_off = v & cr::CR0_PG == 0 && old & cr::CR0_PG != 0;
    if pg_on && cpu.efer & cr::EFER_LME != 0 {
        // Activating IA-32e mode needs PAE, must not happen with CS.L set or
        // with a 16-bit TSS loaded.
        if cpu.cr4 & cr::CR4_PAE == 0 || cpu.seg[SegReg::Cs as usize].long() || matches!(cpu.tr.sys_type(), 1 | 3) {
            return Err(Fault::gp(0));
        }
    }
    if pg_off && cpu.mode == Mode::Long64 {
        return Err(Fault::gp(0));
    }
    cpu.cr0 = v;
    if pg_on && cpu.efer & cr::EFER_LME != 0 {
        cpu.efer |= cr::EFER_LMA;
    }
    if pg_off {
        cpu.efer &= !cr::EFER_LMA;
    }
    if (old ^ v) & (cr::CR0_PG | cr::CR0_WP | cr::CR0_PE) != 0 {
        cpu.tlb.flush_all();
    }
    if (old ^ v) & cr::CR0_PE != 0 {
        // Real mode runs at CPL 0; entering protected mode keeps CPL 0.
        cpu.cpl = 0;
    }
    cpu.update_mode();
    Ok(())
}

/// Writes CR3 (page-directory base) and flushes non-global translations.
fn write_cr3(ctx: &mut Ctx, v: u64) -> Result<()> {
    let cpu = &mut *ctx.cpu;
    let v = if cpu.efer & cr::EFER_LMA != 0 {
        // Bits above MAXPHYADDR (and bit 63, meaningful only with PCIDE) are reserved.
        if v >> crate::mmu::PHYS_ADDR_BITS != 0 {
            return Err(Fault::gp(0));
        }
        v
    } else {
        v & 0xffff_ffff
    };
    cpu.cr3 = v;
    if cpu.cr4 & cr::CR4_PGE != 0 {
        cpu.tlb.flush_non_global();
    } else {
        cpu.tlb.flush_all();
    }
    cpu.end_block = true;
    Ok(())
}

/// Writes CR4: only bits of features the CPU model advertises; PAE cannot
/// be cleared while long mode is active.
fn write_cr4(ctx: &mut Ctx, v: u64) -> Result<()> {
    let cpu = &mut *ctx.cpu;
    if v & !cpuid::cr4_valid_mask() != 0 {
        return Err(Fault::gp(0));
    }
    if cpu.efer & cr::EFER_LMA != 0 && v & cr::CR4_PAE == 0 {
        return Err(Fault::gp(0));
    }
    let old = cpu.cr4;
    cpu.cr4 = v;
    if (old ^ v) & (cr::CR4_PAE | cr::CR4_PSE | cr::CR4_PGE | cr::CR4_SMEP | cr::CR4_SMAP) != 0 {
        cpu.tlb.flush_all();
    }
    cpu.end_block = true;
    Ok(())
}

/// Control-register number of an iced CRn register (#UD for CR1, CR5-7, CR9-15;
/// CR8 only exists in 64-bit mode, where iced decodes it).
fn cr_index(r: Register) -> Result<usize> {
    let n = (r as usize).wrapping_sub(Register::CR0 as usize);
    match n {
        0 | 2 | 3 | 4 | 8 => Ok(n),
        _ => Err(Fault::ud()),
    }
}

fn mov_from_cr(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let n = cr_index(insn.op1_register())?;
    cpl0(ctx)?;
    let cpu = &*ctx.cpu;
    let v = match n {
        0 => cpu.cr0,
        2 => cpu.cr2,
        3 => cpu.cr3,
        4 => cpu.cr4,
        _ => cpu.cr8,
    };
    // In legacy modes the destination is a 32-bit register (zero-extended).
    write_reg(ctx.cpu, insn.op0_register(), v);
    Ok(())
}

fn mov_to_cr(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let n = cr_index(insn.op0_register())?;
    cpl0(ctx)?;
    let v = read_reg(ctx.cpu, insn.op1_register());
    match n {
        0 => write_cr0(ctx, v),
        2 => {
            ctx.cpu.cr2 = v;
            Ok(())
        }
        3 => write_cr3(ctx, v),
        4 => write_cr4(ctx, v),
        _ => {
            if v & !0xf != 0 {
                return Err(Fault::gp(0));
            }
            ctx.cpu.cr8 = v;
            // A lower task priority may unmask a pending interrupt.
            ctx.cpu.end_block = true;
            ctx.cpu.exit_request = true;
            Ok(())
        }
    }
}

/// Debug-register number (DR4/DR5 alias DR6/DR7 unless CR4.DE, which makes them #UD).
fn dr_index(ctx: &Ctx, r: Register) -> Result<usize> {
    let n = (r as usize).wrapping_sub(Register::DR0 as usize);
    match n {
        0..=3 | 6 | 7 => Ok(n),
        4 | 5 => {
            if ctx.cpu.cr4 & cr::CR4_DE != 0 {
                Err(Fault::ud())
            } else {
                Ok(n + 2)
            }
        }
        _ => Err(Fault::ud()),
    }
}

fn mov_from_dr(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    cpl0(ctx)?;
    let n = dr_index(ctx, insn.op1_register())?;
    let v = ctx.cpu.dr[n];
    write_reg(ctx.cpu, insn.op0_register(), v);
    Ok(())
}

fn mov_to_dr(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    cpl0(ctx)?;
    let n = dr_index(ctx, insn.op0_register())?;
    let v = read_reg(ctx.cpu, insn.op1_register());
    ctx.cpu.dr[n] = match n {
        6 | 7 if v >> 32 != 0 => return Err(Fault::gp(0)),
        // DR6: B0-B3, BD, BS, BT are writable; reserved bits read as 1 (bit 12 as 0).
        6 => (v & 0xe00f) | 0xffff_0ff0,
        // DR7: bit 10 reads as 1; bits 11, 12, 14 and 15 as 0.
        7 => (v & 0xffff_23ff) | 0x400,
        _ => v,
    };
    Ok(())
}

fn invlpg(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    cpl0(ctx)?;
    let (s, off) = mem_operand(ctx.cpu, insn);
    let seg = ctx.cpu.seg[s as usize];
    let lin = if ctx.cpu.bitness == 64 {
        let lin = if matches!(s, SegReg::Fs | SegReg::Gs) { seg.base.wrapping_add(off) } else { off };
        // INVLPG of a non-canonical address is a no-op.
        if !is_canonical(lin) {
            return Ok(());
        }
        lin
    } else {
        seg.base.wrapping_add(off) & 0xffff_ffff
    };
    // Deviation: only the 4 KiB software-TLB entry of `lin` is dropped, even
    // when it belongs to a large page (guests flush whole ranges after
    // changing large mappings).
    ctx.cpu.tlb.flush_page(lin);
    ctx.cpu.end_block = true;
    Ok(())
}

fn wbinvd(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    cpl0(ctx)
}

/// Writes the low 32 bits of a GPR, zero-extending (as 32-bit results do).
#[inline]
fn set32(ctx: &mut Ctx, r: usize, v: u64) {
    ctx.cpu.gpr[r] = v & 0xffff_ffff;
}

fn cpuid_(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    let leaf = ctx.cpu.gpr[reg::RAX] as u32;
    let sub = ctx.cpu.gpr[reg::RCX] as u32;
    let [a, b, c, d] = cpuid::cpuid(ctx.cpu, leaf, sub);
    set32(ctx, reg::RAX, a as u64);
    set32(ctx, reg::RBX, b as u64);
    set32(ctx, reg::RCX, c as u64);
    set32(ctx, reg::RDX, d as u64);
    Ok(())
}

fn tsc_check(ctx: &Ctx) -> Result<()> {
    if ctx.cpu.cr4 & cr::CR4_TSD != 0 && ctx.cpu.cpl > 0 {
        return Err(Fault::gp(0));
    }
    Ok(())
}

fn rdtsc(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    tsc_check(ctx)?;
    let t = ctx.cpu.tsc();
    set32(ctx, reg::RAX, t);
    set32(ctx, reg::RDX, t >> 32);
    Ok(())
}

fn rdtscp(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    tsc_check(ctx)?;
    let t = ctx.cpu.tsc();
    set32(ctx, reg::RAX, t);
    set32(ctx, reg::RDX, t >> 32);
    let aux = ctx.cpu.msr.tsc_aux;
    set32(ctx, reg::RCX, aux);
    Ok(())
}

fn rdmsr(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    cpl0(ctx)?;
    let v = msr::read(ctx.cpu, ctx.cpu.gpr[reg::RCX] as u32)?;
    set32(ctx, reg::RAX, v);
    set32(ctx, reg::RDX, v >> 32);
    Ok(())
}

fn wrmsr(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    cpl0(ctx)?;
    let i = ctx.cpu.gpr[reg::RCX] as u32;
    let v = (ctx.cpu.gpr[reg::RAX] & 0xffff_ffff) | (ctx.cpu.gpr[reg::RDX] << 32);
    let effect = msr::write(ctx.cpu, i, v)?;
    if effect.flush_tlb {
        ctx.cpu.tlb.flush_all();
    }
    // EFER, segment bases, the APIC base: let the machine and the decoder look again.
    ctx.cpu.end_block = true;
    ctx.cpu.exit_request = true;
    Ok(())
}

/// Whether the current code may change IF directly: real mode, CPL ≤ IOPL
/// in protected mode, IOPL = 3 in V86 mode (whose CPL is 3).
#[inline]
fn if_allowed(ctx: &Ctx) -> bool {
    ctx.cpu.mode == Mode::Real || ctx.cpu.cpl <= ctx.cpu.iopl()
}

fn cli(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    if !if_allowed(ctx) {
        return Err(Fault::gp(0));
    }
    ctx.cpu.rflags &= !flags::IF;
    ctx.cpu.end_block = true;
    ctx.cpu.exit_request = true;
    Ok(())
}

fn sti(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    if !if_allowed(ctx) {
        return Err(Fault::gp(0));
    }
    if ctx.cpu.rflags & flags::IF == 0 {
        // Interrupts stay blocked until after the next instruction.
        ctx.cpu.shadow_at = ctx.cpu.icount + 1;
        ctx.cpu.rflags |= flags::IF;
    }
    ctx.cpu.end_block = true;
    ctx.cpu.exit_request = true;
    Ok(())
}

fn swapgs(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    if ctx.cpu.bitness != 64 {
        return Err(Fault::ud());
    }
    cpl0(ctx)?;
    let gs = &mut ctx.cpu.seg[SegReg::Gs as usize].base;
    std::mem::swap(gs, &mut ctx.cpu.msr.kernel_gs_base);
    Ok(())
}

/// The flat code segment SYSCALL/SYSENTER/SYSRET/SYSEXIT load.
fn flat_code(selector: u16, dpl: u8, long: bool) -> Segment {
    Segment {
        selector,
        base: 0,
        limit: 0xffff_ffff,
        attr: attr::CODE_RX
            | attr::GRAN
            | ((dpl as u16) << attr::DPL_SHIFT)
            | if long { attr::LONG } else { attr::DB },
    }
}

/// The flat stack segment they load.
fn flat_stack(selector: u16, dpl: u8) -> Segment {
    Segment {
        selector,
        base: 0,
        limit: 0xffff_ffff,
        attr: attr::DATA_RW | attr::DB | attr::GRAN | ((dpl as u16) << attr::DPL_SHIFT),
    }
}

/// SYSCALL/SYSRET exist only in 64-bit mode with EFER.SCE (Intel).
fn syscall_enabled(ctx: &Ctx) -> Result<()> {
    let c = &ctx.cpu;
    if c.bitness != 64 || c.efer & cr::EFER_LMA == 0 || c.efer & cr::EFER_SCE == 0 {
        return Err(Fault::ud());
    }
    Ok(())
}

fn syscall(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    syscall_enabled(ctx)?;
    let cpu = &mut *ctx.cpu;
    cpu.gpr[reg::RCX] = cpu.rip;
    cpu.gpr[11] = cpu.rflags;
    cpu.rflags = (cpu.rflags & !(cpu.msr.sfmask & 0xffff_ffff)) | flags::FIXED;
    cpu.rip = cpu.msr.lstar;
    let sel = (cpu.msr.star >> 32) as u16;
    cpu.seg[SegReg::Cs as usize] = flat_code(sel & 0xfffc, 0, true);
    cpu.seg[SegReg::Ss as usize] = flat_stack(sel.wrapping_add(8), 0);
    cpu.cpl = 0;
    cpu.update_mode();
    Ok(())
}

fn sysret(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    syscall_enabled(ctx)?;
    cpl0(ctx)?;
    let to64 = insn.code() == Code::Sysretq;
    let cpu = &mut *ctx.cpu;
    let rcx = cpu.gpr[reg::RCX];
    if to64 && !is_canonical(rcx) {
        return Err(Fault::gp(0));
    }
    let base = (cpu.msr.star >> 48) as u16;
    let old_if = cpu.rflags & flags::IF;
    cpu.rflags = (cpu.gpr[11] & 0x3c_7fd7) | flags::FIXED;
    if to64 {
        cpu.rip = rcx;
        cpu.seg[SegReg::Cs as usize] = flat_code(base.wrapping_add(16) | 3, 3, true);
    } else {
        cpu.rip = rcx & 0xffff_ffff;
        cpu.seg[SegReg::Cs as usize] = flat_code(base | 3, 3, false);
    }
    cpu.seg[SegReg::Ss as usize] = flat_stack(base.wrapping_add(8) | 3, 3);
    cpu.cpl = 3;
    cpu.update_mode();
    if old_if == 0 && cpu.rflags & flags::IF != 0 {
        cpu.exit_request = true;
    }
    Ok(())
}

fn sysenter(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    let cpu = &mut *ctx.cpu;
    let cs = cpu.msr.sysenter_cs as u16;
    if cpu.cr0 & cr::CR0_PE == 0 || cs & 0xfffc == 0 {
        return Err(Fault::gp(0));
    }
    let long = cpu.efer & cr::EFER_LMA != 0;
    cpu.rflags &= !(flags::VM | flags::IF | flags::RF);
    if long {
        cpu.gpr[reg::RSP] = cpu.msr.sysenter_esp;
        cpu.rip = cpu.msr.sysenter_eip;
    } else {
        cpu.gpr[reg::RSP] = cpu.msr.sysenter_esp & 0xffff_ffff;
        cpu.rip = cpu.msr.sysenter_eip & 0xffff_ffff;
    }
    cpu.seg[SegReg::Cs as usize] = flat_code(cs & 0xfffc, 0, long);
    cpu.seg[SegReg::Ss as usize] = flat_stack((cs & 0xfffc).wrapping_add(8), 0);
    cpu.cpl = 0;
    cpu.update_mode();
    Ok(())
}

fn sysexit(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let cpu = &mut *ctx.cpu;
    let cs = cpu.msr.sysenter_cs as u16;
    if cs & 0xfffc == 0 || cpu.cr0 & cr::CR0_PE == 0 || cpu.cpl != 0 {
        return Err(Fault::gp(0));
    }
    let to64 = insn.code() == Code::Sysexitq;
    let (rcx, rdx) = (cpu.gpr[reg::RCX], cpu.gpr[reg::RDX]);
    let new_cs = if to64 {
        if !is_canonical(rcx) || !is_canonical(rdx) {
            return Err(Fault::gp(0));
        }
        cpu.gpr[reg::RSP] = rcx;
        cpu.rip = rdx;
        cs.wrapping_add(32) | 3
    } else {
        cpu.gpr[reg::RSP] = rcx & 0xffff_ffff;
        cpu.rip = rdx & 0xffff_ffff;
        cs.wrapping_add(16) | 3
    };
    cpu.seg[SegReg::Cs as usize] = flat_code(new_cs, 3, to64);
    cpu.seg[SegReg::Ss as usize] = flat_stack(new_cs.wrapping_add(8), 3);
    cpu.cpl = 3;
    cpu.update_mode();
    Ok(())
}
