//! x87 floating-point unit: an exact, deterministic, pure-Rust model of the
//! 80-bit extended-precision arithmetic of the Intel x87 FPU.
//!
//! Every operation takes its operands as [`F80`] values and a [`Ctrl`]
//! (rounding and precision control from the control word) and returns the
//! result together with the status-word bits it raises ([`Exc`]): the six
//! exception flags (IE, DE, ZE, OE, UE, PE) and the condition codes the
//! instruction defines (C1 as round-up indicator, C0/C2/C3 for compares).
//!
//! Exception responses. All *masked* responses are modelled; with UE
//! masked, UE is raised only when the result is tiny (detected *after*
//! rounding, as x86 does) *and* inexact. For unmasked exceptions the
//! caller raises #MF when it finds an unmasked flag in FSW; the only
//! unmasked responses that change a result are modelled through
//! [`Ctrl::unmasked`]: unmasked OE/UE on register results (add, sub, mul,
//! div, FSCALE; UE for FPREM/FPREM1) deliver the significand rounded at an
//! unbounded exponent with the exponent re-biased by 24576, UE being
//! raised for every tiny result, exact or not. Not modelled: with unmasked
//! IE/ZE/DE the destination register is left unwritten, and stores (FST
//! m32/m64, FIST, FBSTP) with an unmasked exception leave memory
//! unwritten; both are the caller's business (store flags follow the
//! masked rules, so an exact tiny store result raises no UE here).
//!
//! Encodings the 387 and later reject (unnormals, pseudo-NaNs,
//! pseudo-infinities) are invalid operands: IE and the real indefinite.
//! Pseudo-denormals (exponent 0 with the integer bit set) are accepted like
//! denormals (DE) and read with exponent 1, as the hardware does.
//!
//! Results are rounded once from the exact value (PC applies to add, sub,
//! mul, div and sqrt only; FSCALE, FRNDINT, FPREM and stores ignore it),
//! and denormal results are produced by denormalizing first and rounding
//! at the PC position, as the hardware does.
//!
//! Hardware rules found by the differential tests and modelled here:
//! - NaN operands: the result is the NaN with the larger raw significand
//!   (so a QNaN beats an SNaN), quieted; on a tie the positive one. A NaN
//!   or unsupported operand suppresses DE.
//! - DE is not raised by stores (FST m32/m64, FIST, FISTTP, FBSTP) of a
//!   denormal, by `x / 0` with a denormal dividend, nor by FSQRT of a
//!   negative denormal (invalid wins).
//! - FPREM/FPREM1 reduce by `N = 32 + (D mod 32)` exponent steps when the
//!   exponent difference `D` is 64 or more (C2 set, C0/C1/C3 cleared).
//! - The reserved PC encoding 01 rounds like 64-bit precision.
//! - Memory-operand arithmetic is the exact load ([`f32_operand`],
//!   [`f64_operand`], SNaNs kept signaling) followed by the register
//!   operation, with flags merged by [`merge_load_flags`].
//!
//! The transcendental instructions (`trans.rs`) are deterministic but not
//! bit-exact with the hardware; see that module for their accuracy.
//!
//! The arithmetic is verified bit-for-bit (result and status bits) against
//! the host FPU by the differential tests in `tests.rs`.

mod arith;
mod conv;
mod fpu;
mod misc;
#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
mod trans;

pub use arith::{add, compare, div, extract, from_i64, mul, round_int, sqrt, sub, Relation};
pub use conv::*;
pub use fpu::Fpu;
pub use misc::{examine, from_bcd, load_const, prem, scale, to_bcd, Const};
pub use trans::{cos, f2xm1, fpatan, fyl2x, fyl2xp1, sin, sincos, tan};

use serde::{Deserialize, Serialize};

/// Status-word bits raised by one operation (same positions as in FSW).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Exc(pub u16);

impl Exc {
    pub const IE: u16 = 1 << 0;
    pub const DE: u16 = 1 << 1;
    pub const ZE: u16 = 1 << 2;
    pub const OE: u16 = 1 << 3;
    pub const UE: u16 = 1 << 4;
    pub const PE: u16 = 1 << 5;
    pub const C0: u16 = 1 << 8;
    pub const C1: u16 = 1 << 9;
    pub const C2: u16 = 1 << 10;
    pub const C3: u16 = 1 << 14;
    /// The six exception flags.
    pub const EXC_MASK: u16 = 0x3f;
    /// The four condition codes.
    pub const CC_MASK: u16 = Self::C0 | Self::C1 | Self::C2 | Self::C3;

    pub fn has(self, bits: u16) -> bool {
        self.0 & bits != 0
    }
}

impl core::ops::BitOr for Exc {
    type Output = Exc;
    fn bitor(self, o: Exc) -> Exc {
        Exc(self.0 | o.0)
    }
}

impl core::ops::BitOrAssign<u16> for Exc {
    fn bitor_assign(&mut self, o: u16) {
        self.0 |= o;
    }
}

/// Rounding control (FCW bits 10..11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Rounding {
    Nearest = 0,
    Down = 1,
    Up = 2,
    Zero = 3,
}

/// Precision control (FCW bits 8..9): significand width of add, sub, mul,
/// div and sqrt results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Precision {
    P24,
    P53,
    P64,
}

impl Precision {
    pub fn bits(self) -> u32 {
        match self {
            Precision::P24 => 24,
            Precision::P53 => 53,
            Precision::P64 => 64,
        }
    }
}

/// The arithmetic-relevant part of the control word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ctrl {
    pub rc: Rounding,
    pub pc: Precision,
    /// Which of OE and UE (bits [`Exc::OE`], [`Exc::UE`]) are unmasked:
    /// register results then get the unmasked response, the significand
    /// rounded at an unbounded exponent and the exponent re-biased by
    /// 24576 (tininess is still detected after rounding, and UE is then
    /// raised even for exact results). Other unmasked
    /// exceptions do not change the returned value.
    pub unmasked: u16,
}

impl Ctrl {
    /// Round to nearest, 64-bit precision, all masked (the FNINIT default).
    pub const DEFAULT: Ctrl = Ctrl {
        rc: Rounding::Nearest,
        pc: Precision::P64,
        unmasked: 0,
    };

    /// Decodes RC, PC and the OM/UM masks from a control word. The
    /// reserved PC encoding 01 is treated as 64-bit precision (as the
    /// hardware does).
    pub fn from_cw(cw: u16) -> Ctrl {
        let rc = match (cw >> 10) & 3 {
            0 => Rounding::Nearest,
            1 => Rounding::Down,
            2 => Rounding::Up,
            _ => Rounding::Zero,
        };
        let pc = match (cw >> 8) & 3 {
            0 => Precision::P24,
            2 => Precision::P53,
            _ => Precision::P64,
        };
        Ctrl {
            rc,
            pc,
            unmasked: !cw & (Exc::OE | Exc::UE),
        }
    }
}

/// An 80-bit extended-precision value in its memory encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct F80 {
    pub sign: bool,
    /// Biased exponent, 15 bits.
    pub exp: u16,
    /// Significand including the explicit integer bit (bit 63).
    pub mant: u64,
}

/// Operand classes as the x87 sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Zero,
    /// Denormal or pseudo-denormal (exponent field 0, non-zero significand).
    Denormal,
    Normal,
    Inf,
    QNaN,
    SNaN,
    /// Unnormal, pseudo-NaN or pseudo-infinity: rejected by the 387+.
    Unsupported,
}

pub const EXP_MAX: u16 = 0x7fff;
pub const BIAS: i32 = 16383;
const INT_BIT: u64 = 1 << 63;
const QUIET_BIT: u64 = 1 << 62;

impl F80 {
    pub const ZERO: F80 = F80 {
        sign: false,
        exp: 0,
        mant: 0,
    };
    pub const ONE: F80 = F80 {
        sign: false,
        exp: 0x3fff,
        mant: INT_BIT,
    };
    pub const INFINITY: F80 = F80 {
        sign: false,
        exp: EXP_MAX,
        mant: INT_BIT,
    };
    /// The QNaN "real indefinite".
    pub const INDEFINITE: F80 = F80 {
        sign: true,
        exp: EXP_MAX,
        mant: 0xC000_0000_0000_0000,
    };

    /// Decodes the 10-byte little-endian memory image.
    pub fn from_bytes(b: [u8; 10]) -> F80 {
        let mut m = [0u8; 8];
        m.copy_from_slice(&b[..8]);
        let se = u16::from_le_bytes([b[8], b[9]]);
        F80 {
            sign: se & 0x8000 != 0,
            exp: se & 0x7fff,
            mant: u64::from_le_bytes(m),
        }
    }

    /// Encodes the 10-byte little-endian memory image.
    pub fn to_bytes(self) -> [u8; 10] {
        let mut b = [0u8; 10];
        b[..8].copy_from_slice(&self.mant.to_le_bytes());
        b[8..].copy_from_slice(&self.sign_exp().to_le_bytes());
        b
    }

    /// The upper 16 bits of the encoding: sign and exponent.
    pub fn sign_exp(self) -> u16 {
        (self.sign as u16) << 15 | self.exp
    }

    pub fn from_sign_exp(se: u16, mant: u64) -> F80 {
        F80 {
            sign: se & 0x8000 != 0,
            exp: se & 0x7fff,
            mant,
        }
    }

    pub fn class(self) -> Class {
        match self.exp {
            0 if self.mant == 0 => Class::Zero,
            0 => Class::Denormal,
            EXP_MAX if self.mant & INT_BIT == 0 => Class::Unsupported,
            EXP_MAX if self.mant << 1 == 0 => Class::Inf,
            EXP_MAX if self.mant & QUIET_BIT != 0 => Class::QNaN,
            EXP_MAX => Class::SNaN,
            _ if self.mant & INT_BIT == 0 => Class::Unsupported,
            _ => Class::Normal,
        }
    }

    pub fn is_nan(self) -> bool {
        matches!(self.class(), Class::QNaN | Class::SNaN)
    }

    /// The tag-word encoding of a register holding this value:
    /// 0 valid, 1 zero, 2 special (NaN, infinity, denormal, unsupported).
    pub fn tag(self) -> u8 {
        match self.class() {
            Class::Normal => 0,
            Class::Zero => 1,
            _ => 2,
        }
    }

    /// FABS (never raises anything besides stack faults).
    pub fn abs(self) -> F80 {
        F80 {
            sign: false,
            ..self
        }
    }

    /// FCHS.
    pub fn chs(self) -> F80 {
        F80 {
            sign: !self.sign,
            ..self
        }
    }

    fn quiet(self) -> F80 {
        F80 {
            mant: self.mant | QUIET_BIT,
            ..self
        }
    }
}
