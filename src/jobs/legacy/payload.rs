//! The job payload, parsed once into types the client can trust.
//!
//! Parse, don't validate: [`LegacyRequest::parse`] is the only way to build a request, so
//! the client never sees a port of 0, an empty host or two reply framings at once. The same
//! rules are meant to be enforced at INSERT by a PostgreSQL function; the module doc of
//! [`crate::jobs::legacy`] lists them.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Map, Value};

/// Largest message we agree to send (decoded bytes). A payload is a database row, not a
/// file transfer; the cap keeps one job from pinning megabytes in every worker.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Longest host name (RFC 1035 limit for a name in text form without the trailing dot).
pub const MAX_HOST_LEN: usize = 253;
/// Longest reply delimiter. Delimiters are short markers; a long one is a mistake.
pub const MAX_DELIMITER_BYTES: usize = 64;
/// Largest `max_bytes` a payload may ask for. The worker's `max_reply_bytes` cap still
/// applies on top; this only rejects absurd values at INSERT.
pub const MAX_FIXED_REPLY_BYTES: u64 = 16 * 1024 * 1024;
/// Largest per-job timeout, in milliseconds (10 minutes): a job that waits longer than this
/// holds a worker slot hostage.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// Every key a payload may carry. Anything else is refused, so a typo such as
/// `reply_timout_ms` is an error at INSERT instead of a silently ignored setting.
pub const PAYLOAD_KEYS: [&str; 13] = [
    "host",
    "port",
    "message",
    "message_base64",
    "until_close",
    "delimiter",
    "delimiter_base64",
    "length_prefix",
    "max_bytes",
    "expect_reply",
    "connect_timeout_ms",
    "write_timeout_ms",
    "reply_timeout_ms",
];

const FRAMING_KEYS: [&str; 5] = [
    "until_close",
    "delimiter",
    "delimiter_base64",
    "length_prefix",
    "max_bytes",
];

/// Why a payload was refused. The text is meant for the application developer who wrote
/// the INSERT, so each variant names the key and what would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacyPayloadError {
    #[error("payload must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error("unknown key \"{0}\" (allowed: {allowed})", allowed = PAYLOAD_KEYS.join(", "))]
    UnknownKey(String),
    #[error("missing required key \"{0}\"")]
    Missing(&'static str),
    #[error("\"{key}\" must be {expected}, got {got}")]
    WrongType {
        key: &'static str,
        expected: &'static str,
        got: &'static str,
    },
    #[error("\"{key}\" is {value}, must be between {min} and {max}")]
    OutOfRange {
        key: &'static str,
        value: String,
        min: u64,
        max: u64,
    },
    #[error("\"host\" {0}")]
    BadHost(String),
    #[error("give exactly one of \"message\" (text) or \"message_base64\" (bytes), not both")]
    BothMessages,
    #[error("give one of \"message\" (text) or \"message_base64\" (bytes)")]
    NoMessage,
    #[error("\"{key}\" is not valid base64 (standard alphabet, with padding): {reason}")]
    BadBase64 { key: &'static str, reason: String },
    #[error("\"{key}\" is {len} bytes, at most {max} allowed")]
    TooLong {
        key: &'static str,
        len: usize,
        max: usize,
    },
    #[error("\"{0}\" must not be empty")]
    Empty(&'static str),
    #[error(
        "give at most one reply framing (until_close, delimiter, delimiter_base64, length_prefix, max_bytes), got {0}"
    )]
    ConflictingFraming(String),
    #[error("\"until_close\" can only be true (leave it out for the default)")]
    UntilCloseFalse,
    #[error("\"length_prefix\" is {0}, must be 1, 2 or 4 (bytes, big endian)")]
    BadPrefixWidth(String),
    #[error("\"{0}\" makes no sense with \"expect_reply\": false (no reply is read)")]
    NoReplyExpected(&'static str),
}

/// Where to connect: a host (DNS name or IP literal) and a port. Private fields: only
/// [`LegacyTarget::parse`] builds one, so a `LegacyTarget` is always dialable syntax.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LegacyTarget {
    host: String,
    port: u16,
}

impl LegacyTarget {
    /// Checks the host's syntax and the port's range.
    ///
    /// # Errors
    /// [`LegacyPayloadError::BadHost`] or [`LegacyPayloadError::OutOfRange`].
    pub fn parse(host: &str, port: u64) -> Result<Self, LegacyPayloadError> {
        let host = parse_host(host)?;
        let port = match u16::try_from(port) {
            Ok(p) if p != 0 => p,
            _ => {
                return Err(LegacyPayloadError::OutOfRange {
                    key: "port",
                    value: port.to_string(),
                    min: 1,
                    max: 65_535,
                });
            }
        };
        Ok(Self { host, port })
    }

    /// The host as given (a name, or an IP literal; IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host as an IP address when it is a literal, so the client can skip resolution.
    pub(crate) fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for LegacyTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip() {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// Width of a big-endian length prefix in front of the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixWidth {
    One,
    Two,
    Four,
}

impl PrefixWidth {
    pub fn bytes(self) -> usize {
        match self {
            Self::One => 1,
            Self::Two => 2,
            Self::Four => 4,
        }
    }
}

/// How the client knows the reply is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// The reply is everything until the peer closes. The client half-closes its write side
    /// after sending so a peer that reads "until EOF" sees the end of the request.
    UntilClose,
    /// The reply ends at the first occurrence of this (non-empty) marker. The marker is not
    /// part of the stored reply; bytes after it are discarded.
    Delimiter(Bytes),
    /// The reply is `N` bytes preceded by `N` as a big-endian unsigned integer of this
    /// width. The prefix is not part of the stored reply.
    LengthPrefix(PrefixWidth),
    /// The reply is exactly this many bytes; fewer before the peer closes is an error,
    /// extra bytes are discarded.
    Exact(usize),
}

/// A parsed `legacy_message` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyRequest {
    target: LegacyTarget,
    message: Bytes,
    /// `None` means fire-and-forget (`"expect_reply": false`).
    framing: Option<Framing>,
    connect_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    reply_timeout: Option<Duration>,
}

impl LegacyRequest {
    /// Parses a payload; see the module doc of [`crate::jobs::legacy`] for the shape.
    ///
    /// # Errors
    /// The first rule the payload breaks, as a [`LegacyPayloadError`] whose text names the key.
    pub fn parse(payload: &Value) -> Result<Self, LegacyPayloadError> {
        let obj = payload
            .as_object()
            .ok_or(LegacyPayloadError::NotAnObject(type_name(payload)))?;
        if let Some(key) = obj.keys().find(|k| !PAYLOAD_KEYS.contains(&k.as_str())) {
            return Err(LegacyPayloadError::UnknownKey(key.clone()));
        }
        let host = opt_str(obj, "host")?.ok_or(LegacyPayloadError::Missing("host"))?;
        let port = opt_u64(obj, "port")?.ok_or(LegacyPayloadError::Missing("port"))?;
        let target = LegacyTarget::parse(host, port)?;

        let message = match (opt_str(obj, "message")?, opt_str(obj, "message_base64")?) {
            (Some(_), Some(_)) => return Err(LegacyPayloadError::BothMessages),
            (None, None) => return Err(LegacyPayloadError::NoMessage),
            (Some(text), None) => Bytes::copy_from_slice(text.as_bytes()),
            (None, Some(b64)) => decode_b64("message_base64", b64)?,
        };
        if message.len() > MAX_MESSAGE_BYTES {
            let key = if obj.contains_key("message") {
                "message"
            } else {
                "message_base64"
            };
            return Err(LegacyPayloadError::TooLong {
                key,
                len: message.len(),
                max: MAX_MESSAGE_BYTES,
            });
        }

        let expect_reply = opt_bool(obj, "expect_reply")?.unwrap_or(true);
        let framing_keys: Vec<&str> = FRAMING_KEYS
            .iter()
            .copied()
            .filter(|k| obj.contains_key(*k))
            .collect();
        if !expect_reply {
            if let Some(key) = framing_keys.first() {
                return Err(LegacyPayloadError::NoReplyExpected(key));
            }
            if obj.contains_key("reply_timeout_ms") {
                return Err(LegacyPayloadError::NoReplyExpected("reply_timeout_ms"));
            }
        }
        if framing_keys.len() > 1 {
            return Err(LegacyPayloadError::ConflictingFraming(
                framing_keys.join(" and "),
            ));
        }
        let framing = if expect_reply {
            Some(parse_framing(obj, framing_keys.first().copied())?)
        } else {
            None
        };

        Ok(Self {
            target,
            message,
            framing,
            connect_timeout: opt_timeout(obj, "connect_timeout_ms")?,
            write_timeout: opt_timeout(obj, "write_timeout_ms")?,
            reply_timeout: opt_timeout(obj, "reply_timeout_ms")?,
        })
    }

    pub fn target(&self) -> &LegacyTarget {
        &self.target
    }

    /// The bytes sent, exactly as given (no framing is added to the request).
    pub fn message(&self) -> &Bytes {
        &self.message
    }

    /// `None` for fire-and-forget.
    pub fn framing(&self) -> Option<&Framing> {
        self.framing.as_ref()
    }

    pub(crate) fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    pub(crate) fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    pub(crate) fn reply_timeout(&self) -> Option<Duration> {
        self.reply_timeout
    }
}

fn parse_framing(
    obj: &Map<String, Value>,
    key: Option<&str>,
) -> Result<Framing, LegacyPayloadError> {
    Ok(match key {
        None => Framing::UntilClose,
        Some("until_close") => match opt_bool(obj, "until_close")? {
            Some(true) => Framing::UntilClose,
            _ => return Err(LegacyPayloadError::UntilCloseFalse),
        },
        Some("delimiter") => {
            let text = opt_str(obj, "delimiter")?.unwrap_or_default();
            delimiter("delimiter", Bytes::copy_from_slice(text.as_bytes()))?
        }
        Some("delimiter_base64") => {
            let b64 = opt_str(obj, "delimiter_base64")?.unwrap_or_default();
            delimiter("delimiter_base64", decode_b64("delimiter_base64", b64)?)?
        }
        Some("length_prefix") => {
            let width = match obj.get("length_prefix") {
                Some(v) if v.is_number() => v.as_u64(),
                Some(v) => {
                    return Err(LegacyPayloadError::WrongType {
                        key: "length_prefix",
                        expected: "an integer (1, 2 or 4)",
                        got: type_name(v),
                    });
                }
                None => None,
            };
            match width {
                Some(1) => Framing::LengthPrefix(PrefixWidth::One),
                Some(2) => Framing::LengthPrefix(PrefixWidth::Two),
                Some(4) => Framing::LengthPrefix(PrefixWidth::Four),
                _ => {
                    let shown = obj
                        .get("length_prefix")
                        .map(Value::to_string)
                        .unwrap_or_default();
                    return Err(LegacyPayloadError::BadPrefixWidth(shown));
                }
            }
        }
        Some(_max_bytes) => {
            let n = opt_u64(obj, "max_bytes")?.unwrap_or(0);
            if !(1..=MAX_FIXED_REPLY_BYTES).contains(&n) {
                return Err(LegacyPayloadError::OutOfRange {
                    key: "max_bytes",
                    value: n.to_string(),
                    min: 1,
                    max: MAX_FIXED_REPLY_BYTES,
                });
            }
            // Bounded above by a constant that fits any usize we build for.
            Framing::Exact(usize::try_from(n).unwrap_or(usize::MAX))
        }
    })
}

fn delimiter(key: &'static str, bytes: Bytes) -> Result<Framing, LegacyPayloadError> {
    if bytes.is_empty() {
        return Err(LegacyPayloadError::Empty(key));
    }
    if bytes.len() > MAX_DELIMITER_BYTES {
        return Err(LegacyPayloadError::TooLong {
            key,
            len: bytes.len(),
            max: MAX_DELIMITER_BYTES,
        });
    }
    Ok(Framing::Delimiter(bytes))
}

fn parse_host(host: &str) -> Result<String, LegacyPayloadError> {
    if host.is_empty() {
        return Err(LegacyPayloadError::BadHost("must not be empty".into()));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(host.to_owned());
    }
    if host.starts_with('[') {
        return Err(LegacyPayloadError::BadHost(
            "is a bracketed address; give IPv6 addresses without brackets".into(),
        ));
    }
    if host.len() > MAX_HOST_LEN {
        return Err(LegacyPayloadError::BadHost(format!(
            "is {} characters, at most {MAX_HOST_LEN} allowed",
            host.len()
        )));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let mut last = "";
    for label in name.split('.') {
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > 63 || !ok_chars {
            return Err(LegacyPayloadError::BadHost(format!(
                "\"{host}\" is neither an IP address nor a host name \
                 (dot-separated labels of 1 to 63 letters, digits, '-' or '_')"
            )));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(LegacyPayloadError::BadHost(format!(
                "\"{host}\": a label may not start or end with '-'"
            )));
        }
        last = label;
    }
    // An all-numeric last label is what a mistyped IPv4 address ("10.0.0.300") looks like;
    // no top-level domain is numeric, so refuse it instead of sending it to DNS.
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LegacyPayloadError::BadHost(format!(
            "\"{host}\" is not a valid IP address, and a host name cannot end in a numeric label"
        )));
    }
    Ok(host.to_owned())
}

fn decode_b64(key: &'static str, text: &str) -> Result<Bytes, LegacyPayloadError> {
    // Refuse before decoding what could only decode to more than we would ever accept.
    if text.len() / 4 * 3 > MAX_MESSAGE_BYTES + 3 {
        return Err(LegacyPayloadError::TooLong {
            key,
            len: text.len() / 4 * 3,
            max: MAX_MESSAGE_BYTES,
        });
    }
    STANDARD
        .decode(text)
        .map(Bytes::from)
        .map_err(|e| LegacyPayloadError::BadBase64 {
            key,
            reason: e.to_string(),
        })
}

fn opt_timeout(
    obj: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<Duration>, LegacyPayloadError> {
    match opt_u64(obj, key)? {
        None => Ok(None),
        Some(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => Ok(Some(Duration::from_millis(ms))),
        Some(ms) => Err(LegacyPayloadError::OutOfRange {
            key,
            value: ms.to_string(),
            min: 1,
            max: MAX_TIMEOUT_MS,
        }),
    }
}

fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &'static str,
) -> Result<Option<&'a str>, LegacyPayloadError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(LegacyPayloadError::WrongType {
            key,
            expected: "a string",
            got: type_name(v),
        }),
    }
}

fn opt_bool(
    obj: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<bool>, LegacyPayloadError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(LegacyPayloadError::WrongType {
            key,
            expected: "true or false",
            got: type_name(v),
        }),
    }
}

/// A non-negative integer. `7001.0`, `"7001"` and `-1` are refused: JSON numbers with a
/// fraction or a sign are almost always a bug in the producer.
fn opt_u64(obj: &Map<String, Value>, key: &'static str) -> Result<Option<u64>, LegacyPayloadError> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) => Ok(Some(n)),
            None if v.is_number() => Err(LegacyPayloadError::WrongType {
                key,
                expected: "a non-negative integer",
                got: if v.is_f64() {
                    "a number with a fraction or exponent"
                } else {
                    "a negative number"
                },
            }),
            None => Err(LegacyPayloadError::WrongType {
                key,
                expected: "a non-negative integer",
                got: type_name(v),
            }),
        },
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
