//! SHL/SAL, SHR, SAR, ROL and ROR of a register (not AH..BH) by an
//! immediate or by CL, inlined with the interpreter's flags
//! (`hindsight_cpu::interp::shift`):
//! - shifts: SF, ZF, PF of the result, CF the last bit shifted out (0 past
//!   the width of an 8/16-bit operand, the sign for SAR), AF cleared, and OF
//!   by the interpreter's rule for every count (the single-bit formula on the
//!   original operand: SHL MSB xor MSB-1, SHR MSB, SAR 0), computed here
//!   rather than taken from the host, whose OF is undefined past count 1;
//! - rotates: CF from the result (ROL its LSB, ROR its MSB), OF by the
//!   single-bit formula on the original operand (ROL MSB xor MSB-1, ROR LSB
//!   xor MSB) except for an immediate count other than 1, which keeps it;
//!   the other flags are kept.
//!
//! A masked count of zero changes no flag but still writes a 32-bit
//! destination (zero-extending it): by CL that is a run-time branch around
//! the flag merge; by an immediate (rare) the handler does it, as it does
//! 8/16-bit shifts by an immediate at least the width.

use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi};
use hindsight_cpu::block::Op;
use hindsight_cpu::flags::{AF, CF, OF, PF, SF, STATUS, ZF};
use iced_x86::{Mnemonic, OpKind, Register};

use crate::inline::{flags_needed, fuse_point, merge_flags, reg};
use crate::translate::{gpr, Emitter};

/// The shift and rotate kinds inlined.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Shl,
    Shr,
    Sar,
    Rol,
    Ror,
}

impl Kind {
    fn rotate(self) -> bool {
        matches!(self, Kind::Rol | Kind::Ror)
    }
}

/// Emits `op` if it is a shift or rotate this module handles.
pub(crate) fn emit(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    let kind = match insn.mnemonic() {
        Mnemonic::Shl | Mnemonic::Sal => Kind::Shl,
        Mnemonic::Shr => Kind::Shr,
        Mnemonic::Sar => Kind::Sar,
        Mnemonic::Rol => Kind::Rol,
        Mnemonic::Ror => Kind::Ror,
        _ => return false,
    };
    if insn.op0_kind() != OpKind::Register {
        return false;
    }
    let Some((d, size)) = reg(insn.op0_register()) else {
        return false;
    };
    match insn.op1_kind() {
        OpKind::Immediate8 => by_imm(e, kind, d, size, insn.immediate8()),
        OpKind::Register if insn.op1_register() == Register::CL => {
            by_cl(e, kind, d, size);
            true
        }
        _ => false,
    }
}

/// The count mask of an operand of `size` bytes.
fn count_mask(size: u8) -> u32 {
    if size == 8 {
        63
    } else {
        31
    }
}

/// Index of the sign bit of an operand of `size` bytes.
fn msb(size: u8) -> i8 {
    (u32::from(size) * 8 - 1) as i8
}

/// Writes RAX to guest register `d` as a `size`-byte register write (a
/// 32-bit write zero-extends).
pub(crate) fn store_rax(e: &mut Emitter, d: usize, size: u8) {
    match size {
        1 => dynasm!(e.a ; .arch x64 ; mov [rbp + gpr(d)], al),
        2 => dynasm!(e.a ; .arch x64 ; mov [rbp + gpr(d)], ax),
        4 => dynasm!(e.a
            ; .arch x64
            ; mov eax, eax
            ; mov [rbp + gpr(d)], rax
        ),
        _ => dynasm!(e.a ; .arch x64 ; mov [rbp + gpr(d)], rax),
    }
}

/// ORs into EDX, at bit 11, the single-bit OF of `kind` applied to the
/// original operand in RDI (SAR: 0). Clobbers RAX.
fn or_of(e: &mut Emitter, kind: Kind, size: u8) {
    let msb = msb(size);
    match kind {
        // MSB xor MSB-1.
        Kind::Shl | Kind::Rol => dynasm!(e.a
            ; .arch x64
            ; mov rax, rdi
            ; shr rax, 1
            ; xor rax, rdi
            ; shr rax, msb - 1
        ),
        Kind::Shr => dynasm!(e.a
            ; .arch x64
            ; mov rax, rdi
            ; shr rax, msb
        ),
        // LSB xor MSB.
        Kind::Ror => dynasm!(e.a
            ; .arch x64
            ; mov rax, rdi
            ; shr rax, msb
            ; xor eax, edi
        ),
        Kind::Sar => return,
    }
    dynasm!(e.a
        ; .arch x64
        ; and eax, 1
        ; shl eax, 11
        ; or edx, eax
    );
}

/// A shift or rotate by a non-zero immediate count (masked as the CPU
/// does); 8/16-bit shifts by the width or more take the handler.
fn by_imm(e: &mut Emitter, kind: Kind, d: usize, size: u8, imm: u8) -> bool {
    let bits = u32::from(size) * 8;
    let c = u32::from(imm) & count_mask(size);
    if c == 0 || (!kind.rotate() && c >= bits) {
        return false;
    }
    dynasm!(e.a
        ; .arch x64
        ; mov rax, [rbp + gpr(d)]
    );
    if kind.rotate() || c != 1 {
        // The original operand, for the OF formula.
        dynasm!(e.a
            ; .arch x64
            ; mov rdi, rax
        );
    }
    if kind.rotate() {
        // Rotate by the count modulo the width (a full turn is no move).
        let t = (c % bits) as i8;
        if t != 0 {
            emit_op(e, kind, size, Some(t));
        }
        store_rax(e, d, size);
        rotate_flags(e, kind, size, c == 1);
        return true;
    }
    emit_op(e, kind, size, Some(c as i8));
    // The host's CF, SF, ZF and PF are the interpreter's; so is its OF for
    // a count of 1 (undefined past it).
    let of = if c == 1 { OF } else { 0 };
    fuse_point(e, CF | SF | ZF | PF | of);
    if !flags_needed(e, STATUS) {
        store_rax(e, d, size);
        return true;
    }
    dynasm!(e.a
        ; .arch x64
        ; pushfq
        ; pop rdx
    );
    if c != 1 {
        let not_of = !(OF as i32);
        dynasm!(e.a
            ; .arch x64
            ; and edx, not_of
        );
    }
    store_rax(e, d, size);
    if c != 1 {
        or_of(e, kind, size);
    }
    merge_flags(e, STATUS, STATUS & !AF);
    true
}

/// `kind` of RAX at `size` by the immediate `c` or (None) by CL.
fn emit_op(e: &mut Emitter, kind: Kind, size: u8, c: Option<i8>) {
    macro_rules! sized {
        ($op:ident) => {
            match (size, c) {
                (1, Some(c)) => dynasm!(e.a ; .arch x64 ; $op al, c),
                (2, Some(c)) => dynasm!(e.a ; .arch x64 ; $op ax, c),
                (4, Some(c)) => dynasm!(e.a ; .arch x64 ; $op eax, c),
                (_, Some(c)) => dynasm!(e.a ; .arch x64 ; $op rax, c),
                (1, None) => dynasm!(e.a ; .arch x64 ; $op al, cl),
                (2, None) => dynasm!(e.a ; .arch x64 ; $op ax, cl),
                (4, None) => dynasm!(e.a ; .arch x64 ; $op eax, cl),
                (_, None) => dynasm!(e.a ; .arch x64 ; $op rax, cl),
            }
        };
    }
    match kind {
        Kind::Shl => sized!(shl),
        Kind::Shr => sized!(shr),
        Kind::Sar => sized!(sar),
        Kind::Rol => sized!(rol),
        Kind::Ror => sized!(ror),
    }
}

/// Merges a rotate's CF (from the result in RAX) and, if `of`, its OF
/// (from the original operand in RDI) into RFLAGS.
fn rotate_flags(e: &mut Emitter, kind: Kind, size: u8, of: bool) {
    if !flags_needed(e, if of { CF | OF } else { CF }) {
        return;
    }
    let msb = msb(size);
    match kind {
        Kind::Rol => dynasm!(e.a
            ; .arch x64
            ; mov edx, eax
            ; and edx, 1
        ),
        _ => dynasm!(e.a
            ; .arch x64
            ; mov rdx, rax
            ; shr rdx, msb
            ; and edx, 1
        ),
    }
    let mask = if of {
        or_of(e, kind, size);
        CF | OF
    } else {
        CF
    };
    merge_flags(e, mask, mask);
}

/// A shift or rotate by CL: the count is masked at run time and a zero
/// count skips everything but the 32-bit zero extension.
fn by_cl(e: &mut Emitter, kind: Kind, d: usize, size: u8) {
    let zero = e.a.new_dynamic_label();
    let done = e.a.new_dynamic_label();
    dynasm!(e.a
        ; .arch x64
        ; mov ecx, [rbp + gpr(1)]
        ; and ecx, count_mask(size) as i32
        ; jz =>zero
        ; mov rax, [rbp + gpr(d)]
        ; mov rdi, rax
    );
    if kind.rotate() {
        // The host rotates by the count modulo the width, as the interpreter.
        emit_op(e, kind, size, None);
        store_rax(e, d, size);
        rotate_flags(e, kind, size, true);
    } else {
        shift_cl(e, kind, d, size);
    }
    dynasm!(e.a
        ; .arch x64
        ; jmp =>done
        ; =>zero
    );
    if size == 4 {
        dynasm!(e.a
            ; .arch x64
            ; mov eax, [rbp + gpr(d)]
            ; mov [rbp + gpr(d)], rax
        );
    }
    dynasm!(e.a
        ; .arch x64
        ; =>done
    );
}

/// SHL/SHR/SAR of RAX (the original also in RDI) by CL (1..=63) at
/// `size`, done at 64 bits on the operand zero- or (SAR) sign-extended so
/// that counts up to 31 on an 8/16-bit operand give the interpreter's
/// result and CF; SF, ZF and PF then come from a TEST at `size`.
fn shift_cl(e: &mut Emitter, kind: Kind, d: usize, size: u8) {
    let sar = kind == Kind::Sar;
    match (size, sar) {
        (1, false) => dynasm!(e.a ; .arch x64 ; movzx eax, al),
        (2, false) => dynasm!(e.a ; .arch x64 ; movzx eax, ax),
        (4, false) => dynasm!(e.a ; .arch x64 ; mov eax, eax),
        (1, true) => dynasm!(e.a ; .arch x64 ; movsx rax, al),
        (2, true) => dynasm!(e.a ; .arch x64 ; movsx rax, ax),
        (4, true) => dynasm!(e.a ; .arch x64 ; movsxd rax, eax),
        _ => {}
    }
    emit_op(e, kind, 8, None);
    if kind == Kind::Shl && size < 8 {
        // The last bit out of a narrow SHL is bit `width` of the wide result.
        let bits = (size * 8) as i8;
        dynasm!(e.a
            ; .arch x64
            ; mov r8, rax
            ; shr r8, bits
            ; and r8d, 1
        );
    } else {
        dynasm!(e.a
            ; .arch x64
            ; setc r8b
            ; movzx r8d, r8b
        );
    }
    match size {
        1 => dynasm!(e.a ; .arch x64 ; test al, al),
        2 => dynasm!(e.a ; .arch x64 ; test ax, ax),
        4 => dynasm!(e.a ; .arch x64 ; test eax, eax),
        _ => dynasm!(e.a ; .arch x64 ; test rax, rax),
    }
    let szp = (SF | ZF | PF) as i32;
    dynasm!(e.a
        ; .arch x64
        ; pushfq
        ; pop rdx
        ; and edx, szp
        ; or edx, r8d
    );
    store_rax(e, d, size);
    or_of(e, kind, size);
    merge_flags(e, STATUS, STATUS & !AF);
}
