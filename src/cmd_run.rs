//! `hindsight run`: boot a multiboot kernel with its console on stdio.

use std::io::IsTerminal;
use std::path::Path;

use hindsight_firmware::Module;
use hindsight_machine::{Machine, MachineConfig};

use crate::console::{self, StdinReader};
use crate::drive::{self, Drive};
use crate::{exit_code, RunArgs};

/// Reads a whole image file, reporting a failure on stderr.
fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, i32> {
    std::fs::read(path).map_err(|e| {
        eprintln!("hindsight: cannot read {what} '{}': {e}", path.display());
        exit_code::USAGE
    })
}

/// A `--module FILE[,ARGS]` argument, read.
struct ModuleArg {
    /// The string the kernel sees: "FILE ARGS" or "FILE".
    string: String,
    data: Vec<u8>,
}

fn read_module(arg: &str) -> Result<ModuleArg, i32> {
    let (file, args) = match arg.split_once(',') {
        Some((f, a)) => (f, Some(a)),
        None => (arg, None),
    };
    if file.is_empty() {
        eprintln!("hindsight: --module '{arg}': the file name is empty");
        return Err(exit_code::USAGE);
    }
    let data = read_file(Path::new(file), "module")?;
    let string = match args {
        Some(a) if !a.is_empty() => format!("{file} {a}"),
        _ => file.to_string(),
    };
    if string.contains('\0') {
        eprintln!("hindsight: --module '{arg}': the module string contains a NUL byte");
        return Err(exit_code::USAGE);
    }
    Ok(ModuleArg { string, data })
}

/// Runs the command; returns the process exit status.
pub fn run(args: &RunArgs) -> i32 {
    match boot(args) {
        Ok(mut m) => {
            console::to_stdout(&mut m);
            let mut d = Drive {
                max_insns: args.max_insns,
                input: Some(StdinReader::spawn(false)),
                pace: std::io::stdin().is_terminal(),
            };
            let end = d.run(&mut m);
            drive::report_machine(&end, args.max_insns, &m)
        }
        Err(code) => code,
    }
}

fn boot(args: &RunArgs) -> Result<Machine, i32> {
    let kernel = read_file(&args.multiboot, "multiboot kernel")?;
    let modules = args
        .modules
        .iter()
        .map(|m| read_module(m))
        .collect::<Result<Vec<_>, _>>()?;
    if args.append.contains('\0') {
        eprintln!("hindsight: --append: the command line contains a NUL byte");
        return Err(exit_code::USAGE);
    }
    let cfg = MachineConfig {
        memory: args.memory,
        cpus: args.cpus,
        max_insns: args.max_insns,
        ..MachineConfig::default()
    };
    let mut m = Machine::new(&cfg).map_err(|e| {
        eprintln!("hindsight: {e}");
        exit_code::USAGE
    })?;
    let mods: Vec<Module> = modules
        .iter()
        .map(|m| Module {
            data: &m.data,
            args: &m.string,
        })
        .collect();
    m.load_multiboot(&kernel, &args.append, &mods)
        .map_err(|e| {
            eprintln!("hindsight: {}: {e}", args.multiboot.display());
            exit_code::USAGE
        })?;
    Ok(m)
}
