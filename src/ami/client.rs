//! The handle the program holds: actions, subscriptions, reconnects, shutdown.
//!
//! A supervisor task owns the link. When it drops, every action in flight fails with
//! [`AmiError::ConnectionLost`] and is **never re-sent** (re-sending an unanswered Originate
//! places the call twice); subscribers get [`Notice::Disconnected`]; the supervisor reconnects
//! with exponential backoff and jitter, logs in again, waits for Asterisk's `FullyBooted`
//! (bounded: [`AmiConfig::fully_booted_timeout`]) and sends [`Notice::Reconnected`]; the
//! new session's events follow it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::actions::{self, Action, ActionFrame, Logoff, Originate, Ping};
use super::config::AmiConfig;
use super::connection::{self, Link, Pending, Reply, Router};
use super::error::AmiError;
use super::message::Message;
use super::subscriber::{Notice, Subscription};
use crate::backoff::Backoff;

enum LinkState {
    Up {
        generation: u64,
        tx: mpsc::Sender<ActionFrame>,
    },
    Down,
}

struct Inner {
    cfg: AmiConfig,
    counter: AtomicU64,
    state: Mutex<LinkState>,
    router: Arc<Router>,
    shutdown: CancellationToken,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    reconnects: AtomicU64,
    /// Set before the polite Logoff, so the close that follows is not taken for a drop.
    closing: std::sync::atomic::AtomicBool,
    /// Actions in flight that Asterisk serves before anything else on the session
    /// ([`Action::blocks_session`]); the keepalive Ping waits for them.
    blocking: AtomicUsize,
}

/// Counts one blocking action for as long as it is alive (dropped on every way out,
/// cancellation included).
struct Blocking<'a>(&'a AtomicUsize);

impl<'a> Blocking<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::AcqRel);
        Self(n)
    }
}

impl Drop for Blocking<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A cheap-to-clone handle on one AMI connection (and its reconnects).
#[derive(Clone)]
pub struct AmiClient {
    inner: Arc<Inner>,
}

/// An accepted `Async: true` Originate: the outcome comes later as an `OriginateResponse`
/// event carrying `action_id`.
#[derive(Debug)]
pub struct OriginateQueued {
    pub action_id: String,
    pub response: Message,
}

impl AmiClient {
    /// Connects and logs in once and waits for `FullyBooted`; a failure here is returned
    /// (no silent retry loop for a wrong secret). Later drops are handled by reconnecting.
    ///
    /// # Errors
    /// Connection, greeting, login or filter errors; [`AmiError::NotBooted`].
    pub async fn connect(cfg: AmiConfig) -> Result<AmiClient, AmiError> {
        if cfg.fully_booted_timeout.is_some() && connection::fully_booted_wait(&cfg).is_none() {
            tracing::warn!(
                events = %cfg.events.to_header(),
                "the AMI login's Events mask has no `system` class, so Asterisk's FullyBooted cannot arrive: \
                 the link is called up without knowing that Asterisk has finished booting, and an Originate \
                 right after an Asterisk restart may be refused; add `system` to the mask"
            );
        }
        let router = Arc::new(Router::default());
        let prefix = cfg.action_id_prefix.clone();
        let mut link = connection::establish(&cfg, router.clone(), &prefix).await?;
        // Nobody can have subscribed yet: what the login brought goes nowhere.
        link.go_live(&router);
        let inner = Arc::new(Inner {
            cfg,
            counter: AtomicU64::new(0),
            state: Mutex::new(LinkState::Up {
                generation: 1,
                tx: link.tx.clone(),
            }),
            router,
            shutdown: CancellationToken::new(),
            supervisor: Mutex::new(None),
            reconnects: AtomicU64::new(0),
            closing: std::sync::atomic::AtomicBool::new(false),
            blocking: AtomicUsize::new(0),
        });
        let sup = tokio::spawn(supervise(inner.clone(), link, 1));
        if let Ok(mut g) = inner.supervisor.lock() {
            *g = Some(sup);
        }
        Ok(AmiClient { inner })
    }

    /// A fresh, unique ActionID (`<prefix>-<counter>`).
    pub fn next_action_id(&self) -> String {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{n}", self.inner.cfg.action_id_prefix)
    }

    /// Subscribes to events passing `filter`, with the configured buffer size.
    pub fn subscribe(
        &self,
        filter: impl Fn(&Message) -> bool + Send + Sync + 'static,
    ) -> Subscription {
        self.subscribe_with_capacity(filter, self.inner.cfg.subscriber_buffer)
    }

    /// Subscribes with an explicit buffer (events beyond it are dropped and counted).
    pub fn subscribe_with_capacity(
        &self,
        filter: impl Fn(&Message) -> bool + Send + Sync + 'static,
        capacity: usize,
    ) -> Subscription {
        self.inner.router.subs.add(Arc::new(filter), capacity)
    }

    /// Sends an action and waits (bounded by `action_timeout`, or what the action asks for
    /// in [`Action::response_timeout`]) for its response.
    ///
    /// # Errors
    /// [`AmiError::Refused`] for `Response: Error`; `Action` if a value was refused before
    /// sending; `Timeout`, `ConnectionLost`, `NotConnected`, `Shutdown`.
    pub async fn send_action<A: Action + ?Sized>(&self, action: &A) -> Result<Message, AmiError> {
        let id = self.next_action_id();
        self.send_action_with_id(action, &id)
            .await
            .map(|r| r.response)
    }

    /// Sends an event-list action (`CoreShowChannels`, `Status`) and collects the list.
    ///
    /// # Errors
    /// As [`AmiClient::send_action`].
    pub async fn send_list<A: Action + ?Sized>(&self, action: &A) -> Result<Reply, AmiError> {
        let id = self.next_action_id();
        self.send_action_with_id(action, &id).await
    }

    /// Sends an Originate and returns its ActionID once Asterisk has queued it.
    ///
    /// # Errors
    /// As [`AmiClient::send_action`]; synchronous rejections (`Extension does not exist.`,
    /// `Invalid channel`, `Permission denied`) are `Refused`.
    pub async fn originate(&self, o: &Originate) -> Result<OriginateQueued, AmiError> {
        let action_id = self.next_action_id();
        let r = self.send_action_with_id(o, &action_id).await?;
        Ok(OriginateQueued {
            action_id,
            response: r.response,
        })
    }

    /// Sends with a caller-chosen ActionID (it must be unique among actions in flight).
    ///
    /// # Errors
    /// As [`AmiClient::send_action`].
    pub async fn send_action_with_id<A: Action + ?Sized>(
        &self,
        action: &A,
        id: &str,
    ) -> Result<Reply, AmiError> {
        // Validate and encode first: a refused value never touches the link.
        let frame = actions::encode(action, Some(id))?;
        if self.inner.shutdown.is_cancelled() {
            return Err(AmiError::Shutdown);
        }
        let _blocking = action
            .blocks_session()
            .then(|| Blocking::new(&self.inner.blocking));
        let (otx, orx) = oneshot::channel();
        let tx = {
            let g = self
                .inner
                .state
                .lock()
                .map_err(|_| AmiError::NotConnected)?;
            match &*g {
                LinkState::Down => return Err(AmiError::NotConnected),
                LinkState::Up { generation, tx } => {
                    // Registered under the state lock, so a link drop either sees it (and
                    // fails it) or happened before (and we refused above).
                    if !self.inner.router.register(
                        id.to_owned(),
                        Pending::new(otx, action.is_list(), *generation),
                    ) {
                        return Err(AmiError::DuplicateActionId(id.to_owned()));
                    }
                    tx.clone()
                }
            }
        };
        if tx.send(frame).await.is_err() {
            self.inner.router.forget(id);
            return Err(AmiError::ConnectionLost);
        }
        let t = action.response_timeout(self.inner.cfg.action_timeout);
        match tokio::time::timeout(t, orx).await {
            Err(_) => {
                self.inner.router.forget(id);
                Err(AmiError::Timeout(t))
            }
            Ok(Err(_)) => Err(AmiError::ConnectionLost),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Ok(Ok(reply))) => {
                if reply
                    .response
                    .response()
                    .is_some_and(|r| r.eq_ignore_ascii_case("Error"))
                {
                    Err(AmiError::Refused(
                        reply.response.message().unwrap_or("Error").to_owned(),
                    ))
                } else {
                    Ok(reply)
                }
            }
        }
    }

    pub fn is_connected(&self) -> bool {
        self.inner
            .state
            .lock()
            .map(|g| matches!(*g, LinkState::Up { .. }))
            .unwrap_or(false)
    }

    /// Messages (responses and events) received so far, over all connections.
    pub fn messages_received(&self) -> u64 {
        self.inner.router.received()
    }

    /// Live subscriptions.
    pub fn subscribers(&self) -> usize {
        self.inner.router.subs.count()
    }

    /// Actions waiting for a response right now.
    pub fn in_flight(&self) -> usize {
        self.inner.router.in_flight()
    }

    /// How many times the link was re-established.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Logs off (bounded wait), closes the socket and stops reconnecting. In-flight actions
    /// fail with `ConnectionLost`; subscriptions end after their queued notices.
    pub async fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        if self.is_connected() {
            let _ = tokio::time::timeout(
                std::time::Duration::from_millis(500),
                self.send_action(&Logoff),
            )
            .await;
        }
        self.inner.shutdown.cancel();
        let h = self.inner.supervisor.lock().ok().and_then(|mut g| g.take());
        if let Some(h) = h {
            let _ = h.await;
        }
    }
}

async fn supervise(inner: Arc<Inner>, mut link: Link, mut generation: u64) {
    loop {
        let reason = run_link(&inner, &link).await;
        link.cancel.cancel();
        if let Ok(mut g) = inner.state.lock() {
            *g = LinkState::Down;
            let failed = inner.router.fail_generation(generation);
            if failed > 0 {
                tracing::warn!(
                    failed,
                    "AMI actions in flight failed with the link (not re-sent)"
                );
            }
        }
        if inner.shutdown.is_cancelled() || inner.closing.load(Ordering::SeqCst) {
            break;
        }
        tracing::warn!(%reason, "AMI link lost; reconnecting");
        inner.router.subs.notify(&Notice::Disconnected { reason });
        let mut pacer = Backoff::new(
            inner.cfg.reconnect_backoff_min,
            inner.cfg.reconnect_backoff_max,
        )
        .pacer();
        let new_link = loop {
            let wait = pacer.failed();
            tokio::select! {
                _ = inner.shutdown.cancelled() => break None,
                _ = tokio::time::sleep(wait) => {}
            }
            let attempt_fut = connection::establish(
                &inner.cfg,
                inner.router.clone(),
                &inner.cfg.action_id_prefix,
            );
            let result = tokio::select! {
                _ = inner.shutdown.cancelled() => break None,
                r = attempt_fut => r,
            };
            match result {
                Ok(l) => break Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, attempt = pacer.failures(), "AMI reconnect failed");
                }
            }
        };
        let Some(l) = new_link else { break };
        generation += 1;
        link = l;
        if let Ok(mut g) = inner.state.lock() {
            *g = LinkState::Up {
                generation,
                tx: link.tx.clone(),
            };
        }
        inner.reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::info!("AMI reconnected");
        inner.router.subs.notify(&Notice::Reconnected);
        link.go_live(&inner.router);
    }
    inner.router.subs.notify(&Notice::Disconnected {
        reason: "client shut down".into(),
    });
    inner.router.subs.close_all();
}

/// Waits until this link dies (or shutdown), pinging it on the configured period.
async fn run_link(inner: &Arc<Inner>, link: &Link) -> String {
    let client = AmiClient {
        inner: inner.clone(),
    };
    let mut tick = inner.cfg.ping_interval.map(|p| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return "client shut down".into(),
            _ = link.dead.cancelled() => return "connection closed".into(),
            _ = async {
                match tick.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                if inner.blocking.load(Ordering::Acquire) > 0 {
                    // Asterisk answers nothing else until that action's response, which
                    // is bounded by its own timeout: a Ping now would only time out.
                    tracing::debug!("keepalive Ping skipped: a blocking action is in flight");
                    continue;
                }
                // Keep watching the link while the Ping waits: this task is the one that
                // fails in-flight actions, so it must not sit out a dead link's timeout.
                tokio::select! {
                    _ = inner.shutdown.cancelled() => return "client shut down".into(),
                    _ = link.dead.cancelled() => return "connection closed".into(),
                    r = client.send_action(&Ping) => match r {
                        Ok(_) => {}
                        // A blocking action sent just before this Ping went out holds it up.
                        Err(AmiError::Timeout(_)) if inner.blocking.load(Ordering::Acquire) > 0 => {}
                        Err(AmiError::Timeout(_)) => return "keepalive Ping timed out".into(),
                        // A refused Ping still proves the link is alive.
                        Err(AmiError::Refused(_)) => {}
                        Err(e) => return format!("keepalive Ping failed: {e}"),
                    },
                }
            }
        }
    }
}
