//! The inlined shifts and rotates (by immediate and CL), IMUL, MOVZX/MOVSX,
//! NOT/NEG, BSWAP, XCHG, CMOVcc, SETcc and ADC/SBB against the interpreter, one
//! instruction at a time over edge values and in random sequences (where
//! each instruction meets the flags the previous one left).

use hindsight_cpu::flags;
use hindsight_cpu::testutil::{TestMode, CODE, DATA};
use iced_x86::code_asm::*;

use super::{lockstep, Asm, AsmResult, Rng, World, CHUNKS};

const Q: [AsmRegister64; 8] = [rax, rcx, rdx, rbx, rsi, rdi, r8, r15];
const D: [AsmRegister32; 8] = [eax, ecx, edx, ebx, esi, edi, r8d, r15d];
const W: [AsmRegister16; 8] = [ax, cx, dx, bx, si, di, r8w, r15w];
const B: [AsmRegister8; 8] = [al, cl, dl, bl, sil, dil, r8b, r15b];

/// Operand values at the edges: zero, one, all ones, the sign bits and
/// their neighbours at every size.
const EDGES: [u64; 14] = [
    0,
    1,
    u64::MAX,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0x8000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    0x4000_0000_4000_4040,
];

/// Counts for CL and immediates: zero, one, the widths and past them.
const COUNTS: [u32; 14] = [0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 255];

/// An edge value or a random one.
fn value(r: &mut Rng) -> u64 {
    if r.below(3) == 0 {
        r.next()
    } else {
        EDGES[r.below(EDGES.len() as u64) as usize]
    }
}

/// The forms under test.
const FORMS: u64 = 17;

/// One instruction: form, size, registers x and y, count/immediate.
type Form = (u64, u8, usize, usize, u32);

/// Emits form `f` at operand size `size` (1, 2, 4, 8; forms without that
/// size use another) on registers `x`, `y`, memory slot `m` at R12 + 8 *
/// `m` and count/immediate `c`.
fn form(a: &mut Asm, f: u64, size: u8, x: usize, y: usize, m: i32, c: u32) -> AsmResult {
    let mem = |s: u8| match s {
        1 => byte_ptr(r12 + 8 * m),
        2 => word_ptr(r12 + 8 * m),
        4 => dword_ptr(r12 + 8 * m),
        _ => qword_ptr(r12 + 8 * m),
    };
    let imm = c as i32;
    macro_rules! each {
        ($op:ident, $($arg:expr),*) => {
            match size {
                1 => a.$op(B[x], $($arg),*),
                2 => a.$op(W[x], $($arg),*),
                4 => a.$op(D[x], $($arg),*),
                _ => a.$op(Q[x], $($arg),*),
            }
        };
    }
    match f {
        0 => match c % 3 {
            0 => each!(shl, imm),
            1 => each!(shr, imm),
            _ => each!(sar, imm),
        },
        1 => match c % 3 {
            0 => each!(shl, cl),
            1 => each!(shr, cl),
            _ => each!(sar, cl),
        },
        2 => {
            if c & 1 == 0 {
                each!(rol, imm)
            } else {
                each!(ror, imm)
            }
        }
        3 => {
            if c & 1 == 0 {
                each!(rol, cl)
            } else {
                each!(ror, cl)
            }
        }
        4 => match size {
            1 | 2 => a.imul_2(W[x], W[y]),
            4 => a.imul_2(D[x], D[y]),
            _ => a.imul_2(Q[x], Q[y]),
        },
        5 => {
            let k = (c as i32).wrapping_mul(0x0101_0101) ^ 0x35;
            match size {
                1 | 2 => a.imul_3(W[x], W[y], k as i16 as i32),
                4 => a.imul_3(D[x], D[y], k),
                _ => a.imul_3(Q[x], Q[y], k),
            }
        }
        6 => match size {
            1 | 2 => a.imul_2(W[x], mem(2)),
            4 => a.imul_3(D[x], mem(4), -(c as i32)),
            _ => a.imul_2(Q[x], mem(8)),
        },
        7 => match (size, c % 4) {
            (1, _) => a.movzx(W[x], B[y]),
            (2, 0) => a.movzx(D[x], B[y]),
            (2, _) => a.movzx(D[x], W[y]),
            (4, _) => a.movsx(D[x], B[y]),
            (_, 0) => a.movsx(Q[x], W[y]),
            (_, 1) => a.movzx(Q[x], W[y]),
            (_, 2) => a.movsx(W[x], B[y]),
            _ => a.movsxd(Q[x], D[y]),
        },
        8 => {
            if c & 1 == 0 {
                each!(not,)
            } else {
                each!(neg,)
            }
        }
        9 => match size {
            8 => a.bswap(Q[x]),
            _ => a.bswap(D[x]),
        },
        10 => match size {
            1 => a.xchg(B[x], B[y]),
            2 => a.xchg(W[x], W[y]),
            4 => a.xchg(D[x], D[y]),
            _ => a.xchg(Q[x], Q[y]),
        },
        11 | 12 => cmov(a, c % 16, size, x, (f == 12).then_some(mem(size.max(2))), y),
        13 => setcc(a, c % 16, None, x),
        14 => setcc(a, c % 16, Some(mem(1)), x),
        15 => {
            let imm = match size {
                1 => imm as i8 as i32,
                2 => imm as i16 as i32,
                _ => imm.wrapping_mul(0x0101_0101) ^ 0x35,
            };
            match c % 8 {
                0 => each!(adc, imm),
                1 => each!(sbb, imm),
                2 => each!(adc, mem(size)),
                3 => each!(sbb, mem(size)),
                4 => match size {
                    1 => a.adc(mem(1), B[y]),
                    2 => a.sbb(mem(2), W[y]),
                    4 => a.adc(mem(4), D[y]),
                    _ => a.sbb(mem(8), Q[y]),
                },
                5 => match size {
                    1 => a.adc(B[x], B[y]),
                    2 => a.adc(W[x], W[y]),
                    4 => a.adc(D[x], D[y]),
                    _ => a.adc(Q[x], Q[y]),
                },
                _ => match size {
                    1 => a.sbb(B[x], B[y]),
                    2 => a.sbb(W[x], W[y]),
                    4 => a.sbb(D[x], D[y]),
                    _ => a.sbb(Q[x], Q[y]),
                },
            }
        }
        // A flag writer (the next form then meets its flags).
        _ => match size {
            1 => a.add(B[x], B[y]),
            2 => a.add(W[x], W[y]),
            4 => a.add(D[x], D[y]),
            _ => a.add(Q[x], Q[y]),
        },
    }
}

/// CMOVcc of condition `cc` (0 = O .. 15 = G) at `size` (8-bit: 16-bit)
/// from register `y` or memory.
fn cmov(
    a: &mut Asm,
    cc: u32,
    size: u8,
    x: usize,
    mem: Option<AsmMemoryOperand>,
    y: usize,
) -> AsmResult {
    macro_rules! sized {
        ($op:ident) => {
            match (size, mem) {
                (1 | 2, None) => a.$op(W[x], W[y]),
                (1 | 2, Some(m)) => a.$op(W[x], m),
                (4, None) => a.$op(D[x], D[y]),
                (4, Some(m)) => a.$op(D[x], m),
                (_, None) => a.$op(Q[x], Q[y]),
                (_, Some(m)) => a.$op(Q[x], m),
            }
        };
    }
    match cc {
        0 => sized!(cmovo),
        1 => sized!(cmovno),
        2 => sized!(cmovb),
        3 => sized!(cmovae),
        4 => sized!(cmove),
        5 => sized!(cmovne),
        6 => sized!(cmovbe),
        7 => sized!(cmova),
        8 => sized!(cmovs),
        9 => sized!(cmovns),
        10 => sized!(cmovp),
        11 => sized!(cmovnp),
        12 => sized!(cmovl),
        13 => sized!(cmovge),
        14 => sized!(cmovle),
        _ => sized!(cmovg),
    }
}

/// SETcc of condition `cc` into byte register `x` or memory.
fn setcc(a: &mut Asm, cc: u32, mem: Option<AsmMemoryOperand>, x: usize) -> AsmResult {
    macro_rules! dest {
        ($op:ident) => {
            match mem {
                None => a.$op(B[x]),
                Some(m) => a.$op(m),
            }
        };
    }
    match cc {
        0 => dest!(seto),
        1 => dest!(setno),
        2 => dest!(setb),
        3 => dest!(setae),
        4 => dest!(sete),
        5 => dest!(setne),
        6 => dest!(setbe),
        7 => dest!(seta),
        8 => dest!(sets),
        9 => dest!(setns),
        10 => dest!(setp),
        11 => dest!(setnp),
        12 => dest!(setl),
        13 => dest!(setge),
        14 => dest!(setle),
        _ => dest!(setg),
    }
}

/// Sets up a world: code from `build` at CODE, registers `gpr` (R12 =
/// DATA, RSP = DATA + 0x800), status flags `fl`, memory slots from `mem`.
fn setup(
    w: &mut World,
    build: &dyn Fn(&mut Asm) -> AsmResult,
    gpr: &[u64; 16],
    fl: u64,
    mem: &[u64; 8],
) {
    w.asm(CODE, build);
    w.cpu.gpr.copy_from_slice(gpr);
    w.cpu.gpr[4] = DATA + 0x800;
    w.cpu.gpr[12] = DATA;
    for (i, v) in mem.iter().enumerate() {
        w.bus.put(DATA + 8 * i as u64, 8, *v);
    }
    w.cpu.rflags = flags::FIXED | fl;
    w.cpu.rip = CODE;
}

/// Runs form `f` once in a block of its own under both engines; returns
/// whether the JIT inlined it.
fn one(op: Form, gpr: [u64; 16], fl: u64, mem: [u64; 8]) -> bool {
    let (f, size, x, y, c) = op;
    let build = move |a: &mut Asm| {
        form(a, f, size, x, y, (c % 8) as i32, c)?;
        a.hlt()
    };
    let w = lockstep(TestMode::Long64, 0, &[1 << 20], 1 << 20, &|w| {
        setup(w, &build, &gpr, fl, &mem)
    });
    assert!(w.cpu.halted);
    let s = w.stats();
    s.inlined + 1 == s.insns
}

#[test]
fn each_form_on_edge_values_matches_the_interpreter() {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    for f in 0..FORMS - 1 {
        for size in [1u8, 2, 4, 8] {
            let mut inlined = 0;
            for (k, &c) in COUNTS.iter().enumerate() {
                let (x, y) = (r.below(8) as usize, r.below(8) as usize);
                let mut gpr = [0u64; 16];
                for g in gpr.iter_mut() {
                    *g = value(&mut r);
                }
                // CL holds the count; alternate condition-heavy flag states.
                gpr[1] = (gpr[1] & !0xff) | u64::from(c);
                let fl = match k % 3 {
                    0 => 0,
                    1 => flags::STATUS,
                    _ => r.next() & flags::STATUS,
                };
                let mem: [u64; 8] = std::array::from_fn(|_| value(&mut r));
                if one((f, size, x, y, c), gpr, fl, mem) {
                    inlined += 1;
                }
            }
            // Every form is inlined but for masked immediate counts of zero
            // and 8/16-bit shifts by an immediate of the width or more.
            let all = match f {
                0 | 2 => 4,
                _ => COUNTS.len(),
            };
            assert!(inlined >= all, "form {f} size {size}: {inlined}");
        }
    }
}

#[test]
fn random_sequences_match_the_interpreter() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ 0x5555);
    for case in 0..1200 {
        let n = 1 + r.below(12) as usize;
        let ops: Vec<Form> = (0..n)
            .map(|_| {
                let c = if r.below(2) == 0 {
                    COUNTS[r.below(COUNTS.len() as u64) as usize]
                } else {
                    r.below(256) as u32
                };
                (
                    r.below(FORMS),
                    1 << r.below(4),
                    r.below(8) as usize,
                    r.below(8) as usize,
                    c,
                )
            })
            .collect();
        let mut gpr = [0u64; 16];
        for g in gpr.iter_mut() {
            *g = value(&mut r);
        }
        let fl = r.next() & flags::STATUS;
        let mem: [u64; 8] = std::array::from_fn(|_| value(&mut r));
        let build = move |a: &mut Asm| {
            let mut skip = a.create_label();
            for &(f, size, x, y, c) in &ops {
                form(a, f, size, x, y, (c % 8) as i32, c)?;
            }
            a.jo(skip)?;
            a.inc(r9)?;
            a.set_label(&mut skip)?;
            a.hlt()
        };
        let w = lockstep(TestMode::Long64, 0, &[1 << 20], 1 << 20, &|w| {
            setup(w, &build, &gpr, fl, &mem)
        });
        assert!(w.cpu.halted, "case {case}");
    }
}

#[test]
fn a_hot_loop_of_every_form_cut_by_budgets() {
    let build = |a: &mut Asm| {
        let mut top = a.create_label();
        a.mov(r9d, 400u32)?;
        a.set_label(&mut top)?;
        a.mov(ecx, r9d)?;
        a.rol(rax, 13)?;
        a.ror(edx, cl)?;
        a.shl(bx, cl)?;
        a.sar(sil, cl)?;
        a.imul_2(rdi, rax)?;
        a.imul_3(r8d, dword_ptr(r12 + 8), 77)?;
        a.cmovl(r15d, eax)?;
        a.cmovs(rsi, qword_ptr(r12))?;
        a.setg(r8b)?;
        a.seta(byte_ptr(r12 + 16))?;
        a.movsx(rbx, dx)?;
        a.bswap(edi)?;
        a.xchg(rdx, r15)?;
        a.neg(ebx)?;
        a.not(r8w)?;
        a.add(qword_ptr(r12), rdi)?;
        a.dec(r9d)?;
        a.jnz(top)?;
        a.hlt()
    };
    let gpr: [u64; 16] = std::array::from_fn(|i| EDGES[i % EDGES.len()].wrapping_mul(i as u64 + 3));
    for threshold in [0, 1, 16] {
        let w = lockstep(TestMode::Long64, threshold, CHUNKS, 1 << 20, &|w| {
            setup(w, &build, &gpr, 0, &[5, 6, 7, 8, 9, 10, 11, 12])
        });
        assert!(w.cpu.halted);
        let s = w.stats();
        assert!(s.inlined * 10 > s.insns * 9, "nearly all inlined: {s:?}");
    }
    for step in [1, 2, 3, 7] {
        lockstep(TestMode::Long64, 0, &[step], 3000, &|w| {
            setup(w, &build, &gpr, 0, &[5, 6, 7, 8, 9, 10, 11, 12])
        });
    }
}

#[test]
fn register_forms_in_protected_mode() {
    let w = lockstep(TestMode::Protected32, 1, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.mov(ebp, 300u32)?;
            a.set_label(&mut top)?;
            a.mov(ecx, ebp)?;
            a.rol(eax, cl)?;
            a.ror(bl, 3)?;
            a.shr(dx, cl)?;
            a.imul_3(esi, eax, 0x1234_5679)?;
            a.cmovge(edi, esi)?;
            a.setp(dl)?;
            a.movzx(eax, bl)?;
            a.neg(edi)?;
            a.bswap(esi)?;
            a.xchg(eax, edx)?;
            a.dec(ebp)?;
            a.jnz(top)?;
            a.hlt()
        });
        w.cpu.gpr[0] = 0x8765_4321;
        w.cpu.rip = CODE;
    });
    assert!(w.cpu.halted);
    assert!(w.stats().inlined > 10);
}
