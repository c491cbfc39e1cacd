//! The host side of the guest console: guest output to stdout, stdin to
//! the guest's COM1.

use std::io::{Read, Write};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread;

use hindsight_machine::Machine;

/// Sends the machine's console output (COM1 and the 0xE9 debug console) to
/// stdout as it is produced. Write errors (a closed pipe) are ignored: the
/// guest keeps running and its exit status still counts.
pub fn to_stdout(machine: &mut Machine) {
    machine.set_console(Box::new(|bytes: &[u8]| {
        let _ = std::io::stdout().lock().write_all(bytes);
    }));
}

/// Flushes stdout, ignoring errors (see [`to_stdout`]).
pub fn flush() {
    let _ = std::io::stdout().flush();
}

/// What the stdin thread passes on.
enum Msg {
    /// Bytes for the guest.
    Bytes(Vec<u8>),
    /// The user typed the quit escape (Ctrl-A x).
    Quit,
}

/// The escape key of an interactive console (Ctrl-A, as in QEMU).
const ESCAPE: u8 = 0x01;

/// Bytes read from stdin by a background thread. The run loop takes them
/// between run slices, so the guest sees input only at instruction counts
/// the machine chose (and a recording can log them there).
pub struct StdinReader {
    rx: Receiver<Msg>,
    open: bool,
    quit: bool,
}

/// Splits typed bytes at the console escape: Ctrl-A x quits, Ctrl-A
/// Ctrl-A sends one Ctrl-A, Ctrl-A followed by anything else is dropped
/// with it. `pending` carries a Ctrl-A seen at the end of the last chunk.
fn unescape(bytes: &[u8], pending: &mut bool) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if *pending {
            *pending = false;
            match b {
                b'x' | b'X' => return (out, true),
                ESCAPE => out.push(ESCAPE),
                _ => {}
            }
        } else if b == ESCAPE {
            *pending = true;
        } else {
            out.push(b);
        }
    }
    (out, false)
}

impl StdinReader {
    /// Starts the reader thread. It ends at end of input or on a read error.
    /// With `escapes`, Ctrl-A x requests a quit (see [`unescape`]).
    pub fn spawn(escapes: bool) -> StdinReader {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            let mut pending = false;
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let (bytes, quit) = if escapes {
                            unescape(&buf[..n], &mut pending)
                        } else {
                            (buf[..n].to_vec(), false)
                        };
                        if !bytes.is_empty() && tx.send(Msg::Bytes(bytes)).is_err() {
                            break;
                        }
                        if quit {
                            let _ = tx.send(Msg::Quit);
                            break;
                        }
                    }
                }
            }
        });
        StdinReader {
            rx,
            open: true,
            quit: false,
        }
    }

    /// Whether more input may still arrive.
    pub fn is_open(&self) -> bool {
        self.open && !self.quit
    }

    /// Whether the user asked to quit.
    pub fn quit_requested(&self) -> bool {
        self.quit
    }

    fn take(&mut self, msg: Msg, out: &mut Vec<Vec<u8>>) {
        match msg {
            Msg::Bytes(bytes) => out.push(bytes),
            Msg::Quit => self.quit = true,
        }
    }

    /// Everything read so far, in chunks as it arrived.
    pub fn take_ready(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            match self.rx.try_recv() {
                Ok(msg) => self.take(msg, &mut out),
                Err(TryRecvError::Empty) => return out,
                Err(TryRecvError::Disconnected) => {
                    self.open = false;
                    return out;
                }
            }
        }
    }

    /// Waits until input arrives (returned), or stdin ends or the user
    /// quits (`None`).
    pub fn wait(&mut self) -> Option<Vec<Vec<u8>>> {
        match self.rx.recv() {
            Ok(msg) => {
                let mut out = Vec::new();
                self.take(msg, &mut out);
                out.extend(self.take_ready());
                (!self.quit).then_some(out)
            }
            Err(_) => {
                self.open = false;
                None
            }
        }
    }
}

/// The terminal in raw mode (no line editing, no echo, no signals from
/// Ctrl-C: every key goes to the guest) until dropped.
pub struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    /// Switches stdin's terminal to raw mode; `None` if it is not a terminal.
    pub fn enter() -> Option<RawMode> {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a properly sized termios.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            // No output post-processing either: the guest's console sends
            // its own carriage returns.
            libc::cfmakeraw(&mut t);
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(RawMode { saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes saved by `enter`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences() {
        let mut p = false;
        assert_eq!(unescape(b"ab", &mut p), (b"ab".to_vec(), false));
        assert_eq!(unescape(b"a\x01xb", &mut p), (b"a".to_vec(), true));
        assert_eq!(unescape(b"\x01\x01c", &mut p), (b"\x01c".to_vec(), false));
        assert_eq!(unescape(b"d\x01", &mut p), (b"d".to_vec(), false));
        assert!(p);
        assert_eq!(unescape(b"x", &mut p), (Vec::new(), true));
        assert_eq!(unescape(b"\x01qz", &mut p), (b"z".to_vec(), false));
    }
}
