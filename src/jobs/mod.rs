//! The job kinds. Each kind is a [`JobHandler`](crate::worker::JobHandler) registered
//! under the name applications put in `dialout_queue.kind`.

pub mod dial;
pub mod legacy;
pub mod noop;
pub mod roster;

use crate::config::{ConfigError, ExposeSecret, Settings};
use crate::worker::Registry;

/// Every kind this build can run. Which ones a replica leases is `worker.kinds`.
pub fn registry(settings: &Settings) -> Result<Registry, ConfigError> {
    let registry = Registry::new();
    let metrics = registry.metrics().clone();
    let legacy_client = legacy::LegacyClient::counting_sockets(
        legacy_settings(settings),
        metrics.legacy_sockets_open(),
    );
    Ok(registry
        .with("noop", noop::Noop)
        .with(
            "dial",
            dial::Dial::new(
                dial::ami_config(settings),
                dial::DialDefaults::from_settings(settings),
                metrics.dial(),
            ),
        )
        .with("legacy_message", legacy::LegacyMessage::new(legacy_client))
        .with(
            "roster_import",
            roster::RosterImport::new(roster_options(settings)?),
        ))
}

/// The converter's defaults from `[roster]`.
pub fn roster_options(settings: &Settings) -> Result<roster::ConvertOptions, ConfigError> {
    let r = &settings.roster;
    let rule =
        |what: &str, e: &dyn std::fmt::Display| ConfigError::Rule(format!("roster.{what}: {e}"));
    Ok(roster::ConvertOptions {
        email_domain: (!r.email_domain.is_empty())
            .then(|| roster::EmailDomain::parse(&r.email_domain))
            .transpose()
            .map_err(|e| rule("email_domain", &e))?,
        initial_password: (!r.initial_password.expose_secret().is_empty())
            .then(|| roster::InitialPassword::parse(r.initial_password.expose_secret()))
            .transpose()
            .map_err(|e| rule("initial_password", &e))?,
        roster_dir: (!r.roster_dir.is_empty()).then(|| r.roster_dir.clone().into()),
        max_line_bytes: r.max_line_bytes,
        ..roster::ConvertOptions::default()
    })
}

/// The TCP client's defaults from `[legacy]`.
pub fn legacy_settings(settings: &Settings) -> legacy::LegacySettings {
    use std::time::Duration;
    let l = &settings.legacy;
    legacy::LegacySettings {
        connect_timeout: Duration::from_millis(l.connect_timeout_ms),
        write_timeout: Duration::from_millis(l.write_timeout_ms),
        reply_timeout: Duration::from_millis(l.reply_timeout_ms),
        max_reply_bytes: l.max_reply_bytes,
        max_connections_per_host: std::num::NonZeroUsize::new(l.max_connections_per_host),
        slot_timeout: Duration::from_millis(l.slot_timeout_ms),
    }
}
