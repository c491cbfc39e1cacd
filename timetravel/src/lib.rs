//! hindsight-timetravel owns record and replay for hindsight. Today it holds
//! the trace file format ([`trace`]): the `.hsr` file a recording writes and a
//! replay reads, specified byte for byte in `docs/trace-format.md`.
//!
//! A trace is a header (format version, hindsight version, machine
//! configuration, CPU model, the images the guest booted from, optionally
//! their bytes) followed by the input log: records stamped with the
//! instruction count, in lz4-compressed chunks, each with CRC-32 checksums and
//! the SHA-256 of the chunk before it (a hash chain). The crate deals in plain
//! records and knows nothing of the machine: the recorder and the replayer
//! that drive `hindsight-machine` build on it.
//!
//! | item | role |
//! |---|---|
//! | [`TraceWriter`] | writes a trace chunk by chunk, each flushed whole |
//! | [`TraceReader`] | reads and verifies a trace, hands out records of whole chunks |
//! | [`TraceInfo`] | what `hindsight trace info` prints |
//! | [`TraceError`] | every way a trace can be unreadable, naming chunk and offset |

#![deny(missing_docs)]

pub mod trace;

pub use trace::{
    info, info_file, EndRecord, ImageInfo, ImageRole, Integrity, MachineConfig, ReadOptions,
    Record, RecordCounts, RecordKind, TraceError, TraceHeader, TraceInfo, TraceReader, TraceWriter,
    WriterOptions, FORMAT_VERSION, MAGIC, SUPPORTED_VERSIONS,
};
