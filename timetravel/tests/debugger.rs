//! A debugger's breakpoints and watchpoints on a timeline, both ways
//! (`Timeline::resume`, `Timeline::reverse_resume`): every stop checked
//! against a second machine single-stepped through the same history, and
//! stopping never changes where the run goes.

mod guest;

use std::collections::BTreeSet;

use guest::{read_u32, GuestConfig, TIMER_HANDLER, WATCH};
use hindsight_cpu::debug::{DebugHit, DebugSet, WatchKind, Watchpoint};
use hindsight_machine::Machine;
use hindsight_timetravel::{Resumed, Spacing, Timeline, TimelineConfig, TimelineError};

const END: u64 = 400_000;

fn live() -> (Machine, Timeline) {
    let mut m = guest::machine(GuestConfig::default());
    let cfg = TimelineConfig {
        spacing: Spacing::Fixed(30_000),
        ..TimelineConfig::default()
    };
    let tl = Timeline::live(&mut m, cfg).unwrap();
    (m, tl)
}

/// Per count `0..=END` of a single-stepped run: (vCPU 0's RIP, the
/// watched dword).
fn stepped() -> Vec<(u64, u32)> {
    let mut m = guest::machine(GuestConfig::default());
    let mut v = vec![(m.cpus()[0].rip, read_u32(&m, WATCH))];
    for t in 1..=END {
        m.run_until(t);
        assert_eq!(m.icount(), t);
        v.push((m.cpus()[0].rip, read_u32(&m, WATCH)));
    }
    v
}

fn watch_set() -> DebugSet {
    DebugSet {
        watchpoints: vec![Watchpoint {
            addr: WATCH,
            len: 4,
            kind: WatchKind::Write,
        }],
        ..DebugSet::default()
    }
}

fn breakpoint_set() -> DebugSet {
    DebugSet {
        breakpoints: [TIMER_HANDLER].into_iter().collect(),
        ..DebugSet::default()
    }
}

/// Resumes from the present until END, collecting the stops.
fn forward_stops(m: &mut Machine, tl: &mut Timeline) -> Vec<(u64, DebugHit)> {
    let mut stops = Vec::new();
    loop {
        match tl.resume(m, END).unwrap() {
            Resumed::Hit(s) => {
                assert_eq!(m.icount(), s.icount);
                assert_eq!(s.vcpu, 0);
                stops.push((s.icount, s.hit));
            }
            Resumed::Reached(t) => {
                assert_eq!(t, END);
                return stops;
            }
        }
    }
}

/// Reverse-resumes from the present to the beginning, collecting stops.
fn backward_stops(m: &mut Machine, tl: &mut Timeline) -> Vec<(u64, DebugHit)> {
    let mut stops = Vec::new();
    loop {
        match tl.reverse_resume(m, &mut || false) {
            Ok(Some(s)) => {
                assert_eq!(m.icount(), s.icount);
                stops.push((s.icount, s.hit));
            }
            Err(TimelineError::BeginningOfHistory { origin: 0 }) => {
                assert_eq!(m.icount(), 0);
                return stops;
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A write watchpoint stops forward right after each write, and backward
/// right before it, at exactly the counts a single-stepped run shows the
/// value changing; the run ends in the same state as without it.
#[test]
fn write_watchpoints_find_every_writer_both_ways() {
    let steps = stepped();
    let changes: Vec<u64> = (1..=END)
        .filter(|&t| steps[t as usize].1 != steps[t as usize - 1].1)
        .collect();
    assert!(
        changes.len() >= 3,
        "the guest writes the dword: {changes:?}"
    );

    let plain = {
        let mut m = guest::machine(GuestConfig::default());
        m.run_until(END);
        m.state_hash()
    };
    let (mut m, mut tl) = live();
    m.set_debug(watch_set());
    let stops = forward_stops(&mut m, &mut tl);
    let at: Vec<u64> = stops.iter().map(|s| s.0).collect();
    assert_eq!(at, changes);
    for (_, hit) in &stops {
        assert!(matches!(hit, DebugHit::Watch { addr, write: true, .. } if *addr == WATCH));
    }
    assert!(m.state_hash() == plain, "stopping changed the run");

    let back = backward_stops(&mut m, &mut tl);
    let before: Vec<u64> = changes.iter().rev().map(|t| t - 1).collect();
    assert_eq!(back.iter().map(|s| s.0).collect::<Vec<_>>(), before);
    // Going back, the value shown is the one before the write.
    tl.seek(&mut m, changes[1] - 1).unwrap();
    assert_eq!(
        read_u32(&m, WATCH),
        steps[changes[1] as usize - 1].1,
        "before the writer"
    );
}

/// A breakpoint stops before its instruction, both ways, at the counts a
/// single-stepped run executes it (RIP there, and moving on).
#[test]
fn breakpoints_stop_at_the_same_counts_both_ways() {
    let steps = stepped();
    let executed: Vec<u64> = (0..END)
        .filter(|&t| {
            steps[t as usize].0 == TIMER_HANDLER && steps[t as usize + 1].0 != TIMER_HANDLER
        })
        .collect();
    assert!(executed.len() >= 3, "the timer fires: {executed:?}");

    let (mut m, mut tl) = live();
    m.set_debug(breakpoint_set());
    let stops = forward_stops(&mut m, &mut tl);
    assert_eq!(stops.iter().map(|s| s.0).collect::<Vec<_>>(), executed);
    assert!(stops.iter().all(|s| s.1
        == DebugHit::Breakpoint {
            addr: TIMER_HANDLER
        }));

    let back = backward_stops(&mut m, &mut tl);
    let mut rev = executed.clone();
    rev.reverse();
    assert_eq!(back.iter().map(|s| s.0).collect::<Vec<_>>(), rev);
}

/// Seeking and stepping back with breakpoints set never stop short, and a
/// reverse search can be interrupted between stretches.
#[test]
fn seeks_pass_over_breakpoints_and_searches_can_be_interrupted() {
    let (mut m, mut tl) = live();
    tl.advance(&mut m, END).unwrap();
    let counts: BTreeSet<u64> = [5_000, 123_457, 399_999, 77].into_iter().collect();
    m.set_debug(breakpoint_set());
    for &t in &counts {
        assert_eq!(tl.seek(&mut m, t).unwrap(), t);
    }
    tl.seek(&mut m, END).unwrap();
    assert_eq!(tl.step_back(&mut m).unwrap(), END - 1);

    // A watch on data never written: every stretch is searched; asking
    // to stop after the first one leaves the machine at a checkpoint.
    m.set_debug(DebugSet {
        watchpoints: vec![Watchpoint {
            addr: 0x7f_0000,
            len: 8,
            kind: WatchKind::Access,
        }],
        ..DebugSet::default()
    });
    tl.seek(&mut m, END).unwrap();
    // With nothing set, nothing can hit: straight to the beginning.
    m.set_debug(DebugSet::default());
    assert!(matches!(
        tl.reverse_resume(&mut m, &mut || panic!("no stretch is searched")),
        Err(TimelineError::BeginningOfHistory { origin: 0 })
    ));
    assert_eq!(m.icount(), 0);
    m.set_debug(DebugSet {
        watchpoints: vec![Watchpoint {
            addr: 0x7f_0000,
            len: 8,
            kind: WatchKind::Access,
        }],
        ..DebugSet::default()
    });
    tl.seek(&mut m, END).unwrap();
    let mut asked = 0;
    let r = tl.reverse_resume(&mut m, &mut || {
        asked += 1;
        true
    });
    assert!(matches!(r, Ok(None)), "{r:?}");
    assert_eq!(asked, 1);
    assert!(m.icount() < END);
    assert!(tl.checkpoints().iter().any(|c| c.icount == m.icount()));
}
