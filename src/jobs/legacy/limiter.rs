//! Per-host connection limit, so a burst of queued jobs does not open hundreds of sockets
//! to one legacy host at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

/// A map host → semaphore. An entry lives only while some send holds or waits for a slot
/// on that host, so the map never grows with the number of hosts ever seen.
#[derive(Debug)]
pub(crate) struct HostLimiter {
    per_host: usize,
    hosts: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

/// A held (or awaited) slot. Dropping it gives the slot back and forgets the host if no
/// one else is using it. It is a guard and not a semaphore permit because the permit would
/// borrow the semaphore, and the guard must own everything it cleans up.
#[derive(Debug)]
pub(crate) struct HostSlot {
    host: String,
    sem: Option<Arc<Semaphore>>,
    held: bool,
    hosts: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl HostLimiter {
    pub(crate) fn new(per_host: usize) -> Self {
        Self {
            per_host: per_host.max(1),
            hosts: Arc::default(),
        }
    }

    /// Waits for a slot on `host` (case-insensitive). Cancel-safe: dropping the future
    /// while it waits leaves no entry behind.
    pub(crate) async fn acquire(&self, host: &str) -> HostSlot {
        let key = host.to_ascii_lowercase();
        let sem = {
            let mut map = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                map.entry(key.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_host))),
            )
        };
        // The guard exists before the wait, so a dropped wait also runs the cleanup.
        let mut slot = HostSlot {
            host: key,
            sem: Some(sem),
            held: false,
            hosts: Arc::clone(&self.hosts),
        };
        if let Some(sem) = &slot.sem {
            // `acquire` borrows instead of cloning the Arc, so the strong count stays an
            // exact count of guards. The semaphore is never closed, so `Err` cannot happen;
            // if it did, the send would simply go ahead unlimited.
            if let Ok(permit) = sem.acquire().await {
                permit.forget();
                slot.held = true;
            }
        }
        slot
    }

    #[cfg(test)]
    fn tracked_hosts(&self) -> usize {
        self.hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for HostSlot {
    fn drop(&mut self) {
        let Some(sem) = self.sem.take() else { return };
        if self.held {
            sem.add_permits(1);
        }
        drop(sem);
        let mut map = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        // Under the lock nobody can take a new clone, so a count of 1 (the map's own)
        // means no send holds or waits for this host.
        if map
            .get(&self.host)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            map.remove(&self.host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn limits_per_host_and_forgets_idle_hosts() {
        let limiter = HostLimiter::new(2);
        let a1 = limiter.acquire("Legacy").await;
        let a2 = limiter.acquire("legacy").await;
        let b = limiter.acquire("other").await;
        assert_eq!(limiter.tracked_hosts(), 2);
        // A third slot on the same host must wait...
        let third =
            tokio::time::timeout(Duration::from_millis(50), limiter.acquire("LEGACY")).await;
        assert!(third.is_err());
        // ...and the abandoned wait leaves the entry as it was.
        assert_eq!(limiter.tracked_hosts(), 2);
        drop(a1);
        let a3 = tokio::time::timeout(Duration::from_secs(5), limiter.acquire("legacy"))
            .await
            .expect("a slot was released");
        drop((a2, a3, b));
        assert_eq!(limiter.tracked_hosts(), 0);
    }

    #[tokio::test]
    async fn abandoned_wait_on_new_host_leaves_nothing() {
        let limiter = HostLimiter::new(1);
        let held = limiter.acquire("h").await;
        let waited = tokio::time::timeout(Duration::from_millis(20), limiter.acquire("h")).await;
        assert!(waited.is_err());
        drop(held);
        assert_eq!(limiter.tracked_hosts(), 0);
    }
}
