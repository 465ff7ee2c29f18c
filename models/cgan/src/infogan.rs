//! InfoGAN (Chen et al., NIPS 2016) in the MNIST setting of the paper's appendix C and the
//! authors' code.
//!
//! - Latents: `z ~ U(-1, 1)` (62), one categorical code `c1 ~ Cat(10)` (one-hot) and two
//!   continuous codes `c2, c3 ~ U(-1, 1)`: 74 generator inputs, in the order `[z, c1, c2, c3]`.
//! - G: FC 1024, BN, ReLU -> FC 7x7x128, BN, ReLU -> convT 4x4 s2 64, BN, ReLU -> convT 4x4 s2 1,
//!   sigmoid (the zoo's conv generator, [`zoo_ebgan::Generator`]).
//! - D: conv 4x4 s2 64, leaky ReLU -> conv 4x4 s2 128, BN, leaky ReLU -> FC 1024, BN, leaky
//!   ReLU -> FC 1. The Q head shares D's body: FC 128, BN, leaky ReLU -> 10 logits and 2 means
//!   (the Gaussian's standard deviation is fixed at 1).
//! - Losses: the non-saturating GAN loss, plus `lambda * L_I` for both players, with
//!   `L_I = CE(Q logits, c1) + w_cont * mean_i sum_j 0.5 (c_ij - mu_ij)^2` (the negative
//!   log-likelihood up to a constant). Q is trained with D (its variables are under
//!   `discriminator.q`), G receives `L_I` through the generated batch.
//!
//! Beyond the paper, [`InfoGanConfig::invariance_weight`] adds a jitter-invariance term: Q must
//! also read the category of each generated image after a small random affine warp, in D's
//! update and (through the warp) in G's.
//!
//! D sees pixels mapped to `[-1, 1]` ([`zoo_ebgan::model::to_signed`]) and its leaky ReLUs have
//! slope 0.2, as the zoo's other discriminators; the authors' code uses slope 0.01 and `[0, 1]`
//! pixels, which [`InfoGanConfig::mnist_authors_code`] (`infogan train --authors-code`) selects.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{ModuleT, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use zoo_core::checkpoint::ZooModel;
use zoo_core::loss::{bce_with_logits, cross_entropy};
use zoo_core::nn::AffineJitter;
use zoo_core::nn::BatchNorm;
use zoo_core::nn::Conv2d;
use zoo_core::nn::Linear;
use zoo_core::train::Metrics;
use zoo_core::ZooRng;
use zoo_ebgan::adversarial::scalar;
use zoo_ebgan::model::{bn, to_signed};
use zoo_ebgan::{Adversarial, Architecture, Batch, Generator};

/// Sizes and loss weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfoGanConfig {
    /// Incompressible noise `z` (62).
    pub noise_dim: usize,
    /// Categories of the categorical code (10).
    pub categories: usize,
    /// Continuous codes (2).
    pub continuous: usize,
    /// Width of G's first layer and of D's shared FC layer (1024).
    pub hidden: usize,
    /// `lambda`, the weight of `L_I` for both players (1).
    pub info_weight: f64,
    /// Weight of the continuous codes' term inside `L_I` (1, as in the authors' code).
    pub continuous_weight: f64,
    /// Side of the square greyscale images (28).
    pub image_size: usize,
    /// The noise is drawn from `U(-noise_range, noise_range)` (1 in the paper). A small range
    /// leaves the generator's output to the codes early in training, as ClusterGAN's small-variance
    /// noise does, so that the categorical code is more likely to settle on digit identity.
    #[serde(default = "unit_range")]
    pub noise_range: f64,
    /// Slope of D's and Q's leaky ReLUs: 0.2 (the zoo's default, as in DCGAN ports) or 0.01 (the
    /// authors' code, prettytensor's default). Configurations written before it read as 0.2.
    #[serde(default = "dcgan_slope")]
    pub leaky_slope: f64,
    /// Whether D sees pixels mapped to `[-1, 1]` (the zoo's default) or the `[0, 1]` pixels the
    /// generator emits (the authors' code). Configurations written before it read as `true`.
    #[serde(default = "signed")]
    pub signed_input: bool,
    /// Weight of the jitter-invariance term (0: off, as in the paper): Q must also read each
    /// generated image's category after a small random rotation, shear, scale and shift
    /// ([`InfoGanConfig::jitter`]), in D's update and, through the warp, in G's. A category that
    /// G tells apart by slant or size alone cannot survive the jitter. Beyond the paper.
    #[serde(default)]
    pub invariance_weight: f64,
    /// The jitter's ranges for the invariance term.
    #[serde(default)]
    pub jitter: AffineJitter,
}

fn unit_range() -> f64 {
    1.0
}

fn dcgan_slope() -> f64 {
    0.2
}

fn signed() -> bool {
    true
}

impl InfoGanConfig {
    /// The paper's MNIST setting.
    pub fn mnist() -> Self {
        Self {
            noise_dim: 62,
            categories: 10,
            continuous: 2,
            hidden: 1024,
            info_weight: 1.0,
            continuous_weight: 1.0,
            image_size: 28,
            noise_range: 1.0,
            leaky_slope: 0.2,
            signed_input: true,
            invariance_weight: 0.0,
            jitter: AffineJitter::digits(),
        }
    }

    /// [`InfoGanConfig::mnist`] with the two details of the authors' code that the paper does
    /// not state: leaky ReLU slope 0.01 and D reading `[0, 1]` pixels.
    pub fn mnist_authors_code() -> Self {
        Self { leaky_slope: 0.01, signed_input: false, ..Self::mnist() }
    }

    /// All generator inputs: `noise_dim + categories + continuous` (74).
    pub fn latent_dim(&self) -> usize {
        self.noise_dim + self.categories + self.continuous
    }

    fn generator_architecture(&self) -> Architecture {
        Architecture::Conv {
            g_hidden: self.hidden,
            d_channels: 64,
            code: 0,
            d_batchnorm: true,
            d_depth: 1,
            d_encoder_batchnorm: false,
        }
    }
}

/// D's body with two heads: the real/fake logit, and an auxiliary head (InfoGAN's Q: code
/// logits and means; AC-GAN's class logits, with no continuous part).
pub struct AuxDiscriminator {
    conv1: Conv2d,
    conv2: Conv2d,
    bn2: BatchNorm,
    fc: Linear,
    bn_fc: BatchNorm,
    out: Linear,
    q_fc: Linear,
    q_bn: BatchNorm,
    q_out: Linear,
    categories: usize,
    slope: f64,
    signed_input: bool,
}

/// D's outputs on a batch.
pub struct AuxOutputs {
    /// Real/fake logits `[B]`.
    pub logits: Tensor,
    /// Q's categorical logits `[B, categories]`.
    pub code_logits: Tensor,
    /// Q's means of the continuous codes `[B, continuous]`.
    pub code_means: Tensor,
}

impl AuxDiscriminator {
    /// conv 64 -> conv 128 + BN -> FC `hidden` + BN, then the logit and the auxiliary head
    /// (FC 128 + BN -> `categories + continuous` outputs).
    pub fn new(hidden: usize, categories: usize, continuous: usize, image_size: usize, vb: VarBuilder) -> Result<Self> {
        let conv = candle_nn::Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
        let flat = 128 * (image_size / 4).pow(2);
        Ok(Self {
            conv1: zoo_core::nn::conv2d(1, 64, 4, conv, vb.pp("conv1"))?,
            conv2: zoo_core::nn::conv2d(64, 128, 4, conv, vb.pp("conv2"))?,
            bn2: bn(128, vb.pp("bn2"))?,
            fc: zoo_core::nn::linear(flat, hidden, vb.pp("fc"))?,
            bn_fc: bn(hidden, vb.pp("bn_fc"))?,
            out: zoo_core::nn::linear(hidden, 1, vb.pp("out"))?,
            q_fc: zoo_core::nn::linear(hidden, 128, vb.pp("q.fc"))?,
            q_bn: bn(128, vb.pp("q.bn"))?,
            q_out: zoo_core::nn::linear(128, categories + continuous, vb.pp("q.out"))?,
            categories,
            slope: 0.2,
            signed_input: true,
        })
    }

    /// The leaky ReLUs' slope (0.2 by default) and whether the input is mapped to `[-1, 1]`
    /// (by default) or read as `[0, 1]`.
    pub fn with_input(mut self, slope: f64, signed_input: bool) -> Self {
        self.slope = slope;
        self.signed_input = signed_input;
        self
    }

    /// Both heads on images in `[0, 1]` (mapped to `[-1, 1]` inside unless configured not to).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<AuxOutputs> {
        let categories = self.categories;
        let leaky_relu = |t: &Tensor| zoo_core::nn::leaky_relu(t, self.slope);
        let x = if self.signed_input { to_signed(x)? } else { x.clone() };
        let h = leaky_relu(&self.conv1.forward(&x)?)?;
        let h = leaky_relu(&self.bn2.forward_t(&self.conv2.forward(&h)?, train)?)?.flatten_from(1)?;
        let h = leaky_relu(&self.bn_fc.forward_t(&self.fc.forward(&h)?, train)?)?;
        let logits = self.out.forward(&h)?.squeeze(1)?;
        let q = leaky_relu(&self.q_bn.forward_t(&self.q_fc.forward(&h)?, train)?)?;
        let q = self.q_out.forward(&q)?;
        let width = q.dim(1)?;
        Ok(AuxOutputs {
            logits,
            code_logits: q.narrow(1, 0, categories)?,
            code_means: q.narrow(1, categories, width - categories)?,
        })
    }
}

/// The codes of a batch of latents, split out of `[z, one-hot c1, c2, c3]`.
pub struct Codes {
    /// Category indices `[B]` (u32).
    pub category: Tensor,
    /// Continuous codes `[B, continuous]`.
    pub continuous: Tensor,
}

/// An InfoGAN: generator, discriminator and Q head.
pub struct InfoGan {
    cfg: InfoGanConfig,
    varmap: VarMap,
    /// The generator (74 inputs).
    pub generator: Generator,
    /// The discriminator and its Q head.
    pub discriminator: AuxDiscriminator,
}

impl ZooModel for InfoGan {
    const FAMILY: &'static str = "infogan";
    type Config = InfoGanConfig;

    fn build(cfg: &InfoGanConfig, varmap: VarMap, vb: VarBuilder) -> Result<Self> {
        if !cfg.image_size.is_multiple_of(4) || cfg.image_size < 8 {
            bail!("InfoGAN's networks take square images whose side is a multiple of 4, got {}", cfg.image_size);
        }
        if !(0.0..1.0).contains(&cfg.leaky_slope) {
            bail!("the leaky ReLU slope must lie in [0, 1), got {}", cfg.leaky_slope);
        }
        if !(cfg.invariance_weight.is_finite() && cfg.invariance_weight >= 0.0) {
            bail!("the invariance weight must be a number >= 0, got {}", cfg.invariance_weight);
        }
        cfg.jitter.check()?;
        if cfg.categories < 2 {
            bail!("the categorical code needs at least 2 categories, got {}", cfg.categories);
        }
        Ok(Self {
            generator: Generator::new(
                cfg.latent_dim(),
                &cfg.generator_architecture(),
                cfg.image_size,
                vb.pp("generator"),
            )?,
            discriminator: AuxDiscriminator::new(
                cfg.hidden,
                cfg.categories,
                cfg.continuous,
                cfg.image_size,
                vb.pp("discriminator"),
            )?
            .with_input(cfg.leaky_slope, cfg.signed_input),
            cfg: cfg.clone(),
            varmap,
        })
    }
    fn config(&self) -> &InfoGanConfig {
        &self.cfg
    }
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }
}

impl InfoGan {
    /// Generator inputs for given noise `[n, noise_dim]`, categories (each `< categories`) and
    /// continuous codes `[n, continuous]`; errors that say which part is wrong.
    pub fn latents_with_codes(&self, noise: &Tensor, category: &[u32], continuous: &Tensor) -> Result<Tensor> {
        let n = category.len();
        let c = &self.cfg;
        if noise.dims() != [n, c.noise_dim] {
            bail!("noise must be [{n}, {}] for {n} categories, got {:?}", c.noise_dim, noise.dims());
        }
        if continuous.dims() != [n, c.continuous] {
            bail!("continuous codes must be [{n}, {}], got {:?}", c.continuous, continuous.dims());
        }
        if let Some(bad) = category.iter().find(|&&k| k as usize >= c.categories) {
            bail!("category {bad} is out of range: the code has {} categories (0..{})", c.categories, c.categories - 1);
        }
        let mut one_hot = vec![0f32; n * c.categories];
        for (i, &k) in category.iter().enumerate() {
            one_hot[i * c.categories + k as usize] = 1.0;
        }
        let one_hot = Tensor::from_vec(one_hot, (n, c.categories), noise.device())?.to_dtype(noise.dtype())?;
        Ok(Tensor::cat(&[noise, &one_hot, continuous], 1)?)
    }

    /// The codes inside latents `[n, latent_dim]`.
    pub fn codes(&self, latents: &Tensor) -> Result<Codes> {
        let c = &self.cfg;
        if latents.dims() != [latents.dim(0)?, c.latent_dim()] {
            bail!("InfoGAN latents must be [n, {}], got {:?}", c.latent_dim(), latents.dims());
        }
        Ok(Codes {
            category: latents.narrow(1, c.noise_dim, c.categories)?.argmax(1)?,
            continuous: latents.narrow(1, c.noise_dim + c.categories, c.continuous)?,
        })
    }

    /// D's logits and Q's code estimates of images `[B, 1, S, S]` in `[0, 1]`.
    pub fn discriminate(&self, x: &Tensor, train: bool) -> Result<AuxOutputs> {
        self.check_images(x)?;
        self.discriminator.forward_t(x, train)
    }

    /// D's and Q's outputs of generated images for the generator's update (training mode),
    /// through D and Q with their weights held fixed ([`zoo_core::nn::fixed_var_builder`]): the
    /// generator's gradients are the same, none is computed for D and Q (the generator's
    /// optimiser would not use them; Q learns from the discriminator's loss), and BatchNorm
    /// running statistics are updated as by [`InfoGan::discriminate`].
    pub fn discriminate_fixed(&self, fake: &Tensor) -> Result<AuxOutputs> {
        self.check_images(fake)?;
        let c = &self.cfg;
        let vb = zoo_core::nn::fixed_var_builder(&self.varmap, "discriminator", fake.dtype(), fake.device());
        AuxDiscriminator::new(c.hidden, c.categories, c.continuous, c.image_size, vb)?
            .with_input(c.leaky_slope, c.signed_input)
            .forward_t(fake, true)
    }

    /// `n` noise vectors `z ~ U(-noise_range, noise_range)`, `[n, noise_dim]`.
    pub fn noise(&self, n: usize, rng: &mut ZooRng, dev: &Device) -> Result<Tensor> {
        let (d, r) = (self.cfg.noise_dim, self.cfg.noise_range);
        rng.uniform((n, d), -r, r, DType::F32, dev)
    }

    /// The invariance term: the cross-entropy of Q's categorical logits of jittered copies of the
    /// generated images `fake` (the jitter drawn from `latents` and the `player`'s label) against
    /// the categories in `latents`, times [`InfoGanConfig::invariance_weight`]; through D and Q
    /// held fixed if `fixed` (G's update). `None` when the term is off.
    fn invariance_loss(&self, latents: &Tensor, fake: &Tensor, player: &str, fixed: bool) -> Result<Option<Tensor>> {
        if self.cfg.invariance_weight == 0.0 {
            return Ok(None);
        }
        let mut rng = ZooRng::keyed(latents, &format!("infogan-jitter-{player}"))?;
        let jittered = self.cfg.jitter.apply(fake, &mut rng)?;
        let out = if fixed { self.discriminate_fixed(&jittered)? } else { self.discriminate(&jittered, true)? };
        let ce = cross_entropy(&out.code_logits, &self.codes(latents)?.category)?;
        Ok(Some((ce * self.cfg.invariance_weight)?))
    }

    /// Q's categorical code of images (evaluation mode): the code as an unsupervised classifier.
    pub fn infer_category(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.discriminate(x, false)?.code_logits.argmax(1)?)
    }
}

/// `L_I = CE(code_logits, category) + w_cont * mean_i sum_j 0.5 (c_ij - mu_ij)^2`: the negative
/// log-likelihood of the codes under Q (up to the constant of the unit-variance Gaussian).
pub fn info_loss(out: &AuxOutputs, codes: &Codes, continuous_weight: f64) -> Result<Tensor> {
    let ce = cross_entropy(&out.code_logits, &codes.category)?;
    if codes.continuous.dim(1)? == 0 {
        return Ok(ce);
    }
    let gauss = ((&out.code_means - &codes.continuous)?.sqr()?.sum(D::Minus1)? * 0.5)?.mean_all()?;
    Ok((ce + (gauss * continuous_weight)?)?)
}

impl Adversarial for InfoGan {
    fn generator(&self) -> &Generator {
        &self.generator
    }
    fn latent_dim(&self) -> usize {
        self.cfg.latent_dim()
    }
    fn image_size(&self) -> usize {
        self.cfg.image_size
    }

    /// `z ~ U(-r, r)` (`r = noise_range`, 1 in the paper), `c1` uniform over the categories,
    /// `c2, c3 ~ U(-1, 1)`.
    fn latents(&self, n: usize, rng: &mut ZooRng, dev: &Device) -> Result<Tensor> {
        let c = &self.cfg;
        let noise = self.noise(n, rng, dev)?;
        let category: Vec<u32> = (0..n).map(|_| rng.below(c.categories) as u32).collect();
        let continuous = rng.uniform((n, c.continuous), -1.0, 1.0, DType::F32, dev)?;
        self.latents_with_codes(&noise, &category, &continuous)
    }

    fn discriminator_loss(&self, step: &Batch, fake: &Tensor) -> Result<(Tensor, Metrics)> {
        let r = self.discriminate(step.real, true)?;
        let f = self.discriminate(fake, true)?;
        let gan = (bce_with_logits(&r.logits, &r.logits.ones_like()?)?
            + bce_with_logits(&f.logits, &f.logits.zeros_like()?)?)?;
        let info = info_loss(&f, &self.codes(step.latents)?, self.cfg.continuous_weight)?;
        let invariance = self.invariance_loss(step.latents, fake, "d", false)?;
        let information = match &invariance {
            Some(term) => (&info + term)?,
            None => info.clone(),
        };
        let loss = (&gan + (&information * self.cfg.info_weight)?)?;
        let mut metrics = vec![
            ("loss_d".into(), scalar(&loss)?),
            ("d_real".into(), scalar(&candle_nn::ops::sigmoid(&r.logits)?)?),
            ("d_fake".into(), scalar(&candle_nn::ops::sigmoid(&f.logits)?)?),
            ("info_loss".into(), scalar(&info)?),
        ];
        if let Some(term) = invariance {
            metrics.push(("invariance_loss".into(), scalar(&term)? / self.cfg.invariance_weight));
        }
        Ok((loss, metrics))
    }

    fn generator_loss(&self, step: &Batch, fake: &Tensor) -> Result<(Tensor, Metrics)> {
        let f = self.discriminate_fixed(fake)?;
        // Non-saturating GAN loss plus the information term through G.
        let gan = bce_with_logits(&f.logits, &f.logits.ones_like()?)?;
        let mut info = info_loss(&f, &self.codes(step.latents)?, self.cfg.continuous_weight)?;
        if let Some(term) = self.invariance_loss(step.latents, fake, "g", true)? {
            info = (info + term)?;
        }
        let loss = (gan + (info * self.cfg.info_weight)?)?;
        Ok((loss.clone(), vec![("loss_g".into(), scalar(&loss)?)]))
    }

    /// `code_accuracy`: the categorical code of the monitor's samples as a classifier of the
    /// judge's digits, categories matched to digits one-to-one (as `infogan eval` reports it on
    /// more samples). Only for 10 categories.
    fn monitor_extras(&self, z: &Tensor, x: &Tensor, judge: &zoo_eval::judge::Judge) -> Result<Metrics> {
        let k = self.cfg.categories;
        if k != 10 {
            return Ok(Vec::new());
        }
        let categories = self.codes(z)?.category.to_vec1::<u32>()?;
        let mut digits = Vec::with_capacity(categories.len());
        for s in (0..x.dim(0)?).step_by(500) {
            let part = x.narrow(0, s, (x.dim(0)? - s).min(500))?;
            digits.extend(judge.predict(&part)?.to_vec1::<u32>()?);
        }
        let (accuracy, _) = zoo_eval::metrics::matched_accuracy(&categories, &digits, k)?;
        Ok(vec![("code_accuracy".into(), accuracy)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zoo_core::optim::named_vars;

    fn model() -> InfoGan {
        let m = InfoGan::new(&InfoGanConfig::mnist(), &Device::Cpu).unwrap();
        zoo_core::init::init_dcgan(m.varmap(), &mut ZooRng::new(0)).unwrap();
        m
    }

    #[test]
    fn info_loss_matches_hand_computed_values() {
        let dev = Device::Cpu;
        // Two samples, 3 categories, 1 continuous code.
        let out = AuxOutputs {
            logits: Tensor::zeros(2, DType::F32, &dev).unwrap(),
            code_logits: Tensor::new(&[[0f32, 0., 0.], [2f32, 0., 0.]], &dev).unwrap(),
            code_means: Tensor::new(&[[0.5f32], [-1.0]], &dev).unwrap(),
        };
        let codes = Codes {
            category: Tensor::new(&[1u32, 0], &dev).unwrap(),
            continuous: Tensor::new(&[[0.0f32], [1.0]], &dev).unwrap(),
        };
        let ce0 = 3f64.ln();
        let ce1 = -(2f64.exp() / (2f64.exp() + 2.0)).ln();
        let gauss = (0.5 * 0.25 + 0.5 * 4.0) / 2.0;
        for w in [1.0, 0.1] {
            let got = info_loss(&out, &codes, w).unwrap().to_scalar::<f32>().unwrap() as f64;
            let want = (ce0 + ce1) / 2.0 + w * gauss;
            assert!((got - want).abs() < 1e-6, "w {w}: {got} vs {want}");
        }
    }

    #[test]
    fn codes_round_trip_and_bad_codes_are_refused() {
        let m = model();
        let dev = Device::Cpu;
        let noise = Tensor::zeros((3, 62), DType::F32, &dev).unwrap();
        let cont = Tensor::new(&[[0.1f32, -0.2], [0.3, 0.4], [-0.5, 0.6]], &dev).unwrap();
        let z = m.latents_with_codes(&noise, &[7, 0, 9], &cont).unwrap();
        assert_eq!(z.dims(), [3, 74]);
        let codes = m.codes(&z).unwrap();
        assert_eq!(codes.category.to_vec1::<u32>().unwrap(), [7, 0, 9]);
        assert_eq!(codes.continuous.to_vec2::<f32>().unwrap(), cont.to_vec2::<f32>().unwrap());
        let e = m.latents_with_codes(&noise, &[7, 10, 9], &cont).unwrap_err().to_string();
        assert!(e.contains("category 10") && e.contains("0..9"), "{e}");
        let e = m.latents_with_codes(&noise, &[1, 2, 3], &cont.narrow(1, 0, 1).unwrap()).unwrap_err().to_string();
        assert!(e.contains("continuous codes must be [3, 2]"), "{e}");
        let e = m.generate(&Tensor::zeros((2, 64), DType::F32, &dev).unwrap()).unwrap_err().to_string();
        assert!(e.contains("[n, 74]"), "{e}");
        let sampled = m.codes(&m.latents(500, &mut ZooRng::new(3), &dev).unwrap()).unwrap();
        let mut seen = [0usize; 10];
        for k in sampled.category.to_vec1::<u32>().unwrap() {
            seen[k as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 20), "categories are drawn uniformly: {seen:?}");
    }

    #[test]
    fn noise_follows_its_range_and_older_configs_read_the_papers() {
        let dev = Device::Cpu;
        let narrow = InfoGan::new(&InfoGanConfig { noise_range: 0.1, ..InfoGanConfig::mnist() }, &dev).unwrap();
        let z = narrow.latents(200, &mut ZooRng::new(4), &dev).unwrap();
        let noise = z.narrow(1, 0, 62).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let top = noise.iter().fold(0f32, |a, v| a.max(v.abs()));
        assert!(top <= 0.1 && top > 0.09, "{top}");
        // The continuous codes keep U(-1, 1).
        let cont = z.narrow(1, 72, 2).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(cont > 0.9, "{cont}");
        // A config written before noise_range existed reads as the paper's U(-1, 1).
        let mut old = serde_json::to_value(InfoGanConfig::mnist()).unwrap();
        old.as_object_mut().unwrap().remove("noise_range");
        let cfg: InfoGanConfig = serde_json::from_value(old).unwrap();
        assert_eq!(cfg.noise_range, 1.0);
    }

    #[test]
    fn the_generator_update_through_fixed_d_and_q_has_the_same_gradients() {
        for cfg in [InfoGanConfig::mnist(), InfoGanConfig::mnist_authors_code()] {
            let m = InfoGan::new(&cfg, &Device::Cpu).unwrap();
            zoo_core::init::init_dcgan(m.varmap(), &mut ZooRng::new(0)).unwrap();
            let z = m.latents(8, &mut ZooRng::new(1), &Device::Cpu).unwrap();
            let fake = m.generator.forward_t(&z, true).unwrap();
            let loss = |f: AuxOutputs| {
                let l = (f.logits.sum_all().unwrap() + f.code_logits.sqr().unwrap().sum_all().unwrap()).unwrap();
                (l + f.code_means.sum_all().unwrap()).unwrap().backward().unwrap()
            };
            let live = loss(m.discriminate(&fake, true).unwrap());
            let fixed = loss(m.discriminate_fixed(&fake).unwrap());
            let wrong = zoo_core::gradcheck::fixed_pass_mismatches(m.varmap(), &live, &fixed, "generator.");
            assert_eq!(wrong, Vec::<String>::new(), "{cfg:?}");
        }
    }

    #[test]
    fn gradients_reach_every_variable_of_g_d_and_q() {
        let m = model();
        let (d, g) = zoo_ebgan::adversarial::players_without_gradient(&m, 8, 1).unwrap();
        assert_eq!((d, g), (Vec::<String>::new(), Vec::<String>::new()));
        let names: Vec<String> = m.varmap().data().lock().unwrap().keys().cloned().collect();
        assert!(names.iter().any(|n| n.starts_with("discriminator.q.")), "{names:?}");
    }

    #[test]
    fn the_invariance_term_is_q_on_jittered_samples_and_trains_every_player() {
        let dev = Device::Cpu;
        let cfg = InfoGanConfig { invariance_weight: 0.5, ..InfoGanConfig::mnist_authors_code() };
        let m = InfoGan::new(&cfg, &dev).unwrap();
        zoo_core::init::init_dcgan(m.varmap(), &mut ZooRng::new(0)).unwrap();
        let (d, g) = zoo_ebgan::adversarial::players_without_gradient(&m, 8, 1).unwrap();
        assert_eq!((d, g), (Vec::<String>::new(), Vec::<String>::new()));
        // G's loss with the term is G's loss without it plus lambda * w * CE(Q(jitter(G(z))), c1),
        // the jitter drawn from the step's latents.
        let z = m.latents(8, &mut ZooRng::new(4), &dev).unwrap();
        let fake = m.generator.forward_t(&z, true).unwrap();
        let x = zoo_data::Mnist::bundled_test_slice().unwrap().batch(&[0, 1, 2, 3, 4, 5, 6, 7], &dev).unwrap();
        let batch = Batch { real: &x.0, labels: &x.1, latents: &z };
        let with = scalar(&m.generator_loss(&batch, &fake).unwrap().0).unwrap();
        let plain = InfoGan::new(&InfoGanConfig { invariance_weight: 0.0, ..cfg.clone() }, &dev).unwrap();
        for ((_, a), (_, b)) in named_vars(m.varmap(), "").iter().zip(named_vars(plain.varmap(), "")) {
            b.set(a.as_tensor()).unwrap();
        }
        let without = scalar(&plain.generator_loss(&batch, &fake).unwrap().0).unwrap();
        let jittered = cfg.jitter.apply(&fake, &mut ZooRng::keyed(&z, "infogan-jitter-g").unwrap()).unwrap();
        let ce = cross_entropy(&m.discriminate(&jittered, true).unwrap().code_logits, &m.codes(&z).unwrap().category);
        let want = without + 0.5 * scalar(&ce.unwrap()).unwrap();
        assert!((with - want).abs() < 1e-5 * want.abs().max(1.0), "{with} against {want}");
        // The jitter moved the pixels, and D's update reports the term.
        let moved = (&jittered - &fake).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(moved > 0.05, "{moved}");
        let metrics = m.discriminator_loss(&batch, &fake.detach()).unwrap().1;
        assert!(metrics.iter().any(|(k, v)| k == "invariance_loss" && *v > 0.0), "{metrics:?}");
    }

    #[test]
    fn the_authors_code_variant_changes_d_and_older_configs_read_the_defaults() {
        let dev = Device::Cpu;
        let mut old = serde_json::to_value(InfoGanConfig::mnist()).unwrap();
        old.as_object_mut().unwrap().remove("leaky_slope");
        old.as_object_mut().unwrap().remove("signed_input");
        let cfg: InfoGanConfig = serde_json::from_value(old).unwrap();
        assert_eq!((cfg.leaky_slope, cfg.signed_input), (0.2, true));
        // The same weights, read with the authors' slope and input range, give other outputs.
        let ours = model();
        let theirs = InfoGan::new(&InfoGanConfig::mnist_authors_code(), &dev).unwrap();
        for ((_, a), (_, b)) in named_vars(ours.varmap(), "").iter().zip(named_vars(theirs.varmap(), "")) {
            b.set(a.as_tensor()).unwrap();
        }
        let x = zoo_data::Mnist::bundled_test_slice().unwrap().batch(&[0, 1, 2, 3], &dev).unwrap().0;
        let (a, b) =
            (ours.discriminator.forward_t(&x, false).unwrap(), theirs.discriminator.forward_t(&x, false).unwrap());
        let diff = (a.logits - b.logits).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff > 1e-3, "the options changed nothing ({diff})");
        let (d, g) = zoo_ebgan::adversarial::players_without_gradient(&theirs, 8, 1).unwrap();
        assert_eq!((d, g), (Vec::<String>::new(), Vec::<String>::new()));
        let bad = InfoGanConfig { leaky_slope: 1.5, ..InfoGanConfig::mnist() };
        assert!(InfoGan::new(&bad, &dev).err().unwrap().to_string().contains("slope"));
    }
}
