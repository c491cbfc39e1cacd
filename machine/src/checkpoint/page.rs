//! One saved RAM page: elided when zero, else lz4-compressed (block
//! format, no size prefix: a page is always [`PAGE_SIZE`] bytes), or kept
//! raw when compression does not make it smaller.

use std::fmt;

use lz4_flex::block::{compress_into_with_table, get_maximum_output_size, CompressTable};

use crate::layout::PAGE_SIZE;
use crate::memory::is_zero;

/// Bytes in a page.
const PAGE: usize = PAGE_SIZE as usize;

/// The saved content of one RAM page.
#[derive(Clone, PartialEq, Eq)]
pub enum PageData {
    /// Every byte is zero (nothing stored).
    Zero,
    /// lz4 block-compressed bytes of the page.
    Lz4(Box<[u8]>),
    /// The page itself, which did not compress.
    Raw(Box<[u8]>),
}

impl fmt::Debug for PageData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageData::Zero => write!(f, "Zero"),
            PageData::Lz4(b) => write!(f, "Lz4({} bytes)", b.len()),
            PageData::Raw(b) => write!(f, "Raw({} bytes)", b.len()),
        }
    }
}

impl PageData {
    /// Heap bytes this page takes.
    pub fn heap_bytes(&self) -> usize {
        match self {
            PageData::Zero => 0,
            PageData::Lz4(b) | PageData::Raw(b) => b.len(),
        }
    }

    /// Whether the page is all zero.
    pub fn is_zero(&self) -> bool {
        matches!(self, PageData::Zero)
    }

    /// Writes the page's bytes into `out`; an error says why the stored
    /// bytes are not a page (possible only for data read from outside).
    pub fn expand_into(&self, out: &mut [u8; PAGE]) -> Result<(), String> {
        match self {
            PageData::Zero => out.fill(0),
            PageData::Raw(b) => {
                if b.len() != PAGE {
                    return Err(format!("a raw page of {} bytes", b.len()));
                }
                out.copy_from_slice(b);
            }
            PageData::Lz4(b) => {
                let n = lz4_flex::block::decompress_into(b, out)
                    .map_err(|e| format!("lz4 data does not decompress: {e}"))?;
                if n != PAGE {
                    return Err(format!("lz4 data decompresses to {n} bytes, not a page"));
                }
            }
        }
        Ok(())
    }
}

/// Compresses pages, reusing its hash table and output buffer.
pub(crate) struct Compressor {
    table: CompressTable,
    out: Vec<u8>,
}

impl Default for Compressor {
    fn default() -> Self {
        Compressor {
            table: CompressTable::default(),
            out: vec![0; get_maximum_output_size(PAGE)],
        }
    }
}

impl Compressor {
    /// The saved form of `page`.
    pub(crate) fn compress(&mut self, page: &[u8; PAGE]) -> PageData {
        if is_zero(page) {
            return PageData::Zero;
        }
        match compress_into_with_table(page, &mut self.out, &mut self.table) {
            Ok(n) if n < PAGE => PageData::Lz4(self.out[..n].into()),
            _ => PageData::Raw(page.as_slice().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_round_trip_in_each_form() {
        let mut c = Compressor::default();
        let mut out = [0xAAu8; PAGE];
        let zero = [0u8; PAGE];
        assert_eq!(c.compress(&zero), PageData::Zero);
        PageData::Zero.expand_into(&mut out).unwrap();
        assert_eq!(out, zero);

        let mut text = [0u8; PAGE];
        for (i, b) in text.iter_mut().enumerate() {
            *b = b"hindsight "[i % 10];
        }
        let d = c.compress(&text);
        assert!(matches!(d, PageData::Lz4(_)), "{d:?}");
        assert!(d.heap_bytes() < 200);
        d.expand_into(&mut out).unwrap();
        assert_eq!(out, text);

        // SplitMix64 noise does not compress.
        let mut noise = [0u8; PAGE];
        let mut x = 1u64;
        for chunk in noise.chunks_mut(8) {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let z = (x ^ (x >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            chunk.copy_from_slice(&(z ^ (z >> 29)).to_le_bytes());
        }
        let d = c.compress(&noise);
        assert!(matches!(d, PageData::Raw(_)), "{d:?}");
        assert_eq!(d.heap_bytes(), PAGE);
        d.expand_into(&mut out).unwrap();
        assert_eq!(out, noise);
    }

    #[test]
    fn corrupt_data_is_an_error() {
        let mut out = [0u8; PAGE];
        assert!(PageData::Raw(vec![1; 10].into())
            .expand_into(&mut out)
            .is_err());
        assert!(PageData::Lz4(vec![0xFF; 10].into())
            .expand_into(&mut out)
            .is_err());
        // Valid lz4 of a short input is not a page.
        let short = lz4_flex::block::compress(b"short");
        let e = PageData::Lz4(short.into())
            .expand_into(&mut out)
            .unwrap_err();
        assert!(e.contains("not a page"), "{e}");
    }
}
