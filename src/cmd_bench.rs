//! `hindsight bench`: engine speed on the CPU-bound bench guest.

use std::time::{Duration, Instant};

use hindsight_machine::Exit;
use hindsight_testsuite::guests;

use crate::drive::{self, mips};
use crate::{exit_code, guest, BenchArgs};

/// Instructions run when no `--seconds` is given.
pub const DEFAULT_INSNS: u64 = 300_000_000;
/// Virtual time between looks at the host clock in `--seconds` mode.
const STEP: u64 = 1_000_000;

/// Runs the command; returns the process exit status.
pub fn run(args: &BenchArgs) -> i32 {
    let engine = match args.engine.engine.plain("bench") {
        Ok(e) => e,
        Err(e) => {
            eprintln!("hindsight: {e}");
            return exit_code::USAGE;
        }
    };
    let image = guests::bench();
    let mut m = match guest::boot(&image, None, engine) {
        Ok(m) => m,
        Err(code) => return code,
    };
    // The guest prints a line per round; only the speed matters here.
    m.set_console(Box::new(|_: &[u8]| {}));
    let budget = args.seconds.map(Duration::from_secs_f64);
    let start = Instant::now();
    let exit = loop {
        let target = match budget {
            Some(_) => m.icount() + STEP,
            None => args.insns,
        };
        let exit = m.run_until(target);
        let done = match budget {
            Some(b) => start.elapsed() >= b,
            None => m.icount() >= args.insns,
        };
        if exit != Exit::InsnLimit || done {
            break exit;
        }
    };
    let secs = start.elapsed().as_secs_f64();
    println!("guest: {}", image.name);
    println!("engine: {}", m.engine());
    if let Some(s) = m.jit_stats() {
        println!(
            "jit: {} blocks translated ({} instructions, {} inlined, {} with a branch-free hammock), {} native block runs, {} interpreted",
            s.translated, s.insns, s.inlined, s.hammocks, s.native_runs, s.interp_runs
        );
    }
    println!("instructions: {}", m.icount());
    println!("wall time: {secs:.3} s");
    println!("{:.1} MIPS", mips(m.icount(), secs));
    match exit {
        Exit::InsnLimit => exit_code::OK,
        other => drive::report(&drive::End::Machine(other), None),
    }
}
