//! One request/reply over a fresh TCP connection, with every wait bounded.
//!
//! The socket is a local of [`LegacyClient::send`]'s future and is never handed to a
//! spawned task, so it is closed when the send returns, whatever the path: success, error,
//! timeout, cancellation through the token, or the future simply being dropped (worker
//! shutdown, an outer timeout). That is the whole defence against the seed's leak.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{LegacyError, Phase};
use super::framing::{FrameError, ReplyDecoder};
use super::limiter::{HostLimiter, HostSlot};
use super::payload::{Framing, LegacyRequest, LegacyTarget};
use crate::metrics::{Gauge, Live};

/// Worker-wide defaults; a payload may override the three timeouts for its own job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacySettings {
    /// Bounds name resolution and connecting together (one deadline for both).
    pub connect_timeout: Duration,
    /// Bounds writing the whole message, not each write call.
    pub write_timeout: Duration,
    /// Bounds the whole reply from the end of the write, not each read: a peer dripping a
    /// byte a second must not keep a job alive forever (the seed's `SO_RCVTIMEO` was per
    /// read).
    pub reply_timeout: Duration,
    /// Largest reply stored, in bytes (delimiter and length prefix not counted). A reply of
    /// exactly this size is accepted; one byte more is [`LegacyError::ReplyTooLarge`].
    pub max_reply_bytes: usize,
    /// At most this many simultaneous connections per host; `None` for no limit.
    pub max_connections_per_host: Option<NonZeroUsize>,
    /// How long a send waits for a free slot when the per-host limit is reached.
    pub slot_timeout: Duration,
}

impl Default for LegacySettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(30),
            max_reply_bytes: 1024 * 1024,
            max_connections_per_host: None,
            slot_timeout: Duration::from_secs(30),
        }
    }
}

/// A reply that matched its framing and fit under the cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyReply {
    /// The reply without delimiter or length prefix. Empty for fire-and-forget.
    pub bytes: Bytes,
    /// The address actually connected to (a name may resolve to several).
    pub peer: SocketAddr,
    /// From the start of the send (including any wait for a slot) to the complete reply.
    pub elapsed: Duration,
}

impl LegacyReply {
    /// The reply as text when it is valid UTF-8, for the `text` column.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }
}

/// Sends legacy messages. Cheap to clone; clones share the per-host limit.
#[derive(Debug, Clone)]
pub struct LegacyClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: LegacySettings,
    limiter: Option<HostLimiter>,
    /// Connections open now (`dialout_legacy_sockets_open`).
    sockets: Gauge,
}

impl LegacyClient {
    pub fn new(settings: LegacySettings) -> Self {
        Self::counting_sockets(settings, Gauge::default())
    }

    /// Like [`LegacyClient::new`], counting the connections open in `sockets`.
    pub fn counting_sockets(settings: LegacySettings, sockets: Gauge) -> Self {
        let limiter = settings
            .max_connections_per_host
            .map(|n| HostLimiter::new(n.get()));
        Self {
            inner: Arc::new(Inner {
                settings,
                limiter,
                sockets,
            }),
        }
    }

    pub fn settings(&self) -> &LegacySettings {
        &self.inner.settings
    }

    /// Connects, writes the message, reads the reply its framing describes, and closes.
    ///
    /// Cancel-safe in the sense that matters here: dropping the future or firing `cancel`
    /// closes the socket at once. The message may or may not have reached the host.
    ///
    /// # Errors
    /// See [`LegacyError`]; [`LegacyError::is_retryable`] and [`LegacyError::is_timeout`]
    /// map them to job statuses.
    pub async fn send(
        &self,
        req: &LegacyRequest,
        cancel: &CancellationToken,
    ) -> Result<LegacyReply, LegacyError> {
        let started = Instant::now();
        let settings = &self.inner.settings;
        let target = req.target();

        let _slot: Option<HostSlot> = match &self.inner.limiter {
            Some(limiter) => {
                let wait = settings.slot_timeout;
                let deadline = Instant::now() + wait;
                let slot = bounded(Phase::Slot, deadline, wait, target, cancel, async {
                    Ok(limiter.acquire(target.host()).await)
                })
                .await
                .map_err(|e| e.into_error(Phase::Slot, unresolved(target), wait, target, None))?;
                Some(slot)
            }
            None => None,
        };

        let connect_limit = req.connect_timeout().unwrap_or(settings.connect_timeout);
        let connect_by = Instant::now() + connect_limit;
        let addrs = resolve(target, connect_by, connect_limit, cancel).await?;
        let (mut stream, peer) = connect(&addrs, target, connect_by, connect_limit, cancel).await?;
        // Declared after the stream, so dropped just before it on every path.
        let _open = Live::new(&self.inner.sockets);
        // Small requests should leave in one segment now, not after a delayed ACK.
        // Failure only costs latency, so it is not worth failing the send for.
        let _ = stream.set_nodelay(true);

        let framing = req.framing();
        // The reply reader for until_close waits for the peer's FIN; a peer that reads its
        // request "until EOF" needs ours first. Fire-and-forget says goodbye the same way.
        let half_close = matches!(framing, None | Some(Framing::UntilClose));
        let write_limit = req.write_timeout().unwrap_or(settings.write_timeout);
        let write_by = Instant::now() + write_limit;
        bounded(Phase::Write, write_by, write_limit, target, cancel, async {
            stream.write_all(req.message()).await?;
            if half_close {
                stream.shutdown().await?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.into_error(Phase::Write, peer, write_limit, target, framing))?;

        let Some(framing) = framing else {
            return Ok(LegacyReply {
                bytes: Bytes::new(),
                peer,
                elapsed: started.elapsed(),
            });
        };

        let reply_limit = req.reply_timeout().unwrap_or(settings.reply_timeout);
        let reply_by = Instant::now() + reply_limit;
        let mut decoder = ReplyDecoder::new(framing.clone(), settings.max_reply_bytes);
        let mut buf = BytesMut::new();
        let range = bounded(Phase::Reply, reply_by, reply_limit, target, cancel, async {
            read_reply(&mut stream, &mut decoder, &mut buf).await
        })
        .await
        .map_err(|e| e.into_error(Phase::Reply, peer, reply_limit, target, Some(framing)))?;
        // Close before returning; any bytes the peer sent past the reply are discarded
        // (the kernel answers them with a reset, which is what we want for a stray peer).
        drop(stream);

        Ok(LegacyReply {
            bytes: buf.freeze().slice(range),
            peer,
            elapsed: started.elapsed(),
        })
    }
}

/// What a bounded step can end with before we know enough to build a [`LegacyError`].
enum Step {
    Io(std::io::Error),
    Frame(FrameError),
    Done(LegacyError),
}

impl From<std::io::Error> for Step {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<FrameError> for Step {
    fn from(e: FrameError) -> Self {
        Self::Frame(e)
    }
}

impl Step {
    /// Builds the error once the phase and the connected address are known.
    fn into_error(
        self,
        phase: Phase,
        addr: SocketAddr,
        limit: Duration,
        target: &LegacyTarget,
        framing: Option<&Framing>,
    ) -> LegacyError {
        match self {
            Self::Done(e) => e,
            Self::Io(e) => LegacyError::from_io(e, phase, addr, limit, target),
            Self::Frame(FrameError::TooLarge { cap, declared }) => LegacyError::ReplyTooLarge {
                addr,
                cap,
                declared,
            },
            Self::Frame(FrameError::Incomplete { received }) => LegacyError::ClosedEarly {
                addr,
                received,
                framing: framing.map_or("no reply expected", framing_name),
            },
        }
    }
}

/// Runs `fut` until `deadline`, or until `cancel` fires, whichever is first. Dropping `fut`
/// on either is what closes a socket it was using.
async fn bounded<T>(
    phase: Phase,
    deadline: Instant,
    limit: Duration,
    target: &LegacyTarget,
    cancel: &CancellationToken,
    fut: impl Future<Output = Result<T, Step>>,
) -> Result<T, Step> {
    tokio::select! {
        // Cancellation wins a tie: a stopping worker should not start another phase.
        biased;
        () = cancel.cancelled() => Err(Step::Done(LegacyError::Cancelled {
            phase,
            target: target.to_string(),
        })),
        r = tokio::time::timeout_at(deadline, fut) => match r {
            Ok(r) => r,
            Err(_) => Err(Step::Done(LegacyError::Timeout {
                phase,
                after: limit,
                target: target.to_string(),
            })),
        },
    }
}

async fn resolve(
    target: &LegacyTarget,
    deadline: Instant,
    limit: Duration,
    cancel: &CancellationToken,
) -> Result<Vec<SocketAddr>, LegacyError> {
    if let Some(ip) = target.ip() {
        return Ok(vec![SocketAddr::new(ip, target.port())]);
    }
    // getaddrinfo runs on a blocking thread and cannot be interrupted; on timeout we stop
    // waiting for it, and the thread finishes on its own. No socket is involved.
    let not_resolved = |reason: String| {
        Step::Done(LegacyError::NotResolved {
            host: target.host().to_owned(),
            temporary: reason.contains("Temporary failure"),
            reason,
        })
    };
    let lookup = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host(), target.port()))
            .await
            .map_err(|e| not_resolved(e.to_string()))?
            .collect();
        if addrs.is_empty() {
            return Err(not_resolved("no addresses".to_owned()));
        }
        Ok(addrs)
    };
    bounded(Phase::Resolve, deadline, limit, target, cancel, lookup)
        .await
        .map_err(|e| e.into_error(Phase::Resolve, unresolved(target), limit, target, None))
}

/// Tries each address in turn within the one connect deadline and returns the first that
/// accepts. A failed attempt's socket is dropped before the next one is opened.
async fn connect(
    addrs: &[SocketAddr],
    target: &LegacyTarget,
    deadline: Instant,
    limit: Duration,
    cancel: &CancellationToken,
) -> Result<(TcpStream, SocketAddr), LegacyError> {
    let mut last = None;
    for &addr in addrs {
        let attempt = bounded(Phase::Connect, deadline, limit, target, cancel, async {
            Ok(TcpStream::connect(addr).await?)
        })
        .await;
        match attempt {
            Ok(stream) => return Ok((stream, addr)),
            // Out of time or cancelled: no point trying the next address.
            Err(Step::Done(e)) => return Err(e),
            Err(e) => last = Some(e.into_error(Phase::Connect, addr, limit, target, None)),
        }
    }
    // `resolve` never returns an empty list; this only keeps the function total.
    Err(last.unwrap_or_else(|| LegacyError::NotResolved {
        host: target.host().to_owned(),
        reason: "no addresses".to_owned(),
        temporary: false,
    }))
}

/// Reads until the decoder has a complete reply, never buffering more than its limit, so a
/// flooding peer costs at most `max_reply_bytes` plus a few bytes of memory.
async fn read_reply(
    stream: &mut TcpStream,
    decoder: &mut ReplyDecoder,
    buf: &mut BytesMut,
) -> Result<Range<usize>, Step> {
    loop {
        let room = decoder.read_limit().saturating_sub(buf.len());
        if room == 0 {
            // The decoder reports over-cap before the limit is reached; this is a backstop.
            return Err(decoder.decode_eof(buf).err().map_or(
                Step::Frame(FrameError::Incomplete {
                    received: buf.len(),
                }),
                Step::Frame,
            ));
        }
        buf.reserve(room.min(16 * 1024));
        let n = (&mut *stream).take(room as u64).read_buf(buf).await?;
        if n == 0 {
            return Ok(decoder.decode_eof(buf)?);
        }
        if let Some(range) = decoder.decode(buf)? {
            return Ok(range);
        }
    }
}

fn framing_name(f: &Framing) -> &'static str {
    match f {
        Framing::UntilClose => "until_close",
        Framing::Delimiter(_) => "no delimiter seen",
        Framing::LengthPrefix(_) => "length_prefix",
        Framing::Exact(_) => "max_bytes",
    }
}

/// Placeholder address for errors raised before any address is known; only `Done`
/// errors, which carry their own text, can occur there.
fn unresolved(target: &LegacyTarget) -> SocketAddr {
    SocketAddr::new([0, 0, 0, 0].into(), target.port())
}
