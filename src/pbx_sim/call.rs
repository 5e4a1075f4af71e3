//! One simulated call: picks a template, fills it in, plays its phases on time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::SeedableRng;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::SimState;
use super::render::{self, Parsed, Vars};
use super::scenario::{CallOutcome, outcome_for_channel};
use super::session::response;
use crate::ami::message::Message;

/// What `CoreShowChannels`/`Status` report for one leg, kept from the call's own
/// Newchannel, Newexten and Newstate events as they are sent.
#[derive(Debug, Clone, Default)]
pub(crate) struct Leg {
    pub state: String,
    pub desc: String,
    pub context: String,
    pub exten: String,
    pub priority: String,
    pub app: String,
    pub data: String,
}

pub(crate) struct CallHandle {
    pub chan1: String,
    pub chan2: String,
    pub uid1: String,
    pub uid2: String,
    pub num: String,
    pub name: String,
    pub started: Instant,
    pub answered: AtomicBool,
    pub cancel: CancellationToken,
    /// `;1` and `;2` as their last events left them.
    pub legs: Mutex<[Leg; 2]>,
    /// Set by `Action: Hangup` before `cancel`: the leg (0 = `;1`) and the Cause sent.
    hangup: Mutex<Option<(usize, Option<u32>)>>,
}

struct Plan {
    parsed: &'static Parsed,
    /// Scaled start of each phase, from the Originate.
    phases: Vec<Duration>,
    /// First phase in which the call is up (answered), if it ever is.
    answered_from: Option<usize>,
    vars: Vars,
    has_channels: bool,
    drop_origin_after: Option<Duration>,
}

fn wall_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A parsed Originate `CallerID` (Asterisk's `ast_callerid_parse`): number and name, either
/// possibly absent.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct CallerId {
    pub num: Option<String>,
    pub name: Option<String>,
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    let Some(inner) = s.strip_prefix('"').and_then(|x| x.strip_suffix('"')) else {
        return s.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut it = inner.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            if let Some(n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `"Name" <num>`, `Name <num>`, `"Name"`, `num`, `Name` or nothing.
pub(super) fn parse_caller_id(cid: &str) -> CallerId {
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    let c = cid.trim();
    if let (Some(a), Some(b)) = (c.rfind('<'), c.rfind('>'))
        && a < b
    {
        return CallerId {
            num: nonempty(c[a + 1..b].trim().to_owned()),
            name: nonempty(unquote(&c[..a])),
        };
    }
    let is_number = !c.is_empty()
        && c.bytes().all(|b| {
            b.is_ascii_digit() || matches!(b, b'+' | b'*' | b'#' | b'-' | b'(' | b')' | b' ')
        });
    if is_number {
        CallerId {
            num: Some(c.to_owned()),
            name: None,
        }
    } else {
        CallerId {
            num: None,
            name: nonempty(unquote(c)),
        }
    }
}

/// Channel events show the name C-escaped (`O\"Brien`).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            _ => out.push(c),
        }
    }
    out
}

fn cid_vars(v: &mut Vars, cid: &CallerId) {
    let unknown = || "<unknown>".to_owned();
    let num = cid.num.clone().unwrap_or_default();
    let raw = cid.name.clone().unwrap_or_default();
    v.num = cid.num.clone().unwrap_or_else(unknown);
    v.name = cid.name.as_deref().map(escape).unwrap_or_else(unknown);
    v.raw_name = cid.name.clone().unwrap_or_else(unknown);
    v.cid_all = format!("\"{raw}\" <{num}>");
    v.cdr_cid = format!("\"{}\" <{num}>", escape(&raw));
    v.src = num;
}

fn plan(
    state: &SimState,
    m: &Message,
    outcome: &CallOutcome,
    identity: Option<(String, String, Option<String>)>,
) -> Plan {
    let req = m.get("Channel").unwrap_or("").to_owned();
    let (exten, ctx) = req
        .split_once('/')
        .map(|(_, d)| d.split_once('@').unwrap_or((d, "default")))
        .map(|(e, c)| (e.to_owned(), c.to_owned()))
        .unwrap_or_default();
    let seq = state.chan_seq.fetch_add(1, Ordering::Relaxed);
    let chan = format!("{req}-{seq:08x}");
    let noise = identity.is_some();
    let (cid, action_id) = match identity {
        Some((num, name, aid)) => (
            CallerId {
                num: Some(num),
                name: Some(name),
            },
            aid,
        ),
        None => (
            parse_caller_id(m.get("CallerID").unwrap_or("")),
            m.action_id().map(str::to_owned),
        ),
    };
    let variables: Vec<(String, String)> = m
        .get_all("Variable")
        .flat_map(|v| v.split(','))
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    let job = variables
        .iter()
        .find(|(k, _)| k == "DIALER_JOB_ID")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    // Noise calls (an identity given) never take this call's ChannelId.
    let ids = |k: &str| m.get(k).filter(|_| !noise).map(str::to_owned);
    let channel_id = ids("ChannelId");
    let other_id = ids("OtherChannelId");
    let mut outcome = outcome.clone();
    let has_channels = !matches!(outcome, CallOutcome::InvalidTech);
    let (uid1, uid2) = match (&channel_id, &other_id) {
        (Some(a), Some(b)) => (a.clone(), b.clone()),
        (Some(a), None) => (a.clone(), format!("{a};2")),
        (None, _) if has_channels => (state.next_uid(), state.next_uid()),
        // A failed Originate with no channel reports the literal `<unknown>`.
        (None, _) => ("<unknown>".into(), String::new()),
    };
    let failuid = channel_id.clone().unwrap_or_else(|| "<unknown>".into());
    let start = render::format_time(wall_secs());
    let application = m.get("Application").map(str::to_owned);
    let mut vars = Vars {
        failuid,
        chan,
        req,
        exten,
        ctx,
        uid1,
        uid2,
        action_id,
        lctx: m.get("Context").unwrap_or("").to_owned(),
        lexten: m.get("Exten").unwrap_or("").to_owned(),
        lapp: application.clone().unwrap_or_default(),
        ldata: m.get("Data").unwrap_or("").to_owned(),
        job,
        variables,
        start: start.clone(),
        answered: start.clone(),
        end: start,
        dur: "0".into(),
        bill: "0".into(),
        ..Vars::default()
    };
    cid_vars(&mut vars, &cid);
    let ms = |x: u64| state.scaled(Duration::from_millis(x));
    let sc = |d: Duration| state.scaled(d);
    let timeout_ms = m
        .get("Timeout")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(30_000);
    let timeout = Duration::from_millis(timeout_ms);
    // Ringing longer than the Originate Timeout is a no answer, whatever came later.
    match &outcome {
        CallOutcome::SlowAnswer { ring, .. } | CallOutcome::Reject { ring } if *ring >= timeout => {
            outcome = CallOutcome::NoAnswer;
        }
        _ => {}
    }
    let hangup_now = vars.lexten == "hangup-now" && application.is_none();
    let (parsed, phases, answered_from, drop_origin_after) = match &outcome {
        CallOutcome::Answer { .. } | CallOutcome::LongAnswer { .. } if hangup_now => (
            render::landing_hangs_up(),
            vec![Duration::ZERO],
            Some(0),
            None,
        ),
        CallOutcome::Answer { hangup_after } | CallOutcome::LongAnswer { hangup_after }
            if application.is_some() =>
        {
            // The application runs to its end (Wait's seconds), then the call ends with
            // cause 0 (probe-application.txt); other applications last as long as the callee.
            let h = sc(*hangup_after);
            let end = match (application.as_deref(), vars.ldata.trim().parse::<f64>()) {
                (Some(a), Ok(secs)) if a.eq_ignore_ascii_case("Wait") && secs >= 0.0 => {
                    sc(Duration::from_secs_f64(secs))
                }
                _ => h,
            };
            (
                render::application(),
                vec![Duration::ZERO, end.min(ms(503)), end],
                Some(0),
                None,
            )
        }
        CallOutcome::Answer { hangup_after } => {
            let h = sc(*hangup_after);
            (
                render::answer(),
                vec![Duration::ZERO, h.min(ms(502)), h],
                Some(0),
                None,
            )
        }
        CallOutcome::LongAnswer { hangup_after } => {
            let h = sc(*hangup_after);
            (
                render::long_answer(),
                vec![Duration::ZERO, h.min(ms(501)), h],
                Some(0),
                None,
            )
        }
        CallOutcome::DropConnection { after } => (
            render::answer(),
            vec![Duration::ZERO, ms(502), ms(60_000)],
            Some(0),
            Some(sc(*after)),
        ),
        CallOutcome::SlowAnswer { ring, hangup_after } => {
            let (r, h) = (sc(*ring), sc(*hangup_after));
            (
                render::slow_answer(),
                vec![Duration::ZERO, r, r + h.min(ms(501)), r + h],
                Some(1),
                None,
            )
        }
        CallOutcome::Busy => (render::busy(), vec![Duration::ZERO], None, None),
        CallOutcome::Congestion => (render::congestion(), vec![Duration::ZERO], None, None),
        CallOutcome::NoAnswer => (
            render::noanswer(),
            vec![Duration::ZERO, sc(timeout)],
            None,
            None,
        ),
        CallOutcome::Reject { ring } => (
            render::reject(),
            vec![Duration::ZERO, sc(*ring)],
            None,
            None,
        ),
        CallOutcome::Nonexistent => (render::nonexistent(), vec![Duration::ZERO], None, None),
        CallOutcome::InvalidTech => (render::invalid_tech(), vec![Duration::ZERO], None, None),
    };
    Plan {
        parsed,
        phases,
        answered_from,
        vars,
        has_channels,
        drop_origin_after,
    }
}

/// Handles `Action: Originate` for session `origin`.
pub(super) async fn originate(
    state: &Arc<SimState>,
    origin: u64,
    tx: &super::session::Outbox,
    m: &Message,
) {
    let aid = m.action_id();
    let channel = m.get("Channel").unwrap_or("");
    if !channel.contains('/') {
        tx.send(response("Error", aid, &[("Message", "Invalid channel")]));
        return;
    }
    let landing_ok = m.get("Application").is_some()
        || (m.get("Context") == Some("originated")
            && matches!(m.get("Exten"), Some("s" | "hangup-now")));
    // While booting the dialplan is not loaded yet, so no landing exists.
    let booting = !state.is_booted();
    if booting {
        state.originates_booting.fetch_add(1, Ordering::Relaxed);
    }
    if !landing_ok || booting {
        tx.send(response(
            "Error",
            aid,
            &[("Message", "Extension does not exist.")],
        ));
        return;
    }
    let is_async = m
        .get("Async")
        .is_some_and(|a| matches!(a.to_ascii_lowercase().as_str(), "true" | "yes" | "1"));
    let outcome = outcome_for_channel(&state.cfg.scenario_channel(channel));
    let mut p = plan(state, m, &outcome, None);
    let h = register(state, &mut p);
    if is_async {
        let queued = response(
            "Success",
            aid,
            &[("Message", "Originate successfully queued")],
        );
        if state.cfg.faults.lose_originate_reply {
            tokio::spawn(run(state.clone(), p, h, origin, None, None));
        } else if state.cfg.faults.response_after_events {
            // The call's task queues the reply after its first phase (fact 16).
            tokio::spawn(run(
                state.clone(),
                p,
                h,
                origin,
                None,
                Some((tx.clone(), queued)),
            ));
        } else {
            // The Response is queued before any event of the call, as in the single-call captures.
            tx.send(queued);
            tokio::spawn(run(state.clone(), p, h, origin, None, None));
        }
    } else {
        // Async: false blocks this session until the outcome (answer-sync.txt).
        let (otx, orx) = oneshot::channel();
        tokio::spawn(run(state.clone(), p, h, origin, Some(otx), None));
        let ok = orx.await.unwrap_or(false);
        let r = if ok {
            response(
                "Success",
                aid,
                &[("Message", "Originate successfully queued")],
            )
        } else {
            response("Error", aid, &[("Message", "Originate failed")])
        };
        tx.send(r);
    }
    for _ in 0..state.cfg.faults.noise_calls {
        let n = state.noise_seq.fetch_add(1, Ordering::Relaxed);
        let identity = (
            format!("777{n:03}"),
            format!("OTHER777{n:03}"),
            Some(format!("other-client-{n}")),
        );
        let mut p = plan(state, m, &outcome, Some(identity));
        let h = register(state, &mut p);
        tokio::spawn(run(state.clone(), p, h, 0, None, None));
    }
}

/// Registers the call's channels before its task starts, so the next Originate (even one
/// already read) sees them. A uniqueid still in use by a live call turns the plan into
/// Asterisk's immediate failure (Failure 0, `Uniqueid:` the reused id, no channels:
/// channelid-duplicate.txt), checked and inserted under one lock.
fn register(state: &SimState, p: &mut Plan) -> Option<Arc<CallHandle>> {
    if !p.has_channels {
        return None;
    }
    let Ok(mut g) = state.calls.lock() else {
        return None;
    };
    let in_use = |uid: &str| g.values().any(|c| c.uid1 == uid || c.uid2 == uid);
    if in_use(&p.vars.uid1) || in_use(&p.vars.uid2) {
        p.parsed = render::invalid_tech();
        p.phases = vec![Duration::ZERO];
        p.answered_from = None;
        p.has_channels = false;
        p.drop_origin_after = None;
        return None;
    }
    let h = Arc::new(CallHandle {
        chan1: format!("{};1", p.vars.chan),
        chan2: format!("{};2", p.vars.chan),
        uid1: p.vars.uid1.clone(),
        uid2: p.vars.uid2.clone(),
        num: p.vars.num.clone(),
        name: p.vars.name.clone(),
        started: Instant::now(),
        answered: AtomicBool::new(false),
        cancel: CancellationToken::new(),
        legs: Mutex::new(Default::default()),
        hangup: Mutex::new(None),
    });
    // Both channel names point at the call; only the `;1` entry counts it.
    g.insert(h.chan1.clone(), h.clone());
    g.insert(h.chan2.clone(), h.clone());
    state.peak_live.fetch_max(g.len() / 2, Ordering::Relaxed);
    Some(h)
}

fn unregister(state: &SimState, h: &CallHandle) {
    if let Ok(mut g) = state.calls.lock() {
        g.remove(&h.chan1);
        g.remove(&h.chan2);
    }
    state.processed.fetch_add(1, Ordering::Relaxed);
    state.call_ended.notify_waiters();
}

/// Ends a live call as a dialer-side `Action: Hangup` does, with its `Cause` if it had one.
/// False if no such channel.
pub(super) fn hangup(state: &SimState, channel: &str, cause: Option<u32>) -> bool {
    let h = state
        .calls
        .lock()
        .ok()
        .and_then(|g| g.get(channel).cloned());
    match h {
        Some(h) => {
            let leg = usize::from(channel == h.chan2);
            if let Ok(mut g) = h.hangup.lock() {
                g.get_or_insert((leg, cause));
            }
            h.cancel.cancel();
            true
        }
        None => false,
    }
}

/// Asterisk's text for a Q.850 cause (`Cause-txt`).
fn cause_text(cause: u32) -> &'static str {
    match cause {
        1 => "Unallocated (unassigned) number",
        3 => "No route to destination",
        16 => "Normal Clearing",
        17 => "User busy",
        18 => "No user responding",
        19 => "User alerting, no answer",
        21 => "Call Rejected",
        27 => "Destination out of order",
        28 => "Invalid number format (addr incomplete)",
        31 => "Normal, unspecified",
        34 => "Circuit/channel congestion",
        38 => "Network out of order",
        41 => "Temporary failure",
        42 => "Switching equipment congestion",
        _ => "Unknown",
    }
}

/// The Cdr disposition of an unanswered channel hung up with `cause` (cdr.c's
/// `cdr_object_set_disposition`; the lab has `congestion = yes`), or None to keep it.
fn cause_disposition(cause: u32) -> Option<&'static str> {
    match cause {
        17 => Some("BUSY"),
        34 => Some("CONGESTION"),
        3 | 20 => Some("FAILED"),
        16 | 19 => Some("NO ANSWER"),
        _ => None,
    }
}

/// Rewrites a hangup tail for the `Cause` of the Hangup action: every Hangup and
/// HangupRequest carries it (SoftHangupRequest's Cause is an internal flag and stays), and an
/// unanswered Cdr's disposition follows it (probe-hangup-cause.txt, probe-hangup-ringing-leg2.txt).
fn apply_cause(name: &str, text: String, cause: u32) -> String {
    if !matches!(name, "Hangup" | "HangupRequest" | "Cdr") {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive("\r\n") {
        let l = line.trim_end_matches("\r\n");
        let new = match name {
            "Hangup" | "HangupRequest" if l.starts_with("Cause: ") => {
                Some(format!("Cause: {cause}"))
            }
            "Hangup" if l.starts_with("Cause-txt: ") => {
                Some(format!("Cause-txt: {}", cause_text(cause)))
            }
            "Cdr" if l.starts_with("Disposition: ") && l != "Disposition: ANSWERED" => {
                cause_disposition(cause).map(|d| format!("Disposition: {d}"))
            }
            _ => None,
        };
        match new {
            Some(n) => {
                out.push_str(&n);
                out.push_str("\r\n");
            }
            None => out.push_str(line),
        }
    }
    out
}

/// How a call ended early.
enum Cut {
    /// `Action: Hangup` on a leg, with its Cause.
    Hangup(usize, Option<u32>),
    /// `core stop now`.
    StopNow,
}

async fn run(
    state: Arc<SimState>,
    mut p: Plan,
    handle: Option<Arc<CallHandle>>,
    origin: u64,
    sync_reply: Option<oneshot::Sender<bool>>,
    mut reply_after: Option<(super::session::Outbox, Bytes)>,
) {
    let t0 = tokio::time::Instant::now();
    let mut clock = CdrClock {
        wall0: wall_secs(),
        start: Instant::now(),
        answered: None,
    };
    let mut sync_reply = sync_reply;
    let mut rng = state.cfg.faults.vary_order.map(|seed| {
        let n = state.vary_seq.fetch_add(1, Ordering::Relaxed);
        rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
    });
    if let Some(after) = p.drop_origin_after {
        let st = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            st.kill_session(origin);
        });
    }
    let cancel = handle
        .as_ref()
        .map(|h| h.cancel.clone())
        .unwrap_or_default();
    let nphases = p.phases.len();
    for phase in 0..nphases {
        let at = t0 + p.phases[phase];
        let cut = tokio::select! {
            _ = tokio::time::sleep_until(at) => None,
            _ = cancel.cancelled() => {
                let (leg, cause) = handle
                    .as_ref()
                    .and_then(|h| h.hangup.lock().ok().and_then(|g| *g))
                    .unwrap_or((0, None));
                Some(Cut::Hangup(leg, cause))
            }
            _ = state.stop_now.cancelled(), if handle.is_some() => Some(Cut::StopNow),
            _ = state.shutdown.cancelled() => return,
        };
        if let Some(cut) = cut {
            let up = p.answered_from.is_some_and(|a| phase > a);
            let (tail, cause) = match cut {
                Cut::StopNow if up => (render::shutdown_now(), None),
                // Not captured: a stop while ringing ends like a dialer hangup, cause 0.
                Cut::StopNow => (render::cancel_ringing(), None),
                Cut::Hangup(_, cause) if up => (render::cancel_answered(), cause),
                Cut::Hangup(1, Some(cause)) => (render::hangup_ringing_leg2(), Some(cause)),
                Cut::Hangup(_, cause) => (render::cancel_ringing(), cause),
            };
            let ctx = Emit {
                state: &state,
                handle: handle.as_deref(),
                cause,
                rng: rng.as_mut(),
            };
            ctx.emit(&mut p.vars, tail, 0, &clock, &mut sync_reply);
            if let Some((tx, r)) = reply_after.take() {
                tx.send(r);
            }
            if let Some(h) = &handle {
                unregister(&state, h);
            }
            return;
        }
        if p.answered_from == Some(phase) {
            clock.answered = Some((wall_secs(), Instant::now()));
            if let Some(h) = &handle {
                h.answered.store(true, Ordering::Relaxed);
            }
        }
        let parsed = p.parsed;
        let ctx = Emit {
            state: &state,
            handle: handle.as_deref(),
            cause: None,
            rng: rng.as_mut(),
        };
        ctx.emit(&mut p.vars, parsed, phase, &clock, &mut sync_reply);
        if let Some((tx, r)) = reply_after.take() {
            tx.send(r);
        }
    }
    if let Some(h) = &handle {
        unregister(&state, h);
    }
}

/// The times a Cdr is computed from.
struct CdrClock {
    wall0: u64,
    start: Instant,
    answered: Option<(u64, Instant)>,
}

struct Emit<'a> {
    state: &'a SimState,
    handle: Option<&'a CallHandle>,
    /// The Cause of a dialer's Hangup action, applied to the tail.
    cause: Option<u32>,
    rng: Option<&'a mut rand::rngs::StdRng>,
}

impl Emit<'_> {
    /// Renders and broadcasts the events of one phase, applying the configured faults.
    fn emit(
        self,
        vars: &mut Vars,
        parsed: &Parsed,
        phase: usize,
        clock: &CdrClock,
        sync_reply: &mut Option<oneshot::Sender<bool>>,
    ) {
        let state = self.state;
        let now = Instant::now();
        let elapsed = now.duration_since(clock.start);
        // Asterisk truncates: floor((end - start) ms / 1000).
        let end_wall = clock.wall0 + elapsed.as_secs();
        vars.end = render::format_time(end_wall);
        vars.dur = elapsed.as_secs().to_string();
        vars.answered = render::format_time(clock.answered.map_or(clock.wall0, |a| a.0));
        vars.bill = clock
            .answered
            .map(|(_, at)| now.duration_since(at).as_secs())
            .unwrap_or(0)
            .to_string();
        let f = &state.cfg.faults;
        let drop_cdr = !state.cfg.cdr_unanswered && clock.answered.is_none();
        let mut out: Vec<(&'static str, String)> = Vec::new();
        for ev in parsed.events.iter().filter(|e| e.phase == phase) {
            if ev.name == "OriginateResponse"
                && let Some(tx) = sync_reply.take()
            {
                // Async: false has no OriginateResponse; the Response takes its place.
                let _ = tx.send(ev.body.contains("\nResponse: Success"));
                continue;
            }
            if drop_cdr && ev.name == "Cdr" {
                continue;
            }
            let mut s = String::with_capacity(ev.body.len() + 128);
            render::render(ev, vars, &mut s);
            if ev.per_variable && s.is_empty() {
                continue;
            }
            if let Some(c) = self.cause {
                s = apply_cause(ev.name, s, c);
            }
            if let Some(h) = self.handle {
                track_leg(h, ev.name, &s);
            }
            let dup = f.duplicate_events && matches!(ev.name, "Hangup" | "OriginateResponse");
            if dup {
                out.push((ev.name, s.clone()));
            }
            out.push((ev.name, s));
        }
        if let Some(rng) = self.rng {
            vary(&mut out, rng);
        }
        if f.hangup_before_originate_response
            && let Some(j) = out.iter().rposition(|(n, _)| *n == "Hangup")
            && out[..j].iter().any(|(n, _)| *n == "OriginateResponse")
        {
            // Move every OriginateResponse (duplicates too) right after the last Hangup.
            let (mut moved, mut rest) = (Vec::new(), Vec::new());
            for (i, e) in out.into_iter().enumerate() {
                if i < j && e.0 == "OriginateResponse" {
                    moved.push(e)
                } else {
                    rest.push(e)
                }
            }
            let at = rest
                .iter()
                .rposition(|(n, _)| *n == "Hangup")
                .map_or(rest.len(), |k| k + 1);
            rest.splice(at..at, moved);
            out = rest;
        }
        if f.reorder_events {
            for pair in out.chunks_mut(2) {
                pair.reverse();
            }
        }
        for (name, text) in out {
            state.broadcast(name, text);
        }
    }
}

/// The orders Asterisk varies between runs (README facts 6 and 15), picked by `rng`: the
/// two legs' Hangups swap, and a failed OriginateResponse moves to the other side of them.
/// Answered calls keep OriginateResponse first: no capture shows a Hangup before it.
fn vary(out: &mut Vec<(&'static str, String)>, rng: &mut rand::rngs::StdRng) {
    use rand::Rng;
    let hangups: Vec<usize> = out
        .iter()
        .enumerate()
        .filter(|(_, e)| e.0 == "Hangup")
        .map(|(i, _)| i)
        .collect();
    if hangups.len() >= 2 && rng.random_bool(0.5) {
        let (a, b) = (hangups[0], hangups[hangups.len() - 1]);
        out.swap(a, b);
    }
    let Some(o) = out
        .iter()
        .position(|e| e.0 == "OriginateResponse" && e.1.contains("\r\nResponse: Failure\r\n"))
    else {
        return;
    };
    if hangups.is_empty() || !rng.random_bool(0.5) {
        return;
    }
    let or = out.remove(o);
    let first = out.iter().position(|e| e.0 == "Hangup");
    let last = out.iter().rposition(|e| e.0 == "Hangup");
    let at = match (first, last) {
        (Some(f), Some(l)) => {
            if o <= f {
                l + 1
            } else {
                f
            }
        }
        _ => o,
    };
    out.insert(at.min(out.len()), or);
}

/// Keeps a leg's show fields from the call's own events.
fn track_leg(h: &CallHandle, name: &str, text: &str) {
    if !matches!(name, "Newchannel" | "Newexten" | "Newstate") {
        return;
    }
    let get = |k: &str| {
        text.split("\r\n")
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(": ")))
    };
    let Some(chan) = get("Channel") else { return };
    let i = if chan == h.chan1 {
        0
    } else if chan == h.chan2 {
        1
    } else {
        return;
    };
    let Ok(mut legs) = h.legs.lock() else { return };
    let leg = &mut legs[i];
    for (k, slot) in [
        ("ChannelState", &mut leg.state),
        ("ChannelStateDesc", &mut leg.desc),
        ("Context", &mut leg.context),
        ("Exten", &mut leg.exten),
        ("Priority", &mut leg.priority),
    ] {
        if let Some(v) = get(k) {
            *slot = v.to_owned();
        }
    }
    if name == "Newexten" {
        leg.app = get("Application").unwrap_or("").to_owned();
        leg.data = get("AppData").unwrap_or("").to_owned();
    }
}

/// Live calls with their legs in the order Asterisk listed them: `;1` first once the call
/// is up, `;2` first while it rings (probe-channelid-show.txt, probe-show-ringing.txt).
fn live_legs(state: &SimState) -> Vec<(Arc<CallHandle>, usize)> {
    let mut calls: Vec<Arc<CallHandle>> = state
        .calls
        .lock()
        .map(|g| {
            g.iter()
                .filter(|(k, c)| **k == c.chan1)
                .map(|(_, c)| c.clone())
                .collect()
        })
        .unwrap_or_default();
    calls.sort_by_key(|c| c.started);
    let mut out = Vec::new();
    for c in calls {
        let order = if c.answered.load(Ordering::Relaxed) {
            [0, 1]
        } else {
            [1, 0]
        };
        for i in order {
            out.push((c.clone(), i));
        }
    }
    out
}

fn hms(secs: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

fn push_fields(s: &mut String, fields: &[(&str, &str)]) {
    for (k, v) in fields {
        s.push_str(k);
        s.push_str(": ");
        s.push_str(v);
        s.push_str("\r\n");
    }
}

/// `CoreShowChannels`: an event list of live channels.
pub(super) fn core_show_channels(state: &SimState, tx: &super::session::Outbox, aid: Option<&str>) {
    let legs = live_legs(state);
    tx.send(response(
        "Success",
        aid,
        &[("EventList", "start"), ("Message", "Channels will follow")],
    ));
    for (c, i) in &legs {
        let leg = c.legs.lock().map(|l| l[*i].clone()).unwrap_or_default();
        let chan = if *i == 0 { &c.chan1 } else { &c.chan2 };
        let uid = if *i == 0 { &c.uid1 } else { &c.uid2 };
        let dur = hms(c.started.elapsed().as_secs());
        let mut s = String::from("Event: CoreShowChannel\r\n");
        if let Some(a) = aid {
            push_fields(&mut s, &[("ActionID", a)]);
        }
        push_fields(
            &mut s,
            &[
                ("Channel", chan),
                ("ChannelState", &leg.state),
                ("ChannelStateDesc", &leg.desc),
                ("CallerIDNum", &c.num),
                ("CallerIDName", &c.name),
                ("ConnectedLineNum", &c.num),
                ("ConnectedLineName", &c.name),
                ("Language", "en"),
                ("AccountCode", ""),
                ("Context", &leg.context),
                ("Exten", &leg.exten),
                ("Priority", &leg.priority),
                ("Uniqueid", uid),
                ("Linkedid", &c.uid1),
                ("Application", &leg.app),
                ("ApplicationData", &leg.data),
                ("Duration", &dur),
                ("BridgeId", ""),
            ],
        );
        s.push_str("\r\n");
        tx.send(Bytes::from(s));
    }
    let mut s = String::from("Event: CoreShowChannelsComplete\r\n");
    if let Some(a) = aid {
        push_fields(&mut s, &[("ActionID", a)]);
    }
    s.push_str(&format!(
        "EventList: Complete\r\nListItems: {}\r\n\r\n",
        legs.len()
    ));
    tx.send(Bytes::from(s));
}

/// `Status`: an event list (one channel or all), fields as Asterisk 22 sends them for a
/// Local channel, `ActionID` last.
pub(super) fn status(
    state: &SimState,
    tx: &super::session::Outbox,
    aid: Option<&str>,
    channel: Option<&str>,
) {
    let items: Vec<_> = live_legs(state)
        .into_iter()
        .filter(|(c, i)| {
            let chan = if *i == 0 { &c.chan1 } else { &c.chan2 };
            channel.is_none_or(|want| want.is_empty() || want == chan)
        })
        .collect();
    if let Some(want) = channel
        && !want.is_empty()
        && items.is_empty()
    {
        tx.send(response("Error", aid, &[("Message", "No such channel")]));
        return;
    }
    tx.send(response(
        "Success",
        aid,
        &[
            ("EventList", "start"),
            ("Message", "Channel status will follow"),
        ],
    ));
    for (c, i) in &items {
        let leg = c.legs.lock().map(|l| l[*i].clone()).unwrap_or_default();
        let chan = if *i == 0 { &c.chan1 } else { &c.chan2 };
        let uid = if *i == 0 { &c.uid1 } else { &c.uid2 };
        let secs = c.started.elapsed().as_secs().to_string();
        let mut s = String::from("Event: Status\r\nPrivilege: Call\r\n");
        push_fields(
            &mut s,
            &[
                ("Channel", chan),
                ("ChannelState", &leg.state),
                ("ChannelStateDesc", &leg.desc),
                ("CallerIDNum", &c.num),
                ("CallerIDName", &c.name),
                ("ConnectedLineNum", &c.num),
                ("ConnectedLineName", &c.name),
                ("Language", "en"),
                ("AccountCode", ""),
                ("Context", &leg.context),
                ("Exten", &leg.exten),
                ("Priority", &leg.priority),
                ("Uniqueid", uid),
                ("Linkedid", &c.uid1),
                ("Type", "Local"),
                ("DNID", ""),
                ("EffectiveConnectedLineNum", &c.num),
                ("EffectiveConnectedLineName", &c.name),
                ("TimeToHangup", "0"),
                ("BridgeID", ""),
                ("Application", &leg.app),
                ("Data", &leg.data),
                ("Nativeformats", "(slin)"),
                ("Readformat", "slin"),
                ("Readtrans", ""),
                ("Writeformat", "slin"),
                ("Writetrans", ""),
                ("Callgroup", "0"),
                ("Pickupgroup", "0"),
                ("Seconds", &secs),
            ],
        );
        if let Some(a) = aid {
            push_fields(&mut s, &[("ActionID", a)]);
        }
        s.push_str("\r\n");
        tx.send(Bytes::from(s));
    }
    let mut s = String::from("Event: StatusComplete\r\n");
    if let Some(a) = aid {
        push_fields(&mut s, &[("ActionID", a)]);
    }
    s.push_str(&format!(
        "EventList: Complete\r\nListItems: {}\r\nItems: {}\r\n\r\n",
        items.len(),
        items.len()
    ));
    tx.send(Bytes::from(s));
}
