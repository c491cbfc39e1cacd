//! x87 FPU instructions (D8-DF escapes), FNSAVE/FRSTOR/FSTENV/FLDENV, FXSAVE/FXRSTOR, XSAVE/XRSTOR/XGETBV/XSETBV.

use iced_x86::Instruction;

use crate::block::Handler;

/// The handler for `insn` if this group owns it.
pub(super) fn handler(_insn: &Instruction) -> Option<Handler> {
    None
}
