//! Architectural state of one x86-64 logical processor.
//!
//! Everything the guest can observe lives in [`Cpu`] and is serializable, so a
//! checkpoint is a plain copy. Host-side caches (the software TLB) are kept
//! beside it and skipped by serde: they are rebuilt on demand.

use serde::{Deserialize, Serialize};

use crate::flags;
use crate::tlb::Tlb;

/// Indices of the general-purpose registers in [`Cpu::gpr`], in encoding order.
pub mod reg {
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
}

/// Segment register indices in [`Cpu::seg`], in encoding order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum SegReg {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
}

impl SegReg {
    /// All six in encoding order.
    pub const ALL: [SegReg; 6] = [
        SegReg::Es,
        SegReg::Cs,
        SegReg::Ss,
        SegReg::Ds,
        SegReg::Fs,
        SegReg::Gs,
    ];
    /// Register name for diagnostics.
    pub fn name(self) -> &'static str {
        ["es", "cs", "ss", "ds", "fs", "gs"][self as usize]
    }
}

/// Attribute bits of a cached segment descriptor, packed like VMX's access
/// rights: bits 0–7 are descriptor byte 5 (type, S, DPL, P) and bits 12–15
/// are the high nibble of byte 6 (AVL, L, D/B, G).
pub mod attr {
    pub const ACCESSED: u16 = 1 << 0;
    /// Data: writable. Code: readable.
    pub const RW: u16 = 1 << 1;
    /// Data: expand-down. Code: conforming.
    pub const DC: u16 = 1 << 2;
    pub const CODE: u16 = 1 << 3;
    /// S bit: code/data (1) or system (0) descriptor.
    pub const S: u16 = 1 << 4;
    pub const DPL_SHIFT: u16 = 5;
    pub const PRESENT: u16 = 1 << 7;
    pub const AVL: u16 = 1 << 12;
    pub const LONG: u16 = 1 << 13;
    pub const DB: u16 = 1 << 14;
    pub const GRAN: u16 = 1 << 15;
    /// Present, writable, accessed data segment (real-mode and flat data).
    pub const DATA_RW: u16 = PRESENT | S | RW | ACCESSED;
    /// Present, readable, accessed code segment.
    pub const CODE_RX: u16 = PRESENT | S | CODE | RW | ACCESSED;
}

/// A segment register with its hidden (cached) descriptor part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub selector: u16,
    pub base: u64,
    /// Effective byte-granular limit (already scaled by G).
    pub limit: u32,
    /// See [`attr`].
    pub attr: u16,
}

impl Segment {
    /// A real-mode style segment: base = selector * 16, 64 KiB limit.
    pub fn real(selector: u16, attrs: u16) -> Segment {
        Segment {
            selector,
            base: (selector as u64) << 4,
            limit: 0xffff,
            attr: attrs,
        }
    }
    /// Descriptor privilege level.
    pub fn dpl(&self) -> u8 {
        ((self.attr >> attr::DPL_SHIFT) & 3) as u8
    }
    /// The P bit.
    pub fn present(&self) -> bool {
        self.attr & attr::PRESENT != 0
    }
    /// Code (as opposed to data) segment.
    pub fn is_code(&self) -> bool {
        self.attr & (attr::S | attr::CODE) == (attr::S | attr::CODE)
    }
    /// D/B bit.
    pub fn db(&self) -> bool {
        self.attr & attr::DB != 0
    }
    /// L bit.
    pub fn long(&self) -> bool {
        self.attr & attr::LONG != 0
    }
    /// System descriptor type (low 4 bits) when S=0.
    pub fn sys_type(&self) -> u8 {
        (self.attr & 0xf) as u8
    }
}

/// GDTR/IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableReg {
    pub base: u64,
    pub limit: u16,
}

/// Control register bits used by the CPU core.
pub mod cr {
    pub const CR0_PE: u64 = 1 << 0;
    pub const CR0_MP: u64 = 1 << 1;
    pub const CR0_EM: u64 = 1 << 2;
    pub const CR0_TS: u64 = 1 << 3;
    pub const CR0_ET: u64 = 1 << 4;
    pub const CR0_NE: u64 = 1 << 5;
    pub const CR0_WP: u64 = 1 << 16;
    pub const CR0_AM: u64 = 1 << 18;
    pub const CR0_NW: u64 = 1 << 29;
    pub const CR0_CD: u64 = 1 << 30;
    pub const CR0_PG: u64 = 1 << 31;

    pub const CR4_VME: u64 = 1 << 0;
    pub const CR4_PVI: u64 = 1 << 1;
    pub const CR4_TSD: u64 = 1 << 2;
    pub const CR4_DE: u64 = 1 << 3;
    pub const CR4_PSE: u64 = 1 << 4;
    pub const CR4_PAE: u64 = 1 << 5;
    pub const CR4_MCE: u64 = 1 << 6;
    pub const CR4_PGE: u64 = 1 << 7;
    pub const CR4_PCE: u64 = 1 << 8;
    pub const CR4_OSFXSR: u64 = 1 << 9;
    pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
    pub const CR4_UMIP: u64 = 1 << 11;
    pub const CR4_FSGSBASE: u64 = 1 << 16;
    pub const CR4_OSXSAVE: u64 = 1 << 18;
    pub const CR4_SMEP: u64 = 1 << 20;
    pub const CR4_SMAP: u64 = 1 << 21;

    pub const EFER_SCE: u64 = 1 << 0;
    pub const EFER_LME: u64 = 1 << 8;
    pub const EFER_LMA: u64 = 1 << 10;
    pub const EFER_NXE: u64 = 1 << 11;
}

/// Model-specific registers that hold state (the rest are computed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msrs {
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub tsc_aux: u64,
    pub apic_base: u64,
    pub pat: u64,
    /// Guest-written TSC adjustment: TSC = icount + tsc_offset (wrapping).
    pub tsc_offset: u64,
    pub misc_enable: u64,
    /// IA32_MTRR_DEF_TYPE.
    pub mtrr_def_type: u64,
    /// IA32_MTRR_PHYSBASE0/PHYSMASK0 .. PHYSBASE7/PHYSMASK7, in MSR order.
    pub mtrr_var: [u64; 16],
    /// Fixed-range MTRRs: 64K_00000, 16K_80000, 16K_A0000, 4K_C0000 .. 4K_F8000.
    pub mtrr_fixed: [u64; 11],
}

/// Processor operating mode, derived from CR0, EFER, RFLAGS.VM and CS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    Real,
    Protected,
    Virtual8086,
    /// Long mode, 64-bit code segment.
    Long64,
    /// Long mode, 16/32-bit code segment.
    Compat,
}

impl Mode {
    /// Human-readable name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Real => "real mode",
            Mode::Protected => "protected mode",
            Mode::Virtual8086 => "virtual-8086 mode",
            Mode::Long64 => "64-bit long mode",
            Mode::Compat => "compatibility mode",
        }
    }
}

/// One logical processor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cpu {
    /// Index of this vCPU in the machine (also its initial APIC id).
    pub index: u32,
    pub gpr: [u64; 16],
    pub rip: u64,
    /// RFLAGS, always materialized (bit 1 reads as one).
    pub rflags: u64,
    pub seg: [Segment; 6],
    pub ldtr: Segment,
    pub tr: Segment,
    pub gdtr: TableReg,
    pub idtr: TableReg,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    /// Task priority (CR8).
    pub cr8: u64,
    pub efer: u64,
    pub dr: [u64; 8],
    pub msr: Msrs,
    /// x87 FPU state (its registers double as the MMX registers).
    pub fpu: crate::x87::Fpu,
    /// XMM0-XMM15 (lane 0 in the low bits).
    pub xmm: [u128; 16],
    /// SSE control/status register.
    pub mxcsr: u32,
    /// XCR0: the state components XSAVE manages (bit 0 x87, bit 1 SSE).
    pub xcr0: u64,
    /// Current privilege level (CS.RPL in protected mode, 3 in V86, 0 in real mode).
    pub cpl: u8,
    /// Retired instructions: virtual time.
    pub icount: u64,
    /// Halted (HLT) until an interrupt arrives.
    pub halted: bool,
    /// Interrupts are inhibited for the instruction at this icount (STI / MOV SS shadow).
    pub shadow_at: u64,
    /// Cached decode width (16, 32 or 64), updated by [`Cpu::update_mode`].
    pub bitness: u32,
    pub mode: Mode,
    /// Set while delivering an exception, to detect #DF and triple faults.
    #[serde(skip)]
    pub delivering: Option<u8>,
    /// Host-side software TLB.
    #[serde(skip)]
    pub tlb: Tlb,
    /// Something changed that ends the current decoded block (mode switch, SMC, I/O).
    #[serde(skip)]
    pub end_block: bool,
    /// Something happened the machine must look at (I/O, MMIO, IF change, HLT): leave the run loop.
    #[serde(skip)]
    pub exit_request: bool,
    /// A debugger's breakpoints and watchpoints, and what this vCPU hit.
    #[serde(skip)]
    pub debug: crate::debug::DebugHooks,
    /// Paging-regime changes, noted for a debugger's reverse search.
    #[serde(skip)]
    pub paging_log: crate::paging_log::PagingLog,
}

impl Cpu {
    /// A processor in its power-on/reset state (real mode at F000:FFF0).
    pub fn new(index: u32) -> Cpu {
        let mut cpu = Cpu {
            index,
            gpr: [0; 16],
            rip: 0xfff0,
            rflags: flags::FIXED,
            seg: [Segment::real(0, attr::DATA_RW); 6],
            ldtr: Segment {
                attr: attr::PRESENT | 2,
                limit: 0xffff,
                ..Segment::default()
            },
            tr: Segment {
                attr: attr::PRESENT | 11,
                limit: 0xffff,
                ..Segment::default()
            },
            gdtr: TableReg {
                base: 0,
                limit: 0xffff,
            },
            idtr: TableReg {
                base: 0,
                limit: 0xffff,
            },
            cr0: cr::CR0_ET | cr::CR0_CD | cr::CR0_NW,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            cr8: 0,
            efer: 0,
            dr: [0, 0, 0, 0, 0xffff0ff0, 0x400, 0xffff0ff0, 0x400],
            msr: Msrs {
                apic_base: 0xfee0_0000 | (1 << 11) | if index == 0 { 1 << 8 } else { 0 },
                pat: 0x0007_0406_0007_0406,
                misc_enable: 1,
                ..Msrs::default()
            },
            fpu: crate::x87::Fpu::new(),
            xmm: [0; 16],
            mxcsr: 0x1f80,
            xcr0: 1,
            cpl: 0,
            icount: 0,
            halted: false,
            shadow_at: u64::MAX,
            bitness: 16,
            mode: Mode::Real,
            delivering: None,
            tlb: Tlb::default(),
            end_block: false,
            exit_request: false,
            debug: crate::debug::DebugHooks::default(),
            paging_log: crate::paging_log::PagingLog::default(),
        };
        cpu.seg[SegReg::Cs as usize] = Segment {
            selector: 0xf000,
            base: 0xffff_0000,
            limit: 0xffff,
            attr: attr::CODE_RX,
        };
        cpu.gpr[reg::RDX] = crate::cpuid::SIGNATURE as u64; // processor signature, as CPUID leaf 1 EAX
        cpu
    }

    /// The cached segment register `s`.
    #[inline(always)]
    pub fn sreg(&self, s: SegReg) -> &Segment {
        &self.seg[s as usize]
    }

    /// Installs a debugger's breakpoints and watchpoints (`None`: none).
    /// The TLB is flushed so that pages now watched leave the fast path.
    pub fn set_debug(&mut self, set: Option<std::sync::Arc<crate::debug::DebugSet>>) {
        self.debug.set = set.filter(|s| !s.is_empty());
        self.debug.hit = None;
        self.tlb.flush_all();
    }

    /// Recomputes [`Cpu::mode`] and [`Cpu::bitness`] after CR0, EFER, RFLAGS.VM or CS changed,
    /// and asks the run loop to leave the current block.
    pub fn update_mode(&mut self) {
        let cs = self.seg[SegReg::Cs as usize];
        let (mode, bits) = if self.cr0 & cr::CR0_PE == 0 {
            (Mode::Real, if cs.db() { 32 } else { 16 })
        } else if self.efer & cr::EFER_LMA != 0 {
            if cs.long() {
                (Mode::Long64, 64)
            } else {
                (Mode::Compat, if cs.db() { 32 } else { 16 })
            }
        } else if self.rflags & flags::VM != 0 {
            (Mode::Virtual8086, 16)
        } else {
            (Mode::Protected, if cs.db() { 32 } else { 16 })
        };
        self.mode = mode;
        self.bitness = bits;
        self.end_block = true;
    }

    /// True in 64-bit mode.
    #[inline(always)]
    pub fn is_long64(&self) -> bool {
        self.bitness == 64
    }

    /// Stack address size in bytes (2, 4 or 8): SS.B in legacy modes, 8 in 64-bit mode.
    #[inline(always)]
    pub fn stack_size(&self) -> u8 {
        if self.bitness == 64 {
            8
        } else if self.seg[SegReg::Ss as usize].db() {
            4
        } else {
            2
        }
    }

    /// True when paging is on.
    #[inline(always)]
    pub fn paging(&self) -> bool {
        self.cr0 & cr::CR0_PG != 0
    }

    /// Current IOPL.
    #[inline(always)]
    pub fn iopl(&self) -> u8 {
        ((self.rflags >> 12) & 3) as u8
    }

    /// Whether a maskable interrupt may be delivered before the next
    /// instruction: IF set and not in an STI / MOV SS interrupt shadow.
    #[inline(always)]
    pub fn interrupts_enabled(&self) -> bool {
        self.rflags & flags::IF != 0 && self.icount != self.shadow_at
    }

    /// Guest-visible time-stamp counter (virtual time: one tick per retired instruction).
    #[inline(always)]
    pub fn tsc(&self) -> u64 {
        self.icount.wrapping_add(self.msr.tsc_offset)
    }
}
