//! PCI configuration mechanism #1 (ports 0xCF8..=0xCFF) with the two
//! functions of an i440FX/PIIX3 PC: the host bridge at 00:00.0 and the
//! PCI-to-ISA bridge at 00:01.0.
//!
//! The guest writes a dword to CONFIG_ADDRESS (0xCF8: bit 31 enable, bits
//! 23:16 bus, 15:11 device, 10:8 function, 7:2 register) and then reads or
//! writes CONFIG_DATA (0xCFC..=0xCFF) with any access size; byte `k` of
//! the data port is byte `register + k` of the selected function's
//! configuration space. Absent functions, and every access while the enable
//! bit is clear, read all ones and ignore writes.
//!
//! Header fields are read-only except the ones PCI makes writable for
//! these bridges: command (I/O, memory, bus master, parity, SERR, INTx
//! disable), cache line size, latency timer and interrupt line, plus the
//! whole device-specific area 0x40..=0xFF, kept as plain storage (the
//! i440FX PAM and SMRAM registers, the PIIX3 PIRQ routing registers) for
//! the machine to read back. Status bits are not write-one-to-clear: they
//! never get set.
//!
//! A byte access to 0xCF9 reaches the PIIX3 reset control register
//! instead: writing it with bit 2 (reset CPU) set requests a system reset,
//! as Linux's `reboot=pci` does.

use serde::{Deserialize, Serialize};

/// CONFIG_ADDRESS port.
pub const PCI_CONFIG_ADDRESS_PORT: u16 = 0xCF8;
/// First CONFIG_DATA port (0xCFC..=0xCFF).
pub const PCI_CONFIG_DATA_PORT: u16 = 0xCFC;
/// PIIX3 reset control register (byte accesses to 0xCF9).
pub const PCI_RESET_CONTROL_PORT: u16 = 0xCF9;

/// Size of one function's configuration space.
const CONFIG_SIZE: usize = 256;
/// Offset of the data port from 0xCF8.
const OFF_DATA: u8 = 4;
/// Offset of the reset control register from 0xCF8.
const OFF_RESET_CONTROL: u8 = 1;

/// CONFIG_ADDRESS enable bit.
const ADDR_ENABLE: u32 = 1 << 31;
/// Writable CONFIG_ADDRESS bits: enable, bus, device, function, register
/// (bits 30:24 are reserved and bits 1:0 read 0).
const ADDR_WRITABLE: u32 = 0x80FF_FFFC;

/// Reset control: reset the CPU (with SYS_RST: the whole system).
const RCR_RST_CPU: u8 = 0x04;
/// Reset control: hard (system) reset; the only bit kept.
const RCR_SYS_RST: u8 = 0x02;

// Standard header offsets.
/// Vendor ID (16 bits).
const CFG_VENDOR: usize = 0x00;
/// Device ID (16 bits).
const CFG_DEVICE: usize = 0x02;
/// Command register (16 bits).
const CFG_COMMAND: usize = 0x04;
/// Status register (16 bits).
const CFG_STATUS: usize = 0x06;
/// Revision ID.
const CFG_REVISION: usize = 0x08;
/// Programming interface, subclass, class (bytes 0x09..=0x0B).
const CFG_CLASS: usize = 0x09;
/// Cache line size.
const CFG_CACHE_LINE: usize = 0x0C;
/// Latency timer.
const CFG_LATENCY: usize = 0x0D;
/// Header type (bit 7: multi-function device).
const CFG_HEADER_TYPE: usize = 0x0E;
/// Interrupt line (written by firmware, read by drivers).
const CFG_INTERRUPT_LINE: usize = 0x3C;
/// Start of the device-specific area.
const CFG_DEVICE_SPECIFIC: usize = 0x40;
/// PIIX3 PIRQ[A-D] route control registers (0x60..=0x63).
const PIIX_PIRQ_ROUTE: usize = 0x60;
/// PIRQ route: bit 7 disables routing to the ISA IRQ in bits 3:0.
const PIRQ_DISABLED: u8 = 0x80;

/// Command register bits the guest may write (low byte: I/O space, memory
/// space, bus master, parity error response; high byte: SERR enable,
/// INTx disable).
const COMMAND_WRITABLE: [u8; 2] = [0x47, 0x05];

/// The function selected by a configuration address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Function {
    /// 00:00.0, i440FX host bridge.
    HostBridge,
    /// 00:01.0, PIIX3 PCI-to-ISA bridge.
    IsaBridge,
}

/// Saved state of a [`PciHost`]. `Default` is the power-on state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciHostState {
    /// CONFIG_ADDRESS as last written (writable bits only).
    pub address: u32,
    /// Configuration space of the host bridge, 00:00.0 (256 bytes).
    pub host_bridge: Vec<u8>,
    /// Configuration space of the ISA bridge, 00:01.0 (256 bytes).
    pub isa_bridge: Vec<u8>,
    /// PIIX3 reset control register (bit 1 kept).
    pub reset_control: u8,
    /// The guest asked for a system reset through 0xCF9.
    pub reset_requested: bool,
}

/// A configuration space with the fixed header fields filled in.
fn header(vendor: u16, device: u16, revision: u8, class: [u8; 3], header_type: u8) -> Vec<u8> {
    let mut c = vec![0u8; CONFIG_SIZE];
    c[CFG_VENDOR..CFG_VENDOR + 2].copy_from_slice(&vendor.to_le_bytes());
    c[CFG_DEVICE..CFG_DEVICE + 2].copy_from_slice(&device.to_le_bytes());
    c[CFG_REVISION] = revision;
    c[CFG_CLASS..CFG_CLASS + 3].copy_from_slice(&class);
    c[CFG_HEADER_TYPE] = header_type;
    c
}

impl Default for PciHostState {
    fn default() -> Self {
        // i440FX PMC: host bridge (class 06/00), revision 2 as in QEMU.
        let host_bridge = header(0x8086, 0x1237, 0x02, [0x00, 0x00, 0x06], 0x00);
        // PIIX3: ISA bridge (class 06/01), multi-function (IDE and USB
        // would be functions 1 and 2; none is modelled, so they read as
        // absent). Command defaults to I/O + memory + bus master and
        // status to medium DEVSEL timing, per the datasheet.
        let mut isa_bridge = header(0x8086, 0x7000, 0x00, [0x00, 0x01, 0x06], 0x80);
        isa_bridge[CFG_COMMAND] = 0x07;
        isa_bridge[CFG_STATUS + 1] = 0x02;
        for r in &mut isa_bridge[PIIX_PIRQ_ROUTE..PIIX_PIRQ_ROUTE + 4] {
            *r = PIRQ_DISABLED;
        }
        PciHostState {
            address: 0,
            host_bridge,
            isa_bridge,
            reset_control: 0,
            reset_requested: false,
        }
    }
}

/// Write mask of configuration byte `offset` (same for both bridges).
fn write_mask(offset: usize) -> u8 {
    match offset {
        CFG_COMMAND => COMMAND_WRITABLE[0],
        o if o == CFG_COMMAND + 1 => COMMAND_WRITABLE[1],
        CFG_CACHE_LINE | CFG_LATENCY | CFG_INTERRUPT_LINE => 0xFF,
        o if o >= CFG_DEVICE_SPECIFIC => 0xFF,
        _ => 0,
    }
}

/// The PCI host: configuration mechanism #1 plus the two bridges. See the
/// module documentation.
#[derive(Clone, Debug)]
pub struct PciHost {
    state: PciHostState,
}

impl Default for PciHost {
    fn default() -> Self {
        Self::new()
    }
}

impl PciHost {
    /// The host in its power-on state.
    pub fn new() -> Self {
        Self::from_state(&PciHostState::default())
    }

    /// Rebuilds the host from saved state. Configuration spaces of the
    /// wrong length are padded or truncated to 256 bytes.
    pub fn from_state(state: &PciHostState) -> Self {
        let mut state = state.clone();
        state.address &= ADDR_WRITABLE;
        state.host_bridge.resize(CONFIG_SIZE, 0);
        state.isa_bridge.resize(CONFIG_SIZE, 0);
        state.reset_control &= RCR_SYS_RST;
        PciHost { state }
    }

    /// The guest-visible state, for a snapshot.
    pub fn state(&self) -> PciHostState {
        self.state.clone()
    }

    /// Reads `size` bytes (1, 2 or 4) at port `0xCF8 + offset` (offset
    /// 0..=7). CONFIG_ADDRESS answers dword reads, 0xCF9 byte reads reach
    /// the reset control register; other accesses to 0xCF8..=0xCFB read
    /// all ones, as an empty ISA bus does.
    pub fn read(&self, offset: u8, size: u8) -> u32 {
        let ones = Self::ones(size);
        match (offset, size) {
            (0, 4) => self.state.address,
            (OFF_RESET_CONTROL, 1) => u32::from(self.state.reset_control),
            (o @ OFF_DATA..=7, _) => {
                let a = self.state.address;
                if a & ADDR_ENABLE == 0 {
                    return ones;
                }
                let (bus, dev, func, reg) = Self::decode(a);
                self.config_read(bus, dev, func, reg + (o - OFF_DATA), size)
            }
            _ => ones,
        }
    }

    /// Writes the low `size` bytes (1, 2 or 4) of `value` at port
    /// `0xCF8 + offset` (offset 0..=7); see [`PciHost::read`].
    pub fn write(&mut self, offset: u8, size: u8, value: u32) {
        match (offset, size) {
            (0, 4) => self.state.address = value & ADDR_WRITABLE,
            (OFF_RESET_CONTROL, 1) => {
                let v = value as u8;
                if v & RCR_RST_CPU != 0 {
                    self.state.reset_requested = true;
                }
                self.state.reset_control = v & RCR_SYS_RST;
            }
            (o @ OFF_DATA..=7, _) => {
                let a = self.state.address;
                if a & ADDR_ENABLE == 0 {
                    return;
                }
                let (bus, dev, func, reg) = Self::decode(a);
                self.config_write(bus, dev, func, reg + (o - OFF_DATA), size, value);
            }
            _ => {}
        }
    }

    /// Reads `size` bytes (1, 2 or 4; other sizes read as 4) of the
    /// configuration space of `bus:dev.func` from byte `reg`, little-endian,
    /// wrapping within the 256-byte space. Absent functions read all ones.
    pub fn config_read(&self, bus: u8, dev: u8, func: u8, reg: u8, size: u8) -> u32 {
        let Some(space) = self.space(bus, dev, func) else {
            return Self::ones(size);
        };
        (0..Self::len(size)).fold(0u32, |acc, i| {
            let b = space[usize::from(reg.wrapping_add(i))];
            acc | (u32::from(b) << (8 * i))
        })
    }

    /// Writes the low `size` bytes of `value` into the configuration space
    /// of `bus:dev.func` at `reg`, honouring each byte's write mask.
    /// Writes to absent functions are ignored.
    pub fn config_write(&mut self, bus: u8, dev: u8, func: u8, reg: u8, size: u8, value: u32) {
        let Some(f) = Self::function(bus, dev, func) else {
            return;
        };
        let space = match f {
            Function::HostBridge => &mut self.state.host_bridge,
            Function::IsaBridge => &mut self.state.isa_bridge,
        };
        for i in 0..Self::len(size) {
            let off = usize::from(reg.wrapping_add(i));
            let mask = write_mask(off);
            let b = (value >> (8 * i)) as u8;
            space[off] = (space[off] & !mask) | (b & mask);
        }
    }

    /// The guest asked for a system reset through the reset control
    /// register. Sticky: the machine resets, which rebuilds the host.
    pub fn reset_requested(&self) -> bool {
        self.state.reset_requested
    }

    /// ISA IRQ that PIIX3 PIRQ line `n` (0..=3 for PIRQA..PIRQD) is routed
    /// to, or `None` if routing is disabled (bit 7) or `n` is out of range.
    pub fn pirq_route(&self, n: u8) -> Option<u8> {
        if n > 3 {
            return None;
        }
        let r = self.state.isa_bridge[PIIX_PIRQ_ROUTE + usize::from(n)];
        (r & PIRQ_DISABLED == 0).then_some(r & 0x0F)
    }

    fn ones(size: u8) -> u32 {
        match Self::len(size) {
            1 => 0xFF,
            2 => 0xFFFF,
            _ => 0xFFFF_FFFF,
        }
    }

    fn len(size: u8) -> u8 {
        match size {
            1 | 2 => size,
            _ => 4,
        }
    }

    /// (bus, device, function, register) of a CONFIG_ADDRESS value.
    fn decode(a: u32) -> (u8, u8, u8, u8) {
        (
            (a >> 16) as u8,
            ((a >> 11) & 0x1F) as u8,
            ((a >> 8) & 7) as u8,
            (a & 0xFC) as u8,
        )
    }

    fn function(bus: u8, dev: u8, func: u8) -> Option<Function> {
        match (bus, dev, func) {
            (0, 0, 0) => Some(Function::HostBridge),
            (0, 1, 0) => Some(Function::IsaBridge),
            _ => None,
        }
    }

    fn space(&self, bus: u8, dev: u8, func: u8) -> Option<&[u8]> {
        Self::function(bus, dev, func).map(|f| match f {
            Function::HostBridge => self.state.host_bridge.as_slice(),
            Function::IsaBridge => self.state.isa_bridge.as_slice(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(bus: u32, dev: u32, func: u32, reg: u32) -> u32 {
        ADDR_ENABLE | (bus << 16) | (dev << 11) | (func << 8) | reg
    }

    fn cfg_read(p: &mut PciHost, a: u32, byte: u8, size: u8) -> u32 {
        p.write(0, 4, a);
        p.read(OFF_DATA + byte, size)
    }

    fn cfg_write(p: &mut PciHost, a: u32, byte: u8, size: u8, v: u32) {
        p.write(0, 4, a);
        p.write(OFF_DATA + byte, size, v);
    }

    #[test]
    fn identification() {
        let mut p = PciHost::new();
        assert_eq!(cfg_read(&mut p, addr(0, 0, 0, 0), 0, 4), 0x1237_8086);
        assert_eq!(cfg_read(&mut p, addr(0, 0, 0, 8), 0, 4), 0x0600_0002);
        assert_eq!(cfg_read(&mut p, addr(0, 0, 0, 0xC), 2, 1), 0x00);
        assert_eq!(cfg_read(&mut p, addr(0, 1, 0, 0), 0, 4), 0x7000_8086);
        assert_eq!(cfg_read(&mut p, addr(0, 1, 0, 8), 0, 4), 0x0601_0000);
        assert_eq!(cfg_read(&mut p, addr(0, 1, 0, 0xC), 2, 1), 0x80);
        assert_eq!(cfg_read(&mut p, addr(0, 1, 0, 4), 0, 4), 0x0200_0007);
        // Sub-dword reads at each byte lane.
        assert_eq!(cfg_read(&mut p, addr(0, 0, 0, 0), 2, 2), 0x1237);
        assert_eq!(cfg_read(&mut p, addr(0, 0, 0, 0), 1, 1), 0x80);
        assert_eq!(cfg_read(&mut p, addr(0, 0, 0, 0), 3, 1), 0x12);
    }

    #[test]
    fn absent_and_disabled() {
        let mut p = PciHost::new();
        for a in [
            addr(0, 2, 0, 0),
            addr(0, 0, 1, 0),
            addr(0, 1, 1, 0),
            addr(1, 0, 0, 0),
            addr(0, 31, 7, 0),
        ] {
            assert_eq!(cfg_read(&mut p, a, 0, 4), 0xFFFF_FFFF);
            assert_eq!(cfg_read(&mut p, a, 0, 2), 0xFFFF);
            assert_eq!(cfg_read(&mut p, a, 1, 1), 0xFF);
            cfg_write(&mut p, a, 0, 4, 0);
        }
        let untouched = PciHostState {
            address: addr(0, 31, 7, 0),
            ..PciHostState::default()
        };
        assert_eq!(p.state(), untouched);
        // Enable bit clear.
        assert_eq!(cfg_read(&mut p, 0, 0, 4), 0xFFFF_FFFF);
        cfg_write(&mut p, addr(0, 0, 0, 0x0C) & !ADDR_ENABLE, 1, 1, 0x40);
        assert_eq!(cfg_read(&mut p, addr(0, 0, 0, 0x0C), 1, 1), 0);
    }

    #[test]
    fn address_register() {
        let mut p = PciHost::new();
        p.write(0, 4, 0xFFFF_FFFF);
        assert_eq!(p.read(0, 4), 0x80FF_FFFC);
        assert_eq!(p.read(0, 1), 0xFF, "byte access is not CONFIG_ADDRESS");
        assert_eq!(p.read(2, 2), 0xFFFF);
        p.write(0, 2, 0);
        assert_eq!(p.read(0, 4), 0x80FF_FFFC);
    }

    #[test]
    fn writable_fields_only() {
        let mut p = PciHost::new();
        let a = addr(0, 0, 0, 0);
        cfg_write(&mut p, a, 0, 4, 0);
        assert_eq!(cfg_read(&mut p, a, 0, 4), 0x1237_8086, "IDs read-only");
        cfg_write(&mut p, addr(0, 0, 0, 4), 0, 4, 0xFFFF_FFFF);
        assert_eq!(cfg_read(&mut p, addr(0, 0, 0, 4), 0, 4), 0x0000_0547);
        cfg_write(&mut p, addr(0, 0, 0, 0xC), 0, 4, 0xFFFF_FFFF);
        assert_eq!(cfg_read(&mut p, addr(0, 0, 0, 0xC), 0, 4), 0x0000_FFFF);
        cfg_write(&mut p, addr(0, 0, 0, 0x10), 0, 4, 0xFFFF_FFFF);
        assert_eq!(cfg_read(&mut p, addr(0, 0, 0, 0x10), 0, 4), 0, "no BARs");
        cfg_write(&mut p, addr(0, 0, 0, 0x3C), 0, 2, 0xFFFF);
        assert_eq!(cfg_read(&mut p, addr(0, 0, 0, 0x3C), 0, 4), 0xFF);
        // i440FX PAM registers keep what firmware writes.
        cfg_write(&mut p, addr(0, 0, 0, 0x58), 1, 1, 0x30);
        cfg_write(&mut p, addr(0, 0, 0, 0x58), 2, 2, 0x3333);
        assert_eq!(cfg_read(&mut p, addr(0, 0, 0, 0x58), 0, 4), 0x3333_3000);
        // Unaligned dword at a byte lane wraps within the space.
        cfg_write(&mut p, addr(0, 0, 0, 0xFC), 3, 4, 0xAABB_CCDD);
        assert_eq!(cfg_read(&mut p, addr(0, 0, 0, 0xFC), 3, 1), 0xDD);
        assert_eq!(p.config_read(0, 0, 0, 0, 1), 0x86, "wrapped bytes masked");
    }

    #[test]
    fn pirq_routing() {
        let mut p = PciHost::new();
        assert_eq!(p.pirq_route(0), None);
        cfg_write(&mut p, addr(0, 1, 0, 0x60), 0, 4, 0x800B_0A0B);
        assert_eq!(p.pirq_route(0), Some(11));
        assert_eq!(p.pirq_route(1), Some(10));
        assert_eq!(p.pirq_route(2), Some(11));
        assert_eq!(p.pirq_route(3), None);
        assert_eq!(p.pirq_route(4), None);
    }

    #[test]
    fn reset_control_register() {
        let mut p = PciHost::new();
        p.write(OFF_RESET_CONTROL, 1, 0x02);
        assert_eq!(p.read(OFF_RESET_CONTROL, 1), 0x02);
        assert!(!p.reset_requested());
        p.write(OFF_RESET_CONTROL, 1, 0x06);
        assert!(p.reset_requested());
    }

    #[test]
    fn garbage_never_panics() {
        let mut p = PciHost::new();
        let mut x = 0x0BAD_F00Du32;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let off = (x >> 3) as u8 % 10;
            let size = (x >> 8) as u8 % 6;
            if x & 1 == 0 {
                p.write(off, size, x.rotate_left(5));
            } else {
                let _ = p.read(off, size);
            }
        }
        let st = PciHostState {
            address: u32::MAX,
            host_bridge: vec![],
            isa_bridge: vec![0xFF; 1000],
            reset_control: 0xFF,
            reset_requested: false,
        };
        let mut p = PciHost::from_state(&st);
        for off in 0..8 {
            let _ = p.read(off, 4);
            p.write(off, 4, u32::MAX);
        }
        let _ = p.config_read(0, 0, 0, 0xFF, 4);
    }

    #[test]
    fn snapshot_roundtrip() {
        let mut p = PciHost::new();
        cfg_write(&mut p, addr(0, 1, 0, 0x60), 0, 1, 0x0B);
        cfg_write(&mut p, addr(0, 0, 0, 4), 0, 2, 0x0006);
        p.write(0, 4, addr(0, 0, 0, 4));
        let saved = p.state();

        p.write(OFF_DATA, 2, 0);
        cfg_write(&mut p, addr(0, 1, 0, 0x60), 0, 1, 0x80);
        p.write(OFF_RESET_CONTROL, 1, 0x04);
        assert_ne!(p.state(), saved);

        let r = PciHost::from_state(&saved);
        assert_eq!(r.state(), saved);
        assert_eq!(r.read(OFF_DATA, 2), 0x0006);
        assert_eq!(r.pirq_route(0), Some(11));
        assert!(!r.reset_requested());
    }
}
