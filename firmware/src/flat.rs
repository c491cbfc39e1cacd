//! Flat binaries: raw bytes copied to a fixed guest-physical address.
//!
//! For boot sectors, hand-assembled test programs and the like. There is no
//! header: the caller says where the image goes and how the CPU starts
//! (real mode at `CS:IP`, e.g. `0000:7C00` for a boot sector, or flat 32-bit
//! protected mode at an EIP). The only checks are that the image fits in
//! usable RAM and that the entry point lies inside it.

use crate::memory::RamMap;
use crate::{EntryMode, EntryState, GuestMemory, LoadError};

/// Where a BIOS loads a boot sector (and its real-mode entry `0000:7C00`).
pub const BOOT_SECTOR_ADDR: u64 = 0x7C00;

/// Copies `image` to guest-physical `load_addr` and returns the entry state
/// for `mode`, with all general registers zero (the caller may set any, e.g.
/// DL = 0x80 as a BIOS passes the boot drive, or ESP).
///
/// Fails if the image is empty, does not lie in usable RAM, or if the
/// entry address of `mode` (`cs * 16 + ip`, or `eip`) is not inside
/// `[load_addr, load_addr + image.len())`. Guest memory is untouched on
/// failure.
pub fn load_flat(
    mem: &mut dyn GuestMemory,
    image: &[u8],
    load_addr: u64,
    mode: EntryMode,
) -> Result<EntryState, LoadError> {
    if image.is_empty() {
        return Err(LoadError::EmptyImage {
            what: "flat image".into(),
        });
    }
    let len = image.len() as u64;
    let end = load_addr
        .checked_add(len)
        .ok_or_else(|| LoadError::AddressOverflow {
            what: "flat image".into(),
            start: load_addr,
            len,
            limit: u128::from(u64::MAX) + 1,
        })?;
    let entry = mode.entry_address();
    if entry < load_addr || entry >= end {
        return Err(LoadError::BadEntry {
            entry,
            problem: format!("lies outside the flat image [{load_addr:#x},{end:#x})"),
        });
    }
    RamMap::new(&mem.ram_regions()).check("flat image", load_addr, end)?;
    mem.write(load_addr, image)?;
    Ok(EntryState::new(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::VecMemory;

    #[test]
    fn boot_sector_in_real_mode() {
        let mut mem = VecMemory::pc(4 << 20);
        let mut sector = vec![0xF4; 512];
        sector[510] = 0x55;
        sector[511] = 0xAA;
        let mode = EntryMode::Real16 { cs: 0, ip: 0x7C00 };
        let st = load_flat(&mut mem, &sector, BOOT_SECTOR_ADDR, mode).unwrap();
        assert_eq!(st, EntryState::real16(0, 0x7C00));
        assert_eq!(mem.bytes(0x7C00, 512), &sector[..]);
    }

    #[test]
    fn protected_mode_program() {
        let mut mem = VecMemory::pc(4 << 20);
        let code = [0x90, 0x90, 0xF4];
        let mode = EntryMode::Protected32Flat { eip: 0x20_0002 };
        let st = load_flat(&mut mem, &code, 0x20_0000, mode).unwrap();
        assert_eq!(st.mode, mode);
        assert_eq!((st.eax, st.ebx, st.esp), (0, 0, 0));
        assert_eq!(mem.bytes(0x20_0000, 3), &code);
    }

    #[test]
    fn errors() {
        let mut mem = VecMemory::pc(4 << 20);
        let pm = |eip| EntryMode::Protected32Flat { eip };
        let err = load_flat(&mut mem, &[], 0x7C00, pm(0x7C00)).unwrap_err();
        assert_eq!(err.to_string(), "flat image is empty");

        let err = load_flat(&mut mem, &[0; 16], 0x7C00, pm(0x7C10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "entry point 0x7c10 lies outside the flat image [0x7c00,0x7c10)"
        );
        let real = EntryMode::Real16 { cs: 0x07C0, ip: 0 };
        assert!(load_flat(&mut mem, &[0; 16], 0x7C01, real).is_err());

        // Straddles the EBDA / VGA hole.
        let err = load_flat(&mut mem, &[0; 0x1000], 0x9_F000, pm(0x9_F000)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "flat image [0x9f000,0xa0000) does not fit in RAM"
        );
        // Beyond the top of RAM.
        let err = load_flat(&mut mem, &[0; 2], 0x3F_FFFF, pm(0x3F_FFFF)).unwrap_err();
        assert!(matches!(err, LoadError::DoesNotFitInRam { .. }), "{err}");
        // Wraps the 64-bit address space.
        let err = load_flat(&mut mem, &[0; 2], u64::MAX, pm(0)).unwrap_err();
        assert!(matches!(err, LoadError::AddressOverflow { .. }), "{err}");
        assert_eq!(mem.writes, 0);
    }
}
