//! The guest runtime: library routines emitted into every image (COM1
//! output, check reporting, exception recording), the descriptor tables,
//! page tables, and the code snippets that switch processor modes.
//!
//! Library routines, for `N` in 16, 32, 64 (all preserve every register
//! except where noted; 16-bit ones assume DS = 0):
//!
//! | symbol          | does |
//! |-----------------|------|
//! | `uart_init16`   | 115200 8N1, FIFOs off, interrupts off |
//! | `putcN`         | AL to COM1: polls LSR (0x3FD) bit 5 (THR empty), writes 0x3F8 |
//! | `putsN`         | NUL-terminated string at (E/R)SI |
//! | `puthexN`       | EAX (RAX) as `0x` + 8 hex digits (16 if RAX has high bits) |
//! | `putdecN`       | EAX (RAX) unsigned decimal |
//! | `report_failN`  | ESI = "FAIL name (": prints it, then `what: got X, want Y)` from VARS |
//! | `excN_V`        | exception/interrupt stub for vector V (V < 32 and 0x80, 0x81) |
//! | `timerN`        | counts V_TICKS, EOIs the master PIC, IRETs |
//! | `iret_incN`     | increments EAX (RAX) and IRETs (vector 0x82, DPL 3) |
//!
//! The exception stubs record the vector, error code, CR2 and the frame the
//! CPU pushed into VARS (see [`super::layout`]), then resume at V_RESUME_IP
//! with the stack pointer V_RESUME_SP (a longjmp: armed by
//! [`Asm::expect_fault`] and [`Asm::arm_resume`]). An exception that nobody
//! armed prints `FAIL unexpected_exception (...)` and exits with 0x7F.

use iced_x86::code_asm::*;
use iced_x86::{Code, Instruction, MemoryOperand};

use super::asm::{Asm, Builder, Syms, R};
use super::layout::*;

/// Vectors that push an error code.
pub fn has_error_code(v: u8) -> bool {
    matches!(v, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

fn push_n(a: &mut Asm, n: usize) -> R {
    match a.bits {
        16 => a.a.push([ax, cx, dx, bx, sp, bp, si, di][n]),
        32 => a.a.push([eax, ecx, edx, ebx, esp, ebp, esi, edi][n]),
        _ => a.a.push([rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi][n]),
    }
}

fn pop_n(a: &mut Asm, n: usize) -> R {
    match a.bits {
        16 => a.a.pop([ax, cx, dx, bx, sp, bp, si, di][n]),
        32 => a.a.pop([eax, ecx, edx, ebx, esp, ebp, esi, edi][n]),
        _ => a.a.pop([rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi][n]),
    }
}

const AX: usize = 0;
const CX: usize = 1;
const DX: usize = 2;
const BX: usize = 3;
const SI: usize = 6;

/// Emits the COM1 library routines for the assembler's bitness.
fn emit_lib(a: &mut Asm) -> R {
    let b = a.bits;
    let putc = a.sym(&format!("putc{b}"));
    let puts = a.sym(&format!("puts{b}"));
    let puthex = a.sym(&format!("puthex{b}"));

    // putc: AL -> COM1.
    a.here(&format!("putc{b}"))?;
    push_n(a, DX)?;
    push_n(a, AX)?;
    a.mov(dx, 0x3FD)?;
    let mut wait = a.create_label();
    a.bind(&mut wait)?;
    a.in_(al, dx)?;
    a.test(al, 0x20)?;
    a.jz(wait)?;
    pop_n(a, AX)?;
    a.mov(dx, 0x3F8)?;
    a.out(dx, al)?;
    pop_n(a, DX)?;
    a.ret()?;

    // puts: (E/R)SI -> COM1.
    a.here(&format!("puts{b}"))?;
    push_n(a, AX)?;
    push_n(a, SI)?;
    let mut lp = a.create_label();
    let mut done = a.create_label();
    a.bind(&mut lp)?;
    match b {
        16 => a.mov(al, byte_ptr(si))?,
        32 => a.mov(al, byte_ptr(esi))?,
        _ => a.mov(al, byte_ptr(rsi))?,
    }
    a.test(al, al)?;
    a.jz(done)?;
    a.call(putc)?;
    match b {
        16 => a.inc(si)?,
        32 => a.inc(esi)?,
        _ => a.inc(rsi)?,
    }
    a.jmp(lp)?;
    a.bind(&mut done)?;
    pop_n(a, SI)?;
    pop_n(a, AX)?;
    a.ret()?;

    // puthex: EAX/RAX.
    a.here(&format!("puthex{b}"))?;
    push_n(a, AX)?;
    push_n(a, CX)?;
    push_n(a, DX)?;
    if b == 64 {
        a.mov(rdx, rax)?;
    } else {
        a.mov(edx, eax)?;
    }
    a.mov(al, b'0' as i32)?;
    a.call(putc)?;
    a.mov(al, b'x' as i32)?;
    a.call(putc)?;
    a.mov(ecx, 8)?;
    if b == 64 {
        let mut small = a.create_label();
        let mut go = a.create_label();
        a.mov(rax, rdx)?;
        a.shr(rax, 32)?;
        a.jz(small)?;
        a.mov(ecx, 16)?;
        a.jmp(go)?;
        a.bind(&mut small)?;
        // Only 8 digits: bring bits 31..0 to the top for the ROLs below.
        a.shl(rdx, 32)?;
        a.bind(&mut go)?;
    }
    let mut dig = a.create_label();
    let mut num = a.create_label();
    a.bind(&mut dig)?;
    if b == 64 {
        a.rol(rdx, 4)?;
    } else {
        a.rol(edx, 4)?;
    }
    a.mov(al, dl)?;
    a.and(al, 0xF)?;
    a.add(al, b'0' as i32)?;
    a.cmp(al, b'9' as i32)?;
    a.jbe(num)?;
    a.add(al, 7)?;
    a.bind(&mut num)?;
    a.call(putc)?;
    a.dec(ecx)?;
    a.jnz(dig)?;
    pop_n(a, DX)?;
    pop_n(a, CX)?;
    pop_n(a, AX)?;
    a.ret()?;

    // putdec: EAX/RAX unsigned decimal.
    a.here(&format!("putdec{b}"))?;
    push_n(a, AX)?;
    push_n(a, BX)?;
    push_n(a, CX)?;
    push_n(a, DX)?;
    a.mov(ebx, 10)?;
    a.xor(ecx, ecx)?;
    let mut div = a.create_label();
    a.bind(&mut div)?;
    if b == 64 {
        a.xor(edx, edx)?;
        a.div(rbx)?;
    } else {
        a.xor(edx, edx)?;
        a.div(ebx)?;
    }
    push_n(a, DX)?;
    a.inc(ecx)?;
    if b == 64 {
        a.test(rax, rax)?;
    } else {
        a.test(eax, eax)?;
    }
    a.jnz(div)?;
    let mut out = a.create_label();
    a.bind(&mut out)?;
    pop_n(a, AX)?;
    a.add(al, b'0' as i32)?;
    a.call(putc)?;
    a.dec(ecx)?;
    a.jnz(out)?;
    pop_n(a, DX)?;
    pop_n(a, CX)?;
    pop_n(a, BX)?;
    pop_n(a, AX)?;
    a.ret()?;

    // report_fail: ESI = "FAIL name (".
    a.here(&format!("report_fail{b}"))?;
    push_n(a, AX)?;
    push_n(a, SI)?;
    a.call(puts)?;
    a.mov(esi, dword_ptr(V_WHAT))?;
    a.call(puts)?;
    let s = a.str(": got ") as i32;
    a.mov(esi, s)?;
    a.call(puts)?;
    if b == 64 {
        a.mov(rax, qword_ptr(V_GOT))?;
    } else {
        a.mov(eax, dword_ptr(V_GOT))?;
    }
    a.call(puthex)?;
    let s = a.str(", want ") as i32;
    a.mov(esi, s)?;
    a.call(puts)?;
    if b == 64 {
        a.mov(rax, qword_ptr(V_WANT))?;
    } else {
        a.mov(eax, dword_ptr(V_WANT))?;
    }
    a.call(puthex)?;
    let s = a.str(")\n") as i32;
    a.mov(esi, s)?;
    a.call(puts)?;
    pop_n(a, SI)?;
    pop_n(a, AX)?;
    a.ret()
}

/// 16-bit only: UART initialisation.
fn emit_uart_init16(a: &mut Asm) -> R {
    a.here("uart_init16")?;
    a.push(ax)?;
    a.push(dx)?;
    for (port, val) in [
        (0x3F9u16, 0x00u8), // IER: no interrupts
        (0x3FB, 0x80),      // LCR: DLAB
        (0x3F8, 0x01),      // divisor low: 115200
        (0x3F9, 0x00),      // divisor high
        (0x3FB, 0x03),      // LCR: 8N1
        // FCR: FIFOs stay off. Turning them on clears the receiver, which
        // would drop console input queued before the guest started.
        (0x3FA, 0x00),
        (0x3FC, 0x03), // MCR: DTR, RTS
    ] {
        a.mov(dx, port as i32)?;
        a.mov(al, val as i32)?;
        a.out(dx, al)?;
    }
    a.pop(dx)?;
    a.pop(ax)?;
    a.ret()
}

/// The recording exception handlers for 32-bit protected mode.
fn emit_exc32(a: &mut Asm) -> R {
    let common = a.sym("exc32_common");
    for v in (0u8..32).chain([0x80, 0x81]) {
        a.here(&format!("exc32_{v}"))?;
        if !has_error_code(v) {
            a.push(0)?;
        }
        a.push(i32::from(v))?;
        a.jmp(common)?;
    }
    a.here("exc32_common")?;
    // [esp] = vector, [esp+4] = error code, [esp+8] = frame.
    a.push(eax)?;
    a.mov(ax, ds)?;
    a.mov(word_ptr(V_ENTRY_DS).ss(), ax)?;
    a.mov(ax, KDATA as i32)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    a.cld()?;
    a.mov(eax, dword_ptr(esp + 4))?;
    a.mov(dword_ptr(V_VEC), eax)?;
    a.mov(eax, dword_ptr(esp + 8))?;
    a.mov(dword_ptr(V_ERR), eax)?;
    a.mov(eax, cr2)?;
    a.mov(dword_ptr(V_CR2), eax)?;
    a.mov(dword_ptr(V_CR2 + 4), 0)?;
    a.lea(eax, dword_ptr(esp + 12))?;
    a.mov(dword_ptr(V_FRAME_SP), eax)?;
    a.mov(dword_ptr(V_FRAME_SP + 4), 0)?;
    for i in 0..9u64 {
        a.mov(eax, dword_ptr(esp + 12 + 4 * i as i32))?;
        a.mov(dword_ptr(V_FRAME + 8 * i), eax)?;
        a.mov(dword_ptr(V_FRAME + 8 * i + 4), 0)?;
    }
    a.inc(dword_ptr(V_COUNT))?;
    let mut unexpected = a.create_label();
    a.mov(eax, dword_ptr(V_RESUME_IP))?;
    a.test(eax, eax)?;
    a.jz(unexpected)?;
    a.mov(dword_ptr(V_RESUME_IP), 0)?;
    a.mov(esp, dword_ptr(V_RESUME_SP))?;
    a.jmp(eax)?;
    a.bind(&mut unexpected)?;
    a.mov(esp, STACK0_TOP as i32 - 0x100)?;
    emit_unexpected(a)
}

fn emit_unexpected(a: &mut Asm) -> R {
    a.print("FAIL unexpected_exception (vector ")?;
    a.mov(eax, dword_ptr(V_VEC))?;
    a.print_hex_eax()?;
    a.print(" error code ")?;
    a.mov(eax, dword_ptr(V_ERR))?;
    a.print_hex_eax()?;
    a.print(" at ")?;
    a.mov(eax, dword_ptr(V_FRAME + 8))?;
    a.print_hex_eax()?;
    a.print(":")?;
    if a.bits == 64 {
        a.mov(rax, qword_ptr(V_FRAME))?;
    } else {
        a.mov(eax, dword_ptr(V_FRAME))?;
    }
    a.print_hex_eax()?;
    a.print(" cr2 ")?;
    if a.bits == 64 {
        a.mov(rax, qword_ptr(V_CR2))?;
    } else {
        a.mov(eax, dword_ptr(V_CR2))?;
    }
    a.print_hex_eax()?;
    a.print(")\n")?;
    a.exit(0x7F)
}

/// The recording exception handlers for 64-bit mode.
fn emit_exc64(a: &mut Asm) -> R {
    let common = a.sym("exc64_common");
    for v in (0u8..32).chain([0x80, 0x81]) {
        a.here(&format!("exc64_{v}"))?;
        if !has_error_code(v) {
            a.push(0)?;
        }
        a.push(i32::from(v))?;
        a.jmp(common)?;
    }
    a.here("exc64_common")?;
    // [rsp] = vector, [rsp+8] = error code, [rsp+16] = frame.
    a.push(rax)?;
    a.mov(ax, ds)?;
    a.mov(word_ptr(V_ENTRY_DS), ax)?;
    a.cld()?;
    a.mov(rax, qword_ptr(rsp + 8))?;
    a.mov(dword_ptr(V_VEC), eax)?;
    a.mov(rax, qword_ptr(rsp + 16))?;
    a.mov(dword_ptr(V_ERR), eax)?;
    a.mov(rax, cr2)?;
    a.mov(qword_ptr(V_CR2), rax)?;
    a.lea(rax, qword_ptr(rsp + 24))?;
    a.mov(qword_ptr(V_FRAME_SP), rax)?;
    for i in 0..5u64 {
        a.mov(rax, qword_ptr(rsp + 24 + 8 * i as i32))?;
        a.mov(qword_ptr(V_FRAME + 8 * i), rax)?;
    }
    a.inc(dword_ptr(V_COUNT))?;
    let mut unexpected = a.create_label();
    a.mov(rax, qword_ptr(V_RESUME_IP))?;
    a.test(rax, rax)?;
    a.jz(unexpected)?;
    a.mov(qword_ptr(V_RESUME_IP), 0)?;
    a.mov(rsp, qword_ptr(V_RESUME_SP))?;
    a.jmp(rax)?;
    a.bind(&mut unexpected)?;
    a.mov(rsp, STACK0_TOP - 0x100)?;
    a.mov(ax, KDATA as i32)?;
    a.mov(ss, ax)?;
    emit_unexpected(a)
}

/// Timer and IRET helpers.
fn emit_isrs(a: &mut Asm) -> R {
    let b = a.bits;
    a.here(&format!("timer{b}"))?;
    push_n(a, AX)?;
    a.inc(dword_ptr(V_TICKS))?;
    a.mov(al, 0x20)?;
    a.out(0x20, al)?;
    pop_n(a, AX)?;
    iret(a)?;
    a.here(&format!("iret_inc{b}"))?;
    if b == 64 {
        a.inc(rax)?;
    } else {
        a.inc(eax)?;
    }
    iret(a)
}

/// IRET of the assembler's operand size.
pub fn iret(a: &mut Asm) -> R {
    match a.bits {
        16 => a.iret(),
        32 => a.iretd(),
        _ => a.iretq(),
    }
}

/// An 8-byte segment descriptor.
pub fn seg_desc(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    let limit = u64::from(limit);
    let base = u64::from(base);
    (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (u64::from(access) << 40)
        | (((limit >> 16) & 0xF) << 48)
        | (u64::from(flags & 0xF) << 52)
        | (((base >> 24) & 0xFF) << 56)
}

/// The GDT described in [`super::layout`].
pub fn gdt_bytes(syms: &Syms) -> Vec<u8> {
    let tss32 = syms.get("tss32");
    let tss64 = syms.get("tss64");
    let mut d = [0u64; GDT_SIZE / 8];
    d[(KCODE32 >> 3) as usize] = seg_desc(0, 0xF_FFFF, 0x9B, 0xC);
    d[(KDATA >> 3) as usize] = seg_desc(0, 0xF_FFFF, 0x93, 0xC);
    d[(UCODE32 >> 3) as usize] = seg_desc(0, 0xF_FFFF, 0xFB, 0xC);
    d[(UDATA >> 3) as usize] = seg_desc(0, 0xF_FFFF, 0xF3, 0xC);
    d[(UCODE64 >> 3) as usize] = seg_desc(0, 0xF_FFFF, 0xFB, 0xA);
    d[(KCODE64 >> 3) as usize] = seg_desc(0, 0xF_FFFF, 0x9B, 0xA);
    d[(KDATA64 >> 3) as usize] = seg_desc(0, 0xF_FFFF, 0x93, 0xC);
    d[(CODE16 >> 3) as usize] = seg_desc(0, 0xFFFF, 0x9B, 0);
    d[(DATA16 >> 3) as usize] = seg_desc(0, 0xFFFF, 0x93, 0);
    d[(TSS32_SEL >> 3) as usize] = seg_desc(tss32 as u32, 0x67, 0x89, 0);
    d[(TSS32_IO_SEL >> 3) as usize] = seg_desc(
        syms.get("tss32_io") as u32,
        tss32_io_bytes().len() as u32 - 1,
        0x89,
        0,
    );
    d[(TSS64_SEL >> 3) as usize] = seg_desc(tss64 as u32, 0x67, 0x89, 0);
    d[(TSS64_SEL >> 3) as usize + 1] = tss64 >> 32;
    d[(LIMITED_DATA >> 3) as usize] = seg_desc(SCRATCH as u32, 0xFFFF, 0x93, 0x4);
    d[(NOT_PRESENT_DATA >> 3) as usize] = seg_desc(0, 0xF_FFFF, 0x13, 0xC);
    let cg = syms.get("cg_handler");
    d[(CALL_GATE >> 3) as usize] = (cg & 0xFFFF)
        | (u64::from(KCODE32) << 16)
        | (1 << 32)
        | (0xECu64 << 40)
        | (((cg >> 16) & 0xFFFF) << 48);
    d[(LDT_SEL >> 3) as usize] = seg_desc(syms.get("ldt") as u32, 0xF, 0x82, 0);
    d.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A pseudo-descriptor for LGDT/LIDT (limit, 8-byte base: fine for all modes).
pub fn table_reg(base: u64, size: usize) -> Vec<u8> {
    let mut v = ((size - 1) as u16).to_le_bytes().to_vec();
    v.extend_from_slice(&base.to_le_bytes());
    v
}

/// A 32-bit TSS with ESP0 = TSS_STACK_TOP, SS0 = KDATA and no I/O bitmap.
pub fn tss32_bytes() -> Vec<u8> {
    let mut t = vec![0u8; 104];
    t[4..8].copy_from_slice(&(TSS_STACK_TOP as u32).to_le_bytes());
    t[8..10].copy_from_slice(&KDATA.to_le_bytes());
    t[102..104].copy_from_slice(&104u16.to_le_bytes());
    t
}

/// A 32-bit TSS like [`tss32_bytes`] with an I/O permission bitmap (at
/// offset 104) covering ports 0..=0x3FF that allows only IO_ALLOWED_PORT,
/// followed by the 0xFF terminator byte.
pub fn tss32_io_bytes() -> Vec<u8> {
    let mut t = tss32_bytes();
    let mut bitmap = vec![0xFFu8; 0x400 / 8];
    let p = IO_ALLOWED_PORT as usize;
    bitmap[p / 8] &= !(1 << (p % 8));
    t.extend_from_slice(&bitmap);
    t.push(0xFF);
    t
}

/// A 64-bit TSS with RSP0 = TSS_STACK_TOP, IST1 = IST1_TOP, no I/O bitmap.
pub fn tss64_bytes() -> Vec<u8> {
    let mut t = vec![0u8; 104];
    t[4..12].copy_from_slice(&TSS_STACK_TOP.to_le_bytes());
    t[0x24..0x2C].copy_from_slice(&IST1_TOP.to_le_bytes());
    t[102..104].copy_from_slice(&104u16.to_le_bytes());
    t
}

/// One IDT gate to install.
#[derive(Clone, Debug)]
pub struct Gate {
    /// Vector.
    pub vector: u8,
    /// Symbol of the handler.
    pub handler: String,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// 64-bit: interrupt stack table index (0 = none).
    pub ist: u8,
    /// Present bit.
    pub present: bool,
}

impl Gate {
    /// A present interrupt gate.
    pub fn new(vector: u8, handler: &str, dpl: u8) -> Gate {
        Gate {
            vector,
            handler: handler.to_string(),
            dpl,
            ist: 0,
            present: true,
        }
    }
}

/// Default gates: recording stubs for 0..32, 0x80 (DPL 3), 0x81 (DPL 0),
/// the timer at 0x20 and `iret_inc` at 0x82 (DPL 3).
pub fn default_gates(bits: u32) -> Vec<Gate> {
    let mut g: Vec<Gate> = (0u8..32)
        .map(|v| Gate::new(v, &format!("exc{bits}_{v}"), 0))
        .collect();
    if bits == 64 {
        g[8].ist = 1;
    }
    g.push(Gate::new(0x80, &format!("exc{bits}_128"), 3));
    g.push(Gate::new(0x81, &format!("exc{bits}_129"), 0));
    g.push(Gate::new(0x82, &format!("iret_inc{bits}"), 3));
    g.push(Gate::new(0x20, &format!("timer{bits}"), 0));
    g
}

/// A 32-bit IDT (256 interrupt gates; absent vectors not present).
pub fn idt32_bytes(gates: &[Gate], syms: &Syms) -> Vec<u8> {
    let mut t = vec![0u8; 256 * 8];
    for g in gates {
        let off = syms.get(&g.handler) as u32;
        let attr = if g.present { 0x80u8 } else { 0 } | (g.dpl << 5) | 0xE;
        let e = u64::from(off & 0xFFFF)
            | (u64::from(KCODE32) << 16)
            | (u64::from(attr) << 40)
            | (u64::from(off >> 16) << 48);
        let i = g.vector as usize * 8;
        t[i..i + 8].copy_from_slice(&e.to_le_bytes());
    }
    t
}

/// A 64-bit IDT.
pub fn idt64_bytes(gates: &[Gate], syms: &Syms) -> Vec<u8> {
    let mut t = vec![0u8; 256 * 16];
    for g in gates {
        let off = syms.get(&g.handler);
        let attr = if g.present { 0x80u8 } else { 0 } | (g.dpl << 5) | 0xE;
        let lo = (off & 0xFFFF)
            | (u64::from(KCODE64) << 16)
            | (u64::from(g.ist & 7) << 32)
            | (u64::from(attr) << 40)
            | (((off >> 16) & 0xFFFF) << 48);
        let hi = off >> 32;
        let i = g.vector as usize * 16;
        t[i..i + 8].copy_from_slice(&lo.to_le_bytes());
        t[i + 8..i + 16].copy_from_slice(&hi.to_le_bytes());
    }
    t
}

fn table(entries: impl IntoIterator<Item = (usize, u64)>, size: usize) -> Vec<u8> {
    let mut t = vec![0u64; size];
    for (i, e) in entries {
        t[i] = e;
    }
    t.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn table32(entries: impl IntoIterator<Item = (usize, u32)>) -> Vec<u8> {
    let mut t = vec![0u32; 1024];
    for (i, e) in entries {
        t[i] = e;
    }
    t.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Adds the page tables of all three paging modes (see the module docs of
/// [`crate::selftest`] for the test pages):
///
/// - 32-bit (`pd32`): PDE 0 → `pt32_0` (4 KiB identity pages for 0–4 MiB,
///   user, writable), PDEs 1–15 → 4 MiB identity pages (PS), PDE 0x100
///   (linear 0x4000_0000) → `pt32_test` (PTE 0 → physical 0x20_0000),
///   PDE 0x200 (linear 0x8000_0000) → 4 MiB page at physical 0x80_0000.
/// - PAE (`pdpt_pae`): PDPTE 0 → `pd_pae0` (PDE 0 → `pt_pae0` 4 KiB
///   identity, PDE 3 → `pt_pae_test`, others 2 MiB identity pages up to
///   64 MiB), PDPTE 1 → `pd_pae1` (linear 0x4000_0000 → 2 MiB page at
///   physical 0x20_0000).
/// - 4-level (`pml4`): PML4E 0 and 256 (linear 0xFFFF_8000_0000_0000) →
///   `pdpt64` → `pd64` (PDE 0 → `pt64_0`, PDE 3 → `pt64_test`, others 2 MiB
///   identity pages up to 1 GiB).
///
/// `pt_pae_test` / `pt64_test` map linear 0x60_0000 + 4 KiB × i:
/// i = 0: physical 0x60_0000 present, writable, user, **NX**;
/// i = 1: not present; i = 2: present read-only supervisor (phys 0x60_2000);
/// i = 3: present writable supervisor (phys 0x60_3000);
/// i = 4: present read-only user (phys 0x60_4000).
pub fn add_page_tables(b: &mut Builder) {
    let urw = PTE_P | PTE_RW | PTE_US;
    b.data("pd32", 4096, move |s| {
        let mut e: Vec<(usize, u32)> = vec![(0, (s.get("pt32_0") | urw) as u32)];
        for i in 1..16 {
            e.push((i, ((i as u64) << 22 | urw | PTE_PS) as u32));
        }
        e.push((0x100, (s.get("pt32_test") | urw) as u32));
        e.push((0x200, (0x80_0000 | urw | PTE_PS) as u32));
        table32(e)
    });
    b.data("pt32_0", 4096, move |_| {
        table32((0..1024).map(|i| (i, ((i as u64) << 12 | urw) as u32)))
    });
    b.data("pt32_test", 4096, move |_| {
        table32([(0, (0x20_0000 | urw) as u32)])
    });
    b.data("pdpt_pae", 4096, move |s| {
        table(
            [(0, s.get("pd_pae0") | PTE_P), (1, s.get("pd_pae1") | PTE_P)],
            512,
        )
    });
    b.data("pd_pae0", 4096, move |s| {
        let mut e: Vec<(usize, u64)> = (1..32)
            .map(|i| (i, (i as u64) << 21 | urw | PTE_PS))
            .collect();
        e.push((0, s.get("pt_pae0") | urw));
        e[2].1 = s.get("pt_pae_test") | urw; // index 3 (e[0] is PDE 1)
        table(e, 512)
    });
    b.data("pd_pae1", 4096, move |_| {
        table([(0, 0x20_0000 | urw | PTE_PS)], 512)
    });
    b.data("pt_pae0", 4096, move |_| {
        table((0..512).map(|i| (i, (i as u64) << 12 | urw)), 512)
    });
    b.data("pt_pae_test", 4096, move |_| table(test_ptes(), 512));
    b.data("pml4", 4096, move |s| {
        table(
            [(0, s.get("pdpt64") | urw), (256, s.get("pdpt64") | urw)],
            512,
        )
    });
    b.data("pdpt64", 4096, move |s| {
        table([(0, s.get("pd64") | urw)], 512)
    });
    b.data("pd64", 4096, move |s| {
        let mut e: Vec<(usize, u64)> = (0..512)
            .map(|i| (i, (i as u64) << 21 | urw | PTE_PS))
            .collect();
        e[0].1 = s.get("pt64_0") | urw;
        e[3].1 = s.get("pt64_test") | urw;
        table(e, 512)
    });
    b.data("pt64_0", 4096, move |_| {
        table((0..512).map(|i| (i, (i as u64) << 12 | urw)), 512)
    });
    b.data("pt64_test", 4096, move |_| table(test_ptes(), 512));
}

fn test_ptes() -> Vec<(usize, u64)> {
    let urw = PTE_P | PTE_RW | PTE_US;
    vec![
        (0, 0x60_0000 | urw | PTE_NX),
        (2, 0x60_2000 | PTE_P),
        (3, 0x60_3000 | PTE_P | PTE_RW),
        (4, 0x60_4000 | PTE_P | PTE_US),
    ]
}

/// Adds the standard chunks every guest has: the library for all three
/// bitnesses, the pool, GDT, TSSs, and IDTs with `gates32` / `gates64`.
pub fn add_runtime(b: &mut Builder, gates32: Vec<Gate>, gates64: Vec<Gate>) {
    b.code("lib16", 16, |a| {
        emit_uart_init16(a)?;
        emit_lib(a)
    });
    b.pool();
    b.data("gdt", 16, gdt_bytes);
    b.data("ldt", 16, |_| {
        let d = [seg_desc(SCRATCH as u32 + 0x5000, 0xFFF, 0x93, 0x4), 0];
        d.iter().flat_map(|x| x.to_le_bytes()).collect()
    });
    b.data("ivtr", 16, |_| table_reg(0, 0x400));
    b.data("gdtr", 16, |s| table_reg(s.get("gdt"), GDT_SIZE));
    b.data("tss32", 16, |_| tss32_bytes());
    b.data("tss32_io", 16, |_| tss32_io_bytes());
    b.data("tss64", 16, |_| tss64_bytes());
    b.data("idt32", 16, move |s| idt32_bytes(&gates32, s));
    b.data("idtr32", 16, |s| table_reg(s.get("idt32"), 256 * 8));
    b.data("idt64", 16, move |s| idt64_bytes(&gates64, s));
    b.data("idtr64", 16, |s| table_reg(s.get("idt64"), 256 * 16));
    b.code("lib32", 32, |a| {
        emit_lib(a)?;
        emit_exc32(a)?;
        emit_isrs(a)
    });
    b.code("lib64", 64, |a| {
        emit_lib(a)?;
        emit_exc64(a)?;
        emit_isrs(a)
    });
}

/// The real-mode prologue every guest starts with: RDTSC as the very first
/// instruction (saved to V_TSC0), flat real-mode segments, the stack, COM1,
/// cleared library variables, and `PLAN n`.
pub fn emit_prologue(a: &mut Asm) -> R {
    a.rdtsc()?;
    a.mov(dword_ptr(V_TSC0), eax)?;
    a.mov(dword_ptr(V_TSC0 + 4), edx)?;
    a.cli()?;
    a.cld()?;
    a.xor(eax, eax)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    a.mov(fs, ax)?;
    a.mov(gs, ax)?;
    a.mov(ss, ax)?;
    a.mov(esp, REAL_STACK_TOP as i32)?;
    a.mov(dword_ptr(V_RESUME_IP), eax)?;
    a.mov(dword_ptr(V_RESUME_IP + 4), eax)?;
    a.mov(dword_ptr(V_COUNT), eax)?;
    a.mov(dword_ptr(V_TICKS), eax)?;
    let init = a.sym("uart_init16");
    a.call(init)?;
    let plan = a.plan();
    if plan > 0 {
        a.print(&format!("PLAN {plan}\n"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Mode switches.

/// 16-bit code: load the GDT, set CR0.PE and far-jump to 32-bit `target`
/// (a symbol) with CS = KCODE32. Interrupts are disabled first.
pub fn enter_pm32(a: &mut Asm, target: &str) -> R {
    assert_eq!(a.bits, 16);
    a.cli()?;
    let gdtr = a.sym("gdtr");
    // o32 LGDT so the whole 32-bit base is loaded.
    a.add_instruction(Instruction::with1(
        Code::Lgdt_m1632,
        MemoryOperand::with_displ(gdtr, 2),
    )?)?;
    a.mov(eax, cr0)?;
    a.or(eax, CR0_PE as i32)?;
    a.mov(cr0, eax)?;
    let t = a.sym(target) as u32;
    a.jmp_far32(KCODE32, t)
}

/// 32-bit code at the start of protected mode: flat data segments, the main
/// stack, the 32-bit IDT and TSS.
pub fn pm32_init(a: &mut Asm) -> R {
    assert_eq!(a.bits, 32);
    a.mov(ax, KDATA as i32)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    a.mov(fs, ax)?;
    a.mov(gs, ax)?;
    a.mov(ss, ax)?;
    a.mov(esp, STACK0_TOP as i32)?;
    let idtr = a.sym("idtr32");
    a.lidt(ptr(idtr))?;
    a.mov(ax, TSS32_SEL as i32)?;
    a.ltr(ax)
}

/// 32-bit code: turn on 32-bit paging with `pd32` (CR4.PSE for the 4 MiB
/// pages). Clobbers EAX.
pub fn enable_paging32(a: &mut Asm) -> R {
    let pd = a.symi("pd32");
    a.mov(eax, pd)?;
    a.mov(cr3, eax)?;
    a.mov(eax, cr4)?;
    a.or(eax, CR4_PSE as i32)?;
    a.mov(cr4, eax)?;
    a.mov(eax, cr0)?;
    a.or(eax, CR0_PG as i32)?;
    a.mov(cr0, eax)
}

/// 32-bit code: turn paging off (CR0.PG = 0). Clobbers EAX.
pub fn disable_paging(a: &mut Asm) -> R {
    a.mov(eax, cr0)?;
    a.and(eax, !CR0_PG as i32)?;
    a.mov(cr0, eax)
}

/// 32-bit code: enter long mode: paging off, CR4.PAE, CR3 = `pml4`,
/// EFER.LME|SCE|NXE, CR0.PG, far jump to 64-bit `target` with CS = KCODE64.
/// Clobbers EAX, ECX, EDX.
pub fn enter_long(a: &mut Asm, target: &str) -> R {
    assert_eq!(a.bits, 32);
    disable_paging(a)?;
    a.mov(eax, cr4)?;
    a.or(eax, CR4_PAE as i32)?;
    a.mov(cr4, eax)?;
    let pml4 = a.symi("pml4");
    a.mov(eax, pml4)?;
    a.mov(cr3, eax)?;
    a.mov(ecx, EFER as i32)?;
    a.rdmsr()?;
    a.or(eax, (EFER_LME | EFER_SCE | EFER_NXE) as i32)?;
    a.wrmsr()?;
    a.mov(eax, cr0)?;
    a.or(eax, CR0_PG as i32)?;
    a.mov(cr0, eax)?;
    let t = a.sym(target) as u32;
    a.jmp_far32(KCODE64, t)
}

/// 64-bit code at the start of long mode: data segments, the main stack,
/// the 64-bit IDT and TSS.
pub fn long_init(a: &mut Asm) -> R {
    assert_eq!(a.bits, 64);
    a.mov(ax, KDATA as i32)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    a.mov(fs, ax)?;
    a.mov(gs, ax)?;
    a.mov(ss, ax)?;
    a.mov(rsp, STACK0_TOP)?;
    let idtr = a.sym("idtr64");
    a.lidt(ptr(idtr))?;
    a.mov(ax, TSS64_SEL as i32)?;
    a.ltr(ax)
}

/// 32-bit ring-0 code: IRET to ring-3 32-bit code at `target` with stack
/// `esp3` and EFLAGS `eflags`.
pub fn to_ring3_32(a: &mut Asm, target: u64, esp3: u64, eflags: u32) -> R {
    a.push((UDATA | 3) as i32)?;
    a.push(esp3 as i32)?;
    a.push(eflags as i32)?;
    a.push((UCODE32 | 3) as i32)?;
    a.push(target as i32)?;
    a.iretd()
}

/// 64-bit ring-0 code: IRETQ to ring-3 64-bit code at `target`.
pub fn to_ring3_64(a: &mut Asm, target: u64, rsp3: u64, rflags: u32) -> R {
    a.push((UDATA | 3) as i32)?;
    a.push(rsp3 as i32)?;
    a.push(rflags as i32)?;
    a.push((UCODE64 | 3) as i32)?;
    a.push(target as i32)?;
    a.iretq()
}

/// Ring-3 32-bit code: load DS and ES with the ring-3 data selector (IRET to
/// ring 3 nulls data segments of DPL 0).
pub fn ring3_data_segs(a: &mut Asm) -> R {
    a.mov(ax, (UDATA | 3) as i32)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)
}

/// Real-mode code: write IVT entry `vector` = 0000:`handler`.
pub fn set_ivt(a: &mut Asm, vector: u8, handler: u64) -> R {
    let off = u64::from(vector) * 4;
    a.mov(word_ptr(off), handler as i32)?;
    a.mov(word_ptr(off + 2), 0)
}

/// Emits `in al, imm` / `out imm, al` sequences for the PIC: remap master to
/// 0x20, slave to 0x28, and mask all lines but those in `unmask` (master).
pub fn pic_init(a: &mut Asm, unmask: u8) -> R {
    pic_init_base(a, 0x20, unmask)
}

/// Like [`pic_init`] with the master's vectors at `base` (slave at 0x70).
pub fn pic_init_base(a: &mut Asm, base: u8, unmask: u8) -> R {
    let slave = if base == 0x20 { 0x28 } else { 0x70 };
    for (port, val) in [
        (0x20u8, 0x11u8),
        (0xA0, 0x11),
        (0x21, base),
        (0xA1, slave),
        (0x21, 0x04),
        (0xA1, 0x02),
        (0x21, 0x01),
        (0xA1, 0x01),
        (0x21, !unmask),
        (0xA1, 0xFF),
    ] {
        a.mov(al, val as i32)?;
        a.out(port as i32, al)?;
    }
    Ok(())
}

/// Programs PIT channel 0 in mode 2 (rate generator) with `divisor`.
pub fn pit_rate(a: &mut Asm, divisor: u16) -> R {
    a.mov(al, 0x34)?;
    a.out(0x43, al)?;
    a.mov(al, (divisor & 0xFF) as i32)?;
    a.out(0x40, al)?;
    a.mov(al, (divisor >> 8) as i32)?;
    a.out(0x40, al)
}
