//! Replaying a trace: the machine (built by the caller from the trace's
//! header and images) runs to each record's instruction count, takes the
//! recorded input there, and with verification compares its state hash
//! with every recorded one.

use std::fmt;

use hindsight_machine::{Exit, Machine};

use crate::trace::{Digest, EndRecord, Record, TraceError};

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
}

/// Where and how a replay first differed from its recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Instruction count of the first record that did not match.
    pub icount: u64,
    /// What differed.
    pub what: String,
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
/// count; `error` is what ended the trace early, if anything.
pub fn replay(
    m: &mut Machine,
    records: &[Record],
    error: Option<TraceError>,
    verify: bool,
    until: Option<u64>,
    stats: &mut ReplayStats,
) -> ReplayEnd {
    for record in records {
        let at = record.icount();
        if let Some(u) = until.filter(|&u| u < at) {
            return run_to(m, u).map_or(ReplayEnd::ReachedUntil(u), ReplayEnd::Diverged);
        }
        let exit = m.run_until(at);
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
                    return ReplayEnd::Diverged(Divergence {
                        icount: at,
                        what: format!(
                            "final state hash {} differs from the recorded {}",
                            hex(&m.state_hash()),
                            hex(&end.final_hash)
                        ),
                    });
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
                stats.inputs += 1;
            }
            Record::StateHash { hash, .. } => {
                if verify {
                    let found = m.state_hash();
                    if &found != hash {
                        return ReplayEnd::Diverged(Divergence {
                            icount: at,
                            what: format!(
                                "state hash {} differs from the recorded {}",
                                hex(&found),
                                hex(hash)
                            ),
                        });
                    }
                    stats.hashes_verified += 1;
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
        return run_to(m, u).map_or(ReplayEnd::ReachedUntil(u), ReplayEnd::Diverged);
    }
    ReplayEnd::TraceStopped {
        icount: m.icount(),
        error: error.unwrap_or(TraceError::InvalidInput {
            what: "the trace has no end record".into(),
        }),
    }
}

/// Runs to exactly `icount`; a divergence if the machine stops first.
fn run_to(m: &mut Machine, icount: u64) -> Option<Divergence> {
    let exit = m.run_until(icount);
    (m.icount() != icount).then(|| Divergence {
        icount: m.icount(),
        what: format!("the machine stopped ({exit}) before icount {icount}"),
    })
}
