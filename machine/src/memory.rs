//! Guest RAM: one anonymous memory mapping, the guest-physical address map
//! over it, and the dirty-page bitmap that incremental checkpoints build on.
//!
//! The mapping is created with `MAP_NORESERVE` and is backed lazily by the
//! host kernel, so a large guest costs only the pages it touches. Host
//! offsets are contiguous: `[0, low_end)` of guest-physical space maps to
//! host offset `[0, low_end)`, and `[4 GiB, high_end)` follows right after
//! (see [`crate::layout`]).
//!
//! # Dirty tracking (brief invariant 5)
//! One bit per 4 KiB page of RAM, set whenever the page is handed out for
//! writing ([`GuestRam::page_mut`], which the CPU calls on its store slow
//! path) or written from the host side ([`GuestRam::write`]). A vCPU's write
//! TLB may only hold a page that is already dirty in the current epoch, so
//! starting an epoch ([`crate::Machine::start_dirty_epoch`]) clears the
//! bitmap *and* every vCPU's write TLB: the next store to each page takes
//! the slow path once, sets the bit, and re-arms the fast path.
//!
//! Each epoch has a number ([`GuestRam::dirty_epoch`]), so a checkpoint
//! store can tell whether the bitmap still covers everything written since
//! its last checkpoint. Whole-page reads and writes ([`GuestRam::read_page`],
//! [`GuestRam::write_page`]) serve checkpoints and the state hash; restoring
//! a page counts as a write (it marks the page dirty).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use hindsight_cpu::WritablePage;
use hindsight_firmware::{GuestMemory, LoadError, MemRegion};
use memmap2::{MmapMut, MmapOptions};

use crate::layout::{
    self, EBDA_START, HIGH_MEMORY_START, HIGH_RAM_START, MAX_RAM, MIN_RAM, PAGE_SIZE, ROM_END,
    ROM_START, VGA_END, VGA_START,
};

/// Why guest RAM could not be created or accessed.
#[derive(Debug)]
pub enum MemoryError {
    /// The requested RAM size is outside what the machine supports or is
    /// not a whole number of 4 KiB pages.
    BadSize {
        /// The size asked for, in bytes.
        size: u64,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The host refused the anonymous mapping.
    Map {
        /// The size asked for, in bytes.
        size: u64,
        /// The host's error.
        source: std::io::Error,
    },
    /// A host-side access touched guest-physical addresses that are not RAM.
    NotRam {
        /// First guest-physical address of the access.
        gpa: u64,
        /// Length of the access in bytes.
        len: u64,
    },
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryError::BadSize { size, problem } => {
                write!(f, "guest RAM size {size:#x} bytes: {problem}")
            }
            MemoryError::Map { size, source } => {
                write!(f, "cannot map {size:#x} bytes of guest RAM: {source}")
            }
            MemoryError::NotRam { gpa, len } => write!(
                f,
                "guest-physical range [{gpa:#x},{:#x}) is not RAM",
                gpa.saturating_add(*len)
            ),
        }
    }
}

impl std::error::Error for MemoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MemoryError::Map { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Guest RAM with its address map and dirty bitmap.
pub struct GuestRam {
    /// Keeps the mapping alive; all accesses go through `base`.
    _map: MmapMut,
    /// Host address of the first byte of the mapping.
    base: *mut u8,
    /// Bytes of RAM (length of the mapping).
    size: u64,
    /// RAM is backed at guest-physical `[0, low_end)`.
    low_end: u64,
    /// ... and at `[HIGH_RAM_START, high_end)`.
    high_end: u64,
    /// One bit per page of the mapping (host page index).
    dirty: Vec<u64>,
    /// Pages dirty in some earlier epoch (bitmap like `dirty`): a page in
    /// neither was never written and is still zero.
    written: Vec<u64>,
    /// Number of the current dirty epoch (bumped when the bitmap is cleared).
    epoch: u64,
    /// Unique among the RAMs of this process (see [`GuestRam::instance`]).
    instance: u64,
}

/// Source of [`GuestRam::instance`] numbers.
static INSTANCES: AtomicU64 = AtomicU64::new(0);

// SAFETY: `base` points into `_map`, which GuestRam owns; nothing else holds
// the pointer except the TLBs of vCPUs owned by the same machine, which only
// use it through `&mut Machine`.
unsafe impl Send for GuestRam {}

impl fmt::Debug for GuestRam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestRam")
            .field("size", &self.size)
            .field("low_end", &self.low_end)
            .field("high_end", &self.high_end)
            .finish()
    }
}

impl GuestRam {
    /// Maps `size` bytes of zeroed guest RAM (a multiple of 4 KiB between
    /// [`layout::MIN_RAM`] and [`layout::MAX_RAM`]).
    pub fn new(size: u64) -> Result<GuestRam, MemoryError> {
        let problem = if size & (PAGE_SIZE - 1) != 0 {
            Some("not a multiple of 4 KiB")
        } else if size < MIN_RAM {
            Some("below the 2 MiB minimum")
        } else if size > MAX_RAM {
            Some("above the maximum the 40-bit physical address space allows")
        } else if usize::try_from(size).is_err() {
            Some("larger than the host address space")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(MemoryError::BadSize { size, problem });
        }
        let mut map = MmapOptions::new()
            .len(size as usize)
            .no_reserve_swap()
            .map_anon()
            .map_err(|source| MemoryError::Map { size, source })?;
        let base = map.as_mut_ptr();
        let (low_end, high_end) = layout::ram_ranges(size);
        let pages = (size / PAGE_SIZE) as usize;
        Ok(GuestRam {
            _map: map,
            base,
            size,
            low_end,
            high_end,
            dirty: vec![0; pages.div_ceil(64)],
            written: vec![0; pages.div_ceil(64)],
            epoch: 0,
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Bytes of RAM.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// End of the RAM below the 32-bit MMIO hole.
    pub fn low_end(&self) -> u64 {
        self.low_end
    }

    /// End of the RAM above 4 GiB ([`layout::HIGH_RAM_START`] when there is none).
    pub fn high_end(&self) -> u64 {
        self.high_end
    }

    /// Host offset of guest-physical `gpa` if it is backed by RAM (the VGA
    /// window is not; the ROM area is).
    #[inline]
    fn offset(&self, gpa: u64) -> Option<u64> {
        if gpa < self.low_end {
            if (VGA_START..VGA_END).contains(&gpa) {
                return None;
            }
            Some(gpa)
        } else if (HIGH_RAM_START..self.high_end).contains(&gpa) {
            Some(self.low_end + (gpa - HIGH_RAM_START))
        } else {
            None
        }
    }

    /// Whether `gpa` lies in the read-only ROM area.
    #[inline]
    pub fn is_rom(gpa: u64) -> bool {
        (ROM_START..ROM_END).contains(&gpa)
    }

    /// Host address of the page at `page` (page-aligned) for reads and
    /// instruction fetch: RAM and ROM pages, `None` elsewhere.
    #[inline]
    pub fn page(&mut self, page: u64) -> Option<*mut u8> {
        let off = self.offset(page)?;
        // SAFETY: `off` is a page offset inside the mapping.
        Some(unsafe { self.base.add(off as usize) })
    }

    /// Host address of the page at `page` for writing; marks it dirty.
    /// `None` for ROM, MMIO and unmapped pages. Always cacheable: the page is
    /// dirty from now on, so the write TLB may hold it until the next epoch.
    #[inline]
    pub fn page_mut(&mut self, page: u64) -> Option<WritablePage> {
        if Self::is_rom(page) {
            return None;
        }
        let off = self.offset(page)?;
        self.mark_dirty_offset(off);
        Some(WritablePage {
            // SAFETY: `off` is a page offset inside the mapping.
            host: unsafe { self.base.add(off as usize) },
            cacheable: true,
        })
    }

    #[inline]
    fn mark_dirty_offset(&mut self, off: u64) {
        let idx = (off / PAGE_SIZE) as usize;
        self.dirty[idx / 64] |= 1 << (idx % 64);
    }

    /// Host offset of `[gpa, gpa + len)` if all of it is RAM (or ROM) in one
    /// contiguous piece.
    fn range(&self, gpa: u64, len: u64) -> Result<u64, MemoryError> {
        let err = MemoryError::NotRam { gpa, len };
        if len == 0 {
            return Ok(0);
        }
        let last = gpa.checked_add(len - 1).ok_or(err)?;
        let (start, end) = if gpa < self.low_end {
            (0, self.low_end)
        } else {
            (HIGH_RAM_START, self.high_end)
        };
        let off = self.offset(gpa).ok_or(MemoryError::NotRam { gpa, len })?;
        let crosses_vga = gpa < VGA_END && last >= VGA_START;
        if gpa < start || last >= end || crosses_vga {
            return Err(MemoryError::NotRam { gpa, len });
        }
        Ok(off)
    }

    /// Copies guest RAM at `gpa` into `buf` (host-side access, e.g. for a
    /// debugger or a test). ROM reads as RAM; anything else is an error.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let off = self.range(gpa, buf.len() as u64)?;
        // SAFETY: `range` checked that [off, off + len) lies in the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(off as usize), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    /// Copies `data` to guest RAM at `gpa` and marks the pages dirty
    /// (host-side access: loaders may also write the ROM area). The caller
    /// must invalidate translated code on those pages.
    pub fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        let off = self.range(gpa, data.len() as u64)?;
        // SAFETY: `range` checked that [off, off + len) lies in the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(off as usize), data.len())
        };
        self.mark_dirty_range(off, data.len() as u64);
        Ok(())
    }

    /// Sets `len` bytes at `gpa` to `byte`; like [`GuestRam::write`].
    pub fn fill(&mut self, gpa: u64, len: u64, byte: u8) -> Result<(), MemoryError> {
        let off = self.range(gpa, len)?;
        // SAFETY: as in `write`.
        unsafe { std::ptr::write_bytes(self.base.add(off as usize), byte, len as usize) };
        self.mark_dirty_range(off, len);
        Ok(())
    }

    fn mark_dirty_range(&mut self, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = off / PAGE_SIZE;
        let last = (off + len - 1) / PAGE_SIZE;
        for p in first..=last {
            self.mark_dirty_offset(p * PAGE_SIZE);
        }
    }

    /// Guest-physical address of host page index `idx`.
    fn gpa_of_index(&self, idx: u64) -> u64 {
        let off = idx * PAGE_SIZE;
        if off < self.low_end {
            off
        } else {
            HIGH_RAM_START + (off - self.low_end)
        }
    }

    /// Whether the RAM page containing `gpa` was written in this epoch.
    pub fn is_dirty(&self, gpa: u64) -> bool {
        match self.offset(gpa & !(PAGE_SIZE - 1)) {
            Some(off) => {
                let idx = (off / PAGE_SIZE) as usize;
                self.dirty[idx / 64] & (1 << (idx % 64)) != 0
            }
            None => false,
        }
    }

    /// Guest-physical addresses of the pages written in this epoch, ascending.
    pub fn dirty_pages(&self) -> impl Iterator<Item = u64> + '_ {
        self.dirty.iter().enumerate().flat_map(move |(w, &bits)| {
            let mut bits = bits;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as u64;
                bits &= bits - 1;
                Some(self.gpa_of_index(w as u64 * 64 + b))
            })
        })
    }

    /// Forgets which pages are dirty and starts the next epoch. Only
    /// [`crate::Machine::start_dirty_epoch`] may call this, because every
    /// vCPU's write TLB must be flushed with it.
    pub(crate) fn clear_dirty(&mut self) {
        for (w, d) in self.written.iter_mut().zip(&self.dirty) {
            *w |= d;
        }
        self.dirty.fill(0);
        self.epoch += 1;
    }

    /// Number of the current dirty epoch: 0 at power-on, one more after
    /// every [`crate::Machine::start_dirty_epoch`]. The dirty pages cover
    /// every write since that epoch started.
    pub fn dirty_epoch(&self) -> u64 {
        self.epoch
    }

    /// A number no other RAM of this process has: with
    /// [`GuestRam::dirty_epoch`], it tells a checkpoint store whether it is
    /// looking at the RAM and epoch it last saw.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// The dirty bitmap by host page index (bit `i % 64` of word `i / 64`).
    pub(crate) fn dirty_words(&self) -> &[u64] {
        &self.dirty
    }

    /// Pages written in an earlier epoch, by host page index (like
    /// [`GuestRam::dirty_words`]). A page set in neither bitmap was never
    /// written since power-on and is all zero, without reading it.
    pub(crate) fn written_words(&self) -> &[u64] {
        &self.written
    }

    /// Number of RAM pages (the VGA window included, though it is not RAM:
    /// host page indices run from 0 to this).
    pub(crate) fn host_pages(&self) -> u64 {
        self.size / PAGE_SIZE
    }

    /// Guest-physical address of host page index `idx`, unless the page is
    /// the VGA window (which the mapping holds but the guest cannot reach).
    pub(crate) fn index_gpa(&self, idx: u64) -> Option<u64> {
        let gpa = self.gpa_of_index(idx);
        (!(VGA_START..VGA_END).contains(&gpa)).then_some(gpa)
    }

    /// The page at host index `idx`, which must be below [`Self::host_pages`].
    pub(crate) fn page_by_index(&self, idx: u64) -> &[u8; PAGE_SIZE as usize] {
        assert!(idx < self.host_pages());
        // SAFETY: the page lies inside the mapping (checked above), which
        // lives as long as `self`; stores through the vCPUs' TLBs need
        // `&mut Machine`, so nothing writes it while this borrow exists.
        unsafe { &*(self.base.add((idx * PAGE_SIZE) as usize) as *const [u8; PAGE_SIZE as usize]) }
    }

    /// Guest-physical addresses of every RAM page (ROM area included, VGA
    /// window excluded), ascending.
    pub fn pages(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.host_pages()).filter_map(|i| self.index_gpa(i))
    }

    /// The RAM (or ROM) page at page-aligned `gpa`; `None` if `gpa` is not
    /// page-aligned or not backed by RAM.
    pub fn read_page(&self, gpa: u64) -> Option<&[u8; PAGE_SIZE as usize]> {
        if gpa & (PAGE_SIZE - 1) != 0 {
            return None;
        }
        let off = self.offset(gpa)?;
        Some(self.page_by_index(off / PAGE_SIZE))
    }

    /// Overwrites the RAM (or ROM) page at page-aligned `gpa` with `data`,
    /// or with zeros when `data` is `None`, and marks it dirty (restoring a
    /// checkpoint). The caller must drop translated code on the page.
    pub fn write_page(
        &mut self,
        gpa: u64,
        data: Option<&[u8; PAGE_SIZE as usize]>,
    ) -> Result<(), MemoryError> {
        if gpa & (PAGE_SIZE - 1) != 0 {
            return Err(MemoryError::NotRam {
                gpa,
                len: PAGE_SIZE,
            });
        }
        match data {
            Some(d) => self.write(gpa, d),
            None => self.fill(gpa, PAGE_SIZE, 0),
        }
    }

    /// The guest-physical address map for loaders and the multiboot memory
    /// map: usable low memory, the EBDA/VGA/ROM area reserved, usable
    /// extended memory below the hole, and usable RAM above 4 GiB.
    pub fn regions(&self) -> Vec<MemRegion> {
        let mut r = vec![
            MemRegion::usable(0, EBDA_START),
            MemRegion::reserved(EBDA_START, HIGH_MEMORY_START - EBDA_START),
        ];
        if self.low_end > HIGH_MEMORY_START {
            r.push(MemRegion::usable(
                HIGH_MEMORY_START,
                self.low_end - HIGH_MEMORY_START,
            ));
        }
        if self.high_end > HIGH_RAM_START {
            r.push(MemRegion::usable(
                HIGH_RAM_START,
                self.high_end - HIGH_RAM_START,
            ));
        }
        r
    }
}

/// Whether every byte of `bytes` is zero (vectorised: ORs whole blocks,
/// stopping at the first block that is not zero).
pub fn is_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(256)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

impl GuestMemory for GuestRam {
    fn ram_regions(&self) -> Vec<MemRegion> {
        self.regions()
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), LoadError> {
        GuestRam::write(self, gpa, data).map_err(|_| LoadError::OutsideRam {
            gpa,
            len: data.len() as u64,
        })
    }

    fn fill(&mut self, gpa: u64, len: u64, byte: u8) -> Result<(), LoadError> {
        GuestRam::fill(self, gpa, len, byte).map_err(|_| LoadError::OutsideRam { gpa, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hindsight_firmware::MemKind;

    const MIB: u64 = 1 << 20;

    #[test]
    fn sizes_are_checked() {
        assert!(GuestRam::new(MIB).is_err());
        assert!(GuestRam::new(4 * MIB + 1).is_err());
        assert!(GuestRam::new(MAX_RAM + PAGE_SIZE).is_err());
        let ram = GuestRam::new(4 * MIB).unwrap();
        assert_eq!(ram.size(), 4 * MIB);
        assert!(format!("{ram:?}").contains("GuestRam"));
    }

    #[test]
    fn pages_follow_the_address_map() {
        let mut ram = GuestRam::new(8 * MIB).unwrap();
        assert!(ram.page(0).is_some());
        assert!(ram.page(EBDA_START & !0xfff).is_some());
        assert!(ram.page(VGA_START).is_none());
        assert!(ram.page(VGA_END - PAGE_SIZE).is_none());
        assert!(ram.page(ROM_START).is_some(), "ROM is readable");
        assert!(ram.page_mut(ROM_START).is_none(), "ROM is not writable");
        assert!(ram.page_mut(ROM_END - PAGE_SIZE).is_none());
        assert!(ram.page_mut(ROM_END).is_some());
        assert!(ram.page(8 * MIB - PAGE_SIZE).is_some());
        assert!(ram.page(8 * MIB).is_none());
        assert!(ram.page(HIGH_RAM_START).is_none());
        assert!(ram.page(layout::LAPIC_START).is_none());
    }

    #[test]
    fn ram_above_the_hole_is_contiguous_on_the_host() {
        // Mapped lazily: 3 GiB + 8 KiB costs nothing until touched.
        let size = layout::MMIO_HOLE_START + 2 * PAGE_SIZE;
        let mut ram = GuestRam::new(size).unwrap();
        assert_eq!(ram.low_end(), layout::MMIO_HOLE_START);
        assert_eq!(ram.high_end(), HIGH_RAM_START + 2 * PAGE_SIZE);
        assert!(ram.page(layout::MMIO_HOLE_START).is_none());
        let below = ram.page(layout::MMIO_HOLE_START - PAGE_SIZE).unwrap();
        let above = ram.page(HIGH_RAM_START).unwrap();
        assert_eq!(above as usize - below as usize, PAGE_SIZE as usize);
        ram.write(HIGH_RAM_START + PAGE_SIZE, b"hi").unwrap();
        let mut b = [0; 2];
        ram.read(HIGH_RAM_START + PAGE_SIZE, &mut b).unwrap();
        assert_eq!(&b, b"hi");
        assert_eq!(
            ram.dirty_pages().collect::<Vec<_>>(),
            vec![HIGH_RAM_START + PAGE_SIZE]
        );
        assert!(ram.write(HIGH_RAM_START + PAGE_SIZE, &[0; 4097]).is_err());
        assert!(ram.write(layout::MMIO_HOLE_START - 1, &[0; 2]).is_err());
    }

    #[test]
    fn host_accesses_are_bounds_checked() {
        let mut ram = GuestRam::new(4 * MIB).unwrap();
        assert!(ram.write(4 * MIB - 2, &[1, 2]).is_ok());
        assert!(ram.write(4 * MIB - 1, &[1, 2]).is_err());
        assert!(ram.write(VGA_START - 1, &[1, 2]).is_err());
        assert!(ram.write(VGA_END - 1, &[1]).is_err());
        assert!(
            ram.write(VGA_END, &[1]).is_ok(),
            "loaders may fill the ROM area"
        );
        assert!(ram.fill(u64::MAX, 2, 0).is_err());
        assert!(ram.write(u64::MAX, &[]).is_ok());
        let mut b = [0u8; 3];
        assert!(ram.read(VGA_START, &mut b).is_err());
    }

    #[test]
    fn dirty_bits_follow_writes_and_clear() {
        let mut ram = GuestRam::new(4 * MIB).unwrap();
        assert_eq!(ram.dirty_pages().count(), 0);
        ram.page_mut(0x5000).unwrap();
        ram.fill(0x1ff0, 0x20, 7).unwrap();
        assert!(ram.is_dirty(0x5123));
        assert!(!ram.is_dirty(0x4000));
        assert!(!ram.is_dirty(VGA_START));
        assert_eq!(
            ram.dirty_pages().collect::<Vec<_>>(),
            vec![0x1000, 0x2000, 0x5000]
        );
        ram.page(0x9000).unwrap();
        assert!(!ram.is_dirty(0x9000), "reads do not dirty");
        let epoch = ram.dirty_epoch();
        ram.clear_dirty();
        assert_eq!(ram.dirty_pages().count(), 0);
        assert_eq!(ram.dirty_epoch(), epoch + 1);
    }

    #[test]
    fn whole_pages_for_checkpoints() {
        let mut ram = GuestRam::new(4 * MIB).unwrap();
        let all: Vec<u64> = ram.pages().collect();
        assert_eq!(
            all.len() as u64,
            4 * MIB / PAGE_SIZE - (VGA_END - VGA_START) / PAGE_SIZE
        );
        assert!(!all.contains(&VGA_START));
        assert!(all.contains(&ROM_START));
        assert!(is_zero(ram.read_page(0x3000).unwrap()));
        assert!(ram.read_page(0x3001).is_none());
        assert!(ram.read_page(VGA_START).is_none());
        assert!(ram.read_page(4 * MIB).is_none());
        let mut page = [0u8; PAGE_SIZE as usize];
        page[4095] = 9;
        ram.write_page(0x3000, Some(&page)).unwrap();
        assert!(ram.is_dirty(0x3000));
        assert_eq!(ram.read_page(0x3000).unwrap()[4095], 9);
        assert!(!is_zero(ram.read_page(0x3000).unwrap()));
        ram.clear_dirty();
        ram.write_page(0x3000, None).unwrap();
        assert!(ram.is_dirty(0x3000));
        assert!(is_zero(ram.read_page(0x3000).unwrap()));
        assert!(ram.write_page(0x3008, None).is_err());
        assert!(ram.write_page(VGA_START, None).is_err());
        ram.write_page(ROM_START, Some(&page)).unwrap();
        assert_eq!(ram.read_page(ROM_START).unwrap()[4095], 9);
        assert!(is_zero(&[]));
        assert!(!is_zero(&[0, 0, 1]));
    }

    #[test]
    fn regions_for_loaders() {
        let ram = GuestRam::new(64 * MIB).unwrap();
        let r = ram.ram_regions();
        assert_eq!(r[0], MemRegion::usable(0, EBDA_START));
        assert_eq!(r[1].kind, MemKind::Reserved);
        assert_eq!((r[1].start, r[1].end()), (EBDA_START, Some(ROM_END)));
        assert_eq!(r[2], MemRegion::usable(MIB, 63 * MIB));
        assert_eq!(r.len(), 3);
    }
}
