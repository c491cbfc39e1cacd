//! Real-mode checks (16-bit code, DS = ES = SS = 0 between checks).

use iced_x86::code_asm::*;
use iced_x86::{Code, Instruction};

use crate::guests::asm::R;
use crate::guests::layout::*;
use crate::guests::{rt, BuiltGuest, Guest};

/// Flags the arithmetic checks look at: OF SF ZF AF PF CF.
const ARITH_FLAGS: i32 = 0x8D5;

pub fn build() -> BuiltGuest {
    let mut g = Guest::new("real", |a| {
        a.check("rdtsc_first_instruction", |a| {
            // The prologue's first instruction is RDTSC: no instruction has
            // retired before it, so the TSC (= instruction count) reads 0.
            a.expect_mem64(V_TSC0, 0, "TSC read by the first instruction")
        })?;

        a.check("real_arith_flags", |a| {
            a.mov(ax, -1)?;
            a.add(ax, 1)?; // 0xFFFF + 1 = 0: CF ZF AF PF
            a.pushf()?;
            a.mov(dx, 0x1234)?;
            a.adc(dx, 0x0F00)?; // + CF from the ADD
            a.pop(bx)?;
            a.movzx(ebx, bx)?;
            a.and(ebx, ARITH_FLAGS)?;
            a.expect_eq(ebx, 0x55, "flags after 0xFFFF + 1")?;
            a.movzx(edx, dx)?;
            a.expect_eq(edx, 0x2135, "0x1234 adc 0x0F00 with CF=1")?;
            a.mov(ax, 5)?;
            a.mov(cx, 10)?;
            a.sub(ax, 6)?; // borrow
            a.sbb(cx, 0)?;
            a.movzx(ecx, cx)?;
            a.expect_eq(ecx, 9, "10 sbb 0 with CF=1")?;
            a.mov(eax, 0x7FFF_FFFF)?;
            a.add(eax, 1)?; // 32-bit operand in real mode: OF SF AF PF
            a.pushfd()?;
            a.pop(ebx)?;
            a.and(ebx, ARITH_FLAGS)?;
            a.expect_eq(ebx, 0x894, "flags after 0x7FFFFFFF + 1 (32-bit)")
        })?;

        a.check("real_segment_arithmetic", |a| {
            a.mov(ax, 0x2000)?;
            a.mov(es, ax)?;
            a.mov(dword_ptr(0x0010).es(), 0xCAFE_BABEu32 as i32)?;
            a.mov(ax, 0x2001)?;
            a.mov(fs, ax)?;
            a.mov(ecx, dword_ptr(0).fs())?; // 0x2001:0000 = 0x20010
            a.mov(ax, 0x1FFF)?;
            a.mov(gs, ax)?;
            a.mov(edx, dword_ptr(0x20).gs())?; // 0x1FFF:0020 = 0x20010
            a.xor(ax, ax)?;
            a.mov(es, ax)?;
            a.mov(fs, ax)?;
            a.mov(gs, ax)?;
            a.expect_eq(ecx, 0xCAFE_BABE, "read through 2001:0000")?;
            a.expect_eq(edx, 0xCAFE_BABE, "read through 1FFF:0020")
        })?;

        a.check("real_far_call", |a| {
            // Far call to the same code through CS = 0x0100 (base 0x1000).
            let target = a.sym("real_far_target");
            a.add_instruction(Instruction::with_far_branch(
                Code::Call_ptr1616,
                0x0100,
                (target - 0x1000) as u32,
            )?)?;
            a.movzx(eax, ax)?;
            a.expect_eq(eax, 0x0100, "CS inside the far-called routine")
        })?;

        a.check("real_ivt_int", |a| {
            let h = a.sym("real_int80");
            rt::set_ivt(a, 0x80, h)?;
            a.mov(word_ptr(V_USER + 6), -1)?;
            a.mov(ax, 0x41)?;
            a.stc()?;
            let mut ret = a.addr_label();
            a.int(0x80)?;
            a.bind(&mut ret.label)?;
            a.movzx(eax, ax)?;
            a.expect_eq(eax, 0x42, "AX returned by the handler")?;
            a.expect_mem_masked(V_USER, 0xFFFF, ret.addr as u32, "pushed IP")?;
            a.expect_mem_masked(V_USER + 2, 0xFFFF, 0, "pushed CS")?;
            a.expect_mem_masked(V_USER + 4, 0x0001, 1, "pushed FLAGS.CF")?;
            a.expect_mem_masked(V_USER + 6, 0x0300, 0, "FLAGS.IF|TF inside the handler")
        })?;

        a.check("real_de_through_ivt", |a| {
            let h = a.sym("real_de");
            rt::set_ivt(a, 0, h)?;
            a.mov(word_ptr(V_USER), 0)?;
            a.mov(ax, 100)?;
            a.xor(bl, bl)?;
            let mut at = a.addr_label();
            a.bind(&mut at.label)?;
            a.div(bl)?; // F6 F3: the handler skips 2 bytes
            a.expect_mem_masked(V_USER, 0xFFFF, at.addr as u32, "IP pushed by #DE (the DIV)")
        })?;

        a.check("real_mul_div", |a| {
            a.mov(ax, 0x1234)?;
            a.mov(bx, 0x100)?;
            a.mul(bx)?;
            a.pushf()?;
            a.movzx(eax, ax)?;
            a.movzx(edx, dx)?;
            a.expect_eq(eax, 0x3400, "MUL low")?;
            a.expect_eq(edx, 0x0012, "MUL high")?;
            a.pop(cx)?;
            a.movzx(ecx, cx)?;
            a.and(ecx, 0x801)?;
            a.expect_eq(ecx, 0x801, "MUL CF/OF")?;
            a.mov(dx, 0x12)?;
            a.mov(ax, 0x3456)?;
            a.div(bx)?;
            a.movzx(eax, ax)?;
            a.movzx(edx, dx)?;
            a.expect_eq(eax, 0x1234, "DIV quotient")?;
            a.expect_eq(edx, 0x56, "DIV remainder")?;
            a.mov(ax, -100)?;
            a.cwd()?;
            a.mov(bx, 7)?;
            a.idiv(bx)?;
            a.movzx(eax, ax)?;
            a.movzx(edx, dx)?;
            a.expect_eq(eax, 0xFFF2, "IDIV quotient -14")?;
            a.expect_eq(edx, 0xFFFE, "IDIV remainder -2")
        })?;

        a.check("real_rep_stosb_a16_wrap", |a| {
            // ES = 0x8000 (SCRATCH); DI wraps from 0xFFFF to 0 inside the segment.
            a.mov(ax, (SCRATCH >> 4) as i32)?;
            a.mov(es, ax)?;
            a.mov(dword_ptr(0).es(), 0)?;
            a.mov(dword_ptr(0xFFFCu64).es(), 0)?;
            a.mov(ax, 0x9000)?;
            a.mov(fs, ax)?;
            a.mov(dword_ptr(0).fs(), 0)?;
            a.mov(di, -2)?;
            a.mov(ecx, 0x0007_0004)?; // only CX counts
            a.mov(al, 0xAB)?;
            a.rep().stosb()?;
            a.mov(ebx, dword_ptr(0).es())?;
            a.mov(edx, dword_ptr(0xFFFCu64).es())?;
            a.mov(esi, dword_ptr(0).fs())?;
            a.xor(ax, ax)?;
            a.mov(es, ax)?;
            a.mov(fs, ax)?;
            a.expect_eq(ebx, 0x0000_ABAB, "bytes at ES:0000 after the wrap")?;
            a.expect_eq(edx, 0xABAB_0000, "bytes at ES:FFFC")?;
            a.expect_eq(esi, 0, "linear 0x90000 (must not be written)")?;
            a.expect_eq(ecx, 0x0007_0000, "ECX (CX counted down, high half kept)")?;
            a.movzx(edi, di)?;
            a.expect_eq(edi, 2, "DI after the wrap")
        })?;

        a.check("real_rep_movsw_df1", |a| {
            a.mov(ax, (SCRATCH >> 4) as i32)?;
            a.mov(ds, ax)?;
            a.mov(es, ax)?;
            for i in 0..8u64 {
                a.mov(word_ptr(0x100 + 2 * i), (i + 1) as i32)?;
            }
            a.std()?;
            a.mov(si, 0x10A)?;
            a.mov(di, 0x10E)?;
            a.mov(cx, 6)?;
            a.rep().movsw()?;
            a.cld()?;
            a.movzx(eax, word_ptr(0x104))?;
            a.movzx(ebx, word_ptr(0x10E))?;
            a.movzx(edx, word_ptr(0x100))?;
            a.xor(cx, cx)?;
            a.mov(ds, cx)?;
            a.mov(es, cx)?;
            a.expect_eq(eax, 1, "word 2 after the backward copy")?;
            a.expect_eq(ebx, 6, "word 7 after the backward copy")?;
            a.expect_eq(edx, 1, "word 0 (untouched)")?;
            a.movzx(esi, si)?;
            a.movzx(edi, di)?;
            a.expect_eq(esi, 0xFE, "SI after DF=1 copy")?;
            a.expect_eq(edi, 0x102, "DI after DF=1 copy")
        })?;

        a.check("real_les_lds", |a| {
            a.mov(word_ptr(V_USER + 8), 0x1234)?;
            a.mov(word_ptr(V_USER + 10), 0x2000)?;
            a.les(bx, dword_ptr(V_USER + 8))?;
            a.mov(ax, es)?;
            a.movzx(eax, ax)?;
            a.movzx(ebx, bx)?;
            a.xor(cx, cx)?;
            a.mov(es, cx)?;
            a.expect_eq(eax, 0x2000, "ES loaded by LES")?;
            a.expect_eq(ebx, 0x1234, "BX loaded by LES")
        })?;

        a.check("real_unreal_mode", |a| {
            a.mov(dword_ptr(0x600), 0x1111_1111)?;
            a.cli()?;
            let gdtr = a.sym("gdtr");
            a.add_instruction(Instruction::with1(
                Code::Lgdt_m1632,
                iced_x86::MemoryOperand::with_displ(gdtr, 2),
            )?)?;
            a.mov(eax, cr0)?;
            a.or(al, 1)?;
            a.mov(cr0, eax)?;
            a.mov(bx, KDATA as i32)?;
            a.mov(fs, bx)?; // cache: base 0, limit 4 GiB
            a.and(al, 0xFE)?;
            a.mov(cr0, eax)?;
            a.xor(bx, bx)?;
            a.mov(fs, bx)?; // real mode: base = 0, limit stays 4 GiB
            a.mov(edi, 0x10_0600)?;
            a.mov(dword_ptr(edi).fs(), 0x600D_F00D)?;
            a.mov(ecx, dword_ptr(edi).fs())?;
            a.expect_eq(
                ecx,
                0x600D_F00D,
                "read back at 0x100600 through FS (4 GiB limit)",
            )?;
            a.expect_mem(0x600, 0x1111_1111, "0x600 (no wrap at 1 MiB)")
        })?;

        a.check("uart_receive_polled", |a| {
            // The runner queued "ping" for COM1: poll LSR.DR, read RBR.
            let buf = V_USER + 0x18;
            a.mov(dword_ptr(buf), 0)?;
            a.mov(di, buf as i32)?;
            a.xor(cx, cx)?;
            a.mov(ebx, 1_000_000)?;
            let (mut poll, mut got, mut out) =
                (a.create_label(), a.create_label(), a.create_label());
            a.bind(&mut poll)?;
            a.mov(dx, 0x3FD)?;
            a.in_(al, dx)?;
            a.test(al, 1)?;
            a.jnz(got)?;
            a.dec(ebx)?;
            a.jnz(poll)?;
            a.jmp(out)?;
            a.bind(&mut got)?;
            a.mov(dx, 0x3F8)?;
            a.in_(al, dx)?;
            a.mov(byte_ptr(di), al)?;
            a.inc(di)?;
            a.inc(cx)?;
            a.cmp(cx, 4)?;
            a.jb(poll)?;
            a.bind(&mut out)?;
            a.movzx(ecx, cx)?;
            a.expect_eq(ecx, 4, "bytes received")?;
            a.expect_mem(
                buf,
                u32::from_le_bytes(*b"ping"),
                "bytes received (\"ping\")",
            )
        })?;

        a.check("real_ud_through_ivt", |a| {
            let h = a.sym("real_ud");
            rt::set_ivt(a, 6, h)?;
            a.mov(word_ptr(V_USER), 0)?;
            let mut at = a.addr_label();
            a.bind(&mut at.label)?;
            a.ud2()?; // the handler skips the 2 bytes
            a.expect_mem_masked(V_USER, 0xFFFF, at.addr as u32, "IP pushed by #UD (the UD2)")
        })?;

        a.print("real: done\n")?;
        a.exit(0)
    });
    g.code16("real_routines", |a| -> R {
        // Far-called with CS = 0x0100: returns CS in AX.
        a.here("real_far_target")?;
        a.mov(ax, cs)?;
        a.retf()?;

        // INT 0x80: records the frame (IP, CS, FLAGS) and FLAGS inside,
        // returns AX + 1.
        a.here("real_int80")?;
        a.push(bp)?;
        a.mov(bp, sp)?;
        a.push(bx)?;
        a.mov(bx, word_ptr(bp + 2))?;
        a.mov(word_ptr(V_USER), bx)?;
        a.mov(bx, word_ptr(bp + 4))?;
        a.mov(word_ptr(V_USER + 2), bx)?;
        a.mov(bx, word_ptr(bp + 6))?;
        a.mov(word_ptr(V_USER + 4), bx)?;
        a.pushf()?;
        a.pop(bx)?;
        a.mov(word_ptr(V_USER + 6), bx)?;
        a.pop(bx)?;
        a.pop(bp)?;
        a.inc(ax)?;
        a.iret()?;

        // #DE / #UD: record the pushed IP, skip the 2-byte DIV / UD2.
        a.here("real_ud")?;
        a.nop()?;
        a.here("real_de")?;
        a.push(bp)?;
        a.mov(bp, sp)?;
        a.push(bx)?;
        a.mov(bx, word_ptr(bp + 2))?;
        a.mov(word_ptr(V_USER), bx)?;
        a.add(word_ptr(bp + 2), 2)?;
        a.pop(bx)?;
        a.pop(bp)?;
        a.iret()
    });
    g.build().expect("real guest assembles")
}
