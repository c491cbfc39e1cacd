//! A busy test guest for snapshot, checkpoint and determinism tests: PIT
//! interrupts, COM1 output, COM1 input by interrupt, memory written in
//! patterns (pages zeroed again too), and with two vCPUs an AP started by
//! INIT/SIPI that writes memory of its own.

use iced_x86::code_asm::*;

use super::tests::{asm, machine_with, print_com1, PROT_ENTRY};
use super::*;

/// GDT: null, flat 32-bit code (0x08), flat data (0x10).
const GDT: u64 = 0x1000;
/// GDTR then IDTR pseudo-descriptors.
const GDTR: u64 = 0x1100;
const IDTR: u64 = 0x1108;
/// The IDT (256 gates).
const IDT: u64 = 0x2000;
/// Where the AP starts (SIPI vector 8).
const AP_ENTRY: u64 = 0x8000;
/// Where the interrupt handlers live.
const TIMER_HANDLER: u64 = 0x1_0000;
const SERIAL_HANDLER: u64 = 0x1_1000;
/// Timer ticks (dword) and received-byte count (dword).
pub(super) const TICKS: u64 = 0x50_1000;
const RX_COUNT: u64 = 0x50_1004;
/// Received bytes.
pub(super) const RX_BUF: u64 = 0x50_0000;
/// The main loop's 256 pages.
pub(super) const PATTERN: u64 = 0x40_0000;
/// The timer handler's 64 pages.
const TICK_PAGES: u64 = 0x30_0000;
/// PIT channel 0 period in PIT ticks (about 8,400 instructions).
const PIT_COUNT: u32 = 10;

/// A 32-bit interrupt gate to `handler` in the code segment.
fn gate(handler: u64) -> [u8; 8] {
    let mut g = [0u8; 8];
    g[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
    g[2..4].copy_from_slice(&ENTRY_CODE_SELECTOR.to_le_bytes());
    g[5] = 0x8E;
    g[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    g
}

/// The busy guest on a machine with `cpus` vCPUs and `memory` bytes.
pub(crate) fn busy_guest(cpus: u32, memory: u64) -> Machine {
    let mut m = machine_with(MachineConfig {
        cpus,
        memory,
        ..MachineConfig::default()
    });
    let code = asm(32, PROT_ENTRY, &mut bsp);
    m.load_flat(
        &code,
        PROT_ENTRY,
        EntryMode::Protected32Flat {
            eip: PROT_ENTRY as u32,
        },
    )
    .unwrap();
    let gdt: [u64; 3] = [0, 0x00CF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF];
    let gdt: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
    m.write_phys(GDT, &gdt).unwrap();
    let mut descs = Vec::new();
    descs.extend_from_slice(&23u16.to_le_bytes());
    descs.extend_from_slice(&(GDT as u32).to_le_bytes());
    descs.extend_from_slice(&[0, 0]);
    descs.extend_from_slice(&0x7FFu16.to_le_bytes());
    descs.extend_from_slice(&(IDT as u32).to_le_bytes());
    m.write_phys(GDTR, &descs).unwrap();
    m.write_phys(IDT + 0x20 * 8, &gate(TIMER_HANDLER)).unwrap();
    m.write_phys(IDT + 0x24 * 8, &gate(SERIAL_HANDLER)).unwrap();
    let timer = asm(32, TIMER_HANDLER, &mut timer_handler);
    m.write_phys(TIMER_HANDLER, &timer).unwrap();
    let serial = asm(32, SERIAL_HANDLER, &mut serial_handler);
    m.write_phys(SERIAL_HANDLER, &serial).unwrap();
    let ap = asm(16, 0, &mut ap_loop);
    m.write_phys(AP_ENTRY, &ap).unwrap();
    m
}

/// The boot processor: descriptor tables, PIC, PIT, UART, starts the AP,
/// then loops writing memory and printing.
fn bsp(a: &mut CodeAssembler) -> Result<(), IcedError> {
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
    a.mov(al, PIT_COUNT & 0xFF)?;
    a.out(0x40u32, al)?;
    a.mov(al, PIT_COUNT >> 8)?;
    a.out(0x40u32, al)?;
    // COM1: receive interrupts, OUT2.
    a.mov(dx, 0x3F9u32)?;
    a.mov(al, 1u32)?;
    a.out(dx, al)?;
    a.mov(dx, 0x3FCu32)?;
    a.mov(al, 8u32)?;
    a.out(dx, al)?;
    // Local APIC on, LINT0 = ExtINT (the PIC still reaches vCPU 0), then
    // INIT and SIPI (vector 8) to APIC 1.
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
    a.xor(esi, esi)?;
    a.sti()?;
    let mut top = a.create_label();
    let mut no_zero = a.create_label();
    a.set_label(&mut top)?;
    a.inc(esi)?;
    // Store ESI into page (ESI * 37) % 256 at offset ESI % 4096.
    a.imul_3(eax, esi, 37)?;
    a.and(eax, 0xFFu32)?;
    a.shl(eax, 12u32)?;
    a.mov(edx, esi)?;
    a.and(edx, 0xFFCu32)?;
    a.mov(dword_ptr(eax + edx + PATTERN as u32), esi)?;
    // Every 64 iterations, zero page ((ESI / 64) * 53) % 256 again.
    a.test(esi, 0x3Fu32)?;
    a.jnz(no_zero)?;
    a.mov(edi, esi)?;
    a.shr(edi, 6u32)?;
    a.imul_3(edi, edi, 53)?;
    a.and(edi, 0xFFu32)?;
    a.shl(edi, 12u32)?;
    a.add(edi, PATTERN as u32)?;
    a.xor(eax, eax)?;
    a.mov(ecx, 1024u32)?;
    a.rep().stosd()?;
    a.set_label(&mut no_zero)?;
    // Every 256 iterations, print a letter.
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
