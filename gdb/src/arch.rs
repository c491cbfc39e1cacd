//! The three register views gdb can be shown, as gdbstub [`Arch`]es.
//!
//! One table per view lists every register gdb sees, in packet order; the
//! target description XML and the `g`/`G` packet layout are both generated
//! from it, so they cannot disagree.
//!
//! | view | `<architecture>` | features (in order) | `g` bytes |
//! |---|---|---|---|
//! | `x86-64` | `i386:x86-64` | core (rax.. gdb order, rip, eflags, cs ss ds es fs gs, st0-7, fctrl..fop), sse (xmm0-15, mxcsr), segments (fs_base, gs_base), sys (k_gs_base, cr0 cr2 cr3 cr4 cr8, efer) | 608 |
//! | `i386` | `i386` | core (eax ecx edx ebx esp ebp esi edi, eip, eflags, segments, x87), sse (xmm0-7, mxcsr), sys (fs_base, gs_base, cr0 cr2 cr3 cr4 cr8, efer) | 344 |
//! | `i8086` | `i8086` | as `i386` | 344 |
//!
//! The program counter gdb sees (`rip`/`eip`) is the *linear* address of
//! the next instruction: CS.base + rIP outside 64-bit mode (truncated to 32
//! bits), rIP in 64-bit mode. So in real mode `$pc` is CS*16+IP, and
//! breakpoints, `x/i $pc` and the memory gdb reads all use linear
//! addresses. gdb itself knows nothing of segments (see `regs.rs`).
//!
//! The extra system registers live in the feature `org.hindsight.x86.sys`
//! without a register group, so gdb lists them in `info registers` (as it
//! does for QEMU's) and `$cr3` etc. work in expressions.

use std::fmt::Write as _;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::OnceLock;

use gdbstub::arch::{Arch, Registers};
use hindsight_cpu::SegReg;

/// Which register set a gdb connection is shown (`--gdb-arch`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ArchView {
    /// 64-bit registers plus fs_base/gs_base/k_gs_base, CR0-CR8 and EFER.
    #[default]
    X86_64,
    /// 32-bit registers (protected-mode guests).
    I386,
    /// The i386 registers with gdb disassembling 16-bit code (real mode).
    I8086,
}

impl ArchView {
    /// Every view, in the order `--gdb-arch` lists them.
    pub const ALL: [ArchView; 3] = [ArchView::X86_64, ArchView::I386, ArchView::I8086];

    /// The name `--gdb-arch` takes.
    pub fn name(self) -> &'static str {
        match self {
            ArchView::X86_64 => "x86-64",
            ArchView::I386 => "i386",
            ArchView::I8086 => "i8086",
        }
    }

    /// The target description gdb is sent for this view.
    pub fn target_xml(self) -> &'static str {
        &layout(self).xml
    }
}

impl std::fmt::Display for ArchView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ArchView {
    type Err = String;

    fn from_str(s: &str) -> Result<ArchView, String> {
        match s.to_ascii_lowercase().as_str() {
            "x86-64" | "x86_64" | "amd64" | "i386:x86-64" => Ok(ArchView::X86_64),
            "i386" | "x86" | "ia32" => Ok(ArchView::I386),
            "i8086" | "8086" | "real" => Ok(ArchView::I8086),
            _ => Err(format!(
                "unknown gdb architecture view `{s}` (expected x86-64, i386 or i8086)"
            )),
        }
    }
}

/// What one register slot of a view holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    /// General-purpose register by encoding index (`Cpu::gpr`).
    Gpr(u8),
    /// The linear program counter (see the module notes).
    Pc,
    /// EFLAGS (the low 32 bits of RFLAGS).
    Eflags,
    /// A segment selector.
    Seg(SegReg),
    /// x87 stack register ST(i) (physical R((TOP + i) & 7)), as gdb numbers them.
    St(u8),
    /// x87 control word.
    Fctrl,
    /// x87 status word (with TOP).
    Fstat,
    /// x87 full tag word (2 bits per physical register).
    Ftag,
    /// x87 last instruction selector.
    Fiseg,
    /// x87 last instruction offset.
    Fioff,
    /// x87 last operand selector.
    Foseg,
    /// x87 last operand offset.
    Fooff,
    /// x87 last opcode (11 bits).
    Fop,
    /// XMM register.
    Xmm(u8),
    /// MXCSR.
    Mxcsr,
    /// FS segment base.
    FsBase,
    /// GS segment base.
    GsBase,
    /// IA32_KERNEL_GS_BASE (what SWAPGS exchanges with GS.base).
    KGsBase,
    /// CR0.
    Cr0,
    /// CR2 (page-fault linear address).
    Cr2,
    /// CR3 (page-table root).
    Cr3,
    /// CR4.
    Cr4,
    /// CR8 (task priority).
    Cr8,
    /// IA32_EFER.
    Efer,
}

/// One register of a view.
#[derive(Clone, Copy, Debug)]
pub struct RegDef {
    /// gdb's name for it.
    pub name: &'static str,
    /// What it holds.
    pub reg: Reg,
    /// Width in bits (a multiple of 8).
    pub bits: u32,
    /// The target-description type.
    pub ty: &'static str,
    /// The target-description register group, if any.
    pub group: Option<&'static str>,
}

impl RegDef {
    /// Bytes in a `g` packet.
    pub fn bytes(&self) -> usize {
        self.bits as usize / 8
    }
}

/// A view's registers and target description.
#[derive(Debug)]
pub struct Layout {
    /// Registers in packet order.
    pub regs: Vec<RegDef>,
    /// The target description XML.
    pub xml: String,
    /// Index of [`Reg::Pc`] in `regs`.
    pub pc: usize,
    /// Total bytes of a `g` packet.
    pub size: usize,
}

impl Layout {
    /// Index of the register named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.regs.iter().position(|r| r.name == name)
    }
}

/// The layout of `view`, built once.
pub fn layout(view: ArchView) -> &'static Layout {
    static LAYOUTS: [OnceLock<Layout>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let i = match view {
        ArchView::X86_64 => 0,
        ArchView::I386 => 1,
        ArchView::I8086 => 2,
    };
    LAYOUTS[i].get_or_init(|| build(view))
}

/// A feature: its name, type definitions and registers.
struct Feature {
    name: &'static str,
    types: String,
    regs: Vec<RegDef>,
}

fn reg(name: &'static str, reg: Reg, bits: u32, ty: &'static str) -> RegDef {
    RegDef {
        name,
        reg,
        bits,
        ty,
        group: None,
    }
}

fn grouped(name: &'static str, r: Reg, bits: u32, ty: &'static str, group: &'static str) -> RegDef {
    RegDef {
        group: Some(group),
        ..reg(name, r, bits, ty)
    }
}

/// `<flags>` of `size` bytes with one-bit fields (name, bit).
fn flags(id: &str, size: u32, fields: &[(&str, u32)]) -> String {
    let mut s = format!("<flags id=\"{id}\" size=\"{size}\">");
    for (name, bit) in fields {
        let _ = write!(s, "<field name=\"{name}\" start=\"{bit}\" end=\"{bit}\"/>");
    }
    s.push_str("</flags>");
    s
}

const EFLAGS_FIELDS: &[(&str, u32)] = &[
    ("CF", 0),
    ("", 1),
    ("PF", 2),
    ("AF", 4),
    ("ZF", 6),
    ("SF", 7),
    ("TF", 8),
    ("IF", 9),
    ("DF", 10),
    ("OF", 11),
    ("NT", 14),
    ("RF", 16),
    ("VM", 17),
    ("AC", 18),
    ("VIF", 19),
    ("VIP", 20),
    ("ID", 21),
];

const MXCSR_FIELDS: &[(&str, u32)] = &[
    ("IE", 0),
    ("DE", 1),
    ("ZE", 2),
    ("OE", 3),
    ("UE", 4),
    ("PE", 5),
    ("DAZ", 6),
    ("IM", 7),
    ("DM", 8),
    ("ZM", 9),
    ("OM", 10),
    ("UM", 11),
    ("PM", 12),
    ("FZ", 15),
];

pub(crate) const CR0_BITS: &[(&str, u32)] = &[
    ("PE", 0),
    ("MP", 1),
    ("EM", 2),
    ("TS", 3),
    ("ET", 4),
    ("NE", 5),
    ("WP", 16),
    ("AM", 18),
    ("NW", 29),
    ("CD", 30),
    ("PG", 31),
];

pub(crate) const CR4_BITS: &[(&str, u32)] = &[
    ("VME", 0),
    ("PVI", 1),
    ("TSD", 2),
    ("DE", 3),
    ("PSE", 4),
    ("PAE", 5),
    ("MCE", 6),
    ("PGE", 7),
    ("PCE", 8),
    ("OSFXSR", 9),
    ("OSXMMEXCPT", 10),
    ("UMIP", 11),
    ("LA57", 12),
    ("VMXE", 13),
    ("SMXE", 14),
    ("FSGSBASE", 16),
    ("PCIDE", 17),
    ("OSXSAVE", 18),
    ("SMEP", 20),
    ("SMAP", 21),
    ("PKE", 22),
];

pub(crate) const EFER_BITS: &[(&str, u32)] = &[
    ("SCE", 0),
    ("LME", 8),
    ("LMA", 10),
    ("NXE", 11),
    ("SVME", 12),
    ("LMSLE", 13),
    ("FFXSR", 14),
    ("TCE", 15),
];

const VEC128_TYPES: &str = "<vector id=\"v4f\" type=\"ieee_single\" count=\"4\"/>\
<vector id=\"v2d\" type=\"ieee_double\" count=\"2\"/>\
<vector id=\"v16i8\" type=\"int8\" count=\"16\"/>\
<vector id=\"v8i16\" type=\"int16\" count=\"8\"/>\
<vector id=\"v4i32\" type=\"int32\" count=\"4\"/>\
<vector id=\"v2i64\" type=\"int64\" count=\"2\"/>\
<union id=\"vec128\"><field name=\"v4_float\" type=\"v4f\"/>\
<field name=\"v2_double\" type=\"v2d\"/><field name=\"v16_int8\" type=\"v16i8\"/>\
<field name=\"v8_int16\" type=\"v8i16\"/><field name=\"v4_int32\" type=\"v4i32\"/>\
<field name=\"v2_int64\" type=\"v2i64\"/><field name=\"uint128\" type=\"uint128\"/></union>";

const GPR64: [(&str, u8); 16] = [
    ("rax", 0),
    ("rbx", 3),
    ("rcx", 1),
    ("rdx", 2),
    ("rsi", 6),
    ("rdi", 7),
    ("rbp", 5),
    ("rsp", 4),
    ("r8", 8),
    ("r9", 9),
    ("r10", 10),
    ("r11", 11),
    ("r12", 12),
    ("r13", 13),
    ("r14", 14),
    ("r15", 15),
];

const GPR32: [&str; 8] = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];
const SEGS: [(&str, SegReg); 6] = [
    ("cs", SegReg::Cs),
    ("ss", SegReg::Ss),
    ("ds", SegReg::Ds),
    ("es", SegReg::Es),
    ("fs", SegReg::Fs),
    ("gs", SegReg::Gs),
];
const ST: [&str; 8] = ["st0", "st1", "st2", "st3", "st4", "st5", "st6", "st7"];
const XMM: [&str; 16] = [
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
    "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
];

fn build(view: ArchView) -> Layout {
    let wide = view == ArchView::X86_64;
    let w = if wide { 64 } else { 32 };
    let wint = if wide { "int64" } else { "int32" };

    let mut core = Vec::new();
    if wide {
        for (name, i) in GPR64 {
            let ty = match name {
                "rbp" | "rsp" => "data_ptr",
                _ => "int64",
            };
            core.push(reg(name, Reg::Gpr(i), 64, ty));
        }
        core.push(reg("rip", Reg::Pc, 64, "code_ptr"));
    } else {
        for (i, name) in GPR32.into_iter().enumerate() {
            let ty = match name {
                "ebp" | "esp" => "data_ptr",
                _ => "int32",
            };
            core.push(reg(name, Reg::Gpr(i as u8), 32, ty));
        }
        core.push(reg("eip", Reg::Pc, 32, "code_ptr"));
    }
    core.push(reg("eflags", Reg::Eflags, 32, "i386_eflags"));
    for (name, s) in SEGS {
        core.push(reg(name, Reg::Seg(s), 32, "int32"));
    }
    for (i, name) in ST.into_iter().enumerate() {
        core.push(reg(name, Reg::St(i as u8), 80, "i387_ext"));
    }
    for (name, r) in [
        ("fctrl", Reg::Fctrl),
        ("fstat", Reg::Fstat),
        ("ftag", Reg::Ftag),
        ("fiseg", Reg::Fiseg),
        ("fioff", Reg::Fioff),
        ("foseg", Reg::Foseg),
        ("fooff", Reg::Fooff),
        ("fop", Reg::Fop),
    ] {
        core.push(grouped(name, r, 32, "int", "float"));
    }

    let nxmm = if wide { 16 } else { 8 };
    let mut sse: Vec<RegDef> = XMM[..nxmm]
        .iter()
        .enumerate()
        .map(|(i, name)| reg(name, Reg::Xmm(i as u8), 128, "vec128"))
        .collect();
    sse.push(grouped("mxcsr", Reg::Mxcsr, 32, "i386_mxcsr", "vector"));

    // gdb 13 knows fs_base/gs_base (feature `segments`) only for amd64: an
    // i386 description with that feature trips an internal error in
    // tdesc_use_registers. The 32-bit views carry them in the sys feature.
    let bases = vec![
        reg("fs_base", Reg::FsBase, w, wint),
        reg("gs_base", Reg::GsBase, w, wint),
    ];
    let (segments, mut sys) = if wide {
        (bases, Vec::new())
    } else {
        (Vec::new(), bases)
    };
    if wide {
        sys.push(reg("k_gs_base", Reg::KGsBase, 64, "int64"));
    }
    sys.push(reg("cr0", Reg::Cr0, w, "hs_cr0"));
    sys.push(reg("cr2", Reg::Cr2, w, wint));
    sys.push(reg("cr3", Reg::Cr3, w, wint));
    sys.push(reg("cr4", Reg::Cr4, w, "hs_cr4"));
    sys.push(reg("cr8", Reg::Cr8, w, wint));
    sys.push(reg("efer", Reg::Efer, 64, "hs_efer"));

    let features = [
        Feature {
            name: "org.gnu.gdb.i386.core",
            types: flags("i386_eflags", 4, EFLAGS_FIELDS),
            regs: core,
        },
        Feature {
            name: "org.gnu.gdb.i386.sse",
            types: format!("{VEC128_TYPES}{}", flags("i386_mxcsr", 4, MXCSR_FIELDS)),
            regs: sse,
        },
        Feature {
            name: "org.gnu.gdb.i386.segments",
            types: String::new(),
            regs: segments,
        },
        Feature {
            name: "org.hindsight.x86.sys",
            types: format!(
                "{}{}{}",
                flags("hs_cr0", w / 8, CR0_BITS),
                flags("hs_cr4", w / 8, CR4_BITS),
                flags("hs_efer", 8, EFER_BITS)
            ),
            regs: sys,
        },
    ];

    let arch = match view {
        ArchView::X86_64 => "i386:x86-64",
        ArchView::I386 => "i386",
        ArchView::I8086 => "i8086",
    };
    let mut xml = String::from(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE target SYSTEM \"gdb-target.dtd\">\n<target version=\"1.0\">\n",
    );
    let _ = writeln!(xml, "<architecture>{arch}</architecture>");
    let mut regs = Vec::new();
    for f in features.into_iter().filter(|f| !f.regs.is_empty()) {
        let _ = writeln!(xml, "<feature name=\"{}\">", f.name);
        if !f.types.is_empty() {
            let _ = writeln!(xml, "{}", f.types);
        }
        for r in &f.regs {
            let _ = write!(
                xml,
                "<reg name=\"{}\" bitsize=\"{}\" type=\"{}\"",
                r.name, r.bits, r.ty
            );
            if let Some(g) = r.group {
                let _ = write!(xml, " group=\"{g}\"");
            }
            xml.push_str("/>\n");
        }
        xml.push_str("</feature>\n");
        regs.extend(f.regs);
    }
    xml.push_str("</target>\n");
    let pc = regs.iter().position(|r| r.reg == Reg::Pc).unwrap_or(0);
    let size = regs.iter().map(RegDef::bytes).sum();
    Layout {
        regs,
        xml,
        pc,
        size,
    }
}

/// What distinguishes the three [`Arch`] types.
pub trait ViewSpec: 'static {
    /// The view.
    const VIEW: ArchView;
    /// gdb's address type for it.
    type Addr: Copy + std::fmt::Debug;
    /// Widens an address.
    fn addr_to_u64(a: Self::Addr) -> u64;
    /// Narrows an address (truncating).
    fn addr_from_u64(a: u64) -> Self::Addr;
}

/// A view's register block: one value per [`Layout::regs`] entry.
pub struct RegBlock<S: ?Sized> {
    /// Values in packet order (the low [`RegDef::bits`] bits count).
    pub vals: Vec<u128>,
    _view: PhantomData<fn() -> S>,
}

impl<S: ViewSpec> RegBlock<S> {
    /// The layout of this block's view.
    pub fn layout() -> &'static Layout {
        layout(S::VIEW)
    }

    /// The value of the register named `name`, if the view has it.
    pub fn get(&self, name: &str) -> Option<u128> {
        Self::layout().index_of(name).map(|i| self.vals[i])
    }
}

impl<S: ViewSpec> Default for RegBlock<S> {
    fn default() -> Self {
        RegBlock {
            vals: vec![0; Self::layout().regs.len()],
            _view: PhantomData,
        }
    }
}

impl<S: ?Sized> Clone for RegBlock<S> {
    fn clone(&self) -> Self {
        RegBlock {
            vals: self.vals.clone(),
            _view: PhantomData,
        }
    }
}

impl<S: ?Sized> PartialEq for RegBlock<S> {
    fn eq(&self, other: &Self) -> bool {
        self.vals == other.vals
    }
}

impl<S: ViewSpec> std::fmt::Debug for RegBlock<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (d, v) in Self::layout().regs.iter().zip(&self.vals) {
            m.entry(&d.name, &format_args!("{v:#x}"));
        }
        m.finish()
    }
}

impl<S: ViewSpec> Registers for RegBlock<S> {
    type ProgramCounter = S::Addr;

    fn pc(&self) -> S::Addr {
        S::addr_from_u64(self.vals[Self::layout().pc] as u64)
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        for (d, v) in Self::layout().regs.iter().zip(&self.vals) {
            for b in &v.to_le_bytes()[..d.bytes()] {
                write_byte(Some(*b));
            }
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let l = Self::layout();
        if bytes.len() != l.size {
            return Err(());
        }
        let mut off = 0;
        for (d, v) in l.regs.iter().zip(self.vals.iter_mut()) {
            let mut b = [0u8; 16];
            b[..d.bytes()].copy_from_slice(&bytes[off..off + d.bytes()]);
            *v = u128::from_le_bytes(b);
            off += d.bytes();
        }
        Ok(())
    }
}

macro_rules! view_arch {
    ($(#[$doc:meta])* $name:ident, $view:expr, $addr:ty) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $name {}

        impl ViewSpec for $name {
            const VIEW: ArchView = $view;
            type Addr = $addr;
            fn addr_to_u64(a: $addr) -> u64 {
                a as u64
            }
            fn addr_from_u64(a: u64) -> $addr {
                a as $addr
            }
        }

        impl Arch for $name {
            type Usize = $addr;
            type Registers = RegBlock<$name>;
            type BreakpointKind = usize;
            type RegId = ();

            fn target_description_xml() -> Option<&'static str> {
                Some(layout($view).xml.as_str())
            }
        }
    };
}

view_arch!(
    /// The `x86-64` view.
    X86_64View,
    ArchView::X86_64,
    u64
);
view_arch!(
    /// The `i386` view.
    I386View,
    ArchView::I386,
    u32
);
view_arch!(
    /// The `i8086` view.
    I8086View,
    ArchView::I8086,
    u32
);

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal XML well-formedness check: tags balance, attributes are
    /// quoted, no stray `<` or `&`.
    fn check_xml(xml: &str) -> Result<Vec<String>, String> {
        let mut stack: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut rest = xml;
        while let Some(lt) = rest.find('<') {
            if rest[..lt].contains('&') || rest[..lt].contains('>') {
                return Err(format!("stray character before {:?}", &rest[lt..]));
            }
            let gt = rest[lt..].find('>').ok_or("unterminated tag")? + lt;
            let tag = &rest[lt + 1..gt];
            rest = &rest[gt + 1..];
            if tag.starts_with('?') || tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                match stack.pop() {
                    Some(open) if open == name => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let mut parts = body.splitn(2, ' ');
            let name = parts.next().unwrap_or_default().to_string();
            let attrs = parts.next().unwrap_or_default();
            if attrs.matches('"').count() & 1 == 1 || attrs.contains('<') {
                return Err(format!("bad attributes in <{body}>"));
            }
            if name == "reg" {
                let n = attrs
                    .split("name=\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .ok_or("reg without name")?;
                names.push(n.to_string());
            }
            if !self_closing {
                stack.push(name);
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed {stack:?}"));
        }
        Ok(names)
    }

    #[test]
    fn xml_is_well_formed_and_matches_the_table() {
        for view in ArchView::ALL {
            let l = layout(view);
            let names = check_xml(&l.xml).unwrap_or_else(|e| panic!("{view}: {e}\n{}", l.xml));
            let table: Vec<_> = l.regs.iter().map(|r| r.name.to_string()).collect();
            assert_eq!(names, table, "{view}: XML order is packet order");
            assert!(l.xml.contains(&format!(
                "<architecture>{}</architecture>",
                match view {
                    ArchView::X86_64 => "i386:x86-64",
                    ArchView::I386 => "i386",
                    ArchView::I8086 => "i8086",
                }
            )));
        }
    }

    #[test]
    fn views_list_the_required_registers() {
        let l = layout(ArchView::X86_64);
        for name in [
            "rax",
            "rbx",
            "rcx",
            "rdx",
            "rsi",
            "rdi",
            "rbp",
            "rsp",
            "r8",
            "r15",
            "rip",
            "eflags",
            "cs",
            "ss",
            "ds",
            "es",
            "fs",
            "gs",
            "st0",
            "st7",
            "fctrl",
            "fstat",
            "ftag",
            "fiseg",
            "fioff",
            "foseg",
            "fooff",
            "fop",
            "xmm0",
            "xmm15",
            "mxcsr",
            "fs_base",
            "gs_base",
            "k_gs_base",
            "cr0",
            "cr2",
            "cr3",
            "cr4",
            "cr8",
            "efer",
        ] {
            assert!(l.index_of(name).is_some(), "x86-64 lacks {name}");
        }
        assert_eq!(l.size, 608);
        assert_eq!(l.index_of("xmm0"), Some(40), "gdb's amd64 numbering");
        for view in [ArchView::I386, ArchView::I8086] {
            let l = layout(view);
            for name in [
                "eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip", "eflags", "cs",
                "gs", "st0", "fop", "xmm7", "mxcsr", "fs_base", "gs_base", "cr0", "cr3", "efer",
            ] {
                assert!(l.index_of(name).is_some(), "{view} lacks {name}");
            }
            assert!(l.index_of("xmm8").is_none() && l.index_of("rax").is_none());
            assert_eq!(l.size, 344);
            assert_eq!(l.index_of("xmm0"), Some(32), "gdb's i386 numbering");
        }
    }

    #[test]
    fn blocks_round_trip_through_packet_bytes() {
        fn round_trip<S: ViewSpec>() {
            let l = layout(S::VIEW);
            let mut a = RegBlock::<S>::default();
            for (i, (d, v)) in l.regs.iter().zip(a.vals.iter_mut()).enumerate() {
                let pattern = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128
                    .rotate_left(i as u32 * 8)
                    ^ i as u128;
                *v = if d.bits == 128 {
                    pattern
                } else {
                    pattern & ((1u128 << d.bits) - 1)
                };
            }
            let mut bytes = Vec::new();
            a.gdb_serialize(|b| bytes.push(b.expect("every register is available")));
            assert_eq!(bytes.len(), l.size);
            let mut b = RegBlock::<S>::default();
            b.gdb_deserialize(&bytes).expect("deserialize");
            assert!(a == b, "{}: {a:?} != {b:?}", S::VIEW);
            assert!(b.gdb_deserialize(&bytes[1..]).is_err(), "short block");
            let mut long = bytes.clone();
            long.push(0);
            assert!(b.gdb_deserialize(&long).is_err(), "long block");
            assert_eq!(S::addr_to_u64(a.pc()), a.vals[l.pc] as u64);
        }
        round_trip::<X86_64View>();
        round_trip::<I386View>();
        round_trip::<I8086View>();
    }

    #[test]
    fn view_names_parse() {
        for v in ArchView::ALL {
            assert_eq!(v.name().parse::<ArchView>(), Ok(v));
        }
        assert_eq!("X86_64".parse::<ArchView>(), Ok(ArchView::X86_64));
        let e = "arm".parse::<ArchView>().unwrap_err();
        assert!(e.contains("x86-64, i386 or i8086"), "{e}");
    }
}
