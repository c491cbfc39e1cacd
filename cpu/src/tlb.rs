//! The per-vCPU software TLB and jump cache.
//!
//! Six direct-mapped arrays, one per (access kind × user/supervisor), map a
//! guest-linear page to the host address of its RAM page. An entry exists
//! only when the access is allowed without side effects: the page is RAM
//! (not MMIO), the permission check for that privilege passed, accessed and
//! (for writes) dirty bits are already set, and for writes the page holds no
//! translated code and the machine does not need to see the store.
//!
//! The jump cache maps a linear instruction address to a decoded block; it is
//! flushed together with the TLB because both depend on the page tables.

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
}

impl TlbEntry {
    /// A tag no page-aligned address can equal.
    pub const INVALID: u64 = 1;
    const EMPTY: TlbEntry = TlbEntry {
        tag: Self::INVALID,
        host: 0,
        gpa: 0,
        global: false,
    };
}

/// One jump-cache slot: linear address of a block start, its id and serial.
#[derive(Clone, Copy, Debug, Default)]
pub struct JmpEntry {
    pub lin: u64,
    pub id: u32,
    /// Block serial; 0 marks an empty slot.
    pub serial: u32,
    /// Decode width plus 0x100 when entered at CPL 3 (execute permission differs).
    pub mode: u32,
}

/// Software TLB plus jump cache of one vCPU.
#[derive(Clone, Debug)]
pub struct Tlb {
    pub sets: Box<[[TlbEntry; TLB_ENTRIES]; 6]>,
    pub jmp: Box<[JmpEntry; JMP_ENTRIES]>,
    /// Code-cache generation this TLB's write entries are consistent with.
    pub code_gen: u64,
}

impl Default for Tlb {
    fn default() -> Tlb {
        Tlb {
            sets: Box::new([[TlbEntry::EMPTY; TLB_ENTRIES]; 6]),
            jmp: Box::new([JmpEntry::default(); JMP_ENTRIES]),
            code_gen: 0,
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

    /// Installs a translation.
    #[inline]
    pub fn insert(&mut self, kind: Access, user: bool, lin: u64, host: usize, gpa: u64, global: bool) {
        self.sets[Self::set_index(kind, user)][Self::slot(lin)] = TlbEntry {
            tag: lin & !0xfff,
            host,
            gpa: gpa & !0xfff,
            global,
        };
    }

    /// Drops every translation and the jump cache.
    pub fn flush_all(&mut self) {
        for set in self.sets.iter_mut() {
            set.fill(TlbEntry::EMPTY);
        }
        self.jmp.fill(JmpEntry::default());
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
        self.jmp.fill(JmpEntry::default());
    }

    /// Drops the translations of one linear page (INVLPG).
    pub fn flush_page(&mut self, lin: u64) {
        let slot = Self::slot(lin);
        for set in self.sets.iter_mut() {
            if set[slot].tag == lin & !0xfff {
                set[slot] = TlbEntry::EMPTY;
            }
        }
        self.jmp.fill(JmpEntry::default());
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
                if e.gpa == gpa & !0xfff {
                    *e = TlbEntry::EMPTY;
                }
            }
        }
    }
}
