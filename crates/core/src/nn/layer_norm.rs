//! Layer normalisation (Ba et al. 2016) with gradients.
//!
//! `candle_nn::LayerNorm` runs a fused kernel on contiguous input that has no backward pass: no
//! gradient reaches the input, the gain or the bias. This one is composed of basic ops.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

/// `y = (x - mean) / sqrt(var + eps) * weight + bias` over the last dimension.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    // Statistics in f32 at least, for f16/bf16 inputs.
    let xf = if matches!(dtype, DType::F16 | DType::BF16) { x.to_dtype(DType::F32)? } else { x.clone() };
    let mean = xf.mean_keepdim(D::Minus1)?;
    let centred = xf.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?.to_dtype(dtype)?;
    let y = normed.broadcast_mul(weight)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
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
    use candle_core::{Device, Module};
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
