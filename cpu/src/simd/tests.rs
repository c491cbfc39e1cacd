//! Differential tests against the host SSE2 unit (x86-64 only).
//!
//! Each case runs the host instruction on the same inputs and compares
//! the full 128-bit result. `SIMD_CASES` sets the number of random cases
//! per operation (default 20000); `SIMD_SEED` picks another stream.

use super::*;
use core::arch::asm;
use core::arch::x86_64::__m128i;

fn m(v: u128) -> __m128i {
    unsafe { core::mem::transmute(v) }
}

fn u(v: __m128i) -> u128 {
    unsafe { core::mem::transmute(v) }
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let extra: u64 = std::env::var("SIMD_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Rng(
            (seed ^ extra.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xd134_2543_de82_ef95)
                | 1,
        )
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A vector biased towards lane boundary values (0, ±1, min, max).
    fn vec(&mut self) -> u128 {
        let mut v = (self.next() as u128) << 64 | self.next() as u128;
        if matches!(self.next() % 3, 0) {
            let bits = [8u32, 16, 32, 64][(self.next() % 4) as usize];
            for i in 0..128 / bits {
                if self.next() & 1 == 0 {
                    let top = 1u64 << (bits - 1);
                    let all = u64::MAX >> (64 - bits);
                    let x = [0, 1, all, top, top - 1, top + 1, all - 1][(self.next() % 7) as usize];
                    v = set_lane(v, bits, i, x);
                }
            }
        }
        v
    }
}

fn cases() -> usize {
    std::env::var("SIMD_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20000)
}

macro_rules! host2 {
    ($ins:literal, $a:expr, $b:expr) => {{
        let mut a = m($a);
        let b = m($b);
        unsafe {
            asm!(concat!($ins, " {a}, {b}"), a = inout(xmm_reg) a, b = in(xmm_reg) b,
                 options(pure, nomem, nostack));
        }
        u(a)
    }};
}

/// Runs `$ins` against the model `$f(a, b)` on random vectors.
macro_rules! check2 {
    ($name:ident, $ins:literal, $f:expr) => {
        #[test]
        fn $name() {
            let mut rng = Rng::new(line!() as u64);
            for _ in 0..cases() {
                let (a, b) = (rng.vec(), rng.vec());
                let want = host2!($ins, a, b);
                let got: u128 = $f(a, b);
                assert_eq!(got, want, "{} {a:#034x} {b:#034x}", $ins);
            }
        }
    };
}

check2!(paddb, "paddb", |a, b| padd(a, b, 8));
check2!(paddw, "paddw", |a, b| padd(a, b, 16));
check2!(paddd, "paddd", |a, b| padd(a, b, 32));
check2!(paddq, "paddq", |a, b| padd(a, b, 64));
check2!(psubb, "psubb", |a, b| psub(a, b, 8));
check2!(psubw, "psubw", |a, b| psub(a, b, 16));
check2!(psubd, "psubd", |a, b| psub(a, b, 32));
check2!(psubq, "psubq", |a, b| psub(a, b, 64));
check2!(paddsb, "paddsb", |a, b| padds(a, b, 8));
check2!(paddsw, "paddsw", |a, b| padds(a, b, 16));
check2!(psubsb, "psubsb", |a, b| psubs(a, b, 8));
check2!(psubsw, "psubsw", |a, b| psubs(a, b, 16));
check2!(paddusb, "paddusb", |a, b| paddus(a, b, 8));
check2!(paddusw, "paddusw", |a, b| paddus(a, b, 16));
check2!(psubusb, "psubusb", |a, b| psubus(a, b, 8));
check2!(psubusw, "psubusw", |a, b| psubus(a, b, 16));
check2!(pmullw_, "pmullw", pmullw);
check2!(pmulhw_, "pmulhw", pmulhw);
check2!(pmulhuw_, "pmulhuw", pmulhuw);
check2!(pmuludq_, "pmuludq", pmuludq);
check2!(pmaddwd_, "pmaddwd", pmaddwd);
check2!(pavgb, "pavgb", |a, b| pavg(a, b, 8));
check2!(pavgw, "pavgw", |a, b| pavg(a, b, 16));
check2!(pminub_, "pminub", pminub);
check2!(pmaxub_, "pmaxub", pmaxub);
check2!(pminsw_, "pminsw", pminsw);
check2!(pmaxsw_, "pmaxsw", pmaxsw);
check2!(psadbw_, "psadbw", psadbw);
check2!(pand_, "pand", pand);
check2!(pandn_, "pandn", pandn);
check2!(por_, "por", por);
check2!(pxor_, "pxor", pxor);
check2!(pcmpeqb, "pcmpeqb", |a, b| pcmpeq(a, b, 8));
check2!(pcmpeqw, "pcmpeqw", |a, b| pcmpeq(a, b, 16));
check2!(pcmpeqd, "pcmpeqd", |a, b| pcmpeq(a, b, 32));
check2!(pcmpgtb, "pcmpgtb", |a, b| pcmpgt(a, b, 8));
check2!(pcmpgtw, "pcmpgtw", |a, b| pcmpgt(a, b, 16));
check2!(pcmpgtd, "pcmpgtd", |a, b| pcmpgt(a, b, 32));
check2!(packsswb_, "packsswb", packsswb);
check2!(packssdw_, "packssdw", packssdw);
check2!(packuswb_, "packuswb", packuswb);
check2!(punpcklbw, "punpcklbw", |a, b| punpckl(a, b, 8));
check2!(punpcklwd, "punpcklwd", |a, b| punpckl(a, b, 16));
check2!(punpckldq, "punpckldq", |a, b| punpckl(a, b, 32));
check2!(punpcklqdq, "punpcklqdq", |a, b| punpckl(a, b, 64));
check2!(punpckhbw, "punpckhbw", |a, b| punpckh(a, b, 8));
check2!(punpckhwd, "punpckhwd", |a, b| punpckh(a, b, 16));
check2!(punpckhdq, "punpckhdq", |a, b| punpckh(a, b, 32));
check2!(punpckhqdq, "punpckhqdq", |a, b| punpckh(a, b, 64));
check2!(unpcklps_, "unpcklps", unpcklps);
check2!(unpckhps_, "unpckhps", unpckhps);
check2!(unpcklpd_, "unpcklpd", unpcklpd);
check2!(unpckhpd_, "unpckhpd", unpckhpd);

/// Shift counts: small, at and around every width, and huge.
fn count(rng: &mut Rng) -> u64 {
    match rng.next() % 4 {
        0 => rng.next(),
        1 => [15, 16, 17, 31, 32, 33, 63, 64, 65, 1 << 32, 1 << 63][(rng.next() % 11) as usize],
        _ => rng.next() % 70,
    }
}

macro_rules! check_shift {
    ($name:ident, $ins:literal, $f:expr, $bits:expr) => {
        #[test]
        fn $name() {
            let mut rng = Rng::new(line!() as u64);
            for _ in 0..cases() {
                let a = rng.vec();
                let c = count(&mut rng);
                // the count operand's high quadword is ignored
                let cv = (rng.next() as u128) << 64 | c as u128;
                let want = host2!($ins, a, cv);
                assert_eq!($f(a, c, $bits), want, "{} {a:#034x} {c}", $ins);
            }
        }
    };
}

check_shift!(psllw, "psllw", psll, 16);
check_shift!(pslld, "pslld", psll, 32);
check_shift!(psllq, "psllq", psll, 64);
check_shift!(psrlw, "psrlw", psrl, 16);
check_shift!(psrld, "psrld", psrl, 32);
check_shift!(psrlq, "psrlq", psrl, 64);
check_shift!(psraw, "psraw", psra, 16);
check_shift!(psrad, "psrad", psra, 32);

/// Instructions with an immediate: every imm8 value is tried, each on a
/// few random vectors.
macro_rules! check_imm {
    ($name:ident, |$a:ident, $b:ident, $imm:ident| $model:expr, $tmpl:literal) => {
        #[test]
        fn $name() {
            let mut rng = Rng::new(line!() as u64);
            seq_imm!(rng, $a, $b, $imm, $model, $tmpl);
        }
    };
}

macro_rules! seq_imm {
    ($rng:ident, $a:ident, $b:ident, $imm:ident, $model:expr, $tmpl:literal) => {
        seq_imm!(@go $rng, $a, $b, $imm, $model, $tmpl,
            0 1 2 3 4 5 6 7 8 9 15 16 17 27 31 32 57 64 78 99 127 128 141 177 200 216 228 255);
    };
    (@go $rng:ident, $a:ident, $b:ident, $imm:ident, $model:expr, $tmpl:literal, $($i:literal)*) => {
        $(
            for _ in 0..50 {
                let $a = $rng.vec();
                let $b = $rng.vec();
                let $imm: u8 = $i;
                let mut r = m($a);
                unsafe {
                    asm!($tmpl, a = inout(xmm_reg) r, b = in(xmm_reg) m($b), i = const $i,
                         options(pure, nomem, nostack));
                }
                assert_eq!($model, u(r), "{} imm {} {:#034x} {:#034x}", $tmpl, $i, $a, $b);
            }
        )*
    };
}

check_imm!(pshufd_, |a, b, i| pshufd(b, i), "pshufd {a}, {b}, {i}");
check_imm!(pshuflw_, |a, b, i| pshuflw(b, i), "pshuflw {a}, {b}, {i}");
check_imm!(pshufhw_, |a, b, i| pshufhw(b, i), "pshufhw {a}, {b}, {i}");
check_imm!(shufps_, |a, b, i| shufps(a, b, i), "shufps {a}, {b}, {i}");
check_imm!(shufpd_, |a, b, i| shufpd(a, b, i), "shufpd {a}, {b}, {i}");
check_imm!(
    pslldq_,
    |a, b, i| {
        let _ = b;
        pslldq(a, i)
    },
    "pslldq {a}, {i} /* {b} */"
);
check_imm!(
    psrldq_,
    |a, b, i| {
        let _ = b;
        psrldq(a, i)
    },
    "psrldq {a}, {i} /* {b} */"
);
check_imm!(
    psllw_imm,
    |a, b, i| {
        let _ = b;
        psll(a, i as u64, 16)
    },
    "psllw {a}, {i} /* {b} */"
);
check_imm!(
    psrld_imm,
    |a, b, i| {
        let _ = b;
        psrl(a, i as u64, 32)
    },
    "psrld {a}, {i} /* {b} */"
);
check_imm!(
    psraw_imm,
    |a, b, i| {
        let _ = b;
        psra(a, i as u64, 16)
    },
    "psraw {a}, {i} /* {b} */"
);
check_imm!(
    psrad_imm,
    |a, b, i| {
        let _ = b;
        psra(a, i as u64, 32)
    },
    "psrad {a}, {i} /* {b} */"
);
check_imm!(
    psrlw_imm,
    |a, b, i| {
        let _ = b;
        psrl(a, i as u64, 16)
    },
    "psrlw {a}, {i} /* {b} */"
);
check_imm!(
    pslld_imm,
    |a, b, i| {
        let _ = b;
        psll(a, i as u64, 32)
    },
    "pslld {a}, {i} /* {b} */"
);
check_imm!(
    psrlq_imm,
    |a, b, i| {
        let _ = b;
        psrl(a, i as u64, 64)
    },
    "psrlq {a}, {i} /* {b} */"
);
check_imm!(
    psllq_imm,
    |a, b, i| {
        let _ = b;
        psll(a, i as u64, 64)
    },
    "psllq {a}, {i} /* {b} */"
);

#[test]
fn masks_and_pextrw() {
    let mut rng = Rng::new(7);
    for _ in 0..cases() {
        let a = rng.vec();
        let (m8, mps, mpd): (u32, u32, u32);
        let (w0, w5): (u32, u32);
        unsafe {
            asm!("pmovmskb {m8:e}, {a}", "movmskps {mps:e}, {a}", "movmskpd {mpd:e}, {a}",
                 "pextrw {w0:e}, {a}, 0", "pextrw {w5:e}, {a}, 13",
                 a = in(xmm_reg) m(a), m8 = out(reg) m8, mps = out(reg) mps, mpd = out(reg) mpd,
                 w0 = out(reg) w0, w5 = out(reg) w5, options(pure, nomem, nostack));
        }
        assert_eq!(pmovmskb(a), m8);
        assert_eq!(movmskps(a), mps);
        assert_eq!(movmskpd(a), mpd);
        assert_eq!(pextrw(a, 0), w0);
        assert_eq!(pextrw(a, 13), w5);
    }
}

#[test]
fn pinsrw_() {
    let mut rng = Rng::new(8);
    for _ in 0..cases() {
        let a = rng.vec();
        let x = rng.next() as u32;
        let (mut r0, mut r6) = (m(a), m(a));
        unsafe {
            asm!("pinsrw {r0}, {x:e}, 0", "pinsrw {r6}, {x:e}, 14",
                 r0 = inout(xmm_reg) r0, r6 = inout(xmm_reg) r6, x = in(reg) x,
                 options(pure, nomem, nostack));
        }
        assert_eq!(pinsrw(a, x, 0), u(r0));
        assert_eq!(pinsrw(a, x, 14), u(r6));
    }
}

// ---------------------------------------------------------------------
// Floating point
// ---------------------------------------------------------------------

use super::float::{cmp_packed, cmp_scalar, comi_scalar, packed, scalar, sqrt_packed, sqrt_scalar};

impl Rng {
    /// One value of format `f`, biased towards special and boundary cases.
    fn fval(&mut self, f: Fmt) -> u64 {
        let emax = (1u64 << f.ebits) - 1;
        let bias = emax / 2;
        let sign = (self.next() & 1) << (f.ebits + f.mbits);
        let mmask = (1u64 << f.mbits) - 1;
        let mut m = self.next() & mmask;
        match self.next() % 4 {
            0 => m &= !((1u64 << (self.next() % (f.mbits as u64 + 1))) - 1),
            1 => m |= (1u64 << (self.next() % (f.mbits as u64 + 1))) - 1,
            _ => {}
        }
        let e = match self.next() % 16 {
            0 => 0,
            1 => {
                return sign
                    | [0, 1, mmask, 1 << (f.mbits - 1), (1 << (f.mbits - 1)) + 1]
                        [(self.next() % 5) as usize]
                    | emax << f.mbits
            }
            2 => 0,
            3 => self.next() % 4,
            4 => emax - 1 - self.next() % 3,
            5 => self.next() % (emax - 1) + 1,
            6 => {
                // near the underflow threshold of products/quotients
                (bias / 2).wrapping_add(self.next() % 8).wrapping_sub(4)
            }
            7 => return sign | ((self.next() % 2) * (emax - 1)) << f.mbits,
            _ => bias - 4 + self.next() % 8,
        };
        sign | (e & emax) << f.mbits | m
    }

    /// A second operand, often close to the first one.
    fn fpair(&mut self, f: Fmt, a: u64) -> u64 {
        match self.next() % 4 {
            0 => a ^ (self.next() % 8),
            1 => {
                let e = (self.next() % 5) << f.mbits;
                (a.wrapping_add(e).wrapping_sub(2 << f.mbits)
                    ^ (self.next() & 1) << (f.ebits + f.mbits))
                    & (u64::MAX >> (63 - f.ebits - f.mbits))
            }
            _ => self.fval(f),
        }
    }

    fn fvecs(&mut self, f: Fmt) -> (u128, u128) {
        let w = f.ebits + f.mbits + 1;
        let (mut a, mut b) = (0, 0);
        for i in 0..128 / w {
            let x = self.fval(f);
            a = set_lane(a, w, i, x);
            b = set_lane(b, w, i, self.fpair(f, x));
        }
        (a, b)
    }
}

/// The 16 control settings: RC × FTZ × DAZ, all exceptions masked.
fn modes() -> impl Iterator<Item = Mxcsr> {
    (0..16u32).map(|i| Mxcsr(0x1f80 | (i & 3) << 13 | (i >> 2 & 1) << 15 | (i >> 3 & 1) << 6))
}

macro_rules! hostf {
    ($tmpl:expr, $a:expr, $b:expr, $mx:expr $(, ($($extra:tt)*))*) => {{
        let mut a = m($a);
        let b = m($b);
        let mut csr: u32 = $mx.0;
        let mut save: u32 = 0;
        unsafe {
            asm!("stmxcsr [{save}]", "ldmxcsr [{csr}]", $tmpl, "stmxcsr [{csr}]",
                 "ldmxcsr [{save}]", save = in(reg) &mut save, csr = in(reg) &mut csr,
                 a = inout(xmm_reg) a, b = in(xmm_reg) b $(, $($extra)*)*, options(nostack));
        }
        (u(a), csr & 0x3f)
    }};
}

fn fcases() -> usize {
    cases() / 4
}

macro_rules! checkf {
    ($name:ident, $ins:literal, $f:expr, |$a:ident, $b:ident, $mx:ident| $model:expr) => {
        #[test]
        fn $name() {
            let mut rng = Rng::new(line!() as u64);
            for $mx in modes() {
                for _ in 0..fcases() {
                    let ($a, $b) = rng.fvecs($f);
                    let want = hostf!(concat!($ins, " {a}, {b}"), $a, $b, $mx);
                    let got: (u128, u32) = $model;
                    assert_eq!(
                        got, want,
                        "{} {:#034x} {:#034x} mxcsr {:#x}",
                        $ins, $a, $b, $mx.0
                    );
                }
            }
        }
    };
}

checkf!(addps, "addps", F32, |a, b, mx| packed(
    F32,
    Op::Add,
    a,
    b,
    mx
));
checkf!(subps, "subps", F32, |a, b, mx| packed(
    F32,
    Op::Sub,
    a,
    b,
    mx
));
checkf!(mulps, "mulps", F32, |a, b, mx| packed(
    F32,
    Op::Mul,
    a,
    b,
    mx
));
checkf!(divps, "divps", F32, |a, b, mx| packed(
    F32,
    Op::Div,
    a,
    b,
    mx
));
checkf!(minps, "minps", F32, |a, b, mx| packed(
    F32,
    Op::Min,
    a,
    b,
    mx
));
checkf!(maxps, "maxps", F32, |a, b, mx| packed(
    F32,
    Op::Max,
    a,
    b,
    mx
));
checkf!(sqrtps, "sqrtps", F32, |a, b, mx| sqrt_packed(F32, b, mx));
checkf!(addpd, "addpd", F64, |a, b, mx| packed(
    F64,
    Op::Add,
    a,
    b,
    mx
));
checkf!(subpd, "subpd", F64, |a, b, mx| packed(
    F64,
    Op::Sub,
    a,
    b,
    mx
));
checkf!(mulpd, "mulpd", F64, |a, b, mx| packed(
    F64,
    Op::Mul,
    a,
    b,
    mx
));
checkf!(divpd, "divpd", F64, |a, b, mx| packed(
    F64,
    Op::Div,
    a,
    b,
    mx
));
checkf!(minpd, "minpd", F64, |a, b, mx| packed(
    F64,
    Op::Min,
    a,
    b,
    mx
));
checkf!(maxpd, "maxpd", F64, |a, b, mx| packed(
    F64,
    Op::Max,
    a,
    b,
    mx
));
checkf!(sqrtpd, "sqrtpd", F64, |a, b, mx| sqrt_packed(F64, b, mx));
checkf!(addss, "addss", F32, |a, b, mx| scalar(
    F32,
    Op::Add,
    a,
    b,
    mx
));
checkf!(divss, "divss", F32, |a, b, mx| scalar(
    F32,
    Op::Div,
    a,
    b,
    mx
));
checkf!(minss, "minss", F32, |a, b, mx| scalar(
    F32,
    Op::Min,
    a,
    b,
    mx
));
checkf!(sqrtss, "sqrtss", F32, |a, b, mx| sqrt_scalar(F32, a, b, mx));
checkf!(mulsd, "mulsd", F64, |a, b, mx| scalar(
    F64,
    Op::Mul,
    a,
    b,
    mx
));
checkf!(subsd, "subsd", F64, |a, b, mx| scalar(
    F64,
    Op::Sub,
    a,
    b,
    mx
));
checkf!(maxsd, "maxsd", F64, |a, b, mx| scalar(
    F64,
    Op::Max,
    a,
    b,
    mx
));
checkf!(sqrtsd, "sqrtsd", F64, |a, b, mx| sqrt_scalar(F64, a, b, mx));
checkf!(subss, "subss", F32, |a, b, mx| scalar(
    F32,
    Op::Sub,
    a,
    b,
    mx
));
checkf!(mulss, "mulss", F32, |a, b, mx| scalar(
    F32,
    Op::Mul,
    a,
    b,
    mx
));
checkf!(maxss, "maxss", F32, |a, b, mx| scalar(
    F32,
    Op::Max,
    a,
    b,
    mx
));
checkf!(addsd, "addsd", F64, |a, b, mx| scalar(
    F64,
    Op::Add,
    a,
    b,
    mx
));
checkf!(divsd, "divsd", F64, |a, b, mx| scalar(
    F64,
    Op::Div,
    a,
    b,
    mx
));
checkf!(minsd, "minsd", F64, |a, b, mx| scalar(
    F64,
    Op::Min,
    a,
    b,
    mx
));

macro_rules! check_cmp {
    ($name:ident, $ins:literal, $f:expr, $model:ident) => {
        #[test]
        fn $name() {
            let mut rng = Rng::new(line!() as u64);
            check_cmp!(@go rng, $ins, $f, $model, 0 1 2 3 4 5 6 7);
        }
    };
    (@go $rng:ident, $ins:literal, $f:expr, $model:ident, $($p:literal)*) => {
        $(
            for mx in modes() {
                for _ in 0..fcases() / 8 {
                    let (a, b) = $rng.fvecs($f);
                    let want = hostf!(concat!($ins, " {a}, {b}, {p}"), a, b, mx, (p = const $p));
                    assert_eq!($model($f, $p, a, b, mx), want, "{} {} {a:#034x} {b:#034x} {:#x}", $ins, $p, mx.0);
                }
            }
        )*
    };
}

check_cmp!(cmpps, "cmpps", F32, cmp_packed);
check_cmp!(cmppd, "cmppd", F64, cmp_packed);
check_cmp!(cmpss, "cmpss", F32, cmp_scalar);
check_cmp!(cmpsd, "cmpsd", F64, cmp_scalar);

macro_rules! check_comi {
    ($name:ident, $ins:literal, $f:expr, $signal:expr) => {
        #[test]
        fn $name() {
            let mut rng = Rng::new(line!() as u64);
            for mx in modes() {
                for _ in 0..fcases() {
                    let (a, b) = rng.fvecs($f);
                    let (z, p, c): (u8, u8, u8);
                    let (_, fl) = hostf!(concat!($ins, " {a}, {b}\nsetz {z}\nsetp {p}\nsetc {c}"), a, b, mx,
                        (z = out(reg_byte) z), (p = out(reg_byte) p), (c = out(reg_byte) c));
                    let want = (z as u32) << 6 | (p as u32) << 2 | c as u32;
                    let (got, got_fl) = comi_scalar($f, $signal, a, b, mx);
                    assert_eq!((got, got_fl), (want, fl), "{} {a:#034x} {b:#034x} {:#x}", $ins, mx.0);
                }
            }
        }
    };
}

check_comi!(comiss, "comiss", F32, true);
check_comi!(ucomiss, "ucomiss", F32, false);
check_comi!(comisd, "comisd", F64, true);
check_comi!(ucomisd, "ucomisd", F64, false);

use super::float::{cvt_dq2p, cvt_p2dq, cvt_packed, cvt_scalar, cvtsi2s, to_int};

impl Rng {
    /// A value for float-to-integer conversions: often in or near the
    /// integer ranges, and near halves.
    fn cval(&mut self, f: Fmt) -> u64 {
        let bias = (1u64 << (f.ebits - 1)) - 1;
        let x = self.fval(f);
        match self.next() % 3 {
            0 => x,
            1 => {
                let e = bias + [30u64, 31, 32, 62, 63, 64][(self.next() % 6) as usize];
                (x & !(((1u64 << f.ebits) - 1) << f.mbits)) | e << f.mbits
            }
            _ => {
                let e = (bias + self.next() % 66).wrapping_sub(2);
                (x & !(((1u64 << f.ebits) - 1) << f.mbits)) | e << f.mbits
            }
        }
    }

    fn cvecs(&mut self, f: Fmt) -> u128 {
        let w = f.ebits + f.mbits + 1;
        (0..128 / w).fold(0, |v, i| set_lane(v, w, i, self.cval(f)))
    }

    fn int(&mut self) -> i64 {
        let x = self.next();
        match self.next() % 4 {
            0 => x as i64,
            1 => (x as i64) >> (x % 64),
            2 => [
                0,
                1,
                -1,
                i64::MAX,
                i64::MIN,
                i32::MAX as i64,
                i32::MIN as i64,
                1 << 53,
                (1 << 24) + 1,
            ][(x % 9) as usize],
            _ => (x as i32) as i64,
        }
    }
}

macro_rules! check_cvt {
    ($name:ident, $ins:literal, $f:expr, |$b:ident, $mx:ident| $model:expr) => {
        #[test]
        fn $name() {
            let mut rng = Rng::new(line!() as u64);
            for $mx in modes() {
                for _ in 0..fcases() {
                    let a = rng.vec();
                    let $b = if rng.next() % 4 == 0 {
                        rng.vec()
                    } else {
                        rng.cvecs($f)
                    };
                    let want = hostf!(concat!($ins, " {a}, {b}"), a, $b, $mx);
                    let got: (u128, u32) = $model;
                    assert_eq!(got, want, "{} {:#034x} {:#x}", $ins, $b, $mx.0);
                }
            }
        }
    };
}

check_cvt!(cvtps2dq, "cvtps2dq", F32, |b, mx| cvt_p2dq(
    F32, b, false, mx
));
check_cvt!(cvttps2dq, "cvttps2dq", F32, |b, mx| cvt_p2dq(
    F32, b, true, mx
));
check_cvt!(cvtpd2dq, "cvtpd2dq", F64, |b, mx| cvt_p2dq(
    F64, b, false, mx
));
check_cvt!(cvttpd2dq, "cvttpd2dq", F64, |b, mx| cvt_p2dq(
    F64, b, true, mx
));
check_cvt!(cvtdq2ps, "cvtdq2ps", F32, |b, mx| cvt_dq2p(F32, b, mx));
check_cvt!(cvtdq2pd, "cvtdq2pd", F32, |b, mx| cvt_dq2p(F64, b, mx));
check_cvt!(cvtps2pd, "cvtps2pd", F32, |b, mx| cvt_packed(F32, b, mx));
check_cvt!(cvtpd2ps, "cvtpd2ps", F64, |b, mx| cvt_packed(F64, b, mx));

macro_rules! check_cvt_scalar {
    ($name:ident, $ins:literal, $from:expr) => {
        #[test]
        fn $name() {
            let mut rng = Rng::new(line!() as u64);
            for mx in modes() {
                for _ in 0..fcases() {
                    let (a, b) = (rng.vec(), rng.fvecs($from).0);
                    let want = hostf!(concat!($ins, " {a}, {b}"), a, b, mx);
                    assert_eq!(
                        cvt_scalar($from, a, b, mx),
                        want,
                        "{} {b:#034x} {:#x}",
                        $ins,
                        mx.0
                    );
                }
            }
        }
    };
}

check_cvt_scalar!(cvtss2sd, "cvtss2sd", F32);
check_cvt_scalar!(cvtsd2ss, "cvtsd2ss", F64);

macro_rules! check_cvtsi {
    ($name:ident, $ins:literal, $f:expr, $wide:expr) => {
        #[test]
        fn $name() {
            let mut rng = Rng::new(line!() as u64);
            for mx in modes() {
                for _ in 0..fcases() {
                    let a = rng.vec();
                    let x = rng.int();
                    let x = if $wide { x } else { x as i32 as i64 };
                    let want = hostf!(concat!($ins, " /* {b} */"), a, 0, mx, (x = in(reg) x));
                    assert_eq!(cvtsi2s($f, a, x, mx), want, "{} {x} {:#x}", $ins, mx.0);
                }
            }
        }
    };
}

check_cvtsi!(cvtsi2ss_32, "cvtsi2ss {a}, {x:e}", F32, false);
check_cvtsi!(cvtsi2ss_64, "cvtsi2ss {a}, {x:r}", F32, true);
check_cvtsi!(cvtsi2sd_32, "cvtsi2sd {a}, {x:e}", F64, false);
check_cvtsi!(cvtsi2sd_64, "cvtsi2sd {a}, {x:r}", F64, true);

macro_rules! check_cvt2si {
    ($name:ident, $ins:literal, $f:expr, $bits:expr, $trunc:expr) => {
        #[test]
        fn $name() {
            let mut rng = Rng::new(line!() as u64);
            for mx in modes() {
                for _ in 0..fcases() {
                    let b = rng.cvecs($f);
                    let r: u64;
                    let (_, fl) = hostf!(concat!($ins, " /* {a} */"), 0, b, mx, (r = out(reg) r));
                    let r = if $bits == 32 { r & 0xffff_ffff } else { r };
                    let x = super::int::lane(b, $f.ebits + $f.mbits + 1, 0);
                    let mut got_fl = 0;
                    let got = to_int($f, x, $bits, $trunc, mx, &mut got_fl);
                    assert_eq!((got, got_fl), (r, fl), "{} {x:#x} {:#x}", $ins, mx.0);
                }
            }
        }
    };
}

check_cvt2si!(cvtss2si_32, "cvtss2si {r:e}, {b}", F32, 32, false);
check_cvt2si!(cvtss2si_64, "cvtss2si {r:r}, {b}", F32, 64, false);
check_cvt2si!(cvttss2si_32, "cvttss2si {r:e}, {b}", F32, 32, true);
check_cvt2si!(cvttss2si_64, "cvttss2si {r:r}, {b}", F32, 64, true);
check_cvt2si!(cvtsd2si_32, "cvtsd2si {r:e}, {b}", F64, 32, false);
check_cvt2si!(cvtsd2si_64, "cvtsd2si {r:r}, {b}", F64, 64, false);
check_cvt2si!(cvttsd2si_32, "cvttsd2si {r:e}, {b}", F64, 32, true);
check_cvt2si!(cvttsd2si_64, "cvttsd2si {r:r}, {b}", F64, 64, true);

/// The generators reach every exception flag and the harness sees them.
#[test]
fn flag_coverage() {
    let mut rng = Rng::new(99);
    let mut seen = 0;
    let mut ftz_ue = false;
    for mx in modes() {
        for _ in 0..2000 {
            let (a, b) = rng.fvecs(F64);
            let (_, fl) = hostf!("divpd {a}, {b}", a, b, mx);
            seen |= fl;
            let (_, fl) = hostf!("mulpd {a}, {b}", a, b, mx);
            ftz_ue |= mx.ftz() && fl & Mxcsr::UE != 0;
            seen |= fl;
        }
    }
    assert_eq!(seen, 0x3f);
    assert!(ftz_ue);
}

/// Edge values of a format: zeros, denormal and normal boundaries,
/// infinities, NaNs, and values next to them (both signs).
fn edges(f: Fmt) -> Vec<u64> {
    let w = f.ebits + f.mbits;
    let one = (((1u64 << (f.ebits - 1)) - 1) << f.mbits) as i64;
    let inf = (((1u64 << f.ebits) - 1) << f.mbits) as i64;
    let minn = 1i64 << f.mbits;
    let q = 1i64 << (f.mbits - 1);
    let mut v = Vec::new();
    for base in [
        0,
        1,
        2,
        3,
        minn - 1,
        minn,
        minn + 1,
        2 * minn,
        one,
        one + 1,
        one - 1,
        one + q,
        inf - 1,
        inf,
        inf + 1,
        inf + q,
        inf + q + 1,
        (one >> 1) + (one >> 2),
    ] {
        for d in [0i64, 1] {
            let x = (base + d) as u64;
            v.push(x);
            v.push(x | 1 << w);
        }
    }
    v
}

macro_rules! check_edges {
    ($name:ident, $f:expr, $($ins:literal => $model:expr),* $(,)?) => {
        #[test]
        fn $name() {
            let e = edges($f);
            let w = $f.ebits + $f.mbits + 1;
            for mx in modes() {
                for &x in &e {
                    for &y in &e {
                        let a = set_lane(0, w, 0, x);
                        let b = set_lane(0, w, 0, y);
                        $(
                            let want = hostf!(concat!($ins, " {a}, {b}"), a, b, mx);
                            let model: fn(u128, u128, Mxcsr) -> (u128, u32) = $model;
                            assert_eq!(model(a, b, mx), want, "{} {x:#x} {y:#x} {:#x}", $ins, mx.0);
                        )*
                    }
                }
            }
        }
    };
}

check_edges!(edges_ss, F32,
    "addss" => |a, b, mx| scalar(F32, Op::Add, a, b, mx),
    "subss" => |a, b, mx| scalar(F32, Op::Sub, a, b, mx),
    "mulss" => |a, b, mx| scalar(F32, Op::Mul, a, b, mx),
    "divss" => |a, b, mx| scalar(F32, Op::Div, a, b, mx),
    "minss" => |a, b, mx| scalar(F32, Op::Min, a, b, mx),
    "maxss" => |a, b, mx| scalar(F32, Op::Max, a, b, mx),
    "sqrtss" => |a, b, mx| sqrt_scalar(F32, a, b, mx),
    "cmpltss" => |a, b, mx| cmp_scalar(F32, 1, a, b, mx),
    "cmpeqss" => |a, b, mx| cmp_scalar(F32, 0, a, b, mx),
    "cvtss2sd" => |a, b, mx| cvt_scalar(F32, a, b, mx),
    "cvtps2dq" => |_, b, mx| cvt_p2dq(F32, b, false, mx),
);
check_edges!(edges_sd, F64,
    "addsd" => |a, b, mx| scalar(F64, Op::Add, a, b, mx),
    "subsd" => |a, b, mx| scalar(F64, Op::Sub, a, b, mx),
    "mulsd" => |a, b, mx| scalar(F64, Op::Mul, a, b, mx),
    "divsd" => |a, b, mx| scalar(F64, Op::Div, a, b, mx),
    "minsd" => |a, b, mx| scalar(F64, Op::Min, a, b, mx),
    "maxsd" => |a, b, mx| scalar(F64, Op::Max, a, b, mx),
    "sqrtsd" => |a, b, mx| sqrt_scalar(F64, a, b, mx),
    "cmplesd" => |a, b, mx| cmp_scalar(F64, 2, a, b, mx),
    "cmpunordsd" => |a, b, mx| cmp_scalar(F64, 3, a, b, mx),
    "cvtsd2ss" => |a, b, mx| cvt_scalar(F64, a, b, mx),
    "cvttpd2dq" => |_, b, mx| cvt_p2dq(F64, b, true, mx),
);
