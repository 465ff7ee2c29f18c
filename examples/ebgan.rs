//! EBGAN and its GAN baseline on MNIST: train, sample, interpolate, evaluate with the judge.
//!
//! ```text
//! cargo run --release --example ebgan -- train --run-dir run/ebgan        # full MNIST (scripts/fetch-data.sh mnist)
//! cargo run --release --example ebgan -- train --model gan --run-dir run/gan
//! cargo run --release --example ebgan -- sample --weights run/ebgan/ebgan-mnist.safetensors --out grid.png
//! cargo run --release --example ebgan -- interpolate --weights run/ebgan/ebgan-mnist.safetensors --out interp.png
//! cargo run --release --example ebgan -- eval --weights run/ebgan/ebgan-mnist.safetensors --json
//! ```

use std::path::PathBuf;

use anyhow::Result;
use candle_zoo::cli_args::{DataArgs, GanRunArgs, RecalibrateArgs};
use clap::{Args, Parser, Subcommand, ValueEnum};
use zoo_core::checkpoint::{SaveOptions, ZooModel};
use zoo_core::ZooRng;
use zoo_data::Split;
use zoo_ebgan::{
    Adversarial, AnyModel, Architecture, Config, Ebgan, Energy, Gan, GanConfig, LinearDecay, Monitor, TrainConfig,
    Trainer, WeightInit,
};
use zoo_eval::judge::Judge;

/// A memory allocator that keeps freed pages for reuse between training steps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Energy-based GAN (Zhao, Mathieu & LeCun 2017) and its standard-GAN baseline on MNIST.
#[derive(Parser)]
#[command(version, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train on MNIST train (60,000 digits; --bundled uses the shipped 10,000), with sample grids
    /// and judge scores (quality.jsonl) at every checkpoint.
    Train(TrainArgs),
    /// Write a grid of samples as PNG (EBGAN or GAN checkpoints).
    Sample(SampleArgs),
    /// Write a latent interpolation grid as PNG: each row walks in a straight line between two
    /// random latents.
    Interpolate(InterpolateArgs),
    /// Rewrite a checkpoint with half-precision (f16) storage: half the size, loaded back as f32.
    Export(ExportArgs),
    /// Re-measure the generator's BatchNorm statistics on its own samples ("standing statistics")
    /// and write the result as a new checkpoint; the weights are unchanged. For a weight-averaged
    /// generator (train --ema), whose averaged statistics were measured on other weights.
    Recalibrate(RecalibrateArgs),
    /// The paper's robustness experiment: train EBGAN and the GAN baseline (fully-connected, as in
    /// the paper) over a grid of learning rates, depths and widths, score each run with the judge,
    /// and write sweep.jsonl, sweep.md and a histogram of inception scores (sweep-histogram.png).
    /// An interrupted sweep continues where it stopped.
    Sweep(SweepArgs),
    /// Score samples with the judge: judge_fd (+ floor), kid, inception_score, modes_covered, kl_to_uniform.
    Eval(EvalArgs),
    /// What an EBGAN discriminator thinks of each digit: its mean energy on MNIST test digits of
    /// each class, and on generated samples grouped by the judge's class, with their share.
    Energies(EnergiesArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Preset {
    /// DCGAN-style conv networks, mean-squared energy, margin 1.
    Conv,
    /// The paper's fully-connected networks, L2-norm energy, margin 10.
    PaperFc,
}

#[derive(Clone, Copy, ValueEnum)]
enum EnergyArg {
    /// `||Dec(Enc(x)) - x||_2` (the paper).
    L2,
    /// Mean over pixels of the squared error.
    Mse,
}

#[derive(Clone, Copy, ValueEnum)]
enum Family {
    /// Energy-based GAN: autoencoder discriminator, margin, pulling-away term.
    Ebgan,
    /// The baseline: the same generator, a binary discriminator, the non-saturating GAN loss.
    Gan,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    run: GanRunArgs,
    /// Which model to train.
    #[arg(long, value_enum, default_value = "ebgan")]
    model: Family,
    /// Model preset (the GAN takes the preset's generator).
    #[arg(long, value_enum, default_value = "conv")]
    preset: Preset,
    /// Passes over the training set.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Adam learning rate of the generator (and of the discriminator unless --lr-d is given).
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Adam learning rate of the discriminator (default: --lr).
    #[arg(long)]
    lr_d: Option<f64>,
    /// Margin m of the discriminator's hinge (default: the preset's).
    #[arg(long)]
    margin: Option<f64>,
    /// Energy (default: the preset's): `l2` is the paper's `||Dec(Enc(x)) - x||`, `mse` the
    /// per-pixel mean square.
    #[arg(long, value_enum)]
    energy: Option<EnergyArg>,
    /// BatchNorm in the conv discriminator's decoder (default: the preset's, off).
    #[arg(long)]
    d_batchnorm: Option<bool>,
    /// Stride-2 convolutions in each half of the conv autoencoder discriminator: 1 (the common
    /// port, the preset's) or 2 (conv 64 -> 128 and back, as the paper's conv discriminators).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
    d_depth: Option<u8>,
    /// BatchNorm after the conv discriminator's second encoding convolution (needs depth 2;
    /// default: the preset's, off), where the GAN baseline's discriminator has its BatchNorm.
    #[arg(long)]
    d_encoder_batchnorm: Option<bool>,
    /// Width of the autoencoder discriminator's code (default: the preset's, 32 for the conv
    /// preset, 128 for the fully-connected one).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65536))]
    code: Option<u32>,
    /// Weight of the pulling-away term (default: the preset's, 0.1).
    #[arg(long)]
    pt_weight: Option<f64>,
    /// Keep both learning rates for this many epochs, then lower them linearly to zero at the
    /// end of --epochs (off by default).
    #[arg(long)]
    lr_decay_after: Option<usize>,
    /// Adapt the margin to the real digits' energy once per epoch, as MAGAN does (Wang et al.
    /// 2017): it becomes the epoch's mean real energy when that is below the margin, below the
    /// generated digits' energy, and the generated energy did not fall since the epoch before.
    /// Starts from --margin; EBGAN only.
    #[arg(long)]
    margin_adaptation: bool,
    /// Initial weights: `dcgan` (N(0, 0.02), the zoo's default) or `torch` (PyTorch's layer
    /// defaults, U(+-1/sqrt(fan_in)), as in a port that never re-initialises).
    #[arg(long, value_enum, default_value = "dcgan")]
    init: InitArg,
}

/// `--init` values.
#[derive(Clone, Copy, ValueEnum)]
enum InitArg {
    /// DCGAN's N(0, 0.02).
    Dcgan,
    /// PyTorch's layer defaults.
    Torch,
}

#[derive(Args)]
struct SampleArgs {
    /// Manifest id or path of an EBGAN or GAN checkpoint.
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
struct InterpolateArgs {
    /// Manifest id or path of an EBGAN or GAN checkpoint.
    #[arg(long)]
    weights: String,
    /// Rows (pairs of end points).
    #[arg(long, default_value_t = 8)]
    rows: usize,
    /// Images per row, end points included.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Seed of the end points.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output PNG.
    #[arg(long, default_value = "ebgan-interpolation.png")]
    out: PathBuf,
    /// Device: cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
struct ExportArgs {
    /// Manifest id or path of an EBGAN or GAN checkpoint.
    #[arg(long)]
    weights: String,
    /// Output checkpoint.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct SweepArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Training steps per run (batch 64).
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    /// Generated samples scored per run.
    #[arg(long, default_value_t = 2000)]
    samples: usize,
    /// Seed of every run.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory.
    #[arg(long, default_value = "run/ebgan-sweep")]
    out: PathBuf,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    src: ScoredSamples,
    /// Print one JSON object of the metrics.
    #[arg(long)]
    json: bool,
}

/// What `eval` and `energies` share: the data, the checkpoint, the judge and the samples drawn.
#[derive(Args)]
struct ScoredSamples {
    #[command(flatten)]
    data: DataArgs,
    /// Manifest id or path of the checkpoint (`energies` takes EBGAN only).
    #[arg(long)]
    weights: String,
    /// Manifest id or path of the judge that classifies the generated samples.
    #[arg(long, default_value = "judge-mnist")]
    judge: String,
    /// Number of generated samples.
    #[arg(long, default_value_t = 10000)]
    n: usize,
    /// Seed of the latents (and of KID's subsets).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct EnergiesArgs {
    #[command(flatten)]
    src: ScoredSamples,
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
    if let Some(e) = a.energy {
        cfg.energy = match e {
            EnergyArg::L2 => Energy::L2Norm,
            EnergyArg::Mse => Energy::MeanSquared,
        };
    }
    if let (Some(on), Architecture::Conv { d_batchnorm, .. }) = (a.d_batchnorm, &mut cfg.architecture) {
        *d_batchnorm = on;
    }
    if let (Some(n), Architecture::Conv { d_depth, .. }) = (a.d_depth, &mut cfg.architecture) {
        *d_depth = n as usize;
    }
    if let (Some(on), Architecture::Conv { d_encoder_batchnorm, .. }) = (a.d_encoder_batchnorm, &mut cfg.architecture) {
        *d_encoder_batchnorm = on;
    }
    if let Some(n) = a.code {
        match &mut cfg.architecture {
            Architecture::Conv { code, .. } | Architecture::FullyConnected { code, .. } => *code = n as usize,
        }
    }
    let data = a.data.load(Split::Train)?;
    let monitor = a.run.monitor(&a.data, &data, &dev)?;
    let recipe = a.run.recipe(TrainConfig {
        batch_size: a.batch_size,
        lr_g: a.lr,
        lr_d: a.lr_d.unwrap_or(a.lr),
        init: match a.init {
            InitArg::Dcgan => WeightInit::Dcgan,
            InitArg::Torch => WeightInit::TorchDefault,
        },
        margin_adaptation: a.margin_adaptation,
        ..Default::default()
    });
    match a.model {
        Family::Ebgan => train_one(Trainer::<Ebgan>::new(&cfg, recipe, data, &dev)?, monitor, &a, "ebgan-mnist"),
        Family::Gan => {
            let trainer = Trainer::<Gan>::new(&GanConfig::matching(&cfg), recipe, data, &dev)?;
            train_one(trainer, monitor, &a, "gan-mnist")
        }
    }
}

fn train_one<M: Adversarial>(
    mut trainer: Trainer<M>,
    monitor: Option<Monitor>,
    a: &TrainArgs,
    name: &str,
) -> Result<()> {
    let steps = trainer.steps_for_epochs(a.epochs);
    if let Some(after) = a.lr_decay_after {
        anyhow::ensure!(after < a.epochs, "--lr-decay-after {after} must be below --epochs {}", a.epochs);
        trainer.cfg.lr_decay = Some(LinearDecay::new(trainer.steps_for_epochs(after), steps)?);
    }
    let curves: &[&str] = match a.model {
        Family::Ebgan => &["loss_d", "loss_g", "energy_real", "energy_fake"],
        Family::Gan => &["loss_d", "loss_g", "d_real", "d_fake"],
    };
    a.run.train(trainer, monitor, steps, name, curves)?;
    Ok(())
}

fn sample(a: SampleArgs) -> Result<()> {
    let dev = zoo_core::device(&a.device)?;
    let model = AnyModel::from_pretrained(&a.weights, &dev)?;
    let x = model.sample(a.n, &mut ZooRng::new(a.seed), &dev)?;
    let cols = (a.n as f64).sqrt().ceil() as usize;
    zoo_eval::picture::save_image_grid(&x, cols.max(1), 2, 2, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn interpolate(a: InterpolateArgs) -> Result<()> {
    let dev = zoo_core::device(&a.device)?;
    let model = AnyModel::from_pretrained(&a.weights, &dev)?;
    let x = model.interpolation(a.rows, a.steps, &mut ZooRng::new(a.seed), &dev)?;
    zoo_eval::picture::save_image_grid(&x, a.steps, 2, 2, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn export(a: ExportArgs) -> Result<()> {
    let dev = candle_core::Device::Cpu;
    let (path, _) = zoo_core::manifest::resolve_weights(&a.weights)?;
    let meta = zoo_core::checkpoint::read_meta(&path)?;
    let opts = SaveOptions { step: meta.step, seed: meta.seed, storage: Some(candle_core::DType::F16) };
    match AnyModel::from_pretrained(&a.weights, &dev)? {
        AnyModel::Ebgan(m) => m.save_with(&a.out, &opts)?,
        AnyModel::Gan(m) => m.save_with(&a.out, &opts)?,
    }
    eprintln!("wrote {} (f16 storage)", a.out.display());
    Ok(())
}

fn recalibrate(a: RecalibrateArgs) -> Result<()> {
    let (path, _) = zoo_core::manifest::resolve_weights(&a.weights)?;
    match zoo_core::checkpoint::read_meta(&path)?.family.as_str() {
        f if f == Ebgan::FAMILY => a.run::<Ebgan>(),
        f if f == zoo_ebgan::Gan::FAMILY => a.run::<zoo_ebgan::Gan>(),
        other => {
            anyhow::bail!("{} holds a checkpoint of the '{other}' family, expected 'ebgan' or 'gan'", path.display())
        }
    }
}

fn sweep(a: SweepArgs) -> Result<()> {
    use zoo_ebgan::sweep::{default_grid, markdown_table, read_outcomes, run_setting};
    let dev = zoo_core::device(&a.data.device)?;
    let data = a.data.load(Split::Train)?;
    let judge = Judge::from_pretrained("judge-mnist", &dev)?;
    let monitor = Monitor::new(judge, &a.data.load(Split::Test)?, &data, a.samples)?;
    std::fs::create_dir_all(&a.out)?;
    let log = a.out.join("sweep.jsonl");
    let mut outcomes = read_outcomes(&log)?;
    let grid = default_grid();
    let bar = indicatif::ProgressBar::new(grid.len() as u64).with_style(indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} runs, {elapsed} elapsed, ETA {eta} {msg}",
    )?);
    for setting in &grid {
        bar.set_message(setting.name());
        if !outcomes.iter().any(|o| o.setting == *setting && o.steps == a.steps) {
            let o = run_setting(setting, &data, &monitor, a.steps, a.seed, &dev)?;
            outcomes.push(o);
            // The whole log is rewritten atomically, so an interruption never leaves a partial line.
            let mut text = String::new();
            for o in &outcomes {
                text += &serde_json::to_string(o)?;
                text.push('\n');
            }
            zoo_core::atomic::write_bytes_atomic(&log, text.as_bytes())?;
        }
        bar.inc(1);
    }
    bar.finish();
    outcomes.retain(|o| o.steps == a.steps);
    let table = markdown_table(&outcomes, 9.0);
    zoo_core::atomic::write_bytes_atomic(&a.out.join("sweep.md"), table.as_bytes())?;
    let groups: Vec<(String, Vec<f64>)> = ["ebgan", "gan"]
        .iter()
        .map(|f| {
            let scores = outcomes.iter().filter(|o| o.setting.family == *f).map(|o| o.metrics.inception_score);
            (f.to_uppercase(), scores.collect())
        })
        .collect();
    zoo_eval::picture::save_histogram_png(
        &groups,
        (1.0, 10.0),
        18,
        &format!("Judge inception score of {} runs per model, {} steps each", grid.len() / 2, a.steps),
        "inception score (real MNIST: 9.9)",
        &a.out.join("sweep-histogram.png"),
    )?;
    println!("{table}");
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    let a = &args.src;
    let dev = zoo_core::device(&a.data.device)?;
    let model = AnyModel::from_pretrained(&a.weights, &dev)?;
    let judge = Judge::from_pretrained(&a.judge, &dev)?;
    let test = a.data.load(Split::Test)?;
    let train = a.data.load(Split::Train)?;
    let samples = model.sample(a.n, &mut ZooRng::new(a.seed), &dev)?;
    let m = zoo_eval::gan::gan_metrics(&judge, &samples, &test, &train, a.seed)?;
    if args.json {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        println!("{m:#?}");
    }
    Ok(())
}

/// Per-class sums and counts of energies, accumulated over batches.
#[derive(Default)]
struct ClassEnergies {
    sum: [f64; 10],
    count: [usize; 10],
}

impl ClassEnergies {
    fn add(&mut self, energies: &[f32], classes: &[u32]) {
        for (&e, &c) in energies.iter().zip(classes) {
            self.sum[c as usize] += e as f64;
            self.count[c as usize] += 1;
        }
    }

    fn mean(&self, c: usize) -> Option<f64> {
        (self.count[c] > 0).then(|| self.sum[c] / self.count[c] as f64)
    }

    fn overall(&self) -> f64 {
        self.sum.iter().sum::<f64>() / self.count.iter().sum::<usize>().max(1) as f64
    }
}

fn energies(args: EnergiesArgs) -> Result<()> {
    let a = &args.src;
    let dev = zoo_core::device(&a.data.device)?;
    let model = match AnyModel::from_pretrained(&a.weights, &dev)? {
        AnyModel::Ebgan(m) => m,
        AnyModel::Gan(_) => anyhow::bail!("{} is a GAN checkpoint: only EBGAN has energies", a.weights),
    };
    let judge = Judge::from_pretrained(&a.judge, &dev)?;
    let test = a.data.load(Split::Test)?;
    let batch = 500;
    let mut real = ClassEnergies::default();
    for start in (0..test.len()).step_by(batch) {
        let idx: Vec<usize> = (start..(start + batch).min(test.len())).collect();
        let (x, y) = test.batch(&idx, &dev)?;
        let e = model.energies(&x, false)?.energy.to_vec1::<f32>()?;
        real.add(&e, &y.to_vec1::<u32>()?);
    }
    let mut fake = ClassEnergies::default();
    let mut rng = ZooRng::new(a.seed);
    let mut left = a.n;
    while left > 0 {
        let b = left.min(batch);
        let x = model.generator.forward_t(&model.latents(b, &mut rng, &dev)?, false)?;
        let e = model.energies(&x, false)?.energy.to_vec1::<f32>()?;
        fake.add(&e, &judge.predict(&x)?.to_vec1::<u32>()?);
        left -= b;
    }
    println!("| digit | energy of test digits | generated: share | generated: energy |");
    println!("|---|---|---|---|");
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for c in 0..10 {
        let share = 100.0 * fake.count[c] as f64 / a.n.max(1) as f64;
        println!("| {c} | {} | {share:.1} % | {} |", fmt(real.mean(c)), fmt(fake.mean(c)));
    }
    println!("| all | {:.4} | 100 % | {:.4} |", real.overall(), fake.overall());
    Ok(())
}

fn main() -> std::process::ExitCode {
    candle_zoo::tune_runtime();
    let cli = Cli::parse();
    candle_zoo::exit_with(match cli.command {
        Command::Train(a) => train(a),
        Command::Sample(a) => sample(a),
        Command::Interpolate(a) => interpolate(a),
        Command::Export(a) => export(a),
        Command::Recalibrate(a) => recalibrate(a),
        Command::Sweep(a) => sweep(a),
        Command::Eval(a) => eval(a),
        Command::Energies(a) => energies(a),
    })
}
