//! Event fan-out. Each subscriber has its own filter and a bounded budget of queued events.
//!
//! The socket reader hands an event to every subscriber without ever awaiting one: a full
//! subscriber loses the event (counted, logged once per burst, reported as
//! [`Notice::Lagged`]). Asterisk drops a manager client that reads too slowly (100 ms write
//! timeout), so a stalled reader would cost every subscriber the whole connection.
//! Link notices (`Disconnected`/`Reconnected`) bypass the event budget: they are rare and a
//! subscriber must not miss that it has to reconcile.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use super::message::Message;

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum Notice {
    /// An event that passed this subscriber's filter.
    Event(Arc<Message>),
    /// `n` events were dropped because this subscriber's buffer was full.
    Lagged(u64),
    /// The link to Asterisk dropped: events are being missed from here on.
    Disconnected { reason: String },
    /// Logged in again after a gap: reconcile (e.g. `CoreShowChannels`) before trusting state.
    Reconnected,
}

/// A subscriber's predicate over events.
pub type EventFilter = Arc<dyn Fn(&Message) -> bool + Send + Sync>;

/// Most link notices kept for a subscriber that never reads (each reconnect adds two).
const MAX_QUEUED_NOTICES: usize = 64;

struct Shared {
    queued: AtomicUsize,
    notices: AtomicUsize,
    capacity: usize,
    dropped: AtomicU64,
    lag: AtomicU64,
}

enum Item {
    Event(Arc<Message>),
    Link(Notice),
}

struct Slot {
    id: u64,
    filter: EventFilter,
    tx: mpsc::UnboundedSender<Item>,
    shared: Arc<Shared>,
}

impl Slot {
    /// Offers an event. Returns false when the subscriber is gone.
    fn offer(&self, m: &Arc<Message>) -> bool {
        if !(self.filter)(m) {
            return !self.tx.is_closed();
        }
        let s = &self.shared;
        if s.queued.load(Ordering::Acquire) >= s.capacity {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            if s.lag.fetch_add(1, Ordering::AcqRel) == 0 {
                tracing::warn!(
                    subscriber = self.id,
                    "AMI subscriber is full; dropping events"
                );
            }
            return !self.tx.is_closed();
        }
        s.queued.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Item::Event(m.clone())).is_err() {
            return false;
        }
        true
    }

    fn notify(&self, n: Notice) -> bool {
        if self.shared.notices.load(Ordering::Acquire) >= MAX_QUEUED_NOTICES {
            return !self.tx.is_closed();
        }
        self.shared.notices.fetch_add(1, Ordering::AcqRel);
        self.tx.send(Item::Link(n)).is_ok()
    }
}

/// The set of subscribers; shared by the reader and the client handle.
#[derive(Default)]
pub(crate) struct Subscribers {
    slots: RwLock<Vec<Slot>>,
    next_id: AtomicU64,
    closed: std::sync::atomic::AtomicBool,
}

impl Subscribers {
    pub(crate) fn add(&self, filter: EventFilter, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            notices: AtomicUsize::new(0),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            lag: AtomicU64::new(0),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            id,
            filter,
            tx,
            shared: shared.clone(),
        };
        // After shutdown the slot is dropped here, so the new subscription ends at once.
        if let Ok(mut g) = self.slots.write()
            && !self.closed.load(Ordering::Acquire)
        {
            g.push(slot);
        }
        Subscription { rx, shared }
    }

    /// Hands one event to every subscriber; never blocks on any of them.
    pub(crate) fn dispatch(&self, m: Message) {
        let m = Arc::new(m);
        let mut gone = false;
        if let Ok(g) = self.slots.read() {
            for s in g.iter() {
                gone |= !s.offer(&m);
            }
        }
        if gone {
            self.prune();
        }
    }

    pub(crate) fn notify(&self, n: &Notice) {
        let mut gone = false;
        if let Ok(g) = self.slots.read() {
            for s in g.iter() {
                gone |= !s.notify(n.clone());
            }
        }
        if gone {
            self.prune();
        }
    }

    /// Ends every subscription: each `recv` returns `None` once its queue is read.
    pub(crate) fn close_all(&self) {
        if let Ok(mut g) = self.slots.write() {
            self.closed.store(true, Ordering::Release);
            g.clear();
        }
    }

    fn prune(&self) {
        if let Ok(mut g) = self.slots.write() {
            g.retain(|s| !s.tx.is_closed());
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.slots.read().map(|g| g.len()).unwrap_or(0)
    }
}

/// The receiving end of one subscription. Dropping it unsubscribes.
pub struct Subscription {
    rx: mpsc::UnboundedReceiver<Item>,
    shared: Arc<Shared>,
}

impl Subscription {
    /// Next notice; `None` once the client has shut down and everything was read.
    pub async fn recv(&mut self) -> Option<Notice> {
        if let Some(n) = self.take_lag() {
            return Some(n);
        }
        let item = self.rx.recv().await?;
        Some(self.unwrap_item(item))
    }

    /// Next notice if one is ready.
    pub fn try_recv(&mut self) -> Option<Notice> {
        if let Some(n) = self.take_lag() {
            return Some(n);
        }
        let item = self.rx.try_recv().ok()?;
        Some(self.unwrap_item(item))
    }

    /// Events dropped for this subscriber so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Events waiting to be read.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    fn take_lag(&self) -> Option<Notice> {
        let lag = self.shared.lag.swap(0, Ordering::AcqRel);
        (lag > 0).then_some(Notice::Lagged(lag))
    }

    fn unwrap_item(&self, item: Item) -> Notice {
        match item {
            Item::Event(m) => {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                Notice::Event(m)
            }
            Item::Link(n) => {
                self.shared.notices.fetch_sub(1, Ordering::AcqRel);
                n
            }
        }
    }
}
