//! Layer normalisation (Ba et al. 2016) with gradients.
//!
//! `candle_nn::LayerNorm` runs a fused kernel on contiguous input that has no backward pass: no
//! gradient reaches the input, the gain or the bias. This one has gradients: a fused op with its
//! own backward on the CPU, composed of basic ops on other devices.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// `y = (x - mean) / sqrt(var + eps) * weight + bias` over the last dimension: one fused op
/// forward and backward on the CPU ([`zoo_kernels::layer_norm`]), Candle's ops composed elsewhere.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    zoo_kernels::layer_norm(x, weight, bias, eps)
}

/// A trainable LayerNorm with PyTorch parameter names (`weight`, `bias`).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// Gain, shape `[dim]`, initialised to ones.
    pub weight: Tensor,
    /// Bias, shape `[dim]`, initialised to zeros (absent when built without bias).
    pub bias: Option<Tensor>,
    /// Added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// Creates the parameters under `vb` (`vb.pp("layer_norm")` style prefixes by the caller).
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { weight, bias: Some(bias), eps })
    }

    /// Same, without a bias.
    pub fn new_no_bias(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?;
        Ok(Self { weight, bias: None, eps })
    }
}

impl candle_core::Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, &self.weight, self.bias.as_ref(), self.eps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, randn64};
    use candle_core::{DType, Device, Module, D};
    use candle_nn::VarMap;

    #[test]
    fn normalises_and_has_gradients_for_input_weight_and_bias() {
        let x = randn64(&[4, 6], 3).affine(3.0, 1.0).unwrap();
        let w = randn64(&[6], 4);
        let b = randn64(&[6], 5);
        let up = randn64(&[4, 6], 6);
        let y = layer_norm(&x, &Tensor::ones(6, DType::F64, &Device::Cpu).unwrap(), None, 1e-5).unwrap();
        let m = y.mean_keepdim(D::Minus1).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let v = y.sqr().unwrap().mean_keepdim(D::Minus1).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for i in 0..4 {
            assert!(m[i].abs() < 1e-10 && (v[i] - 1.0).abs() < 1e-3);
        }
        check_gradient(&x, |x| layer_norm(x, &w, Some(&b), 1e-5)?.mul(&up)?.sum_all());
        check_gradient(&w, |w| layer_norm(&x, w, Some(&b), 1e-5)?.mul(&up)?.sum_all());
        check_gradient(&b, |b| layer_norm(&x, &w, Some(b), 1e-5)?.mul(&up)?.sum_all());

        // The module version registers trainable `weight` and `bias`, and both get gradients.
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let ln = LayerNorm::new(6, 1e-5, vb.pp("norm")).unwrap();
        let loss = ln.forward(&x).unwrap().mul(&up).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let data = vm.data().lock().unwrap();
        for name in ["norm.weight", "norm.bias"] {
            let g = grads.get(data[name].as_tensor()).expect(name);
            assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap() > 0.0, "{name}");
        }
    }
}
