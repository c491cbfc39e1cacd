//! Recording a run: every external input goes through the [`Recorder`],
//! which stamps it with the instruction count at which the machine takes
//! it, and state hashes are logged periodically so a replay can prove it
//! took the same path.

use std::io::Write;

use hindsight_machine::Machine;

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

    /// Called between run slices: logs the machine's state hash when one
    /// is due and flushes the chunk, so a killed recording keeps all but
    /// the last interval.
    pub fn tick(&mut self, m: &Machine) -> Result<(), TraceError> {
        let now = m.icount();
        if now < self.next_hash {
            return Ok(());
        }
        self.writer.state_hash(now, &m.state_hash())?;
        self.hashes += 1;
        self.next_hash = now.saturating_add(self.every);
        self.writer.flush_chunk()
    }

    /// State hashes logged so far.
    pub fn hashes(&self) -> u64 {
        self.hashes
    }

    /// Ends the trace with the machine's final count and state hash, the
    /// process exit status and why the run ended.
    pub fn finish(self, m: &Machine, exit_code: i32, reason: &str) -> Result<W, TraceError> {
        self.writer.finish(EndRecord {
            icount: m.icount(),
            final_hash: m.state_hash(),
            exit_code,
            reason: reason.to_string(),
        })
    }
}
