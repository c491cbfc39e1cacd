//! Port I/O: IN and OUT (immediate-port and DX forms; 8, 16 and 32 bits)
//! and the I/O permission check `Ctx::check_io` that INS/OUTS share: in
//! protected mode with CPL > IOPL, and always in virtual-8086 mode, every
//! byte of the access must be allowed by the I/O permission bitmap of the
//! current 32/64-bit TSS.

use iced_x86::{Code, Instruction};

use crate::block::Handler;
use crate::fault::{Fault, Result};
use crate::interp::Ctx;
use crate::state::{reg, Mode};

/// The handler for `insn` if this group implements it.
pub(super) fn handler(insn: &Instruction) -> Option<Handler> {
    use Code::*;
    Some(match insn.code() {
        In_AL_imm8 | In_AX_imm8 | In_EAX_imm8 | In_AL_DX | In_AX_DX | In_EAX_DX => in_,
        Out_imm8_AL | Out_imm8_AX | Out_imm8_EAX | Out_DX_AL | Out_DX_AX | Out_DX_EAX => out,
        _ => return None,
    })
}

impl Ctx<'_> {
    /// Checks that the current code may access `size` bytes at `port`
    /// (#GP(0) otherwise).
    pub(crate) fn check_io(&mut self, port: u16, size: u8) -> Result<()> {
        let cpu = &*self.cpu;
        let needs_bitmap = match cpu.mode {
            Mode::Real => false,
            Mode::Virtual8086 => true,
            _ => cpu.cpl > cpu.iopl(),
        };
        if !needs_bitmap {
            return Ok(());
        }
        let tr = cpu.tr;
        // Only a 32-bit or 64-bit TSS (available or busy) has a bitmap, and
        // it must be large enough to hold the bitmap base.
        if !matches!(tr.sys_type(), 9 | 11) || tr.limit < 0x67 {
            return Err(Fault::gp(0));
        }
        let bitmap = self.read_lin_sys(tr.base.wrapping_add(0x66), 2)?;
        // The processor always reads two bytes of the bitmap.
        let off = bitmap + (port as u64 >> 3);
        if off + 1 > tr.limit as u64 {
            return Err(Fault::gp(0));
        }
        let bits = self.read_lin_sys(tr.base.wrapping_add(off), 2)?;
        let mask = ((1u64 << size) - 1) << (port & 7);
        if bits & mask != 0 {
            return Err(Fault::gp(0));
        }
        Ok(())
    }
}

/// Port and access size of an IN/OUT.
#[inline]
fn port_and_size(ctx: &Ctx, insn: &Instruction) -> (u16, u8) {
    use Code::*;
    let port = match insn.code() {
        In_AL_imm8 | In_AX_imm8 | In_EAX_imm8 | Out_imm8_AL | Out_imm8_AX | Out_imm8_EAX => {
            insn.immediate8() as u16
        }
        _ => ctx.cpu.gpr[reg::RDX] as u16,
    };
    let size = match insn.code() {
        In_AL_imm8 | In_AL_DX | Out_imm8_AL | Out_DX_AL => 1,
        In_AX_imm8 | In_AX_DX | Out_imm8_AX | Out_DX_AX => 2,
        _ => 4,
    };
    (port, size)
}

fn in_(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let (port, size) = port_and_size(ctx, insn);
    ctx.check_io(port, size)?;
    let v = ctx.bus.io_read(port, size, ctx.cpu.icount) as u64;
    let rax = &mut ctx.cpu.gpr[reg::RAX];
    *rax = match size {
        1 => (*rax & !0xff) | (v & 0xff),
        2 => (*rax & !0xffff) | (v & 0xffff),
        // A 32-bit result zero-extends into RAX.
        _ => v & 0xffff_ffff,
    };
    ctx.cpu.exit_request = true;
    ctx.cpu.end_block = true;
    Ok(())
}

fn out(ctx: &mut Ctx, insn: &Instruction) -> Result<()> {
    let (port, size) = port_and_size(ctx, insn);
    ctx.check_io(port, size)?;
    let v = ctx.cpu.gpr[reg::RAX] & crate::flags::mask(size);
    ctx.bus.io_write(port, size, v as u32, ctx.cpu.icount);
    ctx.cpu.exit_request = true;
    ctx.cpu.end_block = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::interp::RunExit;
    use crate::state::reg;
    use crate::testutil::{run_asm, TestMode};
    use iced_x86::code_asm::*;

    #[test]
    fn in_out_every_size_and_mode() {
        for mode in [TestMode::Real, TestMode::Protected32, TestMode::Long64] {
            let (cpu, bus, exit) = run_asm(
                mode,
                |a| {
                    a.mov(eax, 0x1234_5678u32)?;
                    a.out(0x80, al)?;
                    a.mov(dx, 0x3f8u32)?;
                    a.out(dx, ax)?;
                    a.out(dx, eax)?;
                    a.mov(ebx, 0xffff_ffffu32)?;
                    a.mov(eax, ebx)?;
                    a.in_(al, 0x60)?;
                    a.mov(ecx, eax)?;
                    a.mov(eax, ebx)?;
                    a.in_(ax, dx)?;
                    a.mov(esi, eax)?;
                    a.in_(eax, dx)?;
                    a.hlt()
                },
                |_, bus| {
                    bus.port_in.insert(0x60, 0xab);
                    bus.port_in.insert(0x3f8, 0xcafe_f00d);
                },
            );
            assert_eq!(exit, RunExit::Halted, "{mode:?}");
            assert_eq!(
                bus.port_out,
                vec![(0x80, 1, 0x78), (0x3f8, 2, 0x5678), (0x3f8, 4, 0x1234_5678)]
            );
            assert_eq!(cpu.gpr[reg::RCX] & 0xffff_ffff, 0xffff_ffab);
            assert_eq!(cpu.gpr[reg::RSI] & 0xffff_ffff, 0xffff_f00d);
            assert_eq!(cpu.gpr[reg::RAX], 0xcafe_f00d);
        }
    }

    use crate::fault::vector;
    use crate::flags;
    use crate::interp::descriptor::testkit::*;
    use crate::state::Cpu;
    use crate::testutil::TestBus;

    /// Runs user-mode I/O with a TSS bitmap at 0x3068 that denies port 0x61;
    /// returns the vector taken (0xff for none) and the error code.
    fn user_io(
        build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
        setup: impl FnOnce(&mut Cpu, &mut TestBus),
    ) -> (u8, u64, TestBus) {
        let (cpu, bus, exit) = run_asm(
            TestMode::Protected32,
            |a| {
                a.mov(ebx, 0xffu32)?;
                build(a)?;
                a.int(0x81)
            },
            |cpu, bus| {
                install_handlers(cpu, bus);
                set_idt32(
                    bus,
                    0x81,
                    gate(crate::testutil::sel::CODE32, handler_addr(0x81), 0xee, 0),
                );
                bus.put(0x3066, 2, 0x68);
                bus.put(0x3068 + 0x61 / 8, 1, 1 << (0x61 % 8));
                bus.put(0x3068 + 0x2000, 1, 0xff);
                cpu.tr.limit = 0x68 + 0x2000;
                to_user(cpu);
                setup(cpu, bus);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        let e = bus.read(cpu.gpr[reg::RSP] & 0xffff_ffff, 4);
        (cpu.gpr[reg::RBX] as u8, e, bus)
    }

    #[test]
    fn io_permission_bitmap() {
        // Allowed ports pass; the machine sees the accesses.
        let (v, _, bus) = user_io(
            |a| {
                a.in_(al, 0x60)?;
                a.out(0x80, al)?;
                a.mov(dx, 0x62u32)?;
                a.in_(eax, dx)
            },
            |_, _| {},
        );
        assert_eq!(v, 0x81);
        assert_eq!(bus.port_out, vec![(0x80, 1, 0xff)]);
        // Any denied byte of the access faults.
        let (v, e, bus) = user_io(
            |a| {
                a.in_(al, 0x61)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!((v, e), (vector::GP, 0));
        assert!(bus.port_out.is_empty());
        let (v, _, _) = user_io(
            |a| {
                a.in_(ax, 0x60)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(v, vector::GP);
        let (v, _, _) = user_io(
            |a| {
                a.mov(dx, 0x5eu32)?;
                a.out(dx, eax)?;
                a.hlt()
            },
            |_, _| {},
        );
        assert_eq!(v, vector::GP, "0x5e..0x61");
        // Beyond the TSS limit.
        let (v, _, _) = user_io(
            |a| {
                a.in_(al, 0x80)?;
                a.hlt()
            },
            |cpu, _| cpu.tr.limit = 0x68 + 8,
        );
        assert_eq!(v, vector::GP);
        // IOPL 3 skips the bitmap.
        let (v, _, _) = user_io(|a| a.in_(al, 0x61), |cpu, _| cpu.rflags |= flags::IOPL);
        assert_eq!(v, 0x81);
        // A 16-bit TSS has no bitmap.
        let (v, _, _) = user_io(
            |a| {
                a.in_(al, 0x60)?;
                a.hlt()
            },
            |cpu, bus| {
                cpu.tr.attr = (cpu.tr.attr & !0xf) | 3;
                // 16-bit TSS: SP0 at 2, SS0 at 4.
                bus.put(0x3002, 2, 0x7000);
                bus.put(0x3004, 2, crate::testutil::sel::DATA32 as u64);
            },
        );
        assert_eq!(v, vector::GP);
    }

    #[test]
    fn v86_io_always_uses_the_bitmap() {
        let v86 = crate::interp::descriptor::testkit::asm_at(16, 0, |a| {
            a.in_(al, 0x60)?;
            a.in_(al, 0x61)
        });
        let (cpu, bus, exit) = run_asm(
            TestMode::Protected32,
            |a| {
                for v in [0u32, 0, 0, 0, 0x6000, 0x1000, 0x2_3002, 0x5000, 0] {
                    a.push(v)?;
                }
                a.iretd()
            },
            |cpu, bus| {
                install_handlers(cpu, bus);
                bus.put(0x3066, 2, 0x68);
                bus.put(0x3068 + 0x61 / 8, 1, 1 << (0x61 % 8));
                bus.put(0x3068 + 0x2000, 1, 0xff);
                cpu.tr.limit = 0x68 + 0x2000;
                bus.write(0x5_0000, &v86);
            },
        );
        assert_eq!(exit, RunExit::Halted);
        assert_eq!(
            cpu.gpr[reg::RBX],
            vector::GP as u64,
            "IOPL 3 does not bypass the bitmap in V86 mode"
        );
        assert_eq!(
            bus.read((cpu.gpr[reg::RSP] & 0xffff_ffff) + 4, 4),
            2,
            "faulting IP"
        );
    }
}
