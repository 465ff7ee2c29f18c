//! Scores from class probabilities: inception score and mode coverage.

use anyhow::{bail, Result};
use serde::Serialize;

/// Classifier inception score (Salimans et al. 2016): `exp(E_x KL(p(y|x) || p(y)))`, with `p(y)`
/// the mean of the rows. `probs` is row-major `[n, classes]`, each row a distribution.
/// Between 1 (every sample the same prediction) and `classes` (confident and balanced).
pub fn inception_score(probs: &[f64], classes: usize) -> Result<f64> {
    if classes == 0 || probs.is_empty() || probs.len() % classes != 0 {
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
}
