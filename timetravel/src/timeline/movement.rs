//! Moving along a timeline: running forward (feeding inputs, taking and
//! thinning checkpoints), seeking either way, stepping back, and changing
//! the future of a live session.

use std::time::Instant;

use hindsight_machine::{Exit, Machine};

use super::{thin, Kind, Timeline, TimelineError};
use crate::trace::Record;

impl Timeline {
    /// Runs forward from the present to exactly `to`, feeding logged
    /// inputs at their counts and taking checkpoints on schedule. A live
    /// session extends history as far as asked; a replay stops at its
    /// trace's end ([`TimelineError::EndOfHistory`], the machine there).
    /// A target at or before the present does nothing. The machine must be
    /// where the timeline left it ([`TimelineError::Moved`]).
    pub fn advance(&mut self, m: &mut Machine, to: u64) -> Result<u64, TimelineError> {
        self.check_present(m)?;
        if to <= self.pos {
            return Ok(self.pos);
        }
        let limit = self.limit();
        self.run_forward(m, to.min(limit), false)?;
        if to > limit {
            return Err(TimelineError::EndOfHistory { end: limit });
        }
        Ok(to)
    }

    /// Puts the machine in its state at exactly `icount`, forwards or
    /// backwards: restores the nearest checkpoint at or before `icount`
    /// (unless running on from the present is shorter) and replays to it.
    /// Outside known history (before the origin, after
    /// [`Timeline::end`]) the machine goes to the nearest edge and the
    /// answer names it. Also brings back a machine run behind the
    /// timeline's back.
    pub fn seek(&mut self, m: &mut Machine, icount: u64) -> Result<u64, TimelineError> {
        if icount < self.origin {
            self.seek_within(m, self.origin)?;
            return Err(TimelineError::BeginningOfHistory {
                origin: self.origin,
            });
        }
        let end = self.end();
        if icount > end {
            self.seek_within(m, end)?;
            return Err(TimelineError::EndOfHistory { end });
        }
        self.seek_within(m, icount)?;
        Ok(icount)
    }

    /// Moves back one instruction count: `seek(icount - 1)`. At the origin,
    /// [`TimelineError::BeginningOfHistory`].
    pub fn step_back(&mut self, m: &mut Machine) -> Result<u64, TimelineError> {
        let now = m.icount();
        if now <= self.origin {
            return self.seek(m, self.origin).and(Err(self.beginning()));
        }
        self.seek(m, now - 1)
    }

    /// Logs console input at the present, for the guest to take when the
    /// machine runs on ([`Timeline::advance`]). Before the end of a live
    /// history it starts a new branch: what was known after the present is
    /// dropped. A replay refuses it ([`TimelineError::FixedHistory`]).
    pub fn console_input(&mut self, m: &Machine, bytes: &[u8]) -> Result<(), TimelineError> {
        if let Kind::Replay { .. } = self.kind {
            return Err(TimelineError::FixedHistory { icount: self.pos });
        }
        self.check_present(m)?;
        if bytes.is_empty() {
            return Ok(());
        }
        self.branch_here();
        self.log.push(Record::ConsoleInput {
            icount: self.pos,
            bytes: bytes.to_vec(),
        });
        Ok(())
    }

    /// Changes the machine at the present with `f` (a debugger writing
    /// memory or registers; `f` must not run it). History after the
    /// present is dropped, and a checkpoint of the changed state is taken
    /// and kept: running into this count again (from an earlier
    /// checkpoint) restores it, so the change is part of history. A
    /// replay refuses ([`TimelineError::FixedHistory`]), calling nothing.
    pub fn edit<R>(
        &mut self,
        m: &mut Machine,
        f: impl FnOnce(&mut Machine) -> R,
    ) -> Result<R, TimelineError> {
        if let Kind::Replay { .. } = self.kind {
            return Err(TimelineError::FixedHistory { icount: self.pos });
        }
        self.check_present(m)?;
        let now = self.pos;
        if !self.log.untouched_at(now) {
            // Input stamped here was taken (the machine stopped right
            // after): go back to the state at `now`, which precedes it.
            self.seek_within(m, now)?;
        }
        self.branch_here();
        if let Some(i) = self.store.find(now).filter(|&i| self.icount_of(i) == now) {
            if i == 0 {
                self.store.clear();
            } else {
                self.store.remove(i)?;
            }
        }
        let r = f(m);
        if m.icount() != now {
            return Err(TimelineError::Moved {
                expected: now,
                found: m.icount(),
            });
        }
        self.take_checkpoint(m)?;
        if now > self.origin {
            self.edits.insert(now);
        }
        Ok(r)
    }

    /// The beginning of history, as an answer.
    pub(super) fn beginning(&self) -> TimelineError {
        TimelineError::BeginningOfHistory {
            origin: self.origin,
        }
    }

    /// Errors unless the machine is where the timeline left it.
    pub(super) fn check_present(&self, m: &Machine) -> Result<(), TimelineError> {
        if m.icount() != self.pos {
            return Err(TimelineError::Moved {
                expected: self.pos,
                found: m.icount(),
            });
        }
        Ok(())
    }

    /// The future changes at the present: drops checkpoints, inputs and
    /// edits after it.
    fn branch_here(&mut self) {
        let now = self.pos;
        if now >= self.head {
            return;
        }
        let keep = self.store.find(now).map_or(0, |i| i + 1);
        self.store.truncate(keep);
        self.log.truncate_after(now);
        self.edits.retain(|&e| e <= now);
        // The instruction at `now` runs again in the new branch.
        self.paging.retain(|c| c.0 < now);
        self.head = now;
        self.bytes = self.store.bytes();
        self.stats.branches += 1;
    }

    /// [`Timeline::seek`] to a count within history.
    pub(super) fn seek_within(&mut self, m: &mut Machine, t: u64) -> Result<(), TimelineError> {
        let now = m.icount();
        let i = self.store.find(t).ok_or_else(|| self.beginning())?;
        let at_target = now == t && self.log.untouched_at(now);
        let run_on = t > now && self.icount_of(i) <= now;
        if now != self.pos || !(at_target || run_on) {
            self.restore(m, i)?;
        }
        self.run_forward(m, t, false)
    }

    /// The instruction count of checkpoint `i` (which exists).
    pub(super) fn icount_of(&self, i: usize) -> u64 {
        self.store.get(i).map_or(self.origin, |c| c.icount())
    }

    /// Restores checkpoint `i`.
    pub(super) fn restore(&mut self, m: &mut Machine, i: usize) -> Result<(), TimelineError> {
        self.store.restore(m, i)?;
        self.stats.restores += 1;
        self.pos = m.icount();
        self.log.rewind(self.pos);
        Ok(())
    }

    /// Runs the machine from the present to exactly `target`: feeds the
    /// inputs stamped on the way, checks recorded hashes passed for the
    /// first time, restores edits run into, takes checkpoints where due,
    /// mutes the console below the end of history. A debugger's stop
    /// ([`Exit::Debug`]) ends the run as [`TimelineError::Stopped`] if
    /// `report_debug`, else the run goes on over it.
    pub(super) fn run_forward(
        &mut self,
        m: &mut Machine,
        target: u64,
        report_debug: bool,
    ) -> Result<(), TimelineError> {
        loop {
            let now = m.icount();
            self.verify_hash(m)?;
            if now >= target {
                return Ok(());
            }
            self.log.feed_due(m)?;
            let due = self.checkpoint_due(now);
            let stop = [
                Some(target),
                self.log.next_due(),
                (now < self.head).then_some(self.head),
                self.edits.range(now + 1..).next().copied(),
                self.next_hash(now),
                due,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(target);
            self.gate.set_muted(stop <= self.head);
            let started = Instant::now();
            let exit = m.run_until(stop);
            self.note_paging(m);
            let reached = m.icount();
            if reached > now {
                self.pace.observe(reached - now, started.elapsed());
            }
            if now < self.head {
                self.stats.replayed += reached.min(self.head).saturating_sub(now);
            }
            self.pos = reached;
            self.head = self.head.max(reached);
            self.gate.set_muted(false);
            let debug = matches!(exit, Exit::Debug { .. });
            if !debug {
                check_reached(stop, reached, exit.clone())?;
            }
            if reached == stop {
                if self.edits.contains(&reached) {
                    let i = self.store.find(reached).ok_or_else(|| self.beginning())?;
                    self.restore(m, i)?;
                } else if due == Some(reached) {
                    self.take_checkpoint(m)?;
                }
            }
            if debug {
                if report_debug {
                    return Err(TimelineError::Stopped {
                        icount: reached,
                        exit,
                    });
                }
                m.resume_over_breakpoints();
            }
        }
    }

    /// Keeps the paging-regime changes of instructions beyond the end of
    /// history (those below it are known already).
    pub(super) fn note_paging(&mut self, m: &mut Machine) {
        let head = self.head;
        let changes = m.take_paging_changes();
        self.paging
            .extend(changes.into_iter().filter(|c| c.0 >= head));
    }

    /// Where the next checkpoint is due when running on from `now` (see
    /// [`due_after`]).
    fn checkpoint_due(&self, now: u64) -> Option<u64> {
        let i = self.store.find(now)?;
        let next = self.store.get(i + 1).map(|c| c.icount());
        due_after(self.icount_of(i), self.interval(), now, next)
    }

    /// Takes a checkpoint of the machine at the present, then thins if the
    /// store is over budget.
    fn take_checkpoint(&mut self, m: &mut Machine) -> Result<(), TimelineError> {
        let i = self.store.take(m)?;
        self.stats.checkpoints_taken += 1;
        if let Some(c) = self.store.get(i) {
            // Page index entries besides the checkpoint itself.
            self.bytes += c.bytes() + c.pages().len() * 16;
        }
        self.thin(m.icount())
    }

    /// Drops checkpoints (see `thin.rs`) until the store is 1/8 under its
    /// budget, once it is over.
    fn thin(&mut self, present: u64) -> Result<(), TimelineError> {
        let budget = self.config.memory_budget;
        if self.bytes <= budget {
            return Ok(());
        }
        self.bytes = self.store.bytes();
        let goal = budget - budget / 8;
        let focus = [self.head, present];
        let unit = self.interval();
        self.stats.over_budget = false;
        while self.bytes > goal {
            let icounts: Vec<u64> = self.store.iter().map(|c| c.icount()).collect();
            let Some(j) = thin::victim(&icounts, &focus, unit, |ic| self.edits.contains(&ic))
            else {
                self.stats.over_budget = true;
                break;
            };
            let held = |s: &Self, k: usize| s.store.get(k).map_or(0, |c| c.bytes());
            let before = held(self, j) + held(self, j + 1);
            self.store.remove(j)?;
            let after = held(self, j);
            self.bytes = self.bytes.saturating_sub(before.saturating_sub(after));
            self.stats.checkpoints_thinned += 1;
        }
        self.bytes = self.store.bytes();
        Ok(())
    }
}

/// Where the next checkpoint is due, running on from `now` with the last
/// checkpoint at `last` (≤ `now`) and the next one, if any, at `next`: one
/// interval `k` after `last`, or at once if that is already behind (the
/// interval adapts to the speed, and shrinks when an idle guest gets busy),
/// provided that leaves at least a quarter interval before `next` (so a
/// changed interval does not sprinkle checkpoints over known history).
fn due_after(last: u64, k: u64, now: u64, next: Option<u64>) -> Option<u64> {
    let due = last.saturating_add(k).max(now);
    let room = next.is_none_or(|next| due.saturating_add(k / 4) < next);
    (room && due > last).then_some(due)
}

/// Errors unless a run asked to stop at `stop` got there.
pub(super) fn check_reached(stop: u64, reached: u64, exit: Exit) -> Result<(), TimelineError> {
    if reached > stop {
        return Err(TimelineError::Overshot {
            target: stop,
            reached,
        });
    }
    if reached < stop {
        return Err(TimelineError::Stopped {
            icount: reached,
            exit,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::due_after;

    #[test]
    fn checkpoints_fall_due_one_interval_on_or_at_once_when_overdue() {
        assert_eq!(due_after(100, 50, 120, None), Some(150));
        // The interval shrank below the distance run since the last one.
        assert_eq!(due_after(100, 10, 500, None), Some(500));
        // Not at the last checkpoint itself.
        assert_eq!(due_after(100, 50, 100, None), Some(150));
        assert_eq!(due_after(100, 0, 100, None), None);
        // Inside known history: only with room before the next one.
        assert_eq!(due_after(100, 40, 120, Some(200)), Some(140));
        assert_eq!(due_after(100, 40, 120, Some(145)), None);
        assert_eq!(due_after(100, 10, 190, Some(200)), Some(190));
        assert_eq!(due_after(100, 40, 190, Some(200)), None);
    }
}
