//! Virtual-8086 mode: a ring-0 32-bit monitor enters V86 code with IRETD
//! (EFLAGS.VM = 1), the V86 code runs real-mode style 16-bit code, and
//! comes back through INT (IOPL 3: through the IDT to the monitor) or a
//! #GP (privileged instructions, INT with IOPL < 3, I/O without a bitmap).

use iced_x86::code_asm::*;

use crate::guests::asm::{Asm, R};
use crate::guests::layout::*;
use crate::guests::{rt, BuiltGuest, Guest};

/// V86 segment registers used by every entry.
const V86_ES: u32 = 0x9000;
const V86_SP: u32 = 0x0F00;

/// Enters V86 code at 0000:`ip` with IOPL `iopl`; resumes after the
/// exception or interrupt that leaves it.
fn run_v86(a: &mut Asm, code: &str, iopl: u32) -> R {
    let after = a.arm_resume()?;
    let ip = a.sym(code);
    a.push(0)?; // GS
    a.push(0)?; // FS
    a.push(0)?; // DS
    a.push(V86_ES as i32)?; // ES
    a.push(0)?; // SS
    a.push(V86_SP as i32)?; // ESP
    a.push((EFLAGS_VM | iopl << 12 | 0x2) as i32)?;
    a.push(0)?; // CS
    a.push(ip as i32)?; // EIP
    a.iretd()?;
    a.resume_here(after)
}

pub fn build() -> BuiltGuest {
    let mut g = Guest::new("v86", |a| rt::enter_pm32(a, "v86_main"));
    g.code32("v86_main", |a| {
        rt::pm32_init(a)?;
        a.mov(dword_ptr(0x9_0010u64), 0)?;
        for i in 0..6u64 {
            a.mov(dword_ptr(V_USER + 4 * i), -1)?;
        }
        run_v86(a, "v86_a", 3)?;

        a.check("v86_run_code", |a| {
            a.expect_mem_masked(
                0x9_0010,
                0xFFFF,
                0x2345,
                "word written to ES:0010 (ES=0x9000)",
            )?;
            a.expect_mem_masked(V_USER, 0xFFFF, 0, "CS seen by V86 code")?;
            a.expect_mem_masked(
                V_USER + 2,
                0xFFFF,
                0x2345,
                "value through PUSH/POP on the V86 stack",
            )?;
            a.expect_mem_masked(
                V_USER + 4,
                0x3000,
                0x3000,
                "IOPL in FLAGS pushed by V86 PUSHF",
            )
        })?;

        a.check("v86_int_to_monitor", |a| {
            a.expect_exception(0x80, None)?;
            let ret = a.sym("v86_a_ret");
            a.expect_fault_ip(ret)?;
            a.expect_mem(V_FRAME + 8, 0, "saved CS")?;
            a.expect_mem_masked(V_FRAME + 16, EFLAGS_VM, EFLAGS_VM, "saved EFLAGS.VM")?;
            a.expect_mem(V_FRAME + 24, V86_SP, "saved ESP")?;
            a.expect_mem(V_FRAME + 32, 0, "saved SS")?;
            a.expect_mem(V_FRAME + 40, V86_ES, "saved ES")?;
            a.expect_mem(
                V_FRAME_SP,
                (TSS_STACK_TOP - 36) as u32,
                "monitor stack (TSS ESP0 - 36)",
            )?;
            a.expect_mem_masked(V_ENTRY_DS, 0xFFFF, 0, "DS on entry to the monitor (nulled)")
        })?;

        a.check("v86_gp_hlt", |a| {
            run_v86(a, "v86_hlt", 3)?;
            a.expect_exception(13, Some(0))?;
            let at = a.sym("v86_hlt");
            a.expect_fault_ip(at)?;
            a.expect_mem_masked(V_FRAME + 16, EFLAGS_VM, EFLAGS_VM, "saved EFLAGS.VM")
        })?;

        a.check("v86_gp_int_iopl0", |a| {
            run_v86(a, "v86_int", 0)?;
            a.expect_exception(13, Some(0))?;
            let at = a.sym("v86_int");
            a.expect_fault_ip(at)
        })?;

        a.check("v86_gp_io_without_bitmap", |a| {
            // In V86 mode I/O is checked against the TSS I/O bitmap, whatever
            // IOPL is; this TSS has none.
            run_v86(a, "v86_io", 3)?;
            a.expect_exception(13, Some(0))?;
            let at = a.sym("v86_io_at");
            a.expect_fault_ip(at)
        })?;

        a.check("v86_io_bitmap_allows_port", |a| {
            a.mov(ax, TSS32_IO_SEL as i32)?;
            a.ltr(ax)?;
            run_v86(a, "v86_io", 0)?;
            a.expect_exception(13, Some(0))?; // the IN passed; INT with IOPL 0 did not
            let after_in = a.sym("v86_io_int");
            a.expect_fault_ip(after_in)
        })?;

        a.check("v86_cli_iopl3_and_segments", |a| {
            a.mov(dword_ptr(V_USER + 8), -1)?;
            run_v86(a, "v86_b", 3)?;
            a.expect_exception(0x80, None)?;
            a.expect_mem_masked(V_USER + 8, 0xFFFF, 0x2345, "word read through 9001:0000")?;
            a.expect_mem_masked(V_USER + 10, EFLAGS_IF, 0, "FLAGS.IF after CLI with IOPL=3")
        })?;

        a.print("v86: done\n")?;
        a.exit(0)
    });
    g.code16("v86_code", |a| {
        a.here("v86_a")?;
        a.mov(ax, 0x1234)?;
        a.add(ax, 0x1111)?;
        a.mov(di, 0x10)?;
        a.mov(word_ptr(di).es(), ax)?;
        a.mov(bx, cs)?;
        a.mov(word_ptr(V_USER), bx)?;
        a.push(ax)?;
        a.pop(cx)?;
        a.mov(word_ptr(V_USER + 2), cx)?;
        a.pushf()?;
        a.pop(dx)?;
        a.mov(word_ptr(V_USER + 4), dx)?;
        a.int(0x80)?;
        a.here("v86_a_ret")?;
        a.hlt()?;

        a.here("v86_hlt")?;
        a.hlt()?;
        a.int(0x80)?;

        a.here("v86_int")?;
        a.int(0x80)?;
        a.hlt()?;

        a.here("v86_io")?;
        a.mov(dx, 0x3FD)?;
        a.here("v86_io_at")?;
        a.in_(al, dx)?;
        a.here("v86_io_int")?;
        a.int(0x80)?;

        a.here("v86_b")?;
        a.cli()?;
        a.mov(ax, 0x9001)?;
        a.mov(ds, ax)?;
        a.mov(ax, word_ptr(0))?;
        a.xor(bx, bx)?;
        a.mov(ds, bx)?;
        a.mov(word_ptr(V_USER + 8), ax)?;
        a.pushf()?;
        a.pop(ax)?;
        a.mov(word_ptr(V_USER + 10), ax)?;
        a.int(0x80)
    });
    g.build().expect("v86 guest assembles")
}
