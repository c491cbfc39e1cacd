//! RFLAGS bits and the arithmetic-flag computations shared by every
//! instruction group. Flags are computed eagerly; all helpers work on values
//! already truncated to the operand size (1, 2, 4 or 8 bytes).

pub const CF: u64 = 1 << 0;
/// Bit 1 of RFLAGS always reads as one.
pub const FIXED: u64 = 1 << 1;
pub const PF: u64 = 1 << 2;
pub const AF: u64 = 1 << 4;
pub const ZF: u64 = 1 << 6;
pub const SF: u64 = 1 << 7;
pub const TF: u64 = 1 << 8;
pub const IF: u64 = 1 << 9;
pub const DF: u64 = 1 << 10;
pub const OF: u64 = 1 << 11;
pub const IOPL: u64 = 3 << 12;
pub const NT: u64 = 1 << 14;
pub const RF: u64 = 1 << 16;
pub const VM: u64 = 1 << 17;
pub const AC: u64 = 1 << 18;
pub const VIF: u64 = 1 << 19;
pub const VIP: u64 = 1 << 20;
pub const ID: u64 = 1 << 21;

/// The six status flags arithmetic instructions write.
pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
/// Bits software can ever see set (everything else reads as zero).
pub const ALL_DEFINED: u64 =
    STATUS | FIXED | TF | IF | DF | IOPL | NT | RF | VM | AC | VIF | VIP | ID;

/// All-ones mask of an operand of `size` bytes.
#[inline(always)]
pub const fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size as u32 * 8)) - 1
    }
}

/// The sign bit of an operand of `size` bytes.
#[inline(always)]
pub const fn sign_bit(size: u8) -> u64 {
    1u64 << (size as u32 * 8 - 1)
}

/// Sign-extends the low `size` bytes of `v` to 64 bits.
#[inline(always)]
pub const fn sign_extend(v: u64, size: u8) -> u64 {
    let shift = 64 - size as u32 * 8;
    (((v << shift) as i64) >> shift) as u64
}

/// PF: set when the low byte of the result has an even number of ones.
#[inline(always)]
pub fn parity(r: u64) -> u64 {
    if (r as u8).count_ones() & 1 == 0 {
        PF
    } else {
        0
    }
}

/// ZF, SF and PF of a result of `size` bytes.
#[inline(always)]
pub fn szp(r: u64, size: u8) -> u64 {
    let r = r & mask(size);
    let mut f = parity(r);
    if r == 0 {
        f |= ZF;
    }
    if r & sign_bit(size) != 0 {
        f |= SF;
    }
    f
}

/// ADD/ADC: result and status flags of `a + b + carry`.
#[inline(always)]
pub fn add(a: u64, b: u64, carry: u64, size: u8) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let r = a.wrapping_add(b).wrapping_add(carry) & m;
    let mut f = szp(r, size);
    let cf = if size == 8 {
        let (s1, c1) = a.overflowing_add(b);
        let (_, c2) = s1.overflowing_add(carry);
        c1 | c2
    } else {
        a + b + carry > m
    };
    if cf {
        f |= CF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= AF;
    }
    if (!(a ^ b) & (a ^ r)) & sign_bit(size) != 0 {
        f |= OF;
    }
    (r, f)
}

/// SUB/SBB/CMP/NEG: result and status flags of `a - b - borrow`.
#[inline(always)]
pub fn sub(a: u64, b: u64, borrow: u64, size: u8) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let r = a.wrapping_sub(b).wrapping_sub(borrow) & m;
    let mut f = szp(r, size);
    let cf = (a as u128) < (b as u128) + (borrow as u128);
    if cf {
        f |= CF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= AF;
    }
    if ((a ^ b) & (a ^ r)) & sign_bit(size) != 0 {
        f |= OF;
    }
    (r, f)
}

/// AND/OR/XOR/TEST: OF=CF=0, AF cleared (as this host's CPUs do), SZP from result.
#[inline(always)]
pub fn logic(r: u64, size: u8) -> u64 {
    szp(r, size)
}

/// Evaluates condition code `cc` (the low nibble of Jcc/SETcc/CMOVcc opcodes).
#[inline(always)]
pub fn condition(rflags: u64, cc: u8) -> bool {
    let f = rflags;
    let r = match cc >> 1 {
        0 => f & OF != 0,
        1 => f & CF != 0,
        2 => f & ZF != 0,
        3 => f & (CF | ZF) != 0,
        4 => f & SF != 0,
        5 => f & PF != 0,
        6 => ((f & SF != 0) as u8 ^ (f & OF != 0) as u8) != 0,
        _ => f & ZF != 0 || ((f & SF != 0) != (f & OF != 0)),
    };
    r ^ (cc & 1 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_flags() {
        let (r, f) = add(0xff, 1, 0, 1);
        assert_eq!(r, 0);
        assert_eq!(f & (CF | ZF | AF | OF), CF | ZF | AF);
        let (r, f) = add(0x7f, 1, 0, 1);
        assert_eq!(r, 0x80);
        assert_eq!(f & (OF | SF | CF), OF | SF);
        let (r, f) = add(u64::MAX, 0, 1, 8);
        assert_eq!(r, 0);
        assert!(f & CF != 0);
    }

    #[test]
    fn sub_flags() {
        let (r, f) = sub(0, 1, 0, 4);
        assert_eq!(r, 0xffff_ffff);
        assert_eq!(f & (CF | SF | OF), CF | SF);
        let (_, f) = sub(0x80, 1, 0, 1);
        assert!(f & OF != 0);
        let (_, f) = sub(5, 5, 0, 8);
        assert!(f & ZF != 0 && f & PF != 0);
    }

    #[test]
    fn conditions() {
        assert!(condition(ZF, 0x4)); // E
        assert!(!condition(ZF, 0x5)); // NE
        assert!(condition(SF, 0xc)); // L: SF != OF
        assert!(condition(SF | OF, 0xd)); // GE
        assert!(condition(CF, 0x6)); // BE
    }
}
