//! The `--engine` option: which engine runs the guest, or `check`, which
//! runs it under the JIT with an interpreter twin in lockstep and stops at
//! the first instruction count where they differ.

use std::fmt;
use std::str::FromStr;

use hindsight_machine::Engine;

/// What `--engine` (or the `HINDSIGHT_ENGINE` variable) chose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineChoice {
    /// The interpreter.
    Interp,
    /// The JIT (the default).
    #[default]
    Jit,
    /// The JIT checked against the interpreter in lockstep.
    Check,
}

impl EngineChoice {
    /// The engine the machine itself runs on (`check` runs the JIT; its
    /// interpreter twin is a second machine).
    pub fn engine(self) -> Engine {
        match self {
            EngineChoice::Interp => Engine::Interp,
            EngineChoice::Jit | EngineChoice::Check => Engine::Jit,
        }
    }

    /// Whether the run is checked against an interpreter twin.
    pub fn checks(self) -> bool {
        self == EngineChoice::Check
    }

    /// Refuses `check` for a command that cannot run a twin, naming it.
    pub fn plain(self, command: &str) -> Result<Engine, String> {
        match self {
            EngineChoice::Check => Err(format!(
                "--engine check runs under 'run', 'boot', 'demo' and 'replay', not '{command}'"
            )),
            other => Ok(other.engine()),
        }
    }
}

impl fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineChoice::Check => f.write_str("check"),
            other => other.engine().fmt(f),
        }
    }
}

impl FromStr for EngineChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<EngineChoice, String> {
        match s {
            "check" => Ok(EngineChoice::Check),
            _ => match s.parse::<Engine>() {
                Ok(Engine::Interp) => Ok(EngineChoice::Interp),
                Ok(Engine::Jit) => Ok(EngineChoice::Jit),
                Err(_) => Err(format!("'{s}' is not an engine (interp, jit, check)")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for c in [EngineChoice::Interp, EngineChoice::Jit, EngineChoice::Check] {
            assert_eq!(c.to_string().parse::<EngineChoice>(), Ok(c));
        }
        assert!("tcg"
            .parse::<EngineChoice>()
            .unwrap_err()
            .contains("interp, jit, check"));
        assert_eq!(EngineChoice::Check.engine(), Engine::Jit);
        assert!(EngineChoice::Check.plain("bench").is_err());
        assert_eq!(EngineChoice::Interp.plain("bench"), Ok(Engine::Interp));
    }
}
