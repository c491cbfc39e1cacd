//! Conversions between the extended format and integers / f32 / f64.

use super::arith::{nan_operands, round_pack, to_integer, unpack, Fmt};
use super::{Class, Exc, Rounding, F80, INT_BIT};

/// Memory formats of FLD/FST m32 and m64.
#[derive(Clone, Copy, Debug)]
struct Binary {
    ebits: u32,
    mbits: u32,
    fmt: Fmt,
}

const B32: Binary = Binary {
    ebits: 8,
    mbits: 23,
    fmt: Fmt::F32,
};
const B64: Binary = Binary {
    ebits: 11,
    mbits: 52,
    fmt: Fmt::F64,
};

fn load_binary(bits: u64, f: Binary, quiet: bool) -> (F80, Exc) {
    let sign = bits >> (f.ebits + f.mbits) & 1 != 0;
    let emax = (1u64 << f.ebits) - 1;
    let be = (bits >> f.mbits) & emax;
    let m = bits & ((1u64 << f.mbits) - 1);
    let shift = 63 - f.mbits;
    if be == emax {
        if m == 0 {
            return (
                F80 {
                    sign,
                    ..F80::INFINITY
                },
                Exc(0),
            );
        }
        let x = F80 {
            sign,
            exp: super::EXP_MAX,
            mant: INT_BIT | m << shift,
        };
        if !quiet {
            return (x, Exc(0));
        }
        let exc = Exc(if x.class() == Class::SNaN { Exc::IE } else { 0 });
        return (x.quiet(), exc);
    }
    if be == 0 {
        if m == 0 {
            return (
                F80 {
                    sign,
                    exp: 0,
                    mant: 0,
                },
                Exc(0),
            );
        }
        let lz = m.leading_zeros();
        let e = 63 - lz as i32 - (f.fmt.bias - 1 + f.mbits as i32);
        let x = F80 {
            sign,
            exp: (e + super::BIAS) as u16,
            mant: m << lz,
        };
        return (x, Exc(Exc::DE));
    }
    let e = be as i32 - f.fmt.bias;
    (
        F80 {
            sign,
            exp: (e + super::BIAS) as u16,
            mant: INT_BIT | m << shift,
        },
        Exc(0),
    )
}

fn store_binary(a: F80, rc: Rounding, f: Binary) -> (u64, Exc) {
    let sbit = (a.sign as u64) << (f.ebits + f.mbits);
    let emax = (1u64 << f.ebits) - 1;
    let inf = emax << f.mbits;
    let shift = 63 - f.mbits;
    let mmask = (1u64 << f.mbits) - 1;
    match a.class() {
        Class::Unsupported => (
            1 << (f.ebits + f.mbits) | inf | 1 << (f.mbits - 1),
            Exc(Exc::IE),
        ),
        Class::SNaN | Class::QNaN => {
            let exc = Exc(if a.class() == Class::SNaN { Exc::IE } else { 0 });
            (
                sbit | inf | 1 << (f.mbits - 1) | (a.mant >> shift) & mmask,
                exc,
            )
        }
        Class::Inf => (sbit | inf, Exc(0)),
        Class::Zero => (sbit, Exc(0)),
        // Denormal sources raise no DE in stores.
        _ => {
            let u = unpack(a);
            let (r, exc) = round_pack(u.sign, u.e, (u.sig as u128) << 64, f.fmt, rc);
            let bits = sbit | (r.be as u64) << f.mbits | (r.m >> shift) & mmask;
            (bits, exc)
        }
    }
}

/// FLD m32: exact; SNaNs are quieted (IE), denormals raise DE.
pub fn from_f32(bits: u32) -> (F80, Exc) {
    load_binary(bits as u64, B32, true)
}

/// FLD m64: exact; SNaNs are quieted (IE), denormals raise DE.
pub fn from_f64(bits: u64) -> (F80, Exc) {
    load_binary(bits, B64, true)
}

/// The source operand of an arithmetic m32 form (FADD m32, FCOM m32,
/// ...): exact, with SNaNs left signaling for the operation to see; the
/// flags hold only DE. Combine with [`merge_load_flags`].
pub fn f32_operand(bits: u32) -> (F80, Exc) {
    load_binary(bits as u64, B32, false)
}

/// The source operand of an arithmetic m64 form; see [`f32_operand`].
pub fn f64_operand(bits: u64) -> (F80, Exc) {
    load_binary(bits, B64, false)
}

/// FST m32: rounds under RC (PC does not apply).
pub fn to_f32(a: F80, rc: Rounding) -> (u32, Exc) {
    let (b, e) = store_binary(a, rc, B32);
    (b as u32, e)
}

/// FST m64: rounds under RC (PC does not apply).
pub fn to_f64(a: F80, rc: Rounding) -> (u64, Exc) {
    store_binary(a, rc, B64)
}

/// FIST/FISTP to a `bits`-wide integer (16, 32 or 64) under `rc` (pass
/// [`Rounding::Zero`] for FISTTP). Out-of-range values, NaNs, infinities
/// and unsupported encodings store the integer indefinite (only the sign
/// bit set) with IE. The value is returned sign-extended to i64.
pub fn to_int(a: F80, rc: Rounding, bits: u32) -> (i64, Exc) {
    let indefinite = i64::MIN >> (64 - bits);
    match a.class() {
        Class::Unsupported | Class::SNaN | Class::QNaN | Class::Inf => (indefinite, Exc(Exc::IE)),
        Class::Zero => (0, Exc(0)),
        // Denormal sources raise no DE in stores.
        _ => {
            let u = unpack(a);
            let (k, inc, inexact) = to_integer(u, rc);
            let mut exc = Exc(0);
            let limit = (1u128 << (bits - 1)) - (!u.sign) as u128;
            if k > limit || u.e >= 127 {
                exc |= Exc::IE;
                return (indefinite, exc);
            }
            if inexact {
                exc |= Exc::PE;
            }
            if inc {
                exc |= Exc::C1;
            }
            let v = k as i64;
            (if u.sign { v.wrapping_neg() } else { v }, exc)
        }
    }
}

/// FILD m16/m32/m64 (exact).
pub fn from_int(v: i64) -> F80 {
    super::arith::from_i64(v)
}

/// Propagation helper for callers that implement other two-operand
/// instructions: the masked result when an operand is a NaN or an
/// unsupported encoding, or `None`.
pub fn nan_result(ops: &[F80]) -> Option<(F80, Exc)> {
    nan_operands(ops)
}

/// Flags of a memory-operand arithmetic form (FADD m32, FCOM m64, ...),
/// modelled as the exact load ([`f32_operand`]/[`f64_operand`], flags
/// `load_exc`) followed by the register operation on `operands` (which
/// include the loaded value) that raised `op_exc`. The hardware drops the
/// load's DE when the operation meets a NaN or unsupported operand or
/// divides by zero.
pub fn merge_load_flags(load_exc: Exc, operands: &[F80], op_exc: Exc) -> Exc {
    let nan = operands
        .iter()
        .any(|x| matches!(x.class(), Class::QNaN | Class::SNaN | Class::Unsupported));
    let keep = if nan || op_exc.has(Exc::ZE) {
        load_exc.0 & !Exc::DE
    } else {
        load_exc.0
    };
    op_exc | Exc(keep)
}
