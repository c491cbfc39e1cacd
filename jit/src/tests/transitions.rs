//! Dead-flag elimination, fused compare-and-branch and the cheap chained
//! transitions against the interpreter.

use hindsight_cpu::fault::vector;
use hindsight_cpu::flags;
use hindsight_cpu::state::reg;
use hindsight_cpu::testutil::{fault_of, TestMode, CODE, DATA};
use iced_x86::code_asm::*;

use super::{cut_at_every_budget, halts_chained, lockstep, World, CHUNKS};

/// Flags written by one instruction and read after later ones that leave
/// them alone (INC/DEC keep CF, a shift by CL may write nothing, MOV and
/// LEA write none), by inlined Jcc, by handlers (ADC, SETcc, PUSHF) and at
/// block exits; each Jcc also follows its flag writer directly (fused).
fn flag_loop(w: &mut World) {
    w.asm(CODE, &|a| {
        let (mut top, mut skip, mut odd, mut join) = (
            a.create_label(),
            a.create_label(),
            a.create_label(),
            a.create_label(),
        );
        a.mov(esi, 3000u32)?;
        a.mov(eax, 0x8000_0001u32)?;
        a.mov(ebx, 0x7fff_fff3u32)?;
        a.set_label(&mut top)?;
        a.add(eax, ebx)?; // CF survives the INC below
        a.inc(ecx)?;
        a.mov(edx, ecx)?;
        a.jc(skip)?;
        a.add(r8, 1)?;
        a.set_label(&mut skip)?;
        a.sub(ebx, 0x1111)?; // flags dead: the XOR overwrites all
        a.lea(r9, qword_ptr(rax + rbx))?;
        a.xor(r10d, eax)?;
        a.adc(r11, 0)?; // handler: reads CF (cleared by XOR)
        a.cmp(eax, ebx)?;
        a.mov(cl, dl)?;
        a.and(cl, 3)?; // writes flags; the shift below may not (CL = 0)
        a.cmp(r9d, r10d)?;
        a.shl(edx, cl)?;
        a.setb(r12b)?; // CMP's CF when CL was 0
        a.mov(r13d, eax)?; // MSB set every other round
        a.shr(r13d, 3)?;
        a.jo(odd)?; // OF of a multi-bit shift: not fused
        a.add(r14, rdx)?;
        a.set_label(&mut odd)?;
        a.dec(r15d)?;
        a.pushfq()?; // observes every flag
        a.pop(rdi)?;
        a.add(qword_ptr(DATA), rdi)?;
        a.test(esi, 1)?;
        a.jnz(join)?;
        a.sar(r13d, 1)?;
        a.inc(r13d)?;
        a.set_label(&mut join)?;
        a.dec(esi)?;
        a.jg(top)?;
        a.hlt()
    });
    w.cpu.rip = CODE;
}

#[test]
fn flags_live_across_instructions_that_keep_them() {
    halts_chained(&flag_loop);
}

#[test]
fn budgets_cut_exactly_between_chained_blocks() {
    cut_at_every_budget(&flag_loop, 9, 4000, &[17, 1, 4, 63, 2, 500], 100_000);
}

#[test]
fn faults_after_skipped_flag_writes_see_exact_rflags() {
    // #DE in DIV's handler once R13 reaches 0; the instructions before it
    // wrote flags later ones partly overwrite (the fault frame holds the
    // RFLAGS the interpreter has).
    let w = lockstep(TestMode::Long64, 1, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.mov(r13d, 60u32)?;
            a.set_label(&mut top)?;
            a.add(r11d, 0x7654_3210)?; // OF, CF...: overwritten below but CF
            a.sub(ecx, 7)?;
            a.inc(r12d)?;
            a.mov(eax, 1000u32)?;
            a.xor(edx, edx)?; // dead flags: DEC below overwrites all but CF
            a.dec(r9d)?;
            a.div(r13d)?;
            a.sub(r13d, 1)?;
            a.jmp(top)
        });
        w.cpu.rip = CODE;
    });
    assert_eq!(fault_of(&w.cpu, &w.bus).map(|f| f.0), Some(vector::DE));
    // #PF on a load that takes the slow path, after skipped writes.
    let w = lockstep(TestMode::Long64, 1, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            a.add(r11, rsi)?;
            a.xor(r10d, 0x55)?; // its flags are overwritten by the INC but CF
            a.inc(r9)?;
            a.mov(eax, dword_ptr(rsi))?;
            a.add(rsi, 0x10_0000)?;
            a.jmp(top)
        });
        w.cpu.rip = CODE;
        w.cpu.gpr[reg::RSI] = 0x4000_0000 - 30 * 0x10_0000;
    });
    assert_eq!(fault_of(&w.cpu, &w.bus).map(|f| f.0), Some(vector::PF));
}

#[test]
fn a_chain_whose_target_is_rewritten_midway() {
    // Blocks A -> B -> C chained; A rewrites C's immediate every round
    // (which ends A), then B continues into C through its link made in
    // an earlier round (C on the same page and, second, on another).
    for c_at in [CODE + 0x40, CODE + 0x2000] {
        let w = lockstep(TestMode::Long64, 0, CHUNKS, 1 << 20, &|w| {
            w.asm(c_at, &|a| {
                let mut back = a.create_label();
                a.mov(eax, 0u32)?; // the immediate at c_at + 1
                a.add(r8, rax)?;
                a.dec(ecx)?;
                a.jnz(back)?;
                a.hlt()?;
                a.set_label(&mut back)?;
                a.mov(rdx, CODE)?;
                a.jmp(rdx)
            });
            w.asm(CODE, &|a| {
                let mut b = a.create_label();
                a.inc(r9)?; // A (its block ends at the store)
                a.add(dword_ptr(c_at + 1), 3)?;
                a.jmp(b)?;
                a.set_label(&mut b)?;
                a.add(r10, r9)?; // B, linked to C before the store
                a.jmp(c_at)
            });
            w.cpu.gpr[reg::RCX] = 400;
            w.cpu.rip = CODE;
        });
        assert!(w.cpu.halted);
        assert_eq!(w.cpu.gpr[8], (1..=400).map(|i| 3 * i).sum::<u64>());
    }
}

/// Second page tables: as the first, but the 2 MiB page at 0x60_0000 maps
/// to physical 0xa0_0000 (other code at the same linear address).
fn second_address_space(w: &mut World) -> u64 {
    let (pml4, pdpt, pd) = (0x24000u64, 0x25000u64, 0x26000u64);
    w.bus.put(pml4, 8, pdpt | 7);
    w.bus.put(pdpt, 8, pd | 7);
    for i in 0..512u64 {
        w.bus.put(pd + 8 * i, 8, (i << 21) | 0x87);
    }
    w.bus.put(pd + 8 * 3, 8, 0xa0_0000 | 0x87);
    pml4
}

#[test]
fn a_cr3_switch_between_chained_blocks() {
    let w = lockstep(TestMode::Long64, 0, CHUNKS, 1 << 20, &|w| {
        let other = second_address_space(w);
        // The same linear code, two physical copies that differ.
        for (at, add) in [(0x60_0000u64, 1u32), (0xa0_0000, 100)] {
            w.asm(at, &|a| {
                a.add(r8d, add)?;
                a.dec(ecx)?;
                a.jnz(CODE + 0x100)?;
                a.hlt()
            });
        }
        w.asm(CODE, &|a| {
            a.mov(rbx, 0x20000u64 ^ other)?;
            a.mov(ecx, 500u32)?;
            a.jmp(CODE + 0x100)
        });
        // Every fourth round reloads the same CR3 instead of switching.
        w.asm(CODE + 0x100, &|a| {
            let mut same = a.create_label();
            a.mov(rax, cr3)?;
            a.test(ecx, 3)?;
            a.jz(same)?;
            a.xor(rax, rbx)?;
            a.set_label(&mut same)?;
            a.mov(cr3, rax)?;
            a.jmp(CODE + 0x200)
        });
        // Linked to 0x60_0000 in earlier rounds, in either address space.
        w.asm(CODE + 0x200, &|a| {
            a.inc(r9)?;
            a.jmp(0x60_0000u64)
        });
        w.cpu.rip = CODE;
    });
    assert!(w.cpu.halted);
}

#[test]
fn single_step_set_between_chained_blocks() {
    // POPF sets TF in a hot chained loop: from then on the interpreter's
    // debug path runs (the #DB trap goes to the fault stub and halts).
    let w = lockstep(TestMode::Long64, 0, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let (mut top, mut step) = (a.create_label(), a.create_label());
            a.mov(ecx, 300u32)?;
            a.set_label(&mut top)?;
            a.add(r8, rcx)?;
            a.cmp(ecx, 7)?;
            a.je(step)?;
            a.dec(ecx)?;
            a.jmp(top)?;
            a.set_label(&mut step)?;
            a.pushfq()?;
            a.or(qword_ptr(rsp), flags::TF as i32)?;
            a.popfq()?;
            a.dec(ecx)?;
            a.jmp(top)
        });
        w.cpu.rip = CODE;
    });
    assert_eq!(fault_of(&w.cpu, &w.bus).map(|f| f.0), Some(vector::DB));
}

/// IRETQ to CPL 3 at `rip` (64-bit user code, stack below 0x8f_f000).
fn to_user(a: &mut CodeAssembler, rip: u64) -> Result<(), IcedError> {
    a.push(0x3b)?;
    a.push(0x8f_f000)?;
    a.push(2)?;
    a.push(0x43)?;
    a.push(rip as i32)?;
    a.iretq()
}

#[test]
fn a_link_made_at_cpl0_is_not_taken_at_cpl3() {
    // S -> T is linked while the kernel loops; then user code reaches S,
    // whose exit to T (on a supervisor-only page) must fault, not chain.
    let w = lockstep(TestMode::Long64, 0, CHUNKS, 1 << 20, &|w| {
        // The 2 MiB page at 0x60_0000 without the user bit.
        w.bus.put(0x22000 + 8 * 3, 8, (3 << 21) | 0x83);
        w.asm(CODE, &|a| {
            a.mov(ecx, 50u32)?;
            a.jmp(CODE + 0x20)
        });
        w.asm(CODE + 0x20, &|a| a.jmp(CODE + 0x300));
        w.asm(CODE + 0x40, &|a| to_user(a, CODE + 0x100));
        w.asm(CODE + 0x100, &|a| {
            a.inc(r8)?;
            a.jmp(CODE + 0x300)
        });
        w.asm(CODE + 0x300, &|a| {
            a.add(r11, 1)?;
            a.jmp(0x60_1000u64)
        });
        // Not in CODE's TLB slot (an execute-entry conflict would make
        // every lookup walk the tables, and nothing would chain).
        w.asm(0x60_1000, &|a| {
            a.dec(ecx)?;
            a.jnz(CODE + 0x20)?;
            a.jmp(CODE + 0x40)
        });
        w.cpu.rip = CODE;
    });
    assert_eq!(fault_of(&w.cpu, &w.bus).map(|f| f.0), Some(vector::PF));
    assert!(w.stats().chained > 50, "{:?}", w.stats());
    assert_eq!((w.cpu.gpr[8], w.cpu.gpr[11]), (1, 51));
}

#[test]
fn user_code_looks_up_the_user_tlb_arrays() {
    // The kernel reads and writes a supervisor-only page in a hot loop
    // (its TLB arrays then map it), then drops to CPL 3, where the same
    // access in a hot block must fault (the user arrays do not map it).
    // One budget for all: the user block must run natively. (The data
    // page is off TLB slot 0, which IRETQ's descriptor reads reuse.)
    let w = lockstep(TestMode::Long64, 0, &[100_000], 1 << 20, &|w| {
        // The 2 MiB page at 0x60_0000 without the user bit.
        w.bus.put(0x22000 + 8 * 3, 8, (3 << 21) | 0x83);
        w.asm(CODE, &|a| {
            let mut kernel = a.create_label();
            a.mov(ecx, 50u32)?;
            a.set_label(&mut kernel)?;
            a.add(rax, qword_ptr(0x60_5008))?;
            a.mov(qword_ptr(0x60_5010), rax)?;
            a.dec(ecx)?;
            a.jnz(kernel)?;
            to_user(a, CODE + 0x100)
        });
        w.asm(CODE + 0x100, &|a| {
            let mut user = a.create_label();
            a.set_label(&mut user)?;
            a.inc(r8)?;
            a.add(rax, qword_ptr(0x60_5008))?;
            a.jmp(user)
        });
        w.cpu.rip = CODE;
    });
    assert_eq!(fault_of(&w.cpu, &w.bus).map(|f| f.0), Some(vector::PF));
    assert_eq!(w.cpu.gpr[8], 1, "the first user access faults");
}
