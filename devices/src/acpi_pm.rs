//! The ACPI fixed-hardware power-management registers of a PIIX4/ICH-style
//! south bridge: the PM1a event block (PM1_STS, PM1_EN), the PM1a control
//! register (PM1_CNT) and the 24-bit PM timer, at I/O ports
//! [`ACPI_PM_BASE`]`..`[`ACPI_PM_BASE`]` + `[`ACPI_PM_LEN`] (0x600..=0x60B),
//! where the FADT that `hindsight_firmware::acpi` writes places them.
//!
//! | offset | width | register | behaviour |
//! |--------|-------|----------|-----------|
//! | 0..=1  | 16 | PM1_STS | write 1 to clear; only TMR_STS (bit 0) is ever set, all other status bits (bus master, global, power/sleep button, RTC, wake) read 0 |
//! | 2..=3  | 16 | PM1_EN  | TMR_EN (0), GBL_EN (5), PWRBTN_EN (8), SLPBTN_EN (9), RTC_EN (10) and PCIEXP_WAKE_DIS (14) read back as written; other bits read 0 |
//! | 4..=5  | 16 | PM1_CNT | SCI_EN (0) always reads 1 (there is no SMI command port: the machine is always in ACPI mode) and ignores writes; BM_RLD (1) and SLP_TYP (bits 12:10) read back; GBL_RLS (2) and SLP_EN (13) are write-only and read 0 |
//! | 6..=7  | -  | (none)  | reads 0xFF, writes ignored |
//! | 8..=11 | 32 | PM_TMR  | read-only; bits 23:0 are the timer, bits 31:24 read 0 (the FADT's TMR_VAL_EXT flag is clear) |
//!
//! Accesses are per byte, the way the machine's port bus splits wider IN
//! and OUT instructions; [`AcpiPm::io_read`] and [`AcpiPm::io_write`]
//! compose word and dword accesses from them in little-endian order. Every
//! register bit that matters lies within one byte (SLP_TYP and SLP_EN are
//! both in byte 5), so a split word write behaves as the word write would.
//!
//! # Sleep and power-off
//!
//! Writing SLP_EN (bit 13 of PM1_CNT) with SLP_TYP equal to [`SLP_TYP_S5`]
//! (7, the Intel ICH encoding of S5 / soft off, which the DSDT's `_S5`
//! object declares) requests power-off: [`AcpiPm::poweroff_requested`]
//! becomes true and stays true; the machine polls it and ends the run.
//! SLP_EN with any other SLP_TYP does nothing (no other sleep state is
//! declared to the guest). Linux writes SLP_TYP first, then SLP_TYP |
//! SLP_EN, and then spins reading WAK_STS, which never rises.
//!
//! # PM timer
//!
//! The timer counts at [`PM_TIMER_HZ`] (3.579545 MHz) of virtual time from
//! time 0: `tick(now_ns) = floor(now_ns * 3579545 / 10^9)`, computed in
//! u128 from absolute time, so it never drifts; a read returns the low 24
//! bits. TMR_STS rises whenever bit 23 of the count toggles, i.e. at every
//! tick that is a multiple of 2^23 (every 2.34 s). It is computed lazily:
//! the state keeps the tick at which the guest last cleared it, and TMR_STS
//! is set iff a multiple of 2^23 has been reached since.
//!
//! # SCI
//!
//! [`AcpiPm::sci_level`] is the System Control Interrupt condition: some
//! PM1_STS bit is set whose PM1_EN bit is set (only TMR_STS & TMR_EN can
//! be). It is an "asserted" level, true meaning the interrupt is requested;
//! the machine drives ISA IRQ [`SCI_IRQ`] (9) with it, level-triggered,
//! like the other devices' outputs. The MADT declares IRQ 9 as GSI 9,
//! active high and level-triggered (as QEMU does), so no inversion is
//! needed on the I/O APIC side; in 8259 mode Linux sets IRQ 9 to level in
//! the ELCR. [`AcpiPm::next_deadline`] tells when the line will next rise
//! by itself, so a halted vCPU waiting for it wakes in time.

use serde::{Deserialize, Serialize};

use crate::NS_PER_SEC;

/// First I/O port of the PM registers (PM1a_EVT_BLK in the FADT).
pub const ACPI_PM_BASE: u16 = 0x600;
/// Number of ports the device claims from [`ACPI_PM_BASE`]: PM1 event
/// block (4), PM1 control (2), a 2-byte hole, PM timer (4).
pub const ACPI_PM_LEN: u16 = 12;
/// ISA IRQ of the System Control Interrupt (FADT SCI_INT).
pub const SCI_IRQ: u8 = 9;
/// PM timer frequency in Hz.
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// SLP_TYP value of S5 (soft off), as the DSDT's `_S5` declares it.
pub const SLP_TYP_S5: u8 = 7;

/// Offset of PM1_STS (16 bits).
const OFF_PM1_STS: u8 = 0;
/// Offset of PM1_EN (16 bits).
const OFF_PM1_EN: u8 = 2;
/// Offset of PM1_CNT (16 bits).
const OFF_PM1_CNT: u8 = 4;
/// Offset of PM_TMR (32 bits).
const OFF_PM_TMR: u8 = 8;

// PM1_STS / PM1_EN bits.
/// PM1_STS: the timer's bit 23 toggled. PM1_EN: raise the SCI for it.
pub const PM1_TMR: u16 = 1 << 0;
/// PM1_EN: global lock release event enable.
const PM1_EN_GBL: u16 = 1 << 5;
/// PM1_EN: power button enable.
const PM1_EN_PWRBTN: u16 = 1 << 8;
/// PM1_EN: sleep button enable.
const PM1_EN_SLPBTN: u16 = 1 << 9;
/// PM1_EN: RTC alarm enable.
const PM1_EN_RTC: u16 = 1 << 10;
/// PM1_EN: PCI Express wake disable.
const PM1_EN_PCIEXP_WAKE_DIS: u16 = 1 << 14;
/// PM1_EN bits that read back.
const PM1_EN_WRITABLE: u16 =
    PM1_TMR | PM1_EN_GBL | PM1_EN_PWRBTN | PM1_EN_SLPBTN | PM1_EN_RTC | PM1_EN_PCIEXP_WAKE_DIS;

// PM1_CNT bits.
/// SCI_EN: SCIs rather than SMIs; always 1.
pub const PM1_CNT_SCI_EN: u16 = 1 << 0;
/// BM_RLD: bus master requests wake from C3 (stored only).
const PM1_CNT_BM_RLD: u16 = 1 << 1;
/// SLP_TYP field position (bits 12:10).
pub const PM1_CNT_SLP_TYP_SHIFT: u32 = 10;
/// SLP_TYP field mask.
const PM1_CNT_SLP_TYP: u16 = 7 << PM1_CNT_SLP_TYP_SHIFT;
/// SLP_EN: enter the sleep state in SLP_TYP (write-only).
pub const PM1_CNT_SLP_EN: u16 = 1 << 13;
/// PM1_CNT bits that are stored and read back.
const PM1_CNT_STORED: u16 = PM1_CNT_BM_RLD | PM1_CNT_SLP_TYP;

/// TMR_STS rises each time the count crosses a multiple of this (bit 23
/// toggles).
const TMR_STS_PERIOD_TICKS: u64 = 1 << 23;
/// The timer's visible width.
const TMR_MASK: u64 = (1 << 24) - 1;

/// Number of PM timer ticks that have happened by virtual time `now_ns`.
pub fn pm_ticks_at(now_ns: u64) -> u64 {
    // At most ~6.6e16 for now_ns = u64::MAX, so the cast cannot truncate.
    (u128::from(now_ns) * u128::from(PM_TIMER_HZ) / u128::from(NS_PER_SEC)) as u64
}

/// Earliest virtual time at which PM timer tick `tick` has happened:
/// `ceil(tick * 10^9 / PM_TIMER_HZ)`, or `None` past the end of time.
pub fn ns_of_pm_tick(tick: u64) -> Option<u64> {
    let num = u128::from(tick) * u128::from(NS_PER_SEC);
    u64::try_from(num.div_ceil(u128::from(PM_TIMER_HZ))).ok()
}

/// Saved state of an [`AcpiPm`]. `Default` is the power-on state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcpiPmState {
    /// PM1_EN (writable bits only).
    pub pm1_en: u16,
    /// PM1_CNT's stored bits: BM_RLD and SLP_TYP.
    pub pm1_cnt: u16,
    /// PM timer tick at which the guest last cleared TMR_STS (0 at power
    /// on). TMR_STS is set at tick `t` iff `t >> 23 > tmr_cleared_tick >> 23`.
    pub tmr_cleared_tick: u64,
    /// The guest wrote SLP_EN with SLP_TYP = S5. Sticky.
    pub poweroff_requested: bool,
}

/// The ACPI PM1 event/control registers and PM timer. See the module
/// documentation.
#[derive(Clone, Debug, Default)]
pub struct AcpiPm {
    state: AcpiPmState,
}

impl AcpiPm {
    /// The registers in their power-on state.
    pub fn new() -> Self {
        Self::from_state(&AcpiPmState::default())
    }

    /// Rebuilds the device from saved state.
    pub fn from_state(state: &AcpiPmState) -> Self {
        AcpiPm {
            state: state.clone(),
        }
    }

    /// The guest-visible state, for a snapshot.
    pub fn state(&self) -> AcpiPmState {
        self.state.clone()
    }

    /// The 24-bit PM timer value at `now_ns`.
    pub fn pm_timer(&self, now_ns: u64) -> u32 {
        (pm_ticks_at(now_ns) & TMR_MASK) as u32
    }

    /// PM1_STS at `now_ns`.
    pub fn pm1_sts(&self, now_ns: u64) -> u16 {
        let since = pm_ticks_at(now_ns) / TMR_STS_PERIOD_TICKS;
        if since > self.state.tmr_cleared_tick / TMR_STS_PERIOD_TICKS {
            PM1_TMR
        } else {
            0
        }
    }

    /// PM1_EN.
    pub fn pm1_en(&self) -> u16 {
        self.state.pm1_en
    }

    /// PM1_CNT as the guest reads it (SCI_EN set, write-only bits clear).
    pub fn pm1_cnt(&self) -> u16 {
        self.state.pm1_cnt | PM1_CNT_SCI_EN
    }

    /// Reads port `ACPI_PM_BASE + offset` at virtual time `now_ns`. Offsets
    /// with no register read as a floating bus (0xFF).
    pub fn read(&self, now_ns: u64, offset: u8) -> u8 {
        let byte = |v: u32, base: u8| (v >> (8 * (offset - base))) as u8;
        match offset {
            0..=1 => byte(self.pm1_sts(now_ns).into(), OFF_PM1_STS),
            2..=3 => byte(self.pm1_en().into(), OFF_PM1_EN),
            4..=5 => byte(self.pm1_cnt().into(), OFF_PM1_CNT),
            8..=11 => byte(self.pm_timer(now_ns), OFF_PM_TMR),
            _ => 0xFF,
        }
    }

    /// Writes port `ACPI_PM_BASE + offset` at virtual time `now_ns`.
    /// Read-only and absent registers ignore the write.
    pub fn write(&mut self, now_ns: u64, offset: u8, value: u8) {
        let shift = 8 * u32::from(offset & 1);
        let bits = u16::from(value) << shift;
        let byte_mask = 0xFF_u16 << shift;
        match offset {
            0..=1 if bits & PM1_TMR != 0 => {
                self.state.tmr_cleared_tick = pm_ticks_at(now_ns);
            }
            2..=3 => {
                let mask = byte_mask & PM1_EN_WRITABLE;
                self.state.pm1_en = (self.state.pm1_en & !mask) | (bits & mask);
            }
            4..=5 => {
                let mask = byte_mask & PM1_CNT_STORED;
                self.state.pm1_cnt = (self.state.pm1_cnt & !mask) | (bits & mask);
                let slp_typ = (bits & PM1_CNT_SLP_TYP) >> PM1_CNT_SLP_TYP_SHIFT;
                if bits & PM1_CNT_SLP_EN != 0 && slp_typ == u16::from(SLP_TYP_S5) {
                    self.state.poweroff_requested = true;
                }
            }
            // PM1_STS bits that are never set, the hole, the read-only timer.
            _ => {}
        }
    }

    /// IN of `size` bytes (1, 2 or 4) from `ACPI_PM_BASE + offset`: the
    /// byte reads at `offset`, `offset + 1`, … composed little-endian.
    pub fn io_read(&self, now_ns: u64, offset: u8, size: u8) -> u32 {
        (0..size.min(4)).fold(0, |v, i| {
            v | u32::from(self.read(now_ns, offset.wrapping_add(i))) << (8 * i)
        })
    }

    /// OUT of `size` bytes (1, 2 or 4) of `value` to `ACPI_PM_BASE +
    /// offset`: byte writes from the lowest address up.
    pub fn io_write(&mut self, now_ns: u64, offset: u8, size: u8, value: u32) {
        for i in 0..size.min(4) {
            self.write(now_ns, offset.wrapping_add(i), (value >> (8 * i)) as u8);
        }
    }

    /// The guest wrote SLP_EN with SLP_TYP = [`SLP_TYP_S5`]: power off.
    /// Sticky.
    pub fn poweroff_requested(&self) -> bool {
        self.state.poweroff_requested
    }

    /// Level of the SCI at `now_ns`: an enabled PM1 status bit is set
    /// (true = interrupt requested; see the module documentation for the
    /// wiring to IRQ 9).
    pub fn sci_level(&self, now_ns: u64) -> bool {
        self.pm1_sts(now_ns) & self.state.pm1_en != 0
    }

    /// Absolute virtual time (greater than `now_ns`) at which the SCI next
    /// rises by itself, i.e. TMR_STS next sets with TMR_EN enabled, or
    /// `None` if TMR_EN is clear, or the SCI is already high (it falls only
    /// when the guest clears TMR_STS or TMR_EN). At the returned time the
    /// tick has happened; one ns earlier it has not.
    pub fn next_deadline(&self, now_ns: u64) -> Option<u64> {
        if self.state.pm1_en & PM1_TMR == 0 || self.sci_level(now_ns) {
            return None;
        }
        let period = self.state.tmr_cleared_tick / TMR_STS_PERIOD_TICKS;
        period
            .checked_add(1)
            .and_then(|p| p.checked_mul(TMR_STS_PERIOD_TICKS))
            .and_then(ns_of_pm_tick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Virtual time at which tick `k` has just happened.
    fn at(k: u64) -> u64 {
        ns_of_pm_tick(k).unwrap()
    }

    const PERIOD: u64 = 1 << 23;

    #[test]
    fn time_base() {
        assert_eq!(pm_ticks_at(0), 0);
        assert_eq!(pm_ticks_at(279), 0);
        assert_eq!(pm_ticks_at(280), 1);
        assert_eq!(pm_ticks_at(NS_PER_SEC), PM_TIMER_HZ);
        assert_eq!(pm_ticks_at(3600 * NS_PER_SEC), 3600 * PM_TIMER_HZ);
        assert_eq!(pm_ticks_at(u64::MAX), 66_030_950_515_326_656);
        for k in [1, 2, 3, 1000, PERIOD, 3_579_545, 1 << 40] {
            assert_eq!(pm_ticks_at(at(k)), k, "tick {k}");
            assert_eq!(pm_ticks_at(at(k) - 1), k - 1, "tick {k}");
        }
        assert_eq!(at(1), 280);
        assert_eq!(ns_of_pm_tick(u64::MAX), None);
    }

    #[test]
    fn power_on_registers() {
        let pm = AcpiPm::new();
        assert_eq!(pm.io_read(0, 0, 2), 0, "PM1_STS");
        assert_eq!(pm.io_read(0, 2, 2), 0, "PM1_EN");
        assert_eq!(pm.io_read(0, 4, 2), 1, "PM1_CNT: SCI_EN");
        assert_eq!(pm.io_read(0, 8, 4), 0, "PM_TMR");
        assert_eq!(pm.read(0, 6), 0xFF);
        assert_eq!(pm.read(0, 7), 0xFF);
        assert_eq!(pm.read(0, 12), 0xFF);
        assert!(!pm.poweroff_requested());
        assert!(!pm.sci_level(u64::MAX));
        assert_eq!(pm.next_deadline(0), None);
    }

    #[test]
    fn timer_counts_and_wraps() {
        let pm = AcpiPm::new();
        assert_eq!(pm.io_read(NS_PER_SEC, 8, 4), 3_579_545);
        assert_eq!(pm.read(NS_PER_SEC, 11), 0, "bits 31:24 read 0");
        // 3_579_545 = 0x36_9E99, byte by byte.
        let bytes: Vec<u8> = (8..12).map(|o| pm.read(NS_PER_SEC, o)).collect();
        assert_eq!(bytes, [0x99, 0x9E, 0x36, 0x00]);
        let wrap = 1 << 24;
        assert_eq!(pm.io_read(at(wrap) - 1, 8, 4), 0xFF_FFFF);
        assert_eq!(pm.io_read(at(wrap), 8, 4), 0);
        assert_eq!(pm.io_read(at(wrap + 5), 8, 4), 5);
        // A word read gets the low 16 bits.
        assert_eq!(pm.io_read(NS_PER_SEC, 8, 2), 0x9E99);
        // Monotonic between wraps, one tick per ~279.4 ns.
        let mut last = 0;
        for now in (0..10_000_000u64).step_by(997) {
            let v = pm.pm_timer(now);
            assert!(v >= last);
            assert!(u64::from(v) <= now / 279 + 1);
            last = v;
        }
        // Writes do not change it.
        let mut pm2 = pm.clone();
        pm2.io_write(NS_PER_SEC, 8, 4, 0);
        assert_eq!(pm2.io_read(NS_PER_SEC, 8, 4), 3_579_545);
    }

    #[test]
    fn tmr_sts_and_sci() {
        let mut pm = AcpiPm::new();
        assert_eq!(pm.pm1_sts(at(PERIOD) - 1), 0);
        assert_eq!(pm.pm1_sts(at(PERIOD)), PM1_TMR);
        assert_eq!(pm.read(at(PERIOD), 0), 1);
        // Status without enable: no SCI, no deadline.
        assert!(!pm.sci_level(at(PERIOD)));
        assert_eq!(pm.next_deadline(0), None);

        pm.io_write(0, 2, 2, u32::from(PM1_TMR));
        assert_eq!(pm.pm1_en(), PM1_TMR);
        assert_eq!(pm.next_deadline(0), Some(at(PERIOD)));
        assert_eq!(pm.next_deadline(at(PERIOD) - 1), Some(at(PERIOD)));
        assert!(!pm.sci_level(at(PERIOD) - 1));
        assert!(pm.sci_level(at(PERIOD)));
        assert_eq!(pm.next_deadline(at(PERIOD)), None, "already high");
        // Still set much later (it is a latch, not the toggle itself).
        let late = at(PERIOD + PERIOD / 2);
        assert!(pm.sci_level(late));
        // Writing 0 leaves it, writing 1 clears it until the next toggle.
        pm.io_write(late, 0, 2, 0);
        assert!(pm.sci_level(late));
        pm.io_write(late, 0, 2, u32::from(PM1_TMR));
        assert!(!pm.sci_level(late));
        assert_eq!(pm.pm1_sts(late), 0);
        assert_eq!(pm.next_deadline(late), Some(at(2 * PERIOD)));
        assert!(!pm.sci_level(at(2 * PERIOD) - 1));
        assert!(pm.sci_level(at(2 * PERIOD)));
        // Several toggles while uncleared still mean one set bit.
        assert_eq!(pm.pm1_sts(at(7 * PERIOD)), PM1_TMR);
        // Clearing TMR_EN drops the SCI but not the status.
        pm.io_write(at(7 * PERIOD), 2, 2, 0);
        assert!(!pm.sci_level(at(7 * PERIOD)));
        assert_eq!(pm.pm1_sts(at(7 * PERIOD)), PM1_TMR);
        assert_eq!(pm.next_deadline(at(7 * PERIOD)), None);
        // Clearing the high status byte does not touch TMR_STS.
        pm.write(at(7 * PERIOD), 1, 0xFF);
        assert_eq!(pm.pm1_sts(at(7 * PERIOD)), PM1_TMR);
        pm.write(at(7 * PERIOD), 0, 0xFF);
        assert_eq!(pm.pm1_sts(at(7 * PERIOD)), 0);
    }

    #[test]
    fn enable_register_bits() {
        let mut pm = AcpiPm::new();
        pm.io_write(0, 2, 2, 0xFFFF);
        assert_eq!(pm.io_read(0, 2, 2), 0x4721);
        pm.write(0, 3, 0);
        assert_eq!(pm.io_read(0, 2, 2), 0x0021, "high byte alone");
        // Only TMR_STS can raise the SCI, whatever else is enabled.
        pm.io_write(0, 2, 2, 0x4720);
        assert!(!pm.sci_level(at(5 * PERIOD)));
    }

    #[test]
    fn control_register_bits() {
        let mut pm = AcpiPm::new();
        pm.io_write(0, 4, 2, 0);
        assert_eq!(pm.io_read(0, 4, 2), 1, "SCI_EN stays set");
        pm.io_write(0, 4, 2, 0xFFFF & !u32::from(PM1_CNT_SLP_EN));
        assert_eq!(pm.io_read(0, 4, 2), 0x1C03, "SCI_EN, BM_RLD, SLP_TYP");
        // SLP_TYP 7 was written without SLP_EN: no power-off yet.
        assert!(!pm.poweroff_requested());
        pm.io_write(0, 4, 2, 0x0004); // GBL_RLS: write-only, nothing to release
        assert_eq!(pm.io_read(0, 4, 2), 0x0001);
    }

    /// The sequence ACPICA's `acpi_hw_legacy_sleep` performs for S5.
    #[test]
    fn s5_sleep_powers_off() {
        let mut pm = AcpiPm::new();
        let now = 5 * NS_PER_SEC;
        pm.io_write(now, 0, 2, 0x8000); // clear WAK_STS
        let cnt = pm.io_read(now, 4, 2);
        let cnt = cnt & !u32::from(PM1_CNT_SLP_TYP | PM1_CNT_SLP_EN);
        let typ = u32::from(SLP_TYP_S5) << PM1_CNT_SLP_TYP_SHIFT;
        pm.io_write(now, 4, 2, cnt | typ);
        assert!(!pm.poweroff_requested());
        assert_eq!(pm.io_read(now, 4, 2), 0x1C01);
        pm.io_write(now, 4, 2, cnt | typ | u32::from(PM1_CNT_SLP_EN));
        assert!(pm.poweroff_requested());
        assert_eq!(pm.io_read(now, 4, 2), 0x1C01, "SLP_EN reads 0");
        // Sticky, whatever is written next.
        pm.io_write(now, 4, 2, 0);
        assert!(pm.poweroff_requested());
        assert_eq!(pm.io_read(now, 0, 2) & 0x8000, 0, "WAK_STS never rises");
    }

    #[test]
    fn other_sleep_types_are_ignored() {
        for typ in 0..8u32 {
            let mut pm = AcpiPm::new();
            pm.io_write(0, 4, 2, (typ << 10) | u32::from(PM1_CNT_SLP_EN));
            assert_eq!(pm.poweroff_requested(), typ == 7, "SLP_TYP {typ}");
            // A byte write of the high half is the same thing.
            let mut pm = AcpiPm::new();
            pm.write(0, 5, ((typ << 2) | 0x20) as u8);
            assert_eq!(pm.poweroff_requested(), typ == 7, "SLP_TYP {typ}");
        }
        // SLP_EN alone (as ACPICA's retry after 10 s writes it): type 0.
        let mut pm = AcpiPm::new();
        pm.io_write(0, 4, 2, u32::from(PM1_CNT_SLP_EN));
        assert!(!pm.poweroff_requested());
    }

    #[test]
    fn snapshot_roundtrip() {
        let mut pm = AcpiPm::new();
        pm.io_write(0, 2, 2, 0x0121);
        pm.io_write(at(PERIOD + 9), 0, 2, 1);
        pm.io_write(0, 4, 2, 0x0802);
        let saved = pm.state();
        let restored = AcpiPm::from_state(&saved);
        assert_eq!(restored.state(), saved);
        for now in [0, at(PERIOD + 9), at(2 * PERIOD), 60 * NS_PER_SEC] {
            for off in 0..12 {
                assert_eq!(restored.read(now, off), pm.read(now, off));
            }
            assert_eq!(restored.next_deadline(now), pm.next_deadline(now));
            assert_eq!(restored.sci_level(now), pm.sci_level(now));
        }
        pm.io_write(0, 4, 2, 0x3C00);
        assert!(pm.poweroff_requested());
        assert!(AcpiPm::from_state(&pm.state()).poweroff_requested());
        assert!(!restored.poweroff_requested());
    }
}
