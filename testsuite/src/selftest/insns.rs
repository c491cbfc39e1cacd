//! Instructions an x86-64 kernel relies on, in 64-bit mode: CMOV/SETcc,
//! BSF/BSR/BSWAP, 128-bit MUL, shift-count masking, ENTER/LEAVE, IRETQ to
//! the same ring, INT3 and UD2, SGDT/SIDT/STR, CR8, the CPUID-gated POPCNT
//! and RDTSCP (which must be consistent with what CPUID advertises),
//! NOP-like hints, and the memory fences. Ordered from most to least
//! basic, since an unimplemented instruction stops the guest.

use iced_x86::code_asm::*;

use crate::guests::asm::{Asm, R};
use crate::guests::layout::*;
use crate::guests::{rt, BuiltGuest, Guest};

/// Jumps to `yes` if bit `bit` of EDX (`edx_reg`) or ECX of CPUID leaf
/// `leaf` is set.
fn if_cpuid_bit(a: &mut Asm, leaf: u32, edx_reg: bool, bit: u32, yes: CodeLabel) -> R {
    a.mov(eax, leaf as i32)?;
    a.xor(ecx, ecx)?;
    a.cpuid()?;
    if edx_reg {
        a.bt(edx, bit as i32)?;
    } else {
        a.bt(ecx, bit as i32)?;
    }
    a.jc(yes)
}

pub fn build() -> BuiltGuest {
    let mut g = Guest::new("insns", |a| rt::enter_pm32(a, "insns_pm"));
    g.code32("insns_pm", |a| {
        rt::pm32_init(a)?;
        rt::enter_long(a, "insns_main")
    });
    g.code64("insns_main", |a| {
        rt::long_init(a)?;

        a.check("cmov_setcc", |a| {
            a.mov(eax, 1)?;
            a.mov(ebx, 2)?;
            a.cmp(eax, eax)?;
            a.cmovne(eax, ebx)?;
            a.expect_eq(eax, 1, "CMOVNE not taken")?;
            a.cmp(eax, eax)?;
            a.cmove(eax, ebx)?;
            a.expect_eq(eax, 2, "CMOVE taken")?;
            a.mov(rcx, -1i64 as u64)?;
            a.stc()?;
            a.setc(cl)?;
            a.expect_eq64(rcx, 0xFFFF_FFFF_FFFF_FF01, "SETC writes only CL")?;
            a.xor(edx, edx)?;
            a.cmp(eax, 3)?;
            a.setl(dl)?;
            a.expect_eq(edx, 1, "SETL")
        })?;

        a.check("bsf_bsr_bswap", |a| {
            a.mov(eax, 0x0010_0100)?;
            a.bsf(ebx, eax)?;
            a.expect_eq(ebx, 8, "BSF")?;
            a.bsr(ebx, eax)?;
            a.expect_eq(ebx, 20, "BSR")?;
            a.xor(ecx, ecx)?;
            a.bsf(ebx, ecx)?;
            a.expect_that("ZF set by BSF of 0", |a, ok| a.je(ok))?;
            a.mov(eax, 0x1122_3344)?;
            a.bswap(eax)?;
            a.expect_eq(eax, 0x4433_2211, "BSWAP eax")?;
            a.mov(rax, 0x0102_0304_0506_0708u64)?;
            a.bswap(rax)?;
            a.expect_eq64(rax, 0x0807_0605_0403_0201, "BSWAP rax")
        })?;

        a.check("mul_128_and_shift_masks", |a| {
            a.mov(rax, -1i64 as u64)?;
            a.mov(ebx, 2)?;
            a.mul(rbx)?;
            a.expect_eq64(rdx, 1, "MUL high qword")?;
            a.expect_eq64(rax, 0xFFFF_FFFF_FFFF_FFFE, "MUL low qword")?;
            a.mov(eax, 1)?;
            a.mov(cl, 65)?;
            a.shl(rax, cl)?; // 64-bit shifts mask the count to 6 bits
            a.expect_eq64(rax, 2, "SHL rax, 65")?;
            a.mov(eax, 1)?;
            a.mov(cl, 33)?;
            a.shl(eax, cl)?; // 32-bit: 5 bits
            a.expect_eq64(rax, 2, "SHL eax, 33")?;
            a.mov(rax, 0x8000_0000_0000_0000u64)?;
            a.sar(rax, 63)?;
            a.expect_eq64(rax, -1i64 as u64, "SAR rax, 63")
        })?;

        a.check("enter_leave", |a| {
            a.mov(ebp, 0x1111)?;
            a.mov(rbx, rsp)?;
            a.enter(0x20, 0)?;
            a.mov(rcx, rbx)?;
            a.sub(rcx, rsp)?;
            a.expect_eq64(rcx, 8 + 0x20, "stack used by ENTER 0x20, 0")?;
            a.lea(rdx, qword_ptr(rbx - 8))?;
            a.cmp(rbp, rdx)?;
            a.expect_that("RBP = frame pointer", |a, ok| a.je(ok))?;
            a.leave()?;
            a.expect_eq64(rbp, 0x1111, "RBP restored by LEAVE")?;
            a.cmp(rsp, rbx)?;
            a.expect_that("RSP restored by LEAVE", |a, ok| a.je(ok))?;
            a.enter(8, 1)?; // nesting level 1: pushes RBP, then the frame pointer
            a.mov(rcx, rbx)?;
            a.sub(rcx, rsp)?;
            a.leave()?;
            a.expect_eq64(rcx, 8 + 8 + 8, "stack used by ENTER 8, 1")
        })?;

        a.check("iretq_same_ring", |a| {
            let mut back = a.addr_label();
            a.mov(rbx, rsp)?;
            a.mov(ax, ss)?;
            a.movzx(eax, ax)?;
            a.push(rax)?;
            a.push(rbx)?;
            a.push(0x202 & !0x200)?; // RFLAGS (IF stays clear)
            a.push(KCODE64 as i32)?;
            a.push(back.addr as i32)?;
            a.iretq()?;
            a.bind(&mut back.label)?;
            a.mov(rcx, rsp)?;
            a.expect_that("RSP restored from the IRETQ frame", |a, ok| {
                a.cmp(rcx, rbx)?;
                a.je(ok)
            })
        })?;

        a.check("long_int3_and_ud2", |a| {
            let mut after = a.addr_label();
            a.expect_fault(|a| {
                a.int3()?;
                a.bind(&mut after.label)?;
                a.nop()
            })?;
            a.expect_exception(3, Some(0))?;
            a.expect_fault_ip(after.addr)?;
            let mut at = a.addr_label();
            a.expect_fault(|a| {
                a.bind(&mut at.label)?;
                a.ud2()
            })?;
            a.expect_exception(6, Some(0))?;
            a.expect_fault_ip(at.addr)
        })?;

        a.check("sgdt_sidt_str_cr8", |a| {
            let buf = SCRATCH + 0x600;
            a.sgdt(ptr(buf))?;
            a.sidt(ptr(buf + 16))?;
            let gdt = a.sym("gdt");
            let idt = a.sym("idt64");
            a.expect_mem_masked(buf, 0xFFFF, GDT_SIZE as u32 - 1, "GDTR limit")?;
            a.expect_mem64(buf + 2, gdt, "GDTR base")?;
            a.expect_mem_masked(buf + 16, 0xFFFF, 256 * 16 - 1, "IDTR limit")?;
            a.expect_mem64(buf + 18, idt, "IDTR base")?;
            a.a.str(ax)?;
            a.movzx(eax, ax)?;
            a.expect_eq(eax, TSS64_SEL as u32, "STR")?;
            a.mov(eax, 5)?;
            a.mov(cr8, rax)?;
            a.mov(rbx, cr8)?;
            a.expect_eq64(rbx, 5, "CR8 read back")?;
            a.xor(eax, eax)?;
            a.mov(cr8, rax)
        })?;

        a.check("popcnt_matches_cpuid", |a| {
            // Advertised (CPUID.1:ECX[23]): must count; else must be #UD.
            let mut yes = a.create_label();
            let mut done = a.create_label();
            if_cpuid_bit(a, 1, false, 23, yes)?;
            a.expect_fault(|a| a.popcnt(eax, ebx))?;
            a.expect_exception(6, Some(0))?;
            a.jmp(done)?;
            a.bind(&mut yes)?;
            a.mov(ebx, 0xF0F0_0001u32 as i32)?;
            a.popcnt(eax, ebx)?;
            a.expect_eq(eax, 9, "POPCNT")?;
            a.bind(&mut done)
        })?;

        a.check("rdtscp_matches_cpuid", |a| {
            // Advertised (CPUID.80000001h:EDX[27]): ECX = TSC_AUX; else #UD.
            let mut yes = a.create_label();
            let mut done = a.create_label();
            if_cpuid_bit(a, 0x8000_0001, true, 27, yes)?;
            a.expect_fault(|a| a.rdtscp())?;
            a.expect_exception(6, Some(0))?;
            a.jmp(done)?;
            a.bind(&mut yes)?;
            a.mov(ecx, 0xC000_0103u32 as i32)?;
            a.mov(eax, 7)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
            a.rdtscp()?;
            a.expect_eq(ecx, 7, "ECX = IA32_TSC_AUX")?;
            a.bind(&mut done)
        })?;

        a.check("nop_hints", |a| {
            a.mov(eax, 0x1234_5678)?;
            a.pause()?;
            a.bytes(&[0x0F, 0x1F, 0x44, 0x00, 0x00])?; // nop dword [rax+rax]
            a.bytes(&[0x66, 0x0F, 0x1F, 0x84, 0, 0, 0, 0, 0])?; // nop word [rax+rax+0]
            a.bytes(&[0xF3, 0x0F, 0x1E, 0xFA])?; // endbr64 (a NOP without CET)
            a.prefetcht0(byte_ptr(SCRATCH))?;
            a.wbinvd()?;
            a.expect_eq(eax, 0x1234_5678, "EAX after the hints")
        })?;

        // Last: SSE2-era instructions every x86-64 kernel uses.
        a.check("memory_fences_clflush", |a| {
            a.mov(eax, 0x1234_5678)?;
            a.mfence()?;
            a.lfence()?;
            a.sfence()?;
            a.clflush(byte_ptr(SCRATCH))?;
            a.expect_eq(eax, 0x1234_5678, "EAX after the fences")
        })?;

        a.print("insns: done\n")?;
        a.exit(0)
    });
    g.build().expect("insns guest assembles")
}
