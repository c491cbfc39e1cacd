//! The kernel proper of a bzImage, decompressed on the host.
//!
//! A bzImage carries its kernel compressed (Debian's with xz) and a small
//! decompressor that unpacks it at boot. Run by the emulated CPU, that
//! decompression takes billions of instructions; done here once and cached
//! beside the guest images, the guest starts in the kernel proper at its
//! link address instead (as Firecracker boots a vmlinux). The guest sees
//! the same boot_params either way; what changes is that KASLR, which only
//! the decompressor applies, is off, so kernel addresses match System.map.

use std::io::Read;
use std::path::Path;

use crate::fetch::sha256_hex;

/// The decompressed kernel (an ELF vmlinux) of `bzimage`, from the cache
/// in `cache_dir` or decompressed now (and cached). `None`, with a note on
/// stderr, when the payload's format is not one hindsight decompresses:
/// the guest then runs the kernel's own decompressor.
pub fn decompressed(bzimage: &[u8], cache_dir: &Path) -> Option<Vec<u8>> {
    let (format, payload) = hindsight_firmware::linux::payload(bzimage).ok()?;
    if format != "xz" {
        eprintln!(
            "hindsight: the kernel is {format}-compressed; its own decompressor will run in the guest"
        );
        return None;
    }
    let path = cache_dir.join(format!("vmlinux-{}.elf", &sha256_hex(bzimage)[..16]));
    if let Ok(v) = std::fs::read(&path) {
        if v.starts_with(b"\x7fELF") {
            return Some(v);
        }
    }
    // The kernel build appends the decompressed size (le32) to the stream.
    let stream = &payload[..payload.len().saturating_sub(4)];
    let mut out = Vec::with_capacity(payload.len() * 8);
    if let Err(e) = xz2::read::XzDecoder::new(stream).read_to_end(&mut out) {
        eprintln!(
            "hindsight: cannot decompress the kernel on the host ({e}); its own decompressor \
             will run in the guest"
        );
        return None;
    }
    // A cache write failure only costs the next boot the decompression.
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, &out).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
    Some(out)
}
