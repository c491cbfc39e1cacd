//! The CPU's only window on the rest of the machine.
//!
//! `cpu` knows nothing of devices or time travel: the machine implements
//! [`Bus`] and hands it to the interpreter. RAM is reached through host
//! pointers to whole 4 KiB pages so that the software TLB can cache them;
//! everything else (MMIO, ports) goes through calls.

/// Size of a guest page.
pub const PAGE_SIZE: u64 = 4096;
/// Mask selecting the offset within a page.
pub const PAGE_MASK: u64 = PAGE_SIZE - 1;

/// Result of asking for a RAM page to write.
#[derive(Clone, Copy, Debug)]
pub struct WritablePage {
    /// Host address of the first byte of the page.
    pub host: *mut u8,
    /// Whether later writes may bypass the bus (false while the machine wants
    /// to see every store to the page, e.g. to track dirtiness).
    pub cacheable: bool,
}

/// Guest-physical memory and I/O ports as the CPU sees them.
pub trait Bus {
    /// Host address of the RAM (or ROM) page starting at `page` (page-aligned
    /// guest-physical address), for reads and instruction fetch. `None` when
    /// the page is not backed by host memory (MMIO or unmapped).
    fn ram_page(&mut self, page: u64) -> Option<*mut u8>;
    /// Host address of the RAM page starting at `page` for writing. The bus
    /// marks the page dirty. `None` for MMIO, ROM and unmapped pages.
    fn ram_page_mut(&mut self, page: u64) -> Option<WritablePage>;
    /// A read of `size` bytes (1, 2, 4 or 8) from a non-RAM physical address.
    /// Unmapped addresses read as all ones. `icount` is the accessing vCPU's
    /// instruction count (its virtual time) at the accessing instruction.
    fn mmio_read(&mut self, addr: u64, size: u8, icount: u64) -> u64;
    /// A write of `size` bytes to a non-RAM physical address (ignored when unmapped or ROM).
    fn mmio_write(&mut self, addr: u64, size: u8, value: u64, icount: u64);
    /// IN from `port` (`size` 1, 2 or 4). Unclaimed ports read as all ones.
    fn io_read(&mut self, port: u16, size: u8, icount: u64) -> u32;
    /// OUT to `port`.
    fn io_write(&mut self, port: u16, size: u8, value: u32, icount: u64);
    /// RDMSR of an MSR that lives in a device rather than the CPU (the
    /// local APIC's IA32_TSC_DEADLINE): `Some(value)` if the machine has
    /// it, else `None` and the CPU's own MSRs answer. TSC values are passed
    /// in the instruction-count domain (TSC minus the vCPU's TSC offset).
    fn msr_read(&mut self, index: u32, icount: u64) -> Option<u64> {
        let _ = (index, icount);
        None
    }
    /// WRMSR of a device MSR (see [`Bus::msr_read`]); `true` if the
    /// machine took it.
    fn msr_write(&mut self, index: u32, value: u64, icount: u64) -> bool {
        let _ = (index, value, icount);
        false
    }
}
