//! Damaged traces: every flipped byte, every truncation, killed and dropped
//! writers, versions from the future, spliced and reordered chunks, and a
//! deterministic fuzz. The reader must name the right chunk, hand out every
//! record before it, never accept a changed file and never panic.

mod common;

use common::*;
use hindsight_timetravel::{
    Record, TraceError, TraceHeader, TraceReader, TraceWriter, FORMAT_VERSION, SUPPORTED_VERSIONS,
};

/// Index of the chunk holding byte `at`.
fn chunk_of(spans: &[(usize, usize)], at: usize) -> usize {
    spans.iter().position(|&(s, e)| s <= at && at < e).unwrap()
}

#[test]
fn every_flipped_byte_is_caught_and_names_its_chunk() {
    let bytes = sample_trace();
    let spans = chunk_spans(&bytes);
    let before: Vec<Vec<Record>> = (0..spans.len())
        .map(|k| records_before_chunk(&bytes, k))
        .collect();
    let mut per_chunk = vec![0usize; spans.len()];
    let (mut not_trace, mut version) = (0, 0);
    for at in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xFF] {
            let mut bad = bytes.clone();
            bad[at] ^= mask;
            let k = chunk_of(&spans, at);
            match read(&bad) {
                Outcome::Open(TraceError::NotATrace { .. }) => {
                    assert!(at < 8, "byte {at}: NotATrace outside the magic");
                    not_trace += 1;
                }
                Outcome::Open(TraceError::UnsupportedVersion { found, supported }) => {
                    assert!((8..12).contains(&at), "byte {at}: version error");
                    assert_eq!(found, FORMAT_VERSION ^ (u32::from(mask) << (8 * (at - 8))));
                    assert_eq!(supported, SUPPORTED_VERSIONS);
                    version += 1;
                }
                Outcome::Open(TraceError::Corrupt { chunk, offset, .. }) => {
                    assert!(at >= 12, "byte {at}");
                    assert_eq!((chunk, offset), (0, 0), "byte {at}");
                    assert_eq!(k, 0, "byte {at}: open fails only for the header chunk");
                    per_chunk[0] += 1;
                }
                Outcome::Read(
                    recs,
                    Some(TraceError::Corrupt {
                        chunk,
                        offset,
                        what,
                    }),
                ) => {
                    assert_eq!(chunk as usize, k, "byte {at} ^ {mask:#x}: {what}");
                    assert_eq!(offset as usize, spans[k].0, "byte {at}");
                    assert_eq!(recs, before[k], "byte {at}: records before chunk {k}");
                    per_chunk[k] += 1;
                }
                Outcome::Open(e) => panic!("byte {at} ^ {mask:#x}: unexpected {e}"),
                Outcome::Read(_, Some(e)) => panic!("byte {at} ^ {mask:#x}: unexpected {e}"),
                Outcome::Read(_, None) => panic!("byte {at} ^ {mask:#x}: accepted silently"),
            }
        }
    }
    assert_eq!((not_trace, version), (8 * 3, 4 * 3));
    for (k, &(s, e)) in spans.iter().enumerate() {
        let frame_and_payload = if k == 0 { e - s - 12 } else { e - s };
        assert_eq!(per_chunk[k], 3 * frame_and_payload, "chunk {k}");
    }
    assert!(
        spans.len() >= 10,
        "the sample has many chunks: {}",
        spans.len()
    );
}

#[test]
fn every_truncation_replays_to_the_last_whole_chunk() {
    let bytes = sample_trace();
    let spans = chunk_spans(&bytes);
    let header_end = spans[0].1;
    for cut in 0..=bytes.len() {
        let outcome = read(&bytes[..cut]);
        if cut < 8 {
            match outcome {
                Outcome::Open(TraceError::NotATrace { found }) => assert_eq!(found, &bytes[..cut]),
                _ => panic!("cut {cut}: expected NotATrace"),
            }
            continue;
        }
        if cut < header_end {
            match outcome {
                Outcome::Open(TraceError::Corrupt { chunk: 0, what, .. }) => {
                    assert!(what.contains("ends inside the header"), "cut {cut}: {what}")
                }
                _ => panic!("cut {cut}: expected a corrupt header chunk"),
            }
            continue;
        }
        // Whole chunks [0, n) fit in the cut.
        let n = spans.iter().filter(|&&(_, e)| e <= cut).count();
        match outcome {
            Outcome::Read(recs, None) => {
                assert_eq!(cut, bytes.len(), "only the whole file is complete");
                assert_eq!(recs, records_before_chunk(&bytes, spans.len()));
            }
            Outcome::Read(
                recs,
                Some(TraceError::Truncated {
                    last_whole_chunk,
                    offset,
                    partial_bytes,
                }),
            ) => {
                assert_eq!(last_whole_chunk as usize, n - 1, "cut {cut}");
                assert_eq!(offset as usize, spans[n - 1].1, "cut {cut}");
                assert_eq!(partial_bytes as usize, cut - spans[n - 1].1, "cut {cut}");
                assert_eq!(recs, records_before_chunk(&bytes, n), "cut {cut}");
            }
            Outcome::Open(e) | Outcome::Read(_, Some(e)) => panic!("cut {cut}: {e}"),
        }
    }
}

#[test]
fn a_killed_writer_leaves_a_trace_readable_to_its_last_flushed_chunk() {
    let buf = SharedBuf::default();
    let mut w = TraceWriter::new(buf.clone(), &header(), &[]).unwrap();
    w.console_input(10, b"echo typed-$((6*7))\n").unwrap();
    w.state_hash(20, &[1; 32]).unwrap();
    w.flush_chunk().unwrap();
    w.flush_chunk().unwrap(); // nothing buffered: writes nothing
    assert_eq!(w.chunks_written(), 2);
    w.console_input(30, b"poweroff -f\n").unwrap();
    // SIGKILL: no destructor runs, the buffered record is lost.
    std::mem::forget(w);
    let bytes = buf.bytes();
    let mut r = TraceReader::new(&bytes[..]).unwrap();
    let _ = r.read_to_end();
    assert!(!r.is_complete());
    assert_eq!(r.chunks_verified(), 2);
    match read(&bytes) {
        Outcome::Read(
            recs,
            Some(TraceError::Truncated {
                last_whole_chunk: 1,
                partial_bytes: 0,
                ..
            }),
        ) => {
            assert_eq!(recs.len(), 2);
            assert_eq!(
                recs[1],
                Record::StateHash {
                    icount: 20,
                    hash: [1; 32]
                }
            );
        }
        _ => panic!("expected a trace truncated after chunk 1"),
    }
}

#[test]
fn a_dropped_writer_saves_its_buffered_records() {
    let buf = SharedBuf::default();
    let mut w = TraceWriter::new(buf.clone(), &TraceHeader::default(), &[]).unwrap();
    w.console_input(10, b"a").unwrap();
    w.console_input(11, b"b").unwrap();
    drop(w);
    match read(&buf.bytes()) {
        Outcome::Read(
            recs,
            Some(TraceError::Truncated {
                last_whole_chunk: 1,
                partial_bytes: 0,
                ..
            }),
        ) => {
            assert_eq!(recs.len(), 2)
        }
        _ => panic!("expected the dropped writer's records"),
    }
}

#[test]
fn a_zero_filled_tail_counts_as_truncation() {
    // What a crash on some file systems leaves: the file was extended but the
    // last chunk's data never reached the disk.
    let bytes = sample_trace();
    let spans = chunk_spans(&bytes);
    let mut crashed = bytes[..spans[8].0].to_vec();
    crashed.resize(crashed.len() + 4096 + 17, 0);
    match read(&crashed) {
        Outcome::Read(
            recs,
            Some(TraceError::Truncated {
                last_whole_chunk: 7,
                partial_bytes,
                ..
            }),
        ) => {
            assert_eq!(partial_bytes, 4096 + 17);
            assert_eq!(recs, records_before_chunk(&bytes, 8));
        }
        _ => panic!("expected truncation after chunk 7"),
    }
    // Zeros followed by anything else are corruption.
    crashed.push(1);
    assert!(matches!(
        read(&crashed),
        Outcome::Read(_, Some(TraceError::Corrupt { chunk: 8, .. }))
    ));
}

/// Recomputes chunk 0's frame CRC after the preamble was edited (CRC-32 as
/// zlib's, over the preamble and frame bytes before the CRC field).
fn fix_header_crc(bytes: &mut [u8]) {
    let mut c = 0xFFFF_FFFFu32;
    for &b in &bytes[..12 + 60] {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    bytes[72..76].copy_from_slice(&(c ^ 0xFFFF_FFFF).to_le_bytes());
}

#[test]
fn a_version_from_the_future_is_refused_naming_the_supported_ones() {
    let mut bytes = sample_trace();
    bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
    fix_header_crc(&mut bytes);
    match TraceReader::new(&bytes[..]) {
        Err(e @ TraceError::UnsupportedVersion { found: 3, .. }) => {
            assert_eq!(
                e.to_string(),
                "trace format version 3 is not supported; this build reads versions 1, 2"
            );
        }
        other => panic!("expected UnsupportedVersion, got {:?}", other.err()),
    }
}

#[test]
fn removed_reordered_and_spliced_chunks_break_the_chain() {
    let bytes = sample_trace();
    let spans = chunk_spans(&bytes);
    let piece = |k: usize| &bytes[spans[k].0..spans[k].1];

    // Drop chunk 6: chunk 7 now sits where chunk 6 should be.
    let mut removed = bytes[..spans[6].0].to_vec();
    removed.extend_from_slice(&bytes[spans[7].0..]);
    match read(&removed) {
        Outcome::Read(_, Some(TraceError::Corrupt { chunk: 6, what, .. })) => {
            assert!(what.contains("says chunk 7"), "{what}")
        }
        _ => panic!("expected corruption at chunk 6"),
    }

    // Swap chunks 6 and 7.
    let mut swapped = bytes[..spans[6].0].to_vec();
    swapped.extend_from_slice(piece(7));
    swapped.extend_from_slice(piece(6));
    swapped.extend_from_slice(&bytes[spans[7].1..]);
    assert!(matches!(
        read(&swapped),
        Outcome::Read(_, Some(TraceError::Corrupt { chunk: 6, .. }))
    ));

    // Chunk 6 from another recording (same index, valid checksums, other
    // history): only the hash chain can tell.
    let mut h = header();
    h.cpu_model = "another-model".into();
    let mut w =
        TraceWriter::with_options(Vec::new(), &h, &[Some(KERNEL), None], small_options()).unwrap();
    for r in records() {
        w.record(&r).unwrap();
    }
    let other = w.finish(end_record()).unwrap();
    let other_spans = chunk_spans(&other);
    let mut spliced = bytes[..spans[6].0].to_vec();
    spliced.extend_from_slice(&other[other_spans[6].0..other_spans[6].1]);
    spliced.extend_from_slice(&bytes[spans[6].1..]);
    assert_ne!(spliced, bytes);
    match read(&spliced) {
        Outcome::Read(_, Some(TraceError::Corrupt { chunk: 6, what, .. })) => {
            assert!(what.contains("hash chain broken"), "{what}")
        }
        _ => panic!("expected a hash-chain break at chunk 6"),
    }

    // Anything after the end record's chunk.
    let mut extended = bytes.clone();
    extended.extend_from_slice(piece(spans.len() - 1));
    match read(&extended) {
        Outcome::Read(recs, Some(TraceError::Corrupt { chunk, what, .. })) => {
            assert_eq!(chunk as usize, spans.len());
            assert!(
                what.contains("after the chunk holding the end record"),
                "{what}"
            );
            assert!(matches!(recs.last(), Some(Record::End(_))));
        }
        _ => panic!("expected trailing data to be refused"),
    }
}

#[test]
fn random_damage_never_panics_and_never_passes() {
    let bytes = sample_trace();
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    for round in 0..3000 {
        let mut bad = bytes.clone();
        for _ in 0..1 + rng.below(4) {
            match rng.below(5) {
                0 => {
                    let at = rng.below(bad.len());
                    bad[at] = rng.next() as u8;
                }
                1 => {
                    let at = rng.below(bad.len());
                    bad.truncate(at.max(1));
                }
                2 => {
                    let at = rng.below(bad.len() + 1);
                    let junk: Vec<u8> = (0..1 + rng.below(80)).map(|_| rng.next() as u8).collect();
                    bad.splice(at..at, junk);
                }
                3 => {
                    let a = rng.below(bad.len());
                    let b = (a + 1 + rng.below(200)).min(bad.len());
                    bad.drain(a..b);
                }
                _ => {
                    let a = rng.below(bad.len());
                    let b = (a + 1 + rng.below(200)).min(bad.len());
                    let copy = bad[a..b].to_vec();
                    let at = rng.below(bad.len() + 1);
                    bad.splice(at..at, copy);
                }
            }
            if bad.is_empty() {
                bad.push(0);
            }
        }
        if let Outcome::Read(_, None) = read(&bad) {
            assert_eq!(bad, bytes, "round {round}: a changed trace was accepted");
        }
    }
}
