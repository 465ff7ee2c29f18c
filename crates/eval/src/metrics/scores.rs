//! Scores from class probabilities (inception score, mode coverage, mutual information) and
//! the mean and spread of a metric over runs.

use anyhow::{bail, Result};
use serde::Serialize;

/// Classifier inception score (Salimans et al. 2016): `exp(E_x KL(p(y|x) || p(y)))`, with `p(y)`
/// the mean of the rows. `probs` is row-major `[n, classes]`, each row a distribution.
/// Between 1 (every sample the same prediction) and `classes` (confident and balanced).
pub fn inception_score(probs: &[f64], classes: usize) -> Result<f64> {
    if classes == 0 || probs.is_empty() || !probs.len().is_multiple_of(classes) {
        bail!("inception score: {} probabilities do not form rows of {classes}", probs.len());
    }
    let n = probs.len() / classes;
    let mut marginal = vec![0.0; classes];
    for row in probs.chunks(classes) {
        let s: f64 = row.iter().sum();
        if (s - 1.0).abs() > 1e-3 || row.iter().any(|p| *p < 0.0) {
            bail!("inception score: a row is not a probability distribution (sums to {s})");
        }
        for (m, p) in marginal.iter_mut().zip(row) {
            *m += p / n as f64;
        }
    }
    let kl: f64 = probs
        .chunks(classes)
        .map(|row| {
            row.iter().zip(&marginal).filter(|(p, _)| **p > 0.0).map(|(p, m)| p * (p.ln() - m.ln())).sum::<f64>()
        })
        .sum::<f64>()
        / n as f64;
    Ok(kl.exp())
}

/// Which classes a generator produces, from the judge's predicted class of each sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeCoverage {
    /// Samples predicted as each class.
    pub counts: Vec<u64>,
    /// Classes predicted for at least `min_count` samples.
    pub covered: usize,
    /// `KL(histogram || uniform)` in nats (0 for a perfectly balanced generator).
    pub kl_to_uniform: f64,
}

/// Counts predicted classes; a class counts as covered when it has at least `min_count` samples.
pub fn mode_coverage(predictions: &[u32], classes: usize, min_count: u64) -> Result<ModeCoverage> {
    if predictions.is_empty() {
        bail!("mode coverage of an empty sample");
    }
    let mut counts = vec![0u64; classes];
    for &p in predictions {
        let Some(c) = counts.get_mut(p as usize) else { bail!("predicted class {p} is outside 0..{classes}") };
        *c += 1;
    }
    let n = predictions.len() as f64;
    let kl = counts.iter().filter(|&&c| c > 0).map(|&c| (c as f64 / n) * ((c as f64 / n) * classes as f64).ln()).sum();
    Ok(ModeCoverage { covered: counts.iter().filter(|&&c| c >= min_count.max(1)).count(), counts, kl_to_uniform: kl })
}

/// Mean and sample standard deviation (divisor `n - 1`; 0 for a single value) of `values`,
/// e.g. a metric over the seeds of a recipe. `(NaN, NaN)` for no values.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() == 1 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The mutual information, in nats, between a uniformly chosen input and the outcome of its
/// distribution: `H(mean_i p_i) - mean_i H(p_i)` for `n` distributions over `k` outcomes given
/// row-major in `probs` (`n * k` values). It lies between 0 (every input has the same
/// distribution) and `ln k` (confident, and every outcome equally used), and needs no labels:
/// e.g. how much a categorical code tells about real images.
pub fn mutual_information(probs: &[f64], k: usize) -> Result<f64> {
    if k == 0 || probs.is_empty() || !probs.len().is_multiple_of(k) {
        bail!("mutual information needs n x {k} probabilities with n >= 1, got {} values", probs.len());
    }
    if let Some(bad) = probs.iter().find(|p| !(0.0..=1.0 + 1e-6).contains(*p)) {
        bail!("mutual information needs probabilities in [0, 1], got {bad}");
    }
    let entropy = |p: &[f64]| -> f64 { p.iter().filter(|&&q| q > 0.0).map(|&q| -q * q.ln()).sum() };
    let n = (probs.len() / k) as f64;
    let mut mean = vec![0.0; k];
    let mut conditional = 0.0;
    for row in probs.chunks_exact(k) {
        for (m, &p) in mean.iter_mut().zip(row) {
            *m += p / n;
        }
        conditional += entropy(row) / n;
    }
    Ok(entropy(&mean) - conditional)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inception_score_extremes() {
        let balanced: Vec<f64> =
            (0..100).flat_map(|i| (0..10).map(move |c| if c == i % 10 { 1.0 } else { 0.0 })).collect();
        assert!((inception_score(&balanced, 10).unwrap() - 10.0).abs() < 1e-9);
        let collapsed: Vec<f64> = (0..100).flat_map(|_| (0..10).map(|c| if c == 3 { 1.0 } else { 0.0 })).collect();
        assert!((inception_score(&collapsed, 10).unwrap() - 1.0).abs() < 1e-12);
        let unsure = vec![0.1; 1000];
        assert!((inception_score(&unsure, 10).unwrap() - 1.0).abs() < 1e-9);
        assert!(inception_score(&[0.5, 0.6], 2).is_err());
    }

    #[test]
    fn coverage_counts_and_kl() {
        let preds: Vec<u32> = (0..100).map(|i| i % 10).collect();
        let m = mode_coverage(&preds, 10, 1).unwrap();
        assert_eq!((m.covered, m.kl_to_uniform), (10, 0.0));
        let half: Vec<u32> = (0..100).map(|i| i % 5).collect();
        let m = mode_coverage(&half, 10, 1).unwrap();
        assert_eq!(m.covered, 5);
        assert!((m.kl_to_uniform - 2f64.ln()).abs() < 1e-12);
        assert!(mode_coverage(&[11], 10, 1).is_err());
    }

    #[test]
    fn mean_and_sample_std() {
        // 0.903, 0.922, 0.988: mean 0.9377, deviations sum of squares 0.003981, / 2, sqrt.
        let (m, s) = mean_std(&[0.903, 0.922, 0.988]);
        assert!((m - 0.937_666_7).abs() < 1e-6, "{m}");
        assert!((s - 0.044_614).abs() < 1e-5, "{s}");
        assert_eq!(mean_std(&[2.5]), (2.5, 0.0));
        let (m, s) = mean_std(&[]);
        assert!(m.is_nan() && s.is_nan());
    }

    #[test]
    fn mutual_information_of_known_cases() {
        // Confident and balanced over 4 outcomes: ln 4.
        let eye: Vec<f64> = (0..16).map(|i| if i % 5 == 0 { 1.0 } else { 0.0 }).collect();
        assert!((mutual_information(&eye, 4).unwrap() - 4f64.ln()).abs() < 1e-12);
        // Every input the same distribution: 0, however confident.
        let same = [0.7, 0.3, 0.7, 0.3, 0.7, 0.3];
        assert!(mutual_information(&same, 2).unwrap().abs() < 1e-12);
        // Two inputs, (0.9, 0.1) and (0.1, 0.9): ln 2 - H(0.9, 0.1).
        let h = -(0.9f64 * 0.9f64.ln() + 0.1 * 0.1f64.ln());
        let mi = mutual_information(&[0.9, 0.1, 0.1, 0.9], 2).unwrap();
        assert!((mi - (2f64.ln() - h)).abs() < 1e-12, "{mi}");
        assert!(mutual_information(&[0.5, 0.5, 1.0], 2).is_err());
        assert!(mutual_information(&[], 2).is_err());
        assert!(mutual_information(&[1.5, -0.5], 2).is_err());
    }
}
