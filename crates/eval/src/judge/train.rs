//! Training the judge with the zoo-core kit.

use std::path::Path;

use anyhow::Result;
use candle_core::Device;
use zoo_core::checkpoint::{Checkpoint, SaveOptions, ZooModel};
use zoo_core::loss::cross_entropy;
use zoo_core::optim::{named_vars, Adam, AdamConfig, Optimizer};
use zoo_core::schedule::Schedule;
use zoo_core::train::{Metrics, TrainTask, TrainingState};
use zoo_core::ZooRng;
use zoo_data::{Batcher, Mnist};

use super::{Judge, JudgeConfig, JudgeTrainConfig};

/// One judge training run: model, optimiser, data order and dropout RNG.
pub struct JudgeTrainer {
    /// The model being trained.
    pub judge: Judge,
    /// The recipe.
    pub cfg: JudgeTrainConfig,
    data: Mnist,
    batcher: Batcher,
    opt: Adam,
    schedule: Schedule,
    dropout_rng: ZooRng,
    dev: Device,
}

impl JudgeTrainer {
    /// Builds a seeded model (PyTorch default initialisation drawn from the seed) and the run.
    pub fn new(model_cfg: &JudgeConfig, cfg: JudgeTrainConfig, data: Mnist, dev: &Device) -> Result<Self> {
        let judge = Judge::new(model_cfg, dev)?;
        zoo_core::init::init_torch_default(judge.varmap(), &mut ZooRng::derive(cfg.seed, "init"))?;
        let batcher = Batcher::new(data.len(), cfg.batch_size, cfg.seed, true)?;
        let opt = Adam::new(named_vars(judge.varmap(), ""), AdamConfig::new(cfg.lr))?;
        let schedule = Schedule::StepDecay {
            lr: cfg.lr,
            every: batcher.batches_per_epoch() as u64,
            gamma: cfg.lr_decay_per_epoch,
        };
        Ok(Self {
            dropout_rng: ZooRng::derive(cfg.seed, "dropout"),
            judge,
            cfg,
            data,
            batcher,
            opt,
            schedule,
            dev: dev.clone(),
        })
    }

    /// Total optimisation steps of the recipe (`epochs * batches per epoch`).
    pub fn total_steps(&self) -> u64 {
        (self.cfg.epochs * self.batcher.batches_per_epoch()) as u64
    }
}

impl TrainTask for JudgeTrainer {
    fn family(&self) -> &str {
        Judge::FAMILY
    }

    fn train_step(&mut self, step: u64) -> Result<Metrics> {
        let lr = self.schedule.lr_at(step);
        self.opt.set_learning_rate(lr);
        let idx = self.batcher.next_indices();
        let (x, y) = self.data.batch(&idx, &self.dev)?;
        let logits = self.judge.forward_train(&x, &mut self.dropout_rng)?;
        let loss = cross_entropy(&logits, &y)?;
        self.opt.step(&loss.backward()?)?;
        let correct = logits.argmax(1)?.eq(&y)?.to_dtype(candle_core::DType::F32)?.mean_all()?.to_scalar::<f32>()?;
        Ok(vec![
            ("loss".into(), loss.to_scalar::<f32>()? as f64),
            ("batch_accuracy".into(), correct as f64),
            ("lr".into(), lr),
        ])
    }

    fn save_weights(&self, path: &Path, step: u64) -> Result<()> {
        self.judge.save_with(path, &SaveOptions { step: Some(step), seed: Some(self.cfg.seed), storage: None })
    }

    fn training_state(&self) -> Result<TrainingState> {
        let mut s = TrainingState::new();
        s.put_optimizer("judge", &self.opt)?;
        s.put_rng("dropout", &self.dropout_rng)?;
        s.put("batcher", &self.batcher.position())?;
        s.put("recipe", &self.cfg)?;
        Ok(s)
    }

    fn restore(&mut self, weights: &Path, state: &TrainingState) -> Result<()> {
        let ck = Checkpoint::read(weights, &self.dev)?;
        ck.expect_family(Judge::FAMILY)?;
        ck.load_into(self.judge.varmap())?;
        state.get_optimizer("judge", &mut self.opt)?;
        self.dropout_rng = state.get_rng("dropout")?;
        // The run's own recipe decides the data order and the schedule, whatever this process
        // was started with.
        self.cfg = state.get("recipe")?;
        self.batcher = Batcher::new(self.data.len(), self.cfg.batch_size, self.cfg.seed, true)?;
        self.schedule = Schedule::StepDecay {
            lr: self.cfg.lr,
            every: self.batcher.batches_per_epoch() as u64,
            gamma: self.cfg.lr_decay_per_epoch,
        };
        self.batcher.set_position(state.get("batcher")?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zoo_core::gradcheck::vars_without_gradient;

    fn small_data() -> Mnist {
        Mnist::bundled_train_subset().unwrap().subset(0..512).unwrap()
    }

    #[test]
    fn one_step_reaches_every_variable_and_loss_decreases() {
        let dev = Device::Cpu;
        let mut t = JudgeTrainer::new(
            &JudgeConfig::lenet(),
            JudgeTrainConfig { batch_size: 32, ..Default::default() },
            small_data(),
            &dev,
        )
        .unwrap();
        let (x, y) = t.data.batch(&(0..32).collect::<Vec<_>>(), &dev).unwrap();
        let loss = cross_entropy(&t.judge.forward_train(&x, &mut ZooRng::new(0)).unwrap(), &y).unwrap();
        let grads = loss.backward().unwrap();
        assert_eq!(vars_without_gradient(t.judge.varmap(), &grads), Vec::<String>::new());
        // A fixed real batch: the evaluation loss drops after a few steps on it.
        let eval_loss = |j: &Judge| cross_entropy(&j.forward(&x).unwrap(), &y).unwrap().to_scalar::<f32>().unwrap();
        let before = eval_loss(&t.judge);
        for step in 0..15 {
            t.train_step(step).unwrap();
        }
        let after = eval_loss(&t.judge);
        assert!(after < before * 0.7, "loss {before} -> {after}");
    }

    #[test]
    fn a_resumed_run_matches_a_straight_one_even_when_restarted_with_another_seed() {
        use zoo_core::train::{run, LoopConfig};
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().unwrap();
        let make = |seed| {
            let recipe = JudgeTrainConfig { batch_size: 32, seed, ..Default::default() };
            JudgeTrainer::new(&JudgeConfig::lenet(), recipe, small_data(), &dev).unwrap()
        };
        let cfg =
            |d: &str| LoopConfig { checkpoint_every: 3, progress: false, ..LoopConfig::new(dir.path().join(d), 6) };
        let mut straight = make(1);
        run(&mut straight, &cfg("a")).unwrap();
        run(&mut make(1), &LoopConfig { stop_after: Some(3), ..cfg("b") }).unwrap();
        let mut resumed = make(7);
        run(&mut resumed, &LoopConfig { resume: true, ..cfg("b") }).unwrap();
        let w = |t: &JudgeTrainer| -> Vec<Vec<f32>> {
            zoo_core::checkpoint::varmap_tensors(t.judge.varmap())
                .iter()
                .map(|(_, v)| v.flatten_all().unwrap().to_vec1().unwrap())
                .collect()
        };
        assert!(w(&straight) == w(&resumed), "the resumed run diverged");
    }

    #[test]
    fn save_load_is_bit_exact_and_wrong_shapes_are_refused() {
        let dev = Device::Cpu;
        let t = JudgeTrainer::new(&JudgeConfig::lenet(), JudgeTrainConfig::default(), small_data(), &dev).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("judge.safetensors");
        t.judge.save(&p).unwrap();
        let back = Judge::load(&p, &dev).unwrap();
        let (x, _) = t.data.batch(&[0, 1, 2, 3], &dev).unwrap();
        let a = t.judge.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = back.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b);
        assert_eq!(t.judge.num_params(), 454_922);
        let wrong = candle_core::Tensor::zeros((2, 3, 28, 28), candle_core::DType::F32, &dev).unwrap();
        let e = back.forward(&wrong).unwrap_err().to_string();
        assert!(e.contains("[batch, 1, 28, 28]") && e.contains("[2, 3, 28, 28]"), "{e}");
    }
}
