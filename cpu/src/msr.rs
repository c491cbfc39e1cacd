//! Model-specific registers as RDMSR/WRMSR see them: the architectural MSRs
//! this CPU model implements (EFER, the SYSCALL/SYSENTER MSRs, FS/GS bases,
//! TSC and TSC_AUX, APIC base, PAT, MTRRs, MISC_ENABLE and a few read-only
//! identification MSRs). Any other index raises #GP(0), as hardware does for
//! MSRs it does not have; so do writes of reserved bits.
//!
//! Side effects that concern the interpreter (TLB flushes, ending the
//! current block) are left to the caller; [`write`] reports what changed.

use crate::cpuid;
use crate::fault::{Fault, Result};
use crate::memory::is_canonical;
use crate::state::{cr, Cpu, SegReg};

/// MSR indices.
pub mod index {
    pub const TSC: u32 = 0x10;
    pub const PLATFORM_ID: u32 = 0x17;
    pub const APIC_BASE: u32 = 0x1b;
    pub const BIOS_SIGN_ID: u32 = 0x8b;
    pub const MTRRCAP: u32 = 0xfe;
    pub const SYSENTER_CS: u32 = 0x174;
    pub const SYSENTER_ESP: u32 = 0x175;
    pub const SYSENTER_EIP: u32 = 0x176;
    pub const MISC_ENABLE: u32 = 0x1a0;
    pub const MTRR_PHYSBASE0: u32 = 0x200;
    pub const MTRR_PHYSMASK7: u32 = 0x20f;
    pub const MTRR_FIX64K_00000: u32 = 0x250;
    pub const MTRR_FIX16K_80000: u32 = 0x258;
    pub const MTRR_FIX16K_A0000: u32 = 0x259;
    pub const MTRR_FIX4K_C0000: u32 = 0x268;
    pub const MTRR_FIX4K_F8000: u32 = 0x26f;
    pub const PAT: u32 = 0x277;
    pub const MTRR_DEF_TYPE: u32 = 0x2ff;
    pub const EFER: u32 = 0xc000_0080;
    pub const STAR: u32 = 0xc000_0081;
    pub const LSTAR: u32 = 0xc000_0082;
    pub const CSTAR: u32 = 0xc000_0083;
    pub const SFMASK: u32 = 0xc000_0084;
    pub const FS_BASE: u32 = 0xc000_0100;
    pub const GS_BASE: u32 = 0xc000_0101;
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    pub const TSC_AUX: u32 = 0xc000_0103;
    /// IA32_ARCH_CAPABILITIES (read-only).
    pub const ARCH_CAPABILITIES: u32 = 0x10a;
    /// Local APIC TSC-deadline timer (answered by the machine's APIC).
    pub const TSC_DEADLINE: u32 = 0x6e0;
}

/// IA32_MTRRCAP: 8 variable ranges, fixed ranges, write-combining.
pub const MTRRCAP: u64 = 8 | (1 << 8) | (1 << 10);

/// Physical-address bits above the supported width (reserved in base/mask MSRs).
const PHYS_RESERVED: u64 = !((1u64 << crate::mmu::PHYS_ADDR_BITS) - 1);

/// What a successful WRMSR changed, beyond storing the value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteEffect {
    /// Paging-relevant state changed (EFER.NXE): flush the TLB.
    pub flush_tlb: bool,
}

/// Index of a fixed-range MTRR in [`crate::state::Msrs::mtrr_fixed`].
fn fixed_slot(i: u32) -> Option<usize> {
    match i {
        index::MTRR_FIX64K_00000 => Some(0),
        index::MTRR_FIX16K_80000 => Some(1),
        index::MTRR_FIX16K_A0000 => Some(2),
        index::MTRR_FIX4K_C0000..=index::MTRR_FIX4K_F8000 => {
            Some(3 + (i - index::MTRR_FIX4K_C0000) as usize)
        }
        _ => None,
    }
}

/// Valid MTRR memory types: UC, WC, WT, WP, WB.
#[inline]
fn mtrr_type_ok(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

/// Valid PAT entry types: the MTRR types plus UC- (7).
#[inline]
fn pat_type_ok(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6 | 7)
}

/// RDMSR.
pub fn read(cpu: &Cpu, i: u32) -> Result<u64> {
    let m = &cpu.msr;
    Ok(match i {
        index::TSC => cpu.tsc(),
        index::PLATFORM_ID => 0,
        index::APIC_BASE => m.apic_base,
        // Microcode revision (bits 63:32): none loaded.
        index::BIOS_SIGN_ID => 0,
        index::MTRRCAP => MTRRCAP,
        index::SYSENTER_CS => m.sysenter_cs,
        index::SYSENTER_ESP => m.sysenter_esp,
        index::SYSENTER_EIP => m.sysenter_eip,
        index::MISC_ENABLE => m.misc_enable,
        index::MTRR_PHYSBASE0..=index::MTRR_PHYSMASK7 => {
            m.mtrr_var[(i - index::MTRR_PHYSBASE0) as usize]
        }
        index::PAT => m.pat,
        index::MTRR_DEF_TYPE => m.mtrr_def_type,
        index::EFER => cpu.efer,
        index::STAR => m.star,
        index::LSTAR => m.lstar,
        index::CSTAR => m.cstar,
        index::SFMASK => m.sfmask,
        index::FS_BASE => cpu.seg[SegReg::Fs as usize].base,
        index::GS_BASE => cpu.seg[SegReg::Gs as usize].base,
        index::KERNEL_GS_BASE => m.kernel_gs_base,
        index::TSC_AUX => m.tsc_aux,
        index::ARCH_CAPABILITIES => cpuid::ARCH_CAPABILITIES,
        _ => match fixed_slot(i) {
            Some(s) => m.mtrr_fixed[s],
            None => return Err(Fault::gp(0)),
        },
    })
}

/// WRMSR: #GP(0) for unknown or read-only MSRs and for reserved bits.
pub fn write(cpu: &mut Cpu, i: u32, v: u64) -> Result<WriteEffect> {
    let gp = || Err(Fault::gp(0));
    let canonical = |v: u64| {
        if is_canonical(v) {
            Ok(v)
        } else {
            Err(Fault::gp(0))
        }
    };
    let mut effect = WriteEffect::default();
    match i {
        // TSC = icount + offset; the write takes effect as of this instruction.
        index::TSC => cpu.msr.tsc_offset = v.wrapping_sub(cpu.icount),
        index::APIC_BASE => {
            // Bits 0-7 and 9 are reserved; x2APIC (bit 10) is not supported;
            // the BSP flag (bit 8) is read-only.
            if v & (0x2ff | (1 << 10) | PHYS_RESERVED) & !(1 << 8) != 0 {
                return gp();
            }
            cpu.msr.apic_base = (v & !(1u64 << 8)) | (cpu.msr.apic_base & (1 << 8));
        }
        // Writing 0 before CPUID(1) asks for the microcode revision; accept and ignore.
        index::BIOS_SIGN_ID => {}
        index::SYSENTER_CS => cpu.msr.sysenter_cs = v & 0xffff_ffff,
        index::SYSENTER_ESP => cpu.msr.sysenter_esp = canonical(v)?,
        index::SYSENTER_EIP => cpu.msr.sysenter_eip = canonical(v)?,
        index::MISC_ENABLE => cpu.msr.misc_enable = v,
        index::MTRR_PHYSBASE0..=index::MTRR_PHYSMASK7 => {
            let n = (i - index::MTRR_PHYSBASE0) as usize;
            let bad = if n.is_multiple_of(2) {
                v & (0xf00 | PHYS_RESERVED) != 0 || !mtrr_type_ok(v & 0xff)
            } else {
                v & (0x7ff | PHYS_RESERVED) != 0
            };
            if bad {
                return gp();
            }
            cpu.msr.mtrr_var[n] = v;
        }
        index::PAT => {
            if (0..8).any(|b| !pat_type_ok((v >> (8 * b)) & 0xff)) {
                return gp();
            }
            cpu.msr.pat = v;
        }
        index::MTRR_DEF_TYPE => {
            if v & !0xcff != 0 || !mtrr_type_ok(v & 0xff) {
                return gp();
            }
            cpu.msr.mtrr_def_type = v;
        }
        index::EFER => {
            if v & !cpuid::efer_valid_mask() != 0 {
                return gp();
            }
            // LME cannot change while paging is on; LMA is maintained by the
            // processor (the written value is ignored).
            if cpu.cr0 & cr::CR0_PG != 0 && (v ^ cpu.efer) & cr::EFER_LME != 0 {
                return gp();
            }
            let new = (v & !cr::EFER_LMA) | (cpu.efer & cr::EFER_LMA);
            effect.flush_tlb = (new ^ cpu.efer) & cr::EFER_NXE != 0;
            cpu.efer = new;
            cpu.note_paging_change();
        }
        index::STAR => cpu.msr.star = v,
        index::LSTAR => cpu.msr.lstar = canonical(v)?,
        index::CSTAR => cpu.msr.cstar = canonical(v)?,
        index::SFMASK => {
            if v >> 32 != 0 {
                return gp();
            }
            cpu.msr.sfmask = v;
        }
        index::FS_BASE => cpu.seg[SegReg::Fs as usize].base = canonical(v)?,
        index::GS_BASE => cpu.seg[SegReg::Gs as usize].base = canonical(v)?,
        index::KERNEL_GS_BASE => cpu.msr.kernel_gs_base = canonical(v)?,
        index::TSC_AUX => {
            if v >> 32 != 0 {
                return gp();
            }
            cpu.msr.tsc_aux = v;
        }
        _ => match fixed_slot(i) {
            Some(s) => {
                if (0..8).any(|b| !mtrr_type_ok((v >> (8 * b)) & 0xff)) {
                    return gp();
                }
                cpu.msr.mtrr_fixed[s] = v;
            }
            None => return gp(),
        },
    }
    Ok(effect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut cpu = Cpu::new(0);
        for (i, v) in [
            (index::STAR, 0x0023_0010_0000_0000u64),
            (index::LSTAR, 0xffff_ffff_8100_0000),
            (index::SFMASK, 0x4_7700),
            (index::KERNEL_GS_BASE, 0x1234_5000),
            (index::FS_BASE, 0x7fff_0000_1000),
            (index::GS_BASE, 0xffff_8880_0000_0000),
            (index::SYSENTER_CS, 0x10),
            (index::SYSENTER_EIP, 0xc100_0000),
            (index::TSC_AUX, 7),
            (index::PAT, 0x0007_0406_0007_0406),
            (index::MTRR_DEF_TYPE, 0xc06),
            (0x200, 0x8000_0006),
            (0x201, 0xff_8000_0800),
            (0x250, 0x0606_0606_0606_0606),
            (0x26f, 0x0505_0505_0505_0505),
            (index::MISC_ENABLE, 1),
        ] {
            write(&mut cpu, i, v).expect("write");
            assert_eq!(read(&cpu, i).expect("read"), v, "msr {i:#x}");
        }
        assert_eq!(cpu.seg[SegReg::Fs as usize].base, 0x7fff_0000_1000);
        assert_eq!(read(&cpu, index::MTRRCAP), Ok(MTRRCAP));
    }

    #[test]
    fn tsc_write_sets_offset() {
        let mut cpu = Cpu::new(0);
        cpu.icount = 1000;
        write(&mut cpu, index::TSC, 5000).expect("tsc");
        assert_eq!(cpu.tsc(), 5000);
        cpu.icount += 10;
        assert_eq!(read(&cpu, index::TSC), Ok(5010));
    }

    #[test]
    fn efer_rules() {
        let mut cpu = Cpu::new(0);
        assert_eq!(
            write(&mut cpu, index::EFER, 1 << 2),
            Err(Fault::gp(0)),
            "reserved bit"
        );
        let e = write(
            &mut cpu,
            index::EFER,
            cr::EFER_LME | cr::EFER_NXE | cr::EFER_SCE | cr::EFER_LMA,
        )
        .expect("efer");
        assert!(e.flush_tlb);
        assert_eq!(
            cpu.efer,
            cr::EFER_LME | cr::EFER_NXE | cr::EFER_SCE,
            "LMA is not writable"
        );
        cpu.cr0 |= cr::CR0_PE | cr::CR0_PG;
        assert_eq!(
            write(&mut cpu, index::EFER, cr::EFER_NXE),
            Err(Fault::gp(0)),
            "LME change with paging on"
        );
        assert!(write(&mut cpu, index::EFER, cr::EFER_LME).is_ok());
    }

    #[test]
    fn reserved_and_unknown_fault() {
        let mut cpu = Cpu::new(0);
        for (i, v) in [
            (index::LSTAR, 0x8000_0000_0000_0000u64),
            (index::FS_BASE, 0x0001_0000_0000_0000),
            (index::PAT, 0x02),
            (index::MTRR_DEF_TYPE, 0x1000),
            (0x200, 0x8000_0002),
            (index::TSC_AUX, 1 << 32),
            (index::MTRRCAP, 0),
            (index::PLATFORM_ID, 0),
            (0x3a, 0),
            (0xdead, 0),
        ] {
            assert_eq!(write(&mut cpu, i, v), Err(Fault::gp(0)), "msr {i:#x}");
        }
        assert_eq!(read(&cpu, 0x3a), Err(Fault::gp(0)));
        assert_eq!(read(&cpu, 0xc000_0104), Err(Fault::gp(0)));
    }

    #[test]
    fn apic_base_keeps_bsp() {
        let mut cpu = Cpu::new(0);
        write(&mut cpu, index::APIC_BASE, 0xfec0_0800).expect("apic base");
        assert_eq!(read(&cpu, index::APIC_BASE), Ok(0xfec0_0900));
        assert!(
            write(&mut cpu, index::APIC_BASE, 0xfee0_0c00).is_err(),
            "x2APIC"
        );
    }
}
