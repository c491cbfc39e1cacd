//! The executable code buffer: fixed-size chunks of anonymous memory whose
//! addresses never change, each written while read-write and run while
//! read-execute (never both). A translation goes into the current chunk,
//! so changing protections costs one chunk, not the whole buffer. When
//! every chunk is full the engine drops all translations and starts again
//! from the first.

use memmap2::{Mmap, MmapMut};

/// Bytes per chunk (the largest block's code is a few KiB).
const CHUNK: usize = 1 << 20;

/// Where translated code lives.
pub(crate) struct CodeBuf {
    /// Mapped chunks, read-execute between translations (`None` while its
    /// protection changes, or if the host refused a change).
    chunks: Vec<Option<Mmap>>,
    /// Chunk being filled.
    cur: usize,
    /// Bytes used in it.
    used: usize,
    /// Most chunks.
    max_chunks: usize,
}

impl CodeBuf {
    /// A buffer of up to `cap` bytes (chunks are mapped as needed).
    pub(crate) fn new(cap: usize) -> std::io::Result<CodeBuf> {
        let first = MmapMut::map_anon(CHUNK)?.make_exec()?;
        Ok(CodeBuf {
            chunks: vec![Some(first)],
            cur: 0,
            used: 0,
            max_chunks: (cap / CHUNK).max(1),
        })
    }

    /// Address at which `len` bytes of code would be placed, moving to a
    /// new chunk if the current one is too full; `None` when the buffer is
    /// full (or unusable).
    pub(crate) fn reserve(&mut self, len: usize) -> Option<usize> {
        if len > CHUNK {
            return None;
        }
        if self.used + len > CHUNK {
            if self.cur + 1 >= self.max_chunks {
                return None;
            }
            self.cur += 1;
            self.used = 0;
            if self.chunks.len() <= self.cur {
                let m = MmapMut::map_anon(CHUNK).ok()?.make_exec().ok()?;
                self.chunks.push(Some(m));
            }
        }
        Some(self.chunks.get(self.cur)?.as_ref()?.as_ptr() as usize + self.used)
    }

    /// Forgets every piece of code (the caller drops its pointers).
    pub(crate) fn reset(&mut self) {
        self.cur = 0;
        self.used = 0;
    }

    /// Bytes in use.
    pub(crate) fn used(&self) -> usize {
        self.cur * CHUNK + self.used
    }

    /// Copies `code` to the address [`CodeBuf::reserve`] gave for it and
    /// returns that address; `None` if it no longer fits or the protection
    /// cannot be changed.
    pub(crate) fn push(&mut self, code: &[u8]) -> Option<usize> {
        if self.used + code.len() > CHUNK {
            return None;
        }
        let slot = self.chunks.get_mut(self.cur)?;
        let mut rw: MmapMut = slot.take()?.make_mut().ok()?;
        let at = self.used;
        rw[at..at + code.len()].copy_from_slice(code);
        let addr = rw.as_ptr() as usize + at;
        *slot = Some(rw.make_exec().ok()?);
        // Keep entry points 16-byte aligned.
        self.used = ((at + code.len() + 15) & !15).min(CHUNK);
        Some(addr)
    }
}
