//! Command-line options shared by the example binaries.

use std::path::PathBuf;

use clap::Args;
use zoo_core::checkpoint::ZooModel;
use zoo_data::{Mnist, Split};

/// Where the MNIST data comes from, and the device to compute on.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Directory holding the MNIST IDX files (default: $ZOO_DATA_DIR/mnist or .cache/mnist).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Use the small subsets shipped in data/mnist instead of the full set.
    #[arg(long, conflicts_with = "data_dir")]
    pub bundled: bool,
    /// Device: cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl DataArgs {
    /// The requested split: the bundled subset with `--bundled`, else the full set (an error
    /// that explains how to fetch it when it is missing).
    pub fn load(&self, split: Split) -> anyhow::Result<Mnist> {
        if self.bundled {
            Mnist::bundled(split)
        } else {
            Mnist::load(self.data_dir.as_deref(), split, false)
        }
    }
}

/// `export`: a checkpoint rewritten with half-precision storage.
#[derive(Args)]
pub struct ExportArgs {
    /// Manifest id or path of the checkpoint to rewrite.
    #[arg(long)]
    pub weights: String,
    /// Output checkpoint (written atomically).
    #[arg(long)]
    pub out: PathBuf,
}

/// `recalibrate`: a GAN checkpoint whose generator's BatchNorm statistics are re-measured on its
/// own samples ("standing statistics"); the weights stay as they are.
#[derive(Args)]
pub struct RecalibrateArgs {
    /// Manifest id or path of the checkpoint.
    #[arg(long)]
    pub weights: String,
    /// Output checkpoint (written atomically; it may be the input file).
    #[arg(long)]
    pub out: PathBuf,
    /// Forward passes in training mode (each folds its batch in with momentum 0.1).
    #[arg(long, default_value_t = 100)]
    pub batches: usize,
    /// Latents per pass.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// Seed of the latents (other than eval's 0, so the scored samples are unseen).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Store the result in half precision (as export does).
    #[arg(long)]
    pub f16: bool,
}

impl RecalibrateArgs {
    /// Runs it on a checkpoint of `M`.
    pub fn run<M: zoo_ebgan::Adversarial>(&self) -> anyhow::Result<()> {
        zoo_ebgan::recalibrate_checkpoint::<M>(
            &self.weights,
            &self.out,
            (self.batches, self.batch_size, self.seed),
            self.f16,
        )?;
        eprintln!(
            "wrote {} (BatchNorm statistics of {} x {} samples)",
            self.out.display(),
            self.batches,
            self.batch_size
        );
        Ok(())
    }
}

/// The options every GAN `train` command shares (`ebgan`, `infogan`, `acgan`): seed, judge
/// monitoring, run directory and resumption, checkpoints, the weight average and the latents of
/// the generator's update.
#[derive(Debug, Clone, Args)]
pub struct GanRunArgs {
    /// Seed of initialisation, data order and latents.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Generated samples scored by the judge at every checkpoint (0: no scoring; otherwise at
    /// least 2, which the distances need).
    #[arg(long, default_value_t = 2000, value_parser = parse_monitor_samples)]
    pub monitor_samples: usize,
    /// Run directory: checkpoints, metrics.jsonl, quality.jsonl, sample grids, curves.png and the
    /// final model (default: run/<model family>, e.g. run/ebgan).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in --run-dir from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Steps between checkpoints (and sample grids).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every: u64,
    /// Keep an exponential moving average of the generator's weights with this decay (e.g.
    /// 0.999) and use it for sample grids, judge scores and the saved model; the raw weights
    /// still train and resume.
    #[arg(long, value_parser = zoo_core::ema::parse_decay)]
    pub ema: Option<f64>,
    /// Draw new latents for the generator's update instead of reusing the discriminator's batch
    /// (as the InfoGAN authors' code does); costs one more generator forward per step.
    #[arg(long)]
    pub fresh_generator_latents: bool,
    /// Raise both learning rates linearly from 1/N of their value to the full rate over the
    /// first N steps (0: no warm-up). On EBGAN it did not keep a generator at 6e-4 from
    /// collapsing early (zoo-ebgan's README).
    #[arg(long, default_value_t = 0)]
    pub lr_warmup: u64,
    /// Raise the generator's learning rate alone linearly from 1/N of its value to the full rate
    /// over the first N steps, the discriminator at its full rate from the start (0: none). On
    /// EBGAN it let the discriminator run ahead and the generated batch collapse early
    /// (zoo-ebgan's README).
    #[arg(long, default_value_t = 0)]
    pub generator_warmup: u64,
}

/// `--monitor-samples`: 0, or a count of at least 2.
fn parse_monitor_samples(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(1) => Err("must be 0 (no scoring) or at least 2: the Frechet distance and KID need two samples".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a count: {e}")),
    }
}

impl GanRunArgs {
    /// `base` with this run's seed, weight average and latent choice.
    pub fn recipe(&self, base: zoo_ebgan::TrainConfig) -> zoo_ebgan::TrainConfig {
        zoo_ebgan::TrainConfig {
            seed: self.seed,
            ema: self.ema,
            fresh_generator_latents: self.fresh_generator_latents,
            lr_warmup: self.lr_warmup,
            generator_warmup: self.generator_warmup,
            ..base
        }
    }

    /// The run directory: `--run-dir`, or `run/<family>`.
    pub fn run_dir(&self, family: &str) -> PathBuf {
        self.run_dir.clone().unwrap_or_else(|| PathBuf::from("run").join(family))
    }

    /// The judge's monitor of `--monitor-samples` samples against the test split of `data` and
    /// `train` (none when 0).
    pub fn monitor(
        &self,
        data: &DataArgs,
        train: &Mnist,
        dev: &candle_core::Device,
    ) -> anyhow::Result<Option<zoo_ebgan::Monitor>> {
        if self.monitor_samples == 0 {
            return Ok(None);
        }
        let judge = zoo_eval::judge::Judge::from_pretrained("judge-mnist", dev)?;
        Ok(Some(zoo_ebgan::Monitor::new(judge, &data.load(Split::Test)?, train, self.monitor_samples)?))
    }

    /// Trains `trainer` for `steps` (with `monitor`, if any) in the run directory, plots the
    /// logged metrics `curves` to `curves.png` and saves the final model (the weight average
    /// when the recipe keeps one) as `<name>.safetensors` there; returns its path.
    pub fn train<M: zoo_ebgan::Adversarial>(
        &self,
        mut trainer: zoo_ebgan::Trainer<M>,
        monitor: Option<zoo_ebgan::Monitor>,
        steps: u64,
        name: &str,
        curves: &[&str],
    ) -> anyhow::Result<PathBuf> {
        use zoo_core::checkpoint::SaveOptions;
        if let Some(m) = monitor {
            trainer = trainer.with_monitor(m);
        }
        let dir = self.run_dir(M::FAMILY);
        eprintln!("training {}: {steps} steps, run directory {}", M::FAMILY, dir.display());
        // A resume must continue the same recipe on the same data. The step count may grow (a
        // run continued for more epochs): a learning-rate decay, which depends on it, is part of
        // the recipe.
        let settings = serde_json::json!({"recipe": trainer.cfg, "training_images": trainer.images()});
        let lc = zoo_core::train::LoopConfig {
            checkpoint_every: self.checkpoint_every,
            resume: self.resume,
            settings,
            ..zoo_core::train::LoopConfig::new(&dir, steps)
        };
        let summary = zoo_core::train::run(&mut trainer, &lc)?;
        zoo_eval::picture::curve::plot_curves_from_jsonl(&lc.log_path(), curves, &dir.join("curves.png"))?;
        let out = dir.join(format!("{name}.safetensors"));
        let opts = SaveOptions { step: Some(summary.steps_done), seed: Some(self.seed), storage: None };
        trainer.finish()?.save_with(&out, &opts)?;
        eprintln!("saved {}", out.display());
        Ok(out)
    }
}
