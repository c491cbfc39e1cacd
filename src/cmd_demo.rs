//! `hindsight demo` (and `hindsight` alone): the built-in demo guest.

use std::time::Instant;

use hindsight_machine::{Engine, Exit};
use hindsight_testsuite::guests;

use crate::console;
use crate::drive::{self, mips, Drive, End};
use crate::engine_choice::EngineChoice;
use crate::{exit_code, guest};

/// Upper bound on the demo's run, so a CPU regression cannot hang it.
const DEMO_MAX_INSNS: u64 = 10_000_000_000;

/// Runs the command on `engine`; returns the process exit status.
pub fn run(engine: EngineChoice) -> i32 {
    let image = guests::demo();
    let mut m = match guest::boot(&image, Some(DEMO_MAX_INSNS), engine.engine()) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let check = match engine.checks() {
        true => {
            let twin = || {
                guest::boot(&image, Some(DEMO_MAX_INSNS), Engine::Interp)
                    .map_err(|code| format!("the interpreter twin did not boot (status {code})"))
            };
            match drive::lockstep(&mut m, twin) {
                Ok(l) => Some(l),
                Err(code) => return code,
            }
        }
        false => None,
    };
    console::to_stdout(&mut m);
    let start = Instant::now();
    let exit = Drive {
        max_insns: Some(DEMO_MAX_INSNS),
        check,
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
