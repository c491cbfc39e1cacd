//! hindsight-testsuite: the programs that check hindsight from the guest's
//! side of the glass.
//!
//! What this crate owns:
//!
//! - [`guests`]: guest test programs written in Rust with iced-x86's
//!   `code_asm` assembler — no external assembler, no binary blobs checked
//!   in. A small framework ([`guests::asm`]) assembles code of any bitness
//!   (16, 32, 64) into one flat image loaded at a fixed address and entered
//!   in real mode, the way real hardware starts, so every guest walks through
//!   the processor modes itself. Library code emitted into every image
//!   prints on COM1, reports `PASS name` / `FAIL name (detail)` lines,
//!   records exceptions, and exits through the isa-debug-exit port. The
//!   built-in guests are [`guests::demo`] (what `hindsight` runs with no
//!   arguments) and [`guests::bench`] (a CPU-bound loop for the `bench`
//!   command).
//! - [`selftest`]: the selftest guests (real mode, protected mode, paging,
//!   rings, virtual-8086 mode, long mode, exceptions, the PIT and PIC, string
//!   instructions, SYSCALL/SYSENTER, ...) and the runner behind
//!   `hindsight selftest`, which runs each guest in a fresh
//!   `hindsight_machine::Machine` and counts the checks.
//! - The host-CPU differential tester (binary `difftest`), which runs
//!   instruction sequences both natively and in the interpreter and compares
//!   the architectural state.
//! - End-to-end tests (`tests/`): the selftest as a cargo test, determinism
//!   of the demo guest, and (in the root package) the `hindsight` program run
//!   on multiboot kernels, malformed files and triple-faulting guests.

pub mod guests;
pub mod selftest;

/// The assembler used by the guests, re-exported so end-to-end tests in other
/// packages can assemble small guests without their own dependency.
pub use iced_x86;
