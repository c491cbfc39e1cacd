//! Why a load failed, precisely enough to fix the image.

use std::fmt;

/// Why a loader refused an image or could not place it.
///
/// Every message names what was wrong and where: the file offset of the
/// field, the field's name and value, or the guest-physical range. Addresses
/// and offsets are printed in hex, ranges half-open as `[start,end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadError {
    /// Part of the file runs past its end.
    PastEndOfFile {
        /// Which part, e.g. "ELF program header 2".
        what: String,
        /// File offset where the part starts.
        offset: u64,
        /// Length of the part in bytes.
        len: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// A guest-physical range computed from file fields leaves the address
    /// space the image is loaded into (e.g. `p_paddr + p_memsz` beyond 4 GiB).
    AddressOverflow {
        /// Which range, with the fields it came from.
        what: String,
        /// Start address.
        start: u64,
        /// Length in bytes.
        len: u64,
        /// Size of the address space in bytes (2^32 for 32-bit entry).
        limit: u128,
    },
    /// A range the image needs is not entirely inside one usable RAM region.
    DoesNotFitInRam {
        /// Which range, e.g. "ELF segment (program header 1)".
        what: String,
        /// First guest-physical address.
        start: u64,
        /// One past the last guest-physical address.
        end: u64,
    },
    /// A [`crate::GuestMemory`] access fell outside RAM (for implementors).
    OutsideRam {
        /// Guest-physical address of the access.
        gpa: u64,
        /// Length of the access in bytes.
        len: u64,
    },
    /// There is no free usable RAM below 4 GiB for something the loader
    /// must place (a module, the multiboot information).
    NoRoom {
        /// What was to be placed.
        what: String,
        /// Its size in bytes.
        len: u64,
        /// The lowest address it could have gone to.
        above: u64,
    },
    /// No multiboot header (magic 0x1BADB002, 4-byte aligned) in the first
    /// 8192 bytes of the file.
    MultibootHeaderNotFound {
        /// File offset of a valid header found *beyond* the 8192-byte search
        /// limit, if any (a common linker-script mistake).
        beyond_limit_at: Option<u64>,
    },
    /// A multiboot magic was found but magic + flags + checksum != 0.
    MultibootChecksum {
        /// File offset of the magic.
        offset: u64,
        /// The flags field.
        flags: u32,
        /// The checksum field.
        checksum: u32,
    },
    /// The multiboot header runs past the 8192-byte search area or the end
    /// of the file.
    MultibootHeaderTruncated {
        /// File offset of the magic.
        offset: u64,
        /// Bytes the header needs given its flags.
        needed: u64,
        /// Bytes available from `offset` to the end of the search area.
        available: u64,
    },
    /// The multiboot header requires a feature (flags bits 0..15) this loader
    /// does not support; the specification says to refuse the image.
    MultibootUnsupportedFlag {
        /// File offset of the magic.
        offset: u64,
        /// The flags field.
        flags: u32,
        /// The lowest unsupported required bit.
        bit: u32,
    },
    /// An a.out-kludge field of the multiboot header is inconsistent.
    MultibootField {
        /// Field name as in the specification, e.g. "load_end_addr".
        field: &'static str,
        /// File offset of the field.
        offset: u64,
        /// The field's value.
        value: u32,
        /// What is wrong with it.
        problem: String,
    },
    /// The kernel is neither ELF nor an a.out-kludge multiboot image.
    UnknownFormat {
        /// The first (up to four) bytes of the file.
        first_bytes: Vec<u8>,
    },
    /// An ELF header field has a value the loader cannot accept.
    ElfField {
        /// Field name as in the ELF specification, e.g. "e_machine".
        field: &'static str,
        /// File offset of the field.
        offset: u64,
        /// The field's value.
        value: u64,
        /// What was expected instead.
        expected: String,
    },
    /// An ELF program header is inconsistent.
    ElfProgramHeader {
        /// Index in the program header table.
        index: u64,
        /// File offset of the program header.
        offset: u64,
        /// What is wrong with it.
        problem: String,
    },
    /// The ELF file has no PT_LOAD segment with a nonzero size.
    NoLoadableSegments,
    /// The entry point is unusable.
    BadEntry {
        /// The entry point as given by the image or caller.
        entry: u64,
        /// What is wrong with it.
        problem: String,
    },
    /// A string passed to the guest contains a NUL byte, which would
    /// silently truncate it.
    InteriorNul {
        /// Which string, e.g. "kernel command line".
        what: String,
        /// Byte position of the first NUL.
        position: usize,
    },
    /// The image is empty.
    EmptyImage {
        /// Which image.
        what: String,
    },
    /// A field of a Linux bzImage setup header has a value this loader
    /// cannot accept (missing "HdrS" magic, old protocol, no 64-bit entry).
    LinuxHeaderField {
        /// Field name as in the kernel's `boot.rst`, e.g. "version".
        field: &'static str,
        /// File offset of the field.
        offset: u64,
        /// The field's value.
        value: u64,
        /// What is wrong with it, or what was expected.
        problem: String,
    },
    /// The kernel command line is longer than the kernel accepts.
    CmdlineTooLong {
        /// Length of the command line in bytes (without the NUL).
        len: u64,
        /// The kernel's `cmdline_size` (setup header, file offset 0x238).
        max: u64,
    },
    /// No place for the initrd in usable RAM below the kernel's
    /// `initrd_addr_max` that keeps clear of the kernel's memory.
    InitrdDoesNotFit {
        /// Size of the initrd in bytes.
        len: u64,
        /// One past the highest address the initrd may occupy.
        limit: u64,
        /// The kernel's range `[load address, load address + init_size)`.
        kernel_start: u64,
        /// One past the end of the kernel's range.
        kernel_end: u64,
    },
    /// More memory map entries than the table passed to the guest can hold.
    TooManyMemoryRegions {
        /// Entries the memory map would need.
        count: usize,
        /// Capacity of the table.
        max: usize,
    },
    /// A vCPU count a firmware table cannot describe.
    BadCpuCount {
        /// The count asked for.
        count: usize,
        /// The largest count supported.
        max: usize,
    },
    /// A firmware table would lie in RAM the guest is told is usable, where
    /// the guest would overwrite it.
    TableInUsableRam {
        /// Which table.
        what: String,
        /// First guest-physical address.
        start: u64,
        /// One past the last guest-physical address.
        end: u64,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::PastEndOfFile {
                what,
                offset,
                len,
                file_len,
            } => write!(
                f,
                "{what} extends past end of file (offset {offset:#x} + {len:#x} > {file_len:#x})"
            ),
            LoadError::AddressOverflow {
                what,
                start,
                len,
                limit,
            } => write!(
                f,
                "{what}: {start:#x} + {len:#x} does not fit in the {limit:#x}-byte physical \
                 address space"
            ),
            LoadError::DoesNotFitInRam { what, start, end } => {
                write!(f, "{what} [{start:#x},{end:#x}) does not fit in RAM")
            }
            LoadError::OutsideRam { gpa, len } => write!(
                f,
                "guest-physical access of {len:#x} bytes at {gpa:#x} is outside RAM"
            ),
            LoadError::NoRoom { what, len, above } => write!(
                f,
                "no room in usable RAM below 4 GiB for {what} ({len:#x} bytes) at or above {above:#x}"
            ),
            LoadError::MultibootHeaderNotFound { beyond_limit_at } => {
                write!(f, "multiboot header not found in the first 8192 bytes")?;
                if let Some(at) = beyond_limit_at {
                    write!(
                        f,
                        " (a valid header at file offset {at:#x} lies beyond the search limit)"
                    )?;
                }
                Ok(())
            }
            LoadError::MultibootChecksum {
                offset,
                flags,
                checksum,
            } => {
                let sum = crate::multiboot::HEADER_MAGIC
                    .wrapping_add(*flags)
                    .wrapping_add(*checksum);
                write!(
                    f,
                    "multiboot header checksum mismatch at file offset {offset:#x} (magic 0x1badb002 \
                     + flags {flags:#x} + checksum {checksum:#x} = {sum:#x} mod 2^32, must be 0)"
                )
            }
            LoadError::MultibootHeaderTruncated {
                offset,
                needed,
                available,
            } => write!(
                f,
                "multiboot header at file offset {offset:#x} needs {needed} bytes but only \
                 {available} remain in the first 8192 bytes of the file"
            ),
            LoadError::MultibootUnsupportedFlag { offset, flags, bit } => write!(
                f,
                "multiboot header at file offset {offset:#x} requires unsupported feature flags \
                 bit {bit} (flags {flags:#x})"
            ),
            LoadError::MultibootField {
                field,
                offset,
                value,
                problem,
            } => write!(
                f,
                "multiboot header field {field} = {value:#x} (file offset {offset:#x}): {problem}"
            ),
            LoadError::UnknownFormat { first_bytes } => {
                write!(
                    f,
                    "kernel is neither an ELF file nor a multiboot a.out-kludge image \
                     (header flags bit 16); it starts with bytes"
                )?;
                if first_bytes.is_empty() {
                    write!(f, " (none: the file is empty)")?;
                }
                for b in first_bytes {
                    write!(f, " {b:02x}")?;
                }
                Ok(())
            }
            LoadError::ElfField {
                field,
                offset,
                value,
                expected,
            } => write!(
                f,
                "ELF header field {field} (file offset {offset:#x}) is {value:#x}, expected {expected}"
            ),
            LoadError::ElfProgramHeader {
                index,
                offset,
                problem,
            } => write!(
                f,
                "ELF program header {index} (file offset {offset:#x}): {problem}"
            ),
            LoadError::NoLoadableSegments => {
                write!(f, "ELF file has no PT_LOAD segment with nonzero p_memsz")
            }
            LoadError::BadEntry { entry, problem } => {
                write!(f, "entry point {entry:#x} {problem}")
            }
            LoadError::InteriorNul { what, position } => {
                write!(f, "{what} contains a NUL byte at position {position}")
            }
            LoadError::EmptyImage { what } => write!(f, "{what} is empty"),
            LoadError::LinuxHeaderField {
                field,
                offset,
                value,
                problem,
            } => write!(
                f,
                "Linux setup header field {field} = {value:#x} (file offset {offset:#x}): {problem}"
            ),
            LoadError::CmdlineTooLong { len, max } => write!(
                f,
                "kernel command line is {len} bytes, longer than the kernel's cmdline_size of \
                 {max} bytes (setup header, file offset 0x238)"
            ),
            LoadError::InitrdDoesNotFit {
                len,
                limit,
                kernel_start,
                kernel_end,
            } => write!(
                f,
                "initrd ({len:#x} bytes) does not fit in usable RAM in [0x100000,{limit:#x}) \
                 (the limit is initrd_addr_max + 1, at most 4 GiB) outside the kernel's \
                 [{kernel_start:#x},{kernel_end:#x})"
            ),
            LoadError::TooManyMemoryRegions { count, max } => write!(
                f,
                "memory map needs {count} entries but the table holds at most {max}"
            ),
            LoadError::BadCpuCount { count, max } => {
                write!(f, "cannot describe {count} vCPUs (must be 1 to {max})")
            }
            LoadError::TableInUsableRam { what, start, end } => write!(
                f,
                "{what} [{start:#x},{end:#x}) would lie in usable RAM, where the guest may \
                 overwrite it"
            ),
        }
    }
}

impl std::error::Error for LoadError {}
