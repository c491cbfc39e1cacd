//! Runs the host-CPU differential tester (`src/bin/difftest.rs`) and requires
//! that the interpreter agrees with this machine's CPU on every case.

use std::process::Command;

/// The x87/MMX/SSE classes (tested on their own, below).
const FP_CLASSES: &str = "x87,mmx,sse,sse2,sse3,ssse3,sse41,sse42";

/// Runs the built `difftest` binary with `args`; panics with its output unless
/// it reports zero mismatches for `cases` cases.
fn run(cases: u64, args: &[&str]) {
    let n = cases.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_difftest"))
        .args(["--cases", &n, "--seed", "1", "--minimize", "--detail", "20"])
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
    // Every integer class but the string instructions (tested below, so
    // that a failure there is reported on its own).
    run(20_000, &["--exclude", "string", "--exclude", FP_CLASSES]);
}

#[test]
fn interpreter_matches_host_cpu_string_instructions() {
    run(5_000, &["--class", "string"]);
}

#[test]
fn interpreter_matches_host_cpu_bcd_in_compatibility_mode() {
    run(5_000, &["--class", "bcd"]);
}

// The x87/MMX/SSE classes: every form must be implemented (an
// unimplemented one fails the test instead of being left out).

#[test]
fn interpreter_matches_host_cpu_x87() {
    run(30_000, &["--class", "x87", "--require-implemented"]);
}

#[test]
fn interpreter_matches_host_cpu_mmx_sse_sse2() {
    run(
        30_000,
        &["--class", "mmx,sse,sse2", "--require-implemented"],
    );
}

#[test]
fn interpreter_matches_host_cpu_sse3_ssse3_sse41_sse42() {
    run(
        30_000,
        &["--class", "sse3,ssse3,sse41,sse42", "--require-implemented"],
    );
}

#[test]
fn interpreter_matches_host_cpu_all_classes_mixed() {
    // The default mix: integer and FP instructions in the same sequences.
    run(20_000, &["--require-implemented"]);
}
