//! Running a [`Setup`] from the command line: console on this terminal or
//! stdio, optional recording, the end-of-run report. Shared by `boot` and
//! `run`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hindsight_timetravel::{Recorder, TraceWriter, DEFAULT_HASH_INTERVAL};

use crate::console::{self, StdinReader};
use crate::drive::{self, Drive, End};
use crate::setup::Setup;
use crate::{exit_code, gdb_session, GdbArgs};

/// How to run a setup.
pub struct Options<'a> {
    /// Stop after this much virtual time.
    pub max_insns: Option<u64>,
    /// On a terminal: raw mode with the Ctrl-A escapes (else plain stdin).
    pub raw_terminal: bool,
    /// Record into this trace file.
    pub record: Option<&'a Path>,
    /// Embed the images in the trace.
    pub embed_images: bool,
    /// Print executed instructions, idle time, wall time and MIPS at the end.
    pub stats: bool,
    /// Where host-decompressed kernels are cached.
    pub cache_dir: PathBuf,
    /// The gdb stub's options.
    pub gdb: &'a GdbArgs,
    /// Check the JIT against an interpreter twin in lockstep.
    pub check: bool,
}

/// Starts a recording of `setup` into `path`.
fn start_recording(
    setup: &Setup,
    path: &Path,
    embed: bool,
) -> Result<Recorder<std::fs::File>, String> {
    let images: Vec<Option<&[u8]>> = match embed {
        true => setup
            .images()
            .into_iter()
            .map(|(_, i)| Some(i.bytes.as_slice()))
            .collect(),
        false => Vec::new(),
    };
    let writer = TraceWriter::create(path, &setup.header(), &images)
        .map_err(|e| format!("cannot record into '{}': {e}", path.display()))?;
    Ok(Recorder::new(writer, DEFAULT_HASH_INTERVAL))
}

/// Builds and runs `setup`; returns the process exit status.
pub fn run(setup: &Setup, opts: &Options) -> i32 {
    let mut m = match setup.build(&opts.cache_dir) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("hindsight: {e}");
            return exit_code::USAGE;
        }
    };
    if opts.check && (opts.record.is_some() || gdb_session::wanted(opts.gdb)) {
        eprintln!(
            "hindsight: --engine check goes with neither --record nor --gdb (it goes back \
             and forth itself): record or debug under --engine jit, then replay the trace \
             with --verify under each engine"
        );
        return exit_code::USAGE;
    }
    if gdb_session::wanted(opts.gdb) {
        if opts.record.is_some() {
            eprintln!(
                "hindsight: --record and --gdb do not go together (a debugging session's \
                 history can branch): record first, then debug with 'hindsight replay FILE --gdb'"
            );
            return exit_code::USAGE;
        }
        return gdb_session::run_live(m, opts.gdb, opts.max_insns);
    }
    let recorder = match opts.record {
        Some(path) => match start_recording(setup, path, opts.embed_images) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("hindsight: {e}");
                return exit_code::USAGE;
            }
        },
        None => None,
    };
    console::to_stdout(&mut m);
    let interactive = opts.raw_terminal && std::io::stdin().is_terminal();
    if interactive {
        eprintln!("hindsight: console on this terminal; press Ctrl-A x to quit");
    }
    let raw = interactive.then(console::RawMode::enter).flatten();
    let check = match opts.check {
        true => match drive::lockstep(&mut m, || setup.build(&opts.cache_dir)) {
            Ok(l) => Some(l),
            Err(code) => return code,
        },
        false => None,
    };
    let mut d = Drive {
        recorder,
        max_insns: opts.max_insns,
        input: Some(StdinReader::spawn(interactive)),
        pace: std::io::stdin().is_terminal(),
        check,
    };
    let start = Instant::now();
    let end = d.run(&mut m);
    drop(raw);
    if opts.stats {
        let secs = start.elapsed().as_secs_f64();
        let executed = m.icount() - m.idle_time();
        eprintln!(
            "hindsight: stats insns={executed} idle_ns={} wall_s={secs:.3} mips={:.1}",
            m.idle_time(),
            drive::mips(executed, secs)
        );
        if let Some(j) = m.jit_stats() {
            eprintln!(
                "hindsight: jit blocks={} insns={} inlined={} entries={} interpreted={} \
                 chained={} links={} hammocks={} flushes={}",
                j.translated,
                j.insns,
                j.inlined,
                j.native_runs,
                j.interp_runs,
                j.chained,
                j.links,
                j.hammocks,
                j.flushes
            );
        }
    }
    let status = drive::report_machine(&end, opts.max_insns, &m);
    d.finish_recording(&m, status, &reason(&end));
    status
}

/// Why a run ended, in words for the trace's end record.
fn reason(end: &End) -> String {
    match end {
        End::Quit => "quit by the user (Ctrl-A x)".into(),
        End::Mismatch(_) => "the engines differed".into(),
        End::Machine(exit) => exit.to_string(),
    }
}
