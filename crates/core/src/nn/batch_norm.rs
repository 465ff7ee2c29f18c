//! Batch normalisation backed by the fused CPU kernel of [`zoo_kernels::batch_norm_train`].
//!
//! A drop-in replacement for `candle_nn::BatchNorm`: the same constructor, config, parameter
//! names (`weight`, `bias`, `running_mean`, `running_var`) and running-statistics update
//! (momentum on the mean and on the unbiased variance), so checkpoints are interchangeable.
//! Evaluation mode, non-CPU devices, and the non-affine or no-mean-removal configurations use
//! Candle's layer.

use candle_core::{DType, Result, Tensor, Var};
use candle_nn::{BatchNormConfig, ModuleT, VarBuilder};

/// A batch-normalisation layer over dimension 1 of `[B, C, ...]` inputs.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    inner: candle_nn::BatchNorm,
    running_mean: Var,
    running_var: Var,
    momentum: f64,
    /// Whether the fused kernel applies (affine, mean removed); Candle's layer otherwise.
    fused: bool,
}

/// A batch-normalisation layer over `c` channels under `vb` (`weight`, `bias`, `running_mean`,
/// `running_var`), as `candle_nn::batch_norm` builds it.
pub fn batch_norm<C: Into<BatchNormConfig>>(c: usize, config: C, vb: VarBuilder) -> Result<BatchNorm> {
    let config = config.into();
    let inner = candle_nn::batch_norm(c, config, vb)?;
    // Candle's layer holds the varmap's own tensors; these handles share their storage.
    let running_mean = Var::from_tensor(inner.running_mean())?;
    let running_var = Var::from_tensor(inner.running_var())?;
    let fused = config.affine && config.remove_mean;
    Ok(BatchNorm { inner, running_mean, running_var, momentum: config.momentum, fused })
}

impl BatchNorm {
    /// The running mean `[C]`.
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }
    /// The running (unbiased) variance `[C]`.
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }
    /// The affine scale and shift, if the layer has them.
    pub fn weight_and_bias(&self) -> Option<(&Tensor, &Tensor)> {
        self.inner.weight_and_bias()
    }

    fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        let Some((w, b)) = self.inner.weight_and_bias() else { return self.inner.forward_t(x, true) };
        let fast =
            self.fused && x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && w.dtype() == x.dtype();
        if !fast || x.rank() < 2 {
            return self.inner.forward_t(x, true);
        }
        let (y, mean, var) = zoo_kernels::batch_norm_train(x, w, b, self.inner.eps())?;
        let n = (x.elem_count() / x.dim(1)?) as f64;
        let m = self.momentum;
        let rm = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?;
        let unbiased = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
        let rv = ((self.running_var.as_tensor() * (1.0 - m))? + (var * (m * unbiased))?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)?;
        Ok(y)
    }
}

impl BatchNorm {
    /// Evaluation mode as PyTorch computes it: per-channel `scale = w / sqrt(var + eps)` and
    /// `shift = b - mean * scale` from the running statistics, then one pass `x * scale + shift`
    /// (Candle's layer makes four full-size passes: subtract, divide, multiply, add).
    fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        let Some((w, b)) = self.inner.weight_and_bias() else { return self.inner.forward_t(x, false) };
        let c = w.elem_count();
        if !self.fused || x.rank() < 2 || x.dim(1)? != c || w.dtype() != x.dtype() {
            return self.inner.forward_t(x, false);
        }
        let scale = w.div(&(self.running_var.as_tensor() + self.inner.eps())?.sqrt()?)?;
        let shift = b.sub(&self.running_mean.as_tensor().mul(&scale)?)?;
        zoo_kernels::channel_affine(x, &scale, &shift)
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            self.forward_train(x)
        } else {
            self.forward_eval(x)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::randn64;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn pair(c: usize) -> (VarMap, BatchNorm, VarMap, candle_nn::BatchNorm) {
        let (a, b) = (VarMap::new(), VarMap::new());
        let ours = batch_norm(c, BatchNormConfig::default(), VarBuilder::from_varmap(&a, DType::F64, &Device::Cpu));
        let theirs =
            candle_nn::batch_norm(c, BatchNormConfig::default(), VarBuilder::from_varmap(&b, DType::F64, &Device::Cpu));
        // Non-trivial affine parameters, the same in both.
        for (name, seed) in [("weight", 1), ("bias", 2)] {
            let v = randn64(&[c], seed);
            a.data().lock().unwrap()[name].set(&v).unwrap();
            b.data().lock().unwrap()[name].set(&v).unwrap();
        }
        (a, ours.unwrap(), b, theirs.unwrap())
    }

    fn diff(a: &Tensor, b: &Tensor) -> f64 {
        a.sub(b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn agrees_with_candles_layer_in_outputs_gradients_and_running_statistics() {
        for shape in [vec![8, 3], vec![4, 3, 5, 5]] {
            let (a, ours, b, theirs) = pair(3);
            let x = randn64(&shape, 3).affine(2.0, 1.0).unwrap();
            let probe = randn64(&shape, 4);
            for _ in 0..2 {
                let y1 = ours.forward_t(&x, true).unwrap();
                let y2 = theirs.forward_t(&x, true).unwrap();
                assert!(diff(&y1, &y2) < 1e-12, "{shape:?}");
                let g1 = (y1 * &probe).unwrap().sum_all().unwrap().backward().unwrap();
                let g2 = (y2 * &probe).unwrap().sum_all().unwrap().backward().unwrap();
                for name in ["weight", "bias"] {
                    let (va, vb) = (a.data().lock().unwrap()[name].clone(), b.data().lock().unwrap()[name].clone());
                    assert!(diff(g1.get(&va).unwrap(), g2.get(&vb).unwrap()) < 1e-10, "{shape:?} {name}");
                }
            }
            for name in ["running_mean", "running_var"] {
                let (va, vb) = (a.data().lock().unwrap()[name].clone(), b.data().lock().unwrap()[name].clone());
                assert!(diff(va.as_tensor(), vb.as_tensor()) < 1e-12, "{shape:?} {name}");
                // The statistics moved from their initial values (mean 0, variance 1).
                let init = if name == "running_mean" { 0.0 } else { 1.0 };
                assert!(diff(va.as_tensor(), &va.ones_like().unwrap().affine(0.0, init).unwrap()) > 1e-3, "{name}");
            }
            let e1 = ours.forward_t(&x, false).unwrap();
            let e2 = theirs.forward_t(&x, false).unwrap();
            assert!(diff(&e1, &e2) < 1e-12, "{shape:?}");
        }
    }

    #[test]
    fn the_input_gradient_matches_candles_layer() {
        let (_, ours, _, theirs) = pair(4);
        let x = Var::from_tensor(&randn64(&[6, 4, 3, 2], 5)).unwrap();
        let probe = randn64(&[6, 4, 3, 2], 6);
        let g1 = (ours.forward_t(&x, true).unwrap().sqr().unwrap() * &probe).unwrap().sum_all().unwrap();
        let g2 = (theirs.forward_t(&x, true).unwrap().sqr().unwrap() * &probe).unwrap().sum_all().unwrap();
        let (g1, g2) = (g1.backward().unwrap(), g2.backward().unwrap());
        assert!(diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-10);
    }

    #[test]
    fn evaluation_mode_matches_candles_layer_in_outputs_and_all_gradients() {
        for shape in [vec![5, 4], vec![3, 4, 3, 2]] {
            let (a, ours, b, theirs) = pair(4);
            // Non-trivial running statistics, the same in both.
            for (name, seed) in [("running_mean", 7), ("running_var", 8)] {
                let v = randn64(&[4], seed);
                let v = if name == "running_var" { v.abs().unwrap().affine(1.0, 0.1).unwrap() } else { v };
                a.data().lock().unwrap()[name].set(&v).unwrap();
                b.data().lock().unwrap()[name].set(&v).unwrap();
            }
            let x = Var::from_tensor(&randn64(&shape, 5)).unwrap();
            let probe = randn64(&shape, 6);
            let (y1, y2) = (ours.forward_t(&x, false).unwrap(), theirs.forward_t(&x, false).unwrap());
            assert!(diff(&y1, &y2) < 1e-12, "{shape:?}: outputs differ by {}", diff(&y1, &y2));
            let g1 = (y1.sqr().unwrap() * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (y2.sqr().unwrap() * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            assert!(diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-10, "{shape:?} input");
            for name in ["weight", "bias"] {
                let (va, vb) = (a.data().lock().unwrap()[name].clone(), b.data().lock().unwrap()[name].clone());
                let (ga, gb) = (g1.get(&va).unwrap(), g2.get(&vb).unwrap());
                assert!(diff(ga, gb) < 1e-10, "{shape:?} {name}: {}", diff(ga, gb));
            }
        }
    }
}
