//! What can go wrong with one send, in words fit for the job row's `last_error`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// The step a send was in. Kept with timeouts and cancellations because "timed out" alone
/// does not tell an operator whether the host is down (connect) or slow (reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Waiting for a free connection slot to the host (per-host limit).
    Slot,
    /// Resolving the host name. Shares the connect timeout with [`Phase::Connect`].
    Resolve,
    Connect,
    /// Writing the message (and half-closing when the framing needs it).
    Write,
    /// Reading the reply until the framing says it is complete.
    Reply,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Slot => "waiting for a connection slot",
            Self::Resolve => "resolving the host",
            Self::Connect => "connecting",
            Self::Write => "writing the message",
            Self::Reply => "reading the reply",
        })
    }
}

/// Why a send failed. Every variant means the socket is already closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LegacyError {
    #[error("could not resolve host \"{host}\": {reason}")]
    NotResolved {
        host: String,
        reason: String,
        /// The resolver said "try again" (EAI_AGAIN) rather than "no such name".
        temporary: bool,
    },
    #[error("connection refused by {addr}")]
    Refused { addr: SocketAddr },
    #[error("{addr} is unreachable: {source}")]
    Unreachable {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("connection reset by {addr} while {phase}")]
    Reset { addr: SocketAddr, phase: Phase },
    #[error(
        "reply from {addr} is over the cap of {cap} bytes{}",
        declared.map(|n| format!(" (it announced {n} bytes)")).unwrap_or_default()
    )]
    ReplyTooLarge {
        addr: SocketAddr,
        cap: usize,
        declared: Option<u64>,
    },
    #[error(
        "{addr} closed the connection after {received} bytes, before the reply was complete ({framing})"
    )]
    ClosedEarly {
        addr: SocketAddr,
        received: usize,
        framing: &'static str,
    },
    #[error("timed out after {} ms while {phase} ({target})", after.as_millis())]
    Timeout {
        phase: Phase,
        after: Duration,
        target: String,
    },
    #[error("cancelled while {phase} ({target})")]
    Cancelled { phase: Phase, target: String },
    #[error("I/O error while {phase} ({target}): {source}")]
    Io {
        phase: Phase,
        target: String,
        #[source]
        source: io::Error,
    },
}

impl LegacyError {
    /// Whether trying again later can succeed. Refusals, resets, unreachable hosts and
    /// timeouts are what a restarting or overloaded legacy host looks like, so they heal.
    /// A name that does not exist, a reply over the cap or one that does not match its
    /// framing will fail the same way next time. A cancellation is retryable because the
    /// job did not fail: the worker stopped.
    ///
    /// A retry after the write phase may deliver the message twice: the protocol has no
    /// way to tell whether the host acted on it.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::NotResolved { temporary, .. } => *temporary,
            Self::Refused { .. }
            | Self::Unreachable { .. }
            | Self::Reset { .. }
            | Self::Timeout { .. }
            | Self::Cancelled { .. }
            | Self::Io { .. } => true,
            Self::ReplyTooLarge { .. } | Self::ClosedEarly { .. } => false,
        }
    }

    /// `Some(phase)` when the send timed out, for the `timedout` status.
    pub fn is_timeout(&self) -> Option<Phase> {
        match self {
            Self::Timeout { phase, .. } => Some(*phase),
            _ => None,
        }
    }

    /// A stable one-word name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotResolved { .. } => "not_resolved",
            Self::Refused { .. } => "refused",
            Self::Unreachable { .. } => "unreachable",
            Self::Reset { .. } => "reset",
            Self::ReplyTooLarge { .. } => "reply_too_large",
            Self::ClosedEarly { .. } => "closed_early",
            Self::Timeout { .. } => "timeout",
            Self::Cancelled { .. } => "cancelled",
            Self::Io { .. } => "io",
        }
    }

    /// Sorts an I/O error from a connected (or connecting) socket into the kinds above.
    pub(crate) fn from_io(
        e: io::Error,
        phase: Phase,
        addr: SocketAddr,
        limit: Duration,
        target: &impl fmt::Display,
    ) -> Self {
        use io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => Self::Refused { addr },
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
                Self::Reset { addr, phase }
            }
            K::HostUnreachable | K::NetworkUnreachable => Self::Unreachable { addr, source: e },
            // The kernel gave up first (SYN retries, keepalive): same meaning as ours.
            K::TimedOut => Self::Timeout {
                phase,
                after: limit,
                target: target.to_string(),
            },
            _ => Self::Io {
                phase,
                target: target.to_string(),
                source: e,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 7], 7001))
    }

    #[test]
    fn io_errors_are_sorted_by_kind() {
        let t = "10.0.0.7:7001";
        let d = Duration::from_secs(1);
        let sort = |k| LegacyError::from_io(io::Error::from(k), Phase::Connect, addr(), d, &t);
        assert!(matches!(
            sort(io::ErrorKind::ConnectionRefused),
            LegacyError::Refused { .. }
        ));
        assert!(matches!(
            sort(io::ErrorKind::HostUnreachable),
            LegacyError::Unreachable { .. }
        ));
        assert!(matches!(
            sort(io::ErrorKind::NetworkUnreachable),
            LegacyError::Unreachable { .. }
        ));
        assert!(matches!(
            sort(io::ErrorKind::BrokenPipe),
            LegacyError::Reset { .. }
        ));
        assert_eq!(
            sort(io::ErrorKind::TimedOut).is_timeout(),
            Some(Phase::Connect)
        );
        assert_eq!(sort(io::ErrorKind::AddrNotAvailable).kind(), "io");
    }

    #[test]
    fn display_is_readable() {
        let e = LegacyError::Timeout {
            phase: Phase::Reply,
            after: Duration::from_millis(1500),
            target: "10.0.0.7:7001".into(),
        };
        assert_eq!(
            e.to_string(),
            "timed out after 1500 ms while reading the reply (10.0.0.7:7001)"
        );
        let e = LegacyError::ReplyTooLarge {
            addr: addr(),
            cap: 10,
            declared: Some(99),
        };
        assert_eq!(
            e.to_string(),
            "reply from 10.0.0.7:7001 is over the cap of 10 bytes (it announced 99 bytes)"
        );
        assert!(!e.is_retryable());
    }
}
