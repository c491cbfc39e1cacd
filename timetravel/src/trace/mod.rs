//! The `.hsr` trace file format (version 2; version 1 is still read),
//! specified in `docs/trace-format.md`.
//!
//! | file | owns |
//! |---|---|
//! | `codec.rs` | little-endian field encoding and a bounded decoder |
//! | `crc32.rs` | CRC-32 (IEEE, as zlib's `crc32`) |
//! | `chunk.rs` | the preamble, the 64-byte chunk frame, payload compression |
//! | `header.rs` | the header record (chunk 0) and the machine configuration |
//! | `image.rs` | image descriptions and the embedded-image pieces |
//! | `record.rs` | the input-log records and their encoding |
//! | `summary.rs` | the encoding of a state summary (version 2) |
//! | `writer.rs` | [`TraceWriter`] |
//! | `reader.rs` | [`TraceReader`] |
//! | `info.rs` | [`TraceInfo`], the summary `hindsight trace info` prints |
//! | `error.rs` | [`TraceError`] |

mod chunk;
mod codec;
mod crc32;
mod error;
mod header;
mod image;
mod info;
mod reader;
mod record;
mod summary;
mod writer;

pub use chunk::{ChunkKind, Codec};
pub use error::TraceError;
pub use header::{keys, MachineConfig, TraceHeader};
pub use image::{ImageInfo, ImageRole};
pub use info::{info, info_file, Integrity, RecordCounts, TraceInfo};
pub use reader::{ReadOptions, TraceReader};
pub use record::{EndRecord, Record, RecordKind};
pub use writer::{TraceWriter, WriterOptions};

/// The first eight bytes of every trace file.
pub const MAGIC: [u8; 8] = *b"HSTRACE\0";

/// The format version this crate writes: 2, which adds the `StateSummary`
/// record to version 1.
pub const FORMAT_VERSION: u32 = 2;

/// Every format version this crate reads. Any other version is refused with
/// [`TraceError::UnsupportedVersion`], which lists these. Version 1 traces
/// read as before (they have no state summaries).
pub const SUPPORTED_VERSIONS: &[u32] = &[1, 2];

/// Upper bound on a chunk's uncompressed payload (16 MiB). A frame that
/// claims more is corrupt; it bounds every allocation a reader makes for a
/// chunk, whatever the file says.
pub const MAX_RAW_LEN: u32 = 16 << 20;

/// The SHA-256 digest type used for image hashes, state hashes and the chain.
pub type Digest = [u8; 32];
