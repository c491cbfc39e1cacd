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
#[inline]
fn map2(a: u128, b: u128, bits: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    let mut r = 0u128;
    for i in 0..128 / bits {
        r = set_lane(r, bits, i, f(lane(a, bits, i), lane(b, bits, i)));
    }
    r
}

fn sat_s(x: i64, bits: u32) -> u64 {
    let max = (1i64 << (bits - 1)) - 1;
    let min = -(1i64 << (bits - 1));
    x.clamp(min, max) as u64
}

fn sat_u(x: i64, bits: u32) -> u64 {
    x.clamp(0, (1i64 << bits) - 1) as u64
}

/// PADDB/PADDW/PADDD/PADDQ (`bits` = lane width).
pub fn padd(a: u128, b: u128, bits: u32) -> u128 {
    map2(a, b, bits, |x, y| x.wrapping_add(y))
}

/// PSUBB/PSUBW/PSUBD/PSUBQ.
pub fn psub(a: u128, b: u128, bits: u32) -> u128 {
    map2(a, b, bits, |x, y| x.wrapping_sub(y))
}

/// PADDSB/PADDSW (`bits` 8 or 16).
pub fn padds(a: u128, b: u128, bits: u32) -> u128 {
    map2(a, b, bits, |x, y| sat_s(sx(x, bits) + sx(y, bits), bits))
}

/// PSUBSB/PSUBSW.
pub fn psubs(a: u128, b: u128, bits: u32) -> u128 {
    map2(a, b, bits, |x, y| sat_s(sx(x, bits) - sx(y, bits), bits))
}

/// PADDUSB/PADDUSW.
pub fn paddus(a: u128, b: u128, bits: u32) -> u128 {
    map2(a, b, bits, |x, y| sat_u(x as i64 + y as i64, bits))
}

/// PSUBUSB/PSUBUSW.
pub fn psubus(a: u128, b: u128, bits: u32) -> u128 {
    map2(a, b, bits, |x, y| sat_u(x as i64 - y as i64, bits))
}

/// PMULLW.
pub fn pmullw(a: u128, b: u128) -> u128 {
    map2(a, b, 16, |x, y| x.wrapping_mul(y))
}

/// PMULHW.
pub fn pmulhw(a: u128, b: u128) -> u128 {
    map2(a, b, 16, |x, y| ((sx(x, 16) * sx(y, 16)) >> 16) as u64)
}

/// PMULHUW.
pub fn pmulhuw(a: u128, b: u128) -> u128 {
    map2(a, b, 16, |x, y| (x * y) >> 16)
}

/// PMULUDQ: low dwords of each quadword, full 64-bit products.
pub fn pmuludq(a: u128, b: u128) -> u128 {
    map2(a, b, 64, |x, y| (x & 0xffff_ffff) * (y & 0xffff_ffff))
}

/// PMADDWD.
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
pub fn pavg(a: u128, b: u128, bits: u32) -> u128 {
    map2(a, b, bits, |x, y| (x + y + 1) >> 1)
}

/// PMINUB.
pub fn pminub(a: u128, b: u128) -> u128 {
    map2(a, b, 8, |x, y| x.min(y))
}

/// PMAXUB.
pub fn pmaxub(a: u128, b: u128) -> u128 {
    map2(a, b, 8, |x, y| x.max(y))
}

/// PMINSW.
pub fn pminsw(a: u128, b: u128) -> u128 {
    map2(a, b, 16, |x, y| sx(x, 16).min(sx(y, 16)) as u64)
}

/// PMAXSW.
pub fn pmaxsw(a: u128, b: u128) -> u128 {
    map2(a, b, 16, |x, y| sx(x, 16).max(sx(y, 16)) as u64)
}

/// PSADBW: sums of absolute byte differences per quadword.
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
pub fn pand(a: u128, b: u128) -> u128 {
    a & b
}

/// PANDN: `!a & b`.
pub fn pandn(a: u128, b: u128) -> u128 {
    !a & b
}

/// POR.
pub fn por(a: u128, b: u128) -> u128 {
    a | b
}

/// PXOR.
pub fn pxor(a: u128, b: u128) -> u128 {
    a ^ b
}

fn mask_of(c: bool, bits: u32) -> u64 {
    if c {
        u64::MAX >> (64 - bits)
    } else {
        0
    }
}

/// PCMPEQB/W/D.
pub fn pcmpeq(a: u128, b: u128, bits: u32) -> u128 {
    map2(a, b, bits, |x, y| mask_of(x == y, bits))
}

/// PCMPGTB/W/D (signed).
pub fn pcmpgt(a: u128, b: u128, bits: u32) -> u128 {
    map2(a, b, bits, |x, y| mask_of(sx(x, bits) > sx(y, bits), bits))
}

/// PSLLW/D/Q by `count` (the full 64-bit count, or the imm8): counts at
/// or above the lane width give zero.
pub fn psll(a: u128, count: u64, bits: u32) -> u128 {
    if count >= bits as u64 {
        return 0;
    }
    map2(a, 0, bits, |x, _| x << count)
}

/// PSRLW/D/Q.
pub fn psrl(a: u128, count: u64, bits: u32) -> u128 {
    if count >= bits as u64 {
        return 0;
    }
    map2(a, 0, bits, |x, _| x >> count)
}

/// PSRAW/D: counts at or above the width fill with the sign.
pub fn psra(a: u128, count: u64, bits: u32) -> u128 {
    let c = count.min(bits as u64 - 1);
    map2(a, 0, bits, |x, _| (sx(x, bits) >> c) as u64)
}

/// PSLLDQ (byte shift by imm8; 16 or more gives zero).
pub fn pslldq(a: u128, imm: u8) -> u128 {
    if imm >= 16 {
        0
    } else {
        a << (imm as u32 * 8)
    }
}

/// PSRLDQ.
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
pub fn packsswb(a: u128, b: u128) -> u128 {
    pack(a, b, 16, |x| sat_s(x, 8))
}

/// PACKSSDW.
pub fn packssdw(a: u128, b: u128) -> u128 {
    pack(a, b, 32, |x| sat_s(x, 16))
}

/// PACKUSWB.
pub fn packuswb(a: u128, b: u128) -> u128 {
    pack(a, b, 16, |x| sat_u(x, 8))
}

/// PUNPCKLBW/WD/DQ/QDQ (`bits` 8..64): interleaves the low halves.
pub fn punpckl(a: u128, b: u128, bits: u32) -> u128 {
    let mut r = 0;
    for i in 0..64 / bits {
        r = set_lane(r, bits, 2 * i, lane(a, bits, i));
        r = set_lane(r, bits, 2 * i + 1, lane(b, bits, i));
    }
    r
}

/// PUNPCKHBW/WD/DQ/QDQ: interleaves the high halves.
pub fn punpckh(a: u128, b: u128, bits: u32) -> u128 {
    punpckl(a >> 64, b >> 64, bits)
}

/// PSHUFD.
pub fn pshufd(a: u128, imm: u8) -> u128 {
    let mut r = 0;
    for i in 0..4 {
        r = set_lane(r, 32, i, lane(a, 32, (imm as u32 >> (2 * i)) & 3));
    }
    r
}

/// PSHUFLW: shuffles the low four words, keeps the high quadword.
pub fn pshuflw(a: u128, imm: u8) -> u128 {
    let mut r = a;
    for i in 0..4 {
        r = set_lane(r, 16, i, lane(a, 16, (imm as u32 >> (2 * i)) & 3));
    }
    r
}

/// PSHUFHW: shuffles the high four words, keeps the low quadword.
pub fn pshufhw(a: u128, imm: u8) -> u128 {
    let mut r = a;
    for i in 0..4 {
        r = set_lane(r, 16, 4 + i, lane(a, 16, 4 + ((imm as u32 >> (2 * i)) & 3)));
    }
    r
}

/// PMOVMSKB: the byte sign bits.
pub fn pmovmskb(a: u128) -> u32 {
    (0..16).fold(0, |m, i| m | ((lane(a, 8, i) as u32 >> 7) << i))
}

/// PEXTRW: word `imm & 7`, zero-extended.
pub fn pextrw(a: u128, imm: u8) -> u32 {
    lane(a, 16, imm as u32 & 7) as u32
}

/// PINSRW: replaces word `imm & 7` with the low word of `x`.
pub fn pinsrw(a: u128, x: u32, imm: u8) -> u128 {
    set_lane(a, 16, imm as u32 & 7, x as u64)
}

/// SHUFPS: the low two dwords from `a`, the high two from `b`.
pub fn shufps(a: u128, b: u128, imm: u8) -> u128 {
    let s = |i: u32| (imm as u32 >> (2 * i)) & 3;
    let mut r = 0;
    r = set_lane(r, 32, 0, lane(a, 32, s(0)));
    r = set_lane(r, 32, 1, lane(a, 32, s(1)));
    r = set_lane(r, 32, 2, lane(b, 32, s(2)));
    set_lane(r, 32, 3, lane(b, 32, s(3)))
}

/// SHUFPD.
pub fn shufpd(a: u128, b: u128, imm: u8) -> u128 {
    let lo = lane(a, 64, imm as u32 & 1);
    let hi = lane(b, 64, (imm as u32 >> 1) & 1);
    set_lane(lo as u128, 64, 1, hi)
}

/// UNPCKLPS.
pub fn unpcklps(a: u128, b: u128) -> u128 {
    punpckl(a, b, 32)
}

/// UNPCKHPS.
pub fn unpckhps(a: u128, b: u128) -> u128 {
    punpckh(a, b, 32)
}

/// UNPCKLPD.
pub fn unpcklpd(a: u128, b: u128) -> u128 {
    punpckl(a, b, 64)
}

/// UNPCKHPD.
pub fn unpckhpd(a: u128, b: u128) -> u128 {
    punpckh(a, b, 64)
}

/// MOVMSKPS: the dword sign bits.
pub fn movmskps(a: u128) -> u32 {
    (0..4).fold(0, |m, i| m | ((lane(a, 32, i) >> 31) as u32) << i)
}

/// MOVMSKPD: the qword sign bits.
pub fn movmskpd(a: u128) -> u32 {
    (0..2).fold(0, |m, i| m | ((lane(a, 64, i) >> 63) as u32) << i)
}
