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
pub fn phys_read(bus: &mut dyn Bus, gpa: u64, size: u8) -> u64 {
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
        return bus.mmio_read(gpa, size);
    }
    let mut v = 0u64;
    for i in 0..size as u64 {
        v |= phys_read(bus, gpa.wrapping_add(i), 1) << (8 * i);
    }
    v
}

/// Writes a little-endian value of `size` bytes to guest-physical memory.
/// Stores to pages holding decoded code are not detected here: callers that
/// can hit code (not page-table A/D updates) go through `Ctx::write_lin`.
pub fn phys_write(bus: &mut dyn Bus, gpa: u64, size: u8, value: u64) {
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
        bus.mmio_write(gpa, size, value);
        return;
    }
    for i in 0..size as u64 {
        phys_write(bus, gpa.wrapping_add(i), 1, value >> (8 * i));
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
pub fn translate(cpu: &mut Cpu, bus: &mut dyn Bus, lin: u64, kind: Access, user: bool) -> Result<Translation> {
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
        let pde = phys_read(bus, pde_addr, 4);
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
            let pte = phys_read(bus, pte_addr, 4);
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
            let pdpte = phys_read(bus, pdpte_addr, 8);
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
            let e = phys_read(bus, addr, 8);
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
                break ((e & ADDR_MASK & !off_mask) | (lin & off_mask), e, shift as u8);
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
            phys_write(bus, addr, entry_size, new);
        }
    }
    Ok(Translation {
        gpa,
        global: cpu.cr4 & cr::CR4_PGE != 0 && leaf & G != 0,
        page_shift,
    })
}
