//! Process exit statuses of the `hindsight` program.

/// Success (the demo guest, a clean selftest).
pub const OK: i32 = 0;
/// Selftest failures, or an internal error.
pub const FAILURE: i32 = 1;
/// Bad arguments, or an image that cannot be read or loaded.
pub const USAGE: i32 = 2;
/// The guest stopped the machine (triple fault, unimplemented instruction).
pub const STOPPED: i32 = 3;
/// Every vCPU halted with nothing left to wake it.
pub const DEADLOCK: i32 = 4;
/// The instruction limit (--max-insns) was reached.
pub const INSN_LIMIT: i32 = 5;
/// The guest asked for a system reset, which hindsight does not perform.
pub const RESET: i32 = 6;
/// A replay did not reproduce its recording, or `--engine check` found the
/// engines differ.
pub const DIVERGED: i32 = 7;
/// A replayed trace is truncated or corrupt (it replayed up to there).
pub const TRACE_DAMAGED: i32 = 8;

/// The exit statuses as `--help` shows them.
pub const HELP: &str = "\
Exit status:
  (v << 1) | 1  the guest wrote v to the debug-exit port 0xf4 (always odd)
  0             success (demo, selftest with no failure, bench), the guest
                powered off, or the user quit with Ctrl-A x
  1             selftest failures
  2             bad arguments, unreadable or malformed image file
  3             the guest stopped the machine (triple fault, unimplemented
                instruction); the report is printed on stderr
  4             deadlock: every vCPU halted with interrupts off or no
                interrupt source left to wake it
  5             instruction limit (--max-insns) reached
  6             the guest asked for a reset (reboot), which stops hindsight
  7             replay: the run diverged from its recording; --engine check:
                the JIT and the interpreter differed
  8             replay: the trace is truncated or corrupt
  Statuses 3 and 5 can also be debug-exit statuses (v = 1, 2): the message
  on stderr tells them apart.";
