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
//! The kernel's symbol map comes from the same package when it is a real
//! one (`boot/System.map-*`); Debian ships a placeholder there (the real
//! map is in the 860 MB `-dbg` package), so then hindsight decompresses
//! the kernel and writes the map from the kernel's own symbol table
//! (kallsyms, see [`system_map`]): the addresses the guest runs at, since
//! hindsight boots the kernel without KASLR.
//!
//! Cache layout (under [`cache_dir`]):
//! - `debian/<pool file name>.deb`: the packages as downloaded;
//! - `vmlinuz-<kernel package version>`, `busybox-<busybox version>`;
//! - `System.map-<kernel package version>`: the kernel's symbols, for
//!   debuggers (`<address> <type> <name>` lines);
//! - `vmlinux-<hash>.elf`: the decompressed kernel (written by the first
//!   boot, or by the fetch that generated the System.map);
//! - `initramfs-<hash>.cpio`: one per distinct `/init` (the default shell,
//!   or each `--run` command), built on demand;
//! - `images.txt`: which of the above are current (written last, so an
//!   interrupted fetch leaves the previous state in place).

mod apt;
mod ar;
mod initramfs;
pub mod system_map;
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
    /// The kernel's System.map (`System.map-<version>`): always there after
    /// [`fetch`]; `None` from [`cached`] when an older hindsight fetched
    /// the images (the next fetch adds it) or the file is gone.
    pub system_map: Option<PathBuf>,
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
        let mut text = format!(
            "# Guest images fetched by hindsight; paths are relative to this directory.\n\
             kernel={}\nkernel_package={}\nkernel_version={}\nbusybox={}\nbusybox_version={}\n",
            rel(&self.kernel),
            self.kernel_package,
            self.kernel_version,
            rel(&self.busybox),
            self.busybox_version
        );
        if let Some(map) = &self.system_map {
            text.push_str(&format!("system_map={}\n", rel(map)));
        }
        text
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
            system_map: get("system_map").map(|m| cache_dir.join(m)),
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
    let mut img = GuestImages::from_manifest(cache_dir, &text)?;
    img.system_map = img.system_map.filter(|m| m.is_file());
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
/// the current kernel, its System.map and busybox; progress goes to
/// stderr.
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
    let map_path = dir.join(format!("System.map-{}", kernel.plain_version()));
    let system_map = match ensure_kernel(&kernel_deb, &kernel_path, &map_path, opts.force)? {
        Ok(()) => Some(map_path),
        // Booting does not need the map: say why there is none and go on
        // (the next fetch tries again).
        Err(e) => {
            eprintln!("hindsight: no System.map for the kernel: {e}");
            None
        }
    };
    let busybox_path = dir.join(format!("busybox-{}", busybox.plain_version()));
    ensure_extracted(&busybox_deb, &busybox_path, opts.force, &Extract::Busybox)?;

    let img = GuestImages {
        cache_dir: dir.clone(),
        kernel: kernel_path,
        kernel_package: kernel.package,
        kernel_version: kernel.version,
        busybox: busybox_path,
        busybox_version: busybox.version,
        system_map,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Extract {
    /// `boot/vmlinuz-*`, validated as a bzImage.
    Kernel,
    /// `boot/System.map-*`, validated as a symbol map.
    SystemMap,
    /// `bin/busybox` (or `usr/bin/busybox`), validated as a static ELF64.
    Busybox,
}

impl Extract {
    fn wanted(&self, path: &str) -> bool {
        match self {
            Extract::Kernel => path.starts_with("boot/vmlinuz-"),
            Extract::SystemMap => path.starts_with("boot/System.map-"),
            Extract::Busybox => path == "bin/busybox" || path == "usr/bin/busybox",
        }
    }

    fn validate(&self, data: &[u8]) -> Result<(), String> {
        match self {
            Extract::Kernel => hindsight_firmware::linux::parse_setup_header(data)
                .map(|_| ())
                .map_err(|e| format!("not a usable bzImage: {e}")),
            Extract::SystemMap => system_map::check(data)
                .map(|_| ())
                .map_err(|e| format!("not a usable System.map: {e}")),
            Extract::Busybox => initramfs::check_static_elf64(data)
                .map_err(|e| format!("not a static x86-64 busybox: {e}")),
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Extract::Kernel => "boot/vmlinuz-*",
            Extract::SystemMap => "boot/System.map-*",
            Extract::Busybox => "bin/busybox",
        }
    }

    fn mode(&self) -> u32 {
        match self {
            Extract::Kernel | Extract::SystemMap => 0o644,
            Extract::Busybox => 0o755,
        }
    }

    /// Whether `path` already holds a valid file of this kind.
    fn is_valid_file(&self, path: &Path) -> bool {
        std::fs::read(path).is_ok_and(|data| self.validate(&data).is_ok())
    }
}

/// Makes sure `dest` holds the validated file `what` from `deb`.
fn ensure_extracted(
    deb: &Path,
    dest: &Path,
    force: bool,
    what: &Extract,
) -> Result<(), FetchError> {
    if !force && what.is_valid_file(dest) {
        return Ok(());
    }
    let file = extract_from_deb(deb, &[*what])?
        .into_iter()
        .next()
        .flatten()
        .ok_or_else(|| not_in_package(deb, what))?;
    install(deb, dest, what, file)
}

fn not_in_package(deb: &Path, what: &Extract) -> FetchError {
    FetchError::new(format!(
        "cannot extract {} from '{}': the package has no such file",
        what.what(),
        deb.display()
    ))
}

/// Validates `file` (its path in the package, its data) as `what` and
/// writes it to `dest`.
fn install(
    deb: &Path,
    dest: &Path,
    what: &Extract,
    (name, data): PackagedFile,
) -> Result<(), FetchError> {
    what.validate(&data)
        .map_err(|e| FetchError::new(format!("'{}' in '{}' is {e}", name, deb.display())))?;
    write_atomically(dest, &data)?;
    set_mode(dest, what.mode())?;
    eprintln!(
        "hindsight: extracted {name} ({}) to {}",
        mb(data.len() as u64),
        dest.display()
    );
    Ok(())
}

/// Makes sure `kernel` holds the bzImage of the kernel package `deb` and
/// `map` its System.map: the package's own if it is a real one, else one
/// generated from the kernel's symbol table ([`system_map::from_kallsyms`]).
/// Both come out of one pass over the package when both are missing.
///
/// A kernel that cannot be extracted fails the whole (outer `Err`); a
/// System.map that cannot be had is the inner `Err`, for the caller to
/// report: the kernel boots without it.
fn ensure_kernel(
    deb: &Path,
    kernel: &Path,
    map: &Path,
    force: bool,
) -> Result<Result<(), FetchError>, FetchError> {
    let kernel_ok = !force && Extract::Kernel.is_valid_file(kernel);
    let map_ok = !force && Extract::SystemMap.is_valid_file(map);
    let targets: Vec<Extract> = [(Extract::Kernel, kernel_ok), (Extract::SystemMap, map_ok)]
        .into_iter()
        .filter_map(|(what, ok)| (!ok).then_some(what))
        .collect();
    if targets.is_empty() {
        return Ok(Ok(()));
    }
    let found = extract_from_deb(deb, &targets)?;
    let mut packaged_map = None;
    for (what, file) in targets.iter().zip(found) {
        match what {
            Extract::SystemMap => packaged_map = Some(file),
            _ => install(
                deb,
                kernel,
                what,
                file.ok_or_else(|| not_in_package(deb, what))?,
            )?,
        }
    }
    let Some(packaged_map) = packaged_map else {
        return Ok(Ok(()));
    };
    let why = match packaged_map {
        Some((name, data)) => match Extract::SystemMap.validate(&data) {
            Ok(()) => return Ok(install(deb, map, &Extract::SystemMap, (name, data))),
            Err(e) => format!("{name} in the package is {e}"),
        },
        None => "the package has no boot/System.map-*".to_string(),
    };
    eprintln!("hindsight: {why}; writing one from the kernel's own symbol table (kallsyms)");
    Ok(generate_map(kernel, map))
}

/// Writes `map` from the kallsyms tables of the kernel in the bzImage
/// `kernel`, decompressed on the host (and cached beside it, as a boot
/// would).
fn generate_map(kernel: &Path, map: &Path) -> Result<(), FetchError> {
    let bzimage = std::fs::read(kernel).map_err(|e| io_error("read", kernel, e))?;
    let cache_dir = map.parent().unwrap_or(Path::new("."));
    let vmlinux = crate::kernel::decompressed(&bzimage, cache_dir).ok_or_else(|| {
        FetchError::new(format!(
            "cannot decompress '{}' on the host, so cannot read its symbols for '{}'",
            kernel.display(),
            map.display()
        ))
    })?;
    let text = system_map::from_kallsyms(&vmlinux).map_err(|e| {
        FetchError::new(format!(
            "cannot write '{}' from the kernel '{}': {e}",
            map.display(),
            kernel.display()
        ))
    })?;
    let count = system_map::check(text.as_bytes()).map_err(|e| {
        FetchError::new(format!(
            "the symbols read from the kernel '{}' do not make a System.map: {e}",
            kernel.display()
        ))
    })?;
    write_atomically(map, text.as_bytes())?;
    set_mode(map, Extract::SystemMap.mode())?;
    eprintln!(
        "hindsight: wrote {} ({count} symbols from the kernel's kallsyms table)",
        map.display()
    );
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), FetchError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_error("set permissions of", path, e))
}

/// A file pulled out of a package: its path there and its contents.
type PackagedFile = (String, Vec<u8>);

/// The first file of `deb`'s data tar that each of `targets` wants, one
/// slot per target (`None`: not in the package). Stops reading the package
/// once every target has its file.
fn extract_from_deb(
    deb: &Path,
    targets: &[Extract],
) -> Result<Vec<Option<PackagedFile>>, FetchError> {
    let what = targets
        .iter()
        .map(|t| t.what())
        .collect::<Vec<_>>()
        .join(" and ");
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
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(FetchError::new("dpkg-deb's output could not be read"));
    };
    let found = tar::extract(
        io::BufReader::new(stdout),
        |p| targets.iter().any(|t| t.wanted(p)),
        targets.len(),
    );
    let complete = found.as_ref().is_ok_and(|f| f.len() == targets.len());
    // Everything needed has been read (or the tar is broken): stop
    // decompressing the rest (for the kernel, hundreds of MB of modules).
    if complete || found.is_err() {
        let _ = child.kill();
    }
    let out = child.wait_with_output();
    let files = found.map_err(|e| {
        let stderr = out
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
            .unwrap_or_default();
        FetchError::new(format!(
            "cannot extract {what} from '{}' ({member}): reading its data: {e}{}",
            deb.display(),
            if stderr.is_empty() {
                String::new()
            } else {
                format!("; dpkg-deb: {stderr}")
            }
        ))
    })?;
    let mut slots: Vec<Option<PackagedFile>> = vec![None; targets.len()];
    for (path, data) in files {
        let slot = targets
            .iter()
            .zip(slots.iter_mut())
            .find(|(t, s)| s.is_none() && t.wanted(&path));
        if let Some((_, s)) = slot {
            *s = Some((path, data));
        }
    }
    Ok(slots)
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
            system_map: Some(d.join("System.map-6.1.192-2")),
        };
        let text = img.manifest_text();
        assert!(text.contains("kernel=vmlinuz-6.1.192-2\n"), "{text}");
        assert!(text.contains("system_map=System.map-6.1.192-2\n"), "{text}");
        assert_eq!(GuestImages::from_manifest(&d, &text), Some(img.clone()));
        assert_eq!(GuestImages::from_manifest(&d, "kernel=x\n"), None);

        assert_eq!(cached(&d), None);
        std::fs::write(d.join(MANIFEST), &text).unwrap();
        assert_eq!(cached(&d), None, "files missing");
        std::fs::write(&img.kernel, b"k").unwrap();
        std::fs::write(&img.busybox, b"b").unwrap();
        // The map is optional for booting: missing, it is just not named.
        let no_map = GuestImages {
            system_map: None,
            ..img.clone()
        };
        assert_eq!(cached(&d), Some(no_map.clone()));
        std::fs::write(img.system_map.as_ref().unwrap(), b"m").unwrap();
        assert_eq!(cached(&d), Some(img.clone()));
        // A manifest written before hindsight kept System.maps still works.
        let old = no_map.manifest_text();
        assert!(!old.contains("system_map"), "{old}");
        assert_eq!(GuestImages::from_manifest(&d, &old), Some(no_map));

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
        assert!(Extract::SystemMap.wanted("boot/System.map-6.1.0-56-amd64"));
        assert!(!Extract::SystemMap.wanted("boot/vmlinuz-6.1.0-56-amd64"));
        let e = Extract::SystemMap
            .validate(b"ffffffffffffffff B The real System.map is in the -dbg package\n")
            .unwrap_err();
        assert!(e.contains("not a usable System.map"), "{e}");
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

    /// A .deb (uncompressed data.tar, which dpkg-deb accepts) holding `files`.
    fn deb_with(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
        let tar = tar::tests::build(files);
        let deb = ar::tests::build(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", b"c"),
            ("data.tar", &tar),
        ]);
        let p = dir.join("linux-image.deb");
        std::fs::write(&p, deb).unwrap();
        p
    }

    #[test]
    fn kernel_and_system_map_come_out_of_one_pass() {
        let d = tmp_dir("deb");
        let map: &[u8] = b"ffffffff81000000 T _text\nffffffff83079e46 T start_kernel\n";
        let deb = deb_with(
            &d,
            &[
                ("./boot/System.map-6", map),
                ("./boot/config-6", b"CONFIG_X=y"),
                ("./boot/vmlinuz-6", b"kernel"),
            ],
        );
        let got = extract_from_deb(&deb, &[Extract::Kernel, Extract::SystemMap]).unwrap();
        assert_eq!(
            got,
            [
                Some(("boot/vmlinuz-6".to_string(), b"kernel".to_vec())),
                Some(("boot/System.map-6".to_string(), map.to_vec())),
            ]
        );
        assert_eq!(extract_from_deb(&deb, &[Extract::Busybox]).unwrap(), [None]);
        // A real map in the package is installed as it is.
        let dest = d.join("System.map-1");
        ensure_extracted(&deb, &dest, false, &Extract::SystemMap).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), map);
        assert!(Extract::SystemMap.is_valid_file(&dest));
        // The kernel is validated before anything is written.
        let e = ensure_kernel(&deb, &d.join("vmlinuz-1"), &d.join("System.map-2"), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'boot/vmlinuz-6' in") && e.contains("not a usable bzImage"),
            "{e}"
        );
        assert!(!d.join("vmlinuz-1").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_placeholder_map_is_replaced_from_the_kernel_or_the_reason_given() {
        let d = tmp_dir("placeholder");
        // The map cannot be generated from a kernel that is not a bzImage:
        // the error names both files.
        let kernel = d.join("vmlinuz-1");
        std::fs::write(&kernel, b"not a kernel").unwrap();
        let e = generate_map(&kernel, &d.join("System.map-1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("vmlinuz-1") && e.contains("System.map-1"), "{e}");
        assert!(!d.join("System.map-1").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
