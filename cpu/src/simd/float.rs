//! SSE floating point under MXCSR, in integer arithmetic only (the host
//! FPU state never influences a result).
//!
//! Only the masked exception responses are modelled: the returned flags
//! are the ones the hardware sets with every exception masked, except
//! that with UE unmasked every tiny result (exact or not) raises UE, and
//! with OE or UE unmasked the lane raises PE only when its result rounded
//! with an unbounded exponent is inexact (as on the host). With an
//! exception unmasked the hardware leaves the destination unwritten and
//! raises #XM; that is the caller's business, as is the rule that an
//! unmasked pre-computation exception (IE, DE, ZE) in any lane suppresses
//! the post-computation flags ([`resolve`]).

/// The MXCSR register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mxcsr(pub u32);

impl Mxcsr {
    pub const IE: u32 = 1 << 0;
    pub const DE: u32 = 1 << 1;
    pub const ZE: u32 = 1 << 2;
    pub const OE: u32 = 1 << 3;
    pub const UE: u32 = 1 << 4;
    pub const PE: u32 = 1 << 5;
    pub const DAZ: u32 = 1 << 6;
    /// The six exception masks (bits 7..12).
    pub const MASKS: u32 = 0x3f << 7;
    pub const FTZ: u32 = 1 << 15;
    /// The power-on/reset value: all masked, round to nearest.
    pub const DEFAULT: Mxcsr = Mxcsr(0x1f80);

    /// Rounding control: 0 nearest, 1 down, 2 up, 3 toward zero.
    pub fn rc(self) -> u32 {
        (self.0 >> 13) & 3
    }
    pub fn daz(self) -> bool {
        self.0 & Self::DAZ != 0
    }
    pub fn ftz(self) -> bool {
        self.0 & Self::FTZ != 0
    }
}

/// The flags an operation (one computation step over all its lanes)
/// reports, given the flags `fl` its lanes raised: when an unmasked
/// pre-computation exception (IE, DE, ZE) occurred in any lane, the
/// result is not computed, so only the pre-computation flags (of every
/// lane) are reported (SDM vol. 1 11.5.1; the host agrees). The
/// instruction faults when a reported flag is unmasked.
#[inline]
pub fn resolve(fl: u32, mx: Mxcsr) -> u32 {
    let unmasked = !(mx.0 >> 7) & 0x3f;
    let pre = fl & (Mxcsr::IE | Mxcsr::DE | Mxcsr::ZE);
    if pre & unmasked != 0 {
        pre
    } else {
        fl
    }
}

/// Whether the reported flags `fl` contain an unmasked exception.
#[inline]
pub fn unmasked(fl: u32, mx: Mxcsr) -> bool {
    fl & !(mx.0 >> 7) & 0x3f != 0
}

/// A binary interchange format (single or double).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fmt {
    pub ebits: u32,
    pub mbits: u32,
}

pub const F32: Fmt = Fmt {
    ebits: 8,
    mbits: 23,
};
pub const F64: Fmt = Fmt {
    ebits: 11,
    mbits: 52,
};

impl Fmt {
    fn width(self) -> u32 {
        self.ebits + self.mbits + 1
    }
    fn emax(self) -> i32 {
        (1 << self.ebits) - 1
    }
    fn bias(self) -> i32 {
        (1 << (self.ebits - 1)) - 1
    }
    fn sign_bit(self) -> u64 {
        1 << (self.width() - 1)
    }
    fn mmask(self) -> u64 {
        (1 << self.mbits) - 1
    }
    fn quiet_bit(self) -> u64 {
        1 << (self.mbits - 1)
    }
    fn inf(self, sign: bool) -> u64 {
        (sign as u64) << (self.width() - 1) | (self.emax() as u64) << self.mbits
    }
    /// The QNaN "real indefinite" (sign set).
    pub fn indefinite(self) -> u64 {
        self.inf(true) | self.quiet_bit()
    }
    fn max_finite(self, sign: bool) -> u64 {
        self.inf(sign) - 1
    }
    fn zero(self, sign: bool) -> u64 {
        (sign as u64) << (self.width() - 1)
    }
    fn is_nan(self, x: u64) -> bool {
        (x & !self.sign_bit()) > self.inf(false)
    }
    fn is_snan(self, x: u64) -> bool {
        self.is_nan(x) && x & self.quiet_bit() == 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cls {
    Zero,
    /// Finite non-zero: value = mant * 2^exp, mant normalized so that its
    /// top bit is bit `mbits`.
    Fin {
        exp: i32,
        mant: u64,
    },
    Inf,
    NaN,
}

/// Classifies `x`, flushing denormals under DAZ and noting DE otherwise.
fn unpack(f: Fmt, x: u64, mx: Mxcsr, flags: &mut u32) -> (bool, Cls) {
    let sign = x & f.sign_bit() != 0;
    let e = ((x >> f.mbits) as i32) & f.emax();
    let m = x & f.mmask();
    let c = if e == f.emax() {
        if m == 0 {
            Cls::Inf
        } else {
            Cls::NaN
        }
    } else if e == 0 {
        if m == 0 || mx.daz() {
            Cls::Zero
        } else {
            *flags |= Mxcsr::DE;
            let sh = m.leading_zeros() - (63 - f.mbits);
            Cls::Fin {
                exp: 1 - f.bias() - f.mbits as i32 - sh as i32,
                mant: m << sh,
            }
        }
    } else {
        Cls::Fin {
            exp: e - f.bias() - f.mbits as i32,
            mant: m | 1 << f.mbits,
        }
    };
    (sign, c)
}

/// Rounds `sig >> shift` per `rc`; returns the quotient and inexactness.
fn rnd(sig: u128, shift: u32, sign: bool, rc: u32) -> (u128, bool) {
    let (q, rem_nz, up_nearest) = if shift >= 129 {
        (0, sig != 0, false)
    } else if shift == 128 {
        (0, sig != 0, sig > 1 << 127)
    } else {
        let q = sig >> shift;
        let rem = sig & ((1u128 << shift) - 1);
        let half = 1u128 << (shift - 1);
        (q, rem != 0, rem > half || (rem == half && q & 1 == 1))
    };
    let up = match rc {
        0 => up_nearest,
        1 => sign && rem_nz,
        2 => !sign && rem_nz,
        _ => false,
    };
    (q + up as u128, rem_nz)
}

/// Rounds the exact non-zero value `sig * 2^e` (`sig` may carry a sticky
/// bit in bit 0 when at least 8 bits lie below the rounding position).
fn round_pack(f: Fmt, sign: bool, e: i32, sig: u128, mx: Mxcsr, flags: &mut u32) -> u64 {
    let lz = sig.leading_zeros();
    let sig = sig << lz;
    let p = f.mbits + 1;
    let mut be = e + 127 - lz as i32 + f.bias();
    let rc = mx.rc();
    if be >= 1 {
        let (mut q, inex) = rnd(sig, 128 - p, sign, rc);
        if q == 1 << p {
            q >>= 1;
            be += 1;
        }
        if be >= f.emax() {
            if mx.0 & (Mxcsr::OE << 7) == 0 {
                // OE unmasked: the lane reports OE, and PE only when the
                // result rounded to the format's precision with an
                // unbounded exponent is inexact (found on the host: an
                // exact overflow reports OE alone, whatever PM and RC).
                // The instruction then faults without writing.
                *flags |= Mxcsr::OE | if inex { Mxcsr::PE } else { 0 };
                return f.inf(sign);
            }
            *flags |= Mxcsr::OE | Mxcsr::PE;
            let to_inf = match rc {
                0 => true,
                1 => sign,
                2 => !sign,
                _ => false,
            };
            return if to_inf {
                f.inf(sign)
            } else {
                f.max_finite(sign)
            };
        }
        if inex {
            *flags |= Mxcsr::PE;
        }
        return f.zero(sign) | (be as u64) << f.mbits | (q as u64 & f.mmask());
    }
    let (q2, inex_unbounded) = rnd(sig, 128 - p, sign, rc);
    let tiny = !(be == 0 && q2 == 1 << p);
    let shift = 128 - p + (1 - be) as u32;
    let (q, inex) = rnd(sig, shift, sign, rc);
    if tiny && mx.0 & (Mxcsr::UE << 7) == 0 {
        // UE unmasked: every tiny result signals underflow, exact or not,
        // and FTZ does not apply (SDM vol. 1 11.5.2.5). PE is reported
        // only when the result rounded to the format's precision with an
        // unbounded exponent is inexact (found on the host; the
        // denormalization loss does not count). The instruction then
        // faults without writing, so the value does not matter.
        *flags |= Mxcsr::UE | if inex_unbounded { Mxcsr::PE } else { 0 };
        return f.zero(sign) | q as u64;
    }
    if mx.ftz() && tiny {
        *flags |= Mxcsr::UE | Mxcsr::PE;
        return f.zero(sign);
    }
    if inex {
        *flags |= Mxcsr::PE;
        if tiny {
            *flags |= Mxcsr::UE;
        }
    }
    f.zero(sign) | q as u64
}

/// Binary arithmetic operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
}

/// One lane of ADD/SUB/MUL/DIV/MIN/MAX: returns the result bits and ORs
/// the raised flags into `flags`.
pub fn arith(f: Fmt, op: Op, a: u64, b: u64, mx: Mxcsr, flags: &mut u32) -> u64 {
    if matches!(op, Op::Min | Op::Max) {
        return minmax(f, op == Op::Min, a, b, mx, flags);
    }
    let mut fl = 0;
    let (sa, ca) = unpack(f, a, mx, &mut fl);
    let (mut sb, cb) = unpack(f, b, mx, &mut fl);
    if ca == Cls::NaN || cb == Cls::NaN {
        if f.is_snan(a) || f.is_snan(b) {
            *flags |= Mxcsr::IE;
        }
        return if ca == Cls::NaN { a } else { b } | f.quiet_bit();
    }
    let invalid = |flags: &mut u32| {
        *flags |= Mxcsr::IE;
        f.indefinite()
    };
    let rc = mx.rc();
    match op {
        Op::Add | Op::Sub => {
            if op == Op::Sub {
                sb = !sb;
            }
            match (ca, cb) {
                (Cls::Inf, Cls::Inf) if sa != sb => invalid(flags),
                (Cls::Inf, _) => {
                    *flags |= fl;
                    f.inf(sa)
                }
                (_, Cls::Inf) => {
                    *flags |= fl;
                    f.inf(sb)
                }
                (Cls::Zero, Cls::Zero) => {
                    *flags |= fl;
                    f.zero(if rc == 1 { sa || sb } else { sa && sb })
                }
                (Cls::Zero, Cls::Fin { exp, mant }) | (Cls::Fin { exp, mant }, Cls::Zero) => {
                    *flags |= fl;
                    let s = if ca == Cls::Zero { sb } else { sa };
                    round_pack(f, s, exp, mant as u128, mx, flags)
                }
                (Cls::Fin { exp: ea, mant: ma }, Cls::Fin { exp: eb, mant: mb }) => {
                    *flags |= fl;
                    // put the larger exponent first
                    let (sa, ea, ma, sb, eb, mb) = if ea >= eb {
                        (sa, ea, ma, sb, eb, mb)
                    } else {
                        (sb, eb, mb, sa, ea, ma)
                    };
                    let x = (ma as u128) << 72;
                    let d = (ea - eb) as u32;
                    let y = (mb as u128) << 72;
                    let y = if d >= 127 {
                        1
                    } else {
                        (y >> d) | ((y & ((1u128 << d) - 1) != 0) as u128)
                    };
                    let e = ea - 72;
                    if sa == sb {
                        round_pack(f, sa, e, x + y, mx, flags)
                    } else if x > y {
                        round_pack(f, sa, e, x - y, mx, flags)
                    } else if y > x {
                        round_pack(f, sb, e, y - x, mx, flags)
                    } else {
                        f.zero(rc == 1)
                    }
                }
                _ => unreachable!(),
            }
        }
        Op::Mul => {
            let s = sa != sb;
            match (ca, cb) {
                (Cls::Inf, Cls::Zero) | (Cls::Zero, Cls::Inf) => invalid(flags),
                (Cls::Inf, _) | (_, Cls::Inf) => {
                    *flags |= fl;
                    f.inf(s)
                }
                (Cls::Zero, _) | (_, Cls::Zero) => {
                    *flags |= fl;
                    f.zero(s)
                }
                (Cls::Fin { exp: ea, mant: ma }, Cls::Fin { exp: eb, mant: mb }) => {
                    *flags |= fl;
                    round_pack(f, s, ea + eb, ma as u128 * mb as u128, mx, flags)
                }
                _ => unreachable!(),
            }
        }
        Op::Div => {
            let s = sa != sb;
            match (ca, cb) {
                (Cls::Inf, Cls::Inf) | (Cls::Zero, Cls::Zero) => invalid(flags),
                (Cls::Inf, _) => {
                    *flags |= fl;
                    f.inf(s)
                }
                (_, Cls::Inf) => {
                    *flags |= fl;
                    f.zero(s)
                }
                (Cls::Zero, _) => {
                    *flags |= fl;
                    f.zero(s)
                }
                (_, Cls::Zero) => {
                    // a denormal dividend does not raise DE here
                    *flags |= Mxcsr::ZE;
                    f.inf(s)
                }
                (Cls::Fin { exp: ea, mant: ma }, Cls::Fin { exp: eb, mant: mb }) => {
                    *flags |= fl;
                    let n = (ma as u128) << 74;
                    let q = n / mb as u128;
                    let sticky = (q * mb as u128 != n) as u128;
                    round_pack(f, s, ea - eb - 75, q << 1 | sticky, mx, flags)
                }
                _ => unreachable!(),
            }
        }
        Op::Min | Op::Max => unreachable!(),
    }
}

/// MIN/MAX: the second operand when either is a NaN (IE, QNaN included)
/// or both are zero.
fn minmax(f: Fmt, min: bool, a: u64, b: u64, mx: Mxcsr, flags: &mut u32) -> u64 {
    let mut fl = 0;
    let a = flush(f, a, mx, &mut fl);
    let b = flush(f, b, mx, &mut fl);
    if f.is_nan(a) || f.is_nan(b) {
        // a NaN suppresses DE
        *flags |= Mxcsr::IE;
        return b;
    }
    *flags |= fl;
    let pick_a = if min { lt(f, a, b) } else { lt(f, b, a) };
    if pick_a {
        a
    } else {
        b
    }
}

/// The operand as the arithmetic sees it: denormals become zero under DAZ
/// (DE otherwise).
fn flush(f: Fmt, x: u64, mx: Mxcsr, flags: &mut u32) -> u64 {
    if (x >> f.mbits) as i32 & f.emax() == 0 && x & f.mmask() != 0 {
        if mx.daz() {
            return x & f.sign_bit();
        }
        *flags |= Mxcsr::DE;
    }
    x
}

/// Ordered `a < b` for non-NaN encodings (zeros equal).
fn lt(f: Fmt, a: u64, b: u64) -> bool {
    let key = |x: u64| -> i128 {
        let mag = (x & !f.sign_bit()) as i128;
        if x & f.sign_bit() != 0 {
            -mag
        } else {
            mag
        }
    };
    key(a) < key(b)
}

fn isqrt(n: u128) -> u128 {
    let mut x = 0u128;
    let mut bit = 1u128 << 126;
    let mut n = n;
    while bit > n {
        bit >>= 2;
    }
    while bit != 0 {
        if n >= x + bit {
            n -= x + bit;
            x = (x >> 1) + bit;
        } else {
            x >>= 1;
        }
        bit >>= 2;
    }
    x
}

/// One lane of SQRT.
pub fn sqrt(f: Fmt, a: u64, mx: Mxcsr, flags: &mut u32) -> u64 {
    let mut fl = 0;
    let (s, c) = unpack(f, a, mx, &mut fl);
    match c {
        Cls::NaN => {
            if f.is_snan(a) {
                *flags |= Mxcsr::IE;
            }
            a | f.quiet_bit()
        }
        Cls::Zero => {
            *flags |= fl;
            f.zero(s)
        }
        _ if s => {
            *flags |= Mxcsr::IE;
            f.indefinite()
        }
        Cls::Inf => f.inf(false),
        Cls::Fin { exp, mant } => {
            *flags |= fl;
            // mant * 2^exp with exp made even; widen to ~126 bits
            let mut sh = 126 - f.mbits as i32 - 1;
            if (exp - sh) & 1 != 0 {
                sh -= 1;
            }
            let n = (mant as u128) << sh;
            let r = isqrt(n);
            let sticky = (r * r != n) as u128;
            round_pack(f, false, (exp - sh) / 2 - 1, r << 1 | sticky, mx, flags)
        }
    }
}

/// Compare predicates 0..7 (EQ, LT, LE, UNORD, NEQ, NLT, NLE, ORD): true
/// or false for one lane.
pub fn cmp(f: Fmt, pred: u8, a: u64, b: u64, mx: Mxcsr, flags: &mut u32) -> bool {
    let pred = pred & 7;
    let nan = f.is_nan(a) || f.is_nan(b);
    if nan {
        let signals_qnan = matches!(pred, 1 | 2 | 5 | 6);
        if signals_qnan || f.is_snan(a) || f.is_snan(b) {
            *flags |= Mxcsr::IE;
        }
        return matches!(pred, 3..=6);
    }
    let a = flush(f, a, mx, flags);
    let b = flush(f, b, mx, flags);
    let eq = a == b || (a | b) & !f.sign_bit() == 0;
    let less = !eq && lt(f, a, b);
    match pred {
        0 => eq,
        1 => less,
        2 => less || eq,
        3 => false,
        4 => !eq,
        5 => !less,
        6 => !(less || eq),
        _ => true,
    }
}

/// COMIS/UCOMIS: returns the ZF/PF/CF bits (EFLAGS positions 0x40, 0x4,
/// 0x1); COMIS (`signal_qnan`) raises IE on any NaN, UCOMIS on SNaN only.
pub fn comi(f: Fmt, signal_qnan: bool, a: u64, b: u64, mx: Mxcsr, flags: &mut u32) -> u32 {
    if f.is_nan(a) || f.is_nan(b) {
        if signal_qnan || f.is_snan(a) || f.is_snan(b) {
            *flags |= Mxcsr::IE;
        }
        return 0x45;
    }
    let a = flush(f, a, mx, flags);
    let b = flush(f, b, mx, flags);
    if a == b || (a | b) & !f.sign_bit() == 0 {
        0x40
    } else if lt(f, a, b) {
        0x01
    } else {
        0
    }
}

fn lanes(f: Fmt) -> u32 {
    128 / f.width()
}

fn get(f: Fmt, v: u128, i: u32) -> u64 {
    super::int::lane(v, f.width(), i)
}

/// Packed binary operation (ADDPS, MULPD, MINPS, ...).
pub fn packed(f: Fmt, op: Op, a: u128, b: u128, mx: Mxcsr) -> (u128, u32) {
    let mut fl = 0;
    let mut r = 0;
    for i in 0..lanes(f) {
        let x = arith(f, op, get(f, a, i), get(f, b, i), mx, &mut fl);
        r = super::int::set_lane(r, f.width(), i, x);
    }
    (r, fl)
}

/// Scalar binary operation (ADDSS, DIVSD, ...): the upper lanes come from `a`.
pub fn scalar(f: Fmt, op: Op, a: u128, b: u128, mx: Mxcsr) -> (u128, u32) {
    let mut fl = 0;
    let x = arith(f, op, get(f, a, 0), get(f, b, 0), mx, &mut fl);
    (super::int::set_lane(a, f.width(), 0, x), fl)
}

/// SQRTPS/SQRTPD.
pub fn sqrt_packed(f: Fmt, b: u128, mx: Mxcsr) -> (u128, u32) {
    let mut fl = 0;
    let mut r = 0;
    for i in 0..lanes(f) {
        r = super::int::set_lane(r, f.width(), i, sqrt(f, get(f, b, i), mx, &mut fl));
    }
    (r, fl)
}

/// SQRTSS/SQRTSD: the square root of `b`'s low lane into `a`.
pub fn sqrt_scalar(f: Fmt, a: u128, b: u128, mx: Mxcsr) -> (u128, u32) {
    let mut fl = 0;
    let x = sqrt(f, get(f, b, 0), mx, &mut fl);
    (super::int::set_lane(a, f.width(), 0, x), fl)
}

/// CMPPS/CMPPD with predicate `pred`.
pub fn cmp_packed(f: Fmt, pred: u8, a: u128, b: u128, mx: Mxcsr) -> (u128, u32) {
    let mut fl = 0;
    let mut r = 0;
    for i in 0..lanes(f) {
        let t = cmp(f, pred, get(f, a, i), get(f, b, i), mx, &mut fl);
        r = super::int::set_lane(r, f.width(), i, if t { u64::MAX } else { 0 });
    }
    (r, fl)
}

/// CMPSS/CMPSD.
pub fn cmp_scalar(f: Fmt, pred: u8, a: u128, b: u128, mx: Mxcsr) -> (u128, u32) {
    let mut fl = 0;
    let t = cmp(f, pred, get(f, a, 0), get(f, b, 0), mx, &mut fl);
    let x = if t { u64::MAX } else { 0 };
    (super::int::set_lane(a, f.width(), 0, x), fl)
}

/// CVTSI2SS/CVTSI2SD (and the CVTDQ2PS/CVTDQ2PD lanes): the signed
/// integer `x` rounded per MXCSR.RC.
pub fn from_int(f: Fmt, x: i64, mx: Mxcsr, flags: &mut u32) -> u64 {
    if x == 0 {
        return 0;
    }
    round_pack(f, x < 0, 0, x.unsigned_abs() as u128, mx, flags)
}

/// CVTSS2SI/CVTSD2SI/CVTTSS2SI/CVTTSD2SI (and the packed dword lanes):
/// `x` rounded per MXCSR.RC, or toward zero when `truncate`, to a signed
/// integer of `bits` (32 or 64). NaNs and out-of-range values give the
/// integer indefinite (only the sign bit set) with IE.
pub fn to_int(f: Fmt, x: u64, bits: u32, truncate: bool, mx: Mxcsr, flags: &mut u32) -> u64 {
    let indefinite = 1u64 << (bits - 1);
    let mut fl = 0;
    let (sign, c) = unpack(f, x, mx, &mut fl);
    let (exp, mant) = match c {
        Cls::Zero => return 0,
        Cls::NaN | Cls::Inf => {
            *flags |= Mxcsr::IE;
            return indefinite;
        }
        Cls::Fin { exp, mant } => (exp, mant),
    };
    let rc = if truncate { 3 } else { mx.rc() };
    let (q, inexact) = if exp >= 0 {
        if exp >= 64 {
            *flags |= Mxcsr::IE;
            return indefinite;
        }
        ((mant as u128) << exp, false)
    } else {
        rnd(mant as u128, (-exp) as u32, sign, rc)
    };
    let limit = if sign {
        1u128 << (bits - 1)
    } else {
        (1u128 << (bits - 1)) - 1
    };
    if q > limit {
        *flags |= Mxcsr::IE;
        return indefinite;
    }
    if inexact {
        *flags |= Mxcsr::PE;
    }
    let v = if sign {
        (q as u64).wrapping_neg()
    } else {
        q as u64
    };
    v & (u64::MAX >> (64 - bits))
}

/// CVTSS2SD/CVTSD2SS (and the CVTPS2PD/CVTPD2PS lanes): converts `x` from
/// format `from` to format `to`, rounding per MXCSR when narrowing. NaN
/// payloads keep their top bits and are quieted.
pub fn convert(from: Fmt, to: Fmt, x: u64, mx: Mxcsr, flags: &mut u32) -> u64 {
    let mut fl = 0;
    let (sign, c) = unpack(from, x, mx, &mut fl);
    match c {
        Cls::NaN => {
            if from.is_snan(x) {
                *flags |= Mxcsr::IE;
            }
            let payload = x & from.mmask();
            let payload = if to.mbits >= from.mbits {
                payload << (to.mbits - from.mbits)
            } else {
                payload >> (from.mbits - to.mbits)
            };
            to.inf(sign) | payload | to.quiet_bit()
        }
        Cls::Inf => to.inf(sign),
        Cls::Zero => {
            *flags |= fl;
            to.zero(sign)
        }
        Cls::Fin { exp, mant } => {
            *flags |= fl;
            round_pack(to, sign, exp, mant as u128, mx, flags)
        }
    }
}

/// CVTSI2SS/CVTSI2SD: `x` into the low lane of `a`.
pub fn cvtsi2s(f: Fmt, a: u128, x: i64, mx: Mxcsr) -> (u128, u32) {
    let mut fl = 0;
    let r = from_int(f, x, mx, &mut fl);
    (super::int::set_lane(a, f.width(), 0, r), fl)
}

/// CVTSS2SD (`from` = F32) / CVTSD2SS (`from` = F64): the low lane of `b`
/// converted into the low lane of `a`.
pub fn cvt_scalar(from: Fmt, a: u128, b: u128, mx: Mxcsr) -> (u128, u32) {
    let to = if from == F32 { F64 } else { F32 };
    let mut fl = 0;
    let r = convert(from, to, get(from, b, 0), mx, &mut fl);
    (super::int::set_lane(a, to.width(), 0, r), fl)
}

/// CVTPS2PD (`from` = F32, the low two singles) / CVTPD2PS (`from` = F64,
/// result in the low two singles, the upper half zeroed).
pub fn cvt_packed(from: Fmt, b: u128, mx: Mxcsr) -> (u128, u32) {
    let to = if from == F32 { F64 } else { F32 };
    let mut fl = 0;
    let mut r = 0;
    for i in 0..2 {
        let x = convert(from, to, get(from, b, i), mx, &mut fl);
        r = super::int::set_lane(r, to.width(), i, x);
    }
    (r, fl)
}

/// CVTDQ2PS (`f` = F32, four lanes) / CVTDQ2PD (`f` = F64, the low two
/// dwords).
pub fn cvt_dq2p(f: Fmt, b: u128, mx: Mxcsr) -> (u128, u32) {
    let mut fl = 0;
    let mut r = 0;
    for i in 0..lanes(f) {
        let x = super::int::lane(b, 32, i) as u32 as i32 as i64;
        r = super::int::set_lane(r, f.width(), i, from_int(f, x, mx, &mut fl));
    }
    (r, fl)
}

/// CVTPS2DQ/CVTTPS2DQ (`f` = F32) and CVTPD2DQ/CVTTPD2DQ (`f` = F64, result
/// in the low two dwords, the upper half zeroed).
pub fn cvt_p2dq(f: Fmt, b: u128, truncate: bool, mx: Mxcsr) -> (u128, u32) {
    let mut fl = 0;
    let mut r = 0;
    for i in 0..lanes(f) {
        let x = to_int(f, get(f, b, i), 32, truncate, mx, &mut fl);
        r = super::int::set_lane(r, 32, i, x);
    }
    (r, fl)
}

/// COMISS/UCOMISS/COMISD/UCOMISD on the low lanes: returns the EFLAGS
/// ZF/PF/CF bits (the instructions clear OF, SF and AF) and the MXCSR
/// flags raised.
pub fn comi_scalar(f: Fmt, signal_qnan: bool, a: u128, b: u128, mx: Mxcsr) -> (u32, u32) {
    let mut fl = 0;
    let r = comi(f, signal_qnan, get(f, a, 0), get(f, b, 0), mx, &mut fl);
    (r, fl)
}
