//! The domain-adaptation protocol shared by the `dann` and `ddc` example binaries: MNIST ->
//! MNIST-M data, training runs, evaluation, single-image classification, the embedding figure
//! and the table that compares every method over several seeds.
//!
//! The protocol: train on labelled MNIST train and unlabelled MNIST-M train, report accuracy on
//! MNIST-M test. No target labels are used for training or model selection, except by the
//! target-only baseline, the upper bound, which trains on them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use serde::{Deserialize, Serialize};
use zoo_core::checkpoint::{SaveOptions, ZooModel};
use zoo_core::train::{run, LoopConfig};
use zoo_dann::{accuracy, Adaptation, DaTrainConfig, DaTrainer, Dann, DannConfig, DigitNet, Method};
use zoo_data::{build_mnistm, ImageSet, Photos, Split};
use zoo_ddc::{Ddc, DdcConfig};
use zoo_eval::metrics::{mean_std, Features, Pca};
use zoo_eval::picture::{save_scatter_png, ScatterPanel};

use crate::cli_args::DataArgs;

/// The seed that builds each half of MNIST-M (fixed: everyone gets the same set).
pub fn mnistm_seed(split: Split) -> u64 {
    match split {
        Split::Train => 0,
        Split::Test => 1,
    }
}

/// MNIST as RGB (source) and MNIST-M (target) of a split.
pub fn domains(data: &DataArgs, split: Split) -> Result<(ImageSet, ImageSet)> {
    let mnist = data.load(split)?;
    let target = build_mnistm(&mnist, &Photos::bundled()?, mnistm_seed(split))?;
    Ok((ImageSet::from_mnist_rgb(&mnist), target))
}

/// A trained digit classifier of either adaptation family.
pub enum AnyAdapted {
    /// A `dann` checkpoint (DANN, or a source-only / target-only baseline).
    Dann(Dann),
    /// A `ddc` checkpoint.
    Ddc(Ddc),
}

impl AnyAdapted {
    /// Loads a `dann` or `ddc` checkpoint by manifest id or path.
    pub fn from_pretrained(weights: &str, dev: &Device) -> Result<Self> {
        let (path, _) = zoo_core::manifest::resolve_weights(weights)?;
        let meta = zoo_core::checkpoint::read_meta(&path)?;
        Ok(match meta.family.as_str() {
            f if f == Dann::FAMILY => AnyAdapted::Dann(Dann::load(&path, dev)?),
            f if f == Ddc::FAMILY => AnyAdapted::Ddc(Ddc::load(&path, dev)?),
            other => bail!("{} holds a checkpoint of the '{other}' family, expected 'dann' or 'ddc'", path.display()),
        })
    }

    /// The classifier.
    pub fn net(&self) -> &DigitNet {
        match self {
            AnyAdapted::Dann(m) => &m.net,
            AnyAdapted::Ddc(m) => &m.net,
        }
    }
}

/// Options of `eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Data and device.
    #[command(flatten)]
    pub data: DataArgs,
    /// Manifest id or path of a `dann` (DANN or a baseline) or `ddc` checkpoint.
    #[arg(long)]
    pub weights: String,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Options of `classify`.
#[derive(Debug, Clone, Args)]
pub struct ClassifyArgs {
    /// Manifest id or path of a `dann` or `ddc` checkpoint.
    #[arg(long)]
    pub weights: String,
    /// The image (PNG or JPEG, any size, colour or grey).
    #[arg(long)]
    pub image: PathBuf,
    /// Device: cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Options of one training run.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Training steps of 64 source + 64 target images.
    #[arg(long, default_value_t = 10_000)]
    pub steps: u64,
    /// Seed of initialisation and data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue the run in the run directory from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every: u64,
}

/// Trains `method` on `M` in `run_dir` (checkpoints, `metrics.jsonl`, `curves.png`) and saves
/// the final weights as `run_dir/file_name`, which it returns.
pub fn train_run<M: Adaptation>(
    model_cfg: &M::Config,
    method: Method,
    (source, target): (ImageSet, ImageSet),
    r: &RunArgs,
    run_dir: &Path,
    file_name: &str,
    dev: &Device,
) -> Result<PathBuf> {
    let cfg = DaTrainConfig::paper(method, r.steps, r.seed);
    let (source_len, target_len) = (source.len(), target.len());
    let mut trainer = DaTrainer::<M>::new(model_cfg, cfg, source, target, dev)?;
    eprintln!("training {} ({method:?}): {} steps, run directory {}", M::FAMILY, r.steps, run_dir.display());
    // A resume must continue the same method, step count (its schedules depend on it), seed and data.
    let settings =
        serde_json::json!({"recipe": &trainer.cfg, "source_images": source_len, "target_images": target_len});
    let lc = LoopConfig {
        checkpoint_every: r.checkpoint_every,
        resume: r.resume,
        settings,
        ..LoopConfig::new(run_dir, r.steps)
    };
    let summary = run(&mut trainer, &lc)?;
    let keys: Vec<&str> =
        summary.last_metrics.iter().map(|(k, _)| k.as_str()).filter(|k| !matches!(*k, "lr" | "lambda")).collect();
    zoo_eval::picture::curve::plot_curves_from_jsonl(&lc.log_path(), &keys, &run_dir.join("curves.png"))?;
    let out = run_dir.join(file_name);
    trainer
        .model
        .save_with(&out, &SaveOptions { step: Some(summary.steps_done), seed: Some(r.seed), storage: None })?;
    eprintln!("saved {}", out.display());
    Ok(out)
}

/// Accuracies of a classifier on both test domains.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Accuracies {
    /// On MNIST-M test.
    pub target_accuracy: f64,
    /// On MNIST test.
    pub source_accuracy: f64,
    /// Images per domain.
    pub n: usize,
}

/// Accuracy of `net` on the test halves of both domains.
pub fn evaluate(net: &DigitNet, (source, target): &(ImageSet, ImageSet), dev: &Device) -> Result<Accuracies> {
    let (target_accuracy, _) = accuracy(net, target, 500, dev)?;
    let (source_accuracy, _) = accuracy(net, source, 500, dev)?;
    Ok(Accuracies { target_accuracy, source_accuracy, n: target.len() })
}

/// `eval`: prints the accuracies of a `dann` or `ddc` checkpoint on both test domains, as text
/// or as one JSON object (`target_accuracy`, `source_accuracy`, `n`).
pub fn eval_command(a: &EvalArgs) -> Result<()> {
    let dev = zoo_core::device(&a.data.device)?;
    let model = AnyAdapted::from_pretrained(&a.weights, &dev)?;
    let acc = evaluate(model.net(), &domains(&a.data, Split::Test)?, &dev)?;
    if a.json {
        println!("{}", serde_json::to_string(&acc)?);
    } else {
        println!(
            "MNIST-M test accuracy (target): {:.4}\nMNIST test accuracy (source): {:.4}\n({} images each)",
            acc.target_accuracy, acc.source_accuracy, acc.n
        );
    }
    Ok(())
}

/// `classify`: prints the digit a `dann` or `ddc` checkpoint reads in an image, and its
/// probability.
pub fn classify_command(a: &ClassifyArgs) -> Result<()> {
    let dev = zoo_core::device(&a.device)?;
    let model = AnyAdapted::from_pretrained(&a.weights, &dev)?;
    let (digit, p) = classify_image(model.net(), &a.image, &dev)?;
    println!("{digit} (probability {p:.3})");
    Ok(())
}

/// The predicted digit of an image file (any size, colour or grey; resized to the network's
/// input) and its probability.
pub fn classify_image(net: &DigitNet, image: &Path, dev: &Device) -> Result<(usize, f32)> {
    let img = image::open(image).with_context(|| format!("cannot read image {}", image.display()))?;
    let s = net.config().image_size as u32;
    let rgb = image::imageops::resize(&img.to_rgb8(), s, s, image::imageops::FilterType::Triangle);
    let set = ImageSet {
        images: (0..3).flat_map(|c| rgb.pixels().map(move |p| p.0[c])).collect(),
        labels: vec![0],
        channels: 3,
        rows: s as usize,
        cols: s as usize,
    };
    let (x, _) = set.batch(&[0], dev)?;
    let probs = candle_nn::ops::softmax(&net.forward(&x)?, 1)?.squeeze(0)?.to_vec1::<f32>()?;
    Ok(probs.iter().enumerate().fold((0, 0f32), |best, (i, &p)| if p > best.1 { (i, p) } else { best }))
}

/// Features `G_f` of the first `n` images of a set.
fn features_of(net: &DigitNet, set: &ImageSet, n: usize, dev: &Device) -> Result<Features> {
    let mut rows = Vec::new();
    for start in (0..n.min(set.len())).step_by(500) {
        let idx: Vec<usize> = (start..(start + 500).min(n).min(set.len())).collect();
        let (x, _) = set.batch(&idx, dev)?;
        rows.push(net.features(&x)?);
    }
    Features::from_tensor(&Tensor::cat(&rows, 0)?)
}

/// The paper's figure: source and target test features of each network projected on their own
/// first two principal directions (PCA of the pooled features), one panel per network.
pub fn embedding_figure(
    nets: &[(String, &DigitNet)],
    test: &(ImageSet, ImageSet),
    n: usize,
    out: &Path,
    dev: &Device,
) -> Result<()> {
    let mut panels = Vec::new();
    for (title, net) in nets {
        let (fs, ft) = (features_of(net, &test.0, n, dev)?, features_of(net, &test.1, n, dev)?);
        let pooled = Features::new(fs.n + ft.n, fs.d, [fs.data.clone(), ft.data.clone()].concat())?;
        let pca = Pca::fit(&pooled, 2)?;
        let (ps, pt) = (pca.project(&fs)?, pca.project(&ft)?);
        let mut points = Vec::with_capacity(ps.n + pt.n);
        for i in 0..ps.n.max(pt.n) {
            if i < ps.n {
                points.push((ps.row(i)[0], ps.row(i)[1], 0));
            }
            if i < pt.n {
                points.push((pt.row(i)[0], pt.row(i)[1], 1));
            }
        }
        panels.push(ScatterPanel { title: title.clone(), points });
    }
    let groups = ["MNIST (source)".to_string(), "MNIST-M (target)".to_string()];
    save_scatter_png(&panels, &groups, "Test features, first two principal components", out)
}

/// The methods of the comparison table, in its order.
pub const TABLE_METHODS: [&str; 4] = ["source-only", "ddc", "dann", "target-only"];

/// The papers' MNIST -> MNIST-M rows (DANN JMLR Table 2; DDC has no digits result, the nearest
/// is DSN's MMD row).
fn paper_row(method: &str) -> &'static str {
    match method {
        "source-only" => ".5225",
        "ddc" => "(MMD .769)",
        "dann" => ".7666",
        _ => ".9596",
    }
}

/// One run of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableRun {
    /// `source-only`, `ddc`, `dann` or `target-only`.
    pub method: String,
    /// The seed.
    pub seed: u64,
    /// Its accuracies.
    #[serde(flatten)]
    pub accuracies: Accuracies,
}

/// Options of the comparison table.
#[derive(Debug, Clone, Args)]
pub struct TableArgs {
    /// Seeds to run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    /// Methods to run (comma-separated; default all four). Two processes with disjoint methods
    /// can share the work; a last one with --report-only writes the table.
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(TABLE_METHODS))]
    pub methods: Option<Vec<String>>,
    /// Training steps per run.
    #[arg(long, default_value_t = 10_000)]
    pub steps: u64,
    /// Directory of the runs (OUT/<method>-s<seed>/) and of table.md / table.json.
    #[arg(long, default_value = "run/da")]
    pub out: PathBuf,
    /// Train nothing: evaluate the finished runs and write the table.
    #[arg(long)]
    pub report_only: bool,
}

fn run_file(method: &str) -> &'static str {
    if method == "ddc" {
        "ddc.safetensors"
    } else {
        "dann.safetensors"
    }
}

/// Trains (or resumes) every selected method and seed, then evaluates every finished run under
/// `--out` and writes `table.md` and `table.json` there. Returns the markdown table.
pub fn reproduce_table(a: &TableArgs, data: &DataArgs) -> Result<String> {
    let dev = zoo_core::device(&data.device)?;
    let methods: Vec<String> =
        a.methods.clone().unwrap_or_else(|| TABLE_METHODS.iter().map(|m| m.to_string()).collect());
    if !a.report_only {
        let train = domains(data, Split::Train)?;
        for seed in &a.seeds {
            for method in &methods {
                let dir = a.out.join(format!("{method}-s{seed}"));
                if dir.join(run_file(method)).exists() {
                    eprintln!("{} is done", dir.display());
                    continue;
                }
                let resume = LoopConfig::new(&dir, a.steps).has_checkpoint();
                let r = RunArgs { steps: a.steps, seed: *seed, resume, checkpoint_every: 1000 };
                let (m, file) = (method.as_str(), run_file(method));
                if m == "ddc" {
                    train_run::<Ddc>(&DdcConfig::mnist(), Method::Adapt, train.clone(), &r, &dir, file, &dev)?;
                } else {
                    let method = match m {
                        "dann" => Method::Adapt,
                        "source-only" => Method::SourceOnly,
                        _ => Method::TargetOnly,
                    };
                    train_run::<Dann>(&DannConfig::mnist(), method, train.clone(), &r, &dir, file, &dev)?;
                }
            }
        }
    }
    let test = domains(data, Split::Test)?;
    let mut runs = Vec::new();
    for method in TABLE_METHODS {
        for seed in &a.seeds {
            let path = a.out.join(format!("{method}-s{seed}")).join(run_file(method));
            if !path.exists() {
                continue;
            }
            let model = AnyAdapted::from_pretrained(&path.to_string_lossy(), &dev)?;
            let accuracies = evaluate(model.net(), &test, &dev)?;
            eprintln!(
                "{method} seed {seed}: target {:.4}, source {:.4}",
                accuracies.target_accuracy, accuracies.source_accuracy
            );
            runs.push(TableRun { method: method.to_string(), seed: *seed, accuracies });
        }
    }
    let table = markdown_table(&runs);
    zoo_core::atomic::write_bytes_atomic(&a.out.join("table.md"), table.as_bytes())?;
    zoo_core::atomic::write_bytes_atomic(&a.out.join("table.json"), serde_json::to_string_pretty(&runs)?.as_bytes())?;
    Ok(table)
}

/// The comparison table (mean +- sample standard deviation over seeds) beside the papers' rows.
pub fn markdown_table(runs: &[TableRun]) -> String {
    let mut s = String::from(
        "| method | seeds | MNIST-M test (target) | MNIST test (source) | paper, MNIST -> MNIST-M |\n|---|---|---|---|---|\n",
    );
    for method in TABLE_METHODS {
        let mine: Vec<&TableRun> = runs.iter().filter(|r| r.method == method).collect();
        if mine.is_empty() {
            s += &format!("| {method} | none | not run | not run | {} |\n", paper_row(method));
            continue;
        }
        let t: Vec<f64> = mine.iter().map(|r| r.accuracies.target_accuracy).collect();
        let src: Vec<f64> = mine.iter().map(|r| r.accuracies.source_accuracy).collect();
        let ((tm, ts), (sm, ss)) = (mean_std(&t), mean_std(&src));
        s += &format!(
            "| {method} | {} | {tm:.4} +- {ts:.4} | {sm:.4} +- {ss:.4} | {} |\n",
            mine.iter().map(|r| r.seed.to_string()).collect::<Vec<_>>().join(", "),
            paper_row(method)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(method: &str, seed: u64, t: f64) -> TableRun {
        TableRun {
            method: method.into(),
            seed,
            accuracies: Accuracies { target_accuracy: t, source_accuracy: 0.99, n: 10 },
        }
    }

    #[test]
    fn other_families_and_unreadable_images_get_clear_errors() {
        let dev = Device::Cpu;
        let e = AnyAdapted::from_pretrained("judge-mnist", &dev).err().unwrap().to_string();
        assert!(e.contains("'judge' family") && e.contains("expected 'dann' or 'ddc'"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let model = Ddc::new(&DdcConfig::mnist(), &dev).unwrap();
        let weights = dir.path().join("ddc.safetensors");
        model.save(&weights).unwrap();
        let loaded = AnyAdapted::from_pretrained(&weights.to_string_lossy(), &dev).unwrap();
        let bad = dir.path().join("digit.png");
        std::fs::write(&bad, b"not a picture").unwrap();
        let e = format!("{:#}", classify_image(loaded.net(), &bad, &dev).unwrap_err());
        assert!(e.contains("cannot read image") && e.contains("digit.png"), "{e}");
        let good = dir.path().join("big.png");
        image::RgbImage::from_pixel(64, 40, image::Rgb([200, 30, 30])).save(&good).unwrap();
        let (digit, p) = classify_image(loaded.net(), &good, &dev).unwrap();
        assert!(digit < 10 && (0.0..=1.0).contains(&p));
    }

    #[test]
    fn table_reports_mean_and_sample_std_and_missing_methods() {
        let table = markdown_table(&[run("dann", 0, 0.8), run("dann", 1, 0.9), run("source-only", 0, 0.7)]);
        assert!(table.contains("| dann | 0, 1 | 0.8500 +- 0.0707 |"), "{table}");
        assert!(table.contains("| source-only | 0 | 0.7000 +- 0.0000 |"), "{table}");
        assert!(table.contains("| ddc | none | not run |"), "{table}");
        assert!(table.contains(".7666"), "{table}");
    }
}
