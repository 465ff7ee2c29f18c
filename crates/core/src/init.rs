//! Weight initialisers, applied to a model's variables after it is built, from a [`ZooRng`].
//!
//! Candle's `VarMap` initialises from the unseedable CPU RNG; calling [`init_varmap`] right after
//! building a model makes the starting weights a function of the seed alone. Variables are visited
//! in sorted name order, so the result does not depend on hash-map order.

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::ZooRng;

/// How to draw one tensor. Fans follow PyTorch: for a weight `[out, in, k...]`,
/// `fan_in = in * prod(k)` and `fan_out = out * prod(k)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// All zeros.
    Zeros,
    /// A constant.
    Constant(f64),
    /// N(mean, std^2), e.g. DCGAN's N(0, 0.02).
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// U(lo, hi).
    Uniform {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// Glorot & Bengio 2010: U(-a, a), `a = gain * sqrt(6 / (fan_in + fan_out))`.
    XavierUniform {
        /// Gain.
        gain: f64,
    },
    /// Glorot & Bengio 2010: N(0, gain^2 * 2 / (fan_in + fan_out)).
    XavierNormal {
        /// Gain.
        gain: f64,
    },
    /// He et al. 2015 (fan-in mode, ReLU gain): N(0, 2 / fan_in).
    KaimingNormal,
    /// He et al. 2015 (fan-in mode, ReLU gain): U(-a, a), `a = sqrt(6 / fan_in)`.
    KaimingUniform,
    /// PyTorch's default for Linear/Conv weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    TorchDefault {
        /// The fan-in of the layer (for a bias, that of its weight).
        fan_in: usize,
    },
}

/// `(fan_in, fan_out)` of a weight shape, PyTorch's convention.
pub fn fans(dims: &[usize]) -> (usize, usize) {
    match dims.len() {
        0 => (1, 1),
        1 => (dims[0], dims[0]),
        _ => {
            let receptive: usize = dims[2..].iter().product();
            (dims[1] * receptive, dims[0] * receptive)
        }
    }
}

impl Init {
    /// Draws a tensor of `dims` on the host (f64 draws), in `dtype` on `dev`.
    pub fn sample(&self, dims: &[usize], dtype: DType, dev: &candle_core::Device, rng: &mut ZooRng) -> Result<Tensor> {
        let (fan_in, fan_out) = fans(dims);
        let t = match *self {
            Init::Zeros => Tensor::zeros(dims, dtype, dev)?,
            Init::Constant(c) => (Tensor::ones(dims, dtype, dev)? * c)?,
            Init::Normal { mean, std } => rng.normal(dims, mean, std, dtype, dev)?,
            Init::Uniform { lo, hi } => rng.uniform(dims, lo, hi, dtype, dev)?,
            Init::XavierUniform { gain } => {
                let a = gain * (6.0 / (fan_in + fan_out) as f64).sqrt();
                rng.uniform(dims, -a, a, dtype, dev)?
            }
            Init::XavierNormal { gain } => {
                let std = gain * (2.0 / (fan_in + fan_out) as f64).sqrt();
                rng.normal(dims, 0.0, std, dtype, dev)?
            }
            Init::KaimingNormal => rng.normal(dims, 0.0, (2.0 / fan_in as f64).sqrt(), dtype, dev)?,
            Init::KaimingUniform => {
                let a = (6.0 / fan_in as f64).sqrt();
                rng.uniform(dims, -a, a, dtype, dev)?
            }
            Init::TorchDefault { fan_in } => {
                let a = 1.0 / (fan_in.max(1) as f64).sqrt();
                rng.uniform(dims, -a, a, dtype, dev)?
            }
        };
        Ok(t)
    }
}

/// Whether a variable name is a trainable parameter (BatchNorm running statistics are not).
pub fn is_trainable_name(name: &str) -> bool {
    !(name.ends_with("running_mean") || name.ends_with("running_var") || name.ends_with("num_batches_tracked"))
}

/// Re-initialises every variable of `varmap` for which `rule(name, dims)` returns an [`Init`],
/// visiting names in sorted order. Returns how many variables were set.
pub fn init_varmap<F>(varmap: &VarMap, rng: &mut ZooRng, rule: F) -> Result<usize>
where
    F: Fn(&str, &[usize]) -> Option<Init>,
{
    let data = varmap.data().lock().map_err(|_| anyhow::anyhow!("variable map lock poisoned"))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut count = 0;
    for name in names {
        let var = &data[name];
        if let Some(init) = rule(name, var.dims()) {
            let t = init.sample(var.dims(), var.dtype(), var.device(), rng)?;
            var.set(&t).with_context(|| format!("cannot initialise variable {name}"))?;
            count += 1;
        }
    }
    Ok(count)
}

/// PyTorch's default initialisation for a model made of Linear/Conv/norm layers: weights of rank
/// two or more and their biases `U(+-1/sqrt(fan_in))`; rank-1 `weight` (norm gains) ones, other
/// rank-1 parameters whose sibling weight is rank 1 zeros; running statistics untouched.
pub fn init_torch_default(varmap: &VarMap, rng: &mut ZooRng) -> Result<usize> {
    let shapes: std::collections::HashMap<String, Vec<usize>> = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("variable map lock poisoned"))?
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    init_varmap(varmap, rng, |name, dims| {
        if !is_trainable_name(name) {
            return None;
        }
        if dims.len() >= 2 {
            return Some(Init::TorchDefault { fan_in: fans(dims).0 });
        }
        let prefix = name.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
        let sibling = if prefix.is_empty() { "weight".to_string() } else { format!("{prefix}.weight") };
        match shapes.get(&sibling) {
            Some(w) if w.len() >= 2 => Some(Init::TorchDefault { fan_in: fans(w).0 }),
            _ if name.ends_with("weight") => Some(Init::Constant(1.0)),
            _ => Some(Init::Zeros),
        }
    })
}

/// DCGAN's initialisation (Radford et al. 2016): conv and linear weights N(0, 0.02), norm gains
/// N(1, 0.02), biases zero.
pub fn init_dcgan(varmap: &VarMap, rng: &mut ZooRng) -> Result<usize> {
    init_varmap(varmap, rng, |name, dims| {
        if !is_trainable_name(name) {
            None
        } else if dims.len() >= 2 {
            Some(Init::Normal { mean: 0.0, std: 0.02 })
        } else if name.ends_with("weight") {
            Some(Init::Normal { mean: 1.0, std: 0.02 })
        } else {
            Some(Init::Zeros)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarBuilder;

    fn build(vm: &VarMap) {
        let vb = VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu);
        candle_nn::linear(300, 200, vb.pp("fc")).unwrap();
        candle_nn::conv2d(3, 8, 5, Default::default(), vb.pp("conv")).unwrap();
        candle_nn::batch_norm(8, candle_nn::BatchNormConfig::default(), vb.pp("bn")).unwrap();
    }

    fn values(vm: &VarMap, name: &str) -> Vec<f32> {
        vm.data().lock().unwrap()[name].as_tensor().flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn same_seed_same_weights_and_right_scales() {
        let (a, b, c) = (VarMap::new(), VarMap::new(), VarMap::new());
        for vm in [&a, &b, &c] {
            build(vm);
        }
        init_torch_default(&a, &mut ZooRng::new(5)).unwrap();
        init_torch_default(&b, &mut ZooRng::new(5)).unwrap();
        init_torch_default(&c, &mut ZooRng::new(6)).unwrap();
        assert_eq!(values(&a, "fc.weight"), values(&b, "fc.weight"));
        assert_ne!(values(&a, "fc.weight"), values(&c, "fc.weight"));
        let bound = 1.0 / (300f32).sqrt();
        assert!(values(&a, "fc.bias").iter().all(|v| v.abs() <= bound));
        assert!(values(&a, "bn.weight").iter().all(|&v| v == 1.0));
        assert!(values(&a, "bn.running_var").iter().all(|&v| v == 1.0), "running stats untouched");

        let n = init_varmap(&a, &mut ZooRng::new(1), |name, dims| {
            (dims.len() >= 2 && name.starts_with("fc")).then_some(Init::KaimingNormal)
        })
        .unwrap();
        assert_eq!(n, 1);
        let w = values(&a, "fc.weight");
        let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        assert!((std - (2.0f32 / 300.0).sqrt()).abs() < 0.005, "{std}");
        init_dcgan(&a, &mut ZooRng::new(2)).unwrap();
        let w = values(&a, "conv.weight");
        let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        assert!((std - 0.02).abs() < 0.003, "{std}");
        assert_eq!(fans(&[8, 3, 5, 5]), (75, 200));
        let x = Init::XavierUniform { gain: 1.0 }
            .sample(&[100, 50], DType::F64, &Device::Cpu, &mut ZooRng::new(3))
            .unwrap();
        let a_bound = (6.0f64 / 150.0).sqrt();
        assert!(x.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap() <= a_bound);
    }
}
