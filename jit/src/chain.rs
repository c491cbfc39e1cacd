//! Direct block chaining: a block's exit with a static successor (the
//! next instruction, a direct JMP, CALL or either side of a Jcc) jumps
//! straight into the successor's native code when the engine's loop would
//! have run that very code next.
//!
//! Each such exit owns a [`Cell`] the engine fills the first time the exit
//! is taken and its target then runs natively. Before jumping, generated
//! code re-checks in native code what [`crate::Jit::run`]'s loop
//! checks: the link is of the current link generation (bumped whenever a
//! block may have been invalidated, see `engine.rs`), the target fits the
//! budget, no debug path is needed (TF, RF, DR7; debugger breakpoints make
//! the engine hand out generation 0: no chaining at all), no exit is
//! requested, the vCPU is still in 64-bit code at the same CPL, and the
//! block lookup's fast path would find the target: its jump-cache slot
//! holds it under the current key and its page has its execute TLB entry.
//! Any other case returns to the engine's loop, which decides in Rust.
//!
//! Chained blocks share the first block's stack frame: a jump goes to the
//! target's body, past its prologue, and the last block's epilogue returns.

use std::mem::offset_of;

use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi};
use hindsight_cpu::flags::{RF, TF};
use hindsight_cpu::tlb::{JmpEntry, Tlb, TlbEntry};
use hindsight_cpu::Cpu;

use crate::helpers::ExitSlot;
use crate::translate::{Emitter, ICOUNT, RFLAGS};

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
    /// Jump-cache epoch at that time.
    pub epoch: u64,
    /// Offset from the TLB arrays of the target's execute entry at `cpl`.
    pub tlb_off: u64,
    /// Offset from the jump cache of the target's slot.
    pub jmp_off: u64,
    /// The slot's expected `mode`, `id` and `serial`.
    pub mode: u64,
    pub id: u64,
    pub serial: u64,
}

/// Cells per translated block (a Jcc has two static exits).
pub(crate) const CELLS: usize = 2;

pub(crate) const SLOT_GEN: i32 = offset_of!(ExitSlot, gen) as i32;
pub(crate) const SLOT_LIMIT: i32 = offset_of!(ExitSlot, limit) as i32;
const SLOT_LINK: i32 = offset_of!(ExitSlot, link) as i32;
pub(crate) const SLOT_CHAINS: i32 = offset_of!(ExitSlot, chains) as i32;
pub(crate) const DR7: i32 = (offset_of!(Cpu, dr) + 7 * 8) as i32;
pub(crate) const CPL: i32 = offset_of!(Cpu, cpl) as i32;
pub(crate) const BITNESS: i32 = offset_of!(Cpu, bitness) as i32;
pub(crate) const EXIT_REQ: i32 = offset_of!(Cpu, exit_request) as i32;
pub(crate) const TLB_SETS: i32 = (offset_of!(Cpu, tlb) + Tlb::SETS_PTR_OFFSET) as i32;
pub(crate) const TLB_JMP: i32 = (offset_of!(Cpu, tlb) + offset_of!(Tlb, jmp)) as i32;
pub(crate) const TLB_EPOCH: i32 = (offset_of!(Cpu, tlb) + Tlb::JMP_EPOCH_OFFSET) as i32;
const TAG: i32 = offset_of!(TlbEntry, tag) as i32;
pub(crate) const J_LIN: i32 = offset_of!(JmpEntry, lin) as i32;
pub(crate) const J_RIP: i32 = offset_of!(JmpEntry, rip) as i32;
pub(crate) const J_MODE: i32 = offset_of!(JmpEntry, mode) as i32;
pub(crate) const J_ID: i32 = offset_of!(JmpEntry, id) as i32;
pub(crate) const J_SERIAL: i32 = offset_of!(JmpEntry, serial) as i32;
const C_GEN: i32 = offset_of!(Cell, gen) as i32;
const C_BODY: i32 = offset_of!(Cell, body) as i32;
const C_LEN: i32 = offset_of!(Cell, len) as i32;
const C_CPL: i32 = offset_of!(Cell, cpl) as i32;
const C_EPOCH: i32 = offset_of!(Cell, epoch) as i32;
const C_TLB: i32 = offset_of!(Cell, tlb_off) as i32;
const C_JMP: i32 = offset_of!(Cell, jmp_off) as i32;
const C_MODE: i32 = offset_of!(Cell, mode) as i32;
const C_ID: i32 = offset_of!(Cell, id) as i32;
const C_SERIAL: i32 = offset_of!(Cell, serial) as i32;

/// Emits the chained continuation of an exit to the static target
/// `target` (RIP and the count already stored): jumps into the target's
/// body when the cell's link holds, else records the cell for linking
/// (if unlinked) and falls through to the caller's jump to the epilogue.
pub(crate) fn emit(e: &mut Emitter, target: u64) {
    let Some(cell) = e.next_cell() else {
        return;
    };
    let page = (target & !0xfff) as i64;
    let unlinked = e.a.new_dynamic_label();
    let out = e.a.new_dynamic_label();
    let debug = (TF | RF) as i32;
    dynasm!(e.a
        ; .arch x64
        ; mov rcx, QWORD cell as i64
        ; mov rax, [r12 + SLOT_GEN]
        ; test rax, rax
        ; jz =>out
        ; cmp rax, [rcx + C_GEN]
        ; jne =>unlinked
        ; mov rax, [rbp + ICOUNT]
        ; add rax, [rcx + C_LEN]
        ; cmp rax, [r12 + SLOT_LIMIT]
        ; ja =>out
        ; test DWORD [rbp + RFLAGS], debug
        ; jnz =>out
        ; test BYTE [rbp + DR7], -1
        ; jnz =>out
        ; cmp BYTE [rbp + EXIT_REQ], 0
        ; jne =>out
        ; cmp DWORD [rbp + BITNESS], 64
        ; jne =>out
        ; movzx eax, BYTE [rbp + CPL]
        ; cmp rax, [rcx + C_CPL]
        ; jne =>out
        ; mov eax, DWORD [rbp + TLB_EPOCH]
        ; cmp rax, [rcx + C_EPOCH]
        ; jne =>out
        ; mov rdx, [rbp + TLB_SETS]
        ; add rdx, [rcx + C_TLB]
        ; mov rax, QWORD page
        ; cmp rax, [rdx + TAG]
        ; jne =>out
        ; mov rdx, [rbp + TLB_JMP]
        ; add rdx, [rcx + C_JMP]
        ; mov rax, QWORD target as i64
        ; cmp rax, [rdx + J_LIN]
        ; jne =>out
        ; cmp rax, [rdx + J_RIP]
        ; jne =>out
        ; mov eax, DWORD [rdx + J_MODE]
        ; cmp rax, [rcx + C_MODE]
        ; jne =>out
        ; mov eax, DWORD [rdx + J_ID]
        ; cmp rax, [rcx + C_ID]
        ; jne =>out
        ; mov eax, DWORD [rdx + J_SERIAL]
        ; cmp rax, [rcx + C_SERIAL]
        ; jne =>out
        ; add QWORD [r12 + SLOT_CHAINS], 1
        ; jmp QWORD [rcx + C_BODY]
        ; =>unlinked
        ; mov [r12 + SLOT_LINK], rcx
        ; =>out
    );
}
