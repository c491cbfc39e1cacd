//! [`TraceError`]: every way writing or reading a trace can fail. Each
//! variant names what was wrong and where (chunk index, file offset).

use std::fmt;
use std::io;

use super::MAGIC;

/// An error from the trace writer or reader.
#[derive(Debug)]
pub enum TraceError {
    /// The file does not start with [`MAGIC`](super::MAGIC): it is not a
    /// hindsight trace at all (or is shorter than the magic).
    NotATrace {
        /// The first bytes of the file (at most eight).
        found: Vec<u8>,
    },
    /// The file is a trace, but of a format version this build cannot read.
    UnsupportedVersion {
        /// The version the file declares.
        found: u32,
        /// The versions this build reads.
        supported: &'static [u32],
    },
    /// A chunk failed verification: bad frame, checksum mismatch, hash-chain
    /// break, decompression failure, a record that does not parse, records
    /// out of order, or the file ends inside the header chunk. Nothing from
    /// this chunk was handed out; every record of the chunks before it was.
    Corrupt {
        /// Index of the chunk that failed (0 is the header chunk).
        chunk: u64,
        /// File offset of that chunk's first byte.
        offset: u64,
        /// What was wrong, with detail (field, payload offset, values).
        what: String,
    },
    /// The file ends before the trace does: after whole chunk
    /// `last_whole_chunk` come either nothing (the recording stopped before
    /// its end record) or the first `partial_bytes` bytes of a chunk that was
    /// being written. Every record of the whole chunks was handed out.
    Truncated {
        /// Index of the last chunk that is whole and verified.
        last_whole_chunk: u64,
        /// File offset where the whole chunks end.
        offset: u64,
        /// How many bytes of an incomplete chunk follow (0 if none).
        partial_bytes: u64,
    },
    /// An I/O error from the underlying file.
    Io {
        /// File offset at which the read or write was attempted.
        offset: u64,
        /// The error from the operating system.
        source: io::Error,
    },
    /// The writer was used wrongly: records out of instruction-count order,
    /// a record larger than a chunk may hold, an image whose bytes do not
    /// match its description, or a write after an earlier failure.
    InvalidInput {
        /// What was wrong.
        what: String,
    },
}

impl TraceError {
    /// The chunk this error is about, if it is about one.
    pub fn chunk(&self) -> Option<u64> {
        match self {
            TraceError::Corrupt { chunk, .. } => Some(*chunk),
            TraceError::Truncated {
                last_whole_chunk, ..
            } => Some(last_whole_chunk + 1),
            _ => None,
        }
    }

    pub(crate) fn corrupt(chunk: u64, offset: u64, what: impl Into<String>) -> Self {
        TraceError::Corrupt {
            chunk,
            offset,
            what: what.into(),
        }
    }

    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        TraceError::InvalidInput { what: what.into() }
    }
}

/// Renders bytes for a message: printable ASCII as is, the rest escaped.
fn escape(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect()
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::NotATrace { found } => write!(
                f,
                "not a hindsight trace: the file starts with \"{}\", a trace starts with \"{}\"",
                escape(found),
                escape(&MAGIC)
            ),
            TraceError::UnsupportedVersion { found, supported } => {
                let list: Vec<String> = supported.iter().map(u32::to_string).collect();
                write!(
                    f,
                    "trace format version {found} is not supported; this build reads version{} {}",
                    if supported.len() == 1 { "" } else { "s" },
                    list.join(", ")
                )
            }
            TraceError::Corrupt {
                chunk,
                offset,
                what,
            } => write!(
                f,
                "trace is corrupt at chunk {chunk} (file offset {offset}): {what}"
            ),
            TraceError::Truncated {
                last_whole_chunk,
                offset,
                partial_bytes,
            } => {
                write!(
                    f,
                    "trace is truncated after chunk {last_whole_chunk} (file offset {offset})"
                )?;
                if *partial_bytes > 0 {
                    write!(f, ": {partial_bytes} bytes of an incomplete chunk follow")
                } else {
                    write!(f, ": the recording stopped before its end record")
                }
            }
            TraceError::Io { offset, source } => {
                write!(f, "I/O error at trace file offset {offset}: {source}")
            }
            TraceError::InvalidInput { what } => write!(f, "invalid trace write: {what}"),
        }
    }
}

impl std::error::Error for TraceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TraceError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_and_where() {
        let e = TraceError::UnsupportedVersion {
            found: 9,
            supported: &[1, 2],
        };
        assert_eq!(
            e.to_string(),
            "trace format version 9 is not supported; this build reads versions 1, 2"
        );
        let e = TraceError::corrupt(3, 4096, "payload checksum mismatch");
        assert_eq!(
            e.to_string(),
            "trace is corrupt at chunk 3 (file offset 4096): payload checksum mismatch"
        );
        assert_eq!(e.chunk(), Some(3));
        let e = TraceError::NotATrace {
            found: b"\x7fELF".to_vec(),
        };
        assert!(e.to_string().contains("\\x7fELF"), "{e}");
        let e = TraceError::Truncated {
            last_whole_chunk: 5,
            offset: 100,
            partial_bytes: 7,
        };
        assert!(e.to_string().contains("after chunk 5"));
        assert_eq!(e.chunk(), Some(6));
    }
}
