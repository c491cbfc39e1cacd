//! The guest-physical address map of the emulated PC.
//!
//! | range                         | what                                          |
//! |-------------------------------|-----------------------------------------------|
//! | `0 .. 0x9FC00`                | conventional RAM (usable)                     |
//! | `0x9FC00 .. 0xA0000`          | EBDA: RAM, reported reserved                  |
//! | `0xA0000 .. 0xC0000`          | legacy VGA window: MMIO (reads all ones)      |
//! | `0xC0000 .. 0x100000`         | option/BIOS ROM area: RAM pages, read-only    |
//! | `0x100000 .. top_low`         | extended RAM, up to the 32-bit MMIO hole      |
//! | `0xC000_0000 .. 4 GiB`        | 32-bit MMIO hole (PCI, IOAPIC, LAPIC, flash)  |
//! | `4 GiB .. 4 GiB + rest`       | RAM that did not fit below the hole           |
//!
//! Every address is a `pub const` with the reason it is where it is, in the
//! manner of Firecracker's `arch/x86_64/layout.rs`.

/// Size of a guest page, the granule of the dirty bitmap and of the TLB.
pub const PAGE_SIZE: u64 = 4096;

/// End of the RAM the guest may use below 640 KiB: the extended BIOS data
/// area (EBDA) of a PC with 639 KiB conventional memory starts here.
pub const EBDA_START: u64 = 0x9_FC00;

/// Start of the legacy VGA memory window (0xA0000–0xBFFFF). No display
/// adapter is emulated yet: the window is MMIO that reads as all ones and
/// ignores writes, as an empty ISA bus does.
pub const VGA_START: u64 = 0xA_0000;
/// One past the end of the VGA window.
pub const VGA_END: u64 = 0xC_0000;

/// Start of the option ROM and system BIOS area (0xC0000–0xFFFFF). It is
/// backed by RAM pages so firmware can be loaded there, but the guest sees
/// it as ROM: reads and instruction fetch hit RAM, writes are ignored.
pub const ROM_START: u64 = 0xC_0000;
/// One past the end of the ROM area: the 1 MiB line.
pub const ROM_END: u64 = 0x10_0000;

/// Start of extended memory (1 MiB), where multiboot kernels are loaded.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO hole: RAM that does not fit below this address
/// is relocated above 4 GiB, leaving 1 GiB of address space for PCI BARs,
/// the IOAPIC, the local APIC and the flash ROM (QEMU's q35 uses 2–3 GiB;
/// 3 GiB keeps more RAM 32-bit addressable for small guests).
pub const MMIO_HOLE_START: u64 = 0xC000_0000;
/// End of the 32-bit MMIO hole: 4 GiB.
pub const MMIO_HOLE_END: u64 = 1 << 32;

/// Where RAM continues above the hole.
pub const HIGH_RAM_START: u64 = MMIO_HOLE_END;

/// Default I/O APIC base (reserved for the IOAPIC model to come).
pub const IOAPIC_START: u64 = 0xFEC0_0000;
/// Size of the I/O APIC register window.
pub const IOAPIC_SIZE: u64 = 0x1000;

/// Default local APIC base, as in `IA32_APIC_BASE` at reset (reserved for
/// the LAPIC model to come).
pub const LAPIC_START: u64 = 0xFEE0_0000;
/// Size of the local APIC register window.
pub const LAPIC_SIZE: u64 = 0x1000;

/// Smallest RAM the machine accepts: low memory plus a little above 1 MiB,
/// so a multiboot kernel has somewhere to go.
pub const MIN_RAM: u64 = 2 << 20;

/// Largest RAM the machine accepts: what fits below the CPU's 40-bit
/// guest-physical address space once the hole is skipped.
pub const MAX_RAM: u64 = (1 << 40) - (MMIO_HOLE_END - MMIO_HOLE_START);

/// The RAM-backed part of the guest-physical address space for `ram` bytes
/// of RAM: `(low_end, high_end)` where `[0, low_end)` is backed below the
/// hole and `[HIGH_RAM_START, high_end)` above it (`high_end ==
/// HIGH_RAM_START` when everything fits below).
pub const fn ram_ranges(ram: u64) -> (u64, u64) {
    if ram <= MMIO_HOLE_START {
        (ram, HIGH_RAM_START)
    } else {
        (MMIO_HOLE_START, HIGH_RAM_START + (ram - MMIO_HOLE_START))
    }
}

// The legacy areas are ordered and page-aligned, the APIC windows lie in the hole.
const _: () = assert!(EBDA_START < VGA_START && VGA_END == ROM_START);
const _: () = assert!(ROM_END == HIGH_MEMORY_START);
const _: () = assert!((VGA_START | ROM_START) & (PAGE_SIZE - 1) == 0);
const _: () = assert!(IOAPIC_START >= MMIO_HOLE_START);
const _: () = assert!(LAPIC_START + LAPIC_SIZE <= MMIO_HOLE_END);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_at_the_hole() {
        assert_eq!(ram_ranges(512 << 20), (512 << 20, 1 << 32));
        assert_eq!(ram_ranges(MMIO_HOLE_START), (MMIO_HOLE_START, 1 << 32));
        assert_eq!(
            ram_ranges(MMIO_HOLE_START + 4096),
            (MMIO_HOLE_START, (1 << 32) + 4096)
        );
        assert_eq!(ram_ranges(MAX_RAM).1, 1 << 40);
    }
}
