//! Exceptions raised by instructions, and the conditions that stop the machine.

use std::fmt;

/// Architectural exception vectors.
pub mod vector {
    pub const DE: u8 = 0;
    pub const DB: u8 = 1;
    pub const NMI: u8 = 2;
    pub const BP: u8 = 3;
    pub const OF: u8 = 4;
    pub const BR: u8 = 5;
    pub const UD: u8 = 6;
    pub const NM: u8 = 7;
    pub const DF: u8 = 8;
    pub const TS: u8 = 10;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
    pub const MF: u8 = 16;
    pub const AC: u8 = 17;
    pub const MC: u8 = 18;
    pub const XM: u8 = 19;

    /// Mnemonic of an exception vector.
    pub fn name(v: u8) -> &'static str {
        match v {
            DE => "#DE",
            DB => "#DB",
            NMI => "NMI",
            BP => "#BP",
            OF => "#OF",
            BR => "#BR",
            UD => "#UD",
            NM => "#NM",
            DF => "#DF",
            TS => "#TS",
            NP => "#NP",
            SS => "#SS",
            GP => "#GP",
            PF => "#PF",
            MF => "#MF",
            AC => "#AC",
            MC => "#MC",
            XM => "#XM",
            _ => "vector",
        }
    }

    /// Whether the exception pushes an error code in protected/long mode.
    pub fn has_error_code(v: u8) -> bool {
        matches!(v, DF | TS | NP | SS | GP | PF | AC)
    }
}

/// Why the machine stopped instead of continuing the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopKind {
    /// A fault (`vector`, `error_code`) raised while delivering a double fault.
    TripleFault { vector: u8, error_code: Option<u32> },
    /// A valid instruction this CPU model does not implement.
    Unimplemented { mnemonic: String },
    /// Something the emulator cannot model (described).
    Unsupported(String),
}

/// A fatal stop, with where it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    pub kind: StopKind,
    pub icount: u64,
    pub cs: u16,
    pub rip: u64,
    /// Instruction bytes at CS:RIP (as many as could be read, up to 15).
    pub bytes: Vec<u8>,
    /// CPU mode name.
    pub mode: &'static str,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            StopKind::TripleFault { vector, error_code } => {
                write!(f, "triple fault: {}", vector::name(*vector))?;
                if let Some(e) = error_code {
                    write!(f, " (error code {e:#x})")?;
                }
                write!(f, " raised while delivering #DF")?;
            }
            StopKind::Unimplemented { mnemonic } => {
                write!(f, "unimplemented instruction {mnemonic}")?
            }
            StopKind::Unsupported(what) => write!(f, "unsupported: {what}")?,
        }
        write!(
            f,
            " at icount {} cs:rip {:04x}:{:x} in {}; bytes:",
            self.icount, self.cs, self.rip, self.mode
        )?;
        for b in &self.bytes {
            write!(f, " {b:02x}")?;
        }
        Ok(())
    }
}

/// What an instruction handler can fail with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// An architectural exception to deliver to the guest (CR2 is already set for #PF).
    Exception { vector: u8, error_code: Option<u32> },
    /// Stop the machine; the run loop fills in where.
    Stop(StopKind),
}

impl Fault {
    /// #GP(code).
    #[inline]
    pub fn gp(code: u32) -> Fault {
        Fault::Exception {
            vector: vector::GP,
            error_code: Some(code),
        }
    }
    /// #SS(code).
    #[inline]
    pub fn ss(code: u32) -> Fault {
        Fault::Exception {
            vector: vector::SS,
            error_code: Some(code),
        }
    }
    /// #NP(code).
    #[inline]
    pub fn np(code: u32) -> Fault {
        Fault::Exception {
            vector: vector::NP,
            error_code: Some(code),
        }
    }
    /// #TS(code).
    #[inline]
    pub fn ts(code: u32) -> Fault {
        Fault::Exception {
            vector: vector::TS,
            error_code: Some(code),
        }
    }
    /// #UD.
    #[inline]
    pub fn ud() -> Fault {
        Fault::Exception {
            vector: vector::UD,
            error_code: None,
        }
    }
    /// #DE.
    #[inline]
    pub fn de() -> Fault {
        Fault::Exception {
            vector: vector::DE,
            error_code: None,
        }
    }
    /// #NM.
    #[inline]
    pub fn nm() -> Fault {
        Fault::Exception {
            vector: vector::NM,
            error_code: None,
        }
    }
    /// An exception without error code.
    #[inline]
    pub fn exc(vector: u8) -> Fault {
        Fault::Exception {
            vector,
            error_code: None,
        }
    }
}

/// Result of anything that may raise an exception.
pub type Result<T> = std::result::Result<T, Fault>;
