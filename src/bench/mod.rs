//! Benchmarks: figures are printed, never asserted. `dialout bench ...`.

pub mod dial;
pub mod dial_memory;
pub mod queue;
pub mod report;
