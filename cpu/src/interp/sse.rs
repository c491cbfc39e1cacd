//! MMX, SSE and SSE2 instructions (moves, packed/scalar floating point, conversions, packed integer, MXCSR).

use iced_x86::Instruction;

use crate::block::Handler;

/// The handler for `insn` if this group owns it.
pub(super) fn handler(_insn: &Instruction) -> Option<Handler> {
    None
}
