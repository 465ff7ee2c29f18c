//! Maximum mean discrepancy between two samples (Gretton et al. 2012).
//!
//! - [`mmd2_linear`]: the linear-kernel MMD^2 used by DDC (Tzeng et al. 2014):
//!   `|| mean_i phi(x_s,i) - mean_j phi(x_t,j) ||^2`.
//! - [`mmd2_multi_rbf`]: the biased estimator with a sum of Gaussian kernels (as in DAN, Long et
//!   al. 2015): `mean k(s,s') + mean k(t,t') - 2 mean k(s,t)`, `k = sum_u exp(-||a-b||^2 / (2 sigma_u^2))`.

use candle_core::{Result, Tensor, D};
use serde::{Deserialize, Serialize};

/// Which MMD estimator to use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MmdKernel {
    /// Squared distance of the means (linear kernel).
    Linear,
    /// Sum of Gaussian kernels with bandwidths `base * multiplier^k`, `k` centred around 0, where
    /// `base` is the mean pairwise squared distance of the pooled sample (no gradient through it).
    MultiRbf {
        /// Number of kernels.
        kernels: usize,
        /// Ratio between consecutive bandwidths.
        multiplier: f64,
    },
}

impl MmdKernel {
    /// Evaluates the chosen estimator on source `[n, d]` and target `[m, d]` features.
    pub fn mmd2(&self, source: &Tensor, target: &Tensor) -> Result<Tensor> {
        match self {
            MmdKernel::Linear => mmd2_linear(source, target),
            MmdKernel::MultiRbf { kernels, multiplier } => mmd2_multi_rbf(source, target, *kernels, *multiplier),
        }
    }
}

/// Linear-kernel MMD^2: squared Euclidean distance between the sample means.
pub fn mmd2_linear(source: &Tensor, target: &Tensor) -> Result<Tensor> {
    let delta = source.mean(0)?.sub(&target.mean(0)?)?;
    delta.sqr()?.sum_all()
}

/// Pairwise squared distances `[N, N]` of the rows of `x` (their squared norms computed once).
fn pairwise_sq_dist(x: &Tensor) -> Result<Tensor> {
    let sq = x.sqr()?.sum_keepdim(D::Minus1)?; // [N, 1]
    sq.broadcast_add(&sq.t()?)?.sub(&(zoo_kernels::matmul(x, &x.t()?)? * 2.0)?)?.relu()
}

/// Multi-kernel Gaussian MMD^2 (biased estimator), see [`MmdKernel::MultiRbf`]; the base
/// bandwidth is the mean pairwise squared distance of the pooled sample, held constant for the
/// gradient.
pub fn mmd2_multi_rbf(source: &Tensor, target: &Tensor, kernels: usize, multiplier: f64) -> Result<Tensor> {
    multi_rbf(source, target, None, kernels, multiplier)
}

/// Multi-kernel Gaussian MMD^2 with a fixed base bandwidth (squared-distance units).
pub fn mmd2_multi_rbf_fixed(
    source: &Tensor,
    target: &Tensor,
    base: f64,
    kernels: usize,
    multiplier: f64,
) -> Result<Tensor> {
    multi_rbf(source, target, Some(base), kernels, multiplier)
}

fn multi_rbf(source: &Tensor, target: &Tensor, base: Option<f64>, kernels: usize, multiplier: f64) -> Result<Tensor> {
    let n = source.dim(0)?;
    let m = target.dim(0)?;
    let pooled = Tensor::cat(&[source, target], 0)?;
    let d2 = pairwise_sq_dist(&pooled)?;
    let total = (n + m) as f64;
    let base = match base {
        Some(b) => Tensor::new(b, d2.device())?.to_dtype(d2.dtype())?,
        None => (d2.sum_all()?.detach() / (total * total - total))?,
    };
    let base = base.maximum(&base.ones_like()?.affine(1e-12, 0.0)?)?;
    // exp(-d2 / (base mult^u)) for each u: one division by the base, then a scale and an exp each.
    let scaled = d2.broadcast_div(&base)?;
    let mut k: Option<Tensor> = None;
    for u in 0..kernels {
        let power = u as f64 - (kernels / 2) as f64;
        let term = scaled.affine(-multiplier.powf(-power), 0.0)?.exp()?;
        k = Some(match k {
            Some(k) => k.add(&term)?,
            None => term,
        });
    }
    let k = match k {
        Some(k) => k,
        None => d2.zeros_like()?,
    };
    let kss = k.narrow(0, 0, n)?.narrow(1, 0, n)?.mean_all()?;
    let ktt = k.narrow(0, n, m)?.narrow(1, n, m)?.mean_all()?;
    let kst = k.narrow(0, 0, n)?.narrow(1, n, m)?.mean_all()?;
    kss.add(&ktt)?.sub(&(kst * 2.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, randn64};

    #[test]
    fn zero_for_identical_sets_positive_for_shifted_ones() {
        let a = randn64(&[16, 5], 1);
        let shifted = a.affine(1.0, 0.5).unwrap();
        for kernel in [MmdKernel::Linear, MmdKernel::MultiRbf { kernels: 5, multiplier: 2.0 }] {
            let same = kernel.mmd2(&a, &a).unwrap().to_scalar::<f64>().unwrap();
            assert!(same.abs() < 1e-10, "{kernel:?} {same}");
            let diff = kernel.mmd2(&a, &shifted).unwrap().to_scalar::<f64>().unwrap();
            assert!(diff > 1e-3, "{kernel:?} {diff}");
        }
        let lin = mmd2_linear(&a, &shifted).unwrap().to_scalar::<f64>().unwrap();
        assert!((lin - 5.0 * 0.25).abs() < 1e-10, "linear MMD of a 0.5 shift in 5 dims is 1.25: {lin}");
    }

    #[test]
    fn gradients_match_finite_differences() {
        let a = randn64(&[6, 3], 2);
        let b = randn64(&[5, 3], 3).affine(1.0, 0.3).unwrap();
        check_gradient(&a, |a| mmd2_linear(a, &b));
        check_gradient(&a, |a| mmd2_multi_rbf_fixed(a, &b, 4.0, 3, 2.0));
        check_gradient(&b, |b| mmd2_multi_rbf_fixed(&a, b, 2.5, 5, 2.0));
        // The data-driven bandwidth equals the fixed one at its value, so the two agree in value.
        let pooled = Tensor::cat(&[&a, &b], 0).unwrap();
        let d2 = pairwise_sq_dist(&pooled).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap() / (11.0 * 10.0);
        let x = mmd2_multi_rbf(&a, &b, 5, 2.0).unwrap().to_scalar::<f64>().unwrap();
        let y = mmd2_multi_rbf_fixed(&a, &b, d2, 5, 2.0).unwrap().to_scalar::<f64>().unwrap();
        assert!((x - y).abs() < 1e-12);
    }
}
