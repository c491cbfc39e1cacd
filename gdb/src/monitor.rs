//! `monitor ...` commands: what gdb has no command for.
//!
//! | command | does |
//! |---|---|
//! | `help` | lists these |
//! | `icount` | the present instruction count and the span of history |
//! | `seek N` | moves the whole machine to instruction count N (`1000000000`, `1e9`, `2.5e6`, `0x3b9aca00`, `1_000_000`) |
//! | `checkpoints` | the checkpoints held |
//! | `info sysregs` | mode, CPL, rIP, segment registers with their hidden parts, control registers, EFER, GDTR/IDTR/LDTR/TR, kernel GS base of every vCPU |
//! | `status` | where the machine is and why it last stopped |
//!
//! gdb caches registers and memory between stops and a `monitor` command
//! cannot tell it that they changed: nothing in the remote protocol lets
//! the stub invalidate gdb's caches outside a stop reply. So after
//! `seek` the output reminds the user to run
//! `maintenance flush register-cache` (gdb 13 also flushes its memory
//! cache with it), or to define once
//! `define seek` / `monitor seek $arg0` / `maintenance flush register-cache` / `end`.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hindsight_cpu::state::{Segment, TableReg};
use hindsight_cpu::{Cpu, SegReg};

use crate::Debuggee;

/// A parsed monitor command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `help`.
    Help,
    /// `icount`.
    Icount,
    /// `seek N`.
    Seek(u64),
    /// `checkpoints`.
    Checkpoints,
    /// `info sysregs`.
    Sysregs,
    /// `status`.
    Status,
}

/// The help text.
pub const HELP: &str = "\
hindsight monitor commands:
  monitor icount           present instruction count and the span of history
  monitor seek N           move the machine to instruction count N
                           (N: 1000000000, 1e9, 2.5e6, 0x3b9aca00, 1_000_000)
  monitor checkpoints      list the checkpoints held
  monitor info sysregs     CR0-CR8, EFER, GDTR/IDTR/LDTR/TR, segment bases, CPL, mode per vCPU
  monitor status           where the machine is and why it last stopped
  monitor help             this text
After `monitor seek`, run `maintenance flush register-cache` so gdb re-reads
registers and memory (gdb cannot be told by the stub).
";

/// The reminder printed after a seek.
pub const STALE_NOTE: &str = "gdb's cached registers and memory are stale now: run \
`maintenance flush register-cache` (or `define seek` / `monitor seek $arg0` / \
`maintenance flush register-cache` / `end` once, then `seek N`).";

/// Parses an instruction count: decimal, `0x` hex, `1e9`/`2.5e6`
/// scientific notation (an exact integer), `_` separators allowed.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!("`{s}` is not an instruction count ({why}; use e.g. 1000000000, 1e9 or 0x3b9aca00)")
    };
    let t: String = s.trim().chars().filter(|&c| c != '_').collect();
    if t.is_empty() {
        return Err(bad("empty"));
    }
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).map_err(|_| bad("bad hex number"));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<u64>().map_err(|_| bad("too large"));
    }
    // Scientific notation: mantissa digits with an optional point, e/E,
    // a non-negative exponent; the value must be a whole number.
    let Some((mant, exp)) = t.split_once(['e', 'E']) else {
        return Err(bad("not a number"));
    };
    let exp: u32 = exp
        .strip_prefix('+')
        .unwrap_or(exp)
        .parse()
        .map_err(|_| bad("bad exponent"))?;
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad("bad mantissa"));
    }
    let frac = frac.trim_end_matches('0');
    let Some(shift) = exp.checked_sub(frac.len() as u32) else {
        return Err(bad("not a whole number"));
    };
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    let mut v: u64 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| bad("too large"))?
    };
    for _ in 0..shift {
        if v == 0 {
            break;
        }
        v = v.checked_mul(10).ok_or_else(|| bad("too large"))?;
    }
    Ok(v)
}

/// Parses a monitor command line.
pub fn parse(line: &str) -> Result<Command, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [] | ["help"] | ["?"] => Ok(Command::Help),
        ["icount"] => Ok(Command::Icount),
        ["seek", n] => parse_count(n).map(Command::Seek),
        ["seek"] => Err("seek needs an instruction count: monitor seek N".into()),
        ["seek", ..] => Err("seek takes one instruction count: monitor seek N".into()),
        ["checkpoints"] => Ok(Command::Checkpoints),
        ["info", "sysregs"] | ["sysregs"] => Ok(Command::Sysregs),
        ["status"] => Ok(Command::Status),
        [w, ..] => Err(format!(
            "unknown monitor command `{w}` (try `monitor help`)"
        )),
    }
}

/// Runs `cmd` on `d`; `last_stop` describes the last stop, for `status`.
/// The output is the text gdb prints (newline-terminated); a long seek
/// reports its progress through `progress` meanwhile.
pub fn run(
    d: &mut dyn Debuggee,
    cmd: &Command,
    last_stop: &str,
    progress: &mut dyn FnMut(u64) -> bool,
) -> String {
    let mut o = String::new();
    match cmd {
        Command::Help => o.push_str(HELP),
        Command::Icount => {
            let (first, last) = d.history();
            let _ = writeln!(o, "icount {} (history {}..={})", d.icount(), first, last);
        }
        Command::Seek(n) => match d.seek(*n, progress) {
            Ok(at) => {
                let _ = writeln!(o, "now at icount {at}");
                let _ = writeln!(o, "{STALE_NOTE}");
            }
            Err(why) => {
                let _ = writeln!(o, "seek {n} failed: {why}");
            }
        },
        Command::Checkpoints => {
            let lines = d.checkpoints();
            if lines.is_empty() {
                o.push_str("no checkpoints held\n");
            }
            for l in lines {
                let _ = writeln!(o, "{l}");
            }
        }
        Command::Sysregs => {
            for v in 0..d.vcpu_count() {
                sysregs(&mut o, v, d.cpu(v));
            }
        }
        Command::Status => {
            let (first, last) = d.history();
            let _ = writeln!(
                o,
                "icount {} (history {}..={}), {} vCPU(s); last stop: {}",
                d.icount(),
                first,
                last,
                d.vcpu_count(),
                last_stop
            );
        }
    }
    o
}

/// Names of the set one-bit flags of `v`.
fn bit_names(v: u64, names: &[(&str, u32)]) -> String {
    let set: Vec<&str> = names
        .iter()
        .filter(|(n, b)| !n.is_empty() && v >> b & 1 != 0)
        .map(|(n, _)| *n)
        .collect();
    format!("[{}]", set.join(" "))
}

fn table(t: &TableReg) -> String {
    format!("base={:#x} limit={:#x}", t.base, t.limit)
}

fn segment(s: &Segment) -> String {
    format!(
        "sel={:#06x} base={:#x} limit={:#x} attr={:#06x}",
        s.selector, s.base, s.limit, s.attr
    )
}

/// Appends vCPU `v`'s system registers to `o`.
fn sysregs(o: &mut String, v: usize, c: &Cpu) {
    use crate::arch::{CR0_BITS, CR4_BITS, EFER_BITS};
    let _ = writeln!(
        o,
        "vCPU {v}: {}, CPL {}, {}-bit code, icount {}{}",
        c.mode.name(),
        c.cpl,
        c.bitness,
        c.icount,
        if c.halted { ", halted" } else { "" }
    );
    let _ = writeln!(o, "  cr0  {:#018x} {}", c.cr0, bit_names(c.cr0, CR0_BITS));
    let _ = writeln!(o, "  cr2  {:#018x}", c.cr2);
    let _ = writeln!(o, "  cr3  {:#018x}", c.cr3);
    let _ = writeln!(o, "  cr4  {:#018x} {}", c.cr4, bit_names(c.cr4, CR4_BITS));
    let _ = writeln!(o, "  cr8  {:#018x}", c.cr8);
    let _ = writeln!(
        o,
        "  efer {:#018x} {}",
        c.efer,
        bit_names(c.efer, EFER_BITS)
    );
    let _ = writeln!(
        o,
        "  rip  {:#018x} (linear pc {:#x})",
        c.rip,
        crate::regs::linear_pc(c)
    );
    for s in SegReg::ALL {
        let _ = writeln!(o, "  {}   {}", s.name(), segment(&c.seg[s as usize]));
    }
    let _ = writeln!(o, "  gdtr {}", table(&c.gdtr));
    let _ = writeln!(o, "  idtr {}", table(&c.idtr));
    let _ = writeln!(o, "  ldtr {}", segment(&c.ldtr));
    let _ = writeln!(o, "  tr   {}", segment(&c.tr));
    let _ = writeln!(
        o,
        "  fs_base {:#x}  gs_base {:#x}  k_gs_base {:#x}",
        c.seg[SegReg::Fs as usize].base,
        c.seg[SegReg::Gs as usize].base,
        c.msr.kernel_gs_base
    );
}

/// How often a long seek prints its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Whether bytes from gdb wait on the connection (left for gdbstub), or
/// gdb closed it.
fn gdb_sent_something(s: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let waiting = s.peek(&mut byte).is_ok();
    let _ = s.set_nonblocking(false);
    waiting
}

/// gdb's `monitor` packet (qRcmd), answered through [`parse`] and [`run`].
impl<A: crate::target::GdbArch> gdbstub::target::ext::monitor_cmd::MonitorCmd
    for crate::target::HsTarget<'_, A>
{
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: gdbstub::target::ext::monitor_cmd::ConsoleOutput<'_>,
    ) -> Result<(), String> {
        let line = String::from_utf8_lossy(cmd);
        let text = match parse(&line) {
            Ok(c) => {
                let peer = self.peer.as_ref();
                let mut shown = Instant::now();
                let mut progress = |at: u64| {
                    // A line a second goes out at once: gdb waits for the
                    // reply only `remotetimeout` seconds after the last
                    // packet.
                    if shown.elapsed() >= PROGRESS_EVERY {
                        out.write_raw(format!("seeking... icount {at}\n").as_bytes());
                        out.flush();
                        shown = Instant::now();
                    }
                    // gdb gave up waiting (Ctrl-C: it prints `Quit`) and
                    // sent its next command: stop here.
                    !peer.is_some_and(gdb_sent_something)
                };
                run(self.d, &c, &self.last_stop, &mut progress)
            }
            Err(e) => format!("error: {e}\n"),
        };
        out.write_raw(text.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::tests::paged;

    #[test]
    fn counts_parse_in_every_notation() {
        for (s, v) in [
            ("1000000000", 1_000_000_000),
            ("1e9", 1_000_000_000),
            ("1E9", 1_000_000_000),
            ("1e+9", 1_000_000_000),
            ("2.5e6", 2_500_000),
            ("0.5e1", 5),
            (".5e1", 5),
            ("0x3b9aca00", 1_000_000_000),
            ("0X10", 16),
            ("1_000_000", 1_000_000),
            ("0", 0),
            ("0e30", 0),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(parse_count(s), Ok(v), "{s}");
        }
        for s in [
            "",
            "abc",
            "1e",
            "e9",
            "1.5",
            "1.25e1",
            "0xzz",
            "-5",
            "1e-3",
            "2e19",
            "99999999999999999999",
            "1.2.3e4",
            "0x",
        ] {
            let e = parse_count(s).unwrap_err();
            assert!(e.contains("is not an instruction count"), "{s}: {e}");
        }
    }

    #[test]
    fn commands_parse_with_clear_errors() {
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(parse(""), Ok(Command::Help));
        assert_eq!(parse("  icount "), Ok(Command::Icount));
        assert_eq!(parse("seek 1e9"), Ok(Command::Seek(1_000_000_000)));
        assert_eq!(parse("info sysregs"), Ok(Command::Sysregs));
        assert_eq!(parse("checkpoints"), Ok(Command::Checkpoints));
        assert_eq!(parse("status"), Ok(Command::Status));
        assert!(parse("seek")
            .unwrap_err()
            .contains("needs an instruction count"));
        assert!(parse("seek 1 2")
            .unwrap_err()
            .contains("one instruction count"));
        assert!(parse("seek x")
            .unwrap_err()
            .contains("`x` is not an instruction count"));
        assert!(parse("frobnicate")
            .unwrap_err()
            .contains("unknown monitor command `frobnicate`"));
    }

    #[test]
    fn commands_run_against_a_debuggee() {
        let mut d = paged();
        assert!(run(&mut d, &Command::Help, "", &mut |_| true).contains("monitor seek N"));
        assert_eq!(
            run(&mut d, &Command::Icount, "", &mut |_| true),
            "icount 0 (history 0..=1000)\n"
        );
        let out = run(&mut d, &Command::Seek(500), "", &mut |_| true);
        assert!(out.starts_with("now at icount 500\n"), "{out}");
        assert!(out.contains("maintenance flush register-cache"));
        assert_eq!(d.icount, 500);
        let out = run(&mut d, &Command::Seek(5000), "", &mut |_| true);
        assert!(
            out.contains("seek 5000 failed: 5000 is past the end"),
            "{out}"
        );
        assert_eq!(
            run(&mut d, &Command::Checkpoints, "", &mut |_| true),
            "#0 at icount 0\n"
        );
        let out = run(&mut d, &Command::Sysregs, "", &mut |_| true);
        assert!(out.contains("vCPU 0: 64-bit long mode, CPL 0"), "{out}");
        assert!(out.contains("cr3  0x0000000000010000"), "{out}");
        assert!(out.contains("[PE ET NW CD PG]"), "{out}");
        assert!(out.contains("efer 0x0000000000000500 [LME LMA]"), "{out}");
        assert!(out.contains("gdtr base=0x0 limit=0xffff"), "{out}");
        assert!(
            out.contains("  cs   sel=0x0008 base=0x0 limit=0xffffffff attr=0x209b"),
            "{out}"
        );
        let out = run(
            &mut d,
            &Command::Status,
            "breakpoint at 0x1000",
            &mut |_| true,
        );
        assert!(out.contains("last stop: breakpoint at 0x1000"), "{out}");
    }
}
