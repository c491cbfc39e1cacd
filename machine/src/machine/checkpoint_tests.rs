//! Incremental checkpoints on the busy guest: random-order restores,
//! thinning, insertion after going back, divergence, lost tracking.

use super::test_guest::{busy_guest, PATTERN};
use super::*;
use crate::checkpoint::{CheckpointStore, PageData};
use crate::snapshot::SnapshotError;

const MIB: u64 = 1 << 20;
/// Instructions between checkpoints.
const STEP: u64 = 10_000;
/// When the console input is typed (just before the checkpoint there).
const INPUT_AT: u64 = 250_000;

/// A store with a checkpoint every `STEP` instructions up to `end` (input
/// typed at `INPUT_AT`), and the state hash and icount at each.
fn recorded(cpus: u32, end: u64) -> (Machine, CheckpointStore, Vec<(u64, [u8; 32])>) {
    let mut m = busy_guest(cpus, 16 * MIB);
    let mut store = CheckpointStore::new();
    let mut hashes = Vec::new();
    for t in (0..=end).step_by(STEP as usize) {
        assert_eq!(m.run_until(t), Exit::InsnLimit);
        if t == INPUT_AT {
            m.console_input(b"typed\n");
        }
        let i = store.take(&mut m).unwrap();
        assert_eq!(i, hashes.len());
        hashes.push((t, m.state_hash()));
    }
    (m, store, hashes)
}

/// xorshift64: a fixed "random" order.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

/// Restores checkpoint `i` and checks it against the recorded hash.
fn check_restore(m: &mut Machine, store: &mut CheckpointStore, i: usize, hash: [u8; 32]) {
    let stats = store.restore(m, i).unwrap();
    assert!(!stats.full_scan);
    assert_eq!(m.icount(), store.get(i).unwrap().icount());
    assert_eq!(
        m.state_hash(),
        hash,
        "checkpoint {i} at icount {}",
        m.icount()
    );
    assert_eq!(store.base(), Some(i));
}

/// (c) Checkpoints along a run that writes (and re-zeroes) pages restore
/// exactly in any order, and running on from a restored one reaches the
/// next one's state.
#[test]
fn checkpoints_restore_exactly_in_random_order() {
    for cpus in [1, 2] {
        let (mut m, mut store, hashes) = recorded(cpus, 600_000);
        assert_eq!(store.len(), 61);
        // The first checkpoint holds every non-zero page, zero ones elided.
        let first = store.get(0).unwrap();
        assert!(first.pages().iter().all(|(_, d)| !d.is_zero()));
        // Later ones hold only what was dirtied, some of it zeroed again.
        let later: Vec<_> = store.iter().skip(1).collect();
        assert!(later.iter().all(|c| c.pages().len() < 300));
        assert!(later
            .iter()
            .any(|c| c.pages().iter().any(|(g, d)| d.is_zero() && *g >= PATTERN)));
        let mut order: Vec<usize> = (0..store.len()).collect();
        shuffle(&mut order, 0x5EED + u64::from(cpus));
        for &i in &order {
            check_restore(&mut m, &mut store, i, hashes[i].1);
            if i + 1 < hashes.len() && i % 3 == 0 {
                // Running on reaches the next checkpoint's state, and taking
                // a checkpoint there finds the existing one.
                m.run_until(hashes[i + 1].0);
                if hashes[i + 1].0 == INPUT_AT {
                    m.console_input(b"typed\n"); // as recorded
                }
                assert_eq!(m.state_hash(), hashes[i + 1].1, "{i} -> {}", i + 1);
                assert_eq!(store.take(&mut m).unwrap(), i + 1);
            }
        }
        assert_eq!(store.len(), 61);
    }
}

/// Thinning merges a checkpoint's pages into its successor: every
/// remaining checkpoint still restores exactly, and memory goes down.
#[test]
fn thinning_keeps_every_remaining_checkpoint_exact() {
    let (mut m, mut store, mut hashes) = recorded(2, 400_000);
    let full = store.bytes();
    // Restore one in the middle so the base is removed too.
    check_restore(&mut m, &mut store, 20, hashes[20].1);
    let mut i = 1;
    while i < store.len() {
        store.remove(i).unwrap();
        hashes.remove(i);
        i += 1;
    }
    // The base was removed: the store knows where the machine is anyway.
    assert!(store.base().is_some());
    store.remove(0).unwrap();
    hashes.remove(0);
    assert_eq!(store.len(), hashes.len());
    assert!(store.bytes() < full, "{} >= {full}", store.bytes());
    let mut order: Vec<usize> = (0..store.len()).collect();
    shuffle(&mut order, 99);
    for &i in &order {
        check_restore(&mut m, &mut store, i, hashes[i].1);
    }
    assert!(matches!(
        store.remove(store.len()),
        Err(SnapshotError::NoCheckpoint { .. })
    ));
}

/// After going back, a checkpoint taken between two others is inserted in
/// time order and restores exactly, as do its neighbours; a run that left
/// the timeline is refused at an existing checkpoint, and truncating the
/// future lets it go on.
#[test]
fn checkpoints_after_going_back_are_inserted_or_refused() {
    let (mut m, mut store, hashes) = recorded(2, 200_000);
    check_restore(&mut m, &mut store, 3, hashes[3].1);
    m.run_until(hashes[3].0 + 4_321);
    let mid_hash = m.state_hash();
    let k = store.take(&mut m).unwrap();
    assert_eq!(k, 4);
    assert_eq!(store.len(), hashes.len() + 1);
    for (i, h) in [
        (5, hashes[4].1),
        (4, mid_hash),
        (3, hashes[3].1),
        (20, hashes[19].1),
    ] {
        check_restore(&mut m, &mut store, i, h);
    }
    // Taking a checkpoint where one exists checks the RAM too: a host-side
    // write (a debugger's) is a divergence; without it the checkpoint is
    // found again.
    check_restore(&mut m, &mut store, 6, hashes[5].1);
    assert_eq!(store.take(&mut m).unwrap(), 6);
    m.write_phys(0x77_0000, b"poke").unwrap();
    let e = store.take(&mut m).unwrap_err();
    assert!(e.to_string().contains("RAM page 0x770000"), "{e}");
    // Different input after checkpoint 3 changes the future.
    check_restore(&mut m, &mut store, 3, hashes[3].1);
    m.console_input(b"other\n");
    m.run_until(hashes[4].0);
    let e = store.take(&mut m).unwrap_err();
    assert!(matches!(e, SnapshotError::Diverged { .. }), "{e}");
    assert!(e.to_string().contains("diverged"), "{e}");
    assert!(e.to_string().contains("machine state"), "{e}");
    store.truncate(4);
    assert_eq!(store.len(), 4);
    let k = store.take(&mut m).unwrap();
    assert_eq!(k, 4);
    let new_hash = m.state_hash();
    check_restore(&mut m, &mut store, 0, hashes[0].1);
    check_restore(&mut m, &mut store, 4, new_hash);
}

/// A store that lost track of the machine (another machine, an epoch
/// started behind its back) refuses to take checkpoints, and restores by
/// checking all of RAM; after that it tracks again.
#[test]
fn lost_tracking_means_a_full_scan_restore() {
    let (mut m, mut store, hashes) = recorded(1, 100_000);
    m.run_until(150_000);
    m.start_dirty_epoch();
    let e = store.take(&mut m).unwrap_err();
    assert!(matches!(e, SnapshotError::Untracked(_)), "{e}");
    let stats = store.restore(&mut m, 5).unwrap();
    assert!(stats.full_scan);
    assert_eq!(m.state_hash(), hashes[5].1);
    check_restore(&mut m, &mut store, 8, hashes[8].1);
    // A fresh machine of the same shape: restored from nothing.
    let mut fresh = busy_guest(1, 16 * MIB);
    fresh.write_phys(0xA0_0000, b"junk").unwrap();
    let stats = store.restore(&mut fresh, 7).unwrap();
    assert!(stats.full_scan);
    assert_eq!(fresh.state_hash(), hashes[7].1);
    // Now the store follows `fresh`; `m` is the stranger.
    check_restore(&mut fresh, &mut store, 2, hashes[2].1);
    assert!(store.take(&mut m).is_err());
    // Another shape is refused before anything is touched.
    let mut two = busy_guest(2, 16 * MIB);
    let before = two.state_hash();
    assert!(matches!(
        store.restore(&mut two, 1),
        Err(SnapshotError::CpuCount { .. })
    ));
    assert_eq!(two.state_hash(), before);
    assert!(matches!(
        store.restore(&mut fresh, 99),
        Err(SnapshotError::NoCheckpoint { index: 99, .. })
    ));
}

/// Restoring rewrites only the pages that differ; its cost follows the
/// work since the checkpoint.
#[test]
fn restores_touch_only_changed_pages() {
    let (mut m, mut store, hashes) = recorded(1, 300_000);
    let last = store.len() - 1;
    let near = store.restore(&mut m, last - 1).unwrap();
    let far = store.restore(&mut m, 0).unwrap();
    assert!(near.pages_checked < far.pages_checked, "{near:?} {far:?}");
    assert!(near.pages_written <= near.pages_checked);
    // Restoring where the machine already is writes nothing.
    let again = store.restore(&mut m, 0).unwrap();
    assert_eq!(again.pages_written, 0);
    assert_eq!(m.state_hash(), hashes[0].1);
    let bytes: usize = store.iter().map(|c| c.bytes()).sum();
    assert!(store.bytes() >= bytes);
    assert!(store
        .iter()
        .all(|c| c.pages().windows(2).all(|w| w[0].0 < w[1].0)));
    assert!(matches!(PageData::Zero.heap_bytes(), 0));
}
