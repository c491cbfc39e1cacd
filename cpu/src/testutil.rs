//! Test harness for instruction-group unit tests: a flat RAM bus and CPUs set
//! up in each mode with a GDT, identity paging (long mode) and a stack.
//!
//! Layout of the 16 MiB test RAM:
//! - 0x0000_0500: GDT (see the `sel` constants)
//! - 0x0000_1000: IDT (zeroed; tests install gates)
//! - 0x0000_3000: TSS
//! - 0x0001_0000: code in real mode (CS=0x1000, IP=0)
//! - 0x0002_0000: 4-level page tables (identity map of the first 1 GiB, 2 MiB pages, user+writable)
//! - 0x0003_0000: real-mode fault stubs ([`install_fault_handlers`], segment 0x3000)
//! - 0x0010_0000: code in protected and long mode
//! - 0x0030_0000: protected/long-mode fault stubs ([`install_fault_handlers`])
//! - 0x0040_0000: page-table arena of [`Pager`] (1 MiB)
//! - 0x0080_0000: data
//! - 0x0090_0000: top of stack
//! - 0x0100_0000 and above: not RAM (MMIO; reads and writes are logged)

use std::collections::{HashMap, HashSet};

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

/// One access to a non-RAM physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    pub addr: u64,
    pub size: u8,
    /// The value written, or None for a read.
    pub write: Option<u64>,
}

/// A bus with flat RAM, scripted port input and a log of port output.
pub struct TestBus {
    pub ram: Vec<u8>,
    pub port_in: HashMap<u16, u32>,
    pub port_out: Vec<(u16, u8, u32)>,
    /// Every MMIO access, in order (addresses at or above [`RAM`]).
    pub mmio: Vec<MmioAccess>,
    /// RAM pages whose writes the bus wants to see every time
    /// (`WritablePage::cacheable` false), like pages not yet dirty.
    pub uncached: HashSet<u64>,
    /// How many times the CPU asked for a writable page (slow-path writes).
    pub ram_page_mut_calls: u64,
}

impl TestBus {
    /// Zeroed RAM.
    pub fn new() -> TestBus {
        TestBus {
            ram: vec![0; RAM],
            port_in: HashMap::new(),
            port_out: Vec::new(),
            mmio: Vec::new(),
            uncached: HashSet::new(),
            ram_page_mut_calls: 0,
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
        self.ram_page_mut_calls += 1;
        let cacheable = !self.uncached.contains(&page);
        self.ram_page(page)
            .map(|host| WritablePage { host, cacheable })
    }
    fn mmio_read(&mut self, addr: u64, size: u8, _icount: u64) -> u64 {
        self.mmio.push(MmioAccess {
            addr,
            size,
            write: None,
        });
        crate::flags::mask(size)
    }
    fn mmio_write(&mut self, addr: u64, size: u8, value: u64, _icount: u64) {
        self.mmio.push(MmioAccess {
            addr,
            size,
            write: Some(value),
        });
    }
    fn io_read(&mut self, port: u16, size: u8, _icount: u64) -> u32 {
        self.port_in.get(&port).copied().unwrap_or(u32::MAX) & crate::flags::mask(size) as u32
    }
    fn io_write(&mut self, port: u16, size: u8, value: u32, _icount: u64) {
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
        descriptor(0, 0xfffff, 0x9b, 0xc),   // 0x08 code32
        descriptor(0, 0xfffff, 0x93, 0xc),   // 0x10 data32
        descriptor(0, 0xfffff, 0x9b, 0xa),   // 0x18 code64
        descriptor(0, 0xffff, 0x9b, 0x0),    // 0x20 code16
        descriptor(0, 0xffff, 0x93, 0x0),    // 0x28 data16
        descriptor(0, 0xfffff, 0xfb, 0xc),   // 0x30 code32 dpl3
        descriptor(0, 0xfffff, 0xf3, 0xc),   // 0x38 data32 dpl3
        descriptor(0, 0xfffff, 0xfb, 0xa),   // 0x40 code64 dpl3
        descriptor(0x3000, 0x67, 0x89, 0x0), // 0x48 TSS (available 32/64-bit)
        0,                                   // 0x50 upper half of a 64-bit TSS descriptor
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
            cpu.idtr = TableReg {
                base: 0,
                limit: 0x3ff,
            };
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
            cpu.seg[SegReg::Cs as usize] =
                flat(sel::CODE64, attr::CODE_RX | attr::LONG | attr::GRAN);
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

/// Paging-structure entry bits, for tests that build page tables.
pub mod pte {
    pub const P: u64 = 1 << 0;
    pub const RW: u64 = 1 << 1;
    pub const US: u64 = 1 << 2;
    pub const A: u64 = 1 << 5;
    pub const D: u64 = 1 << 6;
    pub const PS: u64 = 1 << 7;
    pub const G: u64 = 1 << 8;
    pub const NX: u64 = 1 << 63;
    /// Present, writable, user.
    pub const PWU: u64 = P | RW | US;
}

/// Where [`Pager`] allocates its tables.
pub const PT_ARENA: u64 = 0x40_0000;
/// Protected/long-mode stubs of [`install_fault_handlers`] (16 bytes per vector).
pub const FAULT_STUBS: u64 = 0x30_0000;
/// Real-mode stubs of [`install_fault_handlers`]: segment 0x3000, 16 bytes per vector.
pub const FAULT_STUBS_REAL_SEG: u16 = 0x3000;

/// A paging mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paging {
    /// 32-bit paging (CR4.PAE = 0); CR4.PSE is set so 4 MiB pages work.
    Bits32,
    /// PAE paging (CR4.PAE = 1, outside long mode).
    Pae,
    /// 4-level paging (long mode).
    Long4,
}

/// Builds page tables in the [`PT_ARENA`].
pub struct Pager {
    pub kind: Paging,
    /// Value for CR3.
    pub root: u64,
    next: u64,
}

impl Pager {
    /// Empty tables (nothing mapped).
    pub fn new(bus: &mut TestBus, kind: Paging) -> Pager {
        let mut p = Pager {
            kind,
            root: 0,
            next: PT_ARENA,
        };
        p.root = p.alloc(bus);
        p
    }

    fn alloc(&mut self, bus: &mut TestBus) -> u64 {
        let t = self.next;
        assert!(t < PT_ARENA + 0x10_0000, "page-table arena full");
        self.next += 0x1000;
        bus.write(t, &[0; 4096]);
        t
    }

    fn esize(&self) -> u64 {
        if self.kind == Paging::Bits32 {
            4
        } else {
            8
        }
    }

    fn top(&self) -> u32 {
        match self.kind {
            Paging::Bits32 => 1,
            Paging::Pae => 2,
            Paging::Long4 => 3,
        }
    }

    fn index(&self, lin: u64, level: u32) -> u64 {
        match (self.kind, level) {
            (Paging::Bits32, 1) => (lin >> 22) & 0x3ff,
            (Paging::Bits32, _) => (lin >> 12) & 0x3ff,
            (Paging::Pae, 2) => (lin >> 30) & 3,
            _ => (lin >> (12 + 9 * level)) & 0x1ff,
        }
    }

    /// Physical address of the entry for `lin` at `level` (0: PTE, 1: PDE,
    /// 2: PDPTE, 3: PML4E), creating the tables above it as needed (their
    /// entries present, writable and user; PAE PDPTEs just present).
    pub fn entry(&mut self, bus: &mut TestBus, lin: u64, level: u32) -> u64 {
        let mut table = self.root;
        let mut l = self.top();
        while l > level {
            let ea = table + self.index(lin, l) * self.esize();
            let mut e = bus.read(ea, self.esize() as usize);
            if e & pte::P == 0 {
                let t = self.alloc(bus);
                e = t | if self.kind == Paging::Pae && l == 2 {
                    pte::P
                } else {
                    pte::PWU
                };
                bus.put(ea, self.esize() as usize, e);
            }
            table = e
                & 0x000f_ffff_ffff_f000
                & if self.esize() == 4 {
                    0xffff_f000
                } else {
                    u64::MAX
                };
            l -= 1;
        }
        table + self.index(lin, level) * self.esize()
    }

    /// Maps the page of 2^`shift` bytes (12, 21 (PAE/4-level), 22 (32-bit)
    /// or 30 (4-level)) at `lin` to `phys` with `flags` (PS is added for
    /// large pages; for a 32-bit 4 MiB page, physical bits 39:32 go to 20:13).
    pub fn map(&mut self, bus: &mut TestBus, lin: u64, phys: u64, flags: u64, shift: u32) {
        let level = match shift {
            12 => 0,
            21 | 22 => 1,
            30 => 2,
            _ => panic!("page shift {shift}"),
        };
        let ea = self.entry(bus, lin, level);
        let mut e = flags | if level > 0 { pte::PS } else { 0 };
        if self.kind == Paging::Bits32 && level == 1 {
            e |= (phys & 0xffc0_0000) | (((phys >> 32) & 0xff) << 13);
        } else {
            e |= phys;
        }
        bus.put(ea, self.esize() as usize, e);
    }

    /// Identity-maps [start, end) with 4 KiB pages and `flags`.
    pub fn identity(&mut self, bus: &mut TestBus, start: u64, end: u64, flags: u64) {
        let mut a = start & !0xfff;
        while a < end {
            self.map(bus, a, a, flags, 12);
            a += 0x1000;
        }
    }

    /// Reads the entry for `lin` at `level`.
    pub fn read(&mut self, bus: &mut TestBus, lin: u64, level: u32) -> u64 {
        let ea = self.entry(bus, lin, level);
        bus.read(ea, self.esize() as usize)
    }

    /// Rewrites the entry for `lin` at `level`.
    pub fn write(&mut self, bus: &mut TestBus, lin: u64, level: u32, v: u64) {
        let ea = self.entry(bus, lin, level);
        bus.put(ea, self.esize() as usize, v);
    }

    /// Turns paging on in `cpu` with these tables: CR3, CR4.PAE/PSE and
    /// CR0.PG (long mode must already be set up, as [`cpu_in`] does).
    pub fn enable(&self, cpu: &mut Cpu) {
        cpu.cr3 = self.root;
        match self.kind {
            Paging::Bits32 => {
                cpu.cr4 = (cpu.cr4 & !cr::CR4_PAE) | cr::CR4_PSE;
            }
            Paging::Pae | Paging::Long4 => cpu.cr4 |= cr::CR4_PAE,
        }
        cpu.cr0 |= cr::CR0_PG | cr::CR0_PE;
        cpu.tlb.flush_all();
    }
}

/// Installs handlers for vectors 0..=31 that load the vector into EBX and
/// halt (`mov ebx, v; hlt`), through ring-0 interrupt gates (or the IVT in
/// real mode), so [`fault_of`] can tell which exception was taken.
pub fn install_fault_handlers(cpu: &Cpu, bus: &mut TestBus) {
    let real = cpu.cr0 & cr::CR0_PE == 0;
    let long = cpu.efer & cr::EFER_LMA != 0;
    for v in 0..32u8 {
        if real {
            let at = ((FAULT_STUBS_REAL_SEG as u64) << 4) + 16 * v as u64;
            bus.write(at, &[0x66, 0xbb, v, 0, 0, 0, 0xf4]);
            bus.put(
                4 * v as u64,
                4,
                ((FAULT_STUBS_REAL_SEG as u64) << 16) | (16 * v as u64),
            );
        } else {
            let at = FAULT_STUBS + 16 * v as u64;
            bus.write(at, &[0xbb, v, 0, 0, 0, 0xf4]);
            let lo = (at & 0xffff)
                | ((if long { sel::CODE64 } else { sel::CODE32 } as u64) << 16)
                | (0x8e << 40)
                | (((at >> 16) & 0xffff) << 48);
            if long {
                bus.put(IDT + 16 * v as u64, 8, lo);
                bus.put(IDT + 16 * v as u64 + 8, 8, at >> 32);
            } else {
                bus.put(IDT + 8 * v as u64, 8, lo);
            }
        }
    }
    // A 64-bit TSS holds RSP0 at offset 4.
    if long {
        bus.put(0x3004, 8, 0x8f_0000);
    }
}

/// The exception a run ended in, when it halted in a stub of
/// [`install_fault_handlers`]: (vector, error code, faulting IP).
pub fn fault_of(cpu: &Cpu, bus: &TestBus) -> Option<(u8, Option<u64>, u64)> {
    let real = cpu.cr0 & cr::CR0_PE == 0;
    let (stubs, base) = if real {
        (0, (FAULT_STUBS_REAL_SEG as u64) << 4)
    } else {
        (FAULT_STUBS, 0)
    };
    let ip = cpu.seg[SegReg::Cs as usize].base + cpu.rip;
    if ip < base + stubs || ip >= base + stubs + 32 * 16 {
        return None;
    }
    let v = cpu.gpr[reg::RBX] as u8;
    let (w, sp) = if real {
        (
            2,
            cpu.seg[SegReg::Ss as usize].base + (cpu.gpr[reg::RSP] & 0xffff),
        )
    } else if cpu.efer & cr::EFER_LMA != 0 {
        (8, cpu.gpr[reg::RSP])
    } else {
        (4, cpu.gpr[reg::RSP] & 0xffff_ffff)
    };
    if !real && crate::fault::vector::has_error_code(v) {
        Some((v, Some(bus.read(sp, w)), bus.read(sp + w as u64, w)))
    } else {
        Some((v, None, bus.read(sp, w)))
    }
}
