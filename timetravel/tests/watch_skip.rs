//! Reverse searches for a write watchpoint pass over stretches in which no
//! page behind the watched address was written, without replaying them.
//! The guest here makes that hard: it pages, writes the watched linear
//! address through three different physical pages (a page-table entry is
//! rewritten, and a second page directory is switched to and back), writes
//! the physical page behind it through another linear address, and
//! otherwise keeps writing elsewhere. Going backward must stop exactly
//! where going forward did.

use hindsight_cpu::debug::{DebugSet, WatchKind, Watchpoint};
use hindsight_firmware::EntryMode;
use hindsight_machine::{Machine, MachineConfig};
use hindsight_testsuite::iced_x86::code_asm::*;
use hindsight_timetravel::{Resumed, Spacing, Timeline, TimelineConfig, TimelineError};

const ENTRY: u64 = 0x10_0000;
/// Page directories (4 MiB identity entry 0 + a page table for WATCHED).
const PD1: u64 = 0x20_0000;
const PT1: u64 = 0x20_1000;
const PD2: u64 = 0x20_2000;
const PT2: u64 = 0x20_3000;
/// Physical pages the watched address maps to: through PT1 first A, after
/// the remap B; through PD2 always C.
const PAGE_A: u64 = 0x30_0000;
const PAGE_B: u64 = 0x30_1000;
const PAGE_C: u64 = 0x30_2000;
/// Written on every iteration (the busy part).
const SCRATCH: u64 = 0x31_0000;
/// The watched linear address (page-directory index 256).
const WATCHED: u64 = 0x4000_0000;
/// Iterations between two events.
const EVERY: u32 = 5_000;
/// How far the test runs.
const END: u64 = 1_500_000;

const P: u32 = 1;
const RW: u32 = 2;
const PS: u32 = 0x80;

fn guest() -> Vec<u8> {
    let mut a = CodeAssembler::new(32).expect("bitness");
    build(&mut a).expect("the guest assembles");
    a.assemble(ENTRY).expect("the guest assembles")
}

fn build(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let (mut top, mut event, mut remap, mut other_pd, mut alias, mut next) = (
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
    );
    // Page tables: both directories map 0..4 MiB 1:1 with one large page,
    // and WATCHED through their own page table.
    for (pd, pt, page) in [(PD1, PT1, PAGE_A), (PD2, PT2, PAGE_C)] {
        a.mov(dword_ptr(pd as u32), P | RW | PS)?;
        a.mov(dword_ptr(pd as u32 + 256 * 4), pt as u32 | P | RW)?;
        a.mov(dword_ptr(pt as u32), page as u32 | P | RW)?;
    }
    a.mov(eax, cr4)?;
    a.or(eax, 0x10)?; // PSE
    a.mov(cr4, eax)?;
    a.mov(eax, PD1 as u32)?;
    a.mov(cr3, eax)?;
    a.mov(eax, cr0)?;
    a.or(eax, 0x8000_0000u32)?;
    a.mov(cr0, eax)?;
    a.xor(ecx, ecx)?; // iteration
    a.xor(esi, esi)?; // event number
    a.set_label(&mut top)?;
    a.inc(ecx)?;
    a.mov(dword_ptr(SCRATCH as u32), ecx)?;
    a.mov(eax, ecx)?;
    a.xor(edx, edx)?;
    a.mov(ebx, EVERY)?;
    a.div(ebx)?;
    a.test(edx, edx)?;
    a.jz(event)?;
    a.jmp(top)?;

    a.set_label(&mut event)?;
    a.inc(esi)?;
    a.mov(eax, esi)?;
    a.and(eax, 3)?;
    a.cmp(eax, 1)?;
    a.je(remap)?;
    a.cmp(eax, 2)?;
    a.je(other_pd)?;
    a.cmp(eax, 3)?;
    a.je(alias)?;
    // 0: write the watched address through the current mapping.
    a.mov(dword_ptr(WATCHED as u32), esi)?;
    a.jmp(next)?;
    // 1: point the page-table entry at the other page, and write.
    a.set_label(&mut remap)?;
    a.mov(eax, dword_ptr(PT1 as u32))?;
    a.xor(eax, (PAGE_A ^ PAGE_B) as u32)?;
    a.mov(dword_ptr(PT1 as u32), eax)?;
    a.invlpg(dword_ptr(WATCHED as u32))?;
    a.mov(dword_ptr(WATCHED as u32 + 4), esi)?;
    a.jmp(next)?;
    // 2: switch to the other directory, write there, switch back.
    a.set_label(&mut other_pd)?;
    a.mov(eax, PD2 as u32)?;
    a.mov(cr3, eax)?;
    a.mov(dword_ptr(WATCHED as u32), esi)?;
    a.mov(eax, PD1 as u32)?;
    a.mov(cr3, eax)?;
    a.jmp(next)?;
    // 3: write the physical pages behind it through the identity map
    // (not the watched linear address: no hit).
    a.set_label(&mut alias)?;
    a.mov(dword_ptr(PAGE_A as u32), esi)?;
    a.mov(dword_ptr(PAGE_B as u32), esi)?;
    a.set_label(&mut next)?;
    a.jmp(top)?;
    Ok(())
}

fn machine() -> Machine {
    let mut m = Machine::new(&MachineConfig {
        memory: 16 << 20,
        ..MachineConfig::default()
    })
    .expect("machine");
    m.load_flat(
        &guest(),
        ENTRY,
        EntryMode::Protected32Flat { eip: ENTRY as u32 },
    )
    .expect("load");
    m
}

#[test]
fn backward_write_watch_stops_match_forward_ones_with_stretches_skipped() {
    let mut m = machine();
    let cfg = TimelineConfig {
        spacing: Spacing::Fixed(20_000),
        ..TimelineConfig::default()
    };
    let mut tl = Timeline::live(&mut m, cfg).expect("timeline");
    m.set_debug(DebugSet {
        watchpoints: vec![Watchpoint {
            addr: WATCHED,
            len: 8,
            kind: WatchKind::Write,
        }],
        ..DebugSet::default()
    });
    let mut forward = Vec::new();
    while let Resumed::Hit(s) = tl.resume(&mut m, END).expect("resume") {
        forward.push(s.icount);
    }
    // Writes through A, B and C (events 0, 1 and 2 of every 4).
    assert!(forward.len() >= 9, "{forward:?}");

    let mut backward = Vec::new();
    loop {
        match tl.reverse_resume(&mut m, &mut || false) {
            Ok(Some(s)) => backward.push(s.icount + 1),
            Err(TimelineError::BeginningOfHistory { .. }) => break,
            other => panic!("{other:?}"),
        }
    }
    backward.reverse();
    assert_eq!(backward, forward);
    let stats = tl.stats();
    assert!(
        stats.stretches_skipped > 20,
        "most stretches hold no write behind the watch: {stats:?}"
    );
}
