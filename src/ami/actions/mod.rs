//! Actions we send, one small file each. Every key and value goes through [`ActionWriter`],
//! which refuses CR, LF and other control characters, so nothing a caller passes can end a
//! line early and smuggle a second header or a second action onto the socket.

mod core_show_channels;
mod events;
mod filter;
mod generic;
mod hangup;
mod login;
mod logoff;
mod originate;
mod ping;
mod status;

pub use core_show_channels::CoreShowChannels;
pub use events::{Events, EventsMask};
pub use filter::{Filter, FilterOperation};
pub use generic::GenericAction;
pub use hangup::Hangup;
pub use login::{Challenge, Login, LoginAuth, md5_key};
pub use logoff::Logoff;
pub use originate::{Originate, OriginateTarget};
pub use ping::Ping;
pub use status::Status;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

/// Why an action was refused before it reached the socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("control character {byte:#04x} in the {what} of field {field:?}")]
    ControlCharacter {
        field: String,
        what: &'static str,
        byte: u8,
    },
    #[error("invalid key {0:?}: keys are non-empty and hold no ':' or whitespace")]
    InvalidKey(String),
    #[error("invalid variable name {0:?}: no '=' and not empty")]
    InvalidVariableName(String),
    #[error("missing required field {0}")]
    Missing(&'static str),
}

/// A validated, encoded action: the only thing the codec will write. Only [`ActionWriter`]
/// makes one, so an unchecked value cannot reach the socket.
#[derive(Clone)]
pub struct ActionFrame {
    bytes: Bytes,
}

impl std::fmt::Debug for ActionFrame {
    /// Shows only the `Action:` line: a Login frame carries the secret (or its MD5 key).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first = self.bytes.split(|&b| b == b'\r').next().unwrap_or_default();
        write!(
            f,
            "ActionFrame({:?}, {} bytes)",
            String::from_utf8_lossy(first),
            self.bytes.len()
        )
    }
}

impl ActionFrame {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

/// Something that can be sent as an AMI action.
pub trait Action {
    /// The `Action:` name.
    fn name(&self) -> &str;
    /// Writes the fields after `Action:` and `ActionID:`.
    ///
    /// # Errors
    /// Any value the writer refuses.
    fn write_fields(&self, w: &mut ActionWriter) -> Result<(), ActionError>;
    /// Whether the answer is an event list (`EventList: start` … `EventList: Complete`).
    fn is_list(&self) -> bool {
        false
    }
    /// How long to wait for the response, given the configured action timeout. Most
    /// actions are answered at once; one that Asterisk answers only once something has
    /// happened (a synchronous Originate) adds that time here.
    fn response_timeout(&self, default: Duration) -> Duration {
        default
    }
    /// Whether Asterisk serves nothing else on this session until this action is answered
    /// (a synchronous Originate, README fact 9). The keepalive Ping is skipped meanwhile:
    /// it would wait behind the action and time out.
    fn blocks_session(&self) -> bool {
        false
    }
}

/// Builds one action, checking every key and value.
pub struct ActionWriter {
    buf: BytesMut,
}

fn check_value(field: &str, what: &'static str, v: &str) -> Result<(), ActionError> {
    // Tab is a control character too; AMI values never need one.
    if let Some(&b) = v.as_bytes().iter().find(|&&b| b < 0x20 || b == 0x7f) {
        return Err(ActionError::ControlCharacter {
            field: field.to_owned(),
            what,
            byte: b,
        });
    }
    Ok(())
}

fn check_key(k: &str) -> Result<(), ActionError> {
    check_value(k, "key", k)?;
    if k.is_empty() || k.bytes().any(|b| b == b':' || b == b' ') {
        return Err(ActionError::InvalidKey(k.to_owned()));
    }
    Ok(())
}

impl ActionWriter {
    fn new() -> Self {
        Self {
            buf: BytesMut::with_capacity(256),
        }
    }

    /// Appends `key: value`.
    ///
    /// # Errors
    /// A control character in the key or value, or a malformed key.
    pub fn field(&mut self, key: &str, value: &str) -> Result<&mut Self, ActionError> {
        check_key(key)?;
        check_value(key, "value", value)?;
        self.buf.put_slice(key.as_bytes());
        self.buf.put_slice(b": ");
        self.buf.put_slice(value.as_bytes());
        self.buf.put_slice(b"\r\n");
        Ok(self)
    }

    /// Appends `key: value` if the value is there.
    ///
    /// # Errors
    /// As [`ActionWriter::field`].
    pub fn opt(&mut self, key: &str, value: Option<&str>) -> Result<&mut Self, ActionError> {
        if let Some(v) = value {
            self.field(key, v)?;
        }
        Ok(self)
    }
}

/// Encodes `action` with the given ActionID (none when `None`).
///
/// # Errors
/// Any refused key or value; nothing is produced then.
pub fn encode<A: Action + ?Sized>(
    action: &A,
    action_id: Option<&str>,
) -> Result<ActionFrame, ActionError> {
    let mut w = ActionWriter::new();
    w.field("Action", action.name())?;
    w.opt("ActionID", action_id)?;
    action.write_fields(&mut w)?;
    w.buf.put_slice(b"\r\n");
    Ok(ActionFrame {
        bytes: w.buf.freeze(),
    })
}
