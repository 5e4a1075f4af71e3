//! Maintenance any live worker runs beside its jobs: rescuing the jobs of workers that
//! vanished, pruning old rows. Each service has its own settings, a `run_once` step
//! that returns what it did (tests call it directly), and a loop that logs a round
//! only when something changed.

mod rescue;
mod retention;

pub use rescue::{RescueCounts, RescueSettings, Rescuer};
pub use retention::{Retention, RetentionSettings, prune_finished, prune_finished_in_chunks};
