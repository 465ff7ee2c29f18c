//! AC-GAN (Odena, Olah & Shlens, ICML 2017) with the optional MSGAN mode-seeking regulariser
//! (Mao et al., CVPR 2019).
//!
//! - G(z, y): the zoo's conv generator on `[z, one-hot y]` (62 + 10 inputs); the paper has no
//!   MNIST network, so G and D are InfoGAN's MNIST networks, D's auxiliary head classifying the
//!   digit.
//! - Objective (paper, eq. 2-3): `L_S = E log P(S = real | x_real) + E log P(S = fake | x_fake)`,
//!   `L_C = E log P(C = c | x_real) + E log P(C = c | x_fake)`; D maximises `L_S + L_C`, G
//!   maximises `L_C - L_S`, here in the usual non-saturating form (G minimises
//!   `-log P(S = real | x_fake) - log P(C = c | x_fake)`). The class head returns logits and the
//!   cross-entropy applies the one softmax (no double softmax).
//! - MSGAN (`ms_weight > 0`): G also generates from a second noise `z2` with the same labels and
//!   adds `ms_weight / (d_I + 1e-5)`, `d_I = mean|G(y, z2) - G(y, z1)| / mean|z2 - z1|`, as in the
//!   authors' code. `z2` is drawn from a generator seeded by the step's own latents, so a resumed
//!   run draws the same `z2`.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use zoo_core::checkpoint::ZooModel;
use zoo_core::loss::{bce_with_logits, cross_entropy};
use zoo_core::train::Metrics;
use zoo_core::ZooRng;
use zoo_ebgan::adversarial::scalar;
use zoo_ebgan::{Adversarial, Architecture, Batch, Generator};

use crate::infogan::{AuxDiscriminator, AuxOutputs};

/// Sizes and the MSGAN weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcGanConfig {
    /// Noise `z ~ U(-1, 1)` (62).
    pub noise_dim: usize,
    /// Classes (10 digits).
    pub classes: usize,
    /// Width of G's first layer and of D's shared FC layer (1024).
    pub hidden: usize,
    /// Weight of the MSGAN term (0: plain AC-GAN; 1 in the authors' code).
    pub ms_weight: f64,
    /// Side of the square greyscale images (28).
    pub image_size: usize,
}

impl AcGanConfig {
    /// AC-GAN on MNIST.
    pub fn mnist() -> Self {
        Self { noise_dim: 62, classes: 10, hidden: 1024, ms_weight: 0.0, image_size: 28 }
    }

    /// AC-GAN with the MSGAN regulariser (weight 1).
    pub fn mnist_msgan() -> Self {
        Self { ms_weight: 1.0, ..Self::mnist() }
    }
}

/// A class-conditional GAN with an auxiliary classifier.
pub struct AcGan {
    cfg: AcGanConfig,
    varmap: VarMap,
    /// G(z, y), inputs `[z, one-hot y]`.
    pub generator: Generator,
    /// D with its class head.
    pub discriminator: AuxDiscriminator,
}

impl ZooModel for AcGan {
    const FAMILY: &'static str = "acgan";
    type Config = AcGanConfig;

    fn build(cfg: &AcGanConfig, varmap: VarMap, vb: VarBuilder) -> Result<Self> {
        if !cfg.image_size.is_multiple_of(4) || cfg.image_size < 8 {
            bail!("AC-GAN's networks take square images whose side is a multiple of 4, got {}", cfg.image_size);
        }
        if cfg.classes < 2 || !(cfg.ms_weight.is_finite() && cfg.ms_weight >= 0.0) {
            bail!("AC-GAN needs at least 2 classes and a non-negative MSGAN weight, got {cfg:?}");
        }
        let arch = Architecture::Conv {
            g_hidden: cfg.hidden,
            d_channels: 64,
            code: 0,
            d_batchnorm: true,
            d_depth: 1,
            d_encoder_batchnorm: false,
        };
        Ok(Self {
            generator: Generator::new(cfg.noise_dim + cfg.classes, &arch, cfg.image_size, vb.pp("generator"))?,
            discriminator: AuxDiscriminator::new(cfg.hidden, cfg.classes, 0, cfg.image_size, vb.pp("discriminator"))?,
            cfg: cfg.clone(),
            varmap,
        })
    }
    fn config(&self) -> &AcGanConfig {
        &self.cfg
    }
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }
}

impl AcGan {
    /// Generator inputs for noise `[n, noise_dim]` and one class per row (each `< classes`).
    pub fn latents_for(&self, noise: &Tensor, classes: &[u32]) -> Result<Tensor> {
        let (n, k) = (classes.len(), self.cfg.classes);
        if noise.dims() != [n, self.cfg.noise_dim] {
            bail!("noise must be [{n}, {}] for {n} classes, got {:?}", self.cfg.noise_dim, noise.dims());
        }
        if let Some(bad) = classes.iter().find(|&&c| c as usize >= k) {
            bail!("class {bad} is out of range: the model has {k} classes (0..{})", k - 1);
        }
        let mut one_hot = vec![0f32; n * k];
        for (i, &c) in classes.iter().enumerate() {
            one_hot[i * k + c as usize] = 1.0;
        }
        let one_hot = Tensor::from_vec(one_hot, (n, k), noise.device())?.to_dtype(noise.dtype())?;
        Ok(Tensor::cat(&[noise, &one_hot], 1)?)
    }

    /// `n` samples of `class` in evaluation mode, `[n, 1, S, S]` in `[0, 1]`.
    pub fn sample_class(&self, class: u32, n: usize, rng: &mut ZooRng, dev: &Device) -> Result<Tensor> {
        let noise = rng.uniform((n, self.cfg.noise_dim), -1.0, 1.0, DType::F32, dev)?;
        self.generate(&self.latents_for(&noise, &vec![class; n])?)
    }

    /// The classes inside latents `[n, noise_dim + classes]`.
    pub fn classes_of(&self, latents: &Tensor) -> Result<Tensor> {
        Ok(latents.narrow(1, self.cfg.noise_dim, self.cfg.classes)?.argmax(1)?)
    }

    /// D's logits and class logits of images `[B, 1, S, S]` in `[0, 1]`.
    pub fn discriminate(&self, x: &Tensor, train: bool) -> Result<AuxOutputs> {
        self.check_images(x)?;
        self.discriminator.forward_t(x, train)
    }

    /// D's outputs of generated images for the generator's update (training mode), through D
    /// with its weights held fixed ([`zoo_core::nn::fixed_var_builder`]): the generator's
    /// gradients are the same, none is computed for D, and BatchNorm running statistics are
    /// updated as by [`AcGan::discriminate`].
    pub fn discriminate_fixed(&self, fake: &Tensor) -> Result<AuxOutputs> {
        self.check_images(fake)?;
        let c = &self.cfg;
        let vb = zoo_core::nn::fixed_var_builder(&self.varmap, "discriminator", fake.dtype(), fake.device());
        AuxDiscriminator::new(c.hidden, c.classes, 0, c.image_size, vb)?.forward_t(fake, true)
    }

    /// MSGAN's `d_I(G(y, z1), G(y, z2)) / d_z(z1, z2)` (mean absolute differences) for the
    /// generated batch `fake` of `latents`, with `z2` drawn from a generator seeded by `latents`.
    pub fn mode_seeking_ratio(&self, latents: &Tensor, fake: &Tensor) -> Result<Tensor> {
        let n = latents.dim(0)?;
        let z1 = latents.narrow(1, 0, self.cfg.noise_dim)?;
        let z2 = ZooRng::keyed(&z1, "msgan-z2")?.uniform(z1.dims(), -1.0, 1.0, DType::F32, latents.device())?;
        let labels = latents.narrow(1, self.cfg.noise_dim, self.cfg.classes)?;
        let fake2 = self.generator.forward_t(&Tensor::cat(&[&z2, &labels], 1)?, true)?;
        let d_image = (&fake2 - fake)?.abs()?.mean_all()?;
        let d_noise = (&z2 - &z1)?.abs()?.mean_all()?;
        debug_assert_eq!(fake.dim(0).ok(), Some(n));
        Ok((d_image / d_noise)?)
    }
}

impl Adversarial for AcGan {
    fn generator(&self) -> &Generator {
        &self.generator
    }
    fn latent_dim(&self) -> usize {
        self.cfg.noise_dim + self.cfg.classes
    }
    fn image_size(&self) -> usize {
        self.cfg.image_size
    }

    /// `z ~ U(-1, 1)` and classes drawn uniformly.
    fn latents(&self, n: usize, rng: &mut ZooRng, dev: &Device) -> Result<Tensor> {
        let noise = rng.uniform((n, self.cfg.noise_dim), -1.0, 1.0, DType::F32, dev)?;
        let classes: Vec<u32> = (0..n).map(|_| rng.below(self.cfg.classes) as u32).collect();
        self.latents_for(&noise, &classes)
    }

    fn discriminator_loss(&self, step: &Batch, fake: &Tensor) -> Result<(Tensor, Metrics)> {
        let r = self.discriminate(step.real, true)?;
        let f = self.discriminate(fake, true)?;
        let source = (bce_with_logits(&r.logits, &r.logits.ones_like()?)?
            + bce_with_logits(&f.logits, &f.logits.zeros_like()?)?)?;
        let class = (cross_entropy(&r.code_logits, step.labels)?
            + cross_entropy(&f.code_logits, &self.classes_of(step.latents)?)?)?;
        let loss = (&source + &class)?;
        let real_accuracy = r.code_logits.argmax(1)?.eq(step.labels)?.to_dtype(DType::F32)?;
        let metrics = vec![
            ("loss_d".into(), scalar(&loss)?),
            ("d_real".into(), scalar(&candle_nn::ops::sigmoid(&r.logits)?)?),
            ("d_fake".into(), scalar(&candle_nn::ops::sigmoid(&f.logits)?)?),
            ("class_loss".into(), scalar(&class)?),
            ("real_accuracy".into(), scalar(&real_accuracy)?),
        ];
        Ok((loss, metrics))
    }

    fn generator_loss(&self, step: &Batch, fake: &Tensor) -> Result<(Tensor, Metrics)> {
        let f = self.discriminate_fixed(fake)?;
        let mut loss = (bce_with_logits(&f.logits, &f.logits.ones_like()?)?
            + cross_entropy(&f.code_logits, &self.classes_of(step.latents)?)?)?;
        let mut metrics = Vec::new();
        if self.cfg.ms_weight > 0.0 {
            let ratio = self.mode_seeking_ratio(step.latents, fake)?;
            loss = (loss + ((ratio.clone() + 1e-5)?.recip()? * self.cfg.ms_weight)?)?;
            metrics.push(("mode_seeking_ratio".into(), scalar(&ratio)?));
        }
        metrics.insert(0, ("loss_g".into(), scalar(&loss)?));
        Ok((loss, metrics))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(cfg: &AcGanConfig) -> AcGan {
        let m = AcGan::new(cfg, &Device::Cpu).unwrap();
        zoo_core::init::init_dcgan(m.varmap(), &mut ZooRng::new(0)).unwrap();
        m
    }

    #[test]
    fn gradients_reach_every_variable_with_and_without_msgan() {
        for cfg in [AcGanConfig::mnist(), AcGanConfig::mnist_msgan()] {
            let m = model(&cfg);
            let (d, g) = zoo_ebgan::players_without_gradient(&m, 8, 1).unwrap();
            assert_eq!((d, g), (Vec::<String>::new(), Vec::<String>::new()), "{cfg:?}");
        }
    }

    #[test]
    fn classes_are_packed_and_bad_classes_refused() {
        let m = model(&AcGanConfig::mnist());
        let dev = Device::Cpu;
        let noise = Tensor::zeros((3, 62), DType::F32, &dev).unwrap();
        let z = m.latents_for(&noise, &[3, 9, 0]).unwrap();
        assert_eq!(m.classes_of(&z).unwrap().to_vec1::<u32>().unwrap(), [3, 9, 0]);
        let e = m.latents_for(&noise, &[3, 10, 0]).unwrap_err().to_string();
        assert!(e.contains("class 10") && e.contains("0..9"), "{e}");
        let e = m.sample_class(12, 2, &mut ZooRng::new(0), &dev).unwrap_err().to_string();
        assert!(e.contains("class 12"), "{e}");
        assert_eq!(m.sample_class(4, 2, &mut ZooRng::new(0), &dev).unwrap().dims(), [2, 1, 28, 28]);
    }

    #[test]
    fn mode_seeking_ratio_is_deterministic_and_enters_the_generator_loss() {
        let dev = Device::Cpu;
        let m = model(&AcGanConfig::mnist_msgan());
        let z = m.latents(16, &mut ZooRng::new(5), &dev).unwrap();
        let fake = m.generator.forward_t(&z, true).unwrap();
        let a = m.mode_seeking_ratio(&z, &fake).unwrap().to_scalar::<f32>().unwrap();
        let b = m.mode_seeking_ratio(&z, &fake).unwrap().to_scalar::<f32>().unwrap();
        assert!(a > 0.0 && a == b, "{a} {b}");
        let data = zoo_data::Mnist::bundled_train_subset().unwrap();
        let (x, y) = data.batch(&(0..16).collect::<Vec<_>>(), &dev).unwrap();
        let step = Batch { real: &x, labels: &y, latents: &z };
        let (with, metrics) = m.generator_loss(&step, &fake).unwrap();
        assert_eq!(metrics[1].0, "mode_seeking_ratio");
        let plain = AcGan { cfg: AcGanConfig::mnist(), ..model(&AcGanConfig::mnist_msgan()) };
        let (without, _) = plain.generator_loss(&step, &fake).unwrap();
        let gap = (with.to_scalar::<f32>().unwrap() - without.to_scalar::<f32>().unwrap()) as f64;
        assert!((gap - 1.0 / (metrics[1].1 + 1e-5)).abs() < 1e-3 * gap.abs().max(1.0), "{gap} vs {}", metrics[1].1);
    }
}
