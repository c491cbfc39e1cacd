//! gdb's memory accesses: linear addresses translated through the selected
//! vCPU's current page tables with
//! [`debug_translate`], one
//! page at a time, touching no accessed/dirty bit.
//!
//! A read stops at the first page that is not mapped (or not RAM) and
//! returns what it read; gdb asks again for the rest and reports the
//! first unreadable address. A write is translated in full before any
//! byte is written, so it is all or nothing (unless the debuggee refuses
//! part way, which it does only for every byte or none).

use hindsight_cpu::debug_walk::debug_translate;
use hindsight_cpu::state::cr;

use crate::Debuggee;

/// Why a memory access failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemError {
    /// No vCPU with this index.
    NoSuchVcpu(usize),
    /// The page of linear address `lin` is not mapped (or its tables are
    /// not readable).
    Unmapped {
        /// The first linear address that could not be translated.
        lin: u64,
    },
    /// The page maps to guest-physical `gpa`, which is not RAM.
    NotRam {
        /// The first failing linear address.
        lin: u64,
        /// Where it maps.
        gpa: u64,
    },
    /// The debuggee refused the write.
    Refused(String),
}

impl std::fmt::Display for MemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemError::NoSuchVcpu(v) => write!(f, "no vCPU {v}"),
            MemError::Unmapped { lin } => write!(f, "linear address {lin:#x} is not mapped"),
            MemError::NotRam { lin, gpa } => write!(
                f,
                "linear address {lin:#x} maps to {gpa:#x}, which is not RAM"
            ),
            MemError::Refused(why) => write!(f, "memory write refused: {why}"),
        }
    }
}

impl std::error::Error for MemError {}

/// An 8-byte page-table read for the walker; falls back to 4 bytes so a
/// 32-bit entry in the last 4 bytes of RAM still reads.
fn table_reader(d: &dyn Debuggee) -> impl FnMut(u64) -> Option<u64> + '_ {
    move |gpa| {
        let mut b = [0u8; 8];
        if d.read_phys(gpa, &mut b) {
            return Some(u64::from_le_bytes(b));
        }
        let mut b = [0u8; 4];
        d.read_phys(gpa, &mut b)
            .then(|| u32::from_le_bytes(b) as u64)
    }
}

/// The linear address `i` bytes after `lin`, or None past the end of the
/// address space (64 bits in long mode, 32 bits otherwise).
fn advance(long: bool, lin: u64, i: usize) -> Option<u64> {
    let a = lin.checked_add(i as u64)?;
    if !long && a > 0xffff_ffff {
        return None;
    }
    Some(a)
}

/// The pieces `[lin, lin + len)` splits into at 4 KiB page boundaries, as
/// (linear address, offset in the buffer, length).
fn pieces(long: bool, lin: u64, len: usize) -> Vec<(u64, usize, usize)> {
    let mut v = Vec::new();
    let mut off = 0;
    while off < len {
        let Some(a) = advance(long, lin, off) else {
            break;
        };
        let n = (0x1000 - (a & 0xfff) as usize).min(len - off);
        v.push((a, off, n));
        off += n;
    }
    v
}

/// Reads linear memory as vCPU `vcpu` sees it into `buf`; returns how
/// many bytes were read (fewer than asked when a later page is unmapped),
/// or why not even the first byte could be.
pub fn read_linear(
    d: &dyn Debuggee,
    vcpu: usize,
    lin: u64,
    buf: &mut [u8],
) -> Result<usize, MemError> {
    if vcpu >= d.vcpu_count() {
        return Err(MemError::NoSuchVcpu(vcpu));
    }
    let cpu = d.cpu(vcpu);
    let long = cpu.efer & cr::EFER_LMA != 0;
    let mut read = table_reader(d);
    let mut done = 0;
    for (a, off, n) in pieces(long, lin, buf.len()) {
        let err = match debug_translate(cpu, &mut read, a) {
            Some(gpa) if d.read_phys(gpa, &mut buf[off..off + n]) => {
                done += n;
                continue;
            }
            Some(gpa) => MemError::NotRam { lin: a, gpa },
            None => MemError::Unmapped { lin: a },
        };
        return if done > 0 { Ok(done) } else { Err(err) };
    }
    if done == 0 && !buf.is_empty() {
        return Err(MemError::Unmapped { lin });
    }
    Ok(done)
}

/// Writes `data` to linear memory as vCPU `vcpu` sees it: every page is
/// translated first, then written.
pub fn write_linear(
    d: &mut dyn Debuggee,
    vcpu: usize,
    lin: u64,
    data: &[u8],
) -> Result<(), MemError> {
    if vcpu >= d.vcpu_count() {
        return Err(MemError::NoSuchVcpu(vcpu));
    }
    let mut plan = Vec::new();
    {
        let dd: &dyn Debuggee = d;
        let cpu = dd.cpu(vcpu);
        let long = cpu.efer & cr::EFER_LMA != 0;
        let mut read = table_reader(dd);
        let ps = pieces(long, lin, data.len());
        let covered: usize = ps.iter().map(|p| p.2).sum();
        if covered < data.len() {
            let end = lin.wrapping_add(covered as u64);
            return Err(MemError::Unmapped { lin: end });
        }
        for (a, off, n) in ps {
            let gpa = debug_translate(cpu, &mut read, a).ok_or(MemError::Unmapped { lin: a })?;
            // Probe that the target is RAM before anything is written.
            let mut probe = [0u8; 1];
            if !dd.read_phys(gpa, &mut probe) || !dd.read_phys(gpa + n as u64 - 1, &mut probe) {
                return Err(MemError::NotRam { lin: a, gpa });
            }
            plan.push((gpa, off, n));
        }
    }
    for (gpa, off, n) in plan {
        d.write_phys(gpa, &data[off..off + n])
            .map_err(MemError::Refused)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{Resume, StopEvent};
    use hindsight_cpu::debug::DebugSet;
    use hindsight_cpu::state::{attr, Segment};
    use hindsight_cpu::{Cpu, SegReg};

    /// A debuggee with flat RAM and nothing else, for memory and monitor tests.
    pub(crate) struct RamOnly {
        pub cpus: Vec<Cpu>,
        pub ram: Vec<u8>,
        pub frozen: bool,
        pub icount: u64,
    }

    impl Debuggee for RamOnly {
        fn vcpu_count(&self) -> usize {
            self.cpus.len()
        }
        fn cpu(&self, vcpu: usize) -> &Cpu {
            &self.cpus[vcpu]
        }
        fn edit_cpu(&mut self, vcpu: usize, f: &mut dyn FnMut(&mut Cpu)) -> Result<(), String> {
            if self.frozen {
                return Err("history is fixed".into());
            }
            f(&mut self.cpus[vcpu]);
            Ok(())
        }
        fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
            let Some(end) = gpa.checked_add(buf.len() as u64) else {
                return false;
            };
            if end > self.ram.len() as u64 {
                return false;
            }
            buf.copy_from_slice(&self.ram[gpa as usize..end as usize]);
            true
        }
        fn write_phys(&mut self, gpa: u64, data: &[u8]) -> Result<(), String> {
            if self.frozen {
                return Err("history is fixed".into());
            }
            let end = gpa
                .checked_add(data.len() as u64)
                .filter(|&e| e <= self.ram.len() as u64)
                .ok_or("outside RAM")?;
            self.ram[gpa as usize..end as usize].copy_from_slice(data);
            Ok(())
        }
        fn icount(&self) -> u64 {
            self.icount
        }
        fn set_debug(&mut self, _set: DebugSet) {}
        fn resume(&mut self, _how: Resume, _i: &mut dyn FnMut() -> bool) -> StopEvent {
            StopEvent::HistoryEnd
        }
        fn seek(&mut self, icount: u64, _: &mut dyn FnMut(u64) -> bool) -> Result<u64, String> {
            if icount > 1000 {
                return Err(format!("{icount} is past the end of history (1000)"));
            }
            self.icount = icount;
            Ok(icount)
        }
        fn checkpoints(&self) -> Vec<String> {
            vec!["#0 at icount 0".into()]
        }
        fn history(&self) -> (u64, u64) {
            (0, 1000)
        }
    }

    /// 1 MiB of RAM; vCPU 0 in long mode with 4-level tables at 0x10000
    /// mapping linear 0x40_0000.. (4 KiB pages) to physical 0x8_0000..,
    /// with the page at linear 0x40_2000 left unmapped.
    pub(crate) fn paged() -> RamOnly {
        let mut ram = vec![0u8; 1 << 20];
        let mut put = |a: usize, v: u64| ram[a..a + 8].copy_from_slice(&v.to_le_bytes());
        put(0x10000, 0x11000 | 3); // PML4[0] -> PDPT
        put(0x11000, 0x12000 | 3); // PDPT[0] -> PD
        put(0x12000 + 2 * 8, 0x13000 | 3); // PD[2] (0x40_0000) -> PT
        for i in 0..4u64 {
            if i != 2 {
                put(0x13000 + 8 * i as usize, (0x8_0000 + 0x1000 * i) | 3);
            }
        }
        // A page mapped outside RAM.
        put(0x13000 + 8 * 5, 0x4000_0000 | 3);
        for (i, b) in ram[0x8_0000..0x8_4000].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut c = Cpu::new(0);
        c.cr0 |= cr::CR0_PE | cr::CR0_PG;
        c.cr4 |= cr::CR4_PAE;
        c.cr3 = 0x10000;
        c.efer = cr::EFER_LME | cr::EFER_LMA;
        c.seg[SegReg::Cs as usize] = Segment {
            selector: 8,
            base: 0,
            limit: u32::MAX,
            attr: attr::CODE_RX | attr::LONG,
        };
        c.update_mode();
        RamOnly {
            cpus: vec![c],
            ram,
            frozen: false,
            icount: 0,
        }
    }

    #[test]
    fn reads_cross_pages_and_stop_at_holes() {
        let d = paged();
        let mut buf = [0u8; 8];
        assert_eq!(read_linear(&d, 0, 0x40_0ffc, &mut buf), Ok(8));
        assert_eq!(buf, [0xfc, 0xfd, 0xfe, 0xff, 0, 1, 2, 3]);
        // Partial: the page at 0x40_2000 is not mapped.
        let mut buf = [0u8; 16];
        assert_eq!(read_linear(&d, 0, 0x40_1ff8, &mut buf), Ok(8));
        assert_eq!(
            read_linear(&d, 0, 0x40_2000, &mut buf),
            Err(MemError::Unmapped { lin: 0x40_2000 })
        );
        assert_eq!(
            read_linear(&d, 0, 0x40_5000, &mut buf),
            Err(MemError::NotRam {
                lin: 0x40_5000,
                gpa: 0x4000_0000
            })
        );
        assert_eq!(
            read_linear(&d, 0, 0xffff_ffff_ffff_fffc, &mut buf),
            Err(MemError::Unmapped {
                lin: 0xffff_ffff_ffff_fffc
            })
        );
        assert_eq!(
            read_linear(&d, 3, 0x40_0000, &mut buf),
            Err(MemError::NoSuchVcpu(3))
        );
        assert_eq!(read_linear(&d, 0, 0x40_0000, &mut []), Ok(0));
    }

    #[test]
    fn writes_are_all_or_nothing() {
        let mut d = paged();
        assert_eq!(write_linear(&mut d, 0, 0x40_0ffe, &[9, 8, 7, 6]), Ok(()));
        assert_eq!(&d.ram[0x8_0ffe..0x8_1002], &[9, 8, 7, 6]);
        let before = d.ram.clone();
        assert_eq!(
            write_linear(&mut d, 0, 0x40_1ffe, &[1, 2, 3, 4]),
            Err(MemError::Unmapped { lin: 0x40_2000 })
        );
        assert!(d.ram == before, "nothing written");
        d.frozen = true;
        let e = write_linear(&mut d, 0, 0x40_0000, &[1]).unwrap_err();
        assert_eq!(e.to_string(), "memory write refused: history is fixed");
    }

    #[test]
    fn paging_off_outside_long_mode_wraps_at_4_gib() {
        let mut d = paged();
        d.cpus[0] = Cpu::new(0);
        let mut buf = [0u8; 4];
        assert_eq!(read_linear(&d, 0, 0x8_0010, &mut buf), Ok(4));
        assert_eq!(buf, [0x10, 0x11, 0x12, 0x13]);
        // The end of the 32-bit space: the read stops there.
        assert!(read_linear(&d, 0, 0xffff_fffe, &mut buf).is_err());
    }
}
