//! The generator and the autoencoder discriminator.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Module, ModuleT, Tensor, D};
use candle_nn::{BatchNorm, BatchNormConfig, ConvTranspose2dConfig, Linear, VarBuilder, VarMap};
use zoo_core::checkpoint::ZooModel;
use zoo_core::nn::{Conv2d, ConvTranspose2d};
use zoo_core::ZooRng;

use crate::config::{Architecture, Config, Energy};

fn up2x(in_c: usize, out_c: usize, vb: VarBuilder) -> Result<ConvTranspose2d> {
    let cfg = ConvTranspose2dConfig { padding: 1, stride: 2, output_padding: 0, dilation: 1 };
    Ok(zoo_core::nn::conv_transpose2d(in_c, out_c, 4, cfg, vb)?)
}

fn bn(c: usize, vb: VarBuilder) -> Result<BatchNorm> {
    Ok(candle_nn::batch_norm(c, BatchNormConfig::default(), vb)?)
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
        /// The three layers.
        layers: [Linear; 3],
        /// Image side.
        side: usize,
    },
}

impl Generator {
    /// Builds the generator of `cfg` under `vb`.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let s = cfg.image_size;
        Ok(match cfg.architecture {
            Architecture::Conv { g_hidden, .. } => {
                let side = s / 4;
                Generator::Conv {
                    fc1: candle_nn::linear(cfg.latent_dim, g_hidden, vb.pp("fc1"))?,
                    bn1: bn(g_hidden, vb.pp("bn1"))?,
                    fc2: candle_nn::linear(g_hidden, 128 * side * side, vb.pp("fc2"))?,
                    bn2: bn(128 * side * side, vb.pp("bn2"))?,
                    up1: up2x(128, 64, vb.pp("up1"))?,
                    bn3: bn(64, vb.pp("bn3"))?,
                    up2: up2x(64, 1, vb.pp("up2"))?,
                    side,
                }
            }
            Architecture::FullyConnected { hidden, .. } => Generator::FullyConnected {
                layers: [
                    candle_nn::linear(cfg.latent_dim, hidden, vb.pp("fc1"))?,
                    candle_nn::linear(hidden, hidden, vb.pp("fc2"))?,
                    candle_nn::linear(hidden, s * s, vb.pp("fc3"))?,
                ],
                side: s,
            },
        })
    }

    /// `G(z)` for `z` `[B, latent]`; `train` switches BatchNorm to batch statistics.
    pub fn forward_t(&self, z: &Tensor, train: bool) -> Result<Tensor> {
        let b = z.dim(0)?;
        Ok(match self {
            Generator::Conv { fc1, bn1, fc2, bn2, up1, bn3, up2, side } => {
                let h = bn1.forward_t(&fc1.forward(z)?, train)?.relu()?;
                let h = bn2.forward_t(&fc2.forward(&h)?, train)?.relu()?;
                let h = h.reshape((b, 128, *side, *side))?;
                let h = bn3.forward_t(&up1.forward(&h)?, train)?.relu()?;
                candle_nn::ops::sigmoid(&up2.forward(&h)?)?
            }
            Generator::FullyConnected { layers, side } => {
                let h = layers[0].forward(z)?.relu()?;
                let h = layers[1].forward(&h)?.relu()?;
                candle_nn::ops::sigmoid(&layers[2].forward(&h)?)?.reshape((b, 1, *side, *side))?
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
    /// Reconstruction `[B, 1, S, S]`.
    pub reconstruction: Tensor,
}

/// The autoencoder discriminator: `D(x)` is the reconstruction error of `x`.
#[allow(clippy::large_enum_variant)]
pub enum Discriminator {
    /// Convolutional encoder/decoder.
    Conv {
        /// `1 -> channels`, halving the side.
        enc_conv: Conv2d,
        /// `channels (S/2)^2 -> code`.
        enc_fc: Linear,
        /// `code -> channels (S/2)^2`.
        dec_fc: Linear,
        /// `channels -> 1`, doubling the side.
        dec_conv: ConvTranspose2d,
        /// Channels.
        channels: usize,
    },
    /// Fully-connected encoder/decoder.
    FullyConnected {
        /// Encoder: `S^2 -> hidden -> code`.
        encoder: [Linear; 2],
        /// Decoder: `code -> hidden -> S^2`.
        decoder: [Linear; 2],
    },
}

impl Discriminator {
    /// Builds the discriminator of `cfg` under `vb`.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let s = cfg.image_size;
        Ok(match cfg.architecture {
            Architecture::Conv { d_channels, code, .. } => {
                let flat = d_channels * (s / 2) * (s / 2);
                let conv = candle_nn::Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
                Discriminator::Conv {
                    enc_conv: zoo_core::nn::conv2d(1, d_channels, 4, conv, vb.pp("enc_conv"))?,
                    enc_fc: candle_nn::linear(flat, code, vb.pp("enc_fc"))?,
                    dec_fc: candle_nn::linear(code, flat, vb.pp("dec_fc"))?,
                    dec_conv: up2x(d_channels, 1, vb.pp("dec_conv"))?,
                    channels: d_channels,
                }
            }
            Architecture::FullyConnected { hidden, code } => Discriminator::FullyConnected {
                encoder: [
                    candle_nn::linear(s * s, hidden, vb.pp("enc1"))?,
                    candle_nn::linear(hidden, code, vb.pp("enc2"))?,
                ],
                decoder: [
                    candle_nn::linear(code, hidden, vb.pp("dec1"))?,
                    candle_nn::linear(hidden, s * s, vb.pp("dec2"))?,
                ],
            },
        })
    }

    /// Energies, embeddings and reconstructions of images `x` `[B, 1, S, S]`. The autoencoder has
    /// no BatchNorm, so the train flag changes nothing today; it is kept so that every network of
    /// the zoo is called the same way.
    pub fn forward_t(&self, x: &Tensor, energy: Energy, _train: bool) -> Result<Energies> {
        let (b, _, h, w) = x.dims4()?;
        let (embedding, reconstruction) = match self {
            Discriminator::Conv { enc_conv, enc_fc, dec_fc, dec_conv, channels } => {
                // No BatchNorm in the autoencoder: with separate real and generated batches, it
                // would let D reconstruct a collapsed (constant) generated batch perfectly.
                let e = enc_conv.forward(x)?.relu()?.flatten_from(1)?;
                let code = enc_fc.forward(&e)?;
                let d = dec_fc.forward(&code)?.relu()?;
                let d = d.reshape((b, *channels, h / 2, w / 2))?;
                (code, candle_nn::ops::sigmoid(&dec_conv.forward(&d)?)?)
            }
            Discriminator::FullyConnected { encoder, decoder } => {
                let code = encoder[1].forward(&encoder[0].forward(&x.flatten_from(1)?)?.relu()?)?;
                let d = decoder[1].forward(&decoder[0].forward(&code)?.relu()?)?;
                (code, candle_nn::ops::sigmoid(&d)?.reshape((b, 1, h, w))?)
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
    /// `G`.
    pub generator: Generator,
    /// `D`.
    pub discriminator: Discriminator,
}

impl ZooModel for Ebgan {
    const FAMILY: &'static str = "ebgan";
    type Config = Config;

    fn build(cfg: &Config, varmap: VarMap, vb: VarBuilder) -> Result<Self> {
        if cfg.image_size == 0 || cfg.image_size % 4 != 0 {
            bail!("EBGAN image size must be a positive multiple of 4, got {}", cfg.image_size);
        }
        Ok(Self {
            generator: Generator::new(cfg, vb.pp("generator"))?,
            discriminator: Discriminator::new(cfg, vb.pp("discriminator"))?,
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
    /// Latents `z ~ U(-1, 1)` `[n, latent]` from `rng`.
    pub fn latents(&self, n: usize, rng: &mut ZooRng, dev: &Device) -> Result<Tensor> {
        rng.uniform((n, self.cfg.latent_dim), -1.0, 1.0, DType::F32, dev)
    }

    /// `n` samples in evaluation mode, `[n, 1, S, S]` in `[0, 1]`.
    pub fn sample(&self, n: usize, rng: &mut ZooRng, dev: &Device) -> Result<Tensor> {
        let z = self.latents(n, rng, dev)?;
        self.generator.forward_t(&z, false)
    }

    /// Discriminator energies of images `x`, checking their shape.
    pub fn energies(&self, x: &Tensor, train: bool) -> Result<Energies> {
        let s = self.cfg.image_size;
        match x.dims() {
            [_, 1, h, w] if *h == s && *w == s => self.discriminator.forward_t(x, self.cfg.energy, train),
            d => bail!("EBGAN takes images of shape [batch, 1, {s}, {s}] with values in [0, 1], got {d:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::{discriminator_loss, generator_loss};
    use zoo_core::gradcheck::vars_without_gradient;
    use zoo_core::optim::{named_vars, Adam, AdamConfig, Optimizer};
    use zoo_data::Mnist;

    fn model(cfg: &Config) -> Ebgan {
        let m = Ebgan::new(cfg, &Device::Cpu).unwrap();
        zoo_core::init::init_dcgan(m.varmap(), &mut ZooRng::new(0)).unwrap();
        m
    }

    fn digits(n: usize) -> Tensor {
        let data = Mnist::bundled_train_subset().unwrap();
        data.batch(&(0..n).collect::<Vec<_>>(), &Device::Cpu).unwrap().0
    }

    #[test]
    fn one_step_reaches_every_variable_of_g_and_d() {
        for cfg in [Config::mnist_conv(), Config::paper_mnist_fc()] {
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
    fn save_load_is_bit_exact_and_bad_inputs_are_refused() {
        let m = model(&Config::mnist_conv());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ebgan.safetensors");
        m.save(&p).unwrap();
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
        assert!(e.contains("is a 'judge' checkpoint, not a 'ebgan' one"), "{e}");
    }
}
