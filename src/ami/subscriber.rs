//! Event fan-out. Each subscriber has its own filter and a bounded budget of queued events.
//!
//! The socket reader hands an event to every subscriber without ever awaiting one: a full
//! subscriber loses the event (counted, logged once per burst, reported as
//! [`Notice::Lagged`] in the place of the lost events). Asterisk drops a manager client
//! that reads too slowly (100 ms write timeout), so a stalled reader would cost every
//! subscriber the whole connection.
//!
//! Where the gap was: the first event dropped in a burst queues a marker holding a count,
//! and the burst's later drops add to it. The subscriber, reaching the marker, seals it
//! (swaps in [`SEALED`]) and reads the count; a drop that finds its marker sealed queues a
//! new one. A compare-and-swap on one side and a swap on the other: every drop is counted
//! exactly once, however the reader and the subscriber interleave.
//! Link notices (`Disconnected`/`Reconnected`) bypass the event budget: they are rare and a
//! subscriber must not miss that it has to reconcile.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::mpsc;

use super::message::Message;

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum Notice {
    /// An event that passed this subscriber's filter.
    Event(Arc<Message>),
    /// `n` events were dropped here because this subscriber's buffer was full: it comes
    /// after the events queued before the first lost one, before those queued after.
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

/// A lag marker's count once its subscriber has read it: later drops need a new marker.
const SEALED: u64 = u64::MAX;

struct Shared {
    queued: AtomicUsize,
    notices: AtomicUsize,
    capacity: usize,
    dropped: AtomicU64,
}

enum Item {
    Event(Arc<Message>),
    Link(Notice),
    /// Events dropped at this point; the count grows until the subscriber seals it.
    Lag(Arc<AtomicU64>),
}

struct Slot {
    id: u64,
    filter: EventFilter,
    tx: mpsc::UnboundedSender<Item>,
    shared: Arc<Shared>,
    /// The marker of the burst under way; `None` once an event was queued after it.
    /// Only the reader (the one producer) touches it; the lock is never contended.
    burst: Mutex<Option<Arc<AtomicU64>>>,
}

impl Slot {
    /// Offers an event. Returns false when the subscriber is gone.
    fn offer(&self, m: &Arc<Message>) -> bool {
        if !(self.filter)(m) {
            return !self.tx.is_closed();
        }
        let s = &self.shared;
        let Ok(mut burst) = self.burst.lock() else {
            return false;
        };
        if s.queued.load(Ordering::Acquire) >= s.capacity {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            if burst.is_none() {
                tracing::warn!(
                    subscriber = self.id,
                    "AMI subscriber is full; dropping events"
                );
            }
            if !burst.as_ref().is_some_and(|b| add_one(b)) {
                // No burst under way, or its marker was read: mark the gap here.
                let marker = Arc::new(AtomicU64::new(1));
                *burst = Some(marker.clone());
                if self.tx.send(Item::Lag(marker)).is_err() {
                    return false;
                }
            }
            return !self.tx.is_closed();
        }
        *burst = None;
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

/// Counts one more drop on `marker`; false if the subscriber has sealed it already.
fn add_one(marker: &AtomicU64) -> bool {
    marker
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            // Not `then_some(n + 1)`: its argument is computed even for SEALED (overflow).
            if n == SEALED { None } else { Some(n + 1) }
        })
        .is_ok()
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
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            id,
            filter,
            tx,
            shared: shared.clone(),
            burst: Mutex::new(None),
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
        let item = self.rx.recv().await?;
        Some(self.unwrap_item(item))
    }

    /// Next notice if one is ready.
    pub fn try_recv(&mut self) -> Option<Notice> {
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
            // Sealed: drops from now on go to a new marker, queued after what comes next.
            Item::Lag(marker) => Notice::Lagged(marker.swap(SEALED, Ordering::AcqRel)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reader drops into bursts while the subscriber reads markers on another thread:
    /// every event either arrives or is counted in the `Lagged` that stands in its place.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_drop_is_counted_once_where_it_happened() {
        const N: u64 = 200_000;
        let subs = Arc::new(Subscribers::default());
        let mut sub = subs.add(Arc::new(|_: &Message| true), 4);
        let producer = {
            let subs = subs.clone();
            tokio::task::spawn_blocking(move || {
                for i in 0..N {
                    let seq = i.to_string();
                    subs.dispatch(Message::from_pairs([("Event", "Seq"), ("Seq", &seq)]));
                }
                subs.close_all();
            })
        };
        let read = async {
            let (mut next, mut lost, mut lagged, mut markers) = (0u64, 0u64, 0u64, 0u64);
            while let Some(n) = sub.recv().await {
                match n {
                    Notice::Event(m) => {
                        let seq: u64 = m.get("Seq").and_then(|s| s.parse().ok()).unwrap_or(N);
                        assert_eq!(
                            seq,
                            next + lost,
                            "the Lagged before it counts exactly the gap"
                        );
                        next = seq + 1;
                        lost = 0;
                    }
                    Notice::Lagged(n) => {
                        assert!(n > 0 && n != SEALED, "{n}");
                        lost += n;
                        lagged += n;
                        markers += 1;
                    }
                    other => panic!("{other:?}"),
                }
            }
            (next, lost, lagged, markers)
        };
        let (next, lost, lagged, markers) =
            tokio::time::timeout(std::time::Duration::from_secs(60), read)
                .await
                .expect("the producer ends the subscription");
        producer.await.unwrap();
        assert_eq!(next + lost, N, "every event arrived or was counted");
        assert_eq!(lagged, sub.dropped());
        assert!(markers > 1 && lagged > 0, "the test made bursts: {markers}");
    }
}
