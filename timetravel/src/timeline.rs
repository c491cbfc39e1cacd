//! The history of one machine run, and moving through it: [`Timeline`].
//!
//! A timeline owns what it takes to put the machine in its state at any
//! instruction count it has known: the input log (console input stamped
//! with the instruction count at which the guest takes it), the recorded
//! state hashes of a replay, and a [`CheckpointStore`] of incremental
//! checkpoints taken as the run advances. Moving backwards is restore +
//! replay (brief invariant 7): restore the nearest checkpoint at or before
//! the target and run forward to it exactly, feeding the logged inputs on
//! the way.
//!
//! | operation | what it does | cost |
//! |---|---|---|
//! | [`Timeline::advance`] | runs forward, extending a live history | the instructions run, plus checkpoints |
//! | [`Timeline::seek`] | to any count of known history, either way | one restore + at most one interval of replay |
//! | [`Timeline::step_back`] | `seek(icount - 1)` | as `seek` |
//! | [`Timeline::run_back`] | to the last count before the present where a condition held | per interval searched: one restore + single-stepping it |
//! | [`Timeline::resume`] | forward to the first breakpoint/watchpoint hit | the instructions run |
//! | [`Timeline::reverse_resume`] | to the last breakpoint/watchpoint hit before the present | per interval searched: one restore + replaying it at full speed |
//! | [`Timeline::console_input`] | logs input at the present (live); in the past it starts a new branch | — |
//! | [`Timeline::edit`] | changes the machine at the present (a debugger's write) | one checkpoint |
//!
//! # The state at an instruction count
//! The state *at* `t` is the machine having run to exactly `t` with every
//! input stamped before `t` taken and none stamped `t`: a checkpoint, a
//! seek target and a recorded state hash all mean that state. Inputs
//! stamped `t` enter when the machine runs on from `t`, so a live session
//! calls [`Timeline::console_input`] (which only logs) and then
//! [`Timeline::advance`]; all running goes through the timeline.
//!
//! # Checkpoints
//! While running, a checkpoint is taken every *interval* instructions
//! ([`Spacing`]: fixed, or adapted so that replaying one interval takes
//! about 25 ms at the speed measured) wherever the gap to the next
//! checkpoint is larger: at the end of history as it grows, and inside
//! history when a seek replays a stretch that thinning had left sparse, so
//! repeated reverse steps there are fast again. Over the memory budget,
//! checkpoints are thinned ([`CheckpointStore::remove`] merges pages, so
//! every remaining one restores exactly): the policy (`thin.rs`) keeps gaps
//! proportional to the distance from the present position and from the end
//! of history, which makes spacing grow geometrically far back. The first
//! checkpoint (full) and the latest are kept whatever the budget, as are
//! checkpoints of edits.
//!
//! # Branches
//! In a live session, input or an edit at a count before the end of
//! history changes the future: checkpoints and inputs after that count are
//! dropped and history continues from there. A replay's history is fixed:
//! both are refused there ([`TimelineError::FixedHistory`]).
//!
//! # Console output
//! Re-executing known history makes the guest print again what it printed
//! the first time; a sink wrapped by [`Timeline::console_gate`] drops that
//! output and passes the output of instructions beyond the end of history.

mod config;
mod debugger;
mod error;
mod gate;
mod inputs;
mod movement;
mod run_back;
mod thin;

use std::collections::BTreeSet;

use hindsight_cpu::paging_log::PagingRegime;
use hindsight_machine::{CheckpointStore, Machine, StateSummary};

pub use config::{Spacing, TimelineConfig, DEFAULT_CHECKPOINT_MEMORY, DEFAULT_TARGET_REPLAY};
pub use debugger::{DebugStop, Resumed};
pub use error::TimelineError;
pub use gate::ConsoleGate;
pub use run_back::{Condition, MemoryChange};

use crate::replayer::Divergence;
use crate::trace::{Digest, EndRecord, Record};
use config::Pace;
use inputs::InputLog;

/// Counters of what a timeline did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TimelineStats {
    /// Checkpoints taken.
    pub checkpoints_taken: u64,
    /// Checkpoints dropped by thinning.
    pub checkpoints_thinned: u64,
    /// Checkpoints restored.
    pub restores: u64,
    /// Instructions executed again (re-executing known history).
    pub replayed: u64,
    /// Recorded state hashes checked (and equal).
    pub hashes_verified: u64,
    /// Times the future was dropped (live input or edit in the past).
    pub branches: u64,
    /// Thinning could not get under the budget (only protected
    /// checkpoints were left).
    pub over_budget: bool,
    /// Virtual time per host second measured while running, if measured.
    pub speed: Option<f64>,
    /// Stretches a reverse search passed over without replaying them (no
    /// page behind a write watchpoint written there).
    pub stretches_skipped: u64,
}

/// One checkpoint, as `monitor checkpoints` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointSummary {
    /// Its instruction count.
    pub icount: u64,
    /// RAM pages it holds.
    pub pages: usize,
    /// Bytes of memory it holds.
    pub bytes: usize,
    /// Taken after an edit: never thinned, and running into its count
    /// restores it.
    pub edit: bool,
}

/// Whether history can grow.
#[derive(Clone, Debug)]
enum Kind {
    /// A live session: history grows as the machine runs.
    Live,
    /// A replay: history is the trace's, up to `end`.
    Replay {
        /// The last instruction count of the trace.
        end: u64,
        /// The trace's end record, if it is complete.
        record: Option<EndRecord>,
    },
}

/// The history of one machine run (see the module documentation).
#[derive(Debug)]
pub struct Timeline {
    config: TimelineConfig,
    kind: Kind,
    /// The first instruction count of history.
    origin: u64,
    /// The furthest instruction count executed.
    head: u64,
    /// Where the timeline left the machine.
    pos: u64,
    log: InputLog,
    /// Recorded state hashes (replay), ascending; the end record's last.
    hashes: Vec<(u64, Digest)>,
    /// The trace's state summaries (format 2), ascending: what a
    /// divergence report names.
    summaries: Vec<StateSummary>,
    /// Hashes `..checked` have been passed.
    checked: usize,
    store: CheckpointStore,
    /// Instruction counts of edit checkpoints.
    edits: BTreeSet<u64>,
    /// Every paging-regime change of known history, ascending: (count,
    /// vCPU, regime after it). Lets a reverse search know the translations
    /// a stretch can have used.
    paging: Vec<(u64, usize, PagingRegime)>,
    pace: Pace,
    /// Bytes the store holds (estimated between exact counts).
    bytes: usize,
    gate: ConsoleGate,
    stats: TimelineStats,
}

impl Timeline {
    /// A live session's timeline, starting at the machine's present
    /// instruction count (the beginning of history), where it takes the
    /// first (full) checkpoint.
    pub fn live(m: &mut Machine, config: TimelineConfig) -> Result<Timeline, TimelineError> {
        Timeline::start(
            m,
            config,
            Kind::Live,
            InputLog::default(),
            Vec::new(),
            Vec::new(),
        )
    }

    /// A replay's timeline over a trace's records (as
    /// [`crate::TraceReader::read_to_end`] gives them), for a machine built
    /// from the trace's header and images and not yet run. Its history ends
    /// at the end record, or, for a trace cut short, at the last record.
    /// Records of input channels this machine has no device for, or out of
    /// order, are refused.
    pub fn replay(
        m: &mut Machine,
        records: Vec<Record>,
        config: TimelineConfig,
    ) -> Result<Timeline, TimelineError> {
        Timeline::replay_with_summaries(m, records, Vec::new(), config)
    }

    /// [`Timeline::replay`] with the trace's state summaries
    /// ([`crate::TraceReader::take_summaries`]), so that a divergence says
    /// what differed, not only that the state hash did.
    pub fn replay_with_summaries(
        m: &mut Machine,
        records: Vec<Record>,
        summaries: Vec<StateSummary>,
        config: TimelineConfig,
    ) -> Result<Timeline, TimelineError> {
        let origin = m.icount();
        let mut log = InputLog::default();
        let mut hashes = Vec::new();
        let mut end_record = None;
        let mut last = origin;
        for r in records {
            let icount = r.icount();
            let bad = |what: String| Err(TimelineError::BadRecords { icount, what });
            if icount < last {
                return bad(format!("{} record before icount {last}", r.kind().name()));
            }
            if end_record.is_some() {
                return bad("a record after the end record".into());
            }
            last = icount;
            match r {
                Record::ConsoleInput { .. } => log.push(r),
                Record::Input { channel, .. } => {
                    return bad(format!(
                        "input on channel {channel}, which this machine has no device for"
                    ))
                }
                Record::StateHash { hash, .. } => hashes.push((icount, hash)),
                Record::End(end) => {
                    hashes.push((icount, end.final_hash));
                    end_record = Some(end);
                }
            }
        }
        let kind = Kind::Replay {
            end: last,
            record: end_record,
        };
        Timeline::start(m, config, kind, log, hashes, summaries)
    }

    fn start(
        m: &mut Machine,
        config: TimelineConfig,
        kind: Kind,
        log: InputLog,
        hashes: Vec<(u64, Digest)>,
        summaries: Vec<StateSummary>,
    ) -> Result<Timeline, TimelineError> {
        let origin = m.icount();
        // Settle the machine at its count (as any run that stops there
        // does), so the first checkpoint is the state at `origin`.
        m.run_until(origin);
        m.set_paging_log(true);
        let mut store = CheckpointStore::new();
        store.take(m)?;
        let mut t = Timeline {
            config,
            kind,
            origin,
            head: origin,
            pos: origin,
            log,
            hashes,
            summaries,
            checked: 0,
            bytes: store.bytes(),
            store,
            edits: BTreeSet::new(),
            paging: Vec::new(),
            pace: Pace::default(),
            gate: ConsoleGate::default(),
            stats: TimelineStats {
                checkpoints_taken: 1,
                ..TimelineStats::default()
            },
        };
        t.verify_hash(m)?;
        Ok(t)
    }

    /// The first instruction count of history.
    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// The furthest instruction count executed so far.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Where the timeline left the machine (its present).
    pub fn present(&self) -> u64 {
        self.pos
    }

    /// The last instruction count of known history: a replay's trace end,
    /// a live session's head. [`Timeline::seek`] goes no further; a live
    /// [`Timeline::advance`] extends it.
    pub fn end(&self) -> u64 {
        match self.kind {
            Kind::Live => self.head,
            Kind::Replay { end, .. } => end,
        }
    }

    /// Whether this is a replay (history fixed by a trace).
    pub fn is_replay(&self) -> bool {
        matches!(self.kind, Kind::Replay { .. })
    }

    /// A replay's end record, when its trace is complete.
    pub fn end_record(&self) -> Option<&EndRecord> {
        match &self.kind {
            Kind::Replay { record, .. } => record.as_ref(),
            Kind::Live => None,
        }
    }

    /// The input log: `Record::ConsoleInput` records in time order.
    pub fn inputs(&self) -> &[Record] {
        self.log.records()
    }

    /// A replay's recorded state hashes (the end record's final hash
    /// last), ascending by instruction count.
    pub fn state_hashes(&self) -> &[(u64, Digest)] {
        &self.hashes
    }

    /// The configuration.
    pub fn config(&self) -> &TimelineConfig {
        &self.config
    }

    /// What the timeline did so far.
    pub fn stats(&self) -> TimelineStats {
        TimelineStats {
            speed: self.pace.speed(),
            ..self.stats
        }
    }

    /// Instructions between checkpoints now (fixed or adapted).
    pub fn interval(&self) -> u64 {
        self.pace.interval(&self.config.spacing)
    }

    /// The checkpoint store (read-only).
    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }

    /// The checkpoints, ascending by instruction count.
    pub fn checkpoints(&self) -> Vec<CheckpointSummary> {
        self.store
            .iter()
            .map(|c| CheckpointSummary {
                icount: c.icount(),
                pages: c.pages().len(),
                bytes: c.bytes(),
                edit: self.edits.contains(&c.icount()),
            })
            .collect()
    }

    /// Bytes the checkpoints hold.
    pub fn checkpoint_bytes(&self) -> usize {
        self.store.bytes()
    }

    /// The gate that mutes console output while known history is
    /// re-executed: install `gate.wrap(sink)` as the machine's console.
    pub fn console_gate(&self) -> ConsoleGate {
        self.gate.clone()
    }

    /// Checks the machine, at a recorded hash's count for the first time,
    /// against it (replays with verification).
    fn verify_hash(&mut self, m: &Machine) -> Result<(), TimelineError> {
        let now = m.icount();
        while let Some(&(at, hash)) = self.hashes.get(self.checked) {
            if at > now {
                break;
            }
            self.checked += 1;
            if at < now || !self.config.verify_hashes || !self.log.untouched_at(now) {
                continue;
            }
            if m.state_hash() != hash {
                let i = self.summaries.partition_point(|s| s.icount < now);
                let summary = self.summaries.get(i).filter(|s| s.icount == now);
                return Err(TimelineError::Diverged(Divergence::state_differs(
                    m, &hash, summary, None,
                )));
            }
            self.stats.hashes_verified += 1;
        }
        Ok(())
    }

    /// The next recorded hash to check, if after `now`.
    fn next_hash(&self, now: u64) -> Option<u64> {
        let &(at, _) = self.hashes.get(self.checked)?;
        (self.config.verify_hashes && at > now).then_some(at)
    }
}
