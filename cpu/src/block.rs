//! Decoded-block cache, keyed by guest-physical address, linear address, IP
//! and decode width, with per-page invalidation for self-modifying code.
//!
//! The IP is part of the key because decoded instructions carry their IPs
//! (next IP, branch targets): real-mode code reached as 0000:7C00 and as
//! 07C0:0000 is the same bytes at the same linear address but two blocks.
//!
//! Blocks live in a slab and are named by index; the per-vCPU jump cache (in
//! [`crate::tlb::Tlb`]) holds an index plus the block's serial number, so a
//! reused slot is never mistaken for the block that was there before.
//! Invalidated blocks are freed only at [`CodeCache::collect`], which the run
//! loop calls between blocks, so a block can invalidate itself safely.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use iced_x86::Instruction;

use crate::fault::Result;
use crate::interp::Ctx;

/// An instruction handler: executes one decoded instruction. On entry RIP
/// already points at the next instruction.
pub type Handler = fn(&mut Ctx, &Instruction) -> Result<()>;

/// A decoded instruction with its handler resolved once at decode time.
#[derive(Clone)]
pub struct Op {
    pub insn: Instruction,
    pub handler: Handler,
}

/// A straight-line run of decoded instructions within one guest page.
pub struct Block {
    /// Guest-physical address of the first instruction.
    pub gpa: u64,
    /// Linear address of the first instruction.
    pub lin: u64,
    /// IP (CS offset) of the first instruction.
    pub ip: u64,
    /// Decode width (16, 32, 64).
    pub bitness: u32,
    pub ops: Box<[Op]>,
    pub serial: u32,
    pub valid: bool,
    /// Guest-physical page of the second half of an instruction straddling
    /// two pages (only a block's first instruction may straddle).
    pub page2: Option<u64>,
}

/// A small, fast hasher for integer keys (multiply-xorshift).
#[derive(Default, Clone, Copy)]
pub struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64)
    }
}

type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// All decoded blocks of a machine (shared by its vCPUs).
#[derive(Default)]
pub struct CodeCache {
    blocks: Vec<Option<Block>>,
    free: Vec<u32>,
    pending_free: Vec<u32>,
    map: IntMap<(u64, u64, u64, u32), u32>,
    /// Blocks decoded from each guest-physical page, as (id, serial): an
    /// entry whose block was since freed and its slot reused is stale and
    /// skipped.
    pages: IntMap<u64, Vec<(u32, u32)>>,
    /// Bumped whenever a page becomes a code page, so vCPUs drop write TLB entries.
    pub gen: u64,
    /// Counts block invalidations (and clears): a JIT's links between
    /// blocks hold only while it stays the same.
    pub invalidations: u64,
    next_serial: u32,
}

impl CodeCache {
    /// An empty cache.
    pub fn new() -> CodeCache {
        CodeCache::default()
    }

    /// Finds a valid block.
    #[inline]
    pub fn find(&self, gpa: u64, lin: u64, ip: u64, bitness: u32) -> Option<u32> {
        self.map.get(&(gpa, lin, ip, bitness)).copied()
    }

    /// The block in slot `id`, if it is valid and has serial `serial`.
    #[inline(always)]
    pub fn get_checked(&self, id: u32, serial: u32) -> Option<&Block> {
        match self.blocks.get(id as usize) {
            Some(Some(b)) if b.valid && b.serial == serial => Some(b),
            _ => None,
        }
    }

    /// The block in slot `id`.
    #[inline(always)]
    pub fn get(&self, id: u32) -> Option<&Block> {
        self.blocks.get(id as usize).and_then(|b| b.as_ref())
    }

    /// Adds a block starting at IP `ip`; returns (id, serial).
    pub fn insert(
        &mut self,
        gpa: u64,
        lin: u64,
        ip: u64,
        bitness: u32,
        ops: Vec<Op>,
    ) -> (u32, u32) {
        // Serial 0 is never used, so a zeroed jump-cache slot cannot match.
        self.next_serial = self.next_serial.wrapping_add(1).max(1);
        let serial = self.next_serial;
        let block = Block {
            gpa,
            lin,
            ip,
            bitness,
            ops: ops.into_boxed_slice(),
            serial,
            valid: true,
            page2: None,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.blocks[id as usize] = Some(block);
                id
            }
            None => {
                self.blocks.push(Some(block));
                (self.blocks.len() - 1) as u32
            }
        };
        if let Some(old) = self.map.insert((gpa, lin, ip, bitness), id) {
            // Callers insert only after `find` missed; keep the map and the
            // blocks consistent anyway.
            self.invalidate_block(old);
        }
        self.register(gpa, id, serial);
        (id, serial)
    }

    /// Registers block `id` as also decoded from page `page` (an instruction
    /// straddling two pages), so stores there invalidate it too.
    pub fn add_page(&mut self, page: u64, id: u32) {
        let Some(Some(b)) = self.blocks.get_mut(id as usize) else {
            return;
        };
        b.page2 = Some(page & !0xfff);
        let serial = b.serial;
        self.register(page, id, serial);
    }

    /// Adds (id, serial) to the list of page `page`, bumping the generation
    /// when the page becomes a code page.
    fn register(&mut self, page: u64, id: u32, serial: u32) {
        let blocks = &self.blocks;
        let list = self.pages.entry(page & !0xfff).or_default();
        if list.is_empty() {
            self.gen += 1;
        } else if list.len() == list.capacity() {
            // Before growing, drop entries of blocks that are gone (e.g. a
            // straddling block invalidated through its other page), so a
            // list does not grow without bound.
            list.retain(|&(id, s)| matches!(blocks.get(id as usize), Some(Some(b)) if b.valid && b.serial == s));
        }
        list.push((id, serial));
    }

    /// Invalidates one block (e.g. a straddling block whose second page now
    /// maps elsewhere).
    pub fn invalidate(&mut self, id: u32) {
        self.invalidate_block(id);
    }

    /// Marks block `id` invalid and queues it for freeing.
    fn invalidate_block(&mut self, id: u32) {
        if let Some(Some(b)) = self.blocks.get_mut(id as usize) {
            if b.valid {
                b.valid = false;
                self.invalidations += 1;
                let key = (b.gpa, b.lin, b.ip, b.bitness);
                if self.map.get(&key) == Some(&id) {
                    self.map.remove(&key);
                }
                self.pending_free.push(id);
            }
        }
    }

    /// Whether guest-physical page `page` holds decoded code.
    #[inline(always)]
    pub fn is_code_page(&self, page: u64) -> bool {
        !self.pages.is_empty() && self.pages.contains_key(&(page & !0xfff))
    }

    /// Invalidates every block decoded from guest-physical page `page`.
    /// Returns true when anything was invalidated.
    pub fn invalidate_page(&mut self, page: u64) -> bool {
        let Some(ids) = self.pages.remove(&(page & !0xfff)) else {
            return false;
        };
        for (id, serial) in ids {
            if matches!(self.blocks.get(id as usize), Some(Some(b)) if b.serial == serial) {
                self.invalidate_block(id);
            }
        }
        true
    }

    /// Drops every block.
    pub fn clear(&mut self) {
        for id in 0..self.blocks.len() {
            if let Some(b) = &mut self.blocks[id] {
                if b.valid {
                    b.valid = false;
                    self.pending_free.push(id as u32);
                }
            }
        }
        self.map.clear();
        self.pages.clear();
        self.gen += 1;
        self.invalidations += 1;
    }

    /// Frees invalidated blocks. Call only when no block is executing.
    #[inline(always)]
    pub fn collect(&mut self) {
        if !self.pending_free.is_empty() {
            self.collect_pending();
        }
    }

    #[cold]
    #[inline(never)]
    fn collect_pending(&mut self) {
        for id in self.pending_free.drain(..) {
            self.blocks[id as usize] = None;
            self.free.push(id);
        }
    }

    /// Number of valid blocks (for statistics).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no block is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn nop_ops(n: usize) -> Vec<Op> {
        let insn = Decoder::with_ip(32, &[0x90], 0, DecoderOptions::NONE).decode();
        vec![
            Op {
                insn,
                handler: crate::interp::dispatch::handler_for(&insn),
            };
            n
        ]
    }

    #[test]
    fn key_includes_ip_and_bitness() {
        let mut c = CodeCache::new();
        let (a, sa) = c.insert(0x7c00, 0x7c00, 0x7c00, 16, nop_ops(1));
        assert_eq!(c.find(0x7c00, 0x7c00, 0x7c00, 16), Some(a));
        assert_eq!(
            c.find(0x7c00, 0x7c00, 0, 16),
            None,
            "07C0:0000 is another block"
        );
        assert_eq!(c.find(0x7c00, 0x7c00, 0x7c00, 32), None);
        let (b, sb) = c.insert(0x7c00, 0x7c00, 0, 16, nop_ops(2));
        assert_ne!(a, b);
        assert_ne!(sa, sb);
        assert_eq!(c.len(), 2);
        assert!(c.get_checked(a, sa).is_some());
        assert!(c.get_checked(a, sb).is_none());
        assert_ne!(sa, 0);
    }

    #[test]
    fn invalidation_frees_after_collect_and_serials_guard_reuse() {
        let mut c = CodeCache::new();
        let (a, sa) = c.insert(0x1000, 0x1000, 0x1000, 32, nop_ops(3));
        let (b, _) = c.insert(0x1800, 0x1800, 0x1800, 32, nop_ops(3));
        let (d, sd) = c.insert(0x2000, 0x2000, 0x2000, 32, nop_ops(3));
        assert!(c.is_code_page(0x1fff));
        assert!(c.invalidate_page(0x1234));
        assert!(!c.invalidate_page(0x1234), "nothing left there");
        assert!(!c.is_code_page(0x1000));
        assert_eq!(c.find(0x1000, 0x1000, 0x1000, 32), None);
        // Still readable until collected (a block may invalidate itself).
        assert_eq!(c.get(a).map(|b| b.ops.len()), Some(3));
        assert!(c.get_checked(a, sa).is_none());
        assert!(c.get_checked(d, sd).is_some());
        c.collect();
        assert!(c.get(a).is_none() && c.get(b).is_none());
        // Slots are reused, with new serials.
        let (e, se) = c.insert(0x3000, 0x3000, 0x3000, 32, nop_ops(1));
        assert!(e == a || e == b);
        assert!(c.get_checked(e, sa).is_none());
        assert!(c.get_checked(e, se).is_some());
    }

    #[test]
    fn generation_bumps_only_for_new_code_pages() {
        let mut c = CodeCache::new();
        let g0 = c.gen;
        c.insert(0x1000, 0x1000, 0x1000, 32, nop_ops(1));
        assert_eq!(c.gen, g0 + 1);
        c.insert(0x1100, 0x1100, 0x1100, 32, nop_ops(1));
        assert_eq!(c.gen, g0 + 1, "already a code page");
        let (id, _) = c.insert(0x2ff8, 0x2ff8, 0x2ff8, 32, nop_ops(1));
        c.add_page(0x3000, id);
        assert_eq!(c.gen, g0 + 3);
        c.invalidate_page(0x1000);
        c.insert(0x1100, 0x1100, 0x1100, 32, nop_ops(1));
        assert_eq!(c.gen, g0 + 4, "a code page again");
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.gen, g0 + 5);
    }

    #[test]
    fn straddling_block_dies_through_either_page() {
        let mut c = CodeCache::new();
        let (id, s) = c.insert(0x2ffe, 0x2ffe, 0x2ffe, 32, nop_ops(1));
        c.add_page(0x3000, id);
        assert_eq!(c.get(id).and_then(|b| b.page2), Some(0x3000));
        assert!(c.is_code_page(0x3000));
        c.invalidate_page(0x3000);
        assert!(c.get_checked(id, s).is_none());
        assert_eq!(c.find(0x2ffe, 0x2ffe, 0x2ffe, 32), None);
        c.collect();
        // The slot is reused by a block elsewhere; a later store to the first
        // page of the old block must not kill the new one (stale list entry).
        let (n, sn) = c.insert(0x9000, 0x9000, 0x9000, 32, nop_ops(1));
        assert_eq!(n, id);
        c.invalidate_page(0x2000);
        assert!(c.get_checked(n, sn).is_some());
        assert_eq!(c.find(0x9000, 0x9000, 0x9000, 32), Some(n));
    }

    #[test]
    fn page_lists_do_not_grow_without_bound() {
        // A straddling block re-decoded after each store to its first page
        // registers again in the second page's list.
        let mut c = CodeCache::new();
        for _ in 0..10_000 {
            let (id, _) = c.insert(0x2ffe, 0x2ffe, 0x2ffe, 32, nop_ops(1));
            c.add_page(0x3000, id);
            c.invalidate_page(0x2000);
            c.collect();
        }
        let list = c.pages.get(&0x3000).map(|l| l.len()).unwrap_or(0);
        assert!(list <= 16, "list of the second page has {list} entries");
    }

    #[test]
    fn explicit_invalidate_and_reinsert() {
        let mut c = CodeCache::new();
        let (a, _) = c.insert(0x5000, 0x5000, 0x5000, 64, nop_ops(1));
        c.invalidate(a);
        assert_eq!(c.find(0x5000, 0x5000, 0x5000, 64), None);
        let (b, sb) = c.insert(0x5000, 0x5000, 0x5000, 64, nop_ops(2));
        // Invalidating the old id again must not drop the new mapping.
        c.invalidate(a);
        assert_eq!(c.find(0x5000, 0x5000, 0x5000, 64), Some(b));
        assert!(c.get_checked(b, sb).is_some());
    }
}
