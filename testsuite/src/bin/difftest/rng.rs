//! A tiny deterministic RNG (SplitMix64) with biased value helpers.

/// SplitMix64.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x6a09_e667_f3bc_c908)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `p` percent.
    pub fn chance(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    /// Picks an element.
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }

    /// A value biased towards interesting ones: small, boundary, sign bits.
    pub fn value(&mut self) -> u64 {
        match self.below(10) {
            0..=2 => self.next(),
            3 => self.below(17),
            4 => (self.below(17) as i64).wrapping_neg() as u64,
            5 => {
                let b = self.below(64);
                let v = 1u64 << b;
                match self.below(3) {
                    0 => v,
                    1 => v.wrapping_sub(1),
                    _ => v.wrapping_neg(),
                }
            }
            6 => {
                const B: [u64; 12] = [
                    0x7f,
                    0x80,
                    0xff,
                    0x7fff,
                    0x8000,
                    0xffff,
                    0x7fff_ffff,
                    0x8000_0000,
                    0xffff_ffff,
                    0x7fff_ffff_ffff_ffff,
                    0x8000_0000_0000_0000,
                    u64::MAX,
                ];
                let v = *self.pick(&B);
                v.wrapping_add(self.below(3)).wrapping_sub(1)
            }
            7 => self.next() & self.next(),
            8 => self.next() | self.next(),
            _ => self.next() & 0xff,
        }
    }
}
