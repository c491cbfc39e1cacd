//! CALL/RET inline, chained and indirect exits against the interpreter.

use hindsight_cpu::fault::vector;
use hindsight_cpu::state::reg;
use hindsight_cpu::testutil::{fault_of, TestMode, CODE, DATA};
use iced_x86::code_asm::*;

use super::{alu_loop, lockstep, same, World, CHUNKS};
use crate::Jit;

/// Calls, nested calls and returns in a loop; the stack starts misaligned
/// so some pushes and pops straddle a page boundary.
fn call_loop(w: &mut World, stack: u64) {
    w.asm(CODE, &|a| {
        let (mut top, mut f, mut g) = (a.create_label(), a.create_label(), a.create_label());
        a.mov(ecx, 700u32)?;
        a.set_label(&mut top)?;
        a.call(f)?;
        a.call(g)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()?;
        a.set_label(&mut f)?;
        a.add(rax, rcx)?;
        a.ret()?;
        a.set_label(&mut g)?;
        a.push(rcx)?;
        a.call(f)?;
        a.pop(rcx)?;
        a.xor(rdx, rax)?;
        a.ret()
    });
    w.cpu.gpr[reg::RSP] = stack;
    w.cpu.rip = CODE;
}

#[test]
fn calls_and_returns_match_the_interpreter() {
    for stack in [DATA + 0x1000, DATA + 0x1004, DATA + 0x1010] {
        for threshold in [0, 1, 16] {
            let w = lockstep(TestMode::Long64, threshold, CHUNKS, 1 << 20, &|w| {
                call_loop(w, stack)
            });
            assert!(w.cpu.halted);
            if stack == DATA + 0x1000 {
                let s = w.stats();
                assert!(s.chained > s.native_runs, "mostly chained: {s:?}");
            }
        }
    }
    for step in [1, 2, 3, 7, 50] {
        lockstep(TestMode::Long64, 0, &[step], 20_000, &|w| {
            call_loop(w, DATA)
        });
    }
}

#[test]
fn return_and_call_faults_are_precise() {
    // RET to a non-canonical address: #GP at the RET.
    let w = lockstep(TestMode::Long64, 0, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let (mut top, mut back) = (a.create_label(), a.create_label());
            a.set_label(&mut top)?;
            a.lea(rax, qword_ptr(back))?;
            a.cmp(rdx, 50)?;
            a.cmovae(rax, rbx)?;
            a.push(rax)?;
            a.ret()?;
            a.set_label(&mut back)?;
            a.inc(rdx)?;
            a.jmp(top)
        });
        w.cpu.gpr[reg::RBX] = 0x8000_0000_0000;
        w.cpu.rip = CODE;
    });
    assert_eq!(fault_of(&w.cpu, &w.bus).map(|f| f.0), Some(vector::GP));
    // CALL pushing into an unmapped page: #PF at the CALL (lockstep
    // compares the state the escalation leaves).
    let w = lockstep(TestMode::Long64, 0, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let (mut top, mut f) = (a.create_label(), a.create_label());
            a.set_label(&mut top)?;
            a.sub(rsp, 0x10_0000)?;
            a.call(f)?;
            a.jmp(top)?;
            a.set_label(&mut f)?;
            a.ret()
        });
        w.cpu.gpr[reg::RSP] = 0x4000_0000 - 20 * 0x10_0000 + 0x100_0000;
        w.cpu.rip = CODE;
    });
    // The #PF frame cannot be pushed either: the same escalation in both.
    assert!(w.cpu.gpr[reg::RSP] < 0x4000_0000 + 0x100_0000);
}

#[test]
fn code_rewritten_between_runs_is_not_entered_chained() {
    let mut a = World::new(TestMode::Long64, None);
    let mut b = World::new(TestMode::Long64, Some(Jit::with_threshold(0)));
    for w in [&mut a, &mut b] {
        alu_loop(w);
        w.run_to(5000);
        // The host rewrites the loop's first instruction (mov ecx, imm
        // stays; the next, mov rax, imm64, gets a new immediate).
        let bytes = w.asm(CODE + 5, &|a| a.mov(rax, 0x1111_2222_3333_4444u64));
        assert_eq!(bytes.len(), 10);
        w.run_to(1 << 20);
    }
    same(&a, &b, "after the rewrite");
    // Code rewritten by the guest in a chained successor block.
    let w = lockstep(TestMode::Long64, 0, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let (mut top, mut mid) = (a.create_label(), a.create_label());
            a.mov(ecx, 300u32)?;
            a.set_label(&mut top)?;
            a.mov(eax, 0u32)?; // the immediate at top + 1 = CODE + 6
            a.add(r8, rax)?;
            a.jmp(mid)?;
            a.set_label(&mut mid)?;
            a.add(dword_ptr(CODE + 6), 1)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.hlt()
        });
        w.cpu.rip = CODE;
    });
    assert!(w.cpu.halted);
    assert_eq!(w.cpu.gpr[8], (0..300).sum::<u64>());
}

/// JMP and CALL through a register (a jump table and a function pointer)
/// continue into their targets natively; a non-canonical target faults
/// (#GP) at the branch; a CALL whose push faults (#PF) is precise.
#[test]
fn register_jumps_and_calls_match_the_interpreter() {
    let w = lockstep(TestMode::Long64, 0, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let (mut top, mut f, mut even, mut join) = (
                a.create_label(),
                a.create_label(),
                a.create_label(),
                a.create_label(),
            );
            a.mov(ecx, 900u32)?;
            a.set_label(&mut top)?;
            a.lea(rbx, qword_ptr(f))?;
            a.call(rbx)?;
            a.lea(rax, qword_ptr(even))?;
            a.lea(rdx, qword_ptr(join))?;
            a.test(ecx, 1)?;
            a.cmovnz(rax, rdx)?;
            a.jmp(rax)?;
            a.set_label(&mut even)?;
            a.add(r10, 3)?;
            a.set_label(&mut join)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            // Non-canonical: #GP at the JMP (the handler halts).
            a.mov(rax, 0x8000_0000_0000u64)?;
            a.jmp(rax)?;
            a.set_label(&mut f)?;
            a.add(r11, rcx)?;
            a.ret()
        });
        w.cpu.gpr[reg::RSP] = DATA + 0x1000;
        w.cpu.rip = CODE;
    });
    assert_eq!(fault_of(&w.cpu, &w.bus).map(|f| f.0), Some(vector::GP));
    let s = w.stats();
    assert!(s.chained > s.native_runs, "mostly chained: {s:?}");
    // A push to an unmapped stack: #PF at the CALL (lockstep compares the
    // state its escalation leaves).
    lockstep(TestMode::Long64, 0, CHUNKS, 1 << 16, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.mov(ecx, 40u32)?;
            a.set_label(&mut top)?;
            a.lea(rbx, qword_ptr(top))?;
            a.dec(ecx)?;
            a.cmovz(rsp, rdx)?;
            a.call(rbx)?;
            a.hlt()
        });
        w.cpu.gpr[reg::RSP] = DATA + 0x2000;
        w.cpu.gpr[reg::RDX] = 0x7fff_0000_0000;
        w.cpu.rip = CODE;
    });
}

#[test]
fn a_return_into_a_remapped_page_does_not_take_its_inline_cache() {
    // A function returns to code at 0x60_1000; then the page tables map
    // that page elsewhere (other code there) and CR3 is reloaded: the RET's
    // inline cache, linked to the old code, must not be taken.
    let caller = |marker: AsmRegister64, last: bool| {
        let mut a = CodeAssembler::new(64).expect("64-bit");
        let mut top = a.create_label();
        a.set_label(&mut top).expect("label");
        a.call(CODE + 0x200).expect("call");
        a.add(marker, 1).expect("add");
        a.dec(ecx).expect("dec");
        a.jnz(top).expect("jnz");
        if last {
            a.hlt().expect("hlt");
        } else {
            a.jmp(CODE + 0x100).expect("jmp");
        }
        a.assemble(0x60_1000).expect("assemble")
    };
    let w = lockstep(TestMode::Long64, 0, CHUNKS, 1 << 20, &|w| {
        w.bus.write(0x60_1000, &caller(r8, false));
        // Physical 0xa0_1000: the same code marking R9, and it halts.
        w.bus.write(0xa0_1000, &caller(r9, true));
        w.asm(CODE, &|a| {
            a.mov(ecx, 40u32)?;
            a.jmp(0x60_1000u64)
        });
        w.asm(CODE + 0x100, &|a| {
            a.mov(rax, 0xa0_0083u64)?;
            a.mov(qword_ptr(0x22000 + 8 * 3), rax)?;
            a.mov(rax, cr3)?;
            a.mov(cr3, rax)?;
            a.mov(ecx, 40u32)?;
            a.jmp(0x60_1000u64)
        });
        w.asm(CODE + 0x200, &|a| {
            a.add(r10, 1)?;
            a.ret()
        });
        w.cpu.rip = CODE;
    });
    assert!(w.cpu.halted);
    assert_eq!((w.cpu.gpr[8], w.cpu.gpr[9], w.cpu.gpr[10]), (40, 40, 80));
}
