//! `hindsight fetch`: download and prepare the Debian guest images.

use crate::fetch::{self, FetchOptions};
use crate::{exit_code, FetchArgs};

/// Runs the command; returns the process exit status.
pub fn run(args: &FetchArgs) -> i32 {
    let opts = FetchOptions {
        cache_dir: args.cache_dir.clone(),
        force: args.force,
    };
    let result = fetch::fetch(&opts).and_then(|img| {
        let initramfs = img.initramfs(args.run.as_deref())?;
        Ok((img, initramfs))
    });
    match result {
        Ok((img, initramfs)) => {
            println!("cache:     {}", img.cache_dir.display());
            println!(
                "kernel:    {} ({} {})",
                img.kernel.display(),
                img.kernel_package,
                img.kernel_version
            );
            if let Some(map) = &img.system_map {
                println!("system_map: {}", map.display());
            }
            println!(
                "busybox:   {} ({} {})",
                img.busybox.display(),
                fetch::BUSYBOX_PACKAGE,
                img.busybox_version
            );
            let what = match &args.run {
                Some(_) => "/init runs the --run command, then powers off",
                None => "/init starts a shell on the console",
            };
            println!("initramfs: {} ({what})", initramfs.display());
            exit_code::OK
        }
        Err(e) => {
            eprintln!("hindsight: fetch: {e}");
            exit_code::USAGE
        }
    }
}
