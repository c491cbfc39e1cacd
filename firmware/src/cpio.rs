//! A writer for "newc" cpio archives, the format of Linux initramfs images.
//!
//! The format (`Documentation/driver-api/early-userspace/buffer-format.rst`
//! in the kernel, and `man 5 cpio`): each entry is a 110-byte ASCII header
//! (the magic `070701`, then 13 fields of 8 hexadecimal digits: ino, mode,
//! uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
//! rdevminor, namesize, check), the NUL-terminated path name, padding to a
//! multiple of 4 bytes, the file data and padding to a multiple of 4 again.
//! The archive ends with an entry named `TRAILER!!!`.
//!
//! Paths are stored relative (`bin/busybox`), as the kernel and GNU cpio
//! expect; a leading `/` given to the writer is removed. Every entry is owned
//! by root with mtime 0, so the same entries always give the same bytes.
//!
//! ```
//! use hindsight_firmware::cpio::CpioWriter;
//!
//! let mut w = CpioWriter::new();
//! w.dir("/dev", 0o755)?;
//! w.char_dev("/dev/console", 0o600, 5, 1)?;
//! w.file("/init", 0o755, b"#!/bin/sh\nexec sh\n")?;
//! w.symlink("/bin/sh", "busybox")?;
//! let archive = w.finish();
//! assert!(archive.starts_with(b"070701"));
//! assert_eq!(archive.len() % 4, 0);
//! # Ok::<(), hindsight_firmware::cpio::CpioError>(())
//! ```

use std::fmt;

/// The magic at the start of every newc header (no checksum variant).
pub const NEWC_MAGIC: &[u8; 6] = b"070701";
/// Length of a newc header: the magic and 13 eight-digit fields.
pub const HEADER_LEN: usize = 110;
/// Name of the last entry of every archive.
pub const TRAILER: &str = "TRAILER!!!";

/// File type bits of `st_mode` (`S_IFMT`).
pub const S_IFMT: u32 = 0o170_000;
/// Directory.
pub const S_IFDIR: u32 = 0o040_000;
/// Regular file.
pub const S_IFREG: u32 = 0o100_000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120_000;
/// Character device.
pub const S_IFCHR: u32 = 0o020_000;
/// Block device.
pub const S_IFBLK: u32 = 0o060_000;

/// Why an entry cannot be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpioError {
    /// The path is empty (or only slashes), contains a NUL byte, or has a
    /// `.` or `..` component.
    BadPath(String),
    /// Permission bits outside `0o7777`.
    BadMode {
        /// The entry's path.
        path: String,
        /// The mode given.
        mode: u32,
    },
    /// File data or symlink target longer than the 32-bit size field allows.
    TooLarge {
        /// The entry's path.
        path: String,
        /// Its length in bytes.
        len: u64,
    },
}

impl fmt::Display for CpioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpioError::BadPath(p) => write!(
                f,
                "cpio: invalid path {p:?} (empty, NUL byte, or '.'/'..' component)"
            ),
            CpioError::BadMode { path, mode } => write!(
                f,
                "cpio: '{path}': permission bits {mode:#o} are outside 0o7777"
            ),
            CpioError::TooLarge { path, len } => write!(
                f,
                "cpio: '{path}': {len} bytes do not fit the 32-bit size field of a newc header"
            ),
        }
    }
}

impl std::error::Error for CpioError {}

/// Builds a newc cpio archive in memory.
#[derive(Debug)]
pub struct CpioWriter {
    buf: Vec<u8>,
    next_ino: u32,
}

impl Default for CpioWriter {
    fn default() -> Self {
        Self::new()
    }
}

/// The fields of one header that vary between entries.
struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    filesize: u32,
    rdev: (u32, u32),
}

/// Checks a path and returns it without leading slashes.
fn clean_path(path: &str) -> Result<&str, CpioError> {
    let p = path.trim_start_matches('/');
    let bad = p.is_empty()
        || p.contains('\0')
        || p.split('/').any(|c| c == "." || c == "..")
        || p == TRAILER;
    if bad {
        Err(CpioError::BadPath(path.to_string()))
    } else {
        Ok(p.trim_end_matches('/'))
    }
}

fn check_perm(path: &str, perm: u32) -> Result<(), CpioError> {
    if perm & !0o7777 != 0 {
        Err(CpioError::BadMode {
            path: path.to_string(),
            mode: perm,
        })
    } else {
        Ok(())
    }
}

fn size32(path: &str, len: usize) -> Result<u32, CpioError> {
    u32::try_from(len).map_err(|_| CpioError::TooLarge {
        path: path.to_string(),
        len: len as u64,
    })
}

impl CpioWriter {
    /// An empty archive.
    pub fn new() -> Self {
        CpioWriter {
            buf: Vec::new(),
            next_ino: 1,
        }
    }

    fn pad4(&mut self) {
        while self.buf.len() & 3 != 0 {
            self.buf.push(0);
        }
    }

    fn push_header(&mut self, h: &Header<'_>, ino: u32) {
        // The name field counts the terminating NUL.
        let namesize = h.name.len() as u32 + 1;
        self.buf.extend_from_slice(NEWC_MAGIC);
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
        // rdevmajor, rdevminor, namesize, check.
        let fields = [
            ino, h.mode, 0, 0, h.nlink, 0, h.filesize, 0, 0, h.rdev.0, h.rdev.1, namesize, 0,
        ];
        for v in fields {
            self.buf.extend_from_slice(format!("{v:08X}").as_bytes());
        }
        self.buf.extend_from_slice(h.name.as_bytes());
        self.buf.push(0);
        self.pad4();
    }

    fn push_entry(&mut self, h: &Header<'_>, data: &[u8]) {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.push_header(h, ino);
        self.buf.extend_from_slice(data);
        self.pad4();
    }

    /// Adds a directory with permission bits `perm` (e.g. `0o755`).
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<(), CpioError> {
        let name = clean_path(path)?;
        check_perm(path, perm)?;
        let h = Header {
            name,
            mode: S_IFDIR | perm,
            nlink: 2,
            filesize: 0,
            rdev: (0, 0),
        };
        self.push_entry(&h, &[]);
        Ok(())
    }

    /// Adds a regular file with permission bits `perm` and contents `data`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<(), CpioError> {
        let name = clean_path(path)?;
        check_perm(path, perm)?;
        let h = Header {
            name,
            mode: S_IFREG | perm,
            nlink: 1,
            filesize: size32(path, data.len())?,
            rdev: (0, 0),
        };
        self.push_entry(&h, data);
        Ok(())
    }

    /// Adds a symbolic link at `path` pointing to `target` (stored verbatim,
    /// relative or absolute).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        let name = clean_path(path)?;
        if target.is_empty() || target.contains('\0') {
            return Err(CpioError::BadPath(target.to_string()));
        }
        let h = Header {
            name,
            mode: S_IFLNK | 0o777,
            nlink: 1,
            filesize: size32(path, target.len())?,
            rdev: (0, 0),
        };
        self.push_entry(&h, target.as_bytes());
        Ok(())
    }

    fn device(
        &mut self,
        path: &str,
        kind: u32,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        let name = clean_path(path)?;
        check_perm(path, perm)?;
        let h = Header {
            name,
            mode: kind | perm,
            nlink: 1,
            filesize: 0,
            rdev: (major, minor),
        };
        self.push_entry(&h, &[]);
        Ok(())
    }

    /// Adds a character device node, e.g. `/dev/console` (5, 1) or
    /// `/dev/null` (1, 3).
    pub fn char_dev(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.device(path, S_IFCHR, perm, major, minor)
    }

    /// Adds a block device node.
    pub fn block_dev(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.device(path, S_IFBLK, perm, major, minor)
    }

    /// Appends the `TRAILER!!!` entry and returns the archive. Its length
    /// is a multiple of 4.
    pub fn finish(mut self) -> Vec<u8> {
        let h = Header {
            name: TRAILER,
            mode: 0,
            nlink: 1,
            filesize: 0,
            rdev: (0, 0),
        };
        self.push_header(&h, 0);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry as an independent reader sees it.
    #[derive(Debug)]
    struct Entry {
        offset: usize,
        ino: u32,
        mode: u32,
        uid: u32,
        gid: u32,
        nlink: u32,
        mtime: u32,
        rdev: (u32, u32),
        check: u32,
        name: String,
        data: Vec<u8>,
    }

    fn align4(n: usize) -> usize {
        (n + 3) & !3
    }

    /// A minimal newc reader written from the format description, not from
    /// the writer: returns every entry including the trailer, and checks the
    /// magic, NUL terminator and zero padding on the way.
    fn parse(a: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut off = 0;
        loop {
            assert_eq!(off % 4, 0, "entry at {off} is not 4-byte aligned");
            let h = &a[off..off + 110];
            assert_eq!(&h[..6], b"070701", "magic at {off}");
            let field = |i: usize| {
                let s = std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap();
                assert!(
                    s.bytes().all(|b| b.is_ascii_hexdigit()),
                    "field {i} {s:?} is not hex"
                );
                u32::from_str_radix(s, 16).unwrap()
            };
            let namesize = field(11) as usize;
            let filesize = field(6) as usize;
            let name_start = off + 110;
            let name_end = name_start + namesize;
            assert_eq!(a[name_end - 1], 0, "name not NUL-terminated");
            let name = String::from_utf8(a[name_start..name_end - 1].to_vec()).unwrap();
            let data_start = align4(name_end);
            assert!(a[name_end..data_start].iter().all(|&b| b == 0));
            let data_end = data_start + filesize;
            let next = align4(data_end);
            assert!(a[data_end..next].iter().all(|&b| b == 0));
            let e = Entry {
                offset: off,
                ino: field(0),
                mode: field(1),
                uid: field(2),
                gid: field(3),
                nlink: field(4),
                mtime: field(5),
                rdev: (field(9), field(10)),
                check: field(12),
                name,
                data: a[data_start..data_end].to_vec(),
            };
            assert_eq!((field(7), field(8)), (0, 0), "devmajor/devminor");
            let last = e.name == TRAILER;
            out.push(e);
            off = next;
            if last {
                assert_eq!(off, a.len(), "bytes after the trailer");
                return out;
            }
        }
    }

    #[test]
    fn empty_archive_is_just_the_trailer() {
        let a = CpioWriter::new().finish();
        // 110 + "TRAILER!!!\0" (11) = 121, padded to 124.
        assert_eq!(a.len(), 124);
        let e = parse(&a);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].name, "TRAILER!!!");
        assert_eq!(e[0].nlink, 1);
        assert_eq!(e[0].mode, 0);
        assert!(e[0].data.is_empty());
    }

    #[test]
    fn header_is_ascii_hex_with_exact_layout() {
        let mut w = CpioWriter::new();
        w.file("/init", 0o755, b"hello").unwrap();
        let a = w.finish();
        let expect = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}init\0",
            1, 0o100_755, 0, 0, 1, 0, 5, 0, 0, 0, 0, 5, 0
        );
        assert_eq!(&a[..expect.len()], expect.as_bytes());
        // 110 + 5 = 115, padded to 116; then 5 bytes of data padded to 8.
        assert_eq!(&a[116..121], b"hello");
        assert_eq!(&a[121..124], &[0, 0, 0]);
        assert_eq!(&a[124..130], b"070701");
    }

    #[test]
    fn round_trips_every_entry_kind() {
        let mut w = CpioWriter::new();
        w.dir("/dev", 0o755).unwrap();
        w.dir("tmp/", 0o1777).unwrap();
        w.char_dev("/dev/console", 0o600, 5, 1).unwrap();
        w.char_dev("/dev/null", 0o666, 1, 3).unwrap();
        w.block_dev("/dev/vda", 0o660, 254, 0).unwrap();
        w.file("/bin/busybox", 0o755, &[0x7F, b'E', b'L', b'F', 2, 1])
            .unwrap();
        w.file("/empty", 0o644, b"").unwrap();
        w.symlink("/bin/sh", "busybox").unwrap();
        let a = w.finish();
        assert_eq!(a.len() % 4, 0);
        let e = parse(&a);
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "tmp",
                "dev/console",
                "dev/null",
                "dev/vda",
                "bin/busybox",
                "empty",
                "bin/sh",
                "TRAILER!!!"
            ]
        );
        for x in &e {
            assert_eq!(x.offset % 4, 0);
            assert_eq!((x.uid, x.gid, x.mtime, x.check), (0, 0, 0, 0));
        }
        // Inode numbers are distinct and non-zero for real entries.
        let mut inos: Vec<u32> = e[..e.len() - 1].iter().map(|x| x.ino).collect();
        inos.sort_unstable();
        inos.dedup();
        assert_eq!(inos.len(), e.len() - 1);
        assert!(!inos.contains(&0));

        assert_eq!(e[0].mode, S_IFDIR | 0o755);
        assert_eq!(e[0].nlink, 2);
        assert_eq!(e[1].mode, S_IFDIR | 0o1777);
        assert_eq!(e[2].mode, S_IFCHR | 0o600);
        assert_eq!(e[2].rdev, (5, 1));
        assert_eq!(e[3].mode, S_IFCHR | 0o666);
        assert_eq!(e[3].rdev, (1, 3));
        assert_eq!(e[4].mode & S_IFMT, S_IFBLK);
        assert_eq!(e[4].rdev, (254, 0));
        assert_eq!(e[5].mode, S_IFREG | 0o755);
        assert_eq!(e[5].data, [0x7F, b'E', b'L', b'F', 2, 1]);
        assert_eq!(e[6].mode, S_IFREG | 0o644);
        assert!(e[6].data.is_empty());
        assert_eq!(e[7].mode, S_IFLNK | 0o777);
        assert_eq!(e[7].data, b"busybox");
    }

    #[test]
    fn alignment_holds_for_every_name_and_data_length() {
        for name_len in 1..=8 {
            for data_len in 0..=8 {
                let mut w = CpioWriter::new();
                let name = "n".repeat(name_len);
                let data = vec![0xAB; data_len];
                w.file(&name, 0o644, &data).unwrap();
                w.file("second", 0o644, b"x").unwrap();
                let a = w.finish();
                let e = parse(&a);
                assert_eq!(e[0].name, name);
                assert_eq!(e[0].data, data);
                assert_eq!(e[1].name, "second");
                assert_eq!(e[1].data, b"x");
            }
        }
    }

    #[test]
    fn same_entries_give_same_bytes() {
        let build = || {
            let mut w = CpioWriter::new();
            w.dir("a", 0o755).unwrap();
            w.file("a/b", 0o600, b"data").unwrap();
            w.finish()
        };
        assert_eq!(build(), build());
    }

    #[test]
    fn rejects_bad_entries() {
        let mut w = CpioWriter::new();
        for p in ["", "/", "//", "a/../b", "./x", "a\0b", "TRAILER!!!"] {
            assert!(
                matches!(w.file(p, 0o644, b""), Err(CpioError::BadPath(_))),
                "{p:?}"
            );
        }
        assert!(matches!(
            w.dir("d", 0o10_755),
            Err(CpioError::BadMode { .. })
        ));
        assert!(w.symlink("l", "").is_err());
        assert!(w.symlink("l", "a\0").is_err());
        // Nothing was written by the failed calls.
        assert_eq!(parse(&w.finish()).len(), 1);
        assert!(CpioError::BadPath("x".into()).to_string().contains("\"x\""));
    }
}
