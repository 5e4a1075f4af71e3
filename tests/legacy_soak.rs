//! 10,000 sends over every fault mode, 200 at a time. Afterwards the process holds the
//! descriptors it held before, every send ended the way its peer dictates, and the socket
//! table has no half-closed socket on any peer's port: the seed's leak cannot hide here.
//!
//! Alone in its file (its own process) because it counts the process's descriptors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use dialout::jobs::legacy::fault_peer::{
    FaultMode, FaultPeer, half_closed_sockets, open_fds, refused_addr,
};
use dialout::jobs::legacy::{
    LegacyClient, LegacyError, LegacyReply, LegacyRequest, LegacySettings, Phase,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SENDS: usize = 10_000;
const CONCURRENCY: usize = 200;
const CAP: usize = 4096;
const BOUND: Duration = Duration::from_secs(60);

/// What a case sends where, and what it must get back.
struct Case {
    name: &'static str,
    /// Index into the peer list; `None` for the refused port.
    peer: Option<usize>,
    req: LegacyRequest,
    check: fn(&Result<LegacyReply, LegacyError>, &[u8]) -> bool,
    /// The reply an echo case must return.
    expect: Vec<u8>,
}

fn payload(port: u16, message: &[u8], extra: Value) -> LegacyRequest {
    let mut v =
        json!({"host": "127.0.0.1", "port": port, "message_base64": STANDARD.encode(message)});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    LegacyRequest::parse(&v).expect("valid test payload")
}

fn reply_is(r: &Result<LegacyReply, LegacyError>, expect: &[u8]) -> bool {
    matches!(r, Ok(reply) if reply.bytes == expect)
}

fn reply_timeout(r: &Result<LegacyReply, LegacyError>, _: &[u8]) -> bool {
    matches!(r, Err(e) if e.is_timeout() == Some(Phase::Reply))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sends_over_every_fault_leave_nothing_open() {
    let modes = [
        FaultMode::Echo,
        FaultMode::Silent,
        FaultMode::HalfThenStall,
        FaultMode::ResetMidReply,
        FaultMode::Flood { bytes: 4 * CAP },
        // A "byte a second" scaled down: 20 bytes take 600 ms, the reply timeout is 100 ms.
        FaultMode::Drip {
            interval: Duration::from_millis(30),
        },
        FaultMode::CloseBeforeRead,
        // Replies and closes first: the path where a leaky client would sit in CLOSE_WAIT.
        FaultMode::EchoLine,
    ];
    let mut peers = Vec::new();
    for mode in &modes {
        peers.push(FaultPeer::start(mode.clone()).await.expect("bind a peer"));
    }
    let refused = refused_addr().expect("free port");
    let port = |i: usize| peers[i].addr().port();

    // All 256 byte values, so every echo case also proves binary transparency.
    let binary: Vec<u8> = (0..=255u8).collect();
    let line = b"legacy request 0001\n".to_vec();
    let fast = json!({"reply_timeout_ms": 10000});
    let with = |a: Value, b: Value| {
        let mut a = a;
        if let (Some(o), Some(e)) = (a.as_object_mut(), b.as_object()) {
            o.extend(e.clone());
        }
        a
    };
    let delim = json!({"delimiter_base64": STANDARD.encode([0xff, 0xfe])});
    let stripped_line = line[..line.len() - 1].to_vec();
    let slow = json!({"delimiter": "\n", "reply_timeout_ms": 100});
    let mut prefixed = vec![1u8, 0]; // 256, big endian
    prefixed.extend_from_slice(&binary);
    let mut delimited = binary.clone();
    delimited.extend_from_slice(&[0xff, 0xfe]);

    let cases = vec![
        Case {
            name: "echo until_close",
            peer: Some(0),
            req: payload(port(0), &binary, fast.clone()),
            check: reply_is,
            expect: binary.clone(),
        },
        Case {
            name: "echo delimiter",
            peer: Some(0),
            req: payload(port(0), &delimited, with(delim.clone(), fast.clone())),
            check: reply_is,
            expect: binary.clone(),
        },
        Case {
            name: "echo length_prefix",
            peer: Some(0),
            req: payload(
                port(0),
                &prefixed,
                with(json!({"length_prefix": 2}), fast.clone()),
            ),
            check: reply_is,
            expect: binary.clone(),
        },
        Case {
            name: "echo max_bytes",
            peer: Some(0),
            req: payload(
                port(0),
                &binary,
                with(json!({"max_bytes": 256}), fast.clone()),
            ),
            check: reply_is,
            expect: binary.clone(),
        },
        Case {
            name: "fire and forget",
            peer: Some(0),
            req: payload(port(0), &line, json!({"expect_reply": false})),
            check: reply_is,
            expect: Vec::new(),
        },
        Case {
            name: "refused",
            peer: None,
            req: payload(refused.port(), &line, slow.clone()),
            check: |r, _| matches!(r, Err(LegacyError::Refused { .. })),
            expect: Vec::new(),
        },
        Case {
            name: "silent",
            peer: Some(1),
            req: payload(port(1), &line, slow.clone()),
            check: reply_timeout,
            expect: Vec::new(),
        },
        Case {
            name: "half then stall",
            peer: Some(2),
            req: payload(port(2), &line, slow.clone()),
            check: reply_timeout,
            expect: Vec::new(),
        },
        Case {
            name: "reset mid-reply",
            peer: Some(3),
            req: payload(port(3), &line, with(slow.clone(), fast.clone())),
            check: |r, _| {
                matches!(
                    r,
                    Err(LegacyError::Reset {
                        phase: Phase::Reply,
                        ..
                    })
                )
            },
            expect: Vec::new(),
        },
        Case {
            name: "flood",
            peer: Some(4),
            req: payload(port(4), &line, with(slow.clone(), fast.clone())),
            check: |r, _| matches!(r, Err(LegacyError::ReplyTooLarge { cap: CAP, .. })),
            expect: Vec::new(),
        },
        Case {
            name: "drip",
            peer: Some(5),
            req: payload(port(5), &line, slow.clone()),
            check: reply_timeout,
            expect: Vec::new(),
        },
        Case {
            name: "close before read",
            peer: Some(6),
            req: payload(port(6), &line, with(slow.clone(), fast.clone())),
            // Our write may land before or after the peer's close: EOF or reset.
            check: |r, _| {
                matches!(
                    r,
                    Err(LegacyError::ClosedEarly { received: 0, .. } | LegacyError::Reset { .. })
                )
            },
            expect: Vec::new(),
        },
        Case {
            name: "echo line",
            peer: Some(0),
            req: payload(
                port(0),
                &line,
                with(json!({"delimiter": "\n"}), fast.clone()),
            ),
            check: reply_is,
            expect: stripped_line.clone(),
        },
        Case {
            name: "reply then close, delimiter",
            peer: Some(7),
            req: payload(
                port(7),
                &line,
                with(json!({"delimiter": "\n"}), fast.clone()),
            ),
            check: reply_is,
            expect: stripped_line,
        },
        Case {
            name: "reply then close, until_close",
            peer: Some(7),
            req: payload(port(7), &line, fast.clone()),
            check: reply_is,
            expect: line.clone(),
        },
    ];
    let cases = Arc::new(cases);

    let client = LegacyClient::new(LegacySettings {
        max_reply_bytes: CAP,
        connect_timeout: Duration::from_secs(10),
        write_timeout: Duration::from_secs(10),
        ..LegacySettings::default()
    });
    let fds_before = open_fds().expect("read /proc/self/fd");
    let started = Instant::now();

    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (next, cases, client) = (Arc::clone(&next), Arc::clone(&cases), client.clone());
        workers.push(tokio::spawn(async move {
            let cancel = CancellationToken::new();
            let mut wrong = Vec::new();
            let mut tally: BTreeMap<&'static str, usize> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= SENDS {
                    return (wrong, tally);
                }
                let case = &cases[i % cases.len()];
                let r = tokio::time::timeout(BOUND, client.send(&case.req, &cancel))
                    .await
                    .expect("every send is bounded by its own timeouts");
                *tally.entry(case.name).or_default() += 1;
                if !(case.check)(&r, &case.expect) {
                    wrong.push(format!("{}: {:?}", case.name, r.map(|r| r.bytes.len())));
                }
            }
        }));
    }
    let mut wrong = Vec::new();
    let mut tally: BTreeMap<&'static str, usize> = BTreeMap::new();
    for w in workers {
        let (w, t) = w.await.expect("worker");
        wrong.extend(w);
        for (k, n) in t {
            *tally.entry(k).or_default() += n;
        }
    }
    let took = started.elapsed();
    assert!(
        wrong.is_empty(),
        "{} of {SENDS} sends ended wrongly, first: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert_eq!(tally.values().sum::<usize>(), SENDS);

    // Each peer closed every connection sent its way.
    for (p, peer) in peers.iter().enumerate() {
        let expected: usize = cases
            .iter()
            .filter(|c| c.peer == Some(p))
            .map(|c| tally.get(c.name).copied().unwrap_or(0))
            .sum();
        let (counts, closed) = peer.wait_closed(expected as u64, BOUND).await;
        assert!(
            closed && counts.accepted == expected as u64,
            "{:?}: expected {expected} connections all closed, saw {counts:?}",
            modes[p]
        );
    }

    // No CLOSE_WAIT or FIN_WAIT2 on any peer port. Closes in flight settle within a
    // bounded poll; TIME_WAIT on the client side is normal and not reported.
    let deadline = Instant::now() + BOUND;
    let left = loop {
        let mut left = Vec::new();
        for peer in &peers {
            left.extend(half_closed_sockets(peer.addr().port()).expect("read /proc/net/tcp"));
        }
        if left.is_empty() || Instant::now() >= deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(left.is_empty(), "half-closed sockets left: {left:?}");

    let fds_after = open_fds().expect("read /proc/self/fd");
    assert_eq!(fds_after, fds_before, "descriptors leaked");
    println!("{SENDS} sends in {took:?}: {tally:?}; fds {fds_before} -> {fds_after}");
}
