//! The paper's MNIST network and the domain classifier.

use anyhow::{bail, Result};
use candle_core::{Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use zoo_core::checkpoint::ZooModel;
use zoo_core::nn::Linear;
use zoo_core::nn::{grad_reverse, max_pool2d, Conv2d};

/// The sizes of the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DannConfig {
    /// Input channels (3: MNIST is repeated to RGB to match MNIST-M).
    pub in_channels: usize,
    /// Input side (28).
    pub image_size: usize,
    /// Channels of the two convolutions (32, 48).
    pub conv_channels: [usize; 2],
    /// Width of the label predictor's two hidden layers (100).
    pub label_hidden: usize,
    /// Width of the domain classifier's hidden layer (100).
    pub domain_hidden: usize,
    /// Classes (10 digits).
    pub classes: usize,
    /// Width of an extra adaptation (bottleneck) layer between the label predictor's hidden
    /// layers and its output, as DDC inserts one; `None` (the DANN network) has none.
    #[serde(default)]
    pub adaptation_layer: Option<usize>,
    /// Whether the adaptation layer is followed by a ReLU like the hidden layers (default) or is
    /// linear.
    #[serde(default = "relu_by_default")]
    pub adaptation_relu: bool,
}

fn relu_by_default() -> bool {
    true
}

impl DannConfig {
    /// The paper's MNIST -> MNIST-M network.
    pub fn mnist() -> Self {
        Self {
            in_channels: 3,
            image_size: 28,
            conv_channels: [32, 48],
            label_hidden: 100,
            domain_hidden: 100,
            classes: 10,
            adaptation_layer: None,
            adaptation_relu: true,
        }
    }

    /// Side of the feature maps after two (conv 5x5, pool 2) stages.
    pub fn feature_side(&self) -> usize {
        ((self.image_size - 4) / 2 - 4) / 2
    }

    /// Length of the flattened features (768 for MNIST).
    pub fn feature_dim(&self) -> usize {
        self.conv_channels[1] * self.feature_side().pow(2)
    }
}

/// Features and label predictor: the classifier every adaptation method of the zoo trains.
pub struct DigitNet {
    conv1: Conv2d,
    conv2: Conv2d,
    hidden: Vec<Linear>,
    out: Linear,
    cfg: DannConfig,
}

impl DigitNet {
    /// Builds the network under `vb` (`features.conv1`, `features.conv2`, `classifier.fc1`,
    /// `classifier.fc2`, `classifier.adapt` when configured, and the output `classifier.fc3`).
    pub fn new(cfg: &DannConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.image_size < 16 {
            bail!("the digit network needs images of at least 16x16, got {}", cfg.image_size);
        }
        let conv = candle_nn::Conv2dConfig::default();
        let [c1, c2] = cfg.conv_channels;
        let (f, h) = (cfg.feature_dim(), cfg.label_hidden);
        let mut hidden = vec![
            zoo_core::nn::linear(f, h, vb.pp("classifier.fc1"))?,
            zoo_core::nn::linear(h, h, vb.pp("classifier.fc2"))?,
        ];
        let mut width = h;
        if let Some(a) = cfg.adaptation_layer {
            if a == 0 {
                bail!("the adaptation layer needs at least one unit");
            }
            hidden.push(zoo_core::nn::linear(h, a, vb.pp("classifier.adapt"))?);
            width = a;
        }
        Ok(Self {
            conv1: zoo_core::nn::conv2d(cfg.in_channels, c1, 5, conv, vb.pp("features.conv1"))?,
            conv2: zoo_core::nn::conv2d(c1, c2, 5, conv, vb.pp("features.conv2"))?,
            hidden,
            out: zoo_core::nn::linear(width, cfg.classes, vb.pp("classifier.fc3"))?,
            cfg: cfg.clone(),
        })
    }

    /// Checks that `x` is `[B, C, S, S]` as configured.
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        let (c, s) = (self.cfg.in_channels, self.cfg.image_size);
        match x.dims() {
            [_, ch, h, w] if *ch == c && *h == s && *w == s => Ok(()),
            d => bail!("the digit network takes images of shape [batch, {c}, {s}, {s}] in [0, 1], got {d:?}"),
        }
    }

    /// Flattened features `G_f(x)` `[B, feature_dim]` of images in `[0, 1]` (centred to `[-1, 1]`
    /// inside).
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let x = x.affine(2.0, -1.0)?;
        // Pooling before ReLU gives the same values as after (max and ReLU commute) on a quarter of
        // the elements; zoo-core's pooling has the correct gradient (Candle's divides it by 4).
        let h = zoo_core::nn::relu(&max_pool2d(&self.conv1.forward(&x)?, 2)?)?;
        let h = zoo_core::nn::relu(&max_pool2d(&self.conv2.forward(&h)?, 2)?)?;
        Ok(h.flatten_from(1)?)
    }

    /// The label predictor's last hidden representation (after its ReLU) of features: the
    /// adaptation layer's output when there is one (where DDC measures MMD; without a ReLU when
    /// `adaptation_relu` is off), else `fc2`'s.
    pub fn embed(&self, f: &Tensor) -> Result<Tensor> {
        let mut h = f.clone();
        let last = self.hidden.len() - 1;
        for (i, layer) in self.hidden.iter().enumerate() {
            h = layer.forward(&h)?;
            if i < last || self.cfg.adaptation_layer.is_none() || self.cfg.adaptation_relu {
                h = zoo_core::nn::relu(&h)?;
            }
        }
        Ok(h)
    }

    /// Class logits of an [`DigitNet::embed`] representation.
    pub fn classify_embedding(&self, e: &Tensor) -> Result<Tensor> {
        Ok(self.out.forward(e)?)
    }

    /// Class logits `G_y(f)` `[B, classes]` of features.
    pub fn classify_features(&self, f: &Tensor) -> Result<Tensor> {
        self.classify_embedding(&self.embed(f)?)
    }

    /// The configuration.
    pub fn config(&self) -> &DannConfig {
        &self.cfg
    }

    /// Class logits of images.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.classify_features(&self.features(x)?)
    }
}

/// `lambda_p = 2 / (1 + exp(-gamma p)) - 1` with `gamma = 10` (section 5.2.2): 0 at the start of
/// training, close to 1 at the end.
pub fn grl_lambda(p: f64) -> f64 {
    2.0 / (1.0 + (-10.0 * p.clamp(0.0, 1.0)).exp()) - 1.0
}

/// A DANN: the digit network plus a domain classifier behind a gradient reversal layer.
pub struct Dann {
    cfg: DannConfig,
    varmap: VarMap,
    /// Features and label predictor.
    pub net: DigitNet,
    domain: [Linear; 2],
}

impl ZooModel for Dann {
    const FAMILY: &'static str = "dann";
    type Config = DannConfig;

    fn build(cfg: &DannConfig, varmap: VarMap, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            net: DigitNet::new(cfg, vb.clone())?,
            domain: [
                zoo_core::nn::linear(cfg.feature_dim(), cfg.domain_hidden, vb.pp("domain.fc1"))?,
                zoo_core::nn::linear(cfg.domain_hidden, 1, vb.pp("domain.fc2"))?,
            ],
            cfg: cfg.clone(),
            varmap,
        })
    }
    fn config(&self) -> &DannConfig {
        &self.cfg
    }
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }
}

impl Dann {
    /// Domain logits `[B]` (positive: target) of features, through the gradient reversal layer
    /// with coefficient `lambda`: the forward pass is unchanged, the gradient reaching `features`
    /// is multiplied by `-lambda`.
    pub fn domain_logits(&self, features: &Tensor, lambda: f64) -> Result<Tensor> {
        let h = zoo_core::nn::relu(&self.domain[0].forward(&grad_reverse(features, lambda)?)?)?;
        Ok(self.domain[1].forward(&h)?.squeeze(1)?)
    }

    /// Class logits of images.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.net.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use zoo_core::gradcheck::vars_without_gradient;
    use zoo_core::loss::{bce_with_logits, cross_entropy};
    use zoo_core::ZooRng;
    use zoo_data::{build_mnistm, ImageSet, Mnist, Photos};

    fn model() -> Dann {
        let m = Dann::new(&DannConfig::mnist(), &Device::Cpu).unwrap();
        zoo_core::init::init_torch_default(m.varmap(), &mut ZooRng::new(0)).unwrap();
        m
    }

    fn domains(n: usize) -> (Tensor, Tensor, Tensor) {
        let mnist = Mnist::bundled_train_subset().unwrap().subset(0..n).unwrap();
        let target = build_mnistm(&mnist, &Photos::bundled().unwrap(), 0).unwrap();
        let idx: Vec<usize> = (0..n).collect();
        let (xs, ys) = ImageSet::from_mnist_rgb(&mnist).batch(&idx, &Device::Cpu).unwrap();
        let (xt, _) = target.batch(&idx, &Device::Cpu).unwrap();
        (xs, ys, xt)
    }

    fn domain_loss(m: &Dann, xs: &Tensor, xt: &Tensor, lambda: f64) -> Tensor {
        let f = Tensor::cat(&[m.net.features(xs).unwrap(), m.net.features(xt).unwrap()], 0).unwrap();
        let n = xs.dim(0).unwrap();
        let labels = Tensor::cat(
            &[Tensor::zeros(n, DType::F32, &Device::Cpu).unwrap(), Tensor::ones(n, DType::F32, &Device::Cpu).unwrap()],
            0,
        )
        .unwrap();
        bce_with_logits(&m.domain_logits(&f, lambda).unwrap(), &labels).unwrap()
    }

    #[test]
    fn features_get_minus_lambda_times_the_domain_gradient_and_the_head_gets_it_unchanged() {
        let m = model();
        let (xs, _, xt) = domains(8);
        let plain = domain_loss(&m, &xs, &xt, -1.0).backward().unwrap(); // -(-1) = identity
        let lambda = 0.37;
        let reversed = domain_loss(&m, &xs, &xt, lambda).backward().unwrap();
        let data = m.varmap().data().lock().unwrap();
        let mut checked = 0;
        for (name, var) in data.iter() {
            let (Some(g0), Some(g1)) = (plain.get(var.as_tensor()), reversed.get(var.as_tensor())) else {
                assert!(name.starts_with("classifier."), "{name} got no domain gradient");
                continue;
            };
            let scale = if name.starts_with("features.") { -lambda } else { 1.0 };
            let (a, b) = (
                g0.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                g1.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            let peak = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
            assert!(peak > 0.0);
            for (x, y) in a.iter().zip(&b) {
                assert!((x * scale as f32 - y).abs() <= 1e-5 * peak, "{name}: {x} * {scale} vs {y}");
            }
            checked += 1;
        }
        assert_eq!(checked, 8, "4 feature and 4 domain tensors");
    }

    #[test]
    fn one_step_reaches_every_variable_and_lowers_the_loss() {
        let m = model();
        let (xs, ys, xt) = domains(32);
        let loss = |m: &Dann| {
            (cross_entropy(&m.net.forward(&xs).unwrap(), &ys).unwrap() + domain_loss(m, &xs, &xt, 0.5)).unwrap()
        };
        let grads = loss(&m).backward().unwrap();
        assert_eq!(vars_without_gradient(m.varmap(), &grads), Vec::<String>::new());
        let mut opt = zoo_core::optim::Sgd::new(
            zoo_core::optim::named_vars(m.varmap(), ""),
            zoo_core::optim::SgdConfig::new(0.01, 0.9),
        )
        .unwrap();
        let ce = |m: &Dann| cross_entropy(&m.net.forward(&xs).unwrap(), &ys).unwrap().to_scalar::<f32>().unwrap();
        let before = ce(&m);
        for _ in 0..10 {
            zoo_core::optim::Optimizer::step(&mut opt, &loss(&m).backward().unwrap()).unwrap();
        }
        assert!(ce(&m) < before, "{before} -> {}", ce(&m));
    }

    #[test]
    fn schedule_shapes_and_bad_inputs() {
        assert_eq!(grl_lambda(0.0), 0.0);
        assert!((grl_lambda(1.0) - (2.0 / (1.0 + (-10f64).exp()) - 1.0)).abs() < 1e-15);
        assert!(grl_lambda(0.5) > 0.98 && grl_lambda(0.1) < 0.5);
        assert_eq!(DannConfig::mnist().feature_dim(), 768);
        let m = model();
        let grey = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
        let e = m.forward(&grey).unwrap_err().to_string();
        assert!(e.contains("[batch, 3, 28, 28]") && e.contains("[2, 1, 28, 28]"), "{e}");
    }

    #[test]
    fn save_load_is_bit_exact() {
        let m = model();
        let (xs, _, xt) = domains(4);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dann.safetensors");
        m.save(&p).unwrap();
        let back = Dann::load(&p, &Device::Cpu).unwrap();
        for x in [&xs, &xt] {
            assert_eq!(
                m.forward(x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                back.forward(x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
    }
}
