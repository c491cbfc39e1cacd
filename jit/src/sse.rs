//! The SSE integer instructions Linux runs most, inlined: MOVD/MOVQ between
//! an XMM register and a general register or memory, register-to-register
//! XMM moves, and the packed integer operations (add, subtract, logic,
//! compare for equality, unpack, shuffle, shifts by an immediate) on
//! XMM registers, each done by the same host instruction on the guest's
//! `Cpu::xmm` values.
//!
//! CR0 and CR4 change without retranslation, so each instruction checks at
//! run time that SSE is plainly available (CR0.EM and CR0.TS clear,
//! CR4.OSFXSR set) and otherwise calls its handler, which raises #UD or
//! #NM exactly as the interpreter does. Memory operands take the inline
//! TLB path of [`crate::mem`], with the handler as the slow path. None of
//! these instructions reads or writes RFLAGS; legacy encodings only (VEX
//! forms go to their handlers).

use std::mem::offset_of;

use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi};
use hindsight_cpu::block::Op;
use hindsight_cpu::state::cr::{CR0_EM, CR0_TS, CR4_OSFXSR};
use hindsight_cpu::tlb::Access;
use hindsight_cpu::Cpu;
use iced_x86::{Code, EncodingKind, OpKind, Register};

use crate::mem::{addressable, begin, fast, finish};
use crate::translate::{gpr, Emitter};

const CR0: i32 = offset_of!(Cpu, cr0) as i32;
const CR4: i32 = offset_of!(Cpu, cr4) as i32;

/// Offset of XMM register `n` in `Cpu`.
fn xmm(n: usize) -> i32 {
    (offset_of!(Cpu, xmm) + 16 * n) as i32
}

/// The XMM register number of operand `i`, if it is an XMM register.
fn xmm_operand(op: &Op, i: u32) -> Option<usize> {
    let insn = &op.insn;
    if insn.op_kind(i) != OpKind::Register {
        return None;
    }
    let r = insn.op_register(i);
    r.is_xmm().then(|| r.number())
}

/// A packed operation `xmm0 = xmm0 OP xmm1` (or from xmm1 with an
/// immediate, or of xmm0 by an immediate).
#[derive(Clone, Copy)]
enum Packed {
    /// Two XMM sources, the destination first.
    Binary(Code),
    /// PSHUFD: the source and an immediate.
    Shuffle,
    /// A shift of the destination by an immediate.
    ShiftImm(Code),
}

/// The inlined packed operation of `code`, if any (PSHUFB only when the
/// host has SSSE3).
fn packed(code: Code) -> Option<Packed> {
    use Code::*;
    Some(match code {
        Paddb_xmm_xmmm128
        | Paddw_xmm_xmmm128
        | Paddd_xmm_xmmm128
        | Paddq_xmm_xmmm128
        | Psubb_xmm_xmmm128
        | Psubw_xmm_xmmm128
        | Psubd_xmm_xmmm128
        | Psubq_xmm_xmmm128
        | Pand_xmm_xmmm128
        | Pandn_xmm_xmmm128
        | Por_xmm_xmmm128
        | Pxor_xmm_xmmm128
        | Pcmpeqb_xmm_xmmm128
        | Pcmpeqw_xmm_xmmm128
        | Pcmpeqd_xmm_xmmm128
        | Punpcklbw_xmm_xmmm128
        | Punpcklwd_xmm_xmmm128
        | Punpckldq_xmm_xmmm128
        | Punpcklqdq_xmm_xmmm128
        | Punpckhbw_xmm_xmmm128
        | Punpckhwd_xmm_xmmm128
        | Punpckhdq_xmm_xmmm128
        | Punpckhqdq_xmm_xmmm128 => Packed::Binary(code),
        Pshufb_xmm_xmmm128 if std::arch::is_x86_feature_detected!("ssse3") => Packed::Binary(code),
        Pshufd_xmm_xmmm128_imm8 => Packed::Shuffle,
        Psrlw_xmm_imm8 | Psrld_xmm_imm8 | Psrlq_xmm_imm8 | Psraw_xmm_imm8 | Psrad_xmm_imm8
        | Psllw_xmm_imm8 | Pslld_xmm_imm8 | Psllq_xmm_imm8 | Psrldq_xmm_imm8 | Pslldq_xmm_imm8 => {
            Packed::ShiftImm(code)
        }
        _ => return None,
    })
}

/// Emits `op` if it is one of the forms this module handles.
pub(crate) fn emit(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    if insn.encoding() != EncodingKind::Legacy || insn.has_lock_prefix() {
        return false;
    }
    match insn.code() {
        Code::Movd_xmm_rm32 | Code::Movq_xmm_rm64 | Code::Movq_xmm_xmmm64 => to_xmm(e, op),
        Code::Movd_rm32_xmm | Code::Movq_rm64_xmm | Code::Movq_xmmm64_xmm => from_xmm(e, op),
        Code::Movdqa_xmm_xmmm128
        | Code::Movdqu_xmm_xmmm128
        | Code::Movaps_xmm_xmmm128
        | Code::Movups_xmm_xmmm128
        | Code::Movdqa_xmmm128_xmm
        | Code::Movdqu_xmmm128_xmm
        | Code::Movaps_xmmm128_xmm
        | Code::Movups_xmmm128_xmm => xmm_move(e, op),
        code => match packed(code) {
            Some(p) => packed_op(e, op, p),
            None => false,
        },
    }
}

/// Jumps to `miss` unless SSE is plainly available (the handler then
/// raises what the interpreter raises). Clobbers RAX.
fn sse_check(e: &mut Emitter, miss: DynamicLabel) {
    let cr0_bad = (CR0_EM | CR0_TS) as i32;
    let cr4_ok = CR4_OSFXSR as i32;
    dynasm!(e.a
        ; .arch x64
        ; mov rax, [rbp + CR0]
        ; test eax, cr0_bad
        ; jnz =>miss
        ; mov rax, [rbp + CR4]
        ; test eax, cr4_ok
        ; jz =>miss
    );
}

/// A register form: the SSE check, `body`, and the handler as slow path.
fn register_form(e: &mut Emitter, op: &Op, body: impl FnOnce(&mut Emitter)) -> bool {
    let miss = e.a.new_dynamic_label();
    sse_check(e, miss);
    body(e);
    finish(e, op, miss)
}

/// MOVD xmm, r32/m32 and MOVQ xmm, r64/m64/xmm: the value (an XMM
/// source's low quadword) zero-extended to 128 bits.
fn to_xmm(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    let Some(d) = xmm_operand(op, 0) else {
        return false;
    };
    let wide = insn.code() != Code::Movd_xmm_rm32;
    let store = |e: &mut Emitter| {
        dynasm!(e.a
            ; .arch x64
            ; mov [rbp + xmm(d)], rax
            ; mov QWORD [rbp + xmm(d) + 8], 0
        );
    };
    if let Some(s) = xmm_operand(op, 1) {
        return register_form(e, op, |e| {
            dynasm!(e.a ; .arch x64 ; mov rax, [rbp + xmm(s)]);
            store(e);
        });
    }
    if insn.op1_kind() == OpKind::Register {
        let s = insn.op1_register().full_register().number();
        return register_form(e, op, |e| {
            match wide {
                true => dynasm!(e.a ; .arch x64 ; mov rax, [rbp + gpr(s)]),
                false => dynasm!(e.a ; .arch x64 ; mov eax, [rbp + gpr(s)]),
            }
            store(e);
        });
    }
    if !fast(e) || !addressable(insn) {
        return false;
    }
    let miss = begin(e, insn, if wide { 8 } else { 4 }, &[Access::Read]);
    sse_check(e, miss);
    match wide {
        true => dynasm!(e.a ; .arch x64 ; mov rax, [rdi]),
        false => dynasm!(e.a ; .arch x64 ; mov eax, [rdi]),
    }
    store(e);
    finish(e, op, miss)
}

/// MOVD r32/m32, xmm and MOVQ r64/m64, xmm: the low 32 or 64 bits (a
/// 32-bit register write zero-extends; MOVQ to an XMM register is
/// [`to_xmm`]'s).
fn from_xmm(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    let Some(s) = xmm_operand(op, 1) else {
        return false;
    };
    if xmm_operand(op, 0).is_some() {
        return to_xmm(e, op);
    }
    let wide = insn.code() != Code::Movd_rm32_xmm;
    let load = |e: &mut Emitter| match wide {
        true => dynasm!(e.a ; .arch x64 ; mov rcx, [rbp + xmm(s)]),
        false => dynasm!(e.a ; .arch x64 ; mov ecx, [rbp + xmm(s)]),
    };
    if insn.op0_kind() == OpKind::Register {
        let r: Register = insn.op0_register();
        let d = r.full_register().number();
        return register_form(e, op, |e| {
            load(e);
            dynasm!(e.a ; .arch x64 ; mov [rbp + gpr(d)], rcx);
        });
    }
    if !fast(e) || !addressable(insn) {
        return false;
    }
    let miss = begin(e, insn, if wide { 8 } else { 4 }, &[Access::Write]);
    sse_check(e, miss);
    load(e);
    match wide {
        true => dynasm!(e.a ; .arch x64 ; mov [rdi], rcx),
        false => dynasm!(e.a ; .arch x64 ; mov [rdi], ecx),
    }
    finish(e, op, miss)
}

/// MOVDQA/MOVDQU/MOVAPS/MOVUPS between XMM registers (either direction's
/// encoding).
fn xmm_move(e: &mut Emitter, op: &Op) -> bool {
    let (Some(d), Some(s)) = (xmm_operand(op, 0), xmm_operand(op, 1)) else {
        return false;
    };
    register_form(e, op, |e| {
        dynasm!(e.a
            ; .arch x64
            ; mov rax, [rbp + xmm(s)]
            ; mov rcx, [rbp + xmm(s) + 8]
            ; mov [rbp + xmm(d)], rax
            ; mov [rbp + xmm(d) + 8], rcx
        );
    })
}

/// A packed operation on XMM registers, done by the host.
fn packed_op(e: &mut Emitter, op: &Op, p: Packed) -> bool {
    let Some(d) = xmm_operand(op, 0) else {
        return false;
    };
    let src = match p {
        Packed::ShiftImm(_) => None,
        _ => match xmm_operand(op, 1) {
            Some(s) => Some(s),
            None => return false,
        },
    };
    let imm = match p {
        Packed::Binary(_) => 0,
        _ => op.insn.immediate8() as i8,
    };
    register_form(e, op, |e| {
        dynasm!(e.a ; .arch x64 ; movdqu xmm0, [rbp + xmm(d)]);
        if let Some(s) = src {
            dynasm!(e.a ; .arch x64 ; movdqu xmm1, [rbp + xmm(s)]);
        }
        host_op(e, p, imm);
        dynasm!(e.a ; .arch x64 ; movdqu [rbp + xmm(d)], xmm0);
    })
}

/// The host instruction of `p` on XMM0 (and XMM1).
fn host_op(e: &mut Emitter, p: Packed, imm: i8) {
    use Code::*;
    match p {
        Packed::Binary(code) => match code {
            Paddb_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; paddb xmm0, xmm1),
            Paddw_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; paddw xmm0, xmm1),
            Paddd_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; paddd xmm0, xmm1),
            Paddq_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; paddq xmm0, xmm1),
            Psubb_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; psubb xmm0, xmm1),
            Psubw_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; psubw xmm0, xmm1),
            Psubd_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; psubd xmm0, xmm1),
            Psubq_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; psubq xmm0, xmm1),
            Pand_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; pand xmm0, xmm1),
            Pandn_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; pandn xmm0, xmm1),
            Por_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; por xmm0, xmm1),
            Pxor_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; pxor xmm0, xmm1),
            Pcmpeqb_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; pcmpeqb xmm0, xmm1),
            Pcmpeqw_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; pcmpeqw xmm0, xmm1),
            Pcmpeqd_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; pcmpeqd xmm0, xmm1),
            Punpcklbw_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; punpcklbw xmm0, xmm1),
            Punpcklwd_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; punpcklwd xmm0, xmm1),
            Punpckldq_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; punpckldq xmm0, xmm1),
            Punpcklqdq_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; punpcklqdq xmm0, xmm1),
            Punpckhbw_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; punpckhbw xmm0, xmm1),
            Punpckhwd_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; punpckhwd xmm0, xmm1),
            Punpckhdq_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; punpckhdq xmm0, xmm1),
            Punpckhqdq_xmm_xmmm128 => dynasm!(e.a ; .arch x64 ; punpckhqdq xmm0, xmm1),
            _ => dynasm!(e.a ; .arch x64 ; pshufb xmm0, xmm1),
        },
        Packed::Shuffle => dynasm!(e.a ; .arch x64 ; pshufd xmm0, xmm1, imm),
        Packed::ShiftImm(code) => match code {
            Psrlw_xmm_imm8 => dynasm!(e.a ; .arch x64 ; psrlw xmm0, imm),
            Psrld_xmm_imm8 => dynasm!(e.a ; .arch x64 ; psrld xmm0, imm),
            Psrlq_xmm_imm8 => dynasm!(e.a ; .arch x64 ; psrlq xmm0, imm),
            Psraw_xmm_imm8 => dynasm!(e.a ; .arch x64 ; psraw xmm0, imm),
            Psrad_xmm_imm8 => dynasm!(e.a ; .arch x64 ; psrad xmm0, imm),
            Psllw_xmm_imm8 => dynasm!(e.a ; .arch x64 ; psllw xmm0, imm),
            Pslld_xmm_imm8 => dynasm!(e.a ; .arch x64 ; pslld xmm0, imm),
            Psllq_xmm_imm8 => dynasm!(e.a ; .arch x64 ; psllq xmm0, imm),
            Psrldq_xmm_imm8 => dynasm!(e.a ; .arch x64 ; psrldq xmm0, imm),
            _ => dynasm!(e.a ; .arch x64 ; pslldq xmm0, imm),
        },
    }
}
