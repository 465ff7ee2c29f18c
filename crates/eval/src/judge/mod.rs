//! The MNIST judge: a small LeNet-style CNN (LeCun et al. 1998, with ReLU, max-pooling and
//! dropout) trained on MNIST, used by the zoo to score generated digits (classifier inception
//! score, judge-feature distances, mode coverage) and domain-adaptation features.
//!
//! ```text
//! x [B,1,28,28] in [0,1] -> (x - 0.1307) / 0.3081
//!   conv1 5x5, 1->32, pad 2 -> ReLU -> max-pool 2   [B,32,14,14]
//!   conv2 5x5, 32->64, pad 2 -> ReLU -> max-pool 2  [B,64,7,7]
//!   fc1 3136->128 -> ReLU = features                [B,128]
//!   dropout 0.5 (training) -> fc2 128->10 = logits   [B,10]
//! ```

mod config;
mod model;
mod train;

pub use config::{JudgeConfig, JudgeTrainConfig};
pub use model::{evaluate, image_to_input, Judge, JudgeEval};
pub use train::JudgeTrainer;
