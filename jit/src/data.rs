//! Register data moves that call no handler: MOVZX/MOVSX/MOVSXD r, r
//! (widening forms; the memory forms are in `mem`), BSWAP r32/r64 and
//! XCHG r, r (XCHG with memory is locked: the handler does it). None
//! writes a flag; register writes follow the x86 merge rules (8/16-bit
//! writes merge, 32-bit writes zero-extend).

use dynasmrt::{dynasm, DynasmApi};
use hindsight_cpu::block::Op;
use iced_x86::{Mnemonic, OpKind};

use crate::inline::reg;
use crate::mem::write_reg_rcx;
use crate::translate::{gpr, Emitter};

/// Emits `op` if it is one of the forms this module handles.
pub(crate) fn emit(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    match insn.mnemonic() {
        Mnemonic::Movzx => extend(e, op, false),
        Mnemonic::Movsx | Mnemonic::Movsxd => extend(e, op, true),
        Mnemonic::Bswap => bswap(e, op),
        Mnemonic::Xchg => xchg(e, op),
        _ => false,
    }
}

/// Both operands as inline registers: (index, size) each.
fn two_regs(op: &Op) -> Option<((usize, u8), (usize, u8))> {
    let insn = &op.insn;
    if insn.op0_kind() != OpKind::Register || insn.op1_kind() != OpKind::Register {
        return None;
    }
    Some((reg(insn.op0_register())?, reg(insn.op1_register())?))
}

/// MOVZX/MOVSX/MOVSXD r, r with a narrower source (the same-size MOVSXD
/// forms, plain moves, take the handler).
fn extend(e: &mut Emitter, op: &Op, sign: bool) -> bool {
    let Some(((d, dsize), (s, ssize))) = two_regs(op) else {
        return false;
    };
    if ssize >= dsize {
        return false;
    }
    let at = gpr(s);
    match (ssize, sign) {
        (1, false) => dynasm!(e.a ; .arch x64 ; movzx ecx, BYTE [rbp + at]),
        (2, false) => dynasm!(e.a ; .arch x64 ; movzx ecx, WORD [rbp + at]),
        (1, true) => dynasm!(e.a ; .arch x64 ; movsx rcx, BYTE [rbp + at]),
        (2, true) => dynasm!(e.a ; .arch x64 ; movsx rcx, WORD [rbp + at]),
        (_, true) => dynasm!(e.a ; .arch x64 ; movsxd rcx, DWORD [rbp + at]),
        // MOVZX has no 32-bit source.
        _ => return false,
    }
    write_reg_rcx(e, d, dsize);
    true
}

/// BSWAP r32/r64 (the 16-bit form, undefined, takes the handler).
fn bswap(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    if insn.op0_kind() != OpKind::Register {
        return false;
    }
    match reg(insn.op0_register()) {
        Some((d, 4)) => dynasm!(e.a
            ; .arch x64
            ; mov eax, [rbp + gpr(d)]
            ; bswap eax
            ; mov [rbp + gpr(d)], rax
        ),
        Some((d, 8)) => dynasm!(e.a
            ; .arch x64
            ; mov rax, [rbp + gpr(d)]
            ; bswap rax
            ; mov [rbp + gpr(d)], rax
        ),
        _ => return false,
    }
    true
}

/// XCHG r, r: the second register gets the first's value, then the first
/// the second's (the interpreter's order: XCHG of a 32-bit register with
/// itself zero-extends it).
fn xchg(e: &mut Emitter, op: &Op) -> bool {
    let Some(((a, size), (b, bsize))) = two_regs(op) else {
        return false;
    };
    if size != bsize {
        return false;
    }
    dynasm!(e.a
        ; .arch x64
        ; mov rdx, [rbp + gpr(b)]
        ; mov rcx, [rbp + gpr(a)]
    );
    write_reg_rcx(e, b, size);
    dynasm!(e.a
        ; .arch x64
        ; mov rcx, rdx
    );
    write_reg_rcx(e, a, size);
    true
}
