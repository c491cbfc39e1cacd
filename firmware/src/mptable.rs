//! Intel MultiProcessor Specification 1.4 tables, so a kernel without ACPI
//! (or booted with `acpi=off`) finds the CPUs, the I/O APIC and the ISA
//! interrupt routing.
//!
//! # Layout, from [`MPTABLE_ADDR`] (0xF0000, the system BIOS area)
//! | offset | bytes   | structure                                                 |
//! |--------|---------|-----------------------------------------------------------|
//! | 0      | 16      | floating pointer "_MP_": config table address, length 1, spec rev 4, checksum, feature bytes 0 (a config table is present; no IMCR) |
//! | 16     | 44      | configuration table header "PCMP", spec rev 4, OEM "HINDSGHT", product "HINDSIGHT", LAPIC at 0xFEE00000, entry count, checksum over header and entries |
//! |        | 20 each | processor entries, APIC ids 0..n, APIC version 0x14, enabled; id 0 is the BSP |
//! |        | 8       | bus entry: id 0, "ISA   "                                 |
//! |        | 8       | I/O APIC entry: id n (the first id after the CPUs, as SeaBIOS), version 0x11, enabled, 0xFEC00000 |
//! |        | 8 each  | I/O interrupt entries for ISA IRQs 0, 1, 3..15 → I/O APIC pins 0 → 2, others identity (as QEMU + SeaBIOS: IRQ0 goes to pin 2, IRQ2 is the cascade and has no entry); polarity and trigger "conform to bus" (ISA: active high, edge) |
//! |        | 8 each  | local interrupt entries: ExtINT → LINT0 of the BSP (APIC id 0), NMI → LINT1 of all local APICs (0xFF) |
//!
//! Linux scans 0xF0000–0xFFFFF on 16-byte boundaries for "_MP_". The range
//! must not be usable RAM (the e820 map from [`crate::linux::e820_map`]
//! reports `[0xE0000, 0x100000)` reserved); [`write_mptable`] refuses to put
//! the table where [`GuestMemory::ram_regions`] says the guest may use the
//! memory.

use crate::{GuestMemory, LoadError, MemKind};

/// Guest-physical address of the MP floating pointer; the configuration
/// table follows it directly.
pub const MPTABLE_ADDR: u64 = 0xF_0000;
/// End of the area the table may occupy (1 MiB).
const MPTABLE_LIMIT: u64 = 0x10_0000;
/// Most vCPUs described: APIC ids 0..=253 for CPUs, 254 for the I/O APIC
/// (0xFF is the broadcast id).
pub const MAX_CPUS: usize = 254;
/// Local APIC base address written into the table.
pub const LAPIC_ADDR: u32 = 0xFEE0_0000;
/// I/O APIC base address written into the table.
pub const IOAPIC_ADDR: u32 = 0xFEC0_0000;
/// I/O APIC version register value reported (82093AA-compatible).
pub const IOAPIC_VERSION: u8 = 0x11;
/// Local APIC version reported for every processor (integrated xAPIC).
pub const LAPIC_VERSION: u8 = 0x14;
/// CPU signature reported in processor entries: family 6, model 0,
/// stepping 0 (informational; the kernel uses CPUID).
const CPU_SIGNATURE: u32 = 0x600;
/// Feature flags reported in processor entries: FPU (bit 0), APIC (bit 9).
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

/// Size of the floating pointer structure.
pub const FLOATING_POINTER_LEN: usize = 16;
/// Size of the configuration table header.
pub const CONFIG_HEADER_LEN: usize = 44;
/// Size of a processor entry.
pub const PROCESSOR_ENTRY_LEN: usize = 20;
/// Size of every other base-table entry.
pub const SMALL_ENTRY_LEN: usize = 8;

/// Entry type codes.
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
/// Interrupt types.
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
/// Processor flags: enabled, bootstrap processor.
const CPU_ENABLED: u8 = 1 << 0;
const CPU_BSP: u8 = 1 << 1;
/// ISA IRQs with an I/O interrupt entry (2 is the cascade).
const ISA_IRQS: [u8; 15] = [0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// Bytes the MP table takes for `num_cpus` vCPUs (floating pointer
/// included).
pub fn mptable_len(num_cpus: usize) -> usize {
    FLOATING_POINTER_LEN
        + CONFIG_HEADER_LEN
        + num_cpus * PROCESSOR_ENTRY_LEN
        + SMALL_ENTRY_LEN * (2 + ISA_IRQS.len() + 2)
}

/// I/O APIC id the table assigns for `num_cpus` vCPUs: the first APIC id
/// after the processors'. The machine's I/O APIC must report this id.
pub fn ioapic_id(num_cpus: usize) -> u8 {
    u8::try_from(num_cpus).unwrap_or(u8::MAX)
}

/// Value that makes the bytes sum to zero mod 256.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, &b| sum.wrapping_add(b))
        .wrapping_neg()
}

/// Builds the table as it will sit at [`MPTABLE_ADDR`].
pub fn build_mptable(num_cpus: usize) -> Result<Vec<u8>, LoadError> {
    if num_cpus == 0 || num_cpus > MAX_CPUS {
        return Err(LoadError::BadCpuCount {
            count: num_cpus,
            max: MAX_CPUS,
        });
    }
    let ioapic = ioapic_id(num_cpus);
    let config_addr = MPTABLE_ADDR as u32 + FLOATING_POINTER_LEN as u32;

    // Entries.
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for id in 0..num_cpus {
        let flags = CPU_ENABLED | if id == 0 { CPU_BSP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, id as u8, LAPIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    for irq in ISA_IRQS {
        let pin = if irq == 0 { 2 } else { irq };
        entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, INT_TYPE_INT, 0, 0, 0, irq, ioapic, pin]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_EXTINT, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_NMI, 0, 0, 0, 0, 0xFF, 1]);
    count += 2;

    // Configuration table header.
    let table_len = CONFIG_HEADER_LEN + entries.len();
    let mut config = Vec::with_capacity(table_len);
    config.extend_from_slice(b"PCMP");
    config.extend_from_slice(&(table_len as u16).to_le_bytes());
    config.push(4); // spec revision 1.4
    config.push(0); // checksum, below
    config.extend_from_slice(b"HINDSGHT");
    config.extend_from_slice(b"HINDSIGHT   ");
    config.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    config.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    config.extend_from_slice(&count.to_le_bytes());
    config.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    config.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    config.push(0); // extended table checksum
    config.push(0); // reserved
    config.extend_from_slice(&entries);
    config[7] = checksum(&config);

    // Floating pointer.
    let mut out = Vec::with_capacity(FLOATING_POINTER_LEN + config.len());
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&config_addr.to_le_bytes());
    out.push(1); // length in 16-byte units
    out.push(4); // spec revision 1.4
    out.push(0); // checksum, below
    out.extend_from_slice(&[0; 5]); // feature bytes 1-5
    out[10] = checksum(&out);
    out.extend_from_slice(&config);
    Ok(out)
}

/// Writes the MP table for `num_cpus` vCPUs at [`MPTABLE_ADDR`]; returns its
/// length. Fails if the area is reported usable RAM.
pub fn write_mptable(mem: &mut dyn GuestMemory, num_cpus: usize) -> Result<usize, LoadError> {
    let table = build_mptable(num_cpus)?;
    let end = MPTABLE_ADDR + table.len() as u64;
    debug_assert!(end <= MPTABLE_LIMIT);
    let overlaps_usable = mem.ram_regions().iter().any(|r| {
        r.kind == MemKind::Usable && r.start < end && r.end().unwrap_or(u64::MAX) > MPTABLE_ADDR
    });
    if overlaps_usable {
        return Err(LoadError::TableInUsableRam {
            what: "MP table".into(),
            start: MPTABLE_ADDR,
            end,
        });
    }
    mem.write(MPTABLE_ADDR, &table)?;
    Ok(table.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemRegion;

    /// 1 MiB of memory, writable everywhere, reported like a PC.
    struct Low(Vec<u8>, Vec<MemRegion>);

    impl Low {
        fn pc() -> Self {
            Low(
                vec![0; 0x10_0000],
                vec![
                    MemRegion::usable(0, 0x9_FC00),
                    MemRegion::reserved(0x9_FC00, 0x6_0400),
                ],
            )
        }
        fn u8(&self, a: u64) -> u8 {
            self.0[a as usize]
        }
        fn u16(&self, a: u64) -> u16 {
            u16::from_le_bytes([self.u8(a), self.u8(a + 1)])
        }
        fn u32(&self, a: u64) -> u32 {
            u32::from_le_bytes([self.u8(a), self.u8(a + 1), self.u8(a + 2), self.u8(a + 3)])
        }
        fn sum(&self, a: u64, len: u64) -> u8 {
            (a..a + len).fold(0u8, |s, x| s.wrapping_add(self.u8(x)))
        }
    }

    impl GuestMemory for Low {
        fn ram_regions(&self) -> Vec<MemRegion> {
            self.1.clone()
        }
        fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), LoadError> {
            let end = gpa as usize + data.len();
            if end > self.0.len() {
                return Err(LoadError::OutsideRam {
                    gpa,
                    len: data.len() as u64,
                });
            }
            self.0[gpa as usize..end].copy_from_slice(data);
            Ok(())
        }
        fn fill(&mut self, gpa: u64, len: u64, byte: u8) -> Result<(), LoadError> {
            self.0[gpa as usize..(gpa + len) as usize].fill(byte);
            Ok(())
        }
    }

    /// Finds "_MP_" on a 16-byte boundary in the BIOS area, as Linux does.
    fn find_floating(mem: &Low) -> Option<u64> {
        (0xF_0000..0x10_0000u64)
            .step_by(16)
            .find(|&a| &mem.0[a as usize..a as usize + 4] == b"_MP_")
    }

    #[test]
    fn table_for_four_cpus() {
        let mut mem = Low::pc();
        let len = write_mptable(&mut mem, 4).unwrap();
        assert_eq!(len, 16 + 44 + 4 * 20 + 8 + 8 + 15 * 8 + 2 * 8);
        assert_eq!(len, mptable_len(4));

        let fp = find_floating(&mem).unwrap();
        assert_eq!(fp, 0xF_0000);
        assert_eq!(mem.u8(fp + 8), 1, "length in paragraphs");
        assert_eq!(mem.u8(fp + 9), 4, "spec revision");
        assert_eq!(mem.sum(fp, 16), 0, "floating pointer checksum");
        assert_eq!(mem.u8(fp + 11), 0, "feature byte 1: config table present");

        let ct = u64::from(mem.u32(fp + 4));
        assert_eq!(&mem.0[ct as usize..ct as usize + 4], b"PCMP");
        let ct_len = u64::from(mem.u16(ct + 4));
        assert_eq!(ct + ct_len, fp + len as u64, "table ends where write said");
        assert_eq!(mem.u8(ct + 6), 4);
        assert_eq!(mem.sum(ct, ct_len), 0, "configuration table checksum");
        assert_eq!(mem.u32(ct + 36), 0xFEE0_0000);
        assert_eq!(mem.u16(ct + 40), 0, "no extended table");
        let count = mem.u16(ct + 34);
        assert_eq!(count, 4 + 1 + 1 + 15 + 2);

        // Walk the entries by their types' sizes.
        let mut a = ct + 44;
        let mut cpus = Vec::new();
        let mut buses = Vec::new();
        let mut ioapics = Vec::new();
        let mut irqs = Vec::new();
        let mut lints = Vec::new();
        for _ in 0..count {
            match mem.u8(a) {
                0 => {
                    cpus.push((mem.u8(a + 1), mem.u8(a + 2), mem.u8(a + 3)));
                    a += 20;
                }
                1 => {
                    buses.push((
                        mem.u8(a + 1),
                        mem.0[a as usize + 2..a as usize + 8].to_vec(),
                    ));
                    a += 8;
                }
                2 => {
                    ioapics.push((mem.u8(a + 1), mem.u8(a + 2), mem.u8(a + 3), mem.u32(a + 4)));
                    a += 8;
                }
                3 => {
                    irqs.push((mem.u8(a + 1), mem.u8(a + 5), mem.u8(a + 6), mem.u8(a + 7)));
                    a += 8;
                }
                4 => {
                    lints.push((mem.u8(a + 1), mem.u8(a + 6), mem.u8(a + 7)));
                    a += 8;
                }
                t => panic!("unknown entry type {t} at {a:#x}"),
            }
        }
        assert_eq!(a, ct + ct_len, "entries fill the table exactly");
        assert_eq!(
            cpus,
            vec![(0, 0x14, 3), (1, 0x14, 1), (2, 0x14, 1), (3, 0x14, 1)]
        );
        assert_eq!(buses, vec![(0, b"ISA   ".to_vec())]);
        assert_eq!(ioapics, vec![(4, 0x11, 1, 0xFEC0_0000)]);
        assert_eq!(ioapic_id(4), 4);
        assert_eq!(irqs.len(), 15);
        assert_eq!(irqs[0], (0, 0, 4, 2), "IRQ0 -> pin 2");
        assert!(!irqs.iter().any(|i| i.1 == 2), "no entry for the cascade");
        for &(ty, src, apic, pin) in &irqs[1..] {
            assert_eq!((ty, apic), (0, 4));
            assert_eq!(src, pin, "ISA IRQ {src} identity-mapped");
        }
        assert_eq!(lints, vec![(3, 0, 0), (1, 0xFF, 1)]);
        // Nothing written past the table.
        assert_eq!(mem.u8(fp + len as u64), 0);
    }

    #[test]
    fn cpu_count_limits() {
        let mut mem = Low::pc();
        assert_eq!(
            write_mptable(&mut mem, 0).unwrap_err().to_string(),
            "cannot describe 0 vCPUs (must be 1 to 254)"
        );
        assert!(matches!(
            build_mptable(255),
            Err(LoadError::BadCpuCount { count: 255, .. })
        ));
        let one = build_mptable(1).unwrap();
        assert_eq!(one.len(), mptable_len(1));
        let max = build_mptable(MAX_CPUS).unwrap();
        assert_eq!(max.len(), mptable_len(MAX_CPUS));
        assert!(MPTABLE_ADDR + max.len() as u64 <= MPTABLE_LIMIT);
        // Processor 253 is the last; the I/O APIC takes 254.
        let last_cpu = FLOATING_POINTER_LEN + CONFIG_HEADER_LEN + 253 * PROCESSOR_ENTRY_LEN;
        assert_eq!(&max[last_cpu..last_cpu + 4], &[0, 253, 0x14, 1]);
        assert_eq!(max[last_cpu + 20 + 8 + 1], 254);
        // Checksums hold at the extremes too.
        for t in [&one, &max] {
            assert_eq!(t[..16].iter().fold(0u8, |s, &b| s.wrapping_add(b)), 0);
            assert_eq!(t[16..].iter().fold(0u8, |s, &b| s.wrapping_add(b)), 0);
            assert_eq!(u16::from_le_bytes([t[20], t[21]]) as usize, t.len() - 16);
        }
    }

    #[test]
    fn refuses_usable_ram() {
        let mut mem = Low::pc();
        mem.1 = vec![MemRegion::usable(0, 0x10_0000)];
        let err = write_mptable(&mut mem, 2).unwrap_err();
        assert_eq!(mptable_len(2), 0xFC);
        assert_eq!(
            err.to_string(),
            "MP table [0xf0000,0xf00fc) would lie in usable RAM, where the guest may overwrite it"
        );
        assert!(mem.0.iter().all(|&b| b == 0));
    }
}
