//! The Debian guest image cache the Linux tests share: `hindsight fetch`
//! into the target directory, once per test process (network needed on the
//! first run only; without apt or network the tests fail with fetch's own
//! message, they never skip).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The cache directory, and what `hindsight fetch` printed on stdout (the
/// image paths, one `name: path` line each).
pub fn fetch() -> &'static (PathBuf, String) {
    static FETCHED: OnceLock<(PathBuf, String)> = OnceLock::new();
    FETCHED.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fetch-cache");
        let out = Command::new(env!("CARGO_BIN_EXE_hindsight"))
            .args(["fetch", "--cache-dir"])
            .arg(&dir)
            .output()
            .expect("run hindsight fetch");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "fetch failed\n--- stdout\n{stdout}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (dir, stdout)
    })
}
