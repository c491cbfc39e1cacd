//! [`Cpu`] ⇄ register blocks of the three views.
//!
//! Reading fills a [`RegBlock`] from a vCPU; writing (a `G` packet: gdb
//! sends the whole block even when one register changed) compares the
//! block with the vCPU's current one and applies only the registers that
//! differ, through [`Debuggee::edit_cpu`](crate::Debuggee::edit_cpu).
//!
//! | register | read | write |
//! |---|---|---|
//! | `rip`/`eip` | linear PC: CS.base + rIP (32-bit) outside 64-bit mode, rIP in it | rIP = value − CS.base; refused when that does not fit the code segment's IP width (16-bit code: 0..=0xffff) |
//! | `eflags` | RFLAGS bits 31:0 | undefined bits cleared, bit 1 set; the mode is recomputed (VM) |
//! | `cs`..`gs` | selector | selector only (hidden base/limit/attributes unchanged), except in real and virtual-8086 mode where base = selector × 16 as the CPU would load it; CPL is not changed |
//! | `st0`..`st7` | ST(i) as 80-bit | ST(i), its tag recomputed (so a written register is valid) |
//! | `ftag` | full tag word, re-classified as FNSTENV stores it | raw (applied after `st*`) |
//! | `fs_base`/`gs_base` | segment base | segment base |
//! | `cr0`/`cr3`/`cr4`/`efer` | raw | raw; the mode is recomputed and the TLB flushed |
//! | narrow views (i386/i8086) | low 32 bits | low 32 bits replaced, upper bits kept |

use hindsight_cpu::flags;
use hindsight_cpu::state::Mode;
use hindsight_cpu::x87::F80;
use hindsight_cpu::{Cpu, SegReg};

use crate::arch::{Reg, RegBlock, ViewSpec};

/// The linear address of `cpu`'s next instruction: what gdb sees as `$pc`.
pub fn linear_pc(cpu: &Cpu) -> u64 {
    if cpu.mode == Mode::Long64 {
        cpu.rip
    } else {
        cpu.seg[SegReg::Cs as usize].base.wrapping_add(cpu.rip) & 0xffff_ffff
    }
}

/// The full-width value of `r` in `cpu`.
pub fn get(cpu: &Cpu, r: Reg) -> u128 {
    let f = &cpu.fpu;
    match r {
        Reg::Gpr(i) => cpu.gpr[i as usize] as u128,
        Reg::Pc => linear_pc(cpu) as u128,
        Reg::Eflags => (cpu.rflags & 0xffff_ffff) as u128,
        Reg::Seg(s) => cpu.seg[s as usize].selector as u128,
        Reg::St(i) => {
            let mut b = [0u8; 16];
            b[..10].copy_from_slice(&f.st(i as usize).to_bytes());
            u128::from_le_bytes(b)
        }
        Reg::Fctrl => f.cw as u128,
        Reg::Fstat => f.sw as u128,
        Reg::Ftag => f.stored_tag_word() as u128,
        Reg::Fiseg => f.fcs as u128,
        Reg::Fioff => (f.fip & 0xffff_ffff) as u128,
        Reg::Foseg => f.fds as u128,
        Reg::Fooff => (f.fdp & 0xffff_ffff) as u128,
        Reg::Fop => (f.fop & 0x7ff) as u128,
        Reg::Xmm(i) => cpu.xmm[i as usize],
        Reg::Mxcsr => cpu.mxcsr as u128,
        Reg::FsBase => cpu.seg[SegReg::Fs as usize].base as u128,
        Reg::GsBase => cpu.seg[SegReg::Gs as usize].base as u128,
        Reg::KGsBase => cpu.msr.kernel_gs_base as u128,
        Reg::Cr0 => cpu.cr0 as u128,
        Reg::Cr2 => cpu.cr2 as u128,
        Reg::Cr3 => cpu.cr3 as u128,
        Reg::Cr4 => cpu.cr4 as u128,
        Reg::Cr8 => cpu.cr8 as u128,
        Reg::Efer => cpu.efer as u128,
    }
}

fn mask(bits: u32) -> u128 {
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

/// Fills `block` from `cpu`.
pub fn fill<S: ViewSpec>(cpu: &Cpu, block: &mut RegBlock<S>) {
    let l = RegBlock::<S>::layout();
    block.vals.clear();
    block
        .vals
        .extend(l.regs.iter().map(|d| get(cpu, d.reg) & mask(d.bits)));
}

/// One register write, resolved against the vCPU it applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edit {
    /// The register.
    pub reg: Reg,
    /// The full-width value to store (narrow writes already merged).
    pub value: u128,
}

/// The edits that turn `cpu` into what `block` says, or why not (a PC
/// the code segment cannot reach). Registers equal to the current ones
/// are left out; the order is the order of [`apply`].
pub fn plan<S: ViewSpec>(cpu: &Cpu, block: &RegBlock<S>) -> Result<Vec<Edit>, String> {
    let l = RegBlock::<S>::layout();
    if block.vals.len() != l.regs.len() {
        return Err("register block of the wrong size".into());
    }
    let mut edits = Vec::new();
    let mut pc = None;
    for (d, &v) in l.regs.iter().zip(&block.vals) {
        let m = mask(d.bits);
        let old = get(cpu, d.reg);
        if old & m == v & m {
            continue;
        }
        // A narrow view replaces the bits it shows and keeps the rest.
        let value = (old & !m) | (v & m);
        match d.reg {
            Reg::Pc => pc = Some((v & m, value)),
            reg => edits.push(Edit { reg, value }),
        }
    }
    // Segments first (CS moves the PC's base), the x87 tag word after the
    // stack registers (writing ST(i) retags it), the PC last.
    edits.sort_by_key(|e| match e.reg {
        Reg::Seg(_) => 0,
        Reg::Ftag => 2,
        _ => 1,
    });
    if let Some((pc, merged)) = pc {
        let pc = pc as u64;
        let rip = if cpu.mode == Mode::Long64 {
            merged as u64
        } else {
            let cs_base = match edits.iter().find(|e| e.reg == Reg::Seg(SegReg::Cs)) {
                Some(e) if real_like(cpu) => (e.value as u64 & 0xffff) << 4,
                _ => cpu.seg[SegReg::Cs as usize].base,
            };
            let ip = pc.wrapping_sub(cs_base) & 0xffff_ffff;
            if cpu.bitness == 16 && ip > 0xffff {
                return Err(format!(
                    "pc {pc:#x} is outside the 16-bit code segment at base {cs_base:#x} \
                     (set $cs first)"
                ));
            }
            ip
        };
        edits.push(Edit {
            reg: Reg::Pc,
            value: rip as u128,
        });
    }
    Ok(edits)
}

/// Real-address and virtual-8086 mode load a segment base from its selector.
fn real_like(cpu: &Cpu) -> bool {
    matches!(cpu.mode, Mode::Real | Mode::Virtual8086)
}

/// Applies edits from [`plan`] to `cpu` (a [`Reg::Pc`] edit holds rIP).
pub fn apply(cpu: &mut Cpu, edits: &[Edit]) {
    let mut mode_changed = false;
    let mut paging_changed = false;
    for e in edits {
        let v64 = e.value as u64;
        match e.reg {
            Reg::Gpr(i) => cpu.gpr[i as usize] = v64,
            Reg::Pc => cpu.rip = v64,
            Reg::Eflags => {
                cpu.rflags = (v64 & flags::ALL_DEFINED) | flags::FIXED;
                mode_changed = true;
            }
            Reg::Seg(s) => {
                let real = real_like(cpu);
                let seg = &mut cpu.seg[s as usize];
                seg.selector = v64 as u16;
                if real {
                    seg.base = (v64 & 0xffff) << 4;
                }
                mode_changed |= s == SegReg::Cs;
            }
            Reg::St(i) => {
                let b = e.value.to_le_bytes();
                let mut ten = [0u8; 10];
                ten.copy_from_slice(&b[..10]);
                cpu.fpu.set_st(i as usize, F80::from_bytes(ten));
            }
            Reg::Fctrl => cpu.fpu.cw = v64 as u16,
            Reg::Fstat => cpu.fpu.sw = v64 as u16,
            Reg::Ftag => cpu.fpu.tw = v64 as u16,
            Reg::Fiseg => cpu.fpu.fcs = v64 as u16,
            Reg::Fioff => cpu.fpu.fip = v64,
            Reg::Foseg => cpu.fpu.fds = v64 as u16,
            Reg::Fooff => cpu.fpu.fdp = v64,
            Reg::Fop => cpu.fpu.fop = v64 as u16 & 0x7ff,
            Reg::Xmm(i) => cpu.xmm[i as usize] = e.value,
            Reg::Mxcsr => cpu.mxcsr = v64 as u32,
            Reg::FsBase => cpu.seg[SegReg::Fs as usize].base = v64,
            Reg::GsBase => cpu.seg[SegReg::Gs as usize].base = v64,
            Reg::KGsBase => cpu.msr.kernel_gs_base = v64,
            Reg::Cr0 => {
                cpu.cr0 = v64;
                mode_changed = true;
                paging_changed = true;
            }
            Reg::Cr2 => cpu.cr2 = v64,
            Reg::Cr3 => {
                cpu.cr3 = v64;
                paging_changed = true;
            }
            Reg::Cr4 => {
                cpu.cr4 = v64;
                paging_changed = true;
            }
            Reg::Cr8 => cpu.cr8 = v64 & 0xf,
            Reg::Efer => {
                cpu.efer = v64;
                mode_changed = true;
                paging_changed = true;
            }
        }
    }
    if mode_changed {
        cpu.update_mode();
    }
    if paging_changed {
        cpu.tlb.flush_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{layout, ArchView, I386View, I8086View, X86_64View};
    use hindsight_cpu::state::{attr, cr, Segment};

    /// A vCPU in 64-bit mode with recognisable values everywhere.
    pub(crate) fn long_cpu() -> Cpu {
        let mut c = Cpu::new(0);
        c.cr0 = cr::CR0_PE | cr::CR0_PG | cr::CR0_ET;
        c.cr4 = cr::CR4_PAE;
        c.cr3 = 0x1000;
        c.efer = cr::EFER_LME | cr::EFER_LMA;
        c.seg[SegReg::Cs as usize] = Segment {
            selector: 0x10,
            base: 0,
            limit: 0xffff_ffff,
            attr: attr::CODE_RX | attr::LONG,
        };
        c.update_mode();
        for (i, g) in c.gpr.iter_mut().enumerate() {
            *g = 0x1111_1111_1111_1111 * (i as u64 + 1);
        }
        c.rip = 0xffff_ffff_8100_0000;
        c.seg[SegReg::Fs as usize].base = 0x7f00_1234_5000;
        c.seg[SegReg::Gs as usize].base = 0xffff_8880_0000_0000;
        c.msr.kernel_gs_base = 0x4242;
        c.cr2 = 0xdead_b000;
        c.cr8 = 3;
        c.xmm[15] = 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10;
        c.fpu.set_st(
            0,
            F80 {
                sign: false,
                exp: 0x4001,
                mant: 0xe000_0000_0000_0000,
            },
        ); // 7.0
        c
    }

    fn real_cpu() -> Cpu {
        let mut c = Cpu::new(0);
        c.seg[SegReg::Cs as usize] = Segment::real(0x07c0, attr::CODE_RX);
        c.rip = 0x10;
        c.update_mode();
        c
    }

    fn block<S: ViewSpec>(cpu: &Cpu) -> RegBlock<S> {
        let mut b = RegBlock::<S>::default();
        fill(cpu, &mut b);
        b
    }

    fn set<S: ViewSpec>(b: &mut RegBlock<S>, name: &str, v: u128) {
        let i = layout(S::VIEW)
            .index_of(name)
            .unwrap_or_else(|| panic!("no {name}"));
        b.vals[i] = v;
    }

    #[test]
    fn x86_64_view_reads_everything() {
        let c = long_cpu();
        let b = block::<X86_64View>(&c);
        assert_eq!(b.get("rax"), Some(0x1111_1111_1111_1111));
        assert_eq!(
            b.get("rbx"),
            Some(0x4444_4444_4444_4444),
            "gdb order: rbx is gpr 3"
        );
        assert_eq!(b.get("rip"), Some(0xffff_ffff_8100_0000));
        assert_eq!(b.get("cs"), Some(0x10));
        assert_eq!(b.get("fs_base"), Some(0x7f00_1234_5000));
        assert_eq!(b.get("gs_base"), Some(0xffff_8880_0000_0000));
        assert_eq!(b.get("k_gs_base"), Some(0x4242));
        assert_eq!(b.get("cr3"), Some(0x1000));
        assert_eq!(b.get("cr2"), Some(0xdead_b000));
        assert_eq!(b.get("efer"), Some((cr::EFER_LME | cr::EFER_LMA) as u128));
        assert_eq!(b.get("xmm15"), Some(c.xmm[15]));
        assert_eq!(b.get("mxcsr"), Some(0x1f80));
        assert_eq!(b.get("fctrl"), Some(0x37f));
        // ST(0) = 7.0 as an 80-bit value, tagged valid (00) in R7.
        assert_eq!(b.get("st0"), Some(0x4001_e000_0000_0000_0000));
        assert_eq!(b.get("fstat").map(|s| (s >> 11) & 7), Some(0));
        assert_eq!(b.get("ftag"), Some(0xfffc));
    }

    #[test]
    fn narrow_views_truncate_and_keep_upper_bits_on_write() {
        let c = long_cpu();
        let mut b = block::<I386View>(&c);
        assert_eq!(b.get("eax"), Some(0x1111_1111));
        assert_eq!(b.get("ebx"), Some(0x4444_4444));
        assert_eq!(b.get("eip"), Some(0x8100_0000));
        assert_eq!(b.get("fs_base"), Some(0x1234_5000));
        set(&mut b, "eax", 0xcafe_f00d);
        set(&mut b, "gs_base", 0x1000);
        let edits = plan(&c, &b).unwrap();
        assert_eq!(edits.len(), 2, "{edits:?}");
        let mut c2 = c.clone();
        apply(&mut c2, &edits);
        assert_eq!(c2.gpr[0], 0x1111_1111_cafe_f00d);
        assert_eq!(c2.seg[SegReg::Gs as usize].base, 0xffff_8880_0000_1000);
        assert_eq!(c2.gpr[1..], c.gpr[1..]);
    }

    #[test]
    fn unchanged_blocks_plan_nothing_and_round_trip() {
        fn check<S: ViewSpec>(c: &Cpu) {
            let b = block::<S>(c);
            assert_eq!(plan(c, &b), Ok(vec![]), "{}", S::VIEW);
            // Every register written to a new value reads back as written.
            let l = layout(S::VIEW);
            for (i, d) in l.regs.iter().enumerate() {
                let mut nb = b.clone();
                let v = match d.reg {
                    // Values the CPU keeps as written.
                    Reg::Eflags => 0x246,
                    Reg::Cr8 => 5,
                    Reg::Fop => 0x123,
                    Reg::Pc => b.vals[i] + 4,
                    Reg::St(_) => 0x3fff_8000_0000_0000_0000, // 1.0
                    Reg::Ftag if b.vals[i] == 0xffff => 0xfff7,
                    Reg::Ftag => 0xffff,
                    Reg::Fctrl | Reg::Fstat | Reg::Fiseg | Reg::Foseg | Reg::Seg(_) => 0x1234,
                    _ => 0x1234_5678 & mask(d.bits),
                };
                nb.vals[i] = v;
                let edits = plan(c, &nb).unwrap_or_else(|e| panic!("{}: {e}", d.name));
                let mut c2 = c.clone();
                apply(&mut c2, &edits);
                let back = block::<S>(&c2);
                assert_eq!(back.vals[i], v, "{} {} wrote {v:#x}", S::VIEW, d.name);
            }
        }
        check::<X86_64View>(&long_cpu());
        check::<I386View>(&long_cpu());
        check::<I8086View>(&real_cpu());
    }

    #[test]
    fn real_mode_pc_is_cs_times_16_plus_ip() {
        let c = real_cpu();
        let b = block::<I8086View>(&c);
        assert_eq!(b.get("eip"), Some(0x7c10));
        assert_eq!(b.get("cs"), Some(0x07c0));
        assert_eq!(linear_pc(&c), 0x7c10);
        // Writing the PC moves IP within CS.
        let mut nb = b.clone();
        set(&mut nb, "eip", 0x7d00);
        let mut c2 = c.clone();
        apply(&mut c2, &plan(&c, &nb).unwrap());
        assert_eq!((c2.rip, linear_pc(&c2)), (0x100, 0x7d00));
        // CS and PC together: the new CS base applies.
        set(&mut nb, "cs", 0x1000);
        set(&mut nb, "eip", 0x10005);
        let mut c3 = c.clone();
        apply(&mut c3, &plan(&c, &nb).unwrap());
        assert_eq!(c3.seg[SegReg::Cs as usize].base, 0x10000);
        assert_eq!(c3.rip, 5);
        // Out of the segment's reach.
        let mut far = b.clone();
        set(&mut far, "eip", 0x9_0000);
        let e = plan(&c, &far).unwrap_err();
        assert!(e.contains("outside the 16-bit code segment"), "{e}");
    }

    #[test]
    fn system_register_writes_recompute_the_mode() {
        let c = real_cpu();
        let mut b = block::<I386View>(&c);
        set(&mut b, "cr0", (c.cr0 | cr::CR0_PE) as u128);
        let mut c2 = c.clone();
        apply(&mut c2, &plan(&c, &b).unwrap());
        assert_eq!(c2.mode, Mode::Protected);
        let mut b = block::<I386View>(&c);
        set(&mut b, "eflags", 0xffff_ffff);
        let mut c3 = c.clone();
        apply(&mut c3, &plan(&c, &b).unwrap());
        assert_eq!(c3.rflags, flags::ALL_DEFINED);
    }

    #[test]
    fn wrong_sized_blocks_are_refused() {
        let c = long_cpu();
        let mut b = block::<X86_64View>(&c);
        b.vals.pop();
        assert!(plan(&c, &b).is_err());
    }

    #[test]
    fn every_view_has_the_same_register_kinds_as_its_layout() {
        for v in ArchView::ALL {
            let l = layout(v);
            assert_eq!(l.regs.iter().filter(|r| r.reg == Reg::Pc).count(), 1);
        }
    }
}
