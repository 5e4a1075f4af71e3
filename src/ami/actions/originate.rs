use std::time::Duration;

use super::{Action, ActionError, ActionWriter, check_value};

/// Where the answered channel goes: a dialplan location or an application.
#[derive(Debug, Clone)]
pub enum OriginateTarget {
    Exten {
        context: String,
        exten: String,
        priority: u32,
    },
    Application {
        application: String,
        data: Option<String>,
    },
}

/// Asterisk's ring timeout when an Originate gives none (manager.c).
const DEFAULT_RING_TIMEOUT: Duration = Duration::from_secs(30);

/// `Action: Originate`.
///
/// With `async_: true` (what a dialer wants) Asterisk answers `Originate successfully queued`
/// at once and reports the outcome later in an `OriginateResponse` event carrying our
/// ActionID. Tag the call through `caller_id` (it shows up in every Hangup) or `channel_id`.
///
/// With `async_: false` the response comes only on answer or failure (up to the ring
/// `timeout`), with no OriginateResponse, and Asterisk serves nothing else on that session
/// meanwhile: the client waits the ring timeout plus its action timeout for it and skips
/// the keepalive Ping while it waits; other actions sent meanwhile wait too.
#[derive(Debug, Clone)]
pub struct Originate {
    pub channel: String,
    pub target: OriginateTarget,
    /// Ring timeout (Asterisk's default is 30 s).
    pub timeout: Option<Duration>,
    /// e.g. `"JOB900101" <900101>`.
    pub caller_id: Option<String>,
    /// Channel variables, one `Variable: NAME=VALUE` line each.
    pub variables: Vec<(String, String)>,
    pub async_: bool,
    /// Becomes the `;1` Uniqueid (and the Uniqueid of a failed OriginateResponse).
    pub channel_id: Option<String>,
    /// Becomes the `;2` Uniqueid.
    pub other_channel_id: Option<String>,
    pub account: Option<String>,
    pub codecs: Option<String>,
}

impl Originate {
    /// An async originate to a dialplan extension, the dialer's usual form.
    pub fn to_exten(channel: &str, context: &str, exten: &str, priority: u32) -> Self {
        Self {
            channel: channel.to_owned(),
            target: OriginateTarget::Exten {
                context: context.to_owned(),
                exten: exten.to_owned(),
                priority,
            },
            timeout: None,
            caller_id: None,
            variables: Vec::new(),
            async_: true,
            channel_id: None,
            other_channel_id: None,
            account: None,
            codecs: None,
        }
    }
}

impl Action for Originate {
    fn name(&self) -> &str {
        "Originate"
    }
    fn response_timeout(&self, default: Duration) -> Duration {
        if self.async_ {
            default
        } else {
            self.timeout.unwrap_or(DEFAULT_RING_TIMEOUT) + default
        }
    }
    fn blocks_session(&self) -> bool {
        !self.async_
    }
    fn write_fields(&self, w: &mut ActionWriter) -> Result<(), ActionError> {
        if self.channel.is_empty() {
            return Err(ActionError::Missing("Channel"));
        }
        w.field("Channel", &self.channel)?;
        match &self.target {
            OriginateTarget::Exten {
                context,
                exten,
                priority,
            } => {
                w.field("Context", context)?;
                w.field("Exten", exten)?;
                w.field("Priority", &priority.to_string())?;
            }
            OriginateTarget::Application { application, data } => {
                w.field("Application", application)?;
                w.opt("Data", data.as_deref())?;
            }
        }
        if let Some(t) = self.timeout {
            w.field("Timeout", &t.as_millis().to_string())?;
        }
        w.opt("CallerID", self.caller_id.as_deref())?;
        for (k, v) in &self.variables {
            check_value("Variable", "variable name", k)?;
            if k.is_empty() || k.contains('=') {
                return Err(ActionError::InvalidVariableName(k.clone()));
            }
            check_value("Variable", "variable value", v)?;
            w.field("Variable", &format!("{k}={v}"))?;
        }
        w.opt("Account", self.account.as_deref())?;
        w.opt("Codecs", self.codecs.as_deref())?;
        w.field("Async", if self.async_ { "true" } else { "false" })?;
        w.opt("ChannelId", self.channel_id.as_deref())?;
        w.opt("OtherChannelId", self.other_channel_id.as_deref())?;
        Ok(())
    }
}
