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
//! Flushes touch only the entries filled since the last full flush (a short
//! list of slot indices), so the frequent CR3 reloads and INVLPGs of a
//! guest kernel cost little; past a few hundred entries a flush falls back
//! to clearing everything.
//!
//! The jump cache maps (linear address, RIP, decode width, user/supervisor)
//! to a decoded block. It depends on the page tables, so every TLB flush
//! also empties it: in O(1), by bumping an epoch that is part of each
//! entry's key.

/// Entries per TLB array (a power of two).
pub const TLB_ENTRIES: usize = 256;
/// Entries in the jump cache (a power of two).
pub const JMP_ENTRIES: usize = 4096;

/// Size in bytes of a [`TlbEntry`] (the stride of the arrays behind
/// [`Tlb::SETS_PTR_OFFSET`]).
pub const TLB_ENTRY_SIZE: usize = std::mem::size_of::<TlbEntry>();

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
    /// [`Tlb::jmp_key`]: decode width, CPL 3 or not. 0 never matches.
    pub mode: u32,
    /// Page-aligned guest-physical address the block was decoded from:
    /// the slot holds only while the execute entry of `lin` still maps
    /// there (no epoch: a TLB flush need not empty the jump cache, a
    /// remapped page simply stops matching).
    pub gpa: u64,
}

/// Software TLB plus jump cache of one vCPU.
#[derive(Clone, Debug)]
pub struct Tlb {
    /// The six arrays; written only through [`Tlb::insert_piece`] (which
    /// keeps the list of used slots that flushes rely on).
    sets: Box<[[TlbEntry; TLB_ENTRIES]; 6]>,
    pub jmp: Box<[JmpEntry; JMP_ENTRIES]>,
    /// Code-cache generation this TLB's write entries are consistent with.
    pub code_gen: u64,
    /// Counts every change that can make the block lookup find something
    /// else or walk the page tables where it did not: execute entries
    /// dropped (by a flush) or replaced by another page (a JIT's block
    /// links hold only while it stays the same). Flushes that drop only
    /// data translations and jump-cache fills are not counted: a slot only
    /// caches what the slow path finds from the execute entry and the code
    /// cache.
    pub changes: u64,
    /// Some entry maps a piece of a large page (INVLPG must search).
    has_large: bool,
    /// Indices (set × TLB_ENTRIES + slot) of the entries filled since the
    /// last full flush, possibly with repeats and since-emptied ones: every
    /// valid entry is listed unless `used_overflow`.
    used: Vec<u16>,
    used_overflow: bool,
}

/// Entries tracked for cheap flushes before falling back to full clears.
const USED_MAX: usize = 384;

impl Default for Tlb {
    fn default() -> Tlb {
        Tlb {
            sets: Box::new([[TlbEntry::EMPTY; TLB_ENTRIES]; 6]),
            jmp: Box::new([JmpEntry::default(); JMP_ENTRIES]),
            code_gen: 0,
            changes: 0,
            has_large: false,
            used: Vec::with_capacity(USED_MAX),
            used_overflow: false,
        }
    }
}

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
    pub fn insert(
        &mut self,
        kind: Access,
        user: bool,
        lin: u64,
        host: usize,
        gpa: u64,
        global: bool,
    ) {
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
        let set = Self::set_index(kind, user);
        let slot = Self::slot(lin);
        self.has_large |= page_shift > 12;
        let e = &mut self.sets[set][slot];
        let was_empty = e.tag == TlbEntry::INVALID;
        if kind == Access::Exec && !was_empty {
            self.changes += 1;
        }
        *e = TlbEntry {
            tag: lin & !0xfff,
            host,
            gpa: gpa & !0xfff,
            global,
            page_shift,
        };
        if was_empty && !self.used_overflow {
            if self.used.len() == USED_MAX {
                // Drop stale and repeated indices; if the list stays long,
                // give up tracking until flushes find few valid entries.
                self.compact_used();
                if self.used.len() > USED_MAX / 2 {
                    self.used_overflow = true;
                    return;
                }
            }
            self.used.push((set * TLB_ENTRIES + slot) as u16);
        }
    }

    /// Removes from the used list the entries since emptied, and repeats.
    fn compact_used(&mut self) {
        let mut seen = [0u64; 6 * TLB_ENTRIES / 64];
        let sets = &self.sets;
        self.used.retain(|&i| {
            let i = i as usize;
            let (w, b) = (i / 64, i % 64);
            if sets[i / TLB_ENTRIES][i % TLB_ENTRIES].tag == TlbEntry::INVALID
                || seen[w] >> b & 1 != 0
            {
                return false;
            }
            seen[w] |= 1 << b;
            true
        });
    }

    /// The entries, for inspection (e.g. by code that inlines lookups).
    pub fn sets(&self) -> &[[TlbEntry; TLB_ENTRIES]; 6] {
        &self.sets
    }

    /// Byte offset within `Tlb` of the pointer to the entries, for
    /// generated code that inlines [`Tlb::lookup`]: the pointer-sized
    /// value at this offset is the address of the six arrays, laid out
    /// contiguously (array [`Tlb::set_index`] `(kind, user)` first-to-last,
    /// [`TLB_ENTRIES`] entries of [`TLB_ENTRY_SIZE`] bytes each, at
    /// [`Tlb::slot`]), the address [`Tlb::sets`] returns. The arrays are
    /// one heap allocation that lives as long as the `Tlb` (it is replaced
    /// only when the whole `Tlb` is), so code must reload the pointer after
    /// anything that may replace the vCPU state. A hit is
    /// `tag == lin & !0xfff` (an empty entry's tag is never page-aligned),
    /// the host address of byte `lin` then `host + (lin & 0xfff)`, for
    /// accesses that stay within the page. Fields are at
    /// `offset_of!(TlbEntry, tag)` and `offset_of!(TlbEntry, host)`.
    pub const SETS_PTR_OFFSET: usize = std::mem::offset_of!(Tlb, sets);

    /// Empties, among the entries that may be valid, those `drop` selects,
    /// and leaves the used list exact (only valid entries, no repeats).
    /// Returns whether an execute translation was among them.
    fn flush_where(&mut self, drop: impl Fn(usize, &TlbEntry) -> bool) -> bool {
        let mut exec_dropped = false;
        if self.used_overflow {
            // A full scan; it also finds out whether tracking can resume.
            self.used.clear();
            let mut fits = true;
            for (set, entries) in self.sets.iter_mut().enumerate() {
                for (slot, e) in entries.iter_mut().enumerate() {
                    if e.tag == TlbEntry::INVALID {
                        continue;
                    }
                    if drop(set, e) {
                        *e = TlbEntry::EMPTY;
                        exec_dropped |= Self::is_exec_set(set);
                    } else if fits {
                        if self.used.len() < USED_MAX / 2 {
                            self.used.push((set * TLB_ENTRIES + slot) as u16);
                        } else {
                            fits = false;
                        }
                    }
                }
            }
            self.used_overflow = !fits;
        } else {
            for &i in &self.used {
                let (set, slot) = (i as usize / TLB_ENTRIES, i as usize % TLB_ENTRIES);
                let e = &mut self.sets[set][slot];
                if e.tag != TlbEntry::INVALID && drop(set, e) {
                    *e = TlbEntry::EMPTY;
                    exec_dropped |= Self::is_exec_set(set);
                }
            }
            self.compact_used();
        }
        exec_dropped
    }

    /// Forgets the used list after a flush that emptied everything.
    fn reset_used(&mut self) {
        self.used.clear();
        self.used_overflow = false;
        self.has_large = false;
    }

    /// The jump-cache key of a block entered with decode width `bitness` at
    /// CPL 3 (`user`) or not: execute permission differs between the two.
    #[inline(always)]
    pub fn jmp_key(bitness: u32, user: bool) -> u32 {
        bitness | ((user as u32) << 8)
    }

    /// Slot of a linear address in the jump cache.
    #[inline(always)]
    pub fn jmp_slot(lin: u64) -> usize {
        ((lin ^ (lin >> 12)) as usize) & (JMP_ENTRIES - 1)
    }

    /// Drops every translation.
    pub fn flush_all(&mut self) {
        if self.used_overflow {
            for set in self.sets.iter_mut() {
                set.fill(TlbEntry::EMPTY);
            }
        } else {
            for &i in &self.used {
                self.sets[i as usize / TLB_ENTRIES][i as usize % TLB_ENTRIES] = TlbEntry::EMPTY;
            }
        }
        self.reset_used();
        self.changes += 1;
    }

    /// Drops non-global translations (a CR3 reload with CR4.PGE set).
    pub fn flush_non_global(&mut self) {
        if self.flush_where(|_, e| !e.global) {
            self.changes += 1;
        }
    }

    /// Drops the translations of the page containing `lin` (INVLPG), global
    /// or not, and of every other 4 KiB piece of it when it is a large page.
    pub fn flush_page(&mut self, lin: u64) {
        let page = lin & !0xfff;
        let exec_dropped = if self.has_large {
            self.flush_where(|_, e| {
                let m = !((1u64 << e.page_shift) - 1);
                e.tag & m == page & m
            })
        } else {
            let slot = Self::slot(lin);
            let mut exec_dropped = false;
            for (i, set) in self.sets.iter_mut().enumerate() {
                if set[slot].tag == page {
                    set[slot] = TlbEntry::EMPTY;
                    exec_dropped |= Self::is_exec_set(i);
                }
            }
            exec_dropped
        };
        if exec_dropped {
            self.changes += 1;
        }
    }

    /// Whether array `set` holds execute translations.
    fn is_exec_set(set: usize) -> bool {
        set / 2 == Self::set_index(Access::Exec, false) / 2
    }

    /// Drops every write translation (a page became code, or dirty tracking restarted).
    pub fn flush_writes(&mut self) {
        let w = Self::set_index(Access::Write, false);
        self.flush_where(|set, _| set == w || set == w + 1);
    }

    /// Drops write translations that point at guest-physical page `gpa`.
    pub fn flush_writes_to(&mut self, gpa: u64) {
        let w = Self::set_index(Access::Write, false);
        self.flush_where(|set, e| (set == w || set == w + 1) && e.gpa == gpa & !0xfff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [Access; 3] = [Access::Read, Access::Write, Access::Exec];

    fn fill(t: &mut Tlb, lin: u64, global: bool, shift: u8) {
        for k in KINDS {
            for u in [false, true] {
                t.insert_piece(
                    k,
                    u,
                    lin,
                    0x1000_0000 + (lin as usize & !0xfff),
                    lin & 0xf_ffff,
                    global,
                    shift,
                );
            }
        }
    }

    fn present(t: &Tlb, lin: u64) -> usize {
        KINDS
            .iter()
            .flat_map(|&k| [false, true].map(move |u| (k, u)))
            .filter(|&(k, u)| t.lookup(k, u, lin).is_some())
            .count()
    }

    #[test]
    fn lookup_matches_page_kind_and_privilege() {
        let mut t = Tlb::default();
        assert_eq!(
            t.lookup(Access::Read, false, 0),
            None,
            "an empty TLB never hits, not even page 0"
        );
        t.insert(Access::Read, true, 0x7fff_1234, 0xabc000, 0x5000, false);
        assert_eq!(t.lookup(Access::Read, true, 0x7fff_1ff8), Some(0xabc000));
        assert_eq!(t.lookup_gpa(Access::Read, true, 0x7fff_1000), Some(0x5000));
        assert_eq!(
            t.lookup(Access::Read, false, 0x7fff_1000),
            None,
            "supervisor set is separate"
        );
        assert_eq!(t.lookup(Access::Write, true, 0x7fff_1000), None);
        // Same slot, other page.
        assert_eq!(
            t.lookup(
                Access::Read,
                true,
                0x7fff_1000 + (TLB_ENTRIES as u64) * 0x1000
            ),
            None
        );
        // 64-bit tags.
        t.insert(
            Access::Exec,
            false,
            0xffff_8000_0000_2000,
            0x1000,
            0x2000,
            false,
        );
        assert_eq!(t.lookup(Access::Exec, false, 0x0000_8000_0000_2000), None);
        assert!(t
            .lookup(Access::Exec, false, 0xffff_8000_0000_2fff)
            .is_some());
    }

    #[test]
    fn raw_layout_for_generated_code() {
        let mut t = Tlb::default();
        t.insert(Access::Write, true, 0x7000_5123, 0xdead_b000, 0x9000, false);
        // SAFETY: the offset is that of the `Box` field, a thin non-null
        // pointer to the arrays, read within the live `t`.
        let base = unsafe {
            ((&t as *const Tlb as *const u8).add(Tlb::SETS_PTR_OFFSET) as *const usize)
                .read_unaligned()
        };
        assert_eq!(base, t.sets().as_ptr() as usize);
        let set = Tlb::set_index(Access::Write, true);
        let at = base + (set * TLB_ENTRIES + Tlb::slot(0x7000_5123)) * TLB_ENTRY_SIZE;
        // SAFETY: `at` is the address of an entry inside the arrays.
        let (tag, host) = unsafe {
            let p = at as *const u8;
            (
                (p.add(std::mem::offset_of!(TlbEntry, tag)) as *const u64).read(),
                (p.add(std::mem::offset_of!(TlbEntry, host)) as *const usize).read(),
            )
        };
        assert_eq!(tag, 0x7000_5000);
        assert_eq!(host, 0xdead_b000);
        assert_eq!(
            TLB_ENTRY_SIZE * TLB_ENTRIES * 6,
            std::mem::size_of_val(t.sets())
        );
        assert_eq!(Tlb::jmp_key(64, true), 64 | 1 << 8);
    }

    #[test]
    fn flush_page_drops_exactly_that_page() {
        let mut t = Tlb::default();
        for p in [
            0x10_0000u64,
            0x10_1000,
            0x10_0000 + 0x1000 * TLB_ENTRIES as u64,
        ] {
            fill(&mut t, p, p == 0x10_0000, 12);
        }
        t.flush_page(0x10_0abc);
        assert_eq!(
            present(&t, 0x10_0000),
            0,
            "all kinds and privileges, global or not"
        );
        assert_eq!(present(&t, 0x10_1000), 6);
        // A page sharing the slot was evicted by the later fill, not by the flush.
        fill(&mut t, 0x10_0000 + 0x1000 * TLB_ENTRIES as u64, false, 12);
        t.flush_page(0x10_0000);
        assert_eq!(
            present(&t, 0x10_0000 + 0x1000 * TLB_ENTRIES as u64),
            6,
            "same slot, other page: kept"
        );
    }

    #[test]
    fn flush_page_of_a_large_page_drops_every_piece() {
        let mut t = Tlb::default();
        // Pieces of a 2 MiB page, and a 4 KiB page just above it (distinct slots).
        fill(&mut t, 0x20_0000, false, 21);
        fill(&mut t, 0x3f_f000, false, 21);
        fill(&mut t, 0x41_0000, false, 12);
        t.flush_page(0x25_5000);
        assert_eq!(present(&t, 0x20_0000), 0);
        assert_eq!(present(&t, 0x3f_f000), 0);
        assert_eq!(present(&t, 0x41_0000), 6);
        // 4 MiB pages (32-bit paging) and 1 GiB pages.
        fill(&mut t, 0x80_0000, false, 22);
        fill(&mut t, 0xbf_f000, false, 22);
        fill(&mut t, 0x4000_5000, true, 30);
        fill(&mut t, 0x7fff_e000, true, 30);
        t.flush_page(0xb0_0000);
        assert_eq!(present(&t, 0x80_0000) + present(&t, 0xbf_f000), 0);
        assert_eq!(present(&t, 0x4000_5000), 6);
        t.flush_page(0x4000_0000);
        assert_eq!(
            present(&t, 0x4000_5000) + present(&t, 0x7fff_e000),
            0,
            "global large pages too"
        );
        assert_eq!(present(&t, 0x41_0000), 6);
    }

    #[test]
    fn flush_non_global_keeps_global_entries() {
        let mut t = Tlb::default();
        fill(&mut t, 0x1000, true, 12);
        fill(&mut t, 0x2000, false, 12);
        t.flush_non_global();
        assert_eq!(present(&t, 0x1000), 6);
        assert_eq!(present(&t, 0x2000), 0);
        t.flush_all();
        assert_eq!(present(&t, 0x1000), 0);
    }

    #[test]
    fn write_flushes() {
        let mut t = Tlb::default();
        fill(&mut t, 0x1000, false, 12);
        fill(&mut t, 0x2000, false, 12);
        t.flush_writes_to(0x2000);
        assert!(t.lookup(Access::Write, false, 0x1000).is_some());
        assert!(t.lookup(Access::Write, true, 0x2000).is_none());
        assert!(t.lookup(Access::Read, true, 0x2000).is_some());
        t.flush_writes();
        assert_eq!(present(&t, 0x1000), 4);
    }

    #[test]
    fn jump_cache_keys_differ_by_width_and_privilege() {
        let k = Tlb::jmp_key(32, false);
        assert_ne!(k, Tlb::jmp_key(32, true));
        assert_ne!(k, Tlb::jmp_key(16, false));
        assert_ne!(k, JmpEntry::default().mode, "an empty slot never matches");
    }

    /// `changes` counts exactly the flushes that drop an execute entry (and
    /// execute entries replaced by another page), never data-only ones.
    #[test]
    fn changes_count_execute_translations_only() {
        let mut t = Tlb::default();
        t.insert(Access::Read, false, 0x1000, 0x10_0000, 0x5000, false);
        t.insert(Access::Exec, false, 0x2000, 0x20_0000, 0x6000, true);
        let c = t.changes;
        t.flush_page(0x1000);
        assert_eq!(t.changes, c, "a data page");
        t.flush_non_global();
        assert_eq!(t.changes, c, "only a global execute entry is left");
        t.flush_page(0x2000);
        assert_eq!(t.changes, c + 1, "INVLPG of a code page");
        t.insert(Access::Exec, true, 0x3000, 0x30_0000, 0x7000, false);
        t.flush_non_global();
        assert_eq!(t.changes, c + 2, "CR3 reload dropping user code");
        t.insert(Access::Exec, false, 0x4000, 0x40_0000, 0x8000, false);
        t.insert(
            Access::Exec,
            false,
            0x4000 + 0x1000 * TLB_ENTRIES as u64,
            0x50_0000,
            0x9000,
            false,
        );
        assert_eq!(t.changes, c + 3, "an execute entry replaced");
        t.flush_all();
        assert_eq!(t.changes, c + 4);
    }

    /// A reference model: plain per-slot entries with the same flush rules,
    /// driven by a pseudo-random sequence against the real TLB (exercising
    /// both the used-list and the overflow paths).
    #[test]
    fn flushes_match_a_reference_model() {
        let mut t = Tlb::default();
        let mut model: Vec<Option<TlbEntry>> = vec![None; 6 * TLB_ENTRIES];
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let kinds = [Access::Read, Access::Write, Access::Exec];
        let mut overflowed = false;
        for step in 0..200_000 {
            let r = rnd();
            overflowed |= t.used_overflow;
            match r % 100 {
                // Rare full flushes, so the used list overflows at times.
                0 if rnd() % 8 == 0 => {
                    t.flush_all();
                    model.iter_mut().for_each(|e| *e = None);
                }
                1 => {
                    t.flush_non_global();
                    model.iter_mut().for_each(|e| {
                        if matches!(e, Some(x) if !x.global) {
                            *e = None
                        }
                    });
                }
                2..=4 => {
                    let lin = (rnd() % 0x400) << 12;
                    t.flush_page(lin);
                    model.iter_mut().for_each(|e| {
                        if let Some(x) = e {
                            let m = !((1u64 << x.page_shift) - 1);
                            if x.tag & m == lin & m {
                                *e = None;
                            }
                        }
                    });
                }
                5 => {
                    t.flush_writes();
                    for e in &mut model[2 * TLB_ENTRIES..4 * TLB_ENTRIES] {
                        *e = None;
                    }
                }
                6 => {
                    let gpa = (rnd() % 0x40) << 12;
                    t.flush_writes_to(gpa);
                    for e in &mut model[2 * TLB_ENTRIES..4 * TLB_ENTRIES] {
                        if matches!(e, Some(x) if x.gpa == gpa) {
                            *e = None;
                        }
                    }
                }
                _ => {
                    let kind = kinds[(rnd() % 3) as usize];
                    let user = rnd() & 1 != 0;
                    // Mostly 4 KiB pages; some pieces of 2 MiB pages.
                    let shift = if rnd() % 8 == 0 { 21 } else { 12 };
                    let lin = (rnd() % 0x400) << 12;
                    let gpa = (rnd() % 0x40) << 12;
                    let global = rnd() % 4 == 0;
                    t.insert_piece(kind, user, lin, 0x1000, gpa, global, shift);
                    model[Tlb::set_index(kind, user) * TLB_ENTRIES + Tlb::slot(lin)] =
                        Some(TlbEntry {
                            tag: lin,
                            host: 0x1000,
                            gpa,
                            global,
                            page_shift: shift,
                        });
                }
            }
            if step % 97 == 0 || r % 100 < 7 {
                for (i, m) in model.iter().enumerate() {
                    let e = &t.sets()[i / TLB_ENTRIES][i % TLB_ENTRIES];
                    match m {
                        Some(x) => assert_eq!(e.tag, x.tag, "step {step} slot {i}"),
                        None => assert_eq!(e.tag, TlbEntry::INVALID, "step {step} slot {i}"),
                    }
                }
            }
        }
        assert!(overflowed, "the overflow path was exercised");
    }
}
