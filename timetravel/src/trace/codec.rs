//! Little-endian field encoding shared by the header, image pieces and
//! records (docs/trace-format.md, "Primitive encodings").
//!
//! | type | bytes |
//! |---|---|
//! | `u8`, `u16`, `u32`, `u64`, `i32` | fixed width, little-endian |
//! | `hash` | 32 raw bytes |
//! | `bytes` | `u32` length, then that many bytes |
//! | `str` | `bytes` holding UTF-8 |
//! | `name` | `u8` length (at least 1), then that many bytes of UTF-8 |
//!
//! The decoder never reads past its slice and never allocates more than the
//! slice holds: a length is checked against the bytes that remain before
//! anything is copied.

use std::fmt;

/// Appends fields to a byte buffer.
pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    fn put_i32(&mut self, v: i32);
    /// A `u32` length and the bytes. The caller guarantees `len <= u32::MAX`
    /// (every payload is bounded by [`super::MAX_RAW_LEN`]).
    fn put_bytes(&mut self, v: &[u8]);
    fn put_str(&mut self, v: &str);
    /// A `u8` length and the bytes of a short name. The caller guarantees
    /// `1 <= len <= 255`.
    fn put_name(&mut self, v: &str);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_i32(&mut self, v: i32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_bytes(&mut self, v: &[u8]) {
        self.put_u32(v.len() as u32);
        self.extend_from_slice(v);
    }
    fn put_str(&mut self, v: &str) {
        self.put_bytes(v.as_bytes());
    }
    fn put_name(&mut self, v: &str) {
        self.put_u8(v.len() as u8);
        self.extend_from_slice(v.as_bytes());
    }
}

/// Why a payload failed to decode, and where inside the (uncompressed)
/// payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DecodeError {
    /// Offset inside the uncompressed payload.
    pub(crate) offset: usize,
    /// What was being read and what was wrong.
    pub(crate) what: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at payload offset {}", self.what, self.offset)
    }
}

/// A bounded little-endian reader over one payload.
pub(crate) struct Dec<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Dec { data, pos: 0 }
    }

    /// Current offset inside the payload.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// An error at the current offset.
    pub(crate) fn error(&self, what: impl Into<String>) -> DecodeError {
        DecodeError {
            offset: self.pos,
            what: what.into(),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.error(format!(
                "{what}: needs {n} bytes, only {} remain",
                self.remaining()
            )));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn i32(&mut self, what: &str) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn hash(&mut self, what: &str) -> Result<[u8; 32], DecodeError> {
        self.array(what)
    }

    /// A `u32` length and that many bytes, borrowed from the payload.
    pub(crate) fn bytes(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let len = self.u32(what)? as usize;
        self.take(len, what).map_err(|mut e| {
            e.offset = start;
            e
        })
    }

    /// A `u32` length and that many bytes of UTF-8.
    pub(crate) fn str(&mut self, what: &str) -> Result<String, DecodeError> {
        let start = self.pos;
        let b = self.bytes(what)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(DecodeError {
                offset: start,
                what: format!("{what}: not valid UTF-8"),
            }),
        }
    }

    /// A `u8` length (at least 1) and that many bytes of UTF-8.
    pub(crate) fn name(&mut self, what: &str) -> Result<String, DecodeError> {
        let start = self.pos;
        let len = self.u8(what)? as usize;
        let at = |what: String| DecodeError {
            offset: start,
            what,
        };
        if len == 0 {
            return Err(at(format!("{what}: empty")));
        }
        let b = self.take(len, what).map_err(|e| at(e.what))?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(at(format!("{what}: not valid UTF-8"))),
        }
    }

    /// The rest of the payload.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = &self.data[self.pos..];
        self.pos = self.data.len();
        s
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn expect_end(&self, what: &str) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.error(format!(
                "{} unexpected bytes after the {what}",
                self.remaining()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_primitives() {
        let mut b = Vec::new();
        b.put_u8(0xAB);
        b.put_u16(0x1234);
        b.put_u32(0xDEAD_BEEF);
        b.put_u64(0x0102_0304_0506_0708);
        b.put_i32(-2);
        b.put_bytes(&[1, 2, 3]);
        b.put_str("héllo");
        assert_eq!(&b[1..3], &[0x34, 0x12], "little-endian");
        let mut d = Dec::new(&b);
        assert_eq!(d.u8("a").unwrap(), 0xAB);
        assert_eq!(d.u16("b").unwrap(), 0x1234);
        assert_eq!(d.u32("c").unwrap(), 0xDEAD_BEEF);
        assert_eq!(d.u64("d").unwrap(), 0x0102_0304_0506_0708);
        assert_eq!(d.i32("e").unwrap(), -2);
        assert_eq!(d.bytes("f").unwrap(), &[1, 2, 3]);
        assert_eq!(d.str("g").unwrap(), "héllo");
        d.expect_end("test").unwrap();
    }

    #[test]
    fn huge_length_is_refused_without_allocating() {
        let mut b = Vec::new();
        b.put_u32(u32::MAX);
        b.extend_from_slice(&[0; 10]);
        let e = Dec::new(&b).bytes("blob").unwrap_err();
        assert_eq!(e.offset, 0);
        assert!(e.what.contains("needs 4294967295 bytes"), "{e}");
    }

    #[test]
    fn short_and_invalid_inputs_fail() {
        assert!(Dec::new(&[1, 2]).u32("x").is_err());
        let mut b = Vec::new();
        b.put_bytes(&[0xFF, 0xFE]);
        assert!(Dec::new(&b).str("s").unwrap_err().what.contains("UTF-8"));
        let d = Dec::new(&[0]);
        assert!(d.expect_end("thing").is_err());
    }
}
