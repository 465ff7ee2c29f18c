//! The judge network.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Conv2dConfig, VarBuilder, VarMap};
use zoo_core::checkpoint::ZooModel;
use zoo_core::nn::Linear;
use zoo_core::nn::{max_pool2d, relu, Conv2d};
use zoo_core::ZooRng;
use zoo_data::Mnist;

use super::JudgeConfig;

const MNIST_MEAN: f64 = 0.1307;
const MNIST_STD: f64 = 0.3081;

/// The judge classifier. Input: `[B, 1, 28, 28]` images with values in `[0, 1]`.
pub struct Judge {
    cfg: JudgeConfig,
    varmap: VarMap,
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

impl std::fmt::Debug for Judge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Judge").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl ZooModel for Judge {
    const FAMILY: &'static str = "judge";
    type Config = JudgeConfig;

    fn build(cfg: &JudgeConfig, varmap: VarMap, vb: VarBuilder) -> Result<Self> {
        if !cfg.image_size.is_multiple_of(4) || cfg.image_size == 0 {
            bail!("judge image size must be a positive multiple of 4, got {}", cfg.image_size);
        }
        let conv = Conv2dConfig { padding: 2, ..Default::default() };
        let side = cfg.image_size / 4;
        Ok(Self {
            conv1: zoo_core::nn::conv2d(1, cfg.conv1_channels, 5, conv, vb.pp("conv1"))?,
            conv2: zoo_core::nn::conv2d(cfg.conv1_channels, cfg.conv2_channels, 5, conv, vb.pp("conv2"))?,
            fc1: zoo_core::nn::linear(cfg.conv2_channels * side * side, cfg.hidden, vb.pp("fc1"))?,
            fc2: zoo_core::nn::linear(cfg.hidden, 10, vb.pp("fc2"))?,
            cfg: cfg.clone(),
            varmap,
        })
    }
    fn config(&self) -> &JudgeConfig {
        &self.cfg
    }
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }
}

impl Judge {
    fn check_input(&self, x: &Tensor) -> Result<()> {
        let s = self.cfg.image_size;
        match x.dims() {
            [_, 1, h, w] if *h == s && *w == s => Ok(()),
            d => bail!("the judge takes images of shape [batch, 1, {s}, {s}] with values in [0, 1], got {d:?}"),
        }
    }

    /// The 128-d penultimate features (after ReLU), used for judge-feature distances. For
    /// evaluation: each conv block runs as one fused op on the CPU
    /// ([`zoo_core::nn::Conv2d::forward_max_pool2_relu`]), which has no backward.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.features_t(x, false)
    }

    /// The features, with a gradient path through every layer when `train`.
    fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_input(x)?;
        let x = x.to_dtype(self.fc1.weight().dtype())?.affine(1.0 / MNIST_STD, -MNIST_MEAN / MNIST_STD)?;
        let x = if train {
            // Pooling before ReLU: the same values as after, on a quarter of the elements, with
            // the correct gradient (zoo-core's pooling; Candle 0.11's divides it by the window's
            // area).
            let x = relu(&max_pool2d(&self.conv1.forward(&x)?, 2)?)?;
            relu(&max_pool2d(&self.conv2.forward(&x)?, 2)?)?
        } else {
            self.conv2.forward_max_pool2_relu(&self.conv1.forward_max_pool2_relu(&x)?)?
        };
        Ok(relu(&self.fc1.forward(&x.flatten_from(1)?)?)?)
    }

    /// Class logits `[B, 10]` in evaluation mode (no dropout).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.fc2.forward(&self.features(x)?)?)
    }

    /// Class logits in training mode: seeded dropout on the features.
    pub fn forward_train(&self, x: &Tensor, rng: &mut ZooRng) -> Result<Tensor> {
        let h = zoo_core::nn::dropout(&self.features_t(x, true)?, self.cfg.dropout, rng)?;
        Ok(self.fc2.forward(&h)?)
    }

    /// Class probabilities `[B, 10]`.
    pub fn probabilities(&self, x: &Tensor) -> Result<Tensor> {
        Ok(zoo_core::nn::softmax(&self.forward(x)?, D::Minus1)?)
    }

    /// Predicted classes `[B]` (u32).
    pub fn predict(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward(x)?.argmax(D::Minus1)?)
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.varmap.all_vars().iter().map(|v| v.elem_count()).sum()
    }
}

/// Converts any image (colour or grey, any size) into the judge's input `[1, 1, 28, 28]`:
/// luminance, resized with a Lanczos filter, values in `[0, 1]`. MNIST digits are light on dark;
/// pass `invert = true` for dark ink on a light background.
pub fn image_to_input(img: &image::DynamicImage, size: usize, invert: bool, dev: &Device) -> Result<Tensor> {
    let grey = img.to_luma8();
    let resized = image::imageops::resize(&grey, size as u32, size as u32, image::imageops::FilterType::Lanczos3);
    let v: Vec<f32> = resized
        .pixels()
        .map(|p| {
            let x = p.0[0] as f32 / 255.0;
            if invert {
                1.0 - x
            } else {
                x
            }
        })
        .collect();
    Ok(Tensor::from_vec(v, (1, 1, size, size), dev)?)
}

/// Results of [`evaluate`].
#[derive(Debug, Clone)]
pub struct JudgeEval {
    /// Fraction of correct predictions.
    pub accuracy: f64,
    /// Predicted class of every example, in order.
    pub predictions: Vec<u32>,
    /// True class of every example.
    pub labels: Vec<u32>,
}

/// Classifies every image of `data` in batches and measures the accuracy.
pub fn evaluate(judge: &Judge, data: &Mnist, batch_size: usize, dev: &Device) -> Result<JudgeEval> {
    if data.is_empty() {
        bail!("cannot evaluate on an empty data set");
    }
    let mut predictions = Vec::with_capacity(data.len());
    let mut labels = Vec::with_capacity(data.len());
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let (x, y) = data.batch(chunk, dev)?;
        predictions.extend(judge.predict(&x)?.to_dtype(DType::U32)?.to_vec1::<u32>()?);
        labels.extend(y.to_dtype(DType::U32)?.to_vec1::<u32>().context("labels")?);
    }
    let correct = predictions.iter().zip(&labels).filter(|(p, l)| p == l).count();
    Ok(JudgeEval { accuracy: correct as f64 / labels.len() as f64, predictions, labels })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn evaluation_features_are_the_training_path_s_bit_for_bit() {
        let dev = Device::Cpu;
        let judge = Judge::from_pretrained("judge-mnist", &dev).unwrap();
        let (x, _) = zoo_data::Mnist::bundled_test_slice().unwrap().batch(&(0..37).collect::<Vec<_>>(), &dev).unwrap();
        let bits = |t: Tensor| {
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let eval = bits(judge.features(&x).unwrap());
        assert_eq!(eval, bits(judge.features_t(&x, true).unwrap()));
        assert!(eval.iter().any(|b| *b != 0), "all-zero features");
    }
}
