//! (instruction group: to be written)

use iced_x86::Instruction;

use crate::block::Handler;

/// The handler for `insn` if this group implements it.
pub(super) fn handler(_insn: &Instruction) -> Option<Handler> {
    None
}
