//! Guest programs and the framework to write them.
//!
//! A guest is a flat image loaded at [`layout::LOAD_ADDR`] (0x1000) and
//! entered in 16-bit real mode at `0000:1000`, as a boot sector would be:
//! every guest walks through the processor modes itself, with the code in
//! [`rt`] (GDT, IDT, TSS, page tables, mode switches). Code is assembled in
//! Rust with iced-x86's `code_asm`; [`asm`] explains how code of different
//! bitness lives in one image.
//!
//! Output goes to COM1 (the library polls LSR bit 5 at 0x3FD before writing
//! each byte to 0x3F8). A guest ends by writing a byte `v` to the
//! isa-debug-exit port 0xF4; the machine reports exit status `(v << 1) | 1`
//! (QEMU's convention: a guest can never produce 0, so a harness can tell a
//! guest's verdict from an emulator failure).
//!
//! **Exit convention of the guests in this crate:** `v = 0` (status 1)
//! means success / all done; the selftest guests always write 0 when they
//! reach their end (the verdict is in their `PASS`/`FAIL` lines); a guest
//! that takes an exception nobody expected writes 0x7F (status 0xFF).
//! [`demo`] writes 0, so its status is 1, which the `hindsight` program
//! reports as success.

pub mod asm;
pub mod layout;
pub mod rt;

use hindsight_firmware::EntryMode;
use iced_x86::code_asm::*;

use asm::{Asm, Builder, Section, R};
use layout::*;
use rt::Gate;

/// A guest program ready to load.
#[derive(Clone, Debug)]
pub struct GuestImage {
    /// Short name (used in reports).
    pub name: &'static str,
    /// The flat image.
    pub bytes: Vec<u8>,
    /// Guest-physical load address of `bytes[0]`.
    pub load_addr: u64,
    /// How the boot CPU enters it.
    pub entry: EntryMode,
}

/// A built guest with the names of the checks it will report.
#[derive(Clone, Debug)]
pub struct BuiltGuest {
    /// The image.
    pub image: GuestImage,
    /// Names of its checks in order (announced as `PLAN n`).
    pub checks: Vec<String>,
}

/// A guest under construction: the standard runtime plus user chunks.
pub struct Guest {
    name: &'static str,
    b: Builder,
    gates32: Vec<Gate>,
    gates64: Vec<Gate>,
}

impl Guest {
    /// A guest whose real-mode entry runs the standard prologue (see
    /// [`rt::emit_prologue`]) and then `entry`.
    pub fn new(name: &'static str, entry: impl Fn(&mut Asm) -> R + 'static) -> Guest {
        let mut b = Builder::new(name, LOAD_ADDR);
        b.code_in(Section::Entry, "entry", 16, move |a| {
            rt::emit_prologue(a)?;
            entry(a)
        });
        rt::add_page_tables(&mut b);
        Guest {
            name,
            b,
            gates32: rt::default_gates(32),
            gates64: rt::default_gates(64),
        }
    }

    /// Adds a 16-bit code chunk (placed below 64 KiB).
    pub fn code16(&mut self, name: &str, f: impl Fn(&mut Asm) -> R + 'static) -> &mut Self {
        self.b.code(name, 16, f);
        self
    }

    /// Adds a 32-bit code chunk.
    pub fn code32(&mut self, name: &str, f: impl Fn(&mut Asm) -> R + 'static) -> &mut Self {
        self.b.code(name, 32, f);
        self
    }

    /// Adds a 64-bit code chunk.
    pub fn code64(&mut self, name: &str, f: impl Fn(&mut Asm) -> R + 'static) -> &mut Self {
        self.b.code(name, 64, f);
        self
    }

    /// Adds a data chunk.
    pub fn data(
        &mut self,
        name: &str,
        align: u64,
        f: impl Fn(&asm::Syms) -> Vec<u8> + 'static,
    ) -> &mut Self {
        self.b.data(name, align, f);
        self
    }

    /// Installs (or replaces) a gate in the 32-bit IDT.
    pub fn gate32(&mut self, g: Gate) -> &mut Self {
        self.gates32.retain(|x| x.vector != g.vector);
        self.gates32.push(g);
        self
    }

    /// Installs (or replaces) a gate in the 64-bit IDT.
    pub fn gate64(&mut self, g: Gate) -> &mut Self {
        self.gates64.retain(|x| x.vector != g.vector);
        self.gates64.push(g);
        self
    }

    /// Assembles the image.
    pub fn build(self) -> Result<BuiltGuest, String> {
        let Guest {
            name,
            mut b,
            gates32,
            gates64,
        } = self;
        rt::add_runtime(&mut b, gates32, gates64);
        let built = b.build()?;
        let end = built.syms.get("__end");
        if end > IMAGE_LIMIT {
            return Err(format!(
                "{name}: image ends at {end:#x}, past {IMAGE_LIMIT:#x}"
            ));
        }
        let low_end = built.syms.get("gdt");
        if low_end > 0x1_0000 {
            return Err(format!(
                "{name}: 16-bit code and strings end at {low_end:#x}, past 64 KiB"
            ));
        }
        Ok(BuiltGuest {
            image: GuestImage {
                name,
                bytes: built.bytes,
                load_addr: LOAD_ADDR,
                entry: EntryMode::Real16 {
                    cs: 0,
                    ip: LOAD_ADDR as u16,
                },
            },
            checks: built.checks,
        })
    }
}

/// Reads the TSC into EAX (32-bit code: low half; 64-bit code: all of RAX).
/// Clobbers EDX.
fn tsc_to_eax(a: &mut Asm) -> R {
    a.rdtsc()?;
    if a.bits == 64 {
        a.shl(rdx, 32)?;
        a.or(rax, rdx)?;
    }
    Ok(())
}

/// PIT channel 0 divisor for 1 kHz: 1193 input pulses of 1/1.193182 MHz =
/// 999,847 ns of virtual time (= instructions) per interrupt.
pub const PIT_DIVISOR_1KHZ: u16 = 1193;

/// Emits: program the PIC and PIT (1 kHz), synchronise on a timer
/// interrupt, then busy-loop `iterations` × 2 instructions with interrupts
/// on, and leave the number of interrupts taken during the loop in EAX.
/// The timer handler (`timerN`, gate 0x20) counts V_TICKS.
pub fn emit_count_pit_irqs(a: &mut Asm, iterations: u32) -> R {
    a.cli()?;
    rt::pic_init(a, 0x01)?;
    rt::pit_rate(a, PIT_DIVISOR_1KHZ)?;
    a.mov(dword_ptr(V_TICKS), 0)?;
    a.sti()?;
    // Wait for two interrupts: the first may be an edge latched before the
    // PIT was reprogrammed; the second is a real edge of the new period.
    let mut wait = a.create_label();
    a.bind(&mut wait)?;
    a.hlt()?;
    a.cmp(dword_ptr(V_TICKS), 2)?;
    a.jb(wait)?;
    a.mov(dword_ptr(V_TICKS), 0)?;
    a.mov(ecx, iterations as i32)?;
    let mut lp = a.create_label();
    a.bind(&mut lp)?;
    a.dec(ecx)?;
    a.jnz(lp)?;
    a.cli()?;
    a.mov(eax, dword_ptr(V_TICKS))
}

/// The guest `hindsight` runs when given no arguments: it shows what
/// hindsight is while walking from real mode to long mode, reads the
/// virtual clock, counts timer interrupts and exits with `v = 0` (status 1).
pub fn demo() -> GuestImage {
    demo_built().image
}

fn demo_built() -> BuiltGuest {
    let mut g = Guest::new("demo", |a| {
        a.print(concat!(
            "\n",
            "hindsight: an x86-64 full-system emulator built for deterministic\n",
            "record/replay and reverse debugging (coming on top of this core).\n",
            "\n",
            "This is its built-in demo guest, a bare-metal program assembled in Rust\n",
            "and started in 16-bit real mode at 0000:1000, like a boot sector.\n",
            "Virtual time is the instruction count: the TSC counts retired\n",
            "instructions (a 1 GHz virtual CPU), so every run prints the same numbers.\n",
            "\n",
        ))?;
        a.print("[real mode]       TSC = ")?;
        a.rdtsc()?;
        a.print_dec_eax()?;
        a.print(" instructions since reset\n")?;
        rt::enter_pm32(a, "demo32")
    });
    g.code32("demo32", |a| {
        rt::pm32_init(a)?;
        a.print("[protected mode]  CR0.PE = 1, flat 4 GiB segments, TSC = ")?;
        tsc_to_eax(a)?;
        a.print_dec_eax()?;
        a.print("\n")?;
        rt::enter_long(a, "demo64")
    });
    g.code64("demo64", |a| {
        rt::long_init(a)?;
        a.print("[long mode]       EFER.LMA = 1, 4-level paging, TSC = ")?;
        tsc_to_eax(a)?;
        a.print_dec_eax()?;
        a.print("\n\n")?;

        // Primes below 100000 with a sieve (deterministic work).
        a.print("Sieve of Eratosthenes: primes below 100000 = ")?;
        let sieve = 0x20_0000i32;
        let n = 100_000i32;
        a.mov(rdi, sieve as i64 as u64)?;
        a.mov(ecx, n)?;
        a.mov(al, 1)?;
        a.rep().stosb()?;
        a.mov(byte_ptr(sieve as u64), 0)?;
        a.mov(byte_ptr(sieve as u64 + 1), 0)?;
        a.mov(ebx, 2)?;
        let mut outer = a.create_label();
        let mut next = a.create_label();
        let mut inner = a.create_label();
        let mut done = a.create_label();
        a.bind(&mut outer)?;
        a.mov(eax, ebx)?;
        a.imul_2(eax, ebx)?;
        a.cmp(eax, n)?;
        a.jae(done)?;
        a.cmp(byte_ptr(rbx + sieve), 0)?;
        a.je(next)?;
        a.bind(&mut inner)?;
        a.mov(byte_ptr(rax + sieve), 0)?;
        a.add(eax, ebx)?;
        a.cmp(eax, n)?;
        a.jb(inner)?;
        a.bind(&mut next)?;
        a.inc(ebx)?;
        a.jmp(outer)?;
        a.bind(&mut done)?;
        a.xor(eax, eax)?;
        a.xor(ecx, ecx)?;
        let mut count = a.create_label();
        a.bind(&mut count)?;
        a.movzx(edx, byte_ptr(rcx + sieve))?;
        a.add(eax, edx)?;
        a.inc(ecx)?;
        a.cmp(ecx, n)?;
        a.jb(count)?;
        a.print_dec_eax()?;
        a.print(", TSC = ")?;
        tsc_to_eax(a)?;
        a.print_dec_eax()?;
        a.print("\n")?;

        a.print(concat!(
            "Timer: PIT channel 0 at 1 kHz (divisor 1193) through the 8259 PIC.\n",
            "  A period is 1193 / 1.193182 MHz = 999847 ns = 999847 instructions,\n",
            "  so a 5500000-instruction loop always sees exactly 5 interrupts: ",
        ))?;
        emit_count_pit_irqs(a, 2_750_000)?;
        a.print_dec_eax()?;
        a.print("\n  TSC = ")?;
        tsc_to_eax(a)?;
        a.print_dec_eax()?;
        a.print(concat!(
            "\n\n",
            "Because the run is a pure function of its inputs, it can be recorded\n",
            "and replayed exactly, and a debugger will step backwards through it.\n",
            "\n",
            "Try next:\n",
            "  hindsight selftest                  the emulator checks itself from inside guests\n",
            "  hindsight run --multiboot KERNEL    boot a multiboot kernel, COM1 on stdin/stdout\n",
            "  hindsight bench                     engine speed on a CPU-bound guest\n",
            "\n",
            "Demo done: exit through the debug-exit port (write 0 to port 0xf4).\n",
        ))?;
        a.exit(0)
    });
    g.build().expect("demo guest assembles")
}

/// A CPU-bound 64-bit guest for benchmarks: an endless loop of rounds, each
/// running a sieve, a CRC-32 over its result and an insertion sort through
/// a called compare-and-swap routine, then printing one line. It never
/// exits; run it with an instruction limit.
pub fn bench() -> GuestImage {
    let mut g = Guest::new("bench", |a| {
        a.print("hindsight bench guest: sieve + CRC-32 + insertion sort, forever\n")?;
        rt::enter_pm32(a, "bench32")
    });
    g.code32("bench32", |a| {
        rt::pm32_init(a)?;
        rt::enter_long(a, "bench64")
    });
    g.code64("bench64", |a| {
        rt::long_init(a)?;
        const SIEVE: i32 = 0x20_0000;
        const N: i32 = 16384;
        const ARR: i32 = 0x30_0000;
        const M: i32 = 200;
        let swap = a.sym("bench_swap");
        let crc_byte = a.sym("bench_crc_byte");
        a.xor(r15d, r15d)?; // round
        a.mov(r14d, 12345)?; // LCG state
        let mut round = a.create_label();
        a.bind(&mut round)?;
        // Sieve.
        a.mov(rdi, SIEVE as u64)?;
        a.mov(ecx, N)?;
        a.mov(al, 1)?;
        a.rep().stosb()?;
        a.mov(ebx, 2)?;
        let (mut outer, mut next, mut inner, mut done) = (
            a.create_label(),
            a.create_label(),
            a.create_label(),
            a.create_label(),
        );
        a.bind(&mut outer)?;
        a.mov(eax, ebx)?;
        a.imul_2(eax, ebx)?;
        a.cmp(eax, N)?;
        a.jae(done)?;
        a.cmp(byte_ptr(rbx + SIEVE), 0)?;
        a.je(next)?;
        a.bind(&mut inner)?;
        a.mov(byte_ptr(rax + SIEVE), 0)?;
        a.add(eax, ebx)?;
        a.cmp(eax, N)?;
        a.jb(inner)?;
        a.bind(&mut next)?;
        a.inc(ebx)?;
        a.jmp(outer)?;
        a.bind(&mut done)?;
        // CRC-32 over the sieve.
        a.mov(r13d, -1)?;
        a.xor(esi, esi)?;
        let mut crc = a.create_label();
        a.bind(&mut crc)?;
        a.movzx(eax, byte_ptr(rsi + SIEVE))?;
        a.call(crc_byte)?;
        a.inc(esi)?;
        a.cmp(esi, N)?;
        a.jb(crc)?;
        a.not(r13d)?;
        // Fill the array with LCG values and insertion-sort it.
        a.xor(ecx, ecx)?;
        let mut fill = a.create_label();
        a.bind(&mut fill)?;
        a.imul_3(r14d, r14d, 1_103_515_245)?;
        a.add(r14d, 12345)?;
        a.mov(dword_ptr(rcx * 4 + ARR), r14d)?;
        a.inc(ecx)?;
        a.cmp(ecx, M)?;
        a.jb(fill)?;
        a.mov(ecx, 1)?;
        let (mut isort, mut shift, mut placed) =
            (a.create_label(), a.create_label(), a.create_label());
        a.bind(&mut isort)?;
        a.mov(edx, ecx)?;
        a.bind(&mut shift)?;
        a.test(edx, edx)?;
        a.jz(placed)?;
        a.lea(rdi, qword_ptr(rdx * 4 + ARR - 4))?;
        a.call(swap)?; // swaps [rdi], [rdi+4] if out of order; ZF=1 if it did not
        a.jz(placed)?;
        a.dec(edx)?;
        a.jmp(shift)?;
        a.bind(&mut placed)?;
        a.inc(ecx)?;
        a.cmp(ecx, M)?;
        a.jb(isort)?;
        // Report: round, CRC, smallest element.
        a.inc(r15d)?;
        a.print("round ")?;
        a.mov(eax, r15d)?;
        a.print_dec_eax()?;
        a.print(": crc32 ")?;
        a.mov(eax, r13d)?;
        a.print_hex_eax()?;
        a.print(", min ")?;
        a.mov(eax, dword_ptr(ARR as u64))?;
        a.print_hex_eax()?;
        a.print("\n")?;
        a.jmp(round)?;

        // crc_byte: r13d = crc32 step over AL (bitwise, reflected 0xEDB88320).
        a.here("bench_crc_byte")?;
        a.xor(r13d, eax)?;
        a.mov(r8d, 8)?;
        let mut bit = a.create_label();
        let mut nox = a.create_label();
        a.bind(&mut bit)?;
        a.shr(r13d, 1)?;
        a.jnc(nox)?;
        a.xor(r13d, 0xEDB8_8320u32 as i32)?;
        a.bind(&mut nox)?;
        a.dec(r8d)?;
        a.jnz(bit)?;
        a.ret()?;

        // swap: if [rdi] > [rdi+4] (unsigned) swap them and clear ZF.
        a.here("bench_swap")?;
        let mut keep = a.create_label();
        a.mov(eax, dword_ptr(rdi))?;
        a.mov(r9d, dword_ptr(rdi + 4))?;
        a.cmp(eax, r9d)?;
        a.jbe(keep)?;
        a.mov(dword_ptr(rdi), r9d)?;
        a.mov(dword_ptr(rdi + 4), eax)?;
        a.or(eax, 1)?; // ZF = 0
        a.ret()?;
        a.bind(&mut keep)?;
        a.xor(eax, eax)?; // ZF = 1
        a.ret()
    });
    g.build().expect("bench guest assembles").image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_and_bench_assemble() {
        let d = demo();
        assert_eq!(d.load_addr, LOAD_ADDR);
        assert!(d.bytes.len() > 1000);
        let b = bench();
        assert!(b.bytes.len() > 1000);
    }
}
