//! Linux x86 boot protocol: direct boot of a 64-bit bzImage through its
//! 64-bit entry point, as QEMU `-kernel` and Firecracker do, without running
//! the kernel's real-mode setup code or a BIOS.
//!
//! References: the kernel's `Documentation/arch/x86/boot.rst` ("64-bit boot
//! protocol") and `zero-page.rst`.
//!
//! # The setup header (file offsets)
//! | offset | field              | handling                                                  |
//! |--------|--------------------|-----------------------------------------------------------|
//! | 0x1F1  | setup_sects        | 0 means 4; the protected-mode kernel starts at `(setup_sects + 1) * 512` |
//! | 0x1F4  | syssize            | 16-byte paragraphs of protected-mode kernel; nonzero, must lie in the file (rounded up to 16) |
//! | 0x201  | jump (2nd byte)    | the header ends at `0x202 + this byte`; must cover at least [`HEADER_MIN_END`] |
//! | 0x202  | header             | "HdrS", else the file is refused as not a bzImage          |
//! | 0x206  | version            | at least [`MIN_PROTOCOL`] (2.12, Linux 3.8): `xloadflags` exists only from 2.12, and without it a 64-bit entry cannot be told from a 32-bit-only kernel |
//! | 0x211  | loadflags          | LOADED_HIGH required (bzImage); the boot loader's copy gets LOADED_HIGH \| CAN_USE_HEAP |
//! | 0x214  | code32_start       | set to the load address in boot_params (unused by the 64-bit entry) |
//! | 0x22C  | initrd_addr_max    | highest address the initrd may occupy                      |
//! | 0x230  | kernel_alignment   | a power of two when the kernel is relocatable              |
//! | 0x234  | relocatable_kernel | nonzero: the load address may move up, in steps of kernel_alignment |
//! | 0x236  | xloadflags         | bit 0 XLF_KERNEL_64 required (64-bit entry at +0x200)       |
//! | 0x238  | cmdline_size       | longest command line, NUL excluded                         |
//! | 0x258  | pref_address       | where the kernel runs (0 taken as 1 MiB)                   |
//! | 0x260  | init_size          | memory the kernel needs from its load address              |
//! | 0x264  | handover_offset    | EFI handover entry; parsed and reported, not used          |
//!
//! # Placement (guest-physical)
//! | range                         | what                                          |
//! |-------------------------------|-----------------------------------------------|
//! | [`GDT_ADDR`] (0x500)          | GDT: null, null, `__BOOT_CS` 0x10, `__BOOT_DS` 0x18 |
//! | [`BOOT_PARAMS_ADDR`] (0x7000) | boot_params, the "zero page" (4 KiB)          |
//! | 0x8000..[`BOOT_STACK_TOP`]    | a boot stack (the kernel sets its own; RSP points here in case) |
//! | [`PML4_ADDR`] (0x9000)        | PML4, then PDPT at 0xA000, then 4 page directories at 0xB000..0xF000 identity-mapping [0, 4 GiB) with 2 MiB pages |
//! | [`CMDLINE_ADDR`] (0x20000)    | command line, NUL-terminated                  |
//! | kernel load address           | `pref_address` if [load, load + max(init_size, payload)) fits in usable RAM below 4 GiB; a relocatable kernel otherwise moves up to the next fitting multiple of kernel_alignment (never below `pref_address`: a relocatable x86-64 kernel runs at or above it anyway); a non-relocatable one is refused |
//! | initrd                        | page-aligned, as high as possible in usable RAM in [1 MiB, min(initrd_addr_max + 1, 4 GiB)), outside the kernel's range |
//!
//! All the low structures must lie in usable RAM (on a PC, `[0, 0x9FC00)`).
//! Everything the 64-bit entry needs mapped (kernel, zero page, command line)
//! is below 4 GiB and therefore identity-mapped.
//!
//! # boot_params written
//! The page is zeroed, the kernel's setup header copied in at 0x1F1 (up to
//! the end the jump byte gives, at most up to 0x290), then: type_of_loader
//! (0x210) = 0xFF, loadflags (0x211) = LOADED_HIGH | CAN_USE_HEAP,
//! code32_start (0x214) = load address, ramdisk_image / ramdisk_size
//! (0x218 / 0x21C), heap_end_ptr (0x224) = 0xFE00 (as QEMU; only the
//! real-mode setup code, which is not run, would use it), ext_loader_ver /
//! ext_loader_type (0x226 / 0x227) = 0, cmd_line_ptr (0x228), setup_data
//! (0x250) = 0 (no setup_data list, whatever the file says); the e820 table
//! (count at 0x1E8, 20-byte entries at 0x2D0, see [`e820_map`]). The high
//! halves ext_ramdisk_image, ext_ramdisk_size, ext_cmd_line_ptr (0x0C0,
//! 0x0C4, 0x0C8) and acpi_rsdp_addr (0x070) stay zero.

use crate::bytes::{align_up, le_u16, le_u32, le_u64, slice};
use crate::memory::{RamMap, FOUR_GIB};
use crate::{GuestMemory, LoadError, MemKind, MemRegion};

#[cfg(test)]
mod tests;

/// Lowest boot protocol accepted: 2.12, the first with `xloadflags`.
pub const MIN_PROTOCOL: u16 = 0x020C;
/// The setup header starts at this file offset (and at this offset in
/// boot_params).
pub const HEADER_START: u64 = 0x1F1;
/// The header must extend at least to here (end of `handover_offset`, the
/// last field of protocol 2.12) for the fields this loader reads.
pub const HEADER_MIN_END: u64 = 0x268;
/// The header copied into boot_params never extends past here (start of
/// `edd_mbr_sig_buffer` in boot_params).
const HEADER_MAX_END: u64 = 0x290;
/// "HdrS" as a little-endian u32 at file offset 0x202.
pub const HEADER_MAGIC: u32 = 0x5372_6448;

/// `loadflags` bit 0: the protected-mode kernel is loaded at 0x100000 or
/// above (bzImage).
pub const LOADED_HIGH: u8 = 1 << 0;
/// `loadflags` bit 7: heap_end_ptr is valid.
pub const CAN_USE_HEAP: u8 = 1 << 7;
/// `xloadflags` bit 0: the kernel has the 64-bit entry point at +0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;

/// `type_of_loader` value for a loader without an assigned id.
const TYPE_OF_LOADER_UNDEFINED: u8 = 0xFF;
/// `heap_end_ptr` as QEMU sets it (setup heap/stack end at 0x10000 from the
/// real-mode code, minus 0x200).
const HEAP_END_PTR: u16 = 0xFE00;

/// The 64-bit entry point is this far into the protected-mode kernel.
pub const ENTRY_64_OFFSET: u64 = 0x200;

/// Guest-physical address of the GDT (Firecracker's `BOOT_GDT_OFFSET`): low
/// memory no BIOS is around to claim.
pub const GDT_ADDR: u64 = 0x500;
/// The GDT: null descriptor, an unused slot, `__BOOT_CS` and `__BOOT_DS`.
const GDT_ENTRIES: [u64; 4] = [0, 0, GDT_CODE64, GDT_DATA];
/// GDTR limit: 4 descriptors of 8 bytes, minus one.
pub const GDT_LIMIT: u16 = 4 * 8 - 1;
/// Flat 64-bit code segment: base 0, limit 0xFFFFF with G, P, DPL 0,
/// type 0xB (execute/read, accessed), L = 1, D = 0.
pub const GDT_CODE64: u64 = 0x00AF_9B00_0000_FFFF;
/// Flat data segment: base 0, limit 0xFFFFF with G, P, DPL 0, type 0x3
/// (read/write, accessed), D/B = 1.
pub const GDT_DATA: u64 = 0x00CF_9300_0000_FFFF;
/// `__BOOT_CS`: the code selector the protocol requires in CS.
pub const BOOT_CS: u16 = 0x10;
/// `__BOOT_DS`: the data selector the protocol requires in DS, ES and SS.
pub const BOOT_DS: u16 = 0x18;

/// Guest-physical address of boot_params, the "zero page" (Firecracker's
/// `ZERO_PAGE_START`): in conventional memory, clear of the GDT, stack,
/// page tables and command line.
pub const BOOT_PARAMS_ADDR: u64 = 0x7000;
/// Size of boot_params.
pub const BOOT_PARAMS_LEN: u64 = 0x1000;
/// Initial RSP: top of the page after boot_params, 16-byte aligned
/// (Firecracker's `BOOT_STACK_POINTER`).
pub const BOOT_STACK_TOP: u64 = 0x8FF0;
/// Start of the page holding the boot stack.
const BOOT_STACK_PAGE: u64 = 0x8000;

/// Guest-physical address of the PML4 (CR3); the PDPT follows at +0x1000
/// and the four page directories at +0x2000..+0x6000.
pub const PML4_ADDR: u64 = 0x9000;
/// Bytes of page tables: PML4, PDPT, 4 page directories.
pub const PAGE_TABLES_LEN: u64 = 6 * 0x1000;
/// Present | writable.
const PTE_PRESENT_RW: u64 = 0x3;
/// Present | writable | page size (2 MiB page in a page directory).
const PDE_2M_PAGE: u64 = 0x83;

/// Guest-physical address of the command line (Firecracker's
/// `CMDLINE_START`); it may extend up to the EBDA.
pub const CMDLINE_ADDR: u64 = 0x2_0000;

/// 1 MiB: bzImage kernels and the initrd go at or above it.
const HIGH_MEMORY_START: u64 = 0x10_0000;
/// Page size for initrd placement.
const PAGE: u64 = 0x1000;

/// boot_params offsets (zero-page.rst).
mod bp {
    pub const E820_ENTRIES: usize = 0x1E8;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const CODE32_START: usize = 0x214;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21C;
    pub const HEAP_END_PTR: usize = 0x224;
    pub const EXT_LOADER_VER: usize = 0x226;
    pub const EXT_LOADER_TYPE: usize = 0x227;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const SETUP_DATA: usize = 0x250;
    pub const E820_TABLE: usize = 0x2D0;
}

/// Most e820 entries boot_params holds (`E820_MAX_ENTRIES_ZEROPAGE`).
pub const E820_MAX_ENTRIES: usize = 128;
/// Bytes per e820 entry: addr (u64), size (u64), type (u32).
const E820_ENTRY_LEN: usize = 20;
/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved ranges.
pub const E820_RESERVED: u32 = 2;

/// Start of the extended BIOS data area (reported reserved).
const EBDA_START: u64 = 0x9_FC00;
/// End of conventional memory.
const LOW_MEMORY_END: u64 = 0xA_0000;
/// Start of the system BIOS area 0xE0000-0xFFFFF, where the ACPI tables
/// and the MP table go (reported reserved).
const BIOS_START: u64 = 0xE_0000;
/// Default I/O APIC base (reported reserved).
pub const IOAPIC_ADDR: u64 = 0xFEC0_0000;
/// Default local APIC base (reported reserved).
pub const LAPIC_ADDR: u64 = 0xFEE0_0000;
/// Size of each APIC register window.
const APIC_WINDOW_LEN: u64 = 0x1000;

/// The fields of a bzImage setup header this loader uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    /// `setup_sects` with 0 replaced by 4.
    pub setup_sects: u8,
    /// `syssize`: protected-mode kernel size in 16-byte paragraphs.
    pub syssize: u32,
    /// Protocol `version`, e.g. 0x020F for 2.15.
    pub version: u16,
    /// `loadflags`.
    pub loadflags: u8,
    /// `code32_start`.
    pub code32_start: u32,
    /// `initrd_addr_max`: highest address the initrd may occupy.
    pub initrd_addr_max: u32,
    /// `kernel_alignment`.
    pub kernel_alignment: u32,
    /// `relocatable_kernel != 0`.
    pub relocatable: bool,
    /// `xloadflags`.
    pub xloadflags: u16,
    /// `cmdline_size`: longest command line without its NUL.
    pub cmdline_size: u32,
    /// `pref_address`.
    pub pref_address: u64,
    /// `init_size`.
    pub init_size: u32,
    /// `handover_offset` (EFI handover protocol; unused here).
    pub handover_offset: u32,
    /// File offset one past the end of the header (`0x202 + jump byte`,
    /// capped at 0x290).
    pub header_end: u64,
    /// File offset of the protected-mode kernel: `(setup_sects + 1) * 512`.
    pub kernel_offset: u64,
    /// Bytes of protected-mode kernel in the file (the rest of the file).
    pub kernel_len: u64,
}

fn field_err(field: &'static str, offset: u64, value: u64, problem: &str) -> LoadError {
    LoadError::LinuxHeaderField {
        field,
        offset,
        value,
        problem: problem.to_string(),
    }
}

/// Parses and validates the setup header of a bzImage for the 64-bit entry.
pub fn parse_setup_header(image: &[u8]) -> Result<SetupHeader, LoadError> {
    let file_len = image.len() as u64;
    if file_len < HEADER_MIN_END {
        return Err(LoadError::PastEndOfFile {
            what: "Linux setup header (boot protocol 2.12)".into(),
            offset: HEADER_START,
            len: HEADER_MIN_END - HEADER_START,
            file_len,
        });
    }
    // From here on every read below HEADER_MIN_END is in the file; the
    // `unwrap_or(0)`s cannot trigger but keep the code panic-free.
    let u8_at = |off: u64| slice(image, off, 1).map_or(0, |b| b[0]);
    let u16_at = |off: u64| le_u16(image, off).unwrap_or(0);
    let u32_at = |off: u64| le_u32(image, off).unwrap_or(0);

    let magic = u32_at(0x202);
    if magic != HEADER_MAGIC {
        return Err(field_err(
            "header",
            0x202,
            magic.into(),
            "expected \"HdrS\" (0x53726448): not a Linux bzImage",
        ));
    }
    let version = u16_at(0x206);
    if version < MIN_PROTOCOL {
        return Err(LoadError::LinuxHeaderField {
            field: "version",
            offset: 0x206,
            value: version.into(),
            problem: format!(
                "boot protocol {}.{:02} is too old: the 64-bit entry needs 2.12 (Linux 3.8) \
                 or later, which has xloadflags",
                version >> 8,
                version & 0xFF
            ),
        });
    }
    let jump = u8_at(0x201);
    let declared_end = 0x202 + u64::from(jump);
    if declared_end < HEADER_MIN_END {
        return Err(LoadError::LinuxHeaderField {
            field: "jump",
            offset: 0x200,
            value: u16_at(0x200).into(),
            problem: format!(
                "the header ends at 0x202 + {jump:#x} = {declared_end:#x}, before {HEADER_MIN_END:#x} \
                 where protocol 2.12 fields end"
            ),
        });
    }
    let header_end = declared_end.min(HEADER_MAX_END);
    if header_end > file_len {
        return Err(LoadError::PastEndOfFile {
            what: "Linux setup header (end from the jump byte at 0x201)".into(),
            offset: HEADER_START,
            len: header_end - HEADER_START,
            file_len,
        });
    }
    let loadflags = u8_at(0x211);
    if loadflags & LOADED_HIGH == 0 {
        return Err(field_err(
            "loadflags",
            0x211,
            loadflags.into(),
            "LOADED_HIGH (bit 0) is clear: a zImage loaded at 0x10000, not supported",
        ));
    }
    let xloadflags = u16_at(0x236);
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(field_err(
            "xloadflags",
            0x236,
            xloadflags.into(),
            "XLF_KERNEL_64 (bit 0) is clear: the kernel has no 64-bit entry point",
        ));
    }
    let relocatable = u8_at(0x234) != 0;
    let kernel_alignment = u32_at(0x230);
    if relocatable && !kernel_alignment.is_power_of_two() {
        return Err(field_err(
            "kernel_alignment",
            0x230,
            kernel_alignment.into(),
            "must be a power of two for a relocatable kernel",
        ));
    }
    let raw_sects = u8_at(0x1F1);
    let setup_sects = if raw_sects == 0 { 4 } else { raw_sects };
    let kernel_offset = (u64::from(setup_sects) + 1) * 512;
    let syssize = u32_at(0x1F4);
    if syssize == 0 {
        return Err(field_err(
            "syssize",
            0x1F4,
            0,
            "the protected-mode kernel is empty",
        ));
    }
    let kernel_len = file_len.saturating_sub(kernel_offset);
    let sys_bytes = u64::from(syssize) * 16;
    // build.c pads the payload to whole paragraphs; tolerate a file cut at
    // the exact end of the data.
    if kernel_len == 0 || !matches!(align_up(kernel_len, 16), Some(k) if sys_bytes <= k) {
        return Err(LoadError::PastEndOfFile {
            what: format!(
                "protected-mode kernel (setup_sects {raw_sects} at file offset 0x1f1, syssize \
                 {syssize:#x} paragraphs at 0x1f4)"
            ),
            offset: kernel_offset,
            len: sys_bytes,
            file_len,
        });
    }
    Ok(SetupHeader {
        setup_sects,
        syssize,
        version,
        loadflags,
        code32_start: u32_at(0x214),
        initrd_addr_max: u32_at(0x22C),
        kernel_alignment,
        relocatable,
        xloadflags,
        cmdline_size: u32_at(0x238),
        pref_address: le_u64(image, 0x258).unwrap_or(0),
        init_size: u32_at(0x260),
        handover_offset: u32_at(0x264),
        header_end,
        kernel_offset,
        kernel_len,
    })
}

/// The e820 memory map passed to the kernel: every nonempty region of
/// `regions` (usable as [`E820_RAM`], reserved as [`E820_RESERVED`]), plus,
/// where the machine reported nothing overlapping them, the PC's standard
/// reserved ranges: EBDA `[0x9FC00, 0xA0000)`, system BIOS area
/// `[0xE0000, 0x100000)` (where [`crate::acpi`] and [`crate::mptable`] put
/// their tables), and
/// the I/O APIC and local APIC windows at [`IOAPIC_ADDR`] and
/// [`LAPIC_ADDR`]. Sorted by start address.
pub fn e820_map(regions: &[MemRegion]) -> Vec<MemRegion> {
    let mut map: Vec<MemRegion> = regions.iter().filter(|r| r.len > 0).copied().collect();
    let standard = [
        MemRegion::reserved(EBDA_START, LOW_MEMORY_END - EBDA_START),
        MemRegion::reserved(BIOS_START, HIGH_MEMORY_START - BIOS_START),
        MemRegion::reserved(IOAPIC_ADDR, APIC_WINDOW_LEN),
        MemRegion::reserved(LAPIC_ADDR, APIC_WINDOW_LEN),
    ];
    for std_region in standard {
        let (s, e) = (std_region.start, std_region.start + std_region.len);
        let overlaps = map
            .iter()
            .any(|r| r.start < e && r.end().unwrap_or(u64::MAX) > s);
        if !overlaps {
            map.push(std_region);
        }
    }
    map.sort_by_key(|r| (r.start, r.len));
    map
}

/// How the boot CPU must be set up to enter the kernel through its 64-bit
/// entry point, as the boot protocol requires:
///
/// - Long mode with paging: CR0 has PE and PG set (plus ET; other bits as at
///   reset), CR4 has PAE set, EFER has LME and LMA set, CR3 = [`Self::cr3`]
///   (identity map of the first 4 GiB with 2 MiB pages, supervisor,
///   writable, no NX).
/// - GDTR = ([`Self::gdt_base`], [`Self::gdt_limit`]); the GDT holds
///   [`GDT_CODE64`] at [`BOOT_CS`] and [`GDT_DATA`] at [`BOOT_DS`].
/// - CS = [`BOOT_CS`] with the hidden part loaded from that descriptor:
///   base 0, limit 4 GiB, 64-bit (L = 1, D = 0), DPL 0, execute/read.
/// - DS, ES, SS = [`BOOT_DS`] (FS and GS too): base 0, limit 4 GiB, DPL 0,
///   read/write, D/B = 1.
/// - IDTR base 0, limit 0 (no IDT: the kernel installs its own before it
///   enables interrupts or can take a fault it handles).
/// - RFLAGS = 0x2 (IF clear: interrupts off); A20 enabled.
/// - RIP = [`Self::rip`], RSI = [`Self::rsi`] (boot_params), RSP =
///   [`Self::rsp`]; all other general registers zero.
/// - TR and LDTR as at reset (unused until the kernel loads its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinuxEntry {
    /// First instruction: kernel load address + 0x200.
    pub rip: u64,
    /// Guest-physical address of boot_params ([`BOOT_PARAMS_ADDR`]).
    pub rsi: u64,
    /// Stack pointer ([`BOOT_STACK_TOP`]).
    pub rsp: u64,
    /// Page table root, the PML4 ([`PML4_ADDR`]).
    pub cr3: u64,
    /// GDT base ([`GDT_ADDR`]).
    pub gdt_base: u64,
    /// GDT limit ([`GDT_LIMIT`]).
    pub gdt_limit: u16,
    /// CS selector ([`BOOT_CS`]).
    pub cs: u16,
    /// DS, ES, SS, FS, GS selector ([`BOOT_DS`]).
    pub ds: u16,
    /// Where the protected-mode kernel was loaded.
    pub kernel_addr: u64,
    /// Bytes set aside for the kernel from `kernel_addr`: the larger of
    /// init_size and the file's payload.
    pub kernel_len: u64,
    /// Guest-physical address of the command line.
    pub cmdline_addr: u64,
    /// `(address, length)` of the initrd, if one was given and nonempty.
    pub initrd: Option<(u64, u64)>,
}

/// CR0 bits the machine must set for [`LinuxEntry`]: PE (bit 0), ET (bit 4),
/// PG (bit 31).
pub const ENTRY_CR0_SET: u64 = (1 << 0) | (1 << 4) | (1 << 31);
/// CR4 bits the machine must set for [`LinuxEntry`]: PAE (bit 5).
pub const ENTRY_CR4_SET: u64 = 1 << 5;
/// EFER bits the machine must set for [`LinuxEntry`]: LME (bit 8) and LMA
/// (bit 10).
pub const ENTRY_EFER_SET: u64 = (1 << 8) | (1 << 10);

/// Loads a 64-bit bzImage, its command line and optional initrd, writes
/// boot_params, the GDT and the identity-mapping page tables, and returns
/// the state to start the boot CPU in (see [`LinuxEntry`]).
///
/// Everything is validated and placed before the first write: on bad input
/// guest memory is left untouched.
pub fn load_linux(
    mem: &mut dyn GuestMemory,
    image: &[u8],
    cmdline: &str,
    initrd: Option<&[u8]>,
) -> Result<LinuxEntry, LoadError> {
    load(mem, image, None, cmdline, initrd)
}

/// Like [`load_linux`], but with the kernel proper already decompressed:
/// `vmlinux` is the ELF image the bzImage's payload decompresses to (see
/// [`payload`]). Its PT_LOAD segments go to their physical addresses, which
/// must lie in the range the bzImage asks for (its preferred address and
/// `init_size`), and the CPU enters `startup_64` directly (ELF `e_entry`),
/// as the in-guest decompressor would after unpacking the kernel at its
/// link address (no KASLR). boot_params are the same as for [`load_linux`].
pub fn load_linux_decompressed(
    mem: &mut dyn GuestMemory,
    image: &[u8],
    vmlinux: &[u8],
    cmdline: &str,
    initrd: Option<&[u8]>,
) -> Result<LinuxEntry, LoadError> {
    load(mem, image, Some(vmlinux), cmdline, initrd)
}

/// The compressed kernel inside a bzImage (`payload_offset`,
/// `payload_length`) and its format, named by its magic bytes: "xz",
/// "gzip", "zstd", "lz4", "lzo", "lzma", "bzip2", or "unknown".
pub fn payload(image: &[u8]) -> Result<(&'static str, &[u8]), LoadError> {
    let hdr = parse_setup_header(image)?;
    let offset = u64::from(le_u32(image, 0x248).unwrap_or(0));
    let len = u64::from(le_u32(image, 0x24C).unwrap_or(0));
    let data = slice(image, hdr.kernel_offset + offset, len).ok_or(LoadError::PastEndOfFile {
        what: "compressed kernel (payload_offset, payload_length)".into(),
        offset: hdr.kernel_offset + offset,
        len,
        file_len: image.len() as u64,
    })?;
    let format = match data {
        [0xFD, b'7', b'z', b'X', b'Z', 0, ..] => "xz",
        [0x1F, 0x8B, ..] => "gzip",
        [0x28, 0xB5, 0x2F, 0xFD, ..] => "zstd",
        [0x02, 0x21, 0x4C, 0x18, ..] => "lz4",
        [0x89, b'L', b'Z', b'O', ..] => "lzo",
        [0x5D, 0, 0, ..] => "lzma",
        [b'B', b'Z', b'h', ..] => "bzip2",
        _ => "unknown",
    };
    Ok((format, data))
}

fn load(
    mem: &mut dyn GuestMemory,
    image: &[u8],
    vmlinux: Option<&[u8]>,
    cmdline: &str,
    initrd: Option<&[u8]>,
) -> Result<LinuxEntry, LoadError> {
    let hdr = parse_setup_header(image)?;
    if let Some(position) = cmdline.bytes().position(|b| b == 0) {
        return Err(LoadError::InteriorNul {
            what: "kernel command line".into(),
            position,
        });
    }
    let cmdline_len = cmdline.len() as u64;
    if cmdline_len > u64::from(hdr.cmdline_size) {
        return Err(LoadError::CmdlineTooLong {
            len: cmdline_len,
            max: hdr.cmdline_size.into(),
        });
    }

    let regions = mem.ram_regions();
    let ram = RamMap::new(&regions);

    // Fixed low structures.
    ram.check(
        "Linux boot GDT",
        GDT_ADDR,
        GDT_ADDR + u64::from(GDT_LIMIT) + 1,
    )?;
    ram.check(
        "Linux boot_params",
        BOOT_PARAMS_ADDR,
        BOOT_PARAMS_ADDR + BOOT_PARAMS_LEN,
    )?;
    ram.check("Linux boot stack", BOOT_STACK_PAGE, BOOT_STACK_TOP)?;
    ram.check(
        "Linux boot page tables",
        PML4_ADDR,
        PML4_ADDR + PAGE_TABLES_LEN,
    )?;
    // cmdline_len <= u32::MAX, so this cannot overflow.
    let cmdline_end = CMDLINE_ADDR + cmdline_len + 1;
    ram.check("kernel command line", CMDLINE_ADDR, cmdline_end)?;

    // The kernel.
    let (kernel_addr, kernel_len) = place_kernel(&ram, &hdr)?;
    let kernel_end = kernel_addr + kernel_len; // place_kernel checked <= 4 GiB
    let elf = match vmlinux {
        None => None,
        Some(v) => {
            let elf = crate::elf::parse(v, FOUR_GIB)?;
            for seg in &elf.segments {
                let end = seg.end().unwrap_or(u64::MAX);
                if seg.paddr < kernel_addr || end > kernel_end {
                    return Err(LoadError::DoesNotFitInRam {
                        what: format!(
                            "decompressed kernel {} (it must lie where the bzImage asks to be \
                             loaded)",
                            seg.what
                        ),
                        start: seg.paddr,
                        end,
                    });
                }
            }
            Some((elf, v))
        }
    };

    // The initrd.
    let initrd = initrd.filter(|d| !d.is_empty());
    let initrd_at = match initrd {
        None => None,
        Some(data) => {
            let len = data.len() as u64;
            let limit = (u64::from(hdr.initrd_addr_max) + 1).min(FOUR_GIB);
            let addr = place_initrd(&regions, len, limit, (kernel_addr, kernel_end)).ok_or(
                LoadError::InitrdDoesNotFit {
                    len,
                    limit,
                    kernel_start: kernel_addr,
                    kernel_end,
                },
            )?;
            Some((addr, len))
        }
    };

    let e820 = e820_map(&regions);
    if e820.len() > E820_MAX_ENTRIES {
        return Err(LoadError::TooManyMemoryRegions {
            count: e820.len(),
            max: E820_MAX_ENTRIES,
        });
    }
    let params = boot_params(image, &hdr, kernel_addr, initrd_at, &e820)?;

    // Write.
    let payload = slice(image, hdr.kernel_offset, hdr.kernel_len).ok_or_else(|| {
        LoadError::PastEndOfFile {
            what: "protected-mode kernel".into(),
            offset: hdr.kernel_offset,
            len: hdr.kernel_len,
            file_len: image.len() as u64,
        }
    })?;
    mem.write(GDT_ADDR, &gdt_bytes())?;
    mem.write(PML4_ADDR, &page_tables())?;
    let mut cmd = Vec::with_capacity(cmdline.len() + 1);
    cmd.extend_from_slice(cmdline.as_bytes());
    cmd.push(0);
    mem.write(CMDLINE_ADDR, &cmd)?;
    let rip = match &elf {
        None => {
            mem.write(kernel_addr, payload)?;
            kernel_addr + ENTRY_64_OFFSET
        }
        Some((elf, vmlinux)) => {
            for seg in &elf.segments {
                let data = slice(vmlinux, seg.file_offset, seg.filesz).unwrap_or_default();
                mem.write(seg.paddr, data)?;
                mem.fill(seg.paddr + seg.filesz, seg.memsz - seg.filesz, 0)?;
            }
            elf.entry
        }
    };
    if let (Some(data), Some((addr, _))) = (initrd, initrd_at) {
        mem.write(addr, data)?;
    }
    mem.write(BOOT_PARAMS_ADDR, &params)?;

    Ok(LinuxEntry {
        rip,
        rsi: BOOT_PARAMS_ADDR,
        rsp: BOOT_STACK_TOP,
        cr3: PML4_ADDR,
        gdt_base: GDT_ADDR,
        gdt_limit: GDT_LIMIT,
        cs: BOOT_CS,
        ds: BOOT_DS,
        kernel_addr,
        kernel_len,
        cmdline_addr: CMDLINE_ADDR,
        initrd: initrd_at,
    })
}

/// Chooses the kernel's load address; returns it and the bytes reserved.
fn place_kernel(ram: &RamMap, hdr: &SetupHeader) -> Result<(u64, u64), LoadError> {
    let len = hdr.kernel_len.max(hdr.init_size.into());
    let pref = if hdr.pref_address == 0 {
        HIGH_MEMORY_START
    } else {
        hdr.pref_address
    };
    let what = || {
        format!(
            "Linux kernel (pref_address {:#x}, init_size {:#x}, {:#x} bytes in the file)",
            hdr.pref_address, hdr.init_size, hdr.kernel_len
        )
    };
    let end_of = |start: u64| start.checked_add(len).filter(|&e| e <= FOUR_GIB);
    if hdr.relocatable {
        let align = u64::from(hdr.kernel_alignment);
        let start = align_up(pref.max(HIGH_MEMORY_START), align);
        if let Some(addr) = start.and_then(|s| ram.alloc(s, len, align, FOUR_GIB)) {
            return Ok((addr, len));
        }
        let start = start.unwrap_or(pref);
        return Err(LoadError::DoesNotFitInRam {
            what: format!("{} at or above its aligned preferred address", what()),
            start,
            end: start.saturating_add(len),
        });
    }
    if pref < HIGH_MEMORY_START {
        return Err(field_err(
            "pref_address",
            0x258,
            pref,
            "a non-relocatable kernel must run at or above 1 MiB",
        ));
    }
    match end_of(pref) {
        Some(end) if ram.contains(pref, end) => Ok((pref, len)),
        _ => Err(LoadError::DoesNotFitInRam {
            what: format!("non-relocatable {}", what()),
            start: pref,
            end: pref.saturating_add(len),
        }),
    }
}

/// Usable RAM as sorted, merged `[start, end)` ranges.
fn usable_ranges(regions: &[MemRegion]) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = regions
        .iter()
        .filter(|r| r.kind == MemKind::Usable && r.len > 0)
        .map(|r| (r.start, r.end().unwrap_or(u64::MAX)))
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// Highest page-aligned address where `len` bytes fit in usable RAM inside
/// `[1 MiB, limit)` without overlapping `kernel`.
fn place_initrd(regions: &[MemRegion], len: u64, limit: u64, kernel: (u64, u64)) -> Option<u64> {
    let mut best = None;
    for (s, e) in usable_ranges(regions) {
        let (s, e) = (s.max(HIGH_MEMORY_START), e.min(limit));
        // Split around the kernel.
        let pieces = [(s, e.min(kernel.0)), (s.max(kernel.1), e)];
        for (ps, pe) in pieces {
            if pe <= ps || pe - ps < len {
                continue;
            }
            let addr = (pe - len) & !(PAGE - 1);
            if addr >= ps && best < Some(addr) {
                best = Some(addr);
            }
        }
    }
    best
}

fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    buf[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Converts a placed address (below 4 GiB by construction) to a 32-bit
/// boot_params field.
fn field32(what: &str, addr: u64, len: u64) -> Result<u32, LoadError> {
    u32::try_from(addr).map_err(|_| LoadError::AddressOverflow {
        what: what.into(),
        start: addr,
        len,
        limit: FOUR_GIB.into(),
    })
}

/// Builds the 4 KiB boot_params page.
fn boot_params(
    image: &[u8],
    hdr: &SetupHeader,
    kernel_addr: u64,
    initrd: Option<(u64, u64)>,
    e820: &[MemRegion],
) -> Result<Vec<u8>, LoadError> {
    let mut p = vec![0u8; BOOT_PARAMS_LEN as usize];
    let header = slice(image, HEADER_START, hdr.header_end - HEADER_START).ok_or_else(|| {
        LoadError::PastEndOfFile {
            what: "Linux setup header".into(),
            offset: HEADER_START,
            len: hdr.header_end - HEADER_START,
            file_len: image.len() as u64,
        }
    })?;
    let start = HEADER_START as usize;
    p[start..start + header.len()].copy_from_slice(header);
    p[bp::TYPE_OF_LOADER] = TYPE_OF_LOADER_UNDEFINED;
    p[bp::LOADFLAGS] = LOADED_HIGH | CAN_USE_HEAP;
    put_u32(
        &mut p,
        bp::CODE32_START,
        field32("kernel load address", kernel_addr, 0)?,
    );
    let (rd_addr, rd_len) = initrd.unwrap_or((0, 0));
    put_u32(
        &mut p,
        bp::RAMDISK_IMAGE,
        field32("initrd", rd_addr, rd_len)?,
    );
    put_u32(&mut p, bp::RAMDISK_SIZE, field32("initrd", rd_len, 0)?);
    put_u16(&mut p, bp::HEAP_END_PTR, HEAP_END_PTR);
    p[bp::EXT_LOADER_VER] = 0;
    p[bp::EXT_LOADER_TYPE] = 0;
    put_u32(&mut p, bp::CMD_LINE_PTR, CMDLINE_ADDR as u32);
    put_u64(&mut p, bp::SETUP_DATA, 0);
    // e820_map's caller checked the count fits in a u8 and the table.
    p[bp::E820_ENTRIES] = u8::try_from(e820.len()).unwrap_or(0);
    for (i, r) in e820.iter().enumerate() {
        let off = bp::E820_TABLE + i * E820_ENTRY_LEN;
        put_u64(&mut p, off, r.start);
        put_u64(&mut p, off + 8, r.len);
        let kind = match r.kind {
            MemKind::Usable => E820_RAM,
            MemKind::Reserved => E820_RESERVED,
        };
        put_u32(&mut p, off + 16, kind);
    }
    Ok(p)
}

/// The GDT as bytes.
fn gdt_bytes() -> Vec<u8> {
    GDT_ENTRIES.iter().flat_map(|e| e.to_le_bytes()).collect()
}

/// PML4, PDPT and four page directories identity-mapping [0, 4 GiB) with
/// 2 MiB pages, laid out from [`PML4_ADDR`].
fn page_tables() -> Vec<u8> {
    let mut t = vec![0u8; PAGE_TABLES_LEN as usize];
    let pdpt = PML4_ADDR + 0x1000;
    put_u64(&mut t, 0, pdpt | PTE_PRESENT_RW);
    for i in 0..4u64 {
        let pd = PML4_ADDR + 0x2000 + i * 0x1000;
        put_u64(&mut t, 0x1000 + 8 * i as usize, pd | PTE_PRESENT_RW);
        for j in 0..512u64 {
            let off = (0x2000 + i * 0x1000 + j * 8) as usize;
            put_u64(&mut t, off, ((i * 512 + j) << 21) | PDE_2M_PAGE);
        }
    }
    t
}
