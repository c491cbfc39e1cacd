//! SSE/SSE2 arithmetic core: pure, deterministic functions over 128-bit
//! XMM values, bit-exact with the hardware.
//!
//! Values are `u128` (lane 0 in the low bits, as in the register); [`lane`]
//! and [`set_lane`] access lanes. The instruction wrappers in the decoder
//! pick operands; every function here is side-effect free.
//!
//! - [`int`]: packed-integer SSE2, shifts, packs, unpacks, shuffles,
//!   PMOVMSKB/MOVMSKPS/PD, PEXTRW/PINSRW, SHUFPS/PD, UNPCKx.
//! - [`float`]: single/double arithmetic under [`Mxcsr`] (RC, FTZ, DAZ)
//!   in integer arithmetic only, so no result depends on the host's FPU
//!   state. Binary operations take the format ([`F32`]/[`F64`]) and an
//!   [`Op`]; the packed/scalar wrappers return the new destination and
//!   the exception flags raised (MXCSR bits 0..5) for the caller to OR
//!   into MXCSR. Only the masked exception responses are modelled (with
//!   an exception unmasked the hardware leaves the destination unwritten
//!   and raises #XM, which is the caller's business).
//!
//! Hardware rules found by the differential tests and modelled here:
//! - NaN operands: the first operand's NaN wins, quieted; SNaN raises IE.
//!   A NaN operand suppresses DE.
//! - Tininess is detected after rounding; with UE masked, UE needs an
//!   inexact tiny result; FTZ flushes every tiny result to a signed zero
//!   with UE and PE.
//! - `x / 0` with a denormal dividend raises ZE only (no DE).
//! - MIN/MAX return the second operand for a NaN (IE even on a QNaN, DE
//!   suppressed) or two zeros; under DAZ a denormal result operand is
//!   returned as a signed zero.
//! - Float-to-integer conversions never raise DE; under DAZ a denormal
//!   converts exactly to 0.
//!
//! Verified bit-for-bit (result and flags) against the host by the
//! differential tests in `tests.rs`, in all four rounding modes × FTZ ×
//! DAZ. `SIMD_CASES` sets the random cases per test, `SIMD_SEED` the
//! stream.

pub mod float;
pub mod int;
#[cfg(all(test, target_arch = "x86_64"))]
mod tests;

pub use float::*;
pub use int::*;
