//! Checkpoint, restore and state-hash figures on a Linux boot (prints, never
//! asserts on time):
//!
//! ```sh
//! cargo run --release -p hindsight-machine --example checkpoint_bench -- \
//!     KERNEL INITRD [VMLINUX [CPUS]]
//! ```
//!
//! KERNEL is a bzImage, INITRD its initramfs (`hindsight fetch` prints
//! both), VMLINUX optionally the decompressed kernel (`vmlinux-*.elf` in the
//! same cache) so the in-guest decompressor does not run. A checkpoint is
//! taken every 100 M instructions through 1.3 G instructions of boot; then
//! checkpoints are restored, and replays from them must reach the next one's
//! state hash.

use std::time::Instant;

use hindsight_machine::checkpoint::CheckpointStore;
use hindsight_machine::layout::PAGE_SIZE;
use hindsight_machine::memory::is_zero;
use hindsight_machine::{Machine, MachineConfig};

const MIB: u64 = 1 << 20;

/// Milliseconds since `t`.
fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    if let Err(e) = run() {
        eprintln!("checkpoint_bench: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(kernel), Some(initrd)) = (args.first(), args.get(1)) else {
        return Err("usage: checkpoint_bench KERNEL INITRD [VMLINUX [CPUS]]".into());
    };
    let kernel = std::fs::read(kernel)?;
    let initrd = std::fs::read(initrd)?;
    let vmlinux = args.get(2).map(std::fs::read).transpose()?;
    let cpus = args.get(3).map(|c| c.parse()).transpose()?.unwrap_or(1);
    let cfg = MachineConfig {
        cpus,
        hold_input_until_rx_interrupts: true,
        ..MachineConfig::default()
    };
    let mut m = Machine::new(&cfg)?;
    m.load_linux(&kernel, vmlinux.as_deref(), "console=ttyS0", Some(&initrd))?;
    let mut store = CheckpointStore::new();
    let t = Instant::now();
    store.take(&mut m)?;
    let c0 = store.get(0).ok_or("no checkpoint 0")?;
    println!(
        "checkpoint 0 (full): {:.1} ms, {} pages, {:.1} MiB kept",
        ms(t),
        c0.pages().len(),
        c0.bytes() as f64 / MIB as f64
    );
    let step = 100_000_000;
    let mut hashes = Vec::new();
    let (mut take_total, mut dirty_total) = (0.0, 0u64);
    for k in 1..=13u64 {
        let exit = m.run_until(k * step);
        let dirty = m.ram().dirty_pages().count() as u64;
        let t = Instant::now();
        let h = m.state_hash();
        let hash_ms = ms(t);
        let t = Instant::now();
        let i = store.take(&mut m)?;
        let take_ms = ms(t);
        take_total += take_ms;
        dirty_total += dirty;
        hashes.push((i, h));
        println!(
            "icount {:>5} M: {exit}, {dirty:>6} pages dirty, checkpoint {take_ms:>6.1} ms \
             ({:.2} ms/MiB, {:.1} MiB kept), hash {hash_ms:>6.1} ms",
            k * step / 1_000_000,
            take_ms / (dirty * PAGE_SIZE) as f64 * MIB as f64,
            store.get(i).map_or(0, |c| c.bytes()) as f64 / MIB as f64,
        );
    }
    println!(
        "checkpoints: {:.2} ms per MiB dirtied on average; store {:.1} MiB",
        take_total / (dirty_total * PAGE_SIZE) as f64 * MIB as f64,
        store.bytes() as f64 / MIB as f64
    );
    let nonzero = m
        .ram()
        .pages()
        .filter(|&g| m.ram().read_page(g).is_some_and(|p| !is_zero(p)))
        .count();
    println!("RAM after boot: {nonzero} non-zero pages");
    let t = Instant::now();
    m.state_hash();
    println!("state hash, nothing changed: {:.2} ms", ms(t));
    for &(i, h) in hashes.iter().rev().step_by(3).chain(hashes.iter().take(2)) {
        let t = Instant::now();
        let stats = store.restore(&mut m, i)?;
        let restore_ms = ms(t);
        if m.state_hash() != h {
            return Err(format!("checkpoint {i}: restored state hash differs").into());
        }
        println!(
            "restore checkpoint {i:>2}: {restore_ms:>6.1} ms, {} pages checked, {} written \
             ({:.2} ms/MiB written)",
            stats.pages_checked,
            stats.pages_written,
            restore_ms / (stats.pages_written.max(1) as u64 * PAGE_SIZE) as f64 * MIB as f64
        );
    }
    // Replaying from a restored checkpoint reaches the next one exactly
    // (cold code cache, flushed TLBs and all).
    for k in [2, 7, 11] {
        let (i, _) = hashes[k];
        let (next, next_hash) = hashes[k + 1];
        store.restore(&mut m, i)?;
        let target = store.get(next).ok_or("no checkpoint")?.icount();
        let t = Instant::now();
        m.run_until(target);
        if m.state_hash() != next_hash {
            return Err(format!("replay {i} -> {next}: state hash differs").into());
        }
        println!(
            "replayed checkpoint {i} -> {next} ({} M instructions, {:.1} s): same state hash",
            step / 1_000_000,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
