//! hindsight-jit owns the dynamic binary translator: guest x86 blocks
//! turned into host x86-64 code with dynasmrt, the executable code buffer
//! that holds them (flushed whole when full), and [`Jit::run`], an engine
//! with the same contract as the interpreter's
//! [`Ctx::run`](hindsight_cpu::Ctx::run).
//!
//! One decode, one invalidation: native code is attached to the
//! interpreter's decoded blocks (by slot and serial in the shared
//! [`CodeCache`](hindsight_cpu::CodeCache)), so self-modifying code, page
//! invalidation and code-cache clears retire translations for free: a block
//! whose serial changed is never entered.
//!
//! Exactness (virtual time is the instruction count): a block runs natively
//! only when all of it fits the remaining budget and it needs no debug path
//! (TF, RF, DR7, a debugger breakpoint inside it); otherwise the interpreter
//! runs it. Every instruction not inlined calls the interpreter's handler
//! through [`helpers`], which delivers faults exactly as the interpreter
//! does and catches panics so none unwinds through generated code. Inlined
//! instructions (register moves and arithmetic with ADC/SBB, shifts and
//! rotates, IMUL, CMOVcc/SETcc, MOVZX/MOVSX, NOT/NEG, BSWAP, XCHG, LEA,
//! the common SSE integer instructions (`sse`),
//! conditional and direct jumps in 64-bit code) compute RFLAGS exactly as
//! the interpreter does, with the host's own flags where they are defined,
//! storing only the flags a later instruction may observe (`liveness`);
//! RFLAGS and the instruction count stay in host registers while generated
//! code runs (`translate`); in 64-bit code
//! and in 32-bit code with flat segments, memory operands go through an
//! inlined TLB lookup (`mem`) with the handler as slow path, and so do
//! PUSH/POP, CALL/RET and JMP/CALL through a register in 64-bit code
//! (`calls`).
//!
//! A Jcc over one register instruction (a hammock) is done without a host
//! branch: the block is translated together with the block after it, the
//! skipped instruction's effects undone by CMOVs when the Jcc is taken
//! (`hammock`).
//!
//! Blocks chain without returning to the engine's loop: static exits
//! through link cells (`chain`; a block looping on itself jumps straight
//! back after the budget check), RET and register branches through the
//! jump cache (`indirect`), each after checking in native code what the
//! loop would still need to check (the argument is in `chain`), under a
//! link generation that retires every link whenever a block may be stale.

mod calls;
mod chain;
mod codebuf;
mod cond;
mod data;
mod engine;
mod hammock;
mod helpers;
mod indirect;
mod inline;
mod liveness;
mod mem;
mod muldiv;
mod shift;
mod sse;
mod translate;
mod unary;

#[cfg(test)]
mod tests;

pub use engine::{Jit, JitStats, DEFAULT_THRESHOLD};
