//! Incremental checkpoints of a whole machine (brief invariant 6).
//!
//! A [`Checkpoint`] is the machine state ([`crate::snapshot::MachineState`],
//! encoded) at an instruction count plus RAM pages, each lz4-compressed or
//! elided when zero. The first checkpoint of a [`CheckpointStore`] holds
//! every non-zero page; each later one holds the pages dirtied since the
//! checkpoint the machine last came from (its *base*), so its size follows
//! the work done, not the size of RAM.
//!
//! # Invariants
//! Checkpoints are ordered by instruction count, one per count. For
//! consecutive checkpoints `a < b`, `b` holds (at least) every page
//! written between `a` and `b`, with its content at `b`. So the content of
//! page `p` at checkpoint `c` is its version in the latest checkpoint at or
//! before `c` that holds it, or zero if none does; and the pages that can
//! differ between checkpoints `a` and `b` are those held by the checkpoints
//! after `a` up to `b`.
//!
//! The store tracks where the machine is: its base checkpoint, and the
//! pages written since (the RAM dirty bitmap of the current epoch, which
//! the store restarts at every checkpoint and restore). Restoring checkpoint
//! `c` rewrites only the pages that can differ between the machine and
//! `c`: those dirtied since the base, plus those held by the checkpoints
//! between the base and `c` (either direction), each set to its content at
//! `c`. Pages already right are left alone.
//!
//! # One timeline
//! A restore keeps the checkpoints after the one restored: replay is
//! deterministic, so running on from checkpoint `c` passes through the
//! same states, and seeking backwards then forwards (restore 2, then 5,
//! then 1) needs no re-execution. A checkpoint taken after a restore is
//! inserted in time order. This assumes the machine stays on the timeline
//! the checkpoints were taken on: a caller that changes the future (new
//! console input after going back) must [`CheckpointStore::truncate`] the
//! checkpoints after the point of change. A checkpoint taken at an existing
//! checkpoint's instruction count is compared with it and refused when
//! the machine states differ ([`SnapshotError::Diverged`]).
//!
//! # Thinning
//! [`CheckpointStore::remove`] merges a checkpoint's pages into its
//! successor (keeping the successor's newer versions), so later restores
//! stay correct; [`CheckpointStore::bytes`] and [`Checkpoint::bytes`]
//! account the memory held, for a budget.
//!
//! The store owns the machine's dirty epochs: if anything else starts one
//! ([`Machine::start_dirty_epoch`]), the store no longer knows which pages
//! changed. It then refuses to take a checkpoint, and the next restore
//! rewrites all of RAM (slower, still exact), after which tracking resumes.

mod page;

use std::collections::{BTreeSet, HashMap};
use std::fmt;

pub use page::PageData;

use crate::codec;
use crate::layout::PAGE_SIZE;
use crate::memory::is_zero;
use crate::snapshot::{MachineState, SnapshotError};
use crate::Machine;
use page::Compressor;

/// A machine's state at one instruction count, with RAM pages.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    icount: u64,
    /// The encoded [`MachineState`] (compact: the vCPUs' TLBs are skipped).
    state: Box<[u8]>,
    /// (page-aligned guest-physical address, content), ascending.
    pages: Vec<(u64, PageData)>,
}

impl Checkpoint {
    /// Virtual time at which it was taken.
    pub fn icount(&self) -> u64 {
        self.icount
    }

    /// The machine state (decoded from its compact encoding).
    pub fn state(&self) -> Result<MachineState, SnapshotError> {
        Ok(codec::decode(&self.state)?)
    }

    /// The encoded machine state ([`crate::codec`]).
    pub fn state_bytes(&self) -> &[u8] {
        &self.state
    }

    /// The pages held: (page-aligned guest-physical address, content),
    /// ascending by address.
    pub fn pages(&self) -> &[(u64, PageData)] {
        &self.pages
    }

    /// Bytes of memory this checkpoint holds (state, page list, page data).
    pub fn bytes(&self) -> usize {
        self.state.len()
            + self.pages.capacity() * std::mem::size_of::<(u64, PageData)>()
            + self
                .pages
                .iter()
                .map(|(_, d)| d.heap_bytes())
                .sum::<usize>()
    }

    /// The version of page `gpa` held here.
    fn page(&self, gpa: u64) -> Option<&PageData> {
        let i = self.pages.binary_search_by_key(&gpa, |&(g, _)| g).ok()?;
        Some(&self.pages[i].1)
    }
}

/// What a restore did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreStats {
    /// Pages considered (those that could differ).
    pub pages_checked: usize,
    /// Pages rewritten (those that did differ).
    pub pages_written: usize,
    /// The store had lost track of the machine and checked all of RAM.
    pub full_scan: bool,
}

/// Checkpoints of one machine along one timeline (see the module
/// documentation).
#[derive(Default)]
pub struct CheckpointStore {
    /// Ascending by instruction count, unique.
    cps: Vec<Checkpoint>,
    /// For each page held anywhere: the instruction counts of the
    /// checkpoints holding it, ascending.
    versions: HashMap<u64, Vec<u64>>,
    /// Instruction count of the checkpoint the machine's RAM descends from
    /// (plus the pages dirty in `epoch` and `extra`); `None`: unknown.
    base: Option<u64>,
    /// The machine's RAM ([`crate::GuestRam::instance`]) and its dirty
    /// epoch that started at `base`.
    epoch: (u64, u64),
    /// Pages that may differ from `base` besides the dirty ones (left by
    /// removing the base checkpoint).
    extra: BTreeSet<u64>,
    compressor: Compressor,
}

impl fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointStore")
            .field("checkpoints", &self.cps.len())
            .field("bytes", &self.bytes())
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl CheckpointStore {
    /// An empty store: its first checkpoint will be a full one.
    pub fn new() -> CheckpointStore {
        CheckpointStore::default()
    }

    /// Number of checkpoints.
    pub fn len(&self) -> usize {
        self.cps.len()
    }

    /// Whether the store holds no checkpoint.
    pub fn is_empty(&self) -> bool {
        self.cps.is_empty()
    }

    /// Checkpoint `index` (ascending by instruction count).
    pub fn get(&self, index: usize) -> Option<&Checkpoint> {
        self.cps.get(index)
    }

    /// The checkpoints, ascending by instruction count.
    pub fn iter(&self) -> impl Iterator<Item = &Checkpoint> {
        self.cps.iter()
    }

    /// Index of the latest checkpoint at or before `icount` (where a seek
    /// to `icount` starts replaying).
    pub fn find(&self, icount: u64) -> Option<usize> {
        self.cps
            .partition_point(|c| c.icount <= icount)
            .checked_sub(1)
    }

    /// Index of the checkpoint the machine last came from (taken or
    /// restored), if the store knows.
    pub fn base(&self) -> Option<usize> {
        self.position(self.base?)
    }

    /// Bytes of memory held: every checkpoint plus the page index.
    pub fn bytes(&self) -> usize {
        let lists: usize = self
            .versions
            .values()
            .map(|l| l.capacity() * std::mem::size_of::<u64>())
            .sum();
        let entry = std::mem::size_of::<(u64, Vec<u64>)>() + 1;
        self.cps.iter().map(Checkpoint::bytes).sum::<usize>()
            + self.versions.capacity() * entry
            + lists
    }

    /// Index of the checkpoint taken at exactly `icount`.
    fn position(&self, icount: u64) -> Option<usize> {
        self.cps.binary_search_by_key(&icount, |c| c.icount).ok()
    }

    /// Checks that the machine's RAM is the base checkpoint's plus the
    /// pages dirty in the store's epoch (and `extra`).
    fn tracked(&self, m: &Machine) -> Result<u64, SnapshotError> {
        let base = self.base.ok_or_else(|| {
            SnapshotError::Untracked("no checkpoint is known to be the machine's origin".into())
        })?;
        let (instance, epoch) = self.epoch;
        if m.ram().instance() != instance {
            return Err(SnapshotError::Untracked(
                "the checkpoints were taken on another machine".into(),
            ));
        }
        if m.ram().dirty_epoch() != epoch {
            return Err(SnapshotError::Untracked(format!(
                "a dirty epoch was started outside the store (epoch {}, expected {epoch})",
                m.ram().dirty_epoch(),
            )));
        }
        Ok(base)
    }

    /// Makes checkpoint `icount` the machine's base and starts a new epoch.
    fn rebase(&mut self, m: &mut Machine, icount: u64) {
        m.start_dirty_epoch();
        self.epoch = (m.ram().instance(), m.ram().dirty_epoch());
        self.base = Some(icount);
        self.extra.clear();
    }

    /// Checkpoints the machine at its current instruction count and returns
    /// the checkpoint's index. The first checkpoint holds every non-zero
    /// page; later ones the pages dirtied since the base. Starts a new
    /// dirty epoch.
    pub fn take(&mut self, m: &mut Machine) -> Result<usize, SnapshotError> {
        let icount = m.icount();
        let state = codec::encode(&m.save_state())?.into_boxed_slice();
        let pages = if self.cps.is_empty() {
            self.full_pages(m)
        } else {
            let base = self.tracked(m)?;
            if icount < base {
                return Err(SnapshotError::Untracked(format!(
                    "the machine is at icount {icount}, before the checkpoint it came from \
                     (icount {base})"
                )));
            }
            if let Some(pos) = self.position(icount) {
                let gpas = self.pages_between(m, self.position(base), pos);
                self.same_as(m, pos, &state, &gpas)?;
                self.rebase(m, icount);
                return Ok(pos);
            }
            self.dirty_pages(m)
        };
        let pos = self.cps.partition_point(|c| c.icount < icount);
        for (gpa, _) in &pages {
            let list = self.versions.entry(*gpa).or_default();
            let at = list.partition_point(|&ic| ic < icount);
            list.insert(at, icount);
        }
        self.cps.insert(
            pos,
            Checkpoint {
                icount,
                state,
                pages,
            },
        );
        self.rebase(m, icount);
        Ok(pos)
    }

    /// The pages that can differ between the machine and checkpoint `pos`:
    /// dirtied since the base (at index `base`), or held by a checkpoint
    /// between the base and `pos`; every RAM page when the base is unknown.
    /// Ascending, without repeats.
    fn pages_between(&self, m: &Machine, base: Option<usize>, pos: usize) -> Vec<u64> {
        let Some(b) = base else {
            return m.ram().pages().collect();
        };
        let (lo, hi) = (b.min(pos), b.max(pos));
        let held = self.cps[lo + 1..=hi]
            .iter()
            .flat_map(|c| c.pages.iter().map(|p| p.0));
        let mut gpas: Vec<u64> = m
            .ram()
            .dirty_pages()
            .chain(self.extra.iter().copied())
            .chain(held)
            .collect();
        gpas.sort_unstable();
        gpas.dedup();
        gpas
    }

    /// Checks that the machine, whose encoded state is `state`, is
    /// checkpoint `pos`: same state, and each page of `gpas` (those that
    /// can differ) holds that checkpoint's content.
    fn same_as(
        &self,
        m: &Machine,
        pos: usize,
        state: &[u8],
        gpas: &[u64],
    ) -> Result<(), SnapshotError> {
        let icount = self.cps[pos].icount;
        let diverged = |what: String| Err(SnapshotError::Diverged { icount, what });
        if *self.cps[pos].state != *state {
            return diverged("machine state".into());
        }
        let ram = m.ram();
        let mut buf = [0u8; PAGE_SIZE as usize];
        for &gpa in gpas {
            let Some(current) = ram.read_page(gpa) else {
                continue;
            };
            let same = match self.version_at(gpa, icount) {
                Some((ic, data)) => {
                    data.expand_into(&mut buf)
                        .map_err(|problem| SnapshotError::CorruptPage {
                            icount: ic,
                            gpa,
                            problem,
                        })?;
                    buf == *current
                }
                None => is_zero(current),
            };
            if !same {
                return diverged(format!("RAM page {gpa:#x}"));
            }
        }
        Ok(())
    }

    /// Every non-zero RAM page, compressed.
    fn full_pages(&mut self, m: &Machine) -> Vec<(u64, PageData)> {
        let ram = m.ram();
        ram.pages()
            .filter_map(|gpa| {
                let page = ram.read_page(gpa)?;
                (!is_zero(page)).then(|| (gpa, self.compressor.compress(page)))
            })
            .collect()
    }

    /// The pages dirtied since the base (zero ones as [`PageData::Zero`]).
    fn dirty_pages(&mut self, m: &Machine) -> Vec<(u64, PageData)> {
        let ram = m.ram();
        let mut gpas: Vec<u64> = ram
            .dirty_pages()
            .chain(self.extra.iter().copied())
            .collect();
        gpas.sort_unstable();
        gpas.dedup();
        gpas.into_iter()
            .filter_map(|gpa| Some((gpa, self.compressor.compress(ram.read_page(gpa)?))))
            .collect()
    }

    /// Restores checkpoint `index`: machine state and RAM. Rewrites only
    /// the pages that can differ (see the module documentation); when the
    /// store has lost track of the machine's RAM, checks every page. The
    /// checkpoints after `index` are kept.
    pub fn restore(
        &mut self,
        m: &mut Machine,
        index: usize,
    ) -> Result<RestoreStats, SnapshotError> {
        let target = self.cps.get(index).ok_or(SnapshotError::NoCheckpoint {
            index,
            len: self.cps.len(),
        })?;
        let icount = target.icount;
        let state = target.state()?;
        state.check(m.cpus().len(), m.ram().size())?;
        let base = self.tracked(m).ok().and_then(|b| self.position(b));
        let gpas = self.pages_between(m, base, index);
        let full_scan = base.is_none();
        let mut written = 0;
        let mut buf = [0u8; PAGE_SIZE as usize];
        for &gpa in &gpas {
            match self.set_page(m, gpa, icount, &mut buf) {
                Ok(w) => written += usize::from(w),
                Err(e) => {
                    self.base = None;
                    return Err(e);
                }
            }
        }
        m.restore_state(&state)?;
        self.rebase(m, icount);
        Ok(RestoreStats {
            pages_checked: gpas.len(),
            pages_written: written,
            full_scan,
        })
    }

    /// Sets RAM page `gpa` to its content at checkpoint `icount`, using
    /// `buf`; returns whether it had to be written.
    fn set_page(
        &self,
        m: &mut Machine,
        gpa: u64,
        icount: u64,
        buf: &mut [u8; PAGE_SIZE as usize],
    ) -> Result<bool, SnapshotError> {
        let Some(current) = m.ram().read_page(gpa) else {
            return Ok(false);
        };
        let target = match self.version_at(gpa, icount) {
            Some((ic, data)) => {
                data.expand_into(buf)
                    .map_err(|problem| SnapshotError::CorruptPage {
                        icount: ic,
                        gpa,
                        problem,
                    })?;
                Some(&*buf)
            }
            None => None,
        };
        let same = match target {
            Some(t) => t == current,
            None => is_zero(current),
        };
        if same {
            return Ok(false);
        }
        m.restore_page(gpa, target)
            .map_err(|e| SnapshotError::Inconsistent(format!("restoring page {gpa:#x}: {e}")))?;
        Ok(true)
    }

    /// The latest version of page `gpa` at or before `icount`, with the
    /// instruction count of the checkpoint holding it; `None`: zero.
    fn version_at(&self, gpa: u64, icount: u64) -> Option<(u64, &PageData)> {
        let list = self.versions.get(&gpa)?;
        let n = list.partition_point(|&ic| ic <= icount);
        let ic = *list.get(n.checked_sub(1)?)?;
        let data = self.cps.get(self.position(ic)?)?.page(gpa)?;
        Some((ic, data))
    }

    /// Removes checkpoint `index` (thinning), merging its pages into the
    /// next checkpoint where that one has no newer version, so every other
    /// checkpoint still restores exactly. Removing the machine's base moves
    /// the base to a neighbour.
    pub fn remove(&mut self, index: usize) -> Result<(), SnapshotError> {
        if index >= self.cps.len() {
            return Err(SnapshotError::NoCheckpoint {
                index,
                len: self.cps.len(),
            });
        }
        let cp = self.cps.remove(index);
        let removed_gpas: Vec<u64> = cp.pages.iter().map(|p| p.0).collect();
        for gpa in &removed_gpas {
            if let Some(list) = self.versions.get_mut(gpa) {
                list.retain(|&ic| ic != cp.icount);
            }
        }
        if let Some(succ) = self.cps.get_mut(index) {
            let mut moved = Vec::new();
            for (gpa, data) in cp.pages {
                if succ.page(gpa).is_none() {
                    if let Some(list) = self.versions.get_mut(&gpa) {
                        let at = list.partition_point(|&ic| ic < succ.icount);
                        list.insert(at, succ.icount);
                    }
                    moved.push((gpa, data));
                }
            }
            if !moved.is_empty() {
                succ.pages.extend(moved);
                succ.pages.sort_unstable_by_key(|p| p.0);
            }
        }
        for gpa in &removed_gpas {
            if self.versions.get(gpa).is_some_and(Vec::is_empty) {
                self.versions.remove(gpa);
            }
        }
        if self.base == Some(cp.icount) {
            // RAM = the removed checkpoint + dirty pages. Relative to its
            // predecessor, the removed checkpoint's pages may differ too;
            // relative to its successor (when it was the first), the
            // successor's pages.
            if let Some(prev) = index.checked_sub(1).map(|i| &self.cps[i]) {
                self.base = Some(prev.icount);
                self.extra.extend(removed_gpas);
            } else if let Some(next) = self.cps.get(index) {
                self.base = Some(next.icount);
                self.extra.extend(next.pages.iter().map(|p| p.0));
            } else {
                self.base = None;
            }
        }
        Ok(())
    }

    /// Drops every checkpoint from index `len` on (the future changed, e.g.
    /// new input after going back in time).
    pub fn truncate(&mut self, len: usize) {
        while self.cps.len() > len {
            // Cannot fail: the index exists.
            let _ = self.remove(self.cps.len() - 1);
        }
    }

    /// Drops every checkpoint; the next one taken is a full one.
    pub fn clear(&mut self) {
        self.cps.clear();
        self.versions.clear();
        self.base = None;
        self.extra.clear();
    }
}
