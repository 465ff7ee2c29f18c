//! The baseline the paper compares EBGAN with: a standard GAN with the same generator and a
//! binary discriminator of comparable size, trained with the non-saturating objective
//! (Goodfellow et al. 2014, section 3): D minimises `BCE(D(x), 1) + BCE(D(G(z)), 0)`, G minimises
//! `BCE(D(G(z)), 1)`.

use anyhow::{bail, Result};
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use zoo_core::checkpoint::ZooModel;
use zoo_core::loss::bce_with_logits;
use zoo_core::nn::BatchNorm;
use zoo_core::nn::Conv2d;
use zoo_core::nn::Linear;
use zoo_core::train::Metrics;

use crate::adversarial::{scalar, Adversarial, Batch};
use crate::model::{bn, mlp, to_signed};
use crate::{Architecture, Config, Generator};

/// A GAN baseline: the generator of an EBGAN preset and a binary discriminator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GanConfig {
    /// Dimension of the latent `z ~ U(-1, 1)`.
    pub latent_dim: usize,
    /// The generator is built exactly as EBGAN's from this. For the discriminator, `Conv` gives
    /// conv 4x4/2 `1 -> d_channels`, conv 4x4/2 `d_channels -> 2 d_channels` (BatchNorm), a
    /// linear map to `d_hidden` and one logit; `FullyConnected` gives `S^2 -> hidden (depth - 1
    /// times) -> d_hidden -> 1`. EBGAN's `code`, `d_batchnorm` and `d_encoder_batchnorm` are unused.
    pub architecture: Architecture,
    /// Width of the discriminator's last hidden layer.
    pub d_hidden: usize,
    /// Side of the square greyscale images.
    pub image_size: usize,
}

impl GanConfig {
    /// The baseline of an EBGAN configuration: the same generator and latent, and a binary
    /// discriminator of about the same number of parameters (conv: 0.94 M against the
    /// autoencoder's 0.82 M; fully connected: 0.67 M against 0.93 M).
    pub fn matching(ebgan: &Config) -> Self {
        let d_hidden = match ebgan.architecture {
            Architecture::Conv { .. } => 128,
            Architecture::FullyConnected { hidden, .. } => hidden,
        };
        Self { latent_dim: ebgan.latent_dim, architecture: ebgan.architecture.clone(), d_hidden, image_size: 28 }
    }

    /// The baseline of [`Config::mnist_conv`].
    pub fn mnist_conv() -> Self {
        Self::matching(&Config::mnist_conv())
    }

    /// The baseline of [`Config::paper_mnist_fc`].
    pub fn paper_mnist_fc() -> Self {
        Self::matching(&Config::paper_mnist_fc())
    }
}

/// The binary discriminator: one real-vs-generated logit per image.
#[allow(clippy::large_enum_variant)]
pub enum BinaryDiscriminator {
    /// Two strided convolutions and two linear maps.
    Conv {
        /// `1 -> c`, halving the side.
        conv1: Conv2d,
        /// `c -> 2c`, halving the side.
        conv2: Conv2d,
        /// BatchNorm after `conv2`.
        bn2: BatchNorm,
        /// `2c (S/4)^2 -> hidden`.
        fc1: Linear,
        /// `hidden -> 1`.
        fc2: Linear,
    },
    /// Linear maps with leaky ReLU between them.
    FullyConnected {
        /// `S^2 -> hidden (depth - 1 times) -> d_hidden -> 1`.
        layers: Vec<Linear>,
    },
}

impl BinaryDiscriminator {
    /// Builds the discriminator of `cfg` under `vb`.
    pub fn new(cfg: &GanConfig, vb: VarBuilder) -> Result<Self> {
        let s = cfg.image_size;
        Ok(match cfg.architecture {
            Architecture::Conv { d_channels: c, .. } => {
                let conv = candle_nn::Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
                BinaryDiscriminator::Conv {
                    conv1: zoo_core::nn::conv2d(1, c, 4, conv, vb.pp("conv1"))?,
                    conv2: zoo_core::nn::conv2d(c, 2 * c, 4, conv, vb.pp("conv2"))?,
                    bn2: bn(2 * c, vb.pp("bn2"))?,
                    fc1: zoo_core::nn::linear(2 * c * (s / 4) * (s / 4), cfg.d_hidden, vb.pp("fc1"))?,
                    fc2: zoo_core::nn::linear(cfg.d_hidden, 1, vb.pp("fc2"))?,
                }
            }
            Architecture::FullyConnected { hidden, depth, .. } => {
                let widths: Vec<usize> = std::iter::once(s * s)
                    .chain(std::iter::repeat_n(hidden, depth.max(2) - 1))
                    .chain([cfg.d_hidden, 1])
                    .collect();
                BinaryDiscriminator::FullyConnected { layers: mlp(&widths, "fc", 1, vb)? }
            }
        })
    }

    /// Logits `[B]` of images `[B, 1, S, S]` (pixels in `[0, 1]`, mapped to `[-1, 1]` inside) being
    /// real; `train` switches BatchNorm to batch
    /// statistics.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = &to_signed(x)?;
        let logits = match self {
            BinaryDiscriminator::Conv { conv1, conv2, bn2, fc1, fc2 } => {
                let h = crate::model::leaky_relu(&conv1.forward(x)?)?;
                let h = crate::model::leaky_relu(&bn2.forward_t(&conv2.forward(&h)?, train)?)?.flatten_from(1)?;
                fc2.forward(&crate::model::leaky_relu(&fc1.forward(&h)?)?)?
            }
            BinaryDiscriminator::FullyConnected { layers } => {
                let mut h = x.flatten_from(1)?;
                for (i, layer) in layers.iter().enumerate() {
                    h = layer.forward(&h)?;
                    if i + 1 < layers.len() {
                        h = crate::model::leaky_relu(&h)?;
                    }
                }
                h
            }
        };
        Ok(logits.squeeze(1)?)
    }
}

/// A standard GAN: generator under `generator.*` (the same names as EBGAN's), discriminator
/// under `discriminator.*`.
pub struct Gan {
    cfg: GanConfig,
    varmap: VarMap,
    /// `G`.
    pub generator: Generator,
    /// `D`.
    pub discriminator: BinaryDiscriminator,
}

impl ZooModel for Gan {
    const FAMILY: &'static str = "gan";
    type Config = GanConfig;

    fn build(cfg: &GanConfig, varmap: VarMap, vb: VarBuilder) -> Result<Self> {
        if cfg.image_size == 0 || !cfg.image_size.is_multiple_of(4) {
            bail!("GAN image size must be a positive multiple of 4, got {}", cfg.image_size);
        }
        Ok(Self {
            generator: Generator::new(cfg.latent_dim, &cfg.architecture, cfg.image_size, vb.pp("generator"))?,
            discriminator: BinaryDiscriminator::new(cfg, vb.pp("discriminator"))?,
            cfg: cfg.clone(),
            varmap,
        })
    }
    fn config(&self) -> &GanConfig {
        &self.cfg
    }
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }
}

impl Gan {
    /// Discriminator logits of images `x`, checking their shape.
    pub fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_images(x)?;
        self.discriminator.forward_t(x, train)
    }

    /// Logits of generated images for the generator's update (training mode), through the
    /// discriminator with its weights held fixed ([`zoo_core::nn::fixed_var_builder`]): no
    /// gradient is computed for them, the generator's are the same, and the BatchNorm running
    /// statistics are updated as by [`Gan::logits`].
    pub fn generator_logits(&self, fake: &Tensor) -> Result<Tensor> {
        self.check_images(fake)?;
        let vb = zoo_core::nn::fixed_var_builder(&self.varmap, "discriminator", fake.dtype(), fake.device());
        BinaryDiscriminator::new(&self.cfg, vb)?.forward_t(fake, true)
    }
}

impl Adversarial for Gan {
    fn generator(&self) -> &Generator {
        &self.generator
    }
    fn latent_dim(&self) -> usize {
        self.cfg.latent_dim
    }
    fn image_size(&self) -> usize {
        self.cfg.image_size
    }

    fn discriminator_loss(&self, step: &Batch, fake: &Tensor) -> Result<(Tensor, Metrics)> {
        let lr = self.logits(step.real, true)?;
        let lf = self.logits(fake, true)?;
        let loss = (bce_with_logits(&lr, &lr.ones_like()?)? + bce_with_logits(&lf, &lf.zeros_like()?)?)?;
        let metrics = vec![
            ("loss_d".into(), scalar(&loss)?),
            ("d_real".into(), scalar(&candle_nn::ops::sigmoid(&lr)?)?),
            ("d_fake".into(), scalar(&candle_nn::ops::sigmoid(&lf)?)?),
        ];
        Ok((loss, metrics))
    }

    fn generator_loss(&self, _step: &Batch, fake: &Tensor) -> Result<(Tensor, Metrics)> {
        let l = self.generator_logits(fake)?;
        // Non-saturating: G maximises log D(G(z)) rather than minimising log(1 - D(G(z))).
        let loss = bce_with_logits(&l, &l.ones_like()?)?;
        Ok((loss.clone(), vec![("loss_g".into(), scalar(&loss)?)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use zoo_core::ZooRng;

    fn model(cfg: &GanConfig) -> Gan {
        let m = Gan::new(cfg, &Device::Cpu).unwrap();
        zoo_core::init::init_dcgan(m.varmap(), &mut ZooRng::new(0)).unwrap();
        m
    }

    #[test]
    fn gradients_reach_every_variable_and_sizes_match_the_ebgan() {
        for cfg in [GanConfig::mnist_conv(), GanConfig::paper_mnist_fc()] {
            let m = model(&cfg);
            let (d, g) = crate::adversarial::players_without_gradient(&m, 8, 1).unwrap();
            assert_eq!((d, g), (Vec::<String>::new(), Vec::<String>::new()));
        }
        // The generators are the same networks as EBGAN's.
        let count = |vm: &VarMap, prefix: &str| -> usize {
            vm.data().lock().unwrap().iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v.elem_count()).sum()
        };
        let gan = model(&GanConfig::mnist_conv());
        let ebgan = crate::Ebgan::new(&Config::mnist_conv(), &Device::Cpu).unwrap();
        assert_eq!(count(gan.varmap(), "generator."), count(ebgan.varmap(), "generator."));
        let (dg, de) = (count(gan.varmap(), "discriminator."), count(ebgan.varmap(), "discriminator."));
        assert!((dg as f64 / de as f64 - 1.0).abs() < 0.2, "D sizes {dg} vs {de}");
    }

    #[test]
    fn the_generator_update_through_the_fixed_discriminator_has_the_same_gradients_and_statistics() {
        let m = model(&GanConfig::mnist_conv());
        let z = m.latents(8, &mut ZooRng::new(1), &Device::Cpu).unwrap();
        let fake = m.generator.forward_t(&z, true).unwrap();
        let vars: Vec<(String, candle_core::Var)> =
            m.varmap().data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let running: Vec<_> =
            vars.iter().filter(|(k, _)| k.starts_with("discriminator.") && k.contains("running_")).collect();
        assert!(!running.is_empty());
        let before: Vec<Tensor> = running.iter().map(|(_, v)| v.as_tensor().copy().unwrap()).collect();
        let loss = |l: Tensor| bce_with_logits(&l, &l.ones_like().unwrap()).unwrap().backward().unwrap();
        let fixed = loss(m.generator_logits(&fake).unwrap());
        let after_fixed: Vec<Vec<f32>> = running.iter().map(|(_, v)| v.as_tensor().to_vec1().unwrap()).collect();
        for ((_, v), b) in running.iter().zip(&before) {
            v.set(b).unwrap();
        }
        let live = loss(m.logits(&fake, true).unwrap());
        let after_live: Vec<Vec<f32>> = running.iter().map(|(_, v)| v.as_tensor().to_vec1().unwrap()).collect();
        assert_eq!(after_fixed, after_live, "running statistics");
        assert_ne!(after_live[0], before[0].to_vec1::<f32>().unwrap(), "the forward updates the statistics");
        let wrong = zoo_core::gradcheck::fixed_pass_mismatches(m.varmap(), &live, &fixed, "generator.");
        assert_eq!(wrong, Vec::<String>::new());
    }

    #[test]
    fn save_load_is_bit_exact_and_other_families_are_refused() {
        let m = model(&GanConfig::mnist_conv());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gan.safetensors");
        m.save(&p).unwrap();
        let back = Gan::load(&p, &Device::Cpu).unwrap();
        let z = m.latents(4, &mut ZooRng::new(3), &Device::Cpu).unwrap();
        let a = m.generate(&z).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = back.generate(&z).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b);
        let x = m.generate(&z).unwrap();
        assert_eq!(
            m.logits(&x, false).unwrap().to_vec1::<f32>().unwrap(),
            back.logits(&x, false).unwrap().to_vec1::<f32>().unwrap()
        );
        let e = m.logits(&Tensor::zeros((2, 3, 28, 28), DType::F32, &Device::Cpu).unwrap(), false).unwrap_err();
        assert!(e.to_string().contains("[batch, 1, 28, 28]"), "{e}");
        let e = m.generate(&Tensor::zeros((2, 5), DType::F32, &Device::Cpu).unwrap()).unwrap_err();
        assert!(e.to_string().contains("[n, 62]"), "{e}");
        let ebgan = crate::Ebgan::new(&Config::mnist_conv(), &Device::Cpu).unwrap();
        ebgan.save(&p).unwrap();
        let e = format!("{:#}", Gan::load(&p, &Device::Cpu).err().unwrap());
        assert!(e.contains("holds a checkpoint of the 'ebgan' family, not 'gan'"), "{e}");
    }
}
