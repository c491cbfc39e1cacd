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

use iced_x86::{Decoder, DecoderError, DecoderOptions, FlowControl, Instruction};

use crate::block::{CodeCache, Op};
use crate::bus::Bus;
use crate::fault::{Fault, Result, Stop, StopKind};
use crate::state::{Cpu, SegReg};
use crate::tlb::{Access, JmpEntry, JMP_ENTRIES};

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
            if self.cpu.tlb.code_gen != self.code.gen {
                self.cpu.tlb.flush_writes();
                self.cpu.tlb.code_gen = self.code.gen;
            }
            let id = match self.lookup_block() {
                Ok(id) => id,
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
            let Some(block) = self.code.get(id) else {
                continue;
            };
            let ops: *const [Op] = &*block.ops;
            let ip_mask = ip_mask(block.bitness);
            // SAFETY: blocks are freed only by `CodeCache::collect`, which is
            // not called while this block runs; invalidation just marks it.
            let ops = unsafe { &*ops };
            let budget = (limit - self.cpu.icount).min(ops.len() as u64) as usize;
            self.cpu.end_block = false;
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
            self.cpu.end_block = false;
            if self.cpu.exit_request {
                self.cpu.exit_request = false;
                return RunExit::Exit;
            }
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

    /// Delivers an external interrupt (from the PIC or APIC) if the CPU can
    /// take it now; returns whether it was delivered.
    pub fn interrupt(&mut self, vector: u8) -> std::result::Result<(), Stop> {
        self.cpu.halted = false;
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

    fn lookup_block(&mut self) -> Result<u32> {
        let lin = self.pc_linear();
        let bitness = self.cpu.bitness;
        let user = self.cpu.cpl == 3;
        let mode = bitness | ((user as u32) << 8);
        let slot = ((lin ^ (lin >> 12)) as usize) & (JMP_ENTRIES - 1);
        let je = self.cpu.tlb.jmp[slot];
        if je.lin == lin && je.mode == mode && je.serial != 0 && self.code.get_checked(je.id, je.serial).is_some() {
            return Ok(je.id);
        }
        if bitness != 64 && self.cpu.rip > self.cpu.seg[SegReg::Cs as usize].limit as u64 {
            return Err(Fault::gp(0));
        }
        let gpa = self.translate(lin, Access::Exec, user)?;
        let id = match self.code.find(gpa, lin, bitness) {
            Some(id) => id,
            None => self.decode_block(lin, gpa)?,
        };
        if let Some(b) = self.code.get(id) {
            self.cpu.tlb.jmp[slot] = JmpEntry {
                lin,
                id,
                serial: b.serial,
                mode,
            };
        }
        Ok(id)
    }

    /// Decodes the block starting at linear `lin` (guest-physical `gpa`).
    fn decode_block(&mut self, lin: u64, gpa: u64) -> Result<u32> {
        let bitness = self.cpu.bitness;
        let rip = self.cpu.rip;
        let room = (0x1000 - (lin & 0xfff)) as usize;
        let mut buf = [0u8; 4096 + 16];
        // Bytes of this page; an instruction straddling into the next page is
        // fetched separately (only as the first instruction of a block).
        let n = self.fetch(lin, &mut buf[..room])?;
        let mut ops: Vec<Op> = Vec::with_capacity(16);
        let mut second_page = None;
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
            // The first instruction straddles a page boundary: fetch it whole
            // (this faults with CR2 in the next page if that is unmapped).
            let mut bytes = [0u8; 15];
            let got = self.fetch(lin, &mut bytes)?;
            let mut decoder = Decoder::with_ip(bitness, &bytes[..got], rip, DecoderOptions::NONE);
            let insn = decoder.decode();
            if insn.is_invalid() && decoder.last_error() == DecoderError::NoMoreBytes {
                // The rest of the instruction is not fetchable: report the fault there.
                let next = lin.wrapping_add(got as u64);
                self.translate(next, Access::Exec, self.cpu.cpl == 3)?;
            }
            let next_lin = (lin | 0xfff).wrapping_add(1);
            second_page = Some(self.translate(next_lin, Access::Exec, self.cpu.cpl == 3)?);
            ops.push(Op {
                insn,
                handler: dispatch::handler_for(&insn),
            });
        }
        let (id, _) = self.code.insert(gpa, lin, bitness, ops);
        if let Some(p2) = second_page {
            self.code.add_page(p2, id);
        }
        self.cpu.tlb.flush_writes_to(gpa);
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
