//! Guest memory accesses as instructions see them: segmentation (limits,
//! types, canonical addresses), then the software TLB fast path, then page
//! walks, RAM pages and MMIO on the slow path. Stores to pages holding
//! decoded code invalidate those blocks (self-modifying code).

use crate::debug::DebugHit;
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

/// Loads `size` bytes (little-endian; sizes other than 1, 2, 4, 8 byte by
/// byte, at most 8). The caller guarantees `size` bytes at `p` are readable.
#[inline(always)]
unsafe fn load(p: *const u8, size: u8) -> u64 {
    match size {
        1 => *p as u64,
        2 => (p as *const u16).read_unaligned() as u64,
        4 => (p as *const u32).read_unaligned() as u64,
        8 => (p as *const u64).read_unaligned(),
        _ => {
            let mut v = 0u64;
            for i in 0..size.min(8) as usize {
                v |= (*p.add(i) as u64) << (8 * i);
            }
            v
        }
    }
}

/// Stores `size` bytes of `v` (as [`load`]).
#[inline(always)]
unsafe fn store(p: *mut u8, size: u8, v: u64) {
    match size {
        1 => *p = v as u8,
        2 => (p as *mut u16).write_unaligned(v as u16),
        4 => (p as *mut u32).write_unaligned(v as u32),
        8 => (p as *mut u64).write_unaligned(v),
        _ => {
            for i in 0..size.min(8) as usize {
                *p.add(i) = (v >> (8 * i)) as u8;
            }
        }
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
            if !is_canonical(lin) || !is_canonical(lin.wrapping_add(size.max(1) as u64 - 1)) {
                return Err(if s == SegReg::Ss {
                    Fault::ss(0)
                } else {
                    Fault::gp(0)
                });
            }
            return Ok(lin);
        }
        self.seg_addr_legacy(s, off, size, write)
    }

    #[inline]
    fn seg_addr_legacy(&self, s: SegReg, off: u64, size: u8, write: bool) -> Result<u64> {
        let seg = &self.cpu.seg[s as usize];
        let fail = || {
            if s == SegReg::Ss {
                Fault::ss(0)
            } else {
                Fault::gp(0)
            }
        };
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
        let last = off.wrapping_add(size.max(1) as u64 - 1);
        if a & (attr::CODE | attr::DC) == attr::DC {
            // Expand-down data: valid offsets are (limit, max].
            let max = if a & attr::DB != 0 {
                0xffff_ffff
            } else {
                0xffff
            };
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
        if self.cpu.tlb.lookup(Access::Write, user, lin).is_some()
            && (lin & 0xfff) + size as u64 <= 0x1000
        {
            return Ok(lin);
        }
        self.translate(lin, Access::Write, user)?;
        if (lin & 0xfff) + size as u64 > 0x1000 {
            // The second part starts at the page boundary (that is CR2 on a fault).
            let hi = self.lin_mask((lin | 0xfff).wrapping_add(1));
            self.translate(hi, Access::Write, user)?;
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
            self.cpu.tlb.insert_piece(
                Access::Exec,
                user,
                lin,
                host as usize,
                t.gpa,
                t.global,
                t.page_shift,
            );
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
        let size = size.clamp(1, 8);
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
        let watched = self.watch(lin, size, false);
        if !matches!(size, 1 | 2 | 4 | 8) {
            // A piece of a straddling access.
            let mut v = 0;
            for i in 0..size.min(8) as u64 {
                v |= mmu::phys_read(self.bus, t.gpa + i, 1, self.cpu.icount) << (8 * i);
            }
            return Ok(v);
        }
        match self.bus.ram_page(t.gpa & !0xfff) {
            Some(host) => {
                if !watched {
                    self.cpu.tlb.insert_piece(
                        Access::Read,
                        user,
                        lin,
                        host as usize,
                        t.gpa,
                        t.global,
                        t.page_shift,
                    );
                }
                // SAFETY: `host` is a live RAM page; the access stays within it.
                Ok(unsafe { load(host.add((lin & 0xfff) as usize), size) })
            }
            None => {
                self.cpu.end_block = true;
                self.cpu.exit_request = true;
                Ok(self.bus.mmio_read(t.gpa, size, self.cpu.icount))
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn write_slow(&mut self, lin: u64, size: u8, value: u64, user: bool) -> Result<()> {
        let lin = self.lin_mask(lin);
        let size = size.clamp(1, 8);
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
        let watched = self.watch(lin, size, true);
        let page = t.gpa & !0xfff;
        if self.code.is_code_page(page) {
            // Self-modifying code: drop the blocks and leave the current one,
            // so the next instruction is decoded from the new bytes.
            self.code.invalidate_page(page);
            self.cpu.end_block = true;
        }
        if !matches!(size, 1 | 2 | 4 | 8) {
            for i in 0..size.min(8) as u64 {
                mmu::phys_write(self.bus, t.gpa + i, 1, value >> (8 * i), self.cpu.icount);
            }
            return Ok(());
        }
        match self.bus.ram_page_mut(page) {
            Some(p) => {
                if p.cacheable && !watched {
                    let tlb = &mut self.cpu.tlb;
                    tlb.insert_piece(
                        Access::Write,
                        user,
                        lin,
                        p.host as usize,
                        t.gpa,
                        t.global,
                        t.page_shift,
                    );
                    // A permitted write implies a permitted read (SDM 4.6)
                    // and the accessed bits are set: the read entry is free.
                    tlb.insert_piece(
                        Access::Read,
                        user,
                        lin,
                        p.host as usize,
                        t.gpa,
                        t.global,
                        t.page_shift,
                    );
                }
                // SAFETY: `p.host` is a live RAM page; the access stays within it.
                unsafe { store(p.host.add((lin & 0xfff) as usize), size, value) };
                Ok(())
            }
            None => {
                self.cpu.end_block = true;
                self.cpu.exit_request = true;
                self.bus.mmio_write(t.gpa, size, value, self.cpu.icount);
                Ok(())
            }
        }
    }

    /// Checks a data access of `size` bytes at linear `lin` against the
    /// debugger's watchpoints: a hit is noted for the machine and ends the
    /// run after this instruction. Returns whether the page is watched
    /// (then it must stay out of the TLB, so every access comes here).
    #[inline]
    fn watch(&mut self, lin: u64, size: u8, write: bool) -> bool {
        let Some(set) = self.cpu.debug.watchpoints() else {
            return false;
        };
        if !set.watches_page(lin) {
            return false;
        }
        if let Some(watch) = set.watch_hit(lin, u64::from(size), write) {
            if self.cpu.debug.hit.is_none() {
                let addr = lin.max(watch.addr);
                self.cpu.debug.hit = Some(DebugHit::Watch { watch, addr, write });
            }
            self.cpu.end_block = true;
            self.cpu.exit_request = true;
        }
        true
    }

    /// Reads instruction bytes at linear `lin` into `buf` (fetch permission).
    /// Returns how many bytes could be read before a fault, or the fault when
    /// not even the first byte is fetchable.
    pub fn fetch(&mut self, lin: u64, buf: &mut [u8]) -> Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let a = self.lin_mask(lin.wrapping_add(n as u64));
            // Through the execute TLB, like every other instruction fetch:
            // a walk here would see page-table changes that a block already
            // running does not, so decoding at a different boundary could
            // change what executes.
            let gpa = match self.translate_exec(a) {
                Ok(gpa) => gpa,
                Err(f) if n == 0 => return Err(f),
                Err(_) => return Ok(n),
            };
            let room = (0x1000 - (a & 0xfff)) as usize;
            let take = room.min(buf.len() - n);
            match self.bus.ram_page(gpa & !0xfff) {
                Some(host) => {
                    // SAFETY: `host` is a live page and [off, off+take) lies within it.
                    let src =
                        unsafe { std::slice::from_raw_parts(host.add((a & 0xfff) as usize), take) };
                    buf[n..n + take].copy_from_slice(src);
                }
                None => {
                    for (i, b) in buf[n..n + take].iter_mut().enumerate() {
                        *b = self.bus.mmio_read(gpa + i as u64, 1, self.cpu.icount) as u8;
                    }
                }
            }
            n += take;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::CodeCache;
    use crate::fault::vector;
    use crate::mmu::pf;
    use crate::state::{cr, Cpu, Segment};
    use crate::testutil::{
        cpu_in, install_tables, pte, MmioAccess, Pager, Paging, TestBus, TestMode, DATA, RAM,
    };

    /// A context over the test machine's parts (it holds only references).
    macro_rules! cx {
        ($c:expr, $b:expr, $k:expr) => {
            Ctx::new(&mut $c, &mut $b, &mut $k)
        };
    }

    fn machine(mode: TestMode) -> (Cpu, TestBus, CodeCache) {
        let mut bus = TestBus::new();
        install_tables(&mut bus);
        (cpu_in(mode), bus, CodeCache::new())
    }

    fn gp() -> Fault {
        Fault::gp(0)
    }

    fn ss() -> Fault {
        Fault::ss(0)
    }

    fn pf_(code: u32) -> Fault {
        Fault::Exception {
            vector: vector::PF,
            error_code: Some(code),
        }
    }

    fn seg(base: u64, limit: u32, a: u16) -> Segment {
        Segment {
            selector: 0x10,
            base,
            limit,
            attr: a,
        }
    }

    const RW_DATA: u16 = attr::DATA_RW | attr::DB;
    const RO_DATA: u16 = attr::PRESENT | attr::S | attr::ACCESSED | attr::DB;
    const EXEC_ONLY: u16 = attr::PRESENT | attr::S | attr::CODE | attr::ACCESSED | attr::DB;

    #[test]
    fn expand_up_limits() {
        let (mut cpu, mut bus, mut code) = machine(TestMode::Protected32);
        cpu.seg[SegReg::Ds as usize] = seg(0x1000, 0xfff, RW_DATA);
        cpu.seg[SegReg::Ss as usize] = seg(0x1000, 0xfff, RW_DATA);
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ds, 0xffc, 4, false),
            Ok(0x1ffc),
            "ends at the limit"
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ds, 0xfff, 1, true),
            Ok(0x1fff)
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ds, 0xffd, 4, false),
            Err(gp()),
            "last byte past the limit"
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ds, 0x1000, 1, false),
            Err(gp())
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ss, 0xffe, 4, true),
            Err(ss()),
            "SS faults are #SS"
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ss, 0xffc, 4, true),
            Ok(0x1ffc)
        );
        // A flat 4 GiB segment: an access running past 4 GiB is outside the limit.
        cpu.seg[SegReg::Ds as usize] = seg(0, 0xffff_ffff, RW_DATA | attr::GRAN);
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ds, 0xffff_fffc, 4, false),
            Ok(0xffff_fffc)
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ds, 0xffff_fffe, 4, false),
            Err(gp())
        );
        // Base + offset wraps at 4 GiB.
        cpu.seg[SegReg::Ds as usize] = seg(0xffff_f000, 0xffff_ffff, RW_DATA | attr::GRAN);
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ds, 0x2000, 4, false),
            Ok(0x1000)
        );
    }

    #[test]
    fn expand_down_limits() {
        let (mut cpu, mut bus, mut code) = machine(TestMode::Protected32);
        // B = 1: valid offsets limit+1 ..= 0xFFFF_FFFF.
        cpu.seg[SegReg::Ss as usize] = seg(0, 0xfff, RW_DATA | attr::DC);
        // B = 0: valid offsets limit+1 ..= 0xFFFF.
        cpu.seg[SegReg::Es as usize] = seg(0x10000, 0xfff, (RW_DATA & !attr::DB) | attr::DC);
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ss, 0xfff, 1, true),
            Err(ss()),
            "the limit itself is outside"
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ss, 0xffe, 4, true),
            Err(ss())
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ss, 0x1000, 4, true),
            Ok(0x1000)
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ss, 0xffff_fffc, 4, false),
            Ok(0xffff_fffc)
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ss, 0xffff_fffd, 4, false),
            Err(ss())
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ss, 0x1_0000, 4, false),
            Ok(0x1_0000),
            "B=1 reaches past 64 KiB"
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Es, 0x1000, 2, true),
            Ok(0x11000)
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Es, 0xfffe, 2, true),
            Ok(0x1fffe)
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Es, 0xffff, 2, true),
            Err(gp()),
            "B=0 ends at 0xFFFF"
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Es, 0x1_0000, 1, true),
            Err(gp())
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Es, 0x800, 1, false),
            Err(gp())
        );
    }

    #[test]
    fn segment_types_and_null_segments() {
        let (mut cpu, mut bus, mut code) = machine(TestMode::Protected32);
        cpu.seg[SegReg::Ds as usize] = seg(0, 0xffff, RO_DATA);
        cpu.seg[SegReg::Es as usize] = seg(0, 0xffff, EXEC_ONLY);
        cpu.seg[SegReg::Fs as usize] = seg(0, 0xffff, EXEC_ONLY | attr::RW);
        cpu.seg[SegReg::Gs as usize] = Segment::default();
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ds, 0x10, 4, false),
            Ok(0x10)
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ds, 0x10, 4, true),
            Err(gp()),
            "read-only data"
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Es, 0x10, 1, false),
            Err(gp()),
            "execute-only code"
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Fs, 0x10, 1, false),
            Ok(0x10),
            "readable code"
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Fs, 0x10, 1, true),
            Err(gp()),
            "code is never writable"
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Gs, 0, 1, false),
            Err(gp()),
            "null selector: unusable"
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Cs, 0x10, 4, false),
            Ok(0x10),
            "test CS is readable"
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Cs, 0x10, 4, true),
            Err(gp())
        );
        // A null segment in SS (or a system descriptor) gives #SS.
        cpu.seg[SegReg::Ss as usize] = seg(0, 0xffff, attr::PRESENT | 2);
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ss, 0, 1, false),
            Err(ss())
        );
    }

    #[test]
    fn long_mode_canonical_checks_and_bases() {
        let (mut cpu, mut bus, mut code) = machine(TestMode::Long64);
        cpu.seg[SegReg::Ds as usize] = Segment::default();
        cpu.seg[SegReg::Es as usize] = seg(0x1234_0000, 0xffff, RO_DATA);
        cpu.seg[SegReg::Fs as usize] = seg(0x7fff_ffff_f000, 0, 0);
        cpu.seg[SegReg::Gs as usize] = seg(0xffff_8000_0000_0000, 0, 0);
        // No limit or type checks; null DS is fine; ES base is ignored.
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ds, 0x1_0000_0000, 8, true),
            Ok(0x1_0000_0000)
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Es, 0x10, 8, true),
            Ok(0x10)
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Cs, 0x10, 8, true),
            Ok(0x10)
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Fs, 0xff8, 8, false),
            Ok(0x7fff_ffff_fff8)
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Fs, 0xff9, 8, false),
            Err(gp()),
            "last byte non-canonical"
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Gs, 0x10, 4, false),
            Ok(0xffff_8000_0000_0010)
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Gs, u64::MAX, 1, false),
            Err(gp()),
            "wraps below the high half"
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ds, 0x8000_0000_0000, 1, false),
            Err(gp())
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ss, 0x8000_0000_0000, 1, false),
            Err(ss())
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ss, 0xffff_7fff_ffff_fff8, 8, true),
            Err(ss())
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ss, 0xffff_ffff_ffff_fff8, 8, true),
            Ok(0xffff_ffff_ffff_fff8)
        );
        // Compatibility mode uses segmentation like protected mode.
        cpu.seg[SegReg::Cs as usize].attr = attr::CODE_RX | attr::DB;
        cpu.update_mode();
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ds, 0, 1, false),
            Err(gp()),
            "null DS in compatibility mode"
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Es, 0x10, 4, true),
            Err(gp())
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Es, 0x10, 4, false),
            Ok(0x1234_0010),
            "base applies, 32-bit"
        );
    }

    #[test]
    fn real_mode_wraparound_unreal_mode_and_cs_writes() {
        let (mut cpu, mut bus, mut code) = machine(TestMode::Real);
        cpu.seg[SegReg::Ds as usize] = Segment::real(0x1000, attr::DATA_RW);
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ds, 0xffff, 1, true),
            Ok(0x1ffff),
            "last byte of the segment"
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ds, 0xfffe, 2, true),
            Ok(0x1fffe)
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ds, 0xffff, 2, false),
            Err(gp()),
            "word at 0xFFFF"
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ss, 0xffff, 2, true),
            Err(ss())
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Ds, 0xfffd, 4, false),
            Err(gp())
        );
        // Writes through CS are allowed in real mode, whatever CS's cached type.
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Cs, 0x10, 2, true),
            Ok(0x10010)
        );
        // Unreal mode: a 4 GiB limit cached from protected mode stays in effect.
        cpu.seg[SegReg::Fs as usize] = Segment {
            selector: 0,
            base: 0,
            limit: 0xffff_ffff,
            attr: attr::DATA_RW | attr::GRAN,
        };
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Fs, 0xffff, 2, true),
            Ok(0xffff)
        );
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Fs, 0x80_0000, 4, false),
            Ok(0x80_0000)
        );
        // The real-mode base can reach past 1 MiB (no A20 wrap here).
        cpu.seg[SegReg::Es as usize] = Segment::real(0xffff, attr::DATA_RW);
        assert_eq!(
            cx!(cpu, bus, code).seg_addr(SegReg::Es, 0xffff, 1, true),
            Ok(0x10_ffef)
        );
    }

    #[test]
    fn real_mode_segment_overrun_through_the_run_loop() {
        use crate::testutil::{fault_of, install_fault_handlers, run_asm};
        use iced_x86::code_asm::*;
        for (use_ss, want) in [(false, vector::GP), (true, vector::SS)] {
            let (cpu, bus, _) = run_asm(
                TestMode::Real,
                |a| {
                    a.mov(bx, 0xffffu32)?;
                    a.mov(bp, 0xffffu32)?;
                    if use_ss {
                        a.mov(ax, word_ptr(bp))?;
                    } else {
                        a.mov(ax, word_ptr(bx))?;
                    }
                    a.hlt()
                },
                |cpu, bus| install_fault_handlers(cpu, bus),
            );
            let (v, _, ip) = fault_of(&cpu, &bus).expect("a fault");
            assert_eq!(v, want);
            assert_eq!(ip, 6, "IP of the faulting MOV");
        }
    }

    /// A 32-bit protected-mode machine with 32-bit paging: identity map of
    /// the low 16 MiB, supervisor and user, writable.
    fn paged(kind: Paging) -> (Cpu, TestBus, CodeCache, Pager) {
        let (mut cpu, mut bus, code) = machine(if kind == Paging::Long4 {
            TestMode::Long64
        } else {
            TestMode::Protected32
        });
        let mut pg = Pager::new(&mut bus, kind);
        pg.identity(&mut bus, 0, RAM as u64, pte::PWU);
        pg.enable(&mut cpu);
        cpu.cr0 |= cr::CR0_WP;
        (cpu, bus, code, pg)
    }

    #[test]
    fn straddling_accesses_fault_in_the_second_page_without_partial_writes() {
        for kind in [Paging::Bits32, Paging::Pae, Paging::Long4] {
            let (mut cpu, mut bus, mut code, mut pg) = paged(kind);
            let page2 = DATA + 0x1000;
            pg.write(&mut bus, page2, 0, 0);
            bus.put(DATA + 0xffc, 4, 0x1122_3344);
            // Warm the TLB for the first page so the fast path is tempted.
            cx!(cpu, bus, code).write_lin(DATA, 4, 0).unwrap();
            cx!(cpu, bus, code).read_lin(DATA + 0xffc, 4).unwrap();
            for size in [2u8, 4, 8] {
                let lin = page2 - 1;
                cpu.cr2 = 0;
                assert_eq!(
                    cx!(cpu, bus, code).write_lin(lin, size, u64::MAX),
                    Err(pf_(pf::WRITE)),
                    "{kind:?} size {size}"
                );
                assert_eq!(cpu.cr2, page2, "CR2 is the first byte in the missing page");
                assert_eq!(bus.read(DATA + 0xffc, 4), 0x1122_3344, "no partial write");
                cpu.cr2 = 0;
                assert_eq!(
                    cx!(cpu, bus, code).read_lin(page2 - 3, size.max(4)),
                    Err(pf_(0))
                );
                assert_eq!(cpu.cr2, page2);
            }
            // At CPL 3, a supervisor-only second page gives P|U (|W).
            bus.put(page2, 8, 0x8877_6655);
            pg.write(&mut bus, page2, 0, page2 | pte::P | pte::RW);
            cpu.tlb.flush_all();
            cpu.cpl = 3;
            assert_eq!(
                cx!(cpu, bus, code).write_lin(page2 - 2, 4, 0),
                Err(pf_(pf::PRESENT | pf::WRITE | pf::USER))
            );
            assert_eq!(bus.read(DATA + 0xffe, 2), 0x1122);
            assert_eq!(
                cx!(cpu, bus, code).read_lin(page2 - 2, 4),
                Err(pf_(pf::PRESENT | pf::USER))
            );
            // Both pages accessible: the value is assembled from both.
            cpu.cpl = 0;
            assert_eq!(cx!(cpu, bus, code).read_lin(page2 - 2, 4), Ok(0x6655_1122));
            cx!(cpu, bus, code)
                .write_lin(page2 - 3, 8, 0x0102_0304_0506_0708)
                .unwrap();
            assert_eq!(bus.read(page2 - 3, 8), 0x0102_0304_0506_0708);
        }
    }

    #[test]
    fn straddling_read_touches_no_mmio_when_the_second_page_faults() {
        let (mut cpu, mut bus, mut code, mut pg) = paged(Paging::Pae);
        let lin = 0x4000_0000u64;
        pg.map(&mut bus, lin, 0xfee0_0000, pte::PWU, 12);
        assert_eq!(cx!(cpu, bus, code).read_lin(lin + 0xffe, 4), Err(pf_(0)));
        assert_eq!(cpu.cr2, lin + 0x1000);
        assert_eq!(
            cx!(cpu, bus, code).write_lin(lin + 0xffe, 4, 0),
            Err(pf_(pf::WRITE))
        );
        assert!(bus.mmio.is_empty(), "{:?}", bus.mmio);
    }

    #[test]
    fn mmio_goes_to_the_bus_and_is_never_cached() {
        let (mut cpu, mut bus, mut code, mut pg) = paged(Paging::Long4);
        let lin = 0x4000_0000u64;
        pg.map(&mut bus, lin, 0xfee0_0000, pte::PWU, 12);
        for round in 0..2 {
            cpu.exit_request = false;
            assert_eq!(cx!(cpu, bus, code).read_lin(lin + 0x30, 4), Ok(0xffff_ffff));
            assert!(cpu.exit_request && cpu.end_block, "round {round}");
            cpu.exit_request = false;
            cx!(cpu, bus, code)
                .write_lin(lin + 0xb0, 4, 0x1234)
                .unwrap();
            assert!(cpu.exit_request);
            for k in [Access::Read, Access::Write] {
                assert!(cpu.tlb.lookup(k, false, lin).is_none(), "MMIO in the TLB");
            }
        }
        assert_eq!(
            bus.mmio,
            [
                MmioAccess {
                    addr: 0xfee0_0030,
                    size: 4,
                    write: None
                },
                MmioAccess {
                    addr: 0xfee0_00b0,
                    size: 4,
                    write: Some(0x1234)
                },
            ]
            .repeat(2)
        );
        // Paging off, 32-bit: straight to the physical address.
        bus.mmio.clear();
        let mut cpu2 = cpu_in(TestMode::Protected32);
        let mut c2 = CodeCache::new();
        let mut bus2 = TestBus::new();
        cx!(cpu2, bus2, c2)
            .write_seg(SegReg::Ds, 0xfec0_0010, 1, 0x5a)
            .unwrap();
        assert_eq!(
            cx!(cpu2, bus2, c2).read_seg(SegReg::Ds, 0xfec0_0014, 2),
            Ok(0xffff)
        );
        assert_eq!(bus2.mmio.len(), 2);
    }

    #[test]
    fn tlb_entries_follow_the_access_kind_and_dirty_bits() {
        let (mut cpu, mut bus, mut code, mut pg) = paged(Paging::Bits32);
        // A read makes a read entry only; D stays clear.
        cx!(cpu, bus, code).read_lin(DATA, 4).unwrap();
        assert!(cpu.tlb.lookup(Access::Read, false, DATA).is_some());
        assert!(cpu.tlb.lookup(Access::Write, false, DATA).is_none());
        assert_eq!(pg.read(&mut bus, DATA, 0) & (pte::A | pte::D), pte::A);
        // The first write takes the slow path and sets D.
        cx!(cpu, bus, code).write_lin(DATA + 8, 4, 7).unwrap();
        assert_ne!(pg.read(&mut bus, DATA, 0) & pte::D, 0);
        assert!(cpu.tlb.lookup(Access::Write, false, DATA).is_some());
        // Later writes hit the TLB: the bus is not asked again.
        let calls = bus.ram_page_mut_calls;
        cx!(cpu, bus, code).write_lin(DATA + 16, 8, 9).unwrap();
        assert_eq!(bus.ram_page_mut_calls, calls);
        // A write to a fresh page also gives a read entry (write implies read).
        cx!(cpu, bus, code).write_lin(DATA + 0x5000, 1, 1).unwrap();
        assert!(cpu.tlb.lookup(Access::Read, false, DATA + 0x5000).is_some());
        // Privileges have separate entries.
        assert!(cpu.tlb.lookup(Access::Read, true, DATA).is_none());
        // A page the bus wants to watch is never cached for writes.
        bus.uncached.insert(DATA + 0x6000);
        cx!(cpu, bus, code).write_lin(DATA + 0x6000, 4, 1).unwrap();
        assert!(cpu
            .tlb
            .lookup(Access::Write, false, DATA + 0x6000)
            .is_none());
        let calls = bus.ram_page_mut_calls;
        cx!(cpu, bus, code).write_lin(DATA + 0x6004, 4, 1).unwrap();
        assert_eq!(bus.ram_page_mut_calls, calls + 1, "seen by the bus again");
    }

    #[test]
    fn global_pages_survive_a_cr3_reload_and_invlpg_drops_one_page() {
        let (mut cpu, mut bus, mut code, mut pg) = paged(Paging::Bits32);
        cpu.cr4 |= cr::CR4_PGE;
        let (g, n) = (0x4000_0000u64, 0x4000_1000u64);
        pg.map(&mut bus, g, 0x60_0000, pte::PWU | pte::G, 12);
        pg.map(&mut bus, n, 0x60_1000, pte::PWU, 12);
        bus.put(0x60_0000, 4, 0xaaaa);
        bus.put(0x60_1000, 4, 0xbbbb);
        bus.put(0x70_0000, 4, 0xcccc);
        assert_eq!(cx!(cpu, bus, code).read_lin(g, 4), Ok(0xaaaa));
        assert_eq!(cx!(cpu, bus, code).read_lin(n, 4), Ok(0xbbbb));
        // Remap both without invalidation: the TLB keeps the old translations.
        pg.map(&mut bus, g, 0x70_0000, pte::PWU | pte::G, 12);
        pg.map(&mut bus, n, 0x70_0000, pte::PWU, 12);
        assert_eq!(cx!(cpu, bus, code).read_lin(g, 4), Ok(0xaaaa));
        assert_eq!(cx!(cpu, bus, code).read_lin(n, 4), Ok(0xbbbb));
        // A CR3 write with PGE drops only the non-global one.
        cpu.tlb.flush_non_global();
        assert_eq!(cx!(cpu, bus, code).read_lin(g, 4), Ok(0xaaaa));
        assert_eq!(cx!(cpu, bus, code).read_lin(n, 4), Ok(0xcccc));
        // INVLPG drops exactly that page.
        pg.map(&mut bus, n, 0x60_1000, pte::PWU, 12);
        cpu.tlb.flush_page(g + 0x800);
        assert_eq!(cx!(cpu, bus, code).read_lin(g, 4), Ok(0xcccc));
        assert_eq!(
            cx!(cpu, bus, code).read_lin(n, 4),
            Ok(0xcccc),
            "neighbour still cached"
        );
    }

    #[test]
    fn invlpg_in_a_large_page_drops_the_whole_page() {
        let (mut cpu, mut bus, mut code, mut pg) = paged(Paging::Pae);
        let lin = 0x8000_0000u64;
        pg.map(&mut bus, lin, 0x20_0000, pte::PWU, 21);
        bus.put(0x20_0000 + 0x1_0000, 4, 0x1111);
        bus.put(0x40_0000 + 0x1_0000, 4, 0x2222);
        assert_eq!(cx!(cpu, bus, code).read_lin(lin + 0x1_0000, 4), Ok(0x1111));
        pg.map(&mut bus, lin, 0x40_0000, pte::PWU, 21);
        cpu.tlb.flush_page(lin + 0x1f_f000);
        assert_eq!(cx!(cpu, bus, code).read_lin(lin + 0x1_0000, 4), Ok(0x2222));
    }

    #[test]
    fn implicit_supervisor_accesses_at_cpl3() {
        let (mut cpu, mut bus, mut code, mut pg) = paged(Paging::Long4);
        let lin = 0x4000_0000u64;
        pg.map(&mut bus, lin, 0x60_0000, pte::P, 12);
        bus.put(0x60_0000, 8, 0x1234);
        cpu.cpl = 3;
        assert_eq!(
            cx!(cpu, bus, code).read_lin(lin, 8),
            Err(pf_(pf::PRESENT | pf::USER))
        );
        assert_eq!(cx!(cpu, bus, code).read_lin_sys(lin, 8), Ok(0x1234));
        // Read-only with WP: even implicit supervisor writes fault, without U.
        assert_eq!(
            cx!(cpu, bus, code).write_lin_sys(lin, 1, 0),
            Err(pf_(pf::PRESENT | pf::WRITE))
        );
        assert_eq!(
            cx!(cpu, bus, code).read_lin(lin, 8),
            Err(pf_(pf::PRESENT | pf::USER)),
            "no leak through the supervisor TLB set"
        );
    }

    #[test]
    fn probe_write_checks_both_pages_without_writing() {
        let (mut cpu, mut bus, mut code, mut pg) = paged(Paging::Bits32);
        pg.write(
            &mut bus,
            DATA + 0x1000,
            0,
            (DATA + 0x1000) | pte::P | pte::US,
        );
        assert_eq!(
            cx!(cpu, bus, code).probe_write(SegReg::Ds, DATA + 0xffc, 4),
            Ok(DATA + 0xffc)
        );
        assert_eq!(
            cx!(cpu, bus, code).probe_write(SegReg::Ds, DATA + 0xffe, 4),
            Err(pf_(pf::PRESENT | pf::WRITE))
        );
        assert_eq!(cpu.cr2, DATA + 0x1000);
        assert_eq!(bus.read(DATA + 0xff0, 8) | bus.read(DATA + 0xff8, 8), 0);
    }

    #[test]
    fn odd_sizes_within_and_across_pages() {
        let (mut cpu, mut bus, mut code, _) = paged(Paging::Long4);
        for (at, size) in [
            (DATA + 0x10, 3u8),
            (DATA + 0xffe, 3),
            (DATA + 0x1ffb, 6),
            (DATA + 0x2008, 7),
        ] {
            cx!(cpu, bus, code)
                .write_lin(at, size, 0x1122_3344_5566_7788)
                .unwrap();
            let want = 0x1122_3344_5566_7788u64 & ((1u64 << (8 * size)) - 1);
            assert_eq!(bus.read(at, size as usize), want, "{at:#x} {size}");
            assert_eq!(bus.read(at + size as u64, 1), 0, "nothing past the access");
            // Twice: the second time through the TLB.
            assert_eq!(cx!(cpu, bus, code).read_lin(at, size), Ok(want));
            assert_eq!(cx!(cpu, bus, code).read_lin(at, size), Ok(want));
        }
    }
}
