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

/// Bytes read from stdin by a background thread. The run loop takes them
/// between run slices, so the guest sees input only at instruction counts
/// the machine chose (and a recording can log them there).
pub struct StdinReader {
    rx: Receiver<Vec<u8>>,
    open: bool,
}

impl StdinReader {
    /// Starts the reader thread. It ends at end of input or on a read error.
    pub fn spawn() -> StdinReader {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        StdinReader { rx, open: true }
    }

    /// Whether more input may still arrive.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Queues everything read so far into the machine's COM1 input.
    pub fn forward(&mut self, machine: &mut Machine) {
        loop {
            match self.rx.try_recv() {
                Ok(bytes) => machine.console_input(&bytes),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.open = false;
                    return;
                }
            }
        }
    }

    /// Waits until input arrives (queued into the machine: true) or stdin
    /// ends (false).
    pub fn wait(&mut self, machine: &mut Machine) -> bool {
        match self.rx.recv() {
            Ok(bytes) => {
                machine.console_input(&bytes);
                self.forward(machine);
                true
            }
            Err(_) => {
                self.open = false;
                false
            }
        }
    }
}
