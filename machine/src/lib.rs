//! hindsight-machine assembles a PC from the CPU, the devices and the
//! loaders, and runs it on virtual time.
//!
//! | module      | owns |
//! |-------------|------|
//! | [`layout`]  | the guest-physical address map, one doc-commented const per magic address |
//! | [`memory`]  | guest RAM as one anonymous mapping, the dirty-page bitmap, [`hindsight_firmware::GuestMemory`] |
//! | [`bus`]     | port and MMIO buses (ranges, overlaps refused) and [`bus::VcpuBus`], the CPU's [`hindsight_cpu::Bus`] |
//! | [`apic`]    | local APICs, the I/O APIC and interrupt-message routing |
//! | [`devices`] | the legacy PC devices, their ports and IRQ wiring, the console |
//! | `event`     | the next deadline on virtual time |
//! | `sched`     | the seeded round-robin schedule of several vCPUs |
//! | `machine`   | [`Machine`]: loading, the run loop, interrupt delivery, exits, save/restore |
//! | [`snapshot`] | [`snapshot::MachineState`]: every vCPU and device, the scheduler, virtual time (all but RAM), versioned |
//! | [`checkpoint`] | incremental checkpoints: RAM pages dirtied since the previous one, lz4-compressed, and their store |
//! | [`state_hash`] | the SHA-256 state hash over the state and every non-zero page, with cached page digests |
//! | [`codec`]   | the stable binary encoding of serde state (snapshots, the state hash) |
//!
//! Virtual time is the instruction count: one retired instruction is one
//! nanosecond of guest time, every device clock derives from it, and a halted
//! machine skips to the next timer deadline. A run is a pure function of the
//! loaded images, the configuration (including the schedule seed) and the
//! console input, which enters only between run slices.
//!
//! ```
//! use hindsight_firmware::EntryMode;
//! use hindsight_machine::{Exit, Machine, MachineConfig};
//!
//! // mov al, 'A'; out 0xe9, al; mov al, 0; out 0xf4, al
//! let code = [0xB0, b'A', 0xE6, 0xE9, 0xB0, 0x00, 0xE6, 0xF4];
//! let mut m = Machine::new(&MachineConfig { memory: 4 << 20, ..Default::default() })?;
//! m.load_flat(&code, 0x7C00, EntryMode::Real16 { cs: 0, ip: 0x7C00 })?;
//! assert_eq!(m.run(), Exit::DebugExit(1));
//! assert_eq!(m.take_console_output(), b"A");
//! assert_eq!(m.icount(), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Device accesses carry the accessing vCPU's instruction count (the
//! [`hindsight_cpu::Bus`] methods take it), so a device sees the exact
//! virtual time of the instruction that touched it.
#![deny(missing_docs)]

pub mod apic;
pub mod bus;
pub mod checkpoint;
pub mod codec;
pub mod devices;
mod engine;
mod event;
pub mod layout;
mod lockstep;
mod machine;
pub mod memory;
mod sched;
pub mod snapshot;
pub mod state_hash;
pub mod state_summary;

pub use checkpoint::{Checkpoint, CheckpointStore, PageData, RestoreStats};
pub use devices::ConsoleSink;
pub use engine::{Engine, ENGINE_ENV};
pub use lockstep::{Lockstep, LockstepError, DEFAULT_CHECK_INTERVAL};
pub use machine::{
    Exit, Machine, MachineConfig, MachineError, DEFAULT_RTC_UNIX_SECS, DEFAULT_SEED,
    ENTRY_CODE_SELECTOR, ENTRY_DATA_SELECTOR, MAX_CPUS,
};
pub use memory::{GuestRam, MemoryError};
pub use sched::{QUANTUM_MAX, QUANTUM_MIN};
pub use snapshot::{MachineState, SnapshotError, STATE_VERSION};
pub use state_summary::{Difference, PageDiff, StateSummary, SummaryTracker};
