//! Deterministic fuzz tests of the interpreter: random byte sequences and
//! random sequences of valid instructions (mixed with privileged and system
//! instructions: control/debug registers, descriptor tables, far transfers,
//! IRET, INT n, SYSCALL/SYSENTER and their returns, port I/O, POPF, segment
//! loads, WRMSR, CPUID ...) run in every mode of [`crate::testutil`] plus
//! CPL 3, virtual-8086 and compatibility variants, from random register,
//! flag, GDT and IDT contents.
//!
//! Each case must end in a [`RunExit`] without panicking (debug builds check
//! arithmetic overflow too), keep the architectural invariants checked by
//! [`check_invariants`] at every stop, and stop the machine only for a triple
//! fault or an instruction of a later issue (x87/MMX/SSE), with a report that
//! says where.
//!
//! Randomness is a seeded xorshift, so every failure names a case seed that
//! reproduces it: `FUZZ_SEED=<seed> FUZZ_MODE=<mode> cargo test -p
//! hindsight-cpu --lib fuzz_tests -- --nocapture`. `FUZZ_CASES=<n>` runs n
//! cases per test instead of the default (used for long local runs);
//! `FUZZ_SALT=<n>` picks other seeds, `FUZZ_STEPS=<n>` the instructions per
//! case; `FUZZ_VERBOSE=1` prints a summary (exits, unimplemented
//! instructions, unsupported features), 2 every stop, 3 every case, 4 every
//! instruction. The ignored test `fuzz_bisect` finds where block-wise and
//! single-step runs of FUZZ_SEED/FUZZ_MODE diverge.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use iced_x86::{Decoder, DecoderOptions};

use crate::block::CodeCache;
use crate::cpuid;
use crate::flags;
use crate::interp::{Ctx, RunExit};
use crate::memory::is_canonical;
use crate::state::{attr, cr, reg, Cpu, Mode, SegReg, Segment, TableReg};
use crate::testutil::{
    cpu_in, install_fault_handlers, install_tables, pte, sel, Pager, Paging, TestBus, TestMode,
    CODE, CODE_REAL, GDT, IDT, PT_ARENA, RAM, STACK,
};
use crate::StopKind;

/// `r.pick(&[..])` with the items evaluated before `r` is borrowed.
macro_rules! pick {
    ($r:expr, [$($e:expr),* $(,)?]) => {{
        let items = [$($e),*];
        $r.pick(&items)
    }};
}

/// xorshift64* generator.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Spread the seed so neighbouring seeds give unrelated streams.
        let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03);
        if r.0 == 0 {
            r.0 = 1;
        }
        for _ in 0..4 {
            r.next();
        }
        r
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability 1/n.
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    /// A value biased toward the interesting: small numbers, boundaries,
    /// selectors of the test GDT, addresses in RAM, or anything.
    fn value(&mut self) -> u64 {
        match self.below(10) {
            0 => self.below(16),
            1 => self.pick(&[
                0,
                1,
                0x7f,
                0x80,
                0xff,
                0x7fff,
                0x8000,
                0xffff,
                0x7fff_ffff,
                0x8000_0000,
                0xffff_ffff,
                0x7fff_ffff_ffff_ffff,
                0x8000_0000_0000_0000,
                u64::MAX,
                0x0000_8000_0000_0000,
                0xffff_8000_0000_0000,
                0x0000_7fff_ffff_fff0,
            ]),
            2 => self.selector() as u64,
            3 => SCRATCH + self.below(0x1000),
            4 => CODE + self.below(0x200),
            5 => STACK - self.below(0x1000),
            6 => self.below(0x1_0000),
            7 => self.next() & 0xffff_ffff,
            8 => self.below(0x100_0000),
            _ => self.next(),
        }
    }
    /// A selector: mostly from the test GDT (any RPL), sometimes LDT or random.
    fn selector(&mut self) -> u16 {
        match self.below(6) {
            0 => self.next() as u16,
            1 => (self.below(0x10) as u16) << 3 | 4 | self.below(4) as u16,
            _ => (self.below(16) as u16) << 3 | self.below(4) as u16,
        }
    }
}

/// Scratch memory the generated code points its memory operands at: low
/// enough for 16-bit addressing with DS base 0, clear of the tables.
const SCRATCH: u64 = 0x6000;
/// Stack of ring 3 (protected and long mode variants).
const USER_STACK: u64 = 0x8e_0000;
/// Segment of V86 code (CS:IP = 0x1000:0 like real mode).
const V86_CS: u16 = 0x1000;

/// The starting mode of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FMode {
    Real,
    Prot32,
    Long64,
    Prot32User,
    Long64User,
    V86,
    /// Long mode, 32-bit code segment.
    Compat,
    /// Protected mode, 16-bit code segment.
    Prot16,
    /// Protected mode with 32-bit paging (4 KiB pages, random flags), CPL 0 or 3.
    Paged32,
    /// Protected mode with PAE paging.
    PagedPae,
    /// 64-bit mode with 4-level paging in 4 KiB pages.
    Paged64,
}

/// Every starting mode.
const ALL_MODES: [FMode; 11] = [
    FMode::Real,
    FMode::Prot32,
    FMode::Long64,
    FMode::Prot32User,
    FMode::Long64User,
    FMode::V86,
    FMode::Compat,
    FMode::Prot16,
    FMode::Paged32,
    FMode::PagedPae,
    FMode::Paged64,
];

impl FMode {
    fn base(self) -> TestMode {
        match self {
            FMode::Real => TestMode::Real,
            FMode::Prot32
            | FMode::Prot32User
            | FMode::V86
            | FMode::Prot16
            | FMode::Paged32
            | FMode::PagedPae => TestMode::Protected32,
            FMode::Long64 | FMode::Long64User | FMode::Compat | FMode::Paged64 => TestMode::Long64,
        }
    }
    fn bits(self) -> u32 {
        match self {
            FMode::Real | FMode::V86 | FMode::Prot16 => 16,
            FMode::Prot32
            | FMode::Prot32User
            | FMode::Compat
            | FMode::Paged32
            | FMode::PagedPae => 32,
            FMode::Long64 | FMode::Long64User | FMode::Paged64 => 64,
        }
    }
    /// The paging structures of the paged modes.
    fn paging(self) -> Option<Paging> {
        match self {
            FMode::Paged32 => Some(Paging::Bits32),
            FMode::PagedPae => Some(Paging::Pae),
            FMode::Paged64 => Some(Paging::Long4),
            _ => None,
        }
    }
    /// Where code is placed: (CS offset of the first instruction, linear address).
    fn code_at(self) -> (u64, u64) {
        match self {
            FMode::Real | FMode::V86 => (0, CODE_REAL),
            FMode::Prot16 => (0, CODE),
            _ => (CODE, CODE),
        }
    }
}

/// Pages whose paging-structure entries the paged modes randomize and the
/// generated code rewrites: code, scratch, stacks, tables, fault stubs, TSS.
const PAGED_PAGES: [u64; 9] = [
    CODE,
    CODE + 0x1000,
    SCRATCH,
    STACK - 0x1000,
    USER_STACK - 0x1000,
    0x8f_0000 - 0x1000,
    0x0,
    0x3000,
    0x30_0000,
];

/// Flags to flip in a PTE: mostly RW/US/A/D/G, sometimes P, NX (8-byte entries).
fn random_pte_flags(r: &mut Rng, wide: bool) -> u64 {
    let mut f = r.next() & (pte::RW | pte::US | pte::A | pte::D | pte::G | 0x18);
    if r.one_in(6) {
        f |= pte::P;
    }
    if wide && r.one_in(4) {
        f |= pte::NX;
    }
    f
}

/// Sign-extends bit 47, as a canonical address.
fn canonical(v: u64) -> u64 {
    (((v << 16) as i64) >> 16) as u64
}

fn flat(selector: u16, a: u16) -> Segment {
    Segment {
        selector,
        base: 0,
        limit: 0xffff_ffff,
        attr: a,
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

/// A plausible or garbage descriptor for the extra GDT/LDT slots: code, data,
/// stack, call gates, TSS and LDT descriptors with random DPL/P/limits.
fn random_descriptor(r: &mut Rng) -> u64 {
    let dpl = (r.below(4) as u8) << 5;
    let p = if r.one_in(6) { 0 } else { 0x80 };
    match r.below(9) {
        0 => r.next(),
        1 => descriptor(
            0,
            0xfffff,
            p | dpl | 0x1a | (r.below(2) as u8 * 4),
            pick!(r, [0xc, 0xa, 0x0, 0x4]),
        ),
        2 => descriptor(
            0,
            pick!(r, [0xfffff, 0xffff, 0xfff]),
            p | dpl | 0x12 | (r.below(2) as u8 * 4),
            pick!(r, [0xc, 0x0, 0x4, 0x8]),
        ),
        3 => descriptor(
            r.below(0x10_0000) as u32,
            r.below(0x10_0000) as u32,
            p | dpl | 0x10 | r.below(16) as u8,
            r.below(16) as u8,
        ),
        // Call gate (32-bit or 16-bit) to one of the code selectors.
        4 => {
            let target = pick!(
                r,
                [
                    sel::CODE32,
                    sel::CODE64,
                    sel::CODE16,
                    sel::CODE32_USER,
                    r.selector(),
                ]
            );
            let off = CODE + r.below(0x100);
            (off & 0xffff)
                | ((target as u64) << 16)
                | (r.below(4) << 32)
                | ((p | dpl | pick!(r, [0x0c, 0x04])) as u64) << 40
                | ((off >> 16) & 0xffff) << 48
        }
        // TSS (available or busy, 16 or 32/64-bit) somewhere in low memory.
        5 => descriptor(
            pick!(r, [0x3000, 0x3100, r.below(0x10000) as u32]),
            pick!(r, [0x67, 0x2b, 0x1000, 0x20]),
            p | dpl | pick!(r, [0x9, 0xb, 0x1, 0x3]),
            0,
        ),
        // LDT pointing at the scratch area or the GDT itself.
        6 => descriptor(
            pick!(r, [SCRATCH as u32, GDT as u32, 0x6800]),
            pick!(r, [0x7f, 0xfff, 0x7]),
            p | dpl | 0x2,
            0,
        ),
        // Interrupt/trap/task gates (nonsense in a GDT, still must not panic).
        7 => {
            let off = CODE + r.below(0x100);
            (off & 0xffff)
                | ((r.selector() as u64) << 16)
                | ((p | dpl | pick!(r, [0x0e, 0x0f, 0x05, 0x06, 0x07])) as u64) << 40
                | ((off >> 16) & 0xffff) << 48
        }
        _ => 0,
    }
}

/// Fills the machine and CPU with the random starting state of a case.
/// `first`: the first start of the case (later restarts keep memory as the
/// previous run left it and only randomize the CPU).
/// Returns the paging-structure entries of [`PAGED_PAGES`] in the paged
/// modes (first start only): (entry address, page, entry size).
fn setup(
    r: &mut Rng,
    fm: FMode,
    cpu: &mut Cpu,
    bus: &mut TestBus,
    first: bool,
) -> Vec<(u64, u64, u64)> {
    let mut ptes = Vec::new();
    let dpl3 = 3 << attr::DPL_SHIFT;
    // Handlers for every exception (mostly), so a fault ends in a stub's HLT.
    if !r.one_in(8) {
        install_fault_handlers(cpu, bus);
    }
    match fm {
        FMode::Prot32User | FMode::Long64User => {
            let data = flat(
                sel::DATA32_USER,
                attr::DATA_RW | attr::DB | attr::GRAN | dpl3,
            );
            for s in SegReg::ALL {
                cpu.seg[s as usize] = data;
            }
            cpu.seg[SegReg::Cs as usize] = if fm == FMode::Long64User {
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
        }
        FMode::V86 => {
            for s in SegReg::ALL {
                cpu.seg[s as usize] = Segment {
                    selector: 0,
                    base: 0,
                    limit: 0xffff,
                    attr: attr::DATA_RW | dpl3,
                };
            }
            cpu.seg[SegReg::Cs as usize] = Segment {
                selector: V86_CS,
                base: (V86_CS as u64) << 4,
                limit: 0xffff,
                attr: attr::DATA_RW | dpl3,
            };
            cpu.rflags |= flags::VM;
            cpu.cpl = 3;
            cpu.gpr[reg::RSP] = 0x8000;
        }
        FMode::Compat => {
            cpu.seg[SegReg::Cs as usize] = flat(sel::CODE32, attr::CODE_RX | attr::DB | attr::GRAN);
        }
        FMode::Prot16 => {
            cpu.seg[SegReg::Cs as usize] = Segment {
                selector: sel::CODE16,
                base: CODE,
                limit: 0xffff,
                attr: attr::CODE_RX,
            };
            if r.one_in(2) {
                cpu.seg[SegReg::Ss as usize] = Segment {
                    selector: sel::DATA16,
                    base: 0,
                    limit: 0xffff,
                    attr: attr::DATA_RW,
                };
                cpu.gpr[reg::RSP] = 0x8000;
            }
        }
        _ => {}
    }
    if let Some(kind) = fm.paging() {
        if first {
            // Identity map of RAM in 4 KiB pages (user, writable), then
            // random flags on the pages the code uses.
            let mut pg = Pager::new(bus, kind);
            pg.identity(bus, 0, RAM as u64, pte::PWU);
            let size = if kind == Paging::Bits32 { 4 } else { 8 };
            for &lin in PAGED_PAGES.iter() {
                ptes.push((pg.entry(bus, lin, 0), lin, size));
                if r.one_in(3) {
                    let e = pg.read(bus, lin, 0);
                    pg.write(bus, lin, 0, e ^ random_pte_flags(r, size == 8));
                }
            }
        }
        cpu.cr3 = PT_ARENA;
        if kind == Paging::Bits32 {
            cpu.cr4 = (cpu.cr4 & !cr::CR4_PAE) | cr::CR4_PSE;
        } else {
            cpu.cr4 |= cr::CR4_PAE;
        }
        cpu.cr0 |= cr::CR0_PG | cr::CR0_PE;
        if r.one_in(2) {
            cpu.cr0 |= cr::CR0_WP;
        }
        if kind != Paging::Bits32 && r.one_in(2) {
            cpu.efer |= cr::EFER_NXE;
        }
        if r.one_in(3) {
            // Ring 3 with flat user segments.
            let data = flat(
                sel::DATA32_USER,
                attr::DATA_RW | attr::DB | attr::GRAN | dpl3,
            );
            for s in SegReg::ALL {
                cpu.seg[s as usize] = data;
            }
            cpu.seg[SegReg::Cs as usize] = if kind == Paging::Long4 {
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
        }
    }
    let (ip, _) = fm.code_at();
    cpu.rip = ip;

    // Registers (RSP usually left valid so pushes work).
    for i in 0..16 {
        if i != reg::RSP || r.one_in(8) {
            cpu.gpr[i] = r.value();
        }
    }
    if fm.bits() != 64 {
        for v in &mut cpu.gpr[8..] {
            *v = 0;
        }
        if fm.bits() == 16 && r.one_in(2) {
            // Keep 16-bit addressing in the 64 KiB of DS/SS.
            for i in [reg::RBX, reg::RSI, reg::RDI, reg::RBP] {
                cpu.gpr[i] = SCRATCH + r.below(0x1000);
            }
        }
    }

    // RFLAGS: fixed bit plus random status/control flags (TF and RF rarely).
    let mut fl = flags::FIXED | (r.next() & (flags::STATUS | flags::DF | flags::AC | flags::ID));
    if r.one_in(2) {
        fl |= flags::IF;
    }
    if r.one_in(2) {
        fl |= r.below(4) << 12;
    }
    if r.one_in(8) {
        fl |= flags::NT;
    }
    if r.one_in(10) {
        fl |= flags::TF;
    }
    if r.one_in(10) {
        fl |= flags::RF;
    }
    if r.one_in(10) {
        fl |= r.next() & (flags::VIF | flags::VIP);
    }
    cpu.rflags = (cpu.rflags & flags::VM) | fl;

    // Control registers: random harmless bits.
    if r.one_in(3) {
        cpu.cr0 |= r.next()
            & (cr::CR0_MP | cr::CR0_EM | cr::CR0_TS | cr::CR0_NE | cr::CR0_WP | cr::CR0_AM);
    }
    if r.one_in(3) {
        cpu.cr4 |= r.next()
            & cpuid::cr4_valid_mask()
            & (cr::CR4_TSD | cr::CR4_DE | cr::CR4_PSE | cr::CR4_PGE | cr::CR4_PCE | cr::CR4_UMIP);
    }
    if fm.base() == TestMode::Long64 && r.one_in(4) {
        cpu.efer &= !(cr::EFER_SCE | cr::EFER_NXE);
    } else if fm.base() == TestMode::Protected32 && fm.paging().is_none() && r.one_in(3) {
        cpu.efer |= r.next() & (cr::EFER_SCE | cr::EFER_NXE | cr::EFER_LME);
    }
    // Debug registers: breakpoints near the code, sometimes enabled.
    if r.one_in(8) {
        for i in 0..4 {
            cpu.dr[i] = fm.code_at().1 + r.below(0x40);
        }
        cpu.dr[7] = 0x400 | (r.next() & 0xffff_00ff);
    }
    // MSRs for SYSCALL/SYSENTER.
    let m = &mut cpu.msr;
    m.star = if r.one_in(3) {
        r.next()
    } else {
        ((sel::CODE32_USER as u64 & !3).wrapping_sub(16) << 48) | ((sel::CODE64 as u64) << 32)
    };
    // WRMSR keeps these canonical.
    m.lstar = canonical(pick!(r, [CODE + r.below(0x100), r.next()]));
    m.cstar = CODE + r.below(0x100);
    m.sfmask = r.next() & 0xffff_ffff;
    m.sysenter_cs = pick!(
        r,
        [sel::CODE32 as u64, sel::CODE64 as u64, r.next() & 0xffff, 0]
    );
    m.sysenter_eip = CODE + r.below(0x100);
    m.sysenter_esp = STACK - r.below(0x100);
    m.kernel_gs_base = canonical(r.value());

    // Extra GDT entries, an LDT image in scratch, and sometimes garbage
    // everywhere (then most control transfers triple-fault).
    if first {
        for i in 11..16u64 {
            bus.put(GDT + 8 * i, 8, random_descriptor(r));
        }
        for i in 0..0x1000u64 / 8 {
            let v = if r.one_in(3) {
                random_descriptor(r)
            } else {
                r.next()
            };
            bus.put(SCRATCH + 8 * i, 8, v);
        }
    }
    if r.one_in(3) {
        cpu.gdtr.limit = pick!(r, [0x7f, 0xffff, 0x57, 0x7, 0x0]);
    }
    if first && r.one_in(4) {
        let n = 1 + r.below(8);
        for _ in 0..n {
            let i = 1 + r.below(10);
            bus.put(GDT + 8 * i, 8, random_descriptor(r));
        }
    }
    if first && r.one_in(6) {
        // Garbage IDT (or gates with random selectors and types).
        let n = 1 + r.below(64);
        for _ in 0..n {
            let at = IDT + 8 * r.below(0x200);
            bus.put(
                at,
                8,
                if r.one_in(2) {
                    r.next()
                } else {
                    random_descriptor(r)
                },
            );
        }
    }
    if r.one_in(8) {
        cpu.idtr = TableReg {
            base: pick!(r, [IDT, SCRATCH, r.next()]),
            limit: r.next() as u16,
        };
    }
    if r.one_in(6) {
        cpu.ldtr = Segment {
            selector: 0x58,
            base: SCRATCH,
            limit: 0xfff,
            attr: attr::PRESENT | 2,
        };
    }
    if first && r.one_in(10) {
        // Garbage TSS contents (stacks for inner-ring transfers).
        for i in 0..0x68u64 / 8 {
            bus.put(0x3000 + 8 * i, 8, r.value());
        }
    }
    // Real-mode IVT: sometimes garbage vectors.
    if first && fm == FMode::Real && r.one_in(4) {
        for _ in 0..16 {
            bus.put(4 * r.below(256), 4, r.next());
        }
    }
    cpu.update_mode();
    cpu.end_block = false;
    ptes
}

/// Code generator for one mode.
struct Gen<'a> {
    r: &'a mut Rng,
    bits: u32,
    out: Vec<u8>,
    /// Paging-structure entries the code may rewrite: (entry address,
    /// linear page, entry size).
    ptes: &'a [(u64, u64, u64)],
}

impl Gen<'_> {
    fn emit(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }
    fn imm(&mut self, v: u64, n: usize) {
        self.out.extend_from_slice(&v.to_le_bytes()[..n]);
    }
    /// ModRM (+SIB) + displacement addressing absolute `addr` (DS-relative).
    fn modrm_abs(&mut self, reg_field: u8, addr: u64) {
        let r = (reg_field & 7) << 3;
        match self.bits {
            16 => {
                self.emit(&[0x06 | r]);
                self.imm(addr, 2);
            }
            32 => {
                self.emit(&[0x05 | r]);
                self.imm(addr, 4);
            }
            _ => {
                self.emit(&[0x04 | r, 0x25]);
                self.imm(addr, 4);
            }
        }
    }
    fn scratch_addr(&mut self) -> u64 {
        SCRATCH + self.r.below(0xff0)
    }
    /// MOV r32, imm32 (zero-extended in 64-bit mode).
    fn mov_r32(&mut self, rn: u8, v: u64) {
        if self.bits == 16 {
            self.emit(&[0x66]);
        }
        self.emit(&[0xb8 + rn]);
        self.imm(v, 4);
    }
    /// MOV r16, imm16.
    fn mov_r16(&mut self, rn: u8, v: u64) {
        if self.bits != 16 {
            self.emit(&[0x66]);
        }
        self.emit(&[0xb8 + rn]);
        self.imm(v, 2);
    }
    /// MOV to a full-width register (64-bit in 64-bit mode).
    fn mov_full(&mut self, rn: u8, v: u64) {
        if self.bits == 64 {
            self.emit(&[0x48, 0xb8 + rn]);
            self.imm(v, 8);
        } else {
            self.mov_r32(rn, v);
        }
    }
    /// Pushes `v` at the default stack width.
    fn push(&mut self, v: u64) {
        self.mov_full(0, v);
        self.emit(&[0x50]);
    }
    /// Operand-size prefix choice for far transfers / IRET: none, 66, REX.W.
    fn opsize_prefix(&mut self) {
        match self.r.below(4) {
            0 => self.emit(&[0x66]),
            1 if self.bits == 64 => self.emit(&[0x48]),
            _ => {}
        }
    }
    /// Writes `v` (4 bytes) at absolute `addr` with MOV r/m32, imm32.
    fn store32(&mut self, addr: u64, v: u64) {
        if self.bits == 16 {
            self.emit(&[0x66]);
        }
        self.emit(&[0xc7]);
        self.modrm_abs(0, addr);
        self.imm(v, 4);
    }
    /// A random valid instruction (decoded from random bytes), rarely an
    /// x87/SSE one (they stop the machine and end the case).
    fn valid_insn(&mut self) {
        for _ in 0..32 {
            let mut bytes = [0u8; 15];
            for b in &mut bytes {
                *b = self.r.byte();
            }
            if self.r.one_in(3) {
                bytes[0] = 0x0f;
            }
            let mut d = Decoder::new(self.bits, &bytes, DecoderOptions::NONE);
            let insn = d.decode();
            if insn.is_invalid() {
                continue;
            }
            self.emit(&bytes[..insn.len()]);
            return;
        }
    }
    fn cr_value(&mut self) -> u64 {
        match self.r.below(6) {
            0 => self.r.next(),
            1 => self.r.next() & 0xffff_ffff,
            2 => {
                // CR0 bit combinations.
                self.r.next()
                    & (cr::CR0_PE
                        | cr::CR0_MP
                        | cr::CR0_EM
                        | cr::CR0_TS
                        | cr::CR0_ET
                        | cr::CR0_NE
                        | cr::CR0_WP
                        | cr::CR0_AM
                        | cr::CR0_NW
                        | cr::CR0_CD
                        | cr::CR0_PG)
            }
            3 => self.r.next() & cpuid::cr4_valid_mask(),
            4 => 0x20000 | (self.r.next() & 0x18),
            _ => self.r.value(),
        }
    }
    /// `op eax, imm32` (0x25 AND, 0x0d OR, 0x35 XOR).
    fn eax_op(&mut self, op: u8, v: u64) {
        if self.bits == 16 {
            self.emit(&[0x66]);
        }
        self.emit(&[op]);
        self.imm(v, 4);
    }
    /// MOV EAX/RAX, CRn and back after `op` with `v`.
    fn cr_rmw(&mut self, crn: u8, op: u8, v: u64) {
        self.emit(&[0x0f, 0x20, 0xc0 | crn << 3]);
        self.eax_op(op, v);
        self.emit(&[0x0f, 0x22, 0xc0 | crn << 3]);
    }
    /// A far JMP to `sel:off` that works in any mode (indirect through scratch).
    fn far_jmp(&mut self, sel: u16, off: u64) {
        let at = self.scratch_addr();
        self.store32(at, off);
        self.store32(at + 4, sel as u64);
        if self.bits == 16 {
            self.emit(&[0x66]);
        }
        self.emit(&[0xff]);
        self.modrm_abs(5, at);
    }
    /// The sequences system software uses to switch modes: CR0.PE and
    /// CR0.PG on and off, long-mode entry and exit, V86 entry by IRET,
    /// each followed by a far jump to a random code selector.
    fn mode_switch(&mut self) {
        let target = CODE + self.r.below(0x200);
        let sel = pick!(
            self.r,
            [
                sel::CODE32,
                sel::CODE16,
                sel::CODE64,
                sel::CODE32_USER,
                self.r.selector()
            ]
        );
        match self.r.below(6) {
            0 => self.cr_rmw(0, 0x35, cr::CR0_PE),
            1 => self.cr_rmw(0, 0x35, cr::CR0_PG),
            2 => {
                // Long mode on: PAE, CR3, EFER.LME, then paging.
                self.cr_rmw(4, 0x0d, cr::CR4_PAE);
                self.mov_r32(0, 0x20000);
                self.emit(&[0x0f, 0x22, 0xd8]);
                self.mov_r32(1, 0xc000_0080);
                self.emit(&[0x0f, 0x32]);
                self.eax_op(0x0d, cr::EFER_LME);
                self.emit(&[0x0f, 0x30]);
                self.cr_rmw(0, 0x0d, cr::CR0_PG | cr::CR0_PE);
            }
            3 => {
                // Long mode off: paging, then EFER.LME.
                self.cr_rmw(0, 0x25, !cr::CR0_PG & 0xffff_ffff);
                self.mov_r32(1, 0xc000_0080);
                self.emit(&[0x0f, 0x32]);
                self.eax_op(0x25, !cr::EFER_LME & 0xffff_ffff);
                self.emit(&[0x0f, 0x30]);
            }
            4 if self.bits == 32 => {
                // IRETD into virtual-8086 mode.
                let seg = self.r.pick(&[0u64, 0x1000, 0x2000, 0x6000]);
                for v in [seg, seg, seg, seg, seg, 0x8000] {
                    self.push(v);
                }
                let fl = flags::FIXED | flags::VM | (self.r.next() & (flags::IOPL | flags::IF));
                self.push(fl);
                self.push(V86_CS as u64);
                let ip = self.r.below(0x100);
                self.push(ip);
                self.emit(&[0xcf]);
                return;
            }
            _ => {}
        }
        self.far_jmp(sel, target);
    }
    /// One system/privileged instruction with its setup.
    fn system_insn(&mut self) {
        let bits = self.bits;
        let r = &mut *self.r;
        let choice = r.below(37);
        match choice {
            // MOV CRn, reg / MOV reg, CRn.
            0 | 1 => {
                let v = self.cr_value();
                let rn = self.r.below(8) as u8;
                self.mov_full(rn, v);
                let crn = pick!(self.r, [0u8, 0, 3, 4, 4, 2, 8, 1, 5]);
                if crn & 8 != 0 && self.bits == 64 {
                    self.emit(&[0x44]);
                }
                let op = if choice == 0 { 0x22 } else { 0x20 };
                self.emit(&[0x0f, op, 0xc0 | (crn & 7) << 3 | rn]);
            }
            // MOV DRn.
            2 => {
                let v = self.r.value();
                let rn = self.r.below(8) as u8;
                self.mov_full(rn, v);
                let op = pick!(self.r, [0x21u8, 0x23]);
                let drn = self.r.below(8) as u8;
                self.emit(&[0x0f, op, 0xc0 | drn << 3 | rn]);
            }
            // LGDT/LIDT/SGDT/SIDT/INVLPG/SMSW/LMSW with memory in scratch.
            3 | 4 => {
                let at = self.scratch_addr();
                let limit = pick!(
                    self.r,
                    [0x57u64, 0xfff, 0x7f, 0xffff, 0, self.r.next() & 0xffff]
                );
                let base = pick!(self.r, [GDT, IDT, SCRATCH, 0, self.r.next()]);
                self.store32(at, limit | (base & 0xffff) << 16);
                self.store32(at + 4, base >> 16);
                let f = pick!(self.r, [0u8, 1, 2, 3, 2, 3, 4, 6, 7]);
                if self.r.one_in(4) {
                    self.opsize_prefix();
                }
                self.emit(&[0x0f, 0x01]);
                self.modrm_abs(f, at);
            }
            // LLDT/LTR/VERR/VERW/SLDT/STR/LAR/LSL with a random selector.
            5 | 6 => {
                let s = self.r.selector() as u64;
                self.mov_r16(0, s);
                match self.r.below(8) {
                    0 => self.emit(&[0x0f, 0x00, 0xd0]),
                    1 => self.emit(&[0x0f, 0x00, 0xd8]),
                    2 => self.emit(&[0x0f, 0x00, 0xe0]),
                    3 => self.emit(&[0x0f, 0x00, 0xe8]),
                    4 => self.emit(&[0x0f, 0x00, 0xc1]),
                    5 => self.emit(&[0x0f, 0x00, 0xc9]),
                    6 => self.emit(&[0x0f, 0x02, 0xc8]),
                    _ => self.emit(&[0x0f, 0x03, 0xc8]),
                }
            }
            // MOV Sreg, AX / POP Sreg / LDS-style far pointer loads.
            7 | 8 => {
                let s = self.r.selector() as u64;
                self.mov_r16(0, s);
                match self.r.below(4) {
                    0 | 1 => {
                        let sreg = self.r.below(8) as u8;
                        self.emit(&[0x8e, 0xc0 | sreg << 3]);
                    }
                    2 => {
                        self.emit(&[0x50]);
                        let op: &[u8] = if self.bits == 64 {
                            pick!(self.r, [&[0x0f, 0xa1][..], &[0x0f, 0xa9][..]])
                        } else {
                            pick!(
                                self.r,
                                [
                                    &[0x07][..],
                                    &[0x17][..],
                                    &[0x1f][..],
                                    &[0x0f, 0xa1][..],
                                    &[0x0f, 0xa9][..],
                                ]
                            )
                        };
                        self.emit(op);
                    }
                    _ => {
                        let at = self.scratch_addr();
                        let off = self.r.value();
                        self.store32(at, off);
                        self.store32(at + 4, s | (s << 16));
                        let op: &[u8] = pick!(
                            self.r,
                            [
                                &[0xc5][..],
                                &[0xc4][..],
                                &[0x0f, 0xb2][..],
                                &[0x0f, 0xb4][..],
                                &[0x0f, 0xb5][..],
                            ]
                        );
                        if self.r.one_in(3) {
                            self.opsize_prefix();
                        }
                        self.emit(op);
                        let rf = self.r.below(8) as u8;
                        self.modrm_abs(rf, at);
                    }
                }
            }
            // Far JMP/CALL direct (not in 64-bit mode).
            9 if bits != 64 => {
                let s = self.r.selector() as u64;
                let off = pick!(
                    self.r,
                    [
                        CODE + self.r.below(0x100),
                        self.r.below(0x100),
                        self.r.value(),
                    ]
                );
                let wide = match (bits, self.r.below(3)) {
                    (16, 0) => {
                        self.emit(&[0x66]);
                        true
                    }
                    (32, 0) => {
                        self.emit(&[0x66]);
                        false
                    }
                    (16, _) => false,
                    _ => true,
                };
                let op = pick!(self.r, [0xeau8, 0x9a]);
                self.emit(&[op]);
                self.imm(off, if wide { 4 } else { 2 });
                self.imm(s, 2);
            }
            // Far JMP/CALL indirect through scratch (m16:16/32/64).
            9 | 10 => {
                let at = self.scratch_addr();
                let s = self.r.selector() as u64;
                let off = pick!(
                    self.r,
                    [
                        CODE + self.r.below(0x100),
                        self.r.below(0x100),
                        self.r.value(),
                    ]
                );
                self.store32(at, off);
                self.store32(at + 4, (off >> 32) & 0xffff_0000 | s);
                self.store32(at + 8, s);
                self.opsize_prefix();
                let f = pick!(self.r, [3u8, 5]);
                self.emit(&[0xff]);
                self.modrm_abs(f, at);
            }
            // RETF / RETF imm / IRET after pushing random frames.
            11..=13 => {
                let n = 1 + self.r.below(6);
                for _ in 0..n {
                    let v = match self.r.below(5) {
                        0 => self.r.selector() as u64,
                        1 => CODE + self.r.below(0x100),
                        2 => flags::FIXED | (self.r.next() & flags::ALL_DEFINED),
                        3 => STACK - self.r.below(0x100),
                        _ => self.r.value(),
                    };
                    self.push(v);
                }
                self.opsize_prefix();
                match self.r.below(3) {
                    0 => self.emit(&[0xcb]),
                    1 => {
                        self.emit(&[0xca]);
                        let k = self.r.below(16) * 2;
                        self.imm(k, 2);
                    }
                    _ => self.emit(&[0xcf]),
                }
            }
            // INT n / INT3 / INTO / INT1.
            14 | 15 => match self.r.below(5) {
                0 => self.emit(&[0xcc]),
                1 => self.emit(&[0xce]),
                2 => self.emit(&[0xf1]),
                _ => {
                    let v = self.r.byte();
                    self.emit(&[0xcd, v]);
                }
            },
            // SYSCALL/SYSRET/SYSENTER/SYSEXIT, sometimes after setting their MSRs.
            16 | 17 => {
                if self.r.one_in(2) {
                    let msr = pick!(
                        self.r,
                        [
                            0xc000_0081u64,
                            0xc000_0082,
                            0xc000_0084,
                            0x174,
                            0x175,
                            0x176,
                            0xc000_0080,
                        ]
                    );
                    let v = match msr {
                        0xc000_0081 => {
                            let k = pick!(
                                self.r,
                                [
                                    sel::CODE32,
                                    sel::CODE64,
                                    sel::CODE32_USER & !3,
                                    self.r.selector(),
                                ]
                            ) as u64;
                            let u = pick!(self.r, [0x20u64, 0x23, 0x2b, self.r.selector() as u64]);
                            (u << 48) | (k << 32)
                        }
                        0xc000_0080 => self.r.next() & (cr::EFER_SCE | cr::EFER_NXE | cr::EFER_LME),
                        _ => self.r.value(),
                    };
                    self.mov_r32(1, msr);
                    self.mov_r32(0, v);
                    self.mov_r32(2, v >> 32);
                    self.emit(&[0x0f, 0x30]);
                }
                let rcx = pick!(self.r, [CODE + self.r.below(0x100), self.r.value()]);
                self.mov_full(1, rcx);
                let rdx = pick!(self.r, [CODE + self.r.below(0x100), self.r.value()]);
                self.mov_full(2, rdx);
                let w = self.bits == 64 && self.r.one_in(2);
                let op = pick!(self.r, [0x05u8, 0x07, 0x34, 0x35]);
                if w {
                    self.emit(&[0x48]);
                }
                self.emit(&[0x0f, op]);
            }
            // Port I/O, string I/O with REP.
            18 | 19 => {
                let port = pick!(
                    self.r,
                    [0x80u64, 0x20, 0x21, 0x3f8, 0xcf8, self.r.next() & 0xffff]
                );
                self.mov_r32(2, port);
                let mut ops = vec![
                    0xe4u8, 0xe5, 0xe6, 0xe7, 0xec, 0xed, 0xee, 0xef, 0x6c, 0x6d, 0x6e, 0x6f,
                ];
                let op = ops.remove(self.r.below(ops.len() as u64) as usize);
                if self.r.one_in(3) {
                    self.emit(&[0x66]);
                }
                if op >= 0x6c && self.r.one_in(2) {
                    let n = self.r.below(8);
                    self.mov_r32(1, n);
                    self.emit(&[0xf3]);
                }
                self.emit(&[op]);
                if op < 0xe8 {
                    let p = self.r.byte();
                    self.emit(&[p]);
                }
            }
            // POPF with a random value.
            20 | 21 => {
                let v = match self.r.below(3) {
                    0 => self.r.next(),
                    _ => flags::FIXED | (self.r.next() & flags::ALL_DEFINED),
                };
                self.push(v);
                if self.r.one_in(4) {
                    self.opsize_prefix();
                }
                self.emit(&[0x9d]);
            }
            // WRMSR/RDMSR with a known or random MSR.
            22 | 23 => {
                let msr = match self.r.below(4) {
                    0 => self.r.next() & 0xffff_ffff,
                    _ => pick!(
                        self.r,
                        [
                            0x10u64,
                            0x1b,
                            0x8b,
                            0xfe,
                            0x174,
                            0x175,
                            0x176,
                            0x1a0,
                            0x200,
                            0x20f,
                            0x250,
                            0x258,
                            0x259,
                            0x268,
                            0x26f,
                            0x277,
                            0x2ff,
                            0xc000_0080,
                            0xc000_0081,
                            0xc000_0082,
                            0xc000_0083,
                            0xc000_0084,
                            0xc000_0100,
                            0xc000_0101,
                            0xc000_0102,
                            0xc000_0103,
                        ]
                    ),
                };
                let v = self.r.value();
                self.mov_r32(1, msr);
                self.mov_r32(0, v);
                let hi = if self.r.one_in(2) { v >> 32 } else { 0 };
                self.mov_r32(2, hi);
                let op = pick!(self.r, [0x30u8, 0x30, 0x32]);
                self.emit(&[0x0f, op]);
            }
            // CPUID.
            24 => {
                let leaf = pick!(
                    self.r,
                    [
                        0u64,
                        1,
                        2,
                        7,
                        0x8000_0000,
                        0x8000_0001,
                        0x8000_0008,
                        self.r.next() & 0xffff_ffff,
                    ]
                );
                self.mov_r32(0, leaf);
                let sub = self.r.below(3);
                self.mov_r32(1, sub);
                self.emit(&[0x0f, 0xa2]);
            }
            // Writes into the live GDT/IDT.
            25 => {
                let at = if self.r.one_in(2) {
                    GDT + 4 * self.r.below(32)
                } else {
                    IDT + 4 * self.r.below(64)
                };
                let v = self.r.next();
                self.store32(at, v);
            }
            // Miscellaneous system instructions.
            26 | 27 => {
                let op: &[u8] = pick!(
                    self.r,
                    [
                        &[0xfa][..],
                        &[0xfb],
                        &[0xf4],
                        &[0x0f, 0x06],
                        &[0x0f, 0x01, 0xf0],
                        &[0x0f, 0x01, 0xe0],
                        &[0x0f, 0x01, 0xf8],
                        &[0x0f, 0x01, 0xf9],
                        &[0x0f, 0x31],
                        &[0x0f, 0x33],
                        &[0x0f, 0x09],
                        &[0x0f, 0x08],
                        &[0x9c],
                        &[0xc9],
                        &[0xc8, 0x10, 0x00, 0x03],
                        &[0x0f, 0x0b],
                        &[0x0f, 0xaa],
                        &[0x0f, 0x01, 0xc8],
                        &[0x0f, 0x01, 0xc9],
                        &[0x0f, 0x01, 0xca],
                        &[0x0f, 0x01, 0xcb],
                        &[0x0f, 0x01, 0xd0],
                        &[0x0f, 0x01, 0xd5],
                        &[0x0f, 0x01, 0xfa],
                        &[0x0f, 0xc7, 0xf0],
                        &[0x0f, 0xc7, 0xf8],
                        &[0x9b],
                        &[0x0f, 0x77],
                        &[0x63, 0xc8],
                        &[0xd7],
                        &[0x60],
                        &[0x61],
                        &[0x0f, 0x0d, 0x08],
                        &[0x0f, 0x18, 0x00],
                        &[0x0f, 0x1f, 0x00],
                        &[0x0f, 0x19, 0xc0],
                        &[0x0f, 0xae, 0xe8],
                        &[0x0f, 0x37],
                    ]
                );
                self.emit(op);
            }
            // Set a random general register to an interesting value.
            28 => {
                let rn = self.r.below(8) as u8;
                if rn != 4 || self.r.one_in(8) {
                    let v = self.r.value();
                    self.mov_full(rn, v);
                }
            }
            // Mode switches done the way system software does them.
            30..=32 => self.mode_switch(),
            // Rewrite a page-table entry, then maybe INVLPG or reload CR3.
            33..=35 if !self.ptes.is_empty() => {
                let (at, lin, size) = self.r.pick(self.ptes);
                let flags = random_pte_flags(self.r, size == 8);
                let lo = lin | (pte::PWU ^ (flags & 0xfff));
                self.store32(at, lo);
                if size == 8 && self.r.one_in(2) {
                    self.store32(at + 4, (flags >> 32) & 0x8000_0000);
                }
                match self.r.below(3) {
                    0 => {
                        self.emit(&[0x0f, 0x01]);
                        self.modrm_abs(7, lin);
                    }
                    1 => {
                        self.emit(&[0x0f, 0x20, 0xd8, 0x0f, 0x22, 0xd8]);
                    }
                    _ => {}
                }
            }
            // Short/near jump to somewhere nearby (loops, back edges).
            _ => {
                let d = self.r.below(64) as u8;
                self.emit(&[0xeb, d.wrapping_sub(32)]);
            }
        }
    }
}

/// What a fresh [`Cpu::update_mode`] computes from CR0, EFER, RFLAGS.VM and
/// CS (on a copy without the TLB, which is large to clone).
fn fresh_mode(cpu: &Cpu) -> (Mode, u32) {
    thread_local! {
        static PROBE: std::cell::RefCell<Cpu> = std::cell::RefCell::new(Cpu::new(0));
    }
    PROBE.with(|p| {
        let mut c = p.borrow_mut();
        c.cr0 = cpu.cr0;
        c.efer = cpu.efer;
        c.rflags = cpu.rflags;
        c.seg = cpu.seg;
        c.update_mode();
        (c.mode, c.bitness)
    })
}

/// Architectural invariants that must hold at every instruction boundary.
/// `been_real`: the case has run in real mode, so CS/SS may still hold
/// real-mode selectors after the switch to protected mode (SDM vol. 3 9.9.1:
/// CPL stays 0 until CS is reloaded).
fn check_invariants(cpu: &Cpu, been_real: bool) -> Result<(), String> {
    let fl = cpu.rflags;
    if fl & flags::FIXED == 0 {
        return Err(format!("RFLAGS bit 1 clear: {fl:#x}"));
    }
    if fl & !flags::ALL_DEFINED != 0 {
        return Err(format!("RFLAGS reserved bits set: {fl:#x}"));
    }
    let (mode, bits) = fresh_mode(cpu);
    if (mode, bits) != (cpu.mode, cpu.bitness) {
        return Err(format!(
            "mode {:?}/{} but CR0/EFER/CS say {mode:?}/{bits}",
            cpu.mode, cpu.bitness
        ));
    }
    let lma = cpu.efer & cr::EFER_LMA != 0;
    let want_lma = cpu.cr0 & cr::CR0_PG != 0 && cpu.efer & cr::EFER_LME != 0;
    if lma != want_lma {
        return Err(format!(
            "EFER.LMA {lma} with CR0 {:#x} EFER {:#x}",
            cpu.cr0, cpu.efer
        ));
    }
    if lma && cpu.cr4 & cr::CR4_PAE == 0 {
        return Err(format!("long mode without CR4.PAE: {:#x}", cpu.cr4));
    }
    if lma && fl & flags::VM != 0 {
        return Err("RFLAGS.VM set in long mode".into());
    }
    if cpu.cr0 & cr::CR0_PG != 0 && cpu.cr0 & cr::CR0_PE == 0 {
        return Err(format!("CR0.PG without PE: {:#x}", cpu.cr0));
    }
    if cpu.cr0 & cr::CR0_ET == 0 || cpu.cr0 >> 32 != 0 {
        return Err(format!("CR0 {:#x}", cpu.cr0));
    }
    if cpu.cr4 & !cpuid::cr4_valid_mask() != 0 {
        return Err(format!("CR4 reserved bits: {:#x}", cpu.cr4));
    }
    if cpu.efer & !cpuid::efer_valid_mask() != 0 {
        return Err(format!("EFER reserved bits: {:#x}", cpu.efer));
    }
    if cpu.cr8 > 15 {
        return Err(format!("CR8 {:#x}", cpu.cr8));
    }
    let cs = cpu.sreg(SegReg::Cs);
    let ss = cpu.sreg(SegReg::Ss);
    match cpu.mode {
        Mode::Real => {
            if cpu.cpl != 0 {
                return Err(format!("CPL {} in real mode", cpu.cpl));
            }
            if fl & flags::VM != 0 {
                return Err("RFLAGS.VM set in real mode".into());
            }
        }
        Mode::Virtual8086 => {
            if cpu.cpl != 3 {
                return Err(format!("CPL {} in V86 mode", cpu.cpl));
            }
            if cs.base != (cs.selector as u64) << 4 {
                return Err(format!("V86 CS {cs:x?}"));
            }
        }
        Mode::Protected | Mode::Long64 | Mode::Compat => {
            // CS loaded in real mode (which may have come and gone within
            // one run) holds base = selector × 16 and data attributes, as on
            // Intel CPUs, until the far jump that follows the switch.
            let real_cs = !cs.is_code() && cs.base == (cs.selector as u64) << 4;
            if !been_real && !real_cs {
                if cpu.cpl != (cs.selector & 3) as u8 {
                    return Err(format!("CPL {} but CS {cs:x?}", cpu.cpl));
                }
                if !cs.is_code() || !cs.present() {
                    return Err(format!("CS not a present code segment: {cs:x?}"));
                }
                if ss.dpl() != cpu.cpl {
                    return Err(format!("CPL {} but SS {ss:x?}", cpu.cpl));
                }
            }
        }
    }
    if cpu.mode == Mode::Long64 {
        if !is_canonical(cpu.rip) {
            return Err(format!("RIP {:#x} not canonical", cpu.rip));
        }
    } else if cpu.rip >> 32 != 0 {
        return Err(format!(
            "RIP {:#x} beyond 32 bits outside 64-bit mode",
            cpu.rip
        ));
    }
    if cpu.cpl > 3 {
        return Err(format!("CPL {}", cpu.cpl));
    }
    Ok(())
}

/// What a batch of cases observed (for the report and the gap list).
#[derive(Default)]
struct Tally {
    cases: u64,
    instructions: u64,
    exits: BTreeMap<&'static str, u64>,
    /// Unimplemented mnemonics (with one example of bytes and mode).
    unimplemented: BTreeMap<String, (u64, String)>,
    unsupported: BTreeMap<String, u64>,
}

/// Ends a case early when a stop is legitimate; fails on the rest.
fn check_stop(stop: &crate::Stop, cpu: &Cpu, tally: &mut Tally) -> Result<(), String> {
    let text = stop.to_string();
    for needle in ["icount", "cs:rip", "bytes:", stop.mode] {
        if !text.contains(needle) {
            return Err(format!("stop report {text:?} lacks {needle:?}"));
        }
    }
    if stop.mode != cpu.mode.name() {
        return Err(format!(
            "stop report mode {} but CPU in {}",
            stop.mode,
            cpu.mode.name()
        ));
    }
    match &stop.kind {
        StopKind::TripleFault { .. } => Ok(()),
        StopKind::Unimplemented { mnemonic } => {
            let e = tally
                .unimplemented
                .entry(format!("{mnemonic} ({} bit)", cpu.bitness))
                .or_insert((0, text.clone()));
            e.0 += 1;
            Err(format!("unimplemented instruction: {text}"))
        }
        StopKind::Unsupported(what) => {
            *tally.unsupported.entry(what.clone()).or_default() += 1;
            Ok(())
        }
    }
}

/// Generates the code of a case: random bytes, valid instructions, system
/// instructions or a mix. Returns the bytes and the offsets where pieces start.
fn generate(r: &mut Rng, bits: u32, ptes: &[(u64, u64, u64)]) -> (Vec<u8>, Vec<u64>) {
    let mut g = Gen {
        r,
        bits,
        out: Vec::new(),
        ptes,
    };
    let mut starts = Vec::new();
    let style = g.r.below(4);
    let n = 16 + g.r.below(48);
    for _ in 0..n {
        starts.push(g.out.len() as u64);
        match style {
            0 => {
                let k = 1 + g.r.below(8);
                for _ in 0..k {
                    let b = g.r.byte();
                    g.emit(&[b]);
                }
            }
            1 => g.valid_insn(),
            2 => g.system_insn(),
            _ => {
                if g.r.one_in(2) {
                    g.valid_insn()
                } else {
                    g.system_insn()
                }
            }
        }
    }
    (g.out, starts)
}

/// How a case is driven.
#[derive(Clone, Copy, Debug)]
struct Drive {
    /// Seed of the run-length generator (how many instructions per `run`).
    chunk_seed: u64,
    /// Run one instruction at a time (within the same chunks).
    single_step: bool,
    /// Drop all decoded code before every instruction (single-step only).
    fresh_code: bool,
    /// Inject external interrupts at random boundaries (and wake from HLT).
    interrupts: bool,
}

impl Drive {
    const FUZZ: Drive = Drive {
        chunk_seed: 0,
        single_step: false,
        fresh_code: false,
        interrupts: true,
    };
}

/// Runs one case for `steps` instructions; when the CPU halts (a fault
/// handler's HLT) or stops, it restarts from a fresh random CPU state at a
/// random piece of the code, keeping memory as it was. Err describes an
/// invariant violation or a bad stop; Ok has the final state.
fn run_case(
    seed: u64,
    fm: FMode,
    steps: u64,
    drive: Drive,
    tally: &mut Tally,
) -> Result<(Cpu, TestBus), String> {
    let mut r = Rng::new(seed);
    let mut chunks = Rng::new(seed ^ drive.chunk_seed.wrapping_mul(0x5851_f42d_4c95_7f2d));
    let mut bus = TestBus::new();
    install_tables(&mut bus);
    let mut cpu = cpu_in(fm.base());
    let ptes = setup(&mut r, fm, &mut cpu, &mut bus, true);
    let (code, starts) = generate(&mut r, fm.bits(), &ptes);
    bus.write(fm.code_at().1, &code);
    let verbose = env_u64("FUZZ_VERBOSE").unwrap_or(0) > 1;
    let trace = env_u64("FUZZ_VERBOSE").unwrap_or(0) > 3;
    let single = drive.single_step || trace;

    let mut cache = CodeCache::new();
    let mut done = 0u64;
    let mut restarts = 0;
    tally.cases += 1;
    'restart: while done < steps && restarts < 16 {
        if restarts > 0 {
            if !r.one_in(4) {
                // Repair the GDT, page tables and TSS the last run may have broken.
                install_tables(&mut bus);
            }
            cpu = cpu_in(fm.base());
            setup(&mut r, fm, &mut cpu, &mut bus, false);
            // The host rewrote memory: drop code decoded from it.
            cache = CodeCache::new();
            cpu.rip += starts[r.below(starts.len() as u64) as usize];
        }
        restarts += 1;
        check_invariants(&cpu, false).map_err(|e| format!("bad initial state: {e}"))?;
        let mut been_real = cpu.mode == Mode::Real;
        let mut last = None;
        let start = cpu.icount;
        let end = start + (steps - done);
        while cpu.icount < end {
            let limit = (cpu.icount + 1 + chunks.below(24)).min(end);
            let before = cpu.icount;
            let exit = if single {
                // One instruction at a time: must not change the outcome.
                loop {
                    if trace {
                        trace_insn(&cpu, &bus);
                    }
                    if drive.fresh_code {
                        cache.clear();
                    }
                    let next = cpu.icount + 1;
                    let e = Ctx::new(&mut cpu, &mut bus, &mut cache).run(next);
                    if e != RunExit::Limit || cpu.icount >= limit {
                        break e;
                    }
                }
            } else {
                Ctx::new(&mut cpu, &mut bus, &mut cache).run(limit)
            };
            been_real |= cpu.mode == Mode::Real;
            bus.mmio.clear();
            bus.port_out.clear();
            let ctx = |cpu: &Cpu| {
                format!(
                    "after {exit:?} at icount {} cs:rip {:04x}:{:x} ({:?}, restart {restarts}) from {:?}",
                    cpu.icount,
                    cpu.sreg(SegReg::Cs).selector,
                    cpu.rip,
                    cpu.mode,
                    last
                )
            };
            check_invariants(&cpu, been_real).map_err(|e| format!("{e}; {}", ctx(&cpu)))?;
            *tally
                .exits
                .entry(match &exit {
                    RunExit::Limit => "limit",
                    RunExit::Halted => "halted",
                    RunExit::Exit => "exit",
                    RunExit::Stop(_) => "stop",
                })
                .or_default() += 1;
            let mut wake = false;
            match &exit {
                RunExit::Limit => {
                    if cpu.icount != limit {
                        return Err(format!("Limit exit at icount {} not {limit}", cpu.icount));
                    }
                }
                RunExit::Exit => {}
                RunExit::Halted => {
                    if !cpu.halted {
                        return Err(format!("Halted exit but CPU not halted; {}", ctx(&cpu)));
                    }
                    // Wake it with an external interrupt, or restart.
                    if drive.interrupts && cpu.interrupts_enabled() && r.one_in(2) {
                        wake = true;
                    } else {
                        done += cpu.icount - start;
                        continue 'restart;
                    }
                }
                RunExit::Stop(stop) => {
                    if verbose {
                        eprintln!("seed {seed:#x} {fm:?}: {stop}");
                    }
                    check_stop(stop, &cpu, tally)?;
                    done += cpu.icount - start;
                    continue 'restart;
                }
            }
            if cpu.icount <= before && exit == RunExit::Limit {
                return Err("run made no progress".into());
            }
            // Sometimes an external interrupt at an instruction boundary.
            if wake || (drive.interrupts && cpu.interrupts_enabled() && r.one_in(16)) {
                let v = 0x20 + r.below(0xe0) as u8;
                let res = Ctx::new(&mut cpu, &mut bus, &mut cache).interrupt(v);
                check_invariants(&cpu, been_real)
                    .map_err(|e| format!("{e} after interrupt {v:#x}; {}", ctx(&cpu)))?;
                if let Err(stop) = res {
                    check_stop(&stop, &cpu, tally)?;
                    done += cpu.icount - start;
                    continue 'restart;
                }
            }
            last = Some((cpu.sreg(SegReg::Cs).selector, cpu.rip, cpu.mode));
        }
        done += cpu.icount - start;
    }
    tally.instructions += done;
    Ok((cpu, bus))
}

/// The architectural state two runs of one case must agree on.
fn arch_state(cpu: &Cpu) -> String {
    format!(
        "gpr {:x?} rip {:x} rflags {:x} seg {:x?} ldtr {:x?} tr {:x?} gdtr {:x?} idtr {:x?} \
         cr {:x} {:x} {:x} {:x} {:x} efer {:x} dr {:x?} msr {:x?} cpl {} icount {} halted {} \
         mode {:?}/{}",
        cpu.gpr,
        cpu.rip,
        cpu.rflags,
        cpu.seg,
        cpu.ldtr,
        cpu.tr,
        cpu.gdtr,
        cpu.idtr,
        cpu.cr0,
        cpu.cr2,
        cpu.cr3,
        cpu.cr4,
        cpu.cr8,
        cpu.efer,
        cpu.dr,
        cpu.msr,
        cpu.cpl,
        cpu.icount,
        cpu.halted,
        cpu.mode,
        cpu.bitness
    )
}

/// Runs one case in blocks of random length and one instruction at a time:
/// the final states and memory must be identical (stopping at an exact
/// count, and the block and jump caches, are invisible to the guest).
///
/// FUZZ_FRESH=1 adds a third run that also drops all decoded code before
/// every instruction. Expect some divergence there: a host-side code-cache
/// clear also drops write translations, so a guest that edits live page
/// tables without INVLPG may then see its change early (as the SDM allows).
fn run_compare(seed: u64, fm: FMode, steps: u64, tally: &mut Tally) -> Result<(), String> {
    let mut drives = vec![
        Drive {
            chunk_seed: 1,
            single_step: false,
            fresh_code: false,
            interrupts: false,
        },
        Drive {
            chunk_seed: 2,
            single_step: true,
            fresh_code: false,
            interrupts: false,
        },
    ];
    if env_u64("FUZZ_FRESH").unwrap_or(0) != 0 {
        drives.push(Drive {
            chunk_seed: 3,
            single_step: true,
            fresh_code: true,
            interrupts: false,
        });
    }
    let mut first: Option<(String, TestBus)> = None;
    for d in drives {
        let (cpu, bus) = run_case(seed, fm, steps, d, tally)?;
        let st = arch_state(&cpu);
        match &first {
            None => first = Some((st, bus)),
            Some((st0, bus0)) => {
                if *st0 != st {
                    return Err(format!("{d:?} diverges:\n  {st0}\n  {st}"));
                }
                if bus.ram != bus0.ram {
                    let i = (0..bus.ram.len()).find(|&i| bus.ram[i] != bus0.ram[i]);
                    return Err(format!("{d:?} diverges in RAM at {i:#x?}"));
                }
            }
        }
    }
    Ok(())
}

/// Prints the instruction at CS:RIP (FUZZ_VERBOSE=4).
fn trace_insn(cpu: &Cpu, bus: &TestBus) {
    let cs = cpu.sreg(SegReg::Cs);
    let lin = if cpu.bitness == 64 {
        cpu.rip
    } else {
        cs.base.wrapping_add(cpu.rip) & 0xffff_ffff
    };
    let bytes: Vec<u8> = (0..15)
        .map(|i| {
            bus.ram
                .get(lin.wrapping_add(i) as usize)
                .copied()
                .unwrap_or(0)
        })
        .collect();
    let mut d = Decoder::with_ip(cpu.bitness, &bytes, cpu.rip, DecoderOptions::NONE);
    let insn = d.decode();
    eprintln!(
        "  {:>5} {:04x}:{:08x} {:?} cpl{} fl {:x} rsp {:x} cr2 {:x} {:02x?} {:?}",
        cpu.icount,
        cs.selector,
        cpu.rip,
        cpu.mode,
        cpu.cpl,
        cpu.rflags,
        cpu.gpr[reg::RSP],
        cpu.cr2,
        &bytes[..insn.len().max(1)],
        insn.code()
    );
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    if let Some(h) = v.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else {
        v.parse().ok()
    }
}

/// Runs `cases` cases (or FUZZ_CASES) in each of `modes`; panics with the
/// seed of every failing case.
fn fuzz(test_seed: u64, modes: &[FMode], cases: u64, compare: bool) {
    let cases = env_u64("FUZZ_CASES").unwrap_or(cases);
    let steps = env_u64("FUZZ_STEPS").unwrap_or(300);
    let only_seed = env_u64("FUZZ_SEED");
    let only_mode = std::env::var("FUZZ_MODE").ok();
    // FUZZ_SALT explores other seeds than the committed ones.
    let test_seed = test_seed
        ^ env_u64("FUZZ_SALT")
            .unwrap_or(0)
            .wrapping_mul(0x1000_0000_0001);
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for &fm in modes {
        if let Some(m) = &only_mode {
            if !format!("{fm:?}").eq_ignore_ascii_case(m) {
                continue;
            }
        }
        let seeds: Vec<u64> = match only_seed {
            Some(s) => vec![s],
            None => (0..cases)
                .map(|i| test_seed.wrapping_mul(1_000_003) ^ (fm as u64) << 40 ^ i)
                .collect(),
        };
        for seed in seeds {
            if env_u64("FUZZ_VERBOSE").unwrap_or(0) > 2 {
                eprintln!("case {seed:#x} {fm:?}");
            }
            let res = catch_unwind(AssertUnwindSafe(|| {
                if compare {
                    run_compare(seed, fm, steps, &mut tally)
                } else {
                    run_case(seed, fm, steps, Drive::FUZZ, &mut tally).map(|_| ())
                }
            }));
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("seed {seed:#x} {fm:?}: {e}")),
                Err(p) => {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures.push(format!("seed {seed:#x} {fm:?}: PANIC {msg}"));
                }
            }
            if failures.len() >= 20 {
                break;
            }
        }
    }
    if std::env::var_os("FUZZ_VERBOSE").is_some() || !tally.unimplemented.is_empty() {
        eprintln!(
            "fuzz: {} cases, {} instructions, exits {:?}",
            tally.cases, tally.instructions, tally.exits
        );
        for (m, (n, ex)) in &tally.unimplemented {
            eprintln!("  unimplemented {m}: {n}× e.g. {ex}");
        }
        for (m, n) in &tally.unsupported {
            eprintln!("  unsupported {m}: {n}×");
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fuzz_real_mode() {
    fuzz(1, &[FMode::Real], 1500, false);
}

#[test]
fn fuzz_protected_mode() {
    fuzz(2, &[FMode::Prot32, FMode::Prot16], 800, false);
}

#[test]
fn fuzz_long_mode() {
    fuzz(3, &[FMode::Long64, FMode::Compat], 800, false);
}

#[test]
fn fuzz_user_mode() {
    fuzz(4, &[FMode::Prot32User, FMode::Long64User], 800, false);
}

#[test]
fn fuzz_v86_mode() {
    fuzz(5, &[FMode::V86], 1500, false);
}

#[test]
fn fuzz_paged_modes() {
    fuzz(
        7,
        &[FMode::Paged32, FMode::PagedPae, FMode::Paged64],
        500,
        false,
    );
}

#[test]
fn fuzz_block_boundaries_are_invisible() {
    fuzz(6, &ALL_MODES, 60, true);
}

/// Debugging aid: for FUZZ_SEED/FUZZ_MODE, finds the first instruction count
/// at which block-wise and single-step runs of a case diverge, and traces
/// the single-step run up to there (`cargo test ... fuzz_bisect --
/// --ignored --nocapture`).
#[test]
#[ignore]
fn fuzz_bisect() {
    let (Some(seed), Ok(mode)) = (env_u64("FUZZ_SEED"), std::env::var("FUZZ_MODE")) else {
        return;
    };
    let Some(fm) = ALL_MODES
        .into_iter()
        .find(|m| format!("{m:?}").eq_ignore_ascii_case(&mode))
    else {
        return;
    };
    let fresh = env_u64("FUZZ_FRESH").unwrap_or(0) != 0;
    let differs = |steps: u64| {
        let mut t = Tally::default();
        let a = Drive {
            chunk_seed: 1,
            single_step: false,
            fresh_code: false,
            interrupts: false,
        };
        let b = Drive {
            chunk_seed: 2,
            single_step: true,
            fresh_code: fresh,
            interrupts: false,
        };
        let (ca, ba) = run_case(seed, fm, steps, a, &mut t).unwrap();
        let (cb, bb) = run_case(seed, fm, steps, b, &mut t).unwrap();
        arch_state(&ca) != arch_state(&cb) || ba.ram != bb.ram
    };
    let (mut lo, mut hi) = (0u64, env_u64("FUZZ_STEPS").unwrap_or(300));
    if !differs(hi) {
        eprintln!("no divergence within {hi} steps");
        return;
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if differs(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    eprintln!("first divergence after {hi} steps (counted over restarts)");
    let mut t = Tally::default();
    for (name, d) in [("blocks", 1u64), ("single", 2)] {
        let (c, _) = run_case(
            seed,
            fm,
            hi,
            Drive {
                chunk_seed: d,
                single_step: d == 2,
                fresh_code: d == 2 && fresh,
                interrupts: false,
            },
            &mut t,
        )
        .unwrap();
        eprintln!("{name}: {}", arch_state(&c));
    }
    std::env::set_var("FUZZ_VERBOSE", "4");
    let _ = run_case(
        seed,
        fm,
        hi,
        Drive {
            chunk_seed: 2,
            single_step: true,
            fresh_code: fresh,
            interrupts: false,
        },
        &mut t,
    );
}
