//! Hammocks (a Jcc over one register instruction, translated without a
//! branch together with the block after it) against the interpreter.

use std::collections::BTreeSet;
use std::sync::Arc;

use hindsight_cpu::debug::{DebugHit, DebugSet};
use hindsight_cpu::flags;
use hindsight_cpu::state::reg;
use hindsight_cpu::testutil::{TestMode, CODE, DATA};
use hindsight_cpu::RunExit;
use iced_x86::code_asm::*;
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};

use super::{cut_at_every_budget, lockstep, random_insn, same, Asm, AsmResult, Rng, World, CHUNKS};
use crate::Jit;

/// The bench guest's CRC-32 bit loop over `bytes` bytes of code (any
/// bytes will do): SHR, JNC over XOR, DEC, JNZ back, all in one block.
fn crc_loop(w: &mut World, bytes: u32) {
    w.asm(CODE, &|a| {
        let (mut byte, mut bit, mut nox) = (a.create_label(), a.create_label(), a.create_label());
        a.mov(r13d, u32::MAX)?;
        a.xor(esi, esi)?;
        a.set_label(&mut byte)?;
        a.movzx(eax, byte_ptr(rsi + CODE as i32))?;
        a.xor(r13d, eax)?;
        a.mov(r8d, 8u32)?;
        a.set_label(&mut bit)?;
        a.shr(r13d, 1)?;
        a.jnc(nox)?;
        a.xor(r13d, 0xEDB8_8320u32 as i32)?;
        a.set_label(&mut nox)?;
        a.dec(r8d)?;
        a.jnz(bit)?;
        a.inc(esi)?;
        a.cmp(esi, bytes)?;
        a.jb(byte)?;
        a.not(r13d)?;
        a.hlt()
    });
    w.cpu.rip = CODE;
}

/// The address of the first instruction at `CODE` that `pick` accepts.
fn ip_of(w: &World, pick: impl Fn(&Instruction) -> bool) -> u64 {
    let code = &w.bus.ram[CODE as usize..CODE as usize + 0x100];
    Decoder::with_ip(64, code, CODE, DecoderOptions::NONE)
        .into_iter()
        .find(|i| pick(i))
        .map(|i| i.ip())
        .expect("the instruction is there")
}

/// CRC-32 (reflected, polynomial 0xEDB88320) of `data`.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn the_crc_bit_loop_matches_the_interpreter() {
    for threshold in [1, 16] {
        let w = lockstep(TestMode::Long64, threshold, CHUNKS, 1 << 20, &|w| {
            crc_loop(w, 64)
        });
        assert!(w.cpu.halted);
        let code: Vec<u8> = (0..64).map(|i| w.bus.ram[CODE as usize + i]).collect();
        assert_eq!(w.cpu.gpr[13] as u32, crc32(&code));
        let s = w.stats();
        assert!(s.hammocks > 0, "the bit loop is one block: {s:?}");
        assert!(s.chained > 400, "which loops on itself: {s:?}");
    }
    cut_at_every_budget(&|w| crc_loop(w, 8), 9, 3000, CHUNKS, 1 << 16);
}

/// The Jcc conditions, each as an assembler call.
fn jcc(a: &mut Asm, cc: u64, to: CodeLabel) -> AsmResult {
    match cc % 16 {
        0 => a.jo(to),
        1 => a.jno(to),
        2 => a.jb(to),
        3 => a.jae(to),
        4 => a.je(to),
        5 => a.jne(to),
        6 => a.jbe(to),
        7 => a.ja(to),
        8 => a.js(to),
        9 => a.jns(to),
        10 => a.jp(to),
        11 => a.jnp(to),
        12 => a.jl(to),
        13 => a.jge(to),
        14 => a.jle(to),
        _ => a.jg(to),
    }
}

/// A loop around random register code with a Jcc (every condition) over
/// one random instruction in the middle (undoable or not), run with small
/// and irregular budgets.
#[test]
fn random_hammocks_match_the_interpreter() {
    let mut r = Rng(0x5eed_4a33_0c4e_11aa);
    let mut hammocks = 0;
    for case in 0..400 {
        let before = r.below(4) as usize;
        let after = r.below(4) as usize;
        let seed = r.next();
        let cc = r.next();
        let gpr: Vec<u64> = (0..16).map(|_| r.next()).collect();
        let fl = r.next() & flags::STATUS;
        let build = move |w: &mut World| {
            w.asm(CODE, &|a| {
                let mut rr = Rng(seed | 1);
                let (mut top, mut skip) = (a.create_label(), a.create_label());
                a.mov(r12d, 40u32)?;
                a.set_label(&mut top)?;
                for _ in 0..before {
                    random_insn(a, &mut rr)?;
                }
                jcc(a, cc, skip)?;
                random_insn(a, &mut rr)?;
                a.set_label(&mut skip)?;
                for _ in 0..after {
                    random_insn(a, &mut rr)?;
                }
                a.dec(r12d)?;
                a.jnz(top)?;
                a.hlt()
            });
            w.cpu.gpr.copy_from_slice(&gpr);
            w.cpu.gpr[reg::RSP] = DATA;
            w.cpu.rflags = flags::FIXED | fl;
            w.cpu.rip = CODE;
        };
        let chunks: &[u64] = if case % 4 == 0 {
            &[1, 2, 3, 5, 7]
        } else {
            CHUNKS
        };
        let w = lockstep(TestMode::Long64, 2, chunks, 1 << 20, &build);
        assert!(w.cpu.halted, "case {case}");
        hammocks += w.stats().hammocks;
    }
    assert!(hammocks > 200, "most cases make a hammock: {hammocks}");
}

#[test]
fn a_breakpoint_on_the_skipped_instruction_stops_there() {
    // The XOR the JNC skips is in the tail of the loop's translation.
    let xor_at = {
        let mut w = World::new(TestMode::Long64, None);
        crc_loop(&mut w, 64);
        ip_of(&w, |i| {
            i.mnemonic() == Mnemonic::Xor && i.op_count() == 2 && i.immediate(1) != 0
        })
    };
    let mut worlds = [
        World::new(TestMode::Long64, None),
        World::new(TestMode::Long64, Some(Jit::with_threshold(1))),
    ];
    for w in &mut worlds {
        crc_loop(w, 64);
        assert_eq!(w.run_to(2000), RunExit::Limit);
        let set = DebugSet {
            breakpoints: BTreeSet::from([xor_at]),
            watchpoints: Vec::new(),
        };
        w.cpu.set_debug(Some(Arc::new(set)));
        assert_eq!(w.run(1 << 20), RunExit::Exit);
        assert_eq!(w.cpu.debug.hit, Some(DebugHit::Breakpoint { addr: xor_at }));
        assert_eq!(w.cpu.rip, xor_at);
    }
    same(&worlds[0], &worlds[1], "at the breakpoint");
    assert!(worlds[1].stats().hammocks > 0);
}

#[test]
fn rewriting_the_skipped_instruction_retires_the_translation() {
    // Every 16th round rewrites the XOR's immediate, on the block's page.
    let w = lockstep(TestMode::Long64, 1, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let (mut top, mut skip, mut same_imm) =
                (a.create_label(), a.create_label(), a.create_label());
            a.mov(ecx, 600u32)?;
            a.set_label(&mut top)?;
            a.test(ecx, 4u32)?; // F7 C1 imm32
            a.je(skip)?; // 74 rel8
            a.xor(r8d, 0x1234_5678)?; // 41 81 F0 imm32: the immediate at +3
            a.set_label(&mut skip)?;
            a.add(r9, r8)?;
            a.test(ecx, 15u32)?;
            a.jne(same_imm)?;
            a.inc(dword_ptr(CODE + 5 + 6 + 2 + 3))?;
            a.set_label(&mut same_imm)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.hlt()
        });
        w.cpu.rip = CODE;
    });
    assert!(w.cpu.halted);
    assert!(w.stats().hammocks > 1, "made again after each rewrite");
}
