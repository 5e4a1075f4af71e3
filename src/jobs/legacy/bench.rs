//! Throughput against a local echo peer, one connection per message as the legacy host
//! expects. Prints figures; never asserts them (speed depends on the machine's load).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::fault_peer::{FaultMode, FaultPeer, open_fds, refused_addr};
use super::{LegacyClient, LegacyRequest, LegacySettings};

/// What one run measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub messages: usize,
    pub concurrency: usize,
    pub fail_ratio: f64,
    pub ok: usize,
    /// Failed sends by [`LegacyError::kind`](super::LegacyError::kind).
    pub errors: BTreeMap<&'static str, usize>,
    /// Replies that came back different from what was sent (must be 0).
    pub mismatched: usize,
    pub elapsed: Duration,
    /// CPU time the whole process (client and peer) used during the run; with neighbours
    /// compiling on the same cores, messages per CPU-second is the steadier figure.
    pub cpu: Option<Duration>,
    pub fds_before: usize,
    pub fds_after: usize,
    pub fds_max: usize,
    /// Whether the echo peer closed every connection it accepted.
    pub peer_all_closed: bool,
}

impl BenchReport {
    pub fn per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    pub fn per_cpu_second(&self) -> Option<f64> {
        self.cpu
            .map(|cpu| self.messages as f64 / cpu.as_secs_f64().max(f64::EPSILON))
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} messages, {:.0}% failing, concurrency {}: {:.2} s, {:.0} messages/s \
             ({:.0} per CPU-second); ok {}, errors {:?}, mismatched {}; fds before {} after {} max {}; \
             peer closed all: {}",
            self.messages,
            self.fail_ratio * 100.0,
            self.concurrency,
            self.elapsed.as_secs_f64(),
            self.per_second(),
            self.per_cpu_second().unwrap_or(f64::NAN),
            self.ok,
            self.errors,
            self.mismatched,
            self.fds_before,
            self.fds_after,
            self.fds_max,
            self.peer_all_closed,
        )
    }
}

/// Sends `messages` messages with `concurrency` in flight; a `fail_ratio` share of them
/// (spread evenly) go to a port where nothing listens and fail with "refused".
///
/// # Panics
/// If the loopback echo peer cannot be bound (nothing to measure then).
pub async fn run(messages: usize, fail_ratio: f64, concurrency: usize) -> BenchReport {
    let peer = FaultPeer::start(FaultMode::EchoLine)
        .await
        .expect("bind a loopback echo peer");
    let refused = refused_addr().expect("find a free loopback port");
    let echo_req = request(peer.addr().port());
    let fail_req = request(refused.port());
    let client = LegacyClient::new(LegacySettings::default());
    let cancel = CancellationToken::new();

    let fds_before = open_fds().unwrap_or(0);
    let fds_max = Arc::new(AtomicUsize::new(fds_before));
    let sampling = CancellationToken::new();
    let sampler = tokio::spawn({
        let (fds_max, sampling) = (Arc::clone(&fds_max), sampling.clone());
        async move {
            while !sampling.is_cancelled() {
                if let Ok(n) = open_fds() {
                    fds_max.fetch_max(n, Ordering::Relaxed);
                }
                tokio::select! {
                    () = sampling.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
        }
    });

    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = process_cpu();
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let (next, client, cancel) = (Arc::clone(&next), client.clone(), cancel.clone());
        let (echo_req, fail_req) = (echo_req.clone(), fail_req.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= messages {
                    return tally;
                }
                let fails = fails(i, fail_ratio);
                let req = if fails { &fail_req } else { &echo_req };
                match client.send(req, &cancel).await {
                    // The delimiter is not part of the stored reply.
                    Ok(reply) if req.message().strip_suffix(b"\n") == Some(&reply.bytes[..]) => {
                        tally.ok += 1;
                    }
                    Ok(_) => tally.mismatched += 1,
                    Err(e) => *tally.errors.entry(e.kind()).or_default() += 1,
                }
            }
        }));
    }
    let mut total = Tally::default();
    for w in workers {
        if let Ok(t) = w.await {
            total.ok += t.ok;
            total.mismatched += t.mismatched;
            for (k, n) in t.errors {
                *total.errors.entry(k).or_default() += n;
            }
        }
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    // Every send that was not meant to fail opened one connection to the echo peer.
    let echoed = (0..messages).filter(|i| !fails(*i, fail_ratio)).count();
    let (_, peer_all_closed) = peer
        .wait_closed(echoed as u64, Duration::from_secs(10))
        .await;
    sampling.cancel();
    let _ = sampler.await;
    let fds_after = open_fds().unwrap_or(0);

    BenchReport {
        messages,
        concurrency,
        fail_ratio,
        ok: total.ok,
        errors: total.errors,
        mismatched: total.mismatched,
        elapsed,
        cpu,
        fds_before,
        fds_after,
        fds_max: fds_max.load(Ordering::Relaxed).max(fds_after),
        peer_all_closed,
    }
}

#[derive(Default)]
struct Tally {
    ok: usize,
    mismatched: usize,
    errors: BTreeMap<&'static str, usize>,
}

fn request(port: u16) -> LegacyRequest {
    LegacyRequest::parse(&json!({
        "host": "127.0.0.1",
        "port": port,
        "message": "PING 0123456789 legacy host, please echo this line\n",
        "delimiter": "\n",
    }))
    .expect("the bench payload is valid")
}

/// Message `i` fails when the running count of failures steps up at `i`: evenly spread.
fn fails(i: usize, ratio: f64) -> bool {
    ((i + 1) as f64 * ratio).floor() > (i as f64 * ratio).floor()
}

/// User + system CPU time of this process, from `/proc/self/stat` (fields 14 and 15, in
/// clock ticks of 1/100 s, the value of USER_HZ on Linux).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces; the fields after it start past the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}
