//! The judge's report on class-conditional samples (AC-GAN and the like): whether `G(z, y)` is
//! a `y`, how far each class is from the real digits of that class, how diverse each class is,
//! and NDB/JSD against k-means bins of training digits.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use serde::Serialize;
use zoo_data::Mnist;

use crate::gan::judge_view;
use crate::judge::Judge;
use crate::metrics::{frechet_distance, Features, NdbBins};

/// Samples per class used for pairwise diversities (all pairs among them).
const DIVERSITY_SAMPLES: usize = 200;

/// Metrics of class-conditional samples.
#[derive(Debug, Clone, Serialize)]
pub struct ConditionalMetrics {
    /// Fraction of samples the judge reads as their conditioning class.
    pub class_accuracy: f64,
    /// The same per class.
    pub class_accuracy_per_class: Vec<f64>,
    /// The worst class's accuracy.
    pub class_accuracy_min: f64,
    /// Per class: Fréchet distance between judge features of its samples and of the real test
    /// digits of that class.
    pub per_class_fd: Vec<f64>,
    /// Mean over classes of the mean pairwise Euclidean distance between judge features of
    /// same-class samples (a CPU stand-in for LPIPS diversity).
    pub intra_class_diversity: f64,
    /// The same on real test digits, for scale.
    pub intra_class_diversity_real: f64,
    /// Mean over classes of the mean pairwise per-pixel absolute difference of same-class samples.
    pub intra_class_diversity_pixels: f64,
    /// The same on real test digits.
    pub intra_class_diversity_pixels_real: f64,
    /// NDB: bins (of k-means on training pixels) whose share differs significantly (5 % level).
    pub ndb: usize,
    /// `ndb / k`.
    pub ndb_fraction: f64,
    /// Jensen-Shannon divergence between the bin histograms of training digits and samples.
    pub jsd: f64,
}

/// Pixels of images `[n, 1, H, W]` as features `[n, H*W]`.
pub fn pixel_features(images: &Tensor) -> Result<Features> {
    Features::from_tensor(&images.flatten_from(1)?.to_dtype(DType::F64)?)
}

/// k-means bins (`k`, 20 Lloyd rounds) of the first `n` training digits' pixels, for NDB/JSD.
pub fn ndb_bins(train: &Mnist, n: usize, k: usize, seed: u64) -> Result<NdbBins> {
    let idx: Vec<usize> = (0..n.min(train.len())).collect();
    let (x, _) = train.batch(&idx, &candle_core::Device::Cpu)?;
    NdbBins::fit(&pixel_features(&x)?, k, 20, seed)
}

/// Mean pairwise distance among the rows `rows` of `f`: Euclidean, or mean absolute difference
/// per dimension.
fn mean_pairwise(f: &Features, rows: &[usize], euclidean: bool) -> f64 {
    let mut total = 0.0;
    let mut pairs = 0usize;
    for (a, &i) in rows.iter().enumerate() {
        for &j in &rows[a + 1..] {
            let (u, v) = (f.row(i), f.row(j));
            total += if euclidean {
                u.iter().zip(v).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
            } else {
                u.iter().zip(v).map(|(x, y)| (x - y).abs()).sum::<f64>() / f.d as f64
            };
            pairs += 1;
        }
    }
    total / pairs.max(1) as f64
}

/// Rows of each class (at most `limit` per class).
fn by_class(labels: &[u32], classes: usize, limit: usize) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        if (l as usize) < classes && out[l as usize].len() < limit {
            out[l as usize].push(i);
        }
    }
    out
}

fn diversities(judge_features: &Features, pixels: &Features, groups: &[Vec<usize>]) -> (f64, f64) {
    let k = groups.len() as f64;
    let feat =
        groups.iter().map(|g| mean_pairwise(judge_features, &g[..g.len().min(DIVERSITY_SAMPLES)], true)).sum::<f64>();
    let pix = groups.iter().map(|g| mean_pairwise(pixels, &g[..g.len().min(DIVERSITY_SAMPLES)], false)).sum::<f64>();
    (feat / k, pix / k)
}

/// The metrics of `samples` `[n, 1, 28, 28]` generated for `classes` (one per sample), against
/// the real `test` digits and the NDB `bins`.
pub fn conditional_metrics(
    judge: &Judge,
    samples: &Tensor,
    classes: &[u32],
    test: &Mnist,
    bins: &NdbBins,
) -> Result<ConditionalMetrics> {
    let n = samples.dim(0)?;
    if n != classes.len() || n == 0 {
        bail!("conditional metrics need one class per sample, got {n} samples and {} classes", classes.len());
    }
    let k = 10;
    let view = judge_view(judge, samples, 500)?;
    let groups = by_class(classes, k, usize::MAX);
    if let Some(empty) = groups.iter().position(|g| g.len() < 2) {
        bail!("class {empty} has fewer than 2 samples; generate at least 2 per class");
    }
    let per_class: Vec<f64> = groups
        .iter()
        .enumerate()
        .map(|(c, g)| g.iter().filter(|&&i| view.predictions[i] == c as u32).count() as f64 / g.len() as f64)
        .collect();
    let class_accuracy = classes.iter().zip(&view.predictions).filter(|(c, p)| c == p).count() as f64 / n as f64;
    let (real_x, _) = test.batch(&(0..test.len()).collect::<Vec<_>>(), samples.device())?;
    let real = judge_view(judge, &real_x, 500)?;
    let real_groups = by_class(&test.labels.iter().map(|&l| l as u32).collect::<Vec<_>>(), k, usize::MAX);
    let subset = |f: &Features, rows: &[usize]| -> Result<Features> {
        Features::new(rows.len(), f.d, rows.iter().flat_map(|&i| f.row(i).to_vec()).collect())
    };
    let mut per_class_fd = Vec::with_capacity(k);
    for (g, r) in groups.iter().zip(&real_groups) {
        per_class_fd.push(frechet_distance(&subset(&view.features, g)?, &subset(&real.features, r)?)?);
    }
    let pixels = pixel_features(samples)?;
    let real_pixels = pixel_features(&real_x)?;
    let (intra_class_diversity, intra_class_diversity_pixels) = diversities(&view.features, &pixels, &groups);
    let (intra_class_diversity_real, intra_class_diversity_pixels_real) =
        diversities(&real.features, &real_pixels, &real_groups);
    let ndb = bins.score(&pixels, 1.96)?;
    Ok(ConditionalMetrics {
        class_accuracy,
        class_accuracy_min: per_class.iter().copied().fold(f64::INFINITY, f64::min),
        class_accuracy_per_class: per_class,
        per_class_fd,
        intra_class_diversity,
        intra_class_diversity_real,
        intra_class_diversity_pixels,
        intra_class_diversity_pixels_real,
        ndb: ndb.ndb,
        ndb_fraction: ndb.ndb_fraction,
        jsd: ndb.jsd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zoo_core::checkpoint::ZooModel;

    #[test]
    fn real_digits_with_their_labels_score_like_real_digits() {
        let dev = candle_core::Device::Cpu;
        let judge = Judge::from_pretrained("judge-mnist", &dev).unwrap();
        let test = Mnist::bundled_test_slice().unwrap();
        // Bins fitted on the very digits scored below: NDB must find no different bin.
        let bins = ndb_bins(&test, 1000, 20, 0).unwrap();
        let (x, y) = test.batch(&(0..test.len()).collect::<Vec<_>>(), &dev).unwrap();
        let labels = y.to_vec1::<u32>().unwrap();
        let m = conditional_metrics(&judge, &x, &labels, &test, &bins).unwrap();
        assert!(m.class_accuracy > 0.97, "{}", m.class_accuracy);
        assert!(m.per_class_fd.iter().all(|&d| d.abs() < 1e-6), "the same images: {:?}", m.per_class_fd);
        assert!((m.intra_class_diversity - m.intra_class_diversity_real).abs() < 1e-9);
        assert!(m.ndb == 0 && m.jsd < 1e-3, "{} {}", m.ndb, m.jsd);
        // Wrong labels: accuracy collapses; one image repeated: no diversity.
        let shifted: Vec<u32> = labels.iter().map(|l| (l + 1) % 10).collect();
        assert!(conditional_metrics(&judge, &x, &shifted, &test, &bins).unwrap().class_accuracy < 0.05);
        let copies = x.narrow(0, 0, 1).unwrap().repeat((20, 1, 1, 1)).unwrap();
        let classes: Vec<u32> = (0..20).map(|i| i % 10).collect();
        let c = conditional_metrics(&judge, &copies, &classes, &test, &bins).unwrap();
        assert_eq!(c.intra_class_diversity_pixels, 0.0);
        assert!(c.ndb >= 1 && c.jsd > 0.3, "one image for all: {} {}", c.ndb, c.jsd);
        let e = conditional_metrics(&judge, &copies, &classes[..5], &test, &bins).unwrap_err().to_string();
        assert!(e.contains("one class per sample"), "{e}");
    }
}
