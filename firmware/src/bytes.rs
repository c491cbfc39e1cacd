//! Bounds-checked little-endian reads from untrusted file bytes.
//!
//! Every accessor returns `None` instead of panicking when the field would
//! run past the end of the slice (or when the offset arithmetic overflows).

/// `len` bytes at `off`, or `None` if they are not all inside `data`.
pub(crate) fn slice(data: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(off).ok()?;
    let len = usize::try_from(len).ok()?;
    let end = start.checked_add(len)?;
    data.get(start..end)
}

fn array<const N: usize>(data: &[u8], off: u64) -> Option<[u8; N]> {
    slice(data, off, N as u64)?.try_into().ok()
}

/// Little-endian `u16` at `off`.
pub(crate) fn le_u16(data: &[u8], off: u64) -> Option<u16> {
    array(data, off).map(u16::from_le_bytes)
}

/// Little-endian `u32` at `off`.
pub(crate) fn le_u32(data: &[u8], off: u64) -> Option<u32> {
    array(data, off).map(u32::from_le_bytes)
}

/// Little-endian `u64` at `off`.
pub(crate) fn le_u64(data: &[u8], off: u64) -> Option<u64> {
    array(data, off).map(u64::from_le_bytes)
}

/// Rounds `value` up to a multiple of `align` (a power of two), or `None` on
/// overflow.
pub(crate) fn align_up(value: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    let mask = align - 1;
    value.checked_add(mask).map(|v| v & !mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounds_checked() {
        let d = [1u8, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(le_u16(&d, 0), Some(0x0201));
        assert_eq!(le_u32(&d, 4), Some(0x0807_0605));
        assert_eq!(le_u64(&d, 0), Some(0x0807_0605_0403_0201));
        assert_eq!(le_u32(&d, 5), None);
        assert_eq!(le_u64(&d, 1), None);
        assert_eq!(le_u16(&d, u64::MAX), None);
        assert_eq!(slice(&d, 8, 0), Some(&[][..]));
        assert_eq!(slice(&d, 9, 0), None);
        assert_eq!(slice(&d, 1, u64::MAX), None);
    }

    #[test]
    fn align_up_checks_overflow() {
        assert_eq!(align_up(0, 4096), Some(0));
        assert_eq!(align_up(1, 4096), Some(4096));
        assert_eq!(align_up(4096, 4096), Some(4096));
        assert_eq!(align_up(u64::MAX, 4096), None);
    }
}
