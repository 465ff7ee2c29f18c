//! A sequential chain that passes the train flag to every layer.
//!
//! `candle_nn::Sequential` takes `Module`s, so a train flag never reaches BatchNorm or Dropout.

use candle_core::{ModuleT, Result, Tensor};

/// Element-wise activations, usable as chain layers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// max(0, x)
    Relu,
    /// max(slope x, x)
    LeakyRelu(f64),
    /// tanh(x)
    Tanh,
    /// 1 / (1 + exp(-x))
    Sigmoid,
    /// Gaussian error linear unit (tanh approximation)
    Gelu,
    /// Flattens all dimensions after the batch dimension.
    Flatten,
}

impl ModuleT for Activation {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        match *self {
            Activation::Relu => super::relu(x),
            // The fused kernel takes slopes in [0, 1]; other slopes keep the composed form.
            Activation::LeakyRelu(s) if (0.0..=1.0).contains(&s) => super::leaky_relu(x, s),
            Activation::LeakyRelu(s) => x.maximum(&(x * s)?),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => candle_nn::ops::sigmoid(x),
            Activation::Gelu => x.gelu(),
            Activation::Flatten => x.flatten_from(1),
        }
    }
}

/// Layers applied in order with `forward_t(x, train)`.
#[derive(Default)]
pub struct SequentialT {
    layers: Vec<Box<dyn ModuleT + Send + Sync>>,
}

/// An empty [`SequentialT`].
pub fn seq_t() -> SequentialT {
    SequentialT::default()
}

impl SequentialT {
    /// Appends a layer.
    #[allow(clippy::should_implement_trait)]
    pub fn add<M: ModuleT + Send + Sync + 'static>(mut self, layer: M) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether the chain has no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl std::fmt::Debug for SequentialT {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SequentialT({} layers)", self.layers.len())
    }
}

impl ModuleT for SequentialT {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward_t(&x, train)?;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Dropout, SharedRng};
    use crate::ZooRng;
    use candle_core::{DType, Device};
    use std::sync::{Arc, Mutex};

    #[test]
    fn train_flag_reaches_dropout_and_batch_norm() {
        let dev = Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let rng: SharedRng = Arc::new(Mutex::new(ZooRng::new(0)));
        let bn = candle_nn::batch_norm(4, candle_nn::BatchNormConfig::default(), vb.pp("bn")).unwrap();
        let net = seq_t().add(bn).add(Activation::Relu).add(Dropout::new(0.5, rng));
        assert_eq!(net.len(), 3);
        let x = ZooRng::new(1).normal((8, 4), 3.0, 1.0, DType::F32, &dev).unwrap();
        let eval1 = net.forward_t(&x, false).unwrap().to_vec2::<f32>().unwrap();
        let eval2 = net.forward_t(&x, false).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(eval1, eval2, "eval mode is deterministic");
        let train = net.forward_t(&x, true).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(train.contains(&0.0), "dropout active in training");
        // Training mode updated the running mean (it moved towards 3.0 from 0).
        let rm = vm.data().lock().unwrap()["bn.running_mean"].as_tensor().to_vec1::<f32>().unwrap();
        assert!(rm.iter().all(|&m| m > 0.1), "{rm:?}");
    }
}
