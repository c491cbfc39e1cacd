//! Guest state held in host registers within and across chained blocks
//! (RFLAGS in R13, the instruction count in R14): handlers that read or
//! write them mid-block, faults on the memory slow path, chained exits,
//! budget cuts and self-modifying code, against the interpreter.

use hindsight_cpu::fault::vector;
use hindsight_cpu::state::reg;
use hindsight_cpu::testutil::{fault_of, TestMode, CODE, DATA};
use iced_x86::code_asm::*;

use super::{cut_at_every_budget, halts_chained, lockstep, World, CHUNKS};

/// Flags produced inline and consumed by handlers (PUSHFQ, ADC, CPUID
/// in between), flags produced by handlers (POPFQ, STC/CMC, CPUID's
/// registers) and consumed inline (Jcc, SETcc, CMOVcc, INC keeping CF),
/// in blocks that chain into each other.
fn handler_loop(w: &mut World) {
    w.asm(CODE, &|a| {
        let (mut top, mut a1, mut a2, mut a3) = (
            a.create_label(),
            a.create_label(),
            a.create_label(),
            a.create_label(),
        );
        a.mov(esi, 2500u32)?;
        a.mov(r8, 0x0123_4567_89ab_cdefu64)?;
        a.set_label(&mut top)?;
        a.add(r8d, esi)?; // inline flags...
        a.pushfq()?; // ...read by a handler
        a.pop(r9)?;
        a.add(qword_ptr(DATA), r9)?;
        a.mov(r10, rsi)?;
        a.and(r10d, 0x8d5)?; // status flags from the counter
        a.or(r10d, 2)?;
        a.push(r10)?;
        a.popfq()?; // a handler writes them...
        a.setc(r11b)?; // ...read inline
        a.cmovo(r12, r8)?;
        a.inc(r13)?; // keeps the popped CF
        a.jnc(a1)?; // a new block starts here: chained
        a.add(r14, 3)?;
        a.set_label(&mut a1)?;
        a.stc()?;
        a.adc(r15, 0)?;
        a.cmc()?;
        a.sbb(rdi, 0)?;
        a.mov(eax, esi)?;
        a.and(eax, 1)?; // leaf 0 or 1
        a.cpuid()?; // writes RAX..RDX
        a.add(r8, rax)?; // read inline right after
        a.xor(r8, rbx)?;
        a.sub(r8, rcx)?;
        a.cmp(edx, r8d)?;
        a.jbe(a2)?;
        a.inc(r14)?;
        a.set_label(&mut a2)?;
        a.test(r8b, 0x40)?;
        a.jz(a3)?;
        a.dec(r13)?;
        a.set_label(&mut a3)?;
        a.dec(esi)?;
        a.jnz(top)?;
        a.hlt()
    });
    w.cpu.rip = CODE;
    w.cpu.gpr[reg::RSP] = DATA + 0x800;
}

#[test]
fn handlers_reading_and_writing_flags_and_registers_mid_block() {
    halts_chained(&handler_loop);
}

#[test]
fn budget_cuts_with_state_in_host_registers() {
    cut_at_every_budget(&handler_loop, 11, 3000, &[19, 1, 5, 64, 3, 777], 200_000);
}

#[test]
fn a_page_fault_mid_block_sees_exact_flags_and_count() {
    // Flags and count pending in host registers when a load's fast path
    // misses into the handler, which faults (first through MMIO exits,
    // then #PF): the fault frame holds the interpreter's RFLAGS.
    let w = lockstep(TestMode::Long64, 1, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            let mut skip = a.create_label();
            a.set_label(&mut top)?;
            a.add(r11d, esi)?; // OF/CF... live into the fault frame
            a.inc(r9)?;
            a.mov(eax, dword_ptr(rsi))?;
            a.jo(skip)?; // reads the ADD/INC flags after the handler path
            a.add(r10, 1)?;
            a.set_label(&mut skip)?;
            a.add(rsi, 0x10_0000)?;
            a.sub(r11d, 0x7000_0000)?;
            a.jmp(top)
        });
        w.cpu.rip = CODE;
        w.cpu.gpr[reg::RSI] = 0x4000_0000 - 30 * 0x10_0000;
        w.cpu.gpr[11] = 0x7fff_0000;
    });
    let f = fault_of(&w.cpu, &w.bus).expect("a fault");
    assert_eq!(f.0, vector::PF);
    assert_eq!(w.cpu.cr2, 0x4000_0000);
}

#[test]
fn a_division_fault_after_chained_blocks() {
    // #DE from a handler in a block entered chained, with flags written
    // inline in the blocks before it.
    let w = lockstep(TestMode::Long64, 0, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let (mut top, mut b) = (a.create_label(), a.create_label());
            a.mov(ecx, 50u32)?;
            a.set_label(&mut top)?;
            a.sub(r8d, 0x1234_5678)?;
            a.jmp(b)?;
            a.set_label(&mut b)?;
            a.shl(r8d, 3)?;
            a.mov(eax, 999u32)?;
            a.xor(edx, edx)?;
            a.cmp(r8d, 17)?;
            a.div(ecx)?;
            a.dec(ecx)?;
            a.jmp(top)
        });
        w.cpu.rip = CODE;
    });
    assert_eq!(fault_of(&w.cpu, &w.bus).map(|f| f.0), Some(vector::DE));
}

#[test]
fn self_modifying_code_between_chained_blocks() {
    // A store rewrites the CMP immediate of the next (chained) block: the
    // store ends the block and the rewritten code is retranslated.
    let w = lockstep(TestMode::Long64, 0, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE + 0x100, &|a| {
            let mut back = a.create_label();
            a.cmp(ecx, 0x1000_0000u32)?; // 81 F9 imm32: imm at +2
            a.adc(r9, 0)?;
            a.setb(r10b)?;
            a.add(r11, r10)?;
            a.dec(ecx)?;
            a.jnz(back)?;
            a.hlt()?;
            a.set_label(&mut back)?;
            a.mov(rdx, CODE)?;
            a.jmp(rdx)
        });
        w.asm(CODE, &|a| {
            a.add(r8d, 0x0101_0101)?;
            a.mov(dword_ptr(CODE + 0x102), ecx)?;
            a.jmp(CODE + 0x100)
        });
        w.cpu.gpr[reg::RCX] = 500;
        w.cpu.rip = CODE;
    });
    assert!(w.cpu.halted);
}
