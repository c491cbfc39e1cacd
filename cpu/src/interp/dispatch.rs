//! Maps a decoded instruction to its handler, once, at decode time.

use iced_x86::{Code, Instruction};

use crate::block::Handler;
use crate::fault::{Fault, Result, StopKind};
use crate::interp::Ctx;

/// The handler for `insn`: the first instruction group that claims it, else
/// #UD for invalid encodings and a machine stop for valid but unimplemented ones.
pub fn handler_for(insn: &Instruction) -> Handler {
    if insn.code() == Code::INVALID {
        return invalid;
    }
    let groups: [fn(&Instruction) -> Option<Handler>; 14] = [
        super::data::handler,
        super::alu::handler,
        super::shift::handler,
        super::muldiv::handler,
        super::bcd::handler,
        super::bits::handler,
        super::stack::handler,
        super::branch::handler,
        super::string::handler,
        super::far::handler,
        super::interrupt::handler,
        super::descriptor::handler,
        super::system::handler,
        super::io::handler,
    ];
    groups.iter().find_map(|g| g(insn)).unwrap_or(unimplemented)
}

fn invalid(_: &mut Ctx, _: &Instruction) -> Result<()> {
    Err(Fault::ud())
}

fn unimplemented(_: &mut Ctx, insn: &Instruction) -> Result<()> {
    Err(Fault::Stop(StopKind::Unimplemented {
        mnemonic: format!("{:?}", insn.code()),
    }))
}
