//! InfoGAN on MNIST: train, sample, traverse the codes (the paper's figure), evaluate the
//! categorical code as an unsupervised classifier.
//!
//! ```text
//! cargo run --release --example infogan -- train --data-dir .cache/mnist --run-dir run/infogan
//! cargo run --release --example infogan -- traverse --weights run/infogan/infogan-mnist.safetensors --out traverse
//! cargo run --release --example infogan -- eval --weights run/infogan/infogan-mnist.safetensors --data-dir .cache/mnist --json
//! ```

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_zoo::cli_args::{DataArgs, ExportArgs, GanRunArgs};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use zoo_cgan::{info_loss, InfoGan, InfoGanConfig};
use zoo_core::checkpoint::ZooModel;
use zoo_core::ZooRng;
use zoo_data::Split;
use zoo_ebgan::{Adversarial, TrainConfig, Trainer};
use zoo_eval::gan::GanMetrics;
use zoo_eval::judge::Judge;

/// A memory allocator that keeps freed pages for reuse between training steps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// InfoGAN (Chen et al. 2016): a GAN whose categorical and continuous latent codes are learnt to
/// carry meaning (digit class, slant, width) without labels.
#[derive(Parser)]
#[command(version, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train on MNIST train with the authors' recipe (batch 128, Adam: G 1e-3, D and Q 2e-4),
    /// sample grids and judge scores at every checkpoint.
    Train(TrainArgs),
    /// A grid of samples.
    Sample(SampleArgs),
    /// The paper's figure: c1 over its categories (rows: fixed noise), and c2, c3 from -2 to 2
    /// (rows: categories), as three PNGs in --out.
    Traverse(TraverseArgs),
    /// code_accuracy (the categorical code as a classifier, Hungarian-matched to the judge's
    /// digits), q_accuracy_real (Q's code for real test digits, matched to their labels),
    /// info_loss (against H(c1) = ln 10), and the judge's sample-quality metrics.
    Eval(EvalArgs),
    /// Rewrite a checkpoint with half-precision (f16) storage: half the size, loaded back as f32.
    Export(ExportArgs),
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    run: GanRunArgs,
    /// Training steps (the authors' code runs about 5,000 at batch 128).
    #[arg(long, default_value_t = 5000)]
    steps: u64,
    /// Weight lambda of L_I for both players.
    #[arg(long, default_value_t = 1.0)]
    info_weight: f64,
    /// Weight of the continuous codes inside L_I.
    #[arg(long, default_value_t = 1.0)]
    continuous_weight: f64,
    /// Range r of the noise z ~ U(-r, r) (1 in the paper; ClusterGAN-style small noise, e.g. 0.1,
    /// ties the categorical code to digit identity more often).
    #[arg(long, default_value_t = 1.0)]
    noise_range: f64,
    /// D and Q as in the authors' code rather than the zoo's default: leaky ReLU slope 0.01
    /// instead of 0.2, and D reads [0, 1] pixels instead of [-1, 1] (the paper states neither).
    #[arg(long)]
    authors_code: bool,
}

#[derive(Args)]
struct SampleArgs {
    /// Manifest id or path of an `infogan` checkpoint.
    #[arg(long)]
    weights: String,
    /// Number of samples.
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// Seed of the latents.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output PNG.
    #[arg(long, default_value = "infogan-samples.png")]
    out: PathBuf,
}

#[derive(Args)]
struct TraverseArgs {
    /// Manifest id or path of an `infogan` checkpoint.
    #[arg(long)]
    weights: String,
    /// Seed of the fixed noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory (traverse-c1.png, traverse-c2.png, traverse-c3.png, ...).
    #[arg(long, default_value = "infogan-traverse")]
    out: PathBuf,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Manifest id or path of an `infogan` checkpoint.
    #[arg(long)]
    weights: String,
    /// Manifest id or path of the judge.
    #[arg(long, default_value = "judge-mnist")]
    judge: String,
    /// Number of generated samples.
    #[arg(long, default_value_t = 10_000)]
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
    let cfg = InfoGanConfig {
        info_weight: a.info_weight,
        continuous_weight: a.continuous_weight,
        noise_range: a.noise_range,
        ..if a.authors_code { InfoGanConfig::mnist_authors_code() } else { InfoGanConfig::mnist() }
    };
    let data = a.data.load(Split::Train)?;
    let monitor = a.run.monitor(&a.data, &data, &dev)?;
    let trainer = Trainer::<InfoGan>::new(&cfg, a.run.recipe(TrainConfig::infogan(a.run.seed)), data, &dev)?;
    a.run.train(trainer, monitor, a.steps, "infogan-mnist", &["loss_d", "loss_g", "info_loss"])?;
    Ok(())
}

/// `G` in evaluation mode on latents, 500 at a time.
fn generate(model: &InfoGan, z: &Tensor) -> Result<Tensor> {
    let n = z.dim(0)?;
    let parts: Vec<Tensor> =
        (0..n).step_by(500).map(|s| model.generate(&z.narrow(0, s, (n - s).min(500))?)).collect::<Result<_>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

fn sample(a: SampleArgs) -> Result<()> {
    let dev = Device::Cpu;
    let model = InfoGan::from_pretrained(&a.weights, &dev)?;
    let x = generate(&model, &model.latents(a.n, &mut ZooRng::new(a.seed), &dev)?)?;
    let cols = (a.n as f64).sqrt().ceil() as usize;
    zoo_eval::picture::save_image_grid(&x, cols.max(1), 2, 2, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn traverse(a: TraverseArgs) -> Result<()> {
    let dev = Device::Cpu;
    let model = InfoGan::from_pretrained(&a.weights, &dev)?;
    let cfg = model.config().clone();
    let k = cfg.categories;
    let mut rng = ZooRng::new(a.seed);
    // c1: one row per noise vector, one column per category, continuous codes at 0.
    let rows = 8;
    let noise = model.noise(rows, &mut rng, &dev)?;
    let noise = noise.unsqueeze(1)?.repeat((1, k, 1))?.reshape((rows * k, cfg.noise_dim))?;
    let category: Vec<u32> = (0..rows * k).map(|i| (i % k) as u32).collect();
    let zero = Tensor::zeros((rows * k, cfg.continuous), DType::F32, &dev)?;
    let x = generate(&model, &model.latents_with_codes(&noise, &category, &zero)?)?;
    std::fs::create_dir_all(&a.out)?;
    zoo_eval::picture::save_image_grid(&x, k, 2, 2, &a.out.join("traverse-c1.png"))?;
    // Each continuous code from -2 to 2: one row per category, one shared noise vector.
    let steps = 10;
    let one = model.noise(1, &mut rng, &dev)?.repeat((k * steps, 1))?;
    let category: Vec<u32> = (0..k * steps).map(|i| (i / steps) as u32).collect();
    for j in 0..cfg.continuous {
        let mut values = vec![0f32; k * steps * cfg.continuous];
        for i in 0..k * steps {
            values[i * cfg.continuous + j] = -2.0 + 4.0 * (i % steps) as f32 / (steps - 1) as f32;
        }
        let cont = Tensor::from_vec(values, (k * steps, cfg.continuous), &dev)?;
        let x = generate(&model, &model.latents_with_codes(&one, &category, &cont)?)?;
        zoo_eval::picture::save_image_grid(&x, steps, 2, 2, &a.out.join(format!("traverse-c{}.png", j + 2)))?;
    }
    eprintln!("wrote {}/traverse-c1.png .. traverse-c{}.png", a.out.display(), cfg.continuous + 1);
    Ok(())
}

/// `infogan eval`'s keys.
#[derive(Serialize)]
struct InfoMetrics {
    /// Accuracy of the categorical code as a classifier of the judge's digits, after the best
    /// one-to-one matching of categories to digits.
    code_accuracy: f64,
    /// The matching: digit of each category.
    code_to_digit: Vec<usize>,
    /// How the judge reads each category's samples: row = category, column = digit, counts
    /// (shows which digits a category merges or splits).
    digits_per_code: Vec<Vec<usize>>,
    /// Q's categorical code as a classifier of the real MNIST test digits (the paper's reading of
    /// its 5 % error), after the best one-to-one matching of categories to labels.
    q_accuracy_real: f64,
    /// `L_I` of the samples under Q (evaluation mode), to compare with `entropy_c1`.
    info_loss: f64,
    /// `H(c1) = ln(categories)`.
    entropy_c1: f64,
    #[serde(flatten)]
    gan: GanMetrics,
}

fn eval(a: EvalArgs) -> Result<()> {
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    let dev = zoo_core::device(&a.data.device)?;
    let model = InfoGan::from_pretrained(&a.weights, &dev)?;
    let judge = Judge::from_pretrained(&a.judge, &dev)?;
    let z = model.latents(a.n, &mut ZooRng::new(a.seed), &dev)?;
    let x = generate(&model, &z)?;
    let codes = model.codes(&z)?;
    let mut digits = Vec::with_capacity(a.n);
    let mut info = 0.0;
    for s in (0..a.n).step_by(500) {
        let len = (a.n - s).min(500);
        let xs = x.narrow(0, s, len)?;
        digits.extend(judge.predict(&xs)?.to_vec1::<u32>()?);
        let part = zoo_cgan::Codes {
            category: codes.category.narrow(0, s, len)?,
            continuous: codes.continuous.narrow(0, s, len)?,
        };
        let l = info_loss(&model.discriminate(&xs, false)?, &part, model.config().continuous_weight)?;
        info += l.to_dtype(DType::F64)?.to_scalar::<f64>()? * len as f64;
    }
    let k = model.config().categories;
    if k != 10 {
        bail!("code accuracy matches categories to the judge's 10 digits; this model has {k} categories");
    }
    let categories = codes.category.to_vec1::<u32>()?;
    let (code_accuracy, code_to_digit) = zoo_eval::metrics::matched_accuracy(&categories, &digits, k)?;
    let mut digits_per_code = vec![vec![0usize; 10]; k];
    for (&c, &d) in categories.iter().zip(&digits) {
        digits_per_code[c as usize][d as usize] += 1;
    }
    let test = a.data.load(Split::Test)?;
    let (mut q_codes, mut labels) = (Vec::with_capacity(test.len()), Vec::with_capacity(test.len()));
    for s in (0..test.len()).step_by(500) {
        let (xs, ys) = test.batch(&(s..(s + 500).min(test.len())).collect::<Vec<_>>(), &dev)?;
        q_codes.extend(model.infer_category(&xs)?.to_vec1::<u32>()?);
        labels.extend(ys.to_vec1::<u32>()?);
    }
    let (q_accuracy_real, _) = zoo_eval::metrics::matched_accuracy(&q_codes, &labels, k)?;
    let gan = zoo_eval::gan::gan_metrics(&judge, &x, &test, &a.data.load(Split::Train)?, a.seed)?;
    let m = InfoMetrics {
        code_accuracy,
        code_to_digit,
        digits_per_code,
        q_accuracy_real,
        info_loss: info / a.n as f64,
        entropy_c1: (k as f64).ln(),
        gan,
    };
    if a.json {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&m)?);
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    candle_zoo::tune_runtime();
    let cli = Cli::parse();
    candle_zoo::exit_with(match cli.command {
        Command::Train(a) => train(a),
        Command::Sample(a) => sample(a),
        Command::Traverse(a) => traverse(a),
        Command::Eval(a) => eval(a),
        Command::Export(a) => {
            InfoGan::export_f16(&a.weights, &a.out).map(|()| eprintln!("wrote {} (f16 storage)", a.out.display()))
        }
    })
}
