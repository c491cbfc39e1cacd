//! State summaries: a compact description of a whole machine, recorded beside
//! each state hash, that lets a replay whose hash differs say *what* differs
//! (a register, a device, a page of RAM) instead of only *that* it does.
//!
//! A [`StateSummary`] holds:
//!
//! | part | content |
//! |---|---|
//! | per vCPU | the architectural registers by value (GPRs, RIP, RFLAGS, segment selectors and bases, CR0/2/3/4/8, EFER, the instruction count) and 8-byte hashes of the rest (x87/SSE, descriptors, MSRs, debug registers, local APIC, the whole vCPU) |
//! | machine parts | an 8-byte hash per device and per piece of machine state (scheduler, time, console input, ...), and one of the whole state |
//! | RAM zones | an 8-byte hash of every 16 MiB zone of guest-physical memory that holds a non-zero page |
//! | RAM regions | the 8-byte hashes of the 1 MiB regions that changed since the previous summary |
//! | RAM pages | the hashes of the pages that changed since the previous summary (at most [`DETAIL_PAGES`]; the regions whose pages did not fit are listed instead) |
//!
//! Only the zones are listed whole: regions and pages go by what changed, so
//! a summary's size follows what the guest writes, not how much memory it
//! uses. A replay whose tracker has its own hashes as of the previous
//! summary (which matched) knows every recorded region and page hash.
//!
//! Computing a summary costs one fast 64-bit hash (several GB/s) of each
//! page the machine's dirty bitmap marks (a [`SummaryTracker`] keeps the
//! page hashes from one summary to the next), plus SHA-256 over the hashes
//! of the regions that changed: about a quarter of the SHA-256 state hash,
//! which reads the same pages. Nothing here touches the run loop.
//!
//! Comparing ([`StateSummary::compare_machine`]) needs the recorded summary
//! and the machine; a tracker that was brought up to date at the previous
//! summary's count ([`SummaryTracker::advance`], as a verifying replay does
//! after each matching hash) also lets it name the differing page exactly in
//! every region the trace lists pages for. The byte encoding of a summary is
//! the trace format's (`docs/trace-format.md`, `hindsight-timetravel`).
//!
//! # Hashes
//!
//! - **page hash**: [`page_hash`], a 4-lane multiply-rotate hash over the
//!   page's 512 little-endian words (0 for an all-zero page, never 0
//!   otherwise). Each lane step is a bijection, so a change confined to one
//!   8-byte word (a flipped byte, say) always changes the hash.
//! - **region hash**: the first 8 bytes (little-endian) of the SHA-256 of,
//!   for each non-zero page of the region in ascending order, its `u64`
//!   guest-physical address and its `u64` page hash (little-endian); 0 for a
//!   region without a non-zero page.
//! - **zone hash**: the same over the zone's regions with a non-zero hash:
//!   `u32` region index and `u64` region hash; 0 for an all-zero zone.
//! - **part hash**: the first 8 bytes (little-endian) of the SHA-256 of the
//!   part's [`crate::codec`] encoding.

use std::fmt;

use hindsight_cpu::state::SegReg;
use hindsight_cpu::Cpu;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::codec;
use crate::layout::{HIGH_RAM_START, PAGE_SIZE};
use crate::memory::GuestRam;
use crate::snapshot::MachineState;
use crate::Machine;

/// log2 of the size of a RAM region (1 MiB).
pub const REGION_SHIFT: u8 = 20;

/// log2 of the size of a RAM zone (16 MiB).
pub const ZONE_SHIFT: u8 = 24;

/// Most changed pages a summary lists; the regions whose changed pages do
/// not fit are named in [`StateSummary::undetailed`] instead. Keeps a
/// summary near a KiB even while a guest writes much of its memory.
pub const DETAIL_PAGES: usize = 128;

/// Names of the registers of [`VcpuSummary::registers`], in order.
pub const REGISTER_NAMES: [&str; 37] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "rip", "rflags", "es", "cs", "ss", "ds", "fs", "gs", "es base", "cs base",
    "ss base", "ds base", "fs base", "gs base", "cr0", "cr2", "cr3", "cr4", "cr8", "efer",
    "icount",
];

/// Most pages a [`Difference`] names before it says "and N more".
const PAGES_SHOWN: usize = 4;

/// The name of the part hash that covers a whole vCPU, reported only when
/// nothing more specific of that vCPU differs.
pub const WHOLE_VCPU: &str = "whole vCPU";
/// The name of the part hash that covers the whole machine state but RAM,
/// reported only when nothing more specific differs.
pub const WHOLE_MACHINE: &str = "whole machine state";

/// A named 8-byte hash of one part of the machine.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartHash {
    /// What the hash covers (`"uart"`, `"x87/SSE"`, ...).
    pub name: String,
    /// Its part hash (see the module documentation).
    pub hash: u64,
}

/// A segment register as summarized: selector and base.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SegmentSummary {
    /// The visible selector.
    pub selector: u16,
    /// The (hidden) base address.
    pub base: u64,
}

/// One vCPU's registers and hashes of the rest of its state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VcpuSummary {
    /// RAX..R15 in encoding order.
    pub gpr: [u64; 16],
    /// RIP.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// ES, CS, SS, DS, FS, GS.
    pub seg: [SegmentSummary; 6],
    /// CR0.
    pub cr0: u64,
    /// CR2.
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// CR8 (task priority).
    pub cr8: u64,
    /// EFER.
    pub efer: u64,
    /// The vCPU's instruction count.
    pub icount: u64,
    /// Hashes of the rest of the vCPU (and of the whole vCPU, last).
    pub parts: Vec<PartHash>,
}

impl VcpuSummary {
    /// The registers by value, named by [`REGISTER_NAMES`].
    pub fn registers(&self) -> [u64; 37] {
        let mut r = [0u64; 37];
        r[..16].copy_from_slice(&self.gpr);
        r[16] = self.rip;
        r[17] = self.rflags;
        for (i, s) in self.seg.iter().enumerate() {
            r[18 + i] = u64::from(s.selector);
            r[24 + i] = s.base;
        }
        r[30..].copy_from_slice(&[
            self.cr0,
            self.cr2,
            self.cr3,
            self.cr4,
            self.cr8,
            self.efer,
            self.icount,
        ]);
        r
    }

    fn of(cpu: &Cpu, lapic: Option<u64>) -> VcpuSummary {
        let mut seg = [SegmentSummary::default(); 6];
        for s in SegReg::ALL {
            let reg = &cpu.seg[s as usize];
            seg[s as usize] = SegmentSummary {
                selector: reg.selector,
                base: reg.base,
            };
        }
        let mut parts = vec![
            part("x87/SSE", &(&cpu.fpu, &cpu.xmm, cpu.mxcsr, cpu.xcr0)),
            part(
                "descriptors",
                &(&cpu.seg, &cpu.ldtr, &cpu.tr, &cpu.gdtr, &cpu.idtr),
            ),
            part("MSRs", &cpu.msr),
            part("debug registers", &cpu.dr),
        ];
        if let Some(hash) = lapic {
            parts.push(PartHash {
                name: "local APIC".into(),
                hash,
            });
        }
        // Last: everything the vCPU saves, so a field added later is covered.
        parts.push(part(WHOLE_VCPU, cpu));
        VcpuSummary {
            gpr: cpu.gpr,
            rip: cpu.rip,
            rflags: cpu.rflags,
            seg,
            cr0: cpu.cr0,
            cr2: cpu.cr2,
            cr3: cpu.cr3,
            cr4: cpu.cr4,
            cr8: cpu.cr8,
            efer: cpu.efer,
            icount: cpu.icount,
            parts,
        }
    }
}

/// A compact description of a machine at one instruction count; see the
/// module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct StateSummary {
    /// The instruction count it describes.
    pub icount: u64,
    /// The count of the previous summary that [`StateSummary::pages`] is
    /// relative to; `None`: relative to all-zero RAM (the first summary).
    pub since: Option<u64>,
    /// Every vCPU, by index.
    pub vcpus: Vec<VcpuSummary>,
    /// Devices and machine state, then [`WHOLE_MACHINE`].
    pub parts: Vec<PartHash>,
    /// log2 of the zone size.
    pub zone_shift: u8,
    /// Zones covering guest-physical memory from 0 to the end of RAM.
    pub zone_count: u32,
    /// The zones holding a non-zero page, ascending: (index, zone hash).
    /// Zones not listed are all zero.
    pub zones: Vec<(u32, u64)>,
    /// log2 of the region size.
    pub region_shift: u8,
    /// Regions covering guest-physical memory from 0 to the end of RAM.
    pub region_count: u32,
    /// The regions whose hash changed since [`StateSummary::since`],
    /// ascending: (index, region hash, 0 for a region now all zero).
    pub regions: Vec<(u32, u64)>,
    /// Pages whose hash changed since [`StateSummary::since`], ascending:
    /// (guest-physical address, page hash), for every region not in
    /// [`StateSummary::undetailed`].
    pub pages: Vec<(u64, u64)>,
    /// Regions with changed pages that [`StateSummary::pages`] leaves out
    /// (over [`DETAIL_PAGES`]), ascending.
    pub undetailed: Vec<u32>,
}

/// The first 8 bytes of the SHA-256 of `value`'s codec encoding.
fn part_hash<T: Serialize + ?Sized>(value: &T) -> u64 {
    let mut h = Sha256::new();
    if codec::encode_into(&mut h, value).is_err() {
        // Machine state always encodes (every sequence has a length); a
        // failure still must not make two states look alike.
        h.update(b"\xffunencodable");
    }
    digest8(h)
}

fn digest8(h: Sha256) -> u64 {
    let d = h.finalize();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

fn part<T: Serialize + ?Sized>(name: &str, value: &T) -> PartHash {
    PartHash {
        name: name.into(),
        hash: part_hash(value),
    }
}

/// Multiplier of [`page_hash`] (2^64 / golden ratio, odd).
const MUL: u64 = 0x9E37_79B9_7F4A_7C15;
/// Initial lanes of [`page_hash`] (digits of pi).
const LANES: [u64; 4] = [
    0x243F_6A88_85A3_08D3,
    0x1319_8A2E_0370_7344,
    0xA409_3822_299F_31D0,
    0x082E_FA98_EC4E_6C89,
];

/// The page hash (see the module documentation): lane `j` takes words
/// `4i + j`; each step is `lane = rotl((lane ^ word) * MUL, 29)`; the result
/// is `l0 ^ rotl(l1, 16) ^ rotl(l2, 32) ^ rotl(l3, 48)`, with 0 kept for an
/// all-zero page (a non-zero page that would hash to 0 hashes to 1).
pub fn page_hash(page: &[u8; PAGE_SIZE as usize]) -> u64 {
    let mut l = LANES;
    let mut any = 0u64;
    for block in page.chunks_exact(32) {
        for (j, lane) in l.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&block[8 * j..8 * j + 8]);
            let w = u64::from_le_bytes(w);
            any |= w;
            *lane = ((*lane ^ w).wrapping_mul(MUL)).rotate_left(29);
        }
    }
    if any == 0 {
        return 0;
    }
    match l[0] ^ l[1].rotate_left(16) ^ l[2].rotate_left(32) ^ l[3].rotate_left(48) {
        0 => 1,
        h => h,
    }
}

/// Page and region hashes carried from one summary to the next, so each
/// summary hashes only pages that may have been written since the previous
/// one, and says which changed.
///
/// It reads the machine's dirty bitmap: while the dirty epoch stays the one
/// it last saw (or the one it started itself in [`SummaryTracker::advance`]),
/// the pages not dirty are unchanged, so only the dirty ones are hashed
/// (in a recording that never starts an epoch: every page written since
/// power-on). Any other epoch change (a checkpoint store's) makes it hash
/// every page once. Host-side data only.
#[derive(Clone, Debug, Default)]
pub struct SummaryTracker {
    /// [`GuestRam::instance`] of the RAM the table describes.
    instance: Option<u64>,
    /// The dirty epoch whose bitmap covers every write since the last update.
    epoch: u64,
    /// Page hash by host page index at the last update.
    hashes: Vec<u64>,
    /// Region hash by region index at the last update (0: all zero).
    regions: Vec<u64>,
    /// Instruction count of the last update.
    icount: Option<u64>,
}

impl SummaryTracker {
    /// A tracker that has seen nothing yet: its first summary lists the
    /// pages relative to all-zero RAM.
    pub fn new() -> Self {
        Self::default()
    }

    /// Instruction count of the machine when the tracker was last brought
    /// up to date (a summary or [`SummaryTracker::advance`]).
    pub fn icount(&self) -> Option<u64> {
        self.icount
    }

    /// Brings the page hashes up to date with `m` and starts a new dirty
    /// epoch, so the next update hashes only the pages written from here
    /// on. A verifying replay calls it after each matching state hash:
    /// then a later mismatch can name the differing pages exactly. Do not
    /// use it on a machine whose [`crate::CheckpointStore`] owns the dirty
    /// epochs (the store would refuse its next checkpoint).
    pub fn advance(&mut self, m: &mut Machine) {
        self.update(m);
        self.start_epoch(m);
    }

    /// Starts a new dirty epoch on `m`, to be called right after the tracker
    /// was brought up to date with it (a summary or an update at this
    /// count), so the next update hashes only the pages written from here
    /// on. Called at another time, the epoch is not taken as the tracker's
    /// own and the next update hashes every page. The same caveat as
    /// [`SummaryTracker::advance`] applies.
    pub fn start_epoch(&mut self, m: &mut Machine) {
        let current = self.icount == Some(m.icount()) && self.instance == Some(m.ram().instance());
        let own = current && self.epoch == m.ram().dirty_epoch();
        m.start_dirty_epoch();
        if own {
            self.epoch = m.ram().dirty_epoch();
        }
    }

    /// Brings the page hashes up to date with `m` without touching its dirty
    /// epochs (for a replay whose checkpoint store owns them). Costs a hash
    /// of every page written in the current epoch, or of all pages when the
    /// epoch changed since the last update.
    pub fn update(&mut self, m: &Machine) {
        let changed = self.refresh(m.ram());
        self.refresh_regions(m.ram(), &changed);
        self.icount = Some(m.icount());
    }

    /// Updates the page hashes to `ram` now; returns the host page indices
    /// whose hash changed, ascending.
    fn refresh(&mut self, ram: &GuestRam) -> Vec<u64> {
        let pages = ram.host_pages();
        let fresh = self.instance != Some(ram.instance()) || self.hashes.len() as u64 != pages;
        if fresh {
            self.instance = Some(ram.instance());
            self.hashes = vec![0; pages as usize];
            self.regions.clear();
            self.icount = None;
        }
        let dirty = ram.dirty_words();
        let mut changed = Vec::new();
        let mut visit = |idx: u64, hashes: &mut Vec<u64>| {
            if ram.index_gpa(idx).is_none() {
                return;
            }
            let h = page_hash(ram.page_by_index(idx));
            let slot = &mut hashes[idx as usize];
            if *slot != h {
                *slot = h;
                changed.push(idx);
            }
        };
        // Only the dirty pages can have changed since the last update while
        // the epoch is the one it saw; and in epoch 0 of fresh RAM, pages
        // never written are still zero.
        if (fresh && ram.dirty_epoch() == 0) || (!fresh && ram.dirty_epoch() == self.epoch) {
            for (w, &bits) in dirty.iter().enumerate() {
                let mut bits = bits;
                while bits != 0 {
                    let idx = w as u64 * 64 + u64::from(bits.trailing_zeros());
                    bits &= bits - 1;
                    if idx < pages {
                        visit(idx, &mut self.hashes);
                    }
                }
            }
        } else {
            for idx in 0..pages {
                visit(idx, &mut self.hashes);
            }
        }
        self.epoch = ram.dirty_epoch();
        changed
    }

    /// Recomputes the hashes of the regions holding `changed` pages (all of
    /// them if the region table is new, starting from all zero); returns the
    /// regions whose hash changed, ascending.
    fn refresh_regions(&mut self, ram: &GuestRam, changed: &[u64]) -> Vec<u32> {
        let count = region_count(ram) as usize;
        let mut todo: Vec<u32> = if self.regions.len() != count {
            self.regions = vec![0; count];
            (0..count as u32).collect()
        } else {
            changed
                .iter()
                .filter_map(|&idx| ram.index_gpa(idx))
                .map(|gpa| (gpa >> REGION_SHIFT) as u32)
                .collect()
        };
        todo.dedup();
        todo.retain(|&r| {
            let h = self.region_hash(ram, r);
            let slot = &mut self.regions[r as usize];
            let differs = *slot != h;
            *slot = h;
            differs
        });
        todo
    }

    /// The region hash of region `r` from the page table.
    fn region_hash(&self, ram: &GuestRam, r: u32) -> u64 {
        region_hash(ram, r, |idx| self.hashes[idx as usize])
    }
}

/// The host page index of the RAM page holding `gpa`, if it is RAM (the
/// VGA window is not).
fn index_of(ram: &GuestRam, gpa: u64) -> Option<u64> {
    let off = if gpa < ram.low_end() {
        gpa
    } else if (HIGH_RAM_START..ram.high_end()).contains(&gpa) {
        ram.low_end() + (gpa - HIGH_RAM_START)
    } else {
        return None;
    };
    let idx = off / PAGE_SIZE;
    // index_gpa is the mapping's own word (and leaves out the VGA window).
    (ram.index_gpa(idx) == Some(gpa & !(PAGE_SIZE - 1))).then_some(idx)
}

/// The RAM pages of region `r`: (host page index, guest-physical address).
fn region_pages(ram: &GuestRam, r: u32) -> impl Iterator<Item = (u64, u64)> + '_ {
    let start = u64::from(r) << REGION_SHIFT;
    (start..start + (1 << REGION_SHIFT))
        .step_by(PAGE_SIZE as usize)
        .filter_map(move |gpa| Some((index_of(ram, gpa)?, gpa)))
}

/// The region hash of region `r`, with page hashes from `hash_of(index)`.
fn region_hash(ram: &GuestRam, r: u32, hash_of: impl Fn(u64) -> u64) -> u64 {
    let mut h = Sha256::new();
    let mut any = false;
    for (idx, gpa) in region_pages(ram, r) {
        let ph = hash_of(idx);
        if ph != 0 {
            any = true;
            h.update(gpa.to_le_bytes());
            h.update(ph.to_le_bytes());
        }
    }
    if any {
        digest8(h)
    } else {
        0
    }
}

/// The zone hashes of a region table, by zone index.
fn zone_hashes(regions: &[u64]) -> Vec<u64> {
    let per_zone = 1usize << (ZONE_SHIFT - REGION_SHIFT);
    regions
        .chunks(per_zone)
        .enumerate()
        .map(|(z, chunk)| {
            let mut h = Sha256::new();
            let mut any = false;
            for (k, &rh) in chunk.iter().enumerate() {
                if rh != 0 {
                    any = true;
                    h.update(((z * per_zone + k) as u32).to_le_bytes());
                    h.update(rh.to_le_bytes());
                }
            }
            if any {
                digest8(h)
            } else {
                0
            }
        })
        .collect()
}

/// Regions from guest-physical 0 to the end of RAM.
fn region_count(ram: &GuestRam) -> u32 {
    let end = if ram.high_end() > HIGH_RAM_START {
        ram.high_end()
    } else {
        ram.low_end()
    };
    end.div_ceil(1 << REGION_SHIFT) as u32
}

/// Part hashes of the machine state but the vCPUs, then the whole state.
fn machine_parts(s: &MachineState) -> Vec<PartHash> {
    let d = &s.devices;
    vec![
        part("uart", &d.uart),
        part("pic", &d.pic),
        part("pit", &d.pit),
        part("debug-exit", &d.debug_exit),
        part("debugcon", &d.debugcon),
        part("cmos", &d.cmos),
        part("i8042", &d.i8042),
        part("pci", &d.pci),
        part("acpi-pm", &d.acpi_pm),
        part("ioapic", &d.apic.ioapic),
        part("apic signals", &d.apic.cpu_signals),
        part("irq lines", &d.irq_lines),
        part("scheduler", &s.sched),
        part("time", &(s.now, s.idle)),
        part("sipi wait", &s.waiting_sipi),
        part("console input", &(&s.input, s.hold_input, s.rx_on_since)),
        part("stop", &s.stopped),
        // Last: everything saved, so a field added later is covered.
        part(WHOLE_MACHINE, s),
    ]
}

/// Parts of [`machine_parts`] that are machine state rather than devices
/// (for messages).
const MACHINE_PART_NAMES: [&str; 5] = ["scheduler", "time", "sipi wait", "console input", "stop"];

fn vcpus_of(s: &MachineState) -> Vec<VcpuSummary> {
    s.vcpus
        .iter()
        .enumerate()
        .map(|(i, cpu)| {
            let lapic = s.devices.apic.lapics.get(i).map(part_hash);
            VcpuSummary::of(cpu, lapic)
        })
        .collect()
}

impl Machine {
    /// The machine's state summary now. `tracker` carries the page hashes
    /// of the previous summary: the summary lists the pages changed since
    /// then (relative to all-zero RAM with a new tracker), and the tracker
    /// is left at this summary. Use one tracker per run.
    pub fn state_summary(&self, tracker: &mut SummaryTracker) -> StateSummary {
        let ram = self.ram();
        let changed = tracker.refresh(ram);
        let changed_regions = tracker.refresh_regions(ram, &changed);
        let since = tracker.icount;
        tracker.icount = Some(self.icount());
        let state = self.save_state();
        let zone_table = zone_hashes(&tracker.regions);
        let zones = zone_table
            .iter()
            .enumerate()
            .filter(|(_, &h)| h != 0)
            .map(|(z, &h)| (z as u32, h))
            .collect();
        let regions = changed_regions
            .iter()
            .map(|&r| (r, tracker.regions[r as usize]))
            .collect();
        let (pages, undetailed) = detail(ram, &changed, &tracker.hashes);
        StateSummary {
            icount: self.icount(),
            since,
            vcpus: vcpus_of(&state),
            parts: machine_parts(&state),
            zone_shift: ZONE_SHIFT,
            zone_count: zone_table.len() as u32,
            zones,
            region_shift: REGION_SHIFT,
            region_count: tracker.regions.len() as u32,
            regions,
            pages,
            undetailed,
        }
    }
}

/// The changed pages, region by region in ascending order, as long as the
/// total stays within [`DETAIL_PAGES`]; and the regions left out.
fn detail(ram: &GuestRam, changed: &[u64], hashes: &[u64]) -> (Vec<(u64, u64)>, Vec<u32>) {
    let mut by_gpa: Vec<(u64, u64)> = changed
        .iter()
        .filter_map(|&idx| Some((ram.index_gpa(idx)?, hashes[idx as usize])))
        .collect();
    by_gpa.sort_unstable();
    let (mut pages, mut undetailed) = (Vec::new(), Vec::new());
    for group in by_gpa.chunk_by(|a, b| a.0 >> REGION_SHIFT == b.0 >> REGION_SHIFT) {
        if pages.len() + group.len() <= DETAIL_PAGES {
            pages.extend_from_slice(group);
        } else {
            undetailed.push((group[0].0 >> REGION_SHIFT) as u32);
        }
    }
    (pages, undetailed)
}

/// One thing that differs between a recorded summary and a replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    /// The machines have different numbers of vCPUs.
    VcpuCount {
        /// vCPUs recorded.
        recorded: usize,
        /// vCPUs in the replay.
        replayed: usize,
    },
    /// A register of a vCPU.
    Register {
        /// The vCPU.
        vcpu: usize,
        /// The register's name (one of [`REGISTER_NAMES`]).
        name: &'static str,
        /// Its recorded value.
        recorded: u64,
        /// Its value in the replay.
        replayed: u64,
    },
    /// The hash of a part of a vCPU (`vcpu` is `Some`) or of the machine.
    Part {
        /// The vCPU, for a vCPU's part.
        vcpu: Option<usize>,
        /// The part's name.
        name: String,
    },
    /// A RAM region, with what is known of its pages.
    Ram {
        /// First guest-physical address of the region.
        start: u64,
        /// End of the region (exclusive).
        end: u64,
        /// Which of its pages differ.
        pages: PageDiff,
    },
}

/// What a comparison could tell about the pages of a differing region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageDiff {
    /// Exactly these pages differ (guest-physical addresses, ascending).
    Exact(Vec<u64>),
    /// These pages differ, and maybe others: the trace lists only the pages
    /// the recording changed, and the replay had no page table of the
    /// previous summary to check the rest against.
    AtLeast(Vec<u64>),
    /// The region differs, but which page is not known: the trace lists no
    /// page of it that differs.
    Unknown {
        /// The previous summary's count, if the trace says.
        since: Option<u64>,
        /// Pages of the region the replay changed since then, when its
        /// tracker knows them: the differing page is among them unless the
        /// recording changed pages the trace does not list.
        replay_changed: Vec<u64>,
    },
    /// Neither the region nor the page is known (the range is a zone): the
    /// recording did not change the differing region since the previous
    /// summary, and the replay has no page table from then to compare with.
    NotLocated {
        /// The previous summary's count, if the trace says.
        since: Option<u64>,
    },
}

/// Formats up to [`PAGES_SHOWN`] page addresses.
fn page_list(pages: &[u64]) -> String {
    let shown: Vec<String> = pages
        .iter()
        .take(PAGES_SHOWN)
        .map(|p| format!("{p:#010x}"))
        .collect();
    let mut s = shown.join(", ");
    if pages.len() > PAGES_SHOWN {
        s += &format!(" and {} more", pages.len() - PAGES_SHOWN);
    }
    s
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::VcpuCount { recorded, replayed } => {
                write!(f, "vCPU count: recorded {recorded}, replayed {replayed}")
            }
            Difference::Register {
                vcpu,
                name,
                recorded,
                replayed,
            } => write!(
                f,
                "vCPU {vcpu} {name}: recorded {recorded:#x}, replayed {replayed:#x}"
            ),
            Difference::Part {
                vcpu: Some(v),
                name,
            } => write!(f, "vCPU {v} {name}"),
            Difference::Part { vcpu: None, name } if name == WHOLE_MACHINE => f.write_str(name),
            Difference::Part { vcpu: None, name } if MACHINE_PART_NAMES.contains(&&**name) => {
                write!(f, "machine {name}")
            }
            Difference::Part { vcpu: None, name } => write!(f, "device {name}"),
            Difference::Ram { start, end, pages } => {
                write!(f, "RAM {start:#010x}..{end:#010x} (")?;
                match pages {
                    PageDiff::Exact(p) if p.is_empty() => {
                        f.write_str("no page differs by its page hash")?
                    }
                    PageDiff::Exact(p) if p.len() == 1 => write!(f, "page {:#010x}", p[0])?,
                    PageDiff::Exact(p) => write!(f, "pages {}", page_list(p))?,
                    PageDiff::AtLeast(p) => write!(f, "page(s) {}, maybe more", page_list(p))?,
                    PageDiff::NotLocated { since } => {
                        f.write_str("region and page not known: not changed by the recording")?;
                        if let Some(s) = since {
                            write!(f, " since icount {s}")?;
                        }
                    }
                    PageDiff::Unknown {
                        since,
                        replay_changed,
                    } => {
                        f.write_str("page not known")?;
                        if !replay_changed.is_empty() {
                            write!(f, "; the replay changed {}", page_list(replay_changed))?;
                            if let Some(s) = since {
                                write!(f, " since icount {s}")?;
                            }
                        }
                    }
                }
                f.write_str(")")
            }
        }
    }
}

/// Differences of two part lists, by name: `recorded`'s order, then the
/// parts only `replayed` has.
fn part_diffs(
    vcpu: Option<usize>,
    recorded: &[PartHash],
    replayed: &[PartHash],
) -> Vec<Difference> {
    let find = |list: &[PartHash], n: &str| list.iter().find(|p| p.name == n).map(|p| p.hash);
    let only_replayed = replayed
        .iter()
        .filter(|p| find(recorded, &p.name).is_none());
    recorded
        .iter()
        .chain(only_replayed)
        .filter(|p| find(recorded, &p.name) != find(replayed, &p.name))
        .map(|p| Difference::Part {
            vcpu,
            name: p.name.clone(),
        })
        .collect()
}

fn is_whole(d: &Difference) -> bool {
    matches!(d, Difference::Part { name, .. } if name == WHOLE_VCPU || name == WHOLE_MACHINE)
}

/// What the recorded page list of a summary is relative to, as far as the
/// replay can tell.
enum Base<'a> {
    /// All-zero RAM (the first summary).
    Zero,
    /// The replay's page table at the previous summary.
    Table(&'a [u64]),
    /// Not at hand.
    Unknown,
}

impl StateSummary {
    /// Differences in the vCPUs and machine parts: registers (vCPU by
    /// vCPU), then vCPU parts, then devices and machine state. The
    /// catch-all hashes ([`WHOLE_VCPU`], [`WHOLE_MACHINE`]) are reported
    /// only when nothing more specific in their scope differs.
    pub fn compare_state(&self, replayed: &StateSummary) -> Vec<Difference> {
        let mut out = Vec::new();
        if self.vcpus.len() != replayed.vcpus.len() {
            out.push(Difference::VcpuCount {
                recorded: self.vcpus.len(),
                replayed: replayed.vcpus.len(),
            });
        }
        let mut vcpu_parts = Vec::new();
        for (i, (a, b)) in self.vcpus.iter().zip(&replayed.vcpus).enumerate() {
            let before = out.len();
            for (k, (x, y)) in a.registers().into_iter().zip(b.registers()).enumerate() {
                if x != y {
                    out.push(Difference::Register {
                        vcpu: i,
                        name: REGISTER_NAMES[k],
                        recorded: x,
                        replayed: y,
                    });
                }
            }
            let mut parts = part_diffs(Some(i), &a.parts, &b.parts);
            if out.len() > before || parts.iter().any(|d| !is_whole(d)) {
                parts.retain(|d| !is_whole(d));
            }
            vcpu_parts.extend(parts);
        }
        out.extend(vcpu_parts);
        let mut parts = part_diffs(None, &self.parts, &replayed.parts);
        if !out.is_empty() || parts.iter().any(|d| !is_whole(d)) {
            parts.retain(|d| !is_whole(d));
        }
        out.extend(parts);
        out
    }

    /// Every difference between this recorded summary and the machine `m`
    /// now (at the same count): [`StateSummary::compare_state`], then the
    /// RAM regions that differ, ascending, each with what is known of the
    /// differing pages.
    ///
    /// `history`, if given, should be the replay's tracker as brought up to
    /// date at the previous summary ([`SummaryTracker::advance`] when that
    /// summary's hash matched). When its count is this summary's
    /// [`StateSummary::since`], the differing pages of every region the
    /// trace lists pages for are named exactly ([`PageDiff::Exact`]).
    /// Without it they are exact only for a trace's first summary.
    pub fn compare_machine(
        &self,
        m: &Machine,
        history: Option<&SummaryTracker>,
    ) -> Vec<Difference> {
        let state = m.save_state();
        let replayed = StateSummary {
            vcpus: vcpus_of(&state),
            parts: machine_parts(&state),
            ..StateSummary::default()
        };
        let mut out = self.compare_state(&replayed);
        out.extend(self.compare_ram(m.ram(), history));
        out
    }

    /// The RAM part of [`StateSummary::compare_machine`].
    fn compare_ram(&self, ram: &GuestRam, history: Option<&SummaryTracker>) -> Vec<Difference> {
        let whole = u64::from(region_count(ram)) << REGION_SHIFT;
        if self.region_shift != REGION_SHIFT || self.zone_shift != ZONE_SHIFT {
            // Regions of another size cannot be compared one by one.
            return vec![Difference::Ram {
                start: 0,
                end: whole,
                pages: PageDiff::NotLocated { since: self.since },
            }];
        }
        // The replay's page and region hashes now; with a history of this
        // RAM only the pages written since it are hashed, and those that
        // changed are known.
        let history = history.filter(|t| t.instance == Some(ram.instance()));
        let mut now = history.cloned().unwrap_or_default();
        let changed = now.refresh(ram);
        now.refresh_regions(ram, &changed);
        // What the recorded lists are relative to, as far as the replay
        // has it: its own tables at `since` (which matched the recording).
        let at_since = history.filter(|t| self.since.is_some() && t.icount == self.since);
        let (base, base_regions): (Base<'_>, Option<&[u64]>) = match (self.since, at_since) {
            (None, _) => (Base::Zero, None),
            (Some(_), Some(t)) => (Base::Table(&t.hashes), Some(&t.regions[..])),
            (Some(_), None) => (Base::Unknown, None),
        };
        let replay_changed: &[u64] = if at_since.is_some() { &changed } else { &[] };
        let listed = |r: u32| {
            self.regions
                .binary_search_by_key(&r, |e| e.0)
                .ok()
                .map(|k| self.regions[k].1)
        };
        // The recorded hash of region `r`, if known.
        let recorded_region = |r: u32| -> Option<u64> {
            listed(r).or(match base {
                Base::Zero => Some(0),
                _ => base_regions.map(|t| t.get(r as usize).copied().unwrap_or(0)),
            })
        };
        let now_zones = zone_hashes(&now.regions);
        let per_zone = 1u32 << (ZONE_SHIFT - REGION_SHIFT);
        let zones = (self.zone_count as usize).max(now_zones.len()) as u32;
        let mut out = Vec::new();
        for z in 0..zones {
            let rec = self
                .zones
                .binary_search_by_key(&z, |e| e.0)
                .map_or(0, |k| self.zones[k].1);
            if rec == now_zones.get(z as usize).copied().unwrap_or(0) {
                continue;
            }
            let before = out.len();
            for r in z * per_zone..(z + 1) * per_zone {
                let cur = now.regions.get(r as usize).copied().unwrap_or(0);
                // Unknown recorded hashes are the unlisted regions without
                // a base: the recording did not change them since `since`.
                let Some(rec_r) = (if rec == 0 {
                    Some(0)
                } else {
                    recorded_region(r)
                }) else {
                    continue;
                };
                if rec_r == cur {
                    continue;
                }
                let start = u64::from(r) << REGION_SHIFT;
                let pages =
                    self.region_pages_diff(ram, r, rec_r, &now.hashes, &base, replay_changed);
                out.push(Difference::Ram {
                    start,
                    end: start + (1 << REGION_SHIFT),
                    pages,
                });
            }
            if out.len() == before {
                // The differing region is one the recording left alone
                // since `since`, and the replay has no tables from then.
                let start = u64::from(z) << ZONE_SHIFT;
                out.push(Difference::Ram {
                    start,
                    end: (start + (1 << ZONE_SHIFT)).min(whole.max(start + 1)),
                    pages: PageDiff::NotLocated { since: self.since },
                });
            }
        }
        out
    }

    /// Which pages of differing region `r` differ: `now` holds the replay's
    /// page hashes, `rec` the recorded region hash.
    fn region_pages_diff(
        &self,
        ram: &GuestRam,
        r: u32,
        rec: u64,
        now: &[u64],
        base: &Base<'_>,
        replay_changed: &[u64],
    ) -> PageDiff {
        let in_region = |gpa: u64| gpa >> REGION_SHIFT == u64::from(r);
        let from = self
            .pages
            .partition_point(|p| p.0 < u64::from(r) << REGION_SHIFT);
        let listed: Vec<(u64, u64)> = self.pages[from..]
            .iter()
            .take_while(|p| in_region(p.0))
            .copied()
            .collect();
        let detailed = self.undetailed.binary_search(&r).is_err();
        let expected = |idx: u64, gpa: u64| -> Option<u64> {
            if rec == 0 {
                return Some(0);
            }
            if let Ok(k) = listed.binary_search_by_key(&gpa, |p| p.0) {
                return Some(listed[k].1);
            }
            match base {
                Base::Zero => Some(0),
                Base::Table(t) => t.get(idx as usize).copied(),
                Base::Unknown => None,
            }
        };
        if rec == 0 || (detailed && !matches!(base, Base::Unknown)) {
            // Every recorded page hash is known: all zero, listed, or
            // unchanged since a base the replay has.
            return PageDiff::Exact(
                region_pages(ram, r)
                    .filter(|&(idx, gpa)| expected(idx, gpa) != Some(now[idx as usize]))
                    .map(|(_, gpa)| gpa)
                    .collect(),
            );
        }
        let differing: Vec<u64> = listed
            .iter()
            .filter(|&&(gpa, h)| index_of(ram, gpa).map_or(0, |i| now[i as usize]) != h)
            .map(|&(gpa, _)| gpa)
            .collect();
        if !differing.is_empty() {
            return PageDiff::AtLeast(differing);
        }
        PageDiff::Unknown {
            since: self.since,
            replay_changed: replay_changed
                .iter()
                .filter_map(|&i| ram.index_gpa(i))
                .filter(|&gpa| in_region(gpa))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MachineConfig;
    use hindsight_cpu::state::reg;
    use hindsight_firmware::EntryMode;

    /// A machine counting in AX forever (`inc ax; jmp $-3` at 0x7C00).
    fn counter() -> Machine {
        let mut m = Machine::new(&MachineConfig {
            memory: 4 << 20,
            ..Default::default()
        })
        .unwrap();
        m.load_flat(
            &[0x40, 0xEB, 0xFD],
            0x7C00,
            EntryMode::Real16 { cs: 0, ip: 0x7C00 },
        )
        .unwrap();
        m
    }

    fn strings(d: &[Difference]) -> Vec<String> {
        d.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_page_hash_sees_every_word_and_keeps_zero_for_zero() {
        let mut page = [0u8; 4096];
        assert_eq!(page_hash(&page), 0);
        page[4095] = 1;
        let one = page_hash(&page);
        assert_ne!(one, 0);
        let mut seen = std::collections::HashSet::new();
        for at in (0..4096).step_by(97) {
            let mut p = page;
            p[at] ^= 0x10;
            assert!(seen.insert(page_hash(&p)), "byte {at}");
            assert_ne!(page_hash(&p), one, "byte {at}");
        }
    }

    #[test]
    fn a_summary_lists_the_pages_changed_since_the_previous_one() {
        let mut m = counter();
        let mut t = SummaryTracker::new();
        m.run_until(1000);
        let first = m.state_summary(&mut t);
        assert_eq!((first.icount, first.since), (1000, None));
        assert_eq!(first.region_count, 4);
        assert_eq!(first.vcpus.len(), 1);
        // The loader's pages are listed relative to all-zero RAM.
        assert!(first.pages.iter().any(|&(gpa, _)| gpa == 0x7000));
        assert!(first.undetailed.is_empty());
        assert_eq!(first.regions.len(), 1, "{:?}", first.regions);
        assert_eq!((first.zone_count, first.zones.len()), (1, 1));

        m.run_until(2000);
        let second = m.state_summary(&mut t);
        assert_eq!(second.since, Some(1000));
        assert!(
            second.pages.is_empty(),
            "nothing written: {:?}",
            second.pages
        );
        assert!(second.regions.is_empty(), "{:?}", second.regions);
        assert_eq!(second.zones, first.zones);
        assert_eq!(second.vcpus[0].icount, 2000);

        m.write_phys(0x20_1234, &[7]).unwrap();
        let third = m.state_summary(&mut t);
        assert_eq!(third.pages.len(), 1);
        assert_eq!(third.pages[0].0, 0x20_1000);
        assert_eq!(third.regions.len(), 1);
        assert_eq!(third.regions[0].0, 2);
        assert_ne!(third.zones, first.zones);
        // A region written back to zero is listed with hash 0.
        m.write_phys(0x20_1234, &[0]).unwrap();
        let fourth = m.state_summary(&mut t);
        assert_eq!(fourth.regions, vec![(2, 0)]);
        assert_eq!(fourth.pages, vec![(0x20_1000, 0)]);
        assert_eq!(fourth.zones, first.zones);
    }

    #[test]
    fn a_summary_caps_its_page_list_and_names_the_regions_left_out() {
        let mut m = counter();
        let mut t = SummaryTracker::new();
        m.state_summary(&mut t);
        // 200 pages in region 1, 100 in region 2, 3 in region 3: region 1
        // does not fit, the others do.
        for (base, n) in [(0x10_0000u64, 200u64), (0x20_0000, 100), (0x30_0000, 3)] {
            for p in 0..n {
                m.write_phys(base + p * 4096, &[1]).unwrap();
            }
        }
        let s = m.state_summary(&mut t);
        assert_eq!(s.undetailed, vec![1]);
        assert_eq!(s.pages.len(), 103);
        assert!(s.pages.iter().all(|&(gpa, _)| gpa >> 20 != 1));
        assert_eq!(s.pages[100].0, 0x30_0000);
    }

    #[test]
    fn a_changed_register_is_named_with_both_values() {
        let mut a = counter();
        let mut b = counter();
        a.run_until(500);
        b.run_until(500);
        let recorded = a.state_summary(&mut SummaryTracker::new());
        assert!(recorded.compare_machine(&b, None).is_empty());
        let mut st = b.save_state();
        st.vcpus[0].gpr[reg::RBX] ^= 0x100;
        b.restore_state(&st).unwrap();
        let d = recorded.compare_machine(&b, None);
        assert_eq!(
            strings(&d),
            vec!["vCPU 0 rbx: recorded 0x0, replayed 0x100".to_string()]
        );
    }

    #[test]
    fn parts_name_what_differs_and_catch_alls_only_when_alone() {
        let mut a = counter();
        a.run_until(100);
        let rec = a.state_summary(&mut SummaryTracker::new());
        let mut other = rec.clone();
        other.vcpus[0].parts[0].hash ^= 1; // x87/SSE
        other.parts[0].hash ^= 1; // uart
        let last = other.parts.len() - 1;
        other.parts[last].hash ^= 1; // whole machine
        let n = other.vcpus[0].parts.len() - 1;
        other.vcpus[0].parts[n].hash ^= 1; // whole vCPU
        assert_eq!(
            strings(&rec.compare_state(&other)),
            vec!["vCPU 0 x87/SSE", "device uart"]
        );
        let mut only_whole = rec.clone();
        only_whole.parts[last].hash ^= 1;
        assert_eq!(
            strings(&rec.compare_state(&only_whole)),
            vec![WHOLE_MACHINE]
        );
        let mut sched = rec.clone();
        let k = sched
            .parts
            .iter()
            .position(|p| p.name == "scheduler")
            .unwrap();
        sched.parts[k].hash ^= 1;
        assert_eq!(
            strings(&rec.compare_state(&sched)),
            vec!["machine scheduler"]
        );
    }

    /// Two machines on the same path; the replay's tracker advanced at the
    /// previous summary; a byte written only in the replay is named by its
    /// page, whether or not the recording changed that region.
    #[test]
    fn a_page_changed_only_in_the_replay_is_named_exactly_with_a_history() {
        let (mut rec_m, mut rep_m) = (counter(), counter());
        let (mut rec_t, mut rep_t) = (SummaryTracker::new(), SummaryTracker::new());
        rec_m.run_until(1000);
        rep_m.run_until(1000);
        rec_m.state_summary(&mut rec_t);
        rep_t.advance(&mut rep_m);
        // Both write the same page of region 3; the recording also writes
        // in region 2; the replay writes a different byte in region 2.
        for m in [&mut rec_m, &mut rep_m] {
            m.run_until(2000);
            m.write_phys(0x30_0000, &[9]).unwrap();
        }
        rec_m.write_phys(0x20_0000, &[5]).unwrap();
        rep_m.write_phys(0x20_0000, &[5]).unwrap();
        rep_m.write_phys(0x21_f004, &[1]).unwrap();
        let recorded = rec_m.state_summary(&mut rec_t);
        let d = recorded.compare_machine(&rep_m, Some(&rep_t));
        assert_eq!(
            strings(&d),
            vec!["RAM 0x00200000..0x00300000 (page 0x0021f000)"]
        );
        // Without the history only what the trace lists can be checked.
        let d = recorded.compare_machine(&rep_m, None);
        assert_eq!(d.len(), 1);
        assert!(matches!(
            &d[0],
            Difference::Ram {
                pages: PageDiff::Unknown { .. },
                ..
            }
        ));
        // A page the recording changed and the replay changed otherwise is
        // named without a history too.
        rep_m.write_phys(0x30_0000, &[8]).unwrap();
        let d = recorded.compare_machine(&rep_m, None);
        assert_eq!(
            strings(&d)[1],
            "RAM 0x00300000..0x00400000 (page(s) 0x00300000, maybe more)"
        );
    }

    #[test]
    fn a_region_the_recording_left_alone_is_located_by_its_zone_only_without_a_history() {
        let (mut a, mut b) = (counter(), counter());
        let mut t = SummaryTracker::new();
        a.run_until(1000);
        a.state_summary(&mut t);
        a.run_until(2000);
        let recorded = a.state_summary(&mut t);
        assert!(recorded.regions.is_empty());
        b.run_until(2000);
        b.write_phys(0x1000, &[1]).unwrap();
        assert_eq!(
            strings(&recorded.compare_machine(&b, None)),
            vec![
                "RAM 0x00000000..0x00400000 (region and page not known: not changed by the \
                 recording since icount 1000)"
            ]
        );
    }

    #[test]
    fn a_region_recorded_zero_names_the_replays_pages() {
        let a = counter();
        let mut b = counter();
        let recorded = a.state_summary(&mut SummaryTracker::new());
        b.write_phys(0x30_2000, &[1]).unwrap();
        let d = recorded.compare_machine(&b, None);
        assert_eq!(
            strings(&d),
            vec!["RAM 0x00300000..0x00400000 (page 0x00302000)"]
        );
    }

    #[test]
    fn an_epoch_started_elsewhere_makes_the_tracker_rehash_everything() {
        let mut m = counter();
        let mut t = SummaryTracker::new();
        m.state_summary(&mut t);
        m.write_phys(0x10_0000, &[1]).unwrap();
        m.start_dirty_epoch(); // behind the tracker's back
        let s = m.state_summary(&mut t);
        assert_eq!(s.pages.len(), 1, "{:?}", s.pages);
        assert_eq!(s.pages[0].0, 0x10_0000);
    }
}
