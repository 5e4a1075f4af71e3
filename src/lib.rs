//! dialout: a job-queue worker backed by PostgreSQL.
//!
//! Applications `INSERT` into `dialout_queue`; workers lease, run and record jobs.
//! See README.md for the SQL API.

pub mod ami;
pub mod app;
pub mod backoff;
pub mod bench;
pub mod cdr;
pub mod cli;
pub mod config;
pub mod http;
pub mod jobs;
pub mod local_pg;
pub mod metrics;
pub mod pbx_sim;
pub mod queue;
pub mod telemetry;
pub mod worker;
