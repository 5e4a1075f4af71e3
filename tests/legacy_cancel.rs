//! Cancellation, a dropped send and a runtime shutdown mid-reply all close the socket.
//!
//! These tests count the process's descriptors, so they run one at a time (a shared lock)
//! and each builds its own runtime, to keep other tests' sockets out of the count.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use dialout::jobs::legacy::fault_peer::{FaultMode, FaultPeer, half_closed_sockets, open_fds};
use dialout::jobs::legacy::{LegacyClient, LegacyError, LegacyRequest, LegacySettings, Phase};
use serde_json::json;
use tokio::runtime::{Builder, Runtime};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
const BOUND: Duration = Duration::from_secs(20);

fn runtime() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn slow_request(port: u16) -> LegacyRequest {
    LegacyRequest::parse(&json!({
        "host": "127.0.0.1", "port": port, "message": "waiting for a reply\n",
        "delimiter": "\n", "reply_timeout_ms": 60000
    }))
    .expect("valid")
}

/// Polls the socket table (bounded) until no socket on `port` is half closed.
async fn no_half_closed(port: u16) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let left = half_closed_sockets(port).expect("read /proc/net/tcp");
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn token_cancelled_mid_reply_closes_the_socket() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    runtime().block_on(async {
        let peer = FaultPeer::start(FaultMode::Silent).await.expect("bind");
        let before = open_fds().expect("fds");
        let client = LegacyClient::new(LegacySettings::default());
        let cancel = CancellationToken::new();
        let send = tokio::spawn({
            let (client, cancel) = (client.clone(), cancel.clone());
            let req = slow_request(peer.addr().port());
            async move { client.send(&req, &cancel).await }
        });
        let (counts, ok) = peer.wait_for(BOUND, |c| c.requests == 1).await;
        assert!(ok, "request never arrived: {counts:?}");
        assert_eq!(
            open_fds().expect("fds"),
            before + 2,
            "client and peer socket open"
        );

        cancel.cancel();
        let r = timeout(BOUND, send)
            .await
            .expect("bounded")
            .expect("joined");
        match r {
            Err(
                e @ LegacyError::Cancelled {
                    phase: Phase::Reply,
                    ..
                },
            ) => {
                assert!(e.is_retryable());
                assert!(
                    e.to_string()
                        .starts_with("cancelled while reading the reply")
                );
            }
            other => panic!("expected Cancelled in the reply phase, got {other:?}"),
        }
        let (counts, closed) = peer.wait_closed(1, BOUND).await;
        assert!(closed, "peer never saw the close: {counts:?}");
        assert_eq!(open_fds().expect("fds"), before);
        assert_eq!(
            no_half_closed(peer.addr().port()).await,
            Vec::<String>::new()
        );
    });
}

#[test]
fn dropped_send_closes_the_socket() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    runtime().block_on(async {
        let peer = FaultPeer::start(FaultMode::HalfThenStall)
            .await
            .expect("bind");
        let before = open_fds().expect("fds");
        let client = LegacyClient::new(LegacySettings::default());
        let send = tokio::spawn({
            let req = slow_request(peer.addr().port());
            async move { client.send(&req, &CancellationToken::new()).await }
        });
        let (counts, ok) = peer.wait_for(BOUND, |c| c.requests == 1).await;
        assert!(ok, "request never arrived: {counts:?}");

        // An outer timeout or a worker dropping the job looks like this: no token, the
        // future is simply dropped.
        send.abort();
        let joined = timeout(BOUND, send).await.expect("bounded");
        assert!(joined.is_err_and(|e| e.is_cancelled()));
        let (counts, closed) = peer.wait_closed(1, BOUND).await;
        assert!(closed, "peer never saw the close: {counts:?}");
        assert_eq!(open_fds().expect("fds"), before);
        assert_eq!(
            no_half_closed(peer.addr().port()).await,
            Vec::<String>::new()
        );
    });
}

#[test]
fn runtime_shutdown_closes_every_socket() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    // The peer lives in its own runtime so it outlives the client's.
    let peer_rt = runtime();
    let peer = peer_rt
        .block_on(FaultPeer::start(FaultMode::Silent))
        .expect("bind");
    let port = peer.addr().port();
    let before = open_fds().expect("fds");

    let client_rt = runtime();
    let client = LegacyClient::new(LegacySettings::default());
    for _ in 0..20 {
        let (client, req) = (client.clone(), slow_request(port));
        client_rt.spawn(async move { client.send(&req, &CancellationToken::new()).await });
    }
    let (counts, ok) = peer_rt.block_on(peer.wait_for(BOUND, |c| c.requests == 20));
    assert!(ok, "requests never arrived: {counts:?}");

    // Worker shutdown: every in-flight send is dropped with its runtime.
    client_rt.shutdown_timeout(BOUND);
    let (counts, closed) = peer_rt.block_on(peer.wait_closed(20, BOUND));
    assert!(closed, "peer still holds connections: {counts:?}");
    assert_eq!(open_fds().expect("fds"), before);
    assert_eq!(peer_rt.block_on(no_half_closed(port)), Vec::<String>::new());
}

#[test]
fn cancelled_before_start_connects_nowhere() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    runtime().block_on(async {
        let peer = FaultPeer::start(FaultMode::Echo).await.expect("bind");
        let before = open_fds().expect("fds");
        let cancel = CancellationToken::new();
        cancel.cancel();
        let client = LegacyClient::new(LegacySettings::default());
        let r = client
            .send(&slow_request(peer.addr().port()), &cancel)
            .await;
        assert!(
            matches!(
                r,
                Err(LegacyError::Cancelled {
                    phase: Phase::Connect,
                    ..
                })
            ),
            "{r:?}"
        );
        assert_eq!(open_fds().expect("fds"), before);
    });
}

/// The probe itself: a client that keeps its socket after the peer closed is exactly the
/// seed's leak (CLOSE_WAIT here, FIN_WAIT2 on the peer), and the table shows it.
#[test]
fn the_socket_table_probe_sees_a_leak() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    runtime().block_on(async {
        let peer = FaultPeer::start(FaultMode::CloseBeforeRead)
            .await
            .expect("bind");
        let port = peer.addr().port();
        let leaked = tokio::net::TcpStream::connect(peer.addr())
            .await
            .expect("connect");
        let (counts, closed) = peer.wait_closed(1, BOUND).await;
        assert!(closed, "{counts:?}");
        let deadline = tokio::time::Instant::now() + BOUND;
        let seen = loop {
            let seen = half_closed_sockets(port).expect("read /proc/net/tcp");
            if seen.len() == 2 || tokio::time::Instant::now() >= deadline {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            seen.iter().any(|s| s.ends_with("CLOSE_WAIT"))
                && seen.iter().any(|s| s.ends_with("FIN_WAIT2")),
            "{seen:?}"
        );
        drop(leaked);
        assert_eq!(no_half_closed(port).await, Vec::<String>::new());
    });
}

/// Sockets to `port` in SYN_SENT: a connect the peer has not answered.
fn syn_sent_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 3
                && f[3] == "02"
                && f[2]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count()
}

#[test]
fn cancelled_while_connecting_closes_the_socket() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    runtime().block_on(async {
        // A listener that never accepts, its backlog full: the next SYN goes unanswered.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = socket.local_addr().expect("addr");
        let _listener = socket.listen(1).expect("listen");
        let mut fillers = Vec::new();
        for _ in 0..16 {
            match timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                Ok(Ok(s)) => fillers.push(s),
                _ => break,
            }
        }
        // Wait for the abandoned filler attempt to leave the table, then count.
        let deadline = tokio::time::Instant::now() + BOUND;
        while syn_sent_to(addr.port()) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = open_fds().expect("fds");

        let cancel = CancellationToken::new();
        let client = LegacyClient::new(LegacySettings::default());
        let send = tokio::spawn({
            let cancel = cancel.clone();
            let req = slow_request(addr.port());
            async move { client.send(&req, &cancel).await }
        });
        // The send is in its connect phase once its SYN shows in the table.
        let deadline = tokio::time::Instant::now() + BOUND;
        while syn_sent_to(addr.port()) == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(syn_sent_to(addr.port()), 1, "the connect should be hanging");
        cancel.cancel();
        let r = timeout(BOUND, send)
            .await
            .expect("bounded")
            .expect("joined");
        assert!(
            matches!(
                r,
                Err(LegacyError::Cancelled {
                    phase: Phase::Connect,
                    ..
                })
            ),
            "{r:?}"
        );
        assert_eq!(open_fds().expect("fds"), before);
        assert_eq!(syn_sent_to(addr.port()), 0, "the half-open socket is gone");
        drop(fillers);
    });
}
