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
use zoo_data::{ImageSet, TwoDomainPosition, TwoDomains};

use crate::{grl_lambda, Dann, DigitNet};

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Cross-entropy on source labels only (the lower baseline).
    SourceOnly,
    /// Cross-entropy on source labels plus the model's adaptation term (DANN's reversed domain
    /// loss, DDC's MMD, ...), which sees the unlabelled target batch.
    #[serde(alias = "dann")]
    Adapt,
    /// Cross-entropy on target labels (the upper bound: uses target labels).
    TargetOnly,
}

/// The adaptation term of one step.
pub struct AdaptationTerms {
    /// Class logits of the source batch.
    pub source_logits: Tensor,
    /// The adaptation loss, weighted as the method prescribes (added to the source cross-entropy).
    pub loss: Tensor,
    /// Named values to log (for example the domain loss and `lambda`).
    pub metrics: Metrics,
}

/// A model that [`DaTrainer`] trains: a [`DigitNet`] classifier plus the adaptation term of its
/// method.
pub trait Adaptation: ZooModel {
    /// The classifier every method trains and evaluation measures.
    fn classifier(&self) -> &DigitNet;

    /// The method's term on a source batch and a target batch (images in `[0, 1]`) at training
    /// progress `p` in `[0, 1]`. Target labels are never passed.
    fn adaptation_terms(&self, source: &Tensor, target: &Tensor, p: f64) -> Result<AdaptationTerms>;
}

impl Adaptation for Dann {
    fn classifier(&self) -> &DigitNet {
        &self.net
    }

    /// The domain loss through the gradient reversal layer with `lambda_p` ([`grl_lambda`]).
    fn adaptation_terms(&self, source: &Tensor, target: &Tensor, p: f64) -> Result<AdaptationTerms> {
        let lambda = grl_lambda(p);
        let (fs, ft) = (self.net.features(source)?, self.net.features(target)?);
        let source_logits = self.net.classify_features(&fs)?;
        let (ns, nt, dev) = (fs.dim(0)?, ft.dim(0)?, fs.device().clone());
        let domain_labels =
            Tensor::cat(&[Tensor::zeros(ns, DType::F32, &dev)?, Tensor::ones(nt, DType::F32, &dev)?], 0)?;
        let logits = self.domain_logits(&Tensor::cat(&[fs, ft], 0)?, lambda)?;
        let loss = bce_with_logits(&logits, &domain_labels)?;
        let metrics = vec![("domain_loss".into(), loss.to_scalar::<f32>()? as f64), ("lambda".into(), lambda)];
        Ok(AdaptationTerms { source_logits, loss, metrics })
    }
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
pub struct DaTrainer<M: Adaptation> {
    /// The model (the baselines leave its adaptation part untouched).
    pub model: M,
    /// The recipe.
    pub cfg: DaTrainConfig,
    data: TwoDomains,
    opt: Sgd,
    dev: Device,
}

impl<M: Adaptation> DaTrainer<M> {
    /// A seeded run of a fresh `M` built from `model_cfg` (PyTorch's default initialisation
    /// from the seed) on a labelled `source` and a `target` set.
    pub fn new(
        model_cfg: &M::Config,
        cfg: DaTrainConfig,
        source: ImageSet,
        target: ImageSet,
        dev: &Device,
    ) -> Result<Self> {
        let model = M::new(model_cfg, dev)?;
        let net = model.classifier().config();
        if (source.channels, source.rows, source.cols) != (net.in_channels, net.image_size, net.image_size) {
            bail!(
                "the network takes {}x{}x{} images (channels x rows x cols), the source set holds {}x{}x{}",
                net.in_channels,
                net.image_size,
                net.image_size,
                source.channels,
                source.rows,
                source.cols
            );
        }
        let data = TwoDomains::new(source, target, cfg.batch_size, cfg.seed)?;
        zoo_core::init::init_torch_default(model.varmap(), &mut ZooRng::derive(cfg.seed, "init"))?;
        let opt = Sgd::new(named_vars(model.varmap(), ""), SgdConfig::new(cfg.lr, cfg.momentum))?;
        Ok(Self { model, cfg, data, opt, dev: dev.clone() })
    }
}

impl<M: Adaptation> TrainTask for DaTrainer<M> {
    fn family(&self) -> &str {
        M::FAMILY
    }

    fn train_step(&mut self, step: u64) -> Result<Metrics> {
        let p = step as f64 / self.cfg.steps.max(1) as f64;
        let lr = self.cfg.schedule().lr_at(step);
        self.opt.set_learning_rate(lr);
        let b = self.data.next_batch(&self.dev)?;
        let net = self.model.classifier();
        let mut metrics = vec![("lr".to_string(), lr)];
        let loss = match self.cfg.method {
            Method::SourceOnly => cross_entropy(&net.forward(&b.source_images)?, &b.source_labels)?,
            Method::TargetOnly => cross_entropy(&net.forward(&b.target_images)?, &b.target_labels)?,
            Method::Adapt => {
                let terms = self.model.adaptation_terms(&b.source_images, &b.target_images, p)?;
                let ce = cross_entropy(&terms.source_logits, &b.source_labels)?;
                metrics.push(("class_loss".into(), ce.to_scalar::<f32>()? as f64));
                metrics.extend(terms.metrics);
                (ce + terms.loss)?
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
        s.put("domains", &self.data.position())?;
        s.put("recipe", &self.cfg)?;
        Ok(s)
    }

    fn restore(&mut self, weights: &Path, state: &TrainingState) -> Result<()> {
        let ck = Checkpoint::read(weights, &self.dev)?;
        ck.expect_family(M::FAMILY)?;
        ck.expect_config(self.model.config())?;
        ck.load_into(self.model.varmap())?;
        state.get_optimizer("sgd", &mut self.opt)?;
        self.cfg = state.get("recipe")?;
        self.data.reorder(self.cfg.batch_size, self.cfg.seed)?;
        let position = match state.get::<TwoDomainPosition>("domains") {
            Ok(p) => p,
            // Runs saved before the two orders were stored together.
            Err(_) => TwoDomainPosition { source: state.get("source_order")?, target: state.get("target_order")? },
        };
        self.data.set_position(position)?;
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
    use crate::DannConfig;
    use zoo_core::train::{run, LoopConfig};
    use zoo_data::{build_mnistm, Mnist, Photos};

    fn domains() -> (ImageSet, ImageSet) {
        let mnist = Mnist::bundled_train_subset().unwrap().subset(0..256).unwrap();
        (ImageSet::from_mnist_rgb(&mnist), build_mnistm(&mnist, &Photos::bundled().unwrap(), 0).unwrap())
    }

    fn weights(t: &DaTrainer<Dann>) -> Vec<Vec<f32>> {
        zoo_core::checkpoint::varmap_tensors(t.model.varmap())
            .iter()
            .map(|(_, v)| v.flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    }

    #[test]
    fn every_method_trains_and_a_resumed_dann_run_matches_a_straight_one() {
        let (s, t) = domains();
        for method in [Method::SourceOnly, Method::TargetOnly] {
            let mut tr = DaTrainer::<Dann>::new(
                &DannConfig::mnist(),
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
        let cfg = DaTrainConfig { batch_size: 16, ..DaTrainConfig::paper(Method::Adapt, 6, 2) };
        let lc =
            |d: &str| LoopConfig { checkpoint_every: 3, progress: false, ..LoopConfig::new(dir.path().join(d), 6) };
        let mut straight =
            DaTrainer::<Dann>::new(&DannConfig::mnist(), cfg.clone(), s.clone(), t.clone(), &Device::Cpu).unwrap();
        let summary = run(&mut straight, &lc("a")).unwrap();
        let names: Vec<&str> = summary.last_metrics.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["loss", "lr", "class_loss", "domain_loss", "lambda"]);
        let mut first =
            DaTrainer::<Dann>::new(&DannConfig::mnist(), cfg.clone(), s.clone(), t.clone(), &Device::Cpu).unwrap();
        run(&mut first, &LoopConfig { stop_after: Some(3), ..lc("b") }).unwrap();
        let mut resumed = DaTrainer::<Dann>::new(
            &DannConfig::mnist(),
            DaTrainConfig { seed: 9, ..cfg },
            s.clone(),
            t.clone(),
            &Device::Cpu,
        )
        .unwrap();
        run(&mut resumed, &LoopConfig { resume: true, ..lc("b") }).unwrap();
        assert!(weights(&straight) == weights(&resumed), "the resumed run diverged");
        let (acc, pred) = accuracy(&straight.model.net, &t, 100, &Device::Cpu).unwrap();
        assert_eq!(pred.len(), 256);
        assert!((0.0..=1.0).contains(&acc));
        let grey = ImageSet { channels: 1, ..s.clone() };
        let paper = DaTrainConfig::paper(Method::Adapt, 1, 0);
        let e = DaTrainer::<Dann>::new(&DannConfig::mnist(), paper, grey, t, &Device::Cpu).err().unwrap().to_string();
        assert!(e.contains("3x28x28") && e.contains("1x28x28"), "{e}");
    }
}
