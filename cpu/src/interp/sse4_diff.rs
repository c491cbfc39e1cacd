//! Differential tests: each instruction runs through the interpreter and
//! natively on this (x86-64) host on the same random inputs, under every
//! MXCSR rounding/FTZ/DAZ setting for the floating-point ones and with
//! every imm8 value for the immediate forms.

use core::arch::asm;
use core::arch::x86_64::__m128i;

use super::*;

fn m(v: u128) -> __m128i {
    // SAFETY: both are 16 plain bytes.
    unsafe { core::mem::transmute(v) }
}

fn u(v: __m128i) -> u128 {
    // SAFETY: both are 16 plain bytes.
    unsafe { core::mem::transmute(v) }
}

/// The host must have every extension compared here: fail, never skip.
fn require() {
    assert!(is_x86_feature_detected!("sse3"), "host lacks SSE3");
    assert!(is_x86_feature_detected!("ssse3"), "host lacks SSSE3");
    assert!(is_x86_feature_detected!("sse4.1"), "host lacks SSE4.1");
    assert!(is_x86_feature_detected!("sse4.2"), "host lacks SSE4.2");
}

/// Evaluates `$body` with the constant `$I` equal to the runtime `$imm`
/// (asm! needs immediates as constants): one arm per imm8 value.
macro_rules! with_imm {
    ($imm:expr, $I:ident => $body:expr) => {
        with_imm!(@arms $imm, $I, $body,
            0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
            32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59
            60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87
            88 89 90 91 92 93 94 95 96 97 98 99 100 101 102 103 104 105 106 107 108 109 110 111
            112 113 114 115 116 117 118 119 120 121 122 123 124 125 126 127 128 129 130 131 132
            133 134 135 136 137 138 139 140 141 142 143 144 145 146 147 148 149 150 151 152 153
            154 155 156 157 158 159 160 161 162 163 164 165 166 167 168 169 170 171 172 173 174
            175 176 177 178 179 180 181 182 183 184 185 186 187 188 189 190 191 192 193 194 195
            196 197 198 199 200 201 202 203 204 205 206 207 208 209 210 211 212 213 214 215 216
            217 218 219 220 221 222 223 224 225 226 227 228 229 230 231 232 233 234 235 236 237
            238 239 240 241 242 243 244 245 246 247 248 249 250 251 252 253 254 255)
    };
    (@arms $imm:expr, $I:ident, $body:expr, $($n:literal)*) => {
        match $imm {
            $( $n => {
                const $I: u8 = $n;
                $body
            } )*
        }
    };
}

/// Loads one instruction per imm8 value.
fn load_imms(
    e: &mut Emu,
    build: impl Fn(&mut CodeAssembler, u32) -> Result<(), IcedError>,
) -> Vec<At> {
    (0..=255u32).map(|i| e.load(|a| build(a, i))).collect()
}

// ---------------------------------------------------------------------
// Two-operand integer forms (XMM and MMX)
// ---------------------------------------------------------------------

macro_rules! diff_xmm2 {
    ($name:ident, $ins:literal, $build:expr) => {
        #[test]
        fn $name() {
            require();
            let mut e = Emu::new(TestMode::Long64);
            let at = e.load($build);
            let mut rng = Rng::new(line!() as u64);
            for _ in 0..cases(4000) {
                let (x, y) = (rng.vec(), rng.vec());
                let mut r = m(x);
                // SAFETY: register-only SSE instruction the host has (require()).
                unsafe {
                    asm!(concat!($ins, " {a}, {b}"), a = inout(xmm_reg) r, b = in(xmm_reg) m(y),
                         options(pure, nomem, nostack));
                }
                e.cpu.xmm[1] = x;
                e.cpu.xmm[2] = y;
                e.step(at);
                assert_eq!(e.cpu.xmm[1], u(r), "{} {x:#034x} {y:#034x}", $ins);
            }
        }
    };
}

macro_rules! diff_mm2 {
    ($name:ident, $ins:literal, $build:expr) => {
        #[test]
        fn $name() {
            require();
            let mut e = Emu::new(TestMode::Long64);
            let at = e.load($build);
            let mut rng = Rng::new(line!() as u64);
            for _ in 0..cases(4000) {
                let (x, y) = (rng.vec() as u64, rng.vec() as u64);
                let mut r = x;
                // SAFETY: MMX registers are clobbered and left empty (EMMS).
                unsafe {
                    asm!("movq mm1, {a}", "movq mm2, {b}", concat!($ins, " mm1, mm2"),
                         "movq {a}, mm1", "emms", a = inout(reg) r, b = in(reg) y,
                         out("mm1") _, out("mm2") _, options(nomem, nostack));
                }
                e.cpu.set_mm(1, x);
                e.cpu.set_mm(2, y);
                e.cpu.fpu.tw = 0xffff;
                e.cpu.fpu.set_top(5);
                e.step(at);
                assert_eq!(e.cpu.mm(1), r, "{} {x:#018x} {y:#018x}", $ins);
                assert_eq!((e.cpu.fpu.tw, e.cpu.fpu.top()), (0, 0), "MMX state");
                assert_eq!(e.cpu.fpu.regs[1].exp, 0x7fff);
            }
        }
    };
}

type Asm<'a> = &'a mut CodeAssembler;

diff_xmm2!(pshufb_xmm, "pshufb", |a: Asm| a.pshufb(xmm1, xmm2));
diff_xmm2!(phaddw_xmm, "phaddw", |a: Asm| a.phaddw(xmm1, xmm2));
diff_xmm2!(phaddd_xmm, "phaddd", |a: Asm| a.phaddd(xmm1, xmm2));
diff_xmm2!(phaddsw_xmm, "phaddsw", |a: Asm| a.phaddsw(xmm1, xmm2));
diff_xmm2!(phsubw_xmm, "phsubw", |a: Asm| a.phsubw(xmm1, xmm2));
diff_xmm2!(phsubd_xmm, "phsubd", |a: Asm| a.phsubd(xmm1, xmm2));
diff_xmm2!(phsubsw_xmm, "phsubsw", |a: Asm| a.phsubsw(xmm1, xmm2));
diff_xmm2!(pmaddubsw_xmm, "pmaddubsw", |a: Asm| a.pmaddubsw(xmm1, xmm2));
diff_xmm2!(pmulhrsw_xmm, "pmulhrsw", |a: Asm| a.pmulhrsw(xmm1, xmm2));
diff_xmm2!(psignb_xmm, "psignb", |a: Asm| a.psignb(xmm1, xmm2));
diff_xmm2!(psignw_xmm, "psignw", |a: Asm| a.psignw(xmm1, xmm2));
diff_xmm2!(psignd_xmm, "psignd", |a: Asm| a.psignd(xmm1, xmm2));
diff_xmm2!(pabsb_xmm, "pabsb", |a: Asm| a.pabsb(xmm1, xmm2));
diff_xmm2!(pabsw_xmm, "pabsw", |a: Asm| a.pabsw(xmm1, xmm2));
diff_xmm2!(pabsd_xmm, "pabsd", |a: Asm| a.pabsd(xmm1, xmm2));

diff_mm2!(pshufb_mm, "pshufb", |a: Asm| a.pshufb(mm1, mm2));
diff_mm2!(phaddw_mm, "phaddw", |a: Asm| a.phaddw(mm1, mm2));
diff_mm2!(phaddd_mm, "phaddd", |a: Asm| a.phaddd(mm1, mm2));
diff_mm2!(phaddsw_mm, "phaddsw", |a: Asm| a.phaddsw(mm1, mm2));
diff_mm2!(phsubw_mm, "phsubw", |a: Asm| a.phsubw(mm1, mm2));
diff_mm2!(phsubd_mm, "phsubd", |a: Asm| a.phsubd(mm1, mm2));
diff_mm2!(phsubsw_mm, "phsubsw", |a: Asm| a.phsubsw(mm1, mm2));
diff_mm2!(pmaddubsw_mm, "pmaddubsw", |a: Asm| a.pmaddubsw(mm1, mm2));
diff_mm2!(pmulhrsw_mm, "pmulhrsw", |a: Asm| a.pmulhrsw(mm1, mm2));
diff_mm2!(psignb_mm, "psignb", |a: Asm| a.psignb(mm1, mm2));
diff_mm2!(psignw_mm, "psignw", |a: Asm| a.psignw(mm1, mm2));
diff_mm2!(psignd_mm, "psignd", |a: Asm| a.psignd(mm1, mm2));
diff_mm2!(pabsb_mm, "pabsb", |a: Asm| a.pabsb(mm1, mm2));
diff_mm2!(pabsw_mm, "pabsw", |a: Asm| a.pabsw(mm1, mm2));
diff_mm2!(pabsd_mm, "pabsd", |a: Asm| a.pabsd(mm1, mm2));

diff_xmm2!(movsldup, "movsldup", |a: Asm| a.movsldup(xmm1, xmm2));
diff_xmm2!(movshdup, "movshdup", |a: Asm| a.movshdup(xmm1, xmm2));
diff_xmm2!(movddup, "movddup", |a: Asm| a.movddup(xmm1, xmm2));
diff_xmm2!(pmovsxbw, "pmovsxbw", |a: Asm| a.pmovsxbw(xmm1, xmm2));
diff_xmm2!(pmovsxbd, "pmovsxbd", |a: Asm| a.pmovsxbd(xmm1, xmm2));
diff_xmm2!(pmovsxbq, "pmovsxbq", |a: Asm| a.pmovsxbq(xmm1, xmm2));
diff_xmm2!(pmovsxwd, "pmovsxwd", |a: Asm| a.pmovsxwd(xmm1, xmm2));
diff_xmm2!(pmovsxwq, "pmovsxwq", |a: Asm| a.pmovsxwq(xmm1, xmm2));
diff_xmm2!(pmovsxdq, "pmovsxdq", |a: Asm| a.pmovsxdq(xmm1, xmm2));
diff_xmm2!(pmovzxbw, "pmovzxbw", |a: Asm| a.pmovzxbw(xmm1, xmm2));
diff_xmm2!(pmovzxbd, "pmovzxbd", |a: Asm| a.pmovzxbd(xmm1, xmm2));
diff_xmm2!(pmovzxbq, "pmovzxbq", |a: Asm| a.pmovzxbq(xmm1, xmm2));
diff_xmm2!(pmovzxwd, "pmovzxwd", |a: Asm| a.pmovzxwd(xmm1, xmm2));
diff_xmm2!(pmovzxwq, "pmovzxwq", |a: Asm| a.pmovzxwq(xmm1, xmm2));
diff_xmm2!(pmovzxdq, "pmovzxdq", |a: Asm| a.pmovzxdq(xmm1, xmm2));
diff_xmm2!(pmuldq, "pmuldq", |a: Asm| a.pmuldq(xmm1, xmm2));
diff_xmm2!(pmulld, "pmulld", |a: Asm| a.pmulld(xmm1, xmm2));
diff_xmm2!(pminsb, "pminsb", |a: Asm| a.pminsb(xmm1, xmm2));
diff_xmm2!(pminsd, "pminsd", |a: Asm| a.pminsd(xmm1, xmm2));
diff_xmm2!(pminuw, "pminuw", |a: Asm| a.pminuw(xmm1, xmm2));
diff_xmm2!(pminud, "pminud", |a: Asm| a.pminud(xmm1, xmm2));
diff_xmm2!(pmaxsb, "pmaxsb", |a: Asm| a.pmaxsb(xmm1, xmm2));
diff_xmm2!(pmaxsd, "pmaxsd", |a: Asm| a.pmaxsd(xmm1, xmm2));
diff_xmm2!(pmaxuw, "pmaxuw", |a: Asm| a.pmaxuw(xmm1, xmm2));
diff_xmm2!(pmaxud, "pmaxud", |a: Asm| a.pmaxud(xmm1, xmm2));
diff_xmm2!(pcmpeqq, "pcmpeqq", |a: Asm| a.pcmpeqq(xmm1, xmm2));
diff_xmm2!(pcmpgtq, "pcmpgtq", |a: Asm| a.pcmpgtq(xmm1, xmm2));
diff_xmm2!(packusdw, "packusdw", |a: Asm| a.packusdw(xmm1, xmm2));
diff_xmm2!(phminposuw, "phminposuw", |a: Asm| a.phminposuw(xmm1, xmm2));

/// High registers (REX.R/REX.B) reach the right XMM registers.
#[test]
fn rex_registers() {
    require();
    let mut e = Emu::new(TestMode::Long64);
    let at = e.load(|a| a.pshufb(xmm9, xmm12));
    let at2 = e.load(|a| a.pmulld(xmm15, xmm8));
    let mut rng = Rng::new(3);
    for _ in 0..cases(1000) {
        let (x, y) = (rng.vec(), rng.vec());
        let (mut r, mut r2) = (m(x), m(y));
        // SAFETY: register-only SSE instructions the host has.
        unsafe {
            asm!("pshufb xmm9, xmm12", "pmulld xmm15, xmm8", inout("xmm9") r, in("xmm12") m(y),
                 inout("xmm15") r2, in("xmm8") m(x), options(pure, nomem, nostack));
        }
        e.cpu.xmm[9] = x;
        e.cpu.xmm[12] = y;
        e.cpu.xmm[15] = y;
        e.cpu.xmm[8] = x;
        e.step(at);
        e.step(at2);
        assert_eq!((e.cpu.xmm[9], e.cpu.xmm[15]), (u(r), u(r2)));
    }
}

// ---------------------------------------------------------------------
// Immediate forms
// ---------------------------------------------------------------------

macro_rules! diff_xmm_imm {
    ($name:ident, $ins:literal, $n:expr, $build:expr) => {
        #[test]
        fn $name() {
            require();
            let mut e = Emu::new(TestMode::Long64);
            let ats = load_imms(&mut e, $build);
            let mut rng = Rng::new(line!() as u64);
            for imm in 0..=255u8 {
                for _ in 0..cases($n) {
                    let (x, y) = (rng.vec(), rng.vec());
                    let want = with_imm!(imm, I => {
                        let mut r = m(x);
                        // SAFETY: register-only SSE instruction the host has.
                        unsafe {
                            asm!(concat!($ins, " {a}, {b}, {i}"), a = inout(xmm_reg) r,
                                 b = in(xmm_reg) m(y), i = const I, options(pure, nomem, nostack));
                        }
                        u(r)
                    });
                    e.cpu.xmm[1] = x;
                    e.cpu.xmm[2] = y;
                    e.step(ats[imm as usize]);
                    assert_eq!(e.cpu.xmm[1], want, "{} {imm:#x} {x:#034x} {y:#034x}", $ins);
                }
            }
        }
    };
}

diff_xmm_imm!(palignr_xmm, "palignr", 20, |a: Asm, i| a
    .palignr(xmm1, xmm2, i));
diff_xmm_imm!(pblendw, "pblendw", 10, |a: Asm, i| a.pblendw(xmm1, xmm2, i));
diff_xmm_imm!(blendps, "blendps", 10, |a: Asm, i| a.blendps(xmm1, xmm2, i));
diff_xmm_imm!(blendpd, "blendpd", 10, |a: Asm, i| a.blendpd(xmm1, xmm2, i));
diff_xmm_imm!(mpsadbw, "mpsadbw", 40, |a: Asm, i| a.mpsadbw(xmm1, xmm2, i));
diff_xmm_imm!(insertps_reg, "insertps", 10, |a: Asm, i| a
    .insertps(xmm1, xmm2, i));

#[test]
fn palignr_mm() {
    require();
    let mut e = Emu::new(TestMode::Long64);
    let ats = load_imms(&mut e, |a, i| a.palignr(mm1, mm2, i));
    let mut rng = Rng::new(11);
    for imm in 0..=255u8 {
        for _ in 0..cases(20) {
            let (x, y) = (rng.next(), rng.next());
            let want = with_imm!(imm, I => {
                let mut r = x;
                // SAFETY: MMX registers are clobbered and left empty (EMMS).
                unsafe {
                    asm!("movq mm1, {a}", "movq mm2, {b}", "palignr mm1, mm2, {i}",
                         "movq {a}, mm1", "emms", a = inout(reg) r, b = in(reg) y, i = const I,
                         out("mm1") _, out("mm2") _, options(nomem, nostack));
                }
                r
            });
            e.cpu.set_mm(1, x);
            e.cpu.set_mm(2, y);
            e.step(ats[imm as usize]);
            assert_eq!(e.cpu.mm(1), want, "palignr mm {imm}");
        }
    }
}

#[test]
fn insertps_mem() {
    require();
    let mut e = Emu::new(TestMode::Long64);
    e.cpu.gpr[reg::RBX] = DATA + 4;
    let ats = load_imms(&mut e, |a, i| a.insertps(xmm1, dword_ptr(rbx), i));
    let mut rng = Rng::new(12);
    for imm in 0..=255u8 {
        for _ in 0..cases(8) {
            let (x, v) = (rng.vec(), rng.next() as u32);
            let want = with_imm!(imm, I => {
                let mut r = m(x);
                // SAFETY: reads the 4 bytes of `v`.
                unsafe {
                    asm!("insertps {a}, dword ptr [{p}], {i}", a = inout(xmm_reg) r,
                         p = in(reg) &v, i = const I, options(pure, readonly, nostack));
                }
                u(r)
            });
            e.bus.put(DATA + 4, 4, v as u64);
            e.cpu.xmm[1] = x;
            e.step(ats[imm as usize]);
            assert_eq!(e.cpu.xmm[1], want, "insertps m32 {imm:#x}");
        }
    }
}

#[test]
fn blendv() {
    require();
    let mut e = Emu::new(TestMode::Long64);
    let ats = [
        e.load(|a| a.pblendvb(xmm1, xmm2)),
        e.load(|a| a.blendvps(xmm1, xmm2)),
        e.load(|a| a.blendvpd(xmm1, xmm2)),
    ];
    let mut rng = Rng::new(13);
    for _ in 0..cases(4000) {
        let (x, y, k) = (rng.vec(), rng.vec(), rng.vec());
        let (mut r0, mut r1, mut r2) = (m(x), m(x), m(x));
        // SAFETY: register-only SSE4.1 instructions the host has.
        unsafe {
            asm!("pblendvb {a}, {y}", "blendvps {b}, {y}", "blendvpd {c}, {y}",
                 a = inout(xmm_reg) r0, b = inout(xmm_reg) r1, c = inout(xmm_reg) r2,
                 y = in(xmm_reg) m(y), in("xmm0") m(k), options(pure, nomem, nostack));
        }
        for (at, want) in ats.iter().zip([r0, r1, r2]) {
            e.cpu.xmm[0] = k;
            e.cpu.xmm[1] = x;
            e.cpu.xmm[2] = y;
            e.step(*at);
            assert_eq!(e.cpu.xmm[1], u(want), "{x:#x} {y:#x} {k:#x}");
        }
    }
}

#[test]
fn ptest() {
    require();
    let mut e = Emu::new(TestMode::Long64);
    let at = e.load(|a| a.ptest(xmm1, xmm2));
    let mut rng = Rng::new(14);
    for _ in 0..cases(8000) {
        let x = rng.vec();
        let y = match rng.below(4) {
            0 => rng.vec() & !x,
            1 => rng.vec() & x,
            2 => 0,
            _ => rng.vec(),
        };
        let fin = rng.next() & flags::STATUS;
        let fout: u64;
        // SAFETY: only the status flags are loaded into RFLAGS.
        unsafe {
            asm!("push {fin}", "popfq", "ptest {a}, {b}", "pushfq", "pop {fout}",
                 fin = in(reg) fin, fout = lateout(reg) fout, a = in(xmm_reg) m(x),
                 b = in(xmm_reg) m(y));
        }
        e.cpu.xmm[1] = x;
        e.cpu.xmm[2] = y;
        e.cpu.rflags = (e.cpu.rflags & !flags::STATUS) | fin;
        e.step(at);
        assert_eq!(e.cpu.rflags & flags::STATUS, fout & flags::STATUS);
    }
}

#[test]
fn extract_insert() {
    require();
    let mut e = Emu::new(TestMode::Long64);
    let pextrb = load_imms(&mut e, |a, i| a.pextrb(eax, xmm1, i));
    let pextrw: Vec<At> = (0..=255u8)
        .map(|i| e.load_bytes(&[0x66, 0x0f, 0x3a, 0x15, 0xc8, i])) // pextrw eax, xmm1, i
        .collect();
    let pextrd = load_imms(&mut e, |a, i| a.pextrd(eax, xmm1, i));
    let pextrq = load_imms(&mut e, |a, i| a.pextrq(rax, xmm1, i));
    let extractps = load_imms(&mut e, |a, i| a.extractps(eax, xmm1, i));
    let pinsrb = load_imms(&mut e, |a, i| a.pinsrb(xmm1, ebx, i));
    let pinsrd = load_imms(&mut e, |a, i| a.pinsrd(xmm1, ebx, i));
    let pinsrq = load_imms(&mut e, |a, i| a.pinsrq(xmm1, rbx, i));
    let mut rng = Rng::new(15);
    for imm in 0..=255u8 {
        for _ in 0..cases(8) {
            let (x, g) = (rng.vec(), rng.next());
            let (xb, xd, xq) = with_imm!(imm, I => {
                let (mut r0, mut r1, mut r2) = (m(x), m(x), m(x));
                // SAFETY: register-only SSE4.1 instructions the host has.
                unsafe {
                    asm!("pinsrb {a}, {g:e}, {i}", "pinsrd {b}, {g:e}, {i}", "pinsrq {c}, {g}, {i}",
                         a = inout(xmm_reg) r0, b = inout(xmm_reg) r1, c = inout(xmm_reg) r2,
                         g = in(reg) g, i = const I, options(pure, nomem, nostack));
                }
                (u(r0), u(r1), u(r2))
            });
            let (b, w, d, q, s): (u64, u64, u64, u64, u64);
            with_imm!(imm, I => {
                // SAFETY: register-only SSE4.1 instructions the host has.
                unsafe {
                    asm!("pextrb {b:e}, {x}, {i}", "pextrw {w:e}, {x}, {i}",
                         "pextrd {d:e}, {x}, {i}", "pextrq {q}, {x}, {i}",
                         "extractps {s:e}, {x}, {i}", x = in(xmm_reg) m(x), i = const I,
                         b = out(reg) b, w = out(reg) w, d = out(reg) d, q = out(reg) q,
                         s = out(reg) s, options(pure, nomem, nostack));
                }
            });
            let i = imm as usize;
            for (at, want) in [
                (pextrb[i], b),
                (pextrw[i], w),
                (pextrd[i], d),
                (pextrq[i], q),
                (extractps[i], s),
            ] {
                e.cpu.xmm[1] = x;
                e.cpu.gpr[reg::RAX] = rng.next();
                e.step(at);
                assert_eq!(e.cpu.gpr[reg::RAX], want, "extract {imm:#x} {x:#034x}");
            }
            for (at, want) in [(pinsrb[i], xb), (pinsrd[i], xd), (pinsrq[i], xq)] {
                e.cpu.xmm[1] = x;
                e.cpu.gpr[reg::RBX] = g;
                e.step(at);
                assert_eq!(e.cpu.xmm[1], want, "insert {imm:#x} {x:#034x} {g:#x}");
            }
        }
    }
}

// ---------------------------------------------------------------------
// Floating point under MXCSR
// ---------------------------------------------------------------------

/// Runs an instruction template on `{a}`, `{b}` natively under MXCSR
/// `$mx`; returns the new `{a}` and the exception flags raised.
macro_rules! hostfp {
    ($tmpl:expr, $x:expr, $y:expr, $mx:expr $(, $($extra:tt)+)?) => {{
        let mut r = m($x);
        let mut csr: u32 = $mx;
        let mut save: u32 = 0;
        // SAFETY: MXCSR is saved and restored around the instruction.
        unsafe {
            asm!("stmxcsr [{save}]", "ldmxcsr [{csr}]", $tmpl, "stmxcsr [{csr}]",
                 "ldmxcsr [{save}]", save = in(reg) &mut save, csr = in(reg) &mut csr,
                 a = inout(xmm_reg) r, b = in(xmm_reg) m($y) $(, $($extra)+)?,
                 options(nostack));
        }
        (u(r), csr & 0x3f)
    }};
}

macro_rules! diff_fp2 {
    ($name:ident, $ins:literal, $fmt:expr, $build:expr) => {
        #[test]
        fn $name() {
            require();
            let mut e = Emu::new(TestMode::Long64);
            let at = e.load($build);
            let mut rng = Rng::new(line!() as u64);
            for mx in modes() {
                for _ in 0..cases(2000) {
                    let (x, y) = (rng.fvec($fmt), rng.fvec($fmt));
                    let want = hostfp!(concat!($ins, " {a}, {b}"), x, y, mx);
                    e.cpu.xmm[1] = x;
                    e.cpu.xmm[2] = y;
                    e.cpu.mxcsr = mx;
                    e.step(at);
                    let got = (e.cpu.xmm[1], e.cpu.mxcsr & 0x3f);
                    assert_eq!(got, want, "{} {x:#034x} {y:#034x} mxcsr {mx:#x}", $ins);
                }
            }
        }
    };
}

diff_fp2!(addsubps, "addsubps", F32, |a: Asm| a.addsubps(xmm1, xmm2));
diff_fp2!(addsubpd, "addsubpd", F64, |a: Asm| a.addsubpd(xmm1, xmm2));
diff_fp2!(haddps, "haddps", F32, |a: Asm| a.haddps(xmm1, xmm2));
diff_fp2!(haddpd, "haddpd", F64, |a: Asm| a.haddpd(xmm1, xmm2));
diff_fp2!(hsubps, "hsubps", F32, |a: Asm| a.hsubps(xmm1, xmm2));
diff_fp2!(hsubpd, "hsubpd", F64, |a: Asm| a.hsubpd(xmm1, xmm2));

macro_rules! diff_fp_imm {
    ($name:ident, $ins:literal, $fmt:expr, $n:expr, $build:expr) => {
        #[test]
        fn $name() {
            require();
            let mut e = Emu::new(TestMode::Long64);
            let ats = load_imms(&mut e, $build);
            let mut rng = Rng::new(line!() as u64);
            for imm in 0..=255u8 {
                for mx in modes() {
                    for _ in 0..cases($n) {
                        let (x, y) = (rng.fvec($fmt), rng.fvec($fmt));
                        let want = with_imm!(imm, I => {
                            hostfp!(concat!($ins, " {a}, {b}, {i}"), x, y, mx, i = const I)
                        });
                        e.cpu.xmm[1] = x;
                        e.cpu.xmm[2] = y;
                        e.cpu.mxcsr = mx;
                        e.step(ats[imm as usize]);
                        let got = (e.cpu.xmm[1], e.cpu.mxcsr & 0x3f);
                        assert_eq!(
                            got, want,
                            "{} {imm:#x} {x:#034x} {y:#034x} mxcsr {mx:#x}",
                            $ins
                        );
                    }
                }
            }
        }
    };
}

diff_fp_imm!(dpps, "dpps", F32, 12, |a: Asm, i| a.dpps(xmm1, xmm2, i));
diff_fp_imm!(dppd, "dppd", F64, 12, |a: Asm, i| a.dppd(xmm1, xmm2, i));
diff_fp_imm!(roundps, "roundps", F32, 6, |a: Asm, i| a
    .roundps(xmm1, xmm2, i));
diff_fp_imm!(roundpd, "roundpd", F64, 6, |a: Asm, i| a
    .roundpd(xmm1, xmm2, i));
diff_fp_imm!(roundss, "roundss", F32, 6, |a: Asm, i| a
    .roundss(xmm1, xmm2, i));
diff_fp_imm!(roundsd, "roundsd", F64, 6, |a: Asm, i| a
    .roundsd(xmm1, xmm2, i));

// ---------------------------------------------------------------------
// SSE4.2
// ---------------------------------------------------------------------

/// PCMPxSTRx natively: returns (RCX, XMM0, RFLAGS) after the instruction
/// `kind` (0 ESTRI, 1 ESTRM, 2 ISTRI, 3 ISTRM, 4 ESTRI64, 5 ESTRM64).
#[allow(clippy::too_many_arguments)]
fn host_pcmpstr(
    kind: usize,
    imm: u8,
    a: u128,
    b: u128,
    len1: u64,
    len2: u64,
    cx0: u64,
    x0: u128,
    fin: u64,
) -> (u64, u128, u64) {
    let (mut c, mut z, f): (u64, __m128i, u64);
    c = cx0;
    z = m(x0);
    macro_rules! one {
        ($tmpl:expr, $I:ident) => {
            // SAFETY: only the status flags are loaded into RFLAGS; every
            // register the instruction writes is an output.
            unsafe {
                asm!("push {fin}", "popfq", $tmpl, "pushfq", "pop {f}",
                     fin = in(reg) fin, f = lateout(reg) f, i = const $I,
                     in("xmm1") m(a), in("xmm2") m(b), in("rax") len1, in("rdx") len2,
                     inout("rcx") c, inout("xmm0") z)
            }
        };
    }
    with_imm!(imm, I => match kind {
        0 => one!("pcmpestri xmm1, xmm2, {i}", I),
        1 => one!("pcmpestrm xmm1, xmm2, {i}", I),
        2 => one!("pcmpistri xmm1, xmm2, {i}", I),
        3 => one!("pcmpistrm xmm1, xmm2, {i}", I),
        4 => one!(".byte 0x66, 0x48, 0x0f, 0x3a, 0x61, 0xca, {i}", I),
        _ => one!(".byte 0x66, 0x48, 0x0f, 0x3a, 0x60, 0xca, {i}", I),
    });
    (c, u(z), f)
}

impl Rng {
    /// A length register: small signed values, saturation boundaries, and
    /// values whose upper half differs from the lower.
    fn strlen(&mut self) -> u64 {
        match self.below(6) {
            0..=2 => (self.below(41) as i64 - 20) as u64,
            3 => self.next(),
            4 => (self.next() & !0xffff_ffff) | self.below(20),
            _ => [
                0x8000_0000,
                0xffff_ffff,
                i64::MIN as u64,
                i32::MIN as i64 as u64,
                16,
                8,
                17,
                9,
                -16i64 as u64,
                -17i64 as u64,
            ][self.below(10) as usize],
        }
    }
}

#[test]
fn pcmpstr() {
    require();
    let mut e = Emu::new(TestMode::Long64);
    let loads: [Vec<At>; 6] = [
        load_imms(&mut e, |a, i| a.pcmpestri(xmm1, xmm2, i)),
        load_imms(&mut e, |a, i| a.pcmpestrm(xmm1, xmm2, i)),
        load_imms(&mut e, |a, i| a.pcmpistri(xmm1, xmm2, i)),
        load_imms(&mut e, |a, i| a.pcmpistrm(xmm1, xmm2, i)),
        load_imms(&mut e, |a, i| a.pcmpestri64(xmm1, xmm2, i)),
        load_imms(&mut e, |a, i| a.pcmpestrm64(xmm1, xmm2, i)),
    ];
    let mut rng = Rng::new(16);
    for imm in 0..=255u8 {
        for (kind, ats) in loads.iter().enumerate() {
            for _ in 0..cases(40) {
                let words = imm & 1 != 0;
                let a = rng.strvec(words);
                let b = if rng.below(4) == 0 {
                    // b contains a's prefix somewhere (equal ordered hits)
                    let sh = 8 * rng.below(16) as u32;
                    (a << sh) | (rng.strvec(words) & ((1u128 << sh) - 1))
                } else {
                    rng.strvec(words)
                };
                let (l1, l2, c0) = (rng.strlen(), rng.strlen(), rng.next());
                let x0 = rng.vec();
                let fin = rng.next() & flags::STATUS;
                let want = host_pcmpstr(kind, imm, a, b, l1, l2, c0, x0, fin);
                let c = &mut e.cpu;
                c.xmm[0] = x0;
                c.xmm[1] = a;
                c.xmm[2] = b;
                c.gpr[reg::RAX] = l1;
                c.gpr[reg::RDX] = l2;
                c.gpr[reg::RCX] = c0;
                c.rflags = (c.rflags & !flags::STATUS) | fin;
                e.step(ats[imm as usize]);
                let c = &e.cpu;
                let got = (c.gpr[reg::RCX], c.xmm[0], c.rflags & flags::STATUS);
                assert_eq!(
                    got,
                    (want.0, want.1, want.2 & flags::STATUS),
                    "kind {kind} imm {imm:#x} a {a:#034x} b {b:#034x} rax {l1:#x} rdx {l2:#x}"
                );
                assert_eq!((c.xmm[1], c.xmm[2]), (a, b));
            }
        }
    }
}

#[test]
fn crc32() {
    require();
    let mut e = Emu::new(TestMode::Long64);
    let ats = [
        e.load(|a| a.crc32(eax, bl)),
        e.load(|a| a.crc32(eax, bx)),
        e.load(|a| a.crc32(eax, ebx)),
        e.load(|a| a.crc32(rax, rbx)),
        e.load(|a| a.crc32(rax, bl)),
    ];
    // CRC32 needs no SSE state: run it with OSFXSR clear and TS/EM set.
    e.cpu.cr4 &= !cr::CR4_OSFXSR;
    e.cpu.cr0 |= cr::CR0_TS | cr::CR0_EM;
    let mut rng = Rng::new(17);
    for _ in 0..cases(20000) {
        let (c, d) = (rng.next(), rng.next());
        let (o8, o16, o32, o64, o64b): (u64, u64, u64, u64, u64);
        // SAFETY: general-register SSE4.2 instructions the host has.
        unsafe {
            asm!("mov {a:r}, {c}", "crc32 {a:e}, {d8}",
                 "mov {b:r}, {c}", "crc32 {b:e}, {d:x}",
                 "mov {e:r}, {c}", "crc32 {e:e}, {d:e}",
                 "mov {f:r}, {c}", "crc32 {f:r}, {d:r}",
                 "mov {g:r}, {c}", "crc32 {g:r}, {d8}",
                 c = in(reg) c, d = in(reg) d, d8 = in(reg_byte) d as u8,
                 a = out(reg) o8, b = out(reg) o16, e = out(reg) o32, f = out(reg) o64,
                 g = out(reg) o64b, options(pure, nomem, nostack));
        }
        let fin = rng.next() & flags::STATUS;
        for (at, want) in ats.iter().zip([o8, o16, o32, o64, o64b]) {
            e.cpu.gpr[reg::RAX] = c;
            e.cpu.gpr[reg::RBX] = d;
            e.cpu.rflags = (e.cpu.rflags & !flags::STATUS) | fin;
            e.step(*at);
            assert_eq!(e.cpu.gpr[reg::RAX], want, "crc32 {c:#x} {d:#x}");
            assert_eq!(e.cpu.rflags & flags::STATUS, fin, "flags unaffected");
        }
    }
}
