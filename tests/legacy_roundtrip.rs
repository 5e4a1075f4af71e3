//! Real TCP on loopback: every framing round-trips binary data exactly, the cap holds at
//! its edge, and each fault gives its own error.

use std::num::NonZeroUsize;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use dialout::jobs::legacy::fault_peer::{FaultMode, FaultPeer, refused_addr};
use dialout::jobs::legacy::{
    LegacyClient, LegacyError, LegacyReply, LegacyRequest, LegacySettings, Phase,
};
use serde_json::{Value, json};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const CAP: usize = 50_000;
/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(20);
/// Never inside the test data below, which repeats 0..=255 (0xff is followed by 0x00).
const DELIM: [u8; 2] = [0xff, 0xfe];

fn settings() -> LegacySettings {
    LegacySettings {
        max_reply_bytes: CAP,
        connect_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        reply_timeout: Duration::from_secs(5),
        ..LegacySettings::default()
    }
}

/// `len` bytes cycling through all 256 byte values.
fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 256) as u8).collect()
}

fn req(port: u16, message: &[u8], framing: Value) -> LegacyRequest {
    let mut v =
        json!({"host": "127.0.0.1", "port": port, "message_base64": STANDARD.encode(message)});
    if let (Some(o), Some(f)) = (v.as_object_mut(), framing.as_object()) {
        o.extend(f.clone());
    }
    LegacyRequest::parse(&v).expect("test payload is valid")
}

/// Sends once, bounded, and counts the connection attempt in `sent`.
async fn send(
    client: &LegacyClient,
    sent: &mut u64,
    req: &LegacyRequest,
) -> Result<LegacyReply, LegacyError> {
    *sent += 1;
    timeout(BOUND, client.send(req, &CancellationToken::new()))
        .await
        .expect("send is bounded by its own timeouts")
}

fn prefixed(width: usize, body: &[u8]) -> Vec<u8> {
    let len = (body.len() as u64).to_be_bytes();
    let mut m = len[8 - width..].to_vec();
    m.extend_from_slice(body);
    m
}

#[tokio::test]
async fn every_framing_round_trips_binary_exactly() {
    let peer = FaultPeer::start(FaultMode::Echo).await.expect("bind");
    let port = peer.addr().port();
    let client = LegacyClient::new(settings());
    let mut sent = 0;
    let delim_b64 = STANDARD.encode(DELIM);

    for len in [0, 1, 256, 4096, CAP] {
        let body = data(len);
        // until_close: the reply is everything until the peer closes.
        let r = send(&client, &mut sent, &req(port, &body, json!({}))).await;
        assert_eq!(r.expect("until_close").bytes, body, "until_close len {len}");

        // delimiter: stored without the delimiter.
        let mut m = body.clone();
        m.extend_from_slice(&DELIM);
        let r = send(
            &client,
            &mut sent,
            &req(port, &m, json!({"delimiter_base64": delim_b64})),
        )
        .await;
        assert_eq!(r.expect("delimiter").bytes, body, "delimiter len {len}");

        // length prefix: stored without the prefix; 1-byte prefixes stop at 255.
        for width in [1usize, 2, 4] {
            if (width == 1 && len > 255) || (width == 2 && len > 65_535) {
                continue;
            }
            let r = send(
                &client,
                &mut sent,
                &req(
                    port,
                    &prefixed(width, &body),
                    json!({"length_prefix": width}),
                ),
            )
            .await;
            assert_eq!(r.expect("prefix").bytes, body, "prefix {width} len {len}");
        }

        // max_bytes: exactly that many.
        if len > 0 {
            let r = send(
                &client,
                &mut sent,
                &req(port, &body, json!({"max_bytes": len})),
            )
            .await;
            assert_eq!(r.expect("max_bytes").bytes, body, "max_bytes len {len}");
        }
    }
    let r = send(
        &client,
        &mut sent,
        &req(port, &prefixed(1, &data(255)), json!({"length_prefix": 1})),
    )
    .await;
    assert_eq!(r.expect("1-byte prefix, 255").bytes, data(255));

    // Text is offered only when the reply is UTF-8.
    let r = send(&client, &mut sent, &req(port, b"caf\xc3\xa9", json!({})))
        .await
        .expect("text");
    assert_eq!(r.text(), Some("café"));
    let r = send(&client, &mut sent, &req(port, &data(256), json!({})))
        .await
        .expect("bytes");
    assert_eq!(r.text(), None);

    let (counts, closed) = peer.wait_closed(sent, BOUND).await;
    assert!(closed, "peer still holds connections: {counts:?}");
}

#[tokio::test]
async fn cap_holds_exactly_at_its_edge() {
    let peer = FaultPeer::start(FaultMode::Echo).await.expect("bind");
    let port = peer.addr().port();
    let client = LegacyClient::new(settings());
    let mut sent = 0;
    let over = |r: Result<LegacyReply, LegacyError>| match r {
        Err(LegacyError::ReplyTooLarge { cap, .. }) => assert_eq!(cap, CAP),
        other => panic!("expected ReplyTooLarge, got {other:?}"),
    };

    let at = data(CAP);
    let past = data(CAP + 1);
    let r = send(&client, &mut sent, &req(port, &at, json!({}))).await;
    assert_eq!(r.expect("at cap").bytes.len(), CAP);
    over(send(&client, &mut sent, &req(port, &past, json!({}))).await);

    let with_delim = |b: &[u8]| [b, &DELIM[..]].concat();
    let d = json!({"delimiter_base64": STANDARD.encode(DELIM)});
    let r = send(&client, &mut sent, &req(port, &with_delim(&at), d.clone())).await;
    assert_eq!(r.expect("delimiter at cap").bytes.len(), CAP);
    over(send(&client, &mut sent, &req(port, &with_delim(&past), d)).await);

    let r = send(
        &client,
        &mut sent,
        &req(port, &prefixed(4, &at), json!({"length_prefix": 4})),
    )
    .await;
    assert_eq!(r.expect("prefix at cap").bytes.len(), CAP);
    match send(
        &client,
        &mut sent,
        &req(port, &prefixed(4, &past), json!({"length_prefix": 4})),
    )
    .await
    {
        Err(LegacyError::ReplyTooLarge { declared, .. }) => {
            assert_eq!(declared, Some(CAP as u64 + 1));
        }
        other => panic!("expected ReplyTooLarge, got {other:?}"),
    }

    let r = send(
        &client,
        &mut sent,
        &req(port, &at, json!({"max_bytes": CAP})),
    )
    .await;
    assert_eq!(r.expect("max_bytes at cap").bytes.len(), CAP);
    over(
        send(
            &client,
            &mut sent,
            &req(port, &past, json!({"max_bytes": CAP + 1})),
        )
        .await,
    );

    let (counts, closed) = peer.wait_closed(sent, BOUND).await;
    assert!(closed, "peer still holds connections: {counts:?}");
}

#[tokio::test]
async fn fire_and_forget_writes_and_closes() {
    let peer = FaultPeer::start(FaultMode::Silent).await.expect("bind");
    let client = LegacyClient::new(settings());
    let mut sent = 0;
    let r = LegacyRequest::parse(&json!({
        "host": "127.0.0.1", "port": peer.addr().port(), "message": "fire", "expect_reply": false
    }))
    .expect("valid");
    let reply = send(&client, &mut sent, &r).await.expect("fire and forget");
    assert!(reply.bytes.is_empty());
    let (counts, closed) = peer.wait_closed(sent, BOUND).await;
    assert!(closed && counts.requests == 1, "{counts:?}");
}

#[tokio::test]
async fn each_fault_gives_its_own_error() {
    let client = LegacyClient::new(LegacySettings {
        reply_timeout: Duration::from_millis(300),
        ..settings()
    });
    let mut sent = 0;
    let line = json!({"delimiter": "\n"});
    let msg = b"hello legacy host\n";

    let refused = refused_addr().expect("free port");
    let e = send(&client, &mut sent, &req(refused.port(), msg, line.clone()))
        .await
        .expect_err("refused");
    assert!(matches!(e, LegacyError::Refused { .. }), "{e:?}");
    assert!(e.is_retryable());
    assert_eq!(e.to_string(), format!("connection refused by {refused}"));

    type Expected = fn(&LegacyError) -> bool;
    let cases: Vec<(FaultMode, Expected)> = vec![
        (FaultMode::Silent, |e| e.is_timeout() == Some(Phase::Reply)),
        (FaultMode::HalfThenStall, |e| {
            e.is_timeout() == Some(Phase::Reply)
        }),
        (
            FaultMode::Drip {
                interval: Duration::from_millis(50),
            },
            // 18 bytes at 50 ms each outlast a 300 ms reply timeout: the timeout is for the
            // whole reply, not for each read.
            |e| e.is_timeout() == Some(Phase::Reply),
        ),
        (FaultMode::ResetMidReply, |e| {
            matches!(
                e,
                LegacyError::Reset {
                    phase: Phase::Reply,
                    ..
                }
            )
        }),
        (FaultMode::Flood { bytes: 4 * CAP }, |e| {
            matches!(e, LegacyError::ReplyTooLarge { .. })
        }),
        (FaultMode::CloseBeforeRead, |e| {
            matches!(
                e,
                LegacyError::ClosedEarly { received: 0, .. } | LegacyError::Reset { .. }
            )
        }),
    ];
    for (mode, expected) in cases {
        let peer = FaultPeer::start(mode.clone()).await.expect("bind");
        let e = send(
            &client,
            &mut sent,
            &req(peer.addr().port(), msg, line.clone()),
        )
        .await
        .expect_err("fault");
        assert!(expected(&e), "{mode:?}: unexpected {e:?} ({e})");
        let (counts, closed) = peer.wait_closed(1, BOUND).await;
        assert!(closed, "{mode:?}: peer still holds connections: {counts:?}");
    }

    // Timeouts and their phase are readable in last_error.
    let peer = FaultPeer::start(FaultMode::Silent).await.expect("bind");
    let e = send(&client, &mut sent, &req(peer.addr().port(), msg, line))
        .await
        .expect_err("silent");
    assert_eq!(
        e.to_string(),
        format!(
            "timed out after 300 ms while reading the reply ({})",
            peer.addr()
        )
    );
    assert!(e.is_retryable());
}

#[tokio::test]
async fn connect_timeout_when_the_host_does_not_answer() {
    // A listener that never accepts, with its backlog full: further SYNs are dropped, so
    // connect hangs the way it does towards a host that is down.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let _listener = socket.listen(1).expect("listen");
    let client = LegacyClient::new(LegacySettings {
        connect_timeout: Duration::from_millis(200),
        ..settings()
    });
    let mut sent = 0;
    let r = req(addr.port(), b"x", json!({"expect_reply": false}));
    let mut fillers = Vec::new();
    let mut timed_out = None;
    // Fill the backlog; stop at the first connect that hangs.
    for _ in 0..16 {
        match send(&client, &mut sent, &r).await {
            Ok(_) => fillers.push(()),
            Err(e) => {
                timed_out = Some(e);
                break;
            }
        }
    }
    let e = timed_out.expect("some connect must hang once the backlog is full");
    assert_eq!(e.is_timeout(), Some(Phase::Connect), "{e:?}");
}

#[tokio::test]
async fn per_host_limit_makes_the_next_send_wait() {
    let peer = FaultPeer::start(FaultMode::Silent).await.expect("bind");
    let port = peer.addr().port();
    let client = LegacyClient::new(LegacySettings {
        max_connections_per_host: NonZeroUsize::new(1),
        slot_timeout: Duration::from_millis(100),
        ..settings()
    });
    let mut sent = 0;
    let cancel = CancellationToken::new();
    let holder = {
        let (client, cancel) = (client.clone(), cancel.clone());
        let r = req(
            port,
            b"hold\n",
            json!({"delimiter": "\n", "reply_timeout_ms": 20000}),
        );
        tokio::spawn(async move { client.send(&r, &cancel).await })
    };
    let (counts, ok) = peer.wait_for(BOUND, |c| c.requests == 1).await;
    assert!(ok, "first send never reached the peer: {counts:?}");

    // Same host, one slot, taken: waits, then times out in the slot phase.
    let e = send(
        &client,
        &mut sent,
        &req(port, b"next\n", json!({"delimiter": "\n"})),
    )
    .await
    .expect_err("no slot");
    assert_eq!(e.is_timeout(), Some(Phase::Slot), "{e:?}");

    cancel.cancel();
    let held = timeout(BOUND, holder)
        .await
        .expect("bounded")
        .expect("joined");
    assert!(matches!(
        held,
        Err(LegacyError::Cancelled {
            phase: Phase::Reply,
            ..
        })
    ));

    // The slot came back.
    let e = send(
        &client,
        &mut sent,
        &req(
            port,
            b"again\n",
            json!({"delimiter": "\n", "reply_timeout_ms": 50}),
        ),
    )
    .await
    .expect_err("silent peer");
    assert_eq!(e.is_timeout(), Some(Phase::Reply), "{e:?}");
    // The holder and the last send; the one that found no slot never connected.
    let (counts, closed) = peer.wait_closed(2, BOUND).await;
    assert!(closed && counts.accepted == 2, "{counts:?}");
}

#[tokio::test]
async fn names_are_resolved_within_the_connect_timeout() {
    let peer = FaultPeer::start(FaultMode::Echo).await.expect("bind");
    let client = LegacyClient::new(settings());
    let mut sent = 0;
    let r = LegacyRequest::parse(
        &json!({"host": "localhost", "port": peer.addr().port(), "message": "by name"}),
    )
    .expect("valid");
    assert_eq!(
        send(&client, &mut sent, &r).await.expect("localhost").bytes,
        "by name"
    );

    // `.invalid` is reserved (RFC 6761): no resolver knows it. One lookup, no connection.
    let r = LegacyRequest::parse(
        &json!({"host": "no-such-host.invalid", "port": 7001, "message": "x",
                                          "connect_timeout_ms": 2000}),
    )
    .expect("valid");
    let e = send(&client, &mut sent, &r)
        .await
        .expect_err("unknown name");
    match &e {
        LegacyError::NotResolved { host, .. } => {
            assert_eq!(host, "no-such-host.invalid");
            assert!(!e.is_retryable());
            assert!(
                e.to_string()
                    .starts_with("could not resolve host \"no-such-host.invalid\"")
            );
        }
        // A resolver that does not answer at all is bounded by the connect timeout.
        other => assert_eq!(other.is_timeout(), Some(Phase::Resolve), "{other:?}"),
    }
}
