//! Routes AMI events to the call they belong to.
//!
//! One subscription for the whole kind. Every attempt registers its keys (its
//! ChannelId, which is also its ActionID, and its CallerID tag) *before* its Originate
//! is written: under load Asterisk can send a call's events, even its
//! OriginateResponse, before the Originate's own reply. An event is matched by
//! whichever key it carries (ActionID, Uniqueid with any `;2` leg suffix cut off,
//! Linkedid, CallerID); everything else (other clients' calls, other replicas' calls)
//! is ignored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::ami::{Message, Notice, Subscription};

/// The prefix of every ChannelId this product gives a call.
pub const TAG_PREFIX: &str = "dialout-";

/// What a call receives.
#[derive(Debug, Clone)]
pub enum CallEvent {
    Event(Arc<Message>),
    /// The link dropped, or events were lost: the call may have missed its own.
    Gap,
    /// Logged in again after a drop.
    Reconnected,
}

#[derive(Default)]
pub struct Tracker {
    calls: Mutex<HashMap<String, mpsc::UnboundedSender<CallEvent>>>,
    registered: AtomicUsize,
}

/// A call's registration; dropping it unregisters every key.
pub struct Registration {
    tracker: Arc<Tracker>,
    keys: Vec<String>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut calls = self.tracker.calls();
        for k in &self.keys {
            calls.remove(k);
        }
        self.tracker.registered.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The events a dialer acts on, and only those that carry our prefix somewhere a
/// key can be: the subscription filter runs on the socket reader, so it stays cheap.
pub fn is_ours(m: &Message) -> bool {
    matches!(
        m.event_name(),
        Some("OriginateResponse" | "Hangup" | "Newchannel" | "Newstate" | "Cdr")
    ) && [
        "ActionID",
        "Uniqueid",
        "UniqueID",
        "Linkedid",
        "CallerIDName",
    ]
    .iter()
    .any(|k| m.get(k).is_some_and(|v| v.starts_with(TAG_PREFIX)))
}

impl Tracker {
    fn calls(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<CallEvent>>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a call under `keys`; its events arrive on the returned receiver.
    pub fn register(
        self: &Arc<Self>,
        keys: Vec<String>,
    ) -> (Registration, mpsc::UnboundedReceiver<CallEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut calls = self.calls();
        for k in &keys {
            calls.insert(k.clone(), tx.clone());
        }
        drop(calls);
        self.registered.fetch_add(1, Ordering::Relaxed);
        (
            Registration {
                tracker: self.clone(),
                keys,
            },
            rx,
        )
    }

    /// Calls registered now.
    pub fn live(&self) -> usize {
        self.registered.load(Ordering::Relaxed)
    }

    fn route(&self, m: Arc<Message>) {
        let calls = self.calls();
        let key_of = |field: &str| {
            let v = m.get(field)?;
            let v = v.split_once(';').map_or(v, |(head, _)| head);
            calls.get(v)
        };
        let target = [
            "ActionID",
            "Uniqueid",
            "UniqueID",
            "Linkedid",
            "CallerIDName",
            "CallerIDNum",
        ]
        .iter()
        .find_map(|f| key_of(f));
        if let Some(tx) = target {
            let _ = tx.send(CallEvent::Event(m.clone()));
        }
    }

    fn broadcast(&self, e: CallEvent) {
        for tx in self.calls().values() {
            let _ = tx.send(e.clone());
        }
    }

    /// Feeds the calls from `events` until the subscription ends, and reports the
    /// link's state to `link_up`.
    pub async fn run(self: Arc<Self>, mut events: Subscription, link_up: impl Fn(bool)) {
        while let Some(notice) = events.recv().await {
            match notice {
                Notice::Event(m) => self.route(m),
                Notice::Lagged(n) => {
                    tracing::warn!(
                        lost = n,
                        "AMI events lost: calls in flight check their state"
                    );
                    self.broadcast(CallEvent::Gap);
                }
                Notice::Disconnected { reason } => {
                    tracing::warn!(%reason, "AMI link down: dial jobs are not leased until it is back");
                    link_up(false);
                    self.broadcast(CallEvent::Gap);
                }
                Notice::Reconnected => {
                    tracing::info!("AMI link back: dial jobs are leased again");
                    link_up(true);
                    self.broadcast(CallEvent::Reconnected);
                }
            }
        }
        link_up(false);
    }
}
