//! Stack instructions (PUSH/POP forms, PUSHA/POPA, PUSHF/POPF, ENTER/LEAVE)
//! and the push/pop primitives every other group uses.

use iced_x86::Instruction;

use crate::block::Handler;
use crate::fault::Result;
use crate::interp::Ctx;
use crate::state::{reg, SegReg};

/// The handler for `insn` if this group implements it.
pub(super) fn handler(_insn: &Instruction) -> Option<Handler> {
    None
}

impl Ctx<'_> {
    /// Stack pointer masked to the stack address size.
    #[inline(always)]
    pub fn sp(&self) -> u64 {
        let rsp = self.cpu.gpr[reg::RSP];
        match self.cpu.stack_size() {
            2 => rsp & 0xffff,
            4 => rsp & 0xffff_ffff,
            _ => rsp,
        }
    }

    /// Sets the stack pointer, touching only the bits of the stack address size.
    #[inline(always)]
    pub fn set_sp(&mut self, v: u64) {
        let size = self.cpu.stack_size();
        let g = &mut self.cpu.gpr[reg::RSP];
        *g = match size {
            2 => (*g & !0xffff) | (v & 0xffff),
            // A 32-bit stack write of ESP zero-extends (as any 32-bit register write).
            4 => v & 0xffff_ffff,
            _ => v,
        };
    }

    /// Pushes `size` bytes of `v`; RSP changes only if the store succeeds.
    #[inline(always)]
    pub fn push(&mut self, size: u8, v: u64) -> Result<()> {
        let sp = self.sp().wrapping_sub(size as u64) & ss_mask(self.cpu.stack_size());
        self.write_seg(SegReg::Ss, sp, size, v)?;
        self.set_sp(sp);
        Ok(())
    }

    /// Pops `size` bytes; RSP changes only if the load succeeds.
    #[inline(always)]
    pub fn pop(&mut self, size: u8) -> Result<u64> {
        let sp = self.sp();
        let v = self.read_seg(SegReg::Ss, sp, size)?;
        self.set_sp(sp.wrapping_add(size as u64));
        Ok(v)
    }

    /// Reads `size` bytes at stack offset `off` from the current top (no RSP change).
    #[inline(always)]
    pub fn peek(&mut self, off: u64, size: u8) -> Result<u64> {
        let a = self.sp().wrapping_add(off) & ss_mask(self.cpu.stack_size());
        self.read_seg(SegReg::Ss, a, size)
    }
}

/// Mask of stack offsets for a stack address size.
#[inline(always)]
pub fn ss_mask(stack_size: u8) -> u64 {
    match stack_size {
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}
