//! Tests of the x87 group (`x87.rs`) and the state save/restore
//! instructions (`x87_state.rs`): every instruction family through the
//! interpreter in the modes where it matters, the #NM/#MF/#GP/#UD cases,
//! and a differential check against the host FPU (the same code bytes run
//! natively) that proves the wiring of operands, forms and control word.

use super::*;
use crate::fault::vector;
use crate::interp::RunExit;
use crate::state::{cr, reg};
use crate::testutil::{fault_of, install_fault_handlers, run_asm, TestBus, TestMode, DATA};
use crate::x87::{from_f64, to_f64};
use iced_x86::code_asm::*;

type Asm = CodeAssembler;
type AsmResult = core::result::Result<(), IcedError>;

const MODES: [TestMode; 3] = [TestMode::Real, TestMode::Protected32, TestMode::Long64];

/// The data area of a mode (real mode: DS = 0, so below 64 KiB).
fn data(mode: TestMode) -> u64 {
    if mode == TestMode::Real {
        0x5000
    } else {
        DATA
    }
}

/// A memory operand `[base + off]` with the mode's base register
/// (BX/EBX/RBX), which [`setup_base`] loads with the data address.
fn m(mode: TestMode, off: i32) -> AsmMemoryOperand {
    match mode {
        TestMode::Real => ptr(bx + off),
        TestMode::Protected32 => ptr(ebx + off),
        TestMode::Long64 => ptr(rbx + off),
    }
}

fn setup_base(a: &mut Asm, mode: TestMode) -> AsmResult {
    match mode {
        TestMode::Real => a.mov(bx, data(mode) as u32),
        TestMode::Protected32 => a.mov(ebx, data(mode) as u32),
        TestMode::Long64 => a.mov(rbx, data(mode)),
    }
}

/// Length of the base-register load that starts every test program.
fn base_len(mode: TestMode) -> u64 {
    crate::testutil::assemble(mode, |a| setup_base(a, mode)).len() as u64
}

/// Runs `build` (after loading the base register) in `mode` with fault
/// handlers installed; returns the CPU, the bus and the exception taken.
/// An exception taken: (vector, error code, faulting IP).
type Taken = Option<(u8, Option<u64>, u64)>;

fn go(
    mode: TestMode,
    build: impl FnOnce(&mut Asm) -> AsmResult,
    setup: impl FnOnce(&mut Cpu, &mut TestBus),
) -> (Cpu, TestBus, Taken) {
    let (cpu, bus, exit) = run_asm(
        mode,
        |a| {
            setup_base(a, mode)?;
            build(a)
        },
        |cpu, bus| {
            install_fault_handlers(cpu, bus);
            cpu.cr0 |= cr::CR0_NE;
            cpu.cr4 |= cr::CR4_OSFXSR | cr::CR4_OSXMMEXCPT;
            setup(cpu, bus);
        },
    );
    assert_eq!(exit, RunExit::Halted, "{mode:?}");
    let fault = fault_of(&cpu, &bus);
    (cpu, bus, fault)
}

/// As [`go`], expecting no exception.
fn ok(
    mode: TestMode,
    build: impl FnOnce(&mut Asm) -> AsmResult,
    setup: impl FnOnce(&mut Cpu, &mut TestBus),
) -> (Cpu, TestBus) {
    let (cpu, bus, fault) = go(mode, build, setup);
    assert_eq!(fault, None, "{mode:?}");
    (cpu, bus)
}

fn vec_of(f: Taken) -> Option<u8> {
    f.map(|f| f.0)
}

fn f(v: f64) -> F80 {
    from_f64(v.to_bits()).0
}

fn val(x: F80) -> f64 {
    f64::from_bits(to_f64(x, Rounding::Nearest).0)
}

fn st(cpu: &Cpu, i: usize) -> f64 {
    val(cpu.fpu.st(i))
}

fn top(cpu: &Cpu) -> usize {
    cpu.fpu.top()
}

// ---------------------------------------------------------------------
// Loads, stores, constants.

#[test]
fn loads_in_every_mode() {
    for mode in MODES {
        let d = data(mode);
        let (cpu, _) = ok(
            mode,
            |a| {
                a.fld(dword_ptr(m(mode, 0)))?;
                a.fld(qword_ptr(m(mode, 8)))?;
                a.fld(tword_ptr(m(mode, 16)))?;
                a.fild(word_ptr(m(mode, 32)))?;
                a.fild(dword_ptr(m(mode, 36)))?;
                a.fild(qword_ptr(m(mode, 40)))?;
                a.fbld(tword_ptr(m(mode, 48)))?;
                a.fld(st3)?;
                a.hlt()
            },
            |_, bus| {
                bus.put(d, 4, 1.5f32.to_bits() as u64);
                bus.put(d + 8, 8, (-2.25f64).to_bits());
                bus.write(d + 16, &f(3.0).to_bytes());
                bus.put(d + 32, 2, (-7i16) as u16 as u64);
                bus.put(d + 36, 4, 100_000);
                bus.put(d + 40, 8, (-5_000_000_000_000_000i64) as u64);
                // -1234 in packed BCD
                bus.write(d + 48, &[0x34, 0x12, 0, 0, 0, 0, 0, 0, 0, 0x80]);
            },
        );
        let want = [-7.0, -1234.0, -5e15, 100000.0, -7.0, 3.0, -2.25, 1.5];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(st(&cpu, i), *w, "{mode:?} ST({i})");
        }
        assert_eq!(top(&cpu), 0);
        assert_eq!(cpu.fpu.sw & (FLAGS | SF), 0);
        assert_eq!(cpu.fpu.tw, 0); // all valid
    }
}

#[test]
fn stores_in_every_mode() {
    for mode in MODES {
        let d = data(mode);
        let (cpu, bus) = ok(
            mode,
            |a| {
                a.fld(qword_ptr(m(mode, 0)))?; // 2.5
                a.fst(dword_ptr(m(mode, 16)))?;
                a.fst(qword_ptr(m(mode, 24)))?;
                a.fist(word_ptr(m(mode, 32)))?; // 2 (round to even)
                a.fist(dword_ptr(m(mode, 36)))?;
                a.fld(st0)?;
                a.fistp(qword_ptr(m(mode, 40)))?;
                a.fld(st0)?;
                a.fstp(tword_ptr(m(mode, 48)))?;
                a.fld(qword_ptr(m(mode, 8)))?; // -98765.4
                a.fbstp(tword_ptr(m(mode, 64)))?; // -98765
                a.fstp(st0)?;
                a.hlt()
            },
            |_, bus| {
                bus.put(d, 8, 2.5f64.to_bits());
                bus.put(d + 8, 8, (-98765.4f64).to_bits());
            },
        );
        assert_eq!(bus.read(d + 16, 4), 2.5f32.to_bits() as u64, "{mode:?}");
        assert_eq!(bus.read(d + 24, 8), 2.5f64.to_bits());
        assert_eq!(bus.read(d + 32, 2), 2);
        assert_eq!(bus.read(d + 36, 4), 2);
        assert_eq!(bus.read(d + 40, 8), 2);
        assert_eq!(bus.read(d + 48, 8), f(2.5).mant);
        assert_eq!(bus.read(d + 56, 2), f(2.5).exp as u64);
        let bcd: Vec<u64> = (0..10).map(|i| bus.read(d + 64 + i, 1)).collect();
        assert_eq!(bcd, [0x65, 0x87, 0x09, 0, 0, 0, 0, 0, 0, 0x80]);
        assert_eq!(top(&cpu), 0);
        assert_eq!(cpu.fpu.tw, 0xffff, "stack empty again");
        assert_eq!(cpu.fpu.sw & FLAGS, PE_FLAG); // the rounding stores
    }
}

const PE_FLAG: u16 = Exc::PE;

#[test]
fn integer_store_overflow_gives_the_indefinite() {
    let mode = TestMode::Protected32;
    let d = data(mode);
    let (cpu, bus) = ok(
        mode,
        |a| {
            a.fld(qword_ptr(m(mode, 0)))?; // 1e10
            a.fist(word_ptr(m(mode, 16)))?;
            a.fist(dword_ptr(m(mode, 20)))?;
            a.fbstp(tword_ptr(m(mode, 32)))?; // fits
            a.fld(qword_ptr(m(mode, 8)))?; // 1e19
            a.fbstp(tword_ptr(m(mode, 48)))?; // does not fit
            a.hlt()
        },
        |_, bus| {
            bus.put(d, 8, 1e10f64.to_bits());
            bus.put(d + 8, 8, 1e19f64.to_bits());
        },
    );
    assert_eq!(bus.read(d + 16, 2), 0x8000);
    assert_eq!(bus.read(d + 20, 4), 0x8000_0000);
    assert_eq!(bus.read(d + 32, 8), 0x0000_0100_0000_0000);
    assert_eq!(bus.read(d + 48, 8), 0xc000_0000_0000_0000);
    assert_eq!(bus.read(d + 56, 2), 0xffff);
    assert_eq!(cpu.fpu.sw & (FLAGS | SF), IE);
}

#[test]
fn fisttp_truncates_when_sse3_is_advertised() {
    let mode = TestMode::Long64;
    let d = data(mode);
    let (_, bus, fault) = go(
        mode,
        |a| {
            a.fld(qword_ptr(m(mode, 0)))?; // -2.75
            a.fld(st0)?;
            a.fld(st0)?;
            a.fisttp(word_ptr(m(mode, 16)))?;
            a.fisttp(dword_ptr(m(mode, 20)))?;
            a.fisttp(qword_ptr(m(mode, 24)))?;
            a.hlt()
        },
        |_, bus| bus.put(d, 8, (-2.75f64).to_bits()),
    );
    if cpuid::LEAF1_ECX & ecx1::SSE3 != 0 {
        assert_eq!(fault, None);
        assert_eq!(bus.read(d + 16, 2), (-2i16) as u16 as u64);
        assert_eq!(bus.read(d + 20, 4), (-2i32) as u32 as u64);
        assert_eq!(bus.read(d + 24, 8), (-2i64) as u64);
    } else {
        assert_eq!(vec_of(fault), Some(vector::UD));
    }
}

/// Host-native constant loads under each rounding mode.
#[cfg(target_arch = "x86_64")]
fn host_constants(cw: u16) -> [[u8; 10]; 7] {
    use core::arch::asm;
    let mut out = [[0u8; 10]; 7];
    let mut env = [0u8; 108];
    let p = out.as_mut_ptr() as *mut u8;
    // SAFETY: the asm saves and restores the host FPU state and writes only `out`.
    unsafe {
        asm!(
            "fnsave [{env}]",
            "fninit",
            "fldcw [{cw}]",
            "fld1", "fstp tbyte ptr [{p}]",
            "fldl2t", "fstp tbyte ptr [{p} + 10]",
            "fldl2e", "fstp tbyte ptr [{p} + 20]",
            "fldpi", "fstp tbyte ptr [{p} + 30]",
            "fldlg2", "fstp tbyte ptr [{p} + 40]",
            "fldln2", "fstp tbyte ptr [{p} + 50]",
            "fldz", "fstp tbyte ptr [{p} + 60]",
            "frstor [{env}]",
            env = in(reg) env.as_mut_ptr(),
            cw = in(reg) &cw,
            p = in(reg) p,
            options(nostack),
        );
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[test]
fn constants_match_the_host_in_every_rounding_mode() {
    let mode = TestMode::Protected32;
    for cw in [0x037fu16, 0x077f, 0x0b7f, 0x0f7f] {
        let (cpu, _) = ok(
            mode,
            |a| {
                a.fldcw(word_ptr(m(mode, 0)))?;
                a.fldz()?;
                a.fldln2()?;
                a.fldlg2()?;
                a.fldpi()?;
                a.fldl2e()?;
                a.fldl2t()?;
                a.fld1()?;
                a.hlt()
            },
            |_, bus| bus.put(data(mode), 2, cw as u64),
        );
        let host = host_constants(cw);
        for (i, h) in host.iter().enumerate() {
            assert_eq!(cpu.fpu.st(i).to_bytes(), *h, "cw {cw:#x} constant {i}");
        }
    }
}

// ---------------------------------------------------------------------
// Arithmetic and compares through the interpreter.

#[test]
fn arithmetic_forms() {
    let mode = TestMode::Long64;
    let d = data(mode);
    let (cpu, _) = ok(
        mode,
        |a| {
            a.fld(qword_ptr(m(mode, 0)))?; // 10
            a.fld(qword_ptr(m(mode, 8)))?; // 4 ; ST0 = 4, ST1 = 10
            a.fsub_2(st0, st1)?; // ST0 = 4 - 10 = -6
            a.fsubr_2(st1, st0)?; // ST1 = -6 - 10 = -16
            a.fdiv(dword_ptr(m(mode, 16)))?; // ST0 = -6 / 0.5 = -12
            a.fidivr(word_ptr(m(mode, 20)))?; // ST0 = 3 / -12 = -0.25
            a.fimul(dword_ptr(m(mode, 24)))?; // ST0 = -0.25 * -8 = 2
            a.fisub(word_ptr(m(mode, 20)))?; // 2 - 3 = -1
            a.fadd(qword_ptr(m(mode, 8)))?; // -1 + 4 = 3
            a.fsubrp(st1, st0)?; // ST1 = 3 - -16 = 19, pop
            a.fld(qword_ptr(m(mode, 8)))?; // 4 ; ST1 = 19
            a.fdivrp(st1, st0)?; // ST1 = 4 / 19, pop
            a.fld(qword_ptr(m(mode, 0)))?; // 10
            a.fmulp(st1, st0)?; // 40/19
            a.fld(qword_ptr(m(mode, 0)))?;
            a.faddp(st1, st0)?; // 40/19 + 10
            a.fld(qword_ptr(m(mode, 8)))?;
            a.fsubp(st1, st0)?; // 40/19 + 6
            a.fld(qword_ptr(m(mode, 8)))?;
            a.fdivp(st1, st0)?; // (40/19 + 6) / 4
            a.fld(qword_ptr(m(mode, 8)))?;
            a.fdivr_2(st0, st1)?; // ST0 = ST1 / 4
            a.fmul_2(st1, st0)?; // ST1 = ST1 * ST0
            a.hlt()
        },
        |_, bus| {
            bus.put(d, 8, 10f64.to_bits());
            bus.put(d + 8, 8, 4f64.to_bits());
            bus.put(d + 16, 4, 0.5f32.to_bits() as u64);
            bus.put(d + 20, 2, 3);
            bus.put(d + 24, 4, (-8i32) as u32 as u64);
        },
    );
    let x = (40.0f64 / 19.0 + 6.0) / 4.0;
    assert!((st(&cpu, 0) - x / 4.0).abs() < 1e-15);
    assert!((st(&cpu, 1) - x * x / 4.0).abs() < 1e-14);
    assert_eq!(top(&cpu), 6);
}

#[test]
fn unary_and_binary_operations() {
    let mode = TestMode::Protected32;
    let d = data(mode);
    let (cpu, bus) = ok(
        mode,
        |a| {
            a.fld(qword_ptr(m(mode, 0)))?; // -6.5
            a.fabs()?;
            a.fsqrt()?; // sqrt(6.5)
            a.fstp(qword_ptr(m(mode, 32)))?;
            a.fld(qword_ptr(m(mode, 0)))?;
            a.frndint()?; // -6 (nearest even)
            a.fchs()?; // 6
            a.fstp(qword_ptr(m(mode, 40)))?;
            a.fld(qword_ptr(m(mode, 8)))?; // 3
            a.fld(qword_ptr(m(mode, 0)))?; // -6.5
            a.fscale()?; // -52
            a.fstp(qword_ptr(m(mode, 48)))?;
            a.fld(qword_ptr(m(mode, 16)))?; // 17
            a.fprem()?; // 17 rem 3 = 2, q = 5
            a.fnstsw(word_ptr(m(mode, 56)))?;
            a.fstp(qword_ptr(m(mode, 64)))?;
            a.fld(qword_ptr(m(mode, 16)))?;
            a.fprem1()?; // 17 - 6*3 = -1, q = 6
            a.fnstsw(word_ptr(m(mode, 58)))?;
            a.fstp(qword_ptr(m(mode, 72)))?;
            a.fstp(st0)?;
            a.fld(qword_ptr(m(mode, 24)))?; // 48
            a.fxtract()?; // ST0 = 1.5, ST1 = 5
            a.hlt()
        },
        |_, bus| {
            bus.put(d, 8, (-6.5f64).to_bits());
            bus.put(d + 8, 8, 3f64.to_bits());
            bus.put(d + 16, 8, 17f64.to_bits());
            bus.put(d + 24, 8, 48f64.to_bits());
        },
    );
    let r = |o: u64| f64::from_bits(bus.read(d + o, 8));
    assert_eq!(r(32), 6.5f64.sqrt());
    assert_eq!(r(40), 6.0);
    assert_eq!(r(48), -52.0);
    assert_eq!(r(64), 2.0);
    assert_eq!(r(72), -1.0);
    let (sw1, sw2) = (bus.read(d + 56, 2) as u16, bus.read(d + 58, 2) as u16);
    // q = 5 = 0b101: C0 = q2, C3 = q1, C1 = q0
    assert_eq!(sw1 & CC, C0 | C1);
    // q = 6 = 0b110
    assert_eq!(sw2 & CC, C0 | C3);
    assert_eq!((st(&cpu, 0), st(&cpu, 1)), (1.5, 5.0));
}

#[test]
fn compares_set_the_condition_codes() {
    let mode = TestMode::Protected32;
    let d = data(mode);
    let (_, bus) = ok(
        mode,
        |a| {
            let sw = |a: &mut Asm, o: i32| a.fnstsw(word_ptr(m(mode, 64 + o)));
            a.fld(qword_ptr(m(mode, 0)))?; // 1
            a.fld(qword_ptr(m(mode, 8)))?; // 2 ; ST0 = 2, ST1 = 1
            a.fcom_2(st0, st1)?;
            sw(a, 0)?; // greater
            a.fcom(qword_ptr(m(mode, 8)))?;
            sw(a, 2)?; // equal
            a.fcom(dword_ptr(m(mode, 16)))?; // vs 3
            sw(a, 4)?; // less
            a.ficom(word_ptr(m(mode, 20)))?; // vs 2
            sw(a, 6)?; // equal
            a.fld(qword_ptr(m(mode, 24)))?; // QNaN
            a.fucom(st0, st1)?;
            sw(a, 8)?; // unordered, no IE
            a.fcom_2(st0, st1)?;
            sw(a, 10)?; // unordered, IE
            a.fucomp(st0, st1)?; // pops the NaN
            a.ftst()?;
            sw(a, 12)?; // 2 > 0
            a.fxam()?;
            sw(a, 14)?; // normal
            a.fcompp()?; // 2 vs 1, pops both
            sw(a, 16)?;
            a.fxam()?;
            sw(a, 18)?; // empty
            a.hlt()
        },
        |_, bus| {
            bus.put(d, 8, 1f64.to_bits());
            bus.put(d + 8, 8, 2f64.to_bits());
            bus.put(d + 16, 4, 3f32.to_bits() as u64);
            bus.put(d + 20, 2, 2);
            bus.put(d + 24, 8, f64::NAN.to_bits());
        },
    );
    let sw = |o: u64| bus.read(d + 64 + o, 2) as u16;
    assert_eq!(sw(0) & CC, 0);
    assert_eq!(sw(2) & CC, C3);
    assert_eq!(sw(4) & CC, C0);
    assert_eq!(sw(6) & CC, C3);
    assert_eq!(sw(8) & (CC | IE), C0 | C2 | C3);
    assert_eq!(sw(10) & (CC | IE), C0 | C2 | C3 | IE);
    assert_eq!(sw(12) & CC, 0);
    assert_eq!(sw(14) & CC, C2);
    assert_eq!(sw(16) & CC, 0);
    assert_eq!(sw(16) >> 11 & 7, 0, "FCOMPP popped twice");
    assert_eq!(sw(18) & (C3 | C2 | C0), C3 | C0);
}

#[test]
fn fcomi_and_fcmov_use_eflags() {
    if cpuid::LEAF1_EDX & edx1::CMOV == 0 {
        return;
    }
    let mode = TestMode::Long64;
    let d = data(mode);
    let (cpu, bus) = ok(
        mode,
        |a| {
            a.fld(qword_ptr(m(mode, 0)))?; // 1
            a.fld(qword_ptr(m(mode, 8)))?; // 2 ; ST0 = 2, ST1 = 1
            a.fcomi(st0, st1)?; // greater: ZF = PF = CF = 0
            a.pushfq()?;
            a.fucomi(st0, st0)?; // equal: ZF
            a.pushfq()?;
            a.fld(qword_ptr(m(mode, 0)))?; // ST0 = 1, ST1 = 2
            a.fcomip(st0, st1)?; // less: CF; pops
            a.pushfq()?;
            a.fld(qword_ptr(m(mode, 16)))?; // NaN
            a.fucomip(st0, st1)?; // unordered: ZF PF CF; pops
            a.pushfq()?;
            // FCMOVcc with the unordered flags: B, E, BE, U taken; N* not
            a.fld(qword_ptr(m(mode, 24)))?; // 5 ; ST1 = 2
            a.fld(qword_ptr(m(mode, 8)))?; // 2 ; ST0 = 2, ST1 = 5
            a.fcmovnb(st0, st1)?;
            a.fcmovne(st0, st1)?;
            a.fcmovnbe(st0, st1)?;
            a.fcmovnu(st0, st1)?;
            a.fstp(qword_ptr(m(mode, 32)))?; // still 2
            a.fld(qword_ptr(m(mode, 8)))?;
            a.fcmovu(st0, st1)?; // taken: 5
            a.fstp(qword_ptr(m(mode, 40)))?;
            a.hlt()
        },
        |_, bus| {
            bus.put(d, 8, 1f64.to_bits());
            bus.put(d + 8, 8, 2f64.to_bits());
            bus.put(d + 16, 8, f64::NAN.to_bits());
            bus.put(d + 24, 8, 5f64.to_bits());
        },
    );
    let stack = cpu.gpr[reg::RSP];
    let fl = |i: u64| bus.read(stack + 8 * i, 8) & (flags::ZF | flags::PF | flags::CF);
    assert_eq!(fl(3), 0);
    assert_eq!(fl(2), flags::ZF);
    assert_eq!(fl(1), flags::CF);
    assert_eq!(fl(0), flags::ZF | flags::PF | flags::CF);
    assert_eq!(f64::from_bits(bus.read(d + 32, 8)), 2.0);
    assert_eq!(f64::from_bits(bus.read(d + 40, 8)), 5.0);
    assert_eq!(cpu.fpu.sw & IE, 0, "FUCOMI with a QNaN raises nothing");
}

#[test]
fn fcmov_conditions() {
    if cpuid::LEAF1_EDX & edx1::CMOV == 0 {
        return;
    }
    // (EFLAGS, taken mask over B, E, BE, U, NB, NE, NBE, NU)
    let cases = [
        (0u64, 0b0000_1111u8),
        (flags::CF, 0b1010_0101),
        (flags::ZF, 0b0110_1001),
        (flags::PF, 0b0001_1110),
    ];
    for (fl, taken) in cases {
        let mode = TestMode::Protected32;
        let d = data(mode);
        let (_, bus) = ok(
            mode,
            |a| {
                type Op = fn(&mut Asm, AsmRegisterSt, AsmRegisterSt) -> AsmResult;
                let ops: [Op; 8] = [
                    |a, x, y| a.fcmovb(x, y),
                    |a, x, y| a.fcmove(x, y),
                    |a, x, y| a.fcmovbe(x, y),
                    |a, x, y| a.fcmovu(x, y),
                    |a, x, y| a.fcmovnb(x, y),
                    |a, x, y| a.fcmovne(x, y),
                    |a, x, y| a.fcmovnbe(x, y),
                    |a, x, y| a.fcmovnu(x, y),
                ];
                a.fld1()?;
                for (i, op) in ops.iter().enumerate() {
                    a.fldz()?;
                    op(a, st0, st1)?;
                    a.fistp(word_ptr(m(mode, 2 * i as i32)))?;
                }
                a.hlt()
            },
            |cpu, _| cpu.rflags |= fl,
        );
        for i in 0..8 {
            let want = (taken >> (7 - i)) & 1;
            assert_eq!(
                bus.read(d + 2 * i, 2),
                want as u64,
                "flags {fl:#x} cond {i}"
            );
        }
    }
}

#[test]
fn register_stack_instructions() {
    let mode = TestMode::Protected32;
    let (cpu, _) = ok(
        mode,
        |a| {
            a.fld1()?; // 1
            a.fldz()?; // 0 1
            a.fldpi()?; // pi 0 1
            a.fxch(st0, st2)?; // 1 0 pi
            a.ffree(st1)?; // 1 - pi
            a.fincstp()?; // - pi | 1 (R of old ST0 still valid)
            a.fdecstp()?; // 1 - pi
            a.fnop()?;
            a.ffreep(st0)?; // - pi (ST0 freed and popped)
            a.hlt()
        },
        |_, _| {},
    );
    assert_eq!(top(&cpu), 6);
    assert!(cpu.fpu.is_empty(0));
    assert_eq!(st(&cpu, 1), core::f64::consts::PI);
    assert!(cpu.fpu.is_empty(2));
    assert!(cpu.fpu.is_empty(7), "the popped 1.0 was freed");
}

// ---------------------------------------------------------------------
// Stack faults and exception responses.

#[test]
fn stack_overflow_and_underflow_masked() {
    let mode = TestMode::Protected32;
    let d = data(mode);
    let (cpu, bus) = ok(
        mode,
        |a| {
            for _ in 0..8 {
                a.fld1()?;
            }
            a.fldz()?; // overflow: IE SF C1, ST0 = indefinite
            a.fnstsw(word_ptr(m(mode, 0)))?;
            a.fst(qword_ptr(m(mode, 8)))?;
            a.fninit()?;
            a.fadd_2(st0, st1)?; // underflow: IE SF, C1 = 0, ST0 = indefinite
            a.fnstsw(word_ptr(m(mode, 2)))?;
            a.fstp(dword_ptr(m(mode, 16)))?;
            a.fist(word_ptr(m(mode, 20)))?; // ST0 empty again: integer indefinite
            a.fcomp_2(st0, st1)?; // unordered, still pops
            a.hlt()
        },
        |_, _| {},
    );
    let sw0 = bus.read(d, 2) as u16;
    assert_eq!(sw0 & (FLAGS | SF | C1), IE | SF | C1);
    assert_eq!(bus.read(d + 8, 8), 0xfff8_0000_0000_0000);
    let sw1 = bus.read(d + 2, 2) as u16;
    assert_eq!(sw1 & (FLAGS | SF | C1), IE | SF);
    assert_eq!(bus.read(d + 16, 4), 0xffc0_0000);
    assert_eq!(bus.read(d + 20, 2), 0x8000);
    assert_eq!(cpu.fpu.sw & (C3 | C2 | C0), C3 | C2 | C0);
    assert_eq!(top(&cpu), 2, "FSTP and FCOMP popped");
    assert_eq!(cpu.fpu.sw & (ES | B), 0, "masked");
}

#[test]
fn unmasked_exception_is_delivered_at_the_next_waiting_instruction() {
    for mode in MODES {
        let d = data(mode);
        let (cpu, _, fault) = go(
            mode,
            |a| {
                a.fldcw(word_ptr(m(mode, 0)))?; // ZE unmasked
                a.fld1()?;
                a.fldz()?;
                a.fdivp(st1, st0)?; // 1 / 0: ZE, not carried out
                a.fnstsw(word_ptr(m(mode, 2)))?; // no wait: no #MF
                a.fnstcw(word_ptr(m(mode, 4)))?;
                let mut l = a.create_label();
                a.set_label(&mut l)?;
                a.fld1()?; // #MF here
                a.hlt()
            },
            |_, bus| bus.put(d, 2, 0x037b),
        );
        let (v, _, ip) = fault.expect("an exception");
        assert_eq!(v, vector::MF, "{mode:?}");
        // the faulting instruction is the FLD1 after the two stores
        let code = crate::testutil::assemble(mode, |a| {
            setup_base(a, mode)?;
            a.fldcw(word_ptr(m(mode, 0)))?;
            a.fld1()?;
            a.fldz()?;
            a.fdivp(st1, st0)?;
            a.fnstsw(word_ptr(m(mode, 2)))?;
            a.fnstcw(word_ptr(m(mode, 4)))?;
            a.hlt()
        });
        let base = if mode == TestMode::Real {
            0
        } else {
            crate::testutil::CODE
        };
        assert_eq!(ip, base + code.len() as u64 - 1, "{mode:?}");
        assert_eq!(top(&cpu), 6, "nothing popped");
        assert_eq!(cpu.fpu.sw & (FLAGS | ES | B), ZE | ES | B);
        assert_eq!(st(&cpu, 0), 0.0, "operands unchanged");
    }
}

#[test]
fn wait_delivers_pending_exceptions_and_checks_mp_ts() {
    let mode = TestMode::Protected32;
    let d = data(mode);
    let pending = |a: &mut Asm| -> AsmResult {
        a.fldcw(word_ptr(m(mode, 0)))?;
        a.fld1()?;
        a.fldz()?;
        a.fdivp(st1, st0)?;
        Ok(())
    };
    // pending ZE: WAIT raises #MF
    let (_, _, fault) = go(
        mode,
        |a| {
            pending(a)?;
            a.wait()?;
            a.hlt()
        },
        |_, bus| bus.put(d, 2, 0x037b),
    );
    assert_eq!(vec_of(fault), Some(vector::MF));
    // FNCLEX clears it: nothing pending
    let (cpu, _) = ok(
        mode,
        |a| {
            pending(a)?;
            a.fnclex()?;
            a.wait()?;
            a.fld1()?;
            a.hlt()
        },
        |_, bus| bus.put(d, 2, 0x037b),
    );
    assert_eq!(cpu.fpu.sw & (FLAGS | ES | B | SF), 0);
    // CR0.NE clear: still #MF (documented deviation)
    let (_, _, fault) = go(
        mode,
        |a| {
            pending(a)?;
            a.wait()?;
            a.hlt()
        },
        |cpu, bus| {
            bus.put(d, 2, 0x037b);
            cpu.cr0 &= !cr::CR0_NE;
        },
    );
    assert_eq!(vec_of(fault), Some(vector::MF));
    // WAIT: #NM only with MP and TS both set
    let cases = [
        (cr::CR0_MP | cr::CR0_TS, Some(vector::NM)),
        (cr::CR0_TS, None),
        (cr::CR0_MP, None),
        (cr::CR0_EM, None),
    ];
    for (bits, want) in cases {
        let (_, _, fault) = go(
            mode,
            |a| {
                a.wait()?;
                a.hlt()
            },
            |cpu, _| cpu.cr0 |= bits,
        );
        assert_eq!(vec_of(fault), want, "cr0 {bits:#x}");
    }
}

#[test]
fn device_not_available() {
    let mode = TestMode::Long64;
    type Op = fn(&mut Asm, TestMode) -> AsmResult;
    let ops: [Op; 6] = [
        |a, _| a.fld1(),
        |a, _| a.fninit(),
        |a, mode| a.fnstsw(word_ptr(m(mode, 0))),
        |a, mode| a.fxsave(ptr(m(mode, 0))),
        |a, mode| a.fxrstor(ptr(m(mode, 0))),
        |a, mode| a.fnsave(ptr(m(mode, 0))),
    ];
    for (i, op) in ops.iter().enumerate() {
        for bits in [cr::CR0_EM, cr::CR0_TS] {
            let (_, _, fault) = go(
                mode,
                |a| {
                    op(a, mode)?;
                    a.hlt()
                },
                |cpu, _| cpu.cr0 |= bits,
            );
            assert_eq!(vec_of(fault), Some(vector::NM), "op {i} cr0 {bits:#x}");
        }
    }
}

#[test]
fn unmasked_store_exceptions_leave_memory_and_stack_alone() {
    let mode = TestMode::Protected32;
    let d = data(mode);
    let (cpu, bus) = ok(
        mode,
        |a| {
            a.fldcw(word_ptr(m(mode, 0)))?; // IE and OE unmasked
            a.fld(tword_ptr(m(mode, 16)))?; // 2^10000
            a.fstp(dword_ptr(m(mode, 32)))?; // overflow: nothing stored, no pop
            a.fnstsw(word_ptr(m(mode, 40)))?;
            a.fnclex()?;
            a.fistp(word_ptr(m(mode, 36)))?; // out of range: IE
            a.fnstsw(word_ptr(m(mode, 44)))?;
            a.fnstcw(word_ptr(m(mode, 42)))?;
            a.hlt()
        },
        |_, bus| {
            bus.put(d, 2, 0x0376); // IM, OM clear
            let big = F80 {
                sign: false,
                exp: 0x3fff + 10000,
                mant: 1 << 63,
            };
            bus.write(d + 16, &big.to_bytes());
            bus.put(d + 32, 4, 0x1234_5678);
            bus.put(d + 36, 2, 0x4321);
        },
    );
    assert_eq!(bus.read(d + 32, 4), 0x1234_5678);
    assert_eq!(bus.read(d + 36, 2), 0x4321);
    assert_eq!(top(&cpu), 7);
    let sw = bus.read(d + 40, 2) as u16;
    assert_eq!(sw & (FLAGS | ES | B | C1), OE | ES | B, "PE not reported");
    let sw = bus.read(d + 44, 2) as u16;
    assert_eq!(sw & (FLAGS | ES | B | C1), IE | ES | B);
    assert_eq!(bus.read(d + 42, 2), 0x0376);
}

#[test]
fn faulting_store_changes_nothing() {
    let mode = TestMode::Protected32;
    let (cpu, _, fault) = go(
        mode,
        |a| {
            a.fld1()?;
            a.mov(ecx, 0xffff_fffcu32)?;
            a.fstp(qword_ptr(ecx))?; // crosses the segment limit: #GP
            a.hlt()
        },
        |_, _| {},
    );
    assert_eq!(vec_of(fault), Some(vector::GP));
    assert_eq!(top(&cpu), 7, "not popped");
    assert_eq!(cpu.fpu.fop, 0x1e8, "FOP of the FLD1 before it");
}

// ---------------------------------------------------------------------
// Control instructions and the environment.

#[test]
fn control_word_and_status_word() {
    let mode = TestMode::Real;
    let d = data(mode);
    let (cpu, bus) = ok(
        mode,
        |a| {
            a.fldcw(word_ptr(m(mode, 0)))?; // 0xffff
            a.fnstcw(word_ptr(m(mode, 2)))?;
            a.fld1()?;
            a.fnstsw(ax)?;
            a.fnstsw(word_ptr(m(mode, 4)))?;
            a.fninit()?;
            a.fnstcw(word_ptr(m(mode, 6)))?;
            a.hlt()
        },
        |_, bus| bus.put(d, 2, 0xffff),
    );
    assert_eq!(
        bus.read(d + 2, 2),
        0x1f7f,
        "reserved bits dropped, bit 6 set"
    );
    assert_eq!(cpu.gpr[reg::RAX] & 0xffff, 0x3800);
    assert_eq!(bus.read(d + 4, 2), 0x3800);
    assert_eq!(bus.read(d + 6, 2), 0x037f);
    assert_eq!(cpu.fpu.tw, 0xffff);
}

#[test]
fn pointers_and_opcode_are_recorded() {
    let mode = TestMode::Protected32;
    let d = data(mode);
    let code = crate::testutil::assemble(mode, |a| {
        setup_base(a, mode)?;
        a.fld(qword_ptr(m(mode, 0x40)))?;
        a.fnstenv(ptr(m(mode, 0)))?;
        a.fninit()?;
        a.hlt()
    });
    let (_, bus) = ok(
        mode,
        |a| {
            a.fld(qword_ptr(m(mode, 0x40)))?;
            a.fnstenv(ptr(m(mode, 0)))?;
            a.fninit()?;
            a.fld1()?;
            a.fnstenv(ptr(m(mode, 0x80)))?;
            a.hlt()
        },
        |_, _| {},
    );
    let fld_ip = crate::testutil::CODE + base_len(mode);
    assert_eq!(code[base_len(mode) as usize..][..2], [0xdd, 0x43]);
    let r32 = |o: u64| bus.read(d + o, 4);
    assert_eq!(r32(0) & 0xffff, 0x037f);
    assert_eq!(r32(0) >> 16, 0xffff);
    assert_eq!(r32(4) & 0xffff, 0x3800);
    assert_eq!(r32(8) & 0xffff, 0x7fff, "ST0 zero, others empty");
    assert_eq!(r32(12), fld_ip);
    assert_eq!(r32(16), (0x543 << 16) | crate::testutil::sel::CODE32 as u64);
    assert_eq!(r32(20), d + 0x40);
    assert_eq!(r32(24), 0xffff_0000 | crate::testutil::sel::DATA32 as u64);
    // after FNINIT and FLD1: FIP/FOP of FLD1, FDP of nothing (zero after FNINIT)
    let fld1_ip = crate::testutil::CODE + code.len() as u64 - 1;
    assert_eq!(r32(0x80 + 12), fld1_ip);
    assert_eq!(r32(0x80 + 16) >> 16, 0x1e8);
    assert_eq!(r32(0x80 + 20), 0);
}

#[test]
fn fnstenv_masks_exceptions_and_fldenv_restores() {
    let mode = TestMode::Protected32;
    let d = data(mode);
    let (cpu, bus) = ok(
        mode,
        |a| {
            a.fldcw(word_ptr(m(mode, 0x70)))?; // ZE unmasked
            a.fld1()?;
            a.fldz()?;
            a.fdivp(st1, st0)?; // pending ZE
            a.fnstenv(ptr(m(mode, 0)))?; // masks all: no longer pending
            a.fld1()?; // no #MF
            a.fldenv(ptr(m(mode, 0x20)))?; // a clean environment
            a.fnstcw(word_ptr(m(mode, 0x72)))?;
            a.hlt()
        },
        |_, bus| {
            bus.put(d + 0x70, 2, 0x037b);
            // environment at 0x20: CW 0x0c7f (RC = chop), SW TOP = 3, tags empty
            bus.put(d + 0x20, 4, 0x0c7f);
            bus.put(d + 0x24, 4, 3 << 11);
            bus.put(d + 0x28, 4, 0xffff);
        },
    );
    let sw_saved = bus.read(d + 4, 2) as u16;
    assert_eq!(
        sw_saved & (FLAGS | ES | B),
        ZE | ES | B,
        "the image keeps ES"
    );
    assert_eq!(bus.read(d + 0x72, 2), 0x0c7f);
    assert_eq!(top(&cpu), 3);
    assert_eq!(cpu.fpu.sw & (ES | B | FLAGS), 0);
}

#[test]
fn environment_16_bit_and_real_mode_formats() {
    // 16-bit protected-mode image (o16 prefix in 32-bit code)
    let mode = TestMode::Protected32;
    let d = data(mode);
    let (_, bus) = ok(
        mode,
        |a| {
            a.fld(qword_ptr(m(mode, 0x40)))?;
            a.db(&[0x66, 0xd9, 0x33])?; // o16 FNSTENV [ebx]
            a.db(&[0x66, 0xd9, 0x23])?; // o16 FLDENV [ebx]
            a.db(&[0x66, 0xd9, 0x73, 0x20])?; // o16 FNSTENV [ebx + 0x20]
            a.hlt()
        },
        |_, _| {},
    );
    let w = |o: u64| bus.read(d + o, 2);
    assert_eq!(w(0), 0x037f);
    assert_eq!(w(2), 0x3800);
    assert_eq!(w(4), 0x7fff);
    assert_eq!(w(6), (crate::testutil::CODE + base_len(mode)) & 0xffff);
    assert_eq!(w(8), crate::testutil::sel::CODE32 as u64);
    assert_eq!(w(10), (d + 0x40) & 0xffff);
    assert_eq!(w(12), crate::testutil::sel::DATA32 as u64);
    for o in 0..14 {
        assert_eq!(
            bus.read(d + o, 1),
            bus.read(d + 0x20 + o, 1),
            "round trip byte {o}"
        );
    }

    // real mode: 20-bit linear pointers with the opcode
    let mode = TestMode::Real;
    let d = data(mode);
    let (cpu, bus) = ok(
        mode,
        |a| {
            a.fld(qword_ptr(m(mode, 0x40)))?; // DD 47 40 at CS:3
            a.fnstenv(ptr(m(mode, 0)))?; // 14 bytes
            a.db(&[0x66, 0xd9, 0x77, 0x20])?; // o32 FNSTENV [bx + 0x20]: 28 bytes
            a.db(&[0x66, 0xd9, 0x67, 0x20])?; // o32 FLDENV [bx + 0x20]
            a.hlt()
        },
        |_, _| {},
    );
    let lin_ip = crate::testutil::CODE_REAL + base_len(mode);
    let w = |o: u64| bus.read(d + o, 2);
    assert_eq!(w(6), lin_ip & 0xffff);
    assert_eq!(w(8), ((lin_ip >> 16) << 12) | 0x547);
    assert_eq!(w(10), d + 0x40);
    assert_eq!(w(12), 0);
    let l = |o: u64| bus.read(d + 0x20 + o, 4);
    assert_eq!(l(12), 0xffff_0000 | (lin_ip & 0xffff));
    assert_eq!(l(16), ((lin_ip >> 16) << 12) | 0x547);
    assert_eq!(l(20), 0xffff_0000 | (d + 0x40));
    assert_eq!(l(24), 0);
    assert_eq!((cpu.fpu.fip, cpu.fpu.fcs, cpu.fpu.fop), (lin_ip, 0, 0x547));
}

#[test]
fn fnsave_frstor_round_trip() {
    for mode in MODES {
        let d = data(mode);
        let (cpu, bus) = ok(
            mode,
            |a| {
                a.fldpi()?;
                a.fld(qword_ptr(m(mode, 0x200)))?; // -3
                a.fldz()?;
                a.fdiv_2(st0, st1)?; // -0, PE? no: exact
                a.fsqrt()?; // sqrt(-0) = -0
                a.fldl2t()?;
                a.fnsave(ptr(m(mode, 0)))?;
                a.fld1()?; // after FNINIT
                a.fnsave(ptr(m(mode, 0x100)))?;
                a.frstor(ptr(m(mode, 0)))?;
                a.hlt()
            },
            |_, bus| bus.put(d + 0x200, 8, (-3f64).to_bits()),
        );
        // the first image: TOP = 4; the second, taken right after
        // FNINIT + FLD1: one valid register
        let (sw_at, tw_at) = if mode == TestMode::Real {
            (2, 4)
        } else {
            (4, 8)
        };
        assert_eq!(bus.read(d + sw_at, 2) & 0x3800, 0x2000, "{mode:?}");
        assert_eq!(bus.read(d + 0x100 + tw_at, 2), 0x3fff, "{mode:?}");
        let env = if mode == TestMode::Real { 14 } else { 28 };
        let first: Vec<u8> = (0..10).map(|i| bus.read(d + env + i, 1) as u8).collect();
        assert_eq!(
            F80::from_bytes(first.try_into().unwrap()),
            x87::load_const(Const::L2T, Rounding::Nearest)
        );
        // FRSTOR brought back the first state
        assert_eq!(top(&cpu), 4);
        assert_eq!(val(cpu.fpu.st(0)), core::f64::consts::LOG2_10);
        assert_eq!(cpu.fpu.st(1), F80::ZERO.chs());
        assert_eq!(st(&cpu, 2), -3.0);
        assert_eq!(st(&cpu, 3), core::f64::consts::PI);
        assert!(cpu.fpu.is_empty(4));
        assert_eq!(cpu.fpu.cw, 0x037f);
    }
}

#[test]
fn frstor_of_a_pending_exception_raises_at_the_next_instruction() {
    let mode = TestMode::Protected32;
    let d = data(mode);
    let (cpu, _, fault) = go(
        mode,
        |a| {
            a.fnsave(ptr(m(mode, 0)))?;
            a.frstor(ptr(m(mode, 0x100)))?; // loads ZE with ZM clear
            a.fnstsw(word_ptr(m(mode, 0x200)))?;
            a.fld1()?;
            a.hlt()
        },
        |_, bus| {
            bus.put(d + 0x100, 4, 0x037b);
            bus.put(d + 0x104, 4, ZE as u64);
            bus.put(d + 0x108, 4, 0xffff);
        },
    );
    assert_eq!(vec_of(fault), Some(vector::MF));
    assert_eq!(
        cpu.fpu.sw & (ES | B | FLAGS),
        ES | B | ZE,
        "ES recomputed on load"
    );
}

// ---------------------------------------------------------------------
// FXSAVE / FXRSTOR.

#[test]
fn fxsave_fxrstor_round_trip() {
    for mode in [TestMode::Protected32, TestMode::Long64] {
        let d = data(mode);
        let (cpu, bus) = ok(
            mode,
            |a| {
                a.fld1()?;
                a.fldpi()?;
                a.fxsave(ptr(m(mode, 0)))?;
                a.fninit()?;
                a.fxrstor(ptr(m(mode, 0x200)))?; // a different image
                a.fxsave(ptr(m(mode, 0x400)))?;
                a.fxrstor(ptr(m(mode, 0)))?;
                a.hlt()
            },
            |cpu, bus| {
                for i in 0..16 {
                    cpu.xmm[i] = 0x1111_2222_3333_4444_5555_6666_7777_0000 + i as u128;
                }
                cpu.mxcsr = 0x1f80 | 0x40; // DAZ
                                           // the second image: FCW 0x027f, FSW TOP=5, tags R5 valid, MXCSR 0x9fc0
                let mut img = [0u8; 512];
                img[0..2].copy_from_slice(&0x027fu16.to_le_bytes());
                img[2..4].copy_from_slice(&(5u16 << 11).to_le_bytes());
                img[4] = 1 << 5;
                img[24..28].copy_from_slice(&0x9fc0u32.to_le_bytes());
                img[32..42].copy_from_slice(&f(2.0).to_bytes());
                for i in 0..16 {
                    img[160 + 16 * i] = 0xa0 + i as u8;
                }
                bus.write(d + 0x200, &img);
                bus.write(d + 0x400, &[0xee; 512]);
            },
        );
        let r = |o: u64| bus.read(d + o, 4);
        assert_eq!(r(0) & 0xffff, 0x037f);
        assert_eq!(r(0) >> 16, 0x3000, "FSW with TOP = 6");
        assert_eq!(r(4) & 0xff, 0xc0, "abridged tags: R6, R7");
        assert_eq!(r(24), 0x1fc0);
        assert_eq!(r(28), 0xffff, "MXCSR_MASK");
        assert_eq!(bus.read(d + 32, 8), 0xc90f_daa2_2168_c235);
        let nx = if mode == TestMode::Long64 { 16 } else { 8 };
        // the second FXSAVE: the loaded image, XMM of the mode only
        let s = d + 0x400;
        assert_eq!(bus.read(s, 2), 0x027f);
        assert_eq!(bus.read(s + 2, 2), 5 << 11);
        assert_eq!(bus.read(s + 4, 1), 1 << 5);
        assert_eq!(bus.read(s + 24, 4), 0x9fc0);
        assert_eq!(bus.read(s + 32, 8), 1 << 63);
        for i in 0..16u64 {
            let x = bus.read(s + 160 + 16 * i, 1);
            if (i as usize) < nx {
                assert_eq!(x, 0xa0 + i, "{mode:?} xmm{i}");
            } else {
                assert_eq!(x, 0xee, "{mode:?} xmm{i} not written outside 64-bit mode");
            }
        }
        assert_eq!(
            bus.read(s + 416, 8),
            0xeeee_eeee_eeee_eeee,
            "416.. untouched"
        );
        // and the final FXRSTOR brought back the first state
        assert_eq!(top(&cpu), 6);
        assert_eq!(st(&cpu, 0), core::f64::consts::PI);
        assert_eq!(st(&cpu, 1), 1.0);
        assert_eq!(cpu.mxcsr, 0x1fc0);
        assert_eq!(cpu.xmm[3], 0x1111_2222_3333_4444_5555_6666_7777_0003);
    }
}

#[test]
fn fxsave64_stores_64_bit_pointers() {
    let mode = TestMode::Long64;
    let d = data(mode);
    let (_, bus) = ok(
        mode,
        |a| {
            a.fld(qword_ptr(m(mode, 0x300)))?;
            a.fxsave64(ptr(m(mode, 0)))?;
            a.fxsave(ptr(m(mode, 0x200)))?;
            a.hlt()
        },
        |_, _| {},
    );
    let fld_ip = crate::testutil::CODE + base_len(mode);
    assert_eq!(bus.read(d + 6, 2), 0x583, "FOP of FLD m64 [rbx+disp32]");
    assert_eq!(bus.read(d + 8, 8), fld_ip);
    assert_eq!(bus.read(d + 16, 8), d + 0x300);
    assert_eq!(bus.read(d + 0x200 + 8, 4), fld_ip);
    assert_eq!(
        bus.read(d + 0x200 + 12, 2),
        crate::testutil::sel::CODE64 as u64
    );
    assert_eq!(bus.read(d + 0x200 + 16, 4), d + 0x300);
    assert_eq!(
        bus.read(d + 0x200 + 20, 2),
        crate::testutil::sel::DATA32 as u64
    );
}

#[test]
fn fxsave_fxrstor_faults() {
    let mode = TestMode::Long64;
    let d = data(mode);
    // misaligned
    for store in [true, false] {
        let (cpu, bus, fault) = go(
            mode,
            |a| {
                a.fld1()?;
                if store {
                    a.fxsave(ptr(m(mode, 8)))
                } else {
                    a.fxrstor(ptr(m(mode, 8)))
                }?;
                a.hlt()
            },
            |_, bus| bus.write(d, &[0x55; 600]),
        );
        assert_eq!(fault.map(|f| (f.0, f.1)), Some((vector::GP, Some(0))));
        assert_eq!(bus.read(d + 8, 8), 0x5555_5555_5555_5555);
        assert_eq!(top(&cpu), 7);
    }
    // reserved MXCSR bits
    let (cpu, _, fault) = go(
        mode,
        |a| {
            a.fxrstor(ptr(m(mode, 0)))?;
            a.hlt()
        },
        |_, bus| bus.put(d + 24, 4, 0x1_1f80),
    );
    assert_eq!(fault.map(|f| (f.0, f.1)), Some((vector::GP, Some(0))));
    assert_eq!(cpu.fpu.cw, 0x037f, "nothing loaded");
}

// ---------------------------------------------------------------------
// XSAVE / XRSTOR / XGETBV / XSETBV.

fn osxsave(cpu: &mut Cpu) {
    cpu.cr4 |= cr::CR4_OSXSAVE;
}

#[test]
fn xgetbv_xsetbv() {
    let mode = TestMode::Long64;
    // without CR4.OSXSAVE: #UD
    for op in [0u8, 1] {
        let (_, _, fault) = go(
            mode,
            |a| {
                if op == 0 { a.xgetbv() } else { a.xsetbv() }?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(vec_of(fault), Some(vector::UD));
    }
    // set XCR0 = 3 and read it back (ECX = 0 and 1)
    let (cpu, _) = ok(
        mode,
        |a| {
            a.xor(ecx, ecx)?;
            a.xor(edx, edx)?;
            a.mov(eax, 3u32)?;
            a.xsetbv()?;
            a.mov(eax, 0xffu32)?;
            a.xgetbv()?;
            a.mov(r8, rax)?;
            a.mov(ecx, 1u32)?;
            a.xgetbv()?;
            a.hlt()
        },
        |cpu, _| osxsave(cpu),
    );
    assert_eq!(cpu.xcr0, 3);
    assert_eq!(cpu.gpr[8], 3);
    assert_eq!((cpu.gpr[reg::RAX], cpu.gpr[reg::RDX]), (3, 0));
    // invalid values, XCRs and privilege: #GP(0)
    let bad: [(u32, u32, u32, u8); 6] = [
        (0, 0, 2, 0), // x87 bit clear
        (0, 0, 0, 0), // x87 bit clear
        (0, 0, 7, 0), // AVX not supported
        (0, 1, 3, 0), // EDX bits
        (1, 0, 3, 0), // XCR1
        (0, 0, 3, 3), // CPL 3
    ];
    for (ecx_v, edx_v, eax_v, cpl) in bad {
        let (cpu, _, fault) = go(
            mode,
            |a| {
                a.mov(ecx, ecx_v)?;
                a.mov(edx, edx_v)?;
                a.mov(eax, eax_v)?;
                a.xsetbv()?;
                a.hlt()
            },
            |cpu, _| {
                osxsave(cpu);
                cpu.cpl = cpl;
            },
        );
        assert_eq!(
            fault.map(|f| (f.0, f.1)),
            Some((vector::GP, Some(0))),
            "{ecx_v} {edx_v:#x}:{eax_v:#x} cpl {cpl}"
        );
        assert_eq!(cpu.xcr0, 1);
    }
    let (_, _, fault) = go(
        mode,
        |a| {
            a.mov(ecx, 2u32)?;
            a.xgetbv()?;
            a.hlt()
        },
        |cpu, _| osxsave(cpu),
    );
    assert_eq!(fault.map(|f| (f.0, f.1)), Some((vector::GP, Some(0))));
}

#[test]
fn xsave_xrstor_round_trip_and_partial_components() {
    for mode in [TestMode::Protected32, TestMode::Long64] {
        let d = data(mode);
        let (cpu, bus) = ok(
            mode,
            |a| {
                a.fldpi()?;
                a.mov(eax, 3u32)?;
                a.xor(edx, edx)?;
                a.xsave(ptr(m(mode, 0)))?; // both components
                a.mov(eax, 1u32)?;
                a.xsave(ptr(m(mode, 0x400)))?; // x87 only
                a.fninit()?;
                a.mov(eax, 0xffff_ffffu32)?;
                a.xrstor(ptr(m(mode, 0x800)))?; // XSTATE_BV = 0: init both
                a.fnstcw(word_ptr(m(mode, 0xc00)))?;
                a.mov(eax, 3u32)?;
                a.xrstor(ptr(m(mode, 0)))?;
                a.hlt()
            },
            |cpu, bus| {
                osxsave(cpu);
                cpu.xcr0 = 3;
                cpu.mxcsr = 0x1f80 | 0x6000; // RC = chop
                for i in 0..16 {
                    cpu.xmm[i] = 0x100 + i as u128;
                }
                bus.write(d + 0x400, &[0xcc; 576]);
                bus.put(d + 0x400 + 512, 8, 0); // clean header
                bus.write(d + 0x400 + 520, &[0; 56]);
                // 0x800: an image with XSTATE_BV = 0 and MXCSR 0x1f80
                bus.put(d + 0x800 + 24, 4, 0x1f80);
            },
        );
        // full image
        assert_eq!(bus.read(d + 24, 4), 0x7f80);
        assert_eq!(bus.read(d + 28, 4), 0xffff);
        assert_eq!(bus.read(d + 512, 8), 3, "XSTATE_BV");
        assert_eq!(bus.read(d + 160 + 16, 2), 0x101);
        // x87 only: MXCSR and XMM untouched, XSTATE_BV = 1
        let p = d + 0x400;
        assert_eq!(bus.read(p, 2), 0x037f);
        assert_eq!(bus.read(p + 24, 4), 0xcccc_cccc);
        assert_eq!(bus.read(p + 160, 4), 0xcccc_cccc);
        assert_eq!(bus.read(p + 512, 8), 1);
        assert_eq!(bus.read(p + 520, 8), 0, "XCOMP_BV left alone");
        // init through XRSTOR, then the full image restored
        assert_eq!(bus.read(d + 0xc00, 2), 0x037f);
        assert_eq!(cpu.mxcsr, 0x7f80);
        assert_eq!(cpu.xmm[7], 0x107);
        assert_eq!(st(&cpu, 0), core::f64::consts::PI);
        assert_eq!(top(&cpu), 7);
    }
}

#[test]
fn xrstor_initialises_components_clear_in_xstate_bv() {
    let mode = TestMode::Long64;
    let (cpu, _) = ok(
        mode,
        |a| {
            a.fld1()?;
            a.mov(eax, 3u32)?;
            a.xor(edx, edx)?;
            a.xrstor(ptr(m(mode, 0)))?;
            a.hlt()
        },
        |cpu, bus| {
            osxsave(cpu);
            cpu.xcr0 = 3;
            cpu.xmm = [7; 16];
            bus.put(DATA + 24, 4, 0x1f00);
        },
    );
    assert_eq!(top(&cpu), 0);
    assert_eq!(cpu.fpu.tw, 0xffff);
    assert_eq!(cpu.fpu.regs, [F80::ZERO; 8]);
    assert_eq!(cpu.xmm, [0; 16]);
    assert_eq!(cpu.mxcsr, 0x1f00, "MXCSR still loaded");
}

#[test]
fn xsave_xrstor_faults() {
    let mode = TestMode::Long64;
    let d = data(mode);
    let run = |xrstor: bool, off: i32, hdr: &[(u64, u64)], enabled: bool| {
        let hdr = hdr.to_vec();
        go(
            mode,
            |a| {
                a.mov(eax, 3u32)?;
                a.xor(edx, edx)?;
                if xrstor {
                    a.xrstor(ptr(m(mode, off)))
                } else {
                    a.xsave(ptr(m(mode, off)))
                }?;
                a.hlt()
            },
            move |cpu, bus| {
                if enabled {
                    osxsave(cpu);
                }
                cpu.xcr0 = 3;
                for (o, v) in hdr {
                    bus.put(d + o, 8, v);
                }
            },
        )
        .2
        .map(|f| (f.0, f.1))
    };
    let gp = Some((vector::GP, Some(0)));
    assert_eq!(run(false, 0, &[], false), Some((vector::UD, None)));
    assert_eq!(run(true, 0, &[], false), Some((vector::UD, None)));
    assert_eq!(run(false, 32, &[], true), gp, "XSAVE alignment");
    assert_eq!(run(true, 16, &[], true), gp, "XRSTOR alignment");
    assert_eq!(run(true, 0, &[(520, 1 << 63)], true), gp, "compacted");
    assert_eq!(run(true, 0, &[(528, 1)], true), gp, "header bytes 16..23");
    assert_eq!(run(true, 0, &[(512, 4)], true), gp, "XSTATE_BV beyond XCR0");
    assert_eq!(run(true, 0, &[(24, 1 << 16)], true), gp, "MXCSR reserved");
    assert_eq!(run(true, 0, &[(512, 3)], true), None);
    assert_eq!(run(false, 0, &[], true), None);
    // #NM with CR0.TS
    let (_, _, fault) = go(
        mode,
        |a| {
            a.xsave(ptr(m(mode, 0)))?;
            a.hlt()
        },
        |cpu, _| {
            osxsave(cpu);
            cpu.cr0 |= cr::CR0_TS;
        },
    );
    assert_eq!(vec_of(fault), Some(vector::NM));
}

// ---------------------------------------------------------------------
// Transcendental instructions through the interpreter.

#[test]
fn transcendental_instructions() {
    let mode = TestMode::Protected32;
    let d = data(mode);
    let (cpu, bus) = ok(
        mode,
        |a| {
            a.fld(qword_ptr(m(mode, 0)))?; // 0.5
            a.fsin()?;
            a.fstp(qword_ptr(m(mode, 0x40)))?;
            a.fld(qword_ptr(m(mode, 0)))?;
            a.fcos()?;
            a.fstp(qword_ptr(m(mode, 0x48)))?;
            a.fld(qword_ptr(m(mode, 0)))?;
            a.fptan()?; // ST0 = 1, ST1 = tan
            a.fstp(qword_ptr(m(mode, 0x50)))?;
            a.fstp(qword_ptr(m(mode, 0x58)))?;
            a.fld(qword_ptr(m(mode, 0)))?;
            a.fsincos()?; // ST0 = cos, ST1 = sin
            a.fstp(qword_ptr(m(mode, 0x60)))?;
            a.fstp(qword_ptr(m(mode, 0x68)))?;
            a.fld1()?; // y
            a.fld(qword_ptr(m(mode, 8)))?; // x = -2
            a.fpatan()?; // atan2(1, -2)
            a.fstp(qword_ptr(m(mode, 0x70)))?;
            a.fld(qword_ptr(m(mode, 0)))?; // y = 0.5
            a.fld(qword_ptr(m(mode, 16)))?; // x = 10
            a.fyl2x()?;
            a.fstp(qword_ptr(m(mode, 0x78)))?;
            a.fld(qword_ptr(m(mode, 0)))?; // y = 0.5
            a.fld(qword_ptr(m(mode, 24)))?; // x = 0.125
            a.fyl2xp1()?;
            a.fstp(qword_ptr(m(mode, 0x80)))?;
            a.fld(qword_ptr(m(mode, 0)))?;
            a.f2xm1()?;
            a.fstp(qword_ptr(m(mode, 0x88)))?;
            a.fld(qword_ptr(m(mode, 32)))?; // 2^70: out of range
            a.fsin()?;
            a.fnstsw(word_ptr(m(mode, 0x90)))?;
            a.fptan()?;
            a.hlt()
        },
        |_, bus| {
            bus.put(d, 8, 0.5f64.to_bits());
            bus.put(d + 8, 8, (-2f64).to_bits());
            bus.put(d + 16, 8, 10f64.to_bits());
            bus.put(d + 24, 8, 0.125f64.to_bits());
            bus.put(d + 32, 8, 2f64.powi(70).to_bits());
        },
    );
    let r = |o: u64| f64::from_bits(bus.read(d + o, 8));
    let close = |a: f64, b: f64| (a - b).abs() <= 2.0 * f64::EPSILON * b.abs();
    assert!(close(r(0x40), 0.5f64.sin()));
    assert!(close(r(0x48), 0.5f64.cos()));
    assert_eq!(r(0x50), 1.0);
    assert!(close(r(0x58), 0.5f64.tan()));
    assert!(close(r(0x60), 0.5f64.cos()));
    assert!(close(r(0x68), 0.5f64.sin()));
    assert!(close(r(0x70), f64::atan2(1.0, -2.0)));
    assert!(close(r(0x78), 0.5 * 10f64.log2()));
    assert!(close(r(0x80), 0.5 * 1.125f64.log2()));
    assert!(close(r(0x88), 2f64.sqrt() - 1.0));
    assert_eq!(bus.read(d + 0x90, 2) as u16 & (C2 | 0x3800), C2 | 0x3800);
    assert_eq!(cpu.fpu.sw & C2, C2);
    assert_eq!(top(&cpu), 7, "out of range: nothing pushed");
    assert_eq!(st(&cpu, 0), 2f64.powi(70));
}

// ---------------------------------------------------------------------
// Regressions found by the differential tester (testsuite difftest). The
// expected values are this host's (an Intel Xeon), checked natively with
// the same state loaded by FRSTOR, the instruction, then FNSAVE.

/// A register value from its sign/exponent word and significand.
fn x(se: u16, mant: u64) -> F80 {
    F80::from_sign_exp(se, mant)
}

/// An x87 state: FCW, FSW (ES clear), the registers R0..R7 in use (bit p
/// for R(p), as FXSAVE's abridged tag) and their contents.
struct St {
    cw: u16,
    sw: u16,
    used: u8,
    regs: [F80; 8],
}

impl St {
    /// All registers 1.0.
    fn new(cw: u16, sw: u16, used: u8) -> St {
        St {
            cw,
            sw,
            used,
            regs: [F80::ONE; 8],
        }
    }

    fn with(mut self, p: usize, v: F80) -> St {
        self.regs[p] = v;
        self
    }
}

/// Runs the code `bytes` in 64-bit mode from `st`, with RBX pointing at
/// the data area, which holds `mem`.
fn run_from(st: &St, bytes: &[u8], mem: &[u8]) -> (Cpu, TestBus) {
    ok(
        TestMode::Long64,
        |a| {
            a.db(bytes)?;
            a.hlt()
        },
        |cpu, bus| {
            let f = &mut cpu.fpu;
            f.cw = st.cw;
            f.sw = st.sw;
            f.regs = st.regs;
            f.tw = (0..8).fold(0, |tw, p| {
                let tag = if st.used & (1 << p) != 0 {
                    st.regs[p].tag() as u16
                } else {
                    3
                };
                tw | tag << (2 * p)
            });
            bus.write(DATA, mem);
        },
    )
}

/// Physical register `p` as (sign/exponent, significand), or None if empty.
fn reg(cpu: &Cpu, p: usize) -> Option<(u16, u64)> {
    let f = &cpu.fpu;
    ((f.tw >> (2 * p)) & 3 != 3).then(|| (f.regs[p].sign_exp(), f.regs[p].mant))
}

#[test]
fn fprem_with_a_nan_result_keeps_c0_and_c3() {
    let inf = F80::INFINITY;
    // FPREM, ST0 = R3 = +inf (invalid, masked): C1 C2 cleared, C0 C3 kept
    let (cpu, _) = run_from(
        &St::new(0x037f, 0x5d3b, 0x38).with(3, inf),
        &[0xd9, 0xf8],
        &[],
    );
    assert_eq!(cpu.fpu.sw, 0x593b);
    assert_eq!(reg(&cpu, 3), Some((0xffff, 0xc000_0000_0000_0000)));
    // FPREM1 of a QNaN (no exception): the same
    let q = x(0x7fff, 0xc000_0000_0000_0000);
    let (cpu, _) = run_from(
        &St::new(0x037f, 0x5d3b, 0x38).with(3, q),
        &[0xd9, 0xf5],
        &[],
    );
    assert_eq!(cpu.fpu.sw, 0x593b);
    // FPREM1 with ST0 empty (masked stack underflow)
    let (cpu, _) = run_from(&St::new(0x037f, 0x5d3b, 0), &[0xd9, 0xf5], &[]);
    assert_eq!(cpu.fpu.sw, 0x597b);
    // unmasked invalid: C2 cleared too, nothing written
    let (cpu, _) = run_from(
        &St::new(0x037e, 0x4700, 0x03).with(0, inf),
        &[0xd9, 0xf8],
        &[],
    );
    assert_eq!(cpu.fpu.sw, 0xc181);
    assert_eq!(reg(&cpu, 0), Some((0x7fff, 1 << 63)));
}

#[test]
fn fprem_with_ue_unmasked_rebiases_a_denormal_remainder() {
    // FPREM1, ST0 = R1 denormal, ST1 = R2 denormal, FCW 0x1a6f (UE unmasked)
    let st = St::new(0x1a6f, 0x4900, 0x06)
        .with(1, x(0x0000, 0x65e9_ff98_d187_d845))
        .with(2, x(0x8000, 0x03f8_fd1b_bfb2_3722));
    let (cpu, _) = run_from(&st, &[0xd9, 0xf5], &[]);
    assert_eq!(cpu.fpu.sw, 0xc892);
    assert_eq!(reg(&cpu, 1), Some((0xdffa, 0xafda_9c53_48e0_9780)));
}

#[test]
fn ffree_clears_c1() {
    let (cpu, _) = run_from(&St::new(0x037f, 0x5300, 0xff), &[0xdd, 0xc3], &[]);
    assert_eq!(cpu.fpu.sw, 0x5100);
    assert_eq!(reg(&cpu, 5), None);
    // FFREEP ST(1)
    let (cpu, _) = run_from(&St::new(0x037f, 0x5300, 0xff), &[0xdf, 0xc1], &[]);
    assert_eq!(cpu.fpu.sw, 0x5900);
    assert_eq!((reg(&cpu, 2), reg(&cpu, 3)), (None, None));
}

#[test]
fn compares_set_the_condition_codes_with_unmasked_exceptions() {
    // FCOM ST(6), ST6 = R0 empty, IE unmasked: unordered, C1 = 0
    let (cpu, _) = run_from(&St::new(0x0c5e, 0x5000, 0xfe), &[0xd8, 0xd6], &[]);
    assert_eq!(cpu.fpu.sw, 0xd5c1);
    // FTST of an SNaN with IE unmasked
    let snan = x(0x7fff, 0xa000_0000_0000_0000);
    let (cpu, _) = run_from(
        &St::new(0x0374, 0x0000, 0x01).with(0, snan),
        &[0xd9, 0xe4],
        &[],
    );
    assert_eq!(cpu.fpu.sw, 0xc581);
    // FCOMP with a denormal ST1, DE unmasked: the real result (ST0 > ST1),
    // C1 cleared, no pop
    let st = St::new(0x037d, 0x0200, 0x03).with(1, x(0, 1));
    let (cpu, _) = run_from(&st, &[0xd8, 0xd9], &[]);
    assert_eq!(cpu.fpu.sw, 0x8082);
    assert_eq!(top(&cpu), 0);
    // masked: the same codes, popped
    let st = St::new(0x037f, 0x0200, 0x03).with(1, x(0, 1));
    let (cpu, _) = run_from(&st, &[0xd8, 0xd9], &[]);
    assert_eq!(cpu.fpu.sw, 0x0802);
}

#[test]
fn fcomi_leaves_the_condition_codes_and_always_sets_eflags() {
    // FCOMIP with an SNaN, IE unmasked: EFLAGS unordered, C1 kept, no pop
    let snan = x(0x7fff, 0xa000_0000_0000_0000);
    let (cpu, _) = run_from(
        &St::new(0x037e, 0x0200, 0x03).with(0, snan),
        &[0xdf, 0xf1],
        &[],
    );
    assert_eq!(cpu.fpu.sw, 0x8281);
    assert_eq!(
        cpu.rflags & flags::STATUS,
        flags::ZF | flags::PF | flags::CF
    );
    assert_eq!(top(&cpu), 0);
    // FCOMI 1.0, 2.0: CF, all four condition codes kept
    let st = St::new(0x037f, 0x4700, 0x03).with(1, x(0x4000, 1 << 63));
    let (cpu, _) = run_from(&st, &[0xdb, 0xf1], &[]);
    assert_eq!(cpu.fpu.sw, 0x4700);
    assert_eq!(cpu.rflags & flags::STATUS, flags::CF);
    // stack underflow: C1 cleared
    let (cpu, _) = run_from(&St::new(0x037f, 0x4700, 0x01), &[0xdb, 0xf1], &[]);
    assert_eq!(cpu.fpu.sw, 0x4541);
}

#[test]
fn fcmov_keeps_c1() {
    // STC; FCMOVB ST(1) (taken)
    let st = St::new(0x037f, 0x0200, 0x03).with(1, x(0x4000, 1 << 63));
    let (cpu, _) = run_from(&st, &[0xf9, 0xda, 0xc1], &[]);
    assert_eq!(cpu.fpu.sw, 0x0200);
    assert_eq!(reg(&cpu, 0), Some((0x4000, 1 << 63)));
}

#[test]
fn unmasked_exception_clears_c1() {
    // FDIVRP ST(4), ST0 with a denormal ST0 = R3 and DE unmasked: no
    // result, the round-up C1 of the discarded quotient not reported
    let st = St::new(0x0848, 0x1b00, 0x88).with(3, x(0x8000, 0x298f_6e2b_d085_84a8));
    let (cpu, _) = run_from(&st, &[0xde, 0xf4], &[]);
    assert_eq!(cpu.fpu.sw, 0x9982);
    assert_eq!(top(&cpu), 3);
    assert_eq!(reg(&cpu, 7), Some((0x3fff, 1 << 63)));
}

#[test]
fn fld_sti_underflow_takes_precedence_over_overflow() {
    // TOP = 6, ST4 = R2 empty, ST7 = R5 in use
    let (cpu, _) = run_from(&St::new(0x037f, 0x7222, 0xeb), &[0xd9, 0xc4], &[]);
    assert_eq!(cpu.fpu.sw, 0x6863);
    assert_eq!(reg(&cpu, 5), Some((0xffff, 0xc000_0000_0000_0000)));
}

#[test]
fn fld_of_a_denormal_with_de_unmasked_still_pushes() {
    // FLD m32 [rbx] of 0x80080000, FCW 0x1754 (DE unmasked)
    let (cpu, _) = run_from(&St::new(0x1754, 0x0200, 0), &[0xd9, 0x03], &[0, 0, 8, 0x80]);
    assert_eq!(cpu.fpu.sw, 0xb882);
    assert_eq!(reg(&cpu, 7), Some((0xbf7d, 1 << 63)));
    // FLD m64 likewise
    let m = 1u64.to_le_bytes();
    let (cpu, _) = run_from(&St::new(0x1754, 0x0200, 0), &[0xdd, 0x03], &m);
    assert_eq!(cpu.fpu.sw, 0xb882);
    assert_eq!(reg(&cpu, 7), Some((0x3bcd, 1 << 63)));
    // an SNaN with IE unmasked is not pushed
    let m = 0x7fa0_0001u32.to_le_bytes();
    let (cpu, _) = run_from(&St::new(0x1754, 0x0200, 0), &[0xd9, 0x03], &m);
    assert_eq!(cpu.fpu.sw, 0x8081);
    assert_eq!(reg(&cpu, 7), None);
}

#[test]
fn fstp1_with_st0_empty_only_pops() {
    // D9 DF (FSTP1 ST(7)), TOP = 6, all empty: no stack fault
    let (cpu, _) = run_from(&St::new(0x037f, 0x3600, 0), &[0xd9, 0xdf], &[]);
    assert_eq!(cpu.fpu.sw, 0x3c00);
    assert_eq!(cpu.fpu.tw, 0xffff);
    // the DF D0+i alias faults like FSTP: the indefinite in ST(7) = R5
    let (cpu, _) = run_from(&St::new(0x037f, 0x3600, 0), &[0xdf, 0xd7], &[]);
    assert_eq!(cpu.fpu.sw, 0x3c41);
    assert_eq!(reg(&cpu, 5), Some((0xffff, 0xc000_0000_0000_0000)));
    // FSTP1 with ST0 in use: an ordinary FSTP
    let st = St::new(0x037f, 0x3600, 0x40).with(6, x(0x4000, 1 << 63));
    let (cpu, _) = run_from(&st, &[0xd9, 0xd9], &[]);
    assert_eq!(cpu.fpu.sw, 0x3c00);
    assert_eq!(reg(&cpu, 7), Some((0x4000, 1 << 63)));
}

#[test]
fn tiny_store_with_ue_unmasked_stores_nothing() {
    // FSTP m64 [rbx] of an exactly representable denormal, FCW 0x1166
    let st = St::new(0x1166, 0x7400, 0x40).with(6, x(0x3bfd, 0x91c0_00cc_4490_8000));
    let m = 0x8877_6655_4433_2211u64.to_le_bytes();
    let (cpu, bus) = run_from(&st, &[0xdd, 0x1b], &m);
    assert_eq!(cpu.fpu.sw, 0xf490);
    assert_eq!(bus.read(DATA, 8), 0x8877_6655_4433_2211);
    assert_eq!(top(&cpu), 6);
    // FST m32 likewise
    let st = St::new(0x1166, 0x7400, 0x40).with(6, x(0x3f70, 1 << 63));
    let (cpu, bus) = run_from(&st, &[0xd9, 0x13], &m[..4]);
    assert_eq!(cpu.fpu.sw, 0xf490);
    assert_eq!(bus.read(DATA, 4), 0x4433_2211);
    // masked: the exact denormal is stored, no flag
    let st = St::new(0x037f, 0x7400, 0x40).with(6, x(0x3f70, 1 << 63));
    let (cpu, bus) = run_from(&st, &[0xd9, 0x13], &m[..4]);
    assert_eq!(cpu.fpu.sw, 0x7400);
    assert_eq!(bus.read(DATA, 4), 0x0000_0040);
}

// ---------------------------------------------------------------------
// Differential test against the host: the same code bytes, run natively
// and through the interpreter, from the same ST(1) = a, ST(0) = b and a
// 16-byte memory operand at [RAX], under the same control word.

#[cfg(target_arch = "x86_64")]
mod host {
    use super::*;
    use core::arch::asm;

    type HostFn = fn(u16, &[u8; 10], &[u8; 10], &mut [u8; 16]) -> ([u8; 10], u16);

    macro_rules! host_op {
        ($bytes:literal) => {{
            fn op(cw: u16, a: &[u8; 10], b: &[u8; 10], mem: &mut [u8; 16]) -> ([u8; 10], u16) {
                let mut out = [0u8; 10];
                let mut sw = 0u16;
                let mut env = [0u8; 108];
                // SAFETY: saves and restores the host FPU state; touches only
                // the buffers passed in.
                unsafe {
                    asm!(
                        "fnsave [{env}]",
                        "fninit",
                        "fldcw [{cw}]",
                        "fld tbyte ptr [{a}]",
                        "fld tbyte ptr [{b}]",
                        concat!(".byte ", $bytes),
                        "fnstsw [{sw}]",
                        "fstp tbyte ptr [{out}]",
                        "frstor [{env}]",
                        env = in(reg) env.as_mut_ptr(),
                        cw = in(reg) &cw,
                        a = in(reg) a.as_ptr(),
                        b = in(reg) b.as_ptr(),
                        sw = in(reg) &mut sw,
                        out = in(reg) out.as_mut_ptr(),
                        in("rax") mem.as_mut_ptr(),
                        options(nostack),
                    );
                }
                (out, sw)
            }
            op as HostFn
        }};
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn value(&mut self) -> F80 {
            let r = self.next();
            let sign = r & 1 == 1;
            match (r >> 1) % 16 {
                0 => F80 { sign, ..F80::ZERO },
                1 => F80 {
                    sign,
                    ..F80::INFINITY
                },
                2 => F80 {
                    sign,
                    exp: 0x7fff,
                    mant: 0xc000_0000_0000_0000 | self.next() >> 2,
                },
                3 => F80 {
                    sign,
                    exp: 0,
                    mant: self.next() >> 1,
                },
                4 => f((self.next() % 2000) as f64 - 1000.0),
                _ => F80 {
                    sign,
                    exp: (0x3fff - 40 + self.next() % 80) as u16,
                    mant: self.next() | 1 << 63,
                },
            }
        }
    }

    const N: usize = 96;

    /// Runs `bytes` over the cases in the interpreter (64-bit mode): per
    /// case at DATA + 0x60 k: CW at 0, SW out at 2, a at 0x10, b at 0x20,
    /// the memory operand at 0x30, ST(0) out at 0x40.
    fn emulate(bytes: &[u8], cases: &[(u16, F80, F80, [u8; 16])]) -> TestBus {
        let mode = TestMode::Long64;
        let (_, bus) = ok(
            mode,
            |a| {
                a.mov(ecx, cases.len() as u32)?;
                let mut top_ = a.create_label();
                a.set_label(&mut top_)?;
                a.fninit()?;
                a.fldcw(word_ptr(rbx))?;
                a.fld(tword_ptr(rbx + 0x10))?;
                a.fld(tword_ptr(rbx + 0x20))?;
                a.lea(rax, ptr(rbx + 0x30))?;
                a.db(bytes)?;
                a.fnstsw(word_ptr(rbx + 2))?;
                a.fstp(tword_ptr(rbx + 0x40))?;
                a.add(rbx, 0x60)?;
                a.dec(ecx)?;
                a.jnz(top_)?;
                a.hlt()
            },
            |_, bus| {
                for (k, (cw, x, y, mem)) in cases.iter().enumerate() {
                    let p = DATA + 0x60 * k as u64;
                    bus.put(p, 2, *cw as u64);
                    bus.write(p + 0x10, &x.to_bytes());
                    bus.write(p + 0x20, &y.to_bytes());
                    bus.write(p + 0x30, mem);
                }
            },
        );
        bus
    }

    fn check(name: &str, bytes: &[u8], host: HostFn, seed: u64) {
        let mut r = Rng(seed | 1);
        let cws = [0x037fu16, 0x077f, 0x0b7f, 0x0f7f, 0x007f, 0x027f];
        let cases: Vec<(u16, F80, F80, [u8; 16])> = (0..N)
            .map(|k| {
                let mut mem = [0u8; 16];
                let v = r.value();
                match k % 3 {
                    0 => mem[..8].copy_from_slice(&to_f64(v, Rounding::Nearest).0.to_le_bytes()),
                    1 => mem[..4].copy_from_slice(&(r.next() as u32).to_le_bytes()),
                    _ => mem[..10].copy_from_slice(&v.to_bytes()),
                }
                (cws[k % cws.len()], r.value(), r.value(), mem)
            })
            .collect();
        let bus = emulate(bytes, &cases);
        for (k, (cw, x, y, mem)) in cases.iter().enumerate() {
            let mut hm = *mem;
            let (out, sw) = host(*cw, &x.to_bytes(), &y.to_bytes(), &mut hm);
            let p = DATA + 0x60 * k as u64;
            let eo: Vec<u8> = (0..10).map(|i| bus.read(p + 0x40 + i, 1) as u8).collect();
            let esw = bus.read(p + 2, 2) as u16;
            let em: Vec<u8> = (0..16).map(|i| bus.read(p + 0x30 + i, 1) as u8).collect();
            let ctx = format!("{name} cw {cw:#x} a {x:?} b {y:?} mem {mem:02x?}");
            assert_eq!(esw, sw, "status word: {ctx}");
            assert_eq!(eo, out, "ST(0): {ctx}");
            assert_eq!(em, hm, "memory: {ctx}");
        }
    }

    #[test]
    fn interpreter_matches_the_host() {
        let ops: &[(&str, &[u8], HostFn)] = &[
            ("faddp", &[0xde, 0xc1], host_op!("0xde, 0xc1")),
            ("fsubp", &[0xde, 0xe9], host_op!("0xde, 0xe9")),
            ("fsubrp", &[0xde, 0xe1], host_op!("0xde, 0xe1")),
            ("fmulp", &[0xde, 0xc9], host_op!("0xde, 0xc9")),
            ("fdivp", &[0xde, 0xf9], host_op!("0xde, 0xf9")),
            ("fdivrp", &[0xde, 0xf1], host_op!("0xde, 0xf1")),
            ("fsub st0,st1", &[0xd8, 0xe1], host_op!("0xd8, 0xe1")),
            ("fsubr st0,st1", &[0xd8, 0xe9], host_op!("0xd8, 0xe9")),
            ("fsub st1,st0", &[0xdc, 0xe9], host_op!("0xdc, 0xe9")),
            ("fdivr st1,st0", &[0xdc, 0xf1], host_op!("0xdc, 0xf1")),
            ("fadd m64", &[0xdc, 0x00], host_op!("0xdc, 0x00")),
            ("fsubr m64", &[0xdc, 0x28], host_op!("0xdc, 0x28")),
            ("fmul m32", &[0xd8, 0x08], host_op!("0xd8, 0x08")),
            ("fdiv m32", &[0xd8, 0x30], host_op!("0xd8, 0x30")),
            ("fidivr m32", &[0xda, 0x38], host_op!("0xda, 0x38")),
            ("fisub m16", &[0xde, 0x20], host_op!("0xde, 0x20")),
            ("fcom m64", &[0xdc, 0x10], host_op!("0xdc, 0x10")),
            ("ficomp m32", &[0xda, 0x18], host_op!("0xda, 0x18")),
            ("fcompp", &[0xde, 0xd9], host_op!("0xde, 0xd9")),
            ("fucom st1", &[0xdd, 0xe1], host_op!("0xdd, 0xe1")),
            ("fxam", &[0xd9, 0xe5], host_op!("0xd9, 0xe5")),
            ("ftst", &[0xd9, 0xe4], host_op!("0xd9, 0xe4")),
            ("fsqrt", &[0xd9, 0xfa], host_op!("0xd9, 0xfa")),
            ("frndint", &[0xd9, 0xfc], host_op!("0xd9, 0xfc")),
            ("fscale", &[0xd9, 0xfd], host_op!("0xd9, 0xfd")),
            ("fprem", &[0xd9, 0xf8], host_op!("0xd9, 0xf8")),
            ("fprem1", &[0xd9, 0xf5], host_op!("0xd9, 0xf5")),
            ("fxtract", &[0xd9, 0xf4], host_op!("0xd9, 0xf4")),
            ("fxch", &[0xd9, 0xc9], host_op!("0xd9, 0xc9")),
            ("fld m32", &[0xd9, 0x00], host_op!("0xd9, 0x00")),
            ("fld m64", &[0xdd, 0x00], host_op!("0xdd, 0x00")),
            ("fld m80", &[0xdb, 0x28], host_op!("0xdb, 0x28")),
            ("fst m32", &[0xd9, 0x10], host_op!("0xd9, 0x10")),
            ("fstp m64", &[0xdd, 0x18], host_op!("0xdd, 0x18")),
            ("fstp m80", &[0xdb, 0x38], host_op!("0xdb, 0x38")),
            ("fist m16", &[0xdf, 0x10], host_op!("0xdf, 0x10")),
            ("fistp m32", &[0xdb, 0x18], host_op!("0xdb, 0x18")),
            ("fistp m64", &[0xdf, 0x38], host_op!("0xdf, 0x38")),
            ("fbstp", &[0xdf, 0x30], host_op!("0xdf, 0x30")),
            ("fbld", &[0xdf, 0x20], host_op!("0xdf, 0x20")),
            ("fild m16", &[0xdf, 0x00], host_op!("0xdf, 0x00")),
            ("fst st2", &[0xdd, 0xd2], host_op!("0xdd, 0xd2")),
            ("fstp st1", &[0xdd, 0xd9], host_op!("0xdd, 0xd9")),
            ("fabs", &[0xd9, 0xe1], host_op!("0xd9, 0xe1")),
            ("fchs", &[0xd9, 0xe0], host_op!("0xd9, 0xe0")),
            ("ffree st0", &[0xdd, 0xc0], host_op!("0xdd, 0xc0")),
        ];
        for (i, (name, bytes, host)) in ops.iter().enumerate() {
            check(name, bytes, *host, 0x9e37_79b9 * (i as u64 + 1));
        }
    }
}

/// Random x87 and save/restore encodings over random register contents
/// (unsupported encodings, pseudo-denormals, random tags and control
/// words) in every mode: nothing may panic (debug builds check overflow),
/// and every run ends halted (normally or in a fault handler).
#[test]
fn random_x87_sequences_do_not_panic() {
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let mut total = 0;
    let mut faults = std::collections::BTreeMap::new();
    for mode in MODES {
        for _ in 0..300 {
            let mut code = Vec::new();
            let bits = match mode {
                TestMode::Real => 16,
                TestMode::Protected32 => 32,
                TestMode::Long64 => 64,
            };
            while code.len() < 60 {
                let k = r.next();
                let bytes: Vec<u8> = match k % 16 {
                    0 => vec![0x0f, 0xae, [0x03, 0x0b, 0x23, 0x2b][(k >> 8) as usize % 4]],
                    1 => vec![0x0f, 0x01, 0xd0 + (k >> 8) as u8 % 2],
                    2 => vec![0x9b],
                    _ => {
                        // register forms, or [ebx]/[bx+di] memory forms
                        let modrm = (k >> 16) as u8;
                        let rm = if mode == TestMode::Real { 1 } else { 3 };
                        let modrm = if modrm & 0xc0 == 0xc0 {
                            modrm
                        } else {
                            (modrm & 0x38) | rm
                        };
                        vec![0xd8 + (k >> 8) as u8 % 8, modrm]
                    }
                };
                let insn =
                    iced_x86::Decoder::new(bits, &bytes, iced_x86::DecoderOptions::NONE).decode();
                if insn.is_invalid() || insn.mnemonic() == Mnemonic::Fisttp {
                    continue;
                }
                code.extend_from_slice(&bytes);
            }
            code.push(0xf4);
            let seed = r.next();
            let (cpu, bus, exit) = crate::testutil::run(mode, &code, 10_000, |cpu, bus| {
                install_fault_handlers(cpu, bus);
                let mut q = Rng(seed | 1);
                cpu.gpr[reg::RBX] = data(mode);
                cpu.gpr[reg::RDI] = 0x100;
                cpu.gpr[reg::RAX] = q.next() & 7;
                cpu.gpr[reg::RDX] = 0;
                cpu.cr4 |= cr::CR4_OSFXSR | cr::CR4_OSXSAVE;
                cpu.cr0 |= cr::CR0_NE;
                let fpu = &mut cpu.fpu;
                fpu.cw = (q.next() as u16 & 0x0f3f)
                    | 0x40
                    | if q.next().is_multiple_of(8) { 0 } else { 0x3f };
                fpu.tw = q.next() as u16;
                fpu.set_top(q.next() as usize);
                for reg in fpu.regs.iter_mut() {
                    let x = q.next();
                    *reg = F80 {
                        sign: x & 1 == 1,
                        exp: match x % 5 {
                            0 => 0,
                            1 => 0x7fff,
                            _ => (0x3fff - 70 + (x >> 8) % 140) as u16,
                        },
                        mant: q.next() >> ((x >> 20) % 2),
                    };
                }
                let d = data(mode);
                for i in 0..0x120 {
                    bus.put(d + 8 * i, 8, q.next());
                }
                // a clean XSAVE header most of the time
                if q.next().is_multiple_of(2) {
                    bus.write(d + 512, &[0; 64]);
                    bus.put(d + 24, 4, 0x1f80);
                }
            });
            assert_eq!(exit, RunExit::Halted, "{mode:?} {code:02x?}");
            total += cpu.icount;
            if let Some(f) = fault_of(&cpu, &bus) {
                *faults.entry(f.0).or_insert(0) += 1;
            }
        }
    }
    eprintln!("executed {total}; faults {faults:?}");
}
