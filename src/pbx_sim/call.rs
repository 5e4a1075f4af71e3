//! One simulated call: picks a template, fills it in, plays its phases on time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::SimState;
use super::render::{self, Parsed, Vars};
use super::scenario::{CallOutcome, outcome_for_channel};
use super::session::response;
use crate::ami::message::Message;

pub(crate) struct CallHandle {
    pub chan1: String,
    pub chan2: String,
    pub uid1: String,
    pub uid2: String,
    pub num: String,
    pub name: String,
    pub exten: String,
    pub started: Instant,
    pub answered: AtomicBool,
    pub cancel: CancellationToken,
    /// Registered under both channel names; only one entry counts as the call.
    primary: bool,
}

impl CallHandle {
    pub(crate) fn is_primary(&self) -> bool {
        self.primary
    }
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

fn parse_caller_id(cid: &str) -> (String, String) {
    // `"Name" <num>`, `Name <num>` or `num`.
    if let (Some(a), Some(b)) = (cid.find('<'), cid.rfind('>'))
        && a < b
    {
        let num = cid[a + 1..b].trim().to_owned();
        let name = cid[..a].trim().trim_matches('"').to_owned();
        let name = if name.is_empty() {
            "<unknown>".to_owned()
        } else {
            name
        };
        return (num, name);
    }
    let c = cid.trim();
    if c.is_empty() {
        ("<unknown>".into(), "<unknown>".into())
    } else {
        (c.to_owned(), "<unknown>".into())
    }
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
    let (num, name, action_id) = match identity {
        Some(i) => i,
        None => {
            let (n, nm) = parse_caller_id(m.get("CallerID").unwrap_or(""));
            (n, nm, m.action_id().map(str::to_owned))
        }
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
    let channel_id = m.get("ChannelId").map(str::to_owned);
    let has_channels = !matches!(outcome, CallOutcome::InvalidTech);
    let (uid1, uid2) = match (&channel_id, m.get("OtherChannelId")) {
        (Some(a), Some(b)) => (a.clone(), b.to_owned()),
        (Some(a), None) => (a.clone(), format!("{a};2")),
        (None, _) if has_channels => (state.next_uid(), state.next_uid()),
        // A failed Originate with no channel reports the literal `<unknown>`.
        (None, _) => ("<unknown>".into(), String::new()),
    };
    let failuid = channel_id.clone().unwrap_or_else(|| "<unknown>".into());
    let start = render::format_time(wall_secs());
    let vars = Vars {
        failuid,
        chan,
        req,
        exten,
        ctx,
        uid1,
        uid2,
        num,
        name,
        action_id,
        lctx: m.get("Context").unwrap_or("").to_owned(),
        lexten: m.get("Exten").unwrap_or("").to_owned(),
        job,
        variables,
        start: start.clone(),
        answered: start.clone(),
        end: start,
        dur: "0".into(),
        bill: "0".into(),
    };
    let ms = |x: u64| state.scaled(Duration::from_millis(x));
    let sc = |d: Duration| state.scaled(d);
    let timeout = m
        .get("Timeout")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(30_000);
    let (parsed, phases, answered_from, drop_origin_after) = match outcome {
        CallOutcome::Answer { hangup_after } => {
            let h = sc(*hangup_after);
            (
                render::answer(),
                vec![Duration::ZERO, h.min(ms(502)), h],
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
            vec![Duration::ZERO, ms(timeout)],
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
    if !landing_ok {
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
    let p = plan(state, m, &outcome, None);
    if is_async {
        // The Response is queued before any event of the call, as in every capture.
        tx.send(response(
            "Success",
            aid,
            &[("Message", "Originate successfully queued")],
        ));
        tokio::spawn(run(state.clone(), p, origin, None));
    } else {
        // Async: false blocks this session until the outcome (answer-sync.txt).
        let (otx, orx) = oneshot::channel();
        tokio::spawn(run(state.clone(), p, origin, Some(otx)));
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
        let p = plan(state, m, &outcome, Some(identity));
        tokio::spawn(run(state.clone(), p, 0, None));
    }
}

fn register(state: &SimState, p: &Plan) -> Option<Arc<CallHandle>> {
    if !p.has_channels {
        return None;
    }
    let mk = |primary| {
        Arc::new(CallHandle {
            chan1: format!("{};1", p.vars.chan),
            chan2: format!("{};2", p.vars.chan),
            uid1: p.vars.uid1.clone(),
            uid2: p.vars.uid2.clone(),
            num: p.vars.num.clone(),
            name: p.vars.name.clone(),
            exten: p.vars.exten.clone(),
            started: Instant::now(),
            answered: AtomicBool::new(p.answered_from == Some(0)),
            cancel: CancellationToken::new(),
            primary,
        })
    };
    let h = mk(true);
    if let Ok(mut g) = state.calls.lock() {
        g.insert(h.chan1.clone(), h.clone());
        // The ;2 name points at the same call through a non-primary alias sharing `cancel`.
        let alias = Arc::new(CallHandle {
            chan1: h.chan1.clone(),
            chan2: h.chan2.clone(),
            uid1: h.uid1.clone(),
            uid2: h.uid2.clone(),
            num: h.num.clone(),
            name: h.name.clone(),
            exten: h.exten.clone(),
            started: h.started,
            answered: AtomicBool::new(false),
            cancel: h.cancel.clone(),
            primary: false,
        });
        g.insert(h.chan2.clone(), alias);
    }
    Some(h)
}

fn unregister(state: &SimState, h: &CallHandle) {
    if let Ok(mut g) = state.calls.lock() {
        g.remove(&h.chan1);
        g.remove(&h.chan2);
    }
}

/// Ends a live call as a dialer-side `Action: Hangup` does. False if no such channel.
pub(super) fn hangup(state: &SimState, channel: &str) -> bool {
    let h = state
        .calls
        .lock()
        .ok()
        .and_then(|g| g.get(channel).cloned());
    match h {
        Some(h) => {
            h.cancel.cancel();
            true
        }
        None => false,
    }
}

async fn run(
    state: Arc<SimState>,
    mut p: Plan,
    origin: u64,
    sync_reply: Option<oneshot::Sender<bool>>,
) {
    let handle = register(&state, &p);
    let t0 = tokio::time::Instant::now();
    let wall0 = wall_secs();
    let mut answered_wall = None;
    let mut sync_reply = sync_reply;
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
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = cancel.cancelled() => {
                let up = p.answered_from.is_some_and(|a| phase > a);
                let tail = if up { render::cancel_answered() } else { render::cancel_ringing() };
                emit(&state, &mut p.vars, tail, 0, wall0, answered_wall, &mut sync_reply);
                if let Some(h) = &handle { unregister(&state, h); }
                return;
            }
            _ = state.shutdown.cancelled() => return,
        }
        if p.answered_from == Some(phase) {
            answered_wall = Some(wall_secs());
            if let Some(h) = &handle {
                h.answered.store(true, Ordering::Relaxed);
            }
        }
        let parsed = p.parsed;
        emit(
            &state,
            &mut p.vars,
            parsed,
            phase,
            wall0,
            answered_wall,
            &mut sync_reply,
        );
    }
    if let Some(h) = &handle {
        unregister(&state, h);
    }
}

/// Renders and broadcasts the events of one phase, applying the configured faults.
fn emit(
    state: &SimState,
    vars: &mut Vars,
    parsed: &Parsed,
    phase: usize,
    wall0: u64,
    answered_wall: Option<u64>,
    sync_reply: &mut Option<oneshot::Sender<bool>>,
) {
    let now = wall_secs();
    vars.end = render::format_time(now);
    vars.dur = now.saturating_sub(wall0).to_string();
    vars.answered = render::format_time(answered_wall.unwrap_or(wall0));
    vars.bill = answered_wall
        .map(|a| now.saturating_sub(a))
        .unwrap_or(0)
        .to_string();
    let f = &state.cfg.faults;
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for ev in parsed.events.iter().filter(|e| e.phase == phase) {
        if ev.name == "OriginateResponse"
            && let Some(tx) = sync_reply.take()
        {
            // Async: false has no OriginateResponse; the Response takes its place.
            let _ = tx.send(ev.body.contains("\nResponse: Success"));
            continue;
        }
        let mut s = String::with_capacity(ev.body.len() + 128);
        render::render(ev, vars, &mut s);
        if ev.per_variable && s.is_empty() {
            continue;
        }
        let dup = f.duplicate_events && matches!(ev.name, "Hangup" | "OriginateResponse");
        if dup {
            out.push((ev.name, s.clone()));
        }
        out.push((ev.name, s));
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

/// `CoreShowChannels`: an event list of live channels.
pub(super) fn core_show_channels(state: &SimState, tx: &super::session::Outbox, aid: Option<&str>) {
    let calls: Vec<Arc<CallHandle>> = state
        .calls
        .lock()
        .map(|g| g.values().filter(|c| c.primary).cloned().collect())
        .unwrap_or_default();
    tx.send(response(
        "Success",
        aid,
        &[("EventList", "start"), ("Message", "Channels will follow")],
    ));
    let mut n = 0;
    for c in &calls {
        for (chan, uid, ctx, app) in [
            (&c.chan1, &c.uid1, "originated", "Wait"),
            (&c.chan2, &c.uid2, "callee", "AppDial2"),
        ] {
            let up = c.answered.load(Ordering::Relaxed);
            let (st, desc) = if up { ("6", "Up") } else { ("5", "Ringing") };
            let secs = c.started.elapsed().as_secs();
            let dur = format!(
                "{:02}:{:02}:{:02}",
                secs / 3600,
                (secs / 60) % 60,
                secs % 60
            );
            let mut s = String::from("Event: CoreShowChannel\r\n");
            if let Some(a) = aid {
                s.push_str(&format!("ActionID: {a}\r\n"));
            }
            for (k, v) in [
                ("Channel", chan.as_str()),
                ("ChannelState", st),
                ("ChannelStateDesc", desc),
                ("CallerIDNum", &c.num),
                ("CallerIDName", &c.name),
                ("ConnectedLineNum", &c.num),
                ("ConnectedLineName", &c.name),
                ("Language", "en"),
                ("AccountCode", ""),
                ("Context", ctx),
                ("Exten", &c.exten),
                ("Priority", "1"),
                ("Uniqueid", uid),
                ("Linkedid", &c.uid1),
                ("Application", app),
                ("ApplicationData", ""),
                ("Duration", &dur),
                ("BridgeId", ""),
            ] {
                s.push_str(&format!("{k}: {v}\r\n"));
            }
            s.push_str("\r\n");
            tx.send(Bytes::from(s));
            n += 1;
        }
    }
    let mut s = String::from("Event: CoreShowChannelsComplete\r\n");
    if let Some(a) = aid {
        s.push_str(&format!("ActionID: {a}\r\n"));
    }
    s.push_str(&format!("EventList: Complete\r\nListItems: {n}\r\n\r\n"));
    tx.send(Bytes::from(s));
}

/// `Status`: an event list (one channel or all).
pub(super) fn status(
    state: &SimState,
    tx: &super::session::Outbox,
    aid: Option<&str>,
    channel: Option<&str>,
) {
    let calls: Vec<Arc<CallHandle>> = state
        .calls
        .lock()
        .map(|g| g.values().filter(|c| c.primary).cloned().collect())
        .unwrap_or_default();
    let mut items = Vec::new();
    for c in &calls {
        for (chan, uid) in [(&c.chan1, &c.uid1), (&c.chan2, &c.uid2)] {
            if channel.is_none_or(|want| want.is_empty() || want == chan) {
                items.push((chan.clone(), uid.clone(), c.clone()));
            }
        }
    }
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
    for (chan, uid, c) in &items {
        let up = c.answered.load(Ordering::Relaxed);
        let mut s = String::from("Event: Status\r\nPrivilege: Call\r\n");
        if let Some(a) = aid {
            s.push_str(&format!("ActionID: {a}\r\n"));
        }
        s.push_str(&format!(
            "Channel: {chan}\r\nChannelState: {}\r\nChannelStateDesc: {}\r\nCallerIDNum: {}\r\nCallerIDName: {}\r\nUniqueid: {uid}\r\nLinkedid: {}\r\nSeconds: {}\r\n\r\n",
            if up { 6 } else { 5 },
            if up { "Up" } else { "Ringing" },
            c.num,
            c.name,
            c.uid1,
            c.started.elapsed().as_secs()
        ));
        tx.send(Bytes::from(s));
    }
    let mut s = String::from("Event: StatusComplete\r\n");
    if let Some(a) = aid {
        s.push_str(&format!("ActionID: {a}\r\n"));
    }
    s.push_str(&format!(
        "EventList: Complete\r\nListItems: {}\r\nItems: {}\r\n\r\n",
        items.len(),
        items.len()
    ));
    tx.send(Bytes::from(s));
}
