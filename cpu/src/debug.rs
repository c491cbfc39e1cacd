//! Debugger breakpoints and watchpoints, kept by hindsight and never
//! written into guest memory.
//!
//! A [`DebugSet`] names linear addresses: breakpoints stop a vCPU before it
//! executes the instruction there; watchpoints stop it right after an
//! instruction whose data access (read, write or either) overlapped the
//! watched bytes. Both cost nothing while the set is empty:
//! - breakpoints: the run loop asks once per block whether one lies inside
//!   it, and only then runs that block an instruction at a time;
//! - watchpoints: a page holding watched bytes is never entered into the
//!   software TLB, so every access to it takes the slow path, which checks
//!   the watched ranges.
//!
//! Installing or changing a set flushes the TLB (see
//! [`Cpu::set_debug`](crate::Cpu::set_debug)). Accesses are compared by
//! linear address, as a debugger names them: a second mapping of the same
//! physical page is not watched.

use std::collections::BTreeSet;
use std::sync::Arc;

/// What a watchpoint stops on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WatchKind {
    /// Stores.
    Write,
    /// Loads.
    Read,
    /// Loads and stores.
    Access,
}

impl WatchKind {
    /// Whether an access that writes (`write`) or reads matches.
    pub fn matches(self, write: bool) -> bool {
        match self {
            WatchKind::Write => write,
            WatchKind::Read => !write,
            WatchKind::Access => true,
        }
    }
}

/// One watched range of linear addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Watchpoint {
    /// First watched linear address.
    pub addr: u64,
    /// Bytes watched (1 or more).
    pub len: u64,
    /// What stops.
    pub kind: WatchKind,
}

impl Watchpoint {
    /// Whether the access `[addr, addr + len)` overlaps this range.
    pub fn overlaps(&self, addr: u64, len: u64) -> bool {
        addr < self.addr.saturating_add(self.len) && self.addr < addr.saturating_add(len)
    }
}

/// Breakpoints and watchpoints of a debugger session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DebugSet {
    /// Linear addresses of instructions to stop before.
    pub breakpoints: BTreeSet<u64>,
    /// Watched data ranges.
    pub watchpoints: Vec<Watchpoint>,
}

impl DebugSet {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.breakpoints.is_empty() && self.watchpoints.is_empty()
    }

    /// Whether a breakpoint lies in `[lo, hi)`.
    pub fn breakpoint_in(&self, lo: u64, hi: u64) -> bool {
        lo < hi && self.breakpoints.range(lo..hi).next().is_some()
    }

    /// Whether a watchpoint covers any byte of the 4 KiB page at `lin`.
    pub fn watches_page(&self, lin: u64) -> bool {
        let page = lin & !0xfff;
        self.watchpoints.iter().any(|w| w.overlaps(page, 0x1000))
    }

    /// The first watchpoint an access of `len` bytes at `addr` triggers.
    pub fn watch_hit(&self, addr: u64, len: u64, write: bool) -> Option<Watchpoint> {
        self.watchpoints
            .iter()
            .find(|w| w.kind.matches(write) && w.overlaps(addr, len))
            .copied()
    }
}

/// Why a vCPU stopped for the debugger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugHit {
    /// About to execute the instruction at this linear address.
    Breakpoint { addr: u64 },
    /// The instruction just executed accessed `addr` (the first byte of the
    /// access that overlapped), which `watch` covers.
    Watch {
        watch: Watchpoint,
        addr: u64,
        write: bool,
    },
}

/// A vCPU's view of the debugger: the set (shared by every vCPU) and what
/// the vCPU hit. Not architectural state: snapshots leave it alone.
#[derive(Clone, Debug)]
pub struct DebugHooks {
    /// The breakpoints and watchpoints, if any.
    pub set: Option<Arc<DebugSet>>,
    /// The hit that ended the last run, until the machine takes it.
    pub hit: Option<DebugHit>,
    /// A breakpoint does not fire at this instruction count: the run
    /// resumes from a stop at it and executes that instruction.
    pub skip_at: u64,
}

impl Default for DebugHooks {
    fn default() -> DebugHooks {
        DebugHooks {
            set: None,
            hit: None,
            skip_at: u64::MAX,
        }
    }
}

impl DebugHooks {
    /// The set, if it holds a breakpoint.
    #[inline(always)]
    pub fn breakpoints(&self) -> Option<&DebugSet> {
        self.set.as_deref().filter(|s| !s.breakpoints.is_empty())
    }

    /// The set, if it holds a watchpoint.
    #[inline(always)]
    pub fn watchpoints(&self) -> Option<&DebugSet> {
        self.set.as_deref().filter(|s| !s.watchpoints.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> DebugSet {
        DebugSet {
            breakpoints: [0x1000, 0x2005].into_iter().collect(),
            watchpoints: vec![Watchpoint {
                addr: 0x3ffe,
                len: 4,
                kind: WatchKind::Write,
            }],
        }
    }

    #[test]
    fn breakpoint_ranges_are_half_open() {
        let s = set();
        assert!(s.breakpoint_in(0x1000, 0x1001));
        assert!(!s.breakpoint_in(0x1001, 0x2005));
        assert!(s.breakpoint_in(0x2000, 0x2006));
        assert!(!s.breakpoint_in(0x2005, 0x2005));
    }

    #[test]
    fn watched_ranges_straddling_pages_watch_both() {
        let s = set();
        assert!(s.watches_page(0x3000));
        assert!(s.watches_page(0x4abc));
        assert!(!s.watches_page(0x5000));
        assert!(!s.watches_page(0x2fff));
    }

    #[test]
    fn watch_hits_need_overlap_and_kind() {
        let s = set();
        assert!(s.watch_hit(0x3ffd, 2, true).is_some());
        assert!(s.watch_hit(0x3ffd, 1, true).is_none());
        assert!(s.watch_hit(0x4001, 8, true).is_some());
        assert!(s.watch_hit(0x4002, 8, true).is_none());
        assert!(s.watch_hit(0x3ffe, 4, false).is_none());
        assert!(WatchKind::Access.matches(false) && WatchKind::Access.matches(true));
        assert!(WatchKind::Read.matches(false) && !WatchKind::Read.matches(true));
    }
}
