//! End-to-end tests of `hindsight boot`: Debian's stock kernel boots under
//! the real program to a busybox shell, runs a workload, takes typed input
//! and powers off. The guest images are fetched once into a cache in the
//! target directory (network needed on the first run; no skipping: without
//! apt or network the test fails with hindsight's own message).

mod guest_cache;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

/// The guest image cache (see `guest_cache`).
fn cache() -> &'static Path {
    &guest_cache::fetch().0
}

/// Kernel log lines that must never appear in a healthy boot.
const BAD: &[&str] = &[
    "BUG:",
    "WARNING:",
    "Oops",
    "Kernel panic",
    "panic",
    "unchecked MSR access",
    "Call Trace",
];

fn assert_healthy(log: &str, context: &str) {
    for bad in BAD {
        if let Some(line) = log.lines().find(|l| l.contains(bad)) {
            panic!("kernel log has '{bad}': {line}\n{context}");
        }
    }
}

#[test]
fn boot_runs_a_workload_and_powers_off() {
    let out = hindsight()
        .args(["boot", "--cache-dir"])
        .arg(cache())
        .args([
            "--run",
            "cat /proc/cpuinfo; dd if=/dev/zero bs=1M count=32 | sha256sum; echo DONE",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run hindsight boot");
    let context = show(&out);
    assert_eq!(out.status.code(), Some(0), "{context}");
    let log = String::from_utf8_lossy(&out.stdout);
    for want in [
        "Linux version 6.1",
        "Calibrating delay",
        "clocksource: Switched to clocksource tsc",
        "model name\t: hindsight virtual CPU",
        "83ee47245398adee79bd9c0a8bc57b821e92aba10f5f9ade8a5d1fae4d8c4302",
        "DONE",
    ] {
        assert!(log.contains(want), "no '{want}' in the output\n{context}");
    }
    assert_healthy(&log, &context);
    // "Calibrating delay ... NNNN.NN BogoMIPS": a sane loop speed for a
    // 1 GHz TSC (the loop count is derived from it).
    let bogomips: f64 = log
        .lines()
        .find(|l| l.contains("Calibrating delay"))
        .and_then(|l| l.split("..").last())
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no BogoMIPS figure\n{context}"));
    assert!(
        (100.0..100_000.0).contains(&bogomips),
        "BogoMIPS {bogomips}\n{context}"
    );
}

/// Reads the child's stdout on a thread, so the test can wait for text
/// with a deadline.
struct Reader {
    rx: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl Reader {
    fn new(mut out: impl Read + Send + 'static) -> Reader {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Reader {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits until the output after byte `from` contains `text`; returns
    /// the offset just past it.
    fn wait_for(&mut self, text: &str, from: usize, limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            let hay = String::from_utf8_lossy(&self.seen[from.min(self.seen.len())..]).into_owned();
            if let Some(i) = hay.find(text) {
                return from + i + text.len();
            }
            let left = limit.checked_sub(start.elapsed()).unwrap_or_else(|| {
                panic!(
                    "no '{text}' within {limit:?}; output so far:\n{}",
                    String::from_utf8_lossy(&self.seen)
                )
            });
            match self.rx.recv_timeout(left) {
                Ok(b) => self.seen.extend_from_slice(&b),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "hindsight ended before '{text}'; output:\n{}",
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
    }
}

#[test]
fn typed_input_reaches_the_shell() {
    let mut child = hindsight()
        .args(["boot", "--cache-dir"])
        .arg(cache())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hindsight boot");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = Reader::new(child.stdout.take().expect("stdout"));
    let err = BufReader::new(child.stderr.take().expect("stderr"));
    let err_lines =
        std::thread::spawn(move || err.lines().map_while(Result::ok).collect::<Vec<_>>());
    // The /init banner, then the busybox shell's prompt ("/ # ").
    let limit = Duration::from_secs(600);
    let at = out.wait_for("stops the machine", 0, limit);
    let at = out.wait_for("# ", at, limit);
    stdin.write_all(b"echo hi\n").expect("type");
    stdin.flush().expect("flush");
    // The echo of the typed line, then the command's output on its own line.
    let at = out.wait_for("echo hi", at, limit);
    out.wait_for("\nhi", at, limit);
    stdin.write_all(b"poweroff -f\n").expect("type");
    drop(stdin);
    let status = child.wait().expect("wait");
    let stderr = err_lines.join().unwrap_or_default().join("\n");
    assert_eq!(
        status.code(),
        Some(0),
        "stderr:\n{stderr}\nstdout:\n{}",
        String::from_utf8_lossy(&out.seen)
    );
}

#[test]
fn two_vcpus_boot_with_synchronized_tscs() {
    let out = hindsight()
        .args(["boot", "--cpus", "2", "--cache-dir"])
        .arg(cache())
        .args(["--run", "grep -c ^processor /proc/cpuinfo; echo DONE"])
        .stdin(Stdio::null())
        .output()
        .expect("run hindsight boot --cpus 2");
    let context = show(&out);
    assert_eq!(out.status.code(), Some(0), "{context}");
    let log = String::from_utf8_lossy(&out.stdout);
    for want in [
        "smp: Brought up 1 node, 2 CPUs",
        "clocksource: Switched to clocksource tsc",
        "\n2\r\nDONE",
    ] {
        assert!(log.contains(want), "no {want:?} in the output\n{context}");
    }
    assert!(!log.contains("TSC warp"), "{context}");
    assert_healthy(&log, &context);
}
