//! x87 FPU instructions (the D8-DF escapes) and WAIT/FWAIT, on the
//! softfloat core in [`crate::x87`]. The state save and restore
//! instructions (FNSTENV/FLDENV, FNSAVE/FRSTOR, FXSAVE/FXRSTOR,
//! XSAVE/XRSTOR, XGETBV/XSETBV) live in `x87_state.rs`.
//!
//! Every x87 instruction first makes the device check (#NM with CR0.EM or
//! CR0.TS). The waiting ones (all but FNINIT, FNCLEX, FNSTCW, FNSTSW,
//! FNSTENV, FNSAVE and the 8087/287 legacy no-ops) then deliver a pending
//! unmasked exception (FSW.ES set) as #MF before doing anything, as WAIT
//! does (SDM vol. 1 8.6-8.7). Deviation: with CR0.NE clear the hardware
//! would signal FERR# (IRQ 13 through the PIC, "MS-DOS compatibility
//! mode"); this model raises #MF in that case too.
//!
//! Exception responses (SDM vol. 1 8.5, 4.9): flags are sticky and ES/B
//! follow the unmasked flags. A masked exception delivers the core's
//! masked result. An unmasked invalid-operation, denormal or zero-divide
//! exception leaves the destination and TOP alone (nothing is popped) and
//! reports only that exception, with C1 (and C2 where defined) cleared;
//! an unmasked overflow/underflow on a store to memory (underflow: any
//! tiny result, exact or not) stores nothing, pops nothing and does not
//! report PE (C1 cleared); on a register destination the core's re-biased
//! result is written. Stack faults (FSW.SF with IE; C1 set for overflow,
//! clear for underflow) give the QNaN indefinite when IE is masked.
//!
//! Host behaviour the SDM leaves undefined or states otherwise, matched
//! here (found by the differential tester, checked natively): the compares
//! (FCOM family, FTST) set C3/C2/C0 also when IE or DE is unmasked
//! (unordered, or the real relation), and FCOMI sets EFLAGS then too; FCOMI
//! and FCMOV leave C1 alone unless the stack underflows; FFREE clears C1;
//! FLD m32/m64 of a denormal pushes it even with DE unmasked; FLD ST(i)
//! reports an empty ST(i) as underflow before a full ST(7) as overflow;
//! FSTP1 (D9 D8+i) with ST(0) empty only pops; FPREM/FPREM1 with a NaN
//! result keep C0 and C3.
//!
//! Every non-control instruction records FIP/FCS (its own CS:IP), FOP (the
//! low three bits of its escape byte and its ModRM byte, read back from
//! the code bytes) and, with a memory operand, FDP/FDS (offset and
//! selector of the operand), also when it raises an unmasked exception.
//!
//! FCW loads (FLDCW, FLDENV, FRSTOR, FXRSTOR, XRSTOR) keep only the
//! defined bits and force bit 6 to one, as the host does; they recompute
//! ES/B.

#[path = "x87_state.rs"]
mod state;
#[cfg(test)]
#[path = "x87_tests.rs"]
mod tests;

use iced_x86::{Instruction, MemorySize, Mnemonic, OpKind, Register};

use crate::block::Handler;
use crate::cpuid::{self, ecx1, edx1};
use crate::fault::{vector, Fault, Result};
use crate::flags;
use crate::interp::fp::check_x87;
use crate::interp::operand::{effective_address, write_reg};
use crate::interp::Ctx;
use crate::state::{cr, Cpu, SegReg};
use crate::x87::{self, Const, Ctrl, Exc, Fpu, Relation, Rounding, F80};

const IE: u16 = Exc::IE;
const DE: u16 = Exc::DE;
const ZE: u16 = Exc::ZE;
const OE: u16 = Exc::OE;
const UE: u16 = Exc::UE;
/// Stack fault.
const SF: u16 = 1 << 6;
/// Error summary.
const ES: u16 = 1 << 7;
/// Busy (mirrors ES).
const B: u16 = 1 << 15;
const C0: u16 = Exc::C0;
const C1: u16 = Exc::C1;
const C2: u16 = Exc::C2;
const C3: u16 = Exc::C3;
const CC: u16 = C0 | C1 | C2 | C3;
/// The six exception flags.
const FLAGS: u16 = 0x3f;
/// FCW bits that are kept when the control word is loaded.
const CW_BITS: u16 = 0x1f3f;
/// FCW bit 6 reads as one.
const CW_ONE: u16 = 0x40;

/// Arithmetic operations, as const parameters.
const ADD: u8 = 0;
const MUL: u8 = 1;
const SUB: u8 = 2;
const SUBR: u8 = 3;
const DIV: u8 = 4;
const DIVR: u8 = 5;

/// The handler for `insn` if this group owns it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    use Mnemonic as M;
    let mem = insn.op_count() >= 1 && insn.op0_kind() == OpKind::Memory;
    let cmov = cpuid::LEAF1_EDX & edx1::CMOV != 0;
    let sse3 = cpuid::LEAF1_ECX & ecx1::SSE3 != 0;
    Some(match insn.mnemonic() {
        M::Wait => wait,

        // loads
        M::Fld if mem => fld_m,
        M::Fld => fld_st,
        M::Fild | M::Fbld => fld_m,
        M::Fld1 | M::Fldz | M::Fldpi | M::Fldl2e | M::Fldl2t | M::Fldlg2 | M::Fldln2 => fld_const,

        // stores
        M::Fst if mem => fst_m::<false>,
        M::Fstp if mem => fst_m::<true>,
        M::Fst => fst_st::<false>,
        M::Fstp | M::Fstpnce => fst_st::<true>,
        M::Fist => fist::<false, false>,
        M::Fistp => fist::<true, false>,
        M::Fisttp if sse3 => fist::<true, true>,
        M::Fisttp => ud,
        M::Fbstp => fbstp,

        // arithmetic
        M::Fadd | M::Fiadd if mem => arith_m::<ADD>,
        M::Fmul | M::Fimul if mem => arith_m::<MUL>,
        M::Fsub | M::Fisub if mem => arith_m::<SUB>,
        M::Fsubr | M::Fisubr if mem => arith_m::<SUBR>,
        M::Fdiv | M::Fidiv if mem => arith_m::<DIV>,
        M::Fdivr | M::Fidivr if mem => arith_m::<DIVR>,
        M::Fadd => arith_r::<ADD, false>,
        M::Fmul => arith_r::<MUL, false>,
        M::Fsub => arith_r::<SUB, false>,
        M::Fsubr => arith_r::<SUBR, false>,
        M::Fdiv => arith_r::<DIV, false>,
        M::Fdivr => arith_r::<DIVR, false>,
        M::Faddp => arith_r::<ADD, true>,
        M::Fmulp => arith_r::<MUL, true>,
        M::Fsubp => arith_r::<SUB, true>,
        M::Fsubrp => arith_r::<SUBR, true>,
        M::Fdivp => arith_r::<DIV, true>,
        M::Fdivrp => arith_r::<DIVR, true>,
        M::Fsqrt | M::Frndint | M::F2xm1 => unary,
        M::Fabs | M::Fchs => sign_op,
        M::Fscale | M::Fprem | M::Fprem1 => binary,
        M::Fyl2x | M::Fyl2xp1 | M::Fpatan => binary_pop,
        M::Fxtract => fxtract,
        M::Fsin | M::Fcos => trig,
        M::Fsincos | M::Fptan => trig_push,

        // compares
        M::Fcom | M::Ficom if mem => fcom_m::<0>,
        M::Fcomp | M::Ficomp if mem => fcom_m::<1>,
        M::Fcom => fcom_r::<true, 0>,
        M::Fcomp => fcom_r::<true, 1>,
        M::Fcompp => fcom_r::<true, 2>,
        M::Fucom => fcom_r::<false, 0>,
        M::Fucomp => fcom_r::<false, 1>,
        M::Fucompp => fcom_r::<false, 2>,
        M::Fcomi | M::Fcomip | M::Fucomi | M::Fucomip if !cmov => ud,
        M::Fcomi => fcomi::<true, false>,
        M::Fcomip => fcomi::<true, true>,
        M::Fucomi => fcomi::<false, false>,
        M::Fucomip => fcomi::<false, true>,
        M::Ftst => ftst,
        M::Fxam => fxam,

        // register stack
        M::Fxch => fxch,
        M::Fcmovb
        | M::Fcmove
        | M::Fcmovbe
        | M::Fcmovu
        | M::Fcmovnb
        | M::Fcmovne
        | M::Fcmovnbe
        | M::Fcmovnu
            if !cmov =>
        {
            ud
        }
        M::Fcmovb => fcmov::<0x2>,
        M::Fcmovnb => fcmov::<0x3>,
        M::Fcmove => fcmov::<0x4>,
        M::Fcmovne => fcmov::<0x5>,
        M::Fcmovbe => fcmov::<0x6>,
        M::Fcmovnbe => fcmov::<0x7>,
        M::Fcmovu => fcmov::<0xa>,
        M::Fcmovnu => fcmov::<0xb>,
        M::Ffree => ffree::<false>,
        M::Ffreep => ffree::<true>,
        M::Fincstp => fincstp,
        M::Fdecstp => fdecstp,
        M::Fnop => fnop,
        // 8087/287 mode switches: no-ops on the 387 and later
        M::Fneni | M::Fndisi | M::Fnsetpm => legacy_nop,

        // control
        M::Fninit => fninit,
        M::Fnclex => fnclex,
        M::Fldcw => fldcw,
        M::Fnstcw => fnstcw,
        M::Fnstsw => fnstsw,
        M::Fnstenv => state::fnstenv,
        M::Fldenv => state::fldenv,
        M::Fnsave => state::fnsave,
        M::Frstor => state::frstor,
        M::Fxsave | M::Fxsave64 => state::fxsave,
        M::Fxrstor | M::Fxrstor64 => state::fxrstor,
        M::Xsave | M::Xsave64 => state::xsave,
        M::Xrstor | M::Xrstor64 => state::xrstor,
        M::Xgetbv => state::xgetbv,
        M::Xsetbv => state::xsetbv,
        _ => return None,
    })
}

fn ud(_: &mut Ctx, _: &Instruction) -> Result<()> {
    Err(Fault::ud())
}

// ---------------------------------------------------------------------
// Plumbing.

/// Prologue of a waiting x87 instruction: #NM, then a pending unmasked
/// exception as #MF.
#[inline]
fn begin(cpu: &Cpu) -> Result<()> {
    check_x87(cpu)?;
    if cpu.fpu.sw & ES != 0 {
        return Err(Fault::exc(vector::MF));
    }
    Ok(())
}

/// WAIT/FWAIT: #NM when CR0.MP and CR0.TS are both set, then a pending
/// unmasked x87 exception as #MF.
fn wait(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    let mp_ts = cr::CR0_MP | cr::CR0_TS;
    if ctx.cpu.cr0 & mp_ts == mp_ts {
        return Err(Fault::nm());
    }
    if ctx.cpu.fpu.sw & ES != 0 {
        return Err(Fault::exc(vector::MF));
    }
    Ok(())
}

/// The status word after an operation raised `exc` (exception flags, SF
/// and condition codes as the core returns them), and whether an unmasked
/// exception suppresses the result. `cc` are the condition codes the
/// instruction defines (replaced); `mem` says the destination is memory.
///
/// When an unmasked exception suppresses the result, C1 is cleared (set
/// only for a stack overflow) and so is C2 where the instruction defines
/// it (FPREM, FSIN, FPTAN...); C0 and C3 are left alone. The SDM leaves
/// the condition codes undefined there; this is what the host does (the
/// core's round-up C1 of the discarded result is not reported).
#[inline]
fn resolve(f: &Fpu, exc: u16, cc: u16, mem: bool) -> (u16, bool) {
    let unmasked = exc & !f.cw & FLAGS;
    let (flags, cc, bits, block) = if unmasked & (IE | ZE | DE) != 0 {
        // pre-computation exceptions: the operation is not carried out
        let c1 = if exc & SF != 0 { exc & C1 } else { 0 };
        (exc & (IE | ZE | DE | SF), cc & (C1 | C2), c1, true)
    } else if mem && unmasked & (OE | UE) != 0 {
        (exc & (OE | UE), cc & (C1 | C2), 0, true)
    } else {
        (exc & (FLAGS | SF), cc, exc & cc, false)
    };
    let mut sw = (f.sw & !cc) | bits | flags;
    if sw & !f.cw & FLAGS != 0 {
        sw |= ES | B;
    }
    (sw, block)
}

/// Commits `resolve` to the status word; returns whether the result is
/// suppressed.
#[inline]
fn raise(f: &mut Fpu, exc: u16, cc: u16) -> bool {
    let (sw, block) = resolve(f, exc, cc, false);
    f.sw = sw;
    block
}

#[inline]
fn push(f: &mut Fpu, v: F80) {
    let t = f.top().wrapping_sub(1) & 7;
    f.set_top(t);
    f.set_st(0, v);
}

#[inline]
fn pop(f: &mut Fpu) {
    f.free(0);
    let t = f.top() + 1;
    f.set_top(t);
}

#[inline]
fn ctrl(f: &Fpu) -> Ctrl {
    Ctrl::from_cw(f.cw)
}

/// Index of an ST(i) register.
#[inline]
fn sti(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::ST0 as usize) & 7
}

/// The ST(i) source of a compare or exchange: the last register operand,
/// ST(1) when the instruction names none (FCOMPP, FUCOMPP).
#[inline]
fn src_st(insn: &Instruction) -> usize {
    match insn.op_count() {
        0 => 1,
        n => sti(insn.op_register(n - 1)),
    }
}

/// Stack underflow with ST(`dst`) as the destination: IE|SF; with IE
/// masked the destination gets the indefinite and `pops` registers are
/// popped.
fn underflow(f: &mut Fpu, dst: usize, pops: usize, cc: u16) {
    if !raise(f, IE | SF, cc) {
        f.set_st(dst, F80::INDEFINITE);
        for _ in 0..pops {
            pop(f);
        }
    }
}

/// Stack overflow on a push: IE|SF|C1; with IE masked the indefinite is
/// pushed.
fn overflow(f: &mut Fpu) {
    if !raise(f, IE | SF | C1, C1) {
        push(f, F80::INDEFINITE);
    }
}

/// Records FIP/FCS, FOP and (with a memory operand) FDP/FDS for a
/// non-control instruction, then succeeds.
fn done(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let ip = insn.ip();
    let cs = ctx.cpu.seg[SegReg::Cs as usize];
    let lin = if ctx.cpu.bitness == 64 {
        ip
    } else {
        cs.base.wrapping_add(ip) & 0xffff_ffff
    };
    // FOP: the bytes the instruction was decoded from (a fetch through
    // the execute TLB; a fetch fault cannot happen here in practice and
    // would only leave FOP zero).
    let mut bytes = [0u8; 15];
    let len = insn.len().min(15);
    let n = ctx.fetch(lin, &mut bytes[..len]).unwrap_or(0);
    let long = ctx.cpu.bitness == 64;
    let mut fop = 0;
    for (i, &b) in bytes[..n].iter().enumerate() {
        match b {
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 => {}
            0x40..=0x4f if long => {}
            0xd8..=0xdf if i + 1 < n => {
                fop = ((b as u16 & 7) << 8) | bytes[i + 1] as u16;
                break;
            }
            _ => break,
        }
    }
    let mem = insn.op_count() >= 1 && insn.op0_kind() == OpKind::Memory;
    let fdp = if mem {
        Some((
            effective_address(ctx.cpu, insn),
            ctx.cpu.seg[crate::interp::operand::seg_of(insn.memory_segment()) as usize].selector,
        ))
    } else {
        None
    };
    let f = &mut ctx.cpu.fpu;
    f.fop = fop;
    f.fip = ip;
    f.fcs = cs.selector;
    if let Some((dp, ds)) = fdp {
        f.fdp = dp;
        f.fds = ds;
    }
    Ok(())
}

/// Reads a memory operand of up to 8 bytes.
#[inline]
fn read_m(ctx: &mut Ctx, insn: &Instruction, size: u8) -> Result<u64> {
    let (s, off) = crate::interp::operand::mem_operand(ctx.cpu, insn);
    ctx.read_seg(s, off, size)
}

/// Writes a memory operand of up to 8 bytes.
#[inline]
fn write_m(ctx: &mut Ctx, insn: &Instruction, size: u8, v: u64) -> Result<()> {
    let (s, off) = crate::interp::operand::mem_operand(ctx.cpu, insn);
    ctx.write_seg(s, off, size, v)
}

/// The source operand of a memory form: the value and its load flags
/// (FLD m32/m64 quiet SNaNs with IE; the arithmetic forms keep them
/// signaling for the operation to see).
fn mem_value(ctx: &mut Ctx, insn: &Instruction, for_load: bool) -> Result<(F80, Exc)> {
    Ok(match insn.memory_size() {
        MemorySize::Float32 => {
            let b = read_m(ctx, insn, 4)? as u32;
            if for_load {
                x87::from_f32(b)
            } else {
                x87::f32_operand(b)
            }
        }
        MemorySize::Float64 => {
            let b = read_m(ctx, insn, 8)?;
            if for_load {
                x87::from_f64(b)
            } else {
                x87::f64_operand(b)
            }
        }
        MemorySize::Int16 => (x87::from_int(read_m(ctx, insn, 2)? as i16 as i64), Exc(0)),
        MemorySize::Int32 => (x87::from_int(read_m(ctx, insn, 4)? as i32 as i64), Exc(0)),
        MemorySize::Int64 => (x87::from_int(read_m(ctx, insn, 8)? as i64), Exc(0)),
        MemorySize::Bcd => {
            let mut b = [0u8; 10];
            ctx.read_mem(insn, &mut b, 1)?;
            (x87::from_bcd(b), Exc(0))
        }
        _ => {
            // Float80
            let mut b = [0u8; 10];
            ctx.read_mem(insn, &mut b, 1)?;
            (F80::from_bytes(b), Exc(0))
        }
    })
}

// ---------------------------------------------------------------------
// Loads.

/// Pushes a loaded value (after the stack-overflow check). A denormal
/// FLD m32/m64 operand is pushed (normalized) even with DE unmasked: DE
/// is reported, C1 cleared, and #MF comes at the next waiting
/// instruction, as the host does. Only an unmasked IE (SNaN) suppresses
/// the push.
fn load_push(f: &mut Fpu, v: F80, exc: u16) {
    if !f.is_empty(7) {
        overflow(f);
    } else if !raise(f, exc, C1) || exc & IE & !f.cw == 0 {
        push(f, v);
    }
}

/// FLD m32/m64/m80, FILD m16/m32/m64, FBLD m80.
fn fld_m(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let (v, exc) = mem_value(ctx, insn, true)?;
    load_push(&mut ctx.cpu.fpu, v, exc.0);
    done(ctx, insn)
}

/// FLD ST(i).
fn fld_st(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let i = sti(insn.op0_register());
    let f = &mut ctx.cpu.fpu;
    // An empty source is a stack underflow (C1 = 0), reported in
    // preference to a stack overflow when ST(7) is in use too (host
    // behaviour; the masked response pushes the indefinite either way).
    if f.is_empty(i) {
        if !raise(f, IE | SF, C1) {
            push(f, F80::INDEFINITE);
        }
    } else if !f.is_empty(7) {
        overflow(f);
    } else {
        let v = f.st(i);
        raise(f, 0, C1);
        push(f, v);
    }
    done(ctx, insn)
}

/// FLD1, FLDZ, FLDPI, FLDL2E, FLDL2T, FLDLG2, FLDLN2.
fn fld_const(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let c = match insn.mnemonic() {
        Mnemonic::Fld1 => Const::One,
        Mnemonic::Fldz => Const::Zero,
        Mnemonic::Fldpi => Const::Pi,
        Mnemonic::Fldl2e => Const::L2E,
        Mnemonic::Fldl2t => Const::L2T,
        Mnemonic::Fldlg2 => Const::Lg2,
        _ => Const::Ln2,
    };
    let f = &mut ctx.cpu.fpu;
    let v = x87::load_const(c, ctrl(f).rc);
    load_push(f, v, 0);
    done(ctx, insn)
}

// ---------------------------------------------------------------------
// Stores.

/// FST/FSTP m32/m64, FSTP m80.
fn fst_m<const POP: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let f = &ctx.cpu.fpu;
    let rc = ctrl(f).rc;
    let empty = f.is_empty(0);
    let v = if empty { F80::INDEFINITE } else { f.st(0) };
    let ms = insn.memory_size();
    let (bits, mut exc) = match ms {
        MemorySize::Float32 => {
            let (b, e) = x87::to_f32(v, rc);
            (b as u64, e)
        }
        MemorySize::Float64 => x87::to_f64(v, rc),
        _ => (0, Exc(0)),
    };
    // With UE unmasked a tiny result raises UE even when it is exact (the
    // core follows the masked rule, tiny and inexact): an exact denormal
    // result. The store and the pop are then suppressed (SDM vol. 1
    // 4.9.1.5; host behaviour).
    if f.cw & UE == 0 && stores_denormal(ms, bits) {
        exc |= UE;
    }
    if empty {
        exc = Exc(IE | SF);
    }
    let (sw, block) = resolve(f, exc.0, C1, true);
    if !block {
        match ms {
            MemorySize::Float32 => write_m(ctx, insn, 4, bits)?,
            MemorySize::Float64 => write_m(ctx, insn, 8, bits)?,
            _ => ctx.write_mem(insn, &v.to_bytes(), 1)?,
        }
    }
    let f = &mut ctx.cpu.fpu;
    f.sw = sw;
    if POP && !block {
        pop(f);
    }
    done(ctx, insn)
}

/// Whether `bits`, an m32 or m64 store result, is a denormal.
#[inline]
fn stores_denormal(ms: MemorySize, bits: u64) -> bool {
    let (exp, frac) = match ms {
        MemorySize::Float32 => ((bits >> 23) & 0xff, bits & 0x7f_ffff),
        MemorySize::Float64 => ((bits >> 52) & 0x7ff, bits & 0xf_ffff_ffff_ffff),
        _ => return false,
    };
    exp == 0 && frac != 0
}

/// FST/FSTP ST(i) (and the FSTP aliases).
fn fst_st<const POP: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let i = sti(insn.op0_register());
    let f = &mut ctx.cpu.fpu;
    if f.is_empty(0) && insn.mnemonic() == Mnemonic::Fstpnce {
        // FSTP1 (D9 D8+i, undocumented alias of FSTP ST(i)) with ST(0)
        // empty raises no stack fault on the host: it only pops, leaving
        // ST(i) as it was; C1 is cleared. (The DF D0+i and DF D8+i
        // aliases fault like FSTP.)
        f.sw &= !C1;
        pop(f);
        return done(ctx, insn);
    }
    let (v, exc) = if f.is_empty(0) {
        (F80::INDEFINITE, IE | SF)
    } else {
        (f.st(0), 0)
    };
    if !raise(f, exc, C1) {
        f.set_st(i, v);
        if POP {
            pop(f);
        }
    }
    done(ctx, insn)
}

/// FIST m16/m32, FISTP m16/m32/m64, FISTTP m16/m32/m64 (`TRUNC`).
fn fist<const POP: bool, const TRUNC: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let f = &ctx.cpu.fpu;
    let rc = if TRUNC { Rounding::Zero } else { ctrl(f).rc };
    let size: u8 = match insn.memory_size() {
        MemorySize::Int16 => 2,
        MemorySize::Int32 => 4,
        _ => 8,
    };
    let empty = f.is_empty(0);
    let v = if empty { F80::INDEFINITE } else { f.st(0) };
    let (i, mut exc) = x87::to_int(v, rc, size as u32 * 8);
    if empty {
        exc = Exc(IE | SF);
    }
    let (sw, block) = resolve(f, exc.0, C1, true);
    if !block {
        write_m(ctx, insn, size, i as u64)?;
    }
    let f = &mut ctx.cpu.fpu;
    f.sw = sw;
    if POP && !block {
        pop(f);
    }
    done(ctx, insn)
}

/// FBSTP m80.
fn fbstp(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let f = &ctx.cpu.fpu;
    let empty = f.is_empty(0);
    let v = if empty { F80::INDEFINITE } else { f.st(0) };
    let (b, mut exc) = x87::to_bcd(v, ctrl(f).rc);
    if empty {
        exc = Exc(IE | SF);
    }
    let (sw, block) = resolve(f, exc.0, C1, true);
    if !block {
        ctx.write_mem(insn, &b, 1)?;
    }
    let f = &mut ctx.cpu.fpu;
    f.sw = sw;
    if !block {
        pop(f);
    }
    done(ctx, insn)
}

// ---------------------------------------------------------------------
// Arithmetic.

#[inline]
fn arith(op: u8, a: F80, b: F80, ctl: Ctrl) -> (F80, Exc) {
    match op {
        ADD => x87::add(a, b, ctl),
        MUL => x87::mul(a, b, ctl),
        SUB => x87::sub(a, b, ctl),
        SUBR => x87::sub(b, a, ctl),
        DIV => x87::div(a, b, ctl),
        _ => x87::div(b, a, ctl),
    }
}

/// ST(d) = ST(d) op ST(s), popping with `POP` (FADD ST(0), ST(i) /
/// FADD ST(i), ST(0) / FADDP ST(i), ST(0) and the others).
fn arith_r<const OP: u8, const POP: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let d = sti(insn.op0_register());
    let s = sti(insn.op1_register());
    let f = &mut ctx.cpu.fpu;
    if f.is_empty(d) || f.is_empty(s) {
        underflow(f, d, POP as usize, C1);
    } else {
        let (r, exc) = arith(OP, f.st(d), f.st(s), ctrl(f));
        if !raise(f, exc.0, C1) {
            f.set_st(d, r);
            if POP {
                pop(f);
            }
        }
    }
    done(ctx, insn)
}

/// ST(0) = ST(0) op m32fp/m64fp/m16int/m32int.
fn arith_m<const OP: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let (v, load) = mem_value(ctx, insn, false)?;
    let f = &mut ctx.cpu.fpu;
    if f.is_empty(0) {
        underflow(f, 0, 0, C1);
    } else {
        let a = f.st(0);
        let (r, exc) = arith(OP, a, v, ctrl(f));
        let exc = x87::merge_load_flags(load, &[a, v], exc);
        if !raise(f, exc.0, C1) {
            f.set_st(0, r);
        }
    }
    done(ctx, insn)
}

/// FSQRT, FRNDINT, F2XM1: ST(0) = op(ST(0)).
fn unary(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let f = &mut ctx.cpu.fpu;
    if f.is_empty(0) {
        underflow(f, 0, 0, C1);
    } else {
        let (a, ctl) = (f.st(0), ctrl(f));
        let (r, exc) = match insn.mnemonic() {
            Mnemonic::Fsqrt => x87::sqrt(a, ctl),
            Mnemonic::Frndint => x87::round_int(a, ctl),
            _ => x87::f2xm1(a, ctl),
        };
        if !raise(f, exc.0, C1) {
            f.set_st(0, r);
        }
    }
    done(ctx, insn)
}

/// FABS, FCHS (only stack faults; C1 cleared).
fn sign_op(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let f = &mut ctx.cpu.fpu;
    if f.is_empty(0) {
        underflow(f, 0, 0, C1);
    } else {
        let a = f.st(0);
        let r = if insn.mnemonic() == Mnemonic::Fabs {
            a.abs()
        } else {
            a.chs()
        };
        raise(f, 0, C1);
        f.set_st(0, r);
    }
    done(ctx, insn)
}

/// FSCALE, FPREM, FPREM1: ST(0) = op(ST(0), ST(1)).
fn binary(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let m = insn.mnemonic();
    // FPREM/FPREM1 define all four condition codes (C2: incomplete
    // reduction; C0, C3, C1: quotient bits).
    let cc = if m == Mnemonic::Fscale { C1 } else { CC };
    let f = &mut ctx.cpu.fpu;
    if f.is_empty(0) || f.is_empty(1) {
        underflow(f, 0, 0, cc & (C1 | C2));
    } else {
        let (a, b, ctl) = (f.st(0), f.st(1), ctrl(f));
        let (r, exc) = match m {
            Mnemonic::Fscale => x87::scale(a, b, ctl),
            Mnemonic::Fprem => x87::prem(a, b, false, ctl),
            _ => x87::prem(a, b, true, ctl),
        };
        // A NaN result (NaN operand, or invalid with IE masked) leaves
        // FPREM's C0 and C3 alone and clears C1 and C2, as for a stack
        // underflow (host behaviour; the SDM leaves them undefined).
        let cc = if r.is_nan() { cc & (C1 | C2) } else { cc };
        if !raise(f, exc.0, cc) {
            f.set_st(0, r);
        }
    }
    done(ctx, insn)
}

/// FYL2X, FYL2XP1, FPATAN: ST(1) = op(ST(0), ST(1)), then pop.
fn binary_pop(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let f = &mut ctx.cpu.fpu;
    if f.is_empty(0) || f.is_empty(1) {
        underflow(f, 1, 1, C1);
    } else {
        let (x, y, ctl) = (f.st(0), f.st(1), ctrl(f));
        let (r, exc) = match insn.mnemonic() {
            Mnemonic::Fyl2x => x87::fyl2x(x, y, ctl),
            Mnemonic::Fyl2xp1 => x87::fyl2xp1(x, y, ctl),
            _ => x87::fpatan(x, y, ctl),
        };
        if !raise(f, exc.0, C1) {
            f.set_st(1, r);
            pop(f);
        }
    }
    done(ctx, insn)
}

/// FXTRACT: ST(0) = exponent, then push the significand.
fn fxtract(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let f = &mut ctx.cpu.fpu;
    if f.is_empty(0) || !f.is_empty(7) {
        let exc = if f.is_empty(0) { IE | SF } else { IE | SF | C1 };
        if !raise(f, exc, C1) {
            f.set_st(0, F80::INDEFINITE);
            push(f, F80::INDEFINITE);
        }
    } else {
        let ((e, s), exc) = x87::extract(f.st(0));
        if !raise(f, exc.0, C1) {
            f.set_st(0, e);
            push(f, s);
        }
    }
    done(ctx, insn)
}

/// FSIN, FCOS: C2 set (and ST(0) unchanged) when |ST(0)| >= 2^63.
fn trig(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let f = &mut ctx.cpu.fpu;
    if f.is_empty(0) {
        underflow(f, 0, 0, C1 | C2);
    } else {
        let (a, ctl) = (f.st(0), ctrl(f));
        let r = if insn.mnemonic() == Mnemonic::Fsin {
            x87::sin(a, ctl)
        } else {
            x87::cos(a, ctl)
        };
        match r {
            None => f.sw = (f.sw & !CC) | C2,
            Some((r, exc)) => {
                if !raise(f, exc.0, C1 | C2) {
                    f.set_st(0, r);
                }
            }
        }
    }
    done(ctx, insn)
}

/// FSINCOS (ST(0) = sin, push cos) and FPTAN (ST(0) = tan, push 1.0; a
/// NaN result is pushed again instead): C2 set when |ST(0)| >= 2^63.
fn trig_push(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let f = &mut ctx.cpu.fpu;
    if f.is_empty(0) || !f.is_empty(7) {
        let exc = if f.is_empty(0) { IE | SF } else { IE | SF | C1 };
        if !raise(f, exc, C1 | C2) {
            f.set_st(0, F80::INDEFINITE);
            push(f, F80::INDEFINITE);
        }
        return done(ctx, insn);
    }
    let (a, ctl) = (f.st(0), ctrl(f));
    let r = if insn.mnemonic() == Mnemonic::Fsincos {
        x87::sincos(a, ctl).map(|((s, es), (c, ec))| (s, c, es | ec))
    } else {
        x87::tan(a, ctl).map(|(t, e)| (t, if t.is_nan() { t } else { F80::ONE }, e))
    };
    match r {
        None => f.sw = (f.sw & !CC) | C2,
        Some((kept, pushed, exc)) => {
            // C1: the round-up indicator of the result (of either result
            // for FSINCOS)
            if !raise(f, exc.0, C1 | C2) {
                f.set_st(0, kept);
                push(f, pushed);
            }
        }
    }
    done(ctx, insn)
}

// ---------------------------------------------------------------------
// Compares.

/// Compares ST(0) with `b` (or reports a stack underflow when `b` is
/// `None` or ST(0) is empty) and commits the exception flags; returns the
/// relation (unordered for an invalid operand or a stack underflow) and
/// whether an unmasked exception suppressed the pops. The caller sets the
/// condition codes or EFLAGS: the host reports the relation even when IE
/// or DE is unmasked (the SDM leaves the flags undefined there).
fn compare(f: &mut Fpu, b: Option<F80>, ordered: bool, load: Exc) -> (Relation, bool) {
    let (rel, exc) = match b {
        Some(b) if !f.is_empty(0) => {
            let a = f.st(0);
            let (rel, exc) = x87::compare(a, b, ordered);
            (rel, x87::merge_load_flags(load, &[a, b], exc).0)
        }
        _ => (Relation::Unordered, IE | SF),
    };
    // C1 is handled by the callers
    let (sw, block) = resolve(f, exc & !CC, 0, false);
    f.sw = sw;
    (rel, block)
}

/// FCOM-family epilogue: C3, C2, C0 from the relation and C1 cleared
/// (also when an unmasked exception suppressed the pops), then the pops.
fn compare_cc(f: &mut Fpu, (rel, block): (Relation, bool), pops: u8) {
    f.sw = (f.sw & !CC) | rel.cc();
    if !block {
        for _ in 0..pops {
            pop(f);
        }
    }
}

/// FCOM/FCOMP/FCOMPP, FUCOM/FUCOMP/FUCOMPP with a register operand.
fn fcom_r<const ORDERED: bool, const POPS: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let i = src_st(insn);
    let f = &mut ctx.cpu.fpu;
    let b = (!f.is_empty(i)).then(|| f.st(i));
    let r = compare(f, b, ORDERED, Exc(0));
    compare_cc(f, r, POPS);
    done(ctx, insn)
}

/// FCOM/FCOMP m32fp/m64fp, FICOM/FICOMP m16int/m32int.
fn fcom_m<const POPS: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let (v, load) = mem_value(ctx, insn, false)?;
    let f = &mut ctx.cpu.fpu;
    let r = compare(f, Some(v), true, load);
    compare_cc(f, r, POPS);
    done(ctx, insn)
}

/// FCOMI/FCOMIP/FUCOMI/FUCOMIP: ZF, PF, CF from the compare (OF, SF, AF
/// cleared), also when an unmasked exception suppresses the pop.
/// Deviation from the SDM's "C1 set to 0": the host leaves all four
/// condition codes alone, except that a stack underflow clears C1.
fn fcomi<const ORDERED: bool, const POP: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let i = src_st(insn);
    let f = &mut ctx.cpu.fpu;
    let b = (!f.is_empty(i)).then(|| f.st(i));
    let underflow = b.is_none() || f.is_empty(0);
    let (rel, block) = compare(f, b, ORDERED, Exc(0));
    if underflow {
        f.sw &= !C1;
    }
    if POP && !block {
        pop(f);
    }
    ctx.cpu.rflags = (ctx.cpu.rflags & !flags::STATUS) | rel.eflags();
    done(ctx, insn)
}

/// FTST: compares ST(0) with +0.0.
fn ftst(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let f = &mut ctx.cpu.fpu;
    let r = compare(f, Some(F80::ZERO), true, Exc(0));
    compare_cc(f, r, 0);
    done(ctx, insn)
}

/// FXAM: classifies ST(0) (C3 C2 C0; C1 the sign); an empty register
/// reports C3|C0.
fn fxam(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let f = &mut ctx.cpu.fpu;
    let v = f.st(0);
    let cc = if f.is_empty(0) {
        C3 | C0 | if v.sign { C1 } else { 0 }
    } else {
        x87::examine(v).0
    };
    f.sw = (f.sw & !CC) | (cc & CC);
    done(ctx, insn)
}

// ---------------------------------------------------------------------
// Register stack.

/// FXCH ST(i): empty registers read as the indefinite (IE|SF, masked).
fn fxch(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let i = src_st(insn);
    let f = &mut ctx.cpu.fpu;
    let (e0, ei) = (f.is_empty(0), f.is_empty(i));
    let exc = if e0 || ei { IE | SF } else { 0 };
    if !raise(f, exc, C1) {
        let a = if e0 { F80::INDEFINITE } else { f.st(0) };
        let b = if ei { F80::INDEFINITE } else { f.st(i) };
        f.set_st(0, b);
        f.set_st(i, a);
    }
    done(ctx, insn)
}

/// FCMOVcc ST(0), ST(i) (`CC` is the EFLAGS condition code).
fn fcmov<const COND: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let i = src_st(insn);
    let taken = flags::condition(ctx.cpu.rflags, COND);
    let f = &mut ctx.cpu.fpu;
    // C1 is left alone unless the stack underflows (SDM: "set to 0 if
    // stack underflow occurred"; the host keeps it otherwise).
    if f.is_empty(0) || f.is_empty(i) {
        underflow(f, 0, 0, C1);
    } else if taken {
        let v = f.st(i);
        f.set_st(0, v);
    }
    done(ctx, insn)
}

/// FFREE ST(i) and FFREEP ST(i) (which pops afterwards).
fn ffree<const POP: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let i = sti(insn.op0_register());
    let f = &mut ctx.cpu.fpu;
    f.free(i);
    if POP {
        pop(f);
    }
    // The SDM leaves the condition codes undefined; the host clears C1.
    f.sw &= !C1;
    done(ctx, insn)
}

fn fincstp(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let f = &mut ctx.cpu.fpu;
    f.set_top(f.top() + 1);
    f.sw &= !C1;
    done(ctx, insn)
}

fn fdecstp(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let f = &mut ctx.cpu.fpu;
    f.set_top(f.top().wrapping_sub(1));
    f.sw &= !C1;
    done(ctx, insn)
}

fn fnop(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    done(ctx, insn)
}

/// FNENI, FNDISI, FNSETPM: no-ops since the 387 (no wait, no pointers).
fn legacy_nop(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    check_x87(ctx.cpu)
}

// ---------------------------------------------------------------------
// Control.

/// FNINIT.
fn fninit(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    check_x87(ctx.cpu)?;
    ctx.cpu.fpu.init();
    Ok(())
}

/// FNCLEX: clears the exception flags, SF, ES and B.
fn fnclex(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    check_x87(ctx.cpu)?;
    ctx.cpu.fpu.sw &= !(B | ES | SF | FLAGS);
    Ok(())
}

/// Recomputes ES and B from the exception flags and their masks.
fn update_es(f: &mut Fpu) {
    if f.sw & !f.cw & FLAGS != 0 {
        f.sw |= ES | B;
    } else {
        f.sw &= !(ES | B);
    }
}

/// Loads the control word (reserved bits dropped, bit 6 set) and
/// recomputes ES/B.
fn set_cw(f: &mut Fpu, cw: u16) {
    f.cw = (cw & CW_BITS) | CW_ONE;
    update_es(f);
}

/// FLDCW m16.
fn fldcw(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    begin(ctx.cpu)?;
    let v = read_m(ctx, insn, 2)? as u16;
    set_cw(&mut ctx.cpu.fpu, v);
    Ok(())
}

/// FNSTCW m16.
fn fnstcw(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_x87(ctx.cpu)?;
    let v = ctx.cpu.fpu.cw;
    write_m(ctx, insn, 2, v as u64)
}

/// FNSTSW m16 / AX.
fn fnstsw(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    check_x87(ctx.cpu)?;
    let v = ctx.cpu.fpu.sw as u64;
    if insn.op0_kind() == OpKind::Register {
        write_reg(ctx.cpu, Register::AX, v);
        Ok(())
    } else {
        write_m(ctx, insn, 2, v)
    }
}
