//! Whole-machine state: what [`crate::Machine::save_state`] captures and
//! [`crate::Machine::restore_state`] puts back, apart from RAM (which
//! [`crate::checkpoint`] saves page by page).
//!
//! A [`MachineState`] holds everything the guest can observe or that
//! decides what it observes next: every vCPU, every device, the interrupt
//! line levels, pending INIT/SIPI signals, the scheduler, virtual time,
//! queued console input. Host-side caches are not state: decoded code, the
//! vCPUs' TLBs (serde skips them), the cached timer deadline, console
//! output already emitted. Restoring drops or invalidates all of them.
//!
//! The state is serde data, encoded with [`crate::codec`]. Its layout is
//! versioned by [`STATE_VERSION`]: any change to a field of this module or
//! of a state struct it contains (in `hindsight-cpu` or
//! `hindsight-devices`) changes the encoding, the state hash, and must bump
//! the version.

use std::collections::VecDeque;
use std::fmt;

use hindsight_cpu::state::Mode;
use hindsight_cpu::{Cpu, Stop, StopKind};
use serde::{Deserialize, Serialize};

use crate::codec::CodecError;
use crate::devices::PcDevicesState;
pub use crate::sched::SchedState;

/// Version of the [`MachineState`] layout. Bump it with every change to
/// the layout of any state it contains.
pub const STATE_VERSION: u32 = 1;

/// A whole machine's state except RAM.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MachineState {
    /// [`STATE_VERSION`] when saved.
    pub version: u32,
    /// Bytes of guest RAM of the machine it was saved from.
    pub ram_size: u64,
    /// Every vCPU, by index (host-side TLBs are not meaningful here).
    pub vcpus: Vec<Cpu>,
    /// Every device and the interrupt wiring's levels.
    pub devices: PcDevicesState,
    /// The vCPU scheduler.
    pub sched: SchedState,
    /// Virtual time (the machine's instruction count).
    pub now: u64,
    /// Virtual time skipped with every vCPU halted.
    pub idle: u64,
    /// vCPUs waiting for a start-up IPI.
    pub waiting_sipi: Vec<bool>,
    /// Console input queued and not yet taken by the UART.
    pub input: VecDeque<u8>,
    /// Console input is held until COM1's receive interrupts are on.
    pub hold_input: bool,
    /// Since when COM1's receive interrupts have been on (held input only).
    pub rx_on_since: Option<u64>,
    /// The report of a stop (triple fault, unimplemented instruction), if
    /// the machine has stopped.
    pub stopped: Option<StopState>,
}

impl MachineState {
    /// Checks that this state fits a machine with `cpus` vCPUs and
    /// `ram_size` bytes of RAM and is internally consistent, so restoring
    /// it cannot panic.
    pub fn check(&self, cpus: usize, ram_size: u64) -> Result<(), SnapshotError> {
        if self.version != STATE_VERSION {
            return Err(SnapshotError::Version {
                found: self.version,
                supported: STATE_VERSION,
            });
        }
        if self.vcpus.len() != cpus {
            return Err(SnapshotError::CpuCount {
                found: self.vcpus.len(),
                expected: cpus,
            });
        }
        if self.ram_size != ram_size {
            return Err(SnapshotError::RamSize {
                found: self.ram_size,
                expected: ram_size,
            });
        }
        let bad = |what: String| Err(SnapshotError::Inconsistent(what));
        for (i, cpu) in self.vcpus.iter().enumerate() {
            if cpu.index as usize != i {
                return bad(format!("vCPU {i} says it is vCPU {}", cpu.index));
            }
            if ![16, 32, 64].contains(&cpu.bitness) {
                return bad(format!("vCPU {i} decodes {}-bit code", cpu.bitness));
            }
        }
        let lapics = self.devices.apic.lapics.len();
        if lapics != cpus {
            return bad(format!("{lapics} local APICs for {cpus} vCPUs"));
        }
        if self.waiting_sipi.len() != cpus {
            return bad(format!(
                "{} wait-for-SIPI flags for {cpus} vCPUs",
                self.waiting_sipi.len()
            ));
        }
        if self.sched.current >= cpus {
            return bad(format!(
                "the scheduler's current vCPU {} of {cpus}",
                self.sched.current
            ));
        }
        // The PIT divides by its counts (hindsight-devices does not clamp
        // them when rebuilding from a state).
        for (i, ch) in self.devices.pit.channels.iter().enumerate() {
            let mut counts = std::iter::once(ch.reload).chain(ch.pending_reload.map(|p| p.1));
            if let Some(n) = counts.find(|&n| n == 0 || n > 0x1_0000) {
                return bad(format!("PIT channel {i} counts {n}"));
            }
        }
        if let Some((i, _)) = self
            .devices
            .apic
            .cpu_signals
            .iter()
            .find(|(i, _)| *i >= cpus)
        {
            return bad(format!("an INIT/SIPI signal for vCPU {i} of {cpus}"));
        }
        Ok(())
    }
}

/// A saved [`Stop`] report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopState {
    /// What stopped the machine.
    pub kind: StopKindState,
    /// Virtual time of the stop.
    pub icount: u64,
    /// CS selector at the stop.
    pub cs: u16,
    /// RIP at the stop.
    pub rip: u64,
    /// Instruction bytes at CS:RIP.
    pub bytes: Vec<u8>,
    /// CPU mode name.
    pub mode: String,
}

/// A saved [`StopKind`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopKindState {
    /// A fault while delivering a double fault.
    TripleFault {
        /// The vector of the last fault.
        vector: u8,
        /// Its error code, if it has one.
        error_code: Option<u32>,
    },
    /// A valid instruction the CPU model does not implement.
    Unimplemented {
        /// Its mnemonic.
        mnemonic: String,
    },
    /// Something the emulator cannot model.
    Unsupported(String),
}

impl From<&Stop> for StopState {
    fn from(s: &Stop) -> Self {
        StopState {
            kind: match &s.kind {
                StopKind::TripleFault { vector, error_code } => StopKindState::TripleFault {
                    vector: *vector,
                    error_code: *error_code,
                },
                StopKind::Unimplemented { mnemonic } => StopKindState::Unimplemented {
                    mnemonic: mnemonic.clone(),
                },
                StopKind::Unsupported(what) => StopKindState::Unsupported(what.clone()),
            },
            icount: s.icount,
            cs: s.cs,
            rip: s.rip,
            bytes: s.bytes.clone(),
            mode: s.mode.to_string(),
        }
    }
}

impl From<&StopState> for Stop {
    fn from(s: &StopState) -> Self {
        const MODES: [Mode; 5] = [
            Mode::Real,
            Mode::Protected,
            Mode::Virtual8086,
            Mode::Long64,
            Mode::Compat,
        ];
        Stop {
            kind: match &s.kind {
                StopKindState::TripleFault { vector, error_code } => StopKind::TripleFault {
                    vector: *vector,
                    error_code: *error_code,
                },
                StopKindState::Unimplemented { mnemonic } => StopKind::Unimplemented {
                    mnemonic: mnemonic.clone(),
                },
                StopKindState::Unsupported(what) => StopKind::Unsupported(what.clone()),
            },
            icount: s.icount,
            cs: s.cs,
            rip: s.rip,
            bytes: s.bytes.clone(),
            mode: MODES
                .iter()
                .map(|m| m.name())
                .find(|&n| n == s.mode)
                .unwrap_or("an unknown mode"),
        }
    }
}

/// Why a state or checkpoint could not be saved or restored.
#[derive(Debug)]
pub enum SnapshotError {
    /// The state has another layout version.
    Version {
        /// The version it carries.
        found: u32,
        /// The only version this build reads.
        supported: u32,
    },
    /// The state is of a machine with another number of vCPUs.
    CpuCount {
        /// vCPUs in the state.
        found: usize,
        /// vCPUs of this machine.
        expected: usize,
    },
    /// The state is of a machine with another amount of RAM.
    RamSize {
        /// Bytes of RAM in the state.
        found: u64,
        /// Bytes of RAM of this machine.
        expected: u64,
    },
    /// The state contradicts itself (described).
    Inconsistent(String),
    /// The state's bytes could not be encoded or decoded.
    Codec(CodecError),
    /// No checkpoint has this index.
    NoCheckpoint {
        /// The index asked for.
        index: usize,
        /// Checkpoints in the store.
        len: usize,
    },
    /// A saved page could not be decompressed. RAM is partly restored: the
    /// store has lost track of the machine, and the next restore rewrites
    /// all of RAM.
    CorruptPage {
        /// Instruction count of the checkpoint holding the page.
        icount: u64,
        /// Guest-physical address of the page.
        gpa: u64,
        /// What was wrong.
        problem: String,
    },
    /// The checkpoint store cannot tell which pages changed since its last
    /// checkpoint (described): restore a checkpoint first, or clear it.
    Untracked(String),
    /// A checkpoint already exists at this instruction count and the
    /// machine differs from it: the run left the store's timeline (new
    /// input, host-side writes). Truncate the store where it diverged.
    Diverged {
        /// The instruction count.
        icount: u64,
        /// What differs (the machine state, or a page).
        what: String,
    },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Version { found, supported } => write!(
                f,
                "machine state version {found} is not supported (this build reads version {supported})"
            ),
            SnapshotError::CpuCount { found, expected } => write!(
                f,
                "the machine state has {found} vCPUs but this machine has {expected}"
            ),
            SnapshotError::RamSize { found, expected } => write!(
                f,
                "the machine state has {found:#x} bytes of RAM but this machine has {expected:#x}"
            ),
            SnapshotError::Inconsistent(what) => {
                write!(f, "the machine state is inconsistent: {what}")
            }
            SnapshotError::Codec(e) => write!(f, "machine state encoding: {e}"),
            SnapshotError::NoCheckpoint { index, len } => {
                write!(f, "no checkpoint {index}: the store holds {len}")
            }
            SnapshotError::CorruptPage {
                icount,
                gpa,
                problem,
            } => write!(
                f,
                "page {gpa:#x} of the checkpoint at icount {icount} is corrupt ({problem}); \
                 RAM is partly restored"
            ),
            SnapshotError::Untracked(why) => write!(
                f,
                "the checkpoint store cannot tell which pages changed: {why}; \
                 restore a checkpoint or clear the store first"
            ),
            SnapshotError::Diverged { icount, what } => write!(
                f,
                "at icount {icount} the machine differs from the checkpoint taken there \
                 ({what}): the run diverged from the checkpoints' timeline"
            ),
        }
    }
}

impl std::error::Error for SnapshotError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SnapshotError::Codec(e) => Some(e),
            _ => None,
        }
    }
}

impl From<CodecError> for SnapshotError {
    fn from(e: CodecError) -> Self {
        SnapshotError::Codec(e)
    }
}
