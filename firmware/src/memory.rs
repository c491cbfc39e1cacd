//! The usable-RAM view loaders plan with: fit checks and a bump allocator.

use crate::bytes::{align_up, slice};
use crate::{GuestMemory, LoadError, MemKind, MemRegion};

/// 4 GiB: the end of the address space reachable with paging off.
pub(crate) const FOUR_GIB: u64 = 1 << 32;

/// Usable RAM as sorted, disjoint, non-adjacent `[start, end)` ranges.
#[derive(Clone, Debug)]
pub(crate) struct RamMap {
    usable: Vec<(u64, u64)>,
}

impl RamMap {
    /// Merges the usable regions of `regions` (overlapping or adjacent ones
    /// become one range, so an image may straddle their boundary).
    pub(crate) fn new(regions: &[MemRegion]) -> Self {
        let mut ranges: Vec<(u64, u64)> = regions
            .iter()
            .filter(|r| r.kind == MemKind::Usable && r.len > 0)
            .map(|r| (r.start, r.end().unwrap_or(u64::MAX)))
            .collect();
        ranges.sort_unstable();
        let mut usable: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match usable.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => usable.push((start, end)),
            }
        }
        RamMap { usable }
    }

    /// The merged usable range containing `addr`, if any.
    pub(crate) fn range_containing(&self, addr: u64) -> Option<(u64, u64)> {
        self.usable
            .iter()
            .copied()
            .find(|&(s, e)| s <= addr && addr < e)
    }

    /// Whether `[start, end)` lies inside usable RAM. Empty ranges always fit.
    pub(crate) fn contains(&self, start: u64, end: u64) -> bool {
        start >= end || self.usable.iter().any(|&(s, e)| s <= start && end <= e)
    }

    /// Fails with [`LoadError::DoesNotFitInRam`] unless `[start, end)` is
    /// inside usable RAM.
    pub(crate) fn check(&self, what: &str, start: u64, end: u64) -> Result<(), LoadError> {
        if self.contains(start, end) {
            Ok(())
        } else {
            Err(LoadError::DoesNotFitInRam {
                what: what.to_string(),
                start,
                end,
            })
        }
    }

    /// Lowest `align`-aligned address `>= above` where `len` bytes fit inside
    /// usable RAM and below `limit`.
    pub(crate) fn alloc(&self, above: u64, len: u64, align: u64, limit: u64) -> Option<u64> {
        for &(start, end) in &self.usable {
            let candidate = align_up(above.max(start), align)?;
            let stop = candidate.checked_add(len)?;
            if stop <= end.min(limit) {
                return Some(candidate);
            }
            if candidate >= limit {
                return None;
            }
        }
        None
    }
}

/// One contiguous piece of an image to place in guest memory: `filesz`
/// bytes from the file at `file_offset` copied to `paddr`, then zeros up to
/// `memsz` bytes (bss).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LoadSegment {
    /// Name for error messages, e.g. "ELF segment (program header 2)".
    pub what: String,
    /// File offset of the initialized data.
    pub file_offset: u64,
    /// Bytes of initialized data; `filesz <= memsz`.
    pub filesz: u64,
    /// Guest-physical load address.
    pub paddr: u64,
    /// Bytes occupied in memory.
    pub memsz: u64,
}

impl LoadSegment {
    /// One past the last guest-physical byte (validated by the parsers).
    pub(crate) fn end(&self) -> Option<u64> {
        self.paddr.checked_add(self.memsz)
    }
}

/// Checks that every segment lies in usable RAM; returns the highest end.
pub(crate) fn check_segments(ram: &RamMap, segments: &[LoadSegment]) -> Result<u64, LoadError> {
    let mut top = 0;
    for seg in segments {
        let end = seg.end().ok_or_else(|| LoadError::AddressOverflow {
            what: seg.what.clone(),
            start: seg.paddr,
            len: seg.memsz,
            limit: u128::from(u64::MAX) + 1,
        })?;
        ram.check(&seg.what, seg.paddr, end)?;
        top = top.max(end);
    }
    Ok(top)
}

/// Copies the segments' file data and zero-fills their bss.
pub(crate) fn write_segments(
    mem: &mut dyn GuestMemory,
    image: &[u8],
    segments: &[LoadSegment],
) -> Result<(), LoadError> {
    for seg in segments {
        let data =
            slice(image, seg.file_offset, seg.filesz).ok_or_else(|| LoadError::PastEndOfFile {
                what: seg.what.clone(),
                offset: seg.file_offset,
                len: seg.filesz,
                file_len: image.len() as u64,
            })?;
        mem.write(seg.paddr, data)?;
        let bss = seg.memsz.saturating_sub(seg.filesz);
        if bss > 0 {
            // Cannot overflow: paddr + memsz was checked by check_segments.
            let bss_start = seg.paddr.saturating_add(seg.filesz);
            mem.fill(bss_start, bss, 0)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> RamMap {
        RamMap::new(&[
            MemRegion::usable(0x10_0000, 0x70_0000),
            MemRegion::reserved(0x9_FC00, 0x400),
            MemRegion::usable(0, 0x9_FC00),
            // Adjacent to the previous high region: merged.
            MemRegion::usable(0x80_0000, 0x80_0000),
            MemRegion::usable(0x200_0000, 0),
        ])
    }

    #[test]
    fn merges_and_checks() {
        let m = map();
        assert_eq!(m.usable, vec![(0, 0x9_FC00), (0x10_0000, 0x100_0000)]);
        assert!(m.contains(0x7C00, 0x7E00));
        assert!(m.contains(0x7F_0000, 0x81_0000));
        assert!(!m.contains(0x9_F000, 0xA_0000));
        assert!(!m.contains(0xFF_F000, 0x100_1000));
        assert!(m.contains(0x5000_0000, 0x5000_0000));
        assert_eq!(m.range_containing(0x10_0000), Some((0x10_0000, 0x100_0000)));
        assert_eq!(m.range_containing(0xA_0000), None);
    }

    #[test]
    fn alloc_skips_holes_and_respects_limit() {
        let m = map();
        assert_eq!(m.alloc(0x9_F000, 0x1000, 0x1000, FOUR_GIB), Some(0x10_0000));
        assert_eq!(m.alloc(0x1234, 0x10, 0x1000, FOUR_GIB), Some(0x2000));
        assert_eq!(m.alloc(0xFF_F001, 0x1000, 0x1000, FOUR_GIB), None);
        assert_eq!(m.alloc(0x10_0000, 0x1000, 0x1000, 0x10_0800), None);
        assert_eq!(m.alloc(u64::MAX - 5, 1, 0x1000, u64::MAX), None);
        assert_eq!(m.alloc(0, u64::MAX, 1, u64::MAX), None);
    }
}
