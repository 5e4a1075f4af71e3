//! Benchmarks (figures printed, never asserted): codec + typed-event throughput, and many
//! concurrent originate-and-track sequences through one connection. Run through
//! `cargo run --release --example ami_bench`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::oneshot;
use tokio_util::codec::Decoder;

use super::codec::AmiCodec;
use super::config::AmiConfig;
use super::error::AmiError;
use super::event::Event;
use super::subscriber::Notice;
use super::{AmiClient, Originate};

/// Result of [`parse_throughput`].
#[derive(Debug, Clone)]
pub struct ParseReport {
    pub events: u64,
    pub bytes: u64,
    pub typed: u64,
    pub distinct_event_names: usize,
    pub elapsed: Duration,
}

impl ParseReport {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for ParseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "parse: {} events ({:.1} MB) in {:.3} s = {:.0} events/s into typed events ({:.1} MB/s); {} typed as dialer events, {} distinct names",
            self.events,
            self.bytes as f64 / 1e6,
            self.elapsed.as_secs_f64(),
            self.events_per_sec(),
            self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9),
            self.typed,
            self.distinct_event_names,
        )
    }
}

/// Wire bytes of every event Asterisk sent in the captures under `dir` (their real mix).
///
/// # Errors
/// Reading the directory or a file.
pub fn captured_events(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let mut cur: Option<Vec<&str>> = None;
        let mut incoming = false;
        for line in text.lines().chain(std::iter::once("")) {
            if line.starts_with("<<< t=") || line.starts_with(">>> t=") {
                incoming = line.starts_with("<<<");
                cur = Some(Vec::new());
            } else if line.is_empty() || line.starts_with('#') {
                if let Some(lines) = cur.take()
                    && incoming
                    && lines.first().is_some_and(|l| l.starts_with("Event: "))
                {
                    let mut w = lines.join("\r\n");
                    w.push_str("\r\n\r\n");
                    out.push(w.into_bytes());
                }
            } else if let Some(lines) = cur.as_mut() {
                lines.push(line);
            }
        }
    }
    Ok(out)
}

/// Decodes `target_events` events built from the captures' event mix, on the calling thread,
/// feeding the codec 64 KiB at a time as a socket would, and classifies each into a typed
/// [`Event`].
///
/// # Errors
/// Reading the captures; a decode error would be a bug and is returned as `InvalidData`.
pub fn parse_throughput(captures_dir: &Path, target_events: u64) -> std::io::Result<ParseReport> {
    let events = captured_events(captures_dir)?;
    if events.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no captured events",
        ));
    }
    let cycle: Vec<u8> = events.concat();
    let per_cycle = events.len() as u64;
    let cycles = target_events.div_ceil(per_cycle);
    let mut codec = AmiCodec::server(1 << 20, 4096);
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let (mut n, mut typed, mut bytes) = (0u64, 0u64, 0u64);
    let mut names: std::collections::HashSet<String> = std::collections::HashSet::new();
    let start = Instant::now();
    for c in 0..cycles {
        for chunk in cycle.chunks(64 * 1024) {
            buf.extend_from_slice(chunk);
            bytes += chunk.len() as u64;
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(m)) => {
                        n += 1;
                        let e = Event::parse(&m);
                        if c == 0
                            && let Some(name) = m.event_name()
                            && !names.contains(name)
                        {
                            names.insert(name.to_owned());
                        }
                        match e {
                            Some(Event::Unknown(_)) | None => {}
                            Some(_) => typed += 1,
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            e.to_string(),
                        ));
                    }
                }
            }
        }
    }
    Ok(ParseReport {
        events: n,
        bytes,
        typed,
        distinct_event_names: names.len(),
        elapsed: start.elapsed(),
    })
}

/// Result of [`originate_and_track`].
#[derive(Debug, Clone)]
pub struct TrackReport {
    pub calls: usize,
    pub completed: usize,
    pub failed: usize,
    pub peak_live_calls: usize,
    pub events_seen: u64,
    /// Everything the connection decoded (the subscriber only wanted some of it).
    pub messages_received: u64,
    pub dropped_events: u64,
    pub originate_phase: Duration,
    pub elapsed: Duration,
    pub rss_before_kb: u64,
    pub hwm_after_kb: u64,
    pub rss_after_kb: u64,
}

impl std::fmt::Display for TrackReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let grew = self.hwm_after_kb.saturating_sub(self.rss_before_kb);
        write!(
            f,
            "track: {} calls originated in {:.2} s, {} tracked to the end ({} failed) in {:.2} s; peak {} live calls on one connection; {} messages decoded, {} events routed to the tracker, {} dropped; \
             memory: VmRSS before {:.1} MB, VmHWM {:.1} MB, VmRSS after {:.1} MB, peak growth {:.1} MB = {:.2} KB per live call",
            self.calls,
            self.originate_phase.as_secs_f64(),
            self.completed,
            self.failed,
            self.elapsed.as_secs_f64(),
            self.peak_live_calls,
            self.messages_received,
            self.events_seen,
            self.dropped_events,
            self.rss_before_kb as f64 / 1024.0,
            self.hwm_after_kb as f64 / 1024.0,
            self.rss_after_kb as f64 / 1024.0,
            grew as f64 / 1024.0,
            grew as f64 / self.peak_live_calls.max(1) as f64,
        )
    }
}

/// `(VmRSS, VmHWM)` of this process in KiB, from /proc/self/status (0 where unavailable).
pub fn memory_kb() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Track {
    answered: bool,
    responded: bool,
    hangups: u8,
    done: Option<oneshot::Sender<bool>>,
}

/// Originates `calls` calls at once through one connection (`channel` e.g.
/// `Local/answer_10000@callee`), tagging each with its own CallerID number, and follows each
/// through its OriginateResponse and both Hangups, the way a dialer does: one subscriber
/// routes events by tag to per-call state.
///
/// # Errors
/// Connecting or logging in.
pub async fn originate_and_track(
    cfg: AmiConfig,
    calls: usize,
    channel: &str,
) -> Result<TrackReport, AmiError> {
    let (rss_before_kb, _) = memory_kb();
    let client = AmiClient::connect(cfg).await?;
    let table: Arc<Mutex<HashMap<u64, Track>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(calls)));
    let mut sub = client.subscribe_with_capacity(
        |m| matches!(m.event_name(), Some("OriginateResponse" | "Hangup")),
        1 << 20,
    );
    let peak = Arc::new(Mutex::new((0usize, 0usize)));
    let router = {
        let table = table.clone();
        let peak = peak.clone();
        tokio::spawn(async move {
            let mut seen = 0u64;
            while let Some(n) = sub.recv().await {
                let Notice::Event(m) = n else {
                    if matches!(n, Notice::Disconnected { .. }) {
                        break;
                    }
                    continue;
                };
                seen += 1;
                let Some(ev) = Event::parse(&m) else { continue };
                let (tag, is_or, ok) = match &ev {
                    Event::OriginateResponse(o) => (o.caller_id_num, true, o.is_success()),
                    Event::Hangup(h) => (h.caller_id_num, false, false),
                    _ => continue,
                };
                let Some(tag) = tag.and_then(|t| t.parse::<u64>().ok()) else {
                    continue;
                };
                let Ok(mut g) = table.lock() else { break };
                let Some(t) = g.get_mut(&tag) else { continue };
                if is_or {
                    t.responded = true;
                    t.answered = ok;
                    if ok && let Ok(mut p) = peak.lock() {
                        p.0 += 1;
                        p.1 = p.1.max(p.0);
                    }
                } else {
                    t.hangups += 1;
                }
                if t.responded && t.hangups >= 2 {
                    if t.answered
                        && let Ok(mut p) = peak.lock()
                    {
                        p.0 = p.0.saturating_sub(1);
                    }
                    if let Some(d) = t.done.take() {
                        let _ = d.send(true);
                    }
                    g.remove(&tag);
                }
            }
            (seen, sub.dropped())
        })
    };

    let start = Instant::now();
    let mut waits = Vec::with_capacity(calls);
    let mut tasks = Vec::with_capacity(calls);
    for i in 0..calls {
        let tag = 5_000_000 + i as u64;
        let (tx, rx) = oneshot::channel();
        if let Ok(mut g) = table.lock() {
            g.insert(
                tag,
                Track {
                    answered: false,
                    responded: false,
                    hangups: 0,
                    done: Some(tx),
                },
            );
        }
        waits.push(rx);
        let c = client.clone();
        let mut o = Originate::to_exten(channel, "originated", "s", 1);
        o.caller_id = Some(format!("\"JOB{tag}\" <{tag}>"));
        o.variables = vec![("DIALER_JOB_ID".into(), tag.to_string())];
        o.timeout = Some(Duration::from_secs(30));
        tasks.push(tokio::spawn(async move { c.originate(&o).await.is_ok() }));
    }
    let mut failed = 0;
    for t in tasks {
        if !t.await.unwrap_or(false) {
            failed += 1;
        }
    }
    let originate_phase = start.elapsed();
    let mut completed = 0;
    for w in waits {
        if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(120), w).await {
            completed += 1;
        }
    }
    let elapsed = start.elapsed();
    let (_, hwm_after_kb) = memory_kb();
    let messages_received = client.messages_received();
    client.shutdown().await;
    let (events_seen, dropped_events) = router.await.unwrap_or((0, 0));
    let (rss_after_kb, _) = memory_kb();
    let peak_live_calls = peak.lock().map(|p| p.1).unwrap_or(0);
    Ok(TrackReport {
        calls,
        completed,
        failed,
        peak_live_calls,
        events_seen,
        messages_received,
        dropped_events,
        originate_phase,
        elapsed,
        rss_before_kb,
        hwm_after_kb,
        rss_after_kb,
    })
}
