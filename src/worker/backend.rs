//! The apalis backend over our own table.
//!
//! Leasing is not done here: a producer per kind leases batches with one fenced SQL
//! statement and hands the jobs over a channel, because apalis' own poll model has no
//! place for per-attempt lease tokens, fenced completion or `max_attempts` on rescue.
//! apalis runs what arrives: it drives the handlers concurrently and tracks them.

use std::task::{Context, Poll};

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::task::task_id::RandomId;
use apalis_core::worker::context::WorkerContext;
use tokio::sync::mpsc;
use tower_layer::Identity;

use crate::queue::LeasedJob;

/// Yields the jobs a producer leased; ends when the producer hangs up.
pub struct LeasedJobs {
    rx: mpsc::Receiver<LeasedJob>,
}

impl LeasedJobs {
    pub fn new(rx: mpsc::Receiver<LeasedJob>) -> Self {
        Self { rx }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the lease channel failed")]
pub struct ChannelError;

impl Backend for LeasedJobs {
    type Task = Task<LeasedJob>;
    type Error = ChannelError;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), ChannelError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Task<LeasedJob>, ChannelError>>> {
        self.rx
            .poll_recv(cx)
            .map(|job| job.map(|j| Ok(Task::new(j))))
    }

    fn poll_close(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), ChannelError>> {
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for LeasedJobs {
    type Args = LeasedJob;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = Identity;

    fn config(&self) -> &() {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Identity {
        Identity::new()
    }
}
