//! What the shared adversarial training loop needs from a model: a generator, latents, and the
//! two players' losses. [`crate::Ebgan`] and its baseline [`crate::Gan`] implement it, so both
//! are trained by the same [`crate::Trainer`] with the same budget.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use zoo_core::checkpoint::ZooModel;
use zoo_core::train::Metrics;
use zoo_core::ZooRng;

use crate::Generator;

/// Loads the checkpoint `id_or_path` (manifest id or path) of `M`, re-measures its generator's
/// BatchNorm statistics ([`Adversarial::recalibrate_batch_norm`]: `batches` passes of
/// `batch_size` latents drawn with `seed`) and writes it to `out` with its step and seed, in f16
/// storage when `f16` is set.
pub fn recalibrate_checkpoint<M: Adversarial>(
    id_or_path: &str,
    out: &std::path::Path,
    (batches, batch_size, seed): (usize, usize, u64),
    f16: bool,
) -> Result<()> {
    let dev = Device::Cpu;
    let (path, _) = zoo_core::manifest::resolve_weights(id_or_path)?;
    let meta = zoo_core::checkpoint::read_meta(&path)?;
    let model = M::load(&path, &dev)?;
    model.recalibrate_batch_norm(batches, batch_size, &mut ZooRng::new(seed), &dev)?;
    let storage = f16.then_some(DType::F16);
    model.save_with(out, &zoo_core::checkpoint::SaveOptions { step: meta.step, seed: meta.seed, storage })
}

/// What a training step's losses see besides the generated batch.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Real images `[B, 1, S, S]` in `[0, 1]`.
    pub real: &'a Tensor,
    /// Their labels `[B]` (u32), for class-conditional models.
    pub labels: &'a Tensor,
    /// The generator's input of this step (from [`Adversarial::latents`]), codes included.
    pub latents: &'a Tensor,
}

/// A generator/discriminator pair with its objective.
pub trait Adversarial: ZooModel {
    /// The generator `G(z)`.
    fn generator(&self) -> &Generator;
    /// Dimension of the latent `z ~ U(-1, 1)`.
    fn latent_dim(&self) -> usize;
    /// Side of the square greyscale images.
    fn image_size(&self) -> usize;
    /// The discriminator's loss on the step's real batch and its generated batch `fake` (already
    /// detached from G), with the metrics worth logging (the loss included, as `loss_d`).
    fn discriminator_loss(&self, step: &Batch, fake: &Tensor) -> Result<(Tensor, Metrics)>;
    /// The generator's loss on the step's generated batch, with the metrics worth logging
    /// (`loss_g` first).
    fn generator_loss(&self, step: &Batch, fake: &Tensor) -> Result<(Tensor, Metrics)>;

    /// The generator's input for `n` samples, `[n, latent_dim]` from `rng`: by default
    /// `z ~ U(-1, 1)`; models with codes or class labels append them here.
    fn latents(&self, n: usize, rng: &mut ZooRng, dev: &Device) -> Result<Tensor> {
        rng.uniform((n, self.latent_dim()), -1.0, 1.0, DType::F32, dev)
    }

    /// `n` samples in evaluation mode, `[n, 1, S, S]` in `[0, 1]`.
    fn sample(&self, n: usize, rng: &mut ZooRng, dev: &Device) -> Result<Tensor> {
        let z = self.latents(n, rng, dev)?;
        self.generator().forward_t(&z, false)
    }

    /// Re-measures the generator's BatchNorm running statistics on its own output ("standing
    /// statistics", Brock et al. 2019): `batches` forward passes in training mode on fresh
    /// latents of `batch_size` from `rng`, each folding its batch's statistics into the running
    /// ones with the layers' momentum (0.1: after 100 passes the old statistics weigh 0.9^100).
    /// The weights are untouched. Worth doing on an averaged generator ([`zoo_core::ema::Ema`]),
    /// whose averaged statistics were measured on other weights than the averaged ones.
    fn recalibrate_batch_norm(&self, batches: usize, batch_size: usize, rng: &mut ZooRng, dev: &Device) -> Result<()> {
        if batches == 0 || batch_size < 2 {
            bail!("recalibration needs at least one batch of at least 2 latents, got {batches} of {batch_size}");
        }
        let has_batch_norm = self
            .varmap()
            .data()
            .lock()
            .expect("variable map lock poisoned")
            .keys()
            .any(|name| name.starts_with("generator.") && name.ends_with(".running_mean"));
        if !has_batch_norm {
            bail!("this {} generator has no BatchNorm layers: there are no statistics to recalibrate", Self::FAMILY);
        }
        for _ in 0..batches {
            let z = self.latents(batch_size, rng, dev)?;
            self.generator().forward_t(&z, true)?;
        }
        Ok(())
    }

    /// `G(z)` in evaluation mode for given latents `[n, latent]`, checking their shape.
    fn generate(&self, z: &Tensor) -> Result<Tensor> {
        match z.dims() {
            [_, d] if *d == self.latent_dim() => self.generator().forward_t(z, false),
            d => bail!("{} takes latents of shape [n, {}], got {d:?}", Self::FAMILY, self.latent_dim()),
        }
    }

    /// Scores beyond the shared GAN metrics that the training monitor adds to `quality.jsonl`
    /// (e.g. InfoGAN's code accuracy), for the monitor's samples `x = G(z)` and `judge`. None by
    /// default.
    fn monitor_extras(&self, _z: &Tensor, _x: &Tensor, _judge: &zoo_eval::judge::Judge) -> Result<Metrics> {
        Ok(Vec::new())
    }

    /// The discriminator's hinge margin, for models whose objective has one (EBGAN); `None` (the
    /// default) for the others.
    fn margin(&self) -> Option<f64> {
        None
    }

    /// Sets the hinge margin that later discriminator losses use (margin adaptation,
    /// [`crate::MarginAdaptation`]); the model's configuration keeps the margin it was built
    /// with. Refused by models without a margin (the default).
    fn set_margin(&mut self, margin: f64) -> Result<()> {
        bail!("{} has no margin to set (asked for {margin})", Self::FAMILY)
    }

    /// Refuses images that are not `[B, 1, S, S]`.
    fn check_images(&self, x: &Tensor) -> Result<()> {
        let s = self.image_size();
        match x.dims() {
            [_, 1, h, w] if *h == s && *w == s => Ok(()),
            d => bail!("{} takes images of shape [batch, 1, {s}, {s}] with values in [0, 1], got {d:?}", Self::FAMILY),
        }
    }
}

/// One training step's losses on `n` bundled MNIST digits, then the variables each player's
/// loss leaves without a gradient: `(discriminator.* without a gradient from L_D, generator.*
/// without a gradient from L_G)`; both are empty for a correctly wired model. The losses'
/// metrics must be finite.
pub fn players_without_gradient<M: Adversarial>(model: &M, n: usize, seed: u64) -> Result<(Vec<String>, Vec<String>)> {
    let dev = Device::Cpu;
    let data = zoo_data::Mnist::bundled_train_subset()?;
    let (x, y) = data.batch(&(0..n).collect::<Vec<_>>(), &dev)?;
    let z = model.latents(n, &mut ZooRng::new(seed), &dev)?;
    let fake = model.generator().forward_t(&z, true)?;
    let batch = Batch { real: &x, labels: &y, latents: &z };
    let missing = |loss: &Tensor, metrics: &Metrics, prefix: &str| -> Result<Vec<String>> {
        if let Some((k, v)) = metrics.iter().find(|(_, v)| !v.is_finite()) {
            bail!("metric {k} is {v}");
        }
        let grads = loss.backward()?;
        Ok(zoo_core::gradcheck::vars_without_gradient(model.varmap(), &grads)
            .into_iter()
            .filter(|name| name.starts_with(prefix))
            .collect())
    };
    let (l_d, m_d) = model.discriminator_loss(&batch, &fake.detach())?;
    let (l_g, m_g) = model.generator_loss(&batch, &fake)?;
    Ok((missing(&l_d, &m_d, "discriminator.")?, missing(&l_g, &m_g, "generator.")?))
}

/// The mean of a tensor as an `f64`, for logging.
pub fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.mean_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// A trained generator of either family of this crate, chosen by the checkpoint's metadata.
// One is held per loaded checkpoint, beside megabytes of weights: boxing saves nothing worth it.
#[allow(clippy::large_enum_variant)]
pub enum AnyModel {
    /// An energy-based GAN.
    Ebgan(crate::Ebgan),
    /// The GAN baseline.
    Gan(crate::Gan),
}

impl AnyModel {
    /// Loads a manifest id or a checkpoint path holding an `ebgan` or a `gan` checkpoint.
    pub fn from_pretrained(weights: &str, dev: &Device) -> Result<Self> {
        let (path, _) = zoo_core::manifest::resolve_weights(weights)?;
        let meta = zoo_core::checkpoint::read_meta(&path)?;
        Ok(match meta.family.as_str() {
            f if f == crate::Ebgan::FAMILY => AnyModel::Ebgan(crate::Ebgan::load(&path, dev)?),
            f if f == crate::Gan::FAMILY => AnyModel::Gan(crate::Gan::load(&path, dev)?),
            other => bail!("{} holds a checkpoint of the '{other}' family, expected 'ebgan' or 'gan'", path.display()),
        })
    }

    /// The family name (`ebgan` or `gan`).
    pub fn family(&self) -> &'static str {
        match self {
            AnyModel::Ebgan(_) => crate::Ebgan::FAMILY,
            AnyModel::Gan(_) => crate::Gan::FAMILY,
        }
    }

    /// Latents `[n, latent]` from `rng`.
    pub fn latents(&self, n: usize, rng: &mut ZooRng, dev: &Device) -> Result<Tensor> {
        match self {
            AnyModel::Ebgan(m) => m.latents(n, rng, dev),
            AnyModel::Gan(m) => m.latents(n, rng, dev),
        }
    }

    /// `G(z)` in evaluation mode.
    pub fn generate(&self, z: &Tensor) -> Result<Tensor> {
        match self {
            AnyModel::Ebgan(m) => m.generate(z),
            AnyModel::Gan(m) => m.generate(z),
        }
    }

    /// Re-measures the generator's BatchNorm statistics on its own output
    /// ([`Adversarial::recalibrate_batch_norm`]).
    pub fn recalibrate_batch_norm(
        &self,
        batches: usize,
        batch_size: usize,
        rng: &mut ZooRng,
        dev: &Device,
    ) -> Result<()> {
        match self {
            AnyModel::Ebgan(m) => m.recalibrate_batch_norm(batches, batch_size, rng, dev),
            AnyModel::Gan(m) => m.recalibrate_batch_norm(batches, batch_size, rng, dev),
        }
    }

    /// `n` samples in evaluation mode, generated in chunks of 500.
    pub fn sample(&self, n: usize, rng: &mut ZooRng, dev: &Device) -> Result<Tensor> {
        let mut chunks = Vec::new();
        for start in (0..n).step_by(500) {
            chunks.push(self.generate(&self.latents(500.min(n - start), rng, dev)?)?);
        }
        if chunks.is_empty() {
            bail!("asked for 0 samples");
        }
        Ok(Tensor::cat(&chunks, 0)?)
    }

    /// A latent interpolation grid: `rows` pairs of random end points, each joined by `steps`
    /// evenly spaced latents (end points included), as images `[rows * steps, 1, S, S]` in row order.
    pub fn interpolation(&self, rows: usize, steps: usize, rng: &mut ZooRng, dev: &Device) -> Result<Tensor> {
        if rows == 0 || steps < 2 {
            bail!("an interpolation needs at least 1 row and 2 steps, got {rows} rows and {steps} steps");
        }
        let a = self.latents(rows, rng, dev)?;
        let b = self.latents(rows, rng, dev)?;
        let mut zs = Vec::with_capacity(rows * steps);
        for r in 0..rows {
            let (za, zb) = (a.get(r)?, b.get(r)?);
            for s in 0..steps {
                let t = s as f64 / (steps - 1) as f64;
                zs.push(((&za * (1.0 - t))? + (&zb * t)?)?);
            }
        }
        self.generate(&Tensor::stack(&zs, 0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Ebgan, Gan, GanConfig};

    #[test]
    fn any_model_loads_either_family_and_refuses_others() {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().unwrap();
        let (pe, pg) = (dir.path().join("e.safetensors"), dir.path().join("g.safetensors"));
        let e = Ebgan::new(&Config::mnist_conv(), &dev).unwrap();
        e.save(&pe).unwrap();
        Gan::new(&GanConfig::mnist_conv(), &dev).unwrap().save(&pg).unwrap();
        let le = AnyModel::from_pretrained(pe.to_str().unwrap(), &dev).unwrap();
        let lg = AnyModel::from_pretrained(pg.to_str().unwrap(), &dev).unwrap();
        assert_eq!((le.family(), lg.family()), ("ebgan", "gan"));
        // Same latents, same images as the model that was saved.
        let z = e.latents(3, &mut ZooRng::new(5), &dev).unwrap();
        let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(le.generate(&z).unwrap()), flat(e.generate(&z).unwrap()));
        assert_eq!(le.sample(7, &mut ZooRng::new(0), &dev).unwrap().dims(), &[7, 1, 28, 28]);
        assert!(le.sample(0, &mut ZooRng::new(0), &dev).is_err());
        let err = format!("{:#}", AnyModel::from_pretrained("judge-mnist", &dev).err().unwrap());
        assert!(err.contains("holds a checkpoint of the 'judge' family, expected 'ebgan' or 'gan'"), "{err}");
    }

    #[test]
    fn interpolation_rows_run_between_their_end_points() {
        let dev = Device::Cpu;
        let e = Ebgan::new(&Config::mnist_conv(), &dev).unwrap();
        zoo_core::init::init_dcgan(e.varmap(), &mut ZooRng::new(0)).unwrap();
        let m = AnyModel::Ebgan(e);
        let grid = m.interpolation(2, 5, &mut ZooRng::new(9), &dev).unwrap();
        assert_eq!(grid.dims(), &[10, 1, 28, 28]);
        // The first and last image of each row are G at the row's end points.
        let mut rng = ZooRng::new(9);
        let (a, b) = (m.latents(2, &mut rng, &dev).unwrap(), m.latents(2, &mut rng, &dev).unwrap());
        let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let ends = m
            .generate(
                &Tensor::cat(&[a.get(1).unwrap().unsqueeze(0).unwrap(), b.get(1).unwrap().unsqueeze(0).unwrap()], 0)
                    .unwrap(),
            )
            .unwrap();
        let got =
            Tensor::cat(&[grid.get(5).unwrap().unsqueeze(0).unwrap(), grid.get(9).unwrap().unsqueeze(0).unwrap()], 0)
                .unwrap();
        let (x, y) = (flat(ends), flat(got));
        assert!(x.iter().zip(&y).all(|(p, q)| (p - q).abs() < 1e-5));
        assert!(m.interpolation(1, 1, &mut ZooRng::new(0), &dev).is_err());
    }
}
