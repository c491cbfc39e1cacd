//! Guest image loaders for hindsight.
//!
//! This crate turns a file the user names on the command line (a kernel, a
//! boot sector, a raw test program) into bytes in guest-physical memory plus
//! an [`EntryState`]: the register state the machine must give the boot CPU
//! before the first instruction.
//!
//! What it owns today:
//! - [`multiboot`]: the Multiboot specification 0.6.96 (version 1): header
//!   search, ELF32 / ELF64 and a.out-kludge kernels, boot modules, and the
//!   multiboot information structure (memory sizes, memory map, command line,
//!   modules, boot loader name).
//! - [`flat`]: raw binaries copied to a fixed address, started in real mode
//!   (boot-sector style `CS:IP`) or in flat 32-bit protected mode.
//! - [`linux`]: the Linux x86 boot protocol for 64-bit bzImages (setup
//!   header, boot_params with the e820 map, command line, initrd, identity
//!   page tables and GDT), entered directly in long mode ([`LinuxEntry`]).
//! - [`mptable`]: an Intel MP specification 1.4 table (CPUs, ISA bus,
//!   I/O APIC, interrupt routing).
//! - [`acpi`]: minimal ACPI tables (RSDP, RSDT, XSDT, MADT) describing the
//!   same CPUs and interrupt routing.
//!
//! Later: FADT/DSDT, BIOS images.
//!
//! The machine owns guest RAM; loaders reach it only through the small
//! [`GuestMemory`] trait. Image files are treated as hostile: every read is
//! bounds-checked, all arithmetic on file values is checked, and anything
//! malformed yields a [`LoadError`] that names the field, file offset or
//! guest address at fault. A loader validates and plans everything before
//! its first write, so a load that fails on bad input leaves guest memory
//! untouched (only an error from [`GuestMemory`] itself can interrupt a load
//! half way).
//!
//! ```
//! use hindsight_firmware::{load_flat, EntryMode, GuestMemory, LoadError, MemRegion};
//!
//! struct Ram(Vec<u8>);
//!
//! impl Ram {
//!     fn range(&self, gpa: u64, len: u64) -> Result<std::ops::Range<usize>, LoadError> {
//!         let end = gpa.checked_add(len).filter(|&e| e <= self.0.len() as u64);
//!         end.map(|e| gpa as usize..e as usize)
//!             .ok_or(LoadError::OutsideRam { gpa, len })
//!     }
//! }
//!
//! impl GuestMemory for Ram {
//!     fn ram_regions(&self) -> Vec<MemRegion> {
//!         vec![MemRegion::usable(0, self.0.len() as u64)]
//!     }
//!     fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), LoadError> {
//!         let r = self.range(gpa, data.len() as u64)?;
//!         self.0[r].copy_from_slice(data);
//!         Ok(())
//!     }
//!     fn fill(&mut self, gpa: u64, len: u64, byte: u8) -> Result<(), LoadError> {
//!         let r = self.range(gpa, len)?;
//!         self.0[r].fill(byte);
//!         Ok(())
//!     }
//! }
//!
//! let mut ram = Ram(vec![0; 1 << 20]);
//! let boot_sector = [0xF4; 512]; // hlt
//! let entry = load_flat(&mut ram, &boot_sector, 0x7C00, EntryMode::Real16 { cs: 0, ip: 0x7C00 })?;
//! assert_eq!(entry.mode.entry_address(), 0x7C00);
//! # Ok::<(), LoadError>(())
//! ```
#![deny(missing_docs)]

pub mod acpi;
mod bytes;
pub mod cpio;
mod elf;
mod entry;
mod error;
pub mod flat;
pub mod linux;
mod memory;
pub mod mptable;
pub mod multiboot;

#[cfg(test)]
mod testutil;

pub use acpi::write_acpi_tables;
pub use entry::{EntryMode, EntryState};
pub use error::LoadError;
pub use flat::load_flat;
pub use linux::{load_linux, load_linux_decompressed, LinuxEntry};
pub use mptable::write_mptable;
pub use multiboot::{load_multiboot, Module};

/// What a range of guest-physical address space is, as reported to the guest
/// (for multiboot, the `type` of a memory-map entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemKind {
    /// RAM the guest may use freely (multiboot type 1, "available").
    Usable,
    /// RAM or address space the guest must not use: EBDA, BIOS ROM, firmware
    /// tables, MMIO (multiboot type 2, "reserved"). Loaders never place data
    /// here.
    Reserved,
}

/// One range of guest-physical address space: `[start, start + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemRegion {
    /// First guest-physical address of the range.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the range is.
    pub kind: MemKind,
}

impl MemRegion {
    /// A usable RAM range `[start, start + len)`.
    pub const fn usable(start: u64, len: u64) -> Self {
        MemRegion {
            start,
            len,
            kind: MemKind::Usable,
        }
    }

    /// A reserved range `[start, start + len)`.
    pub const fn reserved(start: u64, len: u64) -> Self {
        MemRegion {
            start,
            len,
            kind: MemKind::Reserved,
        }
    }

    /// One past the last address, or `None` if `start + len` overflows `u64`.
    pub fn end(&self) -> Option<u64> {
        self.start.checked_add(self.len)
    }
}

/// Guest-physical memory as the loaders see it.
///
/// The machine implements this over its RAM mapping. Loaders only write;
/// they never read guest memory back.
pub trait GuestMemory {
    /// The guest-physical address map: every range of RAM usable by the guest
    /// ([`MemKind::Usable`], e.g. `[0, 0x9FC00)` and `[1 MiB, top)`), and
    /// optionally ranges the guest must be told are reserved. Order does not
    /// matter; ranges must not overlap. Loaders place data only inside usable
    /// ranges, and the multiboot loader reports all of them to the guest.
    fn ram_regions(&self) -> Vec<MemRegion>;

    /// Copies `data` to guest-physical `gpa`. Must fail (typically with
    /// [`LoadError::OutsideRam`]) if any byte of `[gpa, gpa + data.len())` is
    /// not RAM.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), LoadError>;

    /// Sets `len` bytes at guest-physical `gpa` to `byte`. Must fail
    /// (typically with [`LoadError::OutsideRam`]) if any byte of the range is
    /// not RAM.
    fn fill(&mut self, gpa: u64, len: u64, byte: u8) -> Result<(), LoadError>;
}
