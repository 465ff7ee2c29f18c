//! Softmax and log-softmax that backpropagate.
//!
//! Candle's `ops::softmax_last_dim` is a fused kernel without a backward pass: gradients stop there
//! without an error. These versions are composed of basic ops (max-shifted for stability).

use candle_core::{Result, Tensor, D};

/// `softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x)` along `dim`, with gradients.
/// Over the last dimension the CPU path is one fused op ([`zoo_kernels::softmax_last_dim`]).
pub fn softmax<Dim: candle_core::shape::Dim + Copy>(x: &Tensor, dim: Dim) -> Result<Tensor> {
    if x.rank() > 0 && dim.to_index(x.shape(), "softmax")? + 1 == x.rank() {
        return zoo_kernels::softmax_last_dim(x);
    }
    // The shift is a constant for the gradient (softmax is shift-invariant), so detach it.
    let max = x.max_keepdim(dim)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(dim)?;
    e.broadcast_div(&s)
}

/// `log_softmax(x)_i = x_i - max x - log sum_j exp(x_j - max x)` along `dim`, with gradients.
pub fn log_softmax<Dim: candle_core::shape::Dim + Copy>(x: &Tensor, dim: Dim) -> Result<Tensor> {
    let max = x.max_keepdim(dim)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(dim)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Softmax over the last dimension (the common case in attention).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    softmax(x, D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, randn64};
    use candle_core::{Device, D};

    #[test]
    fn softmax_matches_definition_and_has_gradients() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1.0f64, 2.0, 3.0], [1000.0, 1000.0, -1000.0]], &dev).unwrap();
        let s = softmax(&x, D::Minus1).unwrap().to_vec2::<f64>().unwrap();
        let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).collect();
        let z: f64 = e.iter().sum();
        for i in 0..3 {
            assert!((s[0][i] - e[i] / z).abs() < 1e-12);
        }
        assert!((s[1][0] - 0.5).abs() < 1e-12 && s[1][2] < 1e-300);
        let ls = log_softmax(&x, D::Minus1).unwrap().to_vec2::<f64>().unwrap();
        assert!((ls[0][2] - (e[2] / z).ln()).abs() < 1e-12);
        assert!(ls[1][2].is_finite());

        let x = randn64(&[3, 5], 1);
        let w = randn64(&[3, 5], 2);
        check_gradient(&x, |x| softmax(x, D::Minus1)?.mul(&w)?.sum_all());
        check_gradient(&x, |x| log_softmax(x, 0)?.mul(&w)?.sum_all());
        check_gradient(&x, |x| softmax_last(x)?.sqr()?.sum_all());
    }
}
