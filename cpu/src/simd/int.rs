//! Packed-integer SSE2 operations, shuffles, packs and unpacks.

/// Lane `i` of width `bits` (8, 16, 32 or 64), zero-extended.
#[inline]
pub fn lane(v: u128, bits: u32, i: u32) -> u64 {
    let mask = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    (v >> (bits * i)) as u64 & mask
}

/// `v` with lane `i` of width `bits` replaced by the low bits of `x`.
#[inline]
pub fn set_lane(v: u128, bits: u32, i: u32, x: u64) -> u128 {
    let mask: u128 = if bits == 64 {
        u64::MAX as u128
    } else {
        (1u128 << bits) - 1
    };
    let sh = bits * i;
    (v & !(mask << sh)) | ((x as u128 & mask) << sh)
}

/// Sign-extends the low `bits` of `x`.
#[inline]
fn sx(x: u64, bits: u32) -> i64 {
    ((x << (64 - bits)) as i64) >> (64 - bits)
}

/// Applies `f` lane-wise to two vectors of `bits`-wide lanes.
#[inline(always)]
fn map2(a: u128, b: u128, bits: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    match bits {
        8 => {
            let (x, y) = (a.to_le_bytes(), b.to_le_bytes());
            let mut r = [0u8; 16];
            for i in 0..16 {
                r[i] = f(x[i] as u64, y[i] as u64) as u8;
            }
            u128::from_le_bytes(r)
        }
        16 => {
            let (x, y) = (words(a), words(b));
            let mut r = [0u16; 8];
            for i in 0..8 {
                r[i] = f(x[i] as u64, y[i] as u64) as u16;
            }
            from_words(r)
        }
        32 => {
            let (x, y) = (dwords(a), dwords(b));
            let mut r = [0u32; 4];
            for i in 0..4 {
                r[i] = f(x[i] as u64, y[i] as u64) as u32;
            }
            from_dwords(r)
        }
        _ => f(a as u64, b as u64) as u128 | (f((a >> 64) as u64, (b >> 64) as u64) as u128) << 64,
    }
}

// Lane arrays: fixed-count loops over these compile to vector code (the
// lane shifts of `lane`/`set_lane` on u128 are several times slower).
#[inline(always)]
fn words(v: u128) -> [u16; 8] {
    std::array::from_fn(|i| (v >> (16 * i)) as u16)
}

#[inline(always)]
fn from_words(w: [u16; 8]) -> u128 {
    w.iter()
        .enumerate()
        .fold(0, |r, (i, &x)| r | (x as u128) << (16 * i))
}

#[inline(always)]
fn dwords(v: u128) -> [u32; 4] {
    std::array::from_fn(|i| (v >> (32 * i)) as u32)
}

#[inline(always)]
fn from_dwords(w: [u32; 4]) -> u128 {
    w.iter()
        .enumerate()
        .fold(0, |r, (i, &x)| r | (x as u128) << (32 * i))
}

fn sat_s(x: i64, bits: u32) -> u64 {
    let max = (1i64 << (bits - 1)) - 1;
    let min = -(1i64 << (bits - 1));
    x.clamp(min, max) as u64
}

fn sat_u(x: i64, bits: u32) -> u64 {
    x.clamp(0, (1i64 << bits) - 1) as u64
}

/// The top bit of every `bits`-wide lane.
#[inline(always)]
fn high_bits(bits: u32) -> u128 {
    const fn h(bits: u32) -> u128 {
        (u128::MAX / (u128::MAX >> (128 - bits))) << (bits - 1)
    }
    match bits {
        8 => const { h(8) },
        16 => const { h(16) },
        32 => const { h(32) },
        _ => const { h(64) },
    }
}

/// Spreads the top bit of each `bits`-wide lane of `m` (only top bits
/// set) over the whole lane.
#[inline(always)]
fn spread(m: u128, bits: u32) -> u128 {
    m | (m - (m >> (bits - 1)))
}

/// PADDB/PADDW/PADDD/PADDQ (`bits` = lane width).
#[inline]
pub fn padd(a: u128, b: u128, bits: u32) -> u128 {
    // SWAR: add the low bits of each lane (no carry leaves a lane), then
    // fix the top bits.
    let h = high_bits(bits);
    (a & !h).wrapping_add(b & !h) ^ ((a ^ b) & h)
}

/// PSUBB/PSUBW/PSUBD/PSUBQ.
#[inline]
pub fn psub(a: u128, b: u128, bits: u32) -> u128 {
    // SWAR: the top bit of each lane set in the minuend so that no borrow
    // leaves a lane, then fixed.
    let h = high_bits(bits);
    (a | h).wrapping_sub(b & !h) ^ ((a ^ !b) & h)
}

/// PADDSB/PADDSW (`bits` 8 or 16).
#[inline]
pub fn padds(a: u128, b: u128, bits: u32) -> u128 {
    // Signed overflow: both operands' signs differ from the sum's; the
    // result then saturates toward `a`'s sign.
    let h = high_bits(bits);
    let sum = padd(a, b, bits);
    let ov = spread((a ^ sum) & (b ^ sum) & h, bits);
    (sum & !ov) | (signed_limit(a, bits) & ov)
}

/// PSUBSB/PSUBSW.
#[inline]
pub fn psubs(a: u128, b: u128, bits: u32) -> u128 {
    let h = high_bits(bits);
    let diff = psub(a, b, bits);
    let ov = spread((a ^ b) & (a ^ diff) & h, bits);
    (diff & !ov) | (signed_limit(a, bits) & ov)
}

/// Per lane, the signed saturation limit on `a`'s side: the minimum for a
/// negative lane, the maximum otherwise.
#[inline(always)]
fn signed_limit(a: u128, bits: u32) -> u128 {
    let h = high_bits(bits);
    !h ^ spread(a & h, bits)
}

/// PADDUSB/PADDUSW.
#[inline]
pub fn paddus(a: u128, b: u128, bits: u32) -> u128 {
    // Carry out of a lane: both top bits, or one of them without the sum's.
    let h = high_bits(bits);
    let sum = padd(a, b, bits);
    sum | spread(((a & b) | ((a | b) & !sum)) & h, bits)
}

/// PSUBUSB/PSUBUSW.
#[inline]
pub fn psubus(a: u128, b: u128, bits: u32) -> u128 {
    // Borrow out of a lane: `b`'s top bit without `a`'s, or equal top bits
    // and the difference's set.
    let h = high_bits(bits);
    let diff = psub(a, b, bits);
    diff & !spread(((!a & b) | (!(a ^ b) & diff)) & h, bits)
}

/// PMULLW.
#[inline]
pub fn pmullw(a: u128, b: u128) -> u128 {
    map2(a, b, 16, |x, y| x.wrapping_mul(y))
}

/// PMULHW.
#[inline]
pub fn pmulhw(a: u128, b: u128) -> u128 {
    map2(a, b, 16, |x, y| ((sx(x, 16) * sx(y, 16)) >> 16) as u64)
}

/// PMULHUW.
#[inline]
pub fn pmulhuw(a: u128, b: u128) -> u128 {
    map2(a, b, 16, |x, y| (x * y) >> 16)
}

/// PMULUDQ: low dwords of each quadword, full 64-bit products.
#[inline]
pub fn pmuludq(a: u128, b: u128) -> u128 {
    map2(a, b, 64, |x, y| (x & 0xffff_ffff) * (y & 0xffff_ffff))
}

/// PMADDWD.
#[inline]
pub fn pmaddwd(a: u128, b: u128) -> u128 {
    let mut r = 0;
    for i in 0..4 {
        let p0 = sx(lane(a, 16, 2 * i), 16) * sx(lane(b, 16, 2 * i), 16);
        let p1 = sx(lane(a, 16, 2 * i + 1), 16) * sx(lane(b, 16, 2 * i + 1), 16);
        r = set_lane(r, 32, i, (p0 + p1) as u64);
    }
    r
}

/// PAVGB/PAVGW (`bits` 8 or 16): rounded-up unsigned average.
#[inline]
pub fn pavg(a: u128, b: u128, bits: u32) -> u128 {
    // (a + b + 1) >> 1 == (a | b) - ((a ^ b) >> 1), never borrowing across
    // lanes (the shift is masked to stay within each lane).
    let h = high_bits(bits);
    (a | b).wrapping_sub(((a ^ b) >> 1) & !h)
}

/// PMINUB.
#[inline]
pub fn pminub(a: u128, b: u128) -> u128 {
    let ge = ge_u8(a, b);
    (b & ge) | (a & !ge)
}

/// PMAXUB.
#[inline]
pub fn pmaxub(a: u128, b: u128) -> u128 {
    let ge = ge_u8(a, b);
    (a & ge) | (b & !ge)
}

/// All ones in each byte where `a >= b` (unsigned), SWAR: with equal top
/// bits the comparison of the low seven bits decides (the top bit of
/// `(a | H) - (b & !H)`), otherwise `a`'s top bit.
#[inline(always)]
fn ge_u8(a: u128, b: u128) -> u128 {
    let h = high_bits(8);
    let low_ge = (a | h).wrapping_sub(b & !h);
    let ge = ((a & !b) | (!(a ^ b) & low_ge)) & h;
    spread(ge, 8)
}

/// PMINSW.
#[inline]
pub fn pminsw(a: u128, b: u128) -> u128 {
    map2(a, b, 16, |x, y| sx(x, 16).min(sx(y, 16)) as u64)
}

/// PMAXSW.
#[inline]
pub fn pmaxsw(a: u128, b: u128) -> u128 {
    map2(a, b, 16, |x, y| sx(x, 16).max(sx(y, 16)) as u64)
}

/// PSADBW: sums of absolute byte differences per quadword.
#[inline]
pub fn psadbw(a: u128, b: u128) -> u128 {
    let mut r = 0;
    for q in 0..2 {
        let mut s = 0u64;
        for i in 0..8 {
            let x = lane(a, 8, q * 8 + i) as i64;
            let y = lane(b, 8, q * 8 + i) as i64;
            s += (x - y).unsigned_abs();
        }
        r = set_lane(r, 64, q, s);
    }
    r
}

/// PAND.
#[inline]
pub fn pand(a: u128, b: u128) -> u128 {
    a & b
}

/// PANDN: `!a & b`.
#[inline]
pub fn pandn(a: u128, b: u128) -> u128 {
    !a & b
}

/// POR.
#[inline]
pub fn por(a: u128, b: u128) -> u128 {
    a | b
}

/// PXOR.
#[inline]
pub fn pxor(a: u128, b: u128) -> u128 {
    a ^ b
}

/// PCMPEQB/W/D.
#[inline]
pub fn pcmpeq(a: u128, b: u128, bits: u32) -> u128 {
    // SWAR: a lane of `a ^ b` is non-zero when its top bit or (carried
    // into the top bit) any low bit is set.
    let h = high_bits(bits);
    let d = a ^ b;
    let nonzero = (((d & !h).wrapping_add(!h)) | d) & h;
    spread(nonzero ^ h, bits)
}

/// PCMPGTB/W/D (signed).
#[inline]
pub fn pcmpgt(a: u128, b: u128, bits: u32) -> u128 {
    // a > b  <=>  b - a is negative, unless that subtraction overflowed.
    let h = high_bits(bits);
    let diff = psub(b, a, bits);
    spread((diff ^ ((a ^ b) & (b ^ diff))) & h, bits)
}

/// PSLLW/D/Q by `count` (the full 64-bit count, or the imm8): counts at
/// or above the lane width give zero.
#[inline]
pub fn psll(a: u128, count: u64, bits: u32) -> u128 {
    if count >= bits as u64 {
        return 0;
    }
    map2(a, 0, bits, |x, _| x << count)
}

/// PSRLW/D/Q.
#[inline]
pub fn psrl(a: u128, count: u64, bits: u32) -> u128 {
    if count >= bits as u64 {
        return 0;
    }
    map2(a, 0, bits, |x, _| x >> count)
}

/// PSRAW/D: counts at or above the width fill with the sign.
#[inline]
pub fn psra(a: u128, count: u64, bits: u32) -> u128 {
    let c = count.min(bits as u64 - 1);
    map2(a, 0, bits, |x, _| (sx(x, bits) >> c) as u64)
}

/// PSLLDQ (byte shift by imm8; 16 or more gives zero).
#[inline]
pub fn pslldq(a: u128, imm: u8) -> u128 {
    if imm >= 16 {
        0
    } else {
        a << (imm as u32 * 8)
    }
}

/// PSRLDQ.
#[inline]
pub fn psrldq(a: u128, imm: u8) -> u128 {
    if imm >= 16 {
        0
    } else {
        a >> (imm as u32 * 8)
    }
}

/// Packs the `from`-wide lanes of `a` then `b` into `from/2`-wide lanes.
fn pack(a: u128, b: u128, from: u32, sat: impl Fn(i64) -> u64) -> u128 {
    let n = 128 / from;
    let mut r = 0;
    for i in 0..n {
        r = set_lane(r, from / 2, i, sat(sx(lane(a, from, i), from)));
        r = set_lane(r, from / 2, i + n, sat(sx(lane(b, from, i), from)));
    }
    r
}

/// PACKSSWB.
#[inline]
pub fn packsswb(a: u128, b: u128) -> u128 {
    pack(a, b, 16, |x| sat_s(x, 8))
}

/// PACKSSDW.
#[inline]
pub fn packssdw(a: u128, b: u128) -> u128 {
    pack(a, b, 32, |x| sat_s(x, 16))
}

/// PACKUSWB.
#[inline]
pub fn packuswb(a: u128, b: u128) -> u128 {
    pack(a, b, 16, |x| sat_u(x, 8))
}

/// PUNPCKLBW/WD/DQ/QDQ (`bits` 8..64): interleaves the low halves.
#[inline]
pub fn punpckl(a: u128, b: u128, bits: u32) -> u128 {
    let mut r = 0;
    for i in 0..64 / bits {
        r = set_lane(r, bits, 2 * i, lane(a, bits, i));
        r = set_lane(r, bits, 2 * i + 1, lane(b, bits, i));
    }
    r
}

/// PUNPCKHBW/WD/DQ/QDQ: interleaves the high halves.
#[inline]
pub fn punpckh(a: u128, b: u128, bits: u32) -> u128 {
    punpckl(a >> 64, b >> 64, bits)
}

/// PSHUFD.
#[inline]
pub fn pshufd(a: u128, imm: u8) -> u128 {
    let mut r = 0;
    for i in 0..4 {
        r = set_lane(r, 32, i, lane(a, 32, (imm as u32 >> (2 * i)) & 3));
    }
    r
}

/// PSHUFLW: shuffles the low four words, keeps the high quadword.
#[inline]
pub fn pshuflw(a: u128, imm: u8) -> u128 {
    let mut r = a;
    for i in 0..4 {
        r = set_lane(r, 16, i, lane(a, 16, (imm as u32 >> (2 * i)) & 3));
    }
    r
}

/// PSHUFHW: shuffles the high four words, keeps the low quadword.
#[inline]
pub fn pshufhw(a: u128, imm: u8) -> u128 {
    let mut r = a;
    for i in 0..4 {
        r = set_lane(r, 16, 4 + i, lane(a, 16, 4 + ((imm as u32 >> (2 * i)) & 3)));
    }
    r
}

/// PMOVMSKB: the byte sign bits.
#[inline]
pub fn pmovmskb(a: u128) -> u32 {
    // The byte sign bits, gathered into the top byte by one multiplication
    // per quadword (the partial products never overlap).
    let g = |q: u64| ((q & 0x8080_8080_8080_8080).wrapping_mul(0x0002_0408_1020_4081) >> 56) as u32;
    g(a as u64) | g((a >> 64) as u64) << 8
}

/// PEXTRW: word `imm & 7`, zero-extended.
#[inline]
pub fn pextrw(a: u128, imm: u8) -> u32 {
    lane(a, 16, imm as u32 & 7) as u32
}

/// PINSRW: replaces word `imm & 7` with the low word of `x`.
#[inline]
pub fn pinsrw(a: u128, x: u32, imm: u8) -> u128 {
    set_lane(a, 16, imm as u32 & 7, x as u64)
}

/// SHUFPS: the low two dwords from `a`, the high two from `b`.
#[inline]
pub fn shufps(a: u128, b: u128, imm: u8) -> u128 {
    let s = |i: u32| (imm as u32 >> (2 * i)) & 3;
    let mut r = 0;
    r = set_lane(r, 32, 0, lane(a, 32, s(0)));
    r = set_lane(r, 32, 1, lane(a, 32, s(1)));
    r = set_lane(r, 32, 2, lane(b, 32, s(2)));
    set_lane(r, 32, 3, lane(b, 32, s(3)))
}

/// SHUFPD.
#[inline]
pub fn shufpd(a: u128, b: u128, imm: u8) -> u128 {
    let lo = lane(a, 64, imm as u32 & 1);
    let hi = lane(b, 64, (imm as u32 >> 1) & 1);
    set_lane(lo as u128, 64, 1, hi)
}

/// UNPCKLPS.
#[inline]
pub fn unpcklps(a: u128, b: u128) -> u128 {
    punpckl(a, b, 32)
}

/// UNPCKHPS.
#[inline]
pub fn unpckhps(a: u128, b: u128) -> u128 {
    punpckh(a, b, 32)
}

/// UNPCKLPD.
#[inline]
pub fn unpcklpd(a: u128, b: u128) -> u128 {
    punpckl(a, b, 64)
}

/// UNPCKHPD.
#[inline]
pub fn unpckhpd(a: u128, b: u128) -> u128 {
    punpckh(a, b, 64)
}

/// MOVMSKPS: the dword sign bits.
#[inline]
pub fn movmskps(a: u128) -> u32 {
    (0..4).fold(0, |m, i| m | ((lane(a, 32, i) >> 31) as u32) << i)
}

/// MOVMSKPD: the qword sign bits.
#[inline]
pub fn movmskpd(a: u128) -> u32 {
    (0..2).fold(0, |m, i| m | ((lane(a, 64, i) >> 63) as u32) << i)
}
