//! Debugging aid (ignored by default): disassembles a selftest guest around
//! an address, e.g. to see the instruction a FAIL line points at:
//!
//! ```text
//! GUEST=pmode ADDR=0x478d BITS=32 cargo test -p hindsight-testsuite \
//!     --test selftest_disasm -- --ignored --nocapture
//! ```

use hindsight_testsuite::iced_x86::{Decoder, DecoderOptions};
use hindsight_testsuite::selftest;

#[test]
#[ignore]
fn disassemble_guest() {
    let name = std::env::var("GUEST").unwrap_or_else(|_| "pmode".into());
    let addr = std::env::var("ADDR")
        .ok()
        .map(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap());
    let bits: u32 = std::env::var("BITS")
        .ok()
        .map_or(32, |s| s.parse().unwrap());
    let g = selftest::guests()
        .into_iter()
        .find(|g| g.name == name)
        .expect("no such guest");
    let built = (g.build)();
    let img = &built.image;
    let (start, end) = match addr {
        Some(a) => (a.saturating_sub(0x40).max(img.load_addr), a + 0x40),
        None => (img.load_addr, img.load_addr + img.bytes.len() as u64),
    };
    let off = (start - img.load_addr) as usize;
    let len = ((end - start) as usize).min(img.bytes.len() - off);
    let mut d = Decoder::with_ip(
        bits,
        &img.bytes[off..off + len],
        start,
        DecoderOptions::NONE,
    );
    for i in &mut d {
        let s = format!(
            "{:?} {:?}",
            i.code(),
            (0..i.op_count()).map(|k| i.op_kind(k)).collect::<Vec<_>>()
        );
        let o = (i.ip() - img.load_addr) as usize;
        let bytes: String = img.bytes[o..o + i.len()]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mark = if Some(i.ip()) == addr { "=>" } else { "  " };
        println!("{mark} {:08x} {bytes:24} {s}", i.ip());
    }
}

/// Debugging aid (ignored by default): prints the whole console output of
/// one selftest guest (`GUEST=timer`), including its informational lines.
#[test]
#[ignore]
fn show_guest_console() {
    let name = std::env::var("GUEST").unwrap_or_else(|_| "timer".into());
    let g = selftest::guests()
        .into_iter()
        .find(|g| g.name == name)
        .expect("no such guest");
    let built = (g.build)();
    let r = selftest::run_guest(g.name, &built, g.input);
    println!("{}", r.console);
    println!("exit: {:?}", r.exit);
}
