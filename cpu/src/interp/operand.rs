//! Reading and writing instruction operands: registers with their 8/16/32/64-bit
//! views, immediates, and memory operands through segmentation and paging.

use iced_x86::{Instruction, OpKind, Register};

use crate::fault::Result;
use crate::interp::Ctx;
use crate::state::{Cpu, SegReg};

/// Reads a general-purpose, instruction-pointer or segment register by its iced name.
#[inline(always)]
pub fn read_reg(cpu: &Cpu, r: Register) -> u64 {
    let n = r as usize;
    match n {
        1..=4 => cpu.gpr[n - 1] & 0xff,
        5..=8 => (cpu.gpr[n - 5] >> 8) & 0xff,
        9..=20 => cpu.gpr[n - 5] & 0xff,
        21..=36 => cpu.gpr[n - 21] & 0xffff,
        37..=52 => cpu.gpr[n - 37] & 0xffff_ffff,
        53..=68 => cpu.gpr[n - 53],
        69 => cpu.rip & 0xffff_ffff,
        70 => cpu.rip,
        71..=76 => cpu.seg[n - 71].selector as u64,
        _ => 0,
    }
}

/// Writes a general-purpose register by its iced name with x86 merge rules:
/// 8- and 16-bit writes keep the other bits, 32-bit writes zero the upper half.
#[inline(always)]
pub fn write_reg(cpu: &mut Cpu, r: Register, v: u64) {
    let n = r as usize;
    match n {
        1..=4 => {
            let g = &mut cpu.gpr[n - 1];
            *g = (*g & !0xff) | (v & 0xff);
        }
        5..=8 => {
            let g = &mut cpu.gpr[n - 5];
            *g = (*g & !0xff00) | ((v & 0xff) << 8);
        }
        9..=20 => {
            let g = &mut cpu.gpr[n - 5];
            *g = (*g & !0xff) | (v & 0xff);
        }
        21..=36 => {
            let g = &mut cpu.gpr[n - 21];
            *g = (*g & !0xffff) | (v & 0xffff);
        }
        37..=52 => cpu.gpr[n - 37] = v & 0xffff_ffff,
        53..=68 => cpu.gpr[n - 53] = v,
        _ => {}
    }
}

/// Size in bytes of a general-purpose register.
#[inline(always)]
pub fn reg_size(r: Register) -> u8 {
    match r as usize {
        1..=20 => 1,
        21..=36 => 2,
        37..=52 => 4,
        _ => 8,
    }
}

/// Index (0–15) in `Cpu::gpr` of a general-purpose register of any width
/// (AH..BH map to 0..3).
#[inline(always)]
pub fn reg_index(r: Register) -> usize {
    let n = r as usize;
    match n {
        1..=4 => n - 1,
        5..=8 => n - 5,
        9..=20 => n - 5,
        21..=36 => n - 21,
        37..=52 => n - 37,
        53..=68 => n - 53,
        _ => 0,
    }
}

/// The segment register an iced segment `Register` names.
#[inline(always)]
pub fn seg_of(r: Register) -> SegReg {
    match r {
        Register::ES => SegReg::Es,
        Register::CS => SegReg::Cs,
        Register::SS => SegReg::Ss,
        Register::FS => SegReg::Fs,
        Register::GS => SegReg::Gs,
        _ => SegReg::Ds,
    }
}

/// Address size in bytes of an instruction's memory operand.
#[inline(always)]
pub fn addr_size(insn: &Instruction) -> u8 {
    let base = insn.memory_base();
    if base != Register::None {
        return match base {
            Register::RIP => 8,
            Register::EIP => 4,
            b => reg_size(b),
        };
    }
    let index = insn.memory_index();
    if index != Register::None {
        return reg_size(index);
    }
    match insn.memory_displ_size() {
        2 => 2,
        4 => 4,
        8 => 8,
        _ => match insn.code_size() {
            iced_x86::CodeSize::Code16 => 2,
            iced_x86::CodeSize::Code32 => 4,
            _ => 8,
        },
    }
}

/// Mask of an address of `size` bytes.
#[inline(always)]
pub fn addr_mask(size: u8) -> u64 {
    match size {
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Effective address (offset within the segment) of the memory operand.
#[inline(always)]
pub fn effective_address(cpu: &Cpu, insn: &Instruction) -> u64 {
    let mut a = insn.memory_displacement64();
    let base = insn.memory_base();
    if base != Register::None && base != Register::RIP && base != Register::EIP {
        a = a.wrapping_add(read_reg(cpu, base));
    }
    let index = insn.memory_index();
    if index != Register::None {
        a = a.wrapping_add(read_reg(cpu, index) << (insn.memory_index_scale().trailing_zeros()));
    }
    a & addr_mask(addr_size(insn))
}

/// Segment and offset of the memory operand.
#[inline(always)]
pub fn mem_operand(cpu: &Cpu, insn: &Instruction) -> (SegReg, u64) {
    (seg_of(insn.memory_segment()), effective_address(cpu, insn))
}

impl Ctx<'_> {
    /// Size in bytes of operand `i` (register or memory; immediates take op 0's size).
    #[inline(always)]
    pub fn op_size(&self, insn: &Instruction, i: u32) -> u8 {
        match insn.op_kind(i) {
            OpKind::Register => reg_size(insn.op_register(i)),
            OpKind::Memory => insn.memory_size().size() as u8,
            _ => {
                if i > 0 {
                    self.op_size(insn, 0)
                } else {
                    8
                }
            }
        }
    }

    /// Reads operand `i` (zero-extended; immediates as iced sign-extends them).
    #[inline(always)]
    pub fn read_op(&mut self, insn: &Instruction, i: u32, size: u8) -> Result<u64> {
        match insn.op_kind(i) {
            OpKind::Register => Ok(read_reg(self.cpu, insn.op_register(i))),
            OpKind::Memory => {
                let (s, off) = mem_operand(self.cpu, insn);
                self.read_seg(s, off, size)
            }
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                Ok(insn.near_branch_target())
            }
            _ => Ok(insn.immediate(i) & crate::flags::mask(size)),
        }
    }

    /// Writes operand `i` (register or memory) with `size` bytes of `v`.
    #[inline(always)]
    pub fn write_op(&mut self, insn: &Instruction, i: u32, size: u8, v: u64) -> Result<()> {
        match insn.op_kind(i) {
            OpKind::Register => {
                write_reg(self.cpu, insn.op_register(i), v);
                Ok(())
            }
            _ => {
                let (s, off) = mem_operand(self.cpu, insn);
                self.write_seg(s, off, size, v)
            }
        }
    }

    /// Linear address of the memory operand, checked for an access of `size` bytes.
    #[inline(always)]
    pub fn mem_linear(&self, insn: &Instruction, size: u8, write: bool) -> Result<u64> {
        let (s, off) = mem_operand(self.cpu, insn);
        self.seg_addr(s, off, size, write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_views() {
        let mut cpu = Cpu::new(0);
        write_reg(&mut cpu, Register::RAX, 0x1122_3344_5566_7788);
        assert_eq!(read_reg(&cpu, Register::AH), 0x77);
        assert_eq!(read_reg(&cpu, Register::AX), 0x7788);
        write_reg(&mut cpu, Register::AH, 0xaa);
        assert_eq!(cpu.gpr[0], 0x1122_3344_5566_aa88);
        write_reg(&mut cpu, Register::EAX, 0xffff_ffff);
        assert_eq!(cpu.gpr[0], 0xffff_ffff);
        write_reg(&mut cpu, Register::SIL, 0x12);
        assert_eq!(cpu.gpr[6] & 0xff, 0x12);
        write_reg(&mut cpu, Register::R15W, 0xbeef);
        assert_eq!(read_reg(&cpu, Register::R15L), 0xef);
        assert_eq!(reg_index(Register::BH), 3);
        assert_eq!(reg_index(Register::DIL), 7);
        assert_eq!(reg_index(Register::R9D), 9);
    }
}
