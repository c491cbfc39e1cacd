//! The header record, the payload of chunk 0 (docs/trace-format.md,
//! "Header chunk"):
//!
//! ```text
//! str   hindsight version
//! str   CPU model name
//! u32   configuration entry count, then per entry: str key, str value
//! u32   image count, then per image:
//!         str role, str name, u64 size, hash SHA-256, u8 embedded (0/1)
//! ```
//!
//! The machine configuration is opaque key/value strings: the format fixes
//! the well-known keys in [`keys`] and carries any others unchanged, so the
//! machine can add settings without a format version change.

use super::codec::{Dec, DecodeError, Put};
use super::image::ImageInfo;

/// Well-known configuration keys. Values are strings; numbers are decimal.
pub mod keys {
    /// Guest RAM size in bytes.
    pub const MEMORY_BYTES: &str = "memory_bytes";
    /// Number of vCPUs.
    pub const VCPUS: &str = "vcpus";
    /// Seed of the deterministic vCPU schedule.
    pub const SCHEDULE_SEED: &str = "schedule_seed";
    /// Wall-clock time the guest's RTC reads at boot, seconds since the Unix
    /// epoch (UTC).
    pub const RTC_BOOT_TIME: &str = "rtc_boot_time";
    /// The execution engine of the recording (`interp` or `jit`).
    pub const ENGINE: &str = "engine";
    /// The kernel command line.
    pub const KERNEL_CMDLINE: &str = "kernel_cmdline";
}

/// The machine configuration: ordered key/value strings, keys unique and
/// non-empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineConfig {
    entries: Vec<(String, String)>,
}

impl MachineConfig {
    /// An empty configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, replacing an earlier value in place (so the
    /// order of first insertion is kept). Empty keys are ignored.
    pub fn set(&mut self, key: impl Into<String>, value: impl ToString) -> &mut Self {
        let key = key.into();
        let value = value.to_string();
        if key.is_empty() {
            return self;
        }
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
        self
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` parsed as a decimal `u64`; `None` if missing or not
    /// a number.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Everything a replay needs to rebuild the machine a trace was recorded on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceHeader {
    /// Version of the hindsight that recorded the trace.
    pub hindsight_version: String,
    /// Name of the CPU model the guest saw.
    pub cpu_model: String,
    /// The machine configuration.
    pub config: MachineConfig,
    /// The images the guest booted from, in load order.
    pub images: Vec<ImageInfo>,
}

impl TraceHeader {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_str(&self.hindsight_version);
        out.put_str(&self.cpu_model);
        out.put_u32(self.config.entries.len() as u32);
        for (k, v) in &self.config.entries {
            out.put_str(k);
            out.put_str(v);
        }
        out.put_u32(self.images.len() as u32);
        for image in &self.images {
            image.encode(&mut out);
        }
        out
    }

    pub(crate) fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Dec::new(payload);
        let hindsight_version = d.str("hindsight version")?;
        let cpu_model = d.str("CPU model")?;
        let count = d.u32("configuration entry count")?;
        let mut config = MachineConfig::new();
        for _ in 0..count {
            let at = d.pos();
            let key = d.str("configuration key")?;
            let value = d.str("configuration value")?;
            if key.is_empty() {
                return Err(DecodeError {
                    offset: at,
                    what: "empty configuration key".into(),
                });
            }
            if config.get(&key).is_some() {
                return Err(DecodeError {
                    offset: at,
                    what: format!("configuration key {key:?} appears twice"),
                });
            }
            config.entries.push((key, value));
        }
        let count = d.u32("image count")?;
        let mut images = Vec::new();
        for _ in 0..count {
            images.push(ImageInfo::decode(&mut d)?);
        }
        d.expect_end("header")?;
        Ok(TraceHeader {
            hindsight_version,
            cpu_model,
            config,
            images,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::image::ImageRole;
    use super::*;

    fn sample() -> TraceHeader {
        let mut config = MachineConfig::new();
        config
            .set(keys::MEMORY_BYTES, 128u64 << 20)
            .set(keys::VCPUS, 2)
            .set(keys::KERNEL_CMDLINE, "console=ttyS0 quiet")
            .set("x-custom", "ünïcode");
        let mut kernel = ImageInfo::of_bytes(ImageRole::Kernel, "bzImage", b"kernel bytes");
        kernel.embedded = true;
        TraceHeader {
            hindsight_version: "0.1.0".into(),
            cpu_model: "hindsight-x86-64".into(),
            config,
            images: vec![
                kernel,
                ImageInfo::of_bytes(ImageRole::Initrd, "initrd.img", b"initrd"),
            ],
        }
    }

    #[test]
    fn header_round_trips() {
        let h = sample();
        assert_eq!(TraceHeader::decode(&h.encode()).unwrap(), h);
        let empty = TraceHeader::default();
        assert_eq!(TraceHeader::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn config_set_replaces_in_place() {
        let mut c = MachineConfig::new();
        c.set("a", 1).set("b", 2).set("a", 3).set("", "ignored");
        let v: Vec<_> = c.iter().collect();
        assert_eq!(v, [("a", "3"), ("b", "2")]);
        assert_eq!(c.get_u64("a"), Some(3));
        assert_eq!(c.get_u64("missing"), None);
    }

    #[test]
    fn every_truncation_and_trailing_bytes_are_errors() {
        let enc = sample().encode();
        for n in 0..enc.len() {
            assert!(TraceHeader::decode(&enc[..n]).is_err(), "cut at {n}");
        }
        let mut long = enc.clone();
        long.push(0);
        assert!(TraceHeader::decode(&long).is_err());
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let mut out = Vec::new();
        out.put_str("v");
        out.put_str("cpu");
        out.put_u32(2);
        for _ in 0..2 {
            out.put_str("k");
            out.put_str("v");
        }
        out.put_u32(0);
        let e = TraceHeader::decode(&out).unwrap_err();
        assert!(e.what.contains("twice"), "{e}");
    }

    #[test]
    fn huge_counts_fail_without_allocating() {
        let mut out = Vec::new();
        out.put_str("v");
        out.put_str("cpu");
        out.put_u32(u32::MAX);
        assert!(TraceHeader::decode(&out).is_err());
    }
}
