//! The entry point: wait for gdb (halted or running), then serve one
//! session with gdbstub's blocking event loop.
//!
//! While gdb has the machine running (continue, step, reverse), the run
//! polls the connection without blocking between slices (the debuggee
//! calls the poll every few milliseconds); a byte from gdb ends the run
//! with [`StopEvent::Interrupted`] and goes to gdbstub, which turns a
//! Ctrl-C (0x03) into a SIGINT stop.
//!
//! Text gdb should show (why the guest exited or the machine stopped) is
//! sent as a console-output `O` packet right before the stop reply, which
//! gdb accepts while it waits for the reply and prints as is.

use std::cell::RefCell;
use std::io;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;

use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason};
use hindsight_cpu::debug::DebugSet;

use crate::arch::{ArchView, I386View, I8086View, X86_64View};
use crate::target::{GdbArch, HsTarget};
use crate::{Debuggee, Resume, StopEvent};

/// How a gdb session is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GdbOptions {
    /// The register view gdb is shown (`--gdb-arch`).
    pub arch: ArchView,
    /// Keep the machine halted until gdb attaches (`--gdb-wait`, QEMU's
    /// `-S`); otherwise it runs and stops when gdb attaches.
    pub wait: bool,
}

/// How a session ended: what the program should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// gdb detached (`detach`, or `quit` on an attached target): breakpoints
    /// are removed; run the guest on to its end.
    Detached,
    /// gdb killed the target (`kill`): end the program.
    Killed,
    /// The connection dropped without a goodbye (gdb crashed, the network
    /// went away).
    Disconnected,
    /// gdb killed the target (or went away) after the guest had exited;
    /// `status` is the exit status hindsight reports for that exit.
    Exited {
        /// The guest's exit status, as in [`StopEvent::Exited`].
        status: i32,
    },
}

/// Why serving failed.
#[derive(Debug)]
pub enum GdbError {
    /// Waiting for or accepting the connection failed.
    Io(io::Error),
    /// gdb sent something out of protocol (or gdbstub failed): the text
    /// says what. The machine is unharmed.
    Protocol(String),
}

impl std::fmt::Display for GdbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GdbError::Io(e) => write!(f, "gdb connection: {e}"),
            GdbError::Protocol(e) => write!(f, "gdb session ended on a protocol error: {e}"),
        }
    }
}

impl std::error::Error for GdbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GdbError::Io(e) => Some(e),
            GdbError::Protocol(_) => None,
        }
    }
}

impl From<io::Error> for GdbError {
    fn from(e: io::Error) -> GdbError {
        GdbError::Io(e)
    }
}

/// Serves one gdb session on `listener` for `d`.
///
/// With `opts.wait` the machine stays as it is until gdb attaches.
/// Without it the machine runs forward ([`Resume::Continue`]) while the
/// listener is polled, and stops when gdb attaches; if the guest ends (or
/// the machine stops) first, the machine is kept as it is for gdb to
/// inspect and run backward, and serving goes on (saying so on stderr, the
/// only thing `serve` prints). Breakpoints are removed when the session
/// ends.
pub fn serve(
    listener: TcpListener,
    d: &mut dyn Debuggee,
    opts: &GdbOptions,
) -> Result<SessionEnd, GdbError> {
    let (stream, early) = wait_for_gdb(&listener, d, opts)?;
    match opts.arch {
        ArchView::X86_64 => session::<X86_64View>(stream, d, early),
        ArchView::I386 => session::<I386View>(stream, d, early),
        ArchView::I8086 => session::<I8086View>(stream, d, early),
    }
}

fn describe(addr: &Option<SocketAddr>) -> String {
    addr.map_or_else(|| "its port".to_string(), |a| a.to_string())
}

/// Accepts gdb's connection, running the machine meanwhile unless `wait`.
/// Returns the connection and the event that stopped the machine, if it ran.
fn wait_for_gdb(
    listener: &TcpListener,
    d: &mut dyn Debuggee,
    opts: &GdbOptions,
) -> Result<(TcpStream, Option<StopEvent>), GdbError> {
    let addr = describe(&listener.local_addr().ok());
    if opts.wait {
        let (s, _) = listener.accept()?;
        return Ok((s, None));
    }
    listener.set_nonblocking(true)?;
    // No breakpoints before gdb sets some.
    d.set_debug(DebugSet::default());
    let accepted = loop {
        let mut conn = None;
        let ev = d.resume(Resume::Continue, &mut || {
            if conn.is_none() {
                if let Ok((s, _)) = listener.accept() {
                    conn = Some(s);
                }
            }
            conn.is_some()
        });
        if let Some(s) = conn {
            break (s, ev);
        }
        match ev {
            StopEvent::Exited { .. } | StopEvent::Stopped { .. } | StopEvent::HistoryEnd => {
                eprintln!(
                    "hindsight: {} at icount {}; waiting for gdb on {addr} to inspect it",
                    match &ev {
                        StopEvent::Exited { status, reason } => {
                            format!("the guest exited with status {status} ({reason})")
                        }
                        StopEvent::Stopped { reason, .. } =>
                            format!("the machine stopped: {reason}"),
                        _ => "the recording ended".to_string(),
                    },
                    d.icount()
                );
                listener.set_nonblocking(false)?;
                let (s, _) = listener.accept()?;
                break (s, ev);
            }
            // Nothing else can stop a machine with no breakpoints: run on.
            _ => continue,
        }
    };
    listener.set_nonblocking(false)?;
    accepted.0.set_nonblocking(false)?;
    Ok((accepted.0, Some(accepted.1)))
}

/// One session in view `A`.
fn session<A: GdbArch>(
    stream: TcpStream,
    d: &mut dyn Debuggee,
    early: Option<StopEvent>,
) -> Result<SessionEnd, GdbError> {
    let mut target = HsTarget::<A>::new(d);
    target.peer = stream.try_clone().ok();
    target.sync_debug();
    if let Some(ev) = early {
        // Remember why the machine stopped (monitor status, the thread of
        // a later Ctrl-C); the exit status counts only if gdb resumes.
        let _ = target.stop_reason(ev);
        target.exit_status = None;
    }
    let conn = Conn::new(stream);
    let last_packet = Rc::clone(&conn.last);
    let result = GdbStub::new(conn).run_blocking::<EventLoop<A>>(&mut target);
    let exit_status = target.exit_status;
    target.d.set_debug(DebugSet::default());
    match result {
        Ok(DisconnectReason::Disconnect) => Ok(SessionEnd::Detached),
        Ok(DisconnectReason::Kill) => Ok(match exit_status {
            Some(status) => SessionEnd::Exited { status },
            None => SessionEnd::Killed,
        }),
        Ok(DisconnectReason::TargetExited(code)) => Ok(SessionEnd::Exited {
            status: exit_status.unwrap_or(code as i32),
        }),
        Ok(DisconnectReason::TargetTerminated(sig)) => Ok(SessionEnd::Exited {
            status: 128 + sig.0 as i32,
        }),
        Err(e) if e.is_connection_error() => Ok(SessionEnd::Disconnected),
        Err(e) => {
            let last = last_packet.borrow();
            Err(GdbError::Protocol(format!(
                "{e} (last packet from gdb: `{}`)",
                String::from_utf8_lossy(&last).escape_debug()
            )))
        }
    }
}

/// The TCP connection to gdb, remembering the start of the packet being
/// received so a protocol error can name it.
struct Conn {
    s: TcpStream,
    last: Rc<RefCell<Vec<u8>>>,
}

impl Conn {
    /// Bytes of a packet kept for error messages.
    const KEEP: usize = 80;

    fn new(s: TcpStream) -> Conn {
        Conn {
            s,
            last: Rc::new(RefCell::new(Vec::new())),
        }
    }
}

impl Connection for Conn {
    type Error = io::Error;

    fn write(&mut self, byte: u8) -> io::Result<()> {
        Connection::write(&mut self.s, byte)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Connection::write_all(&mut self.s, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Connection::flush(&mut self.s)
    }

    fn on_session_start(&mut self) -> io::Result<()> {
        self.s.set_nodelay(true)
    }
}

impl ConnectionExt for Conn {
    fn read(&mut self) -> io::Result<u8> {
        let b = ConnectionExt::read(&mut self.s)?;
        let mut last = self.last.borrow_mut();
        if b == b'$' || b == 3 {
            last.clear();
        }
        if last.len() < Conn::KEEP {
            last.push(b);
        }
        Ok(b)
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        ConnectionExt::peek(&mut self.s)
    }
}

/// gdbstub's blocking event loop over a [`HsTarget`].
struct EventLoop<'d, A>(PhantomData<&'d ()>, PhantomData<fn() -> A>);

impl<'d, A: GdbArch> BlockingEventLoop for EventLoop<'d, A> {
    type Target = HsTarget<'d, A>;
    type Connection = Conn;
    type StopReason = MultiThreadStopReason<A::Usize>;

    fn wait_for_stop_reason(
        target: &mut HsTarget<'d, A>,
        conn: &mut Conn,
    ) -> Result<Event<Self::StopReason>, WaitForStopReasonError<String, io::Error>> {
        let how = target.pending.take().unwrap_or(Resume::Continue);
        let ev = {
            let mut poll = || ConnectionExt::peek(conn).map_or(true, |b| b.is_some());
            target.d.resume(how, &mut poll)
        };
        if let StopEvent::Interrupted { vcpu } = ev {
            target.last_vcpu = vcpu;
            let waiting = ConnectionExt::peek(conn).map_err(WaitForStopReasonError::Connection)?;
            if waiting.is_some() {
                // Usually a Ctrl-C; anything else is a packet gdbstub
                // handles before it asks to run on the same way.
                target.pending = Some(how);
                let byte = ConnectionExt::read(conn).map_err(WaitForStopReasonError::Connection)?;
                return Ok(Event::IncomingData(byte));
            }
        }
        let (reason, msg) = target.stop_reason(ev);
        if let Some(msg) = msg {
            console_output(conn, &msg).map_err(WaitForStopReasonError::Connection)?;
        }
        Ok(Event::TargetStopped(reason))
    }

    fn on_interrupt(target: &mut HsTarget<'d, A>) -> Result<Option<Self::StopReason>, String> {
        target.last_stop = format!("interrupted (Ctrl-C) at icount {}", target.d.icount());
        Ok(Some(target.interrupt_reason()))
    }
}

/// The `O` packets (console output) that show `text` in gdb.
pub(crate) fn o_packets(text: &str) -> Vec<Vec<u8>> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    text.as_bytes()
        .chunks(200)
        .map(|chunk| {
            let mut body = vec![b'O'];
            for b in chunk {
                body.push(HEX[(b >> 4) as usize]);
                body.push(HEX[(b & 0xf) as usize]);
            }
            let sum = body.iter().fold(0u8, |s, b| s.wrapping_add(*b));
            let mut p = vec![b'$'];
            p.extend_from_slice(&body);
            p.push(b'#');
            p.push(HEX[(sum >> 4) as usize]);
            p.push(HEX[(sum & 0xf) as usize]);
            p
        })
        .collect()
}

/// Sends `text` to gdb's console (allowed while gdb waits for a stop reply).
fn console_output(conn: &mut Conn, text: &str) -> io::Result<()> {
    for p in o_packets(text) {
        Connection::write_all(conn, &p)?;
    }
    Connection::flush(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_output_is_hex_in_o_packets_with_checksums() {
        let p = o_packets("Hi\n");
        assert_eq!(p.len(), 1);
        // 'O' 4 8 6 9 0 a = 0x4f+0x34+0x38+0x36+0x39+0x30+0x61 = 0x1bb -> bb
        assert_eq!(String::from_utf8_lossy(&p[0]), "$O48690a#bb");
        let long = "x".repeat(450);
        let p = o_packets(&long);
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|q| q.len() <= 1 + 1 + 400 + 3));
    }
}
