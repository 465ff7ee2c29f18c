//! AC-GAN on MNIST, with or without the MSGAN mode-seeking regulariser: train, sample a class,
//! draw the class-by-sample grid, evaluate.
//!
//! ```text
//! cargo run --release --example acgan -- train --data-dir .cache/mnist --run-dir run/acgan
//! cargo run --release --example acgan -- train --ms-weight 1 --data-dir .cache/mnist --run-dir run/acgan-msgan
//! cargo run --release --example acgan -- sample --weights run/acgan/acgan-mnist.safetensors --class 7 --out sevens.png
//! cargo run --release --example acgan -- grid --weights run/acgan/acgan-mnist.safetensors --out grid.png
//! cargo run --release --example acgan -- eval --weights run/acgan/acgan-mnist.safetensors --data-dir .cache/mnist --json
//! ```

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_zoo::cli_args::{DataArgs, ExportArgs, GanRunArgs, RecalibrateArgs};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use zoo_cgan::{AcGan, AcGanConfig};
use zoo_core::checkpoint::ZooModel;
use zoo_core::ZooRng;
use zoo_data::Split;
use zoo_ebgan::{Adversarial, TrainConfig, Trainer};
use zoo_eval::conditional::{conditional_metrics, ndb_bins, ConditionalMetrics};
use zoo_eval::gan::GanMetrics;
use zoo_eval::judge::Judge;

/// A memory allocator that keeps freed pages for reuse between training steps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// AC-GAN (Odena et al. 2017): a class-conditional GAN whose discriminator also classifies,
/// optionally with the MSGAN mode-seeking regulariser (Mao et al. 2019).
#[derive(Parser)]
#[command(version, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train on MNIST train (batch 64, Adam 2e-4, beta1 0.5), sample grids and judge scores at
    /// every checkpoint.
    Train(TrainArgs),
    /// Samples of one class.
    Sample(SampleArgs),
    /// A grid with one row per class.
    Grid(GridArgs),
    /// class_accuracy, intra_class_diversity, ndb, jsd (and per-class figures), plus the judge's
    /// sample-quality metrics of `ebgan eval`.
    Eval(EvalArgs),
    /// Rewrite a checkpoint with half-precision (f16) storage: half the size, loaded back as f32.
    Export(ExportArgs),
    /// Re-measure the generator's BatchNorm statistics on its own samples ("standing statistics")
    /// and write the result as a new checkpoint; the weights are unchanged. For a weight-averaged
    /// generator (train --ema), whose averaged statistics were measured on other weights.
    Recalibrate(RecalibrateArgs),
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    run: GanRunArgs,
    /// Passes over the training set.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Weight of the MSGAN mode-seeking term (0: plain AC-GAN; 1 in the MSGAN authors' code).
    #[arg(long, default_value_t = 0.0)]
    ms_weight: f64,
}

#[derive(Args)]
struct SampleArgs {
    /// Manifest id or path of an `acgan` checkpoint.
    #[arg(long)]
    weights: String,
    /// The digit to draw (0-9).
    #[arg(long)]
    class: u32,
    /// Number of samples.
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output PNG.
    #[arg(long, default_value = "acgan-class.png")]
    out: PathBuf,
    /// Device: cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
struct GridArgs {
    /// Manifest id or path of an `acgan` checkpoint.
    #[arg(long)]
    weights: String,
    /// Samples per class (columns).
    #[arg(long, default_value_t = 10)]
    per_class: usize,
    /// Seed of the noise (the same noise in every row).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output PNG.
    #[arg(long, default_value = "acgan-grid.png")]
    out: PathBuf,
    /// Device: cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Manifest id or path of an `acgan` checkpoint; repeat the option to measure several with
    /// the same samples' noise, bins and judge (e.g. AC-GAN against AC-GAN + MSGAN).
    #[arg(long, required = true)]
    weights: Vec<String>,
    /// Also write a markdown table comparing the checkpoints to this file.
    #[arg(long)]
    table: Option<PathBuf>,
    /// Manifest id or path of the judge.
    #[arg(long, default_value = "judge-mnist")]
    judge: String,
    /// Samples per class.
    #[arg(long, default_value_t = 1000)]
    per_class: usize,
    /// Seed of the noise, of KID's subsets and of the k-means initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object of the metrics.
    #[arg(long)]
    json: bool,
}

fn train(a: TrainArgs) -> Result<()> {
    let dev = zoo_core::device(&a.data.device)?;
    let cfg = AcGanConfig { ms_weight: a.ms_weight, ..AcGanConfig::mnist() };
    let data = a.data.load(Split::Train)?;
    let monitor = a.run.monitor(&a.data, &data, &dev)?;
    let trainer = Trainer::<AcGan>::new(&cfg, a.run.recipe(TrainConfig::default()), data, &dev)?;
    let steps = trainer.steps_for_epochs(a.epochs);
    eprintln!("MSGAN weight {}", a.ms_weight);
    a.run.train(trainer, monitor, steps, "acgan-mnist", &["loss_d", "loss_g", "class_loss"])?;
    Ok(())
}

/// `n` samples per class `classes`, class-major, with the same noise for every class.
fn per_class(model: &AcGan, classes: &[u32], n: usize, seed: u64, dev: &Device) -> Result<(Tensor, Vec<u32>)> {
    let noise = ZooRng::new(seed).uniform((n, model.config().noise_dim), -1.0, 1.0, DType::F32, dev)?;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for &c in classes {
        for s in (0..n).step_by(500) {
            let len = (n - s).min(500);
            images.push(model.generate(&model.latents_for(&noise.narrow(0, s, len)?, &vec![c; len])?)?);
        }
        labels.extend(std::iter::repeat_n(c, n));
    }
    Ok((Tensor::cat(&images, 0)?, labels))
}

fn sample(a: SampleArgs) -> Result<()> {
    let dev = zoo_core::device(&a.device)?;
    let model = AcGan::from_pretrained(&a.weights, &dev)?;
    let x = model.sample_class(a.class, a.n, &mut ZooRng::new(a.seed), &dev)?;
    let cols = (a.n as f64).sqrt().ceil() as usize;
    zoo_eval::picture::save_image_grid(&x, cols.max(1), 2, 2, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn grid(a: GridArgs) -> Result<()> {
    if a.per_class == 0 {
        bail!("--per-class must be at least 1");
    }
    let dev = zoo_core::device(&a.device)?;
    let model = AcGan::from_pretrained(&a.weights, &dev)?;
    let classes: Vec<u32> = (0..model.config().classes as u32).collect();
    let (x, _) = per_class(&model, &classes, a.per_class, a.seed, &dev)?;
    zoo_eval::picture::save_image_grid(&x, a.per_class, 2, 2, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

#[derive(Serialize)]
struct AcGanMetrics {
    #[serde(flatten)]
    conditional: ConditionalMetrics,
    #[serde(flatten)]
    gan: GanMetrics,
}

fn eval(a: EvalArgs) -> Result<()> {
    if a.per_class < 2 {
        bail!("--per-class must be at least 2");
    }
    let dev = zoo_core::device(&a.data.device)?;
    let models: Vec<AcGan> = a.weights.iter().map(|w| AcGan::from_pretrained(w, &dev)).collect::<Result<_>>()?;
    if let Some((w, m)) = a.weights.iter().zip(&models).find(|(_, m)| m.config().classes != 10) {
        bail!("the judge reads 10 digits; {w} has {} classes", m.config().classes);
    }
    let judge = Judge::from_pretrained(&a.judge, &dev)?;
    let (test, train) = (a.data.load(Split::Test)?, a.data.load(Split::Train)?);
    let classes: Vec<u32> = (0..10).collect();
    // NDB bins: k-means (K = 100) on 10,000 training digits.
    let bins = ndb_bins(&train, 10_000, 100, a.seed)?;
    let mut all = Vec::new();
    for (w, model) in a.weights.iter().zip(&models) {
        let (x, labels) = per_class(model, &classes, a.per_class, a.seed, &dev)?;
        let conditional = conditional_metrics(&judge, &x, &labels, &test, &bins)?;
        let gan = zoo_eval::gan::gan_metrics(&judge, &x, &test, &train, a.seed)?;
        let m = AcGanMetrics { conditional, gan };
        match (a.json, a.weights.len()) {
            (true, 1) => println!("{}", serde_json::to_string(&m)?),
            (true, _) => {
                let mut v = serde_json::to_value(&m)?;
                v["weights"] = w.as_str().into();
                println!("{v}");
            }
            (false, _) => println!("{w}:\n{}", serde_json::to_string_pretty(&m)?),
        }
        all.push(m);
    }
    if let Some(path) = &a.table {
        zoo_core::atomic::write_bytes_atomic(path, markdown_table(&a.weights, &all, a.per_class).as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// One row per checkpoint: the conditional metrics and the judge's sample-quality metrics.
fn markdown_table(names: &[String], rows: &[AcGanMetrics], per_class: usize) -> String {
    let mut t = format!(
        "{per_class} samples per class, the same noise for every checkpoint; judge-feature diversity of real test \
         digits {:.2}, pixel diversity {:.4}; FD floor {:.2}.\n\n\
         | checkpoint | class accuracy | worst class | diversity (judge) | diversity (pixels) | NDB (of 100) | JSD | judge FD | KID | IS |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        rows.first().map_or(f64::NAN, |m| m.conditional.intra_class_diversity_real),
        rows.first().map_or(f64::NAN, |m| m.conditional.intra_class_diversity_pixels_real),
        rows.first().map_or(f64::NAN, |m| m.gan.judge_fd_floor),
    );
    for (name, m) in names.iter().zip(rows) {
        let (c, g) = (&m.conditional, &m.gan);
        t += &format!(
            "| `{name}` | {:.4} | {:.4} | {:.2} | {:.4} | {} | {:.4} | {:.2} | {:.2} | {:.2} |\n",
            c.class_accuracy,
            c.class_accuracy_min,
            c.intra_class_diversity,
            c.intra_class_diversity_pixels,
            c.ndb,
            c.jsd,
            g.judge_fd,
            g.kid,
            g.inception_score
        );
    }
    t
}

fn main() -> std::process::ExitCode {
    candle_zoo::tune_runtime();
    let cli = Cli::parse();
    candle_zoo::exit_with(match cli.command {
        Command::Train(a) => train(a),
        Command::Sample(a) => sample(a),
        Command::Grid(a) => grid(a),
        Command::Eval(a) => eval(a),
        Command::Export(a) => {
            AcGan::export_f16(&a.weights, &a.out).map(|()| eprintln!("wrote {} (f16 storage)", a.out.display()))
        }
        Command::Recalibrate(a) => a.run::<AcGan>(),
    })
}
