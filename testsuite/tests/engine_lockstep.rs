//! The two engines in lockstep at machine level: the same guest run by the
//! interpreter and by the JIT, stopped at the same (irregular) instruction
//! counts, must have the same whole-machine state hash every time, and the
//! same console output and exit.

use hindsight_machine::{Engine, Exit, Machine, MachineConfig};
use hindsight_testsuite::guests::{self, GuestImage};
use hindsight_testsuite::selftest;

fn machine(image: &GuestImage, engine: Engine, input: &[u8]) -> Machine {
    let mut m = Machine::new(&MachineConfig {
        memory: 64 << 20,
        engine,
        ..MachineConfig::default()
    })
    .expect("machine");
    m.load_flat(&image.bytes, image.load_addr, image.entry)
        .expect("image");
    m.console_input(input);
    m
}

/// Runs `image` on both engines to `total` instructions in chunks of
/// varying length, comparing state hashes after each chunk. Returns the
/// number of comparisons.
fn lockstep(image: &GuestImage, input: &[u8], total: u64) -> usize {
    let mut a = machine(image, Engine::Interp, input);
    let mut b = machine(image, Engine::Jit, input);
    assert_eq!(b.engine(), Engine::Jit);
    let chunks = [1u64, 17, 1000, 3, 99_999, 250, 7, 12_345, 64, 1_000_000];
    let mut n = 0;
    let mut t = 0;
    while t < total {
        t = (t + chunks[n % chunks.len()]).min(total);
        n += 1;
        let ea = a.run_until(t);
        let eb = b.run_until(t);
        assert_eq!(ea, eb, "{}: exit at chunk {n}", image.name);
        assert_eq!(a.icount(), b.icount(), "{}: icount", image.name);
        assert_eq!(
            a.state_hash(),
            b.state_hash(),
            "{}: state hash at icount {}",
            image.name,
            a.icount()
        );
        if ea != Exit::InsnLimit {
            break;
        }
    }
    assert_eq!(
        a.take_console_output(),
        b.take_console_output(),
        "{}: console",
        image.name
    );
    let s = b.jit_stats().expect("JIT stats");
    assert!(
        s.native_runs > 0,
        "{}: nothing ran natively: {s:?}",
        image.name
    );
    n
}

#[test]
fn bench_and_demo_guests_agree_at_every_stop() {
    assert!(lockstep(&guests::bench(), b"", 20_000_000) > 30);
    assert!(lockstep(&guests::demo(), b"", 20_000_000) > 5);
}

#[test]
fn selftest_guests_agree_at_every_stop() {
    for g in selftest::guests() {
        let built = (g.build)();
        lockstep(&built.image, g.input, 5_000_000);
    }
}

#[test]
fn selftest_passes_under_the_jit() {
    let (passed, failed) = selftest::run_all_on(Engine::Jit, &mut |l| println!("{l}"));
    assert_eq!(failed, 0);
    assert!(passed >= 40, "only {passed} checks passed");
}
