//! The `dial` kind: originate a call through Asterisk (AMI), follow it to its end,
//! write its CDR with its final status.
//!
//! The kind owns one AMI connection per replica, opened by [`JobHandler::start`] only
//! where `worker.kinds` names `dial`; the kind is ready (leased) only while that link
//! is up. Every attempt tags its call with `dialout-<job>-<lease token>` as ChannelId,
//! ActionID, CallerID name (or a numeric CallerID tag) and the `DIALOUT_TAG` variable,
//! registers it with the [`tracker::Tracker`] before the Originate is written, and
//! follows its events ([`call::Call`]) to the end.

mod attempt;
pub mod call;
pub mod payload;
pub mod tracker;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

pub use payload::{DialPayload, DialPayloadError, PhoneNumber};

use crate::ami::{AmiClient, AmiConfig};
use crate::backoff::Backoff;
use crate::config::{Settings, TagIn};
use crate::metrics::DialMetrics;
use crate::queue::KindLimits;
use crate::worker::{JobContext, JobHandler, KindError, Outcome, Readiness, ReadinessSender};
use tracker::Tracker;

/// The `[dial]` defaults a payload may override, as the attempt uses them.
#[derive(Debug, Clone)]
pub struct DialDefaults {
    pub channel: String,
    pub context: String,
    pub exten: String,
    pub priority: u32,
    pub message: String,
    pub caller_id_name: String,
    pub caller_id_number: String,
    pub tag_in: TagIn,
    pub ring_timeout: Duration,
    pub max_call: Duration,
    pub settle: Duration,
    /// Per outcome, when to dial again (`[dial.retry]`).
    pub retry: crate::config::DialRetry,
    /// How long an AMI action may take (the slack after a Hangup we sent).
    pub action_timeout: Duration,
    /// `dial.max_live_calls` and `dial.calls_per_second`, across replicas.
    pub limits: KindLimits,
}

impl DialDefaults {
    pub fn from_settings(s: &Settings) -> Self {
        let d = &s.dial;
        Self {
            channel: d.channel.clone(),
            context: d.context.clone(),
            exten: d.exten.clone(),
            priority: d.priority,
            message: d.message.clone(),
            caller_id_name: d.caller_id_name.clone(),
            caller_id_number: d.caller_id_number.clone(),
            tag_in: d.tag_in,
            ring_timeout: Duration::from_millis(d.ring_timeout_ms),
            max_call: Duration::from_millis(d.max_call_ms),
            settle: Duration::from_millis(d.settle_ms),
            retry: d.retry,
            action_timeout: Duration::from_millis(s.ami.action_timeout_ms),
            limits: KindLimits {
                max_running: d.max_live_calls,
                starts_per_second: d.calls_per_second,
            },
        }
    }
}

/// The AMI client config from `[ami]`.
pub fn ami_config(s: &Settings) -> AmiConfig {
    let a = &s.ami;
    AmiConfig {
        host: a.host.clone(),
        port: a.port,
        username: a.username.clone(),
        secret: a.secret.clone(),
        action_timeout: Duration::from_millis(a.action_timeout_ms),
        connect_timeout: Duration::from_millis(a.connect_timeout_ms),
        fully_booted_timeout: (a.fully_booted_timeout_ms > 0)
            .then(|| Duration::from_millis(a.fully_booted_timeout_ms)),
        ping_interval: (a.ping_interval_ms > 0).then(|| Duration::from_millis(a.ping_interval_ms)),
        reconnect_backoff_min: Duration::from_millis(a.reconnect_min_ms),
        reconnect_backoff_max: Duration::from_millis(a.reconnect_max_ms),
        action_id_prefix: format!("dialout-ami-{}", std::process::id()),
        ..AmiConfig::default()
    }
}

/// The connection, the router of its events, and what the kind counts.
#[derive(Clone)]
struct Link {
    client: AmiClient,
    tracker: Arc<Tracker>,
    metrics: DialMetrics,
}

/// The `dial` job kind.
pub struct Dial {
    ami: AmiConfig,
    /// Shared by every attempt (a clone each would be six strings per live call).
    defaults: Arc<DialDefaults>,
    link: Arc<Mutex<Option<Link>>>,
    ready_tx: Arc<ReadinessSender>,
    ready: Readiness,
    stop: CancellationToken,
    metrics: DialMetrics,
}

impl Dial {
    pub fn new(ami: AmiConfig, defaults: DialDefaults, metrics: DialMetrics) -> Self {
        let (ready_tx, ready) = Readiness::channel(false);
        Self {
            ami,
            defaults: Arc::new(defaults),
            link: Arc::new(Mutex::new(None)),
            ready_tx: Arc::new(ready_tx),
            ready,
            stop: CancellationToken::new(),
            metrics,
        }
    }

    fn link(&self) -> Option<Link> {
        self.link.lock().ok().and_then(|g| g.clone())
    }
}

/// Connects (retrying with backoff until `stop`), then routes events and reports the
/// link's state for as long as the client lives. The client reconnects by itself
/// after the first login.
async fn keep_linked(
    cfg: AmiConfig,
    slot: Arc<Mutex<Option<Link>>>,
    ready: Arc<ReadinessSender>,
    metrics: DialMetrics,
    stop: CancellationToken,
) {
    let mut pacer = Backoff::new(cfg.reconnect_backoff_min, cfg.reconnect_backoff_max).pacer();
    let client = loop {
        let connect = tokio::select! {
            _ = stop.cancelled() => return,
            c = AmiClient::connect(cfg.clone()) => c,
        };
        match connect {
            Ok(c) => break c,
            Err(e) => {
                let wait = pacer.failed();
                if pacer.failures() == 1 {
                    tracing::warn!(host = cfg.host, port = cfg.port, error = %e, retry_in = ?wait, "AMI connect failed; dial jobs wait until it succeeds");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    };
    tracing::info!(
        host = cfg.host,
        port = cfg.port,
        "AMI link up: dial jobs are leased"
    );
    let tracker = Arc::new(Tracker::new(metrics.clone()));
    let events = client.subscribe(tracker::is_ours);
    let lister = client.clone();
    if let Ok(mut g) = slot.lock() {
        *g = Some(Link {
            client,
            tracker: tracker.clone(),
            metrics: metrics.clone(),
        });
    }
    metrics.link_up(true);
    ready.set(true);
    let reporter = ready.clone();
    tracker
        .run(events, lister, move |up| {
            metrics.link_up(up);
            reporter.set(up);
        })
        .await;
}

impl JobHandler for Dial {
    fn run(&self, mut ctx: JobContext) -> BoxFuture<'static, Outcome> {
        let link = self.link();
        let defaults = self.defaults.clone();
        Box::pin(async move {
            let payload = match DialPayload::parse(&ctx.take_payload()) {
                Ok(p) => Box::new(p),
                Err(e) => return Outcome::failed(e),
            };
            let Some(link) = link else {
                return Outcome::failed("dial job: the AMI link is not up yet; nothing was sent")
                    .retryable();
            };
            attempt::run(&link, &ctx, payload, &defaults).await
        })
    }

    fn start(&self) -> BoxFuture<'_, Result<(), KindError>> {
        Box::pin(async move {
            tokio::spawn(keep_linked(
                self.ami.clone(),
                self.link.clone(),
                self.ready_tx.clone(),
                self.metrics.clone(),
                self.stop.clone(),
            ));
            Ok(())
        })
    }

    fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.stop.cancel();
            self.ready_tx.set(false);
            if let Some(link) = self.link() {
                link.client.shutdown().await;
            }
        })
    }

    fn recovers_lost_attempts(&self) -> bool {
        true
    }

    fn limits(&self) -> KindLimits {
        self.defaults.limits
    }
}
