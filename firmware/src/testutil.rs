//! Test helpers: a Vec-backed guest memory, image builders, a tiny PRNG.

use crate::memory::RamMap;
use crate::multiboot::HEADER_MAGIC;
use crate::{GuestMemory, LoadError, MemRegion};

/// Guest RAM in a `Vec`, laid out like a PC: `[0, 0x9FC00)` and
/// `[1 MiB, size)` usable.
pub struct VecMemory {
    pub ram: Vec<u8>,
    pub regions: Vec<MemRegion>,
    /// Number of successful `write` / `fill` calls.
    pub writes: usize,
}

impl VecMemory {
    pub fn pc(size: u64) -> Self {
        VecMemory {
            ram: vec![0; size as usize],
            regions: vec![
                MemRegion::usable(0, 0x9_FC00),
                MemRegion::usable(0x10_0000, size - 0x10_0000),
            ],
            writes: 0,
        }
    }

    fn check(&self, gpa: u64, len: u64) -> Result<std::ops::Range<usize>, LoadError> {
        let end = gpa
            .checked_add(len)
            .filter(|&end| RamMap::new(&self.regions).contains(gpa, end))
            .filter(|&end| end <= self.ram.len() as u64)
            .ok_or(LoadError::OutsideRam { gpa, len })?;
        Ok(gpa as usize..end as usize)
    }

    pub fn bytes(&self, gpa: u64, len: u64) -> &[u8] {
        &self.ram[gpa as usize..(gpa + len) as usize]
    }

    pub fn u32(&self, gpa: u64) -> u32 {
        u32::from_le_bytes(self.bytes(gpa, 4).try_into().unwrap())
    }

    pub fn u64(&self, gpa: u64) -> u64 {
        u64::from_le_bytes(self.bytes(gpa, 8).try_into().unwrap())
    }

    /// The NUL-terminated string at `gpa`.
    pub fn cstr(&self, gpa: u64) -> String {
        let tail = &self.ram[gpa as usize..];
        let len = tail.iter().position(|&b| b == 0).expect("unterminated");
        String::from_utf8(tail[..len].to_vec()).unwrap()
    }
}

impl GuestMemory for VecMemory {
    fn ram_regions(&self) -> Vec<MemRegion> {
        self.regions.clone()
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), LoadError> {
        let r = self.check(gpa, data.len() as u64)?;
        self.ram[r].copy_from_slice(data);
        self.writes += 1;
        Ok(())
    }

    fn fill(&mut self, gpa: u64, len: u64, byte: u8) -> Result<(), LoadError> {
        let r = self.check(gpa, len)?;
        self.ram[r].fill(byte);
        self.writes += 1;
        Ok(())
    }
}

/// One program header for [`ElfBuilder`].
#[derive(Clone)]
pub struct Seg {
    ptype: u32,
    paddr: u64,
    vaddr: u64,
    data: Vec<u8>,
    memsz: u64,
}

impl Seg {
    /// A PT_LOAD segment at `paddr` (= `vaddr`) holding `data`, no bss.
    pub fn load(paddr: u64, data: &[u8]) -> Self {
        Seg {
            ptype: 1,
            paddr,
            vaddr: paddr,
            data: data.to_vec(),
            memsz: data.len() as u64,
        }
    }

    /// A non-load program header (e.g. 4 = PT_NOTE) with no data.
    pub fn other(ptype: u32, paddr: u64) -> Self {
        Seg {
            ptype,
            paddr,
            vaddr: paddr,
            data: Vec::new(),
            memsz: 0,
        }
    }

    pub fn vaddr(mut self, vaddr: u64) -> Self {
        self.vaddr = vaddr;
        self
    }

    pub fn memsz(mut self, memsz: u64) -> Self {
        self.memsz = memsz;
        self
    }
}

/// Builds a minimal little-endian x86 ELF executable: header, program
/// headers right after it, then each segment's data 16-byte aligned.
pub struct ElfBuilder {
    class64: bool,
    entry: u64,
    segs: Vec<Seg>,
    phdrs_at_end: bool,
}

impl ElfBuilder {
    pub fn new32(entry: u64) -> Self {
        ElfBuilder {
            class64: false,
            entry,
            segs: Vec::new(),
            phdrs_at_end: false,
        }
    }

    pub fn new64(entry: u64) -> Self {
        ElfBuilder {
            class64: true,
            entry,
            segs: Vec::new(),
            phdrs_at_end: false,
        }
    }

    pub fn seg(mut self, seg: Seg) -> Self {
        self.segs.push(seg);
        self
    }

    /// Put the program header table after the segment data (legal ELF;
    /// lets a test truncate the table while keeping a multiboot header).
    pub fn phdrs_at_end(mut self) -> Self {
        self.phdrs_at_end = true;
        self
    }

    fn phoff(&self) -> usize {
        if self.phdrs_at_end {
            self.data_end().next_multiple_of(8)
        } else {
            self.ehsize()
        }
    }

    fn data_end(&self) -> usize {
        match self.segs.len() {
            0 => self.data_start(),
            n => self.data_offset(n - 1) + self.segs[n - 1].data.len(),
        }
    }

    fn data_start(&self) -> usize {
        if self.phdrs_at_end {
            self.ehsize()
        } else {
            self.ehsize() + self.segs.len() * self.phentsize()
        }
    }

    pub fn ehsize(&self) -> usize {
        if self.class64 {
            64
        } else {
            52
        }
    }

    pub fn phentsize(&self) -> usize {
        if self.class64 {
            56
        } else {
            32
        }
    }

    /// File offset of segment `i`'s data in the built image.
    pub fn data_offset(&self, i: usize) -> usize {
        let mut off = self.data_start();
        for (j, s) in self.segs.iter().enumerate() {
            off = off.next_multiple_of(16);
            if j == i {
                return off;
            }
            off += s.data.len();
        }
        panic!("no segment {i}");
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let w = |out: &mut Vec<u8>, v: u64, class64: bool| {
            if class64 {
                out.extend_from_slice(&v.to_le_bytes());
            } else {
                out.extend_from_slice(&(v as u32).to_le_bytes());
            }
        };
        out.extend_from_slice(b"\x7fELF");
        out.extend_from_slice(&[if self.class64 { 2 } else { 1 }, 1, 1]);
        out.resize(16, 0);
        out.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out.extend_from_slice(&(if self.class64 { 62u16 } else { 3 }).to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
        w(&mut out, self.entry, self.class64);
        w(&mut out, self.phoff() as u64, self.class64); // e_phoff
        w(&mut out, 0, self.class64); // e_shoff
        out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        out.extend_from_slice(&(self.ehsize() as u16).to_le_bytes());
        out.extend_from_slice(&(self.phentsize() as u16).to_le_bytes());
        out.extend_from_slice(&(self.segs.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0; 6]); // shentsize, shnum, shstrndx
        assert_eq!(out.len(), self.ehsize());
        let mut ph = Vec::new();
        for (i, s) in self.segs.iter().enumerate() {
            let off = if s.data.is_empty() {
                0
            } else {
                self.data_offset(i) as u64
            };
            let out = &mut ph;
            out.extend_from_slice(&s.ptype.to_le_bytes());
            if self.class64 {
                out.extend_from_slice(&7u32.to_le_bytes()); // p_flags
            }
            w(out, off, self.class64);
            w(out, s.vaddr, self.class64);
            w(out, s.paddr, self.class64);
            w(out, s.data.len() as u64, self.class64);
            w(out, s.memsz, self.class64);
            if !self.class64 {
                out.extend_from_slice(&7u32.to_le_bytes()); // p_flags
            }
            w(out, 0x1000, self.class64); // p_align
        }
        if !self.phdrs_at_end {
            out.extend_from_slice(&ph);
        }
        for (i, s) in self.segs.iter().enumerate() {
            out.resize(self.data_offset(i), 0);
            out.extend_from_slice(&s.data);
        }
        if self.phdrs_at_end {
            out.resize(self.phoff(), 0);
            out.extend_from_slice(&ph);
        }
        out
    }
}

/// A 12-byte multiboot header with a correct checksum.
pub fn mb_header(flags: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&HEADER_MAGIC.to_le_bytes());
    h.extend_from_slice(&flags.to_le_bytes());
    h.extend_from_slice(&(0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags)).to_le_bytes());
    h
}

/// The a.out-kludge address fields of a multiboot header.
#[derive(Clone, Copy)]
pub struct Aout {
    pub header_addr: u32,
    pub load_addr: u32,
    pub load_end_addr: u32,
    pub bss_end_addr: u32,
    pub entry_addr: u32,
}

/// A 32-byte multiboot header with flags bit 16 set (plus `extra_flags`).
pub fn mb_aout_header(extra_flags: u32, a: Aout) -> Vec<u8> {
    let mut h = mb_header(extra_flags | 1 << 16);
    for v in [
        a.header_addr,
        a.load_addr,
        a.load_end_addr,
        a.bss_end_addr,
        a.entry_addr,
    ] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

/// An a.out-kludge image: `prefix` bytes, then the header, then `body`.
/// The file is loaded from offset 0 at `a.load_addr`; `a.header_addr` should
/// be `load_addr + prefix.len()`.
pub fn aout_image(prefix: &[u8], a: Aout, body: &[u8]) -> Vec<u8> {
    let mut img = prefix.to_vec();
    img.extend_from_slice(&mb_aout_header(0, a));
    img.extend_from_slice(body);
    img
}

/// Marsaglia's xorshift64: deterministic, good enough to pick mutations.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
