//! Lockstep checking of the engines (`--engine check`): the machine runs
//! under the JIT while a twin built the same way runs under the
//! interpreter, both fed the same inputs at the same instruction counts.
//! After every interval their whole-machine state hashes must agree; at
//! the first interval where they do not, both go back to the last agreed
//! checkpoint and a bisection finds the first instruction count at which
//! they differ, and what differs there.
//!
//! The JIT translates every block on first sight here
//! ([`Machine::set_jit_threshold`]`(0)`): otherwise whether a block runs
//! natively would depend on how often it ran before, and a difference
//! seen on the way forward could vanish after going back.

use std::fmt;

use crate::checkpoint::CheckpointStore;
use crate::snapshot::SnapshotError;
use crate::state_summary::{Difference, SummaryTracker};
use crate::{Engine, Exit, Machine};

/// Instructions between two comparisons unless the caller chooses.
pub const DEFAULT_CHECK_INTERVAL: u64 = 1_000_000;

/// Comparisons between two checkpoints: the bisection goes back at most
/// this many intervals, and checkpoints (whose thinning merges pages)
/// stay off the common path.
const COMPARISONS_PER_CHECKPOINT: u64 = 64;

/// Most differences a report lists (registers first).
const REPORT_LIMIT: usize = 24;

/// Why a lockstep run stopped.
#[derive(Debug)]
pub enum LockstepError {
    /// The engines disagree.
    Differ {
        /// Last instruction count at which they agreed.
        agreed: u64,
        /// First instruction count at which they differ.
        at: u64,
        /// The vCPU that ran last before `agreed`...
        vcpu: usize,
        /// ...and its RIP at `agreed`: the instruction whose execution the
        /// JIT got wrong, or the start of its block.
        rip: u64,
        /// What differs at `at`, interpreter's value first.
        differences: Vec<String>,
    },
    /// A checkpoint could not be taken or restored.
    Checkpoint(SnapshotError),
}

impl fmt::Display for LockstepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockstepError::Differ {
                agreed,
                at,
                vcpu,
                rip,
                differences,
            } => {
                write!(
                    f,
                    "the engines differ: equal at icount {agreed} (vCPU {vcpu} at rip {rip:#x}), \
                     different at icount {at}"
                )?;
                for d in differences {
                    write!(f, "\n  {d}")?;
                }
                Ok(())
            }
            LockstepError::Checkpoint(e) => write!(f, "lockstep checkpoint failed: {e}"),
        }
    }
}

impl std::error::Error for LockstepError {}

impl From<SnapshotError> for LockstepError {
    fn from(e: SnapshotError) -> Self {
        LockstepError::Checkpoint(e)
    }
}

/// The interpreter twin of a machine run under the JIT, and the
/// checkpoints both go back to when they disagree.
pub struct Lockstep {
    /// The reference: the same machine under the interpreter.
    twin: Machine,
    /// Checkpoints at `saved`: the checked machine's and the twin's.
    stores: [CheckpointStore; 2],
    interval: u64,
    /// Instruction count of the last comparison that agreed.
    agreed: u64,
    /// Instruction count of the checkpoints (at or before `agreed`).
    saved: u64,
    /// The twin's and the checked machine's exits from the last rerun.
    exits: (Exit, Exit),
}

impl Lockstep {
    /// Pairs `m` (switched to the JIT, translating on first sight) with
    /// `twin`, a machine built the same way (switched to the interpreter),
    /// compared every `interval` instructions (at least 1). Both must be
    /// at the same instruction count with the same state.
    pub fn new(
        m: &mut Machine,
        mut twin: Machine,
        interval: u64,
    ) -> Result<Lockstep, LockstepError> {
        m.set_engine(Engine::Jit);
        m.set_jit_threshold(0);
        twin.set_engine(Engine::Interp);
        let mut l = Lockstep {
            twin,
            stores: [CheckpointStore::new(), CheckpointStore::new()],
            interval: interval.max(1),
            agreed: m.icount(),
            saved: m.icount(),
            exits: (Exit::InsnLimit, Exit::InsnLimit),
        };
        if let Some(e) = l.compare(m, None) {
            return Err(e);
        }
        l.checkpoint(m)?;
        Ok(l)
    }

    /// The interpreter twin (for inputs: whatever goes into the checked
    /// machine between runs must go into the twin too).
    pub fn twin_mut(&mut self) -> &mut Machine {
        &mut self.twin
    }

    /// Runs both machines to `icount` (or an earlier exit), comparing them
    /// every interval; returns the exit, or where and how they first
    /// differ (both machines are then left at the first differing count).
    pub fn run_until(&mut self, m: &mut Machine, icount: u64) -> Result<Exit, LockstepError> {
        loop {
            let next = self.agreed.saturating_add(self.interval).min(icount);
            let exit = m.run_until(next);
            let twin_exit = self.twin.run_until(next);
            // The twin's console output duplicates the checked machine's.
            self.twin.take_console_output();
            if let Some(e) = self.compare(m, Some((&twin_exit, &exit))) {
                return Err(self.locate(m, next, e));
            }
            self.agreed = m.icount();
            if self.agreed - self.saved >= self.interval * COMPARISONS_PER_CHECKPOINT {
                self.checkpoint(m)?;
            }
            if exit != Exit::InsnLimit || m.icount() >= icount {
                return Ok(exit);
            }
        }
    }

    /// `None` when both machines stand at the same count with the same
    /// state (and `exits`, the twin's and `m`'s, are equal); else an error
    /// describing the difference at `m`'s count.
    fn compare(&mut self, m: &Machine, exits: Option<(&Exit, &Exit)>) -> Option<LockstepError> {
        if same(&self.twin, m, exits) {
            return None;
        }
        Some(LockstepError::Differ {
            agreed: self.agreed,
            at: m.icount(),
            vcpu: 0,
            rip: 0,
            differences: differences(&self.twin, m, exits),
        })
    }

    /// Checkpoints both machines at the agreed count, keeping only those.
    fn checkpoint(&mut self, m: &mut Machine) -> Result<(), SnapshotError> {
        self.saved = self.agreed;
        for (store, machine) in self.stores.iter_mut().zip([m, &mut self.twin]) {
            store.take(machine)?;
            while store.len() > 1 {
                store.remove(0)?;
            }
        }
        Ok(())
    }

    /// Puts both machines back at their checkpoints and runs them to `t`;
    /// whether they agree there.
    fn agree_at(&mut self, m: &mut Machine, t: u64) -> Result<bool, SnapshotError> {
        self.stores[0].restore(m, 0)?;
        self.stores[1].restore(&mut self.twin, 0)?;
        // Every translation was made on the way here; drop them so the
        // rerun translates as it goes, exactly as the first run did.
        m.set_jit_threshold(0);
        let exit = m.run_until(t);
        let twin_exit = self.twin.run_until(t);
        self.twin.take_console_output();
        self.exits = (twin_exit, exit);
        Ok(same(&self.twin, m, Some((&self.exits.0, &self.exits.1))))
    }

    /// Bisects between the agreed count and `hi` (where they differ) for
    /// the first differing count; `first` is the report at `hi`, returned
    /// if going back fails.
    fn locate(&mut self, m: &mut Machine, hi: u64, first: LockstepError) -> LockstepError {
        let (mut lo, mut hi) = (self.agreed, hi);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match self.agree_at(m, mid) {
                Ok(true) => lo = mid,
                Ok(false) => hi = mid,
                Err(_) => return first,
            }
        }
        // The state at `lo`: where the vCPU that runs next stands.
        if self.agree_at(m, lo).is_err() {
            return first;
        }
        let vcpu = m.last_vcpu();
        let rip = m.cpus().get(vcpu).map_or(0, |c| c.rip);
        match self.agree_at(m, hi) {
            Ok(_) => LockstepError::Differ {
                agreed: lo,
                at: hi,
                vcpu,
                rip,
                differences: differences(&self.twin, m, Some((&self.exits.0, &self.exits.1))),
            },
            Err(_) => first,
        }
    }
}

/// Whether `interp` and `jit` stand at the same count with the same state
/// hash, after the same exits (interp's first) if given.
fn same(interp: &Machine, jit: &Machine, exits: Option<(&Exit, &Exit)>) -> bool {
    exits.is_none_or(|(a, b)| a == b)
        && interp.icount() == jit.icount()
        && interp.state_hash() == jit.state_hash()
}

/// What differs between `interp` and `jit`: how their runs ended,
/// instruction counts, registers and machine parts (by their summaries),
/// then RAM pages.
fn differences(interp: &Machine, jit: &Machine, exits: Option<(&Exit, &Exit)>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((a, b)) = exits.filter(|(a, b)| a != b) {
        out.push(format!("run ended: interp {a}, jit {b}"));
    }
    if interp.icount() != jit.icount() {
        out.push(format!(
            "icount: interp {}, jit {}",
            interp.icount(),
            jit.icount()
        ));
    }
    let a = interp.state_summary(&mut SummaryTracker::new());
    let b = jit.state_summary(&mut SummaryTracker::new());
    for d in a.compare_state(&b) {
        out.push(match d {
            Difference::Register {
                vcpu,
                name,
                recorded,
                replayed,
            } => format!("vCPU {vcpu} {name}: interp {recorded:#x}, jit {replayed:#x}"),
            other => other.to_string(),
        });
    }
    let pages = interp.ram().pages().filter(|&gpa| {
        let x = interp.ram().read_page(gpa);
        let y = jit.ram().read_page(gpa);
        x != y
    });
    for gpa in pages.take(REPORT_LIMIT) {
        out.push(format!("RAM page {gpa:#010x}"));
    }
    out.truncate(REPORT_LIMIT);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::test_guest::busy_guest;

    /// Two busy guests in lockstep agree all the way.
    #[test]
    fn agreeing_machines_run_to_the_end() {
        let mut m = busy_guest(1, 16 << 20);
        let twin = busy_guest(1, 16 << 20);
        let mut l = Lockstep::new(&mut m, twin, 10_000).expect("same start");
        assert_eq!(
            l.run_until(&mut m, 200_000).expect("agree"),
            Exit::InsnLimit
        );
        assert_eq!(m.icount(), 200_000);
        assert_eq!(m.engine(), Engine::Jit);
    }

    /// A difference planted in the checked machine (a breakpoint only it
    /// has, first reached at a known count) is located at exactly that
    /// count.
    #[test]
    fn a_planted_difference_is_located_exactly() {
        // Where the guest is at 54,321, and when it first gets there.
        let mut probe = busy_guest(1, 16 << 20);
        probe.run_until(54_321);
        let addr = probe.cpus()[0].rip;
        let mut probe = busy_guest(1, 16 << 20);
        let mut first = 0;
        while probe.cpus()[0].rip != addr {
            first += 1;
            probe.run_until(first);
        }
        let mut m = busy_guest(1, 16 << 20);
        let twin = busy_guest(1, 16 << 20);
        let mut l = Lockstep::new(&mut m, twin, 10_000).expect("same start");
        let mut set = hindsight_cpu::debug::DebugSet::default();
        set.breakpoints.insert(addr);
        m.set_debug(set);
        let e = l.run_until(&mut m, 200_000).expect_err("must differ");
        let LockstepError::Differ {
            agreed,
            at,
            rip,
            differences,
            ..
        } = &e
        else {
            panic!("{e}");
        };
        // The checked machine stops before the instruction that would
        // take it from `first` to the next count.
        assert_eq!((*agreed, *at), (first, first + 1), "{e}");
        assert_eq!(*rip, addr, "{e}");
        assert_ne!(*rip, 0, "{e}");
        assert!(
            differences.iter().any(|d| d.starts_with("run ended")),
            "{e}"
        );
    }
}
