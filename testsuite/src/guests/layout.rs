//! The fixed guest-physical memory map and GDT layout every guest shares.
//!
//! ```text
//! 0x0000_0000  real-mode IVT (256 * 4 bytes)
//! 0x0000_0500  VARS: variables of the library code (see the V_* constants)
//! 0x0000_0600  real-mode stack (SS = 0, SP = 0x1000 at entry)
//! 0x0000_1000  the image (LOAD_ADDR); everything 16-bit code touches lies
//!              below 0x1_0000 so plain 16-bit offsets with DS = 0 reach it
//! ...          image end (must stay below 0x7_0000)
//! 0x0007_4000  IST1 stack top (64-bit #DF)
//! 0x0007_8000  ring-3 stack top
//! 0x0007_C000  TSS ring-0 stack top (ESP0 / RSP0), distinct from the main one
//!              so a check can see the stack switch
//! 0x0007_F000  main ring-0 stack top
//! 0x0008_0000  SCRATCH: test data (64 KiB)
//! 0x0009_0000  V86 data segment (ES = 0x9000 in the V86 checks)
//! 0x0020_0000+ paging test pages (physical), see the paging checks
//! ```
//!
//! GDT (same in every guest, so SYSENTER/SYSEXIT and SYSCALL/SYSRET see the
//! selector arithmetic they require):
//!
//! | sel  | descriptor                                   |
//! |------|----------------------------------------------|
//! | 0x00 | null                                         |
//! | 0x08 | ring-0 code, 32-bit, flat (SYSENTER_CS)      |
//! | 0x10 | ring-0 data, flat (SYSENTER_CS + 8)          |
//! | 0x18 | ring-3 code, 32-bit, flat (SYSENTER_CS + 16; STAR bits 63..48) |
//! | 0x20 | ring-3 data, flat (SYSENTER_CS + 24; STAR bits 63..48 + 8) |
//! | 0x28 | ring-3 code, 64-bit (STAR bits 63..48 + 16)       |
//! | 0x30 | ring-0 code, 64-bit (STAR bits 47..32)            |
//! | 0x38 | ring-0 data, flat (STAR bits 47..32 + 8)          |
//! | 0x40 | ring-0 code, 16-bit, base 0, limit 0xFFFF    |
//! | 0x48 | ring-0 data, 16-bit, base 0, limit 0xFFFF    |
//! | 0x50 | 32-bit TSS                                   |
//! | 0x58 | 32-bit TSS with an I/O bitmap allowing only port 0x3FD (`tss32_io`) |
//! | 0x60 | 64-bit TSS (16 bytes)                        |
//! | 0x70 | ring-0 data, base SCRATCH, limit 0xFFFF (byte granular) |
//! | 0x78 | ring-0 data, not present                     |
//! | 0x80 | 32-bit call gate, DPL 3, to KCODE32:`cg_handler`, 1 parameter |
//! | 0x88 | LDT (`ldt`): entry 0 = ring-0 data, base SCRATCH + 0x5000, limit 0xFFF |

/// Where every guest image is loaded (physical = linear in all modes, since
/// all page tables identity-map low memory).
pub const LOAD_ADDR: u64 = 0x1000;
/// Images must end below this address (stacks start above).
pub const IMAGE_LIMIT: u64 = 0x7_0000;

/// Library variables (all little-endian).
pub const VARS: u64 = 0x500;
/// u64: the value a failed expectation saw.
pub const V_GOT: u64 = 0x500;
/// u64: the value a failed expectation wanted.
pub const V_WANT: u64 = 0x508;
/// u32: address of the NUL-terminated description of the failed expectation.
pub const V_WHAT: u64 = 0x510;
/// u64: stack pointer to resume at after an expected exception.
pub const V_RESUME_SP: u64 = 0x518;
/// u64: address to resume at after an expected exception (0 = none armed).
pub const V_RESUME_IP: u64 = 0x520;
/// u32: vector of the last exception taken (0xFFFF_FFFF = none).
pub const V_VEC: u64 = 0x528;
/// u32: its error code (0 when the vector has none).
pub const V_ERR: u64 = 0x52C;
/// u64: CR2 when the handler ran.
pub const V_CR2: u64 = 0x530;
/// u64: address of the saved instruction pointer in the handler's frame
/// (the stack pointer right after the CPU pushed the frame, error code
/// excluded).
pub const V_FRAME_SP: u64 = 0x538;
/// 10 × u64: the interrupt frame as the CPU pushed it, one slot per word:
/// 32-bit: EIP, CS, EFLAGS, ESP, SS, ES, DS, FS, GS (the last ones only from
/// ring 3 / V86); 64-bit: RIP, CS, RFLAGS, RSP, SS.
pub const V_FRAME: u64 = 0x540;
/// u64: EDX:EAX of the RDTSC that is the first instruction of every guest.
pub const V_TSC0: u64 = 0x590;
/// u32: number of exceptions the recording handler took.
pub const V_COUNT: u64 = 0x598;
/// u32: timer interrupt counter (incremented by the timer handlers).
pub const V_TICKS: u64 = 0x59C;
/// u16: DS as the exception handler found it on entry.
pub const V_ENTRY_DS: u64 = 0x5A0;
/// Free variables for individual checks (0x5A8..0x600).
pub const V_USER: u64 = 0x5A8;

/// Top of the real-mode stack (SS = 0).
pub const REAL_STACK_TOP: u64 = 0x1000;
/// Top of the 64-bit IST1 stack (used by #DF).
pub const IST1_TOP: u64 = 0x7_4000;
/// Top of the ring-3 stack.
pub const STACK3_TOP: u64 = 0x7_8000;
/// ESP0/RSP0 in the TSS: the stack an interrupt from ring 3 switches to.
pub const TSS_STACK_TOP: u64 = 0x7_C000;
/// Top of the main ring-0 stack.
pub const STACK0_TOP: u64 = 0x7_F000;
/// Scratch test data.
pub const SCRATCH: u64 = 0x8_0000;

/// Selectors.
pub const KCODE32: u16 = 0x08;
pub const KDATA: u16 = 0x10;
pub const UCODE32: u16 = 0x18;
pub const UDATA: u16 = 0x20;
pub const UCODE64: u16 = 0x28;
pub const KCODE64: u16 = 0x30;
pub const KDATA64: u16 = 0x38;
pub const CODE16: u16 = 0x40;
pub const DATA16: u16 = 0x48;
pub const TSS32_SEL: u16 = 0x50;
pub const TSS32_IO_SEL: u16 = 0x58;
pub const TSS64_SEL: u16 = 0x60;
/// The only port the I/O bitmap of `tss32_io` allows.
pub const IO_ALLOWED_PORT: u16 = 0x3FD;
pub const LIMITED_DATA: u16 = 0x70;
pub const NOT_PRESENT_DATA: u16 = 0x78;
pub const CALL_GATE: u16 = 0x80;
pub const LDT_SEL: u16 = 0x88;
/// Size of the GDT in bytes.
pub const GDT_SIZE: usize = 0x90;

/// Page-table entry bits.
pub const PTE_P: u64 = 1;
pub const PTE_RW: u64 = 2;
pub const PTE_US: u64 = 4;
pub const PTE_A: u64 = 0x20;
pub const PTE_D: u64 = 0x40;
pub const PTE_PS: u64 = 0x80;
pub const PTE_NX: u64 = 1 << 63;

/// Control register and EFLAGS bits the guests use.
pub const CR0_PE: u32 = 1;
pub const CR0_WP: u32 = 1 << 16;
pub const CR0_PG: u32 = 1 << 31;
pub const CR4_PSE: u32 = 1 << 4;
pub const CR4_PAE: u32 = 1 << 5;
pub const EFER: u32 = 0xC000_0080;
pub const EFER_SCE: u32 = 1;
pub const EFER_LME: u32 = 1 << 8;
pub const EFER_LMA: u32 = 1 << 10;
pub const EFER_NXE: u32 = 1 << 11;
pub const EFLAGS_IF: u32 = 1 << 9;
pub const EFLAGS_DF: u32 = 1 << 10;
pub const EFLAGS_VM: u32 = 1 << 17;
pub const EFLAGS_IOPL3: u32 = 3 << 12;
