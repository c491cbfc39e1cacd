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
//! and set no bit). So a hash costs reading and hashing only the pages written since
//! the previous hash, plus one pass over the bitmap.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::codec;
use crate::memory::{is_zero, GuestRam};
use crate::snapshot::{MachineState, SnapshotError};

/// Domain separator at the start of every state hash.
const DOMAIN: &[u8] = b"hindsight machine state\0";

/// Cached SHA-256 digests of RAM pages, by host page index.
#[derive(Debug, Default)]
pub(crate) struct PageDigests {
    /// Bit per host page: the page's digest (or zeroness) below is current.
    known: Vec<u64>,
    /// Digests of the known non-zero pages (known pages absent here are
    /// zero). May hold stale entries of pages no longer known.
    digests: HashMap<u64, [u8; 32]>,
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
    /// (address, digest), computing the digests not cached.
    fn feed(&mut self, ram: &GuestRam, h: &mut Sha256) {
        let pages = ram.host_pages();
        let words = pages.div_ceil(64) as usize;
        self.known.resize(words, 0);
        let dirty = ram.dirty_words();
        for idx in 0..pages {
            let Some(gpa) = ram.index_gpa(idx) else {
                continue;
            };
            let (w, bit) = ((idx / 64) as usize, 1u64 << (idx % 64));
            let is_dirty = dirty.get(w).is_some_and(|d| d & bit != 0);
            let digest = if self.known[w] & bit != 0 && !is_dirty {
                self.digests.get(&idx).copied()
            } else {
                let page = ram.page_by_index(idx);
                let digest = (!is_zero(page)).then(|| Sha256::digest(page).into());
                match digest {
                    Some(d) => self.digests.insert(idx, d),
                    None => self.digests.remove(&idx),
                };
                // A page dirty in this epoch may change again without a
                // trace: its digest is good for this hash only.
                if !is_dirty {
                    self.known[w] |= bit;
                }
                digest
            };
            if let Some(d) = digest {
                h.update(gpa.to_le_bytes());
                h.update(d);
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
