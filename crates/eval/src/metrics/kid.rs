//! Kernel Inception Distance (Bińkowski et al. 2018): the unbiased MMD^2 estimate with the cubic
//! polynomial kernel `k(x, y) = (x . y / d + 1)^3`, averaged over random subsets.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use zoo_core::ZooRng;

use super::Features;

fn rows(f: &Features, idx: &[usize]) -> Result<Tensor> {
    let v: Vec<f64> = idx.iter().flat_map(|&i| f.row(i).iter().copied()).collect();
    Ok(Tensor::from_vec(v, (idx.len(), f.d), &Device::Cpu)?)
}

/// Sum of `k(a_i, b_j) = (a_i . b_j / d + 1)^3` over all pairs, and over the diagonal.
fn kernel_sums(a: &Tensor, b: &Tensor, d: usize) -> Result<(f64, f64)> {
    let base = a.matmul(&b.t()?)?.affine(1.0 / d as f64, 1.0)?;
    let k = base.mul(&base)?.mul(&base)?; // a cube, also for negative bases
    let total = k.sum_all()?.to_scalar::<f64>()?;
    let diag = if a.dims() == b.dims() {
        let n = a.dim(0)?;
        let eye = Tensor::eye(n, DType::F64, &Device::Cpu)?;
        k.mul(&eye)?.sum_all()?.to_scalar::<f64>()?
    } else {
        0.0
    };
    Ok((total, diag))
}

fn unbiased_mmd2(x: &Features, xi: &[usize], y: &Features, yi: &[usize]) -> Result<f64> {
    let (m, n, d) = (xi.len() as f64, yi.len() as f64, x.d);
    let (xs, ys) = (rows(x, xi)?, rows(y, yi)?);
    let (kxx, kxx_diag) = kernel_sums(&xs, &xs, d)?;
    let (kyy, kyy_diag) = kernel_sums(&ys, &ys, d)?;
    let (kxy, _) = kernel_sums(&xs, &ys, d)?;
    Ok((kxx - kxx_diag) / (m * (m - 1.0)) + (kyy - kyy_diag) / (n * (n - 1.0)) - 2.0 * kxy / (m * n))
}

/// KID between two feature sets: mean and standard deviation over `subsets` draws of
/// `subset_size` samples from each set (without replacement within a draw), seeded.
pub fn kernel_inception_distance(
    a: &Features,
    b: &Features,
    subsets: usize,
    subset_size: usize,
    seed: u64,
) -> Result<(f64, f64)> {
    if a.d != b.d {
        bail!("KID between features of dimension {} and {}", a.d, b.d);
    }
    let size = subset_size.min(a.n).min(b.n);
    if size < 2 || subsets == 0 {
        bail!("KID needs at least 2 samples per set and one subset (sets of {} and {})", a.n, b.n);
    }
    let mut rng = ZooRng::derive(seed, "kid");
    let values: Vec<f64> = (0..subsets)
        .map(|_| {
            let ia: Vec<usize> = rng.permutation(a.n).into_iter().take(size).collect();
            let ib: Vec<usize> = rng.permutation(b.n).into_iter().take(size).collect();
            unbiased_mmd2(a, &ia, b, &ib)
        })
        .collect::<Result<_>>()?;
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    Ok((mean, var.sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(n: usize, d: usize, shift: f64, seed: u64) -> Features {
        let mut r = ZooRng::new(seed);
        Features::new(n, d, (0..n * d).map(|_| r.next_normal() + shift).collect()).unwrap()
    }

    #[test]
    fn same_distribution_is_near_zero_and_shifts_are_positive() {
        let a = gaussian(400, 8, 0.0, 1);
        let b = gaussian(400, 8, 0.0, 2);
        let c = gaussian(400, 8, 0.5, 3);
        let (same, sd) = kernel_inception_distance(&a, &b, 5, 200, 0).unwrap();
        let (shifted, _) = kernel_inception_distance(&a, &c, 5, 200, 0).unwrap();
        assert!(same.abs() < 3.0 * sd.max(1e-3), "same distribution: {same} +- {sd}");
        assert!(shifted > 10.0 * same.abs().max(1e-3), "shifted {shifted} vs same {same}");
        // Hand check of the estimator on two tiny sets: x = {0, 1}, y = {2} is too small,
        // so use x = {0, 1}, y = {1, 2} in one dimension: k(u, v) = (uv + 1)^3.
        let x = Features::new(2, 1, vec![0.0, 1.0]).unwrap();
        let y = Features::new(2, 1, vec![1.0, 2.0]).unwrap();
        let want = 2.0 * 1.0 / 2.0 + 2.0 * 27.0 / 2.0 - 2.0 * (1.0 + 1.0 + 8.0 + 27.0) / 4.0;
        assert!((unbiased_mmd2(&x, &[0, 1], &y, &[0, 1]).unwrap() - want).abs() < 1e-12);
        assert!(kernel_inception_distance(&a, &Features::new(1, 8, vec![0.0; 8]).unwrap(), 1, 10, 0).is_err());
    }
}
