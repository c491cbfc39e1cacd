//! The caching interpreter: finds (or decodes) the block at CS:RIP, runs its
//! instructions through handlers resolved at decode time, and delivers the
//! exceptions they raise. It stops exactly at a requested instruction count.
//!
//! Instruction groups live one per file; each exposes `handler(&Instruction)
//! -> Option<Handler>` and [`dispatch::handler_for`] asks them in turn.

pub mod dispatch;
pub mod operand;

mod alu;
mod bcd;
mod bits;
mod branch;
mod data;
mod descriptor;
mod far;
mod interrupt;
mod io;
mod muldiv;
mod shift;
mod stack;
mod string;
mod system;

pub use interrupt::Event;

use iced_x86::{Decoder, DecoderError, DecoderOptions, FlowControl, Instruction, Mnemonic};

use crate::block::{CodeCache, Op};
use crate::bus::Bus;
use crate::fault::{Fault, Result, Stop, StopKind};
use crate::flags;
use crate::memory::is_canonical;
use crate::state::{Cpu, SegReg};
use crate::tlb::{JmpEntry, Tlb};

/// Longest block, in instructions.
const MAX_BLOCK: usize = 64;

/// Everything an instruction handler can touch.
pub struct Ctx<'a> {
    pub cpu: &'a mut Cpu,
    pub bus: &'a mut dyn Bus,
    pub code: &'a mut CodeCache,
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
            let (ops, ip_mask) = match self.lookup_block() {
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
            let ops = unsafe { &*ops };
            self.cpu.end_block = false;
            if self.cpu.rflags & flags::RF != 0 {
                // RF (SDM vol. 3 17.3.1.1) is cleared when the next instruction
                // completes. It is only set here after an IRET (which ends its
                // block), so it is checked once per block.
                if let Err(stop) = self.step_clearing_rf(&ops[0], ip_mask) {
                    return RunExit::Stop(stop);
                }
            } else {
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
                            if let Err(stop) = self.raise(f) {
                                return RunExit::Stop(stop);
                            }
                            break;
                        }
                    }
                }
            }
            self.cpu.end_block = false;
            if self.cpu.exit_request {
                self.cpu.exit_request = false;
                return RunExit::Exit;
            }
        }
    }

    /// Runs one instruction with RF set, then clears RF unless the instruction
    /// was an IRET that loaded it again.
    #[cold]
    #[inline(never)]
    fn step_clearing_rf(&mut self, op: &Op, ip_mask: u64) -> std::result::Result<(), Stop> {
        self.cpu.rip = op.insn.next_ip() & ip_mask;
        match (op.handler)(self, &op.insn) {
            Ok(()) => {
                self.cpu.icount += 1;
                if !matches!(op.insn.mnemonic(), Mnemonic::Iret | Mnemonic::Iretd | Mnemonic::Iretq) {
                    self.cpu.rflags &= !flags::RF;
                }
                Ok(())
            }
            Err(f) => {
                // The exception frame carries RF = 1, as for any fault.
                self.cpu.rip = op.insn.ip();
                self.raise(f)
            }
        }
    }

    /// Drops this vCPU's write translations when some page became a code page
    /// since they were made, so stores to it are seen (self-modifying code).
    #[inline(always)]
    fn sync_code_gen(&mut self) {
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
        if self.cpu.bitness == 64 {
            self.cpu.rip
        } else {
            self.cpu.seg[SegReg::Cs as usize]
                .base
                .wrapping_add(self.cpu.rip)
                & 0xffff_ffff
        }
    }

    /// The block at CS:RIP: its instructions and the IP mask of its width.
    ///
    /// The hit path is the jump cache plus a slot/serial check, no hashing.
    #[inline(always)]
    fn lookup_block(&mut self) -> Result<(*const [Op], u64)> {
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
        let key = self.cpu.tlb.jmp_key(bitness, user);
        let slot = Tlb::jmp_slot(lin);
        let je = &self.cpu.tlb.jmp[slot];
        if je.lin == lin && je.rip == rip && je.mode == key {
            if let Some(b) = self.code.get_checked(je.id, je.serial) {
                return Ok((&*b.ops as *const [Op], ip_mask(bitness)));
            }
        }
        self.lookup_block_slow(lin, rip, bitness, slot)
    }

    /// Jump-cache miss: translate (execute TLB, else a page walk), find the
    /// block by key or decode it, and fill the jump-cache slot.
    #[inline(never)]
    fn lookup_block_slow(&mut self, lin: u64, rip: u64, bitness: u32, slot: usize) -> Result<(*const [Op], u64)> {
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
        let key = self.cpu.tlb.jmp_key(bitness, self.cpu.cpl == 3);
        let Some(b) = self.code.get(id) else {
            return Err(Fault::Stop(StopKind::Unsupported("decoded block vanished".into())));
        };
        self.cpu.tlb.jmp[slot] = JmpEntry {
            lin,
            rip,
            id,
            serial: b.serial,
            mode: key,
        };
        Ok((&*b.ops as *const [Op], ip_mask(bitness)))
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
            (self.cpu.seg[SegReg::Cs as usize].limit as u64).wrapping_sub(rip).wrapping_add(1)
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
                let end = ends_block(&insn);
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

/// Whether a block must end after `insn`: anything but straight-line flow.
fn ends_block(insn: &Instruction) -> bool {
    insn.is_invalid() || insn.flow_control() != FlowControl::Next
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
mod tests {
    use crate::testutil::{run, assemble, TestMode, DATA};
    use iced_x86::code_asm::*;

    /// Nanoseconds this thread has spent on a CPU (robust against other
    /// processes competing for the machine), or wall time if unavailable.
    fn cpu_ns() -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|t| t.parse().ok()))
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0)
            })
    }

    fn mips(name: &str, mode: TestMode, build: impl FnOnce(&mut CodeAssembler) -> std::result::Result<(), iced_x86::IcedError>) {
        let code = assemble(mode, build);
        let mut best = 0f64;
        for _ in 0..5 {
            let t = cpu_ns();
            let (cpu, _, exit) = run(mode, &code, u64::MAX, |_, _| {});
            let dt = (cpu_ns() - t) as f64 / 1e9;
            assert_eq!(exit, crate::interp::RunExit::Halted);
            best = best.max(cpu.icount as f64 / dt / 1e6);
        }
        println!("{name}: best of 5 = {best:.1} MIPS (thread CPU time)");
    }

    #[test]
    #[ignore]
    fn bench_loops() {
        mips("alu loop (4-insn blocks)", TestMode::Long64, |a| {
            a.mov(ecx, 20_000_000u32)?;
            let mut l = a.create_label();
            a.set_label(&mut l)?;
            a.add(eax, ecx)?;
            a.xor(edx, eax)?;
            a.dec(ecx)?;
            a.jnz(l)?;
            a.hlt()
        });
        mips("tight loop (2-insn blocks)", TestMode::Long64, |a| {
            a.mov(ecx, 20_000_000u32)?;
            let mut l = a.create_label();
            a.set_label(&mut l)?;
            a.dec(ecx)?;
            a.jnz(l)?;
            a.hlt()
        });
        mips("memory loop", TestMode::Long64, |a| {
            a.mov(ecx, 10_000_000u32)?;
            a.mov(rdi, DATA)?;
            let mut l = a.create_label();
            a.set_label(&mut l)?;
            a.mov(dword_ptr(rdi), eax)?;
            a.add(eax, dword_ptr(rdi + 8))?;
            a.mov(dword_ptr(rdi + 0x1000), ecx)?;
            a.add(edx, dword_ptr(rdi + 0x1000))?;
            a.push(rax)?;
            a.pop(rbx)?;
            a.dec(ecx)?;
            a.jnz(l)?;
            a.hlt()
        });
        mips("call/ret loop", TestMode::Protected32, |a| {
            a.mov(ecx, 10_000_000u32)?;
            let mut f = a.create_label();
            let mut l = a.create_label();
            a.set_label(&mut l)?;
            a.call(f)?;
            a.dec(ecx)?;
            a.jnz(l)?;
            a.hlt()?;
            a.set_label(&mut f)?;
            a.inc(esi)?;
            a.ret()
        });
    }
}
