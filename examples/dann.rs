//! Domain adaptation from MNIST to MNIST-M with DANN and its baselines: train, evaluate, classify
//! an image, draw the embedding figure, reproduce the comparison table, export the MNIST-M built
//! here.
//!
//! ```text
//! cargo run --release --example dann -- train --method dann --data-dir .cache/mnist --run-dir run/dann
//! cargo run --release --example dann -- eval --weights run/dann/dann.safetensors --data-dir .cache/mnist --json
//! cargo run --release --example dann -- classify --weights run/dann/dann.safetensors --image digit.png
//! cargo run --release --example dann -- embedding --before run/da/source-only-s0/dann.safetensors --after run/da/dann-s0/dann.safetensors --out embedding.png
//! cargo run --release --example dann -- table --data-dir .cache/mnist --out run/da
//! cargo run --release --example dann -- export-mnistm --data-dir .cache/mnist --out mnist-m
//! ```

use std::path::PathBuf;

use anyhow::Result;
use candle_zoo::adaptation::{self, AnyAdapted, ClassifyArgs, EvalArgs, RunArgs, TableArgs};
use candle_zoo::cli_args::DataArgs;
use clap::{Args, Parser, Subcommand, ValueEnum};
use zoo_dann::{Dann, DannConfig, Method};
use zoo_data::Split;

/// A memory allocator that keeps freed pages for reuse between training steps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// DANN (Ganin & Lempitsky 2015) from MNIST to an MNIST-M built from six public-domain/CC0 photos.
#[derive(Parser)]
#[command(version, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train on labelled MNIST train and unlabelled MNIST-M train (or, for the baselines, on
    /// one domain's labels).
    Train(TrainArgs),
    /// Accuracy on MNIST-M test (target) and MNIST test (source) of a dann or ddc checkpoint.
    Eval(EvalArgs),
    /// Predict the digit in a PNG/JPEG image (resized to 28x28 RGB).
    Classify(ClassifyArgs),
    /// The paper's figure: source and target test features projected by PCA, before and after
    /// adaptation (PNG).
    Embedding(EmbeddingArgs),
    /// Reproduce the comparison table: source-only, DDC, DANN and target-only over several seeds
    /// (trains what is missing, resumes what stopped, then evaluates every run).
    Table(TableCmd),
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
    #[command(flatten)]
    run: RunArgs,
    /// Run directory: checkpoints, metrics.jsonl, curves.png and the final dann.safetensors.
    #[arg(long, default_value = "run/dann")]
    run_dir: PathBuf,
}

#[derive(Args)]
struct EmbeddingArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The network before adaptation (a source-only checkpoint).
    #[arg(long)]
    before: String,
    /// The adapted network (a dann or ddc checkpoint).
    #[arg(long)]
    after: String,
    /// Test images per domain.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Output PNG.
    #[arg(long, default_value = "embedding.png")]
    out: PathBuf,
}

#[derive(Args)]
struct TableCmd {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    table: TableArgs,
}

#[derive(Args)]
struct ExportArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

fn train(a: TrainArgs) -> Result<()> {
    let dev = zoo_core::device(&a.data.device)?;
    let method = match a.method {
        MethodArg::Dann => Method::Adapt,
        MethodArg::SourceOnly => Method::SourceOnly,
        MethodArg::TargetOnly => Method::TargetOnly,
    };
    let data = adaptation::domains(&a.data, Split::Train)?;
    adaptation::train_run::<Dann>(&DannConfig::mnist(), method, data, &a.run, &a.run_dir, "dann.safetensors", &dev)?;
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    adaptation::eval_command(&a)
}

fn classify(a: ClassifyArgs) -> Result<()> {
    adaptation::classify_command(&a)
}

fn embedding(a: EmbeddingArgs) -> Result<()> {
    let dev = zoo_core::device(&a.data.device)?;
    let before = AnyAdapted::from_pretrained(&a.before, &dev)?;
    let after = AnyAdapted::from_pretrained(&a.after, &dev)?;
    let test = adaptation::domains(&a.data, Split::Test)?;
    let nets = [("before adaptation".to_string(), before.net()), ("after adaptation".to_string(), after.net())];
    adaptation::embedding_figure(&nets, &test, a.n, &a.out, &dev)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn table(a: TableCmd) -> Result<()> {
    let table = adaptation::reproduce_table(&a.table, &a.data)?;
    println!("{table}");
    eprintln!("wrote {} and {}", a.table.out.join("table.md").display(), a.table.out.join("table.json").display());
    Ok(())
}

fn export(a: ExportArgs) -> Result<()> {
    for (split, name) in [(Split::Train, "train"), (Split::Test, "test")] {
        let (_, target) = adaptation::domains(&a.data, split)?;
        target.export_png_folders(&a.out.join(name))?;
        eprintln!("wrote {} images to {}", target.len(), a.out.join(name).display());
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    candle_zoo::tune_runtime();
    let cli = Cli::parse();
    candle_zoo::exit_with(match cli.command {
        Command::Train(a) => train(a),
        Command::Eval(a) => eval(a),
        Command::Classify(a) => classify(a),
        Command::Embedding(a) => embedding(a),
        Command::Table(a) => table(a),
        Command::ExportMnistm(a) => export(a),
    })
}
