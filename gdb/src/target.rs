//! The gdbstub [`Target`]: a [`Debuggee`] seen through one register view.
//!
//! - vCPUs are gdb threads: thread id = vCPU index + 1.
//! - Resuming only records how to run ([`Resume`]); the event loop
//!   (`server.rs`) runs the machine and maps its [`StopEvent`] to a stop
//!   reply with `HsTarget::stop_reason`.
//! - The machine runs as a whole: `stepi` on one thread steps the machine
//!   by one instruction count, whichever vCPU executes it, and scheduler
//!   locking is accepted but cannot hold the other vCPUs. Signals gdb asks
//!   to deliver when resuming (`signal`, or resuming after a SIGSEGV stop)
//!   are ignored: a machine has no signals.
//!
//! | [`StopEvent`] | stop reply | gdb says |
//! |---|---|---|
//! | `Breakpoint` | `swbreak` (or `hwbreak` when only a `hbreak` is at the PC) with the thread | Breakpoint N, ... |
//! | `Watch` | `watch`/`rwatch`/`awatch` with the address, clamped into the watched range | Hardware watchpoint N: ... Old/New value |
//! | `Step` | T05 with the thread that ran (gdbstub's `DoneStep` has no thread, and gdb would guess one) | the new frame |
//! | `Interrupted` (Ctrl-C) | SIGINT with the thread | Thread N received signal SIGINT |
//! | `HistoryBegin` / `HistoryEnd` | `replaylog:begin` / `replaylog:end` | No more reverse-execution history. |
//! | `Exited` | `replaylog:end`, the reason first as console output: the guest's end is the end of its history, and reverse execution still works from there; the status is what hindsight exits with when gdb kills it | hindsight: the guest exited ...; No more reverse-execution history. |
//! | `Stopped` | SIGILL for an unimplemented/unsupported instruction, else SIGSEGV (triple fault, deadlock), with the reason as console output | Program received signal SIGSEGV |

use std::collections::BTreeSet;
use std::marker::PhantomData;

use gdbstub::arch::Arch;
use gdbstub::common::{Signal, Tid};
use gdbstub::stub::MultiThreadStopReason;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::reverse_exec::{
    ReplayLogPosition, ReverseCont, ReverseContOps, ReverseStep, ReverseStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{BreakpointsOps, WatchKind as GdbWatchKind};
use gdbstub::target::ext::monitor_cmd::MonitorCmdOps;
use gdbstub::target::ext::thread_extra_info::{ThreadExtraInfo, ThreadExtraInfoOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use hindsight_cpu::debug::{DebugSet, WatchKind, Watchpoint};

use crate::arch::{RegBlock, ViewSpec};
use crate::{memory, regs, Debuggee, Resume, StopEvent};

/// errno values sent in error replies.
pub(crate) mod errno {
    /// Operation not permitted (a write the debuggee refused).
    pub const EPERM: u8 = 1;
    /// No such thread.
    pub const ESRCH: u8 = 3;
    /// Bad address (unmapped memory).
    pub const EFAULT: u8 = 14;
    /// Invalid argument (a register value that cannot be set).
    pub const EINVAL: u8 = 22;
}

/// The [`Arch`]es this target serves: the three views of `arch.rs`.
pub trait GdbArch:
    Arch<Registers = RegBlock<Self>, BreakpointKind = usize, RegId = ()>
    + ViewSpec<Addr = <Self as Arch>::Usize>
{
}

impl<T> GdbArch for T where
    T: Arch<Registers = RegBlock<T>, BreakpointKind = usize, RegId = ()>
        + ViewSpec<Addr = <T as Arch>::Usize>
{
}

/// A debuggee as gdbstub's target, with the session's breakpoints.
pub struct HsTarget<'d, A> {
    /// The machine.
    pub(crate) d: &'d mut dyn Debuggee,
    /// Addresses of `break` breakpoints.
    pub(crate) sw: BTreeSet<u64>,
    /// Addresses of `hbreak` breakpoints.
    pub(crate) hw: BTreeSet<u64>,
    /// Watchpoints, as gdb inserted them (duplicates kept).
    pub(crate) watch: Vec<Watchpoint>,
    /// A step was asked for in the resume actions being collected.
    stepping: bool,
    /// How the next run goes, set by a resume request.
    pub(crate) pending: Option<Resume>,
    /// The vCPU of the last stop (Ctrl-C and history stops report it).
    pub(crate) last_vcpu: usize,
    /// The guest's exit status, once it exited.
    pub(crate) exit_status: Option<i32>,
    /// What the last stop was, for `monitor status`.
    pub(crate) last_stop: String,
    /// A second handle on gdb's connection, to notice (without reading)
    /// that gdb sent something while a long monitor command runs.
    pub(crate) peer: Option<std::net::TcpStream>,
    _arch: PhantomData<fn() -> A>,
}

impl<'d, A: GdbArch> HsTarget<'d, A> {
    /// A target over `d` with no breakpoints.
    pub fn new(d: &'d mut dyn Debuggee) -> Self {
        HsTarget {
            d,
            sw: BTreeSet::new(),
            hw: BTreeSet::new(),
            watch: Vec::new(),
            stepping: false,
            pending: None,
            last_vcpu: 0,
            exit_status: None,
            last_stop: "none yet".into(),
            peer: None,
            _arch: PhantomData,
        }
    }

    /// The vCPU index of gdb thread `tid`.
    pub(crate) fn vcpu_of(&self, tid: Tid) -> Option<usize> {
        let v = tid.get() - 1;
        (v < self.d.vcpu_count()).then_some(v)
    }

    fn vcpu_or_err(&self, tid: Tid) -> TargetResult<usize, Self> {
        self.vcpu_of(tid).ok_or(TargetError::Errno(errno::ESRCH))
    }

    /// Installs the whole breakpoint and watchpoint set.
    pub(crate) fn sync_debug(&mut self) {
        let set = DebugSet {
            breakpoints: self.sw.union(&self.hw).copied().collect(),
            watchpoints: self.watch.clone(),
        };
        self.d.set_debug(set);
    }

    /// The gdb thread of vCPU `vcpu` (vCPU indices beyond the machine's
    /// are reported as thread 1).
    pub(crate) fn tid(&self, vcpu: usize) -> Tid {
        let v = if vcpu < self.d.vcpu_count() { vcpu } else { 0 };
        Tid::new(v + 1).unwrap_or(Tid::MIN)
    }

    /// Maps a stop of the machine to gdb's stop reply, and the text to
    /// show on gdb's console first, if any.
    pub(crate) fn stop_reason(
        &mut self,
        ev: StopEvent,
    ) -> (MultiThreadStopReason<A::Usize>, Option<String>) {
        let icount = self.d.icount();
        match ev {
            StopEvent::Breakpoint { vcpu } => {
                self.last_vcpu = vcpu;
                let tid = self.tid(vcpu);
                let pc = regs::linear_pc(self.d.cpu(self.tid(vcpu).get() - 1));
                self.last_stop = format!("vCPU {vcpu} at breakpoint {pc:#x}, icount {icount}");
                if self.hw.contains(&pc) && !self.sw.contains(&pc) {
                    (MultiThreadStopReason::HwBreak(tid), None)
                } else {
                    (MultiThreadStopReason::SwBreak(tid), None)
                }
            }
            StopEvent::Watch { vcpu, watch, addr } => {
                self.last_vcpu = vcpu;
                // gdb matches the address against its watchpoints' ranges.
                let last = watch.addr.saturating_add(watch.len.max(1) - 1);
                let addr = addr.clamp(watch.addr, last);
                self.last_stop = format!(
                    "vCPU {vcpu} hit a {:?} watchpoint at {addr:#x}, icount {icount}",
                    watch.kind
                );
                let kind = match watch.kind {
                    WatchKind::Write => GdbWatchKind::Write,
                    WatchKind::Read => GdbWatchKind::Read,
                    WatchKind::Access => GdbWatchKind::ReadWrite,
                };
                let reason = MultiThreadStopReason::Watch {
                    tid: self.tid(vcpu),
                    kind,
                    addr: A::addr_from_u64(addr),
                };
                (reason, None)
            }
            StopEvent::Step { vcpu } => {
                self.last_vcpu = vcpu;
                self.last_stop = format!("vCPU {vcpu} stepped, icount {icount}");
                let reason = MultiThreadStopReason::SignalWithThread {
                    tid: self.tid(vcpu),
                    signal: Signal::SIGTRAP,
                };
                (reason, None)
            }
            StopEvent::Interrupted { vcpu } => {
                self.last_vcpu = vcpu;
                self.last_stop = format!("interrupted at icount {icount}");
                (self.interrupt_reason(), None)
            }
            StopEvent::HistoryBegin | StopEvent::HistoryEnd => {
                let begin = ev == StopEvent::HistoryBegin;
                self.last_stop = format!(
                    "reached the {} of history, icount {icount}",
                    if begin { "beginning" } else { "end" }
                );
                let reason = MultiThreadStopReason::ReplayLog {
                    tid: Some(self.tid(self.last_vcpu)),
                    pos: if begin {
                        ReplayLogPosition::Begin
                    } else {
                        ReplayLogPosition::End
                    },
                };
                (reason, None)
            }
            StopEvent::Exited { status, reason } => {
                self.exit_status = Some(status);
                self.last_stop = format!("the guest exited with status {status}: {reason}");
                let msg = format!(
                    "hindsight: the guest exited with status {status} at icount {icount}: \
                     {reason}. History ends here: reverse execution still works; `kill` \
                     ends hindsight with this status.\n"
                );
                let reason = MultiThreadStopReason::ReplayLog {
                    tid: Some(self.tid(self.last_vcpu)),
                    pos: ReplayLogPosition::End,
                };
                (reason, Some(msg))
            }
            StopEvent::Stopped { vcpu, reason } => {
                self.last_vcpu = vcpu;
                self.last_stop = format!("the machine stopped: {reason}");
                let lower = reason.to_ascii_lowercase();
                let signal = if lower.contains("unimplemented") || lower.contains("unsupported") {
                    Signal::SIGILL
                } else {
                    Signal::SIGSEGV
                };
                let msg = format!(
                    "hindsight: the machine stopped at icount {icount} (vCPU {vcpu}): {reason}\n\
                     It can still be inspected and run backward.\n"
                );
                let reason = MultiThreadStopReason::SignalWithThread {
                    tid: self.tid(vcpu),
                    signal,
                };
                (reason, Some(msg))
            }
        }
    }

    /// The stop reply for a Ctrl-C.
    pub(crate) fn interrupt_reason(&self) -> MultiThreadStopReason<A::Usize> {
        MultiThreadStopReason::SignalWithThread {
            tid: self.tid(self.last_vcpu),
            signal: Signal::SIGINT,
        }
    }
}

impl<A: GdbArch> Target for HsTarget<'_, A> {
    type Arch = A;
    type Error = String;

    fn base_ops(&mut self) -> BaseOps<'_, A, String> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }
}

impl<A: GdbArch> MultiThreadBase for HsTarget<'_, A> {
    fn read_registers(&mut self, block: &mut RegBlock<A>, tid: Tid) -> TargetResult<(), Self> {
        let v = self.vcpu_or_err(tid)?;
        regs::fill(self.d.cpu(v), block);
        Ok(())
    }

    fn write_registers(&mut self, block: &RegBlock<A>, tid: Tid) -> TargetResult<(), Self> {
        let v = self.vcpu_or_err(tid)?;
        let edits = regs::plan(self.d.cpu(v), block).map_err(|why| {
            eprintln!("hindsight gdb: register write refused: {why}");
            TargetError::Errno(errno::EINVAL)
        })?;
        if edits.is_empty() {
            return Ok(());
        }
        self.d
            .edit_cpu(v, &mut |cpu| regs::apply(cpu, &edits))
            .map_err(|why| {
                eprintln!("hindsight gdb: register write refused: {why}");
                TargetError::Errno(errno::EPERM)
            })
    }

    fn read_addrs(
        &mut self,
        start: A::Usize,
        data: &mut [u8],
        tid: Tid,
    ) -> TargetResult<usize, Self> {
        let v = self.vcpu_or_err(tid)?;
        memory::read_linear(self.d, v, A::addr_to_u64(start), data)
            .map_err(|_| TargetError::Errno(errno::EFAULT))
    }

    fn write_addrs(&mut self, start: A::Usize, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        let v = self.vcpu_or_err(tid)?;
        memory::write_linear(self.d, v, A::addr_to_u64(start), data).map_err(|e| {
            if let memory::MemError::Refused(_) = e {
                eprintln!("hindsight gdb: {e}");
                TargetError::Errno(errno::EPERM)
            } else {
                TargetError::Errno(errno::EFAULT)
            }
        })
    }

    fn list_active_threads(&mut self, thread_is_active: &mut dyn FnMut(Tid)) -> Result<(), String> {
        for v in 0..self.d.vcpu_count() {
            thread_is_active(self.tid(v));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }

    fn support_thread_extra_info(&mut self) -> Option<ThreadExtraInfoOps<'_, Self>> {
        Some(self)
    }
}

impl<A: GdbArch> MultiThreadResume for HsTarget<'_, A> {
    fn resume(&mut self) -> Result<(), String> {
        self.pending = Some(if self.stepping {
            Resume::Step
        } else {
            Resume::Continue
        });
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), String> {
        self.stepping = false;
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        _tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), String> {
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_reverse_step(&mut self) -> Option<ReverseStepOps<'_, Tid, Self>> {
        Some(self)
    }

    fn support_reverse_cont(&mut self) -> Option<ReverseContOps<'_, Tid, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl<A: GdbArch> MultiThreadSingleStep for HsTarget<'_, A> {
    fn set_resume_action_step(&mut self, _tid: Tid, _signal: Option<Signal>) -> Result<(), String> {
        self.stepping = true;
        Ok(())
    }
}

impl<A: GdbArch> MultiThreadSchedulerLocking for HsTarget<'_, A> {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), String> {
        // The machine runs as a whole; see the module notes.
        Ok(())
    }
}

impl<A: GdbArch> ReverseStep<Tid> for HsTarget<'_, A> {
    fn reverse_step(&mut self, _tid: Tid) -> Result<(), String> {
        self.pending = Some(Resume::ReverseStep);
        Ok(())
    }
}

impl<A: GdbArch> ReverseCont<Tid> for HsTarget<'_, A> {
    fn reverse_cont(&mut self) -> Result<(), String> {
        self.pending = Some(Resume::ReverseContinue);
        Ok(())
    }
}

impl<A: GdbArch> ThreadExtraInfo for HsTarget<'_, A> {
    fn thread_extra_info(&self, tid: Tid, buf: &mut [u8]) -> Result<usize, String> {
        let Some(v) = self.vcpu_of(tid) else {
            return Ok(0);
        };
        let c = self.d.cpu(v);
        let text = format!(
            "vCPU {v}, {}{}",
            c.mode.name(),
            if c.halted { ", halted" } else { "" }
        );
        let n = text.len().min(buf.len());
        buf[..n].copy_from_slice(&text.as_bytes()[..n]);
        Ok(n)
    }
}
