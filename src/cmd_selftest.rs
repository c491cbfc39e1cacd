//! `hindsight selftest`: the guest self-tests of hindsight-testsuite.

use hindsight_machine::Engine;

use crate::exit_code;

/// Runs the command on `engine`; returns the process exit status.
pub fn run(engine: Engine) -> i32 {
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
