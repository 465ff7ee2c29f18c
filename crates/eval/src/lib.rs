//! # zoo-eval
//!
//! Evaluation for candle-zoo: the MNIST [`judge`] classifier that scores generated digits and
//! adapted features, the [`gan`] and [`conditional`] reports on generated samples built on it,
//! [`metrics`], and [`picture`]s (image grids, curves, confusion matrices, histograms, scatter
//! plots).

pub mod conditional;
pub mod gan;
pub mod judge;
pub mod metrics;
pub mod picture;

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
