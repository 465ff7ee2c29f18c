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
use candle_zoo::cli_args::{DataArgs, ExportArgs, GanRunArgs, RecalibrateArgs};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use zoo_cgan::{info_loss, InfoGan, InfoGanConfig};
use zoo_core::checkpoint::ZooModel;
use zoo_core::ZooRng;
use zoo_data::{Mnist, Split};
use zoo_ebgan::{Adversarial, TrainConfig, Trainer};
use zoo_eval::gan::GanMetrics;
use zoo_eval::judge::Judge;
use zoo_eval::metrics::{mean_std, mutual_information};

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
    /// Weight of a jitter-invariance term beside L_I (0: off, as in the paper): Q must also read
    /// each generated image's category after a small random rotation, shear, scale and shift, in
    /// D's update and, through the warp, in G's; a category told apart by slant or size alone
    /// does not survive it. Beyond the paper.
    #[arg(long, default_value_t = 0.0)]
    invariance_weight: f64,
    /// D and Q as in the authors' code rather than the zoo's default: leaky ReLU slope 0.01
    /// instead of 0.2, and D reads [0, 1] pixels instead of [-1, 1] (the paper states neither).
    #[arg(long)]
    authors_code: bool,
    /// Adam learning rate of G (the paper's and the authors' 1e-3 by default).
    #[arg(long)]
    lr_g: Option<f64>,
    /// Adam learning rate of D and Q (the paper's and the authors' 2e-4 by default).
    #[arg(long)]
    lr_d: Option<f64>,
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
    /// Device: cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
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
    /// Device: cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Manifest id or path of an `infogan` checkpoint; repeat the option (e.g. once per seed of a
    /// recipe) to measure several with the same latents and judge, and print each metric's mean
    /// and sample standard deviation over them.
    #[arg(long, required = true)]
    weights: Vec<String>,
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
        invariance_weight: a.invariance_weight,
        ..if a.authors_code { InfoGanConfig::mnist_authors_code() } else { InfoGanConfig::mnist() }
    };
    let data = a.data.load(Split::Train)?;
    let monitor = a.run.monitor(&a.data, &data, &dev)?;
    let mut recipe = a.run.recipe(TrainConfig::infogan(a.run.seed));
    recipe.lr_g = a.lr_g.unwrap_or(recipe.lr_g);
    recipe.lr_d = a.lr_d.unwrap_or(recipe.lr_d);
    let trainer = Trainer::<InfoGan>::new(&cfg, recipe, data, &dev)?;
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
    let dev = zoo_core::device(&a.device)?;
    let model = InfoGan::from_pretrained(&a.weights, &dev)?;
    let x = generate(&model, &model.latents(a.n, &mut ZooRng::new(a.seed), &dev)?)?;
    let cols = (a.n as f64).sqrt().ceil() as usize;
    zoo_eval::picture::save_image_grid(&x, cols.max(1), 2, 2, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn traverse(a: TraverseArgs) -> Result<()> {
    let dev = zoo_core::device(&a.device)?;
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
    /// Q's mutual information between real test digits and its categorical code, in nats (at
    /// most `entropy_c1`): the entropy of Q's mean code distribution over the digits less the
    /// mean entropy of its code distribution per digit. It uses no labels, so it can compare runs
    /// where labels are unknown.
    q_information_real: f64,
    /// The same information on the first 10,000 training digits: with no labels and no test
    /// data, a fair way to pick among runs (`eval` with several `--weights` names the highest).
    q_information_train: f64,
    /// `L_I` of the samples under Q (evaluation mode), to compare with `entropy_c1`.
    info_loss: f64,
    /// `H(c1) = ln(categories)`.
    entropy_c1: f64,
    #[serde(flatten)]
    gan: GanMetrics,
}

/// Several checkpoints' metrics and, per metric, the mean and sample standard deviation.
#[derive(Serialize)]
struct SeedSummary {
    /// Each checkpoint's metrics, in the order given.
    runs: Vec<NamedMetrics>,
    /// Mean and sample standard deviation of each scalar metric over the checkpoints.
    summary: std::collections::BTreeMap<&'static str, MeanStd>,
    /// The checkpoint with the highest `q_information_train`: a pick among runs that uses no
    /// labels and no test data.
    highest_q_information_train: String,
}

/// One checkpoint's metrics with the name it was given by.
#[derive(Serialize)]
struct NamedMetrics {
    weights: String,
    #[serde(flatten)]
    metrics: InfoMetrics,
}

/// A metric's mean and sample standard deviation over checkpoints.
#[derive(Serialize)]
struct MeanStd {
    mean: f64,
    std: f64,
}

fn eval(a: EvalArgs) -> Result<()> {
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    let dev = zoo_core::device(&a.data.device)?;
    let judge = Judge::from_pretrained(&a.judge, &dev)?;
    let real = (a.data.load(Split::Test)?, a.data.load(Split::Train)?);
    if let [weights] = a.weights.as_slice() {
        return print_json(&evaluate(&a, weights, &judge, &real, &dev)?, a.json);
    }
    let mut runs = Vec::with_capacity(a.weights.len());
    for weights in &a.weights {
        let metrics = evaluate(&a, weights, &judge, &real, &dev)?;
        eprintln!(
            "{weights}: code accuracy {:.4}, Q on real digits {:.4}, inception score {:.2}, judge FD {:.1}",
            metrics.code_accuracy, metrics.q_accuracy_real, metrics.gan.inception_score, metrics.gan.judge_fd
        );
        runs.push(NamedMetrics { weights: weights.clone(), metrics });
    }
    type Pick = fn(&InfoMetrics) -> f64;
    let keys: [(&'static str, Pick); 10] = [
        ("code_accuracy", |m| m.code_accuracy),
        ("q_accuracy_real", |m| m.q_accuracy_real),
        ("q_information_real", |m| m.q_information_real),
        ("q_information_train", |m| m.q_information_train),
        ("info_loss", |m| m.info_loss),
        ("judge_fd", |m| m.gan.judge_fd),
        ("kid", |m| m.gan.kid),
        ("inception_score", |m| m.gan.inception_score),
        ("kl_to_uniform", |m| m.gan.kl_to_uniform),
        ("modes_covered", |m| m.gan.modes_covered as f64),
    ];
    let summary = keys
        .iter()
        .map(|&(key, pick)| {
            let (mean, std) = mean_std(&runs.iter().map(|r| pick(&r.metrics)).collect::<Vec<_>>());
            (key, MeanStd { mean, std })
        })
        .collect::<std::collections::BTreeMap<_, _>>();
    let code = &summary["code_accuracy"];
    eprintln!(
        "code accuracy over {} checkpoints: {:.4} +- {:.4} (mean +- sample std)",
        runs.len(),
        code.mean,
        code.std
    );
    let best = runs
        .iter()
        .max_by(|a, b| a.metrics.q_information_train.total_cmp(&b.metrics.q_information_train))
        .map(|r| r.weights.clone())
        .unwrap_or_default();
    eprintln!("highest q_information_train (a pick that uses no labels): {best}");
    print_json(&SeedSummary { runs, summary, highest_q_information_train: best }, a.json)
}

/// Prints `value` as one line of JSON (`compact`) or indented.
fn print_json<T: Serialize>(value: &T, compact: bool) -> Result<()> {
    println!("{}", if compact { serde_json::to_string(value)? } else { serde_json::to_string_pretty(value)? });
    Ok(())
}

/// `infogan eval`'s metrics of one checkpoint, against real `(test, train)` digits.
fn evaluate(a: &EvalArgs, weights: &str, judge: &Judge, real: &(Mnist, Mnist), dev: &Device) -> Result<InfoMetrics> {
    let (test, train) = real;
    let model = InfoGan::from_pretrained(weights, dev)?;
    let z = model.latents(a.n, &mut ZooRng::new(a.seed), dev)?;
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
    let (q_codes, q_probs, labels) = q_codes_of(&model, test, test.len(), dev)?;
    let (q_accuracy_real, _) = zoo_eval::metrics::matched_accuracy(&q_codes, &labels, k)?;
    let q_information_real = mutual_information(&q_probs, k)?;
    let (_, q_probs_train, _) = q_codes_of(&model, train, 10_000, dev)?;
    let q_information_train = mutual_information(&q_probs_train, k)?;
    let gan = zoo_eval::gan::gan_metrics(judge, &x, test, train, a.seed)?;
    Ok(InfoMetrics {
        code_accuracy,
        code_to_digit,
        digits_per_code,
        q_accuracy_real,
        q_information_real,
        q_information_train,
        info_loss: info / a.n as f64,
        entropy_c1: (k as f64).ln(),
        gan,
    })
}

/// Q's categorical code (argmax), its distributions (row-major, `n x categories`) and the
/// labels of the first `n` digits of `data`, in evaluation mode, 500 at a time.
fn q_codes_of(model: &InfoGan, data: &Mnist, n: usize, dev: &Device) -> Result<(Vec<u32>, Vec<f64>, Vec<u32>)> {
    let n = n.min(data.len());
    let (mut codes, mut probs, mut labels) = (Vec::with_capacity(n), Vec::new(), Vec::with_capacity(n));
    for s in (0..n).step_by(500) {
        let (xs, ys) = data.batch(&(s..(s + 500).min(n)).collect::<Vec<_>>(), dev)?;
        let logits = model.discriminate(&xs, false)?.code_logits.contiguous()?;
        codes.extend(logits.argmax(1)?.to_vec1::<u32>()?);
        probs.extend(candle_nn::ops::softmax_last_dim(&logits)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?);
        labels.extend(ys.to_vec1::<u32>()?);
    }
    Ok((codes, probs, labels))
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
        Command::Recalibrate(a) => a.run::<InfoGan>(),
    })
}
