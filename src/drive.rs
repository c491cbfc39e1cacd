//! Running a machine from the command line: run slices, console plumbing,
//! pacing, and turning the machine's exit into a message and exit status.

use std::fs::File;
use std::time::{Duration, Instant};

use hindsight_cpu::flags;
use hindsight_machine::{Exit, Lockstep, Machine, DEFAULT_CHECK_INTERVAL};
use hindsight_timetravel::Recorder;

use crate::console::{self, StdinReader};
use crate::exit_code;

/// Virtual time run between two looks at the host (output flush, input,
/// pacing): 10 ms of guest time.
const SLICE: u64 = 10_000_000;
/// How far guest time may run ahead of host time before pacing sleeps.
const PACE_SLACK: Duration = Duration::from_millis(20);
/// Longest single pacing sleep, so input is still taken promptly.
const PACE_MAX_SLEEP: Duration = Duration::from_millis(50);

/// How to drive a machine.
#[derive(Default)]
pub struct Drive {
    /// Records the run's inputs and state hashes, if recording.
    pub recorder: Option<Recorder<File>>,
    /// Stop once virtual time reaches this count.
    pub max_insns: Option<u64>,
    /// Where console input comes from, if anywhere.
    pub input: Option<StdinReader>,
    /// Keep guest time from running ahead of host time (interactive use):
    /// changes only host timing, never what the guest sees at each count.
    pub pace: bool,
    /// The interpreter twin the run is checked against (`--engine check`).
    pub check: Option<Lockstep>,
}

/// How a driven run ended.
#[derive(Debug)]
pub enum End {
    /// The machine exited.
    Machine(Exit),
    /// The user quit with the console escape (Ctrl-A x).
    Quit,
    /// Under `--engine check`, the engines differed (the report).
    Mismatch(String),
}

/// Pairs `m` with an interpreter twin built by `twin` for `--engine
/// check`; on failure reports it and gives the exit status.
pub fn lockstep(
    m: &mut Machine,
    twin: impl FnOnce() -> Result<Machine, String>,
) -> Result<Lockstep, i32> {
    let twin = twin().map_err(|e| {
        eprintln!("hindsight: {e}");
        exit_code::USAGE
    })?;
    let l = Lockstep::new(m, twin, DEFAULT_CHECK_INTERVAL).map_err(|e| {
        eprintln!("hindsight: {e}");
        exit_code::DIVERGED
    })?;
    eprintln!(
        "hindsight: checking the JIT against the interpreter every {DEFAULT_CHECK_INTERVAL} \
         instructions"
    );
    Ok(l)
}

impl Drive {
    /// Runs `m` until it exits for good (a debug exit, a stop, power-off,
    /// the instruction limit, or a deadlock that no console input can
    /// lift) or the user quits.
    pub fn run(&mut self, m: &mut Machine) -> End {
        let start = Instant::now();
        let start_icount = m.icount();
        loop {
            if let Some(input) = &mut self.input {
                let ready = input.take_ready();
                if input.quit_requested() {
                    return End::Quit;
                }
                self.feed(m, ready);
            }
            let mut target = m.icount().saturating_add(SLICE);
            if let Some(max) = self.max_insns {
                target = target.min(max);
            }
            let exit = match &mut self.check {
                Some(l) => match l.run_until(m, target) {
                    Ok(exit) => exit,
                    Err(e) => {
                        console::flush();
                        return End::Mismatch(e.to_string());
                    }
                },
                None => m.run_until(target),
            };
            console::flush();
            if let Some(r) = &mut self.recorder {
                // No checkpoint store runs here: the recorder may start the
                // dirty epochs its summaries use.
                if let Err(e) = r.tick_owning_epochs(m) {
                    eprintln!("hindsight: recording stopped: {e}");
                    self.recorder = None;
                }
            }
            match exit {
                Exit::InsnLimit => {
                    if self.max_insns.is_some_and(|max| m.icount() >= max) {
                        return End::Machine(exit);
                    }
                    if self.pace {
                        pace(start, m.icount() - start_icount);
                    }
                }
                // A guest waiting in `sti; hlt` for a key: wait for one.
                Exit::Deadlock { .. } if self.may_get_input(m) => {
                    let input = self.input.as_mut().expect("checked by may_get_input");
                    match input.wait() {
                        Some(ready) => self.feed(m, ready),
                        None if input.quit_requested() => return End::Quit,
                        None => return End::Machine(exit),
                    }
                }
                _ => return End::Machine(exit),
            }
        }
    }

    /// Queues console input into the machine, through the recorder when
    /// recording (which logs it at the current instruction count).
    fn feed(&mut self, m: &mut Machine, ready: Vec<Vec<u8>>) {
        for bytes in ready {
            match &mut self.recorder {
                Some(r) => {
                    if let Err(e) = r.console_input(m, &bytes) {
                        eprintln!("hindsight: recording stopped: {e}");
                        self.recorder = None;
                        m.console_input(&bytes);
                    }
                }
                None => m.console_input(&bytes),
            }
            if let Some(l) = &mut self.check {
                l.twin_mut().console_input(&bytes);
            }
        }
    }

    /// Ends a recording with the machine's final state and the run's exit
    /// status; reports on stderr where the trace went.
    pub fn finish_recording(&mut self, m: &Machine, status: i32, reason: &str) {
        if let Some(r) = self.recorder.take() {
            let hashes = r.hashes();
            match r.finish(m, status, reason) {
                Ok(_) => eprintln!(
                    "hindsight: recorded {} instructions, {hashes} state hashes",
                    m.icount()
                ),
                Err(e) => eprintln!("hindsight: could not end the recording: {e}"),
            }
        }
    }

    fn may_get_input(&self, m: &Machine) -> bool {
        let if_set = m.cpus()[0].rflags & flags::IF != 0;
        if_set && self.input.as_ref().is_some_and(|i| i.is_open())
    }
}

/// Sleeps while guest time is ahead of host time.
fn pace(start: Instant, guest_ns: u64) {
    let guest = Duration::from_nanos(guest_ns);
    let host = start.elapsed();
    if guest > host + PACE_SLACK {
        std::thread::sleep((guest - host).min(PACE_MAX_SLEEP));
    }
}

/// Reports how the run ended on stderr and returns the process exit status.
pub fn report(end: &End, max_insns: Option<u64>) -> i32 {
    report_at(end, max_insns, None)
}

/// Like [`report`], naming where vCPU 0 was when the run stopped.
pub fn report_machine(end: &End, max_insns: Option<u64>, m: &Machine) -> i32 {
    let cpu = &m.cpus()[0];
    let at = format!(
        "vCPU 0 at {:04x}:{:x} in {} (icount {})",
        cpu.seg[hindsight_cpu::SegReg::Cs as usize].selector,
        cpu.rip,
        cpu.mode.name(),
        m.icount()
    );
    report_at(end, max_insns, Some(&at))
}

fn report_at(end: &End, max_insns: Option<u64>, at: Option<&str>) -> i32 {
    let at = at.map(|a| format!("; {a}")).unwrap_or_default();
    let exit = match end {
        End::Quit => {
            eprintln!("hindsight: quit (Ctrl-A x)");
            return exit_code::OK;
        }
        End::Machine(exit) => exit,
        End::Mismatch(report) => {
            eprintln!("hindsight: {report}");
            return exit_code::DIVERGED;
        }
    };
    match exit {
        Exit::PowerOff | Exit::Reset | Exit::DebugExit(_) => {
            if *exit == Exit::Reset {
                eprintln!("hindsight: {exit}");
            }
            guest_end_status(exit).unwrap_or(exit_code::OK)
        }
        Exit::Stopped(stop) => {
            eprintln!("hindsight: {stop}");
            exit_code::STOPPED
        }
        // Only a debugger session installs breakpoints; it handles these.
        Exit::Debug { .. } => {
            eprintln!("hindsight: {exit}{at}");
            exit_code::STOPPED
        }
        Exit::Deadlock { icount } => {
            eprintln!(
                "hindsight: deadlock at icount {icount}: every vCPU is halted and no interrupt \
                 can wake one (interrupts disabled, or every source masked){at}"
            );
            exit_code::DEADLOCK
        }
        Exit::InsnLimit => {
            match max_insns {
                Some(n) => eprintln!("hindsight: instruction limit {n} reached{at}"),
                None => eprintln!("hindsight: instruction limit reached{at}"),
            }
            exit_code::INSN_LIMIT
        }
    }
}

/// The exit status of the guest's own ends (power-off, a debug exit, a
/// reset request); `None` for the machine's stops.
pub fn guest_end_status(exit: &Exit) -> Option<i32> {
    match exit {
        Exit::PowerOff => Some(exit_code::OK),
        Exit::Reset => Some(exit_code::RESET),
        Exit::DebugExit(status) => Some(*status),
        _ => None,
    }
}

/// Millions of instructions per second.
pub fn mips(insns: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        insns as f64 / secs / 1e6
    } else {
        0.0
    }
}
