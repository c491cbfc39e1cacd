//! Minimal ACPI tables describing the interrupt controllers: RSDP (ACPI 2.0+
//! form), RSDT, XSDT and MADT. No FADT and no DSDT: a kernel reads the MADT
//! early (CPUs, I/O APIC, IRQ0 override), then finds no DSDT to load and
//! turns its ACPI interpreter off (Linux prints "Unable to load the System
//! Description Tables"), keeping what it learnt from the MADT. Power
//! buttons, sleep states and the PM timer need a FADT and DSDT, which are
//! left for later.
//!
//! # Layout, from [`ACPI_ADDR`]
//! 0xE0000 lies inside the range 0xE0000–0xFFFFF that the kernel scans for
//! the RSDP on 16-byte boundaries.
//!
//! | offset | bytes | table                                                     |
//! |--------|-------|-----------------------------------------------------------|
//! | 0x00   | 36    | RSDP "RSD PTR ", revision 2, RSDT and XSDT addresses, both checksums |
//! | 0x30   | 40    | RSDT: header + one 32-bit pointer (MADT)                  |
//! | 0x60   | 44    | XSDT: header + one 64-bit pointer (MADT)                  |
//! | 0x90   | …     | MADT "APIC": LAPIC address 0xFEE00000, flags PCAT_COMPAT (8259s present); one Processor Local APIC entry per vCPU (UID = APIC id = index, enabled); I/O APIC (id = vCPU count as in the MP table, 0xFEC00000, GSI base 0); interrupt source override ISA IRQ 0 → GSI 2 (flags 0: conforms to bus); local APIC NMI on LINT1 of all processors (UID 0xFF) |
//!
//! The range must not be usable RAM; [`crate::linux::e820_map`] reports
//! 0xE0000–0xFFFFF reserved and [`write_acpi_tables`] refuses to write where
//! [`GuestMemory::ram_regions`] says the guest may use the memory. Linux
//! finds the RSDP by scanning, so boot_params' `acpi_rsdp_addr` can stay 0.

use crate::mptable::{ioapic_id, IOAPIC_ADDR, LAPIC_ADDR, MAX_CPUS};
use crate::{GuestMemory, LoadError, MemKind};

/// Guest-physical address of the RSDP; the other tables follow.
pub const ACPI_ADDR: u64 = 0xE_0000;
/// Offset of the RSDT from [`ACPI_ADDR`].
const RSDT_OFFSET: usize = 0x30;
/// Offset of the XSDT from [`ACPI_ADDR`].
const XSDT_OFFSET: usize = 0x60;
/// Offset of the MADT from [`ACPI_ADDR`].
const MADT_OFFSET: usize = 0x90;
/// One past the area the tables may occupy (the MP table starts here).
const ACPI_LIMIT: u64 = 0xF_0000;

/// RSDP length in its ACPI 2.0+ form.
pub const RSDP_LEN: usize = 36;
/// System description table header length.
pub const SDT_HEADER_LEN: usize = 36;
/// OEM ID in the RSDP and every header.
const OEM_ID: &[u8; 6] = b"HNDSGT";
/// OEM table ID in every header.
const OEM_TABLE_ID: &[u8; 8] = b"HINDSGHT";
/// Creator ID in every header.
const CREATOR_ID: &[u8; 4] = b"HSGT";

/// MADT structure types.
const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;
const MADT_INT_SRC_OVERRIDE: u8 = 2;
const MADT_LOCAL_APIC_NMI: u8 = 4;
/// MADT flags bit 0: the PC's dual 8259 PICs are present.
const MADT_PCAT_COMPAT: u32 = 1;
/// Processor Local APIC flags bit 0: enabled.
const LAPIC_ENABLED: u32 = 1;

/// Value that makes the bytes sum to zero mod 256.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, &b| sum.wrapping_add(b))
        .wrapping_neg()
}

/// A table: header with `signature` and `revision`, then `body`, with its
/// length and checksum filled in.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let len = (SDT_HEADER_LEN + body.len()) as u32;
    let mut t = Vec::with_capacity(len as usize);
    t.extend_from_slice(signature);
    t.extend_from_slice(&len.to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(CREATOR_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

/// The MADT for `num_cpus` vCPUs.
fn madt(num_cpus: usize) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    b.extend_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    for id in 0..num_cpus {
        b.extend_from_slice(&[MADT_LOCAL_APIC, 8, id as u8, id as u8]);
        b.extend_from_slice(&LAPIC_ENABLED.to_le_bytes());
    }
    b.extend_from_slice(&[MADT_IO_APIC, 12, ioapic_id(num_cpus), 0]);
    b.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // GSI base
    b.extend_from_slice(&[MADT_INT_SRC_OVERRIDE, 10, 0, 0]); // ISA bus, IRQ 0
    b.extend_from_slice(&2u32.to_le_bytes()); // GSI 2
    b.extend_from_slice(&0u16.to_le_bytes()); // conforms to bus
    b.extend_from_slice(&[MADT_LOCAL_APIC_NMI, 6, 0xFF, 0, 0, 1]); // all CPUs, LINT1
    sdt(b"APIC", 3, &b)
}

/// Builds the RSDP, RSDT, XSDT and MADT as they will sit at [`ACPI_ADDR`].
pub fn build_acpi_tables(num_cpus: usize) -> Result<Vec<u8>, LoadError> {
    if num_cpus == 0 || num_cpus > MAX_CPUS {
        return Err(LoadError::BadCpuCount {
            count: num_cpus,
            max: MAX_CPUS,
        });
    }
    let madt_addr = ACPI_ADDR + MADT_OFFSET as u64;
    let rsdt = sdt(b"RSDT", 1, &(madt_addr as u32).to_le_bytes());
    let xsdt = sdt(b"XSDT", 1, &madt_addr.to_le_bytes());
    let madt = madt(num_cpus);

    let mut rsdp = Vec::with_capacity(RSDP_LEN);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0); // checksum of the first 20 bytes, below
    rsdp.extend_from_slice(OEM_ID);
    rsdp.push(2); // revision: ACPI 2.0+ (has the XSDT)
    rsdp.extend_from_slice(&((ACPI_ADDR as u32) + RSDT_OFFSET as u32).to_le_bytes());
    rsdp.extend_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    rsdp.extend_from_slice(&(ACPI_ADDR + XSDT_OFFSET as u64).to_le_bytes());
    rsdp.push(0); // extended checksum, below
    rsdp.extend_from_slice(&[0; 3]);
    rsdp[8] = checksum(&rsdp[..20]);
    rsdp[32] = checksum(&rsdp);

    let mut out = vec![0u8; MADT_OFFSET + madt.len()];
    out[..RSDP_LEN].copy_from_slice(&rsdp);
    out[RSDT_OFFSET..RSDT_OFFSET + rsdt.len()].copy_from_slice(&rsdt);
    out[XSDT_OFFSET..XSDT_OFFSET + xsdt.len()].copy_from_slice(&xsdt);
    out[MADT_OFFSET..].copy_from_slice(&madt);
    Ok(out)
}

/// Writes the ACPI tables for `num_cpus` vCPUs at [`ACPI_ADDR`]; returns the
/// RSDP address. Fails if the area is reported usable RAM.
pub fn write_acpi_tables(mem: &mut dyn GuestMemory, num_cpus: usize) -> Result<u64, LoadError> {
    let tables = build_acpi_tables(num_cpus)?;
    let end = ACPI_ADDR + tables.len() as u64;
    debug_assert!(end <= ACPI_LIMIT);
    let overlaps_usable = mem.ram_regions().iter().any(|r| {
        r.kind == MemKind::Usable && r.start < end && r.end().unwrap_or(u64::MAX) > ACPI_ADDR
    });
    if overlaps_usable {
        return Err(LoadError::TableInUsableRam {
            what: "ACPI tables".into(),
            start: ACPI_ADDR,
            end,
        });
    }
    mem.write(ACPI_ADDR, &tables)?;
    Ok(ACPI_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemRegion;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b))
    }

    fn u32_at(t: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(t[off..off + 4].try_into().unwrap())
    }

    fn u64_at(t: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(t[off..off + 8].try_into().unwrap())
    }

    /// Memory from 0xE0000 to 1 MiB, reserved.
    struct Bios(Vec<u8>, Vec<MemRegion>);

    impl GuestMemory for Bios {
        fn ram_regions(&self) -> Vec<MemRegion> {
            self.1.clone()
        }
        fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), LoadError> {
            let off = (gpa - ACPI_ADDR) as usize;
            self.0[off..off + data.len()].copy_from_slice(data);
            Ok(())
        }
        fn fill(&mut self, _: u64, _: u64, _: u8) -> Result<(), LoadError> {
            unreachable!()
        }
    }

    /// The table a physical address points at, checked: signature, length
    /// inside the area, checksum.
    fn table<'a>(area: &'a [u8], addr: u64, sig: &[u8; 4]) -> &'a [u8] {
        let off = (addr - ACPI_ADDR) as usize;
        assert_eq!(&area[off..off + 4], sig);
        let len = u32_at(area, off + 4) as usize;
        assert!(len >= SDT_HEADER_LEN);
        let t = &area[off..off + len];
        assert_eq!(sum(t), 0, "{} checksum", String::from_utf8_lossy(sig));
        assert_eq!(&t[10..16], b"HNDSGT");
        t
    }

    #[test]
    fn tables_for_two_cpus() {
        let mut mem = Bios(
            vec![0; 0x2_0000],
            vec![
                MemRegion::usable(0, 0x9_FC00),
                MemRegion::reserved(0x9_FC00, 0x6_0400),
            ],
        );
        let rsdp_addr = write_acpi_tables(&mut mem, 2).unwrap();
        assert_eq!(rsdp_addr, 0xE_0000);
        let area = &mem.0;

        // Found the way Linux finds it: 16-byte aligned scan of 0xE0000-0xFFFFF.
        let found = (0..0x2_0000)
            .step_by(16)
            .find(|&o| &area[o..o + 8] == b"RSD PTR ")
            .unwrap();
        assert_eq!(found, 0);
        let rsdp = &area[..36];
        assert_eq!(sum(&rsdp[..20]), 0, "ACPI 1.0 checksum");
        assert_eq!(sum(rsdp), 0, "extended checksum");
        assert_eq!(rsdp[15], 2, "revision");
        assert_eq!(u32_at(rsdp, 20), 36, "length");

        let rsdt = table(area, u32_at(rsdp, 16).into(), b"RSDT");
        assert_eq!(rsdt.len(), 36 + 4);
        let xsdt = table(area, u64_at(rsdp, 24), b"XSDT");
        assert_eq!(xsdt.len(), 36 + 8);
        let madt_addr = u64_at(xsdt, 36);
        assert_eq!(u64::from(u32_at(rsdt, 36)), madt_addr);
        let madt = table(area, madt_addr, b"APIC");
        assert_eq!(madt.len(), 36 + 8 + 2 * 8 + 12 + 10 + 6);
        assert_eq!(u32_at(madt, 36), 0xFEE0_0000);
        assert_eq!(u32_at(madt, 40), 1, "PCAT_COMPAT");

        // Walk the interrupt controller structures by their length bytes.
        let mut off = 44;
        let mut seen = Vec::new();
        while off < madt.len() {
            let (ty, len) = (madt[off], madt[off + 1] as usize);
            assert!(len >= 2 && off + len <= madt.len());
            seen.push((ty, madt[off + 2..off + len].to_vec()));
            off += len;
        }
        assert_eq!(off, madt.len(), "structures fill the table exactly");
        assert_eq!(
            seen,
            vec![
                (0, vec![0, 0, 1, 0, 0, 0]),
                (0, vec![1, 1, 1, 0, 0, 0]),
                (1, vec![2, 0, 0x00, 0x00, 0xC0, 0xFE, 0, 0, 0, 0]),
                (2, vec![0, 0, 2, 0, 0, 0, 0, 0]),
                (4, vec![0xFF, 0, 0, 1]),
            ]
        );
        // Nothing past the MADT.
        let end = (madt_addr - ACPI_ADDR) as usize + madt.len();
        assert!(area[end..].iter().all(|&b| b == 0));
        assert!(end <= (ACPI_LIMIT - ACPI_ADDR) as usize);
    }

    #[test]
    fn limits() {
        assert!(matches!(
            build_acpi_tables(0),
            Err(LoadError::BadCpuCount { count: 0, max: 254 })
        ));
        assert!(build_acpi_tables(255).is_err());
        let t = build_acpi_tables(MAX_CPUS).unwrap();
        assert!(ACPI_ADDR + t.len() as u64 <= ACPI_LIMIT);
        let madt = &t[MADT_OFFSET..];
        assert_eq!(sum(madt), 0);
        assert_eq!(u32_at(madt, 4) as usize, madt.len());

        let mut mem = Bios(vec![0; 0x2_0000], vec![MemRegion::usable(0, 0x10_0000)]);
        let err = write_acpi_tables(&mut mem, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ACPI tables [0xe0000,0xe00e0) would lie in usable RAM, where the guest may \
             overwrite it"
        );
        assert!(mem.0.iter().all(|&b| b == 0));
    }
}
