//! 32-bit protected mode: entry, CPUID, RDTSC, integer instructions, string
//! instructions and exceptions.

use iced_x86::code_asm::*;
use iced_x86::Instruction;

use crate::guests::asm::{Asm, R};
use crate::guests::layout::*;
use crate::guests::{rt, BuiltGuest, Guest};

/// Emits `pushfd; pop reg; and reg, mask`.
pub(crate) fn flags_to(a: &mut Asm, r: AsmRegister32, mask: u32) -> R {
    a.pushfd()?;
    a.pop(r)?;
    a.and(r, mask as i32)
}

/// Sets or clears the present bit of 32-bit IDT gate `v`.
fn idt32_present(a: &mut Asm, v: u8, present: bool) -> R {
    let at = a.sym("idt32") + u64::from(v) * 8 + 5;
    if present {
        a.or(byte_ptr(at), 0x80u32 as i32)
    } else {
        a.and(byte_ptr(at), 0x7F)
    }
}

pub fn build() -> BuiltGuest {
    let mut g = Guest::new("pmode", |a| rt::enter_pm32(a, "pm_main"));
    g.code32("pm_main", |a| {
        rt::pm32_init(a)?;
        a.check("pm_entered", |a| {
            a.mov(eax, cr0)?;
            a.and(eax, 1)?;
            a.expect_eq(eax, 1, "CR0.PE")?;
            a.mov(ax, cs)?;
            a.movzx(eax, ax)?;
            a.expect_eq(eax, KCODE32 as u32, "CS")?;
            a.mov(ax, ss)?;
            a.movzx(eax, ax)?;
            a.expect_eq(eax, KDATA as u32, "SS")?;
            a.mov(ebx, esp)?;
            a.push(eax)?;
            a.sub(ebx, esp)?;
            a.pop(eax)?;
            a.expect_eq(ebx, 4, "bytes pushed by PUSH EAX in a 32-bit segment")
        })?;

        a.check("cpuid_vendor", |a| {
            a.xor(eax, eax)?;
            a.cpuid()?;
            a.mov(dword_ptr(V_USER), ebx)?;
            a.mov(dword_ptr(V_USER + 4), edx)?;
            a.mov(dword_ptr(V_USER + 8), ecx)?;
            a.mov(byte_ptr(V_USER + 12), 0)?;
            a.print("  cpuid vendor: ")?;
            a.push(esi)?;
            a.mov(esi, V_USER as i32)?;
            let puts = a.sym("puts32");
            a.call(puts)?;
            a.pop(esi)?;
            a.print(", max leaf ")?;
            a.print_hex_eax()?;
            a.print("\n")?;
            a.expect_that("max basic leaf >= 1", |a, ok| {
                a.cmp(eax, 1)?;
                a.jae(ok)
            })?;
            // 12 printable characters.
            a.xor(ecx, ecx)?;
            let mut lp = a.create_label();
            a.bind(&mut lp)?;
            a.movzx(eax, byte_ptr(ecx + V_USER as i32))?;
            a.sub(eax, 0x20)?;
            a.cmp(eax, 0x5F)?;
            a.setb(al)?;
            a.movzx(eax, al)?;
            a.expect_eq(eax, 1, "vendor character printable")?;
            a.inc(ecx)?;
            a.cmp(ecx, 12)?;
            a.jb(lp)
        })?;

        a.check("cpuid_features", |a| {
            // PSE TSC MSR PAE CX8 SEP PGE CMOV
            let want = 1u32 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 8 | 1 << 11 | 1 << 13 | 1 << 15;
            a.mov(eax, 1)?;
            a.cpuid()?;
            a.and(edx, want as i32)?;
            a.expect_eq(edx, want, "leaf 1 EDX: PSE TSC MSR PAE CX8 SEP PGE CMOV")?;
            a.and(ecx, 1 << 13)?;
            a.expect_eq(ecx, 1 << 13, "leaf 1 ECX: CX16")
        })?;

        a.check("cpuid_no_unimplemented_extensions", |a| {
            // The CPU model advertises only what the interpreter implements:
            // never AVX (ECX bit 28), and never RDRAND (30), whose results
            // would differ between recording and replay.
            let unwanted = 1u32 << 28 | 1 << 30;
            a.mov(eax, 1)?;
            a.cpuid()?;
            a.and(ecx, unwanted as i32)?;
            a.expect_eq(ecx, 0, "leaf 1 ECX: no AVX or RDRAND")
        })?;

        a.check("cpuid_extended_features", |a| {
            a.mov(eax, 0x8000_0000u32 as i32)?;
            a.cpuid()?;
            a.expect_that("max extended leaf >= 0x80000001", |a, ok| {
                a.cmp(eax, 0x8000_0001u32 as i32)?;
                a.jae(ok)
            })?;
            let want = 1u32 << 11 | 1 << 20 | 1 << 29;
            a.mov(eax, 0x8000_0001u32 as i32)?;
            a.cpuid()?;
            a.and(edx, want as i32)?;
            a.expect_eq(edx, want, "leaf 0x80000001 EDX: SYSCALL NX LM")
        })?;

        a.check("rdtsc_monotonic", |a| {
            a.rdtsc()?;
            a.mov(esi, eax)?;
            a.mov(edi, edx)?;
            a.mov(eax, 0)?;
            a.cpuid()?;
            a.rdtsc()?;
            // (edx:eax) - (edi:esi) > 0 as a signed 64-bit value.
            a.sub(eax, esi)?;
            a.sbb(edx, edi)?;
            a.expect_eq(edx, 0, "high half of the TSC difference")?;
            a.expect_that("TSC strictly increased", |a, ok| {
                a.test(eax, eax)?;
                a.jnz(ok)
            })?;
            a.mov(esi, dword_ptr(V_TSC0))?;
            a.rdtsc()?;
            a.expect_that("TSC above the first reading", |a, ok| {
                a.cmp(eax, esi)?;
                a.ja(ok)
            })
        })?;

        a.check("rdtsc_exact_delta", |a| {
            // Between the two RDTSCs retire: MOV, MOV and 1000 x (DEC, JNZ)
            // plus the first RDTSC itself = 2003 instructions = 2003 ticks.
            a.rdtsc()?;
            a.mov(esi, eax)?;
            a.mov(ecx, 1000)?;
            let mut lp = a.create_label();
            a.bind(&mut lp)?;
            a.dec(ecx)?;
            a.jnz(lp)?;
            a.rdtsc()?;
            a.sub(eax, esi)?;
            a.expect_eq(eax, 2003, "TSC delta over 2003 instructions")
        })?;

        a.check("cmpxchg8b_equal", |a| {
            a.mov(dword_ptr(SCRATCH), 0x5566_7788)?;
            a.mov(dword_ptr(SCRATCH + 4), 0x1122_3344)?;
            a.mov(eax, 0x5566_7788)?;
            a.mov(edx, 0x1122_3344)?;
            a.mov(ebx, 0xAAAA_AAAAu32 as i32)?;
            a.mov(ecx, 0xBBBB_BBBBu32 as i32)?;
            a.lock().cmpxchg8b(qword_ptr(SCRATCH))?;
            a.expect_that("ZF set", |a, ok| a.je(ok))?;
            a.expect_mem64(SCRATCH, 0xBBBB_BBBB_AAAA_AAAA, "memory after the exchange")
        })?;

        a.check("cmpxchg8b_differ", |a| {
            a.xor(eax, eax)?;
            a.xor(edx, edx)?;
            a.mov(ebx, 1)?;
            a.mov(ecx, 2)?;
            a.cmpxchg8b(qword_ptr(SCRATCH))?;
            a.expect_that("ZF clear", |a, ok| a.jne(ok))?;
            a.expect_eq(eax, 0xAAAA_AAAA, "EAX loaded from memory")?;
            a.expect_eq(edx, 0xBBBB_BBBB, "EDX loaded from memory")?;
            a.expect_mem64(SCRATCH, 0xBBBB_BBBB_AAAA_AAAA, "memory unchanged")
        })?;

        a.check("bt_register", |a| {
            a.xor(ebx, ebx)?;
            a.mov(eax, 0x10)?;
            a.bt(eax, 4)?; // CF=1
            a.rcl(ebx, 1)?;
            a.bts(eax, 0)?; // CF=0, eax=0x11
            a.rcl(ebx, 1)?;
            a.btr(eax, 4)?; // CF=1, eax=0x01
            a.rcl(ebx, 1)?;
            a.btc(eax, 31)?; // CF=0, eax=0x80000001
            a.rcl(ebx, 1)?;
            a.mov(ecx, 36)?;
            a.bt(eax, ecx)?; // bit 36 mod 32 = 4: CF=0
            a.rcl(ebx, 1)?;
            a.mov(ecx, 32)?;
            a.bt(eax, ecx)?; // bit 0: CF=1
            a.rcl(ebx, 1)?;
            a.expect_eq(ebx, 0b101001, "carry flags of BT BTS BTR BTC BT BT")?;
            a.expect_eq(eax, 0x8000_0001, "operand after BTS/BTR/BTC")
        })?;

        a.check("bt_memory_bitstring", |a| {
            a.mov(edi, SCRATCH as i32 + 0xF0)?;
            a.mov(ecx, 0x20)?;
            a.xor(eax, eax)?;
            a.rep().stosd()?;
            a.mov(ecx, 75)?;
            a.bts(dword_ptr(SCRATCH + 0x100), ecx)?; // byte 9, bit 3
            a.mov(ecx, -1)?;
            a.bts(dword_ptr(SCRATCH + 0x100), ecx)?; // bit -1: byte -1, bit 7
            a.bts(dword_ptr(SCRATCH + 0x100), 35)?; // immediate: 35 mod 32 = 3
            a.mov(ecx, -9)?;
            a.bt(dword_ptr(SCRATCH + 0x100), ecx)?; // bit -9 = byte -2 bit 7: 0
            a.setc(al)?;
            a.movzx(eax, al)?;
            a.expect_eq(eax, 0, "BT of bit -9")?;
            a.expect_mem(SCRATCH + 0x108, 0x0800, "dword at +8 (bit 75)")?;
            a.expect_mem(SCRATCH + 0xFC, 0x8000_0000, "dword at -4 (bit -1)")?;
            a.expect_mem(SCRATCH + 0x100, 0x8, "dword at 0 (immediate 35 -> bit 3)")?;
            a.expect_mem(
                SCRATCH + 0x104,
                0,
                "dword at +4 (immediate offsets do not reach it)",
            )
        })?;

        a.check("mul_div_32", |a| {
            a.mov(eax, 0x8000_0000u32 as i32)?;
            a.mov(ebx, 4)?;
            a.mul(ebx)?;
            a.expect_eq(edx, 2, "MUL high")?;
            a.expect_eq(eax, 0, "MUL low")?;
            a.mov(edx, 2)?;
            a.mov(eax, 5)?;
            a.mov(ebx, 3)?;
            a.div(ebx)?;
            a.expect_eq(eax, 0xAAAA_AAAC, "DIV quotient of 0x2_00000005 / 3")?;
            a.expect_eq(edx, 1, "DIV remainder")?;
            a.imul_3(ecx, ebx, -5)?;
            a.expect_eq(ecx, 0xFFFF_FFF1, "IMUL ecx, ebx, -5")?;
            a.mov(eax, -1000)?;
            a.cdq()?;
            a.mov(ebx, 7)?;
            a.idiv(ebx)?;
            a.expect_eq(eax, (-142i32) as u32, "IDIV quotient")?;
            a.expect_eq(edx, (-6i32) as u32, "IDIV remainder")
        })?;

        a.check("mul_flags", |a| {
            a.mov(eax, 0x8000_0000u32 as i32)?;
            a.mov(ebx, 4)?;
            a.mul(ebx)?;
            flags_to(a, ecx, 0x801)?;
            a.expect_eq(ecx, 0x801, "CF/OF after a MUL with a high half")?;
            a.mov(eax, 3)?;
            a.mul(ebx)?;
            flags_to(a, ecx, 0x801)?;
            a.expect_eq(ecx, 0, "CF/OF after a MUL without a high half")?;
            a.mov(eax, 0x1_0000)?;
            a.imul_2(eax, eax)?;
            flags_to(a, ecx, 0x801)?;
            a.expect_eq(ecx, 0x801, "CF/OF after an overflowing IMUL")?;
            a.expect_eq(eax, 0, "IMUL truncated result")
        })?;

        a.check("shld_shrd", |a| {
            a.mov(eax, 0x1234_5678)?;
            a.mov(edx, 0x9ABC_DEF0u32 as i32)?;
            a.shld(eax, edx, 8)?;
            a.expect_eq(eax, 0x3456_789A, "SHLD eax, edx, 8")?;
            a.shrd(eax, edx, 12)?;
            a.setc(bl)?;
            a.expect_eq(eax, 0xEF03_4567, "SHRD eax, edx, 12")?;
            a.movzx(ebx, bl)?;
            a.expect_eq(ebx, 1, "CF after SHRD (bit 11 of 0x3456789A)")?;
            a.mov(cl, 40)?;
            a.shld(eax, edx, cl)?; // count masked to 8
            a.expect_eq(eax, 0x0345_679A, "SHLD by CL=40 (masked to 8)")?;
            a.mov(ax, 0x1234)?;
            a.mov(dx, 0xABCDu16 as i16 as i32)?;
            a.shld(ax, dx, 4)?;
            a.movzx(eax, ax)?;
            a.expect_eq(eax, 0x234A, "16-bit SHLD ax, dx, 4")
        })?;

        a.check("rep_movsd_forward", |a| {
            let src = SCRATCH as i32 + 0x1000;
            let dst = SCRATCH as i32 + 0x2000;
            a.xor(eax, eax)?;
            a.mov(edi, src)?;
            let mut fill = a.create_label();
            a.bind(&mut fill)?;
            a.stosd()?;
            a.inc(eax)?;
            a.cmp(eax, 16)?;
            a.jb(fill)?;
            a.mov(esi, src)?;
            a.mov(edi, dst)?;
            a.mov(ecx, 16)?;
            a.rep().movsd()?;
            a.expect_eq(ecx, 0, "ECX")?;
            a.expect_eq(esi, (src + 64) as u32, "ESI")?;
            a.expect_eq(edi, (dst + 64) as u32, "EDI")?;
            a.expect_mem(dst as u64 + 60, 15, "last dword copied")?;
            a.expect_mem(dst as u64 + 64, 0, "dword after the copy")
        })?;

        a.check("rep_movsb_df1_overlap", |a| {
            let s = SCRATCH + 0x3000;
            a.mov(dword_ptr(s), 0x4443_4241)?; // "ABCD"
            a.mov(dword_ptr(s + 4), 0x4847_4645)?; // "EFGH"
            a.std()?;
            a.mov(esi, s as i32 + 5)?;
            a.mov(edi, s as i32 + 7)?;
            a.mov(ecx, 6)?;
            a.rep().movsb()?;
            a.cld()?;
            a.expect_mem(s, 0x4241_4241, "bytes 0-3 (\"ABAB\")")?;
            a.expect_mem(s + 4, 0x4645_4443, "bytes 4-7 (\"CDEF\")")?;
            a.expect_eq(esi, s as u32 - 1, "ESI")?;
            a.expect_eq(edi, s as u32 + 1, "EDI")
        })?;

        a.check("repe_cmpsb", |a| {
            let s1 = a.str("hindsight");
            let s2 = a.str("hindsHght");
            a.mov(esi, s1 as i32)?;
            a.mov(edi, s2 as i32)?;
            a.mov(ecx, 9)?;
            a.repe().cmpsb()?;
            a.expect_that("ZF clear (mismatch)", |a, ok| a.jne(ok))?;
            a.expect_eq(ecx, 3, "ECX after the mismatch at index 5")?;
            a.expect_eq(esi, s1 as u32 + 6, "ESI")
        })?;

        a.check("repne_scasb", |a| {
            let s = a.str("hello, world");
            a.mov(edi, s as i32)?;
            a.xor(eax, eax)?;
            a.mov(ecx, -1)?;
            a.repne().scasb()?;
            a.not(ecx)?;
            a.dec(ecx)?;
            a.expect_eq(ecx, 12, "strlen by REPNE SCASB")?;
            a.expect_eq(edi, s as u32 + 13, "EDI past the NUL")
        })?;

        a.check("rep_stosw_a16_wrap", |a| {
            // 16-bit address size in 32-bit code: only DI and CX are used
            // and DI wraps within the segment (base SCRATCH, limit 0xFFFF).
            a.mov(dword_ptr(SCRATCH), 0)?;
            a.mov(dword_ptr(SCRATCH + 0xFFFC), 0)?;
            a.mov(ax, LIMITED_DATA as i32)?;
            a.mov(es, ax)?;
            a.mov(edi, 0x0007_FFFE)?;
            a.mov(ecx, 0x0005_0002)?;
            a.mov(ax, 0x1234)?;
            a.add_instruction(Instruction::with_rep_stosw(16)?)?;
            a.mov(ax, KDATA as i32)?;
            a.mov(es, ax)?;
            a.expect_eq(ecx, 0x0005_0000, "ECX (CX counted, high half kept)")?;
            a.expect_eq(edi, 0x0007_0002, "EDI (DI wrapped, high half kept)")?;
            a.expect_mem(SCRATCH + 0xFFFC, 0x1234_0000, "word at offset 0xFFFE")?;
            a.expect_mem(SCRATCH, 0x0000_1234, "word at offset 0 after the wrap")
        })?;

        a.check("exc_de_div_zero", |a| {
            let mut at = a.addr_label();
            a.expect_fault(|a| {
                a.mov(eax, 1)?;
                a.xor(edx, edx)?;
                a.xor(ebx, ebx)?;
                a.bind(&mut at.label)?;
                a.div(ebx)
            })?;
            a.expect_exception(0, Some(0))?;
            a.expect_fault_ip(at.addr)
        })?;

        a.check("exc_de_idiv_overflow", |a| {
            let mut at = a.addr_label();
            a.expect_fault(|a| {
                a.mov(eax, 0x8000_0000u32 as i32)?;
                a.cdq()?;
                a.mov(ebx, -1)?;
                a.bind(&mut at.label)?;
                a.idiv(ebx)
            })?;
            a.expect_exception(0, Some(0))?;
            a.expect_fault_ip(at.addr)
        })?;

        a.check("exc_ud_ud2", |a| {
            let mut at = a.addr_label();
            a.expect_fault(|a| {
                a.bind(&mut at.label)?;
                a.ud2()
            })?;
            a.expect_exception(6, Some(0))?;
            a.expect_fault_ip(at.addr)
        })?;

        a.check("exc_ud_lock_nop", |a| {
            let mut at = a.addr_label();
            a.expect_fault(|a| {
                a.bind(&mut at.label)?;
                a.bytes(&[0xF0, 0x90]) // LOCK NOP
            })?;
            a.expect_exception(6, Some(0))?;
            a.expect_fault_ip(at.addr)
        })?;

        a.check("exc_bp_trap", |a| {
            let mut after = a.addr_label();
            a.expect_fault(|a| {
                a.int3()?;
                a.bind(&mut after.label)?;
                a.nop()
            })?;
            a.expect_exception(3, Some(0))?;
            a.expect_fault_ip(after.addr)
        })?;

        a.check("exc_gp_selector_past_gdt_limit", |a| {
            let mut at = a.addr_label();
            a.expect_fault(|a| {
                a.mov(ax, 0x1238)?;
                a.bind(&mut at.label)?;
                a.mov(ds, ax)
            })?;
            a.expect_exception(13, Some(0x1238))?;
            a.expect_fault_ip(at.addr)
        })?;

        a.check("exc_gp_ss_code_selector", |a| {
            a.expect_fault(|a| {
                a.mov(ax, KCODE32 as i32)?;
                a.mov(ss, ax)
            })?;
            a.expect_exception(13, Some(KCODE32 as u32))?;
            a.mov(ax, ss)?;
            a.movzx(eax, ax)?;
            a.expect_eq(eax, KDATA as u32, "SS unchanged")
        })?;

        a.check("exc_np_selector", |a| {
            a.expect_fault(|a| {
                a.mov(ax, NOT_PRESENT_DATA as i32)?;
                a.mov(fs, ax)
            })?;
            a.expect_exception(11, Some(NOT_PRESENT_DATA as u32))
        })?;

        a.check("exc_gp_segment_limit", |a| {
            a.mov(dword_ptr(V_USER), 0)?;
            let mut at = a.addr_label();
            a.expect_fault(|a| {
                a.mov(ax, LIMITED_DATA as i32)?;
                a.mov(fs, ax)?;
                a.mov(eax, dword_ptr(0xFFFCu64).fs())?; // bytes 0xFFFC..=0xFFFF: allowed
                a.mov(dword_ptr(V_USER), 0x600D)?;
                a.bind(&mut at.label)?;
                a.mov(eax, dword_ptr(0xFFFDu64).fs()) // last byte at 0x10000: #GP(0)
            })?;
            a.mov(ax, KDATA as i32)?;
            a.mov(fs, ax)?;
            a.expect_exception(13, Some(0))?;
            a.expect_fault_ip(at.addr)?;
            a.expect_mem(V_USER, 0x600D, "access ending at the limit allowed")
        })?;

        a.check("exc_df_not_present_gp_gate", |a| {
            // #GP whose gate is not present raises #NP (contributory) while
            // delivering a contributory exception: double fault, error 0.
            idt32_present(a, 13, false)?;
            a.expect_fault(|a| {
                a.mov(ax, 0x1238)?;
                a.mov(ds, ax)
            })?;
            idt32_present(a, 13, true)?;
            a.expect_exception(8, Some(0))
        })?;

        a.check("exc_of_into", |a| {
            a.mov(al, 1)?;
            a.add(al, 1)?;
            CodeAssembler::into(&mut a.a)?; // OF = 0: no exception
            let mut after = a.addr_label();
            a.expect_fault(|a| {
                a.mov(al, 0x7F)?;
                a.add(al, 1)?;
                CodeAssembler::into(&mut a.a)?;
                a.bind(&mut after.label)?;
                a.nop()
            })?;
            a.expect_exception(4, Some(0))?;
            a.expect_fault_ip(after.addr)
        })?;

        a.check("xadd_cmpxchg", |a| {
            let m = SCRATCH + 0x500;
            a.mov(dword_ptr(m), 10)?;
            a.mov(eax, 5)?;
            a.lock().xadd(dword_ptr(m), eax)?;
            a.expect_eq(eax, 10, "XADD old value")?;
            a.expect_mem(m, 15, "XADD sum")?;
            a.mov(eax, 15)?;
            a.mov(ecx, 99)?;
            a.lock().cmpxchg(dword_ptr(m), ecx)?;
            a.expect_that("CMPXCHG equal: ZF set", |a, ok| a.je(ok))?;
            a.expect_mem(m, 99, "CMPXCHG stored")?;
            a.mov(eax, 1)?;
            a.cmpxchg(dword_ptr(m), ecx)?;
            a.expect_that("CMPXCHG differ: ZF clear", |a, ok| a.jne(ok))?;
            a.expect_eq(eax, 99, "CMPXCHG loaded EAX")
        })?;

        a.check("exc_db_single_step", |a| {
            a.mov(eax, 0xFFFF_0FF0u32 as i32)?;
            a.mov(dr6, eax)?;
            let mut b = a.addr_label();
            a.expect_fault(|a| {
                a.pushfd()?;
                a.or(dword_ptr(esp), 0x100)?;
                a.popfd()?;
                a.nop()?; // runs, then the single-step trap
                a.bind(&mut b.label)?;
                a.nop()?;
                a.nop()
            })?;
            // Clear TF in case no trap was taken.
            a.pushfd()?;
            a.and(dword_ptr(esp), !0x100)?;
            a.popfd()?;
            a.expect_exception(1, Some(0))?;
            a.expect_fault_ip(b.addr)?;
            a.mov(eax, dr6)?;
            a.and(eax, 0x4000)?;
            a.expect_eq(eax, 0x4000, "DR6.BS")
        })?;

        a.check("exc_db_hw_breakpoint", |a| {
            a.mov(eax, 0xFFFF_0FF0u32 as i32)?;
            a.mov(dr6, eax)?;
            let mut brk = a.addr_label();
            a.mov(eax, brk.addr as i32)?;
            a.mov(dr0, eax)?;
            a.mov(eax, 0x401)?; // L0, execute, 1 byte
            a.mov(dr7, eax)?;
            a.expect_fault(|a| {
                a.nop()?;
                a.bind(&mut brk.label)?;
                a.nop()
            })?;
            a.mov(eax, 0x400)?;
            a.mov(dr7, eax)?;
            a.expect_exception(1, Some(0))?;
            a.expect_fault_ip(brk.addr)?;
            a.mov(eax, dr6)?;
            a.and(eax, 1)?;
            a.expect_eq(eax, 1, "DR6.B0")
        })?;

        a.check("msr_pat", |a| {
            a.mov(ecx, 0x277)?;
            a.rdmsr()?;
            a.expect_eq(eax, 0x0007_0406, "IA32_PAT low at reset")?;
            a.expect_eq(edx, 0x0007_0406, "IA32_PAT high at reset")?;
            a.mov(eax, 0x0001_0506)?;
            a.mov(edx, 0x0004_0007)?;
            a.wrmsr()?;
            a.xor(eax, eax)?;
            a.xor(edx, edx)?;
            a.rdmsr()?;
            a.expect_eq(eax, 0x0001_0506, "IA32_PAT low written")?;
            a.expect_eq(edx, 0x0004_0007, "IA32_PAT high written")?;
            a.mov(eax, 0x0007_0406)?;
            a.mov(edx, 0x0007_0406)?;
            a.wrmsr()
        })?;

        a.check("exc_gp_rdmsr_unknown", |a| {
            a.expect_fault(|a| {
                a.mov(ecx, 0x1234_5678)?;
                a.rdmsr()
            })?;
            a.expect_exception(13, Some(0))
        })?;

        a.check("smc_patch_called_function", |a| {
            let f = a.sym("smc_fn");
            a.call(f)?;
            a.expect_eq(eax, 0x1111_1111, "first call")?;
            a.mov(dword_ptr(f + 1), 0x2222_2222)?;
            a.call(f)?;
            a.expect_eq(eax, 0x2222_2222, "call after patching the immediate")
        })?;

        a.check("smc_patch_next_instruction", |a| {
            let mut l = a.addr_label();
            a.mov(dword_ptr(l.addr + 1), 0x3333_3333)?;
            a.bind(&mut l.label)?;
            a.mov(eax, 0x4444_4444)?;
            a.expect_eq(
                eax,
                0x3333_3333,
                "immediate of the instruction right after the store",
            )
        })?;

        a.check("ldt_segment", |a| {
            a.mov(ax, LDT_SEL as i32)?;
            a.lldt(ax)?;
            a.mov(dword_ptr(SCRATCH + 0x5010), 0x1D7)?;
            a.mov(ax, 0x04)?; // LDT entry 0 (TI = 1)
            a.mov(fs, ax)?;
            a.mov(eax, dword_ptr(0x10u64).fs())?;
            a.expect_eq(
                eax,
                0x1D7,
                "read through the LDT segment (base SCRATCH+0x5000)",
            )?;
            a.sldt(ax)?;
            a.movzx(eax, ax)?;
            a.expect_eq(eax, LDT_SEL as u32, "SLDT")?;
            a.mov(ax, KDATA as i32)?;
            a.mov(fs, ax)
        })?;

        // Back to real mode through a 16-bit protected-mode code segment.
        let t = a.sym("pm_back16");
        a.jmp_far32(CODE16, t as u32)
    });
    g.code32("pmode_fns", |a| {
        a.here("smc_fn")?;
        a.mov(eax, 0x1111_1111)?;
        a.ret()
    });
    g.code16("pmode_back", |a| {
        a.here("pm_back16")?;
        a.mov(ax, DATA16 as i32)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        a.mov(fs, ax)?;
        a.mov(gs, ax)?;
        a.mov(eax, cr0)?;
        a.and(eax, !CR0_PE as i32)?;
        a.mov(cr0, eax)?;
        let r = a.sym("pm_real_again");
        a.jmp_far16(0, r as u16)?;
        a.here("pm_real_again")?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        a.mov(fs, ax)?;
        a.mov(gs, ax)?;
        a.mov(esp, REAL_STACK_TOP as i32)?;
        let ivtr = a.sym("ivtr");
        a.lidt(ptr(ivtr))?;
        a.check("pm_return_to_real_mode", |a| {
            let h = a.sym("pm_real_int81");
            rt::set_ivt(a, 0x81, h)?;
            a.mov(ax, 0)?;
            a.int(0x81)?;
            a.movzx(eax, ax)?;
            a.expect_eq(
                eax,
                0x5151,
                "AX from an IVT handler after returning to real mode",
            )?;
            a.mov(eax, cr0)?;
            a.and(eax, 1)?;
            a.expect_eq(eax, 0, "CR0.PE")
        })?;
        // Last, as the emulator may stop on it: BOUND (real mode, #BR
        // through IVT entry 5; the handler records the IP and skips it).
        a.check("exc_br_bound", |a| {
            let h = a.sym("pm_real_br");
            rt::set_ivt(a, 5, h)?;
            a.mov(word_ptr(V_USER), 0)?;
            a.mov(word_ptr(V_USER + 2), 10)?;
            a.mov(word_ptr(V_USER + 4), 0)?;
            a.mov(ax, 10)?;
            a.bound(ax, dword_ptr(V_USER))?; // in range: no exception
            a.mov(ax, 11)?;
            let mut at = a.addr_label();
            a.bind(&mut at.label)?;
            a.bound(ax, dword_ptr(V_USER))?; // 62 06 disp16: 4 bytes
            a.expect_mem_masked(
                V_USER + 4,
                0xFFFF,
                at.addr as u32,
                "IP pushed by #BR (the BOUND)",
            )
        })?;
        a.print("pmode: done\n")?;
        a.exit(0)?;
        a.here("pm_real_int81")?;
        a.mov(ax, 0x5151)?;
        a.iret()?;
        a.here("pm_real_br")?;
        a.push(bp)?;
        a.mov(bp, sp)?;
        a.push(bx)?;
        a.mov(bx, word_ptr(bp + 2))?;
        a.mov(word_ptr(V_USER + 4), bx)?;
        a.add(word_ptr(bp + 2), 4)?;
        a.pop(bx)?;
        a.pop(bp)?;
        a.iret()
    });
    g.build().expect("pmode guest assembles")
}
