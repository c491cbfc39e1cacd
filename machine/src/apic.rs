//! The APIC bus: one local APIC per vCPU and the I/O APIC, and the routing
//! of interrupt messages between them (IOAPIC redirections, IPIs, level
//! EOIs).
//!
//! INIT and start-up IPIs change a vCPU's execution state, which belongs to
//! the machine: they are queued in [`ApicBus::cpu_signals`] for the run loop
//! to apply. NMIs and SMIs are dropped (no NMI source exists yet).

use hindsight_devices::{
    DeliveryMode, DestShorthand, Ioapic, IoapicDelivery, IoapicState, IpiRequest, Lapic,
    LapicEvent, LapicState,
};
use serde::{Deserialize, Serialize};

/// A change of a vCPU's execution state requested over the APIC bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CpuSignal {
    /// INIT: the vCPU resets and waits for a start-up IPI.
    Init,
    /// Start-up IPI: a vCPU waiting after INIT starts in real mode at
    /// `vector << 12`.
    StartUp(u8),
}

/// The local APICs (index = vCPU index = APIC ID) and the I/O APIC.
pub struct ApicBus {
    /// One local APIC per vCPU.
    pub lapics: Vec<Lapic>,
    /// The I/O APIC.
    pub ioapic: Ioapic,
    /// INIT/SIPI messages waiting for the run loop: (vCPU, signal).
    pub cpu_signals: Vec<(usize, CpuSignal)>,
}

/// Saved state of the APIC bus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApicBusState {
    /// Each vCPU's local APIC, by vCPU index.
    pub lapics: Vec<LapicState>,
    /// The I/O APIC.
    pub ioapic: IoapicState,
    /// INIT/SIPI messages not yet applied by the run loop: (vCPU, signal).
    pub cpu_signals: Vec<(usize, CpuSignal)>,
}

impl ApicBus {
    /// The state to save in a snapshot.
    pub fn state(&self) -> ApicBusState {
        ApicBusState {
            lapics: self.lapics.iter().map(Lapic::state).collect(),
            ioapic: self.ioapic.state(),
            cpu_signals: self.cpu_signals.clone(),
        }
    }

    /// Replaces every APIC's state with `s` (the caller checked that it
    /// has one local APIC per vCPU).
    pub fn restore(&mut self, s: &ApicBusState) {
        self.lapics = s.lapics.iter().map(Lapic::from_state).collect();
        self.ioapic = Ioapic::from_state(&s.ioapic);
        self.cpu_signals = s.cpu_signals.clone();
    }

    /// `cpus` local APICs with IDs 0.., and an I/O APIC with ID `ioapic_id`
    /// (the MP table and MADT give it the first ID after the CPUs).
    pub fn new(cpus: usize, ioapic_id: u8) -> ApicBus {
        ApicBus {
            lapics: (0..cpus).map(|i| Lapic::with_id(i as u8)).collect(),
            ioapic: Ioapic::with_id(ioapic_id),
            cpu_signals: Vec::new(),
        }
    }

    /// Sets the level of I/O APIC input `pin` and delivers what it sends.
    pub fn set_ioapic_pin(&mut self, pin: u8, level: bool) {
        if let Some(d) = self.ioapic.set_irq(pin, level) {
            self.deliver_ioapic(d);
        }
    }

    /// A guest write to the I/O APIC window.
    pub fn ioapic_write(&mut self, offset: u32, value: u32) {
        if let Some(d) = self.ioapic.write(offset, value) {
            self.deliver_ioapic(d);
        }
    }

    /// A guest write to vCPU `cpu`'s local APIC at `offset`, at `now`.
    pub fn lapic_write(&mut self, cpu: usize, now: u64, offset: u32, value: u32) {
        let Some(lapic) = self.lapics.get_mut(cpu) else {
            return;
        };
        match lapic.write(now, offset, value) {
            Some(LapicEvent::Ipi(ipi)) => self.route_ipi(cpu, ipi),
            Some(LapicEvent::LevelEoi(vector)) => {
                for d in self.ioapic.eoi(vector) {
                    self.deliver_ioapic(d);
                }
            }
            None => {}
        }
    }

    fn deliver_ioapic(&mut self, d: IoapicDelivery) {
        self.deliver(
            None,
            d.destination,
            d.logical,
            d.mode,
            d.vector,
            d.level_triggered,
            DestShorthand::None,
        );
    }

    fn route_ipi(&mut self, source: usize, ipi: IpiRequest) {
        if !ipi.assert && ipi.mode == DeliveryMode::Init {
            return; // INIT level de-assert: ignored by modern processors.
        }
        self.deliver(
            Some(source),
            ipi.destination,
            ipi.logical,
            ipi.mode,
            ipi.vector,
            ipi.level_triggered,
            ipi.shorthand,
        );
    }

    /// Delivers one interrupt message to the APICs it addresses.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        source: Option<usize>,
        destination: u8,
        logical: bool,
        mode: DeliveryMode,
        vector: u8,
        level: bool,
        shorthand: DestShorthand,
    ) {
        let targets: Vec<usize> = (0..self.lapics.len())
            .filter(|&i| match shorthand {
                DestShorthand::None => self.lapics[i].matches_destination(destination, logical),
                DestShorthand::SelfOnly => Some(i) == source,
                DestShorthand::AllIncludingSelf => true,
                DestShorthand::AllExcludingSelf => Some(i) != source,
            })
            .collect();
        match mode {
            DeliveryMode::Fixed => {
                for i in targets {
                    self.lapics[i].accept_irq(vector, level);
                }
            }
            // Lowest priority: the lowest-numbered target, deterministically
            // (hardware arbitration is model-specific).
            DeliveryMode::LowestPriority => {
                if let Some(&i) = targets.first() {
                    self.lapics[i].accept_irq(vector, level);
                }
            }
            DeliveryMode::Init => {
                for i in targets {
                    self.lapics[i].init_reset();
                    self.cpu_signals.push((i, CpuSignal::Init));
                }
            }
            DeliveryMode::StartUp => {
                for i in targets {
                    self.cpu_signals.push((i, CpuSignal::StartUp(vector)));
                }
            }
            DeliveryMode::Nmi
            | DeliveryMode::Smi
            | DeliveryMode::ExtInt
            | DeliveryMode::Reserved => {}
        }
    }

    /// Takes every local APIC's timer expiries up to `now`.
    pub fn advance(&mut self, now: u64) {
        for l in &mut self.lapics {
            l.advance(now);
        }
    }

    /// Earliest local APIC timer expiry after `now`.
    pub fn next_deadline(&self, now: u64) -> Option<u64> {
        self.lapics
            .iter()
            .filter_map(|l| l.next_deadline(now))
            .min()
    }
}
