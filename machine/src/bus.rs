//! Address-range buses and the per-vCPU view of the machine that the CPU
//! talks to.
//!
//! A [`RangeMap`] maps disjoint ranges of an address space (I/O ports or
//! guest-physical MMIO addresses) to a device; devices see only the offset
//! into their range. Overlapping ranges are refused when they are inserted,
//! never resolved by lookup order (cloud-hypervisor's `vm-device` bus).
//!
//! [`VcpuBus`] implements [`hindsight_cpu::Bus`] for one run slice of one
//! vCPU: RAM pages come straight from [`GuestRam`], ports and MMIO go to
//! [`PcDevices`] stamped with the virtual time of the accessing instruction.

use std::collections::BTreeMap;
use std::fmt;

use hindsight_cpu::{Bus, WritablePage};

use crate::devices::{Console, PcDevices};
use crate::memory::GuestRam;

/// Why a range could not be added to a bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusError {
    /// The new range shares at least one address with a registered one.
    Overlap {
        /// Base of the range being inserted.
        base: u64,
        /// Its length.
        len: u64,
        /// Base of the registered range it collides with.
        existing_base: u64,
        /// Length of that range.
        existing_len: u64,
    },
    /// The range is empty or runs past the end of the address space.
    BadRange {
        /// Base of the range.
        base: u64,
        /// Its length.
        len: u64,
        /// Size of the address space.
        space: u64,
    },
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BusError::Overlap {
                base,
                len,
                existing_base,
                existing_len,
            } => write!(
                f,
                "range [{base:#x},{:#x}) overlaps registered range [{existing_base:#x},{:#x})",
                base as u128 + len as u128,
                existing_base as u128 + existing_len as u128
            ),
            BusError::BadRange { base, len, space } => write!(
                f,
                "range [{base:#x},{:#x}) is empty or outside the address space [0,{space:#x})",
                base as u128 + len as u128
            ),
        }
    }
}

impl std::error::Error for BusError {}

#[derive(Clone, Debug)]
struct Slot<T> {
    len: u64,
    value: T,
}

/// Disjoint ranges of one address space mapped to values (device ids).
#[derive(Clone, Debug)]
pub struct RangeMap<T> {
    /// Keyed by range base.
    map: BTreeMap<u64, Slot<T>>,
    /// Size of the address space: every range lies in `[0, space)`.
    space: u64,
}

/// The I/O port space (64 KiB ports).
pub type PortBus<T> = RangeMap<T>;
/// Guest-physical MMIO space.
pub type MmioBus<T> = RangeMap<T>;

/// Size of the x86 I/O port space.
pub const PORT_SPACE: u64 = 0x1_0000;

impl<T> RangeMap<T> {
    /// An empty bus over addresses `[0, space)`.
    pub fn new(space: u64) -> RangeMap<T> {
        RangeMap {
            map: BTreeMap::new(),
            space,
        }
    }

    /// Registers `[base, base + len)` for `value`. Fails, leaving the bus
    /// unchanged, if the range is empty, leaves the address space, or
    /// shares an address with a registered range.
    pub fn insert(&mut self, base: u64, len: u64, value: T) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|&e| len > 0 && e <= self.space);
        let Some(end) = end else {
            return Err(BusError::BadRange {
                base,
                len,
                space: self.space,
            });
        };
        let overlap = |(&b, s): (&u64, &Slot<T>)| BusError::Overlap {
            base,
            len,
            existing_base: b,
            existing_len: s.len,
        };
        if let Some(prev) = self.map.range(..=base).next_back() {
            if prev.0 + prev.1.len > base {
                return Err(overlap(prev));
            }
        }
        if let Some(next) = self.map.range(base..).next() {
            if *next.0 < end {
                return Err(overlap(next));
            }
        }
        self.map.insert(base, Slot { len, value });
        Ok(())
    }

    /// Removes the range starting at `base`, returning its value.
    pub fn remove(&mut self, base: u64) -> Option<T> {
        self.map.remove(&base).map(|s| s.value)
    }

    /// The value whose range contains `addr`, with the offset of `addr`
    /// into that range.
    #[inline]
    pub fn find(&self, addr: u64) -> Option<(u64, &T)> {
        let (&base, slot) = self.map.range(..=addr).next_back()?;
        let off = addr - base;
        (off < slot.len).then_some((off, &slot.value))
    }

    /// Registered ranges as `(base, len, value)`, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, &T)> {
        self.map.iter().map(|(&b, s)| (b, s.len, &s.value))
    }
}

/// The machine as one vCPU sees it during a run slice.
pub struct VcpuBus<'a> {
    pub(crate) ram: &'a mut GuestRam,
    pub(crate) devices: &'a mut PcDevices,
    pub(crate) console: &'a mut Console,
    /// Index of the vCPU (which local APIC its MMIO reaches).
    pub(crate) cpu: usize,
}

/// IA32_TSC_DEADLINE.
const TSC_DEADLINE_MSR: u32 = hindsight_cpu::msr::index::TSC_DEADLINE;

impl Bus for VcpuBus<'_> {
    #[inline]
    fn ram_page(&mut self, page: u64) -> Option<*mut u8> {
        self.ram.page(page)
    }

    #[inline]
    fn ram_page_mut(&mut self, page: u64) -> Option<WritablePage> {
        self.ram.page_mut(page)
    }

    // Every vCPU's instruction count is the machine's virtual time (see
    // `Machine::with_ctx`), so `icount` is the time of the access.

    fn mmio_read(&mut self, addr: u64, size: u8, icount: u64) -> u64 {
        self.devices.mmio_read(addr, size, self.cpu, icount)
    }

    fn mmio_write(&mut self, addr: u64, size: u8, value: u64, icount: u64) {
        self.devices.mmio_write(addr, size, value, self.cpu, icount)
    }

    fn io_read(&mut self, port: u16, size: u8, icount: u64) -> u32 {
        self.devices.io_read(port, size, icount)
    }

    fn io_write(&mut self, port: u16, size: u8, value: u32, icount: u64) {
        self.devices
            .io_write(port, size, value, icount, self.console)
    }

    /// IA32_TSC_DEADLINE lives in the local APIC, on virtual time.
    fn msr_read(&mut self, index: u32, _icount: u64) -> Option<u64> {
        if index != TSC_DEADLINE_MSR {
            return None;
        }
        Some(self.devices.apic.lapics.get(self.cpu)?.tsc_deadline())
    }

    fn msr_write(&mut self, index: u32, value: u64, icount: u64) -> bool {
        if index != TSC_DEADLINE_MSR {
            return false;
        }
        if let Some(lapic) = self.devices.apic.lapics.get_mut(self.cpu) {
            lapic.set_tsc_deadline(icount, value);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus() -> RangeMap<&'static str> {
        let mut b = RangeMap::new(PORT_SPACE);
        b.insert(0x20, 2, "pic").unwrap();
        b.insert(0x40, 4, "pit").unwrap();
        b
    }

    #[test]
    fn lookup_gives_offsets() {
        let b = bus();
        assert_eq!(b.find(0x20), Some((0, &"pic")));
        assert_eq!(b.find(0x21), Some((1, &"pic")));
        assert_eq!(b.find(0x22), None);
        assert_eq!(b.find(0x1f), None);
        assert_eq!(b.find(0x43), Some((3, &"pit")));
        assert_eq!(b.find(0x44), None);
        assert_eq!(b.find(0), None);
        assert_eq!(b.find(u64::MAX), None);
    }

    #[test]
    fn overlaps_are_refused() {
        let mut b = bus();
        // Same base, inside, straddling either end, covering.
        for (base, len) in [
            (0x20, 1),
            (0x21, 1),
            (0x1f, 2),
            (0x21, 0x20),
            (0x10, 0x40),
            (0x43, 1),
        ] {
            let e = b.insert(base, len, "x").unwrap_err();
            assert!(
                matches!(e, BusError::Overlap { .. }),
                "{base:#x}+{len}: {e}"
            );
        }
        // Touching either end is fine.
        b.insert(0x1f, 1, "below").unwrap();
        b.insert(0x22, 0x1e, "between").unwrap();
        b.insert(0x44, 1, "above").unwrap();
        assert_eq!(b.find(0x3f), Some((0x1d, &"between")));
        assert_eq!(b.iter().count(), 5);
        let e = b.insert(0x3f, 2, "x").unwrap_err();
        assert_eq!(
            e,
            BusError::Overlap {
                base: 0x3f,
                len: 2,
                existing_base: 0x22,
                existing_len: 0x1e
            }
        );
        assert!(e
            .to_string()
            .contains("[0x3f,0x41) overlaps registered range [0x22,0x40)"));
    }

    #[test]
    fn bad_ranges_are_refused() {
        let mut b: RangeMap<u8> = RangeMap::new(PORT_SPACE);
        assert!(matches!(
            b.insert(0x10, 0, 1),
            Err(BusError::BadRange { .. })
        ));
        assert!(matches!(
            b.insert(0xffff, 2, 1),
            Err(BusError::BadRange { .. })
        ));
        b.insert(0xffff, 1, 1).unwrap();
        let mut m: RangeMap<u8> = RangeMap::new(u64::MAX);
        assert!(m.insert(u64::MAX - 1, 2, 1).is_err());
        m.insert(u64::MAX - 2, 2, 1).unwrap();
        assert_eq!(m.find(u64::MAX - 1), Some((1, &1)));
        assert_eq!(m.find(u64::MAX), None);
    }

    #[test]
    fn remove_frees_the_range() {
        let mut b = bus();
        assert_eq!(b.remove(0x40), Some("pit"));
        assert_eq!(b.remove(0x40), None);
        assert_eq!(b.find(0x41), None);
        b.insert(0x41, 1, "new").unwrap();
    }
}
