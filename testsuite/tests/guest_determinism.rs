//! Virtual time makes a run a pure function of its inputs: the demo guest
//! (which prints TSC values and counts timer interrupts) must produce the
//! same console output and the same instruction count every time.

use hindsight_machine::{Exit, Machine, MachineConfig};
use hindsight_testsuite::guests;

fn run_demo() -> (Exit, Vec<u8>, u64) {
    let g = guests::demo();
    let mut m = Machine::new(&MachineConfig {
        memory: 64 << 20,
        max_insns: Some(500_000_000),
        ..MachineConfig::default()
    })
    .expect("machine");
    m.load_flat(&g.bytes, g.load_addr, g.entry)
        .expect("load demo");
    let exit = m.run();
    (exit, m.take_console_output(), m.icount())
}

#[test]
fn demo_runs_identically_twice() {
    let (e1, out1, n1) = run_demo();
    let (e2, out2, n2) = run_demo();
    let text = String::from_utf8_lossy(&out1);
    println!("{text}");
    assert_eq!(e1, Exit::DebugExit(1), "demo exit (writes 0 to port 0xf4)");
    assert_eq!(e1, e2);
    assert!(text.contains("hindsight"), "banner missing");
    assert!(text.contains("[long mode]"), "did not reach long mode");
    assert!(
        text.contains("interrupts: 5\n"),
        "timer count line missing or wrong"
    );
    assert_eq!(out1, out2, "console output differs between runs");
    assert_eq!(n1, n2, "instruction count differs between runs");
}

#[test]
fn bench_guest_runs_until_the_limit() {
    let g = guests::bench();
    let mut m = Machine::new(&MachineConfig {
        memory: 64 << 20,
        max_insns: Some(20_000_000),
        ..MachineConfig::default()
    })
    .expect("machine");
    m.load_flat(&g.bytes, g.load_addr, g.entry)
        .expect("load bench");
    let exit = m.run();
    let text = String::from_utf8_lossy(&m.take_console_output()).into_owned();
    println!("{text}");
    assert_eq!(
        exit,
        Exit::InsnLimit,
        "bench must run until stopped; output:\n{text}"
    );
    assert!(
        text.contains("round 1: crc32 "),
        "no round completed:\n{text}"
    );
}
