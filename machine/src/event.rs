//! The event queue on virtual time.
//!
//! Time advances only as instructions retire (one instruction = 1 ns). The
//! machine runs a vCPU up to the earliest of: the next timer deadline (the
//! instant a timed device's interrupt output next changes), the requested
//! stop count, and the end of the vCPU's scheduling quantum. So every event
//! lands on an exact instruction boundary, the same one on every run, and a
//! halted machine skips straight to the next deadline.
//!
//! Deadlines are closed-form functions of the device state, so they are
//! cached and recomputed only when the device was accessed (its epoch
//! changed) or the cached instant has been reached.

use crate::devices::PcDevices;

/// Cached next deadline of the timed devices (the PIT for now).
#[derive(Clone, Debug, Default)]
pub(crate) struct EventQueue {
    /// The PIT's next output change, as computed at `epoch`.
    pit: Option<u64>,
    /// `PcDevices::timer_epoch` when `pit` was computed; `None` = never.
    epoch: Option<u64>,
}

impl EventQueue {
    /// Earliest virtual time after `now` at which a timed device's output
    /// changes, or `None` if none will without a guest access; and whether
    /// that changed since the last call (a deadline was reached or the
    /// device was accessed), i.e. whether its output must be sampled again.
    #[inline]
    pub(crate) fn next_deadline(&mut self, now: u64, devices: &PcDevices) -> (Option<u64>, bool) {
        let stale = self.epoch != Some(devices.timer_epoch) || self.pit.is_some_and(|d| d <= now);
        if stale {
            self.pit = devices.pit.next_deadline(now);
            self.epoch = Some(devices.timer_epoch);
        }
        (self.pit, stale)
    }

    /// Forgets the cache (after device state was replaced wholesale).
    pub(crate) fn invalidate(&mut self) {
        self.epoch = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::Console;

    #[test]
    fn cache_follows_accesses_and_time() {
        let mut d = PcDevices::default();
        let mut q = EventQueue::default();
        // Power-on: channel 0 in mode 3 with count 65536 toggles every 32768 ticks.
        let (first, changed) = q.next_deadline(0, &d);
        let first = first.unwrap();
        assert!(changed);
        assert_eq!(Some(first), d.pit.next_deadline(0));
        assert_eq!(q.next_deadline(first - 1, &d), (Some(first), false));
        let (second, changed) = q.next_deadline(first, &d);
        assert!(changed && second.unwrap() > first);
        // Reprogramming moves the deadline.
        let mut c = Console::Buffer(Vec::new());
        d.io_write(0x43, 1, 0x34, 10, &mut c);
        d.io_write(0x40, 1, 100, 10, &mut c);
        d.io_write(0x40, 1, 0, 10, &mut c);
        let reprogrammed = q.next_deadline(10, &d).0.unwrap();
        assert_eq!(Some(reprogrammed), d.pit.next_deadline(10));
        assert!(reprogrammed < first);
        // Mode 0 fires once, then there is no deadline.
        d.io_write(0x43, 1, 0x30, 20, &mut c);
        d.io_write(0x40, 1, 10, 20, &mut c);
        d.io_write(0x40, 1, 0, 20, &mut c);
        let once = q.next_deadline(20, &d).0.unwrap();
        assert_eq!(q.next_deadline(once, &d), (None, true));
        assert_eq!(q.next_deadline(once + 1, &d), (None, false));
        q.invalidate();
        assert_eq!(q.next_deadline(once + 1, &d), (None, true));
    }
}
