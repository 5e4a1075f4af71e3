//! The listener: HTTP/1.1 over hyper, three GET endpoints, stopped with the worker.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Probe;
use crate::metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;

/// Connections served at once; more are closed at once (a scraper and a probe or two
/// is the expected load).
const MAX_CONNECTIONS: usize = 64;

/// A client must send its request head within this (slow-header clients hold a slot
/// at most this long).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// At stop, connections get this long to finish the request they are on.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Serves `listener` until `stop`, then lets requests under way finish (bounded).
pub(crate) async fn serve(listener: TcpListener, probe: Arc<Probe>, stop: CancellationToken) {
    let room = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = room.clone().try_acquire_owned() else {
            continue; // dropped: closed
        };
        let probe = probe.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let probe = probe.clone();
                async move { Ok::<_, Infallible>(respond(&probe, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(STOP_GRACE, conn).await;
                }
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(STOP_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

async fn respond(probe: &Probe, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        res.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match probe.readiness().await {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(failed) => {
                let mut body = String::from("not ready\n");
                for line in failed {
                    body.push_str(&line);
                    body.push('\n');
                }
                text(StatusCode::SERVICE_UNAVAILABLE, body)
            }
        },
        "/metrics" => {
            probe.refresh_backlog().await;
            let mut res = Response::new(Full::new(Bytes::from(probe.metrics().encode())));
            res.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            res
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /healthz, /readyz and /metrics are served here\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}
