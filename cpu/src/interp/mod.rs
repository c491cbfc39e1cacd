//! The caching interpreter: finds (or decodes) the block at CS:RIP, runs its
//! instructions through handlers resolved at decode time, and delivers the
//! exceptions they raise. It stops exactly at a requested instruction count.
//!
//! Instruction groups live one per file; each exposes `handler(&Instruction)
//! -> Option<Handler>` and [`dispatch::handler_for`] asks them in turn.
//!
//! Blocks are found through the per-vCPU jump cache (linear address, RIP,
//! decode width, CPL 3 or not; emptied by every TLB flush; a hit also needs
//! the page's execute TLB entry), else through the execute TLB and the code
//! cache. Instruction fetch always goes through the execute TLB, so where a
//! run stops never changes which translation the code after it sees. A store to a page holding decoded code
//! invalidates its blocks and ends the current one, so the next instruction
//! sees the new bytes (SDM vol. 3, "Handling Self- and Cross-Modifying Code").
//!
//! Debug features (SDM vol. 3 17.3) take a slower per-instruction path only
//! while TF or RF is set or DR7 enables a breakpoint: single-step traps and
//! execute breakpoints. Deviations: data and I/O breakpoints are not
//! modelled; a block decoded under a larger CS limit is still used if the
//! limit later shrinks below its end at the same base (only its start is
//! re-checked).

pub mod dispatch;
pub mod operand;

mod alu;
mod bcd;
mod bits;
mod branch;
mod data;
mod descriptor;
mod far;
pub mod fp;
mod interrupt;
mod io;
mod muldiv;
mod shift;
mod sse;
mod sse4;
mod stack;
mod string;
mod system;
mod x87;

pub use interrupt::Event;

use iced_x86::{
    Decoder, DecoderError, DecoderOptions, FlowControl, Instruction, Mnemonic, Register,
};

use crate::block::{CodeCache, Op};
use crate::bus::Bus;
use crate::debug::DebugHit;
use crate::fault::{vector, Fault, Result, Stop, StopKind};
use crate::flags;
use crate::memory::is_canonical;
use crate::state::{Cpu, SegReg};
use crate::tlb::{Access, JmpEntry, Tlb};

/// Longest block, in instructions.
const MAX_BLOCK: usize = 64;
/// DR7 L0-L3/G0-G3: some breakpoint is enabled.
const DR7_ENABLES: u64 = 0xff;
/// DR6.BS: the #DB came from single-stepping.
const DR6_BS: u64 = 1 << 14;

/// Everything an instruction handler can touch.
pub struct Ctx<'a> {
    pub cpu: &'a mut Cpu,
    pub bus: &'a mut dyn Bus,
    pub code: &'a mut CodeCache,
}

/// A decoded block as [`Ctx::find_block`] returns it.
#[derive(Clone, Copy, Debug)]
pub struct BlockRef {
    /// Slot of the block in the [`CodeCache`].
    pub id: u32,
    /// Its serial number (a reused slot has another).
    pub serial: u32,
    /// Its instructions; valid until the next [`CodeCache::collect`].
    pub ops: *const [Op],
    /// Mask applied to RIP after each instruction (IP wraps at the code width).
    pub ip_mask: u64,
}

/// Why [`Ctx::run`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunExit {
    /// The instruction count reached the limit.
    Limit,
    /// The CPU executed HLT and waits for an interrupt.
    Halted,
    /// An instruction touched I/O, MMIO or the interrupt flag: the machine should look.
    Exit,
    /// The machine must stop (triple fault, unimplemented instruction).
    Stop(Stop),
}

impl<'a> Ctx<'a> {
    /// Bundles a vCPU with the machine it runs in.
    pub fn new(cpu: &'a mut Cpu, bus: &'a mut dyn Bus, code: &'a mut CodeCache) -> Ctx<'a> {
        Ctx { cpu, bus, code }
    }

    /// Runs until `cpu.icount == limit`, HLT, an exit request or a stop.
    ///
    /// Every retired instruction and every exception delivery counts one
    /// unit of virtual time; blocks are cut short so the count never passes
    /// `limit`. An instruction that faults leaves RIP at itself (SDM vol. 3
    /// 6.5: faults are restartable) and its exception is delivered at once.
    pub fn run(&mut self, limit: u64) -> RunExit {
        self.cpu.exit_request = false;
        loop {
            if self.cpu.halted {
                return RunExit::Halted;
            }
            if self.cpu.icount >= limit {
                return RunExit::Limit;
            }
            self.code.collect();
            self.sync_code_gen();
            let b = match self.find_block() {
                Ok(b) => b,
                Err(f) => {
                    if let Err(stop) = self.raise(f) {
                        return RunExit::Stop(stop);
                    }
                    if self.cpu.exit_request {
                        self.cpu.exit_request = false;
                        return RunExit::Exit;
                    }
                    continue;
                }
            };
            // SAFETY: blocks are freed only by `CodeCache::collect`, which is
            // not called while this block runs (invalidation just marks it),
            // and a block's ops live in their own heap allocation, which does
            // not move when the block table grows.
            let ops = unsafe { &*b.ops };
            self.cpu.end_block = false;
            if let Err(stop) = self.run_block(ops, b.ip_mask, limit) {
                return RunExit::Stop(stop);
            }
            self.cpu.end_block = false;
            if self.cpu.exit_request {
                self.cpu.exit_request = false;
                return RunExit::Exit;
            }
        }
    }

    /// Whether a block must run on the per-instruction debug path:
    /// single-stepping (TF), RF to clear, DR7 breakpoints, or a debugger
    /// breakpoint on one of its instructions.
    #[inline(always)]
    pub fn needs_debug_path(&self, ops: &[Op]) -> bool {
        self.cpu.rflags & (flags::TF | flags::RF) != 0
            || self.cpu.dr[7] & DR7_ENABLES != 0
            || self.debugger_breakpoint_in(ops)
    }

    /// Interprets one block found by [`Ctx::find_block`] (its `ops` and
    /// `ip_mask`), at most up to instruction count `limit`: the debug path
    /// when [`Ctx::needs_debug_path`], else each instruction's handler in
    /// turn until the block, the budget or `end_block` ends it. A fault is
    /// delivered at once (RIP at the faulting instruction).
    #[inline(always)]
    pub fn run_block(
        &mut self,
        ops: &[Op],
        ip_mask: u64,
        limit: u64,
    ) -> std::result::Result<(), Stop> {
        if self.needs_debug_path(ops) {
            // Single-stepping, instruction breakpoints or RF to clear.
            return self.run_block_debug(ops, ip_mask, limit);
        }
        let budget = (limit - self.cpu.icount).min(ops.len() as u64) as usize;
        for op in &ops[..budget] {
            self.cpu.rip = op.insn.next_ip() & ip_mask;
            match (op.handler)(self, &op.insn) {
                Ok(()) => {
                    self.cpu.icount += 1;
                    if self.cpu.end_block {
                        break;
                    }
                }
                Err(f) => {
                    self.cpu.rip = op.insn.ip();
                    return self.raise(f);
                }
            }
        }
        Ok(())
    }

    /// Runs a block instruction by instruction with the debug checks of SDM
    /// vol. 3 17.3: execute breakpoints in DR0-DR3 (fault-class #DB before
    /// the instruction, suppressed by RF, DR6.Bn), RF cleared once an
    /// instruction completes (unless it was an IRET that loaded it), and the
    /// single-step trap after an instruction that began with TF set (DR6.BS),
    /// except after INT n/INT3/INTO/INT1 that delivered (they clear TF) and
    /// after MOV SS/POP SS (the trap then comes after the next instruction).
    ///
    /// The single-step trap is delivered together with its instruction, in
    /// the same unit of virtual time, so a run never stops between the two.
    #[cold]
    #[inline(never)]
    fn run_block_debug(
        &mut self,
        ops: &[Op],
        ip_mask: u64,
        limit: u64,
    ) -> std::result::Result<(), Stop> {
        let budget = (limit - self.cpu.icount).min(ops.len() as u64) as usize;
        for op in &ops[..budget] {
            let ip = op.insn.ip();
            if self.debugger_breakpoint_at(ip) {
                // Stop before the instruction; the machine reports the hit.
                self.cpu.rip = ip;
                self.cpu.debug.hit = Some(DebugHit::Breakpoint {
                    addr: self.linear_ip(ip),
                });
                self.cpu.exit_request = true;
                return Ok(());
            }
            if self.cpu.rflags & flags::RF == 0 {
                let hits = self.exec_breakpoint_hits(ip);
                if hits != 0 {
                    self.cpu.rip = ip;
                    self.cpu.dr[6] = (self.cpu.dr[6] & !0xf) | hits;
                    // A fault: the frame carries RF = 1 so that the handler's
                    // IRET re-executes the instruction without a new hit.
                    self.cpu.rflags |= flags::RF;
                    return self.raise(Fault::exc(vector::DB));
                }
            }
            let before = self.cpu.rflags;
            self.cpu.rip = op.insn.next_ip() & ip_mask;
            match (op.handler)(self, &op.insn) {
                Ok(()) => {
                    self.cpu.icount += 1;
                    let insn = &op.insn;
                    if before & flags::RF != 0
                        && !matches!(
                            insn.mnemonic(),
                            Mnemonic::Iret | Mnemonic::Iretd | Mnemonic::Iretq
                        )
                    {
                        self.cpu.rflags &= !flags::RF;
                    }
                    let soft_int = matches!(
                        insn.mnemonic(),
                        Mnemonic::Int | Mnemonic::Int3 | Mnemonic::Into | Mnemonic::Int1
                    ) && self.cpu.rflags & flags::TF == 0;
                    let ss_load = matches!(insn.mnemonic(), Mnemonic::Mov | Mnemonic::Pop)
                        && insn.op0_register() == Register::SS;
                    if before & flags::TF != 0 && !soft_int && !ss_load && !self.cpu.halted {
                        self.cpu.dr[6] |= DR6_BS;
                        self.cpu.end_block = true;
                        return self
                            .deliver(Event::Exception {
                                vector: vector::DB,
                                error_code: None,
                            })
                            .map_err(|kind| self.stop_report(kind));
                    }
                    if self.cpu.end_block {
                        break;
                    }
                }
                Err(f) => {
                    self.cpu.rip = ip;
                    return self.raise(f);
                }
            }
        }
        Ok(())
    }

    /// Linear address of the instruction whose IP is `ip`.
    #[inline(always)]
    fn linear_ip(&self, ip: u64) -> u64 {
        if self.cpu.bitness == 64 {
            ip
        } else {
            self.cpu.seg[SegReg::Cs as usize].base.wrapping_add(ip) & 0xffff_ffff
        }
    }

    /// Whether a debugger breakpoint lies on one of the block's
    /// instructions (then the block runs an instruction at a time).
    #[inline(always)]
    fn debugger_breakpoint_in(&self, ops: &[Op]) -> bool {
        let (Some(set), Some(first), Some(last)) =
            (self.cpu.debug.breakpoints(), ops.first(), ops.last())
        else {
            return false;
        };
        let lo = self.linear_ip(first.insn.ip());
        let hi = self.linear_ip(last.insn.ip());
        // A block that wraps around the address space is checked whole.
        hi < lo || set.breakpoint_in(lo, hi + 1)
    }

    /// Whether a debugger breakpoint stops the instruction at `ip` now (not
    /// when the run resumes from a stop at this very count).
    fn debugger_breakpoint_at(&self, ip: u64) -> bool {
        self.cpu.debug.breakpoints().is_some_and(|set| {
            self.cpu.icount != self.cpu.debug.skip_at
                && set.breakpoints.contains(&self.linear_ip(ip))
        })
    }

    /// DR6.B0-B3 bits of the enabled execute breakpoints (DR7 L/G set,
    /// R/W = 00) at the instruction whose IP is `ip`.
    fn exec_breakpoint_hits(&self, ip: u64) -> u64 {
        let dr7 = self.cpu.dr[7];
        if dr7 & DR7_ENABLES == 0 {
            return 0;
        }
        let lin = self.linear_ip(ip);
        let mut hits = 0;
        for n in 0..4 {
            let enabled = (dr7 >> (2 * n)) & 3 != 0;
            let rw = (dr7 >> (16 + 4 * n)) & 3;
            if enabled && rw == 0 && self.cpu.dr[n] == lin {
                hits |= 1 << n;
            }
        }
        hits
    }

    /// Drops this vCPU's write translations when some page became a code page
    /// since they were made, so stores to it are seen (self-modifying code).
    #[inline(always)]
    pub fn sync_code_gen(&mut self) {
        if self.cpu.tlb.code_gen != self.code.gen {
            self.cpu.tlb.flush_writes();
            self.cpu.tlb.code_gen = self.code.gen;
        }
    }

    /// Delivers a fault raised by an instruction (or by fetch), escalating to
    /// #DF and triple fault as the SDM describes. Delivery counts as one unit
    /// of virtual time so a guest stuck in a fault loop still sees time pass.
    pub fn raise(&mut self, f: Fault) -> std::result::Result<(), Stop> {
        let r = match f {
            Fault::Exception { vector, error_code } => {
                self.deliver(Event::Exception { vector, error_code })
            }
            Fault::Stop(kind) => Err(kind),
        };
        self.cpu.icount += 1;
        self.cpu.end_block = true;
        r.map_err(|kind| self.stop_report(kind))
    }

    /// Delivers an external interrupt (from the PIC or APIC) and wakes the CPU
    /// from HLT. The caller checks that the CPU can take it now
    /// ([`Cpu::interrupts_enabled`]).
    pub fn interrupt(&mut self, vector: u8) -> std::result::Result<(), Stop> {
        self.cpu.halted = false;
        self.sync_code_gen();
        let r = self.deliver(Event::External { vector });
        self.cpu.icount += 1;
        r.map_err(|kind| self.stop_report(kind))
    }

    /// Describes where the machine stopped.
    pub fn stop_report(&mut self, kind: StopKind) -> Stop {
        let lin = self.pc_linear();
        let mut bytes = [0u8; 15];
        let n = self.fetch(lin, &mut bytes).unwrap_or(0);
        Stop {
            kind,
            icount: self.cpu.icount,
            cs: self.cpu.seg[SegReg::Cs as usize].selector,
            rip: self.cpu.rip,
            bytes: bytes[..n].to_vec(),
            mode: self.cpu.mode.name(),
        }
    }

    /// Linear address of CS:RIP.
    #[inline(always)]
    pub fn pc_linear(&self) -> u64 {
        self.linear_ip(self.cpu.rip)
    }

    /// The block at CS:RIP (decoded now if needed): its slot, serial,
    /// instructions and the IP mask of its width. A fetch fault is returned
    /// for the caller to raise.
    ///
    /// The hit path is the jump cache plus a slot/serial check, no hashing.
    #[inline(always)]
    pub fn find_block(&mut self) -> Result<BlockRef> {
        let rip = self.cpu.rip;
        let bitness = self.cpu.bitness;
        let lin = if bitness == 64 {
            rip
        } else {
            let cs = &self.cpu.seg[SegReg::Cs as usize];
            // Fetching beyond the CS limit raises #GP(0) (SDM vol. 3 5.3).
            if rip > cs.limit as u64 {
                return Err(Fault::gp(0));
            }
            cs.base.wrapping_add(rip) & 0xffff_ffff
        };
        let user = self.cpu.cpl == 3;
        let key = Tlb::jmp_key(bitness, user);
        let slot = Tlb::jmp_slot(lin);
        let je = &self.cpu.tlb.jmp[slot];
        // The block's page must also still have its execute translation,
        // to the page the block was decoded from: else whether a stale one
        // is used (page tables changed without INVLPG, entry since evicted)
        // would depend on where runs stop.
        if je.lin == lin
            && je.rip == rip
            && je.mode == key
            && self.cpu.tlb.lookup_gpa(Access::Exec, user, lin) == Some(je.gpa)
        {
            if let Some(b) = self.code.get_checked(je.id, je.serial) {
                return Ok(BlockRef {
                    id: je.id,
                    serial: je.serial,
                    ops: &*b.ops as *const [Op],
                    ip_mask: ip_mask(bitness),
                });
            }
        }
        self.lookup_block_slow(lin, rip, bitness, slot)
    }

    /// Jump-cache miss: translate (execute TLB, else a page walk), find the
    /// block by key or decode it, and fill the jump-cache slot.
    #[inline(never)]
    fn lookup_block_slow(
        &mut self,
        lin: u64,
        rip: u64,
        bitness: u32,
        slot: usize,
    ) -> Result<BlockRef> {
        if bitness == 64 && !is_canonical(lin) {
            // Instruction fetch from a non-canonical address (SDM vol. 3 6.15, #GP).
            return Err(Fault::gp(0));
        }
        let gpa = self.translate_exec(lin)?;
        let mut found = self.code.find(gpa, lin, rip, bitness);
        if let Some(id) = found {
            // A first instruction that straddles into the next page was
            // decoded with that page's bytes: the block holds only while
            // the next page still maps to the same physical page.
            if let Some(p2) = self.code.get(id).and_then(|b| b.page2) {
                let next = self.lin_mask((lin | 0xfff).wrapping_add(1));
                if self.translate_exec(next)? & !0xfff != p2 {
                    self.code.invalidate(id);
                    found = None;
                }
            }
        }
        let id = match found {
            Some(id) => id,
            None => self.decode_block(lin, rip, gpa)?,
        };
        let key = Tlb::jmp_key(bitness, self.cpu.cpl == 3);
        let Some(b) = self.code.get(id) else {
            return Err(Fault::Stop(StopKind::Unsupported(
                "decoded block vanished".into(),
            )));
        };
        self.cpu.tlb.jmp[slot] = JmpEntry {
            lin,
            rip,
            id,
            serial: b.serial,
            mode: key,
            // A block whose first instruction reaches into the next page
            // also depends on that page's translation: it always takes
            // this path, which checks both (never page-aligned: no match).
            gpa: match b.page2 {
                None => gpa & !0xfff,
                Some(_) => u64::MAX,
            },
        };
        Ok(BlockRef {
            id,
            serial: b.serial,
            ops: &*b.ops as *const [Op],
            ip_mask: ip_mask(bitness),
        })
    }

    /// Decodes the block starting at linear `lin` (IP `rip`, guest-physical `gpa`).
    #[cold]
    fn decode_block(&mut self, lin: u64, rip: u64, gpa: u64) -> Result<u32> {
        let bitness = self.cpu.bitness;
        let room = 0x1000 - (lin & 0xfff);
        // Bytes past the CS limit are not fetched: an instruction reaching
        // beyond it raises #GP(0) (SDM vol. 3 5.3). `lookup_block` checked
        // that RIP itself is within the limit.
        let limit_room = if bitness == 64 {
            u64::MAX
        } else {
            (self.cpu.seg[SegReg::Cs as usize].limit as u64)
                .wrapping_sub(rip)
                .wrapping_add(1)
        };
        let mut buf = [0u8; 4096];
        // Bytes of this page; an instruction straddling into the next page is
        // fetched separately (only as the first instruction of a block).
        let avail = room.min(limit_room) as usize;
        let n = self.fetch(lin, &mut buf[..avail])?;
        let mut ops: Vec<Op> = Vec::with_capacity(16);
        let mut page2 = None;
        {
            let mut decoder = Decoder::with_ip(bitness, &buf[..n], rip, DecoderOptions::NONE);
            let mut insn = Instruction::default();
            while decoder.can_decode() && ops.len() < MAX_BLOCK {
                decoder.decode_out(&mut insn);
                if insn.is_invalid() && decoder.last_error() == DecoderError::NoMoreBytes {
                    break;
                }
                // IP wraps at the code width (16-bit code in a segment
                // larger than 64 KiB, or EIP at 4 GiB): the next instruction
                // is not the next byte in IP terms, so decode it afresh.
                let end = ends_block(&insn) || insn.next_ip() > ip_mask(bitness);
                ops.push(Op {
                    insn,
                    handler: dispatch::handler_for(&insn),
                });
                if end {
                    break;
                }
            }
        }
        if ops.is_empty() {
            // The first instruction is cut by the page end or the CS limit:
            // fetch it whole (at most 15 bytes).
            let max = limit_room.min(15) as usize;
            let mut bytes = [0u8; 15];
            let got = self.fetch(lin, &mut bytes[..max])?;
            let mut decoder = Decoder::with_ip(bitness, &bytes[..got], rip, DecoderOptions::NONE);
            let insn = decoder.decode();
            if insn.is_invalid() && decoder.last_error() == DecoderError::NoMoreBytes {
                if got < max {
                    // The rest is not fetchable: this walk reports the fault
                    // (#PF with CR2 = the first byte of the next page).
                    let next = self.lin_mask(lin.wrapping_add(got as u64));
                    self.translate_exec(next)?;
                }
                if max < 15 {
                    return Err(Fault::gp(0));
                }
            }
            if insn.len() as u64 > room {
                let next = self.lin_mask((lin | 0xfff).wrapping_add(1));
                page2 = Some(self.translate_exec(next)? & !0xfff);
            }
            ops.push(Op {
                insn,
                handler: dispatch::handler_for(&insn),
            });
        }
        let (id, _) = self.code.insert(gpa, lin, rip, bitness, ops);
        if let Some(p2) = page2 {
            self.code.add_page(p2, id);
        }
        // The page(s) may have just become code pages: drop our write
        // translations before the block runs, so its own stores are seen.
        self.sync_code_gen();
        Ok(id)
    }
}

/// Whether a block must end after `insn`: anything but straight-line flow,
/// and writes to debug registers (the run loop picks its per-instruction
/// debug path when a block starts, so a new breakpoint applies right away).
fn ends_block(insn: &Instruction) -> bool {
    insn.is_invalid() || insn.flow_control() != FlowControl::Next || insn.op0_register().is_dr()
}

/// Mask applied to RIP after an instruction: IP wraps at the code width.
#[inline(always)]
fn ip_mask(bitness: u32) -> u64 {
    match bitness {
        16 => 0xffff,
        32 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Runs `cpu` until `limit` instructions have retired (or it halts, exits or stops).
pub fn run(cpu: &mut Cpu, bus: &mut dyn Bus, code: &mut CodeCache, limit: u64) -> RunExit {
    Ctx::new(cpu, bus, code).run(limit)
}

#[cfg(test)]
mod debug_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::vector;
    use crate::mmu::pf;
    use crate::state::{attr, cr, reg, Mode, Segment};
    use crate::testutil::{
        assemble, cpu_in, fault_of, install_fault_handlers, install_tables, pte, run, sel, Pager,
        Paging, TestBus, TestMode, CODE, DATA, RAM, STACK,
    };
    use iced_x86::code_asm::*;

    type Asm = CodeAssembler;
    type AsmResult = std::result::Result<(), iced_x86::IcedError>;

    /// A test machine whose code cache survives between runs.
    struct M {
        cpu: Cpu,
        bus: TestBus,
        code: CodeCache,
    }

    impl M {
        fn new(mode: TestMode) -> M {
            let mut bus = TestBus::new();
            install_tables(&mut bus);
            let cpu = cpu_in(mode);
            install_fault_handlers(&cpu, &mut bus);
            M {
                cpu,
                bus,
                code: CodeCache::new(),
            }
        }

        /// Long mode with 4-level 4 KiB tables identity-mapping RAM (user, writable).
        fn paged(mode: TestMode, kind: Paging) -> (M, Pager) {
            let mut m = M::new(mode);
            let mut pg = Pager::new(&mut m.bus, kind);
            pg.identity(&mut m.bus, 0, RAM as u64, pte::PWU);
            pg.enable(&mut m.cpu);
            (m, pg)
        }

        fn asm(
            &mut self,
            bits: u32,
            at: u64,
            build: impl FnOnce(&mut Asm) -> AsmResult,
        ) -> Vec<u8> {
            let mut a = Asm::new(bits).unwrap();
            build(&mut a).unwrap();
            let bytes = a.assemble(at).unwrap();
            self.bus.write(at, &bytes);
            // A host-side write: drop code decoded from there, as the machine does.
            let mut page = at & !0xfff;
            while page < at + bytes.len() as u64 {
                self.code.invalidate_page(page);
                page += 0x1000;
            }
            bytes
        }

        /// Runs until `limit`, a halt or a stop (machine exits just resume).
        fn run(&mut self, limit: u64) -> RunExit {
            loop {
                let e = Ctx::new(&mut self.cpu, &mut self.bus, &mut self.code).run(limit);
                if e != RunExit::Exit {
                    return e;
                }
            }
        }

        fn run_at(&mut self, rip: u64) -> RunExit {
            self.cpu.rip = rip;
            self.cpu.halted = false;
            self.run(self.cpu.icount + 1_000_000)
        }

        fn fault(&self) -> Option<(u8, Option<u64>, u64)> {
            fault_of(&self.cpu, &self.bus)
        }
    }

    #[test]
    fn stale_translation_does_not_depend_on_run_boundaries() {
        // Found by fuzzing: code that corrupts the PML4 entry mapping itself
        // (no INVLPG) kept running from its decoded block, but a run that
        // stopped in the middle re-walked the page tables to decode the rest
        // (fetch bypassed the execute TLB) and took a #PF. Either is allowed
        // by the SDM; the choice must not depend on where runs stop.
        // mov rsi, cr3; add byte [rsi], 0x80 (PS: reserved in a PML4E); nop; nop; hlt
        let code = [0x0f, 0x20, 0xde, 0x80, 0x06, 0x80, 0x90, 0x90, 0xf4];
        for step in [100, 1] {
            let mut m = M::new(TestMode::Long64);
            m.bus.write(CODE, &code);
            let mut exit = RunExit::Limit;
            while exit == RunExit::Limit || exit == RunExit::Exit {
                let limit = m.cpu.icount + step;
                exit = Ctx::new(&mut m.cpu, &mut m.bus, &mut m.code).run(limit);
            }
            assert_eq!(exit, RunExit::Halted, "step {step}");
            assert_eq!((m.cpu.icount, m.cpu.rip), (5, CODE + 9), "step {step}");
            assert_eq!(m.fault(), None);
        }
    }

    #[test]
    fn jump_cache_hit_needs_the_execute_translation() {
        // A block start in the jump cache whose page's execute TLB entry was
        // evicted (by a page in the same slot) is looked up again: here its
        // PTE was cleared without INVLPG, so the jump back faults. (Running
        // the stale block instead would make the outcome depend on where
        // earlier runs stopped; see the test above.)
        let (mut m, mut pg) = M::paged(TestMode::Long64, Paging::Long4);
        let (a, b) = (CODE, CODE + 0x1000 * crate::tlb::TLB_ENTRIES as u64);
        let pte_a = pg.entry(&mut m.bus, a, 0);
        m.asm(64, a, |x| {
            x.mov(byte_ptr(pte_a), 0u32)?; // page A not present, no INVLPG
            x.jmp(b)
        });
        m.asm(64, a + 0x20, |x| x.hlt());
        m.asm(64, b, |x| x.jmp(a + 0x20));
        assert_eq!(
            m.run_at(a + 0x20),
            RunExit::Halted,
            "X is in the jump cache"
        );
        assert_eq!(m.run_at(a), RunExit::Halted);
        assert_eq!(m.fault().map(|f| f.0), Some(vector::PF));
        assert_eq!(m.cpu.cr2, a + 0x20);
    }

    #[test]
    fn sixteen_bit_ip_wrap_ends_the_block() {
        // Found by fuzzing: a far CALL into a 16-bit code segment with a
        // 4 GiB limit at EIP 0x10_0000. After one instruction IP wraps to
        // 16 bits (0x0001), so the next instruction comes from CS.base + 1,
        // not from the byte after the first one.
        let mut m = M::new(TestMode::Protected32);
        m.bus.write(CODE, &[0x40, 0xf4]); // inc ax; hlt
        m.bus.write(1, &[0x43, 0xf4]); // inc bx; hlt
        m.cpu.seg[SegReg::Cs as usize] = Segment {
            selector: sel::CODE16,
            base: 0,
            limit: 0xffff_ffff,
            attr: attr::CODE_RX | attr::GRAN,
        };
        m.cpu.update_mode();
        m.cpu.gpr[reg::RAX] = 0;
        m.cpu.gpr[reg::RBX] = 0;
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        assert_eq!((m.cpu.gpr[reg::RAX], m.cpu.gpr[reg::RBX]), (1, 1));
        assert_eq!(m.cpu.rip, 3);
    }

    #[test]
    fn store_to_the_next_instruction_in_the_same_block() {
        for mode in [TestMode::Protected32, TestMode::Long64] {
            let mut m = M::new(mode);
            let bits = if mode == TestMode::Long64 { 64 } else { 32 };
            // mov byte [CODE+8], 0x42 (7 bytes; absolute in both modes)
            // mov eax, 0x11111111      (its imm8 at CODE+8 is patched)
            let prog = |target: u64| {
                move |a: &mut Asm| {
                    a.mov(eax, 0u32)?;
                    a.mov(byte_ptr(target), 0x42u32)?;
                    a.mov(eax, 0x1111_1111u32)?;
                    a.hlt()
                }
            };
            // Find where the second MOV's immediate lands, then aim at it.
            let bytes = m.asm(bits, CODE, prog(CODE));
            let imm = bytes
                .windows(5)
                .position(|w| w == [0xb8, 0x11, 0x11, 0x11, 0x11])
                .unwrap() as u64
                + 1;
            m.asm(bits, CODE, prog(CODE + imm));
            assert_eq!(m.run_at(CODE), RunExit::Halted);
            assert_eq!(
                m.cpu.gpr[0], 0x1111_1142,
                "{mode:?}: the patched byte was executed"
            );
            assert_eq!(m.cpu.icount, 4);
        }
    }

    #[test]
    fn store_to_a_later_block_and_through_an_alias() {
        let (mut m, mut pg) = M::paged(TestMode::Protected32, Paging::Bits32);
        let f = DATA + 0x2000;
        let alias = 0x4000_0000u64;
        pg.map(&mut m.bus, alias + 0x2000, f, pte::PWU, 12);
        m.asm(32, f, |a| {
            a.mov(eax, 1u32)?;
            a.ret()
        });
        m.asm(32, CODE, |a| {
            a.call(f)?;
            a.mov(ebx, eax)?;
            a.mov(byte_ptr(f + 1), 2u32)?;
            a.call(f)?;
            a.mov(ecx, eax)?;
            // Same physical page, another linear address.
            a.mov(byte_ptr(alias + 0x2000 + 1), 3u32)?;
            a.call(f)?;
            a.hlt()
        });
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        assert_eq!(
            (
                m.cpu.gpr[reg::RBX],
                m.cpu.gpr[reg::RCX],
                m.cpu.gpr[reg::RAX]
            ),
            (1, 2, 3)
        );
    }

    #[test]
    fn page_becoming_code_after_a_write_entry_exists() {
        let mut m = M::new(TestMode::Long64);
        let x = DATA + 0x3000;
        m.asm(64, x + 0x200, |a| {
            a.mov(eax, 1u32)?;
            a.ret()
        });
        m.asm(64, CODE, |a| {
            a.mov(rdi, x)?;
            a.mov(dword_ptr(rdi + 0x100), 0u32)?; // write TLB entry for the page
            a.call(x + 0x200)?; // the page becomes a code page
            a.mov(ebx, eax)?;
            a.mov(byte_ptr(rdi + 0x201), 2u32)?; // must invalidate
            a.call(x + 0x200)?;
            a.hlt()
        });
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        assert_eq!((m.cpu.gpr[reg::RBX], m.cpu.gpr[reg::RAX]), (1, 2));
    }

    #[test]
    fn another_vcpu_decoding_a_page_drops_our_write_entries() {
        let mut bus = TestBus::new();
        install_tables(&mut bus);
        let mut code = CodeCache::new();
        let mut a = cpu_in(TestMode::Long64);
        let mut b = cpu_in(TestMode::Long64);
        let x = DATA + 0x5000;
        let f = assemble(TestMode::Long64, |a| a.hlt());
        let prog = |v: u32| {
            let mut asm = Asm::new(64).unwrap();
            asm.mov(byte_ptr(x), v).unwrap();
            asm.hlt().unwrap();
            asm.assemble(CODE).unwrap()
        };
        // vCPU A stores to page X (a write entry), vCPU B then executes X
        // (mov eax, imm32 at X+1), then A stores into B's code.
        bus.write(CODE, &prog(0x90));
        bus.write(x + 1, &[0xb8, 1, 0, 0, 0, 0xf4]);
        let _ = f;
        assert_eq!(
            Ctx::new(&mut a, &mut bus, &mut code).run(100),
            RunExit::Exit
        );
        b.rip = x;
        assert_eq!(
            Ctx::new(&mut b, &mut bus, &mut code).run(100),
            RunExit::Exit
        );
        assert_eq!(b.gpr[0], 1);
        bus.write(CODE + 0x100, &{
            let mut asm = Asm::new(64).unwrap();
            asm.mov(byte_ptr(x + 2), 7u32).unwrap();
            asm.hlt().unwrap();
            asm.assemble(CODE + 0x100).unwrap()
        });
        a.rip = CODE + 0x100;
        a.halted = false;
        assert_eq!(
            Ctx::new(&mut a, &mut bus, &mut code).run(200),
            RunExit::Exit
        );
        b.rip = x;
        b.halted = false;
        assert_eq!(
            Ctx::new(&mut b, &mut bus, &mut code).run(200),
            RunExit::Exit
        );
        assert_eq!(b.gpr[0], 7, "B runs the bytes A stored");
    }

    #[test]
    fn instruction_straddling_two_pages() {
        let (mut m, mut pg) = M::paged(TestMode::Long64, Paging::Long4);
        let p2 = DATA + 0x1000;
        // mov eax, imm32 starting 2 bytes before the page boundary; its last
        // 3 bytes (imm bytes 1..3) are in the second page.
        let at = p2 - 2;
        m.bus.write(at, &[0xb8, 0x11, 0x22, 0x33, 0x44, 0xf4]);
        assert_eq!(m.run_at(at), RunExit::Halted);
        assert_eq!(m.cpu.gpr[0], 0x4433_2211);
        // A store into the second page invalidates it...
        m.asm(64, CODE, |a| {
            a.mov(byte_ptr(p2 + 1), 0x55u32)?;
            a.jmp(at)
        });
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        assert_eq!(m.cpu.gpr[0], 0x4455_2211);
        // ...and so does one into the first.
        m.asm(64, CODE, |a| {
            a.mov(byte_ptr(at + 1), 0x66u32)?;
            a.jmp(at)
        });
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        assert_eq!(m.cpu.gpr[0], 0x4455_2266);
        // The second page unmapped: #PF with CR2 at its first byte, a fetch
        // (I/D with NXE), RIP at the instruction.
        pg.write(&mut m.bus, p2, 0, 0);
        m.cpu.tlb.flush_all();
        let icount = m.cpu.icount;
        assert_eq!(m.run_at(at), RunExit::Halted);
        assert_eq!(m.fault(), Some((vector::PF, Some((pf::FETCH) as u64), at)));
        assert_eq!(m.cpu.cr2, p2);
        assert_eq!(
            m.cpu.icount,
            icount + 3,
            "delivery + the stub's two instructions"
        );
        // Remapped to another physical page: the old decode must not be reused.
        m.bus.write(0x60_0000, &[0x77, 0x88, 0x99, 0xf4]);
        pg.map(&mut m.bus, p2, 0x60_0000, pte::PWU, 12);
        m.cpu.tlb.flush_all();
        assert_eq!(m.run_at(at), RunExit::Halted);
        assert_eq!(m.cpu.gpr[0], 0x9988_7766);
    }

    #[test]
    fn jump_cache_across_cr3_switches() {
        let (mut m, mut pg1) = M::paged(TestMode::Long64, Paging::Long4);
        // A second address space: the same identity map, but page L maps elsewhere.
        let l = 0x4000_0000u64;
        let root1 = pg1.root;
        pg1.map(&mut m.bus, l, DATA + 0x1000, pte::PWU, 12);
        m.asm(64, DATA + 0x1000, |a| {
            a.mov(eax, 1u32)?;
            a.ret()
        });
        m.asm(64, DATA + 0x2000, |a| {
            a.mov(eax, 2u32)?;
            a.ret()
        });
        // Build the second tables by copying the first's entries except L.
        let root2 = clone_tables(&mut m.bus, root1, 0x70_0000);
        remap_4k(&mut m.bus, root2, l, DATA + 0x2000);
        m.asm(64, CODE, |a| {
            a.call(l)?;
            a.mov(ebx, eax)?;
            a.mov(rcx, root2)?;
            a.mov(cr3, rcx)?;
            a.call(l)?;
            a.mov(esi, eax)?;
            a.mov(rcx, root1)?;
            a.mov(cr3, rcx)?;
            a.call(l)?;
            a.hlt()
        });
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        assert_eq!(m.fault(), None);
        assert_eq!(
            (
                m.cpu.gpr[reg::RBX],
                m.cpu.gpr[reg::RSI],
                m.cpu.gpr[reg::RAX]
            ),
            (1, 2, 1)
        );
    }

    /// Copies a 4-level table tree rooted at `root` to fresh pages from `arena`; returns the new root.
    fn clone_tables(bus: &mut TestBus, root: u64, arena: u64) -> u64 {
        fn copy(bus: &mut TestBus, t: u64, level: u32, next: &mut u64) -> u64 {
            let new = *next;
            *next += 0x1000;
            for i in 0..512 {
                let mut e = bus.read(t + 8 * i, 8);
                if level > 0 && e & pte::P != 0 && e & pte::PS == 0 {
                    let child = copy(bus, e & 0xf_ffff_ffff_f000, level - 1, next);
                    e = (e & !0xf_ffff_ffff_f000) | child;
                }
                bus.put(new + 8 * i, 8, e);
            }
            new
        }
        let mut next = arena;
        copy(bus, root, 3, &mut next)
    }

    /// Points the 4 KiB PTE of `lin` (4-level tables at `root`) at `phys`.
    fn remap_4k(bus: &mut TestBus, root: u64, lin: u64, phys: u64) {
        let mut t = root;
        for level in (1..=3).rev() {
            t = bus.read(t + 8 * ((lin >> (12 + 9 * level)) & 0x1ff), 8) & 0xf_ffff_ffff_f000;
        }
        bus.put(t + 8 * ((lin >> 12) & 0x1ff), 8, phys | pte::PWU);
    }

    /// Flat CPL-3 segments for a long-mode test CPU.
    fn to_user64(cpu: &mut Cpu) {
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
            selector: sel::CODE64_USER,
            base: 0,
            limit: 0xffff_ffff,
            attr: attr::CODE_RX | attr::LONG | attr::GRAN | dpl3,
        };
        cpu.cpl = 3;
        cpu.update_mode();
    }

    #[test]
    fn user_fetch_from_a_supervisor_page_faults_after_cpl0_ran_it() {
        let (mut m, mut pg) = M::paged(TestMode::Long64, Paging::Long4);
        let s = DATA + 0x4000;
        pg.map(&mut m.bus, s, s, pte::P | pte::RW, 12);
        m.asm(64, s, |a| {
            a.mov(eax, 5u32)?;
            a.hlt()
        });
        assert_eq!(m.run_at(s), RunExit::Halted);
        assert_eq!(m.cpu.gpr[0], 5);
        to_user64(&mut m.cpu);
        m.cpu.gpr[reg::RSP] = STACK - 0x1000;
        m.cpu.gpr[0] = 0;
        assert_eq!(m.run_at(s), RunExit::Halted);
        assert_eq!(
            m.fault(),
            Some((
                vector::PF,
                Some((pf::PRESENT | pf::USER | pf::FETCH) as u64),
                s
            ))
        );
        assert_eq!(m.cpu.gpr[0], 0, "the supervisor block was not run at CPL 3");
        assert_eq!(m.cpu.cr2, s);
    }

    #[test]
    fn same_linear_address_at_another_decode_width() {
        let mut m = M::new(TestMode::Protected32);
        // 32-bit: mov eax, 0xf4f40002; hlt.  16-bit: mov ax, 2; hlt.
        m.bus.write(0x8000, &[0xb8, 0x02, 0x00, 0xf4, 0xf4, 0xf4]);
        assert_eq!(m.run_at(0x8000), RunExit::Halted);
        assert_eq!(m.cpu.gpr[0], 0xf4f4_0002);
        m.cpu.seg[SegReg::Cs as usize] = Segment {
            selector: sel::CODE16,
            base: 0,
            limit: 0xffff,
            attr: attr::CODE_RX,
        };
        m.cpu.update_mode();
        assert_eq!(m.cpu.bitness, 16);
        m.cpu.gpr[0] = 0;
        assert_eq!(m.run_at(0x8000), RunExit::Halted);
        assert_eq!(m.cpu.gpr[0], 2);
        assert_eq!(m.cpu.rip, 0x8004);
    }

    #[test]
    fn same_linear_address_through_another_cs_base() {
        let mut m = M::new(TestMode::Real);
        // call next / next: pop ax / hlt  -- AX = IP after the call.
        m.bus.write(0x7c00, &[0xe8, 0x00, 0x00, 0x58, 0xf4]);
        m.cpu.seg[SegReg::Cs as usize] = Segment::real(0, attr::DATA_RW);
        assert_eq!(m.run_at(0x7c00), RunExit::Halted);
        assert_eq!(m.cpu.gpr[0] & 0xffff, 0x7c03);
        m.cpu.seg[SegReg::Cs as usize] = Segment::real(0x07c0, attr::DATA_RW);
        assert_eq!(m.run_at(0), RunExit::Halted);
        assert_eq!(
            m.cpu.gpr[0] & 0xffff,
            3,
            "IPs are relative to the new CS base"
        );
        assert_eq!(m.cpu.rip, 5);
    }

    #[test]
    fn run_stops_exactly_at_the_limit() {
        let mut m = M::new(TestMode::Long64);
        m.asm(64, CODE, |a| {
            for _ in 0..200 {
                a.inc(eax)?;
            }
            a.hlt()
        });
        m.cpu.rip = CODE;
        for limit in [1u64, 7, 64, 65, 130, 199] {
            assert_eq!(m.run(limit), RunExit::Limit);
            assert_eq!(m.cpu.icount, limit);
            assert_eq!(m.cpu.gpr[0], limit);
            assert_eq!(m.cpu.rip, CODE + 2 * limit, "inc eax is 2 bytes");
        }
        assert_eq!(m.run(1000), RunExit::Halted);
        assert_eq!(m.cpu.icount, 201);
        assert_eq!(m.run(1000), RunExit::Halted, "stays halted");
        assert_eq!(m.cpu.icount, 201);
        // Longest block: MAX_BLOCK instructions.
        let gpa = CODE;
        let id = m.code.find(gpa, CODE, CODE, 64).expect("first block");
        assert_eq!(m.code.get(id).map(|b| b.ops.len()), Some(MAX_BLOCK));
    }

    #[test]
    fn hlt_exits_then_reports_halted() {
        let (_, _, exit) = run(TestMode::Protected32, &[0x90, 0xf4], 100, |_, _| {});
        assert_eq!(exit, RunExit::Halted);
        let mut m = M::new(TestMode::Protected32);
        m.bus.write(CODE, &[0x90, 0xf4, 0x90]);
        m.cpu.rip = CODE;
        let e = Ctx::new(&mut m.cpu, &mut m.bus, &mut m.code).run(100);
        assert_eq!(e, RunExit::Exit, "HLT asks the machine to look");
        assert_eq!((m.cpu.icount, m.cpu.rip), (2, CODE + 2));
        assert_eq!(
            Ctx::new(&mut m.cpu, &mut m.bus, &mut m.code).run(100),
            RunExit::Halted
        );
        assert_eq!(m.cpu.icount, 2);
    }

    #[test]
    fn blocks_end_after_control_flow() {
        let mut m = M::new(TestMode::Protected32);
        m.asm(32, CODE, |a| {
            let mut l = a.create_label();
            a.nop()?;
            a.jmp(l)?;
            a.set_label(&mut l)?;
            a.nop()?;
            a.nop()?;
            a.hlt()?;
            a.nop()
        });
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        let len = |m: &M, ip: u64| {
            m.code
                .find(ip, ip, ip, 32)
                .and_then(|id| m.code.get(id))
                .map(|b| b.ops.len())
        };
        assert_eq!(len(&m, CODE), Some(2), "nop; jmp");
        // HLT does not end a block at decode time; it ends it when it runs.
        assert!(len(&m, CODE + 3) >= Some(3));
        assert_eq!(m.cpu.icount, 5);
    }

    #[test]
    fn faults_restart_at_the_instruction_and_count_one() {
        for mode in [TestMode::Protected32, TestMode::Long64] {
            let mut m = M::new(mode);
            let bits = if mode == TestMode::Long64 { 64 } else { 32 };
            m.asm(bits, CODE, |a| {
                a.inc(eax)?;
                a.inc(eax)?;
                a.ud2()?;
                a.inc(eax)?;
                a.hlt()
            });
            let inc_len = if bits == 64 { 2 } else { 1 };
            assert_eq!(m.run_at(CODE), RunExit::Halted);
            assert_eq!(
                m.fault(),
                Some((vector::UD, None, CODE + 2 * inc_len)),
                "{mode:?}"
            );
            assert_eq!(m.cpu.gpr[0], 2, "nothing after the fault ran");
            // 2 INCs, the delivery, the stub's MOV and HLT.
            assert_eq!(m.cpu.icount, 5);
        }
        // A #PF from a data access: the MOV did not complete, RIP at it.
        let mut m = M::new(TestMode::Long64);
        m.asm(64, CODE, |a| {
            a.mov(rbx, 0x80_0000_0000u64)?;
            a.mov(eax, 9u32)?;
            a.mov(dword_ptr(rbx), eax)?;
            a.hlt()
        });
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        assert_eq!(
            m.fault(),
            Some((vector::PF, Some(pf::WRITE as u64), CODE + 15))
        );
        assert_eq!(m.cpu.cr2, 0x80_0000_0000);
    }

    #[test]
    fn fetch_faults() {
        // Unmapped code: #PF with I/D (NXE is on in the long-mode test CPU).
        let mut m = M::new(TestMode::Long64);
        assert_eq!(m.run_at(0x80_0000_1000), RunExit::Halted);
        assert_eq!(
            m.fault(),
            Some((vector::PF, Some(pf::FETCH as u64), 0x80_0000_1000))
        );
        assert_eq!(m.cpu.cr2, 0x80_0000_1000);
        assert_eq!(m.cpu.icount, 3);
        // Non-canonical RIP: #GP(0).
        let mut m = M::new(TestMode::Long64);
        assert_eq!(m.run_at(0x8000_0000_0000), RunExit::Halted);
        assert_eq!(m.fault(), Some((vector::GP, Some(0), 0x8000_0000_0000)));
        // Past the CS limit, and an instruction crossing it: #GP(0).
        let mut m = M::new(TestMode::Protected32);
        m.asm(32, CODE, |a| {
            a.nop()?;
            a.nop()?;
            a.nop()?;
            a.mov(eax, 1u32)?;
            a.hlt()
        });
        m.cpu.seg[SegReg::Cs as usize].limit = (CODE + 4) as u32;
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        assert_eq!(m.fault(), Some((vector::GP, Some(0), CODE + 3)));
        assert_eq!(m.cpu.gpr[0], 0);
        let mut m = M::new(TestMode::Protected32);
        m.bus.write(CODE, &[0x90, 0x90, 0xf4]);
        m.cpu.seg[SegReg::Cs as usize].limit = (CODE + 1) as u32;
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        assert_eq!(m.fault(), Some((vector::GP, Some(0), CODE + 2)));
        assert_eq!(m.cpu.icount, 2 + 1 + 2);
        // The same block reached again after the limit shrank.
        m.cpu.seg[SegReg::Cs as usize].limit = 0xffff_ffff;
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        assert_eq!(m.fault(), None);
        m.cpu.seg[SegReg::Cs as usize].limit = (CODE - 1) as u32;
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        assert_eq!(m.fault(), Some((vector::GP, Some(0), CODE)));
    }

    #[test]
    fn nx_and_user_faults_through_the_run_loop() {
        // Long mode, PAE-style entries with NX: a fetch from an NX page.
        let (mut m, mut pg) = M::paged(TestMode::Long64, Paging::Long4);
        let x = DATA + 0x6000;
        m.bus.write(x, &[0xf4]);
        pg.map(&mut m.bus, x, x, pte::PWU | pte::NX, 12);
        assert_eq!(m.run_at(x), RunExit::Halted);
        assert_eq!(
            m.fault(),
            Some((vector::PF, Some((pf::PRESENT | pf::FETCH) as u64), x))
        );
        // The same page without NX runs.
        pg.map(&mut m.bus, x, x, pte::PWU, 12);
        m.cpu.tlb.flush_page(x);
        assert_eq!(m.run_at(x), RunExit::Halted);
        assert_eq!(m.fault(), None);

        // 32-bit paging at CPL 3: a store to a supervisor page. The frame is
        // on the ring-0 stack from the TSS; CR2 and the error code are exact.
        let (mut m, mut pg) = M::paged(TestMode::Protected32, Paging::Bits32);
        let k = DATA + 0x7000;
        pg.map(&mut m.bus, k, k, pte::P | pte::RW, 12);
        m.asm(32, CODE, |a| {
            a.mov(eax, 1u32)?;
            a.mov(dword_ptr(k + 0x10), eax)?;
            a.hlt()
        });
        let dpl3 = 3 << attr::DPL_SHIFT;
        for s in SegReg::ALL {
            m.cpu.seg[s as usize] = Segment {
                selector: sel::DATA32_USER,
                base: 0,
                limit: 0xffff_ffff,
                attr: attr::DATA_RW | attr::DB | attr::GRAN | dpl3,
            };
        }
        m.cpu.seg[SegReg::Cs as usize] = Segment {
            selector: sel::CODE32_USER,
            base: 0,
            limit: 0xffff_ffff,
            attr: attr::CODE_RX | attr::DB | attr::GRAN | dpl3,
        };
        m.cpu.cpl = 3;
        m.cpu.update_mode();
        m.cpu.gpr[reg::RSP] = STACK - 0x100;
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        assert_eq!(
            m.fault(),
            Some((
                vector::PF,
                Some((pf::PRESENT | pf::WRITE | pf::USER) as u64),
                CODE + 5
            ))
        );
        assert_eq!(m.cpu.cr2, k + 0x10);
        assert_eq!(
            m.cpu.gpr[reg::RSP],
            0x8f_0000 - 24,
            "error code, EIP, CS, EFLAGS, ESP, SS"
        );
        assert_eq!(m.bus.read(k + 0x10, 4), 0);
    }

    #[test]
    fn single_step_traps() {
        // TF set by POPF: the trap comes after the next instruction, with
        // RIP after it, DR6.BS, and TF (not RF) in the pushed EFLAGS.
        let mut m = M::new(TestMode::Protected32);
        m.asm(32, CODE, |a| {
            a.pushfd()?;
            a.or(dword_ptr(esp), 0x100)?;
            a.popfd()?;
            a.inc(eax)?;
            a.inc(eax)?;
            a.hlt()
        });
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        // pushfd (1), or dword [esp], 0x100 (7), popfd (1), inc eax (1).
        let after_first_inc = CODE + 1 + 7 + 1 + 1;
        assert_eq!(m.fault(), Some((vector::DB, None, after_first_inc)));
        assert_eq!(m.cpu.gpr[0], 1);
        assert_ne!(m.cpu.dr[6] & DR6_BS, 0);
        let eflags = m.bus.read(m.cpu.gpr[reg::RSP] + 8, 4);
        assert_eq!(eflags & (flags::TF | flags::RF), flags::TF);
        assert_eq!(m.cpu.rflags & flags::TF, 0, "the handler runs untraced");
        // The instruction and its trap are one unit: 4 + stub's 2.
        assert_eq!(m.cpu.icount, 6);

        // INT3 with TF set: the breakpoint handler, no single-step trap.
        let mut m = M::new(TestMode::Protected32);
        m.bus.write(CODE, &[0xcc, 0xf4]);
        m.cpu.rflags |= flags::TF;
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        assert_eq!(m.fault(), Some((vector::BP, None, CODE + 1)));

        // MOV SS holds the trap until after the next instruction.
        let mut m = M::new(TestMode::Protected32);
        let code = m.asm(32, CODE, |a| {
            a.mov(ss, ax)?;
            a.inc(ecx)?;
            a.inc(ecx)?;
            a.hlt()
        });
        m.cpu.gpr[0] = sel::DATA32 as u64;
        m.cpu.rflags |= flags::TF;
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        // After the first INC (the second INC and HLT are the last 2 bytes).
        let after = CODE + code.len() as u64 - 2;
        assert_eq!(m.fault(), Some((vector::DB, None, after)));
        assert_eq!(m.cpu.gpr[reg::RCX], 1);

        // A faulting instruction takes its fault, not the trap.
        let mut m = M::new(TestMode::Long64);
        m.bus.write(CODE, &[0x0f, 0x0b]);
        m.cpu.rflags |= flags::TF;
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        assert_eq!(m.fault(), Some((vector::UD, None, CODE)));

        // Stepping with run limits: each instruction retires with its trap.
        let mut m = M::new(TestMode::Long64);
        m.bus.write(CODE, &[0x90, 0x90]);
        m.cpu.rflags |= flags::TF;
        m.cpu.rip = CODE;
        assert_eq!(m.run(1), RunExit::Limit);
        assert_eq!(
            m.cpu.rip,
            crate::testutil::FAULT_STUBS + 16 * vector::DB as u64
        );
    }

    #[test]
    fn execute_breakpoints() {
        let mut m = M::new(TestMode::Protected32);
        m.asm(32, CODE, |a| {
            a.inc(eax)?;
            a.mov(dr0, esi)?;
            a.mov(ecx, 0x401u32)?;
            a.mov(dr7, ecx)?;
            a.inc(eax)?;
            a.inc(eax)?;
            a.hlt()
        });
        // inc (1), mov dr0 (3), mov ecx (5), mov dr7 (3), inc (1).
        let target = CODE + 1 + 3 + 5 + 3 + 1;
        m.cpu.dr[6] = 0xffff_0ff0;
        m.cpu.gpr[reg::RSI] = CODE + 1;
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        assert_eq!(
            m.fault(),
            None,
            "DR0 is not the address of a later instruction"
        );
        m.cpu.gpr[0] = 0;
        m.cpu.gpr[reg::RSI] = target;
        m.cpu.dr[7] = 0;
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        assert_eq!(
            m.fault(),
            Some((vector::DB, None, target)),
            "a fault, before the instruction"
        );
        assert_eq!(m.cpu.gpr[0], 2, "the instruction did not run");
        assert_eq!(m.cpu.dr[6] & 0xf, 1, "DR6.B0");
        assert_ne!(
            m.bus.read(m.cpu.gpr[reg::RSP] + 8, 4) & flags::RF,
            0,
            "RF in the frame"
        );
        // Resuming with RF set (as IRET from the handler would) runs it.
        m.cpu.seg[SegReg::Cs as usize].base = 0;
        m.cpu.rflags |= flags::RF;
        m.cpu.gpr[reg::RSP] = STACK;
        assert_eq!(m.run_at(target), RunExit::Halted);
        assert_eq!(m.fault(), None);
        assert_eq!(m.cpu.gpr[0], 3);
        assert_eq!(m.cpu.rflags & flags::RF, 0);
        // A data breakpoint (R/W = 01) is not an execute breakpoint.
        m.cpu.dr[7] = 0x1_0001;
        m.cpu.dr[0] = target;
        assert_eq!(m.run_at(target), RunExit::Halted);
        assert_eq!(m.fault(), None);
    }

    #[test]
    fn rf_is_cleared_after_one_instruction() {
        let mut m = M::new(TestMode::Protected32);
        m.bus.write(CODE, &[0x40, 0x40, 0x40, 0xf4]);
        m.cpu.rflags |= flags::RF;
        m.cpu.rip = CODE;
        assert_eq!(m.run(2), RunExit::Limit);
        assert_eq!(m.cpu.rflags & flags::RF, 0);
        assert_eq!((m.cpu.icount, m.cpu.gpr[0]), (2, 2));
        // A fault with RF set keeps it in the frame and delivers normally.
        let mut m = M::new(TestMode::Protected32);
        m.bus.write(CODE, &[0x0f, 0x0b]);
        m.cpu.rflags |= flags::RF;
        assert_eq!(m.run_at(CODE), RunExit::Halted);
        assert_eq!(m.fault(), Some((vector::UD, None, CODE)));
        assert_ne!(m.bus.read(m.cpu.gpr[reg::RSP] + 8, 4) & flags::RF, 0);
    }

    #[test]
    fn mode_switch_ends_the_block() {
        // Protected mode -> real mode via CR0 in the middle of a block: the
        // next instruction must be decoded as 16-bit code.
        let mut m = M::new(TestMode::Protected32);
        m.cpu.seg[SegReg::Cs as usize] = Segment {
            selector: sel::CODE16,
            base: 0,
            limit: 0xffff,
            attr: attr::CODE_RX,
        };
        m.cpu.update_mode();
        // 16-bit code at 0x8000: mov eax, cr0 / and al, 0xfe / mov cr0, eax / mov ax, 0x1234 (B8 34 12) / hlt
        m.bus.write(
            0x8000,
            &[
                0x0f, 0x20, 0xc0, 0x24, 0xfe, 0x0f, 0x22, 0xc0, 0xb8, 0x34, 0x12, 0xf4,
            ],
        );
        m.cpu.gpr[0] = 0xffff_0000;
        assert_eq!(m.run_at(0x8000), RunExit::Halted);
        assert_eq!(m.cpu.mode, Mode::Real);
        assert_eq!(
            m.cpu.gpr[0],
            0x1234 | (m.cpu.cr0 & 0xffff_0000),
            "mov ax, imm16 in 16-bit code"
        );
        assert_eq!(m.cpu.cr0 & cr::CR0_PE, 0);
    }
}
