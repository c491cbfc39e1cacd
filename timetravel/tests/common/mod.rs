//! Shared helpers for the trace-format integration tests: a sample trace
//! with every chunk and record kind, a chunk-boundary scanner that works on
//! the raw bytes (independently of the reader), and a reader driver.

#![allow(dead_code)]

use std::cell::RefCell;
use std::io::{self, Write};
use std::rc::Rc;

use hindsight_timetravel::trace::keys;
use hindsight_timetravel::{
    EndRecord, ImageInfo, ImageRole, MachineConfig, Record, TraceError, TraceHeader, TraceReader,
    TraceWriter, WriterOptions,
};

/// A `Write` whose bytes stay visible after the writer is gone (or leaked).
#[derive(Clone, Default)]
pub struct SharedBuf(pub Rc<RefCell<Vec<u8>>>);

impl SharedBuf {
    pub fn bytes(&self) -> Vec<u8> {
        self.0.borrow().clone()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub const KERNEL: &[u8] = b"\x7fELF pretend kernel image, long enough to need several pieces \
    when the piece size is small: 0123456789abcdefghijklmnopqrstuvwxyz";
pub const INITRD: &[u8] = b"initrd bytes that are described but not embedded";

pub fn header() -> TraceHeader {
    let mut config = MachineConfig::new();
    config
        .set(keys::MEMORY_BYTES, 64u64 << 20)
        .set(keys::VCPUS, 2)
        .set(keys::SCHEDULE_SEED, 0x5eed)
        .set(keys::RTC_BOOT_TIME, 1_700_000_000u64)
        .set(keys::ENGINE, "interp")
        .set(keys::KERNEL_CMDLINE, "console=ttyS0 panic=-1");
    TraceHeader {
        hindsight_version: "0.1.0-test".into(),
        cpu_model: "hindsight-x86-64".into(),
        config,
        images: vec![
            ImageInfo::of_bytes(ImageRole::Kernel, "vmlinuz", KERNEL),
            ImageInfo::of_bytes(ImageRole::Initrd, "initrd.img", INITRD),
        ],
    }
}

/// The records of the sample trace, in order (without the end record).
pub fn records() -> Vec<Record> {
    let mut v = Vec::new();
    for i in 0..12u64 {
        v.push(Record::ConsoleInput {
            icount: 1000 * i,
            bytes: format!("line {i}\n").into_bytes(),
        });
        v.push(Record::Input {
            icount: 1000 * i + 1,
            channel: (i % 3) as u16,
            bytes: vec![i as u8; i as usize],
        });
        v.push(Record::StateHash {
            icount: 1000 * i + 500,
            hash: [i as u8; 32],
        });
    }
    v
}

pub fn end_record() -> EndRecord {
    EndRecord {
        icount: 20_000,
        final_hash: [0xEE; 32],
        exit_code: 3,
        reason: "debug-exit".into(),
    }
}

pub fn small_options() -> WriterOptions {
    WriterOptions {
        chunk_bytes: 150,
        image_piece_bytes: 40,
    }
}

/// A complete sample trace: header chunk, embedded-kernel pieces, several
/// records chunks, the end record.
pub fn sample_trace() -> Vec<u8> {
    let mut w = TraceWriter::with_options(
        Vec::new(),
        &header(),
        &[Some(KERNEL), None],
        small_options(),
    )
    .unwrap();
    for r in records() {
        w.record(&r).unwrap();
    }
    w.finish(end_record()).unwrap()
}

/// Chunk spans `(start, end)` found by walking the frames' stored lengths
/// (layout from docs/trace-format.md), without using the reader.
pub fn chunk_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut at = 0;
    let mut first = true;
    while at < bytes.len() {
        let frame = if first { at + 12 } else { at };
        let stored = u32::from_le_bytes(bytes[frame + 16..frame + 20].try_into().unwrap()) as usize;
        let end = frame + 64 + stored;
        spans.push((at, end));
        at = end;
        first = false;
    }
    assert_eq!(at, bytes.len());
    spans
}

/// Everything a reader gives for `bytes`.
pub enum Outcome {
    /// `open` failed.
    Open(TraceError),
    /// The records handed out, and the error that stopped the iteration
    /// (`None`: complete).
    Read(Vec<Record>, Option<TraceError>),
}

pub fn read(bytes: &[u8]) -> Outcome {
    match TraceReader::new(bytes) {
        Err(e) => Outcome::Open(e),
        Ok(mut r) => {
            let (records, err) = r.read_to_end();
            Outcome::Read(records, err)
        }
    }
}

/// The records in chunks `0..n` of the sample trace: the reader must have
/// handed out exactly these when it stops at chunk `n`.
pub fn records_before_chunk(bytes: &[u8], n: usize) -> Vec<Record> {
    let spans = chunk_spans(bytes);
    if n >= spans.len() {
        let mut r = TraceReader::new(bytes).unwrap();
        return r.read_to_end().0;
    }
    let cut = &bytes[..spans[n].0];
    match TraceReader::new(cut) {
        Ok(mut r) => r.read_to_end().0,
        Err(_) => Vec::new(),
    }
}

/// A tiny deterministic PRNG (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
