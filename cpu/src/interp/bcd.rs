//! Decimal (BCD/ASCII) adjustments: AAA, AAS, AAM, AAD, DAA, DAS. They exist
//! only outside 64-bit mode (iced decodes them as invalid there → #UD).
//!
//! Results follow the SDM pseudo-code. Flags the SDM leaves undefined follow
//! this host (an Intel core), checked natively by running 32-bit code in
//! compatibility mode (`difftest --class bcd --strict`); they agree with the
//! P6-family behaviour Bochs documents except for AAD:
//! - AAA/AAS: AX += / -= 0x106 when adjusting (so AH carries/borrows), AL is
//!   masked to its low nibble; CF = AF = "adjusted"; SF, ZF, PF from AL; OF = 0.
//! - AAM: SF, ZF, PF from AL; OF = AF = CF = 0. AAM with imm8 = 0 is #DE.
//! - AAD: all six flags of the 8-bit addition AL + (AH * imm8 mod 256).
//! - DAA/DAS: CF and AF per the SDM; SF, ZF, PF from AL; OF = 0.

use iced_x86::{Instruction, Mnemonic};

use crate::block::Handler;
use crate::fault::{Fault, Result};
use crate::flags::{self, AF, CF, STATUS};
use crate::interp::Ctx;
use crate::state::reg;

/// The handler for `insn` if this group implements it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    let h: Handler = match insn.mnemonic() {
        Mnemonic::Aaa => aaa::<false>,
        Mnemonic::Aas => aaa::<true>,
        Mnemonic::Aam => aam,
        Mnemonic::Aad => aad,
        Mnemonic::Daa => daa::<false>,
        Mnemonic::Das => daa::<true>,
        _ => return None,
    };
    Some(super::alu::lock_checked(insn, h))
}

#[inline(always)]
fn ax(ctx: &Ctx) -> u64 {
    ctx.cpu.gpr[reg::RAX] & 0xffff
}

#[inline(always)]
fn set_ax(ctx: &mut Ctx, v: u64) {
    let g = &mut ctx.cpu.gpr[reg::RAX];
    *g = (*g & !0xffff) | (v & 0xffff);
}

#[inline(always)]
fn set_al(ctx: &mut Ctx, v: u64) {
    let g = &mut ctx.cpu.gpr[reg::RAX];
    *g = (*g & !0xff) | (v & 0xff);
}

/// Status flags from AL (SF, ZF, PF) plus `extra`; OF cleared.
#[inline(always)]
fn set_flags(ctx: &mut Ctx, al: u64, extra: u64) {
    ctx.cpu.rflags = (ctx.cpu.rflags & !STATUS) | flags::szp(al & 0xff, 1) | extra;
}

/// AAA (`SUB` false) / AAS: ASCII adjust after addition / subtraction.
fn aaa<const SUB: bool>(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    let v = ax(ctx);
    let adjust = v & 0x0f > 9 || ctx.cpu.rflags & AF != 0;
    let mut out = v;
    if adjust {
        out = if SUB {
            v.wrapping_sub(0x106)
        } else {
            v.wrapping_add(0x106)
        };
    }
    out &= 0xff0f;
    set_ax(ctx, out);
    set_flags(ctx, out, if adjust { AF | CF } else { 0 });
    Ok(())
}

/// AAM imm8: AH = AL / imm8, AL = AL % imm8 (#DE for imm8 = 0).
fn aam(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let base = insn.immediate8() as u64;
    if base == 0 {
        return Err(Fault::de());
    }
    let al = ctx.cpu.gpr[reg::RAX] & 0xff;
    let (q, r) = (al / base, al % base);
    set_ax(ctx, (q << 8) | r);
    set_flags(ctx, r, 0);
    Ok(())
}

/// AAD imm8: AL = AL + AH * imm8, AH = 0. The flags are those of the final
/// 8-bit addition AL + (AH * imm8 mod 256), OF, AF and CF included (this host).
fn aad(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let base = insn.immediate8() as u64;
    let v = ax(ctx);
    let (al, f) = flags::add(v & 0xff, ((v >> 8) * base) & 0xff, 0, 1);
    set_ax(ctx, al);
    ctx.cpu.rflags = (ctx.cpu.rflags & !STATUS) | f;
    Ok(())
}

/// DAA (`SUB` false) / DAS: decimal adjust AL after addition / subtraction.
fn daa<const SUB: bool>(ctx: &mut Ctx, _: &Instruction) -> Result<()> {
    let old_al = ctx.cpu.gpr[reg::RAX] & 0xff;
    let old_cf = ctx.cpu.rflags & CF != 0;
    let mut al = old_al;
    let mut cf = false;
    let mut af = false;
    if old_al & 0x0f > 9 || ctx.cpu.rflags & AF != 0 {
        if SUB {
            cf = old_cf || al < 6;
            al = al.wrapping_sub(6) & 0xff;
        } else {
            cf = old_cf || al > 0xf9;
            al = (al + 6) & 0xff;
        }
        af = true;
    }
    if old_al > 0x99 || old_cf {
        al = if SUB {
            al.wrapping_sub(0x60) & 0xff
        } else {
            (al + 0x60) & 0xff
        };
        cf = true;
    }
    set_al(ctx, al);
    let mut extra = 0;
    if cf {
        extra |= CF;
    }
    if af {
        extra |= AF;
    }
    set_flags(ctx, al, extra);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::flags::{AF, CF, OF, PF, SF, ZF};
    use crate::interp::RunExit;
    use crate::testutil::{run_asm, TestMode};
    use iced_x86::code_asm::*;

    const ST: u64 = CF | PF | AF | ZF | SF | OF;

    fn run32(
        f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
        flags_in: u64,
    ) -> crate::state::Cpu {
        let (cpu, _, exit) = run_asm(TestMode::Protected32, f, |c, _| c.rflags |= flags_in);
        assert_eq!(exit, RunExit::Halted);
        cpu
    }

    #[test]
    fn aaa_aas() {
        let cpu = run32(
            |a| {
                a.mov(ax, 0x0109u32)?;
                a.add(al, 0x05)?; // 0x0e, AF = 0
                a.aaa()?; // AX = 0x0204, CF = AF = 1
                a.hlt()
            },
            0,
        );
        assert_eq!(cpu.gpr[0] & 0xffff, 0x0204);
        assert_eq!(cpu.rflags & ST, CF | AF);
        let cpu = run32(
            |a| {
                a.mov(ax, 0x0203u32)?;
                a.sub(al, 0x05)?; // 0xfe, AF = 1
                a.aas()?; // AX = 0x0108
                a.hlt()
            },
            0,
        );
        assert_eq!(cpu.gpr[0] & 0xffff, 0x0108);
        assert_eq!(cpu.rflags & (CF | AF), CF | AF);
        let cpu = run32(
            |a| {
                a.mov(ax, 0x0005u32)?;
                a.aaa()?; // no adjust
                a.hlt()
            },
            AF | CF,
        );
        // AF was set on entry: adjust happens.
        assert_eq!(cpu.gpr[0] & 0xffff, 0x010b & 0xff0f);
    }

    #[test]
    fn aam_aad() {
        let cpu = run32(
            |a| {
                a.mov(ax, 0x003fu32)?; // 63
                a.aam(10)?; // AH=6, AL=3
                a.mov(ebx, eax)?;
                a.aad(10)?; // AL = 63, AH = 0
                a.hlt()
            },
            0,
        );
        assert_eq!(cpu.gpr[3] & 0xffff, 0x0603);
        assert_eq!(cpu.gpr[0] & 0xffff, 63);
        assert_eq!(cpu.rflags & ST, PF);
        let cpu = run32(
            |a| {
                a.mov(ax, 0x1234u32)?;
                a.aam(16)?;
                a.hlt()
            },
            ST,
        );
        assert_eq!(cpu.gpr[0] & 0xffff, 0x0304);
        assert_eq!(cpu.rflags & ST, 0);
        // AAD's flags are those of AL + AH*10: 0x09 + 0x5a carries out of bit 3.
        let cpu = run32(
            |a| {
                a.mov(ax, 0x0909u32)?;
                a.aad(10)?;
                a.hlt()
            },
            ST,
        );
        assert_eq!(cpu.gpr[0] & 0xffff, 99);
        assert_eq!(cpu.rflags & ST, AF | PF);
        let cpu = run32(
            |a| {
                a.mov(ax, 0x0ff0u32)?;
                a.aad(16)?; // 0xf0 + 0xf0: CF, SF
                a.hlt()
            },
            0,
        );
        assert_eq!(cpu.gpr[0] & 0xffff, 0xe0);
        assert_eq!(cpu.rflags & ST, CF | SF);
    }

    #[test]
    fn aam_zero_is_de() {
        use crate::fault::{vector, Fault};
        use crate::interp::Ctx;
        use iced_x86::{Decoder, DecoderOptions};
        let code = crate::testutil::assemble(TestMode::Protected32, |a| a.aam(0));
        let mut bus = crate::testutil::TestBus::new();
        let mut cpu = crate::testutil::cpu_in(TestMode::Protected32);
        let mut cache = crate::block::CodeCache::new();
        let insn = Decoder::with_ip(32, &code, 0, DecoderOptions::NONE).decode();
        let h = crate::interp::dispatch::handler_for(&insn);
        let r = h(&mut Ctx::new(&mut cpu, &mut bus, &mut cache), &insn);
        assert_eq!(
            r,
            Err(Fault::Exception {
                vector: vector::DE,
                error_code: None
            })
        );
    }

    #[test]
    fn daa_das() {
        let cpu = run32(
            |a| {
                a.mov(al, 0x79u32)?;
                a.add(al, 0x35)?; // 0xae
                a.daa()?; // 0x14, CF = 1 (79 + 35 = 114)
                a.hlt()
            },
            0,
        );
        assert_eq!(cpu.gpr[0] & 0xff, 0x14);
        assert_eq!(cpu.rflags & (CF | AF), CF | AF);
        let cpu = run32(
            |a| {
                a.mov(al, 0x35u32)?;
                a.sub(al, 0x47)?; // 0xee, CF = 1, AF = 1
                a.das()?; // 0x88, CF = 1 (35 - 47 = -12 → 88 borrow)
                a.hlt()
            },
            0,
        );
        assert_eq!(cpu.gpr[0] & 0xff, 0x88);
        assert_eq!(cpu.rflags & ST, CF | AF | SF | PF);
    }

    #[test]
    fn real_mode_and_invalid_in_64_bit() {
        let (cpu, _, exit) = run_asm(
            TestMode::Real,
            |a| {
                a.mov(al, 0x09u32)?;
                a.add(al, 0x09)?; // 0x12, AF
                a.daa()?; // 0x18
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(cpu.gpr[0] & 0xff, 0x18);
        // 0x37 (AAA) is invalid in 64-bit mode: #UD.
        use crate::fault::Fault;
        use crate::interp::Ctx;
        use iced_x86::{Decoder, DecoderOptions};
        let insn = Decoder::with_ip(64, &[0x37], 0, DecoderOptions::NONE).decode();
        let mut bus = crate::testutil::TestBus::new();
        let mut cpu = crate::testutil::cpu_in(TestMode::Long64);
        let mut cache = crate::block::CodeCache::new();
        let h = crate::interp::dispatch::handler_for(&insn);
        let r = h(&mut Ctx::new(&mut cpu, &mut bus, &mut cache), &insn);
        assert_eq!(r, Err(Fault::ud()));
    }
}
