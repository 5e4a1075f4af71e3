//! What a worker counts, for `/metrics` in the Prometheus text format.
//!
//! One [`Metrics`] per worker, never global: several workers in one process (tests,
//! benchmarks) keep their figures apart. Each metric family is registered once in
//! [`Metrics::new`]; the code that counts holds handles resolved at start (a kind's
//! counters, the AMI link's gauge), so counting a job is an atomic add, with no label
//! lookup and no allocation. The names are a public API (dashboards query them): see
//! README "Health and metrics".

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::cdr::Disposition;
use crate::queue::JobStatus;

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the job duration buckets, in seconds: from a noop's fraction of a
/// millisecond to an hour-long call.
const DURATION_BUCKETS: [f64; 17] = [
    0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

/// The statuses an attempt's outcome writes, as `dialout_jobs_finished_total` labels them
/// (`queued`: back for a retry or handed back).
const WRITTEN: [JobStatus; 5] = [
    JobStatus::Finished,
    JobStatus::FinishedWithError,
    JobStatus::Timedout,
    JobStatus::Cancelled,
    JobStatus::Queued,
];

const DISPOSITIONS: [Disposition; 5] = [
    Disposition::Answered,
    Disposition::Busy,
    Disposition::NoAnswer,
    Disposition::Congestion,
    Disposition::Failed,
];

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    kind: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DispositionLabel {
    disposition: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

struct Inner {
    registry: Registry,
    leased: Family<KindLabel, Counter>,
    finished: Family<FinishedLabels, Counter>,
    duration: Family<KindLabel, Histogram, fn() -> Histogram>,
    queue_depth: Family<KindLabel, Gauge>,
    oldest_ready: Family<KindLabel, FloatGauge>,
    rescued: Counter,
    ami_link_up: Gauge,
    ami_reconnects: Counter,
    live_calls: Gauge,
    calls: Family<DispositionLabel, Counter>,
    legacy_sockets: Gauge,
}

/// A worker's metrics; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let leased = Family::<KindLabel, Counter>::default();
        registry.register(
            "dialout_jobs_leased",
            "Jobs this worker leased",
            leased.clone(),
        );
        let finished = Family::<FinishedLabels, Counter>::default();
        registry.register(
            "dialout_jobs_finished",
            "Attempt outcomes this worker recorded, by the status written (queued: back for a retry or handed back)",
            finished.clone(),
        );
        let duration = Family::<KindLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        registry.register(
            "dialout_job_duration_seconds",
            "How long attempts ran in this worker's handlers",
            duration.clone(),
        );
        let queue_depth = Family::<KindLabel, Gauge>::default();
        registry.register(
            "dialout_queue_depth",
            "Ready jobs (queued, run_at reached) in the table, refreshed every few seconds",
            queue_depth.clone(),
        );
        let oldest_ready = Family::<KindLabel, FloatGauge>::default();
        registry.register(
            "dialout_queue_oldest_ready_age_seconds",
            "How long the oldest ready job has been due (0: none), refreshed every few seconds",
            oldest_ready.clone(),
        );
        let rescued = Counter::default();
        registry.register(
            "dialout_rescued",
            "Jobs this worker's rescuer took back from expired leases",
            rescued.clone(),
        );
        let ami_link_up = Gauge::default();
        registry.register(
            "dialout_ami_link_up",
            "1 while the dial kind's AMI link is up",
            ami_link_up.clone(),
        );
        let ami_reconnects = Counter::default();
        registry.register(
            "dialout_ami_reconnects",
            "Times the AMI link came back after a drop",
            ami_reconnects.clone(),
        );
        let live_calls = Gauge::default();
        registry.register(
            "dialout_dial_live_calls",
            "Calls this worker is following now",
            live_calls.clone(),
        );
        let calls = Family::<DispositionLabel, Counter>::default();
        registry.register(
            "dialout_dial_calls",
            "CDRs written, by disposition",
            calls.clone(),
        );
        let legacy_sockets = Gauge::default();
        registry.register(
            "dialout_legacy_sockets_open",
            "Connections legacy_message jobs hold open now",
            legacy_sockets.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                leased,
                finished,
                duration,
                queue_depth,
                oldest_ready,
                rescued,
                ami_link_up,
                ami_reconnects,
                live_calls,
                calls,
                legacy_sockets,
            }),
        }
    }

    /// The handles for one kind, its series created at zero (a dashboard's `rate()`
    /// needs the zero before the first job).
    pub fn kind(&self, kind: &str) -> KindMetrics {
        let i = &self.inner;
        let label = KindLabel {
            kind: kind.to_owned(),
        };
        i.queue_depth.get_or_create_owned(&label);
        i.oldest_ready.get_or_create_owned(&label);
        KindMetrics(Arc::new(KindHandles {
            leased: i.leased.get_or_create_owned(&label),
            finished: WRITTEN.map(|status| {
                i.finished.get_or_create_owned(&FinishedLabels {
                    kind: kind.to_owned(),
                    status: status.as_str(),
                })
            }),
            duration: i.duration.get_or_create_owned(&label),
        }))
    }

    /// Sets a kind's queue gauges (see `queue::ready_backlog`).
    pub fn set_backlog(&self, kind: &str, depth: i64, oldest_ready_secs: f64) {
        let label = KindLabel {
            kind: kind.to_owned(),
        };
        self.inner.queue_depth.get_or_create(&label).set(depth);
        self.inner
            .oldest_ready
            .get_or_create(&label)
            .set(oldest_ready_secs);
    }

    pub fn rescued(&self) -> &Counter {
        &self.inner.rescued
    }

    /// The dial kind's handles, its AMI link's included.
    pub fn dial(&self) -> DialMetrics {
        let i = &self.inner;
        DialMetrics {
            link_up: i.ami_link_up.clone(),
            reconnects: i.ami_reconnects.clone(),
            live_calls: i.live_calls.clone(),
            calls: DISPOSITIONS.map(|d| {
                i.calls.get_or_create_owned(&DispositionLabel {
                    disposition: d.as_str(),
                })
            }),
        }
    }

    pub fn legacy_sockets_open(&self) -> Gauge {
        self.inner.legacy_sockets.clone()
    }

    /// Everything, in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.inner.registry);
        text
    }
}

/// One kind's counters, resolved once: counting is an atomic add, and a clone (one
/// per job) is one `Arc`.
#[derive(Clone, Debug)]
pub struct KindMetrics(Arc<KindHandles>);

#[derive(Debug)]
struct KindHandles {
    leased: Counter,
    finished: [Counter; 5],
    duration: Histogram,
}

impl KindMetrics {
    pub fn leased(&self, jobs: u64) {
        self.0.leased.inc_by(jobs);
    }

    /// An outcome was recorded with `status`.
    pub fn recorded(&self, status: JobStatus) {
        if let Some(i) = WRITTEN.iter().position(|s| *s == status) {
            self.0.finished[i].inc();
        }
    }

    pub fn ran(&self, took: std::time::Duration) {
        self.0.duration.observe(took.as_secs_f64());
    }
}

/// The dial kind's handles: its AMI link and its calls.
#[derive(Clone, Debug, Default)]
pub struct DialMetrics {
    link_up: Gauge,
    reconnects: Counter,
    live_calls: Gauge,
    calls: [Counter; 5],
}

impl DialMetrics {
    pub fn link_up(&self, up: bool) {
        self.link_up.set(i64::from(up));
    }

    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    /// Counts a call being followed until the guard drops.
    pub fn live_call(&self) -> Live {
        Live::new(&self.live_calls)
    }

    /// A CDR with `disposition` was written.
    pub fn call_recorded(&self, disposition: Disposition) {
        if let Some(i) = DISPOSITIONS.iter().position(|d| *d == disposition) {
            self.calls[i].inc();
        }
    }
}

/// Holds one unit of a gauge (a call followed, a socket open) until dropped.
#[derive(Debug)]
pub struct Live(Gauge);

impl Live {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_names_and_labels_are_encoded() {
        let m = Metrics::new();
        let noop = m.kind("noop");
        noop.leased(3);
        noop.recorded(JobStatus::Finished);
        noop.recorded(JobStatus::Queued);
        noop.ran(std::time::Duration::from_millis(2));
        m.set_backlog("noop", 7, 1.5);
        m.rescued().inc();
        let dial = m.dial();
        dial.link_up(true);
        dial.call_recorded(Disposition::NoAnswer);
        let live = dial.live_call();
        let text = m.encode();
        for line in [
            "dialout_jobs_leased_total{kind=\"noop\"} 3",
            "dialout_jobs_finished_total{kind=\"noop\",status=\"finished\"} 1",
            "dialout_jobs_finished_total{kind=\"noop\",status=\"queued\"} 1",
            "dialout_jobs_finished_total{kind=\"noop\",status=\"timedout\"} 0",
            "dialout_job_duration_seconds_count{kind=\"noop\"} 1",
            "dialout_job_duration_seconds_bucket{kind=\"noop\",le=\"0.005\"} 1",
            "dialout_queue_depth{kind=\"noop\"} 7",
            "dialout_queue_oldest_ready_age_seconds{kind=\"noop\"} 1.5",
            "dialout_rescued_total 1",
            "dialout_ami_link_up 1",
            "dialout_ami_reconnects_total 0",
            "dialout_dial_live_calls 1",
            "dialout_dial_calls_total{disposition=\"NO ANSWER\"} 1",
            "dialout_dial_calls_total{disposition=\"BUSY\"} 0",
            "dialout_legacy_sockets_open 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        drop(live);
        assert!(m.encode().contains("dialout_dial_live_calls 0\n"));
    }

    #[test]
    fn two_workers_count_apart() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.kind("noop").leased(1);
        assert!(
            a.encode()
                .contains("dialout_jobs_leased_total{kind=\"noop\"} 1\n")
        );
        assert!(
            !b.encode()
                .contains("dialout_jobs_leased_total{kind=\"noop\"}")
        );
    }
}
