//! NOT and NEG of a register (not AH..BH). NOT writes no flag; NEG's are
//! the host's, all defined (those of 0 - operand, CF set unless it was 0),
//! as the interpreter computes them.

use dynasmrt::{dynasm, DynasmApi};
use hindsight_cpu::block::Op;
use hindsight_cpu::flags::STATUS;
use iced_x86::{Mnemonic, OpKind};

use crate::inline::{merge_flags, reg};
use crate::translate::{gpr, Emitter};

/// Emits `op` if it is NOT r or NEG r.
pub(crate) fn emit(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    let neg = match insn.mnemonic() {
        Mnemonic::Not => false,
        Mnemonic::Neg => true,
        _ => return false,
    };
    if insn.op0_kind() != OpKind::Register {
        return false;
    }
    let Some((d, size)) = reg(insn.op0_register()) else {
        return false;
    };
    // In place at the operand size; a 32-bit write zero-extends.
    let at = gpr(d);
    match (neg, size) {
        (false, 1) => dynasm!(e.a ; .arch x64 ; not BYTE [rbp + at]),
        (false, 2) => dynasm!(e.a ; .arch x64 ; not WORD [rbp + at]),
        (false, 8) => dynasm!(e.a ; .arch x64 ; not QWORD [rbp + at]),
        (false, _) => dynasm!(e.a
            ; .arch x64
            ; mov eax, [rbp + at]
            ; not eax
            ; mov [rbp + at], rax
        ),
        (true, 1) => dynasm!(e.a ; .arch x64 ; neg BYTE [rbp + at]),
        (true, 2) => dynasm!(e.a ; .arch x64 ; neg WORD [rbp + at]),
        (true, 8) => dynasm!(e.a ; .arch x64 ; neg QWORD [rbp + at]),
        (true, _) => dynasm!(e.a
            ; .arch x64
            ; mov eax, [rbp + at]
            ; neg eax
            ; mov [rbp + at], rax
        ),
    }
    if neg {
        dynasm!(e.a
            ; .arch x64
            ; pushfq
            ; pop rdx
        );
        merge_flags(e, STATUS, STATUS);
    }
    true
}
