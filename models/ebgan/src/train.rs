//! Training EBGAN with the zoo-core kit: per step, one discriminator update on a real and a
//! generated batch, then one generator update on a fresh generated batch.

use std::path::Path;

use anyhow::Result;
use candle_core::Device;
use serde::{Deserialize, Serialize};
use zoo_core::checkpoint::{Checkpoint, SaveOptions, ZooModel};
use zoo_core::optim::{named_vars, Adam, AdamConfig, Optimizer};
use zoo_core::train::{Metrics, TrainTask, TrainingState};
use zoo_core::ZooRng;
use zoo_data::{Batcher, Mnist};

use crate::loss::{discriminator_loss, generator_loss, pulling_away_term};
use crate::{Config, Ebgan};

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
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self { batch_size: 64, lr_g: 2e-4, lr_d: 2e-4, beta1: 0.5, seed: 0 }
    }
}

/// One EBGAN training run.
pub struct Trainer {
    /// The model being trained.
    pub model: Ebgan,
    /// The recipe.
    pub cfg: TrainConfig,
    data: Mnist,
    batcher: Batcher,
    opt_g: Adam,
    opt_d: Adam,
    latent_rng: ZooRng,
    dev: Device,
}

impl Trainer {
    /// A seeded run: DCGAN initialisation from the seed, one Adam per network.
    pub fn new(model_cfg: &Config, cfg: TrainConfig, data: Mnist, dev: &Device) -> Result<Self> {
        let model = Ebgan::new(model_cfg, dev)?;
        zoo_core::init::init_dcgan(model.varmap(), &mut ZooRng::derive(cfg.seed, "init"))?;
        let adam = |lr: f64| AdamConfig::new(lr).betas(cfg.beta1, 0.999);
        let opt_g = Adam::new(named_vars(model.varmap(), "generator."), adam(cfg.lr_g))?;
        let opt_d = Adam::new(named_vars(model.varmap(), "discriminator."), adam(cfg.lr_d))?;
        let batcher = Batcher::new(data.len(), cfg.batch_size, cfg.seed, true)?;
        Ok(Self {
            latent_rng: ZooRng::derive(cfg.seed, "latents"),
            model,
            cfg,
            data,
            batcher,
            opt_g,
            opt_d,
            dev: dev.clone(),
        })
    }

    /// Optimisation steps in `epochs` passes over the data.
    pub fn steps_for_epochs(&self, epochs: usize) -> u64 {
        (epochs * self.batcher.batches_per_epoch()) as u64
    }
}

impl TrainTask for Trainer {
    fn family(&self) -> &str {
        Ebgan::FAMILY
    }

    fn train_step(&mut self, _step: u64) -> Result<Metrics> {
        let m = &self.model;
        let mc = m.config().clone();
        let (x, _) = self.data.batch(&self.batcher.next_indices(), &self.dev)?;
        let n = x.dim(0)?;
        // Discriminator: L_D = D(x) + [m - D(G(z))]^+, the generated batch held fixed.
        let fake = m.generator.forward_t(&m.latents(n, &mut self.latent_rng, &self.dev)?, true)?.detach();
        let real_e = m.energies(&x, true)?;
        let fake_e = m.energies(&fake, true)?;
        let l_d = discriminator_loss(&real_e.energy, &fake_e.energy, mc.margin)?;
        self.opt_d.step(&l_d.backward()?)?;
        // Generator: L_G = D(G(z)) + lambda_PT f_PT(S) on a fresh batch.
        let fake = m.generator.forward_t(&m.latents(n, &mut self.latent_rng, &self.dev)?, true)?;
        let e = m.energies(&fake, true)?;
        let l_g = generator_loss(&e.energy, &e.embedding, mc.pt_weight)?;
        self.opt_g.step(&l_g.backward()?)?;
        let scalar =
            |t: &candle_core::Tensor| -> Result<f64> { Ok(t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?) };
        Ok(vec![
            ("loss_d".into(), scalar(&l_d)?),
            ("loss_g".into(), scalar(&l_g)?),
            ("energy_real".into(), scalar(&real_e.energy.mean_all()?)?),
            ("energy_fake".into(), scalar(&fake_e.energy.mean_all()?)?),
            ("pulling_away".into(), scalar(&pulling_away_term(&e.embedding)?)?),
        ])
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
        Ok(s)
    }

    fn on_checkpoint(&mut self, step: u64, run_dir: &Path) -> Result<()> {
        // The same 64 latents at every checkpoint, so the grids show the generator's progress.
        let mut rng = ZooRng::derive(self.cfg.seed, "sample-grid");
        let samples = self.model.sample(64, &mut rng, &self.dev)?;
        zoo_eval::picture::save_image_grid(&samples, 8, 2, 2, &run_dir.join(format!("samples-{step:06}.png")))
    }

    fn restore(&mut self, weights: &Path, state: &TrainingState) -> Result<()> {
        let ck = Checkpoint::read(weights, &self.dev)?;
        ck.expect_family(Ebgan::FAMILY)?;
        ck.load_into(self.model.varmap())?;
        state.get_optimizer("generator", &mut self.opt_g)?;
        state.get_optimizer("discriminator", &mut self.opt_d)?;
        self.latent_rng = state.get_rng("latents")?;
        // The run's own recipe decides the data order, whatever this process was started with.
        self.cfg = state.get("recipe")?;
        self.batcher = Batcher::new(self.data.len(), self.cfg.batch_size, self.cfg.seed, true)?;
        self.batcher.set_position(state.get("batcher")?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zoo_core::checkpoint::varmap_tensors;
    use zoo_core::train::{run, LoopConfig};

    fn trainer(seed: u64) -> Trainer {
        let data = Mnist::bundled_train_subset().unwrap().subset(0..256).unwrap();
        let cfg = TrainConfig { batch_size: 16, seed, ..Default::default() };
        Trainer::new(&Config::mnist_conv(), cfg, data, &Device::Cpu).unwrap()
    }

    fn weights(t: &Trainer) -> Vec<Vec<f32>> {
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
}
