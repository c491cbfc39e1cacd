use super::*;
use crate::testutil::{VecMemory, XorShift};

const MIB: u64 = 1 << 20;
const RAM: u64 = 32 * MIB;

/// The setup-header fields a test bzImage is built from.
#[derive(Clone)]
struct BzImage {
    setup_sects: u8,
    jump: u8,
    version: u16,
    loadflags: u8,
    xloadflags: u16,
    relocatable: u8,
    kernel_alignment: u32,
    pref_address: u64,
    init_size: u32,
    cmdline_size: u32,
    initrd_addr_max: u32,
    syssize: Option<u32>,
    setup_data: u64,
    payload: Vec<u8>,
}

impl BzImage {
    /// A relocatable 64-bit kernel like x86_64 defconfig: runs at 16 MiB,
    /// 2 MiB aligned, needs 8 MiB, protocol 2.15.
    fn new() -> Self {
        BzImage {
            setup_sects: 3,
            jump: 0x6A, // header ends at 0x26C, as in Linux 5.5+
            version: 0x020F,
            loadflags: LOADED_HIGH,
            xloadflags: XLF_KERNEL_64 | 0x2,
            relocatable: 1,
            kernel_alignment: 0x20_0000,
            pref_address: 0x100_0000,
            init_size: 0x80_0000,
            cmdline_size: 2047,
            initrd_addr_max: 0x7FFF_FFFF,
            syssize: None,
            setup_data: 0,
            payload: (0..0x3000u32).map(|i| (i * 13 + 7) as u8).collect(),
        }
    }

    fn kernel_offset(&self) -> usize {
        let sects = if self.setup_sects == 0 {
            4
        } else {
            self.setup_sects
        };
        (usize::from(sects) + 1) * 512
    }

    fn build(&self) -> Vec<u8> {
        let mut img = vec![0u8; self.kernel_offset()];
        let put = |img: &mut Vec<u8>, off: usize, bytes: &[u8]| {
            img[off..off + bytes.len()].copy_from_slice(bytes)
        };
        img[0x1F1] = self.setup_sects;
        let syssize = self
            .syssize
            .unwrap_or((self.payload.len() as u32).div_ceil(16));
        put(&mut img, 0x1F4, &syssize.to_le_bytes());
        put(&mut img, 0x1FA, &0xFFFFu16.to_le_bytes()); // vid_mode
        put(&mut img, 0x1FE, &0xAA55u16.to_le_bytes());
        put(&mut img, 0x200, &[0xEB, self.jump]);
        put(&mut img, 0x202, b"HdrS");
        put(&mut img, 0x206, &self.version.to_le_bytes());
        img[0x211] = self.loadflags;
        put(&mut img, 0x214, &0x10_0000u32.to_le_bytes());
        put(&mut img, 0x22C, &self.initrd_addr_max.to_le_bytes());
        put(&mut img, 0x230, &self.kernel_alignment.to_le_bytes());
        img[0x234] = self.relocatable;
        img[0x235] = 21; // min_alignment
        put(&mut img, 0x236, &self.xloadflags.to_le_bytes());
        put(&mut img, 0x238, &self.cmdline_size.to_le_bytes());
        put(&mut img, 0x248, &0x3ABu32.to_le_bytes()); // payload_offset
        put(&mut img, 0x250, &self.setup_data.to_le_bytes());
        put(&mut img, 0x258, &self.pref_address.to_le_bytes());
        put(&mut img, 0x260, &self.init_size.to_le_bytes());
        put(&mut img, 0x264, &0x190u32.to_le_bytes()); // handover_offset
        put(&mut img, 0x268, &0x1234u32.to_le_bytes()); // kernel_info_offset
        put(&mut img, 0x26C, &[0x66; 4]); // past the header: not copied
        img.extend_from_slice(&self.payload);
        img
    }
}

fn dirty_pc() -> VecMemory {
    let mut mem = VecMemory::pc(RAM);
    mem.ram.fill(0xAA);
    mem
}

fn u8_at(mem: &VecMemory, gpa: u64) -> u8 {
    mem.bytes(gpa, 1)[0]
}

fn u16_at(mem: &VecMemory, gpa: u64) -> u16 {
    u16::from_le_bytes(mem.bytes(gpa, 2).try_into().unwrap())
}

/// boot_params field at offset `off`.
fn bp32(mem: &VecMemory, off: u64) -> u32 {
    mem.u32(BOOT_PARAMS_ADDR + off)
}

/// The e820 table as (addr, size, type).
fn read_e820(mem: &VecMemory) -> Vec<(u64, u64, u32)> {
    let n = u64::from(u8_at(mem, BOOT_PARAMS_ADDR + 0x1E8));
    (0..n)
        .map(|i| {
            let a = BOOT_PARAMS_ADDR + 0x2D0 + 20 * i;
            (mem.u64(a), mem.u64(a + 8), mem.u32(a + 16))
        })
        .collect()
}

/// Translates a linear address through the page tables at `cr3` the way
/// the CPU does in 4-level paging; `None` if not present.
fn translate(mem: &VecMemory, cr3: u64, va: u64) -> Option<u64> {
    let mask = 0x000F_FFFF_FFFF_F000;
    let pml4e = mem.u64(cr3 + 8 * ((va >> 39) & 511));
    if pml4e & 1 == 0 {
        return None;
    }
    let pdpte = mem.u64((pml4e & mask) + 8 * ((va >> 30) & 511));
    if pdpte & 1 == 0 || pdpte & 0x80 != 0 {
        return None;
    }
    let pde = mem.u64((pdpte & mask) + 8 * ((va >> 21) & 511));
    if pde & 1 == 0 || pde & 0x80 == 0 {
        return None; // this loader only makes 2 MiB pages
    }
    assert_eq!(pde & 0x6, 0x2, "writable, supervisor");
    Some((pde & 0x000F_FFFF_FFE0_0000) | (va & 0x1F_FFFF))
}

#[test]
fn loads_kernel_cmdline_initrd_and_boot_params() {
    let mut mem = dirty_pc();
    let bz = BzImage::new();
    let image = bz.build();
    let initrd: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let cmdline = "console=ttyS0 earlyprintk=serial";
    let e = load_linux(&mut mem, &image, cmdline, Some(&initrd)).unwrap();

    // Entry state.
    assert_eq!(e.kernel_addr, 0x100_0000);
    assert_eq!(e.kernel_len, 0x80_0000);
    assert_eq!(e.rip, 0x100_0200);
    assert_eq!(e.rsi, 0x7000);
    assert_eq!(e.rsp, 0x8FF0);
    assert_eq!(e.cr3, 0x9000);
    assert_eq!((e.gdt_base, e.gdt_limit), (0x500, 31));
    assert_eq!((e.cs, e.ds), (0x10, 0x18));
    assert_eq!(e.cmdline_addr, 0x2_0000);
    // Highest page-aligned spot below the end of RAM.
    let rd_addr = (RAM - 5000) & !0xFFF;
    assert_eq!(e.initrd, Some((rd_addr, 5000)));

    // Protected-mode kernel, initrd and command line.
    assert_eq!(mem.bytes(0x100_0000, 0x3000), &bz.payload[..]);
    assert_eq!(u8_at(&mem, 0x100_3000), 0xAA, "nothing past the payload");
    assert_eq!(mem.bytes(rd_addr, 5000), &initrd[..]);
    assert_eq!(mem.cstr(0x2_0000), cmdline);

    // boot_params: the copied header...
    let b = BOOT_PARAMS_ADDR;
    assert_eq!(mem.bytes(b + 0x202, 4), b"HdrS");
    assert_eq!(u16_at(&mem, b + 0x206), 0x020F);
    assert_eq!(u16_at(&mem, b + 0x1FA), 0xFFFF, "vid_mode copied");
    assert_eq!(u16_at(&mem, b + 0x1FE), 0xAA55);
    assert_eq!(u8_at(&mem, b + 0x1F1), 3);
    assert_eq!(bp32(&mem, 0x1F4), 0x300);
    assert_eq!(bp32(&mem, 0x230), 0x20_0000);
    assert_eq!(u16_at(&mem, b + 0x236), 3);
    assert_eq!(bp32(&mem, 0x238), 2047);
    assert_eq!(mem.u64(b + 0x258), 0x100_0000);
    assert_eq!(bp32(&mem, 0x260), 0x80_0000);
    assert_eq!(bp32(&mem, 0x264), 0x190);
    assert_eq!(bp32(&mem, 0x268), 0x1234);
    assert_eq!(bp32(&mem, 0x26C), 0, "bytes past the header end not copied");
    // ... and the loader's fields.
    assert_eq!(u8_at(&mem, b + 0x210), 0xFF, "type_of_loader");
    assert_eq!(u8_at(&mem, b + 0x211), 0x81, "LOADED_HIGH | CAN_USE_HEAP");
    assert_eq!(bp32(&mem, 0x214), 0x100_0000, "code32_start");
    assert_eq!(bp32(&mem, 0x218), rd_addr as u32);
    assert_eq!(bp32(&mem, 0x21C), 5000);
    assert_eq!(u16_at(&mem, b + 0x224), 0xFE00, "heap_end_ptr");
    assert_eq!(u16_at(&mem, b + 0x226), 0, "ext_loader_ver/type");
    assert_eq!(bp32(&mem, 0x228), 0x2_0000, "cmd_line_ptr");
    assert_eq!(mem.u64(b + 0x250), 0, "setup_data");
    // High halves, acpi_rsdp_addr, sentinel and the rest of the first part
    // of the page are zero.
    assert!(mem.bytes(b, 0x1E8).iter().all(|&x| x == 0));
    assert_eq!(u8_at(&mem, b + 0x1EF), 0, "sentinel");
    // The e820 table.
    assert_eq!(
        read_e820(&mem),
        vec![
            (0, 0x9_FC00, 1),
            (0x9_FC00, 0x400, 2),
            (0xE_0000, 0x2_0000, 2),
            (0x10_0000, RAM - 0x10_0000, 1),
            (0xFEC0_0000, 0x1000, 2),
            (0xFEE0_0000, 0x1000, 2),
        ]
    );
    let table_end = b + 0x2D0 + 6 * 20;
    assert!(mem
        .bytes(table_end, b + 0x1000 - table_end)
        .iter()
        .all(|&x| x == 0));

    // GDT.
    assert_eq!(mem.u64(0x500), 0);
    assert_eq!(mem.u64(0x508), 0);
    let code = mem.u64(0x510);
    let data = mem.u64(0x518);
    assert_eq!((code >> 40) & 0xFF, 0x9B, "present, DPL 0, execute/read");
    assert_eq!((code >> 52) & 0xF, 0xA, "G and L, not D");
    assert_eq!((data >> 40) & 0xFF, 0x93, "present, DPL 0, read/write");
    assert_eq!((data >> 52) & 0xF, 0xC, "G and D/B");
    for d in [code, data] {
        let limit = (d & 0xFFFF) | ((d >> 32) & 0xF_0000);
        let base = ((d >> 16) & 0xFF_FFFF) | ((d >> 32) & 0xFF00_0000);
        assert_eq!((base, limit), (0, 0xF_FFFF));
    }

    // Identity map of the first 4 GiB, nothing above.
    for va in [
        0,
        0x7000,
        0x2_0000,
        0x100_0200,
        rd_addr,
        0x1234_5678,
        0xFEE0_0000,
        0xFFFF_FFFF,
    ] {
        assert_eq!(translate(&mem, e.cr3, va), Some(va), "{va:#x}");
    }
    assert_eq!(translate(&mem, e.cr3, 1 << 32), None);
    assert_eq!(translate(&mem, e.cr3, 1 << 39), None);
}

#[test]
fn setup_sects_zero_means_four() {
    let mut mem = dirty_pc();
    let mut bz = BzImage::new();
    bz.setup_sects = 0;
    let image = bz.build();
    assert_eq!(parse_setup_header(&image).unwrap().kernel_offset, 0xA00);
    load_linux(&mut mem, &image, "", None).unwrap();
    assert_eq!(mem.bytes(0x100_0000, 0x3000), &bz.payload[..]);
    // Raw value kept in boot_params, as the kernel wrote it.
    assert_eq!(u8_at(&mem, BOOT_PARAMS_ADDR + 0x1F1), 0);
}

#[test]
fn header_fields_parsed() {
    let h = parse_setup_header(&BzImage::new().build()).unwrap();
    assert_eq!(
        h,
        SetupHeader {
            setup_sects: 3,
            syssize: 0x300,
            version: 0x020F,
            loadflags: 1,
            code32_start: 0x10_0000,
            initrd_addr_max: 0x7FFF_FFFF,
            kernel_alignment: 0x20_0000,
            relocatable: true,
            xloadflags: 3,
            cmdline_size: 2047,
            pref_address: 0x100_0000,
            init_size: 0x80_0000,
            handover_offset: 0x190,
            header_end: 0x26C,
            kernel_offset: 0x800,
            kernel_len: 0x3000,
        }
    );
    // A jump byte pointing far ahead: the copy stops at 0x290.
    let mut bz = BzImage::new();
    bz.jump = 0xFF;
    assert_eq!(parse_setup_header(&bz.build()).unwrap().header_end, 0x290);
}

#[test]
fn no_initrd_and_empty_initrd() {
    for initrd in [None, Some(&[][..])] {
        let mut mem = dirty_pc();
        let e = load_linux(&mut mem, &BzImage::new().build(), "", initrd).unwrap();
        assert_eq!(e.initrd, None);
        assert_eq!(bp32(&mem, 0x218), 0);
        assert_eq!(bp32(&mem, 0x21C), 0);
        assert_eq!(mem.cstr(0x2_0000), "");
    }
}

#[test]
fn initrd_respects_initrd_addr_max_and_kernel() {
    // initrd_addr_max just above the kernel's range: the space between the
    // kernel end and the limit is too small, so the initrd goes below the
    // kernel.
    let mut bz = BzImage::new();
    bz.initrd_addr_max = 0x180_0FFF; // may occupy up to 24 MiB + 4 KiB
    let mut mem = dirty_pc();
    let initrd = vec![0x5A; 0x2000];
    let e = load_linux(&mut mem, &bz.build(), "", Some(&initrd)).unwrap();
    assert_eq!(e.initrd, Some((0x100_0000 - 0x2000, 0x2000)));

    // Room above the kernel below the limit: right at the limit.
    bz.initrd_addr_max = 0x180_2FFF;
    let mut mem = dirty_pc();
    let e = load_linux(&mut mem, &bz.build(), "", Some(&initrd)).unwrap();
    assert_eq!(e.initrd, Some((0x180_1000, 0x2000)));
    assert!(e.initrd.unwrap().0 >= e.kernel_addr + e.kernel_len);

    // Unaligned size: end of the initrd below the limit, start page-aligned.
    let mut mem = dirty_pc();
    let e = load_linux(&mut mem, &bz.build(), "", Some(&[1; 0x1801])).unwrap();
    assert_eq!(e.initrd, Some((0x180_1000, 0x1801)));
}

#[test]
fn initrd_that_does_not_fit() {
    let mut mem = VecMemory::pc(RAM);
    let initrd = vec![0; 16 * MIB as usize];
    let err = load_linux(&mut mem, &BzImage::new().build(), "", Some(&initrd)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "initrd (0x1000000 bytes) does not fit in usable RAM in [0x100000,0x80000000) \
         (the limit is initrd_addr_max + 1, at most 4 GiB) outside the kernel's \
         [0x1000000,0x1800000)"
    );
    assert_eq!(mem.writes, 0);
}

#[test]
fn kernel_placement() {
    // Unaligned pref_address: rounded up to kernel_alignment.
    let mut bz = BzImage::new();
    bz.pref_address = 0x100_1000;
    let mut mem = dirty_pc();
    let e = load_linux(&mut mem, &bz.build(), "", None).unwrap();
    assert_eq!(e.kernel_addr, 0x120_0000);
    assert_eq!(e.rip, 0x120_0200);

    // A hole at the preferred address: the next aligned fit above it.
    let mut mem = dirty_pc();
    mem.regions = vec![
        MemRegion::usable(0, 0x9_FC00),
        MemRegion::usable(0x10_0000, 0x100_0000 - 0x10_0000),
        MemRegion::reserved(0x100_0000, 0x10_1000),
        MemRegion::usable(0x110_1000, RAM - 0x110_1000),
    ];
    let e = load_linux(&mut mem, &BzImage::new().build(), "", None).unwrap();
    assert_eq!(e.kernel_addr, 0x120_0000);

    // init_size smaller than the payload: the payload's size counts.
    let mut bz = BzImage::new();
    bz.init_size = 0x100;
    let mut mem = dirty_pc();
    assert_eq!(
        load_linux(&mut mem, &bz.build(), "", None)
            .unwrap()
            .kernel_len,
        0x3000
    );

    // Non-relocatable: exactly at pref_address; pref_address 0 means 1 MiB.
    let mut bz = BzImage::new();
    bz.relocatable = 0;
    bz.kernel_alignment = 0; // ignored when not relocatable
    bz.pref_address = 0x30_0000;
    let mut mem = dirty_pc();
    assert_eq!(
        load_linux(&mut mem, &bz.build(), "", None)
            .unwrap()
            .kernel_addr,
        0x30_0000
    );
    bz.pref_address = 0;
    let mut mem = dirty_pc();
    let e = load_linux(&mut mem, &bz.build(), "", None).unwrap();
    assert_eq!(e.kernel_addr, 0x10_0000);
    assert_eq!(bp32(&mem, 0x214), 0x10_0000);
}

#[test]
fn kernel_that_does_not_fit() {
    // Relocatable kernels never go below pref_address.
    let mut mem = VecMemory::pc(16 * MIB);
    let err = load_linux(&mut mem, &BzImage::new().build(), "", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Linux kernel (pref_address 0x1000000, init_size 0x800000, 0x3000 bytes in the file) \
         at or above its aligned preferred address [0x1000000,0x1800000) does not fit in RAM"
    );
    let mut bz = BzImage::new();
    bz.relocatable = 0;
    let err = load_linux(&mut mem, &bz.build(), "", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "non-relocatable Linux kernel (pref_address 0x1000000, init_size 0x800000, 0x3000 bytes \
         in the file) [0x1000000,0x1800000) does not fit in RAM"
    );
    bz.pref_address = 0x8_0000;
    let err = load_linux(&mut mem, &bz.build(), "", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Linux setup header field pref_address = 0x80000 (file offset 0x258): a \
         non-relocatable kernel must run at or above 1 MiB"
    );
    // Beyond 4 GiB even if the machine had RAM there.
    let mut bz = BzImage::new();
    bz.pref_address = 0xFFE0_0000;
    let mut mem = VecMemory::pc(RAM);
    mem.regions.push(MemRegion::usable(0xFFE0_0000, 0x100_0000));
    assert!(matches!(
        load_linux(&mut mem, &bz.build(), "", None),
        Err(LoadError::DoesNotFitInRam { .. })
    ));
    assert_eq!(mem.writes, 0);
}

#[test]
fn header_errors() {
    let good = BzImage::new().build();
    let err = |img: &[u8]| {
        let mut mem = VecMemory::pc(RAM);
        let e = load_linux(&mut mem, img, "", None).unwrap_err();
        assert_eq!(mem.writes, 0, "{e}");
        e.to_string()
    };

    assert_eq!(
        err(&good[..0x267]),
        "Linux setup header (boot protocol 2.12) extends past end of file \
         (offset 0x1f1 + 0x77 > 0x267)"
    );
    assert_eq!(
        err(&[]),
        "Linux setup header (boot protocol 2.12) extends past end of file \
         (offset 0x1f1 + 0x77 > 0x0)"
    );

    let mut img = good.clone();
    img[0x202..0x206].copy_from_slice(b"HdrX");
    assert_eq!(
        err(&img),
        "Linux setup header field header = 0x58726448 (file offset 0x202): expected \"HdrS\" \
         (0x53726448): not a Linux bzImage"
    );

    let mut bz = BzImage::new();
    bz.version = 0x020B;
    assert_eq!(
        err(&bz.build()),
        "Linux setup header field version = 0x20b (file offset 0x206): boot protocol 2.11 is \
         too old: the 64-bit entry needs 2.12 (Linux 3.8) or later, which has xloadflags"
    );
    bz.version = 0x0206;
    assert!(err(&bz.build()).contains("boot protocol 2.06 is too old"));

    let mut bz = BzImage::new();
    bz.jump = 0x60;
    assert_eq!(
        err(&bz.build()),
        "Linux setup header field jump = 0x60eb (file offset 0x200): the header ends at \
         0x202 + 0x60 = 0x262, before 0x268 where protocol 2.12 fields end"
    );

    let mut bz = BzImage::new();
    bz.loadflags = 0x80;
    assert_eq!(
        err(&bz.build()),
        "Linux setup header field loadflags = 0x80 (file offset 0x211): LOADED_HIGH (bit 0) \
         is clear: a zImage loaded at 0x10000, not supported"
    );

    let mut bz = BzImage::new();
    bz.xloadflags = 0x2;
    assert_eq!(
        err(&bz.build()),
        "Linux setup header field xloadflags = 0x2 (file offset 0x236): XLF_KERNEL_64 \
         (bit 0) is clear: the kernel has no 64-bit entry point"
    );

    let mut bz = BzImage::new();
    bz.kernel_alignment = 0x30_0000;
    assert_eq!(
        err(&bz.build()),
        "Linux setup header field kernel_alignment = 0x300000 (file offset 0x230): must be a \
         power of two for a relocatable kernel"
    );
    bz.kernel_alignment = 0;
    assert!(err(&bz.build()).contains("kernel_alignment = 0x0"));

    let mut bz = BzImage::new();
    bz.syssize = Some(0);
    assert_eq!(
        err(&bz.build()),
        "Linux setup header field syssize = 0x0 (file offset 0x1f4): the protected-mode \
         kernel is empty"
    );

    // Payload shorter than syssize says (cut mid-way).
    let img = BzImage::new().build();
    assert_eq!(
        err(&img[..0x800 + 0x2000]),
        "protected-mode kernel (setup_sects 3 at file offset 0x1f1, syssize 0x300 paragraphs \
         at 0x1f4) extends past end of file (offset 0x800 + 0x3000 > 0x2800)"
    );
    // No payload at all (setup sectors only).
    assert!(err(&img[..0x800]).starts_with("protected-mode kernel"));
    // A file cut inside the last paragraph is accepted (build.c rounds up).
    let mut mem = VecMemory::pc(RAM);
    load_linux(&mut mem, &img[..img.len() - 3], "", None).unwrap();
    assert_eq!(mem.bytes(0x100_0000, 0x2FFD), &img[0x800..img.len() - 3]);
}

#[test]
fn command_line_rules() {
    let mut bz = BzImage::new();
    bz.cmdline_size = 10;
    let image = bz.build();
    let mut mem = dirty_pc();
    load_linux(&mut mem, &image, "0123456789", None).unwrap();
    assert_eq!(mem.cstr(0x2_0000), "0123456789");

    let mut mem = VecMemory::pc(RAM);
    let err = load_linux(&mut mem, &image, "0123456789A", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "kernel command line is 11 bytes, longer than the kernel's cmdline_size of 10 bytes \
         (setup header, file offset 0x238)"
    );
    let err = load_linux(&mut mem, &image, "ro\0ot", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "kernel command line contains a NUL byte at position 2"
    );

    // A command line longer than the room below the EBDA.
    let mut bz = BzImage::new();
    bz.cmdline_size = u32::MAX;
    let long = "x".repeat(0x8_0000);
    let err = load_linux(&mut mem, &bz.build(), &long, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "kernel command line [0x20000,0xa0001) does not fit in RAM"
    );
    assert_eq!(mem.writes, 0);
}

#[test]
fn low_structures_need_usable_ram() {
    let mut mem = VecMemory::pc(RAM);
    mem.regions = vec![MemRegion::usable(0x10_0000, RAM - 0x10_0000)];
    let err = load_linux(&mut mem, &BzImage::new().build(), "", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Linux boot GDT [0x500,0x520) does not fit in RAM"
    );
    assert_eq!(mem.writes, 0);
}

#[test]
fn e820_from_machine_regions() {
    // As hindsight's machine reports them: EBDA..1 MiB reserved, RAM split
    // around the 32-bit hole.
    let regions = [
        MemRegion::usable(0, 0x9_FC00),
        MemRegion::reserved(0x9_FC00, 0x10_0000 - 0x9_FC00),
        MemRegion::usable(0x10_0000, 0xC000_0000 - 0x10_0000),
        MemRegion::usable(1 << 32, 1 << 30),
        MemRegion::usable(0x5000_0000, 0), // empty: dropped
    ];
    let map: Vec<(u64, u64, MemKind)> = e820_map(&regions)
        .iter()
        .map(|r| (r.start, r.len, r.kind))
        .collect();
    assert_eq!(
        map,
        vec![
            (0, 0x9_FC00, MemKind::Usable),
            (0x9_FC00, 0x6_0400, MemKind::Reserved),
            (0x10_0000, 0xBFF0_0000, MemKind::Usable),
            (0xFEC0_0000, 0x1000, MemKind::Reserved),
            (0xFEE0_0000, 0x1000, MemKind::Reserved),
            (1 << 32, 1 << 30, MemKind::Usable),
        ]
    );
}

#[test]
fn too_many_memory_regions() {
    let mut mem = VecMemory::pc(RAM);
    // 130 one-page reserved holes in high memory.
    for i in 0..130 {
        mem.regions
            .push(MemRegion::reserved(0x1_0000_0000 + i * 0x2000, 0x1000));
    }
    let err = load_linux(&mut mem, &BzImage::new().build(), "", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "memory map needs 136 entries but the table holds at most 128"
    );
    assert_eq!(mem.writes, 0);
}

#[test]
fn mutated_images_never_panic() {
    let mut small = BzImage::new();
    small.init_size = 0x1_0000;
    small.pref_address = 0x20_0000;
    small.payload.truncate(0x200);
    let bases = [BzImage::new().build(), small.build()];
    let initrd = [1u8, 2, 3];
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let mut mem = VecMemory::pc(RAM);
    let mut loaded = 0;
    for round in 0..3000 {
        let mut img = bases[round % bases.len()].clone();
        for _ in 0..=rng.below(6) {
            // Mostly hit the setup header, sometimes anywhere.
            let pos = if rng.below(4) == 0 {
                rng.below(img.len() as u64)
            } else {
                0x1F1 + rng.below(0x80)
            } as usize;
            img[pos] = match rng.below(4) {
                0 => 0,
                1 => 0xFF,
                _ => rng.next() as u8,
            };
        }
        if rng.below(8) == 0 {
            img.truncate(rng.below(img.len() as u64 + 1) as usize);
        }
        let cmdline = "c".repeat(rng.below(64) as usize);
        let rd = if rng.below(2) == 0 {
            Some(&initrd[..])
        } else {
            None
        };
        match load_linux(&mut mem, &img, &cmdline, rd) {
            Ok(e) => {
                loaded += 1;
                assert_eq!(e.rip, e.kernel_addr + 0x200);
                assert!(e.kernel_addr >= 0x10_0000 && e.kernel_addr + e.kernel_len <= RAM);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    assert!(loaded > 100, "only {loaded} mutated images loaded");
}
