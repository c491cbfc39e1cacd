//! `hindsight run`: boot a multiboot kernel with its console on stdio.

use std::path::Path;

use hindsight_machine::MachineConfig;

use crate::setup::{Guest, Image, Setup};
use crate::{exit_code, fetch, session, RunArgs};

/// A `--module FILE[,ARGS]` argument, read: the string the kernel sees
/// ("FILE ARGS" or "FILE") and the image.
fn read_module(arg: &str) -> Result<(String, Image), String> {
    let (file, args) = match arg.split_once(',') {
        Some((f, a)) => (f, Some(a)),
        None => (arg, None),
    };
    if file.is_empty() {
        return Err(format!("--module '{arg}': the file name is empty"));
    }
    let image = Image::read(Path::new(file), "module")?;
    let string = match args {
        Some(a) if !a.is_empty() => format!("{file} {a}"),
        _ => file.to_string(),
    };
    if string.contains('\0') {
        return Err(format!(
            "--module '{arg}': the module string contains a NUL byte"
        ));
    }
    Ok((string, image))
}

/// The machine `args` describe.
fn setup(args: &RunArgs) -> Result<Setup, String> {
    let kernel = Image::read(&args.multiboot, "multiboot kernel")?;
    let modules = args
        .modules
        .iter()
        .map(|m| read_module(m))
        .collect::<Result<Vec<_>, _>>()?;
    if args.append.contains('\0') {
        return Err("--append: the command line contains a NUL byte".into());
    }
    Ok(Setup {
        config: MachineConfig {
            memory: args.memory,
            cpus: args.cpus,
            max_insns: args.max_insns,
            engine: args.engine.engine.engine(),
            ..MachineConfig::default()
        },
        guest: Guest::Multiboot {
            kernel,
            cmdline: args.append.clone(),
            modules,
        },
    })
}

/// Runs the command; returns the process exit status.
pub fn run(args: &RunArgs) -> i32 {
    let setup = match setup(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hindsight: {e}");
            return exit_code::USAGE;
        }
    };
    let cache_dir = fetch::cache_dir(None).unwrap_or_else(|_| std::env::temp_dir());
    session::run(
        &setup,
        &session::Options {
            max_insns: args.max_insns,
            raw_terminal: false,
            record: args.record.as_deref(),
            embed_images: args.embed_images,
            stats: false,
            cache_dir,
            gdb: &args.gdb,
            check: args.engine.engine.checks(),
        },
    )
}
