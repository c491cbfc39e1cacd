//! The console gate: output the guest produces again while the timeline
//! re-executes known history (a seek, a reverse step) was already shown
//! once, so a sink wrapped by the gate drops it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hindsight_machine::ConsoleSink;

/// Mutes console output while a [`crate::Timeline`] re-executes history it
/// has executed before; output of instructions beyond the furthest point
/// reached passes. Clones share the switch.
#[derive(Clone, Debug, Default)]
pub struct ConsoleGate(Arc<AtomicBool>);

impl ConsoleGate {
    /// `sink` behind the gate, for [`hindsight_machine::Machine::set_console`].
    pub fn wrap(&self, mut sink: ConsoleSink) -> ConsoleSink {
        let muted = Arc::clone(&self.0);
        Box::new(move |bytes: &[u8]| {
            if !muted.load(Ordering::Relaxed) {
                sink(bytes);
            }
        })
    }

    /// Whether output is being dropped now.
    pub fn is_muted(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Mutes or unmutes.
    pub(crate) fn set_muted(&self, muted: bool) {
        self.0.store(muted, Ordering::Relaxed);
    }
}
