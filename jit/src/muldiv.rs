//! Two- and three-operand IMUL (16, 32 and 64-bit) inlined with the
//! interpreter's flags (`hindsight_cpu::interp::muldiv`): CF = OF = the
//! product does not fit the destination (the host's, defined), SF and PF
//! from the truncated product, ZF and AF cleared (undefined on hardware;
//! the interpreter's choice). A register source runs in any mode; a memory
//! source goes through the inline TLB fast path (where `mem` has one).

use dynasmrt::{dynasm, DynasmApi};
use hindsight_cpu::block::Op;
use hindsight_cpu::flags::{CF, OF, PF, SF, STATUS};
use hindsight_cpu::tlb::Access;
use iced_x86::{Mnemonic, OpKind};

use crate::inline::{merge_flags, reg};
use crate::mem;
use crate::translate::{gpr, Emitter};

/// Where the factor that is not the destination's comes from.
enum Factor {
    /// Two-operand form: the destination times this.
    Dest,
    /// Three-operand form: the source times this immediate.
    Imm(u64),
}

/// Emits `op` if it is an IMUL form this module handles.
pub(crate) fn emit(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    if insn.mnemonic() != Mnemonic::Imul || insn.op0_kind() != OpKind::Register {
        return false;
    }
    let factor = match insn.op_count() {
        2 => Factor::Dest,
        3 => Factor::Imm(insn.immediate(2)),
        _ => return false,
    };
    let Some((d, size)) = reg(insn.op0_register()) else {
        return false;
    };
    if size < 2 {
        return false;
    }
    match insn.op1_kind() {
        OpKind::Register => {
            let Some((s, ssize)) = reg(insn.op1_register()) else {
                return false;
            };
            if ssize != size {
                return false;
            }
            dynasm!(e.a
                ; .arch x64
                ; mov rcx, [rbp + gpr(s)]
            );
            multiply(e, d, size, &factor);
            true
        }
        OpKind::Memory => {
            if !mem::fast(e) || mem::mem_size(insn) != Some(size) || !mem::addressable(insn) {
                return false;
            }
            let miss = mem::begin(e, insn, size, &[Access::Read]);
            mem::load_rcx(e, size, false);
            multiply(e, d, size, &factor);
            mem::finish(e, op, miss)
        }
        _ => false,
    }
}

/// Guest register `d` = RCX (the r/m operand) times the other factor, at
/// `size`, and the flags.
fn multiply(e: &mut Emitter, d: usize, size: u8, factor: &Factor) {
    match *factor {
        Factor::Dest => dynasm!(e.a
            ; .arch x64
            ; mov rax, [rbp + gpr(d)]
        ),
        Factor::Imm(v) => dynasm!(e.a
            ; .arch x64
            ; mov rax, QWORD v as i64
        ),
    }
    // The product, OF (= CF) into DL, then SF and PF from a TEST of it.
    match size {
        2 => dynasm!(e.a
            ; .arch x64
            ; imul ax, cx
            ; seto dl
            ; test ax, ax
            ; mov [rbp + gpr(d)], ax
        ),
        4 => dynasm!(e.a
            ; .arch x64
            ; imul eax, ecx
            ; seto dl
            ; test eax, eax
            ; mov [rbp + gpr(d)], rax
        ),
        _ => dynasm!(e.a
            ; .arch x64
            ; imul rax, rcx
            ; seto dl
            ; test rax, rax
            ; mov [rbp + gpr(d)], rax
        ),
    }
    let sf_pf = (SF | PF) as i32;
    let cf_of = (CF | OF) as i32;
    dynasm!(e.a
        ; .arch x64
        ; pushfq
        ; pop rcx
        ; and ecx, sf_pf
        ; movzx edx, dl
        ; imul edx, edx, cf_of
        ; or edx, ecx
    );
    merge_flags(e, STATUS, STATUS);
}
