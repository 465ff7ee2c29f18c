//! NDB and JSD (Richardson & Weiss, *On GANs and GMMs*, NeurIPS 2018): k-means bins fitted on
//! training samples; a generated set is binned by nearest centroid, each bin's proportion is
//! compared with the training proportion by a two-proportion z-test, and NDB counts the bins
//! that differ significantly. JSD is the Jensen-Shannon divergence of the two bin histograms.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::Features;

/// k-means bins of a training set.
#[derive(Debug, Clone, PartialEq)]
pub struct NdbBins {
    /// `k` centroids of dimension `d`, row-major.
    pub centroids: Vec<f64>,
    /// Feature dimension.
    pub d: usize,
    /// Fraction of the training samples in each bin.
    pub train_proportions: Vec<f64>,
    /// Number of training samples.
    pub n_train: usize,
}

/// NDB and JSD of one sample set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NdbScore {
    /// Number of statistically different bins.
    pub ndb: usize,
    /// `ndb / k`.
    pub ndb_fraction: f64,
    /// Jensen-Shannon divergence (natural log) between the bin histograms.
    pub jsd: f64,
    /// Number of bins.
    pub k: usize,
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn nearest(centroids: &[f64], d: usize, x: &[f64]) -> usize {
    let mut best = (f64::INFINITY, 0);
    for (j, c) in centroids.chunks(d).enumerate() {
        let dist = sq_dist(c, x);
        if dist < best.0 {
            best = (dist, j);
        }
    }
    best.1
}

impl NdbBins {
    /// Lloyd's k-means with `k` bins on `train` (initial centroids: `k` samples spread evenly over a
    /// seeded permutation), at most `iterations` rounds.
    pub fn fit(train: &Features, k: usize, iterations: usize, seed: u64) -> Result<Self> {
        if k == 0 || train.n < k {
            bail!("NDB needs at least k = {k} training samples (and k >= 1), got {}", train.n);
        }
        let d = train.d;
        let order = zoo_core::ZooRng::derive(seed, "ndb-init").permutation(train.n);
        let mut centroids: Vec<f64> = order[..k].iter().flat_map(|&i| train.row(i).to_vec()).collect();
        let mut assignment = vec![usize::MAX; train.n];
        for _ in 0..iterations.max(1) {
            let mut changed = false;
            for (i, slot) in assignment.iter_mut().enumerate() {
                let j = nearest(&centroids, d, train.row(i));
                changed |= *slot != j;
                *slot = j;
            }
            let mut sums = vec![0.0; k * d];
            let mut counts = vec![0usize; k];
            for (i, &j) in assignment.iter().enumerate() {
                counts[j] += 1;
                for (s, v) in sums[j * d..(j + 1) * d].iter_mut().zip(train.row(i)) {
                    *s += v;
                }
            }
            for j in 0..k {
                // An empty bin keeps its centroid.
                if counts[j] > 0 {
                    for (c, s) in centroids[j * d..(j + 1) * d].iter_mut().zip(&sums[j * d..(j + 1) * d]) {
                        *c = s / counts[j] as f64;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let mut counts = vec![0usize; k];
        for &j in &assignment {
            counts[j] += 1;
        }
        let train_proportions = counts.iter().map(|&c| c as f64 / train.n as f64).collect();
        Ok(Self { centroids, d, train_proportions, n_train: train.n })
    }

    /// Number of bins.
    pub fn k(&self) -> usize {
        self.train_proportions.len()
    }

    /// The bin of every row of `x`.
    pub fn assign(&self, x: &Features) -> Result<Vec<usize>> {
        if x.d != self.d {
            bail!("NDB bins of dimension {} cannot bin samples of dimension {}", self.d, x.d);
        }
        Ok((0..x.n).map(|i| nearest(&self.centroids, self.d, x.row(i))).collect())
    }

    /// NDB (two-sided two-proportion z-tests at `|z| > z_critical`, 1.96 for a 5 % level) and
    /// JSD of `samples` against the training bins.
    pub fn score(&self, samples: &Features, z_critical: f64) -> Result<NdbScore> {
        if samples.n == 0 {
            bail!("NDB needs at least one sample");
        }
        let k = self.k();
        let mut counts = vec![0usize; k];
        for j in self.assign(samples)? {
            counts[j] += 1;
        }
        let (n1, n2) = (self.n_train as f64, samples.n as f64);
        let q: Vec<f64> = counts.iter().map(|&c| c as f64 / n2).collect();
        let mut ndb = 0;
        for (p, q) in self.train_proportions.iter().zip(&q) {
            let pooled = (p * n1 + q * n2) / (n1 + n2);
            let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
            if se > 0.0 && ((p - q) / se).abs() > z_critical {
                ndb += 1;
            }
        }
        Ok(NdbScore { ndb, ndb_fraction: ndb as f64 / k as f64, jsd: jensen_shannon(&self.train_proportions, &q), k })
    }
}

/// Jensen-Shannon divergence (natural log) of two discrete distributions.
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let kl = |a: &[f64], m: &[f64]| -> f64 {
        a.iter().zip(m).filter(|(x, _)| **x > 0.0).map(|(x, y)| x * (x / y).ln()).sum()
    };
    let m: Vec<f64> = p.iter().zip(q).map(|(a, b)| 0.5 * (a + b)).collect();
    0.5 * kl(p, &m) + 0.5 * kl(q, &m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` points around each of `centres` (2-D), with a small deterministic spread.
    fn clusters(centres: &[(f64, f64)], n: usize, offset: usize) -> Features {
        let mut data = Vec::new();
        for i in 0..n {
            let (cx, cy) = centres[i % centres.len()];
            let a = ((i + offset) * 7919 % 1000) as f64 / 1000.0 - 0.5;
            let b = ((i + offset) * 104_729 % 1000) as f64 / 1000.0 - 0.5;
            data.extend([cx + 0.3 * a, cy + 0.3 * b]);
        }
        Features::new(n, 2, data).unwrap()
    }

    #[test]
    fn identical_samples_have_no_different_bins_and_shifted_ones_do() {
        let centres = [(0.0, 0.0), (5.0, 0.0), (0.0, 5.0), (5.0, 5.0)];
        let train = clusters(&centres, 2000, 0);
        let bins = NdbBins::fit(&train, 4, 50, 1).unwrap();
        let mut sizes = bins.train_proportions.clone();
        sizes.sort_by(f64::total_cmp);
        assert!(sizes.iter().all(|p| (p - 0.25).abs() < 1e-9), "{sizes:?}");
        let same = bins.score(&clusters(&centres, 2000, 17), 1.96).unwrap();
        assert_eq!(same.ndb, 0);
        assert!(same.jsd < 1e-6, "{}", same.jsd);
        // Mode collapse: all samples in two of the four clusters.
        let collapsed = bins.score(&clusters(&centres[..2], 2000, 3), 1.96).unwrap();
        assert_eq!(collapsed.ndb, 4);
        assert!((collapsed.ndb_fraction - 1.0).abs() < 1e-12);
        // p = (1/4 x4), q = (1/2, 1/2, 0, 0): JSD by hand.
        let m = [0.375, 0.375, 0.125, 0.125];
        let want = 0.5 * (2.0 * 0.25 * (0.25f64 / m[0]).ln() + 2.0 * 0.25 * (0.25f64 / m[2]).ln())
            + 0.5 * (2.0 * 0.5 * (0.5f64 / m[0]).ln());
        assert!((collapsed.jsd - want).abs() < 1e-9, "{} vs {want}", collapsed.jsd);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let train = clusters(&[(0.0, 0.0)], 3, 0);
        assert!(NdbBins::fit(&train, 5, 10, 0).is_err());
        let bins = NdbBins::fit(&train, 2, 10, 0).unwrap();
        let wrong = Features::new(1, 3, vec![0.0; 3]).unwrap();
        assert!(bins.score(&wrong, 1.96).unwrap_err().to_string().contains("dimension 3"));
    }
}
