//! The generator and the autoencoder discriminator.

use anyhow::{bail, Result};
use candle_core::{Module, ModuleT, Tensor, D};
use candle_nn::{BatchNormConfig, ConvTranspose2dConfig, VarBuilder, VarMap};
use zoo_core::checkpoint::ZooModel;
use zoo_core::nn::BatchNorm;
use zoo_core::nn::Linear;
use zoo_core::nn::{Conv2d, ConvTranspose2d};
use zoo_core::train::Metrics;

use crate::adversarial::{scalar, Adversarial, Batch};
use crate::config::{Architecture, Config, Energy};

/// A stride-2 transposed convolution (kernel 4, padding 1) that doubles the side.
pub fn up2x(in_c: usize, out_c: usize, vb: VarBuilder) -> Result<ConvTranspose2d> {
    let cfg = ConvTranspose2dConfig { padding: 1, stride: 2, output_padding: 0, dilation: 1 };
    Ok(zoo_core::nn::conv_transpose2d(in_c, out_c, 4, cfg, vb)?)
}

/// A BatchNorm layer with PyTorch's defaults (eps 1e-5, momentum 0.1).
pub fn bn(c: usize, vb: VarBuilder) -> Result<BatchNorm> {
    Ok(zoo_core::nn::batch_norm(c, BatchNormConfig::default(), vb)?)
}

/// Maps pixels from `[0, 1]` to `[-1, 1]`, where the discriminators work. At initialisation the
/// autoencoder then reconstructs everything as about 0, mid-grey: a fresh generator's grey images
/// have low energy that D must push up, while black-background digits have high energy that D
/// must bring down. With pixels in `[0, 1]` it is the other way round, and the generator's first
/// steps chase D's all-black reconstructions until its sigmoid saturates.
pub fn to_signed(x: &Tensor) -> candle_core::Result<Tensor> {
    x.affine(2.0, -1.0)
}

/// Leaky ReLU with slope 0.2: the autoencoder's units must not die while D pushes the energy of
/// generated images up (with plain ReLU the decoder can go silent and reconstruct nothing).
pub fn leaky_relu(x: &Tensor) -> candle_core::Result<Tensor> {
    zoo_core::nn::leaky_relu(x, 0.2)
}

/// Linear layers `widths[0] -> widths[1] -> ...` named `{prefix}{first}`, `{prefix}{first + 1}`, ...
pub(crate) fn mlp(widths: &[usize], prefix: &str, first: usize, vb: VarBuilder) -> Result<Vec<Linear>> {
    widths
        .windows(2)
        .enumerate()
        .map(|(i, w)| Ok(zoo_core::nn::linear(w[0], w[1], vb.pp(format!("{prefix}{}", first + i)))?))
        .collect()
}

/// The layers of [`mlp`] with ReLU between them (none after the last).
pub(crate) fn mlp_forward(layers: &[Linear], x: &Tensor) -> Result<Tensor> {
    let mut h = x.clone();
    for (i, layer) in layers.iter().enumerate() {
        h = layer.forward(&h)?;
        if i + 1 < layers.len() {
            h = zoo_core::nn::relu(&h)?;
        }
    }
    Ok(h)
}

/// The generator `G(z)`: images `[B, 1, S, S]` with values in `[0, 1]` (sigmoid output).
// Built once per model: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Generator {
    /// DCGAN-style convolutional generator.
    Conv {
        /// `z -> g_hidden`.
        fc1: Linear,
        /// BatchNorm after `fc1`.
        bn1: BatchNorm,
        /// `g_hidden -> 128 (S/4)^2`.
        fc2: Linear,
        /// BatchNorm after `fc2`.
        bn2: BatchNorm,
        /// `128 -> 64`, doubling the side.
        up1: ConvTranspose2d,
        /// BatchNorm after `up1`.
        bn3: BatchNorm,
        /// `64 -> 1`, doubling the side.
        up2: ConvTranspose2d,
        /// Image side / 4.
        side: usize,
    },
    /// Fully-connected generator.
    FullyConnected {
        /// `depth` hidden layers, then the output layer.
        layers: Vec<Linear>,
        /// Image side.
        side: usize,
    },
}

impl Generator {
    /// Builds the generator of `architecture` for latents of `latent_dim` and images of side
    /// `image_size` under `vb`.
    pub fn new(latent_dim: usize, architecture: &Architecture, image_size: usize, vb: VarBuilder) -> Result<Self> {
        let s = image_size;
        Ok(match *architecture {
            Architecture::Conv { g_hidden, .. } => {
                let side = s / 4;
                Generator::Conv {
                    fc1: zoo_core::nn::linear(latent_dim, g_hidden, vb.pp("fc1"))?,
                    bn1: bn(g_hidden, vb.pp("bn1"))?,
                    fc2: zoo_core::nn::linear(g_hidden, 128 * side * side, vb.pp("fc2"))?,
                    bn2: bn(128 * side * side, vb.pp("bn2"))?,
                    up1: up2x(128, 64, vb.pp("up1"))?,
                    bn3: bn(64, vb.pp("bn3"))?,
                    up2: up2x(64, 1, vb.pp("up2"))?,
                    side,
                }
            }
            Architecture::FullyConnected { hidden, depth, .. } => {
                let mut widths = vec![latent_dim];
                widths.extend(std::iter::repeat_n(hidden, depth.max(1)));
                widths.push(s * s);
                Generator::FullyConnected { layers: mlp(&widths, "fc", 1, vb)?, side: s }
            }
        })
    }

    /// `G(z)` for `z` `[B, latent]`; `train` switches BatchNorm to batch statistics.
    pub fn forward_t(&self, z: &Tensor, train: bool) -> Result<Tensor> {
        let b = z.dim(0)?;
        Ok(match self {
            Generator::Conv { fc1, bn1, fc2, bn2, up1, bn3, up2, side } => {
                let h = zoo_core::nn::relu(&bn1.forward_t(&fc1.forward(z)?, train)?)?;
                let h = zoo_core::nn::relu(&bn2.forward_t(&fc2.forward(&h)?, train)?)?;
                let h = h.reshape((b, 128, *side, *side))?;
                let h = zoo_core::nn::relu(&bn3.forward_t(&up1.forward(&h)?, train)?)?;
                candle_nn::ops::sigmoid(&up2.forward(&h)?)?
            }
            Generator::FullyConnected { layers, side } => {
                candle_nn::ops::sigmoid(&mlp_forward(layers, z)?)?.reshape((b, 1, *side, *side))?
            }
        })
    }
}

/// What the discriminator computes for a batch.
#[derive(Debug, Clone)]
pub struct Energies {
    /// Energy of each image `[B]`.
    pub energy: Tensor,
    /// Encoder embedding `[B, code]` (what the pulling-away term sees).
    pub embedding: Tensor,
    /// Reconstruction `[B, 1, S, S]` of the image mapped to `[-1, 1]` (see [`to_signed`]). The
    /// decoder's output is linear: a sigmoid there saturates and leaves D unable to raise the
    /// energy of generated images.
    pub reconstruction: Tensor,
}

/// The autoencoder discriminator: `D(x)` is the reconstruction error of `x`.
#[allow(clippy::large_enum_variant)]
pub enum Discriminator {
    /// Convolutional encoder/decoder.
    Conv {
        /// `1 -> channels`, halving the side.
        enc_conv: Conv2d,
        /// `channels -> 2 channels`, halving the side again (depth 2 only).
        enc_conv2: Option<Conv2d>,
        /// BatchNorm after `enc_conv2`, if the architecture has it.
        enc_bn2: Option<BatchNorm>,
        /// Flattened encoder output `-> code`.
        enc_fc: Linear,
        /// `code ->` the encoder's output size.
        dec_fc: Linear,
        /// BatchNorm after `dec_fc`, if the architecture has it.
        dec_bn: Option<BatchNorm>,
        /// `2 channels -> channels`, doubling the side (depth 2 only).
        dec_conv2: Option<ConvTranspose2d>,
        /// `channels -> 1`, doubling the side.
        dec_conv: ConvTranspose2d,
        /// Channels and side of the innermost feature map.
        inner: (usize, usize),
    },
    /// Fully-connected encoder/decoder.
    FullyConnected {
        /// Encoder: `S^2 -> hidden (depth - 1 times) -> code`.
        encoder: Vec<Linear>,
        /// Decoder: `code -> hidden (depth - 1 times) -> S^2`.
        decoder: Vec<Linear>,
    },
}

impl Discriminator {
    /// Builds the discriminator of `cfg` under `vb`.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let s = cfg.image_size;
        Ok(match cfg.architecture {
            Architecture::Conv { d_channels, code, d_batchnorm, d_depth, d_encoder_batchnorm, .. } => {
                if !(1..=2).contains(&d_depth) {
                    bail!("EBGAN conv discriminator depth must be 1 or 2, got {d_depth}");
                }
                if d_encoder_batchnorm && d_depth != 2 {
                    bail!(
                        "EBGAN conv discriminator: the encoder's BatchNorm follows its second convolution, \
                         so it needs depth 2, got depth {d_depth}"
                    );
                }
                let deep = d_depth == 2;
                let inner = if deep { (2 * d_channels, s / 4) } else { (d_channels, s / 2) };
                let flat = inner.0 * inner.1 * inner.1;
                let conv = candle_nn::Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
                Discriminator::Conv {
                    enc_conv: zoo_core::nn::conv2d(1, d_channels, 4, conv, vb.pp("enc_conv"))?,
                    enc_conv2: if deep {
                        Some(zoo_core::nn::conv2d(d_channels, 2 * d_channels, 4, conv, vb.pp("enc_conv2"))?)
                    } else {
                        None
                    },
                    enc_bn2: if d_encoder_batchnorm { Some(bn(2 * d_channels, vb.pp("enc_bn2"))?) } else { None },
                    enc_fc: zoo_core::nn::linear(flat, code, vb.pp("enc_fc"))?,
                    dec_fc: zoo_core::nn::linear(code, flat, vb.pp("dec_fc"))?,
                    dec_bn: if d_batchnorm { Some(bn(flat, vb.pp("dec_bn"))?) } else { None },
                    dec_conv2: if deep { Some(up2x(2 * d_channels, d_channels, vb.pp("dec_conv2"))?) } else { None },
                    dec_conv: up2x(d_channels, 1, vb.pp("dec_conv"))?,
                    inner,
                }
            }
            Architecture::FullyConnected { hidden, code, depth } => {
                let inner = std::iter::repeat_n(hidden, depth.max(2) - 1);
                let enc: Vec<usize> = std::iter::once(s * s).chain(inner.clone()).chain([code]).collect();
                let dec: Vec<usize> = std::iter::once(code).chain(inner).chain([s * s]).collect();
                Discriminator::FullyConnected {
                    encoder: mlp(&enc, "enc", 1, vb.clone())?,
                    decoder: mlp(&dec, "dec", 1, vb)?,
                }
            }
        })
    }

    /// Energies, embeddings and reconstructions of images `x` `[B, 1, S, S]`; `train` switches the
    /// BatchNorm layers (if any) to batch statistics.
    pub fn forward_t(&self, x: &Tensor, energy: Energy, train: bool) -> Result<Energies> {
        let (b, _, h, w) = x.dims4()?;
        let x = &to_signed(x)?;
        let (embedding, reconstruction) = match self {
            Discriminator::Conv {
                enc_conv,
                enc_conv2,
                enc_bn2,
                enc_fc,
                dec_fc,
                dec_bn,
                dec_conv2,
                dec_conv,
                inner,
            } => {
                let mut e = leaky_relu(&enc_conv.forward(x)?)?;
                if let Some(c) = enc_conv2 {
                    e = c.forward(&e)?;
                    if let Some(bn) = enc_bn2 {
                        e = bn.forward_t(&e, train)?;
                    }
                    e = leaky_relu(&e)?;
                }
                let code = enc_fc.forward(&e.flatten_from(1)?)?;
                let mut d = dec_fc.forward(&code)?;
                if let Some(bn) = dec_bn {
                    d = bn.forward_t(&d, train)?;
                }
                let mut d = leaky_relu(&d)?.reshape((b, inner.0, inner.1, inner.1))?;
                if let Some(c) = dec_conv2 {
                    d = leaky_relu(&c.forward(&d)?)?;
                }
                (code, dec_conv.forward(&d)?)
            }
            Discriminator::FullyConnected { encoder, decoder } => {
                let code = mlp_forward(encoder, &x.flatten_from(1)?)?;
                (code.clone(), mlp_forward(decoder, &code)?.reshape((b, 1, h, w))?)
            }
        };
        let sq = reconstruction.sub(x)?.sqr()?.flatten_from(1)?;
        let energy = match energy {
            Energy::MeanSquared => sq.mean(D::Minus1)?,
            Energy::L2Norm => (sq.sum(D::Minus1)? + 1e-12)?.sqrt()?,
        };
        Ok(Energies { energy, embedding, reconstruction })
    }
}

/// An EBGAN: generator under `generator.*`, discriminator under `discriminator.*`.
pub struct Ebgan {
    cfg: Config,
    varmap: VarMap,
    /// The hinge margin in use: the configuration's unless training adapts it.
    margin: f64,
    /// `G`.
    pub generator: Generator,
    /// `D`.
    pub discriminator: Discriminator,
}

impl ZooModel for Ebgan {
    const FAMILY: &'static str = "ebgan";
    type Config = Config;

    fn build(cfg: &Config, varmap: VarMap, vb: VarBuilder) -> Result<Self> {
        if cfg.image_size == 0 || !cfg.image_size.is_multiple_of(4) {
            bail!("EBGAN image size must be a positive multiple of 4, got {}", cfg.image_size);
        }
        Ok(Self {
            generator: Generator::new(cfg.latent_dim, &cfg.architecture, cfg.image_size, vb.pp("generator"))?,
            discriminator: Discriminator::new(cfg, vb.pp("discriminator"))?,
            margin: cfg.margin,
            cfg: cfg.clone(),
            varmap,
        })
    }
    fn config(&self) -> &Config {
        &self.cfg
    }
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }
}

impl Ebgan {
    /// Discriminator energies of images `x`, checking their shape.
    pub fn energies(&self, x: &Tensor, train: bool) -> Result<Energies> {
        self.check_images(x)?;
        self.discriminator.forward_t(x, self.cfg.energy, train)
    }

    /// Energies of generated images for the generator's update (training mode): through the
    /// discriminator with its weights held fixed ([`zoo_core::nn::fixed_var_builder`]), so the
    /// backward pass computes no gradient for them, which that update would not use. The
    /// generator's gradients are the same, and BatchNorm running statistics (with
    /// `d_batchnorm`) are updated as by [`Ebgan::energies`].
    pub fn generator_energies(&self, fake: &Tensor) -> Result<Energies> {
        self.check_images(fake)?;
        let vb = zoo_core::nn::fixed_var_builder(&self.varmap, "discriminator", fake.dtype(), fake.device());
        Discriminator::new(&self.cfg, vb)?.forward_t(fake, self.cfg.energy, true)
    }
}

impl Adversarial for Ebgan {
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
        let r = self.energies(step.real, true)?;
        let f = self.energies(fake, true)?;
        let loss = crate::loss::discriminator_loss(&r.energy, &f.energy, self.margin)?;
        let metrics = vec![
            ("loss_d".into(), scalar(&loss)?),
            ("energy_real".into(), scalar(&r.energy)?),
            ("energy_fake".into(), scalar(&f.energy)?),
        ];
        Ok((loss, metrics))
    }

    fn margin(&self) -> Option<f64> {
        Some(self.margin)
    }

    fn set_margin(&mut self, margin: f64) -> Result<()> {
        if !(margin.is_finite() && margin > 0.0) {
            bail!("an EBGAN margin must be a positive number, got {margin}");
        }
        self.margin = margin;
        Ok(())
    }

    fn generator_loss(&self, _step: &Batch, fake: &Tensor) -> Result<(Tensor, Metrics)> {
        let e = self.generator_energies(fake)?;
        let loss = crate::loss::generator_loss(&e.energy, &e.embedding, self.cfg.pt_weight)?;
        let pt = crate::loss::pulling_away_term(&e.embedding)?;
        Ok((loss.clone(), vec![("loss_g".into(), scalar(&loss)?), ("pulling_away".into(), scalar(&pt)?)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::{discriminator_loss, generator_loss};
    use candle_core::{DType, Device};
    use zoo_core::gradcheck::vars_without_gradient;
    use zoo_core::optim::{named_vars, Adam, AdamConfig, Optimizer};
    use zoo_core::ZooRng;
    use zoo_data::Mnist;

    fn model(cfg: &Config) -> Ebgan {
        let m = Ebgan::new(cfg, &Device::Cpu).unwrap();
        zoo_core::init::init_dcgan(m.varmap(), &mut ZooRng::new(0)).unwrap();
        m
    }

    /// `m` saved in a fresh temporary directory (kept alive by the returned guard).
    fn saved(m: &Ebgan) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ebgan.safetensors");
        m.save(&p).unwrap();
        (dir, p)
    }

    fn digits(n: usize) -> Tensor {
        let data = Mnist::bundled_train_subset().unwrap();
        data.batch(&(0..n).collect::<Vec<_>>(), &Device::Cpu).unwrap().0
    }

    #[test]
    fn one_step_reaches_every_variable_of_g_and_d() {
        let mut deep = Config::mnist_conv();
        if let Architecture::Conv { d_depth, .. } = &mut deep.architecture {
            *d_depth = 2;
        }
        let mut deep_bn = deep.clone();
        if let Architecture::Conv { d_encoder_batchnorm, .. } = &mut deep_bn.architecture {
            *d_encoder_batchnorm = true;
        }
        for cfg in [Config::mnist_conv(), deep, deep_bn, Config::paper_mnist_fc()] {
            let m = model(&cfg);
            let mut rng = ZooRng::new(1);
            let x = digits(8);
            let fake = m.generator.forward_t(&m.latents(8, &mut rng, &Device::Cpu).unwrap(), true).unwrap();
            let real = m.energies(&x, true).unwrap();
            let fake_d = m.energies(&fake.detach(), true).unwrap();
            let l_d = discriminator_loss(&real.energy, &fake_d.energy, cfg.margin).unwrap();
            let missing_d: Vec<String> = vars_without_gradient(m.varmap(), &l_d.backward().unwrap())
                .into_iter()
                .filter(|n| n.starts_with("discriminator."))
                .collect();
            assert_eq!(missing_d, Vec::<String>::new(), "{cfg:?}");
            let fake_g = m.energies(&fake, true).unwrap();
            let l_g = generator_loss(&fake_g.energy, &fake_g.embedding, cfg.pt_weight).unwrap();
            let missing_g: Vec<String> = vars_without_gradient(m.varmap(), &l_g.backward().unwrap())
                .into_iter()
                .filter(|n| n.starts_with("generator."))
                .collect();
            assert_eq!(missing_g, Vec::<String>::new(), "{cfg:?}");
            let deep_layers = m.varmap().data().lock().unwrap().keys().filter(|k| k.contains("_conv2.")).count();
            let expect = if matches!(cfg.architecture, Architecture::Conv { d_depth: 2, .. }) { 4 } else { 0 };
            assert_eq!(deep_layers, expect, "{cfg:?}");
        }
    }

    #[test]
    fn the_generator_update_through_the_fixed_discriminator_has_the_same_gradients() {
        let mut deep = Config::mnist_conv();
        if let Architecture::Conv { d_depth, code, .. } = &mut deep.architecture {
            *d_depth = 2;
            *code = 128;
        }
        let mut deep_bn = deep.clone();
        if let Architecture::Conv { d_encoder_batchnorm, .. } = &mut deep_bn.architecture {
            *d_encoder_batchnorm = true;
        }
        let mut with_bn = Config::mnist_conv();
        if let Architecture::Conv { d_batchnorm, .. } = &mut with_bn.architecture {
            *d_batchnorm = true;
        }
        for cfg in [Config::mnist_conv(), deep, deep_bn, with_bn, Config::paper_mnist_fc()] {
            let m = model(&cfg);
            let z = m.latents(8, &mut ZooRng::new(1), &Device::Cpu).unwrap();
            let fake = m.generator.forward_t(&z, true).unwrap();
            let loss = |e: Energies| generator_loss(&e.energy, &e.embedding, cfg.pt_weight).unwrap();
            let live = loss(m.energies(&fake, true).unwrap()).backward().unwrap();
            let fixed = loss(m.generator_energies(&fake).unwrap()).backward().unwrap();
            let wrong = zoo_core::gradcheck::fixed_pass_mismatches(m.varmap(), &live, &fixed, "generator.");
            assert_eq!(wrong, Vec::<String>::new(), "{cfg:?}");
        }
    }

    #[test]
    fn discriminator_steps_on_real_digits_lower_its_loss() {
        let cfg = Config::mnist_conv();
        let m = model(&cfg);
        let mut opt =
            Adam::new(named_vars(m.varmap(), "discriminator."), AdamConfig::new(2e-4).betas(0.5, 0.999)).unwrap();
        let x = digits(32);
        let z = m.latents(32, &mut ZooRng::new(2), &Device::Cpu).unwrap();
        let fake = m.generator.forward_t(&z, false).unwrap().detach();
        let loss = |m: &Ebgan| {
            let r = m.energies(&x, true).unwrap();
            let f = m.energies(&fake, true).unwrap();
            discriminator_loss(&r.energy, &f.energy, cfg.margin).unwrap()
        };
        let before = loss(&m).to_scalar::<f32>().unwrap();
        for _ in 0..10 {
            opt.step(&loss(&m).backward().unwrap()).unwrap();
        }
        let after = loss(&m).to_scalar::<f32>().unwrap();
        assert!(after < before, "L_D {before} -> {after}");
    }

    #[test]
    fn configs_without_a_depth_read_as_depth_1_and_bad_depths_are_refused() {
        // A config written before `d_depth` existed.
        let mut old = serde_json::to_value(Config::mnist_conv()).unwrap();
        old["architecture"].as_object_mut().unwrap().remove("d_depth").unwrap();
        let cfg: Config = serde_json::from_value(old).unwrap();
        assert!(matches!(cfg.architecture, Architecture::Conv { d_depth: 1, .. }), "{cfg:?}");
        let mut bad = Config::mnist_conv();
        if let Architecture::Conv { d_depth, .. } = &mut bad.architecture {
            *d_depth = 3;
        }
        let err = Ebgan::new(&bad, &Device::Cpu).err().expect("depth 3 must be refused").to_string();
        assert!(err.contains("depth must be 1 or 2, got 3"), "{err}");
        // The encoder's BatchNorm: absent from older configs, refused without a second convolution.
        let mut old = serde_json::to_value(Config::mnist_conv()).unwrap();
        old["architecture"].as_object_mut().unwrap().remove("d_encoder_batchnorm").unwrap();
        let cfg: Config = serde_json::from_value(old).unwrap();
        assert!(matches!(cfg.architecture, Architecture::Conv { d_encoder_batchnorm: false, .. }), "{cfg:?}");
        let mut shallow_bn = Config::mnist_conv();
        if let Architecture::Conv { d_encoder_batchnorm, .. } = &mut shallow_bn.architecture {
            *d_encoder_batchnorm = true;
        }
        let err = Ebgan::new(&shallow_bn, &Device::Cpu).err().expect("depth 1 with encoder BatchNorm").to_string();
        assert!(err.contains("needs depth 2, got depth 1"), "{err}");
    }

    #[test]
    fn recalibrated_statistics_match_the_generators_own_batches() {
        // Fresh running statistics (mean 0, variance 1) are far from the generator's; after
        // recalibration, evaluation mode on a large batch agrees with training mode (the batch's
        // own statistics) on the same latents, and the weights are unchanged.
        let m = model(&Config::mnist_conv());
        let z = m.latents(1000, &mut ZooRng::new(5), &Device::Cpu).unwrap();
        let gap = |m: &Ebgan| {
            let eval = m.generator.forward_t(&z, false).unwrap();
            let train = m.generator.forward_t(&z, true).unwrap();
            eval.sub(&train).unwrap().abs().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap()
        };
        let weights = |m: &Ebgan| {
            let data = m.varmap().data().lock().unwrap();
            let mut w: Vec<(String, Vec<f32>)> = data
                .iter()
                .filter(|(name, _)| name.starts_with("generator.") && !name.contains("running"))
                .map(|(name, v)| (name.clone(), v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()))
                .collect();
            w.sort_by(|a, b| a.0.cmp(&b.0));
            w
        };
        let (before, w0) = (gap(&m), weights(&m));
        // (`gap` ran the generator once in training mode: the statistics moved by one batch.)
        m.recalibrate_batch_norm(100, 100, &mut ZooRng::new(6), &Device::Cpu).unwrap();
        let after = gap(&m);
        eprintln!("gap before {before}, after {after}");
        assert!(before > 0.02 && after < before / 10.0, "mean |eval - train| before {before}, after {after}");
        assert_eq!(weights(&m), w0, "recalibration must leave the weights alone");
        let e = m.recalibrate_batch_norm(0, 500, &mut ZooRng::new(6), &Device::Cpu).err().unwrap().to_string();
        assert!(e.contains("at least one batch"), "{e}");
    }

    #[test]
    fn recalibrated_checkpoints_are_written_in_place_and_bad_inputs_refused() {
        let m = model(&Config::mnist_conv());
        let (dir, p) = saved(&m);
        crate::recalibrate_checkpoint::<Ebgan>(p.to_str().unwrap(), &p, (3, 20, 1), true).unwrap();
        let back = Ebgan::load(&p, &Device::Cpu).unwrap();
        let stats = |m: &Ebgan| {
            let data = m.varmap().data().lock().unwrap();
            data["generator.bn3.running_mean"].as_tensor().to_vec1::<f32>().unwrap()
        };
        // Fresh statistics are zeros; the generator's own are not.
        assert!(stats(&m).iter().all(|&v| v == 0.0));
        assert!(stats(&back).iter().any(|&v| v != 0.0), "the statistics were not re-measured");
        let meta = zoo_core::checkpoint::read_meta(&p).unwrap();
        assert_eq!(meta.family, "ebgan");
        // A checkpoint of another family, and a generator without BatchNorm.
        let (judge, _) = zoo_core::manifest::resolve_weights("judge-mnist").unwrap();
        let out = dir.path().join("x.safetensors");
        let e = format!(
            "{:#}",
            crate::recalibrate_checkpoint::<Ebgan>(judge.to_str().unwrap(), &out, (1, 2, 0), false).err().unwrap()
        );
        assert!(e.contains("'judge' family"), "{e}");
        assert!(!out.exists(), "nothing may be written for a refused checkpoint");
        let fc = model(&Config::paper_mnist_fc());
        let e = fc.recalibrate_batch_norm(1, 2, &mut ZooRng::new(0), &Device::Cpu).err().unwrap().to_string();
        assert!(e.contains("no BatchNorm layers"), "{e}");
    }

    #[test]
    fn save_load_is_bit_exact_and_bad_inputs_are_refused() {
        let m = model(&Config::mnist_conv());
        let (_dir, p) = saved(&m);
        let back = Ebgan::load(&p, &Device::Cpu).unwrap();
        let a = m.sample(4, &mut ZooRng::new(3), &Device::Cpu).unwrap();
        let b = back.sample(4, &mut ZooRng::new(3), &Device::Cpu).unwrap();
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let ea = m.energies(&digits(4), false).unwrap().energy.to_vec1::<f32>().unwrap();
        let eb = back.energies(&digits(4), false).unwrap().energy.to_vec1::<f32>().unwrap();
        assert_eq!(ea, eb);
        let wrong = Tensor::zeros((2, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
        let e = m.energies(&wrong, false).err().unwrap().to_string();
        assert!(e.contains("[batch, 1, 28, 28]") && e.contains("[2, 1, 32, 32]"), "{e}");
        let (judge, _) = zoo_core::manifest::resolve_weights("judge-mnist").unwrap();
        let e = format!("{:#}", Ebgan::load(&judge, &Device::Cpu).err().unwrap());
        assert!(e.contains("holds a checkpoint of the 'judge' family, not 'ebgan'"), "{e}");
    }
}
