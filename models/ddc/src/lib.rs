//! # zoo-ddc
//!
//! Deep domain confusion (Tzeng, Hoffman, Zhang, Saenko & Darrell, *Deep Domain Confusion:
//! Maximizing for Domain Invariance*, arXiv 1412.3474) on the digit network that DANN uses for
//! MNIST -> MNIST-M:
//!
//! - features: conv 5x5 32, ReLU, max-pool 2 -> conv 5x5 48, ReLU, max-pool 2;
//! - label predictor: FC 100 -> FC 100 -> **adaptation layer** (a bottleneck, 64 units by
//!   default) -> FC 10, ReLU after every hidden layer;
//! - loss: `L = CE(source labels) + lambda * MMD^2(adaptation layer of the source batch,
//!   adaptation layer of the target batch)`, with the paper's linear MMD
//!   (`||mean phi(x_s) - mean phi(x_t)||^2`) and `lambda = 0.25` by default; the multi-kernel
//!   Gaussian MMD is an option ([`MmdKernel::MultiRbf`]).
//!
//! The paper inserts a 256-unit layer after AlexNet's 4096-unit `fc7`; this network's hidden
//! layers have 100 units, so the default bottleneck is 64. [`Ddc`] implements
//! [`zoo_dann::Adaptation`], so [`zoo_dann::DaTrainer`] trains it with the same recipe, data and
//! baselines as DANN.

use anyhow::{bail, Result};
use candle_core::Tensor;
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use zoo_core::checkpoint::ZooModel;
pub use zoo_core::loss::MmdKernel;
use zoo_dann::{Adaptation, AdaptationTerms, DannConfig, DigitNet};

/// The network and the weight and kind of its MMD term.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DdcConfig {
    /// The digit network; `adaptation_layer` must be set (it is where MMD is measured).
    pub net: DannConfig,
    /// Which MMD estimator (linear in the paper).
    pub kernel: MmdKernel,
    /// `lambda`, the weight of MMD^2 in the loss (0.25).
    pub mmd_weight: f64,
}

impl DdcConfig {
    /// The MNIST -> MNIST-M setting: the DANN network with a 64-unit adaptation layer, linear
    /// MMD, `lambda = 0.25`.
    pub fn mnist() -> Self {
        Self {
            net: DannConfig { adaptation_layer: Some(64), ..DannConfig::mnist() },
            kernel: MmdKernel::Linear,
            mmd_weight: 0.25,
        }
    }
}

/// A DDC network.
pub struct Ddc {
    cfg: DdcConfig,
    varmap: VarMap,
    /// Features and label predictor (with the adaptation layer).
    pub net: DigitNet,
}

impl ZooModel for Ddc {
    const FAMILY: &'static str = "ddc";
    type Config = DdcConfig;

    fn build(cfg: &DdcConfig, varmap: VarMap, vb: VarBuilder) -> Result<Self> {
        if cfg.net.adaptation_layer.is_none() {
            bail!("a DDC network needs an adaptation layer (net.adaptation_layer), where MMD is measured");
        }
        if !(cfg.mmd_weight.is_finite() && cfg.mmd_weight >= 0.0) {
            bail!("the MMD weight must be a non-negative number, got {}", cfg.mmd_weight);
        }
        Ok(Self { net: DigitNet::new(&cfg.net, vb)?, cfg: cfg.clone(), varmap })
    }
    fn config(&self) -> &DdcConfig {
        &self.cfg
    }
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }
}

impl Ddc {
    /// Class logits of images `[B, 3, 28, 28]` in `[0, 1]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.net.forward(x)
    }

    /// The adaptation layer's representation of images.
    pub fn adaptation_features(&self, x: &Tensor) -> Result<Tensor> {
        self.net.embed(&self.net.features(x)?)
    }

    /// MMD^2 (the configured estimator, unweighted) between the adaptation-layer representations
    /// of two image batches.
    pub fn mmd2(&self, source: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(self.cfg.kernel.mmd2(&self.adaptation_features(source)?, &self.adaptation_features(target)?)?)
    }
}

impl Adaptation for Ddc {
    fn classifier(&self) -> &DigitNet {
        &self.net
    }

    /// `lambda * MMD^2` on the adaptation layer; the source logits come from the same forward.
    fn adaptation_terms(&self, source: &Tensor, target: &Tensor, _p: f64) -> Result<AdaptationTerms> {
        let es = self.adaptation_features(source)?;
        let et = self.adaptation_features(target)?;
        let source_logits = self.net.classify_embedding(&es)?;
        let mmd2 = self.cfg.kernel.mmd2(&es, &et)?;
        let metrics = vec![("mmd2".into(), mmd2.to_scalar::<f32>()? as f64)];
        Ok(AdaptationTerms { source_logits, loss: (mmd2 * self.cfg.mmd_weight)?, metrics })
    }
}

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use zoo_core::gradcheck::vars_without_gradient;
    use zoo_core::loss::cross_entropy;
    use zoo_core::train::TrainTask;
    use zoo_core::ZooRng;
    use zoo_dann::{DaTrainConfig, DaTrainer, Dann, Method};
    use zoo_data::{build_mnistm, ImageSet, Mnist, Photos};

    fn model(cfg: &DdcConfig) -> Ddc {
        let m = Ddc::new(cfg, &Device::Cpu).unwrap();
        zoo_core::init::init_torch_default(m.varmap(), &mut ZooRng::new(0)).unwrap();
        m
    }

    fn domains(n: usize) -> (ImageSet, ImageSet) {
        let mnist = Mnist::bundled_train_subset().unwrap().subset(0..n).unwrap();
        (ImageSet::from_mnist_rgb(&mnist), build_mnistm(&mnist, &Photos::bundled().unwrap(), 0).unwrap())
    }

    fn batch(set: &ImageSet, n: usize) -> (Tensor, Tensor) {
        set.batch(&(0..n).collect::<Vec<_>>(), &Device::Cpu).unwrap()
    }

    #[test]
    fn mmd_term_is_zero_for_the_same_batch_and_positive_across_domains() {
        for kernel in [MmdKernel::Linear, MmdKernel::MultiRbf { kernels: 5, multiplier: 2.0 }] {
            let m = model(&DdcConfig { kernel: kernel.clone(), ..DdcConfig::mnist() });
            let (s, t) = domains(32);
            let ((xs, _), (xt, _)) = (batch(&s, 32), batch(&t, 32));
            let same = m.adaptation_terms(&xs, &xs, 0.5).unwrap();
            assert!(same.loss.to_scalar::<f32>().unwrap().abs() < 1e-6, "{kernel:?}");
            let across = m.adaptation_terms(&xs, &xt, 0.5).unwrap();
            let (loss, mmd2) = (across.loss.to_scalar::<f32>().unwrap() as f64, across.metrics[0].1);
            assert!(mmd2 > 1e-4, "{kernel:?}: {mmd2}");
            assert!((loss - 0.25 * mmd2).abs() < 1e-6 * mmd2.max(1.0), "{kernel:?}: {loss} vs {mmd2}");
        }
    }

    #[test]
    fn one_step_reaches_every_variable_and_training_lowers_the_loss() {
        let m = model(&DdcConfig::mnist());
        let (s, t) = domains(32);
        let ((xs, ys), (xt, _)) = (batch(&s, 32), batch(&t, 32));
        let terms = m.adaptation_terms(&xs, &xt, 0.0).unwrap();
        let loss = (cross_entropy(&terms.source_logits, &ys).unwrap() + terms.loss).unwrap();
        let grads = loss.backward().unwrap();
        assert_eq!(vars_without_gradient(m.varmap(), &grads), Vec::<String>::new());
        let names: Vec<String> = m.varmap().data().lock().unwrap().keys().cloned().collect();
        assert!(names.iter().any(|n| n == "classifier.adapt.weight"), "{names:?}");

        let (s, t) = domains(256);
        let cfg = DaTrainConfig { batch_size: 32, ..DaTrainConfig::paper(Method::Adapt, 40, 3) };
        let mut tr = DaTrainer::<Ddc>::new(&DdcConfig::mnist(), cfg, s, t, &Device::Cpu).unwrap();
        let first = tr.train_step(0).unwrap();
        let keys: Vec<&str> = first.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["loss", "lr", "class_loss", "mmd2"]);
        let mut last = first[0].1;
        for step in 1..40 {
            last = tr.train_step(step).unwrap()[0].1;
        }
        assert!(last < first[0].1, "{} -> {last}", first[0].1);
    }

    #[test]
    fn the_adaptation_layer_is_rectified_unless_asked_to_be_linear() {
        let (s, _) = domains(16);
        let (x, _) = batch(&s, 16);
        for relu in [true, false] {
            let net = DannConfig { adaptation_relu: relu, ..DdcConfig::mnist().net };
            let m = model(&DdcConfig { net, ..DdcConfig::mnist() });
            let min = m.adaptation_features(&x).unwrap().min_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(min >= 0.0, relu, "relu {relu}: min {min}");
        }
    }

    #[test]
    fn save_load_is_bit_exact_and_other_families_are_refused() {
        let m = model(&DdcConfig::mnist());
        let (s, t) = domains(4);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ddc.safetensors");
        m.save(&p).unwrap();
        let back = Ddc::load(&p, &Device::Cpu).unwrap();
        for set in [&s, &t] {
            let (x, _) = batch(set, 4);
            assert_eq!(
                m.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                back.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
        let q = dir.path().join("dann.safetensors");
        Dann::new(&DannConfig::mnist(), &Device::Cpu).unwrap().save(&q).unwrap();
        let e = format!("{:#}", Ddc::load(&q, &Device::Cpu).err().unwrap());
        assert!(e.contains("dann") && e.contains("ddc"), "{e}");
        let e = Ddc::new(&DdcConfig { net: DannConfig::mnist(), ..DdcConfig::mnist() }, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("adaptation layer"), "{e}");
    }
}
