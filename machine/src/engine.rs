//! Which execution engine runs the vCPUs: the interpreter or the JIT.
//!
//! Both execute the same [`hindsight_cpu::Cpu`] state and agree on it at
//! every instruction count (brief invariant 3), so the engine is a host-side
//! choice: it is never part of a trace, and a trace recorded under one
//! engine replays under the other.

use std::fmt;
use std::str::FromStr;

/// The environment variable that overrides the default engine, so a whole
/// test suite (or any program building a default [`crate::MachineConfig`])
/// runs under the engine it names: `HINDSIGHT_ENGINE=interp cargo test`.
pub const ENGINE_ENV: &str = "HINDSIGHT_ENGINE";

/// An execution engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Engine {
    /// The caching interpreter (hindsight-cpu).
    Interp,
    /// The dynamic binary translator (hindsight-jit): hot blocks run as
    /// host code, everything else in the interpreter. The default.
    #[default]
    Jit,
}

impl Engine {
    /// The default engine: the one [`ENGINE_ENV`] names, else the JIT.
    /// An unknown name in the variable is a mistake worth stopping for: a
    /// suite meant to run under one engine must not silently run another.
    ///
    /// # Panics
    /// If [`ENGINE_ENV`] is set to something other than an engine's name.
    pub fn from_env() -> Engine {
        match std::env::var(ENGINE_ENV) {
            Ok(v) if !v.is_empty() => v
                .parse()
                .unwrap_or_else(|e| panic!("{ENGINE_ENV}={v}: {e}")),
            _ => Engine::default(),
        }
    }

    /// The engine's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Interp => "interp",
            Engine::Jit => "jit",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Engine, String> {
        match s {
            "interp" | "interpreter" => Ok(Engine::Interp),
            "jit" => Ok(Engine::Jit),
            _ => Err(format!("'{s}' is not an engine (interp, jit)")),
        }
    }
}
