//! Routes AMI events to the call they belong to.
//!
//! One subscription for the whole kind. Every attempt registers its keys (its
//! ChannelId, which is also its ActionID, and its CallerID tag) *before* its Originate
//! is written: under load Asterisk can send a call's events, even its
//! OriginateResponse, before the Originate's own reply. An event is matched by
//! whichever key it carries (ActionID, Uniqueid with any `;2` leg suffix cut off,
//! Linkedid, CallerID); everything else (other clients' calls, other replicas' calls)
//! is ignored.
//!
//! After a gap (the link came back, or events were lost) the tracker asks Asterisk
//! once for its channels and tells every call that was registered before it asked,
//! so a call that ended unseen can end too: one `CoreShowChannels` for all calls, not
//! one per call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_channel::mpsc;

use crate::ami::actions::CoreShowChannels;
use crate::ami::{AmiClient, Message, Notice, Subscription};
use crate::metrics::{DialMetrics, Live};

/// The prefix of every ChannelId this product gives a call.
pub const TAG_PREFIX: &str = "dialout-";

/// What a call receives.
#[derive(Debug, Clone)]
pub enum CallEvent {
    Event(Arc<Message>),
    /// After a gap: every channel Asterisk had when asked.
    Listed(Arc<Listing>),
}

/// Asterisk's channels at one moment (`CoreShowChannels`), by Uniqueid: the channel's
/// name and whether it is answered (state Up).
#[derive(Debug, Default)]
pub struct Listing(HashMap<String, (String, bool)>);

impl Listing {
    pub fn from_events(events: &[Message]) -> Self {
        Self(
            events
                .iter()
                .filter_map(|e| {
                    let uid = e.get("Uniqueid")?;
                    let name = e.get("Channel").unwrap_or_default().to_owned();
                    Some((uid.to_owned(), (name, e.get("ChannelState") == Some("6"))))
                })
                .collect(),
        )
    }

    /// The channel with this Uniqueid: its name and whether it is up.
    pub fn get(&self, uniqueid: &str) -> Option<(&str, bool)> {
        self.0.get(uniqueid).map(|(n, up)| (n.as_str(), *up))
    }
}

#[derive(Default)]
struct Calls {
    by_key: HashMap<String, u64>,
    /// Each call's queue of events: unbounded, as events are never dropped (a call
    /// takes a handful), and one per live call, so small while empty.
    senders: HashMap<u64, mpsc::UnboundedSender<CallEvent>>,
}

#[derive(Default)]
pub struct Tracker {
    calls: Mutex<Calls>,
    next_id: AtomicU64,
    metrics: DialMetrics,
}

/// A call's registration; dropping it unregisters every key.
pub struct Registration {
    tracker: Arc<Tracker>,
    id: u64,
    keys: Vec<String>,
    _live: Live,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut calls = self.tracker.calls();
        for k in &self.keys {
            if calls.by_key.get(k) == Some(&self.id) {
                calls.by_key.remove(k);
            }
        }
        calls.senders.remove(&self.id);
    }
}

/// The events a dialer acts on, and only those that carry our prefix somewhere a
/// key can be: the subscription filter runs on the socket reader, so it stays cheap.
pub fn is_ours(m: &Message) -> bool {
    matches!(
        m.event_name(),
        Some("OriginateResponse" | "Hangup" | "Newchannel" | "Newstate")
    ) && ["ActionID", "Uniqueid", "Linkedid", "CallerIDName"]
        .iter()
        .any(|k| m.get(k).is_some_and(|v| v.starts_with(TAG_PREFIX)))
}

impl Tracker {
    /// A tracker that counts the calls it follows and the link's reconnects into
    /// `metrics`.
    pub fn new(metrics: DialMetrics) -> Self {
        Self {
            metrics,
            ..Self::default()
        }
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a call under `keys`; its events arrive on the returned receiver.
    pub fn register(
        self: &Arc<Self>,
        keys: Vec<String>,
    ) -> (Registration, mpsc::UnboundedReceiver<CallEvent>) {
        let (tx, rx) = mpsc::unbounded();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut calls = self.calls();
        for k in &keys {
            calls.by_key.insert(k.clone(), id);
        }
        calls.senders.insert(id, tx);
        drop(calls);
        (
            Registration {
                tracker: self.clone(),
                id,
                keys,
                _live: self.metrics.live_call(),
            },
            rx,
        )
    }

    fn route(&self, m: Arc<Message>) {
        let calls = self.calls();
        let target = [
            "ActionID",
            "Uniqueid",
            "Linkedid",
            "CallerIDName",
            "CallerIDNum",
        ]
        .iter()
        .find_map(|field| {
            let v = m.get(field)?;
            let v = v.split_once(';').map_or(v, |(head, _)| head);
            calls.by_key.get(v)
        })
        .and_then(|id| calls.senders.get(id));
        if let Some(tx) = target {
            let _ = tx.unbounded_send(CallEvent::Event(m.clone()));
        }
    }

    /// Asks Asterisk for its channels and tells every call registered before the
    /// question went out (a call placed after it may not be listed yet).
    async fn reconcile(self: Arc<Self>, client: AmiClient) {
        let before = self.next_id.load(Ordering::Relaxed);
        let listed = match client.send_list(&CoreShowChannels).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(error = %e, "CoreShowChannels after a gap failed; calls wait for their own events");
                return;
            }
        };
        let listing = Arc::new(Listing::from_events(&listed.events));
        for (id, tx) in &self.calls().senders {
            if *id < before {
                let _ = tx.unbounded_send(CallEvent::Listed(listing.clone()));
            }
        }
    }

    /// Feeds the calls from `events` until the subscription ends, reconciles after
    /// every gap, and reports the link's state to `link_up`.
    pub async fn run(
        self: Arc<Self>,
        mut events: Subscription,
        client: AmiClient,
        link_up: impl Fn(bool),
    ) {
        while let Some(notice) = events.recv().await {
            match notice {
                Notice::Event(m) => self.route(m),
                Notice::Lagged(n) => {
                    tracing::warn!(lost = n, "AMI events lost: checking the calls in flight");
                    tokio::spawn(self.clone().reconcile(client.clone()));
                }
                Notice::Disconnected { reason } => {
                    tracing::warn!(%reason, "AMI link down: dial jobs are not leased until it is back");
                    link_up(false);
                }
                Notice::Reconnected => {
                    tracing::info!(
                        "AMI link back: dial jobs are leased again; checking the calls in flight"
                    );
                    self.metrics.reconnected();
                    link_up(true);
                    tokio::spawn(self.clone().reconcile(client.clone()));
                }
            }
        }
        link_up(false);
    }
}
