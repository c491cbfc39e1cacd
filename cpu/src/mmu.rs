//! Page-table walks (Intel SDM vol. 3 ch. 4): 32-bit paging (4 KiB pages and,
//! with CR4.PSE, 4 MiB pages including PSE-36 address bits), PAE paging
//! (PDPTEs, 2 MiB pages) and 4-level paging (1 GiB pages when advertised),
//! with U/S, R/W, NX and CR0.WP checks, reserved-bit checks, accessed/dirty
//! updates and #PF error codes (SDM 4.7). Segmentation is applied before this
//! (see `memory.rs`), including the canonical check of 64-bit addresses.
//!
//! Deviations: PAE PDPTEs are read from memory on every walk instead of being
//! latched at CR3 load (SDM 4.4.1); no guest we run depends on the stale copy.
//! Accessed/dirty bits are set only by walks that succeed (the SDM allows
//! either). SMEP, SMAP and protection keys are not advertised by CPUID, so
//! CR4 cannot enable them and they are not modelled.

use crate::bus::Bus;
use crate::cpuid;
use crate::fault::{vector, Fault, Result};
use crate::state::{cr, Cpu};
use crate::tlb::Access;

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const G: u64 = 1 << 8;
const NX: u64 = 1 << 63;

/// Guest physical address width advertised by CPUID 0x80000008.
pub const PHYS_ADDR_BITS: u32 = 40;
/// Mask of physical address bits in a 64-bit paging entry.
const ADDR_MASK: u64 = ((1u64 << PHYS_ADDR_BITS) - 1) & !0xfff;
/// Bits 51:MAXPHYADDR, reserved in every present PAE/4-level entry (SDM 4.4.2, 4.5.5).
const RSVD_51_M: u64 = ((1u64 << 52) - 1) & !((1u64 << PHYS_ADDR_BITS) - 1);
/// Bits 62:52: ignored by 4-level paging but reserved by PAE paging (SDM 4.4.2).
const BITS_62_52: u64 = ((1u64 << 63) - 1) & !((1u64 << 52) - 1);

/// Whether 1 GiB pages exist (CPUID.80000001H:EDX.Page1GB); without them
/// PS in a PDPTE is reserved (SDM 4.5.5).
pub const GBPAGES: bool = cpuid::EXT1_EDX & cpuid::ext1::PDPE1GB != 0;

/// #PF error-code bits.
pub mod pf {
    pub const PRESENT: u32 = 1 << 0;
    pub const WRITE: u32 = 1 << 1;
    pub const USER: u32 = 1 << 2;
    pub const RSVD: u32 = 1 << 3;
    pub const FETCH: u32 = 1 << 4;
}

/// A successful translation.
#[derive(Clone, Copy, Debug)]
pub struct Translation {
    /// Guest-physical address of the accessed byte.
    pub gpa: u64,
    /// The final entry was global.
    pub global: bool,
    /// log2 of the size of the page that maps the address (12, 21, 22 or 30;
    /// 12 with paging off), so INVLPG can drop every piece of a large page.
    pub page_shift: u8,
}
/// Reads a little-endian value of `size` bytes from guest-physical memory.
pub fn phys_read(bus: &mut dyn Bus, gpa: u64, size: u8, icount: u64) -> u64 {
    let off = (gpa & 0xfff) as usize;
    if off + size as usize <= 4096 {
        if let Some(host) = bus.ram_page(gpa & !0xfff) {
            // SAFETY: the bus guarantees `host` points to a live 4 KiB page and
            // the access stays within it.
            unsafe {
                let p = host.add(off);
                return match size {
                    1 => *p as u64,
                    2 => (p as *const u16).read_unaligned() as u64,
                    4 => (p as *const u32).read_unaligned() as u64,
                    _ => (p as *const u64).read_unaligned(),
                };
            }
        }
        return bus.mmio_read(gpa, size, icount);
    }
    let mut v = 0u64;
    for i in 0..size as u64 {
        v |= phys_read(bus, gpa.wrapping_add(i), 1, icount) << (8 * i);
    }
    v
}

/// Writes a little-endian value of `size` bytes to guest-physical memory.
/// Stores to pages holding decoded code are not detected here: callers that
/// can hit code (not page-table A/D updates) go through `Ctx::write_lin`.
pub fn phys_write(bus: &mut dyn Bus, gpa: u64, size: u8, value: u64, icount: u64) {
    let off = (gpa & 0xfff) as usize;
    if off + size as usize <= 4096 {
        if let Some(page) = bus.ram_page_mut(gpa & !0xfff) {
            // SAFETY: as in `phys_read`.
            unsafe {
                let p = page.host.add(off);
                match size {
                    1 => *p = value as u8,
                    2 => (p as *mut u16).write_unaligned(value as u16),
                    4 => (p as *mut u32).write_unaligned(value as u32),
                    _ => (p as *mut u64).write_unaligned(value),
                }
            }
            return;
        }
        bus.mmio_write(gpa, size, value, icount);
        return;
    }
    for i in 0..size as u64 {
        phys_write(bus, gpa.wrapping_add(i), 1, value >> (8 * i), icount);
    }
}

fn page_fault(cpu: &mut Cpu, lin: u64, code: u32) -> Fault {
    cpu.cr2 = lin;
    Fault::Exception {
        vector: vector::PF,
        error_code: Some(code),
    }
}

/// Translates linear address `lin` for an access of `kind` at privilege
/// `user` (CPL 3 and not an implicit supervisor access). With paging off the
/// linear address is the physical one. On failure CR2 holds the faulting
/// linear address and the error code follows SDM 4.7.
pub fn translate(
    cpu: &mut Cpu,
    bus: &mut dyn Bus,
    lin: u64,
    kind: Access,
    user: bool,
) -> Result<Translation> {
    walk(cpu, bus, lin, kind, user, GBPAGES)
}

/// [`translate`] with the 1 GiB page feature given explicitly (tests cover both).
pub(crate) fn walk(
    cpu: &mut Cpu,
    bus: &mut dyn Bus,
    lin: u64,
    kind: Access,
    user: bool,
    gbpages: bool,
) -> Result<Translation> {
    let long = cpu.efer & cr::EFER_LMA != 0;
    // Outside IA-32e mode linear addresses are 32 bits wide.
    let lin = if long { lin } else { lin & 0xffff_ffff };
    if cpu.cr0 & cr::CR0_PG == 0 {
        return Ok(Translation {
            gpa: lin,
            global: false,
            page_shift: 12,
        });
    }
    let write = kind == Access::Write;
    let fetch = kind == Access::Exec;
    let pae = cpu.cr4 & cr::CR4_PAE != 0;
    let nxe = cpu.efer & cr::EFER_NXE != 0;
    let mut code = 0u32;
    if write {
        code |= pf::WRITE;
    }
    if user {
        code |= pf::USER;
    }
    // I/D is reported only where NX exists: PAE or 4-level paging with
    // EFER.NXE (SMEP, the other condition, is not supported).
    if fetch && nxe && pae {
        code |= pf::FETCH;
    }
    let rsvd_fault = code | pf::PRESENT | pf::RSVD;

    // (entry address, entry value) of every level walked, root first.
    let mut levels: [(u64, u64); 4] = [(0, 0); 4];
    let mut nlevels = 0usize;
    let (gpa, leaf, page_shift) = if !pae {
        // 32-bit paging (SDM 4.3).
        let pde_addr = (cpu.cr3 & 0xffff_f000) | ((lin >> 22) << 2);
        let pde = phys_read(bus, pde_addr, 4, cpu.icount);
        if pde & P == 0 {
            return Err(page_fault(cpu, lin, code));
        }
        levels[0] = (pde_addr, pde);
        nlevels = 1;
        if pde & PS != 0 && cpu.cr4 & cr::CR4_PSE != 0 {
            // 4 MiB page. PSE-36: bits 20:13 hold physical bits 39:32
            // (M = 40); bit 21 (21:M-19) is reserved.
            if pde & (1 << 21) != 0 {
                return Err(page_fault(cpu, lin, rsvd_fault));
            }
            let hi = ((pde >> 13) & 0xff) << 32;
            let base = (pde & 0xffc0_0000) | hi;
            (base | (lin & 0x3f_ffff), pde, 22)
        } else {
            let pte_addr = (pde & 0xffff_f000) | (((lin >> 12) & 0x3ff) << 2);
            let pte = phys_read(bus, pte_addr, 4, cpu.icount);
            if pte & P == 0 {
                return Err(page_fault(cpu, lin, code));
            }
            levels[1] = (pte_addr, pte);
            nlevels = 2;
            ((pte & 0xffff_f000) | (lin & 0xfff), pte, 12)
        }
    } else {
        // Reserved in every present entry: bits 51:M, XD without EFER.NXE,
        // and with PAE paging also bits 62:52 (SDM 4.4.2, 4.5.5).
        let mut rsvd_all = RSVD_51_M;
        if !nxe {
            rsvd_all |= NX;
        }
        if !long {
            rsvd_all |= BITS_62_52;
        }
        let (mut table, mut level) = if long {
            (cpu.cr3 & ADDR_MASK, 3u32)
        } else {
            // PAE: CR3 bits 31:5 locate four 8-byte PDPTEs (SDM 4.4.1).
            let pdpte_addr = (cpu.cr3 & 0xffff_ffe0) | (((lin >> 30) & 3) << 3);
            let pdpte = phys_read(bus, pdpte_addr, 8, cpu.icount);
            if pdpte & P == 0 {
                return Err(page_fault(cpu, lin, code));
            }
            // PDPTEs have no R/W, U/S, A or XD: bits 63:M, 8:5 and 2:1 are reserved.
            if pdpte & (RSVD_51_M | BITS_62_52 | NX | 0x1e6) != 0 {
                return Err(page_fault(cpu, lin, rsvd_fault));
            }
            (pdpte & ADDR_MASK, 1)
        };
        loop {
            let shift = 12 + 9 * level;
            let addr = table | (((lin >> shift) & 0x1ff) << 3);
            let e = phys_read(bus, addr, 8, cpu.icount);
            if e & P == 0 {
                return Err(page_fault(cpu, lin, code));
            }
            let mut rsvd = rsvd_all;
            // PS is reserved in a PML4E, and in a PDPTE without 1 GiB pages.
            if level == 3 || (level == 2 && !gbpages) {
                rsvd |= PS;
            }
            if level != 0 && e & PS != 0 {
                // Large page: the address bits below the page size, above the
                // PAT bit (12), are reserved: 29:13 (1 GiB) or 20:13 (2 MiB).
                rsvd |= ((1u64 << shift) - 1) & !0x1fff;
            }
            if e & rsvd != 0 {
                return Err(page_fault(cpu, lin, rsvd_fault));
            }
            levels[nlevels] = (addr, e);
            nlevels += 1;
            if level == 0 || e & PS != 0 {
                let off_mask = (1u64 << shift) - 1;
                break (
                    (e & ADDR_MASK & !off_mask) | (lin & off_mask),
                    e,
                    shift as u8,
                );
            }
            table = e & ADDR_MASK;
            level -= 1;
        }
    };

    // Effective rights (SDM 4.6): R/W and U/S combine by AND over all levels,
    // XD by OR. Supervisor writes to read-only pages are allowed with CR0.WP=0.
    let mut rw = true;
    let mut us = true;
    let mut nx = false;
    for &(_, e) in &levels[..nlevels] {
        rw &= e & RW != 0;
        us &= e & US != 0;
        nx |= e & NX != 0;
    }
    let wp = cpu.cr0 & cr::CR0_WP != 0;
    let denied = (user && !us) || (write && !rw && (user || wp)) || (fetch && nxe && nx);
    if denied {
        return Err(page_fault(cpu, lin, code | pf::PRESENT));
    }

    // Accessed bits on every level used, dirty on the leaf for writes (SDM 4.8).
    let entry_size = if pae { 8 } else { 4 };
    for (i, &(addr, e)) in levels[..nlevels].iter().enumerate() {
        let mut new = e | A;
        if i == nlevels - 1 && write {
            new |= D;
        }
        if new != e {
            phys_write(bus, addr, entry_size, new, cpu.icount);
        }
    }
    Ok(Translation {
        gpa,
        global: cpu.cr4 & cr::CR4_PGE != 0 && leaf & G != 0,
        page_shift,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{cpu_in, pte, Pager, Paging, TestBus, TestMode};

    const PF_P: u32 = pf::PRESENT;
    const PF_W: u32 = pf::WRITE;
    const PF_U: u32 = pf::USER;
    const PF_R: u32 = pf::RSVD;
    const PF_I: u32 = pf::FETCH;

    /// A CPU in the mode that `kind` needs, and a bus with empty tables enabled.
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

    fn tr(
        cpu: &mut Cpu,
        bus: &mut TestBus,
        lin: u64,
        kind: Access,
        user: bool,
    ) -> Result<Translation> {
        translate(cpu, bus, lin, kind, user)
    }

    /// Expects a #PF with `code` and CR2 = `lin`.
    #[track_caller]
    fn expect_pf(cpu: &mut Cpu, bus: &mut TestBus, lin: u64, kind: Access, user: bool, code: u32) {
        cpu.cr2 = 0xdead;
        match tr(cpu, bus, lin, kind, user) {
            Err(Fault::Exception {
                vector: vector::PF,
                error_code: Some(c),
            }) => {
                assert_eq!(
                    c, code,
                    "error code for {lin:#x} {kind:?} user={user}: got {c:#b}, want {code:#b}"
                );
                assert_eq!(cpu.cr2, lin, "CR2");
            }
            r => panic!("expected #PF({code:#x}) at {lin:#x}, got {r:?}"),
        }
    }

    #[track_caller]
    fn expect_gpa(cpu: &mut Cpu, bus: &mut TestBus, lin: u64, kind: Access, user: bool, gpa: u64) {
        let t =
            tr(cpu, bus, lin, kind, user).unwrap_or_else(|f| panic!("{lin:#x} {kind:?}: {f:?}"));
        assert_eq!(t.gpa, gpa, "gpa of {lin:#x}");
    }

    #[test]
    fn paging_off_is_identity_in_32_bits() {
        let mut bus = TestBus::new();
        let mut cpu = cpu_in(TestMode::Protected32);
        let t = translate(&mut cpu, &mut bus, 0x1234_5678, Access::Write, true).unwrap();
        assert_eq!((t.gpa, t.global, t.page_shift), (0x1234_5678, false, 12));
        let t = translate(&mut cpu, &mut bus, 0x1_0000_0010, Access::Read, false).unwrap();
        assert_eq!(
            t.gpa, 0x10,
            "linear addresses are 32 bits outside long mode"
        );
    }

    #[test]
    fn bits32_4k_pages_accessed_and_dirty() {
        let (mut cpu, mut bus, mut pg) = setup(Paging::Bits32);
        let lin = 0x4012_3000;
        pg.map(&mut bus, lin, 0x65_4000, pte::PWU, 12);
        expect_gpa(
            &mut cpu,
            &mut bus,
            lin + 0x9ab,
            Access::Read,
            true,
            0x65_49ab,
        );
        let pde = pg.read(&mut bus, lin, 1);
        let e = pg.read(&mut bus, lin, 0);
        assert_ne!(pde & pte::A, 0, "A set in the PDE");
        assert_eq!(pde & pte::D, 0, "never D in a non-leaf entry");
        assert_eq!(e & (pte::A | pte::D), pte::A, "a read sets A, not D");
        expect_gpa(&mut cpu, &mut bus, lin, Access::Exec, true, 0x65_4000);
        assert_eq!(
            pg.read(&mut bus, lin, 0) & pte::D,
            0,
            "a fetch does not set D"
        );
        expect_gpa(&mut cpu, &mut bus, lin + 4, Access::Write, true, 0x65_4004);
        assert_eq!(
            pg.read(&mut bus, lin, 0) & (pte::A | pte::D),
            pte::A | pte::D
        );
        assert_eq!(pg.read(&mut bus, lin, 1) & pte::D, 0);
        // Entries are 4 bytes: the neighbour of the PTE is untouched.
        let ea = pg.entry(&mut bus, lin, 0);
        assert_eq!(bus.read(ea + 4, 4), 0);
    }

    #[test]
    fn bits32_not_present_error_codes() {
        let (mut cpu, mut bus, mut pg) = setup(Paging::Bits32);
        // No PDE at all.
        expect_pf(&mut cpu, &mut bus, 0x8000_0123, Access::Read, false, 0);
        expect_pf(
            &mut cpu,
            &mut bus,
            0x8000_0123,
            Access::Write,
            true,
            PF_W | PF_U,
        );
        // A PDE but no PTE.
        pg.map(&mut bus, 0x8000_0000, 0x10_0000, pte::PWU, 12);
        expect_pf(&mut cpu, &mut bus, 0x8000_1ffc, Access::Write, false, PF_W);
        // No I/D bit with 32-bit paging (no NX there).
        cpu.efer |= cr::EFER_NXE;
        expect_pf(&mut cpu, &mut bus, 0x8000_1000, Access::Exec, true, PF_U);
        // Nothing is marked accessed by a walk that faults.
        assert_eq!(pg.read(&mut bus, 0x8000_0000, 1) & pte::A, 0);
    }

    #[test]
    fn bits32_4m_pages_and_pse36() {
        let (mut cpu, mut bus, mut pg) = setup(Paging::Bits32);
        pg.map(&mut bus, 0x0040_0000, 0x00c0_0000, pte::PWU, 22);
        expect_gpa(
            &mut cpu,
            &mut bus,
            0x0052_3456,
            Access::Read,
            false,
            0x00d2_3456,
        );
        let t = tr(&mut cpu, &mut bus, 0x0040_0000, Access::Write, false).unwrap();
        assert_eq!(t.page_shift, 22);
        assert_eq!(
            pg.read(&mut bus, 0x0040_0000, 1) & (pte::A | pte::D),
            pte::A | pte::D,
            "A and D on the 4 MiB PDE"
        );
        // PSE-36: physical bits 39:32 from PDE bits 20:13.
        pg.map(&mut bus, 0x0080_0000, 0xab_0040_0000, pte::PWU, 22);
        expect_gpa(
            &mut cpu,
            &mut bus,
            0x0080_0010,
            Access::Read,
            false,
            0xab_0040_0010,
        );
        // Bit 21 is reserved (PSE-36 with MAXPHYADDR 40).
        let e = pg.read(&mut bus, 0x0080_0000, 1);
        pg.write(&mut bus, 0x0080_0000, 1, e | (1 << 21));
        expect_pf(
            &mut cpu,
            &mut bus,
            0x0080_0010,
            Access::Read,
            true,
            PF_P | PF_R | PF_U,
        );
        // Without CR4.PSE the PS bit is ignored: the PDE points at a page table.
        cpu.cr4 &= !cr::CR4_PSE;
        let pt = 0x60_0000u64;
        bus.put(pt + 4 * 0x123, 4, 0x77_7000 | pte::PWU);
        pg.write(&mut bus, 0x0040_0000, 1, pt | pte::PWU | pte::PS);
        expect_gpa(
            &mut cpu,
            &mut bus,
            0x0052_3456,
            Access::Read,
            false,
            0x77_7456,
        );
    }

    #[test]
    fn user_supervisor_combined_across_levels() {
        for kind in [Paging::Bits32, Paging::Pae, Paging::Long4] {
            let (mut cpu, mut bus, mut pg) = setup(kind);
            let lin = 0x4000_0000u64;
            pg.map(&mut bus, lin, 0x50_0000, pte::PWU, 12);
            // Supervisor-only at the leaf.
            pg.write(&mut bus, lin, 0, 0x50_0000 | pte::P | pte::RW);
            expect_pf(&mut cpu, &mut bus, lin + 8, Access::Read, true, PF_P | PF_U);
            expect_pf(
                &mut cpu,
                &mut bus,
                lin + 8,
                Access::Write,
                true,
                PF_P | PF_W | PF_U,
            );
            expect_gpa(&mut cpu, &mut bus, lin + 8, Access::Write, false, 0x50_0008);
            // User at the leaf, supervisor-only in the PDE.
            pg.write(&mut bus, lin, 0, 0x50_0000 | pte::PWU);
            let pde = pg.read(&mut bus, lin, 1);
            pg.write(&mut bus, lin, 1, pde & !pte::US);
            expect_pf(&mut cpu, &mut bus, lin, Access::Read, true, PF_P | PF_U);
            // Supervisor may read user pages (no SMAP).
            pg.write(&mut bus, lin, 1, pde);
            expect_gpa(&mut cpu, &mut bus, lin, Access::Read, false, 0x50_0000);
            expect_gpa(&mut cpu, &mut bus, lin, Access::Read, true, 0x50_0000);
        }
    }

    #[test]
    fn read_write_and_cr0_wp() {
        for kind in [Paging::Bits32, Paging::Pae, Paging::Long4] {
            let (mut cpu, mut bus, mut pg) = setup(kind);
            let lin = 0x4000_0000u64;
            pg.map(&mut bus, lin, 0x50_0000, pte::P | pte::US, 12);
            cpu.cr0 &= !cr::CR0_WP;
            // WP = 0: the supervisor writes read-only pages (and sets D)...
            expect_gpa(&mut cpu, &mut bus, lin, Access::Write, false, 0x50_0000);
            assert_ne!(pg.read(&mut bus, lin, 0) & pte::D, 0, "{kind:?}");
            // ...a user never does.
            expect_pf(
                &mut cpu,
                &mut bus,
                lin,
                Access::Write,
                true,
                PF_P | PF_W | PF_U,
            );
            cpu.cr0 |= cr::CR0_WP;
            expect_pf(&mut cpu, &mut bus, lin, Access::Write, false, PF_P | PF_W);
            expect_gpa(&mut cpu, &mut bus, lin, Access::Read, true, 0x50_0000);
            // Read-only in the PDE, writable in the PTE: still read-only.
            pg.write(&mut bus, lin, 0, 0x50_0000 | pte::PWU);
            let pde = pg.read(&mut bus, lin, 1);
            pg.write(&mut bus, lin, 1, pde & !pte::RW);
            expect_pf(
                &mut cpu,
                &mut bus,
                lin,
                Access::Write,
                true,
                PF_P | PF_W | PF_U,
            );
            expect_pf(&mut cpu, &mut bus, lin, Access::Write, false, PF_P | PF_W);
        }
    }

    #[test]
    fn pae_pdptes_2m_pages_and_reserved_bits() {
        let (mut cpu, mut bus, mut pg) = setup(Paging::Pae);
        // No PDPTE for the top GiB.
        expect_pf(
            &mut cpu,
            &mut bus,
            0xc000_0010,
            Access::Write,
            true,
            PF_W | PF_U,
        );
        pg.map(&mut bus, 0xc020_0000, 0x80_0000, pte::PWU, 21);
        let t = tr(&mut cpu, &mut bus, 0xc03f_fff0, Access::Read, false).unwrap();
        assert_eq!((t.gpa, t.page_shift), (0x9f_fff0, 21));
        pg.map(&mut bus, 0xc000_3000, 0xfe_1234_5000, pte::PWU, 12);
        expect_gpa(
            &mut cpu,
            &mut bus,
            0xc000_3abc,
            Access::Read,
            false,
            0xfe_1234_5abc,
        );
        // PDPTEs are not given accessed bits.
        let pdpte = pg.read(&mut bus, 0xc000_0000, 2);
        assert_eq!(pdpte & pte::A, 0);
        // Reserved PDPTE bits: R/W (1), U/S (2), 8:5, 63:M.
        for bit in [1, 2, 5, 8, 40, 52, 62, 63] {
            pg.write(&mut bus, 0xc000_0000, 2, pdpte | (1 << bit));
            expect_pf(
                &mut cpu,
                &mut bus,
                0xc000_3000,
                Access::Read,
                true,
                PF_P | PF_R | PF_U,
            );
        }
        pg.write(&mut bus, 0xc000_0000, 2, pdpte);
        // PDE/PTE: 62:M reserved (PAE), XD reserved without NXE, 20:13 in a 2 MiB PDE.
        let e = pg.read(&mut bus, 0xc000_3000, 0);
        for bit in [40, 51, 52, 62, 63] {
            pg.write(&mut bus, 0xc000_3000, 0, e | (1 << bit));
            expect_pf(
                &mut cpu,
                &mut bus,
                0xc000_3000,
                Access::Write,
                false,
                PF_P | PF_R | PF_W,
            );
        }
        pg.write(&mut bus, 0xc000_3000, 0, e);
        let big = pg.read(&mut bus, 0xc020_0000, 1);
        pg.write(&mut bus, 0xc020_0000, 1, big | (1 << 13));
        expect_pf(
            &mut cpu,
            &mut bus,
            0xc020_0000,
            Access::Read,
            false,
            PF_P | PF_R,
        );
        // Bit 12 of a large-page PDE is PAT, not reserved.
        pg.write(&mut bus, 0xc020_0000, 1, big | (1 << 12));
        expect_gpa(
            &mut cpu,
            &mut bus,
            0xc020_0000,
            Access::Read,
            false,
            0x80_0000,
        );
    }

    #[test]
    fn pae_nx_and_the_fetch_bit() {
        let (mut cpu, mut bus, mut pg) = setup(Paging::Pae);
        pg.map(&mut bus, 0x1000_0000, 0x50_0000, pte::PWU | pte::NX, 12);
        // NX without EFER.NXE is a reserved bit.
        expect_pf(
            &mut cpu,
            &mut bus,
            0x1000_0000,
            Access::Read,
            false,
            PF_P | PF_R,
        );
        cpu.efer |= cr::EFER_NXE;
        expect_gpa(
            &mut cpu,
            &mut bus,
            0x1000_0000,
            Access::Read,
            true,
            0x50_0000,
        );
        expect_gpa(
            &mut cpu,
            &mut bus,
            0x1000_0000,
            Access::Write,
            true,
            0x50_0000,
        );
        expect_pf(
            &mut cpu,
            &mut bus,
            0x1000_0ffe,
            Access::Exec,
            true,
            PF_P | PF_U | PF_I,
        );
        expect_pf(
            &mut cpu,
            &mut bus,
            0x1000_0000,
            Access::Exec,
            false,
            PF_P | PF_I,
        );
        // XD in a non-leaf entry applies too.
        pg.map(&mut bus, 0x1000_1000, 0x50_1000, pte::PWU, 12);
        expect_gpa(
            &mut cpu,
            &mut bus,
            0x1000_1000,
            Access::Exec,
            false,
            0x50_1000,
        );
        let pde = pg.read(&mut bus, 0x1000_1000, 1);
        pg.write(&mut bus, 0x1000_1000, 1, pde | pte::NX);
        expect_pf(
            &mut cpu,
            &mut bus,
            0x1000_1000,
            Access::Exec,
            false,
            PF_P | PF_I,
        );
        // A non-present fetch reports I/D with NXE...
        expect_pf(
            &mut cpu,
            &mut bus,
            0x2000_0000,
            Access::Exec,
            true,
            PF_U | PF_I,
        );
        // ...and not without it.
        cpu.efer &= !cr::EFER_NXE;
        expect_pf(&mut cpu, &mut bus, 0x2000_0000, Access::Exec, true, PF_U);
    }

    #[test]
    fn four_level_pages_of_every_size() {
        let (mut cpu, mut bus, mut pg) = setup(Paging::Long4);
        let hi = 0xffff_8000_0000_0000u64;
        pg.map(&mut bus, hi + 0x1000, 0x55_5000, pte::P | pte::RW, 12);
        pg.map(&mut bus, hi + 0x20_0000, 0x60_0000, pte::P | pte::RW, 21);
        pg.map(&mut bus, 0x80_0000_0000, 0xc0_0000_0000, pte::PWU, 30);
        let t = tr(&mut cpu, &mut bus, hi + 0x1234, Access::Write, false).unwrap();
        assert_eq!((t.gpa, t.page_shift), (0x55_5234, 12));
        let t = tr(&mut cpu, &mut bus, hi + 0x3f_fff8, Access::Read, false).unwrap();
        assert_eq!((t.gpa, t.page_shift), (0x7f_fff8, 21));
        // Accessed on every level walked; dirty only on the written leaf.
        for level in 1..=3 {
            let e = pg.read(&mut bus, hi + 0x1000, level);
            assert_eq!(e & (pte::A | pte::D), pte::A, "level {level}");
        }
        assert_eq!(
            pg.read(&mut bus, hi + 0x1000, 0) & (pte::A | pte::D),
            pte::A | pte::D
        );
        assert_eq!(
            pg.read(&mut bus, hi + 0x20_0000, 1) & (pte::A | pte::D),
            pte::A
        );
        // 1 GiB pages with the feature...
        let t = walk(
            &mut cpu,
            &mut bus,
            0x80_1234_5678,
            Access::Write,
            true,
            true,
        )
        .unwrap();
        assert_eq!((t.gpa, t.page_shift), (0xc0_1234_5678, 30));
        assert_eq!(
            pg.read(&mut bus, 0x80_0000_0000, 2) & (pte::A | pte::D),
            pte::A | pte::D
        );
        let e = pg.read(&mut bus, 0x80_0000_0000, 2);
        pg.write(&mut bus, 0x80_0000_0000, 2, e | (1 << 29));
        let r = walk(
            &mut cpu,
            &mut bus,
            0x80_0000_0000,
            Access::Read,
            false,
            true,
        );
        assert_eq!(
            r.err(),
            Some(Fault::Exception {
                vector: vector::PF,
                error_code: Some(PF_P | PF_R)
            })
        );
        pg.write(&mut bus, 0x80_0000_0000, 2, e);
        // ...and PS reserved in a PDPTE when CPUID does not advertise them.
        let r = walk(
            &mut cpu,
            &mut bus,
            0x80_0000_0000,
            Access::Read,
            false,
            false,
        );
        assert_eq!(
            r.err(),
            Some(Fault::Exception {
                vector: vector::PF,
                error_code: Some(PF_P | PF_R)
            })
        );
        if GBPAGES {
            expect_gpa(
                &mut cpu,
                &mut bus,
                0x80_0000_0000,
                Access::Read,
                false,
                0xc0_0000_0000,
            );
        } else {
            expect_pf(
                &mut cpu,
                &mut bus,
                0x80_0000_0000,
                Access::Read,
                false,
                PF_P | PF_R,
            );
        }
        // CR2 holds the whole 64-bit address.
        expect_pf(&mut cpu, &mut bus, hi + 0x7000_0000, Access::Read, false, 0);
        expect_pf(
            &mut cpu,
            &mut bus,
            hi + 0x1000,
            Access::Read,
            true,
            PF_P | PF_U,
        );
    }

    #[test]
    fn four_level_reserved_and_ignored_bits() {
        let (mut cpu, mut bus, mut pg) = setup(Paging::Long4);
        let lin = 0x7f00_0000_3000u64;
        pg.map(&mut bus, lin, 0x55_5000, pte::PWU, 12);
        let pml4e = pg.read(&mut bus, lin, 3);
        pg.write(&mut bus, lin, 3, pml4e | pte::PS);
        expect_pf(
            &mut cpu,
            &mut bus,
            lin,
            Access::Read,
            true,
            PF_P | PF_R | PF_U,
        );
        pg.write(&mut bus, lin, 3, pml4e);
        let e = pg.read(&mut bus, lin, 0);
        // Bits 62:52 are ignored by 4-level paging.
        pg.write(&mut bus, lin, 0, e | (0x7ff << 52));
        expect_gpa(&mut cpu, &mut bus, lin, Access::Read, false, 0x55_5000);
        // Bits 51:M are reserved at every level.
        for level in 0..=3 {
            let v = pg.read(&mut bus, lin, level);
            pg.write(&mut bus, lin, level, v | (1 << 45));
            expect_pf(
                &mut cpu,
                &mut bus,
                lin + 1,
                Access::Write,
                false,
                PF_P | PF_R | PF_W,
            );
            pg.write(&mut bus, lin, level, v);
        }
        // XD is reserved without EFER.NXE.
        cpu.efer &= !cr::EFER_NXE;
        pg.write(&mut bus, lin, 0, e | pte::NX);
        expect_pf(&mut cpu, &mut bus, lin, Access::Exec, false, PF_P | PF_R);
        cpu.efer |= cr::EFER_NXE;
        expect_pf(&mut cpu, &mut bus, lin, Access::Exec, false, PF_P | PF_I);
    }

    #[test]
    fn global_only_with_pge_and_only_from_the_leaf() {
        let (mut cpu, mut bus, mut pg) = setup(Paging::Bits32);
        pg.map(&mut bus, 0x1000, 0x1000, pte::PWU | pte::G, 12);
        pg.map(&mut bus, 0x40_0000, 0x40_0000, pte::PWU | pte::G, 22);
        pg.map(&mut bus, 0x80_0000, 0x80_0000, pte::PWU, 12);
        let pde = pg.read(&mut bus, 0x80_0000, 1);
        pg.write(&mut bus, 0x80_0000, 1, pde | pte::G);
        assert!(
            !tr(&mut cpu, &mut bus, 0x1000, Access::Read, false)
                .unwrap()
                .global
        );
        cpu.cr4 |= cr::CR4_PGE;
        assert!(
            tr(&mut cpu, &mut bus, 0x1000, Access::Read, false)
                .unwrap()
                .global
        );
        assert!(
            tr(&mut cpu, &mut bus, 0x40_0000, Access::Read, false)
                .unwrap()
                .global
        );
        assert!(
            !tr(&mut cpu, &mut bus, 0x80_0000, Access::Read, false)
                .unwrap()
                .global
        );
    }

    #[test]
    fn page_tables_in_mmio_fault_cleanly() {
        // A CR3 beyond RAM reads all ones: present, with reserved bits set.
        let (mut cpu, mut bus, _) = setup(Paging::Long4);
        cpu.cr3 = 0x80_0000_0000;
        expect_pf(&mut cpu, &mut bus, 0x1000, Access::Read, false, PF_P | PF_R);
        let (mut cpu, mut bus, _) = setup(Paging::Bits32);
        cpu.cr3 = 0xfee0_0000;
        // An all-ones PDE with PSE: a 4 MiB page with reserved bit 21 set.
        expect_pf(&mut cpu, &mut bus, 0x1000, Access::Read, false, PF_P | PF_R);
        // Without PSE 32-bit paging has no reserved bits: all ones maps to the last page.
        cpu.cr4 &= !cr::CR4_PSE;
        expect_gpa(&mut cpu, &mut bus, 0x1234, Access::Read, false, 0xffff_f234);
    }
}
