//! Side-effect-free linear → physical translation for debuggers.
//!
//! [`debug_translate`] walks the page tables the way the MMU
//! ([`crate::mmu::translate`]) would for a supervisor read, but touches
//! nothing: no accessed/dirty bits, no CR2, no TLB, no #PF. It checks only
//! that every entry on the way is present; permissions (R/W, U/S, NX) and
//! reserved bits are not checked, since a debugger may look at any mapped
//! byte. Page-table entries are read through a callback, so it works on a
//! machine's RAM as well as on a test's.
//!
//! | paging | root | levels | large pages |
//! |---|---|---|---|
//! | off (CR0.PG = 0) | — | identity | — |
//! | 32-bit (CR4.PAE = 0) | CR3 bits 31:12 | PD, PT (4-byte entries) | 4 MiB with CR4.PSE, PSE-36 bits 39:32 |
//! | PAE (CR4.PAE = 1, EFER.LMA = 0) | CR3 bits 31:5 | PDPTE (4), PD, PT | 2 MiB |
//! | 4-level (EFER.LMA = 1) | CR3 bits 39:12 | PML4, PDPT, PD, PT | 2 MiB; 1 GiB when CPUID advertises it ([`mmu::GBPAGES`]) |
//!
//! Outside long mode (EFER.LMA = 0) the linear address is first truncated
//! to 32 bits, as the processor does.

use crate::mmu::{self, PHYS_ADDR_BITS};
use crate::state::{cr, Cpu};

const P: u64 = 1 << 0;
const PS: u64 = 1 << 7;
/// Physical address bits 39:12 of a PAE/4-level entry.
const ADDR_MASK: u64 = ((1u64 << PHYS_ADDR_BITS) - 1) & !0xfff;

/// Translates linear address `lin` with `cpu`'s current paging mode and
/// page tables, reading 8-byte little-endian page-table words at
/// guest-physical addresses through `read_phys` (None: not readable).
/// Returns the guest-physical address, or None when an entry on the way
/// is not present or cannot be read. Changes nothing anywhere.
pub fn debug_translate(
    cpu: &Cpu,
    read_phys: &mut dyn FnMut(u64) -> Option<u64>,
    lin: u64,
) -> Option<u64> {
    walk(cpu, read_phys, lin, mmu::GBPAGES)
}

/// [`debug_translate`] with the 1 GiB page feature given explicitly.
fn walk(
    cpu: &Cpu,
    read_phys: &mut dyn FnMut(u64) -> Option<u64>,
    lin: u64,
    gbpages: bool,
) -> Option<u64> {
    let long = cpu.efer & cr::EFER_LMA != 0;
    let lin = if long { lin } else { lin & 0xffff_ffff };
    if cpu.cr0 & cr::CR0_PG == 0 {
        return Some(lin);
    }
    if cpu.cr4 & cr::CR4_PAE == 0 {
        // 32-bit paging: 4-byte entries (the low half of the 8-byte read).
        let pde = read_phys((cpu.cr3 & 0xffff_f000) | ((lin >> 22) << 2))? & 0xffff_ffff;
        if pde & P == 0 {
            return None;
        }
        if pde & PS != 0 && cpu.cr4 & cr::CR4_PSE != 0 {
            // 4 MiB page; PSE-36 puts physical bits 39:32 in bits 20:13.
            let hi = ((pde >> 13) & 0xff) << 32;
            return Some((pde & 0xffc0_0000) | hi | (lin & 0x3f_ffff));
        }
        let pte = read_phys((pde & 0xffff_f000) | (((lin >> 12) & 0x3ff) << 2))? & 0xffff_ffff;
        if pte & P == 0 {
            return None;
        }
        return Some((pte & 0xffff_f000) | (lin & 0xfff));
    }
    let (mut table, mut level) = if long {
        (cpu.cr3 & ADDR_MASK, 3u32)
    } else {
        // PAE: four PDPTEs at CR3 bits 31:5.
        let pdpte = read_phys((cpu.cr3 & 0xffff_ffe0) | (((lin >> 30) & 3) << 3))?;
        if pdpte & P == 0 {
            return None;
        }
        (pdpte & ADDR_MASK, 1)
    };
    loop {
        let shift = 12 + 9 * level;
        let e = read_phys(table | (((lin >> shift) & 0x1ff) << 3))?;
        if e & P == 0 {
            return None;
        }
        // PS maps a page in a PDE, and in a PDPTE with 1 GiB pages.
        let large = e & PS != 0 && (level == 1 || (level == 2 && gbpages));
        if level == 0 || large {
            let off = (1u64 << shift) - 1;
            return Some((e & ADDR_MASK & !off) | (lin & off));
        }
        table = e & ADDR_MASK;
        level -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{cpu_in, pte, Pager, Paging, TestBus, TestMode};
    use crate::tlb::Access;

    /// A CPU in the mode `kind` needs, with empty tables enabled.
    fn setup(kind: Paging) -> (Cpu, TestBus, Pager) {
        let mut bus = TestBus::new();
        let mut cpu = cpu_in(if kind == Paging::Long4 {
            TestMode::Long64
        } else {
            TestMode::Protected32
        });
        let pg = Pager::new(&mut bus, kind);
        pg.enable(&mut cpu);
        (cpu, bus, pg)
    }

    fn reader(bus: &TestBus) -> impl FnMut(u64) -> Option<u64> + '_ {
        |gpa| {
            let end = gpa.checked_add(8)?;
            (end as usize <= bus.ram.len()).then(|| bus.read(gpa, 8))
        }
    }

    fn dbg(cpu: &Cpu, bus: &TestBus, lin: u64, gbpages: bool) -> Option<u64> {
        walk(cpu, &mut reader(bus), lin, gbpages)
    }

    /// The MMU's answer for a supervisor read on a copy of the machine,
    /// or None when it faults for a not-present entry.
    fn mmu_gpa(cpu: &Cpu, bus: &TestBus, lin: u64, gbpages: bool) -> Option<u64> {
        let mut c = cpu.clone();
        let mut b = TestBus::new();
        b.ram.copy_from_slice(&bus.ram);
        mmu::walk(&mut c, &mut b, lin, Access::Read, false, gbpages)
            .ok()
            .map(|t| t.gpa)
    }

    /// Checks `debug_translate` against the MMU at `lin` and a few offsets,
    /// that the walk changed no byte of RAM and no register, and returns
    /// the translation of `lin`.
    #[track_caller]
    fn agree(cpu: &Cpu, bus: &TestBus, lin: u64, gbpages: bool) -> Option<u64> {
        let ram = bus.ram.clone();
        let (cr2, cr3) = (cpu.cr2, cpu.cr3);
        for off in [0u64, 1, 0xfff, 0x1234, 0x1f_ffff] {
            let l = lin.wrapping_add(off);
            let got = dbg(cpu, bus, l, gbpages);
            assert_eq!(got, mmu_gpa(cpu, bus, l, gbpages), "lin {l:#x}");
        }
        assert!(bus.ram == ram, "the debug walk wrote memory");
        assert_eq!((cpu.cr2, cpu.cr3), (cr2, cr3));
        dbg(cpu, bus, lin, gbpages)
    }

    #[test]
    fn paging_off_is_identity_masked_to_32_bits() {
        let bus = TestBus::new();
        let cpu = cpu_in(TestMode::Protected32);
        assert_eq!(dbg(&cpu, &bus, 0x1234_5678, false), Some(0x1234_5678));
        assert_eq!(dbg(&cpu, &bus, 0x1_0000_0010, false), Some(0x10));
        let real = cpu_in(TestMode::Real);
        assert_eq!(dbg(&real, &bus, 0xf_fff0, false), Some(0xf_fff0));
        assert_eq!(agree(&cpu, &bus, 0x1_0000_0010, false), Some(0x10));
    }

    #[test]
    fn bits32_small_and_4m_pages_and_pse36() {
        let (mut cpu, mut bus, mut pg) = setup(Paging::Bits32);
        pg.map(&mut bus, 0x4012_3000, 0x65_4000, pte::PWU, 12);
        pg.map(&mut bus, 0x0040_0000, 0x00c0_0000, pte::P, 22);
        pg.map(&mut bus, 0x0080_0000, 0xab_0040_0000, pte::PWU, 22);
        assert_eq!(agree(&cpu, &bus, 0x4012_3000, false), Some(0x65_4000));
        assert_eq!(agree(&cpu, &bus, 0x0052_3456, false), Some(0x00d2_3456));
        assert_eq!(agree(&cpu, &bus, 0x0080_0010, false), Some(0xab_0040_0010));
        assert_eq!(agree(&cpu, &bus, 0x9000_0000, false), None);
        // Above 4 GiB the address wraps outside long mode.
        assert_eq!(dbg(&cpu, &bus, 0x1_4012_3004, false), Some(0x65_4004));
        // Without CR4.PSE the PS bit is ignored: the PDE points at a table.
        cpu.cr4 &= !cr::CR4_PSE;
        let pt = 0x60_0000u64;
        bus.put(pt + 4 * 0x123, 4, 0x77_7000 | pte::PWU);
        pg.write(&mut bus, 0x0040_0000, 1, pt | pte::PWU | pte::PS);
        assert_eq!(agree(&cpu, &bus, 0x0052_3456, false), Some(0x77_7456));
    }

    #[test]
    fn pae_pdptes_and_2m_pages() {
        let (cpu, mut bus, mut pg) = setup(Paging::Pae);
        pg.map(&mut bus, 0xc000_1000, 0x55_5000, pte::P, 12);
        pg.map(&mut bus, 0x4020_0000, 0x60_0000, pte::PWU, 21);
        assert_eq!(agree(&cpu, &bus, 0xc000_1abc, false), Some(0x55_5abc));
        assert_eq!(agree(&cpu, &bus, 0x4020_0000, false), Some(0x60_0000));
        assert_eq!(agree(&cpu, &bus, 0x4030_0001, false), Some(0x70_0001));
        // A missing PDPTE, PDE or PTE.
        assert_eq!(agree(&cpu, &bus, 0x0000_1000, false), None);
        assert_eq!(agree(&cpu, &bus, 0xc040_0000, false), None);
        assert_eq!(agree(&cpu, &bus, 0xc000_3000, false), None);
    }

    #[test]
    fn four_level_pages_of_every_size() {
        let (cpu, mut bus, mut pg) = setup(Paging::Long4);
        let hi = 0xffff_8000_0000_0000u64;
        pg.map(&mut bus, hi + 0x1000, 0x55_5000, pte::P | pte::RW, 12);
        pg.map(&mut bus, hi + 0x20_0000, 0x60_0000, pte::P, 21);
        pg.map(&mut bus, 0x80_0000_0000, 0xc0_0000_0000, pte::PWU, 30);
        assert_eq!(agree(&cpu, &bus, hi + 0x1234, false), Some(0x55_5234));
        assert_eq!(agree(&cpu, &bus, hi + 0x3f_fff8, false), Some(0x7f_fff8));
        assert_eq!(agree(&cpu, &bus, hi + 0x7000_0000, false), None);
        // 1 GiB pages only where the CPU has them (the MMU faults otherwise;
        // the debug walk then reads the PDPTE as a table pointer and misses).
        assert_eq!(
            agree(&cpu, &bus, 0x80_1234_5678, true),
            Some(0xc0_1234_5678)
        );
        assert_eq!(agree(&cpu, &bus, 0x80_1234_5678, false), None);
        // Linear addresses are not truncated in long mode.
        assert_eq!(agree(&cpu, &bus, 0x1_0000_1000, false), None);
    }

    #[test]
    fn permissions_and_supervisor_bits_do_not_matter() {
        for kind in [Paging::Bits32, Paging::Pae, Paging::Long4] {
            let (cpu, mut bus, mut pg) = setup(kind);
            let lin = 0x4000_0000u64;
            // Read-only, supervisor-only, no-execute: still mapped.
            pg.map(&mut bus, lin, 0x50_0000, pte::P, 12);
            let pde = pg.read(&mut bus, lin, 1);
            pg.write(&mut bus, lin, 1, pde & !(pte::US | pte::RW));
            assert_eq!(dbg(&cpu, &bus, lin + 8, false), Some(0x50_0008), "{kind:?}");
            assert_eq!(mmu_gpa(&cpu, &bus, lin + 8, false), Some(0x50_0008));
            // Accessed bits stay clear.
            assert_eq!(pg.read(&mut bus, lin, 0) & pte::A, 0, "{kind:?}");
        }
    }

    #[test]
    fn tables_outside_ram_translate_to_none() {
        let (mut cpu, bus, _) = setup(Paging::Long4);
        cpu.cr3 = 0x7f_0000_0000;
        assert_eq!(dbg(&cpu, &bus, 0x1000, false), None);
        let (mut cpu, bus, _) = setup(Paging::Bits32);
        cpu.cr3 = 0xffff_f000;
        assert_eq!(dbg(&cpu, &bus, 0x1000, false), None);
    }
}
