//! Figures for checkpoints, restores and the state hash (ignored tests
//! that print, never assert on time). Run with
//! `cargo test --release -p hindsight-machine snapshot_bench -- --ignored --nocapture`;
//! the Linux one needs `HINDSIGHT_BENCH_KERNEL` (a bzImage) and
//! `HINDSIGHT_BENCH_INITRD`, optionally `HINDSIGHT_BENCH_VMLINUX` (its
//! decompressed kernel) and `HINDSIGHT_BENCH_CPUS`.

use std::time::Instant;

use super::*;
use crate::checkpoint::CheckpointStore;
use crate::state_hash::{state_hash, PageDigests};

const MIB: u64 = 1 << 20;
const PAGE: usize = PAGE_SIZE as usize;

/// Milliseconds since `t`.
fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Fills `page` with content of a kind: text-like (compresses about 3:1)
/// or noise (does not compress).
fn fill(page: &mut [u8; PAGE], kind: &str, seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for (i, chunk) in page.chunks_mut(8).enumerate() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = match kind {
            "text" => {
                let words = [
                    *b"the quic",
                    *b"k brown ",
                    *b"fox 1234",
                    *b"\0\0\0\0\0\0\0\0",
                ];
                let mut w = words[(x % 4) as usize];
                w[i % 8] = (x >> 8) as u8 & 0x7F;
                u64::from_le_bytes(w)
            }
            _ => x,
        };
        chunk.copy_from_slice(&v.to_le_bytes());
    }
}

/// The state hash without the digest cache.
fn uncached(m: &Machine) -> [u8; 32] {
    state_hash(&m.save_state(), &m.ram, &mut PageDigests::default()).unwrap()
}

#[test]
#[ignore = "prints figures; run with --ignored --nocapture"]
fn synthetic_figures() {
    let mut m = Machine::new(&MachineConfig::default()).unwrap(); // 512 MiB
                                                                  // `jmp $`: checkpoints need time to pass between them.
    let real = EntryMode::Real16 { cs: 0, ip: 0x7C00 };
    m.load_flat(&[0xEB, 0xFE], 0x7C00, real).unwrap();
    let t = Instant::now();
    let h = m.state_hash();
    println!("state hash, 512 MiB all zero, cold: {:.1} ms", ms(t));
    let t = Instant::now();
    assert_eq!(m.state_hash(), h);
    println!("state hash, 512 MiB all zero, cached: {:.2} ms", ms(t));
    let mut store = CheckpointStore::new();
    store.take(&mut m).unwrap();
    for kind in ["text", "noise"] {
        for dirty_mib in [4u64, 64] {
            let pages = dirty_mib * MIB / PAGE_SIZE;
            let write = |m: &mut Machine, round: u64| {
                let mut page = [0u8; PAGE];
                for p in 0..pages {
                    fill(&mut page, kind, p * 7919 + round);
                    m.write_phys(0x10_0000 + p * PAGE_SIZE, &page).unwrap();
                }
            };
            write(&mut m, 1);
            m.run_until(m.icount() + 100);
            let base = store.take(&mut m).unwrap();
            write(&mut m, 2);
            m.run_until(m.icount() + 100);
            let t = Instant::now();
            let h = m.state_hash();
            let hash_ms = ms(t);
            let t = Instant::now();
            assert_eq!(uncached(&m), h);
            let full_hash_ms = ms(t);
            let t = Instant::now();
            let i = store.take(&mut m).unwrap();
            let take_ms = ms(t);
            let bytes = store.get(i).unwrap().bytes();
            let t = Instant::now();
            let stats = store.restore(&mut m, base).unwrap();
            let restore_ms = ms(t);
            let t = Instant::now();
            store.restore(&mut m, i).unwrap();
            let forward_ms = ms(t);
            println!(
                "{kind:>5}, {dirty_mib:>2} MiB dirty: checkpoint {take_ms:.1} ms ({:.2} ms/MiB, \
                 {:.0}% of the bytes kept), restore back {restore_ms:.1} ms ({:.2} ms/MiB, \
                 {} pages), forward {forward_ms:.1} ms; hash {hash_ms:.1} ms, \
                 uncached {full_hash_ms:.1} ms",
                take_ms / dirty_mib as f64,
                100.0 * bytes as f64 / (dirty_mib * MIB) as f64,
                restore_ms / dirty_mib as f64,
                stats.pages_written,
            );
            assert_eq!(m.state_hash(), h);
        }
    }
    println!(
        "store: {} checkpoints, {:.1} MiB",
        store.len(),
        store.bytes() as f64 / MIB as f64
    );
}

#[test]
#[ignore = "boots Linux (HINDSIGHT_BENCH_KERNEL, HINDSIGHT_BENCH_INITRD); prints figures"]
fn linux_figures() {
    let (Ok(kernel), Ok(initrd)) = (
        std::env::var("HINDSIGHT_BENCH_KERNEL"),
        std::env::var("HINDSIGHT_BENCH_INITRD"),
    ) else {
        println!("set HINDSIGHT_BENCH_KERNEL and HINDSIGHT_BENCH_INITRD");
        return;
    };
    let kernel = std::fs::read(kernel).unwrap();
    let initrd = std::fs::read(initrd).unwrap();
    let vmlinux = std::env::var("HINDSIGHT_BENCH_VMLINUX")
        .ok()
        .map(|p| std::fs::read(p).unwrap());
    let cpus = std::env::var("HINDSIGHT_BENCH_CPUS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    let cfg = MachineConfig {
        cpus,
        hold_input_until_rx_interrupts: true,
        ..MachineConfig::default()
    };
    let mut m = Machine::new(&cfg).unwrap();
    m.load_linux(&kernel, vmlinux.as_deref(), "console=ttyS0", Some(&initrd))
        .unwrap();
    let mut store = CheckpointStore::new();
    let t = Instant::now();
    store.take(&mut m).unwrap();
    let c0 = store.get(0).unwrap();
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
        let i = store.take(&mut m).unwrap();
        let take_ms = ms(t);
        take_total += take_ms;
        dirty_total += dirty;
        hashes.push((i, h));
        println!(
            "icount {:>5} M: {exit}, {dirty:>6} pages dirty, checkpoint {take_ms:>6.1} ms \
             ({:.2} ms/MiB, {:.1} MiB kept), hash {hash_ms:>6.1} ms",
            k * step / 1_000_000,
            take_ms / (dirty * PAGE_SIZE) as f64 * MIB as f64,
            store.get(i).unwrap().bytes() as f64 / MIB as f64,
        );
    }
    println!(
        "checkpoints: {:.2} ms per MiB dirtied on average; store {:.1} MiB",
        take_total / (dirty_total * PAGE_SIZE) as f64 * MIB as f64,
        store.bytes() as f64 / MIB as f64
    );
    let t = Instant::now();
    let h = uncached(&m);
    println!(
        "state hash without the cache, 512 MiB after boot: {:.1} ms ({} non-zero pages)",
        ms(t),
        m.ram()
            .pages()
            .filter(|&g| m
                .ram()
                .read_page(g)
                .is_some_and(|p| !crate::memory::is_zero(p)))
            .count()
    );
    assert_eq!(h, m.state_hash());
    let t = Instant::now();
    m.state_hash();
    println!("state hash, nothing changed: {:.2} ms", ms(t));
    for &(i, h) in hashes.iter().rev().step_by(3).chain(hashes.iter().take(2)) {
        let t = Instant::now();
        let stats = store.restore(&mut m, i).unwrap();
        let restore_ms = ms(t);
        assert_eq!(m.state_hash(), h, "checkpoint {i}");
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
        store.restore(&mut m, i).unwrap();
        let target = store.get(next).unwrap().icount();
        let t = Instant::now();
        m.run_until(target);
        assert_eq!(m.state_hash(), next_hash, "replay {i} -> {next}");
        println!(
            "replayed checkpoint {i} -> {next} ({} M instructions, {:.1} s): same state hash",
            step / 1_000_000,
            t.elapsed().as_secs_f64()
        );
    }
}
