//! Test harness for instruction-group unit tests: a flat RAM bus and CPUs set
//! up in each mode with a GDT, identity paging (long mode) and a stack.
//!
//! Layout of the 16 MiB test RAM:
//! - 0x0000_0500: GDT (see the `sel` constants)
//! - 0x0000_1000: IDT (zeroed; tests install gates)
//! - 0x0002_0000: 4-level page tables (identity map of the first 1 GiB, 2 MiB pages, user+writable)
//! - 0x0001_0000: code in real mode (CS=0x1000, IP=0)
//! - 0x0010_0000: code in protected and long mode
//! - 0x0080_0000: data
//! - 0x0090_0000: top of stack

use std::collections::HashMap;

use crate::block::CodeCache;
use crate::bus::{Bus, WritablePage};
use crate::interp::{Ctx, RunExit};
use crate::state::{attr, cr, reg, Cpu, SegReg, Segment, TableReg};

/// RAM size of the test machine.
pub const RAM: usize = 16 << 20;
/// Where test code is placed (protected and long mode).
pub const CODE: u64 = 0x10_0000;
/// Where test code is placed in real mode (CS = 0x1000).
pub const CODE_REAL: u64 = 0x1_0000;
/// A scratch data area.
pub const DATA: u64 = 0x80_0000;
/// Initial stack pointer.
pub const STACK: u64 = 0x90_0000;
/// GDT base.
pub const GDT: u64 = 0x500;
/// IDT base.
pub const IDT: u64 = 0x1000;

/// Selectors of the test GDT.
pub mod sel {
    pub const CODE32: u16 = 0x08;
    pub const DATA32: u16 = 0x10;
    pub const CODE64: u16 = 0x18;
    pub const CODE16: u16 = 0x20;
    pub const DATA16: u16 = 0x28;
    pub const CODE32_USER: u16 = 0x33;
    pub const DATA32_USER: u16 = 0x3b;
    pub const CODE64_USER: u16 = 0x43;
    pub const TSS: u16 = 0x48;
}

/// A bus with flat RAM, scripted port input and a log of port output.
pub struct TestBus {
    pub ram: Vec<u8>,
    pub port_in: HashMap<u16, u32>,
    pub port_out: Vec<(u16, u8, u32)>,
}

impl TestBus {
    /// Zeroed RAM.
    pub fn new() -> TestBus {
        TestBus {
            ram: vec![0; RAM],
            port_in: HashMap::new(),
            port_out: Vec::new(),
        }
    }
    /// Copies bytes into RAM.
    pub fn write(&mut self, addr: u64, data: &[u8]) {
        self.ram[addr as usize..addr as usize + data.len()].copy_from_slice(data);
    }
    /// Reads a little-endian value.
    pub fn read(&self, addr: u64, size: usize) -> u64 {
        let mut v = 0u64;
        for i in 0..size {
            v |= (self.ram[addr as usize + i] as u64) << (8 * i);
        }
        v
    }
    /// Writes a little-endian value.
    pub fn put(&mut self, addr: u64, size: usize, v: u64) {
        for i in 0..size {
            self.ram[addr as usize + i] = (v >> (8 * i)) as u8;
        }
    }
}

impl Default for TestBus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus for TestBus {
    fn ram_page(&mut self, page: u64) -> Option<*mut u8> {
        if (page as usize) < RAM {
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
    fn mmio_read(&mut self, _addr: u64, size: u8) -> u64 {
        crate::flags::mask(size)
    }
    fn mmio_write(&mut self, _addr: u64, _size: u8, _value: u64) {}
    fn io_read(&mut self, port: u16, size: u8) -> u32 {
        self.port_in
            .get(&port)
            .copied()
            .unwrap_or(u32::MAX)
            & crate::flags::mask(size) as u32
    }
    fn io_write(&mut self, port: u16, size: u8, value: u32) {
        self.port_out.push((port, size, value));
    }
}

fn descriptor(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    (limit as u64 & 0xffff)
        | ((base as u64 & 0xff_ffff) << 16)
        | ((access as u64) << 40)
        | (((limit as u64 >> 16) & 0xf) << 48)
        | (((flags as u64) & 0xf) << 52)
        | (((base as u64) >> 24) << 56)
}

/// Writes the test GDT, page tables and a TSS (at 0x3000, ring-0 stack 0x8f_0000).
pub fn install_tables(bus: &mut TestBus) {
    let entries = [
        0,
        descriptor(0, 0xfffff, 0x9b, 0xc),  // 0x08 code32
        descriptor(0, 0xfffff, 0x93, 0xc),  // 0x10 data32
        descriptor(0, 0xfffff, 0x9b, 0xa),  // 0x18 code64
        descriptor(0, 0xffff, 0x9b, 0x0),   // 0x20 code16
        descriptor(0, 0xffff, 0x93, 0x0),   // 0x28 data16
        descriptor(0, 0xfffff, 0xfb, 0xc),  // 0x30 code32 dpl3
        descriptor(0, 0xfffff, 0xf3, 0xc),  // 0x38 data32 dpl3
        descriptor(0, 0xfffff, 0xfb, 0xa),  // 0x40 code64 dpl3
        descriptor(0x3000, 0x67, 0x89, 0x0), // 0x48 TSS (available 32/64-bit)
        0,                                  // 0x50 upper half of a 64-bit TSS descriptor
    ];
    for (i, e) in entries.iter().enumerate() {
        bus.put(GDT + 8 * i as u64, 8, *e);
    }
    // PML4 -> PDPT -> PD with 2 MiB pages covering 1 GiB.
    let (pml4, pdpt, pd) = (0x20000u64, 0x21000u64, 0x22000u64);
    bus.put(pml4, 8, pdpt | 7);
    bus.put(pdpt, 8, pd | 7);
    for i in 0..512u64 {
        bus.put(pd + 8 * i, 8, (i << 21) | 0x87);
    }
    // 32-bit TSS: ESP0/SS0; 64-bit TSS: RSP0 at offset 4 (same place).
    bus.put(0x3004, 4, 0x8f_0000);
    bus.put(0x3008, 2, sel::DATA32 as u64);
}

fn flat(selector: u16, a: u16) -> Segment {
    Segment {
        selector,
        base: 0,
        limit: 0xffff_ffff,
        attr: a,
    }
}

/// Test CPU modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestMode {
    Real,
    Protected32,
    Long64,
}

/// A CPU in `mode` at `CODE` with a stack, using the tables from [`install_tables`].
pub fn cpu_in(mode: TestMode) -> Cpu {
    let mut cpu = Cpu::new(0);
    cpu.gdtr = TableReg {
        base: GDT,
        limit: 0x57,
    };
    cpu.idtr = TableReg {
        base: IDT,
        limit: 0xfff,
    };
    match mode {
        TestMode::Real => {
            for s in SegReg::ALL {
                cpu.seg[s as usize] = Segment::real(0, attr::DATA_RW);
            }
            cpu.seg[SegReg::Cs as usize] = Segment::real(0x1000, attr::CODE_RX);
            cpu.rip = 0;
            cpu.gpr[reg::RSP] = 0x8000;
            cpu.idtr = TableReg { base: 0, limit: 0x3ff };
        }
        TestMode::Protected32 => {
            cpu.cr0 |= cr::CR0_PE;
            for s in SegReg::ALL {
                cpu.seg[s as usize] = flat(sel::DATA32, attr::DATA_RW | attr::DB | attr::GRAN);
            }
            cpu.seg[SegReg::Cs as usize] = flat(sel::CODE32, attr::CODE_RX | attr::DB | attr::GRAN);
            cpu.rip = CODE;
            cpu.gpr[reg::RSP] = STACK;
        }
        TestMode::Long64 => {
            cpu.cr0 |= cr::CR0_PE | cr::CR0_PG;
            cpu.cr4 |= cr::CR4_PAE;
            cpu.cr3 = 0x20000;
            cpu.efer |= cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE | cr::EFER_SCE;
            for s in SegReg::ALL {
                cpu.seg[s as usize] = flat(sel::DATA32, attr::DATA_RW | attr::DB | attr::GRAN);
            }
            cpu.seg[SegReg::Cs as usize] = flat(sel::CODE64, attr::CODE_RX | attr::LONG | attr::GRAN);
            cpu.rip = CODE;
            cpu.gpr[reg::RSP] = STACK;
        }
    }
    cpu.tr = Segment {
        selector: sel::TSS,
        base: 0x3000,
        limit: 0x67,
        attr: attr::PRESENT | 11,
    };
    cpu.update_mode();
    cpu.end_block = false;
    cpu
}

/// Assembles `build` with iced's CodeAssembler at the code address of `mode`.
pub fn assemble(
    mode: TestMode,
    build: impl FnOnce(&mut iced_x86::code_asm::CodeAssembler) -> Result<(), iced_x86::IcedError>,
) -> Vec<u8> {
    let bits = match mode {
        TestMode::Real => 16,
        TestMode::Protected32 => 32,
        TestMode::Long64 => 64,
    };
    let mut a = iced_x86::code_asm::CodeAssembler::new(bits).expect("bitness");
    build(&mut a).expect("assemble");
    let ip = if mode == TestMode::Real { 0 } else { CODE };
    a.assemble(ip).expect("assemble")
}

/// Runs `code` in `mode` for at most `max` instructions (stopping at HLT)
/// after `setup` adjusts the CPU and bus. Returns the final state.
pub fn run(
    mode: TestMode,
    code: &[u8],
    max: u64,
    setup: impl FnOnce(&mut Cpu, &mut TestBus),
) -> (Cpu, TestBus, RunExit) {
    let mut bus = TestBus::new();
    install_tables(&mut bus);
    bus.write(if mode == TestMode::Real { CODE_REAL } else { CODE }, code);
    let mut cpu = cpu_in(mode);
    setup(&mut cpu, &mut bus);
    let mut cache = CodeCache::new();
    let exit = loop {
        let e = Ctx::new(&mut cpu, &mut bus, &mut cache).run(max);
        if e != RunExit::Exit {
            break e;
        }
    };
    (cpu, bus, exit)
}

/// Assembles and runs a snippet that ends with HLT.
pub fn run_asm(
    mode: TestMode,
    build: impl FnOnce(&mut iced_x86::code_asm::CodeAssembler) -> Result<(), iced_x86::IcedError>,
    setup: impl FnOnce(&mut Cpu, &mut TestBus),
) -> (Cpu, TestBus, RunExit) {
    let code = assemble(mode, build);
    run(mode, &code, 100_000, setup)
}
