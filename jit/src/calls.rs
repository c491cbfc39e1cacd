//! CALL rel32 and RET in 64-bit code, ending their block: the return
//! address goes through the stack's inline TLB fast path (the handler on a
//! miss, exactly as for other memory operands), then a CALL continues into
//! its target by a chained exit and a RET into the block its return
//! address starts, found in native code (see [`crate::indirect`]).

use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi};
use hindsight_cpu::block::Op;
use hindsight_cpu::memory::is_canonical;
use hindsight_cpu::tlb::Access;
use iced_x86::Code;

use crate::inline::Inlined;
use crate::mem::{finish, tlb};
use crate::translate::{gpr, Emitter, RIP};
use crate::{chain, indirect};

/// CALL rel32 (64-bit operand size) to a canonical target.
pub(crate) fn call(e: &mut Emitter, op: &Op) -> Inlined {
    let insn = &op.insn;
    let target = insn.near_branch_target();
    if !e.long || insn.code() != Code::Call_rel32_64 || !is_canonical(target) {
        return Inlined::No;
    }
    let stack = gpr(4);
    let miss = e.a.new_dynamic_label();
    dynasm!(e.a
        ; .arch x64
        ; mov rsi, [rbp + stack]
        ; sub rsi, 8
    );
    tlb(e, 8, &[Access::Write], miss);
    dynasm!(e.a
        ; .arch x64
        ; mov rcx, QWORD insn.next_ip() as i64
        ; mov [rdi], rcx
        ; sub QWORD [rbp + stack], 8
    );
    finish(e, op, miss);
    e.flush_count(1);
    e.rip_due = None;
    chain::emit(e, Some(target));
    let exit = e.exit;
    dynasm!(e.a
        ; .arch x64
        ; jmp =>exit
    );
    Inlined::Ends
}

/// RET (64-bit, no immediate): a canonical return address is popped
/// inline; a non-canonical one (#GP) or a miss takes the handler.
pub(crate) fn ret(e: &mut Emitter, op: &Op) -> Inlined {
    let insn = &op.insn;
    if !e.long || insn.code() != Code::Retnq {
        return Inlined::No;
    }
    let stack = gpr(4);
    let miss = e.a.new_dynamic_label();
    dynasm!(e.a
        ; .arch x64
        ; mov rsi, [rbp + stack]
    );
    tlb(e, 8, &[Access::Read], miss);
    dynasm!(e.a
        ; .arch x64
        ; mov rcx, [rdi]
        ; mov rax, rcx
        ; shl rax, 16
        ; sar rax, 16
        ; cmp rax, rcx
        ; jne =>miss
        ; add QWORD [rbp + stack], 8
        ; mov [rbp + RIP], rcx
    );
    finish(e, op, miss);
    e.flush_count(1);
    e.rip_due = None;
    // The indirect continuation reads the count from `Cpu`.
    e.store_state();
    indirect::emit(e);
    let exit = e.exit;
    dynasm!(e.a
        ; .arch x64
        ; jmp =>exit
    );
    Inlined::Ends
}
