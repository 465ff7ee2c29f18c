//! Losses that several families share, each with a finite-difference gradient test.

mod bce;
mod mmd;
mod sequence;

pub use bce::{bce_with_logits, bce_with_logits_elementwise};
pub use mmd::{mmd2_linear, mmd2_multi_rbf, mmd2_multi_rbf_fixed, MmdKernel};
pub use sequence::{cross_entropy, sequence_cross_entropy};
