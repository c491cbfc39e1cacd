//! End-to-end: the real gdb client (Debian's gdb) against the stub serving
//! a fake [`Debuggee`].
//!
//! The fake machine: 2 MiB of RAM, vCPU 0 in 64-bit mode with identity
//! page tables (2 MiB pages over the first GiB), running NOPs at
//! `CODE`: one instruction per instruction count, so rip = CODE + icount.
//! The instruction at icount `WRITE_AT` also stores 42 at `DATA`. History
//! starts at icount 0; running forward to icount `end` exits the guest
//! (or stops the machine). vCPU 1 is halted.
//!
//! gdb is required: when it is missing these tests fail (they do not skip).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hindsight_cpu::debug::DebugSet;
use hindsight_cpu::state::{attr, cr, Segment};
use hindsight_cpu::{Cpu, SegReg};
use hindsight_gdb::regs::linear_pc;
use hindsight_gdb::{
    serve, ArchView, Debuggee, GdbError, GdbOptions, Resume, SessionEnd, StopEvent,
};

const RAM: usize = 2 << 20;
const PML4: u64 = 0x1000;
const CODE: u64 = 0x10_0000;
const DATA: u64 = 0x18_0000;
const WRITE_AT: u64 = 20;
const FS_BASE: u64 = 0x7f12_3456_7000;

/// How the fake's history ends going forward.
#[derive(Clone, Debug)]
enum End {
    Exit(i32),
    Stop(String),
}

struct Fake {
    cpus: Vec<Cpu>,
    ram: Vec<u8>,
    set: DebugSet,
    /// Forward runs end at this icount.
    end: u64,
    end_event: End,
    /// Every resume asked for.
    resumes: Vec<Resume>,
    /// Every set installed.
    sets: Vec<DebugSet>,
    /// History is fixed (a replay): register and memory writes are refused.
    frozen: bool,
    /// Set when a forward run starts (for sending Ctrl-C at the right time).
    running: Arc<AtomicBool>,
}

fn long_mode_cpu(index: u32, rip: u64) -> Cpu {
    let mut c = Cpu::new(index);
    c.cr0 = cr::CR0_PE | cr::CR0_PG | cr::CR0_ET | cr::CR0_NE | cr::CR0_WP;
    c.cr4 = cr::CR4_PAE | cr::CR4_OSFXSR;
    c.cr3 = PML4;
    c.efer = cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE | cr::EFER_SCE;
    c.seg[SegReg::Cs as usize] = Segment {
        selector: 0x10,
        base: 0,
        limit: u32::MAX,
        attr: attr::CODE_RX | attr::LONG | attr::GRAN,
    };
    for s in [SegReg::Ds, SegReg::Es, SegReg::Ss] {
        c.seg[s as usize] = Segment {
            selector: 0x18,
            base: 0,
            limit: u32::MAX,
            attr: attr::DATA_RW | attr::DB | attr::GRAN,
        };
    }
    c.seg[SegReg::Fs as usize].base = FS_BASE;
    c.seg[SegReg::Gs as usize].base = 0xffff_8880_0000_0000;
    c.msr.kernel_gs_base = 0x1234_5678;
    c.update_mode();
    c.rip = rip;
    c.gpr[4] = 0x1f_f000; // rsp
    c
}

impl Fake {
    fn new(end: u64, end_event: End) -> Fake {
        let mut ram = vec![0u8; RAM];
        let mut put =
            |a: u64, v: u64| ram[a as usize..a as usize + 8].copy_from_slice(&v.to_le_bytes());
        put(PML4, 0x2000 | 3);
        put(0x2000, 0x3000 | 3);
        for i in 0..512u64 {
            put(0x3000 + 8 * i, (i << 21) | 0x83);
        }
        ram[CODE as usize..CODE as usize + 0x1000].fill(0x90);
        ram[DATA as usize..DATA as usize + 16]
            .copy_from_slice(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
        let mut halted = long_mode_cpu(1, CODE + 0x800);
        halted.halted = true;
        Fake {
            cpus: vec![long_mode_cpu(0, CODE), halted],
            ram,
            set: DebugSet::default(),
            end,
            end_event,
            resumes: Vec::new(),
            sets: Vec::new(),
            frozen: false,
            running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// vCPU 0 in real mode at 07C0:0010 (linear 0x7c10) on `mov ax, 0x1234`.
    fn real_mode() -> Fake {
        let mut f = Fake::new(1000, End::Exit(0));
        let mut c = Cpu::new(0);
        c.seg[SegReg::Cs as usize] = Segment::real(0x07c0, attr::CODE_RX);
        c.rip = 0x10;
        c.update_mode();
        f.cpus[0] = c;
        f.ram[0x7c10..0x7c13].copy_from_slice(&[0xb8, 0x34, 0x12]);
        f
    }

    fn icount(&self) -> u64 {
        self.cpus[0].icount
    }

    fn tick(&mut self, forward: bool) {
        for c in &mut self.cpus {
            if forward {
                c.icount += 1;
            } else {
                c.icount -= 1;
            }
        }
        let c = &mut self.cpus[0];
        c.rip = if forward { c.rip + 1 } else { c.rip - 1 };
    }

    /// One instruction forward; the watchpoint it hit, if any.
    fn forward(&mut self) -> Option<StopEvent> {
        let mut hit = None;
        if self.icount() == WRITE_AT {
            self.ram[DATA as usize] = 42;
            hit = self.set.watch_hit(DATA, 1, true);
        }
        self.tick(true);
        hit.map(|watch| StopEvent::Watch {
            vcpu: 0,
            watch,
            addr: DATA,
        })
    }

    /// One instruction backward; the watchpoint it undid, if any.
    fn backward(&mut self) -> Option<StopEvent> {
        let mut hit = None;
        if self.icount() - 1 == WRITE_AT {
            self.ram[DATA as usize] = 0;
            hit = self.set.watch_hit(DATA, 1, true);
        }
        self.tick(false);
        hit.map(|watch| StopEvent::Watch {
            vcpu: 0,
            watch,
            addr: DATA,
        })
    }

    fn at_breakpoint(&self) -> bool {
        self.set.breakpoints.contains(&linear_pc(&self.cpus[0]))
    }

    fn end_event(&self) -> StopEvent {
        match &self.end_event {
            End::Exit(status) => StopEvent::Exited {
                status: *status,
                reason: "the guest wrote to the debug-exit port".into(),
            },
            End::Stop(reason) => StopEvent::Stopped {
                vcpu: 0,
                reason: reason.clone(),
            },
        }
    }
}

impl Debuggee for Fake {
    fn vcpu_count(&self) -> usize {
        self.cpus.len()
    }
    fn cpu(&self, vcpu: usize) -> &Cpu {
        &self.cpus[vcpu]
    }
    fn edit_cpu(&mut self, vcpu: usize, f: &mut dyn FnMut(&mut Cpu)) -> Result<(), String> {
        if self.frozen {
            return Err("a replay's history is fixed".into());
        }
        f(&mut self.cpus[vcpu]);
        Ok(())
    }
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        match gpa.checked_add(buf.len() as u64) {
            Some(end) if end <= RAM as u64 => {
                buf.copy_from_slice(&self.ram[gpa as usize..end as usize]);
                true
            }
            _ => false,
        }
    }
    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> Result<(), String> {
        if self.frozen {
            return Err("a replay's history is fixed".into());
        }
        match gpa.checked_add(data.len() as u64) {
            Some(end) if end <= RAM as u64 => {
                self.ram[gpa as usize..end as usize].copy_from_slice(data);
                Ok(())
            }
            _ => Err(format!("{gpa:#x} is outside RAM")),
        }
    }
    fn icount(&self) -> u64 {
        Fake::icount(self)
    }
    fn set_debug(&mut self, set: DebugSet) {
        self.sets.push(set.clone());
        self.set = set;
    }
    fn resume(&mut self, how: Resume, interrupted: &mut dyn FnMut() -> bool) -> StopEvent {
        self.resumes.push(how);
        match how {
            Resume::Step => {
                if self.icount() >= self.end {
                    return self.end_event();
                }
                self.forward().unwrap_or(StopEvent::Step { vcpu: 0 })
            }
            Resume::ReverseStep => {
                if self.icount() == 0 {
                    return StopEvent::HistoryBegin;
                }
                self.backward().unwrap_or(StopEvent::Step { vcpu: 0 })
            }
            Resume::Continue => {
                self.running.store(true, Ordering::SeqCst);
                for n in 0u64.. {
                    if self.icount() >= self.end {
                        return self.end_event();
                    }
                    if n % 64 == 0 && interrupted() {
                        return StopEvent::Interrupted { vcpu: 0 };
                    }
                    if let Some(w) = self.forward() {
                        return w;
                    }
                    if self.at_breakpoint() {
                        return StopEvent::Breakpoint { vcpu: 0 };
                    }
                }
                unreachable!()
            }
            Resume::ReverseContinue => loop {
                if self.icount() == 0 {
                    return StopEvent::HistoryBegin;
                }
                if let Some(w) = self.backward() {
                    return w;
                }
                if self.at_breakpoint() {
                    return StopEvent::Breakpoint { vcpu: 0 };
                }
            },
        }
    }
    fn seek(&mut self, icount: u64, _: &mut dyn FnMut(u64) -> bool) -> Result<u64, String> {
        if icount > self.end {
            return Err(format!(
                "icount {icount} is past the end of history ({})",
                self.end
            ));
        }
        while self.icount() < icount {
            self.forward();
        }
        while self.icount() > icount {
            self.backward();
        }
        Ok(icount)
    }
    fn checkpoints(&self) -> Vec<String> {
        vec!["checkpoint 0 at icount 0 (fake)".into()]
    }
    fn history(&self) -> (u64, u64) {
        (0, self.end)
    }
}

/// Finds gdb or fails the test loudly.
fn gdb_path() -> &'static str {
    match Command::new("gdb").arg("--version").output() {
        Ok(o) if o.status.success() => "gdb",
        other => panic!(
            "these tests need the real gdb client (Debian: apt-get install gdb); \
             running `gdb --version` gave {other:?}"
        ),
    }
}

/// Runs gdb in batch mode with `cmds` against a server for `fake`;
/// returns gdb's output, how serving ended and the fake afterwards.
fn run_gdb(
    fake: Fake,
    opts: GdbOptions,
    cmds: &[&str],
) -> (String, Result<SessionEnd, GdbError>, Fake) {
    run_gdb_interrupted(fake, opts, cmds, false)
}

/// [`run_gdb`], sending gdb a SIGINT (a Ctrl-C at its terminal) once
/// the machine runs forward, if `sigint` is set.
fn run_gdb_interrupted(
    fake: Fake,
    opts: GdbOptions,
    cmds: &[&str],
    sigint: bool,
) -> (String, Result<SessionEnd, GdbError>, Fake) {
    let running = Arc::clone(&fake.running);
    let gdb = gdb_path();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = thread::spawn(move || {
        let mut f = fake;
        let r = serve(listener, &mut f, &opts);
        (r, f)
    });
    let mut args: Vec<String> = vec!["-nx".into(), "-batch".into()];
    let target = format!("target remote 127.0.0.1:{port}");
    for c in [
        "set pagination off",
        "set width 0",
        "set confirm off",
        &target,
    ]
    .into_iter()
    .chain(cmds.iter().copied())
    {
        args.push("-ex".into());
        args.push(c.into());
    }
    // stdout and stderr into one file, so the text keeps gdb's order.
    let log = std::env::temp_dir().join(format!("hindsight-gdb-{}-{port}.log", std::process::id()));
    let file = std::fs::File::create(&log).expect("log file");
    let mut child = Command::new(gdb)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().expect("dup")))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("gdb starts");
    if sigint {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !running.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "gdb never resumed the machine");
            thread::sleep(Duration::from_millis(10));
        }
        thread::sleep(Duration::from_millis(100));
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -INT gdb");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gdb did not finish within 60 s (commands: {cmds:?})");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&log).expect("gdb output");
    let _ = std::fs::remove_file(&log);
    let (r, f) = server.join().expect("server thread");
    (text, r, f)
}

#[track_caller]
fn has(out: &str, needle: &str) {
    assert!(
        out.contains(needle),
        "gdb output lacks {needle:?}:\n------\n{out}\n------"
    );
}

#[track_caller]
fn lacks(out: &str, needle: &str) {
    assert!(
        !out.contains(needle),
        "gdb output has {needle:?}:\n------\n{out}\n------"
    );
}

fn x86_64() -> GdbOptions {
    GdbOptions {
        arch: ArchView::X86_64,
        wait: true,
    }
}

#[test]
fn registers_include_the_system_registers() {
    let (out, end, _) = run_gdb(
        Fake::new(1000, End::Exit(0)),
        x86_64(),
        &[
            "echo ==rip\\n",
            "p/x $rip",
            "echo ==cr3\\n",
            "p/x $cr3",
            "p/x $fs_base",
            "p/x $gs_base",
            "p/x $k_gs_base",
            "p/x $efer",
            "p $cr0",
            "p/x $rsp",
            "info registers",
            "info all-registers",
        ],
    );
    has(&out, "==rip\n$1 = 0x100000");
    has(&out, "==cr3\n$2 = 0x1000");
    has(&out, "$3 = 0x7f1234567000");
    has(&out, "$4 = 0xffff888000000000");
    has(&out, "$5 = 0x12345678");
    has(&out, "$6 = 0xd01");
    has(&out, "[ PE ET NE WP PG ]");
    has(&out, "$8 = 0x1ff000");
    // `info registers` lists the system registers too.
    for r in [
        "rip ",
        "eflags ",
        "fs_base ",
        "k_gs_base ",
        "cr0 ",
        "cr3 ",
        "cr4 ",
        "efer ",
    ] {
        has(&out, &format!("\n{r}"));
    }
    // `info all-registers` adds x87 and SSE.
    for r in ["st0 ", "fctrl ", "xmm15 ", "mxcsr "] {
        has(&out, &format!("\n{r}"));
    }
    lacks(&out, "Remote 'g' packet reply is too long");
    lacks(&out, "internal-error");
    lacks(&out, "unknown register");
    assert!(matches!(end, Ok(SessionEnd::Detached)), "{end:?}");
}

#[test]
fn memory_and_register_reads_and_writes() {
    let (out, end, f) = run_gdb(
        Fake::new(1000, End::Exit(0)),
        x86_64(),
        &[
            "echo ==code\\n",
            "x/4xb 0x100000",
            "echo ==data\\n",
            "x/4xb 0x180004",
            "set {unsigned char}0x180008 = 0x55",
            "echo ==written\\n",
            "x/1xb 0x180008",
            "set $rax = 0x1234",
            "set $fs_base = 0x5000",
            "echo ==rax\\n",
            "p/x $rax",
            "echo ==unmapped\\n",
            "x/4xb 0x8000000000",
            "echo ==ram-end\\n",
            "x/4xb 0x1ffffe",
            "echo ==i\\n",
            "x/2i $pc",
        ],
    );
    has(&out, "==code\n0x100000:\t0x90\t0x90\t0x90\t0x90");
    has(&out, "==data\n0x180004:\t0x04\t0x05\t0x06\t0x07");
    has(&out, "==written\n0x180008:\t0x55");
    has(&out, "==rax\n$1 = 0x1234");
    has(
        &out,
        "==unmapped\n0x8000000000:\tCannot access memory at address 0x8000000000",
    );
    // The last RAM bytes read, the rest is refused.
    has(
        &out,
        "==ram-end\n0x1ffffe:\t0x00\t0x00\tCannot access memory at address 0x200000",
    );
    has(&out, "=> 0x100000:\tnop");
    assert_eq!(f.ram[DATA as usize + 8], 0x55);
    assert_eq!(f.cpus[0].gpr[0], 0x1234);
    assert_eq!(f.cpus[0].seg[SegReg::Fs as usize].base, 0x5000);
    assert_eq!(f.cpus[0].gpr[1], 0, "other registers untouched");
    assert!(matches!(end, Ok(SessionEnd::Detached)), "{end:?}");
}

#[test]
fn break_continue_step_and_reverse() {
    let (out, end, f) = run_gdb(
        Fake::new(1000, End::Exit(0)),
        x86_64(),
        &[
            "break *0x100005",
            "continue",
            "echo ==pc1\\n",
            "p/x $pc",
            "stepi",
            "echo ==pc2\\n",
            "p/x $pc",
            "reverse-stepi",
            "echo ==pc3\\n",
            "p/x $pc",
            "stepi",
            "stepi",
            "break *0x100002",
            "reverse-continue",
            "echo ==pc4\\n",
            "p/x $pc",
            "reverse-continue",
            "echo ==pc5\\n",
            "p/x $pc",
            "monitor icount",
            "delete",
            "echo ==begin\\n",
            "reverse-continue",
            "echo ==pc6\\n",
            "p/x $pc",
            "reverse-stepi",
            "echo ==pc7\\n",
            "p/x $pc",
            "hbreak *0x100009",
            "continue",
            "echo ==pc8\\n",
            "p/x $pc",
        ],
    );
    has(
        &out,
        "Thread 1 hit Breakpoint 1, 0x0000000000100005 in ?? ()\n==pc1\n$1 = 0x100005",
    );
    has(&out, "==pc2\n$2 = 0x100006");
    has(&out, "==pc3\n$3 = 0x100005");
    // Backward from 0x100007 the nearer breakpoint (0x100005) comes first.
    has(
        &out,
        "Thread 1 hit Breakpoint 1, 0x0000000000100005 in ?? ()\n==pc4\n$4 = 0x100005",
    );
    has(
        &out,
        "Thread 1 hit Breakpoint 2, 0x0000000000100002 in ?? ()\n==pc5\n$5 = 0x100002",
    );
    has(&out, "icount 2 (history 0..=1000)");
    has(&out, "==begin\n\nNo more reverse-execution history.\n");
    has(&out, "==pc6\n$6 = 0x100000");
    has(&out, "==pc7\n$7 = 0x100000");
    has(
        &out,
        "Thread 1 hit Breakpoint 3, 0x0000000000100009 in ?? ()\n==pc8\n$8 = 0x100009",
    );
    assert!(f.resumes.contains(&Resume::ReverseStep));
    assert!(f.resumes.contains(&Resume::ReverseContinue));
    // Breakpoints were never written into guest memory.
    assert!(f.ram[CODE as usize..CODE as usize + 0x20]
        .iter()
        .all(|&b| b == 0x90));
    assert!(f.sets.iter().any(|s| s.breakpoints.contains(&0x100009)));
    assert!(
        f.set.is_empty(),
        "breakpoints are removed when the session ends"
    );
    assert!(matches!(end, Ok(SessionEnd::Detached)), "{end:?}");
}

#[test]
fn watchpoints_stop_with_the_address_both_ways() {
    let (out, end, f) = run_gdb(
        Fake::new(1000, End::Exit(0)),
        x86_64(),
        &[
            "watch *(unsigned char *)0x180000",
            "continue",
            "echo ==pc1\\n",
            "p/x $pc",
            "monitor icount",
            "reverse-continue",
            "echo ==pc2\\n",
            "p/x $pc",
            "monitor icount",
        ],
    );
    has(&out, "Hardware watchpoint 1: *(unsigned char *)0x180000");
    has(&out, "Old value = 0 '\\000'\nNew value = 42 '*'");
    has(&out, "==pc1\n$1 = 0x100015");
    has(&out, "icount 21 (history 0..=1000)");
    // Going back, the store is undone right before the storing instruction.
    has(&out, "Old value = 42 '*'\nNew value = 0 '\\000'");
    has(&out, "==pc2\n$2 = 0x100014");
    has(&out, "icount 20 (history 0..=1000)");
    assert!(f.sets.iter().any(|s| s.watchpoints.len() == 1
        && s.watchpoints[0].addr == DATA
        && s.watchpoints[0].len == 1));
    assert!(matches!(end, Ok(SessionEnd::Detached)), "{end:?}");
}

#[test]
fn monitor_commands() {
    let (out, end, f) = run_gdb(
        Fake::new(1000, End::Exit(0)),
        x86_64(),
        &[
            "monitor help",
            "monitor icount",
            "monitor seek 1e1",
            "maintenance flush register-cache",
            "echo ==pc\\n",
            "p/x $pc",
            "monitor seek 0x20",
            "monitor seek 5000",
            "monitor seek zz",
            "monitor checkpoints",
            "monitor info sysregs",
            "monitor status",
            "monitor frobnicate",
        ],
    );
    has(&out, "hindsight monitor commands:");
    has(&out, "icount 0 (history 0..=1000)");
    has(&out, "now at icount 10");
    has(&out, "maintenance flush register-cache");
    has(&out, "==pc\n$1 = 0x10000a");
    has(&out, "now at icount 32");
    has(
        &out,
        "seek 5000 failed: icount 5000 is past the end of history (1000)",
    );
    has(&out, "error: `zz` is not an instruction count");
    has(&out, "checkpoint 0 at icount 0 (fake)");
    has(
        &out,
        "vCPU 0: 64-bit long mode, CPL 0, 64-bit code, icount 32",
    );
    has(
        &out,
        "vCPU 1: 64-bit long mode, CPL 0, 64-bit code, icount 32, halted",
    );
    has(&out, "  cr3  0x0000000000001000");
    has(&out, "  efer 0x0000000000000d01 [SCE LME LMA NXE]");
    has(&out, "fs_base 0x7f1234567000");
    has(&out, "icount 32 (history 0..=1000), 2 vCPU(s); last stop:");
    has(&out, "error: unknown monitor command `frobnicate`");
    assert_eq!(f.icount(), 32);
    assert!(matches!(end, Ok(SessionEnd::Detached)), "{end:?}");
}

#[test]
fn seek_leaves_gdb_caches_stale_until_flushed() {
    let (out, _, _) = run_gdb(
        Fake::new(1000, End::Exit(0)),
        x86_64(),
        &[
            "p/x $pc",
            "monitor seek 10",
            "echo ==stale\\n",
            "p/x $pc",
            "maintenance flush register-cache",
            "echo ==fresh\\n",
            "p/x $pc",
        ],
    );
    // What the reminder after `seek` is for: gdb keeps its cached registers.
    has(&out, "==stale\n$2 = 0x100000");
    has(&out, "==fresh\n$3 = 0x10000a");
}

#[test]
fn two_vcpus_are_two_threads() {
    let (out, _, _) = run_gdb(
        Fake::new(1000, End::Exit(0)),
        x86_64(),
        &["info threads", "thread 2", "echo ==pc\\n", "p/x $pc"],
    );
    has(&out, "* 1    Thread 1.1 (vCPU 0, 64-bit long mode)");
    has(&out, "  2    Thread 1.2 (vCPU 1, 64-bit long mode, halted)");
    has(&out, "==pc\n$1 = 0x100800");
}

#[test]
fn i8086_view_disassembles_at_cs_times_16_plus_ip() {
    let (out, end, _) = run_gdb(
        Fake::real_mode(),
        GdbOptions {
            arch: ArchView::I8086,
            wait: true,
        },
        &[
            "show architecture",
            "echo ==i\\n",
            "x/i $pc",
            "echo ==regs\\n",
            "p/x $cs",
            "p/x $eip",
            "stepi",
            "echo ==after\\n",
            "p/x $pc",
        ],
    );
    has(&out, "i8086");
    has(&out, "==i\n=> 0x7c10:\tmov    $0x1234,%ax");
    has(&out, "==regs\n$1 = 0x7c0\n$2 = 0x7c10");
    has(&out, "==after\n$3 = 0x7c11");
    assert!(matches!(end, Ok(SessionEnd::Detached)), "{end:?}");
}

#[test]
fn i386_view_shows_32_bit_registers() {
    let (out, _, _) = run_gdb(
        Fake::new(1000, End::Exit(0)),
        GdbOptions {
            arch: ArchView::I386,
            wait: true,
        },
        &[
            "p/x $eip",
            "p/x $esp",
            "p/x $cr3",
            "p/x $fs_base",
            "info registers",
        ],
    );
    has(&out, "$1 = 0x100000");
    has(&out, "$2 = 0x1ff000");
    has(&out, "$3 = 0x1000");
    has(&out, "$4 = 0x34567000");
    has(&out, "\neax ");
    lacks(&out, "\nrax ");
    lacks(&out, "Remote 'g' packet reply is too long");
}

#[test]
fn guest_exit_is_the_end_of_history_and_kill_keeps_its_status() {
    let (out, end, _) = run_gdb(
        Fake::new(30, End::Exit(3)),
        x86_64(),
        &["continue", "reverse-stepi", "monitor icount", "kill"],
    );
    has(
        &out,
        "hindsight: the guest exited with status 3 at icount 30",
    );
    has(&out, "No more reverse-execution history.");
    has(&out, "icount 29");
    assert!(
        matches!(end, Ok(SessionEnd::Exited { status: 3 })),
        "{end:?}"
    );
}

#[test]
fn a_stopped_machine_is_a_signal_and_can_go_back() {
    let (out, end, _) = run_gdb(
        Fake::new(30, End::Stop("triple fault at 0010:100030".into())),
        x86_64(),
        &["continue", "reverse-stepi", "echo ==pc\\n", "p/x $pc"],
    );
    has(
        &out,
        "the machine stopped at icount 30 (vCPU 0): triple fault at 0010:100030",
    );
    has(&out, "received signal SIGSEGV");
    has(&out, "==pc\n$1 = 0x10001d");
    assert!(matches!(end, Ok(SessionEnd::Detached)), "{end:?}");
}

#[test]
fn without_wait_the_machine_runs_until_gdb_attaches() {
    let (out, end, f) = run_gdb(
        Fake::new(u64::MAX, End::Exit(0)),
        GdbOptions {
            arch: ArchView::X86_64,
            wait: false,
        },
        &["echo ==pc\\n", "p/x $pc"],
    );
    has(&out, "==pc\n$1 = 0x");
    assert_eq!(f.resumes.first(), Some(&Resume::Continue));
    assert!(f.icount() > 0, "the machine ran before gdb attached");
    assert!(matches!(end, Ok(SessionEnd::Detached)), "{end:?}");
}

#[test]
fn without_wait_a_guest_that_ended_first_is_kept_for_gdb() {
    let (out, end, _) = run_gdb(
        Fake::new(40, End::Exit(7)),
        GdbOptions {
            arch: ArchView::X86_64,
            wait: false,
        },
        &[
            "echo ==pc\\n",
            "p/x $pc",
            "reverse-stepi",
            "p/x $pc",
            "monitor status",
        ],
    );
    has(&out, "==pc\n$1 = 0x100028\n");
    has(&out, "$2 = 0x100027");
    has(&out, "last stop: vCPU 0 stepped");
    assert!(matches!(end, Ok(SessionEnd::Detached)), "{end:?}");
}

/// A raw protocol client, for what batch gdb cannot do.
struct Raw {
    s: TcpStream,
}

impl Raw {
    fn send(&mut self, body: &str) {
        let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        write!(self.s, "${body}#{sum:02x}").expect("send");
    }

    /// Reads one packet's body, or None when the connection closed.
    fn try_recv(&mut self) -> Option<String> {
        let mut b = [0u8; 1];
        let mut body = Vec::new();
        loop {
            self.s.read_exact(&mut b).ok()?;
            if b[0] == b'$' {
                break;
            }
        }
        loop {
            self.s.read_exact(&mut b).ok()?;
            match b[0] {
                b'#' => break,
                // Run-length encoding: `X*n` repeats X (n - 29) more times.
                b'*' => {
                    self.s.read_exact(&mut b).ok()?;
                    let last = *body.last()?;
                    for _ in 29..b[0] {
                        body.push(last);
                    }
                }
                c => body.push(c),
            }
        }
        let mut sum = [0u8; 2];
        self.s.read_exact(&mut sum).ok()?;
        self.s.write_all(b"+").ok()?;
        Some(String::from_utf8_lossy(&body).into_owned())
    }

    /// Reads one packet's body (skipping acks).
    fn recv(&mut self) -> String {
        self.try_recv().expect("a reply packet")
    }
}

/// A server thread's result: how serving ended, and the fake.
type Served = thread::JoinHandle<(Result<SessionEnd, GdbError>, Fake)>;

fn raw_session(fake: Fake) -> (Raw, Served) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = thread::spawn(move || {
        let mut f = fake;
        let r = serve(listener, &mut f, &x86_64());
        (r, f)
    });
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    (Raw { s }, server)
}

#[test]
fn ctrl_c_interrupts_a_running_machine() {
    let (mut c, server) = raw_session(Fake::new(u64::MAX, End::Exit(0)));
    c.send("vCont;c");
    thread::sleep(Duration::from_millis(100));
    c.s.write_all(&[3]).expect("ctrl-c");
    let reply = c.recv();
    assert!(reply.starts_with("T02thread:"), "{reply}");
    c.send("D");
    assert_eq!(c.recv(), "OK");
    let (r, f) = server.join().expect("server");
    assert!(matches!(r, Ok(SessionEnd::Detached)), "{r:?}");
    assert!(f.icount() > 0);
}

#[test]
fn kill_ends_the_session_as_killed() {
    let (mut c, server) = raw_session(Fake::new(1000, End::Exit(0)));
    c.send("k");
    let (r, _) = server.join().expect("server");
    assert!(matches!(r, Ok(SessionEnd::Killed)), "{r:?}");
}

#[test]
fn bad_requests_get_error_replies() {
    let (mut c, server) = raw_session(Fake::new(1000, End::Exit(0)));
    for (p, want) in [
        ("m8000000000,4", "E0e"),        // unmapped
        ("mffffffffffffffff,10", "E0e"), // past the end of the address space
        ("M200000,1:00", "E0e"),         // mapped, but not RAM
        ("Z2,180000,0", "E16"),          // a zero-length watchpoint
        ("Hg5", "OK"),                   // gdbstub takes any thread id...
        ("g", "E03"),                    // ...and the register read says no such vCPU
        ("Hg1", "OK"),
        ("p1000", ""), // single registers: use g/G
        ("bs", "T05thread:01;replaylog:begin;"),
    ] {
        c.send(p);
        assert_eq!(c.recv(), want, "reply to {p}");
    }
    c.send("D");
    assert_eq!(c.recv(), "OK");
    let (r, _) = server.join().expect("the server thread does not panic");
    assert!(matches!(r, Ok(SessionEnd::Detached)), "{r:?}");
}

#[test]
fn stop_replies_name_the_breakpoint_kind_and_the_watched_address() {
    let (mut c, server) = raw_session(Fake::new(1000, End::Exit(0)));
    for (p, want) in [
        ("Z0,100003,1", "OK"),
        ("Z1,100006,1", "OK"),
        ("Z2,180000,1", "OK"),
        ("vCont;c", "T05thread:01;swbreak:;"),
        ("vCont;c", "T05thread:01;hwbreak:;"),
        ("vCont;c", "T05thread:01;watch:180000;"),
        ("z2,180000,1", "OK"),
        ("Z4,180000,8", "OK"),
        ("bc", "T05thread:01;awatch:180000;"),
        ("z4,180000,8", "OK"),
        ("vCont;s:1;c", "T05thread:01;"),
        ("z0,100003,1", "OK"),
        ("z1,100006,1", "OK"),
        ("z0,100003,1", "E16"), // not set (any more)
    ] {
        c.send(p);
        assert_eq!(c.recv(), want, "reply to {p}");
    }
    c.send("D");
    assert_eq!(c.recv(), "OK");
    let (r, f) = server.join().expect("server");
    assert!(matches!(r, Ok(SessionEnd::Detached)), "{r:?}");
    assert_eq!(
        f.resumes,
        [
            Resume::Continue,
            Resume::Continue,
            Resume::Continue,
            Resume::ReverseContinue,
            Resume::Step
        ]
    );
}

#[test]
fn refused_writes_are_errors_in_gdb() {
    let mut fake = Fake::new(1000, End::Exit(0));
    fake.frozen = true;
    let (out, end, f) = run_gdb(
        fake,
        x86_64(),
        &[
            "echo ==reg\\n",
            "set $rax = 5",
            "echo ==mem\\n",
            "set {char}0x180000 = 1",
            "echo ==pc\\n",
            "p/x $rax",
        ],
    );
    has(
        &out,
        "==reg\nCould not write registers; remote failure reply 'E01'",
    );
    has(&out, "==mem\nCannot access memory at address 0x180000");
    has(&out, "==pc\n$1 = 0x0");
    assert_eq!(f.cpus[0].gpr[0], 0);
    assert!(matches!(end, Ok(SessionEnd::Detached)), "{end:?}");
}

#[test]
fn gdb_can_interrupt_a_running_machine() {
    let (out, end, f) = run_gdb_interrupted(
        Fake::new(u64::MAX, End::Exit(0)),
        x86_64(),
        &["continue", "echo ==pc\\n", "p/x $pc", "monitor status"],
        true,
    );
    has(&out, "Thread 1 received signal SIGINT, Interrupt.");
    has(&out, "==pc\n$1 = 0x");
    has(&out, "last stop: interrupted (Ctrl-C)");
    assert!(f.icount() > 0);
    assert!(matches!(end, Ok(SessionEnd::Detached)), "{end:?}");
}

#[test]
fn malformed_packets_end_the_session_with_an_error_not_a_panic() {
    for p in ["M100000,2:zz", "vCont;x", "G00"] {
        let (mut c, server) = raw_session(Fake::new(1000, End::Exit(0)));
        c.send(p);
        assert_eq!(c.try_recv(), None, "the stub hangs up after {p}");
        let (r, _) = server.join().expect("the server thread does not panic");
        match r {
            Err(GdbError::Protocol(why)) => {
                assert!(
                    why.contains(&format!("last packet from gdb: `${p}#")),
                    "{why}"
                )
            }
            other => panic!("{p}: {other:?}"),
        }
    }
    // Bytes outside any packet.
    let (mut c, server) = raw_session(Fake::new(1000, End::Exit(0)));
    c.s.write_all(b"hello").expect("send");
    let (r, _) = server.join().expect("the server thread does not panic");
    assert!(matches!(r, Err(GdbError::Protocol(_))), "{r:?}");
}

#[test]
fn a_dropped_connection_is_reported() {
    let (c, server) = raw_session(Fake::new(1000, End::Exit(0)));
    drop(c);
    let (r, _) = server.join().expect("server");
    assert!(matches!(r, Ok(SessionEnd::Disconnected)), "{r:?}");
}
