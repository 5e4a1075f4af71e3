//! A hostile or broken peer: garbage, a 10 MB line, a half message at EOF. The reader
//! survives (or drops just that connection on a cap) and memory stays bounded.

mod support;

use std::time::Duration;

use dialout::ami::actions::{EventsMask, Ping};
use dialout::ami::{AmiClient, AmiConfig, Notice};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

use support::ami::WAIT;

/// A fake Asterisk: greets, accepts any Login, then runs `script` for this connection.
async fn fake_pbx(scripts: Vec<Vec<u8>>) -> (u16, mpsc::UnboundedReceiver<usize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for (i, script) in scripts.into_iter().enumerate() {
            let (s, _) = l.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                serve(s, script).await;
                let _ = tx.send(i);
            });
        }
        // Later connections: behave, answer Pings, never close.
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(serve(s, Vec::new()));
        }
    });
    (port, rx)
}

async fn serve(s: TcpStream, script: Vec<u8>) {
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"Asterisk Call Manager/11.0.0\r\n")
        .await
        .unwrap();
    let mut lines = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let l = line.trim_end().to_owned();
        if !l.is_empty() {
            lines.push(l);
            continue;
        }
        let id = lines
            .iter()
            .find_map(|l| l.strip_prefix("ActionID: "))
            .unwrap_or("")
            .to_owned();
        let action = lines.first().cloned().unwrap_or_default();
        lines.clear();
        let resp = if action == "Action: Ping" {
            format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n")
        } else {
            format!(
                "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
            )
        };
        w.write_all(resp.as_bytes()).await.unwrap();
        if !script.is_empty() {
            // Right after the login response: play the script, then EOF.
            if w.write_all(&script).await.is_err() {
                return;
            }
            // End of script = EOF (half messages stay half).
            return;
        }
    }
}

fn cfg(port: u16) -> AmiConfig {
    AmiConfig {
        port,
        username: "u".into(),
        secret: "s".into(),
        events: EventsMask::On,
        max_message_bytes: 64 * 1024,
        max_lines_per_message: 512,
        reconnect_backoff_min: Duration::from_millis(10),
        reconnect_backoff_max: Duration::from_millis(50),
        ping_interval: None,
        // These peers send no FullyBooted.
        fully_booted_timeout: None,
        ..AmiConfig::default()
    }
}

fn vm_hwm_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test]
async fn garbage_then_ten_megabyte_line_then_half_message() {
    let mut garbage = Vec::new();
    // Binary junk and lines without ':' between real events: kept as lines, ignored.
    garbage.extend_from_slice(b"\x00\x01\xff\xfe junk without colon\r\n\r\n");
    garbage.extend_from_slice(b"Event: Marker\r\nSeq: 1\r\n\r\n");
    garbage.extend_from_slice(b"%%%%\n\n\r\n\xc3\x28: bad utf8\r\n\r\n");
    garbage.extend_from_slice(b"Event: Marker\r\nSeq: 2\r\n\r\n");
    // Then a 10 MB line with no end: must hit the 64 KiB cap and drop this connection only.
    garbage.extend(std::iter::repeat_n(b'A', 10 * 1024 * 1024));
    let half = b"Event: Marker\r\nSeq: 3\r\nEvent: Hang".to_vec();
    let (port, mut served) = fake_pbx(vec![garbage, half]).await;
    let hwm_before = vm_hwm_kb();

    let c = AmiClient::connect(cfg(port)).await.unwrap();
    let mut sub = c.subscribe(|m| m.event_name() == Some("Marker"));
    let mut seqs = Vec::new();
    let mut disconnects = 0;
    while disconnects < 2 {
        match timeout(WAIT, sub.recv()).await.unwrap().unwrap() {
            Notice::Event(m) => seqs.push(m.get("Seq").unwrap().to_owned()),
            Notice::Disconnected { .. } => disconnects += 1,
            Notice::Reconnected => {}
            Notice::Lagged(n) => panic!("lagged {n}"),
        }
    }
    // Markers around the garbage arrived; the half message at EOF did not become an event.
    assert_eq!(seqs, vec!["1", "2"]);
    assert_eq!(timeout(WAIT, served.recv()).await.unwrap(), Some(0));
    assert!(matches!(
        timeout(WAIT, sub.recv()).await.unwrap().unwrap(),
        Notice::Reconnected
    ));
    timeout(WAIT, c.send_action(&Ping)).await.unwrap().unwrap();
    if let (Some(a), Some(b)) = (hwm_before, vm_hwm_kb()) {
        // The 10 MB line was never buffered whole (the fake server's own 10 MB is counted).
        assert!(
            b.saturating_sub(a) < 40 * 1024,
            "peak memory grew by {} KiB",
            b - a
        );
    }
    c.shutdown().await;
}

/// A peer that logs us in and then goes silent (no replies, socket open): only the
/// keepalive Ping can notice.
#[tokio::test]
async fn keepalive_ping_detects_a_silent_peer() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let (s, _) = l.accept().await.unwrap();
            let silent = std::mem::replace(&mut first, false);
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                w.write_all(b"Asterisk Call Manager/11.0.0\r\n")
                    .await
                    .unwrap();
                let (mut line, mut id, mut answered) = (String::new(), String::new(), 0);
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.strip_prefix("ActionID: ") {
                        id = v.trim().to_owned();
                    }
                    if line.trim().is_empty() {
                        if silent && answered > 0 {
                            continue; // swallow everything after the login
                        }
                        answered += 1;
                        let resp =
                            format!("Response: Success\r\nActionID: {id}\r\nMessage: ok\r\n\r\n");
                        if w.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let mut c = cfg(port);
    c.ping_interval = Some(Duration::from_millis(50));
    c.action_timeout = Duration::from_millis(200);
    let client = AmiClient::connect(c).await.unwrap();
    let mut sub = client.subscribe(|_| false);
    match timeout(WAIT, sub.recv()).await.unwrap().unwrap() {
        Notice::Disconnected { reason } => assert!(reason.contains("keepalive"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        timeout(WAIT, sub.recv()).await.unwrap().unwrap(),
        Notice::Reconnected
    ));
    timeout(WAIT, client.send_action(&Ping))
        .await
        .unwrap()
        .unwrap();
    client.shutdown().await;
}
