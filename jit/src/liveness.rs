//! Dead-flag elimination: which status flags (OF SF ZF AF PF CF) each
//! instruction of a block must leave exact in RFLAGS.
//!
//! RFLAGS is observed by every handler call (the handler may read it, fault
//! or stop, and a fault must see it exact), by the engine when the block is
//! left, and by inlined instructions that read flags (Jcc, ADC, CMOVcc...).
//! A flag an inlined instruction writes may be skipped only when a LATER
//! inlined instruction overwrites it unconditionally before any of those
//! observers. So, walking the block backwards: everything is live at its
//! end and before every instruction that is not inlined or whose inline
//! code has a handler path (memory slow path, CALL/RET miss); an inlined
//! instruction makes live what it reads and kills what it always writes.
//!
//! "Always writes" is iced's written, cleared and set flags, never its
//! undefined ones (the interpreter picks their values itself, and the
//! inline code reproduces that choice only where it writes them), and
//! nothing for instructions whose flag writes depend on a run-time count:
//! shifts and rotates by CL (a zero count writes nothing) and REP string
//! instructions (a zero RCX runs none). Shifts by an immediate whose masked
//! count is zero already report no flags in iced.

use hindsight_cpu::block::Op;
use hindsight_cpu::flags::{AF, CF, OF, PF, SF, STATUS, ZF};
use iced_x86::{Instruction, Mnemonic, OpKind, Register, RflagsBits};

use crate::inline::{self, Inlined};
use crate::translate::Emitter;

/// The status flags of an iced [`RflagsBits`] mask, as RFLAGS bits.
fn status(iced: u32) -> u64 {
    [
        (RflagsBits::OF, OF),
        (RflagsBits::SF, SF),
        (RflagsBits::ZF, ZF),
        (RflagsBits::AF, AF),
        (RflagsBits::PF, PF),
        (RflagsBits::CF, CF),
    ]
    .iter()
    .filter(|(bit, _)| iced & bit != 0)
    .fold(0, |m, (_, f)| m | f)
}

/// Status flags `insn` writes whatever its operands' values.
fn always_written(insn: &Instruction) -> u64 {
    let counted = matches!(
        insn.mnemonic(),
        Mnemonic::Rol
            | Mnemonic::Ror
            | Mnemonic::Rcl
            | Mnemonic::Rcr
            | Mnemonic::Shl
            | Mnemonic::Sal
            | Mnemonic::Shr
            | Mnemonic::Sar
            | Mnemonic::Shld
            | Mnemonic::Shrd
    ) && (0..insn.op_count())
        .any(|i| insn.op_kind(i) == OpKind::Register && insn.op_register(i) == Register::CL);
    if counted || insn.has_rep_prefix() || insn.has_repne_prefix() {
        return 0;
    }
    status(insn.rflags_written() | insn.rflags_cleared() | insn.rflags_set())
}

/// How one instruction of the block is emitted, as far as flags go.
#[derive(Clone, Copy)]
enum Use {
    /// Observes all of RFLAGS (handler call or handler path).
    All,
    /// Inlined without handler path: reads `read`, always writes `kill`.
    Inline { read: u64, kill: u64 },
}

/// Whether `op` is inlined and has no handler path: it is emitted into a
/// scratch assembler (emission does not depend on the block's state).
fn classify(op: &Op, last: bool, ip_mask: u64) -> Use {
    let mut e = Emitter::new(0, ip_mask, 0);
    let inlined = !matches!(inline::emit(&mut e, op, last), Inlined::No);
    if !inlined || e.handler_path {
        return Use::All;
    }
    let insn = &op.insn;
    Use::Inline {
        read: status(insn.rflags_read()),
        kill: always_written(insn),
    }
}

/// For each of `ops`, the status flags live after it: those it must store
/// exactly (see the module documentation).
pub(crate) fn live_after(ops: &[&Op], ip_mask: u64) -> Vec<u64> {
    let mut out = vec![STATUS; ops.len()];
    let mut live = STATUS;
    for (i, op) in ops.iter().enumerate().rev() {
        out[i] = live;
        live = match classify(op, i + 1 == ops.len(), ip_mask) {
            Use::All => STATUS,
            Use::Inline { read, kill } => (live & !kill) | read,
        };
    }
    out
}
