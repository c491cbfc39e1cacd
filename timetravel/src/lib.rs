//! hindsight-timetravel owns record and replay for hindsight: the trace file
//! format ([`trace`]), the `.hsr` file a recording writes and a replay reads,
//! specified byte for byte in `docs/trace-format.md`; the [`Recorder`] that
//! logs a machine's inputs and state hashes into it; and [`replay`], which
//! drives a machine through a trace and checks it takes the same path.
//!
//! A trace is a header (format version, hindsight version, machine
//! configuration, CPU model, the images the guest booted from, optionally
//! their bytes) followed by the input log: records stamped with the
//! instruction count, in lz4-compressed chunks, each with CRC-32 checksums and
//! the SHA-256 of the chunk before it (a hash chain). The crate deals in plain
//! records and knows nothing of the machine; the recorder and the replayer
//! that drive `hindsight-machine` build on it.
//!
//! | item | role |
//! |---|---|
//! | [`TraceWriter`] | writes a trace chunk by chunk, each flushed whole |
//! | [`TraceReader`] | reads and verifies a trace, hands out records of whole chunks |
//! | [`TraceInfo`] | what `hindsight trace info` prints |
//! | [`TraceError`] | every way a trace can be unreadable, naming chunk and offset |
//! | [`Recorder`] | stamps inputs with the instruction count, logs state hashes |
//! | [`replay`] | runs a machine through a trace, verifying it |
//! | [`replay_with_summaries`] | the same, naming what differs when a state hash does (format version 2) |
//! | [`replay_checked`] | the same, optionally under the JIT checked in lockstep against an interpreter twin |
//! | [`Timeline`] | one run's history: seek, step back, run back (restore + replay) |

#![deny(missing_docs)]

mod recorder;
mod replayer;
mod timeline;
pub mod trace;

pub use recorder::{Recorder, DEFAULT_HASH_INTERVAL};
pub use replayer::{
    replay, replay_checked, replay_with_summaries, Divergence, ReplayEnd, ReplayStats,
};
pub use timeline::{
    CheckpointSummary, Condition, ConsoleGate, DebugStop, MemoryChange, Resumed, Spacing, Timeline,
    TimelineConfig, TimelineError, TimelineStats, DEFAULT_CHECKPOINT_MEMORY, DEFAULT_TARGET_REPLAY,
};

pub use trace::{
    info, info_file, EndRecord, ImageInfo, ImageRole, Integrity, MachineConfig, ReadOptions,
    Record, RecordCounts, RecordKind, TraceError, TraceHeader, TraceInfo, TraceReader, TraceWriter,
    WriterOptions, FORMAT_VERSION, MAGIC, SUPPORTED_VERSIONS,
};
