//! A busy, deterministic test guest for the time-travel tests and the
//! timeline benchmark (`examples/timeline_bench.rs` includes this file):
//! 32-bit protected mode, PIT interrupts (a tick counter written into 64
//! pages), COM1 output (a dot every 256 loop iterations), COM1 input by
//! interrupt (each byte stored and echoed), a main loop that writes a
//! counter over a region of pages (zeroing one again every 64
//! iterations), and a watched dword written every 1024 iterations. With
//! two vCPUs an AP started by INIT/SIPI scatters a counter of its own.

#![allow(dead_code)]

use hindsight_firmware::EntryMode;
use hindsight_machine::{Machine, MachineConfig, ENTRY_CODE_SELECTOR};
use hindsight_testsuite::iced_x86::code_asm::*;

/// GDT: null, flat 32-bit code (0x08), flat data (0x10).
const GDT: u64 = 0x1000;
/// GDTR then IDTR pseudo-descriptors.
const GDTR: u64 = 0x1100;
const IDTR: u64 = 0x1108;
/// The IDT (256 gates).
const IDT: u64 = 0x2000;
/// Where the AP starts (SIPI vector 8).
const AP_ENTRY: u64 = 0x8000;
/// Where the main loop starts.
const ENTRY: u64 = 0x10_0000;
/// Where the interrupt handlers live.
pub const TIMER_HANDLER: u64 = 0x1_0000;
const SERIAL_HANDLER: u64 = 0x1_1000;
/// Timer ticks (dword).
pub const TICKS: u64 = 0x50_1000;
/// Received-byte count (dword).
pub const RX_COUNT: u64 = 0x50_1004;
/// The dword the main loop writes its counter to every 1024 iterations.
pub const WATCH: u64 = 0x50_1008;
/// Received bytes.
pub const RX_BUF: u64 = 0x50_0000;
/// The timer handler's 64 pages.
const TICK_PAGES: u64 = 0x30_0000;
/// The main loop's pages.
pub const PATTERN: u64 = 0x80_0000;

/// How to build the guest.
#[derive(Clone, Copy, Debug)]
pub struct GuestConfig {
    /// vCPUs (1 or 2).
    pub cpus: u32,
    /// Bytes of RAM.
    pub memory: u64,
    /// Pages the main loop writes over (a power of two).
    pub pattern_pages: u32,
    /// PIT channel 0 period in PIT ticks (838 instructions each).
    pub pit_count: u16,
}

impl Default for GuestConfig {
    fn default() -> Self {
        GuestConfig {
            cpus: 1,
            memory: 16 << 20,
            pattern_pages: 256,
            pit_count: 10,
        }
    }
}

fn asm(
    bits: u32,
    ip: u64,
    build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Vec<u8> {
    let mut a = CodeAssembler::new(bits).expect("valid bitness");
    build(&mut a).expect("the guest assembles");
    a.assemble(ip).expect("the guest assembles")
}

/// A 32-bit interrupt gate to `handler` in the code segment.
fn gate(handler: u64) -> [u8; 8] {
    let mut g = [0u8; 8];
    g[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
    g[2..4].copy_from_slice(&ENTRY_CODE_SELECTOR.to_le_bytes());
    g[5] = 0x8E;
    g[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    g
}

/// A fresh machine running the guest from icount 0.
pub fn machine(cfg: GuestConfig) -> Machine {
    assert!(cfg.pattern_pages.is_power_of_two());
    let mut m = Machine::new(&MachineConfig {
        cpus: cfg.cpus,
        memory: cfg.memory,
        ..MachineConfig::default()
    })
    .expect("machine");
    let code = asm(32, ENTRY, |a| bsp(a, &cfg));
    m.load_flat(
        &code,
        ENTRY,
        EntryMode::Protected32Flat { eip: ENTRY as u32 },
    )
    .expect("load");
    let gdt: [u64; 3] = [0, 0x00CF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF];
    let gdt: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
    m.write_phys(GDT, &gdt).expect("gdt");
    let mut descs = Vec::new();
    descs.extend_from_slice(&23u16.to_le_bytes());
    descs.extend_from_slice(&(GDT as u32).to_le_bytes());
    descs.extend_from_slice(&[0, 0]);
    descs.extend_from_slice(&0x7FFu16.to_le_bytes());
    descs.extend_from_slice(&(IDT as u32).to_le_bytes());
    m.write_phys(GDTR, &descs).expect("descriptors");
    m.write_phys(IDT + 0x20 * 8, &gate(TIMER_HANDLER))
        .expect("gate");
    m.write_phys(IDT + 0x24 * 8, &gate(SERIAL_HANDLER))
        .expect("gate");
    m.write_phys(TIMER_HANDLER, &asm(32, TIMER_HANDLER, timer_handler))
        .expect("handler");
    m.write_phys(SERIAL_HANDLER, &asm(32, SERIAL_HANDLER, serial_handler))
        .expect("handler");
    m.write_phys(AP_ENTRY, &asm(16, 0, ap_loop)).expect("ap");
    m
}

/// Emits code printing `s` on COM1, polling LSR.THRE first.
fn print_com1(a: &mut CodeAssembler, s: &[u8]) -> Result<(), IcedError> {
    for &b in s {
        let mut wait = a.create_label();
        a.set_label(&mut wait)?;
        a.mov(dx, 0x3FDu32)?;
        a.in_(al, dx)?;
        a.test(al, 0x20u32)?;
        a.jz(wait)?;
        a.mov(dx, 0x3F8u32)?;
        a.mov(al, b as u32)?;
        a.out(dx, al)?;
    }
    Ok(())
}

/// The boot processor: descriptor tables, PIC, PIT, UART, the AP if any,
/// then the main loop.
fn bsp(a: &mut CodeAssembler, cfg: &GuestConfig) -> Result<(), IcedError> {
    a.cli()?;
    a.lgdt(ptr(GDTR as u32))?;
    a.lidt(ptr(IDTR as u32))?;
    a.mov(esp, 0x9_0000u32)?;
    // Master PIC at vector 0x20, IRQ0 and IRQ4 unmasked.
    for (port, v) in [
        (0x20u32, 0x11u32),
        (0x21, 0x20),
        (0x21, 4),
        (0x21, 1),
        (0x21, 0xEE),
    ] {
        a.mov(al, v)?;
        a.out(port, al)?;
    }
    // PIT channel 0: mode 2.
    a.mov(al, 0x34u32)?;
    a.out(0x43u32, al)?;
    a.mov(al, u32::from(cfg.pit_count & 0xFF))?;
    a.out(0x40u32, al)?;
    a.mov(al, u32::from(cfg.pit_count >> 8))?;
    a.out(0x40u32, al)?;
    // COM1: receive interrupts, OUT2.
    a.mov(dx, 0x3F9u32)?;
    a.mov(al, 1u32)?;
    a.out(dx, al)?;
    a.mov(dx, 0x3FCu32)?;
    a.mov(al, 8u32)?;
    a.out(dx, al)?;
    if cfg.cpus > 1 {
        // Local APIC on, LINT0 = ExtINT, then INIT and SIPI to APIC 1.
        for (reg, v) in [
            (0xF0u32, 0x1FFu32),
            (0x350, 0x700),
            (0x310, 1 << 24),
            (0x300, 0x4500),
            (0x310, 1 << 24),
            (0x300, 0x4600 | (AP_ENTRY >> 12) as u32),
        ] {
            a.mov(dword_ptr(0xFEE0_0000u32 + reg), v)?;
        }
    }
    let mask = cfg.pattern_pages - 1;
    a.xor(esi, esi)?;
    a.sti()?;
    let mut top = a.create_label();
    let mut no_zero = a.create_label();
    let mut no_watch = a.create_label();
    a.set_label(&mut top)?;
    a.inc(esi)?;
    // Store ESI into page (ESI * 37) & mask at offset ESI & 0xFFC.
    a.imul_3(eax, esi, 37)?;
    a.and(eax, mask)?;
    a.shl(eax, 12u32)?;
    a.mov(edx, esi)?;
    a.and(edx, 0xFFCu32)?;
    a.mov(dword_ptr(eax + edx + PATTERN as u32), esi)?;
    // Every 1024 iterations, the watched dword gets ESI / 1024.
    a.test(esi, 0x3FFu32)?;
    a.jnz(no_watch)?;
    a.mov(eax, esi)?;
    a.shr(eax, 10u32)?;
    a.mov(dword_ptr(WATCH as u32), eax)?;
    a.set_label(&mut no_watch)?;
    // Every 64 iterations, zero page ((ESI / 64) * 53) & mask again.
    a.test(esi, 0x3Fu32)?;
    a.jnz(no_zero)?;
    a.mov(edi, esi)?;
    a.shr(edi, 6u32)?;
    a.imul_3(edi, edi, 53)?;
    a.and(edi, mask)?;
    a.shl(edi, 12u32)?;
    a.add(edi, PATTERN as u32)?;
    a.xor(eax, eax)?;
    a.mov(ecx, 1024u32)?;
    a.rep().stosd()?;
    a.set_label(&mut no_zero)?;
    // Every 256 iterations, print a dot.
    a.test(esi, 0xFFu32)?;
    a.jnz(top)?;
    print_com1(a, b".")?;
    a.jmp(top)
}

/// Timer interrupt: count the tick, write it into one of 64 pages, EOI.
fn timer_handler(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.pushad()?;
    a.inc(dword_ptr(TICKS as u32))?;
    a.mov(eax, dword_ptr(TICKS as u32))?;
    a.mov(ebx, eax)?;
    a.and(ebx, 63u32)?;
    a.shl(ebx, 12u32)?;
    a.mov(dword_ptr(ebx + TICK_PAGES as u32), eax)?;
    a.mov(al, 0x20u32)?;
    a.out(0x20u32, al)?;
    a.popad()?;
    a.iretd()
}

/// COM1 interrupt: store and echo every received byte, EOI.
fn serial_handler(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut more = a.create_label();
    let mut done = a.create_label();
    a.pushad()?;
    a.set_label(&mut more)?;
    a.mov(dx, 0x3FDu32)?;
    a.in_(al, dx)?;
    a.test(al, 1u32)?;
    a.jz(done)?;
    a.mov(dx, 0x3F8u32)?;
    a.in_(al, dx)?;
    a.mov(ebx, dword_ptr(RX_COUNT as u32))?;
    a.mov(byte_ptr(ebx + RX_BUF as u32), al)?;
    a.inc(dword_ptr(RX_COUNT as u32))?;
    a.out(dx, al)?;
    a.jmp(more)?;
    a.set_label(&mut done)?;
    a.mov(al, 0x20u32)?;
    a.out(0x20u32, al)?;
    a.popad()?;
    a.iretd()
}

/// The AP (real mode, CS = 0x800): counts at 0x9000 and scatters the count
/// over 0x60000..0x70000.
fn ap_loop(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.cli()?;
    a.xor(ax, ax)?;
    a.mov(ds, ax)?;
    a.mov(ax, 0x6000u32)?;
    a.mov(es, ax)?;
    let mut top = a.create_label();
    a.set_label(&mut top)?;
    a.inc(word_ptr(0x9000u32))?;
    a.mov(bx, word_ptr(0x9000u32))?;
    a.imul_3(bx, bx, 13)?;
    a.and(bx, 0xFFFEu32)?;
    a.mov(word_ptr(bx).es(), bx)?;
    a.jmp(top)
}

/// A dword of guest-physical memory.
pub fn read_u32(m: &Machine, gpa: u64) -> u32 {
    let mut b = [0u8; 4];
    m.read_phys(gpa, &mut b).expect("readable");
    u32::from_le_bytes(b)
}

/// xorshift64*: a fixed stream of "random" numbers.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Shuffles `v`.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}
