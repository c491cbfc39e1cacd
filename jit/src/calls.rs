//! CALL rel32, RET, and JMP/CALL through a register in 64-bit code, ending
//! their block: the return address goes through the stack's inline TLB
//! fast path (the handler on a miss, exactly as for other memory
//! operands), then a CALL rel32 continues into its target by a chained
//! exit, and the others into the block at the new RIP, found in native
//! code (see [`crate::indirect`]).

use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi};
use hindsight_cpu::block::Op;
use hindsight_cpu::memory::is_canonical;
use hindsight_cpu::tlb::Access;
use iced_x86::{Code, OpKind};

use crate::inline::{reg, Inlined};
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
    let miss = e.a.new_dynamic_label();
    push_return(e, insn.next_ip(), miss);
    finish(e, op, miss);
    e.flush_count(1);
    e.rip_due = None;
    chain::emit(e, target, true);
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
    );
    canonical_or_miss(e, miss);
    dynasm!(e.a
        ; .arch x64
        ; add QWORD [rbp + stack], 8
        ; mov [rbp + RIP], rcx
    );
    indirect_exit(e, op, miss)
}

/// Branches to `miss` unless RCX holds a canonical address.
fn canonical_or_miss(e: &mut Emitter, miss: DynamicLabel) {
    dynasm!(e.a
        ; .arch x64
        ; mov rax, rcx
        ; shl rax, 16
        ; sar rax, 16
        ; cmp rax, rcx
        ; jne =>miss
    );
}

/// Loads the 64-bit register operand of an indirect JMP/CALL into RCX and
/// branches to `miss` (the handler: #GP) unless it is canonical; `None`
/// for any other form.
fn register_target(e: &mut Emitter, op: &Op, code: Code) -> Option<DynamicLabel> {
    let insn = &op.insn;
    if !e.long || insn.code() != code || insn.op0_kind() != OpKind::Register {
        return None;
    }
    let (r, 8) = reg(insn.op0_register())? else {
        return None;
    };
    let miss = e.a.new_dynamic_label();
    dynasm!(e.a
        ; .arch x64
        ; mov rcx, [rbp + gpr(r)]
    );
    canonical_or_miss(e, miss);
    Some(miss)
}

/// Ends an indirect branch whose target is in RIP (both paths of `miss`
/// joined): counts it and continues into the block at RIP.
fn indirect_exit(e: &mut Emitter, op: &Op, miss: DynamicLabel) -> Inlined {
    finish(e, op, miss);
    e.flush_count(1);
    e.rip_due = None;
    indirect::emit(e);
    let exit = e.exit;
    dynasm!(e.a
        ; .arch x64
        ; jmp =>exit
    );
    Inlined::Ends
}

/// JMP r64 (retpoline-free kernels and every jump table): a canonical
/// target continues into its block like a RET; a non-canonical one takes
/// the handler (#GP).
pub(crate) fn jmp_reg(e: &mut Emitter, op: &Op) -> Inlined {
    let Some(miss) = register_target(e, op, Code::Jmp_rm64) else {
        return Inlined::No;
    };
    dynasm!(e.a
        ; .arch x64
        ; mov [rbp + RIP], rcx
    );
    indirect_exit(e, op, miss)
}

/// CALL r64: the target is read before the push (CALL RSP calls the old
/// RSP); the return address goes through the stack's fast path.
pub(crate) fn call_reg(e: &mut Emitter, op: &Op) -> Inlined {
    let Some(miss) = register_target(e, op, Code::Call_rm64) else {
        return Inlined::No;
    };
    push_return(e, op.insn.next_ip(), miss);
    dynasm!(e.a
        ; .arch x64
        ; mov [rbp + RIP], rcx
    );
    indirect_exit(e, op, miss)
}

/// Pushes the return address `ret` through the stack's fast path (`miss`
/// on a TLB miss or a page crossing); keeps RCX (the TLB lookup does).
fn push_return(e: &mut Emitter, ret: u64, miss: DynamicLabel) {
    let stack = gpr(4);
    dynasm!(e.a
        ; .arch x64
        ; mov rsi, [rbp + stack]
        ; sub rsi, 8
    );
    tlb(e, 8, &[Access::Write], miss);
    dynasm!(e.a
        ; .arch x64
        ; mov rax, QWORD ret as i64
        ; mov [rdi], rax
        ; sub QWORD [rbp + stack], 8
    );
}
