//! SSE integer instructions inline (legacy encodings, no LOCK/REP prefix):
//!
//! - register-register PADD/PSUB (B/W/D/Q, signed and unsigned saturating),
//!   PAND/PANDN/POR/PXOR (and ANDPS/ANDNPS/ORPS/XORPS/PD, the same on
//!   bits), PCMPEQ/PCMPGT B/W/D, PMINUB/PMAXUB/PMINSW/PMAXSW, the unpacks
//!   (UNPCKLPS/PD, UNPCKHPS/PD too), PSHUFD, PSHUFB (when the host has
//!   SSSE3) and MOVDQA/MOVDQU/MOVAPS/MOVUPS/MOVAPD/MOVUPD xmm, xmm: the
//!   guest registers are loaded from `Cpu::xmm` into host XMM0/XMM1
//!   (unaligned loads: `Cpu::xmm` need not be 16-byte aligned), the host
//!   runs the same instruction and the result goes back;
//! - the shifts by an immediate (PSLL/PSRL/PSRA W/D/Q, PSLLDQ/PSRLDQ);
//! - MOVD/MOVQ between an XMM register and a general register or memory
//!   (MOVQ xmm, xmm/m64 and MOVQ xmm/m64, xmm too), loads zero-extended to
//!   128 bits; memory through [`crate::mem`]'s TLB fast path.
//!
//! CR0 and CR4 change without retranslation, so each instruction checks at
//! run time that SSE is plainly available (CR0.EM and CR0.TS clear,
//! CR4.OSFXSR set) and otherwise calls its handler, which raises #UD or #NM
//! exactly; so do memory accesses the fast path cannot make (see
//! [`crate::mem::finish`]). None of these instructions writes RFLAGS.

use std::mem::offset_of;

use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi};
use hindsight_cpu::block::Op;
use hindsight_cpu::state::cr;
use hindsight_cpu::tlb::Access;
use hindsight_cpu::Cpu;
use iced_x86::{Code, Instruction, OpKind, Register};

use crate::inline::reg;
use crate::mem::{addressable, begin, fast, finish, load_rcx, mem_size, write_reg_rcx};
use crate::translate::{gpr, Emitter};

/// `Cpu::xmm`, `Cpu::cr0` and `Cpu::cr4` offsets.
const XMM: i32 = offset_of!(Cpu, xmm) as i32;
const CR0: i32 = offset_of!(Cpu, cr0) as i32;
const CR4: i32 = offset_of!(Cpu, cr4) as i32;

/// Offset of guest register XMM`n` in `Cpu`.
fn xmm(n: usize) -> i32 {
    XMM + 16 * n as i32
}

/// The index of an XMM register operand (legacy encodings reach XMM0..15).
fn xreg(r: Register) -> Option<usize> {
    (Register::XMM0..=Register::XMM15)
        .contains(&r)
        .then(|| r as usize - Register::XMM0 as usize)
}

/// The guest XMM registers of a register-to-register form's two
/// operands.
fn xmm_pair(insn: &Instruction) -> Option<(usize, usize)> {
    Some((xreg(insn.op0_register())?, xreg(insn.op1_register())?))
}

/// Whether the host runs SSSE3 (PSHUFB).
fn ssse3() -> bool {
    std::arch::is_x86_feature_detected!("ssse3")
}

/// Emits `op` inline if it is one of the forms this module handles.
pub(crate) fn emit(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    if insn.has_lock_prefix() || insn.has_rep_prefix() || insn.has_repne_prefix() {
        return false;
    }
    let code = insn.code();
    let k0 = insn.op0_kind();
    let k1 = insn.op1_kind();
    if binary(e, code, false) {
        return k1 == OpKind::Register && reg_reg(e, op, code);
    }
    use Code::*;
    match code {
        Psllw_xmm_imm8 | Pslld_xmm_imm8 | Psllq_xmm_imm8 | Psrlw_xmm_imm8 | Psrld_xmm_imm8
        | Psrlq_xmm_imm8 | Psraw_xmm_imm8 | Psrad_xmm_imm8 | Pslldq_xmm_imm8 | Psrldq_xmm_imm8 => {
            shift_imm(e, op)
        }
        Pshufd_xmm_xmmm128_imm8 if k1 == OpKind::Register => pshufd(e, op),
        Movaps_xmm_xmmm128 | Movapd_xmm_xmmm128 | Movdqa_xmm_xmmm128 | Movups_xmm_xmmm128
        | Movupd_xmm_xmmm128 | Movdqu_xmm_xmmm128 | Movaps_xmmm128_xmm | Movapd_xmmm128_xmm
        | Movdqa_xmmm128_xmm | Movups_xmmm128_xmm | Movupd_xmmm128_xmm | Movdqu_xmmm128_xmm
            if k0 == OpKind::Register && k1 == OpKind::Register =>
        {
            mov_xmm(e, op)
        }
        Movd_xmm_rm32 | Movq_xmm_rm64 | Movq_xmm_xmmm64 => to_xmm(e, op),
        Movd_rm32_xmm | Movq_rm64_xmm | Movq_xmmm64_xmm => from_xmm(e, op),
        _ => false,
    }
}

/// Jumps to `miss` unless SSE is plainly available: CR0.EM and CR0.TS
/// clear, CR4.OSFXSR set (the handler then raises #UD or #NM). Keeps RDI.
fn check(e: &mut Emitter, miss: DynamicLabel) {
    dynasm!(e.a
        ; .arch x64
        ; test DWORD [rbp + CR0], (cr::CR0_EM | cr::CR0_TS) as i32
        ; jnz =>miss
        ; test DWORD [rbp + CR4], cr::CR4_OSFXSR as i32
        ; jz =>miss
    );
}

/// A register form: the SSE check, `body`, and the handler as the slow
/// path.
fn guarded(e: &mut Emitter, op: &Op, body: impl FnOnce(&mut Emitter)) -> bool {
    let miss = e.a.new_dynamic_label();
    check(e, miss);
    body(e);
    finish(e, op, miss)
}

/// Emits `OP xmm0, xmm1` for a register-register form (when `go`);
/// whether `code` is one.
fn binary(e: &mut Emitter, code: Code, go: bool) -> bool {
    macro_rules! ops {
        ($($($c:ident)|+ => $op:ident,)*) => {
            match code {
                $($(Code::$c)|+ => {
                    if go {
                        dynasm!(e.a ; .arch x64 ; $op xmm0, xmm1);
                    }
                    true
                })*
                Code::Pshufb_xmm_xmmm128 if ssse3() => {
                    if go {
                        dynasm!(e.a ; .arch x64 ; pshufb xmm0, xmm1);
                    }
                    true
                }
                _ => false,
            }
        };
    }
    ops! {
        Paddb_xmm_xmmm128 => paddb,
        Paddw_xmm_xmmm128 => paddw,
        Paddd_xmm_xmmm128 => paddd,
        Paddq_xmm_xmmm128 => paddq,
        Psubb_xmm_xmmm128 => psubb,
        Psubw_xmm_xmmm128 => psubw,
        Psubd_xmm_xmmm128 => psubd,
        Psubq_xmm_xmmm128 => psubq,
        Paddsb_xmm_xmmm128 => paddsb,
        Paddsw_xmm_xmmm128 => paddsw,
        Psubsb_xmm_xmmm128 => psubsb,
        Psubsw_xmm_xmmm128 => psubsw,
        Paddusb_xmm_xmmm128 => paddusb,
        Paddusw_xmm_xmmm128 => paddusw,
        Psubusb_xmm_xmmm128 => psubusb,
        Psubusw_xmm_xmmm128 => psubusw,
        Pand_xmm_xmmm128 | Andps_xmm_xmmm128 | Andpd_xmm_xmmm128 => pand,
        Pandn_xmm_xmmm128 | Andnps_xmm_xmmm128 | Andnpd_xmm_xmmm128 => pandn,
        Por_xmm_xmmm128 | Orps_xmm_xmmm128 | Orpd_xmm_xmmm128 => por,
        Pxor_xmm_xmmm128 | Xorps_xmm_xmmm128 | Xorpd_xmm_xmmm128 => pxor,
        Pcmpeqb_xmm_xmmm128 => pcmpeqb,
        Pcmpeqw_xmm_xmmm128 => pcmpeqw,
        Pcmpeqd_xmm_xmmm128 => pcmpeqd,
        Pcmpgtb_xmm_xmmm128 => pcmpgtb,
        Pcmpgtw_xmm_xmmm128 => pcmpgtw,
        Pcmpgtd_xmm_xmmm128 => pcmpgtd,
        Pminub_xmm_xmmm128 => pminub,
        Pmaxub_xmm_xmmm128 => pmaxub,
        Pminsw_xmm_xmmm128 => pminsw,
        Pmaxsw_xmm_xmmm128 => pmaxsw,
        Punpcklbw_xmm_xmmm128 => punpcklbw,
        Punpcklwd_xmm_xmmm128 => punpcklwd,
        Punpckldq_xmm_xmmm128 | Unpcklps_xmm_xmmm128 => punpckldq,
        Punpcklqdq_xmm_xmmm128 | Unpcklpd_xmm_xmmm128 => punpcklqdq,
        Punpckhbw_xmm_xmmm128 => punpckhbw,
        Punpckhwd_xmm_xmmm128 => punpckhwd,
        Punpckhdq_xmm_xmmm128 | Unpckhps_xmm_xmmm128 => punpckhdq,
        Punpckhqdq_xmm_xmmm128 | Unpckhpd_xmm_xmmm128 => punpckhqdq,
    }
}

/// `OP xmm, xmm`: the destination and source into host XMM0 and XMM1,
/// the host's instruction, the result back.
fn reg_reg(e: &mut Emitter, op: &Op, code: Code) -> bool {
    let insn = &op.insn;
    let Some((d, s)) = xmm_pair(insn) else {
        return false;
    };
    guarded(e, op, |e| {
        dynasm!(e.a
            ; .arch x64
            ; movdqu xmm0, [rbp + xmm(d)]
            ; movdqu xmm1, [rbp + xmm(s)]
        );
        binary(e, code, true);
        dynasm!(e.a
            ; .arch x64
            ; movdqu [rbp + xmm(d)], xmm0
        );
    })
}

/// The shifts of an XMM register by an immediate.
fn shift_imm(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    let Some(d) = xreg(insn.op0_register()) else {
        return false;
    };
    let imm = insn.immediate8() as i8;
    guarded(e, op, |e| {
        dynasm!(e.a
            ; .arch x64
            ; movdqu xmm0, [rbp + xmm(d)]
        );
        match insn.code() {
            Code::Psllw_xmm_imm8 => dynasm!(e.a ; .arch x64 ; psllw xmm0, imm),
            Code::Pslld_xmm_imm8 => dynasm!(e.a ; .arch x64 ; pslld xmm0, imm),
            Code::Psllq_xmm_imm8 => dynasm!(e.a ; .arch x64 ; psllq xmm0, imm),
            Code::Psrlw_xmm_imm8 => dynasm!(e.a ; .arch x64 ; psrlw xmm0, imm),
            Code::Psrld_xmm_imm8 => dynasm!(e.a ; .arch x64 ; psrld xmm0, imm),
            Code::Psrlq_xmm_imm8 => dynasm!(e.a ; .arch x64 ; psrlq xmm0, imm),
            Code::Psraw_xmm_imm8 => dynasm!(e.a ; .arch x64 ; psraw xmm0, imm),
            Code::Psrad_xmm_imm8 => dynasm!(e.a ; .arch x64 ; psrad xmm0, imm),
            Code::Pslldq_xmm_imm8 => dynasm!(e.a ; .arch x64 ; pslldq xmm0, imm),
            _ => dynasm!(e.a ; .arch x64 ; psrldq xmm0, imm),
        }
        dynasm!(e.a
            ; .arch x64
            ; movdqu [rbp + xmm(d)], xmm0
        );
    })
}

/// PSHUFD xmm, xmm, imm8.
fn pshufd(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    let Some((d, s)) = xmm_pair(insn) else {
        return false;
    };
    let imm = insn.immediate8() as i8;
    guarded(e, op, |e| {
        dynasm!(e.a
            ; .arch x64
            ; movdqu xmm1, [rbp + xmm(s)]
            ; pshufd xmm0, xmm1, imm
            ; movdqu [rbp + xmm(d)], xmm0
        );
    })
}

/// MOVDQA/MOVDQU/MOVAPS/MOVUPS/MOVAPD/MOVUPD xmm, xmm (either encoding).
fn mov_xmm(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    let Some((d, s)) = xmm_pair(insn) else {
        return false;
    };
    guarded(e, op, |e| {
        dynasm!(e.a
            ; .arch x64
            ; movdqu xmm0, [rbp + xmm(s)]
            ; movdqu [rbp + xmm(d)], xmm0
        );
    })
}

/// Writes RCX to XMM`d`, zero-extended to 128 bits.
fn write_xmm_rcx(e: &mut Emitter, d: usize) {
    dynasm!(e.a
        ; .arch x64
        ; mov [rbp + xmm(d)], rcx
        ; mov QWORD [rbp + xmm(d) + 8], 0
    );
}

/// Starts the memory form of a MOVD/MOVQ (4 or 8 bytes) making `access`:
/// the TLB lookup, then the SSE check (it may follow the lookup: both only
/// lead to the handler, which checks SSE before the memory operand).
/// Returns the miss label and the size, or `None` when the operand cannot
/// take the fast path.
fn mem_begin(e: &mut Emitter, insn: &Instruction, access: Access) -> Option<(DynamicLabel, u8)> {
    let size = match mem_size(insn) {
        Some(s @ (4 | 8)) => s,
        _ => return None,
    };
    if !fast(e) || !addressable(insn) {
        return None;
    }
    let miss = begin(e, insn, size, &[access]);
    check(e, miss);
    Some((miss, size))
}

/// MOVD xmm, r/m32, MOVQ xmm, r/m64 and MOVQ xmm, xmm/m64: the source
/// zero-extended to 128 bits.
fn to_xmm(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    let Some(d) = xreg(insn.op0_register()) else {
        return false;
    };
    match insn.op1_kind() {
        OpKind::Register => {
            let r = insn.op1_register();
            // The source: an XMM register's low quadword or a 32/64-bit
            // general register.
            let (src, size) = match (xreg(r), reg(r)) {
                (Some(s), _) => (xmm(s), 8),
                (None, Some((n, size @ (4 | 8)))) => (gpr(n), size),
                _ => return false,
            };
            guarded(e, op, |e| {
                if size == 4 {
                    dynasm!(e.a ; .arch x64 ; mov ecx, [rbp + src]);
                } else {
                    dynasm!(e.a ; .arch x64 ; mov rcx, [rbp + src]);
                }
                write_xmm_rcx(e, d);
            })
        }
        OpKind::Memory => {
            let Some((miss, size)) = mem_begin(e, insn, Access::Read) else {
                return false;
            };
            load_rcx(e, size, false);
            write_xmm_rcx(e, d);
            finish(e, op, miss)
        }
        _ => false,
    }
}

/// MOVD r/m32, xmm, MOVQ r/m64, xmm and MOVQ xmm/m64, xmm (an XMM
/// destination is zero-extended).
fn from_xmm(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    let Some(s) = xreg(insn.op1_register()) else {
        return false;
    };
    match insn.op0_kind() {
        OpKind::Register => {
            let r = insn.op0_register();
            let (dx, dg) = (xreg(r), reg(r));
            if dx.is_none() && !matches!(dg, Some((_, 4 | 8))) {
                return false;
            }
            guarded(e, op, |e| {
                dynasm!(e.a ; .arch x64 ; mov rcx, [rbp + xmm(s)]);
                match (dx, dg) {
                    (Some(d), _) => write_xmm_rcx(e, d),
                    (None, Some((n, size))) => write_reg_rcx(e, n, size),
                    _ => {}
                }
            })
        }
        OpKind::Memory => {
            let Some((miss, size)) = mem_begin(e, insn, Access::Write) else {
                return false;
            };
            dynasm!(e.a ; .arch x64 ; mov rcx, [rbp + xmm(s)]);
            if size == 4 {
                dynasm!(e.a ; .arch x64 ; mov [rdi], ecx);
            } else {
                dynasm!(e.a ; .arch x64 ; mov [rdi], rcx);
            }
            finish(e, op, miss)
        }
        _ => false,
    }
}
