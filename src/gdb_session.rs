//! Running a machine under gdb (`--gdb`, `--gdb-wait`): a live session
//! keeps checkpoints and its input log in a [`Timeline`], so reverse
//! execution works without a prior recording; a replay's timeline is its
//! trace's history.

use std::net::TcpListener;

use hindsight_gdb::{
    Debuggee, GdbOptions, InputSource, Resume, SessionEnd, StopEvent, TimelineDebuggee,
};
use hindsight_machine::{Machine, StateSummary};
use hindsight_timetravel::{Record, Timeline, TimelineConfig};

use crate::console::StdinReader;
use crate::drive::{self, End};
use crate::{exit_code, GdbArgs};

/// Default address of the stub (as QEMU's `-s`).
pub const DEFAULT_ADDR: &str = "127.0.0.1:1234";

/// Whether the arguments ask for a gdb session.
pub fn wanted(args: &GdbArgs) -> bool {
    args.gdb.is_some() || args.gdb_wait
}

/// `[ADDR:]PORT` as a socket address (ADDR defaults to 127.0.0.1).
fn address(spec: &str) -> String {
    match spec.contains(':') {
        true => spec.to_string(),
        false => format!("127.0.0.1:{spec}"),
    }
}

/// The timeline's settings from the command line.
fn timeline_config(args: &GdbArgs) -> TimelineConfig {
    TimelineConfig {
        memory_budget: args.checkpoint_memory as usize,
        ..TimelineConfig::default()
    }
}

/// Console output through the timeline's gate: printed once, not again
/// when known history is re-executed.
fn console_to_stdout(m: &mut Machine, tl: &Timeline) {
    let sink = tl.console_gate().wrap(Box::new(|bytes: &[u8]| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    }));
    m.set_console(sink);
}

/// Runs a live machine under gdb; returns the process exit status.
pub fn run_live(mut m: Machine, args: &GdbArgs, max_insns: Option<u64>) -> i32 {
    let tl = match Timeline::live(&mut m, timeline_config(args)) {
        Ok(tl) => tl,
        Err(e) => {
            eprintln!("hindsight: cannot start the session's history: {e}");
            return exit_code::USAGE;
        }
    };
    console_to_stdout(&mut m, &tl);
    let mut stdin = StdinReader::spawn(false);
    let input: InputSource = Box::new(move || {
        let bytes = stdin.take_ready().concat();
        (bytes, stdin.is_open())
    });
    serve(
        TimelineDebuggee::new(m, tl, Some(input), drive::guest_end_status),
        args,
        max_insns,
    )
}

/// Replays a trace under gdb; returns the process exit status.
pub fn run_replay(
    mut m: Machine,
    records: Vec<Record>,
    summaries: Vec<StateSummary>,
    args: &GdbArgs,
) -> i32 {
    let config = timeline_config(args);
    let tl = match Timeline::replay_with_summaries(&mut m, records, summaries, config) {
        Ok(tl) => tl,
        Err(e) => {
            eprintln!("hindsight: cannot replay the trace: {e}");
            return exit_code::TRACE_DAMAGED;
        }
    };
    console_to_stdout(&mut m, &tl);
    serve(
        TimelineDebuggee::new(m, tl, None, drive::guest_end_status),
        args,
        None,
    )
}

/// Serves gdb until it detaches, kills or goes away; after a detach the
/// machine runs on to its end.
fn serve(mut d: TimelineDebuggee, args: &GdbArgs, max_insns: Option<u64>) -> i32 {
    let addr = address(args.gdb.as_deref().unwrap_or(DEFAULT_ADDR));
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hindsight: cannot listen for gdb on {addr}: {e}");
            return exit_code::USAGE;
        }
    };
    let shown = listener
        .local_addr()
        .map_or(addr.clone(), |a| a.to_string());
    let state = if args.gdb_wait {
        "halted until gdb attaches"
    } else {
        "running; gdb may attach at any time"
    };
    eprintln!("hindsight: gdb stub on {shown} ({state}): gdb -ex 'target remote {shown}'");
    let opts = GdbOptions {
        arch: args.gdb_arch,
        wait: args.gdb_wait,
    };
    match hindsight_gdb::serve(listener, &mut d, &opts) {
        Ok(SessionEnd::Detached) => {
            eprintln!("hindsight: gdb detached; the guest runs on");
            run_to_end(d, max_insns)
        }
        Ok(SessionEnd::Exited { status }) => status,
        Ok(SessionEnd::Killed) => {
            eprintln!(
                "hindsight: killed by gdb at icount {}",
                d.machine().icount()
            );
            exit_code::OK
        }
        Ok(SessionEnd::Disconnected) => {
            eprintln!(
                "hindsight: gdb went away; stopping at icount {}",
                d.machine().icount()
            );
            exit_code::OK
        }
        Err(e) => {
            eprintln!("hindsight: gdb session failed: {e}");
            exit_code::USAGE
        }
    }
}

/// Runs a machine left by gdb on to its end, through its timeline (so a
/// replay still follows its trace and a live session keeps its console
/// input), and reports the end.
fn run_to_end(mut d: TimelineDebuggee, max_insns: Option<u64>) -> i32 {
    d.set_debug(Default::default());
    match d.resume(Resume::Continue, &mut || false) {
        StopEvent::HistoryEnd => {
            eprintln!(
                "hindsight: replayed to the end of the trace (icount {})",
                d.machine().icount()
            );
            exit_code::OK
        }
        other => match d.last_exit() {
            Some(exit) => {
                drive::report_machine(&End::Machine(exit.clone()), max_insns, d.machine())
            }
            None => {
                eprintln!("hindsight: the run ended unexpectedly: {other:?}");
                exit_code::STOPPED
            }
        },
    }
}
