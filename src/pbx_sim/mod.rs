//! A simulated Asterisk PBX speaking AMI over TCP, for tests, benchmarks and the demo.
//!
//! It replays the event sequences of real Asterisk 22 calls (`templates.rs`, generated from
//! the captures in `shared/ami-transcripts/`) with each call's own names, uniqueids, CallerID,
//! ActionID and variables filled in, so a client tested here meets the same headers in the
//! same order as in production.
//!
//! # Choosing the outcome
//! The Originate `Channel` picks it, like the lab dialplan did (`Local/<exten>@callee`):
//!
//! | Channel | outcome (OriginateResponse) |
//! |---|---|
//! | `Local/answer[_M]@callee` | answer at once, callee hangs up after M ms (default 1922) — Success 4 |
//! | `Local/beep[_M]@callee` | as answer, M defaults to 1000 (the lab's 0.5 s tone; `answer`'s events) |
//! | `Local/long-answer[_M]@callee` | answer, callee in `Wait(30)`, hangs up after M ms (30000) — for a dialer-side Hangup |
//! | `Local/slow-answer[_N[_M]]@callee` | ring N ms (2000), answer, hang up M ms later — Success 4 |
//! | `Local/busy@callee` | Failure 5, causes 17 / 0 |
//! | `Local/congestion@callee` | Failure 8, causes 34 / 0 |
//! | `Local/noanswer@callee` | ring until the Originate `Timeout` (default 30 s) — Failure 3, cause 19 |
//! | `Local/reject[_N]@callee` | ring N ms (1000), callee hangs up with cause 21 — Failure 0 |
//! | `Local/drop[_N]@callee` | answer, then the PBX drops *this client's* TCP connection after N ms (500) |
//! | `Local/<other>@callee`, `Local/x@<other context>` | nonexistent: Failure 0, causes 0 / 0 |
//! | `Local/<number>@callee` (digits, `*`, `#`, a leading `+`) | as [`SimConfig::numbers`] says, else by its last digit |
//! | `<Tech>/…` with Tech ≠ Local | invalid tech: Failure 0, `Uniqueid: <unknown>` (or the ChannelId), no channels |
//! | no `/` | synchronous `Response: Error`, `Message: Invalid channel` |
//!
//! A ring (slow-answer, reject) longer than the Originate `Timeout` ends as noanswer does
//! (Failure 3, cause 19). A `ChannelId`/`OtherChannelId` still used by a live call fails at
//! once: Failure 0, `Uniqueid:` the reused id, no channels (channelid-duplicate.txt).
//!
//! The landing point must be `Context: originated` with `Exten: s` or `hangup-now` (the
//! landing hangs up at once: landing-hangs-up.txt), or an `Application` (its
//! OriginateResponse carries `Application`/`Data`; `Wait` with N seconds ends the call after
//! N s with cause 0: probe-application.txt), else `Extension does not exist.`. A user
//! without write permission (`readonly` by default), or a session not logged in, gets
//! `Permission denied`. `Action: Hangup` on a live channel ends the call with the captured
//! dialer-hangup sequence; its `Cause` reaches the Hangup and HangupRequest events and an
//! unanswered call's Cdr disposition (17 → BUSY, …); `Cause: N` on a ringing `;2` replays
//! probe-hangup-ringing-leg2.txt. `CoreShowChannels` and `Status` report each leg's state,
//! context, exten, priority and application as the call's own events left them. The
//! CallerID is parsed as Asterisk does (quoted names with `\"`, name only, number only) and
//! shown the way probe-callerid.txt shows it. Also answered: `Ping`, `Events`, `Filter`,
//! `CoreStatus`, `CoreSettings`, `Getvar` (always empty), `Command` (`core show channels
//! count` only); a message without `Action:` or with an unknown one gets the captured error
//! and, once logged in, a `RequestBadFormat` event.
//!
//! Cdr: `Duration`/`BillableSeconds` are truncated like Asterisk's (whole seconds of real
//! time, not scaled). [`SimConfig::cdr_unanswered`] (default `true`, the lab) off gives
//! stock Asterisk: no Cdr event at all for a call never answered.
//!
//! Booting: with [`SimConfig::boot_delay`] the simulator starts as an Asterisk that is
//! still loading (real time, not scaled). Logins are accepted but get no `FullyBooted`;
//! an Originate is refused with `Extension does not exist.` (the dialplan is not loaded
//! yet: what a real Asterisk 22 answered, twice out of two, right after a restart). When
//! the delay is over, every logged-in session whose mask and filters let a `system` event
//! through gets `Event: FullyBooted`, as manager.c sends it to all sessions; later logins
//! get it right after the login reply again. A restart is [`PbxSim::shutdown`] and
//! [`PbxSim::start`] on the same address.
//!
//! Stopping: [`PbxSim::shutdown_gracefully`] is `core stop now` (each live call's
//! SoftHangupRequest, HangupRequest, Hangup with cause 0 and Cdr, then `Event: Shutdown`,
//! then FIN); [`PbxSim::shutdown`] is SIGKILL (a bare FIN); [`PbxSim::drop_connections`] a
//! network failure. [`PbxSim::originates`] counts the Originate actions received.
//!
//! All delays are multiplied by [`SimConfig::time_scale`] so tests run fast. Faults
//! ([`Faults`]) come from the config or a scenario file (`key = value`, see
//! [`apply_scenario`]): noise calls of another client, Hangup before OriginateResponse,
//! duplicated or pairwise-swapped events, a slow stream, `response_after_events` (a fast
//! call's OriginateResponse before its Originate's reply, as Asterisk does under load) and
//! `vary_order` (a seed: per call, the legs' Hangups swap and a failed OriginateResponse
//! moves across them, the variation real runs show).
//!
//! # Known differences from Asterisk 22
//! - Cdr times are UTC (Asterisk writes local time).
//! - Each outcome replays one captured run: without `vary_order`, the orders that vary
//!   between real runs (the legs' Hangups, OriginateResponse around failed calls' Hangups)
//!   are fixed; Cdr around Hangups and OriginateResponse, DialEnd around
//!   OriginateResponse and DeviceStateChange states are never varied. Replies are queued before the call's events unless
//!   `response_after_events` is on (real Asterisk interleaves them under load by itself).
//! - `beep` plays `answer`'s events (Playback of hello-world, not lab/lab-beep).
//! - `long-answer`'s own end (the callee hanging up after M ms) is not captured: it is
//!   `answer`'s end (Playback's `PLAYBACKSTATUS` VarSet, priorities of `answer`).
//! - A Hangup with a Cause on `;1` while ringing, a Hangup of `;2` once answered, and a
//!   stop while a call rings are not captured: they reuse the captured dialer-hangup
//!   sequences with the cause rewritten (`Priority:` that of noanswer's `Wait`). A Cause's
//!   disposition mapping follows cdr.c (17 BUSY, 34 CONGESTION, 3/20 FAILED, 16/19 NO
//!   ANSWER, others keep the captured one).
//! - Application landings are modelled on `answer` only; with `Application` the other
//!   outcomes replay their usual events with Application/Data in the OriginateResponse. A
//!   `hangup-now` landing after a slow answer plays the ordinary slow-answer events.
//! - A reused live ChannelId does not leak a channel (Asterisk does, and its `core stop
//!   now` then waits its 15 s timeout: README fact 8).
//! - `CoreShowChannels`/`Status` list `;1` first once answered and `;2` first while ringing,
//!   as the two captures did; `Duration`/`Seconds` are real time since the Originate.
//!   Calls of noise clients are listed too.
//! - `core stop gracefully` (which may close without `Event: Shutdown`, fact 17) is not
//!   modelled separately; the Logoff, login-failure and filter behaviour are as captured,
//!   `Filter` regexes are a substring subset.

mod call;
mod render;
mod scenario;
mod session;
mod templates;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use scenario::{CallOutcome, Faults, apply_scenario, outcome_for_channel};
pub use session::OUTBOX_CAPACITY;

/// An AMI account of the simulator.
#[derive(Debug, Clone)]
pub struct SimUser {
    pub username: String,
    pub secret: String,
    /// May send Originate/Hangup (Asterisk's `write` permission).
    pub write: bool,
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub users: Vec<SimUser>,
    /// Multiplies every call-progress delay (1.0 = the captures' timing).
    pub time_scale: f64,
    /// Delay before `Authentication failed` (Asterisk: about 1 s).
    pub auth_failure_delay: Duration,
    pub faults: Faults,
    /// Phone numbers dialled as `Local/<number>@callee`, each to the scenario it plays
    /// (`"answer_1000"`, `"busy"`, … as in the table above). A number not listed plays
    /// by its last digit: 0–4 answer, 5 busy, 6 noanswer, 7 congestion, 8 reject,
    /// 9 slow-answer.
    pub numbers: HashMap<String, String>,
    /// cdr.conf `unanswered`: send Cdr events for calls that were never answered. The
    /// default is `true`, like the lab the captures (and so the templates) come from; stock
    /// Asterisk has `false` and sends no Cdr at all for busy, no answer, failed calls
    /// (busy-cdr-default.txt, noanswer-cdr-default.txt), so a dialer must not wait for one.
    pub cdr_unanswered: bool,
    /// How long after the start the simulated Asterisk is still booting (real time, not
    /// scaled by `time_scale`); zero (the default) starts fully booted.
    pub boot_delay: Duration,
}

impl SimConfig {
    /// The channel with a dialled number replaced by its scenario (see
    /// [`SimConfig::numbers`]); any other channel as it is.
    pub fn scenario_channel<'a>(&self, channel: &'a str) -> std::borrow::Cow<'a, str> {
        let Some(rest) = channel.strip_prefix("Local/") else {
            return channel.into();
        };
        let Some((number, context)) = rest.split_once('@') else {
            return channel.into();
        };
        let digits = number.strip_prefix('+').unwrap_or(number);
        let is_number = !digits.is_empty()
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#');
        if !is_number {
            return channel.into();
        }
        let scenario = match self.numbers.get(number) {
            Some(s) => s.as_str(),
            None => match digits.as_bytes()[digits.len() - 1] {
                b'0'..=b'4' => "answer",
                b'5' => "busy",
                b'6' => "noanswer",
                b'7' => "congestion",
                b'8' => "reject",
                _ => "slow-answer",
            },
        };
        format!("Local/{scenario}@{context}").into()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            users: vec![
                SimUser {
                    username: "dialer".into(),
                    secret: "dialer-secret".into(),
                    write: true,
                },
                SimUser {
                    username: "readonly".into(),
                    secret: "readonly-secret".into(),
                    write: false,
                },
            ],
            time_scale: 1.0,
            auth_failure_delay: Duration::from_secs(1),
            faults: Faults::default(),
            numbers: HashMap::new(),
            cdr_unanswered: true,
            boot_delay: Duration::ZERO,
        }
    }
}

pub(crate) struct SimState {
    cfg: SimConfig,
    sessions: Mutex<HashMap<u64, session::SessionHandle>>,
    calls: Mutex<HashMap<String, Arc<call::CallHandle>>>,
    next_session: AtomicU64,
    chan_seq: AtomicU64,
    uid_seq: AtomicU64,
    noise_seq: AtomicU64,
    /// Originate actions received, whatever became of them.
    originates: AtomicU64,
    /// Of those, the ones refused because the simulated Asterisk was still booting.
    originates_booting: AtomicU64,
    /// When the latest Originates arrived (at most [`ORIGINATE_TIMES_KEPT`]), since
    /// `started`: tests check calls per second.
    originate_times: Mutex<std::collections::VecDeque<Duration>>,
    /// The most calls that were up at once.
    peak_live: std::sync::atomic::AtomicUsize,
    /// False until the boot delay is over. Held while a login decides whether it gets the
    /// login-time `FullyBooted` and while the boot-time one is broadcast, so a session
    /// gets exactly one, after its login reply.
    booted: Mutex<bool>,
    /// Calls with channels that have ended (`CoreProcessedCalls`).
    processed: AtomicU64,
    /// Woken whenever a call ends (the graceful stop waits for the last one).
    call_ended: tokio::sync::Notify,
    /// Picks each call's seed for `Faults::vary_order`.
    vary_seq: AtomicU64,
    uid_base: u64,
    started: std::time::Instant,
    started_wall: u64,
    /// `core stop now`: live calls hang up (Hangup, Cdr) before the sessions close.
    stop_now: CancellationToken,
    shutdown: CancellationToken,
}

impl SimState {
    fn scaled(&self, d: Duration) -> Duration {
        d.mul_f64(self.cfg.time_scale.max(0.0))
    }

    /// Live calls with channels.
    fn live_call_count(&self) -> usize {
        self.calls
            .lock()
            .map(|g| g.iter().filter(|(k, c)| **k == c.chan1).count())
            .unwrap_or(0)
    }

    fn processed_calls(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    /// Start date and time, `YYYY-MM-DD` and `HH:MM:SS` (CoreStatus).
    fn started_at(&self) -> (String, String) {
        let t = render::format_time(self.started_wall);
        let (d, h) = t.split_once(' ').unwrap_or((&t, ""));
        (d.to_owned(), h.to_owned())
    }

    fn is_booted(&self) -> bool {
        self.booted.lock().map(|b| *b).unwrap_or(true)
    }

    /// Ends the boot: `Event: FullyBooted` (a normal `system` event, so masks and filters
    /// apply) to every logged-in session.
    fn finish_boot(&self) {
        let Ok(mut booted) = self.booted.lock() else {
            return;
        };
        if *booted {
            return;
        }
        *booted = true;
        self.broadcast("FullyBooted", session::fully_booted(self.started));
        tracing::info!("pbx-sim: fully booted");
    }

    fn next_uid(&self) -> String {
        format!(
            "{}.{}",
            self.uid_base,
            self.uid_seq.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// How many Originate arrival times the simulator keeps.
const ORIGINATE_TIMES_KEPT: usize = 65_536;

/// A running simulator. Dropping it does not stop it; call [`PbxSim::shutdown`].
pub struct PbxSim {
    addr: SocketAddr,
    state: Arc<SimState>,
    task: JoinHandle<()>,
}

impl PbxSim {
    /// Binds `listen` (port 0 picks a free port) and starts accepting.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start(listen: SocketAddr, cfg: SimConfig) -> std::io::Result<PbxSim> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let boot_delay = cfg.boot_delay;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let state = Arc::new(SimState {
            cfg,
            sessions: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            chan_seq: AtomicU64::new(0),
            uid_seq: AtomicU64::new(0),
            noise_seq: AtomicU64::new(0),
            originates: AtomicU64::new(0),
            originate_times: Mutex::new(std::collections::VecDeque::new()),
            peak_live: std::sync::atomic::AtomicUsize::new(0),
            originates_booting: AtomicU64::new(0),
            booted: Mutex::new(boot_delay.is_zero()),
            processed: AtomicU64::new(0),
            call_ended: tokio::sync::Notify::new(),
            vary_seq: AtomicU64::new(0),
            uid_base: now,
            started: std::time::Instant::now(),
            started_wall: now,
            stop_now: CancellationToken::new(),
            shutdown: CancellationToken::new(),
        });
        if !boot_delay.is_zero() {
            let st = state.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = st.shutdown.cancelled() => {}
                    _ = tokio::time::sleep(boot_delay) => st.finish_boot(),
                }
            });
        }
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = st.shutdown.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok((stream, peer)) => {
                            let _ = stream.set_nodelay(true);
                            tokio::spawn(session::handle(st.clone(), stream, peer));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "pbx-sim accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
        });
        tracing::info!(%addr, "pbx-sim listening");
        Ok(PbxSim { addr, state, task })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every client connection at once (a network failure: no Shutdown event).
    pub fn drop_connections(&self) {
        if let Ok(g) = self.state.sessions.lock() {
            for s in g.values() {
                s.kill.cancel();
            }
        }
    }

    /// Calls with live channels.
    pub fn live_calls(&self) -> usize {
        self.state.live_call_count()
    }

    /// `Action: Originate` messages received on all sessions since the start, refused ones
    /// included: lets a test check that a client sent exactly one.
    pub fn originates(&self) -> u64 {
        self.state.originates.load(Ordering::Relaxed)
    }

    /// The most calls up at once since the start.
    pub fn peak_live_calls(&self) -> usize {
        self.state.peak_live.load(Ordering::Relaxed)
    }

    /// When the latest Originates (up to 65,536) arrived, as time since the simulator
    /// started, in order.
    pub fn originate_times(&self) -> Vec<Duration> {
        self.state
            .originate_times
            .lock()
            .map(|g| g.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Whether the simulated Asterisk has finished booting (see [`SimConfig::boot_delay`]).
    pub fn is_booted(&self) -> bool {
        self.state.is_booted()
    }

    /// Ends the boot now rather than when [`SimConfig::boot_delay`] runs out (for a test
    /// that wants the moment exactly); nothing happens if it has already ended.
    pub fn finish_boot(&self) {
        self.state.finish_boot();
    }

    /// Originates refused because they came while the simulated Asterisk was booting.
    pub fn originates_while_booting(&self) -> u64 {
        self.state.originates_booting.load(Ordering::Relaxed)
    }

    /// Connected sessions.
    pub fn sessions(&self) -> usize {
        self.state.sessions.lock().map(|g| g.len()).unwrap_or(0)
    }

    /// `core stop now` (shutdown-stop-now.txt): every live call hangs up with its
    /// SoftHangupRequest, HangupRequest, Hangup (Cause 0) and Cdr events, then every session
    /// gets `Event: Shutdown` (`Shutdown: Cleanly`, `Restart: False`) and its socket is
    /// closed after what was queued. For an abrupt stop (SIGKILL: a bare FIN) use
    /// [`PbxSim::shutdown`].
    pub async fn shutdown_gracefully(self) {
        self.state.stop_now.cancel();
        // Each call's task sends its hangup events and unregisters; bounded wait.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                let ended = self.state.call_ended.notified();
                if self.live_calls() == 0 {
                    break;
                }
                ended.await;
            }
        })
        .await;
        self.state.broadcast(
            "Shutdown",
            "Event: Shutdown\r\nPrivilege: system,all\r\nShutdown: Cleanly\r\nRestart: False\r\n\r\n".into(),
        );
        self.state.close_all_after_queued();
        // Give each writer a bounded moment to flush and close before the hard stop.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while self.sessions() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.shutdown().await;
    }

    /// Stops accepting, drops every connection (like SIGKILL: a bare FIN) and frees the port.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        self.drop_connections();
        let _ = self.task.await;
    }
}

/// Runs the simulator until `shutdown` resolves: what `dialout pbx-sim --listen ADDR
/// [--scenario FILE]` calls.
///
/// # Errors
/// Bind errors, or a scenario file that cannot be read or parsed.
pub async fn run(
    listen: SocketAddr,
    scenario: Option<&Path>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut cfg = SimConfig::default();
    if let Some(p) = scenario {
        let text = std::fs::read_to_string(p)?;
        apply_scenario(&text, &mut cfg)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    }
    let sim = PbxSim::start(listen, cfg).await?;
    shutdown.await;
    sim.shutdown().await;
    Ok(())
}
