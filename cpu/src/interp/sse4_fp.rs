//! Pure floating-point cores of SSE3 (ADDSUBPS/PD, HADDPS/PD, HSUBPS/PD)
//! and SSE4.1 (DPPS, DPPD, ROUNDPS/PD/SS/SD), built on the bit-exact lane
//! arithmetic of [`crate::simd::float`]. Each returns the new destination
//! and the MXCSR exception flags to report (bits 0..5); the caller merges
//! them before writing the destination, and faults if one is unmasked.
//!
//! The flags are resolved per computation step ([`crate::simd::resolve`]):
//! an unmasked pre-computation exception (IE, DE, ZE) in any lane of a
//! step leaves only the pre-computation flags of that step. DPPS/DPPD
//! have several steps (multiply, then one or two adds); a step with an
//! unmasked exception ends the instruction, the later ones are not
//! evaluated, and the flags of the earlier (masked) steps stay reported
//! (all checked on the host).

use crate::simd::{arith, lane, resolve, set_lane, unmasked, Fmt, Mxcsr, Op, F32};

/// Merges the lane flags `fl` of one computation step into `acc`; true
/// when the step raised an unmasked exception (the instruction faults
/// after it, the later steps are not evaluated).
#[inline]
fn step(acc: &mut u32, fl: u32, mx: Mxcsr) -> bool {
    let fl = resolve(fl, mx);
    *acc |= fl;
    unmasked(fl, mx)
}

/// Lane width in bits of `f`.
#[inline(always)]
fn width(f: Fmt) -> u32 {
    f.ebits + f.mbits + 1
}

/// ADDSUBPS/ADDSUBPD: even lanes `a - b`, odd lanes `a + b`.
pub fn addsub(f: Fmt, a: u128, b: u128, mx: Mxcsr) -> (u128, u32) {
    let w = width(f);
    let mut fl = 0;
    let mut r = 0u128;
    for i in 0..128 / w {
        let op = if i & 1 == 0 { Op::Sub } else { Op::Add };
        let x = arith(f, op, lane(a, w, i), lane(b, w, i), mx, &mut fl);
        r = set_lane(r, w, i, x);
    }
    (r, resolve(fl, mx))
}

/// HADDPS/HADDPD/HSUBPS/HSUBPD: adjacent pairs of `a` give the low half,
/// pairs of `b` the high half; each pair is `even op odd`.
pub fn hop(f: Fmt, sub: bool, a: u128, b: u128, mx: Mxcsr) -> (u128, u32) {
    let w = width(f);
    let half = 64 / w;
    let op = if sub { Op::Sub } else { Op::Add };
    let mut fl = 0;
    let mut r = 0u128;
    for (k, src) in [a, b].into_iter().enumerate() {
        for i in 0..half {
            let x = lane(src, w, 2 * i);
            let y = lane(src, w, 2 * i + 1);
            r = set_lane(r, w, k as u32 * half + i, arith(f, op, x, y, mx, &mut fl));
        }
    }
    (r, resolve(fl, mx))
}

/// ROUNDPS/PD/SS/SD on one lane: `x` rounded to an integral value with
/// rounding control imm8[1:0], or MXCSR.RC when imm8[2] is set; imm8[3]
/// suppresses the precision exception. An SNaN raises IE and is quieted;
/// DAZ flushes a denormal input to a signed zero; DE is never raised.
pub fn round(f: Fmt, x: u64, imm: u8, mx: Mxcsr, flags: &mut u32) -> u64 {
    let mbits = f.mbits;
    let emax = (1u64 << f.ebits) - 1;
    let bias = (emax >> 1) as i64;
    let sign_bit = 1u64 << (f.ebits + mbits);
    let sign = x & sign_bit != 0;
    let e = (x >> mbits) & emax;
    let m = x & ((1u64 << mbits) - 1);
    if e == emax {
        if m != 0 && m & (1 << (mbits - 1)) == 0 {
            *flags |= Mxcsr::IE;
        }
        return if m != 0 { x | 1 << (mbits - 1) } else { x };
    }
    if e == 0 && (m == 0 || mx.daz()) {
        return x & sign_bit;
    }
    let rc = if imm & 4 != 0 {
        mx.rc()
    } else {
        (imm & 3) as u32
    };
    let exp = e as i64 - bias;
    if exp >= mbits as i64 {
        return x;
    }
    let inexact = |flags: &mut u32| {
        if imm & 8 == 0 {
            *flags |= Mxcsr::PE;
        }
    };
    let mag = x & !sign_bit;
    let one = (bias as u64) << mbits;
    if exp < 0 {
        // 0 < |x| < 1: the result is a signed zero or a signed one.
        inexact(flags);
        let up = match rc {
            0 => exp == -1 && m != 0, // above one half (exactly a half ties to 0)
            1 => sign,
            2 => !sign,
            _ => false,
        };
        return (x & sign_bit) | if up { one } else { 0 };
    }
    let fbits = (mbits as i64 - exp) as u32;
    let fmask = (1u64 << fbits) - 1;
    let frac = mag & fmask;
    if frac == 0 {
        return x;
    }
    inexact(flags);
    let base = mag & !fmask;
    let half = 1u64 << (fbits - 1);
    let up = match rc {
        0 => frac > half || (frac == half && (base >> fbits) & 1 != 0),
        1 => sign,
        2 => !sign,
        _ => false,
    };
    // A carry out of the mantissa bumps the exponent: still exact.
    (x & sign_bit) | if up { base + (1 << fbits) } else { base }
}

/// ROUNDPS/ROUNDPD.
pub fn round_packed(f: Fmt, b: u128, imm: u8, mx: Mxcsr) -> (u128, u32) {
    let w = width(f);
    let mut fl = 0;
    let mut r = 0u128;
    for i in 0..128 / w {
        r = set_lane(r, w, i, round(f, lane(b, w, i), imm, mx, &mut fl));
    }
    (r, resolve(fl, mx))
}

/// ROUNDSS/ROUNDSD: `b`'s low lane rounded into `a`'s low lane.
pub fn round_scalar(f: Fmt, a: u128, b: u128, imm: u8, mx: Mxcsr) -> (u128, u32) {
    let w = width(f);
    let mut fl = 0;
    let x = round(f, lane(b, w, 0), imm, mx, &mut fl);
    (set_lane(a, w, 0, x), resolve(fl, mx))
}

/// DPPS: the products of the lanes selected by imm8[7:4] (+0.0 elsewhere)
/// summed pairwise, (p0 + p1) + (p2 + p3), each step rounded per MXCSR, into
/// the lanes of imm8[3:0] (+0.0 elsewhere), as the SDM orders it.
///
/// The SDM leaves open which NaN wins when several are involved; the
/// hardware computes every output lane with its own operand order (found
/// on the host): a swapped-pairs add `t[i] = p[i^1] + p[i]`, then a
/// swapped-halves add `u[i] = t[i] + t[i^2]`, each add returning its
/// first NaN operand. Sums are otherwise commutative, so only NaN
/// selection depends on this.
///
/// The multiply and the two add steps report their exceptions separately
/// (see the module comment).
pub fn dpps(a: u128, b: u128, imm: u8, mx: Mxcsr) -> (u128, u32) {
    let f = F32;
    let mut acc = 0;
    let mut fl = 0;
    let mut p = [0u64; 4];
    for (i, pi) in p.iter_mut().enumerate() {
        if imm >> (4 + i) & 1 != 0 {
            let i = i as u32;
            *pi = arith(f, Op::Mul, lane(a, 32, i), lane(b, 32, i), mx, &mut fl);
        }
    }
    if step(&mut acc, fl, mx) {
        return (0, acc);
    }
    fl = 0;
    let mut t = [0u64; 4];
    for (i, ti) in t.iter_mut().enumerate() {
        *ti = arith(f, Op::Add, p[i ^ 1], p[i], mx, &mut fl);
    }
    if step(&mut acc, fl, mx) {
        return (0, acc);
    }
    fl = 0;
    let mut r = 0u128;
    for i in 0..4 {
        let u = arith(f, Op::Add, t[i], t[i ^ 2], mx, &mut fl);
        if imm >> i & 1 != 0 {
            r = set_lane(r, 32, i as u32, u);
        }
    }
    step(&mut acc, fl, mx);
    (r, acc)
}

/// DPPD: the products of the lanes selected by imm8[5:4] (+0.0 elsewhere)
/// summed, into the lanes of imm8[1:0] (+0.0 elsewhere). Output lane i
/// computes `p[i] + p[i^1]` (NaN selection, found on the host).
/// The multiply and the add step report their exceptions separately.
pub fn dppd(a: u128, b: u128, imm: u8, mx: Mxcsr) -> (u128, u32) {
    let f = crate::simd::F64;
    let mut acc = 0;
    let mut fl = 0;
    let mut p = [0u64; 2];
    for (i, pi) in p.iter_mut().enumerate() {
        if imm >> (4 + i) & 1 != 0 {
            let i = i as u32;
            *pi = arith(f, Op::Mul, lane(a, 64, i), lane(b, 64, i), mx, &mut fl);
        }
    }
    if step(&mut acc, fl, mx) {
        return (0, acc);
    }
    fl = 0;
    let mut r = 0u128;
    for i in 0..2 {
        let t = arith(f, Op::Add, p[i], p[i ^ 1], mx, &mut fl);
        if imm >> i & 1 != 0 {
            r = set_lane(r, 64, i as u32, t);
        }
    }
    step(&mut acc, fl, mx);
    (r, acc)
}
