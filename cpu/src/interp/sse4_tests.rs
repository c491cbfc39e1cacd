//! Tests of the SSE3/SSSE3/SSE4 group: claims, exceptions, operand forms
//! in every mode, and differential tests against the host CPU (which must
//! have SSE3, SSSE3, SSE4.1 and SSE4.2: the tests fail, never skip,
//! without them). The differential tests run each instruction through the
//! interpreter (decode, handler, register file) and natively on the same
//! random inputs. `SSE4_CASES` scales the number of random cases,
//! `SSE4_SEED` picks another stream.

use iced_x86::code_asm::*;

use super::{fp, ops};
use crate::block::CodeCache;
use crate::fault::vector;
use crate::flags;
use crate::interp::{Ctx, RunExit};
use crate::simd::{lane, set_lane, Fmt, Mxcsr, F32, F64};
use crate::state::{cr, reg, Cpu};
use crate::testutil::{
    cpu_in, fault_of, install_fault_handlers, install_tables, run_asm, TestBus, TestMode, CODE,
    CODE_REAL, DATA,
};

// ---------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------

/// A machine that keeps its code cache between single instructions, so a
/// differential test can run thousands of cases cheaply.
struct Emu {
    cpu: Cpu,
    bus: TestBus,
    cache: CodeCache,
    mode: TestMode,
    /// Next free code offset (IP).
    next: u64,
}

/// A loaded instruction: its IP and the IP after it.
#[derive(Clone, Copy)]
struct At {
    ip: u64,
    next: u64,
}

impl Emu {
    fn new(mode: TestMode) -> Emu {
        let mut bus = TestBus::new();
        install_tables(&mut bus);
        let mut cpu = cpu_in(mode);
        cpu.cr4 |= cr::CR4_OSFXSR | cr::CR4_OSXMMEXCPT;
        install_fault_handlers(&cpu, &mut bus);
        Emu {
            cpu,
            bus,
            cache: CodeCache::new(),
            mode,
            next: if mode == TestMode::Real { 0 } else { CODE },
        }
    }

    fn bits(&self) -> u32 {
        match self.mode {
            TestMode::Real => 16,
            TestMode::Protected32 => 32,
            TestMode::Long64 => 64,
        }
    }

    fn place(&mut self, bytes: &[u8]) -> At {
        let ip = self.next;
        let lin = if self.mode == TestMode::Real {
            CODE_REAL + ip
        } else {
            ip
        };
        self.bus.write(lin, bytes);
        self.next = (ip + bytes.len() as u64 + 15) & !15;
        At {
            ip,
            next: ip + bytes.len() as u64,
        }
    }

    /// Assembles one instruction at the next free code address.
    fn load(&mut self, build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> At {
        let mut a = CodeAssembler::new(self.bits()).expect("bitness");
        build(&mut a).expect("assemble");
        let bytes = a.assemble(self.next).expect("assemble");
        self.place(&bytes)
    }

    /// Raw instruction bytes at the next free code address.
    fn load_bytes(&mut self, bytes: &[u8]) -> At {
        self.place(bytes)
    }

    /// Executes the instruction at `at`, which must not fault.
    fn step(&mut self, at: At) {
        self.cpu.rip = at.ip;
        let limit = self.cpu.icount + 1;
        let exit = Ctx::new(&mut self.cpu, &mut self.bus, &mut self.cache).run(limit);
        assert_eq!(exit, RunExit::Limit);
        assert_eq!(
            self.cpu.rip,
            at.next,
            "instruction at {:#x} faulted: {:?}",
            at.ip,
            self.fault()
        );
    }

    /// Executes the instruction at `at`; returns the exception it raised.
    fn fault_at(&mut self, at: At) -> Option<(u8, Option<u64>)> {
        self.cpu.rip = at.ip;
        self.cpu.halted = false;
        // One instruction; a fault adds its delivery, the stub's MOV and HLT.
        let limit = self.cpu.icount + 1;
        let exit = Ctx::new(&mut self.cpu, &mut self.bus, &mut self.cache).run(limit);
        if self.cpu.rip == at.next {
            return None;
        }
        assert!(matches!(exit, RunExit::Limit | RunExit::Exit), "{exit:?}");
        for _ in 0..3 {
            let exit = Ctx::new(&mut self.cpu, &mut self.bus, &mut self.cache).run(limit + 2);
            if exit == RunExit::Halted {
                break;
            }
            assert_eq!(exit, RunExit::Exit);
        }
        assert!(self.cpu.halted);
        self.cpu.halted = false;
        self.fault()
    }

    fn fault(&self) -> Option<(u8, Option<u64>)> {
        fault_of(&self.cpu, &self.bus).map(|(v, e, _)| (v, e))
    }
}

fn cases(n: usize) -> usize {
    let scale: f64 = std::env::var("SSE4_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * scale) as usize).max(1)
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let extra: u64 = std::env::var("SSE4_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Rng(
            (seed ^ extra.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xd134_2543_de82_ef95)
                | 1,
        )
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A vector biased towards lane boundary values (0, ±1, min, max).
    fn vec(&mut self) -> u128 {
        let mut v = (self.next() as u128) << 64 | self.next() as u128;
        if self.below(3) == 0 {
            let bits = [8u32, 16, 32, 64][self.below(4) as usize];
            for i in 0..128 / bits {
                if self.next() & 1 == 0 {
                    let top = 1u64 << (bits - 1);
                    let all = u64::MAX >> (64 - bits);
                    let x = [0, 1, all, top, top - 1, top + 1, all - 1][self.below(7) as usize];
                    v = set_lane(v, bits, i, x);
                }
            }
        }
        v
    }

    /// A float of format `f` biased towards special and boundary cases,
    /// small integers, halves and values near the overflow/underflow
    /// thresholds.
    fn fval(&mut self, f: Fmt) -> u64 {
        let emax = (1u64 << f.ebits) - 1;
        let bias = emax / 2;
        let sign = (self.next() & 1) << (f.ebits + f.mbits);
        let mmask = (1u64 << f.mbits) - 1;
        let mut m = self.next() & mmask;
        match self.below(4) {
            0 => m &= !((1u64 << self.below(f.mbits as u64 + 1)) - 1),
            1 => m |= (1u64 << self.below(f.mbits as u64 + 1)) - 1,
            _ => {}
        }
        let e = match self.below(16) {
            0 => return sign,
            1 => {
                let quiet = 1u64 << (f.mbits - 1);
                let nan = [0, 1, mmask, quiet, quiet + 1][self.below(5) as usize];
                return sign | nan | emax << f.mbits;
            }
            2 => 0,
            3 => self.below(4),
            4 => emax - 1 - self.below(3),
            5 => self.below(emax - 1) + 1,
            6 => (bias / 2).wrapping_add(self.below(8)).wrapping_sub(4),
            7 => bias + f.mbits as u64 - 2 + self.below(4),
            8 | 9 => bias - 2 + self.below(f.mbits as u64 + 4),
            10 => {
                // k + 1/2 exactly
                let k = self.below(f.mbits as u64 - 1);
                let e = bias + k;
                let sh = f.mbits as u64 - k - 1;
                m = (m >> (sh + 1) << (sh + 1)) | 1 << sh;
                e
            }
            _ => bias - 6 + self.below(12),
        };
        sign | (e & emax) << f.mbits | m
    }

    fn fvec(&mut self, f: Fmt) -> u128 {
        let w = f.ebits + f.mbits + 1;
        let mut v = 0;
        for i in 0..128 / w {
            v = set_lane(v, w, i, self.fval(f));
        }
        v
    }

    /// A string operand: elements from a small alphabet with zeros, so
    /// that matches, ranges and terminators are common.
    fn strvec(&mut self, words: bool) -> u128 {
        let bits = if words { 16 } else { 8 };
        let alphabet: [u64; 8] = [0, 1, 2, 0x41, 0x7f, 0x80, 0xffff, 0x8000];
        let mut v = self.vec();
        let density = self.below(4);
        for i in 0..128 / bits {
            if self.below(4) <= density {
                v = set_lane(v, bits, i, alphabet[self.below(8) as usize]);
            }
        }
        // Zeros are common terminators; make them rarer half of the time.
        if self.next() & 1 == 0 {
            for i in 0..128 / bits {
                if lane(v, bits, i) == 0 {
                    v = set_lane(v, bits, i, 0x41);
                }
            }
        }
        v
    }
}

/// The 16 MXCSR control settings: RC × FTZ × DAZ, all exceptions masked.
fn modes() -> impl Iterator<Item = u32> {
    (0..16u32).map(|i| 0x1f80 | (i & 3) << 13 | (i >> 2 & 1) << 15 | (i >> 3 & 1) << 6)
}

fn osfxsr(cpu: &mut Cpu, _: &mut TestBus) {
    cpu.cr4 |= cr::CR4_OSFXSR | cr::CR4_OSXMMEXCPT;
}

// ---------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------

/// Every legacy-encoded instruction of SSE3/SSSE3/SSE4.1/SSE4.2 (but
/// FISTTP, an x87 instruction) decoded from the 0F, 0F 38 and 0F 3A maps
/// is claimed, and nothing else: not the VEX forms, not MONITOR/MWAIT.
#[test]
fn claims_exactly_sse3_to_sse42() {
    use iced_x86::{CpuidFeature, Decoder, DecoderOptions, EncodingKind, Mnemonic};
    let mine = |insn: &iced_x86::Instruction| {
        insn.encoding() == EncodingKind::Legacy
            && insn.mnemonic() != Mnemonic::Fisttp
            && insn.cpuid_features().iter().any(|f| {
                matches!(
                    f,
                    CpuidFeature::SSE3
                        | CpuidFeature::SSSE3
                        | CpuidFeature::SSE4_1
                        | CpuidFeature::SSE4_2
                )
            })
    };
    let mut claimed = std::collections::BTreeSet::new();
    for bits in [16u32, 32, 64] {
        let prefixes: &[&[u8]] = &[&[], &[0x66], &[0xf2], &[0xf3], &[0x66, 0xf2], &[0x48]];
        let escapes: &[&[u8]] = &[&[0x0f], &[0x0f, 0x38], &[0x0f, 0x3a], &[0xdf], &[0xdd]];
        for p in prefixes {
            if bits != 64 && p.contains(&0x48) {
                continue;
            }
            for w in [false, true] {
                for e in escapes {
                    for op in 0..=255u8 {
                        for modrm in [0x01u8, 0xc1, 0x0c, 0xd8, 0xc8] {
                            let mut bytes = p.to_vec();
                            if w && bits == 64 {
                                bytes.push(0x48);
                            }
                            bytes.extend_from_slice(e);
                            bytes.extend_from_slice(&[op, modrm, 0x24, 0, 0, 0, 0, 0, 0]);
                            let insn = Decoder::new(bits, &bytes, DecoderOptions::NONE).decode();
                            if insn.is_invalid() {
                                continue;
                            }
                            let claims = super::handler(&insn).is_some();
                            assert_eq!(claims, mine(&insn), "{:?} {bytes:02x?}", insn.code());
                            if claims {
                                claimed.insert(format!("{:?}", insn.code()));
                            }
                        }
                    }
                }
            }
        }
    }
    // VEX forms are not claimed.
    for bytes in [
        &[0xc4, 0xe2, 0x71, 0x00, 0xc2][..],   // VPSHUFB
        &[0xc4, 0xe3, 0x79, 0x63, 0xc1, 0x0c], // VPCMPISTRI
        &[0xc5, 0xfb, 0x7c, 0xc1],             // VHADDPS
    ] {
        let insn = Decoder::new(64, bytes, DecoderOptions::NONE).decode();
        assert!(!insn.is_invalid());
        assert!(super::handler(&insn).is_none(), "{:?}", insn.code());
    }
    // 107 legacy codes (110 with the three FISTTP forms).
    assert_eq!(claimed.len(), 107, "{claimed:?}");
}

// ---------------------------------------------------------------------
// Exceptions
// ---------------------------------------------------------------------

#[test]
fn device_checks() {
    let mut e = Emu::new(TestMode::Protected32);
    let pshufb_x = e.load(|a| a.pshufb(xmm1, xmm2));
    let pshufb_m = e.load(|a| a.pshufb(mm1, mm2));
    let crc = e.load(|a| a.crc32(eax, ebx));
    let ptest = e.load(|a| a.ptest(xmm1, xmm2));
    let (em, ts) = (cr::CR0_EM, cr::CR0_TS);
    let base_cr0 = e.cpu.cr0;
    let base_cr4 = e.cpu.cr4;
    let no_fxsr = base_cr4 & !cr::CR4_OSFXSR;
    for (c0, c4, x, m, c) in [
        (0, base_cr4, None, None, None),
        (0, no_fxsr, Some(vector::UD), None, None),
        (ts, base_cr4, Some(vector::NM), Some(vector::NM), None),
        (em, base_cr4, Some(vector::UD), Some(vector::UD), None),
        (em | ts, no_fxsr, Some(vector::UD), Some(vector::UD), None),
    ] {
        e.cpu.cr0 = base_cr0 | c0;
        e.cpu.cr4 = c4;
        let v = |r: Option<(u8, Option<u64>)>| r.map(|f| f.0);
        assert_eq!(v(e.fault_at(pshufb_x)), x, "xmm {c0:#x} {c4:#x}");
        assert_eq!(v(e.fault_at(ptest)), x, "ptest {c0:#x} {c4:#x}");
        assert_eq!(v(e.fault_at(pshufb_m)), m, "mm {c0:#x} {c4:#x}");
        assert_eq!(v(e.fault_at(crc)), c, "crc32 {c0:#x} {c4:#x}");
    }
}

#[test]
fn alignment_of_memory_operands() {
    let mut e = Emu::new(TestMode::Long64);
    e.cpu.gpr[reg::RBX] = DATA + 8;
    let faults = [
        e.load(|a| a.pshufb(xmm1, xmmword_ptr(rbx))),
        e.load(|a| a.ptest(xmm1, xmmword_ptr(rbx))),
        e.load(|a| a.movntdqa(xmm1, xmmword_ptr(rbx))),
        e.load(|a| a.movshdup(xmm1, xmmword_ptr(rbx))),
        e.load(|a| a.dpps(xmm1, xmmword_ptr(rbx), 0xff)),
        e.load(|a| a.roundps(xmm1, xmmword_ptr(rbx), 0)),
        e.load(|a| a.pblendvb(xmm1, xmmword_ptr(rbx))),
        e.load(|a| a.phminposuw(xmm1, xmmword_ptr(rbx))),
        e.load(|a| a.haddps(xmm1, xmmword_ptr(rbx))),
        e.load(|a| a.pabsb(xmm1, xmmword_ptr(rbx))),
        e.load(|a| a.palignr(xmm1, xmmword_ptr(rbx), 3)),
    ];
    let fine = [
        e.load(|a| a.lddqu(xmm1, xmmword_ptr(rbx))),
        e.load(|a| a.pcmpistri(xmm1, xmmword_ptr(rbx), 0)),
        e.load(|a| a.pcmpestrm(xmm1, xmmword_ptr(rbx), 0)),
        e.load(|a| a.movddup(xmm1, qword_ptr(rbx + 1))),
        e.load(|a| a.pmovzxbw(xmm1, qword_ptr(rbx + 1))),
        e.load(|a| a.roundss(xmm1, dword_ptr(rbx + 1), 0)),
        e.load(|a| a.insertps(xmm1, dword_ptr(rbx + 1), 0)),
        e.load(|a| a.pabsb(mm1, qword_ptr(rbx + 1))),
        e.load(|a| a.crc32(rax, qword_ptr(rbx + 1))),
        e.load(|a| a.pextrq(qword_ptr(rbx + 1), xmm1, 1)),
    ];
    for at in faults {
        assert_eq!(e.fault_at(at), Some((vector::GP, Some(0))));
    }
    for at in fine {
        assert_eq!(e.fault_at(at), None);
    }
    // Aligned, the faulting ones run.
    e.cpu.gpr[reg::RBX] = DATA;
    for at in faults {
        assert_eq!(e.fault_at(at), None);
    }
}

/// Unmasked SIMD floating-point exceptions: #XM (or #UD without
/// CR4.OSXMMEXCPT), MXCSR flags set, destination untouched. ROUND* with
/// imm8[3] set does not signal precision.
#[test]
fn simd_fp_exceptions() {
    let mut e = Emu::new(TestMode::Long64);
    let dpps = e.load(|a| a.dpps(xmm1, xmm2, 0xf1));
    let round = e.load(|a| a.roundps(xmm1, xmm2, 0));
    let round_quiet = e.load(|a| a.roundps(xmm1, xmm2, 8));
    let haddps = e.load(|a| a.haddps(xmm1, xmm2));
    let half = 0x3f00_0000u128; // 0.5
    let third = 0x3eaa_aaabu128;
    // PE unmasked.
    e.cpu.mxcsr = 0x1f80 & !(1 << 12);
    e.cpu.xmm[1] = third | third << 32;
    e.cpu.xmm[2] = third | third << 32;
    assert_eq!(e.fault_at(dpps), Some((vector::XM, None)));
    assert_eq!(e.cpu.xmm[1], third | third << 32);
    assert_eq!(e.cpu.mxcsr & 0x3f, Mxcsr::PE);
    e.cpu.mxcsr &= !0x3f;
    e.cpu.xmm[2] = half;
    assert_eq!(e.fault_at(round), Some((vector::XM, None)));
    assert_eq!(e.cpu.xmm[1], third | third << 32);
    e.cpu.mxcsr &= !0x3f;
    assert_eq!(e.fault_at(round_quiet), None);
    assert_eq!(e.cpu.xmm[1], 0);
    assert_eq!(e.cpu.mxcsr & 0x3f, 0);
    // IE unmasked (inf - inf), without OSXMMEXCPT: #UD.
    e.cpu.cr4 &= !cr::CR4_OSXMMEXCPT;
    e.cpu.mxcsr = 0x1f80 & !(1 << 7);
    let inf = 0x7f80_0000u128;
    e.cpu.xmm[1] = inf | (0xff80_0000u128 << 32);
    assert_eq!(e.fault_at(haddps), Some((vector::UD, None)));
    assert_eq!(e.cpu.xmm[1], inf | (0xff80_0000u128 << 32));
    assert_eq!(e.cpu.mxcsr & 0x3f, Mxcsr::IE);
}

/// The flags of unmasked exceptions (reproductions from the differential
/// tester, checked on the host): an unmasked pre-computation exception
/// (IE, DE, ZE) in any lane leaves only the pre-computation flags; DPPS
/// and DPPD stop after the first step (multiply, add, add) raising an
/// unmasked exception, keeping the flags of the earlier steps.
#[test]
fn unmasked_exception_flags() {
    let mut e = Emu::new(TestMode::Long64);
    let haddps = e.load(|a| a.haddps(xmm1, xmm3));
    let roundps = e.load(|a| a.roundps(xmm0, xmm5, 0xf7));
    let dpps = e.load(|a| a.dpps(xmm5, xmm2, 0xf2));
    let dppd = e.load(|a| a.dppd(xmm3, xmm1, 0xb1));
    let dpps_ff = e.load(|a| a.dpps(xmm0, xmm1, 0xff));
    #[allow(clippy::type_complexity)]
    let cases: [(At, &[(usize, u128)], u32, u32); 6] = [
        // DE unmasked in one lane: not UE/PE of the others.
        (
            haddps,
            &[
                (1, 0xa64a_bcac_cb01_7641_0002_91b7_98c6_15b5),
                (3, 0x0004_0001_0000_0000_8000_0001_d46b_1807),
            ],
            0xa280,
            0xa282,
        ),
        // IE (SNaN) unmasked: not PE.
        (
            roundps,
            &[(5, 0x807f_ffff_8015_8417_7fa4_881e_0040_0000)],
            0x5200,
            0x5201,
        ),
        // Overflow (OE unmasked) in the products: the inf - inf of the
        // add step is not evaluated (no IE).
        (
            dpps,
            &[
                (2, 0x7f80_0000_7f80_0000_5107_69c4_c833_2b91),
                (5, 0x8f92_b569_1ad0_a239_5b88_468f_f962_8d7d),
            ],
            0x7a00,
            0x7a28,
        ),
        // Underflow (UE unmasked) in a product: the add step would see a
        // denormal (DE); it is not evaluated.
        (
            dppd,
            &[
                (1, 0xb359_c6fb_c765_2241_8040_0000_bfb3_4738),
                (3, 0xd180_0000_006c_5252_bf80_0000_bbe1_7b74),
            ],
            0x1200,
            0x1230,
        ),
        // PE (masked) from the products, then IE (unmasked) from the
        // first add: both reported.
        (
            dpps_ff,
            &[
                (0, 0x0000_0000_3f80_0001_7f80_0000_7f80_0000),
                (1, 0x0000_0000_3f80_0001_bf80_0000_3f80_0000),
            ],
            0x1f00,
            0x1f21,
        ),
        // PE (unmasked) from the first add: the second add, which would
        // overflow, is not evaluated.
        (
            dpps_ff,
            &[
                (0, 0x0000_0000_7f00_0000_3f80_0000_7f00_0000),
                (1, 0x0000_0000_3f80_0000_3f80_0000_3f80_0000),
            ],
            0x0f80,
            0x0fa0,
        ),
    ];
    for (i, (at, regs, mxcsr, want)) in cases.into_iter().enumerate() {
        for &(r, v) in regs {
            e.cpu.xmm[r] = v;
        }
        let before = e.cpu.xmm;
        e.cpu.mxcsr = mxcsr;
        assert_eq!(e.fault_at(at), Some((vector::XM, None)), "case {i}");
        assert_eq!(e.cpu.mxcsr, want, "case {i}");
        assert_eq!(e.cpu.xmm, before, "case {i}");
    }
}

/// Every SSSE3 form on MMX registers raises #MF for a pending x87
/// exception (CR0.NE), before touching anything, like the other MMX
/// instructions (checked on the host).
#[test]
fn mmx_forms_report_pending_x87_exception() {
    let mut e = Emu::new(TestMode::Long64);
    e.cpu.cr0 |= cr::CR0_NE;
    let forms = [
        e.load(|a| a.pshufb(mm1, mm2)),
        e.load(|a| a.phaddw(mm1, mm2)),
        e.load(|a| a.phaddd(mm1, mm2)),
        e.load(|a| a.phaddsw(mm1, qword_ptr(rbx))),
        e.load(|a| a.phsubw(mm1, mm2)),
        e.load(|a| a.phsubd(mm1, mm2)),
        e.load(|a| a.phsubsw(mm1, mm2)),
        e.load(|a| a.pmaddubsw(mm1, mm2)),
        e.load(|a| a.pmulhrsw(mm1, mm2)),
        e.load(|a| a.psignb(mm1, mm2)),
        e.load(|a| a.psignw(mm1, mm2)),
        e.load(|a| a.psignd(mm1, mm2)),
        e.load(|a| a.pabsb(mm1, mm2)),
        e.load(|a| a.pabsw(mm1, mm2)),
        e.load(|a| a.pabsd(mm1, qword_ptr(rbx))),
        e.load(|a| a.palignr(mm0, mm2, 3)),
    ];
    e.cpu.gpr[reg::RBX] = DATA;
    for (i, at) in forms.into_iter().enumerate() {
        e.cpu.fpu.sw = 0x3881; // TOP = 7, ES, IE
        e.cpu.fpu.tw = 0xffff;
        e.cpu.set_mm(1, 0x1234);
        assert_eq!(e.fault_at(at), Some((vector::MF, None)), "form {i}");
        assert_eq!((e.cpu.fpu.sw, e.cpu.fpu.tw), (0x3881, 0xffff), "form {i}");
        assert_eq!(e.cpu.mm(1), 0x1234, "form {i}");
        e.cpu.fpu.sw = 0x3800;
        assert_eq!(e.fault_at(at), None, "form {i}");
        assert_eq!((e.cpu.fpu.top(), e.cpu.fpu.tw), (0, 0), "form {i}");
    }
    // The difftest reproduction: FLDLN2 on a full stack with IE unmasked
    // (FCW 0x1148) leaves an exception pending; PALIGNR mm0, mm2, 3 then
    // raises #MF.
    let fld = e.load(|a| a.fldln2());
    let palignr = e.load(|a| a.palignr(mm0, mm2, 3));
    e.cpu.fpu.cw = 0x1148;
    e.cpu.fpu.sw = 0;
    e.cpu.fpu.tw = 0;
    assert_eq!(e.fault_at(fld), None);
    assert_ne!(e.cpu.fpu.sw & 0x80, 0);
    assert_eq!(e.fault_at(palignr), Some((vector::MF, None)));
}

#[test]
fn memory_fault_leaves_state() {
    // A page fault on the memory operand of an MMX form changes neither
    // the register nor the x87 tag word.
    let mut e = Emu::new(TestMode::Long64);
    e.cpu.gpr[reg::RBX] = 0x7fff_ffff_f000; // not mapped
    let at = e.load(|a| a.pshufb(mm1, qword_ptr(rbx)));
    e.cpu.fpu.tw = 0xffff;
    e.cpu.set_mm(1, 0x1234);
    assert_eq!(e.fault_at(at).map(|f| f.0), Some(vector::PF));
    assert_eq!(e.cpu.fpu.tw, 0xffff);
    assert_eq!(e.cpu.mm(1), 0x1234);
}

// ---------------------------------------------------------------------
// Operand forms in each mode
// ---------------------------------------------------------------------

#[test]
fn memory_forms_in_every_mode() {
    for mode in [TestMode::Real, TestMode::Protected32, TestMode::Long64] {
        // Real mode reaches the data through DS = base >> 4.
        let base = if mode == TestMode::Real {
            0x8_0000
        } else {
            DATA
        };
        let (cpu, bus, exit) = run_asm(
            mode,
            |a| {
                if mode == TestMode::Long64 {
                    a.mov(rbx, base)?;
                } else if mode == TestMode::Real {
                    a.mov(ax, (base >> 4) as u32)?;
                    a.mov(ds, ax)?;
                    a.xor(ebx, ebx)?;
                } else {
                    a.mov(ebx, base as u32)?;
                }
                let m = |d: i32| {
                    if mode == TestMode::Real {
                        ptr(bx + d)
                    } else if mode == TestMode::Long64 {
                        ptr(rbx + d)
                    } else {
                        ptr(ebx + d)
                    }
                };
                a.pmovzxbw(xmm1, qword_ptr(m(0x1)))?; // bytes 1..8 (unaligned)
                a.pshufb(xmm2, xmmword_ptr(m(0x10)))?; // aligned
                a.movddup(xmm3, qword_ptr(m(0x3)))?;
                a.pinsrb(xmm4, byte_ptr(m(0x5)), 9)?;
                a.pextrw(word_ptr(m(0x40)), xmm1, 2)?;
                a.pextrb(byte_ptr(m(0x42)), xmm1, 4)?;
                a.pextrd(dword_ptr(m(0x44)), xmm1, 3)?;
                a.extractps(dword_ptr(m(0x48)), xmm1, 1)?;
                a.insertps(xmm5, dword_ptr(m(0x4)), 0x30)?;
                a.mov(eax, 0xffff_ffffu32)?;
                a.crc32(eax, dword_ptr(m(0x0)))?;
                a.crc32(eax, byte_ptr(m(0x7)))?;
                a.crc32(eax, word_ptr(m(0x9)))?;
                a.pcmpistri(xmm6, xmmword_ptr(m(0x21)), 0x0c)?;
                a.pabsw(mm1, qword_ptr(m(0x2)))?;
                a.lddqu(xmm7, xmmword_ptr(m(0x3)))?;
                a.movntdqa(xmm0, xmmword_ptr(m(0x20)))?;
                a.hlt()
            },
            |cpu, bus| {
                osfxsr(cpu, bus);
                for i in 0..0x40u64 {
                    bus.put(base + i, 1, i * 7 + 3);
                }
                cpu.xmm[2] = 0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100u128.swap_bytes();
                cpu.xmm[6] = 0x2219u128;
            },
        );
        assert_eq!(exit, RunExit::Halted, "{mode:?}");
        let byte = |i: u64| (i * 7 + 3) & 0xff;
        let mut want1 = 0u128;
        for i in 0..8 {
            want1 |= (byte(1 + i) as u128) << (16 * i);
        }
        assert_eq!(cpu.xmm[1], want1, "{mode:?}");
        let mut m16 = 0u128;
        for i in 0..16 {
            m16 |= (byte(0x10 + i) as u128) << (8 * i);
        }
        // PSHUFB: xmm2 (the table) indexed by the memory bytes.
        let tbl = 0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100u128.swap_bytes();
        assert_eq!(cpu.xmm[2], ops::pshufb(tbl, m16, 16), "{mode:?}");
        let q = bus.read(base + 3, 8) as u128;
        assert_eq!(cpu.xmm[3], q | q << 64);
        assert_eq!(cpu.xmm[4], (byte(5) as u128) << 72);
        assert_eq!(bus.read(base + 0x40, 2) as u128, lane(want1, 16, 2) as u128);
        assert_eq!(bus.read(base + 0x42, 1), lane(want1, 8, 4));
        assert_eq!(bus.read(base + 0x44, 4), lane(want1, 32, 3));
        assert_eq!(bus.read(base + 0x48, 4), lane(want1, 32, 1));
        assert_eq!(cpu.xmm[5], (bus.read(base + 4, 4) as u128) << 96);
        let mut crc = ops::crc32c_bitwise(0xffff_ffff, bus.read(base, 4), 4);
        crc = ops::crc32c_bitwise(crc, bus.read(base + 7, 1), 1);
        crc = ops::crc32c_bitwise(crc, bus.read(base + 9, 2), 2);
        assert_eq!(cpu.gpr[reg::RAX], crc as u64, "{mode:?}");
        // needle 0x19,0x22 (equal ordered): base+0x21 holds byte(0x21) = 0xea..
        let hay = {
            let mut b = [0u8; 16];
            for (i, x) in b.iter_mut().enumerate() {
                *x = byte(0x21 + i as u64) as u8;
            }
            u128::from_le_bytes(b)
        };
        let (la, lb) = (
            ops::str_len_implicit(0x2219, 0x0c),
            ops::str_len_implicit(hay, 0x0c),
        );
        let (res, _) = ops::pcmpstr(0x2219, hay, la, lb, 0x0c);
        assert_eq!(
            cpu.gpr[reg::RCX] & 0xffff_ffff,
            ops::str_index(res, 0x0c) as u64
        );
        let q = bus.read(base + 2, 8) as u128;
        assert_eq!(cpu.mm(1), ops::pabs(q, 16) as u64);
        let m128 =
            |at: u64| bus.read(base + at, 8) as u128 | (bus.read(base + at + 8, 8) as u128) << 64;
        assert_eq!(cpu.xmm[7], m128(3));
        assert_eq!(cpu.xmm[0], m128(0x20));
        assert_eq!(cpu.fpu.tw, 0, "MMX state");
        assert_eq!(cpu.fpu.top(), 0, "MMX state");
    }
}

#[test]
fn register_forms_and_widths() {
    let (cpu, _, exit) = run_asm(
        TestMode::Long64,
        |a| {
            a.mov(rax, 0xdead_beef_0000_0000u64)?;
            a.pextrb(rax, xmm9, 0x1f)?; // imm masked to 15
            a.mov(rcx, u64::MAX)?;
            a.pextrd(ecx, xmm9, 6)?; // 32-bit write zero-extends
            a.pextrq(rdx, xmm9, 3)?;
            a.mov(rsi, u64::MAX)?;
            a.extractps(esi, xmm9, 3)?;
            a.mov(rdi, 0x1122_3344_5566_7788u64)?;
            a.pinsrq(xmm10, rdi, 1)?;
            a.pinsrd(xmm10, edi, 4)?; // imm masked to 0
            a.pinsrb(xmm10, edi, 0x13)?; // lane 3
            a.mov(r8, u64::MAX)?;
            a.db(&[0x66, 0x45, 0x0f, 0x3a, 0x15, 0xc8, 0x05])?; // pextrw r8d, xmm9, 5 (0F 3A 15 form)
            a.mov(r9d, 0x1234_5678u32)?;
            a.crc32(r9, r9b)?;
            a.hlt()
        },
        |cpu, bus| {
            osfxsr(cpu, bus);
            cpu.xmm[9] = 0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100;
        },
    );
    assert_eq!(exit, RunExit::Halted);
    let x9 = 0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100u128;
    assert_eq!(cpu.gpr[reg::RAX], 0x0f);
    assert_eq!(cpu.gpr[reg::RCX], lane(x9, 32, 2));
    assert_eq!(cpu.gpr[reg::RDX], lane(x9, 64, 1));
    assert_eq!(cpu.gpr[reg::RSI], lane(x9, 32, 3));
    assert_eq!(cpu.gpr[8], lane(x9, 16, 5));
    let mut x10 = set_lane(0, 64, 1, 0x1122_3344_5566_7788);
    x10 = set_lane(x10, 32, 0, 0x5566_7788);
    x10 = set_lane(x10, 8, 3, 0x88);
    assert_eq!(cpu.xmm[10], x10);
    assert_eq!(cpu.gpr[9], ops::crc32c_bitwise(0x1234_5678, 0x78, 1) as u64);
}

#[test]
fn explicit_lengths_in_32_bit_mode() {
    // PCMPESTRI in 32-bit mode uses EAX/EDX; lengths are saturated.
    let (cpu, _, exit) = run_asm(
        TestMode::Protected32,
        |a| {
            a.mov(eax, 3u32)?;
            a.mov(edx, 0xffff_fff0u32)?; // -16 → 16
            a.pcmpestri(xmm1, xmm2, 0x0c)?; // equal ordered, bytes
            a.pushfd()?;
            a.pop(ebx)?;
            a.hlt()
        },
        |cpu, bus| {
            osfxsr(cpu, bus);
            cpu.xmm[1] = u128::from_le_bytes(*b"abcXXXXXXXXXXXXX");
            cpu.xmm[2] = u128::from_le_bytes(*b"xxxxxabcabxxxxxx");
        },
    );
    assert_eq!(exit, RunExit::Halted);
    assert_eq!(cpu.gpr[reg::RCX], 5);
    let f = cpu.gpr[reg::RBX] & flags::STATUS;
    assert_eq!(f, flags::CF | flags::SF, "SF: la < 16; ZF clear: lb = 16");
}

// ---------------------------------------------------------------------
// Pure-function checks against hand-computed values
// ---------------------------------------------------------------------

#[test]
fn crc32c_known_values() {
    // CRC-32C("123456789") = 0xe3069283 (with the conventional inversions).
    let mut c = !0u32;
    for b in b"123456789" {
        c = ops::crc32c(c, *b as u64, 1);
    }
    assert_eq!(!c, 0xe306_9283);
    let mut rng = Rng::new(1);
    for _ in 0..cases(20000) {
        let (crc, d) = (rng.next() as u32, rng.next());
        for size in [1u8, 2, 4, 8] {
            assert_eq!(ops::crc32c(crc, d, size), ops::crc32c_bitwise(crc, d, size));
        }
    }
}

#[test]
fn round_known_values() {
    let r = |x: f32, imm: u8| {
        let mut fl = 0;
        let y = fp::round(F32, x.to_bits() as u64, imm, Mxcsr::DEFAULT, &mut fl);
        (f32::from_bits(y as u32), fl)
    };
    assert_eq!(r(2.5, 0), (2.0, Mxcsr::PE));
    assert_eq!(r(3.5, 0), (4.0, Mxcsr::PE));
    assert_eq!(r(-0.5, 0).0.to_bits(), (-0.0f32).to_bits());
    assert_eq!(r(-0.3, 2).0.to_bits(), (-0.0f32).to_bits());
    assert_eq!(r(0.3, 1 | 8), (0.0, 0));
    assert_eq!(r(-0.3, 1), (-1.0, Mxcsr::PE));
    assert_eq!(r(8388607.5, 2), (8388608.0, Mxcsr::PE));
    assert_eq!(r(1e20, 0), (1e20, 0));
    assert_eq!(r(7.0, 3), (7.0, 0));
}

#[test]
fn pcmpstr_known_values() {
    // "equal any" of "ab" in "xxbxa": bits 2 and 4.
    let a = u128::from_le_bytes(*b"ab\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
    let b = u128::from_le_bytes(*b"xxbxa\0\0\0\0\0\0\0\0\0\0\0");
    let (la, lb) = (ops::str_len_implicit(a, 0), ops::str_len_implicit(b, 0));
    assert_eq!((la, lb), (2, 5));
    let (res, f) = ops::pcmpstr(a, b, la, lb, 0);
    assert_eq!(res, 0b10100);
    assert_eq!(f, flags::CF | flags::ZF | flags::SF);
    assert_eq!(ops::str_index(res, 0), 2);
    assert_eq!(ops::str_index(res, 0x40), 4);
    // Ranges 'a'..'z' over "Hello": lowercase letters 1..4.
    let a = u128::from_le_bytes(*b"az\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
    let b = u128::from_le_bytes(*b"Hello\0\0\0\0\0\0\0\0\0\0\0");
    let (res, _) = ops::pcmpstr(a, b, 2, 5, 0x04);
    assert_eq!(res, 0b11110);
    // Negative masked polarity flips only the valid elements.
    let (res, _) = ops::pcmpstr(a, b, 2, 5, 0x34);
    assert_eq!(res, 0b00001);
    assert_eq!(ops::str_mask(0b101, 0x41), 0xffff_0000_ffff);
}

// ---------------------------------------------------------------------
// Differential tests against the host
// ---------------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
#[path = "sse4_diff.rs"]
mod diff;
