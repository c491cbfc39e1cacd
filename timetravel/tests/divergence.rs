//! Divergence reports from state summaries: the busy test guest is
//! recorded (format version 2, a state summary beside every state hash),
//! then replayed on a machine perturbed at some count through the Machine
//! API; the divergence must name the first differing count and what
//! differs: the register with both values, the RAM region and its page.

mod guest;

use guest::GuestConfig;
use hindsight_machine::StateSummary;
use hindsight_machine::{Machine, SummaryTracker};
use hindsight_timetravel::trace::MachineConfig as TraceConfig;
use hindsight_timetravel::{
    info, replay_with_summaries, Divergence, Record, Recorder, ReplayEnd, ReplayStats, TraceHeader,
    TraceReader, TraceWriter, FORMAT_VERSION,
};

/// Virtual time between two recorded state hashes.
const EVERY: u64 = 100_000;
/// Where the recording ends.
const END: u64 = 1_000_000;

/// Records the test guest to `END` (console input at 444,444), with a
/// state hash and summary every `EVERY` instructions.
fn record() -> Vec<u8> {
    record_with(false)
}

/// [`record`], with the recorder owning the machine's dirty epochs or not.
fn record_with(own_epochs: bool) -> Vec<u8> {
    let header = TraceHeader {
        hindsight_version: "test".into(),
        cpu_model: "hindsight-x86-64".into(),
        config: TraceConfig::new(),
        images: Vec::new(),
    };
    let writer = TraceWriter::new(Vec::new(), &header, &[]).unwrap();
    let mut rec = Recorder::new(writer, EVERY);
    let mut m = guest::machine(GuestConfig::default());
    let mut stops: Vec<u64> = (0..=END).step_by(25_000).collect();
    stops.push(444_444);
    stops.sort_unstable();
    for t in stops {
        m.run_until(t);
        if own_epochs {
            rec.tick_owning_epochs(&mut m).unwrap();
        } else {
            rec.tick(&m).unwrap();
        }
        if t == 444_444 {
            rec.console_input(&mut m, b"replayed\n").unwrap();
        }
    }
    rec.finish(&m, 0, "test end").unwrap()
}

/// The records and the summaries of a trace.
fn read(bytes: &[u8]) -> (Vec<Record>, Vec<StateSummary>) {
    let mut r = TraceReader::new(bytes).unwrap();
    assert_eq!(r.format_version(), FORMAT_VERSION);
    let (records, error) = r.read_to_end();
    assert!(error.is_none(), "{error:?}");
    (records, r.take_summaries())
}

/// Replays the records after `from` (those up to it already replayed).
fn replay_from(
    m: &mut Machine,
    records: &[Record],
    summaries: &[StateSummary],
    from: u64,
) -> ReplayEnd {
    let rest: Vec<Record> = records
        .iter()
        .filter(|r| r.icount() > from)
        .cloned()
        .collect();
    replay_with_summaries(
        m,
        &rest,
        summaries,
        None,
        true,
        None,
        &mut ReplayStats::default(),
    )
}

/// Replays to `at` (verifying), then lets `perturb` change the machine, then
/// replays on; returns the divergence.
fn diverge(at: u64, perturb: impl FnOnce(&mut Machine)) -> Divergence {
    let (records, summaries) = read(&record());
    let mut m = guest::machine(GuestConfig::default());
    let mut stats = ReplayStats::default();
    let head: Vec<Record> = records
        .iter()
        .filter(|r| r.icount() <= at)
        .cloned()
        .collect();
    match replay_with_summaries(&mut m, &head, &summaries, None, true, Some(at), &mut stats) {
        ReplayEnd::ReachedUntil(u) => assert_eq!(u, at),
        other => panic!("{other:?}"),
    }
    perturb(&mut m);
    match replay_from(&mut m, &records, &summaries, at) {
        ReplayEnd::Diverged(d) => d,
        other => panic!("no divergence: {other:?}"),
    }
}

#[test]
fn a_recording_has_a_summary_beside_every_state_hash_and_replays_clean() {
    let bytes = record();
    let (records, summaries) = read(&bytes);
    let hashes: Vec<u64> = records
        .iter()
        .filter_map(|r| match r {
            Record::StateHash { icount, .. } => Some(*icount),
            _ => None,
        })
        .collect();
    let counts: Vec<u64> = summaries.iter().map(|s| s.icount).collect();
    assert_eq!(counts, hashes);
    assert!(hashes.len() >= 10, "{hashes:?}");
    assert_eq!(hashes.last(), Some(&END), "a summary beside the end record");
    // Each summary's page list is relative to the one before.
    assert_eq!(summaries[0].since, None);
    for w in summaries.windows(2) {
        assert_eq!(w[1].since, Some(w[0].icount));
    }
    let i = info(&bytes[..]).unwrap();
    assert_eq!(i.counts.state_summary, i.counts.state_hash);
    assert!(i.to_string().contains("with summary"), "{i}");

    let mut m = guest::machine(GuestConfig::default());
    let mut stats = ReplayStats::default();
    let end = replay_with_summaries(&mut m, &records, &summaries, None, true, None, &mut stats);
    assert!(matches!(end, ReplayEnd::Finished { .. }), "{end:?}");
    assert_eq!(stats.hashes_verified, hashes.len() as u64);
}

#[test]
fn a_recorder_owning_the_dirty_epochs_writes_the_same_trace() {
    // Starting epochs only saves hashing: hashes and summaries are equal.
    assert!(record_with(true) == record_with(false));
}

#[test]
fn a_flipped_register_is_named_with_both_values_at_the_next_hash() {
    // R12 cannot be reached by the 32-bit guest: it keeps the flip.
    let d = diverge(450_000, |m| {
        let mut s = m.save_state();
        s.vcpus[0].gpr[12] ^= 0x40;
        m.restore_state(&s).unwrap();
    });
    assert_eq!(d.icount, 500_000, "{d}");
    assert!(
        d.what
            .starts_with("vCPU 0 r12: recorded 0x0, replayed 0x40; state hash "),
        "{d}"
    );
}

#[test]
fn input_that_differs_from_the_recording_is_named_by_the_page_it_lands_in() {
    // One replay, diverging on its own: the trace's console input is
    // changed, the guest stores it in its receive buffer (page 0x500000).
    // The replay's own page hashes at the previous hash (which matched)
    // let it name the page exactly.
    let (mut records, summaries) = read(&record());
    for r in &mut records {
        if let Record::ConsoleInput { bytes, .. } = r {
            bytes[6] = b'E';
        }
    }
    let mut m = guest::machine(GuestConfig::default());
    let mut stats = ReplayStats::default();
    let d = match replay_with_summaries(&mut m, &records, &summaries, None, true, None, &mut stats)
    {
        ReplayEnd::Diverged(d) => d,
        other => panic!("no divergence: {other:?}"),
    };
    assert_eq!(
        stats.hashes_verified, 5,
        "the hashes before the input matched"
    );
    assert_eq!(d.icount, 500_000, "{d}");
    assert!(
        d.what
            .contains("RAM 0x00500000..0x00600000 (page 0x00500000)"),
        "{d}"
    );
}

#[test]
fn a_changed_page_is_named_exactly_with_the_replays_history() {
    // The GDT's page: in region 0, where the guest's stack changes pages
    // every interval, so the trace alone cannot name the page; the replay's
    // page hashes at the previous summary can.
    let (records, summaries) = read(&record());
    let mut m = guest::machine(GuestConfig::default());
    let mut history = SummaryTracker::new();
    let hash_at = |at: u64| {
        records.iter().find_map(|r| match r {
            Record::StateHash { icount, hash } if *icount == at => Some(*hash),
            _ => None,
        })
    };
    for r in records.iter().filter(|r| r.icount() <= 300_000) {
        m.run_until(r.icount());
        match r {
            Record::ConsoleInput { bytes, .. } => m.console_input(bytes),
            Record::StateHash { hash, .. } => {
                assert_eq!(&m.state_hash(), hash);
                history.advance(&mut m);
            }
            _ => {}
        }
    }
    m.run_until(333_333);
    m.write_phys(0x1000 + 23 * 8, &[0x55]).unwrap();
    m.run_until(400_000);
    let recorded = hash_at(400_000).unwrap();
    assert_ne!(m.state_hash(), recorded);
    let summary = summaries.iter().find(|s| s.icount == 400_000);
    let d = Divergence::state_differs(&m, &recorded, summary, Some(&history));
    assert_eq!(d.icount, 400_000);
    assert!(
        d.what
            .starts_with("RAM 0x00000000..0x00100000 (page 0x00001000); state hash "),
        "{d}"
    );
    // Without the history the region is named, the page is not.
    let d = Divergence::state_differs(&m, &recorded, summary, None);
    assert!(
        d.what
            .starts_with("RAM 0x00000000..0x00100000 (page not known"),
        "{d}"
    );
    // Without a summary only the hashes are named.
    let d = Divergence::state_differs(&m, &recorded, None, None);
    assert!(d.what.starts_with("state hash "), "{d}");
}

#[test]
fn a_page_the_recording_also_changed_is_named_from_the_trace_alone() {
    // The replay resumes after the perturbation with no page hashes of its
    // own from the previous hash; the trace lists the pages the recording
    // changed, and the perturbed one differs from its listed hash.
    let (_, summaries) = read(&record());
    let listed = summaries
        .iter()
        .find(|s| s.icount == 300_000)
        .unwrap()
        .pages
        .iter()
        .map(|&(gpa, _)| gpa)
        .find(|&gpa| gpa >> 20 == 3)
        .expect("a tick page changed in the interval");
    let d = diverge(200_000, |m| {
        // The tick handler writes only the first dword of a page.
        m.write_phys(listed + 0x800, &[0xAA]).unwrap();
    });
    assert_eq!(d.icount, 300_000, "{d}");
    assert!(
        d.what.starts_with(&format!(
            "RAM 0x00300000..0x00400000 (page(s) {listed:#010x}, maybe more); "
        )),
        "{d}"
    );
}

/// A timeline over a trace (as `replay --gdb` and `--check-seeks` use)
/// names what differs too, once given the trace's summaries.
#[test]
fn a_timeline_divergence_names_the_register() {
    use hindsight_timetravel::{Timeline, TimelineConfig, TimelineError};
    let (records, summaries) = read(&record());
    let mut m = guest::machine(GuestConfig::default());
    // R12, which the 32-bit guest cannot touch, differs from the start.
    m.edit_cpu(0, |c| c.gpr[12] = 0x40);
    let config = TimelineConfig::default();
    // The trace's first state hash is at the origin: checked at once.
    match Timeline::replay_with_summaries(&mut m, records, summaries, config) {
        Err(TimelineError::Diverged(d)) => {
            assert_eq!(d.icount, 0, "{d}");
            assert!(
                d.what.contains("vCPU 0 r12: recorded 0x0, replayed 0x40"),
                "{d}"
            );
        }
        other => panic!("no divergence: {other:?}"),
    }
}
