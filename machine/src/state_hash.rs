//! The state hash: one SHA-256 digest of a whole machine, for checking
//! that a replay follows its recording.
//!
//! ```text
//! H = SHA-256( "hindsight machine state\0"
//!              || u64 length || codec encoding of the MachineState
//!              || for each non-zero RAM page, ascending by address:
//!                     u64 guest-physical address || SHA-256(page) )
//! ```
//!
//! All integers are little-endian. Zero pages are left out, so a large,
//! mostly untouched guest hashes quickly; hashing each page separately lets
//! digests be cached. A page's cached digest stays valid while the page is
//! not written: the machine's digest cache forgets the pages of each dirty
//! epoch when the epoch ends, and never trusts a digest of a page already
//! dirty in the current epoch (later stores to it take the TLB fast path
//! and set no bit). Pages never written since power-on are zero and are
//! not even read. So a hash costs reading and hashing only the pages
//! written since the previous hash, plus one pass over the bitmaps.

use sha2::{Digest, Sha256};

use crate::codec;
use crate::memory::{is_zero, GuestRam};
use crate::snapshot::{MachineState, SnapshotError};

/// Domain separator at the start of every state hash.
const DOMAIN: &[u8] = b"hindsight machine state\0";

/// Digests of one group of 64 pages (one bitmap word).
type Group = [[u8; 32]; 64];

/// Cached SHA-256 digests of RAM pages, by host page index.
#[derive(Debug, Default)]
pub(crate) struct PageDigests {
    /// Bit per host page: the page's digest (or zeroness) below is current.
    known: Vec<u64>,
    /// Bit per host page: the page was non-zero when its digest was taken.
    nonzero: Vec<u64>,
    /// Digests by bitmap word, allocated for the words holding a non-zero
    /// page (so the cache grows with the RAM the guest wrote, not its size).
    digests: Vec<Option<Box<Group>>>,
}

impl PageDigests {
    /// Forgets the digests of the pages set in `dirty` (a dirty bitmap
    /// about to be cleared at the end of its epoch).
    pub(crate) fn forget(&mut self, dirty: &[u64]) {
        for (k, d) in self.known.iter_mut().zip(dirty) {
            *k &= !d;
        }
    }

    /// Feeds every non-zero page of `ram`, ascending, into `h` as
    /// (address, digest), computing the digests not cached. Pages never
    /// written are zero and are skipped without being read.
    fn feed(&mut self, ram: &GuestRam, h: &mut Sha256) {
        let pages = ram.host_pages();
        let words = pages.div_ceil(64) as usize;
        self.known.resize(words, 0);
        self.nonzero.resize(words, 0);
        self.digests.resize_with(words, || None);
        let dirty = ram.dirty_words();
        let written = ram.written_words();
        for w in 0..words {
            let d = dirty.get(w).copied().unwrap_or(0);
            let mut todo = d | written.get(w).copied().unwrap_or(0);
            while todo != 0 {
                let b = todo.trailing_zeros();
                todo &= todo - 1;
                let idx = w as u64 * 64 + u64::from(b);
                let Some(gpa) = ram.index_gpa(idx) else {
                    continue;
                };
                let bit = 1u64 << b;
                if self.known[w] & bit == 0 || d & bit != 0 {
                    let page = ram.page_by_index(idx);
                    if is_zero(page) {
                        self.nonzero[w] &= !bit;
                    } else {
                        let group = self.digests[w].get_or_insert_with(|| Box::new([[0; 32]; 64]));
                        group[b as usize] = Sha256::digest(page).into();
                        self.nonzero[w] |= bit;
                    }
                    // A page dirty in this epoch may change again without a
                    // trace: its digest is good for this hash only.
                    if d & bit == 0 {
                        self.known[w] |= bit;
                    }
                }
                if self.nonzero[w] & bit != 0 {
                    if let Some(group) = &self.digests[w] {
                        h.update(gpa.to_le_bytes());
                        h.update(group[b as usize]);
                    }
                }
            }
        }
    }
}

/// The state hash of `state` with the RAM `ram`, using and updating the
/// page digest cache `cache` (which must belong to that RAM).
pub(crate) fn state_hash(
    state: &MachineState,
    ram: &GuestRam,
    cache: &mut PageDigests,
) -> Result<[u8; 32], SnapshotError> {
    let encoded = codec::encode(state)?;
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update((encoded.len() as u64).to_le_bytes());
    h.update(&encoded);
    cache.feed(ram, &mut h);
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::tests::{machine_with, small};
    use crate::Machine;

    /// The hash with a fresh cache: every page read and hashed again.
    fn from_scratch(m: &Machine) -> [u8; 32] {
        state_hash(&m.save_state(), m.ram(), &mut PageDigests::default()).unwrap()
    }

    /// Cached digests, the never-written shortcut and the epochs give the
    /// hash a from-scratch computation gives, as pages are written,
    /// rewritten (in and across epochs) and zeroed again.
    #[test]
    fn cached_digests_give_the_hash_from_scratch() {
        let mut m = machine_with(small());
        let mut seen = vec![m.state_hash()];
        assert_eq!(m.state_hash(), from_scratch(&m));
        let steps: [(u64, u8, bool); 8] = [
            (0x1000, 1, false),
            (0x1000, 2, false), // rewritten in the same epoch
            (0x2_3000, 3, true),
            (0x1000, 4, false), // rewritten in a later epoch
            (0x40_0000, 5, true),
            (0x2_3000, 0, false), // zeroed: leaves the hash
            (0x2_3000, 0, true),
            (0x7f_f000, 6, false), // the last page
        ];
        for (gpa, byte, new_epoch) in steps {
            m.write_phys(gpa + 17, &[byte; 100]).unwrap();
            let h = m.state_hash();
            assert_eq!(h, from_scratch(&m), "after writing {byte} at {gpa:#x}");
            seen.push(h);
            if new_epoch {
                m.start_dirty_epoch();
                assert_eq!(m.state_hash(), h, "an epoch changes no page");
            }
        }
        // Zeroing the page at 0x23000 gave back the hash from before it was
        // first written plus the others: hashes differ step by step.
        seen.dedup();
        assert_eq!(
            seen.len(),
            8,
            "every write but the second zeroing changes the hash"
        );
    }
}
