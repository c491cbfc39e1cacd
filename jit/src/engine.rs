//! The engine: [`Jit::run`] has the contract of the interpreter's
//! [`Ctx::run`] (stop exactly at `limit`, on HLT, on an exit request or a
//! stop) and runs hot blocks as native code.

use hindsight_cpu::{Ctx, RunExit};

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
struct Native {
    /// Serial of the block this describes (another serial: a new block).
    serial: u32,
    /// Executions so far (counts up to the threshold).
    runs: u32,
    /// Address of its code, 0 if not translated (or refused).
    entry: usize,
    /// Code-buffer epoch the entry belongs to.
    epoch: u32,
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
        }
    }

    /// Counters since the engine was made.
    pub fn stats(&self) -> JitStats {
        self.stats
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
        self.stats.flushes += 1;
    }

    /// Runs until `ctx.cpu.icount == limit`, HLT, an exit request or a
    /// stop: [`Ctx::run`]'s contract, with hot blocks run natively.
    pub fn run(&mut self, ctx: &mut Ctx, limit: u64) -> RunExit {
        ctx.cpu.exit_request = false;
        loop {
            if ctx.cpu.halted {
                return RunExit::Halted;
            }
            if ctx.cpu.icount >= limit {
                return RunExit::Limit;
            }
            ctx.code.collect();
            ctx.sync_code_gen();
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
            // SAFETY: blocks are freed only by `CodeCache::collect`, which is
            // not called while this block runs (invalidation just marks it);
            // a block's ops live in their own heap allocation.
            let ops = unsafe { &*b.ops };
            ctx.cpu.end_block = false;
            let fits = ops.len() as u64 <= limit - ctx.cpu.icount;
            let entry = if fits && !ctx.needs_debug_path(ops) {
                self.entry_for(b.id, b.serial, ops, b.ip_mask)
            } else {
                None
            };
            match entry {
                Some(entry) => {
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

    /// The native code of block (`id`, `serial`), translating it when it
    /// has become hot; `None` while it is cold or cannot be translated.
    #[inline]
    fn entry_for(
        &mut self,
        id: u32,
        serial: u32,
        ops: &[hindsight_cpu::block::Op],
        ip_mask: u64,
    ) -> Option<usize> {
        let i = id as usize;
        if i >= self.blocks.len() {
            self.blocks.resize(i + 1, Native::default());
        }
        let n = &mut self.blocks[i];
        if n.serial != serial || n.epoch != self.epoch {
            *n = Native {
                serial,
                runs: 0,
                entry: 0,
                epoch: self.epoch,
            };
        }
        if n.entry != 0 {
            return Some(n.entry);
        }
        if n.runs < self.threshold {
            n.runs += 1;
            return None;
        }
        if n.runs == u32::MAX {
            return None; // translation refused earlier
        }
        let entry = self.translate(ops, ip_mask);
        // A flush while translating emptied the table.
        if i >= self.blocks.len() {
            self.blocks.resize(i + 1, Native::default());
        }
        self.blocks[i] = Native {
            serial,
            runs: if entry.is_some() { 0 } else { u32::MAX },
            entry: entry.unwrap_or(0),
            epoch: self.epoch,
        };
        entry
    }

    /// Translates a block into the code buffer (flushing it when full).
    #[cold]
    fn translate(&mut self, ops: &[hindsight_cpu::block::Op], ip_mask: u64) -> Option<usize> {
        // The code is position-independent (jumps are relative, helper
        // and op addresses are immediates), so it is assembled once and
        // copied where it fits.
        let t = translate(ops, ip_mask, 0)?;
        if self.buf.as_mut()?.reserve(t.code.len()).is_none() {
            // Full: drop everything and start again (no native code is
            // running now).
            self.flush();
            self.buf.as_mut()?.reserve(t.code.len())?;
        }
        let addr = self.buf.as_mut()?.push(&t.code)?;
        self.stats.translated += 1;
        self.stats.insns += ops.len() as u64;
        self.stats.inlined += t.inlined as u64;
        Some(addr)
    }

    /// Bytes of code in the buffer.
    pub fn code_bytes(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.used())
    }
}
