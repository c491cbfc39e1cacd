//! Runs generated code natively on the host CPU.
//!
//! One region is mapped at a fixed low address (so that every address fits a
//! sign-extended disp32): the scratch data, a state block and the code pages.
//! The code is `prologue | generated | jmp epilogue`: the prologue saves the
//! host's callee-saved registers and RSP in the state block, loads RFLAGS and
//! the 15 GPRs other than RSP from it; the epilogue stores them back (RSP too)
//! and returns. The generated code never touches RSP, so the host stack stays
//! valid throughout.
//!
//! 32-bit code (the BCD class) runs in compatibility mode: a second prologue
//! ends with a far return to Linux's 32-bit user code segment (0x23), and the
//! generated code ends with a far jump back to a 64-bit epilogue (0x33) that
//! reloads RSP from the state block before touching the stack.
//!
//! A fault inside the generated code (#DE → SIGFPE, #UD → SIGILL, #GP/#PF →
//! SIGSEGV, #SS/#AC → SIGBUS) is caught by a signal handler (on its own
//! stack) that copies the registers of the faulting context into the state
//! block, records the signal and the faulting RIP, and resumes at the
//! epilogue's recovery point in the 64-bit code segment.

use std::sync::atomic::{AtomicU64, Ordering};

use iced_x86::{Code, Encoder, Instruction, MemoryOperand, Register};

use crate::fp::{FpState, FX_SIZE};

/// Offsets within the mapped region.
pub const DATA_OFF: u64 = 0;
pub const DATA_SIZE: usize = 0x4000;
pub const STATE_OFF: u64 = 0x4000;
pub const CODE_OFF: u64 = 0x6000;
/// Generated code starts here (the prologue ends right before it).
pub const GEN_OFF: u64 = CODE_OFF + 0x200;
/// Longest generated sequence in bytes.
pub const GEN_MAX: usize = 0x1000;
pub const EPI_OFF: u64 = CODE_OFF + 0x1400;
/// Prologue that enters compatibility mode (32-bit code) at the generated code.
pub const PRO32_OFF: u64 = CODE_OFF + 0x1a00;
/// Epilogue reached from 32-bit code by a far jump back to the 64-bit code segment.
pub const EPI32_OFF: u64 = CODE_OFF + 0x1c00;
/// Linux's user code selectors.
const USER32_CS: u16 = 0x23;
const USER64_CS: u16 = 0x33;
pub const REGION: usize = 0x8000;

/// State block layout (bytes).
const S_RFLAGS: u64 = 128;
const S_HOST_RSP: u64 = 136;
const S_SIGNAL: u64 = 144;
const S_FAULT_RIP: u64 = 152;
/// Linux's flat user data selector, loaded into DS/ES for 32-bit code (a
/// 64-bit process usually runs with null DS/ES, which 32-bit code cannot use).
const S_USER_DS: u64 = 160;
const USER_DS: u16 = 0x2b;
/// FXSAVE64 images (16-byte aligned): the x87/SSE state the generated code
/// starts from, the state it ends with, and the host's own state around it.
const S_FX_IN: u64 = 0x400;
const S_FX_OUT: u64 = 0x600;
const S_FX_HOST: u64 = 0x800;

static GEN_START: AtomicU64 = AtomicU64::new(0);
static GEN_END: AtomicU64 = AtomicU64::new(0);
static RECOVER: AtomicU64 = AtomicU64::new(0);
static STATE: AtomicU64 = AtomicU64::new(0);
/// The compatibility-mode entry thunk (a fault there means no 32-bit code segment).
static THUNK_START: AtomicU64 = AtomicU64::new(0);
static THUNK_END: AtomicU64 = AtomicU64::new(0);

/// GPR order of `Cpu::gpr` → index in `mcontext.gregs`.
const GREG: [libc::c_int; 16] = [
    libc::REG_RAX,
    libc::REG_RCX,
    libc::REG_RDX,
    libc::REG_RBX,
    libc::REG_RSP,
    libc::REG_RBP,
    libc::REG_RSI,
    libc::REG_RDI,
    libc::REG_R8,
    libc::REG_R9,
    libc::REG_R10,
    libc::REG_R11,
    libc::REG_R12,
    libc::REG_R13,
    libc::REG_R14,
    libc::REG_R15,
];

/// 64-bit GPRs in encoding order.
pub const GPR64: [Register; 16] = [
    Register::RAX,
    Register::RCX,
    Register::RDX,
    Register::RBX,
    Register::RSP,
    Register::RBP,
    Register::RSI,
    Register::RDI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];

/// Outcome of one native run.
#[derive(Clone, Debug)]
pub struct HostOut {
    pub gpr: [u64; 16],
    pub rflags: u64,
    /// The final x87/MMX/SSE state.
    pub fp: FpState,
    /// Signal number and faulting RIP, if the code faulted.
    pub fault: Option<(i32, u64)>,
}

/// The mapped region and its fixed code.
pub struct Host {
    pub base: u64,
    entry: u64,
}

/// Whether generated code runs in 64-bit mode or in compatibility mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    W64,
    W32,
}

extern "C" fn on_signal(sig: libc::c_int, _info: *mut libc::siginfo_t, uctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler;
    // the state block is mapped for the life of the process.
    unsafe {
        let uc = uctx as *mut libc::ucontext_t;
        let gregs = &mut (*uc).uc_mcontext.gregs;
        let rip = gregs[libc::REG_RIP as usize] as u64;
        let (start, end) = (
            GEN_START.load(Ordering::Relaxed),
            GEN_END.load(Ordering::Relaxed),
        );
        let in_thunk =
            rip >= THUNK_START.load(Ordering::Relaxed) && rip < THUNK_END.load(Ordering::Relaxed);
        if (rip < start || rip >= end) && !in_thunk {
            // Not ours: restore the default action; returning re-raises it.
            libc::signal(sig, libc::SIG_DFL);
            return;
        }
        let st = STATE.load(Ordering::Relaxed) as *mut u64;
        for (i, g) in GREG.iter().enumerate() {
            st.add(i).write_volatile(gregs[*g as usize] as u64);
        }
        st.add(S_RFLAGS as usize / 8)
            .write_volatile(gregs[libc::REG_EFL as usize] as u64);
        st.add(S_SIGNAL as usize / 8).write_volatile(sig as u64);
        st.add(S_FAULT_RIP as usize / 8).write_volatile(rip);
        gregs[libc::REG_RIP as usize] = RECOVER.load(Ordering::Relaxed) as i64;
        // A fault in compatibility mode: resume the 64-bit recovery code in
        // the 64-bit code segment (sigreturn restores CS from here).
        let csgsfs = &mut gregs[libc::REG_CSGSFS as usize];
        *csgsfs = (*csgsfs & !0xffff) | USER64_CS as i64;
    }
}

fn abs(addr: u64) -> MemoryOperand {
    MemoryOperand::with_displ(addr, 4)
}

fn encode_all(insns: &[Instruction], ip: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut enc = Encoder::new(64);
    for i in insns {
        let ip = ip + out.len() as u64;
        enc.encode(i, ip)
            .map_err(|e| format!("encode {:?}: {e}", i.code()))?;
        out.extend_from_slice(&enc.take_buffer());
    }
    Ok(out)
}

impl Host {
    /// Maps the region at the first free candidate address, writes the
    /// prologue and epilogue and installs the signal handlers.
    pub fn new() -> Result<Host, String> {
        let mut base = 0;
        for cand in [
            0x2000_0000u64,
            0x2800_0000,
            0x3000_0000,
            0x3800_0000,
            0x4000_0000,
            0x5000_0000,
        ] {
            // SAFETY: a fixed, non-replacing anonymous mapping; checked below.
            let p = unsafe {
                libc::mmap(
                    cand as *mut libc::c_void,
                    REGION,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if p as u64 == cand {
                base = cand;
                break;
            }
            if p != libc::MAP_FAILED {
                // SAFETY: unmapping what we just mapped at the wrong place.
                unsafe { libc::munmap(p, REGION) };
            }
        }
        if base == 0 {
            return Err("could not map the scratch region at a fixed low address".into());
        }
        let state = base + STATE_OFF;
        let gen = base + GEN_OFF;
        let epi = base + EPI_OFF;
        let w = |c, r| Instruction::with1(c, r).map_err(|e| e.to_string());
        // Prologue.
        let mut pro = Vec::new();
        for r in [
            Register::RBX,
            Register::RBP,
            Register::R12,
            Register::R13,
            Register::R14,
            Register::R15,
        ] {
            pro.push(w(Code::Push_r64, r)?);
        }
        pro.push(
            Instruction::with2(Code::Mov_rm64_r64, abs(state + S_HOST_RSP), Register::RSP)
                .map_err(|e| e.to_string())?,
        );
        // Keep the host's x87/SSE state, load the test's.
        pro.push(
            Instruction::with1(Code::Fxsave64_m512byte, abs(state + S_FX_HOST))
                .map_err(|e| e.to_string())?,
        );
        pro.push(
            Instruction::with1(Code::Fxrstor64_m512byte, abs(state + S_FX_IN))
                .map_err(|e| e.to_string())?,
        );
        pro.push(
            Instruction::with1(Code::Push_rm64, abs(state + S_RFLAGS))
                .map_err(|e| e.to_string())?,
        );
        pro.push(Instruction::with(Code::Popfq));
        for (i, r) in GPR64.iter().enumerate() {
            if i != 4 {
                pro.push(
                    Instruction::with2(Code::Mov_r64_rm64, *r, abs(state + 8 * i as u64))
                        .map_err(|e| e.to_string())?,
                );
            }
        }
        // Two passes: the prologue must end exactly at `gen`.
        let len = encode_all(&pro, gen - 0x100)?.len() as u64;
        let entry = gen - len;
        let pro_bytes = encode_all(&pro, entry)?;
        if pro_bytes.len() as u64 != len {
            return Err("prologue length changed with its address".into());
        }
        // Epilogue: store everything, then the recovery point.
        let mut epi1 = Vec::new();
        for (i, r) in GPR64.iter().enumerate() {
            epi1.push(
                Instruction::with2(Code::Mov_rm64_r64, abs(state + 8 * i as u64), *r)
                    .map_err(|e| e.to_string())?,
            );
        }
        epi1.push(Instruction::with(Code::Pushfq));
        epi1.push(
            Instruction::with1(Code::Pop_rm64, abs(state + S_RFLAGS)).map_err(|e| e.to_string())?,
        );
        let epi1_bytes = encode_all(&epi1, epi)?;
        let recover = epi + epi1_bytes.len() as u64;
        // The recovery point (also reached after a signal, whose return
        // restored the x87/SSE state of the faulting instruction): store the
        // final x87/SSE state, reload the host's.
        let mut epi2 = vec![
            Instruction::with1(Code::Fxsave64_m512byte, abs(state + S_FX_OUT))
                .map_err(|e| e.to_string())?,
            Instruction::with1(Code::Fxrstor64_m512byte, abs(state + S_FX_HOST))
                .map_err(|e| e.to_string())?,
            Instruction::with2(Code::Mov_r64_rm64, Register::RSP, abs(state + S_HOST_RSP))
                .map_err(|e| e.to_string())?,
        ];
        for r in [
            Register::R15,
            Register::R14,
            Register::R13,
            Register::R12,
            Register::RBP,
            Register::RBX,
        ] {
            epi2.push(w(Code::Pop_r64, r)?);
        }
        epi2.push(Instruction::with(Code::Cld));
        epi2.push(Instruction::with(Code::Retnq));
        let epi2_bytes = encode_all(&epi2, recover)?;
        // Compatibility-mode entry: the same prologue, then a far return to
        // USER32_CS at the generated code; the 32-bit code ends with a far
        // jump to the epilogue below (which restores RSP before using it,
        // since the mode switches may not preserve its upper half).
        let mut pro32 = pro.clone();
        for sreg in [Register::DS, Register::ES] {
            pro32.push(
                Instruction::with2(Code::Mov_Sreg_rm16, sreg, abs(state + S_USER_DS))
                    .map_err(|e| e.to_string())?,
            );
        }
        pro32.push(
            Instruction::with1(Code::Pushq_imm8, USER32_CS as i32).map_err(|e| e.to_string())?,
        );
        pro32.push(Instruction::with1(Code::Pushq_imm32, gen as i32).map_err(|e| e.to_string())?);
        pro32.push(Instruction::with(Code::Retfq));
        let pro32_bytes = encode_all(&pro32, base + PRO32_OFF)?;
        let mut epi32 = Vec::new();
        for (i, r) in GPR64.iter().enumerate() {
            if i != 4 {
                epi32.push(
                    Instruction::with2(Code::Mov_rm64_r64, abs(state + 8 * i as u64), *r)
                        .map_err(|e| e.to_string())?,
                );
            }
        }
        epi32.push(
            Instruction::with2(Code::Mov_r64_rm64, Register::RSP, abs(state + S_HOST_RSP))
                .map_err(|e| e.to_string())?,
        );
        epi32.push(
            Instruction::with2(Code::Mov_rm64_r64, abs(state + 32), Register::RSP)
                .map_err(|e| e.to_string())?,
        );
        epi32.push(Instruction::with(Code::Pushfq));
        epi32.push(
            Instruction::with1(Code::Pop_rm64, abs(state + S_RFLAGS)).map_err(|e| e.to_string())?,
        );
        epi32.push(
            Instruction::with_branch(Code::Jmp_rel32_64, recover).map_err(|e| e.to_string())?,
        );
        let epi32_bytes = encode_all(&epi32, base + EPI32_OFF)?;
        // SAFETY: the region is mapped RWX and these ranges lie inside it.
        unsafe {
            std::ptr::copy_nonoverlapping(pro_bytes.as_ptr(), entry as *mut u8, pro_bytes.len());
            std::ptr::copy_nonoverlapping(epi1_bytes.as_ptr(), epi as *mut u8, epi1_bytes.len());
            std::ptr::copy_nonoverlapping(
                epi2_bytes.as_ptr(),
                recover as *mut u8,
                epi2_bytes.len(),
            );
            std::ptr::copy_nonoverlapping(
                pro32_bytes.as_ptr(),
                (base + PRO32_OFF) as *mut u8,
                pro32_bytes.len(),
            );
            std::ptr::copy_nonoverlapping(
                epi32_bytes.as_ptr(),
                (base + EPI32_OFF) as *mut u8,
                epi32_bytes.len(),
            );
        }
        // SAFETY: the state block lies in the mapped region.
        unsafe { ((state + S_USER_DS) as *mut u64).write_volatile(USER_DS as u64) };
        RECOVER.store(recover, Ordering::Relaxed);
        THUNK_START.store(base + PRO32_OFF, Ordering::Relaxed);
        THUNK_END.store(
            base + PRO32_OFF + pro32_bytes.len() as u64,
            Ordering::Relaxed,
        );
        STATE.store(state, Ordering::Relaxed);
        // Handlers run on their own stack: in compatibility mode the CPU may
        // not keep RSP's upper half, so the interrupted stack is not trusted.
        const ALT: usize = 1 << 16;
        let alt = Box::leak(vec![0u8; ALT].into_boxed_slice());
        let ss = libc::stack_t {
            ss_sp: alt.as_mut_ptr() as *mut libc::c_void,
            ss_flags: 0,
            ss_size: ALT,
        };
        // SAFETY: registers a leaked (never freed) buffer as the alternate signal stack.
        if unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) } != 0 {
            return Err("sigaltstack failed".into());
        }
        for sig in [
            libc::SIGFPE,
            libc::SIGILL,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGTRAP,
        ] {
            // SAFETY: installing an SA_SIGINFO handler with a zeroed, valid sigaction.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut sa.sa_mask);
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                    return Err(format!("sigaction({sig}) failed"));
                }
            }
        }
        Ok(Host { base, entry })
    }

    /// Address where generated code starts.
    pub fn gen_addr(&self) -> u64 {
        self.base + GEN_OFF
    }

    /// Address of the scratch data.
    pub fn data_addr(&self) -> u64 {
        self.base + DATA_OFF
    }

    /// Runs `code` with the given registers (RSP ignored), RFLAGS, x87/SSE
    /// state (an FXSAVE64 image) and scratch data; returns the final state
    /// and leaves the final data in `data`.
    pub fn run(
        &self,
        width: Width,
        gpr: &[u64; 16],
        rflags: u64,
        fx: &[u8; FX_SIZE],
        code: &[u8],
        data: &mut [u8],
    ) -> Result<HostOut, String> {
        if code.len() > GEN_MAX {
            return Err("generated code too long".into());
        }
        let gen = self.gen_addr();
        let end = gen + code.len() as u64;
        let (entry, jmp_bytes) = match width {
            Width::W64 => {
                let jmp = Instruction::with_branch(Code::Jmp_rel32_64, self.base + EPI_OFF)
                    .map_err(|e| e.to_string())?;
                (self.entry, encode_all(&[jmp], end)?)
            }
            Width::W32 => {
                let jmp = Instruction::with_far_branch(
                    Code::Jmp_ptr1632,
                    USER64_CS,
                    (self.base + EPI32_OFF) as u32,
                )
                .map_err(|e| e.to_string())?;
                let mut enc = Encoder::new(32);
                enc.encode(&jmp, end).map_err(|e| e.to_string())?;
                (self.base + PRO32_OFF, enc.take_buffer())
            }
        };
        let st = (self.base + STATE_OFF) as *mut u64;
        GEN_START.store(gen, Ordering::Relaxed);
        GEN_END.store(end, Ordering::Relaxed);
        // SAFETY: all pointers lie in our RWX region; the generated code only
        // touches registers other than RSP, the scratch data and the flags
        // (the generator guarantees it), and returns through the epilogue.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                (self.base + DATA_OFF) as *mut u8,
                DATA_SIZE,
            );
            std::ptr::copy_nonoverlapping(code.as_ptr(), gen as *mut u8, code.len());
            std::ptr::copy_nonoverlapping(jmp_bytes.as_ptr(), end as *mut u8, jmp_bytes.len());
            std::ptr::copy_nonoverlapping(
                fx.as_ptr(),
                (self.base + STATE_OFF + S_FX_IN) as *mut u8,
                FX_SIZE,
            );
            for (i, v) in gpr.iter().enumerate() {
                st.add(i).write_volatile(*v);
            }
            st.add(S_RFLAGS as usize / 8).write_volatile(rflags);
            st.add(S_SIGNAL as usize / 8).write_volatile(0);
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
            let f: extern "C" fn() = std::mem::transmute(entry as usize);
            f();
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
            let fx_out = std::slice::from_raw_parts(
                (self.base + STATE_OFF + S_FX_OUT) as *const u8,
                FX_SIZE,
            );
            let mut out = HostOut {
                gpr: [0; 16],
                rflags: st.add(S_RFLAGS as usize / 8).read_volatile(),
                fp: FpState::from_fxsave(fx_out),
                fault: None,
            };
            for (i, g) in out.gpr.iter_mut().enumerate() {
                *g = st.add(i).read_volatile();
            }
            let sig = st.add(S_SIGNAL as usize / 8).read_volatile();
            if sig != 0 {
                out.fault = Some((sig as i32, st.add(S_FAULT_RIP as usize / 8).read_volatile()));
            }
            std::ptr::copy_nonoverlapping(
                (self.base + DATA_OFF) as *const u8,
                data.as_mut_ptr(),
                DATA_SIZE,
            );
            Ok(out)
        }
    }

    /// Whether 32-bit code can run (the kernel provides a 32-bit user code
    /// segment): runs an empty compatibility-mode sequence.
    pub fn compat_works(&self) -> bool {
        let mut data = vec![0; DATA_SIZE];
        let fx = FpState::initial().to_fxsave(0);
        matches!(
            self.run(Width::W32, &[0; 16], 0x202, &fx, &[], &mut data),
            Ok(HostOut { fault: None, .. })
        )
    }

    /// This thread's FS and GS bases (as 64-bit code sees them).
    pub fn fs_gs_base() -> (u64, u64) {
        const ARCH_GET_FS: libc::c_long = 0x1003;
        const ARCH_GET_GS: libc::c_long = 0x1004;
        let (mut fs, mut gs) = (0u64, 0u64);
        // SAFETY: arch_prctl GET_FS/GET_GS store one u64 at the pointer given.
        unsafe {
            libc::syscall(libc::SYS_arch_prctl, ARCH_GET_FS, &mut fs as *mut u64);
            libc::syscall(libc::SYS_arch_prctl, ARCH_GET_GS, &mut gs as *mut u64);
        }
        (fs, gs)
    }

    /// This CPU's MXCSR_MASK (the MXCSR bits FXRSTOR and LDMXCSR accept).
    pub fn mxcsr_mask() -> u32 {
        #[repr(align(16))]
        struct Area([u8; FX_SIZE]);
        let mut a = Area([0; FX_SIZE]);
        // SAFETY: FXSAVE (baseline on x86-64) stores 512 bytes at a 16-byte aligned buffer.
        unsafe { std::arch::x86_64::_fxsave64(a.0.as_mut_ptr()) };
        match u32::from_le_bytes([a.0[28], a.0[29], a.0[30], a.0[31]]) {
            0 => 0xffbf,
            m => m,
        }
    }

    /// The RSP the generated code starts with (valid after a run).
    pub fn code_rsp(&self) -> u64 {
        // SAFETY: reads the state block.
        unsafe { ((self.base + STATE_OFF + S_HOST_RSP) as *const u64).read_volatile() }
    }
}
