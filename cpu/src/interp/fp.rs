//! Plumbing shared by the x87, MMX and SSE groups: the device-availability
//! checks each family makes before executing (SDM vol. 3 table 2-2, 13.1),
//! register access for MMX and XMM operands, memory operands wider than
//! eight bytes (16-byte SSE operands, 512-byte FXSAVE areas) with their
//! alignment rules, and the SIMD floating-point exception response.
//!
//! Wide memory accesses check the whole range (segment limits and every
//! page) before touching anything, so a faulting instruction changes no
//! memory, as on hardware.

use iced_x86::{Instruction, OpKind, Register};

use crate::fault::{vector, Fault, Result};
use crate::interp::operand::mem_operand;
use crate::interp::Ctx;
use crate::state::{cr, Cpu, SegReg};
use crate::tlb::Access;

/// x87 (and FXSAVE/FXRSTOR): #NM when CR0.EM or CR0.TS is set.
#[inline]
pub fn check_x87(cpu: &Cpu) -> Result<()> {
    if cpu.cr0 & (cr::CR0_EM | cr::CR0_TS) != 0 {
        return Err(Fault::nm());
    }
    Ok(())
}

/// x87 status word: exception summary (an unmasked x87 exception is pending).
const FSW_ES: u16 = 1 << 7;

/// A pending unmasked x87 exception (FSW.ES) is delivered as #MF before
/// an instruction touching the MMX registers executes (SDM vol. 1 ch. 9,
/// "Exceptions That Can Occur When Executing MMX Instructions"; the host
/// agrees, EMMS and the SSSE3 MMX forms included). With CR0.NE clear the
/// hardware would signal FERR# to an external interrupt controller
/// instead; that path is not modelled (nothing happens). Also used alone
/// by the SSE instructions with an MMX register operand (CVTPS2PI,
/// MOVQ2DQ, ...), which make the SSE device checks instead of these.
#[inline]
pub fn x87_pending(cpu: &Cpu) -> Result<()> {
    if cpu.fpu.sw & FSW_ES != 0 && cpu.cr0 & cr::CR0_NE != 0 {
        return Err(Fault::exc(vector::MF));
    }
    Ok(())
}

/// MMX (every instruction with an MMX register operand, EMMS included):
/// #UD when CR0.EM is set, #NM when CR0.TS is set, then #MF for a pending
/// x87 exception ([`x87_pending`]).
#[inline]
pub fn check_mmx(cpu: &Cpu) -> Result<()> {
    if cpu.cr0 & cr::CR0_EM != 0 {
        return Err(Fault::ud());
    }
    if cpu.cr0 & cr::CR0_TS != 0 {
        return Err(Fault::nm());
    }
    x87_pending(cpu)
}

/// SSE on XMM registers or MXCSR: #UD when CR0.EM is set or CR4.OSFXSR is
/// clear, #NM when CR0.TS is set.
#[inline]
pub fn check_sse(cpu: &Cpu) -> Result<()> {
    if cpu.cr0 & cr::CR0_EM != 0 || cpu.cr4 & cr::CR4_OSFXSR == 0 {
        return Err(Fault::ud());
    }
    if cpu.cr0 & cr::CR0_TS != 0 {
        return Err(Fault::nm());
    }
    Ok(())
}

/// Index 0..15 of an XMM register.
#[inline]
pub fn xmm_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::XMM0 as usize) & 15
}

/// Index 0..7 of an MMX register.
#[inline]
pub fn mm_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::MM0 as usize) & 7
}

/// Whether operand `i` is a register operand.
#[inline]
pub fn is_reg(insn: &Instruction, i: u32) -> bool {
    insn.op_kind(i) == OpKind::Register
}

/// MMX register access. Every MMX instruction but EMMS puts the x87 in MMX
/// state: TOP = 0 and all registers tagged valid; a write also sets the
/// exponent field (bits 64..79) to all ones (SDM vol. 1 9.5.1).
impl Cpu {
    /// Enters MMX state (TOP = 0, all tags valid).
    #[inline]
    pub fn mmx_enter(&mut self) {
        self.fpu.set_top(0);
        self.fpu.tw = 0;
    }

    /// MMi.
    #[inline]
    pub fn mm(&self, i: usize) -> u64 {
        self.fpu.regs[i & 7].mant
    }

    /// Writes MMi.
    #[inline]
    pub fn set_mm(&mut self, i: usize, v: u64) {
        let r = &mut self.fpu.regs[i & 7];
        r.mant = v;
        r.exp = 0x7fff;
        r.sign = true;
    }
}

impl Ctx<'_> {
    /// Segment and offset of the memory operand.
    #[inline]
    fn mem_ref(&self, insn: &Instruction) -> (SegReg, u64) {
        mem_operand(self.cpu, insn)
    }

    /// Checks an access of `len` bytes at `s:off` (segment and every page)
    /// and returns its linear address. `align` > 1 demands that alignment
    /// of the linear address (#GP(0) otherwise).
    pub fn check_range(
        &mut self,
        s: SegReg,
        off: u64,
        len: usize,
        align: u64,
        write: bool,
    ) -> Result<u64> {
        let len = len.max(1) as u64;
        // Segment checks on both ends (sizes are at most 255 per check).
        let lin = self.seg_addr(s, off, len.min(255) as u8, write)?;
        if len > 255 {
            self.seg_addr(s, off.wrapping_add(len - 1), 1, write)?;
        }
        if align > 1 && lin & (align - 1) != 0 {
            return Err(Fault::gp(0));
        }
        let kind = if write { Access::Write } else { Access::Read };
        let user = self.cpu.cpl == 3;
        let mut page = lin & !0xfff;
        let end = lin.wrapping_add(len - 1);
        loop {
            let probe = self.lin_mask(page.max(lin));
            self.translate(probe, kind, user)?;
            if page == end & !0xfff {
                break;
            }
            page = page.wrapping_add(0x1000);
        }
        Ok(lin)
    }

    /// Reads `buf.len()` bytes at `s:off` (checked first as a whole).
    pub fn read_bytes(&mut self, s: SegReg, off: u64, buf: &mut [u8], align: u64) -> Result<()> {
        let lin = self.check_range(s, off, buf.len(), align, false)?;
        let mut i = 0;
        while i < buf.len() {
            let n = if buf.len() - i >= 8 { 8 } else { 1 };
            let v = self.read_lin(self.lin_mask(lin.wrapping_add(i as u64)), n as u8)?;
            buf[i..i + n].copy_from_slice(&v.to_le_bytes()[..n]);
            i += n;
        }
        Ok(())
    }

    /// Writes `buf` at `s:off` (checked first as a whole, so a fault writes nothing).
    pub fn write_bytes(&mut self, s: SegReg, off: u64, buf: &[u8], align: u64) -> Result<()> {
        let lin = self.check_range(s, off, buf.len(), align, true)?;
        let mut i = 0;
        while i < buf.len() {
            let n = if buf.len() - i >= 8 { 8 } else { 1 };
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&buf[i..i + n]);
            let at = self.lin_mask(lin.wrapping_add(i as u64));
            self.write_lin(at, n as u8, u64::from_le_bytes(b))?;
            i += n;
        }
        Ok(())
    }

    /// Reads the instruction's memory operand as `buf.len()` bytes.
    pub fn read_mem(&mut self, insn: &Instruction, buf: &mut [u8], align: u64) -> Result<()> {
        let (s, off) = self.mem_ref(insn);
        self.read_bytes(s, off, buf, align)
    }

    /// Writes `buf` to the instruction's memory operand.
    pub fn write_mem(&mut self, insn: &Instruction, buf: &[u8], align: u64) -> Result<()> {
        let (s, off) = self.mem_ref(insn);
        self.write_bytes(s, off, buf, align)
    }

    /// Reads a 128-bit memory operand; `aligned` demands 16-byte alignment.
    #[inline]
    pub fn read_m128(&mut self, insn: &Instruction, aligned: bool) -> Result<u128> {
        let mut b = [0u8; 16];
        self.read_mem(insn, &mut b, if aligned { 16 } else { 1 })?;
        Ok(u128::from_le_bytes(b))
    }

    /// Writes a 128-bit memory operand; `aligned` demands 16-byte alignment.
    #[inline]
    pub fn write_m128(&mut self, insn: &Instruction, v: u128, aligned: bool) -> Result<()> {
        self.write_mem(insn, &v.to_le_bytes(), if aligned { 16 } else { 1 })
    }

    /// Operand `i` as 128 bits: an XMM register, or memory of the operand's
    /// size (16 bytes, or fewer for scalar forms, zero-extended).
    pub fn xmm_operand(&mut self, insn: &Instruction, i: u32, aligned: bool) -> Result<u128> {
        if is_reg(insn, i) {
            return Ok(self.cpu.xmm[xmm_index(insn.op_register(i))]);
        }
        let size = insn.memory_size().size();
        if size >= 16 {
            return self.read_m128(insn, aligned);
        }
        let mut b = [0u8; 16];
        let n = size.clamp(1, 16);
        self.read_mem(insn, &mut b[..n], 1)?;
        Ok(u128::from_le_bytes(b))
    }

    /// Operand `i` as 64 bits: an MMX register or a memory operand of the
    /// operand's size (zero-extended).
    pub fn mm_operand(&mut self, insn: &Instruction, i: u32) -> Result<u64> {
        if is_reg(insn, i) {
            return Ok(self.cpu.mm(mm_index(insn.op_register(i))));
        }
        let n = insn.memory_size().size().clamp(1, 8);
        let mut b = [0u8; 8];
        self.read_mem(insn, &mut b[..n], 1)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Merges the SIMD floating-point exception flags `flags` (MXCSR bits
    /// 0..5) raised by an instruction. With any of them unmasked the
    /// instruction must not write its destination: the result is #XM
    /// (CR4.OSXMMEXCPT set) or #UD, and MXCSR keeps the flags (SDM vol. 1
    /// 11.5.1). Call before committing the result.
    #[inline]
    pub fn simd_fp_exceptions(&mut self, flags: u32) -> Result<()> {
        let flags = flags & 0x3f;
        if flags == 0 {
            return Ok(());
        }
        self.cpu.mxcsr |= flags;
        let masks = (self.cpu.mxcsr >> 7) & 0x3f;
        if flags & !masks != 0 {
            return Err(if self.cpu.cr4 & cr::CR4_OSXMMEXCPT != 0 {
                Fault::exc(vector::XM)
            } else {
                Fault::ud()
            });
        }
        Ok(())
    }
}
