//! Runs the host-CPU differential tester (`src/bin/difftest.rs`) and requires
//! that the interpreter agrees with this machine's CPU on every case.

use std::process::Command;

/// Runs the built `difftest` binary with `args`; panics with its output unless
/// it reports zero mismatches for `cases` cases.
fn run(cases: u64, args: &[&str]) {
    let n = cases.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_difftest"))
        .args(["--cases", &n, "--seed", "1"])
        .args(args)
        .output()
        .expect("run difftest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or("");
    assert!(
        out.status.success() && last == format!("cases={cases} mismatches=0"),
        "difftest {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

#[test]
fn interpreter_matches_host_cpu() {
    // Every class but the string instructions (tested below, so that a
    // failure there is reported on its own).
    run(20_000, &["--exclude", "string"]);
}

#[test]
fn interpreter_matches_host_cpu_string_instructions() {
    run(5_000, &["--class", "string"]);
}

#[test]
fn interpreter_matches_host_cpu_bcd_in_compatibility_mode() {
    run(5_000, &["--class", "bcd"]);
}
