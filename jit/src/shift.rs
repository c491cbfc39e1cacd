//! SHL/SAL, SHR and SAR of a register by an immediate count, inlined with
//! the interpreter's flags: SF, ZF, PF and CF from the host (architectural
//! for a masked count below the operand width; other counts, and a zero
//! count that changes no flags, take the handler), AF cleared, and OF by
//! the interpreter's rule for every count (the single-bit formula on the
//! original operand: SHL MSB xor MSB-1, SHR MSB, SAR 0), computed here
//! rather than taken from the host, whose OF is undefined past count 1.

use dynasmrt::{dynasm, DynasmApi};
use hindsight_cpu::block::Op;
use hindsight_cpu::flags::{AF, CF, OF, PF, SF, STATUS, ZF};
use iced_x86::{Mnemonic, OpKind};

use crate::inline::{flags_needed, fuse_point, merge_flags, reg};
use crate::translate::{gpr, Emitter};

/// The shift kinds inlined.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Shl,
    Shr,
    Sar,
}

/// Emits `op` if it is a shift this module handles.
pub(crate) fn emit(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    let kind = match insn.mnemonic() {
        Mnemonic::Shl | Mnemonic::Sal => Kind::Shl,
        Mnemonic::Shr => Kind::Shr,
        Mnemonic::Sar => Kind::Sar,
        _ => return false,
    };
    if insn.op0_kind() != OpKind::Register || insn.op1_kind() != OpKind::Immediate8 {
        return false;
    }
    let Some((d, size)) = reg(insn.op0_register()) else {
        return false;
    };
    let bits = u32::from(size) * 8;
    let c = u32::from(insn.immediate8()) & if size == 8 { 63 } else { 31 };
    if c == 0 || c >= bits {
        return false;
    }
    let c = c as i8;
    dynasm!(e.a
        ; .arch x64
        ; mov rax, [rbp + gpr(d)]
        ; mov rcx, rax
    );
    macro_rules! sized {
        ($op:ident) => {
            match size {
                1 => dynasm!(e.a ; .arch x64 ; $op al, c),
                2 => dynasm!(e.a ; .arch x64 ; $op ax, c),
                4 => dynasm!(e.a ; .arch x64 ; $op eax, c),
                _ => dynasm!(e.a ; .arch x64 ; $op rax, c),
            }
        };
    }
    match kind {
        Kind::Shl => sized!(shl),
        Kind::Shr => sized!(shr),
        Kind::Sar => sized!(sar),
    }
    // The host's OF differs from the interpreter's past count 1.
    fuse_point(e, SF | ZF | PF | CF);
    dynasm!(e.a
        ; .arch x64
        ; mov [rbp + gpr(d)], rax
    );
    if !flags_needed(e, STATUS) {
        return true;
    }
    let not_of = !(OF as i32);
    dynasm!(e.a
        ; .arch x64
        ; pushfq
        ; pop rdx
        ; and edx, not_of
    );
    // OF into bit 11 of RDX from the original operand in RCX.
    let msb = (bits - 1) as i8;
    match kind {
        Kind::Shl => dynasm!(e.a
            ; .arch x64
            ; mov rax, rcx
            ; shr rax, 1
            ; xor rax, rcx
            ; shr rax, msb - 1
            ; and eax, 1
            ; shl eax, 11
            ; or edx, eax
        ),
        Kind::Shr => dynasm!(e.a
            ; .arch x64
            ; shr rcx, msb
            ; and ecx, 1
            ; shl ecx, 11
            ; or edx, ecx
        ),
        Kind::Sar => {}
    }
    merge_flags(e, STATUS, STATUS & !AF);
    true
}
