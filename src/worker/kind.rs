//! What a job kind implements, and the registry of kinds.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::watch;

use super::{JobContext, Outcome};
use crate::metrics::Metrics;
use crate::queue::KindLimits;

/// A job kind's code and the resources it owns (a dial's AMI connection).
///
/// The worker calls [`start`](JobHandler::start) once, only on replicas whose
/// `worker.kinds` name the kind, before leasing it; leases the kind only while its
/// [`readiness`](JobHandler::readiness) says ready; runs each job with
/// [`run`](JobHandler::run); and at shutdown, once the kind's jobs ended or were handed
/// back, awaits [`shutdown`](JobHandler::shutdown) within what is left of the grace.
pub trait JobHandler: Send + Sync + 'static {
    /// Runs one attempt. It should watch [`JobContext::stopped`] and return
    /// [`Outcome::stopped`] when asked to stop; a handler that ignores the request is
    /// dropped after a grace period.
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Outcome>;

    /// Set-up before the first lease (open a connection). An error stops the worker
    /// from starting; a resource that may come later should start not ready instead.
    fn start(&self) -> BoxFuture<'_, Result<(), KindError>> {
        Box::pin(async { Ok(()) })
    }

    /// Whether the kind can take jobs now (its link is up). While it is not, the
    /// worker leases none of this kind; the other kinds go on.
    fn readiness(&self) -> Readiness {
        Readiness::always()
    }

    /// Releases what `start` opened (log off).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// `true`: a job whose worker vanished during its last regular attempt gets one
    /// recovery attempt (`needs_recovery`, numbered `max_attempts + 1`) instead of
    /// ending "worker lost", because its work may still be going on outside and must
    /// be found (a dial's call: hang it up or follow it).
    fn recovers_lost_attempts(&self) -> bool {
        false
    }

    /// Limits on the kind across every replica (a trunk's live calls and calls per
    /// second), kept in PostgreSQL at lease time: a job without room stays queued.
    fn limits(&self) -> KindLimits {
        KindLimits::default()
    }
}

/// Why a kind could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KindError(pub String);

/// Whether a kind can take jobs, as it changes. The kind keeps the
/// [`ReadinessSender`]; the worker watches this side.
#[derive(Debug, Clone)]
pub struct Readiness(watch::Receiver<bool>);

/// The kind's side of [`Readiness`].
#[derive(Debug)]
pub struct ReadinessSender(watch::Sender<bool>);

impl Readiness {
    /// A kind with nothing that can go down.
    pub fn always() -> Self {
        Self(watch::channel(true).1)
    }

    /// A readiness the kind moves itself, starting at `ready`.
    pub fn channel(ready: bool) -> (ReadinessSender, Self) {
        let (tx, rx) = watch::channel(ready);
        (ReadinessSender(tx), Self(rx))
    }

    pub fn is_ready(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until the kind is ready. `false`: it never will be (its sender is gone
    /// while not ready).
    pub async fn ready(&mut self) -> bool {
        self.0.wait_for(|ready| *ready).await.is_ok()
    }

    /// Waits until the kind is no longer ready. `false`: that cannot happen any more.
    pub async fn not_ready(&mut self) -> bool {
        self.0.wait_for(|ready| !*ready).await.is_ok()
    }
}

impl ReadinessSender {
    pub fn set(&self, ready: bool) {
        self.0.send_replace(ready);
    }
}

/// The kinds a worker can run, by name, and the metrics they and the worker count
/// into (made with the registry, so a kind built for it and the worker that runs it
/// share one).
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn JobHandler>>,
    metrics: Metrics,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn with(mut self, kind: &str, handler: impl JobHandler) -> Self {
        self.handlers.insert(kind.to_owned(), Arc::new(handler));
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn JobHandler>> {
        self.handlers.get(kind)
    }

    /// The kinds, in name order.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    /// The kinds whose lost attempts get a recovery attempt even when spent.
    pub fn recovering_kinds(&self) -> Vec<String> {
        self.handlers
            .iter()
            .filter(|(_, h)| h.recovers_lost_attempts())
            .map(|(k, _)| k.clone())
            .collect()
    }
}
