//! Benchmarks: figures are printed, never asserted. `dialout bench ...`.

pub mod dial;
pub mod queue;
pub mod report;
