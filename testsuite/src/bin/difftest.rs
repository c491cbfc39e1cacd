//! Differential tester: hindsight's interpreter against the host CPU.
//!
//! `difftest --cases N --seed S` generates N random 64-bit user-mode
//! instruction sequences (1–8 instructions each, plus the MOVs that set up
//! their address registers and some operand values), runs each natively on
//! the host (see `difftest/host.rs`) and in the interpreter (see
//! `difftest/emu.rs`) from the same random registers, RFLAGS (status flags and
//! DF), x87/MMX/SSE state and 16 KiB of random scratch memory, and compares
//! all 16 GPRs, the status flags and DF, the x87/MMX/SSE state, the scratch
//! memory and how the run ended (normally, or with which exception at which
//! instruction: #DE/#MF/#XM ↔ SIGFPE, #UD ↔ SIGILL, #GP/#PF ↔ SIGSEGV,
//! #SS/#AC ↔ SIGBUS). The last line is `cases=N mismatches=M`; the exit
//! status is non-zero when M > 0.
//!
//! Every 8th case is 32-bit code instead, run in compatibility mode on the
//! host (a far return to Linux's 32-bit user code segment, a far jump back)
//! and in a compatibility-mode CPU in the interpreter: the forms that exist
//! in 32-bit code plus the BCD class. There only EAX..EDI (not ESP) are
//! compared, as the upper halves are undefined after the mode switches.
//!
//! Instruction classes (only forms the host CPUID supports, and only those
//! the interpreter implements: each form is probed once at start-up and
//! dropped if the interpreter reports it unimplemented; `--list` prints them):
//! - alu: ADD ADC SUB SBB CMP AND OR XOR TEST INC DEC NEG NOT
//! - xadd-cmpxchg: XADD CMPXCHG CMPXCHG8B CMPXCHG16B (misaligned → #GP too)
//! - shift: SHL SAL SHR SAR ROL ROR RCL RCR SHLD SHRD (by 1, CL, imm8)
//! - muldiv: MUL IMUL (1/2/3 operands) DIV IDIV (#DE included)
//! - bits: BT BTS BTR BTC BSF BSR POPCNT LZCNT TZCNT
//! - data: MOV MOVZX MOVSX MOVSXD LEA XCHG BSWAP MOVBE CMOVcc SETcc CBW CWDE
//!   CDQE CWD CDQ CQO LAHF SAHF CLC STC CMC CLD STD
//! - string: MOVS STOS LODS CMPS SCAS, all sizes, without/with REP (REPE/REPNE
//!   for CMPS/SCAS), 64- and 32-bit address size, with DF set or clear
//! - bcd: AAA AAS AAM AAD DAA DAS (with ADD/ADC/SUB/SBB AL, imm8 to set AF/CF),
//!   which exist only outside 64-bit mode, so only in the 32-bit cases.
//! - x87, mmx, sse, sse2, sse3, ssse3, sse41, sse42: every legacy-encoded
//!   (no VEX/EVEX) form in iced's Code list whose CPUID feature is the x87
//!   FPU (or FXSR: FXSAVE/FXRSTOR, or XSAVE: XSAVE/XRSTOR), MMX, SSE, SSE2,
//!   SSE3, SSSE3, SSE4.1 or SSE4.2 (the class is the feature: SSE's
//!   MMX-register forms such as PAVGB mm are sse, FISTTP is x87), plus WAIT
//!   in x87, less the exclusions below. A selected class whose feature the
//!   host lacks is an error (exit 2), not a skip.
//!
//! # x87, MMX and SSE state (see `difftest/fp.rs`)
//! Each case starts from a random FXSAVE image, loaded with FXRSTOR64 on
//! the host and into `Cpu::fpu/xmm/mxcsr` in the interpreter (CR0.MP|NE,
//! no EM/TS; CR4.OSFXSR|OSXMMEXCPT|OSXSAVE and XCR0 = x87|SSE, as under
//! Linux but for Linux's larger XCR0): FCW with all
//! exceptions masked (a few cases unmask some) and random precision and
//! rounding control; FSW with random TOP, condition codes and sticky flags;
//! a stack of 0–8 valid registers (or a random tag pattern, or the all-valid
//! TOP=0 state MMX code leaves) holding special values (±0, ±inf, QNaN and
//! SNaN with payloads, denormals, pseudo-denormals, unnormals, pseudo-NaNs,
//! smallest/largest normals, 1.0, values near integer, .5 and integer
//! conversion boundaries, widened doubles, random); MXCSR with all
//! exceptions masked (a few cases unmask some), random rounding, FTZ, DAZ
//! and sticky flags; XMM0–15 with f32/f64/integer lanes of special values
//! or random bits. The scratch memory gets the same kinds of values (plus
//! packed BCD) in 16-byte blocks, so aligned memory operands meet them.
//! After the code the host stores its state with FXSAVE64 (at the recovery
//! point too, so a faulting case is compared at the fault) and restores its
//! own. Compared: FCW, FSW (every bit), the abridged tag, the non-empty x87
//! registers by physical index (MMX registers included), MXCSR and
//! XMM0–15; not compared: FIP/FCS/FDP/FDS/FOP, which this CPU updates only
//! on unmasked exceptions, and empty registers.
//!
//! The x87 condition codes are compared exactly, also where the SDM calls
//! them undefined (after most x87 instructions C0, C2 and C3, after FFREE,
//! FLDCW, FNOP... all four): Intel CPUs leave them unchanged or set them
//! deterministically, and hindsight's x87 model aims at the host's bits.
//! So the x87 classes, like `--strict`, hold this (Intel) CPU as the
//! reference; another vendor may differ there.
//!
//! Memory operands of 16 bytes (and FXSAVE areas, 80-bit and BCD operands)
//! are 16-byte aligned 90 % of the time, so misaligned MOVAPS/ADDPS
//! m128/FXSAVE/... meet #GP on both sides. Images the code loads are
//! controlled by MOVs right before the instruction: FLDCW gets a control
//! word, LDMXCSR an MXCSR (masked nearly always; rarely with unmasked
//! exceptions or a reserved bit, #GP), FLDENV/FRSTOR/FXRSTOR get FCW, FSW
//! (ES and B consistent with the masks) and MXCSR, XRSTOR also a header
//! (XSTATE_BV within x87|SSE, XCOMP_BV and reserved bytes zero, rarely
//! not: #GP), the rest of the image (registers, tags) coming from the
//! random data. Images the code stores (FNSTENV, FNSAVE, FXSAVE, XSAVE and
//! their waiting/64-bit forms) have the pointer and opcode fields (and
//! XSAVE's XSTATE_BV, which reflects the host's init tracking) zeroed by
//! MOVs right after, so the comparison of memory sees only deterministic
//! fields. XSAVE/XRSTOR get EDX:EAX requesting x87 and/or SSE only (the
//! host's XCR0 has more components than the model's); PCMPESTRx get lengths
//! in EAX/EDX near the valid range; MASKMOVQ/MASKMOVDQU an RDI inside the
//! scratch data.
//!
//! Excluded, being not bit-exact by design or outside what the harness
//! controls (`--list` prints them with the reason): FSIN FCOS FSINCOS FPTAN
//! FPATAN F2XM1 FYL2X FYL2XP1 (Intel documents only an error bound, and the
//! low bits differ between microarchitectures); RCPPS RCPSS RSQRTPS RSQRTSS
//! (table-based approximations that differ between CPU generations);
//! XGETBV (reads the host's XCR0 and XINUSE, which are not the model's) and
//! XSETBV (privileged). XSAVEOPT, XSAVEC, XSAVES and XRSTORS are not in the
//! classes at all (their CPUID features are not advertised by the model).
//! `--include-excluded` generates the excluded forms anyway, to measure.
//!
//! Memory operands point into the scratch data: absolute, RIP-relative,
//! base+disp, base+index*scale+disp, 32-bit addressing (67 prefix), FS:/GS:
//! with the host thread's segment bases (given to the interpreter too), and
//! now and then an ES/CS/SS/DS override that 64-bit mode ignores. LOCK is
//! added to 30 % of lockable instructions with a memory destination and to
//! 1 % of all others (which must raise #UD on both sides).
//!
//! A seed determines the cases; only values derived from the host's stack
//! and FS base (which move with ASLR) differ between runs.
//!
//! # Which flags are masked, and why
//! Only flags the SDM documents as *undefined* are ever masked, and only while
//! they are undefined: the generator tracks, through the sequence, the set of
//! flags whose value is undefined (iced's `rflags_undefined()`, mapped from
//! iced's `RflagsBits` to RFLAGS bits); a later instruction that writes a
//! flag with a defined value clears it from the set. Shifts and rotates by
//! CL, and REP CMPS/SCAS, do not clear it, because a zero count leaves the
//! flags alone.
//! The generator never emits an instruction that *reads* a flag in that set
//! (ADC, SBB, RCL, RCR, CMOVcc, SETcc, LAHF, CMC, ...), so undefined flags
//! cannot leak into registers or memory; at the end (or at a faulting
//! instruction) the flags still in the set are left out of the comparison.
//! The undefined flags are, per the SDM:
//! - AND/OR/XOR/TEST: AF.
//! - SHL/SAL/SHR/SAR: AF (count ≠ 0), OF (count ≠ 1), CF (count ≥ width, 8/16-bit).
//! - ROL/ROR/RCL/RCR: OF (count ≠ 1).
//! - SHLD/SHRD: AF, OF (count ≠ 1), and all flags plus the result for 16-bit counts > 16.
//! - MUL/IMUL: SF, ZF, AF, PF.  DIV/IDIV: CF, OF, SF, ZF, AF, PF.
//! - BT/BTS/BTR/BTC: OF, SF, AF, PF.  BSF/BSR: CF, OF, SF, AF, PF.
//! - LZCNT/TZCNT: OF, SF, AF, PF.
//! - AAA/AAS: OF, SF, ZF, PF.  AAM/AAD: OF, AF, CF.  DAA/DAS: OF.
//!
//! `--strict` turns all of this off (nothing masked, nothing avoided): the
//! interpreter then has to reproduce this host's undefined flags exactly,
//! which it does for the behaviour documented in `cpu/src/interp/{alu,shift,
//! muldiv,bits,bcd}.rs` (measured on an Intel core; other CPUs, AMD's in
//! particular, differ in undefined flags, so `--strict` is Intel-only, while
//! the default mode is vendor-neutral).
//!
//! Useful options: `--class C` / `--exclude C` (alu, xadd-cmpxchg, shift,
//! muldiv, bits, data, string, bcd, x87, mmx, sse, sse2, sse3, ssse3, sse41,
//! sse42; repeatable or comma-separated), `--max-len 1` (one instruction per
//! case), `--only K` (reproduce case K of a seed), `--minimize` (also print
//! each detailed mismatch reduced to the fewest instructions that still
//! mismatch), `--require-implemented` (fail if the interpreter lacks a
//! form instead of leaving it out), `--keep-unimplemented`, `--host-check`
//! (run every case twice on the host, to find state the harness does not
//! control), `--list`, and the environment variable `DIFFTEST_TRACE=1`
//! (print each case before running it).

#[path = "difftest/emu.rs"]
mod emu;
#[path = "difftest/fp.rs"]
mod fp;
#[path = "difftest/gen.rs"]
mod gen;
#[path = "difftest/host.rs"]
mod host;
#[path = "difftest/rng.rs"]
mod rng;

use std::process::ExitCode;

use clap::Parser;
use iced_x86::{Code, Instruction};

use emu::{Emu, EmuEnd, EmuOut};
use fp::FpState;
use gen::{flag_names, Case, Class, Features, Generator};
use host::{Host, HostOut, Width, DATA_SIZE};
use rng::Rng;

/// Status flags and DF: what is compared.
const COMPARED: u64 = 0x8d5 | 0x400;

#[derive(Parser)]
#[command(
    name = "difftest",
    about = "Differential test of hindsight's interpreter against the host CPU",
    long_about = "Generates random 64-bit user-mode instruction sequences, runs them natively and in \
hindsight's interpreter from the same state, and compares all 16 GPRs, the status flags and DF, the \
x87/MMX/SSE state (FCW, FSW, abridged tag, non-empty x87/MMX registers, MXCSR, XMM0-15), 16 KiB \
of scratch memory and the exception raised (if any).\n\n\
Classes covered (forms the host CPUID supports and the interpreter implements; see --list):\n\
\x20\x20alu           ADD ADC SUB SBB CMP AND OR XOR TEST INC DEC NEG NOT\n\
\x20\x20xadd-cmpxchg  XADD CMPXCHG CMPXCHG8B CMPXCHG16B\n\
\x20\x20shift         SHL SAL SHR SAR ROL ROR RCL RCR SHLD SHRD\n\
\x20\x20muldiv        MUL IMUL DIV IDIV (divide errors compared as #DE vs SIGFPE)\n\
\x20\x20bits          BT BTS BTR BTC BSF BSR POPCNT LZCNT TZCNT\n\
\x20\x20data          MOV MOVZX MOVSX MOVSXD LEA XCHG BSWAP MOVBE CMOVcc SETcc CBW..CQO LAHF SAHF CLC STC CMC CLD STD\n\
\x20\x20string        MOVS STOS LODS CMPS SCAS with/without REP, DF set or clear\n\
\x20\x20bcd           AAA AAS AAM AAD DAA DAS (32-bit code only)\n\
\x20\x20x87           x87 FPU, WAIT, FXSAVE/FXRSTOR, XSAVE/XRSTOR (x87|SSE) (stored images: pointer fields zeroed after)\n\
\x20\x20mmx sse sse2 sse3 ssse3 sse41 sse42   every legacy form of that CPUID feature\n\
\x20\x20(excluded: FSIN FCOS FSINCOS FPTAN FPATAN F2XM1 FYL2X FYL2XP1 RCPPS RCPSS RSQRTPS RSQRTSS \
XGETBV XSETBV; see --list)\n\
The x87/SSE state starts random (special values, random rounding/precision/FTZ/DAZ, exceptions \
masked in nearly all cases); #MF and #XM are compared as SIGFPE. x87 condition codes are compared \
exactly, also where the SDM leaves them undefined (this Intel CPU is the reference). A selected class \
the host CPU lacks is an error.\n\
Every 8th case is 32-bit code run in compatibility mode (forms that exist there, plus bcd); \
only EAX..EDI (not ESP) are compared in those.\n\
LOCK is added to memory-destination forms (and, rarely, where it must #UD).\n\n\
Masked flags: only flags the SDM leaves undefined, while they are undefined \
(iced's rflags_undefined(); a defined write clears them, shifts by CL and REP CMPS/SCAS do not): \
AF after AND/OR/XOR/TEST; AF, OF (count != 1), CF (count >= width) after shifts; \
OF after rotates by != 1; AF, OF after SHLD/SHRD; SF ZF AF PF after MUL/IMUL; \
all six after DIV/IDIV; OF SF AF PF after BT*; CF OF SF AF PF after BSF/BSR; \
OF SF AF PF after LZCNT/TZCNT; OF SF ZF PF after AAA/AAS, OF AF CF after AAM/AAD, \
OF after DAA/DAS. Instructions that read an undefined flag are \
never generated. --strict masks nothing.\n\n\
The last line is `cases=N mismatches=M`; the exit status is non-zero if M > 0."
)]
struct Args {
    /// Number of random cases.
    #[arg(long, default_value_t = 10_000)]
    cases: u64,
    /// RNG seed (the run is deterministic for a given seed).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run only case K of the seed (to reproduce a reported mismatch).
    #[arg(long)]
    only: Option<u64>,
    /// Compare undefined flags too (nothing masked, nothing avoided).
    #[arg(long)]
    strict: bool,
    /// Print the instruction forms covered and exit.
    #[arg(long)]
    list: bool,
    /// Print at most this many mismatches in detail (both register states,
    /// flags, every instruction); the rest get one line each (bytes, codes, differences).
    #[arg(long, default_value_t = 100)]
    detail: u64,
    /// Most instructions per sequence (1–8; setup MOVs not counted).
    #[arg(long, default_value_t = 8)]
    max_len: u64,
    /// Restrict to these classes (alu, xadd-cmpxchg, shift, muldiv, bits, data,
    /// string, bcd, x87, mmx, sse, sse2, sse3, ssse3, sse41, sse42; repeatable
    /// or comma-separated).
    #[arg(long, value_delimiter = ',')]
    class: Vec<String>,
    /// Leave out a class (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
    /// Fail (exit status 2) if the interpreter does not implement every
    /// selected form, instead of leaving those forms out.
    #[arg(long)]
    require_implemented: bool,
    /// Keep the forms the interpreter does not implement (each case with
    /// one then counts as a mismatch).
    #[arg(long)]
    keep_unimplemented: bool,
    /// Check the host against itself instead of the interpreter: run each
    /// case, another case, then the first again, and report any difference
    /// (state the harness does not control).
    #[arg(long)]
    host_check: bool,
    /// Reduce each mismatch reported in detail to the fewest instructions
    /// that still mismatch in the same places, and print that too.
    #[arg(long)]
    minimize: bool,
    /// Engine under test: interp (each instruction's handler, exceptions
    /// seen directly) or jit (the code run from guest memory by hindsight's
    /// JIT, every block translated, exceptions delivered through an IDT)
    #[arg(long, value_name = "ENGINE", default_value = "interp", value_parser = ["interp", "jit"])]
    engine: String,
    /// Also generate the x87/SSE forms excluded as not bit-exact by design
    /// (transcendentals, RCP/RSQRT approximations) or outside the harness's
    /// control (XGETBV...), to measure how far the model is from this CPU
    /// (expect mismatches).
    #[arg(long)]
    include_excluded: bool,
}

/// The RNG of case `k` (cases are independent, so `--only` reproduces one).
fn case_rng(seed: u64, k: u64) -> Rng {
    let mut r = Rng::new(seed);
    let s = r.next();
    Rng::new(s ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The host signal an exception vector turns into under Linux.
fn signal_of(vector: u8) -> Option<i32> {
    match vector {
        0 | 16 | 19 => Some(libc::SIGFPE),
        6 => Some(libc::SIGILL),
        13 | 14 => Some(libc::SIGSEGV),
        12 | 17 => Some(libc::SIGBUS),
        1 | 3 => Some(libc::SIGTRAP),
        _ => None,
    }
}

fn sig_name(s: i32) -> &'static str {
    match s {
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGTRAP => "SIGTRAP",
        _ => "signal",
    }
}

const REG_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn insn_bytes<'a>(case: &'a Case, insn: &Instruction, ip0: u64) -> &'a [u8] {
    let s = (insn.ip() - ip0) as usize;
    &case.code[s..s + insn.len()]
}

fn regs_line(g: &[u64; 16]) -> String {
    let mut s = String::new();
    for (i, v) in g.iter().enumerate() {
        s += &format!("{}={v:#x} ", REG_NAMES[i]);
    }
    s
}

/// Differences between the two runs, as printable lines (empty when they agree).
/// `compat`: 32-bit code, where only the low halves of EAX..EDI (not ESP) are compared.
fn compare(
    case: &Case,
    h: &HostOut,
    hd: &[u8],
    e: &EmuOut,
    ed: &[u8],
    compat: bool,
) -> (Vec<String>, u64) {
    let mut d = Vec::new();
    let host_end = h.fault;
    let (emu_sig, emu_rip) = match &e.end {
        EmuEnd::Done => (None, 0),
        EmuEnd::Fault { vector, rip } => {
            (Some(signal_of(*vector).unwrap_or(-(*vector as i32))), *rip)
        }
        EmuEnd::Unimplemented(m) => {
            d.push(format!("interpreter: unimplemented instruction {m}"));
            return (d, 0);
        }
        EmuEnd::Other(s) => {
            d.push(format!("interpreter stopped: {s}"));
            return (d, 0);
        }
    };
    let fault_rip = match (host_end, emu_sig) {
        (None, None) => None,
        (Some((hs, hr)), Some(es)) if hs == es && hr == emu_rip => Some(hr),
        _ => {
            let hs = match host_end {
                Some((s, r)) => format!("{} at {r:#x}", sig_name(s)),
                None => "completed".into(),
            };
            let es = match &e.end {
                EmuEnd::Fault { vector, rip } => format!(
                    "{} at {rip:#x}",
                    hindsight_cpu::fault::vector::name(*vector)
                ),
                _ => "completed".into(),
            };
            d.push(format!("end: host {hs}, interpreter {es}"));
            return (d, 0);
        }
    };
    let mask = match fault_rip {
        Some(rip) => case
            .insns
            .iter()
            .position(|i| i.ip() == rip)
            .map_or(case.final_poison, |k| case.poison[k]),
        None => case.final_poison,
    };
    for (i, name) in REG_NAMES.iter().enumerate() {
        let m = if compat {
            if i >= 8 || i == 4 {
                continue;
            }
            0xffff_ffff
        } else {
            u64::MAX
        };
        if (h.gpr[i] ^ e.gpr[i]) & m != 0 {
            d.push(format!(
                "{name}: host {:#018x} interpreter {:#018x} (xor {:#x})",
                h.gpr[i],
                e.gpr[i],
                h.gpr[i] ^ e.gpr[i]
            ));
        }
    }
    let fd = (h.rflags ^ e.rflags) & COMPARED & !mask;
    if fd != 0 {
        d.push(format!(
            "flags differ: {} (host {} | interpreter {}; masked as undefined: {})",
            flag_names(fd),
            flag_names(h.rflags & COMPARED),
            flag_names(e.rflags & COMPARED),
            flag_names(mask)
        ));
    }
    if hd != ed {
        let diff: Vec<usize> = (0..hd.len()).filter(|&i| hd[i] != ed[i]).collect();
        let shown: Vec<String> = diff
            .iter()
            .take(8)
            .map(|&i| format!("+{i:#x}: host {:02x} interpreter {:02x}", hd[i], ed[i]))
            .collect();
        d.push(format!(
            "memory: {} bytes differ; {}",
            diff.len(),
            shown.join(", ")
        ));
    }
    d.extend(fp::compare(&h.fp, &e.fp));
    (d, mask)
}

/// The initial x87/SSE state and memory operands a mismatch report shows,
/// when the case has an x87/MMX/SSE instruction or the FP states differ.
fn fp_report(
    case: &Case,
    data_base: u64,
    h: &FpState,
    e: &FpState,
    mem_refs: &[(usize, u64, usize)],
) -> Vec<String> {
    let uses_fp = case.insns.iter().any(gen::is_fp_insn);
    let mut v = Vec::new();
    if uses_fp || h != e {
        let s = &case.fp;
        v.push(format!(
            "fp initial: fcw={} fsw={} tag={:08b} mxcsr={}",
            fp::fcw_text(s.fcw),
            fp::fsw_text(s.fsw),
            s.ftw,
            fp::mxcsr_text(s.mxcsr)
        ));
        let st = fp::stack_lines(s);
        if !st.is_empty() {
            v.push(format!("fp initial stack: {}", st.join(", ")));
        }
        let mut xmms = [false; 16];
        let mut mms = [false; 8];
        for insn in &case.insns {
            for i in 0..insn.op_count() {
                if insn.op_kind(i) == iced_x86::OpKind::Register {
                    let r = insn.op_register(i);
                    if r.is_xmm() {
                        xmms[r.number() & 15] = true;
                    } else if r.is_mm() {
                        mms[r.number() & 7] = true;
                    }
                }
            }
            if matches!(
                insn.mnemonic(),
                iced_x86::Mnemonic::Blendvps
                    | iced_x86::Mnemonic::Blendvpd
                    | iced_x86::Mnemonic::Pblendvb
            ) {
                xmms[0] = true;
            }
        }
        for (i, used) in xmms.iter().enumerate() {
            if *used || h.xmm[i] != e.xmm[i] {
                v.push(format!("initial xmm{i}={}", fp::xmm_text(s.xmm[i])));
            }
        }
        for (p, used) in mms.iter().enumerate() {
            if *used {
                v.push(format!(
                    "initial mm{p}=R{p} {}{}",
                    fp::f80_text(&s.regs[p]),
                    if s.ftw & (1 << p) == 0 {
                        " (empty)"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    for (k, a, size) in mem_refs {
        let insn = &case.insns[*k];
        if matches!(insn.code(), Code::Mov_rm16_imm16 | Code::Mov_rm32_imm32) {
            continue; // image setups and sanitizers
        }
        let o = a.wrapping_sub(data_base) as usize;
        let n = (*size).clamp(1, 32);
        if o.checked_add(n).is_some_and(|e| e <= case.data.len()) {
            v.push(format!(
                "initial memory at {:?} [{a:#x}] ({size} bytes): {}{}",
                insn.code(),
                hex(&case.data[o..o + n]),
                if *size > n { " ..." } else { "" }
            ));
        }
    }
    v
}

/// The codes of a case's instructions, space-separated.
fn codes_line(case: &Case) -> String {
    let codes: Vec<String> = case
        .insns
        .iter()
        .map(|i| format!("{:?}", i.code()))
        .collect();
    codes.join(" ")
}

/// One case run on both sides, with the differences.
struct Run {
    /// The GPRs the interpreter started from (RSP as the host's).
    gpr: [u64; 16],
    h: HostOut,
    e: EmuOut,
    diffs: Vec<String>,
    mask: u64,
}

/// Runs cases on the host and in the interpreter.
struct Runner {
    host: Host,
    emu: Emu,
    emu32: Emu,
    ip0: u64,
    mxcsr_mask: u32,
}

impl Runner {
    fn run(&mut self, case: &Case, compat: bool) -> Result<Run, String> {
        let width = if compat { Width::W32 } else { Width::W64 };
        let mut hdata = case.data.clone();
        let fx = case.fp.to_fxsave(self.mxcsr_mask);
        let h = self
            .host
            .run(width, &case.gpr, case.rflags, &fx, &case.code, &mut hdata)?;
        let mut gpr = case.gpr;
        gpr[4] = self.host.code_rsp();
        let handlers = Emu::handlers(&case.insns);
        let mut edata = case.data.clone();
        let end = self.ip0 + case.code.len() as u64;
        let emu = if compat {
            &mut self.emu32
        } else {
            &mut self.emu
        };
        emu.set_code(&case.code);
        let e = emu.run(
            &case.insns,
            &handlers,
            &gpr,
            case.rflags,
            &case.fp,
            &mut edata,
            end,
        );
        let (diffs, mask) = compare(case, &h, &hdata, &e, &edata, compat);
        Ok(Run {
            gpr,
            h,
            e,
            diffs,
            mask,
        })
    }

    /// Whether every memory access of the case (as the interpreter makes
    /// them) lies in the scratch data: dropping an address setup must not
    /// let the native run write elsewhere.
    fn stays_in_data(&mut self, case: &Case, compat: bool) -> bool {
        let mut gpr = case.gpr;
        gpr[4] = self.host.code_rsp();
        let handlers = Emu::handlers(&case.insns);
        let mut data = case.data.clone();
        let end = self.ip0 + case.code.len() as u64;
        let emu = if compat {
            &mut self.emu32
        } else {
            &mut self.emu
        };
        let e = emu.run(
            &case.insns,
            &handlers,
            &gpr,
            case.rflags,
            &case.fp,
            &mut data,
            end,
        );
        let lo = self.host.data_addr();
        let hi = lo + DATA_SIZE as u64;
        let implicit_stack = case.insns.iter().any(|i| {
            i.stack_pointer_increment() != 0
                || matches!(
                    i.mnemonic(),
                    iced_x86::Mnemonic::Movsb
                        | iced_x86::Mnemonic::Movsw
                        | iced_x86::Mnemonic::Movsd
                        | iced_x86::Mnemonic::Movsq
                        | iced_x86::Mnemonic::Stosb
                        | iced_x86::Mnemonic::Stosw
                        | iced_x86::Mnemonic::Stosd
                        | iced_x86::Mnemonic::Stosq
                )
        });
        !implicit_stack
            && e.mem_refs
                .iter()
                .all(|(_, a, n)| *a >= lo && a.saturating_add((*n).max(1) as u64) <= hi)
    }

    /// A mismatch in detail: instructions, states, differences.
    fn print_detail(&self, case: &Case, r: &Run) {
        for insn in &case.insns {
            println!(
                "  {:#x}: {:<30} {:?}{}",
                insn.ip(),
                hex(insn_bytes(case, insn, self.ip0)),
                insn.code(),
                if insn.has_lock_prefix() {
                    " (lock)"
                } else {
                    ""
                }
            );
        }
        println!(
            "  initial: {}rflags={:#x} ({})",
            regs_line(&r.gpr),
            case.rflags,
            flag_names(case.rflags & COMPARED)
        );
        println!(
            "  host:    {}rflags={:#x}",
            regs_line(&r.h.gpr),
            r.h.rflags & COMPARED
        );
        println!(
            "  interp:  {}rflags={:#x}",
            regs_line(&r.e.gpr),
            r.e.rflags & COMPARED
        );
        if r.mask != 0 {
            println!("  masked (undefined): {}", flag_names(r.mask));
        }
        for l in fp_report(case, self.host.data_addr(), &r.h.fp, &r.e.fp, &r.e.mem_refs) {
            println!("  {l}");
        }
        for d in &r.diffs {
            println!("  {d}");
        }
    }

    /// Drops instructions from a mismatching case while it still mismatches
    /// in (a subset of) the same places.
    fn minimize(&mut self, case: &Case, r: Run, compat: bool, strict: bool) -> (Case, Run) {
        let key = |d: &String| d.split(':').next().unwrap_or("").to_string();
        let keys: Vec<String> = r.diffs.iter().map(key).collect();
        let mut best = (
            rebuild(
                case,
                &vec![true; case.insns.len()],
                self.ip0,
                compat,
                strict,
            ),
            r,
        );
        if best.0.is_none() {
            return (case.clone(), best.1);
        }
        loop {
            let cur = best.0.as_ref().expect("case").clone();
            let mut changed = false;
            for i in (0..cur.insns.len()).rev() {
                if is_sanitizer(&cur.insns, i) {
                    continue;
                }
                let mut keep = vec![true; cur.insns.len()];
                keep[i] = false;
                let Some(c) = rebuild(&cur, &keep, self.ip0, compat, strict) else {
                    continue;
                };
                if !self.stays_in_data(&c, compat) {
                    continue;
                }
                let Ok(r) = self.run(&c, compat) else {
                    continue;
                };
                if !r.diffs.is_empty() && r.diffs.iter().all(|d| keys.contains(&key(d))) {
                    best = (Some(c), r);
                    changed = true;
                    break;
                }
            }
            if !changed {
                break;
            }
        }
        (best.0.expect("case"), best.1)
    }
}

/// Whether instruction `i` is one of the MOVs that zero the pointer fields
/// of an image FNSTENV/FNSAVE/FXSAVE just stored (the minimizer keeps them).
fn is_sanitizer(insns: &[Instruction], i: usize) -> bool {
    let mov = |k: usize| matches!(insns[k].code(), Code::Mov_rm16_imm16 | Code::Mov_rm32_imm32);
    if !mov(i) {
        return false;
    }
    let mut j = i;
    while j > 0 && mov(j - 1) {
        j -= 1;
    }
    j > 0
        && matches!(
            insns[j - 1].mnemonic(),
            iced_x86::Mnemonic::Fnsave
                | iced_x86::Mnemonic::Fnstenv
                | iced_x86::Mnemonic::Fxsave
                | iced_x86::Mnemonic::Fxsave64
                | iced_x86::Mnemonic::Xsave
                | iced_x86::Mnemonic::Xsave64
        )
}

/// The case with only the instructions `keep` selects, placed back to back
/// (RIP-relative operands re-encoded for their new addresses).
fn rebuild(case: &Case, keep: &[bool], ip0: u64, compat: bool, strict: bool) -> Option<Case> {
    let bits = if compat { 32 } else { 64 };
    let mut enc = iced_x86::Encoder::new(bits);
    let mut code = Vec::new();
    for (i, insn) in case.insns.iter().enumerate() {
        if !keep[i] {
            continue;
        }
        let ip = ip0 + code.len() as u64;
        if insn.is_ip_rel_memory_operand() {
            enc.encode(insn, ip).ok()?;
            code.extend(enc.take_buffer());
        } else {
            code.extend_from_slice(insn_bytes(case, insn, case.insns[0].ip()));
        }
    }
    let mut insns = Vec::new();
    let mut dec = iced_x86::Decoder::with_ip(bits, &code, ip0, iced_x86::DecoderOptions::NONE);
    while dec.can_decode() {
        insns.push(dec.decode());
    }
    let mut poison = Vec::with_capacity(insns.len());
    let mut p = 0;
    for i in &insns {
        poison.push(if strict { 0 } else { p });
        p = gen::poison_after(p, i);
    }
    let mut c = case.clone();
    c.code = code;
    c.insns = insns;
    c.poison = poison;
    c.final_poison = if strict { 0 } else { p };
    Some(c)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let host = match Host::new() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("difftest: {e}");
            return ExitCode::from(2);
        }
    };
    let ip0 = host.gen_addr();
    let mut emu = Emu::new(host.base);
    let (fs_base, gs_base) = Host::fs_gs_base();
    emu.set_fs_gs(fs_base, gs_base);
    let features = Features::host();
    let mxcsr_mask = Host::mxcsr_mask();
    let class_of = |c: &String| Class::ALL.iter().copied().find(|k| k.name() == c);
    let mut selected: Vec<Class> = if args.class.is_empty() {
        Class::ALL.to_vec()
    } else {
        let mut v = Vec::new();
        for c in &args.class {
            let Some(class) = class_of(c) else {
                eprintln!("difftest: unknown class {c}");
                return ExitCode::from(2);
            };
            v.push(class);
        }
        v
    };
    for c in &args.exclude {
        let Some(class) = class_of(c) else {
            eprintln!("difftest: unknown class {c}");
            return ExitCode::from(2);
        };
        selected.retain(|k| *k != class);
    }
    // A selected class this CPU cannot run is an error, not a silent skip.
    let missing: Vec<String> = selected
        .iter()
        .filter(|c| !c.host_has())
        .map(|c| format!("{} (needs {})", c.name(), c.host_feature().unwrap_or("?")))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "difftest: this CPU lacks the features of class(es) {}; leave them out with --exclude",
            missing.join(", ")
        );
        return ExitCode::from(2);
    }
    let mut generator = Generator::new(
        gen::templates(&features, args.include_excluded),
        host.data_addr(),
        DATA_SIZE as u64,
        args.strict,
    );
    generator.max_len = args.max_len.clamp(1, 8);
    generator.fs_base = fs_base;
    generator.gs_base = gs_base;
    generator.mxcsr_mask = mxcsr_mask;
    generator.retain(|t| selected.contains(&t.class));
    // BCD exists only in 32-bit code, run in compatibility mode (all cases with --class bcd).
    let mut bcd = selected.contains(&Class::Bcd);
    let mut only_bcd = selected == [Class::Bcd];
    let compat_ok = host.compat_works();
    if !compat_ok {
        eprintln!("difftest: this kernel runs no 32-bit code; 32-bit and bcd cases skipped");
        bcd = false;
        only_bcd = false;
    }
    let mut emu32 = Emu::new(host.base);
    emu32.set_compat(true);
    if bcd {
        // Probe: does the interpreter implement the decimal adjustments?
        for bytes in [[0x37u8], [0x3f], [0x27], [0x2f]] {
            let insn = iced_x86::Decoder::with_ip(32, &bytes, ip0, iced_x86::DecoderOptions::NONE)
                .decode();
            let handlers = Emu::handlers(&[insn]);
            let mut data = vec![0; DATA_SIZE];
            let out = emu32.run(
                &[insn],
                &handlers,
                &[0; 16],
                0x202,
                &FpState::initial(),
                &mut data,
                ip0 + 1,
            );
            if let EmuEnd::Unimplemented(m) = out.end {
                eprintln!("difftest: bcd class skipped ({m} unimplemented)");
                bcd = false;
                only_bcd = false;
                break;
            }
        }
    }
    generator.bcd = bcd;
    // Probe every form once; keep only those the interpreter implements.
    let mut unimplemented = Vec::new();
    let mut keep = vec![true; generator.templates.len()];
    let mut prng = Rng::new(args.seed ^ 0xabcdef);
    for (i, k) in keep.iter_mut().enumerate() {
        if args.keep_unimplemented {
            break;
        }
        for _ in 0..4 {
            let Some(case) = generator.probe_case(&mut prng, i, ip0) else {
                continue;
            };
            let handlers = Emu::handlers(&case.insns);
            let mut data = case.data.clone();
            let mut gpr = case.gpr;
            gpr[4] = 0x7fff_0000;
            let out = emu.run(
                &case.insns,
                &handlers,
                &gpr,
                case.rflags,
                &case.fp,
                &mut data,
                ip0 + case.code.len() as u64,
            );
            if let EmuEnd::Unimplemented(_) = out.end {
                *k = false;
                unimplemented.push(generator.templates[i].describe());
                break;
            }
        }
    }
    let mut it = keep.iter();
    generator.retain(|_| *it.next().unwrap_or(&false));
    if args.require_implemented && !unimplemented.is_empty() {
        eprintln!(
            "difftest: {} forms unimplemented in the interpreter: {}",
            unimplemented.len(),
            unimplemented.join(" ")
        );
        return ExitCode::from(2);
    }
    if args.list {
        if bcd {
            println!("bcd (32-bit code in compatibility mode): AAA AAS AAM AAD DAA DAS, with ADD/ADC/SUB/SBB AL, imm8");
        }
        for c in Class::ALL.into_iter().filter(|c| *c != Class::Bcd) {
            let forms: Vec<String> = generator
                .templates
                .iter()
                .filter(|t| t.class == c)
                .map(|t| t.describe())
                .collect();
            println!("{} ({} forms): {}", c.name(), forms.len(), forms.join(" "));
        }
        println!(
            "skipped (unimplemented in the interpreter): {}",
            unimplemented.join(" ")
        );
        for (m, why) in gen::fp_exclusions() {
            println!("excluded {m}: {why}");
        }
        return ExitCode::SUCCESS;
    }
    if generator.templates.is_empty() && !bcd {
        eprintln!("difftest: no instruction forms to test");
        return ExitCode::from(2);
    }
    {
        let mut per_class = Vec::new();
        for c in Class::ALL {
            let n = generator.templates.iter().filter(|t| t.class == c).count();
            if n > 0 {
                per_class.push(format!("{}:{n}", c.name()));
            }
        }
        if bcd {
            per_class.push("bcd".into());
        }
        println!(
            "difftest: seed {} {} forms ({}; {} also as 32-bit code); {} forms skipped as unimplemented{}",
            args.seed,
            generator.templates.len(),
            per_class.join(" "),
            generator.count32(),
            unimplemented.len(),
            if args.strict { "; strict" } else { "" }
        );
    }
    let (mut emu, mut emu32) = (emu, emu32);
    if args.engine == "jit" {
        emu.use_jit();
        emu32.use_jit();
    }
    let mut runner = Runner {
        host,
        emu,
        emu32,
        ip0,
        mxcsr_mask,
    };
    let range = match args.only {
        Some(k) => k..k + 1,
        None => 0..args.cases,
    };
    let mut cases = 0u64;
    let mut mismatches = 0u64;
    // DIFFTEST_TRACE=1 prints each case before running it (to find a case that crashes).
    let trace = std::env::var_os("DIFFTEST_TRACE").is_some();
    let mut faults = [0u64; 32];
    let mut host_signals = [0u64; 32];
    for k in range {
        let mut rng = case_rng(args.seed, k);
        // Every 8th case is 32-bit code in compatibility mode.
        let compat = compat_ok
            && generator.has32()
            && (only_bcd || k % 8 == 7 || generator.templates.is_empty());
        let case = generator.case(&mut rng, ip0, compat);
        let width = if compat { Width::W32 } else { Width::W64 };
        if trace {
            let codes: Vec<String> = case
                .insns
                .iter()
                .map(|i| format!("{:?}", i.code()))
                .collect();
            eprintln!("case {k}: {} | {}", hex(&case.code), codes.join(" "));
        }
        if args.host_check {
            let mut hdata = case.data.clone();
            let fx = case.fp.to_fxsave(mxcsr_mask);
            let Ok(h) = runner
                .host
                .run(width, &case.gpr, case.rflags, &fx, &case.code, &mut hdata)
            else {
                continue;
            };
            let other = generator.case(&mut case_rng(args.seed ^ 0x5555, k), ip0, compat);
            let mut odata = other.data.clone();
            let ofx = other.fp.to_fxsave(mxcsr_mask);
            let _ = runner.host.run(
                width,
                &other.gpr,
                other.rflags,
                &ofx,
                &other.code,
                &mut odata,
            );
            let mut hdata2 = case.data.clone();
            let Ok(h2) =
                runner
                    .host
                    .run(width, &case.gpr, case.rflags, &fx, &case.code, &mut hdata2)
            else {
                continue;
            };
            cases += 1;
            if let Some((sig, _)) = h.fault {
                host_signals[sig as usize & 31] += 1;
            }
            let mut d = Vec::new();
            if h.gpr != h2.gpr || h.rflags != h2.rflags || h.fault != h2.fault {
                d.push(format!("gprs/flags/fault: {h:?} vs {h2:?}"));
            }
            if hdata != hdata2 {
                let diff: Vec<String> = (0..hdata.len())
                    .filter(|&i| hdata[i] != hdata2[i])
                    .take(16)
                    .map(|i| format!("+{i:#x}: {:02x} vs {:02x}", hdata[i], hdata2[i]))
                    .collect();
                d.push(format!("memory: {}", diff.join(", ")));
            }
            d.extend(fp::compare(&h.fp, &h2.fp));
            if !d.is_empty() {
                mismatches += 1;
                println!(
                    "HOST NONDETERMINISM case {k}: {} | {} | {}",
                    hex(&case.code),
                    codes_line(&case),
                    d.join("; ")
                );
            }
            continue;
        }
        let r = match runner.run(&case, compat) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("difftest: case {k}: {e}");
                continue;
            }
        };
        cases += 1;
        if let EmuEnd::Fault { vector, .. } = r.e.end {
            faults[vector as usize & 31] += 1;
        }
        if r.diffs.is_empty() {
            continue;
        }
        mismatches += 1;
        if mismatches <= args.detail {
            println!(
                "MISMATCH case {k} (reproduce: --seed {} --only {k}):",
                args.seed
            );
            runner.print_detail(&case, &r);
            if args.minimize {
                let (small, sr) = runner.minimize(&case, r, compat, args.strict);
                if small.insns.len() < case.insns.len() {
                    println!("  minimized to {} instructions:", small.insns.len());
                    runner.print_detail(&small, &sr);
                }
            }
        } else {
            println!(
                "MISMATCH case {k}: {} | {} | {}",
                hex(&case.code),
                codes_line(&case),
                r.diffs.join("; ")
            );
        }
    }
    let fl: Vec<String> = faults
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(v, n)| format!("{}={n}", hindsight_cpu::fault::vector::name(v as u8)))
        .collect();
    println!(
        "exceptions raised (and matched or not): {}",
        if fl.is_empty() {
            "none".into()
        } else {
            fl.join(" ")
        }
    );
    if args.host_check {
        let hs: Vec<String> = host_signals
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| format!("{}={n}", sig_name(s as i32)))
            .collect();
        println!("host signals: {}", hs.join(" "));
    }
    println!("cases={cases} mismatches={mismatches}");
    if mismatches > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
