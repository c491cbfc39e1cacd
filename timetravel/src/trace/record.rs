//! Input-log records: the closed set of things a records chunk holds, each
//! stamped with the instruction count (virtual time) it belongs to
//! (docs/trace-format.md, "Records"). A records payload is a sequence of
//! records, each a tag byte and its fields:
//!
//! | tag | record | fields |
//! |---|---|---|
//! | 1 | `ConsoleInput` | u64 icount, bytes data |
//! | 2 | `Input` | u64 icount, u16 channel, bytes data |
//! | 3 | `StateHash` | u64 icount, hash state |
//! | 4 | `End` | u64 icount, hash final state, i32 exit code, str reason |
//! | 5 | `StateSummary` (version 2) | u64 icount, hash state, summary (`summary.rs`) |
//!
//! Tag 0 is never used (a zero-filled payload does not parse). Adding a record
//! kind or changing one changes the format version.
//!
//! A `StateSummary` record is a state hash with a [`StateSummary`] of the
//! machine beside it. The reader hands out its hash as a
//! [`Record::StateHash`] and keeps the summary aside
//! ([`super::TraceReader::take_summaries`]): the summaries are bulky and only
//! a replay that diverges reads one.

use hindsight_machine::StateSummary;

use super::codec::{Dec, DecodeError, Put};
use super::summary::decode_summary;
use super::Digest;

/// The kind of a [`Record`], with its tag byte as discriminant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// Bytes typed on the console (serial port 0).
    ConsoleInput = 1,
    /// Bytes for another input channel.
    Input = 2,
    /// A periodic hash of the whole machine state.
    StateHash = 3,
    /// The end of the recording.
    End = 4,
}

impl RecordKind {
    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(RecordKind::ConsoleInput),
            2 => Some(RecordKind::Input),
            3 => Some(RecordKind::StateHash),
            4 => Some(RecordKind::End),
            _ => None,
        }
    }

    /// A name for messages.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::ConsoleInput => "console input",
            RecordKind::Input => "input",
            RecordKind::StateHash => "state hash",
            RecordKind::End => "end",
        }
    }
}

/// The last record of a complete trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndRecord {
    /// Instruction count at which the recording ended.
    pub icount: u64,
    /// Hash of the whole machine state at that count.
    pub final_hash: Digest,
    /// Exit code of the run (the guest's debug-exit code, or what the program
    /// exited with).
    pub exit_code: i32,
    /// Why the run ended, for people (`"guest poweroff"`, `"debug-exit"`,
    /// `"interrupted"`, ...).
    pub reason: String,
}

/// One entry of the input log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Bytes that reach the console's receive side at `icount`.
    ConsoleInput {
        /// Instruction count at which the guest sees the bytes.
        icount: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Bytes for input channel `channel` at `icount`. Channels are assigned by
    /// the machine; the format treats them as opaque.
    Input {
        /// Instruction count at which the guest sees the bytes.
        icount: u64,
        /// The input channel.
        channel: u16,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The machine's state hash at `icount`, for divergence checks.
    StateHash {
        /// Instruction count of the hash.
        icount: u64,
        /// The hash.
        hash: Digest,
    },
    /// The end of the recording; always the last record.
    End(EndRecord),
}

impl Record {
    /// The instruction count the record is stamped with.
    pub fn icount(&self) -> u64 {
        match self {
            Record::ConsoleInput { icount, .. }
            | Record::Input { icount, .. }
            | Record::StateHash { icount, .. } => *icount,
            Record::End(end) => end.icount,
        }
    }

    /// The record's kind.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::ConsoleInput { .. } => RecordKind::ConsoleInput,
            Record::Input { .. } => RecordKind::Input,
            Record::StateHash { .. } => RecordKind::StateHash,
            Record::End(_) => RecordKind::End,
        }
    }

    /// Appends the record's encoding to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::ConsoleInput { icount, bytes } => encode_console_input(out, *icount, bytes),
            Record::Input {
                icount,
                channel,
                bytes,
            } => encode_input(out, *icount, *channel, bytes),
            Record::StateHash { icount, hash } => encode_state_hash(out, *icount, hash),
            Record::End(end) => {
                out.put_u8(RecordKind::End as u8);
                out.put_u64(end.icount);
                out.extend_from_slice(&end.final_hash);
                out.put_i32(end.exit_code);
                out.put_str(&end.reason);
            }
        }
    }

    /// The length of the record's encoding.
    pub(crate) fn encoded_len(&self) -> usize {
        1 + 8
            + match self {
                Record::ConsoleInput { bytes, .. } => 4 + bytes.len(),
                Record::Input { bytes, .. } => 2 + 4 + bytes.len(),
                Record::StateHash { .. } => 32,
                Record::End(end) => 32 + 4 + 4 + end.reason.len(),
            }
    }
}

/// Encodes a `ConsoleInput` record without building a [`Record`].
pub(crate) fn encode_console_input(out: &mut Vec<u8>, icount: u64, bytes: &[u8]) {
    out.put_u8(RecordKind::ConsoleInput as u8);
    out.put_u64(icount);
    out.put_bytes(bytes);
}

/// Encodes an `Input` record without building a [`Record`].
pub(crate) fn encode_input(out: &mut Vec<u8>, icount: u64, channel: u16, bytes: &[u8]) {
    out.put_u8(RecordKind::Input as u8);
    out.put_u64(icount);
    out.put_u16(channel);
    out.put_bytes(bytes);
}

/// Encodes a `StateHash` record without building a [`Record`].
pub(crate) fn encode_state_hash(out: &mut Vec<u8>, icount: u64, hash: &Digest) {
    out.put_u8(RecordKind::StateHash as u8);
    out.put_u64(icount);
    out.extend_from_slice(hash);
}

/// Tag of the `StateSummary` record (format version 2 on). It is not a
/// [`RecordKind`]: it reads as a [`Record::StateHash`] and a summary.
pub(crate) const STATE_SUMMARY_TAG: u8 = 5;

/// Encodes a `StateSummary` record: the state hash and `summary`, the
/// summary's encoding.
pub(crate) fn encode_state_summary(out: &mut Vec<u8>, icount: u64, hash: &Digest, summary: &[u8]) {
    out.put_u8(STATE_SUMMARY_TAG);
    out.put_u64(icount);
    out.extend_from_slice(hash);
    out.extend_from_slice(summary);
}

/// Decodes one record of a trace of format `version`, and the summary a
/// `StateSummary` record carries.
fn decode_one(
    d: &mut Dec<'_>,
    version: u32,
) -> Result<(Record, Option<StateSummary>), DecodeError> {
    let at = d.pos();
    let tag = d.u8("record tag")?;
    if tag == STATE_SUMMARY_TAG && version >= 2 {
        let icount = d.u64("record icount")?;
        let hash = d.hash("state hash")?;
        let summary = decode_summary(d, icount).map_err(|e| DecodeError {
            what: format!("state summary at icount {icount}: {}", e.what),
            ..e
        })?;
        return Ok((Record::StateHash { icount, hash }, Some(summary)));
    }
    let kind = RecordKind::from_tag(tag).ok_or_else(|| DecodeError {
        offset: at,
        what: format!("unknown record tag {tag}"),
    })?;
    let icount = d.u64("record icount")?;
    let record = match kind {
        RecordKind::ConsoleInput => Record::ConsoleInput {
            icount,
            bytes: d.bytes("console input bytes")?.to_vec(),
        },
        RecordKind::Input => {
            let channel = d.u16("input channel")?;
            Record::Input {
                icount,
                channel,
                bytes: d.bytes("input bytes")?.to_vec(),
            }
        }
        RecordKind::StateHash => Record::StateHash {
            icount,
            hash: d.hash("state hash")?,
        },
        RecordKind::End => Record::End(EndRecord {
            icount,
            final_hash: d.hash("final state hash")?,
            exit_code: d.i32("exit code")?,
            reason: d.str("end reason")?,
        }),
    };
    Ok((record, None))
}

/// The records of one records chunk, and the summaries of its
/// `StateSummary` records (in order).
pub(crate) type Decoded = (Vec<Record>, Vec<StateSummary>);

/// Decodes a whole records payload of a trace of format `version`. Checks
/// what can be checked inside one chunk: at least one record, instruction
/// counts never decrease (starting from `floor`, the last count of the chunks
/// before), an `End` record is the last one, and `StateSummary` records only
/// from version 2 on.
pub(crate) fn decode_records(
    payload: &[u8],
    floor: u64,
    version: u32,
) -> Result<Decoded, DecodeError> {
    let mut d = Dec::new(payload);
    let mut records = Vec::new();
    let mut summaries = Vec::new();
    let mut last = floor;
    if payload.is_empty() {
        return Err(d.error("records chunk holds no record"));
    }
    while d.remaining() > 0 {
        let at = d.pos();
        if matches!(records.last(), Some(Record::End(_))) {
            return Err(d.error("records follow the end record"));
        }
        let (r, summary) = decode_one(&mut d, version)?;
        if r.icount() < last {
            return Err(DecodeError {
                offset: at,
                what: format!(
                    "{} record at icount {} follows icount {last}: counts must not decrease",
                    r.kind().name(),
                    r.icount()
                ),
            });
        }
        last = r.icount();
        records.push(r);
        summaries.extend(summary);
    }
    Ok((records, summaries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<Record> {
        vec![
            Record::ConsoleInput {
                icount: 5,
                bytes: b"echo hi\n".to_vec(),
            },
            Record::ConsoleInput {
                icount: 5,
                bytes: Vec::new(),
            },
            Record::Input {
                icount: 70,
                channel: 0xBEEF,
                bytes: vec![0, 255, 1],
            },
            Record::StateHash {
                icount: 1 << 40,
                hash: [0xA5; 32],
            },
            Record::End(EndRecord {
                icount: u64::MAX,
                final_hash: [3; 32],
                exit_code: -1,
                reason: "guest poweroff".into(),
            }),
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        let records = every_kind();
        let mut buf = Vec::new();
        for r in &records {
            let before = buf.len();
            r.encode(&mut buf);
            assert_eq!(buf.len() - before, r.encoded_len(), "{r:?}");
        }
        assert_eq!(decode_records(&buf, 0, 1).unwrap(), (records, Vec::new()));
    }

    #[test]
    fn order_and_end_rules_are_enforced() {
        let mut buf = Vec::new();
        encode_state_hash(&mut buf, 10, &[0; 32]);
        encode_state_hash(&mut buf, 9, &[0; 32]);
        assert!(decode_records(&buf, 0, 1)
            .unwrap_err()
            .what
            .contains("must not decrease"));

        let mut buf = Vec::new();
        encode_state_hash(&mut buf, 10, &[0; 32]);
        assert!(
            decode_records(&buf, 11, 1).is_err(),
            "floor from earlier chunks"
        );

        let mut buf = Vec::new();
        every_kind()[4].encode(&mut buf);
        encode_state_hash(&mut buf, u64::MAX, &[0; 32]);
        assert!(decode_records(&buf, 0, 1)
            .unwrap_err()
            .what
            .contains("follow the end"));

        assert!(decode_records(&[], 0, 1).is_err());
        assert!(decode_records(&[0; 20], 0, 1)
            .unwrap_err()
            .what
            .contains("tag 0"));
    }

    #[test]
    fn every_truncation_fails() {
        let mut buf = Vec::new();
        for r in every_kind() {
            r.encode(&mut buf);
        }
        let ends: Vec<usize> = {
            let mut n = 0;
            every_kind()
                .iter()
                .map(|r| {
                    n += r.encoded_len();
                    n
                })
                .collect()
        };
        for cut in 1..buf.len() {
            let res = decode_records(&buf[..cut], 0, 1);
            assert_eq!(res.is_ok(), ends.contains(&cut), "cut at {cut}");
        }
    }
}
