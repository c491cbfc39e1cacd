//! The file preamble and the chunk frame (docs/trace-format.md, "Chunks").
//!
//! ```text
//! chunk 0 only:  0  8  magic "HSTRACE\0"
//!                8  4  format version (u32)
//! frame:  +0   4  sync "HSCK"
//!         +4   8  chunk index (u64, 0, 1, 2, ... in file order)
//!         +12  1  kind   (0 header, 1 image piece, 2 records)
//!         +13  1  codec  (0 stored, 1 LZ4 block)
//!         +14  2  reserved, 0
//!         +16  4  stored length (u32, payload bytes in the file)
//!         +20  4  raw length (u32, payload bytes after decompression)
//!         +24 32  SHA-256 of the previous chunk's bytes (zero for chunk 0)
//!         +56  4  CRC-32 of the stored payload
//!         +60  4  CRC-32 of the chunk's bytes from its first byte to +60
//! payload: stored length bytes
//! ```
//!
//! The frame CRC covers the lengths, so a corrupted length is reported as
//! corruption, never mistaken for a truncated file; the payload CRC covers the
//! payload. The hash chain (SHA-256 of the whole previous chunk, preamble,
//! frame and payload) makes every chunk commit to all chunks before it.

use sha2::{Digest as _, Sha256};

use super::crc32::{crc32, Crc32};
use super::{Digest, MAGIC, MAX_RAW_LEN};

/// Length of the file preamble (magic and format version) that opens chunk 0.
pub(crate) const PREAMBLE_LEN: usize = 12;
/// Length of a chunk frame.
pub(crate) const FRAME_LEN: usize = 64;
/// The sync marker that opens every frame.
pub(crate) const SYNC: [u8; 4] = *b"HSCK";
/// Offset of the payload CRC inside the frame.
const PAYLOAD_CRC_AT: usize = 56;
/// Offset of the frame CRC inside the frame; it covers everything before.
const FRAME_CRC_AT: usize = 60;

/// What a chunk's payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkKind {
    /// The header record; only chunk 0.
    Header = 0,
    /// A piece of an embedded image.
    Image = 1,
    /// Input-log records.
    Records = 2,
}

impl ChunkKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(ChunkKind::Header),
            1 => Some(ChunkKind::Image),
            2 => Some(ChunkKind::Records),
            _ => None,
        }
    }

    /// A lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            ChunkKind::Header => "header",
            ChunkKind::Image => "image",
            ChunkKind::Records => "records",
        }
    }
}

/// How a chunk's payload is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// As is: the stored length equals the raw length.
    Stored = 0,
    /// One LZ4 block (the LZ4 block format, no frame, no size prefix).
    Lz4 = 1,
}

impl Codec {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Codec::Stored),
            1 => Some(Codec::Lz4),
            _ => None,
        }
    }
}

/// The largest LZ4 block a payload of `raw` bytes can compress to
/// (LZ4_COMPRESSBOUND).
pub(crate) fn max_lz4_len(raw: u32) -> u64 {
    u64::from(raw) + u64::from(raw) / 255 + 16
}

/// The file preamble for `version`.
pub(crate) fn preamble(version: u32) -> [u8; PREAMBLE_LEN] {
    let mut p = [0u8; PREAMBLE_LEN];
    p[..8].copy_from_slice(&MAGIC);
    p[8..].copy_from_slice(&version.to_le_bytes());
    p
}

/// SHA-256 of a chunk's bytes: the link the next chunk stores.
pub(crate) fn chunk_hash(parts: &[&[u8]]) -> Digest {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Builds a whole chunk: the preamble (chunk 0 only), the frame and the
/// payload, compressed with LZ4 when that makes it smaller. `raw` must be at
/// most [`MAX_RAW_LEN`] bytes.
pub(crate) fn encode_chunk(index: u64, kind: ChunkKind, prev_hash: &Digest, raw: &[u8]) -> Vec<u8> {
    debug_assert!(raw.len() <= MAX_RAW_LEN as usize);
    let compressed = lz4_flex::block::compress(raw);
    let (codec, payload): (Codec, &[u8]) = if compressed.len() < raw.len() {
        (Codec::Lz4, &compressed)
    } else {
        (Codec::Stored, raw)
    };
    let start = if index == 0 { PREAMBLE_LEN } else { 0 };
    let mut out = Vec::with_capacity(start + FRAME_LEN + payload.len());
    if index == 0 {
        out.extend_from_slice(&preamble(super::FORMAT_VERSION));
    }
    out.extend_from_slice(&SYNC);
    out.extend_from_slice(&index.to_le_bytes());
    out.push(kind as u8);
    out.push(codec as u8);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    out.extend_from_slice(prev_hash);
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    let frame_crc = crc32(&out);
    out.extend_from_slice(&frame_crc.to_le_bytes());
    debug_assert_eq!(out.len(), start + FRAME_LEN);
    out.extend_from_slice(payload);
    out
}

/// A verified chunk frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) index: u64,
    pub(crate) kind: ChunkKind,
    pub(crate) codec: Codec,
    pub(crate) stored_len: u32,
    pub(crate) raw_len: u32,
    pub(crate) prev_hash: Digest,
    pub(crate) payload_crc: u32,
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

impl Frame {
    /// Parses and verifies a frame. `prefix` is the preamble for chunk 0 and
    /// empty otherwise (the frame CRC covers it). Checks the sync marker, the
    /// frame CRC, the kind and codec, and bounds both lengths; the error says
    /// which check failed.
    pub(crate) fn decode(prefix: &[u8], bytes: &[u8; FRAME_LEN]) -> Result<Frame, String> {
        if bytes[..4] != SYNC {
            return Err(format!(
                "bad frame: sync marker is {:02x?}, expected \"HSCK\"",
                &bytes[..4]
            ));
        }
        let stored_crc = le_u32(&bytes[FRAME_CRC_AT..]);
        let mut c = Crc32::new();
        c.update(prefix);
        c.update(&bytes[..FRAME_CRC_AT]);
        let computed = c.finish();
        if stored_crc != computed {
            return Err(format!(
                "frame checksum mismatch (stored {stored_crc:#010x}, computed {computed:#010x})"
            ));
        }
        let index = u64::from_le_bytes(bytes[4..12].try_into().unwrap_or_default());
        let kind = ChunkKind::from_u8(bytes[12])
            .ok_or_else(|| format!("bad frame: unknown chunk kind {}", bytes[12]))?;
        let codec = Codec::from_u8(bytes[13])
            .ok_or_else(|| format!("bad frame: unknown codec {}", bytes[13]))?;
        if bytes[14] != 0 || bytes[15] != 0 {
            return Err("bad frame: reserved bytes are not zero".into());
        }
        let stored_len = le_u32(&bytes[16..]);
        let raw_len = le_u32(&bytes[20..]);
        if raw_len > MAX_RAW_LEN {
            return Err(format!(
                "bad frame: raw length {raw_len} exceeds the limit of {MAX_RAW_LEN}"
            ));
        }
        match codec {
            Codec::Stored if stored_len != raw_len => {
                return Err(format!(
                    "bad frame: stored payload of {stored_len} bytes but raw length {raw_len}"
                ))
            }
            // An LZ4 block expands at most 255-fold (a sequence of n bytes
            // yields at most 255 n), which also bounds what a reader allocates
            // by the bytes actually present in the file.
            Codec::Lz4
                if u64::from(stored_len) > max_lz4_len(raw_len)
                    || u64::from(raw_len) > 255 * u64::from(stored_len) =>
            {
                return Err(format!(
                    "bad frame: LZ4 payload of {stored_len} bytes cannot decompress to {raw_len}"
                ))
            }
            _ => {}
        }
        let mut prev_hash = [0u8; 32];
        prev_hash.copy_from_slice(&bytes[24..56]);
        Ok(Frame {
            index,
            kind,
            codec,
            stored_len,
            raw_len,
            prev_hash,
            payload_crc: le_u32(&bytes[PAYLOAD_CRC_AT..]),
        })
    }

    /// Verifies the stored payload against the payload CRC and decompresses
    /// it to exactly the raw length.
    pub(crate) fn decode_payload(&self, stored: &[u8]) -> Result<Vec<u8>, String> {
        let computed = crc32(stored);
        if computed != self.payload_crc {
            return Err(format!(
                "payload checksum mismatch (stored {:#010x}, computed {computed:#010x})",
                self.payload_crc
            ));
        }
        match self.codec {
            Codec::Stored => Ok(stored.to_vec()),
            Codec::Lz4 => {
                // raw_len <= MAX_RAW_LEN was checked in decode().
                let mut raw = vec![0u8; self.raw_len as usize];
                match lz4_flex::block::decompress_into(stored, &mut raw) {
                    Ok(n) if n == raw.len() => Ok(raw),
                    Ok(n) => Err(format!(
                        "LZ4 payload decompressed to {n} bytes, the frame says {}",
                        self.raw_len
                    )),
                    Err(e) => Err(format!("LZ4 decompression failed: {e}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunk: &[u8], index: u64) -> (&[u8], [u8; FRAME_LEN], &[u8]) {
        let start = if index == 0 { PREAMBLE_LEN } else { 0 };
        let frame: [u8; FRAME_LEN] = chunk[start..start + FRAME_LEN].try_into().unwrap();
        (&chunk[..start], frame, &chunk[start + FRAME_LEN..])
    }

    #[test]
    fn compressible_payload_round_trips_through_lz4() {
        let raw = vec![7u8; 5000];
        let prev = [9u8; 32];
        let chunk = encode_chunk(3, ChunkKind::Records, &prev, &raw);
        let (prefix, frame, payload) = split(&chunk, 3);
        let f = Frame::decode(prefix, &frame).unwrap();
        assert_eq!(f.index, 3);
        assert_eq!(f.kind, ChunkKind::Records);
        assert_eq!(f.codec, Codec::Lz4);
        assert_eq!(f.raw_len, 5000);
        assert_eq!(f.stored_len as usize, payload.len());
        assert_eq!(f.prev_hash, prev);
        assert_eq!(f.decode_payload(payload).unwrap(), raw);
    }

    #[test]
    fn maximally_compressible_payload_passes_the_expansion_bound() {
        for len in [1usize, 20, 4096, MAX_RAW_LEN as usize] {
            let raw = vec![0u8; len];
            let chunk = encode_chunk(1, ChunkKind::Records, &[0; 32], &raw);
            let (prefix, frame, payload) = split(&chunk, 1);
            let f = Frame::decode(prefix, &frame).unwrap();
            assert_eq!(f.decode_payload(payload).unwrap(), raw, "len {len}");
        }
    }

    #[test]
    fn incompressible_payload_is_stored() {
        let mut x = 0x9E37_79B9u32;
        let raw: Vec<u8> = (0..300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let chunk = encode_chunk(0, ChunkKind::Header, &[0; 32], &raw);
        assert_eq!(&chunk[..8], &MAGIC);
        let (prefix, frame, payload) = split(&chunk, 0);
        let f = Frame::decode(prefix, &frame).unwrap();
        assert_eq!(f.codec, Codec::Stored);
        assert_eq!(f.decode_payload(payload).unwrap(), raw);
    }

    #[test]
    fn frame_crc_covers_preamble_and_every_frame_byte() {
        let chunk = encode_chunk(0, ChunkKind::Header, &[0; 32], b"abc");
        for i in 0..PREAMBLE_LEN + FRAME_LEN {
            let mut c = chunk.clone();
            c[i] ^= 0x01;
            let (prefix, frame, _) = split(&c, 0);
            assert!(Frame::decode(prefix, &frame).is_err(), "byte {i}");
        }
    }

    #[test]
    fn oversized_lengths_are_refused() {
        let mut chunk = encode_chunk(1, ChunkKind::Records, &[0; 32], b"x");
        chunk[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        chunk[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32(&chunk[..FRAME_CRC_AT]);
        chunk[FRAME_CRC_AT..FRAME_LEN].copy_from_slice(&crc.to_le_bytes());
        let (prefix, frame, _) = split(&chunk, 1);
        let e = Frame::decode(prefix, &frame).unwrap_err();
        assert!(e.contains("exceeds the limit"), "{e}");
    }

    #[test]
    fn garbage_lz4_is_an_error_not_a_panic() {
        let f = Frame {
            index: 1,
            kind: ChunkKind::Records,
            codec: Codec::Lz4,
            stored_len: 4,
            raw_len: 100,
            prev_hash: [0; 32],
            payload_crc: crc32(&[0xF0, 0xFF, 0xFF, 0xFF]),
        };
        assert!(f.decode_payload(&[0xF0, 0xFF, 0xFF, 0xFF]).is_err());
    }
}
