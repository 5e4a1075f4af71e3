//! The `legacy_message` job: one request/reply, the reply kept in `result`.

use base64::Engine;
use futures_util::future::BoxFuture;
use serde_json::json;

use super::{LegacyClient, LegacyRequest};
use crate::worker::{JobContext, JobHandler, Outcome};

pub struct LegacyMessage {
    client: LegacyClient,
}

impl LegacyMessage {
    pub fn new(client: LegacyClient) -> Self {
        Self { client }
    }
}

impl JobHandler for LegacyMessage {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Outcome> {
        let client = self.client.clone();
        Box::pin(async move {
            let request = match LegacyRequest::parse(ctx.payload()) {
                Ok(r) => r,
                Err(e) => return Outcome::failed(e),
            };
            // A stop request closes the socket at once (the client watches the token),
            // and the attempt ends `stopped` whatever the client was doing.
            let cancel = ctx.cancellation();
            let sent = tokio::select! {
                _ = ctx.stopped() => return Outcome::stopped(),
                sent = client.send(&request, &cancel) => sent,
            };
            let target = request.target().to_string();
            match sent {
                Ok(reply) => Outcome::finished(json!({
                    "target": target,
                    "peer": reply.peer.to_string(),
                    "elapsed_ms": reply.elapsed.as_millis() as u64,
                    "reply_bytes": reply.bytes.len(),
                    "reply_base64": base64::engine::general_purpose::STANDARD.encode(&reply.bytes),
                    "reply_text": reply.text(),
                })),
                Err(e) => {
                    let detail = json!({
                        "target": target,
                        "error_kind": e.kind(),
                        "timeout_phase": e.is_timeout().map(|p| p.to_string()),
                    });
                    let outcome = match e.is_timeout() {
                        Some(_) => Outcome::timed_out(&e),
                        None => Outcome::failed(&e),
                    }
                    .with_result(detail);
                    if e.is_retryable() {
                        outcome.retryable()
                    } else {
                        outcome
                    }
                }
            }
        })
    }
}
