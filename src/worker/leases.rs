//! The leases this worker holds, and room per kind.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use super::StopReason;
use super::job::StopSignal;
use crate::queue::{Lease, LeasedJob};

/// Every lease held (leased, waiting in a channel, running, or being recorded), with
/// its stop signal.
#[derive(Default)]
pub(super) struct Leases {
    held: Mutex<HashMap<i64, Held>>,
    handed_back: AtomicUsize,
}

struct Held {
    lease: Lease,
    stop: StopSignal,
    /// The handler returned; the outcome is on its way to the database. Heartbeats
    /// leave it alone, so they never queue behind the completer's row locks.
    recording: bool,
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
                recording: false,
            },
        );
    }

    pub(super) fn signal(&self, id: i64) -> Option<StopSignal> {
        self.held().get(&id).map(|h| h.stop.clone())
    }

    pub(super) fn is_running(&self, id: i64) -> bool {
        self.held().get(&id).is_some_and(|h| !h.recording)
    }

    pub(super) fn remove(&self, id: i64) {
        self.held().remove(&id);
    }

    pub(super) fn stop(&self, id: i64, reason: StopReason) {
        if let Some(h) = self.held().get(&id) {
            h.stop.stop(reason);
        }
    }

    /// Asks every held job to stop; returns how many there were.
    pub(super) fn stop_all(&self, reason: StopReason) -> usize {
        let held = self.held();
        for h in held.values() {
            h.stop.stop(reason);
        }
        held.len()
    }

    pub(super) fn recording(&self, id: i64) {
        if let Some(h) = self.held().get_mut(&id) {
            h.recording = true;
        }
    }

    /// The leases a heartbeat should renew.
    pub(super) fn snapshot(&self) -> Vec<Lease> {
        self.held()
            .values()
            .filter(|h| !h.recording)
            .map(|h| h.lease)
            .collect()
    }

    pub(super) fn take_all(&self) -> Vec<Lease> {
        self.held().drain().map(|(_, h)| h.lease).collect()
    }

    pub(super) fn count_handed_back(&self) {
        self.handed_back.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn handed_back(&self) -> usize {
        self.handed_back.load(Ordering::Relaxed)
    }
}

/// Room for one kind: leased jobs (waiting or running) never exceed its concurrency,
/// so a replica never holds leases it cannot start.
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

    pub(super) fn free(&self) -> usize {
        self.capacity
            .saturating_sub(self.in_use.load(Ordering::Acquire))
    }

    pub(super) fn take(&self, n: usize) {
        self.in_use.fetch_add(n, Ordering::AcqRel);
    }

    pub(super) fn release(&self, n: usize) {
        self.in_use.fetch_sub(n, Ordering::AcqRel);
        self.freed.notify_one();
    }

    pub(super) async fn freed(&self) {
        self.freed.notified().await;
    }
}
