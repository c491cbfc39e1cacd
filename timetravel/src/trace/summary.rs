//! The encoding of a state summary ([`StateSummary`], computed by
//! `hindsight-machine`) inside a `StateSummary` record (tag 5, format
//! version 2; docs/trace-format.md, "State summaries"):
//!
//! | field | encoding |
//! |---|---|
//! | since | `u64`: count of the previous summary; 2^64−1 for none |
//! | vCPUs | `u16` count (at least 1), then per vCPU: 16 GPRs, RIP, RFLAGS (`u64` each), 6 selectors (`u16` each, ES CS SS DS FS GS), 6 bases, CR0, CR2, CR3, CR4, CR8, EFER, icount (`u64` each), then its parts |
//! | parts | `u16` count, then per part: `name`, `u64` hash; names unique in the list |
//! | region shift | `u8`, 12 to 30 |
//! | region count | `u32` *n* |
//! | zone shift | `u8`, region shift to 40 |
//! | zone count | `u32` *z* = ⌈*n* / 2^(zone shift − region shift)⌉ |
//! | zone bitmap | ⌈*z*/8⌉ bytes; bit *i* mod 8 of byte *i*/8 set: zone *i* holds a non-zero page; bits past *z* zero |
//! | zone hashes | `u64` per set bit, in zone order; never 0 |
//! | regions | `u32` count, then per region `u32` index, `u64` hash (0: all zero); strictly ascending, below *n* |
//! | pages | `u32` count, then per page `u32` page number (address / 4096), `u64` page hash; strictly ascending, inside the regions, outside the undetailed ones |
//! | undetailed | `u32` count, then `u32` region indices, strictly ascending, below *n* |
//!
//! A summary that breaks a rule is corruption of its chunk.

use hindsight_machine::state_summary::{PartHash, SegmentSummary, VcpuSummary};
use hindsight_machine::StateSummary;

use super::codec::{Dec, DecodeError, Put};

/// The `since` value that means "no previous summary".
const NO_SINCE: u64 = u64::MAX;
/// Bounds of the region shift: 4 KiB pages to 1 GiB regions.
const REGION_SHIFTS: std::ops::RangeInclusive<u8> = 12..=30;
/// Bytes of one vCPU's registers.
const REGISTER_BYTES: usize = 18 * 8 + 6 * 2 + 6 * 8 + 7 * 8;

/// Appends the encoding of `s` (without the record's icount and hash).
pub(crate) fn encode_summary(out: &mut Vec<u8>, s: &StateSummary) {
    out.put_u64(s.since.unwrap_or(NO_SINCE));
    out.put_u16(s.vcpus.len() as u16);
    for v in &s.vcpus {
        for r in v.gpr {
            out.put_u64(r);
        }
        out.put_u64(v.rip);
        out.put_u64(v.rflags);
        for seg in &v.seg {
            out.put_u16(seg.selector);
        }
        for seg in &v.seg {
            out.put_u64(seg.base);
        }
        for r in [v.cr0, v.cr2, v.cr3, v.cr4, v.cr8, v.efer, v.icount] {
            out.put_u64(r);
        }
        encode_parts(out, &v.parts);
    }
    encode_parts(out, &s.parts);
    out.put_u8(s.region_shift);
    out.put_u32(s.region_count);
    out.put_u8(s.zone_shift);
    out.put_u32(s.zone_count);
    let mut bitmap = vec![0u8; (s.zone_count as usize).div_ceil(8)];
    for &(z, _) in &s.zones {
        if let Some(byte) = bitmap.get_mut(z as usize / 8) {
            *byte |= 1 << (z % 8);
        }
    }
    out.extend_from_slice(&bitmap);
    for &(_, h) in &s.zones {
        out.put_u64(h);
    }
    out.put_u32(s.regions.len() as u32);
    for &(r, h) in &s.regions {
        out.put_u32(r);
        out.put_u64(h);
    }
    out.put_u32(s.pages.len() as u32);
    for &(gpa, h) in &s.pages {
        out.put_u32((gpa >> 12) as u32);
        out.put_u64(h);
    }
    out.put_u32(s.undetailed.len() as u32);
    for &r in &s.undetailed {
        out.put_u32(r);
    }
}

fn encode_parts(out: &mut Vec<u8>, parts: &[PartHash]) {
    out.put_u16(parts.len() as u16);
    for p in parts {
        out.put_name(&p.name);
        out.put_u64(p.hash);
    }
}

/// The encoding of `s`, checked by decoding it again, so a writer refuses
/// what a reader would call corrupt (counts or names out of range, lists
/// out of order).
pub(crate) fn encode_checked(s: &StateSummary) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    encode_summary(&mut buf, s);
    let back = decode_summary(&mut Dec::new(&buf), s.icount).map_err(|e| e.what)?;
    if &back != s {
        return Err("it does not survive its encoding (a count or name out of range)".into());
    }
    Ok(buf)
}

/// Decodes a summary for the record at `icount`.
pub(crate) fn decode_summary(d: &mut Dec<'_>, icount: u64) -> Result<StateSummary, DecodeError> {
    let since = match d.u64("summary since")? {
        NO_SINCE => None,
        s if s > icount => {
            return Err(d.error(format!(
                "summary at icount {icount} is relative to a later count {s}"
            )))
        }
        s => Some(s),
    };
    let count = d.u16("summary vCPU count")?;
    if count == 0 {
        return Err(d.error("summary has no vCPU"));
    }
    let mut vcpus = Vec::new();
    for _ in 0..count {
        // Checked up front so a lying count allocates nothing.
        if d.remaining() < REGISTER_BYTES {
            return Err(d.error(format!(
                "summary vCPU registers: needs {REGISTER_BYTES} bytes, only {} remain",
                d.remaining()
            )));
        }
        vcpus.push(decode_vcpu(d)?);
    }
    let parts = decode_parts(d, "summary part")?;
    let at = d.pos();
    let region_shift = d.u8("summary region shift")?;
    if !REGION_SHIFTS.contains(&region_shift) {
        return Err(DecodeError {
            offset: at,
            what: format!("summary region shift {region_shift} is outside 12..=30"),
        });
    }
    let region_count = d.u32("summary region count")?;
    let at = d.pos();
    let zone_shift = d.u8("summary zone shift")?;
    if !(region_shift..=40).contains(&zone_shift) {
        return Err(DecodeError {
            offset: at,
            what: format!("summary zone shift {zone_shift} is outside {region_shift}..=40"),
        });
    }
    let at = d.pos();
    let zone_count = d.u32("summary zone count")?;
    let expect = u64::from(region_count).div_ceil(1 << (zone_shift - region_shift));
    if u64::from(zone_count) != expect {
        return Err(DecodeError {
            offset: at,
            what: format!(
                "summary has {zone_count} zones for {region_count} regions, expected {expect}"
            ),
        });
    }
    let zones = decode_zones(d, zone_count)?;
    let listed = d.u32("summary region list count")?;
    let mut regions: Vec<(u32, u64)> = Vec::new();
    for _ in 0..listed {
        let at = d.pos();
        let r = d.u32("summary region index")?;
        let h = d.u64("summary region hash")?;
        let bad = |what: String| DecodeError { offset: at, what };
        if regions.last().is_some_and(|&(l, _)| l >= r) {
            return Err(bad(format!("summary region {r} is out of order")));
        }
        if r >= region_count {
            return Err(bad(format!("summary region {r} of {region_count}")));
        }
        regions.push((r, h));
    }
    let page_count = d.u32("summary page count")?;
    let mut pages = Vec::new();
    let mut last = None;
    for _ in 0..page_count {
        let at = d.pos();
        let number = d.u32("summary page number")?;
        let hash = d.u64("summary page hash")?;
        let gpa = u64::from(number) << 12;
        let bad = |what: String| DecodeError { offset: at, what };
        if last.is_some_and(|l| l >= gpa) {
            return Err(bad(format!("summary page {gpa:#x} is out of order")));
        }
        if gpa >> region_shift >= u64::from(region_count) {
            return Err(bad(format!(
                "summary page {gpa:#x} lies outside its {region_count} regions"
            )));
        }
        last = Some(gpa);
        pages.push((gpa, hash));
    }
    let undetailed_count = d.u32("summary undetailed count")?;
    let mut undetailed: Vec<u32> = Vec::new();
    for _ in 0..undetailed_count {
        let at = d.pos();
        let r = d.u32("summary undetailed region")?;
        let bad = |what: String| DecodeError { offset: at, what };
        if undetailed.last().is_some_and(|&l| l >= r) {
            return Err(bad(format!(
                "summary undetailed region {r} is out of order"
            )));
        }
        if r >= region_count {
            return Err(bad(format!(
                "summary undetailed region {r} of {region_count}"
            )));
        }
        if pages
            .iter()
            .any(|&(gpa, _)| gpa >> region_shift == u64::from(r))
        {
            return Err(bad(format!(
                "summary lists pages of region {r}, which it says it leaves out"
            )));
        }
        undetailed.push(r);
    }
    Ok(StateSummary {
        icount,
        since,
        vcpus,
        parts,
        zone_shift,
        zone_count,
        zones,
        region_shift,
        region_count,
        regions,
        pages,
        undetailed,
    })
}

/// The zone bitmap and the hashes of the zones it marks.
fn decode_zones(d: &mut Dec<'_>, zone_count: u32) -> Result<Vec<(u32, u64)>, DecodeError> {
    let bitmap_len = (zone_count as usize).div_ceil(8);
    if bitmap_len > d.remaining() {
        return Err(d.error(format!(
            "summary zone bitmap: needs {bitmap_len} bytes, only {} remain",
            d.remaining()
        )));
    }
    let mut set = Vec::new();
    for i in 0..bitmap_len {
        let at = d.pos();
        let byte = d.u8("summary zone bitmap")?;
        for bit in 0..8 {
            if byte & (1 << bit) == 0 {
                continue;
            }
            let z = i as u64 * 8 + bit;
            if z >= u64::from(zone_count) {
                return Err(DecodeError {
                    offset: at,
                    what: format!("summary zone bitmap marks zone {z} of {zone_count}"),
                });
            }
            set.push(z as u32);
        }
    }
    let mut zones = Vec::new();
    for z in set {
        let at = d.pos();
        match d.u64("summary zone hash")? {
            0 => {
                return Err(DecodeError {
                    offset: at,
                    what: format!("summary zone {z} is marked non-zero with hash 0"),
                })
            }
            h => zones.push((z, h)),
        }
    }
    Ok(zones)
}

fn decode_vcpu(d: &mut Dec<'_>) -> Result<VcpuSummary, DecodeError> {
    let mut v = VcpuSummary::default();
    for r in v.gpr.iter_mut() {
        *r = d.u64("summary register")?;
    }
    v.rip = d.u64("summary register")?;
    v.rflags = d.u64("summary register")?;
    for seg in v.seg.iter_mut() {
        seg.selector = d.u16("summary selector")?;
    }
    for seg in v.seg.iter_mut() {
        *seg = SegmentSummary {
            base: d.u64("summary segment base")?,
            ..*seg
        };
    }
    for r in [
        &mut v.cr0,
        &mut v.cr2,
        &mut v.cr3,
        &mut v.cr4,
        &mut v.cr8,
        &mut v.efer,
        &mut v.icount,
    ] {
        *r = d.u64("summary register")?;
    }
    v.parts = decode_parts(d, "summary vCPU part")?;
    Ok(v)
}

fn decode_parts(d: &mut Dec<'_>, what: &str) -> Result<Vec<PartHash>, DecodeError> {
    let count = d.u16(what)?;
    let mut parts: Vec<PartHash> = Vec::new();
    for _ in 0..count {
        let at = d.pos();
        let name = d.name(what)?;
        let hash = d.u64(what)?;
        if parts.iter().any(|p| p.name == name) {
            return Err(DecodeError {
                offset: at,
                what: format!("{what} {name:?} appears twice"),
            });
        }
        parts.push(PartHash { name, hash });
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StateSummary {
        let vcpu = |n: u64| VcpuSummary {
            gpr: std::array::from_fn(|i| n * 100 + i as u64),
            rip: 0xFFFF_FFFF_8100_0000 + n,
            rflags: 0x246,
            seg: std::array::from_fn(|i| SegmentSummary {
                selector: 0x10 + i as u16,
                base: i as u64 * 0x1000,
            }),
            cr0: 0x8005_0033,
            cr2: 7,
            cr3: 0x1234_5000,
            cr4: 0x6F0,
            cr8: 0,
            efer: 0xD01,
            icount: 5_000,
            parts: vec![
                PartHash {
                    name: "x87/SSE".into(),
                    hash: 11 + n,
                },
                PartHash {
                    name: "whole vCPU".into(),
                    hash: 12,
                },
            ],
        };
        StateSummary {
            icount: 5_000,
            since: Some(4_000),
            vcpus: vec![vcpu(0), vcpu(1)],
            parts: vec![
                PartHash {
                    name: "uart".into(),
                    hash: u64::MAX,
                },
                PartHash {
                    name: "whole machine state".into(),
                    hash: 1,
                },
            ],
            zone_shift: 24,
            zone_count: 2,
            zones: vec![(0, 4), (1, 9)],
            region_shift: 20,
            region_count: 20,
            regions: vec![(0, 5), (9, 0), (19, 7)],
            pages: vec![(0x1000, 3), (0x90_0000, 0), (0x91_f000, 8)],
            undetailed: vec![19],
        }
    }

    fn encoded(s: &StateSummary) -> Vec<u8> {
        let mut b = Vec::new();
        encode_summary(&mut b, s);
        b
    }

    #[test]
    fn a_summary_round_trips() {
        let s = sample();
        let b = encoded(&s);
        let mut d = Dec::new(&b);
        assert_eq!(decode_summary(&mut d, 5_000).unwrap(), s);
        d.expect_end("summary").unwrap();
        encode_checked(&s).unwrap();
        let first = StateSummary {
            since: None,
            ..sample()
        };
        assert_eq!(
            decode_summary(&mut Dec::new(&encoded(&first)), 5_000).unwrap(),
            first
        );
    }

    #[test]
    fn every_truncation_fails() {
        let b = encoded(&sample());
        for cut in 0..b.len() {
            assert!(
                decode_summary(&mut Dec::new(&b[..cut]), 5_000).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn broken_rules_are_refused_with_what_was_wrong() {
        let cases: Vec<(StateSummary, &str)> = vec![
            (
                StateSummary {
                    vcpus: Vec::new(),
                    ..sample()
                },
                "no vCPU",
            ),
            (
                StateSummary {
                    since: Some(6_000),
                    ..sample()
                },
                "later count",
            ),
            (
                StateSummary {
                    region_shift: 40,
                    ..sample()
                },
                "region shift",
            ),
            (
                StateSummary {
                    zones: vec![(1, 0)],
                    ..sample()
                },
                "hash 0",
            ),
            (
                StateSummary {
                    zone_count: 3,
                    ..sample()
                },
                "3 zones for 20 regions",
            ),
            (
                StateSummary {
                    zone_shift: 16,
                    ..sample()
                },
                "zone shift",
            ),
            (
                StateSummary {
                    regions: vec![(5, 1), (4, 1)],
                    ..sample()
                },
                "out of order",
            ),
            (
                StateSummary {
                    regions: vec![(20, 1)],
                    ..sample()
                },
                "region 20 of 20",
            ),
            (
                StateSummary {
                    pages: vec![(0x2000, 1), (0x1000, 1)],
                    ..sample()
                },
                "out of order",
            ),
            (
                StateSummary {
                    pages: vec![(0x200_0000, 1)],
                    ..sample()
                },
                "outside",
            ),
            (
                StateSummary {
                    undetailed: vec![9],
                    ..sample()
                },
                "leaves out",
            ),
            (
                StateSummary {
                    undetailed: vec![3, 2],
                    ..sample()
                },
                "out of order",
            ),
            (
                StateSummary {
                    undetailed: vec![25],
                    ..sample()
                },
                "of 20",
            ),
        ];
        for (s, want) in cases {
            let e = decode_summary(&mut Dec::new(&encoded(&s)), 5_000).unwrap_err();
            assert!(e.what.contains(want), "{want}: {e}");
            assert!(encode_checked(&s).is_err());
        }
        let mut dup = sample();
        dup.parts[1].name = "uart".into();
        let e = decode_summary(&mut Dec::new(&encoded(&dup)), 5_000).unwrap_err();
        assert!(e.what.contains("twice"), "{e}");
        // A bit past the zone count.
        let mut b = encoded(&sample());
        let bitmap_at = b.len() - (3 * 12 + 4 + 4 + 4) - (4 + 3 * 12) - 2 * 8 - 1;
        assert_eq!(b[bitmap_at], 0b11);
        b[bitmap_at] |= 0x80; // zone 7 of 2
        let e = decode_summary(&mut Dec::new(&b), 5_000).unwrap_err();
        assert!(e.what.contains("zone 7 of 2"), "{e}");
    }

    #[test]
    fn a_huge_vcpu_count_is_refused_without_allocating_for_it() {
        let mut b = Vec::new();
        b.put_u64(NO_SINCE);
        b.put_u16(u16::MAX);
        b.extend_from_slice(&[0; 100]);
        let e = decode_summary(&mut Dec::new(&b), 5).unwrap_err();
        assert!(e.what.contains("needs"), "{e}");
    }
}
