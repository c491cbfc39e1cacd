use super::*;
use crate::testutil::{
    aout_image, mb_aout_header, mb_header, Aout, ElfBuilder, Seg, VecMemory, XorShift,
};
use crate::MemKind;

const RAM: u64 = 16 << 20;

/// RAM pre-filled with 0xAA so zero-fill and untouched bytes are visible.
fn dirty_pc() -> VecMemory {
    let mut mem = VecMemory::pc(RAM);
    mem.ram.fill(0xAA);
    mem
}

/// Two segments: text at 1 MiB (multiboot header first) with bss up to
/// 0x103000, data at 2 MiB with bss up to 0x201800.
fn elf32_kernel(flags: u32) -> Vec<u8> {
    let mut text = mb_header(flags);
    text.extend_from_slice(&[0xFA, 0xF4]); // cli; hlt
    ElfBuilder::new32(0x10_000C)
        .seg(Seg::load(0x10_0000, &text).memsz(0x3000))
        .seg(Seg::other(4, 0)) // PT_NOTE: ignored
        .seg(Seg::load(0x20_0000, b"DATA").memsz(0x1800))
        .build()
}

fn load(mem: &mut VecMemory, image: &[u8]) -> Result<EntryState, LoadError> {
    load_multiboot(mem, image, "", &[])
}

/// Reads the memory map as (base, length, type), following the size fields.
fn read_mmap(mem: &VecMemory, info: u64) -> Vec<(u64, u64, u32)> {
    let len = u64::from(mem.u32(info + 44));
    let mut addr = u64::from(mem.u32(info + 48));
    let end = addr + len;
    let mut out = Vec::new();
    while addr < end {
        let size = mem.u32(addr);
        assert_eq!(size, 20);
        out.push((mem.u64(addr + 4), mem.u64(addr + 12), mem.u32(addr + 20)));
        addr += u64::from(size) + 4;
    }
    out
}

#[test]
fn elf32_kernel_with_modules() {
    let mut mem = dirty_pc();
    let image = elf32_kernel(FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO);
    let initrd: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let modules = [
        Module {
            data: &initrd,
            args: "/boot/initrd.img rootfs",
        },
        Module {
            data: b"xyz",
            args: "second",
        },
        Module {
            data: b"",
            args: "",
        },
    ];
    let st = load_multiboot(&mut mem, &image, "console=ttyS0 debug", &modules).unwrap();

    // Entry state.
    assert_eq!(st.mode, EntryMode::Protected32Flat { eip: 0x10_000C });
    assert_eq!(st.eax, 0x2BAD_B002);
    assert_eq!(
        (st.ecx, st.edx, st.esi, st.edi, st.ebp, st.esp),
        (0, 0, 0, 0, 0, 0)
    );

    // Segments and their bss.
    assert_eq!(
        mem.bytes(0x10_0000, 14),
        &image[ElfBuilder::new32(0)
            .seg(Seg::load(0, &[]))
            .seg(Seg::other(4, 0))
            .seg(Seg::load(0, &[]))
            .data_offset(0)..][..14]
    );
    assert_eq!(mem.bytes(0x10_000C, 2), &[0xFA, 0xF4]);
    assert!(mem.bytes(0x10_000E, 0x3000 - 14).iter().all(|&b| b == 0));
    assert_eq!(mem.bytes(0x10_3000, 1), &[0xAA]);
    assert_eq!(mem.bytes(0x20_0000, 4), b"DATA");
    assert!(mem.bytes(0x20_0004, 0x17FC).iter().all(|&b| b == 0));

    // Modules: page aligned, above the image, in order, not overlapping.
    let info = u64::from(st.ebx);
    assert_eq!(mem.u32(info + 20), 3);
    let mods = u64::from(mem.u32(info + 24));
    let mut prev_end = 0x20_1800;
    for (i, m) in modules.iter().enumerate() {
        let e = mods + 16 * i as u64;
        let (start, end) = (u64::from(mem.u32(e)), u64::from(mem.u32(e + 4)));
        assert_eq!(start % 4096, 0, "module {i} at {start:#x}");
        assert!(start >= prev_end, "module {i} at {start:#x} overlaps");
        assert_eq!(end - start, m.data.len() as u64);
        assert_eq!(mem.bytes(start, end - start), m.data);
        assert_eq!(mem.cstr(u64::from(mem.u32(e + 8))), m.args);
        assert_eq!(mem.u32(e + 12), 0);
        prev_end = end;
    }
    assert_eq!(u64::from(mem.u32(mods)), 0x20_2000);

    // The information block: page aligned, above the modules.
    assert_eq!(info % 4096, 0);
    assert!(info >= prev_end);
    assert!(mods > info && mods < info + 4096);
    assert_eq!(
        mem.u32(info),
        0x24D,
        "flags: mem, cmdline, mods, mmap, name"
    );
    assert_eq!(mem.u32(info + 4), 639);
    assert_eq!(mem.u32(info + 8), (RAM as u32 - 0x10_0000) / 1024);
    assert_eq!(mem.u32(info + 12), 0);
    assert_eq!(
        mem.cstr(u64::from(mem.u32(info + 16))),
        "console=ttyS0 debug"
    );
    assert_eq!(mem.cstr(u64::from(mem.u32(info + 64))), "hindsight");
    assert!(mem.bytes(info + 68, 116 - 68).iter().all(|&b| b == 0));
    assert_eq!(
        read_mmap(&mem, info),
        vec![
            (0, 0x9_FC00, 1),
            (0x9_FC00, 0x400, 2),
            (0xF_0000, 0x1_0000, 2),
            (0x10_0000, RAM - 0x10_0000, 1),
        ]
    );
}

#[test]
fn no_modules_leaves_flag_clear() {
    let mut mem = dirty_pc();
    let st = load(&mut mem, &elf32_kernel(0)).unwrap();
    let info = u64::from(st.ebx);
    assert_eq!(info, 0x20_2000);
    assert_eq!(mem.u32(info), 0x245);
    assert_eq!((mem.u32(info + 20), mem.u32(info + 24)), (0, 0));
    assert_eq!(mem.cstr(u64::from(mem.u32(info + 16))), "");
}

#[test]
fn memory_holes_and_reserved_regions() {
    let mut mem = dirty_pc();
    mem.regions = vec![
        MemRegion::usable(0x10_0000, 0x70_0000),
        MemRegion::reserved(0x80_0000, 0x10_0000),
        MemRegion::usable(0x90_0000, 0x70_0000),
        MemRegion::usable(0, 0x9_FC00),
        MemRegion::reserved(0xFEC0_0000, 0x1000),
    ];
    // A module that does not fit between the image and the reserved hole.
    let big = vec![0x5A; 0x60_0000];
    let st = load_multiboot(
        &mut mem,
        &elf32_kernel(0),
        "",
        &[Module {
            data: &big,
            args: "big",
        }],
    )
    .unwrap();
    let info = u64::from(st.ebx);
    assert_eq!(
        mem.u32(info + 8),
        0x70_0000 / 1024,
        "mem_upper stops at the hole"
    );
    let mods = u64::from(mem.u32(info + 24));
    assert_eq!(mem.u32(mods), 0x90_0000);
    assert_eq!(info, 0xF0_0000);
    assert_eq!(
        read_mmap(&mem, info),
        vec![
            (0, 0x9_FC00, 1),
            (0x9_FC00, 0x400, 2),
            (0xF_0000, 0x1_0000, 2),
            (0x10_0000, 0x70_0000, 1),
            (0x80_0000, 0x10_0000, 2),
            (0x90_0000, 0x70_0000, 1),
            (0xFEC0_0000, 0x1000, 2),
        ]
    );
}

#[test]
fn machine_reported_reserved_areas_are_not_duplicated() {
    let mut mem = dirty_pc();
    mem.regions.push(MemRegion::reserved(0x9_FC00, 0x400));
    mem.regions.push(MemRegion::reserved(0xE_0000, 0x2_0000));
    let st = load(&mut mem, &elf32_kernel(0)).unwrap();
    let map = read_mmap(&mem, u64::from(st.ebx));
    assert_eq!(
        map,
        vec![
            (0, 0x9_FC00, 1),
            (0x9_FC00, 0x400, 2),
            (0xE_0000, 0x2_0000, 2),
            (0x10_0000, RAM - 0x10_0000, 1),
        ]
    );
}

#[test]
fn elf64_kernel_below_4gib() {
    let mut text = mb_header(FLAG_MEMORY_INFO);
    text.extend_from_slice(&[0xF4]);
    let image = ElfBuilder::new64(0x40_000C)
        .seg(Seg::load(0x40_0000, &text).memsz(0x1000))
        .build();
    let mut mem = dirty_pc();
    let st = load(&mut mem, &image).unwrap();
    assert_eq!(st.mode, EntryMode::Protected32Flat { eip: 0x40_000C });
    assert_eq!(mem.bytes(0x40_000C, 1), &[0xF4]);
    assert_eq!(st.ebx, 0x40_1000);
}

#[test]
fn higher_half_entry_is_translated_to_physical() {
    let mut text = mb_header(0);
    text.extend_from_slice(&[0xF4]);
    let image = ElfBuilder::new32(0xC010_000C)
        .seg(Seg::load(0x10_0000, &text).vaddr(0xC010_0000))
        .build();
    let mut mem = dirty_pc();
    let st = load(&mut mem, &image).unwrap();
    assert_eq!(st.mode, EntryMode::Protected32Flat { eip: 0x10_000C });
}

#[test]
fn video_mode_and_optional_flags_are_accepted() {
    let mut mem = dirty_pc();
    load(&mut mem, &elf32_kernel(FLAG_VIDEO_MODE | 1 << 20 | 1 << 31)).unwrap();
}

#[test]
fn aout_kludge_with_bss() {
    // 0x40 bytes of code before the header; the header is at load_addr + 0x40.
    let code: Vec<u8> = (0..0x40u8).collect();
    let a = Aout {
        header_addr: 0x10_0040,
        load_addr: 0x10_0000,
        load_end_addr: 0,
        bss_end_addr: 0x10_4000,
        entry_addr: 0x10_0000,
    };
    let image = aout_image(&code, a, &[0xEE; 0x100]);
    let mut mem = dirty_pc();
    let st = load_multiboot(&mut mem, &image, "x", &[]).unwrap();
    assert_eq!(st.mode, EntryMode::Protected32Flat { eip: 0x10_0000 });
    assert_eq!(st.eax, BOOTLOADER_MAGIC);
    assert_eq!(mem.bytes(0x10_0000, image.len() as u64), &image[..]);
    let loaded_end = 0x10_0000 + image.len() as u64;
    assert!(mem
        .bytes(loaded_end, 0x10_4000 - loaded_end)
        .iter()
        .all(|&b| b == 0));
    assert_eq!(st.ebx, 0x10_4000, "info block right after the bss");
}

#[test]
fn aout_kludge_from_file_offset_with_load_end() {
    // 0x1000 bytes the loader must skip, then the image; the header is 0x20
    // bytes into the image; only 0x80 bytes are loaded, no bss.
    let mut image = vec![0x11; 0x1000];
    image.extend_from_slice(&[0x22; 0x20]);
    image.extend_from_slice(&mb_aout_header(
        0,
        Aout {
            header_addr: 0x20_0020,
            load_addr: 0x20_0000,
            load_end_addr: 0x20_0080,
            bss_end_addr: 0,
            entry_addr: 0x20_0010,
        },
    ));
    image.resize(0x1100, 0x33);
    let mut mem = dirty_pc();
    let st = load(&mut mem, &image).unwrap();
    assert_eq!(st.mode, EntryMode::Protected32Flat { eip: 0x20_0010 });
    assert_eq!(mem.bytes(0x20_0000, 0x80), &image[0x1000..0x1080]);
    assert_eq!(mem.bytes(0x20_0080, 1), &[0xAA]);
    assert_eq!(st.ebx, 0x20_1000);
}

#[test]
fn aout_kludge_field_errors() {
    let good = Aout {
        header_addr: 0x10_0040,
        load_addr: 0x10_0000,
        load_end_addr: 0,
        bss_end_addr: 0,
        entry_addr: 0x10_0000,
    };
    let code = [0u8; 0x40];
    let body = [0u8; 0x40];
    let cases: Vec<(Aout, &str, &str)> = vec![
        (
            Aout { load_addr: 0x10_0050, ..good },
            "load_addr",
            "multiboot header field load_addr = 0x100050 (file offset 0x50): is above header_addr 0x100040",
        ),
        (
            Aout { header_addr: 0x10_0080, ..good },
            "header_addr",
            "multiboot header field header_addr = 0x100080 (file offset 0x4c): is 0x80 bytes above \
             load_addr 0x100000, but the header is only 0x40 bytes into the file: the image would \
             start before the file",
        ),
        (
            Aout { load_end_addr: 0x10_0050, ..good },
            "load_end_addr",
            "multiboot header field load_end_addr = 0x100050 (file offset 0x54): is below the end of \
             the multiboot header at 0x100060 (header_addr 0x100040 + 32): the header must be loaded",
        ),
        (
            Aout { load_end_addr: 0x10_0080, bss_end_addr: 0x10_007F, ..good },
            "bss_end_addr",
            "multiboot header field bss_end_addr = 0x10007f (file offset 0x58): is below the end of \
             the loaded data 0x100080",
        ),
        (
            Aout { entry_addr: 0x10_00A0, ..good },
            "entry_addr",
            "multiboot header field entry_addr = 0x1000a0 (file offset 0x5c): lies outside the \
             loaded image [0x100000,0x1000a0)",
        ),
        (
            Aout { entry_addr: 0xF_FFFF, ..good },
            "entry_addr",
            "",
        ),
    ];
    for (a, field, msg) in cases {
        let image = aout_image(&code, a, &body);
        let err = load(&mut dirty_pc(), &image).unwrap_err();
        match &err {
            LoadError::MultibootField { field: f, .. } => assert_eq!(*f, field, "{err}"),
            other => panic!("{field}: {other:?}"),
        }
        if !msg.is_empty() {
            assert_eq!(err.to_string(), msg);
        }
    }

    // load_end_addr beyond the end of the file.
    let image = aout_image(
        &code,
        Aout {
            load_end_addr: 0x10_1000,
            ..good
        },
        &body,
    );
    let err = load(&mut dirty_pc(), &image).unwrap_err();
    assert_eq!(
        err.to_string(),
        "multiboot a.out image (load_end_addr - load_addr bytes) extends past end of file \
         (offset 0x0 + 0x1000 > 0xa0)"
    );

    // load_addr + rest of the file beyond 4 GiB.
    let a = Aout {
        header_addr: 0xFFFF_FFC0,
        load_addr: 0xFFFF_FF80,
        entry_addr: 0xFFFF_FF80,
        ..good
    };
    let image = aout_image(&code, a, &body);
    let err = load(&mut dirty_pc(), &image).unwrap_err();
    assert!(matches!(err, LoadError::AddressOverflow { .. }), "{err}");

    // Loads fine but outside RAM.
    let a = Aout {
        header_addr: 0x4000_0040,
        load_addr: 0x4000_0000,
        entry_addr: 0x4000_0000,
        ..good
    };
    let err = load(&mut dirty_pc(), &aout_image(&code, a, &body)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "multiboot a.out image [0x40000000,0x400000a0) does not fit in RAM"
    );
}

#[test]
fn header_not_found() {
    let err = load(&mut dirty_pc(), &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "multiboot header not found in the first 8192 bytes"
    );
    let err = load(&mut dirty_pc(), &[0x90; 10_000]).unwrap_err();
    assert_eq!(
        err,
        LoadError::MultibootHeaderNotFound {
            beyond_limit_at: None
        }
    );
    // Not 4-byte aligned.
    let mut image = vec![0; 2];
    image.extend_from_slice(&mb_header(0));
    image.resize(64, 0);
    let err = load(&mut dirty_pc(), &image).unwrap_err();
    assert_eq!(
        err,
        LoadError::MultibootHeaderNotFound {
            beyond_limit_at: None
        }
    );
}

#[test]
fn header_beyond_8192_bytes() {
    for offset in [0x2000usize, 0x1FFC, 0x1FF8] {
        let mut image = vec![0; offset];
        image.extend_from_slice(&mb_header(0));
        image.resize(0x3000, 0);
        let err = load(&mut dirty_pc(), &image).unwrap_err();
        assert_eq!(
            err,
            LoadError::MultibootHeaderNotFound {
                beyond_limit_at: Some(offset as u64)
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "multiboot header not found in the first 8192 bytes (a valid header at file \
                 offset {offset:#x} lies beyond the search limit)"
            )
        );
    }
    // The last place a plain header fits is found.
    let mut image = elf32_kernel(0);
    let hdr = image.len();
    image.resize(0x1FF4, 0);
    image.extend_from_slice(&mb_header(0));
    image[hdr - 14..hdr - 2].fill(0); // wipe the original header
    assert_eq!(
        find_header(&image),
        Ok(Header {
            offset: 0x1FF4,
            flags: 0
        })
    );
}

#[test]
fn aout_header_truncated_by_search_limit() {
    let mut image = vec![0; 0x1FF0];
    image.extend_from_slice(&mb_aout_header(
        0,
        Aout {
            header_addr: 0x10_1FF0,
            load_addr: 0x10_0000,
            load_end_addr: 0,
            bss_end_addr: 0,
            entry_addr: 0x10_0000,
        },
    ));
    let err = load(&mut dirty_pc(), &image).unwrap_err();
    assert_eq!(
        err.to_string(),
        "multiboot header at file offset 0x1ff0 needs 32 bytes but only 16 remain in the first \
         8192 bytes of the file"
    );
    // Also when the file itself ends inside the header.
    image.truncate(0x1FF0 + 14);
    let err = load(&mut dirty_pc(), &image).unwrap_err();
    assert_eq!(
        err,
        LoadError::MultibootHeaderTruncated {
            offset: 0x1FF0,
            needed: 32,
            available: 14
        }
    );
}

#[test]
fn bad_checksum() {
    let mut image = vec![0; 0x40];
    let mut h = mb_header(3);
    h[8] ^= 1;
    image.extend_from_slice(&h);
    image.resize(0x200, 0);
    let err = load(&mut dirty_pc(), &image).unwrap_err();
    assert!(matches!(
        err,
        LoadError::MultibootChecksum {
            offset: 0x40,
            flags: 3,
            ..
        }
    ));
    assert!(
        err.to_string()
            .starts_with("multiboot header checksum mismatch at file offset 0x40 "),
        "{err}"
    );
    // A valid header later in the search area wins.
    image.truncate(0x100);
    image.extend_from_slice(&mb_header(0));
    assert_eq!(
        find_header(&image),
        Ok(Header {
            offset: 0x100,
            flags: 0
        })
    );
}

#[test]
fn unsupported_required_flag() {
    for bit in [3u32, 7, 15] {
        let err = load(&mut dirty_pc(), &elf32_kernel(1 << bit | FLAG_PAGE_ALIGN)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "multiboot header at file offset 0x{:x} requires unsupported feature flags bit \
                 {bit} (flags {:#x})",
                err_offset(&err),
                1u32 << bit | 1
            )
        );
    }
}

fn err_offset(err: &LoadError) -> u64 {
    match err {
        LoadError::MultibootUnsupportedFlag { offset, .. } => *offset,
        _ => panic!("{err:?}"),
    }
}

#[test]
fn neither_elf_nor_aout() {
    let mut image = b"MZ\x90\x00".to_vec();
    image.extend_from_slice(&mb_header(0));
    let err = load(&mut dirty_pc(), &image).unwrap_err();
    assert_eq!(
        err.to_string(),
        "kernel is neither an ELF file nor a multiboot a.out-kludge image (header flags bit 16); \
         it starts with bytes 4d 5a 90 00"
    );
}

#[test]
fn truncated_program_header_table() {
    let mut text = mb_header(0);
    text.push(0xF4);
    let b = ElfBuilder::new32(0x10_000C)
        .seg(Seg::load(0x10_0000, &text))
        .seg(Seg::load(0x20_0000, b"data"))
        .phdrs_at_end();
    let mut image = b.build();
    let full = image.len();
    image.truncate(full - 4);
    let err = load(&mut dirty_pc(), &image).unwrap_err();
    assert_eq!(
        err,
        LoadError::PastEndOfFile {
            what: "ELF program header 1".into(),
            offset: (full - 32) as u64,
            len: 32,
            file_len: (full - 4) as u64,
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "ELF program header 1 extends past end of file (offset {:#x} + 0x20 > {:#x})",
            full - 32,
            full - 4
        )
    );
}

#[test]
fn segment_data_past_end_of_file() {
    let mut text = mb_header(0);
    text.push(0xF4);
    let b = ElfBuilder::new32(0x10_000C)
        .seg(Seg::load(0x10_0000, &text))
        .seg(Seg::load(0x20_0000, &[7; 0x400]));
    let mut image = b.build();
    image.truncate(image.len() - 1);
    let err = load(&mut dirty_pc(), &image).unwrap_err();
    let off = b.data_offset(1);
    assert_eq!(
        err.to_string(),
        format!(
            "ELF program header 1 file data (p_offset + p_filesz) extends past end of file \
             (offset {off:#x} + 0x400 > {:#x})",
            off + 0x3FF
        )
    );
}

#[test]
fn segment_outside_ram() {
    let mut text = mb_header(0);
    text.push(0xF4);
    for (paddr, memsz) in [
        (0x2000_0000u64, 0x8_0000u64),
        (0xFF_F000, 0x2000),
        (0x9_F000, 0x1000),
    ] {
        let image = ElfBuilder::new32(0x10_000C)
            .seg(Seg::load(0x10_0000, &text))
            .seg(Seg::load(paddr, b"d").memsz(memsz))
            .build();
        let mut mem = dirty_pc();
        let err = load(&mut mem, &image).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "ELF segment (program header 1) [{paddr:#x},{:#x}) does not fit in RAM",
                paddr + memsz
            )
        );
        assert_eq!(mem.writes, 0, "nothing written on error");
    }
}

#[test]
fn segment_address_overflow() {
    let mut text = mb_header(0);
    text.push(0xF4);
    let image = ElfBuilder::new32(0x10_000C)
        .seg(Seg::load(0x10_0000, &text))
        .seg(Seg::load(0xFFFF_F000, b"d").memsz(0x2000))
        .build();
    let err = load(&mut dirty_pc(), &image).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ELF program header 1 (p_paddr + p_memsz): 0xfffff000 + 0x2000 does not fit in the \
         0x100000000-byte physical address space"
    );
    // 64-bit fields that overflow u64.
    let image = ElfBuilder::new64(0x10_000C)
        .seg(Seg::load(0x10_0000, &text))
        .seg(Seg::load(u64::MAX - 0xFFF, b"d").memsz(0x2000))
        .build();
    let err = load(&mut dirty_pc(), &image).unwrap_err();
    assert!(matches!(err, LoadError::AddressOverflow { .. }), "{err}");
}

#[test]
fn bad_strings_and_no_room() {
    let image = elf32_kernel(0);
    let mut mem = dirty_pc();
    let err = load_multiboot(&mut mem, &image, "a\0b", &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "kernel command line contains a NUL byte at position 1"
    );
    let m = [
        Module {
            data: b"",
            args: "ok",
        },
        Module {
            data: b"",
            args: "\0",
        },
    ];
    let err = load_multiboot(&mut mem, &image, "", &m).unwrap_err();
    assert_eq!(
        err.to_string(),
        "string of module 1 contains a NUL byte at position 0"
    );

    let big = vec![0; RAM as usize];
    let m = [
        Module {
            data: b"small",
            args: "",
        },
        Module {
            data: &big,
            args: "",
        },
    ];
    let err = load_multiboot(&mut mem, &image, "", &m).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no room in usable RAM below 4 GiB for module 1 (0x1000000 bytes) at or above 0x202005"
    );
    // The information block itself does not fit.
    let nearly = vec![0; (RAM - 0x20_2000) as usize];
    let err = load_multiboot(
        &mut mem,
        &image,
        "",
        &[Module {
            data: &nearly,
            args: "",
        }],
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::NoRoom { .. }), "{err}");
    assert_eq!(mem.writes, 0, "nothing written on error");
}

#[test]
fn memory_map_of_machine_without_low_memory() {
    let mut mem = dirty_pc();
    mem.regions = vec![MemRegion::usable(0x10_0000, RAM - 0x10_0000)];
    let st = load(&mut mem, &elf32_kernel(0)).unwrap();
    let info = u64::from(st.ebx);
    assert_eq!(mem.u32(info + 4), 0);
    assert_eq!(read_mmap(&mem, info).len(), 3);
    // And one with RAM contiguous from 0.
    mem.regions = vec![MemRegion {
        start: 0,
        len: RAM,
        kind: MemKind::Usable,
    }];
    let st = load(&mut mem, &elf32_kernel(0)).unwrap();
    let info = u64::from(st.ebx);
    assert_eq!(mem.u32(info + 4), 640);
    assert_eq!(mem.u32(info + 8), (RAM as u32 - 0x10_0000) / 1024);
    assert_eq!(read_mmap(&mem, info), vec![(0, RAM, 1)]);
}

/// Random byte mutations of valid images: loading must return, never panic.
#[test]
fn mutated_images_never_panic() {
    let mut text = mb_header(FLAG_PAGE_ALIGN);
    text.extend_from_slice(&[0xF4; 20]);
    let bases = [
        elf32_kernel(FLAG_MEMORY_INFO),
        ElfBuilder::new64(0x40_000C)
            .seg(Seg::load(0x40_0000, &text).memsz(0x1000))
            .seg(Seg::load(0x50_0000, &[1; 64]).memsz(0x100))
            .build(),
        aout_image(
            &[0; 0x40],
            Aout {
                header_addr: 0x10_0040,
                load_addr: 0x10_0000,
                load_end_addr: 0x10_0080,
                bss_end_addr: 0x10_2000,
                entry_addr: 0x10_0000,
            },
            &[0x90; 0x100],
        ),
    ];
    let module = [Module {
        data: &[1, 2, 3],
        args: "m",
    }];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut mem = VecMemory::pc(RAM);
    let mut loaded = 0;
    for base in &bases {
        let hdr = find_header(base).unwrap().offset as usize;
        for _ in 0..3000 {
            let mut img = base.clone();
            for _ in 0..=rng.below(8) {
                let pos = match rng.below(3) {
                    0 => rng.below(img.len() as u64) as usize,
                    1 => rng.below(img.len().min(128) as u64) as usize,
                    _ => hdr + rng.below(32) as usize,
                };
                if pos < img.len() {
                    img[pos] = match rng.below(4) {
                        0 => 0,
                        1 => 0xFF,
                        _ => rng.next() as u8,
                    };
                }
            }
            if rng.below(2) == 0 {
                // Repair the checksum so the mutation reaches the loaders.
                if let (Some(flags), true) = (le_u32(&img, hdr as u64 + 4), hdr + 12 <= img.len()) {
                    let sum = 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags);
                    img[hdr + 8..hdr + 12].copy_from_slice(&sum.to_le_bytes());
                }
            }
            if rng.below(8) == 0 {
                img.truncate(rng.below(img.len() as u64 + 1) as usize);
            }
            if let Ok(st) = load_multiboot(&mut mem, &img, "c", &module) {
                loaded += 1;
                assert_eq!(st.eax, BOOTLOADER_MAGIC);
                assert!(u64::from(st.ebx) < RAM);
            }
        }
    }
    // Many mutations hit padding; the test would be weak if none loaded.
    assert!(loaded > 100, "only {loaded} mutated images loaded");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(1);
    let mut mem = VecMemory::pc(4 << 20);
    for _ in 0..2000 {
        let len = rng.below(300) as usize;
        let mut img: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len >= 64 && rng.below(2) == 0 {
            img[..4].copy_from_slice(b"\x7fELF");
            let at = (rng.below((len as u64 - 12) / 4) * 4) as usize;
            img[at.max(52)..]
                .iter_mut()
                .zip(mb_header(rng.next() as u32 & 0x1_0007))
                .for_each(|(d, s)| *d = s);
        }
        let _ = load_multiboot(&mut mem, &img, "", &[]);
    }
}
