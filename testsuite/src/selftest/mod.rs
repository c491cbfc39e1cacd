//! The selftest: guests that check the emulator from the inside, and the
//! runner behind `hindsight selftest`.
//!
//! Each guest starts in real mode (see [`crate::guests`]), announces its
//! plan (`PLAN n`), prints one `PASS name` or `FAIL name (detail)` line per
//! check, and exits by writing 0 to port 0xF4. The runner counts the lines.
//! A guest that stops early — triple fault, unimplemented instruction,
//! deadlock, instruction limit, an exception nobody expected — counts as one
//! failure with the stop report, and every planned check it never reported
//! counts as failed too.
//!
//! | guest    | covers |
//! |----------|--------|
//! | `real`   | real mode: the first RDTSC, arithmetic and flags, segment arithmetic, far calls, IVT software interrupts, #DE and #UD through the IVT, MUL/DIV, 16-bit string wrap, DF=1, LES, unreal mode, COM1 polled receive |
//! | `pmode`  | entering protected mode, CPUID, RDTSC, CMPXCHG8B, BT*, MUL/DIV, SHLD/SHRD, string instructions, XADD/CMPXCHG, #DE #UD #BP #OF #GP #NP #DF #DB (TF, DR7), RDMSR of an unknown MSR, PAT, self-modifying code, LDT, back to real mode, #BR |
//! | `paging` | 32-bit paging (4 KiB, 4 MiB pages), accessed/dirty bits, INVLPG, CR3 reload, #PF error codes and CR2 (not present, write, user, WP, fetch and store across a page end, REP STOS stopped mid-way), PAE with NX |
//! | `rings`  | ring 3 through IRET, interrupt gates and the TSS stack switch, #GP from ring 3 (privileged instructions, gate DPL, selector DPL, I/O), the TSS I/O bitmap, call gates, SYSENTER/SYSEXIT |
//! | `v86`    | virtual-8086 mode: IRET with VM=1, INT to the ring-0 monitor, #GP on HLT / INT with IOPL<3 / I/O without bitmap, I/O allowed by the bitmap |
//! | `long`   | long mode and compatibility mode (rings 0 and 3), 4-level paging, the high half, 2 MiB dirty bits, #PF (NX, reserved bit, fetch across a page end) / #GP / #SS in 64-bit mode, #DF on IST1, CMPXCHG16B, 128-bit DIV, FS/GS base and SWAPGS, RIP-relative addressing, 64-bit and a32 string ops, SYSCALL/SYSRET, RSP0 |
//! | `insns`  | instructions a kernel relies on: CMOV/SETcc, BSF/BSR/BSWAP, 128-bit MUL, shift masks, ENTER/LEAVE, IRETQ, INT3/UD2, SGDT/SIDT/STR/CR8, POPCNT and RDTSCP consistent with CPUID, NOP hints, fences |
//! | `timer`  | the PIT and PIC on virtual time: IRQ0 in real mode, an exact interrupt count, the HLT wake-up period, masking, EOI, the STI shadow, the PIT counter and channel 2 against the TSC, COM1 receive interrupts |

mod insns;
mod long;
mod paging;
mod pmode;
mod real;
mod rings;
mod timer;
mod v86;

use hindsight_machine::{Engine, Exit, Machine, MachineConfig};

use crate::guests::BuiltGuest;

/// Guest RAM of each selftest machine.
pub const MEMORY: u64 = 64 << 20;
/// Instruction budget of each selftest guest (virtual time, generous: the
/// largest guest needs about 30 million).
pub const MAX_INSNS: u64 = 200_000_000;

/// One selftest guest.
pub struct SelftestGuest {
    /// Name.
    pub name: &'static str,
    /// Builds its image.
    pub build: fn() -> BuiltGuest,
    /// Bytes queued for the COM1 receiver before the guest starts.
    pub input: &'static [u8],
}

/// All selftest guests, in the order they run.
pub fn guests() -> Vec<SelftestGuest> {
    vec![
        SelftestGuest {
            name: "real",
            build: real::build,
            input: b"ping",
        },
        SelftestGuest {
            name: "pmode",
            build: pmode::build,
            input: b"",
        },
        SelftestGuest {
            name: "paging",
            build: paging::build,
            input: b"",
        },
        SelftestGuest {
            name: "rings",
            build: rings::build,
            input: b"",
        },
        SelftestGuest {
            name: "v86",
            build: v86::build,
            input: b"",
        },
        SelftestGuest {
            name: "long",
            build: long::build,
            input: b"",
        },
        SelftestGuest {
            name: "insns",
            build: insns::build,
            input: b"",
        },
        SelftestGuest {
            name: "timer",
            build: timer::build,
            input: b"irq!",
        },
    ]
}

/// What one guest run produced.
#[derive(Clone, Debug)]
pub struct GuestReport {
    /// Guest name.
    pub name: &'static str,
    /// The PASS/FAIL lines, as printed (plus runner-made FAIL lines).
    pub lines: Vec<String>,
    /// Checks passed.
    pub passed: usize,
    /// Checks failed (including the early stop and unreached checks).
    pub failed: usize,
    /// How the machine stopped.
    pub exit: Exit,
    /// Full console output.
    pub console: String,
}

/// Runs one built guest in a fresh machine on the default engine
/// ([`Engine::from_env`]) and counts its checks.
pub fn run_guest(name: &'static str, g: &BuiltGuest, input: &[u8]) -> GuestReport {
    run_guest_on(Engine::from_env(), name, g, input)
}

/// [`run_guest`] with the given execution engine.
pub fn run_guest_on(
    engine: Engine,
    name: &'static str,
    g: &BuiltGuest,
    input: &[u8],
) -> GuestReport {
    let cfg = MachineConfig {
        memory: MEMORY,
        max_insns: Some(MAX_INSNS),
        engine,
        ..MachineConfig::default()
    };
    let mut lines = Vec::new();
    let mut passed = 0;
    let mut failed = 0;
    let plan = g.checks.len();
    let mut m = match Machine::new(&cfg) {
        Ok(m) => m,
        Err(e) => {
            return GuestReport {
                name,
                lines: vec![format!("FAIL {name} (cannot create the machine: {e})")],
                passed: 0,
                failed: plan + 1,
                exit: Exit::InsnLimit,
                console: String::new(),
            }
        }
    };
    if let Err(e) = m.load_flat(&g.image.bytes, g.image.load_addr, g.image.entry) {
        return GuestReport {
            name,
            lines: vec![format!("FAIL {name} (cannot load the image: {e})")],
            passed: 0,
            failed: plan + 1,
            exit: Exit::InsnLimit,
            console: String::new(),
        };
    }
    m.console_input(input);
    let exit = m.run();
    let console = String::from_utf8_lossy(&m.take_console_output()).into_owned();
    let mut reported = std::collections::HashSet::new();
    let mut last_unexpected = false;
    for line in console.lines() {
        if let Some(rest) = line.strip_prefix("PASS ") {
            passed += 1;
            reported.insert(rest.split(' ').next().unwrap_or("").to_string());
            lines.push(line.to_string());
            last_unexpected = false;
        } else if let Some(rest) = line.strip_prefix("FAIL ") {
            failed += 1;
            let n = rest.split(' ').next().unwrap_or("").to_string();
            last_unexpected = n == "unexpected_exception";
            reported.insert(n);
            lines.push(line.to_string());
        }
    }
    let normal = exit == Exit::DebugExit(1);
    if !normal && !last_unexpected {
        failed += 1;
        let icount = m.icount();
        lines.push(format!(
            "FAIL {name} (guest stopped early at icount {icount}: {exit})"
        ));
    }
    let missing: Vec<&String> = g.checks.iter().filter(|c| !reported.contains(*c)).collect();
    if !missing.is_empty() {
        failed += missing.len();
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        lines.push(format!(
            "FAIL {name}_unreached ({} planned checks never reported: {})",
            missing.len(),
            names.join(", ")
        ));
    }
    GuestReport {
        name,
        lines,
        passed,
        failed,
        exit,
        console,
    }
}

/// Runs every selftest guest in a fresh machine on the default engine
/// ([`Engine::from_env`]), streams each PASS/FAIL line through `out` (one
/// line per call, no trailing newline), and returns (passed, failed).
pub fn run_all(out: &mut dyn FnMut(&str)) -> (usize, usize) {
    run_all_on(Engine::from_env(), out)
}

/// [`run_all`] with the given execution engine.
pub fn run_all_on(engine: Engine, out: &mut dyn FnMut(&str)) -> (usize, usize) {
    let mut passed = 0;
    let mut failed = 0;
    for sg in guests() {
        let built = (sg.build)();
        out(&format!(
            "== {} ({} checks, {} bytes)",
            sg.name,
            built.checks.len(),
            built.image.bytes.len()
        ));
        let r = run_guest_on(engine, sg.name, &built, sg.input);
        for l in &r.lines {
            out(l);
        }
        passed += r.passed;
        failed += r.failed;
    }
    (passed, failed)
}

/// Names of every check of every selftest guest.
pub fn all_checks() -> Vec<String> {
    guests().iter().flat_map(|g| (g.build)().checks).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_assemble_with_unique_check_names() {
        let all = all_checks();
        let mut seen = std::collections::HashSet::new();
        for c in &all {
            assert!(seen.insert(c.clone()), "duplicate check {c}");
        }
        assert!(all.len() >= 40, "only {} checks", all.len());
    }
}
