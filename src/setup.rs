//! What a machine is built from (images, command line, configuration) in one
//! place: `boot` and `run` build their machine from a [`Setup`], a recording
//! writes it into the trace header, and `replay` rebuilds the same machine
//! from a trace, finding the images by hash.

use std::path::{Path, PathBuf};

use hindsight_firmware::Module;
use hindsight_machine::{Machine, MachineConfig};
use hindsight_timetravel::trace::{keys, ImageInfo, ImageRole, TraceHeader, TraceReader};

use crate::fetch::sha256_hex;
use crate::kernel;

/// An image the guest boots from.
#[derive(Clone, Debug)]
pub struct Image {
    /// Where it was read from (for messages and the trace header).
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl Image {
    /// Reads `path`.
    pub fn read(path: &Path, what: &str) -> Result<Image, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read {what} '{}': {e}", path.display()))?;
        Ok(Image {
            name: path.display().to_string(),
            bytes,
        })
    }
}

/// The guest and how it is loaded.
#[derive(Clone, Debug)]
pub enum Guest {
    /// A Linux bzImage through the boot protocol.
    Linux {
        kernel: Image,
        initrd: Option<Image>,
        append: String,
        /// Run the kernel's own decompressor in the guest.
        guest_decompress: bool,
    },
    /// A multiboot v1 kernel with modules (`(string, image)`).
    Multiboot {
        kernel: Image,
        cmdline: String,
        modules: Vec<(String, Image)>,
    },
}

/// A machine's configuration and guest.
#[derive(Clone, Debug)]
pub struct Setup {
    pub config: MachineConfig,
    pub guest: Guest,
}

/// Trace configuration keys beyond the well-known ones.
mod key {
    pub const COMMAND: &str = "command";
    pub const HOLD_INPUT: &str = "hold_input_until_rx_interrupts";
    pub const GUEST_DECOMPRESS: &str = "guest_decompress";
    pub const MODULE: &str = "module";
}

impl Setup {
    /// Builds the machine with the guest loaded. `cache_dir` holds the
    /// host-decompressed kernels.
    pub fn build(&self, cache_dir: &Path) -> Result<Machine, String> {
        let mut m = Machine::new(&self.config).map_err(|e| e.to_string())?;
        match &self.guest {
            Guest::Linux {
                kernel,
                initrd,
                append,
                guest_decompress,
            } => {
                let vmlinux = match guest_decompress {
                    true => None,
                    false => kernel::decompressed(&kernel.bytes, cache_dir),
                };
                m.load_linux(
                    &kernel.bytes,
                    vmlinux.as_deref(),
                    append,
                    initrd.as_ref().map(|i| i.bytes.as_slice()),
                )
                .map_err(|e| format!("{}: {e}", kernel.name))?;
            }
            Guest::Multiboot {
                kernel,
                cmdline,
                modules,
            } => {
                let mods: Vec<Module> = modules
                    .iter()
                    .map(|(args, img)| Module {
                        data: &img.bytes,
                        args,
                    })
                    .collect();
                m.load_multiboot(&kernel.bytes, cmdline, &mods)
                    .map_err(|e| format!("{}: {e}", kernel.name))?;
            }
        }
        Ok(m)
    }

    /// The images in trace-header order, with their roles.
    pub fn images(&self) -> Vec<(ImageRole, &Image)> {
        match &self.guest {
            Guest::Linux { kernel, initrd, .. } => {
                let mut v = vec![(ImageRole::Kernel, kernel)];
                v.extend(initrd.iter().map(|i| (ImageRole::Initrd, i)));
                v
            }
            Guest::Multiboot {
                kernel, modules, ..
            } => {
                let mut v = vec![(ImageRole::Kernel, kernel)];
                v.extend(modules.iter().map(|(_, i)| (ImageRole::Module, i)));
                v
            }
        }
    }

    /// The trace header describing this setup.
    pub fn header(&self) -> TraceHeader {
        let mut config = hindsight_timetravel::MachineConfig::new();
        let c = &self.config;
        config
            .set(keys::MEMORY_BYTES, c.memory)
            .set(keys::VCPUS, c.cpus)
            .set(keys::SCHEDULE_SEED, c.seed)
            .set(keys::RTC_BOOT_TIME, c.rtc_unix_secs)
            .set(keys::ENGINE, "interp")
            .set(key::HOLD_INPUT, c.hold_input_until_rx_interrupts);
        match &self.guest {
            Guest::Linux {
                append,
                guest_decompress,
                ..
            } => {
                config
                    .set(key::COMMAND, "boot")
                    .set(keys::KERNEL_CMDLINE, append)
                    .set(key::GUEST_DECOMPRESS, guest_decompress);
            }
            Guest::Multiboot {
                cmdline, modules, ..
            } => {
                config
                    .set(key::COMMAND, "run")
                    .set(keys::KERNEL_CMDLINE, cmdline);
                for (i, (args, _)) in modules.iter().enumerate() {
                    config.set(format!("{}.{i}", key::MODULE), args);
                }
            }
        }
        TraceHeader {
            hindsight_version: env!("CARGO_PKG_VERSION").to_string(),
            cpu_model: hindsight_cpu::cpuid::BRAND.to_string(),
            config,
            images: self
                .images()
                .into_iter()
                .map(|(role, img)| ImageInfo::of_bytes(role, img.name.clone(), &img.bytes))
                .collect(),
        }
    }

    /// Rebuilds the setup a trace was recorded with. Images come from the
    /// trace when embedded, else from the recorded path or `search_dirs`,
    /// whichever file has the recorded SHA-256.
    pub fn from_trace<R: std::io::Read>(
        reader: &TraceReader<R>,
        search_dirs: &[PathBuf],
    ) -> Result<Setup, String> {
        let h = reader.header();
        let get = |k: &str| {
            h.config
                .get(k)
                .ok_or_else(|| format!("the trace's configuration has no '{k}'"))
        };
        let num = |k: &str| -> Result<u64, String> {
            get(k)?
                .parse()
                .map_err(|_| format!("the trace's '{k}' is not a number"))
        };
        let flag = |k: &str| h.config.get(k) == Some("true");
        let config = MachineConfig {
            memory: num(keys::MEMORY_BYTES)?,
            cpus: u32::try_from(num(keys::VCPUS)?).map_err(|_| "bad vCPU count".to_string())?,
            max_insns: None,
            seed: num(keys::SCHEDULE_SEED)?,
            rtc_unix_secs: get(keys::RTC_BOOT_TIME)?
                .parse()
                .map_err(|_| format!("the trace's '{}' is not a number", keys::RTC_BOOT_TIME))?,
            hold_input_until_rx_interrupts: flag(key::HOLD_INPUT),
            // Host-side, never in a trace: the replayer picks it.
            engine: hindsight_machine::Engine::from_env(),
        };
        let mut images = Vec::new();
        for (i, info) in h.images.iter().enumerate() {
            let bytes = match reader.embedded_image(i) {
                Some(b) => b.to_vec(),
                None => find_image(info, search_dirs)?,
            };
            images.push((
                info.role.clone(),
                Image {
                    name: info.name.clone(),
                    bytes,
                },
            ));
        }
        let mut images = images.into_iter();
        let kernel = match images.next() {
            Some((ImageRole::Kernel, k)) => k,
            _ => return Err("the trace's first image is not a kernel".into()),
        };
        let cmdline = get(keys::KERNEL_CMDLINE)?.to_string();
        let guest = match get(key::COMMAND)? {
            "boot" => Guest::Linux {
                kernel,
                initrd: images.next().map(|(_, i)| i),
                append: cmdline,
                guest_decompress: flag(key::GUEST_DECOMPRESS),
            },
            "run" => Guest::Multiboot {
                kernel,
                cmdline,
                modules: images
                    .enumerate()
                    .map(|(n, (_, img))| {
                        let args = get(&format!("{}.{n}", key::MODULE))?.to_string();
                        Ok((args, img))
                    })
                    .collect::<Result<_, String>>()?,
            },
            other => {
                return Err(format!(
                    "the trace was recorded by an unknown command '{other}'"
                ))
            }
        };
        Ok(Setup { config, guest })
    }
}

/// The bytes of a recorded image: the file at its recorded path, or any
/// file directly in `dirs`, whose SHA-256 matches.
fn find_image(info: &ImageInfo, dirs: &[PathBuf]) -> Result<Vec<u8>, String> {
    let want: String = info.sha256.iter().map(|b| format!("{b:02x}")).collect();
    let matches = |p: &Path| -> Option<Vec<u8>> {
        let meta = std::fs::metadata(p).ok()?;
        if !meta.is_file() || meta.len() != info.size {
            return None;
        }
        let bytes = std::fs::read(p).ok()?;
        (sha256_hex(&bytes) == want).then_some(bytes)
    };
    if let Some(b) = matches(Path::new(&info.name)) {
        return Ok(b);
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            if let Some(b) = matches(&e.path()) {
                return Ok(b);
            }
        }
    }
    Err(format!(
        "image '{}' ({:?}, {} bytes, sha256 {want}) is not embedded in the trace and no file \
         with that hash was found at its recorded path or in {}; record with --embed-images \
         or pass --image-dir",
        info.name,
        info.role,
        info.size,
        dirs.iter()
            .map(|d| format!("'{}'", d.display()))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hindsight_timetravel::TraceWriter;

    fn image(name: &str, fill: u8, len: usize) -> Image {
        Image {
            name: name.into(),
            bytes: vec![fill; len],
        }
    }

    /// Writes `setup`'s header (images embedded or not) and reads it back.
    fn round_trip(setup: &Setup, embed: bool, dirs: &[PathBuf]) -> Result<Setup, String> {
        let images: Vec<Option<&[u8]>> = match embed {
            true => setup
                .images()
                .into_iter()
                .map(|(_, i)| Some(i.bytes.as_slice()))
                .collect(),
            false => Vec::new(),
        };
        let w = TraceWriter::new(Vec::new(), &setup.header(), &images).unwrap();
        let bytes = w
            .finish(hindsight_timetravel::EndRecord {
                icount: 0,
                final_hash: [0; 32],
                exit_code: 0,
                reason: String::new(),
            })
            .unwrap();
        let reader = TraceReader::new(std::io::Cursor::new(bytes)).unwrap();
        Setup::from_trace(&reader, dirs)
    }

    #[test]
    fn a_multiboot_setup_survives_the_trace_header() {
        let setup = Setup {
            config: MachineConfig {
                memory: 64 << 20,
                cpus: 2,
                seed: 7,
                rtc_unix_secs: 1234,
                ..MachineConfig::default()
            },
            guest: Guest::Multiboot {
                kernel: image("k.elf", 1, 100),
                cmdline: "console=ttyS0 x=1".into(),
                modules: vec![
                    ("m1.img a b".into(), image("m1.img", 2, 10)),
                    ("m2.img".into(), image("m2.img", 3, 20)),
                ],
            },
        };
        let back = round_trip(&setup, true, &[]).unwrap();
        assert_eq!(back.config, setup.config);
        let Guest::Multiboot {
            kernel,
            cmdline,
            modules,
        } = back.guest
        else {
            panic!("not multiboot");
        };
        assert_eq!(
            (kernel.bytes, cmdline.as_str()),
            (vec![1; 100], "console=ttyS0 x=1")
        );
        let mods: Vec<(String, Vec<u8>)> = modules.into_iter().map(|(a, i)| (a, i.bytes)).collect();
        assert_eq!(
            mods,
            [
                ("m1.img a b".to_string(), vec![2; 10]),
                ("m2.img".to_string(), vec![3; 20])
            ]
        );
    }

    #[test]
    fn a_linux_setup_finds_its_images_by_hash() {
        let dir = std::env::temp_dir().join(format!("hindsight-setup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let setup = Setup {
            config: MachineConfig {
                hold_input_until_rx_interrupts: true,
                ..MachineConfig::default()
            },
            guest: Guest::Linux {
                kernel: image("/nonexistent/bzImage", 4, 64),
                initrd: Some(image("/nonexistent/initrd", 5, 32)),
                append: "console=ttyS0".into(),
                guest_decompress: true,
            },
        };
        // Not embedded and not at the recorded paths: a clear error naming
        // the image and its hash.
        let err = round_trip(&setup, false, std::slice::from_ref(&dir)).unwrap_err();
        assert!(err.contains("bzImage") && err.contains("sha256"), "{err}");
        // Found in a search directory under another name.
        std::fs::write(dir.join("kernel-copy"), vec![4u8; 64]).unwrap();
        std::fs::write(dir.join("initrd-copy"), vec![5u8; 32]).unwrap();
        let back = round_trip(&setup, false, std::slice::from_ref(&dir)).unwrap();
        assert_eq!(back.config, setup.config);
        let Guest::Linux {
            kernel,
            initrd,
            append,
            guest_decompress,
        } = back.guest
        else {
            panic!("not Linux");
        };
        assert_eq!(kernel.bytes, vec![4; 64]);
        assert_eq!(initrd.map(|i| i.bytes), Some(vec![5; 32]));
        assert_eq!((append.as_str(), guest_decompress), ("console=ttyS0", true));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
