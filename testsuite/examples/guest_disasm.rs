//! Debugging aid for selftest guests: disassembles a guest around an
//! address (e.g. the one a FAIL line points at), or prints a guest's whole
//! console output including its informational lines.
//!
//! ```text
//! cargo run -p hindsight-testsuite --example guest_disasm -- pmode 0x478d 32
//! cargo run -p hindsight-testsuite --example guest_disasm -- timer --console
//! ```

use hindsight_testsuite::iced_x86::{Decoder, DecoderOptions};
use hindsight_testsuite::selftest;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        eprintln!("usage: guest_disasm GUEST [ADDR [BITS]] | GUEST --console");
        std::process::exit(2);
    };
    let Some(g) = selftest::guests().into_iter().find(|g| g.name == name) else {
        eprintln!("no selftest guest named {name}");
        std::process::exit(2);
    };
    let built = (g.build)();
    if args.get(1).map(String::as_str) == Some("--console") {
        let r = selftest::run_guest(g.name, &built, g.input);
        println!("{}", r.console);
        println!("exit: {:?}", r.exit);
        return;
    }
    let addr = match args
        .get(1)
        .map(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16))
    {
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            eprintln!("bad address: {e}");
            std::process::exit(2);
        }
        None => None,
    };
    let bits: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let img = &built.image;
    let (start, end) = match addr {
        Some(a) => (a.saturating_sub(0x40).max(img.load_addr), a + 0x40),
        None => (img.load_addr, img.load_addr + img.bytes.len() as u64),
    };
    let off = (start.saturating_sub(img.load_addr) as usize).min(img.bytes.len());
    let len = ((end - start) as usize).min(img.bytes.len() - off);
    let d = Decoder::with_ip(
        bits,
        &img.bytes[off..off + len],
        start,
        DecoderOptions::NONE,
    );
    for i in d {
        let ops: Vec<_> = (0..i.op_count()).map(|k| i.op_kind(k)).collect();
        let o = (i.ip() - img.load_addr) as usize;
        let bytes: String = img.bytes[o..o + i.len()]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mark = if Some(i.ip()) == addr { "=>" } else { "  " };
        println!("{mark} {:08x} {bytes:24} {:?} {ops:?}", i.ip(), i.code());
    }
}
