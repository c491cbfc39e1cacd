//! The paging regimes a vCPU went through: what decides how its linear
//! addresses translate (CR0, CR3, CR4, EFER), noted each time one of them
//! is written while a log is kept. A debugger's reverse search uses it to
//! know every translation a stretch of history can have used, so that a
//! stretch in which no page behind a watched address was written can be
//! skipped without replaying it.

use crate::state::Cpu;

/// The registers that decide linear → physical translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PagingRegime {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

impl PagingRegime {
    /// `cpu`'s regime now.
    pub fn of(cpu: &Cpu) -> PagingRegime {
        PagingRegime {
            cr0: cpu.cr0,
            cr3: cpu.cr3,
            cr4: cpu.cr4,
            efer: cpu.efer,
        }
    }

    /// Puts this regime into `cpu` (a scratch vCPU for a debug walk).
    pub fn apply(&self, cpu: &mut Cpu) {
        cpu.cr0 = self.cr0;
        cpu.cr3 = self.cr3;
        cpu.cr4 = self.cr4;
        cpu.efer = self.efer;
    }
}

/// Regime changes noted while enabled: (instruction count of the
/// instruction that made the change, the regime after it).
#[derive(Clone, Debug, Default)]
pub struct PagingLog {
    /// Whether changes are noted.
    pub enabled: bool,
    /// The changes noted since the log was last drained.
    pub changes: Vec<(u64, PagingRegime)>,
}

impl Cpu {
    /// Notes the regime after a write to CR0, CR3, CR4 or EFER (or a reset
    /// of the vCPU), if a log is kept.
    #[inline]
    pub fn note_paging_change(&mut self) {
        if self.paging_log.enabled {
            let regime = PagingRegime::of(self);
            self.paging_log.changes.push((self.icount, regime));
        }
    }
}
