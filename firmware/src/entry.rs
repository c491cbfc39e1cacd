//! The CPU state a loader hands to the machine.

/// How the boot CPU must be set up to enter the loaded image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryMode {
    /// 32-bit protected mode with flat segments, as multiboot requires:
    /// - CR0: PE set, PG clear (paging off); CR4/EFER as at reset.
    /// - CS: 32-bit execute/read code segment, base 0, limit 4 GiB
    ///   (0xFFFF_FFFF, granularity 4 KiB), DPL 0.
    /// - DS, ES, FS, GS, SS: 32-bit read/write data segments, base 0,
    ///   limit 4 GiB, DPL 0.
    /// - EFLAGS = 0x2: interrupts off (IF clear), VM clear.
    /// - A20 enabled.
    ///
    /// The selector values and GDTR are undefined by multiboot (the guest
    /// must load its own GDT before reloading a segment register); the
    /// machine may use any selectors and need not build a GDT in guest
    /// memory, since only the hidden descriptor caches matter.
    Protected32Flat {
        /// EIP of the first instruction (= its physical address).
        eip: u32,
    },
    /// 16-bit real mode, as a BIOS enters a boot sector:
    /// - CR0.PE clear; CS = `cs` (base `cs * 16`), IP = `ip`.
    /// - DS, ES, FS, GS, SS all equal to `cs` (so both `0000:7C00` boot
    ///   sectors and `seg:0000` programs see their own data).
    /// - SP is the low 16 bits of [`EntryState::esp`].
    /// - EFLAGS = 0x2: interrupts off.
    Real16 {
        /// Code segment selector (and value of the other segment registers).
        cs: u16,
        /// Instruction pointer.
        ip: u16,
    },
}

impl EntryMode {
    /// Linear (= physical, since paging is off in both modes) address of the
    /// first instruction.
    pub fn entry_address(&self) -> u64 {
        match *self {
            EntryMode::Protected32Flat { eip } => u64::from(eip),
            EntryMode::Real16 { cs, ip } => u64::from(cs) * 16 + u64::from(ip),
        }
    }
}

/// Register state the machine must put the boot CPU in before it runs the
/// loaded image. General registers not listed here are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntryState {
    /// Processor mode, segments and instruction pointer.
    pub mode: EntryMode,
    /// EAX (multiboot: the boot loader magic 0x2BADB002).
    pub eax: u32,
    /// EBX (multiboot: physical address of the multiboot information).
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX (a BIOS passes the boot drive, e.g. 0x80, in DL).
    pub edx: u32,
    /// ESI.
    pub esi: u32,
    /// EDI.
    pub edi: u32,
    /// EBP.
    pub ebp: u32,
    /// ESP (multiboot leaves it undefined; the kernel sets up its own stack).
    pub esp: u32,
}

impl EntryState {
    /// State with the given mode and all general registers zero.
    pub const fn new(mode: EntryMode) -> Self {
        EntryState {
            mode,
            eax: 0,
            ebx: 0,
            ecx: 0,
            edx: 0,
            esi: 0,
            edi: 0,
            ebp: 0,
            esp: 0,
        }
    }

    /// Flat 32-bit protected mode at `eip`, general registers zero.
    pub const fn protected32(eip: u32) -> Self {
        EntryState::new(EntryMode::Protected32Flat { eip })
    }

    /// Real mode at `cs:ip`, general registers zero.
    pub const fn real16(cs: u16, ip: u16) -> Self {
        EntryState::new(EntryMode::Real16 { cs, ip })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_address() {
        assert_eq!(EntryState::real16(0, 0x7C00).mode.entry_address(), 0x7C00);
        assert_eq!(EntryState::real16(0x07C0, 0).mode.entry_address(), 0x7C00);
        assert_eq!(
            EntryState::real16(0xFFFF, 0xFFFF).mode.entry_address(),
            0x10_FFEF
        );
        assert_eq!(
            EntryState::protected32(0x10_0000).mode.entry_address(),
            0x10_0000
        );
    }
}
