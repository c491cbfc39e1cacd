//! Stack instructions: PUSH/POP of general registers, memory, immediates and
//! segment registers, PUSHA/PUSHAD/POPA/POPAD, PUSHF/PUSHFD/PUSHFQ and
//! POPF/POPFD/POPFQ, ENTER and LEAVE — plus the push/pop primitives every
//! other group uses (`push`, `pop`, `peek`, `sp`, `set_sp`).
//!
//! Every handler checks (or performs into temporaries) all its memory
//! accesses before it commits RSP or any other register, so a fault leaves
//! the architectural registers as they were (the run loop restores RIP).
//!
//! Choices where the SDM leaves room:
//! - A 32/64-bit PUSH of a segment register decrements the stack pointer by
//!   the operand size but writes only the 16-bit selector, leaving the upper
//!   bytes of the slot unmodified (what recent Intel Core/Atom processors do;
//!   the SDM also allows a zero-extended push). The whole slot is still
//!   checked against the SS limit.
//! - POP of a segment register reads the whole operand-size slot and loads its
//!   low 16 bits; the stack pointer advances with the stack size in force
//!   before the load (matters only for POP SS changing SS.B).
//! - PUSHF/POPF in virtual-8086 mode with IOPL < 3 raise #GP(0): CR4.VME
//!   (virtual interrupt flags) is not modelled.
//! - A 16-bit POPF leaves RF (bit 16) alone; 32/64-bit POPF clears it.
//! - ENTER checks that the final stack pointer is writable (the SDM's "#PF if
//!   a write using the final value of the stack pointer would fault") and
//!   commits RSP/RBP only after every access succeeded; stores below the old
//!   stack pointer made before a fault may remain, as on hardware.

use iced_x86::{Code, Instruction, OpKind};

use crate::block::Handler;
use crate::fault::{Fault, Result};
use crate::flags;
use crate::interp::operand::{read_reg, reg_index, reg_size, seg_of};
use crate::interp::Ctx;
use crate::state::{cr, reg, Cpu, SegReg};

/// The handler for `insn` if this group implements it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    use Code::*;
    Some(match insn.code() {
        Push_r16 | Push_r32 | Push_r64 => push_reg,
        Push_rm16 | Push_rm32 | Push_rm64 => {
            if insn.op0_kind() == OpKind::Register {
                push_reg
            } else {
                push_mem
            }
        }
        Push_imm16 | Pushw_imm8 => push_imm::<2>,
        Pushd_imm32 | Pushd_imm8 => push_imm::<4>,
        Pushq_imm32 | Pushq_imm8 => push_imm::<8>,
        Pop_r16 | Pop_r32 | Pop_r64 => pop_reg,
        Pop_rm16 | Pop_rm32 | Pop_rm64 => {
            if insn.op0_kind() == OpKind::Register {
                pop_reg
            } else {
                pop_mem
            }
        }
        Pushw_ES | Pushw_CS | Pushw_SS | Pushw_DS | Pushw_FS | Pushw_GS => push_sreg::<2>,
        Pushd_ES | Pushd_CS | Pushd_SS | Pushd_DS | Pushd_FS | Pushd_GS => push_sreg::<4>,
        Pushq_FS | Pushq_GS => push_sreg::<8>,
        Popw_ES | Popw_SS | Popw_DS | Popw_FS | Popw_GS => pop_sreg::<2>,
        Popd_ES | Popd_SS | Popd_DS | Popd_FS | Popd_GS => pop_sreg::<4>,
        Popq_FS | Popq_GS => pop_sreg::<8>,
        Pushaw => pusha::<2>,
        Pushad => pusha::<4>,
        Popaw => popa::<2>,
        Popad => popa::<4>,
        Pushfw => pushf::<2>,
        Pushfd => pushf::<4>,
        Pushfq => pushf::<8>,
        Popfw => popf::<2>,
        Popfd => popf::<4>,
        Popfq => popf::<8>,
        Enterw_imm16_imm8 => enter::<2>,
        Enterd_imm16_imm8 => enter::<4>,
        Enterq_imm16_imm8 => enter::<8>,
        Leavew => leave::<2>,
        Leaved => leave::<4>,
        Leaveq => leave::<8>,
        _ => return None,
    })
}

/// Writes general register `idx` with an operand of `size` bytes using the
/// x86 merge rules: 8/16-bit writes keep the other bits, 32-bit writes
/// zero-extend, 64-bit writes replace.
#[inline(always)]
pub(super) fn write_gpr(cpu: &mut Cpu, idx: usize, size: u8, v: u64) {
    let g = &mut cpu.gpr[idx];
    *g = match size {
        1 => (*g & !0xff) | (v & 0xff),
        2 => (*g & !0xffff) | (v & 0xffff),
        4 => v & 0xffff_ffff,
        _ => v,
    };
}

impl Ctx<'_> {
    /// Stack pointer masked to the stack address size.
    #[inline(always)]
    pub fn sp(&self) -> u64 {
        self.cpu.gpr[reg::RSP] & ss_mask(self.cpu.stack_size())
    }

    /// Sets the stack pointer, touching only the bits of the stack address size.
    #[inline(always)]
    pub fn set_sp(&mut self, v: u64) {
        let size = self.cpu.stack_size();
        self.set_sp_sized(size, v);
    }

    /// Sets the stack pointer as a stack of `stack_size` bytes would (used
    /// when the stack size in force at the start of an instruction may have
    /// changed, as with POP SS).
    #[inline(always)]
    fn set_sp_sized(&mut self, stack_size: u8, v: u64) {
        // A 32-bit stack write of ESP zero-extends (as any 32-bit register write).
        write_gpr(self.cpu, reg::RSP, stack_size, v);
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

// ---------------------------------------------------------------------------
// PUSH / POP

fn push_reg(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let r = insn.op0_register();
    // PUSH (E/R)SP pushes the value before the decrement: read first.
    let v = read_reg(ctx.cpu, r);
    ctx.push(reg_size(r), v)
}

fn push_mem(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let size = insn.memory_size().size() as u8;
    // The address uses RSP before the push (PUSH [RSP] pushes the old top).
    let v = ctx.read_op(insn, 0, size)?;
    ctx.push(size, v)
}

fn push_imm<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    // iced sign-extends imm8 (and imm32 for 64-bit pushes) to the operand size.
    ctx.push(N, insn.immediate(0))
}

fn pop_reg(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let r = insn.op0_register();
    let size = reg_size(r);
    // POP (E/R)SP: the popped value lands after the increment, so it wins.
    let v = ctx.pop(size)?;
    write_gpr(ctx.cpu, reg_index(r), size, v);
    Ok(())
}

fn pop_mem(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let size = insn.memory_size().size() as u8;
    let v = ctx.peek(0, size)?;
    // The SDM: a destination addressed through RSP is computed after the
    // increment. Increment first, restore RSP if the store faults.
    let old = ctx.cpu.gpr[reg::RSP];
    let sp = ctx.sp();
    ctx.set_sp(sp.wrapping_add(size as u64));
    if let Err(f) = ctx.write_op(insn, 0, size, v) {
        ctx.cpu.gpr[reg::RSP] = old;
        return Err(f);
    }
    Ok(())
}

fn push_sreg<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let sel = ctx.cpu.seg[seg_of(insn.op0_register()) as usize].selector as u64;
    let sp = ctx.sp().wrapping_sub(N as u64) & ss_mask(ctx.cpu.stack_size());
    // Check the whole slot against SS, then store only the selector (see the
    // module comment).
    let lin = ctx.seg_addr(SegReg::Ss, sp, N, true)?;
    ctx.write_lin(lin, 2, sel)?;
    ctx.set_sp(sp);
    Ok(())
}

fn pop_sreg<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let s = seg_of(insn.op0_register());
    let stack_size = ctx.cpu.stack_size();
    let sp = ctx.sp();
    let v = ctx.read_seg(SegReg::Ss, sp, N)?;
    ctx.load_segment(s, v as u16)?;
    ctx.set_sp_sized(stack_size, sp.wrapping_add(N as u64));
    if s == SegReg::Ss {
        // MOV/POP SS inhibit interrupts (and debug traps) for one instruction.
        ctx.cpu.shadow_at = ctx.cpu.icount.wrapping_add(1);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// PUSHA / POPA (legacy modes only: iced decodes them as invalid in 64-bit mode)

/// Order PUSHA stores the registers in (SP is the value before the instruction).
const PUSHA_ORDER: [usize; 8] = [
    reg::RAX,
    reg::RCX,
    reg::RDX,
    reg::RBX,
    reg::RSP,
    reg::RBP,
    reg::RSI,
    reg::RDI,
];

fn pusha<const N: u8>(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    let m = ss_mask(ctx.cpu.stack_size());
    let mut sp = ctx.sp();
    // Probe every slot before storing anything so a fault changes nothing.
    let mut lins = [0u64; 8];
    for lin in lins.iter_mut() {
        sp = sp.wrapping_sub(N as u64) & m;
        *lin = ctx.probe_write(SegReg::Ss, sp, N)?;
    }
    for (i, &lin) in lins.iter().enumerate() {
        let v = ctx.cpu.gpr[PUSHA_ORDER[i]];
        ctx.write_lin(lin, N, v)?;
    }
    ctx.set_sp(sp);
    Ok(())
}

fn popa<const N: u8>(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    // Slot i (from the top) holds PUSHA_ORDER[7 - i]; the SP slot is skipped.
    let mut vals = [0u64; 8];
    for (i, v) in vals.iter_mut().enumerate() {
        *v = ctx.peek(i as u64 * N as u64, N)?;
    }
    let sp = ctx.sp();
    ctx.set_sp(sp.wrapping_add(8 * N as u64));
    for (i, &v) in vals.iter().enumerate() {
        let r = PUSHA_ORDER[7 - i];
        if r != reg::RSP {
            write_gpr(ctx.cpu, r, N, v);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// PUSHF / POPF

fn pushf<const N: u8>(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    let f = ctx.cpu.rflags;
    if f & flags::VM != 0 && ctx.cpu.iopl() < 3 {
        return Err(Fault::gp(0));
    }
    // VM and RF read as zero in the pushed image.
    ctx.push(N, f & !(flags::VM | flags::RF))
}

/// The RFLAGS a POPF of operand size `size` produces from `old` and the
/// popped `v`, at privilege `cpl` (0 in real mode). `v86` is virtual-8086
/// mode (where the caller already checked IOPL = 3).
#[inline]
fn popf_value(old: u64, v: u64, size: u8, cpl: u8, v86: bool) -> u64 {
    let iopl = ((old & flags::IOPL) >> 12) as u8;
    let mut writable = flags::STATUS | flags::TF | flags::DF | flags::NT;
    if size >= 4 {
        writable |= flags::AC | flags::ID;
    }
    if v86 {
        // IOPL is 3 here, so IF is writable; IOPL itself is not.
        writable |= flags::IF;
    } else if cpl == 0 {
        writable |= flags::IF | flags::IOPL;
    } else if cpl <= iopl {
        writable |= flags::IF;
    }
    if size == 2 {
        writable &= 0xffff;
    }
    let mut new = (old & !writable) | (v & writable);
    if size >= 4 {
        new &= !flags::RF;
    }
    (new & flags::ALL_DEFINED) | flags::FIXED
}

fn popf<const N: u8>(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    let old = ctx.cpu.rflags;
    let v86 = old & flags::VM != 0;
    if v86 && ctx.cpu.iopl() < 3 {
        return Err(Fault::gp(0));
    }
    let v = ctx.peek(0, N)?;
    // Real mode behaves as CPL 0 (cpl is 0 there anyway; be explicit).
    let cpl = if ctx.cpu.cr0 & cr::CR0_PE == 0 {
        0
    } else {
        ctx.cpu.cpl
    };
    let new = popf_value(old, v, N, cpl, v86);
    let sp = ctx.sp();
    ctx.set_sp(sp.wrapping_add(N as u64));
    ctx.cpu.rflags = new;
    if (old ^ new) & (flags::IF | flags::TF) != 0 {
        // Interrupt window or single-stepping changed: let the machine look.
        ctx.cpu.exit_request = true;
        ctx.cpu.end_block = true;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// ENTER / LEAVE

fn enter<const N: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let alloc = insn.immediate16() as u64;
    let level = insn.immediate8_2nd() % 32;
    let stack_size = ctx.cpu.stack_size();
    let m = ss_mask(stack_size);
    let n = N as u64;
    // Work on temporaries; commit RSP and (E/R)BP only once everything succeeded.
    let mut sp = ctx.sp().wrapping_sub(n) & m;
    ctx.write_seg(SegReg::Ss, sp, N, ctx.cpu.gpr[reg::RBP])?;
    // FrameTemp is the (E/R)SP after pushing the frame pointer, at operand size
    // (for a 32-bit ENTER on a 16-bit stack: ESP's upper half with the new SP).
    let rsp_after = if stack_size == 2 {
        (ctx.cpu.gpr[reg::RSP] & !0xffff) | sp
    } else {
        sp
    };
    let frame_temp = rsp_after & flags::mask(N);
    if level > 0 {
        // The frame pointer used to copy the outer frames has the stack size.
        let mut bp = ctx.cpu.gpr[reg::RBP] & m;
        for _ in 1..level {
            bp = bp.wrapping_sub(n) & m;
            let v = ctx.read_seg(SegReg::Ss, bp, N)?;
            sp = sp.wrapping_sub(n) & m;
            ctx.write_seg(SegReg::Ss, sp, N, v)?;
        }
        sp = sp.wrapping_sub(n) & m;
        ctx.write_seg(SegReg::Ss, sp, N, frame_temp)?;
    }
    sp = sp.wrapping_sub(alloc) & m;
    ctx.probe_write(SegReg::Ss, sp, N)?;
    ctx.set_sp(sp);
    write_gpr(ctx.cpu, reg::RBP, N, frame_temp);
    Ok(())
}

fn leave<const N: u8>(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    // (E/R)SP <- (E/R)BP at the stack size, then pop (E/R)BP at the operand size.
    let m = ss_mask(ctx.cpu.stack_size());
    let sp = ctx.cpu.gpr[reg::RBP] & m;
    let v = ctx.read_seg(SegReg::Ss, sp, N)?;
    ctx.set_sp(sp.wrapping_add(N as u64));
    write_gpr(ctx.cpu, reg::RBP, N, v);
    Ok(())
}

/// Helpers shared by the tests of the stack, branch and string groups.
#[cfg(test)]
pub(super) mod testkit {
    use iced_x86::code_asm::CodeAssembler;
    use iced_x86::{Decoder, DecoderOptions, IcedError};

    use crate::block::CodeCache;
    use crate::fault::{Fault, Result};
    use crate::flags;
    use crate::interp::{dispatch, Ctx};
    use crate::state::{attr, cr, Cpu, SegReg, Segment};
    use crate::testutil::{
        assemble, cpu_in, install_tables, sel, TestBus, TestMode, CODE, CODE_REAL,
    };

    /// Executes exactly the first instruction of `build` through its handler,
    /// as the run loop does (RIP = next instruction first) but without
    /// restoring RIP on an error or delivering anything.
    pub fn step(
        mode: TestMode,
        build: impl FnOnce(&mut CodeAssembler) -> std::result::Result<(), IcedError>,
        setup: impl FnOnce(&mut Cpu, &mut TestBus),
    ) -> (Cpu, TestBus, Result<()>) {
        let code = assemble(mode, build);
        step_bytes(mode, &code, setup)
    }

    /// [`step`] for raw instruction bytes (decoded at the CPU's RIP after `setup`).
    pub fn step_bytes(
        mode: TestMode,
        code: &[u8],
        setup: impl FnOnce(&mut Cpu, &mut TestBus),
    ) -> (Cpu, TestBus, Result<()>) {
        let mut bus = TestBus::new();
        install_tables(&mut bus);
        bus.write(
            if mode == TestMode::Real {
                CODE_REAL
            } else {
                CODE
            },
            code,
        );
        let mut cpu = cpu_in(mode);
        setup(&mut cpu, &mut bus);
        cpu.end_block = false;
        cpu.exit_request = false;
        let mut dec = Decoder::with_ip(cpu.bitness, code, cpu.rip, DecoderOptions::NONE);
        let insn = dec.decode();
        let mask = match cpu.bitness {
            16 => 0xffff,
            32 => 0xffff_ffff,
            _ => u64::MAX,
        };
        cpu.rip = insn.next_ip() & mask;
        let mut cache = CodeCache::new();
        let r = {
            let mut ctx = Ctx::new(&mut cpu, &mut bus, &mut cache);
            (dispatch::handler_for(&insn))(&mut ctx, &insn)
        };
        (cpu, bus, r)
    }

    /// The exception vector of a fault.
    pub fn vec_of(r: &Result<()>) -> Option<(u8, Option<u32>)> {
        match r {
            Err(Fault::Exception { vector, error_code }) => Some((*vector, *error_code)),
            _ => None,
        }
    }

    /// Switches a protected-mode test CPU to CPL 3 with flat DPL-3 segments.
    pub fn user32(cpu: &mut Cpu) {
        let dpl3 = 3 << attr::DPL_SHIFT;
        for s in SegReg::ALL {
            cpu.seg[s as usize] = Segment {
                selector: sel::DATA32_USER,
                base: 0,
                limit: 0xffff_ffff,
                attr: attr::DATA_RW | attr::DB | attr::GRAN | dpl3,
            };
        }
        cpu.seg[SegReg::Cs as usize] = Segment {
            selector: sel::CODE32_USER,
            base: 0,
            limit: 0xffff_ffff,
            attr: attr::CODE_RX | attr::DB | attr::GRAN | dpl3,
        };
        cpu.cpl = 3;
        cpu.update_mode();
    }

    /// Switches a real-mode test CPU to virtual-8086 mode with `iopl`.
    pub fn v86(cpu: &mut Cpu, iopl: u64) {
        cpu.cr0 |= cr::CR0_PE;
        cpu.rflags = (cpu.rflags & !flags::IOPL) | flags::VM | (iopl << 12);
        for s in SegReg::ALL {
            cpu.seg[s as usize].attr |= 3 << attr::DPL_SHIFT;
        }
        cpu.cpl = 3;
        cpu.update_mode();
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::{step, step_bytes, user32, v86, vec_of};
    use crate::fault::vector;
    use crate::flags::{self, AC, CF, FIXED, ID, IF, IOPL, NT, RF, TF, VIF, VIP, VM, ZF};
    use crate::interp::RunExit;
    use crate::state::{reg, SegReg};
    use crate::testutil::{run_asm, sel, TestMode, DATA, STACK};
    use iced_x86::code_asm::*;

    #[test]
    fn push_pop_sizes_real() {
        let (cpu, bus, exit) = run_asm(
            TestMode::Real,
            |a| {
                a.mov(ax, 0x1234u32)?;
                a.push(ax)?;
                a.mov(eax, 0x89ab_cdefu32)?;
                a.push(eax)?;
                a.pop(ebx)?;
                a.pop(cx)?;
                a.db(&[0x6a, 0xfe])?; // push -2 (imm8 sign-extended to 16 bits)
                a.pop(dx)?;
                a.db(&[0x66, 0x6a, 0x80])?; // push dword -128
                a.pop(esi)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX], 0x89ab_cdef);
        assert_eq!(cpu.gpr[reg::RCX] & 0xffff, 0x1234);
        assert_eq!(cpu.gpr[reg::RDX] & 0xffff, 0xfffe);
        assert_eq!(cpu.gpr[reg::RSI], 0xffff_ff80);
        assert_eq!(cpu.gpr[reg::RSP], 0x8000);
        assert_eq!(bus.read(0x7ffc, 4), 0xffff_ff80);
    }

    #[test]
    fn push_pop_sizes_protected() {
        let (cpu, bus, exit) = run_asm(
            TestMode::Protected32,
            |a| {
                a.mov(eax, 0xdead_beefu32)?;
                a.push(eax)?;
                a.push(ax)?; // 16-bit push: ESP -= 2
                a.pop(bx)?;
                a.pop(ecx)?;
                a.push(-5)?;
                a.pop(edx)?;
                a.push(0x1234_5678)?;
                a.pop(esi)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX] & 0xffff, 0xbeef);
        assert_eq!(cpu.gpr[reg::RCX], 0xdead_beef);
        assert_eq!(cpu.gpr[reg::RDX], 0xffff_fffb);
        assert_eq!(cpu.gpr[reg::RSI], 0x1234_5678);
        assert_eq!(cpu.gpr[reg::RSP], STACK);
        assert_eq!(bus.read(STACK - 4, 4), 0x1234_5678);
    }

    #[test]
    fn push_pop_sizes_long() {
        let (cpu, bus, exit) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(rax, 0x1122_3344_5566_7788u64)?;
                a.push(rax)?;
                a.push(ax)?; // 66h: 16-bit push
                a.pop(bx)?;
                a.pop(r9)?;
                a.push(-2)?; // imm8 sign-extended to 64 bits
                a.pop(rcx)?;
                a.push(i32::MIN)?; // imm32 sign-extended to 64 bits
                a.pop(rdx)?;
                a.db(&[0x66, 0x6a, 0xff])?; // pushw -1
                a.pop(si)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[reg::RBX] & 0xffff, 0x7788);
        assert_eq!(cpu.gpr[9], 0x1122_3344_5566_7788);
        assert_eq!(cpu.gpr[reg::RCX], u64::MAX - 1);
        assert_eq!(cpu.gpr[reg::RDX], 0xffff_ffff_8000_0000);
        assert_eq!(cpu.gpr[reg::RSI] & 0xffff, 0xffff);
        assert_eq!(cpu.gpr[reg::RSP], STACK);
        assert_eq!(bus.read(STACK - 8, 8), 0xffff_ffff_8000_0000);
    }

    #[test]
    fn push_rsp_pushes_old_value_and_pop_rsp_loads() {
        for mode in [TestMode::Real, TestMode::Protected32, TestMode::Long64] {
            let (cpu, _, exit) = run_asm(
                mode,
                |a| match mode {
                    TestMode::Real => {
                        a.push(sp)?;
                        a.pop(ax)?;
                        a.push(0x4444)?;
                        a.pop(sp)?;
                        a.hlt()
                    }
                    TestMode::Protected32 => {
                        a.push(esp)?;
                        a.pop(eax)?;
                        a.push(0x44_4444)?;
                        a.pop(esp)?;
                        a.hlt()
                    }
                    TestMode::Long64 => {
                        a.push(rsp)?;
                        a.pop(rax)?;
                        a.push(0x44_4444)?;
                        a.pop(rsp)?;
                        a.hlt()
                    }
                },
                |_, _| {},
            );
            assert_eq!(exit, RunExit::Halted, "{mode:?}");
            let (old, new) = match mode {
                TestMode::Real => (0x8000, 0x4444),
                _ => (STACK, 0x44_4444),
            };
            assert_eq!(cpu.gpr[reg::RAX] & 0xffff_ffff, old, "{mode:?}");
            assert_eq!(cpu.gpr[reg::RSP], new, "{mode:?}");
        }
    }

    #[test]
    fn push_and_pop_memory() {
        let (cpu, bus, exit) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(rbx, DATA)?;
                a.push(qword_ptr(rbx))?;
                a.pop(qword_ptr(rbx + 8))?;
                a.push(word_ptr(rbx + 2))?;
                a.pop(word_ptr(rbx + 16))?;
                // POP [RSP]: the address is computed after the increment.
                a.push(0x1111)?;
                a.push(0x2222)?;
                a.pop(qword_ptr(rsp))?;
                a.pop(rcx)?;
                // PUSH [RSP] pushes the old top.
                a.push(0x3333)?;
                a.push(qword_ptr(rsp))?;
                a.pop(rdx)?;
                a.pop(rsi)?;
                a.hlt()
            },
            |_, bus| bus.put(DATA, 8, 0x0102_0304_0506_0708),
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(bus.read(DATA + 8, 8), 0x0102_0304_0506_0708);
        assert_eq!(bus.read(DATA + 16, 2), 0x0506);
        assert_eq!(cpu.gpr[reg::RCX], 0x2222);
        assert_eq!(cpu.gpr[reg::RDX], 0x3333);
        assert_eq!(cpu.gpr[reg::RSI], 0x3333);
        assert_eq!(cpu.gpr[reg::RSP], STACK);
    }

    #[test]
    fn pop_memory_fault_restores_rsp() {
        let (cpu, _, r) = step(
            TestMode::Long64,
            |a| a.pop(qword_ptr(rax)),
            |cpu, _| {
                cpu.gpr[reg::RAX] = 0x8000_0000_0000_0000;
                cpu.gpr[reg::RSP] = STACK - 8;
            },
        );
        assert_eq!(vec_of(&r), Some((vector::GP, Some(0))));
        assert_eq!(cpu.gpr[reg::RSP], STACK - 8);
    }

    #[test]
    fn push_fault_leaves_rsp() {
        // Non-canonical stack: #SS(0), RSP unchanged.
        let (cpu, _, r) = step(
            TestMode::Long64,
            |a| a.push(rax),
            |cpu, _| cpu.gpr[reg::RSP] = 0x8000_0000_0000_0004,
        );
        assert_eq!(vec_of(&r), Some((vector::SS, Some(0))));
        assert_eq!(cpu.gpr[reg::RSP], 0x8000_0000_0000_0004);
        // Real mode: SP = 1 makes the word straddle the 64 KiB limit.
        let (cpu, _, r) = step(
            TestMode::Real,
            |a| a.push(ax),
            |cpu, _| cpu.gpr[reg::RSP] = 1,
        );
        assert_eq!(vec_of(&r), Some((vector::SS, Some(0))));
        assert_eq!(cpu.gpr[reg::RSP], 1);
    }

    #[test]
    fn sixteen_bit_stack_wraps() {
        let (cpu, bus, exit) = run_asm(
            TestMode::Real,
            |a| {
                a.mov(ax, 0xabcdu32)?;
                a.push(ax)?;
                a.pop(bx)?;
                a.pop(cx)?;
                a.hlt()
            },
            |cpu, bus| {
                cpu.gpr[reg::RSP] = 0x1234_0000; // SP = 0: the push wraps to 0xfffe
                bus.put(0, 2, 0x5a5a);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(bus.read(0xfffe, 2), 0xabcd);
        assert_eq!(cpu.gpr[reg::RBX] & 0xffff, 0xabcd);
        assert_eq!(cpu.gpr[reg::RCX] & 0xffff, 0x5a5a);
        assert_eq!(
            cpu.gpr[reg::RSP],
            0x1234_0002,
            "upper half of ESP untouched"
        );
    }

    #[test]
    fn push_segment_registers() {
        // Real mode: PUSH CS pushes the selector.
        let (cpu, bus, _) = step(TestMode::Real, |a| a.push(cs), |_, _| {});
        assert_eq!(cpu.gpr[reg::RSP], 0x7ffe);
        assert_eq!(bus.read(0x7ffe, 2), 0x1000);
        // 32-bit push: the slot is 4 bytes, only the selector is written.
        let (cpu, bus, r) = step(
            TestMode::Protected32,
            |a| a.push(ds),
            |_, bus| bus.put(STACK - 4, 4, 0xdead_beef),
        );
        assert!(r.is_ok());
        assert_eq!(cpu.gpr[reg::RSP], STACK - 4);
        assert_eq!(bus.read(STACK - 4, 4), 0xdead_0000 | sel::DATA32 as u64);
        // 16-bit push of a segment register in 32-bit code.
        let (cpu, bus, _) = step_bytes(TestMode::Protected32, &[0x66, 0x06], |cpu, _| {
            cpu.seg[SegReg::Es as usize].selector = 0x77
        });
        assert_eq!(cpu.gpr[reg::RSP], STACK - 2);
        assert_eq!(bus.read(STACK - 2, 2), 0x77);
        // 64-bit push fs: 8-byte slot, low word written.
        let (cpu, bus, _) = step(
            TestMode::Long64,
            |a| a.push(fs),
            |cpu, bus| {
                bus.put(STACK - 8, 8, 0x1122_3344_5566_7788);
                cpu.seg[SegReg::Fs as usize].selector = 0x2b;
            },
        );
        assert_eq!(cpu.gpr[reg::RSP], STACK - 8);
        assert_eq!(bus.read(STACK - 8, 8), 0x1122_3344_5566_002b);
        // 66h push gs in 64-bit mode: 2 bytes.
        let (cpu, _, _) = step_bytes(TestMode::Long64, &[0x66, 0x0f, 0xa8], |_, _| {});
        assert_eq!(cpu.gpr[reg::RSP], STACK - 2);
    }

    #[test]
    fn pusha_popa_16_and_32() {
        let (cpu, bus, r) = step(
            TestMode::Real,
            |a| a.pusha(),
            |cpu, _| {
                for i in 0..8 {
                    cpu.gpr[i] = 0x1111_0000 + i as u64;
                }
                cpu.gpr[reg::RSP] = 0x1111_8000;
            },
        );
        assert!(r.is_ok());
        assert_eq!(cpu.gpr[reg::RSP], 0x1111_7ff0);
        // From the top: DI SI BP SP BX DX CX AX.
        let expect = [7u64, 6, 5, 0x8000, 3, 2, 1, 0];
        for (i, e) in expect.iter().enumerate() {
            let v = bus.read(0x7ff0 + 2 * i as u64, 2);
            let e = if *e == 0x8000 { 0x8000 } else { *e };
            assert_eq!(v, e, "slot {i}");
        }
        let (cpu, bus, r) = step(
            TestMode::Protected32,
            |a| a.pushad(),
            |cpu, _| {
                for i in 0..8 {
                    cpu.gpr[i] = 0xa000_0000 + i as u64;
                }
                cpu.gpr[reg::RSP] = STACK;
            },
        );
        assert!(r.is_ok());
        assert_eq!(cpu.gpr[reg::RSP], STACK - 32);
        assert_eq!(bus.read(STACK - 4, 4), 0xa000_0000);
        assert_eq!(bus.read(STACK - 20, 4), STACK);
        assert_eq!(bus.read(STACK - 32, 4), 0xa000_0007);
        // POPAD skips the ESP slot.
        let (cpu, _, r) = step(
            TestMode::Protected32,
            |a| a.popad(),
            |cpu, bus| {
                cpu.gpr[reg::RSP] = STACK - 32;
                for i in 0..8u64 {
                    bus.put(STACK - 32 + 4 * i, 4, 0xb000_0000 + i);
                }
            },
        );
        assert!(r.is_ok());
        assert_eq!(cpu.gpr[reg::RDI], 0xb000_0000);
        assert_eq!(cpu.gpr[reg::RSI], 0xb000_0001);
        assert_eq!(cpu.gpr[reg::RBP], 0xb000_0002);
        assert_eq!(cpu.gpr[reg::RSP], STACK);
        assert_eq!(cpu.gpr[reg::RBX], 0xb000_0004);
        assert_eq!(cpu.gpr[reg::RAX], 0xb000_0007);
        // POPA (16-bit) keeps the upper halves.
        let (cpu, _, _) = step(
            TestMode::Real,
            |a| a.popa(),
            |cpu, bus| {
                cpu.gpr[reg::RAX] = 0xffff_0000;
                cpu.gpr[reg::RSP] = 0x7ff0;
                for i in 0..8u64 {
                    bus.put(0x7ff0 + 2 * i, 2, 0x100 + i);
                }
            },
        );
        assert_eq!(cpu.gpr[reg::RAX], 0xffff_0107);
        assert_eq!(cpu.gpr[reg::RDI], 0x100);
        assert_eq!(cpu.gpr[reg::RSP], 0x8000);
    }

    #[test]
    fn pusha_fault_changes_nothing() {
        // A 16-bit stack with SP = 6: the fourth slot wraps to 0xfffe and the
        // segment limit (0x7fff) rejects it before anything is stored.
        let (cpu, bus, r) = step(
            TestMode::Real,
            |a| a.pusha(),
            |cpu, _| {
                cpu.gpr[reg::RSP] = 6;
                cpu.seg[SegReg::Ss as usize].limit = 0x7fff;
                cpu.gpr[reg::RAX] = 0x5555;
            },
        );
        assert_eq!(vec_of(&r), Some((vector::SS, Some(0))));
        assert_eq!(cpu.gpr[reg::RSP], 6);
        assert_eq!(bus.read(4, 2), 0, "nothing stored");
    }

    #[test]
    fn pushf_image_clears_vm_and_rf() {
        let (cpu, bus, r) = step(
            TestMode::Protected32,
            |a| a.pushfd(),
            |cpu, _| cpu.rflags = FIXED | RF | CF | ZF | IF | AC | ID,
        );
        assert!(r.is_ok());
        assert_eq!(bus.read(STACK - 4, 4), FIXED | CF | ZF | IF | AC | ID);
        assert_eq!(cpu.gpr[reg::RSP], STACK - 4);
        // 16-bit PUSHF in 64-bit mode (66h) and PUSHFQ.
        let (cpu, bus, _) = step_bytes(TestMode::Long64, &[0x66, 0x9c], |cpu, _| {
            cpu.rflags = FIXED | ID | CF
        });
        assert_eq!(cpu.gpr[reg::RSP], STACK - 2);
        assert_eq!(bus.read(STACK - 2, 2), FIXED | CF);
        let (cpu, bus, _) = step(
            TestMode::Long64,
            |a| a.pushfq(),
            |cpu, _| cpu.rflags = FIXED | ID | RF,
        );
        assert_eq!(cpu.gpr[reg::RSP], STACK - 8);
        assert_eq!(bus.read(STACK - 8, 8), FIXED | ID);
        // V86 with IOPL = 3: allowed, VM cleared in the image.
        let (_, bus, r) = step(TestMode::Real, |a| a.pushfd(), |cpu, _| v86(cpu, 3));
        assert!(r.is_ok());
        assert_eq!(bus.read(0x7ffc, 4), FIXED | IOPL);
        // V86 with IOPL < 3: #GP(0).
        let (cpu, _, r) = step(TestMode::Real, |a| a.pushf(), |cpu, _| v86(cpu, 2));
        assert_eq!(vec_of(&r), Some((vector::GP, Some(0))));
        assert_eq!(cpu.gpr[reg::RSP], 0x8000);
    }

    /// Steps POPF of `size` bytes with `v` on the stack.
    fn popf_case(
        mode: TestMode,
        size: u8,
        v: u64,
        prepare: impl FnOnce(&mut crate::state::Cpu),
    ) -> (crate::state::Cpu, crate::fault::Result<()>) {
        let bytes: &[u8] = match (mode, size) {
            (TestMode::Real, 2) | (TestMode::Protected32, 4) | (TestMode::Long64, 8) => &[0x9d],
            (TestMode::Long64, 2) | (TestMode::Protected32, 2) | (TestMode::Real, 4) => {
                &[0x66, 0x9d]
            }
            _ => unreachable!(),
        };
        let (cpu, _, r) = step_bytes(mode, bytes, |cpu, bus| {
            prepare(cpu);
            let top = cpu.gpr[reg::RSP] - 16;
            cpu.gpr[reg::RSP] = top;
            let base = cpu.seg[SegReg::Ss as usize].base;
            bus.put(base + top, size as usize, v);
        });
        (cpu, r)
    }

    #[test]
    fn popf_at_cpl0() {
        let reserved = (1 << 3) | (1 << 5) | (1 << 15) | (1 << 22) | (1 << 31);
        let v = IOPL | IF | AC | ID | VM | VIF | VIP | RF | CF | NT | reserved;
        let (cpu, r) = popf_case(TestMode::Protected32, 4, v, |cpu| {
            cpu.rflags = FIXED | RF | VIF
        });
        assert!(r.is_ok());
        // VM/VIP/VIF keep their old values, RF is cleared, reserved bits stay clear.
        assert_eq!(cpu.rflags, FIXED | IOPL | IF | AC | ID | CF | NT | VIF);
        assert_eq!(cpu.gpr[reg::RSP], STACK - 12);
        assert!(cpu.exit_request && cpu.end_block, "IF changed");
        // 64-bit POPFQ behaves the same.
        let (cpu, _) = popf_case(TestMode::Long64, 8, v | (1 << 40), |cpu| cpu.rflags = FIXED);
        assert_eq!(cpu.rflags, FIXED | IOPL | IF | AC | ID | CF | NT);
        assert_eq!(cpu.gpr[reg::RSP], STACK - 8);
        // 16-bit POPF: only the low word; AC, ID and RF are untouched.
        let (cpu, _) = popf_case(TestMode::Protected32, 2, 0xffff, |cpu| {
            cpu.rflags = FIXED | AC | RF
        });
        assert_eq!(cpu.rflags, FIXED | AC | RF | (0xffff & !(0x8000 | 0x28)));
        assert_eq!(cpu.gpr[reg::RSP], STACK - 14);
        // Real mode: everything writable as at CPL 0.
        let (cpu, _) = popf_case(TestMode::Real, 2, IOPL | IF | TF, |_| {});
        assert_eq!(cpu.rflags, FIXED | IOPL | IF | TF);
        let (cpu, _) = popf_case(TestMode::Real, 4, AC | ID | ZF, |_| {});
        assert_eq!(cpu.rflags, FIXED | AC | ID | ZF);
    }

    #[test]
    fn popf_at_cpl3() {
        // CPL 3 > IOPL 0: IF and IOPL are unchanged.
        let (cpu, r) = popf_case(TestMode::Protected32, 4, IOPL | CF | AC, |cpu| {
            user32(cpu);
            cpu.rflags = FIXED | IF;
        });
        assert!(r.is_ok());
        assert_eq!(cpu.rflags, FIXED | IF | CF | AC);
        assert!(!cpu.exit_request, "IF and TF unchanged");
        // CPL 3 = IOPL 3: IF writable, IOPL still not.
        let (cpu, _) = popf_case(TestMode::Protected32, 4, ZF, |cpu| {
            user32(cpu);
            cpu.rflags = FIXED | IF | IOPL;
        });
        assert_eq!(cpu.rflags, FIXED | IOPL | ZF);
        assert!(cpu.exit_request && cpu.end_block);
        // IOPL 1 < CPL 3, 16-bit: IF kept.
        let (cpu, _) = popf_case(TestMode::Protected32, 2, TF, |cpu| {
            user32(cpu);
            cpu.rflags = FIXED | IF | (1 << 12);
        });
        assert_eq!(cpu.rflags, FIXED | IF | (1 << 12) | TF);
        assert!(cpu.exit_request, "TF changed");
    }

    #[test]
    fn popf_in_v86() {
        let (cpu, r) = popf_case(TestMode::Real, 2, 0, |cpu| v86(cpu, 2));
        assert_eq!(vec_of(&r), Some((vector::GP, Some(0))));
        assert_eq!(cpu.gpr[reg::RSP], 0x8000 - 16);
        // IOPL 3: IF writable, IOPL and VM untouched.
        let (cpu, r) = popf_case(TestMode::Real, 4, IF | CF | VM, |cpu| v86(cpu, 3));
        assert!(r.is_ok());
        assert_eq!(cpu.rflags, FIXED | VM | IOPL | IF | CF);
        let (cpu, _) = popf_case(TestMode::Real, 2, 0, |cpu| {
            v86(cpu, 3);
            cpu.rflags |= IF;
        });
        assert_eq!(cpu.rflags, FIXED | VM | IOPL);
    }

    #[test]
    fn popf_roundtrip_through_run_loop() {
        let (cpu, _, exit) = run_asm(
            TestMode::Long64,
            |a| {
                a.stc()?;
                a.pushfq()?;
                a.clc()?;
                a.popfq()?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(exit, RunExit::Halted);
        assert!(cpu.rflags & CF != 0);
        assert_eq!(cpu.gpr[reg::RSP], STACK);
    }

    #[test]
    fn enter_levels_32() {
        let run = |level: u32, alloc: u32| {
            step(
                TestMode::Protected32,
                |a| a.enter(alloc, level),
                |cpu, bus| {
                    cpu.gpr[reg::RBP] = 0x8f_f000;
                    bus.put(0x8f_effc, 4, 0x1111_1111);
                    bus.put(0x8f_eff8, 4, 0x2222_2222);
                    bus.put(0x8f_eff4, 4, 0x3333_3333);
                },
            )
        };
        // Level 0: push ebp; ebp = esp; esp -= alloc.
        let (cpu, bus, r) = run(0, 8);
        assert!(r.is_ok());
        assert_eq!(bus.read(STACK - 4, 4), 0x8f_f000);
        assert_eq!(cpu.gpr[reg::RBP], STACK - 4);
        assert_eq!(cpu.gpr[reg::RSP], STACK - 12);
        // Level 1: the frame pointer is pushed too.
        let (cpu, bus, _) = run(1, 0);
        assert_eq!(bus.read(STACK - 8, 4), STACK - 4);
        assert_eq!(cpu.gpr[reg::RBP], STACK - 4);
        assert_eq!(cpu.gpr[reg::RSP], STACK - 8);
        // Level 3: two outer frame pointers copied from [ebp-4], [ebp-8].
        let (cpu, bus, _) = run(3, 0x10);
        assert_eq!(bus.read(STACK - 4, 4), 0x8f_f000);
        assert_eq!(bus.read(STACK - 8, 4), 0x1111_1111);
        assert_eq!(bus.read(STACK - 12, 4), 0x2222_2222);
        assert_eq!(bus.read(STACK - 16, 4), STACK - 4);
        assert_eq!(cpu.gpr[reg::RBP], STACK - 4);
        assert_eq!(cpu.gpr[reg::RSP], STACK - 16 - 0x10);
        // Level 35 = 3 (mod 32).
        let (cpu35, bus35, _) = run(35, 0x10);
        assert_eq!(cpu35.gpr[reg::RSP], cpu.gpr[reg::RSP]);
        assert_eq!(bus35.read(STACK - 16, 4), STACK - 4);
    }

    #[test]
    fn enter_real_and_long() {
        let (cpu, bus, r) = step(
            TestMode::Real,
            |a| a.enter(4u32, 2u32),
            |cpu, bus| {
                cpu.gpr[reg::RBP] = 0xabcd_7000;
                bus.put(0x6ffe, 2, 0xaaaa);
            },
        );
        assert!(r.is_ok());
        assert_eq!(bus.read(0x7ffe, 2), 0x7000);
        assert_eq!(bus.read(0x7ffc, 2), 0xaaaa);
        assert_eq!(bus.read(0x7ffa, 2), 0x7ffe);
        assert_eq!(cpu.gpr[reg::RSP], 0x7ff6);
        assert_eq!(
            cpu.gpr[reg::RBP],
            0xabcd_7ffe,
            "16-bit ENTER writes BP only"
        );
        let (cpu, bus, _) = step(
            TestMode::Long64,
            |a| a.enter(0x20u32, 2u32),
            |cpu, bus| {
                cpu.gpr[reg::RBP] = 0x8f_f000;
                bus.put(0x8f_eff8, 8, 0x1234_5678_9abc_def0);
            },
        );
        assert_eq!(bus.read(STACK - 8, 8), 0x8f_f000);
        assert_eq!(bus.read(STACK - 16, 8), 0x1234_5678_9abc_def0);
        assert_eq!(bus.read(STACK - 24, 8), STACK - 8);
        assert_eq!(cpu.gpr[reg::RBP], STACK - 8);
        assert_eq!(cpu.gpr[reg::RSP], STACK - 24 - 0x20);
        // 66h ENTER in 64-bit mode: 16-bit pushes, RSP arithmetic stays 64-bit.
        let (cpu, bus, _) = step_bytes(TestMode::Long64, &[0x66, 0xc8, 2, 0, 0], |cpu, _| {
            cpu.gpr[reg::RBP] = 0x8f_f000
        });
        assert_eq!(bus.read(STACK - 2, 2), 0xf000);
        assert_eq!(cpu.gpr[reg::RSP], STACK - 4);
        assert_eq!(cpu.gpr[reg::RBP], 0x8f_fffe);
    }

    #[test]
    fn enter_fault_commits_nothing() {
        // The final stack pointer lands in unmapped space: #PF, RSP/RBP intact.
        let (cpu, _, r) = step(
            TestMode::Long64,
            |a| a.enter(0x100u32, 1u32),
            |cpu, _| {
                cpu.gpr[reg::RSP] = 0x80;
                cpu.gpr[reg::RBP] = 0x1234;
            },
        );
        assert_eq!(vec_of(&r).map(|v| v.0), Some(vector::PF));
        assert_eq!(cpu.gpr[reg::RSP], 0x80);
        assert_eq!(cpu.gpr[reg::RBP], 0x1234);
        // Copying an outer frame pointer from an unmapped address.
        let (cpu, _, r) = step(
            TestMode::Long64,
            |a| a.enter(0u32, 3u32),
            |cpu, _| cpu.gpr[reg::RBP] = 0x4000_0008,
        );
        assert_eq!(vec_of(&r).map(|v| v.0), Some(vector::PF));
        assert_eq!(cpu.cr2, 0x4000_0000);
        assert_eq!(cpu.gpr[reg::RSP], STACK);
        assert_eq!(cpu.gpr[reg::RBP], 0x4000_0008);
    }

    #[test]
    fn enter_leave_roundtrip_every_mode() {
        for mode in [TestMode::Real, TestMode::Protected32, TestMode::Long64] {
            let (cpu, _, exit) = run_asm(
                mode,
                |a| {
                    a.enter(0x40u32, 4u32)?;
                    a.leave()?;
                    a.hlt()
                },
                |cpu, _| cpu.gpr[reg::RBP] = 0x7000,
            );
            assert_eq!(exit, RunExit::Halted, "{mode:?}");
            let top = if mode == TestMode::Real {
                0x8000
            } else {
                STACK
            };
            assert_eq!(cpu.gpr[reg::RSP], top, "{mode:?}");
            assert_eq!(cpu.gpr[reg::RBP], 0x7000, "{mode:?}");
        }
    }

    #[test]
    fn leave_sizes() {
        let (cpu, _, r) = step(
            TestMode::Protected32,
            |a| a.leave(),
            |cpu, bus| {
                cpu.gpr[reg::RBP] = STACK - 0x20;
                bus.put(STACK - 0x20, 4, 0x1234_5678);
            },
        );
        assert!(r.is_ok());
        assert_eq!(cpu.gpr[reg::RSP], STACK - 0x1c);
        assert_eq!(cpu.gpr[reg::RBP], 0x1234_5678);
        // 16-bit LEAVE in 32-bit code: ESP = EBP, pop BP (upper EBP kept).
        let (cpu, _, _) = step_bytes(TestMode::Protected32, &[0x66, 0xc9], |cpu, bus| {
            cpu.gpr[reg::RBP] = STACK - 0x20;
            bus.put(STACK - 0x20, 2, 0x5678);
        });
        assert_eq!(cpu.gpr[reg::RSP], STACK - 0x1e);
        assert_eq!(cpu.gpr[reg::RBP], ((STACK - 0x20) & !0xffff) | 0x5678);
        // Real mode: SP = BP (16-bit).
        let (cpu, _, _) = step(
            TestMode::Real,
            |a| a.leave(),
            |cpu, bus| {
                cpu.gpr[reg::RBP] = 0x9999_7000;
                bus.put(0x7000, 2, 0x4321);
            },
        );
        assert_eq!(cpu.gpr[reg::RSP], 0x7002);
        assert_eq!(cpu.gpr[reg::RBP], 0x9999_4321);
        // 64-bit: faults leave RSP alone.
        let (cpu, _, r) = step(
            TestMode::Long64,
            |a| a.leave(),
            |cpu, _| cpu.gpr[reg::RBP] = 0x8000_0000_0000_0000,
        );
        assert_eq!(vec_of(&r), Some((vector::SS, Some(0))));
        assert_eq!(cpu.gpr[reg::RSP], STACK);
    }

    #[test]
    fn pop_segment_registers() {
        // Real mode: POP DS sets base = selector * 16.
        let (cpu, _, r) = step(
            TestMode::Real,
            |a| a.pop(ds),
            |_, bus| bus.put(0x8000, 2, 0x1234),
        );
        assert!(r.is_ok());
        assert_eq!(cpu.seg[SegReg::Ds as usize].selector, 0x1234);
        assert_eq!(cpu.seg[SegReg::Ds as usize].base, 0x12340);
        assert_eq!(cpu.gpr[reg::RSP], 0x8002);
        assert_eq!(cpu.shadow_at, u64::MAX, "no shadow for DS");
        // POP SS opens the interrupt shadow for the next instruction.
        let (cpu, _, _) = step(
            TestMode::Real,
            |a| a.pop(ss),
            |cpu, bus| {
                cpu.icount = 41;
                bus.put(0x8000, 2, 0x2000);
            },
        );
        assert_eq!(cpu.seg[SegReg::Ss as usize].base, 0x20000);
        assert_eq!(cpu.shadow_at, 42);
        assert_eq!(cpu.gpr[reg::RSP], 0x8002);
        // Protected mode: a 32-bit POP ES reads a dword slot, loads its low word.
        let (cpu, _, r) = step(
            TestMode::Protected32,
            |a| a.pop(es),
            |cpu, bus| {
                cpu.gpr[reg::RSP] = STACK - 4;
                cpu.seg[SegReg::Es as usize].selector = 0;
                bus.put(STACK - 4, 4, 0xffff_0000 | sel::DATA32 as u64);
            },
        );
        assert!(r.is_ok());
        assert_eq!(cpu.seg[SegReg::Es as usize].selector, sel::DATA32);
        assert_eq!(cpu.gpr[reg::RSP], STACK);
        // A bad selector faults with RSP unchanged.
        let (cpu, _, r) = step(
            TestMode::Protected32,
            |a| a.pop(ds),
            |cpu, bus| {
                cpu.gpr[reg::RSP] = STACK - 4;
                bus.put(STACK - 4, 4, 0x1238);
            },
        );
        assert_eq!(vec_of(&r).map(|v| v.0), Some(vector::GP));
        assert_eq!(cpu.gpr[reg::RSP], STACK - 4);
        assert_eq!(cpu.seg[SegReg::Ds as usize].selector, sel::DATA32);
        // 64-bit POP FS: 8-byte slot; 66h: 2 bytes.
        let (cpu, _, r) = step(
            TestMode::Long64,
            |a| a.pop(fs),
            |cpu, bus| {
                cpu.gpr[reg::RSP] = STACK - 8;
                bus.put(STACK - 8, 8, sel::DATA32 as u64);
            },
        );
        assert!(r.is_ok());
        assert_eq!(cpu.seg[SegReg::Fs as usize].selector, sel::DATA32);
        assert_eq!(cpu.gpr[reg::RSP], STACK);
        let (cpu, _, _) = step_bytes(TestMode::Long64, &[0x66, 0x0f, 0xa9], |cpu, bus| {
            cpu.gpr[reg::RSP] = STACK - 8;
            bus.put(STACK - 8, 8, 0);
        });
        assert_eq!(cpu.seg[SegReg::Gs as usize].selector, 0);
        assert_eq!(cpu.gpr[reg::RSP], STACK - 6);
    }

    #[test]
    fn pop_ss_advances_sp_with_the_old_stack_size() {
        // 16-bit stack (DATA16) replaced by a 32-bit one: SP += 4 as a 16-bit
        // stack, ESP's upper half untouched.
        let (cpu, _, r) = step(
            TestMode::Protected32,
            |a| a.pop(ss),
            |cpu, bus| {
                cpu.seg[SegReg::Ss as usize] = crate::state::Segment {
                    selector: sel::DATA16,
                    base: 0,
                    limit: 0xffff,
                    attr: crate::state::attr::DATA_RW,
                };
                cpu.gpr[reg::RSP] = 0xabcd_7000;
                bus.put(0x7000, 4, sel::DATA32 as u64);
            },
        );
        assert!(r.is_ok());
        assert_eq!(cpu.seg[SegReg::Ss as usize].selector, sel::DATA32);
        assert!(cpu.seg[SegReg::Ss as usize].db());
        assert_eq!(cpu.gpr[reg::RSP], 0xabcd_7004);
    }

    #[test]
    fn popf_value_rules() {
        // Direct checks of the rule table.
        let f = super::popf_value(FIXED, u64::MAX, 8, 0, false);
        assert_eq!(
            f,
            flags::STATUS | FIXED | TF | IF | flags::DF | IOPL | NT | AC | ID
        );
        let f = super::popf_value(FIXED | IF, 0, 4, 3, false);
        assert_eq!(f, FIXED | IF);
    }
}
