//! Page-table walks: 32-bit (4 KiB and 4 MiB pages), PAE and 4-level paging,
//! with U/S, R/W, NX and CR0.WP checks, accessed/dirty updates and #PF error
//! codes. Segmentation is applied before this (see `memory.rs`).
//!
//! Deviation: PAE PDPTEs are read from memory on every walk instead of being
//! latched at CR3 load; no guest we run depends on the stale copy.

use crate::bus::Bus;
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
/// Returns true when RAM was written (so callers can check for code pages).
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
/// linear address is the physical one.
pub fn translate(cpu: &mut Cpu, bus: &mut dyn Bus, lin: u64, kind: Access, user: bool) -> Result<Translation> {
    if cpu.cr0 & cr::CR0_PG == 0 {
        return Ok(Translation {
            gpa: lin & 0xffff_ffff,
            global: false,
        });
    }
    let write = kind == Access::Write;
    let fetch = kind == Access::Exec;
    let nxe = cpu.efer & cr::EFER_NXE != 0;
    let wp = cpu.cr0 & cr::CR0_WP != 0;
    let pge = cpu.cr4 & cr::CR4_PGE != 0;
    let mut code = 0u32;
    if write {
        code |= pf::WRITE;
    }
    if user {
        code |= pf::USER;
    }
    // I/D is reported only where NX exists (PAE and 4-level paging with EFER.NXE).
    let fetch_bit = if fetch && nxe && cpu.cr4 & cr::CR4_PAE != 0 {
        pf::FETCH
    } else {
        0
    };
    code |= fetch_bit;

    // Collects (entry address, entry value, entry size) for the levels walked.
    let mut levels: [(u64, u64); 4] = [(0, 0); 4];
    let mut nlevels = 0usize;
    let (gpa, leaf, _large) = if cpu.cr4 & cr::CR4_PAE == 0 {
        // 32-bit paging.
        let lin = lin & 0xffff_ffff;
        let pde_addr = (cpu.cr3 & 0xffff_f000) | ((lin >> 22) << 2);
        let pde = phys_read(bus, pde_addr, 4);
        if pde & P == 0 {
            return Err(page_fault(cpu, lin, code));
        }
        levels[0] = (pde_addr, pde);
        nlevels = 1;
        if pde & PS != 0 && cpu.cr4 & cr::CR4_PSE != 0 {
            // 4 MiB page; bits 13..20 hold physical bits 32..39 (PSE-36).
            let hi = ((pde >> 13) & 0xff) << 32;
            let base = (pde & 0xffc0_0000) | hi;
            (base | (lin & 0x3f_ffff), pde, true)
        } else {
            let pte_addr = (pde & 0xffff_f000) | (((lin >> 12) & 0x3ff) << 2);
            let pte = phys_read(bus, pte_addr, 4);
            if pte & P == 0 {
                return Err(page_fault(cpu, lin, code));
            }
            levels[1] = (pte_addr, pte);
            nlevels = 2;
            ((pte & 0xffff_f000) | (lin & 0xfff), pte, false)
        }
    } else {
        let long = cpu.efer & cr::EFER_LMA != 0;
        let mut rsvd_nx = if nxe { 0 } else { NX };
        // Bits between MAXPHYADDR and 51 are reserved in every entry.
        let rsvd_high = (((1u64 << 52) - 1) & !((1u64 << PHYS_ADDR_BITS) - 1)) | rsvd_nx;
        let (mut table, first_level) = if long {
            (cpu.cr3 & ADDR_MASK, 3)
        } else {
            // PAE: CR3 points at four 8-byte PDPTEs (32-byte aligned).
            let pdpte_addr = (cpu.cr3 & 0xffff_ffe0) | (((lin >> 30) & 3) << 3);
            let pdpte = phys_read(bus, pdpte_addr, 8);
            if pdpte & P == 0 {
                return Err(page_fault(cpu, lin & 0xffff_ffff, code));
            }
            // PDPTEs have no R/W, U/S or NX; reserved bits 1,2,5..8 and high bits.
            if pdpte & (rsvd_high | 0x1e6) & !NX != 0 || pdpte & NX != 0 {
                return Err(page_fault(cpu, lin & 0xffff_ffff, code | pf::PRESENT | pf::RSVD));
            }
            (pdpte & ADDR_MASK, 1)
        };
        rsvd_nx = rsvd_high;
        let lin_eff = if long { lin } else { lin & 0xffff_ffff };
        let mut level = first_level;
        loop {
            let shift = 12 + 9 * level;
            let addr = table | (((lin_eff >> shift) & 0x1ff) << 3);
            let e = phys_read(bus, addr, 8);
            if e & P == 0 {
                return Err(page_fault(cpu, lin_eff, code));
            }
            let mut rsvd = rsvd_nx;
            if level == 3 || (level == 2 && !long) {
                rsvd |= PS; // PS is reserved in PML4Es
            }
            if e & rsvd != 0 {
                return Err(page_fault(cpu, lin_eff, code | pf::PRESENT | pf::RSVD));
            }
            levels[nlevels] = (addr, e);
            nlevels += 1;
            if level == 0 {
                break ((e & ADDR_MASK) | (lin_eff & 0xfff), e, false);
            }
            if e & PS != 0 && level <= 2 {
                if level == 2 {
                    // 1 GiB page: bits 13..29 of the entry must be zero.
                    if e & 0x3fff_e000 != 0 {
                        return Err(page_fault(cpu, lin_eff, code | pf::PRESENT | pf::RSVD));
                    }
                    break ((e & ADDR_MASK & !0x3fff_ffff) | (lin_eff & 0x3fff_ffff), e, true);
                }
                if e & 0x1f_e000 != 0 {
                    return Err(page_fault(cpu, lin_eff, code | pf::PRESENT | pf::RSVD));
                }
                break ((e & ADDR_MASK & !0x1f_ffff) | (lin_eff & 0x1f_ffff), e, true);
            }
            table = e & ADDR_MASK;
            level -= 1;
        }
    };

    // Effective permissions: AND of R/W and U/S over all levels, OR of NX.
    let mut rw = true;
    let mut us = true;
    let mut nx = false;
    for &(_, e) in &levels[..nlevels] {
        rw &= e & RW != 0;
        us &= e & US != 0;
        nx |= e & NX != 0;
    }
    let denied = (user && !us) || (write && !rw && (user || wp)) || (fetch && nxe && nx);
    if denied {
        return Err(page_fault(cpu, lin, code | pf::PRESENT));
    }

    // Accessed bits on every level, dirty on the leaf for writes.
    let entry_size = if cpu.cr4 & cr::CR4_PAE == 0 { 4 } else { 8 };
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
        global: pge && leaf & G != 0,
    })
}
