//! FSCALE, FPREM/FPREM1, FXAM and the packed-BCD conversions.

use super::arith::{nan_operands, round_pack, to_integer, unpack, Fmt};
use super::{Class, Ctrl, Exc, Rounding, F80, INT_BIT};

fn zero(sign: bool) -> F80 {
    F80 {
        sign,
        exp: 0,
        mant: 0,
    }
}

fn de_if(ops: &[F80]) -> Exc {
    Exc(if ops.iter().any(|x| x.class() == Class::Denormal) {
        Exc::DE
    } else {
        0
    })
}

/// Packs the exact value `mag * 2^(lo - 63)` (as `round_ext` at 64 bits),
/// with the unmasked OE/UE responses in `unmasked` (re-biased result, UE
/// even for an exact tiny value).
fn pack_exact(sign: bool, lo: i32, mag: u128, rc: Rounding, unmasked: u16) -> (F80, Exc) {
    if mag == 0 {
        return (zero(sign), Exc(0));
    }
    let lz = mag.leading_zeros();
    let fmt = Fmt {
        unmasked,
        ..Fmt::ext(64)
    };
    let (r, exc) = round_pack(sign, lo - 63 + 127 - lz as i32, mag << lz, fmt, rc);
    (
        F80 {
            sign: r.sign,
            exp: r.be as u16,
            mant: r.m,
        },
        exc,
    )
}

/// FSCALE: `a * 2^trunc(b)`, rounded under RC at full 64-bit precision.
pub fn scale(a: F80, b: F80, ctl: Ctrl) -> (F80, Exc) {
    if let Some(r) = nan_operands(&[a, b]) {
        return r;
    }
    let de = de_if(&[a, b]);
    let (ca, cb) = (a.class(), b.class());
    let (r, exc) = match cb {
        Class::Inf if !b.sign => match ca {
            Class::Zero => return (F80::INDEFINITE, Exc(Exc::IE)),
            _ => (
                F80 {
                    sign: a.sign,
                    ..F80::INFINITY
                },
                Exc(0),
            ),
        },
        Class::Inf => match ca {
            Class::Inf => return (F80::INDEFINITE, Exc(Exc::IE)),
            _ => (zero(a.sign), Exc(0)),
        },
        _ => match ca {
            Class::Zero | Class::Inf => (a, Exc(0)),
            _ => {
                let n: i32 = if cb == Class::Zero {
                    0
                } else {
                    let ub = unpack(b);
                    let (k, _, _) = to_integer(ub, Rounding::Zero);
                    let k = k.min(1 << 20) as i32;
                    if ub.sign {
                        -k
                    } else {
                        k
                    }
                };
                if cb == Class::Zero
                    && ca == Class::Denormal
                    && a.mant & INT_BIT == 0
                    && ctl.unmasked & Exc::UE != 0
                {
                    // the unmasked-underflow path leaves a true denormal
                    // alone (no UE) when ST(1) is a zero
                    return (a, de);
                }
                let ua = unpack(a);
                let (r, exc) = round_pack(
                    ua.sign,
                    ua.e + n,
                    (ua.sig as u128) << 64,
                    Fmt {
                        unmasked: ctl.unmasked,
                        ..Fmt::ext(64)
                    },
                    ctl.rc,
                );
                (
                    F80 {
                        sign: r.sign,
                        exp: r.be as u16,
                        mant: r.m,
                    },
                    exc,
                )
            }
        },
    };
    (r, exc | de)
}

/// FPREM (`ieee` false: quotient truncated) or FPREM1 (`ieee` true:
/// quotient rounded to nearest even) of `a` (ST0) by `b` (ST1). The flags
/// carry C2 (incomplete reduction) and the low quotient bits in C0, C3, C1.
/// The result is exact; only `ctl.unmasked` matters: with UE unmasked a
/// denormal result raises UE and comes back normalized with its exponent
/// re-biased by 24576 (the quotient bits are unaffected), except when the
/// divisor is an infinity (the dividend is returned as is, no UE), as the
/// host does.
pub fn prem(a: F80, b: F80, ieee: bool, ctl: Ctrl) -> (F80, Exc) {
    let ue = ctl.unmasked & Exc::UE;
    if let Some(r) = nan_operands(&[a, b]) {
        return r;
    }
    let de = de_if(&[a, b]);
    let (ca, cb) = (a.class(), b.class());
    if ca == Class::Inf || cb == Class::Zero {
        return (F80::INDEFINITE, Exc(Exc::IE));
    }
    if ca == Class::Zero {
        return (a, de);
    }
    let ua = unpack(a);
    if cb == Class::Inf {
        // the dividend comes back normalized (pseudo-denormals too)
        let (r, exc) = pack_exact(ua.sign, ua.e, ua.sig as u128, Rounding::Nearest, 0);
        return (r, exc | de);
    }
    let ub = unpack(b);
    let d = ua.e - ub.e;
    let (eb, partial) = if d >= 64 {
        (ua.e - ((d & 31) | 32), true)
    } else {
        (ub.e, false)
    };
    let d = ua.e - eb;
    let rc = Rounding::Nearest;
    if d < -1 || (d == -1 && !ieee) {
        let (r, exc) = pack_exact(ua.sign, ua.e, ua.sig as u128, rc, ue);
        return (r, exc | de);
    }
    let lo = ua.e.min(eb);
    let num = (ua.sig as u128) << (ua.e - lo);
    let den = (ub.sig as u128) << (eb - lo);
    let mut q = num / den;
    let mut r = num % den;
    let mut sign = ua.sign;
    if ieee && !partial && (2 * r > den || (2 * r == den && q & 1 == 1)) {
        q += 1;
        r = den - r;
        sign = !sign;
    }
    if r == 0 {
        sign = ua.sign;
    }
    let (res, exc) = pack_exact(sign, lo, r, rc, ue);
    let mut cc = 0;
    if partial {
        cc |= Exc::C2;
    } else {
        if q & 4 != 0 {
            cc |= Exc::C0;
        }
        if q & 2 != 0 {
            cc |= Exc::C3;
        }
        if q & 1 != 0 {
            cc |= Exc::C1;
        }
    }
    (res, exc | de | Exc(cc))
}

/// FXAM condition codes (C3, C2, C0 class; C1 sign) of a non-empty
/// register. For an empty register the hardware reports C3|C0 (and the
/// sign of whatever the register holds).
pub fn examine(x: F80) -> Exc {
    let class = match x.class() {
        Class::Unsupported => 0,
        Class::QNaN | Class::SNaN => Exc::C0,
        Class::Normal => Exc::C2,
        Class::Inf => Exc::C2 | Exc::C0,
        Class::Zero => Exc::C3,
        Class::Denormal => Exc::C3 | Exc::C2,
    };
    Exc(class | if x.sign { Exc::C1 } else { 0 })
}

/// FBLD: the 18-digit packed-BCD integer in `b` (sign in bit 7 of byte 9).
/// Invalid digits are weighted like valid ones.
pub fn from_bcd(b: [u8; 10]) -> F80 {
    let mut v: u64 = 0;
    for i in (0..9).rev() {
        v = v * 100 + (b[i] >> 4) as u64 * 10 + (b[i] & 15) as u64;
    }
    let x = super::arith::from_i64(v as i64);
    F80 {
        sign: b[9] & 0x80 != 0,
        ..x
    }
}

/// FBSTP: rounds under RC to an 18-digit packed-BCD integer; values that
/// do not fit, NaNs, infinities and unsupported encodings store the BCD
/// indefinite with IE.
pub fn to_bcd(a: F80, rc: Rounding) -> ([u8; 10], Exc) {
    const INDEF: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 0xc0, 0xff, 0xff];
    let (mag, exc) = match a.class() {
        Class::Unsupported | Class::SNaN | Class::QNaN | Class::Inf => {
            return (INDEF, Exc(Exc::IE))
        }
        Class::Zero => (0u128, Exc(0)),
        _ => {
            let u = unpack(a);
            let (k, inc, inexact) = to_integer(u, rc);
            if k >= 1_000_000_000_000_000_000 || u.e >= 127 {
                return (INDEF, Exc(Exc::IE));
            }
            let mut exc = Exc(0);
            if inexact {
                exc |= Exc::PE;
            }
            if inc {
                exc |= Exc::C1;
            }
            (k, exc)
        }
    };
    let mut out = [0u8; 10];
    let mut v = mag as u64;
    for byte in out.iter_mut().take(9) {
        let lo = (v % 10) as u8;
        v /= 10;
        let hi = (v % 10) as u8;
        v /= 10;
        *byte = hi << 4 | lo;
    }
    out[9] = if a.sign { 0x80 } else { 0 };
    (out, exc)
}

/// The constants of FLD1, FLDL2T, FLDL2E, FLDPI, FLDLG2, FLDLN2 and FLDZ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Const {
    One,
    L2T,
    L2E,
    Pi,
    Lg2,
    Ln2,
    Zero,
}

/// Loads a constant, rounded from its 128-bit expansion under RC (the
/// 387 and later round the constants; no flags are raised).
pub fn load_const(c: Const, rc: Rounding) -> F80 {
    let (exp, bits): (u16, u128) = match c {
        Const::One => return F80::ONE,
        Const::Zero => return F80::ZERO,
        Const::L2T => (0x4000, 0xd49a_784b_cd1b_8afe_492b_f6ff_4daf_db4c),
        Const::L2E => (0x3fff, 0xb8aa_3b29_5c17_f0bb_be87_fed0_691d_3e88),
        Const::Pi => (0x4000, 0xc90f_daa2_2168_c234_c4c6_628b_80dc_1cd1),
        Const::Lg2 => (0x3ffd, 0x9a20_9a84_fbcf_f798_8f89_59ac_0b7c_9178),
        Const::Ln2 => (0x3ffe, 0xb172_17f7_d1cf_79ab_c9e3_b398_03f2_f6af),
    };
    // the expansions are truncated, hence inexact: keep a sticky bit
    let (r, _) = round_pack(false, exp as i32 - super::BIAS, bits | 1, Fmt::ext(64), rc);
    F80 {
        sign: false,
        exp: r.be as u16,
        mant: r.m,
    }
}
