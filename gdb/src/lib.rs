//! hindsight-gdb owns the GDB remote protocol side of hindsight: a
//! [gdbstub] target over any [`Debuggee`] (a machine with its history), the
//! three register views gdb can be shown ([`ArchView`]: x86-64 with the
//! system registers, i386, i8086), gdb's memory accesses at linear
//! addresses through the guest's page tables, breakpoints and watchpoints
//! kept in the machine's [`DebugSet`](hindsight_cpu::debug::DebugSet)
//! (never written into guest memory), forward and reverse execution
//! (`stepi`, `continue`, `reverse-stepi`, `reverse-continue`), Ctrl-C,
//! and `monitor` commands (`icount`, `seek`, `checkpoints`, `info sysregs`).
//!
//! It does not run the machine itself: [`Debuggee::resume`] does, and the
//! program implements [`Debuggee`] over a machine and its timeline
//! (`timeline_debuggee.rs`). The program calls [`serve`] with a bound
//! listener:
//!
//! ```no_run
//! # fn demo(machine: &mut dyn hindsight_gdb::Debuggee) -> Result<(), hindsight_gdb::GdbError> {
//! use hindsight_gdb::{serve, ArchView, GdbOptions, SessionEnd};
//! let listener = std::net::TcpListener::bind("127.0.0.1:1234")?;
//! let opts = GdbOptions { arch: ArchView::X86_64, wait: true };
//! match serve(listener, machine, &opts)? {
//!     SessionEnd::Detached | SessionEnd::Disconnected => { /* run the guest on */ }
//!     SessionEnd::Killed => { /* end */ }
//!     SessionEnd::Exited { status } => { /* exit with the guest's status */ let _ = status; }
//! }
//! # Ok(()) }
//! ```
//!
//! Files, one per responsibility: `arch.rs` (views, target descriptions,
//! register blocks), `regs.rs` (Cpu ⇄ registers), `memory.rs` (linear
//! memory), `target.rs` (threads, resume, stop replies),
//! `breakpoints.rs`, `monitor.rs`, `server.rs` (connection and event loop).

#![deny(missing_docs)]

pub mod arch;
pub mod breakpoints;
// The contract's enum fields are described in their variants' docs.
#[allow(missing_docs)]
pub mod debuggee;
pub mod memory;
pub mod monitor;
pub mod regs;
pub mod server;
pub mod target;
mod timeline_debuggee;

pub use arch::ArchView;
pub use debuggee::{Debuggee, Resume, StopEvent};
pub use server::{serve, GdbError, GdbOptions, SessionEnd};
pub use timeline_debuggee::{GuestEnd, InputSource, TimelineDebuggee, SLICE};
