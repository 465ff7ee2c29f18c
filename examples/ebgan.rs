//! EBGAN on MNIST: train, sample, evaluate with the judge.
//!
//! ```text
//! cargo run --release --example ebgan -- train --run-dir run/ebgan        # full MNIST (scripts/fetch-data.sh mnist)
//! cargo run --release --example ebgan -- sample --weights run/ebgan/checkpoint.safetensors --out grid.png
//! cargo run --release --example ebgan -- eval --weights run/ebgan/checkpoint.safetensors --json
//! ```

use std::path::PathBuf;

use anyhow::Result;
use candle_zoo::cli_args::DataArgs;
use clap::{Args, Parser, Subcommand, ValueEnum};
use zoo_core::checkpoint::{SaveOptions, ZooModel};
use zoo_core::train::{run, LoopConfig};
use zoo_core::ZooRng;
use zoo_data::Split;
use zoo_ebgan::{Config, Ebgan, TrainConfig, Trainer};
use zoo_eval::judge::Judge;

/// A memory allocator that keeps freed pages for reuse between training steps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Energy-based GAN (Zhao, Mathieu & LeCun 2017) on MNIST.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train on MNIST train (60,000 digits; --bundled uses the shipped 10,000), with sample grids
    /// at every checkpoint.
    Train(TrainArgs),
    /// Write a grid of samples as PNG.
    Sample(SampleArgs),
    /// Score samples with the judge: judge_fd (+ floor), kid, inception_score, modes_covered, kl_to_uniform.
    Eval(EvalArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Preset {
    /// DCGAN-style conv networks, mean-squared energy, margin 1.
    Conv,
    /// The paper's fully-connected networks, L2-norm energy, margin 10.
    PaperFc,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Model preset.
    #[arg(long, value_enum, default_value = "conv")]
    preset: Preset,
    /// Passes over the training set.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Adam learning rate of both networks.
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Margin m of the discriminator's hinge (default: the preset's).
    #[arg(long)]
    margin: Option<f64>,
    /// Weight of the pulling-away term (default: the preset's, 0.1).
    #[arg(long)]
    pt_weight: Option<f64>,
    /// Seed of initialisation, data order and latents.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run directory: checkpoints, metrics.jsonl, sample grids.
    #[arg(long, default_value = "run/ebgan")]
    run_dir: PathBuf,
    /// Continue the run in --run-dir from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Steps between checkpoints (and sample grids).
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
}

#[derive(Args)]
struct SampleArgs {
    /// Manifest id or path of an EBGAN checkpoint.
    #[arg(long)]
    weights: String,
    /// Number of samples.
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// Seed of the latents.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output PNG.
    #[arg(long, default_value = "ebgan-samples.png")]
    out: PathBuf,
    /// Device: cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Manifest id or path of an EBGAN checkpoint.
    #[arg(long)]
    weights: String,
    /// Manifest id or path of the judge.
    #[arg(long, default_value = "judge-mnist")]
    judge: String,
    /// Number of generated samples.
    #[arg(long, default_value_t = 10000)]
    n: usize,
    /// Seed of the latents and of KID's subsets.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object of the metrics.
    #[arg(long)]
    json: bool,
}

fn train(a: TrainArgs) -> Result<()> {
    let dev = zoo_core::device(&a.data.device)?;
    let mut cfg = match a.preset {
        Preset::Conv => Config::mnist_conv(),
        Preset::PaperFc => Config::paper_mnist_fc(),
    };
    if let Some(m) = a.margin {
        cfg.margin = m;
    }
    if let Some(w) = a.pt_weight {
        cfg.pt_weight = w;
    }
    let data = a.data.load(Split::Train)?;
    let recipe = TrainConfig { batch_size: a.batch_size, lr_g: a.lr, lr_d: a.lr, seed: a.seed, ..Default::default() };
    let mut trainer = Trainer::new(&cfg, recipe, data, &dev)?;
    let steps = trainer.steps_for_epochs(a.epochs);
    eprintln!("training EBGAN: {steps} steps, run directory {}", a.run_dir.display());
    let lc =
        LoopConfig { checkpoint_every: a.checkpoint_every, resume: a.resume, ..LoopConfig::new(&a.run_dir, steps) };
    let summary = run(&mut trainer, &lc)?;
    zoo_eval::picture::curve::plot_curves_from_jsonl(
        &lc.log_path(),
        &["loss_d", "loss_g", "energy_real", "energy_fake"],
        &a.run_dir.join("curves.png"),
    )?;
    let out = a.run_dir.join("ebgan-mnist.safetensors");
    trainer
        .model
        .save_with(&out, &SaveOptions { step: Some(summary.steps_done), seed: Some(a.seed), storage: None })?;
    eprintln!("saved {}", out.display());
    Ok(())
}

fn sample(a: SampleArgs) -> Result<()> {
    let dev = zoo_core::device(&a.device)?;
    let model = Ebgan::from_pretrained(&a.weights, &dev)?;
    let x = model.sample(a.n, &mut ZooRng::new(a.seed), &dev)?;
    let cols = (a.n as f64).sqrt().ceil() as usize;
    zoo_eval::picture::save_image_grid(&x, cols.max(1), 2, 2, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let dev = zoo_core::device(&a.data.device)?;
    let model = Ebgan::from_pretrained(&a.weights, &dev)?;
    let judge = Judge::from_pretrained(&a.judge, &dev)?;
    let test = a.data.load(Split::Test)?;
    let train = a.data.load(Split::Train)?;
    let mut rng = ZooRng::new(a.seed);
    let mut chunks = Vec::new();
    for start in (0..a.n).step_by(500) {
        chunks.push(model.sample(500.min(a.n - start), &mut rng, &dev)?);
    }
    let samples = candle_core::Tensor::cat(&chunks, 0)?;
    let m = zoo_eval::gan::gan_metrics(&judge, &samples, &test, &train, a.seed)?;
    if a.json {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        println!("{m:#?}");
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    candle_zoo::exit_with(match cli.command {
        Command::Train(a) => train(a),
        Command::Sample(a) => sample(a),
        Command::Eval(a) => eval(a),
    })
}
