//! A fully connected layer backed by [`zoo_kernels::linear`]: one GEMM forward, three backward,
//! every gradient contiguous. A drop-in replacement for `candle_nn::Linear`: same constructors,
//! initialisation and parameter names (`weight` `[out, in]`, `bias` `[out]`), so checkpoints are
//! interchangeable.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `y = x W^T + b` over the last dimension of `x`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// A layer from existing tensors: `weight` `[out, in]`, optional `bias` `[out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }
    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    /// The bias `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        zoo_kernels::linear(x, &self.weight, self.bias.as_ref())
    }
}

/// A layer with bias, initialised as `candle_nn::linear` (weight Kaiming-normal-like, bias
/// uniform in `±1/sqrt(in)`), variables `weight` and `bias` under `vb`.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let l = candle_nn::linear(in_dim, out_dim, vb)?;
    Ok(Linear::new(l.weight().clone(), l.bias().cloned()))
}

/// A layer without bias, initialised as `candle_nn::linear_no_bias`.
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let l = candle_nn::linear_no_bias(in_dim, out_dim, vb)?;
    Ok(Linear::new(l.weight().clone(), None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn matches_candle_nn_linear_with_the_same_variables() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let ours = linear(5, 3, vb.pp("fc")).unwrap();
        // The same names fetch the same variables: candle_nn's layer reads ours.
        let theirs = candle_nn::linear(5, 3, vb.pp("fc")).unwrap();
        assert_eq!(vm.all_vars().len(), 2);
        let x = Tensor::arange(0f32, 20., &Device::Cpu).unwrap().reshape((4, 5)).unwrap();
        let (a, b) = (ours.forward(&x).unwrap(), theirs.forward(&x).unwrap());
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{diff}");
        let no_bias = linear_no_bias(5, 2, vb.pp("nb")).unwrap();
        assert!(no_bias.bias().is_none());
        assert_eq!(no_bias.forward(&x).unwrap().dims(), [4, 2]);
    }
}
