//! Core arithmetic: unpacking, the single rounding step, and the basic
//! operations (add, sub, mul, div, sqrt, FRNDINT, compares, FXTRACT).

use super::{Class, Ctrl, Exc, Rounding, BIAS, EXP_MAX, F80, INT_BIT};

/// A finite non-zero value `sig * 2^(e - 63)` with `sig` normalized (bit 63
/// set): `e` is the unbiased exponent of the leading bit.
#[derive(Clone, Copy, Debug)]
pub(super) struct Unp {
    pub sign: bool,
    pub e: i32,
    pub sig: u64,
}

/// Unpacks a Normal or Denormal value (pseudo-denormals read with
/// exponent 1).
pub(super) fn unpack(x: F80) -> Unp {
    if x.exp == 0 {
        let lz = x.mant.leading_zeros();
        Unp {
            sign: x.sign,
            e: 1 - BIAS - lz as i32,
            sig: x.mant << lz,
        }
    } else {
        Unp {
            sign: x.sign,
            e: x.exp as i32 - BIAS,
            sig: x.mant,
        }
    }
}

/// Destination format of a rounding step.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fmt {
    pub bias: i32,
    /// Largest biased exponent of a finite value.
    pub max_be: i32,
    /// Significand bits kept.
    pub prec: u32,
    /// Unmasked OE/UE: the result is re-biased instead of saturated or
    /// denormalized (register destinations only).
    pub unmasked: u16,
}

impl Fmt {
    pub const fn ext(prec: u32) -> Fmt {
        Fmt {
            bias: BIAS,
            max_be: EXP_MAX as i32 - 1,
            prec,
            unmasked: 0,
        }
    }
    pub const F64: Fmt = Fmt {
        bias: 1023,
        max_be: 0x7fe,
        prec: 53,
        unmasked: 0,
    };
    pub const F32: Fmt = Fmt {
        bias: 127,
        max_be: 0xfe,
        prec: 24,
        unmasked: 0,
    };
}

/// The result of rounding: biased exponent `be` (0 for denormals and zero,
/// `max_be + 1` for infinity) and the significand aligned so that the
/// integer bit is bit 63.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rounded {
    pub sign: bool,
    pub be: i32,
    pub m: u64,
}

/// Shift right, OR-ing every bit shifted out into bit 0.
pub(super) fn jam(x: u128, sh: u32) -> u128 {
    if sh == 0 {
        x
    } else if sh >= 128 {
        (x != 0) as u128
    } else {
        (x >> sh) | ((x & ((1u128 << sh) - 1)) != 0) as u128
    }
}

/// Drops the low `drop` bits of `sig`; returns (kept, increment, inexact).
pub(super) fn round_bits(sign: bool, sig: u128, drop: u32, rc: Rounding) -> (u128, bool, bool) {
    let kept = sig >> drop;
    let rem = sig & ((1u128 << drop) - 1);
    let half = 1u128 << (drop - 1);
    let inexact = rem != 0;
    let inc = match rc {
        Rounding::Nearest => rem > half || (rem == half && kept & 1 == 1),
        Rounding::Zero => false,
        Rounding::Up => !sign && inexact,
        Rounding::Down => sign && inexact,
    };
    (kept, inc, inexact)
}

/// Rounds the exact non-zero value `sig * 2^(e - 127)` (with `sig`
/// normalized, bit 127 set; lower bits may carry a sticky bit) once into
/// `fmt` under `rc`, with the masked overflow/underflow responses, or the
/// unmasked ones for the exceptions set in `fmt.unmasked`.
pub(super) fn round_pack(sign: bool, e: i32, sig: u128, fmt: Fmt, rc: Rounding) -> (Rounded, Exc) {
    debug_assert!(sig >> 127 == 1);
    let p = fmt.prec;
    let drop = 128 - p;
    let mut exc = Exc(0);
    let mut be = e + fmt.bias;
    if be >= 1 {
        let (k, inc, inexact) = round_bits(sign, sig, drop, rc);
        let mut k = k + inc as u128;
        if k >> p != 0 {
            k >>= 1;
            be += 1;
        }
        if be - REBIAS > fmt.max_be && fmt.unmasked & Exc::OE != 0 {
            // unmasked, and out of range even when re-biased (FSCALE
            // only): infinity whatever the rounding mode
            return (
                Rounded {
                    sign,
                    be: fmt.max_be + 1,
                    m: INT_BIT,
                },
                Exc(Exc::OE | Exc::PE | Exc::C1),
            );
        }
        if be > fmt.max_be && fmt.unmasked & Exc::OE != 0 {
            // unmasked response: the rounded significand, exponent
            // divided by 2^24576
            exc |= Exc::OE;
            if inexact {
                exc |= Exc::PE;
            }
            if inc {
                exc |= Exc::C1;
            }
            return (
                Rounded {
                    sign,
                    be: be - REBIAS,
                    m: (k << (64 - p)) as u64,
                },
                exc,
            );
        }
        if be > fmt.max_be {
            exc |= Exc::OE | Exc::PE;
            let to_inf = match rc {
                Rounding::Nearest => true,
                Rounding::Zero => false,
                Rounding::Up => !sign,
                Rounding::Down => sign,
            };
            if to_inf {
                exc |= Exc::C1;
                return (
                    Rounded {
                        sign,
                        be: fmt.max_be + 1,
                        m: INT_BIT,
                    },
                    exc,
                );
            }
            let m = (u64::MAX >> (64 - p)) << (64 - p);
            return (
                Rounded {
                    sign,
                    be: fmt.max_be,
                    m,
                },
                exc,
            );
        }
        if inexact {
            exc |= Exc::PE;
        }
        if inc {
            exc |= Exc::C1;
        }
        (
            Rounded {
                sign,
                be,
                m: (k << (64 - p)) as u64,
            },
            exc,
        )
    } else {
        // Tininess is detected after rounding: the value is not tiny only
        // if rounding it with an unbounded exponent carries it up to the
        // smallest normal.
        let tiny = if be < 0 {
            true
        } else {
            let (k, inc, _) = round_bits(sign, sig, drop, rc);
            !(inc && (k + 1) >> p != 0)
        };
        if tiny && be + REBIAS < 1 && fmt.unmasked & Exc::UE != 0 {
            // unmasked, and out of range even when re-biased (FSCALE
            // only): zero whatever the rounding mode
            return (Rounded { sign, be: 0, m: 0 }, Exc(Exc::UE | Exc::PE));
        }
        if tiny && fmt.unmasked & Exc::UE != 0 {
            // unmasked response: rounded at an unbounded exponent and
            // multiplied by 2^24576; UE even when exact
            let (k, inc, inexact) = round_bits(sign, sig, drop, rc);
            let mut k = k + inc as u128;
            if k >> p != 0 {
                k >>= 1;
                be += 1;
            }
            exc |= Exc::UE;
            if inexact {
                exc |= Exc::PE;
            }
            if inc {
                exc |= Exc::C1;
            }
            return (
                Rounded {
                    sign,
                    be: be + REBIAS,
                    m: (k << (64 - p)) as u64,
                },
                exc,
            );
        }
        let s = jam(sig, (1 - be) as u32);
        let (k, inc, inexact) = round_bits(sign, s, drop, rc);
        let k = k + inc as u128;
        be = (k >> (p - 1) != 0) as i32;
        if inexact {
            exc |= Exc::PE;
            if tiny {
                exc |= Exc::UE;
            }
        }
        if inc {
            exc |= Exc::C1;
        }
        (
            Rounded {
                sign,
                be,
                m: (k << (64 - p)) as u64,
            },
            exc,
        )
    }
}

/// Exponent adjustment of the unmasked overflow/underflow responses.
const REBIAS: i32 = 24576;

/// Rounds into the extended format with precision control.
fn round_ext(sign: bool, e: i32, sig: u128, ctl: Ctrl) -> (F80, Exc) {
    let fmt = Fmt {
        unmasked: ctl.unmasked,
        ..Fmt::ext(ctl.pc.bits())
    };
    let (r, exc) = round_pack(sign, e, sig, fmt, ctl.rc);
    (
        F80 {
            sign: r.sign,
            exp: r.be as u16,
            mant: r.m,
        },
        exc,
    )
}

/// Rounds a normalized extended value to the precision in `ctl` (as a
/// `x + 0` would).
fn round_unp(u: Unp, ctl: Ctrl) -> (F80, Exc) {
    round_ext(u.sign, u.e, (u.sig as u128) << 64, ctl)
}

/// Handles operands that are NaNs or unsupported encodings. Returns `None`
/// when all operands are numbers (zero, denormal, normal, infinity).
pub(super) fn nan_operands(ops: &[F80]) -> Option<(F80, Exc)> {
    let mut nan: Option<F80> = None;
    let mut exc = Exc(0);
    for &x in ops {
        match x.class() {
            Class::Unsupported => return Some((F80::INDEFINITE, Exc(Exc::IE))),
            Class::SNaN | Class::QNaN => {
                if x.class() == Class::SNaN {
                    exc |= Exc::IE;
                }
                nan = Some(match nan {
                    None => x,
                    Some(n) => larger_nan(n, x),
                });
            }
            _ => {}
        }
    }
    nan.map(|n| (n.quiet(), exc))
}

/// Of two NaNs, the one with the larger significand (x87 rule); on a tie,
/// the positive one.
fn larger_nan(a: F80, b: F80) -> F80 {
    if b.mant > a.mant || (b.mant == a.mant && a.sign) {
        b
    } else {
        a
    }
}

/// DE if any operand is a denormal.
fn denormal_flag(ops: &[F80]) -> Exc {
    Exc(if ops.iter().any(|x| x.class() == Class::Denormal) {
        Exc::DE
    } else {
        0
    })
}

fn zero(sign: bool) -> F80 {
    F80 {
        sign,
        exp: 0,
        mant: 0,
    }
}

fn inf(sign: bool) -> F80 {
    F80 {
        sign,
        ..F80::INFINITY
    }
}

fn invalid() -> (F80, Exc) {
    (F80::INDEFINITE, Exc(Exc::IE))
}

/// FADD.
pub fn add(a: F80, b: F80, ctl: Ctrl) -> (F80, Exc) {
    if let Some(r) = nan_operands(&[a, b]) {
        return r;
    }
    add_signed(a, b, ctl)
}

/// FSUB: `a - b`.
pub fn sub(a: F80, b: F80, ctl: Ctrl) -> (F80, Exc) {
    if let Some(r) = nan_operands(&[a, b]) {
        return r;
    }
    add_signed(a, b.chs(), ctl)
}

fn add_signed(a: F80, b: F80, ctl: Ctrl) -> (F80, Exc) {
    let de = denormal_flag(&[a, b]);
    let (ca, cb) = (a.class(), b.class());
    let (r, exc) = match (ca, cb) {
        (Class::Inf, Class::Inf) => {
            if a.sign == b.sign {
                (a, Exc(0))
            } else {
                invalid()
            }
        }
        (Class::Inf, _) => (a, Exc(0)),
        (_, Class::Inf) => (b, Exc(0)),
        (Class::Zero, Class::Zero) => {
            let s = if a.sign == b.sign {
                a.sign
            } else {
                ctl.rc == Rounding::Down
            };
            (zero(s), Exc(0))
        }
        (Class::Zero, _) => round_unp(unpack(b), ctl),
        (_, Class::Zero) => round_unp(unpack(a), ctl),
        _ => {
            let (ua, ub) = (unpack(a), unpack(b));
            let (big, small) = if (ua.e, ua.sig) >= (ub.e, ub.sig) {
                (ua, ub)
            } else {
                (ub, ua)
            };
            let diff = (big.e - small.e) as u32;
            let x = (big.sig as u128) << 63;
            let y = jam((small.sig as u128) << 63, diff);
            let s = if big.sign == small.sign { x + y } else { x - y };
            if s == 0 {
                (zero(ctl.rc == Rounding::Down), Exc(0))
            } else {
                let lz = s.leading_zeros();
                round_ext(big.sign, big.e + 1 - lz as i32, s << lz, ctl)
            }
        }
    };
    (r, exc | de)
}

/// FMUL.
pub fn mul(a: F80, b: F80, ctl: Ctrl) -> (F80, Exc) {
    if let Some(r) = nan_operands(&[a, b]) {
        return r;
    }
    let de = denormal_flag(&[a, b]);
    let sign = a.sign ^ b.sign;
    let (r, exc) = match (a.class(), b.class()) {
        (Class::Inf, Class::Zero) | (Class::Zero, Class::Inf) => invalid(),
        (Class::Inf, _) | (_, Class::Inf) => (inf(sign), Exc(0)),
        (Class::Zero, _) | (_, Class::Zero) => (zero(sign), Exc(0)),
        _ => {
            let (ua, ub) = (unpack(a), unpack(b));
            let p = ua.sig as u128 * ub.sig as u128;
            let lz = p.leading_zeros();
            round_ext(sign, ua.e + ub.e + 1 - lz as i32, p << lz, ctl)
        }
    };
    (r, exc | de)
}

/// FDIV: `a / b`.
pub fn div(a: F80, b: F80, ctl: Ctrl) -> (F80, Exc) {
    if let Some(r) = nan_operands(&[a, b]) {
        return r;
    }
    let de = denormal_flag(&[a, b]);
    let sign = a.sign ^ b.sign;
    let (r, exc) = match (a.class(), b.class()) {
        (Class::Inf, Class::Inf) | (Class::Zero, Class::Zero) => invalid(),
        (Class::Inf, _) => (inf(sign), Exc(0)),
        (_, Class::Inf) => (zero(sign), Exc(0)),
        (Class::Zero, _) => (zero(sign), Exc(0)),
        // The hardware reports no DE for a denormal dividend here.
        (_, Class::Zero) => return (inf(sign), Exc(Exc::ZE)),
        _ => {
            let (ua, ub) = (unpack(a), unpack(b));
            let d = ub.sig as u128;
            let (num, e) = if ua.sig >= ub.sig {
                ((ua.sig as u128) << 63, ua.e - ub.e)
            } else {
                ((ua.sig as u128) << 64, ua.e - ub.e - 1)
            };
            let (q1, r1) = (num / d, num % d);
            let n2 = r1 << 64;
            let (q2, r2) = (n2 / d, n2 % d);
            let q = (q1 << 64) | q2 | (r2 != 0) as u128;
            round_ext(sign, e, q, ctl)
        }
    };
    (r, exc | de)
}

/// FSQRT.
pub fn sqrt(a: F80, ctl: Ctrl) -> (F80, Exc) {
    if let Some(r) = nan_operands(&[a]) {
        return r;
    }
    let de = denormal_flag(&[a]);
    let (r, exc) = match a.class() {
        Class::Zero => (a, Exc(0)),
        _ if a.sign => return invalid(),
        Class::Inf => (a, Exc(0)),
        _ => {
            let u = unpack(a);
            // value = sig * 2^k; make the exponent even.
            let k = u.e - 63;
            let s = if k.rem_euclid(2) == 0 { 62 } else { 63 };
            let n = (u.sig as u128) << s;
            const EXTRA: u32 = 4;
            let mut rem: u128 = 0;
            let mut root: u128 = 0;
            for i in 0..64 + EXTRA {
                let pair = if i < 64 { (n >> (126 - 2 * i)) & 3 } else { 0 };
                rem = (rem << 2) | pair;
                let trial = (root << 2) | 1;
                root <<= 1;
                if rem >= trial {
                    rem -= trial;
                    root |= 1;
                }
            }
            let lz = root.leading_zeros();
            let r = (root << lz) | (rem != 0) as u128;
            let e = 127 + (k - s) / 2 - EXTRA as i32 - lz as i32;
            round_ext(false, e, r, ctl)
        }
    };
    (r, exc | de)
}

/// FRNDINT: rounds to an integral value under RC (PC does not apply).
pub fn round_int(a: F80, ctl: Ctrl) -> (F80, Exc) {
    if let Some(r) = nan_operands(&[a]) {
        return r;
    }
    let de = denormal_flag(&[a]);
    let (r, exc) = match a.class() {
        Class::Zero | Class::Inf => (a, Exc(0)),
        _ => {
            let u = unpack(a);
            if u.e >= 63 {
                (a, Exc(0))
            } else {
                let (k, inc, inexact) = to_integer(u, ctl.rc);
                let mut exc = Exc(0);
                if inexact {
                    exc |= Exc::PE;
                }
                if inc {
                    exc |= Exc::C1;
                }
                let k = k as u64; // at most 2^63
                let r = if k == 0 {
                    zero(u.sign)
                } else {
                    let lz = k.leading_zeros();
                    F80 {
                        sign: u.sign,
                        exp: (BIAS + 63 - lz as i32) as u16,
                        mant: k << lz,
                    }
                };
                (r, exc)
            }
        }
    };
    (r, exc | de)
}

/// Rounds the magnitude of `u` to an integer under `rc`: returns
/// (magnitude, rounded up, inexact). Magnitudes of 2^128 and more are
/// not exact (the shift saturates) and only matter for range checks.
pub(super) fn to_integer(u: Unp, rc: Rounding) -> (u128, bool, bool) {
    if u.e >= 63 {
        let sh = (u.e - 63).min(64) as u32;
        return ((u.sig as u128) << sh, false, false);
    }
    // Fixed point with 64 fraction bits.
    let fx = jam((u.sig as u128) << 64, (63 - u.e) as u32);
    let (k, inc, inexact) = round_bits(u.sign, fx, 64, rc);
    (k + inc as u128, inc, inexact)
}

/// Relation found by a compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    Less,
    Equal,
    Greater,
    Unordered,
}

impl Relation {
    /// The condition codes FCOM/FUCOM set (C3, C2, C0; C1 cleared).
    pub fn cc(self) -> u16 {
        match self {
            Relation::Greater => 0,
            Relation::Less => Exc::C0,
            Relation::Equal => Exc::C3,
            Relation::Unordered => Exc::C0 | Exc::C2 | Exc::C3,
        }
    }

    /// The EFLAGS bits FCOMI/FUCOMI set: ZF, PF and CF in their EFLAGS
    /// positions (OF, SF and AF are cleared).
    pub fn eflags(self) -> u64 {
        const CF: u64 = 1;
        const PF: u64 = 1 << 2;
        const ZF: u64 = 1 << 6;
        match self {
            Relation::Greater => 0,
            Relation::Less => CF,
            Relation::Equal => ZF,
            Relation::Unordered => ZF | PF | CF,
        }
    }
}

/// FCOM (`ordered`: any NaN is invalid) or FUCOM (only SNaNs and
/// unsupported encodings are invalid). The returned flags include the
/// condition codes.
pub fn compare(a: F80, b: F80, ordered: bool) -> (Relation, Exc) {
    let mut exc = Exc(0);
    let mut unordered = false;
    for x in [a, b] {
        match x.class() {
            Class::Unsupported | Class::SNaN => {
                exc |= Exc::IE;
                unordered = true;
            }
            Class::QNaN => {
                if ordered {
                    exc |= Exc::IE;
                }
                unordered = true;
            }
            _ => {}
        }
    }
    let rel = if unordered {
        Relation::Unordered
    } else {
        exc = exc | denormal_flag(&[a, b]);
        let ka = order_key(a);
        let kb = order_key(b);
        match ka.cmp(&kb) {
            core::cmp::Ordering::Less => Relation::Less,
            core::cmp::Ordering::Equal => Relation::Equal,
            core::cmp::Ordering::Greater => Relation::Greater,
        }
    };
    exc |= rel.cc();
    (rel, exc)
}

/// A totally ordered key for non-NaN values (zeros of both signs equal).
fn order_key(x: F80) -> i128 {
    let mag: i128 = match x.class() {
        Class::Zero => 0,
        Class::Inf => i128::MAX,
        _ => {
            let u = unpack(x);
            (((u.e + BIAS + 64) as i128) << 64) | u.sig as i128
        }
    };
    if x.sign {
        -mag
    } else {
        mag
    }
}

/// FXTRACT: returns (exponent, significand); the hardware leaves the
/// significand in ST(0) and the exponent in ST(1).
pub fn extract(a: F80) -> ((F80, F80), Exc) {
    if let Some((r, exc)) = nan_operands(&[a]) {
        return ((r, r), exc);
    }
    let de = denormal_flag(&[a]);
    match a.class() {
        Class::Zero => ((inf(true), a), Exc(Exc::ZE)),
        Class::Inf => ((inf(false), a), Exc(0)),
        _ => {
            let u = unpack(a);
            let sig = F80 {
                sign: u.sign,
                exp: BIAS as u16,
                mant: u.sig,
            };
            ((from_i64(u.e as i64), sig), de)
        }
    }
}

/// An exact integer to extended conversion (FILD).
pub fn from_i64(v: i64) -> F80 {
    if v == 0 {
        return F80::ZERO;
    }
    let m = v.unsigned_abs();
    let lz = m.leading_zeros();
    F80 {
        sign: v < 0,
        exp: (BIAS + 63 - lz as i32) as u16,
        mant: m << lz,
    }
}
