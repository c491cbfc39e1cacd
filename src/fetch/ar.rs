//! A reader for Unix `ar` archives, the container of Debian packages.
//!
//! Format: the global header `!<arch>\n`, then for each member a 60-byte
//! header (name 16, mtime 12, uid 6, gid 6, mode 8, decimal size 10, the
//! terminator "`\n") followed by the data, padded to an even length with
//! `\n`. Names are space-padded; GNU archives end them with `/`.
//!
//! A `.deb` (`man 5 deb`) holds, in this order, `debian-binary` ("2.0\n"),
//! `control.tar[.gz|.xz|.zst]` and `data.tar[.gz|.xz|.zst|.bz2]`.

/// The global header of every `ar` archive.
pub const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
const MEMBER_HEADER_LEN: usize = 60;

/// One member of an archive, borrowing its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member<'a> {
    /// The name, without padding or a GNU trailing `/`.
    pub name: String,
    /// File offset of the member's data.
    pub offset: usize,
    /// The member's data.
    pub data: &'a [u8],
}

/// Lists the members of an `ar` archive; `Err` describes the first problem.
pub fn members(archive: &[u8]) -> Result<Vec<Member<'_>>, String> {
    if !archive.starts_with(AR_MAGIC) {
        return Err("not an ar archive (no \"!<arch>\" header)".into());
    }
    let mut out = Vec::new();
    let mut off = AR_MAGIC.len();
    while off < archive.len() {
        let h = archive
            .get(off..off + MEMBER_HEADER_LEN)
            .ok_or_else(|| format!("ar member header at offset {off} is cut short"))?;
        if &h[58..60] != b"`\n" {
            return Err(format!(
                "ar member header at offset {off} has a bad terminator"
            ));
        }
        let name = std::str::from_utf8(&h[..16])
            .map_err(|_| format!("ar member name at offset {off} is not text"))?
            .trim_end_matches(' ');
        let name = name.strip_suffix('/').unwrap_or(name).to_string();
        let size_text = std::str::from_utf8(&h[48..58])
            .unwrap_or("")
            .trim_end_matches(' ');
        let size: usize = size_text
            .parse()
            .map_err(|_| format!("ar member '{name}' at offset {off}: bad size {size_text:?}"))?;
        let start = off + MEMBER_HEADER_LEN;
        let data = start
            .checked_add(size)
            .and_then(|end| archive.get(start..end))
            .ok_or_else(|| {
                format!(
                    "ar member '{name}' at offset {off}: {size} bytes run past the end of the \
                     {}-byte file",
                    archive.len()
                )
            })?;
        out.push(Member {
            name,
            offset: start,
            data,
        });
        off = start + size + (size & 1);
    }
    Ok(out)
}

/// Checks that `deb` is a binary Debian package (format 2.x) and returns the
/// name of its data member (e.g. `data.tar.xz`).
pub fn check_deb(deb: &[u8]) -> Result<String, String> {
    let m = members(deb)?;
    match m.first() {
        Some(first) if first.name == "debian-binary" => {
            if !first.data.starts_with(b"2.") {
                return Err(format!(
                    "unsupported .deb format version {:?}",
                    String::from_utf8_lossy(first.data).trim()
                ));
            }
        }
        _ => return Err("not a Debian package: the first member is not 'debian-binary'".into()),
    }
    if !m.iter().any(|x| x.name.starts_with("control.tar")) {
        return Err("not a Debian package: no control.tar member".into());
    }
    m.iter()
        .find(|x| x.name.starts_with("data.tar"))
        .map(|x| x.name.clone())
        .ok_or_else(|| "not a Debian package: no data.tar member".into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn header(name: &str, size: usize) -> Vec<u8> {
        let h = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name, 0, 0, 0, 100644, size
        );
        assert_eq!(h.len(), 60);
        h.into_bytes()
    }

    /// An ar archive of `(name, data)` members, written independently of
    /// the reader.
    pub(crate) fn build(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut a = AR_MAGIC.to_vec();
        for (name, data) in members {
            a.extend(header(name, data.len()));
            a.extend_from_slice(data);
            if data.len() % 2 == 1 {
                a.push(b'\n');
            }
        }
        a
    }

    #[test]
    fn lists_members_with_padding() {
        let a = build(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz/", b"odd"),
            ("data.tar.xz", b"payload!"),
        ]);
        let m = members(&a).unwrap();
        let names: Vec<&str> = m.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["debian-binary", "control.tar.xz", "data.tar.xz"]);
        assert_eq!(m[0].data, b"2.0\n");
        assert_eq!(m[0].offset, 68);
        assert_eq!(m[1].data, b"odd");
        assert_eq!(m[2].data, b"payload!");
        assert_eq!(check_deb(&a).unwrap(), "data.tar.xz");
    }

    #[test]
    fn rejects_malformed_archives() {
        assert!(members(b"not an archive").is_err());
        assert_eq!(members(AR_MAGIC).unwrap(), []);
        let good = build(&[("a", b"1234")]);
        // Cut short inside the data and inside the header.
        assert!(members(&good[..good.len() - 1])
            .unwrap_err()
            .contains("past the end"));
        assert!(members(&good[..20]).unwrap_err().contains("cut short"));
        let mut bad_term = good.clone();
        bad_term[8 + 58] = b'X';
        assert!(members(&bad_term).unwrap_err().contains("terminator"));
        let mut bad_size = good;
        bad_size[8 + 48] = b'x';
        assert!(members(&bad_size).unwrap_err().contains("bad size"));
    }

    #[test]
    fn checks_deb_structure() {
        let no_data = build(&[("debian-binary", b"2.0\n"), ("control.tar.gz", b"c")]);
        assert!(check_deb(&no_data).unwrap_err().contains("no data.tar"));
        let wrong_first = build(&[("control.tar.gz", b"c"), ("data.tar.gz", b"d")]);
        assert!(check_deb(&wrong_first)
            .unwrap_err()
            .contains("debian-binary"));
        let v3 = build(&[
            ("debian-binary", b"3.0\n"),
            ("control.tar.gz", b"c"),
            ("data.tar.gz", b"d"),
        ]);
        assert!(check_deb(&v3).unwrap_err().contains("3.0"));
        let zst = build(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.zst", b"c"),
            ("data.tar.zst", b"d"),
        ]);
        assert_eq!(check_deb(&zst).unwrap(), "data.tar.zst");
    }
}
