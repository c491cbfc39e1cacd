//! The time-travel API on a busy guest (PIT interrupts, COM1 output and
//! input, memory written in patterns): seeking to random counts either
//! way, stepping back, running back to the last hit of a condition,
//! thinning under a small budget, re-fed console input and branches,
//! edits, the console gate, and timelines built from a recorded trace.

mod guest;

use std::cell::RefCell;
use std::rc::Rc;

use guest::{read_u32, GuestConfig, Rng, RX_BUF, RX_COUNT, TICKS, WATCH};
use hindsight_machine::Machine;
use hindsight_timetravel::trace::MachineConfig as TraceConfig;
use hindsight_timetravel::{
    MemoryChange, Recorder, Spacing, Timeline, TimelineConfig, TimelineError, TraceHeader,
    TraceReader, TraceWriter,
};

type Hash = [u8; 32];

fn spaced(k: u64) -> TimelineConfig {
    TimelineConfig {
        spacing: Spacing::Fixed(k),
        ..TimelineConfig::default()
    }
}

fn live(cfg: GuestConfig, k: u64) -> (Machine, Timeline) {
    let mut m = guest::machine(cfg);
    let tl = Timeline::live(&mut m, spaced(k)).unwrap();
    (m, tl)
}

/// `n` distinct random counts in `1..end`, ascending.
fn random_counts(rng: &mut Rng, n: usize, end: u64) -> Vec<u64> {
    let mut v = std::collections::BTreeSet::new();
    while v.len() < n {
        v.insert(1 + rng.below(end - 1));
    }
    v.into_iter().collect()
}

/// Runs forward through `counts`, logging `input` at `input_at`, and
/// records the state hash at each count.
fn forward(
    m: &mut Machine,
    tl: &mut Timeline,
    counts: &[u64],
    input_at: u64,
    input: &[u8],
) -> Vec<(u64, Hash)> {
    let mut typed = false;
    counts
        .iter()
        .map(|&t| {
            if !typed && t > input_at {
                tl.advance(m, input_at).unwrap();
                tl.console_input(m, input).unwrap();
                typed = true;
            }
            assert_eq!(tl.advance(m, t).unwrap(), t);
            assert_eq!(m.icount(), t);
            (t, m.state_hash())
        })
        .collect()
}

/// Seeks to every recorded count in random order, checking the hash.
fn seek_all(m: &mut Machine, tl: &mut Timeline, recorded: &[(u64, Hash)], rng: &mut Rng) {
    let mut order: Vec<usize> = (0..recorded.len()).collect();
    rng.shuffle(&mut order);
    for i in order {
        let (t, hash) = recorded[i];
        assert_eq!(tl.seek(m, t).unwrap(), t);
        assert_eq!(m.icount(), t);
        assert!(m.state_hash() == hash, "state at icount {t} differs");
    }
}

/// Acceptance: seeking to 1,000 random counts (backwards and forwards,
/// in random order) gives the state hash recorded there going forward.
#[test]
fn seeks_to_1000_random_counts_give_the_recorded_hashes() {
    let mut rng = Rng(0x5EED_1234);
    let (mut m, mut tl) = live(GuestConfig::default(), 50_000);
    let counts = random_counts(&mut rng, 1000, 3_000_000);
    assert_eq!(counts.len(), 1000);
    let recorded = forward(&mut m, &mut tl, &counts, 1_234_567, b"typed\n");
    assert!(read_u32(&m, RX_COUNT) == 6, "the input reached the guest");
    assert!(tl.checkpoints().len() > 50);
    // The timeline does not disturb the run: a plain machine agrees.
    let mut plain = guest::machine(GuestConfig::default());
    for &(t, hash) in recorded.iter().step_by(97) {
        if t > 1_234_567 && plain.icount() <= 1_234_567 {
            plain.run_until(1_234_567);
            plain.console_input(b"typed\n");
        }
        plain.run_until(t);
        assert!(plain.state_hash() == hash, "plain run differs at {t}");
    }
    seek_all(&mut m, &mut tl, &recorded, &mut rng);
    let stats = tl.stats();
    assert!(stats.restores >= 900, "{stats:?}");
}

/// The same with two vCPUs (an AP started by INIT/SIPI).
#[test]
fn seeks_are_exact_with_two_vcpus() {
    let mut rng = Rng(0xA9);
    let cfg = GuestConfig {
        cpus: 2,
        ..GuestConfig::default()
    };
    let (mut m, mut tl) = live(cfg, 40_000);
    let counts = random_counts(&mut rng, 200, 1_500_000);
    let recorded = forward(&mut m, &mut tl, &counts, 700_001, b"xy");
    seek_all(&mut m, &mut tl, &recorded, &mut rng);
}

/// step_back from N gives the state at N-1 of a plain forward run, again
/// and again; at the origin it reports the beginning of history.
#[test]
fn step_back_gives_the_previous_state() {
    const N: u64 = 400_123;
    let mut plain = guest::machine(GuestConfig::default());
    plain.run_until(N - 60);
    let mut expect = Vec::new();
    for t in N - 60..N {
        plain.run_until(t);
        expect.push((t, plain.state_hash()));
    }
    let (mut m, mut tl) = live(GuestConfig::default(), 30_000);
    tl.advance(&mut m, N).unwrap();
    for &(t, hash) in expect.iter().rev() {
        assert_eq!(tl.step_back(&mut m).unwrap(), t);
        assert_eq!(m.icount(), t);
        assert!(m.state_hash() == hash, "step back to {t}");
    }
    // Back at N after stepping forward again.
    assert_eq!(tl.seek(&mut m, N).unwrap(), N);
    assert_eq!(tl.head(), N);

    assert_eq!(tl.seek(&mut m, 1).unwrap(), 1);
    assert_eq!(tl.step_back(&mut m).unwrap(), 0);
    match tl.step_back(&mut m) {
        Err(TimelineError::BeginningOfHistory { origin: 0 }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(m.icount(), 0);
    // A live seek goes no further than what was executed.
    match tl.seek(&mut m, N + 10) {
        Err(TimelineError::EndOfHistory { end: N }) => assert_eq!(m.icount(), N),
        other => panic!("{other:?}"),
    }
}

/// Single-steps a plain machine from 0 to `end - 1`, returning the last
/// count at which `hit` (given the previous and current machine reading)
/// held.
fn brute_force(
    end: u64,
    mut read: impl FnMut(&Machine) -> u64,
    hit: impl Fn(u64, u64) -> bool,
) -> Option<u64> {
    let mut m = guest::machine(GuestConfig::default());
    m.run_until(0);
    let mut prev = read(&m);
    let mut last = hit(prev, prev).then_some(0);
    while m.icount() + 1 < end {
        let t = m.icount() + 1;
        m.run_until(t);
        assert_eq!(m.icount(), t);
        let now = read(&m);
        if hit(prev, now) {
            last = Some(t);
        }
        prev = now;
    }
    last
}

/// run_back finds the exact last count at which a condition held: a
/// value in memory, a change of memory (a write watchpoint), a
/// breakpoint-like RIP; checked by single-stepping a second machine.
#[test]
fn run_back_finds_the_last_hit() {
    const P: u64 = 700_000;
    let (mut m, mut tl) = live(GuestConfig::default(), 25_000);
    tl.advance(&mut m, P).unwrap();
    let watched = read_u32(&m, WATCH);
    assert!(watched > 3, "the guest got far enough: {watched}");

    // The last count at which the watched dword still held an older value.
    let old = watched - 2;
    let expect = brute_force(
        P,
        |m| u64::from(read_u32(m, WATCH)),
        |_, v| v == u64::from(old),
    );
    let hit = tl
        .run_back(&mut m, &mut |m: &Machine| read_u32(m, WATCH) == old)
        .unwrap();
    assert_eq!(Some(hit), expect);
    assert_eq!(m.icount(), hit);
    assert_eq!(read_u32(&m, WATCH), old);
    assert_eq!(tl.seek(&mut m, hit + 1).unwrap(), hit + 1);
    assert_eq!(
        read_u32(&m, WATCH),
        old + 1,
        "changed by the next instruction"
    );

    // The last change of the tick counter before `hit`, then the one
    // before that.
    tl.seek(&mut m, P).unwrap();
    let changes = |end| brute_force(end, |m| u64::from(read_u32(m, TICKS)), |a, b| a != b);
    let mut watch = MemoryChange::new(TICKS, 4);
    let hit = tl.run_back(&mut m, &mut watch).unwrap();
    assert_eq!(Some(hit), changes(P));
    assert_eq!(
        u32::from_le_bytes(watch.value().try_into().unwrap()),
        read_u32(&m, TICKS)
    );
    let again = tl
        .run_back(&mut m, &mut MemoryChange::new(TICKS, 4))
        .unwrap();
    assert_eq!(Some(again), changes(hit));

    // Breakpoint-like: the last time RIP was at the timer handler.
    tl.seek(&mut m, P).unwrap();
    let at_handler = |m: &Machine| m.cpus()[0].rip == 0x1_0000;
    let hit = tl.run_back(&mut m, &mut { at_handler }).unwrap();
    let expect = brute_force(P, |m| m.cpus()[0].rip, |_, rip| rip == 0x1_0000);
    assert_eq!(Some(hit), expect);
}

/// A condition that never holds searches all of history and ends at the
/// beginning; one that holds only at the origin finds it.
#[test]
fn run_back_without_a_hit_reaches_the_beginning() {
    let (mut m, mut tl) = live(GuestConfig::default(), 20_000);
    tl.advance(&mut m, 90_000).unwrap();
    match tl.run_back(&mut m, &mut |_: &Machine| false) {
        Err(TimelineError::BeginningOfHistory { origin: 0 }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(m.icount(), 0);
    assert!(matches!(
        tl.run_back(&mut m, &mut |_: &Machine| true),
        Err(TimelineError::BeginningOfHistory { .. })
    ));
    tl.seek(&mut m, 90_000).unwrap();
    let hit = tl
        .run_back(&mut m, &mut |m: &Machine| m.icount() == 0)
        .unwrap();
    assert_eq!((hit, m.icount()), (0, 0));
}

/// A write watchpoint on data written once, long ago, skips the stretches
/// whose checkpoints show its page untouched, and still finds the write.
#[test]
fn a_watch_on_rarely_written_memory_skips_untouched_stretches() {
    const INPUT_AT: u64 = 150_000;
    const P: u64 = 2_000_000;
    let (mut m, mut tl) = live(GuestConfig::default(), 50_000);
    tl.advance(&mut m, INPUT_AT).unwrap();
    tl.console_input(&m, b"!").unwrap();
    tl.advance(&mut m, P).unwrap();
    assert_eq!(read_u32(&m, RX_COUNT), 1);
    let replayed = tl.stats().replayed;
    let hit = tl
        .run_back(&mut m, &mut MemoryChange::new(RX_BUF, 1))
        .unwrap();
    let expect = brute_force(
        P,
        |m| {
            let mut b = [0u8];
            m.read_phys(RX_BUF, &mut b).unwrap();
            u64::from(b[0])
        },
        |a, b| a != b,
    );
    // The brute force has no input: it never sees the byte.
    assert_eq!(expect, None);
    assert!(hit > INPUT_AT && hit < INPUT_AT + 50_000, "{hit}");
    let mut b = [0u8];
    m.read_phys(RX_BUF, &mut b).unwrap();
    assert_eq!(b[0], b'!');
    tl.step_back(&mut m).unwrap();
    m.read_phys(RX_BUF, &mut b).unwrap();
    assert_eq!(b[0], 0, "the byte arrives with instruction {hit}");
    let searched = tl.stats().replayed - replayed;
    assert!(
        searched < 400_000,
        "replayed {searched} instructions of {P}"
    );
}

/// Under a small memory budget, checkpoints are thinned (dense near the
/// present, sparse far back) and every seek stays exact.
#[test]
fn thinning_under_a_small_budget_keeps_seeks_exact() {
    let mut rng = Rng(0x7417);
    let budget = 600 << 10;
    let mut m = guest::machine(GuestConfig::default());
    let config = TimelineConfig {
        memory_budget: budget,
        ..spaced(20_000)
    };
    let mut tl = Timeline::live(&mut m, config).unwrap();
    let counts = random_counts(&mut rng, 300, 4_000_000);
    let recorded = forward(&mut m, &mut tl, &counts, 2_000_000, b"abc");
    let stats = tl.stats();
    assert!(stats.checkpoints_thinned > 50, "{stats:?}");
    assert!(!stats.over_budget, "{stats:?}");
    assert!(tl.checkpoint_bytes() <= budget, "{}", tl.checkpoint_bytes());
    let cps = tl.checkpoints();
    let gaps: Vec<u64> = cps.windows(2).map(|w| w[1].icount - w[0].icount).collect();
    let n = gaps.len();
    assert!(n >= 6, "{gaps:?}");
    let near: u64 = gaps[n - 3..].iter().sum();
    let far: u64 = gaps[1..4].iter().sum();
    assert!(far > 2 * near, "sparse far back: {gaps:?}");
    seek_all(&mut m, &mut tl, &recorded, &mut rng);
    assert!(tl.checkpoint_bytes() <= budget);
}

/// Console input logged mid-run is fed again at the same count after
/// seeking back and forth; new input in the past starts a new branch.
#[test]
fn console_input_is_refed_at_its_count_and_branches_the_future() {
    const AT: u64 = 300_000;
    const END: u64 = 600_000;
    let (mut m, mut tl) = live(GuestConfig::default(), 40_000);
    tl.advance(&mut m, AT).unwrap();
    let before = m.state_hash();
    tl.console_input(&m, b"abc").unwrap();
    // Logged, not yet taken: the state at AT is unchanged.
    assert!(m.state_hash() == before);
    tl.advance(&mut m, END).unwrap();
    let end_hash = m.state_hash();
    assert_eq!(read_u32(&m, RX_COUNT), 3);

    let mut plain = guest::machine(GuestConfig::default());
    plain.run_until(AT);
    plain.console_input(b"abc");
    plain.run_until(END);
    assert!(
        plain.state_hash() == end_hash,
        "same as feeding a plain machine"
    );

    tl.seek(&mut m, 100_000).unwrap();
    assert_eq!(read_u32(&m, RX_COUNT), 0);
    tl.seek(&mut m, AT).unwrap();
    assert!(
        m.state_hash() == before,
        "input stamped AT not yet taken at AT"
    );
    tl.seek(&mut m, END).unwrap();
    assert!(m.state_hash() == end_hash);
    tl.seek(&mut m, 200_000).unwrap();
    tl.seek(&mut m, END).unwrap();
    assert!(m.state_hash() == end_hash);

    // New input at 200,000 drops the known future (and the old input).
    tl.seek(&mut m, 200_000).unwrap();
    tl.console_input(&m, b"z").unwrap();
    assert_eq!(tl.head(), 200_000);
    assert_eq!(tl.inputs().len(), 1);
    assert!(tl.checkpoints().iter().all(|c| c.icount <= 200_000));
    assert!(matches!(
        tl.seek(&mut m, END),
        Err(TimelineError::EndOfHistory { end: 200_000 })
    ));
    tl.advance(&mut m, END).unwrap();
    assert_eq!(read_u32(&m, RX_COUNT), 1);
    assert!(m.state_hash() != end_hash);
    assert_eq!(tl.stats().branches, 1);
}

/// An edit (a debugger's write) at the present becomes part of history:
/// replaying through its count restores it.
#[test]
fn edits_are_replayed() {
    const SPOT: u64 = 0x70_0000;
    let (mut m, mut tl) = live(GuestConfig::default(), 30_000);
    tl.advance(&mut m, 200_000).unwrap();
    tl.edit(&mut m, |m| m.write_phys(SPOT, b"edit").unwrap())
        .unwrap();
    tl.advance(&mut m, 400_000).unwrap();
    let hash = m.state_hash();
    let mut b = [0u8; 4];
    for t in [100_000, 300_000, 199_999, 200_000, 400_000, 250_000] {
        tl.seek(&mut m, t).unwrap();
        m.read_phys(SPOT, &mut b).unwrap();
        let expect: &[u8] = if t >= 200_000 { b"edit" } else { &[0; 4] };
        assert_eq!(b, expect, "at {t}");
    }
    tl.seek(&mut m, 400_000).unwrap();
    assert!(m.state_hash() == hash);
    assert!(tl
        .checkpoints()
        .iter()
        .any(|c| c.edit && c.icount == 200_000));
    // A run back through the edit sees the written bytes change there.
    let hit = tl
        .run_back(&mut m, &mut MemoryChange::new(SPOT, 4))
        .unwrap();
    assert_eq!(hit, 200_000);
}

/// Output of re-executed history is muted; new output passes once.
#[test]
fn the_console_gate_mutes_reexecuted_output() {
    let (mut m, mut tl) = live(GuestConfig::default(), 30_000);
    let out = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&out);
    m.set_console(tl.console_gate().wrap(Box::new(move |b: &[u8]| {
        sink.borrow_mut().extend_from_slice(b)
    })));
    tl.advance(&mut m, 500_000).unwrap();
    let first = out.borrow().len();
    assert!(first > 10, "the guest prints");
    tl.seek(&mut m, 100_000).unwrap();
    tl.seek(&mut m, 450_000).unwrap();
    tl.step_back(&mut m).unwrap();
    tl.run_back(&mut m, &mut |m: &Machine| m.icount() == 1)
        .unwrap();
    assert_eq!(out.borrow().len(), first, "nothing printed twice");
    tl.advance(&mut m, 1_000_000).unwrap();
    let mut plain = guest::machine(GuestConfig::default());
    plain.run_until(1_000_000);
    assert_eq!(*out.borrow(), plain.take_console_output());
    assert!(!tl.console_gate().is_muted());
}

/// Running the machine behind the timeline's back is noticed; a seek
/// brings it back.
#[test]
fn a_machine_moved_behind_the_timelines_back_is_refused_then_recovered() {
    let (mut m, mut tl) = live(GuestConfig::default(), 30_000);
    tl.advance(&mut m, 100_000).unwrap();
    let hash = m.state_hash();
    m.run_until(123_456);
    assert!(matches!(
        tl.advance(&mut m, 200_000),
        Err(TimelineError::Moved {
            expected: 100_000,
            found: 123_456
        })
    ));
    assert!(tl.console_input(&m, b"x").is_err());
    tl.seek(&mut m, 100_000).unwrap();
    assert!(m.state_hash() == hash);
}

/// Records a run into a trace (input at `input_at`, state hashes every
/// 100,000), returns its bytes and the hashes at `probes`.
fn record_trace(end: u64, input_at: u64, probes: &[u64]) -> (Vec<u8>, Vec<(u64, Hash)>) {
    let header = TraceHeader {
        hindsight_version: "test".into(),
        cpu_model: "hindsight-x86-64".into(),
        config: TraceConfig::new(),
        images: Vec::new(),
    };
    let writer = TraceWriter::new(Vec::new(), &header, &[]).unwrap();
    let mut rec = Recorder::new(writer, 100_000);
    let mut m = guest::machine(GuestConfig::default());
    let mut hashes = Vec::new();
    let mut stops: Vec<u64> = probes.to_vec();
    stops.extend((0..=end).step_by(33_333));
    stops.extend([input_at, end]);
    stops.sort_unstable();
    stops.dedup();
    for t in stops {
        m.run_until(t);
        rec.tick(&m).unwrap();
        if probes.contains(&t) {
            hashes.push((t, m.state_hash()));
        }
        if t == input_at {
            rec.console_input(&mut m, b"replayed\n").unwrap();
        }
    }
    (rec.finish(&m, 0, "test end").unwrap(), hashes)
}

/// A timeline built from a recorded trace seeks anywhere within it,
/// verifies the recorded hashes, ends where the trace ends and refuses
/// to change history.
#[test]
fn a_replayed_trace_seeks_anywhere_within_it() {
    const END: u64 = 1_000_000;
    let mut rng = Rng(0x7EACE);
    let probes = random_counts(&mut rng, 150, END);
    let (bytes, expect) = record_trace(END, 444_444, &probes);
    let (records, error) = TraceReader::new(&bytes[..]).unwrap().read_to_end();
    assert!(error.is_none());
    let mut m = guest::machine(GuestConfig::default());
    let mut tl = Timeline::replay(&mut m, records.clone(), spaced(30_000)).unwrap();
    assert!(tl.is_replay());
    assert_eq!(tl.end(), END);
    assert_eq!(tl.inputs().len(), 1);
    seek_all(&mut m, &mut tl, &expect, &mut rng);
    assert_eq!(read_u32(&m, RX_COUNT) > 0, m.icount() > 444_444);
    match tl.advance(&mut m, END + 5) {
        Err(TimelineError::EndOfHistory { end: END }) => assert_eq!(m.icount(), END),
        other => panic!("{other:?}"),
    }
    let stats = tl.stats();
    assert_eq!(stats.hashes_verified, tl.state_hashes().len() as u64);
    assert!(stats.hashes_verified >= 10, "{stats:?}");
    assert_eq!(tl.end_record().map(|e| e.reason.as_str()), Some("test end"));
    assert!(matches!(
        tl.console_input(&m, b"no"),
        Err(TimelineError::FixedHistory { .. })
    ));
    assert!(tl.edit(&mut m, |_| ()).is_err());

    // A tampered hash is caught the first time the timeline passes it.
    let mut tampered = records;
    let mut at = 0;
    for r in &mut tampered {
        if let hindsight_timetravel::Record::StateHash { icount, hash } = r {
            if *icount > 500_000 {
                hash[0] ^= 1;
                at = *icount;
                break;
            }
        }
    }
    let mut m = guest::machine(GuestConfig::default());
    let mut tl = Timeline::replay(&mut m, tampered, spaced(30_000)).unwrap();
    match tl.seek(&mut m, END) {
        Err(TimelineError::Diverged(d)) => assert_eq!(d.icount, at),
        other => panic!("{other:?}"),
    }
}

/// A trace cut short ends history at its last record; records of
/// unknown channels or out of order are refused.
#[test]
fn truncated_and_bad_records() {
    use hindsight_timetravel::Record;
    let mut m = guest::machine(GuestConfig::default());
    let records = vec![
        Record::ConsoleInput {
            icount: 1_000,
            bytes: b"a".to_vec(),
        },
        Record::ConsoleInput {
            icount: 50_000,
            bytes: b"b".to_vec(),
        },
    ];
    let mut tl = Timeline::replay(&mut m, records, spaced(10_000)).unwrap();
    assert_eq!(tl.end(), 50_000);
    assert!(matches!(
        tl.seek(&mut m, 60_000),
        Err(TimelineError::EndOfHistory { end: 50_000 })
    ));
    assert_eq!(m.icount(), 50_000);
    let bad = vec![Record::Input {
        icount: 5,
        channel: 9,
        bytes: vec![1],
    }];
    let mut m = guest::machine(GuestConfig::default());
    let e = Timeline::replay(&mut m, bad, spaced(10_000)).unwrap_err();
    assert!(e.to_string().contains("channel 9"), "{e}");
    let disorder = vec![
        Record::ConsoleInput {
            icount: 9,
            bytes: vec![1],
        },
        Record::ConsoleInput {
            icount: 5,
            bytes: vec![1],
        },
    ];
    let mut m = guest::machine(GuestConfig::default());
    assert!(Timeline::replay(&mut m, disorder, spaced(10_000)).is_err());
}

/// A guest that exits: history ends where it stopped, and stays
/// navigable.
#[test]
fn a_stopped_machine_ends_history_there() {
    use hindsight_firmware::EntryMode;
    use hindsight_machine::{Exit, MachineConfig};
    // mov cx, 1000; l: dec cx; jnz l; mov al, 0; out 0xf4, al
    let code = [0xB9, 0xE8, 0x03, 0x49, 0x75, 0xFD, 0xB0, 0x00, 0xE6, 0xF4];
    let mut m = Machine::new(&MachineConfig {
        memory: 4 << 20,
        ..MachineConfig::default()
    })
    .unwrap();
    m.load_flat(&code, 0x7C00, EntryMode::Real16 { cs: 0, ip: 0x7C00 })
        .unwrap();
    let mut tl = Timeline::live(&mut m, spaced(500)).unwrap();
    let end = 1 + 2 * 1000 + 2;
    match tl.advance(&mut m, 10_000) {
        Err(TimelineError::Stopped {
            icount,
            exit: Exit::DebugExit(1),
        }) => assert_eq!(icount, end),
        other => panic!("{other:?}"),
    }
    assert_eq!(tl.head(), end);
    assert_eq!(tl.step_back(&mut m).unwrap(), end - 1);
    assert_eq!(m.cpus()[0].rip, 0x7C08, "at the OUT");
    assert_eq!(tl.seek(&mut m, 700).unwrap(), 700);
    assert!(matches!(
        tl.advance(&mut m, 10_000),
        Err(TimelineError::Stopped { icount, .. }) if icount == end
    ));
    let hit = tl
        .run_back(&mut m, &mut |m: &Machine| m.cpus()[0].gpr[1] == 500)
        .unwrap();
    // The DEC that leaves CX = 500 retires at 1,000, the JNZ after it at
    // 1,001: the last count with CX = 500.
    assert_eq!(hit, 1 + 2 * 500);
}
