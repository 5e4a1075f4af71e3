//! How an Originate chooses its outcome, and the scenario file.

use std::time::Duration;

/// The outcome the simulated callee produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// Answer at once; the callee hangs up after `hangup_after`.
    Answer {
        hangup_after: Duration,
    },
    /// As `Answer`, with the callee in `Wait(30)` rather than `Playback` while up (the
    /// lab's `long-answer`).
    LongAnswer {
        hangup_after: Duration,
    },
    /// Ring `ring`, answer, hang up `hangup_after` later.
    SlowAnswer {
        ring: Duration,
        hangup_after: Duration,
    },
    Busy,
    Congestion,
    /// Ring until the Originate `Timeout` runs out (Reason 3).
    NoAnswer,
    /// Ring `ring`, then the callee hangs up unanswered with cause 21 (Reason 0).
    Reject {
        ring: Duration,
    },
    /// Extension or context the callee side does not know (Failure, Reason 0).
    Nonexistent,
    /// Channel technology other than `Local` (Failure 0, Uniqueid `<unknown>`, no channels).
    InvalidTech,
    /// Answer at once, then the simulator drops this client's TCP connection after `after`.
    DropConnection {
        after: Duration,
    },
}

/// Parses the dialled channel. See the module doc of [`crate::pbx_sim`] for the grammar.
pub fn outcome_for_channel(channel: &str) -> CallOutcome {
    let Some((tech, data)) = channel.split_once('/') else {
        return CallOutcome::InvalidTech;
    };
    if !tech.eq_ignore_ascii_case("Local") {
        return CallOutcome::InvalidTech;
    }
    let (exten, context) = data.split_once('@').unwrap_or((data, "default"));
    if context != "callee" {
        return CallOutcome::Nonexistent;
    }
    let mut parts = exten.split('_');
    let kind = parts.next().unwrap_or("");
    let mut arg = |default: u64| -> Duration {
        Duration::from_millis(parts.next().and_then(|p| p.parse().ok()).unwrap_or(default))
    };
    match kind {
        "answer" => CallOutcome::Answer {
            hangup_after: arg(1922),
        },
        "long-answer" => CallOutcome::LongAnswer {
            hangup_after: arg(30_000),
        },
        "slow-answer" => {
            let ring = arg(2000);
            CallOutcome::SlowAnswer {
                ring,
                hangup_after: arg(1922),
            }
        }
        // The lab's `beep`: answer, a 0.5 s tone, hang up about 1 s after the answer
        // (concurrent-20.txt); played with `answer`'s events.
        "beep" => CallOutcome::Answer {
            hangup_after: arg(1000),
        },
        "busy" => CallOutcome::Busy,
        "congestion" => CallOutcome::Congestion,
        "noanswer" => CallOutcome::NoAnswer,
        "reject" => CallOutcome::Reject { ring: arg(1000) },
        "drop" => CallOutcome::DropConnection { after: arg(500) },
        _ => CallOutcome::Nonexistent,
    }
}

/// Production faults the simulator can inject.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// For each Originate, this many calls of "another client" (different CallerID, foreign
    /// ActionID) run the same scenario at the same time; their events reach every session.
    pub noise_calls: u32,
    /// Within a phase, send the OriginateResponse after the Hangups (as seen in busy/reject).
    pub hangup_before_originate_response: bool,
    /// Send every Hangup and OriginateResponse twice.
    pub duplicate_events: bool,
    /// Swap adjacent events within each phase.
    pub reorder_events: bool,
    /// Write each message in two halves with this pause between them.
    pub slow_stream: Option<Duration>,
    /// Queue an async Originate's `Response: Success` only after the events of the call's
    /// first phase, so a fast failure's OriginateResponse comes *before* its Originate's
    /// reply (what Asterisk does under load: concurrent-20.txt, README fact 16).
    pub response_after_events: bool,
    /// Shake the order Asterisk varies from run to run (fact 15), reproducibly: with this
    /// seed, each call's phase may swap its two legs' Hangups and may move its failed
    /// OriginateResponse after the Hangups (or before them).
    pub vary_order: Option<u64>,
    /// Never send an async Originate's `Response` (a reply lost or later than any
    /// timeout); the call itself goes on.
    pub lose_originate_reply: bool,
}

/// Reads a scenario file: `key = value` lines, `#` comments. Keys: `time_scale`,
/// `noise_calls`, `hangup_before_originate_response`, `duplicate_events`, `reorder_events`,
/// `slow_stream_ms`, `auth_failure_delay_ms`, `response_after_events`, `vary_order_seed`,
/// `lose_originate_reply`, `cdr_unanswered`, `boot_delay_ms`.
///
/// # Errors
/// An unknown key or a value that does not parse, with its line number.
pub fn apply_scenario(text: &str, cfg: &mut super::SimConfig) -> Result<(), String> {
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: expected key = value", n + 1));
        };
        let (k, v) = (k.trim(), v.trim());
        let bad = || format!("line {}: bad value for {k}: {v}", n + 1);
        match k {
            "time_scale" => cfg.time_scale = v.parse().map_err(|_| bad())?,
            "noise_calls" => cfg.faults.noise_calls = v.parse().map_err(|_| bad())?,
            "hangup_before_originate_response" => {
                cfg.faults.hangup_before_originate_response = v.parse().map_err(|_| bad())?
            }
            "duplicate_events" => cfg.faults.duplicate_events = v.parse().map_err(|_| bad())?,
            "reorder_events" => cfg.faults.reorder_events = v.parse().map_err(|_| bad())?,
            "slow_stream_ms" => {
                cfg.faults.slow_stream = Some(Duration::from_millis(v.parse().map_err(|_| bad())?))
            }
            "lose_originate_reply" => {
                cfg.faults.lose_originate_reply = v.parse().map_err(|_| bad())?
            }
            "response_after_events" => {
                cfg.faults.response_after_events = v.parse().map_err(|_| bad())?
            }
            "vary_order_seed" => cfg.faults.vary_order = Some(v.parse().map_err(|_| bad())?),
            "cdr_unanswered" => cfg.cdr_unanswered = v.parse().map_err(|_| bad())?,
            "boot_delay_ms" => {
                cfg.boot_delay = Duration::from_millis(v.parse().map_err(|_| bad())?)
            }
            "auth_failure_delay_ms" => {
                cfg.auth_failure_delay = Duration::from_millis(v.parse().map_err(|_| bad())?)
            }
            _ => return Err(format!("line {}: unknown key {k}", n + 1)),
        }
    }
    Ok(())
}
