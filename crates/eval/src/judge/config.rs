//! Configuration of the judge network and its training recipe.

use serde::{Deserialize, Serialize};

/// Widths of the judge network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeConfig {
    /// Channels of the first convolution.
    pub conv1_channels: usize,
    /// Channels of the second convolution.
    pub conv2_channels: usize,
    /// Width of the feature layer (fc1).
    pub hidden: usize,
    /// Dropout before the classifier (training only).
    pub dropout: f64,
    /// Image side (28 for MNIST).
    pub image_size: usize,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self::lenet()
    }
}

impl JudgeConfig {
    /// The published judge: 32/64 channels, 128 features, dropout 0.5, 28x28 input.
    pub fn lenet() -> Self {
        Self { conv1_channels: 32, conv2_channels: 64, hidden: 128, dropout: 0.5, image_size: 28 }
    }
}

/// The training recipe of the judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeTrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Adam learning rate at the start.
    pub lr: f64,
    /// Learning rate multiplied by this after each epoch.
    pub lr_decay_per_epoch: f64,
    /// Seed of initialisation, data order and dropout.
    pub seed: u64,
}

impl Default for JudgeTrainConfig {
    fn default() -> Self {
        Self { epochs: 3, batch_size: 64, lr: 1e-3, lr_decay_per_epoch: 0.3, seed: 0 }
    }
}
