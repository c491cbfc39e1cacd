//! Instructions translated to host code instead of a handler call: register
//! MOV, ADD/ADC/SUB/SBB/CMP/AND/OR/XOR/TEST with register or immediate sources,
//! INC/DEC, LEA and NOP in any mode; conditional and direct near jumps that
//! end a 64-bit block.
//!
//! None of them can fault or touch memory, so none needs the precise-state
//! machinery: they update the guest registers in `Cpu` directly. RFLAGS is
//! exact: the host executes the same operation at the same size and its
//! status flags are merged into the guest's (AF, undefined after logic
//! operations, is cleared as the interpreter does). High-byte registers
//! (AH..BH), LOCK prefixes and every other form fall back to the handler.
//!
//! `emit` also dispatches to the other groups: shifts and rotates
//! (`shift`), IMUL (`muldiv`), CMOVcc/SETcc (`cond`), MOVZX/MOVSX/BSWAP/
//! XCHG (`data`), NOT/NEG (`unary`), SSE integer instructions (`sse`) and
//! memory operands (`mem`).

use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi};
use hindsight_cpu::block::Op;
use hindsight_cpu::flags::{AF, CF, OF, PF, SF, STATUS, ZF};
use hindsight_cpu::memory::is_canonical;
use iced_x86::{ConditionCode, Mnemonic, OpKind, Register};

use crate::chain;
use crate::translate::{gpr, Emitter};

/// Whether (and how) an instruction was inlined.
pub(crate) enum Inlined {
    /// Not inlined: call its handler.
    No,
    /// Inlined; the block goes on.
    Yes,
    /// Inlined and it ended the block (RIP and the count are stored).
    Ends,
}

/// A guest general-purpose register usable inline: its index in `gpr` and
/// size in bytes (high-byte registers are not).
pub(crate) fn reg(r: Register) -> Option<(usize, u8)> {
    if !r.is_gpr() || (Register::AH..=Register::BH).contains(&r) {
        return None;
    }
    Some((r.full_register().number(), r.size() as u8))
}

/// Whether an operand of kind `k` is an immediate (not a far branch's).
pub(crate) fn is_immediate(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    )
}

/// A source operand.
#[derive(Clone, Copy)]
enum Src {
    Reg(usize),
    Imm(u64),
}

/// The second operand of `op` as a source of `size` bytes.
fn src(op: &Op, size: u8) -> Option<Src> {
    let insn = &op.insn;
    match insn.op1_kind() {
        OpKind::Register => {
            let (n, s) = reg(insn.op1_register())?;
            (s == size).then_some(Src::Reg(n))
        }
        k if is_immediate(k) => Some(Src::Imm(insn.immediate(1))),
        _ => None,
    }
}

/// Emits `op` inline if it is one of the forms this module handles.
pub(crate) fn emit(e: &mut Emitter, op: &Op, last: bool) -> Inlined {
    let insn = &op.insn;
    if insn.has_lock_prefix() {
        // The vCPUs run one at a time on one host thread, so a locked
        // read-modify-write is atomic as it is; the forms LOCK allows
        // (memory destination) take the memory path, every other (#UD)
        // the handler.
        let lockable = matches!(
            insn.mnemonic(),
            Mnemonic::Add
                | Mnemonic::Adc
                | Mnemonic::Sub
                | Mnemonic::Sbb
                | Mnemonic::And
                | Mnemonic::Or
                | Mnemonic::Xor
                | Mnemonic::Inc
                | Mnemonic::Dec
                | Mnemonic::Not
                | Mnemonic::Neg
        ) && insn.op0_kind() == OpKind::Memory;
        if !lockable || !crate::mem::emit(e, op) {
            return Inlined::No;
        }
        return retired(e, op);
    }
    let done = match insn.mnemonic() {
        Mnemonic::Nop => true,
        Mnemonic::Mov => mov(e, op),
        Mnemonic::Add => alu(e, op, Alu::Add),
        Mnemonic::Adc => alu(e, op, Alu::Adc),
        Mnemonic::Sub => alu(e, op, Alu::Sub),
        Mnemonic::Sbb => alu(e, op, Alu::Sbb),
        Mnemonic::Cmp => alu(e, op, Alu::Cmp),
        Mnemonic::And => alu(e, op, Alu::And),
        Mnemonic::Or => alu(e, op, Alu::Or),
        Mnemonic::Xor => alu(e, op, Alu::Xor),
        Mnemonic::Test => alu(e, op, Alu::Test),
        Mnemonic::Inc => incdec(e, op, false),
        Mnemonic::Dec => incdec(e, op, true),
        Mnemonic::Lea => lea(e, op),
        Mnemonic::Jmp if last && insn.op0_kind() == OpKind::Register => {
            return crate::calls::jmp_reg(e, op)
        }
        Mnemonic::Jmp if last => return branch(e, op, None),
        Mnemonic::Call if last && insn.op0_kind() == OpKind::Register => {
            return crate::calls::call_reg(e, op)
        }
        Mnemonic::Call if last => return crate::calls::call(e, op),
        Mnemonic::Ret if last => return crate::calls::ret(e, op),
        _ if last && insn.is_jcc_short_or_near() => {
            return branch(e, op, Some(insn.condition_code()))
        }
        _ => false,
    };
    let done = done
        || crate::shift::emit(e, op)
        || crate::muldiv::emit(e, op)
        || crate::cond::emit(e, op)
        || crate::data::emit(e, op)
        || crate::unary::emit(e, op)
        || crate::sse::emit(e, op)
        || (insn.mnemonic() != Mnemonic::Lea && crate::mem::emit(e, op));
    if !done {
        return Inlined::No;
    }
    retired(e, op)
}

/// Counts an inlined instruction that did not end the block.
fn retired(e: &mut Emitter, op: &Op) -> Inlined {
    e.pending += 1;
    e.rip_due = Some(op.insn.next_ip() & e.ip_mask);
    Inlined::Yes
}

/// MOV r, r and MOV r, imm (8-bit low, 16, 32 and 64-bit registers; the
/// x86 merge rules come from doing the move on the host at the same size).
fn mov(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    if insn.op0_kind() != OpKind::Register {
        return false;
    }
    let Some((d, size)) = reg(insn.op0_register()) else {
        return false;
    };
    let Some(s) = src(op, size) else {
        return false;
    };
    load_src(e, s);
    if size == 8 {
        dynasm!(e.a
            ; .arch x64
            ; mov [rbp + gpr(d)], rcx
        );
        return true;
    }
    dynasm!(e.a
        ; .arch x64
        ; mov rax, [rbp + gpr(d)]
    );
    match size {
        1 => dynasm!(e.a ; .arch x64 ; mov al, cl),
        2 => dynasm!(e.a ; .arch x64 ; mov ax, cx),
        _ => dynasm!(e.a ; .arch x64 ; mov eax, ecx),
    }
    dynasm!(e.a
        ; .arch x64
        ; mov [rbp + gpr(d)], rax
    );
    true
}

/// Loads a source operand into RCX.
fn load_src(e: &mut Emitter, s: Src) {
    match s {
        Src::Reg(n) => dynasm!(e.a
            ; .arch x64
            ; mov rcx, [rbp + gpr(n)]
        ),
        Src::Imm(v) => dynasm!(e.a
            ; .arch x64
            ; mov rcx, QWORD v as i64
        ),
    }
}

/// The two-operand arithmetic and logic operations inlined.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alu {
    Add,
    /// ADD with carry in: the guest's CF.
    Adc,
    Sub,
    /// SUB with borrow in: the guest's CF.
    Sbb,
    Cmp,
    And,
    Or,
    Xor,
    Test,
}

/// `op0 = op0 OP op1` on registers/immediates, with the host's flags.
fn alu(e: &mut Emitter, op: &Op, kind: Alu) -> bool {
    let insn = &op.insn;
    if insn.op0_kind() != OpKind::Register {
        return false;
    }
    let Some((d, size)) = reg(insn.op0_register()) else {
        return false;
    };
    let Some(s) = src(op, size) else {
        return false;
    };
    dynasm!(e.a
        ; .arch x64
        ; mov rax, [rbp + gpr(d)]
    );
    load_src(e, s);
    alu_op(e, kind, size);
    if !matches!(kind, Alu::Cmp | Alu::Test) {
        dynasm!(e.a
            ; .arch x64
            ; mov [rbp + gpr(d)], rax
        );
    }
    alu_flags(e, kind);
    true
}

/// `rax = rax OP rcx` at `size` bytes, then the host flags into RDX.
pub(crate) fn alu_op(e: &mut Emitter, kind: Alu, size: u8) {
    if matches!(kind, Alu::Adc | Alu::Sbb) {
        // The carry in is the guest's CF (bit 0 of RFLAGS, in R13).
        dynasm!(e.a
            ; .arch x64
            ; bt r13d, 0
        );
    }
    macro_rules! sized {
        ($op:ident) => {
            match size {
                1 => dynasm!(e.a ; .arch x64 ; $op al, cl),
                2 => dynasm!(e.a ; .arch x64 ; $op ax, cx),
                4 => dynasm!(e.a ; .arch x64 ; $op eax, ecx),
                _ => dynasm!(e.a ; .arch x64 ; $op rax, rcx),
            }
        };
    }
    match kind {
        Alu::Add => sized!(add),
        Alu::Adc => sized!(adc),
        Alu::Sub => sized!(sub),
        Alu::Sbb => sized!(sbb),
        Alu::Cmp => sized!(cmp),
        Alu::And => sized!(and),
        Alu::Or => sized!(or),
        Alu::Xor => sized!(xor),
        Alu::Test => sized!(test),
    }
    save_flags(e, STATUS);
}

/// Merges the flags an ALU operation leaves in RDX into RFLAGS.
pub(crate) fn alu_flags(e: &mut Emitter, kind: Alu) {
    let logic = matches!(kind, Alu::And | Alu::Or | Alu::Xor | Alu::Test);
    merge_flags(e, STATUS, if logic { STATUS & !AF } else { STATUS });
}

/// INC/DEC r: CF is kept.
fn incdec(e: &mut Emitter, op: &Op, dec: bool) -> bool {
    let insn = &op.insn;
    if insn.op0_kind() != OpKind::Register {
        return false;
    }
    let Some((d, size)) = reg(insn.op0_register()) else {
        return false;
    };
    dynasm!(e.a
        ; .arch x64
        ; mov rax, [rbp + gpr(d)]
    );
    match (dec, size) {
        (false, 1) => dynasm!(e.a ; .arch x64 ; inc al),
        (false, 2) => dynasm!(e.a ; .arch x64 ; inc ax),
        (false, 4) => dynasm!(e.a ; .arch x64 ; inc eax),
        (false, _) => dynasm!(e.a ; .arch x64 ; inc rax),
        (true, 1) => dynasm!(e.a ; .arch x64 ; dec al),
        (true, 2) => dynasm!(e.a ; .arch x64 ; dec ax),
        (true, 4) => dynasm!(e.a ; .arch x64 ; dec eax),
        (true, _) => dynasm!(e.a ; .arch x64 ; dec rax),
    }
    save_flags(e, STATUS & !CF);
    dynasm!(e.a
        ; .arch x64
        ; mov [rbp + gpr(d)], rax
    );
    merge_flags(e, STATUS & !CF, STATUS & !CF);
    true
}

/// Whether an instruction writing the status flags `clear` must store
/// any of them: some are live after it (see [`crate::liveness`]).
pub(crate) fn flags_needed(e: &Emitter, clear: u64) -> bool {
    clear & e.live != 0
}

/// Status flags a Jcc condition reads.
fn cc_flags(cc: ConditionCode) -> u64 {
    use ConditionCode as C;
    match cc {
        C::o | C::no => OF,
        C::b | C::ae => CF,
        C::e | C::ne => ZF,
        C::be | C::a => CF | ZF,
        C::s | C::ns => SF,
        C::p | C::np => PF,
        C::l | C::ge => SF | OF,
        C::le | C::g => ZF | SF | OF,
        C::None => STATUS,
    }
}

/// Called right after a host instruction whose status flags `exact` equal
/// the guest's: when the block's final Jcc comes next and its condition
/// reads only those flags, evaluates it into R9B (SETcc leaves the flags
/// alone) for the Jcc to test instead of reloading RFLAGS.
pub(crate) fn fuse_point(e: &mut Emitter, exact: u64) {
    let Some(cc) = e.fuse else {
        return;
    };
    if cc == ConditionCode::None || cc_flags(cc) & !exact != 0 {
        return;
    }
    crate::cond::set_cc(e, cc, dynasmrt::x64::Rq::R9);
    e.fused = true;
}

/// The host flags into RDX (PUSHFQ), unless none of `clear` is needed;
/// `clear` are also the flags the host computed as the guest does (AF
/// aside, which no condition reads), so this is a fusion point.
pub(crate) fn save_flags(e: &mut Emitter, clear: u64) {
    fuse_point(e, clear & !AF);
    if flags_needed(e, clear) {
        dynasm!(e.a
            ; .arch x64
            ; pushfq
            ; pop rdx
        );
    }
}

/// RFLAGS (R13) = (RFLAGS & !clear) | (host flags in RDX & take), for the live
/// flags only (dead ones keep their stale value: a later instruction
/// overwrites them before anything reads them); nothing when none is.
pub(crate) fn merge_flags(e: &mut Emitter, clear: u64, take: u64) {
    let clear = clear & e.live;
    if clear == 0 {
        return;
    }
    let keep = !clear as i32;
    let take = (take & clear) as i32;
    dynasm!(e.a
        ; .arch x64
        ; and r13, keep
        ; and edx, take
        ; or r13, rdx
    );
}

/// LEA r32/r64, [base + index*scale + disp] with 64- or 32-bit addresses
/// (RIP-relative included: iced gives the absolute address).
fn lea(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    if insn.op0_kind() != OpKind::Register || insn.op1_kind() != OpKind::Memory {
        return false;
    }
    let Some((d, size)) = reg(insn.op0_register()) else {
        return false;
    };
    if size < 4 {
        return false;
    }
    let base = insn.memory_base();
    let index = insn.memory_index();
    let addr32 = match (base, index) {
        (Register::RIP, _) => false,
        (Register::EIP, _) => true,
        (b, _) if b != Register::None => b.size() == 4,
        (_, i) if i != Register::None => i.size() == 4,
        _ => return false,
    };
    if (base != Register::None && !matches!(base, Register::RIP | Register::EIP))
        && reg(base).is_none_or(|(_, s)| s < 4)
    {
        return false;
    }
    if index != Register::None && reg(index).is_none_or(|(_, s)| s < 4) {
        return false;
    }
    let disp = insn.memory_displacement64();
    dynasm!(e.a
        ; .arch x64
        ; mov rax, QWORD disp as i64
    );
    if base != Register::None && !matches!(base, Register::RIP | Register::EIP) {
        let (b, _) = reg(base).unwrap_or((0, 8));
        dynasm!(e.a
            ; .arch x64
            ; add rax, [rbp + gpr(b)]
        );
    }
    if index != Register::None {
        let (i, _) = reg(index).unwrap_or((0, 8));
        let shift = insn.memory_index_scale().trailing_zeros() as i8;
        dynasm!(e.a
            ; .arch x64
            ; mov rcx, [rbp + gpr(i)]
            ; shl rcx, shift
            ; add rax, rcx
        );
    }
    if addr32 || size == 4 {
        dynasm!(e.a
            ; .arch x64
            ; mov eax, eax
        );
    }
    dynasm!(e.a
        ; .arch x64
        ; mov [rbp + gpr(d)], rax
    );
    true
}

/// A near JMP rel or Jcc rel ending a 64-bit block: counts the block's
/// instructions, sets RIP to the target or the next instruction, leaves.
fn branch(e: &mut Emitter, op: &Op, cc: Option<ConditionCode>) -> Inlined {
    let insn = &op.insn;
    let target = insn.near_branch_target();
    if !e.long || insn.op0_kind() != OpKind::NearBranch64 || !is_canonical(target) {
        return Inlined::No;
    }
    e.flush_count(1);
    e.rip_due = None;
    let exit = e.exit;
    let Some(cc) = cc else {
        chain::emit(e, target, true);
        dynasm!(e.a
            ; .arch x64
            ; jmp =>exit
        );
        return Inlined::Ends;
    };
    let taken = e.a.new_dynamic_label();
    if e.fused {
        // The previous instruction evaluated the condition on its host
        // flags (and stored its flags in RFLAGS, exact at the exit).
        dynasm!(e.a
            ; .arch x64
            ; test r9b, r9b
            ; jnz =>taken
        );
        return branch_exits(e, insn.next_ip(), target, taken);
    }
    crate::cond::guest_jcc(e, cc, taken);
    branch_exits(e, insn.next_ip(), target, taken)
}

/// The two exits of a Jcc: falls through to `next`, `taken` to `target`.
fn branch_exits(e: &mut Emitter, next: u64, target: u64, taken: DynamicLabel) -> Inlined {
    let exit = e.exit;
    chain::emit(e, next, true);
    dynasm!(e.a
        ; .arch x64
        ; jmp =>exit
        ; =>taken
    );
    chain::emit(e, target, true);
    dynasm!(e.a
        ; .arch x64
        ; jmp =>exit
    );
    Inlined::Ends
}
