//! Conditions on the guest's flags: SETcc r8 (low-byte registers) and
//! CMOVcc r, r inline, CMOVcc r, m and SETcc m8 through the inline TLB
//! fast path (where `mem` has one), and the guest-to-host flags sequence
//! the conditional branches share.
//!
//! None of them writes a flag. A 32-bit CMOVcc zero-extends its
//! destination whether or not it moves, as the interpreter does; the
//! memory source of CMOVcc is read (and may fault) either way.

use dynasmrt::x64::Rq;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi};
use hindsight_cpu::block::Op;
use hindsight_cpu::flags::{CF, OF, PF, SF, ZF};
use hindsight_cpu::tlb::Access;
use iced_x86::{ConditionCode, Mnemonic, OpKind};

use crate::inline::reg;
use crate::mem;
use crate::translate::{gpr, Emitter};

/// Loads the guest's status flags into the host's without POPFQ (slow):
/// OF by an 8-bit add that overflows exactly when the guest's OF (bit 11,
/// moved to bit 7) is set, then SF, ZF, AF, PF and CF by SAHF.
/// Clobbers RAX and RDX.
pub(crate) fn guest_flags(e: &mut Emitter) {
    dynasm!(e.a
        ; .arch x64
        ; mov eax, r13d
        ; mov edx, eax
        ; shr eax, 4
        ; and eax, 0x80
        ; add al, -128
        ; mov ah, dl
        ; sahf
    );
}

/// A condition that holds iff any of the flags `mask` is set (`true`) or
/// none is (`false`), if it is one: testable on R13 directly.
fn flag_test(cc: ConditionCode) -> Option<(i32, bool)> {
    use ConditionCode as C;
    let (mask, set) = match cc {
        C::o => (OF, true),
        C::no => (OF, false),
        C::b => (CF, true),
        C::ae => (CF, false),
        C::e => (ZF, true),
        C::ne => (ZF, false),
        C::be => (CF | ZF, true),
        C::a => (CF | ZF, false),
        C::s => (SF, true),
        C::ns => (SF, false),
        C::p => (PF, true),
        C::np => (PF, false),
        _ => return None,
    };
    Some((mask as i32, set))
}

/// Jumps to `to` if `cc` holds on the guest's flags (in R13): conditions
/// on one flag, or CF|ZF, test R13 directly; the others load the host's
/// flags with [`guest_flags`] (clobbering RAX and RDX).
pub(crate) fn guest_jcc(e: &mut Emitter, cc: ConditionCode, to: DynamicLabel) {
    let Some((mask, set)) = flag_test(cc) else {
        guest_flags(e);
        jcc(e, cc, to);
        return;
    };
    if set {
        dynasm!(e.a
            ; .arch x64
            ; test r13d, mask
            ; jnz =>to
        );
    } else {
        dynasm!(e.a
            ; .arch x64
            ; test r13d, mask
            ; jz =>to
        );
    }
}

/// Jumps to `to` if `cc` holds on the host's flags (`None`: always).
pub(crate) fn jcc(e: &mut Emitter, cc: ConditionCode, to: DynamicLabel) {
    match cc {
        ConditionCode::o => dynasm!(e.a ; .arch x64 ; jo =>to),
        ConditionCode::no => dynasm!(e.a ; .arch x64 ; jno =>to),
        ConditionCode::b => dynasm!(e.a ; .arch x64 ; jb =>to),
        ConditionCode::ae => dynasm!(e.a ; .arch x64 ; jae =>to),
        ConditionCode::e => dynasm!(e.a ; .arch x64 ; je =>to),
        ConditionCode::ne => dynasm!(e.a ; .arch x64 ; jne =>to),
        ConditionCode::be => dynasm!(e.a ; .arch x64 ; jbe =>to),
        ConditionCode::a => dynasm!(e.a ; .arch x64 ; ja =>to),
        ConditionCode::s => dynasm!(e.a ; .arch x64 ; js =>to),
        ConditionCode::ns => dynasm!(e.a ; .arch x64 ; jns =>to),
        ConditionCode::p => dynasm!(e.a ; .arch x64 ; jp =>to),
        ConditionCode::np => dynasm!(e.a ; .arch x64 ; jnp =>to),
        ConditionCode::l => dynasm!(e.a ; .arch x64 ; jl =>to),
        ConditionCode::ge => dynasm!(e.a ; .arch x64 ; jge =>to),
        ConditionCode::le => dynasm!(e.a ; .arch x64 ; jle =>to),
        ConditionCode::g => dynasm!(e.a ; .arch x64 ; jg =>to),
        ConditionCode::None => dynasm!(e.a ; .arch x64 ; jmp =>to),
    }
}

/// The low byte of host register `reg` = 1 if `cc` holds on the guest's
/// flags (in R13), else 0 (clobbers RAX and RDX).
pub(crate) fn guest_set_cc(e: &mut Emitter, cc: ConditionCode, reg: Rq) {
    if let Some((mask, set)) = flag_test(cc) {
        dynasm!(e.a
            ; .arch x64
            ; test r13d, mask
        );
        if set {
            dynasm!(e.a ; .arch x64 ; setnz Rb(reg));
        } else {
            dynasm!(e.a ; .arch x64 ; setz Rb(reg));
        }
        return;
    }
    guest_flags(e);
    set_cc(e, cc, reg);
}

/// The low byte of host register `reg` = 1 if `cc` holds on the host
/// flags, else 0 (SETcc leaves the flags alone); `None` always holds.
pub(crate) fn set_cc(e: &mut Emitter, cc: ConditionCode, reg: Rq) {
    use ConditionCode as C;
    match cc {
        C::o => dynasm!(e.a ; .arch x64 ; seto Rb(reg)),
        C::no => dynasm!(e.a ; .arch x64 ; setno Rb(reg)),
        C::b => dynasm!(e.a ; .arch x64 ; setb Rb(reg)),
        C::ae => dynasm!(e.a ; .arch x64 ; setae Rb(reg)),
        C::e => dynasm!(e.a ; .arch x64 ; sete Rb(reg)),
        C::ne => dynasm!(e.a ; .arch x64 ; setne Rb(reg)),
        C::be => dynasm!(e.a ; .arch x64 ; setbe Rb(reg)),
        C::a => dynasm!(e.a ; .arch x64 ; seta Rb(reg)),
        C::s => dynasm!(e.a ; .arch x64 ; sets Rb(reg)),
        C::ns => dynasm!(e.a ; .arch x64 ; setns Rb(reg)),
        C::p => dynasm!(e.a ; .arch x64 ; setp Rb(reg)),
        C::np => dynasm!(e.a ; .arch x64 ; setnp Rb(reg)),
        C::l => dynasm!(e.a ; .arch x64 ; setl Rb(reg)),
        C::ge => dynasm!(e.a ; .arch x64 ; setge Rb(reg)),
        C::le => dynasm!(e.a ; .arch x64 ; setle Rb(reg)),
        C::g => dynasm!(e.a ; .arch x64 ; setg Rb(reg)),
        C::None => dynasm!(e.a ; .arch x64 ; mov Rb(reg), 1),
    }
}

/// Whether `m` is one of the SETcc mnemonics.
fn is_setcc(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Seto | Setno
            | Setb
            | Setae
            | Sete
            | Setne
            | Setbe
            | Seta
            | Sets
            | Setns
            | Setp
            | Setnp
            | Setl
            | Setge
            | Setle
            | Setg
    )
}

/// Whether `m` is one of the CMOVcc mnemonics.
fn is_cmovcc(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Cmovo
            | Cmovno
            | Cmovb
            | Cmovae
            | Cmove
            | Cmovne
            | Cmovbe
            | Cmova
            | Cmovs
            | Cmovns
            | Cmovp
            | Cmovnp
            | Cmovl
            | Cmovge
            | Cmovle
            | Cmovg
    )
}

/// Emits `op` if it is a SETcc or CMOVcc form this module handles.
pub(crate) fn emit(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    let m = insn.mnemonic();
    let cc = insn.condition_code();
    if cc == ConditionCode::None {
        return false;
    }
    if is_setcc(m) {
        return match insn.op0_kind() {
            OpKind::Register => setcc_reg(e, op, cc),
            OpKind::Memory => setcc_mem(e, op, cc),
            _ => false,
        };
    }
    if is_cmovcc(m) && insn.op0_kind() == OpKind::Register {
        return match insn.op1_kind() {
            OpKind::Register => cmov_reg(e, op, cc),
            OpKind::Memory => cmov_mem(e, op, cc),
            _ => false,
        };
    }
    false
}

/// SETcc r8.
fn setcc_reg(e: &mut Emitter, op: &Op, cc: ConditionCode) -> bool {
    let Some((d, 1)) = reg(op.insn.op0_register()) else {
        return false;
    };
    guest_set_cc(e, cc, Rq::RCX);
    dynasm!(e.a
        ; .arch x64
        ; mov [rbp + gpr(d)], cl
    );
    true
}

/// SETcc m8 (a byte store through the fast path).
fn setcc_mem(e: &mut Emitter, op: &Op, cc: ConditionCode) -> bool {
    let insn = &op.insn;
    if !mem::fast(e) || !mem::addressable(insn) {
        return false;
    }
    let miss = mem::begin(e, insn, 1, &[Access::Write]);
    // The lookup left the host address in RDI, which `guest_set_cc` keeps.
    guest_set_cc(e, cc, Rq::RCX);
    dynasm!(e.a
        ; .arch x64
        ; mov [rdi], cl
    );
    mem::finish(e, op, miss)
}

/// The CMOVcc destination: guest register index and size (16, 32 or 64-bit).
fn cmov_dest(op: &Op) -> Option<(usize, u8)> {
    let (d, size) = reg(op.insn.op0_register())?;
    (size >= 2).then_some((d, size))
}

/// RAX = the guest register `d`, replaced by RCX if `cc` holds, written
/// back at `size` (a 32-bit write zero-extends either way). Clobbers RDX.
fn cmov_rcx(e: &mut Emitter, cc: ConditionCode, d: usize, size: u8) {
    dynasm!(e.a
        ; .arch x64
        ; mov rsi, rcx
    );
    guest_set_cc(e, cc, Rq::RCX);
    dynasm!(e.a
        ; .arch x64
        ; mov rax, [rbp + gpr(d)]
        ; test cl, cl
        ; cmovnz rax, rsi
    );
    crate::shift::store_rax(e, d, size);
}

/// CMOVcc r, r.
fn cmov_reg(e: &mut Emitter, op: &Op, cc: ConditionCode) -> bool {
    let Some((d, size)) = cmov_dest(op) else {
        return false;
    };
    let Some((s, ssize)) = reg(op.insn.op1_register()) else {
        return false;
    };
    if ssize != size {
        return false;
    }
    dynasm!(e.a
        ; .arch x64
        ; mov rcx, [rbp + gpr(s)]
    );
    cmov_rcx(e, cc, d, size);
    true
}

/// CMOVcc r, m: the source is loaded through the fast path first.
fn cmov_mem(e: &mut Emitter, op: &Op, cc: ConditionCode) -> bool {
    let insn = &op.insn;
    let Some((d, size)) = cmov_dest(op) else {
        return false;
    };
    if !mem::fast(e) || mem::mem_size(insn) != Some(size) || !mem::addressable(insn) {
        return false;
    }
    let miss = mem::begin(e, insn, size, &[Access::Read]);
    mem::load_rcx(e, size, false);
    cmov_rcx(e, cc, d, size);
    mem::finish(e, op, miss)
}
