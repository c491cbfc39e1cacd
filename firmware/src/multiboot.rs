//! Multiboot specification 0.6.96 (version 1) kernel loader.
//!
//! # The header (in the kernel file)
//! | offset | field         | handling                                               |
//! |--------|---------------|--------------------------------------------------------|
//! | 0      | magic         | 0x1BADB002, 4-byte aligned, all of the header inside the first 8192 bytes |
//! | 4      | flags         | see below                                              |
//! | 8      | checksum      | magic + flags + checksum == 0 (mod 2^32)               |
//! | 12..32 | header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr | only with flags bit 16 (a.out kludge) |
//! | 32..48 | mode_type, width, height, depth | only with flags bit 2; ignored         |
//!
//! Flags bits 0..15 are requirements: an image that sets one this loader
//! does not know is refused, as the specification demands. Known ones:
//! - bit 0, page-align modules: always honoured (modules are always placed
//!   on 4 KiB boundaries).
//! - bit 1, memory information required: always honoured (mem_lower,
//!   mem_upper and the memory map are always passed).
//! - bit 2, video mode: accepted but ignored. No VBE or framebuffer
//!   information is passed (info flags bits 11 and 12 stay clear), so the
//!   kernel finds itself in whatever mode the machine's display is in (text
//!   mode); the specification allows a loader to ignore the preference.
//!
//! Bits 16..31 are optional. Bit 16 (a.out kludge) selects the load
//! addresses from the header instead of from an ELF header, even when the
//! file is ELF (as GRUB does). Other optional bits are ignored.
//!
//! # Kernel formats
//! With bit 16: `load_end_addr - load_addr` bytes (the rest of the file when
//! `load_end_addr` is 0) from file offset `header offset - (header_addr -
//! load_addr)` go to `load_addr`, zeros up to `bss_end_addr` (none when 0);
//! entry at `entry_addr`. Without bit 16 the file must be ELF (see the ELF
//! notes in the crate's `elf` module): ELF32/EM_386, or ELF64/EM_X86_64 with
//! every PT_LOAD segment below 4 GiB, as GRUB accepts. Anything else is
//! refused.
//!
//! # Placement in guest memory
//! Everything goes into usable RAM ([`crate::MemKind::Usable`]) below 4 GiB,
//! above the highest byte of the kernel image (bss included), in this order,
//! each piece starting on a 4 KiB boundary and skipping holes:
//! 1. module data, one piece per module;
//! 2. one block holding the information structure (116 bytes, zero where
//!    not set), the module list, the memory map, then the NUL-terminated
//!    strings: kernel command line, module strings, boot loader name.
//!
//! # The information structure passed in EBX
//! | offset | field             | flags bit | value                                      |
//! |--------|-------------------|-----------|--------------------------------------------|
//! | 0      | flags             |           | bits 0, 2, 6, 9; bit 3 when there are modules |
//! | 4      | mem_lower         | 0         | KiB of usable RAM from 0, at most 640      |
//! | 8      | mem_upper         | 0         | KiB of usable RAM from 1 MiB to the first hole |
//! | 12     | boot_device       | 1         | not set (no BIOS boot disk)                |
//! | 16     | cmdline           | 2         | the caller's command line, as given         |
//! | 20, 24 | mods_count, mods_addr | 3     | 16-byte entries: mod_start, mod_end (exclusive), string, 0 |
//! | 44, 48 | mmap_length, mmap_addr | 6    | 24-byte entries: size (20), base_addr, length, type (1 available, 2 reserved) |
//! | 64     | boot_loader_name  | 9         | "hindsight"                                 |
//!
//! The memory map lists every region from [`crate::GuestMemory::ram_regions`]
//! plus the PC's standard reserved areas (EBDA [`EBDA_START`]..0xA0000 and
//! the BIOS ROM [`BIOS_ROM_START`]..1 MiB) where the machine reported
//! nothing, sorted by address. A machine that keeps its own data (BIOS data
//! area, firmware tables) in RAM must report that range as reserved, or a
//! module may be placed on it.

use crate::bytes::{align_up, le_u32};
use crate::elf;
use crate::memory::{check_segments, write_segments, LoadSegment, RamMap, FOUR_GIB};
use crate::{EntryMode, EntryState, GuestMemory, LoadError, MemRegion};

/// The header magic a multiboot kernel carries in its first 8192 bytes.
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// The magic the loader leaves in EAX for the kernel.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie entirely within this many bytes from the file start.
pub const SEARCH_LIMIT: u64 = 8192;
/// The header is 4-byte aligned in the file.
const HEADER_ALIGN: u64 = 4;
/// magic, flags, checksum.
const HEADER_BASE_LEN: u64 = 12;
/// ... plus header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr.
const HEADER_AOUT_LEN: u64 = 32;

/// Header flags bit 0: modules must be page aligned.
pub const FLAG_PAGE_ALIGN: u32 = 1 << 0;
/// Header flags bit 1: mem_* (and the memory map) must be passed.
pub const FLAG_MEMORY_INFO: u32 = 1 << 1;
/// Header flags bit 2: the kernel would like a video mode (ignored here).
pub const FLAG_VIDEO_MODE: u32 = 1 << 2;
/// Header flags bit 16: load addresses come from the header (a.out kludge).
pub const FLAG_AOUT_KLUDGE: u32 = 1 << 16;
/// Required bits (0..15) this loader understands.
const SUPPORTED_REQUIRED: u32 = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE;

/// Info flags bit 0: mem_lower and mem_upper are valid.
const INFO_MEMORY: u32 = 1 << 0;
/// Info flags bit 2: cmdline is valid.
const INFO_CMDLINE: u32 = 1 << 2;
/// Info flags bit 3: mods_count and mods_addr are valid.
const INFO_MODS: u32 = 1 << 3;
/// Info flags bit 6: mmap_length and mmap_addr are valid.
const INFO_MEM_MAP: u32 = 1 << 6;
/// Info flags bit 9: boot_loader_name is valid.
const INFO_BOOT_LOADER_NAME: u32 = 1 << 9;

/// Size of the information structure up to and including the framebuffer
/// fields (GRUB's `struct multiboot_info`); fields we do not set are zero.
const INFO_LEN: u64 = 116;
/// Bytes per module list entry: mod_start, mod_end, string, reserved.
const MODULE_ENTRY_LEN: u64 = 16;
/// Bytes per memory map entry: size (u32) + base_addr, length (u64) + type.
const MMAP_ENTRY_LEN: u64 = 24;
/// Value of a memory map entry's `size` field (excludes the field itself).
const MMAP_ENTRY_SIZE_FIELD: u32 = 20;
/// Memory map type of usable RAM.
const MMAP_AVAILABLE: u32 = 1;
/// Memory map type of anything else.
const MMAP_RESERVED: u32 = 2;

/// Placement granularity for modules and the information block.
const PAGE: u64 = 4096;
/// Start of the extended BIOS data area on a PC with 639 KiB low memory.
pub const EBDA_START: u64 = 0x9_FC00;
/// End of conventional memory (start of the VGA window).
const LOW_MEMORY_END: u64 = 0xA_0000;
/// Start of the system BIOS ROM shadow below 1 MiB.
pub const BIOS_ROM_START: u64 = 0xF_0000;
/// 1 MiB: where "upper memory" starts.
const HIGH_MEMORY_START: u64 = 0x10_0000;
/// The name passed in boot_loader_name.
pub const BOOT_LOADER_NAME: &str = "hindsight";

/// A boot module (initrd, driver, data file) passed to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module<'a> {
    /// The module's bytes, copied to guest memory verbatim.
    pub data: &'a [u8],
    /// The module's string as the kernel sees it (GRUB passes "path args";
    /// hindsight passes exactly this). Must not contain NUL.
    pub args: &'a str,
}

/// A multiboot header found in a kernel file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// File offset of the magic.
    pub offset: u64,
    /// The header's flags field.
    pub flags: u32,
}

/// Finds the multiboot header: the first 4-byte-aligned magic within the
/// first 8192 bytes whose checksum is right. Useful to tell multiboot
/// kernels from other images before loading.
pub fn find_header(image: &[u8]) -> Result<Header, LoadError> {
    let file_len = image.len() as u64;
    let limit = file_len.min(SEARCH_LIMIT);
    let mut bad_checksum = None;
    let mut offset = 0;
    while offset + HEADER_BASE_LEN <= file_len {
        if let Some((flags, checksum)) = magic_at(image, offset) {
            let valid = HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) == 0;
            if offset + HEADER_BASE_LEN > limit {
                if valid {
                    return Err(bad_checksum.unwrap_or(LoadError::MultibootHeaderNotFound {
                        beyond_limit_at: Some(offset),
                    }));
                }
            } else if valid {
                let needed = if flags & FLAG_AOUT_KLUDGE != 0 {
                    HEADER_AOUT_LEN
                } else {
                    HEADER_BASE_LEN
                };
                if offset + needed > limit {
                    return Err(LoadError::MultibootHeaderTruncated {
                        offset,
                        needed,
                        available: limit - offset,
                    });
                }
                return Ok(Header { offset, flags });
            } else if bad_checksum.is_none() {
                bad_checksum = Some(LoadError::MultibootChecksum {
                    offset,
                    flags,
                    checksum,
                });
            }
        }
        offset += HEADER_ALIGN;
    }
    Err(bad_checksum.unwrap_or(LoadError::MultibootHeaderNotFound {
        beyond_limit_at: None,
    }))
}

/// `(flags, checksum)` if the magic is at `offset`.
fn magic_at(image: &[u8], offset: u64) -> Option<(u32, u32)> {
    if le_u32(image, offset)? != HEADER_MAGIC {
        return None;
    }
    Some((le_u32(image, offset + 4)?, le_u32(image, offset + 8)?))
}

/// Loads a multiboot kernel, its modules and the multiboot information into
/// guest memory, and returns the state to start the CPU in: flat 32-bit
/// protected mode at the kernel's entry, EAX = [`BOOTLOADER_MAGIC`], EBX =
/// physical address of the information structure.
///
/// `cmdline` is passed to the kernel verbatim (GRUB would prefix the kernel's
/// path; hindsight does not). On any error from bad input, guest memory is
/// left untouched.
pub fn load_multiboot(
    mem: &mut dyn GuestMemory,
    image: &[u8],
    cmdline: &str,
    modules: &[Module<'_>],
) -> Result<EntryState, LoadError> {
    let header = find_header(image)?;
    let unsupported = header.flags & 0xFFFF & !SUPPORTED_REQUIRED;
    if unsupported != 0 {
        return Err(LoadError::MultibootUnsupportedFlag {
            offset: header.offset,
            flags: header.flags,
            bit: unsupported.trailing_zeros(),
        });
    }
    let (segments, entry) = if header.flags & FLAG_AOUT_KLUDGE != 0 {
        aout_segments(image, header.offset)?
    } else if elf::is_elf(image) {
        let elf = elf::parse(image, FOUR_GIB)?;
        (elf.segments, elf.entry)
    } else {
        return Err(LoadError::UnknownFormat {
            first_bytes: image.iter().take(4).copied().collect(),
        });
    };
    let eip = u32::try_from(entry).map_err(|_| LoadError::BadEntry {
        entry,
        problem: "is above 4 GiB, out of reach in 32-bit mode".into(),
    })?;

    check_nul("kernel command line", cmdline)?;
    for (i, m) in modules.iter().enumerate() {
        check_nul(&format!("string of module {i}"), m.args)?;
    }

    let regions = mem.ram_regions();
    let ram = RamMap::new(&regions);
    let image_end = check_segments(&ram, &segments)?;

    // Plan: modules above the image, then the information block.
    let mut cursor = image_end;
    let mut module_addrs = Vec::with_capacity(modules.len());
    for (i, m) in modules.iter().enumerate() {
        let len = m.data.len() as u64;
        let addr = ram
            .alloc(cursor, len, PAGE, FOUR_GIB)
            .ok_or_else(|| LoadError::NoRoom {
                what: format!("module {i}"),
                len,
                above: cursor,
            })?;
        module_addrs.push(addr);
        cursor = addr + len; // alloc guarantees addr + len <= 4 GiB
    }
    let info = InfoBlock {
        cmdline,
        modules,
        module_addrs: &module_addrs,
        memory_map: memory_map(&regions),
        mem_lower: mem_lower(&ram),
        mem_upper: mem_upper(&ram),
    };
    let info_len = info
        .len()
        .ok_or_else(|| no_room_for_info(u64::MAX, cursor))?;
    let info_addr = ram
        .alloc(cursor, info_len, PAGE, FOUR_GIB)
        .ok_or_else(|| no_room_for_info(info_len, cursor))?;
    let info_bytes = info.build(info_addr)?;

    // Write.
    write_segments(mem, image, &segments)?;
    for (m, &addr) in modules.iter().zip(&module_addrs) {
        if !m.data.is_empty() {
            mem.write(addr, m.data)?;
        }
    }
    mem.write(info_addr, &info_bytes)?;

    Ok(EntryState {
        eax: BOOTLOADER_MAGIC,
        ebx: addr32(info_addr)?,
        ..EntryState::new(EntryMode::Protected32Flat { eip })
    })
}

fn no_room_for_info(len: u64, above: u64) -> LoadError {
    LoadError::NoRoom {
        what: "the multiboot information".into(),
        len,
        above,
    }
}

fn check_nul(what: &str, s: &str) -> Result<(), LoadError> {
    match s.bytes().position(|b| b == 0) {
        Some(position) => Err(LoadError::InteriorNul {
            what: what.into(),
            position,
        }),
        None => Ok(()),
    }
}

/// Converts a placed address to a 32-bit info field. Placement is below
/// 4 GiB, so this fails only on a loader bug.
fn addr32(addr: u64) -> Result<u32, LoadError> {
    u32::try_from(addr).map_err(|_| LoadError::AddressOverflow {
        what: "multiboot information pointer".into(),
        start: addr,
        len: 0,
        limit: FOUR_GIB.into(),
    })
}

/// Converts a count or length to a 32-bit info field.
fn count32(n: u64) -> Result<u32, LoadError> {
    u32::try_from(n).map_err(|_| no_room_for_info(n, 0))
}

/// Validates the a.out-kludge fields and returns the one segment they
/// describe plus the entry point.
fn aout_segments(image: &[u8], hdr: u64) -> Result<(Vec<LoadSegment>, u64), LoadError> {
    let file_len = image.len() as u64;
    // find_header checked that all 32 header bytes are in the file.
    let field = |index: u64| {
        let offset = hdr + 12 + 4 * index;
        le_u32(image, offset)
            .map(|v| (v, offset))
            .ok_or(LoadError::MultibootHeaderTruncated {
                offset: hdr,
                needed: HEADER_AOUT_LEN,
                available: file_len.saturating_sub(hdr),
            })
    };
    let (header_addr, header_addr_off) = field(0)?;
    let (load_addr, load_addr_off) = field(1)?;
    let (load_end_addr, load_end_addr_off) = field(2)?;
    let (bss_end_addr, bss_end_addr_off) = field(3)?;
    let (entry_addr, entry_addr_off) = field(4)?;
    let bad =
        |field: &'static str, offset: u64, value: u32, problem: String| LoadError::MultibootField {
            field,
            offset,
            value,
            problem,
        };

    if load_addr > header_addr {
        return Err(bad(
            "load_addr",
            load_addr_off,
            load_addr,
            format!("is above header_addr {header_addr:#x}"),
        ));
    }
    let delta = u64::from(header_addr - load_addr);
    if delta > hdr {
        return Err(bad(
            "header_addr",
            header_addr_off,
            header_addr,
            format!(
                "is {delta:#x} bytes above load_addr {load_addr:#x}, but the header is only \
                 {hdr:#x} bytes into the file: the image would start before the file"
            ),
        ));
    }
    let file_offset = hdr - delta;
    let load_start = u64::from(load_addr);
    let load_size = if load_end_addr == 0 {
        file_len - file_offset
    } else {
        let header_end = u64::from(header_addr) + HEADER_AOUT_LEN;
        if u64::from(load_end_addr) < header_end {
            return Err(bad(
                "load_end_addr",
                load_end_addr_off,
                load_end_addr,
                format!(
                    "is below the end of the multiboot header at {header_end:#x} \
                     (header_addr {header_addr:#x} + {HEADER_AOUT_LEN}): the header must be loaded"
                ),
            ));
        }
        let size = u64::from(load_end_addr) - load_start;
        if file_offset + size > file_len {
            return Err(LoadError::PastEndOfFile {
                what: "multiboot a.out image (load_end_addr - load_addr bytes)".into(),
                offset: file_offset,
                len: size,
                file_len,
            });
        }
        size
    };
    let load_end = load_start + load_size;
    if load_end > FOUR_GIB {
        return Err(LoadError::AddressOverflow {
            what: "multiboot a.out image (load_addr + rest of file, load_end_addr = 0)".into(),
            start: load_start,
            len: load_size,
            limit: FOUR_GIB.into(),
        });
    }
    let memsz = if bss_end_addr == 0 {
        load_size
    } else if u64::from(bss_end_addr) < load_end {
        return Err(bad(
            "bss_end_addr",
            bss_end_addr_off,
            bss_end_addr,
            format!("is below the end of the loaded data {load_end:#x}"),
        ));
    } else {
        u64::from(bss_end_addr) - load_start
    };
    let entry = u64::from(entry_addr);
    if entry < load_start || entry >= load_end {
        return Err(bad(
            "entry_addr",
            entry_addr_off,
            entry_addr,
            format!("lies outside the loaded image [{load_start:#x},{load_end:#x})"),
        ));
    }
    let segment = LoadSegment {
        what: "multiboot a.out image".into(),
        file_offset,
        filesz: load_size,
        paddr: load_start,
        memsz,
    };
    Ok((vec![segment], entry))
}

/// KiB of usable RAM from address 0, at most 640.
fn mem_lower(ram: &RamMap) -> u32 {
    ram.range_containing(0)
        .map_or(0, |(_, end)| (end.min(LOW_MEMORY_END) / 1024) as u32)
}

/// KiB of contiguous usable RAM from 1 MiB.
fn mem_upper(ram: &RamMap) -> u32 {
    ram.range_containing(HIGH_MEMORY_START)
        .map_or(0, |(_, end)| {
            u32::try_from((end - HIGH_MEMORY_START) / 1024).unwrap_or(u32::MAX)
        })
}

/// The machine's regions plus the standard PC reserved areas it did not
/// cover, sorted by address.
fn memory_map(regions: &[MemRegion]) -> Vec<MemRegion> {
    let mut map: Vec<MemRegion> = regions.iter().filter(|r| r.len > 0).copied().collect();
    let standard = [
        MemRegion::reserved(EBDA_START, LOW_MEMORY_END - EBDA_START),
        MemRegion::reserved(BIOS_ROM_START, HIGH_MEMORY_START - BIOS_ROM_START),
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

/// Everything in the information block, before it has an address.
struct InfoBlock<'a> {
    cmdline: &'a str,
    modules: &'a [Module<'a>],
    module_addrs: &'a [u64],
    memory_map: Vec<MemRegion>,
    mem_lower: u32,
    mem_upper: u32,
}

/// Offsets of the parts of the information block.
struct InfoLayout {
    mods: u64,
    mmap: u64,
    strings: u64,
    len: u64,
}

impl InfoBlock<'_> {
    fn layout(&self) -> Option<InfoLayout> {
        let mods = align_up(INFO_LEN, 8)?;
        let mods_len = MODULE_ENTRY_LEN.checked_mul(self.modules.len() as u64)?;
        let mmap = mods.checked_add(mods_len)?;
        let mmap_len = MMAP_ENTRY_LEN.checked_mul(self.memory_map.len() as u64)?;
        let strings = mmap.checked_add(mmap_len)?;
        let mut len = strings
            .checked_add(self.cmdline.len() as u64 + 1)?
            .checked_add(BOOT_LOADER_NAME.len() as u64 + 1)?;
        for m in self.modules {
            len = len.checked_add(m.args.len() as u64 + 1)?;
        }
        Some(InfoLayout {
            mods,
            mmap,
            strings,
            len,
        })
    }

    fn len(&self) -> Option<u64> {
        self.layout().map(|l| l.len)
    }

    /// The block's bytes for placement at guest-physical `base`.
    fn build(&self, base: u64) -> Result<Vec<u8>, LoadError> {
        let l = self
            .layout()
            .ok_or_else(|| no_room_for_info(u64::MAX, base))?;
        let at = |off: u64| base.checked_add(off).map_or(addr32(u64::MAX), addr32);

        // Strings: cmdline, module strings, boot loader name.
        let mut strings = Vec::new();
        let mut cstr = |s: &str| {
            let off = l.strings + strings.len() as u64;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            off
        };
        let cmdline_off = cstr(self.cmdline);
        let module_string_offs: Vec<u64> = self.modules.iter().map(|m| cstr(m.args)).collect();
        let name_off = cstr(BOOT_LOADER_NAME);

        let mut flags = INFO_MEMORY | INFO_CMDLINE | INFO_MEM_MAP | INFO_BOOT_LOADER_NAME;
        let (mods_count, mods_addr) = if self.modules.is_empty() {
            (0, 0)
        } else {
            flags |= INFO_MODS;
            (count32(self.modules.len() as u64)?, at(l.mods)?)
        };
        let mmap_len = count32(MMAP_ENTRY_LEN * self.memory_map.len() as u64)?;

        let mut out = Vec::with_capacity(l.len as usize);
        let u32s = |out: &mut Vec<u8>, vals: &[u32]| {
            for v in vals {
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
        u32s(
            &mut out,
            &[
                flags,
                self.mem_lower,
                self.mem_upper,
                0, // boot_device
                at(cmdline_off)?,
                mods_count,
                mods_addr,
                0, // syms (4 words)
                0,
                0,
                0,
                mmap_len,
                at(l.mmap)?,
                0, // drives_length
                0, // drives_addr
                0, // config_table
                at(name_off)?,
            ],
        );
        out.resize(l.mods as usize, 0); // apm_table, vbe_*, framebuffer_*: zero
        for ((m, &addr), &str_off) in self
            .modules
            .iter()
            .zip(self.module_addrs)
            .zip(&module_string_offs)
        {
            let start = addr32(addr)?;
            let end = addr
                .checked_add(m.data.len() as u64)
                .map_or(addr32(u64::MAX), addr32)?;
            u32s(&mut out, &[start, end, at(str_off)?, 0]);
        }
        for r in &self.memory_map {
            let kind = match r.kind {
                crate::MemKind::Usable => MMAP_AVAILABLE,
                crate::MemKind::Reserved => MMAP_RESERVED,
            };
            out.extend_from_slice(&MMAP_ENTRY_SIZE_FIELD.to_le_bytes());
            out.extend_from_slice(&r.start.to_le_bytes());
            out.extend_from_slice(&r.len.to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
        }
        out.extend_from_slice(&strings);
        debug_assert_eq!(out.len() as u64, l.len);
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
