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
//! Where a reverse search leaves the machine follows gdb's convention for
//! reverse execution: at a breakpoint, before its instruction (as forward);
//! at a watchpoint, before the instruction that accessed the data, so the
//! value read there is the one before the access.

use hindsight_cpu::debug::DebugHit;
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
        let mut hi = self.pos;
        let mut i = self.store.find(hi - 1).ok_or_else(|| self.beginning())?;
        loop {
            if let Some(hit) = self.last_hit(m, i, hi)? {
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
