//! Memory operands in 64-bit code, and in 32-bit code through flat
//! segments, via an inlined TLB lookup: MOV r, m and MOV m, r/imm;
//! MOVZX/MOVSX/MOVSXD r, m; ADD/ADC/SUB/SBB/CMP/AND/OR/XOR/TEST with a
//! memory source or destination; INC/DEC/NOT/NEG m; PUSH r64/imm and POP
//! r64 (64-bit code only).
//!
//! The fast path computes the linear address as the interpreter does
//! (base + index * scale + displacement, masked to the address size, plus
//! the FS/GS base), takes it only when the access stays within one page and
//! the TLB array for the access kind at the current privilege holds that
//! page (`tag == lin & !0xfff`; a read-modify-write needs both the read and
//! the write entry, as the interpreter reads then writes), and then loads or
//! stores at the host page. A non-canonical address never matches a tag
//! (tags are canonical), so it misses too.
//!
//! In 32-bit code the segment is checked at run time (segments change
//! without retranslation): only a present, writable, expand-up data
//! segment with a 4 GiB limit takes the fast path, where no segment check
//! of the interpreter can fail; the linear address is then its base plus
//! the offset, truncated to 32 bits. Any other segment takes the handler.
//!
//! Everything else (a miss, a page crossing, MMIO, watched, code and clean
//! pages, which have no write entry) calls the instruction's interpreter
//! handler, which faults, invalidates code, notes watch hits and ends the
//! block exactly as in the interpreter. The miss path adds the pending
//! count before the call and takes it and the instruction back after, so
//! both paths join with the instruction counted as pending.

use std::mem::{offset_of, size_of};

use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi};
use hindsight_cpu::block::Op;
use hindsight_cpu::interp::operand::addr_size;
use hindsight_cpu::state::attr;
use hindsight_cpu::tlb::{Access, TlbEntry, TLB_ENTRIES, TLB_ENTRY_SIZE};
use hindsight_cpu::{Cpu, Segment};
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use crate::inline::{alu_flags, alu_op, merge_flags, reg, save_flags, Alu};
use crate::translate::{gpr, Emitter};
use hindsight_cpu::flags::{CF, STATUS};

/// Entry fields.
const TAG: i32 = offset_of!(TlbEntry, tag) as i32;
const HOST: i32 = offset_of!(TlbEntry, host) as i32;
/// Bytes per TLB array.
const SET_BYTES: i32 = (TLB_ENTRIES * TLB_ENTRY_SIZE) as i32;
/// Log2 of the entry size, scaling a slot number.
const ENTRY_SHIFT: i8 = TLB_ENTRY_SIZE.trailing_zeros() as i8;

const _: () = assert!(TLB_ENTRY_SIZE.is_power_of_two() && TLB_ENTRIES.is_power_of_two());

/// Offset in `Cpu` of the base of segment register `i`.
fn seg_base(i: usize) -> i32 {
    (offset_of!(Cpu, seg) + i * size_of::<Segment>() + offset_of!(Segment, base)) as i32
}

/// Offset in `Cpu` of the limit of segment register `i`.
fn seg_limit(i: usize) -> i32 {
    (offset_of!(Cpu, seg) + i * size_of::<Segment>() + offset_of!(Segment, limit)) as i32
}

/// Offset in `Cpu` of the attributes of segment register `i`.
fn seg_attr(i: usize) -> i32 {
    (offset_of!(Cpu, seg) + i * size_of::<Segment>() + offset_of!(Segment, attr)) as i32
}

/// The index in `Cpu::seg` of segment register `r`.
fn seg_index(r: Register) -> Option<usize> {
    Some(match r {
        Register::ES => 0,
        Register::CS => 1,
        Register::SS => 2,
        Register::DS => 3,
        Register::FS => 4,
        Register::GS => 5,
        _ => return None,
    })
}

/// Whether the block's code has the inline fast path: 64-bit code, or
/// 32-bit code (flat segments, checked at run time).
pub(crate) fn fast(e: &Emitter) -> bool {
    e.long || e.ip_mask == 0xffff_ffff
}

/// Emits `op` with the inline TLB fast path if it is one of the forms this
/// module handles (64-bit code only); false leaves it to the handler call.
pub(crate) fn emit(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    if !fast(e) {
        return false;
    }
    let k0 = insn.op0_kind();
    let k1 = insn.op_count().checked_sub(1).map(|_| insn.op1_kind());
    let form = match insn.mnemonic() {
        Mnemonic::Mov if k0 == OpKind::Register && k1 == Some(OpKind::Memory) => {
            Form::Load(Ext::None)
        }
        Mnemonic::Mov if k0 == OpKind::Memory => Form::Store,
        Mnemonic::Movzx if k1 == Some(OpKind::Memory) => Form::Load(Ext::Zero),
        Mnemonic::Movsx | Mnemonic::Movsxd if k1 == Some(OpKind::Memory) => Form::Load(Ext::Sign),
        Mnemonic::Inc | Mnemonic::Dec | Mnemonic::Not | Mnemonic::Neg if k0 == OpKind::Memory => {
            return unary(e, op)
        }
        Mnemonic::Push if e.long => return push(e, op),
        Mnemonic::Pop if e.long => return pop(e, op),
        m => match alu_kind(m) {
            Some(kind) if k0 == OpKind::Register && k1 == Some(OpKind::Memory) => Form::AluRm(kind),
            Some(kind) if k0 == OpKind::Memory => Form::AluMr(kind),
            _ => return false,
        },
    };
    match form {
        Form::Load(ext) => load(e, op, ext),
        Form::Store => store(e, op),
        Form::AluRm(kind) => alu_rm(e, op, kind),
        Form::AluMr(kind) => alu_mr(e, op, kind),
    }
}

/// The instruction forms with a memory operand.
enum Form {
    Load(Ext),
    Store,
    AluRm(Alu),
    AluMr(Alu),
}

/// How a load widens its value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ext {
    None,
    Zero,
    Sign,
}

fn alu_kind(m: Mnemonic) -> Option<Alu> {
    Some(match m {
        Mnemonic::Add => Alu::Add,
        Mnemonic::Adc => Alu::Adc,
        Mnemonic::Sub => Alu::Sub,
        Mnemonic::Sbb => Alu::Sbb,
        Mnemonic::Cmp => Alu::Cmp,
        Mnemonic::And => Alu::And,
        Mnemonic::Or => Alu::Or,
        Mnemonic::Xor => Alu::Xor,
        Mnemonic::Test => Alu::Test,
        _ => return None,
    })
}

/// Size of the memory operand, if 1, 2, 4 or 8 bytes.
pub(crate) fn mem_size(insn: &Instruction) -> Option<u8> {
    let s = insn.memory_size().size();
    matches!(s, 1 | 2 | 4 | 8).then_some(s as u8)
}

/// Whether the memory operand's address can be computed inline: 64- or
/// 32-bit address size, base and index full-width general registers (or
/// a RIP-relative base).
pub(crate) fn addressable(insn: &Instruction) -> bool {
    let asz = addr_size(insn);
    if asz != 8 && asz != 4 {
        return false;
    }
    let base = insn.memory_base();
    let index = insn.memory_index();
    let ok = |r: Register| r == Register::None || reg(r).is_some_and(|(_, s)| s == asz);
    let base_ok = matches!(base, Register::RIP | Register::EIP) || ok(base);
    base_ok && ok(index)
}

/// Linear address of the memory operand into RSI (clobbers RAX, RCX); in
/// 32-bit code a segment that is not flat jumps to `miss`.
fn linear(e: &mut Emitter, insn: &Instruction, miss: DynamicLabel) {
    let disp = insn.memory_displacement64();
    dynasm!(e.a
        ; .arch x64
        ; mov rsi, QWORD disp as i64
    );
    let base = insn.memory_base();
    if let (false, Some((b, _))) = (matches!(base, Register::RIP | Register::EIP), reg(base)) {
        dynasm!(e.a
            ; .arch x64
            ; add rsi, [rbp + gpr(b)]
        );
    }
    if let Some((i, _)) = reg(insn.memory_index()) {
        let shift = insn.memory_index_scale().trailing_zeros() as i8;
        dynasm!(e.a
            ; .arch x64
            ; mov rcx, [rbp + gpr(i)]
            ; shl rcx, shift
            ; add rsi, rcx
        );
    }
    if addr_size(insn) == 4 {
        dynasm!(e.a
            ; .arch x64
            ; mov esi, esi
        );
    }
    if !e.long {
        flat_segment(e, insn, miss);
        return;
    }
    let seg = match insn.memory_segment() {
        Register::FS => Some(4),
        Register::GS => Some(5),
        _ => None,
    };
    if let Some(s) = seg {
        dynasm!(e.a
            ; .arch x64
            ; add rsi, [rbp + seg_base(s)]
        );
    }
}

/// 32-bit code: jumps to `miss` unless the operand's segment is a present,
/// writable, expand-up data segment with a 4 GiB limit (then no access
/// within it fails the interpreter's segment checks), else adds its base
/// to the offset in RSI, truncated to 32 bits (clobbers RAX).
fn flat_segment(e: &mut Emitter, insn: &Instruction, miss: DynamicLabel) {
    let Some(s) = seg_index(insn.memory_segment()) else {
        dynasm!(e.a ; .arch x64 ; jmp =>miss);
        return;
    };
    let checked = i32::from(attr::PRESENT | attr::S | attr::CODE | attr::DC | attr::RW);
    let flat = i32::from(attr::PRESENT | attr::S | attr::RW);
    dynasm!(e.a
        ; .arch x64
        ; cmp DWORD [rbp + seg_limit(s)], -1
        ; jne =>miss
        ; movzx eax, WORD [rbp + seg_attr(s)]
        ; and eax, checked
        ; cmp eax, flat
        ; jne =>miss
        ; add rsi, [rbp + seg_base(s)]
        ; mov esi, esi
    );
}

/// The TLB lookup of an access of `size` bytes at the linear address in
/// RSI: on a hit, the host address in RDI; else a jump to `miss`. Every
/// array in `kinds` must hit (the host address is the last one's).
/// Clobbers RAX, RDX, RSI, R8; keeps RCX (`calls::call_reg` relies on it).
///
/// The tag compared is the page of the access's last byte: an access
/// crossing into the next page (or wrapping) misses, since the entry in
/// the first page's slot never holds the next page (consecutive pages
/// have consecutive slots).
pub(crate) fn tlb(e: &mut Emitter, size: u8, kinds: &[Access], miss: DynamicLabel) {
    let last = i32::from(size) - 1;
    dynasm!(e.a
        ; .arch x64
        ; mov rdx, rsi
        ; shr rdx, 12
        ; and edx, (TLB_ENTRIES - 1) as i32
        ; shl rdx, ENTRY_SHIFT
        ; add rdx, r15
        ; lea rax, [rsi + last]
        ; and rax, -4096
    );
    let mut set = 0;
    for &k in kinds {
        set = k as i32 * 2 * SET_BYTES;
        dynasm!(e.a
            ; .arch x64
            ; cmp rax, [rdx + set + TAG]
            ; jne =>miss
        );
    }
    dynasm!(e.a
        ; .arch x64
        ; mov rdi, [rdx + set + HOST]
        ; and esi, 0xfff
        ; add rdi, rsi
    );
}

/// Starts a fast path: computes the operand's address and looks it up.
/// Returns the miss label.
pub(crate) fn begin(
    e: &mut Emitter,
    insn: &Instruction,
    size: u8,
    kinds: &[Access],
) -> DynamicLabel {
    let miss = e.a.new_dynamic_label();
    linear(e, insn, miss);
    tlb(e, size, kinds, miss);
    miss
}

/// Ends a fast path: the miss path calls the handler (see the module
/// documentation) and both paths join with the instruction pending.
pub(crate) fn finish(e: &mut Emitter, op: &Op, miss: DynamicLabel) -> bool {
    e.handler_path = true;
    let done = e.a.new_dynamic_label();
    let pending = e.pending;
    dynasm!(e.a
        ; .arch x64
        ; jmp =>done
        ; =>miss
    );
    if pending > 0 {
        dynasm!(e.a
            ; .arch x64
            ; add r14, pending
        );
    }
    e.store_rip(op.insn.next_ip() & e.ip_mask);
    e.exec_op(op);
    dynasm!(e.a
        ; .arch x64
        ; sub r14, pending + 1
        ; =>done
    );
    true
}

/// Loads `size` bytes at [RDI] into RCX, zero- or sign-extended to 64 bits.
pub(crate) fn load_rcx(e: &mut Emitter, size: u8, sign: bool) {
    match (size, sign) {
        (1, false) => dynasm!(e.a ; .arch x64 ; movzx ecx, BYTE [rdi]),
        (2, false) => dynasm!(e.a ; .arch x64 ; movzx ecx, WORD [rdi]),
        (4, false) => dynasm!(e.a ; .arch x64 ; mov ecx, DWORD [rdi]),
        (1, true) => dynasm!(e.a ; .arch x64 ; movsx rcx, BYTE [rdi]),
        (2, true) => dynasm!(e.a ; .arch x64 ; movsx rcx, WORD [rdi]),
        (4, true) => dynasm!(e.a ; .arch x64 ; movsxd rcx, DWORD [rdi]),
        _ => dynasm!(e.a ; .arch x64 ; mov rcx, QWORD [rdi]),
    }
}

/// Stores the low `size` bytes of RCX at [RDI].
fn store_rcx(e: &mut Emitter, size: u8) {
    match size {
        1 => dynasm!(e.a ; .arch x64 ; mov [rdi], cl),
        2 => dynasm!(e.a ; .arch x64 ; mov [rdi], cx),
        4 => dynasm!(e.a ; .arch x64 ; mov [rdi], ecx),
        _ => dynasm!(e.a ; .arch x64 ; mov [rdi], rcx),
    }
}

/// Writes RCX to guest register `d` as a `size`-byte register write (8-
/// and 16-bit writes merge, 32-bit writes zero-extend).
pub(crate) fn write_reg_rcx(e: &mut Emitter, d: usize, size: u8) {
    match size {
        8 => dynasm!(e.a ; .arch x64 ; mov [rbp + gpr(d)], rcx),
        4 => dynasm!(e.a
            ; .arch x64
            ; mov ecx, ecx
            ; mov [rbp + gpr(d)], rcx
        ),
        2 => dynasm!(e.a ; .arch x64 ; mov [rbp + gpr(d)], cx),
        _ => dynasm!(e.a ; .arch x64 ; mov [rbp + gpr(d)], cl),
    }
}

/// MOV r, m and MOVZX/MOVSX/MOVSXD r, m (widening forms only).
fn load(e: &mut Emitter, op: &Op, ext: Ext) -> bool {
    let insn = &op.insn;
    let (Some((d, dsize)), Some(msize)) = (reg(insn.op0_register()), mem_size(insn)) else {
        return false;
    };
    let fits = match ext {
        Ext::None => msize == dsize,
        _ => msize < dsize,
    };
    if !fits || !addressable(insn) {
        return false;
    }
    let miss = begin(e, insn, msize, &[Access::Read]);
    load_rcx(e, msize, ext == Ext::Sign);
    write_reg_rcx(e, d, dsize);
    finish(e, op, miss)
}

/// MOV m, r and MOV m, imm.
fn store(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    let Some(size) = mem_size(insn) else {
        return false;
    };
    let src = match insn.op1_kind() {
        OpKind::Register => match reg(insn.op1_register()) {
            Some((n, s)) if s == size => Some(n),
            _ => return false,
        },
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => None,
        _ => return false,
    };
    if !addressable(insn) {
        return false;
    }
    let miss = begin(e, insn, size, &[Access::Write]);
    match src {
        Some(n) => dynasm!(e.a ; .arch x64 ; mov rcx, [rbp + gpr(n)]),
        None => dynasm!(e.a ; .arch x64 ; mov rcx, QWORD insn.immediate(1) as i64),
    }
    store_rcx(e, size);
    finish(e, op, miss)
}

/// ALU r, m.
fn alu_rm(e: &mut Emitter, op: &Op, kind: Alu) -> bool {
    let insn = &op.insn;
    let (Some((d, size)), Some(msize)) = (reg(insn.op0_register()), mem_size(insn)) else {
        return false;
    };
    if size != msize || !addressable(insn) {
        return false;
    }
    let miss = begin(e, insn, size, &[Access::Read]);
    load_rcx(e, size, false);
    dynasm!(e.a ; .arch x64 ; mov rax, [rbp + gpr(d)]);
    alu_op(e, kind, size);
    if !matches!(kind, Alu::Cmp | Alu::Test) {
        // A 32-bit result zero-extends (the host did it in RAX).
        dynasm!(e.a ; .arch x64 ; mov [rbp + gpr(d)], rax);
    }
    alu_flags(e, kind);
    finish(e, op, miss)
}

/// ALU m, r and ALU m, imm (CMP and TEST only read).
fn alu_mr(e: &mut Emitter, op: &Op, kind: Alu) -> bool {
    let insn = &op.insn;
    let Some(size) = mem_size(insn) else {
        return false;
    };
    let src = match insn.op1_kind() {
        OpKind::Register => match reg(insn.op1_register()) {
            Some((n, s)) if s == size => Some(n),
            _ => return false,
        },
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => None,
        _ => return false,
    };
    if !addressable(insn) {
        return false;
    }
    let read_only = matches!(kind, Alu::Cmp | Alu::Test);
    let kinds: &[Access] = if read_only {
        &[Access::Read]
    } else {
        &[Access::Read, Access::Write]
    };
    let miss = begin(e, insn, size, kinds);
    load_rcx(e, size, false);
    dynasm!(e.a ; .arch x64 ; mov rax, rcx);
    match src {
        Some(n) => dynasm!(e.a ; .arch x64 ; mov rcx, [rbp + gpr(n)]),
        None => dynasm!(e.a ; .arch x64 ; mov rcx, QWORD insn.immediate(1) as i64),
    }
    alu_op(e, kind, size);
    if !read_only {
        dynasm!(e.a ; .arch x64 ; mov rcx, rax);
        store_rcx(e, size);
    }
    alu_flags(e, kind);
    finish(e, op, miss)
}

/// INC/DEC/NOT/NEG m, done in place at the host address with the host's
/// flags (INC/DEC keep CF, NOT writes none).
fn unary(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    let Some(size) = mem_size(insn) else {
        return false;
    };
    if !addressable(insn) {
        return false;
    }
    let miss = begin(e, insn, size, &[Access::Read, Access::Write]);
    macro_rules! sized {
        ($op:ident) => {
            match size {
                1 => dynasm!(e.a ; .arch x64 ; $op BYTE [rdi]),
                2 => dynasm!(e.a ; .arch x64 ; $op WORD [rdi]),
                4 => dynasm!(e.a ; .arch x64 ; $op DWORD [rdi]),
                _ => dynasm!(e.a ; .arch x64 ; $op QWORD [rdi]),
            }
        };
    }
    let written = match insn.mnemonic() {
        Mnemonic::Inc => {
            sized!(inc);
            STATUS & !CF
        }
        Mnemonic::Dec => {
            sized!(dec);
            STATUS & !CF
        }
        Mnemonic::Neg => {
            sized!(neg);
            STATUS
        }
        _ => {
            sized!(not);
            0
        }
    };
    if written != 0 {
        save_flags(e, written);
        merge_flags(e, written, written);
    }
    finish(e, op, miss)
}

/// PUSH r64 and PUSH imm (64-bit operand size): store at RSP - 8, then
/// RSP -= 8 (PUSH RSP pushes the old value).
fn push(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    let src = match insn.code() {
        Code::Push_r64 | Code::Push_rm64 if insn.op0_kind() == OpKind::Register => {
            match reg(insn.op0_register()) {
                Some((n, 8)) => Some(n),
                _ => return false,
            }
        }
        Code::Pushq_imm32 | Code::Pushq_imm8 => None,
        _ => return false,
    };
    let stack = gpr(4);
    let miss = e.a.new_dynamic_label();
    dynasm!(e.a
        ; .arch x64
        ; mov rsi, [rbp + stack]
        ; sub rsi, 8
    );
    tlb(e, 8, &[Access::Write], miss);
    match src {
        Some(n) => dynasm!(e.a ; .arch x64 ; mov rcx, [rbp + gpr(n)]),
        None => dynasm!(e.a ; .arch x64 ; mov rcx, QWORD insn.immediate(0) as i64),
    }
    dynasm!(e.a
        ; .arch x64
        ; mov [rdi], rcx
        ; sub QWORD [rbp + stack], 8
    );
    finish(e, op, miss)
}

/// POP r64: load at RSP, RSP += 8, then the register (POP RSP loads).
fn pop(e: &mut Emitter, op: &Op) -> bool {
    let insn = &op.insn;
    if !matches!(insn.code(), Code::Pop_r64 | Code::Pop_rm64) || insn.op0_kind() != OpKind::Register
    {
        return false;
    }
    let Some((d, 8)) = reg(insn.op0_register()) else {
        return false;
    };
    let stack = gpr(4);
    let miss = e.a.new_dynamic_label();
    dynasm!(e.a
        ; .arch x64
        ; mov rsi, [rbp + stack]
    );
    tlb(e, 8, &[Access::Read], miss);
    dynasm!(e.a
        ; .arch x64
        ; mov rcx, [rdi]
        ; add QWORD [rbp + stack], 8
        ; mov [rbp + gpr(d)], rcx
    );
    finish(e, op, miss)
}
