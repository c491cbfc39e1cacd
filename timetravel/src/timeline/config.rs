//! How a timeline places checkpoints: the spacing (fixed, or adapted to
//! the measured speed so that replaying one interval takes about a target
//! time) and the memory budget.

use std::time::Duration;

/// Default memory budget of the checkpoints (`--checkpoint-memory`): 1 GiB.
pub const DEFAULT_CHECKPOINT_MEMORY: usize = 1 << 30;

/// Default replay time of one checkpoint interval: 25 ms, so that a
/// reverse step (restore plus at most one interval of replay) stays well
/// under 50 ms.
pub const DEFAULT_TARGET_REPLAY: Duration = Duration::from_millis(25);

/// Speed assumed before any has been measured: 80 million instructions per
/// second, the interpreter's usual pace.
const ASSUMED_SPEED: f64 = 80e6;

/// Where checkpoints go, in instructions of virtual time between two.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Spacing {
    /// A checkpoint every this many instructions (at least 1).
    Fixed(u64),
    /// As many instructions as replay in `target` at the speed measured
    /// while running, within `min..=max`. Idle time (skipped, not
    /// executed) counts as fast, so an idle guest gets sparse checkpoints.
    Adaptive {
        /// Replay time one interval should take.
        target: Duration,
        /// Fewest instructions between checkpoints.
        min: u64,
        /// Most instructions between checkpoints.
        max: u64,
    },
}

impl Default for Spacing {
    /// Adaptive, 25 ms per interval, between 100 thousand and 20 million
    /// instructions (2 M at 80 MIPS).
    fn default() -> Self {
        Spacing::Adaptive {
            target: DEFAULT_TARGET_REPLAY,
            min: 100_000,
            max: 20_000_000,
        }
    }
}

/// How a [`crate::Timeline`] keeps history.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineConfig {
    /// Checkpoint spacing.
    pub spacing: Spacing,
    /// Bytes the checkpoints may hold (`--checkpoint-memory`); beyond it
    /// checkpoints are thinned, far from the present first. The first
    /// checkpoint (a full one) and the latest are always kept, so a budget
    /// smaller than those two is exceeded.
    pub memory_budget: usize,
    /// Check a replay's state against the trace's state hashes (and its
    /// final hash) the first time the timeline passes each.
    pub verify_hashes: bool,
}

impl Default for TimelineConfig {
    fn default() -> Self {
        TimelineConfig {
            spacing: Spacing::default(),
            memory_budget: DEFAULT_CHECKPOINT_MEMORY,
            verify_hashes: true,
        }
    }
}

/// The measured speed (virtual time per host second), decaying so it
/// follows what the guest does now.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pace {
    icounts: f64,
    secs: f64,
}

impl Pace {
    /// Counts a run of `icounts` instructions that took `elapsed`.
    pub(crate) fn observe(&mut self, icounts: u64, elapsed: Duration) {
        self.icounts += icounts as f64;
        self.secs += elapsed.as_secs_f64();
        if self.secs > 1.0 {
            self.icounts /= 2.0;
            self.secs /= 2.0;
        }
    }

    /// Virtual time per host second, once measured.
    pub(crate) fn speed(&self) -> Option<f64> {
        (self.secs > 0.001).then(|| self.icounts / self.secs)
    }

    /// Instructions between checkpoints under `spacing` (at least 1).
    pub(crate) fn interval(&self, spacing: &Spacing) -> u64 {
        match *spacing {
            Spacing::Fixed(k) => k.max(1),
            Spacing::Adaptive { target, min, max } => {
                let speed = self.speed().unwrap_or(ASSUMED_SPEED);
                let k = (speed * target.as_secs_f64()) as u64;
                k.clamp(min.max(1), max.max(min).max(1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_spacing_follows_the_speed() {
        let spacing = Spacing::default();
        let mut pace = Pace::default();
        assert_eq!(pace.interval(&spacing), 2_000_000);
        pace.observe(50_000_000, Duration::from_millis(500));
        assert_eq!(pace.interval(&spacing), 2_500_000);
        // Idle stretches are fast: the interval hits the maximum.
        pace.observe(1 << 40, Duration::from_millis(10));
        assert_eq!(pace.interval(&spacing), 20_000_000);
        assert_eq!(Pace::default().interval(&Spacing::Fixed(0)), 1);
    }
}
