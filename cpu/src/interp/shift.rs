//! Shifts and rotates: SHL/SAL, SHR, SAR, ROL, ROR, RCL, RCR (by 1, CL or an
//! immediate) and the double-precision shifts SHLD and SHRD.
//!
//! The count is masked to 5 bits (6 for 64-bit operands); a masked count of
//! zero changes no flags (32-bit register destinations are still written, so
//! their upper half is zeroed as on hardware). RCL/RCR rotate through CF, so
//! 8- and 16-bit counts act modulo 9 and 17.
//!
//! Undefined results and flags follow this host (an Intel core), measured
//! natively and checked by the differential tester
//! (`testsuite/src/bin/difftest.rs --strict`):
//! - OF, for every non-zero count, is the count-1 formula applied to the
//!   *original* operand (the OF of the first single-bit step): SHL/SAL, ROL,
//!   RCL, SHLD: MSB(d) xor MSB-1(d); SHR: MSB(d); SAR: 0; ROR: LSB(d) xor
//!   MSB(d); RCR: MSB(d) xor CF; SHRD: LSB(src) xor MSB(d).
//! - AF after a non-zero shift (SHL/SHR/SAR/SHLD/SHRD) is cleared; rotates
//!   leave SF/ZF/AF/PF alone.
//! - CF of SHL/SHR by more than the operand width (8/16-bit) is the last bit
//!   shifted out of the zero-extended value (so 0); SAR's is the sign.
//! - ROL/ROR of a *register* by an immediate count other than 1 leave OF
//!   unchanged; by CL, or with a memory destination, they compute it as
//!   above whatever the count.
//! - ROL/ROR by a non-zero multiple of the width still set CF (and OF as
//!   above) from the unchanged value; RCL/RCR whose count is a non-zero
//!   multiple of 9 (8-bit) or 17 (16-bit) change no flag at all.
//! - 16-bit SHLD/SHRD with a count above 16 shift the 48-bit value
//!   dest:src:dest (result and CF).

use iced_x86::{Instruction, Mnemonic, OpKind};

use crate::block::Handler;
use crate::fault::Result;
use crate::flags::{self, AF, CF, OF, STATUS};
use crate::interp::operand::{mem_operand, read_reg, reg_size, write_reg};
use crate::interp::Ctx;

/// The handler for `insn` if this group implements it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    let h: Handler = match insn.mnemonic() {
        Mnemonic::Shl | Mnemonic::Sal => shift::<SHL>,
        Mnemonic::Shr => shift::<SHR>,
        Mnemonic::Sar => shift::<SAR>,
        Mnemonic::Rol => shift::<ROL>,
        Mnemonic::Ror => shift::<ROR>,
        Mnemonic::Rcl => shift::<RCL>,
        Mnemonic::Rcr => shift::<RCR>,
        Mnemonic::Shld => double::<false>,
        Mnemonic::Shrd => double::<true>,
        _ => return None,
    };
    Some(super::alu::lock_checked(insn, h))
}

const SHL: u8 = 0;
const SHR: u8 = 1;
const SAR: u8 = 2;
const ROL: u8 = 3;
const ROR: u8 = 4;
const RCL: u8 = 5;
const RCR: u8 = 6;

/// The raw count operand (CL or an immediate, `1` forms included).
#[inline(always)]
fn raw_count(ctx: &Ctx, insn: &Instruction, i: u32) -> u64 {
    if insn.op_kind(i) == OpKind::Register {
        read_reg(ctx.cpu, insn.op_register(i)) & 0xff
    } else {
        insn.immediate(i) & 0xff
    }
}

/// Count mask: 5 bits, 6 for 64-bit operands.
#[inline(always)]
fn count_mask(size: u8) -> u64 {
    if size == 8 {
        0x3f
    } else {
        0x1f
    }
}

/// The top two bits of `r` differ (the count-1 OF of left shifts and rotates of `r`).
#[inline(always)]
fn top_two_differ(r: u64, size: u8) -> bool {
    let sb = flags::sign_bit(size);
    ((r & sb != 0) as u8 ^ (r & (sb >> 1) != 0) as u8) != 0
}

/// Computes result and new RFLAGS for operation `OP` of `a` (already
/// truncated to `size`) by the masked, non-zero count `c`. `imm` says the
/// count came from an immediate and the destination is a register (ROL/ROR
/// then keep OF unless the count is 1).
#[inline(always)]
fn compute<const OP: u8>(a: u64, c: u32, size: u8, rflags: u64, imm: bool) -> (u64, u64) {
    let bits = size as u32 * 8;
    let m = flags::mask(size);
    let msb = |r: u64| r & flags::sign_bit(size) != 0;
    match OP {
        SHL | SHR | SAR => {
            let (r, cf) = match OP {
                SHL => {
                    let r = if c < 64 { (a << c) & m } else { 0 };
                    let cf = c <= bits && (a >> (bits - c)) & 1 != 0;
                    (r, cf)
                }
                SHR => {
                    let r = if c < 64 { a >> c } else { 0 };
                    let cf = (a >> (c - 1).min(63)) & 1 != 0;
                    (r, cf)
                }
                _ => {
                    let sa = flags::sign_extend(a, size) as i64;
                    let r = (sa >> c.min(63)) as u64 & m;
                    let cf = (sa >> (c - 1).min(63)) & 1 != 0;
                    (r, cf)
                }
            };
            let of = match OP {
                SHL => top_two_differ(a, size),
                SHR => msb(a),
                _ => false,
            };
            let mut f = flags::szp(r, size);
            if cf {
                f |= CF;
            }
            if of {
                f |= OF;
            }
            (r, (rflags & !STATUS) | f)
        }
        ROL | ROR => {
            let t = c % bits;
            let r = if t == 0 {
                a
            } else if OP == ROL {
                ((a << t) | (a >> (bits - t))) & m
            } else {
                ((a >> t) | (a << (bits - t))) & m
            };
            let (cf, of) = if OP == ROL {
                (r & 1 != 0, top_two_differ(a, size))
            } else {
                (msb(r), (a & 1 != 0) != msb(a))
            };
            let mut f = rflags & !CF;
            if cf {
                f |= CF;
            }
            if !(imm && c != 1) {
                // By CL (or by 1) OF is recomputed; by another immediate this host keeps it.
                f = (f & !OF) | if of { OF } else { 0 };
            }
            (r, f)
        }
        _ => {
            // Rotate the (bits+1)-bit value CF:a.
            let width = bits + 1;
            let t = match size {
                1 => c % 9,
                2 => c % 17,
                _ => c,
            };
            if t == 0 {
                // A rotation by a multiple of 9/17: nothing changes, not even flags.
                return (a, rflags);
            }
            let v = ((rflags & CF) as u128) << bits | a as u128;
            let wm = (1u128 << width) - 1;
            let rv = if OP == RCL {
                ((v << t) | (v >> (width - t))) & wm
            } else {
                ((v >> t) | (v << (width - t))) & wm
            };
            let r = rv as u64 & m;
            let cf = (rv >> bits) & 1 != 0;
            let of = if OP == RCL {
                top_two_differ(a, size)
            } else {
                msb(a) != (rflags & CF != 0)
            };
            let mut f = rflags & !(CF | OF);
            if cf {
                f |= CF;
            }
            if of {
                f |= OF;
            }
            (r, f)
        }
    }
}

/// SHL/SAL/SHR/SAR/ROL/ROR/RCL/RCR r/m, 1|CL|imm8.
fn shift<const OP: u8>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    if insn.op0_kind() == OpKind::Register {
        let r0 = insn.op0_register();
        let size = reg_size(r0);
        let c = (raw_count(ctx, insn, 1) & count_mask(size)) as u32;
        let a = read_reg(ctx.cpu, r0);
        if c == 0 {
            // No flags change; a 32-bit destination is still written (zero-extended).
            write_reg(ctx.cpu, r0, a);
            return Ok(());
        }
        let imm = insn.op1_kind() != OpKind::Register;
        let (r, f) = compute::<OP>(a, c, size, ctx.cpu.rflags, imm);
        write_reg(ctx.cpu, r0, r);
        ctx.cpu.rflags = f;
        return Ok(());
    }
    let size = ctx.op_size(insn, 0);
    let c = (raw_count(ctx, insn, 1) & count_mask(size)) as u32;
    let (s, off) = mem_operand(ctx.cpu, insn);
    let lin = ctx.seg_addr(s, off, size, true)?;
    let a = ctx.read_lin(lin, size)?;
    if c == 0 {
        return Ok(());
    }
    // With a memory destination this host computes OF for immediate counts too.
    let (r, f) = compute::<OP>(a, c, size, ctx.cpu.rflags, false);
    ctx.write_lin(lin, size, r)?;
    ctx.cpu.rflags = f;
    Ok(())
}

/// Result and flags of SHLD (`RIGHT` false) / SHRD of `d` with bits from `s`
/// by the masked, non-zero count `c`.
#[inline(always)]
fn compute_double<const RIGHT: bool>(d: u64, s: u64, c: u32, size: u8, rflags: u64) -> (u64, u64) {
    let bits = size as u32 * 8;
    let m = flags::mask(size);
    let (r, cf) = if size == 2 {
        // dest:src:dest as one 48-bit value (counts above 16 keep shifting through it).
        let v = (d << 32) | (s << 16) | d;
        if RIGHT {
            ((v >> c) & m, (v >> (c - 1)) & 1 != 0)
        } else {
            let w = (v as u128) << c;
            ((w >> 32) as u64 & m, (w >> 48) & 1 != 0)
        }
    } else if RIGHT {
        let r = ((d >> c) | (s << (bits - c))) & m;
        (r, (d >> (c - 1)) & 1 != 0)
    } else {
        let r = ((d << c) | (s >> (bits - c))) & m;
        (r, (d >> (bits - c)) & 1 != 0)
    };
    let of = if RIGHT {
        (s & 1 != 0) != (d & flags::sign_bit(size) != 0)
    } else {
        top_two_differ(d, size)
    };
    let mut f = flags::szp(r, size);
    if cf {
        f |= CF;
    }
    if of {
        f |= OF;
    }
    f &= !AF;
    (r, (rflags & !STATUS) | f)
}

/// SHLD/SHRD r/m, r, CL|imm8.
fn double<const RIGHT: bool>(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let size = ctx.op_size(insn, 0);
    let c = (raw_count(ctx, insn, 2) & count_mask(size)) as u32;
    let s = read_reg(ctx.cpu, insn.op1_register());
    if insn.op0_kind() == OpKind::Register {
        let r0 = insn.op0_register();
        let d = read_reg(ctx.cpu, r0);
        if c == 0 {
            write_reg(ctx.cpu, r0, d);
            return Ok(());
        }
        let (r, f) = compute_double::<RIGHT>(d, s, c, size, ctx.cpu.rflags);
        write_reg(ctx.cpu, r0, r);
        ctx.cpu.rflags = f;
        return Ok(());
    }
    let (sg, off) = mem_operand(ctx.cpu, insn);
    let lin = ctx.seg_addr(sg, off, size, true)?;
    let d = ctx.read_lin(lin, size)?;
    if c == 0 {
        return Ok(());
    }
    let (r, f) = compute_double::<RIGHT>(d, s, c, size, ctx.cpu.rflags);
    ctx.write_lin(lin, size, r)?;
    ctx.cpu.rflags = f;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::flags::{AF, CF, OF, PF, SF, ZF};
    use crate::interp::RunExit;
    use crate::testutil::{run_asm, TestMode, DATA};
    use iced_x86::code_asm::*;

    const ST: u64 = CF | PF | AF | ZF | SF | OF;

    fn run64(
        f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
    ) -> (crate::state::Cpu, crate::testutil::TestBus) {
        let (cpu, bus, exit) = run_asm(TestMode::Long64, f, |_, _| {});
        assert_eq!(exit, RunExit::Halted);
        (cpu, bus)
    }

    #[test]
    fn shl_shr_sar_by_one_and_cl() {
        let (cpu, _) = run64(|a| {
            a.mov(eax, 0x81u32)?;
            a.shl(al, 1)?; // 0x02, CF=1, OF=1 (msb 0 xor cf 1)
            a.hlt()
        });
        assert_eq!(cpu.gpr[0], 0x02);
        assert_eq!(cpu.rflags & ST, CF | OF);
        let (cpu, _) = run64(|a| {
            a.mov(rax, 0x8000_0000_0000_0001u64)?;
            a.shr(rax, 1)?; // CF=1, OF=msb(orig)=1
            a.hlt()
        });
        assert_eq!(cpu.gpr[0], 0x4000_0000_0000_0000);
        assert_eq!(cpu.rflags & ST, CF | OF | PF);
        let (cpu, _) = run64(|a| {
            a.mov(ecx, 4u32)?;
            a.mov(edx, 0x8000u32)?;
            a.sar(dx, cl)?; // 0xf800
            a.hlt()
        });
        assert_eq!(cpu.gpr[2], 0xf800);
        assert_eq!(cpu.rflags & (CF | SF | ZF), SF);
    }

    #[test]
    fn count_masking_and_zero_count() {
        let (cpu, _) = run64(|a| {
            a.stc()?;
            a.mov(rbx, u64::MAX)?;
            a.mov(ecx, 32u32)?;
            a.shl(ebx, cl)?; // masked count 0: flags kept, upper half zeroed
            a.mov(rdx, 1u64)?;
            a.shl(rdx, 64 + 3)?; // count masked to 3
            a.hlt()
        });
        assert_eq!(cpu.gpr[3], 0xffff_ffff);
        assert_eq!(cpu.gpr[2], 8);
        let (cpu, _) = run64(|a| {
            a.mov(eax, 0xffu32)?;
            a.shl(al, 9)?; // beyond the width: 0, CF=0
            a.hlt()
        });
        assert_eq!(cpu.gpr[0], 0);
        assert_eq!(cpu.rflags & (CF | ZF), ZF);
    }

    #[test]
    fn rotates() {
        let (cpu, _) = run64(|a| {
            a.mov(eax, 0x81u32)?;
            a.rol(al, 1)?; // 0x03, CF=1
            a.mov(ebx, 0x1234u32)?;
            a.ror(bx, 4)?; // 0x4123
            a.hlt()
        });
        assert_eq!(cpu.gpr[0], 0x03);
        assert_eq!(cpu.gpr[3], 0x4123);
        assert_eq!(cpu.rflags & CF, 0);
        let (cpu, _) = run64(|a| {
            a.stc()?;
            a.mov(eax, 0x80u32)?;
            a.rcl(al, 1)?; // 0x01, CF=1
            a.mov(edx, 0x01u32)?;
            a.rcr(dl, 9)?; // mod 9 = 0: value unchanged
            a.mov(esi, 1u32)?;
            a.clc()?;
            a.rcr(esi, 1)?; // 0, CF = 1
            a.hlt()
        });
        assert_eq!(cpu.gpr[0], 0x01);
        assert_eq!(cpu.gpr[2], 0x01);
        assert_eq!(cpu.gpr[6], 0);
        assert_eq!(cpu.rflags & CF, CF);
    }

    #[test]
    fn shld_shrd() {
        let (cpu, bus) = run64(|a| {
            a.mov(eax, 0x1234_5678u32)?;
            a.mov(ebx, 0x9abc_def0u32)?;
            a.shld(eax, ebx, 8)?; // 0x3456789a
            a.mov(rdi, DATA)?;
            a.mov(word_ptr(rdi), 0x1234)?;
            a.mov(edx, 0xabcdu32)?;
            a.mov(ecx, 4u32)?;
            a.shrd(word_ptr(rdi), dx, cl)?; // 0xd123
            a.hlt()
        });
        assert_eq!(cpu.gpr[0], 0x3456_789a);
        assert_eq!(bus.read(DATA, 2), 0xd123);
        let (cpu, _) = run64(|a| {
            a.mov(rax, 0x8000_0000_0000_0000u64)?;
            a.mov(rdx, 0u64)?;
            a.shld(rax, rdx, 1)?; // 0, CF=1, OF=1
            a.hlt()
        });
        assert_eq!(cpu.gpr[0], 0);
        assert_eq!(cpu.rflags & (CF | OF | ZF), CF | OF | ZF);
    }

    #[test]
    fn shifts_in_real_and_protected_mode() {
        for mode in [TestMode::Real, TestMode::Protected32] {
            let (cpu, _, exit) = run_asm(
                mode,
                |a| {
                    a.mov(ax, 0x00f0u32)?;
                    a.mov(cl, 4u32)?;
                    a.shl(ax, cl)?;
                    a.sar(ax, 8)?;
                    a.hlt()
                },
                |_, _| {},
            );
            assert_eq!(exit, RunExit::Halted);
            assert_eq!(cpu.gpr[0] & 0xffff, 0x000f);
        }
    }

    /// Undefined OF as this host computes it (see the module comment).
    #[test]
    fn host_of_rules_for_counts_above_one() {
        // SHL by 3 of 0x4000_0000: OF = MSB(d) ^ MSB-1(d) = 1.
        let (cpu, _, _) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(eax, 0x4000_0000u32)?;
                a.shl(eax, 3)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(cpu.rflags & OF, OF);
        // ROL of a register by an immediate other than 1 keeps OF; by CL it computes it.
        for of_in in [0, OF] {
            let (cpu, _, _) = run_asm(
                TestMode::Long64,
                |a| {
                    a.mov(eax, 0x4000_0000u32)?;
                    a.rol(eax, 3)?;
                    a.hlt()
                },
                |c, _| c.rflags |= of_in,
            );
            assert_eq!(cpu.rflags & OF, of_in);
        }
        let (cpu, _, _) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(eax, 0x4000_0000u32)?;
                a.mov(cl, 3u32)?;
                a.rol(eax, cl)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(cpu.rflags & OF, OF);
        // ROR: OF = LSB(d) ^ MSB(d), also with a memory destination and an immediate count.
        let (cpu, _, _) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(rdi, DATA)?;
                a.mov(dword_ptr(rdi), 1u32)?;
                a.ror(dword_ptr(rdi), 5)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(cpu.rflags & OF, OF);
        // RCL by 9 (8-bit): a full turn, nothing changes.
        let (cpu, _, _) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(eax, 0x81u32)?;
                a.rcl(al, 9)?;
                a.hlt()
            },
            |c, _| c.rflags |= OF | CF,
        );
        assert_eq!(cpu.gpr[0], 0x81);
        assert_eq!(cpu.rflags & (OF | CF), OF | CF);
        // SHRD: OF = LSB(src) ^ MSB(dest).
        let (cpu, _, _) = run_asm(
            TestMode::Long64,
            |a| {
                a.mov(eax, 0u32)?;
                a.mov(edx, 1u32)?;
                a.shrd(eax, edx, 4)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(cpu.gpr[0], 0x1000_0000);
        assert_eq!(cpu.rflags & OF, OF);
    }
}
