//! The inlined SSE integer instructions against the interpreter: every
//! form on edge and random XMM values, random sequences, the memory forms
//! (hits, misses, a #PF), and the run-time availability check (CR0.TS set:
//! #NM; CR4.OSFXSR clear: #UD) in code translated while SSE was available.

use hindsight_cpu::fault::vector;
use hindsight_cpu::state::{cr, reg};
use hindsight_cpu::testutil::{fault_of, TestMode, CODE, DATA};
use iced_x86::code_asm::*;

use super::{lockstep, Asm, AsmResult, Rng, World, CHUNKS};

const X: [AsmRegisterXmm; 16] = [
    xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13, xmm14,
    xmm15,
];

/// Values where lanes wrap, saturate, compare equal or shift in signs.
const EDGE: [u128; 8] = [
    0,
    u128::MAX,
    0x8000_0000_0000_0000_8000_0000_0000_0000,
    0x7fff_ffff_ffff_ffff_7fff_ffff_ffff_ffff,
    0x8080_8080_8080_8080_8080_8080_8080_8080,
    0x7f7f_7f7f_7f7f_7f7f_7f7f_7f7f_7f7f_7f7f,
    0x00ff_00ff_8000_7fff_ffff_0001_0f0e_0d0c,
    0x0f0e_0d0c_0b0a_0908_8706_0504_0302_0100,
];

/// XMM registers: edge values, then random ones.
fn xmm_values(r: &mut Rng) -> [u128; 16] {
    let mut v = [0u128; 16];
    for (i, x) in v.iter_mut().enumerate() {
        *x = if i < EDGE.len() && r.below(2) == 0 {
            EDGE[(i + r.below(8) as usize) % EDGE.len()]
        } else {
            r.next() as u128 | (r.next() as u128) << 64
        };
    }
    v
}

/// Guest state shared by the tests: SSE enabled, RBX at the data page.
fn sse_setup(w: &mut World, xmm: [u128; 16]) {
    w.cpu.cr4 |= cr::CR4_OSFXSR;
    w.cpu.xmm = xmm;
    w.cpu.gpr[reg::RBX] = DATA;
    w.cpu.rip = CODE;
}

/// How many forms [`form`] has.
const FORMS: u64 = 66;

/// Inlined form `i` with registers `d` and `s`.
fn form(a: &mut Asm, i: u64, d: AsmRegisterXmm, s: AsmRegisterXmm, imm: u32) -> AsmResult {
    match i {
        0 => a.paddb(d, s),
        1 => a.paddw(d, s),
        2 => a.paddd(d, s),
        3 => a.paddq(d, s),
        4 => a.psubb(d, s),
        5 => a.psubw(d, s),
        6 => a.psubd(d, s),
        7 => a.psubq(d, s),
        8 => a.paddsb(d, s),
        9 => a.paddsw(d, s),
        10 => a.psubsb(d, s),
        11 => a.psubsw(d, s),
        12 => a.paddusb(d, s),
        13 => a.paddusw(d, s),
        14 => a.psubusb(d, s),
        15 => a.psubusw(d, s),
        16 => a.pand(d, s),
        17 => a.pandn(d, s),
        18 => a.por(d, s),
        19 => a.pxor(d, s),
        20 => a.andps(d, s),
        21 => a.andnpd(d, s),
        22 => a.orps(d, s),
        23 => a.xorpd(d, s),
        24 => a.pcmpeqb(d, s),
        25 => a.pcmpeqw(d, s),
        26 => a.pcmpeqd(d, s),
        27 => a.pcmpgtb(d, s),
        28 => a.pcmpgtw(d, s),
        29 => a.pcmpgtd(d, s),
        30 => a.pminub(d, s),
        31 => a.pmaxub(d, s),
        32 => a.pminsw(d, s),
        33 => a.pmaxsw(d, s),
        34 => a.punpcklbw(d, s),
        35 => a.punpcklwd(d, s),
        36 => a.punpckldq(d, s),
        37 => a.punpcklqdq(d, s),
        38 => a.punpckhbw(d, s),
        39 => a.punpckhwd(d, s),
        40 => a.punpckhdq(d, s),
        41 => a.punpckhqdq(d, s),
        42 => a.unpcklps(d, s),
        43 => a.unpckhpd(d, s),
        44 => a.pshufd(d, s, imm & 0xff),
        45 => a.pshufb(d, s),
        46 => a.psllw(d, imm % 20),
        47 => a.pslld(d, imm % 40),
        48 => a.psllq(d, imm % 70),
        49 => a.psrlw(d, imm % 18),
        50 => a.psrld(d, imm % 35),
        51 => a.psrlq(d, imm % 66),
        52 => a.psraw(d, imm % 19),
        53 => a.psrad(d, imm % 36),
        54 => a.pslldq(d, imm % 18),
        55 => a.psrldq(d, imm % 17),
        56 => a.movdqa(d, s),
        57 => a.movdqu(d, s),
        58 => a.movaps(d, s),
        59 => a.movups(d, s),
        60 => a.movapd(d, s),
        61 => a.movq(d, s), // F3 0F 7E: zero-extends
        62 => a.movd(d, eax),
        63 => a.movq(d, rcx),
        64 => a.movd(edx, d),
        _ => a.movq(rsi, s),
    }
}

/// Every inlined form once, each on `d` reset from `t` (with `s`), its
/// result folded into `acc` (the state is compared only between runs).
fn every_form(a: &mut Asm, [d, s, t, acc]: [AsmRegisterXmm; 4], imm: u32) -> AsmResult {
    for i in 0..FORMS {
        a.movdqa(d, t)?;
        form(a, i, d, s, imm)?;
        a.pxor(acc, d)?;
        a.paddq(acc, s)?;
    }
    Ok(())
}

/// A loop over every form, the memory forms included, ending in HLT.
fn sse_loop(w: &mut World) {
    w.asm(CODE, &|a| {
        let mut top = a.create_label();
        a.mov(ecx, 300u32)?;
        a.set_label(&mut top)?;
        a.mov(eax, ecx)?;
        a.imul_3(eax, eax, 0x9e37_79b9u32 as i32)?;
        every_form(a, [xmm1, xmm2, xmm3, xmm0], 0x1b)?;
        every_form(a, [xmm9, xmm3, xmm10, xmm11], 0xe4)?;
        every_form(a, [xmm4, xmm12, xmm13, xmm14], 0x39)?;
        a.paddq(xmm3, xmm0)?;
        a.paddd(xmm10, xmm11)?;
        a.psubb(xmm13, xmm14)?;
        a.movd(dword_ptr(rbx + rcx * 4), xmm1)?;
        a.movd(xmm5, dword_ptr(rbx + rcx * 4 + 8))?;
        a.movq(qword_ptr(rbx + 0x800), xmm9)?; // 66 0F D6
        a.movq(xmm6, qword_ptr(rbx + 0x800))?; // F3 0F 7E
                                               // 66 REX.W 0F 6E /r and 66 REX.W 0F 7E /r with memory operands.
        a.db(&[0x66, 0x48, 0x0f, 0x6e, 0x7b, 0x10])?; // movq xmm7, [rbx + 0x10]
        a.db(&[0x66, 0x48, 0x0f, 0x7e, 0x63, 0x18])?; // movq [rbx + 0x18], xmm4
        a.db(&[0x0f, 0x29, 0xc8])?; // movaps xmm0, xmm1 (0F 29, register form)
        a.add(r8, rdx)?;
        a.xor(r9, rsi)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()
    });
}

#[test]
fn sse_forms_match_the_interpreter() {
    let mut r = Rng(0x5eed_1234_abcd_0001);
    for threshold in [0, 1, 16] {
        let xmm = xmm_values(&mut r);
        let w = lockstep(TestMode::Long64, threshold, CHUNKS, 1 << 20, &|w| {
            sse_loop(w);
            sse_setup(w, xmm);
        });
        assert!(w.cpu.halted);
        let s = w.stats();
        assert!(s.inlined * 20 > s.insns * 19, "nearly all inlined: {s:?}");
    }
    // Budgets cutting the loop at every point.
    for step in [1, 2, 3, 7] {
        let xmm = xmm_values(&mut r);
        lockstep(TestMode::Long64, 0, &[step], 3000, &|w| {
            sse_loop(w);
            sse_setup(w, xmm);
        });
    }
}

#[test]
fn every_form_on_edge_values() {
    // Each pair of edge values as destination and source, every immediate
    // class.
    for (i, &a0) in EDGE.iter().enumerate() {
        for (j, &b0) in EDGE.iter().enumerate() {
            let imm = (i * 8 + j) as u32 * 37;
            let mut xmm = [0u128; 16];
            for (k, x) in xmm.iter_mut().enumerate() {
                *x = if k % 4 == 1 { b0 } else { a0 };
            }
            let w = lockstep(TestMode::Long64, 0, &[1 << 20], 1 << 20, &|w| {
                w.asm(CODE, &|a| {
                    for k in 0..4 {
                        let r = [X[4 * k], X[4 * k + 1], X[4 * k + 2], X[4 * k + 3]];
                        every_form(a, r, imm + k as u32 * 11)?;
                    }
                    a.hlt()
                });
                sse_setup(w, xmm);
            });
            assert!(w.cpu.halted);
            let s = w.stats();
            assert_eq!(s.inlined + 1, s.insns, "all but HLT inlined: {s:?}");
        }
    }
}

/// One random SSE (or general) instruction.
fn random_sse(a: &mut Asm, r: &mut Rng) -> AsmResult {
    let (d, s) = (X[r.below(16) as usize], X[r.below(16) as usize]);
    let imm = r.below(256) as u32;
    let off = r.below(64) as i32 * 4;
    match r.below(10) {
        0 => a.movd(d, dword_ptr(rbx + off)),
        1 => a.movd(dword_ptr(rbx + off), s),
        2 => a.movq(d, qword_ptr(rbx + off)),
        3 => a.movq(qword_ptr(rbx + off), s),
        4 => a.add(eax, 0x1234_5677),
        _ => form(a, r.below(FORMS), d, s, imm),
    }
}

#[test]
fn random_sse_sequences_match_the_interpreter() {
    let mut r = Rng(0x0123_4567_89ab_cdef);
    for case in 0..400 {
        let n = 1 + r.below(24) as usize;
        let seed = r.next();
        let xmm = xmm_values(&mut r);
        let rax_v = r.next();
        let build = move |w: &mut World| {
            w.asm(CODE, &|a| {
                let mut rr = Rng(seed | 1);
                let mut top = a.create_label();
                a.mov(ecx, 3u32)?;
                a.set_label(&mut top)?;
                for _ in 0..n {
                    random_sse(a, &mut rr)?;
                }
                a.dec(ecx)?;
                a.jnz(top)?;
                a.hlt()
            });
            sse_setup(w, xmm);
            w.cpu.gpr[reg::RAX] = rax_v;
        };
        let w = lockstep(TestMode::Long64, 1, &[1 << 20], 1 << 20, &build);
        assert!(w.cpu.halted, "case {case}");
    }
}

#[test]
fn protected_mode_sse_matches() {
    let mut r = Rng(0x3232_3232_1111_2222);
    let xmm = xmm_values(&mut r);
    let w = lockstep(TestMode::Protected32, 1, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.mov(ecx, 200u32)?;
            a.set_label(&mut top)?;
            a.paddd(xmm0, xmm1)?;
            a.pxor(xmm2, xmm0)?;
            a.pshufd(xmm3, xmm2, 0x4e)?;
            a.pslld(xmm3, 3)?;
            a.movd(dword_ptr(ebx + ecx * 4), xmm3)?;
            a.movd(xmm4, dword_ptr(ebx + ecx * 4 + 4))?;
            a.movq(qword_ptr(ebx + 0x900), xmm2)?;
            a.movq(xmm5, qword_ptr(ebx + 0x900))?;
            a.movd(eax, xmm5)?;
            a.add(esi, eax)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.hlt()
        });
        sse_setup(w, xmm);
    });
    assert!(w.cpu.halted);
    let s = w.stats();
    assert!(s.inlined * 10 > s.insns * 9, "nearly all inlined: {s:?}");
}

#[test]
fn sse_memory_faults_are_precise() {
    // #PF on a load once RSI leaves the mapped gigabyte (before that the
    // loads hit MMIO, through the handler).
    let w = lockstep(TestMode::Long64, 1, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            a.paddd(xmm1, xmm0)?;
            a.movd(xmm0, dword_ptr(rsi))?;
            a.add(rsi, 0x10_0000)?;
            a.jmp(top)
        });
        sse_setup(w, [7; 16]);
        w.cpu.gpr[reg::RSI] = 0x4000_0000 - 30 * 0x10_0000;
    });
    let f = fault_of(&w.cpu, &w.bus).expect("a fault");
    assert_eq!((f.0, f.2), (vector::PF, CODE + 4));
    assert_eq!(w.cpu.cr2, 0x4000_0000);
    assert_eq!(w.bus.mmio.len(), 30);
    // And on stores, 32- and 64-bit.
    let w = lockstep(TestMode::Long64, 1, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            a.paddq(xmm1, xmm0)?;
            a.movq(qword_ptr(rdi), xmm1)?;
            a.movd(dword_ptr(rdi + 8), xmm1)?;
            a.add(rdi, 0x10_0000)?;
            a.jmp(top)
        });
        sse_setup(w, [0x1234_5678_9abc_def0_1111; 16]);
        w.cpu.gpr[reg::RDI] = 0x4000_0000 - 8 - 30 * 0x10_0000;
    });
    let f = fault_of(&w.cpu, &w.bus).expect("a fault");
    assert_eq!((f.0, f.2), (vector::PF, CODE + 4 + 4));
    assert_eq!(w.cpu.cr2, 0x4000_0000);
}

/// A hot loop of SSE forms that, after 100 iterations, changes CR0 or CR4
/// with `change` and goes on: the next SSE instruction must fault.
fn availability_loop(change: &'static dyn Fn(&mut Asm) -> AsmResult) -> World {
    lockstep(TestMode::Long64, 1, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.mov(ecx, 100u32)?;
            a.set_label(&mut top)?;
            a.inc(r8)?; // 3 bytes
            a.paddd(xmm1, xmm0)?;
            a.movd(xmm2, dword_ptr(rbx))?;
            a.movq(qword_ptr(rbx + 8), xmm1)?;
            a.pshufd(xmm3, xmm1, 0x1b)?;
            a.movd(eax, xmm3)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.mov(rax, cr0)?;
            change(a)?;
            // Back into the translated block.
            a.jmp(top)
        });
        sse_setup(w, [0x5555_0000_ffff_1234; 16]);
    })
}

#[test]
fn cr0_ts_raises_nm_at_the_instruction() {
    let w = availability_loop(&|a| {
        a.or(rax, cr::CR0_TS as i32)?;
        a.mov(cr0, rax)
    });
    assert_eq!(
        fault_of(&w.cpu, &w.bus).map(|f| (f.0, f.2)),
        Some((vector::NM, CODE + 5 + 3))
    );
    assert_eq!(w.cpu.gpr[8], 101);
    assert!(w.stats().inlined > 0);
    // CR0.EM: #UD.
    let w = availability_loop(&|a| {
        a.or(rax, cr::CR0_EM as i32)?;
        a.mov(cr0, rax)
    });
    assert_eq!(
        fault_of(&w.cpu, &w.bus).map(|f| (f.0, f.2)),
        Some((vector::UD, CODE + 5 + 3))
    );
}

#[test]
fn cr4_osfxsr_clear_raises_ud() {
    let w = availability_loop(&|a| {
        a.mov(rax, cr4)?;
        a.and(rax, !(cr::CR4_OSFXSR as i32))?;
        a.mov(cr4, rax)
    });
    assert_eq!(
        fault_of(&w.cpu, &w.bus).map(|f| (f.0, f.2)),
        Some((vector::UD, CODE + 5 + 3))
    );
    // A memory form first: the availability check still comes first.
    let w = lockstep(TestMode::Long64, 1, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.mov(ecx, 50u32)?;
            a.set_label(&mut top)?;
            a.movd(xmm2, dword_ptr(rbx + rcx))?;
            a.movd(dword_ptr(rbx + rcx + 0x100), xmm2)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.mov(rax, cr0)?;
            a.or(rax, cr::CR0_TS as i32)?;
            a.mov(cr0, rax)?;
            a.mov(ecx, 7u32)?;
            a.jmp(top)
        });
        sse_setup(w, [3; 16]);
    });
    assert_eq!(
        fault_of(&w.cpu, &w.bus).map(|f| (f.0, f.2)),
        Some((vector::NM, CODE + 5))
    );
}
