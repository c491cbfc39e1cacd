//! `hindsight trace`: inspect recorded traces (`.hsr` files).

use hindsight_timetravel::trace::{info_file, Integrity};

use crate::{exit_code, TraceCommand};

/// Runs the command; returns the process exit status.
pub fn run(cmd: &TraceCommand) -> i32 {
    match cmd {
        TraceCommand::Info { file } => match info_file(file) {
            Ok(info) => {
                println!("{info}");
                match info.integrity {
                    Integrity::Ok => exit_code::OK,
                    _ => exit_code::FAILURE,
                }
            }
            Err(e) => {
                eprintln!("hindsight: {}: {e}", file.display());
                exit_code::USAGE
            }
        },
    }
}
