//! The `roster_import` job: the converter run off the async runtime, its CSV and report
//! stored in `result`.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::json;

use super::{ConvertError, ConvertOptions, RosterPayload};
use crate::worker::{JobContext, JobHandler, Outcome};

pub struct RosterImport {
    defaults: Arc<ConvertOptions>,
}

impl RosterImport {
    pub fn new(defaults: ConvertOptions) -> Self {
        Self {
            defaults: Arc::new(defaults),
        }
    }
}

impl JobHandler for RosterImport {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Outcome> {
        let defaults = self.defaults.clone();
        Box::pin(async move {
            let payload = match RosterPayload::parse(ctx.payload()) {
                Ok(p) => p,
                Err(e) => return Outcome::failed(e),
            };
            // CPU-bound: never on the runtime's threads.
            let work = tokio::task::spawn_blocking(move || {
                let mut csv = Vec::new();
                let report = payload.convert(&mut csv, &defaults);
                (csv, report)
            });
            let (csv, converted) = tokio::select! {
                _ = ctx.stopped() => return Outcome::stopped(),
                joined = work => match joined {
                    Ok(done) => done,
                    Err(e) => return Outcome::failed(format!("internal error: the conversion failed: {e}")),
                },
            };
            match converted {
                Ok(report) => match String::from_utf8(csv) {
                    Ok(csv) => Outcome::finished(json!({ "csv": csv, "report": report.to_json() })),
                    Err(_) => Outcome::failed("internal error: the CSV written was not UTF-8"),
                },
                Err(ConvertError::NothingUsable(report)) => Outcome::failed(format!(
                    "nothing usable: all {} rows were rejected (see result.report)",
                    report.rows_in
                ))
                .with_result(json!({ "report": report.to_json() })),
                Err(e) => Outcome::failed(e),
            }
        })
    }
}
