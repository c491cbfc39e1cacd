//! `hindsight demo` (and `hindsight` alone): the built-in demo guest.

use std::time::Instant;

use hindsight_machine::{Engine, Exit};
use hindsight_testsuite::guests;

use crate::console;
use crate::drive::{self, mips, Drive, End};
use crate::{exit_code, guest};

/// Upper bound on the demo's run, so a CPU regression cannot hang it.
const DEMO_MAX_INSNS: u64 = 10_000_000_000;

/// Runs the command on `engine`; returns the process exit status.
pub fn run(engine: Engine) -> i32 {
    let image = guests::demo();
    let mut m = match guest::boot(&image, Some(DEMO_MAX_INSNS), engine) {
        Ok(m) => m,
        Err(code) => return code,
    };
    console::to_stdout(&mut m);
    let start = Instant::now();
    let exit = Drive {
        max_insns: Some(DEMO_MAX_INSNS),
        ..Drive::default()
    }
    .run(&mut m);
    let secs = start.elapsed().as_secs_f64();
    console::flush();
    println!(
        "hindsight: demo guest ran {} instructions in {secs:.3} s ({:.1} MIPS)",
        m.icount(),
        mips(m.icount(), secs)
    );
    match exit {
        // The demo writes 0 to the debug-exit port when it is done.
        End::Machine(Exit::DebugExit(1)) => exit_code::OK,
        other => drive::report(&other, Some(DEMO_MAX_INSNS)),
    }
}
