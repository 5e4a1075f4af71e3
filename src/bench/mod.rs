//! Benchmarks: figures are printed, never asserted. `dialout bench ...`.

pub mod queue;
