//! # zoo-dann
//!
//! The domain-adversarial neural network of Ganin & Lempitsky (ICML 2015; Ganin et al., JMLR
//! 2016) with the paper's MNIST -> MNIST-M network:
//!
//! - features `G_f`: conv 5x5 32, ReLU, max-pool 2 -> conv 5x5 48, ReLU, max-pool 2 (no BatchNorm);
//! - label predictor `G_y`: FC 100 -> FC 100 -> FC 10;
//! - domain classifier `G_d` behind a gradient reversal layer: FC 100 -> FC 1 (logistic).
//!
//! The reversal scales the gradient that reaches the features by `-lambda_p`, with
//! `lambda_p = 2 / (1 + exp(-10 p)) - 1` over training progress `p` ([`grl_lambda`]); the domain
//! classifier itself gets its gradient unchanged. [`DigitNet`] (features + label predictor) is
//! shared with the other adaptation models of the zoo.

pub mod model;
pub mod train;

pub use model::{grl_lambda, Dann, DannConfig, DigitNet};
pub use train::{accuracy, Adaptation, AdaptationTerms, DaTrainConfig, DaTrainer, Method};

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
