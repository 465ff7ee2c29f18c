//! # zoo-core
//!
//! The shared base of candle-zoo: everything a model family needs to train correctly and
//! reproducibly on top of Candle, and to publish and fetch its checkpoints.
//!
//! - [`device()`]: `cpu | cuda[:N] | metal | auto`, with clear errors for features not compiled in.
//! - [`rng::ZooRng`]: one seedable random source whose state can be saved; tensors are drawn on the
//!   host and uploaded, so CPU runs are reproducible (Candle's own CPU RNG cannot be seeded).
//! - [`init`]: weight initialisers applied after a model is built.
//! - [`nn`]: trainable layers Candle lacks or silently fails to differentiate (LayerNorm, softmax,
//!   multi-head attention, a train-flag-aware sequential chain, gradient reversal, seeded dropout).
//! - [`loss`]: stable BCE-with-logits, MMD (linear and multi-kernel), masked label-smoothed
//!   sequence cross-entropy.
//! - [`optim`] and [`schedule`]: Adam/AdamW and SGD with saveable state, learning-rate schedules,
//!   gradient clipping by global norm; [`ema::Ema`], a moving average of weights for evaluation.
//! - [`train`]: the training-loop kit (progress, JSONL metrics, periodic atomic checkpoints, exact
//!   resume, NaN/inf guard).
//! - [`checkpoint`]: strict safetensors checkpoints with metadata and the [`checkpoint::ZooModel`] trait.
//! - [`manifest`] and [`hub`]: the weights manifest and verified downloads through hf-hub.

pub mod atomic;
pub mod checkpoint;
mod device;
pub mod ema;
pub mod gradcheck;
pub mod hub;
pub mod init;
pub mod loss;
pub mod manifest;
pub mod nn;
pub mod optim;
pub mod rng;
pub mod schedule;
pub mod train;

pub use device::{device, device_name};
pub use rng::ZooRng;
