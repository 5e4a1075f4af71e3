//! Settings, layered: the embedded `config/default.toml`, an optional file, then
//! `DIALOUT__SECTION__KEY` environment variables, then `DATABASE_URL`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

/// Secrets (a database URL may carry a password, the AMI secret, the roster's initial
/// password): Debug shows `[REDACTED]`, and the text is reached only by `expose_secret()`.
pub use secrecy::{ExposeSecret, SecretString};

const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("configuration: {0}")]
    Rule(String),
}

/// The whole configuration: one `*Section` per `[section]` of `config/default.toml`.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub database: DatabaseSection,
    pub worker: WorkerSection,
    pub retention: RetentionSection,
    pub log: LogSection,
    pub legacy: LegacySection,
    pub roster: RosterSection,
    pub ami: AmiSection,
    pub dial: DialSection,
    pub http: HttpSection,
    #[serde(default)]
    pub kinds: BTreeMap<String, KindSection>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSection {
    pub url: SecretString,
    pub local_dir: PathBuf,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSection {
    pub id: String,
    pub kinds: Vec<String>,
    pub migrate_on_start: bool,
    pub lease_ms: u64,
    pub lease_batch: u32,
    pub lease_streams: u32,
    pub poll_interval_ms: u64,
    pub rescue_interval_ms: u64,
    pub shutdown_grace_ms: u64,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RetentionSection {
    pub keep_hours: u64,
    pub interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LegacySection {
    pub connect_timeout_ms: u64,
    pub write_timeout_ms: u64,
    pub reply_timeout_ms: u64,
    pub max_reply_bytes: usize,
    pub max_connections_per_host: usize,
    pub slot_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RosterSection {
    pub email_domain: String,
    pub initial_password: SecretString,
    pub roster_dir: String,
    pub max_line_bytes: usize,
}

/// The Asterisk Manager Interface the `dial` kind talks to.
#[derive(Debug, Clone, Deserialize)]
pub struct AmiSection {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub secret: SecretString,
    pub connect_timeout_ms: u64,
    pub action_timeout_ms: u64,
    /// After the login, how long to wait for Asterisk's FullyBooted; 0: do not wait.
    pub fully_booted_timeout_ms: u64,
    /// 0: no keepalive Ping.
    pub ping_interval_ms: u64,
    /// Reconnect backoff after the link drops.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
}

/// Where to tag the call so its events can be told apart from everyone else's.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TagIn {
    /// The CallerID name carries the tag; the number stays the real outbound number.
    Name,
    /// The CallerID number carries a numeric tag (for trunks that drop the name).
    Number,
    /// CallerID untouched: only the ChannelId, ActionID and a channel variable carry it.
    None,
}

/// How the `dial` kind places calls; a payload may override most of these.
#[derive(Debug, Clone, Deserialize)]
pub struct DialSection {
    /// The channel to originate, `{number}` replaced by the payload's number.
    pub channel: String,
    /// Where the answered call goes. Empty: it plays `message` (Application Playback).
    pub context: String,
    pub exten: String,
    pub priority: u32,
    pub message: String,
    pub caller_id_name: String,
    pub caller_id_number: String,
    pub tag_in: TagIn,
    pub ring_timeout_ms: u64,
    pub max_call_ms: u64,
    /// After the OriginateResponse, how long to wait for the Hangup events that give the
    /// cause of a failed call (they may come before it or after, or never).
    pub settle_ms: u64,
    /// Calls up at once across every replica (0: no limit), kept in PostgreSQL.
    pub max_live_calls: u32,
    /// Originates per second across every replica (0: no limit), kept in PostgreSQL.
    pub calls_per_second: f64,
    /// Per outcome, whether and when to dial again.
    pub retry: DialRetry,
}

/// `[dial.retry]`: per call outcome, how long to wait before dialling again, within the
/// job's `max_attempts`; 0: that outcome ends the job. A payload's `retry` object
/// overrides any of them.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DialRetry {
    #[serde(default)]
    pub busy_ms: u64,
    #[serde(default)]
    pub no_answer_ms: u64,
    #[serde(default)]
    pub congestion_ms: u64,
    #[serde(default)]
    pub rejected_ms: u64,
    #[serde(default)]
    pub failed_ms: u64,
}

/// `[http]`: the health and metrics listener of `dialout worker`.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSection {
    /// `None` (an empty string): no listener.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub listen: Option<SocketAddr>,
}

/// An empty string as `None`, anything else as an IP address and port.
fn optional_socket_addr<'de, D>(de: D) -> Result<Option<SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = String::deserialize(de)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an IP address and port (like 127.0.0.1:9090 or [::1]:9090)"
        ))
    })
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSection {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KindSection {
    pub concurrency: usize,
}

impl Settings {
    /// Loads the layers. `file` is the optional `--config FILE`.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`Settings::load`], with the environment given (tests pass their own).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = env.into_iter().collect();
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).required(true));
        }
        builder = builder.add_source(
            Environment::with_prefix("DIALOUT")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("worker.kinds")
                .try_parsing(true)
                .source(Some(env.clone().into_iter().collect())),
        );
        if let Some(url) = env.get("DATABASE_URL").filter(|u| !u.is_empty()) {
            let from_dialout_env = env.contains_key("DIALOUT__DATABASE__URL");
            if !from_dialout_env {
                builder = builder.set_override("database.url", url.as_str())?;
            }
        }
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let w = &self.worker;
        if w.lease_ms < 300 {
            return Err(ConfigError::Rule(
                "worker.lease_ms must be at least 300".into(),
            ));
        }
        if w.lease_batch == 0 {
            return Err(ConfigError::Rule(
                "worker.lease_batch must be at least 1".into(),
            ));
        }
        if !(1..=8).contains(&w.lease_streams) {
            return Err(ConfigError::Rule(
                "worker.lease_streams must be from 1 to 8".into(),
            ));
        }
        if w.poll_interval_ms == 0 || w.rescue_interval_ms == 0 {
            return Err(ConfigError::Rule(
                "worker.poll_interval_ms and worker.rescue_interval_ms must be above 0".into(),
            ));
        }
        let cps = self.dial.calls_per_second;
        if !cps.is_finite() || !(0.0..=10_000.0).contains(&cps) {
            return Err(ConfigError::Rule(
                "dial.calls_per_second must be from 0 (no limit) to 10000".into(),
            ));
        }
        for kind in &w.kinds {
            match self.kinds.get(kind) {
                Some(k) if k.concurrency == 0 => {
                    return Err(ConfigError::Rule(format!(
                        "kinds.{kind}.concurrency must be at least 1"
                    )));
                }
                Some(_) => {}
                None => {
                    return Err(ConfigError::Rule(format!(
                        "worker.kinds names {kind:?}, which has no [kinds.{kind}] section"
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn concurrency(&self, kind: &str) -> usize {
        self.kinds.get(kind).map_or(1, |k| k.concurrency)
    }
}

impl WorkerSection {
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis((self.lease_ms / 3).max(100))
    }
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    pub fn rescue_interval(&self) -> Duration {
        Duration::from_millis(self.rescue_interval_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// A database URL with its password masked, for logs and messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_and_env_overrides_them() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(s.worker.lease_ms, 30000);
        assert!(s.database.url.expose_secret().is_empty());

        let s = Settings::load_with_env(
            None,
            env(&[
                ("DIALOUT__WORKER__LEASE_MS", "5000"),
                ("DIALOUT__WORKER__KINDS", "noop,legacy_message"),
                ("DIALOUT__KINDS__NOOP__CONCURRENCY", "7"),
                ("DATABASE_URL", "postgres://u:pw@h/db"),
            ]),
        )
        .unwrap();
        assert_eq!(s.worker.lease_ms, 5000);
        assert_eq!(s.worker.kinds, vec!["noop", "legacy_message"]);
        assert_eq!(s.concurrency("noop"), 7);
        assert_eq!(s.database.url.expose_secret(), "postgres://u:pw@h/db");
    }

    #[test]
    fn dialout_database_url_wins_over_database_url() {
        let s = Settings::load_with_env(
            None,
            env(&[
                ("DIALOUT__DATABASE__URL", "postgres://a@h/one"),
                ("DATABASE_URL", "postgres://b@h/two"),
            ]),
        )
        .unwrap();
        assert_eq!(s.database.url.expose_secret(), "postgres://a@h/one");
    }

    #[test]
    fn a_kind_without_settings_is_refused() {
        let err = Settings::load_with_env(None, env(&[("DIALOUT__WORKER__KINDS", "noop,fax")]))
            .unwrap_err();
        assert!(err.to_string().contains("\"fax\""), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let s = SecretString::from("postgres://u:hunter2@h/db");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(redact_url(s.expose_secret()), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn the_dial_keys_operators_deploy_with_work_as_environment_variables() {
        let s = Settings::load_with_env(
            None,
            env(&[
                ("DIALOUT__AMI__HOST", "pbx.internal"),
                ("DIALOUT__AMI__PORT", "5039"),
                ("DIALOUT__AMI__USERNAME", "dialout"),
                ("DIALOUT__AMI__SECRET", "s3cret-ami"),
                ("DIALOUT__DIAL__CHANNEL", "PJSIP/{number}@trunk"),
                ("DIALOUT__DIAL__CONTEXT", "ivr"),
                ("DIALOUT__DIAL__TAG_IN", "number"),
                ("DIALOUT__DIAL__RING_TIMEOUT_MS", "20000"),
                ("DIALOUT__KINDS__DIAL__CONCURRENCY", "250"),
            ]),
        )
        .unwrap();
        assert_eq!((s.ami.host.as_str(), s.ami.port), ("pbx.internal", 5039));
        assert_eq!(s.dial.channel, "PJSIP/{number}@trunk");
        assert_eq!(s.dial.context, "ivr");
        assert_eq!(s.dial.tag_in, TagIn::Number);
        assert_eq!(s.dial.ring_timeout_ms, 20000);
        assert_eq!(s.concurrency("dial"), 250);
        assert_eq!(s.ami.secret.expose_secret(), "s3cret-ami");
        // The whole settings, as a log line would print them, never show the secret.
        assert!(!format!("{s:?}").contains("s3cret-ami"));
    }

    #[test]
    fn the_http_listener_is_off_unless_an_address_is_given() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(s.http.listen, None);
        let s = Settings::load_with_env(None, env(&[("DIALOUT__HTTP__LISTEN", "127.0.0.1:9090")]))
            .unwrap();
        assert_eq!(s.http.listen, Some("127.0.0.1:9090".parse().unwrap()));
        let err = Settings::load_with_env(None, env(&[("DIALOUT__HTTP__LISTEN", "localhost")]))
            .unwrap_err();
        assert!(
            err.to_string().contains("not an IP address and port"),
            "{err}"
        );
    }

    #[test]
    fn dial_limits_default_to_none_and_a_bad_rate_is_refused() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!((s.dial.max_live_calls, s.dial.calls_per_second), (0, 0.0));
        let s = Settings::load_with_env(
            None,
            env(&[
                ("DIALOUT__DIAL__MAX_LIVE_CALLS", "30"),
                ("DIALOUT__DIAL__CALLS_PER_SECOND", "2.5"),
            ]),
        )
        .unwrap();
        assert_eq!((s.dial.max_live_calls, s.dial.calls_per_second), (30, 2.5));
        for bad in ["-1", "NaN", "inf", "20000"] {
            let err =
                Settings::load_with_env(None, env(&[("DIALOUT__DIAL__CALLS_PER_SECOND", bad)]))
                    .unwrap_err();
            assert!(
                err.to_string().contains("dial.calls_per_second"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_fully_booted_wait_defaults_to_30_s_and_0_turns_it_off() {
        use std::time::Duration;
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(
            crate::jobs::dial::ami_config(&s).fully_booted_timeout,
            Some(Duration::from_secs(30))
        );
        let s =
            Settings::load_with_env(None, env(&[("DIALOUT__AMI__FULLY_BOOTED_TIMEOUT_MS", "0")]))
                .unwrap();
        assert_eq!(crate::jobs::dial::ami_config(&s).fully_booted_timeout, None);
    }
}
