//! End-to-end tests of hindsight's gdb stub with the real gdb.
//!
//! Each test starts the real `hindsight` halted (`--gdb-wait`) on a free
//! port and drives gdb in batch mode against it: forward and reverse
//! execution, breakpoints, watchpoints, `monitor` commands, detaching.
//! The assertions are on what gdb prints. Two guests:
//!
//! - a small 32-bit multiboot kernel built here with a symbol table and
//!   DWARF for its `counter` (so gdb knows `main`, `bump`, `counter`):
//!   `main` calls `bump` [`ITERATIONS`] times, `bump` increments `counter`,
//!   then the guest writes to the debug-exit port;
//! - Debian's Linux kernel (`hindsight boot`, images from `hindsight
//!   fetch`, with the System.map fetch writes for the kernel's addresses).
//!
//! These tests do not skip: without gdb they fail saying how to install it.

mod common;

mod guest_cache;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{elf32_multiboot_with_symbols, Symbol, CODE_OFF, LOAD};

/// How many times the guest's `main` calls `bump`.
const ITERATIONS: i32 = 10;
/// What the guest writes to the debug-exit port at the end.
const EXIT_VALUE: i32 = 0x2a;
/// The exit status hindsight reports for it.
const EXIT_STATUS: i32 = (EXIT_VALUE << 1) | 1;

/// The multiboot guest and the addresses the tests check against.
struct Guest {
    elf: PathBuf,
    main: u64,
    bump: u64,
    /// The `call bump` in `main`.
    call_bump: u64,
    /// The instruction after it (where `bump` returns to).
    after_call: u64,
    /// The `add dword [counter], 1` in `bump`.
    write_counter: u64,
    counter: u64,
}

/// Builds the guest (once per test process) into the target directory.
fn guest() -> &'static Guest {
    static GUEST: OnceLock<Guest> = OnceLock::new();
    GUEST.get_or_init(|| {
        // Assembled twice: the second time with the padding that puts
        // `counter` on a 4-byte boundary.
        let first = assemble_guest(0, 0).1[7];
        let pad = (4 - first % 4) % 4;
        let (code, labels) = assemble_guest(pad as usize, first + pad);
        let [main, bump, call_bump, after_call, write_counter, main_end, bump_end, counter] =
            labels;
        assert_eq!(counter, first + pad);
        let base = LOAD + CODE_OFF as u64;
        let g = Guest {
            elf: Path::new(env!("CARGO_TARGET_TMPDIR")).join("gdb-guest.elf"),
            main,
            bump,
            call_bump,
            after_call,
            write_counter,
            counter,
        };
        let symbols = [
            Symbol::func("_start", base, main - base),
            Symbol::func("main", main, main_end - main),
            Symbol::func("bump", bump, bump_end - bump),
            Symbol::int("counter", counter),
        ];
        let elf = elf32_multiboot_with_symbols(&code, (counter - base) as usize, &symbols);
        // Written under a temporary name first: tests run in parallel.
        let tmp = g.elf.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, elf).unwrap();
        std::fs::rename(&tmp, &g.elf).unwrap();
        g
    })
}

/// The guest's code and the addresses of main, bump, the call, the
/// instruction after it, the write of counter, main's end, bump's end and
/// counter (`pad` bytes of padding before counter), which bump's `add`
/// addresses as `counter_addr` (32-bit code has no RIP-relative form;
/// the `add`'s length does not depend on the address).
fn assemble_guest(pad: usize, counter_addr: u64) -> (Vec<u8>, [u64; 8]) {
    // Here only: the assembler's register names (eax, cr3...) would
    // shadow the tests' variables.
    use hindsight_testsuite::iced_x86::code_asm::*;
    use hindsight_testsuite::iced_x86::BlockEncoderOptions;
    let mut a = CodeAssembler::new(32).unwrap();
    let mut main = a.create_label();
    let mut bump = a.create_label();
    let mut call_bump = a.create_label();
    let mut after_call = a.create_label();
    let mut write_counter = a.create_label();
    let mut bump_end = a.create_label();
    let mut counter = a.create_label();
    // _start: a stack, then main (which never returns).
    a.mov(esp, 0x8_0000).unwrap();
    a.call(main).unwrap();
    a.hlt().unwrap();
    // main: calls bump ITERATIONS times, then the debug exit.
    a.set_label(&mut main).unwrap();
    a.push(ebp).unwrap();
    a.mov(ebp, esp).unwrap();
    a.mov(ebx, ITERATIONS).unwrap();
    a.set_label(&mut call_bump).unwrap();
    a.call(bump).unwrap();
    a.set_label(&mut after_call).unwrap();
    a.dec(ebx).unwrap();
    a.jnz(call_bump).unwrap();
    a.mov(al, EXIT_VALUE).unwrap();
    a.out(0xF4, al).unwrap();
    a.hlt().unwrap();
    // bump: a standard frame around counter += 1.
    a.set_label(&mut bump).unwrap();
    a.push(ebp).unwrap();
    a.mov(ebp, esp).unwrap();
    a.set_label(&mut write_counter).unwrap();
    a.add(dword_ptr(counter_addr as u32), 1).unwrap();
    a.pop(ebp).unwrap();
    a.ret().unwrap();
    a.set_label(&mut bump_end).unwrap();
    a.int3().unwrap();
    if pad > 0 {
        a.db(&vec![0xCC; pad]).unwrap();
    }
    a.set_label(&mut counter).unwrap();
    a.dd(&[0]).unwrap();
    let r = a
        .assemble_options(
            LOAD + CODE_OFF as u64,
            BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )
        .unwrap();
    let at = |l: &CodeLabel| r.label_ip(l).unwrap();
    let labels = [
        at(&main),
        at(&bump),
        at(&call_bump),
        at(&after_call),
        at(&write_counter),
        at(&bump),
        at(&bump_end),
        at(&counter),
    ];
    (r.inner.code_buffer, labels)
}

// ---------------------------------------------------------------------
// Running hindsight and gdb.

/// Commands every gdb session starts with. gdb's `remotetimeout` stays at
/// its default (2 s): a long `monitor seek` keeps gdb waiting with
/// progress lines.
const GDB_PRELUDE: &[&str] = &["set pagination off", "set confirm off", "set width 0"];

/// Fails (never skips) when gdb is missing.
fn require_gdb() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let ok = Command::new("gdb")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "these tests drive the real gdb, which is not installed: run \
             'apt-get install -y gdb' (Debian/Ubuntu) and try again"
        );
    });
}

/// A port nobody listens on now (the OS picks it; the listener is dropped
/// so hindsight can bind it).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Collects everything `r` produces on a thread.
fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

/// A running `hindsight` with a gdb stub; killed when dropped.
struct Hindsight {
    child: Child,
    port: u16,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Hindsight {
    /// Starts `hindsight ARGS --gdb-wait --gdb 127.0.0.1:PORT` and waits
    /// until it says it listens.
    fn start(args: &[&str]) -> Hindsight {
        require_gdb();
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hindsight"))
            .args(args)
            .args(["--gdb-wait", "--gdb", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hindsight");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let mut h = Hindsight {
            child,
            port,
            stdout,
            stderr,
        };
        let start = Instant::now();
        while !h.stderr_text().contains("gdb stub on") {
            if let Ok(Some(status)) = h.child.try_wait() {
                panic!(
                    "hindsight exited ({status}) before listening for gdb\n{}",
                    h.output()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "hindsight did not start its gdb stub in 120 s\n{}",
                h.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        h
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// hindsight's output so far, for failure messages.
    fn output(&self) -> String {
        format!(
            "--- hindsight stdout\n{}\n--- hindsight stderr\n{}",
            self.stdout_text(),
            self.stderr_text()
        )
    }

    /// Runs gdb in batch mode: `file ELF` (if any), `target remote`, then
    /// `cmds`; returns what it printed (stdout and stderr interleaved).
    /// gdb gets `timeout` to finish.
    fn gdb(&self, elf: Option<&Path>, cmds: &[&str], timeout: Duration) -> String {
        self.gdb_interrupting(elf, cmds, timeout, None)
    }

    /// [`Hindsight::gdb`], and with `interrupt`, once gdb has printed the
    /// marker [`RUNNING`] and the time given has passed, a SIGINT to gdb
    /// (what Ctrl-C does: gdb asks the stub to stop).
    fn gdb_interrupting(
        &self,
        elf: Option<&Path>,
        cmds: &[&str],
        timeout: Duration,
        interrupt: Option<Duration>,
    ) -> String {
        let log = std::env::temp_dir().join(format!(
            "hindsight-gdb-{}-{}.log",
            std::process::id(),
            self.port
        ));
        let file = std::fs::File::create(&log).unwrap();
        let mut args: Vec<String> = vec!["-nx".into(), "-batch".into()];
        let target = format!("target remote 127.0.0.1:{}", self.port);
        let file_cmd = elf.map(|e| format!("file {}", e.display()));
        for c in GDB_PRELUDE
            .iter()
            .copied()
            .chain(file_cmd.as_deref())
            .chain([target.as_str()])
            .chain(cmds.iter().copied())
        {
            args.push("-ex".into());
            args.push(c.into());
        }
        let mut gdb = Command::new("gdb")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start gdb");
        let start = Instant::now();
        let mut interrupt = interrupt;
        let status = loop {
            if let Some(s) = gdb.try_wait().unwrap() {
                break Some(s);
            }
            let running = || {
                let out = std::fs::read_to_string(&log).unwrap_or_default();
                out.contains(&format!("@@{RUNNING}\n"))
            };
            if let Some(after) = interrupt.filter(|_| running()) {
                std::thread::sleep(after);
                let sent = Command::new("kill")
                    .args(["-INT", &gdb.id().to_string()])
                    .status();
                assert!(sent.is_ok_and(|s| s.success()), "kill -INT gdb");
                interrupt = None;
            }
            if start.elapsed() > timeout {
                let _ = gdb.kill();
                let _ = gdb.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        assert!(
            status.is_some(),
            "gdb did not finish in {timeout:?}\n--- gdb\n{out}\n{}",
            self.output()
        );
        out
    }

    /// Waits up to `timeout` for hindsight to exit; its status.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Hindsight {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The marker a session prints right before the command to interrupt.
const RUNNING: &str = "RUNNING";

/// gdb's output split at `echo @@NAME\n` markers: the text after the
/// marker NAME up to the next marker.
fn section<'a>(out: &'a str, name: &str) -> &'a str {
    let mark = format!("@@{name}\n");
    let Some(start) = out.find(&mark) else {
        panic!("no marker {name} in gdb's output\n{out}");
    };
    let rest = &out[start + mark.len()..];
    &rest[..rest.find("@@").unwrap_or(rest.len())]
}

/// The gdb command that prints marker NAME.
fn mark(name: &str) -> String {
    format!("echo @@{name}\\n")
}

/// The instruction count `monitor icount` printed in `text`.
fn icount(text: &str) -> u64 {
    let Some(n) = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("icount "))
        .and_then(|r| r.split_whitespace().next())
    else {
        panic!("no 'icount N' line in\n{text}");
    };
    n.parse().unwrap()
}

/// The value of register `reg` in `info registers` output.
fn reg(text: &str, name: &str) -> u64 {
    let Some(v) = text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(name)).then(|| w.next()).flatten()
    }) else {
        panic!("no register {name} in\n{text}");
    };
    u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()
}

/// The value of a `p/x` in `text` (`$N = 0x...`).
fn printed_hex(text: &str) -> u64 {
    let Some(v) = text
        .lines()
        .find_map(|l| l.strip_prefix('$').and_then(|r| r.split_once(" = 0x")))
    else {
        panic!("no '$N = 0x...' line in\n{text}");
    };
    u64::from_str_radix(v.1.trim(), 16).unwrap()
}

/// Everything a failure message should show.
fn context(out: &str, h: &Hindsight) -> String {
    format!("--- gdb\n{out}\n{}", h.output())
}

const GDB_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts the multiboot guest under gdb's i386 view.
fn start_guest() -> Hindsight {
    let elf = guest().elf.to_str().unwrap().to_string();
    Hindsight::start(&["run", "--multiboot", &elf, "--gdb-arch", "i386"])
}

/// Runs gdb with the guest's symbols and `cmds`, then `kill` (after a
/// marker, so the last section ends before it).
fn debug_guest(h: &Hindsight, cmds: &[&str]) -> String {
    let end = mark("END");
    let mut all: Vec<&str> = cmds.to_vec();
    all.extend([end.as_str(), "kill"]);
    h.gdb(Some(&guest().elf), &all, GDB_TIMEOUT)
}

// ---------------------------------------------------------------------
// The multiboot guest.

/// Instructions before the add of iteration `k` (0-based) of the loop:
/// mov esp, call main, push, mov, mov ebx (5), then 8 per iteration
/// (call, push, mov, add, pop, ret, dec, jnz), and the call, push, mov
/// of this one.
fn icount_of_write(k: u64) -> u64 {
    5 + 8 * k + 3
}

#[test]
fn break_and_continue_stop_at_bump() {
    let g = guest();
    let h = start_guest();
    let (a, b, c) = (mark("A"), mark("B"), mark("C"));
    let out = debug_guest(
        &h,
        &[
            &a,
            "info registers eip",
            "monitor icount",
            "break bump",
            "continue",
            &b,
            "info registers eip",
            "monitor icount",
            "delete",
            "break *bump",
            "continue",
            &c,
            "info registers eip",
            "bt",
        ],
    );
    let ctx = context(&out, &h);
    // At the start: the multiboot entry point, nothing executed.
    let start = section(&out, "A");
    assert_eq!(reg(start, "eip"), LOAD + CODE_OFF as u64, "{ctx}");
    assert!(start.contains("<_start>"), "{ctx}");
    assert_eq!(icount(start), 0, "{ctx}");
    // `break bump` skips the `push ebp; mov ebp, esp` prologue, as gdb
    // does for any function it has no line table for.
    let prologue_end = g.bump + 3;
    assert_eq!(prologue_end, g.write_counter);
    assert!(
        out.contains(&format!("Breakpoint 1 at {prologue_end:#x}")),
        "{ctx}"
    );
    assert!(
        out.contains(&format!("Breakpoint 1, {prologue_end:#010x} in bump ()")),
        "{ctx}"
    );
    let hit = section(&out, "B");
    assert_eq!(reg(hit, "eip"), prologue_end, "{ctx}");
    assert!(hit.contains("<bump+3>"), "{ctx}");
    assert_eq!(icount(hit), icount_of_write(0), "{ctx}");
    // `break *bump` stops at its first instruction (the next call), with
    // main as the caller.
    let hit = section(&out, "C");
    assert!(
        out.contains(&format!("Breakpoint 2, {:#010x} in bump ()", g.bump)),
        "{ctx}"
    );
    assert_eq!(reg(hit, "eip"), g.bump, "{ctx}");
    assert!(
        hit.contains(&format!("#1  {:#010x} in main ()", g.after_call)),
        "{ctx}"
    );
}

#[test]
fn stepi_runs_one_instruction() {
    let g = guest();
    let h = start_guest();
    let (a, b) = (mark("A"), mark("B"));
    let out = debug_guest(
        &h,
        &[
            "break bump",
            "continue",
            &a,
            "x/i $pc",
            "monitor icount",
            "stepi",
            &b,
            "info registers eip",
            "x/i $pc",
            "monitor icount",
            "p counter",
        ],
    );
    let ctx = context(&out, &h);
    let before = section(&out, "A");
    assert!(before.contains("addl   $0x1,0x"), "{ctx}");
    let after = section(&out, "B");
    // The add is 7 bytes (83 05 disp32 imm8); next comes pop ebp.
    assert_eq!(reg(after, "eip"), g.write_counter + 7, "{ctx}");
    assert!(after.contains("pop    %ebp"), "{ctx}");
    assert_eq!(icount(after), icount(before) + 1, "{ctx}");
    assert!(after.contains("$1 = 1"), "{ctx}");
}

#[test]
fn watchpoint_and_reverse_continue_find_the_last_writer() {
    let g = guest();
    let h = start_guest();
    let (a, b) = (mark("A"), mark("B"));
    let out = debug_guest(
        &h,
        &[
            "watch counter",
            "continue",
            "continue",
            "continue",
            &a,
            "info registers eip",
            "monitor icount",
            "reverse-continue",
            &b,
            "info registers eip",
            "x/i $pc",
            "p counter",
            "monitor icount",
        ],
    );
    let ctx = context(&out, &h);
    assert!(out.contains("Hardware watchpoint 1: counter"), "{ctx}");
    for (old, new) in [(0, 1), (1, 2), (2, 3)] {
        assert!(
            out.contains(&format!("Old value = {old}\nNew value = {new}\n")),
            "{ctx}"
        );
    }
    // Forward, gdb stops right after the writing instruction.
    let fwd = section(&out, "A");
    assert_eq!(reg(fwd, "eip"), g.write_counter + 7, "{ctx}");
    assert_eq!(icount(fwd), icount_of_write(2) + 1, "{ctx}");
    // Backward, right before it: the add inside bump, with counter's old
    // value (gdb reports the change as seen going backward).
    let back = section(&out, "B");
    assert!(
        out.contains("Old value = 3\nNew value = 2\n"),
        "reverse-continue must report the watchpoint\n{ctx}"
    );
    assert_eq!(reg(back, "eip"), g.write_counter, "{ctx}");
    assert!(back.contains("<bump+3>"), "{ctx}");
    assert!(
        back.contains(&format!("addl   $0x1,{:#x}", g.counter)),
        "{ctx}"
    );
    assert!(back.contains("$1 = 2"), "{ctx}");
    assert_eq!(icount(back), icount_of_write(2), "{ctx}");
}

#[test]
fn reverse_stepi_then_stepi_returns_to_the_same_state() {
    let g = guest();
    let h = start_guest();
    let (a, b, c, end) = (mark("A"), mark("B"), mark("C"), mark("END"));
    // From right after the second iteration's `ret` (ESP, EBP and the
    // stack changed by the call/push/pop/ret before), three instructions
    // back through the ret, pop and the add (a memory write), then
    // forward again.
    let after_call = format!("break *{:#x}", g.after_call);
    let out = debug_guest(
        &h,
        &[
            &after_call,
            "continue",
            "continue",
            &a,
            "info registers",
            "x/4xw $esp - 8",
            "p counter",
            "monitor icount",
            &end,
            "reverse-stepi",
            "reverse-stepi",
            "reverse-stepi",
            &b,
            "info registers eip",
            "p counter",
            "monitor icount",
            &end,
            "stepi",
            "stepi",
            "stepi",
            &c,
            "info registers",
            "x/4xw $esp - 8",
            "p counter",
            "monitor icount",
        ],
    );
    let ctx = context(&out, &h);
    let (before, back, again) = (section(&out, "A"), section(&out, "B"), section(&out, "C"));
    assert_eq!(reg(before, "eip"), g.after_call, "{ctx}");
    assert_eq!(reg(back, "eip"), g.write_counter, "{ctx}");
    assert!(before.contains("$1 = 2"), "{ctx}");
    assert!(back.contains("$2 = 1"), "{ctx}");
    assert_eq!(icount(back), icount(before) - 3, "{ctx}");
    assert_eq!(icount(again), icount(before), "{ctx}");
    // Every register, the stack and counter as they were.
    let strip = |s: &str| s.replace("$1 = ", "$N = ").replace("$3 = ", "$N = ");
    assert_eq!(strip(again), strip(before), "{ctx}");
    assert!(again.contains("eflags"), "all registers shown\n{ctx}");
}

#[test]
fn reverse_finish_goes_back_to_the_call_in_main() {
    let g = guest();
    let h = start_guest();
    let a = mark("A");
    let out = debug_guest(
        &h,
        &[
            "break bump",
            "continue",
            "continue",
            "delete",
            "reverse-finish",
            &a,
            "info registers eip",
            "x/i $pc",
            "monitor icount",
        ],
    );
    let ctx = context(&out, &h);
    let back = section(&out, "A");
    assert_eq!(reg(back, "eip"), g.call_bump, "{ctx}");
    assert_eq!(g.call_bump, g.main + 8);
    assert!(back.contains("<main+8>"), "{ctx}");
    assert!(
        back.contains(&format!("call   {:#x} <bump>", g.bump)),
        "{ctx}"
    );
    // The second iteration's call.
    assert_eq!(icount(back), icount_of_write(1) - 3, "{ctx}");
}

#[test]
fn reverse_continue_without_breakpoints_stops_at_the_beginning_of_history() {
    let h = start_guest();
    let a = mark("A");
    let out = debug_guest(
        &h,
        &[
            "break bump",
            "continue",
            "continue",
            "continue",
            "delete",
            "reverse-continue",
            &a,
            "info registers eip",
            "monitor icount",
        ],
    );
    let ctx = context(&out, &h);
    assert!(
        out.contains("\nNo more reverse-execution history.\n"),
        "{ctx}"
    );
    let start = section(&out, "A");
    assert_eq!(reg(start, "eip"), LOAD + CODE_OFF as u64, "{ctx}");
    assert_eq!(icount(start), 0, "{ctx}");
    // The history known reaches the third hit.
    assert!(
        start.contains(&format!("(history 0..={})", icount_of_write(2))),
        "{ctx}"
    );
}

#[test]
fn monitor_commands_print_help_checkpoints_and_system_registers() {
    let h = start_guest();
    let (a, b, c, d, e) = (mark("A"), mark("B"), mark("C"), mark("D"), mark("E"));
    let out = debug_guest(
        &h,
        &[
            &a,
            "monitor help",
            &b,
            "monitor checkpoints",
            &c,
            "monitor info sysregs",
            &d,
            "monitor seek 20",
            "maintenance flush register-cache",
            "monitor icount",
            "info registers eip",
            "p counter",
            &e,
            "monitor frobnicate",
        ],
    );
    let ctx = context(&out, &h);
    let help = section(&out, "A");
    for cmd in [
        "monitor icount",
        "monitor seek N",
        "monitor checkpoints",
        "monitor info sysregs",
        "monitor help",
    ] {
        assert!(help.contains(cmd), "help lists {cmd}\n{ctx}");
    }
    let cps = section(&out, "B");
    assert!(cps.contains("checkpoints"), "{ctx}");
    assert!(
        cps.lines()
            .any(|l| l.trim().starts_with("icount") && l.contains(" 0 ")),
        "the checkpoint at icount 0 is listed\n{ctx}"
    );
    let sys = section(&out, "C");
    assert!(sys.contains("vCPU 0: protected mode, CPL 0"), "{ctx}");
    // Multiboot state: PE set, paging off, flat 4 GiB segments.
    assert!(sys.contains("cr0  0x0000000060000011 [PE"), "{ctx}");
    assert!(sys.contains("cr3  0x0000000000000000"), "{ctx}");
    assert!(sys.contains("efer 0x0000000000000000"), "{ctx}");
    assert!(sys.contains("gdtr base="), "{ctx}");
    assert!(sys.contains("idtr base="), "{ctx}");
    let seek = section(&out, "D");
    assert!(seek.contains("now at icount 20"), "{ctx}");
    assert_eq!(
        icount(&seek[seek.find("icount 20 (").unwrap()..]),
        20,
        "{ctx}"
    );
    // icount 20: in the second iteration, past its write (at 16).
    assert!(seek.contains("$1 = 2"), "{ctx}");
    assert!(
        section(&out, "E").contains("unknown monitor command `frobnicate`"),
        "{ctx}"
    );
}

#[test]
fn after_detach_the_guest_runs_to_its_debug_exit() {
    let mut h = start_guest();
    let out = h.gdb(
        Some(&guest().elf),
        &["break bump", "continue", "detach"],
        GDB_TIMEOUT,
    );
    let ctx = context(&out, &h);
    assert!(out.contains("Breakpoint 1, "), "{ctx}");
    assert!(out.contains("[Inferior 1 (process 1) detached]"), "{ctx}");
    let status = h.wait_exit(Duration::from_secs(30));
    let ctx = context(&out, &h);
    assert_eq!(status, Some(EXIT_STATUS), "{ctx}");
    assert!(
        h.stderr_text().contains("gdb detached; the guest runs on"),
        "{ctx}"
    );
}

#[test]
fn writing_in_the_past_starts_a_new_branch() {
    let h = start_guest();
    let (a, b) = (mark("A"), mark("B"));
    let out = debug_guest(
        &h,
        &[
            "break bump",
            "continue",
            "continue",
            "continue",
            "reverse-continue",
            "reverse-continue",
            &a,
            "monitor icount",
            "p counter",
            "set var counter = 100",
            &b,
            "monitor icount",
            "delete",
            "watch counter",
            "continue",
        ],
    );
    let ctx = context(&out, &h);
    // Back at the first hit, with history known up to the third.
    let past = section(&out, "A");
    let first = icount_of_write(0);
    assert!(
        past.contains(&format!(
            "icount {first} (history 0..={})",
            icount_of_write(2)
        )),
        "{ctx}"
    );
    assert!(past.contains("$1 = 0"), "{ctx}");
    // The write drops the history after the present...
    let branch = section(&out, "B");
    assert!(
        branch.contains(&format!("icount {first} (history 0..={first})")),
        "{ctx}"
    );
    assert!(
        h.stderr_text().contains(&format!(
            "changed the machine at icount {first}: the history after it is dropped \
             (a new branch starts here)"
        )),
        "{ctx}"
    );
    // ...and the run goes on from the changed machine.
    assert!(out.contains("Old value = 100\nNew value = 101\n"), "{ctx}");
}

#[test]
fn a_replay_refuses_writes_and_ends_with_its_trace() {
    let g = guest();
    let trace = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("gdb-guest-{}.hsr", std::process::id()));
    let rec = Command::new(env!("CARGO_BIN_EXE_hindsight"))
        .args(["run", "--multiboot", g.elf.to_str().unwrap(), "--record"])
        .arg(&trace)
        .output()
        .unwrap();
    assert_eq!(rec.status.code(), Some(EXIT_STATUS), "{rec:?}");
    let h = Hindsight::start(&["replay", trace.to_str().unwrap(), "--gdb-arch", "i386"]);
    let (a, b, c) = (mark("A"), mark("B"), mark("C"));
    let out = debug_guest(
        &h,
        &[
            "break bump",
            "continue",
            "continue",
            &a,
            "set var counter = 100",
            "set var $eax = 5",
            "p counter",
            "p/x $eax",
            &b,
            "delete",
            "continue",
            &c,
            "info registers eip",
            "monitor icount",
        ],
    );
    let _ = std::fs::remove_file(&trace);
    let ctx = context(&out, &h);
    let refused = section(&out, "A");
    assert!(
        refused.contains(&format!("Cannot access memory at address {:#x}", g.counter)),
        "{ctx}"
    );
    assert!(
        refused.contains("Could not write registers; remote failure reply 'E01'"),
        "{ctx}"
    );
    assert!(refused.contains("$1 = 1"), "counter unchanged\n{ctx}");
    assert!(refused.contains("$2 = 0x2badb002"), "eax unchanged\n{ctx}");
    assert!(
        h.stderr_text()
            .contains("history is fixed in a replay: cannot change the machine at icount"),
        "{ctx}"
    );
    // Continuing runs to the end of the recording: the hlt after the
    // debug exit's `out`, past every instruction of the run.
    assert!(
        section(&out, "B").contains("No more reverse-execution history."),
        "{ctx}"
    );
    let end = section(&out, "C");
    let total = 5 + 8 * ITERATIONS as u64 + 2;
    assert_eq!(icount(end), total, "{ctx}");
    assert_eq!(reg(end, "eip"), g.call_bump + 12, "{ctx}");
}

// ---------------------------------------------------------------------
// Debian's Linux guest.

/// The guest image cache shared with `tests/boot.rs` (fetched once per
/// test process; network needed on the first run only), and the kernel's
/// System.map that `hindsight fetch` writes.
fn linux_images() -> &'static (PathBuf, PathBuf) {
    static IMAGES: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let (dir, stdout) = guest_cache::fetch();
        let map = stdout
            .lines()
            .find_map(|l| l.strip_prefix("system_map:"))
            .unwrap_or_else(|| panic!("hindsight fetch printed no 'system_map:' line\n{stdout}"));
        (dir.clone(), PathBuf::from(map.trim()))
    })
}

/// A System.map: (address, name) by address.
struct SystemMap(Vec<(u64, String)>);

impl SystemMap {
    fn load(path: &Path) -> SystemMap {
        let text = std::fs::read_to_string(path).unwrap();
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let addr = u64::from_str_radix(w.next()?, 16).ok()?;
                Some((addr, w.nth(1)?.to_string()))
            })
            .collect();
        syms.sort();
        SystemMap(syms)
    }

    fn addr(&self, name: &str) -> u64 {
        let Some((a, _)) = self.0.iter().find(|(_, n)| n == name) else {
            panic!("{name} is not in the System.map");
        };
        *a
    }

    /// `name+0xoff` of the symbol at or before `pc`.
    fn describe(&self, pc: u64) -> String {
        let i = self.0.partition_point(|(a, _)| *a <= pc);
        let (a, n) = &self.0[i.saturating_sub(1)];
        format!("{n}+{:#x}", pc - a)
    }
}

#[test]
fn linux_kernel_under_gdb_seeks_steps_back_and_finds_the_jiffies_writer() {
    let started = Instant::now();
    let (cache, map_path) = linux_images();
    let map = SystemMap::load(map_path);
    let do_idle = map.addr("do_idle");
    let jiffies_64 = map.addr("jiffies_64");
    let h = Hindsight::start(&[
        "boot",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--run",
        "echo hi",
    ]);
    let m: Vec<String> = ["A", "B", "C", "D", "E", "F", "END"]
        .iter()
        .map(|n| mark(n))
        .collect();
    let brk = format!("break *{do_idle:#x}");
    let watch = format!("watch *(unsigned long *){jiffies_64:#x}");
    let out = h.gdb(
        None,
        &[
            &m[0],
            "monitor seek 1000000000",
            "maintenance flush register-cache",
            "monitor icount",
            "p/x $rip",
            &m[1],
            "reverse-stepi",
            "monitor icount",
            &m[2],
            "stepi",
            "monitor icount",
            "p/x $rip",
            &m[3],
            "p/x $cr3",
            "p/x $efer",
            "p/x $gs_base",
            "x/i $pc",
            &m[4],
            &brk,
            "continue",
            "p/x $pc",
            "monitor icount",
            &m[5],
            "delete",
            &watch,
            "reverse-continue",
            "p/x $pc",
            "x/i $pc",
            "monitor icount",
            &m[6],
            "kill",
        ],
        Duration::from_secs(240),
    );
    let ctx = context(&out, &h);
    let kernel = 0xffff_ffff_8000_0000u64;

    let seek = section(&out, "A");
    assert!(seek.contains("now at icount 1000000000"), "{ctx}");
    assert_eq!(
        icount(&seek[seek.find("icount 1000000000 (").unwrap()..]),
        1_000_000_000
    );
    let rip = printed_hex(seek);
    assert!(rip >= kernel, "the kernel runs at 1e9: rip {rip:#x}\n{ctx}");
    assert_eq!(icount(section(&out, "B")), 999_999_999, "{ctx}");
    let fwd = section(&out, "C");
    assert_eq!(icount(fwd), 1_000_000_000, "{ctx}");
    assert_eq!(
        printed_hex(fwd),
        rip,
        "stepi returns to the same rip\n{ctx}"
    );

    let sys: Vec<u64> = section(&out, "D")
        .lines()
        .filter_map(|l| l.strip_prefix('$').and_then(|r| r.split_once(" = 0x")))
        .map(|(_, v)| u64::from_str_radix(v.trim(), 16).unwrap())
        .collect();
    let [cr3, efer, gs_base] = sys[..] else {
        panic!("three values expected\n{ctx}");
    };
    assert!(cr3 != 0 && cr3 & 0xfff == 0, "cr3 {cr3:#x}\n{ctx}");
    assert_eq!(efer & 0x500, 0x500, "EFER.LME and LMA in long mode\n{ctx}");
    assert!(
        gs_base >= 0xffff_8000_0000_0000,
        "per-CPU base {gs_base:#x}\n{ctx}"
    );
    assert!(
        section(&out, "D").contains(&format!("=> {rip:#x}:")),
        "x/i at the kernel's pc\n{ctx}"
    );

    let idle = section(&out, "E");
    assert!(
        idle.contains(&format!("Breakpoint 1, {do_idle:#018x} in ?? ()")),
        "{ctx}"
    );
    assert_eq!(printed_hex(idle), do_idle, "{ctx}");
    let idle_at = icount(idle);
    assert!(idle_at > 1_000_000_000, "{ctx}");

    let back = section(&out, "F");
    assert!(
        back.contains("Hardware watchpoint 2: *(unsigned long *)0x"),
        "{ctx}"
    );
    // Going backward gdb shows the value after the write as Old, and the
    // one before it as New.
    let value = |label: &str| -> u64 {
        let Some(v) = back.lines().find_map(|l| l.strip_prefix(label)) else {
            panic!("no '{label}' line\n{ctx}");
        };
        v.trim().parse().unwrap()
    };
    let (after, before) = (value("Old value = "), value("New value = "));
    assert!(
        before < after,
        "jiffies_64 grows: {before} -> {after}\n{ctx}"
    );
    let pc = printed_hex(back);
    let writer = map.describe(pc);
    let writer_at = icount(back);
    assert!(writer_at < idle_at, "{ctx}");
    eprintln!(
        "jiffies_64 ({jiffies_64:#x}) last written before icount {idle_at} (do_idle) at icount \
         {writer_at}, pc {pc:#x} = {writer} ({before} -> {after})"
    );
    let name = writer.split('+').next().unwrap_or_default();
    assert!(
        ["jiffies", "tick", "timer"]
            .iter()
            .any(|w| name.contains(w)),
        "the last writer of jiffies_64 is the timer tick code, not {writer}\n{ctx}"
    );
    eprintln!(
        "Linux gdb session: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn ctrl_c_stops_a_running_guest() {
    // A guest that never ends: `jmp $` (EB FE).
    let spin = [0xEB, 0xFE];
    let elf =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gdb-spin-{}.elf", std::process::id()));
    std::fs::write(
        &elf,
        common::elf32_multiboot(&spin, 0, common::good_checksum(0)),
    )
    .unwrap();
    let h = Hindsight::start(&[
        "run",
        "--multiboot",
        elf.to_str().unwrap(),
        "--gdb-arch",
        "i386",
    ]);
    let (run, a, b) = (mark(RUNNING), mark("A"), mark("B"));
    let out = h.gdb_interrupting(
        None,
        &[
            &run,
            "continue",
            &a,
            "info registers eip",
            "monitor icount",
            "reverse-stepi",
            &b,
            "info registers eip",
            "monitor icount",
            "kill",
        ],
        GDB_TIMEOUT,
        Some(Duration::from_millis(500)),
    );
    let _ = std::fs::remove_file(&elf);
    let ctx = context(&out, &h);
    assert!(
        out.contains("Program received signal SIGINT, Interrupt."),
        "{ctx}"
    );
    let (stopped, back) = (section(&out, "A"), section(&out, "B"));
    let entry = LOAD + CODE_OFF as u64;
    assert_eq!(reg(stopped, "eip"), entry, "{ctx}");
    let n = icount(stopped);
    assert!(n > 1_000_000, "it ran for a while: icount {n}\n{ctx}");
    assert_eq!(reg(back, "eip"), entry, "{ctx}");
    assert_eq!(icount(back), n - 1, "{ctx}");
}

#[test]
fn the_guest_exiting_under_gdb_ends_history_and_kill_keeps_its_status() {
    let g = guest();
    let mut h = start_guest();
    let (a, b) = (mark("A"), mark("B"));
    let out = h.gdb(
        Some(&g.elf),
        &[
            "continue",
            &a,
            "info registers eip",
            "monitor icount",
            "p counter",
            "watch counter",
            "reverse-continue",
            &b,
            "info registers eip",
            "p counter",
            "kill",
        ],
        GDB_TIMEOUT,
    );
    let ctx = context(&out, &h);
    // The debug exit ends the history: gdb is told so, with the status.
    let total = 5 + 8 * ITERATIONS as u64 + 2;
    assert!(
        out.contains(&format!(
            "the guest exited with status {EXIT_STATUS} at icount {total}"
        )),
        "{ctx}"
    );
    assert!(out.contains("No more reverse-execution history."), "{ctx}");
    let end = section(&out, "A");
    assert_eq!(icount(end), total, "{ctx}");
    assert!(end.contains(&format!("$1 = {ITERATIONS}")), "{ctx}");
    // The machine can still be run backward from there.
    let back = section(&out, "B");
    assert_eq!(reg(back, "eip"), g.write_counter, "{ctx}");
    assert!(back.contains(&format!("$2 = {}", ITERATIONS - 1)), "{ctx}");
    let status = h.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status,
        Some(EXIT_STATUS),
        "kill keeps the guest's status\n{ctx}"
    );
}
