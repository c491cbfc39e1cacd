//! Writing and reading back: every record kind, the header, embedded images,
//! files on disk, `trace info`, and writer misuse.

mod common;

use common::*;
use hindsight_timetravel::trace::{keys, MAX_RAW_LEN};
use hindsight_timetravel::{
    info, info_file, ImageInfo, ImageRole, Integrity, ReadOptions, Record, TraceError, TraceHeader,
    TraceReader, TraceWriter, WriterOptions, FORMAT_VERSION,
};

#[test]
fn every_record_kind_round_trips_with_header_and_images() {
    let bytes = sample_trace();
    let spans = chunk_spans(&bytes);
    assert!(spans.len() >= 8, "several chunks: {}", spans.len());
    let mut r = TraceReader::new(&bytes[..]).unwrap();
    assert_eq!(r.format_version(), FORMAT_VERSION);
    let mut expect_header = header();
    expect_header.images[0].embedded = true;
    assert_eq!(r.header(), &expect_header);
    assert_eq!(
        r.header().config.get(keys::KERNEL_CMDLINE),
        Some("console=ttyS0 panic=-1")
    );
    assert_eq!(r.embedded_image(0), Some(KERNEL));
    assert!(r.image_verified(0));
    assert_eq!(r.embedded_image(1), None);
    assert!(!r.image_verified(1));
    let (got, err) = r.read_to_end();
    assert!(err.is_none(), "{err:?}");
    let mut expect = records();
    expect.push(Record::End(end_record()));
    assert_eq!(got, expect);
    assert_eq!(r.end(), Some(&end_record()));
    assert!(r.is_complete());
    assert_eq!(r.chunks_verified() as usize, spans.len());
    assert_eq!(r.bytes_verified() as usize, bytes.len());
    assert!(r.next().is_none(), "the iterator stays finished");
}

#[test]
fn convenience_appenders_match_records() {
    let h = TraceHeader::default();
    let mut a = TraceWriter::new(Vec::new(), &h, &[]).unwrap();
    a.console_input(1, b"x").unwrap();
    a.input(2, 7, b"yz").unwrap();
    a.state_hash(3, &[9; 32]).unwrap();
    let a = a.finish(end_record()).unwrap();
    let mut b = TraceWriter::new(Vec::new(), &h, &[]).unwrap();
    b.record(&Record::ConsoleInput {
        icount: 1,
        bytes: b"x".to_vec(),
    })
    .unwrap();
    b.record(&Record::Input {
        icount: 2,
        channel: 7,
        bytes: b"yz".to_vec(),
    })
    .unwrap();
    b.record(&Record::StateHash {
        icount: 3,
        hash: [9; 32],
    })
    .unwrap();
    let b = b.finish(end_record()).unwrap();
    assert_eq!(a, b, "same bytes: the encoding is deterministic");
}

#[test]
fn a_trace_with_no_records_but_the_end_is_complete() {
    let bytes = TraceWriter::new(Vec::new(), &TraceHeader::default(), &[])
        .unwrap()
        .finish(end_record())
        .unwrap();
    assert_eq!(chunk_spans(&bytes).len(), 2);
    match read(&bytes) {
        Outcome::Read(recs, None) => assert_eq!(recs, vec![Record::End(end_record())]),
        _ => panic!("expected a complete trace"),
    }
}

#[test]
fn large_inputs_span_chunks_and_compress() {
    let mut w = TraceWriter::new(Vec::new(), &TraceHeader::default(), &[]).unwrap();
    let big = vec![b'a'; 200_000];
    for i in 0..10u64 {
        w.console_input(i, &big).unwrap();
    }
    assert_eq!(
        w.chunks_written(),
        11,
        "the 64 KiB threshold flushes every record"
    );
    let bytes = w.finish(end_record()).unwrap();
    assert!(
        bytes.len() < 100_000,
        "lz4 shrinks repetitive input: {}",
        bytes.len()
    );
    let mut r = TraceReader::new(&bytes[..]).unwrap();
    let (recs, err) = r.read_to_end();
    assert!(err.is_none());
    assert_eq!(recs.len(), 11);
}

#[test]
fn a_record_larger_than_a_chunk_is_refused() {
    let mut w = TraceWriter::new(Vec::new(), &TraceHeader::default(), &[]).unwrap();
    let huge = vec![0u8; MAX_RAW_LEN as usize];
    let e = w.console_input(0, &huge).unwrap_err();
    assert!(matches!(e, TraceError::InvalidInput { .. }), "{e}");
    // Just under the limit fits, after the buffered record is flushed.
    w.console_input(0, b"small").unwrap();
    w.console_input(1, &huge[..MAX_RAW_LEN as usize - 13])
        .unwrap();
    let bytes = w.finish(end_record()).unwrap();
    let (recs, err) = TraceReader::new(&bytes[..]).unwrap().read_to_end();
    assert!(err.is_none(), "{err:?}");
    assert_eq!(recs.len(), 3);
}

#[test]
fn writer_refuses_misuse() {
    let h = header();
    let e = TraceWriter::new(Vec::new(), &h, &[Some(KERNEL)]).unwrap_err();
    assert!(
        e.to_string().contains("1 image byte slots for 2 images"),
        "{e}"
    );
    let e = TraceWriter::new(Vec::new(), &h, &[Some(INITRD), None]).unwrap_err();
    assert!(e.to_string().contains("image 0 (vmlinuz)"), "{e}");

    let mut w = TraceWriter::new(Vec::new(), &h, &[]).unwrap();
    w.state_hash(10, &[0; 32]).unwrap();
    let e = w.state_hash(9, &[0; 32]).unwrap_err();
    assert!(e.to_string().contains("in order"), "{e}");
    let e = w.record(&Record::End(end_record())).unwrap_err();
    assert!(e.to_string().contains("finish"), "{e}");
    let mut early = end_record();
    early.icount = 5;
    assert!(w.finish(early).is_err(), "end before the last record");
}

#[test]
fn a_failing_output_poisons_the_writer_and_leaves_whole_chunks() {
    /// Accepts `budget` bytes, then fails every write.
    struct Full(Vec<u8>, usize);
    impl std::io::Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0.len() >= self.1 {
                return Err(std::io::Error::other("disk full"));
            }
            let n = buf.len().min(self.1 - self.0.len());
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let full = sample_trace();
    let spans = chunk_spans(&full);
    // Fail in the middle of the third records chunk.
    let first_records = 1 + KERNEL.len().div_ceil(40);
    let failing = first_records + 2;
    let budget = (spans[failing].0 + spans[failing].1) / 2;
    let mut w = match TraceWriter::with_options(
        Full(Vec::new(), budget),
        &header(),
        &[Some(KERNEL), None],
        small_options(),
    ) {
        Ok(w) => w,
        Err(e) => panic!("header and images fit: {e}"),
    };
    let mut failed = None;
    for r in records() {
        if let Err(e) = w.record(&r) {
            failed = Some(e);
            break;
        }
    }
    let e = failed.expect("the output fills up");
    assert!(matches!(e, TraceError::Io { .. }), "{e}");
    let again = w.state_hash(u64::MAX, &[0; 32]).unwrap_err();
    assert!(
        again.to_string().contains("earlier write failed"),
        "{again}"
    );
    // What reached the output is whole chunks and part of one.
    let written = &full[..budget];
    match read(written) {
        Outcome::Read(
            recs,
            Some(TraceError::Truncated {
                last_whole_chunk,
                partial_bytes,
                ..
            }),
        ) => {
            assert_eq!(last_whole_chunk as usize, failing - 1);
            assert!(partial_bytes > 0);
            assert_eq!(recs, records_before_chunk(&full, failing));
            assert!(!recs.is_empty());
        }
        _ => panic!("expected a truncated trace"),
    }
}

#[test]
fn files_on_disk_round_trip_and_sync() {
    let dir = std::env::temp_dir().join(format!("hsr-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("roundtrip.hsr");
    let mut w = TraceWriter::create(&path, &header(), &[Some(KERNEL), Some(INITRD)]).unwrap();
    w.console_input(5, b"typed").unwrap();
    w.sync().unwrap();
    let synced = std::fs::metadata(&path).unwrap().len();
    assert_eq!(synced, w.bytes_written());
    w.finish(end_record()).unwrap();

    let mut r = TraceReader::open(&path).unwrap();
    assert_eq!(r.embedded_image(1), Some(INITRD));
    assert_eq!(r.read_to_end().1.map(|e| e.to_string()), None);
    let r = TraceReader::open_with(&path, ReadOptions { load_images: false }).unwrap();
    assert!(r.image_verified(0) && r.image_verified(1));
    assert_eq!(r.embedded_image(0), None, "verified but not kept");

    let i = info_file(&path).unwrap();
    assert!(i.integrity.is_ok());
    assert_eq!(i.images_verified, vec![true, true]);
    let e = TraceReader::open(dir.join("missing.hsr")).unwrap_err();
    assert!(matches!(e, TraceError::Io { .. }));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn empty_embedded_image_round_trips() {
    let mut h = TraceHeader::default();
    h.images
        .push(ImageInfo::of_bytes(ImageRole::Module, "empty.bin", b""));
    let bytes = TraceWriter::new(Vec::new(), &h, &[Some(b"")])
        .unwrap()
        .finish(end_record())
        .unwrap();
    let r = TraceReader::new(&bytes[..]).unwrap();
    assert_eq!(r.embedded_image(0), Some(&b""[..]));
}

#[test]
fn info_summarizes_a_complete_trace() {
    let bytes = sample_trace();
    let i = info(&bytes[..]).unwrap();
    assert_eq!(i.integrity, Integrity::Ok);
    assert_eq!(i.chunks as usize, chunk_spans(&bytes).len());
    assert_eq!(i.image_chunks, (KERNEL.len() as u64).div_ceil(40));
    assert_eq!(i.record_chunks(), i.chunks - 1 - i.image_chunks);
    assert_eq!(i.counts.console_input, 12);
    assert_eq!(i.counts.input, 12);
    assert_eq!(i.counts.input_bytes, (0..12).sum::<u64>());
    assert_eq!(i.counts.state_hash, 12);
    assert_eq!(i.counts.end, 1);
    assert_eq!(i.first_icount, Some(0));
    assert_eq!(i.last_icount, Some(20_000));
    assert_eq!(i.end, Some(end_record()));
    assert_eq!(i.images_verified, vec![true, false]);
    let text = i.to_string();
    for needle in [
        "format version: 2",
        "hindsight 0.1.0-test",
        "kernel_cmdline = \"console=ttyS0 panic=-1\"",
        "[0] kernel \"vmlinuz\"",
        "(embedded, verified)",
        "[1] initrd \"initrd.img\"",
        "(not embedded)",
        "12 console input",
        "exit code 3 (debug-exit)",
        "integrity:      ok",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

#[test]
fn info_reports_truncation_and_corruption() {
    let bytes = sample_trace();
    let spans = chunk_spans(&bytes);
    let cut = spans[6].0 + 10;
    let i = info(&bytes[..cut]).unwrap();
    assert_eq!(
        i.integrity,
        Integrity::Truncated {
            last_whole_chunk: 5,
            offset: spans[6].0 as u64,
            partial_bytes: 10
        }
    );
    assert!(i.to_string().contains("truncated after chunk 5"), "{i}");
    assert_eq!(i.end, None);

    let mut bad = bytes.clone();
    bad[spans[7].1 - 1] ^= 0x40;
    let i = info(&bad[..]).unwrap();
    match &i.integrity {
        Integrity::Corrupt { chunk: 7, .. } => {}
        other => panic!("expected corruption at chunk 7, got {other}"),
    }
    assert!(i.to_string().contains("corrupt at chunk 7"), "{i}");

    assert!(matches!(
        info(&b"garbage!"[..]),
        Err(TraceError::NotATrace { .. })
    ));
}

#[test]
fn options_are_clamped() {
    let o = WriterOptions {
        chunk_bytes: 0,
        image_piece_bytes: 0,
    };
    let mut w = TraceWriter::with_options(Vec::new(), &header(), &[Some(b"x" as &[u8]), None], o);
    assert!(w.is_err(), "x does not match the kernel's hash");
    let mut h = header();
    h.images[0] = ImageInfo::of_bytes(ImageRole::Kernel, "k", b"xyz");
    w = TraceWriter::with_options(Vec::new(), &h, &[Some(b"xyz" as &[u8]), None], o);
    let mut w = w.unwrap();
    assert_eq!(w.chunks_written(), 4, "header and one chunk per byte");
    w.state_hash(1, &[0; 32]).unwrap();
    assert_eq!(
        w.pending_bytes(),
        0,
        "a threshold of 1 flushes every record"
    );
}
