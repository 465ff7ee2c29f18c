//! Deep domain confusion from MNIST to MNIST-M: train (MMD between the domains' features),
//! evaluate, classify an image.
//!
//! ```text
//! cargo run --release --example ddc -- train --data-dir .cache/mnist --run-dir run/ddc
//! cargo run --release --example ddc -- eval --weights run/ddc/ddc.safetensors --data-dir .cache/mnist --json
//! cargo run --release --example ddc -- classify --weights run/ddc/ddc.safetensors --image digit.png
//! ```
//!
//! The baselines (source-only, target-only), the embedding figure and the comparison table are
//! `dann` subcommands: the baselines are the same digit network.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_zoo::adaptation::{self, ClassifyArgs, EvalArgs, RunArgs};
use candle_zoo::cli_args::DataArgs;
use clap::{Args, Parser, Subcommand, ValueEnum};
use zoo_dann::Method;
use zoo_data::Split;
use zoo_ddc::{Ddc, DdcConfig, MmdKernel, MmdLayer};

/// A memory allocator that keeps freed pages for reuse between training steps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// DDC (Tzeng et al. 2014) from MNIST to an MNIST-M built from six public-domain/CC0 photos.
#[derive(Parser)]
#[command(version, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train on labelled MNIST train and unlabelled MNIST-M train with the MMD term.
    Train(TrainArgs),
    /// Accuracy on MNIST-M test (target) and MNIST test (source).
    Eval(EvalArgs),
    /// Predict the digit in a PNG/JPEG image (resized to 28x28 RGB).
    Classify(ClassifyArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum KernelArg {
    /// `||mean phi(x_s) - mean phi(x_t)||^2` (the paper).
    Linear,
    /// A sum of 5 Gaussian kernels, bandwidths a factor 2 apart around the mean pairwise distance.
    MultiRbf,
}

#[derive(Clone, Copy, ValueEnum)]
enum LayerArg {
    /// The adaptation (bottleneck) layer before the output layer (the paper).
    Adaptation,
    /// The flattened convolutional features (768 values), where DANN's domain classifier looks.
    Features,
}

#[derive(Clone, Copy, ValueEnum)]
enum PresetArg {
    /// Multi-kernel Gaussian MMD on the convolutional features, weight ramped from 0 to 1 (the
    /// zoo's setting, the published checkpoint).
    Mnist,
    /// The paper's: linear MMD on the adaptation layer, constant weight 0.25.
    Paper,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    run: RunArgs,
    /// The setting to start from; the options below override parts of it.
    #[arg(long, value_enum, default_value = "mnist")]
    preset: PresetArg,
    /// Weight lambda of MMD^2 in the loss (mnist: 1, paper: 0.25).
    #[arg(long)]
    mmd_weight: Option<f64>,
    /// The MMD estimator (mnist: multi-rbf, paper: linear).
    #[arg(long, value_enum)]
    kernel: Option<KernelArg>,
    /// Where the MMD is measured (mnist: features, paper: adaptation).
    #[arg(long, value_enum)]
    mmd_layer: Option<LayerArg>,
    /// Ramp the MMD weight up from 0 like DANN's reversal coefficient, 2 / (1 + exp(-10 p)) - 1
    /// (mnist: true, paper: false).
    #[arg(long)]
    mmd_ramp: Option<bool>,
    /// Units of the adaptation (bottleneck) layer.
    #[arg(long, default_value_t = 64)]
    adaptation_units: usize,
    /// A linear adaptation layer (no ReLU after it).
    #[arg(long)]
    linear_adaptation: bool,
    /// Run directory: checkpoints, metrics.jsonl, curves.png and the final ddc.safetensors.
    #[arg(long, default_value = "run/ddc")]
    run_dir: PathBuf,
}

fn train(a: TrainArgs) -> Result<()> {
    if a.adaptation_units == 0 {
        bail!("--adaptation-units must be at least 1");
    }
    let dev = zoo_core::device(&a.data.device)?;
    let base = match a.preset {
        PresetArg::Mnist => DdcConfig::mnist(),
        PresetArg::Paper => DdcConfig::paper(),
    };
    let cfg = DdcConfig {
        net: zoo_dann::DannConfig {
            adaptation_layer: Some(a.adaptation_units),
            adaptation_relu: !a.linear_adaptation,
            ..base.net
        },
        kernel: match a.kernel {
            None => base.kernel,
            Some(KernelArg::Linear) => MmdKernel::Linear,
            Some(KernelArg::MultiRbf) => MmdKernel::MultiRbf { kernels: 5, multiplier: 2.0 },
        },
        mmd_weight: a.mmd_weight.unwrap_or(base.mmd_weight),
        mmd_layer: match a.mmd_layer {
            None => base.mmd_layer,
            Some(LayerArg::Adaptation) => MmdLayer::Adaptation,
            Some(LayerArg::Features) => MmdLayer::Features,
        },
        mmd_ramp: a.mmd_ramp.unwrap_or(base.mmd_ramp),
    };
    let data = adaptation::domains(&a.data, Split::Train)?;
    adaptation::train_run::<Ddc>(&cfg, Method::Adapt, data, &a.run, &a.run_dir, "ddc.safetensors", &dev)?;
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    adaptation::eval_command(&a)
}

fn classify(a: ClassifyArgs) -> Result<()> {
    adaptation::classify_command(&a)
}

fn main() -> std::process::ExitCode {
    candle_zoo::tune_runtime();
    let cli = Cli::parse();
    candle_zoo::exit_with(match cli.command {
        Command::Train(a) => train(a),
        Command::Eval(a) => eval(a),
        Command::Classify(a) => classify(a),
    })
}
