//! Multiplication and division: MUL, IMUL (one-, two- and three-operand
//! forms), DIV and IDIV.
//!
//! DIV/IDIV raise #DE on a zero divisor and when the quotient does not fit
//! (including IDIV of the most negative dividend by -1); nothing changes then.
//!
//! Undefined flags follow this host (an Intel core), as checked by the
//! differential tester (`--strict`): after MUL/IMUL, SF and PF come from the
//! low half of the product (the destination for the two- and three-operand
//! forms), ZF and AF are cleared; DIV/IDIV leave every flag unchanged.

use iced_x86::{Instruction, Mnemonic, OpKind};

use crate::block::Handler;
use crate::fault::{Fault, Result};
use crate::flags::{self, sign_extend, AF, CF, OF, STATUS, ZF};
use crate::interp::operand::{read_reg, write_reg};
use crate::interp::Ctx;
use crate::state::reg;

/// The handler for `insn` if this group implements it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    let h: Handler = match insn.mnemonic() {
        Mnemonic::Mul => mul::<false>,
        Mnemonic::Imul => match insn.op_count() {
            1 => mul::<true>,
            _ => imul_n,
        },
        Mnemonic::Div => div::<false>,
        Mnemonic::Idiv => div::<true>,
        _ => return None,
    };
    Some(super::alu::lock_checked(insn, h))
}

/// Flags after a multiplication whose low half (`size` bytes) is `lo`:
/// CF=OF=`overflow`, SF/PF from `lo`, ZF and AF cleared (as this host does).
#[inline(always)]
fn mul_flags(rflags: u64, lo: u64, size: u8, overflow: bool) -> u64 {
    let mut f = flags::szp(lo, size) & !(AF | ZF);
    if overflow {
        f |= CF | OF;
    }
    (rflags & !STATUS) | f
}

/// Reads operand `i` of `size` bytes (register fast path).
#[inline(always)]
fn src(ctx: &mut Ctx, insn: &Instruction, i: u32, size: u8) -> Result<u64> {
    if insn.op_kind(i) == OpKind::Register {
        Ok(read_reg(ctx.cpu, insn.op_register(i)))
    } else {
        ctx.read_op(insn, i, size)
    }
}

/// Writes the double-width result `hi:lo` to AX / DX:AX / EDX:EAX / RDX:RAX.
#[inline(always)]
fn write_pair(ctx: &mut Ctx, size: u8, lo: u64, hi: u64) {
    let m = flags::mask(size);
    let g = &mut ctx.cpu.gpr;
    match size {
        1 => g[reg::RAX] = (g[reg::RAX] & !0xffff) | (lo & 0xff) | ((hi & 0xff) << 8),
        2 => {
            g[reg::RAX] = (g[reg::RAX] & !0xffff) | (lo & m);
            g[reg::RDX] = (g[reg::RDX] & !0xffff) | (hi & m);
        }
        4 => {
            g[reg::RAX] = lo & m;
            g[reg::RDX] = hi & m;
        }
        _ => {
            g[reg::RAX] = lo;
            g[reg::RDX] = hi;
        }
    }
}

/// One-operand MUL/IMUL: accumulator × r/m into the double-width pair.
fn mul<const SIGNED: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let size = ctx.op_size(insn, 0);
    let b = src(ctx, insn, 0, size)?;
    let a = ctx.cpu.gpr[reg::RAX] & flags::mask(size);
    let bits = size as u32 * 8;
    let (lo, hi, overflow) = if SIGNED {
        let p =
            (sign_extend(a, size) as i64 as i128).wrapping_mul(sign_extend(b, size) as i64 as i128);
        let lo = p as u64 & flags::mask(size);
        // Overflow: the product does not fit in the low half (sign-extended).
        let overflow = sign_extend(lo, size) as i64 as i128 != p;
        (lo, (p >> bits) as u64, overflow)
    } else {
        let p = (a as u128) * (b as u128);
        let lo = p as u64 & flags::mask(size);
        let hi = (p >> bits) as u64 & flags::mask(size);
        (lo, hi, hi != 0)
    };
    write_pair(ctx, size, lo, hi);
    ctx.cpu.rflags = mul_flags(ctx.cpu.rflags, lo, size, overflow);
    Ok(())
}

/// Two- and three-operand IMUL: r = r/m × (r | imm), truncated.
fn imul_n(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let r0 = insn.op0_register();
    let size = crate::interp::operand::reg_size(r0);
    let (a, b) = if insn.op_count() == 3 {
        (src(ctx, insn, 1, size)?, insn.immediate(2))
    } else {
        (read_reg(ctx.cpu, r0), src(ctx, insn, 1, size)?)
    };
    let p = (sign_extend(a, size) as i64 as i128).wrapping_mul(sign_extend(b, size) as i64 as i128);
    let lo = p as u64 & flags::mask(size);
    let overflow = sign_extend(lo, size) as i64 as i128 != p;
    write_reg(ctx.cpu, r0, lo);
    ctx.cpu.rflags = mul_flags(ctx.cpu.rflags, lo, size, overflow);
    Ok(())
}

/// DIV/IDIV: the double-width pair divided by r/m; quotient to the low half,
/// remainder to the high half. Flags are left unchanged.
fn div<const SIGNED: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let size = ctx.op_size(insn, 0);
    let m = flags::mask(size);
    let d = src(ctx, insn, 0, size)? & m;
    if d == 0 {
        return Err(Fault::de());
    }
    let g = &ctx.cpu.gpr;
    let bits = size as u32 * 8;
    let (lo, hi) = if size == 1 {
        (g[reg::RAX] & 0xff, (g[reg::RAX] >> 8) & 0xff)
    } else {
        (g[reg::RAX] & m, g[reg::RDX] & m)
    };
    let n = ((hi as u128) << bits) | lo as u128;
    let (q, r) = if SIGNED {
        // Sign-extend the 2*bits-wide dividend.
        let shift = 128 - 2 * bits;
        let n = ((n << shift) as i128) >> shift;
        let dv = sign_extend(d, size) as i64 as i128;
        // Only i128::MIN / -1 overflows (a 64-bit IDIV of -2^127 by -1): #DE too.
        let Some(q) = n.checked_div(dv) else {
            return Err(Fault::de());
        };
        let r = n.wrapping_rem(dv);
        let max = (1i128 << (bits - 1)) - 1;
        if q > max || q < -max - 1 {
            return Err(Fault::de());
        }
        (q as u64 & m, r as u64 & m)
    } else {
        let q = n / d as u128;
        if q > m as u128 {
            return Err(Fault::de());
        }
        (q as u64, (n % d as u128) as u64)
    };
    write_pair(ctx, size, q, r);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::fault::{vector, Fault};
    use crate::flags::{CF, OF};
    use crate::interp::RunExit;
    use crate::testutil::{run_asm, TestMode, DATA};
    use iced_x86::code_asm::*;

    fn run64(
        f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
    ) -> (crate::state::Cpu, crate::testutil::TestBus) {
        let (cpu, bus, exit) = run_asm(TestMode::Long64, f, |_, _| {});
        assert_eq!(exit, RunExit::Halted);
        (cpu, bus)
    }

    #[test]
    fn mul_all_sizes() {
        let (cpu, _) = run64(|a| {
            a.mov(eax, 0x80u32)?;
            a.mov(ecx, 4u32)?;
            a.mul(cl)?; // ax = 0x200, CF=OF=1
            a.hlt()
        });
        assert_eq!(cpu.gpr[0], 0x200);
        assert_eq!(cpu.rflags & (CF | OF), CF | OF);
        let (cpu, _) = run64(|a| {
            a.mov(rax, u64::MAX)?;
            a.mov(rdx, u64::MAX)?;
            a.mov(ebx, 0x10000u32)?;
            a.mul(bx)?; // 0xffff * 0 (bx = 0): dx:ax = 0
            a.mov(eax, 0xffff_ffffu32)?;
            a.mov(ecx, 2u32)?;
            a.mul(ecx)?; // edx:eax = 1:fffffffe
            a.hlt()
        });
        assert_eq!(cpu.gpr[0], 0xffff_fffe);
        assert_eq!(cpu.gpr[2], 1);
        let (cpu, _) = run64(|a| {
            a.mov(rax, u64::MAX)?;
            a.mov(rdi, DATA)?;
            a.mov(qword_ptr(rdi), 3)?;
            a.mul(qword_ptr(rdi))?;
            a.hlt()
        });
        assert_eq!(cpu.gpr[0], u64::MAX - 2);
        assert_eq!(cpu.gpr[2], 2);
    }

    #[test]
    fn imul_forms() {
        let (cpu, _) = run64(|a| {
            a.mov(eax, 0xffu32)?; // al = -1
            a.mov(ecx, 0x80u32)?; // cl = -128
            a.imul(cl)?; // 128 = 0x0080: overflow
            a.hlt()
        });
        assert_eq!(cpu.gpr[0], 0x80);
        assert_eq!(cpu.rflags & (CF | OF), CF | OF);
        let (cpu, _) = run64(|a| {
            a.mov(rbx, -3i64 as u64)?;
            a.mov(rcx, 7u64)?;
            a.imul_2(rbx, rcx)?; // -21
            a.imul_3(edx, ecx, -2)?; // -14
            a.imul_3(si, cx, 0x7000)?; // overflow
            a.hlt()
        });
        assert_eq!(cpu.gpr[3], -21i64 as u64);
        assert_eq!(cpu.gpr[2], (-14i32) as u32 as u64);
        assert_eq!(cpu.gpr[6] & 0xffff, (7u32 * 0x7000) as u16 as u64);
        assert_eq!(cpu.rflags & (CF | OF), CF | OF);
    }

    #[test]
    fn div_idiv() {
        let (cpu, _) = run64(|a| {
            a.mov(eax, 1000u32)?;
            a.mov(ecx, 7u32)?;
            a.div(cl)?; // 142 r 6
            a.mov(ebx, eax)?;
            a.mov(rax, -1000i64 as u64)?;
            a.cqo()?;
            a.mov(rsi, 7u64)?;
            a.idiv(rsi)?; // -142 r -6
            a.hlt()
        });
        assert_eq!(cpu.gpr[3], (6 << 8) | 142);
        assert_eq!(cpu.gpr[0], -142i64 as u64);
        assert_eq!(cpu.gpr[2], -6i64 as u64);
    }

    fn run_one(
        f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
        setup: impl FnOnce(&mut crate::state::Cpu),
    ) -> (crate::state::Cpu, crate::fault::Result<()>) {
        use crate::interp::Ctx;
        use iced_x86::{Decoder, DecoderOptions};
        let code = crate::testutil::assemble(TestMode::Long64, f);
        let mut bus = crate::testutil::TestBus::new();
        crate::testutil::install_tables(&mut bus);
        let mut cpu = crate::testutil::cpu_in(TestMode::Long64);
        setup(&mut cpu);
        let mut cache = crate::block::CodeCache::new();
        let insn =
            Decoder::with_ip(64, &code, crate::testutil::CODE, DecoderOptions::NONE).decode();
        let h = crate::interp::dispatch::handler_for(&insn);
        let r = h(&mut Ctx::new(&mut cpu, &mut bus, &mut cache), &insn);
        (cpu, r)
    }

    #[test]
    fn divide_errors() {
        let de = Err(Fault::Exception {
            vector: vector::DE,
            error_code: None,
        });
        // Divide by zero.
        let (cpu, r) = run_one(
            |a| a.div(ecx),
            |c| {
                c.gpr[0] = 5;
                c.gpr[1] = 0;
            },
        );
        assert_eq!(r, de);
        assert_eq!(cpu.gpr[0], 5);
        // Quotient overflow.
        let (_, r) = run_one(
            |a| a.div(cl),
            |c| {
                c.gpr[0] = 0x1000;
                c.gpr[1] = 2;
            },
        );
        assert_eq!(r, de);
        // Most negative by -1.
        let (_, r) = run_one(
            |a| a.idiv(rcx),
            |c| {
                c.gpr[0] = 0;
                c.gpr[2] = 0x8000_0000_0000_0000;
                c.gpr[1] = u64::MAX;
            },
        );
        assert_eq!(r, de);
        let (_, r) = run_one(
            |a| a.idiv(cx),
            |c| {
                c.gpr[0] = 0x8000;
                c.gpr[2] = 0xffff;
                c.gpr[1] = 0xffff;
            },
        );
        assert_eq!(r, de);
        // -128 / -1 does not fit in 8 bits; -128 / 1 does.
        let (_, r) = run_one(
            |a| a.idiv(cl),
            |c| {
                c.gpr[0] = 0xff80;
                c.gpr[1] = 1;
            },
        );
        assert_eq!(r, Ok(()));
    }

    /// MUL/IMUL: SF/PF from the low half, ZF and AF cleared (this host).
    #[test]
    fn mul_undefined_flags_as_host() {
        use crate::flags::{AF, PF, SF, ZF};
        let (cpu, _, exit) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(eax, 0u32)?;
                a.mov(ecx, 5u32)?;
                a.mul(ecx)?;
                a.hlt()
            },
            |c, _| c.rflags |= ZF | AF | SF,
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.rflags & (ZF | AF | SF | PF | CF | OF), PF);
        let (cpu, _) = run64(|a| {
            a.mov(eax, 0x80u32)?;
            a.imul_3(eax, eax, 1)?;
            a.mov(bl, 0xc0u32)?;
            a.mov(al, 1u32)?;
            a.imul(bl)?; // ax = 0xffc0: SF from al (0xc0), no overflow
            a.hlt()
        });
        assert_eq!(cpu.gpr[0] & 0xffff, 0xffc0);
        assert_eq!(cpu.rflags & (ZF | AF | SF | PF | CF | OF), SF | PF);
    }
}
