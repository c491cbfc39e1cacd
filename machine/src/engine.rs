//! Which execution engine runs the vCPUs: the interpreter or the JIT.
//!
//! Both execute the same [`hindsight_cpu::Cpu`] state and agree on it at
//! every instruction count (brief invariant 3), so the engine is a host-side
//! choice: it is never part of a trace, and a trace recorded under one
//! engine replays under the other.

use std::fmt;
use std::str::FromStr;

/// An execution engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Engine {
    /// The caching interpreter (hindsight-cpu).
    #[default]
    Interp,
    /// The dynamic binary translator (hindsight-jit): hot blocks run as
    /// host code, everything else in the interpreter.
    Jit,
}

impl Engine {
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
