//! `asrl-tools`: what is not part of a training run — the demo-data generator and the
//! benchmarks — kept out of the library crates.
//!
//! - [`demo_data`]: checkable examples in the paper's dual-brain format (`asrl-tools demo-data`).
//! - [`bench`]: `asrl-tools bench sft|generate|decode|adapter-push`.
//! - [`parity`], [`random_model`]: the Rust side of `scripts/gpu-check.sh`.

pub mod bench;
pub mod demo_data;
pub mod parity;
pub mod random_model;
