//! [`Debuggee`] for a real machine with its history: a
//! [`Machine`] moved along a [`Timeline`].
//!
//! Forward runs go in slices of [`SLICE`] instructions so a Ctrl-C from gdb
//! is seen within milliseconds; at the end of a live history the console
//! input that arrived meanwhile is logged into the timeline (input typed
//! while the machine sits in the past waits until the run gets back to the
//! end of history, so known history is never changed by it). Backward
//! runs are the timeline's reverse search, asked about Ctrl-C between
//! stretches.
//!
//! Writes (registers, memory) in a live session change the machine at the
//! present; before the end of history that starts a new branch: what was
//! known after the present is dropped ([`Timeline::edit`]). A replay's
//! history is fixed: writes are refused with a message saying so.

use std::time::Duration;

use hindsight_cpu::debug::{DebugHit, DebugSet};
use hindsight_cpu::Cpu;
use hindsight_machine::{Exit, Machine};
use hindsight_timetravel::{CheckpointSummary, DebugStop, Resumed, Timeline, TimelineError};

use crate::debuggee::{Debuggee, Resume, StopEvent};

/// Instructions run between two looks at gdb (Ctrl-C) and the console.
pub const SLICE: u64 = 2_000_000;

/// Console input for a live session: returns the bytes typed since the
/// last call (empty if none), and whether more can ever come.
pub type InputSource = Box<dyn FnMut() -> (Vec<u8>, bool)>;

/// Which machine exits end the guest (power-off, debug exit, reset), and
/// the exit status hindsight reports for each.
pub type GuestEnd = fn(&Exit) -> Option<i32>;

/// A machine and its timeline, driven by gdb.
pub struct TimelineDebuggee {
    machine: Machine,
    timeline: Timeline,
    guest_end: GuestEnd,
    input: Option<InputSource>,
    /// Typed but not yet logged (the machine was in the past).
    pending_input: Vec<u8>,
    /// How the machine last stopped for good, if it did.
    last_exit: Option<Exit>,
}

impl TimelineDebuggee {
    /// Drives `machine`, which must be where `timeline` left it. `input`
    /// feeds a live session's console; `guest_end` tells the guest's ends
    /// (reported to gdb as the end of history) from the machine's stops.
    pub fn new(
        machine: Machine,
        timeline: Timeline,
        input: Option<InputSource>,
        guest_end: GuestEnd,
    ) -> Self {
        TimelineDebuggee {
            machine,
            timeline,
            guest_end,
            input,
            pending_input: Vec::new(),
            last_exit: None,
        }
    }

    /// The machine and timeline back (after gdb detached).
    pub fn into_parts(self) -> (Machine, Timeline) {
        (self.machine, self.timeline)
    }

    /// The machine.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// The timeline.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// How the machine last stopped for good (power-off, debug exit,
    /// triple fault, deadlock, instruction limit), if it did.
    pub fn last_exit(&self) -> Option<&Exit> {
        self.last_exit.as_ref()
    }

    /// Takes the console input typed since the last look and logs what
    /// can be logged: only at the end of a live history.
    fn take_input(&mut self) -> bool {
        let mut open = false;
        if let Some(source) = &mut self.input {
            let (bytes, more) = source();
            self.pending_input.extend(bytes);
            open = more;
        }
        let at_end = self.machine.icount() == self.timeline.head();
        if at_end && !self.pending_input.is_empty() && !self.timeline.is_replay() {
            let bytes = std::mem::take(&mut self.pending_input);
            if let Err(e) = self.timeline.console_input(&self.machine, &bytes) {
                eprintln!("hindsight: console input dropped: {e}");
            }
        }
        open
    }

    /// Runs forward until a stop; slices, input and Ctrl-C as described
    /// in the module documentation. `step` runs one count only.
    fn forward(&mut self, step: bool, interrupted: &mut dyn FnMut() -> bool) -> StopEvent {
        loop {
            let input_open = self.take_input();
            let now = self.machine.icount();
            let to = now.saturating_add(if step { 1 } else { SLICE });
            match self.timeline.resume(&mut self.machine, to) {
                Ok(Resumed::Hit(stop)) => return hit_event(stop),
                Ok(Resumed::Reached(_)) if step => {
                    return StopEvent::Step {
                        vcpu: self.machine.last_vcpu(),
                    }
                }
                Ok(Resumed::Reached(_)) => {}
                Err(TimelineError::Stopped {
                    exit: Exit::Deadlock { icount },
                    ..
                }) if input_open => {
                    // Every vCPU waits for an interrupt that only typed
                    // input can bring: wait for it (or for Ctrl-C).
                    if let Some(e) = self.wait_for_input(icount, interrupted) {
                        return e;
                    }
                    continue;
                }
                Err(e) => return self.error_event(e),
            }
            if interrupted() {
                return StopEvent::Interrupted {
                    vcpu: self.machine.last_vcpu(),
                };
            }
        }
    }

    /// Sleeps until console input arrives (None) or gdb interrupts.
    fn wait_for_input(
        &mut self,
        icount: u64,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Option<StopEvent> {
        loop {
            if interrupted() {
                return Some(StopEvent::Interrupted {
                    vcpu: self.machine.last_vcpu(),
                });
            }
            let open = self.take_input();
            if self
                .timeline
                .inputs()
                .last()
                .is_some_and(|r| r.icount() >= icount)
            {
                return None;
            }
            if !open {
                return Some(self.error_event(TimelineError::Stopped {
                    icount,
                    exit: Exit::Deadlock { icount },
                }));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A timeline error as gdb's stop.
    fn error_event(&mut self, e: TimelineError) -> StopEvent {
        let vcpu = self.machine.last_vcpu();
        match e {
            TimelineError::EndOfHistory { .. } => StopEvent::HistoryEnd,
            TimelineError::BeginningOfHistory { .. } => StopEvent::HistoryBegin,
            TimelineError::Stopped { icount, exit } => {
                let event = match (self.guest_end)(&exit) {
                    Some(status) => StopEvent::Exited {
                        status,
                        reason: exit.to_string(),
                    },
                    None => StopEvent::Stopped {
                        vcpu,
                        reason: format!("{exit} (icount {icount})"),
                    },
                };
                self.last_exit = Some(exit);
                event
            }
            e => StopEvent::Stopped {
                vcpu,
                reason: e.to_string(),
            },
        }
    }

    /// Why a write is refused, or the message for a branch.
    fn edit<R>(&mut self, f: impl FnOnce(&mut Machine) -> R) -> Result<R, String> {
        let branching = self.machine.icount() < self.timeline.head();
        let r = self
            .timeline
            .edit(&mut self.machine, f)
            .map_err(|e| match e {
                TimelineError::FixedHistory { icount } => format!(
                    "history is fixed in a replay: cannot change the machine at icount {icount}"
                ),
                e => e.to_string(),
            })?;
        if branching {
            eprintln!(
                "hindsight: changed the machine at icount {}: the history after it is dropped \
                 (a new branch starts here)",
                self.machine.icount()
            );
        }
        Ok(r)
    }
}

/// A debugger stop as gdb's stop event.
fn hit_event(stop: DebugStop) -> StopEvent {
    match stop.hit {
        DebugHit::Breakpoint { .. } => StopEvent::Breakpoint { vcpu: stop.vcpu },
        DebugHit::Watch { watch, addr, .. } => StopEvent::Watch {
            vcpu: stop.vcpu,
            watch,
            addr,
        },
    }
}

impl Debuggee for TimelineDebuggee {
    fn vcpu_count(&self) -> usize {
        self.machine.cpus().len()
    }

    fn cpu(&self, vcpu: usize) -> &Cpu {
        let cpus = self.machine.cpus();
        &cpus[vcpu.min(cpus.len() - 1)]
    }

    fn edit_cpu(&mut self, vcpu: usize, f: &mut dyn FnMut(&mut Cpu)) -> Result<(), String> {
        match self.edit(|m| m.edit_cpu(vcpu, f))? {
            true => Ok(()),
            false => Err(format!("no vCPU {vcpu}")),
        }
    }

    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.machine.read_phys(gpa, buf).is_ok()
    }

    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> Result<(), String> {
        let mut probe = vec![0; data.len()];
        if self.machine.read_phys(gpa, &mut probe).is_err() {
            return Err(format!(
                "{gpa:#x}..{:#x} is not RAM",
                gpa + data.len() as u64
            ));
        }
        self.edit(|m| m.write_phys(gpa, data))?
            .map_err(|e| e.to_string())
    }

    fn icount(&self) -> u64 {
        self.machine.icount()
    }

    fn set_debug(&mut self, set: DebugSet) {
        self.machine.set_debug(set);
    }

    fn resume(&mut self, how: Resume, interrupted: &mut dyn FnMut() -> bool) -> StopEvent {
        match how {
            Resume::Continue => self.forward(false, interrupted),
            Resume::Step => self.forward(true, interrupted),
            Resume::ReverseStep => match self.timeline.step_back(&mut self.machine) {
                Ok(_) => StopEvent::Step {
                    vcpu: self.machine.last_vcpu(),
                },
                Err(e) => self.error_event(e),
            },
            Resume::ReverseContinue => {
                match self.timeline.reverse_resume(&mut self.machine, interrupted) {
                    Ok(Some(stop)) => hit_event(stop),
                    Ok(None) => StopEvent::Interrupted {
                        vcpu: self.machine.last_vcpu(),
                    },
                    Err(e) => self.error_event(e),
                }
            }
        }
    }

    /// Seeks to `icount`: within executed history at once (one restore and
    /// at most an interval of replay); beyond it, running on from the
    /// furthest count executed a slice at a time, reporting progress.
    fn seek(&mut self, icount: u64, progress: &mut dyn FnMut(u64) -> bool) -> Result<u64, String> {
        let (m, tl) = (&mut self.machine, &mut self.timeline);
        let at =
            |e: TimelineError, m: &Machine| format!("{e}; the machine is at icount {}", m.icount());
        let head = tl.head();
        if icount <= head {
            return tl.seek(m, icount).map_err(|e| at(e, m));
        }
        if m.icount() != head {
            tl.seek(m, head).map_err(|e| at(e, m))?;
        }
        let target = icount.min(tl.limit());
        while m.icount() < target {
            let to = target.min(m.icount().saturating_add(SLICE));
            tl.advance(m, to).map_err(|e| at(e, m))?;
            if !progress(m.icount()) {
                return Err(format!("seek interrupted at icount {}", m.icount()));
            }
        }
        if icount > target {
            let e = TimelineError::EndOfHistory { end: target };
            return Err(at(e, m));
        }
        Ok(icount)
    }

    fn checkpoints(&self) -> Vec<String> {
        let tl = &self.timeline;
        let list = tl.checkpoints();
        let mut lines = vec![format!(
            "{} checkpoints, {:.1} MiB of a {:.1} MiB budget; history {}..={}; interval {} \
             instructions",
            list.len(),
            tl.checkpoint_bytes() as f64 / (1 << 20) as f64,
            tl.config().memory_budget as f64 / (1 << 20) as f64,
            tl.origin(),
            tl.end(),
            tl.interval()
        )];
        let line = |c: &CheckpointSummary| {
            format!(
                "  icount {:>14}  {:>7} pages  {:>10} bytes{}",
                c.icount,
                c.pages,
                c.bytes,
                if c.edit { "  (edit)" } else { "" }
            )
        };
        // The oldest few and the latest ones (dense near the present).
        const FIRST: usize = 4;
        const LAST: usize = 16;
        if list.len() <= FIRST + LAST + 1 {
            lines.extend(list.iter().map(line));
        } else {
            lines.extend(list[..FIRST].iter().map(line));
            lines.push(format!("  ... {} more ...", list.len() - FIRST - LAST));
            lines.extend(list[list.len() - LAST..].iter().map(line));
        }
        lines
    }

    fn history(&self) -> (u64, u64) {
        (self.timeline.origin(), self.timeline.end())
    }
}
