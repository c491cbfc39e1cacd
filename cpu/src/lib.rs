//! hindsight-cpu owns one x86-64 logical processor: its architectural state
//! ([`Cpu`]), the decoded-block cache ([`CodeCache`]), the MMU with its software
//! TLB, exception and interrupt delivery, and the caching interpreter.
//!
//! It knows nothing of devices or time travel: memory and I/O are reached only
//! through the [`Bus`] trait that the machine implements. Virtual time is the
//! instruction count ([`Cpu::icount`]); [`interp::run`] stops exactly at a
//! requested count.

pub mod block;
pub mod bus;
pub mod cpuid;
pub mod debug;
pub mod debug_walk;
pub mod fault;
pub mod flags;
pub mod interp;
pub mod memory;
pub mod mmu;
pub mod msr;
pub mod paging_log;
pub mod simd;
pub mod state;
pub mod tlb;
pub mod x87;

#[cfg(test)]
mod fuzz_tests;
/// The test harness of the instruction-group tests (flat RAM bus, CPUs set
/// up in each mode), also offered to other crates' tests through the
/// `testutil` feature.
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;

pub use block::CodeCache;
pub use bus::{Bus, WritablePage};
pub use fault::{Fault, Stop, StopKind};
pub use interp::{run, BlockRef, Ctx, RunExit};
pub use state::{Cpu, Mode, SegReg, Segment};
