//! Errors at the client's edge.

use std::time::Duration;

use super::actions::ActionError;
use super::codec::CodecError;

#[derive(Debug, thiserror::Error)]
pub enum AmiError {
    #[error("refused before sending: {0}")]
    Action(#[from] ActionError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Codec(#[from] CodecError),
    #[error("unexpected greeting {0:?}")]
    BadGreeting(String),
    /// Wrong secret and unknown user look the same (login-failure.txt).
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The link dropped while this action waited. It was NOT re-sent: it may or may not have
    /// reached Asterisk, so the caller must reconcile (e.g. CoreShowChannels) before retrying.
    #[error("connection lost while the action was in flight; it was not re-sent")]
    ConnectionLost,
    #[error("not connected to Asterisk")]
    NotConnected,
    #[error("client shut down")]
    Shutdown,
    /// `Response: Error` with its `Message:` (e.g. `Permission denied`, `Invalid channel`).
    #[error("Asterisk refused the action: {0}")]
    Refused(String),
    #[error("ActionID {0:?} is already in flight")]
    DuplicateActionId(String),
    #[error("peer closed the connection")]
    Closed,
    /// No `FullyBooted` within `fully_booted_timeout` of the login: Asterisk is still
    /// loading (an Originate now would be refused), or the account may not read `system`.
    #[error(
        "Asterisk has not finished booting: no FullyBooted within {0:?} of the login (if it is up, check that the AMI account's read permission includes system)"
    )]
    NotBooted(Duration),
    /// A peer that sends this many events before the link is up is not trusted further.
    #[error("more than {0} events before the link was up")]
    TooManyEarlyEvents(usize),
}
