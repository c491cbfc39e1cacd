//! ELF executable parsing for loaders: program headers to load segments.
//!
//! | accepted            | value                                              |
//! |---------------------|----------------------------------------------------|
//! | `e_ident[EI_CLASS]` | 1 (ELFCLASS32) with `e_machine` 3 (EM_386), or 2 (ELFCLASS64) with `e_machine` 62 (EM_X86_64) |
//! | `e_ident[EI_DATA]`  | 1 (little-endian)                                  |
//! | `e_version`         | 1 (EV_CURRENT)                                     |
//! | `e_type`            | 2 (ET_EXEC), or 3 (ET_DYN) loaded unrelocated at its `p_paddr`, as GRUB does |
//!
//! Segments are PT_LOAD program headers with `p_memsz > 0`, loaded at
//! `p_paddr` (not `p_vaddr`: higher-half kernels link at a virtual address but
//! ask to be loaded low). Like GRUB, the entry point `e_entry` is a virtual
//! address translated through the PT_LOAD segment whose `p_vaddr` range holds
//! it; for identity-linked kernels that changes nothing. Section headers are
//! ignored.

use crate::bytes::{le_u16, le_u32, le_u64, slice};
use crate::memory::LoadSegment;
use crate::LoadError;

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
const EI_CLASS: u64 = 4;
const EI_DATA: u64 = 5;
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
const EV_CURRENT: u32 = 1;
const PT_LOAD: u32 = 1;

/// A parsed ELF executable, ready to place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ElfImage {
    /// Physical entry address (`e_entry` translated through its segment).
    pub entry: u64,
    /// PT_LOAD segments with nonzero `p_memsz`, in program header order.
    pub segments: Vec<LoadSegment>,
}

/// Whether `image` starts with the ELF magic.
pub(crate) fn is_elf(image: &[u8]) -> bool {
    image.starts_with(&ELF_MAGIC)
}

/// Field offsets and sizes that differ between ELF32 and ELF64.
struct Layout {
    ehsize: u64,
    machine: u16,
    machine_name: &'static str,
    entry: u64,
    phoff: u64,
    phentsize: u64,
    phnum: u64,
    word: u64,
    min_phentsize: u64,
    p_offset: u64,
    p_vaddr: u64,
    p_paddr: u64,
    p_filesz: u64,
    p_memsz: u64,
}

const LAYOUT32: Layout = Layout {
    ehsize: 52,
    machine: EM_386,
    machine_name: "3 (EM_386) for ELFCLASS32",
    entry: 24,
    phoff: 28,
    phentsize: 42,
    phnum: 44,
    word: 4,
    min_phentsize: 32,
    p_offset: 4,
    p_vaddr: 8,
    p_paddr: 12,
    p_filesz: 16,
    p_memsz: 20,
};

const LAYOUT64: Layout = Layout {
    ehsize: 64,
    machine: EM_X86_64,
    machine_name: "62 (EM_X86_64) for ELFCLASS64",
    entry: 24,
    phoff: 32,
    phentsize: 54,
    phnum: 56,
    word: 8,
    min_phentsize: 56,
    p_offset: 8,
    p_vaddr: 16,
    p_paddr: 24,
    p_filesz: 32,
    p_memsz: 40,
};

/// Reads a 4- or 8-byte little-endian word.
fn word(data: &[u8], off: u64, size: u64) -> Option<u64> {
    if size == 4 {
        le_u32(data, off).map(u64::from)
    } else {
        le_u64(data, off)
    }
}

/// Whether `[start, start + len)` ends at or below `limit` without
/// overflowing.
fn range_within(start: u64, len: u64, limit: u64) -> bool {
    matches!(start.checked_add(len), Some(end) if end <= limit)
}

fn past_eof(what: String, offset: u64, len: u64, file_len: u64) -> LoadError {
    LoadError::PastEndOfFile {
        what,
        offset,
        len,
        file_len,
    }
}

/// Parses an ELF executable whose segments must end at or below `limit`
/// (the size of the physical address space the CPU enters with).
pub(crate) fn parse(image: &[u8], limit: u64) -> Result<ElfImage, LoadError> {
    let file_len = image.len() as u64;
    let ident = slice(image, 0, 16)
        .ok_or_else(|| past_eof("ELF identification (e_ident)".into(), 0, 16, file_len))?;
    if ident[..4] != ELF_MAGIC {
        return Err(LoadError::UnknownFormat {
            first_bytes: ident[..4].to_vec(),
        });
    }
    let class = ident[EI_CLASS as usize];
    let l = match class {
        ELFCLASS32 => &LAYOUT32,
        ELFCLASS64 => &LAYOUT64,
        _ => {
            return Err(LoadError::ElfField {
                field: "e_ident[EI_CLASS]",
                offset: EI_CLASS,
                value: class.into(),
                expected: "1 (ELFCLASS32) or 2 (ELFCLASS64)".into(),
            })
        }
    };
    let data = ident[EI_DATA as usize];
    if data != ELFDATA2LSB {
        return Err(LoadError::ElfField {
            field: "e_ident[EI_DATA]",
            offset: EI_DATA,
            value: data.into(),
            expected: "1 (ELFDATA2LSB, little-endian)".into(),
        });
    }
    let eh = slice(image, 0, l.ehsize)
        .ok_or_else(|| past_eof("ELF header".into(), 0, l.ehsize, file_len))?;
    // All header reads below are inside `eh`; the `?`s never fire.
    let header_eof = || past_eof("ELF header".into(), 0, l.ehsize, file_len);
    let e_type = le_u16(eh, 16).ok_or_else(header_eof)?;
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err(LoadError::ElfField {
            field: "e_type",
            offset: 16,
            value: e_type.into(),
            expected: "2 (ET_EXEC) or 3 (ET_DYN)".into(),
        });
    }
    let e_machine = le_u16(eh, 18).ok_or_else(header_eof)?;
    if e_machine != l.machine {
        return Err(LoadError::ElfField {
            field: "e_machine",
            offset: 18,
            value: e_machine.into(),
            expected: l.machine_name.into(),
        });
    }
    let e_version = le_u32(eh, 20).ok_or_else(header_eof)?;
    if e_version != EV_CURRENT {
        return Err(LoadError::ElfField {
            field: "e_version",
            offset: 20,
            value: e_version.into(),
            expected: "1 (EV_CURRENT)".into(),
        });
    }
    let e_entry = word(eh, l.entry, l.word).ok_or_else(header_eof)?;
    let e_phoff = word(eh, l.phoff, l.word).ok_or_else(header_eof)?;
    let e_phentsize = u64::from(le_u16(eh, l.phentsize).ok_or_else(header_eof)?);
    let e_phnum = u64::from(le_u16(eh, l.phnum).ok_or_else(header_eof)?);
    if e_phnum > 0 && e_phentsize < l.min_phentsize {
        return Err(LoadError::ElfField {
            field: "e_phentsize",
            offset: l.phentsize,
            value: e_phentsize,
            expected: format!("at least {}", l.min_phentsize),
        });
    }

    let mut segments = Vec::new();
    let mut entry = None;
    for index in 0..e_phnum {
        let what = format!("ELF program header {index}");
        // index < 2^16 and e_phentsize < 2^16: the product cannot overflow.
        let off = e_phoff
            .checked_add(index * e_phentsize)
            .ok_or_else(|| past_eof(what.clone(), u64::MAX, e_phentsize, file_len))?;
        let ph = slice(image, off, e_phentsize)
            .ok_or_else(|| past_eof(what.clone(), off, e_phentsize, file_len))?;
        let ph_eof = || past_eof(what.clone(), off, e_phentsize, file_len);
        if le_u32(ph, 0).ok_or_else(ph_eof)? != PT_LOAD {
            continue;
        }
        let p_offset = word(ph, l.p_offset, l.word).ok_or_else(ph_eof)?;
        let p_vaddr = word(ph, l.p_vaddr, l.word).ok_or_else(ph_eof)?;
        let p_paddr = word(ph, l.p_paddr, l.word).ok_or_else(ph_eof)?;
        let p_filesz = word(ph, l.p_filesz, l.word).ok_or_else(ph_eof)?;
        let p_memsz = word(ph, l.p_memsz, l.word).ok_or_else(ph_eof)?;
        if p_filesz > p_memsz {
            return Err(LoadError::ElfProgramHeader {
                index,
                offset: off,
                problem: format!("p_filesz {p_filesz:#x} exceeds p_memsz {p_memsz:#x}"),
            });
        }
        if p_memsz == 0 {
            continue;
        }
        if !range_within(p_offset, p_filesz, file_len) {
            return Err(past_eof(
                format!("{what} file data (p_offset + p_filesz)"),
                p_offset,
                p_filesz,
                file_len,
            ));
        }
        if !range_within(p_paddr, p_memsz, limit) {
            return Err(LoadError::AddressOverflow {
                what: format!("{what} (p_paddr + p_memsz)"),
                start: p_paddr,
                len: p_memsz,
                limit: limit.into(),
            });
        }
        if entry.is_none() && p_vaddr <= e_entry && e_entry - p_vaddr < p_memsz {
            // e_entry - p_vaddr < p_memsz, and p_paddr + p_memsz <= limit.
            entry = Some(p_paddr + (e_entry - p_vaddr));
        }
        segments.push(LoadSegment {
            what: format!("ELF segment (program header {index})"),
            file_offset: p_offset,
            filesz: p_filesz,
            paddr: p_paddr,
            memsz: p_memsz,
        });
    }
    if segments.is_empty() {
        return Err(LoadError::NoLoadableSegments);
    }
    // A Linux vmlinux gives its entry as a physical address (phys_startup_64).
    let entry = entry.or_else(|| {
        segments
            .iter()
            .find(|s| s.paddr <= e_entry && e_entry - s.paddr < s.memsz)
            .map(|_| e_entry)
    });
    let entry = entry.ok_or_else(|| LoadError::BadEntry {
        entry: e_entry,
        problem: "(ELF e_entry) is not inside any PT_LOAD segment's p_vaddr or p_paddr range"
            .into(),
    })?;
    Ok(ElfImage { entry, segments })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::FOUR_GIB;
    use crate::testutil::{ElfBuilder, Seg};

    #[test]
    fn parses_elf32_segments_and_translates_entry() {
        let img = ElfBuilder::new32(0xC010_0010)
            .seg(Seg::load(0x10_0000, b"code").vaddr(0xC010_0000).memsz(0x20))
            .seg(Seg::other(4, 0x1234))
            .build();
        let elf = parse(&img, FOUR_GIB).unwrap();
        assert_eq!(elf.entry, 0x10_0010);
        assert_eq!(elf.segments.len(), 1);
        let s = &elf.segments[0];
        assert_eq!((s.paddr, s.filesz, s.memsz), (0x10_0000, 4, 0x20));
        assert_eq!(slice(&img, s.file_offset, 4), Some(&b"code"[..]));
    }

    #[test]
    fn parses_elf64_below_4gib() {
        let img = ElfBuilder::new64(0x20_0000)
            .seg(Seg::load(0x20_0000, &[0x90; 16]))
            .build();
        let elf = parse(&img, FOUR_GIB).unwrap();
        assert_eq!(elf.entry, 0x20_0000);
        let img = ElfBuilder::new64(0x1_0000_0000)
            .seg(Seg::load(0x1_0000_0000, &[0x90; 16]))
            .build();
        let err = parse(&img, FOUR_GIB).unwrap_err();
        assert!(matches!(err, LoadError::AddressOverflow { .. }), "{err}");
    }

    #[test]
    fn rejects_bad_header_fields() {
        let base = ElfBuilder::new32(0x10_0000)
            .seg(Seg::load(0x10_0000, b"x"))
            .build();
        let cases: [(usize, &[u8], &str); 6] = [
            (4, &[3], "e_ident[EI_CLASS]"),
            (5, &[2], "e_ident[EI_DATA]"),
            (16, &[1, 0], "e_type"),
            (18, &[62, 0], "e_machine"),
            (20, &[2, 0, 0, 0], "e_version"),
            (42, &[8, 0], "e_phentsize"),
        ];
        for (off, bytes, name) in cases {
            let mut img = base.clone();
            img[off..off + bytes.len()].copy_from_slice(bytes);
            match parse(&img, FOUR_GIB) {
                Err(LoadError::ElfField { field, offset, .. }) => {
                    assert_eq!((field, offset), (name, off as u64));
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn entry_outside_segments_is_refused() {
        let img = ElfBuilder::new32(0x30_0000)
            .seg(Seg::load(0x10_0000, b"x"))
            .build();
        let err = parse(&img, FOUR_GIB).unwrap_err();
        assert!(matches!(
            err,
            LoadError::BadEntry {
                entry: 0x30_0000,
                ..
            }
        ));
        assert!(err.to_string().contains("not inside any PT_LOAD"), "{err}");
    }

    #[test]
    fn filesz_above_memsz_is_refused() {
        let img = ElfBuilder::new32(0x10_0000)
            .seg(Seg::load(0x10_0000, b"abcd").memsz(2))
            .build();
        let err = parse(&img, FOUR_GIB).unwrap_err();
        assert!(
            matches!(err, LoadError::ElfProgramHeader { index: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("p_filesz 0x4 exceeds p_memsz 0x2"));
    }

    #[test]
    fn truncated_header() {
        let img = ElfBuilder::new32(0x10_0000)
            .seg(Seg::load(0x10_0000, b"x"))
            .build();
        let err = parse(&img[..40], FOUR_GIB).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ELF header extends past end of file (offset 0x0 + 0x34 > 0x28)"
        );
        let err = parse(&img[..10], FOUR_GIB).unwrap_err();
        assert!(
            matches!(err, LoadError::PastEndOfFile { len: 16, .. }),
            "{err}"
        );
    }

    #[test]
    fn no_load_segments() {
        let img = ElfBuilder::new32(0x10_0000).seg(Seg::other(4, 0)).build();
        assert_eq!(parse(&img, FOUR_GIB), Err(LoadError::NoLoadableSegments));
    }
}
