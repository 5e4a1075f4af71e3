//! One TCP session with Asterisk: greeting, login, then a reader task and a writer task.
//!
//! The reader matches responses (and event lists) to waiting callers by ActionID only:
//! Asterisk interleaves events and other actions' responses (concurrent-20.txt), so "the next
//! message answers my action" is never assumed. Everything else goes to the subscribers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::actions::{self, Action, ActionFrame, Challenge, Filter, Login, LoginAuth};
use super::codec::AmiCodec;
use super::config::AmiConfig;
use super::error::AmiError;
use super::message::{Message, MessageKind};
use super::subscriber::Subscribers;

/// Most events one event list may collect; a peer that never sends `Complete` cannot make
/// us grow without bound.
const MAX_LIST_EVENTS: usize = 1_000_000;

/// Most events held for a new session before it is up (the FullyBooted wait is bounded in
/// time, this bounds what a peer can send meanwhile).
const MAX_HELD_EVENTS: usize = 100_000;

/// The answer to an action: its response and, for event lists, the listed events in order.
#[derive(Debug)]
pub struct Reply {
    pub response: Message,
    pub events: Vec<Message>,
}

pub(crate) struct Pending {
    tx: oneshot::Sender<Result<Reply, AmiError>>,
    list: Option<(Option<Message>, Vec<Message>)>,
    generation: u64,
}

impl Pending {
    pub(crate) fn new(
        tx: oneshot::Sender<Result<Reply, AmiError>>,
        list: bool,
        generation: u64,
    ) -> Self {
        Self {
            tx,
            list: list.then(|| (None, Vec::new())),
            generation,
        }
    }
}

/// ActionID → waiting caller, plus the subscribers. Shared by reader and client.
#[derive(Default)]
pub(crate) struct Router {
    pending: Mutex<HashMap<String, Pending>>,
    lists_in_flight: AtomicUsize,
    received: std::sync::atomic::AtomicU64,
    pub(crate) subs: Subscribers,
}

impl Router {
    /// Registers a waiting caller. False if that ActionID is already in flight: two waiters
    /// for one ActionID could not be told apart.
    #[must_use]
    pub(crate) fn register(&self, id: String, p: Pending) -> bool {
        let Ok(mut g) = self.pending.lock() else {
            return false;
        };
        if g.contains_key(&id) {
            return false;
        }
        if p.list.is_some() {
            self.lists_in_flight.fetch_add(1, Ordering::AcqRel);
        }
        g.insert(id, p);
        true
    }

    /// Messages decoded on this client's connections so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub(crate) fn forget(&self, id: &str) {
        let removed = self.pending.lock().ok().and_then(|mut g| g.remove(id));
        if let Some(p) = removed
            && p.list.is_some()
        {
            self.lists_in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.pending.lock().map(|g| g.len()).unwrap_or(0)
    }

    /// Fails every action of `generation` with `ConnectionLost`. They are never re-sent.
    pub(crate) fn fail_generation(&self, generation: u64) -> usize {
        let drained: Vec<Pending> = match self.pending.lock() {
            Ok(mut g) => {
                let ids: Vec<String> = g
                    .iter()
                    .filter(|(_, p)| p.generation <= generation)
                    .map(|(k, _)| k.clone())
                    .collect();
                ids.into_iter().filter_map(|k| g.remove(&k)).collect()
            }
            Err(_) => Vec::new(),
        };
        let n = drained.len();
        for p in drained {
            if p.list.is_some() {
                self.lists_in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            let _ = p.tx.send(Err(AmiError::ConnectionLost));
        }
        n
    }

    fn complete(&self, id: &str, r: Result<Reply, AmiError>) {
        let removed = self.pending.lock().ok().and_then(|mut g| g.remove(id));
        if let Some(p) = removed {
            if p.list.is_some() {
                self.lists_in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            let _ = p.tx.send(r);
        }
    }

    /// Routes one message from the socket.
    pub(crate) fn route(&self, m: Message) {
        self.received.fetch_add(1, Ordering::Relaxed);
        match m.kind() {
            MessageKind::Response => self.route_response(m),
            MessageKind::Event => {
                // Only events of an event list carry our ActionID *and* belong to a waiting
                // caller; an OriginateResponse carries the Originate's ActionID but its
                // Response was already delivered, so it goes to subscribers.
                let m = if self.lists_in_flight.load(Ordering::Acquire) > 0 {
                    match m.action_id().map(str::to_owned) {
                        Some(id) => match self.route_list_event(id, m) {
                            Some(m) => m,
                            None => return,
                        },
                        None => m,
                    }
                } else {
                    m
                };
                self.subs.dispatch(m);
            }
            _ => {
                tracing::debug!(kind = ?m.kind(), "ignoring AMI message that is neither response nor event")
            }
        }
    }

    fn route_response(&self, m: Message) {
        let Some(id) = m.action_id().map(str::to_owned) else {
            tracing::debug!("AMI response without ActionID ignored");
            return;
        };
        let mut finish = None;
        if let Ok(mut g) = self.pending.lock() {
            match g.get_mut(&id) {
                None => {
                    tracing::debug!(action_id = %id, "AMI response for no waiting action (late or foreign)");
                }
                Some(p) => match &mut p.list {
                    Some((resp, _))
                        if m.response()
                            .is_some_and(|r| r.eq_ignore_ascii_case("Success"))
                            && m.get("EventList")
                                .is_some_and(|v| v.eq_ignore_ascii_case("start")) =>
                    {
                        *resp = Some(m);
                    }
                    _ => finish = Some(m),
                },
            }
        }
        if let Some(m) = finish {
            self.complete(
                &id,
                Ok(Reply {
                    response: m,
                    events: Vec::new(),
                }),
            );
        }
    }

    /// Adds a list event to its action. Gives the message back if no list waits for it.
    fn route_list_event(&self, id: String, m: Message) -> Option<Message> {
        let complete = m
            .get("EventList")
            .is_some_and(|v| v.eq_ignore_ascii_case("Complete"));
        let mut g = self.pending.lock().ok()?;
        let Some(p) = g.get_mut(&id) else {
            return Some(m);
        };
        let Some((resp, events)) = &mut p.list else {
            return Some(m);
        };
        if complete {
            let response = resp.take().unwrap_or_else(|| m.clone());
            let mut events = std::mem::take(events);
            events.push(m);
            drop(g);
            self.complete(&id, Ok(Reply { response, events }));
        } else if events.len() >= MAX_LIST_EVENTS {
            drop(g);
            self.complete(
                &id,
                Err(AmiError::Refused("event list exceeds the cap".into())),
            );
        } else {
            events.push(m);
        }
        None
    }
}

/// A live session: where to queue actions and how to end it.
pub(crate) struct Link {
    pub(crate) tx: mpsc::Sender<ActionFrame>,
    pub(crate) cancel: CancellationToken,
    /// Fires when the reader or writer stops (peer closed, I/O or protocol error).
    pub(crate) dead: CancellationToken,
    /// Until it fires, the reader holds this session's events back from the subscribers.
    live: CancellationToken,
    /// Events that came during the login and the FullyBooted wait, in order.
    early: Vec<Message>,
}

impl Link {
    /// Lets this session's events through, in the order they came: those of the login and
    /// the FullyBooted wait (routed here, by the caller's task), then those the reader
    /// held since, then the rest as they come. Called once the link is reported up
    /// (after `Notice::Reconnected`), so no subscriber sees an event of a session before
    /// it was told of it.
    pub(crate) fn go_live(&mut self, router: &Router) {
        for m in self.early.drain(..) {
            router.route(m);
        }
        self.live.cancel();
    }
}

/// Whether to wait for `FullyBooted` after the login, and how long.
pub(crate) fn fully_booted_wait(cfg: &AmiConfig) -> Option<Duration> {
    cfg.fully_booted_timeout
        .filter(|_| cfg.events.carries("system"))
}

/// Connects, reads the greeting, logs in, sends the configured filters, waits for
/// `FullyBooted` (see [`AmiConfig::fully_booted_timeout`]), then starts the reader and
/// writer tasks. The events received meanwhile wait for [`Link::go_live`].
///
/// # Errors
/// I/O, a bad greeting, `AuthenticationFailed`, a timeout on any step, `NotBooted`.
pub(crate) async fn establish(
    cfg: &AmiConfig,
    router: Arc<Router>,
    id_prefix: &str,
) -> Result<Link, AmiError> {
    let booted_wait = fully_booted_wait(cfg);
    let mut held = Vec::new();
    let fut = async {
        let stream = TcpStream::connect((cfg.host.as_str(), cfg.port)).await?;
        stream.set_nodelay(true)?;
        let mut framed = Framed::new(
            stream,
            AmiCodec::client(cfg.max_message_bytes, cfg.max_lines_per_message),
        );
        let banner = framed.next().await.ok_or(AmiError::Closed)??;
        let greeting = banner.banner().unwrap_or_default();
        if !greeting.starts_with("Asterisk Call Manager") {
            return Err(AmiError::BadGreeting(greeting.chars().take(80).collect()));
        }
        login(&mut framed, cfg, id_prefix, &mut held).await?;
        // Once a session has an include filter, Asterisk sends only what some include
        // matches, and a FullyBooted sent when the boot ends is a normal event: let ours
        // through. (The one sent with the login ignores filters: eventfilter-user.txt.)
        let let_booted_through = (booted_wait.is_some()
            && cfg.filters.iter().any(Filter::is_include))
        .then(|| Filter::event_name("FullyBooted"));
        for (i, f) in cfg.filters.iter().chain(&let_booted_through).enumerate() {
            let r = request(
                &mut framed,
                f,
                &format!("{id_prefix}-filter-{i}"),
                &mut held,
            )
            .await?;
            if !r
                .response()
                .is_some_and(|r| r.eq_ignore_ascii_case("Success"))
            {
                return Err(AmiError::Refused(
                    r.message().unwrap_or("Filter refused").to_owned(),
                ));
            }
        }
        Ok::<_, AmiError>(framed)
    };
    let mut framed = tokio::time::timeout(cfg.connect_timeout, fut)
        .await
        .map_err(|_| AmiError::Timeout(cfg.connect_timeout))??;
    if let Some(wait) = booted_wait
        && !held.iter().any(is_fully_booted)
    {
        tokio::time::timeout(wait, async {
            loop {
                let m = framed.next().await.ok_or(AmiError::Closed)??;
                let booted = is_fully_booted(&m);
                hold(&mut held, m)?;
                if booted {
                    return Ok::<_, AmiError>(());
                }
            }
        })
        .await
        .map_err(|_| AmiError::NotBooted(wait))??;
    }
    let mut link = spawn_tasks(framed, router);
    link.early = held;
    Ok(link)
}

fn is_fully_booted(m: &Message) -> bool {
    m.event_name()
        .is_some_and(|n| n.eq_ignore_ascii_case("FullyBooted"))
}

/// Keeps an event that came before the link is up; anything else is dropped (no action of
/// ours can be waiting yet).
fn hold(held: &mut Vec<Message>, m: Message) -> Result<(), AmiError> {
    if !m.is_event() {
        return Ok(());
    }
    if held.len() >= MAX_HELD_EVENTS {
        return Err(AmiError::TooManyEarlyEvents(MAX_HELD_EVENTS));
    }
    held.push(m);
    Ok(())
}

async fn login(
    framed: &mut Framed<TcpStream, AmiCodec>,
    cfg: &AmiConfig,
    id_prefix: &str,
    held: &mut Vec<Message>,
) -> Result<(), AmiError> {
    let challenge = match cfg.auth {
        LoginAuth::Plain => None,
        LoginAuth::Md5 => {
            let r = request(framed, &Challenge, &format!("{id_prefix}-challenge"), held).await?;
            match r.get("Challenge") {
                Some(c) => Some(c.to_owned()),
                None => {
                    return Err(AmiError::AuthenticationFailed(
                        r.message().unwrap_or("no challenge").to_owned(),
                    ));
                }
            }
        }
    };
    let login = Login {
        username: cfg.username.clone(),
        secret: cfg.secret.clone(),
        events: Some(cfg.events.to_header()),
        challenge,
    };
    let r = request(framed, &login, &format!("{id_prefix}-login"), held).await?;
    if r.response()
        .is_some_and(|r| r.eq_ignore_ascii_case("Success"))
    {
        tracing::info!(host = %cfg.host, port = cfg.port, user = %cfg.username, "AMI logged in");
        Ok(())
    } else {
        Err(AmiError::AuthenticationFailed(
            r.message().unwrap_or("Authentication failed").to_owned(),
        ))
    }
}

/// Sends one action before the tasks start and waits for the response with its ActionID,
/// holding the events that come meanwhile (e.g. FullyBooted right after the login reply).
async fn request<A: Action>(
    framed: &mut Framed<TcpStream, AmiCodec>,
    a: &A,
    id: &str,
    held: &mut Vec<Message>,
) -> Result<Message, AmiError> {
    framed.send(actions::encode(a, Some(id))?).await?;
    loop {
        let m = framed.next().await.ok_or(AmiError::Closed)??;
        if m.is_response() && m.action_id() == Some(id) {
            return Ok(m);
        }
        hold(held, m)?;
    }
}

fn spawn_tasks(framed: Framed<TcpStream, AmiCodec>, router: Arc<Router>) -> Link {
    let (mut sink, mut stream) = framed.split::<ActionFrame>();
    let (tx, mut rx) = mpsc::channel::<ActionFrame>(4096);
    let cancel = CancellationToken::new();
    let dead = CancellationToken::new();
    let live = CancellationToken::new();

    let (c, d) = (cancel.clone(), dead.clone());
    tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                _ = c.cancelled() => break,
                f = rx.recv() => match f { Some(f) => f, None => break },
            };
            // Batch whatever else is queued into one flush.
            let mut res = sink.feed(frame).await;
            while res.is_ok() {
                match rx.try_recv() {
                    Ok(f) => res = sink.feed(f).await,
                    Err(_) => break,
                }
            }
            if let Err(e) = res.and(sink.flush().await) {
                tracing::warn!(error = %e, "AMI write failed");
                break;
            }
        }
        let _ = sink.close().await;
        d.cancel();
    });

    let (c, d, l) = (cancel.clone(), dead.clone(), live.clone());
    tokio::spawn(async move {
        // Events wait here until the link is reported up; responses never wait.
        let mut held = Some(Vec::new());
        // Asterisk closes the socket after `Response: Goodbye` (our Logoff): expected.
        let mut said_goodbye = false;
        loop {
            let next = tokio::select! {
                _ = c.cancelled() => break,
                _ = d.cancelled() => break,
                _ = l.cancelled(), if held.is_some() => {
                    for m in held.take().unwrap_or_default() {
                        router.route(m);
                    }
                    continue;
                }
                n = stream.next() => n,
            };
            match next {
                Some(Ok(m)) => {
                    said_goodbye |= m
                        .response()
                        .is_some_and(|r| r.eq_ignore_ascii_case("Goodbye"));
                    match held.as_mut() {
                        Some(h) if m.is_event() => {
                            if let Err(e) = hold(h, m) {
                                tracing::warn!(error = %e, "AMI link not up yet; closing this connection");
                                break;
                            }
                        }
                        _ => router.route(m),
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "AMI read failed; closing this connection");
                    break;
                }
                None if said_goodbye => {
                    tracing::debug!("AMI peer closed the connection after our Logoff");
                    break;
                }
                None => {
                    tracing::warn!("AMI peer closed the connection");
                    break;
                }
            }
        }
        if let Some(h) = held.take() {
            // Ended while being called up: these still go out after `Reconnected`.
            tokio::select! {
                _ = l.cancelled() => h.into_iter().for_each(|m| router.route(m)),
                _ = c.cancelled() => {}
            }
        }
        d.cancel();
    });

    Link {
        tx,
        cancel,
        dead,
        live,
        early: Vec::new(),
    }
}
