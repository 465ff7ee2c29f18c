//! Metrics of generated samples, computed from a classifier's outputs (the MNIST judge):
//!
//! - [`frechet_distance`] between Gaussian fits of two feature sets (FID's formula, on judge
//!   features);
//! - [`kernel_inception_distance`] (KID: unbiased MMD^2 with a cubic polynomial kernel);
//! - [`inception_score`] from class probabilities;
//! - [`mode_coverage`]: how many classes are produced, and the KL divergence of the predicted class
//!   histogram from uniform;
//! - [`min_cost_assignment`] (Hungarian method) and [`matched_accuracy`]: a categorical code as a
//!   classifier after the best one-to-one matching of code values to labels;
//! - [`NdbBins`]: NDB and JSD (k-means bins of training samples, two-proportion z-tests);
//! - [`mutual_information`]: how much a categorical code's distributions tell about their inputs,
//!   without labels;
//! - [`mean_std`]: a metric's mean and sample standard deviation over runs (seeds);
//! - [`Pca`]: principal directions of a feature set, for 2-D pictures of embeddings.
//!
//! Features are plain `f64` matrices ([`Features`]), so the metrics work with any feature extractor.

mod assignment;
mod frechet;
mod kid;
mod linalg;
mod ndb;
mod pca;
mod scores;

pub use assignment::{matched_accuracy, min_cost_assignment};
pub use frechet::{frechet_distance, GaussianStats};
pub use kid::kernel_inception_distance;
pub use linalg::symmetric_eigen;
pub use ndb::{jensen_shannon, NdbBins, NdbScore};
pub use pca::Pca;
pub use scores::{inception_score, mean_std, mode_coverage, mutual_information, ModeCoverage};

use anyhow::{bail, Result};

/// A row-major `n x d` matrix of features (one row per sample).
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Number of samples.
    pub n: usize,
    /// Feature dimension.
    pub d: usize,
    /// `n * d` values, row-major.
    pub data: Vec<f64>,
}

impl Features {
    /// Wraps row-major data, checking its length.
    pub fn new(n: usize, d: usize, data: Vec<f64>) -> Result<Self> {
        if data.len() != n * d {
            bail!("features: {} values for {n} samples of dimension {d}", data.len());
        }
        if data.iter().any(|v| !v.is_finite()) {
            bail!("features contain NaN or infinite values");
        }
        Ok(Self { n, d, data })
    }

    /// From a `[n, d]` tensor of any float dtype.
    pub fn from_tensor(t: &candle_core::Tensor) -> Result<Self> {
        let (n, d) = t.dims2()?;
        let data = t.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        Self::new(n, d, data)
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.d..(i + 1) * self.d]
    }
}
