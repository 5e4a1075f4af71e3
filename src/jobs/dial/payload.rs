//! A dial job's payload, parsed. The database checks the same rules at INSERT
//! (`dialout_validate_dial`); this parse is the worker's own guard, so nothing that
//! reaches the AMI wire was only checked elsewhere.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// A number to dial: 1 to 32 characters, digits, `*` and `#`, one optional leading `+`.
/// Nothing else, since it is put into a channel string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(s: &str) -> Result<Self, DialPayloadError> {
        let digits = s.strip_prefix('+').unwrap_or(s);
        let ok = (1..=32).contains(&s.len())
            && !digits.is_empty()
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(DialPayloadError(format!(
                "\"number\" must be 1 to 32 characters: digits, * and #, with an optional leading +; got {s:?}"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
#[error("dial job: {0}")]
pub struct DialPayloadError(pub String);

/// Where the answered call goes, when the payload says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landing {
    pub context: String,
    pub exten: String,
    pub priority: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct DialPayload {
    pub number: PhoneNumber,
    pub message: Option<String>,
    pub caller_id_name: Option<String>,
    pub caller_id_number: Option<PhoneNumber>,
    pub ring_timeout: Option<Duration>,
    pub max_call: Option<Duration>,
    pub variables: BTreeMap<String, String>,
    pub landing: Option<Landing>,
    pub account_code: Option<String>,
    /// A recovery attempt that finds the earlier call gone dials again.
    pub redial_if_lost: bool,
    /// Per outcome retry waits over `[dial.retry]`.
    pub retry: RetryOverride,
}

/// A payload's `retry` object: any of `[dial.retry]`'s keys.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOverride {
    pub busy_ms: Option<u64>,
    pub no_answer_ms: Option<u64>,
    pub congestion_ms: Option<u64>,
    pub rejected_ms: Option<u64>,
    pub failed_ms: Option<u64>,
}

impl RetryOverride {
    /// `defaults` with this override's keys in place.
    pub fn over(&self, d: crate::config::DialRetry) -> crate::config::DialRetry {
        crate::config::DialRetry {
            busy_ms: self.busy_ms.unwrap_or(d.busy_ms),
            no_answer_ms: self.no_answer_ms.unwrap_or(d.no_answer_ms),
            congestion_ms: self.congestion_ms.unwrap_or(d.congestion_ms),
            rejected_ms: self.rejected_ms.unwrap_or(d.rejected_ms),
            failed_ms: self.failed_ms.unwrap_or(d.failed_ms),
        }
    }

    fn values(&self) -> [Option<u64>; 5] {
        [
            self.busy_ms,
            self.no_answer_ms,
            self.congestion_ms,
            self.rejected_ms,
            self.failed_ms,
        ]
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    number: String,
    message: Option<String>,
    caller_id_name: Option<String>,
    caller_id_number: Option<String>,
    ring_timeout_ms: Option<u64>,
    max_call_ms: Option<u64>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    context: Option<String>,
    exten: Option<String>,
    priority: Option<u32>,
    account_code: Option<String>,
    #[serde(default)]
    redial_if_lost: bool,
    #[serde(default)]
    retry: RetryOverride,
}

fn err(msg: impl Into<String>) -> DialPayloadError {
    DialPayloadError(msg.into())
}

fn all(s: &str, ok: impl Fn(char) -> bool) -> bool {
    s.chars().all(ok)
}

impl DialPayload {
    pub fn parse(v: &serde_json::Value) -> Result<Self, DialPayloadError> {
        let raw: Raw = serde_json::from_value(v.clone()).map_err(|e| err(e.to_string()))?;
        let number = PhoneNumber::parse(&raw.number)?;
        if let Some(m) = &raw.message
            && !is_sound_name(m)
        {
            return Err(err(format!(
                "\"message\" must be an Asterisk sound name (letters, digits, _ - /, no leading /), got {m:?}"
            )));
        }
        if let Some(n) = &raw.caller_id_name
            && (n.is_empty()
                || n.chars().count() > 64
                || !all(n, |c| !c.is_control() && !matches!(c, '"' | '<' | '>')))
        {
            return Err(err(format!(
                "\"caller_id_name\" must be 1 to 64 characters without quotes, < > or control characters, got {n:?}"
            )));
        }
        let caller_id_number = raw
            .caller_id_number
            .as_deref()
            .map(PhoneNumber::parse)
            .transpose()
            .map_err(|_| {
                err("\"caller_id_number\" must be digits, * and # with an optional leading +")
            })?;
        let ms = |v: Option<u64>, lo: u64, hi: u64, name: &str| {
            v.map(|ms| {
                if (lo..=hi).contains(&ms) {
                    Ok(Duration::from_millis(ms))
                } else {
                    Err(err(format!(
                        "\"{name}\" must be an integer from {lo} to {hi}, got {ms}"
                    )))
                }
            })
            .transpose()
        };
        let ring_timeout = ms(raw.ring_timeout_ms, 1_000, 300_000, "ring_timeout_ms")?;
        let max_call = ms(raw.max_call_ms, 1_000, 86_400_000, "max_call_ms")?;
        if raw.variables.len() > 20 {
            return Err(err("at most 20 \"variables\""));
        }
        for (k, v) in &raw.variables {
            let name_ok = k.len() <= 64
                && k.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && all(k, |c| c.is_ascii_alphanumeric() || c == '_');
            if !name_ok || v.chars().any(char::is_control) || v.chars().count() > 1024 {
                return Err(err(format!(
                    "\"variables\" {k:?} must be named [A-Za-z_][A-Za-z0-9_]* and hold text without control characters (at most 1024)"
                )));
            }
        }
        let landing = match (raw.context, raw.exten) {
            (None, None) => None,
            (Some(context), Some(exten)) => {
                let ctx_ok = (1..=79).contains(&context.len())
                    && all(&context, |c| {
                        c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
                    });
                let ext_ok = (1..=79).contains(&exten.len())
                    && all(&exten, |c| {
                        c.is_ascii_alphanumeric() || matches!(c, '_' | '*' | '#' | '+' | '-')
                    });
                if !ctx_ok || !ext_ok {
                    return Err(err("\"context\" / \"exten\" must be dialplan names"));
                }
                Some(Landing {
                    context,
                    exten,
                    priority: raw.priority,
                })
            }
            _ => return Err(err("\"context\" and \"exten\" go together")),
        };
        if let Some(p) = raw.priority
            && !(1..=1000).contains(&p)
        {
            return Err(err("\"priority\" must be an integer from 1 to 1000"));
        }
        if raw
            .retry
            .values()
            .iter()
            .flatten()
            .any(|&ms| ms > 86_400_000)
        {
            return Err(err("\"retry\" waits must be from 0 to 86400000 ms"));
        }
        if let Some(a) = &raw.account_code
            && ((a.is_empty() || a.len() > 80)
                || !all(a, |c| {
                    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
                }))
        {
            return Err(err(
                "\"account_code\" must be 1 to 80 letters, digits, _ . -",
            ));
        }
        Ok(Self {
            number,
            message: raw.message,
            caller_id_name: raw.caller_id_name,
            caller_id_number,
            ring_timeout,
            max_call,
            variables: raw.variables,
            landing,
            account_code: raw.account_code,
            redial_if_lost: raw.redial_if_lost,
            retry: raw.retry,
        })
    }
}

/// An Asterisk sound name: letters, digits, `_ - /`, no `..`, not absolute.
pub fn is_sound_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && !s.starts_with('/')
        && !s.contains("..")
        && all(s, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_are_digits_star_hash_and_one_leading_plus() {
        for ok in [
            "+5491155550101",
            "100",
            "*72#",
            "+1",
            "12345678901234567890123456789012",
        ] {
            assert!(PhoneNumber::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "+",
            "++1",
            "1+2",
            "12\r\nAction: Hangup",
            "abc",
            "12 34",
            "1/2",
            "1@x",
            "1&2",
            "\"1\"",
            "123456789012345678901234567890123",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_payload_parses_whole_and_refuses_what_it_does_not_know() {
        let p = DialPayload::parse(&json!({
            "number": "+5491155550101", "message": "custom/welcome", "ring_timeout_ms": 20000,
            "variables": {"CAMPAIGN": "x-1"}, "context": "ivr", "exten": "s", "priority": 2,
            "account_code": "acme"
        }))
        .unwrap();
        assert_eq!(p.number.as_str(), "+5491155550101");
        assert_eq!(p.landing.unwrap().priority, Some(2));
        assert!(DialPayload::parse(&json!({"number": "1", "fax": true})).is_err());
        assert!(DialPayload::parse(&json!({"number": "1", "message": "../etc/passwd"})).is_err());
        assert!(DialPayload::parse(&json!({"number": "1", "context": "x"})).is_err());
        assert!(
            DialPayload::parse(&json!({"number": "1", "variables": {"A": "x\r\nAction: Hangup"}}))
                .is_err()
        );
        assert!(DialPayload::parse(&json!({"number": "1", "caller_id_name": "a\"b"})).is_err());
    }
}
