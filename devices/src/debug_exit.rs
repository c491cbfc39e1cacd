//! QEMU-compatible `isa-debug-exit` device (I/O port 0xF4).
//!
//! Writing value `v` ends the run with exit status `(v << 1) | 1`, so a guest
//! can never produce status 0 and a test harness can tell a guest-chosen
//! status from an emulator failure. The value is what the access carried
//! (zero-extended from a byte, word or dword access, as QEMU's `iosize`
//! would give it). Only the first write counts: the run ends there.
//!
//! Reads return 0 on every byte, like QEMU's device (guests use that to
//! detect it). The machine stops the run when [`DebugExit::exit_status`]
//! becomes `Some`.

use serde::{Deserialize, Serialize};

/// I/O port of the device in QEMU's default configuration.
pub const DEBUG_EXIT_PORT: u16 = 0xF4;

/// Saved state of a [`DebugExit`]. `Default` is the power-on state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugExitState {
    /// The value of the first write, if any.
    pub written: Option<u32>,
}

/// QEMU's isa-debug-exit: a write requests the end of the run.
#[derive(Clone, Debug, Default)]
pub struct DebugExit {
    state: DebugExitState,
}

impl DebugExit {
    /// A device with no exit requested.
    pub fn new() -> Self {
        Self::from_state(&DebugExitState::default())
    }

    /// Rebuilds the device from saved state.
    pub fn from_state(state: &DebugExitState) -> Self {
        DebugExit {
            state: state.clone(),
        }
    }

    /// The guest-visible state, for a snapshot.
    pub fn state(&self) -> DebugExitState {
        self.state.clone()
    }

    /// A guest write of `value`; the first one fixes the exit status.
    pub fn write(&mut self, value: u32) {
        if self.state.written.is_none() {
            self.state.written = Some(value);
        }
    }

    /// A guest read: always 0, as in QEMU.
    pub fn read(&self) -> u32 {
        0
    }

    /// `Some((v << 1) | 1)` once the guest wrote `v` (the shift wraps, as the
    /// C `int` conversion in QEMU does), `None` before.
    pub fn exit_status(&self) -> Option<i32> {
        self.state.written.map(|v| (v.wrapping_shl(1) | 1) as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_encoding() {
        let mut d = DebugExit::new();
        assert_eq!(d.exit_status(), None);
        assert_eq!(d.read(), 0);
        d.write(0);
        assert_eq!(d.exit_status(), Some(1));
        let mut d = DebugExit::new();
        d.write(0x10);
        assert_eq!(d.exit_status(), Some(0x21));
        d.write(0x31); // later writes do not change the outcome
        assert_eq!(d.exit_status(), Some(0x21));
        let mut d = DebugExit::new();
        d.write(u32::MAX);
        assert_eq!(d.exit_status(), Some(-1));
    }

    #[test]
    fn snapshot_roundtrip() {
        let d = DebugExit::new();
        let saved = d.state();
        let mut d2 = DebugExit::from_state(&saved);
        d2.write(3);
        assert_ne!(d2.state(), saved);
        let r = DebugExit::from_state(&saved);
        assert_eq!(r.state(), saved);
        assert_eq!(r.exit_status(), None);
        let r2 = DebugExit::from_state(&d2.state());
        assert_eq!(r2.exit_status(), Some(7));
    }
}
