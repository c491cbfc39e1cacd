//! Long mode: entering it, 64-bit registers, compatibility mode, the high
//! half, #PF/#GP in 64-bit mode, #DF on IST1, CMPXCHG16B, 64-bit and
//! 32-bit-address string instructions, SYSCALL/SYSRET and the RSP0 switch.

use iced_x86::code_asm::*;
use iced_x86::Instruction;

use crate::guests::asm::{Asm, R};
use crate::guests::layout::*;
use crate::guests::{rt, BuiltGuest, Guest};

const HIGH: u64 = 0xFFFF_8000_0000_0000;
const STAR: u32 = 0xC000_0081;
const LSTAR: u32 = 0xC000_0082;
const SFMASK: u32 = 0xC000_0084;

fn wrmsr64(a: &mut Asm, msr: u32, v: u64) -> R {
    a.mov(ecx, msr as i32)?;
    a.mov(eax, v as u32 as i32)?;
    a.mov(edx, (v >> 32) as u32 as i32)?;
    a.wrmsr()
}

fn idt64_present(a: &mut Asm, v: u8, present: bool) -> R {
    let at = a.sym("idt64") + u64::from(v) * 16 + 5;
    if present {
        a.or(byte_ptr(at), 0x80u32 as i32)
    } else {
        a.and(byte_ptr(at), 0x7F)
    }
}

pub fn build() -> BuiltGuest {
    let mut g = Guest::new("long", |a| rt::enter_pm32(a, "long_pm"));
    g.code32("long_pm", |a| {
        rt::pm32_init(a)?;
        rt::enter_long(a, "long_main")
    });
    g.code64("long_main", |a| {
        rt::long_init(a)?;

        a.check("long_mode_active", |a| {
            a.mov(ecx, EFER as i32)?;
            a.rdmsr()?;
            a.and(eax, (EFER_LME | EFER_LMA) as i32)?;
            a.expect_eq(eax, EFER_LME | EFER_LMA, "EFER.LME|LMA")?;
            a.mov(ax, cs)?;
            a.movzx(eax, ax)?;
            a.expect_eq(eax, KCODE64 as u32, "CS")?;
            a.mov(rbx, rsp)?;
            a.push(rax)?;
            a.sub(rbx, rsp)?;
            a.pop(rax)?;
            a.expect_eq64(rbx, 8, "bytes pushed by PUSH RAX")
        })?;

        a.check("long_regs64", |a| {
            a.mov(rax, 0x1234_5678_9ABC_DEF0u64)?;
            a.mov(r8, rax)?;
            a.ror(r8, 16)?;
            a.expect_eq64(r8, 0xDEF0_1234_5678_9ABC, "ROR r8, 16")?;
            a.mov(r10, 0x1_0000_0001u64)?;
            a.imul_2(r10, r10)?;
            a.expect_eq64(r10, 0x2_0000_0001, "IMUL r10, r10 (truncated)")?;
            a.mov(rax, -1i64 as u64)?;
            a.mov(eax, 5)?;
            a.expect_eq64(rax, 5, "32-bit MOV zero-extends")?;
            a.mov(r15, -2i64 as u64)?;
            a.push(r15)?;
            a.pop(r11)?;
            a.expect_eq64(r11, -2i64 as u64, "PUSH r15 / POP r11")
        })?;

        a.check("compat_mode", |a| {
            // RETFQ to the 32-bit code segment: compatibility mode, where 0x48
            // is DEC EAX rather than a REX prefix.
            a.mov(dword_ptr(V_USER), 0)?;
            let mut back = a.addr_label();
            a.mov(dword_ptr(V_USER + 8), back.addr as i32)?;
            a.push(KCODE32 as i32)?;
            let c = a.symi("long_compat");
            a.push(c)?;
            a.retf()?; // RETFQ in 64-bit code
            a.bind(&mut back.label)?;
            a.expect_mem(
                V_USER,
                4,
                "EAX after MOV EAX,5; DEC EAX (0x48) in compatibility mode",
            )?;
            a.expect_mem_masked(
                V_USER + 4,
                EFER_LMA,
                EFER_LMA,
                "EFER.LMA in compatibility mode",
            )?;
            a.mov(ax, cs)?;
            a.movzx(eax, ax)?;
            a.expect_eq(eax, KCODE64 as u32, "CS back in 64-bit mode")
        })?;

        a.check("long_high_half_alias", |a| {
            a.mov(rax, HIGH + SCRATCH)?;
            a.mov(dword_ptr(rax), 0x600D_CAFE)?;
            a.expect_mem(
                SCRATCH,
                0x600D_CAFE,
                "physical SCRATCH written through 0xFFFF8000_00080000",
            )
        })?;

        a.check("long_pf_nx_fetch", |a| {
            a.mov(byte_ptr(0x60_0000u64), 0xC3u32 as i32)?;
            a.expect_fault(|a| {
                a.mov(eax, 0x60_0000)?;
                a.call(rax)
            })?;
            a.expect_exception(14, Some(0x11))?;
            a.expect_cr2(0x60_0000)?;
            a.expect_fault_ip(0x60_0000)
        })?;

        a.check("long_pf_not_present_cr2", |a| {
            a.expect_fault(|a| {
                a.mov(rax, 0x0000_7FFF_FFFF_F008u64)?;
                a.mov(dword_ptr(rax), 1)
            })?;
            a.expect_exception(14, Some(2))?;
            a.expect_cr2(0x0000_7FFF_FFFF_F008)
        })?;

        a.check("long_gp_noncanonical", |a| {
            let mut at = a.addr_label();
            a.expect_fault(|a| {
                a.mov(rax, 0x8000_0000_0000_0000u64)?;
                a.bind(&mut at.label)?;
                a.mov(rbx, qword_ptr(rax))
            })?;
            a.expect_exception(13, Some(0))?;
            a.expect_fault_ip(at.addr)
        })?;

        a.check("long_pf_write_protect", |a| {
            a.mov(rax, cr0)?;
            a.or(eax, CR0_WP as i32)?;
            a.mov(cr0, rax)?;
            a.expect_fault(|a| a.mov(dword_ptr(0x60_2010u64), 1))?;
            a.expect_exception(14, Some(3))?;
            a.expect_cr2(0x60_2010)
        })?;

        a.check("long_df_on_ist", |a| {
            idt64_present(a, 13, false)?;
            a.expect_fault(|a| {
                a.mov(rax, 0x8000_0000_0000_0000u64)?;
                a.mov(rbx, qword_ptr(rax))
            })?;
            idt64_present(a, 13, true)?;
            a.expect_exception(8, Some(0))?;
            a.expect_mem64(V_FRAME_SP, IST1_TOP - 40, "handler stack (IST1 - 40)")
        })?;

        a.check("cmpxchg16b_equal", |a| {
            let m = SCRATCH + 0x100;
            a.mov(rax, 0x1111_2222_3333_4444u64)?;
            a.mov(qword_ptr(m), rax)?;
            a.mov(rdx, 0x5555_6666_7777_8888u64)?;
            a.mov(qword_ptr(m + 8), rdx)?;
            a.mov(rbx, 0xAAAA_0000_0000_0001u64)?;
            a.mov(rcx, 0xBBBB_0000_0000_0002u64)?;
            a.lock().cmpxchg16b(xmmword_ptr(m))?;
            a.expect_that("ZF set", |a, ok| a.je(ok))?;
            a.expect_mem64(m, 0xAAAA_0000_0000_0001, "low qword")?;
            a.expect_mem64(m + 8, 0xBBBB_0000_0000_0002, "high qword")
        })?;

        a.check("cmpxchg16b_differ", |a| {
            let m = SCRATCH + 0x100;
            a.xor(eax, eax)?;
            a.xor(edx, edx)?;
            a.cmpxchg16b(xmmword_ptr(m))?;
            a.expect_that("ZF clear", |a, ok| a.jne(ok))?;
            a.expect_eq64(rax, 0xAAAA_0000_0000_0001, "RAX loaded")?;
            a.expect_eq64(rdx, 0xBBBB_0000_0000_0002, "RDX loaded")
        })?;

        a.check("rep_movsq_a64", |a| {
            let src = SCRATCH + 0x1000;
            let dst = HIGH + SCRATCH + 0x2000;
            for i in 0..4u64 {
                a.mov(rax, 0x0101_0101_0101_0101u64 * (i + 1))?;
                a.mov(qword_ptr(src + 8 * i), rax)?;
            }
            a.mov(rsi, src)?;
            a.mov(rdi, dst)?;
            a.mov(ecx, 4)?;
            a.rep().movsq()?;
            a.expect_eq64(rdi, dst + 32, "RDI (high-half destination)")?;
            a.expect_eq64(rcx, 0, "RCX")?;
            a.expect_mem64(SCRATCH + 0x2018, 0x0404_0404_0404_0404, "last qword copied")
        })?;

        a.check("rep_stosb_a32", |a| {
            // 32-bit address size in 64-bit mode: EDI is used (upper half of
            // RDI ignored) and written back zero-extended.
            a.mov(dword_ptr(SCRATCH + 0x3000), 0)?;
            a.mov(rdi, 0xFFFF_FFFF_0000_0000u64 | (SCRATCH + 0x3000))?;
            a.mov(ecx, 4)?;
            a.mov(al, 0xAB)?;
            a.add_instruction(Instruction::with_rep_stosb(32)?)?;
            a.expect_eq64(rdi, SCRATCH + 0x3004, "RDI after a32 REP STOSB")?;
            a.expect_mem(SCRATCH + 0x3000, 0xABAB_ABAB, "bytes stored at EDI")
        })?;

        a.check("rep_stosq_df1", |a| {
            a.mov(rax, 0x5A5A_5A5A_5A5A_5A5Au64)?;
            a.mov(qword_ptr(SCRATCH + 0x4000), 0)?;
            a.mov(rdi, SCRATCH + 0x4018)?;
            a.mov(ecx, 3)?;
            a.std()?;
            a.rep().stosq()?;
            a.cld()?;
            a.expect_eq64(rdi, SCRATCH + 0x4000, "RDI after 3 backward stores")?;
            a.expect_mem64(
                SCRATCH + 0x4008,
                0x5A5A_5A5A_5A5A_5A5A,
                "lowest qword stored",
            )?;
            a.expect_mem64(SCRATCH + 0x4000, 0, "qword below untouched")
        })?;

        a.check("long_ss_noncanonical_rbp", |a| {
            // A reference through RBP uses SS: non-canonical gives #SS(0).
            a.expect_fault(|a| {
                a.mov(rbp, 0x8000_0000_0000_0000u64)?;
                a.mov(rax, qword_ptr(rbp))
            })?;
            a.xor(ebp, ebp)?;
            a.expect_exception(12, Some(0))
        })?;

        a.check("long_pf_reserved_bit", |a| {
            // Set the lowest reserved physical-address bit (MAXPHYADDR) in a
            // present PTE: #PF with P and RSVD (error code 9).
            a.mov(eax, 0x8000_0008u32 as i32)?;
            a.cpuid()?;
            a.movzx(ecx, al)?;
            a.mov(eax, 1)?;
            a.shl(rax, cl)?;
            a.or(rax, 0x60_6000 | 3)?;
            let pt = a.sym("pt64_test");
            a.mov(qword_ptr(pt + 6 * 8), rax)?;
            a.invlpg(ptr(0x60_6000u64))?;
            a.expect_fault(|a| a.mov(eax, dword_ptr(0x60_6010u64)))?;
            a.expect_exception(14, Some(9))?;
            a.expect_cr2(0x60_6010)
        })?;

        a.check("long_pf_fetch_crossing_page", |a| {
            // 0x604000: present, read-only, executable; 0x605000 absent.
            a.mov(rax, cr0)?;
            a.and(eax, !CR0_WP as i32)?;
            a.mov(cr0, rax)?;
            a.mov(word_ptr(0x60_4FFEu64), 0x78B8)?; // MOV EAX, imm32 cut by the page end
            a.expect_fault(|a| {
                a.mov(eax, 0x60_4FFE)?;
                a.call(rax)
            })?;
            a.expect_exception(14, Some(0x10))?;
            a.expect_cr2(0x60_5000)?;
            a.expect_fault_ip(0x60_4FFE)
        })?;

        a.check("long_fs_gs_base_swapgs", |a| {
            wrmsr64(a, 0xC000_0100, SCRATCH + 0x6000)?;
            wrmsr64(a, 0xC000_0101, SCRATCH + 0x7000)?;
            wrmsr64(a, 0xC000_0102, SCRATCH + 0x8000)?;
            a.mov(dword_ptr(SCRATCH + 0x6008), 0xF5F5)?;
            a.mov(dword_ptr(SCRATCH + 0x7008), 0x6565)?;
            a.mov(dword_ptr(SCRATCH + 0x8008), 0x8888)?;
            a.mov(eax, dword_ptr(8u64).fs())?;
            a.expect_eq(eax, 0xF5F5, "FS:[8] with FS.base from MSR 0xC0000100")?;
            a.mov(eax, dword_ptr(8u64).gs())?;
            a.expect_eq(eax, 0x6565, "GS:[8] with GS.base from MSR 0xC0000101")?;
            a.swapgs()?;
            a.mov(eax, dword_ptr(8u64).gs())?;
            a.expect_eq(eax, 0x8888, "GS:[8] after SWAPGS")?;
            a.mov(ecx, 0xC000_0102u32 as i32)?;
            a.rdmsr()?;
            a.expect_eq(eax, SCRATCH as u32 + 0x7000, "KERNEL_GS_BASE after SWAPGS")?;
            a.swapgs()
        })?;

        a.check("long_rip_relative", |a| {
            let mut data = a.addr_label();
            let mut over = a.create_label();
            a.jmp(over)?;
            a.bind(&mut data.label)?;
            a.dq(&[0x0123_4567_89AB_CDEF])?;
            a.bind(&mut over)?;
            a.lea(rax, ptr(data.label))?;
            a.expect_eq64(rax, data.addr, "LEA rax, [rip+data]")?;
            a.mov(rbx, qword_ptr(data.label))?;
            a.expect_eq64(rbx, 0x0123_4567_89AB_CDEF, "MOV rbx, [rip+data]")
        })?;

        a.check("long_div_128", |a| {
            a.mov(edx, 1)?;
            a.xor(eax, eax)?;
            a.mov(ebx, 3)?;
            a.div(rbx)?;
            a.expect_eq64(rax, 0x5555_5555_5555_5555, "quotient of 2^64 / 3")?;
            a.expect_eq64(rdx, 1, "remainder")?;
            a.mov(rax, -7i64 as u64)?;
            a.cqo()?;
            a.mov(ebx, 2)?;
            a.idiv(rbx)?;
            a.expect_eq64(rax, -3i64 as u64, "IDIV quotient of -7 / 2")?;
            a.expect_eq64(rdx, -1i64 as u64, "IDIV remainder")
        })?;

        a.check("long_div_overflow_de", |a| {
            a.expect_fault(|a| {
                a.mov(edx, 5)?;
                a.xor(eax, eax)?;
                a.mov(ebx, 3)?;
                a.div(rbx) // quotient 5 * 2^64 / 3 does not fit in 64 bits
            })?;
            a.expect_exception(0, Some(0))
        })?;

        a.check("long_2m_page_dirty", |a| {
            let pd = a.sym("pd64");
            a.expect_mem_masked(pd + 8 * 8, 0x60, 0, "A/D of the untouched 2 MiB PDE")?;
            a.mov(dword_ptr(0x100_0010u64), 1)?;
            a.expect_mem_masked(pd + 8 * 8, 0x60, 0x60, "A/D after a write through it")
        })?;

        a.check("long_ring3_compat_mode", |a| {
            // IRETQ to a 32-bit ring-3 code segment: compatibility mode at CPL 3.
            a.mov(dword_ptr(V_USER + 56), 0)?;
            let after = a.arm_resume()?;
            a.push((UDATA | 3) as i32)?;
            a.push(STACK3_TOP as i32)?;
            a.push(2)?;
            a.push((UCODE32 | 3) as i32)?;
            let u = a.symi("u_compat");
            a.push(u)?;
            a.iretq()?;
            a.resume_here(after)?;
            a.expect_exception(0x80, None)?;
            a.expect_mem(
                V_USER + 56,
                4,
                "EAX after MOV EAX,5; DEC EAX (0x48) at CPL 3",
            )?;
            a.expect_mem64(V_FRAME + 8, u64::from(UCODE32 | 3), "saved CS")?;
            a.expect_mem64(V_FRAME + 24, STACK3_TOP, "saved RSP")
        })?;

        // SYSCALL / SYSRET from 64-bit ring 3.
        wrmsr64(
            a,
            STAR,
            (u64::from(UCODE32) << 48) | (u64::from(KCODE64) << 32),
        )?;
        let entry = a.sym("k_syscall");
        wrmsr64(a, LSTAR, entry)?;
        wrmsr64(a, SFMASK, u64::from(EFLAGS_DF))?;
        for i in 0..12u64 {
            a.mov(dword_ptr(V_USER + 4 * i), -1)?;
        }
        let after = a.arm_resume()?;
        let u = a.sym("u_syscall");
        rt::to_ring3_64(a, u, STACK3_TOP, EFLAGS_DF | 0x2)?;
        a.resume_here(after)?;

        a.check("syscall_entry_state", |a| {
            let ret = a.sym("u_syscall_ret");
            a.expect_mem64(V_USER, ret, "RCX = return RIP")?;
            a.expect_mem64(V_USER + 8, u64::from(EFLAGS_DF | 0x2), "R11 = RFLAGS")?;
            a.expect_mem(V_USER + 40, KCODE64 as u32, "CS = STAR[47:32]")?;
            a.expect_mem(V_USER + 44, (KCODE64 + 8) as u32, "SS = STAR[47:32] + 8")?;
            a.expect_mem_masked(V_USER + 48, EFLAGS_DF, 0, "RFLAGS.DF masked by SFMASK")
        })?;

        a.check("sysret_return_state", |a| {
            a.expect_mem(
                V_USER + 16,
                (UCODE64 | 3) as u32,
                "CS = STAR[63:48] + 16 | 3",
            )?;
            a.expect_mem(V_USER + 20, (UDATA | 3) as u32, "SS = STAR[63:48] + 8 | 3")?;
            a.expect_mem(V_USER + 24, EFLAGS_DF | 0x2, "RFLAGS = R11")?;
            a.expect_mem64(V_USER + 32, 0x1122_3344_5566_7788, "R12 preserved")
        })?;

        a.check("long_ring3_int_rsp0", |a| {
            a.expect_exception(0x80, None)?;
            a.expect_mem64(V_FRAME + 8, u64::from(UCODE64 | 3), "saved CS")?;
            a.expect_mem64(V_FRAME + 24, STACK3_TOP, "saved RSP")?;
            a.expect_mem64(V_FRAME + 32, u64::from(UDATA | 3), "saved SS")?;
            a.expect_mem64(V_FRAME_SP, TSS_STACK_TOP - 40, "handler stack (RSP0 - 40)")
        })?;

        a.print("long: done\n")?;
        a.exit(0)
    });
    g.code32("long_compat_code", |a| {
        a.here("long_compat")?;
        a.mov(eax, 5)?;
        a.bytes(&[0x48])?; // DEC EAX in compatibility mode
        a.mov(dword_ptr(V_USER), eax)?;
        a.mov(ecx, EFER as i32)?;
        a.rdmsr()?;
        a.mov(dword_ptr(V_USER + 4), eax)?;
        a.push(KCODE64 as i32)?;
        a.push(dword_ptr(V_USER + 8))?;
        a.retf()
    });
    g.code32("long_compat_user", |a| {
        a.here("u_compat")?;
        rt::ring3_data_segs(a)?;
        a.mov(eax, 5)?;
        a.bytes(&[0x48])?; // DEC EAX in compatibility mode
        a.mov(dword_ptr(V_USER + 56), eax)?;
        a.int(0x80)
    });
    g.code64("long_user", |a| {
        a.here("u_syscall")?;
        a.mov(r12, 0x1122_3344_5566_7788u64)?;
        a.syscall()?;
        a.here("u_syscall_ret")?;
        a.mov(ax, cs)?;
        a.movzx(eax, ax)?;
        a.mov(dword_ptr(V_USER + 16), eax)?;
        a.mov(ax, ss)?;
        a.movzx(eax, ax)?;
        a.mov(dword_ptr(V_USER + 20), eax)?;
        a.pushfq()?;
        a.pop(rax)?;
        a.mov(dword_ptr(V_USER + 24), eax)?;
        a.mov(qword_ptr(V_USER + 32), r12)?;
        a.cld()?;
        a.int(0x80)?;

        a.here("k_syscall")?;
        a.mov(qword_ptr(V_USER), rcx)?;
        a.mov(qword_ptr(V_USER + 8), r11)?;
        a.mov(ax, cs)?;
        a.movzx(eax, ax)?;
        a.mov(dword_ptr(V_USER + 40), eax)?;
        a.mov(ax, ss)?;
        a.movzx(eax, ax)?;
        a.mov(dword_ptr(V_USER + 44), eax)?;
        a.pushfq()?;
        a.pop(rax)?;
        a.mov(dword_ptr(V_USER + 48), eax)?;
        a.sysretq()
    });
    g.build().expect("long guest assembles")
}
