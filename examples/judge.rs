//! The MNIST judge classifier: train it, evaluate it, classify an image.
//!
//! ```text
//! cargo run --release --example judge -- train                      # full MNIST (scripts/fetch-data.sh mnist)
//! cargo run --release --example judge -- eval --weights judge-mnist --json
//! cargo run --release --example judge -- predict --weights judge-mnist --image digit.png
//! ```

/// A memory allocator that keeps freed pages for reuse: training allocates and frees the same
/// large buffers every step, which glibc hands back to the kernel (page faults ate a third of a
/// step's time).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_zoo::cli_args::DataArgs;
use clap::{Args, Parser, Subcommand};
use zoo_core::checkpoint::{SaveOptions, ZooModel};
use zoo_core::train::{run, LoopConfig};
use zoo_data::Split;
use zoo_eval::judge::{evaluate, image_to_input, Judge, JudgeConfig, JudgeTrainConfig, JudgeTrainer};

/// The MNIST judge: a LeNet-style CNN that the zoo uses to score generated digits.
#[derive(Parser)]
#[command(version, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the judge on MNIST train (60,000 digits; --bundled uses the shipped 10,000).
    Train(TrainArgs),
    /// Measure test accuracy on the MNIST test set (10,000 digits; --bundled uses the shipped 1,000).
    Eval(EvalArgs),
    /// Classify one image file (PNG/JPEG; any size, colour is converted to grey).
    Predict(PredictArgs),
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Passes over the training set.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Adam learning rate (multiplied by --lr-decay after each epoch).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Learning-rate factor per epoch.
    #[arg(long, default_value_t = 0.3)]
    lr_decay: f64,
    /// Seed of initialisation, data order and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run directory: checkpoints, metrics.jsonl, curves.png.
    #[arg(long, default_value = "run/judge")]
    run_dir: PathBuf,
    /// Continue the run in --run-dir from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: u64,
    /// Where to write the final weights (default: judge-mnist.safetensors in --run-dir).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Manifest id (e.g. judge-mnist) or path of a judge checkpoint.
    #[arg(long, default_value = "judge-mnist")]
    weights: String,
    /// Print one JSON object of metrics on stdout: {"accuracy", "n", "split"}.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PredictArgs {
    /// Manifest id or path of a judge checkpoint.
    #[arg(long, default_value = "judge-mnist")]
    weights: String,
    /// The image to classify.
    #[arg(long)]
    image: PathBuf,
    /// The digit is dark on a light background (MNIST is light on dark).
    #[arg(long)]
    invert: bool,
    /// Device: cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print JSON {"class", "probabilities"}.
    #[arg(long)]
    json: bool,
}

fn train(a: TrainArgs) -> Result<()> {
    let dev = zoo_core::device(&a.data.device)?;
    let data = a.data.load(Split::Train)?;
    let recipe = JudgeTrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        lr_decay_per_epoch: a.lr_decay,
        seed: a.seed,
    };
    let n = data.len();
    let mut trainer = JudgeTrainer::new(&JudgeConfig::lenet(), recipe, data, &dev)?;
    let steps = trainer.total_steps();
    eprintln!("training the judge on {n} images: {steps} steps, run directory {}", a.run_dir.display());
    // A resume must continue the same recipe on the same data.
    let settings = serde_json::json!({"recipe": &trainer.cfg, "training_images": n});
    let cfg = LoopConfig {
        checkpoint_every: a.checkpoint_every,
        resume: a.resume,
        settings,
        ..LoopConfig::new(&a.run_dir, steps)
    };
    let summary = run(&mut trainer, &cfg)?;
    zoo_eval::picture::curve::plot_curves_from_jsonl(
        &cfg.log_path(),
        &["loss", "batch_accuracy"],
        &a.run_dir.join("curves.png"),
    )?;
    let out = a.out.clone().unwrap_or_else(|| a.run_dir.join("judge-mnist.safetensors"));
    trainer
        .judge
        .save_with(&out, &SaveOptions { step: Some(summary.steps_done), seed: Some(a.seed), storage: None })?;
    eprintln!("saved {} (curves in {})", out.display(), a.run_dir.join("curves.png").display());
    match a.data.load(Split::Test) {
        Ok(test) => {
            let r = evaluate(&trainer.judge, &test, 256, &dev)?;
            eprintln!("test accuracy: {:.4} on {} images", r.accuracy, test.len());
        }
        Err(e) => eprintln!("(no test set to evaluate on: {e})"),
    }
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let dev = zoo_core::device(&a.data.device)?;
    let judge = Judge::from_pretrained(&a.weights, &dev)?;
    let test = a.data.load(Split::Test)?;
    let r = evaluate(&judge, &test, 256, &dev)?;
    let split = if a.data.bundled { "mnist-test-first-1k" } else { "mnist-test" };
    if a.json {
        println!("{}", serde_json::json!({"accuracy": r.accuracy, "n": test.len(), "split": split}));
    } else {
        println!("accuracy {:.4} on {} images of {split}", r.accuracy, test.len());
    }
    Ok(())
}

fn predict(a: PredictArgs) -> Result<()> {
    let dev = zoo_core::device(&a.device)?;
    let judge = Judge::from_pretrained(&a.weights, &dev)?;
    let img = image::open(&a.image).with_context(|| format!("cannot read image {}", a.image.display()))?;
    let x = image_to_input(&img, judge.config().image_size, a.invert, &dev)?;
    let p: Vec<f32> = judge.probabilities(&x)?.flatten_all()?.to_vec1()?;
    let (class, best) = p.iter().enumerate().fold((0, f32::MIN), |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc });
    if a.json {
        println!("{}", serde_json::json!({"class": class, "probabilities": p}));
    } else {
        println!("{}: digit {class} (p = {best:.3})", a.image.display());
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    candle_zoo::tune_runtime();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => train(a),
        Command::Eval(a) => eval(a),
        Command::Predict(a) => predict(a),
    };
    candle_zoo::exit_with(result)
}
