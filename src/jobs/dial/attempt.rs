//! One dial attempt: tag the call, register it, originate, follow its events to the
//! end, and return the outcome with its CDR.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::time::Instant;

use super::call::{Call, Step};
use super::payload::DialPayload;
use super::tracker::{CallEvent, TAG_PREFIX};
use super::{DialDefaults, Link};
use crate::ami::AmiError;
use crate::ami::actions::{CoreShowChannels, Hangup, Originate, OriginateTarget};
use crate::cdr::{CdrRecord, Disposition};
use crate::config::TagIn;
use crate::worker::{JobContext, Outcome, StopReason};

/// Everything one originate says, worked out before anything is sent.
struct Plan {
    originate: Originate,
    /// ChannelId, ActionID and CallerID-name tag: `dialout-<job>-<lease token>`.
    uniqueid: String,
    /// Keys the tracker matches this call's events by.
    keys: Vec<String>,
    clid: String,
    src: String,
    dst: String,
    dcontext: String,
    lastapp: String,
    lastdata: String,
    accountcode: String,
    ring_timeout: Duration,
    max_call: Duration,
}

fn plan(ctx: &JobContext, p: &DialPayload, d: &DialDefaults) -> Plan {
    let uniqueid = format!("{TAG_PREFIX}{}", ctx.attempt_id());
    let number = p.number.as_str();
    let name = p
        .caller_id_name
        .clone()
        .unwrap_or_else(|| d.caller_id_name.clone());
    let num = p
        .caller_id_number
        .as_ref()
        .map_or_else(|| d.caller_id_number.clone(), |n| n.as_str().to_owned());
    let mut keys = vec![uniqueid.clone()];
    let (name, num) = match d.tag_in {
        TagIn::Name => (uniqueid.clone(), num),
        TagIn::Number => {
            // Digits only, never reused: the job id and 9 digits of the lease token.
            let token = ctx.attempt_id().lease_token.as_u128() % 1_000_000_000;
            let tag = format!("{}{token:09}", ctx.id());
            keys.push(tag.clone());
            (name, tag)
        }
        TagIn::None => (name, num),
    };
    let clid = match (name.is_empty(), num.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!("\"{name}\""),
        (true, false) => format!("<{num}>"),
        (false, false) => format!("\"{name}\" <{num}>"),
    };
    let message = p.message.clone().unwrap_or_else(|| d.message.clone());
    let (target, dcontext, lastapp, lastdata) = match (&p.landing, d.context.is_empty()) {
        (Some(l), _) => (
            OriginateTarget::Exten {
                context: l.context.clone(),
                exten: l.exten.clone(),
                priority: l.priority.unwrap_or(1),
            },
            l.context.clone(),
            String::new(),
            String::new(),
        ),
        (None, false) => (
            OriginateTarget::Exten {
                context: d.context.clone(),
                exten: d.exten.clone(),
                priority: d.priority,
            },
            d.context.clone(),
            String::new(),
            String::new(),
        ),
        (None, true) => (
            OriginateTarget::Application {
                application: "Playback".into(),
                data: Some(message.clone()),
            },
            String::new(),
            "Playback".into(),
            message,
        ),
    };
    let ring_timeout = p.ring_timeout.unwrap_or(d.ring_timeout);
    let mut variables = vec![
        ("DIALOUT_TAG".to_owned(), uniqueid.clone()),
        ("DIALOUT_JOB".to_owned(), ctx.id().to_string()),
        ("DIALOUT_ATTEMPT".to_owned(), ctx.attempt().to_string()),
    ];
    variables.extend(p.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
    let originate = Originate {
        channel: d.channel.replace("{number}", number),
        target,
        timeout: Some(ring_timeout),
        caller_id: (!clid.is_empty()).then(|| clid.clone()),
        variables,
        async_: true,
        channel_id: Some(uniqueid.clone()),
        other_channel_id: None,
        account: p.account_code.clone(),
        codecs: None,
    };
    Plan {
        originate,
        uniqueid,
        keys,
        clid,
        src: num,
        dst: number.to_owned(),
        dcontext,
        lastapp,
        lastdata,
        accountcode: p.account_code.clone().unwrap_or_default(),
        ring_timeout,
        max_call: p.max_call.unwrap_or(d.max_call),
    }
}

/// Where the attempt is, and until when it waits there.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Originate sent: waiting for the OriginateResponse.
    Ringing,
    /// Failed: waiting briefly for the Hangups that carry the cause.
    Settling,
    /// Answered: waiting for the end, at most `max_call`.
    Up,
    /// We sent a Hangup (max_call reached, or cancelled): waiting for the call to end.
    HangingUp(Why),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    MaxCall,
    Cancelled,
}

/// How the attempt ended, before it becomes an outcome.
enum End {
    /// The call ran its course (or we ended it); its CDR goes with the status.
    Call {
        timed_out: Option<String>,
        cancelled: bool,
    },
    /// Asterisk refused the Originate outright; one FAILED CDR.
    Refused(String),
    /// Nothing came back for an originate whose reply never arrived.
    Unknown(String),
    /// Asterisk no longer has the call, and its end came while we could not see
    /// (the link was down, or events were lost): ended as far as we know.
    Unobserved,
}

pub(super) async fn run(
    link: &Link,
    ctx: &JobContext,
    payload: &DialPayload,
    d: &DialDefaults,
) -> Outcome {
    let plan = plan(ctx, payload, d);
    // Registered before the Originate is written: its events may beat its reply.
    let (_registration, mut events) = link.tracker.register(plan.keys.clone());
    let mut call = Call::new(plan.uniqueid.clone(), Utc::now());
    let sent = link
        .client
        .send_action_with_id(&plan.originate, &plan.uniqueid)
        .await;
    let mut uncertain = None;
    match sent {
        Ok(_) => {}
        Err(AmiError::Refused(message)) => {
            return finish(ctx, &plan, &call, End::Refused(message), Utc::now());
        }
        Err(e @ (AmiError::Timeout(_) | AmiError::ConnectionLost)) => {
            // It may have gone out: never send it again; follow whatever comes.
            tracing::warn!(error = %e, uniqueid = plan.uniqueid, "no reply to the originate; following its events");
            uncertain = Some(e.to_string());
        }
        Err(e @ (AmiError::NotConnected | AmiError::Shutdown)) => {
            return Outcome::failed(format!(
                "dial job: the AMI link is down ({e}); nothing was sent"
            ))
            .retryable();
        }
        Err(e) => return Outcome::failed(format!("dial job: the originate was not sent: {e}")),
    }

    let settle = d.settle;
    let mut phase = Phase::Ringing;
    // Asterisk reports a ring timeout at `ring_timeout`; past that plus slack, the
    // OriginateResponse is not coming.
    let mut deadline = Instant::now() + plan.ring_timeout + d.action_timeout + settle;
    let mut stop_seen = false;
    // A Hangup we must send once the originated leg's channel name is known (a cancel
    // can come before its first event).
    let mut hangup_pending = false;
    let end = loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break End::Unknown("the call tracker stopped".into()) };
                let m = match ev {
                    CallEvent::Event(m) => m,
                    // After a gap, ask Asterisk: a call that ended meanwhile must end
                    // here too, not wait for a Hangup that will never come.
                    CallEvent::Gap | CallEvent::Reconnected => {
                        if still_up(link, &plan.uniqueid).await == Some(false) && !call.is_over() {
                            break End::Unobserved;
                        }
                        continue;
                    }
                };
                let now = Utc::now();
                match call.apply(&m, now) {
                    Step::Answered => {
                        if let Err(e) = ctx.set_established().await {
                            tracing::warn!(error = %e, "could not mark the job established");
                        }
                        if matches!(phase, Phase::Ringing) {
                            phase = Phase::Up;
                            deadline = Instant::now() + plan.max_call;
                        }
                    }
                    Step::Failed if matches!(phase, Phase::Ringing) => {
                        phase = Phase::Settling;
                        deadline = Instant::now() + settle;
                    }
                    _ => {}
                }
                if hangup_pending && call.leg1.channel.is_some() && hang_up(link, &call, &plan).await {
                    hangup_pending = false;
                    deadline = Instant::now() + d.action_timeout + settle;
                }
                if call.is_over() {
                    break End::Call {
                        timed_out: matches!(phase, Phase::HangingUp(Why::MaxCall))
                            .then(|| max_call_reason(&plan)),
                        cancelled: matches!(phase, Phase::HangingUp(Why::Cancelled)),
                    };
                }
            }
            _ = tokio::time::sleep_until(deadline) => match phase {
                Phase::Ringing => {
                    break match uncertain.take() {
                        Some(e) if call.response.is_none() && !call.any_hangup() => End::Unknown(e),
                        _ => End::Call {
                            timed_out: Some(format!(
                                "no OriginateResponse within the ring time ({} ms) and its slack",
                                plan.ring_timeout.as_millis()
                            )),
                            cancelled: false,
                        },
                    };
                }
                Phase::Settling => break End::Call { timed_out: None, cancelled: false },
                Phase::Up => {
                    hangup_pending = !hang_up(link, &call, &plan).await;
                    phase = Phase::HangingUp(Why::MaxCall);
                    deadline = Instant::now() + d.action_timeout + settle;
                }
                Phase::HangingUp(why) => break End::Call {
                    timed_out: (why == Why::MaxCall).then(|| max_call_reason(&plan)),
                    cancelled: why == Why::Cancelled,
                },
            },
            reason = ctx.stopped(), if !stop_seen => {
                stop_seen = true;
                match reason {
                    StopReason::Cancelled => {
                        let sent = hang_up(link, &call, &plan).await;
                        hangup_pending = !sent;
                        phase = Phase::HangingUp(Why::Cancelled);
                        if sent {
                            deadline = Instant::now() + d.action_timeout + settle;
                        }
                        // Else the ring deadline stands: the Hangup goes out as soon as
                        // the channel shows up.
                    }
                    StopReason::Shutdown => {
                        return Outcome::hand_back_for_recovery(format!(
                            "the worker stopped while call {} was in progress",
                            plan.uniqueid
                        ));
                    }
                    StopReason::LeaseLost => return Outcome::stopped(),
                }
            }
        }
    };
    finish(ctx, &plan, &call, end, Utc::now())
}

/// Whether Asterisk still has the call's originated channel (`CoreShowChannels`);
/// `None` when it cannot be asked (the link is down).
async fn still_up(link: &Link, uniqueid: &str) -> Option<bool> {
    let reply = link.client.send_list(&CoreShowChannels).await.ok()?;
    Some(
        reply
            .events
            .iter()
            .any(|e| e.get("Uniqueid") == Some(uniqueid) || e.get("Linkedid") == Some(uniqueid)),
    )
}

fn max_call_reason(plan: &Plan) -> String {
    format!(
        "the call outlasted max_call_ms ({} ms); the worker hung it up",
        plan.max_call.as_millis()
    )
}

/// Sends a Hangup for the originated leg (cause 16, normal clearing). `false` when its
/// channel name is not known yet (no event of the call has come).
async fn hang_up(link: &Link, call: &Call, plan: &Plan) -> bool {
    let Some(channel) = call.leg1.channel.clone() else {
        return false;
    };
    if let Err(e) = link
        .client
        .send_action(&Hangup {
            channel,
            cause: Some(16),
        })
        .await
    {
        tracing::warn!(error = %e, uniqueid = plan.uniqueid, "Hangup action failed");
    }
    true
}

fn finish(ctx: &JobContext, plan: &Plan, call: &Call, end: End, now: DateTime<Utc>) -> Outcome {
    let (cause, cause_txt) = call.cause();
    let disposition = match &end {
        End::Refused(_) | End::Unknown(_) => Disposition::Failed,
        End::Unobserved if call.response.is_none() && call.answered.is_none() => {
            Disposition::Failed
        }
        // Asterisk's record of the originated leg says NO ANSWER when the caller side
        // hung up a ringing call (dialer-cancels-ringing.txt).
        End::Call {
            cancelled: true, ..
        } if call.answered.is_none() => Disposition::NoAnswer,
        End::Call { .. } | End::Unobserved => call.disposition(),
    };
    let reason = call.response.and_then(|r| r.1);
    let ended = call.ended.unwrap_or(now);
    let record = CdrRecord {
        calldate: call.started,
        answer: call.answered,
        end: ended.max(call.started),
        clid: plan.clid.clone(),
        src: plan.src.clone(),
        dst: plan.dst.clone(),
        dcontext: plan.dcontext.clone(),
        channel: call
            .leg1
            .channel
            .clone()
            .unwrap_or_else(|| plan.originate.channel.clone()),
        dstchannel: call.leg2.channel.clone().unwrap_or_default(),
        lastapp: if call.answered.is_some() {
            plan.lastapp.clone()
        } else {
            "AppDial2".into()
        },
        lastdata: if call.answered.is_some() {
            plan.lastdata.clone()
        } else {
            "(Outgoing Line)".into()
        },
        disposition,
        accountcode: plan.accountcode.clone(),
        uniqueid: plan.uniqueid.clone(),
        linkedid: plan.uniqueid.clone(),
        job_id: ctx.id(),
        attempt: ctx.attempt(),
        hangup_cause: cause.and_then(|c| i32::try_from(c).ok()),
        hangup_cause_txt: cause_txt.clone(),
        originate_reason: reason.and_then(|r| i32::try_from(r).ok()),
        worker_id: ctx.worker_id().to_owned(),
    };
    let unobserved = matches!(end, End::Unobserved);
    let result = json!({
        "ended_unobserved": unobserved,
        "uniqueid": plan.uniqueid,
        "channel": record.channel,
        "disposition": disposition.as_str(),
        "duration": record.duration(),
        "billsec": record.billsec(),
        "originate_reason": reason,
        "hangup_cause": cause,
        "hangup_cause_txt": cause_txt,
    });
    let cause_text = || match (cause, &cause_txt) {
        (Some(c), Some(t)) => format!(", cause {c} {t}"),
        (Some(c), None) => format!(", cause {c}"),
        _ => String::new(),
    };
    let outcome = match end {
        End::Refused(message) => Outcome::failed(format!(
            "dial job: Asterisk refused the originate: {message}"
        )),
        End::Unknown(e) => Outcome::failed(format!(
            "dial job: the originate got no reply ({e}) and no event of its call came: it was probably not placed"
        )),
        End::Call {
            cancelled: true, ..
        } => Outcome::stopped(),
        End::Unobserved if call.answered.is_some() => Outcome::finished_empty(),
        End::Unobserved => Outcome::failed(format!(
            "dial job: the call ended while the AMI link was down or events were lost; \
             what Asterisk last said: {}",
            match call.response {
                Some((_, Some(r))) => format!("OriginateResponse reason {r}"),
                Some((_, None)) => "an OriginateResponse".to_owned(),
                None => "nothing".to_owned(),
            }
        )),
        End::Call {
            timed_out: Some(why),
            ..
        } => Outcome::timed_out(format!("dial job: {why}")),
        End::Call {
            timed_out: None, ..
        } => match disposition {
            Disposition::Answered => Outcome::finished_empty(),
            Disposition::NoAnswer if reason == Some(3) => Outcome::timed_out(format!(
                "dial job: no answer within {} ms (Asterisk reason 3{})",
                plan.ring_timeout.as_millis(),
                cause_text()
            )),
            d => {
                let what = match (d, cause) {
                    (Disposition::Busy, _) => "busy",
                    (Disposition::Congestion, _) => "congestion",
                    (Disposition::NoAnswer, Some(21)) => "rejected",
                    (Disposition::NoAnswer, _) => "not answered",
                    _ => "the call failed (channel unavailable or unknown number)",
                };
                Outcome::failed(format!(
                    "dial job: {what} (Asterisk reason {}{})",
                    reason.map_or("none".to_owned(), |r| r.to_string()),
                    cause_text()
                ))
            }
        },
    };
    outcome.with_result(result).with_sql(record.into_hook())
}
