//! The inline TLB fast path for memory operands against the interpreter:
//! hits, misses, page crossings, faults, stores to code, watched and
//! clean (dirty-tracked) pages.

use std::sync::Arc;

use hindsight_cpu::debug::{DebugHit, DebugSet, WatchKind, Watchpoint};
use hindsight_cpu::fault::vector;
use hindsight_cpu::state::reg;
use hindsight_cpu::testutil::{fault_of, TestMode, CODE, DATA, GDT};
use iced_x86::code_asm::*;

use super::{lockstep, same, World, CHUNKS};
use crate::Jit;

/// A loop over every inlined memory form, in every size, ending in HLT.
fn mem_loop(w: &mut World) {
    w.asm(CODE, &|a| {
        let mut top = a.create_label();
        let mut var = a.create_label();
        a.mov(ecx, 500u32)?;
        a.mov(rbx, DATA)?;
        a.xor(esi, esi)?;
        a.set_label(&mut top)?;
        a.mov(qword_ptr(rbx), rcx)?;
        a.mov(dword_ptr(rbx + 8), ecx)?;
        a.mov(word_ptr(rbx + rsi * 2 + 12), cx)?;
        a.mov(byte_ptr(rbx + 14), cl)?;
        a.mov(qword_ptr(rbx + 16), -5)?;
        a.mov(dword_ptr(rbx + 24), 0x8765_4321u32)?;
        a.mov(word_ptr(rbx + 28), 0xfedc)?;
        a.mov(byte_ptr(rbx + 30), 0x9a)?;
        a.mov(rax, qword_ptr(rbx + 16))?;
        a.mov(edx, dword_ptr(rbx + 24))?;
        a.mov(dx, word_ptr(rbx + 28))?;
        a.mov(dl, byte_ptr(rbx + 30))?;
        a.movzx(r8d, byte_ptr(rbx + 30))?;
        a.movzx(r9, word_ptr(rbx + 28))?;
        a.movsx(r10, byte_ptr(rbx + 30))?;
        a.movsx(r10w, byte_ptr(rbx + 30))?;
        a.movsx(r11d, word_ptr(rbx + 28))?;
        a.movsxd(r12, dword_ptr(rbx + 24))?;
        a.add(rax, qword_ptr(rbx))?;
        a.sub(edx, dword_ptr(rbx + 8))?;
        a.xor(r8w, word_ptr(rbx + 12))?;
        a.and(r9b, byte_ptr(rbx + 14))?;
        a.add(qword_ptr(rbx + 32), rax)?;
        a.sub(dword_ptr(rbx + 40), 7)?;
        a.or(word_ptr(rbx + 44), dx)?;
        a.xor(byte_ptr(rbx + 46), 0x5a)?;
        a.cmp(dword_ptr(rbx + 40), 0x1000)?;
        a.adc(r13, 0)?;
        a.test(byte_ptr(rbx + 46), cl)?;
        a.adc(r13, 0)?;
        a.cmp(qword_ptr(var), rcx)?;
        a.adc(r13, 0)?;
        a.inc(dword_ptr(rbx + 40))?;
        a.sbb(r13, qword_ptr(rbx + 32))?;
        a.dec(byte_ptr(rbx + 46))?;
        a.adc(word_ptr(rbx + 44), r13w)?;
        a.neg(qword_ptr(rbx + 32))?;
        a.adc(r13b, byte_ptr(rbx + 46))?;
        a.not(word_ptr(rbx + 44))?;
        a.inc(qword_ptr(rbx + rsi * 8 + 48))?;
        a.sbb(dword_ptr(rbx + 40), 3)?;
        a.push(rax)?;
        a.push(0x1234_5678)?;
        a.push(rsp)?;
        a.pop(r14)?;
        a.pop(r15)?;
        a.pop(rdx)?;
        a.lea(rax, qword_ptr(rbx + 64))?;
        a.mov(dword_ptr(eax), ecx)?; // 32-bit address size
        a.add(r13d, dword_ptr(eax))?;
        a.add(r13, qword_ptr(rsp - 8))?;
        a.xor(esi, 1)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()?;
        a.set_label(&mut var)?;
        a.dq(&[250])
    });
    w.cpu.rip = CODE;
}

#[test]
fn memory_forms_match_the_interpreter() {
    for threshold in [0, 1, 16] {
        let w = lockstep(TestMode::Long64, threshold, CHUNKS, 1 << 20, &mem_loop);
        assert!(w.cpu.halted);
        let s = w.stats();
        assert!(s.inlined * 10 > s.insns * 9, "nearly all inlined: {s:?}");
    }
    // Budgets cutting the loop at every point.
    for step in [1, 2, 3, 5, 11] {
        lockstep(TestMode::Long64, 0, &[step], 4000, &mem_loop);
    }
}

#[test]
fn fs_and_gs_bases_and_privilege() {
    let w = lockstep(TestMode::Long64, 0, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.mov(ecx, 300u32)?;
            a.set_label(&mut top)?;
            a.mov(rax, qword_ptr(0x10).fs())?;
            a.add(qword_ptr(0x18).gs(), rax)?;
            a.mov(dword_ptr(rcx * 4 + 0x1000).fs(), ecx)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.hlt()
        });
        w.cpu.seg[4].base = DATA;
        w.cpu.seg[5].base = DATA + 0x3000;
        w.bus.put(DATA + 0x10, 8, 3);
        w.cpu.rip = CODE;
    });
    assert!(w.cpu.halted);
    assert_eq!(w.bus.read(DATA + 0x3018, 8), 900);
}

#[test]
fn page_crossing_accesses_take_the_handler() {
    let w = lockstep(TestMode::Long64, 0, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.mov(ecx, 300u32)?;
            a.mov(rbx, DATA + 0xff8)?;
            a.set_label(&mut top)?;
            a.mov(qword_ptr(rbx + rcx), rcx)?;
            a.add(rax, qword_ptr(rbx + rcx))?;
            a.push(rax)?;
            a.pop(rdx)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.hlt()
        });
        w.cpu.gpr[reg::RSP] = DATA + 0x2004; // pushes cross 0x2000
        w.cpu.rip = CODE;
    });
    assert!(w.cpu.halted);
}

#[test]
fn an_access_into_an_unmapped_page_faults_though_its_first_page_is_mapped() {
    // The 2 MiB page at 0x60_0000 is not present. Each access first hits
    // the page below it (filling its TLB entries), then crosses into it:
    // a load, then (once the load's fault is skipped) a store, a push.
    for form in 0..3 {
        let w = lockstep(TestMode::Long64, 0, &[100_000], 1 << 20, &|w| {
            w.bus.put(0x22000 + 8 * 3, 8, 0);
            w.asm(CODE, &|a| {
                let mut top = a.create_label();
                a.mov(ecx, 50u32)?;
                a.set_label(&mut top)?;
                a.mov(rax, qword_ptr(0x5f_f000))?;
                a.mov(qword_ptr(0x5f_f008), rax)?;
                a.dec(ecx)?;
                a.jnz(top)?;
                match form {
                    0 => a.mov(rax, qword_ptr(0x5f_fffc))?,
                    1 => a.mov(dword_ptr(0x5f_fffd), eax)?,
                    _ => {
                        a.mov(rsp, 0x60_0006u64)?;
                        a.push(rax)?;
                    }
                }
                a.hlt()
            });
            w.cpu.rip = CODE;
        });
        assert_eq!(
            fault_of(&w.cpu, &w.bus).map(|f| f.0),
            Some(vector::PF),
            "form {form}"
        );
        assert_eq!(w.cpu.cr2, 0x60_0000, "form {form}");
    }
}

#[test]
fn store_faults_are_precise() {
    // #PF on a store once RDI leaves the mapped gigabyte; before that the
    // stores go to MMIO (never in the TLB).
    let w = lockstep(TestMode::Long64, 1, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            a.inc(r9)?;
            a.add(dword_ptr(rdi + 4), 1)?;
            a.mov(qword_ptr(rdi), rdi)?;
            a.add(rdi, 0x10_0000)?;
            a.jmp(top)
        });
        w.cpu.rip = CODE;
        w.cpu.gpr[reg::RDI] = 0x4000_0000 - 30 * 0x10_0000;
    });
    let f = fault_of(&w.cpu, &w.bus).expect("a fault");
    assert_eq!((f.0, f.2), (vector::PF, CODE + 3));
    assert_eq!(w.cpu.cr2, 0x4000_0004);
    assert_eq!(w.bus.mmio.len(), 30 * 3);
    // Non-canonical: #GP from the handler.
    let w = lockstep(TestMode::Long64, 0, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            a.mov(rax, qword_ptr(rsi))?;
            a.add(rsi, rdx)?;
            a.jmp(top)
        });
        w.cpu.rip = CODE;
        w.cpu.gpr[reg::RSI] = DATA;
        w.cpu.gpr[reg::RDX] = 0x8000_0000_0000;
    });
    assert_eq!(fault_of(&w.cpu, &w.bus).map(|f| f.0), Some(vector::GP));
}

#[test]
fn stores_to_own_code_invalidate_it() {
    let w = lockstep(TestMode::Long64, 1, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.mov(ecx, 200u32)?;
            a.set_label(&mut top)?;
            a.mov(eax, 0u32)?; // B8 imm32: the immediate at top + 1
            a.add(r8, rax)?;
            a.add(dword_ptr(CODE + 5 + 1), 1)?;
            a.mov(dword_ptr(rbx), ecx)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.hlt()
        });
        w.cpu.gpr[reg::RBX] = DATA;
        w.cpu.rip = CODE;
    });
    assert!(w.cpu.halted);
    assert_eq!(w.cpu.gpr[8], (0..200).sum::<u64>());
}

#[test]
fn clean_pages_see_every_store() {
    let w = lockstep(TestMode::Long64, 0, CHUNKS, 1 << 20, &|w| {
        mem_loop(w);
        w.bus.uncached.insert(DATA);
    });
    assert!(w.cpu.halted);
    let mut a = World::new(TestMode::Long64, None);
    let mut b = World::new(TestMode::Long64, Some(Jit::with_threshold(0)));
    for w in [&mut a, &mut b] {
        mem_loop(w);
        w.bus.uncached.insert(DATA);
        w.run_to(1 << 20);
    }
    same(&a, &b, "at the end");
    assert_eq!(a.bus.ram_page_mut_calls, b.bus.ram_page_mut_calls);
    assert!(b.bus.ram_page_mut_calls > 500 * 10);
}

#[test]
fn watched_pages_stop_like_the_interpreter() {
    for (kind, addr) in [
        (WatchKind::Write, DATA + 40),
        (WatchKind::Read, DATA + 24),
        (WatchKind::Access, DATA + 0x800),
    ] {
        let mut worlds = [
            World::new(TestMode::Long64, None),
            World::new(TestMode::Long64, Some(Jit::with_threshold(0))),
        ];
        for w in &mut worlds {
            mem_loop(w);
            w.run_to(3000);
            let set = DebugSet {
                breakpoints: Default::default(),
                watchpoints: vec![Watchpoint { addr, len: 4, kind }],
            };
            w.cpu.set_debug(Some(Arc::new(set)));
            w.run_to(3000 + 500);
        }
        same(&worlds[0], &worlds[1], "after the watch");
        let hit = worlds[1].cpu.debug.hit;
        assert_eq!(worlds[0].cpu.debug.hit, hit);
        match kind {
            WatchKind::Access => assert!(hit.is_none()),
            _ => assert!(matches!(hit, Some(DebugHit::Watch { .. })), "{hit:?}"),
        }
    }
}

/// A 32-bit loop over the memory forms, through DS, SS (EBP base) and FS;
/// with `switch`, DS is loaded with the 64 KiB data segment at ECX = 100,
/// so the next access through it must fault (#GP) as in the interpreter.
fn mem_loop32(w: &mut World, switch: bool) {
    w.asm(CODE, &|a| {
        let mut top = a.create_label();
        let mut keep = a.create_label();
        a.mov(ecx, 300u32)?;
        a.mov(ebx, DATA as u32)?;
        a.mov(ebp, DATA as u32 + 0x100)?;
        a.set_label(&mut top)?;
        a.mov(dword_ptr(ebx), ecx)?;
        a.mov(word_ptr(ebx + esi * 2 + 6), cx)?;
        a.mov(byte_ptr(ebp + 8), cl)?;
        a.mov(eax, dword_ptr(ebx))?;
        a.movzx(edx, byte_ptr(ebp + 8))?;
        a.movsx(edi, word_ptr(ebx + 6))?;
        a.add(dword_ptr(ebx + 16), eax)?;
        a.sub(eax, dword_ptr(ebx + 16))?;
        a.cmp(dword_ptr(ebx + 16), 0x1000)?;
        a.cmovb(edi, dword_ptr(ebx + 16))?;
        a.setl(byte_ptr(ebx + 20))?;
        a.imul_3(esi, dword_ptr(ebx + 16), 3)?;
        a.and(esi, 1)?;
        a.add(eax, dword_ptr(0x10).fs())?;
        a.mov(dword_ptr(0x14).fs(), eax)?;
        if switch {
            a.cmp(ecx, 100)?;
            a.jne(keep)?;
            a.mov(eax, 0x28u32)?;
            a.mov(ds, ax)?;
        }
        a.set_label(&mut keep)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()
    });
    w.cpu.seg[4].base = DATA + 0x2000;
    w.cpu.gpr[reg::RSI] = 0;
    w.cpu.rip = CODE;
}

#[test]
fn flat_32bit_segments_take_the_fast_path() {
    for threshold in [0, 1, 16] {
        let w = lockstep(TestMode::Protected32, threshold, CHUNKS, 1 << 20, &|w| {
            mem_loop32(w, false)
        });
        assert!(w.cpu.halted);
        let s = w.stats();
        assert!(s.inlined * 10 > s.insns * 9, "nearly all inlined: {s:?}");
    }
    for step in [1, 2, 3, 5, 11] {
        lockstep(TestMode::Protected32, 0, &[step], 4000, &|w| {
            mem_loop32(w, false)
        });
    }
    // DS changes under a translated block: the next access through it
    // takes the handler and faults on the 64 KiB limit.
    let w = lockstep(TestMode::Protected32, 0, CHUNKS, 1 << 20, &|w| {
        mem_loop32(w, true)
    });
    assert_eq!(fault_of(&w.cpu, &w.bus).map(|f| f.0), Some(vector::GP));
    // The same with a read-only flat data segment at selector 0x28: the
    // loads through DS still take the fast path, the first store faults.
    let w = lockstep(TestMode::Protected32, 0, CHUNKS, 1 << 20, &|w| {
        mem_loop32(w, true);
        w.bus.put(GDT + 0x28, 8, 0x00cf_9100_0000_ffff);
    });
    assert_eq!(fault_of(&w.cpu, &w.bus).map(|f| f.0), Some(vector::GP));
    assert_eq!(w.cpu.gpr[reg::RCX], 99, "in the iteration after the switch");
    // A non-flat FS limit: its accesses take the handler.
    let w = lockstep(TestMode::Protected32, 0, CHUNKS, 1 << 20, &|w| {
        mem_loop32(w, false);
        w.cpu.seg[4].limit = 0x3fff;
    });
    assert!(w.cpu.halted);
}

/// LOCK-prefixed read-modify-writes (what Linux's atomics compile to) are
/// inlined like the plain ones, with exact flags; a locked access to an
/// unmapped page faults precisely.
#[test]
fn locked_read_modify_writes_match_the_interpreter() {
    let w = lockstep(TestMode::Long64, 0, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.mov(ecx, 500u32)?;
            a.mov(rbx, DATA + 0x100)?;
            a.set_label(&mut top)?;
            a.lock().add(qword_ptr(rbx), rcx)?;
            a.lock().sub(dword_ptr(rbx + 8), 7)?;
            a.lock().xor(word_ptr(rbx + 16), cx)?;
            a.lock().or(byte_ptr(rbx + 20), cl)?;
            a.lock().and(qword_ptr(rbx + 24), rcx)?;
            a.lock().inc(dword_ptr(rbx + 28))?;
            a.lock().dec(qword_ptr(rbx + 32))?;
            a.lock().adc(word_ptr(rbx + 40), cx)?;
            a.lock().sbb(byte_ptr(rbx + 42), 3)?;
            a.lock().neg(dword_ptr(rbx + 44))?;
            a.lock().not(qword_ptr(rbx + 48))?;
            a.dec(ecx)?;
            a.jnz(top)?;
            // Locked, to an unmapped page: #PF at the instruction.
            a.mov(rbx, 0x7fff_0000_0000u64)?;
            a.lock().add(qword_ptr(rbx), rcx)?;
            a.hlt()
        });
        w.bus.put(DATA + 0x118, 8, u64::MAX);
        w.cpu.rip = CODE;
    });
    assert_eq!(fault_of(&w.cpu, &w.bus).map(|f| f.0), Some(vector::PF));
    let s = w.stats();
    assert!(s.inlined * 10 > s.insns * 8, "locked forms inlined: {s:?}");
}
