//! Whole-machine state: save/restore, the state hash, determinism.

use iced_x86::code_asm::*;

use super::test_guest::{busy_guest, RX_BUF, TICKS};
use super::tests::{protected_mode, small};
use super::*;
use crate::checkpoint::CheckpointStore;
use crate::codec;
use crate::snapshot::{MachineState, SnapshotError, STATE_VERSION};
use crate::state_hash::{state_hash, PageDigests};

const MIB: u64 = 1 << 20;

/// The state hash computed from scratch, without the page digest cache.
fn uncached_hash(m: &Machine) -> [u8; 32] {
    state_hash(&m.save_state(), &m.ram, &mut PageDigests::default()).unwrap()
}

fn read_u32(m: &Machine, gpa: u64) -> u32 {
    let mut b = [0; 4];
    m.read_phys(gpa, &mut b).unwrap();
    u32::from_le_bytes(b)
}

#[test]
fn busy_guest_works() {
    let mut m = busy_guest(2, 16 * MIB);
    assert_eq!(m.run_until(200_000), Exit::InsnLimit);
    m.console_input(b"typed\n");
    assert_eq!(m.run_until(600_000), Exit::InsnLimit);
    let out = m.take_console_output();
    assert!(out.contains(&b'.'), "{out:?}");
    assert!(out.windows(6).any(|w| w == b"typed\n"), "echo: {out:?}");
    let mut rx = [0; 6];
    m.read_phys(RX_BUF, &mut rx).unwrap();
    assert_eq!(&rx, b"typed\n");
    assert!(read_u32(&m, TICKS) > 20, "timer ticks");
    let ap = &m.cpus()[1];
    assert!(
        !ap.halted && ap.mode == hindsight_cpu::Mode::Real,
        "AP started"
    );
    assert!(read_u32(&m, 0x9000) & 0xFFFF > 100, "AP loop ran");
}

/// (a) Two machines fed the same input at the same count agree at every
/// step; one of them also takes checkpoints (new dirty epochs, flushed
/// TLBs), which must not change what the guest does. The cached hash
/// always equals a hash computed from scratch.
#[test]
fn identical_runs_have_identical_hashes_at_every_step() {
    let mut a = busy_guest(2, 16 * MIB);
    let mut b = busy_guest(2, 16 * MIB);
    let mut store = CheckpointStore::new();
    let mut steps = 0;
    for t in (0..=1_200_000).step_by(10_000) {
        assert_eq!(a.run_until(t), Exit::InsnLimit);
        assert_eq!(b.run_until(t), Exit::InsnLimit);
        if t == 300_000 {
            a.console_input(b"typed\n");
            b.console_input(b"typed\n");
        }
        if t % 30_000 == 0 {
            store.take(&mut a).unwrap();
        }
        let ha = a.state_hash();
        assert_eq!(ha, b.state_hash(), "at icount {t}");
        assert_eq!(ha, uncached_hash(&a), "cache of a at icount {t}");
        assert_eq!(ha, uncached_hash(&b), "cache of b at icount {t}");
        steps += 1;
    }
    assert_eq!(steps, 121);
    assert_eq!(a.take_console_output(), b.take_console_output());
    // Another schedule seed changes the interleaving, and the hash sees it.
    let mut c = machine_with_seed(2, 12345);
    c.run_until(1_200_000);
    assert_ne!(c.state_hash(), a.state_hash());
}

fn machine_with_seed(cpus: u32, seed: u64) -> Machine {
    let mut m = busy_guest(cpus, 16 * MIB);
    m.sched = crate::sched::Scheduler::new(seed);
    m
}

/// (b) Save at N, run to M, restore N, run to M: same hash, same output.
#[test]
fn restore_then_replay_reaches_the_same_state() {
    for cpus in [1, 2] {
        let mut m = busy_guest(cpus, 16 * MIB);
        let mut store = CheckpointStore::new();
        assert_eq!(m.run_until(400_000), Exit::InsnLimit);
        m.console_input(b"later\n"); // queued: part of the state
        m.take_console_output();
        let n = store.take(&mut m).unwrap();
        assert_eq!(m.run_until(900_000), Exit::InsnLimit);
        let (hash, out) = (m.state_hash(), m.take_console_output());
        assert!(out.windows(6).any(|w| w == b"later\n"));
        let stats = store.restore(&mut m, n).unwrap();
        assert!(!stats.full_scan);
        assert_eq!(m.icount(), 400_000);
        assert_eq!(m.pending_console_input(), 6);
        assert_eq!(m.run_until(900_000), Exit::InsnLimit);
        assert_eq!(m.state_hash(), hash, "{cpus} vCPUs");
        assert_eq!(m.take_console_output(), out);
        // And once more, from the state decoded out of the checkpoint.
        store.restore(&mut m, n).unwrap();
        m.run_until(900_000);
        assert_eq!(m.state_hash(), hash);
    }
}

/// The state survives encoding byte for byte, and restoring it reproduces it.
#[test]
fn state_round_trips_through_the_codec() {
    let mut m = busy_guest(2, 16 * MIB);
    m.run_until(333_333);
    m.console_input(b"q");
    let saved = m.save_state();
    let bytes = codec::encode(&saved).unwrap();
    let decoded: MachineState = codec::decode(&bytes).unwrap();
    assert_eq!(codec::encode(&decoded).unwrap(), bytes);
    let before = m.state_hash();
    m.run_until(500_000);
    m.restore_state(&decoded).unwrap();
    assert_eq!(codec::encode(&m.save_state()).unwrap(), bytes);
    assert_eq!(m.icount(), 333_333);
    // RAM was not restored, so the hash differs; the state part is equal.
    assert_ne!(m.state_hash(), before);
    // Every device's state is a fixed point of from_state/state.
    let d = m.devices.state();
    m.devices.restore(&d);
    assert_eq!(m.devices.state(), d);
    // The state is compact: the TLBs are not in it.
    assert!(bytes.len() < 8192, "{} bytes", bytes.len());
}

/// A stopped machine's report survives a restore.
#[test]
fn a_stop_report_survives_a_restore() {
    let build = &mut |a: &mut CodeAssembler| {
        a.nop()?;
        a.ud2()
    };
    let mut m = protected_mode(small(), build);
    let exit = m.run();
    assert!(matches!(exit, Exit::Stopped(_)), "{exit:?}");
    let s = m.save_state();
    let decoded: MachineState = codec::decode(&codec::encode(&s).unwrap()).unwrap();
    let mut fresh = protected_mode(small(), build);
    fresh.restore_state(&decoded).unwrap();
    assert_eq!(fresh.run(), exit);
}

/// (d) A state of another machine shape is refused, and nothing changes.
#[test]
fn mismatched_states_are_refused_clearly() {
    let mut two = busy_guest(2, 16 * MIB);
    two.run_until(50_000);
    let state = two.save_state();
    let mut one = busy_guest(1, 16 * MIB);
    one.run_until(10_000);
    let before = one.state_hash();
    let e = one.restore_state(&state).unwrap_err();
    assert!(matches!(
        e,
        SnapshotError::CpuCount {
            found: 2,
            expected: 1
        }
    ));
    assert_eq!(
        e.to_string(),
        "the machine state has 2 vCPUs but this machine has 1"
    );
    let mut bigger = busy_guest(2, 32 * MIB);
    let e = bigger.restore_state(&state).unwrap_err();
    assert!(matches!(e, SnapshotError::RamSize { .. }), "{e}");
    assert!(e.to_string().contains("RAM"), "{e}");
    let mut s = state.clone();
    s.version = STATE_VERSION + 1;
    let e = two.restore_state(&s).unwrap_err();
    assert!(e.to_string().contains("not supported"), "{e}");
    let mut s = state.clone();
    s.sched.current = 7;
    let e = two.restore_state(&s).unwrap_err();
    assert!(matches!(e, SnapshotError::Inconsistent(_)), "{e}");
    let mut s = state.clone();
    s.vcpus[1].bitness = 8;
    assert!(two.restore_state(&s).is_err());
    let mut s = state.clone();
    s.devices.pit.channels[2].reload = 0;
    let e = two.restore_state(&s).unwrap_err();
    assert!(e.to_string().contains("PIT channel 2 counts 0"), "{e}");
    let mut s = state.clone();
    s.devices.apic.lapics.pop();
    assert!(two.restore_state(&s).is_err());
    let mut s = state.clone();
    s.devices
        .apic
        .cpu_signals
        .push((5, crate::apic::CpuSignal::Init));
    assert!(two.restore_state(&s).is_err());
    // Truncated or corrupt bytes are a decode error, not a panic.
    let bytes = codec::encode(&state).unwrap();
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        assert!(codec::decode::<MachineState>(&bytes[..cut]).is_err());
    }
    assert_eq!(one.state_hash(), before, "refusals changed nothing");
}

/// (e) One byte of RAM or one register changes the hash; putting it back
/// restores the hash (the digest cache follows host-side writes).
#[test]
fn the_hash_sees_one_byte_and_one_register() {
    let mut m = busy_guest(1, 16 * MIB);
    m.run_until(100_000);
    let h0 = m.state_hash();
    assert_eq!(m.state_hash(), h0, "stable");
    let gpa = 0x77_7777;
    let mut old = [0u8; 1];
    m.read_phys(gpa, &mut old).unwrap();
    m.write_phys(gpa, &[old[0] ^ 1]).unwrap();
    let h1 = m.state_hash();
    assert_ne!(h1, h0);
    m.start_dirty_epoch();
    assert_eq!(m.state_hash(), h1);
    m.write_phys(gpa, &old).unwrap();
    assert_eq!(m.state_hash(), h0);
    m.start_dirty_epoch();
    assert_eq!(m.state_hash(), h0);
    let mut s = m.save_state();
    s.vcpus[0].gpr[hindsight_cpu::state::reg::RBP] ^= 1 << 40;
    m.restore_state(&s).unwrap();
    assert_ne!(m.state_hash(), h0);
    s.vcpus[0].gpr[hindsight_cpu::state::reg::RBP] ^= 1 << 40;
    m.restore_state(&s).unwrap();
    assert_eq!(m.state_hash(), h0);
    s.devices.pit.port61 ^= 2;
    m.restore_state(&s).unwrap();
    assert_ne!(m.state_hash(), h0);
}

/// Zero pages do not enter the hash: a page written and zeroed again
/// hashes as never touched.
#[test]
fn zero_pages_are_left_out_of_the_hash() {
    let mut m = busy_guest(1, 16 * MIB);
    let h0 = m.state_hash();
    m.write_phys(0xE0_0000, &[5]).unwrap();
    assert_ne!(m.state_hash(), h0);
    m.write_phys(0xE0_0000, &[0]).unwrap();
    assert_eq!(m.state_hash(), h0);
}
