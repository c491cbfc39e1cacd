//! The executable code buffer: fixed-size chunks whose addresses never
//! change. Each chunk is one piece of shared memory (a memfd) mapped twice:
//! read-write, where translations are copied in, and read-execute, where
//! they run. No page is ever writable and executable through the same
//! mapping, and adding code changes no protection (no `mprotect`, no TLB
//! shootdown: a Linux boot translates tens of thousands of blocks). When
//! every chunk is full the engine drops all translations and starts again
//! from the first.

use std::fs::File;
use std::os::fd::FromRawFd;

use memmap2::{Mmap, MmapMut, MmapOptions};

/// Bytes per chunk (the largest block's code is a few KiB).
const CHUNK: usize = 1 << 20;

/// One chunk's two views of the same memory.
struct Chunk {
    /// Where code is written.
    rw: MmapMut,
    /// Where it runs.
    rx: Mmap,
}

impl Chunk {
    fn new() -> std::io::Result<Chunk> {
        // SAFETY: a plain system call with a NUL-terminated name; the
        // result is checked before use.
        let fd = unsafe { libc::memfd_create(c"hindsight-jit".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(CHUNK as u64)?;
        // SAFETY: the memfd is private to this process and never resized;
        // the mappings outlive no use of their memory (the engine drops
        // every pointer into a chunk before the buffer).
        let rw = unsafe { MmapOptions::new().len(CHUNK).map_mut(&file)? };
        // SAFETY: as above.
        let rx = unsafe { MmapOptions::new().len(CHUNK).map_exec(&file)? };
        Ok(Chunk { rw, rx })
    }
}

/// Where translated code lives.
pub(crate) struct CodeBuf {
    /// Mapped chunks.
    chunks: Vec<Chunk>,
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
        Ok(CodeBuf {
            chunks: vec![Chunk::new()?],
            cur: 0,
            used: 0,
            max_chunks: (cap / CHUNK).max(1),
        })
    }

    /// Address at which `len` bytes of code would be placed, moving to a
    /// new chunk if the current one is too full; `None` when the buffer is
    /// full (or a chunk cannot be mapped).
    pub(crate) fn reserve(&mut self, len: usize) -> Option<usize> {
        if len > CHUNK {
            return None;
        }
        if self.used + len > CHUNK {
            if self.cur + 1 >= self.max_chunks {
                return None;
            }
            if self.chunks.len() <= self.cur + 1 {
                self.chunks.push(Chunk::new().ok()?);
            }
            self.cur += 1;
            self.used = 0;
        }
        Some(self.chunks.get(self.cur)?.rx.as_ptr() as usize + self.used)
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
    /// returns that address; `None` if it no longer fits.
    pub(crate) fn push(&mut self, code: &[u8]) -> Option<usize> {
        if self.used + code.len() > CHUNK {
            return None;
        }
        let chunk = self.chunks.get_mut(self.cur)?;
        let at = self.used;
        chunk.rw[at..at + code.len()].copy_from_slice(code);
        let addr = chunk.rx.as_ptr() as usize + at;
        // Keep entry points 16-byte aligned.
        self.used = ((at + code.len() + 15) & !15).min(CHUNK);
        Some(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Code written through the read-write view runs at the address
    /// `push` returns, and the buffer moves to a new chunk when one fills.
    #[test]
    fn pushed_code_runs_and_chunks_fill_in_order() {
        let mut b = CodeBuf::new(3 * CHUNK).expect("map");
        // mov eax, 42; ret
        let code = [0xb8, 42, 0, 0, 0, 0xc3];
        let at = b.reserve(code.len()).expect("room");
        assert_eq!(b.push(&code), Some(at));
        // SAFETY: `at` holds the function just written, in executable memory.
        let f: extern "C" fn() -> u32 = unsafe { std::mem::transmute(at) };
        assert_eq!(f(), 42);
        let big = vec![0xc3u8; CHUNK - 8];
        let second = b.reserve(big.len()).expect("a second chunk");
        // The first push started the first chunk.
        assert!(!(at..at + CHUNK).contains(&second));
        assert_eq!(b.push(&big), Some(second));
        assert!(b.reserve(big.len()).is_some(), "a third chunk");
        b.push(&big).expect("third");
        assert!(b.reserve(big.len()).is_none(), "full at the cap");
        b.reset();
        assert_eq!(b.used(), 0);
    }
}
