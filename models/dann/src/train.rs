//! Training on a labelled source domain and an unlabelled target domain with the paper's recipe:
//! SGD with momentum 0.9, `mu_p = 0.01 / (1 + 10 p)^0.75`, batches of 64 source and 64 target
//! images (never mixed in one batch through a normalisation layer: the network has none), and for
//! DANN the reversal coefficient `lambda_p` rising from 0 to 1. The baselines train the same
//! network with the same budget: on the source labels only, or on the target labels (the upper
//! bound; it uses target labels, the adaptation methods never do).

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use zoo_core::checkpoint::{Checkpoint, SaveOptions, ZooModel};
use zoo_core::loss::{bce_with_logits, cross_entropy};
use zoo_core::optim::{named_vars, Optimizer, Sgd, SgdConfig};
use zoo_core::schedule::Schedule;
use zoo_core::train::{Metrics, TrainTask, TrainingState};
use zoo_core::ZooRng;
use zoo_data::{Batcher, ImageSet};

use crate::{grl_lambda, Dann, DannConfig, DigitNet};

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Cross-entropy on source labels only (the lower baseline).
    SourceOnly,
    /// Cross-entropy on source labels plus the domain loss through gradient reversal.
    Dann,
    /// Cross-entropy on target labels (the upper bound: uses target labels).
    TargetOnly,
}

/// The recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaTrainConfig {
    /// The method.
    pub method: Method,
    /// Images per domain per step (64 + 64 in the paper).
    pub batch_size: usize,
    /// Training length; `p = step / steps` drives the schedules.
    pub steps: u64,
    /// Initial learning rate `mu_0` (0.01).
    pub lr: f64,
    /// SGD momentum (0.9).
    pub momentum: f64,
    /// Seed of initialisation and data order.
    pub seed: u64,
}

impl DaTrainConfig {
    /// The paper's recipe for `method` over `steps` steps.
    pub fn paper(method: Method, steps: u64, seed: u64) -> Self {
        Self { method, batch_size: 64, steps, lr: 0.01, momentum: 0.9, seed }
    }

    fn schedule(&self) -> Schedule {
        Schedule::InverseDecay { mu0: self.lr, alpha: 10.0, beta: 0.75, total_steps: self.steps }
    }
}

/// A run: the model, the two domains and the optimiser.
pub struct DaTrainer {
    /// The model (the domain classifier is unused by the baselines).
    pub model: Dann,
    /// The recipe.
    pub cfg: DaTrainConfig,
    source: ImageSet,
    target: ImageSet,
    source_order: Batcher,
    target_order: Batcher,
    opt: Sgd,
    dev: Device,
}

impl DaTrainer {
    /// A seeded run (PyTorch's default initialisation from the seed).
    pub fn new(cfg: DaTrainConfig, source: ImageSet, target: ImageSet, dev: &Device) -> Result<Self> {
        if source.channels != target.channels || source.rows != target.rows || source.cols != target.cols {
            bail!(
                "source images are {}x{}x{} but target images are {}x{}x{}",
                source.channels,
                source.rows,
                source.cols,
                target.channels,
                target.rows,
                target.cols
            );
        }
        let model_cfg = DannConfig { in_channels: source.channels, image_size: source.rows, ..DannConfig::mnist() };
        let model = Dann::new(&model_cfg, dev)?;
        zoo_core::init::init_torch_default(model.varmap(), &mut ZooRng::derive(cfg.seed, "init"))?;
        let opt = Sgd::new(named_vars(model.varmap(), ""), SgdConfig::new(cfg.lr, cfg.momentum))?;
        let source_order = Batcher::new(source.len(), cfg.batch_size, cfg.seed, true)?;
        let target_order = Batcher::new(target.len(), cfg.batch_size, cfg.seed ^ 0x7a11, true)?;
        Ok(Self { model, cfg, source, target, source_order, target_order, opt, dev: dev.clone() })
    }
}

impl TrainTask for DaTrainer {
    fn family(&self) -> &str {
        Dann::FAMILY
    }

    fn train_step(&mut self, step: u64) -> Result<Metrics> {
        let p = step as f64 / self.cfg.steps.max(1) as f64;
        let lr = self.cfg.schedule().lr_at(step);
        self.opt.set_learning_rate(lr);
        let (xs, ys) = self.source.batch(&self.source_order.next_indices(), &self.dev)?;
        let (xt, yt) = self.target.batch(&self.target_order.next_indices(), &self.dev)?;
        let net = &self.model.net;
        let mut metrics = vec![("lr".to_string(), lr)];
        let loss = match self.cfg.method {
            Method::SourceOnly => cross_entropy(&net.forward(&xs)?, &ys)?,
            Method::TargetOnly => cross_entropy(&net.forward(&xt)?, &yt)?,
            Method::Dann => {
                let lambda = grl_lambda(p);
                let (fs, ft) = (net.features(&xs)?, net.features(&xt)?);
                let ce = cross_entropy(&net.classify_features(&fs)?, &ys)?;
                let (ns, nt) = (xs.dim(0)?, xt.dim(0)?);
                let domain_labels = Tensor::cat(
                    &[Tensor::zeros(ns, DType::F32, &self.dev)?, Tensor::ones(nt, DType::F32, &self.dev)?],
                    0,
                )?;
                let logits = self.model.domain_logits(&Tensor::cat(&[fs, ft], 0)?, lambda)?;
                let domain = bce_with_logits(&logits, &domain_labels)?;
                metrics.push(("class_loss".into(), ce.to_scalar::<f32>()? as f64));
                metrics.push(("domain_loss".into(), domain.to_scalar::<f32>()? as f64));
                metrics.push(("lambda".into(), lambda));
                (ce + domain)?
            }
        };
        self.opt.step(&loss.backward()?)?;
        metrics.insert(0, ("loss".into(), loss.to_scalar::<f32>()? as f64));
        Ok(metrics)
    }

    fn save_weights(&self, path: &Path, step: u64) -> Result<()> {
        self.model.save_with(path, &SaveOptions { step: Some(step), seed: Some(self.cfg.seed), storage: None })
    }

    fn training_state(&self) -> Result<TrainingState> {
        let mut s = TrainingState::new();
        s.put_optimizer("sgd", &self.opt)?;
        s.put("source_order", &self.source_order.position())?;
        s.put("target_order", &self.target_order.position())?;
        s.put("recipe", &self.cfg)?;
        Ok(s)
    }

    fn restore(&mut self, weights: &Path, state: &TrainingState) -> Result<()> {
        let ck = Checkpoint::read(weights, &self.dev)?;
        ck.expect_family(Dann::FAMILY)?;
        ck.load_into(self.model.varmap())?;
        state.get_optimizer("sgd", &mut self.opt)?;
        self.cfg = state.get("recipe")?;
        self.source_order = Batcher::new(self.source.len(), self.cfg.batch_size, self.cfg.seed, true)?;
        self.target_order = Batcher::new(self.target.len(), self.cfg.batch_size, self.cfg.seed ^ 0x7a11, true)?;
        self.source_order.set_position(state.get("source_order")?)?;
        self.target_order.set_position(state.get("target_order")?)?;
        Ok(())
    }
}

/// Accuracy of `net` on `data` (batches of `batch`), and its predictions.
pub fn accuracy(net: &DigitNet, data: &ImageSet, batch: usize, dev: &Device) -> Result<(f64, Vec<u32>)> {
    if data.is_empty() {
        bail!("cannot measure accuracy on an empty set");
    }
    let mut predictions = Vec::with_capacity(data.len());
    for start in (0..data.len()).step_by(batch.max(1)) {
        let idx: Vec<usize> = (start..(start + batch.max(1)).min(data.len())).collect();
        let (x, _) = data.batch(&idx, dev)?;
        predictions.extend(net.forward(&x)?.argmax(1)?.to_vec1::<u32>()?);
    }
    let right = predictions.iter().zip(&data.labels).filter(|(p, l)| **p == **l as u32).count();
    Ok((right as f64 / data.len() as f64, predictions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zoo_core::train::{run, LoopConfig};
    use zoo_data::{build_mnistm, Mnist, Photos};

    fn domains() -> (ImageSet, ImageSet) {
        let mnist = Mnist::bundled_train_subset().unwrap().subset(0..256).unwrap();
        (ImageSet::from_mnist_rgb(&mnist), build_mnistm(&mnist, &Photos::bundled().unwrap(), 0).unwrap())
    }

    fn weights(t: &DaTrainer) -> Vec<Vec<f32>> {
        zoo_core::checkpoint::varmap_tensors(t.model.varmap())
            .iter()
            .map(|(_, v)| v.flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    }

    #[test]
    fn every_method_trains_and_a_resumed_dann_run_matches_a_straight_one() {
        let (s, t) = domains();
        for method in [Method::SourceOnly, Method::TargetOnly] {
            let mut tr = DaTrainer::new(
                DaTrainConfig { batch_size: 32, ..DaTrainConfig::paper(method, 30, 1) },
                s.clone(),
                t.clone(),
                &Device::Cpu,
            )
            .unwrap();
            let first = tr.train_step(0).unwrap()[0].1;
            let mut last = first;
            for step in 1..30 {
                last = tr.train_step(step).unwrap()[0].1;
            }
            assert!(last < first, "{method:?}: {first} -> {last}");
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = DaTrainConfig { batch_size: 16, ..DaTrainConfig::paper(Method::Dann, 6, 2) };
        let lc =
            |d: &str| LoopConfig { checkpoint_every: 3, progress: false, ..LoopConfig::new(dir.path().join(d), 6) };
        let mut straight = DaTrainer::new(cfg.clone(), s.clone(), t.clone(), &Device::Cpu).unwrap();
        let summary = run(&mut straight, &lc("a")).unwrap();
        let names: Vec<&str> = summary.last_metrics.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["loss", "lr", "class_loss", "domain_loss", "lambda"]);
        let mut first = DaTrainer::new(cfg.clone(), s.clone(), t.clone(), &Device::Cpu).unwrap();
        run(&mut first, &LoopConfig { stop_after: Some(3), ..lc("b") }).unwrap();
        let mut resumed = DaTrainer::new(DaTrainConfig { seed: 9, ..cfg }, s.clone(), t.clone(), &Device::Cpu).unwrap();
        run(&mut resumed, &LoopConfig { resume: true, ..lc("b") }).unwrap();
        assert!(weights(&straight) == weights(&resumed), "the resumed run diverged");
        let (acc, pred) = accuracy(&straight.model.net, &t, 100, &Device::Cpu).unwrap();
        assert_eq!(pred.len(), 256);
        assert!((0.0..=1.0).contains(&acc));
        let grey = ImageSet { channels: 1, ..s.clone() };
        assert!(DaTrainer::new(DaTrainConfig::paper(Method::Dann, 1, 0), grey, t, &Device::Cpu).is_err());
    }
}
