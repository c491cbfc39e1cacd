//! Runs generated code in hindsight's interpreter: a CPU in 64-bit user mode
//! (CPL 3) with 4-level paging that maps the scratch region at the same
//! linear address as on the host, over a small RAM bus.
//!
//! Instructions are decoded once and stepped one at a time through
//! `dispatch::handler_for`, so an exception is seen directly (with RIP at the
//! faulting instruction) instead of being delivered through an IDT.
//!
//! JIT mode ([`Emu::use_jit`]) runs the code bytes from guest memory
//! through `hindsight_jit::Jit::run` instead, translating every block on
//! first sight. Exceptions are then delivered for real, through an IDT
//! whose 64-bit gates lead to `HLT` stubs (one per vector) on a ring-0 stack
//! from the TSS; the frame gives back the faulting RIP, RSP and RFLAGS. The
//! code is followed by `UD2`: #UD at the end address means it ran to the end.

use hindsight_cpu::block::Handler;
use hindsight_cpu::fault::Fault;
use hindsight_cpu::interp::dispatch::handler_for;
use hindsight_cpu::state::{attr, cr, reg, Cpu, SegReg, Segment, TableReg};
use hindsight_cpu::{Bus, CodeCache, Ctx, RunExit, WritablePage};
use hindsight_jit::Jit;
use iced_x86::{Instruction, OpKind, Register};

use crate::fp::FpState;
use crate::host::{DATA_OFF, DATA_SIZE, REGION};

/// Physical layout: page tables at 0x1000–0x4fff, the region at 0x8000.
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PD: u64 = 0x3000;
const PT: u64 = 0x4000;
const REGION_PHYS: u64 = 0x8000;
/// Supervisor structures for JIT mode (GDT, IDT, stubs, TSS, stack), after
/// the region in physical memory and at `base + SYS_OFF` in linear memory.
const SYS_PHYS: u64 = REGION_PHYS + REGION as u64;
const SYS_OFF: u64 = 0x10_0000;
const SYS_PAGES: u64 = 5;
const RAM: usize = (SYS_PHYS + SYS_PAGES * 0x1000) as usize;
/// Kernel code selector of the JIT-mode GDT.
const KERNEL_CS: u16 = 0x08;
/// Most instructions a case may retire.
const MAX_STEPS: u64 = 1_000_000;

/// Flat RAM; everything else reads as ones.
struct EmuBus {
    ram: Vec<u8>,
}

impl Bus for EmuBus {
    fn ram_page(&mut self, page: u64) -> Option<*mut u8> {
        if (page as usize) < self.ram.len() {
            Some(self.ram[page as usize..].as_mut_ptr())
        } else {
            None
        }
    }
    fn ram_page_mut(&mut self, page: u64) -> Option<WritablePage> {
        self.ram_page(page).map(|host| WritablePage {
            host,
            cacheable: true,
        })
    }
    fn mmio_read(&mut self, _: u64, size: u8, _: u64) -> u64 {
        hindsight_cpu::flags::mask(size)
    }
    fn mmio_write(&mut self, _: u64, _: u8, _: u64, _: u64) {}
    fn io_read(&mut self, _: u16, _: u8, _: u64) -> u32 {
        u32::MAX
    }
    fn io_write(&mut self, _: u16, _: u8, _: u32, _: u64) {}
}

impl EmuBus {
    fn put(&mut self, addr: u64, v: u64) {
        self.ram[addr as usize..addr as usize + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn get(&self, addr: u64) -> u64 {
        let a = addr as usize;
        let mut b = [0u8; 8];
        if let Some(s) = self.ram.get(a..a + 8) {
            b.copy_from_slice(s);
        }
        u64::from_le_bytes(b)
    }
}

/// How the interpreter's run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmuEnd {
    /// Ran to the end of the code.
    Done,
    /// An exception (vector) at the instruction at `rip`.
    Fault { vector: u8, rip: u64 },
    /// The interpreter does not implement this instruction.
    Unimplemented(String),
    /// Something else stopped it (described).
    Other(String),
}

/// Outcome of one interpreted run.
#[derive(Clone, Debug)]
pub struct EmuOut {
    pub gpr: [u64; 16],
    pub rflags: u64,
    /// The final x87/MMX/SSE state.
    pub fp: FpState,
    /// The memory operands executed: instruction index, linear address, size.
    pub mem_refs: Vec<(usize, u64, usize)>,
    pub end: EmuEnd,
}

/// The interpreter side.
pub struct Emu {
    cpu: Cpu,
    bus: EmuBus,
    cache: CodeCache,
    base: u64,
    /// JIT mode: the engine that runs the cases.
    jit: Option<Jit>,
    /// JIT mode: the bytes of the next case (from its first IP to `end`).
    code: Option<Vec<u8>>,
}

impl Emu {
    /// A CPU in 64-bit user mode with the region mapped at `base` (2 MiB aligned).
    pub fn new(base: u64) -> Emu {
        let mut bus = EmuBus { ram: vec![0; RAM] };
        bus.put(PML4 + 8 * ((base >> 39) & 511), PDPT | 7);
        bus.put(PDPT + 8 * ((base >> 30) & 511), PD | 7);
        bus.put(PD + 8 * ((base >> 21) & 511), PT | 7);
        for i in 0..(REGION as u64 / 0x1000) {
            let lin = base + i * 0x1000;
            bus.put(PT + 8 * ((lin >> 12) & 511), (REGION_PHYS + i * 0x1000) | 7);
        }
        // Supervisor-only, writable.
        for i in 0..SYS_PAGES {
            let lin = base + SYS_OFF + i * 0x1000;
            bus.put(PT + 8 * ((lin >> 12) & 511), (SYS_PHYS + i * 0x1000) | 3);
        }
        let sys = base + SYS_OFF;
        // GDT: a 64-bit ring-0 code segment at 0x08.
        bus.put(SYS_PHYS + KERNEL_CS as u64, 0x0020_9a00_0000_0000);
        // IDT: vector v -> HLT stub at sys + 0x2000 + 16 v (INT1/INT3/INTO
        // reachable from ring 3, as under Linux).
        for v in 0..32u64 {
            let stub = sys + 0x2000 + 16 * v;
            let dpl3 = matches!(v, 1 | 3 | 4);
            let kind: u64 = if dpl3 { 0xee } else { 0x8e };
            let lo = (stub & 0xffff)
                | ((KERNEL_CS as u64) << 16)
                | (kind << 40)
                | (((stub >> 16) & 0xffff) << 48);
            bus.put(SYS_PHYS + 0x1000 + 16 * v, lo);
            bus.put(SYS_PHYS + 0x1000 + 16 * v + 8, stub >> 32);
            bus.ram[(SYS_PHYS + 0x2000 + 16 * v) as usize] = 0xf4;
        }
        // TSS: RSP0 at offset 4 (the stack is the page after it).
        bus.put(SYS_PHYS + 0x3004, sys + 0x5000);
        let mut cpu = Cpu::new(0);
        cpu.cr0 |= cr::CR0_PE | cr::CR0_PG;
        cpu.cr4 |= cr::CR4_PAE;
        // x87 and SSE enabled as under Linux: native x87 errors (#MF), no
        // emulation, no task-switched trap; FXSAVE/SSE, #XM and XSAVE enabled.
        cpu.cr0 = (cpu.cr0 | cr::CR0_MP | cr::CR0_NE) & !(cr::CR0_EM | cr::CR0_TS);
        cpu.cr4 |= cr::CR4_OSFXSR | cr::CR4_OSXMMEXCPT | cr::CR4_OSXSAVE;
        // XSAVE manages x87 and SSE state (Linux's XCR0 has more; the
        // generator requests only these two).
        cpu.xcr0 = 3;
        cpu.cr3 = PML4;
        cpu.efer |= cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE | cr::EFER_SCE;
        let dpl3 = 3 << attr::DPL_SHIFT;
        for s in SegReg::ALL {
            cpu.seg[s as usize] = Segment {
                selector: 0x3b,
                base: 0,
                limit: 0xffff_ffff,
                attr: attr::DATA_RW | attr::DB | attr::GRAN | dpl3,
            };
        }
        cpu.seg[SegReg::Cs as usize] = Segment {
            selector: 0x43,
            base: 0,
            limit: 0xffff_ffff,
            attr: attr::CODE_RX | attr::LONG | attr::GRAN | dpl3,
        };
        cpu.cpl = 3;
        cpu.gdtr = TableReg {
            base: sys,
            limit: 0xfff,
        };
        cpu.idtr = TableReg {
            base: sys + 0x1000,
            limit: 0xfff,
        };
        cpu.tr = Segment {
            selector: 0x50,
            base: sys + 0x3000,
            limit: 0x67,
            attr: attr::PRESENT | 11,
        };
        cpu.update_mode();
        cpu.end_block = false;
        Emu {
            cpu,
            bus,
            cache: CodeCache::new(),
            base,
            jit: None,
            code: None,
        }
    }

    /// Runs the cases with the JIT (every block translated on first
    /// sight) instead of stepping the interpreter's handlers.
    pub fn use_jit(&mut self) {
        self.jit = Some(Jit::with_threshold(0));
    }

    /// JIT mode: the machine code of the next [`Emu::run`] (the bytes its
    /// instructions were decoded from). Without it the run steps handlers.
    pub fn set_code(&mut self, code: &[u8]) {
        if self.jit.is_some() {
            self.code = Some(code.to_vec());
        }
    }

    /// Runs the following cases with a 64-bit code segment (`compat` false) or
    /// a 32-bit one (compatibility mode), like Linux's USER64_CS/USER32_CS.
    pub fn set_compat(&mut self, compat: bool) {
        let dpl3 = 3 << attr::DPL_SHIFT;
        self.cpu.seg[SegReg::Cs as usize] = if compat {
            Segment {
                selector: 0x23,
                base: 0,
                limit: 0xffff_ffff,
                attr: attr::CODE_RX | attr::DB | attr::GRAN | dpl3,
            }
        } else {
            Segment {
                selector: 0x43,
                base: 0,
                limit: 0xffff_ffff,
                attr: attr::CODE_RX | attr::LONG | attr::GRAN | dpl3,
            }
        };
        self.cpu.update_mode();
        self.cpu.end_block = false;
    }

    /// Gives FS and GS these bases (the host thread's).
    pub fn set_fs_gs(&mut self, fs: u64, gs: u64) {
        self.cpu.seg[SegReg::Fs as usize].base = fs;
        self.cpu.seg[SegReg::Gs as usize].base = gs;
    }

    /// Resolves the handlers of decoded instructions.
    pub fn handlers(insns: &[Instruction]) -> Vec<Handler> {
        insns.iter().map(handler_for).collect()
    }

    /// Runs `insns` (decoded at consecutive addresses from `start` to `end`)
    /// from the given state; leaves the final scratch data in `data`.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &mut self,
        insns: &[Instruction],
        handlers: &[Handler],
        gpr: &[u64; 16],
        rflags: u64,
        fp: &FpState,
        data: &mut [u8],
        end: u64,
    ) -> EmuOut {
        let d0 = REGION_PHYS as usize + DATA_OFF as usize;
        self.bus.ram[d0..d0 + DATA_SIZE].copy_from_slice(data);
        self.cpu.gpr = *gpr;
        self.cpu.rflags = rflags;
        fp.load_into(&mut self.cpu);
        if let Some(code) = self.code.take() {
            return self.run_jit(insns, &code, data, end);
        }
        self.cpu.rip = insns.first().map_or(end, |i| i.ip());
        self.cpu.halted = false;
        let mut result = EmuEnd::Done;
        let mut steps = 0u64;
        let mut mem_refs = Vec::new();
        {
            let mut ctx = Ctx::new(&mut self.cpu, &mut self.bus, &mut self.cache);
            while ctx.cpu.rip != end {
                let rip = ctx.cpu.rip;
                let Some(k) = insns.iter().position(|i| i.ip() == rip) else {
                    result = EmuEnd::Other(format!("RIP {rip:#x} left the generated code"));
                    break;
                };
                steps += 1;
                if steps > 1_000_000 {
                    result = EmuEnd::Other("more than 1e6 steps".into());
                    break;
                }
                let insn = &insns[k];
                if let Some(a) = mem_address(ctx.cpu, insn) {
                    mem_refs.push((k, a, mem_size(ctx.cpu, insn)));
                }
                ctx.cpu.rip = insn.next_ip();
                match handlers[k](&mut ctx, insn) {
                    Ok(()) => ctx.cpu.icount += 1,
                    Err(Fault::Exception { vector, .. }) => {
                        ctx.cpu.rip = rip;
                        result = EmuEnd::Fault { vector, rip };
                        break;
                    }
                    Err(Fault::Stop(hindsight_cpu::StopKind::Unimplemented { mnemonic })) => {
                        ctx.cpu.rip = rip;
                        result = EmuEnd::Unimplemented(mnemonic);
                        break;
                    }
                    Err(Fault::Stop(k)) => {
                        ctx.cpu.rip = rip;
                        result = EmuEnd::Other(format!("{k:?}"));
                        break;
                    }
                }
            }
        }
        data.copy_from_slice(&self.bus.ram[d0..d0 + DATA_SIZE]);
        let _ = self.base;
        EmuOut {
            gpr: self.cpu.gpr,
            rflags: self.cpu.rflags,
            fp: FpState::from_cpu(&self.cpu),
            mem_refs,
            end: result,
        }
    }
}

impl Emu {
    /// JIT mode of [`Emu::run`]: `code` (the bytes of `insns`) followed by
    /// UD2, placed in guest memory and run through the engine.
    fn run_jit(&mut self, insns: &[Instruction], code: &[u8], data: &mut [u8], end: u64) -> EmuOut {
        let start = insns.first().map_or(end, |i| i.ip());
        let mut bytes = code.to_vec();
        bytes.extend([0x0f, 0x0b]);
        self.put_code(end - code.len() as u64, &bytes);
        let cs = self.cpu.seg[SegReg::Cs as usize];
        let ss = self.cpu.seg[SegReg::Ss as usize];
        let cpl = self.cpu.cpl;
        self.cpu.rip = start;
        self.cpu.halted = false;
        let limit = self.cpu.icount + MAX_STEPS;
        let exit = {
            let Some(jit) = self.jit.as_mut() else {
                unreachable!("JIT mode");
            };
            let mut ctx = Ctx::new(&mut self.cpu, &mut self.bus, &mut self.cache);
            loop {
                match jit.run(&mut ctx, limit) {
                    RunExit::Exit => continue,
                    e => break e,
                }
            }
        };
        let sys = self.base + SYS_OFF;
        let stubs = sys + 0x2000;
        let mut result = EmuEnd::Done;
        match exit {
            RunExit::Halted if (stubs + 1..stubs + 32 * 16 + 1).contains(&self.cpu.rip) => {
                let vector = ((self.cpu.rip - 1 - stubs) / 16) as u8;
                // Pop the frame: [error code,] RIP, CS, RFLAGS, RSP, SS.
                let mut sp = self.cpu.gpr[reg::RSP] - sys;
                if hindsight_cpu::fault::vector::has_error_code(vector) {
                    sp += 8;
                }
                let at = |o: u64| self.bus.get(SYS_PHYS + sp + o);
                let (rip, rflags, rsp) = (at(0), at(16), at(24));
                self.cpu.rip = rip;
                self.cpu.rflags = rflags;
                self.cpu.gpr[reg::RSP] = rsp;
                if !(vector == 6 && rip == end) {
                    result = EmuEnd::Fault { vector, rip };
                }
            }
            RunExit::Limit => result = EmuEnd::Other("more than 1e6 steps".into()),
            RunExit::Stop(stop) => {
                result = match stop.kind {
                    hindsight_cpu::StopKind::Unimplemented { mnemonic } => {
                        EmuEnd::Unimplemented(mnemonic)
                    }
                    k => EmuEnd::Other(format!("{k:?}")),
                }
            }
            e => result = EmuEnd::Other(format!("the run ended with {e:?} at {:#x}", self.cpu.rip)),
        }
        // Back to the user-mode state the case ran in.
        self.cpu.seg[SegReg::Cs as usize] = cs;
        self.cpu.seg[SegReg::Ss as usize] = ss;
        self.cpu.cpl = cpl;
        self.cpu.halted = false;
        self.cpu.update_mode();
        self.cpu.end_block = false;
        let d0 = REGION_PHYS as usize + DATA_OFF as usize;
        data.copy_from_slice(&self.bus.ram[d0..d0 + DATA_SIZE]);
        EmuOut {
            gpr: self.cpu.gpr,
            rflags: self.cpu.rflags,
            fp: FpState::from_cpu(&self.cpu),
            mem_refs: Vec::new(),
            end: result,
        }
    }

    /// Host-side write of code bytes at linear `lin` in the region.
    fn put_code(&mut self, lin: u64, bytes: &[u8]) {
        let phys = REGION_PHYS + (lin - self.base);
        let p = phys as usize;
        if p + bytes.len() > (REGION_PHYS as usize + REGION) {
            return;
        }
        self.bus.ram[p..p + bytes.len()].copy_from_slice(bytes);
        let mut page = phys & !0xfff;
        while page < phys + bytes.len() as u64 {
            self.cache.invalidate_page(page);
            page += 0x1000;
        }
    }
}

/// The linear address of `insn`'s memory operand (if any) in the CPU's current state.
fn mem_address(cpu: &Cpu, insn: &Instruction) -> Option<u64> {
    let op = (0..insn.op_count()).find(|&i| {
        matches!(
            insn.op_kind(i),
            OpKind::Memory | OpKind::MemorySegRDI | OpKind::MemorySegEDI
        )
    })?;
    insn.virtual_address(op, 0, |reg, _, _| {
        if reg.is_segment_register() {
            let s = match reg {
                Register::ES => SegReg::Es,
                Register::CS => SegReg::Cs,
                Register::SS => SegReg::Ss,
                Register::FS => SegReg::Fs,
                Register::GS => SegReg::Gs,
                _ => SegReg::Ds,
            };
            // 64-bit mode ignores the ES/CS/SS/DS bases (all zero here anyway).
            return Some(cpu.seg[s as usize].base);
        }
        if reg.is_gpr() {
            let v = cpu.gpr[reg.full_register().number()];
            return Some(match reg.size() {
                1 if reg.is_gpr8() && (Register::AH..=Register::BH).contains(&reg) => {
                    (cpu.gpr[reg.number() - 4] >> 8) & 0xff
                }
                1 => v & 0xff,
                2 => v & 0xffff,
                4 => v & 0xffff_ffff,
                _ => v,
            });
        }
        None
    })
}

/// The size of `insn`'s memory operand. XSAVE/XRSTOR (which iced sizes 0)
/// count the 576 bytes of the x87+SSE image when EDX:EAX requests no more
/// (the generator's setups ensure it), else an impossible size: on the
/// host, with its larger XCR0, they would touch far more.
fn mem_size(cpu: &Cpu, insn: &Instruction) -> usize {
    use iced_x86::Mnemonic::*;
    match insn.mnemonic() {
        Xsave | Xsave64 | Xrstor | Xrstor64 | Xsaveopt | Xsaveopt64 | Xsavec | Xsavec64
        | Xsaves | Xsaves64 | Xrstors | Xrstors64 => {
            if cpu.gpr[0] as u32 & !3 == 0 && cpu.gpr[2] as u32 == 0 {
                576
            } else {
                usize::MAX / 2
            }
        }
        _ => insn.memory_size().size(),
    }
}
