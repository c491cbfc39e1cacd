//! What can go wrong moving through a timeline, and the two edges of
//! history, which are ordinary answers rather than failures.

use std::fmt;

use hindsight_machine::{Exit, SnapshotError};

use crate::replayer::Divergence;

/// Why a [`crate::Timeline`] operation did not reach its target.
///
/// The two edges of history say where the machine was left: at the edge
/// itself (a seek outside history moves to the nearest edge, a fruitless
/// [`crate::Timeline::run_back`] ends at the beginning).
#[derive(Debug)]
pub enum TimelineError {
    /// The beginning of history: nothing before `origin` is known. The
    /// machine is at `origin`.
    BeginningOfHistory {
        /// Instruction count of the first state of the timeline.
        origin: u64,
    },
    /// The end of history: a replay cannot go past its trace's end, a
    /// [`crate::Timeline::seek`] in a live session not past the furthest
    /// count executed. The machine is at `end`.
    EndOfHistory {
        /// The last instruction count of known history.
        end: u64,
    },
    /// The machine stopped before the target (a debug exit, power-off, a
    /// triple fault, a deadlock waiting for input): it is at `icount`,
    /// which is now the end of what a live session has executed.
    Stopped {
        /// Where the machine stopped.
        icount: u64,
        /// Why.
        exit: Exit,
    },
    /// The machine ran past the instruction count it was asked to stop at
    /// (it cannot stop there: several events were taken at once).
    Overshot {
        /// The count asked for.
        target: u64,
        /// The count reached.
        reached: u64,
    },
    /// A replay's state differs from the state hash its trace recorded.
    Diverged(Divergence),
    /// History is fixed here (a replay of a trace): input or an edit would
    /// change it.
    FixedHistory {
        /// The instruction count at which the change was asked for.
        icount: u64,
    },
    /// The machine is not where the timeline left it: it was run or
    /// restored behind the timeline's back. [`crate::Timeline::seek`]
    /// brings it back onto the timeline.
    Moved {
        /// Where the timeline left it.
        expected: u64,
        /// Where it is.
        found: u64,
    },
    /// The trace's records cannot make a timeline (described, with the
    /// record's instruction count).
    BadRecords {
        /// The instruction count of the offending record.
        icount: u64,
        /// What is wrong.
        what: String,
    },
    /// A checkpoint could not be taken or restored.
    Snapshot(SnapshotError),
}

impl fmt::Display for TimelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimelineError::BeginningOfHistory { origin } => {
                write!(f, "beginning of history (icount {origin})")
            }
            TimelineError::EndOfHistory { end } => write!(f, "end of history (icount {end})"),
            TimelineError::Stopped { icount, exit } => {
                write!(f, "the machine stopped at icount {icount}: {exit}")
            }
            TimelineError::Overshot { target, reached } => write!(
                f,
                "the machine ran past icount {target} to {reached} and cannot stop there"
            ),
            TimelineError::Diverged(d) => d.fmt(f),
            TimelineError::FixedHistory { icount } => write!(
                f,
                "history is fixed at icount {icount}: a replayed trace cannot take new input \
                 or edits"
            ),
            TimelineError::Moved { expected, found } => write!(
                f,
                "the machine is at icount {found}, not at {expected} where the timeline left \
                 it: it was run outside the timeline"
            ),
            TimelineError::BadRecords { icount, what } => {
                write!(f, "trace record at icount {icount}: {what}")
            }
            TimelineError::Snapshot(e) => write!(f, "checkpoint: {e}"),
        }
    }
}

impl std::error::Error for TimelineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TimelineError::Snapshot(e) => Some(e),
            _ => None,
        }
    }
}

impl From<SnapshotError> for TimelineError {
    fn from(e: SnapshotError) -> Self {
        TimelineError::Snapshot(e)
    }
}
