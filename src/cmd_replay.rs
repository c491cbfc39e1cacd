//! `hindsight replay`: run a recorded trace again, optionally verifying it.

use hindsight_timetravel::{replay_checked, ReplayEnd, ReplayStats, TraceReader};

use crate::setup::Setup;
use crate::{console, drive, exit_code, fetch, gdb_session, seek_check, ReplayArgs};

/// Runs the command; returns the process exit status.
pub fn run(args: &ReplayArgs) -> i32 {
    let mut reader = match TraceReader::open(&args.file) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hindsight: {}: {e}", args.file.display());
            return exit_code::USAGE;
        }
    };
    let cache_dir = match fetch::cache_dir(args.cache_dir.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("hindsight: {e}");
            return exit_code::USAGE;
        }
    };
    let mut dirs = args.image_dirs.clone();
    dirs.push(cache_dir.clone());
    let setup = match Setup::from_trace(&reader, &dirs) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hindsight: {}: {e}", args.file.display());
            return exit_code::USAGE;
        }
    };
    let mut m = match setup.build(&cache_dir) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("hindsight: {e}");
            return exit_code::USAGE;
        }
    };
    // The engine is the replayer's choice, never the trace's.
    let choice = args.engine.engine;
    m.set_engine(choice.engine());
    if choice.checks() && (args.check_seeks.is_some() || gdb_session::wanted(&args.gdb)) {
        eprintln!(
            "hindsight: --engine check replays the trace straight through; it goes with \
             neither --check-seeks nor --gdb"
        );
        return exit_code::USAGE;
    }
    // Under check, an interpreter twin built from the same trace.
    let mut check = match choice.checks() {
        true => match drive::lockstep(&mut m, || setup.build(&cache_dir)) {
            Ok(l) => Some(l),
            Err(code) => return code,
        },
        false => None,
    };
    let (records, error) = reader.read_to_end();
    // A verifying replay names what differed from the recorded summaries.
    let summaries = reader.take_summaries();
    if let Some(n) = args.check_seeks {
        if let Some(e) = error {
            eprintln!("hindsight: the trace ends early ({e}); checking what it holds");
        }
        return seek_check::run(m, records, summaries, n, args.seed);
    }
    if gdb_session::wanted(&args.gdb) {
        if args.until.is_some() || args.verify {
            eprintln!(
                "hindsight: --until and --verify are for plain replays; under --gdb, \
                 'monitor seek N' moves anywhere and every recorded hash is checked as it is passed"
            );
            return exit_code::USAGE;
        }
        if let Some(e) = error {
            eprintln!("hindsight: the trace ends early ({e}); debugging what it holds");
        }
        return gdb_session::run_replay(m, records, summaries, &args.gdb);
    }
    console::to_stdout(&mut m);
    let mut stats = ReplayStats::default();
    let end = replay_checked(
        &mut m,
        check.as_mut(),
        &records,
        &summaries,
        error,
        args.verify,
        args.until,
        &mut stats,
    );
    console::flush();
    let verified = match args.verify {
        true => format!(", {} state hashes verified", stats.hashes_verified),
        false => String::new(),
    };
    match end {
        ReplayEnd::Finished { end, .. } => {
            eprintln!(
                "hindsight: replayed {} instructions to the end of the trace ({}){verified}",
                end.icount, end.reason
            );
            exit_code::OK
        }
        ReplayEnd::ReachedUntil(icount) => {
            eprintln!("hindsight: replayed to icount {icount}{verified}");
            exit_code::OK
        }
        ReplayEnd::TraceStopped { icount, error } => {
            eprintln!(
                "hindsight: the trace ends early ({error}); replayed up to icount {icount}{verified}"
            );
            exit_code::TRACE_DAMAGED
        }
        ReplayEnd::Diverged(d) => {
            eprintln!("hindsight: replay {d}");
            exit_code::DIVERGED
        }
        ReplayEnd::EnginesDiffer(report) => {
            eprintln!("hindsight: {report}");
            exit_code::DIVERGED
        }
    }
}
