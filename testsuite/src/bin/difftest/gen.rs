//! Random instruction sequences.
//!
//! Instruction forms come from iced's `Code` list: every code whose mnemonic
//! belongs to a covered class and whose name spells its operands in the usual
//! way (`Add_rm32_imm8`, `Shld_rm16_r16_CL`, `Imul_r64_rm64_imm32`, ...) is a
//! template. String instructions are built with iced's string constructors.
//! A template's operands are filled with random registers (never RSP),
//! memory operands inside the scratch data (absolute, RIP-relative,
//! base+disp, base+index*scale+disp and 32-bit addressing; base and index
//! registers are loaded by MOVs emitted just before), and random immediates.

use iced_x86::{
    Code, CpuidFeature, Decoder, DecoderOptions, Encoder, EncodingKind, Instruction, MemoryOperand,
    Mnemonic, OpKind, Register, RepPrefixKind, RflagsBits,
};

use crate::fp::{self, FpState};
use crate::host::GPR64;
use crate::rng::Rng;

/// Instruction classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Alu,
    Atomic,
    Shift,
    MulDiv,
    Bits,
    Data,
    String,
    /// AAA AAS AAM AAD DAA DAS, run in compatibility mode (32-bit code).
    Bcd,
    /// x87 (CPUID FPU), FXSAVE/FXRSTOR (FXSR).
    X87,
    /// MMX (CPUID MMX).
    Mmx,
    /// SSE (CPUID SSE, including its MMX-register forms), SSE2, SSE3, SSSE3, SSE4.1, SSE4.2.
    Sse,
    Sse2,
    Sse3,
    Ssse3,
    Sse41,
    Sse42,
}

impl Class {
    pub const ALL: [Class; 16] = [
        Class::Alu,
        Class::Atomic,
        Class::Shift,
        Class::MulDiv,
        Class::Bits,
        Class::Data,
        Class::String,
        Class::Bcd,
        Class::X87,
        Class::Mmx,
        Class::Sse,
        Class::Sse2,
        Class::Sse3,
        Class::Ssse3,
        Class::Sse41,
        Class::Sse42,
    ];

    /// The x87/MMX/SSE classes.
    pub fn is_fp(self) -> bool {
        matches!(
            self,
            Class::X87
                | Class::Mmx
                | Class::Sse
                | Class::Sse2
                | Class::Sse3
                | Class::Ssse3
                | Class::Sse41
                | Class::Sse42
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::Alu => "alu",
            Class::Atomic => "xadd-cmpxchg",
            Class::Shift => "shift",
            Class::MulDiv => "muldiv",
            Class::Bits => "bits",
            Class::Data => "data",
            Class::String => "string",
            Class::Bcd => "bcd",
            Class::X87 => "x87",
            Class::Mmx => "mmx",
            Class::Sse => "sse",
            Class::Sse2 => "sse2",
            Class::Sse3 => "sse3",
            Class::Ssse3 => "ssse3",
            Class::Sse41 => "sse41",
            Class::Sse42 => "sse42",
        }
    }

    /// The host feature an FP class needs (checked with `is_x86_feature_detected!`).
    pub fn host_feature(self) -> Option<&'static str> {
        Some(match self {
            Class::X87 => "fxsr",
            Class::Mmx => "mmx",
            Class::Sse => "sse",
            Class::Sse2 => "sse2",
            Class::Sse3 => "sse3",
            Class::Ssse3 => "ssse3",
            Class::Sse41 => "sse4.1",
            Class::Sse42 => "sse4.2",
            _ => return None,
        })
    }

    /// Whether this host runs the class.
    pub fn host_has(self) -> bool {
        match self {
            Class::X87 => is_x86_feature_detected!("fxsr"),
            Class::Mmx => is_x86_feature_detected!("mmx"),
            Class::Sse => is_x86_feature_detected!("sse"),
            Class::Sse2 => is_x86_feature_detected!("sse2"),
            Class::Sse3 => is_x86_feature_detected!("sse3"),
            Class::Ssse3 => is_x86_feature_detected!("ssse3"),
            Class::Sse41 => is_x86_feature_detected!("sse4.1"),
            Class::Sse42 => is_x86_feature_detected!("sse4.2"),
            _ => true,
        }
    }
}

/// The FP class of an instruction form by its CPUID features (x87 first, so
/// FISTTP, which needs FPU and SSE3, is x87; SSE forms on MMX registers are SSE).
fn fp_class_of(feats: &[CpuidFeature]) -> Option<Class> {
    use CpuidFeature::*;
    let has = |f: CpuidFeature| feats.contains(&f);
    if has(FPU) || has(FPU287) || has(FPU387) || has(FPU287XL_ONLY) || has(FPU387SL_ONLY) {
        return Some(Class::X87);
    }
    if has(FXSR) || has(XSAVE) {
        return Some(Class::X87);
    }
    // Only the families covered here; anything with another feature too
    // (AVX, AES, PCLMULQDQ, ...) is out.
    let ok = feats
        .iter()
        .all(|f| matches!(f, MMX | SSE | SSE2 | SSE3 | SSSE3 | SSE4_1 | SSE4_2));
    if !ok {
        return None;
    }
    [
        (SSE4_2, Class::Sse42),
        (SSE4_1, Class::Sse41),
        (SSSE3, Class::Ssse3),
        (SSE3, Class::Sse3),
        (SSE2, Class::Sse2),
        (SSE, Class::Sse),
        (MMX, Class::Mmx),
    ]
    .iter()
    .find(|(f, _)| has(*f))
    .map(|(_, c)| *c)
}

/// Whether `insn` is an x87/MMX/SSE instruction.
pub fn is_fp_insn(insn: &Instruction) -> bool {
    fp_class_of(insn.cpuid_features()).is_some()
}

/// The excluded FP mnemonics with the reasons, for `--list`.
pub fn fp_exclusions() -> Vec<(String, &'static str)> {
    let mut v: Vec<(String, &'static str)> = Vec::new();
    for code in Code::values() {
        let mut i = Instruction::default();
        i.set_code(code);
        if i.encoding() != EncodingKind::Legacy || fp_class_of(i.cpuid_features()).is_none() {
            continue;
        }
        if let Some(why) = fp_excluded(i.mnemonic()) {
            let m = format!("{:?}", i.mnemonic()).to_uppercase();
            if !v.iter().any(|(n, _)| *n == m) {
                v.push((m, why));
            }
        }
    }
    v
}

/// Whether the host supports every CPUID feature of an FP form (the x87
/// forms of the 287XL/387SL, which every later CPU rejects with #UD, count
/// as supported: both sides must raise #UD).
fn host_supports(feats: &[CpuidFeature]) -> bool {
    use CpuidFeature::*;
    feats.iter().all(|f| match f {
        FPU | FPU287 | FPU387 | FPU287XL_ONLY | FPU387SL_ONLY => true,
        // FCOMI/FUCOMI and FCMOVcc are P6 x87 instructions gated on CMOV.
        CMOV => true,
        FXSR => is_x86_feature_detected!("fxsr"),
        XSAVE => is_x86_feature_detected!("xsave"),
        MMX => is_x86_feature_detected!("mmx"),
        SSE => is_x86_feature_detected!("sse"),
        SSE2 => is_x86_feature_detected!("sse2"),
        SSE3 => is_x86_feature_detected!("sse3"),
        SSSE3 => is_x86_feature_detected!("ssse3"),
        SSE4_1 => is_x86_feature_detected!("sse4.1"),
        SSE4_2 => is_x86_feature_detected!("sse4.2"),
        _ => false,
    })
}

/// FP forms left out, and why. Everything else of the legacy (non-VEX)
/// x87, FXSR, MMX and SSE–SSE4.2 encodings in iced's Code list is covered.
pub fn fp_excluded(m: Mnemonic) -> Option<&'static str> {
    use Mnemonic::*;
    Some(match m {
        // Not bit-exact by design: Intel specifies these only to within an
        // error bound (about 1 ulp of the 64-bit significand, SDM vol. 1
        // 8.3.10), and the low bits differ between microarchitectures.
        Fsin | Fcos | Fsincos | Fptan | Fpatan | F2xm1 | Fyl2x | Fyl2xp1 => {
            "x87 transcendental: accurate only to a documented error bound, not bit-exact"
        }
        // Approximations with relative error <= 1.5 * 2^-12 whose exact bits
        // are a table lookup that differs between CPU generations.
        Rcpps | Rcpss | Rsqrtps | Rsqrtss => {
            "approximate reciprocal (sqrt): implementation-specific table, not bit-exact"
        }
        // Not advertised by the emulator's CPUID (leaf 0xD sub-leaf 1 has
        // only XGETBV-with-ECX=1), so #UD there; XSAVES/XRSTORS are
        // privileged anyway.
        Xsaveopt | Xsaveopt64 | Xsavec | Xsavec64 | Xsaves | Xsaves64 | Xrstors | Xrstors64 => {
            "XSAVEOPT/XSAVEC/XSAVES/XRSTORS: not advertised by the emulator (#UD there)"
        }
        // XGETBV reads the host's XCR0 (x87|SSE|AVX|AVX-512...) and XINUSE,
        // which the harness cannot set (the emulator models XCR0 = x87|SSE);
        // XSETBV is privileged.
        Xgetbv | Xsetbv => {
            "XGETBV/XSETBV: the host's XCR0 is not the emulator's; XSETBV is privileged"
        }
        _ => return None,
    })
}

/// The class of a mnemonic, if covered.
fn class_of(m: Mnemonic) -> Option<Class> {
    use Mnemonic::*;
    Some(match m {
        Add | Adc | Sub | Sbb | Cmp | And | Or | Xor | Test | Inc | Dec | Neg | Not => Class::Alu,
        Xadd | Cmpxchg | Cmpxchg8b | Cmpxchg16b => Class::Atomic,
        Shl | Sal | Shr | Sar | Rol | Ror | Rcl | Rcr | Shld | Shrd => Class::Shift,
        Mul | Imul | Div | Idiv => Class::MulDiv,
        Bt | Bts | Btr | Btc | Bsf | Bsr | Popcnt | Lzcnt | Tzcnt => Class::Bits,
        Mov | Movzx | Movsx | Movsxd | Lea | Xchg | Bswap | Movbe | Cbw | Cwde | Cdqe | Cwd
        | Cdq | Cqo | Lahf | Sahf | Clc | Stc | Cmc | Cld | Std => Class::Data,
        Cmovo | Cmovno | Cmovb | Cmovae | Cmove | Cmovne | Cmovbe | Cmova | Cmovs | Cmovns
        | Cmovp | Cmovnp | Cmovl | Cmovge | Cmovle | Cmovg => Class::Data,
        Seto | Setno | Setb | Setae | Sete | Setne | Setbe | Seta | Sets | Setns | Setp | Setnp
        | Setl | Setge | Setle | Setg => Class::Data,
        _ => return None,
    })
}

/// Host CPU features that gate instructions.
#[derive(Clone, Copy, Debug)]
pub struct Features {
    pub movbe: bool,
    pub popcnt: bool,
    pub lzcnt: bool,
    pub tzcnt: bool,
    pub cx16: bool,
    pub lahf: bool,
}

impl Features {
    /// Reads CPUID.
    pub fn host() -> Features {
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        // SAFETY: CPUID exists on every x86-64 CPU (the intrinsic is safe on newer toolchains).
        #[allow(unused_unsafe)]
        let (l1, l7, e1) = unsafe { (__cpuid(1), __cpuid_count(7, 0), __cpuid(0x8000_0001)) };
        Features {
            movbe: l1.ecx & (1 << 22) != 0,
            popcnt: l1.ecx & (1 << 23) != 0,
            cx16: l1.ecx & (1 << 13) != 0,
            tzcnt: l7.ebx & (1 << 3) != 0,
            lzcnt: e1.ecx & (1 << 5) != 0,
            lahf: e1.ecx & 1 != 0,
        }
    }

    fn allows(&self, m: Mnemonic) -> bool {
        match m {
            Mnemonic::Movbe => self.movbe,
            Mnemonic::Popcnt => self.popcnt,
            Mnemonic::Lzcnt => self.lzcnt,
            Mnemonic::Tzcnt => self.tzcnt,
            Mnemonic::Cmpxchg16b => self.cx16,
            Mnemonic::Lahf | Mnemonic::Sahf => self.lahf,
            _ => true,
        }
    }
}

/// One operand slot of a template, parsed from the code's name.
#[derive(Clone, Copy, Debug)]
enum Tok {
    R(u8),
    Rm(u8),
    M(u8),
    Imm,
    Fixed(Register),
    One,
    /// XMM register; XMM register or memory of the given size.
    Xmm,
    XmmRm(u16),
    /// MMX register; MMX register or memory of the given size.
    Mm,
    MmRm(u16),
    /// ST(0); ST(i).
    St0,
    Sti,
    /// Memory only, of the given size (up to the 512 bytes of FXSAVE).
    Mx(u16),
    /// General register of the first size or memory of the second (`r32m16`).
    RegM(u8, u16),
}

/// String instruction kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Str {
    Movs,
    Stos,
    Lods,
    Cmps,
    Scas,
}

/// An instruction form the generator can instantiate.
#[derive(Clone, Debug)]
pub struct Template {
    pub code: Code,
    pub mnemonic: Mnemonic,
    pub class: Class,
    toks: Vec<Tok>,
    /// String form: kind, element size, address size, REP kind.
    string: Option<(Str, u8, u32, RepPrefixKind)>,
}

impl Template {
    /// Short description for listings.
    pub fn describe(&self) -> String {
        match self.string {
            Some((_, _, asz, rep)) => format!("{:?} a{asz} {rep:?}", self.code),
            None => format!("{:?}", self.code),
        }
    }
}

fn parse(code: Code) -> Option<Vec<Tok>> {
    let name = format!("{code:?}");
    let mut toks = Vec::new();
    for p in name.split('_').skip(1) {
        toks.push(match p {
            "r8" => Tok::R(1),
            "r16" => Tok::R(2),
            "r32" => Tok::R(4),
            "r64" => Tok::R(8),
            "rm8" => Tok::Rm(1),
            "rm16" => Tok::Rm(2),
            "rm32" => Tok::Rm(4),
            "rm64" => Tok::Rm(8),
            "m8" => Tok::M(1),
            "m16" => Tok::M(2),
            "m32" => Tok::M(4),
            "m64" => Tok::M(8),
            "m128" => Tok::M(16),
            "m" => Tok::M(0),
            "imm8" | "imm16" | "imm32" | "imm64" => Tok::Imm,
            "AL" => Tok::Fixed(Register::AL),
            "AX" => Tok::Fixed(Register::AX),
            "EAX" => Tok::Fixed(Register::EAX),
            "RAX" => Tok::Fixed(Register::RAX),
            "CL" => Tok::Fixed(Register::CL),
            "1" => Tok::One,
            // Alternative encodings of the same instruction.
            "82" | "F6r1" | "F7r1" => continue,
            _ => return None,
        });
    }
    Some(toks)
}

/// Builds every template for the covered classes that this host supports.
/// `with_excluded`: also the FP forms [`fp_excluded`] leaves out (to measure them).
pub fn templates(features: &Features, with_excluded: bool) -> Vec<Template> {
    let mut out = Vec::new();
    for code in Code::values() {
        // (Instruction::with debug-asserts an operand-less code.)
        let mut probe = Instruction::default();
        probe.set_code(code);
        let m = probe.mnemonic();
        let Some(class) = class_of(m) else { continue };
        if !features.allows(m) {
            continue;
        }
        let Some(toks) = parse(code) else { continue };
        if format!("{code:?}").starts_with("Cmpxchg486") {
            // 0F A6/A7: only on early 486s, invalid in 64-bit mode.
            continue;
        }
        out.push(Template {
            code,
            mnemonic: m,
            class,
            toks,
            string: None,
        });
    }
    out.extend(fp_templates(with_excluded));
    for kind in [Str::Movs, Str::Stos, Str::Lods, Str::Cmps, Str::Scas] {
        for size in [1u8, 2, 4, 8] {
            for asz in [64u32, 32] {
                let reps: &[RepPrefixKind] = match kind {
                    Str::Cmps | Str::Scas => &[
                        RepPrefixKind::None,
                        RepPrefixKind::Repe,
                        RepPrefixKind::Repne,
                    ],
                    _ => &[RepPrefixKind::None, RepPrefixKind::Repe],
                };
                for &rep in reps {
                    let Ok(i) = string_insn(kind, size, asz, rep) else {
                        continue;
                    };
                    out.push(Template {
                        code: i.code(),
                        mnemonic: i.mnemonic(),
                        class: Class::String,
                        toks: Vec::new(),
                        string: Some((kind, size, asz, rep)),
                    });
                }
            }
        }
    }
    out
}

/// The operand tokens of an x87/MMX/SSE code's name.
fn parse_fp(code: Code) -> Option<Vec<Tok>> {
    let name = format!("{code:?}");
    let mut toks = Vec::new();
    for p in name.split('_').skip(1) {
        toks.push(match p {
            "xmm" => Tok::Xmm,
            "xmmm128" => Tok::XmmRm(16),
            "xmmm64" => Tok::XmmRm(8),
            "xmmm32" => Tok::XmmRm(4),
            "xmmm16" => Tok::XmmRm(2),
            "mm" => Tok::Mm,
            "mmm64" => Tok::MmRm(8),
            "mmm32" => Tok::MmRm(4),
            "st0" => Tok::St0,
            "sti" => Tok::Sti,
            "m8" => Tok::Mx(1),
            "m16" | "m16int" | "m2byte" => Tok::Mx(2),
            "m32" | "m32fp" | "m32int" => Tok::Mx(4),
            "m64" | "m64fp" | "m64int" => Tok::Mx(8),
            "m80fp" | "m80bcd" => Tok::Mx(10),
            "m128" => Tok::Mx(16),
            "m14byte" => Tok::Mx(14),
            "m28byte" => Tok::Mx(28),
            "m94byte" => Tok::Mx(94),
            "m108byte" => Tok::Mx(108),
            "m512byte" => Tok::Mx(512),
            // XSAVE/XRSTOR: the legacy region and the header (x87 and SSE only).
            "mem" => Tok::Mx(576),
            "r32" => Tok::R(4),
            "r64" => Tok::R(8),
            "rm8" => Tok::Rm(1),
            "rm16" => Tok::Rm(2),
            "rm32" => Tok::Rm(4),
            "rm64" => Tok::Rm(8),
            "r32m8" => Tok::RegM(4, 1),
            "r64m8" => Tok::RegM(8, 1),
            "r32m16" => Tok::RegM(4, 2),
            "r64m16" => Tok::RegM(8, 2),
            "r64m32" => Tok::RegM(8, 4),
            "imm8" => Tok::Imm,
            "AX" => Tok::Fixed(Register::AX),
            // MASKMOVQ/MASKMOVDQU's implicit [RDI]: built by `maskmov_instance`.
            "rDI" => continue,
            // Alternative encodings (`Fcom_st0_sti_DCD0`, `Lfence_E9`, ...).
            p if (p.len() == 2 || p.len() == 4)
                && p.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()) =>
            {
                continue
            }
            _ => return None,
        });
    }
    Some(toks)
}

/// Every legacy-encoded x87, FXSR, MMX and SSE–SSE4.2 form this host
/// supports, less [`fp_excluded`].
fn fp_templates(with_excluded: bool) -> Vec<Template> {
    let mut out = Vec::new();
    for code in Code::values() {
        let mut probe = Instruction::default();
        probe.set_code(code);
        if probe.encoding() != EncodingKind::Legacy {
            continue;
        }
        let feats = probe.cpuid_features();
        let Some(class) = fp_class_of(feats) else {
            continue;
        };
        let m = probe.mnemonic();
        if (fp_excluded(m).is_some() && !with_excluded) || !host_supports(feats) {
            continue;
        }
        let Some(toks) = parse_fp(code) else {
            eprintln!("difftest: cannot parse the operands of {code:?}; left out");
            continue;
        };
        out.push(Template {
            code,
            mnemonic: m,
            class,
            toks,
            string: None,
        });
    }
    // WAIT/FWAIT on its own (not an x87 feature in iced's tables): raises
    // #MF for a pending unmasked x87 exception.
    out.push(Template {
        code: Code::Wait,
        mnemonic: Mnemonic::Wait,
        class: Class::X87,
        toks: Vec::new(),
        string: None,
    });
    out
}

fn string_insn(
    kind: Str,
    size: u8,
    asz: u32,
    rep: RepPrefixKind,
) -> Result<Instruction, iced_x86::IcedError> {
    let seg = Register::None;
    match (kind, size) {
        (Str::Movs, 1) => Instruction::with_movsb(asz, seg, rep),
        (Str::Movs, 2) => Instruction::with_movsw(asz, seg, rep),
        (Str::Movs, 4) => Instruction::with_movsd(asz, seg, rep),
        (Str::Movs, _) => Instruction::with_movsq(asz, seg, rep),
        (Str::Stos, 1) => Instruction::with_stosb(asz, rep),
        (Str::Stos, 2) => Instruction::with_stosw(asz, rep),
        (Str::Stos, 4) => Instruction::with_stosd(asz, rep),
        (Str::Stos, _) => Instruction::with_stosq(asz, rep),
        (Str::Lods, 1) => Instruction::with_lodsb(asz, seg, rep),
        (Str::Lods, 2) => Instruction::with_lodsw(asz, seg, rep),
        (Str::Lods, 4) => Instruction::with_lodsd(asz, seg, rep),
        (Str::Lods, _) => Instruction::with_lodsq(asz, seg, rep),
        (Str::Cmps, 1) => Instruction::with_cmpsb(asz, seg, rep),
        (Str::Cmps, 2) => Instruction::with_cmpsw(asz, seg, rep),
        (Str::Cmps, 4) => Instruction::with_cmpsd(asz, seg, rep),
        (Str::Cmps, _) => Instruction::with_cmpsq(asz, seg, rep),
        (Str::Scas, 1) => Instruction::with_scasb(asz, rep),
        (Str::Scas, 2) => Instruction::with_scasw(asz, rep),
        (Str::Scas, 4) => Instruction::with_scasd(asz, rep),
        (Str::Scas, _) => Instruction::with_scasq(asz, rep),
    }
}

/// iced's RflagsBits → RFLAGS bits.
pub fn eflags(b: u32) -> u64 {
    let mut f = 0;
    for (i, e) in [
        (RflagsBits::OF, 1u64 << 11),
        (RflagsBits::SF, 1 << 7),
        (RflagsBits::ZF, 1 << 6),
        (RflagsBits::AF, 1 << 4),
        (RflagsBits::CF, 1),
        (RflagsBits::PF, 1 << 2),
        (RflagsBits::DF, 1 << 10),
    ] {
        if b & i != 0 {
            f |= e;
        }
    }
    f
}

/// Names of the status flags and DF set in `f`.
pub fn flag_names(f: u64) -> String {
    let mut s = Vec::new();
    for (b, n) in [
        (0x800u64, "OF"),
        (0x400, "DF"),
        (0x80, "SF"),
        (0x40, "ZF"),
        (0x10, "AF"),
        (0x4, "PF"),
        (0x1, "CF"),
    ] {
        if f & b != 0 {
            s.push(n);
        }
    }
    if s.is_empty() {
        "-".into()
    } else {
        s.join(" ")
    }
}

/// Whether `insn` may leave its flags unchanged depending on a runtime
/// count (shift/rotate by CL whose masked count may be zero).
/// REP-prefixed CMPS/SCAS with a zero count change no flags either.
fn conditional_flags(insn: &Instruction) -> bool {
    use Mnemonic::*;
    match insn.mnemonic() {
        Shl | Sal | Shr | Sar | Rol | Ror | Rcl | Rcr | Shld | Shrd => {
            insn.op_kind(insn.op_count() - 1) == OpKind::Register
        }
        Cmpsb | Cmpsw | Cmpsd | Cmpsq | Scasb | Scasw | Scasd | Scasq => {
            insn.has_repe_prefix() || insn.has_repne_prefix()
        }
        _ => false,
    }
}

/// Flags whose value is undefined after `insn`, given those undefined before.
pub fn poison_after(poison: u64, insn: &Instruction) -> u64 {
    let undef = eflags(insn.rflags_undefined());
    if conditional_flags(insn) {
        poison | undef
    } else {
        (poison & !eflags(insn.rflags_modified())) | undef
    }
}

/// An FCW value for FLDCW/FLDENV/FRSTOR/FXRSTOR: exceptions masked, random
/// precision and rounding control and reserved bits; now and then some
/// exceptions unmasked.
fn fcw_value(rng: &mut Rng) -> u16 {
    let mut v = rng.next() as u16 | 0x3f;
    if rng.chance(4) {
        v &= !(rng.next() as u16 & 0x3f);
    }
    v
}

/// An FSW value for FLDENV/FRSTOR/FXRSTOR: random TOP, condition codes and
/// flags, with ES and B set exactly when an unmasked flag (under `cw`) is.
fn fsw_value(rng: &mut Rng, cw: u16) -> u16 {
    let mut v = rng.next() as u16 & 0x7f7f;
    if rng.chance(50) {
        v &= !0x7f;
    }
    if v & !cw & 0x3f != 0 {
        v |= 0x8080;
    }
    v
}

/// A generated test case.
#[derive(Clone)]
pub struct Case {
    pub gpr: [u64; 16],
    pub rflags: u64,
    /// The x87/MMX/SSE state.
    pub fp: FpState,
    pub data: Vec<u8>,
    pub code: Vec<u8>,
    pub insns: Vec<Instruction>,
    /// Flags undefined before each instruction (same order as `insns`), and at the end.
    pub poison: Vec<u64>,
    pub final_poison: u64,
}

/// Operand value while building an instruction.
#[derive(Clone, Copy)]
enum Op {
    Reg(Register),
    Mem(MemoryOperand),
    Imm(i32),
}

fn build(code: Code, ops: &[Op]) -> Option<Instruction> {
    use Op::*;
    let r = match ops {
        [] => {
            let mut i = Instruction::default();
            i.set_code(code);
            Ok(i)
        }
        [Reg(a)] => Instruction::with1(code, *a),
        [Mem(a)] => Instruction::with1(code, *a),
        [Imm(a)] => Instruction::with1(code, *a),
        [Reg(a), Reg(b)] => Instruction::with2(code, *a, *b),
        [Reg(a), Mem(b)] => Instruction::with2(code, *a, *b),
        [Mem(a), Reg(b)] => Instruction::with2(code, *a, *b),
        [Reg(a), Imm(b)] => Instruction::with2(code, *a, *b),
        [Mem(a), Imm(b)] => Instruction::with2(code, *a, *b),
        [Reg(a), Reg(b), Reg(c)] => Instruction::with3(code, *a, *b, *c),
        [Reg(a), Reg(b), Imm(c)] => Instruction::with3(code, *a, *b, *c),
        [Reg(a), Mem(b), Imm(c)] => Instruction::with3(code, *a, *b, *c),
        [Mem(a), Reg(b), Reg(c)] => Instruction::with3(code, *a, *b, *c),
        [Mem(a), Reg(b), Imm(c)] => Instruction::with3(code, *a, *b, *c),
        _ => return None,
    };
    r.ok()
}

/// Register of `size` bytes for GPR index `i` (0–15; 8-bit uses SPL..R15L, not AH..BH).
fn reg_of(i: usize, size: u8) -> Register {
    let r = GPR64[i];
    match size {
        8 => r,
        4 => r.full_register32(),
        2 => match i {
            0 => Register::AX,
            1 => Register::CX,
            2 => Register::DX,
            3 => Register::BX,
            4 => Register::SP,
            5 => Register::BP,
            6 => Register::SI,
            7 => Register::DI,
            _ => [
                Register::R8W,
                Register::R9W,
                Register::R10W,
                Register::R11W,
                Register::R12W,
                Register::R13W,
                Register::R14W,
                Register::R15W,
            ][i - 8],
        },
        _ => [
            Register::AL,
            Register::CL,
            Register::DL,
            Register::BL,
            Register::SPL,
            Register::BPL,
            Register::SIL,
            Register::DIL,
            Register::R8L,
            Register::R9L,
            Register::R10L,
            Register::R11L,
            Register::R12L,
            Register::R13L,
            Register::R14L,
            Register::R15L,
        ][i],
    }
}

fn mov_imm64(r: usize, v: u64) -> Instruction {
    Instruction::with2(Code::Mov_r64_imm64, GPR64[r], v).expect("mov r64, imm64")
}

/// The generator.
pub struct Generator {
    pub templates: Vec<Template>,
    /// Templates that also exist in 32-bit code (same order as `templates`).
    ok32: Vec<bool>,
    by_class: Vec<Vec<usize>>,
    by_class32: Vec<Vec<usize>>,
    data_base: u64,
    data_size: u64,
    strict: bool,
    /// Most instructions per sequence (not counting setups).
    pub max_len: u64,
    /// Include AAA..DAS in 32-bit cases.
    pub bcd: bool,
    /// The host thread's FS and GS bases (for FS:/GS: memory operands).
    pub fs_base: u64,
    pub gs_base: u64,
    /// Generating 32-bit code (compatibility mode) right now.
    w32: bool,
    enc: Encoder,
    enc32: Encoder,
    /// The host's MXCSR_MASK (MXCSR values must stay inside it).
    pub mxcsr_mask: u32,
}

impl Generator {
    pub fn new(
        templates: Vec<Template>,
        data_base: u64,
        data_size: u64,
        strict: bool,
    ) -> Generator {
        let mut g = Generator {
            templates,
            ok32: Vec::new(),
            by_class: Vec::new(),
            by_class32: Vec::new(),
            data_base,
            data_size,
            strict,
            max_len: 8,
            bcd: true,
            fs_base: 0,
            gs_base: 0,
            w32: false,
            enc: Encoder::new(64),
            enc32: Encoder::new(32),
            mxcsr_mask: 0xffbf,
        };
        // Which forms exist in 32-bit code: try to encode a few instances.
        let mut rng = Rng::new(0x3232);
        g.w32 = true;
        let mut ok32 = Vec::with_capacity(g.templates.len());
        for t in &g.templates {
            let mut enc = Encoder::new(32);
            let ok = (0..16).any(|_| {
                g.instance(&mut rng, t)
                    .is_some_and(|group| group.iter().all(|i| enc.encode(i, 0x1000).is_ok()))
            });
            ok32.push(ok);
        }
        g.w32 = false;
        g.ok32 = ok32;
        g.index();
        g
    }

    fn index(&mut self) {
        let group = |ok: &dyn Fn(usize) -> bool| -> Vec<Vec<usize>> {
            Class::ALL
                .iter()
                .map(|c| {
                    (0..self.templates.len())
                        .filter(|&i| self.templates[i].class == *c && ok(i))
                        .collect::<Vec<_>>()
                })
                .filter(|v| !v.is_empty())
                .collect()
        };
        let by_class = group(&|_| true);
        let by_class32 = group(&|i| self.ok32[i]);
        self.by_class = by_class;
        self.by_class32 = by_class32;
    }

    /// Keeps only the templates `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&Template) -> bool) {
        let mut ok32 = self.ok32.iter();
        let mut kept32 = Vec::new();
        self.templates.retain(|t| {
            let o = *ok32.next().unwrap_or(&false);
            let k = keep(t);
            if k {
                kept32.push(o);
            }
            k
        });
        self.ok32 = kept32;
        self.index();
    }

    /// Whether 32-bit cases have anything to run.
    pub fn has32(&self) -> bool {
        self.bcd || !self.by_class32.is_empty()
    }

    /// Number of forms that also run as 32-bit code.
    pub fn count32(&self) -> usize {
        self.ok32.iter().filter(|o| **o).count()
    }

    /// A random GPR index other than RSP and `avoid` (0–7 in 32-bit code).
    fn reg_index(&self, rng: &mut Rng, avoid: &[usize]) -> usize {
        let n = if self.w32 { 8 } else { 16 };
        loop {
            let i = rng.below(n) as usize;
            if i != 4 && !avoid.contains(&i) {
                return i;
            }
        }
    }

    /// A random register of `size` bytes (8-bit includes AH..BH sometimes).
    fn reg(&self, rng: &mut Rng, size: u8, avoid: &[usize]) -> Register {
        if size == 1 && self.w32 {
            // No REX in 32-bit code: AL..BL and AH..BH only.
            return *rng.pick(&[
                Register::AL,
                Register::CL,
                Register::DL,
                Register::BL,
                Register::AH,
                Register::CH,
                Register::DH,
                Register::BH,
            ]);
        }
        if size == 1 && rng.chance(15) {
            return *rng.pick(&[Register::AH, Register::CH, Register::DH, Register::BH]);
        }
        reg_of(self.reg_index(rng, avoid), size)
    }

    /// `mov reg, v` with the register's full width (32 bits in 32-bit code).
    fn mov_imm(&self, r: usize, v: u64) -> Instruction {
        if self.w32 {
            Instruction::with2(Code::Mov_r32_imm32, GPR64[r].full_register32(), v as u32)
                .expect("mov r32, imm32")
        } else {
            mov_imm64(r, v)
        }
    }

    /// A memory operand of `size` bytes inside the scratch data, with the
    /// MOVs that load its base/index registers. Returns the GPR indices used.
    fn mem(
        &self,
        rng: &mut Rng,
        size: u16,
        align: u64,
        avoid: &[usize],
        setup: &mut Vec<Instruction>,
    ) -> (MemoryOperand, Vec<usize>) {
        let lo = self.data_base + 0x1400;
        let span = self.data_size - 0x2800;
        let mut a = lo + rng.below(span);
        if size > 1 && rng.chance(50) {
            a &= !(size.min(8) as u64 - 1);
        }
        if align > 1 && rng.chance(90) {
            a &= !(align - 1);
        }
        let disp: i64 = match rng.below(3) {
            0 => 0,
            1 => rng.below(256) as i64 - 128,
            _ => rng.below(0x2000) as i64 - 0x1000,
        };
        if self.w32 {
            // 32-bit code: absolute, base+disp, base+index*scale+disp (32-bit registers).
            return match rng.below(3) {
                0 => (MemoryOperand::with_displ(a, 4), vec![]),
                1 => {
                    let b = self.reg_index(rng, avoid);
                    setup.push(self.mov_imm(b, a.wrapping_sub(disp as u64)));
                    (
                        MemoryOperand::with_base_displ(GPR64[b].full_register32(), disp),
                        vec![b],
                    )
                }
                _ => {
                    let b = self.reg_index(rng, avoid);
                    let mut av = avoid.to_vec();
                    av.push(b);
                    let x = self.reg_index(rng, &av);
                    let scale = *rng.pick(&[1u32, 2, 4, 8]);
                    let idx = rng.below(129) as i64 - 64;
                    let base = a
                        .wrapping_sub(disp as u64)
                        .wrapping_sub((idx * scale as i64) as u64);
                    setup.push(self.mov_imm(b, base));
                    setup.push(self.mov_imm(x, idx as u64));
                    (
                        MemoryOperand::with_base_index_scale_displ_size(
                            GPR64[b].full_register32(),
                            GPR64[x].full_register32(),
                            scale,
                            disp,
                            1,
                        ),
                        vec![b, x],
                    )
                }
            };
        }
        let (mut mo, used) = match rng.below(100) {
            0..=4 => {
                // FS/GS override: the host's segment base is added (64-bit mode honours it).
                let (seg, sbase) = if rng.chance(50) {
                    (Register::FS, self.fs_base)
                } else {
                    (Register::GS, self.gs_base)
                };
                let b = self.reg_index(rng, avoid);
                setup.push(mov_imm64(
                    b,
                    a.wrapping_sub(disp as u64).wrapping_sub(sbase),
                ));
                let mut mo = MemoryOperand::with_base_displ(GPR64[b], disp);
                mo.segment_prefix = seg;
                return (mo, vec![b]);
            }
            5..=19 => (MemoryOperand::with_displ(a, 4), vec![]),
            20..=34 => (
                MemoryOperand::with_base_displ(Register::RIP, a as i64),
                vec![],
            ),
            35..=69 => {
                let b = self.reg_index(rng, avoid);
                setup.push(mov_imm64(b, a.wrapping_sub(disp as u64)));
                (MemoryOperand::with_base_displ(GPR64[b], disp), vec![b])
            }
            70..=89 => {
                let b = self.reg_index(rng, avoid);
                let mut av = avoid.to_vec();
                av.push(b);
                let x = self.reg_index(rng, &av);
                let scale = *rng.pick(&[1u32, 2, 4, 8]);
                let idx = rng.below(129) as i64 - 64;
                let base = a
                    .wrapping_sub(disp as u64)
                    .wrapping_sub((idx * scale as i64) as u64);
                setup.push(mov_imm64(b, base));
                setup.push(mov_imm64(x, idx as u64));
                (
                    MemoryOperand::with_base_index_scale_displ_size(
                        GPR64[b], GPR64[x], scale, disp, 1,
                    ),
                    vec![b, x],
                )
            }
            _ => {
                // 32-bit addressing (67 prefix); the register's upper half is garbage.
                let b = self.reg_index(rng, avoid);
                let v = (a.wrapping_sub(disp as u64) & 0xffff_ffff) | (rng.next() << 32);
                setup.push(mov_imm64(b, v));
                (
                    MemoryOperand::with_base_displ(GPR64[b].full_register32(), disp),
                    vec![b],
                )
            }
        };
        if rng.chance(5) {
            // A segment override that 64-bit mode ignores (base 0, no limit).
            mo.segment_prefix =
                *rng.pick(&[Register::ES, Register::CS, Register::SS, Register::DS]);
        }
        (mo, used)
    }

    /// Random immediates for every immediate operand (the `1` of shift-by-one forms stays).
    fn immediates(&self, rng: &mut Rng, insn: &mut Instruction, shift_like: bool) {
        for i in 0..insn.op_count() {
            match insn.op_kind(i) {
                OpKind::Immediate8 => {
                    if insn.immediate8() == 1 && self.is_by_one(insn) {
                        continue;
                    }
                    let v = if shift_like && rng.chance(60) {
                        rng.below(70) as u8
                    } else {
                        rng.value() as u8
                    };
                    insn.set_immediate8(v);
                }
                OpKind::Immediate8to16 | OpKind::Immediate8to32 | OpKind::Immediate8to64 => {
                    insn.set_immediate8(rng.value() as u8)
                }
                OpKind::Immediate16 => insn.set_immediate16(rng.value() as u16),
                OpKind::Immediate32 | OpKind::Immediate32to64 => {
                    insn.set_immediate32(rng.value() as u32)
                }
                OpKind::Immediate64 => insn.set_immediate64(rng.value()),
                _ => {}
            }
        }
    }

    fn is_by_one(&self, insn: &Instruction) -> bool {
        format!("{:?}", insn.code()).ends_with("_1")
    }

    /// One instance of template `t`: setup instructions followed by the instruction itself.
    fn instance(&self, rng: &mut Rng, t: &Template) -> Option<Vec<Instruction>> {
        if let Some((kind, size, asz, rep)) = t.string {
            return self.string_instance(rng, kind, size, asz, rep);
        }
        if t.class.is_fp() {
            return self.fp_instance(rng, t);
        }
        use Mnemonic::*;
        let m = t.mnemonic;
        let mut value_setup = Vec::new();
        let mut addr_setup = Vec::new();
        let mut post_setup = Vec::new();
        // Registers whose values the instruction needs intact: keep them out of addressing.
        let avoid: Vec<usize> = match m {
            Mul | Imul | Div | Idiv | Cmpxchg | Cmpxchg8b | Cmpxchg16b => vec![0, 2],
            _ => vec![],
        };
        let mem_slot = t
            .toks
            .iter()
            .position(|k| matches!(k, Tok::M(_)))
            .or_else(|| {
                let p = t.toks.iter().position(|k| matches!(k, Tok::Rm(_)))?;
                rng.chance(40).then_some(p)
            });
        let mut used = Vec::new();
        let mut mem = None;
        if let Some(p) = mem_slot {
            let size = match t.toks[p] {
                Tok::M(s) | Tok::Rm(s) => s,
                _ => 0,
            };
            let align = if m == Cmpxchg16b { 16 } else { 0 };
            let (mo, u) = self.mem(rng, size as u16, align, &avoid, &mut addr_setup);
            mem = Some(mo);
            used = u;
        }
        let bt_mem_reg = matches!(m, Bt | Bts | Btr | Btc)
            && mem.is_some()
            && matches!(t.toks.get(1), Some(Tok::R(_)));
        let mut ops = Vec::new();
        for (i, k) in t.toks.iter().enumerate() {
            ops.push(match *k {
                Tok::M(_) => Op::Mem(mem?),
                Tok::Rm(_) if Some(i) == mem_slot => Op::Mem(mem?),
                Tok::R(s) | Tok::Rm(s) => {
                    if bt_mem_reg && i == 1 {
                        // The bit offset register: keep the target inside the scratch data.
                        let r = self.reg_index(rng, &used);
                        let room = 0x1000i64 * 8;
                        let off = rng.below(2 * room as u64) as i64 - room;
                        let v = match s {
                            2 => rng.next(),
                            4 => (off as u64 & 0xffff_ffff) | (rng.next() << 32),
                            _ => off as u64,
                        };
                        value_setup.push(self.mov_imm(r, v));
                        Op::Reg(reg_of(r, s))
                    } else {
                        Op::Reg(self.reg(rng, s, &[]))
                    }
                }
                Tok::Imm => Op::Imm(0),
                Tok::One => Op::Imm(1),
                Tok::Fixed(r) => Op::Reg(r),
                // FP operands: only in FP templates (`fp_instance`).
                _ => return None,
            });
        }
        let mut insn = build(t.code, &ops)?;
        let shift_like = t.class == Class::Shift;
        self.immediates(rng, &mut insn, shift_like);
        // Lock prefixes: usually where allowed, rarely elsewhere (#UD on both sides).
        let lockable = matches!(
            m,
            Add | Adc
                | And
                | Btc
                | Btr
                | Bts
                | Cmpxchg
                | Cmpxchg8b
                | Cmpxchg16b
                | Dec
                | Inc
                | Neg
                | Not
                | Or
                | Sbb
                | Sub
                | Xor
                | Xadd
                | Xchg
        );
        if (lockable && insn.op0_kind() == OpKind::Memory && rng.chance(30)) || rng.chance(1) {
            insn.set_has_lock_prefix(true);
        }
        // Value setups that make the interesting paths likely.
        let size = match t.toks.first() {
            Some(Tok::R(s) | Tok::Rm(s) | Tok::M(s)) => *s,
            _ => 8,
        };
        match m {
            Shl | Sal | Shr | Sar | Rol | Ror | Rcl | Rcr | Shld | Shrd
                if insn.op_kind(insn.op_count() - 1) == OpKind::Register && rng.chance(50) =>
            {
                value_setup.push(
                    Instruction::with2(Code::Mov_r8_imm8, Register::CL, rng.below(70) as u32)
                        .ok()?,
                );
            }
            Div | Idiv if rng.chance(60) => {
                let signed = m == Idiv;
                value_setup.push(match (size, signed) {
                    (1, false) => {
                        Instruction::with2(Code::Movzx_r32_rm8, Register::EAX, Register::AL).ok()?
                    }
                    (1, true) => Instruction::with(Code::Cbw),
                    (2, true) => Instruction::with(Code::Cwd),
                    (4, true) => Instruction::with(Code::Cdq),
                    (8, true) => Instruction::with(Code::Cqo),
                    _ => {
                        Instruction::with2(Code::Xor_r32_rm32, Register::EDX, Register::EDX).ok()?
                    }
                });
            }
            Cmpxchg if rng.chance(50) => {
                let acc = match size {
                    1 => Register::AL,
                    2 => Register::AX,
                    4 => Register::EAX,
                    _ => Register::RAX,
                };
                let code = match size {
                    1 => Code::Mov_r8_rm8,
                    2 => Code::Mov_r16_rm16,
                    4 => Code::Mov_r32_rm32,
                    _ => Code::Mov_r64_rm64,
                };
                let src = if insn.op0_kind() == OpKind::Memory {
                    Op::Mem(mem?)
                } else {
                    Op::Reg(insn.op0_register())
                };
                post_setup.push(build(code, &[Op::Reg(acc), src])?);
            }
            Cmpxchg8b | Cmpxchg16b if rng.chance(50) => {
                let mo = mem?;
                let (code, a, d, step) = if m == Cmpxchg8b {
                    (Code::Mov_r32_rm32, Register::EAX, Register::EDX, 4)
                } else {
                    (Code::Mov_r64_rm64, Register::RAX, Register::RDX, 8)
                };
                let mut hi = mo;
                hi.displacement = hi.displacement.wrapping_add(step);
                post_setup.push(Instruction::with2(code, a, mo).ok()?);
                post_setup.push(Instruction::with2(code, d, hi).ok()?);
            }
            _ => {}
        }
        let mut out = value_setup;
        out.extend(addr_setup);
        out.extend(post_setup);
        out.push(insn);
        Some(out)
    }

    /// A random XMM register (XMM0–7 in 32-bit code; half the time XMM0–3,
    /// so that instructions of a sequence feed each other).
    fn xmm(&self, rng: &mut Rng) -> Register {
        let n = if rng.chance(50) {
            4
        } else if self.w32 {
            8
        } else {
            16
        };
        Register::XMM0 + rng.below(n) as u32
    }

    fn mm(&self, rng: &mut Rng) -> Register {
        Register::MM0 + rng.below(8) as u32
    }

    /// `mov size ptr [mo + off], v` (size 2 or 4).
    fn mov_mem(mo: MemoryOperand, off: i64, size: u8, v: u32) -> Option<Instruction> {
        let mut m = mo;
        m.displacement = m.displacement.wrapping_add(off);
        let code = if size == 2 {
            Code::Mov_rm16_imm16
        } else {
            Code::Mov_rm32_imm32
        };
        build(code, &[Op::Mem(m), Op::Imm(v as i32)])
    }

    /// One instance of an x87/MMX/SSE template.
    fn fp_instance(&self, rng: &mut Rng, t: &Template) -> Option<Vec<Instruction>> {
        use Mnemonic::*;
        let m = t.mnemonic;
        if matches!(m, Maskmovq | Maskmovdqu) {
            return self.maskmov_instance(rng, t);
        }
        let mut value_setup = Vec::new();
        let mut addr_setup = Vec::new();
        let mut post_setup = Vec::new();
        let mut after = Vec::new();
        // PCMPESTRx read EAX/EDX (the string lengths), XSAVE/XRSTOR the
        // requested-feature bitmap: not for addressing.
        let avoid: Vec<usize> = match m {
            Pcmpestri | Pcmpestri64 | Pcmpestrm | Pcmpestrm64 | Xsave | Xsave64 | Xrstor
            | Xrstor64 => vec![0, 2],
            _ => vec![],
        };
        let mem_slot = t
            .toks
            .iter()
            .position(|k| matches!(k, Tok::Mx(_)))
            .or_else(|| {
                let p = t.toks.iter().position(|k| {
                    matches!(k, Tok::XmmRm(_) | Tok::MmRm(_) | Tok::Rm(_) | Tok::RegM(..))
                })?;
                rng.chance(45).then_some(p)
            });
        let mut mem = None;
        if let Some(p) = mem_slot {
            let size = match t.toks[p] {
                Tok::Mx(s) | Tok::XmmRm(s) | Tok::MmRm(s) | Tok::RegM(_, s) => s,
                Tok::Rm(s) => s as u16,
                _ => 0,
            };
            // 16-byte operands and FXSAVE areas: aligned 90 % of the time
            // (misaligned ones #GP on both sides unless the form allows
            // them); 80-bit and BCD operands: where the special values are.
            let align = match size {
                16 | 512 | 10 => 16,
                576 => 64,
                _ => 0,
            };
            let (mo, _) = self.mem(rng, size, align, &avoid, &mut addr_setup);
            mem = Some(mo);
        }
        let mut ops = Vec::new();
        for (i, k) in t.toks.iter().enumerate() {
            let is_mem = Some(i) == mem_slot;
            ops.push(match *k {
                Tok::Mx(_) => Op::Mem(mem?),
                Tok::XmmRm(_) | Tok::MmRm(_) | Tok::Rm(_) | Tok::RegM(..) if is_mem => {
                    Op::Mem(mem?)
                }
                Tok::Xmm | Tok::XmmRm(_) => Op::Reg(self.xmm(rng)),
                Tok::Mm | Tok::MmRm(_) => Op::Reg(self.mm(rng)),
                Tok::St0 => Op::Reg(Register::ST0),
                Tok::Sti => Op::Reg(Register::ST0 + rng.below(8) as u32),
                Tok::R(s) | Tok::Rm(s) | Tok::RegM(s, _) => Op::Reg(self.reg(rng, s, &[])),
                Tok::Imm => Op::Imm(0),
                Tok::Fixed(r) => Op::Reg(r),
                Tok::M(_) | Tok::One => return None,
            });
        }
        let mut insn = build(t.code, &ops)?;
        let shift_like = matches!(
            m,
            Psrlw | Psraw | Psllw | Psrld | Psrad | Pslld | Psrlq | Psllq | Psrldq | Pslldq
        );
        self.immediates(rng, &mut insn, shift_like);
        // LOCK is never valid here: #UD on both sides.
        if rng.chance(1) {
            insn.set_has_lock_prefix(true);
        }
        // Images the instruction loads: control values the harness chooses
        // (exceptions masked, nearly always), written just before it.
        if let Some(mo) = mem {
            let size = match t.toks[mem_slot?] {
                Tok::Mx(s) => s,
                _ => 0,
            };
            match m {
                Fldcw => post_setup.push(Self::mov_mem(mo, 0, 2, fcw_value(rng) as u32)?),
                Ldmxcsr => {
                    post_setup.push(Self::mov_mem(mo, 0, 4, self.mxcsr_value(rng))?);
                }
                Fldenv | Frstor => {
                    // 32-bit format (28/108 bytes): FCW, FSW, FTW at 0, 4, 8;
                    // 16-bit format (14/94 bytes): at 0, 2, 4.
                    let step = if size == 28 || size == 108 { 4 } else { 2 };
                    let cw = fcw_value(rng);
                    post_setup.push(Self::mov_mem(mo, 0, 2, cw as u32)?);
                    post_setup.push(Self::mov_mem(mo, step, 2, fsw_value(rng, cw) as u32)?);
                    post_setup.push(Self::mov_mem(mo, 2 * step, 2, rng.next() as u32 & 0xffff)?);
                }
                Fxrstor | Fxrstor64 | Xrstor | Xrstor64 => {
                    let cw = fcw_value(rng);
                    let sw = fsw_value(rng, cw) as u32;
                    post_setup.push(Self::mov_mem(mo, 0, 4, cw as u32 | sw << 16)?);
                    // The abridged tag (byte 4; byte 5 reserved) from the random data.
                    post_setup.push(Self::mov_mem(mo, 24, 4, self.mxcsr_value(rng))?);
                    if matches!(m, Xrstor | Xrstor64) {
                        // The header: XSTATE_BV within x87|SSE, XCOMP_BV and
                        // the reserved bytes zero (now and then not: #GP).
                        let bv = rng.below(4) as u32;
                        post_setup.push(Self::mov_mem(mo, 512, 4, bv)?);
                        for off in (516..576).step_by(4) {
                            if !rng.chance(1) {
                                post_setup.push(Self::mov_mem(mo, off, 4, 0)?);
                            } else if off == 524 {
                                // Not random: XCOMP_BV[63] set selects the
                                // compacted form, which this host supports
                                // (XSAVEC) and the emulator does not
                                // advertise (#GP there). Keep the standard
                                // form, with a non-zero XCOMP_BV (#GP on both).
                                post_setup.push(Self::mov_mem(mo, off, 4, 0x7fff_ffff)?);
                            }
                        }
                    }
                }
                _ => {}
            }
            // Images the instruction stores: the x87 instruction and data
            // pointers and the last opcode (FIP, FCS, FOP, FDP, FDS) are not
            // deterministic here (this CPU updates FOP/FDP only on unmasked
            // exceptions and stores FCS/FDS as zero); overwrite them with
            // zeros right after (the instruction changes no GPR, so the
            // addressing registers still hold).
            match m {
                Fnstenv | Fstenv | Fnsave | Fsave => {
                    if size == 28 || size == 108 {
                        for off in [12, 16, 20, 24] {
                            after.push(Self::mov_mem(mo, off, 4, 0)?);
                        }
                    } else {
                        for off in [6, 8, 10, 12] {
                            after.push(Self::mov_mem(mo, off, 2, 0)?);
                        }
                    }
                }
                Fxsave | Fxsave64 | Xsave | Xsave64 => {
                    after.push(Self::mov_mem(mo, 6, 2, 0)?);
                    for off in [8, 12, 16, 20] {
                        after.push(Self::mov_mem(mo, off, 4, 0)?);
                    }
                    if matches!(m, Xsave | Xsave64) {
                        // XSTATE_BV bits 0–1 are XINUSE, which the host
                        // tracks (init optimization) and the model does not.
                        after.push(Self::mov_mem(mo, 512, 4, 0)?);
                    }
                }
                _ => {}
            }
        }
        if matches!(m, Xsave | Xsave64 | Xrstor | Xrstor64) {
            // EDX:EAX: x87 and/or SSE only (the host's XCR0 has more
            // components than the model's); random upper halves.
            value_setup.push(self.mov_imm(0, rng.below(4) | rng.next() << 32));
            value_setup.push(self.mov_imm(2, rng.next() << 32));
        }
        if matches!(m, Pcmpestri | Pcmpestri64 | Pcmpestrm | Pcmpestrm64) {
            // Lengths: mostly in or near the valid range (saturating otherwise).
            for r in [0usize, 2] {
                if rng.chance(70) {
                    let v = (rng.below(41) as i64 - 20) as u64;
                    value_setup.push(self.mov_imm(r, v));
                }
            }
        }
        let mut out = value_setup;
        out.extend(addr_setup);
        out.extend(post_setup);
        out.push(insn);
        out.extend(after);
        Some(out)
    }

    /// MASKMOVQ/MASKMOVDQU: the destination is DS:[RDI] (or [EDI] with a
    /// 67 prefix), loaded just before.
    fn maskmov_instance(&self, rng: &mut Rng, t: &Template) -> Option<Vec<Instruction>> {
        let lo = self.data_base + 0x1000;
        let a = lo + rng.below(self.data_size - 0x2000);
        let asz = if self.w32 || rng.chance(20) { 32 } else { 64 };
        let mut out = vec![self.mov_imm(7, a)];
        let insn = if t.mnemonic == Mnemonic::Maskmovq {
            Instruction::with_maskmovq(asz, self.mm(rng), self.mm(rng), Register::None).ok()?
        } else {
            Instruction::with_maskmovdqu(asz, self.xmm(rng), self.xmm(rng), Register::None).ok()?
        };
        out.push(insn);
        Some(out)
    }

    /// An MXCSR value for LDMXCSR/FXRSTOR: exceptions masked, random
    /// rounding, FTZ, DAZ and flags; now and then some exceptions unmasked
    /// (#XM on both sides) or a reserved bit set (#GP on both sides).
    fn mxcsr_value(&self, rng: &mut Rng) -> u32 {
        let mut v = 0x1f80 | (rng.next() as u32 & 0xe07f);
        if rng.chance(50) {
            v &= !0x3f;
        }
        if rng.chance(4) {
            v &= !((rng.next() as u32 & 0x3f) << 7);
        }
        v &= self.mxcsr_mask;
        if rng.chance(3) {
            v |= 1 << (16 + rng.below(16));
        }
        v
    }

    fn string_instance(
        &self,
        rng: &mut Rng,
        kind: Str,
        size: u8,
        asz: u32,
        rep: RepPrefixKind,
    ) -> Option<Vec<Instruction>> {
        let mut out = Vec::new();
        let lo = self.data_base + 0x1000;
        let span = self.data_size - 0x2000;
        let mut a1 = lo + rng.below(span);
        let mut a2 = lo + rng.below(span);
        if rng.chance(50) {
            a1 &= !(size as u64 - 1);
            a2 &= !(size as u64 - 1);
        }
        if matches!(kind, Str::Cmps) && rng.chance(30) {
            a2 = a1;
        }
        let w32 = self.w32;
        let hi = |rng: &mut Rng| {
            if asz == 32 && !w32 && rng.chance(50) {
                rng.next() << 32
            } else {
                0
            }
        };
        if matches!(kind, Str::Movs | Str::Lods | Str::Cmps) {
            let v = a1 | hi(rng);
            out.push(self.mov_imm(6, v));
        }
        if matches!(kind, Str::Movs | Str::Stos | Str::Cmps | Str::Scas) {
            let v = a2 | hi(rng);
            out.push(self.mov_imm(7, v));
        }
        if rep != RepPrefixKind::None {
            let n = rng.below(34);
            let v = n | hi(rng);
            out.push(self.mov_imm(1, v));
        }
        out.push(string_insn(kind, size, asz, rep).ok()?);
        Some(out)
    }

    /// A decimal-adjust instruction, or ADD/ADC/SUB/SBB AL, imm8 to set up AF
    /// and CF for one (32-bit code only). AAM 0 (#DE) comes up now and then.
    fn bcd_insn(&self, rng: &mut Rng) -> Instruction {
        let imm = rng.value() as u8;
        let none = |c| {
            let mut i = Instruction::default();
            i.set_code(c);
            i
        };
        match rng.below(10) {
            0 => none(Code::Aaa),
            1 => none(Code::Aas),
            2 => none(Code::Daa),
            3 => none(Code::Das),
            4 => {
                let base = match rng.below(20) {
                    0 => 0,
                    1..=9 => 10,
                    _ => imm,
                };
                Instruction::with1(Code::Aam_imm8, base as u32).expect("aam")
            }
            5 => {
                let base = if rng.chance(50) { 10 } else { imm };
                Instruction::with1(Code::Aad_imm8, base as u32).expect("aad")
            }
            k => {
                let c = [
                    Code::Add_AL_imm8,
                    Code::Adc_AL_imm8,
                    Code::Sub_AL_imm8,
                    Code::Sbb_AL_imm8,
                ][k as usize - 6];
                Instruction::with2(c, Register::AL, imm as u32).expect("alu")
            }
        }
    }

    /// A sequence of 1–8 instructions (plus their setups) with random state:
    /// 64-bit code, or (`w32`) 32-bit code for compatibility mode, which may
    /// include the decimal-adjust instructions.
    pub fn case(&mut self, rng: &mut Rng, ip0: u64, w32: bool) -> Case {
        self.w32 = w32;
        let mut gpr = [0u64; 16];
        for g in gpr.iter_mut() {
            *g = rng.value();
            if w32 {
                *g &= 0xffff_ffff;
            }
        }
        let status = rng.next() & 0x8d5;
        let df = if rng.chance(50) { 0x400 } else { 0 };
        let rflags = 0x202 | status | df;
        let mut data = vec![0u8; self.data_size as usize];
        let fp_state;
        if self.templates.iter().any(|t| t.class.is_fp()) {
            fp_state = FpState::random(rng, self.mxcsr_mask);
            fp::fill_data(rng, &mut data);
        } else {
            fp_state = FpState::initial();
            for c in data.chunks_mut(8) {
                c.copy_from_slice(&rng.next().to_le_bytes()[..c.len()]);
            }
        }

        let n = 1 + rng.below(self.max_len.max(1));
        let mut code = Vec::new();
        let mut poison = 0u64;
        let mut ip = ip0;
        let nclass = if w32 {
            self.by_class32.len() + self.bcd as usize
        } else {
            self.by_class.len()
        };
        for _ in 0..n {
            if nclass == 0 {
                break;
            }
            for _attempt in 0..100 {
                let c = rng.below(nclass as u64) as usize;
                let group = if w32 && c == self.by_class32.len() {
                    vec![self.bcd_insn(rng)]
                } else {
                    let class = if w32 {
                        &self.by_class32[c]
                    } else {
                        &self.by_class[c]
                    };
                    let t = &self.templates[*rng.pick(class)];
                    let Some(group) = self.instance(rng, t) else {
                        continue;
                    };
                    group
                };
                let mut p = poison;
                let mut ok = true;
                for i in &group {
                    if !self.strict && eflags(i.rflags_read()) & p != 0 {
                        ok = false;
                        break;
                    }
                    p = poison_after(p, i);
                }
                if !ok {
                    continue;
                }
                let enc = if w32 { &mut self.enc32 } else { &mut self.enc };
                let mut bytes = Vec::new();
                let mut cur = ip;
                for i in &group {
                    match enc.encode(i, cur) {
                        Ok(len) => {
                            cur += len as u64;
                            bytes.extend(enc.take_buffer());
                        }
                        Err(_) => {
                            ok = false;
                            let _ = enc.take_buffer();
                            break;
                        }
                    }
                }
                if !ok {
                    continue;
                }
                code.extend(bytes);
                ip = cur;
                poison = p;
                break;
            }
        }
        self.w32 = false;
        let mut insns = Vec::new();
        let mut dec = Decoder::with_ip(if w32 { 32 } else { 64 }, &code, ip0, DecoderOptions::NONE);
        while dec.can_decode() {
            insns.push(dec.decode());
        }
        let mut pv = Vec::with_capacity(insns.len());
        let mut p = 0;
        for i in &insns {
            pv.push(if self.strict { 0 } else { p });
            p = poison_after(p, i);
        }
        Case {
            gpr,
            rflags,
            fp: fp_state,
            data,
            code,
            insns,
            poison: pv,
            final_poison: if self.strict { 0 } else { p },
        }
    }

    /// One instance of template `i` alone, for probing whether the interpreter implements it.
    pub fn probe_case(&mut self, rng: &mut Rng, i: usize, ip0: u64) -> Option<Case> {
        let t = self.templates[i].clone();
        let group = self.instance(rng, &t)?;
        let mut code = Vec::new();
        let mut cur = ip0;
        for insn in &group {
            let len = self.enc.encode(insn, cur).ok()?;
            cur += len as u64;
            code.extend(self.enc.take_buffer());
        }
        let mut insns = Vec::new();
        let mut dec = Decoder::with_ip(64, &code, ip0, DecoderOptions::NONE);
        while dec.can_decode() {
            insns.push(dec.decode());
        }
        let mut gpr = [0u64; 16];
        for g in gpr.iter_mut() {
            *g = rng.value();
        }
        Some(Case {
            gpr,
            rflags: 0x202,
            fp: FpState::initial(),
            data: vec![0; self.data_size as usize],
            code,
            poison: vec![0; insns.len()],
            insns,
            final_poison: 0,
        })
    }
}
