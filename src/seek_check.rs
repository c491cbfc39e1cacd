//! `hindsight replay FILE --check-seeks N`: checks that moving backwards
//! through a trace's history lands on exactly the states the forward run
//! went through. The replay runs forward once, hashing the machine at N
//! random instruction counts; then, from the end of the trace, it seeks
//! back to each of them, latest first (every seek goes backwards: restore
//! a checkpoint + replay), and compares the hash. A CI job can run it on a
//! captured trace before trusting reverse debugging on it.

use std::time::Instant;

use hindsight_machine::{Machine, StateSummary};
use hindsight_timetravel::{Record, Timeline, TimelineConfig, TimelineError};

use crate::exit_code;

/// A small deterministic generator (xorshift64*), so a failing check can
/// be repeated with the same `--seed`.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0), near enough for test counts.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Runs the check on a machine built from the trace; returns the exit
/// status (0 all matched, 7 a seek landed on another state).
pub fn run(
    mut m: Machine,
    records: Vec<Record>,
    summaries: Vec<StateSummary>,
    seeks: usize,
    seed: u64,
) -> i32 {
    let config = TimelineConfig::default();
    let mut tl = match Timeline::replay_with_summaries(&mut m, records, summaries, config) {
        Ok(tl) => tl,
        Err(e) => {
            eprintln!("hindsight: cannot replay the trace: {e}");
            return exit_code::TRACE_DAMAGED;
        }
    };
    let (origin, end) = (tl.origin(), tl.end());
    if end <= origin + 1 {
        eprintln!("hindsight: the trace holds no history to seek in");
        return exit_code::USAGE;
    }
    let mut rng = Rng::new(seed);
    let mut counts: Vec<u64> = (0..seeks)
        .map(|_| origin + 1 + rng.below(end - origin - 1))
        .collect();
    counts.sort_unstable();
    counts.dedup();

    let started = Instant::now();
    let mut forward = Vec::with_capacity(counts.len());
    for &t in &counts {
        if let Err(e) = tl.advance(&mut m, t) {
            return failed(&e, t);
        }
        forward.push((t, m.state_hash()));
    }
    let forward_secs = started.elapsed().as_secs_f64();

    // From the end of the run, every seek goes backwards.
    if let Err(e) = tl.advance(&mut m, end) {
        return failed(&e, end);
    }
    let order: Vec<usize> = (0..forward.len()).rev().collect();
    let started = Instant::now();
    for (n, &i) in order.iter().enumerate() {
        let (t, hash) = forward[i];
        if let Err(e) = tl.seek(&mut m, t) {
            return failed(&e, t);
        }
        if m.icount() != t || m.state_hash() != hash {
            eprintln!(
                "hindsight: seek check failed: seek {} of {} to icount {t} reached a \
                 different state than the forward run had there (seed {seed})",
                n + 1,
                order.len()
            );
            return exit_code::DIVERGED;
        }
    }
    let seek_secs = started.elapsed().as_secs_f64();
    let stats = tl.stats();
    eprintln!(
        "hindsight: seek check: {0}/{0} random backward seeks matched the forward run's state \
         (icount {origin}..{end}, seed {seed}; forward {forward_secs:.1} s, seeks {seek_secs:.1} s, \
         {1} checkpoints restored, {2} instructions replayed)",
        order.len(),
        stats.restores,
        stats.replayed
    );
    exit_code::OK
}

fn failed(e: &TimelineError, t: u64) -> i32 {
    eprintln!("hindsight: seek check stopped on the way to icount {t}: {e}");
    match e {
        TimelineError::Diverged(_) => exit_code::DIVERGED,
        _ => exit_code::STOPPED,
    }
}
