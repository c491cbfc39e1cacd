//! x87, MMX and SSE state for the differential tester: the FXSAVE image both
//! sides start from and end with, random initial states rich in special
//! values, special values for the scratch memory, and the comparison.
//!
//! The state travels as a 64-bit FXSAVE image (FXSAVE64 layout): the host
//! loads it with FXRSTOR64 before the generated code and stores its final
//! state with FXSAVE64 after it; the interpreter loads it with
//! `Fpu::fxrstor_x87` plus MXCSR and XMM0–15, and its final state is read
//! straight from `Cpu` (not through an FXSAVE model).
//!
//! Compared: FCW, FSW (all bits: TOP, C0–C3, the exception flags, SF, ES,
//! B), the abridged tag, the contents of every non-empty x87 register by
//! physical index (MMX registers are x87 registers: an MMX instruction
//! makes all eight valid with TOP = 0), MXCSR and XMM0–15. Not compared:
//! FOP, FIP, FCS, FDP, FDS (the last x87 instruction and data pointers,
//! which this CPU updates only on unmasked exceptions or not at all, and
//! which depend on its FOP-compatibility mode) and the contents of empty
//! registers (only FXSAVE/FNSAVE/XSAVE store those, and their images are
//! compared as memory).

use hindsight_cpu::Cpu;

use crate::rng::Rng;

/// Size of an FXSAVE image.
pub const FX_SIZE: usize = 512;

/// x87/MMX/SSE state, as loaded and compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FpState {
    pub fcw: u16,
    pub fsw: u16,
    /// Abridged tag: bit p set when physical register p is not empty.
    pub ftw: u8,
    pub mxcsr: u32,
    /// Physical registers R0..R7 (10-byte encodings).
    pub regs: [[u8; 10]; 8],
    pub xmm: [u128; 16],
}

impl FpState {
    /// The state after FNINIT and reset MXCSR, XMM zero.
    pub fn initial() -> FpState {
        FpState {
            fcw: 0x037f,
            fsw: 0,
            ftw: 0,
            mxcsr: 0x1f80,
            regs: [[0; 10]; 8],
            xmm: [0; 16],
        }
    }

    pub fn top(&self) -> usize {
        ((self.fsw >> 11) & 7) as usize
    }

    /// Decodes a 64-bit FXSAVE image (ST(i) at 32 + 16 i, physical R((TOP + i) & 7)).
    pub fn from_fxsave(img: &[u8]) -> FpState {
        let w16 = |o: usize| u16::from_le_bytes([img[o], img[o + 1]]);
        let mut s = FpState {
            fcw: w16(0),
            fsw: w16(2),
            ftw: img[4],
            mxcsr: u32::from_le_bytes([img[24], img[25], img[26], img[27]]),
            regs: [[0; 10]; 8],
            xmm: [0; 16],
        };
        let top = s.top();
        for i in 0..8 {
            let o = 32 + 16 * i;
            s.regs[(top + i) & 7].copy_from_slice(&img[o..o + 10]);
        }
        for (i, x) in s.xmm.iter_mut().enumerate() {
            let o = 160 + 16 * i;
            let mut b = [0u8; 16];
            b.copy_from_slice(&img[o..o + 16]);
            *x = u128::from_le_bytes(b);
        }
        s
    }

    /// The 64-bit FXSAVE image of this state (pointers zero, MXCSR_MASK `mask`).
    pub fn to_fxsave(&self, mask: u32) -> [u8; FX_SIZE] {
        let mut img = [0u8; FX_SIZE];
        img[0..2].copy_from_slice(&self.fcw.to_le_bytes());
        img[2..4].copy_from_slice(&self.fsw.to_le_bytes());
        img[4] = self.ftw;
        img[24..28].copy_from_slice(&self.mxcsr.to_le_bytes());
        img[28..32].copy_from_slice(&mask.to_le_bytes());
        let top = self.top();
        for i in 0..8 {
            let o = 32 + 16 * i;
            img[o..o + 10].copy_from_slice(&self.regs[(top + i) & 7]);
        }
        for (i, x) in self.xmm.iter().enumerate() {
            let o = 160 + 16 * i;
            img[o..o + 16].copy_from_slice(&x.to_le_bytes());
        }
        img
    }

    /// Loads this state into the interpreter's CPU.
    pub fn load_into(&self, cpu: &mut Cpu) {
        let img = self.to_fxsave(0xffff);
        cpu.fpu.fxrstor_x87(&img, true);
        cpu.fpu.fip = 0;
        cpu.fpu.fdp = 0;
        cpu.fpu.fop = 0;
        cpu.fpu.fcs = 0;
        cpu.fpu.fds = 0;
        cpu.mxcsr = self.mxcsr;
        cpu.xmm = self.xmm;
    }

    /// The interpreter's state, read from its CPU.
    pub fn from_cpu(cpu: &Cpu) -> FpState {
        let mut regs = [[0u8; 10]; 8];
        for (p, r) in regs.iter_mut().enumerate() {
            *r = cpu.fpu.regs[p].to_bytes();
        }
        FpState {
            fcw: cpu.fpu.cw,
            fsw: cpu.fpu.sw,
            ftw: cpu.fpu.abridged_tag(),
            mxcsr: cpu.mxcsr,
            regs,
            xmm: cpu.xmm,
        }
    }

    /// A random initial state: all exceptions masked, random rounding and
    /// precision control, random condition codes, sticky flags and TOP, a
    /// stack of special and random values, random MXCSR rounding/FTZ/DAZ,
    /// XMM lanes of special values. `mxcsr_mask` is the host's MXCSR_MASK.
    pub fn random(rng: &mut Rng, mxcsr_mask: u32) -> FpState {
        let pc = *rng.pick(&[3u16, 3, 3, 2, 0, 1]);
        let fcw =
            0x0040 | 0x3f | pc << 8 | (rng.below(4) as u16) << 10 | (rng.below(2) as u16) << 12;
        let mut fsw = (rng.below(8) as u16) << 11 | (rng.next() as u16 & 0x4700);
        if rng.chance(40) {
            // Sticky exception flags (masked, so ES stays clear).
            fsw |= rng.next() as u16 & 0x3f;
            if fsw & 1 != 0 && rng.chance(30) {
                fsw |= 0x40;
            }
        }
        let mut fcw = fcw;
        if rng.chance(5) {
            // Some x87 exceptions unmasked (#MF at the next waiting x87
            // instruction after one is raised); none pending at the start.
            let unmask = rng.next() as u16 & 0x3f;
            fcw &= !unmask;
            fsw &= !unmask;
            if unmask & 1 != 0 {
                fsw &= !0x40;
            }
        }
        let top = ((fsw >> 11) & 7) as usize;
        let mut s = FpState {
            fcw,
            fsw,
            ftw: 0,
            mxcsr: 0x1f80,
            regs: [[0; 10]; 8],
            xmm: [0; 16],
        };
        match rng.below(10) {
            0..=6 => {
                // ST(0)..ST(n-1) valid, the rest empty.
                let n = *rng.pick(&[0usize, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 8]);
                for i in 0..n {
                    s.ftw |= 1 << ((top + i) & 7);
                }
            }
            7 | 8 => s.ftw = rng.next() as u8,
            _ => {
                // As after MMX instructions: all valid, TOP = 0.
                s.fsw &= !0x3800;
                s.ftw = 0xff;
            }
        }
        let mmx_like = s.ftw == 0xff && s.top() == 0 && rng.chance(50);
        for r in s.regs.iter_mut() {
            *r = if mmx_like {
                let mut b = [0xffu8; 10];
                b[..8].copy_from_slice(&int_lane(rng, 64).to_le_bytes());
                b
            } else {
                f80_special(rng)
            };
        }
        let mut mx = 0x1f80 | (rng.below(4) as u32) << 13;
        if rng.chance(30) {
            mx |= 0x8000; // FTZ
        }
        if rng.chance(30) {
            mx |= 0x40; // DAZ
        }
        if rng.chance(30) {
            mx |= rng.next() as u32 & 0x3f;
        }
        if rng.chance(5) {
            // Some SIMD exceptions unmasked (#XM).
            mx &= !((rng.next() as u32 & 0x3f) << 7);
        }
        s.mxcsr = mx & mxcsr_mask;
        for x in s.xmm.iter_mut() {
            *x = xmm_value(rng);
        }
        s
    }
}

/// An f32 bit pattern biased towards special values.
pub fn f32_special(rng: &mut Rng) -> u32 {
    let sign = (rng.below(2) as u32) << 31;
    let v = match rng.below(20) {
        0 => 0,
        1 => 0x7f80_0000, // inf
        2 => 0x7fc0_0000 | ((rng.next() as u32 & 0x3f_ffff) * (rng.below(2) as u32)), // QNaN
        3 => 0x7f80_0000 | (rng.next() as u32 & 0x3f_ffff).max(1), // SNaN
        4 => rng.next() as u32 & 0x7f_ffff, // denormal
        5 => *rng.pick(&[1u32, 0x7f_ffff, 0x40_0000]), // extreme denormals
        6 => 0x0080_0000, // smallest normal
        7 => 0x7f7f_ffff, // largest normal
        8 => 0x3f80_0000, // 1.0
        9 => {
            // Near an integer or a rounding boundary.
            let sh = rng.below(25);
            let n = rng.below(1 << sh) as f32;
            let x = n + *rng.pick(&[0.0f32, 0.5, 0.25, 0.75]);
            (x.to_bits() as i64 + rng.below(3) as i64 - 1).max(0) as u32
        }
        10 => {
            // Integer-conversion boundaries: 2^15, 2^31, 2^63, 2^64.
            let e = *rng.pick(&[15u32, 16, 31, 32, 63, 64]);
            (((127 + e) << 23) as i64 + rng.below(3) as i64 - 1) as u32
        }
        11 | 12 => (rng.below(60) as u32 + 97) << 23 | (rng.next() as u32 & 0x7f_ffff),
        13 => (rng.next() as u32 & 0x7f80_0000) | (rng.next() as u32 & 0x7f_ffff),
        14 => (rng.below(254) as u32 + 1) << 23,
        _ => rng.next() as u32 & 0x7fff_ffff,
    };
    sign | (v & 0x7fff_ffff)
}

/// An f64 bit pattern biased towards special values.
pub fn f64_special(rng: &mut Rng) -> u64 {
    let sign = rng.below(2) << 63;
    const FRAC: u64 = (1 << 52) - 1;
    let v = match rng.below(20) {
        0 => 0,
        1 => 0x7ff0_0000_0000_0000,
        2 => 0x7ff8_0000_0000_0000 | ((rng.next() & (FRAC >> 1)) * rng.below(2)),
        3 => 0x7ff0_0000_0000_0000 | (rng.next() & (FRAC >> 1)).max(1),
        4 => rng.next() & FRAC,
        5 => *rng.pick(&[1u64, FRAC, 1 << 51]),
        6 => 0x0010_0000_0000_0000,
        7 => 0x7fef_ffff_ffff_ffff,
        8 => 0x3ff0_0000_0000_0000,
        9 => {
            let sh = rng.below(54);
            let n = rng.below(1 << sh) as f64;
            let x = n + *rng.pick(&[0.0f64, 0.5, 0.25, 0.75]);
            (x.to_bits() as i64 + rng.below(3) as i64 - 1).max(0) as u64
        }
        10 => {
            let e = *rng.pick(&[15u64, 16, 31, 32, 63, 64]);
            (((1023 + e) << 52) as i64 + rng.below(3) as i64 - 1) as u64
        }
        11 | 12 => (rng.below(120) + 963) << 52 | (rng.next() & FRAC),
        13 => {
            // A float value widened (exactly representable in f32).
            (f32::from_bits(f32_special(rng)) as f64).to_bits() & !(1 << 63)
        }
        14 => (rng.below(2046) + 1) << 52,
        _ => rng.next() & !(1 << 63),
    };
    sign | (v & !(1 << 63))
}

/// An 80-bit extended value (10-byte encoding) biased towards special values,
/// including the encodings the 387 and later reject.
pub fn f80_special(rng: &mut Rng) -> [u8; 10] {
    const INT: u64 = 1 << 63;
    let sign = (rng.below(2) as u16) << 15;
    let (exp, mant): (u16, u64) = match rng.below(24) {
        0 => (0, 0),
        1 => (0x7fff, INT),
        2 => (0x7fff, INT | 1 << 62 | ((rng.next() >> 2) * rng.below(2))), // QNaN
        3 => (0x7fff, INT | (rng.next() >> 2).max(1)),                     // SNaN
        4 => (0, rng.next() >> 1),                                         // denormal
        5 => (0, INT | rng.next()),                                        // pseudo-denormal
        6 => (rng.below(0x7ffe) as u16 + 1, rng.next() >> 1),              // unnormal
        7 => (0x7fff, rng.next() >> 1),                                    // pseudo-NaN / -inf
        8 => (1, INT),
        9 => (0x7ffe, u64::MAX),
        10 => (0x3fff, INT),
        11 => {
            // Near an integer or a .5 boundary.
            let sh = rng.below(60);
            let n = (rng.below(1 << sh) as f64) + *rng.pick(&[0.0f64, 0.5, 0.25]);
            let (e, m) = f64_to_f80(n.to_bits());
            (e, (m as i64 + rng.below(3) as i64 - 1) as u64)
        }
        12 => {
            // FIST/FISTP/FBSTP overflow boundaries.
            let e = *rng.pick(&[15u16, 16, 31, 32, 59, 63, 64]);
            let m = INT.wrapping_add(rng.below(3)).wrapping_sub(1);
            if m < INT {
                (0x3fff + e - 1, u64::MAX)
            } else {
                (0x3fff + e, m)
            }
        }
        13 | 14 => {
            // A double widened (exact).
            let (e, m) = f64_to_f80(f64_special(rng));
            (e, m)
        }
        15 => {
            // Few significant bits (exact arithmetic).
            (
                rng.below(130) as u16 + 0x3fff - 65,
                INT | (rng.next() & 0xff00_0000_0000_0000),
            )
        }
        16 => (rng.below(0x7ffe) as u16 + 1, INT | rng.next()),
        17 => ((rng.next() & 0x7fff) as u16, rng.next()),
        18 => (rng.below(16) as u16, INT | rng.next()), // tiny normals
        19 => (0x7ffe - rng.below(16) as u16, INT | rng.next()),
        _ => (rng.below(160) as u16 + 0x3fff - 80, INT | rng.next()),
    };
    let mut b = [0u8; 10];
    b[..8].copy_from_slice(&mant.to_le_bytes());
    b[8..].copy_from_slice(&(sign | (exp & 0x7fff)).to_le_bytes());
    b
}

/// Exact f64 → (f80 exponent, significand) for finite non-denormal, zero,
/// infinite and NaN values (denormals become unnormal-free denormals too).
fn f64_to_f80(bits: u64) -> (u16, u64) {
    let e = ((bits >> 52) & 0x7ff) as u16;
    let f = bits & ((1 << 52) - 1);
    match e {
        0 if f == 0 => (0, 0),
        0 => {
            // Denormal double: normalize.
            let lz = f.leading_zeros() as u16; // ≥ 12
            let m = f << lz;
            (0x3fff - 1022 - (lz - 11), m)
        }
        0x7ff => (0x7fff, 1 << 63 | f << 11),
        _ => (e - 1023 + 0x3fff, 1 << 63 | f << 11),
    }
}

/// An integer lane of `bits` bits biased towards boundaries.
pub fn int_lane(rng: &mut Rng, bits: u32) -> u64 {
    let m = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let v = match rng.below(10) {
        0 => 0,
        1 => u64::MAX,
        2 => 1 << (bits - 1),
        3 => (1 << (bits - 1)) - 1,
        4 => 1,
        5 => rng.below(17),
        6 => (rng.below(17) as i64).wrapping_neg() as u64,
        7 => (1u64 << rng.below(bits as u64))
            .wrapping_add(rng.below(3))
            .wrapping_sub(1),
        _ => rng.next(),
    };
    v & m
}

/// A 128-bit value: lanes of one kind (f32, f64, integers of 8–64 bits) or random bits.
pub fn xmm_value(rng: &mut Rng) -> u128 {
    let mut v = 0u128;
    match rng.below(8) {
        0 | 1 => {
            for i in 0..4 {
                v |= (f32_special(rng) as u128) << (32 * i);
            }
        }
        2 | 3 => {
            for i in 0..2 {
                v |= (f64_special(rng) as u128) << (64 * i);
            }
        }
        4 | 5 => {
            let bits = *rng.pick(&[8u32, 16, 32, 64]);
            for i in 0..128 / bits {
                v |= (int_lane(rng, bits) as u128) << (bits * i);
            }
        }
        6 => {
            // Halves of different kinds (scalar forms use the low one).
            let lo = if rng.chance(50) {
                f64_special(rng)
            } else {
                f32_special(rng) as u64 | (f32_special(rng) as u64) << 32
            };
            v = lo as u128 | (rng.next() as u128) << 64;
        }
        _ => v = rng.next() as u128 | (rng.next() as u128) << 64,
    }
    v
}

/// Fills `data` with a mix of random bytes and special values, in 16-byte blocks.
pub fn fill_data(rng: &mut Rng, data: &mut [u8]) {
    for c in data.chunks_mut(16) {
        let mut b = [0u8; 16];
        match rng.below(10) {
            0..=3 => b = (rng.next() as u128 | (rng.next() as u128) << 64).to_le_bytes(),
            4..=6 => b = xmm_value(rng).to_le_bytes(),
            7 | 8 => {
                b[..10].copy_from_slice(&f80_special(rng));
                b[10..].copy_from_slice(&rng.next().to_le_bytes()[..6]);
            }
            _ => {
                // Packed BCD (FBLD): 18 digits and a sign byte, sometimes invalid.
                for x in b.iter_mut().take(9) {
                    let lo = rng.below(10) as u8;
                    let hi = rng.below(10) as u8;
                    *x = lo | hi << 4;
                    if rng.chance(3) {
                        *x = rng.next() as u8;
                    }
                }
                b[9] = if rng.chance(50) { 0x80 } else { 0 };
                if rng.chance(10) {
                    b[9] |= rng.next() as u8 & 0x7f;
                }
                b[10..].copy_from_slice(&rng.next().to_le_bytes()[..6]);
            }
        }
        let n = c.len();
        c.copy_from_slice(&b[..n]);
    }
}

/// A 10-byte x87 encoding as hex (sign/exponent first) and its approximate value.
pub fn f80_text(b: &[u8; 10]) -> String {
    let se = u16::from_le_bytes([b[8], b[9]]);
    let mut m = [0u8; 8];
    m.copy_from_slice(&b[..8]);
    let mant = u64::from_le_bytes(m);
    format!("{se:04x}_{mant:016x} ({})", f80_value(se, mant))
}

fn f80_value(se: u16, mant: u64) -> String {
    let sign = if se & 0x8000 != 0 { "-" } else { "+" };
    let exp = (se & 0x7fff) as i32;
    let int = mant >> 63 != 0;
    if exp == 0x7fff {
        return match (int, mant << 1) {
            (true, 0) => format!("{sign}inf"),
            (true, f) if f >> 63 != 0 => format!("{sign}QNaN"),
            (true, _) => format!("{sign}SNaN"),
            (false, 0) => format!("{sign}pseudo-inf"),
            (false, _) => format!("{sign}pseudo-NaN"),
        };
    }
    if exp == 0 && mant == 0 {
        return format!("{sign}0");
    }
    let kind = if exp == 0 {
        if int {
            " pseudo-denormal"
        } else {
            " denormal"
        }
    } else if !int {
        " unnormal"
    } else {
        ""
    };
    let e = if exp == 0 { 1 } else { exp } - 16383 - 63;
    // mant * 2^e, shown through f64 (approximate; enough to read).
    let v = (mant as f64) * 2f64.powi(e.clamp(-1100, 1100));
    let v = if !(-1100..=1100).contains(&e) {
        format!("~2^{}", e + 63)
    } else {
        format!("{v:e}")
    };
    format!("{sign}{}{kind}", v.trim_start_matches('-'))
}

fn f32s(v: u128) -> String {
    let l: Vec<String> = (0..4)
        .map(|i| format!("{:e}", f32::from_bits((v >> (32 * i)) as u32)))
        .collect();
    l.join(", ")
}

fn f64s(v: u128) -> String {
    let l: Vec<String> = (0..2)
        .map(|i| format!("{:e}", f64::from_bits((v >> (64 * i)) as u64)))
        .collect();
    l.join(", ")
}

/// Names of the MXCSR flag and control bits set in `m`.
pub fn mxcsr_text(m: u32) -> String {
    let mut s = format!("{m:#06x} [");
    let flags = ["IE", "DE", "ZE", "OE", "UE", "PE"];
    for (i, n) in flags.iter().enumerate() {
        if m & (1 << i) != 0 {
            s += n;
            s += " ";
        }
    }
    if m & 0x40 != 0 {
        s += "DAZ ";
    }
    let masks = (m >> 7) & 0x3f;
    if masks != 0x3f {
        s += &format!("unmasked:{:#x} ", !masks & 0x3f);
    }
    s += ["RN", "RD", "RU", "RZ"][((m >> 13) & 3) as usize];
    if m & 0x8000 != 0 {
        s += " FTZ";
    }
    s + "]"
}

/// FSW decoded.
pub fn fsw_text(w: u16) -> String {
    let mut s = format!("{w:#06x} [TOP={}", (w >> 11) & 7);
    for (b, n) in [
        (0x4000u16, "C3"),
        (0x400, "C2"),
        (0x200, "C1"),
        (0x100, "C0"),
        (0x8000, "B"),
        (0x80, "ES"),
        (0x40, "SF"),
        (0x20, "PE"),
        (0x10, "UE"),
        (0x8, "OE"),
        (0x4, "ZE"),
        (0x2, "DE"),
        (0x1, "IE"),
    ] {
        if w & b != 0 {
            s += " ";
            s += n;
        }
    }
    s + "]"
}

/// FCW decoded.
pub fn fcw_text(w: u16) -> String {
    let pc = ["PC=24", "PC=res", "PC=53", "PC=64"][((w >> 8) & 3) as usize];
    let rc = ["RN", "RD", "RU", "RZ"][((w >> 10) & 3) as usize];
    let unm = !w & 0x3f;
    format!(
        "{w:#06x} [{pc} {rc}{}]",
        if unm != 0 {
            format!(" unmasked:{unm:#x}")
        } else {
            String::new()
        }
    )
}

/// The x87 stack as lines (`ST(i) = R(p) value`), non-empty registers only.
pub fn stack_lines(s: &FpState) -> Vec<String> {
    let mut v = Vec::new();
    for i in 0..8 {
        let p = (s.top() + i) & 7;
        if s.ftw & (1 << p) != 0 {
            v.push(format!("st{i}=R{p} {}", f80_text(&s.regs[p])));
        }
    }
    v
}

/// One XMM value with its f32 and f64 readings.
pub fn xmm_text(v: u128) -> String {
    format!("{v:#034x} (f32: {}; f64: {})", f32s(v), f64s(v))
}

/// Differences between the host's (`h`) and the interpreter's (`e`) final
/// states, as printable lines.
pub fn compare(h: &FpState, e: &FpState) -> Vec<String> {
    let mut d = Vec::new();
    if h.fcw != e.fcw {
        d.push(format!(
            "fcw: host {} interpreter {}",
            fcw_text(h.fcw),
            fcw_text(e.fcw)
        ));
    }
    if h.fsw != e.fsw {
        d.push(format!(
            "fsw: host {} interpreter {} (xor {:#x})",
            fsw_text(h.fsw),
            fsw_text(e.fsw),
            h.fsw ^ e.fsw
        ));
    }
    if h.ftw != e.ftw {
        d.push(format!(
            "abridged tag: host {:08b} interpreter {:08b} (bit p = R(p) non-empty)",
            h.ftw, e.ftw
        ));
    }
    for p in 0..8 {
        let used = (h.ftw | e.ftw) & (1 << p) != 0;
        if used && h.regs[p] != e.regs[p] {
            let st = |s: &FpState| format!("st{}", (p + 8 - s.top()) & 7);
            d.push(format!(
                "R{p} ({} host, {} interpreter; mm{p}): host {} interpreter {}",
                st(h),
                st(e),
                f80_text(&h.regs[p]),
                f80_text(&e.regs[p])
            ));
        }
    }
    if h.mxcsr != e.mxcsr {
        d.push(format!(
            "mxcsr: host {} interpreter {}",
            mxcsr_text(h.mxcsr),
            mxcsr_text(e.mxcsr)
        ));
    }
    for i in 0..16 {
        if h.xmm[i] != e.xmm[i] {
            d.push(format!(
                "xmm{i}: host {} interpreter {} (xor {:#x})",
                xmm_text(h.xmm[i]),
                xmm_text(e.xmm[i]),
                h.xmm[i] ^ e.xmm[i]
            ));
        }
    }
    d
}
