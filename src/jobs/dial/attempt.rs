//! One dial attempt: tag the call, register it, originate, follow its events to the
//! end, and return the outcome with its CDR.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_channel::mpsc::UnboundedReceiver;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::json;
use tokio::time::Instant;

use super::call::{Call, Step};
use super::payload::DialPayload;
use super::tracker::{CallEvent, Listing, TAG_PREFIX};
use super::{DialDefaults, Link};
use crate::ami::AmiError;
use crate::ami::actions::{CoreShowChannels, Hangup, Originate, OriginateTarget};
use crate::cdr::{CdrRecord, Disposition};
use crate::config::TagIn;
use crate::worker::{JobContext, Outcome, StopReason};

/// What the attempt keeps of its call for as long as the call lasts: its tag, waits
/// and CDR fields. Thousands of calls are live at once, so the Originate itself (its
/// variables, target) is not kept once it went out: see [`Placing`].
struct Plan {
    /// ChannelId, ActionID and CallerID-name tag: `dialout-<job>-<lease token>`.
    uniqueid: String,
    /// The Originate's channel: the CDR's until Asterisk names the real one.
    channel: String,
    clid: String,
    src: String,
    dst: String,
    dcontext: String,
    lastapp: String,
    lastdata: String,
    accountcode: String,
    ring_timeout: Duration,
    max_call: Duration,
    /// Per outcome, when to dial again: `[dial.retry]` under the payload's `retry`.
    retry: crate::config::DialRetry,
}

/// What is needed only to place the call.
struct Placing {
    /// Boxed: it waits in the attempt's future across the write before it is sent,
    /// and a value kept across two awaits is laid out for the whole future.
    originate: Box<Originate>,
    /// Keys the tracker matches this call's events by.
    keys: Vec<String>,
}

/// Everything one originate says, worked out before anything is sent.
fn plan(ctx: &JobContext, p: &DialPayload, d: &DialDefaults, uniqueid: String) -> (Plan, Placing) {
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
    let plan = Plan {
        channel: originate.channel.clone(),
        uniqueid,
        clid,
        src: num,
        dst: number.to_owned(),
        dcontext,
        lastapp,
        lastdata,
        accountcode: p.account_code.clone().unwrap_or_default(),
        ring_timeout,
        max_call: p.max_call.unwrap_or(d.max_call),
        retry: p.retry.over(d.retry),
    };
    let originate = Box::new(originate);
    (plan, Placing { originate, keys })
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
    /// A recovery attempt found the earlier call gone: it ended while no worker watched.
    Gone,
}

/// Why following a call stopped before it ended: no CDR yet, since the call goes on
/// and whoever ends it writes it.
enum Interrupted {
    /// The worker is stopping with the call up: back to the queue for recovery.
    HandBack,
    /// Another worker owns the job now: nothing to write.
    LeaseLost,
    /// The Originate got no reply, no event came, and Asterisk cannot be asked: the
    /// call may be up. Back to the queue for recovery, which asks before anything else.
    Unconfirmed,
}

impl Interrupted {
    fn outcome(self, plan: &Plan) -> Outcome {
        match self {
            Interrupted::HandBack => Outcome::hand_back_for_recovery(format!(
                "the worker stopped while call {} was in progress",
                plan.uniqueid
            )),
            Interrupted::Unconfirmed => Outcome::hand_back_for_recovery(format!(
                "no reply to the originate of call {} and Asterisk cannot be asked yet",
                plan.uniqueid
            )),
            Interrupted::LeaseLost => Outcome::stopped(),
        }
    }
}

/// Runs one attempt. The payload is needed only until the Originate is worked out,
/// so it comes boxed and is dropped then: a future of every live call must not hold it.
pub(super) async fn run(
    link: &Link,
    ctx: &JobContext,
    payload: Box<DialPayload>,
    d: &DialDefaults,
) -> Outcome {
    let mut earlier = None;
    if ctx.needs_recovery() {
        // Boxed: rarely taken, and as large as the rest of this future.
        match Box::pin(recover(link, ctx, &payload, d)).await {
            Recovery::Done(outcome) => return outcome,
            Recovery::Dial { lost } => earlier = lost,
        }
    }
    let (plan, placing) = plan(
        ctx,
        &payload,
        d,
        format!("{TAG_PREFIX}{}", ctx.attempt_id()),
    );
    drop(payload);
    // Registered before the Originate is written: its events may beat its reply.
    let (_registration, mut events) = link.tracker.register(placing.keys);
    let mut call = Call::new(plan.uniqueid.clone(), Utc::now());
    // Committed before the call exists, so whoever takes the job over after a crash
    // knows what to look for. A lost lease means another worker owns the job.
    match record_call(ctx, &call).await {
        Ok(true) => {}
        Ok(false) => return Outcome::stopped(),
        Err(e) => {
            return Outcome::failed(format!(
                "dial job: could not record the call before placing it ({e}); nothing was sent"
            ))
            .retryable();
        }
    }
    // The Originate in a block of its own, its reply moved out at once: neither is
    // kept while the call lasts.
    let sent = {
        let originate = placing.originate;
        link.client
            .send_action_with_id(&*originate, &plan.uniqueid)
            .await
    };
    let mut uncertain = None;
    match sent {
        Ok(reply) => drop(reply),
        Err(AmiError::Refused(message)) => {
            return finish(
                link,
                ctx,
                &plan,
                &call,
                End::Refused(message),
                Utc::now(),
                earlier,
            );
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
    let deadline = ring_deadline(&plan, d);
    let end = follow(
        link,
        ctx,
        &plan,
        d,
        &mut call,
        &mut events,
        Phase::Ringing,
        deadline,
        uncertain,
    )
    .await;
    match end {
        Ok(end) => finish(link, ctx, &plan, &call, end, Utc::now(), earlier),
        Err(interrupted) => interrupted.outcome(&plan),
    }
}

/// Writes the call's tag and start into the job's row, fenced by the lease.
/// `Ok(false)`: the lease is lost.
async fn record_call(ctx: &JobContext, call: &Call) -> Result<bool, sqlx::Error> {
    let lease = ctx.lease();
    let done = sqlx::query(
        "UPDATE dialout_queue SET call_uniqueid = $3, call_started_at = $4, \
             call_answered_at = NULL, dedup_key = dedup_key \
         WHERE id = $1 AND lease_token = $2",
    )
    .bind(lease.id)
    .bind(lease.token)
    .bind(&call.uniqueid)
    .bind(call.started)
    .execute(ctx.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks the job `established` and keeps the answer time in its row (for a worker
/// that adopts the call later), in one statement. Boxed, like [`hang_up`]: awaited
/// once or never, it would otherwise widen the future of every live call.
fn record_answer<'a>(ctx: &'a JobContext, call: &'a Call) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        if let Err(e) = ctx.set_established(call.answered).await {
            tracing::warn!(error = %e, "could not mark the job established");
        }
    })
}

/// When a ringing call's OriginateResponse is no longer coming: Asterisk reports a ring
/// timeout at `ring_timeout`; past that plus slack, it will not.
fn ring_deadline(plan: &Plan, d: &DialDefaults) -> Instant {
    Instant::now() + plan.ring_timeout + d.action_timeout + d.settle
}

/// A call Asterisk lists as up although no event said it was answered: answered now
/// (its answer time is not known better), and recorded in the row.
async fn answered_meanwhile(ctx: &JobContext, call: &mut Call) {
    call.response = Some((true, Some(4)));
    call.answered = Some(Utc::now());
    record_answer(ctx, call).await;
}

/// What the job's row says of the call an earlier attempt placed: its tag, start and
/// answer.
type EarlierCall = (Option<String>, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// What a recovery attempt found.
enum Recovery {
    /// The earlier call was adopted and followed, or ended the job.
    Done(Outcome),
    /// Dial (again): no earlier call was placed, or it is gone and the payload says
    /// `redial_if_lost` (`lost`: its CDR, written with this attempt's).
    Dial { lost: Option<Box<CdrRecord>> },
}

/// A recovery attempt: an earlier attempt of this job was cut off (its worker vanished
/// or stopped mid-call). Asks Asterisk whether that call is still up: adopts and
/// follows it if so; if it ended unwatched, ends the job with what is known, unless the
/// payload says `redial_if_lost`.
async fn recover(
    link: &Link,
    ctx: &JobContext,
    payload: &DialPayload,
    d: &DialDefaults,
) -> Recovery {
    let row: Result<EarlierCall, _> = sqlx::query_as(
        "SELECT call_uniqueid, call_started_at, call_answered_at FROM dialout_queue WHERE id = $1",
    )
    .bind(ctx.id())
    .fetch_one(ctx.pool())
    .await;
    let (uniqueid, started, answered) = match row {
        Ok((Some(u), started, answered)) => (u, started, answered),
        // The earlier attempt never placed a call.
        Ok((None, _, _)) => return Recovery::Dial { lost: None },
        Err(e) => {
            return Recovery::Done(
                Outcome::failed(format!("dial job: could not read the earlier call ({e})"))
                    .retryable(),
            );
        }
    };
    let (plan, _) = plan(ctx, payload, d, uniqueid.clone());
    // Registered before asking, so an end that comes right after the listing is seen.
    let (_registration, mut events) = link.tracker.register(vec![uniqueid.clone()]);
    let mut call = Call::new(uniqueid.clone(), started.unwrap_or_else(Utc::now));
    call.answered = answered;
    let Some(listed) = channel_of(link, &uniqueid).await else {
        return Recovery::Done(
            Outcome::failed(
                "dial job: cannot ask Asterisk whether the earlier call is still up (AMI link down)",
            )
            .retryable(),
        );
    };
    let Some((channel, up)) = listed else {
        if payload.redial_if_lost {
            tracing::info!(
                uniqueid,
                "the earlier call is gone; dialling again (redial_if_lost)"
            );
            let disposition = lost_disposition(&call);
            let lost = cdr_record(ctx, &plan, &call, disposition, Utc::now());
            return Recovery::Dial {
                lost: Some(Box::new(lost)),
            };
        }
        return Recovery::Done(finish(link, ctx, &plan, &call, End::Gone, Utc::now(), None));
    };
    tracing::info!(
        uniqueid,
        channel,
        "adopting a call an earlier attempt placed"
    );
    call.leg1.channel = Some(channel);
    if up && call.answered.is_none() {
        // Answered while nobody watched: the answer time is not known better than now.
        call.answered = Some(Utc::now());
    }
    if call.answered.is_some() {
        call.response = Some((true, Some(4)));
        record_answer(ctx, &call).await;
    }
    let (phase, deadline) = match call.answered {
        Some(at) => {
            let left =
                (at + chrono::Duration::from_std(plan.max_call).unwrap_or_default()) - Utc::now();
            (
                Phase::Up,
                Instant::now() + left.to_std().unwrap_or_default(),
            )
        }
        None => (Phase::Ringing, ring_deadline(&plan, d)),
    };
    let end = follow(
        link,
        ctx,
        &plan,
        d,
        &mut call,
        &mut events,
        phase,
        deadline,
        None,
    )
    .await;
    Recovery::Done(match end {
        Ok(end) => finish(link, ctx, &plan, &call, end, Utc::now(), None),
        Err(interrupted) => interrupted.outcome(&plan),
    })
}

/// A call that ended unwatched: answered if its answer was recorded, else failed (its
/// real outcome is not known).
fn lost_disposition(call: &Call) -> Disposition {
    if call.answered.is_some() {
        Disposition::Answered
    } else {
        Disposition::Failed
    }
}

/// Follows a call from `phase` until it ends, the job is stopped, or a wait runs out.
#[allow(clippy::too_many_arguments)]
async fn follow(
    link: &Link,
    ctx: &JobContext,
    plan: &Plan,
    d: &DialDefaults,
    call: &mut Call,
    events: &mut UnboundedReceiver<CallEvent>,
    mut phase: Phase,
    mut deadline: Instant,
    mut uncertain: Option<String>,
) -> Result<End, Interrupted> {
    let settle = d.settle;
    let mut stop_seen = false;
    // A Hangup we must send once the originated leg's channel name is known (a cancel
    // can come before its first event).
    let mut hangup_pending = false;
    let end = loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { break End::Unknown("the call tracker stopped".into()) };
                let m = match ev {
                    CallEvent::Event(m) => m,
                    // After a gap: a call that ended meanwhile ends here too, rather
                    // than wait for a Hangup that will never come; one answered
                    // meanwhile is answered here too. A call with no event yet may
                    // just not exist in Asterisk so far: it waits.
                    CallEvent::Listed(listing) => {
                        match listing.get(&plan.uniqueid) {
                            None => {
                                let seen = call.leg1.channel.is_some() || call.response.is_some();
                                if seen && !call.is_over() {
                                    break End::Unobserved;
                                }
                            }
                            Some((channel, true)) if call.answered.is_none() => {
                                call.leg1.channel.get_or_insert_with(|| channel.to_owned());
                                answered_meanwhile(ctx, call).await;
                                if matches!(phase, Phase::Ringing) {
                                    phase = Phase::Up;
                                    deadline = Instant::now() + plan.max_call;
                                }
                            }
                            Some((channel, _)) => {
                                call.leg1.channel.get_or_insert_with(|| channel.to_owned());
                            }
                        }
                        continue;
                    }
                };
                let now = Utc::now();
                match call.apply(&m, now) {
                    Step::Answered => {
                        record_answer(ctx, call).await;
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
                if hangup_pending && call.leg1.channel.is_some() && hang_up(link, call, plan).await {
                    hangup_pending = false;
                    deadline = Instant::now() + d.action_timeout + settle;
                }
                if call.is_over() {
                    break End::Call {
                        timed_out: matches!(phase, Phase::HangingUp(Why::MaxCall))
                            .then(|| max_call_reason(plan)),
                        cancelled: matches!(phase, Phase::HangingUp(Why::Cancelled)),
                    };
                }
            }
            _ = tokio::time::sleep_until(deadline) => match phase {
                Phase::Ringing => {
                    break match uncertain.take() {
                        Some(e) if call.response.is_none() && !call.any_hangup() => {
                            // Neither a reply nor an event: ask Asterisk before deciding
                            // the Originate never went out.
                            match channel_of(link, &plan.uniqueid).await {
                                Some(Some((channel, up))) => {
                                    tracing::info!(uniqueid = plan.uniqueid, channel, "the unanswered originate placed its call after all; following it");
                                    call.leg1.channel = Some(channel);
                                    if up {
                                        answered_meanwhile(ctx, call).await;
                                        phase = Phase::Up;
                                        deadline = Instant::now() + plan.max_call;
                                    } else {
                                        deadline = ring_deadline(plan, d);
                                    }
                                    continue;
                                }
                                Some(None) => End::Unknown(format!("{e}; Asterisk lists no such call")),
                                // The call may be up with nobody watching: the next
                                // attempt asks again (its tag is in the row) before
                                // anything else.
                                None => return Err(Interrupted::Unconfirmed),
                            }
                        }
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
                    hangup_pending = !hang_up(link, call, plan).await;
                    phase = Phase::HangingUp(Why::MaxCall);
                    deadline = Instant::now() + d.action_timeout + settle;
                }
                Phase::HangingUp(why) => break End::Call {
                    timed_out: (why == Why::MaxCall).then(|| max_call_reason(plan)),
                    cancelled: why == Why::Cancelled,
                },
            },
            reason = ctx.stopped(), if !stop_seen => {
                stop_seen = true;
                match reason {
                    StopReason::Cancelled => {
                        let sent = hang_up(link, call, plan).await;
                        hangup_pending = !sent;
                        phase = Phase::HangingUp(Why::Cancelled);
                        if sent {
                            deadline = Instant::now() + d.action_timeout + settle;
                        }
                        // Else the ring deadline stands: the Hangup goes out as soon as
                        // the channel shows up.
                    }
                    StopReason::Shutdown => return Err(Interrupted::HandBack),
                    StopReason::LeaseLost => return Err(Interrupted::LeaseLost),
                }
            }
        }
    };
    Ok(end)
}

/// The call's originated channel as Asterisk lists it (`CoreShowChannels`): its name
/// and whether it is answered (state Up). `None` when Asterisk cannot be asked;
/// `Some(None)` when it has no such channel.
async fn channel_of(link: &Link, uniqueid: &str) -> Option<Option<(String, bool)>> {
    let reply = link.client.send_list(&CoreShowChannels).await.ok()?;
    let listing = Listing::from_events(&reply.events);
    Some(
        listing
            .get(uniqueid)
            .map(|(name, up)| (name.to_owned(), up)),
    )
}

fn max_call_reason(plan: &Plan) -> String {
    format!(
        "the call outlasted max_call_ms ({} ms); the worker hung it up",
        plan.max_call.as_millis()
    )
}

/// Sends a Hangup for the originated leg (cause 16, normal clearing). `false` when its
/// channel name is not known yet (no event of the call has come). Boxed: rarely
/// awaited (max_call_ms, a cancel), so it is not part of every live call's future.
fn hang_up<'a>(link: &'a Link, call: &'a Call, plan: &'a Plan) -> BoxFuture<'a, bool> {
    Box::pin(hang_up_now(link, call, plan))
}

async fn hang_up_now(link: &Link, call: &Call, plan: &Plan) -> bool {
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

/// The call's CDR as far as `call` knows it, ended at `now` if no end was seen.
fn cdr_record(
    ctx: &JobContext,
    plan: &Plan,
    call: &Call,
    disposition: Disposition,
    now: DateTime<Utc>,
) -> CdrRecord {
    let (cause, cause_txt) = call.cause();
    let reason = call.response.and_then(|r| r.1);
    let ended = call.ended.unwrap_or(now);
    CdrRecord {
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
            .unwrap_or_else(|| plan.channel.clone()),
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
    }
}

fn finish(
    link: &Link,
    ctx: &JobContext,
    plan: &Plan,
    call: &Call,
    end: End,
    now: DateTime<Utc>,
    earlier: Option<Box<CdrRecord>>,
) -> Outcome {
    let (cause, cause_txt) = call.cause();
    let disposition = match &end {
        End::Refused(_) | End::Unknown(_) => Disposition::Failed,
        End::Gone => lost_disposition(call),
        End::Unobserved if call.answered.is_none() => Disposition::Failed,
        // Asterisk's record of the originated leg says NO ANSWER when the caller side
        // hung up a ringing call (dialer-cancels-ringing.txt).
        End::Call {
            cancelled: true, ..
        } if call.answered.is_none() => Disposition::NoAnswer,
        End::Call { .. } | End::Unobserved => call.disposition(),
    };
    let reason = call.response.and_then(|r| r.1);
    let record = cdr_record(ctx, plan, call, disposition, now);
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
        End::Gone => Outcome::failed(format!(
            "dial job: the call ended while no worker watched it (the attempt that placed it was cut off{}); \
             not dialled again (set \"redial_if_lost\": true for that)",
            if call.answered.is_some() {
                " after the answer"
            } else {
                ""
            }
        )),
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
        } => {
            let retry = plan.retry;
            let (outcome, wait_ms) = match disposition {
                Disposition::Answered => (Outcome::finished_empty(), 0),
                Disposition::NoAnswer if reason == Some(3) => (
                    Outcome::timed_out(format!(
                        "dial job: no answer within {} ms (Asterisk reason 3{})",
                        plan.ring_timeout.as_millis(),
                        cause_text()
                    )),
                    retry.no_answer_ms,
                ),
                d => {
                    let (what, wait_ms) = match (d, cause) {
                        (Disposition::Busy, _) => ("busy", retry.busy_ms),
                        (Disposition::Congestion, _) => ("congestion", retry.congestion_ms),
                        (Disposition::NoAnswer, Some(21)) => ("rejected", retry.rejected_ms),
                        (Disposition::NoAnswer, _) => ("not answered", retry.no_answer_ms),
                        _ => (
                            "the call failed (channel unavailable or unknown number)",
                            retry.failed_ms,
                        ),
                    };
                    let outcome = Outcome::failed(format!(
                        "dial job: {what} (Asterisk reason {}{})",
                        reason.map_or("none".to_owned(), |r| r.to_string()),
                        cause_text()
                    ));
                    (outcome, wait_ms)
                }
            };
            // `[dial.retry]` / the payload's `retry`: dial again later, within
            // max_attempts (the worker's retry policy counts them).
            if wait_ms > 0 {
                outcome.retry_after(Duration::from_millis(wait_ms))
            } else {
                outcome
            }
        }
    };
    let records: Vec<CdrRecord> = earlier
        .map(|b| *b)
        .into_iter()
        .chain(std::iter::once(record))
        .collect();
    let written: Vec<Disposition> = records.iter().map(|r| r.disposition).collect();
    let metrics = link.metrics.clone();
    outcome
        .with_result(result)
        .with_sql(CdrRecord::hook(records))
        .on_recorded(move || {
            for disposition in written {
                metrics.call_recorded(disposition);
            }
        })
}
