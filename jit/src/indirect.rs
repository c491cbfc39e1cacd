//! Indirect chaining: at an exit whose target is known only at run time
//! (RET), generated code finds the next block as the block lookup's fast
//! path would — the jump-cache slot of RIP holds it under the current key
//! and RIP's page has its execute TLB entry — and enters its native code
//! directly when the engine's loop would have run it natively: translated
//! in the current flush epoch, found valid by the lookup in the current
//! link generation (so still valid: invalidations bump the generation) and
//! fitting the budget. The debug path, exit requests and the bitness need
//! no check: they are frozen since the engine entered the chain (see
//! [`crate::chain`]). Otherwise the block returns to the engine's loop.
//!
//! Before the jump cache, a 64-bit block tries its inline cache: a link
//! cell the engine fills like a static exit's, for the RIP the exit went
//! to when it was linked. When RIP is that one, the link is taken under
//! the static exit's checks (link key, budget, the target page's execute
//! entry), which cost far less than the lookup. A stale link sends the
//! exit to the engine to be linked again; a different RIP takes the jump
//! cache.

use std::mem::{offset_of, size_of};

use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi};
use hindsight_cpu::tlb::{JmpEntry, TlbEntry, JMP_ENTRIES, TLB_ENTRIES, TLB_ENTRY_SIZE};

use crate::chain::{
    self, Target, CPL, J_GPA, J_ID, J_LIN, J_MODE, J_RIP, J_SERIAL, SLOT_CHAINS, SLOT_GEN,
    SLOT_LIMIT, TLB_JMP,
};
use crate::engine::Native;
use crate::helpers::ExitSlot;
use crate::translate::{Emitter, RIP};

const SLOT_NATIVES: i32 = offset_of!(ExitSlot, natives) as i32;
const SLOT_NLEN: i32 = offset_of!(ExitSlot, natives_len) as i32;
const SLOT_EPOCH: i32 = offset_of!(ExitSlot, epoch) as i32;
/// The execute arrays (supervisor first) and an entry's tag.
const EXEC_TAG: i32 = (4 * TLB_ENTRIES * TLB_ENTRY_SIZE + offset_of!(TlbEntry, tag)) as i32;
const EXEC_GPA: i32 = (4 * TLB_ENTRIES * TLB_ENTRY_SIZE + offset_of!(TlbEntry, gpa)) as i32;
const ENTRY_SHIFT: i8 = TLB_ENTRY_SIZE.trailing_zeros() as i8;
const J_SIZE: i32 = size_of::<JmpEntry>() as i32;
const N_SIZE: i32 = size_of::<Native>() as i32;
const N_SERIAL: i32 = offset_of!(Native, serial) as i32;
const N_BODY: i32 = offset_of!(Native, body) as i32;
const N_EPOCH: i32 = offset_of!(Native, epoch) as i32;
const N_LEN: i32 = offset_of!(Native, len) as i32;
const N_CHECKED: i32 = offset_of!(Native, checked) as i32;

/// Emits the indirect continuation to the block at RIP (stored, and the
/// count flushed); falls through to the caller's exit when it cannot.
pub(crate) fn emit(e: &mut Emitter) {
    let out = e.a.new_dynamic_label();
    let lookup = e.a.new_dynamic_label();
    dynasm!(e.a
        ; .arch x64
        ; mov rsi, [rbp + RIP]
    );
    if let Some(cell) = e.next_cell() {
        // The inline cache: the block this exit went to last, linked by
        // the engine (a stale link asks to be made again).
        chain::take_link(e, cell, Target::Cached(lookup), out);
        dynasm!(e.a
            ; .arch x64
            ; jmp =>out
        );
    }
    dynasm!(e.a
        ; .arch x64
        ; =>lookup
        // The jump-cache key: 64 | user << 8.
        ; xor r8d, r8d
        ; cmp BYTE [rbp + CPL], 3
        ; sete r8b
        ; mov r9d, r8d
        ; shl r9d, 8
        ; or r9d, 64
        // The jump-cache slot.
        ; mov rdx, rsi
        ; shr rdx, 12
        ; xor rdx, rsi
        ; and edx, (JMP_ENTRIES - 1) as i32
        ; imul edx, edx, J_SIZE
        ; add rdx, [rbp + TLB_JMP]
        ; cmp rsi, [rdx + J_LIN]
        ; jne =>out
        ; cmp rsi, [rdx + J_RIP]
        ; jne =>out
        ; cmp r9d, DWORD [rdx + J_MODE]
        ; jne =>out
        // The execute TLB entry of RIP's page, mapping it to the page
        // the block was decoded from.
        ; mov rax, rsi
        ; shr rax, 12
        ; and eax, (TLB_ENTRIES - 1) as i32
        ; shl rax, ENTRY_SHIFT
        ; add rax, r15
        ; mov rcx, rsi
        ; and rcx, -4096
        ; cmp rcx, [rax + EXEC_TAG]
        ; jne =>out
        ; mov rcx, [rax + EXEC_GPA]
        ; cmp rcx, [rdx + J_GPA]
        ; jne =>out
        // The engine's translation of the block.
        ; mov eax, DWORD [rdx + J_ID]
        ; cmp rax, [r12 + SLOT_NLEN]
        ; jae =>out
        ; imul rax, rax, N_SIZE
        ; add rax, [r12 + SLOT_NATIVES]
        ; mov ecx, DWORD [rdx + J_SERIAL]
        ; cmp ecx, DWORD [rax + N_SERIAL]
        ; jne =>out
        ; mov ecx, DWORD [rax + N_EPOCH]
        ; cmp rcx, [r12 + SLOT_EPOCH]
        ; jne =>out
        ; mov rcx, [rax + N_CHECKED]
        ; cmp rcx, [r12 + SLOT_GEN]
        ; jne =>out
        ; mov rcx, [rax + N_BODY]
        ; test rcx, rcx
        ; jz =>out
        ; mov r8d, DWORD [rax + N_LEN]
        ; add r8, r14
        ; cmp r8, [r12 + SLOT_LIMIT]
        ; ja =>out
        ; add QWORD [r12 + SLOT_CHAINS], 1
        ; jmp rcx
        ; =>out
    );
}
