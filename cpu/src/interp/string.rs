//! String instructions: MOVS, CMPS, SCAS, LODS, STOS, INS and OUTS in byte,
//! word, dword and qword forms, with REP/REPE/REPNE at every address size.
//!
//! - The address size (16/32/64) picks the counter (CX/ECX/RCX) and the index
//!   registers (SI/DI, ESI/EDI, RSI/RDI); indices wrap at the address size and
//!   are written back with the usual merge rules (16-bit: low word only;
//!   32-bit: zero-extended, which matters in 64-bit mode with 67h).
//! - The source segment (DS by default) honours segment overrides; the
//!   ES:(E/R)DI destination cannot be overridden.
//! - F2 on MOVS/LODS/STOS/INS/OUTS behaves as REP (as Intel processors do);
//!   on CMPS/SCAS F3 is REPE and F2 is REPNE.
//! - A REP instruction processes up to [`REP_CHUNK`] elements per execution
//!   and counts as ONE instruction of virtual time per execution. With work
//!   left it leaves RIP on itself (SDM vol. 2 "REP": a repeated string
//!   operation can be suspended between iterations and resumed), so a guest
//!   counter of 2^32 or 2^64 cannot hold the emulator in one instruction, and
//!   events can land between chunks, in both engines alike.
//! - Faults are precise: when iteration k faults, RCX/RSI/RDI (and RAX, the
//!   flags) reflect iterations 0..k-1 and the error returns, so the run loop
//!   points RIP back at the instruction and a restart resumes where it
//!   stopped — what hardware does.
//! - Fast path: REP MOVS and REP STOS with DF=0 copy/fill whole page-bounded
//!   chunks through host pointers when the software TLB already holds a read
//!   (source) and write (destination) entry, i.e. both are ordinary RAM that
//!   needs no side effects. MOVS semantics are element by element forwards,
//!   so a destination overlapping the source just ahead of it replicates the
//!   pattern; the fast path reproduces that exactly.
//! - INS/OUTS check I/O permission (`Ctx::check_io` in io.rs: IOPL, then the
//!   TSS bitmap) once per instruction before anything else, even when the
//!   count is zero (as Bochs and QEMU do); INS checks that the destination is writable before reading the port (a
//!   port read has side effects and must not be repeated by a restart), and
//!   any port access asks the run loop to exit so the machine can look.

use iced_x86::{Code, Instruction, OpKind};

use crate::block::Handler;
use crate::fault::Result;
use crate::flags;
use crate::interp::operand::{addr_mask, seg_of};
use crate::interp::stack::write_gpr;
use crate::interp::Ctx;
use crate::state::{reg, Cpu, SegReg};
use crate::tlb::Access;

/// The handler for `insn` if this group implements it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    use Code::*;
    let rep = insn.has_rep_prefix() || insn.has_repne_prefix();
    macro_rules! pick {
        ($rep:ident, $one:ident, $n:literal) => {
            if rep {
                $rep::<$n>
            } else {
                $one::<$n>
            }
        };
    }
    Some(match insn.code() {
        Movsb_m8_m8 => pick!(rep_movs, movs, 1),
        Movsw_m16_m16 => pick!(rep_movs, movs, 2),
        Movsd_m32_m32 => pick!(rep_movs, movs, 4),
        Movsq_m64_m64 => pick!(rep_movs, movs, 8),
        Cmpsb_m8_m8 => pick!(rep_cmps, cmps, 1),
        Cmpsw_m16_m16 => pick!(rep_cmps, cmps, 2),
        Cmpsd_m32_m32 => pick!(rep_cmps, cmps, 4),
        Cmpsq_m64_m64 => pick!(rep_cmps, cmps, 8),
        Scasb_AL_m8 => pick!(rep_scas, scas, 1),
        Scasw_AX_m16 => pick!(rep_scas, scas, 2),
        Scasd_EAX_m32 => pick!(rep_scas, scas, 4),
        Scasq_RAX_m64 => pick!(rep_scas, scas, 8),
        Lodsb_AL_m8 => pick!(rep_lods, lods, 1),
        Lodsw_AX_m16 => pick!(rep_lods, lods, 2),
        Lodsd_EAX_m32 => pick!(rep_lods, lods, 4),
        Lodsq_RAX_m64 => pick!(rep_lods, lods, 8),
        Stosb_m8_AL => pick!(rep_stos, stos, 1),
        Stosw_m16_AX => pick!(rep_stos, stos, 2),
        Stosd_m32_EAX => pick!(rep_stos, stos, 4),
        Stosq_m64_RAX => pick!(rep_stos, stos, 8),
        Insb_m8_DX => pick!(rep_ins, ins, 1),
        Insw_m16_DX => pick!(rep_ins, ins, 2),
        Insd_m32_DX => pick!(rep_ins, ins, 4),
        Outsb_DX_m8 => pick!(rep_outs, outs, 1),
        Outsw_DX_m16 => pick!(rep_outs, outs, 2),
        Outsd_DX_m32 => pick!(rep_outs, outs, 4),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// Shared helpers

/// Address size (2, 4 or 8 bytes) of a string instruction, from the kind of
/// its implicit memory operand.
#[inline(always)]
fn str_asize(insn: &Instruction) -> u8 {
    let k = insn.op0_kind();
    let k = if k == OpKind::Register {
        insn.op1_kind()
    } else {
        k
    };
    match k {
        OpKind::MemorySegSI | OpKind::MemorySegDI | OpKind::MemoryESDI => 2,
        OpKind::MemorySegESI | OpKind::MemorySegEDI | OpKind::MemoryESEDI => 4,
        _ => 8,
    }
}

/// Index step for elements of `n` bytes: +n, or -n when DF is set.
#[inline(always)]
fn delta(cpu: &Cpu, n: u8) -> u64 {
    if cpu.rflags & flags::DF != 0 {
        (n as u64).wrapping_neg()
    } else {
        n as u64
    }
}

/// The index registers and counter of a string instruction at one address size.
struct Regs {
    asz: u8,
    mask: u64,
    si: u64,
    di: u64,
    count: u64,
}

impl Regs {
    #[inline(always)]
    fn load(cpu: &Cpu, asz: u8) -> Regs {
        let mask = addr_mask(asz);
        Regs {
            asz,
            mask,
            si: cpu.gpr[reg::RSI] & mask,
            di: cpu.gpr[reg::RDI] & mask,
            count: cpu.gpr[reg::RCX] & mask,
        }
    }
    #[inline(always)]
    fn step_si(&mut self, d: u64) {
        self.si = self.si.wrapping_add(d) & self.mask;
    }
    #[inline(always)]
    fn step_di(&mut self, d: u64) {
        self.di = self.di.wrapping_add(d) & self.mask;
    }
    #[inline(always)]
    fn put_si(&self, cpu: &mut Cpu) {
        write_gpr(cpu, reg::RSI, self.asz, self.si);
    }
    #[inline(always)]
    fn put_di(&self, cpu: &mut Cpu) {
        write_gpr(cpu, reg::RDI, self.asz, self.di);
    }
    #[inline(always)]
    fn put_count(&self, cpu: &mut Cpu) {
        write_gpr(cpu, reg::RCX, self.asz, self.count);
    }
}

/// How many elements of `n` bytes starting at index `idx` fit before the
/// index wraps at the address size (`mask`).
#[inline(always)]
fn span(idx: u64, n: u64, mask: u64) -> u64 {
    let room = mask - idx;
    if room < n - 1 {
        0
    } else {
        // Saturates: from index 0 at a 64-bit address size, 2^64 bytes fit.
        ((room - (n - 1)) / n).saturating_add(1)
    }
}

/// How many whole elements of `n` bytes fit in the page from `lin` on.
#[inline(always)]
fn page_room(lin: u64, n: u64) -> u64 {
    (0x1000 - (lin & 0xfff)) / n
}

/// Most elements one execution of a REP instruction processes before it
/// suspends itself (the fast paths may overshoot by up to a page): enough
/// that copies and fills of a few pages stay one instruction, few enough
/// that one instruction takes at most a few milliseconds of host time even
/// when every element is a port or MMIO access.
pub(crate) const REP_CHUNK: u64 = 1 << 14;

/// Suspends a REP instruction with elements left: RIP stays on it, so the
/// next execution resumes from the updated registers.
#[inline(always)]
fn suspend(ctx: &mut Ctx, insn: &Instruction) {
    ctx.cpu.rip = insn.ip();
    ctx.cpu.end_block = true;
}

/// Writes the status flags of a comparison.
#[inline(always)]
fn set_status(cpu: &mut Cpu, f: u64) {
    cpu.rflags = (cpu.rflags & !flags::STATUS) | f;
}

// ---------------------------------------------------------------------------
// Host-memory fast paths (REP MOVS / REP STOS, DF = 0)

#[inline(always)]
unsafe fn load(p: *const u8, n: u8) -> u64 {
    match n {
        1 => *p as u64,
        2 => (p as *const u16).read_unaligned() as u64,
        4 => (p as *const u32).read_unaligned() as u64,
        _ => (p as *const u64).read_unaligned(),
    }
}

#[inline(always)]
unsafe fn store(p: *mut u8, n: u8, v: u64) {
    match n {
        1 => *p = v as u8,
        2 => (p as *mut u16).write_unaligned(v as u16),
        4 => (p as *mut u32).write_unaligned(v as u32),
        _ => (p as *mut u64).write_unaligned(v),
    }
}

/// Linear address of the first element of a forward chunk of `k` elements
/// of `n` bytes at `seg:idx`, when every element passes the segment checks
/// and the chunk is linearly contiguous; `k` must not cross the index wrap.
#[inline(always)]
fn chunk_linear(ctx: &Ctx, seg: SegReg, idx: u64, n: u8, k: u64, write: bool) -> Option<u64> {
    let first = ctx.seg_addr(seg, idx, n, write).ok()?;
    if k > 1 {
        // Segment limits and canonicality are intervals: checking both ends
        // covers every element in between.
        let off = (k - 1) * n as u64;
        let last = ctx.seg_addr(seg, idx.wrapping_add(off), n, write).ok()?;
        if last != first.wrapping_add(off) {
            return None;
        }
    }
    Some(first)
}

/// Copies as many elements as possible in one go; returns how many (None:
/// take the per-element path for the next element).
#[inline]
fn movs_fast(ctx: &mut Ctx, src: SegReg, r: &Regs, n: u8) -> Option<u64> {
    let sz = n as u64;
    let mut k = r
        .count
        .min(span(r.si, sz, r.mask))
        .min(span(r.di, sz, r.mask));
    // Bound by the pages of the first elements (the chunk stays in one page each).
    let s0 = ctx.seg_addr(src, r.si, n, false).ok()?;
    let d0 = ctx.seg_addr(SegReg::Es, r.di, n, true).ok()?;
    k = k.min(page_room(s0, sz)).min(page_room(d0, sz));
    if k == 0 {
        return None;
    }
    let s_lin = chunk_linear(ctx, src, r.si, n, k, false)?;
    let d_lin = chunk_linear(ctx, SegReg::Es, r.di, n, k, true)?;
    let user = ctx.cpu.cpl == 3;
    let sh = ctx.cpu.tlb.lookup(Access::Read, user, s_lin)?;
    let dh = ctx.cpu.tlb.lookup(Access::Write, user, d_lin)?;
    let s = (sh + (s_lin & 0xfff) as usize) as *const u8;
    let d = (dh + (d_lin & 0xfff) as usize) as *mut u8;
    let bytes = (k * sz) as usize;
    // SAFETY: TLB read/write entries point at live RAM pages (write entries
    // only for pages that need no side effects on store), and each range lies
    // within its page. Raw pointers may alias; no references are formed.
    unsafe {
        let (sa, da) = (s as usize, d as usize);
        if da <= sa || da >= sa + bytes {
            // No overlap, or the destination is behind the source: a forward
            // element copy equals memmove.
            std::ptr::copy(s, d, bytes);
        } else {
            // Destination just ahead of the source: element-by-element
            // forwards, which replicates the leading pattern as MOVS does.
            for i in 0..k as usize {
                let v = load(s.add(i * n as usize), n);
                store(d.add(i * n as usize), n, v);
            }
        }
    }
    Some(k)
}

/// Fills as many elements as possible in one go; returns how many.
#[inline]
fn stos_fast(ctx: &mut Ctx, r: &Regs, n: u8, v: u64) -> Option<u64> {
    let sz = n as u64;
    let d0 = ctx.seg_addr(SegReg::Es, r.di, n, true).ok()?;
    let k = r.count.min(span(r.di, sz, r.mask)).min(page_room(d0, sz));
    if k == 0 {
        return None;
    }
    let d_lin = chunk_linear(ctx, SegReg::Es, r.di, n, k, true)?;
    let user = ctx.cpu.cpl == 3;
    let dh = ctx.cpu.tlb.lookup(Access::Write, user, d_lin)?;
    let d = (dh + (d_lin & 0xfff) as usize) as *mut u8;
    // SAFETY: as in `movs_fast`; the range lies within one writable RAM page.
    unsafe {
        if n == 1 {
            std::ptr::write_bytes(d, v as u8, k as usize);
        } else {
            for i in 0..k as usize {
                store(d.add(i * n as usize), n, v);
            }
        }
    }
    Some(k)
}

// ---------------------------------------------------------------------------
// MOVS

fn movs<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let mut r = Regs::load(ctx.cpu, str_asize(insn));
    let src = seg_of(insn.memory_segment());
    let v = ctx.read_seg(src, r.si, N)?;
    ctx.write_seg(SegReg::Es, r.di, N, v)?;
    let d = delta(ctx.cpu, N);
    r.step_si(d);
    r.step_di(d);
    r.put_si(ctx.cpu);
    r.put_di(ctx.cpu);
    Ok(())
}

fn rep_movs<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let mut r = Regs::load(ctx.cpu, str_asize(insn));
    if r.count == 0 {
        // Like this host's CPUs: even with no iteration the counter and both
        // indices are written back (zero-extended with a 32-bit address size).
        r.put_count(ctx.cpu);
        r.put_si(ctx.cpu);
        r.put_di(ctx.cpu);
        return Ok(());
    }
    let src = seg_of(insn.memory_segment());
    let d = delta(ctx.cpu, N);
    let fast = ctx.cpu.rflags & flags::DF == 0;
    let mut res = Ok(());
    let mut budget = REP_CHUNK;
    while r.count != 0 {
        if budget == 0 {
            suspend(ctx, insn);
            break;
        }
        budget -= 1;
        if fast {
            if let Some(k) = movs_fast(ctx, src, &r, N) {
                let bytes = k * N as u64;
                r.si = r.si.wrapping_add(bytes) & r.mask;
                r.di = r.di.wrapping_add(bytes) & r.mask;
                r.count -= k;
                budget = budget.saturating_sub(k - 1);
                continue;
            }
        }
        let v = match ctx.read_seg(src, r.si, N) {
            Ok(v) => v,
            Err(f) => {
                res = Err(f);
                break;
            }
        };
        if let Err(f) = ctx.write_seg(SegReg::Es, r.di, N, v) {
            res = Err(f);
            break;
        }
        r.step_si(d);
        r.step_di(d);
        r.count -= 1;
    }
    r.put_si(ctx.cpu);
    r.put_di(ctx.cpu);
    r.put_count(ctx.cpu);
    res
}

// ---------------------------------------------------------------------------
// STOS

fn stos<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let mut r = Regs::load(ctx.cpu, str_asize(insn));
    ctx.write_seg(SegReg::Es, r.di, N, ctx.cpu.gpr[reg::RAX])?;
    r.step_di(delta(ctx.cpu, N));
    r.put_di(ctx.cpu);
    Ok(())
}

fn rep_stos<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let mut r = Regs::load(ctx.cpu, str_asize(insn));
    if r.count == 0 {
        // As for MOVS: the counter and RDI are written back even with no iteration.
        r.put_count(ctx.cpu);
        r.put_di(ctx.cpu);
        return Ok(());
    }
    let v = ctx.cpu.gpr[reg::RAX] & flags::mask(N);
    let d = delta(ctx.cpu, N);
    let fast = ctx.cpu.rflags & flags::DF == 0;
    let mut res = Ok(());
    let mut budget = REP_CHUNK;
    while r.count != 0 {
        if budget == 0 {
            suspend(ctx, insn);
            break;
        }
        budget -= 1;
        if fast {
            if let Some(k) = stos_fast(ctx, &r, N, v) {
                r.di = r.di.wrapping_add(k * N as u64) & r.mask;
                r.count -= k;
                budget = budget.saturating_sub(k - 1);
                continue;
            }
        }
        if let Err(f) = ctx.write_seg(SegReg::Es, r.di, N, v) {
            res = Err(f);
            break;
        }
        r.step_di(d);
        r.count -= 1;
    }
    r.put_di(ctx.cpu);
    r.put_count(ctx.cpu);
    res
}

// ---------------------------------------------------------------------------
// LODS

fn lods<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let mut r = Regs::load(ctx.cpu, str_asize(insn));
    let src = seg_of(insn.memory_segment());
    let v = ctx.read_seg(src, r.si, N)?;
    write_gpr(ctx.cpu, reg::RAX, N, v);
    r.step_si(delta(ctx.cpu, N));
    r.put_si(ctx.cpu);
    Ok(())
}

fn rep_lods<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let mut r = Regs::load(ctx.cpu, str_asize(insn));
    if r.count == 0 {
        // Only the counter is written back with no iteration (host behaviour).
        r.put_count(ctx.cpu);
        return Ok(());
    }
    let src = seg_of(insn.memory_segment());
    let d = delta(ctx.cpu, N);
    let mut res = Ok(());
    let mut budget = REP_CHUNK;
    while r.count != 0 {
        if budget == 0 {
            suspend(ctx, insn);
            break;
        }
        budget -= 1;
        match ctx.read_seg(src, r.si, N) {
            Ok(v) => write_gpr(ctx.cpu, reg::RAX, N, v),
            Err(f) => {
                res = Err(f);
                break;
            }
        }
        r.step_si(d);
        r.count -= 1;
    }
    r.put_si(ctx.cpu);
    r.put_count(ctx.cpu);
    res
}

// ---------------------------------------------------------------------------
// CMPS / SCAS

fn cmps<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let mut r = Regs::load(ctx.cpu, str_asize(insn));
    let src = seg_of(insn.memory_segment());
    // Operand order: [seg:SI] - ES:[DI].
    let a = ctx.read_seg(src, r.si, N)?;
    let b = ctx.read_seg(SegReg::Es, r.di, N)?;
    set_status(ctx.cpu, flags::sub(a, b, 0, N).1);
    let d = delta(ctx.cpu, N);
    r.step_si(d);
    r.step_di(d);
    r.put_si(ctx.cpu);
    r.put_di(ctx.cpu);
    Ok(())
}

fn rep_cmps<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let mut r = Regs::load(ctx.cpu, str_asize(insn));
    if r.count == 0 {
        // Only the counter is written back with no iteration (host behaviour).
        r.put_count(ctx.cpu);
        return Ok(());
    }
    // REPE stops when ZF = 0, REPNE when ZF = 1.
    let stop_zf = insn.has_repne_prefix();
    let src = seg_of(insn.memory_segment());
    let d = delta(ctx.cpu, N);
    let mut res = Ok(());
    let mut budget = REP_CHUNK;
    while r.count != 0 {
        if budget == 0 {
            suspend(ctx, insn);
            break;
        }
        budget -= 1;
        let a = match ctx.read_seg(src, r.si, N) {
            Ok(v) => v,
            Err(f) => {
                res = Err(f);
                break;
            }
        };
        let b = match ctx.read_seg(SegReg::Es, r.di, N) {
            Ok(v) => v,
            Err(f) => {
                res = Err(f);
                break;
            }
        };
        let f = flags::sub(a, b, 0, N).1;
        set_status(ctx.cpu, f);
        r.step_si(d);
        r.step_di(d);
        r.count -= 1;
        if (f & flags::ZF != 0) == stop_zf {
            break;
        }
    }
    r.put_si(ctx.cpu);
    r.put_di(ctx.cpu);
    r.put_count(ctx.cpu);
    res
}

fn scas<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let mut r = Regs::load(ctx.cpu, str_asize(insn));
    let b = ctx.read_seg(SegReg::Es, r.di, N)?;
    let a = ctx.cpu.gpr[reg::RAX] & flags::mask(N);
    set_status(ctx.cpu, flags::sub(a, b, 0, N).1);
    r.step_di(delta(ctx.cpu, N));
    r.put_di(ctx.cpu);
    Ok(())
}

fn rep_scas<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let mut r = Regs::load(ctx.cpu, str_asize(insn));
    if r.count == 0 {
        // Only the counter is written back with no iteration (host behaviour).
        r.put_count(ctx.cpu);
        return Ok(());
    }
    let stop_zf = insn.has_repne_prefix();
    let a = ctx.cpu.gpr[reg::RAX] & flags::mask(N);
    let d = delta(ctx.cpu, N);
    let mut res = Ok(());
    let mut budget = REP_CHUNK;
    while r.count != 0 {
        if budget == 0 {
            suspend(ctx, insn);
            break;
        }
        budget -= 1;
        let b = match ctx.read_seg(SegReg::Es, r.di, N) {
            Ok(v) => v,
            Err(f) => {
                res = Err(f);
                break;
            }
        };
        let f = flags::sub(a, b, 0, N).1;
        set_status(ctx.cpu, f);
        r.step_di(d);
        r.count -= 1;
        if (f & flags::ZF != 0) == stop_zf {
            break;
        }
    }
    r.put_di(ctx.cpu);
    r.put_count(ctx.cpu);
    res
}

// ---------------------------------------------------------------------------
// INS / OUTS

/// Port output or input happened: leave the block and let the machine look.
#[inline(always)]
fn io_exit(cpu: &mut Cpu) {
    cpu.exit_request = true;
    cpu.end_block = true;
}

/// One INS element: the destination is checked before the port is read.
#[inline(always)]
fn ins_one(ctx: &mut Ctx, port: u16, di: u64, n: u8) -> Result<()> {
    ctx.probe_write(SegReg::Es, di, n)?;
    let v = ctx.bus.io_read(port, n, ctx.cpu.icount) as u64;
    io_exit(ctx.cpu);
    ctx.write_seg(SegReg::Es, di, n, v)
}

fn ins<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let port = ctx.cpu.gpr[reg::RDX] as u16;
    ctx.check_io(port, N)?;
    let mut r = Regs::load(ctx.cpu, str_asize(insn));
    ins_one(ctx, port, r.di, N)?;
    r.step_di(delta(ctx.cpu, N));
    r.put_di(ctx.cpu);
    Ok(())
}

fn rep_ins<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let port = ctx.cpu.gpr[reg::RDX] as u16;
    ctx.check_io(port, N)?;
    let mut r = Regs::load(ctx.cpu, str_asize(insn));
    if r.count == 0 {
        return Ok(());
    }
    let d = delta(ctx.cpu, N);
    let mut res = Ok(());
    let mut budget = REP_CHUNK;
    while r.count != 0 {
        if budget == 0 {
            suspend(ctx, insn);
            break;
        }
        budget -= 1;
        if let Err(f) = ins_one(ctx, port, r.di, N) {
            res = Err(f);
            break;
        }
        r.step_di(d);
        r.count -= 1;
    }
    r.put_di(ctx.cpu);
    r.put_count(ctx.cpu);
    res
}

fn outs<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let port = ctx.cpu.gpr[reg::RDX] as u16;
    ctx.check_io(port, N)?;
    let mut r = Regs::load(ctx.cpu, str_asize(insn));
    let src = seg_of(insn.memory_segment());
    let v = ctx.read_seg(src, r.si, N)?;
    ctx.bus.io_write(port, N, v as u32, ctx.cpu.icount);
    io_exit(ctx.cpu);
    r.step_si(delta(ctx.cpu, N));
    r.put_si(ctx.cpu);
    Ok(())
}

fn rep_outs<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let port = ctx.cpu.gpr[reg::RDX] as u16;
    ctx.check_io(port, N)?;
    let mut r = Regs::load(ctx.cpu, str_asize(insn));
    if r.count == 0 {
        return Ok(());
    }
    let src = seg_of(insn.memory_segment());
    let d = delta(ctx.cpu, N);
    let mut res = Ok(());
    let mut budget = REP_CHUNK;
    while r.count != 0 {
        if budget == 0 {
            suspend(ctx, insn);
            break;
        }
        budget -= 1;
        let v = match ctx.read_seg(src, r.si, N) {
            Ok(v) => v,
            Err(f) => {
                res = Err(f);
                break;
            }
        };
        ctx.bus.io_write(port, N, v as u32, ctx.cpu.icount);
        io_exit(ctx.cpu);
        r.step_si(d);
        r.count -= 1;
    }
    r.put_si(ctx.cpu);
    r.put_count(ctx.cpu);
    res
}

#[cfg(test)]
mod tests {
    use super::super::stack::testkit::{step, step_bytes, user32, vec_of};
    use crate::fault::vector;
    use crate::flags::{AF, CF, DF, FIXED, IOPL, OF, PF, SF, STATUS, ZF};
    use crate::interp::RunExit;
    use crate::state::{attr, reg, Cpu, SegReg, Segment};
    use crate::testutil::{run, TestBus, TestMode, DATA, RAM};
    use iced_x86::code_asm::*;

    type Build = fn(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>;

    fn pattern(i: u64) -> u8 {
        (i.wrapping_mul(37) ^ (i >> 7)) as u8
    }

    /// Source/destination bases for `mode`: real mode uses DS=0x2000, ES=0x3000.
    fn bases(mode: TestMode) -> (u64, u64) {
        match mode {
            TestMode::Real => (0x2_0000, 0x3_0000),
            _ => (DATA, DATA + 0x1_0000),
        }
    }

    fn real_segments(cpu: &mut Cpu) {
        cpu.seg[SegReg::Ds as usize] = Segment::real(0x2000, attr::DATA_RW);
        cpu.seg[SegReg::Es as usize] = Segment::real(0x3000, attr::DATA_RW);
    }

    /// Sets up a string instruction's registers: index offsets are 0 in real
    /// mode, the linear bases otherwise.
    fn setup_regs(mode: TestMode, cpu: &mut Cpu, count: u64) {
        let (s, d) = bases(mode);
        if mode == TestMode::Real {
            real_segments(cpu);
            cpu.gpr[reg::RSI] = 0;
            cpu.gpr[reg::RDI] = 0;
        } else {
            cpu.gpr[reg::RSI] = s;
            cpu.gpr[reg::RDI] = d;
        }
        cpu.gpr[reg::RCX] = count;
    }

    fn movs_build(size: u8) -> Build {
        match size {
            1 => |a| a.rep().movsb(),
            2 => |a| a.rep().movsw(),
            4 => |a| a.rep().movsd(),
            _ => |a| a.rep().movsq(),
        }
    }

    fn stos_build(size: u8) -> Build {
        match size {
            1 => |a| a.rep().stosb(),
            2 => |a| a.rep().stosw(),
            4 => |a| a.rep().stosd(),
            _ => |a| a.rep().stosq(),
        }
    }

    #[test]
    fn rep_movs_counts_sizes_modes() {
        for mode in [TestMode::Real, TestMode::Protected32, TestMode::Long64] {
            let sizes: &[u8] = if mode == TestMode::Long64 {
                &[1, 2, 4, 8]
            } else {
                &[1, 2, 4]
            };
            for &size in sizes {
                for count in [0u64, 1, 3, 4097, 7000] {
                    let (src, dst) = bases(mode);
                    let bytes = count * size as u64;
                    let (cpu, bus, r) = step(mode, movs_build(size), |cpu, bus| {
                        setup_regs(mode, cpu, count);
                        for i in 0..bytes + 16 {
                            bus.ram[(src + i) as usize] = pattern(i);
                        }
                    });
                    assert!(r.is_ok(), "{mode:?} {size} {count}");
                    for i in 0..bytes {
                        assert_eq!(
                            bus.ram[(dst + i) as usize],
                            pattern(i),
                            "{mode:?} {size} {count} byte {i}"
                        );
                    }
                    assert_eq!(bus.ram[(dst + bytes) as usize], 0, "no overrun");
                    assert_eq!(cpu.gpr[reg::RCX], 0);
                    let (s0, d0) = if mode == TestMode::Real {
                        (0, 0)
                    } else {
                        (src, dst)
                    };
                    assert_eq!(cpu.gpr[reg::RSI], s0 + bytes, "{mode:?} {size} {count}");
                    assert_eq!(cpu.gpr[reg::RDI], d0 + bytes);
                }
            }
        }
    }

    #[test]
    fn single_movs_and_direction() {
        for (size, build) in [
            (1u64, (|a| a.movsb()) as Build),
            (2, |a| a.movsw()),
            (4, |a| a.movsd()),
            (8, |a| a.movsq()),
        ] {
            for df in [false, true] {
                let (cpu, bus, r) = step(TestMode::Long64, build, |cpu, bus| {
                    cpu.gpr[reg::RSI] = DATA;
                    cpu.gpr[reg::RDI] = DATA + 0x100;
                    cpu.gpr[reg::RCX] = 77;
                    bus.put(DATA, 8, 0x0102_0304_0506_0708);
                    if df {
                        cpu.rflags |= DF;
                    }
                });
                assert!(r.is_ok());
                let mask = crate::flags::mask(size as u8);
                assert_eq!(bus.read(DATA + 0x100, 8), 0x0102_0304_0506_0708 & mask);
                let step = if df { size.wrapping_neg() } else { size };
                assert_eq!(cpu.gpr[reg::RSI], DATA.wrapping_add(step));
                assert_eq!(cpu.gpr[reg::RDI], (DATA + 0x100).wrapping_add(step));
                assert_eq!(cpu.gpr[reg::RCX], 77, "no REP: counter untouched");
            }
        }
    }

    /// Element-by-element model of REP MOVS over a copy of RAM.
    fn model_movs(
        ram: &mut [u8],
        mut s: u64,
        mut d: u64,
        count: u64,
        n: u64,
        df: bool,
    ) -> (u64, u64) {
        for _ in 0..count {
            let mut e = [0u8; 8];
            e[..n as usize].copy_from_slice(&ram[s as usize..(s + n) as usize]);
            ram[d as usize..(d + n) as usize].copy_from_slice(&e[..n as usize]);
            if df {
                s -= n;
                d -= n;
            } else {
                s += n;
                d += n;
            }
        }
        (s, d)
    }

    #[test]
    fn rep_movs_overlap_matches_element_model() {
        let deltas: [i64; 14] = [-9, -8, -3, -1, 0, 1, 2, 3, 7, 8, 9, 100, 4095, -4097];
        for (n, build) in [
            (1u64, movs_build(1)),
            (2, movs_build(2)),
            (4, movs_build(4)),
            (8, movs_build(8)),
        ] {
            for &delta in &deltas {
                for df in [false, true] {
                    for count in [1u64, 5, 700, 1500] {
                        let src = DATA + 0x3ff3;
                        let dst = (src as i64 + delta) as u64;
                        let (cpu, bus, r) = step(TestMode::Long64, build, |cpu, bus| {
                            for i in 0..0x8000u64 {
                                bus.ram[(DATA + i) as usize] = pattern(i);
                            }
                            cpu.gpr[reg::RSI] = src;
                            cpu.gpr[reg::RDI] = dst;
                            cpu.gpr[reg::RCX] = count;
                            if df {
                                cpu.rflags |= DF;
                            }
                        });
                        assert!(r.is_ok());
                        let mut model: Vec<u8> = (0..0x8000u64).map(pattern).collect();
                        let (ms, md) = model_movs(&mut model, src - DATA, dst - DATA, count, n, df);
                        let got = &bus.ram[DATA as usize..(DATA + 0x8000) as usize];
                        assert!(
                            got == &model[..],
                            "n {n} delta {delta} df {df} count {count}"
                        );
                        assert_eq!(cpu.gpr[reg::RSI], ms + DATA);
                        assert_eq!(cpu.gpr[reg::RDI], md + DATA);
                        assert_eq!(cpu.gpr[reg::RCX], 0);
                    }
                }
            }
        }
    }

    #[test]
    fn rep_stos_counts_sizes_and_direction() {
        for mode in [TestMode::Real, TestMode::Protected32, TestMode::Long64] {
            let sizes: &[u8] = if mode == TestMode::Long64 {
                &[1, 2, 4, 8]
            } else {
                &[1, 2, 4]
            };
            for &size in sizes {
                for count in [0u64, 1, 2, 5000] {
                    let (_, dst) = bases(mode);
                    let (cpu, bus, r) = step(mode, stos_build(size), |cpu, _| {
                        setup_regs(mode, cpu, count);
                        cpu.gpr[reg::RAX] = 0xa1b2_c3d4_e5f6_0718;
                    });
                    assert!(r.is_ok());
                    let bytes = count * size as u64;
                    for i in (0..bytes).step_by(size as usize) {
                        assert_eq!(
                            bus.read(dst + i, size as usize),
                            0xa1b2_c3d4_e5f6_0718 & crate::flags::mask(size),
                            "{mode:?} {size} {count} at {i}"
                        );
                    }
                    assert_eq!(bus.ram[(dst + bytes) as usize], 0);
                    assert_eq!(cpu.gpr[reg::RCX], 0);
                    let d0 = if mode == TestMode::Real { 0 } else { dst };
                    assert_eq!(cpu.gpr[reg::RDI], d0 + bytes);
                    assert_eq!(
                        cpu.gpr[reg::RSI],
                        if mode == TestMode::Real {
                            0
                        } else {
                            bases(mode).0
                        }
                    );
                }
            }
        }
        // DF = 1: backwards from the top.
        let (cpu, bus, _) = step(TestMode::Long64, stos_build(4), |cpu, _| {
            cpu.gpr[reg::RDI] = DATA + 0x2000;
            cpu.gpr[reg::RCX] = 0x500;
            cpu.gpr[reg::RAX] = 0x1234_5678;
            cpu.rflags |= DF;
        });
        assert_eq!(cpu.gpr[reg::RDI], DATA + 0x2000 - 0x1400);
        assert_eq!(bus.read(DATA + 0x2000, 4), 0x1234_5678);
        assert_eq!(bus.read(DATA + 0x2000 - 0x13fc, 4), 0x1234_5678);
        assert_eq!(bus.read(DATA + 0x2000 - 0x1400, 4), 0);
    }

    #[test]
    fn lods_forms() {
        let (cpu, _, _) = step(
            TestMode::Long64,
            |a| a.lodsw(),
            |cpu, bus| {
                cpu.gpr[reg::RAX] = 0xffff_ffff_ffff_ffff;
                cpu.gpr[reg::RSI] = DATA;
                bus.put(DATA, 8, 0x8877_6655_4433_2211);
            },
        );
        assert_eq!(cpu.gpr[reg::RAX], 0xffff_ffff_ffff_2211);
        assert_eq!(cpu.gpr[reg::RSI], DATA + 2);
        let (cpu, _, _) = step(
            TestMode::Long64,
            |a| a.lodsd(),
            |cpu, bus| {
                cpu.gpr[reg::RAX] = u64::MAX;
                cpu.gpr[reg::RSI] = DATA;
                bus.put(DATA, 8, 0x8877_6655_4433_2211);
            },
        );
        assert_eq!(cpu.gpr[reg::RAX], 0x4433_2211, "32-bit load zero-extends");
        // REP LODSB: AL holds the last element.
        let (cpu, _, _) = step(
            TestMode::Protected32,
            |a| a.rep().lodsb(),
            |cpu, bus| {
                cpu.gpr[reg::RSI] = DATA;
                cpu.gpr[reg::RCX] = 3;
                bus.write(DATA, &[1, 2, 3, 4]);
            },
        );
        assert_eq!(cpu.gpr[reg::RAX] & 0xff, 3);
        assert_eq!(cpu.gpr[reg::RSI], DATA + 3);
        assert_eq!(cpu.gpr[reg::RCX], 0);
        // Real mode LODSB with DF=1.
        let (cpu, _, _) = step(
            TestMode::Real,
            |a| a.lodsb(),
            |cpu, bus| {
                real_segments(cpu);
                cpu.gpr[reg::RSI] = 0x10;
                cpu.rflags |= DF;
                bus.write(0x2_0010, &[0x5a]);
            },
        );
        assert_eq!(cpu.gpr[reg::RAX] & 0xff, 0x5a);
        assert_eq!(cpu.gpr[reg::RSI], 0xf);
    }

    #[test]
    fn cmps_and_scas() {
        // REPE CMPSB stops at the first difference: 'a' - 'b'.
        let (cpu, _, r) = step(
            TestMode::Long64,
            |a| a.repe().cmpsb(),
            |cpu, bus| {
                bus.write(DATA, b"hello a");
                bus.write(DATA + 0x100, b"hello b");
                cpu.gpr[reg::RSI] = DATA;
                cpu.gpr[reg::RDI] = DATA + 0x100;
                cpu.gpr[reg::RCX] = 100;
            },
        );
        assert!(r.is_ok());
        assert_eq!(cpu.gpr[reg::RCX], 100 - 7);
        assert_eq!(cpu.gpr[reg::RSI], DATA + 7);
        assert_eq!(cpu.gpr[reg::RDI], DATA + 0x107);
        assert_eq!(cpu.rflags & STATUS, CF | SF | AF | PF);
        // Equal strings: runs out of count with ZF=1.
        let (cpu, _, _) = step(
            TestMode::Protected32,
            |a| a.repe().cmpsd(),
            |cpu, bus| {
                bus.write(DATA, &[1, 2, 3, 4, 5, 6, 7, 8]);
                bus.write(DATA + 0x100, &[1, 2, 3, 4, 5, 6, 7, 8]);
                cpu.gpr[reg::RSI] = DATA;
                cpu.gpr[reg::RDI] = DATA + 0x100;
                cpu.gpr[reg::RCX] = 2;
            },
        );
        assert_eq!(cpu.gpr[reg::RCX], 0);
        assert_eq!(cpu.rflags & STATUS, ZF | PF);
        // REPNE CMPSW stops at the first equal pair.
        let (cpu, _, _) = step(
            TestMode::Real,
            |a| a.repne().cmpsw(),
            |cpu, bus| {
                real_segments(cpu);
                bus.put(0x2_0000, 8, 0x0004_0003_0002_0001);
                bus.put(0x3_0000, 8, 0x0004_0009_0009_0009);
                cpu.gpr[reg::RCX] = 10;
            },
        );
        assert_eq!(cpu.gpr[reg::RCX], 6);
        assert_eq!(cpu.gpr[reg::RSI], 8);
        assert!(cpu.rflags & ZF != 0);
        // Count 0: flags unchanged.
        let (cpu, _, _) = step(
            TestMode::Long64,
            |a| a.repe().cmpsb(),
            |cpu, _| {
                cpu.rflags = FIXED | OF | CF;
                cpu.gpr[reg::RCX] = 0;
            },
        );
        assert_eq!(cpu.rflags, FIXED | OF | CF);
        // CMPSQ single, signed overflow: 0x8000.. - 1.
        let (cpu, _, _) = step(
            TestMode::Long64,
            |a| a.cmpsq(),
            |cpu, bus| {
                bus.put(DATA, 8, 0x8000_0000_0000_0000);
                bus.put(DATA + 8, 8, 1);
                cpu.gpr[reg::RSI] = DATA;
                cpu.gpr[reg::RDI] = DATA + 8;
            },
        );
        assert_eq!(cpu.rflags & STATUS, OF | AF | PF);
        assert_eq!(cpu.gpr[reg::RSI], DATA + 8);
        // REPNE SCASB as strlen.
        let (cpu, _, _) = step(
            TestMode::Long64,
            |a| a.repne().scasb(),
            |cpu, bus| {
                bus.write(DATA, b"sixteen chars!!!\0");
                cpu.gpr[reg::RDI] = DATA;
                cpu.gpr[reg::RCX] = u64::MAX;
                cpu.gpr[reg::RAX] = 0x1100; // AL = 0
            },
        );
        assert_eq!(!cpu.gpr[reg::RCX] - 1, 16);
        assert_eq!(cpu.gpr[reg::RDI], DATA + 17);
        assert!(cpu.rflags & ZF != 0);
        // REPE SCASD skips a run of equal dwords.
        let (cpu, _, _) = step(
            TestMode::Protected32,
            |a| a.repe().scasd(),
            |cpu, bus| {
                bus.put(DATA, 4, 7);
                bus.put(DATA + 4, 4, 7);
                bus.put(DATA + 8, 4, 8);
                cpu.gpr[reg::RDI] = DATA;
                cpu.gpr[reg::RCX] = 10;
                cpu.gpr[reg::RAX] = 7;
            },
        );
        assert_eq!(cpu.gpr[reg::RCX], 7);
        assert_eq!(cpu.gpr[reg::RDI], DATA + 12);
        assert_eq!(cpu.rflags & STATUS, CF | SF | AF | PF);
        // SCASW single.
        let (cpu, _, _) = step(
            TestMode::Long64,
            |a| a.scasw(),
            |cpu, bus| {
                bus.put(DATA, 2, 0x1234);
                cpu.gpr[reg::RDI] = DATA;
                cpu.gpr[reg::RAX] = 0xffff_1234;
            },
        );
        assert!(cpu.rflags & ZF != 0);
        assert_eq!(cpu.gpr[reg::RDI], DATA + 2);
    }

    #[test]
    fn address_size_16_in_32_bit_code() {
        // 67 F3 A4: REP MOVSB with CX/SI/DI; SI wraps at 64 KiB.
        let (cpu, bus, r) = step_bytes(TestMode::Protected32, &[0x67, 0xf3, 0xa4], |cpu, bus| {
            cpu.gpr[reg::RCX] = 0x1234_0003;
            cpu.gpr[reg::RSI] = 0xaaaa_fffe;
            cpu.gpr[reg::RDI] = 0xbbbb_0010;
            bus.write(0xfffe, &[1, 2]);
            bus.write(0, &[3]);
        });
        assert!(r.is_ok());
        assert_eq!(bus.read(0x10, 3), 0x03_02_01);
        assert_eq!(cpu.gpr[reg::RCX], 0x1234_0000);
        assert_eq!(cpu.gpr[reg::RSI], 0xaaaa_0001);
        assert_eq!(cpu.gpr[reg::RDI], 0xbbbb_0013);
        // Real mode: DI wraps within ES during REP STOSW.
        let (cpu, bus, _) = step(
            TestMode::Real,
            |a| a.rep().stosw(),
            |cpu, _| {
                real_segments(cpu);
                cpu.gpr[reg::RDI] = 0xfffe;
                cpu.gpr[reg::RCX] = 2;
                cpu.gpr[reg::RAX] = 0xbeef;
            },
        );
        assert_eq!(bus.read(0x3_fffe, 2), 0xbeef);
        assert_eq!(bus.read(0x3_0000, 2), 0xbeef);
        assert_eq!(cpu.gpr[reg::RDI], 2);
    }

    #[test]
    fn address_size_32_in_64_bit_code() {
        let (cpu, bus, r) = step_bytes(TestMode::Long64, &[0x67, 0xf3, 0xa4], |cpu, bus| {
            cpu.gpr[reg::RCX] = 0xffff_ffff_0000_0002;
            cpu.gpr[reg::RSI] = 0x1_0000_0000 | DATA;
            cpu.gpr[reg::RDI] = 0x2_0000_0000 | (DATA + 0x1000);
            bus.write(DATA, &[9, 8]);
        });
        assert!(r.is_ok());
        assert_eq!(bus.read(DATA + 0x1000, 2), 0x0809);
        assert_eq!(cpu.gpr[reg::RCX], 0);
        assert_eq!(cpu.gpr[reg::RSI], DATA + 2);
        assert_eq!(cpu.gpr[reg::RDI], DATA + 0x1002);
    }

    #[test]
    fn segment_overrides() {
        // FS override on the source in 64-bit mode.
        let (cpu, bus, _) = step_bytes(TestMode::Long64, &[0x64, 0xa4], |cpu, bus| {
            cpu.seg[SegReg::Fs as usize].base = 0x1000;
            cpu.gpr[reg::RSI] = DATA;
            cpu.gpr[reg::RDI] = DATA + 0x100;
            bus.write(DATA + 0x1000, &[0x77]);
        });
        assert_eq!(bus.ram[(DATA + 0x100) as usize], 0x77);
        assert_eq!(cpu.gpr[reg::RSI], DATA + 1);
        // Real mode: ES: LODSB reads ES; FS: STOSB still writes ES:DI.
        let (cpu, _, _) = step_bytes(TestMode::Real, &[0x26, 0xac], |cpu, bus| {
            real_segments(cpu);
            cpu.gpr[reg::RSI] = 4;
            bus.write(0x3_0004, &[0x42]);
        });
        assert_eq!(cpu.gpr[reg::RAX] & 0xff, 0x42);
        let (_, bus, _) = step_bytes(TestMode::Real, &[0x64, 0xaa], |cpu, _| {
            real_segments(cpu);
            cpu.seg[SegReg::Fs as usize] = Segment::real(0x4000, attr::DATA_RW);
            cpu.gpr[reg::RDI] = 4;
            cpu.gpr[reg::RAX] = 0x99;
        });
        assert_eq!(bus.ram[0x3_0004], 0x99);
        assert_eq!(bus.ram[0x4_0004], 0);
        // CS: REP MOVSW copies from the code segment.
        let (_, bus, _) = step_bytes(TestMode::Real, &[0x2e, 0xf3, 0xa5], |cpu, _| {
            real_segments(cpu);
            cpu.gpr[reg::RCX] = 1;
        });
        assert_eq!(bus.read(0x3_0000, 2), 0xf32e);
    }

    /// Long-mode setup whose page tables leave 0xA0_0000.. (PD entry 5) unmapped.
    fn unmap_second_data_page(bus: &mut TestBus) {
        bus.put(0x22000 + 5 * 8, 8, 0);
    }

    #[test]
    fn fault_mid_rep_movs_keeps_completed_iterations() {
        let (cpu, bus, r) = step(TestMode::Long64, movs_build(1), |cpu, bus| {
            unmap_second_data_page(bus);
            for i in 0..0x200u64 {
                bus.ram[(DATA + i) as usize] = pattern(i);
            }
            cpu.gpr[reg::RSI] = DATA;
            cpu.gpr[reg::RDI] = 0xa0_0000 - 0x100;
            cpu.gpr[reg::RCX] = 0x200;
        });
        assert_eq!(vec_of(&r), Some((vector::PF, Some(0b10))));
        assert_eq!(cpu.cr2, 0xa0_0000);
        assert_eq!(cpu.gpr[reg::RCX], 0x100);
        assert_eq!(cpu.gpr[reg::RSI], DATA + 0x100);
        assert_eq!(cpu.gpr[reg::RDI], 0xa0_0000);
        for i in 0..0x100u64 {
            assert_eq!(bus.ram[(0xa0_0000 - 0x100 + i) as usize], pattern(i));
        }
        // Source side faulting, backwards.
        let (cpu, _, r) = step(TestMode::Long64, movs_build(4), |cpu, bus| {
            bus.put(0x22000 + 3 * 8, 8, 0); // unmap 0x60_0000..0x7f_ffff
            cpu.gpr[reg::RSI] = DATA + 8;
            cpu.gpr[reg::RDI] = DATA + 0x1000;
            cpu.gpr[reg::RCX] = 10;
            cpu.rflags |= DF;
        });
        assert_eq!(vec_of(&r), Some((vector::PF, Some(0))));
        assert_eq!(cpu.cr2, DATA - 4);
        assert_eq!(cpu.gpr[reg::RCX], 7);
        assert_eq!(cpu.gpr[reg::RSI], DATA - 4);
        assert_eq!(cpu.gpr[reg::RDI], DATA + 0x1000 - 12);
    }

    #[test]
    fn fault_mid_rep_stos_straddling_element() {
        let (cpu, bus, r) = step(TestMode::Long64, stos_build(8), |cpu, bus| {
            unmap_second_data_page(bus);
            cpu.gpr[reg::RDI] = 0xa0_0000 - 0x14;
            cpu.gpr[reg::RCX] = 10;
            cpu.gpr[reg::RAX] = u64::MAX;
        });
        assert_eq!(vec_of(&r), Some((vector::PF, Some(0b10))));
        assert_eq!(cpu.cr2, 0xa0_0000);
        assert_eq!(cpu.gpr[reg::RCX], 8);
        assert_eq!(cpu.gpr[reg::RDI], 0xa0_0000 - 4);
        assert_eq!(bus.read(0xa0_0000 - 0x14, 8), u64::MAX);
        assert_eq!(bus.read(0xa0_0000 - 0xc, 8), u64::MAX);
        assert_eq!(
            bus.read(0xa0_0000 - 4, 4),
            0,
            "the straddling element wrote nothing"
        );
    }

    #[test]
    fn fault_mid_rep_through_run_loop() {
        // mov rdi, ..; mov rcx, ..; rep stosb; hlt — the run stops right after
        // the #PF is raised (instruction 3 + its delivery = 4 units).
        let code = crate::testutil::assemble(TestMode::Long64, |a| {
            a.mov(rdi, 0xa0_0000u64 - 0x30)?;
            a.mov(rcx, 0x100u64)?;
            a.rep().stosb()?;
            a.hlt()
        });
        let (cpu, _, _) = run(TestMode::Long64, &code, 4, |_, bus| {
            unmap_second_data_page(bus)
        });
        assert_eq!(cpu.cr2, 0xa0_0000);
        assert_eq!(cpu.gpr[reg::RCX], 0x100 - 0x30);
        assert_eq!(cpu.gpr[reg::RDI], 0xa0_0000);
    }

    #[test]
    fn rep_counts_as_one_instruction() {
        let code = crate::testutil::assemble(TestMode::Long64, |a| {
            a.mov(rsi, DATA)?;
            a.mov(rdi, DATA + 0x4000)?;
            a.mov(rcx, 10_000u64)?;
            a.rep().movsb()?;
            a.hlt()
        });
        let (cpu, bus, exit) = run(TestMode::Long64, &code, 1000, |_, bus| {
            for i in 0..10_000u64 {
                bus.ram[(DATA + i) as usize] = pattern(i);
            }
        });
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.icount, 5);
        assert_eq!(bus.ram[(DATA + 0x4000 + 9999) as usize], pattern(9999));
    }

    #[test]
    fn rep_from_index_zero_at_64_bit_address_size() {
        // Found by fuzzing: the fast paths' room-before-wrap computation
        // overflowed (a debug-build panic) for RSI or RDI = 0 with 64-bit
        // addressing, where 2^64 elements fit.
        for (src, dst) in [(0, DATA), (DATA, 0)] {
            let (cpu, bus, r) = step(TestMode::Long64, movs_build(1), |cpu, bus| {
                bus.write(0, &[0xaa; 16]);
                bus.write(DATA, &[0x55; 16]);
                cpu.gpr[reg::RSI] = src;
                cpu.gpr[reg::RDI] = dst;
                cpu.gpr[reg::RCX] = 16;
            });
            assert!(r.is_ok());
            assert_eq!(cpu.gpr[reg::RCX], 0);
            assert_eq!((cpu.gpr[reg::RSI], cpu.gpr[reg::RDI]), (src + 16, dst + 16));
            assert_eq!(bus.ram[dst as usize + 15], bus.ram[src as usize]);
        }
        let (cpu, bus, r) = step(TestMode::Long64, stos_build(8), |cpu, _| {
            cpu.gpr[reg::RDI] = 0;
            cpu.gpr[reg::RCX] = 2;
            cpu.gpr[reg::RAX] = 0x1122_3344_5566_7788;
        });
        assert!(r.is_ok());
        assert_eq!(cpu.gpr[reg::RDI], 16);
        assert_eq!(bus.read(8, 8), 0x1122_3344_5566_7788);
    }

    #[test]
    fn huge_rep_counts_run_in_suspendable_chunks() {
        // Found by fuzzing: REP OUTSB with ECX = 0xffff_ffff over a flat
        // segment never faults, and ran 2^32 port writes in one instruction
        // (the test bus logged MMIO reads until memory ran out).
        let code = [0xf3, 0x6e, 0xf4]; // rep outsb; hlt
        let (cpu, bus, exit) = run(TestMode::Protected32, &code, 3, |cpu, _| {
            cpu.gpr[reg::RSI] = RAM as u64 - 0x100;
            cpu.gpr[reg::RCX] = 0xffff_ffff;
            cpu.gpr[reg::RDX] = 0x80;
        });
        assert_eq!(exit, RunExit::Limit);
        assert_eq!(cpu.icount, 3);
        assert_eq!(cpu.rip, crate::testutil::CODE, "suspended on the REP");
        assert_eq!(cpu.gpr[reg::RCX], 0xffff_ffff - 3 * super::REP_CHUNK);
        assert_eq!(cpu.gpr[reg::RSI], RAM as u64 - 0x100 + 3 * super::REP_CHUNK);
        assert_eq!(bus.port_out.len() as u64, 3 * super::REP_CHUNK);

        // A long REP STOSB (fast path) in chunks, then the HLT.
        let n = 2 * super::REP_CHUNK + 5;
        let code = crate::testutil::assemble(TestMode::Long64, |a| {
            a.mov(rdi, DATA)?;
            a.mov(rcx, n)?;
            a.mov(al, 0x5au32)?;
            a.rep().stosb()?;
            a.hlt()
        });
        let (cpu, bus, exit) = run(TestMode::Long64, &code, 100, |_, _| {});
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RCX], 0);
        assert_eq!(cpu.gpr[reg::RDI], DATA + n);
        assert!((6..=7).contains(&cpu.icount), "icount {}", cpu.icount);
        assert_eq!(bus.ram[(DATA + n - 1) as usize], 0x5a);
        assert_eq!(bus.ram[(DATA + n) as usize], 0);
    }

    #[test]
    fn rep_with_mmio_source_and_destination() {
        // Beyond the 16 MiB of test RAM is unbacked (reads all ones, writes ignored).
        let (cpu, bus, r) = step(TestMode::Long64, movs_build(8), |cpu, _| {
            cpu.gpr[reg::RSI] = RAM as u64 + 0x1000;
            cpu.gpr[reg::RDI] = DATA;
            cpu.gpr[reg::RCX] = 600;
        });
        assert!(r.is_ok());
        assert_eq!(bus.read(DATA, 8), u64::MAX);
        assert_eq!(bus.read(DATA + 599 * 8, 8), u64::MAX);
        assert_eq!(bus.read(DATA + 600 * 8, 8), 0);
        assert!(cpu.exit_request);
        let (cpu, _, r) = step(TestMode::Long64, stos_build(1), |cpu, _| {
            cpu.gpr[reg::RDI] = RAM as u64 - 0x10;
            cpu.gpr[reg::RCX] = 0x20;
            cpu.gpr[reg::RAX] = 0x33;
        });
        assert!(r.is_ok());
        assert_eq!(cpu.gpr[reg::RDI], RAM as u64 + 0x10);
    }

    #[test]
    fn segment_limit_fault_mid_rep_protected() {
        // ES limit 0x80_0fff: REP STOSD from 0x80_0ff0 faults at the 5th dword.
        let (cpu, bus, r) = step(TestMode::Protected32, stos_build(4), |cpu, _| {
            cpu.seg[SegReg::Es as usize].limit = 0x80_0fff;
            cpu.gpr[reg::RDI] = 0x80_0ff0;
            cpu.gpr[reg::RCX] = 8;
            cpu.gpr[reg::RAX] = 0x0102_0304;
        });
        assert_eq!(vec_of(&r), Some((vector::GP, Some(0))));
        assert_eq!(cpu.gpr[reg::RCX], 4);
        assert_eq!(cpu.gpr[reg::RDI], 0x80_1000);
        assert_eq!(bus.read(0x80_0ffc, 4), 0x0102_0304);
        assert_eq!(bus.read(0x80_1000, 4), 0);
    }

    #[test]
    fn ins_and_outs() {
        let (cpu, bus, r) = step(
            TestMode::Long64,
            |a| a.rep().outsb(),
            |cpu, bus| {
                bus.write(DATA, b"abc");
                cpu.gpr[reg::RSI] = DATA;
                cpu.gpr[reg::RCX] = 3;
                cpu.gpr[reg::RDX] = 0x3f8;
            },
        );
        assert!(r.is_ok());
        assert_eq!(
            bus.port_out,
            vec![
                (0x3f8, 1, b'a' as u32),
                (0x3f8, 1, b'b' as u32),
                (0x3f8, 1, b'c' as u32)
            ]
        );
        assert_eq!(cpu.gpr[reg::RSI], DATA + 3);
        assert_eq!(cpu.gpr[reg::RCX], 0);
        assert!(cpu.exit_request && cpu.end_block);
        // OUTSD single in protected mode.
        let (cpu, bus, _) = step(
            TestMode::Protected32,
            |a| a.outsd(),
            |cpu, bus| {
                bus.put(DATA, 4, 0xdead_beef);
                cpu.gpr[reg::RSI] = DATA;
                cpu.gpr[reg::RDX] = 0x1_0cf8; // only DX counts
            },
        );
        assert_eq!(bus.port_out, vec![(0xcf8, 4, 0xdead_beef)]);
        assert_eq!(cpu.gpr[reg::RSI], DATA + 4);
        // REP INSW in real mode.
        let (cpu, bus, _) = step(
            TestMode::Real,
            |a| a.rep().insw(),
            |cpu, bus| {
                real_segments(cpu);
                bus.port_in.insert(0x1f0, 0xabcd);
                cpu.gpr[reg::RDX] = 0x1f0;
                cpu.gpr[reg::RCX] = 2;
            },
        );
        assert_eq!(bus.read(0x3_0000, 4), 0xabcd_abcd);
        assert_eq!(cpu.gpr[reg::RDI], 4);
        assert_eq!(cpu.gpr[reg::RCX], 0);
        // INSB with DF=1.
        let (cpu, bus, _) = step(
            TestMode::Long64,
            |a| a.insb(),
            |cpu, bus| {
                bus.port_in.insert(0x60, 0x1c);
                cpu.gpr[reg::RDX] = 0x60;
                cpu.gpr[reg::RDI] = DATA;
                cpu.rflags |= DF;
            },
        );
        assert_eq!(bus.ram[DATA as usize], 0x1c);
        assert_eq!(cpu.gpr[reg::RDI], DATA - 1);
        // INS to an unwritable destination faults before the port is read.
        let (cpu, _, r) = step(
            TestMode::Long64,
            |a| a.insd(),
            |cpu, _| {
                cpu.gpr[reg::RDI] = 0x8000_0000_0000_0000;
            },
        );
        assert_eq!(vec_of(&r), Some((vector::GP, Some(0))));
        assert_eq!(cpu.gpr[reg::RDI], 0x8000_0000_0000_0000);
        assert!(!cpu.exit_request);
    }

    #[test]
    fn io_permission_at_cpl3() {
        // CPL 3 > IOPL 0 and the TSS bitmap base beyond the limit: #GP(0),
        // nothing written, even with a zero count.
        for count in [0u64, 2] {
            let (cpu, bus, r) = step(
                TestMode::Protected32,
                |a| a.rep().outsb(),
                |cpu, bus| {
                    user32(cpu);
                    bus.put(0x3066, 2, 0x68);
                    cpu.gpr[reg::RSI] = DATA;
                    cpu.gpr[reg::RCX] = count;
                    cpu.gpr[reg::RDX] = 0x3f8;
                },
            );
            assert_eq!(vec_of(&r), Some((vector::GP, Some(0))));
            assert!(bus.port_out.is_empty());
            assert_eq!(cpu.gpr[reg::RCX], count);
            assert_eq!(cpu.gpr[reg::RSI], DATA);
        }
        // A bitmap that allows the port (clear bits), then one that denies it.
        for deny in [false, true] {
            let (cpu, bus, r) = step(
                TestMode::Protected32,
                |a| a.rep().outsb(),
                |cpu, bus| {
                    user32(cpu);
                    cpu.tr.limit = 0xff;
                    bus.put(0x3066, 2, 0x68);
                    if deny {
                        bus.put(0x3000 + 0x68 + (0x3f8 >> 3), 1, 1);
                    }
                    cpu.gpr[reg::RSI] = DATA;
                    cpu.gpr[reg::RCX] = 2;
                    cpu.gpr[reg::RDX] = 0x3f8;
                },
            );
            if deny {
                assert_eq!(vec_of(&r), Some((vector::GP, Some(0))));
                assert!(bus.port_out.is_empty());
                assert_eq!(cpu.gpr[reg::RCX], 2);
            } else {
                assert!(r.is_ok());
                assert_eq!(bus.port_out.len(), 2);
                assert_eq!(cpu.gpr[reg::RCX], 0);
            }
        }
        // IOPL 3 allows it without consulting the bitmap.
        let (_, bus, r) = step(
            TestMode::Protected32,
            |a| a.outsb(),
            |cpu, bus| {
                user32(cpu);
                bus.put(0x3066, 2, 0x68);
                cpu.rflags |= IOPL;
                cpu.gpr[reg::RSI] = DATA;
            },
        );
        assert!(r.is_ok());
        assert_eq!(bus.port_out.len(), 1);
    }

    #[test]
    fn user_mode_rep_movs_in_long_mode() {
        // CPL 3 uses the user TLB arrays; the identity map is user-accessible.
        let (cpu, bus, r) = step(TestMode::Long64, movs_build(8), |cpu, bus| {
            cpu.cpl = 3;
            bus.put(DATA, 8, 0x55);
            cpu.gpr[reg::RSI] = DATA;
            cpu.gpr[reg::RDI] = DATA + 0x3000;
            cpu.gpr[reg::RCX] = 1000;
        });
        assert!(r.is_ok());
        assert_eq!(bus.read(DATA + 0x3000, 8), 0x55);
        assert_eq!(cpu.gpr[reg::RCX], 0);
    }
}
