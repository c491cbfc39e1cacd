//! The images a guest booted from: their description in the header
//! ([`ImageInfo`]) and the pieces that carry embedded copies (image chunks).
//!
//! Image-piece payload (chunk kind 1), docs/trace-format.md "Image chunks":
//!
//! ```text
//! u32  image index (into the header's image list)
//! u64  offset of this piece inside the image
//! ...  the piece's bytes: the rest of the payload, at least one byte
//! ```

use std::fmt;

use sha2::{Digest as _, Sha256};

use super::codec::{Dec, DecodeError, Put};
use super::Digest;

/// What an image is to the machine. Stored as a string, so roles this build
/// does not know survive a round trip as [`ImageRole::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ImageRole {
    /// The kernel (bzImage, multiboot ELF, flat binary); stored as `kernel`.
    Kernel,
    /// The initial ramdisk; stored as `initrd`.
    Initrd,
    /// A multiboot module; stored as `module`.
    Module,
    /// Firmware (BIOS, option ROM); stored as `firmware`.
    Firmware,
    /// Anything else, stored as given.
    Other(String),
}

impl ImageRole {
    /// The string stored in the trace.
    pub fn as_str(&self) -> &str {
        match self {
            ImageRole::Kernel => "kernel",
            ImageRole::Initrd => "initrd",
            ImageRole::Module => "module",
            ImageRole::Firmware => "firmware",
            ImageRole::Other(s) => s,
        }
    }

    /// The role a stored string names.
    pub fn from_name(s: &str) -> Self {
        match s {
            "kernel" => ImageRole::Kernel,
            "initrd" => ImageRole::Initrd,
            "module" => ImageRole::Module,
            "firmware" => ImageRole::Firmware,
            other => ImageRole::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ImageRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One image the guest booted from, as the header describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// What the image is to the machine.
    pub role: ImageRole,
    /// The file name it was loaded from (informational; replay finds images
    /// by hash).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its bytes.
    pub sha256: Digest,
    /// Whether the trace carries a copy in image chunks. The writer sets this
    /// from the bytes it is given; a reader sees what the file says.
    pub embedded: bool,
}

impl ImageInfo {
    /// Describes `bytes`: computes the size and SHA-256 (not embedded).
    pub fn of_bytes(role: ImageRole, name: impl Into<String>, bytes: &[u8]) -> Self {
        ImageInfo {
            role,
            name: name.into(),
            size: bytes.len() as u64,
            sha256: Sha256::digest(bytes).into(),
            embedded: false,
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(self.role.as_str());
        out.put_str(&self.name);
        out.put_u64(self.size);
        out.extend_from_slice(&self.sha256);
        out.put_u8(u8::from(self.embedded));
    }

    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let role = ImageRole::from_name(&d.str("image role")?);
        let name = d.str("image name")?;
        let size = d.u64("image size")?;
        let sha256 = d.hash("image SHA-256")?;
        let embedded = match d.u8("image embedded flag")? {
            0 => false,
            1 => true,
            v => return Err(d.error(format!("image embedded flag is {v}, expected 0 or 1"))),
        };
        Ok(ImageInfo {
            role,
            name,
            size,
            sha256,
            embedded,
        })
    }
}

/// Fixed part of an image-piece payload: image index and offset.
pub(crate) const PIECE_HEADER_LEN: usize = 12;

/// One piece of an embedded image, borrowed from a payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ImagePiece<'a> {
    pub(crate) image: u32,
    pub(crate) offset: u64,
    pub(crate) data: &'a [u8],
}

impl<'a> ImagePiece<'a> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PIECE_HEADER_LEN + self.data.len());
        out.put_u32(self.image);
        out.put_u64(self.offset);
        out.extend_from_slice(self.data);
        out
    }

    pub(crate) fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut d = Dec::new(payload);
        let image = d.u32("image index")?;
        let offset = d.u64("image offset")?;
        let data = d.rest();
        if data.is_empty() {
            return Err(d.error("image piece holds no bytes"));
        }
        Ok(ImagePiece {
            image,
            offset,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_names() {
        for r in [
            ImageRole::Kernel,
            ImageRole::Initrd,
            ImageRole::Module,
            ImageRole::Firmware,
            ImageRole::Other("disk".into()),
        ] {
            assert_eq!(ImageRole::from_name(r.as_str()), r);
        }
    }

    #[test]
    fn info_round_trips() {
        let mut i = ImageInfo::of_bytes(ImageRole::Kernel, "bzImage", b"abc");
        assert_eq!(i.size, 3);
        assert_eq!(i.sha256[0], 0xba, "SHA-256(\"abc\") starts with ba7816bf");
        i.embedded = true;
        let mut buf = Vec::new();
        i.encode(&mut buf);
        let mut d = Dec::new(&buf);
        assert_eq!(ImageInfo::decode(&mut d).unwrap(), i);
        d.expect_end("image").unwrap();
    }

    #[test]
    fn pieces_round_trip_and_empty_is_refused() {
        let p = ImagePiece {
            image: 2,
            offset: 1 << 33,
            data: b"hello",
        };
        let enc = p.encode();
        assert_eq!(ImagePiece::decode(&enc).unwrap(), p);
        assert!(ImagePiece::decode(&enc[..PIECE_HEADER_LEN]).is_err());
        assert!(ImagePiece::decode(&enc[..5]).is_err());
    }
}
