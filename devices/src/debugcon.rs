//! The Bochs/QEMU debug console at I/O port 0xE9.
//!
//! Each byte written is appended to a host-side output buffer, drained with
//! [`Debugcon::take_output`]. Reads return 0xE9, which guests use to detect
//! the port. The device has no guest-visible state beyond that constant, so
//! its state struct is empty; the output buffer is host-side and is not part
//! of it.

use serde::{Deserialize, Serialize};

/// I/O port of the debug console.
pub const DEBUGCON_PORT: u16 = 0xE9;

/// Value every read returns (the "port E9 hack" detection value).
const READBACK: u8 = 0xE9;

/// Saved state of a [`Debugcon`]: empty, as nothing is guest-visible.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugconState {}

/// The 0xE9 debug console.
#[derive(Clone, Debug, Default)]
pub struct Debugcon {
    /// Bytes written and not yet taken (host-side).
    output: Vec<u8>,
}

impl Debugcon {
    /// A debug console with an empty output buffer.
    pub fn new() -> Self {
        Self::from_state(&DebugconState::default())
    }

    /// Rebuilds the device from saved state (with an empty output buffer).
    pub fn from_state(_state: &DebugconState) -> Self {
        Debugcon { output: Vec::new() }
    }

    /// The guest-visible state, for a snapshot.
    pub fn state(&self) -> DebugconState {
        DebugconState {}
    }

    /// A guest read: always 0xE9.
    pub fn read(&self) -> u8 {
        READBACK
    }

    /// A guest write: appends `value` to the output.
    pub fn write(&mut self, value: u8) {
        self.output.push(value);
    }

    /// Takes the bytes written since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_readback() {
        let mut d = Debugcon::new();
        assert_eq!(d.read(), 0xE9);
        for &b in b"ok\n" {
            d.write(b);
        }
        assert_eq!(d.take_output(), b"ok\n");
        assert!(d.take_output().is_empty());
    }

    #[test]
    fn snapshot_roundtrip() {
        let mut d = Debugcon::new();
        let saved = d.state();
        d.write(b'x');
        let mut r = Debugcon::from_state(&saved);
        assert_eq!(r.state(), saved);
        assert!(r.take_output().is_empty(), "output is host-side, not state");
        assert_eq!(r.read(), 0xE9);
    }
}
