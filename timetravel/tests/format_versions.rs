//! Format versions: version 1 traces (no state summaries) still read, with
//! version 1's rules; version 2's `StateSummary` records round-trip, and a
//! summary that breaks a rule is corruption of its chunk. Traces are taken
//! apart and rebuilt here chunk by chunk (payloads stored, the CRCs and the
//! hash chain recomputed) to make files of another version.

mod guest;

use guest::GuestConfig;
use hindsight_machine::SummaryTracker;
use hindsight_timetravel::trace::MachineConfig as TraceConfig;
use hindsight_timetravel::{
    info, EndRecord, Record, TraceError, TraceHeader, TraceReader, TraceWriter, FORMAT_VERSION,
    SUPPORTED_VERSIONS,
};
use sha2::{Digest, Sha256};

/// CRC-32 (IEEE), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A chunk taken apart: its kind and raw (decompressed) payload.
struct Chunk {
    kind: u8,
    raw: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// The format version and chunks of a well-formed trace.
fn take_apart(bytes: &[u8]) -> (u32, Vec<Chunk>) {
    let version = u32_at(bytes, 8);
    let mut chunks = Vec::new();
    let mut pos = 12;
    while pos < bytes.len() {
        let (kind, codec) = (bytes[pos + 12], bytes[pos + 13]);
        let (stored, raw_len) = (u32_at(bytes, pos + 16) as usize, u32_at(bytes, pos + 20));
        let payload = &bytes[pos + 64..pos + 64 + stored];
        let raw = match codec {
            0 => payload.to_vec(),
            _ => lz4_flex::block::decompress(payload, raw_len as usize).unwrap(),
        };
        chunks.push(Chunk { kind, raw });
        pos += 64 + stored;
    }
    (version, chunks)
}

/// A trace of `version` with these chunks, payloads stored.
fn build(version: u32, chunks: &[Chunk]) -> Vec<u8> {
    let mut out = b"HSTRACE\0".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    let mut prev = [0u8; 32];
    for (i, c) in chunks.iter().enumerate() {
        let start = if i == 0 { 0 } else { out.len() };
        out.extend_from_slice(b"HSCK");
        out.extend_from_slice(&(i as u64).to_le_bytes());
        out.extend_from_slice(&[c.kind, 0, 0, 0]);
        out.extend_from_slice(&(c.raw.len() as u32).to_le_bytes());
        out.extend_from_slice(&(c.raw.len() as u32).to_le_bytes());
        out.extend_from_slice(&prev);
        out.extend_from_slice(&crc32(&c.raw).to_le_bytes());
        let frame_crc = crc32(&out[start..]);
        out.extend_from_slice(&frame_crc.to_le_bytes());
        out.extend_from_slice(&c.raw);
        prev = Sha256::digest(&out[start..]).into();
    }
    out
}

fn header() -> TraceHeader {
    TraceHeader {
        hindsight_version: "test".into(),
        cpu_model: "hindsight-x86-64".into(),
        config: TraceConfig::new(),
        images: Vec::new(),
    }
}

fn end(icount: u64) -> EndRecord {
    EndRecord {
        icount,
        final_hash: [9; 32],
        exit_code: 0,
        reason: "test end".into(),
    }
}

/// A version 2 trace of the test guest with a summary every 100,000
/// instructions to 500,000, one chunk each.
fn with_summaries() -> Vec<u8> {
    let mut w = TraceWriter::new(Vec::new(), &header(), &[]).unwrap();
    let mut m = guest::machine(GuestConfig::default());
    let mut t = SummaryTracker::new();
    for at in (0..=500_000).step_by(100_000) {
        m.run_until(at);
        w.state_summary(&m.state_hash(), &m.state_summary(&mut t))
            .unwrap();
        w.flush_chunk().unwrap();
    }
    w.finish(end(500_000)).unwrap()
}

/// The worked example of docs/trace-format.md (a version 1 trace), from its
/// hex dump.
fn worked_example() -> Vec<u8> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/trace-format.md"
    ))
    .unwrap();
    let dump = doc
        .split("```text\n00000000:")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .map(|d| format!("00000000:{d}"))
        .unwrap();
    let mut bytes = Vec::new();
    for line in dump.lines().filter(|l| !l.is_empty()) {
        let hex: String = line[10..]
            .split("  ")
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        for i in (0..hex.len()).step_by(2) {
            bytes.push(u8::from_str_radix(&hex[i..i + 2], 16).unwrap());
        }
    }
    bytes
}

#[test]
fn the_worked_version_1_example_still_reads() {
    let bytes = worked_example();
    assert_eq!(bytes.len(), 226);
    assert_eq!(SUPPORTED_VERSIONS, &[1, 2]);
    let mut r = TraceReader::new(&bytes[..]).unwrap();
    assert_eq!(r.format_version(), 1);
    let (records, error) = r.read_to_end();
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        records,
        vec![
            Record::ConsoleInput {
                icount: 1000,
                bytes: b"hi\n".to_vec()
            },
            Record::End(EndRecord {
                icount: 5000,
                final_hash: std::array::from_fn(|i| 1 + 7 * i as u8),
                exit_code: 0,
                reason: "ok".into()
            })
        ]
    );
    assert!(r.is_complete());
    assert!(r.summaries().is_empty());
}

#[test]
fn a_version_1_trace_of_state_hashes_reads_as_written() {
    let mut w = TraceWriter::new(Vec::new(), &header(), &[]).unwrap();
    for i in 0..5u64 {
        w.console_input(i * 1000, b"x").unwrap();
        w.state_hash(i * 1000 + 500, &[i as u8; 32]).unwrap();
        w.flush_chunk().unwrap();
    }
    let v2 = w.finish(end(9000)).unwrap();
    let (version, chunks) = take_apart(&v2);
    assert_eq!(version, FORMAT_VERSION);
    let v1 = build(1, &chunks);
    let read = |bytes: &[u8]| {
        let mut r = TraceReader::new(bytes).unwrap();
        let (records, error) = r.read_to_end();
        assert!(error.is_none(), "{error:?}");
        (r.format_version(), records)
    };
    let (found, records) = read(&v1);
    assert_eq!(found, 1);
    assert_eq!(records, read(&v2).1);
    assert_eq!(records.len(), 11);
    let i = info(&v1[..]).unwrap();
    assert_eq!((i.format_version, i.counts.state_hash), (1, 5));
    assert_eq!(i.counts.state_summary, 0);
}

#[test]
fn summaries_round_trip_and_version_1_rules_refuse_them() {
    let bytes = with_summaries();
    let mut r = TraceReader::new(&bytes[..]).unwrap();
    let (records, error) = r.read_to_end();
    assert!(error.is_none(), "{error:?}");
    assert_eq!(records.len(), 7, "6 state hashes and the end");
    let summaries = r.take_summaries();
    assert_eq!(summaries.len(), 6);
    // What was written is what is read.
    let mut m = guest::machine(GuestConfig::default());
    let mut t = SummaryTracker::new();
    for s in &summaries {
        m.run_until(s.icount);
        assert_eq!(s, &m.state_summary(&mut t));
    }
    // The same chunks declared version 1: tag 5 is unknown there.
    let (_, chunks) = take_apart(&bytes);
    let v1 = build(1, &chunks);
    let mut r = TraceReader::new(&v1[..]).unwrap();
    match r.read_to_end() {
        (recs, Some(TraceError::Corrupt { chunk: 1, what, .. })) => {
            assert!(recs.is_empty());
            assert!(what.contains("unknown record tag 5"), "{what}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_summary_that_breaks_a_rule_is_corruption_of_its_chunk() {
    let (version, mut chunks) = take_apart(&with_summaries());
    // Chunk 3 holds the summary at 200,000: tag, icount, hash, since, then
    // the vCPU count, which must not be 0.
    let raw = &mut chunks[3].raw;
    assert_eq!(raw[0], 5);
    assert_eq!(u64::from_le_bytes(raw[1..9].try_into().unwrap()), 200_000);
    raw[49..51].copy_from_slice(&0u16.to_le_bytes());
    let bad = build(version, &chunks);
    let mut r = TraceReader::new(&bad[..]).unwrap();
    match r.read_to_end() {
        (recs, Some(TraceError::Corrupt { chunk: 3, what, .. })) => {
            assert_eq!(recs.len(), 2, "the records of chunks 1 and 2");
            assert!(
                what.contains("state summary at icount 200000: summary has no vCPU"),
                "{what}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.summaries().len(), 2);
    // A summary cut short: the record's end is missing.
    let (_, mut chunks) = take_apart(&with_summaries());
    chunks[2].raw.truncate(200);
    let cut = build(version, &chunks);
    let mut r = TraceReader::new(&cut[..]).unwrap();
    assert!(matches!(
        r.read_to_end().1,
        Some(TraceError::Corrupt { chunk: 2, .. })
    ));
}
