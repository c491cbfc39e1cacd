//! `hindsight selftest`: the guest self-tests of hindsight-testsuite.

use crate::engine_choice::EngineChoice;
use crate::exit_code;

/// Runs the command on `engine`; returns the process exit status.
pub fn run(engine: EngineChoice) -> i32 {
    let engine = match engine.plain("selftest") {
        Ok(e) => e,
        Err(e) => {
            eprintln!("hindsight: {e}");
            return exit_code::USAGE;
        }
    };
    let (passed, failed) = hindsight_testsuite::selftest::run_all_on(engine, &mut |line: &str| {
        println!("{line}");
    });
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        exit_code::OK
    } else {
        exit_code::FAILURE
    }
}
