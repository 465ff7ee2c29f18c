//! # zoo-eval
//!
//! Evaluation for candle-zoo: the MNIST [`judge`] classifier that scores generated digits and
//! adapted features, and [`picture`]s (image grids, loss curves, confusion matrices).

pub mod gan;
pub mod judge;
pub mod metrics;
pub mod picture;

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
