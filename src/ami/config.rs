//! Client configuration. Defaults suit a local Asterisk; the lead's layered config fills it.

use std::time::Duration;

use super::actions::{EventsMask, Filter, LoginAuth};
use super::codec::{DEFAULT_MAX_LINES, DEFAULT_MAX_MESSAGE_BYTES};
use crate::config::SecretString;

/// Everything the AMI client needs to connect and stay connected.
#[derive(Debug, Clone)]
pub struct AmiConfig {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub secret: SecretString,
    pub auth: LoginAuth,
    /// `Events:` sent with Login. Asking for less is the first filter.
    pub events: EventsMask,
    /// `Action: Filter`s sent after each login (before anyone else may send).
    pub filters: Vec<Filter>,
    /// How long one action may wait for its response (or the end of its event list).
    pub action_timeout: Duration,
    /// Connect + greeting + login, bounded as a whole.
    pub connect_timeout: Duration,
    /// After the login, how long to wait for Asterisk's `FullyBooted` before calling the
    /// link up (a restarted Asterisk accepts logins before its dialplan is loaded and
    /// refuses Originates meanwhile). Past it the attempt fails and the backoff retries.
    /// `None`: do not wait. Without `system` in [`AmiConfig::events`] it cannot arrive, so
    /// the client does not wait and logs why.
    pub fully_booted_timeout: Option<Duration>,
    /// Keepalive Ping period; `None` disables it. A Ping that times out drops the link.
    pub ping_interval: Option<Duration>,
    pub reconnect_backoff_min: Duration,
    pub reconnect_backoff_max: Duration,
    pub max_message_bytes: usize,
    pub max_lines_per_message: usize,
    /// Prefix of generated ActionIDs (`<prefix>-<counter>`); make it unique per process.
    pub action_id_prefix: String,
    /// Default per-subscriber buffer, in events.
    pub subscriber_buffer: usize,
}

impl Default for AmiConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 5038,
            username: String::new(),
            secret: SecretString::default(),
            auth: LoginAuth::Plain,
            events: EventsMask::default(),
            filters: Vec::new(),
            action_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            fully_booted_timeout: Some(Duration::from_secs(30)),
            ping_interval: Some(Duration::from_secs(20)),
            reconnect_backoff_min: Duration::from_millis(200),
            reconnect_backoff_max: Duration::from_secs(30),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_lines_per_message: DEFAULT_MAX_LINES,
            action_id_prefix: format!("dialout-{}", std::process::id()),
            subscriber_buffer: 4096,
        }
    }
}
