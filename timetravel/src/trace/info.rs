//! [`TraceInfo`]: the summary `hindsight trace info FILE.hsr` prints —
//! header, images, chunk and record counts, instruction-count range, end
//! record and the integrity verdict. Built by reading the whole trace once
//! (embedded images are verified, not kept).

use std::fmt;
use std::io::Read;
use std::path::Path;

use super::error::TraceError;
use super::header::TraceHeader;
use super::reader::{ReadOptions, TraceReader};
use super::record::{EndRecord, Record};
use super::Digest;

/// How many records of each kind a trace holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordCounts {
    /// `ConsoleInput` records.
    pub console_input: u64,
    /// Bytes carried by `ConsoleInput` records.
    pub console_bytes: u64,
    /// `Input` records (all channels).
    pub input: u64,
    /// Bytes carried by `Input` records.
    pub input_bytes: u64,
    /// `StateHash` records (those with a summary included).
    pub state_hash: u64,
    /// State hashes recorded with a state summary (format version 2).
    pub state_summary: u64,
    /// `End` records (0 or 1).
    pub end: u64,
}

impl RecordCounts {
    /// Counts `record`.
    pub fn add(&mut self, record: &Record) {
        match record {
            Record::ConsoleInput { bytes, .. } => {
                self.console_input += 1;
                self.console_bytes += bytes.len() as u64;
            }
            Record::Input { bytes, .. } => {
                self.input += 1;
                self.input_bytes += bytes.len() as u64;
            }
            Record::StateHash { .. } => self.state_hash += 1,
            Record::End(_) => self.end += 1,
        }
    }

    /// All records.
    pub fn total(&self) -> u64 {
        self.console_input + self.input + self.state_hash + self.end
    }
}

/// The integrity verdict on a trace whose header was readable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Integrity {
    /// Every chunk verified and the trace ends with its end record.
    Ok,
    /// The trace stops after whole chunk `last_whole_chunk`; see
    /// [`TraceError::Truncated`].
    Truncated {
        /// Index of the last whole chunk.
        last_whole_chunk: u64,
        /// File offset where the whole chunks end.
        offset: u64,
        /// Bytes of an incomplete chunk after them.
        partial_bytes: u64,
    },
    /// Chunk `chunk` failed verification; see [`TraceError::Corrupt`].
    Corrupt {
        /// Index of the failing chunk.
        chunk: u64,
        /// Its file offset.
        offset: u64,
        /// What was wrong.
        what: String,
    },
    /// Reading failed (an I/O error), with the error's message.
    Unreadable(String),
}

impl Integrity {
    fn from_error(e: TraceError) -> Self {
        match e {
            TraceError::Truncated {
                last_whole_chunk,
                offset,
                partial_bytes,
            } => Integrity::Truncated {
                last_whole_chunk,
                offset,
                partial_bytes,
            },
            TraceError::Corrupt {
                chunk,
                offset,
                what,
            } => Integrity::Corrupt {
                chunk,
                offset,
                what,
            },
            other => Integrity::Unreadable(other.to_string()),
        }
    }

    /// Whether the verdict is [`Integrity::Ok`].
    pub fn is_ok(&self) -> bool {
        *self == Integrity::Ok
    }
}

impl fmt::Display for Integrity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Integrity::Ok => f.write_str("ok"),
            Integrity::Truncated {
                last_whole_chunk,
                offset,
                partial_bytes,
            } => {
                write!(
                    f,
                    "truncated after chunk {last_whole_chunk} (file offset {offset}"
                )?;
                if *partial_bytes > 0 {
                    write!(f, ", then {partial_bytes} bytes of an incomplete chunk)")
                } else {
                    write!(f, ", no end record)")
                }
            }
            Integrity::Corrupt {
                chunk,
                offset,
                what,
            } => write!(f, "corrupt at chunk {chunk} (file offset {offset}): {what}"),
            Integrity::Unreadable(e) => write!(f, "unreadable: {e}"),
        }
    }
}

/// What `hindsight trace info` prints about a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceInfo {
    /// The file's format version.
    pub format_version: u32,
    /// The header.
    pub header: TraceHeader,
    /// Per image of the header: whether its embedded copy was read whole and
    /// matched its SHA-256 (always false for images not embedded).
    pub images_verified: Vec<bool>,
    /// Whole, verified chunks (header chunk included).
    pub chunks: u64,
    /// Of those, embedded-image chunks.
    pub image_chunks: u64,
    /// File bytes in whole, verified chunks.
    pub bytes: u64,
    /// Records by kind, over the whole chunks.
    pub counts: RecordCounts,
    /// Instruction count of the first record.
    pub first_icount: Option<u64>,
    /// Instruction count of the last record.
    pub last_icount: Option<u64>,
    /// The end record, if the trace has one.
    pub end: Option<EndRecord>,
    /// SHA-256 of the last whole chunk (pins the whole trace up to it).
    pub chain_head: Digest,
    /// The verdict.
    pub integrity: Integrity,
}

impl TraceInfo {
    /// Records chunks among the whole chunks.
    pub fn record_chunks(&self) -> u64 {
        self.chunks.saturating_sub(1 + self.image_chunks)
    }
}

/// Reads a whole trace from `input` and summarizes it. Fails only when the
/// header cannot be read (not a trace, unsupported version, corrupt or
/// truncated header chunk); later problems become the
/// [`integrity`](TraceInfo::integrity) verdict.
pub fn info<R: Read>(input: R) -> Result<TraceInfo, TraceError> {
    let mut reader = TraceReader::with_options(input, ReadOptions { load_images: false })?;
    reader.keep_summaries(false);
    let mut counts = RecordCounts::default();
    let (mut first, mut last) = (None, None);
    let mut integrity = Integrity::Ok;
    for item in reader.by_ref() {
        match item {
            Ok(r) => {
                counts.add(&r);
                first.get_or_insert(r.icount());
                last = Some(r.icount());
            }
            Err(e) => {
                integrity = Integrity::from_error(e);
                break;
            }
        }
    }
    counts.state_summary = reader.summaries_read();
    let images_verified = (0..reader.header().images.len())
        .map(|i| reader.image_verified(i))
        .collect();
    Ok(TraceInfo {
        format_version: reader.format_version(),
        header: reader.header().clone(),
        images_verified,
        chunks: reader.chunks_verified(),
        image_chunks: reader.image_chunks(),
        bytes: reader.bytes_verified(),
        counts,
        first_icount: first,
        last_icount: last,
        end: reader.end().cloned(),
        chain_head: reader.chain_head(),
        integrity,
    })
}

/// [`info`] on the file at `path`.
pub fn info_file(path: impl AsRef<Path>) -> Result<TraceInfo, TraceError> {
    let file = std::fs::File::open(path).map_err(|source| TraceError::Io { offset: 0, source })?;
    info(std::io::BufReader::with_capacity(1 << 16, file))
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

impl fmt::Display for TraceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        writeln!(f, "format version: {}", self.format_version)?;
        writeln!(f, "recorded by:    hindsight {}", h.hindsight_version)?;
        writeln!(f, "cpu model:      {}", h.cpu_model)?;
        writeln!(f, "configuration:  {} entries", h.config.len())?;
        for (k, v) in h.config.iter() {
            writeln!(f, "  {k} = {v:?}")?;
        }
        writeln!(f, "images:         {}", h.images.len())?;
        for (i, img) in h.images.iter().enumerate() {
            let embedded = match (img.embedded, self.images_verified.get(i)) {
                (false, _) => "not embedded",
                (true, Some(true)) => "embedded, verified",
                (true, _) => "embedded, NOT verified",
            };
            writeln!(
                f,
                "  [{i}] {} {:?}: {} bytes, sha256 {} ({embedded})",
                img.role,
                img.name,
                img.size,
                hex(&img.sha256)
            )?;
        }
        writeln!(
            f,
            "chunks:         {} whole ({} header, {} image, {} records), {} bytes",
            self.chunks,
            u64::from(self.chunks > 0),
            self.image_chunks,
            self.record_chunks(),
            self.bytes
        )?;
        let c = &self.counts;
        writeln!(
            f,
            "records:        {} ({} console input / {} bytes, {} input / {} bytes, {} state hash ({} with summary), {} end)",
            c.total(),
            c.console_input,
            c.console_bytes,
            c.input,
            c.input_bytes,
            c.state_hash,
            c.state_summary,
            c.end
        )?;
        writeln!(
            f,
            "icount:         first {}, last {}",
            opt(self.first_icount),
            opt(self.last_icount)
        )?;
        match &self.end {
            Some(e) => writeln!(
                f,
                "end:            icount {}, exit code {} ({}), final state hash {}",
                e.icount,
                e.exit_code,
                e.reason,
                hex(&e.final_hash)
            )?,
            None => writeln!(f, "end:            none")?,
        }
        writeln!(f, "chain head:     sha256 {}", hex(&self.chain_head))?;
        write!(f, "integrity:      {}", self.integrity)
    }
}
