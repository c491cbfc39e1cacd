//! Whole-machine tests: tiny guests assembled with iced-x86's `code_asm`,
//! run on a real [`Machine`], checked for output, exits and exact virtual time.

use iced_x86::code_asm::*;

use hindsight_cpu::state::reg;
use hindsight_cpu::StopKind;
use hindsight_devices::{ns_of_tick, ticks_at};
use hindsight_firmware::EntryMode;

use super::*;

/// Where real-mode guests start (0000:7C00, like a boot sector).
const REAL_ENTRY: u64 = 0x7C00;
/// Where 32-bit guests start.
pub(super) const PROT_ENTRY: u64 = 0x10_0000;

pub(super) type Build<'a> = &'a mut dyn FnMut(&mut CodeAssembler) -> Result<(), IcedError>;

pub(super) fn asm(bits: u32, ip: u64, build: Build) -> Vec<u8> {
    let mut a = CodeAssembler::new(bits).unwrap();
    build(&mut a).unwrap();
    a.assemble(ip).unwrap()
}

pub(crate) fn machine_with(cfg: MachineConfig) -> Machine {
    Machine::new(&cfg).unwrap()
}

pub(crate) fn small() -> MachineConfig {
    MachineConfig {
        memory: 16 << 20,
        ..MachineConfig::default()
    }
}

/// A machine running `build` in real mode at 0000:7C00.
fn real_mode(cfg: MachineConfig, build: Build) -> Machine {
    let code = asm(16, REAL_ENTRY, build);
    let mut m = machine_with(cfg);
    m.load_flat(
        &code,
        REAL_ENTRY,
        EntryMode::Real16 {
            cs: 0,
            ip: REAL_ENTRY as u16,
        },
    )
    .unwrap();
    m
}

/// A machine running `build` in flat 32-bit protected mode at 1 MiB.
pub(super) fn protected_mode(cfg: MachineConfig, build: Build) -> Machine {
    let code = asm(32, PROT_ENTRY, build);
    let mut m = machine_with(cfg);
    m.load_flat(
        &code,
        PROT_ENTRY,
        EntryMode::Protected32Flat {
            eip: PROT_ENTRY as u32,
        },
    )
    .unwrap();
    m
}

/// Emits code printing `s` on COM1 (polling LSR.THRE first, as drivers do).
pub(super) fn print_com1(a: &mut CodeAssembler, s: &[u8]) -> Result<(), IcedError> {
    for &b in s {
        let mut wait = a.create_label();
        a.set_label(&mut wait)?;
        a.mov(dx, 0x3FDu32)?;
        a.in_(al, dx)?;
        a.test(al, 0x20u32)?;
        a.jz(wait)?;
        a.mov(dx, 0x3F8u32)?;
        a.mov(al, b as u32)?;
        a.out(dx, al)?;
    }
    Ok(())
}

/// Emits `out 0xf4, al` with AL = `v`.
fn debug_exit(a: &mut CodeAssembler, v: u8) -> Result<(), IcedError> {
    a.mov(al, v as u32)?;
    a.out(0xF4u32, al)
}

#[test]
fn hello_on_com1_then_debug_exit() {
    let mut m = protected_mode(small(), &mut |a| {
        print_com1(a, b"Hello, COM1!\n")?;
        a.mov(al, b'+' as u32)?;
        a.out(0xE9u32, al)?;
        print_com1(a, b"!")?;
        debug_exit(a, 0x21)
    });
    assert_eq!(m.run(), Exit::DebugExit(0x43));
    assert_eq!(m.take_console_output(), b"Hello, COM1!\n+!");
    assert_eq!(m.icount(), m.cpus()[0].icount);
    // The exit is sticky: nothing more runs.
    let t = m.icount();
    assert_eq!(m.run(), Exit::DebugExit(0x43));
    assert_eq!(m.icount(), t);
}

#[test]
fn console_sink_gets_output_in_order() {
    let mut m = protected_mode(small(), &mut |a| {
        print_com1(a, b"ab")?;
        a.mov(al, b'c' as u32)?;
        a.out(0xE9u32, al)?;
        print_com1(a, b"d")?;
        debug_exit(a, 0)
    });
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let s2 = seen.clone();
    m.set_console(Box::new(move |b: &[u8]| {
        s2.borrow_mut().extend_from_slice(b)
    }));
    assert_eq!(m.run(), Exit::DebugExit(1));
    assert_eq!(&*seen.borrow(), b"abcd");
    assert!(m.take_console_output().is_empty());
}

#[test]
fn unclaimed_ports_and_vga_read_all_ones_and_rom_ignores_writes() {
    let mut m = real_mode(small(), &mut |a| {
        a.in_(al, 0x99u32)?; // unclaimed
        a.out(0xE9u32, al)?;
        a.mov(ax, 0xA000u32)?;
        a.mov(es, ax)?;
        a.mov(al, byte_ptr(0).es())?; // VGA window
        a.out(0xE9u32, al)?;
        a.mov(ax, 0xC000u32)?;
        a.mov(es, ax)?;
        a.mov(byte_ptr(0x10).es(), 0x55u32)?; // ROM: ignored
        a.mov(al, byte_ptr(0x10).es())?;
        a.out(0xE9u32, al)?;
        debug_exit(a, 0)
    });
    assert_eq!(m.run(), Exit::DebugExit(1));
    assert_eq!(m.take_console_output(), [0xFF, 0xFF, 0x00]);
}

#[test]
fn console_input_reaches_the_uart() {
    // Echo COM1 input until a newline, then exit.
    let mut m = protected_mode(small(), &mut |a| {
        let mut wait = a.create_label();
        a.set_label(&mut wait)?;
        a.mov(dx, 0x3FDu32)?;
        a.in_(al, dx)?;
        a.test(al, 1u32)?; // data ready
        a.jz(wait)?;
        a.mov(dx, 0x3F8u32)?;
        a.in_(al, dx)?;
        a.out(dx, al)?;
        a.cmp(al, b'\n' as u32)?;
        a.jne(wait)?;
        debug_exit(a, 0)
    });
    m.console_input(b"typed\n");
    assert_eq!(m.run(), Exit::DebugExit(1));
    assert_eq!(m.take_console_output(), b"typed\n");
    assert_eq!(m.pending_console_input(), 0);
}

#[test]
fn keyboard_controller_reset_stops_the_machine() {
    let mut m = protected_mode(small(), &mut |a| {
        a.mov(al, 0xFEu32)?;
        a.out(0x64u32, al)?;
        a.hlt()
    });
    assert_eq!(m.run(), Exit::Reset);
    assert!(Exit::Reset.to_string().contains("reset"));
}

#[test]
fn acpi_s5_powers_off() {
    // SLP_TYP = 7 (S5) with SLP_EN, as Linux writes PM1a_CNT.
    let mut m = protected_mode(small(), &mut |a| {
        a.mov(dx, 0x604u32)?;
        a.mov(ax, (7u32 << 10) | (1 << 13))?;
        a.out(dx, ax)?;
        a.hlt()
    });
    assert_eq!(m.run(), Exit::PowerOff);
}

#[test]
fn tsc_deadline_timer_raises_its_vector_in_the_local_apic() {
    // Enable the local APIC (SVR), LVT timer in TSC-deadline mode with
    // vector 0x40, arm IA32_TSC_DEADLINE 1000 ticks ahead; with IF clear,
    // read IRR bits 32-63 (offset 0x220) before and after the deadline.
    let mut m = protected_mode(small(), &mut |a| {
        a.mov(eax, 0x1FFu32)?;
        a.mov(dword_ptr(0xFEE0_00F0u32), eax)?; // SVR: enabled
        a.mov(eax, 0x40u32 | (2 << 17))?;
        a.mov(dword_ptr(0xFEE0_0320u32), eax)?; // LVT timer: TSC deadline
        a.rdtsc()?;
        a.add(eax, 1000u32)?;
        a.adc(edx, 0u32)?;
        a.mov(ecx, 0x6E0u32)?;
        a.wrmsr()?;
        a.mov(eax, dword_ptr(0xFEE0_0220u32))?;
        a.out(0xE9u32, al)?; // 0: not yet
        a.mov(ecx, 1000u32)?;
        let mut spin = a.create_label();
        a.set_label(&mut spin)?;
        a.dec(ecx)?;
        a.jnz(spin)?;
        a.mov(eax, dword_ptr(0xFEE0_0220u32))?;
        a.out(0xE9u32, al)?; // 1: vector 0x40 requested
        a.mov(ecx, 0x6E0u32)?;
        a.rdmsr()?;
        a.out(0xE9u32, al)?; // 0: the deadline fired and disarmed
        debug_exit(a, 0)
    });
    assert_eq!(m.run(), Exit::DebugExit(1));
    assert_eq!(m.take_console_output(), [0, 1, 0]);
}

#[test]
fn held_input_waits_for_receive_interrupts() {
    let cfg = MachineConfig {
        hold_input_until_rx_interrupts: true,
        ..small()
    };
    // Poll LSR a while with receive interrupts off, then turn them on
    // (IER.RDI, MCR.OUT2) and echo input until a newline.
    let mut m = protected_mode(cfg, &mut |a| {
        a.mov(ecx, 1000u32)?;
        let mut idle = a.create_label();
        a.set_label(&mut idle)?;
        a.mov(dx, 0x3FDu32)?;
        a.in_(al, dx)?;
        a.dec(ecx)?;
        a.jnz(idle)?;
        a.mov(dx, 0x3F8u32)?;
        a.out(0x80u32, al)?; // a port exit: the machine looks at its input
        a.mov(al, 1u32)?;
        a.mov(dx, 0x3F9u32)?;
        a.out(dx, al)?; // IER: received data
        a.mov(al, 8u32)?;
        a.mov(dx, 0x3FCu32)?;
        a.out(dx, al)?; // MCR: OUT2
        let mut wait = a.create_label();
        a.set_label(&mut wait)?;
        a.mov(dx, 0x3FDu32)?;
        a.in_(al, dx)?;
        a.test(al, 1u32)?;
        a.jz(wait)?;
        a.mov(dx, 0x3F8u32)?;
        a.in_(al, dx)?;
        a.out(0xE9u32, al)?;
        a.cmp(al, b'\n' as u32)?;
        a.jne(wait)?;
        debug_exit(a, 0)
    });
    m.console_input(b"early\n");
    assert_eq!(m.run_until(500), Exit::InsnLimit);
    assert_eq!(
        m.pending_console_input(),
        6,
        "held while interrupts are off"
    );
    assert_eq!(m.run(), Exit::DebugExit(1));
    assert_eq!(m.take_console_output(), b"early\n");
}

#[test]
fn run_until_stops_at_exact_counts() {
    let build: Build = &mut |a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.inc(eax)?;
        a.jmp(top)
    };
    let mut m = protected_mode(small(), build);
    for target in [1, 2, 7, 64, 65, 1000, 1001, 123_457] {
        assert_eq!(m.run_until(target), Exit::InsnLimit);
        assert_eq!(m.icount(), target);
        assert_eq!(m.cpus()[0].icount, target);
        assert_eq!(m.cpus()[0].gpr[reg::RAX], target.div_ceil(2));
    }
    // Asking for the past (or the present) runs nothing.
    assert_eq!(m.run_until(10), Exit::InsnLimit);
    assert_eq!(m.icount(), 123_457);
    // max_insns caps every run.
    let code = asm(32, PROT_ENTRY, build);
    let mut m = machine_with(MachineConfig {
        max_insns: Some(5000),
        ..small()
    });
    m.load_flat(
        &code,
        PROT_ENTRY,
        EntryMode::Protected32Flat {
            eip: PROT_ENTRY as u32,
        },
    )
    .unwrap();
    assert_eq!(m.run_until(4000), Exit::InsnLimit);
    assert_eq!(m.icount(), 4000);
    assert_eq!(m.run(), Exit::InsnLimit);
    assert_eq!(m.icount(), 5000);
}

#[test]
fn cli_hlt_is_a_deadlock() {
    let mut m = real_mode(small(), &mut |a| {
        a.cli()?;
        a.hlt()
    });
    assert_eq!(m.run(), Exit::Deadlock { icount: 2 });
    assert!(m.cpus()[0].halted);
    // And stays one, without time passing.
    assert_eq!(m.run(), Exit::Deadlock { icount: 2 });
}

#[test]
fn sti_hlt_with_every_irq_masked_is_a_deadlock() {
    // The PIT keeps ticking, but its IRQ is masked at the PIC: nothing can
    // ever wake the CPU, which the machine sees without running forever.
    let mut m = real_mode(small(), &mut |a| {
        a.mov(al, 0xFFu32)?;
        a.out(0x21u32, al)?;
        a.sti()?;
        a.hlt()
    });
    assert_eq!(m.run(), Exit::Deadlock { icount: 4 });
}

/// PIT channel 0 count used by the timer test (about 838 us per period).
const PIT_COUNT: u64 = 1000;
/// Interrupts the timer guest waits for.
const TICKS: u64 = 5;
/// IVT slot of the timer: the guest puts the master PIC at vector 0x20.
const TIMER_VECTOR: u64 = 0x20;
/// Where the timer guest's interrupt handler lives.
const HANDLER: u64 = 0x8000;

/// A real-mode guest that programs the PIC and the PIT (mode 2), then
/// counts `TICKS` timer interrupts in a `sti; hlt` loop and exits. Returns
/// the machine and the icount of the OUT that starts the PIT counting.
fn timer_guest() -> (Machine, u64) {
    timer_guest_on(small())
}

/// [`timer_guest`] on a machine built from `cfg`.
fn timer_guest_on(cfg: MachineConfig) -> (Machine, u64) {
    let mut count_write = 0;
    let mut m = real_mode(cfg, &mut |a| {
        let mut wait = a.create_label();
        a.cli()?;
        a.xor(ax, ax)?;
        a.mov(ss, ax)?;
        a.mov(sp, 0x7000u32)?;
        // Master PIC: ICW1 (edge, cascade, ICW4), ICW2 vector 0x20, ICW3, ICW4 (8086).
        for (port, v) in [(0x20u32, 0x11u32), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01)] {
            a.mov(al, v)?;
            a.out(port, al)?;
        }
        a.mov(al, 0xFEu32)?; // only IRQ0
        a.out(0x21u32, al)?;
        // PIT channel 0: lobyte/hibyte, mode 2, binary.
        a.mov(al, 0x34u32)?;
        a.out(0x43u32, al)?;
        a.mov(al, (PIT_COUNT & 0xFF) as u32)?;
        a.out(0x40u32, al)?;
        a.mov(al, (PIT_COUNT >> 8) as u32)?;
        a.out(0x40u32, al)?;
        count_write = a.instructions().len() as u64 - 1;
        a.xor(bx, bx)?;
        a.sti()?;
        a.set_label(&mut wait)?;
        a.hlt()?;
        a.cmp(bx, TICKS as u32)?;
        a.jb(wait)?;
        a.cli()?;
        a.mov(al, bl)?;
        a.add(al, b'0' as u32)?;
        a.out(0xE9u32, al)?;
        debug_exit(a, 0)
    });
    install_timer_handler(&mut m, &mut |a| {
        a.inc(bx)?;
        a.mov(al, 0x20u32)?; // non-specific EOI
        a.out(0x20u32, al)?;
        a.iret()
    });
    (m, count_write)
}

/// Assembles a real-mode handler at `HANDLER` and points IVT slot
/// `TIMER_VECTOR` at it.
fn install_timer_handler(m: &mut Machine, build: Build) {
    let handler = asm(16, HANDLER, build);
    m.write_phys(HANDLER, &handler).unwrap();
    m.write_phys(
        TIMER_VECTOR * 4,
        &[HANDLER as u8, (HANDLER >> 8) as u8, 0, 0],
    )
    .unwrap();
}

#[test]
fn hlt_skips_to_the_pit_deadline() {
    let (mut m, count_write) = timer_guest();
    assert_eq!(m.run(), Exit::DebugExit(1));
    assert_eq!(m.take_console_output(), b"5");
    // Mode 2: the counter loads N on the pulse after the write, and OUT
    // rises (the edge the PIC latches) every N pulses after that.
    let load = ticks_at(count_write) + 1;
    let last_tick = ns_of_tick(load + TICKS * PIT_COUNT).unwrap();
    // Delivery (1), handler (inc, mov, out, iret: 4), then cmp, jb, cli,
    // mov, add, out, mov, out (8).
    assert_eq!(m.icount(), last_tick + 1 + 4 + 8);
    // Idle time was skipped, not executed: the guest retired a few dozen
    // instructions over ~4 ms of virtual time.
    assert!(m.icount() > 4_000_000);
}

#[test]
fn sti_shadow_delays_a_pending_interrupt_by_one_instruction() {
    // IRQ0 becomes pending while interrupts are off; after STI exactly one
    // more instruction runs before the handler, which reports SI.
    let mut m = real_mode(small(), &mut |a| {
        let mut spin = a.create_label();
        a.cli()?;
        a.xor(ax, ax)?;
        a.mov(ss, ax)?;
        a.mov(ds, ax)?;
        a.mov(sp, 0x7000u32)?;
        for (port, v) in [
            (0x20u32, 0x11u32),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0x21, 0xFE),
        ] {
            a.mov(al, v)?;
            a.out(port, al)?;
        }
        a.mov(al, 0x34u32)?;
        a.out(0x43u32, al)?;
        a.mov(al, 100u32)?; // ~84 us
        a.out(0x40u32, al)?;
        a.mov(al, 0u32)?;
        a.out(0x40u32, al)?;
        a.mov(cx, 0xFFFFu32)?; // ~131 us of spinning with IF clear
        a.set_label(&mut spin)?;
        a.dec(cx)?;
        a.jnz(spin)?;
        a.xor(si, si)?;
        a.sti()?;
        a.inc(si)?;
        a.inc(si)?;
        a.inc(si)?;
        a.hlt()
    });
    install_timer_handler(&mut m, &mut |a| {
        a.mov(ax, si)?;
        a.add(al, b'0' as u32)?;
        a.out(0xE9u32, al)?;
        debug_exit(a, 0)
    });
    assert_eq!(m.run(), Exit::DebugExit(1));
    assert_eq!(m.take_console_output(), b"1");
}

#[test]
fn runs_are_deterministic() {
    let run = || {
        let (mut m, _) = timer_guest();
        let exit = m.run();
        (exit, m.icount(), m.take_console_output(), m.cpus()[0].gpr)
    };
    assert_eq!(run(), run());
}

#[test]
fn run_until_inside_idle_time_and_across_interrupts() {
    // Stopping in the middle of a sleep and resuming changes nothing.
    let (mut whole, _) = timer_guest();
    assert_eq!(whole.run(), Exit::DebugExit(1));
    let (mut sliced, _) = timer_guest();
    let mut t = 0;
    loop {
        t += 777_777;
        match sliced.run_until(t) {
            Exit::InsnLimit => assert_eq!(sliced.icount(), t),
            other => {
                assert_eq!(other, Exit::DebugExit(1));
                break;
            }
        }
    }
    assert_eq!(sliced.icount(), whole.icount());
    assert_eq!(sliced.take_console_output(), whole.take_console_output());
}

#[test]
fn extra_vcpus_wait_halted_and_do_not_disturb() {
    let (mut one, _) = timer_guest();
    assert_eq!(one.run(), Exit::DebugExit(1));
    let (mut three, _) = timer_guest_on(MachineConfig { cpus: 3, ..small() });
    assert!(three.cpus()[1].halted && three.cpus()[2].halted);
    assert_eq!(three.run(), Exit::DebugExit(1));
    assert_eq!(three.icount(), one.icount());
    assert_eq!(three.cpus()[0].icount, one.cpus()[0].icount);
    assert_eq!(three.take_console_output(), b"5");
}

#[test]
fn dirty_epochs_see_the_first_store_again() {
    let mut m = protected_mode(small(), &mut |a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.mov(dword_ptr(0x20_0000), eax)?;
        a.inc(eax)?;
        a.jmp(top)
    });
    m.start_dirty_epoch();
    assert!(!m.ram().is_dirty(0x20_0000));
    assert_eq!(m.run_until(300), Exit::InsnLimit);
    assert!(m.ram().is_dirty(0x20_0000));
    m.start_dirty_epoch();
    assert!(!m.ram().is_dirty(0x20_0000));
    assert_eq!(m.ram().dirty_pages().count(), 0);
    // The vCPU's write TLB was flushed, so the next store is seen.
    assert_eq!(m.run_until(600), Exit::InsnLimit);
    assert_eq!(m.ram().dirty_pages().collect::<Vec<_>>(), vec![0x20_0000]);
}

#[test]
fn triple_fault_stops_with_a_report() {
    // The IDT at reset is 64 KiB of zeros: every gate is absent, so #UD
    // escalates through #NP and #DF to a triple fault.
    let mut m = protected_mode(small(), &mut |a| {
        a.nop()?;
        a.ud2()
    });
    let Exit::Stopped(stop) = m.run() else {
        panic!("expected a stop, got {:?}", m.run());
    };
    assert!(matches!(stop.kind, StopKind::TripleFault { .. }), "{stop}");
    assert_eq!(stop.rip, PROT_ENTRY + 1);
    assert_eq!(stop.cs, ENTRY_CODE_SELECTOR);
    // Sticky: the same report again, no more time.
    let t = m.icount();
    assert_eq!(m.run(), Exit::Stopped(stop));
    assert_eq!(m.icount(), t);
}

#[test]
fn multiboot_entry_state() {
    // A minimal a.out-kludge multiboot image: header then `hlt`.
    let load = 0x10_0000u32;
    let flags = 1u32 << 16;
    let magic = 0x1BAD_B002u32;
    let mut img = Vec::new();
    for v in [
        magic,
        flags,
        0u32.wrapping_sub(magic.wrapping_add(flags)),
        load,      // header_addr
        load,      // load_addr
        0,         // load_end_addr: whole file
        0,         // bss_end_addr
        load + 32, // entry_addr
    ] {
        img.extend_from_slice(&v.to_le_bytes());
    }
    img.push(0xF4);
    let mut m = machine_with(small());
    m.load_multiboot(&img, "console=ttyS0", &[]).unwrap();
    let cpu = &m.cpus()[0];
    assert_eq!(cpu.gpr[reg::RAX], 0x2BAD_B002);
    assert_ne!(cpu.gpr[reg::RBX], 0);
    assert_eq!(cpu.rip, u64::from(load) + 32);
    assert_eq!(cpu.mode, hindsight_cpu::Mode::Protected);
    assert_eq!(cpu.bitness, 32);
    assert_eq!(cpu.rflags, hindsight_cpu::flags::FIXED);
    let code_seg = cpu.seg[SegReg::Cs as usize];
    assert_eq!(
        (code_seg.selector, code_seg.base, code_seg.limit),
        (ENTRY_CODE_SELECTOR, 0, 0xFFFF_FFFF)
    );
    assert!(code_seg.is_code() && code_seg.db() && code_seg.dpl() == 0);
    let data_seg = cpu.seg[SegReg::Ds as usize];
    assert_eq!(
        (data_seg.selector, data_seg.limit),
        (ENTRY_DATA_SELECTOR, 0xFFFF_FFFF)
    );
    // The command line is where EBX's info structure says.
    let mut info = [0u8; 20];
    m.read_phys(cpu.gpr[reg::RBX], &mut info).unwrap();
    let cmdline = u32::from_le_bytes(info[16..20].try_into().unwrap());
    let mut s = [0u8; 14];
    m.read_phys(u64::from(cmdline), &mut s).unwrap();
    assert_eq!(&s, b"console=ttyS0\0");
    // A malformed image is refused with the loader's error.
    let mut m = machine_with(small());
    assert!(m.load_multiboot(&[0u8; 64], "", &[]).is_err());
}

#[test]
fn bad_configurations_are_refused() {
    for cfg in [
        MachineConfig { cpus: 0, ..small() },
        MachineConfig {
            cpus: MAX_CPUS + 1,
            ..small()
        },
        MachineConfig {
            memory: 1 << 20,
            ..small()
        },
        MachineConfig {
            memory: (16 << 20) + 1,
            ..small()
        },
    ] {
        let e = Machine::new(&cfg).unwrap_err();
        assert!(!e.to_string().is_empty());
    }
}
