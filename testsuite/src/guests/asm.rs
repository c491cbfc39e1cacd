//! A multi-bitness flat-image builder around iced-x86's [`CodeAssembler`].
//!
//! A [`CodeAssembler`] assembles code of one bitness, and its labels cannot
//! be referenced from another assembler. A guest that walks from real mode
//! to long mode needs 16-, 32- and 64-bit code in one image, jumping between
//! them. [`Builder`] solves this with *chunks* and *symbols*:
//!
//! - a chunk is a closure that emits code of one bitness ([`Builder::code`]),
//!   a closure that produces data bytes from the symbol table
//!   ([`Builder::data`]), or the string pool;
//! - chunks are laid out one after the other from the load address, and
//!   every chunk can export labels by name ([`Asm::export`]); any chunk can
//!   read any symbol's address ([`Asm::sym`]);
//! - the image is assembled repeatedly, each pass reading the addresses of
//!   the previous pass, until nothing moves (a fixpoint, usually after 3–4
//!   passes). An unknown symbol reads as the load address in the first pass.
//!
//! The same trick gives label addresses as immediates ([`Asm::addr_label`]),
//! which `code_asm` does not offer outside 64-bit mode, and a string pool
//! ([`Asm::str`]). [`Asm`] dereferences to the [`CodeAssembler`], so chunk
//! code reads like assembly: `a.mov(eax, 5)?`.
//!
//! Checks: [`Asm::check`] wraps the code of one named check; the
//! `expect_*` helpers inside it jump to the check's failure path with the
//! value seen, the value wanted and a description, and the library routine
//! prints `FAIL name (what: got 0x.., want 0x..)`. Otherwise the check
//! prints `PASS name`. The builder records every check name, so the image
//! can announce its plan (`PLAN n`) and names are checked to be unique.

use std::collections::{HashMap, HashSet};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use iced_x86::code_asm::*;
use iced_x86::{BlockEncoderOptions, Code, IcedError, Instruction};

use super::layout::*;

/// Result of emitting code.
pub type R = Result<(), IcedError>;

/// Symbol table of one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Syms {
    map: HashMap<String, u64>,
    default: u64,
}

impl Syms {
    /// Address of `name` (the load address if it is not known yet).
    pub fn get(&self, name: &str) -> u64 {
        self.map.get(name).copied().unwrap_or(self.default)
    }
    /// Address of `name` if it exists.
    pub fn try_get(&self, name: &str) -> Option<u64> {
        self.map.get(name).copied()
    }
}

type CodeFn = Rc<dyn Fn(&mut Asm) -> R>;
/// Exported symbols of one chunk: (name, address).
type Exports = Vec<(String, u64)>;
type DataFn = Rc<dyn Fn(&Syms) -> Vec<u8>>;

enum Body {
    Code { bits: u32, f: CodeFn },
    Data(DataFn),
    Pool,
}

/// Where a chunk goes; chunks are sorted by section, then insertion order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    /// The real-mode entry: first in the image.
    Entry,
    /// Other 16-bit code (must be reachable with 16-bit offsets).
    Code16,
    /// The string pool (reachable from 16-bit code too).
    Pool,
    /// Small data tables (GDT, IDT, TSS, descriptors).
    Data,
    /// 32- and 64-bit code.
    Code,
    /// Page-aligned data (page tables).
    Pages,
}

struct Chunk {
    name: String,
    align: u64,
    section: Section,
    body: Body,
}

/// Everything one pass produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Pass {
    syms: Syms,
    strings: Vec<String>,
    checks: Vec<String>,
}

/// A finished image.
#[derive(Clone, Debug)]
pub struct Built {
    /// The bytes, to be loaded at the builder's load address.
    pub bytes: Vec<u8>,
    /// Final symbol addresses.
    pub syms: Syms,
    /// Names of all checks, in emission order.
    pub checks: Vec<String>,
}

/// Builds one flat image from chunks of any bitness.
pub struct Builder {
    name: String,
    load_addr: u64,
    chunks: Vec<Chunk>,
}

impl Builder {
    /// An empty image loaded at `load_addr`.
    pub fn new(name: &str, load_addr: u64) -> Builder {
        Builder {
            name: name.to_string(),
            load_addr,
            chunks: Vec::new(),
        }
    }

    /// Adds a code chunk of `bits` (16, 32 or 64) in `section`. Its start
    /// address is exported as symbol `name`.
    pub fn code_in(
        &mut self,
        section: Section,
        name: &str,
        bits: u32,
        f: impl Fn(&mut Asm) -> R + 'static,
    ) -> &mut Self {
        self.chunks.push(Chunk {
            name: name.to_string(),
            align: 16,
            section,
            body: Body::Code {
                bits,
                f: Rc::new(f),
            },
        });
        self
    }

    /// Adds a code chunk; 16-bit chunks go before the pool, others after.
    pub fn code(
        &mut self,
        name: &str,
        bits: u32,
        f: impl Fn(&mut Asm) -> R + 'static,
    ) -> &mut Self {
        let section = if bits == 16 {
            Section::Code16
        } else {
            Section::Code
        };
        self.code_in(section, name, bits, f)
    }

    /// Adds a data chunk aligned to `align` whose bytes may depend on symbols.
    pub fn data(
        &mut self,
        name: &str,
        align: u64,
        f: impl Fn(&Syms) -> Vec<u8> + 'static,
    ) -> &mut Self {
        let section = if align >= 4096 {
            Section::Pages
        } else {
            Section::Data
        };
        self.chunks.push(Chunk {
            name: name.to_string(),
            align,
            section,
            body: Body::Data(Rc::new(f)),
        });
        self
    }

    /// Adds the string pool.
    pub fn pool(&mut self) -> &mut Self {
        self.chunks.push(Chunk {
            name: "pool".to_string(),
            align: 16,
            section: Section::Pool,
            body: Body::Pool,
        });
        self
    }

    /// Assembles to a fixpoint.
    pub fn build(&self) -> Result<Built, String> {
        let mut order: Vec<&Chunk> = self.chunks.iter().collect();
        order.sort_by_key(|c| c.section);
        let mut prev = Pass {
            syms: Syms {
                map: HashMap::new(),
                default: self.load_addr,
            },
            ..Pass::default()
        };
        let mut last_bytes = Vec::new();
        for _pass in 0..24 {
            let mut next = Pass {
                syms: Syms {
                    map: HashMap::new(),
                    default: self.load_addr,
                },
                ..Pass::default()
            };
            let mut interned: HashSet<String> = HashSet::new();
            let mut image: Vec<u8> = Vec::new();
            let mut pos = self.load_addr;
            for c in &order {
                let aligned = pos.div_ceil(c.align) * c.align;
                image.resize(image.len() + (aligned - pos) as usize, 0);
                pos = aligned;
                if next.syms.map.insert(c.name.clone(), pos).is_some() {
                    return Err(format!("{}: duplicate chunk name {}", self.name, c.name));
                }
                let bytes = match &c.body {
                    Body::Code { bits, f } => {
                        let mut asm = Asm {
                            a: CodeAssembler::new(*bits).map_err(|e| e.to_string())?,
                            bits: *bits,
                            chunk: c.name.clone(),
                            prev: &prev,
                            strings: &mut next.strings,
                            interned: &mut interned,
                            checks: &mut next.checks,
                            exports: Vec::new(),
                            auto: 0,
                            fail: None,
                            bound_at: None,
                        };
                        f(&mut asm).map_err(|e| format!("{}: chunk {}: {e}", self.name, c.name))?;
                        let (bytes, exports) = asm
                            .finish(pos)
                            .map_err(|e| format!("{}: chunk {}: {e}", self.name, c.name))?;
                        for (n, addr) in exports {
                            if next.syms.map.insert(n.clone(), addr).is_some() {
                                return Err(format!("{}: duplicate symbol {n}", self.name));
                            }
                        }
                        bytes
                    }
                    Body::Data(f) => f(&prev.syms),
                    Body::Pool => {
                        let mut bytes = Vec::new();
                        for s in &prev.strings {
                            next.syms
                                .map
                                .insert(format!("str:{s}"), pos + bytes.len() as u64);
                            bytes.extend_from_slice(s.as_bytes());
                            bytes.push(0);
                        }
                        bytes
                    }
                };
                pos += bytes.len() as u64;
                image.extend_from_slice(&bytes);
            }
            next.syms.map.insert("__end".to_string(), pos);
            if next == prev && image == last_bytes {
                let mut seen = HashSet::new();
                for c in &next.checks {
                    if !seen.insert(c) {
                        return Err(format!("{}: check name {c} used twice", self.name));
                    }
                }
                return Ok(Built {
                    bytes: image,
                    syms: next.syms,
                    checks: next.checks,
                });
            }
            prev = next;
            last_bytes = image;
        }
        Err(format!("{}: layout did not converge", self.name))
    }
}

/// A label whose address (from the previous pass) is known as a number.
#[derive(Clone, Copy, Debug)]
pub struct AddrLabel {
    /// The label, to bind with [`Asm::bind`].
    pub label: CodeLabel,
    /// Its address (as of the previous pass; final at the fixpoint).
    pub addr: u64,
}

/// The assembler handed to a code chunk.
pub struct Asm<'p> {
    /// The underlying assembler (also reachable through `Deref`).
    pub a: CodeAssembler,
    /// 16, 32 or 64.
    pub bits: u32,
    chunk: String,
    prev: &'p Pass,
    strings: &'p mut Vec<String>,
    interned: &'p mut HashSet<String>,
    checks: &'p mut Vec<String>,
    exports: Vec<(String, CodeLabel)>,
    auto: u32,
    fail: Option<CodeLabel>,
    bound_at: Option<usize>,
}

impl Deref for Asm<'_> {
    type Target = CodeAssembler;
    fn deref(&self) -> &CodeAssembler {
        &self.a
    }
}

impl DerefMut for Asm<'_> {
    fn deref_mut(&mut self) -> &mut CodeAssembler {
        &mut self.a
    }
}

impl Asm<'_> {
    fn finish(mut self, ip: u64) -> Result<(Vec<u8>, Exports), IcedError> {
        if self.bound_at == Some(self.a.instructions().len()) {
            self.a.nop()?;
        }
        let r = self
            .a
            .assemble_options(ip, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)?;
        let mut out = Vec::new();
        for (n, l) in &self.exports {
            out.push((n.clone(), r.label_ip(l)?));
        }
        Ok((r.inner.code_buffer, out))
    }

    /// Address of symbol `name` (previous pass).
    pub fn sym(&self, name: &str) -> u64 {
        self.prev.syms.get(name)
    }

    /// `sym` as an i32 immediate (all guest addresses are below 2 GiB).
    pub fn symi(&self, name: &str) -> i32 {
        self.sym(name) as i32
    }

    /// Whether symbol `name` existed in the previous pass.
    pub fn has_sym(&self, name: &str) -> bool {
        self.prev.syms.try_get(name).is_some()
    }

    /// Address of the NUL-terminated string `s` in the pool.
    pub fn str(&mut self, s: &str) -> u64 {
        if self.interned.insert(s.to_string()) {
            self.strings.push(s.to_string());
        }
        self.prev.syms.get(&format!("str:{s}"))
    }

    /// Number of checks in the whole image (previous pass).
    pub fn plan(&self) -> usize {
        self.prev.checks.len()
    }

    /// Binds `l` to the next instruction (inserting a NOP if another label is
    /// already bound there: `code_asm` allows one label per instruction).
    pub fn bind(&mut self, l: &mut CodeLabel) -> R {
        let n = self.a.instructions().len();
        if self.bound_at == Some(n) {
            self.a.nop()?;
        }
        self.a.set_label(l)?;
        self.bound_at = Some(self.a.instructions().len());
        // Labels are Copy: refresh exported copies made before binding.
        for e in &mut self.exports {
            if e.1 == *l {
                e.1 = *l;
            }
        }
        Ok(())
    }

    /// Exports `l` as symbol `name`.
    pub fn export(&mut self, name: &str, l: &CodeLabel) {
        self.exports.push((name.to_string(), *l));
    }

    /// Binds a fresh label here and exports it as `name`.
    pub fn here(&mut self, name: &str) -> R {
        let mut l = self.a.create_label();
        self.bind(&mut l)?;
        self.export(name, &l);
        Ok(())
    }

    /// A fresh label whose address is known (from the previous pass).
    pub fn addr_label(&mut self) -> AddrLabel {
        self.auto += 1;
        let name = format!("{}#{}", self.chunk, self.auto);
        let label = self.a.create_label();
        self.exports.push((name.clone(), label));
        AddrLabel {
            label,
            addr: self.prev.syms.get(&name),
        }
    }

    /// Emits raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> R {
        self.a.db(b)
    }

    /// `jmp far sel:off` with a 32-bit offset (correct in 16-bit code too,
    /// where `code_asm`'s `jmp_far` would truncate the offset).
    pub fn jmp_far32(&mut self, sel: u16, off: u32) -> R {
        self.a
            .add_instruction(Instruction::with_far_branch(Code::Jmp_ptr1632, sel, off)?)
    }

    /// `jmp far sel:off` with a 16-bit offset.
    pub fn jmp_far16(&mut self, sel: u16, off: u16) -> R {
        self.a.add_instruction(Instruction::with_far_branch(
            Code::Jmp_ptr1616,
            sel,
            u32::from(off),
        )?)
    }

    fn lib(&self, base: &str) -> u64 {
        self.sym(&format!("{base}{}", self.bits))
    }

    /// Prints `s` on COM1 (all registers preserved).
    pub fn print(&mut self, s: &str) -> R {
        let addr = self.str(s);
        let puts = self.lib("puts");
        match self.bits {
            64 => {
                self.a.push(rsi)?;
                self.a.mov(esi, addr as i32)?;
                self.a.call(puts)?;
                self.a.pop(rsi)
            }
            _ => {
                self.a.push(esi)?;
                self.a.mov(esi, addr as i32)?;
                self.a.call(puts)?;
                self.a.pop(esi)
            }
        }
    }

    /// Prints EAX (RAX in 64-bit code) in hex, `0x` prefixed; 8 digits, or
    /// 16 when the value has high bits in 64-bit code.
    pub fn print_hex_eax(&mut self) -> R {
        let f = self.lib("puthex");
        self.a.call(f)
    }

    /// Prints EAX (RAX) in decimal.
    pub fn print_dec_eax(&mut self) -> R {
        let f = self.lib("putdec");
        self.a.call(f)
    }

    /// Writes `v` to the debug-exit port (the machine ends the run with
    /// status `(v << 1) | 1`), then halts forever in case it did not.
    pub fn exit(&mut self, v: u8) -> R {
        self.a.mov(al, v as i32)?;
        self.a.out(0xF4, al)?;
        self.a.cli()?;
        let mut l = self.a.create_label();
        self.bind(&mut l)?;
        self.a.hlt()?;
        self.a.jmp(l)
    }

    /// Emits one check named `name`: `body` runs the test and uses the
    /// `expect_*` helpers; then `PASS name` or `FAIL name (...)` is printed.
    /// Control continues after the check in both cases.
    pub fn check(&mut self, name: &str, body: impl FnOnce(&mut Self) -> R) -> R {
        assert!(self.fail.is_none(), "nested check {name}");
        assert!(
            !name.contains(' ') && !name.is_empty(),
            "check names are single words: {name:?}"
        );
        self.checks.push(name.to_string());
        let mut fail = self.a.create_label();
        let mut done = self.a.create_label();
        self.fail = Some(fail);
        body(self)?;
        self.fail = None;
        self.print(&format!("PASS {name}\n"))?;
        self.a.jmp(done)?;
        self.bind(&mut fail)?;
        let pass_s = self.str(&format!("FAIL {name} ("));
        let rf = self.lib("report_fail");
        self.a.mov(esi, pass_s as i32)?;
        self.a.call(rf)?;
        self.bind(&mut done)
    }

    fn fail_label(&self) -> CodeLabel {
        self.fail.expect("expect_* used outside a check")
    }

    fn set_what(&mut self, what: &str) -> R {
        let w = self.str(what) as i32;
        self.a.mov(dword_ptr(V_WHAT), w)
    }

    /// Expects the 32-bit register `r` to hold `want`.
    pub fn expect_eq(&mut self, r: AsmRegister32, want: u32, what: &str) -> R {
        let fail = self.fail_label();
        let mut ok = self.a.create_label();
        self.a.cmp(r, want as i32)?;
        self.a.je(ok)?;
        self.a.mov(dword_ptr(V_GOT), r)?;
        self.a.mov(dword_ptr(V_GOT + 4), 0)?;
        self.a.mov(dword_ptr(V_WANT), want as i32)?;
        self.a.mov(dword_ptr(V_WANT + 4), 0)?;
        self.set_what(what)?;
        self.a.jmp(fail)?;
        self.bind(&mut ok)
    }

    /// Expects the 64-bit register `r` to hold `want` (64-bit code only).
    pub fn expect_eq64(&mut self, r: AsmRegister64, want: u64, what: &str) -> R {
        assert_eq!(self.bits, 64);
        let fail = self.fail_label();
        let mut ok = self.a.create_label();
        self.a.mov(qword_ptr(V_GOT), r)?;
        self.a.push(rax)?;
        self.a.mov(rax, want)?;
        self.a.mov(qword_ptr(V_WANT), rax)?;
        self.a.cmp(qword_ptr(V_GOT), rax)?;
        self.a.pop(rax)?;
        self.a.je(ok)?;
        self.set_what(what)?;
        self.a.jmp(fail)?;
        self.bind(&mut ok)
    }

    /// Expects the u32 at `addr` to be `want`.
    pub fn expect_mem(&mut self, addr: u64, want: u32, what: &str) -> R {
        let fail = self.fail_label();
        let mut ok = self.a.create_label();
        let (x, st) = self.scratch_push()?;
        self.a.mov(x, dword_ptr(addr))?;
        self.a.mov(dword_ptr(V_GOT), x)?;
        self.a.mov(dword_ptr(V_GOT + 4), 0)?;
        self.scratch_pop(st)?;
        self.a.cmp(dword_ptr(V_GOT), want as i32)?;
        self.a.je(ok)?;
        self.a.mov(dword_ptr(V_WANT), want as i32)?;
        self.a.mov(dword_ptr(V_WANT + 4), 0)?;
        self.set_what(what)?;
        self.a.jmp(fail)?;
        self.bind(&mut ok)
    }

    /// Expects the u32 at `addr`, masked with `mask`, to be `want`.
    pub fn expect_mem_masked(&mut self, addr: u64, mask: u32, want: u32, what: &str) -> R {
        let fail = self.fail_label();
        let mut ok = self.a.create_label();
        let (x, st) = self.scratch_push()?;
        self.a.mov(x, dword_ptr(addr))?;
        self.a.and(x, mask as i32)?;
        self.a.mov(dword_ptr(V_GOT), x)?;
        self.a.mov(dword_ptr(V_GOT + 4), 0)?;
        self.scratch_pop(st)?;
        self.a.cmp(dword_ptr(V_GOT), want as i32)?;
        self.a.je(ok)?;
        self.a.mov(dword_ptr(V_WANT), want as i32)?;
        self.a.mov(dword_ptr(V_WANT + 4), 0)?;
        self.set_what(what)?;
        self.a.jmp(fail)?;
        self.bind(&mut ok)
    }

    /// Expects the u64 at `addr` to be `want`.
    pub fn expect_mem64(&mut self, addr: u64, want: u64, what: &str) -> R {
        let fail = self.fail_label();
        let mut ok = self.a.create_label();
        let mut bad = self.a.create_label();
        let (x, st) = self.scratch_push()?;
        self.a.mov(x, dword_ptr(addr))?;
        self.a.mov(dword_ptr(V_GOT), x)?;
        self.a.mov(x, dword_ptr(addr + 4))?;
        self.a.mov(dword_ptr(V_GOT + 4), x)?;
        self.scratch_pop(st)?;
        self.a.cmp(dword_ptr(V_GOT), want as u32 as i32)?;
        self.a.jne(bad)?;
        self.a
            .cmp(dword_ptr(V_GOT + 4), (want >> 32) as u32 as i32)?;
        self.a.je(ok)?;
        self.bind(&mut bad)?;
        self.a.mov(dword_ptr(V_WANT), want as u32 as i32)?;
        self.a
            .mov(dword_ptr(V_WANT + 4), (want >> 32) as u32 as i32)?;
        self.set_what(what)?;
        self.a.jmp(fail)?;
        self.bind(&mut ok)
    }

    /// Fails the check unless the condition emitted by `jump_if_ok` (a
    /// conditional jump to the label it is given) is taken. Reports got 0,
    /// want 1.
    pub fn expect_that(
        &mut self,
        what: &str,
        jump_if_ok: impl FnOnce(&mut CodeAssembler, CodeLabel) -> R,
    ) -> R {
        let fail = self.fail_label();
        let mut ok = self.a.create_label();
        jump_if_ok(&mut self.a, ok)?;
        self.a.mov(dword_ptr(V_GOT), 0)?;
        self.a.mov(dword_ptr(V_GOT + 4), 0)?;
        self.a.mov(dword_ptr(V_WANT), 1)?;
        self.a.mov(dword_ptr(V_WANT + 4), 0)?;
        self.set_what(what)?;
        self.a.jmp(fail)?;
        self.bind(&mut ok)
    }

    /// Expects the vector, error code (if `err` is `Some`) of the last
    /// exception recorded by the library handlers.
    pub fn expect_exception(&mut self, vector: u32, err: Option<u32>) -> R {
        self.expect_mem(V_VEC, vector, "exception vector")?;
        if let Some(e) = err {
            self.expect_mem(V_ERR, e, "error code")?;
        }
        Ok(())
    }

    /// Expects the recorded saved instruction pointer to be `ip`.
    pub fn expect_fault_ip(&mut self, ip: u64) -> R {
        self.expect_mem64(V_FRAME, ip, "saved instruction pointer")
    }

    /// Expects the recorded CR2 to be `cr2`.
    pub fn expect_cr2(&mut self, value: u64) -> R {
        if self.bits == 64 {
            self.expect_mem64(V_CR2, value, "CR2")
        } else {
            self.expect_mem(V_CR2, value as u32, "CR2")
        }
    }

    fn scratch_push(&mut self) -> Result<(AsmRegister32, bool), IcedError> {
        if self.bits == 64 {
            self.a.push(rax)?;
        } else {
            self.a.push(eax)?;
        }
        Ok((eax, true))
    }

    fn scratch_pop(&mut self, _st: bool) -> R {
        if self.bits == 64 {
            self.a.pop(rax)
        } else {
            self.a.pop(eax)
        }
    }

    /// Arms the library exception handlers, runs `body` (which should
    /// fault), and continues after it with the stack pointer as it was
    /// before `body`. If `body` does not fault, V_VEC stays 0xFFFF_FFFF.
    /// Returns nothing; use `expect_exception` and friends afterwards.
    /// Only for 32- and 64-bit ring-0 code with the library IDT loaded.
    pub fn expect_fault(&mut self, body: impl FnOnce(&mut Self) -> R) -> R {
        let mut after = self.addr_label();
        self.a.mov(dword_ptr(V_VEC), -1)?;
        self.a.mov(dword_ptr(V_RESUME_IP + 4), 0)?;
        self.a.mov(dword_ptr(V_RESUME_IP), after.addr as i32)?;
        if self.bits == 64 {
            self.a.mov(qword_ptr(V_RESUME_SP), rsp)?;
        } else {
            self.a.mov(dword_ptr(V_RESUME_SP), esp)?;
            self.a.mov(dword_ptr(V_RESUME_SP + 4), 0)?;
        }
        body(self)?;
        self.bind(&mut after.label)?;
        self.a.mov(dword_ptr(V_RESUME_IP), 0)
    }

    /// Arms the resume point like [`Asm::expect_fault`] but returns the
    /// label to bind later (for flows that leave through ring 3 and come
    /// back through an interrupt).
    pub fn arm_resume(&mut self) -> Result<AddrLabel, IcedError> {
        let after = self.addr_label();
        self.a.mov(dword_ptr(V_VEC), -1)?;
        self.a.mov(dword_ptr(V_RESUME_IP + 4), 0)?;
        self.a.mov(dword_ptr(V_RESUME_IP), after.addr as i32)?;
        if self.bits == 64 {
            self.a.mov(qword_ptr(V_RESUME_SP), rsp)?;
        } else {
            self.a.mov(dword_ptr(V_RESUME_SP), esp)?;
            self.a.mov(dword_ptr(V_RESUME_SP + 4), 0)?;
        }
        Ok(after)
    }

    /// Binds a label from [`Asm::arm_resume`] and disarms.
    pub fn resume_here(&mut self, mut after: AddrLabel) -> R {
        self.bind(&mut after.label)?;
        self.a.mov(dword_ptr(V_RESUME_IP), 0)
    }
}
