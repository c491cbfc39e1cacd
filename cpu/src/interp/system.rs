//! System instructions: HLT, MOV to/from control and debug registers,
//! INVLPG, WBINVD/INVD, CPUID (model in `crate::cpuid`), RDTSC/RDTSCP,
//! RDPMC (no counters), RDMSR/WRMSR (model in `crate::msr`), CLI/STI, SWAPGS, SYSCALL/SYSRET,
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
        Rdpmc => rdpmc,
        Rdmsr => rdmsr,
        Wrmsr => wrmsr,
        Cli => cli,
        Sti => sti,
        Swapgs => swapgs,
        Syscall => syscall,
        Sysretd | Sysretq => sysret,
        Sysenter => sysenter,
        Sysexitd | Sysexitq => sysexit,
        Ud2 | Ud0 | Ud0_r16_rm16 | Ud0_r32_rm32 | Ud0_r64_rm64 | Ud1_r16_rm16 | Ud1_r32_rm32
        | Ud1_r64_rm64 => ud,
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
    if (v & cr::CR0_PG != 0 && v & cr::CR0_PE == 0) || (v & cr::CR0_NW != 0 && v & cr::CR0_CD == 0)
    {
        return Err(Fault::gp(0));
    }
    let cpu = &mut *ctx.cpu;
    let old = cpu.cr0;
    let pg_on = v & cr::CR0_PG != 0 && old & cr::CR0_PG == 0;
    let pg_off = v & cr::CR0_PG == 0 && old & cr::CR0_PG != 0;
    if pg_on && cpu.efer & cr::EFER_LME != 0 {
        // Activating IA-32e mode needs PAE, must not happen with CS.L set or
        // with a 16-bit TSS loaded.
        if cpu.cr4 & cr::CR4_PAE == 0
            || cpu.seg[SegReg::Cs as usize].long()
            || matches!(cpu.tr.sys_type(), 1 | 3)
        {
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
    cpu.note_paging_change();
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
    cpu.note_paging_change();
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
    cpu.note_paging_change();
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
        let lin = if matches!(s, SegReg::Fs | SegReg::Gs) {
            seg.base.wrapping_add(off)
        } else {
            off
        };
        // INVLPG of a non-canonical address is a no-op.
        if !is_canonical(lin) {
            return Ok(());
        }
        lin
    } else {
        seg.base.wrapping_add(off) & 0xffff_ffff
    };
    // Drops every cached piece of the page containing `lin`, large pages included.
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

/// RDPMC: #GP(0) outside CPL 0 unless CR4.PCE, and #GP(0) for a counter
/// index that does not exist; this model has no performance counters
/// (CPUID leaf 0AH is not reported), so every index is invalid.
fn rdpmc(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    if ctx.cpu.cpl != 0 && ctx.cpu.cr4 & cr::CR4_PCE == 0 {
        return Err(Fault::gp(0));
    }
    Err(Fault::gp(0))
}

fn rdmsr(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    cpl0(ctx)?;
    let i = ctx.cpu.gpr[reg::RCX] as u32;
    let v = match ctx.bus.msr_read(i, ctx.cpu.icount) {
        Some(v) if i == msr::index::TSC_DEADLINE && v != 0 => {
            v.wrapping_add(ctx.cpu.msr.tsc_offset)
        }
        Some(v) => v,
        None => msr::read(ctx.cpu, i)?,
    };
    set32(ctx, reg::RAX, v);
    set32(ctx, reg::RDX, v >> 32);
    Ok(())
}

fn wrmsr(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    cpl0(ctx)?;
    let i = ctx.cpu.gpr[reg::RCX] as u32;
    let v = (ctx.cpu.gpr[reg::RAX] & 0xffff_ffff) | (ctx.cpu.gpr[reg::RDX] << 32);
    // IA32_TSC_DEADLINE goes to the local APIC in the instruction-count
    // domain (0 keeps meaning "disarm").
    let dev_v = match (i, v) {
        (msr::index::TSC_DEADLINE, 1..) => v.wrapping_sub(ctx.cpu.msr.tsc_offset).max(1),
        _ => v,
    };
    if ctx.bus.msr_write(i, dev_v, ctx.cpu.icount) {
        ctx.cpu.exit_request = true;
        return Ok(());
    }
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

#[cfg(test)]
mod tests {
    use crate::fault::vector;
    use crate::flags;
    use crate::interp::descriptor::testkit::*;
    use crate::interp::RunExit;
    use crate::msr::index;
    use crate::state::{cr, reg, Cpu, Mode, SegReg};
    use crate::testutil::{run_asm, sel, TestBus, TestMode, CODE, DATA};
    use iced_x86::code_asm::*;

    const H: u64 = 0x21_0000;
    const USER_CODE: u64 = 0x22_0000;

    /// Runs `build` with fault handlers installed; returns (vector taken or
    /// 0xff, error code/top of stack, cpu, bus).
    fn faulting(
        mode: TestMode,
        build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
        setup: impl FnOnce(&mut Cpu, &mut TestBus),
    ) -> (u8, u64, Cpu, TestBus) {
        let (cpu, bus, exit) = run_asm(
            mode,
            |a| {
                a.mov(ebx, 0xffu32)?;
                build(a)
            },
            |cpu, bus| {
                install_handlers(cpu, bus);
                setup(cpu, bus);
            },
        );
        assert_eq!(exit, RunExit::Halted, "{mode:?}");
        let top = if cpu.bitness == 64 {
            bus.read(cpu.gpr[reg::RSP], 8)
        } else {
            bus.read(cpu.gpr[reg::RSP] & 0xffff_ffff, 4)
        };
        (cpu.gpr[reg::RBX] as u8, top, cpu, bus)
    }

    type Build = fn(&mut CodeAssembler) -> Result<(), IcedError>;

    #[test]
    fn control_register_writes_that_fault() {
        let gp = (vector::GP, 0);
        let pm: [(Build, (u8, u64)); 6] = [
            (
                |a| {
                    a.mov(eax, 0x8000_0000u32)?;
                    a.mov(cr0, eax)?;
                    a.hlt()
                },
                gp,
            ), // PG without PE
            (
                |a| {
                    a.mov(eax, 0x2000_0011u32)?;
                    a.mov(cr0, eax)?;
                    a.hlt()
                },
                gp,
            ), // NW without CD
            (
                |a| {
                    a.mov(eax, 1u32)?;
                    a.mov(cr4, eax)?;
                    a.hlt()
                },
                gp,
            ), // VME not supported
            (
                |a| {
                    a.mov(eax, 1u32 << 12)?;
                    a.mov(cr4, eax)?;
                    a.hlt()
                },
                gp,
            ), // reserved bit
            (
                |a| {
                    a.db(&[0x0f, 0x22, 0xc8])?;
                    a.hlt()
                },
                (vector::UD, CODE + 5),
            ), // mov cr1, eax
            // LME set, PAE clear: enabling paging is #GP.
            (
                |a| {
                    a.mov(ecx, index::EFER)?;
                    a.mov(eax, cr::EFER_LME as u32)?;
                    a.xor(edx, edx)?;
                    a.wrmsr()?;
                    a.mov(eax, 0x8000_0011u32)?;
                    a.mov(cr0, eax)?;
                    a.hlt()
                },
                gp,
            ),
        ];
        for (i, (b, want)) in pm.into_iter().enumerate() {
            let (v, e, _, _) = faulting(TestMode::Protected32, b, |_, _| {});
            assert_eq!((v, e), want, "protected case {i}");
        }
        let lm: [(Build, (u8, u64)); 5] = [
            (
                |a| {
                    a.mov(rax, cr4)?;
                    a.and(eax, !0x20)?;
                    a.mov(cr4, rax)?;
                    a.hlt()
                },
                gp,
            ), // clear PAE
            (
                |a| {
                    a.mov(rax, cr0)?;
                    a.btr(eax, 31)?;
                    a.mov(cr0, rax)?;
                    a.hlt()
                },
                gp,
            ), // clear PG in 64-bit mode
            (
                |a| {
                    a.mov(rax, 0x4_0000_0002_0000u64)?;
                    a.mov(cr3, rax)?;
                    a.hlt()
                },
                gp,
            ), // reserved CR3 bit
            (
                |a| {
                    a.mov(eax, 0x10u32)?;
                    a.mov(cr8, rax)?;
                    a.hlt()
                },
                gp,
            ),
            (
                |a| {
                    a.mov(rax, 1u64 << 32)?;
                    a.mov(cr0, rax)?;
                    a.hlt()
                },
                gp,
            ),
        ];
        for (i, (b, want)) in lm.into_iter().enumerate() {
            let (v, e, _, _) = faulting(TestMode::Long64, b, |_, _| {});
            assert_eq!((v, e), want, "long case {i}");
        }
        // CPL 3: #GP(0).
        let (v, e, _, _) = faulting(
            TestMode::Protected32,
            |a| {
                a.mov(eax, cr0)?;
                a.hlt()
            },
            |cpu, _| to_user(cpu),
        );
        assert_eq!((v, e), gp);
        // CR8 round trip.
        let (v, _, cpu, _) = faulting(
            TestMode::Long64,
            |a| {
                a.mov(eax, 9u32)?;
                a.mov(cr8, rax)?;
                a.mov(rcx, cr8)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!((v, cpu.gpr[reg::RCX], cpu.cr8), (0xff, 9, 9));
    }

    #[test]
    fn long_mode_activation_and_deactivation() {
        let code64 = asm_at(64, 0x11_0000, |a| {
            a.mov(r15, 1u64)?;
            a.mov(r14, cr0)?;
            a.jmp(fword_ptr(DATA))
        });
        let back = asm_at(32, 0x12_0000, |a| {
            a.mov(eax, cr0)?;
            a.and(eax, 0x7fff_ffff)?;
            a.mov(cr0, eax)?;
            a.hlt()
        });
        let (v, _, cpu, _) = faulting(
            TestMode::Protected32,
            |a| {
                a.mov(eax, cr4)?;
                a.or(eax, 0x20)?;
                a.mov(cr4, eax)?;
                a.mov(eax, 0x2_0000u32)?;
                a.mov(cr3, eax)?;
                a.mov(ecx, index::EFER)?;
                a.rdmsr()?;
                a.or(eax, 0x100)?;
                a.wrmsr()?;
                a.mov(eax, cr0)?;
                a.or(eax, 0x8000_0000u32 as i32)?;
                a.mov(cr0, eax)?;
                a.mov(esi, 0x1234u32)?;
                a.jmp_far(sel::CODE64, 0x11_0000)
            },
            |_, bus| {
                bus.write(0x11_0000, &code64);
                bus.write(0x12_0000, &back);
                bus.put(DATA, 4, 0x12_0000);
                bus.put(DATA + 4, 2, sel::CODE32 as u64);
            },
        );
        assert_eq!(v, 0xff);
        assert_eq!(cpu.gpr[15], 1, "ran 64-bit code");
        assert_eq!(cpu.gpr[14] & cr::CR0_PG, cr::CR0_PG);
        assert_eq!(
            cpu.gpr[reg::RSI],
            0x1234,
            "compatibility mode ran after paging was enabled"
        );
        assert_eq!(cpu.mode, Mode::Protected);
        assert_eq!(cpu.efer & (cr::EFER_LME | cr::EFER_LMA), cr::EFER_LME);
        assert_eq!(cpu.cr0 & cr::CR0_PG, 0);
    }

    #[test]
    fn tlb_flushes_on_cr3_and_invlpg() {
        // Remap the 2 MiB page holding DATA (0x800000) to 0xa00000 and read through it.
        let (v, _, cpu, _) = faulting(
            TestMode::Long64,
            |a| {
                a.mov(rdi, DATA)?;
                a.mov(eax, dword_ptr(rdi))?; // cached translation
                a.mov(qword_ptr(0x2_2000 + 8 * 4), 0xa0_0087i32)?; // PD entry 4 → 0xa00000
                a.mov(ecx, dword_ptr(rdi))?; // stale
                a.invlpg(ptr(rdi))?;
                a.mov(edx, dword_ptr(rdi))?; // new
                a.mov(qword_ptr(0x2_2000 + 8 * 4), 0x80_0087i32)?;
                a.mov(rsi, cr3)?;
                a.mov(cr3, rsi)?;
                a.mov(esi, dword_ptr(rdi))?; // old again
                a.hlt()
            },
            |_, bus| {
                bus.put(DATA, 4, 0x1111);
                bus.put(0xa0_0000, 4, 0x2222);
            },
        );
        assert_eq!(v, 0xff);
        assert_eq!(cpu.gpr[reg::RAX], 0x1111);
        assert_eq!(
            cpu.gpr[reg::RCX],
            0x1111,
            "software TLB still holds the old translation"
        );
        assert_eq!(cpu.gpr[reg::RDX], 0x2222);
        assert_eq!(cpu.gpr[reg::RSI], 0x1111);
    }

    #[test]
    fn debug_registers() {
        let (v, _, cpu, _) = faulting(
            TestMode::Protected32,
            |a| {
                a.mov(eax, 0x1234u32)?;
                a.mov(dr0, eax)?;
                a.mov(ebp, dr0)?;
                a.xor(eax, eax)?;
                a.mov(dr6, eax)?;
                a.mov(ecx, dr6)?;
                a.mov(eax, 0xffff_ffffu32)?;
                a.mov(dr7, eax)?;
                a.mov(edx, dr7)?;
                a.mov(esi, dr4)?; // alias of DR6 with CR4.DE clear
                a.mov(eax, cr4)?;
                a.or(eax, cr::CR4_DE as i32)?;
                a.mov(cr4, eax)?;
                a.mov(edi, dr5)?; // #UD now
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(v, vector::UD);
        assert_eq!(cpu.gpr[reg::RBP], 0x1234);
        assert_eq!(cpu.gpr[reg::RCX], 0xffff_0ff0);
        assert_eq!(cpu.gpr[reg::RDX], 0xffff_27ff);
        assert_eq!(cpu.gpr[reg::RSI], 0xffff_0ff0);
        // 64-bit: upper DR7 bits are #GP.
        let (v, e, _, _) = faulting(
            TestMode::Long64,
            |a| {
                a.mov(rax, 1u64 << 40)?;
                a.mov(dr7, rax)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!((v, e), (vector::GP, 0));
    }

    #[test]
    fn cpuid_in_every_mode() {
        for mode in [TestMode::Real, TestMode::Protected32, TestMode::Long64] {
            let (v, _, cpu, _) = faulting(
                mode,
                |a| {
                    a.mov(rbx_or(a), 0)?;
                    a.xor(eax, eax)?;
                    a.cpuid()?;
                    a.mov(esi, eax)?;
                    a.mov(eax, 0x8000_0008u32)?;
                    a.cpuid()?;
                    a.hlt()
                },
                |cpu, _| cpu.gpr[reg::RBX] = u64::MAX,
            );
            assert_eq!(v, 0);
            assert_eq!(
                cpu.gpr[reg::RSI],
                u64::from(crate::cpuid::MAX_BASIC),
                "{mode:?}"
            );
            assert_eq!(cpu.gpr[reg::RAX], 0x3028);
            assert_eq!(cpu.gpr[reg::RBX], 0, "{mode:?}: zero-extended");
        }
    }

    /// `mov ebx, 0` is done through this to keep the closure generic over modes.
    fn rbx_or(_: &CodeAssembler) -> AsmRegister32 {
        ebx
    }

    #[test]
    fn time_stamp_counter() {
        let (v, _, cpu, _) = faulting(
            TestMode::Protected32,
            |a| {
                a.rdtsc()?; // icount 1
                a.mov(esi, eax)?;
                a.mov(edi, edx)?;
                a.rdtscp()?; // icount 4
                a.hlt()
            },
            |cpu, _| {
                cpu.msr.tsc_offset = 0x5_0000_0000;
                cpu.msr.tsc_aux = 0x42;
            },
        );
        assert_eq!(v, 0xff);
        assert_eq!((cpu.gpr[reg::RDI], cpu.gpr[reg::RSI]), (5, 1));
        assert_eq!(
            (cpu.gpr[reg::RDX], cpu.gpr[reg::RAX], cpu.gpr[reg::RCX]),
            (5, 4, 0x42)
        );
        // CR4.TSD: #GP at CPL 3.
        let (v, e, _, _) = faulting(
            TestMode::Protected32,
            |a| {
                a.rdtsc()?;
                a.hlt()
            },
            |cpu, _| {
                cpu.cr4 |= cr::CR4_TSD;
                to_user(cpu);
            },
        );
        assert_eq!((v, e), (vector::GP, 0));
    }

    #[test]
    fn msr_instructions() {
        let (v, e, cpu, _) = faulting(
            TestMode::Long64,
            |a| {
                a.mov(ecx, index::STAR)?;
                a.mov(eax, 0x1111u32)?;
                a.mov(edx, 0x2222u32)?;
                a.wrmsr()?;
                a.xor(eax, eax)?;
                a.xor(edx, edx)?;
                a.rdmsr()?;
                a.mov(rsi, rax)?;
                a.mov(rdi, rdx)?;
                a.mov(ecx, index::FS_BASE)?;
                a.mov(eax, DATA as u32)?;
                a.xor(edx, edx)?;
                a.wrmsr()?;
                a.mov(ebp, dword_ptr(0).fs())?;
                a.mov(ecx, 0xdeadu32)?;
                a.rdmsr()?;
                a.hlt()
            },
            |_, bus| bus.put(DATA, 4, 0x5a5a),
        );
        assert_eq!((v, e), (vector::GP, 0), "unknown MSR");
        assert_eq!((cpu.gpr[reg::RSI], cpu.gpr[reg::RDI]), (0x1111, 0x2222));
        assert_eq!(cpu.msr.star, 0x2222_0000_1111);
        assert_eq!(cpu.sreg(SegReg::Fs).base, DATA);
        assert_eq!(cpu.gpr[reg::RBP], 0x5a5a);
        let (v, e, _, _) = faulting(
            TestMode::Protected32,
            |a| {
                a.mov(ecx, index::STAR)?;
                a.rdmsr()?;
                a.hlt()
            },
            |cpu, _| to_user(cpu),
        );
        assert_eq!((v, e), (vector::GP, 0), "CPL 3");
    }

    #[test]
    fn cli_sti_rules() {
        let (v, _, cpu, _) = faulting(
            TestMode::Protected32,
            |a| {
                a.sti()?; // icount 1
                a.nop()?;
                a.cli()?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(v, 0xff);
        assert_eq!(cpu.shadow_at, 2);
        assert_eq!(cpu.rflags & flags::IF, 0);
        // CPL 3 with IOPL 0: #GP(0); with IOPL 3: allowed.
        let (v, e, _, _) = faulting(
            TestMode::Protected32,
            |a| {
                a.cli()?;
                a.hlt()
            },
            |cpu, _| to_user(cpu),
        );
        assert_eq!((v, e), (vector::GP, 0));
        let (v, _, _, bus) = faulting(
            TestMode::Protected32,
            |a| {
                a.cli()?;
                a.sti()?;
                a.int(0x81)
            },
            |cpu, bus| {
                to_user(cpu);
                cpu.rflags |= flags::IOPL;
                set_idt32(bus, 0x81, gate(sel::CODE32, handler_addr(0x81), 0xee, 0));
            },
        );
        assert_eq!(v, 0x81);
        assert_ne!(
            bus.read(crate::interp::descriptor::testkit::ESP0 - 12, 4) & flags::IF,
            0
        );
    }

    #[test]
    fn syscall_sysret_round_trip() {
        let user = asm_at(64, USER_CODE, |a| {
            a.mov(r10, cs)?;
            a.mov(rdx, ss)?;
            a.mov(eax, 42u32)?;
            a.syscall()
        });
        let entry = asm_at(64, H, |a| {
            a.mov(rsi, rcx)?;
            a.mov(rdi, r11)?;
            a.mov(r8, cs)?;
            a.mov(r9, ss)?;
            a.hlt()
        });
        let (v, _, cpu, _) = faulting(
            TestMode::Long64,
            |a| {
                a.swapgs()?;
                a.mov(rbp, qword_ptr(0).gs())?;
                a.swapgs()?;
                a.mov(rcx, USER_CODE)?;
                a.mov(r11, 0x202u64)?;
                a.sysretq()
            },
            |cpu, bus| {
                cpu.msr.lstar = H;
                cpu.msr.star = (0x30 << 48) | (0x18 << 32);
                cpu.msr.sfmask = 0x700;
                cpu.msr.kernel_gs_base = DATA;
                bus.put(DATA, 8, 0x6789);
                bus.write(USER_CODE, &user);
                bus.write(H, &entry);
            },
        );
        assert_eq!(v, 0xff);
        assert_eq!(cpu.gpr[reg::RBP], 0x6789, "SWAPGS");
        assert_eq!(cpu.sreg(SegReg::Gs).base, 0);
        assert_eq!(
            (cpu.gpr[10], cpu.gpr[reg::RDX]),
            (0x43, 0x3b),
            "SYSRET to CPL 3"
        );
        assert_eq!(cpu.gpr[reg::RSI], USER_CODE + user.len() as u64);
        assert_eq!(cpu.gpr[reg::RDI], 0x202);
        assert_eq!((cpu.gpr[8], cpu.gpr[9]), (0x18, 0x20));
        assert_eq!((cpu.cpl, cpu.mode), (0, Mode::Long64));
        assert_eq!(cpu.rflags & flags::IF, 0, "SFMASK cleared IF");

        // SYSRET to compatibility mode; non-canonical RCX; SCE clear.
        let (v, _, cpu, bus) = faulting(
            TestMode::Long64,
            |a| {
                a.mov(rcx, 0xffff_ffff_0000_0000u64 | USER_CODE)?;
                a.mov(r11, 2u64)?;
                a.sysret()
            },
            |cpu, bus| {
                cpu.msr.star = 0x30 << 48;
                bus.put(0x3004, 8, ESP0);
                bus.write(USER_CODE, &[0xcd, 0x81]);
                set_idt64(bus, 0x81, sel::CODE64, handler_addr(0x81), 0xee, 0);
            },
        );
        assert_eq!(v, 0x81);
        assert_eq!(bus.read(cpu.gpr[reg::RSP], 8), USER_CODE + 2);
        assert_eq!(bus.read(cpu.gpr[reg::RSP] + 8, 8), 0x33);
        let (v, e, _, _) = faulting(
            TestMode::Long64,
            |a| {
                a.mov(rcx, 1u64 << 47)?;
                a.sysretq()
            },
            |_, _| {},
        );
        assert_eq!((v, e), (vector::GP, 0));
        let (v, _, _, _) = faulting(
            TestMode::Long64,
            |a| a.syscall(),
            |cpu, _| cpu.efer &= !cr::EFER_SCE,
        );
        assert_eq!(v, vector::UD);
        let (v, _, _, _) = faulting(TestMode::Protected32, |a| a.syscall(), |_, _| {});
        assert_eq!(v, vector::UD);
    }

    #[test]
    fn sysenter_sysexit() {
        let user = asm_at(32, USER_CODE, |a| {
            a.mov(eax, cs)?;
            a.mov(ebp, ss)?;
            a.sysenter()
        });
        let entry = asm_at(32, H, |a| {
            a.mov(esi, esp)?;
            a.mov(edi, cs)?;
            a.hlt()
        });
        let (v, _, cpu, _) = faulting(
            TestMode::Protected32,
            |a| {
                a.mov(ecx, USER_STACK as u32)?;
                a.mov(edx, USER_CODE as u32)?;
                a.sysexit()
            },
            |cpu, bus| {
                cpu.msr.sysenter_cs = 0x20;
                cpu.msr.sysenter_esp = 0x8e_0000;
                cpu.msr.sysenter_eip = H;
                bus.write(USER_CODE, &user);
                bus.write(H, &entry);
            },
        );
        assert_eq!(v, 0xff);
        assert_eq!((cpu.gpr[reg::RAX], cpu.gpr[reg::RBP]), (0x33, 0x3b));
        assert_eq!((cpu.gpr[reg::RSI], cpu.gpr[reg::RDI]), (0x8e_0000, 0x20));
        assert_eq!((cpu.cpl, cpu.bitness), (0, 32));
        let (v, e, _, _) = faulting(TestMode::Protected32, |a| a.sysenter(), |_, _| {});
        assert_eq!((v, e), (vector::GP, 0), "SYSENTER_CS is 0");
    }

    #[test]
    fn privileged_cache_and_tlb_instructions() {
        for b in [
            (|a: &mut CodeAssembler| {
                a.invlpg(ptr(DATA))?;
                a.hlt()
            }) as Build,
            |a| {
                a.wbinvd()?;
                a.hlt()
            },
            |a| {
                a.invd()?;
                a.hlt()
            },
            |a| {
                a.clts()?;
                a.hlt()
            },
        ] {
            let (v, _, cpu, _) = faulting(TestMode::Protected32, b, |_, _| {});
            assert_eq!((v, cpu.cpl), (0xff, 0));
            let (v, e, _, _) = faulting(TestMode::Protected32, b, |cpu, _| to_user(cpu));
            assert_eq!((v, e), (vector::GP, 0));
        }
        let (v, _, _, _) = faulting(TestMode::Long64, |a| a.ud2(), |_, _| {});
        assert_eq!(v, vector::UD);
    }

    #[test]
    fn rdpmc_has_no_counters() {
        // Found by fuzzing (it stopped the machine as unimplemented): with
        // no performance counters every index is invalid, #GP(0) at any CPL;
        // at CPL 3 without CR4.PCE the privilege check gives the same #GP(0).
        for mode in [TestMode::Protected32, TestMode::Long64] {
            for (user, pce) in [(false, false), (true, false), (true, true)] {
                let (v, e, _, _) = faulting(
                    mode,
                    |a| {
                        a.xor(ecx, ecx)?;
                        a.rdpmc()?;
                        a.hlt()
                    },
                    |cpu, bus| {
                        if pce {
                            cpu.cr4 |= cr::CR4_PCE;
                        }
                        if user {
                            to_user(cpu);
                            if cpu.efer & cr::EFER_LMA != 0 {
                                // A 64-bit TSS holds an 8-byte RSP0.
                                bus.put(0x3004, 8, 0x8f_0000);
                            }
                        }
                    },
                );
                assert_eq!((v, e), (vector::GP, 0), "{mode:?} user {user} pce {pce}");
            }
        }
    }
}
