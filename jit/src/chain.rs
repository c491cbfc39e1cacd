//! Direct block chaining: a block's exit with a static successor (the
//! next instruction, a direct JMP, CALL or either side of a Jcc) jumps
//! straight into the successor's native code when the engine's loop would
//! have run that very code next.
//!
//! Each such exit owns a [`Cell`] the engine fills the first time the exit
//! is taken and its target then runs natively ([`crate::Jit::run`]'s
//! `link`). A chained exit checks in native code: the cell's link key (the
//! link generation and the CPL the link was made at, in one word) is the
//! one the engine handed out when it entered the chain (the CPL is frozen
//! within a chain, below), the target fits the budget (`icount + len <=
//! limit`), and, for a
//! target on another page than its block's start, that the target page's
//! execute entry is present and maps the physical page the target was
//! decoded from. Why that implies everything the engine's loop would
//! check:
//!
//! * Frozen state. Inlined code changes only guest registers, flags, RIP,
//!   the count and RAM through write TLB entries (never a code page: those
//!   have no write entry). Everything else changes in handlers, and
//!   `exec_op` leaves the block whenever a handler changed any of TF, RF,
//!   DR7, `exit_request`, `halted`, bitness, CPL, the TLB's change count
//!   (execute entries dropped or replaced), the code cache's invalidation
//!   count or generation, or set `end_block`. So from the engine's last
//!   look (before it entered the first block of the chain) to any chained
//!   exit, those all hold their values then. (The chained path skips the
//!   exit's RIP store: see [`emit`].)
//! * TF, RF, DR7 (debug path), `exit_request`, `halted`: the loop checked
//!   them before entering the chain (debugger breakpoints make the engine
//!   hand out the generation `u64::MAX`, which no link has: no chaining).
//! * Bitness: only 64-bit blocks have cells, and they run in 64-bit code.
//! * Block lookup. The link generation is bumped by the engine whenever
//!   the code cache's invalidation count, the vCPU or the flush epoch
//!   differs from what it last saw (it looks after every block lookup),
//!   and a cell is linked right after the lookup found its target B, on
//!   physical page P, in the current generation. With the same
//!   generation B is still valid. If the execute entry of B's page at the
//!   same CPL (checked: it selects the TLB array and is part of the
//!   jump-cache key) still maps P, the lookup finds B again: by the fast
//!   path if B's jump-cache slot still holds it, else by the slow path,
//!   which takes P from that entry (no page walk) and finds B, the code
//!   cache's one valid block for (P, lin, rip, 64). The slot refill the
//!   chained path skips changes only how later lookups find blocks, never
//!   which. B's translation is the cell's (cells die with their flush
//!   epoch).
//! * The execute entry. For a target on another page it is checked here.
//!   For a target on the page its own block S starts on it is implied: S
//!   was entered with that page mapped to the physical page S was decoded
//!   from (the engine's lookup, or a link or indirect exit checked the
//!   same way), and S's helpers leave on any change of an execute entry;
//!   when the link was made S's page mapped there too, so B, on the same
//!   linear page, was found on that same physical page, and still is.
//! * The code-cache generation (pages holding code, whose write entries
//!   each vCPU drops in `sync_code_gen`): it changes only by decoding, in
//!   the engine's lookup, whose `decode_block` syncs this vCPU at once, or
//!   by a clear (counted as an invalidation); another vCPU's decode
//!   reaches this one through the engine's loop (a vCPU change bumps the
//!   generations). So the loop's `sync_code_gen` is a no-op at every
//!   chained exit, and a new block elsewhere retires no link.
//! * Budget: checked here.
//!
//! An exit back to its own block's start (a loop within one page) needs
//! no cell: its target is the block running, valid by the same frozen
//! state, so it checks the budget alone and jumps to the body.
//!
//! Any other case returns to the engine's loop, which decides in Rust.
//!
//! Chained blocks share the first block's stack frame: a jump goes to the
//! target's body, past its prologue, and the last block's epilogue returns.

use std::mem::offset_of;

use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi};
use hindsight_cpu::tlb::{JmpEntry, Tlb, TlbEntry};
use hindsight_cpu::Cpu;

use crate::helpers::ExitSlot;
use crate::translate::Emitter;

/// Where one exit continues natively, filled by the engine.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Cell {
    /// Link key (link generation << 2 | CPL) the link was made under (0:
    /// not linked).
    pub key: u64,
    /// Address of the target's body (past its prologue).
    pub body: u64,
    /// Instructions in the target block.
    pub len: u64,
    /// 1: the exit's target is on the page its block starts on (set at
    /// translation): no TLB check.
    pub same_page: u64,
    /// Offset from the TLB arrays of the target's execute entry at `cpl`.
    pub tlb_off: u64,
    /// The physical page the target was decoded from.
    pub gpa: u64,
    /// The target's RIP (what an inline cache compares).
    pub rip: u64,
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
pub(crate) const J_LIN: i32 = offset_of!(JmpEntry, lin) as i32;
pub(crate) const J_RIP: i32 = offset_of!(JmpEntry, rip) as i32;
pub(crate) const J_MODE: i32 = offset_of!(JmpEntry, mode) as i32;
pub(crate) const J_ID: i32 = offset_of!(JmpEntry, id) as i32;
pub(crate) const J_SERIAL: i32 = offset_of!(JmpEntry, serial) as i32;
pub(crate) const J_GPA: i32 = offset_of!(JmpEntry, gpa) as i32;
const C_KEY: i32 = offset_of!(Cell, key) as i32;
const C_BODY: i32 = offset_of!(Cell, body) as i32;
const C_LEN: i32 = offset_of!(Cell, len) as i32;
const C_TLB: i32 = offset_of!(Cell, tlb_off) as i32;
const C_GPA: i32 = offset_of!(Cell, gpa) as i32;
const C_RIP: i32 = offset_of!(Cell, rip) as i32;
const TAG: i32 = offset_of!(TlbEntry, tag) as i32;
const GPA: i32 = offset_of!(TlbEntry, gpa) as i32;

/// Emits the chained continuation of an exit to the static target
/// `target` (the count already stored): jumps into the target's body when
/// the cell's link holds (see the module documentation), else records the
/// cell for linking (if its link is stale), stores `target` into RIP if
/// `store` (else it is stored already) and falls through to the caller's
/// jump to the epilogue.
///
/// The chained path leaves RIP stale: generated code never reads RIP from
/// `Cpu` before storing it (every helper call and every exit stores it
/// first), so the target's first store makes it exact again.
pub(crate) fn emit(e: &mut Emitter, target: u64, store: bool) {
    if let Some((_, body, len)) = e.self_loop.filter(|l| l.0 == target) {
        // Back to this block's own start: the link target is the block
        // itself, which the engine's lookup found valid when the chain was
        // entered and which still is (the frozen state above: a handler
        // that changed anything the lookup or the debug path depends on
        // left the block), so only the budget is left to check.
        let out = e.a.new_dynamic_label();
        dynasm!(e.a
            ; .arch x64
            ; lea rax, [r14 + len]
            ; cmp rax, [r12 + SLOT_LIMIT]
            ; ja =>out
            ; add QWORD [r12 + SLOT_CHAINS], 1
            ; jmp =>body
            ; =>out
        );
        if store {
            e.store_rip(target);
        }
        return;
    }
    let Some(cell) = e.next_cell() else {
        if store {
            e.store_rip(target);
        }
        return;
    };
    let same_page = target & !0xfff == e.page;
    if same_page {
        // SAFETY: `cell` is a cell of the block being translated, not yet
        // reachable from any code or by the engine.
        unsafe { (*(cell as *mut Cell)).same_page = 1 };
    }
    let out = e.a.new_dynamic_label();
    take_link(e, cell, Target::Static(target, same_page), out);
    dynasm!(e.a
        ; .arch x64
        ; =>out
    );
    if store {
        e.store_rip(target);
    }
}

/// The target of a linked exit.
pub(crate) enum Target {
    /// A static target, and whether it is on its block's first page.
    Static(u64, bool),
    /// The target in RSI: an inline cache of an indirect exit, which holds
    /// while the cell's link was made for that very RIP (else a jump to
    /// the label, the general path).
    Cached(DynamicLabel),
}

/// Takes the link of the cell at `cell` (address into RCX): into the
/// target's body when the link holds (see the module documentation); to
/// `out` if the target does not fit the budget or its page no longer maps
/// where it was decoded from; when the link key is stale, records the cell
/// for linking and falls through.
pub(crate) fn take_link(e: &mut Emitter, cell: usize, target: Target, out: DynamicLabel) {
    let unlinked = e.a.new_dynamic_label();
    dynasm!(e.a
        ; .arch x64
        ; mov rcx, QWORD cell as i64
        ; mov rax, [r12 + SLOT_GEN]
        ; cmp rax, [rcx + C_KEY]
        ; jne =>unlinked
    );
    if let Target::Cached(other) = target {
        dynasm!(e.a
            ; .arch x64
            ; cmp rsi, [rcx + C_RIP]
            ; jne =>other
        );
    }
    dynasm!(e.a
        ; .arch x64
        ; mov rax, r14
        ; add rax, [rcx + C_LEN]
        ; cmp rax, [r12 + SLOT_LIMIT]
        ; ja =>out
    );
    let page = match target {
        Target::Static(_, true) => None,
        Target::Static(t, false) => Some(Some((t & !0xfff) as i64)),
        Target::Cached(_) => Some(None),
    };
    if let Some(page) = page {
        // The target's page still maps where the target was decoded from.
        dynasm!(e.a
            ; .arch x64
            ; mov rdx, [rbp + TLB_SETS]
            ; add rdx, [rcx + C_TLB]
        );
        match page {
            Some(p) => dynasm!(e.a ; .arch x64 ; mov rax, QWORD p),
            None => dynasm!(e.a ; .arch x64 ; mov rax, rsi ; and rax, -4096),
        }
        dynasm!(e.a
            ; .arch x64
            ; cmp rax, [rdx + TAG]
            ; jne =>out
            ; mov rax, [rdx + GPA]
            ; cmp rax, [rcx + C_GPA]
            ; jne =>out
        );
    }
    dynasm!(e.a
        ; .arch x64
        ; add QWORD [r12 + SLOT_CHAINS], 1
        ; jmp QWORD [rcx + C_BODY]
        ; =>unlinked
        ; mov [r12 + SLOT_LINK], rcx
    );
}
