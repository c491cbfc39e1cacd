//! End-to-end tests of `hindsight fetch`: the real program downloads
//! Debian's kernel and busybox-static with the system's apt (network
//! needed; the packages are cached under the target directory, so only the
//! first run downloads ~71 MB), and fails clearly when it cannot.
//!
//! These tests do not skip: on a machine without apt or network they fail
//! with hindsight's own error message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn hindsight() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hindsight"))
}

/// A cache directory that survives between test runs (in the target dir).
fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("fetch-cache")
}

fn tmp_dir(test: &str) -> PathBuf {
    let d =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fetch-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn fetch(cache: &Path) -> Output {
    let apt = Command::new("apt-get").arg("--version").output();
    assert!(
        apt.is_ok_and(|o| o.status.success()),
        "this test needs Debian's apt (apt-get, apt-cache, dpkg-deb): hindsight fetch \
         downloads the guest's kernel with it"
    );
    let out = hindsight()
        .args(["fetch", "--cache-dir"])
        .arg(cache)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    out
}

/// The path printed after `label` on stdout, e.g. "kernel:    /x (...)".
fn printed_path(out: &Output, label: &str) -> PathBuf {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no '{label}' line\n{}", show(out)));
    PathBuf::from(line.trim().split(" (").next().unwrap())
}

/// Names of a newc archive's entries, read independently of hindsight.
fn cpio_names(a: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut off = 0;
    while off + 110 <= a.len() {
        assert_eq!(&a[off..off + 6], b"070701", "magic at {off}");
        let hex = |i: usize| {
            let s = std::str::from_utf8(&a[off + 6 + 8 * i..off + 14 + 8 * i]).unwrap();
            usize::from_str_radix(s, 16).unwrap()
        };
        let (size, namesize) = (hex(6), hex(11));
        let name = String::from_utf8(a[off + 110..off + 110 + namesize - 1].to_vec()).unwrap();
        let data = (off + 110 + namesize + 3) & !3;
        off = (data + size + 3) & !3;
        let last = name == "TRAILER!!!";
        names.push(name);
        if last {
            break;
        }
    }
    assert_eq!(off, a.len(), "the archive ends at its trailer");
    names
}

#[test]
fn fetches_verifies_and_caches_the_debian_guest() {
    let cache = shared_cache();
    let out = fetch(&cache);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("linux-image-amd64"), "{}", show(&out));

    let kernel = printed_path(&out, "kernel:");
    let busybox = printed_path(&out, "busybox:");
    let initramfs = printed_path(&out, "initramfs:");
    for p in [&kernel, &busybox, &initramfs] {
        assert!(p.starts_with(&cache), "{} not in the cache", p.display());
    }
    let k = std::fs::read(&kernel).unwrap();
    assert_eq!(&k[0x202..0x206], b"HdrS", "vmlinuz is a bzImage");
    assert!(k.len() > 1 << 20);
    let b = std::fs::read(&busybox).unwrap();
    assert_eq!(&b[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([b[18], b[19]]), 62, "x86-64");
    let names = cpio_names(&std::fs::read(&initramfs).unwrap());
    for n in [
        "init",
        "bin/busybox",
        "bin/sh",
        "dev/console",
        "dev/null",
        "TRAILER!!!",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    let manifest = std::fs::read_to_string(cache.join("images.txt")).unwrap();
    assert!(
        manifest.contains("kernel_package=linux-image-"),
        "{manifest}"
    );

    // A second fetch downloads nothing and gives the same files.
    let again = fetch(&cache);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!stderr.contains("fetching"), "{}", show(&again));
    assert!(stderr.contains("is cached"), "{}", show(&again));
    assert_eq!(again.stdout, out.stdout);

    // A corrupted package in the cache is detected and downloaded again.
    let dir = tmp_dir("corrupt");
    std::fs::create_dir_all(dir.join("debian")).unwrap();
    for e in std::fs::read_dir(cache.join("debian")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        let dest = dir.join("debian").join(&name);
        if name.starts_with("busybox-static_") {
            std::fs::write(&dest, b"not the package").unwrap();
        } else if name.ends_with(".deb") {
            std::fs::hard_link(&p, &dest)
                .or_else(|_| std::fs::copy(&p, &dest).map(|_| ()))
                .unwrap();
        }
    }
    let fixed = fetch(&dir);
    let stderr = String::from_utf8_lossy(&fixed.stderr);
    assert!(
        stderr.contains("fetching busybox-static"),
        "{}",
        show(&fixed)
    );
    assert!(!stderr.contains("fetching linux-image"), "{}", show(&fixed));
    assert!(stderr.contains("verified"), "{}", show(&fixed));
    let b2 = std::fs::read(printed_path(&fixed, "busybox:")).unwrap();
    assert_eq!(b2, b);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fails_clearly_without_a_cache_directory() {
    let out = hindsight()
        .arg("fetch")
        .env_remove("HOME")
        .env_remove("XDG_CACHE_HOME")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot find a cache directory"),
        "{}",
        show(&out)
    );
    assert!(stderr.contains("--cache-dir"), "{}", show(&out));
}

#[test]
fn fails_clearly_on_an_unusable_cache_directory() {
    let dir = tmp_dir("unusable");
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = hindsight()
        .args(["fetch", "--cache-dir"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hindsight: fetch: cannot create"),
        "{}",
        show(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
