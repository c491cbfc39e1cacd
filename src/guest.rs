//! Booting the built-in guests of hindsight-testsuite.

use hindsight_machine::{Engine, Machine, MachineConfig};
use hindsight_testsuite::guests::GuestImage;

use crate::exit_code;

/// Guest RAM of the built-in guests.
pub const BUILTIN_MEMORY: u64 = 64 << 20;

/// A machine running on `engine` with `image` loaded and vCPU 0 at its
/// entry. Errors are reported on stderr and returned as an exit status.
pub fn boot(image: &GuestImage, max_insns: Option<u64>, engine: Engine) -> Result<Machine, i32> {
    let cfg = MachineConfig {
        memory: BUILTIN_MEMORY,
        max_insns,
        engine,
        ..MachineConfig::default()
    };
    let mut m = Machine::new(&cfg).map_err(|e| {
        eprintln!("hindsight: cannot build the machine: {e}");
        exit_code::FAILURE
    })?;
    m.load_flat(&image.bytes, image.load_addr, image.entry)
        .map_err(|e| {
            eprintln!("hindsight: built-in guest '{}': {e}", image.name);
            exit_code::FAILURE
        })?;
    Ok(m)
}
