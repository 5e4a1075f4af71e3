//! One client connection to the simulator: greeting, login, actions, event delivery.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::SimState;
use super::call;
use crate::ami::actions::md5_key;
use crate::ami::codec::AmiCodec;
use crate::ami::message::Message;

/// What a session wants to receive.
#[derive(Debug, Clone, Default)]
pub(super) struct EventPolicy {
    pub logged_in: bool,
    /// `None` = all classes; `Some(empty)` = off.
    pub classes: Option<Vec<String>>,
    pub includes: Vec<FilterRule>,
}

#[derive(Debug, Clone)]
pub(super) enum FilterRule {
    Name(String),
    HeaderExact(String, String),
    /// Legacy regex filter, modelled as "the payload contains any of these".
    Contains(Vec<String>),
}

impl EventPolicy {
    fn wants(&self, name: &str, text: &str) -> bool {
        if !self.logged_in {
            return false;
        }
        if let Some(classes) = &self.classes {
            let privilege = text
                .split("\r\n")
                .find_map(|l| l.strip_prefix("Privilege: "))
                .unwrap_or("");
            let ok = privilege
                .split(',')
                .filter(|c| *c != "all")
                .any(|c| classes.iter().any(|k| k.eq_ignore_ascii_case(c)));
            if !ok {
                return false;
            }
        }
        if self.includes.is_empty() {
            return true;
        }
        self.includes.iter().any(|r| match r {
            FilterRule::Name(n) => n.eq_ignore_ascii_case(name),
            FilterRule::HeaderExact(h, v) => text.contains(&format!("\r\n{h}: {v}\r\n")),
            FilterRule::Contains(alts) => alts.iter().any(|a| text.contains(a.as_str())),
        })
    }
}

/// Messages a session may have queued for its client beyond what the socket buffers
/// hold. A client that stops reading fills it; then its session is closed (a warning is
/// logged), as Asterisk drops a manager session whose writes time out, instead of the
/// simulator's memory growing without limit. Large enough for a `CoreShowChannels`
/// listing of 10,000 live calls (20,000 events) to a client that is busy but reading:
/// at 4,096 the dial benchmark's reconcile after a reconnect overflowed it, dropped the
/// link, reconnected, listed again, in a loop.
pub const OUTBOX_CAPACITY: usize = 65_536;

/// The writer's bounded queue; sending never waits.
#[derive(Clone)]
pub(super) struct Outbox {
    tx: mpsc::Sender<Bytes>,
    kill: CancellationToken,
    id: u64,
}

impl Outbox {
    /// Queues `b`; when the queue is full the session is closed instead.
    pub(super) fn send(&self, b: Bytes) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(b)
            && !self.kill.is_cancelled()
        {
            tracing::warn!(
                session = self.id,
                queued = OUTBOX_CAPACITY,
                "pbx-sim: the client does not read what it is sent; closing its session"
            );
            self.kill.cancel();
        }
    }
}

pub(super) struct SessionHandle {
    pub tx: Outbox,
    pub policy: Arc<Mutex<EventPolicy>>,
    pub kill: CancellationToken,
}

impl SimState {
    /// Sends one event to every session that wants it (Asterisk sends call events to all
    /// manager sessions, whoever originated the call).
    pub(super) fn broadcast(&self, name: &str, text: String) {
        let bytes = Bytes::from(text);
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return;
        };
        if let Ok(g) = self.sessions.lock() {
            for s in g.values() {
                let wants = s
                    .policy
                    .lock()
                    .map(|p| p.wants(name, text))
                    .unwrap_or(false);
                if wants {
                    s.tx.send(bytes.clone());
                }
            }
        }
    }

    /// Queues a clean close (after everything already queued) on every session.
    pub(super) fn close_all_after_queued(&self) {
        if let Ok(g) = self.sessions.lock() {
            for s in g.values() {
                s.tx.send(Bytes::new());
            }
        }
    }

    pub(super) fn kill_session(&self, id: u64) {
        if let Ok(g) = self.sessions.lock()
            && let Some(s) = g.get(&id)
        {
            s.kill.cancel();
        }
    }
}

/// Builds a response: `Response:`, the ActionID if the action had one, then `extra`.
pub(super) fn response(kind: &str, action_id: Option<&str>, extra: &[(&str, &str)]) -> Bytes {
    let mut s = format!("Response: {kind}\r\n");
    if let Some(id) = action_id {
        s.push_str("ActionID: ");
        s.push_str(id);
        s.push_str("\r\n");
    }
    for (k, v) in extra {
        s.push_str(k);
        s.push_str(": ");
        s.push_str(v);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    Bytes::from(s)
}

fn event(pairs: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (k, v) in pairs {
        s.push_str(k);
        s.push_str(": ");
        s.push_str(v);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s
}

/// `Event: FullyBooted` as Asterisk 22 sends it (uptime in whole seconds).
pub(super) fn fully_booted(started: std::time::Instant) -> String {
    let up = started.elapsed().as_secs().to_string();
    event(&[
        ("Event", "FullyBooted"),
        ("Privilege", "system,all"),
        ("Uptime", &up),
        ("LastReload", &up),
        ("Status", "Fully Booted"),
    ])
}

fn event_tv() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let t = super::render::format_time(d.as_secs()).replace(' ', "T");
    format!("{t}.{:03}+0000", d.subsec_millis())
}

pub(super) async fn handle(state: Arc<SimState>, stream: TcpStream, peer: SocketAddr) {
    let id = state.next_session.fetch_add(1, Ordering::Relaxed);
    let local = stream.local_addr().ok();
    let (r, mut w) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(OUTBOX_CAPACITY);
    let policy = Arc::new(Mutex::new(EventPolicy::default()));
    let kill = CancellationToken::new();
    let tx = Outbox {
        tx,
        kill: kill.clone(),
        id,
    };
    if let Ok(mut g) = state.sessions.lock() {
        g.insert(
            id,
            SessionHandle {
                tx: tx.clone(),
                policy: policy.clone(),
                kill: kill.clone(),
            },
        );
    }
    let slow = state.cfg.faults.slow_stream;
    // Writer: the only task touching the write half.
    let k = kill.clone();
    let writer = tokio::spawn(async move {
        let write_all = async {
            w.write_all(b"Asterisk Call Manager/11.0.0\r\n").await?;
            // An empty message means "close after what was queued before it".
            while let Some(b) = rx.recv().await.filter(|b| !b.is_empty()) {
                match slow {
                    Some(pause) if b.len() > 1 => {
                        let half = b.len() / 2;
                        w.write_all(&b[..half]).await?;
                        tokio::time::sleep(pause).await;
                        w.write_all(&b[half..]).await?;
                    }
                    _ => w.write_all(&b).await?,
                }
            }
            std::io::Result::Ok(())
        };
        // A kill also ends a write that waits on a client that does not read.
        tokio::select! {
            _ = k.cancelled() => {}
            _ = write_all => {}
        }
        let _ = w.shutdown().await;
        // Closed from our side: stop reading too, like Asterisk's close of the socket.
        k.cancel();
    });

    let mut reader = FramedRead::new(r, AmiCodec::server(64 * 1024, 1024));
    let mut s = Session {
        state: state.clone(),
        id,
        tx,
        policy,
        challenge: None,
        user: None,
        peer,
        local,
        login_tv: String::new(),
    };
    loop {
        let next = tokio::select! {
            _ = kill.cancelled() => break,
            n = reader.next() => n,
        };
        let m = match next {
            Some(Ok(m)) => m,
            _ => break,
        };
        if s.on_action(&m).await == Flow::Close {
            s.tx.send(Bytes::new());
            let _ = writer.await;
            if let Ok(mut g) = state.sessions.lock() {
                g.remove(&id);
            }
            return;
        }
    }
    kill.cancel();
    let _ = writer.await;
    if let Ok(mut g) = state.sessions.lock() {
        g.remove(&id);
    }
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

struct Session {
    state: Arc<SimState>,
    id: u64,
    tx: Outbox,
    policy: Arc<Mutex<EventPolicy>>,
    challenge: Option<String>,
    user: Option<super::SimUser>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    /// When the login succeeded (`SessionTV` of the security events).
    login_tv: String,
}

impl Session {
    fn send(&self, b: Bytes) {
        self.tx.send(b);
    }

    /// Sends an event to this session only, subject to its policy.
    fn send_own_event(&self, name: &str, text: String) {
        let wants = self
            .policy
            .lock()
            .map(|p| p.wants(name, &text))
            .unwrap_or(false);
        if wants {
            self.send(Bytes::from(text));
        }
    }

    async fn on_action(&mut self, m: &Message) -> Flow {
        let aid = m.action_id();
        let Some(action) = m.get("Action") else {
            self.send(response(
                "Error",
                aid,
                &[("Message", "Missing action in request")],
            ));
            // Logged in, Asterisk also reports it as a security event (probe-misc-actions.txt).
            self.bad_format("NONE");
            return Flow::Continue;
        };
        let action_name = action.to_owned();
        let action = action.to_ascii_lowercase();
        if action == "originate" {
            self.state.originates.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut g) = self.state.originate_times.lock() {
                if g.len() == super::ORIGINATE_TIMES_KEPT {
                    g.pop_front();
                }
                g.push_back(self.state.started.elapsed());
            }
        }
        let authed = self.user.is_some();
        if !authed && !matches!(action.as_str(), "login" | "challenge" | "logoff") {
            self.send(response("Error", aid, &[("Message", "Permission denied")]));
            return Flow::Continue;
        }
        match action.as_str() {
            "login" => return self.login(m).await,
            "challenge" => {
                if m.get("AuthType")
                    .is_some_and(|a| a.eq_ignore_ascii_case("md5"))
                {
                    let c = format!("{:09}", rand::random_range(0..1_000_000_000u32));
                    self.send(response("Success", aid, &[("Challenge", &c)]));
                    self.challenge = Some(c);
                } else {
                    self.send(response(
                        "Error",
                        aid,
                        &[("Message", "Must specify AuthType")],
                    ));
                }
            }
            "logoff" => {
                self.send(response(
                    "Goodbye",
                    aid,
                    &[("Message", "Thanks for all the fish.")],
                ));
                return Flow::Close;
            }
            "ping" => {
                let d = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                let ts = format!("{}.{:06}", d.as_secs(), d.subsec_micros());
                self.send(response(
                    "Success",
                    aid,
                    &[("Ping", "Pong"), ("Timestamp", &ts)],
                ));
            }
            "events" => {
                let mask = m.get("EventMask").unwrap_or("on");
                let on = self.set_mask(mask);
                self.send(response(
                    "Success",
                    aid,
                    &[("Events", if on { "On" } else { "Off" })],
                ));
            }
            "filter" => {
                self.add_filter(m);
                self.send(response("Success", aid, &[("Message", "Success")]));
            }
            "originate" => {
                if !self.user.as_ref().is_some_and(|u| u.write) {
                    self.permission_denied(aid, "Originate");
                    return Flow::Continue;
                }
                call::originate(&self.state, self.id, &self.tx, m).await;
            }
            "hangup" => {
                if !self.user.as_ref().is_some_and(|u| u.write) {
                    self.permission_denied(aid, "Hangup");
                    return Flow::Continue;
                }
                let ch = m.get("Channel").unwrap_or("");
                let cause = m.get("Cause").and_then(|c| c.trim().parse().ok());
                if call::hangup(&self.state, ch, cause) {
                    self.send(response("Success", aid, &[("Message", "Channel Hungup")]));
                } else {
                    self.send(response("Error", aid, &[("Message", "No such channel")]));
                }
            }
            "coreshowchannels" => call::core_show_channels(&self.state, &self.tx, aid),
            "status" => call::status(&self.state, &self.tx, aid, m.get("Channel")),
            "corestatus" => {
                let (date, time) = self.state.started_at();
                let calls = self.state.live_call_count().to_string();
                let done = self.state.processed_calls().to_string();
                self.send(response(
                    "Success",
                    aid,
                    &[
                        ("CoreStartupDate", &date),
                        ("CoreStartupTime", &time),
                        ("CoreReloadDate", &date),
                        ("CoreReloadTime", &time),
                        ("CoreCurrentCalls", &calls),
                        ("CoreProcessedCalls", &done),
                    ],
                ));
            }
            "coresettings" => self.send(response(
                "Success",
                aid,
                &[
                    ("AMIversion", "11.0.0"),
                    ("AsteriskVersion", "22.10.1"),
                    ("SystemName", ""),
                    ("CoreMaxCalls", "0"),
                    ("CoreMaxLoadAvg", "0.000000"),
                    ("CoreRunUser", ""),
                    ("CoreRunGroup", ""),
                    ("CoreMaxFilehandles", "0"),
                    ("CoreRealTimeEnabled", "No"),
                    ("CoreCDRenabled", "Yes"),
                    ("CoreHTTPenabled", "No"),
                    ("SoundsSearchCustomDir", "No"),
                ],
            )),
            "getvar" => {
                // The simulator keeps no global variables: every one reads empty.
                let var = m.get("Variable").unwrap_or("");
                self.send(response(
                    "Success",
                    aid,
                    &[("Variable", var), ("Value", "")],
                ));
            }
            "command" => {
                let cmd = m.get("Command").unwrap_or("").trim();
                if cmd == "core show channels count" {
                    let calls = self.state.live_call_count();
                    let ch = format!("{} active channels", calls * 2);
                    let ca = format!("{calls} active calls");
                    let done = format!("{} calls processed", self.state.processed_calls());
                    self.send(response(
                        "Success",
                        aid,
                        &[
                            ("Message", "Command output follows"),
                            ("Output", &ch),
                            ("Output", &ca),
                            ("Output", &done),
                        ],
                    ));
                } else {
                    let out = format!(
                        "No such command '{cmd}' (type 'core show help {cmd}' for other possible commands)"
                    );
                    self.send(response(
                        "Error",
                        aid,
                        &[("Message", "Command output follows"), ("Output", &out)],
                    ));
                }
            }
            _ => {
                let msg = format!(
                    "Invalid/unknown command: {action_name}. Use Action: ListCommands to show available commands."
                );
                self.send(response("Error", aid, &[("Message", &msg)]));
                self.bad_format(&action_name);
            }
        }
        Flow::Continue
    }

    fn permission_denied(&self, aid: Option<&str>, action: &str) {
        self.send(response("Error", aid, &[("Message", "Permission denied")]));
        let user = self
            .user
            .as_ref()
            .map(|u| u.username.clone())
            .unwrap_or_default();
        let tv = event_tv();
        let req = format!("Action: {action}");
        let (la, ra) = self.addrs();
        let sid = format!("0x{:012x}", self.id);
        self.send_own_event(
            "RequestNotAllowed",
            event(&[
                ("Event", "RequestNotAllowed"),
                ("Privilege", "security,all"),
                ("EventTV", &tv),
                ("Severity", "Error"),
                ("Service", "AMI"),
                ("EventVersion", "1"),
                ("AccountID", &user),
                ("SessionID", &sid),
                ("LocalAddress", &la),
                ("RemoteAddress", &ra),
                ("RequestType", &req),
                ("SessionTV", &tv),
            ]),
        );
    }

    /// `RequestBadFormat` (security class), sent only to a logged-in session.
    fn bad_format(&self, action: &str) {
        let Some(user) = self.user.as_ref().map(|u| u.username.clone()) else {
            return;
        };
        let tv = event_tv();
        let req = format!("Action: {action}");
        let (la, ra) = self.addrs();
        let sid = format!("0x{:012x}", self.id);
        self.send_own_event(
            "RequestBadFormat",
            event(&[
                ("Event", "RequestBadFormat"),
                ("Privilege", "security,all"),
                ("EventTV", &tv),
                ("Severity", "Error"),
                ("Service", "AMI"),
                ("EventVersion", "1"),
                ("SessionID", &sid),
                ("LocalAddress", &la),
                ("RemoteAddress", &ra),
                ("RequestType", &req),
                ("SessionTV", &self.login_tv),
                ("AccountID", &user),
            ]),
        );
    }

    fn addrs(&self) -> (String, String) {
        let f = |a: Option<SocketAddr>| {
            a.map(|a| format!("IPV4/TCP/{}/{}", a.ip(), a.port()))
                .unwrap_or_default()
        };
        (f(self.local), f(Some(self.peer)))
    }

    fn set_mask(&self, mask: &str) -> bool {
        let classes = match mask.trim().to_ascii_lowercase().as_str() {
            "on" | "all" | "yes" | "true" => None,
            "off" | "no" | "false" | "" => Some(Vec::new()),
            list => Some(list.split(',').map(|c| c.trim().to_owned()).collect()),
        };
        let on = classes.as_ref().is_none_or(|c| !c.is_empty());
        if let Ok(mut p) = self.policy.lock() {
            p.classes = classes;
        }
        on
    }

    fn add_filter(&self, m: &Message) {
        let filter = m.get("Filter").unwrap_or("");
        let rule = match m.get("MatchCriteria") {
            Some(mc) => {
                let arg = |name: &str| {
                    mc.split("),").find_map(|p| {
                        p.trim()
                            .strip_prefix(name)
                            .map(|v| v.trim_start_matches('(').trim_end_matches(')').to_owned())
                    })
                };
                if arg("action").is_some_and(|a| a != "include") {
                    return;
                }
                match (arg("name"), arg("header")) {
                    (Some(n), _) if filter.is_empty() => FilterRule::Name(n),
                    (_, Some(h)) => FilterRule::HeaderExact(h, filter.to_owned()),
                    (Some(n), None) => FilterRule::Name(n),
                    (None, None) => FilterRule::Contains(vec![filter.to_owned()]),
                }
            }
            None => {
                // `Event: (A|B|C)` → substrings `Event: A`, `Event: B`, … (regex subset).
                match (filter.find('('), filter.rfind(')')) {
                    (Some(a), Some(b)) if a < b => {
                        let (pre, alts) = (&filter[..a], &filter[a + 1..b]);
                        FilterRule::Contains(alts.split('|').map(|x| format!("{pre}{x}")).collect())
                    }
                    _ => FilterRule::Contains(vec![filter.to_owned()]),
                }
            }
        };
        // A header filter combined with name() (filter-action.txt's Cdr rule) is kept as
        // the header rule: the capture shows the same events either way.
        if let Ok(mut p) = self.policy.lock() {
            p.includes.push(rule);
        }
    }

    async fn login(&mut self, m: &Message) -> Flow {
        let aid = m.action_id();
        let username = m.get("Username").unwrap_or("");
        let user = self
            .state
            .cfg
            .users
            .iter()
            .find(|u| u.username == username)
            .cloned();
        let ok = match (&user, m.get("AuthType"), m.get("Key"), m.get("Secret")) {
            (Some(u), Some(t), Some(key), _) if t.eq_ignore_ascii_case("md5") => self
                .challenge
                .as_deref()
                .is_some_and(|c| md5_key(c, &u.secret).eq_ignore_ascii_case(key)),
            (Some(u), _, _, Some(secret)) => u.secret == secret,
            _ => false,
        };
        if !ok {
            tokio::time::sleep(self.state.cfg.auth_failure_delay).await;
            self.send(response(
                "Error",
                aid,
                &[("Message", "Authentication failed")],
            ));
            return Flow::Close;
        }
        self.user = user;
        let mask = m.get("Events").unwrap_or("on").to_owned();
        self.send(response(
            "Success",
            aid,
            &[("Message", "Authentication accepted")],
        ));
        self.set_mask(&mask);
        {
            // Under the boot lock: either the boot-time broadcast reaches this session or
            // the login-time event below does, never both, never before the reply.
            let booted = self.state.booted.lock();
            if let Ok(mut p) = self.policy.lock() {
                p.logged_in = true;
            }
            // manager.c's action_login sends it only once Asterisk is fully booted, and only
            // if the session's mask has `system` (events-call-mask.txt has none). An
            // eventfilter does not stop this one (eventfilter-user.txt); the sim's filters
            // are only set after the login anyway.
            if booted.as_ref().is_ok_and(|b| **b) {
                self.send_own_event("FullyBooted", fully_booted(self.state.started));
            }
        }
        let tv = event_tv();
        self.login_tv = tv.clone();
        let (la, ra) = self.addrs();
        let sid = format!("0x{:012x}", self.id);
        self.send_own_event(
            "SuccessfulAuth",
            event(&[
                ("Event", "SuccessfulAuth"),
                ("Privilege", "security,all"),
                ("EventTV", &tv),
                ("Severity", "Informational"),
                ("Service", "AMI"),
                ("EventVersion", "1"),
                ("AccountID", username),
                ("SessionID", &sid),
                ("LocalAddress", &la),
                ("RemoteAddress", &ra),
                ("UsingPassword", "0"),
                ("SessionTV", &tv),
            ]),
        );
        Flow::Continue
    }
}
