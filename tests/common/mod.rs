//! ELF32 multiboot kernels for the end-to-end tests (`tests/cli_run.rs`,
//! `tests/gdb.rs`): the ELF bytes written by hand around code assembled
//! with iced-x86. The kernel is one PT_LOAD segment covering the file's
//! start at physical [`LOAD`] (plus 4 KiB of bss), with the multiboot
//! header at [`MB_OFF`] and the entry point at [`CODE_OFF`].
//!
//! [`elf32_multiboot_with_symbols`] adds what a debugger reads: section
//! headers (`.text`, `.data`), a symbol table (`.symtab`/`.strtab`), and a
//! minimal DWARF 4 compile unit describing `int` variables, so that
//! `gdb -ex 'file kernel.elf'` knows the functions by name and can
//! `print`/`watch` the variables without casts.

// Each test program uses a different part of this module.
#![allow(dead_code)]

/// Physical (and virtual) load address of the kernel file.
pub const LOAD: u64 = 0x10_0000;
/// File offset of the multiboot header.
pub const MB_OFF: usize = 0x60;
/// File offset of the entry point.
pub const CODE_OFF: usize = 0x80;
/// The multiboot v1 header magic.
pub const MB_MAGIC: u32 = 0x1BAD_B002;
/// Bytes of zeroed memory after the file's image.
const BSS: u32 = 0x1000;

/// The checksum that makes a multiboot header with `flags` valid.
pub fn good_checksum(flags: u32) -> u32 {
    0u32.wrapping_sub(MB_MAGIC.wrapping_add(flags))
}

fn put16(f: &mut [u8], o: usize, v: u16) {
    f[o..o + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(f: &mut [u8], o: usize, v: u32) {
    f[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

fn align(f: &mut Vec<u8>, to: usize) {
    f.resize(f.len().div_ceil(to) * to, 0);
}

/// ELF32 executable for i386: one PT_LOAD segment covering the whole file
/// at physical LOAD (plus 4 KiB of bss), the multiboot header (magic, flags,
/// checksum) at MB_OFF, `code` at CODE_OFF (the entry point).
pub fn elf32_multiboot(code: &[u8], flags: u32, checksum: u32) -> Vec<u8> {
    let mut f = vec![0u8; CODE_OFF];
    f.extend_from_slice(code);
    let len = f.len() as u32;
    elf_header(&mut f, len, 0, 0, 0);
    put32(&mut f, MB_OFF, MB_MAGIC);
    put32(&mut f, MB_OFF + 4, flags);
    put32(&mut f, MB_OFF + 8, checksum);
    f
}

/// Writes the ELF header and the PT_LOAD program header (file bytes
/// `0..loaded`) into `f`; `shoff`/`shnum`/`shstrndx` locate the section
/// headers (0 for none).
fn elf_header(f: &mut [u8], loaded: u32, shoff: u32, shnum: u16, shstrndx: u16) {
    let entry = LOAD as u32 + CODE_OFF as u32;
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 1; // ELFCLASS32
    f[5] = 1; // ELFDATA2LSB
    f[6] = 1; // EV_CURRENT
    put16(f, 16, 2); // e_type = ET_EXEC
    put16(f, 18, 3); // e_machine = EM_386
    put32(f, 20, 1); // e_version
    put32(f, 24, entry); // e_entry
    put32(f, 28, 52); // e_phoff
    put32(f, 32, shoff); // e_shoff
    put32(f, 36, 0); // e_flags
    put16(f, 40, 52); // e_ehsize
    put16(f, 42, 32); // e_phentsize
    put16(f, 44, 1); // e_phnum
    put16(f, 46, 40); // e_shentsize
    put16(f, 48, shnum); // e_shnum
    put16(f, 50, shstrndx); // e_shstrndx
    let ph = 52; // Program header 0: PT_LOAD.
    put32(f, ph, 1); // p_type
    put32(f, ph + 4, 0); // p_offset
    put32(f, ph + 8, LOAD as u32); // p_vaddr
    put32(f, ph + 12, LOAD as u32); // p_paddr
    put32(f, ph + 16, loaded); // p_filesz
    put32(f, ph + 20, loaded + BSS); // p_memsz
    put32(f, ph + 24, 7); // p_flags = RWX
    put32(f, ph + 28, 0x1000); // p_align
}

/// A symbol of [`elf32_multiboot_with_symbols`].
#[derive(Clone, Debug)]
pub struct Symbol {
    /// Its name.
    pub name: String,
    /// Its (virtual = physical) address.
    pub addr: u32,
    /// Its size in bytes.
    pub size: u32,
    /// A function (`STT_FUNC` in `.text`), else a data object
    /// (`STT_OBJECT` in `.data`, described to gdb as an `int`).
    pub func: bool,
}

impl Symbol {
    /// A function symbol.
    pub fn func(name: &str, addr: u64, size: u64) -> Symbol {
        Symbol {
            name: name.into(),
            addr: addr as u32,
            size: size as u32,
            func: true,
        }
    }

    /// A 4-byte `int` variable.
    pub fn int(name: &str, addr: u64) -> Symbol {
        Symbol {
            name: name.into(),
            addr: addr as u32,
            size: 4,
            func: false,
        }
    }
}

const SHT_PROGBITS: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;
const SHF_WRITE: u32 = 1;
const SHF_ALLOC: u32 = 2;
const SHF_EXECINSTR: u32 = 4;

/// An ELF32 section header.
#[derive(Clone, Copy, Default)]
struct Shdr {
    name: u32,
    ty: u32,
    flags: u32,
    addr: u32,
    offset: usize,
    size: usize,
    link: u32,
    info: u32,
    align: u32,
    entsize: u32,
}

impl Shdr {
    fn bytes(&self) -> [u8; 40] {
        let mut h = [0u8; 40];
        let fields = [
            self.name,
            self.ty,
            self.flags,
            self.addr,
            self.offset as u32,
            self.size as u32,
            self.link,
            self.info,
            self.align,
            self.entsize,
        ];
        for (i, v) in fields.into_iter().enumerate() {
            put32(&mut h, 4 * i, v);
        }
        h
    }
}

/// A NUL-separated string table; `add` returns the offset of a name.
#[derive(Default)]
struct StrTab(Vec<u8>);

impl StrTab {
    fn new() -> StrTab {
        StrTab(vec![0])
    }

    fn add(&mut self, s: &str) -> u32 {
        let at = self.0.len() as u32;
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        at
    }
}

/// DWARF 4 `.debug_abbrev` and `.debug_info` for one compile unit with a
/// base type `int` and each of `vars` as a global `int` at its address.
fn dwarf_ints(vars: &[&Symbol]) -> (Vec<u8>, Vec<u8>) {
    const DW_TAG_COMPILE_UNIT: u8 = 0x11;
    const DW_TAG_BASE_TYPE: u8 = 0x24;
    const DW_TAG_VARIABLE: u8 = 0x34;
    const DW_AT_NAME: u8 = 0x03;
    const DW_AT_LANGUAGE: u8 = 0x13;
    const DW_AT_ENCODING: u8 = 0x3e;
    const DW_AT_BYTE_SIZE: u8 = 0x0b;
    const DW_AT_TYPE: u8 = 0x49;
    const DW_AT_EXTERNAL: u8 = 0x3f;
    const DW_AT_LOCATION: u8 = 0x02;
    const DW_FORM_STRING: u8 = 0x08;
    const DW_FORM_DATA1: u8 = 0x0b;
    const DW_FORM_REF4: u8 = 0x13;
    const DW_FORM_FLAG_PRESENT: u8 = 0x19;
    const DW_FORM_EXPRLOC: u8 = 0x18;
    const DW_LANG_C99: u8 = 0x0c;
    const DW_ATE_SIGNED: u8 = 0x05;
    const DW_OP_ADDR: u8 = 0x03;
    #[rustfmt::skip]
    let abbrev = vec![
        1, DW_TAG_COMPILE_UNIT, 1,
        DW_AT_NAME, DW_FORM_STRING, DW_AT_LANGUAGE, DW_FORM_DATA1, 0, 0,
        2, DW_TAG_BASE_TYPE, 0,
        DW_AT_NAME, DW_FORM_STRING, DW_AT_ENCODING, DW_FORM_DATA1,
        DW_AT_BYTE_SIZE, DW_FORM_DATA1, 0, 0,
        3, DW_TAG_VARIABLE, 0,
        DW_AT_NAME, DW_FORM_STRING, DW_AT_TYPE, DW_FORM_REF4,
        DW_AT_EXTERNAL, DW_FORM_FLAG_PRESENT, DW_AT_LOCATION, DW_FORM_EXPRLOC, 0, 0,
        0,
    ];
    // Unit header: length (filled in last), version 4, abbrev offset 0,
    // address size 4.
    let mut info = vec![0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 4];
    info.push(1);
    info.extend_from_slice(b"kernel.c\0");
    info.push(DW_LANG_C99);
    let int_type = info.len() as u32;
    info.push(2);
    info.extend_from_slice(b"int\0");
    info.extend_from_slice(&[DW_ATE_SIGNED, 4]);
    for v in vars {
        info.push(3);
        info.extend_from_slice(v.name.as_bytes());
        info.push(0);
        info.extend_from_slice(&int_type.to_le_bytes());
        info.extend_from_slice(&[5, DW_OP_ADDR]);
        info.extend_from_slice(&v.addr.to_le_bytes());
    }
    info.push(0); // end of the unit's children
    let len = (info.len() - 4) as u32;
    info[..4].copy_from_slice(&len.to_le_bytes());
    (abbrev, info)
}

/// Like [`elf32_multiboot`] (flags 3: page-aligned modules, memory
/// information), with `image` at CODE_OFF: its first `text_len` bytes are
/// code (`.text`), the rest data (`.data`). `symbols` go into `.symtab`,
/// and the data symbols into DWARF as `int` variables.
pub fn elf32_multiboot_with_symbols(image: &[u8], text_len: usize, symbols: &[Symbol]) -> Vec<u8> {
    let flags = 3;
    let mut f = elf32_multiboot(image, flags, good_checksum(flags));
    let loaded = f.len() as u32;
    let text_addr = LOAD as u32 + CODE_OFF as u32;
    let data_addr = text_addr + text_len as u32;

    let vars: Vec<&Symbol> = symbols.iter().filter(|s| !s.func).collect();
    let (abbrev, info) = dwarf_ints(&vars);
    let abbrev_off = f.len();
    f.extend_from_slice(&abbrev);
    let info_off = f.len();
    f.extend_from_slice(&info);

    // Section indices, as the headers are written below.
    const TEXT: u16 = 1;
    const DATA: u16 = 2;
    const STRTAB: u32 = 6;
    let mut strtab = StrTab::new();
    align(&mut f, 4);
    let symtab_off = f.len();
    f.extend_from_slice(&[0; 16]); // the null symbol
    for s in symbols {
        let mut e = [0u8; 16];
        put32(&mut e, 0, strtab.add(&s.name));
        put32(&mut e, 4, s.addr);
        put32(&mut e, 8, s.size);
        e[12] = (1 << 4) | if s.func { 2 } else { 1 }; // STB_GLOBAL, STT_FUNC/OBJECT
        put16(&mut e, 14, if s.func { TEXT } else { DATA });
        f.extend_from_slice(&e);
    }
    let symtab_len = f.len() - symtab_off;
    let strtab_off = f.len();
    f.extend_from_slice(&strtab.0);

    let mut shstr = StrTab::new();
    let mut name = |n: &str| shstr.add(n);
    let progbits = |name: u32, offset: usize, size: usize| Shdr {
        name,
        ty: SHT_PROGBITS,
        offset,
        size,
        align: 1,
        ..Shdr::default()
    };
    let strings = |name: u32, offset: usize, size: usize| Shdr {
        ty: SHT_STRTAB,
        ..progbits(name, offset, size)
    };
    let sections = [
        Shdr::default(),
        Shdr {
            flags: SHF_ALLOC | SHF_EXECINSTR,
            addr: text_addr,
            align: 16,
            ..progbits(name(".text"), CODE_OFF, text_len)
        },
        Shdr {
            flags: SHF_ALLOC | SHF_WRITE,
            addr: data_addr,
            align: 4,
            ..progbits(name(".data"), CODE_OFF + text_len, image.len() - text_len)
        },
        progbits(name(".debug_abbrev"), abbrev_off, abbrev.len()),
        progbits(name(".debug_info"), info_off, info.len()),
        Shdr {
            ty: SHT_SYMTAB,
            link: STRTAB,
            info: 1, // the first global symbol
            align: 4,
            entsize: 16,
            ..progbits(name(".symtab"), symtab_off, symtab_len)
        },
        strings(name(".strtab"), strtab_off, strtab.0.len()),
        strings(name(".shstrtab"), 0, 0), // placed below
    ];
    let shstr_off = f.len();
    f.extend_from_slice(&shstr.0);
    let mut sections = sections;
    sections[7].offset = shstr_off;
    sections[7].size = shstr.0.len();
    align(&mut f, 4);
    let shoff = f.len();
    for sh in &sections {
        f.extend_from_slice(&sh.bytes());
    }
    elf_header(&mut f, loaded, shoff as u32, sections.len() as u16, 7);
    f
}
