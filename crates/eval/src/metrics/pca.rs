//! Principal component analysis by subspace iteration on the covariance matrix.

use anyhow::{bail, Result};

use super::linalg::symmetric_eigen;
use super::Features;

/// The top principal directions of a feature set.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    /// Mean of the fitted set (`d` values).
    pub mean: Vec<f64>,
    /// `k` unit directions of `d` values each, by decreasing variance.
    pub components: Vec<Vec<f64>>,
    /// The variance of the fitted set along each direction.
    pub variances: Vec<f64>,
}

impl Pca {
    /// Fits the top `k` principal directions of `x` (`k <= min(n, d)`).
    pub fn fit(x: &Features, k: usize) -> Result<Self> {
        let (n, d) = (x.n, x.d);
        if k == 0 || k > d || n < 2 {
            bail!("PCA of {n} samples of dimension {d}: need at least 2 samples and 1 <= k <= {d}, got k = {k}");
        }
        let mut mean = vec![0.0; d];
        for i in 0..n {
            for (m, v) in mean.iter_mut().zip(x.row(i)) {
                *m += v / n as f64;
            }
        }
        let mut cov = vec![0.0; d * d];
        let mut centred = vec![0.0; d];
        for i in 0..n {
            for ((c, v), m) in centred.iter_mut().zip(x.row(i)).zip(&mean) {
                *c = v - m;
            }
            for a in 0..d {
                let ca = centred[a] / (n - 1) as f64;
                if ca != 0.0 {
                    for (slot, cb) in cov[a * d..(a + 1) * d].iter_mut().zip(&centred) {
                        *slot += ca * cb;
                    }
                }
            }
        }
        // Subspace iteration on a block a little wider than k, then Rayleigh-Ritz.
        let b = (k + 4).min(d);
        let mut q: Vec<Vec<f64>> = (0..b)
            .map(|j| {
                (0..d)
                    .map(|i| ((i * 7919 + j * 104_729) % 1009) as f64 / 1009.0 - 0.5 + (i == j) as u8 as f64)
                    .collect()
            })
            .collect();
        orthonormalise(&mut q);
        for _ in 0..300 {
            let next: Vec<Vec<f64>> = q.iter().map(|v| mat_vec(&cov, v, d)).collect();
            let mut next = next;
            orthonormalise(&mut next);
            let change: f64 = q.iter().zip(&next).map(|(a, b)| 1.0 - dot(a, b).abs()).fold(0.0, f64::max);
            q = next;
            if change < 1e-13 {
                break;
            }
        }
        let aq: Vec<Vec<f64>> = q.iter().map(|v| mat_vec(&cov, v, d)).collect();
        let small: Vec<f64> =
            (0..b).flat_map(|i| (0..b).map(move |j| (i, j))).map(|(i, j)| dot(&q[i], &aq[j])).collect();
        let (values, vectors) = symmetric_eigen(&small, b);
        let mut order: Vec<usize> = (0..b).collect();
        order.sort_by(|&i, &j| values[j].total_cmp(&values[i]));
        let mut components = Vec::with_capacity(k);
        let mut variances = Vec::with_capacity(k);
        for &col in order.iter().take(k) {
            let mut dir = vec![0.0; d];
            for (row, qv) in q.iter().enumerate() {
                let w = vectors[row * b + col];
                for (o, v) in dir.iter_mut().zip(qv) {
                    *o += w * v;
                }
            }
            let norm = dot(&dir, &dir).sqrt().max(f64::MIN_POSITIVE);
            dir.iter_mut().for_each(|v| *v /= norm);
            components.push(dir);
            variances.push(values[col].max(0.0));
        }
        Ok(Self { mean, components, variances })
    }

    /// Coordinates of every row of `x` along the components (`n x k`).
    pub fn project(&self, x: &Features) -> Result<Features> {
        if x.d != self.mean.len() {
            bail!("PCA fitted on dimension {} cannot project features of dimension {}", self.mean.len(), x.d);
        }
        let mut out = Vec::with_capacity(x.n * self.components.len());
        let mut centred = vec![0.0; x.d];
        for i in 0..x.n {
            for ((c, v), m) in centred.iter_mut().zip(x.row(i)).zip(&self.mean) {
                *c = v - m;
            }
            out.extend(self.components.iter().map(|dir| dot(dir, &centred)));
        }
        Features::new(x.n, self.components.len(), out)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn mat_vec(m: &[f64], v: &[f64], d: usize) -> Vec<f64> {
    (0..d).map(|i| dot(&m[i * d..(i + 1) * d], v)).collect()
}

/// Modified Gram-Schmidt, twice for stability; a vector that vanishes is left at zero.
fn orthonormalise(vs: &mut [Vec<f64>]) {
    for _ in 0..2 {
        for i in 0..vs.len() {
            let (done, rest) = vs.split_at_mut(i);
            let v = &mut rest[0];
            for u in done.iter() {
                let p = dot(u, v);
                v.iter_mut().zip(u).for_each(|(x, y)| *x -= p * y);
            }
            let norm = dot(v, v).sqrt();
            if norm > 1e-300 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples with variances 9, 4, 1, 0.25, ... along a rotated basis.
    fn rotated_sample(n: usize, d: usize) -> (Features, Vec<Vec<f64>>) {
        let mut basis: Vec<Vec<f64>> = (0..d)
            .map(|j| (0..d).map(|i| ((i + 3) * (j + 5) % 11) as f64 - 5.0 + (i == j) as u8 as f64 * 3.0).collect())
            .collect();
        orthonormalise(&mut basis);
        let mut state = 12345u64;
        let mut uniform = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut data = Vec::with_capacity(n * d);
        for _ in 0..n {
            let mut x = vec![1.5; d]; // a mean offset
            for (j, dir) in basis.iter().enumerate() {
                // Uniform on [-sqrt(3), sqrt(3)] has unit variance.
                let c = (uniform() * 2.0 - 1.0) * 3f64.sqrt() * 3.0 / 2f64.powi(j as i32);
                x.iter_mut().zip(dir).for_each(|(xi, di)| *xi += c * di);
            }
            data.extend(x);
        }
        (Features::new(n, d, data).unwrap(), basis)
    }

    #[test]
    fn recovers_known_directions_and_variances() {
        let (x, basis) = rotated_sample(4000, 8);
        let pca = Pca::fit(&x, 3).unwrap();
        for (j, (dir, var)) in pca.components.iter().zip(&pca.variances).enumerate() {
            let expected = 9.0 / 4f64.powi(j as i32);
            assert!((var - expected).abs() < 0.08 * expected, "component {j}: variance {var}, expected {expected}");
            assert!(dot(dir, &basis[j]).abs() > 0.995, "component {j} is not the {j}-th direction");
        }
        let p = pca.project(&x).unwrap();
        assert_eq!((p.n, p.d), (4000, 3));
        let mean0: f64 = (0..p.n).map(|i| p.row(i)[0]).sum::<f64>() / p.n as f64;
        assert!(mean0.abs() < 1e-9, "projections are centred: {mean0}");
    }

    #[test]
    fn bad_requests_are_errors() {
        let (x, _) = rotated_sample(10, 4);
        assert!(Pca::fit(&x, 0).is_err());
        assert!(Pca::fit(&x, 5).is_err());
        let pca = Pca::fit(&x, 2).unwrap();
        let other = Features::new(2, 3, vec![0.0; 6]).unwrap();
        assert!(pca.project(&other).unwrap_err().to_string().contains("dimension 3"));
    }
}
