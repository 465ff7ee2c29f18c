//! Domain adaptation from MNIST to MNIST-M with DANN and its baselines: train, evaluate, classify
//! an image, export the MNIST-M built here.
//!
//! ```text
//! cargo run --release --example dann -- train --method dann --data-dir .cache/mnist --run-dir run/dann
//! cargo run --release --example dann -- eval --weights run/dann/dann.safetensors --data-dir .cache/mnist --json
//! cargo run --release --example dann -- classify --weights run/dann/dann.safetensors --image digit.png
//! cargo run --release --example dann -- export-mnistm --data-dir .cache/mnist --out mnist-m
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_zoo::cli_args::DataArgs;
use clap::{Args, Parser, Subcommand, ValueEnum};
use zoo_core::checkpoint::{SaveOptions, ZooModel};
use zoo_core::train::{run, LoopConfig};
use zoo_dann::{accuracy, DaTrainConfig, DaTrainer, Dann, Method};
use zoo_data::{build_mnistm, ImageSet, Photos, Split};

/// A memory allocator that keeps freed pages for reuse between training steps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// DANN (Ganin & Lempitsky 2015) from MNIST to an MNIST-M built from six public-domain/CC0 photos.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train on labelled MNIST train and unlabelled MNIST-M train (or, for the baselines, on
    /// one domain's labels).
    Train(TrainArgs),
    /// Accuracy on MNIST-M test (target) and MNIST test (source).
    Eval(EvalArgs),
    /// Predict the digit in a PNG/JPEG image (resized to 28x28 RGB).
    Classify(ClassifyArgs),
    /// Write MNIST-M (train and test) as PNG class folders: OUT/{train,test}/<digit>/<index>.png.
    ExportMnistm(ExportArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum MethodArg {
    /// Gradient reversal: source labels plus the adversarial domain loss.
    Dann,
    /// Source labels only (lower baseline).
    SourceOnly,
    /// Target labels (upper bound; uses MNIST-M labels).
    TargetOnly,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// What to train.
    #[arg(long, value_enum, default_value = "dann")]
    method: MethodArg,
    /// Training steps of 64 source + 64 target images.
    #[arg(long, default_value_t = 10_000)]
    steps: u64,
    /// Seed of initialisation and data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run directory: checkpoints and metrics.jsonl.
    #[arg(long, default_value = "run/dann")]
    run_dir: PathBuf,
    /// Continue the run in --run-dir from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: u64,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Manifest id or path of a `dann` checkpoint (DANN or a baseline).
    #[arg(long)]
    weights: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ClassifyArgs {
    /// Manifest id or path of a `dann` checkpoint.
    #[arg(long)]
    weights: String,
    /// The image (PNG or JPEG, any size, colour or grey).
    #[arg(long)]
    image: PathBuf,
}

#[derive(Args)]
struct ExportArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

/// The seeds that make MNIST-M's train and test halves (fixed: everyone gets the same set).
fn mnistm_seed(split: Split) -> u64 {
    match split {
        Split::Train => 0,
        Split::Test => 1,
    }
}

fn domains(data: &DataArgs, split: Split) -> Result<(ImageSet, ImageSet)> {
    let mnist = data.load(split)?;
    let target = build_mnistm(&mnist, &Photos::bundled()?, mnistm_seed(split))?;
    Ok((ImageSet::from_mnist_rgb(&mnist), target))
}

fn train(a: TrainArgs) -> Result<()> {
    let dev = zoo_core::device(&a.data.device)?;
    let method = match a.method {
        MethodArg::Dann => Method::Dann,
        MethodArg::SourceOnly => Method::SourceOnly,
        MethodArg::TargetOnly => Method::TargetOnly,
    };
    let (source, target) = domains(&a.data, Split::Train)?;
    let mut trainer = DaTrainer::new(DaTrainConfig::paper(method, a.steps, a.seed), source, target, &dev)?;
    eprintln!("training {method:?}: {} steps, run directory {}", a.steps, a.run_dir.display());
    let lc =
        LoopConfig { checkpoint_every: a.checkpoint_every, resume: a.resume, ..LoopConfig::new(&a.run_dir, a.steps) };
    let summary = run(&mut trainer, &lc)?;
    zoo_eval::picture::curve::plot_curves_from_jsonl(
        &lc.log_path(),
        &["loss", "class_loss", "domain_loss"],
        &a.run_dir.join("curves.png"),
    )?;
    let out = a.run_dir.join("dann.safetensors");
    trainer
        .model
        .save_with(&out, &SaveOptions { step: Some(summary.steps_done), seed: Some(a.seed), storage: None })?;
    eprintln!("saved {}", out.display());
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let dev = zoo_core::device(&a.data.device)?;
    let model = Dann::from_pretrained(&a.weights, &dev)?;
    let (source, target) = domains(&a.data, Split::Test)?;
    let (target_accuracy, _) = accuracy(&model.net, &target, 500, &dev)?;
    let (source_accuracy, _) = accuracy(&model.net, &source, 500, &dev)?;
    let out =
        serde_json::json!({"target_accuracy": target_accuracy, "source_accuracy": source_accuracy, "n": target.len()});
    if a.json {
        println!("{out}");
    } else {
        println!("MNIST-M test accuracy (target): {target_accuracy:.4}\nMNIST test accuracy (source): {source_accuracy:.4}\n({} images each)", target.len());
    }
    Ok(())
}

fn classify(a: ClassifyArgs) -> Result<()> {
    let dev = candle_core::Device::Cpu;
    let model = Dann::from_pretrained(&a.weights, &dev)?;
    let img = image::open(&a.image).with_context(|| format!("cannot read image {}", a.image.display()))?;
    let s = model.config().image_size as u32;
    let rgb = image::imageops::resize(&img.to_rgb8(), s, s, image::imageops::FilterType::Triangle);
    let set = ImageSet {
        images: (0..3).flat_map(|c| rgb.pixels().map(move |p| p.0[c])).collect(),
        labels: vec![0],
        channels: 3,
        rows: s as usize,
        cols: s as usize,
    };
    let (x, _) = set.batch(&[0], &dev)?;
    let probs = candle_nn::ops::softmax(&model.forward(&x)?, 1)?.squeeze(0)?.to_vec1::<f32>()?;
    let (digit, p) = probs.iter().enumerate().fold((0, 0f32), |best, (i, &p)| if p > best.1 { (i, p) } else { best });
    println!("{digit} (probability {p:.3})");
    Ok(())
}

fn export(a: ExportArgs) -> Result<()> {
    for (split, name) in [(Split::Train, "train"), (Split::Test, "test")] {
        let (_, target) = domains(&a.data, split)?;
        target.export_png_folders(&a.out.join(name))?;
        eprintln!("wrote {} images to {}", target.len(), a.out.join(name).display());
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    candle_zoo::exit_with(match cli.command {
        Command::Train(a) => train(a),
        Command::Eval(a) => eval(a),
        Command::Classify(a) => classify(a),
        Command::ExportMnistm(a) => export(a),
    })
}
