//! The PIT and the PIC on virtual time (32-bit protected mode).
//!
//! Arithmetic: the virtual CPU retires one instruction per nanosecond (a
//! 1 GHz clock, TSC = instruction count) and the PIT counts at 1.193182 MHz.
//! Channel 0 in mode 2 with divisor 1193 fires every 1193 PIT pulses =
//! 1193 / 1_193_182 s = 999_847.3 ns, i.e. every 999_847 or 999_848
//! instructions. After synchronising on an interrupt, a loop of 5_250_000
//! × (DEC, JNZ) = 10_500_000 instructions (plus a few dozen in the handler)
//! spans interrupts 1..=10 (the 10th at 9_998_473 ns) and ends half a
//! period before the 11th (10_998_320 ns): exactly 10, every run, whatever
//! the host does.

use iced_x86::code_asm::*;

use crate::guests::asm::R;
use crate::guests::layout::*;
use crate::guests::rt::Gate;
use crate::guests::{emit_count_pit_irqs, rt, BuiltGuest, Guest};

pub fn build() -> BuiltGuest {
    let mut g = Guest::new("timer", |a| {
        a.check("real_pit_irq_through_ivt", |a| {
            // Real mode: IRQ0 through the PIC (vectors 8..15) to IVT entry 8.
            let h = a.sym("real_timer");
            rt::set_ivt(a, 8, h)?;
            rt::pic_init_base(a, 0x08, 0x01)?;
            rt::pit_rate(a, crate::guests::PIT_DIVISOR_1KHZ)?;
            a.mov(dword_ptr(V_TICKS), 0)?;
            a.sti()?;
            a.hlt()?;
            a.hlt()?;
            a.hlt()?;
            a.cli()?;
            a.mov(eax, dword_ptr(V_TICKS))?;
            a.expect_eq(eax, 3, "interrupts that ended three HLTs")
        })?;
        rt::enter_pm32(a, "timer_main")
    });
    g.code16("timer_real", |a| {
        a.here("real_timer")?;
        a.push(ax)?;
        a.inc(dword_ptr(V_TICKS))?;
        a.mov(al, 0x20)?;
        a.out(0x20, al)?;
        a.pop(ax)?;
        a.iret()
    });
    g.code32("timer_main", |a| {
        rt::pm32_init(a)?;

        a.check("pit_irq_count_exact", |a| {
            emit_count_pit_irqs(a, 5_250_000)?;
            a.print("  PIT interrupts in 10500000 instructions: ")?;
            a.print_dec_eax()?;
            a.print("\n")?;
            a.expect_eq(
                eax,
                10,
                "timer interrupts during 10,500,000 instructions at 1 kHz",
            )
        })?;

        a.check("pit_hlt_wakeup_period", |a| {
            // Five HLT wake-ups span exactly five periods: 5 x 1193 pulses
            // = 4_999_237.35 ns, so 4_999_237 or 4_999_238 (pulse instants
            // are rounded up to whole ns), plus the 2 instructions (DEC, JNZ)
            // the second reading has on its path and the first does not.
            // Two HLTs: the first may end at once on an edge latched while
            // interrupts were off; the second ends on a real PIT edge.
            a.sti()?;
            a.hlt()?;
            a.hlt()?;
            a.rdtsc()?;
            a.mov(esi, eax)?;
            a.mov(ecx, 5)?;
            let mut lp = a.create_label();
            a.bind(&mut lp)?;
            a.hlt()?;
            a.dec(ecx)?;
            a.jnz(lp)?;
            a.rdtsc()?;
            a.cli()?;
            a.sub(eax, esi)?;
            a.print("  TSC over five timer periods: ")?;
            a.print_dec_eax()?;
            a.print("\n")?;
            a.expect_that("TSC delta in [4999239, 4999240]", |a, ok| {
                a.sub(eax, 4_999_239)?;
                a.cmp(eax, 1)?;
                a.jbe(ok)
            })
        })?;

        a.check("pic_mask_blocks_irq", |a| {
            a.mov(al, 0xFFu8 as i32)?;
            a.out(0x21, al)?;
            a.mov(dword_ptr(V_TICKS), 0)?;
            a.sti()?;
            a.mov(ecx, 1_500_000)?; // 3 ms: three PIT edges while masked
            let mut lp = a.create_label();
            a.bind(&mut lp)?;
            a.dec(ecx)?;
            a.jnz(lp)?;
            a.mov(eax, dword_ptr(V_TICKS))?;
            a.expect_eq(eax, 0, "interrupts taken with IRQ0 masked")
        })?;

        a.check("pic_masked_irq_stays_pending", |a| {
            // IRR latched the edges while masked: unmasking delivers one.
            a.mov(al, 0xFEu8 as i32)?;
            a.out(0x21, al)?;
            a.nop()?;
            a.nop()?;
            a.cli()?;
            a.mov(eax, dword_ptr(V_TICKS))?;
            a.expect_eq(eax, 1, "interrupts right after unmasking")
        })?;

        a.check("pic_no_eoi_blocks_irq", |a| {
            // A handler that does not EOI leaves IRQ0 in service: no further
            // IRQ0 until the EOI.
            let idt = a.sym("idt32");
            let h = a.sym("timer_no_eoi");
            let gate = idt + 0x20 * 8;
            a.mov(word_ptr(gate), (h & 0xFFFF) as i32)?;
            a.mov(word_ptr(gate + 6), (h >> 16) as i32)?;
            a.mov(dword_ptr(V_TICKS), 0)?;
            a.sti()?;
            a.mov(ecx, 1_500_000)?;
            let mut lp = a.create_label();
            a.bind(&mut lp)?;
            a.dec(ecx)?;
            a.jnz(lp)?;
            a.cli()?;
            a.mov(eax, dword_ptr(V_TICKS))?;
            a.mov(al, 0x20)?;
            a.out(0x20, al)?; // EOI
            a.mov(eax, dword_ptr(V_TICKS))?;
            a.expect_eq(eax, 1, "interrupts taken without EOI over 3 ms")
        })?;

        a.check("sti_interrupt_shadow", |a| {
            // Restore the EOI-ing handler, let an edge latch while IRQ0 is
            // masked, unmask with IF = 0, then STI: the instruction after
            // STI runs before the pending interrupt is taken.
            let idt = a.sym("idt32");
            let h = a.sym("timer32");
            let gate = idt + 0x20 * 8;
            a.mov(word_ptr(gate), (h & 0xFFFF) as i32)?;
            a.mov(word_ptr(gate + 6), (h >> 16) as i32)?;
            a.cli()?;
            a.mov(al, 0xFFu8 as i32)?;
            a.out(0x21, al)?;
            a.mov(ecx, 1_500_000)?;
            let mut lp = a.create_label();
            a.bind(&mut lp)?;
            a.dec(ecx)?;
            a.jnz(lp)?;
            a.mov(dword_ptr(V_TICKS), 0)?;
            a.mov(al, 0xFEu8 as i32)?;
            a.out(0x21, al)?;
            a.sti()?;
            a.mov(eax, dword_ptr(V_TICKS))?;
            a.mov(ebx, dword_ptr(V_TICKS))?;
            a.cli()?;
            a.expect_eq(eax, 0, "ticks read by the instruction after STI")?;
            a.expect_eq(ebx, 1, "ticks read one instruction later")
        })?;

        a.check("pit_counter_tracks_virtual_time", |a| {
            // Latch channel 0 twice, 10,000,007 instructions (= ns) apart:
            // 10,000,007 * 1.193182 MHz = 11931.83 pulses, so the count
            // drops by 11931 or 11932.
            a.mov(al, 0x34)?;
            a.out(0x43, al)?;
            a.xor(eax, eax)?;
            a.out(0x40, al)?;
            a.out(0x40, al)?; // mode 2, count 65536
            a.nop()?;
            a.nop()?;
            a.mov(al, 0)?;
            a.out(0x43, al)?; // latch (t)
            a.in_(al, 0x40)?;
            a.mov(bl, al)?;
            a.in_(al, 0x40)?;
            a.mov(bh, al)?;
            a.mov(ecx, 5_000_000)?;
            let mut lp = a.create_label();
            a.bind(&mut lp)?;
            a.dec(ecx)?;
            a.jnz(lp)?;
            a.mov(al, 0)?;
            a.out(0x43, al)?; // latch (t + 10,000,007)
            a.in_(al, 0x40)?;
            a.mov(dl, al)?;
            a.in_(al, 0x40)?;
            a.mov(dh, al)?;
            a.movzx(ebx, bx)?;
            a.movzx(edx, dx)?;
            a.sub(ebx, edx)?;
            a.and(ebx, 0xFFFF)?;
            a.mov(eax, ebx)?;
            a.print("  PIT pulses in 10000007 instructions: ")?;
            a.print_dec_eax()?;
            a.print("\n")?;
            a.expect_that("count dropped by 11931 or 11932", |a, ok| {
                a.sub(eax, 11931)?;
                a.cmp(eax, 1)?;
                a.jbe(ok)
            })
        })?;

        a.check("pit_channel2_tsc_calibration", |a| {
            // What Linux's pit_calibrate_tsc does: gate channel 2 through
            // port 0x61, mode 0 with 11932 counts (10 ms), poll OUT2 (port
            // 0x61 bit 5) while reading the TSC. OUT2 rises 11933 pulses
            // (10,001,259 ns) after the count write: the TSC, at exactly
            // 1 GHz, advances about 10,001,000.
            a.in_(al, 0x61)?;
            a.and(al, 0xFC)?;
            a.or(al, 1)?;
            a.out(0x61, al)?;
            a.mov(al, 0xB0)?;
            a.out(0x43, al)?;
            a.mov(al, 11932 & 0xFF)?;
            a.out(0x42, al)?;
            a.mov(al, 11932 >> 8)?;
            a.out(0x42, al)?;
            a.rdtsc()?;
            a.mov(esi, eax)?;
            let mut poll = a.create_label();
            a.bind(&mut poll)?;
            a.in_(al, 0x61)?;
            a.test(al, 0x20)?;
            a.jz(poll)?;
            a.rdtsc()?;
            a.sub(eax, esi)?;
            a.print("  PIT channel 2, 11932 counts: TSC advanced ")?;
            a.print_dec_eax()?;
            a.print("\n")?;
            a.expect_that("TSC delta in [10000000, 10002000]", |a, ok| {
                a.sub(eax, 10_000_000)?;
                a.cmp(eax, 2000)?;
                a.jbe(ok)
            })
        })?;

        a.check("uart_receive_irq", |a| {
            // The runner queued "irq!": with IER.RDA and MCR.OUT2 the UART
            // raises IRQ4; the handler drains RBR into a buffer.
            let buf = V_USER + 0x28;
            let cnt = V_USER + 0x38;
            a.mov(dword_ptr(buf), 0)?;
            a.mov(dword_ptr(cnt), 0)?;
            a.cli()?;
            rt::pic_init(a, 0x10)?;
            a.mov(dx, 0x3FC)?;
            a.mov(al, 0x0B)?; // DTR RTS OUT2
            a.out(dx, al)?;
            a.mov(dx, 0x3F9)?;
            a.mov(al, 1)?; // IER: received data available
            a.out(dx, al)?;
            a.sti()?;
            a.mov(ecx, 100_000)?;
            let (mut wait, mut done) = (a.create_label(), a.create_label());
            a.bind(&mut wait)?;
            a.cmp(dword_ptr(cnt), 4)?;
            a.jae(done)?;
            a.dec(ecx)?;
            a.jnz(wait)?;
            a.bind(&mut done)?;
            a.cli()?;
            a.mov(dx, 0x3F9)?;
            a.mov(al, 0)?;
            a.out(dx, al)?;
            a.mov(dx, 0x3FC)?;
            a.mov(al, 3)?;
            a.out(dx, al)?;
            a.expect_mem(cnt, 4, "bytes received by the interrupt handler")?;
            a.expect_mem(
                buf,
                u32::from_le_bytes(*b"irq!"),
                "bytes received (\"irq!\")",
            )
        })?;

        a.print("timer: done\n")?;
        a.exit(0)
    });
    g.gate32(Gate::new(0x24, "uart_isr32", 0));
    g.code32("timer_handlers", |a| -> R {
        // COM1 receive interrupt: drain RBR into V_USER+0x28, count at +0x38.
        a.here("uart_isr32")?;
        a.push(eax)?;
        a.push(edx)?;
        a.push(edi)?;
        let (mut more, mut empty) = (a.create_label(), a.create_label());
        a.bind(&mut more)?;
        a.mov(dx, 0x3FD)?;
        a.in_(al, dx)?;
        a.test(al, 1)?;
        a.jz(empty)?;
        a.mov(dx, 0x3F8)?;
        a.in_(al, dx)?;
        a.mov(edi, dword_ptr(V_USER + 0x38))?;
        a.and(edi, 0xF)?;
        a.mov(byte_ptr(edi + (V_USER + 0x28) as i32), al)?;
        a.inc(dword_ptr(V_USER + 0x38))?;
        a.jmp(more)?;
        a.bind(&mut empty)?;
        a.mov(al, 0x20)?;
        a.out(0x20, al)?;
        a.pop(edi)?;
        a.pop(edx)?;
        a.pop(eax)?;
        a.iretd()?;

        a.here("timer_no_eoi")?;
        a.inc(dword_ptr(V_TICKS))?;
        a.iretd()
    });
    g.build().expect("timer guest assembles")
}
