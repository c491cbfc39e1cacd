//! Saving and restoring a [`Machine`]'s state, whole pages of its RAM, and
//! its state hash.

use hindsight_cpu::Stop;

use super::Machine;
use crate::layout::PAGE_SIZE;
use crate::memory::MemoryError;
use crate::sched::Scheduler;
use crate::snapshot::{MachineState, SnapshotError, StopState, STATE_VERSION};

impl Machine {
    /// Captures every vCPU, device, the scheduler, virtual time and queued
    /// console input (everything but RAM). Call it between runs: the run
    /// loop only returns at instruction boundaries.
    pub fn save_state(&self) -> MachineState {
        MachineState {
            version: STATE_VERSION,
            ram_size: self.ram.size(),
            vcpus: self.vcpus.clone(),
            devices: self.devices.state(),
            sched: self.sched.state(),
            now: self.now,
            idle: self.idle,
            waiting_sipi: self.waiting_sipi.clone(),
            input: self.input.clone(),
            hold_input: self.hold_input,
            rx_on_since: self.rx_on_since,
            stopped: self.stopped.as_ref().map(StopState::from),
        }
    }

    /// Puts back a state saved by [`Machine::save_state`] (RAM is not
    /// touched). Refuses, changing nothing, a state of another version,
    /// vCPU count or RAM size, or one that contradicts itself. Decoded code
    /// is dropped, every TLB flushed and cached deadlines recomputed; the
    /// console sink and the output captured so far are kept.
    pub fn restore_state(&mut self, s: &MachineState) -> Result<(), SnapshotError> {
        s.check(self.vcpus.len(), self.ram.size())?;
        for (cpu, saved) in self.vcpus.iter_mut().zip(&s.vcpus) {
            let mut restored = saved.clone();
            // Keep this vCPU's TLB allocation; its contents are stale.
            std::mem::swap(&mut restored.tlb, &mut cpu.tlb);
            // The debugger's set and the paging log are the host's, not
            // the state's.
            restored.debug = std::mem::take(&mut cpu.debug);
            restored.paging_log = std::mem::take(&mut cpu.paging_log);
            restored.debug.hit = None;
            restored.debug.skip_at = u64::MAX;
            *cpu = restored;
            cpu.tlb.flush_all();
            cpu.delivering = None;
            cpu.end_block = false;
            cpu.exit_request = false;
        }
        self.devices.restore(&s.devices);
        self.sched = Scheduler::from_state(&s.sched);
        self.now = s.now;
        self.idle = s.idle;
        self.waiting_sipi.clone_from(&s.waiting_sipi);
        self.input.clone_from(&s.input);
        self.hold_input = s.hold_input;
        self.rx_on_since = s.rx_on_since;
        self.stopped = s.stopped.as_ref().map(Stop::from);
        self.code.clear();
        self.events.invalidate();
        Ok(())
    }

    /// SHA-256 over the machine state and every non-zero RAM page (see
    /// [`crate::state_hash`] for the exact input). Equal hashes mean equal
    /// machines; host-side caches do not enter. Pages not written since the
    /// previous hash reuse their cached digests.
    pub fn state_hash(&self) -> [u8; 32] {
        crate::state_hash::state_hash(
            &self.save_state(),
            &self.ram,
            &mut self.digests.borrow_mut(),
        )
        .expect("a machine state always encodes: every sequence has a length")
    }

    /// Overwrites the RAM page at page-aligned `gpa` with `data`, or zeros,
    /// and drops code decoded from it (restoring a checkpoint).
    pub(crate) fn restore_page(
        &mut self,
        gpa: u64,
        data: Option<&[u8; PAGE_SIZE as usize]>,
    ) -> Result<(), MemoryError> {
        self.ram.write_page(gpa, data)?;
        self.code.invalidate_page(gpa);
        Ok(())
    }
}
