//! Deterministic scheduling of several vCPUs on one host thread.
//!
//! vCPUs run round-robin in instruction quanta. Each turn's quantum is
//! drawn from a SplitMix64 sequence seeded from the machine configuration,
//! so a schedule (including a "chaos" one that exposed a race) is a pure
//! function of the seed and replays exactly. A turn ends when its quantum
//! is used up or its vCPU halts; a slice cut short by an exit (I/O, a
//! deadline) continues the same turn. With one vCPU there are no turns.

use hindsight_cpu::Cpu;
use serde::{Deserialize, Serialize};

/// Shortest quantum, in instructions.
pub const QUANTUM_MIN: u64 = 1_000;
/// Longest quantum, in instructions.
pub const QUANTUM_MAX: u64 = 50_000;

/// The round-robin scheduler state.
#[derive(Clone, Debug)]
pub(crate) struct Scheduler {
    rng: u64,
    current: usize,
    /// Instructions left in the current turn (0 = pick the next vCPU).
    left: u64,
}

/// Saved state of the scheduler: where the quantum sequence and the
/// round-robin turn stand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedState {
    /// SplitMix64 state: the next quantum derives from it.
    pub rng: u64,
    /// The vCPU whose turn it is (or was last).
    pub current: usize,
    /// Instructions left in the current turn (0 = pick the next vCPU).
    pub left: u64,
}

impl Scheduler {
    /// The state to save in a snapshot.
    pub(crate) fn state(&self) -> SchedState {
        SchedState {
            rng: self.rng,
            current: self.current,
            left: self.left,
        }
    }

    /// Rebuilds a scheduler from saved state (the caller checked that
    /// `current` names a vCPU).
    pub(crate) fn from_state(s: &SchedState) -> Scheduler {
        Scheduler {
            rng: s.rng,
            current: s.current,
            left: s.left,
        }
    }

    /// A scheduler whose quantum sequence comes from `seed`.
    pub(crate) fn new(seed: u64) -> Scheduler {
        Scheduler {
            rng: seed,
            current: 0,
            left: 0,
        }
    }

    /// SplitMix64: small, fast and fully determined by its state.
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn draw_quantum(&mut self) -> u64 {
        QUANTUM_MIN + self.next_u64() % (QUANTUM_MAX - QUANTUM_MIN + 1)
    }

    /// The vCPU to run next and how many instructions its turn has left;
    /// `None` when every vCPU is halted.
    #[inline]
    pub(crate) fn pick(&mut self, cpus: &[Cpu]) -> Option<(usize, u64)> {
        if cpus.len() == 1 {
            return (!cpus[0].halted).then_some((0, u64::MAX));
        }
        if self.left > 0 && !cpus[self.current].halted {
            return Some((self.current, self.left));
        }
        let n = cpus.len();
        let next = (1..=n)
            .map(|k| (self.current + k) % n)
            .find(|&i| !cpus[i].halted)?;
        self.current = next;
        self.left = self.draw_quantum();
        Some((next, self.left))
    }

    /// Charges `n` retired instructions to the current turn.
    #[inline]
    pub(crate) fn consumed(&mut self, n: u64) {
        self.left = self.left.saturating_sub(n);
    }

    /// Ends the current turn (the machine idled).
    pub(crate) fn end_turn(&mut self) {
        self.left = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(n: u32) -> Vec<Cpu> {
        (0..n).map(Cpu::new).collect()
    }

    /// Runs `steps` turns and returns (vcpu, quantum) of each.
    fn schedule(seed: u64, cpus: &mut [Cpu], steps: usize) -> Vec<(usize, u64)> {
        let mut s = Scheduler::new(seed);
        let mut out = Vec::new();
        for _ in 0..steps {
            let (i, q) = s.pick(cpus).unwrap();
            out.push((i, q));
            s.consumed(q);
        }
        out
    }

    #[test]
    fn one_vcpu_runs_unbounded() {
        let mut c = cpus(1);
        let mut s = Scheduler::new(1);
        assert_eq!(s.pick(&c), Some((0, u64::MAX)));
        c[0].halted = true;
        assert_eq!(s.pick(&c), None);
    }

    #[test]
    fn round_robin_with_seeded_quanta() {
        let mut c = cpus(3);
        let a = schedule(42, &mut c, 9);
        assert_eq!(a, schedule(42, &mut c, 9), "same seed, same schedule");
        assert_ne!(a, schedule(43, &mut c, 9), "another seed, another schedule");
        let order: Vec<usize> = a.iter().map(|t| t.0).collect();
        assert_eq!(order, [1, 2, 0, 1, 2, 0, 1, 2, 0]);
        assert!(a.iter().all(|t| (QUANTUM_MIN..=QUANTUM_MAX).contains(&t.1)));
    }

    #[test]
    fn halted_vcpus_are_skipped_and_turns_continue() {
        let mut c = cpus(3);
        c[1].halted = true;
        let mut s = Scheduler::new(7);
        let (i, q) = s.pick(&c).unwrap();
        assert_eq!(i, 2);
        s.consumed(10);
        assert_eq!(s.pick(&c), Some((2, q - 10)), "a cut slice keeps its turn");
        s.consumed(q);
        assert_eq!(s.pick(&c).unwrap().0, 0);
        s.end_turn();
        c[0].halted = true;
        c[2].halted = true;
        assert_eq!(s.pick(&c), None);
    }
}
