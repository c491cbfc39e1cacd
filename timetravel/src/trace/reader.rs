//! [`TraceReader`]: opens a trace, verifies it chunk by chunk and hands out
//! the records of whole, verified chunks.
//!
//! | stage | chunks | on a problem |
//! |---|---|---|
//! | open | chunk 0: preamble, frame, header | `NotATrace`, `UnsupportedVersion`, `Corrupt { chunk: 0 }` from [`TraceReader::open`] |
//! | images | one chunk per embedded-image piece, in image order | kept, and yielded by the iterator before any record |
//! | records | records chunks, the last one holding `End` | yielded by the iterator after the records of every whole chunk before it |
//!
//! Every chunk is checked before anything from it is used: sync marker,
//! frame CRC, index, hash-chain link, lengths against [`MAX_RAW_LEN`], payload
//! CRC, decompression to exactly the raw length, and a payload that parses
//! completely. The reader never allocates more than one chunk's bounded
//! payload at a time on behalf of a length read from the file (embedded
//! images grow only as their verified pieces arrive).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::chunk::{chunk_hash, ChunkKind, Frame, FRAME_LEN, PREAMBLE_LEN};
use super::error::TraceError;
use super::header::TraceHeader;
use super::image::ImagePiece;
use super::record::{decode_records, EndRecord, Record};
use super::{Digest, MAGIC, MAX_RAW_LEN, SUPPORTED_VERSIONS};
use hindsight_machine::StateSummary;

/// Options for [`TraceReader::with_options`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOptions {
    /// Keep the bytes of embedded images in memory (for a replay). When
    /// false they are only verified against their SHA-256 (for `trace info`).
    pub load_images: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions { load_images: true }
    }
}

/// Where the reader is in the file.
#[derive(Debug)]
enum Stage {
    /// Reading the pieces of embedded image `image`, `offset` bytes in.
    Images {
        image: usize,
        offset: u64,
        hasher: Sha256,
        bytes: Vec<u8>,
    },
    /// Reading records chunks.
    Records,
    /// The end record was read; the file must end here.
    AfterEnd,
    /// Nothing more to read (complete, or an error was reported).
    Done,
}

/// What [`TraceReader::read_chunk`] found at the current offset.
enum Next {
    /// A whole chunk whose frame, link and payload checksum verified.
    Chunk {
        frame: Frame,
        raw: Vec<u8>,
        len: u64,
        hash: Digest,
    },
    /// The file ends here, `partial` bytes into a chunk.
    Eof { partial: u64 },
}

/// Reads and verifies a `.hsr` trace.
///
/// Iterate it for the records, in order. Records of a chunk are handed out
/// only once the whole chunk verified. The iterator ends with `None` after a
/// complete trace, or with one `Some(Err(_))`: [`TraceError::Truncated`] (the
/// records handed out are everything up to the last whole chunk) or
/// [`TraceError::Corrupt`] naming the chunk.
#[derive(Debug)]
pub struct TraceReader<R: Read> {
    input: R,
    options: ReadOptions,
    version: u32,
    header: TraceHeader,
    images: Vec<Option<Vec<u8>>>,
    verified: Vec<bool>,
    image_chunks: u64,
    /// File offset where the whole, verified chunks end.
    offset: u64,
    /// Index of the next chunk; also the number of verified chunks.
    next_index: u64,
    /// SHA-256 of the last verified chunk.
    chain: Digest,
    stage: Stage,
    queue: VecDeque<Record>,
    pending_error: Option<TraceError>,
    last_icount: Option<u64>,
    end: Option<EndRecord>,
    complete: bool,
    /// Summaries of the `StateSummary` records of the chunks handed out.
    summaries: Vec<StateSummary>,
    /// Whether to keep them (else only count them).
    keep_summaries: bool,
    /// `StateSummary` records read.
    summaries_read: u64,
}

impl TraceReader<BufReader<File>> {
    /// Opens the trace at `path`; see [`TraceReader::new`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TraceError> {
        Self::open_with(path, ReadOptions::default())
    }

    /// Opens the trace at `path` with `options`.
    pub fn open_with(path: impl AsRef<Path>, options: ReadOptions) -> Result<Self, TraceError> {
        let file = File::open(path).map_err(|source| TraceError::Io { offset: 0, source })?;
        Self::with_options(BufReader::with_capacity(1 << 16, file), options)
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to(input: &mut impl Read, buf: &mut [u8], offset: u64) -> Result<usize, TraceError> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(TraceError::Io {
                    offset: offset + n as u64,
                    source,
                })
            }
        }
    }
    Ok(n)
}

/// Reads `len` bytes (or fewer, if the input ends first) without trusting
/// `len` for the allocation beyond the bound the caller checked.
fn read_payload(input: &mut impl Read, len: u32, offset: u64) -> Result<Vec<u8>, TraceError> {
    let mut buf = Vec::new();
    match input.take(u64::from(len)).read_to_end(&mut buf) {
        Ok(_) => Ok(buf),
        Err(source) => Err(TraceError::Io {
            offset: offset + buf.len() as u64,
            source,
        }),
    }
}

impl<R: Read> TraceReader<R> {
    /// Reads and verifies the header chunk from `input` with default options
    /// (embedded images are loaded), then the embedded-image chunks.
    pub fn new(input: R) -> Result<Self, TraceError> {
        Self::with_options(input, ReadOptions::default())
    }

    /// Reads and verifies the header chunk, then the embedded-image chunks.
    ///
    /// Fails with [`TraceError::NotATrace`], [`TraceError::UnsupportedVersion`]
    /// or [`TraceError::Corrupt`] (chunk 0, including a file that ends inside
    /// it) only when the header cannot be read. A problem in the image chunks
    /// is reported by the first call to the iterator, so the header stays
    /// available.
    pub fn with_options(mut input: R, options: ReadOptions) -> Result<Self, TraceError> {
        let mut pre = [0u8; PREAMBLE_LEN];
        let n = read_up_to(&mut input, &mut pre, 0)?;
        if n < MAGIC.len() || pre[..MAGIC.len()] != MAGIC {
            return Err(TraceError::NotATrace {
                found: pre[..n.min(MAGIC.len())].to_vec(),
            });
        }
        let short = |got: usize| {
            TraceError::corrupt(
                0,
                0,
                format!("the file ends inside the header chunk, after {got} bytes"),
            )
        };
        if n < PREAMBLE_LEN {
            return Err(short(n));
        }
        let version = u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]);
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(TraceError::UnsupportedVersion {
                found: version,
                supported: SUPPORTED_VERSIONS,
            });
        }
        let mut fb = [0u8; FRAME_LEN];
        let n = read_up_to(&mut input, &mut fb, PREAMBLE_LEN as u64)?;
        if n < FRAME_LEN {
            return Err(short(PREAMBLE_LEN + n));
        }
        let frame = Frame::decode(&pre, &fb).map_err(|e| TraceError::corrupt(0, 0, e))?;
        if frame.index != 0 {
            return Err(TraceError::corrupt(
                0,
                0,
                format!("the first chunk has index {}, expected 0", frame.index),
            ));
        }
        if frame.kind != ChunkKind::Header {
            return Err(TraceError::corrupt(
                0,
                0,
                format!(
                    "the first chunk is a {} chunk, expected the header",
                    frame.kind.name()
                ),
            ));
        }
        if frame.prev_hash != [0; 32] {
            return Err(TraceError::corrupt(
                0,
                0,
                "the header chunk's previous-chunk hash is not zero",
            ));
        }
        let start = (PREAMBLE_LEN + FRAME_LEN) as u64;
        let stored = read_payload(&mut input, frame.stored_len, start)?;
        if stored.len() < frame.stored_len as usize {
            return Err(short(PREAMBLE_LEN + FRAME_LEN + stored.len()));
        }
        let raw = frame
            .decode_payload(&stored)
            .map_err(|e| TraceError::corrupt(0, 0, e))?;
        let header = TraceHeader::decode(&raw)
            .map_err(|e| TraceError::corrupt(0, 0, format!("header record: {e}")))?;
        let count = header.images.len();
        let mut reader = TraceReader {
            input,
            options,
            version,
            header,
            images: vec![None; count],
            verified: vec![false; count],
            image_chunks: 0,
            offset: start + stored.len() as u64,
            next_index: 1,
            chain: chunk_hash(&[&pre, &fb, &stored]),
            stage: Stage::Records,
            queue: VecDeque::new(),
            pending_error: None,
            last_icount: None,
            end: None,
            complete: false,
            summaries: Vec::new(),
            keep_summaries: true,
            summaries_read: 0,
        };
        if let Err(e) = reader.read_images() {
            reader.stage = Stage::Done;
            reader.pending_error = Some(e);
        }
        Ok(reader)
    }

    /// The format version of the file.
    pub fn format_version(&self) -> u32 {
        self.version
    }

    /// The header.
    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// The bytes of embedded image `index` (into `header().images`), if it is
    /// embedded, was loaded ([`ReadOptions::load_images`]) and verified
    /// against its SHA-256.
    pub fn embedded_image(&self, index: usize) -> Option<&[u8]> {
        self.images.get(index)?.as_deref()
    }

    /// Whether embedded image `index` was read whole and matched its SHA-256.
    pub fn image_verified(&self, index: usize) -> bool {
        self.verified.get(index).copied().unwrap_or(false)
    }

    /// Number of whole, verified chunks so far (the header chunk included).
    pub fn chunks_verified(&self) -> u64 {
        self.next_index
    }

    /// Number of verified embedded-image chunks.
    pub fn image_chunks(&self) -> u64 {
        self.image_chunks
    }

    /// File offset where the whole, verified chunks end.
    pub fn bytes_verified(&self) -> u64 {
        self.offset
    }

    /// SHA-256 of the last verified chunk: the head of the hash chain.
    pub fn chain_head(&self) -> Digest {
        self.chain
    }

    /// The end record, once read.
    pub fn end(&self) -> Option<&EndRecord> {
        self.end.as_ref()
    }

    /// Whether the whole trace was read and verified: the end record was
    /// handed out and the file ends right after its chunk. False while
    /// reading and after any error.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Whether to keep the state summaries of `StateSummary` records (the
    /// default) or only verify and count them ([`TraceReader::summaries_read`]).
    pub fn keep_summaries(&mut self, keep: bool) {
        self.keep_summaries = keep;
    }

    /// The state summaries read so far, in trace order: each belongs to the
    /// [`Record::StateHash`] of the same instruction count. Version 1 traces
    /// have none.
    pub fn summaries(&self) -> &[StateSummary] {
        &self.summaries
    }

    /// Takes the state summaries read so far (see
    /// [`TraceReader::summaries`]), e.g. for
    /// [`crate::replay_with_summaries`] after [`TraceReader::read_to_end`].
    pub fn take_summaries(&mut self) -> Vec<StateSummary> {
        std::mem::take(&mut self.summaries)
    }

    /// Number of `StateSummary` records read so far (kept or not).
    pub fn summaries_read(&self) -> u64 {
        self.summaries_read
    }

    /// Reads every remaining record. Returns them with `None` for a complete
    /// trace, or with the error that stopped the reading (every record before
    /// it is in the vector).
    pub fn read_to_end(&mut self) -> (Vec<Record>, Option<TraceError>) {
        let mut records = Vec::new();
        for item in self.by_ref() {
            match item {
                Ok(r) => records.push(r),
                Err(e) => return (records, Some(e)),
            }
        }
        (records, None)
    }

    /// Moves to the next embedded image that still needs pieces, verifying
    /// empty ones on the way; `Records` when none is left.
    fn next_image_stage(&mut self, from: usize) -> Result<Stage, TraceError> {
        for i in from..self.header.images.len() {
            let info = &self.header.images[i];
            if !info.embedded {
                continue;
            }
            if info.size > 0 {
                return Ok(Stage::Images {
                    image: i,
                    offset: 0,
                    hasher: Sha256::new(),
                    bytes: Vec::new(),
                });
            }
            let empty: Digest = Sha256::digest([]).into();
            if empty != info.sha256 {
                return Err(TraceError::corrupt(
                    0,
                    0,
                    format!(
                        "embedded image {i} ({}) is empty but its SHA-256 is not that of no bytes",
                        info.name
                    ),
                ));
            }
            self.verified[i] = true;
            if self.options.load_images {
                self.images[i] = Some(Vec::new());
            }
        }
        Ok(Stage::Records)
    }

    /// Reads the chunks of every embedded image.
    fn read_images(&mut self) -> Result<(), TraceError> {
        self.stage = self.next_image_stage(0)?;
        while let Stage::Images { .. } = self.stage {
            self.read_image_chunk()?;
        }
        Ok(())
    }

    fn read_image_chunk(&mut self) -> Result<(), TraceError> {
        let (index, start) = (self.next_index, self.offset);
        let (frame, raw, len, hash) = match self.read_chunk()? {
            Next::Chunk {
                frame,
                raw,
                len,
                hash,
            } => (frame, raw, len, hash),
            Next::Eof { partial } => return Err(self.truncated(partial)),
        };
        let Stage::Images {
            image,
            offset,
            hasher,
            bytes,
        } = &mut self.stage
        else {
            return Ok(());
        };
        let info = &self.header.images[*image];
        let corrupt = |what: String| TraceError::corrupt(index, start, what);
        if frame.kind != ChunkKind::Image {
            return Err(corrupt(format!(
                "a {} chunk where the piece at offset {} of embedded image {image} ({}) was expected",
                frame.kind.name(),
                *offset,
                info.name
            )));
        }
        let piece = ImagePiece::decode(&raw).map_err(|e| corrupt(format!("image piece: {e}")))?;
        if piece.image as usize != *image || piece.offset != *offset {
            return Err(corrupt(format!(
                "image piece for image {} at offset {}, expected image {image} at offset {offset}",
                piece.image, piece.offset
            )));
        }
        let piece_end = piece.offset + piece.data.len() as u64;
        if piece_end > info.size {
            return Err(corrupt(format!(
                "image piece ends at byte {piece_end} of image {image} ({}), which has {} bytes",
                info.name, info.size
            )));
        }
        hasher.update(piece.data);
        if self.options.load_images {
            bytes.extend_from_slice(piece.data);
        }
        *offset = piece_end;
        let done = piece_end == info.size;
        if done {
            let sha: Digest = hasher.clone().finalize().into();
            if sha != info.sha256 {
                return Err(corrupt(format!(
                    "embedded image {image} ({}) does not match the SHA-256 in the header",
                    info.name
                )));
            }
        }
        let image = *image;
        let loaded = std::mem::take(bytes);
        self.commit(len, hash);
        self.image_chunks += 1;
        if done {
            self.verified[image] = true;
            if self.options.load_images {
                self.images[image] = Some(loaded);
            }
            self.stage = self.next_image_stage(image + 1)?;
        } else if let Stage::Images { bytes, .. } = &mut self.stage {
            *bytes = loaded;
        }
        Ok(())
    }

    /// Reads one records chunk into the queue.
    fn read_records_chunk(&mut self) -> Result<(), TraceError> {
        let (index, start) = (self.next_index, self.offset);
        let (frame, raw, len, hash) = match self.read_chunk()? {
            Next::Chunk {
                frame,
                raw,
                len,
                hash,
            } => (frame, raw, len, hash),
            Next::Eof { partial } => return Err(self.truncated(partial)),
        };
        if frame.kind != ChunkKind::Records {
            return Err(TraceError::corrupt(
                index,
                start,
                format!("a {} chunk where records were expected", frame.kind.name()),
            ));
        }
        let (records, summaries) =
            decode_records(&raw, self.last_icount.unwrap_or(0), self.version)
                .map_err(|e| TraceError::corrupt(index, start, format!("records: {e}")))?;
        self.commit(len, hash);
        self.summaries_read += summaries.len() as u64;
        if self.keep_summaries {
            self.summaries.extend(summaries);
        }
        self.last_icount = records.last().map(Record::icount).or(self.last_icount);
        if let Some(Record::End(end)) = records.last() {
            self.end = Some(end.clone());
            self.stage = Stage::AfterEnd;
        }
        self.queue.extend(records);
        Ok(())
    }

    /// Accepts the chunk just read: it becomes the last whole chunk.
    fn commit(&mut self, len: u64, hash: Digest) {
        self.offset += len;
        self.next_index += 1;
        self.chain = hash;
    }

    fn truncated(&self, partial: u64) -> TraceError {
        TraceError::Truncated {
            last_whole_chunk: self.next_index - 1,
            offset: self.offset,
            partial_bytes: partial,
        }
    }

    /// Reads the chunk at the current offset and verifies its frame, index,
    /// chain link and payload. Does not advance: the caller commits once the
    /// payload also parsed.
    fn read_chunk(&mut self) -> Result<Next, TraceError> {
        let (index, start) = (self.next_index, self.offset);
        let corrupt = |what: String| TraceError::corrupt(index, start, what);
        let mut fb = [0u8; FRAME_LEN];
        let n = read_up_to(&mut self.input, &mut fb, start)?;
        if n < FRAME_LEN {
            return Ok(Next::Eof { partial: n as u64 });
        }
        let frame = match Frame::decode(&[], &fb) {
            Ok(f) => f,
            Err(e) => {
                // A crash can leave a zero-filled tail where a chunk was being
                // written: that is truncation, not corruption.
                if fb.iter().all(|&b| b == 0) {
                    if let Some(rest) = self.zero_tail(start + FRAME_LEN as u64)? {
                        return Ok(Next::Eof {
                            partial: FRAME_LEN as u64 + rest,
                        });
                    }
                }
                return Err(corrupt(e));
            }
        };
        if frame.index != index {
            return Err(corrupt(format!(
                "the frame says chunk {}, expected chunk {index}",
                frame.index
            )));
        }
        if frame.prev_hash != self.chain {
            return Err(corrupt(format!(
                "hash chain broken: the previous-chunk hash does not match chunk {}",
                index - 1
            )));
        }
        debug_assert!(frame.stored_len as u64 <= super::chunk::max_lz4_len(MAX_RAW_LEN));
        let stored = read_payload(&mut self.input, frame.stored_len, start + FRAME_LEN as u64)?;
        if stored.len() < frame.stored_len as usize {
            return Ok(Next::Eof {
                partial: (FRAME_LEN + stored.len()) as u64,
            });
        }
        let raw = frame.decode_payload(&stored).map_err(corrupt)?;
        let hash = chunk_hash(&[&fb, &stored]);
        Ok(Next::Chunk {
            frame,
            raw,
            len: (FRAME_LEN + stored.len()) as u64,
            hash,
        })
    }

    /// If the rest of the input is all zero bytes, how many there are.
    fn zero_tail(&mut self, offset: u64) -> Result<Option<u64>, TraceError> {
        let mut buf = [0u8; 4096];
        let mut total = 0u64;
        loop {
            let n = read_up_to(&mut self.input, &mut buf, offset + total)?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(None);
            }
            total += n as u64;
            if n < buf.len() {
                return Ok(Some(total));
            }
        }
    }

    /// After the end record: the file must end.
    fn check_eof(&mut self) -> Result<(), TraceError> {
        let mut b = [0u8; 1];
        if read_up_to(&mut self.input, &mut b, self.offset)? > 0 {
            return Err(TraceError::corrupt(
                self.next_index,
                self.offset,
                "the file goes on after the chunk holding the end record",
            ));
        }
        self.complete = true;
        Ok(())
    }
}

impl<R: Read> Iterator for TraceReader<R> {
    type Item = Result<Record, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Some(Ok(r));
            }
            if let Some(e) = self.pending_error.take() {
                self.stage = Stage::Done;
                return Some(Err(e));
            }
            let step = match self.stage {
                Stage::Done => return None,
                Stage::AfterEnd => {
                    self.stage = Stage::Done;
                    self.check_eof()
                }
                Stage::Records => self.read_records_chunk(),
                // read_images() leaves this stage only for Records or Done.
                Stage::Images { .. } => self.read_images(),
            };
            if let Err(e) = step {
                self.stage = Stage::Done;
                return Some(Err(e));
            }
        }
    }
}
