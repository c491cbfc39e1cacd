//! The input log of a timeline and where the machine is in it.
//!
//! An input stamped `t` reaches the machine when it runs on from `t`: the
//! state *at* `t` (a checkpoint, a seek target, a recorded state hash) is
//! the machine having run to `t` with every input stamped before `t` fed
//! and none stamped `t`. That is also the recorder's order: it logs a
//! state hash after a run slice and the input typed before the next one.

use hindsight_machine::Machine;

use super::error::TimelineError;
use crate::trace::Record;

/// Console input records in time order, and how many the machine has
/// taken.
#[derive(Clone, Debug, Default)]
pub(crate) struct InputLog {
    /// `Record::ConsoleInput` only, instruction counts non-decreasing.
    records: Vec<Record>,
    /// Records `..fed` are in the machine, `fed..` not yet.
    fed: usize,
}

impl InputLog {
    /// The records.
    pub(crate) fn records(&self) -> &[Record] {
        &self.records
    }

    /// Appends a record (stamped no earlier than the last one).
    pub(crate) fn push(&mut self, r: Record) {
        debug_assert!(self.records.last().is_none_or(|l| l.icount() <= r.icount()));
        self.records.push(r);
    }

    /// The machine was put back to its state at `icount`: it has taken
    /// exactly the inputs stamped before.
    pub(crate) fn rewind(&mut self, icount: u64) {
        self.fed = self.records.partition_point(|r| r.icount() < icount);
    }

    /// Whether the machine, at `icount`, has taken no input stamped
    /// `icount` yet (its state is *the* state at `icount`).
    pub(crate) fn untouched_at(&self, icount: u64) -> bool {
        self.fed == 0 || self.records[self.fed - 1].icount() < icount
    }

    /// The instruction count of the next input not yet taken.
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.records.get(self.fed).map(Record::icount)
    }

    /// Feeds the machine, about to run on from its instruction count, the
    /// inputs stamped with it.
    pub(crate) fn feed_due(&mut self, m: &mut Machine) -> Result<(), TimelineError> {
        let now = m.icount();
        while let Some(r) = self.records.get(self.fed) {
            if r.icount() > now {
                break;
            }
            match r {
                Record::ConsoleInput { icount, bytes } if *icount == now => m.console_input(bytes),
                _ => {
                    return Err(TimelineError::BadRecords {
                        icount: r.icount(),
                        what: format!(
                            "{} record not taken in time (the machine is at icount {now})",
                            r.kind().name()
                        ),
                    })
                }
            }
            self.fed += 1;
        }
        Ok(())
    }

    /// Drops every record stamped after `icount` (the future changed).
    pub(crate) fn truncate_after(&mut self, icount: u64) {
        let keep = self.records.partition_point(|r| r.icount() <= icount);
        self.records.truncate(keep);
        self.fed = self.fed.min(keep);
    }
}
