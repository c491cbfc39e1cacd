//! Guest memory accesses as instructions see them: segmentation (limits,
//! types, canonical addresses), then the software TLB fast path, then page
//! walks, RAM pages and MMIO on the slow path. Stores to pages holding
//! decoded code invalidate those blocks (self-modifying code).

use crate::fault::{Fault, Result};
use crate::interp::Ctx;
use crate::mmu;
use crate::state::{attr, Mode, SegReg};
use crate::tlb::Access;

/// Whether `addr` is canonical for 48-bit linear addresses.
#[inline(always)]
pub fn is_canonical(addr: u64) -> bool {
    ((addr as i64) << 16 >> 16) as u64 == addr
}

#[inline(always)]
unsafe fn load(p: *const u8, size: u8) -> u64 {
    match size {
        1 => *p as u64,
        2 => (p as *const u16).read_unaligned() as u64,
        4 => (p as *const u32).read_unaligned() as u64,
        _ => (p as *const u64).read_unaligned(),
    }
}

#[inline(always)]
unsafe fn store(p: *mut u8, size: u8, v: u64) {
    match size {
        1 => *p = v as u8,
        2 => (p as *mut u16).write_unaligned(v as u16),
        4 => (p as *mut u32).write_unaligned(v as u32),
        _ => (p as *mut u64).write_unaligned(v),
    }
}

impl Ctx<'_> {
    /// Applies segment `s` to offset `off` for an access of `size` bytes and
    /// returns the linear address (#GP(0), or #SS(0) for SS, on violations).
    ///
    /// 64-bit mode (SDM vol. 3 3.2.4, 5.3.1): no limit or type checks; FS and
    /// GS add their base; every byte must be canonical. Other modes: the
    /// segment must be usable (not null), writable for writes and readable
    /// for reads (SDM 5.5, table 5-1 note), and the whole access must lie
    /// within the limit (SDM 5.3: expand-up offsets 0..=limit, expand-down
    /// limit+1..=0xFFFF or 0xFFFF_FFFF by the B flag); linear addresses are
    /// 32 bits wide.
    #[inline(always)]
    pub fn seg_addr(&self, s: SegReg, off: u64, size: u8, write: bool) -> Result<u64> {
        let seg = &self.cpu.seg[s as usize];
        if self.cpu.bitness == 64 {
            let lin = if (s as u8) >= 4 {
                seg.base.wrapping_add(off)
            } else {
                off
            };
            if !is_canonical(lin) || !is_canonical(lin.wrapping_add(size as u64 - 1)) {
                return Err(if s == SegReg::Ss { Fault::ss(0) } else { Fault::gp(0) });
            }
            return Ok(lin);
        }
        self.seg_addr_legacy(s, off, size, write)
    }

    #[inline]
    fn seg_addr_legacy(&self, s: SegReg, off: u64, size: u8, write: bool) -> Result<u64> {
        let seg = &self.cpu.seg[s as usize];
        let fail = || if s == SegReg::Ss { Fault::ss(0) } else { Fault::gp(0) };
        let a = seg.attr;
        // Real and virtual-8086 mode check only the limit: a segment register
        // loaded there is a writable data segment, and code written through
        // CS (e.g. CS at reset, or before the far jump that follows a switch
        // back from protected mode) is not refused.
        let protected = !matches!(self.cpu.mode, Mode::Real | Mode::Virtual8086);
        if protected {
            if a & attr::PRESENT == 0 || a & attr::S == 0 {
                // Null selector (unusable) or a system descriptor.
                return Err(fail());
            }
            if a & attr::CODE != 0 {
                // Code segments are never writable; reads need R.
                if write || a & attr::RW == 0 {
                    return Err(fail());
                }
            } else if write && a & attr::RW == 0 {
                return Err(fail());
            }
        }
        let last = off.wrapping_add(size as u64 - 1);
        if a & (attr::CODE | attr::DC) == attr::DC {
            // Expand-down data: valid offsets are (limit, max].
            let max = if a & attr::DB != 0 { 0xffff_ffff } else { 0xffff };
            if off <= seg.limit as u64 || last > max || last < off {
                return Err(fail());
            }
        } else if last > seg.limit as u64 || last < off {
            return Err(fail());
        }
        Ok(seg.base.wrapping_add(off) & 0xffff_ffff)
    }

    #[inline(always)]
    fn user(&self) -> bool {
        self.cpu.cpl == 3
    }

    /// Reads `size` bytes at linear address `lin` with the current privilege.
    #[inline(always)]
    pub fn read_lin(&mut self, lin: u64, size: u8) -> Result<u64> {
        let user = self.user();
        self.read_priv(lin, size, user)
    }

    /// Writes `size` bytes at linear address `lin` with the current privilege.
    #[inline(always)]
    pub fn write_lin(&mut self, lin: u64, size: u8, value: u64) -> Result<()> {
        let user = self.user();
        self.write_priv(lin, size, value, user)
    }

    /// Reads with privilege `user` (false: supervisor), TLB first.
    #[inline(always)]
    fn read_priv(&mut self, lin: u64, size: u8, user: bool) -> Result<u64> {
        if (lin & 0xfff) + size as u64 <= 0x1000 {
            if let Some(host) = self.cpu.tlb.lookup(Access::Read, user, lin) {
                // SAFETY: TLB entries point at live RAM pages; the access stays within the page.
                return Ok(unsafe { load((host + (lin & 0xfff) as usize) as *const u8, size) });
            }
        }
        self.read_slow(lin, size, user)
    }

    /// Writes with privilege `user` (false: supervisor), TLB first.
    #[inline(always)]
    fn write_priv(&mut self, lin: u64, size: u8, value: u64, user: bool) -> Result<()> {
        if (lin & 0xfff) + size as u64 <= 0x1000 {
            if let Some(host) = self.cpu.tlb.lookup(Access::Write, user, lin) {
                // SAFETY: as in `read_priv`; write entries exist only for
                // writable RAM pages that hold no decoded code.
                unsafe { store((host + (lin & 0xfff) as usize) as *mut u8, size, value) };
                return Ok(());
            }
        }
        self.write_slow(lin, size, value, user)
    }

    /// Reads with supervisor privilege (descriptor tables, TSS, IDT): an
    /// implicit supervisor access even at CPL 3 (SDM 4.6).
    pub fn read_lin_sys(&mut self, lin: u64, size: u8) -> Result<u64> {
        self.read_priv(lin, size, false)
    }

    /// Writes with supervisor privilege (descriptor accessed bits, TSS busy bit).
    pub fn write_lin_sys(&mut self, lin: u64, size: u8, value: u64) -> Result<()> {
        self.write_priv(lin, size, value, false)
    }

    /// Reads through segment `s`.
    #[inline(always)]
    pub fn read_seg(&mut self, s: SegReg, off: u64, size: u8) -> Result<u64> {
        let lin = self.seg_addr(s, off, size, false)?;
        self.read_lin(lin, size)
    }

    /// Writes through segment `s`.
    #[inline(always)]
    pub fn write_seg(&mut self, s: SegReg, off: u64, size: u8, value: u64) -> Result<()> {
        let lin = self.seg_addr(s, off, size, true)?;
        self.write_lin(lin, size, value)
    }

    /// Checks that a write of `size` bytes at `s:off` would succeed (segment
    /// and paging), without writing. Used before multi-part updates.
    pub fn probe_write(&mut self, s: SegReg, off: u64, size: u8) -> Result<u64> {
        let lin = self.seg_addr(s, off, size, true)?;
        let user = self.user();
        if self.cpu.tlb.lookup(Access::Write, user, lin).is_some() && (lin & 0xfff) + size as u64 <= 0x1000 {
            return Ok(lin);
        }
        self.translate(lin, Access::Write, user)?;
        if (lin & 0xfff) + size as u64 > 0x1000 {
            self.translate(lin.wrapping_add(size as u64 - 1), Access::Write, user)?;
        }
        Ok(lin)
    }

    /// Linear → guest-physical translation (page walk; no TLB).
    pub fn translate(&mut self, lin: u64, kind: Access, user: bool) -> Result<u64> {
        Ok(mmu::translate(self.cpu, self.bus, lin, kind, user)?.gpa)
    }

    /// Guest-physical address of instruction byte `lin` for CS:RIP at the
    /// current privilege: the execute TLB, else a walk that fills it (RAM only).
    #[inline]
    pub(crate) fn translate_exec(&mut self, lin: u64) -> Result<u64> {
        let user = self.user();
        if let Some(gpa) = self.cpu.tlb.lookup_gpa(Access::Exec, user, lin) {
            return Ok(gpa | (lin & 0xfff));
        }
        let lin = self.lin_mask(lin);
        let t = mmu::translate(self.cpu, self.bus, lin, Access::Exec, user)?;
        if let Some(host) = self.bus.ram_page(t.gpa & !0xfff) {
            self.cpu
                .tlb
                .insert_piece(Access::Exec, user, lin, host as usize, t.gpa, t.global, t.page_shift);
        }
        Ok(t.gpa)
    }

    /// Linear addresses are 32 bits wide outside IA-32e mode.
    #[inline(always)]
    pub(crate) fn lin_mask(&self, lin: u64) -> u64 {
        if self.cpu.efer & crate::state::cr::EFER_LMA != 0 {
            lin
        } else {
            lin & 0xffff_ffff
        }
    }

    #[cold]
    #[inline(never)]
    fn read_slow(&mut self, lin: u64, size: u8, user: bool) -> Result<u64> {
        let lin = self.lin_mask(lin);
        if (lin & 0xfff) + size as u64 > 0x1000 {
            // Straddles two pages: both must translate before either is read
            // (a read of MMIO has side effects).
            let split = 0x1000 - (lin & 0xfff);
            let lo_n = split as u8;
            let hi_lin = self.lin_mask(lin.wrapping_add(split));
            mmu::translate(self.cpu, self.bus, lin, Access::Read, user)?;
            mmu::translate(self.cpu, self.bus, hi_lin, Access::Read, user)?;
            let lo = self.read_slow(lin, lo_n, user)?;
            let hi = self.read_slow(hi_lin, size - lo_n, user)?;
            return Ok(lo | (hi << (8 * lo_n as u32)));
        }
        let t = mmu::translate(self.cpu, self.bus, lin, Access::Read, user)?;
        if !matches!(size, 1 | 2 | 4 | 8) {
            // A piece of a straddling access.
            let mut v = 0;
            for i in 0..size as u64 {
                v |= mmu::phys_read(self.bus, t.gpa + i, 1) << (8 * i);
            }
            return Ok(v);
        }
        match self.bus.ram_page(t.gpa & !0xfff) {
            Some(host) => {
                self.cpu
                    .tlb
                    .insert_piece(Access::Read, user, lin, host as usize, t.gpa, t.global, t.page_shift);
                // SAFETY: `host` is a live RAM page; the access stays within it.
                Ok(unsafe { load(host.add((lin & 0xfff) as usize), size) })
            }
            None => {
                self.cpu.end_block = true;
                self.cpu.exit_request = true;
                Ok(self.bus.mmio_read(t.gpa, size))
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn write_slow(&mut self, lin: u64, size: u8, value: u64, user: bool) -> Result<()> {
        let lin = self.lin_mask(lin);
        if (lin & 0xfff) + size as u64 > 0x1000 {
            let split = 0x1000 - (lin & 0xfff);
            let lo_n = split as u8;
            let hi_lin = self.lin_mask(lin.wrapping_add(split));
            // Both halves must be writable before either is written.
            mmu::translate(self.cpu, self.bus, lin, Access::Write, user)?;
            mmu::translate(self.cpu, self.bus, hi_lin, Access::Write, user)?;
            self.write_slow(lin, lo_n, value, user)?;
            return self.write_slow(hi_lin, size - lo_n, value >> (8 * lo_n as u32), user);
        }
        let t = mmu::translate(self.cpu, self.bus, lin, Access::Write, user)?;
        let page = t.gpa & !0xfff;
        if self.code.is_code_page(page) {
            // Self-modifying code: drop the blocks and leave the current one,
            // so the next instruction is decoded from the new bytes.
            self.code.invalidate_page(page);
            self.cpu.end_block = true;
        }
        if !matches!(size, 1 | 2 | 4 | 8) {
            for i in 0..size as u64 {
                mmu::phys_write(self.bus, t.gpa + i, 1, value >> (8 * i));
            }
            return Ok(());
        }
        match self.bus.ram_page_mut(page) {
            Some(p) => {
                if p.cacheable {
                    let tlb = &mut self.cpu.tlb;
                    tlb.insert_piece(Access::Write, user, lin, p.host as usize, t.gpa, t.global, t.page_shift);
                    // A permitted write implies a permitted read (SDM 4.6)
                    // and the accessed bits are set: the read entry is free.
                    tlb.insert_piece(Access::Read, user, lin, p.host as usize, t.gpa, t.global, t.page_shift);
                }
                // SAFETY: `p.host` is a live RAM page; the access stays within it.
                unsafe { store(p.host.add((lin & 0xfff) as usize), size, value) };
                Ok(())
            }
            None => {
                self.cpu.end_block = true;
                self.cpu.exit_request = true;
                self.bus.mmio_write(t.gpa, size, value);
                Ok(())
            }
        }
    }

    /// Reads instruction bytes at linear `lin` into `buf` (fetch permission).
    /// Returns how many bytes could be read before a fault, or the fault when
    /// not even the first byte is fetchable.
    pub fn fetch(&mut self, lin: u64, buf: &mut [u8]) -> Result<usize> {
        let user = self.user();
        let mut n = 0;
        while n < buf.len() {
            let a = self.lin_mask(lin.wrapping_add(n as u64));
            let t = match mmu::translate(self.cpu, self.bus, a, Access::Exec, user) {
                Ok(t) => t,
                Err(f) if n == 0 => return Err(f),
                Err(_) => return Ok(n),
            };
            let room = (0x1000 - (a & 0xfff)) as usize;
            let take = room.min(buf.len() - n);
            match self.bus.ram_page(t.gpa & !0xfff) {
                Some(host) => {
                    // SAFETY: `host` is a live page and [off, off+take) lies within it.
                    let src = unsafe { std::slice::from_raw_parts(host.add((a & 0xfff) as usize), take) };
                    buf[n..n + take].copy_from_slice(src);
                }
                None => {
                    for (i, b) in buf[n..n + take].iter_mut().enumerate() {
                        *b = self.bus.mmio_read(t.gpa + i as u64, 1) as u8;
                    }
                }
            }
            n += take;
        }
        Ok(n)
    }
}
