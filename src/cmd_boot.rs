//! `hindsight boot`: boot a Linux bzImage (by default Debian's, fetched on
//! first use) with its console on stdio.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use hindsight_machine::{Machine, MachineConfig};

use crate::console::{self, StdinReader};
use crate::drive::{self, Drive};
use crate::{exit_code, BootArgs};
use crate::{fetch, kernel};

/// Kernel command line unless `--append` gives one.
pub const DEFAULT_APPEND: &str = "console=ttyS0";

/// Runs the command; returns the process exit status.
pub fn run(args: &BootArgs) -> i32 {
    match prepare(args) {
        Ok(mut m) => {
            console::to_stdout(&mut m);
            let interactive = std::io::stdin().is_terminal();
            if interactive {
                eprintln!("hindsight: console on this terminal; press Ctrl-A x to quit");
            }
            let _raw = interactive.then(console::RawMode::enter).flatten();
            let mut d = Drive {
                max_insns: args.max_insns,
                input: Some(StdinReader::spawn(interactive)),
                pace: interactive,
            };
            let start = std::time::Instant::now();
            let end = d.run(&mut m);
            drop(_raw);
            if args.stats {
                let secs = start.elapsed().as_secs_f64();
                let executed = m.icount() - m.idle_time();
                eprintln!(
                    "hindsight: stats insns={} idle_ns={} wall_s={secs:.3} mips={:.1}",
                    executed,
                    m.idle_time(),
                    drive::mips(executed, secs)
                );
            }
            drive::report_machine(&end, args.max_insns, &m)
        }
        Err(code) => code,
    }
}

/// The kernel and initrd paths: the given ones, else the fetched Debian
/// guest (fetching it if the cache is empty) with an initramfs for `--run`.
fn images(args: &BootArgs) -> Result<(PathBuf, Option<PathBuf>), i32> {
    let needs_fetch = args.kernel.is_none() || args.initrd.is_none();
    let fetched = if needs_fetch {
        Some(
            fetch::ensure_images(args.cache_dir.as_deref()).map_err(|e| {
                eprintln!("hindsight: {e}");
                exit_code::USAGE
            })?,
        )
    } else {
        None
    };
    let kernel = match (&args.kernel, &fetched) {
        (Some(k), _) => k.clone(),
        (None, Some(f)) => f.kernel.clone(),
        (None, None) => unreachable!("fetched when no kernel is given"),
    };
    let initrd = match (&args.initrd, &fetched) {
        (Some(i), _) => Some(i.clone()),
        (None, Some(f)) => Some(f.initramfs(args.run.as_deref()).map_err(|e| {
            eprintln!("hindsight: {e}");
            exit_code::USAGE
        })?),
        (None, None) => None,
    };
    Ok((kernel, initrd))
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, i32> {
    std::fs::read(path).map_err(|e| {
        eprintln!("hindsight: cannot read {what} '{}': {e}", path.display());
        exit_code::USAGE
    })
}

/// Builds the machine with the kernel loaded.
fn prepare(args: &BootArgs) -> Result<Machine, i32> {
    let (kernel_path, initrd_path) = images(args)?;
    let kernel = read_file(&kernel_path, "kernel")?;
    let initrd = match &initrd_path {
        Some(p) => Some(read_file(p, "initrd")?),
        None => None,
    };
    let append = args.append.as_deref().unwrap_or(DEFAULT_APPEND);
    // The wall-clock time at boot: taken once, an input of the run.
    let rtc_unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let cfg = MachineConfig {
        memory: args.memory,
        cpus: args.cpus,
        max_insns: args.max_insns,
        rtc_unix_secs,
        // Linux clears COM1's FIFO when the shell opens the console: keep
        // early (piped) input until then.
        hold_input_until_rx_interrupts: true,
        ..MachineConfig::default()
    };
    let mut m = Machine::new(&cfg).map_err(|e| {
        eprintln!("hindsight: {e}");
        exit_code::USAGE
    })?;
    let cache = fetch::cache_dir(args.cache_dir.as_deref()).map_err(|e| {
        eprintln!("hindsight: {e}");
        exit_code::USAGE
    })?;
    let vmlinux = match args.guest_decompress {
        true => None,
        false => kernel::decompressed(&kernel, &cache),
    };
    m.load_linux(&kernel, vmlinux.as_deref(), append, initrd.as_deref())
        .map_err(|e| {
            eprintln!("hindsight: {}: {e}", kernel_path.display());
            exit_code::USAGE
        })?;
    Ok(m)
}
