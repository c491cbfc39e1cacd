//! What the stub drives: [`Debuggee`], a machine with its history.
//!
//! The protocol layer (`target.rs` and friends) speaks only to this trait,
//! so it can be tested against a fake; `timeline_debuggee.rs` implements it
//! for a [`Machine`](hindsight_machine::Machine) with a
//! [`Timeline`](hindsight_timetravel::Timeline).

use hindsight_cpu::debug::{DebugSet, Watchpoint};
use hindsight_cpu::Cpu;

/// How to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Run forward until a breakpoint, watchpoint, the end or an interrupt.
    Continue,
    /// Run forward one instruction count.
    Step,
    /// Run backward to the last breakpoint/watchpoint hit before the present.
    ReverseContinue,
    /// Move back one instruction count.
    ReverseStep,
}

/// Why a run stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopEvent {
    /// vCPU `vcpu` is about to execute a breakpoint's instruction.
    Breakpoint { vcpu: usize },
    /// vCPU `vcpu` accessed watched data at linear `addr` (going forward:
    /// the machine is right after the accessing instruction; going
    /// backward: right before it).
    Watch {
        vcpu: usize,
        watch: Watchpoint,
        addr: u64,
    },
    /// A step finished; `vcpu` is the one that ran (or vCPU 0 when idle).
    Step { vcpu: usize },
    /// Stopped on request (Ctrl-C) between two slices of a run.
    Interrupted { vcpu: usize },
    /// Going backward reached the beginning of history.
    HistoryBegin,
    /// Going forward reached the end of a fixed history (a replay).
    HistoryEnd,
    /// The guest ended: powered off, debug exit, reset; the number is the
    /// exit status hindsight would report, the text says why. This is the
    /// end of the guest's history: gdb is told so, and can go backward.
    Exited { status: i32, reason: String },
    /// The machine stopped for good (triple fault, unimplemented
    /// instruction, deadlock): the text says what and where; the machine
    /// can still be inspected and moved backward.
    Stopped { vcpu: usize, reason: String },
}

/// The machine as the stub sees it.
pub trait Debuggee {
    /// Number of vCPUs (gdb threads 1..=n).
    fn vcpu_count(&self) -> usize;

    /// vCPU `vcpu`'s state at the present.
    fn cpu(&self, vcpu: usize) -> &Cpu;

    /// Changes vCPU `vcpu`'s registers at the present with `f`. Refused
    /// (the message says why) where history is fixed (a replay).
    fn edit_cpu(&mut self, vcpu: usize, f: &mut dyn FnMut(&mut Cpu)) -> Result<(), String>;

    /// Reads guest-physical memory; false if any byte is outside RAM.
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool;

    /// Writes guest-physical memory at the present; refused outside RAM
    /// or where history is fixed.
    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> Result<(), String>;

    /// Virtual time: the present instruction count.
    fn icount(&self) -> u64;

    /// Installs the breakpoints and watchpoints in force from now on.
    fn set_debug(&mut self, set: DebugSet);

    /// Runs as asked until a stop. `interrupted` is polled between slices
    /// of a forward or backward run (every few milliseconds); when it
    /// answers true the run stops with [`StopEvent::Interrupted`].
    fn resume(&mut self, how: Resume, interrupted: &mut dyn FnMut() -> bool) -> StopEvent;

    /// Moves to instruction count `icount` (`monitor seek`); the count
    /// reached, or why not. A long seek calls `progress` with the count
    /// reached every few milliseconds, so the stub can keep gdb waiting
    /// (gdb drops a reply that takes longer than its `remotetimeout`, 2 s
    /// by default) and stop the seek: when `progress` answers false the
    /// seek ends where it is, with an error naming that count.
    fn seek(&mut self, icount: u64, progress: &mut dyn FnMut(u64) -> bool) -> Result<u64, String>;

    /// Lines describing the checkpoints held (`monitor checkpoints`).
    fn checkpoints(&self) -> Vec<String>;

    /// The first and last instruction counts of known history.
    fn history(&self) -> (u64, u64);
}
