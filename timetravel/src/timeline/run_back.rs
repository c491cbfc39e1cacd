//! Running backwards: the last instruction count before the present at
//! which a condition held (a breakpoint reached, a watched value changed).
//!
//! History is searched one *stretch* at a time, latest first: a stretch
//! runs from a checkpoint to the next one (the last from the checkpoint
//! before the present to the count just before it). Each is replayed from
//! its checkpoint one instruction count at a time (`run_until(icount +
//! 1)`), the condition evaluated at every count and the last hit
//! remembered; the first stretch (going backwards) with a hit ends the
//! search and the machine is put at that hit.
//!
//! # Cost
//! Per stretch searched: one checkpoint restore plus single-stepping the
//! stretch, which costs one pass of the run loop per instruction count
//! (several times slower than running freely: see the `timeline_bench`
//! example) plus the condition; then one more restore and replay to the
//! hit. A search through history without any hit single-steps all of it.
//! A condition that names the pages it depends on ([`Condition::pages`],
//! as [`MemoryChange`] does) skips, without replay, every stretch whose
//! checkpoint shows none of those pages written, so a watchpoint on data
//! written rarely searches long histories quickly. Idle time (every vCPU
//! halted) is stepped one count at a time like instructions.

use hindsight_machine::layout::PAGE_SIZE;
use hindsight_machine::Machine;

use super::movement::check_reached;
use super::{Timeline, TimelineError};

/// What [`Timeline::run_back`] looks for. Every closure
/// `FnMut(&Machine) -> bool` is one: a predicate on the machine's state
/// (a breakpoint address in RIP, a value in memory).
pub trait Condition {
    /// Evaluated at the first count of each stretch replayed, just after a
    /// checkpoint was restored. By default [`Condition::holds`]; a
    /// condition on change (old against new) notes the state here and
    /// answers false.
    fn start(&mut self, m: &Machine) -> bool {
        self.holds(m)
    }

    /// Whether the condition holds with the machine at its instruction
    /// count, one count after the previous evaluation.
    fn holds(&mut self, m: &Machine) -> bool;

    /// Guest-physical pages (page-aligned) such that the condition cannot
    /// hold at any count of a stretch in which none of them was written
    /// (true of a change of memory, not of a state predicate). `None`, the
    /// default: every stretch is replayed.
    fn pages(&self) -> Option<Vec<u64>> {
        None
    }
}

impl<F: FnMut(&Machine) -> bool> Condition for F {
    fn holds(&mut self, m: &Machine) -> bool {
        self(m)
    }
}

/// A change of guest-physical memory: holds at the counts whose last
/// instruction changed the bytes at `gpa..gpa + len` (a write
/// watchpoint, reported when the value changes). Bytes outside RAM read
/// as unchanged.
#[derive(Clone, Debug)]
pub struct MemoryChange {
    gpa: u64,
    old: Vec<u8>,
    new: Vec<u8>,
}

impl MemoryChange {
    /// Watches `len` bytes at guest-physical `gpa`.
    pub fn new(gpa: u64, len: usize) -> MemoryChange {
        MemoryChange {
            gpa,
            old: vec![0; len],
            new: vec![0; len],
        }
    }

    /// The bytes before the last change seen (after a hit: the old value).
    pub fn old_value(&self) -> &[u8] {
        &self.old
    }

    /// The bytes at the last evaluation (after a hit: the new value).
    pub fn value(&self) -> &[u8] {
        &self.new
    }

    fn read(&mut self, m: &Machine) {
        if m.read_phys(self.gpa, &mut self.new).is_err() {
            self.new.clone_from(&self.old);
        }
    }
}

impl Condition for MemoryChange {
    fn start(&mut self, m: &Machine) -> bool {
        self.read(m);
        self.old.clone_from(&self.new);
        false
    }

    fn holds(&mut self, m: &Machine) -> bool {
        std::mem::swap(&mut self.old, &mut self.new);
        self.read(m);
        if self.old == self.new {
            return false;
        }
        true
    }

    fn pages(&self) -> Option<Vec<u64>> {
        let len = self.new.len() as u64;
        if len == 0 {
            return Some(Vec::new());
        }
        let page = |a: u64| a & !(PAGE_SIZE - 1);
        let (first, last) = (page(self.gpa), page(self.gpa.saturating_add(len - 1)));
        Some((first..=last).step_by(PAGE_SIZE as usize).collect())
    }
}

impl Timeline {
    /// Finds the last instruction count before the present at which
    /// `cond` held, evaluated after each instruction (and at the origin),
    /// and leaves the machine there. Without one,
    /// [`TimelineError::BeginningOfHistory`] with the machine at the
    /// origin. See the module documentation for how and at what cost.
    pub fn run_back<C: Condition + ?Sized>(
        &mut self,
        m: &mut Machine,
        cond: &mut C,
    ) -> Result<u64, TimelineError> {
        self.check_present(m)?;
        if self.pos <= self.origin {
            return Err(self.beginning());
        }
        let pages = cond.pages();
        let mut hi = self.pos - 1;
        let mut i = self.store.find(hi).ok_or_else(|| self.beginning())?;
        loop {
            let skip = pages.as_ref().is_some_and(|p| self.unwritten(i, hi, p));
            if !skip {
                if let Some(hit) = self.search(m, i, hi, cond)? {
                    self.seek_within(m, hit)?;
                    return Ok(hit);
                }
            }
            if i == 0 {
                self.seek_within(m, self.origin)?;
                return Err(self.beginning());
            }
            hi = self.icount_of(i);
            i -= 1;
        }
    }

    /// Whether none of `pages` can have been written between checkpoint
    /// `i` and `hi` (see [`Timeline::written_since`]).
    fn unwritten(&self, i: usize, hi: u64, pages: &[u64]) -> bool {
        self.written_since(i, hi)
            .is_some_and(|written| pages.iter().all(|p| written.binary_search(p).is_err()))
    }

    /// The pages (page-aligned guest-physical addresses, ascending) that
    /// can have been written between checkpoint `i` and `hi`, if that is
    /// known: the next checkpoint, at or after `hi`, holds every page
    /// written since checkpoint `i`.
    pub(super) fn written_since(&self, i: usize, hi: u64) -> Option<Vec<u64>> {
        let next = self.store.get(i + 1).filter(|c| c.icount() >= hi)?;
        Some(next.pages().iter().map(|&(gpa, _)| gpa).collect())
    }

    /// Replays checkpoint `i` to `hi` a count at a time; the last count at
    /// which `cond` held.
    fn search<C: Condition + ?Sized>(
        &mut self,
        m: &mut Machine,
        i: usize,
        hi: u64,
        cond: &mut C,
    ) -> Result<Option<u64>, TimelineError> {
        self.restore(m, i)?;
        let from = m.icount();
        let mut last = cond.start(m).then_some(from);
        self.gate.set_muted(true);
        let result = self.step_to(m, hi, cond, &mut last);
        self.gate.set_muted(false);
        self.stats.replayed += m.icount() - from;
        result.map(|()| last)
    }

    /// Steps to `hi`, noting in `last` each count at which `cond` holds.
    fn step_to<C: Condition + ?Sized>(
        &mut self,
        m: &mut Machine,
        hi: u64,
        cond: &mut C,
        last: &mut Option<u64>,
    ) -> Result<(), TimelineError> {
        while m.icount() < hi {
            self.step(m)?;
            if cond.holds(m) {
                *last = Some(m.icount());
            }
        }
        Ok(())
    }

    /// Runs one instruction count within known history.
    fn step(&mut self, m: &mut Machine) -> Result<(), TimelineError> {
        let now = m.icount();
        if self.log.next_due() == Some(now) {
            self.log.feed_due(m)?;
        }
        // Stepping over a breakpoint here: the condition decides.
        m.resume_over_breakpoints();
        let exit = m.run_until(now + 1);
        self.note_paging(m);
        let reached = m.icount();
        self.pos = reached;
        check_reached(now + 1, reached, exit)?;
        if !self.edits.is_empty() && self.edits.contains(&reached) {
            if let Some(i) = self.store.find(reached) {
                self.restore(m, i)?;
            }
        }
        Ok(())
    }
}
