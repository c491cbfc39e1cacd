//! `hindsight`: a full-system x86-64 PC emulator that can travel back in time.
//!
//! This file only parses the command line; each command lives in its own
//! `cmd_*.rs` module.

mod cmd_bench;
mod cmd_boot;
mod cmd_demo;
mod cmd_fetch;
mod cmd_replay;
mod cmd_run;
mod cmd_selftest;
mod cmd_trace;
mod console;
mod drive;
mod engine_choice;
mod exit_code;
mod fetch;
mod gdb_session;
mod guest;
mod kernel;
mod seek_check;
mod session;
mod setup;
mod size;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const ABOUT: &str = "A full-system x86-64 PC emulator that can travel back in time";

const LONG_ABOUT: &str = "\
A full-system x86-64 PC emulator that can travel back in time.

Virtual time is the instruction count: every clock the guest sees derives
from retired instructions, so a run is a pure function of its images and
its console input. With no command, hindsight runs its built-in demo guest.";

/// Examples and exit statuses shown after the top-level help.
fn top_help() -> String {
    format!(
        "Examples:
  hindsight                                  run the built-in demo guest
  hindsight boot                             boot Debian's Linux to a busybox shell
  hindsight boot --run 'uname -a'            boot, run a command, power off
  hindsight run --multiboot kernel.elf --append 'console=ttyS0'
  hindsight run --multiboot kernel.elf --module initrd.img,initrd --memory 1G
  hindsight selftest                         run the guest self-tests
  hindsight bench --seconds 5                measure emulation speed
  hindsight bench --engine interp            the same with the interpreter
  hindsight boot --engine check --run 'ls'   check the JIT against the interpreter
  hindsight fetch                            download Debian's kernel and busybox

{}",
        exit_code::HELP
    )
}

#[derive(Parser)]
#[command(
    name = "hindsight",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = top_help(),
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a multiboot kernel with its serial console (COM1) on stdin/stdout.
    #[command(after_help = run_help())]
    Run(RunArgs),
    /// Boot a Linux kernel (default: Debian's, fetched on first use) with its
    /// serial console on this terminal or stdin/stdout.
    #[command(after_help = boot_help())]
    Boot(BootArgs),
    /// Run the built-in demo guest, then print instructions, time and speed.
    #[command(after_help = "Example:\n  hindsight demo")]
    Demo(EngineArgs),
    /// Run the guest self-tests; the last line is `N passed, M failed`.
    #[command(after_help = "Example:\n  hindsight selftest\n\n\
        Exit status: 0 when no test failed, 1 otherwise.")]
    Selftest(EngineArgs),
    /// Measure engine speed on a CPU-bound guest; the last line is `<N> MIPS`.
    #[command(after_help = "Examples:\n  hindsight bench                  \
        run a fixed number of instructions\n  hindsight bench --seconds 10     \
        run for ten seconds of host time")]
    Bench(BenchArgs),
    /// Download Debian's kernel and busybox with apt; build the guest's initramfs.
    ///
    /// Fetches the current linux-image-amd64 kernel and busybox-static, verifies
    /// and extracts them, and builds the initramfs whose /init starts a shell.
    #[command(after_help = FETCH_HELP)]
    Fetch(FetchArgs),
    /// Replay a recorded trace (.hsr): the console output again, byte for
    /// byte; with --verify, every recorded state hash checked.
    #[command(after_help = REPLAY_HELP)]
    Replay(ReplayArgs),
    /// Inspect a recorded trace (.hsr): header, images, records, integrity.
    #[command(subcommand)]
    Trace(TraceCommand),
}

const REPLAY_HELP: &str = "\
The machine is rebuilt from the trace's header: its configuration, and the
images it booted, taken from the trace when embedded (--embed-images), else
found by SHA-256 at their recorded paths, in --image-dir directories or in
the guest image cache. Console input is fed at the recorded instruction
counts; the guest's console output goes to stdout.

Examples:
  hindsight boot --record boot.hsr
  hindsight replay boot.hsr --verify
  hindsight replay boot.hsr --until 1000000000
  hindsight replay boot.hsr --check-seeks 1000
  hindsight replay boot.hsr --gdb --gdb-wait

Exit status: 0 when the trace replayed to its end (and, with --verify, every
state hash matched); 7 when the replay diverged (the first differing
instruction count is named); 8 when the trace is truncated or corrupt (it
replays up to its last whole chunk and says so); 2 when it cannot be read
or its images are missing.";

/// Options of `hindsight replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The trace to replay
    pub file: PathBuf,
    /// Check every recorded state hash and the final one
    #[arg(long)]
    pub verify: bool,
    /// Stop at this instruction count
    #[arg(long, value_name = "ICOUNT")]
    pub until: Option<u64>,
    /// Another directory to search for the trace's images (repeatable)
    #[arg(long = "image-dir", value_name = "DIR")]
    pub image_dirs: Vec<PathBuf>,
    /// Guest image cache [default: $XDG_CACHE_HOME/hindsight]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Check time travel on this trace: hash the state at N random counts
    /// on the way forward, then seek back to each from the end and compare
    #[arg(long, value_name = "N", conflicts_with_all = ["until", "verify"])]
    pub check_seeks: Option<usize>,
    /// Seed of --check-seeks' random counts
    #[arg(long, value_name = "S", default_value_t = 1, requires = "check_seeks")]
    pub seed: u64,
    #[command(flatten)]
    pub gdb: GdbArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `hindsight trace` subcommands.
#[derive(Subcommand, Debug)]
pub enum TraceCommand {
    /// Print a trace's header, image hashes, record counts and integrity
    /// (every chunk's checksum and the hash chain). Exit status 0 when the
    /// trace is whole and intact, 1 when it is truncated or corrupt (the
    /// chunk is named), 2 when it cannot be read as a trace.
    #[command(after_help = "Example:\n  hindsight trace info boot.hsr")]
    Info {
        /// The trace file
        file: PathBuf,
    },
}

const FETCH_HELP: &str = "\
Packages come from Debian's package registry through the system's apt
configuration (apt-get download); each .deb is checked against the SHA256
of apt's signed package index. Progress goes to stderr; the paths and
versions of the kernel, busybox and initramfs are printed on stdout.
If apt's package lists are missing, root runs 'apt-get update' itself;
other users are told to.

Cache: --cache-dir, else $XDG_CACHE_HOME/hindsight, else ~/.cache/hindsight.

Examples:
  hindsight fetch
  hindsight fetch --force                     download and extract again
  hindsight fetch --cache-dir /srv/hindsight  use another cache directory

Exit status: 0 on success, 2 on any failure (the reason is on stderr).";

fn run_help() -> String {
    format!(
        "The guest's COM1 and the 0xE9 debug console go to stdout as they are written;
stdin is fed to COM1 between run slices. While stdin is a terminal, guest
time is kept from running ahead of host time (idle guests do not race).

Examples:
  hindsight run --multiboot kernel.elf
  hindsight run --multiboot kernel.elf --append 'console=ttyS0 quiet' --memory 2G
  hindsight run --multiboot kernel.elf --module initrd.img --module data.bin,name=data
  hindsight run --multiboot test.elf --max-insns 1000000000 < /dev/null

{}",
        exit_code::HELP
    )
}

/// Options of `hindsight run`.
fn boot_help() -> String {
    format!(
        "Without --kernel, boots Debian's linux-image-amd64 with an initramfs whose
/init mounts /proc and /sys and starts a busybox shell on the console
(downloaded by 'hindsight fetch' on first use). The guest's serial console
is this terminal (raw mode; Ctrl-A x quits, Ctrl-A Ctrl-A sends Ctrl-A) or
stdin/stdout when they are pipes. 'poweroff -f' in the guest ends hindsight
with status 0.

Examples:
  hindsight boot
  hindsight boot --run 'cat /proc/cpuinfo; echo DONE'
  echo 'uname -a; poweroff -f' | hindsight boot
  hindsight boot --kernel bzImage --initrd initrd.img --append 'console=ttyS0 quiet'

{}",
        exit_code::HELP
    )
}

/// Options of `hindsight boot`.
#[derive(Args, Debug)]
pub struct BootArgs {
    /// bzImage to boot [default: the fetched Debian kernel]
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk [default: hindsight's busybox initramfs]
    #[arg(long, value_name = "FILE", conflicts_with = "run")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line [default: console=ttyS0]
    #[arg(long, value_name = "CMDLINE")]
    pub append: Option<String>,
    /// Guest RAM (K, M, G suffixes)
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = size::parse_size)]
    pub memory: u64,
    /// Number of vCPUs
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u32,
    /// Run this shell command in the guest instead of a shell, then power off
    #[arg(long, value_name = "CMD")]
    pub run: Option<String>,
    /// Stop after this many instructions
    #[arg(long, value_name = "N")]
    pub max_insns: Option<u64>,
    /// Guest image cache [default: $XDG_CACHE_HOME/hindsight]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Run the kernel's own decompressor in the guest instead of
    /// decompressing the kernel on the host (slower; KASLR applies)
    #[arg(long)]
    pub guest_decompress: bool,
    /// Record the run into this trace file (.hsr) for `hindsight replay`
    #[arg(long, value_name = "FILE.hsr")]
    pub record: Option<PathBuf>,
    /// Embed the kernel, initrd and modules in the trace (portable replays)
    #[arg(long, requires = "record")]
    pub embed_images: bool,
    /// At the end, print "hindsight: stats insns=N wall_s=S mips=M" on stderr
    #[arg(long)]
    pub stats: bool,
    #[command(flatten)]
    pub gdb: GdbArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Multiboot (v1) kernel to boot: ELF32, ELF64 loaded below 4 GiB, or
    /// a.out-kludge image.
    #[arg(long, value_name = "FILE")]
    pub multiboot: PathBuf,
    /// Kernel command line, passed in the multiboot information.
    #[arg(long, value_name = "CMDLINE", default_value = "")]
    pub append: String,
    /// Boot module to load after the kernel (repeatable). The kernel sees the
    /// module string "FILE ARGS" (or "FILE"); FILE must not contain a comma.
    #[arg(long = "module", value_name = "FILE[,ARGS]")]
    pub modules: Vec<String>,
    /// Guest RAM, in bytes or with a K, M, G or T suffix (powers of 1024).
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = size::parse_size)]
    pub memory: u64,
    /// Number of vCPUs (vCPU 0 boots; the others wait for INIT/SIPI).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u32,
    /// Stop after N instructions of virtual time (exit status 5).
    #[arg(long, value_name = "N")]
    pub max_insns: Option<u64>,
    /// Record the run into this trace file (.hsr) for `hindsight replay`
    #[arg(long, value_name = "FILE.hsr")]
    pub record: Option<PathBuf>,
    /// Embed the kernel, initrd and modules in the trace (portable replays)
    #[arg(long, requires = "record")]
    pub embed_images: bool,
    #[command(flatten)]
    pub gdb: GdbArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The execution engine option, shared by every command that runs a guest.
#[derive(Args, Debug, Clone, Copy)]
pub struct EngineArgs {
    /// Execution engine: jit (hot blocks translated to host code), interp
    /// (the interpreter), or check (the JIT with an interpreter twin in
    /// lockstep, stopping at the first instruction count where they differ;
    /// run, boot, demo and replay). jit and interp give the same guest behaviour at
    /// every instruction count, and traces do not depend on the engine
    #[arg(long, value_name = "ENGINE", env = hindsight_machine::ENGINE_ENV, default_value = "jit")]
    pub engine: engine_choice::EngineChoice,
}

impl Default for EngineArgs {
    /// As the command line gives it with no `--engine`.
    fn default() -> Self {
        let engine = std::env::var(hindsight_machine::ENGINE_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        EngineArgs { engine }
    }
}

/// The gdb stub's options, shared by `run`, `boot` and `replay`.
#[derive(Args, Debug, Clone)]
pub struct GdbArgs {
    /// Serve gdb's remote protocol on [ADDR:]PORT [default: 127.0.0.1:1234]
    /// (`gdb -ex 'target remote :1234'`); the session keeps checkpoints and
    /// its input log, so reverse execution works without a recording
    #[arg(long, value_name = "[ADDR:]PORT", num_args = 0..=1,
          default_missing_value = gdb_session::DEFAULT_ADDR)]
    pub gdb: Option<String>,
    /// Start halted until gdb attaches (implies --gdb), as QEMU's -s -S
    #[arg(long)]
    pub gdb_wait: bool,
    /// Registers gdb sees: x86-64 (with fs_base, gs_base, k_gs_base, CR0-CR8,
    /// EFER), i386, or i8086 (real-mode code disassembled at CS*16+IP)
    #[arg(long, value_name = "ARCH", default_value = "x86-64", value_parser = parse_arch)]
    pub gdb_arch: hindsight_gdb::ArchView,
    /// Memory for the checkpoints reverse execution restores, with a
    /// K, M or G suffix; older checkpoints are thinned to stay within it
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = size::parse_size)]
    pub checkpoint_memory: u64,
}

/// A `--gdb-arch` name.
fn parse_arch(s: &str) -> Result<hindsight_gdb::ArchView, String> {
    match s {
        "x86-64" | "x86_64" | "amd64" => Ok(hindsight_gdb::ArchView::X86_64),
        "i386" => Ok(hindsight_gdb::ArchView::I386),
        "i8086" => Ok(hindsight_gdb::ArchView::I8086),
        _ => Err(format!("'{s}' is not one of x86-64, i386, i8086")),
    }
}

/// Options of `hindsight bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Run for this many seconds of host time instead of a fixed count.
    #[arg(long, value_name = "S", conflicts_with = "insns", value_parser = parse_seconds)]
    pub seconds: Option<f64>,
    /// Instructions to run.
    #[arg(long, value_name = "N", default_value_t = cmd_bench::DEFAULT_INSNS)]
    pub insns: u64,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Options of `hindsight fetch`.
#[derive(Args, Debug)]
pub struct FetchArgs {
    /// Cache directory [default: $XDG_CACHE_HOME/hindsight or
    /// ~/.cache/hindsight].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Download, verify and extract again even if the cache is up to date.
    #[arg(long)]
    pub force: bool,
    /// Build the initramfs for this --run command (as `hindsight boot --run`
    /// would) and print its path
    #[arg(long, value_name = "CMD")]
    pub run: Option<String>,
}

/// A positive, finite number of seconds.
fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command.unwrap_or(Command::Demo(EngineArgs::default())) {
        Command::Run(args) => cmd_run::run(&args),
        Command::Boot(args) => cmd_boot::run(&args),
        Command::Demo(e) => cmd_demo::run(e.engine),
        Command::Selftest(e) => cmd_selftest::run(e.engine),
        Command::Bench(args) => cmd_bench::run(&args),
        Command::Fetch(args) => cmd_fetch::run(&args),
        Command::Trace(cmd) => cmd_trace::run(&cmd),
        Command::Replay(args) => cmd_replay::run(&args),
    };
    console::flush();
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_run_options() {
        let cli = Cli::try_parse_from([
            "hindsight",
            "run",
            "--multiboot",
            "k.elf",
            "--append",
            "a b",
            "--module",
            "m1",
            "--module",
            "m2,x=1",
            "--memory",
            "1G",
            "--max-insns",
            "99",
        ])
        .unwrap();
        let Some(Command::Run(r)) = cli.command else {
            panic!("not run");
        };
        assert_eq!(r.multiboot, PathBuf::from("k.elf"));
        assert_eq!(r.append, "a b");
        assert_eq!(r.modules, ["m1", "m2,x=1"]);
        assert_eq!(r.memory, 1 << 30);
        assert_eq!(r.max_insns, Some(99));
        assert_eq!(r.cpus, 1);
    }

    #[test]
    fn parses_fetch_options() {
        let cli = Cli::try_parse_from(["hindsight", "fetch"]).unwrap();
        let Some(Command::Fetch(f)) = cli.command else {
            panic!("not fetch");
        };
        assert_eq!((f.cache_dir, f.force), (None, false));
        let cli =
            Cli::try_parse_from(["hindsight", "fetch", "--cache-dir", "/c", "--force"]).unwrap();
        let Some(Command::Fetch(f)) = cli.command else {
            panic!("not fetch");
        };
        assert_eq!(f.cache_dir, Some(PathBuf::from("/c")));
        assert!(f.force);
    }

    #[test]
    fn rejects_bad_values() {
        for args in [
            &["hindsight", "run"][..],
            &["hindsight", "run", "--multiboot", "k", "--memory", "lots"],
            &["hindsight", "run", "--multiboot", "k", "--max-insns", "-1"],
            &["hindsight", "bench", "--seconds", "-3"],
            &["hindsight", "bench", "--seconds", "NaN"],
            &["hindsight", "bench", "--seconds", "1", "--insns", "5"],
            &["hindsight", "fetch", "--cache-dir"],
            &["hindsight", "fetch", "extra"],
            &["hindsight", "frobnicate"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
        assert!(Cli::try_parse_from(["hindsight"])
            .unwrap()
            .command
            .is_none());
    }
}
