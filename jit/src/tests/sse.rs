//! The inlined SSE integer instructions against the interpreter: every
//! form on random XMM values, in random sequences, with memory operands
//! (a #PF precise), and the run-time SSE check (#NM with CR0.TS, #UD
//! without CR4.OSFXSR) at the exact instruction.

use hindsight_cpu::fault::vector;
use hindsight_cpu::state::cr;
use hindsight_cpu::testutil::{fault_of, TestMode, CODE, DATA};
use iced_x86::code_asm::*;

use super::{lockstep, Asm, AsmResult, Rng, World, CHUNKS};

const X: [AsmRegisterXmm; 8] = [xmm0, xmm1, xmm2, xmm5, xmm7, xmm8, xmm13, xmm15];
const Q: [AsmRegister64; 4] = [rax, rdx, r9, r15];
const D: [AsmRegister32; 4] = [eax, edx, r9d, r15d];

/// Forms under test.
const FORMS: u64 = 47;

/// Emits form `f` on XMM registers `x`, `y`, general register `g`, the
/// memory slot at R12 + 8 * `m` and immediate `imm`.
fn form(a: &mut Asm, f: u64, x: usize, y: usize, g: usize, m: i32, imm: u32) -> AsmResult {
    let (x, y) = (X[x], X[y]);
    let mem32 = dword_ptr(r12 + 8 * m);
    let mem64 = qword_ptr(r12 + 8 * m);
    match f {
        0 => a.paddb(x, y),
        1 => a.paddw(x, y),
        2 => a.paddd(x, y),
        3 => a.paddq(x, y),
        4 => a.psubb(x, y),
        5 => a.psubw(x, y),
        6 => a.psubd(x, y),
        7 => a.psubq(x, y),
        8 => a.pand(x, y),
        9 => a.pandn(x, y),
        10 => a.por(x, y),
        11 => a.pxor(x, y),
        12 => a.pcmpeqb(x, y),
        13 => a.pcmpeqw(x, y),
        14 => a.pcmpeqd(x, y),
        15 => a.punpcklbw(x, y),
        16 => a.punpcklwd(x, y),
        17 => a.punpckldq(x, y),
        18 => a.punpcklqdq(x, y),
        19 => a.punpckhbw(x, y),
        20 => a.punpckhwd(x, y),
        21 => a.punpckhdq(x, y),
        22 => a.punpckhqdq(x, y),
        23 => a.pshufb(x, y),
        24 => a.pshufd(x, y, imm & 0xff),
        25 => a.psrlw(x, imm % 20),
        26 => a.psrld(x, imm % 40),
        27 => a.psrlq(x, imm % 70),
        28 => a.psraw(x, imm % 20),
        29 => a.psrad(x, imm % 40),
        30 => a.psllw(x, imm % 20),
        31 => a.pslld(x, imm % 40),
        32 => a.psllq(x, imm % 70),
        33 => a.psrldq(x, imm % 20),
        34 => a.pslldq(x, imm % 20),
        35 => a.movdqa(x, y),
        36 => a.movdqu(x, y),
        37 => a.movaps(x, y),
        38 => a.movups(x, y),
        39 => a.movd(x, D[g]),
        40 => a.movq(x, Q[g]),
        41 => a.movd(D[g], x),
        42 => a.movq(Q[g], x),
        43 => a.movd(x, mem32),
        44 => a.movq(x, mem64),
        45 => a.movq(x, y),
        _ => {
            if imm & 1 == 0 {
                a.movd(mem32, x)
            } else {
                a.movq(mem64, x)
            }
        }
    }
}

/// A random 128-bit value: bytes of edge patterns or random words.
fn value(r: &mut Rng) -> u128 {
    match r.below(4) {
        0 => 0,
        1 => u128::MAX,
        2 => u128::from(r.next()) * 0x0001_0000_0000_0000_0001,
        _ => (u128::from(r.next()) << 64) | u128::from(r.next()),
    }
}

/// Sets up a world: code from `build`, XMM and general registers from
/// `r`'s seed, memory slots, SSE enabled.
fn setup(w: &mut World, build: &dyn Fn(&mut Asm) -> AsmResult, seed: u64) {
    w.asm(CODE, build);
    let mut r = Rng(seed | 1);
    for x in w.cpu.xmm.iter_mut() {
        *x = value(&mut r);
    }
    for g in w.cpu.gpr.iter_mut() {
        *g = r.next();
    }
    w.cpu.gpr[4] = DATA + 0x800;
    w.cpu.gpr[12] = DATA;
    for i in 0..8 {
        w.bus.put(DATA + 8 * i, 8, r.next());
    }
    w.cpu.cr4 |= cr::CR4_OSFXSR;
    w.cpu.rip = CODE;
}

#[test]
fn each_form_matches_the_interpreter() {
    let mut r = Rng(0x5eed_55e0);
    for f in 0..FORMS {
        let mut inlined = 0;
        for _ in 0..12 {
            let (x, y, g) = (
                r.below(8) as usize,
                r.below(8) as usize,
                r.below(4) as usize,
            );
            let (m, imm, seed) = (r.below(8) as i32, r.next() as u32, r.next());
            let build = move |a: &mut Asm| {
                form(a, f, x, y, g, m, imm)?;
                a.hlt()
            };
            let w = lockstep(TestMode::Long64, 0, &[1 << 20], 1 << 20, &|w| {
                setup(w, &build, seed)
            });
            assert!(w.cpu.halted, "form {f}");
            let s = w.stats();
            if s.inlined + 1 == s.insns {
                inlined += 1;
            }
        }
        assert_eq!(inlined, 12, "form {f} is inlined");
    }
}

#[test]
fn random_sequences_match_the_interpreter() {
    let mut r = Rng(0x0dd_5eed);
    for _ in 0..300 {
        let n = 1 + r.below(16) as usize;
        let ops: Vec<_> = (0..n)
            .map(|_| {
                let f = r.below(FORMS);
                let (x, y, g) = (
                    r.below(8) as usize,
                    r.below(8) as usize,
                    r.below(4) as usize,
                );
                (f, x, y, g, r.below(8) as i32, r.next() as u32)
            })
            .collect();
        let seed = r.next();
        let build = move |a: &mut Asm| {
            let mut top = a.create_label();
            a.mov(ecx, 20u32)?;
            a.set_label(&mut top)?;
            for &(f, x, y, g, m, imm) in &ops {
                form(a, f, x, y, g, m, imm)?;
            }
            a.dec(ecx)?;
            a.jnz(top)?;
            a.hlt()
        };
        for threshold in [0, 3] {
            let w = lockstep(TestMode::Long64, threshold, CHUNKS, 1 << 20, &|w| {
                setup(w, &build, seed);
                // RCX counts the loop: keep it out of the forms' registers.
                w.cpu.gpr[1] = 0;
            });
            assert!(w.cpu.halted);
        }
    }
}

/// An SSE loop hot in native code, then: a MOVD load from an unmapped
/// page (#PF at it), or CR0.TS set (#NM), or CR4.OSFXSR clear (#UD), at
/// the first SSE instruction after the change.
#[test]
fn faults_and_the_sse_check_are_precise() {
    // (what to do in round 40, the vector expected)
    let cases: [(u8, u8); 3] = [(0, vector::PF), (1, vector::NM), (2, vector::UD)];
    for (what, expect) in cases {
        let build = move |a: &mut Asm| {
            let (mut top, mut go) = (a.create_label(), a.create_label());
            a.mov(ecx, 60u32)?;
            a.set_label(&mut top)?;
            a.cmp(ecx, 20)?;
            a.jne(go)?;
            match what {
                0 => a.mov(r12, 0x7fff_0000_0000u64)?,
                1 => {
                    a.mov(rax, cr0)?;
                    a.or(eax, cr::CR0_TS as i32)?;
                    a.mov(cr0, rax)?;
                }
                _ => {
                    a.mov(rax, cr4)?;
                    a.and(eax, !(cr::CR4_OSFXSR as i32))?;
                    a.mov(cr4, rax)?;
                }
            }
            a.set_label(&mut go)?;
            a.paddd(xmm1, xmm2)?;
            a.movd(xmm3, dword_ptr(r12 + 8))?;
            a.pxor(xmm1, xmm3)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.hlt()
        };
        let w = lockstep(TestMode::Long64, 1, CHUNKS, 1 << 20, &|w| {
            setup(w, &build, 77)
        });
        assert_eq!(
            fault_of(&w.cpu, &w.bus).map(|f| f.0),
            Some(expect),
            "case {what}"
        );
    }
}
