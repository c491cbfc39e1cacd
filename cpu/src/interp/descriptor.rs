//! Segment descriptors and the instructions built on them.
//!
//! Owns: reading descriptors from the GDT/LDT ([`Desc`], `Ctx::read_desc`),
//! the accessed bit, loading data and stack segment registers with every
//! protected-mode check (`Ctx::load_segment`, used by MOV Sreg, POP Sreg and
//! LDS/LES/LFS/LGS/LSS), real-mode and virtual-8086 segment loads, the
//! descriptor-table registers (LGDT/LIDT/SGDT/SIDT/LLDT/SLDT/LTR/STR),
//! descriptor queries (LAR/LSL/VERR/VERW), ARPL and the machine status word
//! (LMSW/SMSW/CLTS). It also holds helpers the far-transfer and interrupt
//! code share: [`StackBuilder`] (pushes to a possibly new stack, checked in
//! full before anything is written) and the TSS stack-pointer lookup.

use iced_x86::{Code, Instruction, OpKind, Register};

use crate::block::Handler;
use crate::fault::{Fault, Result};
use crate::flags;
use crate::interp::operand::{
    addr_mask, addr_size, mem_operand, read_reg, reg_index, reg_size, seg_of, write_reg,
};
use crate::interp::Ctx;
use crate::memory::is_canonical;
use crate::state::{attr, cr, Mode, SegReg, Segment};
use crate::tlb::Access;

/// The handler for `insn` if this group implements it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    use Code::*;
    Some(match insn.code() {
        Mov_Sreg_rm16 | Mov_Sreg_r32m16 | Mov_Sreg_r64m16 => mov_to_sreg,
        Mov_rm16_Sreg | Mov_r32m16_Sreg | Mov_r64m16_Sreg => mov_from_sreg,
        Lds_r16_m1616 | Lds_r32_m1632 | Les_r16_m1616 | Les_r32_m1632 | Lfs_r16_m1616
        | Lfs_r32_m1632 | Lfs_r64_m1664 | Lgs_r16_m1616 | Lgs_r32_m1632 | Lgs_r64_m1664
        | Lss_r16_m1616 | Lss_r32_m1632 | Lss_r64_m1664 => load_far_pointer,
        Lgdt_m1632_16 | Lgdt_m1632 | Lgdt_m1664 => lgdt,
        Lidt_m1632_16 | Lidt_m1632 | Lidt_m1664 => lidt,
        Sgdt_m1632_16 | Sgdt_m1632 | Sgdt_m1664 => sgdt,
        Sidt_m1632_16 | Sidt_m1632 | Sidt_m1664 => sidt,
        Lldt_rm16 | Lldt_r32m16 | Lldt_r64m16 => lldt,
        Sldt_rm16 | Sldt_r32m16 | Sldt_r64m16 => sldt,
        Ltr_rm16 | Ltr_r32m16 | Ltr_r64m16 => ltr,
        Str_rm16 | Str_r32m16 | Str_r64m16 => str_,
        Lar_r16_rm16 | Lar_r32_r32m16 | Lar_r64_r64m16 => lar,
        Lsl_r16_rm16 | Lsl_r32_r32m16 | Lsl_r64_r64m16 => lsl,
        Verr_rm16 | Verr_r32m16 | Verr_r64m16 => verr,
        Verw_rm16 | Verw_r32m16 | Verw_r64m16 => verw,
        Arpl_rm16_r16 | Arpl_r32m16_r32 => arpl,
        Lmsw_rm16 | Lmsw_r32m16 | Lmsw_r64m16 => lmsw,
        Smsw_rm16 | Smsw_r32m16 | Smsw_r64m16 => smsw,
        Clts => clts,
        _ => return None,
    })
}

/// A raw descriptor: the 8 bytes every descriptor has, plus the upper 8
/// bytes of a 16-byte long-mode system descriptor (zero otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Desc {
    pub lo: u64,
    pub hi: u64,
}

/// Code-segment "conforming" and data-segment "expand-down" share a bit.
const DPL_MASK: u16 = 3 << attr::DPL_SHIFT;

impl Desc {
    /// Attributes packed as in [`attr`].
    #[inline]
    pub fn attr(&self) -> u16 {
        (((self.lo >> 40) & 0xff) | (((self.lo >> 52) & 0xf) << 12)) as u16
    }
    /// The 32-bit base of a legacy descriptor.
    #[inline]
    pub fn base(&self) -> u64 {
        ((self.lo >> 16) & 0xff_ffff) | (((self.lo >> 56) & 0xff) << 24)
    }
    /// The base of a system descriptor (64-bit in long mode).
    #[inline]
    pub fn sys_base(&self, long: bool) -> u64 {
        if long {
            self.base() | ((self.hi & 0xffff_ffff) << 32)
        } else {
            self.base()
        }
    }
    /// Byte-granular limit (scaled by G).
    #[inline]
    pub fn limit(&self) -> u32 {
        let raw = ((self.lo & 0xffff) | ((self.lo >> 32) & 0xf_0000)) as u32;
        if self.lo & (1 << 55) != 0 {
            (raw << 12) | 0xfff
        } else {
            raw
        }
    }
    #[inline]
    pub fn dpl(&self) -> u8 {
        ((self.lo >> 45) & 3) as u8
    }
    #[inline]
    pub fn present(&self) -> bool {
        self.lo & (1 << 47) != 0
    }
    /// Code or data (S = 1), as opposed to a system descriptor.
    #[inline]
    pub fn is_seg(&self) -> bool {
        self.lo & (1 << 44) != 0
    }
    #[inline]
    pub fn is_code(&self) -> bool {
        self.is_seg() && self.lo & (1 << 43) != 0
    }
    #[inline]
    pub fn is_data(&self) -> bool {
        self.is_seg() && self.lo & (1 << 43) == 0
    }
    #[inline]
    pub fn conforming(&self) -> bool {
        self.is_code() && self.lo & (1 << 42) != 0
    }
    /// Data, or code with R set.
    #[inline]
    pub fn readable(&self) -> bool {
        self.is_data() || (self.is_code() && self.lo & (1 << 41) != 0)
    }
    #[inline]
    pub fn writable_data(&self) -> bool {
        self.is_data() && self.lo & (1 << 41) != 0
    }
    /// Type field (low 4 bits of the access byte).
    #[inline]
    pub fn sys_type(&self) -> u8 {
        ((self.lo >> 40) & 0xf) as u8
    }
    /// L bit.
    #[inline]
    pub fn long(&self) -> bool {
        self.lo & (1 << 53) != 0
    }
    /// D/B bit.
    #[inline]
    pub fn db(&self) -> bool {
        self.lo & (1 << 54) != 0
    }
    /// The cached segment register value for a code/data descriptor
    /// (with the accessed bit, which loading sets).
    #[inline]
    pub fn segment(&self, selector: u16) -> Segment {
        Segment {
            selector,
            base: self.base(),
            limit: self.limit(),
            attr: self.attr() | attr::ACCESSED,
        }
    }
    /// Gate: target code-segment selector.
    #[inline]
    pub fn gate_selector(&self) -> u16 {
        (self.lo >> 16) as u16
    }
    /// Gate: entry point (the upper half of a 16-byte gate supplies bits 63:32).
    #[inline]
    pub fn gate_offset(&self) -> u64 {
        (self.lo & 0xffff) | ((self.lo >> 32) & 0xffff_0000) | ((self.hi & 0xffff_ffff) << 32)
    }
    /// Call gate: parameter count.
    #[inline]
    pub fn gate_params(&self) -> u8 {
        ((self.lo >> 32) & 0x1f) as u8
    }
    /// 64-bit IDT gate: interrupt stack table index.
    #[inline]
    pub fn gate_ist(&self) -> u8 {
        ((self.lo >> 32) & 7) as u8
    }
    /// The type field of the upper half of a 16-byte descriptor, which must be 0.
    #[inline]
    pub fn upper_type(&self) -> u8 {
        ((self.hi >> 40) & 0x1f) as u8
    }
}

/// Error code naming a selector (RPL bits dropped; TI kept).
#[inline]
pub(crate) fn sel_code(sel: u16) -> u32 {
    (sel & 0xfffc) as u32
}

/// Null selector (index 0 in the GDT, any RPL).
#[inline]
pub(crate) fn is_null(sel: u16) -> bool {
    sel & 0xfffc == 0
}

/// The unusable segment a null selector loads (base 0, as Intel CPUs do).
#[inline]
pub(crate) fn null_segment(sel: u16) -> Segment {
    Segment {
        selector: sel,
        base: 0,
        limit: 0,
        attr: 0,
    }
}

/// A null SS in 64-bit mode: unusable, but carries the DPL (= RPL = CPL).
#[inline]
pub(crate) fn null_ss(rpl: u8) -> Segment {
    Segment {
        selector: rpl as u16,
        base: 0,
        limit: 0,
        attr: (rpl as u16) << attr::DPL_SHIFT,
    }
}

/// A segment loaded in real mode: base = selector × 16; the limit and the
/// other attributes stay as they were (so "unreal mode" works), but the
/// segment becomes a present, writable data segment as on P6 and later CPUs.
#[inline]
pub(crate) fn real_segment(old: Segment, sel: u16) -> Segment {
    Segment {
        selector: sel,
        base: (sel as u64) << 4,
        limit: old.limit,
        attr: (old.attr & (DPL_MASK | 0xf000)) | attr::DATA_RW,
    }
}

/// A segment loaded in virtual-8086 mode: 64 KiB, DPL 3, writable data.
#[inline]
pub(crate) fn v86_segment(sel: u16) -> Segment {
    Segment {
        selector: sel,
        base: (sel as u64) << 4,
        limit: 0xffff,
        attr: attr::DATA_RW | DPL_MASK,
    }
}

/// Whether an access of `size` bytes at offset `off` lies within a data
/// (stack) segment, honouring expand-down segments.
#[inline]
pub(crate) fn within_limit(seg: &Segment, off: u64, size: u8) -> bool {
    let last = off.wrapping_add(size as u64 - 1);
    if last < off {
        return false;
    }
    if seg.attr & (attr::CODE | attr::DC) == attr::DC {
        let max = if seg.db() { 0xffff_ffff } else { 0xffff };
        off > seg.limit as u64 && last <= max
    } else {
        last <= seg.limit as u64
    }
}

/// Most values any one event or far transfer pushes (a call gate copying
/// 31 parameters pushes 35).
const MAX_PUSHES: usize = 40;

/// Builds the pushes of a far call, interrupt or exception on a stack that
/// may not be the current one. Every push is checked (segment limit or
/// canonical address, then paging) before anything is written, so a fault
/// leaves the machine untouched.
pub(crate) struct StackBuilder {
    seg: Segment,
    /// Stack pointer after the pushes so far.
    pub sp: u64,
    mask: u64,
    long: bool,
    fault: Fault,
    n: usize,
    writes: [(u64, u8, u64); MAX_PUSHES],
}

impl StackBuilder {
    /// A stack in `seg` at `sp`; `long` for a 64-bit stack (no limits,
    /// canonical checks); `fault` is raised when a push does not fit.
    pub fn new(seg: Segment, sp: u64, long: bool, fault: Fault) -> StackBuilder {
        let mask = if long {
            u64::MAX
        } else if seg.db() {
            0xffff_ffff
        } else {
            0xffff
        };
        StackBuilder {
            seg,
            sp: sp & mask,
            mask,
            long,
            fault,
            n: 0,
            writes: [(0, 0, 0); MAX_PUSHES],
        }
    }

    /// Mask of the stack address size.
    pub fn mask(&self) -> u64 {
        self.mask
    }

    /// Records a push of `size` bytes of `v`.
    pub fn push(&mut self, size: u8, v: u64) -> Result<()> {
        let sp = self.sp.wrapping_sub(size as u64) & self.mask;
        let lin = if self.long {
            if !is_canonical(sp) || !is_canonical(sp.wrapping_add(size as u64 - 1)) {
                return Err(self.fault.clone());
            }
            sp
        } else {
            if !within_limit(&self.seg, sp, size) {
                return Err(self.fault.clone());
            }
            self.seg.base.wrapping_add(sp) & 0xffff_ffff
        };
        if self.n >= MAX_PUSHES {
            return Err(Fault::Stop(crate::fault::StopKind::Unsupported(
                "stack frame larger than the interpreter supports".into(),
            )));
        }
        self.writes[self.n] = (lin, size, v & flags::mask(size));
        self.n += 1;
        self.sp = sp;
        Ok(())
    }

    /// Checks that every recorded push is writable with privilege `user`.
    pub fn probe(&self, ctx: &mut Ctx, user: bool) -> Result<()> {
        for &(lin, size, _) in &self.writes[..self.n] {
            ctx.translate(lin, Access::Write, user)?;
            if (lin & 0xfff) + size as u64 > 0x1000 {
                // A split access faults at the first byte of the second page.
                ctx.translate((lin | 0xfff).wrapping_add(1), Access::Write, user)?;
            }
        }
        Ok(())
    }

    /// Performs the pushes (at the current CPL, which the caller has
    /// already switched to the new one).
    pub fn commit(&self, ctx: &mut Ctx) -> Result<()> {
        for &(lin, size, v) in &self.writes[..self.n] {
            ctx.write_lin(lin, size, v)?;
        }
        Ok(())
    }
}

impl Ctx<'_> {
    /// Linear address of the descriptor `sel` names, if its `bytes` bytes lie
    /// within the GDT or LDT limit (None also when the LDT is unusable).
    pub(crate) fn desc_addr(&self, sel: u16, bytes: u64) -> Option<u64> {
        let (base, limit) = if sel & 4 != 0 {
            let l = &self.cpu.ldtr;
            if l.attr & attr::PRESENT == 0 {
                return None;
            }
            (l.base, l.limit as u64)
        } else {
            (self.cpu.gdtr.base, self.cpu.gdtr.limit as u64)
        };
        let off = (sel & !7) as u64;
        if off + bytes - 1 > limit {
            return None;
        }
        Some(base.wrapping_add(off))
    }

    /// Reads the 8-byte descriptor `sel` names: None when it lies beyond the
    /// table limit; also returns its linear address.
    pub(crate) fn read_desc(&mut self, sel: u16) -> Result<Option<(Desc, u64)>> {
        let Some(addr) = self.desc_addr(sel, 8) else {
            return Ok(None);
        };
        let lo = self.read_lin_sys(addr, 8)?;
        Ok(Some((Desc { lo, hi: 0 }, addr)))
    }

    /// Reads a descriptor that may be a 16-byte system descriptor: in long
    /// mode, a system descriptor (S = 0) needs all 16 bytes within the table.
    pub(crate) fn read_desc_long(&mut self, sel: u16) -> Result<Option<(Desc, u64)>> {
        let Some((mut d, addr)) = self.read_desc(sel)? else {
            return Ok(None);
        };
        if self.cpu.efer & cr::EFER_LMA != 0 && !d.is_seg() {
            if self.desc_addr(sel, 16).is_none() {
                return Ok(None);
            }
            d.hi = self.read_lin_sys(addr.wrapping_add(8), 8)?;
        }
        Ok(Some((d, addr)))
    }

    /// Sets the accessed bit of a code/data descriptor in memory.
    pub(crate) fn set_accessed(&mut self, addr: u64, d: &Desc) -> Result<()> {
        if d.lo & (1 << 40) == 0 {
            let byte = ((d.lo >> 40) & 0xff) | 1;
            self.write_lin_sys(addr.wrapping_add(5), 1, byte)?;
        }
        Ok(())
    }

    /// Loads data or stack segment register `s` with selector `sel`, with
    /// every check of MOV/POP Sreg and LDS/LES/LFS/LGS/LSS: real mode and
    /// virtual-8086 loads set base = sel × 16; in protected mode a null
    /// selector is allowed in DS/ES/FS/GS (and in SS in 64-bit mode at
    /// CPL < 3 with RPL = CPL), other selectors must name a present, usable
    /// descriptor (#GP/#SS/#NP with the selector as error code). Loading CS
    /// this way is not allowed (callers raise #UD). Callers that load SS
    /// through MOV or POP set the interrupt shadow themselves.
    pub(crate) fn load_segment(&mut self, s: SegReg, sel: u16) -> Result<()> {
        let i = s as usize;
        match self.cpu.mode {
            Mode::Real => {
                self.cpu.seg[i] = real_segment(self.cpu.seg[i], sel);
                return Ok(());
            }
            Mode::Virtual8086 => {
                self.cpu.seg[i] = v86_segment(sel);
                return Ok(());
            }
            _ => {}
        }
        if s == SegReg::Cs {
            return Err(Fault::ud());
        }
        let cpl = self.cpu.cpl;
        let rpl = (sel & 3) as u8;
        if is_null(sel) {
            if s == SegReg::Ss {
                if self.cpu.mode == Mode::Long64 && cpl != 3 && rpl == cpl {
                    self.cpu.seg[i] = null_ss(rpl);
                    return Ok(());
                }
                return Err(Fault::gp(0));
            }
            self.cpu.seg[i] = null_segment(sel);
            return Ok(());
        }
        let Some((d, addr)) = self.read_desc(sel)? else {
            return Err(Fault::gp(sel_code(sel)));
        };
        if s == SegReg::Ss {
            if rpl != cpl || !d.writable_data() || d.dpl() != cpl {
                return Err(Fault::gp(sel_code(sel)));
            }
            if !d.present() {
                return Err(Fault::ss(sel_code(sel)));
            }
        } else {
            if !d.readable() {
                return Err(Fault::gp(sel_code(sel)));
            }
            if !d.conforming() && (rpl > d.dpl() || cpl > d.dpl()) {
                return Err(Fault::gp(sel_code(sel)));
            }
            if !d.present() {
                return Err(Fault::np(sel_code(sel)));
            }
        }
        self.set_accessed(addr, &d)?;
        self.cpu.seg[i] = d.segment(sel);
        Ok(())
    }

    /// The inner stack for privilege level `dpl` from the current TSS
    /// (32-bit or 16-bit TSS), for call gates and interrupts in legacy
    /// mode. `ext` is OR-ed into the #TS error code.
    pub(crate) fn tss_stack_legacy(&mut self, dpl: u8, ext: u32) -> Result<(u16, u64)> {
        let tr = self.cpu.tr;
        let ts = Fault::ts(sel_code(tr.selector) | ext);
        if matches!(tr.sys_type(), 1 | 3) {
            let off = dpl as u64 * 4 + 2;
            if off + 3 > tr.limit as u64 {
                return Err(ts);
            }
            let sp = self.read_lin_sys(tr.base.wrapping_add(off), 2)?;
            let ss = self.read_lin_sys(tr.base.wrapping_add(off + 2), 2)?;
            Ok((ss as u16, sp))
        } else {
            let off = dpl as u64 * 8 + 4;
            if off + 5 > tr.limit as u64 {
                return Err(ts);
            }
            let sp = self.read_lin_sys(tr.base.wrapping_add(off), 4)?;
            let ss = self.read_lin_sys(tr.base.wrapping_add(off + 4), 2)?;
            Ok((ss as u16, sp))
        }
    }

    /// RSPn (`ist` = 0) or ISTn from the 64-bit TSS.
    pub(crate) fn tss_stack_long(&mut self, dpl: u8, ist: u8, ext: u32) -> Result<u64> {
        let tr = self.cpu.tr;
        let off = if ist != 0 {
            ist as u64 * 8 + 28
        } else {
            dpl as u64 * 8 + 4
        };
        if off + 7 > tr.limit as u64 {
            return Err(Fault::ts(sel_code(tr.selector) | ext));
        }
        self.read_lin_sys(tr.base.wrapping_add(off), 8)
    }

    /// Validates the inner stack segment `ss` for new privilege level `dpl`
    /// (call gates and interrupts): #TS(ss) unless it is a writable data
    /// segment with RPL = DPL = `dpl`, #SS(ss) when not present.
    pub(crate) fn inner_stack_segment(
        &mut self,
        ss: u16,
        dpl: u8,
        ext: u32,
    ) -> Result<(Segment, u64, Desc)> {
        if is_null(ss) {
            return Err(Fault::ts(ext));
        }
        let ts = Fault::ts(sel_code(ss) | ext);
        if (ss & 3) as u8 != dpl {
            return Err(ts);
        }
        let Some((d, addr)) = self.read_desc(ss)? else {
            return Err(ts);
        };
        if d.dpl() != dpl || !d.writable_data() {
            return Err(ts);
        }
        if !d.present() {
            return Err(Fault::ss(sel_code(ss) | ext));
        }
        Ok((d.segment(ss), addr, d))
    }

    /// Validates the outer stack segment popped by RET far or IRET when
    /// returning to privilege level `rpl` (#GP(ss) / #SS(ss)). In long mode
    /// a null SS is allowed when returning to 64-bit code at CPL < 3.
    pub(crate) fn outer_stack_segment(
        &mut self,
        ss: u16,
        rpl: u8,
        to_64: bool,
    ) -> Result<(Segment, Option<(u64, Desc)>)> {
        if is_null(ss) {
            if self.cpu.efer & cr::EFER_LMA != 0 && to_64 && (ss & 3) as u8 == rpl && rpl != 3 {
                return Ok((null_ss(rpl), None));
            }
            return Err(Fault::gp(0));
        }
        let gp = Fault::gp(sel_code(ss));
        let Some((d, addr)) = self.read_desc(ss)? else {
            return Err(gp);
        };
        if (ss & 3) as u8 != rpl || !d.writable_data() || d.dpl() != rpl {
            return Err(gp);
        }
        if !d.present() {
            return Err(Fault::ss(sel_code(ss)));
        }
        Ok((d.segment(ss), Some((addr, d))))
    }

    /// After a return to an outer privilege level: DS, ES, FS and GS become
    /// null when the new CPL may not use them (data or non-conforming code
    /// with DPL < CPL). Bases are kept (FS/GS bases in 64-bit mode survive).
    pub(crate) fn invalidate_data_segments(&mut self) {
        let cpl = self.cpu.cpl;
        for s in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
            let seg = &mut self.cpu.seg[s as usize];
            let a = seg.attr;
            let conforming_code = a & (attr::S | attr::CODE | attr::DC)
                == (attr::S | attr::CODE | attr::DC)
                && a & attr::PRESENT != 0;
            if is_null(seg.selector) || (seg.dpl() < cpl && !conforming_code) {
                seg.selector = 0;
                seg.attr = 0;
            }
        }
    }

    /// #GP(0) for SGDT/SIDT/SLDT/STR/SMSW at CPL > 0 when CR4.UMIP is set.
    #[inline]
    pub(crate) fn umip_check(&self) -> Result<()> {
        if self.cpu.cr4 & cr::CR4_UMIP != 0 && self.cpu.cpl > 0 {
            return Err(Fault::gp(0));
        }
        Ok(())
    }

    /// Reads a 16-bit register or memory operand (selectors, MSW).
    pub(crate) fn read_rm16(&mut self, insn: &Instruction, i: u32) -> Result<u16> {
        if insn.op_kind(i) == OpKind::Register {
            Ok(read_reg(self.cpu, insn.op_register(i)) as u16)
        } else {
            let (s, off) = mem_operand(self.cpu, insn);
            Ok(self.read_seg(s, off, 2)? as u16)
        }
    }

    /// Stores a selector-sized value: memory gets 16 bits, a 16-bit register
    /// keeps its upper bits, 32/64-bit registers are zero-extended.
    pub(crate) fn write_rm16(&mut self, insn: &Instruction, i: u32, v: u64) -> Result<()> {
        if insn.op_kind(i) == OpKind::Register {
            write_reg(self.cpu, insn.op_register(i), v);
            Ok(())
        } else {
            let (s, off) = mem_operand(self.cpu, insn);
            self.write_seg(s, off, 2, v & 0xffff)
        }
    }
}

/// #UD outside protected mode (LLDT, LTR, LAR, ... in real and V86 mode).
#[inline]
fn protected_only(ctx: &Ctx) -> Result<()> {
    if matches!(ctx.cpu.mode, Mode::Real | Mode::Virtual8086) {
        return Err(Fault::ud());
    }
    Ok(())
}

/// #GP(0) unless at CPL 0 (V86 mode runs at CPL 3).
#[inline]
fn cpl0(ctx: &Ctx) -> Result<()> {
    if ctx.cpu.cpl != 0 {
        return Err(Fault::gp(0));
    }
    Ok(())
}

fn mov_to_sreg(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let r = insn.op0_register();
    if r == Register::CS || !r.is_segment_register() {
        return Err(Fault::ud());
    }
    let sel = ctx.read_rm16(insn, 1)?;
    let s = seg_of(r);
    ctx.load_segment(s, sel)?;
    if s == SegReg::Ss {
        // MOV SS blocks interrupts (and debug traps) until after the next instruction.
        ctx.cpu.shadow_at = ctx.cpu.icount + 1;
    }
    Ok(())
}

fn mov_from_sreg(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let r = insn.op1_register();
    if !r.is_segment_register() {
        return Err(Fault::ud());
    }
    let v = ctx.cpu.seg[seg_of(r) as usize].selector as u64;
    ctx.write_rm16(insn, 0, v)
}

/// LDS/LES/LFS/LGS/LSS r, m16:16/m16:32/m16:64.
fn load_far_pointer(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    if insn.op1_kind() != OpKind::Memory {
        return Err(Fault::ud());
    }
    let s = match insn.mnemonic() {
        iced_x86::Mnemonic::Lds => SegReg::Ds,
        iced_x86::Mnemonic::Les => SegReg::Es,
        iced_x86::Mnemonic::Lfs => SegReg::Fs,
        iced_x86::Mnemonic::Lgs => SegReg::Gs,
        _ => SegReg::Ss,
    };
    let dst = insn.op0_register();
    let size = reg_size(dst);
    let (seg, off) = mem_operand(ctx.cpu, insn);
    let offset = ctx.read_seg(seg, off, size)?;
    let sel_off = off.wrapping_add(size as u64) & addr_mask(addr_size(insn));
    let sel = ctx.read_seg(seg, sel_off, 2)? as u16;
    ctx.load_segment(s, sel)?;
    write_reg(ctx.cpu, dst, offset);
    Ok(())
}

/// Reads the limit and base of an LGDT/LIDT operand.
fn read_table_operand(ctx: &mut Ctx, insn: &Instruction) -> Result<(u16, u64)> {
    if ctx.cpu.mode == Mode::Virtual8086 {
        return Err(Fault::gp(0));
    }
    cpl0(ctx)?;
    let (s, off) = mem_operand(ctx.cpu, insn);
    let am = addr_mask(addr_size(insn));
    let limit = ctx.read_seg(s, off, 2)? as u16;
    let base_off = off.wrapping_add(2) & am;
    let base = match insn.code() {
        Code::Lgdt_m1632_16 | Code::Lidt_m1632_16 => ctx.read_seg(s, base_off, 4)? & 0xff_ffff,
        Code::Lgdt_m1664 | Code::Lidt_m1664 => {
            let b = ctx.read_seg(s, base_off, 8)?;
            if !is_canonical(b) {
                return Err(Fault::gp(0));
            }
            b
        }
        _ => ctx.read_seg(s, base_off, 4)?,
    };
    Ok((limit, base))
}

fn lgdt(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let (limit, base) = read_table_operand(ctx, insn)?;
    ctx.cpu.gdtr.limit = limit;
    ctx.cpu.gdtr.base = base;
    Ok(())
}

fn lidt(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let (limit, base) = read_table_operand(ctx, insn)?;
    ctx.cpu.idtr.limit = limit;
    ctx.cpu.idtr.base = base;
    Ok(())
}

/// Stores limit and base (4 bytes of base for 16/32-bit operands, the
/// full 32-bit base even with a 16-bit operand as the SDM specifies; 8 bytes
/// in 64-bit mode).
fn store_table(ctx: &mut Ctx, insn: &Instruction, limit: u16, base: u64) -> Result<()> {
    ctx.umip_check()?;
    let (s, off) = mem_operand(ctx.cpu, insn);
    let am = addr_mask(addr_size(insn));
    let wide = matches!(insn.code(), Code::Sgdt_m1664 | Code::Sidt_m1664);
    let base_size = if wide { 8 } else { 4 };
    ctx.probe_write(s, off, 2)?;
    let base_off = off.wrapping_add(2) & am;
    ctx.probe_write(s, base_off, base_size)?;
    ctx.write_seg(s, off, 2, limit as u64)?;
    ctx.write_seg(s, base_off, base_size, base)
}

fn sgdt(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let t = ctx.cpu.gdtr;
    store_table(ctx, insn, t.limit, t.base)
}

fn sidt(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let t = ctx.cpu.idtr;
    store_table(ctx, insn, t.limit, t.base)
}

fn lldt(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    protected_only(ctx)?;
    cpl0(ctx)?;
    let sel = ctx.read_rm16(insn, 0)?;
    if is_null(sel) {
        ctx.cpu.ldtr = null_segment(sel);
        return Ok(());
    }
    let gp = Fault::gp(sel_code(sel));
    if sel & 4 != 0 {
        return Err(gp);
    }
    let long = ctx.cpu.efer & cr::EFER_LMA != 0;
    let Some((d, _)) = ctx.read_desc_long(sel)? else {
        return Err(gp);
    };
    if d.is_seg() || d.sys_type() != 2 || (long && d.upper_type() != 0) {
        return Err(gp);
    }
    if !d.present() {
        return Err(Fault::np(sel_code(sel)));
    }
    let base = d.sys_base(long);
    if long && !is_canonical(base) {
        return Err(gp);
    }
    ctx.cpu.ldtr = Segment {
        selector: sel,
        base,
        limit: d.limit(),
        attr: d.attr(),
    };
    Ok(())
}

fn ltr(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    protected_only(ctx)?;
    cpl0(ctx)?;
    let sel = ctx.read_rm16(insn, 0)?;
    if is_null(sel) {
        return Err(Fault::gp(0));
    }
    let gp = Fault::gp(sel_code(sel));
    if sel & 4 != 0 {
        return Err(gp);
    }
    let long = ctx.cpu.efer & cr::EFER_LMA != 0;
    let Some((d, addr)) = ctx.read_desc_long(sel)? else {
        return Err(gp);
    };
    // Only an available TSS: 16-bit (1) or 32-bit (9) in legacy mode, 64-bit (9) in long mode.
    let ok_type = if long {
        d.sys_type() == 9
    } else {
        matches!(d.sys_type(), 1 | 9)
    };
    if d.is_seg() || !ok_type || (long && d.upper_type() != 0) {
        return Err(gp);
    }
    if !d.present() {
        return Err(Fault::np(sel_code(sel)));
    }
    let base = d.sys_base(long);
    if long && !is_canonical(base) {
        return Err(gp);
    }
    // Mark the TSS busy in the GDT.
    let byte = ((d.lo >> 40) & 0xff) | 2;
    ctx.write_lin_sys(addr.wrapping_add(5), 1, byte)?;
    ctx.cpu.tr = Segment {
        selector: sel,
        base,
        limit: d.limit(),
        attr: d.attr() | 2,
    };
    Ok(())
}

fn sldt(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    protected_only(ctx)?;
    ctx.umip_check()?;
    let v = ctx.cpu.ldtr.selector as u64;
    ctx.write_rm16(insn, 0, v)
}

fn str_(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    protected_only(ctx)?;
    ctx.umip_check()?;
    let v = ctx.cpu.tr.selector as u64;
    ctx.write_rm16(insn, 0, v)
}

/// The descriptor LAR/LSL/VERR/VERW examine, if the selector is non-null,
/// within its table, and (for LAR/LSL) of a type `sys_ok` accepts, and the
/// privilege rule passes (DPL ≥ CPL and DPL ≥ RPL, except for conforming code).
fn query_desc(ctx: &mut Ctx, sel: u16, sys_ok: fn(u8, bool) -> bool) -> Result<Option<Desc>> {
    if is_null(sel) {
        return Ok(None);
    }
    let long = ctx.cpu.efer & cr::EFER_LMA != 0;
    let Some((d, _)) = ctx.read_desc_long(sel)? else {
        return Ok(None);
    };
    if !d.is_seg() && (!sys_ok(d.sys_type(), long) || (long && d.upper_type() != 0)) {
        return Ok(None);
    }
    if !d.conforming() {
        let dpl = d.dpl();
        if dpl < ctx.cpu.cpl || dpl < (sel & 3) as u8 {
            return Ok(None);
        }
    }
    Ok(Some(d))
}

#[inline]
fn set_zf(ctx: &mut Ctx, on: bool) {
    if on {
        ctx.cpu.rflags |= flags::ZF;
    } else {
        ctx.cpu.rflags &= !flags::ZF;
    }
}

fn lar(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    protected_only(ctx)?;
    let sel = ctx.read_rm16(insn, 1)?;
    let d = query_desc(ctx, sel, |t, long| {
        if long {
            matches!(t, 2 | 9 | 11 | 12)
        } else {
            matches!(t, 1 | 2 | 3 | 4 | 5 | 9 | 11 | 12)
        }
    })?;
    match d {
        Some(d) => {
            let dst = insn.op0_register();
            let m = if reg_size(dst) == 2 {
                0xff00
            } else {
                0x00f0_ff00
            };
            write_reg(ctx.cpu, dst, (d.lo >> 32) & m);
            set_zf(ctx, true);
        }
        None => set_zf(ctx, false),
    }
    Ok(())
}

fn lsl(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    protected_only(ctx)?;
    let sel = ctx.read_rm16(insn, 1)?;
    let d = query_desc(ctx, sel, |t, long| {
        if long {
            matches!(t, 2 | 9 | 11)
        } else {
            matches!(t, 1 | 2 | 3 | 9 | 11)
        }
    })?;
    match d {
        Some(d) => {
            write_reg(ctx.cpu, insn.op0_register(), d.limit() as u64);
            set_zf(ctx, true);
        }
        None => set_zf(ctx, false),
    }
    Ok(())
}

fn verr(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    protected_only(ctx)?;
    let sel = ctx.read_rm16(insn, 0)?;
    let d = query_desc(ctx, sel, |_, _| false)?;
    set_zf(ctx, matches!(d, Some(d) if d.readable()));
    Ok(())
}

fn verw(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    protected_only(ctx)?;
    let sel = ctx.read_rm16(insn, 0)?;
    let d = query_desc(ctx, sel, |_, _| false)?;
    set_zf(ctx, matches!(d, Some(d) if d.writable_data()));
    Ok(())
}

fn arpl(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    protected_only(ctx)?;
    let src = read_reg(ctx.cpu, insn.op1_register()) as u16;
    let dst = ctx.read_rm16(insn, 0)?;
    if dst & 3 < src & 3 {
        let v = (dst & !3) | (src & 3);
        if insn.op0_kind() == OpKind::Register {
            let g = &mut ctx.cpu.gpr[reg_index(insn.op0_register())];
            *g = (*g & !0xffff) | v as u64;
        } else {
            let (s, off) = mem_operand(ctx.cpu, insn);
            ctx.write_seg(s, off, 2, v as u64)?;
        }
        set_zf(ctx, true);
    } else {
        set_zf(ctx, false);
    }
    Ok(())
}

fn lmsw(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    cpl0(ctx)?;
    let v = ctx.read_rm16(insn, 0)? as u64;
    let old = ctx.cpu.cr0;
    // Only PE, MP, EM and TS are loaded, and PE can be set but not cleared.
    let new = (old & !0xe) | (v & 0xf) | (old & cr::CR0_PE);
    super::system::write_cr0(ctx, new)
}

fn smsw(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    ctx.umip_check()?;
    let cr0 = ctx.cpu.cr0;
    if insn.op0_kind() == OpKind::Register {
        let r = insn.op0_register();
        // 32/64-bit destinations receive the whole register, as P6 and later do.
        let v = if reg_size(r) == 2 { cr0 & 0xffff } else { cr0 };
        write_reg(ctx.cpu, r, v);
        Ok(())
    } else {
        let (s, off) = mem_operand(ctx.cpu, insn);
        ctx.write_seg(s, off, 2, cr0 & 0xffff)
    }
}

fn clts(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    cpl0(ctx)?;
    ctx.cpu.cr0 &= !cr::CR0_TS;
    Ok(())
}

/// Test helpers shared by the tests of descriptor.rs, far.rs, interrupt.rs,
/// system.rs and io.rs: descriptors and gates, fault-recording handlers, and
/// CPUs dropped to CPL 3.
#[cfg(test)]
pub(crate) mod testkit {
    use crate::state::{attr, cr, reg, Cpu, SegReg, Segment};
    use crate::testutil::{sel, TestBus, GDT, IDT};

    /// Where the fault-recording handler stubs live (16 bytes per vector).
    pub const HANDLERS: u64 = 0x20_0000;
    /// Real-mode handler stubs: segment 0x9000, 16 bytes per vector.
    pub const HANDLERS_REAL_SEG: u16 = 0x9000;
    /// Stack pointer of CPL-3 code.
    pub const USER_STACK: u64 = 0x88_0000;
    /// Ring-0 stack pointer in the test TSS.
    pub const ESP0: u64 = 0x8f_0000;

    /// A code/data/system descriptor.
    pub fn seg_desc(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
        (limit as u64 & 0xffff)
            | ((base as u64 & 0xff_ffff) << 16)
            | ((access as u64) << 40)
            | (((limit as u64 >> 16) & 0xf) << 48)
            | (((flags as u64) & 0xf) << 52)
            | (((base as u64) >> 24) << 56)
    }

    /// A legacy gate; `access` is the P/DPL/type byte (0x8e: present ring-0
    /// 32-bit interrupt gate, 0x8f trap gate, 0xec DPL-3 call gate ...);
    /// `count` is the call-gate parameter count or the IST index.
    pub fn gate(selector: u16, offset: u64, access: u8, count: u8) -> u64 {
        (offset & 0xffff)
            | ((selector as u64) << 16)
            | ((count as u64 & 0x1f) << 32)
            | ((access as u64) << 40)
            | (((offset >> 16) & 0xffff) << 48)
    }

    /// Writes GDT entry `index` (and enlarges the GDT limit to hold it).
    pub fn set_gdt(cpu: &mut Cpu, bus: &mut TestBus, index: u64, v: u64) {
        bus.put(GDT + 8 * index, 8, v);
        cpu.gdtr.limit = cpu.gdtr.limit.max((8 * index + 7) as u16);
    }

    /// Writes a legacy IDT gate.
    pub fn set_idt32(bus: &mut TestBus, vector: u8, v: u64) {
        bus.put(IDT + 8 * vector as u64, 8, v);
    }

    /// Writes a 16-byte long-mode IDT gate.
    pub fn set_idt64(
        bus: &mut TestBus,
        vector: u8,
        selector: u16,
        offset: u64,
        access: u8,
        ist: u8,
    ) {
        bus.put(
            IDT + 16 * vector as u64,
            8,
            gate(selector, offset, access, ist),
        );
        bus.put(IDT + 16 * vector as u64 + 8, 8, offset >> 32);
    }

    /// Installs, for vectors 0..=255, ring-0 handlers that load the vector
    /// into EBX and halt (`mov ebx, v; hlt`, valid in 32- and 64-bit code),
    /// through DPL-0 interrupt gates; in real mode through the IVT.
    pub fn install_handlers(cpu: &Cpu, bus: &mut TestBus) {
        let real = cpu.cr0 & cr::CR0_PE == 0;
        let long = cpu.efer & cr::EFER_LMA != 0;
        for v in 0..=255u8 {
            if real {
                let at = ((HANDLERS_REAL_SEG as u64) << 4) + 16 * v as u64;
                bus.write(at, &[0xbb, v, 0, 0xf4]);
                bus.put(
                    4 * v as u64,
                    4,
                    ((HANDLERS_REAL_SEG as u64) << 16) | (16 * v as u64),
                );
            } else {
                let at = HANDLERS + 16 * v as u64;
                bus.write(at, &[0xbb, v, 0, 0, 0, 0xf4]);
                if long {
                    set_idt64(bus, v, sel::CODE64, at, 0x8e, 0);
                } else {
                    set_idt32(bus, v, gate(sel::CODE32, at, 0x8e, 0));
                }
            }
        }
    }

    /// Address of the handler stub of vector `v` (the HLT is at +5).
    pub fn handler_addr(v: u8) -> u64 {
        HANDLERS + 16 * v as u64
    }

    fn flat(selector: u16, a: u16) -> Segment {
        Segment {
            selector,
            base: 0,
            limit: 0xffff_ffff,
            attr: a,
        }
    }

    /// Drops a protected- or long-mode test CPU to CPL 3 with flat user segments.
    pub fn to_user(cpu: &mut Cpu) {
        let dpl3 = 3 << attr::DPL_SHIFT;
        let data = flat(
            sel::DATA32_USER,
            attr::DATA_RW | attr::DB | attr::GRAN | dpl3,
        );
        for s in SegReg::ALL {
            cpu.seg[s as usize] = data;
        }
        cpu.seg[SegReg::Cs as usize] = if cpu.efer & cr::EFER_LMA != 0 {
            flat(
                sel::CODE64_USER,
                attr::CODE_RX | attr::LONG | attr::GRAN | dpl3,
            )
        } else {
            flat(
                sel::CODE32_USER,
                attr::CODE_RX | attr::DB | attr::GRAN | dpl3,
            )
        };
        cpu.cpl = 3;
        cpu.gpr[reg::RSP] = USER_STACK;
        cpu.update_mode();
        cpu.end_block = false;
    }

    /// Assembles `build` for `bits` at `ip`.
    pub fn asm_at(
        bits: u32,
        ip: u64,
        build: impl FnOnce(&mut iced_x86::code_asm::CodeAssembler) -> Result<(), iced_x86::IcedError>,
    ) -> Vec<u8> {
        let mut a = iced_x86::code_asm::CodeAssembler::new(bits).expect("bitness");
        build(&mut a).expect("assemble");
        a.assemble(ip).expect("assemble")
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use crate::fault::vector;
    use crate::interp::RunExit;
    use crate::state::{cr, reg, Cpu, Mode, SegReg};
    use crate::testutil::{run_asm, sel, TestBus, TestMode, DATA, GDT};
    use iced_x86::code_asm::*;

    type Build = dyn Fn(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>;

    /// Runs `build` in `mode` with fault handlers installed; returns the state
    /// and the vector that was taken (EBX), if any.
    fn run_faulting(
        mode: TestMode,
        build: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
        setup: impl FnOnce(&mut Cpu, &mut TestBus),
    ) -> (Cpu, TestBus, Option<u8>) {
        let (cpu, bus, exit) = run_asm(
            mode,
            |a| {
                a.mov(ebx, 0xffff_ffffu32)?;
                build(a)
            },
            |cpu, bus| {
                install_handlers(cpu, bus);
                setup(cpu, bus);
            },
        );
        assert_eq!(exit, RunExit::Halted, "{mode:?}");
        let v = cpu.gpr[reg::RBX] as u32;
        (
            cpu,
            bus,
            if v == 0xffff_ffff {
                None
            } else {
                Some(v as u8)
            },
        )
    }

    /// The error code on top of the handler's stack (32-bit frame).
    fn err32(cpu: &Cpu, bus: &TestBus) -> u64 {
        bus.read(cpu.gpr[reg::RSP] & 0xffff_ffff, 4)
    }

    #[test]
    fn real_to_protected_via_lgdt_cr0_far_jmp() {
        let pm = asm_at(32, 0x1_0100, |a| {
            a.mov(ax, 0x58u32)?;
            a.mov(ds, ax)?;
            a.mov(ax, sel::DATA32 as u32)?;
            a.mov(ss, ax)?;
            a.mov(esp, 0x9_0000u32)?;
            a.mov(dword_ptr(0x80_0000), 0x1234u32)?;
            a.hlt()
        });
        let (cpu, bus, exit) = run_asm(
            TestMode::Real,
            |a| {
                a.lgdt(ptr(0x7000))?;
                a.mov(eax, 0x11u32)?;
                a.mov(cr0, eax)?;
                // jmp dword 0x08:0x10100
                a.db(&[0x66, 0xea, 0x00, 0x01, 0x01, 0x00, 0x08, 0x00])
            },
            |cpu, bus| {
                cpu.gdtr.base = 0;
                cpu.gdtr.limit = 0;
                bus.put(0x7000, 2, 0x5f);
                bus.put(0x7002, 4, GDT);
                // An unaccessed flat data segment at 0x58.
                bus.put(GDT + 0x58, 8, seg_desc(0, 0xfffff, 0x92, 0xc));
                bus.write(0x1_0100, &pm);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.mode, Mode::Protected);
        assert_eq!(cpu.bitness, 32);
        assert_eq!(cpu.sreg(SegReg::Cs).selector, sel::CODE32);
        assert_eq!(cpu.gdtr.base, GDT);
        assert_eq!(cpu.gdtr.limit, 0x5f);
        assert_eq!(cpu.sreg(SegReg::Ds).limit, 0xffff_ffff);
        assert_eq!(cpu.sreg(SegReg::Ds).selector, 0x58);
        assert!(cpu.sreg(SegReg::Ss).db());
        assert_eq!(bus.read(0x80_0000, 4), 0x1234);
        assert_eq!(bus.read(GDT + 0x58 + 5, 1), 0x93, "accessed bit set");
    }

    #[test]
    fn real_mode_loads_keep_limit_and_attributes() {
        let (cpu, _, exit) = run_asm(
            TestMode::Real,
            |a| {
                a.mov(ax, 0x1234u32)?;
                a.mov(ds, ax)?;
                a.mov(es, ax)?;
                a.les(di, ptr(0x100))?;
                a.hlt()
            },
            |cpu, bus| {
                cpu.seg[SegReg::Ds as usize].limit = 0xffff_ffff; // unreal mode
                bus.put(0x1_2340 + 0x100, 2, 0xbeef);
                bus.put(0x1_2340 + 0x102, 2, 0x2000);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        let d = cpu.sreg(SegReg::Ds);
        assert_eq!(
            (d.selector, d.base, d.limit),
            (0x1234, 0x1_2340, 0xffff_ffff)
        );
        let e = cpu.sreg(SegReg::Es);
        assert_eq!((e.selector, e.base, e.limit), (0x2000, 0x2_0000, 0xffff));
        assert_eq!(cpu.gpr[reg::RDI] & 0xffff, 0xbeef);
    }

    /// One segment-load case: code, then the expected (vector, error code).
    fn load_fault(
        mode: TestMode,
        build: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
    ) -> (Option<u8>, u64, Cpu) {
        let (cpu, bus, v) = run_faulting(mode, build, |cpu, bus| {
            set_gdt(cpu, bus, 11, seg_desc(0, 0xfffff, 0x98, 0xc)); // 0x58: execute-only code
            set_gdt(cpu, bus, 12, seg_desc(0, 0xfffff, 0x12, 0xc)); // 0x60: data, not present
            set_gdt(cpu, bus, 13, seg_desc(0, 0xfffff, 0x9e, 0xc)); // 0x68: conforming readable code
        });
        let e = if cpu.bitness == 64 {
            bus.read(cpu.gpr[reg::RSP], 8)
        } else {
            err32(&cpu, &bus)
        };
        (v, e, cpu)
    }

    #[test]
    fn protected_segment_load_checks() {
        let gp = Some(vector::GP);
        let cases: Vec<(Box<Build>, Option<u8>, u64)> = vec![
            (
                Box::new(|a| {
                    a.mov(ax, 0x78u32)?;
                    a.mov(ds, ax)
                }),
                gp,
                0x78,
            ), // beyond the GDT limit
            (
                Box::new(|a| {
                    a.mov(ax, 0x58u32)?;
                    a.mov(es, ax)
                }),
                gp,
                0x58,
            ), // execute-only code
            (
                Box::new(|a| {
                    a.mov(ax, 0x60u32)?;
                    a.mov(fs, ax)
                }),
                Some(vector::NP),
                0x60,
            ),
            (
                Box::new(|a| {
                    a.mov(ax, 0x60u32)?;
                    a.mov(ss, ax)
                }),
                Some(vector::SS),
                0x60,
            ),
            (
                Box::new(|a| {
                    a.mov(ax, 0x08u32)?;
                    a.mov(ss, ax)
                }),
                gp,
                0x08,
            ), // code in SS
            (
                Box::new(|a| {
                    a.mov(ax, 0x03u32)?;
                    a.mov(ss, ax)
                }),
                gp,
                0,
            ), // null SS
            (
                Box::new(|a| {
                    a.mov(ax, 0x3bu32)?;
                    a.mov(ss, ax)
                }),
                gp,
                0x38,
            ), // DPL 3 stack at CPL 0
            (
                Box::new(|a| {
                    a.mov(ax, 0x13u32)?;
                    a.mov(gs, ax)
                }),
                gp,
                0x10,
            ), // RPL > DPL
            (
                Box::new(|a| {
                    a.mov(ax, 0x13u32)?;
                    a.lds(eax, ptr(0x80_0000))
                }),
                gp,
                0x58,
            ), // selector 0x5a from memory
            (
                Box::new(|a| {
                    a.xor(eax, eax)?;
                    a.mov(ds, ax)?;
                    a.mov(eax, dword_ptr(0x80_0000))
                }),
                gp,
                0,
            ), // null DS used
        ];
        for (i, (build, v, e)) in cases.into_iter().enumerate() {
            let (got, err, _) = load_fault(TestMode::Protected32, |a| {
                a.mov(dword_ptr(0x80_0004), 0x5au32)?;
                build(a)?;
                a.hlt()
            });
            assert_eq!((got, err), (v, e), "case {i}");
        }
        // Loads that succeed: readable code, conforming code with RPL 3,
        // DPL-3 data, null selectors in data registers.
        let (got, _, cpu) = load_fault(TestMode::Protected32, |a| {
            a.mov(ax, 0x08u32)?;
            a.mov(ds, ax)?;
            a.mov(ax, 0x6bu32)?;
            a.mov(es, ax)?;
            a.mov(ax, 0x3bu32)?;
            a.mov(fs, ax)?;
            a.mov(ax, 0x3u32)?;
            a.mov(gs, ax)?;
            a.hlt()
        });
        assert_eq!(got, None);
        assert_eq!(cpu.sreg(SegReg::Ds).selector, 0x08);
        assert_eq!(cpu.sreg(SegReg::Es).selector, 0x6b);
        assert_eq!(cpu.sreg(SegReg::Fs).dpl(), 3);
        assert_eq!(
            (cpu.sreg(SegReg::Gs).selector, cpu.sreg(SegReg::Gs).attr),
            (3, 0)
        );
    }

    #[test]
    fn mov_cs_is_ud_and_mov_ss_sets_shadow() {
        let (got, _, _) = load_fault(TestMode::Protected32, |a| a.db(&[0x8e, 0xc8, 0xf4]));
        assert_eq!(got, Some(vector::UD));
        let (cpu, _, exit) = run_asm(
            TestMode::Protected32,
            |a| {
                a.mov(ax, 0x10u32)?;
                a.mov(ss, ax)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.shadow_at, 2, "MOV SS at icount 1 shadows icount 2");
    }

    #[test]
    fn long_mode_null_ss_and_fs_base() {
        let (got, _, cpu) = load_fault(TestMode::Long64, |a| {
            a.xor(eax, eax)?;
            a.mov(ss, ax)?;
            a.mov(fs, ax)?;
            a.push(rax)?;
            a.hlt()
        });
        assert_eq!(got, None);
        assert_eq!(cpu.sreg(SegReg::Ss).selector, 0);
        assert_eq!(cpu.sreg(SegReg::Fs).base, 0);
        // RPL != CPL is still refused.
        let (got, err, _) = load_fault(TestMode::Long64, |a| {
            a.mov(eax, 3u32)?;
            a.mov(ss, ax)?;
            a.hlt()
        });
        assert_eq!((got, err), (Some(vector::GP), 0));
    }

    #[test]
    fn mov_from_sreg_widths() {
        let (cpu, bus, exit) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(rax, -1i64)?;
                a.mov(rcx, -1i64)?;
                a.mov(ax, ds)?;
                a.mov(ecx, es)?;
                a.mov(rdx, -1i64)?;
                a.mov(word_ptr(0x80_0000), cs)?;
                a.hlt()
            },
            |_, bus| bus.put(0x80_0000, 8, u64::MAX),
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RAX], 0xffff_ffff_ffff_0010);
        assert_eq!(cpu.gpr[reg::RCX], 0x10);
        assert_eq!(bus.read(0x80_0000, 8), 0xffff_ffff_ffff_0018);
    }

    #[test]
    fn far_pointer_loads() {
        let (cpu, _, exit) = run_asm(
            TestMode::Protected32,
            |a| {
                a.lds(esi, ptr(DATA))?;
                a.lfs(di, ptr(DATA + 8))?;
                a.lss(esp, ptr(DATA + 16))?;
                a.hlt()
            },
            |_, bus| {
                bus.put(DATA, 4, 0x1122_3344);
                bus.put(DATA + 4, 2, sel::DATA32 as u64);
                bus.put(DATA + 8, 2, 0x5566);
                bus.put(DATA + 10, 2, sel::CODE32 as u64);
                bus.put(DATA + 16, 4, 0x0088_0000);
                bus.put(DATA + 20, 2, sel::DATA32 as u64);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RSI], 0x1122_3344);
        assert_eq!(cpu.gpr[reg::RDI] & 0xffff, 0x5566);
        assert_eq!(cpu.sreg(SegReg::Fs).selector, sel::CODE32);
        assert_eq!(cpu.gpr[reg::RSP], 0x88_0000);
        // 64-bit LSS with a 64-bit offset.
        let (cpu, _, exit) = run_asm(
            TestMode::Long64,
            |a| {
                a.lss(rsp, ptr(DATA))?;
                a.lgs(eax, ptr(DATA + 16))?;
                a.hlt()
            },
            |_, bus| {
                bus.put(DATA, 8, 0x7f_1234);
                bus.put(DATA + 8, 2, sel::DATA32 as u64);
                bus.put(DATA + 16, 4, 0xabcd);
                bus.put(DATA + 20, 2, sel::DATA32_USER as u64);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RSP], 0x7f_1234);
        assert_eq!(cpu.gpr[reg::RAX], 0xabcd);
        assert_eq!(cpu.sreg(SegReg::Gs).selector, sel::DATA32_USER);
    }

    #[test]
    fn descriptor_table_registers() {
        // 32-bit LGDT/SGDT and LIDT/SIDT; 16-bit operand LGDT keeps 24 bits of base.
        let (cpu, bus, exit) = run_asm(
            TestMode::Protected32,
            |a| {
                a.sidt(ptr(DATA + 0x20))?;
                a.lidt(ptr(DATA))?;
                a.sidt(ptr(DATA + 0x30))?;
                a.sgdt(ptr(DATA + 0x40))?;
                a.db(&[0x66, 0x0f, 0x01, 0x15])?; // o16 lgdt [DATA + 8]
                a.dd(&[(DATA + 8) as u32])?;
                a.hlt()
            },
            |_, bus| {
                bus.put(DATA, 2, 0x7ff);
                bus.put(DATA + 2, 4, 0xaabb_ccdd);
                bus.put(DATA + 8, 2, 0x57);
                bus.put(DATA + 10, 4, 0x1200_0500);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(bus.read(DATA + 0x20, 6), 0x0000_1000_0fff);
        assert_eq!((cpu.idtr.limit, cpu.idtr.base), (0x7ff, 0xaabb_ccdd));
        assert_eq!(bus.read(DATA + 0x30, 6), 0xaabb_ccdd_07ff);
        assert_eq!(bus.read(DATA + 0x40, 6), 0x0000_0500_0057);
        assert_eq!((cpu.gdtr.limit, cpu.gdtr.base), (0x57, 0x500));
        // 64-bit: ten-byte operands; a non-canonical base is #GP(0).
        let (cpu, bus, exit) = run_asm(
            TestMode::Long64,
            |a| {
                a.sgdt(ptr(DATA + 0x40))?;
                a.lidt(ptr(DATA))?;
                a.hlt()
            },
            |_, bus| {
                bus.put(DATA, 2, 0xfff);
                bus.put(DATA + 2, 8, 0xffff_8000_0000_1000);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(bus.read(DATA + 0x40, 8), 0x0500_0057);
        assert_eq!(bus.read(DATA + 0x48, 2), 0);
        assert_eq!(cpu.idtr.base, 0xffff_8000_0000_1000);
        let (_, err, _) = load_fault(TestMode::Long64, |a| {
            a.mov(rax, 0x8000_0000_0000_0000u64)?;
            a.mov(qword_ptr(DATA + 2), rax)?;
            a.lgdt(ptr(DATA))?;
            a.hlt()
        });
        assert_eq!(err, 0);
    }

    #[test]
    fn lgdt_at_cpl3_and_sgdt_with_umip() {
        let run_user =
            |cr4_bits: u64, build: fn(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>| {
                let (cpu, bus, v) = run_faulting(TestMode::Protected32, build, move |cpu, _| {
                    cpu.cr4 |= cr4_bits;
                    to_user(cpu);
                });
                (v, err32(&cpu, &bus), cpu.cpl)
            };
        assert_eq!(
            run_user(0, |a| {
                a.lgdt(ptr(DATA))?;
                a.hlt()
            }),
            (Some(vector::GP), 0, 0)
        );
        // SGDT is allowed at CPL 3 without UMIP (then HLT faults).
        let (v, _, _) = run_user(0, |a| {
            a.sgdt(ptr(DATA))?;
            a.mov(ebx, 0x77u32)?;
            a.int3()
        });
        assert_eq!(v, Some(vector::GP), "INT3 through a DPL-0 gate at CPL 3");
        assert_eq!(
            run_user(cr::CR4_UMIP, |a| {
                a.sgdt(ptr(DATA))?;
                a.hlt()
            }),
            (Some(vector::GP), 0, 0)
        );
        assert_eq!(
            run_user(cr::CR4_UMIP, |a| {
                a.smsw(eax)?;
                a.hlt()
            }),
            (Some(vector::GP), 0, 0)
        );
        assert_eq!(
            run_user(cr::CR4_UMIP, |a| {
                a.str(eax)?;
                a.hlt()
            }),
            (Some(vector::GP), 0, 0)
        );
    }

    #[test]
    fn lldt_ltr_sldt_str() {
        let (cpu, bus, v) = run_faulting(
            TestMode::Protected32,
            |a| {
                a.mov(ax, 0x60u32)?;
                a.lldt(ax)?;
                a.mov(ax, 0x0fu32)?; // LDT entry 1, RPL 3
                a.mov(es, ax)?;
                a.sldt(ebx)?;
                a.mov(ax, 0x68u32)?;
                a.ltr(ax)?;
                a.str(ecx)?;
                a.mov(ebx, 0xffff_ffffu32)?;
                a.ltr(ax)?; // now busy: #GP(0x68)
                a.hlt()
            },
            |cpu, bus| {
                set_gdt(cpu, bus, 12, seg_desc(0x6000, 0x17, 0x82, 0));
                set_gdt(cpu, bus, 13, seg_desc(0x4000, 0x67, 0x89, 0));
                bus.put(0x6008, 8, seg_desc(0x1234_5000, 0xfffff, 0xf2, 0xc));
            },
        );
        assert_eq!(v, Some(vector::GP));
        assert_eq!(err32(&cpu, &bus), 0x68);
        assert_eq!(
            (cpu.ldtr.selector, cpu.ldtr.base, cpu.ldtr.limit),
            (0x60, 0x6000, 0x17)
        );
        assert_eq!(cpu.sreg(SegReg::Es).base, 0x1234_5000);
        assert_eq!(bus.read(0x6008 + 5, 1), 0xf3, "LDT descriptor accessed");
        assert_eq!(cpu.gpr[reg::RCX], 0x68);
        assert_eq!(
            (cpu.tr.selector, cpu.tr.base, cpu.tr.sys_type()),
            (0x68, 0x4000, 11)
        );
        assert_eq!(bus.read(GDT + 0x68 + 5, 1), 0x8b, "TSS marked busy");

        // Long mode: 16-byte TSS descriptor; LLDT of a non-LDT is #GP(sel).
        let (cpu, bus, v) = run_faulting(
            TestMode::Long64,
            |a| {
                a.mov(ax, sel::TSS as u32)?;
                a.ltr(ax)?;
                a.mov(ax, 0x10u32)?;
                a.lldt(ax)?;
                a.hlt()
            },
            |cpu, bus| {
                bus.put(GDT + 0x50, 8, 0x1);
                cpu.tr.selector = 0;
                let _ = cpu;
            },
        );
        assert_eq!(v, Some(vector::GP));
        assert_eq!(bus.read(cpu.gpr[reg::RSP], 8), 0x10);
        assert_eq!((cpu.tr.selector, cpu.tr.base), (sel::TSS, 0x1_0000_3000));
        // Real mode: LLDT is #UD.
        let (_, _, v) = run_faulting(
            TestMode::Real,
            |a| {
                a.lldt(ax)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(v, Some(vector::UD));
    }

    #[test]
    fn lar_lsl_verr_verw() {
        let (cpu, _, exit) = run_asm(
            TestMode::Protected32,
            |a| {
                a.mov(edx, 0u32)?;
                a.mov(ax, sel::CODE32 as u32)?;
                a.lar(ebx, eax)?; // 0x00c09b00
                a.setz(dl)?;
                a.lsl(ecx, eax)?; // 0xffffffff
                a.mov(ax, sel::TSS as u32)?;
                a.lar(si, ax)?; // 0x8900 (16-bit)
                a.mov(edi, 0x5555_5555u32)?;
                a.mov(ax, 0x13u32)?; // RPL 3 on a DPL-0 segment: fails
                a.lar(edi, eax)?;
                a.setz(dh)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], 0x00c0_9b00);
        assert_eq!(cpu.gpr[reg::RCX], 0xffff_ffff);
        assert_eq!(cpu.gpr[reg::RSI] & 0xffff, 0x8900);
        assert_eq!(cpu.gpr[reg::RDI], 0x5555_5555, "unchanged on failure");
        assert_eq!(cpu.gpr[reg::RDX] & 0xffff, 0x0001);

        let (cpu, _, exit) = run_asm(
            TestMode::Protected32,
            |a| {
                a.xor(ebx, ebx)?;
                for (i, (s, write)) in [
                    (sel::CODE32, false),
                    (sel::CODE32, true),
                    (sel::DATA32, true),
                    (0x78, false),
                    (0, false),
                    (0x13, true),
                ]
                .into_iter()
                .enumerate()
                {
                    a.mov(ax, s as u32)?;
                    if write {
                        a.verw(ax)?
                    } else {
                        a.verr(ax)?
                    }
                    a.setz(cl)?;
                    a.movzx(ecx, cl)?;
                    a.shl(ecx, i as u32)?;
                    a.or(ebx, ecx)?;
                }
                a.mov(ax, 0x08u32)?;
                a.mov(dx, 0x0003u32)?;
                a.arpl(ax, dx)?;
                a.setz(cl)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], 0b000101, "verr code, verw data");
        assert_eq!(cpu.gpr[reg::RAX] & 0xffff, 0x0b);
        assert_eq!(cpu.gpr[reg::RCX] & 0xff, 1);

        // 64-bit LSL of the 16-byte TSS descriptor.
        let (cpu, _, exit) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(eax, sel::TSS as u32)?;
                a.lsl(rbx, rax)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], 0x67);
    }

    #[test]
    fn msw_instructions() {
        let (cpu, _, exit) = run_asm(
            TestMode::Protected32,
            |a| {
                a.mov(eax, 0x8000_000eu32)?; // MP, EM, TS; PE clear (cannot clear PE)
                a.lmsw(ax)?;
                a.smsw(ebx)?;
                a.mov(ecx, -1i32)?;
                a.smsw(cx)?;
                a.clts()?;
                a.smsw(edx)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(exit, RunExit::Halted);
        let base = Cpu::new(0).cr0 | cr::CR0_PE;
        assert_eq!(cpu.gpr[reg::RBX], base | 0xe);
        assert_eq!(cpu.gpr[reg::RCX], 0xffff_0000 | ((base | 0xe) & 0xffff));
        assert_eq!(cpu.gpr[reg::RDX], base | 0x6);
        // LMSW enters protected mode from real mode.
        let (cpu, _, exit) = run_asm(
            TestMode::Real,
            |a| {
                a.mov(ax, 1u32)?;
                a.lmsw(ax)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.mode, Mode::Protected);
    }
}
