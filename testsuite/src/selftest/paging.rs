//! Paging: 32-bit (4 KiB and 4 MiB pages), accessed/dirty bits, INVLPG,
//! #PF error codes and CR2, then PAE with NX. The page tables are the ones
//! [`crate::guests::rt::add_page_tables`] describes; this guest edits
//! `pt32_test` (linear 0x4000_0000 + 4 KiB × i) as it goes:
//!
//! | PTE | maps to   | flags           | used by |
//! |-----|-----------|-----------------|---------|
//! | 0   | 0x20_0000 | P RW US         | alias, INVLPG (switched to 0x20_1000 and back) |
//! | 1   | 0x20_1000 | P RW US, A=D=0  | accessed/dirty |
//! | 2   | —         | not present     | #PF not present |
//! | 3   | 0x20_3000 | P US (read-only)| WP, user write |
//! | 4   | 0x20_4000 | P RW (supervisor)| user read |

use iced_x86::code_asm::*;

use crate::guests::asm::Asm;
use crate::guests::asm::R;
use crate::guests::layout::*;
use crate::guests::{rt, BuiltGuest, Guest};

fn set_pte(a: &mut Asm, index: u64, value: u64) -> R {
    let pt = a.sym("pt32_test");
    a.mov(dword_ptr(pt + 4 * index), value as i32)?;
    a.invlpg(ptr(0x4000_0000u64 + 0x1000 * index))
}

/// From ring 0: run ring-3 code at symbol `user` and come back through the
/// fault (or INT 0x80) it raises.
fn run_user(a: &mut Asm, user: &str) -> R {
    let after = a.arm_resume()?;
    let t = a.sym(user);
    rt::to_ring3_32(a, t, STACK3_TOP, 0x2)?;
    a.resume_here(after)
}

pub fn build() -> BuiltGuest {
    let mut g = Guest::new("paging", |a| rt::enter_pm32(a, "pg_main"));
    g.code32("pg_main", |a| {
        rt::pm32_init(a)?;
        rt::enable_paging32(a)?;
        let pd = a.sym("pd32");
        let pt = a.sym("pt32_test");

        a.check("paging32_on", |a| {
            a.mov(eax, cr0)?;
            a.and(eax, CR0_PG as i32)?;
            a.expect_eq(eax, CR0_PG, "CR0.PG")?;
            a.mov(eax, cr3)?;
            a.expect_eq(eax, pd as u32, "CR3")?;
            a.mov(dword_ptr(SCRATCH), 0x1D1D_1D1D)?;
            a.expect_mem(SCRATCH, 0x1D1D_1D1D, "identity-mapped memory")
        })?;

        a.check("paging32_4k_alias", |a| {
            a.mov(dword_ptr(0x4000_0010u64), 0xA11A_5000u32 as i32)?;
            a.expect_mem(
                0x20_0010,
                0xA11A_5000,
                "physical 0x200010 written through 0x40000010",
            )
        })?;

        a.check("paging32_4m_page", |a| {
            a.mov(dword_ptr(0x8000_1234u64), 0x4D4D_4D4D)?;
            a.expect_mem(
                0x80_1234,
                0x4D4D_4D4D,
                "physical 0x801234 written through 0x80001234",
            )?;
            a.expect_mem_masked(pd + 0x200 * 4, 0x60, 0x60, "A and D of the 4 MiB PDE")
        })?;

        a.check("paging_accessed_dirty", |a| {
            set_pte(a, 1, 0x20_1000 | 7)?;
            a.mov(eax, dword_ptr(0x4000_1000u64))?;
            a.expect_mem_masked(pt + 4, 0x60, 0x20, "PTE A set, D clear after a read")?;
            a.mov(dword_ptr(0x4000_1000u64), eax)?;
            a.expect_mem_masked(pt + 4, 0x60, 0x60, "PTE A and D after a write")?;
            a.expect_mem_masked(pd + 0x100 * 4, 0x20, 0x20, "PDE A")
        })?;

        a.check("paging_invlpg", |a| {
            a.mov(dword_ptr(0x20_1000u64), 0xB0B0_B0B0u32 as i32)?;
            a.mov(eax, dword_ptr(0x4000_0000u64))?; // TLB now maps 0x40000000 -> 0x200000
            set_pte(a, 0, 0x20_1000 | 7)?; // remap and INVLPG
            a.mov(eax, dword_ptr(0x4000_0000u64))?;
            a.expect_eq(
                eax,
                0xB0B0_B0B0,
                "read through the remapped page after INVLPG",
            )
        })?;

        a.check("paging_cr3_reload_flush", |a| {
            a.mov(dword_ptr(pt), 0x20_0000 | 7)?;
            a.mov(eax, cr3)?;
            a.mov(cr3, eax)?;
            a.mov(eax, dword_ptr(0x4000_0010u64))?;
            a.expect_eq(
                eax,
                0xA11A_5000,
                "read after remapping back and reloading CR3",
            )
        })?;

        a.check("pf_not_present_read", |a| {
            let mut at = a.addr_label();
            a.expect_fault(|a| {
                a.bind(&mut at.label)?;
                a.mov(eax, dword_ptr(0x4000_2010u64))
            })?;
            a.expect_exception(14, Some(0))?;
            a.expect_cr2(0x4000_2010)?;
            a.expect_fault_ip(at.addr)
        })?;

        a.check("pf_not_present_write", |a| {
            a.expect_fault(|a| a.mov(dword_ptr(0x4000_2020u64), eax))?;
            a.expect_exception(14, Some(2))?;
            a.expect_cr2(0x4000_2020)
        })?;

        a.check("pf_write_readonly_wp", |a| {
            set_pte(a, 3, 0x20_3000 | 5)?;
            // CR0.WP = 0: ring 0 may write a read-only page.
            a.mov(dword_ptr(0x4000_3000u64), 0x77)?;
            a.expect_mem(0x20_3000, 0x77, "supervisor write with CR0.WP=0")?;
            a.mov(eax, cr0)?;
            a.or(eax, CR0_WP as i32)?;
            a.mov(cr0, eax)?;
            a.expect_fault(|a| a.mov(dword_ptr(0x4000_3004u64), 1))?;
            a.mov(eax, cr0)?;
            a.and(eax, !CR0_WP as i32)?;
            a.mov(cr0, eax)?;
            a.expect_exception(14, Some(3))?;
            a.expect_cr2(0x4000_3004)?;
            a.expect_mem(0x20_3004, 0, "memory not written")
        })?;

        a.check("pf_user_supervisor_page", |a| {
            set_pte(a, 4, 0x20_4000 | 3)?;
            run_user(a, "pg_user_read")?;
            a.expect_exception(14, Some(5))?;
            a.expect_cr2(0x4000_4008)?;
            let at = a.sym("pg_user_read_at");
            a.expect_fault_ip(at)?;
            a.expect_mem(V_FRAME + 8, (UCODE32 | 3) as u32, "saved CS")
        })?;

        a.check("pf_user_write_readonly", |a| {
            run_user(a, "pg_user_write")?;
            a.expect_exception(14, Some(7))?;
            a.expect_cr2(0x4000_300C)
        })?;

        a.check("pf_fetch_crossing_page", |a| {
            // RET as the last byte of a present page runs; an instruction
            // whose bytes continue into the not-present page faults there.
            set_pte(a, 1, 0x20_1000 | 7)?;
            a.mov(byte_ptr(0x20_1FFFu64), 0xC3u32 as i32)?;
            a.mov(dword_ptr(V_VEC), -1)?;
            a.mov(eax, 0x4000_1FFF)?;
            a.call(eax)?;
            a.expect_mem(V_VEC, 0xFFFF_FFFF, "no exception for RET at the page end")?;
            a.mov(word_ptr(0x20_1FFDu64), 0x78B8)?; // B8 78 | 56 34 12 (next page)
            a.mov(byte_ptr(0x20_1FFFu64), 0x56)?;
            a.expect_fault(|a| {
                a.mov(eax, 0x4000_1FFD)?;
                a.call(eax)
            })?;
            a.expect_exception(14, Some(0))?;
            a.expect_cr2(0x4000_2000)?;
            a.expect_fault_ip(0x4000_1FFD)
        })?;

        a.check("pf_store_crossing_page_no_partial_write", |a| {
            a.mov(dword_ptr(0x20_1FFCu64), 0)?;
            a.expect_fault(|a| a.mov(dword_ptr(0x4000_1FFEu64), 0xAABB_CCDDu32 as i32))?;
            a.expect_exception(14, Some(2))?;
            a.expect_cr2(0x4000_2000)?;
            a.expect_mem(0x20_1FFC, 0, "bytes of the first page not written")
        })?;

        a.check("rep_stos_fault_midway", |a| {
            // REP STOSB over a page boundary into a not-present page: the
            // fault leaves ECX/EDI at the element that faulted, with the
            // earlier elements stored.
            a.mov(dword_ptr(0x20_1FF8u64), 0)?;
            a.mov(dword_ptr(0x20_1FFCu64), 0)?;
            a.mov(al, 0x5A)?;
            a.mov(edi, 0x4000_1FF8)?;
            a.mov(ecx, 16)?;
            a.expect_fault(|a| a.rep().stosb())?;
            a.expect_exception(14, Some(2))?;
            a.expect_cr2(0x4000_2000)?;
            a.expect_eq(ecx, 8, "ECX at the fault")?;
            a.expect_eq(edi, 0x4000_2000, "EDI at the fault")?;
            a.expect_mem(0x20_1FF8, 0x5A5A_5A5A, "bytes stored before the fault")?;
            a.expect_mem(0x20_1FFC, 0x5A5A_5A5A, "bytes stored before the fault")
        })?;

        // PAE with NX.
        rt::disable_paging(a)?;
        a.mov(eax, cr4)?;
        a.or(eax, CR4_PAE as i32)?;
        a.mov(cr4, eax)?;
        let pdpt = a.symi("pdpt_pae");
        a.mov(eax, pdpt)?;
        a.mov(cr3, eax)?;
        a.mov(ecx, EFER as i32)?;
        a.rdmsr()?;
        a.or(eax, EFER_NXE as i32)?;
        a.wrmsr()?;
        a.mov(eax, cr0)?;
        a.or(eax, CR0_PG as i32)?;
        a.mov(cr0, eax)?;

        a.check("pae_alias_2m", |a| {
            a.mov(dword_ptr(0x4000_0040u64), 0x2A2A_2A2A)?;
            a.expect_mem(
                0x20_0040,
                0x2A2A_2A2A,
                "physical 0x200040 through 0x40000040 (2 MiB page)",
            )
        })?;

        a.check("pae_nx_fetch", |a| {
            a.mov(byte_ptr(0x60_0000u64), 0xC3u32 as i32)?; // RET on an NX page
            a.expect_fault(|a| {
                a.mov(eax, 0x60_0000)?;
                a.call(eax)
            })?;
            a.expect_exception(14, Some(0x11))?;
            a.expect_cr2(0x60_0000)?;
            a.expect_fault_ip(0x60_0000)
        })?;

        a.check("pae_pf_not_present", |a| {
            a.expect_fault(|a| a.mov(eax, dword_ptr(0x60_1008u64)))?;
            a.expect_exception(14, Some(0))?;
            a.expect_cr2(0x60_1008)
        })?;

        a.check("pae_dirty_bit", |a| {
            let pt = a.sym("pt_pae_test");
            a.expect_mem_masked(pt, 0x60, 0x60, "A and D of the PAE PTE written through")?;
            a.expect_mem_masked(pt + 4, 0x8000_0000, 0x8000_0000, "NX bit kept")
        })?;

        a.print("paging: done\n")?;
        a.exit(0)
    });
    g.code32("pg_user", |a| {
        a.here("pg_user_read")?;
        rt::ring3_data_segs(a)?;
        a.here("pg_user_read_at")?;
        a.mov(eax, dword_ptr(0x4000_4008u64))?;
        a.int(0x80)?;
        a.here("pg_user_write")?;
        rt::ring3_data_segs(a)?;
        a.mov(dword_ptr(0x4000_300Cu64), eax)?;
        a.int(0x80)
    });
    g.build().expect("paging guest assembles")
}
