//! A small, stable binary encoding for serde types: machine snapshots in
//! memory and on disk, and the input of the state hash.
//!
//! The encoding is a pure function of the value and its type's serde
//! layout (field order), with no self-description:
//!
//! | serde type                         | bytes |
//! |------------------------------------|-------|
//! | bool                               | 1 byte, 0 or 1 |
//! | i8–i128, u8–u128                   | little-endian, fixed width |
//! | f32, f64                           | IEEE 754 bits, little-endian |
//! | char                               | its scalar value as u32 |
//! | str, bytes                         | u64 length, then the bytes |
//! | Option                             | 0, or 1 then the value |
//! | unit, unit struct                  | nothing |
//! | newtype struct                     | the value |
//! | seq (Vec, VecDeque, ...)           | u64 count, then the elements |
//! | tuple, array, tuple struct, struct | the fields in declaration order |
//! | map                                | u64 count, then (key, value) pairs sorted by the key's encoding |
//! | enum                               | u32 variant index, then the variant's fields |
//!
//! Maps are sorted by their encoded keys, so a `HashMap`'s iteration order
//! never leaks into the bytes (or a hash of them). A change to a type's
//! fields changes its encoding: the snapshot's version number says which
//! layout a byte string has (see [`crate::snapshot::STATE_VERSION`]).
//!
//! Decoding never panics on malformed input: it reports what was wrong and
//! at which byte offset. Sequence lengths are checked against the bytes
//! left before anything is allocated.
//!
//! ```
//! use hindsight_machine::codec;
//! let bytes = codec::encode(&(7u16, Some(true), vec![1u8, 2])).unwrap();
//! assert_eq!(bytes, [7, 0, 1, 1, 2, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
//! let back: (u16, Option<bool>, Vec<u8>) = codec::decode(&bytes).unwrap();
//! assert_eq!(back, (7, Some(true), vec![1, 2]));
//! assert!(codec::decode::<u32>(&bytes[..3]).is_err());
//! ```

mod de;
mod ser;

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) use ser::Sink;

/// Why a value could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// The input ended inside a value.
    Eof {
        /// Byte offset at which more input was needed.
        offset: usize,
        /// Bytes the value needed there.
        needed: usize,
    },
    /// A byte string that no value of the type encodes to.
    Invalid {
        /// Byte offset of the bad value.
        offset: usize,
        /// What was wrong.
        what: String,
    },
    /// The value ended before the input did.
    TrailingBytes {
        /// Offset of the first byte not consumed.
        offset: usize,
        /// Bytes left over.
        len: usize,
    },
    /// The type cannot be encoded without self-description (a sequence of
    /// unknown length, `deserialize_any`, ...), or its serde code reported
    /// an error of its own.
    Unsupported(String),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Eof { offset, needed } => write!(
                f,
                "the data ends at byte {offset} where {needed} more bytes were expected"
            ),
            CodecError::Invalid { offset, what } => write!(f, "at byte {offset}: {what}"),
            CodecError::TrailingBytes { offset, len } => {
                write!(
                    f,
                    "{len} unexpected bytes after the value, at byte {offset}"
                )
            }
            CodecError::Unsupported(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for CodecError {}

impl serde::ser::Error for CodecError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CodecError::Unsupported(msg.to_string())
    }
}

impl serde::de::Error for CodecError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CodecError::Unsupported(msg.to_string())
    }
}

/// Encodes `value` into a new byte vector.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_into(&mut out, value)?;
    Ok(out)
}

/// Appends the encoding of `value` to `sink` (a byte vector or a hasher).
pub(crate) fn encode_into<S: Sink, T: Serialize + ?Sized>(
    sink: &mut S,
    value: &T,
) -> Result<(), CodecError> {
    value.serialize(&mut ser::Encoder::new(sink))
}

/// Decodes a `T` that must take up all of `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let mut d = de::Decoder::new(bytes);
    let value = T::deserialize(&mut d)?;
    d.finish()?;
    Ok(value)
}

#[cfg(test)]
mod tests;
