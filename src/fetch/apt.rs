//! Talking to the system's apt: package records (`apt-cache show`),
//! downloads (`apt-get download`) and list updates (`apt-get update`).
//!
//! apt does the networking and the authentication: `apt-get download`
//! checks each file against the SHA256 in the `Packages` index, which is
//! itself verified through the repository's signed `InRelease` file.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::FetchError;

/// The architecture of the packages hindsight boots.
pub const ARCH: &str = "amd64";

/// The fields of a package record hindsight uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageInfo {
    /// `Package`, e.g. `linux-image-6.1.0-56-amd64`.
    pub package: String,
    /// `Version`, e.g. `6.1.192-2` or `1:1.35.0-4+deb12u1+b1`.
    pub version: String,
    /// `Filename`: the path in the archive pool.
    pub filename: String,
    /// `Size` of the .deb in bytes.
    pub size: u64,
    /// `SHA256` of the .deb, lowercase hex.
    pub sha256: String,
    /// `Depends`, verbatim (empty if absent).
    pub depends: String,
}

impl PackageInfo {
    /// The file name the package has in the pool (and in hindsight's cache).
    pub fn deb_name(&self) -> String {
        match self.filename.rsplit_once('/') {
            Some((_, base)) => base.to_string(),
            None => self.filename.clone(),
        }
    }

    /// The version without its epoch (`1:1.35.0-4` → `1.35.0-4`), safe in
    /// file names.
    pub fn plain_version(&self) -> &str {
        match self.version.split_once(':') {
            Some((_, v)) => v,
            None => &self.version,
        }
    }
}

/// Parses the first record of `apt-cache show` output into its fields
/// (continuation lines are joined with `\n`).
pub fn parse_record(text: &str) -> HashMap<String, String> {
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if fields.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(v) = last.as_ref().and_then(|k| fields.get_mut(k)) {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.insert(k.trim().to_string(), v.trim().to_string());
            last = Some(k.trim().to_string());
        }
    }
    fields
}

/// Builds a [`PackageInfo`] from a record; `Err` names a missing or bad
/// field.
pub fn package_info(fields: &HashMap<String, String>) -> Result<PackageInfo, String> {
    let get = |k: &str| {
        fields
            .get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| format!("the package record has no '{k}' field"))
    };
    let size = get("Size")?;
    let size = size
        .parse()
        .map_err(|_| format!("the package record has a bad 'Size' field {size:?}"))?;
    let sha256 = get("SHA256")?.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "the package record has a bad 'SHA256' field {sha256:?}"
        ));
    }
    Ok(PackageInfo {
        package: get("Package")?,
        version: get("Version")?,
        filename: get("Filename")?,
        size,
        sha256,
        depends: fields.get("Depends").cloned().unwrap_or_default(),
    })
}

/// The first dependency in a `Depends` field whose name starts with
/// `prefix` (and is not `exclude`), with the version of an `(= v)`
/// constraint if it has one.
pub fn find_dependency(
    depends: &str,
    prefix: &str,
    exclude: &str,
) -> Option<(String, Option<String>)> {
    for alt in depends.split([',', '|']) {
        let alt = alt.trim();
        let (name, rest) = match alt.find([' ', '(']) {
            Some(i) => (&alt[..i], &alt[i..]),
            None => (alt, ""),
        };
        let name = name.split(':').next().unwrap_or(name);
        if !name.starts_with(prefix) || name == exclude {
            continue;
        }
        let version = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|c| c.trim().strip_prefix('='))
            .map(|v| v.trim().to_string());
        return Some((name.to_string(), version));
    }
    None
}

fn spawn_error(tool: &str, e: io::Error) -> FetchError {
    if e.kind() == io::ErrorKind::NotFound {
        FetchError::new(format!(
            "'{tool}' was not found: hindsight fetch uses Debian's apt (apt-cache, apt-get, \
             dpkg-deb) to download the guest's kernel and busybox; run it on Debian or Ubuntu"
        ))
    } else {
        FetchError::new(format!("cannot run '{tool}': {e}"))
    }
}

/// The candidate record of `package` for [`ARCH`], or `None` when apt's
/// package lists do not have it.
pub fn show(package: &str) -> Result<Option<PackageInfo>, FetchError> {
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions", &format!("{package}:{ARCH}")])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error("apt-cache", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.trim().is_empty() {
        return Ok(None);
    }
    let fields = parse_record(&text);
    package_info(&fields)
        .map(Some)
        .map_err(|e| FetchError::new(format!("apt-cache show {package}: {e}")))
}

/// Whether this process runs as root (the owner of `/proc/self` is the
/// effective user).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A command whose stdout goes to our stderr, so apt's progress output is
/// shown without mixing into hindsight's results on stdout.
fn to_stderr(cmd: &mut Command) -> Result<&mut Command, FetchError> {
    let err = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| FetchError::new(format!("cannot duplicate stderr: {e}")))?;
    Ok(cmd.stdin(Stdio::null()).stdout(Stdio::from(err)))
}

/// Runs `apt-get update`, output on stderr.
pub fn update() -> Result<(), FetchError> {
    let status = to_stderr(Command::new("apt-get").arg("update"))?
        .status()
        .map_err(|e| spawn_error("apt-get", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(FetchError::new(format!(
            "'apt-get update' failed ({status})"
        )))
    }
}

/// Runs `apt-get download PACKAGE:ARCH=VERSION` in `dir`, output on stderr.
pub fn download(info: &PackageInfo, dir: &Path) -> Result<(), FetchError> {
    let mut cmd = Command::new("apt-get");
    cmd.arg("download").current_dir(dir);
    if is_root() {
        // As root apt drops to the '_apt' user to download, which cannot
        // write into a private cache directory; it then falls back to root
        // with a warning. Say so up front instead.
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    cmd.arg(format!("{}:{ARCH}={}", info.package, info.version));
    let status = to_stderr(&mut cmd)?
        .status()
        .map_err(|e| spawn_error("apt-get", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(FetchError::new(format!(
            "'apt-get download {}={}' failed ({status}); see apt's messages above (after \
             '404 Not Found', apt's package lists are stale: run '{}apt-get update' and try again)",
            info.package,
            info.version,
            if is_root() { "" } else { "sudo " }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = "\
Package: linux-image-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Installed-Size: 13
Provides: linux-image-generic, linux-latest-modules-6.1.0-56-amd64
Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)
Description: Linux for 64-bit PCs (meta-package)
 This package depends on the latest Linux kernel and modules.
Filename: pool/updates/main/l/linux-signed-amd64/linux-image-amd64_6.1.192-2_amd64.deb
Size: 1480
SHA256: 45457BCFC86C87585800B5656BDF2773B063A3BB95486B0E820D51E870491F8D

Package: linux-image-amd64
Version: 6.1.176-1
";

    #[test]
    fn parses_the_first_record() {
        let f = parse_record(META);
        assert_eq!(f["Version"], "6.1.192-2");
        assert_eq!(
            f["Description"],
            "Linux for 64-bit PCs (meta-package)\nThis package depends on the latest Linux \
             kernel and modules."
        );
        let info = package_info(&f).unwrap();
        assert_eq!(info.package, "linux-image-amd64");
        assert_eq!(info.size, 1480);
        assert_eq!(
            info.sha256,
            "45457bcfc86c87585800b5656bdf2773b063a3bb95486b0e820d51e870491f8d"
        );
        assert_eq!(info.deb_name(), "linux-image-amd64_6.1.192-2_amd64.deb");
        assert_eq!(info.plain_version(), "6.1.192-2");
    }

    #[test]
    fn rejects_incomplete_records() {
        let mut f = parse_record(META);
        f.remove("SHA256");
        assert!(package_info(&f).unwrap_err().contains("SHA256"));
        f.insert("SHA256".into(), "abc".into());
        assert!(package_info(&f).unwrap_err().contains("bad 'SHA256'"));
        let mut f = parse_record(META);
        f.insert("Size".into(), "big".into());
        assert!(package_info(&f).unwrap_err().contains("Size"));
    }

    #[test]
    fn epochs_are_dropped_from_plain_versions() {
        let mut f = parse_record(META);
        f.insert("Version".into(), "1:1.35.0-4+deb12u1+b1".into());
        let info = package_info(&f).unwrap();
        assert_eq!(info.plain_version(), "1.35.0-4+deb12u1+b1");
    }

    #[test]
    fn finds_the_real_kernel_package() {
        let d = "linux-image-6.1.0-56-amd64 (= 6.1.192-2)";
        assert_eq!(
            find_dependency(d, "linux-image-", "linux-image-amd64"),
            Some((
                "linux-image-6.1.0-56-amd64".to_string(),
                Some("6.1.192-2".to_string())
            ))
        );
        let d = "initramfs-tools | linux-initramfs-tool, linux-image-6.12.9-amd64:any";
        assert_eq!(
            find_dependency(d, "linux-image-", "linux-image-amd64"),
            Some(("linux-image-6.12.9-amd64".to_string(), None))
        );
        let d = "linux-image-amd64 (>= 1), linux-image-6.1.0-1-amd64(=1.0)";
        assert_eq!(
            find_dependency(d, "linux-image-", "linux-image-amd64"),
            Some((
                "linux-image-6.1.0-1-amd64".to_string(),
                Some("1.0".to_string())
            ))
        );
        assert_eq!(find_dependency("", "linux-image-", "x"), None);
        assert_eq!(find_dependency("libc6 (>= 2)", "linux-image-", "x"), None);
    }
}
