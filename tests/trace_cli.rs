//! End-to-end tests of `hindsight trace info` on real trace files written
//! with hindsight-timetravel's writer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hindsight_timetravel::trace::{
    EndRecord, ImageInfo, ImageRole, MachineConfig, TraceHeader, TraceWriter,
};

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

fn path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}.hsr", std::process::id()))
}

/// A small trace: a kernel image (by hash), console input, state hashes and
/// an end record, in several chunks.
fn write_trace(p: &Path) -> Vec<u8> {
    let mut config = MachineConfig::new();
    config.set("memory_bytes", 512u64 << 20).set("vcpus", 1);
    let kernel = vec![0x90u8; 4096];
    let header = TraceHeader {
        hindsight_version: "test".into(),
        cpu_model: "hindsight virtual CPU".into(),
        config,
        images: vec![ImageInfo::of_bytes(ImageRole::Kernel, "bzImage", &kernel)],
    };
    let file = std::fs::File::create(p).unwrap();
    let mut w = TraceWriter::new(file, &header, &[]).unwrap();
    for i in 0..10u64 {
        w.console_input(1000 * i, b"typed\n").unwrap();
        w.state_hash(1000 * i + 500, &[i as u8; 32]).unwrap();
        w.flush_chunk().unwrap();
    }
    w.finish(EndRecord {
        icount: 20_000,
        final_hash: [7; 32],
        exit_code: 0,
        reason: "guest poweroff".into(),
    })
    .unwrap();
    std::fs::read(p).unwrap()
}

#[test]
fn info_describes_an_intact_trace() {
    let p = path("intact");
    write_trace(&p);
    let out = hindsight()
        .args(["trace", "info"])
        .arg(&p)
        .output()
        .unwrap();
    let text = show(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for want in [
        "bzImage",
        "hindsight virtual CPU",
        "guest poweroff",
        "20000",
    ] {
        assert!(text.contains(want), "no '{want}'\n{text}");
    }
}

#[test]
fn info_names_the_corrupt_chunk() {
    let p = path("corrupt");
    let mut bytes = write_trace(&p);
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&p, &bytes).unwrap();
    let out = hindsight()
        .args(["trace", "info"])
        .arg(&p)
        .output()
        .unwrap();
    let text = show(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("chunk"), "{text}");
}

#[test]
fn info_refuses_a_file_that_is_not_a_trace() {
    let p = path("not-a-trace");
    std::fs::write(&p, b"hello, this is not a trace").unwrap();
    let out = hindsight()
        .args(["trace", "info"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}
