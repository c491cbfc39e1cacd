//! Differential tester: hindsight's interpreter against the host CPU.
//!
//! `difftest --cases N --seed S` generates N random 64-bit user-mode
//! instruction sequences (1–8 instructions each, plus the MOVs that set up
//! their address registers and some operand values), runs each natively on
//! the host (see `difftest/host.rs`) and in the interpreter (see
//! `difftest/emu.rs`) from the same random registers, RFLAGS (status flags and
//! DF) and 16 KiB of random scratch memory, and compares all 16 GPRs, the
//! status flags and DF, the scratch memory and how the run ended (normally,
//! or with which exception at which instruction: #DE ↔ SIGFPE, #UD ↔ SIGILL,
//! #GP/#PF ↔ SIGSEGV, #SS/#AC ↔ SIGBUS). The last line is
//! `cases=N mismatches=M`; the exit status is non-zero when M > 0.
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
//! muldiv, bits, data, string, bcd), `--max-len 1` (one instruction per case),
//! `--only K` (reproduce case K of a seed), `--list`, and the environment
//! variable `DIFFTEST_TRACE=1` (print each case before running it).

#[path = "difftest/emu.rs"]
mod emu;
#[path = "difftest/gen.rs"]
mod gen;
#[path = "difftest/host.rs"]
mod host;
#[path = "difftest/rng.rs"]
mod rng;

use std::process::ExitCode;

use clap::Parser;
use iced_x86::Instruction;

use emu::{Emu, EmuEnd, EmuOut};
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
hindsight's interpreter from the same state, and compares all 16 GPRs, the status flags and DF, 16 KiB \
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
    /// Restrict to one class (alu, xadd-cmpxchg, shift, muldiv, bits, data, string, bcd).
    #[arg(long)]
    class: Option<String>,
    /// Leave out a class (repeatable).
    #[arg(long)]
    exclude: Vec<String>,
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
        0 => Some(libc::SIGFPE),
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
    (d, mask)
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
    let mut generator = Generator::new(
        gen::templates(&features),
        host.data_addr(),
        DATA_SIZE as u64,
        args.strict,
    );
    generator.max_len = args.max_len.clamp(1, 8);
    generator.fs_base = fs_base;
    generator.gs_base = gs_base;
    // BCD exists only in 32-bit code, run in compatibility mode (all cases with --class bcd).
    let mut bcd = true;
    let mut only_bcd = false;
    if let Some(c) = &args.class {
        let Some(class) = Class::ALL.iter().find(|k| k.name() == c) else {
            eprintln!("difftest: unknown class {c}");
            return ExitCode::from(2);
        };
        generator.retain(|t| t.class == *class);
        only_bcd = *class == Class::Bcd;
        bcd = only_bcd;
    }
    for c in &args.exclude {
        let Some(class) = Class::ALL.iter().find(|k| k.name() == c) else {
            eprintln!("difftest: unknown class {c}");
            return ExitCode::from(2);
        };
        generator.retain(|t| t.class != *class);
        if *class == Class::Bcd {
            bcd = false;
        }
    }
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
            let out = emu32.run(&[insn], &handlers, &[0; 16], 0x202, &mut data, ip0 + 1);
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
    let range = match args.only {
        Some(k) => k..k + 1,
        None => 0..args.cases,
    };
    let mut cases = 0u64;
    let mut mismatches = 0u64;
    // DIFFTEST_TRACE=1 prints each case before running it (to find a case that crashes).
    let trace = std::env::var_os("DIFFTEST_TRACE").is_some();
    let mut faults = [0u64; 32];
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
        let mut hdata = case.data.clone();
        let h = match host.run(width, &case.gpr, case.rflags, &case.code, &mut hdata) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("difftest: case {k}: {e}");
                continue;
            }
        };
        let mut gpr = case.gpr;
        gpr[4] = host.code_rsp();
        let handlers = Emu::handlers(&case.insns);
        let mut edata = case.data.clone();
        let end = ip0 + case.code.len() as u64;
        let e = if compat {
            emu32.run(&case.insns, &handlers, &gpr, case.rflags, &mut edata, end)
        } else {
            emu.run(&case.insns, &handlers, &gpr, case.rflags, &mut edata, end)
        };
        cases += 1;
        if let EmuEnd::Fault { vector, .. } = e.end {
            faults[vector as usize & 31] += 1;
        }
        let (diffs, mask) = compare(&case, &h, &hdata, &e, &edata, compat);
        if diffs.is_empty() {
            continue;
        }
        mismatches += 1;
        if mismatches <= args.detail {
            println!(
                "MISMATCH case {k} (reproduce: --seed {} --only {k}):",
                args.seed
            );
            for insn in &case.insns {
                println!(
                    "  {:#x}: {:<30} {:?}{}",
                    insn.ip(),
                    hex(insn_bytes(&case, insn, ip0)),
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
                regs_line(&gpr),
                case.rflags,
                flag_names(case.rflags & COMPARED)
            );
            println!(
                "  host:    {}rflags={:#x}",
                regs_line(&h.gpr),
                h.rflags & COMPARED
            );
            println!(
                "  interp:  {}rflags={:#x}",
                regs_line(&e.gpr),
                e.rflags & COMPARED
            );
            if mask != 0 {
                println!("  masked (undefined): {}", flag_names(mask));
            }
            for d in &diffs {
                println!("  {d}");
            }
        } else {
            let codes: Vec<String> = case
                .insns
                .iter()
                .map(|i| format!("{:?}", i.code()))
                .collect();
            println!(
                "MISMATCH case {k}: {} | {} | {}",
                hex(&case.code),
                codes.join(" "),
                diffs.join("; ")
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
    println!("cases={cases} mismatches={mismatches}");
    if mismatches > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
