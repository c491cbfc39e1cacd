//! Direct block chaining: a block's exit with a static successor (the
//! next instruction, a direct JMP, CALL or either side of a Jcc) jumps
//! straight into the successor's native code when the engine's loop would
//! have run that very code next.
//!
//! Each such exit owns a [`Cell`] the engine fills the first time the exit
//! is taken and its target then runs natively ([`crate::Jit::run`]'s
//! `link`). A chained exit checks only three things in native code: the
//! cell's link generation is the current one, the target fits the budget
//! (`icount + len <= limit`) and the CPL is the one the link was made at.
//! Why that implies everything the engine's loop would check:
//!
//! * Frozen state. Inlined code changes only guest registers, flags, RIP,
//!   the count and RAM through write TLB entries (never a code page: those
//!   have no write entry). Everything else changes in handlers, and
//!   `exec_op` leaves the block whenever a handler changed any of TF, RF,
//!   DR7, `exit_request`, `halted`, bitness, CPL, the TLB's change count
//!   (jump-cache flushes, execute entries replaced), the code cache's
//!   invalidation count or generation, or set `end_block`. So from the
//!   engine's last look (before it entered the first block of the chain)
//!   to any chained exit, those all hold their values then. (The chained
//!   path skips the exit's RIP store: see [`emit`].)
//! * TF, RF, DR7 (debug path), `exit_request`, `halted`: the loop checked
//!   them before entering the chain (debugger breakpoints make the engine
//!   hand out the generation `u64::MAX`, which no link has: no chaining).
//! * Bitness: only 64-bit blocks have cells, and they run in 64-bit code.
//! * Block lookup. The link generation is bumped by the engine whenever
//!   the TLB's change count, the code cache's invalidation count or
//!   generation, the vCPU or the flush epoch differs from what it last
//!   saw (it looks after every block lookup), and a cell is linked right
//!   after the lookup found its target B in the current generation. Then
//!   the execute entry of B's page was present and B valid; with the same
//!   generation that entry was neither flushed nor replaced (both counted)
//!   and B not invalidated (counted). So at the same CPL (checked: it
//!   selects the TLB array and is part of the jump-cache key) the lookup
//!   finds B again: by the fast path if B's jump-cache slot still holds
//!   it, else by the slow path, which takes the gpa from that same
//!   execute entry (no page walk) and finds B, the code cache's one valid
//!   block for (gpa, lin, rip, 64). Jump-cache evictions are therefore not
//!   counted (in Linux they are frequent and would retire every link);
//!   the slot refill the chained path skips changes only how later
//!   lookups find blocks, never which. B's translation is the cell's
//!   (cells die with their flush epoch).
//! * The code-cache generation: it changes only by decoding (in the
//!   lookup) or a clear, and the engine bumps the link generation when it
//!   did, so the loop's `sync_code_gen` is a no-op at every chained exit
//!   (a block decoded on a new code page runs with the stale write
//!   entries the interpreter also uses for it, then returns to the loop).
//! * Budget: checked here.
//!
//! Any other case returns to the engine's loop, which decides in Rust.
//!
//! Chained blocks share the first block's stack frame: a jump goes to the
//! target's body, past its prologue, and the last block's epilogue returns.

use std::mem::offset_of;

use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi};
use hindsight_cpu::tlb::{JmpEntry, Tlb};
use hindsight_cpu::Cpu;

use crate::helpers::ExitSlot;
use crate::translate::Emitter;

/// Where one exit continues natively, filled by the engine.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Cell {
    /// Link generation the link was made in (0: not linked).
    pub gen: u64,
    /// Address of the target's body (past its prologue).
    pub body: u64,
    /// Instructions in the target block.
    pub len: u64,
    /// CPL the link was made at.
    pub cpl: u64,
}

/// Cells per translated block (a Jcc has two static exits).
pub(crate) const CELLS: usize = 2;

pub(crate) const SLOT_GEN: i32 = offset_of!(ExitSlot, gen) as i32;
pub(crate) const SLOT_LIMIT: i32 = offset_of!(ExitSlot, limit) as i32;
const SLOT_LINK: i32 = offset_of!(ExitSlot, link) as i32;
pub(crate) const SLOT_CHAINS: i32 = offset_of!(ExitSlot, chains) as i32;
pub(crate) const CPL: i32 = offset_of!(Cpu, cpl) as i32;
pub(crate) const TLB_SETS: i32 = (offset_of!(Cpu, tlb) + Tlb::SETS_PTR_OFFSET) as i32;
pub(crate) const TLB_JMP: i32 = (offset_of!(Cpu, tlb) + offset_of!(Tlb, jmp)) as i32;
pub(crate) const TLB_EPOCH: i32 = (offset_of!(Cpu, tlb) + Tlb::JMP_EPOCH_OFFSET) as i32;
pub(crate) const J_LIN: i32 = offset_of!(JmpEntry, lin) as i32;
pub(crate) const J_RIP: i32 = offset_of!(JmpEntry, rip) as i32;
pub(crate) const J_MODE: i32 = offset_of!(JmpEntry, mode) as i32;
pub(crate) const J_ID: i32 = offset_of!(JmpEntry, id) as i32;
pub(crate) const J_SERIAL: i32 = offset_of!(JmpEntry, serial) as i32;
const C_GEN: i32 = offset_of!(Cell, gen) as i32;
const C_BODY: i32 = offset_of!(Cell, body) as i32;
const C_LEN: i32 = offset_of!(Cell, len) as i32;
const C_CPL: i32 = offset_of!(Cell, cpl) as i32;

/// Emits the chained continuation of an exit to a static target (the
/// count already stored): jumps into the target's body when the cell's
/// link holds (see the module documentation), else records the cell for
/// linking (if its link is stale), stores `rip` into RIP (`None`: stored
/// already) and falls through to the caller's jump to the epilogue.
///
/// The chained path leaves RIP stale: generated code never reads RIP from
/// `Cpu` before storing it (every helper call and every exit stores it
/// first), so the target's first store makes it exact again.
pub(crate) fn emit(e: &mut Emitter, rip: Option<u64>) {
    let Some(cell) = e.next_cell() else {
        if let Some(rip) = rip {
            e.store_rip(rip);
        }
        return;
    };
    let unlinked = e.a.new_dynamic_label();
    let out = e.a.new_dynamic_label();
    dynasm!(e.a
        ; .arch x64
        ; mov rcx, QWORD cell as i64
        ; mov rax, [r12 + SLOT_GEN]
        ; cmp rax, [rcx + C_GEN]
        ; jne =>unlinked
        ; mov rax, r14
        ; add rax, [rcx + C_LEN]
        ; cmp rax, [r12 + SLOT_LIMIT]
        ; ja =>out
        ; movzx eax, BYTE [rbp + CPL]
        ; cmp rax, [rcx + C_CPL]
        ; jne =>out
        ; add QWORD [r12 + SLOT_CHAINS], 1
        ; jmp QWORD [rcx + C_BODY]
        ; =>unlinked
        ; mov [r12 + SLOT_LINK], rcx
        ; =>out
    );
    if let Some(rip) = rip {
        e.store_rip(rip);
    }
}
