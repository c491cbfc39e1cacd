//! A streaming reader for the tar archives inside Debian packages (ustar
//! and GNU formats, with GNU long names and pax `path` records), enough to
//! pull a few regular files out of `dpkg-deb --fsys-tarfile` output.

use std::io::{self, Read};

const BLOCK: usize = 512;
/// Largest file this reader will hold in memory.
pub const MAX_FILE: u64 = 512 << 20;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Parses a numeric header field: octal text (NUL/space padded), or GNU
/// base-256 when the high bit of the first byte is set.
fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7F);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// The text of a NUL-terminated field.
fn text(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// `./boot/x` and `/boot/x` both become `boot/x`.
fn normalize(path: &str) -> &str {
    let p = path.strip_prefix("./").unwrap_or(path);
    p.trim_start_matches('/')
}

/// Reads `len` bytes (rounded up to whole blocks) and returns the first `len`.
fn read_data(r: &mut impl Read, len: u64) -> io::Result<Vec<u8>> {
    if len > MAX_FILE {
        return Err(invalid(format!("tar entry of {len} bytes is too large")));
    }
    let padded = (len as usize).div_ceil(BLOCK) * BLOCK;
    let mut buf = vec![0; padded];
    r.read_exact(&mut buf)?;
    buf.truncate(len as usize);
    Ok(buf)
}

fn skip_data(r: &mut impl Read, len: u64) -> io::Result<()> {
    let padded = len.div_ceil(BLOCK as u64) * BLOCK as u64;
    let copied = io::copy(&mut r.take(padded), &mut io::sink())?;
    if copied != padded {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// The `path` record of a pax extended header, if any.
fn pax_path(data: &[u8]) -> Option<String> {
    let mut rest = data;
    let mut found = None;
    // Records are "<len> <key>=<value>\n", len counting the whole record.
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        let rec = rest.get(sp + 1..len)?;
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(v) = rec.strip_prefix(b"path=") {
            found = Some(String::from_utf8_lossy(v).into_owned());
        }
        rest = &rest[len..];
    }
    found
}

/// Reads the tar stream `r` and returns the regular files whose normalized
/// path (no leading `./` or `/`) satisfies `want`, as `(path, contents)`,
/// in archive order. Stops after `limit` matches, at the end-of-archive
/// marker, or at the end of the stream.
pub fn extract(
    mut r: impl Read,
    want: impl Fn(&str) -> bool,
    limit: usize,
) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut long_name: Option<String> = None;
    let mut block = [0u8; BLOCK];
    while out.len() < limit {
        match r.read_exact(&mut block) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        if block.iter().all(|&b| b == 0) {
            break;
        }
        let stored = number(&block[148..156])
            .ok_or_else(|| invalid("tar header with a bad checksum field".into()))?;
        let sum: u64 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if sum != stored {
            return Err(invalid(format!(
                "tar header checksum mismatch (stored {stored}, computed {sum})"
            )));
        }
        let size = number(&block[124..136])
            .ok_or_else(|| invalid("tar header with a bad size field".into()))?;
        let kind = block[156];
        match kind {
            b'L' => {
                let data = read_data(&mut r, size)?;
                long_name = Some(text(&data));
                continue;
            }
            b'x' => {
                let data = read_data(&mut r, size)?;
                if let Some(p) = pax_path(&data) {
                    long_name = Some(p);
                }
                continue;
            }
            _ => {}
        }
        let name = match long_name.take() {
            Some(n) => n,
            None => {
                let name = text(&block[..100]);
                let prefix = text(&block[345..500]);
                if &block[257..262] == b"ustar" && !prefix.is_empty() {
                    format!("{prefix}/{name}")
                } else {
                    name
                }
            }
        };
        let name = normalize(&name).to_string();
        let regular = matches!(kind, b'0' | b'\0' | b'7');
        if regular && want(&name) {
            let data = read_data(&mut r, size)?;
            out.push((name, data));
        } else {
            skip_data(&mut r, size)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One tar header block (ustar), checksum filled in.
    fn header(name: &str, size: usize, kind: u8, prefix: &str) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    fn entry(t: &mut Vec<u8>, name: &str, kind: u8, data: &[u8], prefix: &str) {
        t.extend_from_slice(&header(name, data.len(), kind, prefix));
        t.extend_from_slice(data);
        t.resize(t.len().div_ceil(BLOCK) * BLOCK, 0);
    }

    /// A tar archive of regular files `(path, data)`, with a directory
    /// first, as dpkg-deb writes them.
    pub(crate) fn build(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut t = Vec::new();
        entry(&mut t, "./", b'5', b"", "");
        for (name, data) in files {
            entry(&mut t, name, b'0', data, "");
        }
        t.extend_from_slice(&[0; 2 * BLOCK]);
        t
    }

    #[test]
    fn extracts_wanted_files() {
        let t = build(&[
            ("./boot/System.map-6", b"map"),
            ("./boot/vmlinuz-6", &[7u8; 1000]),
            ("./bin/busybox", b"ELF"),
        ]);
        let got = extract(&t[..], |p| p.starts_with("boot/vmlinuz-"), 5).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "boot/vmlinuz-6");
        assert_eq!(got[0].1, vec![7u8; 1000]);
        let all = extract(&t[..], |_| true, 100).unwrap();
        let names: Vec<&str> = all.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            ["boot/System.map-6", "boot/vmlinuz-6", "bin/busybox"]
        );
    }

    #[test]
    fn stops_at_the_limit_without_reading_further() {
        let mut t = build(&[("a", b"1"), ("b", b"2")]);
        // Garbage after the first file's data must not be looked at.
        let first_end = 3 * BLOCK;
        t.truncate(first_end);
        t.extend_from_slice(&[0xFF; BLOCK]);
        let got = extract(&t[..], |_| true, 1).unwrap();
        assert_eq!(got, [("a".to_string(), b"1".to_vec())]);
        assert!(extract(&t[..], |_| true, 2).is_err());
    }

    #[test]
    fn long_names_prefix_and_pax() {
        let long = format!("./usr/lib/{}/busybox", "d".repeat(120));
        let mut t = Vec::new();
        let mut name = long.clone().into_bytes();
        name.push(0);
        entry(&mut t, "././@LongLink", b'L', &name, "");
        entry(&mut t, "truncated", b'0', b"gnu", "");
        entry(&mut t, "busybox", b'0', b"ustar", "bin");
        let rec = "29 path=./sbin/pax-file-name\n";
        assert_eq!(rec.len(), 29);
        entry(&mut t, "PaxHeader", b'x', rec.as_bytes(), "");
        entry(&mut t, "short", b'0', b"pax", "");
        let got = extract(&t[..], |_| true, 10).unwrap();
        let names: Vec<&str> = got.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(names, [&long[2..], "bin/busybox", "sbin/pax-file-name"]);
        assert_eq!(got[2].1, b"pax");
    }

    #[test]
    fn skips_non_regular_entries_and_detects_corruption() {
        let mut t = Vec::new();
        entry(&mut t, "./bin/sh", b'2', b"", "");
        entry(&mut t, "./bin/busybox", b'0', b"x", "");
        let got = extract(&t[..], |p| p.starts_with("bin/"), 10).unwrap();
        assert_eq!(got.len(), 1);
        t[0] ^= 1;
        let e = extract(&t[..], |_| true, 10).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        // Cut inside data: an error, not a short file.
        let t = build(&[("f", &[1; 600])]);
        assert!(extract(&t[..BLOCK * 3], |_| true, 10).is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(number(b"00000001750\0"), Some(1000));
        assert_eq!(number(b"     17 "), Some(15));
        assert_eq!(number(b"\0\0\0"), Some(0));
        assert_eq!(number(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(number(b"9"), None);
    }
}
