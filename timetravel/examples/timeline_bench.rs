//! Figures for the time-travel API on the test guest (prints, never
//! asserts on time). Run with
//! `cargo run --release -p hindsight-timetravel --example timeline_bench`;
//! `--quick` for a shorter run.
//!
//! Prints: the plain run speed; checkpoint time per MiB dirtied and
//! restore time per MiB rewritten; reverse-step latency at several
//! distances into the run and several distances back from its end (under
//! a small memory budget, so far-back history is thinned); the cost of
//! single-stepping in `run_back`; and a watchpoint search over the whole
//! history.

#[path = "../tests/guest/mod.rs"]
mod guest;

use std::time::{Duration, Instant};

use guest::GuestConfig;
use hindsight_machine::{CheckpointStore, Machine};
use hindsight_timetravel::{MemoryChange, Spacing, Timeline, TimelineConfig, TimelineError};

const MIB: f64 = (1u64 << 20) as f64;
const PAGE: f64 = 4096.0;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<(), TimelineError> {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 1 } else { 4 };
    plain_speed(50_000_000 * scale);
    checkpoint_figures();
    reverse_steps_into_the_run(quick)?;
    reverse_steps_back_from_the_end(100_000_000 * scale)?;
    run_back_figures(20_000_000 * scale)?;
    Ok(())
}

/// Instructions per second of a plain run.
fn plain_speed(n: u64) -> f64 {
    let mut m = guest::machine(GuestConfig::default());
    let t = Instant::now();
    m.run_until(n);
    let mips = n as f64 / t.elapsed().as_secs_f64() / 1e6;
    println!(
        "plain run: {} M instructions at {mips:.0} MIPS",
        n / 1_000_000
    );
    mips
}

/// Checkpoint and restore cost per MiB with a guest that writes over
/// 64 MiB (text-like data, zeroed pages among it).
fn checkpoint_figures() {
    let cfg = GuestConfig {
        memory: 256 << 20,
        pattern_pages: 16384,
        ..GuestConfig::default()
    };
    let mut m = guest::machine(cfg);
    let mut store = CheckpointStore::new();
    store.take(&mut m).expect("first checkpoint");
    let (mut take_ms, mut take_mib) = (0.0, 0.0);
    for step in [100_000u64, 1_000_000, 5_000_000, 20_000_000] {
        m.run_until(m.icount() + step);
        let dirty = m.ram().dirty_pages().count() as f64 * PAGE / MIB;
        let t = Instant::now();
        let i = store.take(&mut m).expect("checkpoint");
        let d = ms(t.elapsed());
        take_ms += d;
        take_mib += dirty;
        let kept = store.get(i).map_or(0, |c| c.bytes()) as f64 / MIB;
        println!(
            "checkpoint after {:>2} M instructions: {dirty:5.1} MiB dirty, {d:6.2} ms \
             ({:.2} ms/MiB), {kept:.1} MiB kept",
            step as f64 / 1e6,
            d / dirty.max(1e-9)
        );
    }
    let (mut restore_ms, mut restore_mib) = (0.0, 0.0);
    for i in (0..store.len()).rev().chain(1..store.len()) {
        let t = Instant::now();
        let stats = store.restore(&mut m, i).expect("restore");
        let d = ms(t.elapsed());
        let mib = stats.pages_written as f64 * PAGE / MIB;
        restore_ms += d;
        restore_mib += mib;
        println!(
            "restore checkpoint {i}: {d:6.2} ms, {} pages checked, {mib:.1} MiB rewritten",
            stats.pages_checked
        );
    }
    println!(
        "checkpoint: {:.2} ms per MiB dirtied; restore: {:.2} ms per MiB rewritten",
        take_ms / take_mib,
        restore_ms / restore_mib.max(1e-9)
    );
}

/// Times `f` on the timeline, in milliseconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let r = f();
    (r, ms(t.elapsed()))
}

/// Reverse-step latency at the end of runs of growing length (adaptive
/// spacing, default budget).
fn reverse_steps_into_the_run(quick: bool) -> Result<(), TimelineError> {
    let mut m = guest::machine(GuestConfig::default());
    let mut tl = Timeline::live(&mut m, TimelineConfig::default())?;
    let mut ends = vec![1_000_000u64, 10_000_000, 100_000_000];
    if !quick {
        ends.push(1_000_000_000);
    }
    for n in ends {
        let (r, run_ms) = timed(|| tl.advance(&mut m, n));
        r?;
        let mut worst: f64 = 0.0;
        let mut sum = 0.0;
        for _ in 0..5 {
            let (r, d) = timed(|| tl.step_back(&mut m));
            r?;
            worst = worst.max(d);
            sum += d;
        }
        let (r, fwd) = timed(|| tl.seek(&mut m, n));
        r?;
        println!(
            "at {:>5} M instructions (run {:.1} s): reverse-stepi {:.1} ms average, {worst:.1} ms \
             worst of 5; seek back to the end {fwd:.1} ms; interval {:.2} M, {} checkpoints, \
             {:.1} MiB",
            n / 1_000_000,
            run_ms / 1e3,
            sum / 5.0,
            tl.interval() as f64 / 1e6,
            tl.checkpoints().len(),
            tl.checkpoint_bytes() as f64 / MIB
        );
    }
    Ok(())
}

/// Reverse-step latency at distances back from the end of a run whose
/// checkpoints were thinned to a small budget: the first step back there
/// replays from a sparse checkpoint; the next ones find the checkpoints
/// that replay left.
fn reverse_steps_back_from_the_end(n: u64) -> Result<(), TimelineError> {
    let cfg = GuestConfig {
        memory: 64 << 20,
        pattern_pages: 4096,
        ..GuestConfig::default()
    };
    let mut m = guest::machine(cfg);
    let config = TimelineConfig {
        memory_budget: 24 << 20,
        ..TimelineConfig::default()
    };
    let mut tl = Timeline::live(&mut m, config)?;
    tl.advance(&mut m, n)?;
    let stats = tl.stats();
    println!(
        "{} M instructions, 24 MiB budget: {} checkpoints kept ({:.1} MiB), {} thinned",
        n / 1_000_000,
        tl.checkpoints().len(),
        tl.checkpoint_bytes() as f64 / MIB,
        stats.checkpoints_thinned
    );
    for back in [1_000_000u64, 10_000_000, n / 4, n / 2, n - 1_000_000] {
        let at = n - back;
        tl.seek(&mut m, n)?;
        let gap = gap_around(&tl, at);
        let (r, first) = timed(|| tl.seek(&mut m, at));
        r?;
        let (r, second) = timed(|| tl.step_back(&mut m));
        r?;
        println!(
            "seek {:>4} M back from the end: {first:7.1} ms (checkpoint gap there {:.1} M), \
             then reverse-stepi {second:.1} ms",
            back / 1_000_000,
            gap as f64 / 1e6
        );
    }
    Ok(())
}

/// The distance from the checkpoint at or before `at` to the next one
/// (or to the end of history).
fn gap_around(tl: &Timeline, at: u64) -> u64 {
    let cps = tl.checkpoints();
    let i = cps.partition_point(|c| c.icount <= at).saturating_sub(1);
    let next = cps.get(i + 1).map_or(tl.head(), |c| c.icount);
    cps.get(i).map_or(0, |a| next - a.icount)
}

/// Single-stepping cost of run_back and a watchpoint over the whole
/// history that never fires.
fn run_back_figures(n: u64) -> Result<(), TimelineError> {
    let mut m = guest::machine(GuestConfig::default());
    let config = TimelineConfig {
        spacing: Spacing::Fixed(2_000_000),
        ..TimelineConfig::default()
    };
    let mut tl = Timeline::live(&mut m, config)?;
    // The present between checkpoints, as it usually is.
    let n = n + 1_234_567;
    tl.advance(&mut m, n)?;
    let span = 4_000_000u64;
    let target = n - span;
    let (r, d) = timed(|| tl.run_back(&mut m, &mut |m: &Machine| m.icount() == target));
    r?;
    println!(
        "run_back over {} M instructions (single-stepped): {:.0} ms, {:.0} ns per instruction",
        span / 1_000_000,
        d,
        d * 1e6 / span as f64
    );
    tl.seek(&mut m, n)?;
    let (r, d) = timed(|| tl.run_back(&mut m, &mut MemoryChange::new(0xF0_0000, 4)));
    let outcome = match r {
        Err(TimelineError::BeginningOfHistory { .. }) => "no hit".to_string(),
        other => format!("{other:?}"),
    };
    println!(
        "run_back with a watchpoint that never fires over {} M instructions: {d:.0} ms ({outcome})",
        n / 1_000_000
    );
    Ok(())
}
