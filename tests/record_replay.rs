//! End-to-end record/replay of the Debian Linux guest with the real
//! program: a session with typed (piped) console input is recorded under
//! the JIT, then replayed from the trace file alone under the interpreter
//! and the JIT, verifying every state hash, and sought backwards to 1,000
//! random counts; a session recorded under the interpreter verifies under
//! the JIT; damaged,
//! truncated and killed recordings are refused or replayed up to their last
//! whole chunk, as the trace format promises.

mod guest_cache;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

fn hindsight() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hindsight"))
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rr-{name}-{}", std::process::id()))
}

/// The guest image cache (see `guest_cache`).
fn cache() -> &'static Path {
    &guest_cache::fetch().0
}

/// Typed at the shell: a command whose output proves the input arrived, then
/// power-off. Piped before the shell exists, as a script would.
const TYPED: &[u8] = b"echo typed-$((6*7))\npoweroff -f\n";

/// One recording under the JIT shared by the tests: (trace path, console
/// output).
fn recording() -> &'static (PathBuf, Vec<u8>) {
    static REC: OnceLock<(PathBuf, Vec<u8>)> = OnceLock::new();
    REC.get_or_init(|| record_session("jit"))
}

/// Records the typed session under `engine`: (trace path, console output).
fn record_session(engine: &str) -> (PathBuf, Vec<u8>) {
    {
        let trace = tmp(&format!("session-{engine}.hsr"));
        let mut child = hindsight()
            .args(["boot", "--engine", engine, "--cache-dir"])
            .arg(cache())
            .arg("--record")
            .arg(&trace)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hindsight boot --record");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(TYPED)
            .expect("type");
        let out = child.wait_with_output().expect("wait");
        assert_eq!(
            out.status.code(),
            Some(0),
            "recording failed\n{}",
            show(&out)
        );
        let console = String::from_utf8_lossy(&out.stdout);
        assert!(console.contains("typed-42"), "{}", show(&out));
        (trace, out.stdout)
    }
}

fn replay(trace: &Path, extra: &[&str]) -> Output {
    hindsight()
        .arg("replay")
        .arg(trace)
        .args(extra)
        .arg("--cache-dir")
        .arg(cache())
        .stdin(Stdio::null())
        .output()
        .expect("run hindsight replay")
}

/// The JIT's recording replays, verified, under both engines (twice under
/// the JIT: its translations must not depend on an earlier run).
#[test]
fn a_typed_linux_session_replays_identically() {
    let (trace, console) = recording();
    for engine in ["interp", "jit", "jit"] {
        let out = replay(trace, &["--verify", "--engine", engine]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        assert!(
            out.stdout == *console,
            "the replayed console differs from the recorded one\n{}",
            show(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("state hashes verified"), "{}", show(&out));
    }
}

/// The JIT's recording replays under `--engine check`: the JIT with an
/// interpreter twin in lockstep agree all the way, and every recorded
/// hash still verifies. Check goes with neither --gdb nor --check-seeks.
#[test]
fn a_linux_session_replays_with_the_engines_in_lockstep() {
    let (trace, console) = recording();
    let out = replay(trace, &["--verify", "--engine", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(out.stdout == *console, "console differs\n{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("checking the JIT against the interpreter"),
        "{}",
        show(&out)
    );
    assert!(err.contains("state hashes verified"), "{}", show(&out));
    let out = replay(trace, &["--engine", "check", "--check-seeks", "3"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("neither --check-seeks nor --gdb"),
        "{}",
        show(&out)
    );
}

/// A session recorded under the interpreter replays, verified, under the
/// JIT: the trace does not depend on the engine.
#[test]
fn an_interpreter_recording_verifies_under_the_jit() {
    let (trace, console) = record_session("interp");
    let out = replay(&trace, &["--verify", "--engine", "jit"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(out.stdout == console, "console differs\n{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("state hashes verified"), "{}", show(&out));
}

/// Seeking backwards to 1,000 random counts of the Linux session lands,
/// each time, on the state the forward replay hashed there.
#[test]
fn a_thousand_backward_seeks_find_the_forward_states() {
    let (trace, _) = recording();
    let out = replay(trace, &["--check-seeks", "1000", "--seed", "7"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("seek check: 1000/1000 random backward seeks matched"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_damaged_chunk_is_refused_by_name() {
    let (trace, _) = recording();
    let bytes = std::fs::read(trace).unwrap();
    // A byte in the last records chunk (the header and most hashes before it
    // stay intact, so the replay runs up to there and names the chunk).
    let mut bad = bytes.clone();
    let at = bad.len() - 40;
    bad[at] ^= 0x10;
    let path = tmp("damaged.hsr");
    std::fs::write(&path, &bad).unwrap();
    let out = replay(&path, &["--verify"]);
    let text = show(&out);
    assert_eq!(out.status.code(), Some(8), "{text}");
    assert!(text.contains("chunk"), "{text}");
    // A byte in the header: refused outright.
    let mut bad = bytes;
    bad[20] ^= 0x10;
    std::fs::write(&path, &bad).unwrap();
    let out = replay(&path, &["--verify"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

#[test]
fn a_truncated_trace_replays_to_its_last_whole_chunk() {
    let (trace, _) = recording();
    let bytes = std::fs::read(trace).unwrap();
    let path = tmp("truncated.hsr");
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let out = replay(&path, &["--verify"]);
    let text = show(&out);
    assert_eq!(out.status.code(), Some(8), "{text}");
    assert!(text.contains("replayed up to icount"), "{text}");
}

#[test]
fn a_killed_recording_replays() {
    let trace = tmp("killed.hsr");
    let mut child = hindsight()
        .args(["boot", "--cache-dir"])
        .arg(cache())
        .arg("--record")
        .arg(&trace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_secs(8));
    child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
    child.wait().expect("wait");
    let out = replay(&trace, &["--verify"]);
    let text = show(&out);
    assert_eq!(out.status.code(), Some(8), "{text}");
    assert!(text.contains("replayed up to icount"), "{text}");
    assert!(text.contains("state hashes verified"), "{text}");
}
