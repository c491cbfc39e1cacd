//! Crafted files whose lengths and counts lie: checksums are made valid so the
//! lies reach the length checks. No read may allocate more than the bytes
//! actually present justify; a tracking allocator measures the largest single
//! allocation each test thread makes.
//!
//! The chunks here are built by a second, independent encoder written from
//! docs/trace-format.md, which also checks that the document is enough to
//! produce files the reader accepts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use hindsight_timetravel::{TraceError, TraceReader};
use sha2::{Digest, Sha256};

struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|m| m.set(m.get().max(size)));
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// Runs `f` and returns its result with the largest allocation it made.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|m| m.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for part in parts {
        for &b in *part {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
    }
    c ^ 0xFFFF_FFFF
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// One chunk as docs/trace-format.md lays it out, with lengths as given.
struct Crafted {
    index: u64,
    kind: u8,
    codec: u8,
    stored_len: u32,
    raw_len: u32,
    payload: Vec<u8>,
}

/// Encodes `chunks` into a file, chaining and checksumming them correctly.
fn craft(chunks: &[Crafted]) -> Vec<u8> {
    let mut file = Vec::new();
    let mut prev = [0u8; 32];
    for c in chunks {
        let mut bytes = Vec::new();
        if c.index == 0 {
            bytes.extend_from_slice(b"HSTRACE\0");
            bytes.extend_from_slice(&1u32.to_le_bytes());
        }
        bytes.extend_from_slice(b"HSCK");
        bytes.extend_from_slice(&c.index.to_le_bytes());
        bytes.extend_from_slice(&[c.kind, c.codec, 0, 0]);
        bytes.extend_from_slice(&c.stored_len.to_le_bytes());
        bytes.extend_from_slice(&c.raw_len.to_le_bytes());
        bytes.extend_from_slice(&prev);
        bytes.extend_from_slice(&crc32(&[&c.payload]).to_le_bytes());
        let frame_crc = crc32(&[&bytes]);
        bytes.extend_from_slice(&frame_crc.to_le_bytes());
        bytes.extend_from_slice(&c.payload);
        prev = Sha256::digest(&bytes).into();
        file.extend_from_slice(&bytes);
    }
    file
}

fn stored(index: u64, kind: u8, payload: Vec<u8>) -> Crafted {
    let n = payload.len() as u32;
    Crafted {
        index,
        kind,
        codec: 0,
        stored_len: n,
        raw_len: n,
        payload,
    }
}

/// A header payload with `images` as (name, size, sha256, embedded).
fn header_payload(config_count: u32, images: &[(&str, u64, [u8; 32], bool)]) -> Vec<u8> {
    let mut p = Vec::new();
    put_str(&mut p, "0.1.0");
    put_str(&mut p, "crafted-cpu");
    p.extend_from_slice(&config_count.to_le_bytes());
    if config_count != u32::MAX {
        for i in 0..config_count {
            put_str(&mut p, &format!("k{i}"));
            put_str(&mut p, "v");
        }
    }
    p.extend_from_slice(&(images.len() as u32).to_le_bytes());
    for (name, size, sha, embedded) in images {
        put_str(&mut p, "kernel");
        put_str(&mut p, name);
        p.extend_from_slice(&size.to_le_bytes());
        p.extend_from_slice(sha);
        p.push(u8::from(*embedded));
    }
    p
}

fn end_payload(icount: u64) -> Vec<u8> {
    let mut p = vec![4];
    p.extend_from_slice(&icount.to_le_bytes());
    p.extend_from_slice(&[0x11; 32]);
    p.extend_from_slice(&0i32.to_le_bytes());
    put_str(&mut p, "done");
    p
}

fn read_all(bytes: &[u8]) -> Result<Option<TraceError>, TraceError> {
    let mut r = TraceReader::new(bytes)?;
    Ok(r.read_to_end().1)
}

/// Nothing a few KiB of crafted file can do should allocate more than this.
const SMALL: usize = 1 << 20;

#[test]
fn the_tracker_sees_large_allocations() {
    let (v, largest) = measured(|| vec![0u8; 2 * SMALL]);
    assert_eq!(v.len(), 2 * SMALL);
    assert!(largest >= 2 * SMALL);
}

#[test]
fn the_independent_encoder_produces_a_valid_trace() {
    let file = craft(&[
        stored(0, 0, header_payload(2, &[])),
        stored(1, 2, end_payload(7)),
    ]);
    let mut r = TraceReader::new(&file[..]).unwrap();
    assert_eq!(r.header().config.get("k1"), Some("v"));
    let (recs, err) = r.read_to_end();
    assert!(err.is_none(), "{err:?}");
    assert_eq!(recs.len(), 1);
}

#[test]
fn a_frame_claiming_four_gigabytes_is_refused_without_allocating() {
    let mut big = stored(1, 2, end_payload(7));
    big.stored_len = u32::MAX;
    big.raw_len = u32::MAX;
    let file = craft(&[stored(0, 0, header_payload(0, &[])), big]);
    let (res, largest) = measured(|| read_all(&file));
    match res {
        Ok(Some(TraceError::Corrupt { chunk: 1, what, .. })) => {
            assert!(what.contains("exceeds the limit"), "{what}")
        }
        other => panic!("expected corruption at chunk 1, got {other:?}"),
    }
    assert!(largest < SMALL, "largest allocation {largest}");
}

#[test]
fn a_valid_frame_claiming_sixteen_mebibytes_over_a_short_file_is_truncation() {
    let mut big = stored(1, 2, end_payload(7));
    big.stored_len = 16 << 20;
    big.raw_len = 16 << 20;
    let file = craft(&[stored(0, 0, header_payload(0, &[])), big]);
    let (res, largest) = measured(|| read_all(&file));
    match res {
        Ok(Some(TraceError::Truncated {
            last_whole_chunk: 0,
            partial_bytes,
            ..
        })) => assert_eq!(partial_bytes as usize, 64 + end_payload(7).len()),
        other => panic!("expected truncation, got {other:?}"),
    }
    assert!(largest < SMALL, "largest allocation {largest}");
}

#[test]
fn an_lz4_frame_claiming_an_impossible_ratio_is_refused_before_allocating() {
    let mut lie = stored(1, 2, vec![0xF0; 10]);
    lie.codec = 1;
    lie.raw_len = 16 << 20;
    let file = craft(&[stored(0, 0, header_payload(0, &[])), lie]);
    let (res, largest) = measured(|| read_all(&file));
    match res {
        Ok(Some(TraceError::Corrupt { chunk: 1, what, .. })) => {
            assert!(what.contains("cannot decompress"), "{what}")
        }
        other => panic!("expected corruption at chunk 1, got {other:?}"),
    }
    assert!(largest < SMALL, "largest allocation {largest}");
}

#[test]
fn lengths_and_counts_inside_payloads_are_bounded_by_the_payload() {
    // A console-input record claiming 4 GiB of bytes.
    let mut rec = vec![1];
    rec.extend_from_slice(&5u64.to_le_bytes());
    rec.extend_from_slice(&u32::MAX.to_le_bytes());
    rec.extend_from_slice(b"short");
    let file = craft(&[stored(0, 0, header_payload(0, &[])), stored(1, 2, rec)]);
    let (res, largest) = measured(|| read_all(&file));
    match res {
        Ok(Some(TraceError::Corrupt { chunk: 1, what, .. })) => {
            assert!(what.contains("console input bytes"), "{what}")
        }
        other => panic!("expected corruption at chunk 1, got {other:?}"),
    }
    assert!(largest < SMALL, "largest allocation {largest}");

    // A header claiming four billion configuration entries.
    let file = craft(&[stored(0, 0, header_payload(u32::MAX, &[]))]);
    let (res, largest) = measured(|| TraceReader::new(&file[..]).map(|_| ()));
    match res {
        Err(TraceError::Corrupt { chunk: 0, what, .. }) => {
            assert!(what.contains("configuration"), "{what}")
        }
        other => panic!("expected a corrupt header, got {other:?}"),
    }
    assert!(largest < SMALL, "largest allocation {largest}");
}

#[test]
fn an_embedded_image_claiming_exabytes_grows_only_with_its_pieces() {
    let header = header_payload(0, &[("huge", u64::MAX, [0; 32], true)]);
    let mut piece = Vec::new();
    piece.extend_from_slice(&0u32.to_le_bytes());
    piece.extend_from_slice(&0u64.to_le_bytes());
    piece.extend_from_slice(&[0xAB; 1000]);
    let file = craft(&[stored(0, 0, header), stored(1, 1, piece)]);
    let (res, largest) = measured(|| {
        let mut r = TraceReader::new(&file[..])?;
        assert_eq!(r.embedded_image(0), None);
        Ok::<_, TraceError>(r.read_to_end().1)
    });
    match res {
        Ok(Some(TraceError::Truncated {
            last_whole_chunk: 1,
            partial_bytes: 0,
            ..
        })) => {}
        other => panic!("expected truncation after the piece, got {other:?}"),
    }
    assert!(largest < SMALL, "largest allocation {largest}");
}

#[test]
fn misplaced_and_mismatched_image_pieces_are_corruption() {
    let data = b"the image";
    let sha: [u8; 32] = Sha256::digest(data).into();
    let header = header_payload(0, &[("img", data.len() as u64, sha, true)]);
    let piece = |image: u32, offset: u64, bytes: &[u8]| {
        let mut p = Vec::new();
        p.extend_from_slice(&image.to_le_bytes());
        p.extend_from_slice(&offset.to_le_bytes());
        p.extend_from_slice(bytes);
        p
    };
    let cases: [(Vec<Crafted>, &str); 5] = [
        (
            vec![
                stored(1, 1, piece(0, 0, data)),
                stored(2, 2, end_payload(1)),
            ],
            "",
        ),
        (
            vec![stored(1, 1, piece(0, 1, data))],
            "expected image 0 at offset 0",
        ),
        (
            vec![stored(1, 1, piece(0, 0, b"the imagX"))],
            "does not match the SHA-256",
        ),
        (
            vec![stored(1, 1, piece(0, 0, b"the image!"))],
            "ends at byte 10",
        ),
        (
            vec![stored(1, 2, end_payload(1))],
            "records chunk where the piece at offset 0",
        ),
    ];
    for (rest, expect) in cases {
        let mut chunks = vec![stored(0, 0, header.clone())];
        chunks.extend(rest);
        let file = craft(&chunks);
        match read_all(&file) {
            Ok(None) => assert_eq!(expect, "", "accepted"),
            Ok(Some(TraceError::Corrupt { chunk: 1, what, .. })) => {
                assert!(what.contains(expect), "{what} / {expect}")
            }
            other => panic!("{expect}: {other:?}"),
        }
    }
}

#[test]
fn a_header_chunk_that_is_not_one_is_refused() {
    let file = craft(&[stored(0, 2, end_payload(1))]);
    match TraceReader::new(&file[..]) {
        Err(TraceError::Corrupt { chunk: 0, what, .. }) => {
            assert!(what.contains("expected the header"), "{what}")
        }
        other => panic!("{:?}", other.err()),
    }
    let file = craft(&[
        stored(0, 0, header_payload(0, &[])),
        stored(1, 0, header_payload(0, &[])),
    ]);
    assert!(matches!(
        read_all(&file),
        Ok(Some(TraceError::Corrupt { chunk: 1, .. }))
    ));
}
