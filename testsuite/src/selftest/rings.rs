//! Privilege levels in 32-bit protected mode (paging off): IRET to ring 3,
//! interrupt gates back to ring 0 with the TSS stack switch, #GP from ring
//! 3, SYSENTER/SYSEXIT.

use iced_x86::code_asm::*;

use crate::guests::asm::{Asm, R};
use crate::guests::layout::*;
use crate::guests::{rt, BuiltGuest, Guest};

/// Runs ring-3 code at `user` with EFLAGS `eflags`; comes back through the
/// exception or INT 0x80 it raises.
fn run_user(a: &mut Asm, user: &str, eflags: u32) -> R {
    let after = a.arm_resume()?;
    let t = a.sym(user);
    rt::to_ring3_32(a, t, STACK3_TOP, eflags)?;
    a.resume_here(after)
}

const SYSENTER_STACK: u64 = TSS_STACK_TOP - 0x800;

pub fn build() -> BuiltGuest {
    let mut g = Guest::new("rings", |a| rt::enter_pm32(a, "rings_main"));
    g.code32("rings_main", |a| {
        rt::pm32_init(a)?;

        a.check("ring3_enter_iret", |a| {
            a.mov(dword_ptr(V_USER), 0)?;
            run_user(a, "u_cs", 0x2)?;
            a.expect_mem(V_USER, (UCODE32 | 3) as u32, "CS read in ring 3")?;
            a.expect_mem(V_USER + 4, (UDATA | 3) as u32, "SS read in ring 3")?;
            a.mov(ax, cs)?;
            a.movzx(eax, ax)?;
            a.expect_eq(eax, KCODE32 as u32, "CS back in ring 0")
        })?;

        a.check("ring3_int_gate_stack_switch", |a| {
            run_user(a, "u_cs", 0x2)?;
            a.expect_exception(0x80, None)?;
            let ret = a.sym("u_cs_ret");
            a.expect_fault_ip(ret)?;
            a.expect_mem(V_FRAME + 8, (UCODE32 | 3) as u32, "saved CS")?;
            a.expect_mem(V_FRAME + 24, STACK3_TOP as u32, "saved ESP")?;
            a.expect_mem(V_FRAME + 32, (UDATA | 3) as u32, "saved SS")?;
            a.expect_mem(
                V_FRAME_SP,
                (TSS_STACK_TOP - 20) as u32,
                "handler stack (TSS ESP0 - 20)",
            )?;
            a.expect_mem_masked(V_FRAME + 16, EFLAGS_IF | 0x2, 0x2, "saved EFLAGS")
        })?;

        a.check("ring3_iret_from_handler", |a| {
            a.mov(dword_ptr(V_USER), 0)?;
            run_user(a, "u_iret", 0x2)?;
            a.expect_exception(0x80, None)?;
            a.expect_mem(V_USER, 42, "EAX incremented by the INT 0x82 handler")?;
            a.expect_mem(V_USER + 4, (UCODE32 | 3) as u32, "CS after IRET to ring 3")?;
            a.expect_mem(V_USER + 8, STACK3_TOP as u32, "ESP after IRET to ring 3")
        })?;

        for (name, user, err, what) in [
            ("ring3_gp_hlt", "u_hlt", 0u32, "HLT"),
            ("ring3_gp_cli_iopl0", "u_cli", 0, "CLI"),
            (
                "ring3_gp_int_dpl0_gate",
                "u_int81",
                0x81 * 8 + 2,
                "INT 0x81",
            ),
            (
                "ring3_gp_load_ring0_ds",
                "u_load_kds",
                KDATA as u32,
                "MOV DS",
            ),
            ("ring3_gp_in_no_io_bitmap", "u_in", 0, "IN"),
        ] {
            a.check(name, |a| {
                run_user(a, user, 0x2)?;
                a.expect_exception(13, Some(err))?;
                let at = a.sym(&format!("{user}_at"));
                a.expect_fault_ip(at)?;
                a.expect_mem(
                    V_FRAME + 8,
                    (UCODE32 | 3) as u32,
                    &format!("saved CS of the {what}"),
                )
            })?;
        }

        a.check("ring3_io_with_iopl3", |a| {
            run_user(a, "u_in", EFLAGS_IOPL3 | 0x2)?;
            a.expect_exception(0x80, None)
        })?;

        a.check("ring3_io_bitmap", |a| {
            // Switch to the TSS whose I/O bitmap allows port 0x3FD only.
            a.mov(ax, TSS32_IO_SEL as i32)?;
            a.ltr(ax)?;
            run_user(a, "u_in", 0x2)?;
            a.expect_exception(0x80, None)?;
            run_user(a, "u_in_denied", 0x2)?;
            a.expect_exception(13, Some(0))?;
            let at = a.sym("u_in_denied_at");
            a.expect_fault_ip(at)?;
            a.expect_mem(
                V_FRAME_SP,
                (TSS_STACK_TOP - 20) as u32,
                "ESP0 of the new TSS",
            )
        })?;

        a.check("sysenter_sysexit", |a| {
            for (msr, v) in [
                (0x174u32, KCODE32 as u64),
                (0x175, SYSENTER_STACK),
                (0x176, a.sym("k_sysenter")),
            ] {
                a.mov(ecx, msr as i32)?;
                a.mov(eax, v as i32)?;
                a.xor(edx, edx)?;
                a.wrmsr()?;
            }
            for i in 0..8u64 {
                a.mov(dword_ptr(V_USER + 4 * i), -1)?;
            }
            run_user(a, "u_sysenter", 0x2)?;
            a.expect_exception(0x80, None)?;
            a.expect_mem(V_USER, KCODE32 as u32, "CS after SYSENTER")?;
            a.expect_mem(V_USER + 4, KDATA as u32, "SS after SYSENTER")?;
            a.expect_mem(V_USER + 8, SYSENTER_STACK as u32, "ESP after SYSENTER")?;
            a.expect_mem_masked(
                V_USER + 12,
                EFLAGS_IF | EFLAGS_VM,
                0,
                "EFLAGS.IF/VM after SYSENTER",
            )?;
            a.expect_mem(V_USER + 16, (UCODE32 | 3) as u32, "CS after SYSEXIT")?;
            a.expect_mem(V_USER + 20, (UDATA | 3) as u32, "SS after SYSEXIT")?;
            a.expect_mem(
                V_USER + 24,
                STACK3_TOP as u32 - 4,
                "ESP after SYSEXIT (= ECX)",
            )?;
            a.expect_mem(V_USER + 28, 0x1234_5678, "ESI preserved")
        })?;

        a.check("call_gate_ring3_to_ring0", |a| {
            for i in 0..10u64 {
                a.mov(dword_ptr(V_USER + 4 * i), -1)?;
            }
            run_user(a, "u_callgate", 0x2)?;
            a.expect_exception(0x80, None)?;
            a.expect_mem(V_USER, KCODE32 as u32, "CS in the gate's target")?;
            a.expect_mem(
                V_USER + 4,
                (TSS_STACK_TOP - 20) as u32,
                "ESP in the target (TSS ESP0 - 20)",
            )?;
            let ret = a.sym("u_callgate_ret");
            a.expect_mem(V_USER + 8, ret as u32, "return EIP on the new stack")?;
            a.expect_mem(V_USER + 12, (UCODE32 | 3) as u32, "return CS")?;
            a.expect_mem(
                V_USER + 16,
                0x1234_ABCD,
                "parameter copied to the new stack",
            )?;
            a.expect_mem(V_USER + 20, STACK3_TOP as u32 - 4, "caller ESP")?;
            a.expect_mem(V_USER + 24, (UDATA | 3) as u32, "caller SS")?;
            a.expect_mem(V_USER + 28, STACK3_TOP as u32, "ring-3 ESP after RETF 4")?;
            a.expect_mem(V_USER + 32, (UCODE32 | 3) as u32, "ring-3 CS after RETF 4")
        })?;

        a.print("rings: done\n")?;
        a.exit(0)
    });
    g.code32("rings_user", |a| {
        // Records CS, SS in V_USER, V_USER+4; returns through INT 0x80.
        a.here("u_cs")?;
        rt::ring3_data_segs(a)?;
        a.mov(ax, cs)?;
        a.movzx(eax, ax)?;
        a.mov(dword_ptr(V_USER), eax)?;
        a.mov(ax, ss)?;
        a.movzx(eax, ax)?;
        a.mov(dword_ptr(V_USER + 4), eax)?;
        a.int(0x80)?;
        a.here("u_cs_ret")?;
        a.jmp(0u64)?; // never reached (the handler does not return)

        a.here("u_iret")?;
        rt::ring3_data_segs(a)?;
        a.mov(eax, 41)?;
        a.int(0x82)?;
        a.mov(dword_ptr(V_USER), eax)?;
        a.mov(ax, cs)?;
        a.movzx(eax, ax)?;
        a.mov(dword_ptr(V_USER + 4), eax)?;
        a.mov(dword_ptr(V_USER + 8), esp)?;
        a.int(0x80)?;

        for (user, body) in [
            ("u_hlt", 0u8),
            ("u_cli", 1),
            ("u_int81", 2),
            ("u_load_kds", 3),
            ("u_in", 4),
        ] {
            a.here(user)?;
            rt::ring3_data_segs(a)?;
            if body == 3 {
                a.mov(ax, KDATA as i32)?;
            }
            if body == 4 {
                a.mov(dx, 0x3FD)?;
            }
            a.here(&format!("{user}_at"))?;
            match body {
                0 => a.hlt()?,
                1 => a.cli()?,
                2 => a.int(0x81)?,
                3 => a.mov(ds, ax)?,
                _ => a.in_(al, dx)?,
            }
            a.int(0x80)?;
        }

        a.here("u_in_denied")?;
        rt::ring3_data_segs(a)?;
        a.mov(dx, IO_ALLOWED_PORT as i32 - 1)?;
        a.here("u_in_denied_at")?;
        a.in_(al, dx)?;
        a.int(0x80)?;

        a.here("u_sysenter")?;
        rt::ring3_data_segs(a)?;
        a.push(eax)?; // ESP = STACK3_TOP - 4
        a.mov(ecx, esp)?;
        let ret = a.symi("u_sysexit_ret");
        a.mov(edx, ret)?;
        a.mov(esi, 0x1234_5678)?;
        a.sysenter()?;
        a.here("u_sysexit_ret")?;
        a.mov(ax, cs)?;
        a.movzx(eax, ax)?;
        a.mov(dword_ptr(V_USER + 16), eax)?;
        a.mov(ax, ss)?;
        a.movzx(eax, ax)?;
        a.mov(dword_ptr(V_USER + 20), eax)?;
        a.mov(dword_ptr(V_USER + 24), esp)?;
        a.mov(dword_ptr(V_USER + 28), esi)?;
        a.int(0x80)?;

        a.here("u_callgate")?;
        rt::ring3_data_segs(a)?;
        a.push(0x1234_ABCD)?;
        a.add_instruction(iced_x86::Instruction::with_far_branch(
            iced_x86::Code::Call_ptr1632,
            CALL_GATE | 3,
            0,
        )?)?;
        a.here("u_callgate_ret")?;
        a.mov(dword_ptr(V_USER + 28), esp)?;
        a.mov(ax, cs)?;
        a.movzx(eax, ax)?;
        a.mov(dword_ptr(V_USER + 32), eax)?;
        a.int(0x80)?;

        // Ring-0 target of the call gate: records CS, ESP and the frame.
        a.here("cg_handler")?;
        a.mov(ax, cs)?;
        a.movzx(eax, ax)?;
        a.mov(dword_ptr(V_USER), eax)?;
        a.mov(dword_ptr(V_USER + 4), esp)?;
        for i in 0..5i32 {
            a.mov(eax, dword_ptr(esp + 4 * i))?;
            a.mov(dword_ptr(V_USER + 8 + 4 * i as u64), eax)?;
        }
        a.retf_1(4)?;

        // Ring-0 SYSENTER target: records CS, SS, ESP, EFLAGS; SYSEXIT.
        a.here("k_sysenter")?;
        a.push(eax)?;
        a.mov(ax, cs)?;
        a.movzx(eax, ax)?;
        a.mov(dword_ptr(V_USER), eax)?;
        a.mov(ax, ss)?;
        a.movzx(eax, ax)?;
        a.mov(dword_ptr(V_USER + 4), eax)?;
        a.lea(eax, dword_ptr(esp + 4))?;
        a.mov(dword_ptr(V_USER + 8), eax)?;
        a.pushfd()?;
        a.pop(eax)?;
        a.mov(dword_ptr(V_USER + 12), eax)?;
        a.pop(eax)?;
        a.sysexit()
    });
    g.build().expect("rings guest assembles")
}
