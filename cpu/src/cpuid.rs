//! The CPU model CPUID reports: a GenuineIntel family-6 processor named
//! "hindsight virtual CPU" that advertises only what this emulator
//! implements. Every feature bit is a constant below, so turning a feature
//! on (e.g. [`FPU_SSE`] once the x87/SSE instructions exist) is a one-line
//! change; the CR4 bits software may set follow from the advertised
//! features ([`cr4_valid_mask`]).
//!
//! Leaves that are not implemented, and leaves above the maximum basic or
//! extended leaf, return all zeros. (Real Intel CPUs return the data of the
//! highest basic leaf for out-of-range inputs; zeros are simpler and tell
//! software the same thing: nothing there.)

use crate::state::{cr, Cpu};

/// Vendor string of leaf 0.
pub const VENDOR: &[u8; 12] = b"GenuineIntel";
/// Processor brand string (leaves 0x8000_0002..4).
pub const BRAND: &str = "hindsight virtual CPU";
/// Family 6, model 15, stepping 11 (a Core 2-class part: new enough that
/// guest kernels apply no old-model errata work-arounds such as disabling PAT or SEP).
pub const SIGNATURE: u32 = (6 << 8) | (15 << 4) | 11;

/// Whether the x87 FPU, MMX, FXSAVE and SSE/SSE2 are advertised (and
/// CR4.OSFXSR/OSXMMEXCPT accepted).
pub const FPU_SSE: bool = true;

/// Highest basic leaf (0x16: processor frequency).
pub const MAX_BASIC: u32 = 0x16;
/// Highest extended leaf.
pub const MAX_EXTENDED: u32 = 0x8000_0008;

/// Leaf 1 EDX bits.
pub mod edx1 {
    pub const FPU: u32 = 1 << 0;
    pub const VME: u32 = 1 << 1;
    pub const DE: u32 = 1 << 2;
    pub const PSE: u32 = 1 << 3;
    pub const TSC: u32 = 1 << 4;
    pub const MSR: u32 = 1 << 5;
    pub const PAE: u32 = 1 << 6;
    pub const MCE: u32 = 1 << 7;
    pub const CX8: u32 = 1 << 8;
    pub const APIC: u32 = 1 << 9;
    pub const SEP: u32 = 1 << 11;
    pub const MTRR: u32 = 1 << 12;
    pub const PGE: u32 = 1 << 13;
    pub const MCA: u32 = 1 << 14;
    pub const CMOV: u32 = 1 << 15;
    pub const PAT: u32 = 1 << 16;
    pub const PSE36: u32 = 1 << 17;
    pub const CLFSH: u32 = 1 << 19;
    pub const MMX: u32 = 1 << 23;
    pub const FXSR: u32 = 1 << 24;
    pub const SSE: u32 = 1 << 25;
    pub const SSE2: u32 = 1 << 26;
    pub const HTT: u32 = 1 << 28;
}

/// Leaf 1 ECX bits.
pub mod ecx1 {
    pub const SSE3: u32 = 1 << 0;
    pub const SSSE3: u32 = 1 << 9;
    pub const CX16: u32 = 1 << 13;
    pub const SSE41: u32 = 1 << 19;
    pub const SSE42: u32 = 1 << 20;
    pub const MOVBE: u32 = 1 << 22;
    pub const POPCNT: u32 = 1 << 23;
    pub const TSC_DEADLINE: u32 = 1 << 24;
    pub const XSAVE: u32 = 1 << 26;
    /// Reflects CR4.OSXSAVE.
    pub const OSXSAVE: u32 = 1 << 27;
    pub const HYPERVISOR: u32 = 1 << 31;
}

/// Leaf 7 (subleaf 0) bits.
pub mod leaf7 {
    /// EBX.
    pub const FSGSBASE: u32 = 1 << 0;
    pub const BMI1: u32 = 1 << 3;
    pub const SMEP: u32 = 1 << 7;
    pub const BMI2: u32 = 1 << 8;
    pub const SMAP: u32 = 1 << 20;
    /// ECX.
    pub const UMIP: u32 = 1 << 2;
}

/// Leaf 0x8000_0001 bits.
pub mod ext1 {
    /// ECX: LAHF/SAHF in 64-bit mode.
    pub const LAHF_LM: u32 = 1 << 0;
    /// ECX: LZCNT (AMD's "ABM").
    pub const ABM: u32 = 1 << 5;
    /// EDX.
    pub const SYSCALL: u32 = 1 << 11;
    pub const NX: u32 = 1 << 20;
    pub const PDPE1GB: u32 = 1 << 26;
    pub const RDTSCP: u32 = 1 << 27;
    pub const LM: u32 = 1 << 29;
}

/// The x87/SSE part of leaf 1 EDX, advertised when [`FPU_SSE`] is on.
const FPU_SSE_EDX: u32 = edx1::FPU | edx1::MMX | edx1::FXSR | edx1::SSE | edx1::SSE2;

/// Leaf 1 EDX.
pub const LEAF1_EDX: u32 = edx1::DE
    | edx1::PSE
    | edx1::TSC
    | edx1::MSR
    | edx1::PAE
    | edx1::CX8
    | edx1::APIC
    | edx1::SEP
    | edx1::MTRR
    | edx1::PGE
    | edx1::CMOV
    | edx1::PAT
    | edx1::PSE36
    | edx1::CLFSH
    | if FPU_SSE { FPU_SSE_EDX } else { 0 };

/// Leaf 1 ECX.
pub const LEAF1_ECX: u32 = ecx1::SSE3
    | ecx1::SSSE3
    | ecx1::SSE41
    | ecx1::SSE42
    | ecx1::CX16
    | ecx1::MOVBE
    | ecx1::POPCNT
    | ecx1::TSC_DEADLINE
    | ecx1::XSAVE;

/// XSAVE state components (XCR0 bits) this model supports: x87 and SSE.
pub const XCR0_SUPPORTED: u32 = 0b11;
/// Size of an XSAVE area holding x87 and SSE state: the 512-byte legacy
/// region and the 64-byte header.
pub const XSAVE_AREA_SIZE: u32 = 576;

/// The TSC frequency: one tick per instruction, as virtual time counts
/// nanoseconds (1 GHz). Leaves 0x15/0x16 report it, so guests need not
/// calibrate the TSC against the PIT.
pub const TSC_HZ: u64 = 1_000_000_000;
/// Leaf 0x15 crystal clock (25 MHz) and TSC/crystal ratio (40/1).
const CRYSTAL_HZ: u32 = 25_000_000;
const TSC_RATIO: (u32, u32) = (40, 1);
const _: () = assert!(CRYSTAL_HZ as u64 * TSC_RATIO.0 as u64 / TSC_RATIO.1 as u64 == TSC_HZ);

/// Leaf 6 EAX bit 2: the APIC timer runs in every C-state (ARAT).
const LEAF6_ARAT: u32 = 1 << 2;
/// Leaf 0x8000_0007 EDX bit 8: invariant TSC.
const EXT7_INVARIANT_TSC: u32 = 1 << 8;

/// Leaf 7 EBX / ECX.
pub const LEAF7_EBX: u32 = 0;
pub const LEAF7_ECX: u32 = leaf7::UMIP;
/// Leaf 7 EDX bit 29: IA32_ARCH_CAPABILITIES exists.
pub const LEAF7_EDX_ARCH_CAPABILITIES: u32 = 1 << 29;
pub const LEAF7_EDX: u32 = LEAF7_EDX_ARCH_CAPABILITIES;

/// IA32_ARCH_CAPABILITIES: an emulated CPU does not speculate, so it is
/// immune to the speculative-execution and buffer-sampling flaws the OS
/// would otherwise mitigate (page-table isolation, buffer clearing):
/// RDCL_NO (0), SKIP_L1DFL_VMENTRY (3), SSB_NO (4), MDS_NO (5),
/// IF_PSCHANGE_MC_NO (6), TAA_NO (8), SBDR_SSDP_NO (13), FBSDP_NO (14),
/// PSDP_NO (15), BHI_NO (20), GDS_NO (26), RFDS_NO (27).
pub const ARCH_CAPABILITIES: u64 = (1 << 0)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 8)
    | (1 << 13)
    | (1 << 14)
    | (1 << 15)
    | (1 << 20)
    | (1 << 26)
    | (1 << 27);

/// Leaf 0x8000_0001 ECX / EDX.
pub const EXT1_ECX: u32 = ext1::LAHF_LM | ext1::ABM;
pub const EXT1_EDX: u32 = ext1::SYSCALL | ext1::NX | ext1::RDTSCP | ext1::LM;

/// Physical and linear address widths (leaf 0x8000_0008).
pub const PHYS_BITS: u32 = crate::mmu::PHYS_ADDR_BITS;
pub const LINEAR_BITS: u32 = 48;

/// IA32_MISC_ENABLE bit 22: CPUID reports at most leaf 2.
const MISC_LIMIT_CPUID: u64 = 1 << 22;

/// Packs 4 ASCII bytes little-endian, as CPUID returns strings.
fn text(bytes: &[u8], at: usize) -> u32 {
    let mut v = 0u32;
    for i in 0..4 {
        v |= (*bytes.get(at + i).unwrap_or(&0) as u32) << (8 * i);
    }
    v
}

/// CPUID for `leaf` (EAX) and `subleaf` (ECX): `[eax, ebx, ecx, edx]`.
pub fn cpuid(cpu: &Cpu, leaf: u32, subleaf: u32) -> [u32; 4] {
    let max_basic = if cpu.msr.misc_enable & MISC_LIMIT_CPUID != 0 {
        MAX_BASIC.min(2)
    } else {
        MAX_BASIC
    };
    match leaf {
        0 => [max_basic, text(VENDOR, 0), text(VENDOR, 8), text(VENDOR, 4)],
        1 => {
            // EBX: CLFLUSH line size 8 × 8 bytes, one logical processor, initial APIC id.
            let ebx = (8 << 8) | (1 << 16) | ((cpu.index & 0xff) << 24);
            let osxsave = if cpu.cr4 & cr::CR4_OSXSAVE != 0 {
                ecx1::OSXSAVE
            } else {
                0
            };
            [SIGNATURE, ebx, LEAF1_ECX | osxsave, LEAF1_EDX]
        }
        6 if leaf <= max_basic => [LEAF6_ARAT, 0, 0, 0],
        // XSAVE: sub-leaf 0 lists the components and area sizes; sub-leaf 1
        // says XGETBV with ECX = 1 works (EAX bit 2) and nothing else.
        0xd if leaf <= max_basic && subleaf == 0 => {
            [XCR0_SUPPORTED, XSAVE_AREA_SIZE, XSAVE_AREA_SIZE, 0]
        }
        0xd if leaf <= max_basic && subleaf == 1 => [1 << 2, 0, 0, 0],
        // One iteration, no cache or TLB descriptors.
        2 => [1, 0, 0, 0],
        7 if leaf <= max_basic && subleaf == 0 => [0, LEAF7_EBX, LEAF7_ECX, LEAF7_EDX],
        0x15 if leaf <= max_basic => [TSC_RATIO.1, TSC_RATIO.0, CRYSTAL_HZ, 0],
        // Base, maximum and bus frequency in MHz.
        0x16 if leaf <= max_basic => {
            let mhz = (TSC_HZ / 1_000_000) as u32;
            [mhz, mhz, 100, 0]
        }
        0x8000_0000 => [MAX_EXTENDED, 0, 0, 0],
        0x8000_0007 => [0, 0, 0, EXT7_INVARIANT_TSC],
        0x8000_0001 => [0, 0, EXT1_ECX, EXT1_EDX],
        0x8000_0002..=0x8000_0004 => {
            let base = (leaf - 0x8000_0002) as usize * 16;
            let b = BRAND.as_bytes();
            [
                text(b, base),
                text(b, base + 4),
                text(b, base + 8),
                text(b, base + 12),
            ]
        }
        0x8000_0008 => [PHYS_BITS | (LINEAR_BITS << 8), 0, 0, 0],
        _ => [0; 4],
    }
}

/// CR4 bits software may set on this model.
pub fn cr4_valid_mask() -> u64 {
    let mut m = cr::CR4_PCE;
    if LEAF1_EDX & edx1::VME != 0 {
        m |= cr::CR4_VME | cr::CR4_PVI;
    }
    if LEAF1_EDX & edx1::TSC != 0 {
        m |= cr::CR4_TSD;
    }
    if LEAF1_EDX & edx1::DE != 0 {
        m |= cr::CR4_DE;
    }
    if LEAF1_EDX & edx1::PSE != 0 {
        m |= cr::CR4_PSE;
    }
    if LEAF1_EDX & edx1::PAE != 0 {
        m |= cr::CR4_PAE;
    }
    if LEAF1_EDX & edx1::MCE != 0 {
        m |= cr::CR4_MCE;
    }
    if LEAF1_EDX & edx1::PGE != 0 {
        m |= cr::CR4_PGE;
    }
    if LEAF1_EDX & edx1::FXSR != 0 {
        m |= cr::CR4_OSFXSR;
    }
    if LEAF1_EDX & edx1::SSE != 0 {
        m |= cr::CR4_OSXMMEXCPT;
    }
    if LEAF1_ECX & ecx1::XSAVE != 0 {
        m |= cr::CR4_OSXSAVE;
    }
    if LEAF7_ECX & leaf7::UMIP != 0 {
        m |= cr::CR4_UMIP;
    }
    if LEAF7_EBX & leaf7::FSGSBASE != 0 {
        m |= cr::CR4_FSGSBASE;
    }
    if LEAF7_EBX & leaf7::SMEP != 0 {
        m |= cr::CR4_SMEP;
    }
    if LEAF7_EBX & leaf7::SMAP != 0 {
        m |= cr::CR4_SMAP;
    }
    m
}

/// EFER bits software may set (LMA is maintained by the processor).
pub fn efer_valid_mask() -> u64 {
    let mut m = 0;
    if EXT1_EDX & ext1::SYSCALL != 0 {
        m |= cr::EFER_SCE;
    }
    if EXT1_EDX & ext1::LM != 0 {
        m |= cr::EFER_LME | cr::EFER_LMA;
    }
    if EXT1_EDX & ext1::NX != 0 {
        m |= cr::EFER_NXE;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string_of(regs: &[u32]) -> String {
        let mut s = Vec::new();
        for r in regs {
            s.extend_from_slice(&r.to_le_bytes());
        }
        String::from_utf8_lossy(&s)
            .trim_end_matches('\0')
            .to_string()
    }

    #[test]
    fn vendor_brand_and_limits() {
        let mut cpu = Cpu::new(3);
        let l0 = cpuid(&cpu, 0, 0);
        assert_eq!(l0[0], MAX_BASIC);
        assert_eq!(string_of(&[l0[1], l0[3], l0[2]]), "GenuineIntel");
        let mut brand = Vec::new();
        for leaf in 0x8000_0002..=0x8000_0004 {
            brand.extend_from_slice(&cpuid(&cpu, leaf, 0));
        }
        assert_eq!(string_of(&brand), BRAND);
        assert_eq!(cpuid(&cpu, 0x8000_0000, 0)[0], 0x8000_0008);
        assert_eq!(cpuid(&cpu, 0x8000_0008, 0)[0], 0x3028);
        let l1 = cpuid(&cpu, 1, 0);
        assert_eq!(l1[0], 0x6fb);
        assert_eq!(l1[1] >> 24, 3, "initial APIC id");
        assert_ne!(l1[3] & edx1::FPU, 0);
        assert_ne!(l1[2] & ecx1::SSE42, 0);
        assert_eq!(cpuid(&cpu, 0xd, 0), [3, 576, 576, 0]);
        assert_ne!(l1[3] & edx1::PAE, 0);
        assert_ne!(l1[2] & ecx1::CX16, 0);
        assert_eq!(cpuid(&cpu, 7, 0)[2], leaf7::UMIP);
        assert_eq!(cpuid(&cpu, 7, 1), [0; 4]);
        assert_eq!(cpuid(&cpu, 0x4000_0000, 0), [0; 4]);
        assert_eq!(cpuid(&cpu, 0x8000_0009, 0), [0; 4]);
        cpu.msr.misc_enable |= MISC_LIMIT_CPUID;
        assert_eq!(cpuid(&cpu, 0, 0)[0], 2);
        assert_eq!(cpuid(&cpu, 7, 0), [0; 4]);
    }

    #[test]
    fn cr4_mask_follows_features() {
        let m = cr4_valid_mask();
        assert_ne!(m & cr::CR4_PAE, 0);
        assert_ne!(m & cr::CR4_UMIP, 0);
        assert_eq!(m & cr::CR4_VME, 0);
        assert_eq!(m & cr::CR4_OSFXSR != 0, FPU_SSE);
        assert_eq!(m & cr::CR4_SMEP, 0);
    }
}
