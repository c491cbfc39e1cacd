//! Running to a debugger's breakpoints and watchpoints, both ways.
//!
//! The breakpoints and watchpoints are the machine's
//! ([`Machine::set_debug`]): the vCPUs stop on them at full speed.
//! Forward, [`Timeline::resume`] runs until the first hit. Backward,
//! [`Timeline::reverse_resume`] searches history one stretch at a time,
//! latest first (a stretch runs from a checkpoint to the next one, the last
//! to the present): the stretch is replayed from its checkpoint at full
//! speed, stopping at every hit and going on, and the last hit seen wins;
//! the first stretch (going backwards) with a hit ends the search. The cost
//! is one restore plus one replay of each stretch searched (no single
//! stepping), then a seek to the hit. With nothing set, nothing can hit:
//! the search goes straight to the beginning.
//!
//! # Write watchpoints: skipping stretches
//! With only write watchpoints set, a stretch is passed over without
//! replay when no page behind the watched addresses can have been written
//! in it. The pages written between two checkpoints are known (the later
//! checkpoint holds them); the translations the stretch used are known
//! too: the timeline logs every paging-regime change (CR0, CR3, CR4, EFER
//! writes, vCPU resets) of its history, and a page walk done on the
//! checkpoint's memory gives the same answer all through the stretch if no
//! page-table page it read was written there (write translations are made
//! within the stretch: the write TLB is flushed at every checkpoint). So a
//! stretch is skipped when, for every regime in force in it, each watched
//! page's walk read only unwritten pages and led to an unwritten RAM page
//! (or to none). Only vCPUs write RAM (there is no DMA device yet; one
//! would have to mark the pages it writes dirty, as vCPUs do).
//!
//! Where a reverse search leaves the machine follows gdb's convention for
//! reverse execution: at a breakpoint, before its instruction (as forward);
//! at a watchpoint, before the instruction that accessed the data, so the
//! value read there is the one before the access.

use std::collections::HashSet;

use hindsight_cpu::debug::{DebugHit, DebugSet, WatchKind, Watchpoint};
use hindsight_cpu::debug_walk::debug_translate;
use hindsight_cpu::paging_log::PagingRegime;
use hindsight_cpu::Cpu;
use hindsight_machine::layout::PAGE_SIZE;
use hindsight_machine::{Exit, Machine};

use super::{Timeline, TimelineError};

/// A debugger stop found by [`Timeline::resume`] or
/// [`Timeline::reverse_resume`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugStop {
    /// Where the machine is left.
    pub icount: u64,
    /// The vCPU that hit.
    pub vcpu: usize,
    /// What it hit.
    pub hit: DebugHit,
}

/// How [`Timeline::resume`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resumed {
    /// The target count was reached without a hit.
    Reached(u64),
    /// A breakpoint or watchpoint stopped the run first.
    Hit(DebugStop),
}

impl Timeline {
    /// Runs forward from the present towards `to` like
    /// [`Timeline::advance`], stopping at the first breakpoint or
    /// watchpoint hit. A breakpoint at the present itself does not stop it
    /// (the run resumes from there).
    pub fn resume(&mut self, m: &mut Machine, to: u64) -> Result<Resumed, TimelineError> {
        self.check_present(m)?;
        if to <= self.pos {
            return Ok(Resumed::Reached(self.pos));
        }
        let limit = self.limit();
        m.resume_over_breakpoints();
        match self.run_forward(m, to.min(limit), true) {
            Ok(()) => {}
            Err(TimelineError::Stopped {
                icount,
                exit: Exit::Debug { vcpu, hit },
            }) => return Ok(Resumed::Hit(DebugStop { icount, vcpu, hit })),
            Err(e) => return Err(e),
        }
        if to > limit {
            return Err(TimelineError::EndOfHistory { end: limit });
        }
        Ok(Resumed::Reached(to))
    }

    /// Finds the last breakpoint or watchpoint hit before the present (see
    /// the module documentation) and leaves the machine there. Without
    /// one, [`TimelineError::BeginningOfHistory`] with the machine at the
    /// origin. `interrupted` is asked between stretches; when it answers
    /// true the search stops with the machine at the start of the last
    /// stretch searched, and the answer is `Ok(None)`.
    pub fn reverse_resume(
        &mut self,
        m: &mut Machine,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Option<DebugStop>, TimelineError> {
        self.check_present(m)?;
        if self.pos <= self.origin {
            return Err(self.beginning());
        }
        if m.debug_set().is_none() {
            // Nothing can hit: the search would end at the beginning.
            self.seek_within(m, self.origin)?;
            return Err(self.beginning());
        }
        let writes_only = m.debug_set().and_then(write_watches_only);
        let mut hi = self.pos;
        let mut i = self.store.find(hi - 1).ok_or_else(|| self.beginning())?;
        loop {
            let skip = match &writes_only {
                Some(watches) => self.unwritten_behind(m, i, hi, watches)?,
                None => false,
            };
            if skip {
                self.stats.stretches_skipped += 1;
            } else if let Some(hit) = self.last_hit(m, i, hi)? {
                let at = match hit.hit {
                    DebugHit::Breakpoint { .. } => hit.icount,
                    // Before the accessing instruction.
                    DebugHit::Watch { .. } => hit.icount - 1,
                };
                self.seek_within(m, at)?;
                return Ok(Some(DebugStop { icount: at, ..hit }));
            }
            if i == 0 {
                self.seek_within(m, self.origin)?;
                return Err(self.beginning());
            }
            if interrupted() {
                self.seek_within(m, self.icount_of(i))?;
                return Ok(None);
            }
            hi = self.icount_of(i);
            i -= 1;
        }
    }

    /// Whether no page behind the write watchpoints can have been written
    /// from checkpoint `i` to `hi`, so the stretch holds no hit. True only
    /// when the next checkpoint (at or after `hi`) lists the pages written
    /// since checkpoint `i`, and, for every paging regime in force in the
    /// stretch (each vCPU's at checkpoint `i`, and every change logged
    /// before `hi`), the walk of each watched page, done on the memory of
    /// checkpoint `i`, read no page-table page written in the stretch
    /// (so every walk in the stretch gave the same answer) and led to a RAM
    /// page not written in it (or to no page: a write there faults). Leaves
    /// the machine at checkpoint `i`.
    fn unwritten_behind(
        &mut self,
        m: &mut Machine,
        i: usize,
        hi: u64,
        watches: &[Watchpoint],
    ) -> Result<bool, TimelineError> {
        let Some(written) = self.written_since(i, hi) else {
            return Ok(false);
        };
        let is_written = |page: u64| written.binary_search(&page).is_ok();
        self.restore(m, i)?;
        let from = m.icount();
        let mut regimes: Vec<PagingRegime> = m.cpus().iter().map(PagingRegime::of).collect();
        let later = self.paging.iter().filter(|c| c.0 >= from && c.0 < hi);
        regimes.extend(later.map(|c| c.2));
        let mut seen = HashSet::new();
        regimes.retain(|r| seen.insert(*r));
        let mut scratch = Cpu::new(0);
        for regime in &regimes {
            regime.apply(&mut scratch);
            for page in watches.iter().flat_map(watched_pages) {
                let mut walked = Vec::new();
                let mut read = |gpa: u64| {
                    walked.push(gpa & !(PAGE_SIZE - 1));
                    let mut b = [0u8; 8];
                    m.read_phys(gpa, &mut b)
                        .ok()
                        .map(|()| u64::from_le_bytes(b))
                };
                let target = debug_translate(&scratch, &mut read, page);
                if walked.iter().any(|&p| is_written(p)) {
                    return Ok(false);
                }
                if let Some(gpa) = target {
                    let page = gpa & !(PAGE_SIZE - 1);
                    let ram = m.read_phys(page, &mut [0u8; 1]).is_ok();
                    if !ram || is_written(page) {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    /// Replays from checkpoint `i` to `hi` at full speed; the last hit on
    /// the way (breakpoints before `hi`, watchpoints up to `hi`).
    fn last_hit(
        &mut self,
        m: &mut Machine,
        i: usize,
        hi: u64,
    ) -> Result<Option<DebugStop>, TimelineError> {
        self.restore(m, i)?;
        let mut last = None;
        loop {
            match self.run_forward(m, hi, true) {
                Ok(()) => return Ok(last),
                Err(TimelineError::Stopped {
                    icount,
                    exit: Exit::Debug { vcpu, hit },
                }) => {
                    last = Some(DebugStop { icount, vcpu, hit });
                    m.resume_over_breakpoints();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// How far forward history can go: a replay's trace end; in a live
    /// session there is no limit (`u64::MAX`).
    pub fn limit(&self) -> u64 {
        match self.kind {
            super::Kind::Live => u64::MAX,
            super::Kind::Replay { end, .. } => end,
        }
    }
}

/// The watchpoints of `set` if it holds only write watchpoints (whose
/// stretches can be skipped by the pages written there).
fn write_watches_only(set: &DebugSet) -> Option<Vec<Watchpoint>> {
    let only = set.breakpoints.is_empty()
        && !set.watchpoints.is_empty()
        && set.watchpoints.iter().all(|w| w.kind == WatchKind::Write);
    only.then(|| set.watchpoints.clone())
}

/// The linear addresses of the 4 KiB pages `w` covers.
fn watched_pages(w: &Watchpoint) -> impl Iterator<Item = u64> {
    let first = w.addr & !(PAGE_SIZE - 1);
    let last = w.addr.saturating_add(w.len.max(1) - 1) & !(PAGE_SIZE - 1);
    (first..=last).step_by(PAGE_SIZE as usize)
}
