//! The JIT against the interpreter: the same guest run by both engines in
//! the same chunks of virtual time must leave the same state after every
//! chunk (registers, RIP, RFLAGS, count, memory, port and MMIO logs).

use std::collections::BTreeSet;
use std::sync::Arc;

use hindsight_cpu::debug::{DebugHit, DebugSet};
use hindsight_cpu::fault::vector;
use hindsight_cpu::state::reg;
use hindsight_cpu::testutil::{
    cpu_in, fault_of, install_fault_handlers, install_tables, TestBus, TestMode, CODE, DATA,
};
use hindsight_cpu::{flags, CodeCache, Cpu, Ctx, RunExit};
use iced_x86::code_asm::*;

use crate::Jit;

mod chain;
mod hammock;
mod mem;
mod ops;
mod regs;
mod sse;
mod transitions;

type Asm = CodeAssembler;
type AsmResult = Result<(), IcedError>;

/// One machine: a CPU, its bus and code cache, and maybe a JIT.
struct World {
    cpu: Cpu,
    bus: TestBus,
    code: CodeCache,
    jit: Option<Jit>,
}

impl World {
    fn new(mode: TestMode, jit: Option<Jit>) -> World {
        let mut bus = TestBus::new();
        install_tables(&mut bus);
        let cpu = cpu_in(mode);
        install_fault_handlers(&cpu, &mut bus);
        World {
            cpu,
            bus,
            code: CodeCache::new(),
            jit,
        }
    }

    fn bits(&self) -> u32 {
        self.cpu.bitness
    }

    fn asm(&mut self, at: u64, build: &dyn Fn(&mut Asm) -> AsmResult) -> Vec<u8> {
        let mut a = Asm::new(self.bits()).expect("bitness");
        build(&mut a).expect("assemble");
        let bytes = a.assemble(at).expect("assemble");
        self.bus.write(at, &bytes);
        let mut page = at & !0xfff;
        while page < at + bytes.len() as u64 {
            self.code.invalidate_page(page);
            page += 0x1000;
        }
        bytes
    }

    /// One engine call.
    fn run(&mut self, limit: u64) -> RunExit {
        let mut ctx = Ctx::new(&mut self.cpu, &mut self.bus, &mut self.code);
        match &mut self.jit {
            Some(j) => j.run(&mut ctx, limit),
            None => ctx.run(limit),
        }
    }

    /// Runs until `limit`, a halt or a stop (exits just resume).
    fn run_to(&mut self, limit: u64) -> RunExit {
        loop {
            let e = self.run(limit);
            if e != RunExit::Exit {
                return e;
            }
        }
    }

    fn stats(&self) -> crate::JitStats {
        self.jit.as_ref().map(|j| j.stats()).unwrap_or_default()
    }
}

/// Asserts that two worlds are in the same state.
fn same(a: &World, b: &World, what: &str) {
    assert_eq!(a.cpu.icount, b.cpu.icount, "icount {what}");
    assert_eq!(a.cpu.rip, b.cpu.rip, "rip {what}");
    assert_eq!(a.cpu.gpr, b.cpu.gpr, "gprs {what}");
    assert_eq!(a.cpu.xmm, b.cpu.xmm, "xmm registers {what}");
    assert_eq!(a.cpu.rflags, b.cpu.rflags, "rflags {what}");
    assert_eq!(a.cpu.halted, b.cpu.halted, "halted {what}");
    assert_eq!(a.cpu.cr2, b.cpu.cr2, "cr2 {what}");
    assert_eq!(a.cpu.dr[6], b.cpu.dr[6], "dr6 {what}");
    assert_eq!(a.bus.port_out, b.bus.port_out, "port output {what}");
    assert_eq!(a.bus.mmio, b.bus.mmio, "mmio {what}");
    assert!(a.bus.ram == b.bus.ram, "memory {what}");
}

/// Runs the guest `setup` builds in the interpreter and in a JIT
/// (translating after `threshold` runs), in chunks of `chunks` (cycled),
/// comparing after every engine call, until both halt or stop or `total`
/// instructions ran. Returns the JIT world.
fn lockstep(
    mode: TestMode,
    threshold: u32,
    chunks: &[u64],
    total: u64,
    setup: &dyn Fn(&mut World),
) -> World {
    let mut a = World::new(mode, None);
    let mut b = World::new(mode, Some(Jit::with_threshold(threshold)));
    setup(&mut a);
    setup(&mut b);
    let mut calls = 0usize;
    while a.cpu.icount < total {
        let limit = (a.cpu.icount + chunks[calls % chunks.len()]).min(total);
        calls += 1;
        let ea = a.run(limit);
        let eb = b.run(limit);
        let what = format!("after call {calls} (limit {limit})");
        assert_eq!(ea, eb, "exit {what}");
        same(&a, &b, &what);
        if ea == RunExit::Limit {
            assert_eq!(a.cpu.icount, limit, "stops exactly at the limit");
        }
        if matches!(ea, RunExit::Halted | RunExit::Stop(_)) {
            break;
        }
    }
    b
}

const CHUNKS: &[u64] = &[1, 3, 64, 7, 1000, 2, 129, 13, 100_000, 5];

/// Runs the 64-bit guest `setup` builds in lockstep at thresholds 0, 1 and
/// 16: it must halt, with over 1000 chained block entries.
fn halts_chained(setup: &dyn Fn(&mut World)) {
    for threshold in [0, 1, 16] {
        let w = lockstep(TestMode::Long64, threshold, CHUNKS, 1 << 20, setup);
        assert!(w.cpu.halted);
        let s = w.stats();
        assert!(s.chained > 1000, "{s:?}");
    }
}

/// Runs the 64-bit guest `setup` builds in lockstep with budgets of every
/// size from 1 to `steps` instructions (up to `total` instructions), then
/// with the irregular budgets `mixed` (up to `mixed_total`).
fn cut_at_every_budget(
    setup: &dyn Fn(&mut World),
    steps: u64,
    total: u64,
    mixed: &[u64],
    mixed_total: u64,
) {
    for step in 1..=steps {
        lockstep(TestMode::Long64, 0, &[step], total, setup);
    }
    lockstep(TestMode::Long64, 0, mixed, mixed_total, setup);
}

/// A loop of inlinable arithmetic in every operand size, ending in HLT.
fn alu_loop(w: &mut World) {
    w.asm(CODE, &|a| {
        let mut top = a.create_label();
        a.mov(ecx, 3000u32)?;
        a.mov(rax, 0x1234_5678_9abc_def0u64)?;
        a.set_label(&mut top)?;
        a.add(eax, ecx)?;
        a.xor(rbx, rax)?;
        a.lea(rdx, qword_ptr(rax + rbx * 4 + 7))?;
        a.sub(r8, rdx)?;
        a.inc(r9)?;
        a.and(r10d, 0xffffu32)?;
        a.or(r11, rax)?;
        a.add(r11b, al)?;
        a.sub(si, dx)?;
        a.adc(di, 3)?; // not inlined: reads CF
        a.test(eax, 3u32)?;
        a.cmp(r9, 5)?;
        a.mov(r12w, r8w)?;
        a.mov(r13d, 77u32)?;
        a.dec(r14b)?;
        a.lea(r15d, dword_ptr(rcx * 8 + 0x100))?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()
    });
    w.cpu.rip = CODE;
}

#[test]
fn alu_loop_matches_the_interpreter() {
    for threshold in [0, 1, 16] {
        let w = lockstep(TestMode::Long64, threshold, CHUNKS, 1 << 20, &alu_loop);
        assert!(w.cpu.halted);
        let s = w.stats();
        assert!(s.native_runs + s.chained > 2000, "{s:?}");
        assert!(s.chained > 1000, "most blocks are entered chained: {s:?}");
        assert!(s.inlined > 0, "{s:?}");
    }
}

#[test]
fn budgets_cut_blocks_exactly() {
    // Every small chunk size: blocks that do not fit run in the interpreter.
    for step in 1..=9 {
        let w = lockstep(TestMode::Long64, 0, &[step], 5000, &alu_loop);
        assert!(w.stats().native_runs + w.stats().chained > 0 || step < 5);
    }
}

#[test]
fn protected_mode_blocks_match() {
    let w = lockstep(TestMode::Protected32, 2, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.mov(ecx, 500u32)?;
            a.set_label(&mut top)?;
            a.add(eax, ecx)?;
            a.xor(ebx, eax)?;
            a.sub(dx, bx)?;
            a.inc(esi)?;
            a.lea(edi, dword_ptr(eax + ebx * 2 + 1))?;
            a.push(eax)?;
            a.pop(ebp)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.hlt()
        });
        w.cpu.rip = CODE;
    });
    assert!(w.cpu.halted);
    assert!(w.stats().native_runs + w.stats().chained > 400);
}

#[test]
fn a_fault_in_the_middle_of_a_hot_block_is_precise() {
    // #DE when ECX reaches 0, after the block has been translated.
    let w = lockstep(TestMode::Long64, 1, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.mov(ecx, 40u32)?;
            a.set_label(&mut top)?;
            a.mov(eax, 1000u32)?;
            a.xor(edx, edx)?;
            a.div(ecx)?;
            a.add(r8, rax)?;
            a.dec(ecx)?;
            a.jmp(top)
        });
        w.cpu.rip = CODE;
    });
    // mov ecx (5) + mov eax (5) + xor (2) = the DIV.
    assert_eq!(
        fault_of(&w.cpu, &w.bus),
        Some((vector::DE, None, CODE + 12))
    );
    assert!(w.stats().native_runs + w.stats().chained > 30);

    // #PF on a load once RSI leaves the mapped gigabyte; before that the
    // loads hit MMIO (exits).
    let w = lockstep(TestMode::Long64, 1, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            a.inc(r9)?;
            a.mov(eax, dword_ptr(rsi))?;
            a.add(rsi, 0x10_0000)?;
            a.jmp(top)
        });
        w.cpu.rip = CODE;
        w.cpu.gpr[reg::RSI] = 0x4000_0000 - 30 * 0x10_0000;
    });
    let f = fault_of(&w.cpu, &w.bus).expect("a fault");
    assert_eq!((f.0, f.2), (vector::PF, CODE + 3));
    assert_eq!(w.cpu.cr2, 0x4000_0000);
    assert_eq!(w.bus.mmio.len(), 30);
}

#[test]
fn self_modifying_code_in_a_hot_block() {
    // The loop rewrites the immediate of its own first instruction.
    let w = lockstep(TestMode::Long64, 1, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.mov(ecx, 200u32)?;
            a.set_label(&mut top)?;
            a.mov(eax, 0u32)?; // B8 imm32: the immediate at top + 1
            a.add(r8, rax)?;
            a.inc(dword_ptr(CODE + 5 + 1))?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.hlt()
        });
        w.cpu.rip = CODE;
    });
    assert!(w.cpu.halted);
    assert_eq!(w.cpu.gpr[8], (0..200).sum::<u64>());
}

#[test]
fn io_exits_leave_the_run() {
    let w = lockstep(TestMode::Long64, 0, CHUNKS, 1 << 20, &|w| {
        w.asm(CODE, &|a| {
            let mut top = a.create_label();
            a.mov(ecx, 50u32)?;
            a.set_label(&mut top)?;
            a.mov(eax, ecx)?;
            a.out(0x80, al)?;
            a.add(ebx, eax)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.hlt()
        });
        w.cpu.rip = CODE;
    });
    assert_eq!(w.bus.port_out.len(), 50);
    // Each OUT ends its block: the next instruction runs in a new call.
    let mut w = World::new(TestMode::Long64, Some(Jit::with_threshold(0)));
    alu_loop(&mut w);
    w.asm(CODE, &|a| {
        a.mov(eax, 1u32)?;
        a.out(0x80, al)?;
        a.inc(eax)?;
        a.hlt()
    });
    assert_eq!(w.run(100), RunExit::Exit);
    assert_eq!((w.cpu.icount, w.cpu.rip, w.cpu.gpr[0]), (2, CODE + 7, 1));
}

#[test]
fn breakpoints_and_single_step_take_the_interpreter() {
    // Run the loop hot, then set a debugger breakpoint inside its block.
    let brk = CODE + 15 + 2; // mov ecx; mov rax, imm64; add eax, ecx
    let mut worlds = [
        World::new(TestMode::Long64, None),
        World::new(TestMode::Long64, Some(Jit::with_threshold(0))),
    ];
    for w in &mut worlds {
        alu_loop(w);
        assert_eq!(w.run_to(500), RunExit::Limit);
        let set = DebugSet {
            breakpoints: BTreeSet::from([brk]),
            watchpoints: Vec::new(),
        };
        w.cpu.set_debug(Some(Arc::new(set)));
        assert_eq!(w.run(1 << 20), RunExit::Exit);
        assert_eq!(
            w.cpu.debug.hit,
            Some(DebugHit::Breakpoint { addr: brk }),
            "stopped before the instruction"
        );
        assert_eq!(w.cpu.rip, brk);
    }
    same(&worlds[0], &worlds[1], "at the breakpoint");
    assert!(worlds[1].stats().native_runs > 0);

    // TF: single-step traps after every instruction, as in the interpreter.
    let w = lockstep(TestMode::Protected32, 0, CHUNKS, 1 << 16, &|w| {
        w.asm(CODE, &|a| {
            a.pushfd()?;
            a.or(dword_ptr(esp), 0x100)?;
            a.popfd()?;
            a.inc(eax)?;
            a.inc(eax)?;
            a.hlt()
        });
        w.cpu.rip = CODE;
    });
    assert_eq!(fault_of(&w.cpu, &w.bus).map(|f| f.0), Some(vector::DB));
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Emits one random inlinable (or not) register instruction.
fn random_insn(a: &mut Asm, r: &mut Rng) -> AsmResult {
    const Q: [AsmRegister64; 8] = [rax, rcx, rdx, rbx, rsi, rdi, r8, r15];
    const D: [AsmRegister32; 8] = [eax, ecx, edx, ebx, esi, edi, r8d, r15d];
    const W: [AsmRegister16; 8] = [ax, cx, dx, bx, si, di, r8w, r15w];
    const B: [AsmRegister8; 8] = [al, cl, dl, bl, sil, dil, r8b, r15b];
    let (x, y) = (r.below(8) as usize, r.below(8) as usize);
    let imm = r.next() as u32 as i32;
    let op = r.below(12);
    match r.below(4) {
        0 => match op {
            0 => a.add(Q[x], Q[y]),
            1 => a.sub(Q[x], imm),
            2 => a.cmp(Q[x], Q[y]),
            3 => a.and(Q[x], imm),
            4 => a.or(Q[x], Q[y]),
            5 => a.xor(Q[x], imm),
            6 => a.test(Q[x], Q[y]),
            7 => a.inc(Q[x]),
            8 => a.dec(Q[x]),
            9 => a.mov(Q[x], r.next()),
            10 => a.lea(Q[x], qword_ptr(Q[y] + Q[x] * 2 - 9)),
            11 if y < 3 => match y {
                0 => a.shl(Q[x], imm & 63),
                1 => a.shr(Q[x], 1),
                _ => a.sar(Q[x], imm & 63),
            },
            _ => a.adc(Q[x], Q[y]),
        },
        1 => match op {
            0 => a.add(D[x], imm),
            1 => a.sub(D[x], D[y]),
            2 => a.cmp(D[x], imm),
            3 => a.and(D[x], D[y]),
            4 => a.or(D[x], imm),
            5 => a.xor(D[x], D[y]),
            6 => a.test(D[x], imm as u32),
            7 => a.inc(D[x]),
            8 => a.dec(D[x]),
            9 => a.mov(D[x], D[y]),
            10 => a.lea(D[x], dword_ptr(Q[y] + 0x7fff)),
            11 if y < 3 => match y {
                0 => a.shl(D[x], imm & 31),
                1 => a.shr(D[x], imm & 31),
                _ => a.sar(D[x], 1),
            },
            _ => a.sbb(D[x], D[y]),
        },
        2 => match op {
            0 => a.add(W[x], W[y]),
            1 => a.sub(W[x], imm as i16 as i32),
            2 => a.cmp(W[x], W[y]),
            3 => a.and(W[x], imm as i16 as i32),
            4 => a.or(W[x], W[y]),
            5 => a.xor(W[x], W[y]),
            6 => a.test(W[x], W[y]),
            7 => a.inc(W[x]),
            8 => a.dec(W[x]),
            9 => a.mov(W[x], imm as u16 as u32),
            10 => a.neg(W[x]),
            11 if y < 3 => match y {
                0 => a.shl(W[x], imm & 31),
                1 => a.shr(W[x], imm & 15),
                _ => a.sar(W[x], imm & 31),
            },
            _ => a.mov(W[x], W[y]),
        },
        _ => match op {
            0 => a.add(B[x], B[y]),
            1 => a.sub(B[x], imm as i8 as i32),
            2 => a.cmp(B[x], imm as i8 as i32),
            3 => a.and(B[x], B[y]),
            4 => a.or(B[x], imm as i8 as i32),
            5 => a.xor(B[x], B[y]),
            6 => a.test(B[x], B[y]),
            7 => a.inc(B[x]),
            8 => a.dec(B[x]),
            9 => a.mov(B[x], imm as u8 as u32),
            10 => a.mov(ah, B[y % 4]),
            11 if y < 3 => match y {
                0 => a.shl(B[x], imm & 7),
                1 => a.shr(B[x], imm & 31),
                _ => a.sar(B[x], 1),
            },
            _ => a.mov(B[x], B[y]),
        },
    }
}

#[test]
fn random_register_code_matches_the_interpreter() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..1500 {
        let n = 1 + r.below(20) as usize;
        let seed = r.next();
        let gpr: Vec<u64> = (0..16).map(|_| r.next()).collect();
        let fl = r.next() & flags::STATUS;
        let build = move |w: &mut World| {
            w.asm(CODE, &|a| {
                let mut rr = Rng(seed | 1);
                let mut skip = a.create_label();
                for _ in 0..n {
                    random_insn(a, &mut rr)?;
                }
                // A conditional branch on the flags of the last instruction.
                a.jl(skip)?;
                a.inc(r9)?;
                a.set_label(&mut skip)?;
                a.hlt()
            });
            w.cpu.gpr.copy_from_slice(&gpr);
            w.cpu.gpr[reg::RSP] = DATA;
            w.cpu.rflags = flags::FIXED | fl;
            w.cpu.rip = CODE;
        };
        let w = lockstep(TestMode::Long64, 0, &[1 << 20], 1 << 20, &build);
        assert!(w.cpu.halted, "case {case}");
    }
}
