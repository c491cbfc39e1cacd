//! [`TraceWriter`]: writes a trace chunk by chunk.
//!
//! The header chunk and the embedded-image chunks are written when the writer
//! is created. Records are buffered and written as one records chunk when the
//! buffer reaches [`WriterOptions::chunk_bytes`], when the caller asks
//! ([`TraceWriter::flush_chunk`], which the recorder calls periodically), and
//! at [`TraceWriter::finish`]. Each chunk goes out in one `write_all` followed
//! by `flush`, so a process killed at any moment leaves whole chunks plus at
//! most one partial chunk, and a reader replays everything up to the last
//! whole one.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::chunk::{chunk_hash, encode_chunk, ChunkKind};
use super::error::TraceError;
use super::header::TraceHeader;
use super::image::{ImagePiece, PIECE_HEADER_LEN};
use super::record::{
    encode_console_input, encode_input, encode_state_hash, encode_state_summary, EndRecord, Record,
};
use super::summary::encode_checked;
use super::{Digest, MAX_RAW_LEN};
use hindsight_machine::StateSummary;
use sha2::{Digest as _, Sha256};

/// Tunables of a [`TraceWriter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// A records chunk is written once this many uncompressed bytes of
    /// records are buffered (default 64 KiB; clamped to 1..=16 MiB).
    pub chunk_bytes: usize,
    /// Embedded images are cut into pieces of this many bytes, one chunk each
    /// (default 1 MiB; clamped so a piece fits a chunk).
    pub image_piece_bytes: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            chunk_bytes: 64 << 10,
            image_piece_bytes: 1 << 20,
        }
    }
}

/// Writes a `.hsr` trace to any [`Write`].
///
/// Records must come in non-decreasing instruction-count order. Dropping the
/// writer without [`finish`](Self::finish) writes the buffered records as a
/// last chunk (best effort) but no end record, so readers report the trace as
/// truncated after that chunk.
#[derive(Debug)]
pub struct TraceWriter<W: Write> {
    /// `None` only after `finish` has handed the output back.
    out: Option<W>,
    options: WriterOptions,
    next_index: u64,
    chain: Digest,
    offset: u64,
    pending: Vec<u8>,
    last_icount: u64,
    failed: bool,
}

impl TraceWriter<File> {
    /// Creates (or truncates) the file at `path` and writes the header and
    /// image chunks; see [`TraceWriter::new`].
    pub fn create(
        path: impl AsRef<Path>,
        header: &TraceHeader,
        images: &[Option<&[u8]>],
    ) -> Result<Self, TraceError> {
        let file = File::create(path).map_err(|source| TraceError::Io { offset: 0, source })?;
        Self::new(file, header, images)
    }

    /// Writes the buffered records as a chunk and asks the operating system
    /// to put the file's data on disk (`sync_data`), so even a power loss
    /// keeps everything recorded so far.
    pub fn sync(&mut self) -> Result<(), TraceError> {
        self.flush_chunk()?;
        if let Some(file) = &self.out {
            file.sync_data().map_err(|source| TraceError::Io {
                offset: self.offset,
                source,
            })?;
        }
        Ok(())
    }
}

impl<W: Write> TraceWriter<W> {
    /// Starts a trace on `out` with default options; see
    /// [`with_options`](Self::with_options).
    pub fn new(out: W, header: &TraceHeader, images: &[Option<&[u8]>]) -> Result<Self, TraceError> {
        Self::with_options(out, header, images, WriterOptions::default())
    }

    /// Starts a trace on `out`: writes the header chunk, then the chunks of
    /// every embedded image, each flushed.
    ///
    /// `images` is either empty (embed nothing) or parallel to
    /// `header.images`: `Some(bytes)` embeds that image. The `embedded` flag
    /// of each [`ImageInfo`](super::ImageInfo) is set from it, and the bytes
    /// must match the image's size and SHA-256.
    pub fn with_options(
        out: W,
        header: &TraceHeader,
        images: &[Option<&[u8]>],
        options: WriterOptions,
    ) -> Result<Self, TraceError> {
        if !images.is_empty() && images.len() != header.images.len() {
            return Err(TraceError::invalid(format!(
                "{} image byte slots for {} images in the header",
                images.len(),
                header.images.len()
            )));
        }
        let mut header = header.clone();
        for (i, info) in header.images.iter_mut().enumerate() {
            let bytes = images.get(i).copied().flatten();
            info.embedded = bytes.is_some();
            if let Some(bytes) = bytes {
                let sha: Digest = Sha256::digest(bytes).into();
                if bytes.len() as u64 != info.size || sha != info.sha256 {
                    return Err(TraceError::invalid(format!(
                        "bytes given for image {i} ({}) do not match its size and SHA-256",
                        info.name
                    )));
                }
            }
        }
        let encoded = header.encode();
        if encoded.len() > MAX_RAW_LEN as usize {
            return Err(TraceError::invalid(format!(
                "header is {} bytes, more than a chunk holds ({MAX_RAW_LEN})",
                encoded.len()
            )));
        }
        let options = WriterOptions {
            chunk_bytes: options.chunk_bytes.clamp(1, MAX_RAW_LEN as usize),
            image_piece_bytes: options
                .image_piece_bytes
                .clamp(1, MAX_RAW_LEN as usize - PIECE_HEADER_LEN),
        };
        let mut w = TraceWriter {
            out: Some(out),
            options,
            next_index: 0,
            chain: [0; 32],
            offset: 0,
            pending: Vec::new(),
            last_icount: 0,
            failed: false,
        };
        w.write_chunk(ChunkKind::Header, &encoded)?;
        for (i, bytes) in images.iter().enumerate() {
            let Some(bytes) = bytes else { continue };
            let mut at = 0usize;
            for data in bytes.chunks(options.image_piece_bytes) {
                let piece = ImagePiece {
                    image: i as u32,
                    offset: at as u64,
                    data,
                };
                w.write_chunk(ChunkKind::Image, &piece.encode())?;
                at += data.len();
            }
        }
        Ok(w)
    }

    /// Appends a record. `End` is refused here: use [`finish`](Self::finish).
    pub fn record(&mut self, record: &Record) -> Result<(), TraceError> {
        if let Record::End(_) = record {
            return Err(TraceError::invalid("the end record is written by finish()"));
        }
        self.append(record.icount(), record.encoded_len(), |buf| {
            record.encode(buf)
        })
    }

    /// Appends a `ConsoleInput` record.
    pub fn console_input(&mut self, icount: u64, bytes: &[u8]) -> Result<(), TraceError> {
        self.append(icount, 1 + 8 + 4 + bytes.len(), |buf| {
            encode_console_input(buf, icount, bytes)
        })
    }

    /// Appends an `Input` record for `channel`.
    pub fn input(&mut self, icount: u64, channel: u16, bytes: &[u8]) -> Result<(), TraceError> {
        self.append(icount, 1 + 8 + 2 + 4 + bytes.len(), |buf| {
            encode_input(buf, icount, channel, bytes)
        })
    }

    /// Appends a `StateHash` record.
    pub fn state_hash(&mut self, icount: u64, hash: &Digest) -> Result<(), TraceError> {
        self.append(icount, 1 + 8 + 32, |buf| {
            encode_state_hash(buf, icount, hash)
        })
    }

    /// Appends a `StateSummary` record: the state hash `hash` at
    /// `summary.icount` with the summary beside it (format version 2).
    /// Refuses a summary that the format cannot hold (more than 65,535
    /// vCPUs or parts, a name longer than 255 bytes, lists out of order).
    pub fn state_summary(
        &mut self,
        hash: &Digest,
        summary: &StateSummary,
    ) -> Result<(), TraceError> {
        let icount = summary.icount;
        let encoded = encode_checked(summary)
            .map_err(|e| TraceError::invalid(format!("state summary at icount {icount}: {e}")))?;
        self.append(icount, 1 + 8 + 32 + encoded.len(), |buf| {
            encode_state_summary(buf, icount, hash, &encoded)
        })
    }

    /// Writes the buffered records as one chunk now (nothing if none are
    /// buffered). The recorder calls this periodically so that a killed
    /// recording loses little.
    pub fn flush_chunk(&mut self) -> Result<(), TraceError> {
        self.check_usable()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let raw = std::mem::take(&mut self.pending);
        self.write_chunk(ChunkKind::Records, &raw)?;
        self.pending = raw;
        self.pending.clear();
        Ok(())
    }

    /// Ends the trace: writes the buffered records and `end` as the last
    /// chunk, and hands back the output.
    pub fn finish(mut self, end: EndRecord) -> Result<W, TraceError> {
        let record = Record::End(end);
        self.append(record.icount(), record.encoded_len(), |buf| {
            record.encode(buf)
        })?;
        self.flush_chunk()?;
        self.out
            .take()
            .ok_or_else(|| TraceError::invalid("the trace was already finished"))
    }

    /// Number of chunks written so far (the header chunk included).
    pub fn chunks_written(&self) -> u64 {
        self.next_index
    }

    /// Number of bytes written so far (whole chunks only).
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// Uncompressed bytes of records buffered and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// SHA-256 of the last chunk written: the head of the hash chain, which
    /// pins everything written so far.
    pub fn chain_head(&self) -> Digest {
        self.chain
    }

    fn check_usable(&self) -> Result<(), TraceError> {
        if self.failed {
            return Err(TraceError::invalid(
                "an earlier write failed; the trace ends at its last whole chunk",
            ));
        }
        if self.out.is_none() {
            return Err(TraceError::invalid("the trace was already finished"));
        }
        Ok(())
    }

    /// Buffers one encoded record of `len` bytes stamped `icount`.
    fn append(
        &mut self,
        icount: u64,
        len: usize,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), TraceError> {
        self.check_usable()?;
        if icount < self.last_icount {
            return Err(TraceError::invalid(format!(
                "record at icount {icount} after one at icount {}: records must be in order",
                self.last_icount
            )));
        }
        if len > MAX_RAW_LEN as usize {
            return Err(TraceError::invalid(format!(
                "a {len}-byte record is larger than a chunk holds ({MAX_RAW_LEN})"
            )));
        }
        if self.pending.len() + len > MAX_RAW_LEN as usize {
            self.flush_chunk()?;
        }
        let before = self.pending.len();
        encode(&mut self.pending);
        debug_assert_eq!(self.pending.len() - before, len);
        self.last_icount = icount;
        if self.pending.len() >= self.options.chunk_bytes {
            self.flush_chunk()?;
        }
        Ok(())
    }

    /// Writes one chunk with a single `write_all`, then flushes.
    fn write_chunk(&mut self, kind: ChunkKind, raw: &[u8]) -> Result<(), TraceError> {
        let bytes = encode_chunk(self.next_index, kind, &self.chain, raw);
        let offset = self.offset;
        let Some(out) = self.out.as_mut() else {
            return Err(TraceError::invalid("the trace was already finished"));
        };
        if let Err(source) = out.write_all(&bytes).and_then(|()| out.flush()) {
            self.failed = true;
            return Err(TraceError::Io { offset, source });
        }
        self.chain = chunk_hash(&[&bytes]);
        self.offset += bytes.len() as u64;
        self.next_index += 1;
        Ok(())
    }
}

impl<W: Write> Drop for TraceWriter<W> {
    fn drop(&mut self) {
        if self.out.is_some() && !self.failed {
            let _ = self.flush_chunk();
        }
    }
}
