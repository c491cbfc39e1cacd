//! End-to-end tests of the `hindsight` program on multiboot kernels.
//!
//! Each test writes an ELF32 multiboot kernel (assembled here with iced-x86,
//! the ELF bytes written by hand in `common/mod.rs`: ELF header, one PT_LOAD
//! program header, the multiboot header in the first 8 KiB), runs the real
//! binary, and checks what a user sees: the guest's console output, the
//! process exit status (QEMU's isa-debug-exit convention: the guest writes
//! v to port 0xf4, the status is (v << 1) | 1), and the error report for
//! bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{elf32_multiboot, good_checksum, CODE_OFF, LOAD};
use hindsight_testsuite::iced_x86::code_asm::*;

fn hindsight() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hindsight"))
}

fn tmp_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hindsight-cli-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Prints the NUL-terminated string `s` (call-over-data: the string's
/// address is popped into ESI). Clobbers ESI.
fn print_lit(a: &mut CodeAssembler, puts: CodeLabel, s: &str) -> Result<(), IcedError> {
    let mut after = a.create_label();
    a.call(after)?;
    let mut bytes = s.as_bytes().to_vec();
    bytes.push(0);
    a.db(&bytes)?;
    a.set_label(&mut after)?;
    a.pop(esi)?;
    a.call(puts)
}

/// A kernel that prints its command line, its modules (string and
/// contents) from the multiboot information, then writes 0x21 to port 0xf4
/// (exit status 0x43 = 67). A bad boot magic writes 0x7f instead.
fn info_kernel() -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    let (mut putc, mut puts, mut bad, mut done) = (
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
    );
    let (mut each, mut data, mut data_end) = (a.create_label(), a.create_label(), a.create_label());
    a.mov(esp, 0x8_0000).unwrap();
    a.cmp(eax, 0x2BAD_B002u32 as i32).unwrap();
    a.jne(bad).unwrap();
    a.mov(ebp, ebx).unwrap();
    print_lit(&mut a, puts, "cmdline: ").unwrap();
    a.mov(esi, dword_ptr(ebp + 16)).unwrap();
    a.call(puts).unwrap();
    print_lit(&mut a, puts, "\nmodules: ").unwrap();
    a.mov(ecx, dword_ptr(ebp + 20)).unwrap();
    a.mov(edi, dword_ptr(ebp + 24)).unwrap();
    a.mov(eax, ecx).unwrap();
    a.add(al, b'0' as i32).unwrap();
    a.call(putc).unwrap();
    print_lit(&mut a, puts, "\n").unwrap();
    a.test(ecx, ecx).unwrap();
    a.jz(done).unwrap();
    a.set_label(&mut each).unwrap();
    print_lit(&mut a, puts, "module string: ").unwrap();
    a.mov(esi, dword_ptr(edi + 8)).unwrap();
    a.call(puts).unwrap();
    print_lit(&mut a, puts, "\nmodule data: ").unwrap();
    a.mov(esi, dword_ptr(edi)).unwrap();
    a.mov(edx, dword_ptr(edi + 4)).unwrap();
    a.set_label(&mut data).unwrap();
    a.cmp(esi, edx).unwrap();
    a.jae(data_end).unwrap();
    a.mov(al, byte_ptr(esi)).unwrap();
    a.call(putc).unwrap();
    a.inc(esi).unwrap();
    a.jmp(data).unwrap();
    a.set_label(&mut data_end).unwrap();
    print_lit(&mut a, puts, "\n").unwrap();
    a.add(edi, 16).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(each).unwrap();
    a.set_label(&mut done).unwrap();
    a.mov(al, 0x21).unwrap();
    a.out(0xF4, al).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut bad).unwrap();
    a.mov(al, 0x7F).unwrap();
    a.out(0xF4, al).unwrap();
    a.hlt().unwrap();
    // putc: AL to COM1 after LSR.THRE.
    a.set_label(&mut putc).unwrap();
    a.push(edx).unwrap();
    a.push(eax).unwrap();
    a.mov(dx, 0x3FD).unwrap();
    let mut wait = a.create_label();
    a.set_label(&mut wait).unwrap();
    a.in_(al, dx).unwrap();
    a.test(al, 0x20).unwrap();
    a.jz(wait).unwrap();
    a.pop(eax).unwrap();
    a.mov(dx, 0x3F8).unwrap();
    a.out(dx, al).unwrap();
    a.pop(edx).unwrap();
    a.ret().unwrap();
    // puts: ESI.
    a.set_label(&mut puts).unwrap();
    a.push(eax).unwrap();
    a.push(esi).unwrap();
    let (mut lp, mut end) = (a.create_label(), a.create_label());
    a.set_label(&mut lp).unwrap();
    a.mov(al, byte_ptr(esi)).unwrap();
    a.test(al, al).unwrap();
    a.jz(end).unwrap();
    a.call(putc).unwrap();
    a.inc(esi).unwrap();
    a.jmp(lp).unwrap();
    a.set_label(&mut end).unwrap();
    a.pop(esi).unwrap();
    a.pop(eax).unwrap();
    a.ret().unwrap();
    a.assemble(LOAD + CODE_OFF as u64).unwrap()
}

/// A kernel that loads an empty IDT and executes UD2: #UD cannot be
/// delivered (#GP), nor can the #GP (#DF), nor the #DF: triple fault.
fn triple_fault_kernel() -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut idtr = a.create_label();
    let mut go = a.create_label();
    a.jmp(go).unwrap();
    a.set_label(&mut idtr).unwrap();
    a.db(&[0, 0, 0, 0, 0, 0]).unwrap(); // limit 0, base 0
    a.set_label(&mut go).unwrap();
    a.mov(eax, (LOAD + CODE_OFF as u64 + 2) as i32).unwrap(); // address of idtr (after the short jmp)
    a.lidt(ptr(eax)).unwrap();
    a.ud2().unwrap();
    a.hlt().unwrap();
    let code = a.assemble(LOAD + CODE_OFF as u64).unwrap();
    assert_eq!(&code[2..8], &[0u8; 6], "idtr right after the 2-byte jmp");
    assert_eq!(&code[16..18], &[0x0F, 0x0B], "ud2 at offset 16");
    code
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn show(o: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn multiboot_kernel_sees_cmdline_and_module_and_exit_status_follows_debug_exit() {
    let dir = tmp_dir("mb");
    let kernel = write(
        &dir,
        "kernel.elf",
        &elf32_multiboot(&info_kernel(), 3, good_checksum(3)),
    );
    let module = write(&dir, "initrd.txt", b"MODULE-CONTENTS-42");
    let o = hindsight()
        .arg("run")
        .arg("--multiboot")
        .arg(&kernel)
        .arg("--append")
        .arg("console=ttyS0 hello=world")
        .arg("--module")
        .arg(format!("{},mod-arg x=2", module.display()))
        .output()
        .expect("run hindsight");
    println!("{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("cmdline: "), "no cmdline line\n{}", show(&o));
    assert!(
        out.contains("hello=world"),
        "command line not seen by the guest\n{}",
        show(&o)
    );
    assert!(out.contains("modules: 1"), "module count\n{}", show(&o));
    assert!(
        out.contains("mod-arg x=2"),
        "module string not seen by the guest\n{}",
        show(&o)
    );
    assert!(
        out.contains("module data: MODULE-CONTENTS-42\n"),
        "module contents not seen by the guest\n{}",
        show(&o)
    );
    assert_eq!(
        o.status.code(),
        Some((0x21 << 1) | 1),
        "exit status (v << 1) | 1 for v = 0x21\n{}",
        show(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn malformed_multiboot_checksum_is_a_clear_error() {
    let dir = tmp_dir("bad");
    let kernel = write(
        &dir,
        "bad.elf",
        &elf32_multiboot(&info_kernel(), 3, good_checksum(3) ^ 1),
    );
    let o = hindsight()
        .arg("run")
        .arg("--multiboot")
        .arg(&kernel)
        .output()
        .expect("run hindsight");
    println!("{}", show(&o));
    assert!(
        !o.status.success(),
        "a malformed kernel must fail\n{}",
        show(&o)
    );
    assert!(
        o.status.code().is_some(),
        "must exit, not crash\n{}",
        show(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(
        err.contains("checksum"),
        "error must name the problem\n{}",
        show(&o)
    );
    assert!(
        err.contains("0x60"),
        "error must give the file offset of the header\n{}",
        show(&o)
    );
    assert!(!err.contains("panicked"), "no panic\n{}", show(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_kernel_file_is_a_clear_error() {
    let o = hindsight()
        .arg("run")
        .arg("--multiboot")
        .arg("/nonexistent/hindsight-kernel.elf")
        .output()
        .expect("run hindsight");
    assert!(!o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("hindsight-kernel.elf"),
        "error must name the file\n{}",
        show(&o)
    );
    assert!(!err.contains("panicked"), "no panic\n{}", show(&o));
}

#[test]
fn triple_fault_is_reported_with_where_it_happened() {
    let dir = tmp_dir("tf");
    let kernel = write(
        &dir,
        "tf.elf",
        &elf32_multiboot(&triple_fault_kernel(), 3, good_checksum(3)),
    );
    let o = hindsight()
        .arg("run")
        .arg("--multiboot")
        .arg(&kernel)
        .output()
        .expect("run hindsight");
    println!("{}", show(&o));
    assert!(
        !o.status.success(),
        "a triple fault must fail the run\n{}",
        show(&o)
    );
    assert!(
        o.status.code().is_some(),
        "must exit, not crash\n{}",
        show(&o)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let low = all.to_lowercase();
    assert!(
        low.contains("triple fault"),
        "report must say triple fault\n{}",
        show(&o)
    );
    assert!(
        low.contains("icount"),
        "report must give the instruction count\n{}",
        show(&o)
    );
    assert!(
        low.contains("protected mode"),
        "report must give the mode\n{}",
        show(&o)
    );
    let ud2_at = LOAD + CODE_OFF as u64 + 16; // jmp(2) idtr(6) mov eax(5) lidt [eax](3)
    assert!(
        low.contains(&format!("{ud2_at:x}")),
        "report must give the faulting RIP {ud2_at:#x}\n{}",
        show(&o)
    );
    assert!(
        low.contains("0f 0b"),
        "report must show the instruction bytes (ud2 = 0f 0b)\n{}",
        show(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--engine check` runs the multiboot guest under the JIT with an
/// interpreter twin in lockstep: same output and exit status as a plain
/// run; a command that cannot run a twin refuses it by name.
#[test]
fn engine_check_runs_a_guest_in_lockstep_and_is_refused_where_it_cannot() {
    let dir = tmp_dir("check");
    let kernel = write(
        &dir,
        "kernel.elf",
        &elf32_multiboot(&info_kernel(), 3, good_checksum(3)),
    );
    let run = |engine: &str| {
        hindsight()
            .args(["run", "--engine", engine, "--multiboot"])
            .arg(&kernel)
            .output()
            .expect("run hindsight")
    };
    let plain = run("interp");
    let checked = run("check");
    assert_eq!(
        checked.status.code(),
        Some((0x21 << 1) | 1),
        "{}",
        show(&checked)
    );
    assert_eq!(checked.stdout, plain.stdout, "{}", show(&checked));
    let err = String::from_utf8_lossy(&checked.stderr);
    assert!(
        err.contains("checking the JIT against the interpreter"),
        "{}",
        show(&checked)
    );
    let o = hindsight()
        .args(["bench", "--engine", "check"])
        .output()
        .expect("run hindsight bench");
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--engine check runs under 'run'"),
        "{}",
        show(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
