//! # zoo-ebgan
//!
//! The energy-based GAN of Zhao, Mathieu & LeCun (ICLR 2017). The discriminator is an
//! autoencoder whose reconstruction error is an energy: low on data, pushed above a margin on
//! generated samples.
//!
//! - `D(x) = ||Dec(Enc(x)) - x||` (the paper's L2 norm) or its per-pixel mean square (the common
//!   port), see [`Energy`];
//! - `L_D = D(x) + [m - D(G(z))]^+` per sample (eq. 1), [`loss::discriminator_loss`];
//! - `L_G = D(G(z)) + lambda_PT f_PT(S)` (eq. 2 and section 2.4), [`loss::generator_loss`], with the
//!   pulling-away term [`loss::pulling_away_term`] on the encoder embeddings `S` of the generated
//!   batch.
//!
//! The baseline the paper compares with, a standard non-saturating GAN with the same generator and
//! a binary discriminator of comparable size ([`Gan`]), is trained by the same [`Trainer`].

pub mod adversarial;
pub mod config;
pub mod gan;
pub mod loss;
pub mod model;
pub mod sweep;
pub mod train;

pub use adversarial::{players_without_gradient, recalibrate_checkpoint, Adversarial, AnyModel, Batch};
pub use config::{Architecture, Config, Energy};
pub use gan::{BinaryDiscriminator, Gan, GanConfig};
pub use model::{Discriminator, Ebgan, Generator};
pub use train::{warmup_factor, LinearDecay, MarginAdaptation, Monitor, TrainConfig, Trainer, WeightInit};

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
