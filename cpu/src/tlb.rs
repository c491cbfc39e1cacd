//! The per-vCPU software TLB and jump cache.
//!
//! Six direct-mapped arrays, one per (access kind × user/supervisor), map a
//! guest-linear page to the host address of its RAM page. An entry exists
//! only when the access is allowed without side effects: the page is RAM
//! (not MMIO), the permission check for that privilege passed, accessed and
//! (for writes) dirty bits are already set, and for writes the page holds no
//! translated code and the machine does not need to see the store. Execute
//! entries are used by the block lookup for their guest-physical address.
//!
//! Entries are 4 KiB even when the guest maps a large page; each remembers
//! the size of the page it came from so INVLPG drops every piece of it
//! (SDM vol. 3 4.10.4.1: INVLPG invalidates the whole page containing the
//! address, whatever its size).
//!
//! The jump cache maps (linear address, RIP, decode width, user/supervisor)
//! to a decoded block. It depends on the page tables, so every TLB flush
//! also empties it: in O(1), by bumping an epoch that is part of each
//! entry's key.

/// Entries per TLB array (a power of two).
pub const TLB_ENTRIES: usize = 256;
/// Entries in the jump cache (a power of two).
pub const JMP_ENTRIES: usize = 4096;

/// Kind of memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read = 0,
    Write = 1,
    Exec = 2,
}

/// One cached translation.
#[derive(Clone, Copy, Debug)]
pub struct TlbEntry {
    /// Page-aligned linear address, or [`TlbEntry::INVALID`].
    pub tag: u64,
    /// Host address of the page.
    pub host: usize,
    /// Page-aligned guest-physical address.
    pub gpa: u64,
    /// Global page (survives CR3 reloads when CR4.PGE is set).
    pub global: bool,
    /// log2 of the size of the guest page this entry is a piece of (12, 21, 22, 30).
    pub page_shift: u8,
}

impl TlbEntry {
    /// A tag no page-aligned address can equal.
    pub const INVALID: u64 = 1;
    const EMPTY: TlbEntry = TlbEntry {
        tag: Self::INVALID,
        host: 0,
        gpa: 0,
        global: false,
        page_shift: 12,
    };
}

/// One jump-cache slot.
#[derive(Clone, Copy, Debug, Default)]
pub struct JmpEntry {
    /// Linear address of the block start.
    pub lin: u64,
    /// RIP of the block start: the same linear address reached through a
    /// different CS base is a different block (its instructions carry IPs).
    pub rip: u64,
    pub id: u32,
    /// Block serial (guards against a reused block slot).
    pub serial: u32,
    /// [`Tlb::jmp_key`]: decode width, CPL 3 or not, flush epoch. 0 never matches.
    pub mode: u32,
}

/// Software TLB plus jump cache of one vCPU.
#[derive(Clone, Debug)]
pub struct Tlb {
    pub sets: Box<[[TlbEntry; TLB_ENTRIES]; 6]>,
    pub jmp: Box<[JmpEntry; JMP_ENTRIES]>,
    /// Code-cache generation this TLB's write entries are consistent with.
    pub code_gen: u64,
    /// Jump-cache epoch (bits 9.. of a jump key); bumped by every flush.
    jmp_epoch: u32,
    /// Some entry maps a piece of a large page (INVLPG must search).
    has_large: bool,
}

impl Default for Tlb {
    fn default() -> Tlb {
        Tlb {
            sets: Box::new([[TlbEntry::EMPTY; TLB_ENTRIES]; 6]),
            jmp: Box::new([JmpEntry::default(); JMP_ENTRIES]),
            code_gen: 0,
            jmp_epoch: 1,
            has_large: false,
        }
    }
}

/// Largest jump-cache epoch before the slots are wiped and it restarts.
const MAX_EPOCH: u32 = (u32::MAX >> 9) - 1;

impl Tlb {
    /// Index of the array for an access kind at a privilege.
    #[inline(always)]
    pub fn set_index(kind: Access, user: bool) -> usize {
        kind as usize * 2 + user as usize
    }

    /// Slot of a linear address within an array.
    #[inline(always)]
    pub fn slot(lin: u64) -> usize {
        (lin >> 12) as usize & (TLB_ENTRIES - 1)
    }

    /// Looks up a linear address; returns the host page address on a hit.
    #[inline(always)]
    pub fn lookup(&self, kind: Access, user: bool, lin: u64) -> Option<usize> {
        let e = &self.sets[Self::set_index(kind, user)][Self::slot(lin)];
        if e.tag == lin & !0xfff {
            Some(e.host)
        } else {
            None
        }
    }

    /// Looks up a linear address; returns the page-aligned guest-physical
    /// address on a hit.
    #[inline(always)]
    pub fn lookup_gpa(&self, kind: Access, user: bool, lin: u64) -> Option<u64> {
        let e = &self.sets[Self::set_index(kind, user)][Self::slot(lin)];
        if e.tag == lin & !0xfff {
            Some(e.gpa)
        } else {
            None
        }
    }

    /// Installs a translation of a 4 KiB page.
    #[inline]
    pub fn insert(&mut self, kind: Access, user: bool, lin: u64, host: usize, gpa: u64, global: bool) {
        self.insert_piece(kind, user, lin, host, gpa, global, 12);
    }

    /// Installs the translation of the 4 KiB piece at `lin` of a guest page
    /// of 2^`page_shift` bytes.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn insert_piece(
        &mut self,
        kind: Access,
        user: bool,
        lin: u64,
        host: usize,
        gpa: u64,
        global: bool,
        page_shift: u8,
    ) {
        self.has_large |= page_shift > 12;
        self.sets[Self::set_index(kind, user)][Self::slot(lin)] = TlbEntry {
            tag: lin & !0xfff,
            host,
            gpa: gpa & !0xfff,
            global,
            page_shift,
        };
    }

    /// The jump-cache key of a block entered with decode width `bitness` at
    /// CPL 3 (`user`) or not: execute permission differs between the two.
    #[inline(always)]
    pub fn jmp_key(&self, bitness: u32, user: bool) -> u32 {
        bitness | ((user as u32) << 8) | (self.jmp_epoch << 9)
    }

    /// Slot of a linear address in the jump cache.
    #[inline(always)]
    pub fn jmp_slot(lin: u64) -> usize {
        ((lin ^ (lin >> 12)) as usize) & (JMP_ENTRIES - 1)
    }

    /// Empties the jump cache.
    pub fn flush_jmp(&mut self) {
        self.jmp_epoch += 1;
        if self.jmp_epoch > MAX_EPOCH {
            // Keys of the old epochs would come round again: wipe for real.
            self.jmp.fill(JmpEntry::default());
            self.jmp_epoch = 1;
        }
    }

    /// Drops every translation and the jump cache.
    pub fn flush_all(&mut self) {
        for set in self.sets.iter_mut() {
            set.fill(TlbEntry::EMPTY);
        }
        self.has_large = false;
        self.flush_jmp();
    }

    /// Drops non-global translations (a CR3 reload with CR4.PGE set).
    pub fn flush_non_global(&mut self) {
        for set in self.sets.iter_mut() {
            for e in set.iter_mut() {
                if !e.global {
                    *e = TlbEntry::EMPTY;
                }
            }
        }
        self.flush_jmp();
    }

    /// Drops the translations of the page containing `lin` (INVLPG), global
    /// or not, and of every other 4 KiB piece of it when it is a large page.
    pub fn flush_page(&mut self, lin: u64) {
        let page = lin & !0xfff;
        if self.has_large {
            for set in self.sets.iter_mut() {
                for e in set.iter_mut() {
                    let m = !((1u64 << e.page_shift) - 1);
                    if e.tag & m == page & m {
                        *e = TlbEntry::EMPTY;
                    }
                }
            }
        } else {
            let slot = Self::slot(lin);
            for set in self.sets.iter_mut() {
                if set[slot].tag == page {
                    set[slot] = TlbEntry::EMPTY;
                }
            }
        }
        self.flush_jmp();
    }

    /// Drops every write translation (a page became code, or dirty tracking restarted).
    pub fn flush_writes(&mut self) {
        for user in [false, true] {
            self.sets[Self::set_index(Access::Write, user)].fill(TlbEntry::EMPTY);
        }
    }

    /// Drops write translations that point at guest-physical page `gpa`.
    pub fn flush_writes_to(&mut self, gpa: u64) {
        for user in [false, true] {
            for e in self.sets[Self::set_index(Access::Write, user)].iter_mut() {
                if e.tag != TlbEntry::INVALID && e.gpa == gpa & !0xfff {
                    *e = TlbEntry::EMPTY;
                }
            }
        }
    }
}
