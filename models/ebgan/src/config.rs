//! Configuration: architecture, energy, margin and the pulling-away weight, with the paper's
//! MNIST settings as presets.

use serde::{Deserialize, Serialize};

/// How the reconstruction error becomes an energy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Energy {
    /// `||Dec(Enc(x)) - x||_2` over all pixels (the paper).
    L2Norm,
    /// Mean over pixels of `(Dec(Enc(x)) - x)^2` (the usual port; margins near 1).
    MeanSquared,
}

/// The networks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Architecture {
    /// DCGAN-style: G is FC 1024 -> FC 7x7x128 -> convT 4x4/2 64 -> convT 4x4/2 1 (BatchNorm and
    /// ReLU between); D encodes with `d_depth` convs 4x4/2 (1 -> channels, then doubling) and a
    /// linear map to `code`, and decodes back with a linear map and as many convT 4x4/2.
    Conv {
        /// Width of G's first fully-connected layer.
        g_hidden: usize,
        /// Channels of D's convolution.
        d_channels: usize,
        /// Size of D's code (the embedding the pulling-away term sees).
        code: usize,
        /// BatchNorm after D's decoding linear map (as in the common conv port; off in the
        /// preset). Real and generated batches go through it separately, so D can decode a
        /// generated batch from its own statistics rather than from the data it has learnt; in
        /// our runs the generator then collapsed.
        #[serde(default)]
        d_batchnorm: bool,
        /// Stride-2 convolutions in each half of D's autoencoder: 1 (the common port: conv
        /// `1 -> channels`, code, convT `channels -> 1`) or 2 (as the paper's convolutional
        /// discriminators: conv `1 -> channels -> 2 channels`, code, convT `2 channels ->
        /// channels -> 1`). Checkpoints written before this field existed have 1.
        #[serde(default = "one")]
        d_depth: usize,
        /// BatchNorm after D's second encoding convolution (depth 2 only), where the GAN
        /// baseline's discriminator has its BatchNorm (the paper puts one after every weight layer
        /// but D's first). Real and generated batches go through it separately, as in the
        /// baseline. Off in the presets and in checkpoints written before this field existed.
        #[serde(default)]
        d_encoder_batchnorm: bool,
    },
    /// The paper's fully-connected MNIST networks: G is `z -> hidden (depth times) -> S^2`, D
    /// encodes `S^2 -> hidden (depth - 1 times) -> code` and decodes `code -> hidden (depth - 1
    /// times) -> S^2` (depth 2: `784 -> hidden -> code -> hidden -> 784`).
    FullyConnected {
        /// Hidden width.
        hidden: usize,
        /// Code size.
        code: usize,
        /// Number of hidden layers of G (at least 1) and of each half of D's autoencoder plus one
        /// (at least 2).
        depth: usize,
    },
}

fn one() -> usize {
    1
}

/// Everything that defines an EBGAN model and its objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Dimension of the latent `z ~ U(-1, 1)`.
    pub latent_dim: usize,
    /// The networks.
    pub architecture: Architecture,
    /// The energy.
    pub energy: Energy,
    /// Margin `m` of the discriminator's hinge.
    pub margin: f64,
    /// Weight of the pulling-away term in the generator loss (0 disables it).
    pub pt_weight: f64,
    /// Side of the square greyscale images (28 for MNIST).
    pub image_size: usize,
}

impl Config {
    /// The common MNIST setting: DCGAN-style conv networks, z = 62, 32-d code, no BatchNorm in the
    /// autoencoder, mean-squared energy (on pixels in `[-1, 1]`), margin 1, pulling-away weight 0.1.
    pub fn mnist_conv() -> Self {
        Self {
            latent_dim: 62,
            architecture: Architecture::Conv {
                g_hidden: 1024,
                d_channels: 64,
                code: 32,
                d_batchnorm: false,
                d_depth: 1,
                d_encoder_batchnorm: false,
            },
            energy: Energy::MeanSquared,
            margin: 1.0,
            pt_weight: 0.1,
            image_size: 28,
        }
    }

    /// The paper's fully-connected MNIST setting: L2-norm energy, margin 10, pulling-away weight 0.1.
    pub fn paper_mnist_fc() -> Self {
        Self {
            latent_dim: 100,
            architecture: Architecture::FullyConnected { hidden: 512, code: 128, depth: 2 },
            energy: Energy::L2Norm,
            margin: 10.0,
            pt_weight: 0.1,
            image_size: 28,
        }
    }
}
