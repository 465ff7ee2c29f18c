//! The judge's report on a set of generated digits: the metrics every GAN family of the zoo
//! prints with `eval --json` (keys `judge_fd`, `judge_fd_floor`, `kid`, `kid_std`,
//! `inception_score`, `modes_covered`, `kl_to_uniform`, `n`).

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use zoo_data::Mnist;

use crate::judge::Judge;
use crate::metrics::{frechet_distance, inception_score, kernel_inception_distance, mode_coverage, Features};

/// What the judge sees in a set of images.
#[derive(Debug, Clone)]
pub struct JudgeView {
    /// Penultimate features `[n, 128]`.
    pub features: Features,
    /// Class probabilities, row-major `[n, 10]`.
    pub probabilities: Vec<f64>,
    /// Predicted classes.
    pub predictions: Vec<u32>,
}

/// Runs the judge over `images` `[n, 1, 28, 28]` (values in `[0, 1]`) in batches.
pub fn judge_view(judge: &Judge, images: &Tensor, batch: usize) -> Result<JudgeView> {
    let n = images.dim(0)?;
    if n == 0 {
        bail!("no images to judge");
    }
    let (mut feats, mut probs, mut preds) = (Vec::new(), Vec::new(), Vec::new());
    let mut d = 0;
    for start in (0..n).step_by(batch.max(1)) {
        let x = images.narrow(0, start, batch.max(1).min(n - start))?;
        let f = judge.features(&x)?;
        d = f.dim(1)?;
        feats.extend(f.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?);
        let p = judge.probabilities(&x)?;
        probs.extend(p.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?);
        preds.extend(p.argmax(1)?.to_dtype(DType::U32)?.to_vec1::<u32>()?);
    }
    Ok(JudgeView { features: Features::new(n, d, feats)?, probabilities: probs, predictions: preds })
}

/// The GAN metrics of the zoo, measured with the judge.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct GanMetrics {
    /// Fréchet distance between judge features of the samples and of the real test digits.
    pub judge_fd: f64,
    /// The same distance between real training and real test digits: the floor to compare with.
    pub judge_fd_floor: f64,
    /// Kernel inception distance (judge features) to the real test digits, mean over subsets.
    pub kid: f64,
    /// Standard deviation of KID over the subsets.
    pub kid_std: f64,
    /// Classifier inception score (real MNIST is about 9.9 with a good judge).
    pub inception_score: f64,
    /// Classes predicted for at least 1 % of the samples, out of 10.
    pub modes_covered: usize,
    /// KL divergence of the predicted-class histogram from uniform.
    pub kl_to_uniform: f64,
    /// That histogram: the fraction of the samples the judge assigns to each class, digit 0
    /// first (empty in records written before it was measured).
    #[serde(default)]
    pub class_fractions: Vec<f64>,
    /// Number of generated samples evaluated.
    pub n: usize,
}

/// Scores `generated` `[n, 1, 28, 28]` against real `test` digits, with real `train` digits for
/// the floor. KID uses 10 subsets of up to 1,000 samples, drawn from `seed`.
pub fn gan_metrics(judge: &Judge, generated: &Tensor, test: &Mnist, train: &Mnist, seed: u64) -> Result<GanMetrics> {
    let dev = generated.device().clone();
    let real = |data: &Mnist, n: usize, dev: &Device| -> Result<JudgeView> {
        let idx: Vec<usize> = (0..n.min(data.len())).collect();
        let (x, _) = data.batch(&idx, dev)?;
        judge_view(judge, &x, 500)
    };
    let n = generated.dim(0)?;
    let fake = judge_view(judge, generated, 500)?;
    let real_test = real(test, test.len(), &dev)?;
    let real_train = real(train, test.len(), &dev)?;
    let (kid, kid_std) = kernel_inception_distance(&fake.features, &real_test.features, 10, 1000, seed)?;
    let modes = mode_coverage(&fake.predictions, 10, (n as u64).div_ceil(100))?;
    Ok(GanMetrics {
        judge_fd: frechet_distance(&fake.features, &real_test.features)?,
        judge_fd_floor: frechet_distance(&real_train.features, &real_test.features)?,
        kid,
        kid_std,
        inception_score: inception_score(&fake.probabilities, 10)?,
        modes_covered: modes.covered,
        kl_to_uniform: modes.kl_to_uniform,
        class_fractions: modes.counts.iter().map(|&c| c as f64 / n as f64).collect(),
        n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zoo_core::checkpoint::ZooModel;

    #[test]
    fn real_digits_score_like_real_digits_and_a_collapsed_sample_does_not() {
        let dev = Device::Cpu;
        let judge = Judge::from_pretrained("judge-mnist", &dev).unwrap();
        let test = Mnist::bundled_test_slice().unwrap();
        let train = Mnist::bundled_train_subset().unwrap();
        // "Generated" = 1,000 real training digits (not the ones used for the floor's first 1,000).
        let idx: Vec<usize> = (5000..6000).collect();
        let (real, _) = train.batch(&idx, &dev).unwrap();
        let m = gan_metrics(&judge, &real, &test, &train, 0).unwrap();
        assert_eq!(m.modes_covered, 10);
        assert!(m.inception_score > 9.0, "{m:?}");
        assert!(m.kl_to_uniform < 0.02, "{m:?}");
        assert!(m.judge_fd < 3.0 * m.judge_fd_floor.max(0.1), "{m:?}");
        // One digit repeated 1,000 times: one mode, inception score 1, far from the data.
        let (one, _) = train.batch(&[0], &dev).unwrap();
        let collapsed = one.repeat((1000, 1, 1, 1)).unwrap();
        let c = gan_metrics(&judge, &collapsed, &test, &train, 0).unwrap();
        assert_eq!(c.modes_covered, 1);
        assert_eq!(c.class_fractions.len(), 10);
        assert_eq!(c.class_fractions.iter().filter(|&&f| f == 1.0).count(), 1, "{c:?}");
        assert_eq!(c.class_fractions.iter().filter(|&&f| f == 0.0).count(), 9, "{c:?}");
        assert_eq!(m.class_fractions.len(), 10);
        assert!((m.class_fractions.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{m:?}");
        assert!(m.class_fractions.iter().all(|&f| (0.05..0.15).contains(&f)), "{m:?}");
        assert!(c.inception_score < 1.01, "{c:?}");
        assert!(c.judge_fd > 10.0 * m.judge_fd && c.kid > 10.0 * m.kid.max(1e-3), "{c:?} vs {m:?}");
        let json = serde_json::to_value(&m).unwrap();
        for key in ["judge_fd", "judge_fd_floor", "kid", "inception_score", "modes_covered", "kl_to_uniform"] {
            assert!(json.get(key).is_some(), "{key}");
        }
    }
}
