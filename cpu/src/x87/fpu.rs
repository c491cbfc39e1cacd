//! The architectural x87 state.

use super::F80;
use serde::{Deserialize, Serialize};

/// x87 register file and control/status state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fpu {
    /// Control word (FCW).
    pub cw: u16,
    /// Status word (FSW) including TOP in bits 11..13.
    pub sw: u16,
    /// Full tag word, 2 bits per physical register (FNSTENV layout).
    pub tw: u16,
    /// Physical registers R0..R7 (ST(i) is R[(TOP + i) & 7]).
    pub regs: [F80; 8],
    /// Last instruction pointer (FIP) and its selector (FCS).
    pub fip: u64,
    pub fcs: u16,
    /// Last data pointer (FDP) and its selector (FDS).
    pub fdp: u64,
    pub fds: u16,
    /// Last opcode (11 bits).
    pub fop: u16,
}

impl Default for Fpu {
    fn default() -> Self {
        Fpu::new()
    }
}

impl Fpu {
    /// The state after FNINIT.
    pub fn new() -> Fpu {
        Fpu {
            cw: 0x037f,
            sw: 0,
            tw: 0xffff,
            regs: [F80::ZERO; 8],
            fip: 0,
            fcs: 0,
            fdp: 0,
            fds: 0,
            fop: 0,
        }
    }

    /// FNINIT (registers keep their contents, all tags become empty).
    pub fn init(&mut self) {
        let regs = self.regs;
        *self = Fpu { regs, ..Fpu::new() };
    }

    pub fn top(&self) -> usize {
        ((self.sw >> 11) & 7) as usize
    }

    pub fn set_top(&mut self, top: usize) {
        self.sw = (self.sw & !0x3800) | (((top & 7) as u16) << 11);
    }

    /// Physical index of ST(i).
    pub fn phys(&self, i: usize) -> usize {
        (self.top() + i) & 7
    }

    pub fn st(&self, i: usize) -> F80 {
        self.regs[self.phys(i)]
    }

    pub fn is_empty(&self, i: usize) -> bool {
        let p = self.phys(i);
        (self.tw >> (2 * p)) & 3 == 3
    }

    /// Writes ST(i) and recomputes its tag.
    pub fn set_st(&mut self, i: usize, v: F80) {
        let p = self.phys(i);
        self.regs[p] = v;
        self.tw = (self.tw & !(3 << (2 * p))) | ((v.tag() as u16) << (2 * p));
    }

    /// Marks ST(i) empty.
    pub fn free(&mut self, i: usize) {
        let p = self.phys(i);
        self.tw |= 3 << (2 * p);
    }

    /// The abridged (FXSAVE) tag byte: bit i set when R(i) is not empty.
    pub fn abridged_tag(&self) -> u8 {
        (0..8).fold(0u8, |acc, p| {
            acc | ((((self.tw >> (2 * p)) & 3 != 3) as u8) << p)
        })
    }

    /// Rebuilds the full tag word from an abridged tag byte (FXRSTOR),
    /// classifying the register contents.
    pub fn set_abridged_tag(&mut self, t: u8) {
        let mut tw = 0u16;
        for p in 0..8 {
            let tag = if t & (1 << p) == 0 {
                3
            } else {
                self.regs[p].tag() as u16
            };
            tw |= tag << (2 * p);
        }
        self.tw = tw;
    }

    /// Status word with the condition and exception bits of `exc` merged
    /// in: exception flags are sticky, the condition codes in `cc_mask`
    /// are replaced.
    pub fn merge_status(&mut self, exc: super::Exc, cc_mask: u16) {
        self.sw = (self.sw & !cc_mask) | (exc.0 & (cc_mask | super::Exc::EXC_MASK));
        if self.sw & !self.cw & super::Exc::EXC_MASK != 0 {
            self.sw |= 0x8080; // ES and B
        }
    }
}

/// Layouts of the FNSTENV/FNSAVE and FXSAVE memory images.
impl Fpu {
    /// Full tag word as FNSTENV stores it: non-empty registers are
    /// re-classified from their contents.
    pub fn stored_tag_word(&self) -> u16 {
        let mut tw = 0u16;
        for p in 0..8 {
            let tag = if (self.tw >> (2 * p)) & 3 == 3 {
                3
            } else {
                self.regs[p].tag() as u16
            };
            tw |= tag << (2 * p);
        }
        tw
    }

    /// The protected-mode FNSTENV image: 28 bytes with a 32-bit operand
    /// size, 14 bytes with a 16-bit one. (Real/virtual-8086 formats, which
    /// store linear pointers with the opcode, are not covered.)
    pub fn store_env(&self, op32: bool) -> Vec<u8> {
        let mut v = Vec::with_capacity(28);
        let tw = self.stored_tag_word();
        if op32 {
            for w in [self.cw, self.sw, tw] {
                v.extend_from_slice(&(w as u32 | 0xffff_0000).to_le_bytes());
            }
            v.extend_from_slice(&(self.fip as u32).to_le_bytes());
            v.extend_from_slice(&self.fcs.to_le_bytes());
            v.extend_from_slice(&(self.fop & 0x7ff).to_le_bytes());
            v.extend_from_slice(&(self.fdp as u32).to_le_bytes());
            v.extend_from_slice(&(self.fds as u32 | 0xffff_0000).to_le_bytes());
        } else {
            for w in [
                self.cw,
                self.sw,
                tw,
                self.fip as u16,
                self.fcs,
                self.fdp as u16,
                self.fds,
            ] {
                v.extend_from_slice(&w.to_le_bytes());
            }
        }
        v
    }

    /// Loads an image written by [`Fpu::store_env`] (FLDENV); the tag word
    /// is taken as stored. Returns the number of bytes consumed.
    pub fn load_env(&mut self, img: &[u8], op32: bool) -> usize {
        let w16 = |o: usize| u16::from_le_bytes([img[o], img[o + 1]]);
        let w32 = |o: usize| u32::from_le_bytes([img[o], img[o + 1], img[o + 2], img[o + 3]]);
        if op32 {
            self.cw = w16(0);
            self.sw = w16(4);
            self.tw = w16(8);
            self.fip = w32(12) as u64;
            self.fcs = w16(16);
            self.fop = w16(18) & 0x7ff;
            self.fdp = w32(20) as u64;
            self.fds = w16(24);
            28
        } else {
            self.cw = w16(0);
            self.sw = w16(2);
            self.tw = w16(4);
            self.fip = w16(6) as u64;
            self.fcs = w16(8);
            self.fdp = w16(10) as u64;
            self.fds = w16(12);
            14
        }
    }

    /// The FNSAVE image: the environment followed by ST(0)..ST(7) as 10
    /// bytes each (108 or 94 bytes). FNSAVE then re-initializes the FPU;
    /// that is left to the caller.
    pub fn save_image(&self, op32: bool) -> Vec<u8> {
        let mut v = self.store_env(op32);
        for i in 0..8 {
            v.extend_from_slice(&self.st(i).to_bytes());
        }
        v
    }

    /// FRSTOR from an image written by [`Fpu::save_image`].
    pub fn restore_image(&mut self, img: &[u8], op32: bool) {
        let mut o = self.load_env(img, op32);
        for i in 0..8 {
            let mut b = [0u8; 10];
            b.copy_from_slice(&img[o..o + 10]);
            let p = self.phys(i);
            self.regs[p] = F80::from_bytes(b);
            o += 10;
        }
    }

    /// The x87 part of the FXSAVE legacy region (bytes 0..160; MXCSR and
    /// MXCSR_MASK at 24..32 are left untouched). `rex_w` selects the
    /// 64-bit FIP/FDP format (FXSAVE64).
    pub fn fxsave_x87(&self, out: &mut [u8], rex_w: bool) {
        out[0..2].copy_from_slice(&self.cw.to_le_bytes());
        out[2..4].copy_from_slice(&self.sw.to_le_bytes());
        out[4] = self.abridged_tag();
        out[5] = 0;
        out[6..8].copy_from_slice(&(self.fop & 0x7ff).to_le_bytes());
        if rex_w {
            out[8..16].copy_from_slice(&self.fip.to_le_bytes());
            out[16..24].copy_from_slice(&self.fdp.to_le_bytes());
        } else {
            out[8..12].copy_from_slice(&(self.fip as u32).to_le_bytes());
            out[12..14].copy_from_slice(&self.fcs.to_le_bytes());
            out[14..16].fill(0);
            out[16..20].copy_from_slice(&(self.fdp as u32).to_le_bytes());
            out[20..22].copy_from_slice(&self.fds.to_le_bytes());
            out[22..24].fill(0);
        }
        for i in 0..8 {
            let o = 32 + 16 * i;
            out[o..o + 10].copy_from_slice(&self.st(i).to_bytes());
            out[o + 10..o + 16].fill(0);
        }
    }

    /// FXRSTOR of the x87 part of the legacy region.
    pub fn fxrstor_x87(&mut self, img: &[u8], rex_w: bool) {
        let w16 = |o: usize| u16::from_le_bytes([img[o], img[o + 1]]);
        let mut q = [0u8; 8];
        self.cw = w16(0);
        self.sw = w16(2);
        self.fop = w16(6) & 0x7ff;
        if rex_w {
            q.copy_from_slice(&img[8..16]);
            self.fip = u64::from_le_bytes(q);
            q.copy_from_slice(&img[16..24]);
            self.fdp = u64::from_le_bytes(q);
        } else {
            self.fip = u32::from_le_bytes([img[8], img[9], img[10], img[11]]) as u64;
            self.fcs = w16(12);
            self.fdp = u32::from_le_bytes([img[16], img[17], img[18], img[19]]) as u64;
            self.fds = w16(20);
        }
        for i in 0..8 {
            let o = 32 + 16 * i;
            let mut b = [0u8; 10];
            b.copy_from_slice(&img[o..o + 10]);
            let p = self.phys(i);
            self.regs[p] = F80::from_bytes(b);
        }
        self.set_abridged_tag(img[4]);
    }
}
