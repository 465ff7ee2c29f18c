//! Two domains for unsupervised domain adaptation: a labelled source set and a target set whose
//! labels the adaptation methods never read.
//!
//! [`TwoDomains`] draws a source batch and a target batch per step from two independent seeded
//! orders. The batches are returned separately ([`DomainBatch`]), so a model can pass each domain
//! through its own forward (a normalisation layer never sees a mixed batch). Target labels travel
//! with the batch only because the target-only baseline (the upper bound) trains on them.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{BatchPosition, Batcher, ImageSet};

/// One step's data: `[B, C, H, W]` images in `[0, 1]` and `[B]` u32 labels per domain.
#[derive(Debug, Clone)]
pub struct DomainBatch {
    /// Source images.
    pub source_images: Tensor,
    /// Source labels.
    pub source_labels: Tensor,
    /// Target images.
    pub target_images: Tensor,
    /// Target labels: for the target-only baseline and for evaluation, never for adaptation.
    pub target_labels: Tensor,
}

/// Where both orders stand, for an exact resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TwoDomainPosition {
    /// Position in the source order.
    pub source: BatchPosition,
    /// Position in the target order.
    pub target: BatchPosition,
}

/// A labelled source set and a target set of the same image geometry, each with its own seeded
/// batch order (the target's seed is derived from the source's, so they differ).
#[derive(Debug, Clone)]
pub struct TwoDomains {
    source: ImageSet,
    target: ImageSet,
    source_order: Batcher,
    target_order: Batcher,
}

impl TwoDomains {
    /// Pairs `source` and `target` with batches of `batch_size` images per domain; errors when the
    /// image geometries differ or a set is smaller than one batch.
    pub fn new(source: ImageSet, target: ImageSet, batch_size: usize, seed: u64) -> Result<Self> {
        if (source.channels, source.rows, source.cols) != (target.channels, target.rows, target.cols) {
            bail!(
                "source images are {}x{}x{} (channels x rows x cols) but target images are {}x{}x{}",
                source.channels,
                source.rows,
                source.cols,
                target.channels,
                target.rows,
                target.cols
            );
        }
        let (source_order, target_order) = orders(&source, &target, batch_size, seed)?;
        Ok(Self { source, target, source_order, target_order })
    }

    /// Reads both domains from class folders (`DIR/<class>/*.png|jpg`, see
    /// [`ImageSet::from_png_folders`]), every image resized to `size`x`size` RGB.
    pub fn from_folders(source: &Path, target: &Path, size: usize, batch_size: usize, seed: u64) -> Result<Self> {
        let s = ImageSet::from_png_folders(source, size)
            .with_context(|| format!("reading the source domain from {}", source.display()))?;
        let t = ImageSet::from_png_folders(target, size)
            .with_context(|| format!("reading the target domain from {}", target.display()))?;
        Self::new(s, t, batch_size, seed)
    }

    /// The source set.
    pub fn source(&self) -> &ImageSet {
        &self.source
    }

    /// The target set.
    pub fn target(&self) -> &ImageSet {
        &self.target
    }

    /// Images per domain per batch.
    pub fn batch_size(&self) -> usize {
        self.source_order.batch_size()
    }

    /// The next source batch and the next target batch.
    pub fn next_batch(&mut self, dev: &Device) -> Result<DomainBatch> {
        let (source_images, source_labels) = self.source.batch(&self.source_order.next_indices(), dev)?;
        let (target_images, target_labels) = self.target.batch(&self.target_order.next_indices(), dev)?;
        Ok(DomainBatch { source_images, source_labels, target_images, target_labels })
    }

    /// Restarts both orders from the beginning with another batch size and seed.
    pub fn reorder(&mut self, batch_size: usize, seed: u64) -> Result<()> {
        let (source_order, target_order) = orders(&self.source, &self.target, batch_size, seed)?;
        self.source_order = source_order;
        self.target_order = target_order;
        Ok(())
    }

    /// Where both orders stand.
    pub fn position(&self) -> TwoDomainPosition {
        TwoDomainPosition { source: self.source_order.position(), target: self.target_order.position() }
    }

    /// Moves both orders to `position` (from [`TwoDomains::position`] of a run with the same seed).
    pub fn set_position(&mut self, position: TwoDomainPosition) -> Result<()> {
        self.source_order.set_position(position.source)?;
        self.target_order.set_position(position.target)
    }
}

fn orders(source: &ImageSet, target: &ImageSet, batch_size: usize, seed: u64) -> Result<(Batcher, Batcher)> {
    for (name, set) in [("source", source), ("target", target)] {
        if set.len() < batch_size.max(1) {
            bail!("the {name} set has {} images, fewer than one batch of {batch_size}", set.len());
        }
    }
    Ok((
        Batcher::new(source.len(), batch_size, seed, true)?,
        Batcher::new(target.len(), batch_size, seed ^ 0x7a11, true)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize, channels: usize, value: u8) -> ImageSet {
        ImageSet {
            images: vec![value; n * channels * 4 * 4],
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
            channels,
            rows: 4,
            cols: 4,
        }
    }

    #[test]
    fn batches_come_from_their_own_domain_and_resume_exactly() {
        let mut d = TwoDomains::new(set(10, 3, 0), set(7, 3, 255), 3, 5).unwrap();
        let b = d.next_batch(&Device::Cpu).unwrap();
        assert_eq!(b.source_images.dims(), [3, 3, 4, 4]);
        assert_eq!(b.source_images.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        assert_eq!(b.target_images.min_all().unwrap().to_scalar::<f32>().unwrap(), 1.0);
        let saved = d.position();
        let expected: Vec<Vec<u32>> = (0..5)
            .map(|_| {
                let b = d.next_batch(&Device::Cpu).unwrap();
                [b.source_labels, b.target_labels].iter().flat_map(|t| t.to_vec1::<u32>().unwrap()).collect()
            })
            .collect();
        let mut again = TwoDomains::new(set(10, 3, 0), set(7, 3, 255), 3, 5).unwrap();
        again.set_position(saved).unwrap();
        for e in expected {
            let b = again.next_batch(&Device::Cpu).unwrap();
            let got: Vec<u32> =
                [b.source_labels, b.target_labels].iter().flat_map(|t| t.to_vec1::<u32>().unwrap()).collect();
            assert_eq!(got, e);
        }
    }

    #[test]
    fn mismatched_or_tiny_domains_are_refused() {
        let err = TwoDomains::new(set(10, 3, 0), set(10, 1, 0), 3, 0).unwrap_err().to_string();
        assert!(err.contains("3x4x4") && err.contains("1x4x4"), "{err}");
        let err = TwoDomains::new(set(10, 3, 0), set(2, 3, 0), 3, 0).unwrap_err().to_string();
        assert!(err.contains("target set has 2 images"), "{err}");
        let missing = Path::new("/nonexistent/zoo-domain");
        let err = format!("{:#}", TwoDomains::from_folders(missing, missing, 28, 4, 0).unwrap_err());
        assert!(err.contains("source domain") && err.contains("/nonexistent/zoo-domain"), "{err}");
    }
}
