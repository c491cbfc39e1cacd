//! Block translation: one decoded block (the interpreter's `[Op]`), or a
//! block and the block after it when a hammock joins them
//! ([`crate::hammock`]), becomes one host function
//! `extern "sysv64" fn(ctx, cpu, slot) -> u64`.
//!
//! Register use inside a block: RBX = `&mut Ctx`, RBP = `&mut Cpu`, R12 =
//! the [`ExitSlot`], R15 = the TLB arrays at the current CPL; RAX, RCX,
//! RDX, RSI, RDI, R8, R9 are scratch (R10 and R11 are the hammock's). The
//! guest's RFLAGS lives in R13 and its instruction count in R14 for as long
//! as generated code runs (loaded by the prologue, carried in the registers
//! across chained exits into another block's body, stored into [`Cpu`]
//! around every helper call, which reloads them after, and by the
//! epilogue); [`Emitter::call_rax`] is the one way to call a helper.
//! Guest registers and RIP stay in [`Cpu`] (reached at `offset_of!`
//! offsets); inlined instructions update them in place, and a run of
//! inlined instructions adds its count to R14 and writes RIP once, before
//! the next helper call or the block's exit.
//!
//! An instruction that is not inlined calls [`exec_op`] with RIP set to
//! the next instruction, exactly as the interpreter's block loop does; a
//! nonzero return (fault delivered, `end_block`, a stop or panic recorded
//! in the slot) leaves the block at once: the helper left RIP and the count
//! exact.

use std::mem::{offset_of, size_of};

use dynasmrt::x64::X64Relocation;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler};
use hindsight_cpu::block::Op;
use hindsight_cpu::flags::STATUS;
use hindsight_cpu::tlb::{TLB_ENTRIES, TLB_ENTRY_SIZE};
use hindsight_cpu::Cpu;
use iced_x86::{ConditionCode, FlowControl, OpKind};

use crate::chain::{self, Cell, CELLS, CPL, TLB_SETS};
use crate::helpers::exec_op;
use crate::inline::{self, Inlined};

/// `Cpu::gpr` offset.
pub(crate) const GPR: i32 = offset_of!(Cpu, gpr) as i32;
/// `Cpu::rip` offset.
pub(crate) const RIP: i32 = offset_of!(Cpu, rip) as i32;
/// `Cpu::rflags` offset.
pub(crate) const RFLAGS: i32 = offset_of!(Cpu, rflags) as i32;
/// `Cpu::icount` offset.
pub(crate) const ICOUNT: i32 = offset_of!(Cpu, icount) as i32;
/// Log2 of the bytes from a TLB array to its user-mode twin.
const USER_ARRAY_SHIFT: i8 = (TLB_ENTRIES * TLB_ENTRY_SIZE).trailing_zeros() as i8;

/// Offset of guest register `n` (0 = RAX .. 15 = R15) in `Cpu`.
#[inline]
pub(crate) fn gpr(n: usize) -> i32 {
    GPR + 8 * n as i32
}

/// An assembler for one block plus what the emitters track.
pub(crate) struct Emitter {
    pub a: VecAssembler<X64Relocation>,
    /// The epilogue.
    pub exit: DynamicLabel,
    /// Inlined instructions retired since `icount` was last written.
    pub pending: i32,
    /// RIP value after the last instruction when not yet stored.
    pub rip_due: Option<u64>,
    /// The block is 64-bit code.
    pub long: bool,
    /// Mask applied to RIP after an instruction.
    pub ip_mask: u64,
    /// Address of this block's link cells (0: no chaining).
    pub cells: usize,
    /// Cells handed out so far.
    pub used_cells: usize,
    /// Page of the block's first instruction (64-bit code: linear).
    pub page: u64,
    /// Where an exit back to the block's own start jumps (past the
    /// prologue), with the block's length, when the block may loop on
    /// itself natively (see [`crate::chain::emit`]).
    pub self_loop: Option<(u64, DynamicLabel, i32)>,
    /// Status flags live after the instruction being emitted (see
    /// [`crate::liveness`]): flag merges store only these.
    pub live: u64,
    /// The current instruction's code can call a handler (set by emitters
    /// with a slow path; liveness then treats it as reading RFLAGS).
    pub handler_path: bool,
    /// The condition of the block's final Jcc while the instruction before
    /// it is emitted: a flag-writing emitter evaluates it on the host flags
    /// into R9B ([`crate::inline::fuse_point`]).
    pub fuse: Option<ConditionCode>,
    /// R9B holds `fuse` evaluated on the flags of the instruction just
    /// emitted (the final Jcc then tests R9B).
    pub fused: bool,
}

impl Emitter {
    /// An emitter for code assembled at `base` (see [`translate`]).
    pub(crate) fn new(base: usize, ip_mask: u64, cells: usize) -> Emitter {
        let mut a = VecAssembler::<X64Relocation>::new(base);
        let exit = a.new_dynamic_label();
        Emitter {
            a,
            exit,
            pending: 0,
            rip_due: None,
            long: ip_mask == u64::MAX,
            ip_mask,
            cells,
            used_cells: 0,
            page: 0,
            self_loop: None,
            live: STATUS,
            handler_path: false,
            fuse: None,
            fused: false,
        }
    }

    /// Adds the retired inlined instructions to `icount`.
    pub(crate) fn flush_count(&mut self, extra: i32) {
        let n = self.pending + extra;
        self.pending = 0;
        if n > 0 {
            dynasm!(self.a
                ; .arch x64
                ; add r14, n
            );
        }
    }

    /// Calls the helper at RAX with the guest state held in host
    /// registers (RFLAGS in R13, `icount` in R14) stored into `Cpu` first
    /// and reloaded after (the helper may change both).
    pub(crate) fn call_rax(&mut self) {
        dynasm!(self.a
            ; .arch x64
            ; mov [rbp + RFLAGS], r13
            ; mov [rbp + ICOUNT], r14
            ; call rax
            ; mov r13, [rbp + RFLAGS]
            ; mov r14, [rbp + ICOUNT]
        );
    }

    /// The address of the next free link cell of a 64-bit block, if any.
    pub(crate) fn next_cell(&mut self) -> Option<usize> {
        if !self.long || self.cells == 0 || self.used_cells >= CELLS {
            return None;
        }
        self.used_cells += 1;
        Some(self.cells + (self.used_cells - 1) * size_of::<Cell>())
    }

    /// Stores `v` into RIP.
    pub(crate) fn store_rip(&mut self, v: u64) {
        dynasm!(self.a
            ; .arch x64
            ; mov rax, QWORD v as i64
            ; mov [rbp + RIP], rax
        );
    }

    /// Calls the interpreter's handler for `op`.
    fn call_handler(&mut self, op: &Op) {
        self.handler_path = true;
        self.flush_count(0);
        self.rip_due = None;
        self.store_rip(op.insn.next_ip() & self.ip_mask);
        self.exec_op(op);
    }

    /// Calls [`exec_op`] for `op` (RIP and the count already stored) and
    /// leaves the block if it asks to.
    pub(crate) fn exec_op(&mut self, op: &Op) {
        let exit = self.exit;
        let helper = exec_op as *const () as usize as i64;
        let op_ptr = op as *const Op as usize as i64;
        dynasm!(self.a
            ; .arch x64
            ; mov rdi, rbx
            ; mov rsi, QWORD op_ptr
            ; mov rdx, r12
            ; mov rax, QWORD helper
        );
        self.call_rax();
        dynasm!(self.a
            ; .arch x64
            ; test rax, rax
            ; jnz =>exit
        );
    }
}

/// What translating a block produced.
pub(crate) struct Translated {
    /// Machine code, to be placed at the address it was assembled for.
    pub code: Vec<u8>,
    /// Instructions inlined (the rest call their handler).
    pub inlined: usize,
    /// Offset of the body (past the prologue), where chained exits enter.
    pub body: usize,
}

/// Translates `ops`, followed by `tail` when `ops` ends in the Jcc of a
/// hammock whose tail it is (else `tail` is empty), into code assembled for
/// address `base`; it holds no absolute reference to itself (jumps are
/// relative), so it runs wherever it is copied. The ops must stay where
/// they are for as long as the code may run (their addresses are
/// embedded), and so must the [`CELLS`] link cells at `cells` (0: exits do
/// not chain). `None`: cannot be translated (with a tail: the hammock's
/// skipped instruction turned out not undoable).
pub(crate) fn translate(
    ops: &[Op],
    tail: &[Op],
    ip_mask: u64,
    base: usize,
    cells: usize,
) -> Option<Translated> {
    // With a tail, `ops` ends in the Jcc of a hammock (see `hammock`).
    let hammock = (!tail.is_empty()).then(|| ops.len() - 1);
    let ops: Vec<&Op> = ops.iter().chain(tail).collect();
    let live = crate::liveness::live_after(&ops, ip_mask);
    let mut e = Emitter::new(base, ip_mask, cells);
    e.page = ops.first().map_or(0, |op| op.insn.ip() & !0xfff);
    // Six pushes and eight bytes leave RSP 16-byte aligned for the helper
    // calls. R13 holds the guest's RFLAGS and R14 its `icount` at every
    // entry (here and at the body, where chained exits enter with them);
    // both are stored back around every helper call and at the epilogue.
    // R15 holds the address of the TLB arrays at the current CPL (the
    // user arrays follow the supervisor ones), which cannot change while
    // generated code runs: a handler that changes the CPL leaves the
    // block, and so does every chain (see `chain`).
    dynasm!(e.a
        ; .arch x64
        ; push rbx
        ; push rbp
        ; push r12
        ; push r13
        ; push r14
        ; push r15
        ; sub rsp, 8
        ; mov rbx, rdi
        ; mov rbp, rsi
        ; mov r12, rdx
        ; mov r13, [rbp + RFLAGS]
        ; mov r14, [rbp + ICOUNT]
        ; xor eax, eax
        ; cmp BYTE [rbp + CPL], 3
        ; sete al
        ; shl eax, USER_ARRAY_SHIFT
        ; add rax, [rbp + TLB_SETS]
        ; mov r15, rax
    );
    let body = e.a.offset().0;
    let body_label = e.a.new_dynamic_label();
    dynasm!(e.a ; .arch x64 ; =>body_label);
    if let (Some(first), Some(last)) = (ops.first(), ops.last()) {
        // Within one page: its execute entry is then the only one the
        // block depends on (see `chain`).
        let end = last.insn.next_ip().wrapping_sub(1);
        if e.long && cells != 0 && end & !0xfff == e.page {
            e.self_loop = Some((first.insn.ip(), body_label, ops.len() as i32));
        }
    }
    let mut inlined = 0;
    let mut ended = false;
    // The skipped instruction's destination, between `begin` and `end`.
    let mut undo = None;
    for (i, &op) in ops.iter().enumerate() {
        let last = i + 1 == ops.len();
        e.live = live[i];
        e.handler_path = false;
        if hammock == Some(i) {
            undo = crate::hammock::begin(&mut e, op, ops[i + 1]);
            inlined += 1;
            continue;
        }
        if !last {
            // Only the instruction right before the final Jcc (or the
            // hammock's) may fuse.
            e.fused = false;
            e.fuse = ops
                .get(i + 1)
                .filter(|j| {
                    (i + 2 == ops.len() || hammock == Some(i + 1))
                        && e.long
                        && j.insn.is_jcc_short_or_near()
                })
                .map(|j| j.insn.condition_code())
                .filter(|&cc| cc != ConditionCode::None);
        }
        let r = inline::emit(&mut e, op, last);
        if !last && (e.handler_path || !matches!(r, Inlined::Yes)) {
            // R9 does not survive a handler call.
            e.fused = false;
        }
        e.fuse = None;
        if hammock.is_some_and(|h| h + 1 == i) {
            if e.handler_path || !matches!(r, Inlined::Yes) {
                // Not undoable after all: the caller translates the
                // block alone.
                return None;
            }
            crate::hammock::end(&mut e, undo);
        }
        match r {
            Inlined::No => e.call_handler(op),
            Inlined::Yes => inlined += 1,
            Inlined::Ends => {
                inlined += 1;
                ended = true;
                break;
            }
        }
    }
    if !ended {
        e.flush_count(0);
        let rip = e.rip_due.take();
        if let Some(target) = ops.last().and_then(|op| static_successor(op)) {
            // RIP is due only after an inlined last instruction, whose
            // successor it is.
            chain::emit(&mut e, target, rip.is_some());
        } else if let Some(rip) = rip {
            e.store_rip(rip);
        }
    }
    let exit = e.exit;
    dynasm!(e.a
        ; .arch x64
        ; =>exit
        ; mov [rbp + RFLAGS], r13
        ; mov [rbp + ICOUNT], r14
        ; xor eax, eax
        ; add rsp, 8
        ; pop r15
        ; pop r14
        ; pop r13
        ; pop r12
        ; pop rbp
        ; pop rbx
        ; ret
    );
    let code = e.a.finalize().ok()?;
    Some(Translated {
        code,
        inlined,
        body,
    })
}

/// Where a 64-bit block whose last instruction is `op` continues when that
/// instruction completes without ending the block: the next instruction,
/// or the target of a direct JMP or CALL.
fn static_successor(op: &Op) -> Option<u64> {
    let insn = &op.insn;
    match insn.flow_control() {
        FlowControl::Next => Some(insn.next_ip()),
        FlowControl::UnconditionalBranch | FlowControl::Call
            if insn.op0_kind() == OpKind::NearBranch64 =>
        {
            Some(insn.near_branch_target())
        }
        _ => None,
    }
}
