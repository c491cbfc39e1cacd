//! Rust functions that generated code calls (`extern "sysv64"`), and the
//! slot through which they report what generated code cannot carry: the
//! stop of a fault that could not be delivered, and a caught panic.
//!
//! No panic unwinds through generated code: each helper catches it, records
//! it here and asks the block to return; [`crate::Jit::run`] resumes the
//! unwinding once it is back in Rust.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use hindsight_cpu::block::Op;
use hindsight_cpu::flags::{RF, TF};
use hindsight_cpu::{Ctx, Stop};

/// What a block's helpers report besides "leave the block".
#[derive(Default)]
pub(crate) struct ExitSlot {
    /// A fault escalated to a stop (triple fault, unimplemented instruction).
    pub stop: Option<Stop>,
    /// A panic caught in a helper, to resume once out of generated code.
    pub panic: Option<Box<dyn Any + Send + 'static>>,
    /// Link key (generation << 2 | CPL) chained exits must match
    /// (`u64::MAX`: no chaining).
    pub gen: u64,
    /// The run's instruction limit (chained blocks must fit it).
    pub limit: u64,
    /// Address of the cell of an unlinked exit just taken (0: none).
    pub link: usize,
    /// Chained block entries (statistics).
    pub chains: u64,
    /// The engine's table of translations by code-cache slot (address and
    /// length), and its flush epoch, for indirect chaining.
    pub natives: usize,
    pub natives_len: u64,
    pub epoch: u64,
}

/// What generated code (and the block links it follows) assumes stays
/// as the engine's loop last checked it; only handlers can change it.
/// Packed into three words (it is taken around every handler call): the
/// sum of three counters that only grow (TLB changes, code-cache
/// invalidations and generation: the sum changes iff one does), DR7, and
/// TF|RF (bits 8, 16) with CPL, bitness, `exit_request` and `halted` in
/// bytes 4 to 7.
#[derive(Clone, Copy)]
struct Frozen {
    counts: u64,
    dr7: u64,
    modes: u64,
}

impl Frozen {
    #[inline(always)]
    fn of(ctx: &Ctx) -> Frozen {
        let cpu = &ctx.cpu;
        let counts = cpu
            .tlb
            .changes
            .wrapping_add(ctx.code.invalidations)
            .wrapping_add(ctx.code.gen);
        let modes = (cpu.rflags & (TF | RF))
            | u64::from(cpu.cpl) << 32
            | u64::from(cpu.bitness as u8) << 40
            | u64::from(cpu.exit_request) << 48
            | u64::from(cpu.halted) << 56;
        Frozen {
            counts,
            dr7: cpu.dr[7],
            modes,
        }
    }

    /// Whether anything differs from `before` (scalar compares: the
    /// derived comparison became one vector load of values just stored
    /// as words, a store-forwarding stall).
    #[inline(always)]
    fn changed(&self, before: &Frozen) -> bool {
        (self.counts ^ before.counts) | (self.dr7 ^ before.dr7) | (self.modes ^ before.modes) != 0
    }
}

/// Runs one instruction through its interpreter handler, as the
/// interpreter's block loop does (RIP already at the next instruction):
/// on success counts it and returns 1 if the block must end (`end_block`,
/// or the handler changed any of [`Frozen`]: the engine's loop must look
/// again before any block is entered, see [`crate::chain`]), else 0; on a
/// fault puts RIP back at the instruction, delivers the exception with
/// [`Ctx::raise`] and returns 1.
///
/// # Safety
/// `ctx` points at the live `Ctx` the engine runs, `op` at an instruction
/// of a block that is not freed while it runs, `slot` at the engine's slot.
pub(crate) unsafe extern "sysv64" fn exec_op(
    ctx: *mut Ctx<'_>,
    op: *const Op,
    slot: *mut ExitSlot,
) -> u64 {
    // SAFETY: the caller (generated code entered by `Jit::run`) passes the
    // pointers `Jit::run` gave it, which are valid and unaliased for the
    // duration of the block.
    let (ctx, op, slot) = unsafe { (&mut *ctx, &*op, &mut *slot) };
    let r = catch_unwind(AssertUnwindSafe(|| {
        let before = Frozen::of(ctx);
        match (op.handler)(ctx, &op.insn) {
            Ok(()) => {
                ctx.cpu.icount += 1;
                u64::from(ctx.cpu.end_block || Frozen::of(ctx).changed(&before))
            }
            Err(f) => {
                ctx.cpu.rip = op.insn.ip();
                if let Err(stop) = ctx.raise(f) {
                    slot.stop = Some(stop);
                }
                1
            }
        }
    }));
    match r {
        Ok(v) => v,
        Err(payload) => {
            slot.panic = Some(payload);
            1
        }
    }
}
