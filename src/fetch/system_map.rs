//! The kernel's System.map: checking one, and generating one from the
//! kernel's own symbol table (kallsyms) when the package's is a stub.
//!
//! Debian's `linux-image-*-amd64` ships `boot/System.map-*` as a
//! placeholder ("The real System.map is in the linux-image-<version>-dbg
//! package", an 860 MB download). The kernel itself carries every symbol
//! `/proc/kallsyms` shows, compressed in its read-only data:
//!
//! | table | contents |
//! |---|---|
//! | `kallsyms_offsets` | one `i32` per symbol (base-relative addresses) |
//! | `kallsyms_relative_base` | `u64` |
//! | `kallsyms_num_syms` | the symbol count N, in an 8-byte slot |
//! | `kallsyms_names` | per symbol: length (1 byte, or 2 when the first has bit 7 set), then token numbers |
//! | `kallsyms_markers` | offset in `kallsyms_names` of every 256th symbol (`u32`, or `u64` in older kernels) |
//! | `kallsyms_token_table` | 256 NUL-terminated strings |
//! | `kallsyms_token_index` | 256 `u16` offsets of those strings |
//!
//! Every table starts 8-aligned. Kernels up to 6.3 put the offsets and
//! relative base before `kallsyms_num_syms`; 6.4 and later put them after
//! the token index. Nothing here relies on symbols (a Debian vmlinux is
//! stripped): the token table is found by its digits (bytes `0`..`9` stand
//! for themselves, so their tokens are 10 consecutive one-character
//! strings) and confirmed by the token index right after it; the symbol
//! count by decoding N names that the markers after them confirm; the
//! addresses by requiring them sorted, as kallsyms keeps them. A symbol's
//! first decoded character is its `nm` type, so each line comes out as
//! System.map has it: `<address> <type> <name>`.
//!
//! With KASLR off (hindsight decompresses the kernel on the host, which
//! bypasses the randomization), these are the addresses the guest runs at.

use std::fmt::Write as _;

/// The symbol every kernel's map has; a map without it is not one.
pub const REQUIRED_SYMBOL: &str = "start_kernel";

/// Checks that `data` is a System.map: lines of `<hex address> <type>
/// <name>` (blank lines allowed) that include [`REQUIRED_SYMBOL`]. Returns
/// the number of symbols, or what is wrong (with the line number).
pub fn check(data: &[u8]) -> Result<usize, String> {
    let text = std::str::from_utf8(data).map_err(|e| format!("not text: {e}"))?;
    let mut count = 0;
    let mut has_required = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let ok = match fields.as_slice() {
            [addr, kind, _name] => {
                (1..=16).contains(&addr.len())
                    && addr.bytes().all(|b| b.is_ascii_hexdigit())
                    && kind.len() == 1
                    && kind.bytes().all(|b| b.is_ascii_graphic())
            }
            _ => false,
        };
        if !ok {
            let shown: String = line.chars().take(100).collect();
            return Err(format!(
                "line {} is not '<hex address> <type> <name>': {shown:?}",
                i + 1
            ));
        }
        has_required |= fields[2] == REQUIRED_SYMBOL;
        count += 1;
    }
    if !has_required {
        return Err(format!(
            "it has no {REQUIRED_SYMBOL} symbol ({count} symbols)"
        ));
    }
    Ok(count)
}

/// Largest symbol count believed (Linux has a few hundred thousand).
const MAX_SYMS: usize = 1 << 22;
/// Smallest symbol count believed: a kernel has thousands.
const MIN_SYMS: usize = 256;
/// How far before the token table the symbol names may start.
const NAMES_WINDOW: usize = 64 << 20;

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        d.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn align8(x: usize) -> usize {
    x.div_ceil(8) * 8
}

/// The token table: where it starts, its 256 tokens, and where the token
/// index after it ends.
struct Tokens<'a> {
    tokens: Vec<&'a [u8]>,
    index_end: usize,
}

/// The 10 consecutive tokens of the digits.
fn digits_pattern() -> [u8; 20] {
    let mut p = [0u8; 20];
    for (i, c) in (b'0'..=b'9').enumerate() {
        p[2 * i] = c;
    }
    p
}

/// The token table whose tokens for `0`..`9` start at `digits`, if the
/// token index that must follow it is there.
fn tokens_at(d: &[u8], digits: usize) -> Option<Tokens<'_>> {
    // Walk back over the 48 tokens before '0' (each ends with a NUL).
    let mut start = digits;
    for _ in 0..usize::from(b'0') {
        let end = start.checked_sub(1)?;
        start = d[..end].iter().rposition(|&b| b == 0).map_or(0, |p| p + 1);
        if end - start > 255 {
            return None;
        }
    }
    let mut tokens = Vec::with_capacity(256);
    let mut index = Vec::with_capacity(512);
    let mut at = start;
    for _ in 0..256 {
        let len = d.get(at..)?.iter().take(256).position(|&b| b == 0)?;
        index.extend_from_slice(&u16::try_from(at - start).ok()?.to_le_bytes());
        tokens.push(&d[at..at + len]);
        at += len + 1;
    }
    let index_at = align8(at);
    (d.get(index_at..index_at + 512)? == &index[..]).then_some(Tokens {
        tokens,
        index_end: index_at + 512,
    })
}

/// Finds the token table (first occurrence confirmed by its index), and
/// the offset where it starts.
fn find_tokens(d: &[u8]) -> Option<(usize, Tokens<'_>)> {
    let pat = digits_pattern();
    let mut from = 0;
    while let Some(p) = d.get(from..)?.windows(pat.len()).position(|w| w == pat) {
        let at = from + p;
        if let Some(t) = tokens_at(d, at) {
            let start = at - t.tokens[..48].iter().map(|t| t.len() + 1).sum::<usize>();
            return Some((start, t));
        }
        from = at + 1;
    }
    None
}

/// The decoded names of kallsyms_names starting at `names`, for `n`
/// symbols, with the byte offset of every 256th entry and where the
/// names end. `None` as soon as something does not decode to a symbol.
fn decode_names(
    d: &[u8],
    tokens: &[&[u8]],
    names: usize,
    n: usize,
) -> Option<(Vec<String>, Vec<u64>, usize)> {
    let mut out = Vec::with_capacity(n);
    let mut markers = Vec::with_capacity(n.div_ceil(256));
    let mut at = names;
    for i in 0..n {
        if i % 256 == 0 {
            markers.push((at - names) as u64);
        }
        let mut len = usize::from(*d.get(at)?);
        at += 1;
        if len & 0x80 != 0 {
            len = (len & 0x7f) | usize::from(*d.get(at)?) << 7;
            at += 1;
        }
        let mut sym = Vec::new();
        for &b in d.get(at..at + len)? {
            sym.extend_from_slice(tokens[usize::from(b)]);
        }
        at += len;
        // A type letter (or '?'), then a name of printable characters.
        let good = sym.len() >= 2
            && (sym[0].is_ascii_alphabetic() || sym[0] == b'?')
            && sym.iter().all(|b| b.is_ascii_graphic());
        if !good {
            return None;
        }
        out.push(String::from_utf8(sym).ok()?);
    }
    Some((out, markers, at))
}

/// Whether `markers` are stored at `at` as `u32` or `u64` values.
fn markers_match(d: &[u8], at: usize, markers: &[u64]) -> bool {
    let as32 = markers
        .iter()
        .enumerate()
        .all(|(i, &m)| u32_at(d, at + 4 * i).map(u64::from) == Some(m));
    as32 || markers
        .iter()
        .enumerate()
        .all(|(i, &m)| u64_at(d, at + 8 * i) == Some(m))
}

/// The symbol names: finds `kallsyms_num_syms` (an 8-byte slot) before
/// the token table such that N names decode after it and the markers after
/// them agree. Returns the names and the offset of `kallsyms_num_syms`.
fn find_names(d: &[u8], table: usize, tokens: &[&[u8]]) -> Option<(Vec<String>, usize)> {
    let lowest = table.saturating_sub(NAMES_WINDOW);
    let mut q = (table & !7).checked_sub(8)?;
    loop {
        if let (Some(n), Some(0)) = (u32_at(d, q), u32_at(d, q + 4)) {
            let n = n as usize;
            // Cheap test first: a few names must decode.
            if (MIN_SYMS..=MAX_SYMS).contains(&n) && decode_names(d, tokens, q + 8, 16).is_some() {
                if let Some((names, markers, end)) = decode_names(d, tokens, q + 8, n) {
                    if end <= table && markers_match(d, align8(end), &markers) {
                        return Some((names, q));
                    }
                }
            }
        }
        if q < lowest + 8 {
            return None;
        }
        q -= 8;
    }
}

/// Addresses from `kallsyms_offsets` at `offsets` and the relative base:
/// with negative offsets present, the x86-64 scheme (absolute per-CPU
/// symbols: non-negative offsets are addresses, negative ones count down
/// from base - 1); otherwise base + offset. `None` unless sorted and the
/// base is a kernel address.
fn addresses(d: &[u8], offsets: usize, base: u64, n: usize) -> Option<Vec<u64>> {
    if base < 0xffff_8000_0000_0000 {
        return None;
    }
    let raw: Vec<i32> = (0..n)
        .map(|i| u32_at(d, offsets + 4 * i).map(|v| v as i32))
        .collect::<Option<_>>()?;
    let absolute_percpu = raw.iter().any(|&o| o < 0);
    let addrs: Vec<u64> = raw
        .iter()
        .map(|&o| match (absolute_percpu, o >= 0) {
            (true, true) => o as u64,
            (true, false) => base - 1 - i64::from(o) as u64,
            (false, _) => base + u64::from(o as u32),
        })
        .collect();
    addrs.windows(2).all(|w| w[0] <= w[1]).then_some(addrs)
}

/// A System.map (`<16 hex digits> <type> <name>` lines, by address) built
/// from the kallsyms tables in `image`, a decompressed kernel (vmlinux,
/// symbols stripped or not). The error says which table was not found.
pub fn from_kallsyms(image: &[u8]) -> Result<String, String> {
    let (table, tok) = find_tokens(image).ok_or(
        "no kallsyms token table in the kernel image (was it built without CONFIG_KALLSYMS?)",
    )?;
    let (names, num_syms) = find_names(image, table, &tok.tokens)
        .ok_or("the kernel image has a kallsyms token table but no symbol names before it")?;
    let n = names.len();
    // Up to 6.3: offsets, relative base, then num_syms. From 6.4: after
    // the token index, offsets then the relative base.
    let before = num_syms
        .checked_sub(8 + 4 * n)
        .map(|o| o & !7)
        .and_then(|offsets| addresses(image, offsets, u64_at(image, num_syms - 8)?, n));
    let after = || {
        let offsets = tok.index_end;
        let base = u64_at(image, align8(offsets + 4 * n))?;
        addresses(image, offsets, base, n)
    };
    let addrs = before.or_else(after).ok_or(
        "the kernel image has kallsyms names but no sorted kallsyms_offsets table beside them",
    )?;
    let mut map = String::with_capacity(n * 40);
    for (addr, sym) in addrs.iter().zip(&names) {
        let (kind, name) = sym.split_at(1);
        let _ = writeln!(map, "{addr:016x} {kind} {name}");
    }
    Ok(map)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Which layout a synthetic kernel image uses.
    #[derive(Clone, Copy)]
    pub(crate) enum Layout {
        /// Linux up to 6.3: offsets and base before num_syms, u32 markers.
        Before,
        /// Linux 6.4 and later: offsets and base after the token index.
        After,
    }

    fn pad8(v: &mut Vec<u8>) {
        v.resize(align8(v.len()), 0);
    }

    /// A kernel image with kallsyms tables for `syms` (address, "Tname"),
    /// compressed with one multi-character token ("_sys" as byte 0x80),
    /// absolute per-CPU addresses (below the base) kept as positive offsets.
    pub(crate) fn image(syms: &[(u64, &str)], layout: Layout) -> Vec<u8> {
        let base = 0xffff_ffff_8100_0000u64;
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        tokens[0] = b"\x01".to_vec(); // never used
        tokens[0x80] = b"_sys".to_vec();
        let compress = |s: &str| -> Vec<u8> {
            let b = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if b[i..].starts_with(b"_sys") {
                    out.push(0x80);
                    i += 4;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            out
        };
        let offsets: Vec<u8> = syms
            .iter()
            .flat_map(|&(a, _)| {
                let o = if a < base {
                    a as i32
                } else {
                    -((a - base + 1) as i64) as i32
                };
                o.to_le_bytes()
            })
            .collect();
        let mut img = Vec::new();
        // A decoy: the digits pattern without a token index after it.
        img.extend_from_slice(b"junk\x000\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00more");
        img.resize(4096, 0xcc);
        if let Layout::Before = layout {
            img.extend_from_slice(&offsets);
            pad8(&mut img);
            img.extend_from_slice(&base.to_le_bytes());
        }
        img.extend_from_slice(&(syms.len() as u64).to_le_bytes());
        let names_at = img.len();
        let mut markers = Vec::new();
        for (i, (_, s)) in syms.iter().enumerate() {
            if i % 256 == 0 {
                markers.push((img.len() - names_at) as u32);
            }
            let c = compress(s);
            if c.len() > 0x7f {
                img.push(0x80 | (c.len() & 0x7f) as u8);
                img.push((c.len() >> 7) as u8);
            } else {
                img.push(c.len() as u8);
            }
            img.extend_from_slice(&c);
        }
        pad8(&mut img);
        for m in markers {
            img.extend_from_slice(&m.to_le_bytes());
        }
        pad8(&mut img);
        let table = img.len();
        let mut index = Vec::new();
        for t in &tokens {
            index.push((img.len() - table) as u16);
            img.extend_from_slice(t);
            img.push(0);
        }
        pad8(&mut img);
        for i in index {
            img.extend_from_slice(&i.to_le_bytes());
        }
        if let Layout::After = layout {
            pad8(&mut img);
            img.extend_from_slice(&offsets);
            pad8(&mut img);
            img.extend_from_slice(&base.to_le_bytes());
        }
        img.resize(img.len() + 4096, 0xcc);
        img
    }

    fn sample() -> Vec<(u64, String)> {
        let mut syms = vec![
            (0, "Afixed_percpu_data".to_string()),
            (0x2000, "Airq_stack".to_string()),
            (0xffff_ffff_8100_0000, "T_text".to_string()),
        ];
        // Enough symbols for several markers, one with a long name.
        for i in 0..700u64 {
            syms.push((0xffff_ffff_8100_1000 + i * 16, format!("t__x64_sys_f{i}")));
        }
        syms.push((0xffff_ffff_8200_0000, format!("T{}", "x".repeat(200))));
        syms.push((0xffff_ffff_8300_0000, "Tstart_kernel".to_string()));
        syms.push((0xffff_ffff_8300_0100, "Djiffies_64".to_string()));
        syms
    }

    #[test]
    fn generates_the_map_from_kallsyms_in_both_layouts() {
        let syms = sample();
        let refs: Vec<(u64, &str)> = syms.iter().map(|(a, s)| (*a, s.as_str())).collect();
        for layout in [Layout::Before, Layout::After] {
            let map = from_kallsyms(&image(&refs, layout)).unwrap();
            let lines: Vec<&str> = map.lines().collect();
            assert_eq!(lines.len(), syms.len());
            assert_eq!(lines[0], "0000000000000000 A fixed_percpu_data");
            assert_eq!(lines[1], "0000000000002000 A irq_stack");
            assert_eq!(lines[2], "ffffffff81000000 T _text");
            assert_eq!(lines[3], "ffffffff81001000 t __x64_sys_f0");
            assert!(map.contains("ffffffff83000000 T start_kernel\n"), "{map}");
            assert!(map.contains(&format!("ffffffff82000000 T {}\n", "x".repeat(200))));
            assert_eq!(*lines.last().unwrap(), "ffffffff83000100 D jiffies_64");
            assert_eq!(check(map.as_bytes()), Ok(syms.len()));
        }
    }

    #[test]
    fn images_without_kallsyms_are_refused_with_the_reason() {
        let e = from_kallsyms(&[0xcc; 10000]).unwrap_err();
        assert!(e.contains("no kallsyms token table"), "{e}");
        // Tokens but the names damaged: a marker no longer agrees.
        let syms = sample();
        let refs: Vec<(u64, &str)> = syms.iter().map(|(a, s)| (*a, s.as_str())).collect();
        let mut img = image(&refs, Layout::After);
        let n_at = 4096;
        assert_eq!(u32_at(&img, n_at), Some(syms.len() as u32));
        img[n_at + 8] = 0x7f; // first name's length
        let e = from_kallsyms(&img).unwrap_err();
        assert!(e.contains("no symbol names"), "{e}");
        // Unsorted addresses are not believed.
        let mut bad = refs.clone();
        bad.swap(3, 4);
        let e = from_kallsyms(&image(&bad, Layout::Before)).unwrap_err();
        assert!(e.contains("no sorted kallsyms_offsets"), "{e}");
    }

    #[test]
    fn map_check_accepts_maps_and_explains_the_rest() {
        let good = b"ffffffff81000000 T _text\n\nffffffff83079e46 T start_kernel\n0 A x\n";
        assert_eq!(check(good), Ok(3));
        // Debian's placeholder.
        let stub = b"ffffffffffffffff B The real System.map is in the \
                     linux-image-<version>-dbg package\n";
        let e = check(stub).unwrap_err();
        assert!(
            e.contains("line 1 is not '<hex address> <type> <name>'"),
            "{e}"
        );
        let e = check(b"ffffffff81000000 T _text\n").unwrap_err();
        assert!(e.contains("no start_kernel symbol (1 symbols)"), "{e}");
        let e = check(b"ffffffff81000000 T start_kernel\nzz T x\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = check(b"ffffffff81000000 TT start_kernel\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        assert!(check(b"\xff\xfe").unwrap_err().contains("not text"));
        assert!(check(b"").is_err());
    }
}
