//! Differential tests against the host x87 FPU (x86-64 only).
//!
//! Every case runs the instruction on the host with all exceptions masked
//! (after FNINIT, FLDCW and FNCLEX) and compares the 80-bit result bits and
//! the status-word bits with the model. The number of random cases per
//! operation is `X87_CASES` (default 20000); `X87_SEED` picks other
//! random streams.

use super::*;
use core::arch::asm;

struct Rng(u64);

impl Rng {
    /// A generator for one test; `X87_SEED` selects another stream.
    fn new(seed: u64) -> Rng {
        let extra: u64 = std::env::var("X87_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Rng(
            (seed ^ extra.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xd134_2543_de82_ef95)
                | 1,
        )
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bool(&mut self) -> bool {
        self.next() & 1 != 0
    }

    /// A significand with the integer bit set, biased towards patterns
    /// that land near rounding boundaries of the 24/53/64-bit precisions.
    fn mant(&mut self) -> u64 {
        let mut m = self.next();
        match self.below(6) {
            0 | 1 => {}
            2 => m &= !((1u64 << self.below(64)) - 1),
            _ => {
                // a run of equal bits around a rounding position
                let pos = [40u32, 11, 0, 39, 10, 41, 12][self.below(7) as usize];
                let len = self.below(30) as u32 + 1;
                let lo = pos.saturating_sub(self.below(3) as u32);
                let run = if len >= 64 {
                    u64::MAX
                } else {
                    ((1u64 << len) - 1) << lo
                };
                if self.bool() {
                    m |= run;
                } else {
                    m &= !run;
                }
                if self.below(4) == 0 {
                    m ^= 1u64 << self.below(64);
                }
            }
        }
        m | INT_BIT
    }

    fn exp(&mut self) -> u16 {
        let centre: i32 = match self.below(8) {
            0 => return (self.below(0x7ffe) + 1) as u16,
            1 | 2 => 0x3fff,
            3 => 1,
            4 => 0x7ffe,
            5 => 0x1fff,
            6 => 0x5fff,
            _ => 0x3fff + 64,
        };
        let e = centre + self.below(161) as i32 - 80;
        e.clamp(1, 0x7ffe) as u16
    }

    fn f80(&mut self) -> F80 {
        let sign = self.bool();
        match self.below(40) {
            0 => F80 {
                sign,
                exp: 0,
                mant: 0,
            },
            1 | 2 => F80 {
                sign,
                exp: 0,
                mant: self.mant() >> (self.below(63) as u32 + 1),
            },
            3 => F80 {
                sign,
                exp: 0,
                mant: self.mant(),
            }, // pseudo-denormal
            4 => F80 {
                sign,
                exp: EXP_MAX,
                mant: INT_BIT,
            },
            5 => F80 {
                sign,
                exp: EXP_MAX,
                mant: self.mant() | QUIET_BIT,
            },
            6 => F80 {
                sign,
                exp: EXP_MAX,
                mant: (self.mant() & !QUIET_BIT) | 1 << self.below(62),
            },
            7 if self.below(4) == 0 => F80 {
                sign,
                exp: self.exp(),
                mant: self.mant() & !INT_BIT,
            },
            8 if self.below(4) == 0 => F80 {
                sign,
                exp: EXP_MAX,
                mant: self.next() & !INT_BIT,
            },
            9 => F80 {
                sign,
                exp: 0x7ffe,
                mant: u64::MAX,
            },
            10 => F80 {
                sign,
                exp: 1,
                mant: INT_BIT,
            },
            11 => F80 {
                sign,
                exp: self.exp(),
                mant: INT_BIT,
            },
            _ => F80 {
                sign,
                exp: self.exp(),
                mant: self.mant(),
            },
        }
    }

    /// A second operand related to `a` (close in value, or scaled so that
    /// products and quotients approach the underflow/overflow limits).
    fn partner(&mut self, a: F80) -> F80 {
        match self.below(4) {
            0 | 1 => self.f80(),
            2 if a.class() == Class::Normal => {
                let d = self.below(70) as i32 - 3;
                let exp = (a.exp as i32 - d).clamp(1, 0x7ffe) as u16;
                let mant = if self.bool() {
                    a.mant ^ (self.next() >> self.below(64))
                } else {
                    self.mant()
                };
                F80 {
                    sign: self.bool(),
                    exp,
                    mant: mant | INT_BIT,
                }
            }
            _ if a.class() == Class::Normal => {
                // exponent such that a*b or a/b is near the limits
                let target =
                    [0i32, 0x7fff, 0x3fff][self.below(3) as usize] + self.below(140) as i32 - 70;
                let e = if self.bool() {
                    target - a.exp as i32 + 0x3fff
                } else {
                    a.exp as i32 - target + 0x3fff
                };
                F80 {
                    sign: self.bool(),
                    exp: e.clamp(1, 0x7ffe) as u16,
                    mant: self.mant(),
                }
            }
            _ => self.f80(),
        }
    }
}

fn cases() -> usize {
    std::env::var("X87_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20000)
}

fn cw_for(ctl_bits: u64) -> u16 {
    let rc = (ctl_bits & 3) as u16;
    let pc = [0u16, 2, 3][(ctl_bits >> 2) as usize % 3];
    0x037f & !0x0f00 | rc << 10 | pc << 8
}

macro_rules! host_binop {
    ($name:ident, $insn:literal) => {
        fn $name(cw: u16, a: F80, b: F80) -> (F80, u16) {
            let (ab, bb) = (a.to_bytes(), b.to_bytes());
            let mut out = [0u8; 10];
            let mut sw: u16 = 0;
            // SAFETY: the x87 stack is empty on entry (ABI) and FNINIT
            // leaves it empty with the default control word on exit.
            unsafe {
                asm!(
                    "fninit",
                    "fldcw word ptr [{cw}]",
                    "fld tbyte ptr [{b}]",
                    "fld tbyte ptr [{a}]",
                    "fnclex",
                    $insn,
                    "fnstsw word ptr [{sw}]",
                    "fstp tbyte ptr [{out}]",
                    "fninit",
                    cw = in(reg) &cw, a = in(reg) ab.as_ptr(), b = in(reg) bb.as_ptr(),
                    sw = in(reg) &mut sw, out = in(reg) out.as_mut_ptr(),
                    out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                    out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
                    options(nostack),
                );
            }
            (F80::from_bytes(out), sw)
        }
    };
}

host_binop!(host_add, "fadd st(0), st(1)");
host_binop!(host_sub, "fsub st(0), st(1)");
host_binop!(host_mul, "fmul st(0), st(1)");
host_binop!(host_div, "fdiv st(0), st(1)");
host_binop!(host_sqrt, "fsqrt");
host_binop!(host_rndint, "frndint");
host_binop!(host_fcom, "fcom st(1)");
host_binop!(host_fucom, "fucom st(1)");
host_binop!(host_scale, "fscale");
host_binop!(host_prem, "fprem");
host_binop!(host_prem1, "fprem1");
host_binop!(host_xam, "fxam");

fn host_xtract(a: F80) -> (F80, F80, u16) {
    let ab = a.to_bytes();
    let (mut sig, mut ex) = ([0u8; 10], [0u8; 10]);
    let mut sw: u16 = 0;
    // SAFETY: see host_binop.
    unsafe {
        asm!(
            "fninit",
            "fld tbyte ptr [{a}]",
            "fnclex",
            "fxtract",
            "fnstsw word ptr [{sw}]",
            "fstp tbyte ptr [{sig}]",
            "fstp tbyte ptr [{ex}]",
            "fninit",
            a = in(reg) ab.as_ptr(), sw = in(reg) &mut sw,
            sig = in(reg) sig.as_mut_ptr(), ex = in(reg) ex.as_mut_ptr(),
            out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
            out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
            options(nostack),
        );
    }
    (F80::from_bytes(ex), F80::from_bytes(sig), sw)
}

macro_rules! host_store {
    ($name:ident, $insn:literal) => {
        fn $name(cw: u16, a: F80) -> (u64, u16) {
            let ab = a.to_bytes();
            let mut out = 0u64;
            let mut sw: u16 = 0;
            // SAFETY: see host_binop.
            unsafe {
                asm!(
                    "fninit",
                    "fldcw word ptr [{cw}]",
                    "fld tbyte ptr [{a}]",
                    "fnclex",
                    $insn,
                    "fnstsw word ptr [{sw}]",
                    "fninit",
                    cw = in(reg) &cw, a = in(reg) ab.as_ptr(),
                    sw = in(reg) &mut sw, out = in(reg) &mut out,
                    out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                    out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
                    options(nostack),
                );
            }
            (out, sw)
        }
    };
}

host_store!(host_st32, "fstp dword ptr [{out}]");
host_store!(host_st64, "fstp qword ptr [{out}]");
host_store!(host_ist16, "fistp word ptr [{out}]");
host_store!(host_ist32, "fistp dword ptr [{out}]");
host_store!(host_ist64, "fistp qword ptr [{out}]");
host_store!(host_istt16, "fisttp word ptr [{out}]");
host_store!(host_istt32, "fisttp dword ptr [{out}]");
host_store!(host_istt64, "fisttp qword ptr [{out}]");

macro_rules! host_load {
    ($name:ident, $insn:literal) => {
        fn $name(v: u64) -> (F80, u16) {
            let mut out = [0u8; 10];
            let mut sw: u16 = 0;
            // SAFETY: see host_binop.
            unsafe {
                asm!(
                    "fninit",
                    $insn,
                    "fnstsw word ptr [{sw}]",
                    "fstp tbyte ptr [{out}]",
                    "fninit",
                    v = in(reg) &v, sw = in(reg) &mut sw, out = in(reg) out.as_mut_ptr(),
                    out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                    out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
                    options(nostack),
                );
            }
            (F80::from_bytes(out), sw)
        }
    };
}

host_load!(host_ld32, "fld dword ptr [{v}]");
host_load!(host_ld64, "fld qword ptr [{v}]");
host_load!(host_ild64, "fild qword ptr [{v}]");

const ARITH_SW: u16 = Exc::EXC_MASK | Exc::C1;

struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, what: &str, input: String, host: String, model: String) {
        if host != model {
            if self.0.len() < 20 {
                self.0
                    .push(format!("{what} {input}: host {host} model {model}"));
            } else {
                self.0.push(String::new());
            }
        }
    }
    fn finish(self, n: usize) {
        if !self.0.is_empty() {
            let shown: Vec<_> = self.0.iter().filter(|s| !s.is_empty()).collect();
            panic!(
                "{} of {n} cases differ:\n{}",
                self.0.len(),
                shown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

fn fmt80(x: F80) -> String {
    format!("{:04x}:{:016x}", x.sign_exp(), x.mant)
}

type BinModel = fn(F80, F80, Ctrl) -> (F80, Exc);
type BinHost = fn(u16, F80, F80) -> (F80, u16);

fn run_binop(name: &str, seed: u64, model: BinModel, host: BinHost) {
    run_binop_with(name, seed, model, host, ARITH_SW, |rng, a| rng.partner(a));
}

/// Special operands, crossed with each other under every control word.
fn edge_values() -> Vec<F80> {
    let base = [
        (0, 0),
        (0, 1),
        (0, 0x4000_0000_0000_0000),
        (0, INT_BIT),
        (0, u64::MAX),
        (1, INT_BIT),
        (1, u64::MAX),
        (0x3fff, INT_BIT),
        (0x3fff, 0xc000_0000_0000_0000),
        (0x3ffe, u64::MAX),
        (0x403e, u64::MAX),
        (0x7ffe, u64::MAX),
        (0x7ffe, INT_BIT),
        (EXP_MAX, INT_BIT),
        (EXP_MAX, 0xc000_0000_0000_0000),
        (EXP_MAX, 0xc000_0000_0000_0001),
        (EXP_MAX, 0x8000_0000_0000_0001),
        (EXP_MAX, 0xa000_0000_0000_0000),
        (EXP_MAX, 0),
        (EXP_MAX, 0x4000_0000_0000_0000),
        (0x3fff, 0x4000_0000_0000_0000),
    ];
    let mut v = Vec::new();
    for (exp, mant) in base {
        for sign in [false, true] {
            v.push(F80 { sign, exp, mant });
        }
    }
    v
}

fn run_binop_with(
    name: &str,
    seed: u64,
    model: BinModel,
    host: BinHost,
    mask: u16,
    partner: fn(&mut Rng, F80) -> F80,
) {
    let mut rng = Rng::new(seed);
    let mut fails = Failures(Vec::new());
    let edges = edge_values();
    let mut seen = [0usize; 16];
    for &a in &edges {
        for &b in &edges {
            for cwi in 0..16u16 {
                let cw = 0x007f | cwi << 8;
                let (hr, hsw) = host(cw, a, b);
                let (mr, mexc) = model(a, b, Ctrl::from_cw(cw));
                fails.check(
                    name,
                    format!("cw={cw:04x} {} {}", fmt80(a), fmt80(b)),
                    format!("{} sw={:04x}", fmt80(hr), hsw & mask),
                    format!("{} sw={:04x}", fmt80(mr), mexc.0 & mask),
                );
            }
        }
    }
    let n = cases();
    for _ in 0..n {
        let a = rng.f80();
        let b = partner(&mut rng, a);
        let (a, b) = if mask == ARITH_SW && rng.bool() {
            (a, b)
        } else {
            (b, a)
        };
        let cw = cw_for(rng.below(12));
        let (hr, hsw) = host(cw, a, b);
        for (i, s) in seen.iter_mut().enumerate() {
            *s += (hsw >> i) as usize & 1;
        }
        let (mr, mexc) = model(a, b, Ctrl::from_cw(cw));
        fails.check(
            name,
            format!("cw={cw:04x} {} {}", fmt80(a), fmt80(b)),
            format!("{} sw={:04x}", fmt80(hr), hsw & mask),
            format!("{} sw={:04x}", fmt80(mr), mexc.0 & mask),
        );
    }
    if std::env::var_os("X87_STATS").is_some() {
        eprintln!("{name}: {n} random cases; host status bit counts IE DE ZE OE UE PE .. .. C0 C1 C2: {:?}", &seen[..11]);
    }
    fails.finish(n);
}

#[test]
fn x87_add() {
    run_binop("fadd", 1, add, host_add);
}

#[test]
fn x87_sub() {
    run_binop("fsub", 2, sub, host_sub);
}

#[test]
fn x87_mul() {
    run_binop("fmul", 3, mul, host_mul);
}

#[test]
fn x87_div() {
    run_binop("fdiv", 4, div, host_div);
}

#[test]
fn x87_sqrt() {
    run_binop("fsqrt", 5, |a, _, c| sqrt(a, c), host_sqrt);
}

#[test]
fn x87_rndint() {
    run_binop("frndint", 6, |a, _, c| round_int(a, c), host_rndint);
}

#[test]
fn x87_compare() {
    for (name, ordered, host) in [
        ("fcom", true, host_fcom as BinHost),
        ("fucom", false, host_fucom),
    ] {
        let mut rng = Rng::new(7 + ordered as u64);
        let mut fails = Failures(Vec::new());
        let n = cases();
        for _ in 0..n {
            let a = rng.f80();
            let b = if rng.below(4) == 0 { a } else { rng.partner(a) };
            let (_, hsw) = host(0x037f, a, b);
            let (_, mexc) = compare(a, b, ordered);
            let m = Exc::EXC_MASK | Exc::CC_MASK;
            fails.check(
                name,
                format!("{} {}", fmt80(a), fmt80(b)),
                format!("{:04x}", hsw & m),
                format!("{:04x}", mexc.0 & m),
            );
        }
        fails.finish(n);
    }
}

#[test]
fn x87_xtract() {
    let mut rng = Rng::new(9);
    let mut fails = Failures(Vec::new());
    let n = cases();
    for _ in 0..n {
        let a = rng.f80();
        let (he, hs, hsw) = host_xtract(a);
        let ((me, ms), mexc) = extract(a);
        fails.check(
            "fxtract",
            fmt80(a),
            format!("{} {} {:04x}", fmt80(he), fmt80(hs), hsw & ARITH_SW),
            format!("{} {} {:04x}", fmt80(me), fmt80(ms), mexc.0 & ARITH_SW),
        );
    }
    fails.finish(n);
}

#[test]
fn x87_store_int_and_float() {
    let mut rng = Rng::new(10);
    let mut fails = Failures(Vec::new());
    let n = cases();
    for _ in 0..n {
        let mut a = rng.f80();
        if a.class() == Class::Normal && rng.bool() {
            // bring the magnitude into the interesting ranges of each format
            let e = [
                0x3fff + 15,
                0x3fff + 31,
                0x3fff + 63,
                0x3fff,
                0x3fff + 127,
                0x3fff - 126,
                0x3fff + 1023,
                0x3fff - 1022,
                0x3fff + 59,
            ];
            let c = e[rng.below(e.len() as u64) as usize];
            a.exp = (c + rng.below(60) as i32 - 30) as u16;
        }
        let cw = cw_for(rng.below(12));
        let rc = Ctrl::from_cw(cw).rc;
        let input = format!("cw={cw:04x} {}", fmt80(a));
        let (h, hsw) = host_st32(cw, a);
        let (m, mexc) = to_f32(a, rc);
        fails.check(
            "fst m32",
            input.clone(),
            format!("{:08x} {:04x}", h as u32, hsw & ARITH_SW),
            format!("{m:08x} {:04x}", mexc.0 & ARITH_SW),
        );
        let (h, hsw) = host_st64(cw, a);
        let (m, mexc) = to_f64(a, rc);
        fails.check(
            "fst m64",
            input.clone(),
            format!("{h:016x} {:04x}", hsw & ARITH_SW),
            format!("{m:016x} {:04x}", mexc.0 & ARITH_SW),
        );
        for (bits, host) in [
            (16u32, host_ist16 as fn(u16, F80) -> (u64, u16)),
            (32, host_ist32),
            (64, host_ist64),
        ] {
            let (h, hsw) = host(cw, a);
            let h = (h << (64 - bits)) as i64 >> (64 - bits);
            let (m, mexc) = to_int(a, rc, bits);
            fails.check(
                &format!("fist m{bits}"),
                input.clone(),
                format!("{h:x} {:04x}", hsw & ARITH_SW),
                format!("{m:x} {:04x}", mexc.0 & ARITH_SW),
            );
        }
        for (bits, host) in [
            (16u32, host_istt16 as fn(u16, F80) -> (u64, u16)),
            (32, host_istt32),
            (64, host_istt64),
        ] {
            let (h, hsw) = host(cw, a);
            let h = (h << (64 - bits)) as i64 >> (64 - bits);
            let (m, mexc) = to_int(a, Rounding::Zero, bits);
            fails.check(
                &format!("fisttp m{bits}"),
                input.clone(),
                format!("{h:x} {:04x}", hsw & ARITH_SW),
                format!("{m:x} {:04x}", mexc.0 & ARITH_SW),
            );
        }
        let (h, hsw) = host_bstp(cw, a);
        let (m, mexc) = to_bcd(a, rc);
        fails.check(
            "fbstp",
            input.clone(),
            format!("{h:02x?} {:04x}", hsw & ARITH_SW),
            format!("{m:02x?} {:04x}", mexc.0 & ARITH_SW),
        );
    }
    fails.finish(n);
}

#[test]
fn x87_load_float_and_int() {
    let mut rng = Rng::new(11);
    let mut fails = Failures(Vec::new());
    let n = cases();
    for _ in 0..n {
        let v = match rng.below(8) {
            0 => rng.next() & 0x800f_ffff_ffff_ffff,
            1 => rng.next() | 0x7ff0_0000_0000_0000,
            2 => rng.next() & 0x807f_ffff,
            3 => rng.next() & 0xffff_ffff | 0x7f80_0000,
            4 | 5 => rng.next() & 0xffff_ffff,
            _ => rng.next() >> rng.below(64),
        };
        let (h, hsw) = host_ld64(v);
        let (m, mexc) = from_f64(v);
        fails.check(
            "fld m64",
            format!("{v:016x}"),
            format!("{} {:04x}", fmt80(h), hsw & ARITH_SW),
            format!("{} {:04x}", fmt80(m), mexc.0 & ARITH_SW),
        );
        let v32 = v & 0xffff_ffff;
        let (h, hsw) = host_ld32(v32);
        let (m, mexc) = from_f32(v32 as u32);
        fails.check(
            "fld m32",
            format!("{v32:08x}"),
            format!("{} {:04x}", fmt80(h), hsw & ARITH_SW),
            format!("{} {:04x}", fmt80(m), mexc.0 & ARITH_SW),
        );
        let (h, _) = host_ild64(v);
        fails.check(
            "fild m64",
            format!("{v:016x}"),
            fmt80(h),
            fmt80(from_int(v as i64)),
        );
    }
    fails.finish(n);
}

#[test]
fn x87_classify_and_bytes() {
    let x = F80::from_bytes([1, 2, 3, 4, 5, 6, 7, 0x88, 0xff, 0xbf]);
    assert_eq!(
        x,
        F80 {
            sign: true,
            exp: 0x3fff,
            mant: 0x8807_0605_0403_0201
        }
    );
    assert_eq!(F80::from_bytes(x.to_bytes()), x);
    assert_eq!(F80::INDEFINITE.class(), Class::QNaN);
    assert_eq!(
        F80 {
            sign: false,
            exp: 5,
            mant: 1
        }
        .class(),
        Class::Unsupported
    );
    let mut f = Fpu::new();
    f.set_top(7);
    f.set_st(0, F80::ONE);
    assert_eq!(f.abridged_tag(), 0x80);
    assert_eq!(f.tw, 0x3fff);
}

fn host_bstp(cw: u16, a: F80) -> ([u8; 10], u16) {
    let ab = a.to_bytes();
    let mut out = [0u8; 10];
    let mut sw: u16 = 0;
    // SAFETY: see host_binop.
    unsafe {
        asm!(
            "fninit",
            "fldcw word ptr [{cw}]",
            "fld tbyte ptr [{a}]",
            "fnclex",
            "fbstp tbyte ptr [{out}]",
            "fnstsw word ptr [{sw}]",
            "fninit",
            cw = in(reg) &cw, a = in(reg) ab.as_ptr(),
            sw = in(reg) &mut sw, out = in(reg) out.as_mut_ptr(),
            out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
            out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
            options(nostack),
        );
    }
    (out, sw)
}

fn host_bld(b: [u8; 10]) -> (F80, u16) {
    let mut out = [0u8; 10];
    let mut sw: u16 = 0;
    // SAFETY: see host_binop.
    unsafe {
        asm!(
            "fninit",
            "fbld tbyte ptr [{b}]",
            "fnstsw word ptr [{sw}]",
            "fstp tbyte ptr [{out}]",
            "fninit",
            b = in(reg) b.as_ptr(), sw = in(reg) &mut sw, out = in(reg) out.as_mut_ptr(),
            out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
            out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
            options(nostack),
        );
    }
    (F80::from_bytes(out), sw)
}

#[test]
fn x87_bld() {
    let mut rng = Rng::new(12);
    let mut fails = Failures(Vec::new());
    let n = cases();
    for _ in 0..n {
        let mut b = [0u8; 10];
        for (i, byte) in b.iter_mut().enumerate() {
            let r = rng.next();
            *byte = if i == 9 {
                (r as u8) & 0x80
            } else {
                (((r % 10) << 4) | ((r >> 8) % 10)) as u8
            };
        }
        if rng.below(4) == 0 {
            let k = rng.below(10) as usize;
            b[..k].fill(0);
        }
        let (h, hsw) = host_bld(b);
        fails.check(
            "fbld",
            format!("{b:02x?}"),
            format!("{} {:04x}", fmt80(h), hsw & ARITH_SW),
            fmt80(from_bcd(b)) + " 0000",
        );
    }
    fails.finish(n);
}

fn scale_partner(rng: &mut Rng, a: F80) -> F80 {
    match rng.below(4) {
        0 => rng.f80(),
        1 => from_int(rng.below(70000) as i64 - 35000),
        2 => {
            let x = from_int(rng.below(40000) as i64 - 20000);
            div(x, from_int(3), Ctrl::DEFAULT).0
        }
        _ => {
            let x = F80 {
                sign: rng.bool(),
                exp: 0x3ffd + rng.below(22) as u16,
                mant: rng.mant(),
            };
            if a.class() == Class::Normal && rng.bool() {
                // land near the overflow and underflow limits
                let t = [0i32, 0x7fff, -64][rng.below(3) as usize] + rng.below(80) as i32
                    - 40
                    - a.exp as i32;
                from_int(t as i64)
            } else {
                x
            }
        }
    }
}

#[test]
fn x87_scale() {
    run_binop_with("fscale", 13, scale, host_scale, ARITH_SW, scale_partner);
}

fn prem_partner(rng: &mut Rng, a: F80) -> F80 {
    if a.class() == Class::Normal && rng.below(3) != 0 {
        let d = rng.below(260) as i32 - 3;
        let exp = (a.exp as i32 - d).clamp(1, 0x7ffe) as u16;
        F80 {
            sign: rng.bool(),
            exp,
            mant: rng.mant(),
        }
    } else {
        rng.f80()
    }
}

#[test]
fn x87_prem() {
    let m = Exc::EXC_MASK | Exc::CC_MASK;
    // operands are swapped by run_binop_with for a non-arith mask: the
    // partner becomes ST(1)... keep the dividend as generated.
    run_binop_with(
        "fprem",
        14,
        |b, a, c| prem(a, b, false, c),
        |cw, b, a| host_prem(cw, a, b),
        m,
        prem_partner,
    );
    run_binop_with(
        "fprem1",
        15,
        |b, a, c| prem(a, b, true, c),
        |cw, b, a| host_prem1(cw, a, b),
        m,
        prem_partner,
    );
}

#[test]
fn x87_xam() {
    let mut rng = Rng::new(16);
    let mut fails = Failures(Vec::new());
    let n = cases();
    for _ in 0..n {
        let a = rng.f80();
        let (_, hsw) = host_xam(0x037f, a, a);
        fails.check(
            "fxam",
            fmt80(a),
            format!("{:04x}", hsw & Exc::CC_MASK),
            format!("{:04x}", examine(a).0),
        );
    }
    fails.finish(n);
}

#[repr(C, align(64))]
struct SaveArea([u8; 512]);

/// Pushes `vals` on the host stack, then FNSAVE (32-bit format) and
/// FXSAVE64 the state.
fn host_save(vals: &[F80; 4]) -> (Vec<u8>, Vec<u8>) {
    let b: Vec<[u8; 10]> = vals.iter().map(|v| v.to_bytes()).collect();
    let mut save = [0u8; 108];
    let mut fx = SaveArea([0u8; 512]);
    // SAFETY: see host_binop; the save areas are large enough and FXSAVE's
    // is 16-byte aligned.
    unsafe {
        asm!(
            "fninit",
            "fld tbyte ptr [{a}]",
            "fld tbyte ptr [{b}]",
            "fld tbyte ptr [{c}]",
            "fld tbyte ptr [{d}]",
            "fxsave64 [{fx}]",
            "fnsave [{sv}]",
            "fninit",
            a = in(reg) b[0].as_ptr(), b = in(reg) b[1].as_ptr(), c = in(reg) b[2].as_ptr(), d = in(reg) b[3].as_ptr(),
            fx = in(reg) fx.0.as_mut_ptr(), sv = in(reg) save.as_mut_ptr(),
            out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
            out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
            options(nostack),
        );
    }
    (save.to_vec(), fx.0[..160].to_vec())
}

#[test]
fn x87_save_images() {
    let mut rng = Rng::new(17);
    for _ in 0..2000 {
        let vals = [rng.f80(), rng.f80(), rng.f80(), rng.f80()];
        let (hs, hfx) = host_save(&vals);
        let mut f = Fpu::new();
        for v in vals {
            let top = f.top().wrapping_sub(1) & 7;
            f.set_top(top);
            f.set_st(0, v);
        }
        let ms = f.save_image(true);
        // control, status and tag words (pointer fields are host addresses)
        assert_eq!(hs[..12], ms[..12], "fnsave env for {vals:?}");
        assert_eq!(hs[28..], ms[28..], "fnsave registers for {vals:?}");
        let mut mfx = [0u8; 160];
        f.fxsave_x87(&mut mfx, true);
        assert_eq!(hfx[..6], mfx[..6], "fxsave header for {vals:?}");
        assert_eq!(hfx[32..160], mfx[32..160], "fxsave registers for {vals:?}");
        let mut g = Fpu::new();
        g.fxrstor_x87(&mfx, true);
        assert_eq!(g.stored_tag_word(), f.stored_tag_word());
        let mut h = Fpu::new();
        h.restore_image(&ms, true);
        assert_eq!((h.cw, h.sw, h.tw, h.regs), (f.cw, f.sw, f.tw, f.regs));
    }
}

macro_rules! host_const {
    ($name:ident, $insn:literal) => {
        fn $name(cw: u16) -> (F80, u16) {
            let mut out = [0u8; 10];
            let mut sw: u16 = 0;
            // SAFETY: see host_binop.
            unsafe {
                asm!(
                    "fninit",
                    "fldcw word ptr [{cw}]",
                    $insn,
                    "fnstsw word ptr [{sw}]",
                    "fstp tbyte ptr [{out}]",
                    "fninit",
                    cw = in(reg) &cw, sw = in(reg) &mut sw, out = in(reg) out.as_mut_ptr(),
                    out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                    out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
                    options(nostack),
                );
            }
            (F80::from_bytes(out), sw)
        }
    };
}

host_const!(host_ld1, "fld1");
host_const!(host_ldl2t, "fldl2t");
host_const!(host_ldl2e, "fldl2e");
host_const!(host_ldpi, "fldpi");
host_const!(host_ldlg2, "fldlg2");
host_const!(host_ldln2, "fldln2");
host_const!(host_ldz, "fldz");

#[test]
fn x87_constants() {
    type ConstHost = fn(u16) -> (F80, u16);
    let hosts: [(Const, ConstHost); 7] = [
        (Const::One, host_ld1),
        (Const::L2T, host_ldl2t),
        (Const::L2E, host_ldl2e),
        (Const::Pi, host_ldpi),
        (Const::Lg2, host_ldlg2),
        (Const::Ln2, host_ldln2),
        (Const::Zero, host_ldz),
    ];
    for (c, host) in hosts {
        for rc in 0..4u16 {
            let cw = 0x037f | rc << 10;
            let (h, hsw) = host(cw);
            assert_eq!(hsw & ARITH_SW, 0, "{c:?} rc={rc}");
            assert_eq!(
                fmt80(load_const(c, Ctrl::from_cw(cw).rc)),
                fmt80(h),
                "{c:?} rc={rc}"
            );
        }
    }
}

macro_rules! host_memop {
    ($name:ident, $insn:literal) => {
        fn $name(cw: u16, a: F80, b: u64) -> (F80, u16) {
            let ab = a.to_bytes();
            let mut out = [0u8; 10];
            let mut sw: u16 = 0;
            // SAFETY: see host_binop.
            unsafe {
                asm!(
                    "fninit",
                    "fldcw word ptr [{cw}]",
                    "fld tbyte ptr [{a}]",
                    "fnclex",
                    $insn,
                    "fnstsw word ptr [{sw}]",
                    "fstp tbyte ptr [{out}]",
                    "fninit",
                    cw = in(reg) &cw, a = in(reg) ab.as_ptr(), b = in(reg) &b,
                    sw = in(reg) &mut sw, out = in(reg) out.as_mut_ptr(),
                    out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                    out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
                    options(nostack),
                );
            }
            (F80::from_bytes(out), sw)
        }
    };
}

host_memop!(host_add32, "fadd dword ptr [{b}]");
host_memop!(host_mul64, "fmul qword ptr [{b}]");
host_memop!(host_div32, "fdiv dword ptr [{b}]");
host_memop!(host_divr64, "fdivr qword ptr [{b}]");
host_memop!(host_sub64, "fsub qword ptr [{b}]");
host_memop!(host_com32, "fcom dword ptr [{b}]");
host_memop!(host_iadd32, "fiadd dword ptr [{b}]");

/// Memory-operand forms are modelled as the exact load followed by the
/// register operation, with the flags of both merged.
#[test]
fn x87_memory_operands() {
    type MemHost = fn(u16, F80, u64) -> (F80, u16);
    let mut rng = Rng::new(18);
    let mut fails = Failures(Vec::new());
    let n = cases() / 4;
    let f32_of = |x: F80| to_f32(x, Rounding::Zero).0 as u64;
    let f64_of = |x: F80| to_f64(x, Rounding::Zero).0;
    let ops: [(&str, MemHost, BinModel, bool); 6] = [
        ("fadd m32", host_add32, add, false),
        ("fmul m64", host_mul64, mul, true),
        ("fdiv m32", host_div32, div, false),
        ("fdivr m64", host_divr64, |a, b, c| div(b, a, c), true),
        ("fsub m64", host_sub64, sub, true),
        (
            "fcom m32",
            host_com32,
            |a, b, _| (F80::ZERO, compare(a, b, true).1),
            false,
        ),
    ];
    for _ in 0..n {
        let a = rng.f80();
        let b = rng.partner(a);
        let cw = cw_for(rng.below(12));
        let ctl = Ctrl::from_cw(cw);
        for (name, host, model, wide) in ops {
            let mut bits = if wide { f64_of(b) } else { f32_of(b) };
            if rng.below(8) == 0 {
                bits ^= 1 << rng.below(if wide { 52 } else { 23 });
            }
            let (bx, e1) = if wide {
                f64_operand(bits)
            } else {
                f32_operand(bits as u32)
            };
            let (mr, e2) = model(a, bx, ctl);
            let (hr, hsw) = host(cw, a, bits);
            let mask = if name.starts_with("fcom") {
                Exc::EXC_MASK | Exc::CC_MASK
            } else {
                ARITH_SW
            };
            let (hr, mr) = if name.starts_with("fcom") {
                (F80::ZERO, F80::ZERO)
            } else {
                (hr, mr)
            };
            fails.check(
                name,
                format!("cw={cw:04x} {} {bits:x}", fmt80(a)),
                format!("{} sw={:04x}", fmt80(hr), hsw & mask),
                format!(
                    "{} sw={:04x}",
                    fmt80(mr),
                    merge_load_flags(e1, &[a, bx], e2).0 & mask
                ),
            );
        }
        let i = rng.next() as i32 as i64 >> rng.below(32);
        let (hr, hsw) = host_iadd32(cw, a, i as u64);
        let (mr, me) = add(a, from_int(i), ctl);
        fails.check(
            "fiadd m32",
            format!("cw={cw:04x} {} {i}", fmt80(a)),
            format!("{} sw={:04x}", fmt80(hr), hsw & ARITH_SW),
            format!("{} sw={:04x}", fmt80(mr), me.0 & ARITH_SW),
        );
    }
    fails.finish(n);
}

/// Exact quotients and square roots (where PE must stay clear), built
/// from short significands.
#[test]
fn x87_exact_div_sqrt() {
    let mut rng = Rng::new(19);
    let mut fails = Failures(Vec::new());
    let n = cases();
    for _ in 0..n {
        let short = |rng: &mut Rng| {
            let bits = rng.below(33) as u32;
            let m = (rng.next() | INT_BIT) & !(u64::MAX >> bits.max(1));
            F80 {
                sign: rng.bool(),
                exp: rng.exp(),
                mant: m | INT_BIT,
            }
        };
        let (x, y) = (short(&mut rng), short(&mut rng));
        let cw = cw_for(rng.below(12));
        let ctl = Ctrl::from_cw(cw);
        let (p, _) = mul(x, y, Ctrl::DEFAULT);
        let (sq, _) = mul(x.abs(), x.abs(), Ctrl::DEFAULT);
        let (near, _) = add(
            sq,
            F80 {
                sign: rng.bool(),
                exp: sq.exp.saturating_sub(63),
                mant: INT_BIT,
            },
            Ctrl::DEFAULT,
        );
        for (name, a, b) in [
            ("fdiv", p, y),
            ("fdiv", p, x),
            ("fsqrt", sq, sq),
            ("fsqrt", near, near),
        ] {
            let (hr, hsw) = if name == "fdiv" {
                host_div(cw, a, b)
            } else {
                host_sqrt(cw, a, b)
            };
            let (mr, me) = if name == "fdiv" {
                div(a, b, ctl)
            } else {
                sqrt(a, ctl)
            };
            fails.check(
                name,
                format!("cw={cw:04x} {} {}", fmt80(a), fmt80(b)),
                format!("{} sw={:04x}", fmt80(hr), hsw & ARITH_SW),
                format!("{} sw={:04x}", fmt80(mr), me.0 & ARITH_SW),
            );
        }
    }
    fails.finish(n);
}

fn host_comi(a: F80, b: F80, ordered: bool) -> (u64, u16) {
    let (ab, bb) = (a.to_bytes(), b.to_bytes());
    let mut sw: u16 = 0;
    let fl: u64;
    // SAFETY: see host_binop; the flags are read through the stack.
    unsafe {
        if ordered {
            asm!(
                "fninit",
                "fld tbyte ptr [{b}]",
                "fld tbyte ptr [{a}]",
                "fnclex",
                "fcomi st, st(1)",
                "pushfq",
                "pop {fl}",
                "fnstsw word ptr [{sw}]",
                "fninit",
                a = in(reg) ab.as_ptr(), b = in(reg) bb.as_ptr(), sw = in(reg) &mut sw, fl = out(reg) fl,
                out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
            );
        } else {
            asm!(
                "fninit",
                "fld tbyte ptr [{b}]",
                "fld tbyte ptr [{a}]",
                "fnclex",
                "fucomi st, st(1)",
                "pushfq",
                "pop {fl}",
                "fnstsw word ptr [{sw}]",
                "fninit",
                a = in(reg) ab.as_ptr(), b = in(reg) bb.as_ptr(), sw = in(reg) &mut sw, fl = out(reg) fl,
                out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
            );
        }
    }
    (fl & 0x8d5, sw)
}

#[test]
fn x87_comi() {
    let mut rng = Rng::new(20);
    let mut fails = Failures(Vec::new());
    let n = cases() / 4;
    for _ in 0..n {
        let a = rng.f80();
        let b = if rng.below(4) == 0 { a } else { rng.partner(a) };
        for ordered in [true, false] {
            let (hf, hsw) = host_comi(a, b, ordered);
            let (rel, exc) = compare(a, b, ordered);
            fails.check(
                if ordered { "fcomi" } else { "fucomi" },
                format!("{} {}", fmt80(a), fmt80(b)),
                format!("{hf:03x} {:04x}", hsw & ARITH_SW),
                format!("{:03x} {:04x}", rel.eflags(), exc.0 & Exc::EXC_MASK),
            );
        }
    }
    fails.finish(n);
}

macro_rules! host_binop_unmasked {
    ($name:ident, $insn:literal) => {
        /// As the masked helpers, but reads the result with the no-wait
        /// FNSAVE so that a pending unmasked exception is never delivered.
        fn $name(cw: u16, a: F80, b: F80) -> (F80, u16) {
            let (ab, bb) = (a.to_bytes(), b.to_bytes());
            let mut save = [0u8; 108];
            let mut sw: u16 = 0;
            // SAFETY: see host_binop; FNSTSW, FNSAVE and FNINIT do not
            // wait, so the pending exception is discarded by FNINIT.
            unsafe {
                asm!(
                    "fninit",
                    "fldcw word ptr [{cw}]",
                    "fld tbyte ptr [{b}]",
                    "fld tbyte ptr [{a}]",
                    "fnclex",
                    $insn,
                    "fnstsw word ptr [{sw}]",
                    "fnsave [{save}]",
                    "fninit",
                    cw = in(reg) &cw, a = in(reg) ab.as_ptr(), b = in(reg) bb.as_ptr(),
                    sw = in(reg) &mut sw, save = in(reg) save.as_mut_ptr(),
                    out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                    out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
                    options(nostack),
                );
            }
            let mut r = [0u8; 10];
            r.copy_from_slice(&save[28..38]);
            (F80::from_bytes(r), sw)
        }
    };
}

host_binop_unmasked!(hostu_add, "fadd st(0), st(1)");
host_binop_unmasked!(hostu_sub, "fsub st(0), st(1)");
host_binop_unmasked!(hostu_mul, "fmul st(0), st(1)");
host_binop_unmasked!(hostu_div, "fdiv st(0), st(1)");
host_binop_unmasked!(hostu_scale, "fscale");
host_binop_unmasked!(hostu_prem, "fprem");
host_binop_unmasked!(hostu_prem1, "fprem1");

fn prem_model(a: F80, b: F80, ctl: Ctrl) -> (F80, Exc) {
    prem(a, b, false, ctl)
}

fn prem1_model(a: F80, b: F80, ctl: Ctrl) -> (F80, Exc) {
    prem(a, b, true, ctl)
}

/// A small operand for the unmasked-underflow FPREM cases: a denormal,
/// a pseudo-denormal or a normal close to the denormal range.
fn tiny_f80(rng: &mut Rng) -> F80 {
    let sign = rng.bool();
    match rng.below(4) {
        0 => F80 {
            sign,
            exp: 0,
            mant: rng.mant() >> (rng.below(63) as u32 + 1),
        },
        1 => F80 {
            sign,
            exp: 0,
            mant: rng.mant(),
        },
        _ => F80 {
            sign,
            exp: (1 + rng.below(80)) as u16,
            mant: rng.mant(),
        },
    }
}

/// FPREM/FPREM1 with UE unmasked: a denormal remainder raises UE and is
/// delivered normalized and re-biased (condition codes as usual), except
/// with an infinite divisor.
#[test]
fn x87_prem_unmasked_underflow() {
    type Case = (&'static str, BinHost, BinModel);
    let ops: [Case; 2] = [
        ("fprem", hostu_prem, prem_model),
        ("fprem1", hostu_prem1, prem1_model),
    ];
    let mut rng = Rng::new(22);
    let mut fails = Failures(Vec::new());
    let n = cases() / 2;
    for k in 0..n {
        let a = tiny_f80(&mut rng);
        let b = match k % 4 {
            0 => tiny_f80(&mut rng),
            1 => F80 {
                sign: rng.bool(),
                ..F80::INFINITY
            },
            _ => rng.f80(),
        };
        // DE masked or not, UE unmasked
        let cw = cw_for(rng.below(12)) & !(Exc::UE | (rng.below(2) as u16) << 1);
        for (name, host, model) in ops {
            let (hr, hsw) = host(cw, a, b);
            let (mr, me) = model(a, b, Ctrl::from_cw(cw));
            // unmasked IE/DE leave the destination alone: the caller's business
            if hsw & (Exc::IE | Exc::DE) & !cw != 0 {
                continue;
            }
            let m = Exc::EXC_MASK | Exc::CC_MASK;
            fails.check(
                name,
                format!("cw={cw:04x} {} {}", fmt80(a), fmt80(b)),
                format!("{} sw={:04x}", fmt80(hr), hsw & m),
                format!("{} sw={:04x}", fmt80(mr), me.0 & m),
            );
        }
    }
    fails.finish(n);
}

/// Unmasked OE/UE responses of the register arithmetic (only finite,
/// non-NaN operands: other unmasked exceptions leave the destination
/// unwritten, which is the caller's business).
#[test]
fn x87_unmasked_over_underflow() {
    type Case = (&'static str, BinHost, BinModel);
    let ops: [Case; 5] = [
        ("fadd", hostu_add, add),
        ("fsub", hostu_sub, sub),
        ("fmul", hostu_mul, mul),
        ("fdiv", hostu_div, div),
        ("fscale", hostu_scale, scale),
    ];
    let mut rng = Rng::new(21);
    let mut fails = Failures(Vec::new());
    let n = cases() / 2;
    for _ in 0..n {
        let a = rng.f80();
        if !matches!(a.class(), Class::Normal | Class::Denormal) {
            continue;
        }
        let masks = [Exc::OE | Exc::UE, Exc::OE, Exc::UE][rng.below(3) as usize];
        let cw = cw_for(rng.below(12)) & !masks;
        for (name, host, model) in ops {
            let b = if name == "fscale" {
                scale_partner(&mut rng, a)
            } else {
                rng.partner(a)
            };
            if !matches!(b.class(), Class::Normal | Class::Denormal | Class::Zero) {
                continue;
            }
            let (hr, hsw) = host(cw, a, b);
            if hsw & (Exc::IE | Exc::DE | Exc::ZE) & !cw != 0 {
                continue;
            }
            let (mr, me) = model(a, b, Ctrl::from_cw(cw));
            fails.check(
                name,
                format!("cw={cw:04x} {} {}", fmt80(a), fmt80(b)),
                format!("{} sw={:04x}", fmt80(hr), hsw & ARITH_SW),
                format!("{} sw={:04x}", fmt80(mr), me.0 & ARITH_SW),
            );
        }
    }
    fails.finish(n);
}
