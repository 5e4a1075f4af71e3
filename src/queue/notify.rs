//! LISTEN/NOTIFY: new rows wake idle workers at once; cancellations reach the worker
//! running the job. Polling stands behind both in case a notification is lost.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

/// The channel new rows (and handed-back jobs) are announced on; payload: the kind.
pub const QUEUE_CHANNEL: &str = "dialout_queue";
/// The channel cancellations of running jobs are announced on; payload: the job id.
pub const CANCEL_CHANNEL: &str = "dialout_cancel";

/// One wake-up signal per kind. `notify_one` keeps a permit, so a wake-up that comes
/// while the producer is busy leasing is not lost.
#[derive(Clone, Default)]
pub struct Wake {
    kinds: Arc<HashMap<String, Arc<Notify>>>,
}

impl Wake {
    pub fn new<'a>(kinds: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            kinds: Arc::new(
                kinds
                    .into_iter()
                    .map(|k| (k.to_owned(), Arc::new(Notify::new())))
                    .collect(),
            ),
        }
    }

    pub fn signal(&self, kind: &str) -> Option<Arc<Notify>> {
        self.kinds.get(kind).cloned()
    }

    pub fn kind(&self, kind: &str) {
        if let Some(n) = self.kinds.get(kind) {
            n.notify_one();
        }
    }

    pub fn all(&self) {
        for n in self.kinds.values() {
            n.notify_one();
        }
    }
}

/// The LISTEN connection. It reconnects by itself; after a gap it wakes every kind,
/// since notifications sent meanwhile are gone.
pub struct Listener;

impl Listener {
    pub async fn run(
        pool: PgPool,
        wake: Wake,
        on_cancel: impl Fn(i64) + Send + 'static,
        backoff: Backoff,
        shutdown: CancellationToken,
    ) {
        let mut pacer = backoff.pacer();
        loop {
            let listener = tokio::select! {
                _ = shutdown.cancelled() => return,
                l = connect(&pool) => l,
            };
            let mut listener = match listener {
                Ok(l) => l,
                Err(e) => {
                    let delay = pacer.failed();
                    tracing::warn!(error = %e, retry_in = ?delay, "LISTEN connection failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            };
            pacer.succeeded();
            // Anything sent while we were not listening is lost: look again.
            wake.all();
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = listener.try_recv() => n,
                };
                match next {
                    Ok(Some(n)) if n.channel() == QUEUE_CHANNEL => wake.kind(n.payload()),
                    Ok(Some(n)) => {
                        if let Ok(id) = n.payload().parse::<i64>() {
                            on_cancel(id);
                        }
                    }
                    Ok(None) => {
                        tracing::warn!("LISTEN connection lost; reconnecting");
                        wake.all();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([QUEUE_CHANNEL, CANCEL_CHANNEL]).await?;
    Ok(listener)
}
