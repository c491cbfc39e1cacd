//! Recording a run: every external input goes through the [`Recorder`],
//! which stamps it with the instruction count at which the machine takes
//! it, and state hashes are logged periodically so a replay can prove it
//! took the same path. Each hash goes with a state summary (registers,
//! device and RAM-region hashes, the pages changed since the previous one),
//! so a replay that differs can say what differs.

use std::io::Write;

use hindsight_machine::{Machine, SummaryTracker};

use crate::trace::{EndRecord, TraceError, TraceWriter};

/// Virtual time between two state-hash records unless configured: 0.1 s
/// of guest time.
pub const DEFAULT_HASH_INTERVAL: u64 = 100_000_000;

/// Records a run into a trace.
pub struct Recorder<W: Write> {
    writer: TraceWriter<W>,
    every: u64,
    next_hash: u64,
    hashes: u64,
    /// Page hashes from one summary to the next.
    tracker: SummaryTracker,
    /// Count of the last state hash written.
    last_hash: Option<u64>,
}

impl<W: Write> Recorder<W> {
    /// A recorder writing to `writer` (header already written) that logs a
    /// state hash every `every` instructions of virtual time (at least 1).
    pub fn new(writer: TraceWriter<W>, every: u64) -> Self {
        Recorder {
            writer,
            every: every.max(1),
            next_hash: 0,
            hashes: 0,
            tracker: SummaryTracker::new(),
            last_hash: None,
        }
    }

    /// Queues console input into `m`, logged at the machine's current
    /// instruction count (where a replay queues it again).
    pub fn console_input(&mut self, m: &mut Machine, bytes: &[u8]) -> Result<(), TraceError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.writer.console_input(m.icount(), bytes)?;
        m.console_input(bytes);
        Ok(())
    }

    /// Called between run slices: logs the machine's state hash and state
    /// summary when one is due and flushes the chunk, so a killed recording
    /// keeps all but the last interval.
    pub fn tick(&mut self, m: &Machine) -> Result<(), TraceError> {
        let now = m.icount();
        if now < self.next_hash {
            return Ok(());
        }
        self.log_state(m)?;
        self.next_hash = now.saturating_add(self.every);
        self.writer.flush_chunk()
    }

    /// [`Recorder::tick`] for a recording that owns the machine's dirty
    /// epochs (no checkpoint store works on it): after logging a state hash
    /// it starts a new dirty epoch, so the next state hash and summary read
    /// only the pages written from then on instead of every page written
    /// since power-on. Host-side only: the trace is the same either way.
    pub fn tick_owning_epochs(&mut self, m: &mut Machine) -> Result<(), TraceError> {
        let before = self.hashes;
        self.tick(m)?;
        if self.hashes > before {
            self.tracker.start_epoch(m);
        }
        Ok(())
    }

    /// Writes the machine's state hash with its summary.
    fn log_state(&mut self, m: &Machine) -> Result<(), TraceError> {
        let summary = m.state_summary(&mut self.tracker);
        self.writer.state_summary(&m.state_hash(), &summary)?;
        self.hashes += 1;
        self.last_hash = Some(m.icount());
        Ok(())
    }

    /// State hashes logged so far.
    pub fn hashes(&self) -> u64 {
        self.hashes
    }

    /// Ends the trace with the machine's final count and state hash, the
    /// process exit status and why the run ended. A state summary goes
    /// before the end record (unless one was just logged at this count), so
    /// a replay whose final state differs can say what differs.
    pub fn finish(mut self, m: &Machine, exit_code: i32, reason: &str) -> Result<W, TraceError> {
        if self.last_hash != Some(m.icount()) {
            self.log_state(m)?;
        }
        self.writer.finish(EndRecord {
            icount: m.icount(),
            final_hash: m.state_hash(),
            exit_code,
            reason: reason.to_string(),
        })
    }
}
