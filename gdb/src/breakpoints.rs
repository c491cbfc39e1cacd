//! Breakpoints and watchpoints: kept in the [`DebugSet`] the machine checks,
//! never written into guest memory. Every change installs the whole set
//! with [`Debuggee::set_debug`](crate::Debuggee::set_debug).
//!
//! - `break` (Z0) and `hbreak` (Z1) are both linear addresses in the set;
//!   they differ only in how a hit is reported (`swbreak`/`hwbreak`).
//!   There is no limit on how many.
//! - `watch`/`rwatch`/`awatch` (Z2/Z3/Z4) watch `len` bytes at a linear
//!   address; any length of 1 byte or more is taken (x86 hardware stops at
//!   8), so gdb never has to split a watched object.
//!
//! [`DebugSet`]: hindsight_cpu::debug::DebugSet

use gdbstub::target::ext::breakpoints::{
    Breakpoints, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint,
    SwBreakpointOps, WatchKind as GdbWatchKind,
};
use gdbstub::target::TargetResult;
use hindsight_cpu::debug::{WatchKind, Watchpoint};

use crate::target::{GdbArch, HsTarget};

impl<A: GdbArch> Breakpoints for HsTarget<'_, A> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl<A: GdbArch> SwBreakpoint for HsTarget<'_, A> {
    fn add_sw_breakpoint(&mut self, addr: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        self.sw.insert(A::addr_to_u64(addr));
        self.sync_debug();
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        let was = self.sw.remove(&A::addr_to_u64(addr));
        self.sync_debug();
        Ok(was)
    }
}

impl<A: GdbArch> HwBreakpoint for HsTarget<'_, A> {
    fn add_hw_breakpoint(&mut self, addr: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        self.hw.insert(A::addr_to_u64(addr));
        self.sync_debug();
        Ok(true)
    }

    fn remove_hw_breakpoint(&mut self, addr: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        let was = self.hw.remove(&A::addr_to_u64(addr));
        self.sync_debug();
        Ok(was)
    }
}

/// The hindsight watchpoint for gdb's (addr, len, kind), or None for len 0.
pub(crate) fn watchpoint(addr: u64, len: u64, kind: GdbWatchKind) -> Option<Watchpoint> {
    let kind = match kind {
        GdbWatchKind::Write => WatchKind::Write,
        GdbWatchKind::Read => WatchKind::Read,
        GdbWatchKind::ReadWrite => WatchKind::Access,
    };
    (len > 0).then_some(Watchpoint { addr, len, kind })
}

impl<A: GdbArch> HwWatchpoint for HsTarget<'_, A> {
    fn add_hw_watchpoint(
        &mut self,
        addr: A::Usize,
        len: A::Usize,
        kind: GdbWatchKind,
    ) -> TargetResult<bool, Self> {
        let Some(w) = watchpoint(A::addr_to_u64(addr), A::addr_to_u64(len), kind) else {
            return Ok(false);
        };
        self.watch.push(w);
        self.sync_debug();
        Ok(true)
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: A::Usize,
        len: A::Usize,
        kind: GdbWatchKind,
    ) -> TargetResult<bool, Self> {
        let Some(w) = watchpoint(A::addr_to_u64(addr), A::addr_to_u64(len), kind) else {
            return Ok(false);
        };
        let Some(i) = self.watch.iter().position(|x| *x == w) else {
            return Ok(false);
        };
        self.watch.remove(i);
        self.sync_debug();
        Ok(true)
    }
}
