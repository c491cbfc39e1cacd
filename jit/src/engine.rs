//! The engine: [`Jit::run`] has the contract of the interpreter's
//! [`Ctx::run`] (stop exactly at `limit`, on HLT, on an exit request or a
//! stop) and runs hot blocks as native code.

use std::cell::UnsafeCell;

use hindsight_cpu::block::Op;
use hindsight_cpu::tlb::{Access, Tlb, TLB_ENTRIES, TLB_ENTRY_SIZE};
use hindsight_cpu::{BlockRef, Ctx, RunExit};

use crate::chain::{Cell, CELLS};
use crate::codebuf::CodeBuf;
use crate::helpers::ExitSlot;
use crate::translate::translate;

/// Executions in the interpreter before a block is translated.
pub const DEFAULT_THRESHOLD: u32 = 16;
/// Bytes of executable memory for translations (flushed whole when full).
const CODE_BYTES: usize = 64 << 20;

/// A translated block's entry: `(ctx, cpu, slot) -> 0`.
type Entry = unsafe extern "sysv64" fn(*mut Ctx<'_>, *mut hindsight_cpu::Cpu, *mut ExitSlot) -> u64;

/// What the engine knows about one decoded block (by code-cache slot).
#[derive(Clone, Copy, Default)]
pub(crate) struct Native {
    /// Serial of the block this describes (another serial: a new block).
    pub(crate) serial: u32,
    /// Executions so far (counts up to the threshold).
    runs: u32,
    /// Address of its code, 0 if not translated (or refused).
    entry: usize,
    /// Address of its body (where chained exits enter).
    pub(crate) body: usize,
    /// Code-buffer epoch the entry belongs to.
    pub(crate) epoch: u32,
    /// Instructions in the translation: the block's, plus its tail's when
    /// it has one.
    pub(crate) len: u32,
    /// The ops of the block translated after this one as its hammock
    /// (see [`crate::hammock`]), if any.
    tail: Option<*const [Op]>,
    /// Link key (generation and CPL, see `Jit::link_key`) under which the
    /// block lookup last found this block valid (indirect exits enter only
    /// blocks checked under the current one).
    pub(crate) checked: u64,
}

/// Counters for reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitStats {
    /// Blocks translated.
    pub translated: u64,
    /// Instructions in them, and how many of those were inlined.
    pub insns: u64,
    /// Instructions inlined (the rest call their handler).
    pub inlined: u64,
    /// Native block executions.
    pub native_runs: u64,
    /// Blocks run by the interpreter instead.
    pub interp_runs: u64,
    /// Whole-buffer flushes.
    pub flushes: u64,
    /// Blocks entered from another block's code (chained, no dispatch).
    pub chained: u64,
    /// Links made between blocks.
    pub links: u64,
    /// Blocks translated with their hammock tail (a Jcc over one register
    /// instruction, done without a branch: see `hammock`).
    pub hammocks: u64,
}

/// The translator and its code buffer, shared by the vCPUs of a machine
/// (like the [`hindsight_cpu::CodeCache`] it is attached to).
pub struct Jit {
    buf: Option<CodeBuf>,
    /// By code-cache slot.
    blocks: Vec<Native>,
    /// Bumped by every flush: entries of older epochs are dead.
    epoch: u32,
    threshold: u32,
    slot: ExitSlot,
    stats: JitStats,
    /// Why no code buffer could be mapped (the engine then interprets).
    error: Option<String>,
    /// Link cells of the translations in the buffer (freed with them).
    /// Boxed: generated code holds their addresses, which must not move
    /// when the vector grows.
    #[allow(clippy::vec_box)]
    cells: Vec<Box<UnsafeCell<[Cell; CELLS]>>>,
    /// Link generation: links of older generations are dead. Bumped
    /// whenever what the block lookup finds may have changed (see
    /// [`crate::chain`]).
    link_gen: u64,
    /// What `link_gen` was last checked against (see [`Seen`]).
    seen: Seen,
}

/// What block links depend on, as the engine's loop last saw it: the
/// vCPU and code cache (by address), the code cache's invalidation count,
/// and the flush epoch. Any difference bumps the link generation. (TLB
/// changes do not: a link to another page checks the target's execute
/// entry in native code, see [`crate::chain`].)
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Seen {
    cpu: usize,
    code: usize,
    invalidations: u64,
    epoch: u32,
}

impl Default for Jit {
    fn default() -> Self {
        Jit::new()
    }
}

impl Jit {
    /// An engine that translates a block after [`DEFAULT_THRESHOLD`] runs.
    pub fn new() -> Jit {
        Jit::with_threshold(DEFAULT_THRESHOLD)
    }

    /// An engine that translates a block once it ran `threshold` times in
    /// the interpreter (0: on first sight).
    pub fn with_threshold(threshold: u32) -> Jit {
        let (buf, error) = match CodeBuf::new(CODE_BYTES) {
            Ok(b) => (Some(b), None),
            Err(e) => (None, Some(format!("cannot map executable memory: {e}"))),
        };
        Jit {
            buf,
            blocks: Vec::new(),
            epoch: 0,
            threshold,
            slot: ExitSlot::default(),
            stats: JitStats::default(),
            error,
            cells: Vec::new(),
            link_gen: 1,
            seen: Seen::default(),
        }
    }

    /// Counters since the engine was made.
    pub fn stats(&self) -> JitStats {
        JitStats {
            chained: self.slot.chains,
            ..self.stats
        }
    }

    /// Why the engine cannot translate (it then only interprets), if so.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Drops every translation (they are made again when hot).
    pub fn flush(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        self.blocks.clear();
        if let Some(b) = &mut self.buf {
            b.reset();
        }
        // No code runs now, and none of the old code will again.
        self.cells.clear();
        self.link_gen += 1;
        self.stats.flushes += 1;
    }

    /// Runs until `ctx.cpu.icount == limit`, HLT, an exit request or a
    /// stop: [`Ctx::run`]'s contract, with hot blocks run natively.
    pub fn run(&mut self, ctx: &mut Ctx, limit: u64) -> RunExit {
        ctx.cpu.exit_request = false;
        // Debugger breakpoints: a generation no link has (no chaining).
        let chaining = ctx.cpu.debug.breakpoints().is_none();
        self.slot.limit = limit;
        // An exit that asked to be linked, with the flush epoch it was in.
        let mut link: Option<(usize, u32)> = None;
        loop {
            if ctx.cpu.halted {
                return RunExit::Halted;
            }
            if ctx.cpu.icount >= limit {
                return RunExit::Limit;
            }
            ctx.code.collect();
            ctx.sync_code_gen();
            // The pending link is for the block found now, if any.
            let pending = link.take();
            let b = match ctx.find_block() {
                Ok(b) => b,
                Err(f) => {
                    if let Err(stop) = ctx.raise(f) {
                        return RunExit::Stop(stop);
                    }
                    if ctx.cpu.exit_request {
                        ctx.cpu.exit_request = false;
                        return RunExit::Exit;
                    }
                    continue;
                }
            };
            self.look(ctx);
            // SAFETY: blocks are freed only by `CodeCache::collect`, which is
            // not called while this block runs (invalidation just marks it);
            // a block's ops live in their own heap allocation.
            let ops = unsafe { &*b.ops };
            ctx.cpu.end_block = false;
            let fits = ops.len() as u64 <= limit - ctx.cpu.icount;
            let native = if fits && !ctx.needs_debug_path(ops) {
                self.entry_for(ctx, &b, ops)
            } else {
                None
            };
            // A hammock tail must fit the budget too, and need no debug
            // path either.
            let native = native.filter(|n| {
                u64::from(n.len) <= limit - ctx.cpu.icount
                    // SAFETY: a tail lives as long as its block (see
                    // `hammock`), which the lookup just found valid.
                    && n.tail.is_none_or(|t| !ctx.needs_debug_path(unsafe { &*t }))
            });
            match native {
                Some(native) => {
                    if let Some((cell, epoch)) = pending {
                        if epoch == self.epoch && chaining {
                            self.link(ctx, cell, &b, native.len);
                        }
                    }
                    let entry = native.entry;
                    let key = self.link_key(ctx);
                    self.slot.gen = if chaining { key } else { u64::MAX };
                    if ctx.code.get(b.id).is_some_and(|blk| blk.page2.is_none()) {
                        if let Some(n) = self.blocks.get_mut(b.id as usize) {
                            n.checked = key;
                        }
                    }
                    self.slot.natives = self.blocks.as_ptr() as usize;
                    self.slot.natives_len = self.blocks.len() as u64;
                    self.slot.epoch = u64::from(self.epoch);
                    self.stats.native_runs += 1;
                    let slot: *mut ExitSlot = &mut self.slot;
                    let cpu: *mut hindsight_cpu::Cpu = &mut *ctx.cpu;
                    // SAFETY: `entry` was translated from this very block
                    // (same slot and serial, not invalidated since: the
                    // lookup checked), whose ops stay allocated while it
                    // runs; it follows the sysv64 ABI and only reaches
                    // `ctx`, `cpu` (the same vCPU `ctx.cpu` borrows; the
                    // helpers access it only through `ctx` while generated
                    // code is suspended in the call) and `slot`.
                    unsafe {
                        let f: Entry = std::mem::transmute::<usize, Entry>(entry);
                        f(ctx as *mut Ctx<'_>, cpu, slot);
                    }
                    if let Some(p) = self.slot.panic.take() {
                        std::panic::resume_unwind(p);
                    }
                    let cell = std::mem::take(&mut self.slot.link);
                    if cell != 0 {
                        link = Some((cell, self.epoch));
                    }
                    if let Some(stop) = self.slot.stop.take() {
                        return RunExit::Stop(stop);
                    }
                }
                None => {
                    self.stats.interp_runs += 1;
                    if let Err(stop) = ctx.run_block(ops, b.ip_mask, limit) {
                        return RunExit::Stop(stop);
                    }
                }
            }
            ctx.cpu.end_block = false;
            if ctx.cpu.exit_request {
                ctx.cpu.exit_request = false;
                return RunExit::Exit;
            }
        }
    }

    /// Bumps the link generation if anything links depend on changed
    /// since the last look (see [`crate::chain`]).
    #[inline]
    fn look(&mut self, ctx: &Ctx) {
        let now = Seen {
            cpu: &*ctx.cpu as *const hindsight_cpu::Cpu as usize,
            code: &*ctx.code as *const hindsight_cpu::CodeCache as usize,
            invalidations: ctx.code.invalidations,
            epoch: self.epoch,
        };
        if now != self.seen {
            self.seen = now;
            self.link_gen += 1;
        }
    }

    /// The link generation with the CPL in its low two bits: what a link
    /// made now holds and what chained exits compare in one go (the CPL
    /// cannot change within a chain: see [`crate::chain`]).
    #[inline]
    fn link_key(&self, ctx: &Ctx) -> u64 {
        (self.link_gen << 2) | u64::from(ctx.cpu.cpl & 3)
    }

    /// Makes the exit whose cell is at `cell` (just taken, RIP at block
    /// `b`'s start) continue into `b`'s code from now on, while what the
    /// cell records still holds (see [`crate::chain`]).
    fn link(&mut self, ctx: &Ctx, cell: usize, b: &BlockRef, len: u32) {
        let page2 = ctx.code.get(b.id).is_some_and(|blk| blk.page2.is_some());
        let body = self.blocks.get(b.id as usize).map_or(0, |n| n.body);
        if ctx.cpu.bitness != 64 || page2 || body == 0 {
            return;
        }
        let cell = cell as *mut Cell;
        // SAFETY: `cell` is the address of a cell in `self.cells` of the
        // current flush epoch (checked by the caller), so it is live; no
        // generated code runs now, so nothing else accesses it.
        let same_page = unsafe { (*cell).same_page };
        let user = ctx.cpu.cpl == 3;
        let rip = ctx.cpu.rip;
        // The lookup that found `b` just now used this execute entry.
        let Some(gpa) = ctx.cpu.tlb.lookup_gpa(Access::Exec, user, rip) else {
            return;
        };
        let c = Cell {
            key: self.link_key(ctx),
            body: body as u64,
            len: u64::from(len),
            same_page,
            tlb_off: ((Tlb::set_index(Access::Exec, user) * TLB_ENTRIES + Tlb::slot(rip))
                * TLB_ENTRY_SIZE) as u64,
            gpa,
            rip,
        };
        // SAFETY: as above.
        unsafe { cell.write(c) };
        self.stats.links += 1;
    }

    /// The translation of block `b` (whose ops are `ops`), made when it has
    /// become hot; `None` while it is cold or cannot be translated.
    #[inline]
    fn entry_for(&mut self, ctx: &Ctx, b: &BlockRef, ops: &[Op]) -> Option<Native> {
        let i = b.id as usize;
        if i >= self.blocks.len() {
            self.blocks.resize(i + 1, Native::default());
        }
        let n = &mut self.blocks[i];
        if n.serial != b.serial || n.epoch != self.epoch {
            *n = Native {
                serial: b.serial,
                epoch: self.epoch,
                ..Native::default()
            };
        }
        if n.entry != 0 {
            return Some(*n);
        }
        if n.runs < self.threshold {
            n.runs += 1;
            return None;
        }
        if n.runs == u32::MAX {
            return None; // translation refused earlier
        }
        let tail = hammock_tail(ctx, b, ops);
        // SAFETY: the tail's block is valid now (see `hammock_tail`).
        let tail_ops = tail.map_or(&[][..], |t| unsafe { &*t });
        let mut code = self.translate(ops, tail_ops, b.ip_mask).map(|c| (c, tail));
        if code.is_none() && tail.is_some() {
            code = self.translate(ops, &[], b.ip_mask).map(|c| (c, None));
        }
        // A flush while translating emptied the table.
        if i >= self.blocks.len() {
            self.blocks.resize(i + 1, Native::default());
        }
        let ((entry, body), tail) = code.unwrap_or(((0, 0), None));
        let n = Native {
            serial: b.serial,
            runs: if entry != 0 { 0 } else { u32::MAX },
            entry,
            body,
            epoch: self.epoch,
            len: (ops.len() + tail.map_or(0, |t| t.len())) as u32,
            tail,
            checked: 0,
        };
        self.blocks[i] = n;
        (entry != 0).then_some(n)
    }

    /// Translates a block (with its hammock tail, if not empty) into the
    /// code buffer (flushing it when full); returns the addresses of its
    /// entry and body.
    #[cold]
    fn translate(&mut self, ops: &[Op], tail: &[Op], ip_mask: u64) -> Option<(usize, usize)> {
        // The code is position-independent (jumps are relative, helper,
        // op and cell addresses are immediates), so it is assembled once
        // and copied where it fits.
        let cells = Box::new(UnsafeCell::new([Cell::default(); CELLS]));
        let t = translate(ops, tail, ip_mask, 0, cells.get() as usize)?;
        if self.buf.as_mut()?.reserve(t.code.len()).is_none() {
            // Full: drop everything and start again (no native code is
            // running now).
            self.flush();
            self.buf.as_mut()?.reserve(t.code.len())?;
        }
        let addr = self.buf.as_mut()?.push(&t.code)?;
        // Kept (at the same address) for as long as the code may run.
        self.cells.push(cells);
        self.stats.translated += 1;
        self.stats.hammocks += u64::from(!tail.is_empty());
        self.stats.insns += (ops.len() + tail.len()) as u64;
        self.stats.inlined += t.inlined as u64;
        Some((addr, addr + t.body))
    }

    /// Bytes of code in the buffer.
    pub fn code_bytes(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.used())
    }
}

/// The ops of the block after `b` (whose ops are `ops`) when it is the
/// tail of a hammock ending `b` (see [`crate::hammock`]): already decoded,
/// on the same physical page, neither block straddling into another.
fn hammock_tail(ctx: &Ctx, b: &BlockRef, ops: &[Op]) -> Option<*const [Op]> {
    let last = ops.last()?;
    let blk = ctx.code.get(b.id)?;
    if blk.bitness != 64 || blk.page2.is_some() {
        return None;
    }
    let next = last.insn.next_ip();
    if next & !0xfff != blk.lin & !0xfff {
        return None;
    }
    let gpa = (blk.gpa & !0xfff) | (next & 0xfff);
    let t = ctx.code.get(ctx.code.find(gpa, next, next, 64)?)?;
    (t.page2.is_none() && crate::hammock::fits(last, &t.ops)).then_some(&*t.ops as *const [Op])
}
