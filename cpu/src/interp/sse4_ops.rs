//! Pure integer cores of the SSSE3, SSE4.1 and SSE4.2 instructions: byte
//! shuffles, horizontal arithmetic, blends, packed min/max/multiply,
//! PHMINPOSUW, MPSADBW, the PCMPxSTRx string compares and CRC32C.
//!
//! Values are `u128` registers (lane 0 in the low bits). Functions that
//! also serve the 64-bit MMX forms of SSSE3 take the register width `n` in
//! bytes (8 or 16); the MMX value sits zero-extended in the low half and
//! the result's upper half is then zero. Everything here is side-effect
//! free and panic-free for every input.

use crate::simd::{lane, set_lane};

/// Sign-extends the low `bits` of `x`.
#[inline(always)]
fn sx(x: u64, bits: u32) -> i64 {
    ((x << (64 - bits)) as i64) >> (64 - bits)
}

/// Applies `f` lane-wise to two vectors of `bits`-wide lanes.
#[inline(always)]
fn map2(a: u128, b: u128, bits: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    let mut r = 0u128;
    for i in 0..128 / bits {
        r = set_lane(r, bits, i, f(lane(a, bits, i), lane(b, bits, i)));
    }
    r
}

/// Saturates to a signed 16-bit value.
#[inline(always)]
fn sat16(x: i64) -> u64 {
    x.clamp(-0x8000, 0x7fff) as u64
}

// ---------------------------------------------------------------------
// SSSE3
// ---------------------------------------------------------------------

/// PSHUFB: byte i of the result is byte `b[i] & (n-1)` of `a`, or zero
/// when bit 7 of `b[i]` is set.
pub fn pshufb(a: u128, b: u128, n: usize) -> u128 {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let mut r = [0u8; 16];
    let m = n.clamp(1, 16) - 1;
    for i in 0..n.min(16) {
        if b[i] & 0x80 == 0 {
            r[i] = a[b[i] as usize & m];
        }
    }
    u128::from_le_bytes(r)
}

/// PALIGNR: the `2n`-byte concatenation `a:b` (a high) shifted right by
/// `imm` bytes, low `n` bytes kept.
pub fn palignr(a: u128, b: u128, imm: u8, n: usize) -> u128 {
    let n = n.min(16);
    let mut cat = [0u8; 32];
    cat[..n].copy_from_slice(&b.to_le_bytes()[..n]);
    cat[n..2 * n].copy_from_slice(&a.to_le_bytes()[..n]);
    let mut r = [0u8; 16];
    for (i, byte) in r.iter_mut().enumerate().take(n) {
        let k = i + imm as usize;
        if k < 2 * n {
            *byte = cat[k];
        }
    }
    u128::from_le_bytes(r)
}

/// Horizontal operations of PHADD*/PHSUB*.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Hop {
    Add,
    Sub,
    AddSat,
    SubSat,
}

/// PHADDW/PHADDD/PHADDSW/PHSUBW/PHSUBD/PHSUBSW (`bits` 16 or 32): pairs
/// of `a` fill the low half of the result, pairs of `b` the high half;
/// the odd element is subtracted from the even one.
pub fn phop(a: u128, b: u128, bits: u32, op: Hop, n: usize) -> u128 {
    let lanes = (8 * n as u32) / bits; // per source
    let half = lanes / 2;
    let mut r = 0u128;
    for (k, src) in [a, b].into_iter().enumerate() {
        for i in 0..half {
            let x = lane(src, bits, 2 * i);
            let y = lane(src, bits, 2 * i + 1);
            let v = match op {
                Hop::Add => x.wrapping_add(y),
                Hop::Sub => x.wrapping_sub(y),
                Hop::AddSat => sat16(sx(x, bits) + sx(y, bits)),
                Hop::SubSat => sat16(sx(x, bits) - sx(y, bits)),
            };
            r = set_lane(r, bits, k as u32 * half + i, v);
        }
    }
    r
}

/// PMADDUBSW: unsigned bytes of `a` times signed bytes of `b`, adjacent
/// products summed with signed saturation into words.
pub fn pmaddubsw(a: u128, b: u128) -> u128 {
    let mut r = 0u128;
    for i in 0..8 {
        let p0 = lane(a, 8, 2 * i) as i64 * sx(lane(b, 8, 2 * i), 8);
        let p1 = lane(a, 8, 2 * i + 1) as i64 * sx(lane(b, 8, 2 * i + 1), 8);
        r = set_lane(r, 16, i, sat16(p0 + p1));
    }
    r
}

/// PMULHRSW: `((a * b >> 14) + 1) >> 1` per signed word.
pub fn pmulhrsw(a: u128, b: u128) -> u128 {
    map2(a, b, 16, |x, y| {
        let p = sx(x, 16) * sx(y, 16);
        (((p >> 14) + 1) >> 1) as u64
    })
}

/// PSIGNB/W/D: `a` negated, zeroed or kept by the sign of `b`.
pub fn psign(a: u128, b: u128, bits: u32) -> u128 {
    map2(a, b, bits, |x, y| {
        let y = sx(y, bits);
        if y < 0 {
            x.wrapping_neg()
        } else if y == 0 {
            0
        } else {
            x
        }
    })
}

/// PABSB/W/D: absolute values (the most negative value stays as is).
pub fn pabs(b: u128, bits: u32) -> u128 {
    map2(0, b, bits, |_, y| sx(y, bits).unsigned_abs())
}

// ---------------------------------------------------------------------
// SSE4.1 integer
// ---------------------------------------------------------------------

/// PMOVSX*/PMOVZX*: the low lanes of `from` bits of `b` widened to `to`
/// bits, sign- or zero-extended.
pub fn pmovx(b: u128, from: u32, to: u32, signed: bool) -> u128 {
    let mut r = 0u128;
    for i in 0..128 / to {
        let x = lane(b, from, i);
        let x = if signed { sx(x, from) as u64 } else { x };
        r = set_lane(r, to, i, x);
    }
    r
}

/// PMULDQ: signed low dwords of each quadword, full 64-bit products.
pub fn pmuldq(a: u128, b: u128) -> u128 {
    map2(a, b, 64, |x, y| (sx(x, 32) * sx(y, 32)) as u64)
}

/// PMULLD: low 32 bits of the dword products.
pub fn pmulld(a: u128, b: u128) -> u128 {
    map2(a, b, 32, |x, y| x.wrapping_mul(y))
}

/// PMINSB/PMINSD/PMAXSB/PMAXSD (`max` picks), signed lanes of `bits`.
pub fn pminmax_s(a: u128, b: u128, bits: u32, max: bool) -> u128 {
    map2(a, b, bits, |x, y| {
        let (sxv, syv) = (sx(x, bits), sx(y, bits));
        if (sxv < syv) != max {
            x
        } else {
            y
        }
    })
}

/// PMINUW/PMINUD/PMAXUW/PMAXUD, unsigned lanes of `bits`.
pub fn pminmax_u(a: u128, b: u128, bits: u32, max: bool) -> u128 {
    map2(a, b, bits, |x, y| if max { x.max(y) } else { x.min(y) })
}

/// PCMPEQQ.
pub fn pcmpeqq(a: u128, b: u128) -> u128 {
    map2(a, b, 64, |x, y| if x == y { u64::MAX } else { 0 })
}

/// PCMPGTQ (signed).
pub fn pcmpgtq(a: u128, b: u128) -> u128 {
    map2(
        a,
        b,
        64,
        |x, y| if (x as i64) > (y as i64) { u64::MAX } else { 0 },
    )
}

/// PACKUSDW: signed dwords of `a` then `b` to unsigned-saturated words.
pub fn packusdw(a: u128, b: u128) -> u128 {
    let mut r = 0u128;
    for (k, src) in [a, b].into_iter().enumerate() {
        for i in 0..4 {
            let x = sx(lane(src, 32, i), 32).clamp(0, 0xffff) as u64;
            r = set_lane(r, 16, k as u32 * 4 + i, x);
        }
    }
    r
}

/// PTEST: (ZF, CF) = ((a AND b) == 0, (NOT a AND b) == 0).
pub fn ptest(a: u128, b: u128) -> (bool, bool) {
    (a & b == 0, !a & b == 0)
}

/// Blends with an immediate: lane i of `bits` comes from `b` when bit i of
/// `imm` is set (PBLENDW, BLENDPS, BLENDPD).
pub fn blend_imm(a: u128, b: u128, bits: u32, imm: u8) -> u128 {
    let mut r = a;
    for i in 0..128 / bits {
        if imm >> i & 1 != 0 {
            r = set_lane(r, bits, i, lane(b, bits, i));
        }
    }
    r
}

/// Variable blends (PBLENDVB, BLENDVPS, BLENDVPD): lane i of `bits` comes
/// from `b` when the sign bit of lane i of `mask` is set.
pub fn blendv(a: u128, b: u128, mask: u128, bits: u32) -> u128 {
    let mut sel = 0u128;
    for i in 0..128 / bits {
        if lane(mask, bits, i) >> (bits - 1) & 1 != 0 {
            sel = set_lane(sel, bits, i, u64::MAX);
        }
    }
    (a & !sel) | (b & sel)
}

/// PHMINPOSUW: the smallest unsigned word of `b` in bits 15:0 and the
/// index of its first occurrence in bits 18:16; the rest zero.
pub fn phminposuw(b: u128) -> u128 {
    let mut min = lane(b, 16, 0);
    let mut idx = 0;
    for i in 1..8 {
        let x = lane(b, 16, i);
        if x < min {
            min = x;
            idx = i;
        }
    }
    min as u128 | (idx as u128) << 16
}

/// MPSADBW: eight sums of absolute differences of 4-byte groups, sliding
/// over `a` from byte 4*imm[2] against the 4 bytes of `b` at 4*imm[1:0].
pub fn mpsadbw(a: u128, b: u128, imm: u8) -> u128 {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let aoff = ((imm >> 2) & 1) as usize * 4;
    let boff = (imm & 3) as usize * 4;
    let mut r = 0u128;
    for i in 0..8 {
        let mut s = 0u64;
        for j in 0..4 {
            s += (a[aoff + i + j] as i64 - b[boff + j] as i64).unsigned_abs();
        }
        r = set_lane(r, 16, i as u32, s);
    }
    r
}

/// INSERTPS: `src` (a single) into lane imm[5:4] of `a`, then the lanes
/// of imm[3:0] zeroed. The caller picks `src` (register lane imm[7:6], or
/// the m32 operand).
pub fn insertps(a: u128, src: u32, imm: u8) -> u128 {
    let mut r = set_lane(a, 32, ((imm >> 4) & 3) as u32, src as u64);
    for i in 0..4 {
        if imm >> i & 1 != 0 {
            r = set_lane(r, 32, i, 0);
        }
    }
    r
}

// ---------------------------------------------------------------------
// SSE4.2 string compares
// ---------------------------------------------------------------------

/// Number of elements per register for the PCMPxSTRx format in imm8[0].
#[inline]
pub fn str_elems(imm: u8) -> u32 {
    if imm & 1 != 0 {
        8
    } else {
        16
    }
}

/// Implicit length (PCMPISTRx): index of the first zero element of `v`,
/// or the element count.
pub fn str_len_implicit(v: u128, imm: u8) -> u32 {
    let n = str_elems(imm);
    let bits = 128 / n;
    (0..n).find(|&i| lane(v, bits, i) == 0).unwrap_or(n)
}

/// Explicit length (PCMPESTRx): the absolute value of the signed length
/// register, saturated to the element count.
pub fn str_len_explicit(len: i64, imm: u8) -> u32 {
    len.unsigned_abs().min(str_elems(imm) as u64) as u32
}

/// The PCMPxSTRx core: compares `a` (xmm1, the set/ranges/needle, `la`
/// valid elements) with `b` (xmm2/m128, `lb` valid elements) per imm8
/// (SDM vol. 2 4.1) and returns IntRes2 and the status flags (CF = IntRes2
/// non-zero, ZF = `b` shorter than a register, SF = `a` shorter, OF =
/// IntRes2 bit 0, AF = PF = 0).
pub fn pcmpstr(a: u128, b: u128, la: u32, lb: u32, imm: u8) -> (u32, u64) {
    use crate::flags::{CF, OF, SF, ZF};
    let n = str_elems(imm);
    let bits = 128 / n;
    let signed = imm & 2 != 0;
    let el = |v: u128, i: u32| -> i64 {
        let x = lane(v, bits, i);
        if signed {
            sx(x, bits)
        } else {
            x as i64
        }
    };
    let (la, lb) = (la.min(n), lb.min(n));
    let mut ea = [0i64; 16];
    let mut eb = [0i64; 16];
    for i in 0..n {
        ea[i as usize] = el(a, i);
        eb[i as usize] = el(b, i);
    }
    let mut res1 = 0u32;
    match (imm >> 2) & 3 {
        // Equal any: b[j] is one of the valid elements of a.
        0 => {
            for j in 0..lb {
                let x = eb[j as usize];
                if ea[..la as usize].contains(&x) {
                    res1 |= 1 << j;
                }
            }
        }
        // Ranges: a[i] <= b[j] <= a[i+1] for some valid pair (i even).
        1 => {
            for j in 0..lb {
                let x = eb[j as usize];
                let mut i = 0;
                while i + 1 < la {
                    if ea[i as usize] <= x && x <= ea[i as usize + 1] {
                        res1 |= 1 << j;
                        break;
                    }
                    i += 2;
                }
            }
        }
        // Equal each: a[i] == b[i]; two invalid elements compare true.
        2 => {
            for i in 0..n {
                let t = match (i < la, i < lb) {
                    (true, true) => ea[i as usize] == eb[i as usize],
                    (false, false) => true,
                    _ => false,
                };
                if t {
                    res1 |= 1 << i;
                }
            }
        }
        // Equal ordered: the substring a occurs in b at j. An invalid
        // element of a matches anything; a valid one fails past b's end.
        _ => {
            for j in 0..n {
                let mut t = true;
                for i in 0..n - j {
                    let k = j + i;
                    if i >= la {
                        break;
                    }
                    if k >= lb || ea[i as usize] != eb[k as usize] {
                        t = false;
                        break;
                    }
                }
                if t {
                    res1 |= 1 << j;
                }
            }
        }
    }
    let all = (1u32 << n) - 1;
    let res2 = match (imm >> 4) & 3 {
        1 => !res1 & all,
        3 => res1 ^ ((1u32 << lb) - 1),
        _ => res1,
    };
    let mut f = 0;
    if res2 != 0 {
        f |= CF;
    }
    if lb < n {
        f |= ZF;
    }
    if la < n {
        f |= SF;
    }
    if res2 & 1 != 0 {
        f |= OF;
    }
    (res2, f)
}

/// PCMPxSTRI's index: the lowest (imm8[6] clear) or highest set bit of
/// IntRes2, or the element count when none is set.
pub fn str_index(res2: u32, imm: u8) -> u32 {
    if res2 == 0 {
        str_elems(imm)
    } else if imm & 0x40 != 0 {
        31 - res2.leading_zeros()
    } else {
        res2.trailing_zeros()
    }
}

/// PCMPxSTRM's mask: IntRes2 as bits (imm8[6] clear) or expanded to
/// all-ones elements.
pub fn str_mask(res2: u32, imm: u8) -> u128 {
    if imm & 0x40 == 0 {
        return res2 as u128;
    }
    let n = str_elems(imm);
    let bits = 128 / n;
    let mut r = 0u128;
    for i in 0..n {
        if res2 >> i & 1 != 0 {
            r = set_lane(r, bits, i, u64::MAX);
        }
    }
    r
}

// ---------------------------------------------------------------------
// CRC32 (CRC-32C, Castagnoli)
// ---------------------------------------------------------------------

/// The reflected CRC-32C polynomial (0x1EDC6F41 bit-reversed).
const CRC32C_POLY: u32 = 0x82f6_3b78;

const fn crc_table() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ CRC32C_POLY
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let p = t[s - 1][i];
            t[s][i] = (p >> 8) ^ t[0][(p & 0xff) as usize];
            i += 1;
        }
        s += 1;
    }
    t
}

/// Slicing-by-8 tables.
static CRC_TABLE: [[u32; 256]; 8] = crc_table();

/// CRC32: accumulates the low `size` bytes (1, 2, 4 or 8) of `data`, least
/// significant byte first, into `crc` (no inversion, as the instruction).
pub fn crc32c(crc: u32, data: u64, size: u8) -> u32 {
    let t = &CRC_TABLE;
    match size {
        1 => (crc >> 8) ^ t[0][((crc ^ data as u32) & 0xff) as usize],
        2 => {
            let x = crc ^ (data as u32 & 0xffff);
            (crc >> 16) ^ t[1][(x & 0xff) as usize] ^ t[0][((x >> 8) & 0xff) as usize]
        }
        4 => {
            let x = crc ^ data as u32;
            t[3][(x & 0xff) as usize]
                ^ t[2][((x >> 8) & 0xff) as usize]
                ^ t[1][((x >> 16) & 0xff) as usize]
                ^ t[0][(x >> 24) as usize]
        }
        _ => {
            let lo = crc ^ data as u32;
            let hi = (data >> 32) as u32;
            t[7][(lo & 0xff) as usize]
                ^ t[6][((lo >> 8) & 0xff) as usize]
                ^ t[5][((lo >> 16) & 0xff) as usize]
                ^ t[4][(lo >> 24) as usize]
                ^ t[3][(hi & 0xff) as usize]
                ^ t[2][((hi >> 8) & 0xff) as usize]
                ^ t[1][((hi >> 16) & 0xff) as usize]
                ^ t[0][(hi >> 24) as usize]
        }
    }
}

/// Bitwise CRC32C, the reference for the table version.
#[cfg(test)]
pub fn crc32c_bitwise(mut crc: u32, data: u64, size: u8) -> u32 {
    for i in 0..size as u32 {
        crc ^= (data >> (8 * i)) as u32 & 0xff;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ CRC32C_POLY
            } else {
                crc >> 1
            };
        }
    }
    crc
}
