//! Guest images for booting Debian's stock kernel: `hindsight fetch`, and
//! the first use of `hindsight boot`.
//!
//! The system's apt downloads the current `linux-image-amd64` kernel (the
//! metapackage resolved to the real `linux-image-<abi>-amd64` package) and
//! `busybox-static` from Debian's package registry; hindsight checks each
//! `.deb` against the SHA256 and size of apt's (signed) package record,
//! checks the package structure with its own `ar` reader, pulls
//! `boot/vmlinuz-*` and `bin/busybox` out of the data tar that
//! `dpkg-deb --fsys-tarfile` decompresses, validates them (bzImage setup
//! header, static ELF64 x86-64) and builds an initramfs with its own cpio
//! writer.
//!
//! Cache layout (under [`cache_dir`]):
//! - `debian/<pool file name>.deb`: the packages as downloaded;
//! - `vmlinuz-<kernel package version>`, `busybox-<busybox version>`;
//! - `initramfs-<hash>.cpio`: one per distinct `/init` (the default shell,
//!   or each `--run` command), built on demand;
//! - `images.txt`: which of the above are current (written last, so an
//!   interrupted fetch leaves the previous state in place).

mod apt;
mod ar;
mod initramfs;
mod tar;

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use sha2::{Digest, Sha256};

pub use apt::PackageInfo;
pub use initramfs::build_initramfs;

/// The metapackage that names the current kernel.
pub const KERNEL_METAPACKAGE: &str = "linux-image-amd64";
/// The package that ships a statically linked busybox as `/bin/busybox`.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// The file under the cache directory that records the current images.
pub const MANIFEST: &str = "images.txt";

/// Why fetching or finding the guest images failed; the message is meant
/// for the user as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchError(String);

impl FetchError {
    /// An error with this message.
    pub fn new(msg: impl Into<String>) -> Self {
        FetchError(msg.into())
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FetchError {}

fn io_error(what: &str, path: &Path, e: io::Error) -> FetchError {
    FetchError::new(format!("cannot {what} '{}': {e}", path.display()))
}

/// Options of [`fetch`].
#[derive(Clone, Debug, Default)]
pub struct FetchOptions {
    /// Cache directory instead of the XDG default.
    pub cache_dir: Option<PathBuf>,
    /// Download and extract again even when the cache is up to date.
    pub force: bool,
}

/// The fetched kernel and busybox, with their provenance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestImages {
    /// The cache directory holding everything below.
    pub cache_dir: PathBuf,
    /// The bzImage (`vmlinuz-<version>`).
    pub kernel: PathBuf,
    /// The real kernel package, e.g. `linux-image-6.1.0-56-amd64`.
    pub kernel_package: String,
    /// Its Debian version, e.g. `6.1.192-2`.
    pub kernel_version: String,
    /// The static busybox binary.
    pub busybox: PathBuf,
    /// The Debian version of `busybox-static`, e.g. `1:1.35.0-4+deb12u1+b1`.
    pub busybox_version: String,
}

impl GuestImages {
    /// The initramfs for `run` (see [`build_initramfs`]): built from the
    /// cached busybox, written to `initramfs-<hash>.cpio` in the cache
    /// directory unless already there, and returned as a path.
    pub fn initramfs(&self, run: Option<&str>) -> Result<PathBuf, FetchError> {
        let busybox =
            std::fs::read(&self.busybox).map_err(|e| io_error("read", &self.busybox, e))?;
        initramfs::check_static_elf64(&busybox).map_err(|e| {
            FetchError::new(format!(
                "'{}' is not a usable busybox: {e}; run 'hindsight fetch --force'",
                self.busybox.display()
            ))
        })?;
        let cpio = build_initramfs(&busybox, run);
        let hash = sha256_hex(&cpio);
        let path = self
            .cache_dir
            .join(format!("initramfs-{}.cpio", &hash[..16]));
        let current = std::fs::metadata(&path).is_ok_and(|m| m.len() == cpio.len() as u64);
        if !current {
            write_atomically(&path, &cpio)?;
        }
        Ok(path)
    }

    fn manifest_text(&self) -> String {
        let rel = |p: &Path| {
            p.strip_prefix(&self.cache_dir)
                .unwrap_or(p)
                .display()
                .to_string()
        };
        format!(
            "# Guest images fetched by hindsight; paths are relative to this directory.\n\
             kernel={}\nkernel_package={}\nkernel_version={}\nbusybox={}\nbusybox_version={}\n",
            rel(&self.kernel),
            self.kernel_package,
            self.kernel_version,
            rel(&self.busybox),
            self.busybox_version
        )
    }

    fn from_manifest(cache_dir: &Path, text: &str) -> Option<GuestImages> {
        let get = |k: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(key, _)| key.trim() == k)
                .map(|(_, v)| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Some(GuestImages {
            cache_dir: cache_dir.to_path_buf(),
            kernel: cache_dir.join(get("kernel")?),
            kernel_package: get("kernel_package")?,
            kernel_version: get("kernel_version")?,
            busybox: cache_dir.join(get("busybox")?),
            busybox_version: get("busybox_version")?,
        })
    }
}

/// The cache directory: `override_dir` if given, else
/// `$XDG_CACHE_HOME/hindsight` (when set to an absolute path, as the XDG
/// spec requires), else `$HOME/.cache/hindsight`.
pub fn cache_dir(override_dir: Option<&Path>) -> Result<PathBuf, FetchError> {
    resolve_cache_dir(
        override_dir,
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

fn resolve_cache_dir(
    override_dir: Option<&Path>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf, FetchError> {
    if let Some(d) = override_dir {
        return Ok(d.to_path_buf());
    }
    if let Some(x) = xdg_cache_home.map(PathBuf::from) {
        if x.is_absolute() {
            return Ok(x.join("hindsight"));
        }
    }
    match home.map(PathBuf::from) {
        Some(h) if h.is_absolute() => Ok(h.join(".cache").join("hindsight")),
        _ => Err(FetchError::new(
            "cannot find a cache directory: neither XDG_CACHE_HOME nor HOME is set to an \
             absolute path; set one of them or pass --cache-dir DIR",
        )),
    }
}

/// The images recorded in the cache by an earlier fetch, if all of them
/// are still there. Does not consult apt.
pub fn cached(cache_dir: &Path) -> Option<GuestImages> {
    let text = std::fs::read_to_string(cache_dir.join(MANIFEST)).ok()?;
    let img = GuestImages::from_manifest(cache_dir, &text)?;
    (img.kernel.is_file() && img.busybox.is_file()).then_some(img)
}

/// The cached images if there are any, else [`fetch`] them: what
/// `hindsight boot` does on its first use.
pub fn ensure_images(cache_dir_override: Option<&Path>) -> Result<GuestImages, FetchError> {
    let dir = cache_dir(cache_dir_override)?;
    if let Some(img) = cached(&dir) {
        return Ok(img);
    }
    eprintln!(
        "hindsight: no guest images in '{}' yet; fetching them",
        dir.display()
    );
    fetch(&FetchOptions {
        cache_dir: Some(dir),
        force: false,
    })
}

/// Downloads (unless cached with the right hash), verifies and extracts
/// the current kernel and busybox; progress goes to stderr.
pub fn fetch(opts: &FetchOptions) -> Result<GuestImages, FetchError> {
    let dir = cache_dir(opts.cache_dir.as_deref())?;
    let debs = dir.join("debian");
    std::fs::create_dir_all(&debs).map_err(|e| io_error("create", &debs, e))?;
    remove_abandoned_partials(&debs);

    eprintln!(
        "hindsight: looking up {KERNEL_METAPACKAGE} and {BUSYBOX_PACKAGE} in apt's package lists"
    );
    let meta = show_or_update(KERNEL_METAPACKAGE)?;
    let (kernel_name, pinned) =
        apt::find_dependency(&meta.depends, "linux-image-", KERNEL_METAPACKAGE).ok_or_else(
            || {
                FetchError::new(format!(
                    "{KERNEL_METAPACKAGE} {} depends on no linux-image-* package (Depends: {:?})",
                    meta.version, meta.depends
                ))
            },
        )?;
    let kernel = apt::show(&kernel_name)?.ok_or_else(|| {
        FetchError::new(format!(
            "{KERNEL_METAPACKAGE} {} depends on {kernel_name}, which apt does not know",
            meta.version
        ))
    })?;
    if let Some(v) = pinned.filter(|v| *v != kernel.version) {
        return Err(FetchError::new(format!(
            "{KERNEL_METAPACKAGE} {} wants {kernel_name} {v}, but apt's candidate is {}; \
             run 'apt-get update' and try again",
            meta.version, kernel.version
        )));
    }
    let busybox = show_or_update(BUSYBOX_PACKAGE)?;

    let kernel_deb = ensure_deb(&debs, &kernel, opts.force)?;
    let busybox_deb = ensure_deb(&debs, &busybox, opts.force)?;

    let kernel_path = dir.join(format!("vmlinuz-{}", kernel.plain_version()));
    ensure_extracted(&kernel_deb, &kernel_path, opts.force, &Extract::Kernel)?;
    let busybox_path = dir.join(format!("busybox-{}", busybox.plain_version()));
    ensure_extracted(&busybox_deb, &busybox_path, opts.force, &Extract::Busybox)?;

    let img = GuestImages {
        cache_dir: dir.clone(),
        kernel: kernel_path,
        kernel_package: kernel.package,
        kernel_version: kernel.version,
        busybox: busybox_path,
        busybox_version: busybox.version,
    };
    write_atomically(&dir.join(MANIFEST), img.manifest_text().as_bytes())?;
    Ok(img)
}

/// `apt-cache show`, running `apt-get update` first when the package lists
/// do not have `package` and we are root.
fn show_or_update(package: &str) -> Result<PackageInfo, FetchError> {
    if let Some(info) = apt::show(package)? {
        return Ok(info);
    }
    if !apt::is_root() {
        return Err(FetchError::new(format!(
            "apt's package lists have no {package} for {arch}: they are probably missing or \
             stale. Run 'sudo apt-get update' and then this command again",
            arch = apt::ARCH
        )));
    }
    eprintln!(
        "hindsight: apt's package lists have no {package} for {}; running 'apt-get update'",
        apt::ARCH
    );
    apt::update()?;
    apt::show(package)?.ok_or_else(|| {
        FetchError::new(format!(
            "apt has no {package} for {} even after 'apt-get update': check that \
             /etc/apt/sources.list (or sources.list.d) lists Debian's 'main' component",
            apt::ARCH
        ))
    })
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 and length of a file, streamed.
fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex(&h.finalize()), len))
}

/// Checks a downloaded .deb against apt's record.
fn verify_deb(path: &Path, info: &PackageInfo) -> Result<(), FetchError> {
    let (sha, len) = sha256_file(path).map_err(|e| io_error("read", path, e))?;
    if len != info.size {
        return Err(FetchError::new(format!(
            "'{}' is {len} bytes, but apt's record of {} {} says {}",
            path.display(),
            info.package,
            info.version,
            info.size
        )));
    }
    if sha != info.sha256 {
        return Err(FetchError::new(format!(
            "SHA256 mismatch for '{}': the file has {sha}, apt's record of {} {} says {}",
            path.display(),
            info.package,
            info.version,
            info.sha256
        )));
    }
    Ok(())
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Removes `.partial-<pid>` download directories whose process is gone
/// (an interrupted fetch).
fn remove_abandoned_partials(debs: &Path) {
    let Ok(entries) = std::fs::read_dir(debs) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(".partial-")) else {
            continue;
        };
        let alive = pid.parse::<u32>().is_ok_and(|p| {
            p == std::process::id() || Path::new("/proc").join(p.to_string()).exists()
        });
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The verified .deb of `info` in `debs`, downloaded unless already there.
fn ensure_deb(debs: &Path, info: &PackageInfo, force: bool) -> Result<PathBuf, FetchError> {
    let path = debs.join(info.deb_name());
    if !force && path.is_file() && verify_deb(&path, info).is_ok() {
        eprintln!(
            "hindsight: {} {} is cached: {}",
            info.package,
            info.version,
            path.display()
        );
        return Ok(path);
    }
    eprintln!(
        "hindsight: fetching {} (version {}, {}) from Debian's package registry",
        info.package,
        info.version,
        mb(info.size)
    );
    let partial = debs.join(format!(".partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| io_error("create", &partial, e))?;
    let result = download_into(&partial, info, &path);
    let _ = std::fs::remove_dir_all(&partial);
    result?;
    Ok(path)
}

fn download_into(partial: &Path, info: &PackageInfo, dest: &Path) -> Result<(), FetchError> {
    let start = Instant::now();
    apt::download(info, partial)?;
    let secs = start.elapsed().as_secs_f64();
    let entries = std::fs::read_dir(partial).map_err(|e| io_error("list", partial, e))?;
    let debs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    let [got] = &debs[..] else {
        return Err(FetchError::new(format!(
            "apt-get download of {} left {} .deb files instead of one in '{}'",
            info.package,
            debs.len(),
            partial.display()
        )));
    };
    verify_deb(got, info)?;
    eprintln!(
        "hindsight: downloaded {} in {secs:.1} s ({:.1} MB/s); SHA256 {} verified",
        mb(info.size),
        info.size as f64 / 1e6 / secs.max(1e-3),
        info.sha256
    );
    std::fs::rename(got, dest).map_err(|e| io_error("move the download to", dest, e))
}

/// What to pull out of a package.
enum Extract {
    /// `boot/vmlinuz-*`, validated as a bzImage.
    Kernel,
    /// `bin/busybox` (or `usr/bin/busybox`), validated as a static ELF64.
    Busybox,
}

impl Extract {
    fn wanted(&self, path: &str) -> bool {
        match self {
            Extract::Kernel => path.starts_with("boot/vmlinuz-"),
            Extract::Busybox => path == "bin/busybox" || path == "usr/bin/busybox",
        }
    }

    fn validate(&self, data: &[u8]) -> Result<(), String> {
        match self {
            Extract::Kernel => hindsight_firmware::linux::parse_setup_header(data)
                .map(|_| ())
                .map_err(|e| format!("not a usable bzImage: {e}")),
            Extract::Busybox => initramfs::check_static_elf64(data)
                .map_err(|e| format!("not a static x86-64 busybox: {e}")),
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Extract::Kernel => "boot/vmlinuz-*",
            Extract::Busybox => "bin/busybox",
        }
    }
}

/// Makes sure `dest` holds the validated file `what` from `deb`.
fn ensure_extracted(
    deb: &Path,
    dest: &Path,
    force: bool,
    what: &Extract,
) -> Result<(), FetchError> {
    if !force {
        if let Ok(data) = std::fs::read(dest) {
            if what.validate(&data).is_ok() {
                return Ok(());
            }
        }
    }
    let (name, data) = extract_from_deb(deb, what)?;
    what.validate(&data)
        .map_err(|e| FetchError::new(format!("'{}' in '{}' is {e}", name, deb.display())))?;
    write_atomically(dest, &data)?;
    let mode = match what {
        Extract::Kernel => 0o644,
        Extract::Busybox => 0o755,
    };
    set_mode(dest, mode)?;
    eprintln!(
        "hindsight: extracted {name} ({}) to {}",
        mb(data.len() as u64),
        dest.display()
    );
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), FetchError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_error("set permissions of", path, e))
}

/// The first file of `deb`'s data tar that `what` wants, as (path, data).
fn extract_from_deb(deb: &Path, what: &Extract) -> Result<(String, Vec<u8>), FetchError> {
    let bytes = std::fs::read(deb).map_err(|e| io_error("read", deb, e))?;
    let member =
        ar::check_deb(&bytes).map_err(|e| FetchError::new(format!("'{}': {e}", deb.display())))?;
    drop(bytes);
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                FetchError::new("'dpkg-deb' was not found (it is part of dpkg); hindsight fetch needs it to decompress Debian packages")
            } else {
                FetchError::new(format!("cannot run 'dpkg-deb': {e}"))
            }
        })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let found = tar::extract(io::BufReader::new(stdout), |p| what.wanted(p), 1);
    let fail = |detail: String, child: std::process::Child| {
        let out = child.wait_with_output();
        let stderr = out
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
            .unwrap_or_default();
        FetchError::new(format!(
            "cannot extract {} from '{}' ({member}): {detail}{}",
            what.what(),
            deb.display(),
            if stderr.is_empty() {
                String::new()
            } else {
                format!("; dpkg-deb: {stderr}")
            }
        ))
    };
    match found {
        Ok(mut files) if !files.is_empty() => {
            // Everything needed has been read: stop decompressing the rest
            // (for the kernel, hundreds of MB of modules).
            let _ = child.kill();
            let _ = child.wait();
            Ok(files.swap_remove(0))
        }
        Ok(_) => Err(fail("the package has no such file".into(), child)),
        Err(e) => {
            let _ = child.kill();
            Err(fail(format!("reading its data: {e}"), child))
        }
    }
}

/// Writes `data` to a temporary file next to `path`, then renames it.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), FetchError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error("write", path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hindsight-fetch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn cache_dir_resolution() {
        let o = |s: &str| Some(OsString::from(s));
        assert_eq!(
            resolve_cache_dir(Some(Path::new("rel/dir")), None, None).unwrap(),
            PathBuf::from("rel/dir")
        );
        assert_eq!(
            resolve_cache_dir(None, o("/xdg"), o("/home/u")).unwrap(),
            PathBuf::from("/xdg/hindsight")
        );
        assert_eq!(
            resolve_cache_dir(None, None, o("/home/u")).unwrap(),
            PathBuf::from("/home/u/.cache/hindsight")
        );
        // A relative or empty XDG_CACHE_HOME is ignored, per the XDG spec.
        for x in ["relative", ""] {
            assert_eq!(
                resolve_cache_dir(None, o(x), o("/home/u")).unwrap(),
                PathBuf::from("/home/u/.cache/hindsight")
            );
        }
        let e = resolve_cache_dir(None, None, None).unwrap_err();
        assert!(e.to_string().contains("--cache-dir"), "{e}");
        assert!(resolve_cache_dir(None, o(""), o("")).is_err());
        assert_eq!(
            resolve_cache_dir(Some(Path::new("/o")), o("/xdg"), None).unwrap(),
            PathBuf::from("/o")
        );
    }

    #[test]
    fn manifest_round_trip_and_cached_lookup() {
        let d = tmp_dir("manifest");
        let img = GuestImages {
            cache_dir: d.clone(),
            kernel: d.join("vmlinuz-6.1.192-2"),
            kernel_package: "linux-image-6.1.0-56-amd64".into(),
            kernel_version: "6.1.192-2".into(),
            busybox: d.join("busybox-1.35.0-4"),
            busybox_version: "1:1.35.0-4".into(),
        };
        let text = img.manifest_text();
        assert!(text.contains("kernel=vmlinuz-6.1.192-2\n"), "{text}");
        assert_eq!(GuestImages::from_manifest(&d, &text), Some(img.clone()));
        assert_eq!(GuestImages::from_manifest(&d, "kernel=x\n"), None);

        assert_eq!(cached(&d), None);
        std::fs::write(d.join(MANIFEST), &text).unwrap();
        assert_eq!(cached(&d), None, "files missing");
        std::fs::write(&img.kernel, b"k").unwrap();
        std::fs::write(&img.busybox, b"b").unwrap();
        assert_eq!(cached(&d), Some(img.clone()));

        // A busybox that is not a static ELF gives no initramfs.
        let e = img.initramfs(None).unwrap_err();
        assert!(e.to_string().contains("not a usable busybox"), "{e}");
        let bb = initramfs::tests::elf64(2, 62, &[1]);
        std::fs::write(&img.busybox, &bb).unwrap();
        let p1 = img.initramfs(None).unwrap();
        let p2 = img.initramfs(Some("echo hi")).unwrap();
        assert_ne!(p1, p2);
        assert_eq!(std::fs::read(&p1).unwrap(), build_initramfs(&bb, None));
        assert_eq!(img.initramfs(None).unwrap(), p1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn deb_verification_checks_size_and_hash() {
        let d = tmp_dir("verify");
        let p = d.join("x.deb");
        std::fs::write(&p, b"package bytes").unwrap();
        let mut info = PackageInfo {
            package: "x".into(),
            version: "1".into(),
            filename: "pool/x.deb".into(),
            size: 13,
            sha256: sha256_hex(b"package bytes"),
            depends: String::new(),
        };
        verify_deb(&p, &info).unwrap();
        info.sha256 = sha256_hex(b"other");
        assert!(verify_deb(&p, &info)
            .unwrap_err()
            .to_string()
            .contains("SHA256 mismatch"));
        info.size = 12;
        assert!(verify_deb(&p, &info)
            .unwrap_err()
            .to_string()
            .contains("13 bytes"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn abandoned_partial_downloads_are_removed() {
        let d = tmp_dir("partials");
        // pid_max is at most 2^22, so this pid cannot exist.
        let dead = d.join(".partial-4294967295");
        let mine = d.join(format!(".partial-{}", std::process::id()));
        let other = d.join("keep.deb");
        std::fs::create_dir_all(dead.join("sub")).unwrap();
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::write(&other, b"x").unwrap();
        remove_abandoned_partials(&d);
        assert!(!dead.exists());
        assert!(mine.exists());
        assert!(other.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn sha256_known_answer() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // The acceptance value: 32 MiB of zeros.
        assert_eq!(
            sha256_hex(&vec![0u8; 32 << 20]),
            "83ee47245398adee79bd9c0a8bc57b821e92aba10f5f9ade8a5d1fae4d8c4302"
        );
    }

    #[test]
    fn extraction_targets() {
        assert!(Extract::Kernel.wanted("boot/vmlinuz-6.1.0-56-amd64"));
        assert!(!Extract::Kernel.wanted("boot/System.map-6.1.0-56-amd64"));
        assert!(Extract::Busybox.wanted("bin/busybox"));
        assert!(!Extract::Busybox.wanted("usr/share/doc/busybox"));
        let e = Extract::Kernel.validate(b"MZ not a kernel").unwrap_err();
        assert!(e.contains("bzImage"), "{e}");
        let e = Extract::Busybox.validate(b"#!/bin/sh").unwrap_err();
        assert!(e.contains("busybox"), "{e}");
        // A synthesized .deb passes the ar structure check used before
        // extraction.
        let tar = tar::tests::build(&[("./bin/busybox", b"x")]);
        let deb = ar::tests::build(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", b"c"),
            ("data.tar", &tar),
        ]);
        assert_eq!(ar::check_deb(&deb).unwrap(), "data.tar");
        let files = tar::extract(
            ar::members(&deb).unwrap()[2].data,
            |p| Extract::Busybox.wanted(p),
            1,
        )
        .unwrap();
        assert_eq!(files, [("bin/busybox".to_string(), b"x".to_vec())]);
    }
}
