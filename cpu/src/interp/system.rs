//! System instructions: HLT (more to come: control/debug registers, MSRs,
//! CPUID, RDTSC, CLI/STI, SYSCALL/SYSRET, SYSENTER/SYSEXIT, SWAPGS, ...).

use iced_x86::{Instruction, Mnemonic};

use crate::block::Handler;
use crate::fault::{Fault, Result};
use crate::interp::Ctx;

/// The handler for `insn` if this group implements it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    Some(match insn.mnemonic() {
        Mnemonic::Hlt => hlt,
        _ => return None,
    })
}

fn hlt(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    if ctx.cpu.cpl != 0 {
        return Err(Fault::gp(0));
    }
    ctx.cpu.halted = true;
    ctx.cpu.end_block = true;
    ctx.cpu.exit_request = true;
    Ok(())
}
