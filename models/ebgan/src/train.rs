//! Adversarial training with the zoo-core kit: per step, one discriminator update on a real and a
//! generated batch, then one generator update on the same generated batch through the updated
//! discriminator.

use std::path::Path;

use std::io::Write;

use anyhow::{Context, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use zoo_core::checkpoint::{Checkpoint, SaveOptions};
use zoo_core::ema::Ema;
use zoo_core::optim::{named_vars, Adam, AdamConfig, Optimizer};
use zoo_core::train::{Metrics, TrainTask, TrainingState};
use zoo_core::ZooRng;
use zoo_data::{Batcher, Mnist};

use zoo_eval::gan::GanMetrics;
use zoo_eval::judge::Judge;

use crate::adversarial::{Adversarial, Batch};

/// The optimisation recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Mini-batch size (real and generated).
    pub batch_size: usize,
    /// Adam learning rate of the generator.
    pub lr_g: f64,
    /// Adam learning rate of the discriminator.
    pub lr_d: f64,
    /// Adam beta1 (0.5 as in DCGAN-style recipes).
    pub beta1: f64,
    /// Seed of initialisation, data order and latents.
    pub seed: u64,
    /// Decay of an exponential moving average of the generator's weights ([`Ema`]), e.g. 0.999;
    /// when set, sample grids, judge scores and [`Trainer::finish`] use the averaged generator.
    /// `None` (and recipes written before this field) train without one.
    #[serde(default)]
    pub ema: Option<f64>,
    /// Draw new latents for the generator's update instead of reusing the batch the
    /// discriminator was just trained on (the InfoGAN authors' code samples `z` afresh for each of
    /// the two updates; most DCGAN-style trainers reuse it). `false` (and recipes written before
    /// this field) reuse the batch: one generator forward per step.
    #[serde(default)]
    pub fresh_generator_latents: bool,
    /// Linear decay of both learning rates to zero ([`LinearDecay`]); `None` (and recipes written
    /// before this field) keep them constant.
    #[serde(default)]
    pub lr_decay: Option<LinearDecay>,
    /// How the weights start ([`WeightInit`]); recipes written before this field used DCGAN's.
    #[serde(default)]
    pub init: WeightInit,
    /// Adapt the discriminator's hinge margin to the energy of real data once per epoch
    /// ([`MarginAdaptation`]; models with a margin only). `false` (and recipes written before this
    /// field) keep the model's margin.
    #[serde(default)]
    pub margin_adaptation: bool,
    /// Raise both learning rates linearly from `1/n` of their base to the base over the first
    /// `n` steps ([`warmup_factor`]); 0 (and recipes written before this field) start at the base
    /// rates. Multiplies with [`TrainConfig::lr_decay`].
    #[serde(default)]
    pub lr_warmup: u64,
    /// Raise the generator's learning rate alone linearly from `1/n` of its base to the base over
    /// the first `n` steps ([`warmup_factor`]), the discriminator training at its own rate from
    /// the start; 0 (and recipes written before this field) start the generator at its base rate.
    /// Multiplies with [`TrainConfig::lr_warmup`] and [`TrainConfig::lr_decay`].
    #[serde(default)]
    pub generator_warmup: u64,
}

/// The factor on the base learning rate at 0-based `step` of a linear warm-up over `steps`
/// steps: `(step + 1) / steps` up to `steps`, then 1 (always 1 when `steps` is 0).
pub fn warmup_factor(steps: u64, step: u64) -> f64 {
    if step >= steps {
        1.0
    } else {
        (step + 1) as f64 / steps as f64
    }
}

/// Margin adaptation (MAGAN: Wang, Cully, Chang and Demiris, 2017): the hinge margin follows
/// the expected energy of real data. Over each epoch the discriminator's step sums the mean
/// energies of its real and generated batches; at the epoch's end the margin becomes the mean
/// real energy when all three of MAGAN's conditions hold: that energy is below the margin, the
/// real energies' sum is below the generated ones', and the generated ones' sum did not fall
/// since the previous epoch (so never after the first epoch). The margin only ever decreases.
///
/// Two choices differ from the MAGAN paper, which pre-trains the autoencoder on real data to set
/// the first margin and sums generated energies at the generator's step: the first margin is the
/// model's own (`--margin`), and both sums are taken at the discriminator's step, before its
/// update, on the same pair of batches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MarginAdaptation {
    /// The margin in use.
    pub margin: f64,
    sum_real: f64,
    sum_fake: f64,
    steps: u64,
    previous_sum_fake: Option<f64>,
}

impl MarginAdaptation {
    /// Starts from `margin`, with no epoch seen.
    pub fn new(margin: f64) -> Self {
        Self { margin, sum_real: 0.0, sum_fake: 0.0, steps: 0, previous_sum_fake: None }
    }

    /// Adds one step's mean energies of the real and the generated batch.
    pub fn observe(&mut self, energy_real: f64, energy_fake: f64) {
        self.sum_real += energy_real;
        self.sum_fake += energy_fake;
        self.steps += 1;
    }

    /// Closes an epoch: applies MAGAN's rule and starts new sums. Returns the new margin when it
    /// changed.
    pub fn end_epoch(&mut self) -> Option<f64> {
        if self.steps == 0 {
            return None;
        }
        let mean_real = self.sum_real / self.steps as f64;
        let update = mean_real < self.margin
            && self.sum_real < self.sum_fake
            && self.previous_sum_fake.is_some_and(|p| p <= self.sum_fake);
        self.previous_sum_fake = Some(self.sum_fake);
        (self.sum_real, self.sum_fake, self.steps) = (0.0, 0.0, 0);
        if update {
            self.margin = mean_real;
            Some(mean_real)
        } else {
            None
        }
    }
}

/// The weights' initialisation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeightInit {
    /// DCGAN's: conv and linear weights N(0, 0.02), norm gains N(1, 0.02), biases zero
    /// ([`zoo_core::init::init_dcgan`]).
    #[default]
    Dcgan,
    /// PyTorch's layer defaults: weights and biases `U(+-1/sqrt(fan_in))`, norm gains one
    /// ([`zoo_core::init::init_torch_default`]); what a port that never re-initialises gets.
    TorchDefault,
}

/// Learning rates held until step `start`, then lowered linearly to zero at step `end` (the
/// step count of the whole run), as in the linear decay of many GAN recipes (e.g. CycleGAN's
/// second half).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinearDecay {
    /// First step (0-based) whose rate is below the base rate.
    pub start: u64,
    /// Step at which the rate reaches zero; the run's last step is `end - 1`.
    pub end: u64,
}

impl LinearDecay {
    /// Checks that the decay starts before it ends.
    pub fn new(start: u64, end: u64) -> Result<Self> {
        anyhow::ensure!(start < end, "learning-rate decay must start (step {start}) before it ends (step {end})");
        Ok(Self { start, end })
    }

    /// The factor on the base learning rate at 0-based `step`: 1 up to `start`, then
    /// `(end - step) / (end - start)`, never below 0.
    pub fn factor(&self, step: u64) -> f64 {
        if step < self.start {
            1.0
        } else {
            self.end.saturating_sub(step) as f64 / (self.end - self.start) as f64
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            lr_g: 2e-4,
            lr_d: 2e-4,
            beta1: 0.5,
            seed: 0,
            ema: None,
            fresh_generator_latents: false,
            lr_decay: None,
            init: WeightInit::Dcgan,
            margin_adaptation: false,
            lr_warmup: 0,
            generator_warmup: 0,
        }
    }
}

impl TrainConfig {
    /// The InfoGAN authors' MNIST recipe: batch 128, Adam beta1 0.5, G at 1e-3, D (and Q) at 2e-4.
    pub fn infogan(seed: u64) -> Self {
        Self {
            batch_size: 128,
            lr_g: 1e-3,
            lr_d: 2e-4,
            beta1: 0.5,
            seed,
            ema: None,
            fresh_generator_latents: false,
            lr_decay: None,
            init: WeightInit::Dcgan,
            margin_adaptation: false,
            lr_warmup: 0,
            generator_warmup: 0,
        }
    }
}

/// Judge scores of the generator, written to `quality.jsonl` in the run directory at every
/// checkpoint, so a run shows whether its samples improve, not only its losses.
pub struct Monitor {
    judge: Judge,
    test: Mnist,
    train: Mnist,
    samples: usize,
}

impl Monitor {
    /// Scores `samples` generated images against the first 1,000 of `test` (and of `train` for the
    /// floor) with `judge`.
    pub fn new(judge: Judge, test: &Mnist, train: &Mnist, samples: usize) -> Result<Self> {
        let n = 1000.min(test.len()).min(train.len());
        Ok(Self { judge, test: test.subset(0..n)?, train: train.subset(0..n)?, samples })
    }

    /// The judge's metrics of `samples` generated images (latents from a fixed seed), and the
    /// model's own extra scores of them ([`Adversarial::monitor_extras`]).
    pub fn measure<M: Adversarial>(&self, model: &M, dev: &Device) -> Result<(GanMetrics, Metrics)> {
        let z = model.latents(self.samples, &mut ZooRng::derive(0, "monitor"), dev)?;
        let x = model.generate(&z)?;
        let metrics = zoo_eval::gan::gan_metrics(&self.judge, &x, &self.test, &self.train, 0)?;
        Ok((metrics, model.monitor_extras(&z, &x, &self.judge)?))
    }
}

/// One adversarial training run of an [`Ebgan`](crate::Ebgan) or a [`Gan`](crate::Gan).
pub struct Trainer<M: Adversarial> {
    /// The model being trained.
    pub model: M,
    /// The recipe.
    pub cfg: TrainConfig,
    data: Mnist,
    batcher: Batcher,
    opt_g: Adam,
    opt_d: Adam,
    latent_rng: ZooRng,
    dev: Device,
    monitor: Option<Monitor>,
    ema: Option<Ema>,
    adaptation: Option<MarginAdaptation>,
}

impl<M: Adversarial> Trainer<M> {
    /// A seeded run: the recipe's initialisation from the seed, one Adam per network.
    pub fn new(model_cfg: &M::Config, cfg: TrainConfig, data: Mnist, dev: &Device) -> Result<Self> {
        let model = M::new(model_cfg, dev)?;
        let mut rng = ZooRng::derive(cfg.seed, "init");
        match cfg.init {
            WeightInit::Dcgan => zoo_core::init::init_dcgan(model.varmap(), &mut rng)?,
            WeightInit::TorchDefault => zoo_core::init::init_torch_default(model.varmap(), &mut rng)?,
        };
        let adam = |lr: f64| AdamConfig::new(lr).betas(cfg.beta1, 0.999);
        let opt_g = Adam::new(named_vars(model.varmap(), "generator."), adam(cfg.lr_g))?;
        let opt_d = Adam::new(named_vars(model.varmap(), "discriminator."), adam(cfg.lr_d))?;
        let batcher = Batcher::new(data.len(), cfg.batch_size, cfg.seed, true)?;
        let ema = cfg.ema.map(|d| Ema::new(model.varmap(), "generator.", d)).transpose()?;
        let adaptation = Self::adaptation_for(&cfg, &model)?;
        Ok(Self {
            latent_rng: ZooRng::derive(cfg.seed, "latents"),
            model,
            cfg,
            data,
            batcher,
            opt_g,
            opt_d,
            dev: dev.clone(),
            monitor: None,
            ema,
            adaptation,
        })
    }

    /// The margin adaptation the recipe asks for, from the model's margin; refused for a model
    /// without one.
    fn adaptation_for(cfg: &TrainConfig, model: &M) -> Result<Option<MarginAdaptation>> {
        if !cfg.margin_adaptation {
            return Ok(None);
        }
        let m = model
            .margin()
            .with_context(|| format!("margin adaptation needs a model with a margin; {} has none", M::FAMILY))?;
        Ok(Some(MarginAdaptation::new(m)))
    }

    /// The discriminator's margin in use, for models that have one.
    pub fn margin(&self) -> Option<f64> {
        self.model.margin()
    }

    /// Scores the generator with `monitor` at every checkpoint (`quality.jsonl`).
    pub fn with_monitor(mut self, monitor: Monitor) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// The trained model, its generator replaced by the moving average when the recipe keeps one.
    pub fn finish(mut self) -> Result<M> {
        if let Some(ema) = &mut self.ema {
            ema.swap()?;
        }
        Ok(self.model)
    }

    /// Runs `f` on the model as it is evaluated: with the averaged generator when there is one.
    fn evaluated<T>(&mut self, f: impl FnOnce(&M, &Device) -> Result<T>) -> Result<T> {
        if let Some(ema) = &mut self.ema {
            ema.swap()?;
        }
        let out = f(&self.model, &self.dev);
        if let Some(ema) = &mut self.ema {
            ema.swap()?;
        }
        out
    }

    /// Number of training images.
    pub fn images(&self) -> usize {
        self.data.len()
    }

    /// Optimisation steps in `epochs` passes over the data.
    pub fn steps_for_epochs(&self, epochs: usize) -> u64 {
        (epochs * self.batcher.batches_per_epoch()) as u64
    }
}

impl<M: Adversarial> TrainTask for Trainer<M> {
    fn family(&self) -> &str {
        M::FAMILY
    }

    fn train_step(&mut self, step: u64) -> Result<Metrics> {
        if self.cfg.lr_decay.is_some() || self.cfg.lr_warmup > 0 || self.cfg.generator_warmup > 0 {
            let f = self.cfg.lr_decay.map_or(1.0, |d| d.factor(step)) * warmup_factor(self.cfg.lr_warmup, step);
            self.opt_g.set_learning_rate(self.cfg.lr_g * f * warmup_factor(self.cfg.generator_warmup, step));
            self.opt_d.set_learning_rate(self.cfg.lr_d * f);
        }
        let (x, y) = self.data.batch(&self.batcher.next_indices(), &self.dev)?;
        let z = self.model.latents(x.dim(0)?, &mut self.latent_rng, &self.dev)?;
        let fake = self.model.generator().forward_t(&z, true)?;
        let batch = Batch { real: &x, labels: &y, latents: &z };
        // Discriminator first, on the generated batch held fixed; then the generator, through the
        // updated discriminator, on the same batch (one generator forward per step) or on a new
        // one.
        let (l_d, mut metrics) = self.model.discriminator_loss(&batch, &fake.detach())?;
        self.opt_d.step(&l_d.backward()?)?;
        let (l_g, g_metrics) = if self.cfg.fresh_generator_latents {
            let z = self.model.latents(x.dim(0)?, &mut self.latent_rng, &self.dev)?;
            let fake = self.model.generator().forward_t(&z, true)?;
            self.model.generator_loss(&Batch { real: &x, labels: &y, latents: &z }, &fake)?
        } else {
            self.model.generator_loss(&batch, &fake)?
        };
        self.opt_g.step(&l_g.backward()?)?;
        if let Some(ema) = &mut self.ema {
            ema.update()?;
        }
        metrics.extend(g_metrics);
        if let Some(a) = &mut self.adaptation {
            let energy = |name: &str| {
                metrics.iter().find(|(k, _)| k == name).map(|(_, v)| *v).with_context(|| {
                    format!("margin adaptation needs the discriminator's {name}, which {} does not log", M::FAMILY)
                })
            };
            a.observe(energy("energy_real")?, energy("energy_fake")?);
            if (step + 1).is_multiple_of(self.batcher.batches_per_epoch() as u64) {
                if let Some(m) = a.end_epoch() {
                    self.model.set_margin(m)?;
                }
            }
            metrics.push(("margin".into(), a.margin));
        }
        Ok(metrics)
    }

    fn save_weights(&self, path: &Path, step: u64) -> Result<()> {
        self.model.save_with(path, &SaveOptions { step: Some(step), seed: Some(self.cfg.seed), storage: None })
    }

    fn training_state(&self) -> Result<TrainingState> {
        let mut s = TrainingState::new();
        s.put_optimizer("generator", &self.opt_g)?;
        s.put_optimizer("discriminator", &self.opt_d)?;
        s.put_rng("latents", &self.latent_rng)?;
        s.put("batcher", &self.batcher.position())?;
        s.put("recipe", &self.cfg)?;
        if let Some(ema) = &self.ema {
            ema.save_state(&mut s, "ema.generator")?;
        }
        if let Some(a) = &self.adaptation {
            s.put("margin_adaptation", a)?;
        }
        Ok(s)
    }

    fn on_checkpoint(&mut self, step: u64, run_dir: &Path) -> Result<()> {
        let seed = self.cfg.seed;
        let monitor = self.monitor.take();
        let result = self.evaluated(|model, dev| {
            // The same 64 latents at every checkpoint, so the grids show the generator's progress.
            let samples = model.sample(64, &mut ZooRng::derive(seed, "sample-grid"), dev)?;
            let grid = run_dir.join(format!("samples-{step:06}.png"));
            zoo_eval::picture::save_image_grid(&samples, 8, 2, 2, &grid)?;
            monitor.as_ref().map(|m| m.measure(model, dev)).transpose()
        });
        self.monitor = monitor;
        if let Some((m, extras)) = result? {
            let mut line = serde_json::to_value(&m)?;
            for (k, v) in extras {
                line[k] = v.into();
            }
            line["step"] = step.into();
            let path = run_dir.join("quality.jsonl");
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    fn restore(&mut self, weights: &Path, state: &TrainingState) -> Result<()> {
        let ck = Checkpoint::read(weights, &self.dev)?;
        ck.expect_family(M::FAMILY)?;
        ck.expect_config(self.model.config())?;
        ck.load_into(self.model.varmap())?;
        state.get_optimizer("generator", &mut self.opt_g)?;
        state.get_optimizer("discriminator", &mut self.opt_d)?;
        self.latent_rng = state.get_rng("latents")?;
        // The run's own recipe decides the data order, whatever this process was started with.
        self.cfg = state.get("recipe")?;
        self.batcher = Batcher::new(self.data.len(), self.cfg.batch_size, self.cfg.seed, true)?;
        self.batcher.set_position(state.get("batcher")?)?;
        // The average follows the run's recipe too.
        self.ema = self.cfg.ema.map(|d| Ema::new(self.model.varmap(), "generator.", d)).transpose()?;
        if let Some(ema) = &mut self.ema {
            ema.load_state(state, "ema.generator")?;
        }
        // So does the margin: the adapted one and the epoch's sums so far.
        self.adaptation = Self::adaptation_for(&self.cfg, &self.model)?;
        if self.adaptation.is_some() {
            let a: MarginAdaptation = state.get("margin_adaptation")?;
            self.model.set_margin(a.margin)?;
            self.adaptation = Some(a);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zoo_core::checkpoint::varmap_tensors;
    use zoo_core::train::{run, LoopConfig};

    use crate::adversarial::scalar;
    use crate::{Config, Ebgan};
    use zoo_core::checkpoint::ZooModel;

    fn trainer(seed: u64) -> Trainer<Ebgan> {
        trainer_with(seed, None)
    }

    fn trainer_with(seed: u64, ema: Option<f64>) -> Trainer<Ebgan> {
        let data = Mnist::bundled_train_subset().unwrap().subset(0..256).unwrap();
        let cfg = TrainConfig { batch_size: 16, seed, ema, ..Default::default() };
        Trainer::new(&Config::mnist_conv(), cfg, data, &Device::Cpu).unwrap()
    }

    fn weights(t: &Trainer<Ebgan>) -> Vec<Vec<f32>> {
        varmap_tensors(t.model.varmap()).iter().map(|(_, v)| v.flatten_all().unwrap().to_vec1().unwrap()).collect()
    }

    #[test]
    fn steps_are_finite_and_a_resumed_run_matches_a_straight_one() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = |d: &str, steps| LoopConfig {
            checkpoint_every: 2,
            progress: false,
            ..LoopConfig::new(dir.path().join(d), steps)
        };
        let mut straight = trainer(4);
        let before = weights(&straight);
        let s = run(&mut straight, &cfg("a", 4)).unwrap();
        assert!(s.last_metrics.iter().all(|(_, v)| v.is_finite()), "{:?}", s.last_metrics);
        assert_ne!(before, weights(&straight), "training changed nothing");
        let mut first = trainer(4);
        run(&mut first, &LoopConfig { stop_after: Some(2), ..cfg("b", 4) }).unwrap();
        let mut resumed = trainer(99);
        run(&mut resumed, &LoopConfig { resume: true, ..cfg("b", 4) }).unwrap();
        assert!(weights(&straight) == weights(&resumed), "the resumed run diverged");
    }

    #[test]
    fn linear_decay_holds_then_falls_to_zero() {
        let d = LinearDecay::new(4, 8).unwrap();
        let f: Vec<f64> = (0..10).map(|s| d.factor(s)).collect();
        assert_eq!(f, [1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]);
        assert!(LinearDecay::new(8, 8).is_err());
        // Recipes written before the field read as no decay.
        let old = r#"{"batch_size":64,"lr_g":0.0002,"lr_d":0.0002,"beta1":0.5,"seed":0}"#;
        assert_eq!(serde_json::from_str::<TrainConfig>(old).unwrap().lr_decay, None);
    }

    #[test]
    fn warmup_rises_linearly_then_holds() {
        let f: Vec<f64> = (0..6).map(|s| warmup_factor(4, s)).collect();
        assert_eq!(f, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
        assert_eq!(warmup_factor(0, 0), 1.0);
        let old = r#"{"batch_size":64,"lr_g":0.0002,"lr_d":0.0002,"beta1":0.5,"seed":0}"#;
        assert_eq!(serde_json::from_str::<TrainConfig>(old).unwrap().lr_warmup, 0);
        assert_eq!(serde_json::from_str::<TrainConfig>(old).unwrap().generator_warmup, 0);
    }

    #[test]
    fn the_generator_warmup_leaves_the_discriminator_at_its_rate() {
        let mut t = trainer(3);
        t.cfg.lr_g = 1e-3;
        t.cfg.lr_d = 2e-4;
        t.cfg.generator_warmup = 4;
        let mut rates = Vec::new();
        for step in 0..5 {
            t.train_step(step).unwrap();
            rates.push((t.opt_g.learning_rate(), t.opt_d.learning_rate()));
        }
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        for (step, (g, d)) in rates.into_iter().enumerate() {
            assert!(close(g, 1e-3 * warmup_factor(4, step as u64)), "step {step}: generator at {g}");
            assert!(close(d, 2e-4), "step {step}: discriminator at {d}");
        }
        // With both warm-ups the generator's factors multiply.
        t.cfg.lr_warmup = 10;
        t.train_step(1).unwrap();
        assert!(close(t.opt_g.learning_rate(), 1e-3 * 0.2 * 0.5));
        assert!(close(t.opt_d.learning_rate(), 2e-4 * 0.2));
    }

    #[test]
    fn the_recipe_chooses_the_initialisation() {
        let std_of = |init: WeightInit| -> f64 {
            let data = Mnist::bundled_train_subset().unwrap().subset(0..64).unwrap();
            let cfg = TrainConfig { batch_size: 16, init, ..Default::default() };
            let t = Trainer::<Ebgan>::new(&Config::mnist_conv(), cfg, data, &Device::Cpu).unwrap();
            let w = t.model.varmap().data().lock().unwrap()["discriminator.enc_conv.weight"].as_tensor().clone();
            let v: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
            (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
        };
        // The first conv has fan-in 1 x 4 x 4 = 16: PyTorch's U(+-1/4) has std 0.144, DCGAN's 0.02.
        let (dcgan, torch) = (std_of(WeightInit::Dcgan), std_of(WeightInit::TorchDefault));
        assert!((dcgan - 0.02).abs() < 0.005, "DCGAN init std {dcgan}");
        assert!((torch - 0.25 / 3f64.sqrt()).abs() < 0.03, "PyTorch default init std {torch}");
        // Recipes written before the field read as DCGAN's.
        let old = r#"{"batch_size":64,"lr_g":0.0002,"lr_d":0.0002,"beta1":0.5,"seed":0}"#;
        assert_eq!(serde_json::from_str::<TrainConfig>(old).unwrap().init, WeightInit::Dcgan);
    }

    #[test]
    fn a_decayed_rate_of_zero_stops_the_updates() {
        let trainable = |t: &Trainer<Ebgan>| -> Vec<(String, Vec<f32>)> {
            varmap_tensors(t.model.varmap())
                .iter()
                .filter(|(n, _)| !n.contains("running"))
                .map(|(n, v)| (n.clone(), v.flatten_all().unwrap().to_vec1().unwrap()))
                .collect()
        };
        let mut t = trainer(8);
        t.cfg.lr_decay = Some(LinearDecay::new(0, 2).unwrap());
        let before = trainable(&t);
        t.train_step(0).unwrap();
        let after_first = trainable(&t);
        assert_ne!(before, after_first, "step 0 runs at the full rate");
        t.train_step(1).unwrap();
        let after_second = trainable(&t);
        assert_ne!(after_first, after_second, "step 1 runs at half the rate");
        t.train_step(2).unwrap();
        assert_eq!(after_second, trainable(&t), "step 2 is at rate zero and still moved the weights");
    }

    #[test]
    fn fresh_generator_latents_change_only_the_generator_update() {
        let named = |t: &Trainer<Ebgan>| -> Vec<(String, Vec<f32>)> {
            varmap_tensors(t.model.varmap())
                .iter()
                .map(|(n, v)| (n.clone(), v.flatten_all().unwrap().to_vec1().unwrap()))
                .collect()
        };
        let mut reused = trainer(6);
        let mut fresh = trainer(6);
        fresh.cfg.fresh_generator_latents = true;
        assert_eq!(named(&reused), named(&fresh), "the same seed starts from the same weights");
        reused.train_step(0).unwrap();
        fresh.train_step(0).unwrap();
        let (a, b) = (named(&reused), named(&fresh));
        let (mut d_same, mut g_differs) = (0, 0);
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            if name.starts_with("discriminator.") {
                assert_eq!(x, y, "{name}: the discriminator's update must not depend on the option");
                d_same += 1;
            } else if name.starts_with("generator.") && x != y {
                g_differs += 1;
            }
        }
        assert!(d_same > 0, "no discriminator variables compared");
        assert!(g_differs > 0, "the generator's update ignored the fresh latents");
    }

    #[test]
    fn the_generator_average_resumes_exactly_and_is_what_finish_returns() {
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            |d: &str| LoopConfig { checkpoint_every: 2, progress: false, ..LoopConfig::new(dir.path().join(d), 4) };
        let mut straight = trainer_with(5, Some(0.9));
        run(&mut straight, &cfg("a")).unwrap();
        let flat = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Values, not tensors: the variables share storage with what varmap_tensors returns.
        let raw: Vec<(String, Vec<f32>)> =
            varmap_tensors(straight.model.varmap()).iter().map(|(n, t)| (n.clone(), flat(t))).collect();
        let mut first = trainer_with(5, Some(0.9));
        run(&mut first, &LoopConfig { stop_after: Some(2), ..cfg("b") }).unwrap();
        // A process started without the option still continues the run's own recipe.
        let mut resumed = trainer_with(77, None);
        run(&mut resumed, &LoopConfig { resume: true, ..cfg("b") }).unwrap();
        assert!(weights(&straight) == weights(&resumed), "the resumed run diverged");
        let averaged = varmap_tensors(straight.finish().unwrap().varmap());
        let again = varmap_tensors(resumed.finish().unwrap().varmap());
        let mut generator_changed = false;
        for (((name, r), (_, a)), (_, b)) in raw.iter().zip(&averaged).zip(&again) {
            assert_eq!(flat(a), flat(b), "{name}: the resumed average differs");
            if name.starts_with("generator.") {
                generator_changed |= *r != flat(a);
            } else {
                assert_eq!(*r, flat(a), "{name} is not the generator's but was averaged");
            }
        }
        assert!(generator_changed, "finish() returned the raw generator");
    }

    #[test]
    fn margin_adaptation_follows_magans_three_conditions() {
        let mut a = MarginAdaptation::new(1.0);
        assert_eq!(a.end_epoch(), None, "an epoch without steps changes nothing");
        // First epoch: real 0.4 < margin and below the generated energies, but no previous
        // epoch to compare the generated sum with.
        a.observe(0.3, 0.9);
        a.observe(0.5, 1.1);
        assert_eq!(a.end_epoch(), None);
        // Second: the generated sum (2.0) did not fall: the margin becomes the real mean.
        a.observe(0.2, 1.0);
        a.observe(0.4, 1.0);
        assert_eq!(a.end_epoch(), Some(0.30000000000000004));
        assert_eq!(a.margin, 0.30000000000000004);
        // Third: the generated sum fell (1.0 < 2.0): no update, though the other two hold.
        a.observe(0.1, 0.5);
        a.observe(0.1, 0.5);
        assert_eq!(a.end_epoch(), None);
        // Fourth: the real mean (0.35) is above the margin: no update.
        a.observe(0.35, 1.0);
        a.observe(0.35, 1.0);
        assert_eq!(a.end_epoch(), None);
        // Fifth: real energies above the generated ones: no update.
        a.observe(0.2, 0.1);
        a.observe(0.2, 0.1);
        assert_eq!(a.end_epoch(), None);
        // Sixth: all three hold again.
        a.observe(0.1, 0.3);
        a.observe(0.1, 0.3);
        assert_eq!(a.end_epoch(), Some(0.1));
        assert_eq!(a.margin, 0.1);
    }

    #[test]
    fn the_adapted_margin_is_used_logged_and_resumed_exactly() {
        // 32 digits in batches of 16: an epoch every two steps; the resume falls mid-epoch.
        let make = |seed: u64, adapt: bool| {
            let data = Mnist::bundled_train_subset().unwrap().subset(0..32).unwrap();
            let cfg = TrainConfig { batch_size: 16, seed, margin_adaptation: adapt, ..Default::default() };
            let mut model = Config::mnist_conv();
            model.margin = 8.0;
            let mut t = Trainer::<Ebgan>::new(&model, cfg, data, &Device::Cpu).unwrap();
            // A fresh autoencoder gives generated digits far lower energies than real ones, so
            // the rule would wait for many steps: a large generated sum and a previous epoch
            // below it make the first epoch's end adapt the margin.
            if let Some(a) = &mut t.adaptation {
                (a.sum_fake, a.previous_sum_fake) = (1e3, Some(-1e3));
            }
            t
        };
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            |d: &str| LoopConfig { checkpoint_every: 3, progress: false, ..LoopConfig::new(dir.path().join(d), 8) };
        let mut straight = make(2, true);
        let mut replay =
            MarginAdaptation { sum_fake: 1e3, previous_sum_fake: Some(-1e3), ..MarginAdaptation::new(8.0) };
        let mut margins = Vec::new();
        for step in 0..8 {
            let m = straight.train_step(step).unwrap();
            let get = |name: &str| m.iter().find(|(k, _)| k == name).map(|(_, v)| *v).unwrap();
            // The trainer's margin is the rule applied to the energies it logged, epoch by epoch.
            replay.observe(get("energy_real"), get("energy_fake"));
            if step % 2 == 1 {
                replay.end_epoch();
            }
            assert_eq!(get("margin"), replay.margin, "step {step}");
            assert_eq!(straight.margin(), Some(replay.margin), "the logged margin is not the one in use");
            margins.push(get("margin"));
        }
        // The first epoch's end took the real digits' mean energy (about 0.9 for a fresh
        // autoencoder on pixels in [-1, 1]).
        assert_eq!(margins[0], 8.0);
        assert!(margins[1] > 0.5 && margins[1] < 1.0, "{margins:?}");
        let mut looped = make(2, true);
        run(&mut looped, &cfg("a")).unwrap();
        let mut first = make(2, true);
        run(&mut first, &LoopConfig { stop_after: Some(3), ..cfg("b") }).unwrap();
        // Started without the option, the resumed process follows the run's recipe.
        let mut resumed = make(50, false);
        run(&mut resumed, &LoopConfig { resume: true, ..cfg("b") }).unwrap();
        assert_eq!(resumed.margin(), looped.margin());
        assert_ne!(resumed.margin(), Some(8.0), "the resumed run lost the adapted margin");
        assert!(weights(&looped) == weights(&resumed), "the resumed run diverged");
        assert!(weights(&looped) == weights(&straight), "the loop and the steps differ");
        // The discriminator's loss uses the adapted margin (last: the generator's forward in
        // training mode moves its BatchNorm statistics).
        let x = Mnist::bundled_train_subset().unwrap().batch(&[0, 1, 2, 3], &Device::Cpu).unwrap().0;
        let z = straight.model.latents(4, &mut ZooRng::new(1), &Device::Cpu).unwrap();
        let fake = straight.model.generator().forward_t(&z, true).unwrap().detach();
        let batch = Batch { real: &x, labels: &x, latents: &z };
        let loss = scalar(&straight.model.discriminator_loss(&batch, &fake).unwrap().0).unwrap();
        let (r, f) = (straight.model.energies(&x, true).unwrap(), straight.model.energies(&fake, true).unwrap());
        let expected = scalar(&crate::loss::discriminator_loss(&r.energy, &f.energy, margins[7]).unwrap()).unwrap();
        assert!((loss - expected).abs() < 1e-6, "loss {loss}, with the adapted margin {expected}");
        // Without adaptation the margin stays, and a model without one is refused.
        let mut fixed = make(2, false);
        for step in 0..4 {
            assert!(fixed.train_step(step).unwrap().iter().all(|(k, _)| k != "margin"));
        }
        assert_eq!(fixed.margin(), Some(8.0));
        let data = Mnist::bundled_train_subset().unwrap().subset(0..32).unwrap();
        let cfg = TrainConfig { batch_size: 16, margin_adaptation: true, ..Default::default() };
        let e = Trainer::<crate::Gan>::new(&crate::GanConfig::mnist_conv(), cfg, data, &Device::Cpu).err().unwrap();
        assert!(format!("{e:#}").contains("margin adaptation needs a model with a margin; gan has none"), "{e:#}");
    }

    #[test]
    fn resuming_with_another_model_configuration_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let lc = LoopConfig { checkpoint_every: 1, progress: false, ..LoopConfig::new(dir.path(), 2) };
        run(&mut trainer(3), &LoopConfig { stop_after: Some(1), ..lc.clone() }).unwrap();
        let mut deeper = Config::mnist_conv();
        if let crate::Architecture::Conv { d_depth, .. } = &mut deeper.architecture {
            *d_depth = 2;
        }
        let data = Mnist::bundled_train_subset().unwrap().subset(0..256).unwrap();
        let cfg = TrainConfig { batch_size: 16, seed: 3, ..Default::default() };
        let mut other = Trainer::<Ebgan>::new(&deeper, cfg, data, &Device::Cpu).unwrap();
        let e = format!("{:#}", run(&mut other, &LoopConfig { resume: true, ..lc.clone() }).unwrap_err());
        assert!(e.contains("resume with the options the run was started with"), "{e}");
        // With its own configuration the run continues.
        run(&mut trainer(3), &LoopConfig { resume: true, ..lc }).unwrap();
    }
}
