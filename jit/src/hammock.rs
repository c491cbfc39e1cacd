//! If-conversion of a Jcc that skips one register instruction (a
//! hammock: `jnc skip; xor r13d, poly; skip: ...`).
//!
//! Such a Jcc ends its decoded block, and its fall-through block starts
//! with the skipped instruction followed by the Jcc's target. When both
//! blocks lie on one physical page, the block is translated together with
//! its fall-through block (the tail): the skipped instruction runs
//! whether or not the branch is taken, and when it is taken, CMOVs put
//! back what the instruction changed (its destination register and
//! RFLAGS) and the count drops by one. A data-dependent guest branch then
//! costs no host branch (nor its misprediction), and the two blocks become
//! one, which may loop on itself ([`crate::chain::emit`]).
//!
//! Why it is exact:
//! * The skipped instruction is inlined with no handler path (checked
//!   when it is emitted; otherwise the block is translated alone): it
//!   cannot fault, call anything or touch memory, and it changes only its
//!   destination register (when it has one), RFLAGS and the count, all of
//!   which are restored. Its code uses RAX, RCX and RDX; the condition and
//!   the old RFLAGS wait in R10 and R11, which no emitter uses, and the
//!   old destination on the stack.
//! * RFLAGS is exact at the Jcc (liveness treats the Jcc as a handler
//!   call), so the restored value is exact in every flag.
//! * Budget: the translation counts as long as both blocks together; the
//!   engine enters it only when that many instructions fit (a shorter
//!   path just stops earlier), and runs the first block in the
//!   interpreter otherwise.
//! * Lifetime: the tail's ops are embedded in the code (handler calls).
//!   Both blocks lie on one physical page and neither straddles into
//!   another, and a page's blocks are invalidated together, so while the
//!   first block is valid (the engine's check before entering it) so is
//!   the tail.
//! * Debugging: the engine checks the tail too for breakpoints and the
//!   other reasons to take the debug path.

use dynasmrt::x64::Rq;
use dynasmrt::{dynasm, DynasmApi};
use hindsight_cpu::block::Op;
use iced_x86::{ConditionCode, FlowControl, Instruction, Mnemonic, OpKind};

use crate::inline::{is_immediate, reg};
use crate::translate::{gpr, Emitter};

/// Whether the block `tail` may be translated after the block ending in
/// `jcc` as its hammock: a 64-bit Jcc whose fall-through is `tail`'s first
/// instruction, a register instruction that can be undone, and whose
/// target is `tail`'s second.
pub(crate) fn fits(jcc: &Op, tail: &[Op]) -> bool {
    let j = &jcc.insn;
    let [body, after, ..] = tail else {
        return false;
    };
    j.is_jcc_short_or_near()
        && j.op0_kind() == OpKind::NearBranch64
        && j.condition_code() != ConditionCode::None
        && body.insn.ip() == j.next_ip()
        && after.insn.ip() == j.near_branch_target()
        && undoable(&body.insn)
}

/// Whether `insn` changes only a general register (its first operand,
/// unless it is CMP or TEST) and RFLAGS: register and immediate operands
/// of the plain integer instructions the inline code handles.
fn undoable(insn: &Instruction) -> bool {
    use Mnemonic as M;
    let kind_ok = matches!(
        insn.mnemonic(),
        M::Mov
            | M::Add
            | M::Adc
            | M::Sub
            | M::Sbb
            | M::And
            | M::Or
            | M::Xor
            | M::Cmp
            | M::Test
            | M::Inc
            | M::Dec
            | M::Neg
            | M::Not
            | M::Shl
            | M::Shr
            | M::Sar
            | M::Rol
            | M::Ror
            | M::Movzx
            | M::Movsx
            | M::Movsxd
    );
    let operands_ok = (0..insn.op_count()).all(|i| match insn.op_kind(i) {
        OpKind::Register => reg(insn.op_register(i)).is_some(),
        k => is_immediate(k),
    });
    kind_ok
        && operands_ok
        && insn.op0_kind() == OpKind::Register
        && insn.flow_control() == FlowControl::Next
        && !insn.has_lock_prefix()
        && !insn.has_rep_prefix()
        && !insn.has_repne_prefix()
}

/// The guest register the skipped instruction writes, if any.
fn destination(body: &Op) -> Option<usize> {
    let insn = &body.insn;
    if matches!(insn.mnemonic(), Mnemonic::Cmp | Mnemonic::Test) {
        return None;
    }
    reg(insn.op0_register()).map(|(n, _)| n)
}

/// Emits the Jcc `jcc` of a hammock whose skipped instruction is `body`:
/// counts it, sets R10B when it is taken (from R9B when the instruction
/// before evaluated it, else from RFLAGS), keeps RFLAGS in R11 and pushes
/// `body`'s destination register. Returns that register for [`end`].
pub(crate) fn begin(e: &mut Emitter, jcc: &Op, body: &Op) -> Option<usize> {
    e.pending += 1;
    if e.fused {
        dynasm!(e.a
            ; .arch x64
            ; movzx r10d, r9b
        );
    } else {
        crate::cond::guest_set_cc(e, jcc.insn.condition_code(), Rq::R10);
    }
    e.fused = false;
    dynasm!(e.a
        ; .arch x64
        ; mov r11, r13
    );
    let dest = destination(body);
    if let Some(d) = dest {
        dynasm!(e.a
            ; .arch x64
            ; push QWORD [rbp + gpr(d)]
        );
    }
    dest
}

/// After the skipped instruction (emitted and counted as usual): when the
/// Jcc was taken, puts back RFLAGS and the destination register `dest`
/// and takes the instruction off the count.
pub(crate) fn end(e: &mut Emitter, dest: Option<usize>) {
    dynasm!(e.a
        ; .arch x64
        ; test r10b, r10b
        ; cmovnz r13, r11
    );
    if let Some(d) = dest {
        // POP and MOV leave the host flags of the TEST alone.
        dynasm!(e.a
            ; .arch x64
            ; pop rcx
            ; mov rax, [rbp + gpr(d)]
            ; cmovnz rax, rcx
            ; mov [rbp + gpr(d)], rax
        );
    }
    dynasm!(e.a
        ; .arch x64
        ; movzx eax, r10b
        ; sub r14, rax
    );
}
