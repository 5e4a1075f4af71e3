//! The leases this worker holds, and room per kind.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use super::StopReason;
use super::context::StopSignal;
use crate::queue::{Lease, LeasedJob};

/// Every lease held (leased, waiting in a channel, running, or being recorded), with its
/// stop signal. Keyed by job id, but every operation that acts on one attempt checks the
/// token too: the same job may be leased again by this worker after a retry or rescue.
#[derive(Default)]
pub(super) struct Leases {
    held: Mutex<HashMap<i64, Held>>,
    handed_back: AtomicUsize,
}

struct Held {
    lease: Lease,
    stop: StopSignal,
    /// The outcome is with the completer: never hand this one back at shutdown.
    submitted: bool,
    /// Its handler was started: if it is handed back unfinished, the next attempt
    /// must find out what this one did.
    started: bool,
}

impl Leases {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Held>> {
        // A panic while holding this lock cannot leave the map half-written.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn insert(&self, job: &LeasedJob) {
        self.held().insert(
            job.id,
            Held {
                lease: job.lease(),
                stop: StopSignal::default(),
                submitted: false,
                started: false,
            },
        );
    }

    fn with<T>(&self, lease: Lease, f: impl FnOnce(&mut Held) -> T) -> Option<T> {
        self.held()
            .get_mut(&lease.id)
            .filter(|h| h.lease.token == lease.token)
            .map(f)
    }

    pub(super) fn signal(&self, lease: Lease) -> Option<StopSignal> {
        self.with(lease, |h| h.stop.clone())
    }

    pub(super) fn remove(&self, lease: Lease) {
        let mut held = self.held();
        if held
            .get(&lease.id)
            .is_some_and(|h| h.lease.token == lease.token)
        {
            held.remove(&lease.id);
        }
    }

    /// Stops whatever attempt of job `id` this worker runs (an application cancelled it).
    pub(super) fn stop_job(&self, id: i64, reason: StopReason) {
        if let Some(h) = self.held().get(&id) {
            h.stop.stop(reason);
        }
    }

    /// Stops this attempt only.
    pub(super) fn stop_lease(&self, lease: Lease, reason: StopReason) {
        self.with(lease, |h| h.stop.stop(reason));
    }

    /// Asks every held job to stop; returns how many there were.
    pub(super) fn stop_all(&self, reason: StopReason) -> usize {
        let held = self.held();
        for h in held.values() {
            h.stop.stop(reason);
        }
        held.len()
    }

    pub(super) fn started(&self, lease: Lease) {
        self.with(lease, |h| h.started = true);
    }

    pub(super) fn submitted(&self, lease: Lease) {
        self.with(lease, |h| h.submitted = true);
    }

    /// Held and its outcome not yet with the completer: a heartbeat that finds such a
    /// lease gone has really lost it (a submitted one may just have been written).
    pub(super) fn is_unsubmitted(&self, lease: Lease) -> bool {
        self.with(lease, |h| !h.submitted).unwrap_or(false)
    }

    /// Every lease held, for the heartbeat.
    pub(super) fn snapshot(&self) -> Vec<Lease> {
        self.held().values().map(|h| h.lease).collect()
    }

    /// Leases whose outcome never reached the completer, taken out of the map, each
    /// with whether its handler had started.
    pub(super) fn take_unsubmitted(&self) -> Vec<(Lease, bool)> {
        let mut held = self.held();
        let ids: Vec<i64> = held
            .iter()
            .filter(|(_, h)| !h.submitted)
            .map(|(id, _)| *id)
            .collect();
        ids.iter()
            .filter_map(|id| held.remove(id))
            .map(|h| (h.lease, h.started))
            .collect()
    }

    pub(super) fn count_handed_back(&self) {
        self.handed_back.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn handed_back(&self) -> usize {
        self.handed_back.load(Ordering::Relaxed)
    }
}

/// Room for one kind: jobs leased and not yet finished by their handler never exceed
/// its concurrency, so a replica never holds leases it cannot start.
pub(super) struct KindSlot {
    capacity: usize,
    in_use: AtomicUsize,
    freed: Notify,
}

impl KindSlot {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            in_use: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    /// Takes up to `max` free places at once (several producers may ask together).
    pub(super) fn reserve(&self, max: usize) -> usize {
        let mut taken = 0;
        let _ = self
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |in_use| {
                taken = self.capacity.saturating_sub(in_use).min(max);
                Some(in_use + taken)
            });
        taken
    }

    pub(super) fn release(&self, n: usize) {
        self.in_use.fetch_sub(n, Ordering::AcqRel);
        self.freed.notify_one();
    }

    pub(super) async fn freed(&self) {
        self.freed.notified().await;
    }
}
