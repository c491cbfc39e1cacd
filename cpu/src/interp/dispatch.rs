//! Maps a decoded instruction to its handler, once, at decode time.
//!
//! Instructions no group claims are classified by the CPUID features iced
//! reports for them (`Instruction::cpuid_features`):
//! - the hint-NOP spaces (0F 0D, 0F 18-0F 1F: prefetch variants, reserved
//!   NOPs, CLDEMOTE, RDSSP) execute as NOPs, as on processors without the
//!   feature that gave them a meaning;
//! - x87, MMX, SSE…SSE4.2, FXSAVE/XSAVE and WAIT are claimed by the `x87`,
//!   `sse` and `sse4` groups; any form they might leave unclaimed still
//!   raises the #NM/#UD its CR0.EM/TS/MP and CR4.OSFXSR checks call for
//!   (SDM vol. 3 table 2-2 and 13.1) before stopping as unimplemented;
//! - anything needing a feature this CPU model does not advertise
//!   ([`crate::cpuid`]): AVX, BMI, ADX, VMX, SVM, SMX, RTM, XSAVE, RDRAND,
//!   MONITOR, CET, SMAP, RSM outside SMM … raises #UD, as real hardware does;
//! - the rest (features advertised, no handler) is a gap in this model and
//!   stops the machine as unimplemented.

use iced_x86::{Code, CpuidFeature, Instruction, Mnemonic, OpKind, Register};

use crate::block::Handler;
use crate::cpuid::{self, ecx1, edx1, ext1, leaf7};
use crate::fault::{Fault, Result, StopKind};
use crate::interp::Ctx;

/// The handler for `insn`: the first instruction group that claims it, else
/// the handler its feature class calls for (see the module comment).
pub fn handler_for(insn: &Instruction) -> Handler {
    if insn.code() == Code::INVALID {
        return invalid;
    }
    GROUPS
        .iter()
        .find_map(|g| g(insn))
        .unwrap_or_else(|| unclaimed(insn))
}

/// The instruction groups, asked in turn.
const GROUPS: [fn(&Instruction) -> Option<Handler>; 17] = [
    super::data::handler,
    super::alu::handler,
    super::shift::handler,
    super::muldiv::handler,
    super::bcd::handler,
    super::bits::handler,
    super::stack::handler,
    super::branch::handler,
    super::string::handler,
    super::far::handler,
    super::interrupt::handler,
    super::descriptor::handler,
    super::system::handler,
    super::io::handler,
    super::x87::handler,
    super::sse::handler,
    super::sse4::handler,
];

/// What happens to an instruction no group implements.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Unclaimed {
    /// A hint that is a NOP on this model.
    Nop,
    /// The later x87/MMX/SSE issue, by family.
    Fp(FpClass),
    /// A feature this model does not advertise: #UD.
    NotAdvertised,
    /// Advertised but not implemented: a gap in this model.
    Gap,
}

fn classify(insn: &Instruction) -> Unclaimed {
    if hint_nop(insn.mnemonic()) {
        return Unclaimed::Nop;
    }
    match fp_class(insn) {
        FpClass::None => {}
        c => return Unclaimed::Fp(c),
    }
    if insn.cpuid_features().iter().all(|&f| advertised(f)) {
        Unclaimed::Gap
    } else {
        Unclaimed::NotAdvertised
    }
}

/// The handler for an instruction no group implements.
fn unclaimed(insn: &Instruction) -> Handler {
    match classify(insn) {
        Unclaimed::Nop => nop,
        Unclaimed::Fp(FpClass::X87 | FpClass::Fxsr) => x87,
        Unclaimed::Fp(FpClass::Mmx) => mmx,
        Unclaimed::Fp(FpClass::Sse) => sse,
        Unclaimed::Fp(_) | Unclaimed::Gap => unimplemented,
        Unclaimed::NotAdvertised => invalid,
    }
}

/// Instructions of the hint-NOP opcode spaces that are NOPs on processors
/// without the feature that defines them (0F 0D prefetches, 0F 18 /4-/7
/// and PREFETCHIT0/1, 0F 19-0F 1F reserved NOPs, CLDEMOTE 0F 1C /0, RDSSP
/// F3 0F 1E /1 with CET off).
fn hint_nop(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Reservednop
            | Mnemonic::Prefetch
            | Mnemonic::Prefetchw
            | Mnemonic::Prefetchwt1
            | Mnemonic::Prefetchit0
            | Mnemonic::Prefetchit1
            | Mnemonic::Cldemote
            | Mnemonic::Rdsspd
            | Mnemonic::Rdsspq
    )
}

/// The floating-point/SIMD family an instruction belongs to (the later issue).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FpClass {
    None,
    /// x87 (FPU, FPU287, FPU387).
    X87,
    /// MMX registers and no XMM register (MMX, and SSE instructions on MMX
    /// registers such as PAVGB mm, mm/m64).
    Mmx,
    /// XMM registers or MXCSR (the rest of SSE): needs CR4.OSFXSR.
    Sse,
    /// FXSAVE/FXRSTOR.
    Fxsr,
    /// SSE-family instructions on general registers only (CRC32).
    SseGpr,
}

fn fp_class(insn: &Instruction) -> FpClass {
    let feats = insn.cpuid_features();
    let has = |f: &[CpuidFeature]| feats.iter().any(|x| f.contains(x));
    if has(&[
        CpuidFeature::FPU,
        CpuidFeature::FPU287,
        CpuidFeature::FPU387,
    ]) {
        return FpClass::X87;
    }
    if has(&[CpuidFeature::FXSR]) {
        return FpClass::Fxsr;
    }
    let sse = has(&[
        CpuidFeature::SSE,
        CpuidFeature::SSE2,
        CpuidFeature::SSE3,
        CpuidFeature::SSSE3,
        CpuidFeature::SSE4_1,
        CpuidFeature::SSE4_2,
    ]);
    if !sse && !has(&[CpuidFeature::MMX]) {
        return FpClass::None;
    }
    if insn.mnemonic() == Mnemonic::Crc32 {
        return FpClass::SseGpr;
    }
    let regs = (0..insn.op_count())
        .filter(|&i| insn.op_kind(i) == OpKind::Register)
        .map(|i| insn.op_register(i));
    let (mut xmm, mut mm) = (false, false);
    for r in regs {
        xmm |= r.is_xmm();
        mm |= (Register::MM0..=Register::MM7).contains(&r);
    }
    // The rest of SSE touches XMM registers or MXCSR (also when the
    // register operand is a general register and the other one memory,
    // as in CVTSS2SI r32, m32), unless it works on MMX registers.
    // The MMX/XMM conversions need OSFXSR even in their memory forms.
    let cvt = matches!(
        insn.mnemonic(),
        Mnemonic::Cvtpi2ps
            | Mnemonic::Cvtps2pi
            | Mnemonic::Cvttps2pi
            | Mnemonic::Cvtpi2pd
            | Mnemonic::Cvtpd2pi
            | Mnemonic::Cvttpd2pi
    );
    if (mm && !xmm && !cvt) || !sse {
        FpClass::Mmx
    } else {
        FpClass::Sse
    }
}

/// Whether this CPU model advertises (and so must execute) instructions of feature `f`.
fn advertised(f: CpuidFeature) -> bool {
    use CpuidFeature::*;
    match f {
        INTEL8086 | INTEL186 | INTEL286 | INTEL386 | INTEL486 | X64 | CPUID | MULTIBYTENOP
        | PAUSE | RDPMC => true,
        TSC => cpuid::LEAF1_EDX & edx1::TSC != 0,
        MSR => cpuid::LEAF1_EDX & edx1::MSR != 0,
        CX8 => cpuid::LEAF1_EDX & edx1::CX8 != 0,
        SEP => cpuid::LEAF1_EDX & edx1::SEP != 0,
        CMOV => cpuid::LEAF1_EDX & edx1::CMOV != 0,
        CLFSH => cpuid::LEAF1_EDX & edx1::CLFSH != 0,
        CMPXCHG16B => cpuid::LEAF1_ECX & ecx1::CX16 != 0,
        MOVBE => cpuid::LEAF1_ECX & ecx1::MOVBE != 0,
        POPCNT => cpuid::LEAF1_ECX & ecx1::POPCNT != 0,
        XSAVE => cpuid::LEAF1_ECX & ecx1::XSAVE != 0,
        FSGSBASE => cpuid::LEAF7_EBX & leaf7::FSGSBASE != 0,
        BMI1 => cpuid::LEAF7_EBX & leaf7::BMI1 != 0,
        BMI2 => cpuid::LEAF7_EBX & leaf7::BMI2 != 0,
        SMAP => cpuid::LEAF7_EBX & leaf7::SMAP != 0,
        SYSCALL => cpuid::EXT1_EDX & ext1::SYSCALL != 0,
        RDTSCP => cpuid::EXT1_EDX & ext1::RDTSCP != 0,
        LZCNT => cpuid::EXT1_ECX & ext1::ABM != 0,
        _ => false,
    }
}

fn invalid(_: &mut Ctx, _: &Instruction) -> Result<()> {
    Err(Fault::ud())
}

fn nop(_: &mut Ctx, _: &Instruction) -> Result<()> {
    Ok(())
}

fn unimplemented(_: &mut Ctx, insn: &Instruction) -> Result<()> {
    Err(Fault::Stop(StopKind::Unimplemented {
        mnemonic: format!("{:?}", insn.code()),
    }))
}

/// x87 and FXSAVE/FXRSTOR not yet implemented: the device checks, then a stop.
fn x87(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    super::fp::check_x87(ctx.cpu)?;
    unimplemented(ctx, insn)
}

/// MMX not yet implemented: the device checks, then a stop.
fn mmx(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    super::fp::check_mmx(ctx.cpu)?;
    unimplemented(ctx, insn)
}

/// SSE not yet implemented: the device checks, then a stop.
fn sse(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    super::fp::check_sse(ctx.cpu)?;
    unimplemented(ctx, insn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::vector;
    use crate::interp::RunExit;
    use crate::state::cr;
    use crate::testutil::{fault_of, install_fault_handlers, run, TestMode};

    /// Runs `bytes` then HLT; returns the exception taken (if any) or the stop.
    fn exec(mode: TestMode, bytes: &[u8], cr0: u64, cr4: u64) -> (Option<u8>, RunExit) {
        let mut code = bytes.to_vec();
        code.push(0xf4);
        let (cpu, bus, exit) = run(mode, &code, 100, |cpu, bus| {
            cpu.cr0 |= cr0;
            cpu.cr4 |= cr4;
            install_fault_handlers(cpu, bus);
        });
        (fault_of(&cpu, &bus).map(|f| f.0), exit)
    }

    /// Decodes the legacy opcode maps (one-byte, 0F, 0F 38, 0F 3A) with
    /// every ModRM byte under each common prefix in each code width (VEX,
    /// XOP and EVEX forms are reached through C4/C5/8F/62 in the one-byte
    /// map, partially), and lists what no group claims and is neither
    /// a hint NOP, x87/MMX/SSE nor an unadvertised feature: the gaps of
    /// this model (expected: none).
    #[test]
    fn no_general_purpose_gaps_in_the_opcode_space() {
        use iced_x86::{Decoder, DecoderOptions};
        use std::collections::BTreeSet;
        let mut gaps = BTreeSet::new();
        let mut later = BTreeSet::new();
        let escapes: &[&[u8]] = &[&[], &[0x0f], &[0x0f, 0x38], &[0x0f, 0x3a]];
        for bits in [16u32, 32, 64] {
            let prefixes: &[&[u8]] = if bits == 64 {
                &[
                    &[],
                    &[0x66],
                    &[0xf2],
                    &[0xf3],
                    &[0x48],
                    &[0x66, 0x48],
                    &[0xf3, 0x48],
                ]
            } else {
                &[&[], &[0x66], &[0xf2], &[0xf3]]
            };
            for p in prefixes {
                for e in escapes {
                    for op in 0..=255u8 {
                        for modrm in 0..=255u8 {
                            let mut bytes = Vec::with_capacity(16);
                            bytes.extend_from_slice(p);
                            bytes.extend_from_slice(e);
                            bytes.extend_from_slice(&[op, modrm]);
                            bytes.resize(bytes.len() + 10, 0);
                            let insn = Decoder::new(bits, &bytes, DecoderOptions::NONE).decode();
                            if insn.is_invalid() || GROUPS.iter().any(|g| g(&insn).is_some()) {
                                continue;
                            }
                            match classify(&insn) {
                                Unclaimed::Gap => {
                                    gaps.insert(format!(
                                        "{:?} ({bits}-bit, {bytes:02x?})",
                                        insn.code()
                                    ));
                                }
                                Unclaimed::Fp(_) => {
                                    later.insert(format!("{:?}", insn.code()));
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
        // Every x87/MMX/SSE form is claimed by its group.
        assert!(
            later.is_empty(),
            "unclaimed x87/MMX/SSE instructions: {later:?}"
        );
        let gaps: BTreeSet<String> = gaps
            .into_iter()
            .map(|g| g.split(' ').next().unwrap_or_default().to_string())
            .collect();
        assert!(
            gaps.is_empty(),
            "unimplemented general-purpose instructions: {gaps:?}"
        );
    }

    #[test]
    fn unadvertised_extensions_raise_ud() {
        let cases: &[&[u8]] = &[
            &[0x0f, 0xc7, 0xf0],             // RDRAND eax
            &[0x0f, 0x01, 0xc8],             // MONITOR
            &[0x0f, 0x01, 0xc9],             // MWAIT
            &[0x0f, 0x01, 0xfa],             // MONITORX
            &[0x0f, 0x01, 0xca],             // CLAC (SMAP)
            &[0x0f, 0x01, 0xd0],             // XGETBV (XSAVE)
            &[0x0f, 0x01, 0xd5],             // XEND (RTM)
            &[0x0f, 0x01, 0xc1],             // VMCALL
            &[0x0f, 0x78, 0xc0],             // VMREAD
            &[0x0f, 0x37],                   // GETSEC
            &[0x0f, 0xaa],                   // RSM outside SMM
            &[0x66, 0x0f, 0x38, 0xf6, 0xc0], // ADCX (ADX)
            &[0xc4, 0xe2, 0x78, 0xf2, 0xc0], // ANDN (BMI1, VEX)
            &[0xc5, 0xfc, 0x77],             // VZEROALL (AVX)
            &[0xf3, 0x0f, 0xae, 0xe8],       // INCSSPD (CET)
            &[0x0f, 0x01, 0xee],             // RDPKRU
            &[0xf3, 0x0f, 0xc7, 0xf8],       // RDPID
        ];
        for bytes in cases {
            let (v, exit) = exec(TestMode::Long64, bytes, 0, 0);
            assert_eq!(v, Some(vector::UD), "{bytes:02x?}: {exit:?}");
        }
    }

    #[test]
    fn hint_nop_space_executes_as_nop() {
        let cases: &[&[u8]] = &[
            &[0x0f, 0x19, 0xc0],       // reserved NOP
            &[0x0f, 0x1f, 0x08],       // 0F 1F /1
            &[0x0f, 0x18, 0x20],       // 0F 18 /4
            &[0x0f, 0x18, 0x38],       // PREFETCHIT0 (32-bit: no RIP-relative needed)
            &[0x0f, 0x0d, 0x00],       // PREFETCH (AMD)
            &[0x0f, 0x0d, 0x10],       // PREFETCHWT1
            &[0x0f, 0x1c, 0x00],       // CLDEMOTE
            &[0xf3, 0x0f, 0x1e, 0xc8], // RDSSPD eax
        ];
        for bytes in cases {
            let (v, exit) = exec(TestMode::Protected32, bytes, 0, 0);
            assert_eq!((v, exit), (None, RunExit::Halted), "{bytes:02x?}");
        }
    }

    #[test]
    fn x87_mmx_sse_device_checks() {
        let fld1: &[u8] = &[0xd9, 0xe8];
        let paddb: &[u8] = &[0x0f, 0xfc, 0xc1]; // PADDB mm0, mm1
        let addps: &[u8] = &[0x0f, 0x58, 0xc1]; // ADDPS xmm0, xmm1
        let fxsave: &[u8] = &[0x0f, 0xae, 0x03]; // FXSAVE [ebx] (EBX = 0: aligned)
        let (em, ts, mp) = (cr::CR0_EM, cr::CR0_TS, cr::CR0_MP);
        let osfxsr = cr::CR4_OSFXSR;
        let m = TestMode::Protected32;
        let runs = |r: (Option<u8>, RunExit)| r == (None, RunExit::Halted);
        // x87: #NM with EM or TS, else it runs.
        assert_eq!(exec(m, fld1, em, 0).0, Some(vector::NM));
        assert_eq!(exec(m, fld1, ts, 0).0, Some(vector::NM));
        assert!(runs(exec(m, fld1, 0, 0)));
        assert_eq!(exec(m, fxsave, ts, 0).0, Some(vector::NM));
        assert!(runs(exec(m, fxsave, 0, 0)));
        // MMX: EM -> #UD, TS -> #NM.
        assert_eq!(exec(m, paddb, em | ts, 0).0, Some(vector::UD));
        assert_eq!(exec(m, paddb, ts, 0).0, Some(vector::NM));
        assert!(runs(exec(m, paddb, 0, 0)));
        // SSE: EM or !OSFXSR -> #UD, TS -> #NM.
        assert_eq!(exec(m, addps, 0, 0).0, Some(vector::UD));
        assert_eq!(exec(m, addps, em, osfxsr).0, Some(vector::UD));
        assert_eq!(exec(m, addps, ts, osfxsr).0, Some(vector::NM));
        assert!(runs(exec(m, addps, 0, osfxsr)));
        // WAIT: #NM only with MP and TS; otherwise nothing to do.
        assert_eq!(exec(m, &[0x9b], mp | ts, 0).0, Some(vector::NM));
        assert_eq!(exec(m, &[0x9b], ts, 0), (None, RunExit::Halted));
        assert_eq!(exec(m, &[0x9b], mp, 0), (None, RunExit::Halted));
    }
}
