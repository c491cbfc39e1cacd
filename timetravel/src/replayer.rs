//! Replaying a trace: the machine (built by the caller from the trace's
//! header and images) runs to each record's instruction count, takes the
//! recorded input there, and with verification compares its state hash
//! with every recorded one. When a hash differs and the trace has a state
//! summary there (format version 2), the divergence names what differs:
//! registers with both values, devices, RAM regions and their pages.
//! [`replay_checked`] also runs an interpreter twin beside a JIT machine
//! and stops where the engines first differ.

use std::fmt;

use hindsight_machine::{Exit, Lockstep, Machine, StateSummary, SummaryTracker};

use crate::trace::{Digest, EndRecord, Record, TraceError};

/// Most differences a [`Divergence`] lists before "and N more".
const DIFFERENCES_SHOWN: usize = 8;

/// How a replay ended.
#[derive(Debug)]
pub enum ReplayEnd {
    /// The trace's end record was reached and matched.
    Finished {
        /// The end record.
        end: EndRecord,
        /// How the machine exited there.
        exit: Exit,
    },
    /// `--until` was reached before the end of the trace.
    ReachedUntil(u64),
    /// The trace stopped early (truncated or corrupt): everything before
    /// that point replayed.
    TraceStopped {
        /// Instruction count reached.
        icount: u64,
        /// Why the trace ended there.
        error: TraceError,
    },
    /// The replay did not reproduce the recording.
    Diverged(Divergence),
    /// Under [`replay_checked`], the JIT and its interpreter twin differed
    /// (the report: where, and what differs).
    EnginesDiffer(String),
}

/// Where and how a replay first differed from its recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Instruction count of the first record that did not match.
    pub icount: u64,
    /// What differed.
    pub what: String,
}

impl Divergence {
    /// The divergence of machine `m`, whose state hash differs from the
    /// `recorded` one at its current count. With the trace's `summary` for
    /// that count it names what differs (registers first, then parts of
    /// vCPUs and devices, then RAM regions with their pages); `history` is
    /// the replay's [`SummaryTracker`] as of the previous summary, if it
    /// kept one (see [`StateSummary::compare_machine`]).
    pub fn state_differs(
        m: &Machine,
        recorded: &Digest,
        summary: Option<&StateSummary>,
        history: Option<&SummaryTracker>,
    ) -> Divergence {
        Divergence::hash_differs(m, "state hash", recorded, summary, history)
    }

    fn hash_differs(
        m: &Machine,
        label: &str,
        recorded: &Digest,
        summary: Option<&StateSummary>,
        history: Option<&SummaryTracker>,
    ) -> Divergence {
        let hashes = format!(
            "{label} {} differs from the recorded {}",
            hex(&m.state_hash()),
            hex(recorded)
        );
        let what = match summary {
            None => hashes,
            Some(s) => {
                let diffs = s.compare_machine(m, history);
                let mut list: Vec<String> = diffs
                    .iter()
                    .take(DIFFERENCES_SHOWN)
                    .map(ToString::to_string)
                    .collect();
                if diffs.len() > DIFFERENCES_SHOWN {
                    list.push(format!("and {} more", diffs.len() - DIFFERENCES_SHOWN));
                }
                if list.is_empty() {
                    format!("{hashes}; the recorded state summary shows no difference")
                } else {
                    format!("{}; {hashes}", list.join("; "))
                }
            }
        };
        Divergence {
            icount: m.icount(),
            what,
        }
    }
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "diverged at icount {}: {}", self.icount, self.what)
    }
}

fn hex(d: &Digest) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a replay checked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    /// State hashes compared (and equal).
    pub hashes_verified: u64,
    /// Console input records replayed.
    pub inputs: u64,
}

/// Replays `records` (in trace order) on `m`. With `verify`, every state
/// hash and the final hash must match; `until` stops at that instruction
/// count; `error` is what ended the trace early, if anything. A divergence
/// names only the count: [`replay_with_summaries`] also says what differs.
pub fn replay(
    m: &mut Machine,
    records: &[Record],
    error: Option<TraceError>,
    verify: bool,
    until: Option<u64>,
    stats: &mut ReplayStats,
) -> ReplayEnd {
    replay_with_summaries(m, records, &[], error, verify, until, stats)
}

/// [`replay`] with the trace's state summaries
/// ([`crate::TraceReader::take_summaries`]): when a state hash differs, the
/// [`Divergence`] names what differs.
///
/// With `verify` and summaries, the replay keeps a [`SummaryTracker`] of its
/// own RAM, brought up to date at each matching hash; that starts a dirty
/// epoch there (do not use it on a machine whose checkpoint store owns the
/// epochs), which also makes the next state hash cheaper. It lets a later
/// divergence name the differing pages exactly.
pub fn replay_with_summaries(
    m: &mut Machine,
    records: &[Record],
    summaries: &[StateSummary],
    error: Option<TraceError>,
    verify: bool,
    until: Option<u64>,
    stats: &mut ReplayStats,
) -> ReplayEnd {
    replay_checked(m, None, records, summaries, error, verify, until, stats)
}

/// [`replay_with_summaries`], and with `check` on `m` under the JIT
/// checked against that interpreter twin (see [`Lockstep`]; recorded
/// console input goes to both): ends with [`ReplayEnd::EnginesDiffer`] at
/// the first instruction count where the engines differ. The lockstep's
/// checkpoints own `m`'s dirty epochs, so a divergence from the recording
/// then names less than without `check`.
#[allow(clippy::too_many_arguments)]
pub fn replay_checked(
    m: &mut Machine,
    check: Option<&mut Lockstep>,
    records: &[Record],
    summaries: &[StateSummary],
    error: Option<TraceError>,
    verify: bool,
    until: Option<u64>,
    stats: &mut ReplayStats,
) -> ReplayEnd {
    let run = Run {
        verify,
        until,
        check,
    };
    replay_run(m, records, summaries, error, run, stats)
}

/// How [`replay_run`] goes: verifying or not, how far, and checked against
/// an interpreter twin or not.
struct Run<'a> {
    verify: bool,
    until: Option<u64>,
    check: Option<&'a mut Lockstep>,
}

impl Run<'_> {
    /// Runs `m` (and the twin) to `icount` or an earlier exit; the report
    /// if the engines differ.
    fn run_until(&mut self, m: &mut Machine, icount: u64) -> Result<Exit, String> {
        match &mut self.check {
            Some(l) => l.run_until(m, icount).map_err(|e| e.to_string()),
            None => Ok(m.run_until(icount)),
        }
    }

    /// Runs to exactly `icount`: [`ReplayEnd::ReachedUntil`] unless the
    /// machine stops first or the engines differ.
    fn run_to(&mut self, m: &mut Machine, icount: u64) -> ReplayEnd {
        let exit = match self.run_until(m, icount) {
            Ok(exit) => exit,
            Err(report) => return ReplayEnd::EnginesDiffer(report),
        };
        if m.icount() != icount {
            return ReplayEnd::Diverged(Divergence {
                icount: m.icount(),
                what: format!("the machine stopped ({exit}) before icount {icount}"),
            });
        }
        ReplayEnd::ReachedUntil(icount)
    }
}

/// The replay loop behind [`replay_with_summaries`] and [`replay_checked`].
fn replay_run(
    m: &mut Machine,
    records: &[Record],
    summaries: &[StateSummary],
    error: Option<TraceError>,
    mut run: Run<'_>,
    stats: &mut ReplayStats,
) -> ReplayEnd {
    let (verify, until) = (run.verify, run.until);
    // A tracker starts dirty epochs, which a lockstep's checkpoints own.
    let tracked = verify && !summaries.is_empty() && run.check.is_none();
    let mut tracker = tracked.then(SummaryTracker::new);
    let summary_at = |icount: u64| {
        let i = summaries.partition_point(|s| s.icount < icount);
        summaries.get(i).filter(|s| s.icount == icount)
    };
    for record in records {
        let at = record.icount();
        if let Some(u) = until.filter(|&u| u < at) {
            return run.run_to(m, u);
        }
        let exit = match run.run_until(m, at) {
            Ok(exit) => exit,
            Err(report) => return ReplayEnd::EnginesDiffer(report),
        };
        let reached = m.icount() == at;
        match record {
            Record::End(end) => {
                if !reached {
                    return ReplayEnd::Diverged(Divergence {
                        icount: m.icount(),
                        what: format!(
                            "the recording ended at icount {} ({}), the replay stopped at {} ({exit})",
                            end.icount, end.reason, m.icount()
                        ),
                    });
                }
                if verify && m.state_hash() != end.final_hash {
                    return ReplayEnd::Diverged(Divergence::hash_differs(
                        m,
                        "final state hash",
                        &end.final_hash,
                        summary_at(at),
                        tracker.as_ref(),
                    ));
                }
                return ReplayEnd::Finished {
                    end: end.clone(),
                    exit,
                };
            }
            _ if !reached => {
                return ReplayEnd::Diverged(Divergence {
                    icount: m.icount(),
                    what: format!(
                        "the machine stopped ({exit}) before the recorded {:?} at icount {at}",
                        record.kind()
                    ),
                });
            }
            Record::ConsoleInput { bytes, .. } => {
                m.console_input(bytes);
                if let Some(l) = &mut run.check {
                    l.twin_mut().console_input(bytes);
                }
                stats.inputs += 1;
            }
            Record::StateHash { hash, .. } => {
                if verify {
                    if &m.state_hash() != hash {
                        return ReplayEnd::Diverged(Divergence::state_differs(
                            m,
                            hash,
                            summary_at(at),
                            tracker.as_ref(),
                        ));
                    }
                    stats.hashes_verified += 1;
                    if let Some(t) = &mut tracker {
                        t.advance(m);
                    }
                }
            }
            Record::Input { channel, .. } => {
                return ReplayEnd::Diverged(Divergence {
                    icount: at,
                    what: format!(
                        "input on channel {channel}, which this machine has no device for"
                    ),
                });
            }
        }
    }
    if let Some(u) = until {
        return run.run_to(m, u);
    }
    ReplayEnd::TraceStopped {
        icount: m.icount(),
        error: error.unwrap_or(TraceError::InvalidInput {
            what: "the trace has no end record".into(),
        }),
    }
}
