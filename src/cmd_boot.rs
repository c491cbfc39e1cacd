//! `hindsight boot`: boot a Linux bzImage (by default Debian's, fetched on
//! first use) with its console on stdio.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use hindsight_machine::MachineConfig;

use crate::setup::{Guest, Image, Setup};
use crate::{exit_code, fetch, session, BootArgs};

/// Kernel command line unless `--append` gives one.
pub const DEFAULT_APPEND: &str = "console=ttyS0";

/// Runs the command; returns the process exit status.
pub fn run(args: &BootArgs) -> i32 {
    let cache_dir = match fetch::cache_dir(args.cache_dir.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("hindsight: {e}");
            return exit_code::USAGE;
        }
    };
    let setup = match setup(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hindsight: {e}");
            return exit_code::USAGE;
        }
    };
    session::run(
        &setup,
        &session::Options {
            max_insns: args.max_insns,
            raw_terminal: true,
            record: args.record.as_deref(),
            embed_images: args.embed_images,
            stats: args.stats,
            cache_dir,
            gdb: &args.gdb,
            check: args.engine.engine.checks(),
        },
    )
}

/// The kernel and initrd paths: the given ones, else the fetched Debian
/// guest (fetching it if the cache is empty) with an initramfs for `--run`.
fn images(args: &BootArgs) -> Result<(PathBuf, Option<PathBuf>), String> {
    let needs_fetch = args.kernel.is_none() || args.initrd.is_none();
    let fetched = match needs_fetch {
        true => Some(fetch::ensure_images(args.cache_dir.as_deref()).map_err(|e| e.to_string())?),
        false => None,
    };
    let kernel = match (&args.kernel, &fetched) {
        (Some(k), _) => k.clone(),
        (None, Some(f)) => f.kernel.clone(),
        (None, None) => unreachable!("fetched when no kernel is given"),
    };
    let initrd = match (&args.initrd, &fetched) {
        (Some(i), _) => Some(i.clone()),
        (None, Some(f)) => Some(
            f.initramfs(args.run.as_deref())
                .map_err(|e| e.to_string())?,
        ),
        (None, None) => None,
    };
    Ok((kernel, initrd))
}

/// The machine `args` describe.
fn setup(args: &BootArgs) -> Result<Setup, String> {
    let (kernel_path, initrd_path) = images(args)?;
    let kernel = Image::read(&kernel_path, "kernel")?;
    let initrd = match &initrd_path {
        Some(p) => Some(Image::read(p, "initrd")?),
        None => None,
    };
    // The wall-clock time at boot: taken once, an input of the run.
    let rtc_unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Ok(Setup {
        config: MachineConfig {
            memory: args.memory,
            cpus: args.cpus,
            max_insns: args.max_insns,
            rtc_unix_secs,
            // Linux clears COM1's FIFO when the shell opens the console:
            // keep early (piped) input until then.
            hold_input_until_rx_interrupts: true,
            engine: args.engine.engine.engine(),
            ..MachineConfig::default()
        },
        guest: Guest::Linux {
            kernel,
            initrd,
            append: args.append.as_deref().unwrap_or(DEFAULT_APPEND).to_string(),
            guest_decompress: args.guest_decompress,
        },
    })
}
