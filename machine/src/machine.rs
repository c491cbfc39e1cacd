//! The machine: guest RAM, the PC devices and the vCPUs, and the run loop
//! that drives them on virtual time.
//!
//! # The run loop
//! Each iteration, between run slices:
//! 1. report a sticky stop or a debug-exit request;
//! 2. move queued console input into the UART (external input enters only
//!    here, at an instruction count the loop chose);
//! 3. sample the device interrupt outputs into the PIC; if the PIC raises
//!    INTR and vCPU 0 can take it (IF set, no STI/MOV SS shadow), acknowledge
//!    and deliver it (one unit of virtual time);
//! 4. pick a vCPU and run it up to the earliest of the next timer deadline,
//!    the stop count and its quantum (one instruction when an interrupt is
//!    held back only by the shadow). When every vCPU is halted, skip virtual
//!    time to the next deadline, or report a deadlock if nothing can ever
//!    wake vCPU 0.
//!
//! Virtual time ([`Machine::icount`]) advances by every instruction any vCPU
//! retires, every delivered event, and idle skips. Every vCPU's `icount`
//! follows it: what one vCPU runs advances the others' counts too, as does
//! an idle skip, so all vCPUs agree on the time (their TSCs are in sync) and
//! with one vCPU its count is the machine's.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use hindsight_cpu::debug::{DebugHit, DebugSet};
use hindsight_cpu::paging_log::PagingRegime;
use hindsight_cpu::state::{attr, cr, reg, SegReg, Segment, TableReg};
use hindsight_cpu::{flags, CodeCache, Cpu, Ctx, RunExit, Stop};
use hindsight_firmware::{EntryMode, EntryState, LinuxEntry, LoadError, Module};

use crate::apic::CpuSignal;
use crate::bus::VcpuBus;
use crate::devices::{Console, ConsoleSink, DeviceConfig, PcDevices};
use crate::engine::Engine;
use crate::event::EventQueue;
use crate::layout::PAGE_SIZE;
use crate::memory::{GuestRam, MemoryError};
use crate::sched::Scheduler;
use crate::state_hash::PageDigests;

/// Selector conventionally given to the flat 32-bit code segment at entry.
pub const ENTRY_CODE_SELECTOR: u16 = 0x08;
/// Selector conventionally given to the flat data segments at entry.
pub const ENTRY_DATA_SELECTOR: u16 = 0x10;
/// IA32_MTRR_DEF_TYPE as firmware leaves it for Linux: MTRRs enabled (bit
/// 11), default type write-back (6), fixed ranges off.
const MTRR_ENABLED_WRITE_BACK: u64 = (1 << 11) | 6;
/// How long COM1's receive interrupts must have been on before held console
/// input enters (10 ms of virtual time).
pub const INPUT_SETTLE_NS: u64 = 10_000_000;
/// Most vCPUs a machine may have.
pub const MAX_CPUS: u32 = 64;
/// Seed of the vCPU schedule when the configuration does not choose one.
pub const DEFAULT_SEED: u64 = 0x6869_6E64_7369_6768; // "hindsigh"

/// How to build a machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineConfig {
    /// Bytes of guest RAM (default 512 MiB): a multiple of 4 KiB, at least 2 MiB.
    pub memory: u64,
    /// Number of vCPUs (default 1, at most [`MAX_CPUS`]). vCPU 0 boots; the
    /// others wait halted for INIT/SIPI.
    pub cpus: u32,
    /// Stop after this much virtual time (total instructions); `None` = no limit.
    pub max_insns: Option<u64>,
    /// Seed of the deterministic vCPU schedule (quantum lengths).
    pub seed: u64,
    /// Wall-clock time the RTC shows at boot, Unix seconds: an input of the
    /// run (default [`DEFAULT_RTC_UNIX_SECS`], so runs are reproducible
    /// unless the caller passes the host's time).
    pub rtc_unix_secs: i64,
    /// Hold console input until the guest enables COM1's receive
    /// interrupts (default false: input enters as soon as the FIFO has
    /// room). An OS driver clears the receive FIFO when it opens the port,
    /// so input queued before then (typed or piped ahead of a Linux shell)
    /// would be lost; a guest that polls the UART needs it false.
    pub hold_input_until_rx_interrupts: bool,
    /// The execution engine (default: the JIT, or the one the
    /// `HINDSIGHT_ENGINE` environment variable names, see
    /// [`Engine::from_env`]). Host-side: not part of the machine's state
    /// nor of a trace.
    pub engine: Engine,
}

/// The RTC's time at boot unless configured: 2026-01-01 00:00:00 UTC.
pub const DEFAULT_RTC_UNIX_SECS: i64 = 1_767_225_600;

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            memory: 512 << 20,
            cpus: 1,
            max_insns: None,
            seed: DEFAULT_SEED,
            rtc_unix_secs: DEFAULT_RTC_UNIX_SECS,
            hold_input_until_rx_interrupts: false,
            engine: Engine::from_env(),
        }
    }
}

/// Why [`Machine::run`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The guest wrote v to the debug-exit port 0xf4: status `(v << 1) | 1`.
    DebugExit(i32),
    /// The guest stopped the machine: triple fault, unimplemented
    /// instruction (the report says what and where). Sticky: running again
    /// returns the same report.
    Stopped(Stop),
    /// `max_insns` or the requested instruction count was reached.
    InsnLimit,
    /// The guest powered the machine off (ACPI S5).
    PowerOff,
    /// The guest asked for a system reset (i8042 command 0xFE, port 0xCF9).
    /// Resetting is not modelled: the machine stops here.
    Reset,
    /// Every vCPU is halted and nothing can ever wake one: interrupts are
    /// disabled, or no interrupt source can fire (no timer deadline, or its
    /// IRQ masked at the PIC) and none is pending. Console input could still
    /// wake a guest waiting for it with IF set; the caller may queue some
    /// and run again.
    Deadlock {
        /// Virtual time at which the machine stopped making progress.
        icount: u64,
    },
    /// A debugger's breakpoint or watchpoint stopped vCPU `vcpu` (see
    /// [`Machine::set_debug`]): before the breakpoint's instruction, or
    /// right after the instruction that touched watched data. Running on
    /// continues exactly as if the run had not stopped.
    Debug {
        /// The vCPU that hit.
        vcpu: usize,
        /// What it hit.
        hit: DebugHit,
    },
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::DebugExit(s) => write!(f, "debug exit with status {s}"),
            Exit::Stopped(stop) => write!(f, "{stop}"),
            Exit::InsnLimit => write!(f, "instruction limit reached"),
            Exit::PowerOff => write!(f, "the guest powered the machine off"),
            Exit::Reset => write!(
                f,
                "the guest requested a system reset (keyboard controller or port 0xCF9); \
                 hindsight stops instead of rebooting"
            ),
            Exit::Deadlock { icount } => write!(
                f,
                "deadlock at icount {icount}: every vCPU is halted and no interrupt can wake one"
            ),
            Exit::Debug {
                vcpu,
                hit: DebugHit::Breakpoint { addr },
            } => write!(f, "vCPU {vcpu} reached a breakpoint at {addr:#x}"),
            Exit::Debug {
                vcpu,
                hit: DebugHit::Watch { addr, write, .. },
            } => {
                let what = if *write { "wrote" } else { "read" };
                write!(f, "vCPU {vcpu} {what} watched data at {addr:#x}")
            }
        }
    }
}

/// Why a machine could not be built.
#[derive(Debug)]
pub enum MachineError {
    /// Guest RAM could not be created.
    Memory(MemoryError),
    /// The vCPU count is 0 or above [`MAX_CPUS`].
    BadCpuCount(u32),
}

impl fmt::Display for MachineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MachineError::Memory(e) => e.fmt(f),
            MachineError::BadCpuCount(n) => {
                write!(f, "{n} vCPUs requested: a machine has 1 to {MAX_CPUS}")
            }
        }
    }
}

impl std::error::Error for MachineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MachineError::Memory(e) => Some(e),
            MachineError::BadCpuCount(_) => None,
        }
    }
}

impl From<MemoryError> for MachineError {
    fn from(e: MemoryError) -> Self {
        MachineError::Memory(e)
    }
}

/// A whole PC: RAM, devices, vCPUs, and the virtual clock.
pub struct Machine {
    ram: GuestRam,
    devices: PcDevices,
    vcpus: Vec<Cpu>,
    /// Decoded blocks, shared by all vCPUs.
    code: CodeCache,
    console: Console,
    /// Console bytes not yet taken by the UART.
    input: VecDeque<u8>,
    events: EventQueue,
    sched: Scheduler,
    /// Virtual time.
    now: u64,
    max_insns: Option<u64>,
    /// The report of a stop, returned again by later runs.
    stopped: Option<Stop>,
    /// vCPUs in wait-for-SIPI state (after INIT; the APs at power-on).
    waiting_sipi: Vec<bool>,
    /// Virtual time skipped with every vCPU halted.
    idle: u64,
    /// See [`MachineConfig::hold_input_until_rx_interrupts`].
    hold_input: bool,
    /// Since when COM1's receive interrupts have been on (held input only).
    rx_on_since: Option<u64>,
    /// Cached page digests of the state hash (host-side).
    digests: RefCell<PageDigests>,
    /// A debugger's breakpoints and watchpoints (host-side, not state).
    debug: Option<Arc<DebugSet>>,
    /// The vCPU that ran last (host-side: which one a debugger's step moved).
    last_vcpu: usize,
    /// The JIT when it is the engine (host-side; shared by the vCPUs like
    /// `code`, whose blocks its translations are attached to).
    jit: Option<Box<hindsight_jit::Jit>>,
}

impl fmt::Debug for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Machine")
            .field("ram", &self.ram)
            .field("vcpus", &self.vcpus.len())
            .field("icount", &self.now)
            .finish_non_exhaustive()
    }
}

impl Machine {
    /// Builds a powered-on machine: zeroed RAM, devices in their reset
    /// state, vCPU 0 at the reset vector, the others halted.
    pub fn new(cfg: &MachineConfig) -> Result<Machine, MachineError> {
        if cfg.cpus == 0 || cfg.cpus > MAX_CPUS {
            return Err(MachineError::BadCpuCount(cfg.cpus));
        }
        let ram = GuestRam::new(cfg.memory)?;
        let (low_end, high_end) = crate::layout::ram_ranges(cfg.memory);
        let dev_cfg = DeviceConfig {
            cpus: cfg.cpus as usize,
            rtc_unix_secs: cfg.rtc_unix_secs,
            ram_below_4g: low_end,
            ram_above_4g: high_end - crate::layout::HIGH_RAM_START,
        };
        let vcpus = (0..cfg.cpus)
            .map(|i| {
                let mut cpu = Cpu::new(i);
                // APs wait for INIT/SIPI (which the local APIC will send).
                cpu.halted = i > 0;
                cpu
            })
            .collect();
        Ok(Machine {
            ram,
            devices: PcDevices::new(&dev_cfg),
            waiting_sipi: (0..cfg.cpus).map(|i| i > 0).collect(),
            idle: 0,
            hold_input: cfg.hold_input_until_rx_interrupts,
            rx_on_since: None,
            vcpus,
            code: CodeCache::new(),
            console: Console::Buffer(Vec::new()),
            input: VecDeque::new(),
            events: EventQueue::default(),
            sched: Scheduler::new(cfg.seed),
            now: 0,
            max_insns: cfg.max_insns,
            stopped: None,
            digests: RefCell::default(),
            debug: None,
            last_vcpu: 0,
            jit: (cfg.engine == Engine::Jit).then(|| Box::new(hindsight_jit::Jit::new())),
        })
    }

    /// Loads a multiboot v1 kernel and its modules; vCPU 0 starts at its
    /// entry (32-bit flat protected mode, EAX = 0x2BADB002, EBX = info).
    pub fn load_multiboot(
        &mut self,
        image: &[u8],
        cmdline: &str,
        modules: &[Module],
    ) -> Result<(), LoadError> {
        let entry = hindsight_firmware::load_multiboot(&mut self.ram, image, cmdline, modules);
        self.memory_replaced();
        self.enter(&entry?);
        Ok(())
    }

    /// Copies a flat binary to `addr` and starts vCPU 0 in `mode` (real mode
    /// CS:IP or 32-bit flat).
    pub fn load_flat(&mut self, image: &[u8], addr: u64, mode: EntryMode) -> Result<(), LoadError> {
        let entry = hindsight_firmware::load_flat(&mut self.ram, image, addr, mode);
        self.memory_replaced();
        self.enter(&entry?);
        Ok(())
    }

    /// Loads a 64-bit Linux bzImage with its command line and initrd
    /// (Linux boot protocol), writes the MP table and ACPI tables that
    /// describe the CPUs and interrupt controllers, and starts vCPU 0 at
    /// the kernel's 64-bit entry point. With `vmlinux` (the bzImage's
    /// payload, decompressed by the host), the kernel proper is loaded at
    /// its link address and entered directly, skipping the in-guest
    /// decompressor.
    pub fn load_linux(
        &mut self,
        kernel: &[u8],
        vmlinux: Option<&[u8]>,
        cmdline: &str,
        initrd: Option<&[u8]>,
    ) -> Result<(), LoadError> {
        let entry = match vmlinux {
            Some(v) => hindsight_firmware::load_linux_decompressed(
                &mut self.ram,
                kernel,
                v,
                cmdline,
                initrd,
            ),
            None => hindsight_firmware::load_linux(&mut self.ram, kernel, cmdline, initrd),
        }?;
        let cpus = self.vcpus.len();
        hindsight_firmware::write_mptable(&mut self.ram, cpus)?;
        hindsight_firmware::write_acpi_tables(&mut self.ram, cpus)?;
        self.memory_replaced();
        self.enter_linux(&entry);
        Ok(())
    }

    /// Puts vCPU 0 in the state the 64-bit Linux boot protocol asks for
    /// (see [`LinuxEntry`]).
    fn enter_linux(&mut self, e: &LinuxEntry) {
        use hindsight_firmware::linux::{ENTRY_CR0_SET, ENTRY_CR4_SET, ENTRY_EFER_SET};
        let cpu = &mut self.vcpus[0];
        let (index, icount) = (cpu.index, cpu.icount);
        *cpu = Cpu::new(index);
        cpu.icount = icount;
        cpu.cr0 = (cpu.cr0 & !(cr::CR0_CD | cr::CR0_NW)) | ENTRY_CR0_SET;
        cpu.cr4 |= ENTRY_CR4_SET;
        cpu.efer |= ENTRY_EFER_SET;
        cpu.cr3 = e.cr3;
        cpu.gdtr = TableReg {
            base: e.gdt_base,
            limit: e.gdt_limit,
        };
        cpu.idtr = TableReg { base: 0, limit: 0 };
        let data = Segment {
            selector: e.ds,
            base: 0,
            limit: 0xFFFF_FFFF,
            attr: attr::DATA_RW | attr::DB | attr::GRAN,
        };
        for s in SegReg::ALL {
            cpu.seg[s as usize] = data;
        }
        cpu.seg[SegReg::Cs as usize] = Segment {
            selector: e.cs,
            base: 0,
            limit: 0xFFFF_FFFF,
            attr: attr::CODE_RX | attr::LONG | attr::GRAN,
        };
        cpu.gpr[reg::RSI] = e.rsi;
        cpu.gpr[reg::RSP] = e.rsp;
        cpu.rip = e.rip;
        cpu.rflags = flags::FIXED;
        // What a PC BIOS leaves: MTRRs enabled, memory write-back by default.
        cpu.msr.mtrr_def_type = MTRR_ENABLED_WRITE_BACK;
        cpu.update_mode();
        cpu.end_block = false;
        self.stopped = None;
    }

    /// Guest memory was written behind the CPUs' backs: drop decoded code
    /// and cached translations.
    fn memory_replaced(&mut self) {
        self.code.clear();
        for cpu in &mut self.vcpus {
            cpu.tlb.flush_all();
        }
    }

    /// Puts vCPU 0 in the loader's entry state. Virtual time is kept.
    fn enter(&mut self, entry: &EntryState) {
        let cpu = &mut self.vcpus[0];
        let (index, icount) = (cpu.index, cpu.icount);
        *cpu = Cpu::new(index);
        cpu.icount = icount;
        let g = &mut cpu.gpr;
        g[reg::RAX] = u64::from(entry.eax);
        g[reg::RBX] = u64::from(entry.ebx);
        g[reg::RCX] = u64::from(entry.ecx);
        g[reg::RDX] = u64::from(entry.edx);
        g[reg::RSI] = u64::from(entry.esi);
        g[reg::RDI] = u64::from(entry.edi);
        g[reg::RBP] = u64::from(entry.ebp);
        g[reg::RSP] = u64::from(entry.esp);
        cpu.rflags = flags::FIXED;
        match entry.mode {
            EntryMode::Protected32Flat { eip } => {
                let flat = |selector, a| Segment {
                    selector,
                    base: 0,
                    limit: 0xFFFF_FFFF,
                    attr: a | attr::DB | attr::GRAN,
                };
                cpu.cr0 |= cr::CR0_PE;
                for s in SegReg::ALL {
                    cpu.seg[s as usize] = flat(ENTRY_DATA_SELECTOR, attr::DATA_RW);
                }
                cpu.seg[SegReg::Cs as usize] = flat(ENTRY_CODE_SELECTOR, attr::CODE_RX);
                cpu.rip = u64::from(eip);
            }
            EntryMode::Real16 { cs, ip } => {
                for s in SegReg::ALL {
                    cpu.seg[s as usize] = Segment::real(cs, attr::DATA_RW);
                }
                cpu.seg[SegReg::Cs as usize] = Segment::real(cs, attr::CODE_RX);
                cpu.rip = u64::from(ip);
                cpu.gpr[reg::RSP] = u64::from(entry.esp & 0xFFFF);
                cpu.idtr = TableReg {
                    base: 0,
                    limit: 0x3FF,
                };
            }
        }
        cpu.update_mode();
        cpu.end_block = false;
        self.stopped = None;
    }

    /// Where console output (COM1 transmit and the 0xE9 debug console) goes;
    /// default: kept in a buffer. Bytes already buffered go to the sink first.
    pub fn set_console(&mut self, sink: ConsoleSink) {
        let old = std::mem::replace(&mut self.console, Console::Sink(sink));
        if let Console::Buffer(buf) = old {
            self.console.emit(&buf);
        }
    }

    /// Console output captured so far when no sink is set (drains the buffer).
    pub fn take_console_output(&mut self) -> Vec<u8> {
        match &mut self.console {
            Console::Buffer(buf) => std::mem::take(buf),
            Console::Sink(_) => Vec::new(),
        }
    }

    /// Queues bytes for the COM1 receiver (external input). They enter the
    /// UART between run slices, as its FIFO has room.
    pub fn console_input(&mut self, bytes: &[u8]) {
        self.input.extend(bytes);
    }

    /// Console input queued and not yet taken by the UART.
    pub fn pending_console_input(&self) -> usize {
        self.input.len()
    }

    /// Runs until an exit condition (debug exit, stop, max_insns, deadlock).
    pub fn run(&mut self) -> Exit {
        self.run_until(u64::MAX)
    }

    /// Runs until virtual time reaches exactly `icount` (or an earlier exit).
    pub fn run_until(&mut self, icount: u64) -> Exit {
        let stop = self.max_insns.map_or(icount, |m| m.min(icount));
        loop {
            if let Some(s) = &self.stopped {
                return Exit::Stopped(s.clone());
            }
            if let Some(status) = self.devices.debug_exit.exit_status() {
                return Exit::DebugExit(status);
            }
            if self.devices.poweroff_requested() {
                return Exit::PowerOff;
            }
            if self.devices.reset_requested() {
                return Exit::Reset;
            }
            if !self.input.is_empty() {
                self.pump_input();
            }
            let (pit_deadline, timers_moved) = self.events.next_deadline(self.now, &self.devices);
            self.devices.update_irq_lines_at(self.now, timers_moved);
            self.apply_cpu_signals();
            let other_deadline =
                min_opt(self.devices.other_deadline(self.now), self.input_deadline());
            let deadline = min_opt(pit_deadline, other_deadline);
            if self.now < stop {
                if let Err(s) = self.deliver_interrupts(stop) {
                    self.stopped = Some(s.clone());
                    return Exit::Stopped(s);
                }
                // Delivery pushes a frame, which a watchpoint may cover.
                if let Some(exit) = self.take_debug_hit() {
                    return exit;
                }
            }
            if self.now >= stop {
                return Exit::InsnLimit;
            }
            let until = deadline.map_or(stop, |d| d.min(stop));
            match self.sched.pick(&self.vcpus) {
                Some((i, quantum)) => {
                    let quantum = if self.interrupt_held_by_shadow(i) {
                        1
                    } else {
                        quantum
                    };
                    let budget = (until - self.now).min(quantum);
                    if let Err(s) = self.run_slice(i, budget) {
                        self.stopped = Some(s.clone());
                        return Exit::Stopped(s);
                    }
                    if let Some(exit) = self.take_debug_hit() {
                        return exit;
                    }
                }
                None => {
                    let pit_wakes =
                        pit_deadline.filter(|_| self.devices.timer_edge_would_interrupt());
                    if !self.can_wake(min_opt(pit_wakes, other_deadline)) {
                        return Exit::Deadlock { icount: self.now };
                    }
                    // A pending interrupt is held back only by the shadow
                    // (one instruction); otherwise sleep to the deadline.
                    let target = if (0..self.vcpus.len()).any(|i| self.interrupt_pending(i)) {
                        self.now + 1
                    } else {
                        until
                    };
                    let delta = target - self.now;
                    for cpu in &mut self.vcpus {
                        cpu.icount += delta;
                    }
                    self.now = target;
                    self.idle += delta;
                    self.sched.end_turn();
                }
            }
        }
    }

    /// Installs a debugger's breakpoints and watchpoints on every vCPU
    /// (an empty set removes them). Runs then stop with [`Exit::Debug`];
    /// the guest sees no difference (nothing is written into its memory,
    /// and a stop is only a pause).
    pub fn set_debug(&mut self, set: DebugSet) {
        self.debug = (!set.is_empty()).then(|| Arc::new(set));
        for cpu in &mut self.vcpus {
            cpu.set_debug(self.debug.clone());
        }
    }

    /// Switches the execution engine between runs (the guest sees no
    /// difference: both engines agree at every instruction count).
    pub fn set_engine(&mut self, engine: Engine) {
        if engine != self.engine() {
            self.jit = (engine == Engine::Jit).then(|| Box::new(hindsight_jit::Jit::new()));
        }
    }

    /// Makes the JIT (when it is the engine) translate a block once it ran
    /// `runs` times in the interpreter (0: on first sight), dropping its
    /// translations. With 0, whether a block runs natively no longer
    /// depends on how often it ran before, which lockstep checking needs to
    /// reproduce a difference after going back.
    pub fn set_jit_threshold(&mut self, runs: u32) {
        if self.jit.is_some() {
            self.jit = Some(Box::new(hindsight_jit::Jit::with_threshold(runs)));
        }
    }

    /// The execution engine in use.
    pub fn engine(&self) -> Engine {
        if self.jit.is_some() {
            Engine::Jit
        } else {
            Engine::Interp
        }
    }

    /// The JIT's counters, when it is the engine.
    pub fn jit_stats(&self) -> Option<hindsight_jit::JitStats> {
        self.jit.as_ref().map(|j| j.stats())
    }

    /// The breakpoints and watchpoints installed, if any.
    pub fn debug_set(&self) -> Option<&DebugSet> {
        self.debug.as_deref()
    }

    /// Lets the next run execute the instructions at the present count
    /// even where a breakpoint is set (resuming from a breakpoint stop,
    /// as a debugger's continue or step does).
    pub fn resume_over_breakpoints(&mut self) {
        for cpu in &mut self.vcpus {
            cpu.debug.skip_at = self.now;
        }
    }

    /// The vCPU that executed the last instruction or took the last
    /// interrupt (vCPU 0 before any ran).
    pub fn last_vcpu(&self) -> usize {
        self.last_vcpu
    }

    /// Changes vCPU `vcpu`'s registers with `f` (a debugger's register
    /// write), between runs. Afterwards the mode is recomputed from CR0,
    /// EFER, RFLAGS and CS and every cached translation dropped, so any
    /// register may change. False if there is no such vCPU.
    pub fn edit_cpu(&mut self, vcpu: usize, f: impl FnOnce(&mut Cpu)) -> bool {
        let Some(cpu) = self.vcpus.get_mut(vcpu) else {
            return false;
        };
        let icount = cpu.icount;
        f(cpu);
        // Virtual time is the machine's, not a register.
        cpu.icount = icount;
        cpu.update_mode();
        cpu.note_paging_change();
        cpu.tlb.flush_all();
        cpu.end_block = false;
        cpu.exit_request = false;
        self.code.clear();
        true
    }

    /// Keeps (or stops keeping) a log of every vCPU's paging-regime changes
    /// (see [`hindsight_cpu::paging_log`]), drained by
    /// [`Machine::take_paging_changes`].
    pub fn set_paging_log(&mut self, on: bool) {
        for cpu in &mut self.vcpus {
            cpu.paging_log.enabled = on;
            cpu.paging_log.changes.clear();
        }
    }

    /// The paging-regime changes noted since the last call, by every vCPU:
    /// (instruction count, vCPU, regime after the change).
    pub fn take_paging_changes(&mut self) -> Vec<(u64, usize, PagingRegime)> {
        let mut all = Vec::new();
        for (v, cpu) in self.vcpus.iter_mut().enumerate() {
            all.extend(cpu.paging_log.changes.drain(..).map(|(t, r)| (t, v, r)));
        }
        all
    }

    /// The first debugger hit a vCPU noted, as the run's exit.
    fn take_debug_hit(&mut self) -> Option<Exit> {
        self.debug.as_ref()?;
        self.vcpus
            .iter_mut()
            .enumerate()
            .find_map(|(vcpu, cpu)| cpu.debug.hit.take().map(|hit| Exit::Debug { vcpu, hit }))
    }

    /// Moves queued console input into the UART's receive FIFO.
    fn pump_input(&mut self) {
        if self.input_held() {
            return;
        }
        let uart = &mut self.devices.uart;
        for _ in 0..uart.rx_room() {
            match self.input.pop_front() {
                Some(b) => uart.push_input(b),
                None => break,
            }
        }
    }

    /// Whether queued input must wait (see
    /// [`MachineConfig::hold_input_until_rx_interrupts`]): until receive
    /// interrupts have been on for [`INPUT_SETTLE_NS`], so the driver has
    /// finished opening the port (it drains the receiver once more after
    /// enabling them).
    fn input_held(&mut self) -> bool {
        if !self.hold_input {
            return false;
        }
        if !self.devices.uart.receive_interrupts_enabled() {
            self.rx_on_since = None;
            return true;
        }
        let since = *self.rx_on_since.get_or_insert(self.now);
        self.now < since + INPUT_SETTLE_NS
    }

    /// When held input may enter, if it is waiting only for the settle time.
    fn input_deadline(&self) -> Option<u64> {
        match self.rx_on_since {
            Some(since) if self.hold_input && !self.input.is_empty() => {
                Some(since + INPUT_SETTLE_NS).filter(|&t| t > self.now)
            }
            _ => None,
        }
    }

    /// Applies the INIT and start-up IPIs sent since the last look.
    fn apply_cpu_signals(&mut self) {
        if self.devices.apic.cpu_signals.is_empty() {
            return;
        }
        for (i, signal) in std::mem::take(&mut self.devices.apic.cpu_signals) {
            let Some(cpu) = self.vcpus.get_mut(i) else {
                continue;
            };
            match signal {
                CpuSignal::Init => {
                    let icount = cpu.icount;
                    let debug = std::mem::take(&mut cpu.debug);
                    let log = std::mem::take(&mut cpu.paging_log);
                    *cpu = Cpu::new(i as u32);
                    cpu.debug = debug;
                    cpu.paging_log = log;
                    cpu.icount = icount;
                    cpu.note_paging_change();
                    cpu.halted = true;
                    self.waiting_sipi[i] = true;
                }
                CpuSignal::StartUp(vector) if self.waiting_sipi[i] => {
                    let selector = u16::from(vector) << 8;
                    cpu.seg[SegReg::Cs as usize] = Segment::real(selector, attr::CODE_RX);
                    cpu.rip = 0;
                    cpu.halted = false;
                    cpu.update_mode();
                    self.waiting_sipi[i] = false;
                }
                CpuSignal::StartUp(_) => {}
            }
        }
    }

    /// Whether the PIC's INTR reaches vCPU 0: its local APIC passes LINT0
    /// through (virtual-wire mode) or is software-disabled, as after reset.
    fn pic_reaches_cpu0(&self) -> bool {
        self.devices
            .apic
            .lapics
            .first()
            .is_none_or(|l| !l.software_enabled() || l.lint0_extint_enabled())
    }

    /// Whether an interrupt waits for vCPU `i` (whatever its IF).
    fn interrupt_pending(&self, i: usize) -> bool {
        if self.waiting_sipi[i] {
            return false;
        }
        self.devices
            .apic
            .lapics
            .get(i)
            .is_some_and(|l| l.pending_vector().is_some())
            || (i == 0 && self.devices.pic.has_interrupt() && self.pic_reaches_cpu0())
    }

    /// An interrupt waits for vCPU `i`, which has IF set but sits in an
    /// interrupt shadow: it must run exactly one instruction before taking it.
    fn interrupt_held_by_shadow(&self, i: usize) -> bool {
        let cpu = &self.vcpus[i];
        cpu.rflags & flags::IF != 0 && cpu.icount == cpu.shadow_at && self.interrupt_pending(i)
    }

    /// Delivers to each vCPU that can take one now the interrupt waiting
    /// for it: its local APIC's first, else (vCPU 0) the PIC's; at most
    /// until virtual time reaches `stop`.
    fn deliver_interrupts(&mut self, stop: u64) -> Result<(), Stop> {
        for i in 0..self.vcpus.len() {
            // Each delivery is a unit of virtual time: never pass `stop`.
            if self.now >= stop {
                break;
            }
            if self.waiting_sipi[i] || !self.vcpus[i].interrupts_enabled() {
                continue;
            }
            let vector = match self
                .devices
                .apic
                .lapics
                .get_mut(i)
                .and_then(|l| l.acknowledge())
            {
                Some(v) => v,
                None if i == 0 && self.devices.pic.has_interrupt() && self.pic_reaches_cpu0() => {
                    self.devices.pic.acknowledge()
                }
                None => continue,
            };
            self.with_ctx(i, |ctx| ctx.interrupt(vector)).0?;
        }
        Ok(())
    }

    /// Whether anything can ever wake a vCPU when every vCPU is halted,
    /// given the earliest deadline that can raise an interrupt.
    fn can_wake(&self, deadline: Option<u64>) -> bool {
        (0..self.vcpus.len()).any(|i| {
            !self.waiting_sipi[i]
                && self.vcpus[i].rflags & flags::IF != 0
                && (deadline.is_some() || self.interrupt_pending(i))
        })
    }

    /// Runs vCPU `i` for at most `budget` instructions, with the engine
    /// of the configuration.
    #[inline]
    fn run_slice(&mut self, i: usize, budget: u64) -> Result<(), Stop> {
        let mut jit = self.jit.take();
        let (exit, ran) = self.with_ctx(i, |ctx| {
            let limit = ctx.cpu.icount.saturating_add(budget);
            match &mut jit {
                Some(j) => j.run(ctx, limit),
                None => ctx.run(limit),
            }
        });
        self.jit = jit;
        self.sched.consumed(ran);
        match exit {
            RunExit::Stop(s) => Err(s),
            RunExit::Limit | RunExit::Halted | RunExit::Exit => Ok(()),
        }
    }

    /// Runs `f` on vCPU `i` wired to the machine, then advances virtual time
    /// by the vCPU's progress, which is also returned.
    #[inline]
    fn with_ctx<R>(&mut self, i: usize, f: impl FnOnce(&mut Ctx) -> R) -> (R, u64) {
        self.last_vcpu = i;
        let cpu = &mut self.vcpus[i];
        let before = cpu.icount;
        debug_assert_eq!(before, self.now, "vCPU counts follow virtual time");
        let mut bus = VcpuBus {
            ram: &mut self.ram,
            devices: &mut self.devices,
            console: &mut self.console,
            cpu: i,
        };
        let r = f(&mut Ctx::new(cpu, &mut bus, &mut self.code));
        let ran = cpu.icount - before;
        self.now += ran;
        // Time passes for the other vCPUs too: every vCPU's count is the
        // machine's virtual time, so their TSCs agree (as on one package).
        // An interrupt shadow pending on a vCPU that did not run moves with
        // its count, so it still covers that vCPU's next instruction.
        if ran > 0 && self.vcpus.len() > 1 {
            for (j, other) in self.vcpus.iter_mut().enumerate() {
                if j != i {
                    if other.shadow_at == other.icount {
                        other.shadow_at += ran;
                    }
                    other.icount += ran;
                }
            }
        }
        (r, ran)
    }

    /// Virtual time: total retired instructions (plus delivered events and
    /// idle time) of the machine. One instruction is one nanosecond.
    pub fn icount(&self) -> u64 {
        self.now
    }

    /// Virtual time spent with every vCPU halted (skipped, not executed).
    pub fn idle_time(&self) -> u64 {
        self.idle
    }

    /// The vCPUs (read-only view for reports and tests).
    pub fn cpus(&self) -> &[Cpu] {
        &self.vcpus
    }

    /// The devices (read-only view for reports and tests).
    pub fn devices(&self) -> &PcDevices {
        &self.devices
    }

    /// Guest RAM (read-only view: dirty pages, host-side reads).
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// Reads guest-physical memory (RAM or ROM) from the host side.
    pub fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.ram.read(gpa, buf)
    }

    /// Writes guest-physical RAM from the host side (a debugger, a test):
    /// marks the pages dirty and drops code decoded from them.
    pub fn write_phys(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.ram.write(gpa, data)?;
        if let Some(last) = (data.len() as u64).checked_sub(1) {
            let mut page = gpa & !(PAGE_SIZE - 1);
            while page <= gpa + last {
                self.code.invalidate_page(page);
                page += PAGE_SIZE;
            }
        }
        Ok(())
    }

    /// Starts a new dirty-tracking epoch: clears the dirty bitmap and drops
    /// every vCPU's write TLB, so the first store to each page is seen again
    /// (brief invariant 5). A [`crate::checkpoint::CheckpointStore`] in use
    /// owns the epochs: starting one behind its back makes it refuse to
    /// take a checkpoint until it restores one.
    pub fn start_dirty_epoch(&mut self) {
        self.digests.get_mut().forget(self.ram.dirty_words());
        self.ram.clear_dirty();
        for cpu in &mut self.vcpus {
            cpu.tlb.flush_writes();
        }
    }
}

/// The earlier of two optional instants.
fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

mod snapshot;

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod snapshot_tests;

#[cfg(test)]
mod checkpoint_tests;

#[cfg(test)]
pub(crate) mod test_guest;
