//! Fréchet distance between Gaussian fits of two feature sets (Heusel et al. 2017, eq. 6):
//!
//! `d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2})`
//!
//! (the trace term written in its symmetric form, which equals `Tr((S_1 S_2)^{1/2})`).

use anyhow::{bail, Result};

use super::linalg::{matmul, psd_sqrt, symmetric_eigen};
use super::Features;

/// Mean and (unbiased, `n - 1`) covariance of a feature set.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianStats {
    /// Feature dimension.
    pub d: usize,
    /// Mean, length `d`.
    pub mean: Vec<f64>,
    /// Covariance, row-major `d x d`.
    pub cov: Vec<f64>,
}

impl GaussianStats {
    /// Fits mean and covariance; needs at least two samples.
    pub fn fit(f: &Features) -> Result<Self> {
        if f.n < 2 {
            bail!("a Gaussian fit needs at least 2 samples, got {}", f.n);
        }
        let d = f.d;
        let mut mean = vec![0.0; d];
        for i in 0..f.n {
            for (m, x) in mean.iter_mut().zip(f.row(i)) {
                *m += x;
            }
        }
        mean.iter_mut().for_each(|m| *m /= f.n as f64);
        let mut cov = vec![0.0; d * d];
        let mut centred = vec![0.0; d];
        for i in 0..f.n {
            for (c, (x, m)) in centred.iter_mut().zip(f.row(i).iter().zip(&mean)) {
                *c = x - m;
            }
            for a in 0..d {
                let ca = centred[a];
                for b in a..d {
                    cov[a * d + b] += ca * centred[b];
                }
            }
        }
        for a in 0..d {
            for b in a..d {
                let v = cov[a * d + b] / (f.n - 1) as f64;
                cov[a * d + b] = v;
                cov[b * d + a] = v;
            }
        }
        Ok(Self { d, mean, cov })
    }

    /// Fréchet distance to `other` (same dimension).
    pub fn frechet(&self, other: &GaussianStats) -> Result<f64> {
        if self.d != other.d {
            bail!("Fréchet distance between features of dimension {} and {}", self.d, other.d);
        }
        let d = self.d;
        let mean_term: f64 = self.mean.iter().zip(&other.mean).map(|(a, b)| (a - b).powi(2)).sum();
        let trace = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
        let s1_half = psd_sqrt(&self.cov, d);
        let mut inner = matmul(&matmul(&s1_half, &other.cov, d), &s1_half, d);
        // Symmetrise against rounding before the eigen-decomposition.
        for a in 0..d {
            for b in (a + 1)..d {
                let v = 0.5 * (inner[a * d + b] + inner[b * d + a]);
                inner[a * d + b] = v;
                inner[b * d + a] = v;
            }
        }
        let (l, _) = symmetric_eigen(&inner, d);
        let tr_sqrt: f64 = l.iter().map(|x| x.max(0.0).sqrt()).sum();
        Ok((mean_term + trace(&self.cov) + trace(&other.cov) - 2.0 * tr_sqrt).max(0.0))
    }
}

/// Fréchet distance between the Gaussian fits of two feature sets.
pub fn frechet_distance(a: &Features, b: &Features) -> Result<f64> {
    GaussianStats::fit(a)?.frechet(&GaussianStats::fit(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic, correlated features: a fixed mixing of a low-discrepancy sequence.
    fn fixture(n: usize, d: usize, shift: f64, seed: usize) -> Features {
        let mut data = Vec::with_capacity(n * d);
        for i in 0..n {
            let base: Vec<f64> = (0..d)
                .map(|k| (((i * (k + 3) + seed * 17 + k * 5) % 97) as f64 / 97.0 - 0.5) * (1.0 + k as f64 * 0.3))
                .collect();
            for j in 0..d {
                let mix = base[j] + 0.5 * base[(j + 1) % d] - 0.25 * base[(j + 2) % d];
                data.push(mix + shift * (j as f64 + 1.0) / d as f64);
            }
        }
        Features::new(n, d, data).unwrap()
    }

    #[test]
    fn identical_sets_are_at_distance_zero() {
        let a = fixture(200, 6, 0.0, 1);
        assert!(frechet_distance(&a, &a).unwrap() < 1e-9);
    }

    #[test]
    fn diagonal_gaussians_match_the_closed_form() {
        // With diagonal covariances, d^2 = |dmu|^2 + sum (s1 - s2)^2.
        let s1 = GaussianStats { d: 3, mean: vec![0.0, 1.0, 2.0], cov: vec![4.0, 0., 0., 0., 1.0, 0., 0., 0., 9.0] };
        let s2 = GaussianStats { d: 3, mean: vec![1.0, 1.0, 0.0], cov: vec![1.0, 0., 0., 0., 1.0, 0., 0., 0., 4.0] };
        let want = 1.0 + 4.0 + (2.0f64 - 1.0).powi(2) + 0.0 + (3.0f64 - 2.0).powi(2);
        assert!((s1.frechet(&s2).unwrap() - want).abs() < 1e-9);
    }

    #[test]
    fn matches_a_scipy_reference_on_fixtures() {
        // Reference: numpy mean/cov (ddof=1) and scipy.linalg.sqrtm on the same fixtures:
        //   mu1, mu2 = a.mean(0), b.mean(0); s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        //   fd = ((mu1 - mu2)**2).sum() + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real)
        let a = fixture(300, 8, 0.0, 1);
        let b = fixture(250, 8, 0.7, 2);
        let fd = frechet_distance(&a, &b).unwrap();
        assert!((fd - REFERENCE_FD).abs() < 1e-8 * REFERENCE_FD.max(1.0), "ours {fd} vs scipy {REFERENCE_FD}");
    }

    const REFERENCE_FD: f64 = 1.6851168323510135;
}
