//! `legacy_message` jobs: one TCP request/reply to a legacy host, closed on every path.
//!
//! A client that forgot `close()` on its error paths once filled a legacy host with
//! half-closed sockets until the process died at ~2,000 descriptors. Here the socket is a
//! local of one future that no spawned task shares, so dropping the future (success, error,
//! timeout, cancellation, shutdown) closes it; every wait has a deadline; every reply has a
//! hard size cap. The fault peer and the tests prove it against real loopback TCP.
//!
//! # Payload
//!
//! A flat JSON object, e.g.
//! `{"host": "10.0.0.7", "port": 7001, "message": "PING\n", "delimiter": "\n"}`.
//!
//! | key | type | rule |
//! |---|---|---|
//! | `host` | string, required | an IP literal (IPv6 without brackets) or a host name: at most 253 characters, dot-separated labels of 1–63 of `A-Z a-z 0-9 - _`, no label starting or ending with `-`, an optional trailing dot, last label not all digits |
//! | `port` | integer, required | 1–65535 |
//! | `message` | string | sent as its UTF-8 bytes; may be empty; at most 1 MiB |
//! | `message_base64` | string | standard base64 with padding; decodes to at most 1 MiB |
//! | `until_close` | `true` | reply = everything until the peer closes (the default) |
//! | `delimiter` | string | reply ends at the first occurrence of these UTF-8 bytes (1–64) |
//! | `delimiter_base64` | string | same, given as base64 (decodes to 1–64 bytes) |
//! | `length_prefix` | integer 1, 2 or 4 | reply = N bytes after an N-byte big-endian length |
//! | `max_bytes` | integer 1–16777216 | reply = exactly this many bytes |
//! | `expect_reply` | boolean | `false`: write, half-close, close; read nothing |
//! | `connect_timeout_ms`, `write_timeout_ms`, `reply_timeout_ms` | integer 1–600000 | override [`LegacySettings`] for this job |
//!
//! Exactly one of `message` / `message_base64`. At most one of the five framing keys.
//! With `"expect_reply": false`, no framing key and no `reply_timeout_ms`. Any other key is
//! refused. Integers are JSON numbers without fraction or sign.
//!
//! # Replies
//!
//! The stored reply never includes the delimiter or the length prefix; bytes the peer sends
//! after a complete reply are discarded. The cap ([`LegacySettings::max_reply_bytes`]) is on
//! the stored reply: exactly the cap is accepted, one byte more is
//! [`LegacyError::ReplyTooLarge`], and at most cap + a delimiter (or prefix) length is ever
//! buffered. With `until_close`, the client half-closes its write side after sending, so a
//! peer that reads its request "until EOF" can answer. With the other framings the write
//! side stays open until the reply is complete (some hosts treat a half-close as a hang-up).
//! The message is sent as given; the client adds no framing to the request.
//!
//! # Timeouts
//!
//! `connect_timeout` bounds name resolution and connecting together; `write_timeout` the
//! whole write; `reply_timeout` the whole reply (not each read: a peer dripping one byte a
//! second still times out).

mod client;
mod error;
mod framing;
mod job;
mod limiter;
mod payload;

pub mod bench;
pub mod fault_peer;

pub use client::{LegacyClient, LegacyReply, LegacySettings};
pub use error::{LegacyError, Phase};
pub use job::LegacyMessage;
pub use payload::{
    Framing, LegacyPayloadError, LegacyRequest, LegacyTarget, MAX_DELIMITER_BYTES,
    MAX_FIXED_REPLY_BYTES, MAX_HOST_LEN, MAX_MESSAGE_BYTES, MAX_TIMEOUT_MS, PAYLOAD_KEYS,
    PrefixWidth,
};
