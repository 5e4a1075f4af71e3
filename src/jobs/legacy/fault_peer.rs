//! A legacy host that misbehaves on purpose, for the tests and the benchmark, plus the two
//! probes they use to prove nothing leaked: the process's open descriptors and the kernel's
//! table of half-closed TCP sockets.
//!
//! Every connection handler ends by dropping its socket, and counts that, so a test can
//! wait (bounded) until the peer has closed everything it accepted. Handlers that wait for
//! the client ("until EOF") only finish if the client closes: a client leak shows up as a
//! connection the peer never closed, and as CLOSE_WAIT / FIN_WAIT2 entries in the table.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How the peer treats each connection it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultMode {
    /// Echoes what it reads as it reads it, closes after the client's EOF.
    Echo,
    /// Echoes one request line (through the first `\n`) and closes at once, as a
    /// request/reply legacy host does. Being the first to close, it keeps the TIME_WAIT
    /// state, so the client's ephemeral ports are free again immediately.
    EchoLine,
    /// Reads and discards until the client closes; never replies.
    Silent,
    /// Echoes the first half of the first read, then reads and discards until EOF.
    HalfThenStall,
    /// Echoes the first half of the first read, then resets (SO_LINGER 0, close).
    ResetMidReply,
    /// Sends this many bytes of `b'x'` without waiting for the request, then waits for EOF.
    Flood { bytes: usize },
    /// Echoes the first read one byte per `interval` (the "byte a second", scaled).
    Drip { interval: Duration },
    /// Closes as soon as it accepts, before reading anything.
    CloseBeforeRead,
}

/// Connection counts, as seen by the peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounts {
    pub accepted: u64,
    /// Connections whose first bytes arrived: the client is past its write phase.
    pub requests: u64,
    pub closed: u64,
}

/// A listening fault peer on `127.0.0.1`. Dropping it stops accepting and closes every
/// connection it still holds.
#[derive(Debug)]
pub struct FaultPeer {
    addr: SocketAddr,
    counts: watch::Receiver<PeerCounts>,
    _stop: DropGuard,
}

impl FaultPeer {
    /// Binds `127.0.0.1:0` and serves `mode` until dropped. Needs a Tokio runtime.
    ///
    /// # Errors
    /// Binding failed.
    pub async fn start(mode: FaultMode) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, counts) = watch::channel(PeerCounts::default());
        let tx = Arc::new(tx);
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, mode, tx, stop.clone()));
        Ok(Self {
            addr,
            counts,
            _stop: stop.drop_guard(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn counts(&self) -> PeerCounts {
        *self.counts.borrow()
    }

    /// Waits until `pred` holds for the counts, at most `within`. Returns the last counts
    /// and whether `pred` held, so a failing test can print what it saw.
    pub async fn wait_for(
        &self,
        within: Duration,
        pred: impl FnMut(&PeerCounts) -> bool,
    ) -> (PeerCounts, bool) {
        let mut rx = self.counts.clone();
        let held = matches!(
            tokio::time::timeout(within, rx.wait_for(pred)).await,
            Ok(Ok(_))
        );
        (self.counts(), held)
    }

    /// Waits (at most `within`) until the peer has accepted at least `connections` and
    /// closed every connection it accepted. The count matters: the kernel completes the
    /// handshake before `accept`, so a client can be done before the peer has counted it.
    pub async fn wait_closed(&self, connections: u64, within: Duration) -> (PeerCounts, bool) {
        self.wait_for(within, |c| {
            c.accepted >= connections && c.closed == c.accepted
        })
        .await
    }
}

/// An address where nothing listens: bind a free port, then let it go. Connecting there
/// is refused (until something else happens to bind it, which is unlikely in a test run).
///
/// # Errors
/// Binding failed.
pub fn refused_addr() -> io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    listener.local_addr()
}

/// Number of open file descriptors of this process (entries of `/proc/self/fd`, minus the
/// one used to read it).
///
/// # Errors
/// `/proc` is not readable (not Linux).
pub fn open_fds() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?
        .count()
        .saturating_sub(1))
}

/// TCP sockets touching `port` (as local or remote port) that are half closed: CLOSE_WAIT
/// (we got a FIN and never closed) or FIN_WAIT2 (we closed, the other side never did). One
/// line per socket, as `local -> remote STATE`, for assertion messages. TIME_WAIT is
/// normal after a clean close and not reported.
///
/// # Errors
/// `/proc/net/tcp` is not readable.
pub fn half_closed_sockets(port: u16) -> io::Result<Vec<String>> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(t) => t,
            // No IPv6 in this kernel: nothing to report from that table.
            Err(e) if e.kind() == io::ErrorKind::NotFound && table.ends_with('6') => continue,
            Err(e) => return Err(e),
        };
        for line in text.lines().skip(1) {
            let mut fields = line.split_whitespace().skip(1);
            let (Some(local), Some(remote), Some(state)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let state = match state {
                "05" => "FIN_WAIT2",
                "08" => "CLOSE_WAIT",
                _ => continue,
            };
            if hex_port(local) == Some(port) || hex_port(remote) == Some(port) {
                found.push(format!("{local} -> {remote} {state}"));
            }
        }
    }
    Ok(found)
}

fn hex_port(addr: &str) -> Option<u16> {
    let (_, port) = addr.rsplit_once(':')?;
    u16::from_str_radix(port, 16).ok()
}

async fn accept_loop(
    listener: TcpListener,
    mode: FaultMode,
    counts: Arc<watch::Sender<PeerCounts>>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                counts.send_modify(|c| c.accepted += 1);
                let (mode, counts, stop) = (mode.clone(), Arc::clone(&counts), stop.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = serve(stream, &mode, &counts) => {}
                    }
                    // The stream was moved into `serve` and is closed by now either way.
                    counts.send_modify(|c| c.closed += 1);
                });
            }
            // Out of descriptors or a connection aborted before accept: let it pass.
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

async fn serve(mut stream: TcpStream, mode: &FaultMode, counts: &watch::Sender<PeerCounts>) {
    // Drips must leave one byte at a time, not be coalesced by Nagle.
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    let first = |n: usize| {
        if n > 0 {
            counts.send_modify(|c| c.requests += 1);
        }
    };
    match mode {
        FaultMode::CloseBeforeRead => {}
        FaultMode::Echo => {
            let mut seen = false;
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                if !seen {
                    first(n);
                    seen = true;
                }
                if stream.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
        FaultMode::EchoLine => {
            let mut len = 0;
            while let Ok(n @ 1..) = stream.read(&mut buf[len..]).await {
                if len == 0 {
                    first(n);
                }
                len += n;
                if buf[len - n..len].contains(&b'\n') || len == buf.len() {
                    let _ = stream.write_all(&buf[..len]).await;
                    break;
                }
            }
        }
        FaultMode::Silent => {
            if let Ok(n) = stream.read(&mut buf).await {
                first(n);
                drain(&mut stream, &mut buf).await;
            }
        }
        FaultMode::HalfThenStall | FaultMode::ResetMidReply => {
            let Ok(n @ 1..) = stream.read(&mut buf).await else {
                return;
            };
            first(n);
            if stream.write_all(&buf[..n / 2]).await.is_err() {
                return;
            }
            if *mode == FaultMode::ResetMidReply {
                // Zero linger turns close into a RST, the way a crashing host looks.
                let _ = stream.set_zero_linger();
                return;
            }
            drain(&mut stream, &mut buf).await;
        }
        FaultMode::Flood { bytes } => {
            let chunk = vec![b'x'; 16 * 1024];
            let mut left = *bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                if stream.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n;
            }
            drain(&mut stream, &mut buf).await;
        }
        FaultMode::Drip { interval } => {
            let Ok(n @ 1..) = stream.read(&mut buf).await else {
                return;
            };
            first(n);
            let reply = buf[..n].to_vec();
            let mut scratch = [0u8; 512];
            let (mut sent, mut client_done) = (0, false);
            while sent < reply.len() {
                tokio::select! {
                    // A half-close (until_close framing) is not a reason to stop dripping;
                    // only an error (the client closed for good) is.
                    r = stream.read(&mut scratch), if !client_done => match r {
                        Ok(0) => client_done = true,
                        Ok(_) => {}
                        Err(_) => return,
                    },
                    () = tokio::time::sleep(*interval) => {
                        if stream.write_all(&reply[sent..=sent]).await.is_err() {
                            return;
                        }
                        sent += 1;
                    }
                }
            }
            if client_done {
                return;
            }
            drain(&mut stream, &mut buf).await;
        }
    }
}

/// Reads until EOF or error: the peer waits for the client to close, as a patient legacy
/// host would.
async fn drain(stream: &mut TcpStream, buf: &mut [u8]) {
    while let Ok(1..) = stream.read(buf).await {}
}
