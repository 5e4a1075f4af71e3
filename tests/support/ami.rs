//! Shared test helpers: capture files, a simulator, a client config.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use dialout::ami::AmiConfig;
use dialout::ami::actions::LoginAuth;
use dialout::pbx_sim::{PbxSim, SimConfig};

/// Where the captures live: `DIALOUT_AMI_TRANSCRIPTS`, else `../shared/ami-transcripts`.
pub fn transcripts_dir() -> PathBuf {
    std::env::var_os("DIALOUT_AMI_TRANSCRIPTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/ami-transcripts"
            ))
        })
}

/// Every `*.txt` capture, sorted.
pub fn capture_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(transcripts_dir())
        .expect("transcripts dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    v.sort();
    v
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    FromAsterisk,
    ToAsterisk,
}

/// One message block of a capture.
#[derive(Debug, Clone)]
pub struct Block {
    pub dir: Dir,
    pub t: f64,
    pub lines: Vec<String>,
}

impl Block {
    /// Wire bytes as the capture README says: lines joined by CRLF, plus CRLF, plus one more
    /// CRLF except for the greeting.
    pub fn wire(&self, greeting: bool) -> Vec<u8> {
        let mut s = self.lines.join("\r\n");
        s.push_str("\r\n");
        if !greeting {
            s.push_str("\r\n");
        }
        s.into_bytes()
    }

    pub fn is_greeting(&self) -> bool {
        self.dir == Dir::FromAsterisk && self.lines.len() == 1 && !self.lines[0].contains(": ")
    }

    pub fn first(&self) -> &str {
        &self.lines[0]
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(": ")))
    }
}

pub fn parse_capture(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut cur: Option<Block> = None;
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("<<< t=")
            .or_else(|| line.strip_prefix(">>> t="))
        {
            if let Some(b) = cur.take() {
                out.push(b);
            }
            let dir = if line.starts_with("<<<") {
                Dir::FromAsterisk
            } else {
                Dir::ToAsterisk
            };
            cur = Some(Block {
                dir,
                t: rest.trim().parse().unwrap(),
                lines: Vec::new(),
            });
        } else if line.is_empty() || line.starts_with('#') {
            if let Some(b) = cur.take()
                && !b.lines.is_empty()
            {
                out.push(b);
            }
        } else if let Some(b) = cur.as_mut() {
            b.lines.push(line.to_owned());
        }
    }
    if let Some(b) = cur.take()
        && !b.lines.is_empty()
    {
        out.push(b);
    }
    out
}

pub fn load(name: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(transcripts_dir().join(name)).expect("capture");
    parse_capture(&text)
}

/// A fast simulator on a free loopback port.
pub async fn start_sim(cfg: SimConfig) -> PbxSim {
    PbxSim::start("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .expect("sim start")
}

pub fn fast_sim_config() -> SimConfig {
    SimConfig {
        time_scale: 0.01,
        auth_failure_delay: Duration::from_millis(20),
        ..SimConfig::default()
    }
}

pub fn client_config(sim: &PbxSim) -> AmiConfig {
    AmiConfig {
        host: "127.0.0.1".into(),
        port: sim.local_addr().port(),
        username: "dialer".into(),
        secret: "dialer-secret".into(),
        auth: LoginAuth::Plain,
        events: dialout::ami::actions::EventsMask::On,
        action_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        ping_interval: None,
        reconnect_backoff_min: Duration::from_millis(20),
        reconnect_backoff_max: Duration::from_millis(200),
        ..AmiConfig::default()
    }
}

/// Bounds every wait in tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// Replaces the ids that differ from run to run in an AMI value: Asterisk uniqueids
/// (`<uid0>`, `<uid1>`, … numbered by first sight in `uids`) and Local channel sequence
/// numbers (`Local/x@callee-0000000a;1` → `Local/x@callee-<seq>;1`).
pub fn normalize_ids(uids: &mut std::collections::HashMap<String, usize>, v: &str) -> String {
    let is_uid = |s: &str| {
        s.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
        })
    };
    if is_uid(v) {
        let n = uids.len();
        return format!("<uid{}>", uids.entry(v.to_owned()).or_insert(n));
    }
    let mut out = String::new();
    let mut rest = v;
    while let Some(i) = rest.find('-') {
        let tail = &rest[i + 1..];
        if tail.len() >= 9
            && tail[..8].bytes().all(|c| c.is_ascii_hexdigit())
            && tail.as_bytes()[8] == b';'
        {
            out.push_str(&rest[..i]);
            out.push_str("-<seq>");
            rest = &tail[8..];
        } else {
            out.push_str(&rest[..=i]);
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// Test settings for a worker that runs only `dial`, against `sim` (its dialer login,
/// short timeouts).
pub fn dial_settings(sim: &PbxSim) -> dialout::config::Settings {
    let mut s = super::settings();
    s.worker.kinds = vec!["dial".into()];
    s.ami.host = "127.0.0.1".into();
    s.ami.port = sim.local_addr().port();
    s.ami.username = "dialer".into();
    s.ami.secret = dialout::config::SecretString::from("dialer-secret");
    s.ami.action_timeout_ms = 2000;
    s.ami.ping_interval_ms = 0;
    s.dial.channel = "Local/{number}@callee".into();
    s.dial.settle_ms = 300;
    s.dial.ring_timeout_ms = 4000;
    s
}

/// Test settings for a replica that runs `dial` and `noop` with no PBX where its AMI
/// link points: the link never comes up, so `dial` is never ready.
pub fn settings_without_pbx() -> dialout::config::Settings {
    let mut s = super::settings();
    s.worker.kinds = vec!["dial".into(), "noop".into()];
    s.ami.port = super::unused_addr().port();
    s.ami.connect_timeout_ms = 200;
    s
}
