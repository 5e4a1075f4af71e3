//! The health and metrics listener of `dialout worker` (`[http] listen`, off unless
//! set) and the client side `dialout healthcheck` uses.
//!
//! Three read-only endpoints, HTTP/1.1 by hyper: `/healthz` (the process answers),
//! `/readyz` (the database answers, this build's migrations are applied, every kind
//! this replica runs is ready) and `/metrics` (Prometheus text, [`crate::metrics`]).

mod client;
mod probe;
mod server;

pub use client::{GetError, Reply, get};
pub(crate) use probe::Probe;
pub(crate) use server::serve;
