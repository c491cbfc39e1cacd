//! Debugger breakpoints and watchpoints in the run loop: exact stops, no
//! guest-visible change, and resuming over a breakpoint.

use std::sync::Arc;

use iced_x86::code_asm::*;

use crate::debug::{DebugHit, DebugSet, WatchKind, Watchpoint};
use crate::state::reg;
use crate::testutil::{assemble, cpu_in, install_tables, TestBus, TestMode, CODE, DATA};
use crate::{CodeCache, Cpu, Ctx, RunExit};

/// The address of the program's `n`th instruction.
fn insn_addr(n: usize) -> u64 {
    let code = program();
    let mut d = iced_x86::Decoder::with_ip(64, &code, CODE, 0);
    d.iter().nth(n).expect("instruction").ip()
}

/// A loop writing the counter to DATA, reading it back to DATA+8, 5 times.
fn program() -> Vec<u8> {
    assemble(TestMode::Long64, |a| {
        let mut top = a.create_label();
        a.mov(rcx, 5u64)?;
        a.mov(rbx, DATA)?;
        a.set_label(&mut top)?;
        a.mov(qword_ptr(rbx), rcx)?;
        a.mov(rax, qword_ptr(rbx))?;
        a.mov(qword_ptr(rbx + 8), rax)?;
        a.dec(rcx)?;
        a.jnz(top)?;
        a.hlt()
    })
}

struct Rig {
    cpu: Cpu,
    bus: TestBus,
    code: CodeCache,
}

impl Rig {
    fn new(set: DebugSet) -> Rig {
        let mut bus = TestBus::new();
        install_tables(&mut bus);
        bus.write(CODE, &program());
        // Run the program once to fill the TLB, then start over with that
        // TLB: installing the set must flush it.
        let mut warm = cpu_in(TestMode::Long64);
        let mut code = CodeCache::new();
        Ctx::new(&mut warm, &mut bus, &mut code).run(1000);
        assert!(warm.halted);
        let mut cpu = cpu_in(TestMode::Long64);
        cpu.tlb = warm.tlb;
        cpu.set_debug(Some(Arc::new(set)));
        Rig { cpu, bus, code }
    }

    /// Runs to `limit` or the next debugger stop (I/O exits resumed).
    fn run(&mut self, limit: u64) -> (RunExit, Option<DebugHit>) {
        loop {
            let e = Ctx::new(&mut self.cpu, &mut self.bus, &mut self.code).run(limit);
            if let Some(hit) = self.cpu.debug.hit.take() {
                return (e, Some(hit));
            }
            if e != RunExit::Exit {
                return (e, None);
            }
        }
    }
}

#[test]
fn breakpoints_stop_before_the_instruction_and_resume_over_it() {
    let load = insn_addr(3);
    let mut r = Rig::new(DebugSet {
        breakpoints: [load].into_iter().collect(),
        ..DebugSet::default()
    });
    let mut stops = Vec::new();
    loop {
        let (e, hit) = r.run(1000);
        match hit {
            Some(DebugHit::Breakpoint { addr }) => {
                assert_eq!(addr, load);
                assert_eq!(r.cpu.rip, load, "stopped before the instruction");
                stops.push((r.cpu.icount, r.cpu.gpr[reg::RCX]));
                r.cpu.debug.skip_at = r.cpu.icount;
            }
            _ => {
                assert_eq!(e, RunExit::Halted);
                break;
            }
        }
    }
    // mov rcx, mov rbx (2), then 5 per iteration: the load is the 2nd.
    let expect: Vec<(u64, u64)> = (0..5).map(|i| (3 + 5 * i, 5 - i)).collect();
    assert_eq!(stops, expect);
    assert_eq!(r.cpu.icount, 2 + 25 + 1);
}

#[test]
fn write_watchpoints_stop_right_after_the_writer() {
    let mut r = Rig::new(DebugSet {
        watchpoints: vec![Watchpoint {
            addr: DATA + 4,
            len: 2,
            kind: WatchKind::Write,
        }],
        ..DebugSet::default()
    });
    let mut stops = Vec::new();
    while let (_, Some(hit)) = r.run(1000) {
        let DebugHit::Watch { addr, write, .. } = hit else {
            panic!("{hit:?}");
        };
        assert!(write);
        assert_eq!(addr, DATA + 4);
        stops.push((r.cpu.icount, r.cpu.rip));
    }
    // The store is the 3rd instruction, then every 5; the stop is after it.
    let expect: Vec<(u64, u64)> = (0..5).map(|i| (3 + 5 * i, insn_addr(3))).collect();
    assert_eq!(stops, expect);
    assert!(r.cpu.halted);
}

#[test]
fn read_and_access_watchpoints_see_their_kinds_only() {
    for (kind, per_iter) in [
        (WatchKind::Read, 1),
        (WatchKind::Access, 2),
        (WatchKind::Write, 1),
    ] {
        let mut r = Rig::new(DebugSet {
            watchpoints: vec![Watchpoint {
                addr: DATA,
                len: 1,
                kind,
            }],
            ..DebugSet::default()
        });
        let mut hits = 0;
        while let (_, Some(_)) = r.run(1000) {
            hits += 1;
        }
        assert_eq!(hits, 5 * per_iter, "{kind:?}");
    }
}

#[test]
fn a_watch_elsewhere_on_the_page_changes_nothing_visible() {
    let plain = {
        let mut r = Rig::new(DebugSet::default());
        r.run(1000);
        (r.cpu.icount, r.cpu.gpr, r.bus.read(DATA + 8, 8))
    };
    let mut r = Rig::new(DebugSet {
        watchpoints: vec![Watchpoint {
            addr: DATA + 0x800,
            len: 8,
            kind: WatchKind::Access,
        }],
        breakpoints: [CODE + 0x500].into_iter().collect(),
    });
    let (e, hit) = r.run(1000);
    assert_eq!((e, hit), (RunExit::Halted, None));
    assert_eq!((r.cpu.icount, r.cpu.gpr, r.bus.read(DATA + 8, 8)), plain);
}
