//! SSE3, SSSE3, SSE4.1 and SSE4.2 instructions (CRC32, PCMPxSTRx included).

use iced_x86::Instruction;

use crate::block::Handler;

/// The handler for `insn` if this group owns it.
pub(super) fn handler(_insn: &Instruction) -> Option<Handler> {
    None
}
