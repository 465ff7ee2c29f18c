//! The training-loop kit: progress bar with rate and ETA, a JSONL metrics log, periodic atomic
//! checkpoints, exact `--resume`, and a NaN/inf guard.
//!
//! A family implements [`TrainTask`] (one optimisation step, how to save weights, and its
//! [`TrainingState`]: optimiser moments, RNG states, data position) and calls [`run`]. The run
//! directory holds:
//!
//! - `checkpoint.safetensors`: the model weights (a normal checkpoint of the family);
//! - `checkpoint.state.safetensors`: everything else needed to continue the same trajectory;
//! - `checkpoint.prev.safetensors` and `checkpoint.prev.state.safetensors`: the pair before it;
//! - `metrics.jsonl`: one JSON object per step, `{"step": 1, "loss": ..., ...}`.
//!
//! A checkpoint is written as a new pair (`checkpoint.next.*`, each file atomically) before the
//! current pair becomes the previous one and the new pair takes its place, so a crash at any moment
//! leaves at least one complete pair; `--resume` takes the newest pair whose two files record the
//! same step.
//!
//! Resuming from a checkpoint written at step `k` and running to `n` gives bit-identical weights
//! to an uninterrupted run of `n` steps with the same seed.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{de::DeserializeOwned, Serialize};

use crate::checkpoint::{read_meta, save_tensors, Checkpoint, CheckpointMeta};
use crate::optim::{Optimizer, OptimizerState};
use crate::ZooRng;

/// Named scalar metrics of one step, in a stable order.
pub type Metrics = Vec<(String, f64)>;

/// Everything besides the weights that a resumed run needs.
#[derive(Debug, Default, Clone)]
pub struct TrainingState {
    json: serde_json::Map<String, serde_json::Value>,
    tensors: HashMap<String, Tensor>,
}

impl TrainingState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores any serialisable value under `key`.
    pub fn put<T: Serialize>(&mut self, key: &str, value: &T) -> Result<()> {
        self.json
            .insert(key.to_string(), serde_json::to_value(value).with_context(|| format!("cannot serialise '{key}'"))?);
        Ok(())
    }

    /// Reads back a value stored with [`TrainingState::put`].
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let v = self.json.get(key).with_context(|| format!("training state lacks '{key}'"))?;
        serde_json::from_value(v.clone()).with_context(|| format!("training state entry '{key}' has the wrong form"))
    }

    /// Stores a random generator's exact position.
    pub fn put_rng(&mut self, key: &str, rng: &ZooRng) -> Result<()> {
        self.put(&format!("rng.{key}"), rng)
    }

    /// Restores a random generator stored with [`TrainingState::put_rng`].
    pub fn get_rng(&self, key: &str) -> Result<ZooRng> {
        self.get(&format!("rng.{key}"))
    }

    /// Stores an optimiser's state under `name` (e.g. `"generator"`, `"discriminator"`).
    pub fn put_optimizer(&mut self, name: &str, opt: &dyn Optimizer) -> Result<()> {
        let st = opt.state()?;
        self.json.insert(format!("optim.{name}"), st.meta);
        for (k, t) in st.tensors {
            self.tensors.insert(format!("optim.{name}.{k}"), t);
        }
        Ok(())
    }

    /// Restores an optimiser stored with [`TrainingState::put_optimizer`].
    pub fn get_optimizer(&self, name: &str, opt: &mut dyn Optimizer) -> Result<()> {
        let meta = self
            .json
            .get(&format!("optim.{name}"))
            .with_context(|| format!("training state lacks optimiser '{name}'"))?
            .clone();
        let prefix = format!("optim.{name}.");
        let tensors = self
            .tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix(&prefix).map(|s| (s.to_string(), t.clone())))
            .collect();
        opt.load_state(&OptimizerState { meta, tensors }).with_context(|| format!("cannot restore optimiser '{name}'"))
    }

    /// Stores named tensors under `key` (e.g. a moving average of some weights).
    pub fn put_tensors(&mut self, key: &str, tensors: &[(String, Tensor)]) -> Result<()> {
        let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
        self.put(&format!("tensors.{key}"), &names)?;
        for (name, t) in tensors {
            self.tensors.insert(format!("tensors.{key}.{name}"), t.clone());
        }
        Ok(())
    }

    /// Reads back the tensors stored with [`TrainingState::put_tensors`], in their stored order.
    pub fn get_tensors(&self, key: &str) -> Result<Vec<(String, Tensor)>> {
        let names: Vec<String> = self.get(&format!("tensors.{key}"))?;
        names
            .into_iter()
            .map(|n| {
                let t = self
                    .tensors
                    .get(&format!("tensors.{key}.{n}"))
                    .with_context(|| format!("training state lacks tensor '{n}' of '{key}'"))?
                    .clone();
                Ok((n, t))
            })
            .collect()
    }

    /// Writes the state atomically, recording the step it belongs to.
    pub fn save(&self, path: &Path, family: &str, step: u64) -> Result<()> {
        let mut meta = CheckpointMeta::new(family, &serde_json::Value::Object(self.json.clone()))?;
        meta.step = Some(step);
        meta.extra.insert("kind".into(), "training_state".into());
        let mut tensors: Vec<(String, Tensor)> = self.tensors.iter().map(|(k, t)| (k.clone(), t.clone())).collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        save_tensors(path, &tensors, &meta, None)
    }

    /// Reads a state file; returns it with its step.
    pub fn load(path: &Path, dev: &Device) -> Result<(Self, u64)> {
        let ck = Checkpoint::read(path, dev)?;
        if ck.meta.extra.get("kind").map(String::as_str) != Some("training_state") {
            bail!("{} is not a training-state file", path.display());
        }
        let step = ck.meta.step.with_context(|| format!("{} records no step", path.display()))?;
        let json = match ck.meta.config {
            serde_json::Value::Object(m) => m,
            _ => bail!("{}: malformed training state", path.display()),
        };
        Ok((Self { json, tensors: ck.tensors }, step))
    }
}

/// What the loop needs from a family's training run.
pub trait TrainTask {
    /// The family name written into checkpoints.
    fn family(&self) -> &str;
    /// Performs optimisation step `step` (0-based) and returns its metrics (e.g. `loss`).
    fn train_step(&mut self, step: u64) -> Result<Metrics>;
    /// Saves the model weights to `path` (atomically), recording `step`.
    fn save_weights(&self, path: &Path, step: u64) -> Result<()>;
    /// Optimiser moments, RNG positions, data position: all that continues the trajectory.
    fn training_state(&self) -> Result<TrainingState>;
    /// Restores the weights from `weights` and the rest from `state`.
    fn restore(&mut self, weights: &Path, state: &TrainingState) -> Result<()>;
    /// Called after each checkpoint (e.g. to write sample grids or curves). Default: nothing.
    fn on_checkpoint(&mut self, _step: u64, _run_dir: &Path) -> Result<()> {
        Ok(())
    }
}

/// Settings of a training run.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Directory of checkpoints and the metrics log.
    pub run_dir: PathBuf,
    /// Total number of optimisation steps.
    pub steps: u64,
    /// Checkpoint every this many steps (and always at the end).
    pub checkpoint_every: u64,
    /// Continue from the checkpoint in `run_dir`.
    pub resume: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Stop (with a checkpoint) after this many completed steps, as if interrupted.
    pub stop_after: Option<u64>,
    /// What identifies the run (e.g. its recipe, step count, seed and data), as a JSON object:
    /// stored with every checkpoint, and a resume whose settings differ is refused with the
    /// differences named, instead of silently mixing two runs. `Null`: not recorded or checked.
    pub settings: serde_json::Value,
}

impl LoopConfig {
    /// A run of `steps` steps in `run_dir`, checkpointing every 500 steps, with a progress bar.
    pub fn new(run_dir: impl Into<PathBuf>, steps: u64) -> Self {
        Self {
            run_dir: run_dir.into(),
            steps,
            checkpoint_every: 500,
            resume: false,
            progress: true,
            stop_after: None,
            settings: serde_json::Value::Null,
        }
    }
    /// Path of the weights checkpoint.
    pub fn weights_path(&self) -> PathBuf {
        self.run_dir.join("checkpoint.safetensors")
    }
    /// Path of the training-state checkpoint.
    pub fn state_path(&self) -> PathBuf {
        self.run_dir.join("checkpoint.state.safetensors")
    }
    /// The (weights, state) pairs a run directory may hold, from the newest kind to the oldest:
    /// a new pair not yet moved into place, the current pair, and the pair it replaced.
    pub fn checkpoint_pairs(&self) -> [(PathBuf, PathBuf); 3] {
        let pair = |tag: &str| {
            (
                self.run_dir.join(format!("checkpoint.{tag}.safetensors")),
                self.run_dir.join(format!("checkpoint.{tag}.state.safetensors")),
            )
        };
        [pair("next"), (self.weights_path(), self.state_path()), pair("prev")]
    }
    /// Whether the run directory holds any checkpoint file (a run to resume, or one a fresh run
    /// would overwrite).
    pub fn has_checkpoint(&self) -> bool {
        self.checkpoint_pairs().iter().any(|p| p.0.exists() || p.1.exists())
    }
    /// Path of the metrics log.
    pub fn log_path(&self) -> PathBuf {
        self.run_dir.join("metrics.jsonl")
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Steps completed in total (including those before a resume).
    pub steps_done: u64,
    /// Step the run started from (0 unless resumed).
    pub started_at: u64,
    /// Metrics of the last step.
    pub last_metrics: Metrics,
}

fn format_metrics(m: &Metrics) -> String {
    m.iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join("  ")
}

fn save_checkpoint<T: TrainTask>(task: &mut T, cfg: &LoopConfig, step: u64) -> Result<()> {
    let [next, current, previous] = cfg.checkpoint_pairs();
    // The new pair is written in full first; only then does the current pair become the previous
    // one and the new pair take its place. A crash at any point leaves a complete pair behind.
    task.save_weights(&next.0, step)?;
    let family = task.family().to_string();
    let mut state = task.training_state()?;
    if !cfg.settings.is_null() {
        state.put(RUN_SETTINGS, &cfg.settings)?;
    }
    state.save(&next.1, &family, step)?;
    for (from, to) in
        [(&current.0, &previous.0), (&current.1, &previous.1), (&next.0, &current.0), (&next.1, &current.1)]
    {
        if from.exists() {
            std::fs::rename(from, to)
                .with_context(|| format!("cannot move checkpoint {} to {}", from.display(), to.display()))?;
        }
    }
    task.on_checkpoint(step, &cfg.run_dir)
}

/// Key of [`LoopConfig::settings`] in the training state.
const RUN_SETTINGS: &str = "run_settings";

/// Refuses to resume a run recorded with other settings than `cfg.settings`, naming each
/// difference (runs recorded without settings, or a command without them, are not checked).
fn check_settings(cfg: &LoopConfig, state: &TrainingState) -> Result<()> {
    let (Some(stored), false) = (state.json.get(RUN_SETTINGS), cfg.settings.is_null()) else { return Ok(()) };
    if stored == &cfg.settings {
        return Ok(());
    }
    let empty = serde_json::Map::new();
    let (old, new) = (stored.as_object().unwrap_or(&empty), cfg.settings.as_object().unwrap_or(&empty));
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let null = serde_json::Value::Null;
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| format!("{k}: run {}, this command {}", old.get(k).unwrap_or(&null), new.get(k).unwrap_or(&null)))
        .collect();
    let diffs =
        if diffs.is_empty() { format!("run {stored}, this command {}", cfg.settings) } else { diffs.join("; ") };
    bail!(
        "--resume: the run in {} was started with other settings ({diffs}); repeat the run's own options to \
         continue it, or start a new run directory",
        cfg.run_dir.display()
    )
}

/// The newest (weights, state) pair of the run directory whose two files record the same step,
/// with that step; an error that lists what was found when no pair agrees.
fn newest_complete_pair(cfg: &LoopConfig) -> Result<(PathBuf, PathBuf, u64)> {
    let step_of = |path: &PathBuf| -> Option<u64> { read_meta(path).ok().and_then(|m| m.step) };
    let pairs = cfg.checkpoint_pairs();
    let weights: Vec<(PathBuf, u64)> =
        pairs.iter().filter(|p| p.0.exists()).filter_map(|p| step_of(&p.0).map(|s| (p.0.clone(), s))).collect();
    let states: Vec<(PathBuf, u64)> =
        pairs.iter().filter(|p| p.1.exists()).filter_map(|p| step_of(&p.1).map(|s| (p.1.clone(), s))).collect();
    let best = weights
        .iter()
        .flat_map(|(w, ws)| {
            states.iter().filter(move |(_, ss)| ss == ws).map(move |(s, _)| (w.clone(), s.clone(), *ws))
        })
        .max_by_key(|(_, _, step)| *step);
    if let Some(found) = best {
        return Ok(found);
    }
    if !cfg.has_checkpoint() {
        bail!(
            "--resume: no checkpoint to resume from in {} (expected {} and {})",
            cfg.run_dir.display(),
            cfg.weights_path().display(),
            cfg.state_path().display()
        );
    }
    let list = |v: &[(PathBuf, u64)]| {
        v.iter().map(|(p, s)| format!("{} (step {s})", p.display())).collect::<Vec<_>>().join(", ")
    };
    bail!(
        "--resume: the checkpoint files in {} disagree or are unreadable: weights {}; training states {}",
        cfg.run_dir.display(),
        if weights.is_empty() { "none readable".to_string() } else { list(&weights) },
        if states.is_empty() { "none readable".to_string() } else { list(&states) }
    )
}

/// Keeps only the log lines of steps `<= upto` (a resumed run redoes the later ones).
fn truncate_log(path: &Path, upto: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let mut kept = String::new();
    for line in text.lines() {
        let step =
            serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| v.get("step").and_then(|s| s.as_u64()));
        if matches!(step, Some(s) if s <= upto) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    crate::atomic::write_bytes_atomic(path, kept.as_bytes())
}

/// Runs `task` for `cfg.steps` steps (resuming if asked), logging and checkpointing.
pub fn run<T: TrainTask>(task: &mut T, cfg: &LoopConfig) -> Result<RunSummary> {
    std::fs::create_dir_all(&cfg.run_dir)
        .with_context(|| format!("cannot create run directory {}", cfg.run_dir.display()))?;
    let weights = cfg.weights_path();
    let mut start = 0;
    if cfg.resume {
        let (weights, state_path, step) = newest_complete_pair(cfg)?;
        let (state, _) = TrainingState::load(&state_path, &Device::Cpu)?;
        check_settings(cfg, &state)?;
        task.restore(&weights, &state).with_context(|| format!("cannot resume from {}", weights.display()))?;
        truncate_log(&cfg.log_path(), step)?;
        start = step;
    } else if cfg.has_checkpoint() {
        bail!(
            "{} already holds a checkpoint: pass --resume to continue that run, or choose another run directory",
            cfg.run_dir.display()
        );
    } else {
        let _ = std::fs::remove_file(cfg.log_path());
    }

    let bar = if cfg.progress {
        ProgressBar::new(cfg.steps)
    } else {
        ProgressBar::with_draw_target(Some(cfg.steps), ProgressDrawTarget::hidden())
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps  {per_sec}  ETA {eta}  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_position(start);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cfg.log_path())
        .with_context(|| format!("cannot open metrics log {}", cfg.log_path().display()))?;
    let mut last_good = if cfg.resume { Some(start) } else { None };
    let mut last_metrics = Vec::new();
    let end = cfg.stop_after.map_or(cfg.steps, |s| s.min(cfg.steps));
    let mut step = start;
    while step < end {
        let metrics = task.train_step(step)?;
        if let Some((k, v)) = metrics.iter().find(|(_, v)| !v.is_finite()) {
            bar.abandon();
            let last = match last_good {
                Some(s) => format!("the last good checkpoint is {} (step {s}); resume from it with --resume, perhaps with a lower learning rate", weights.display()),
                None => "no checkpoint was written yet".to_string(),
            };
            bail!("training diverged at step {}: {k} = {v}; stopped without saving. {last}", step + 1);
        }
        step += 1;
        let mut line = serde_json::Map::new();
        line.insert("step".into(), step.into());
        for (k, v) in &metrics {
            line.insert(k.clone(), serde_json::json!(v));
        }
        writeln!(log, "{}", serde_json::Value::Object(line)).context("cannot append to the metrics log")?;
        bar.set_message(format_metrics(&metrics));
        bar.inc(1);
        last_metrics = metrics;
        if step % cfg.checkpoint_every.max(1) == 0 || step == end {
            log.flush()?;
            save_checkpoint(task, cfg, step)?;
            last_good = Some(step);
        }
    }
    bar.finish();
    Ok(RunSummary { steps_done: step, started_at: start, last_metrics })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{varmap_tensors, CheckpointMeta};
    use crate::nn::dropout;
    use crate::optim::{named_vars, Adam, AdamConfig};
    use candle_core::{DType, Module};
    use candle_nn::{VarBuilder, VarMap};

    /// A small regression task with everything that must survive a resume: Adam moments, a data
    /// RNG, a dropout RNG and the weights.
    struct Toy {
        varmap: VarMap,
        fc1: candle_nn::Linear,
        fc2: candle_nn::Linear,
        opt: Adam,
        data_rng: ZooRng,
        drop_rng: ZooRng,
        nan_at: Option<u64>,
    }

    impl Toy {
        fn new(seed: u64) -> Self {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
            let fc1 = candle_nn::linear(4, 16, vb.pp("fc1")).unwrap();
            let fc2 = candle_nn::linear(16, 1, vb.pp("fc2")).unwrap();
            crate::init::init_torch_default(&varmap, &mut ZooRng::new(seed)).unwrap();
            let opt = Adam::new(named_vars(&varmap, ""), AdamConfig::new(0.01)).unwrap();
            Self {
                varmap,
                fc1,
                fc2,
                opt,
                data_rng: ZooRng::derive(seed, "data"),
                drop_rng: ZooRng::derive(seed, "dropout"),
                nan_at: None,
            }
        }
        fn weights(&self) -> Vec<Vec<f32>> {
            varmap_tensors(&self.varmap).iter().map(|(_, t)| t.flatten_all().unwrap().to_vec1().unwrap()).collect()
        }
    }

    impl TrainTask for Toy {
        fn family(&self) -> &str {
            "toy"
        }
        fn train_step(&mut self, step: u64) -> Result<Metrics> {
            let x = self.data_rng.normal((8, 4), 0.0, 1.0, DType::F32, &Device::Cpu)?;
            let y = x.sum_keepdim(1)?.sin()?;
            let h = dropout(&self.fc1.forward(&x)?.relu()?, 0.2, &mut self.drop_rng)?;
            let loss = self.fc2.forward(&h)?.sub(&y)?.sqr()?.mean_all()?;
            let grads = loss.backward()?;
            crate::optim::Optimizer::step(&mut self.opt, &grads)?;
            let mut l = loss.to_scalar::<f32>()? as f64;
            if self.nan_at == Some(step) {
                l = f64::NAN;
            }
            Ok(vec![("loss".into(), l)])
        }
        fn save_weights(&self, path: &Path, step: u64) -> Result<()> {
            let mut meta = CheckpointMeta::new("toy", &serde_json::json!({}))?;
            meta.step = Some(step);
            save_tensors(path, &varmap_tensors(&self.varmap), &meta, None)
        }
        fn training_state(&self) -> Result<TrainingState> {
            let mut s = TrainingState::new();
            s.put_optimizer("model", &self.opt)?;
            s.put_rng("data", &self.data_rng)?;
            s.put_rng("dropout", &self.drop_rng)?;
            Ok(s)
        }
        fn restore(&mut self, weights: &Path, state: &TrainingState) -> Result<()> {
            Checkpoint::read(weights, &Device::Cpu)?.load_into(&self.varmap)?;
            state.get_optimizer("model", &mut self.opt)?;
            self.data_rng = state.get_rng("data")?;
            self.drop_rng = state.get_rng("dropout")?;
            Ok(())
        }
    }

    fn cfg(dir: &Path, steps: u64) -> LoopConfig {
        LoopConfig { checkpoint_every: 5, progress: false, ..LoopConfig::new(dir, steps) }
    }

    #[test]
    fn resume_continues_the_same_trajectory() {
        let d = tempfile::tempdir().unwrap();
        let mut straight = Toy::new(1);
        run(&mut straight, &cfg(&d.path().join("a"), 20)).unwrap();

        let mut first = Toy::new(1);
        let s = run(&mut first, &LoopConfig { stop_after: Some(10), ..cfg(&d.path().join("b"), 20) }).unwrap();
        assert_eq!(s.steps_done, 10);
        // A fresh process would start from a differently initialised model: emulate with seed 99.
        let mut resumed = Toy::new(99);
        let s = run(&mut resumed, &LoopConfig { resume: true, ..cfg(&d.path().join("b"), 20) }).unwrap();
        assert_eq!((s.started_at, s.steps_done), (10, 20));
        assert_eq!(straight.weights(), resumed.weights(), "resumed run diverged from the straight run");
        let log = std::fs::read_to_string(d.path().join("b/metrics.jsonl")).unwrap();
        let steps: Vec<u64> = log
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, (1..=20).collect::<Vec<_>>());
        // The loss went down on this learnable task.
        let first_loss =
            serde_json::from_str::<serde_json::Value>(log.lines().next().unwrap()).unwrap()["loss"].as_f64().unwrap();
        assert!(s.last_metrics[0].1 < first_loss);
    }

    #[test]
    fn resume_without_checkpoint_and_overwrite_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = run(&mut Toy::new(1), &LoopConfig { resume: true, ..cfg(d.path(), 10) }).unwrap_err().to_string();
        assert!(e.contains("no checkpoint to resume from"), "{e}");
        run(&mut Toy::new(1), &cfg(d.path(), 5)).unwrap();
        let e = run(&mut Toy::new(1), &cfg(d.path(), 5)).unwrap_err().to_string();
        assert!(e.contains("already holds a checkpoint"), "{e}");
    }

    #[test]
    fn a_checkpoint_pair_broken_mid_save_falls_back_to_the_previous_pair() {
        let d = tempfile::tempdir().unwrap();
        let mut straight = Toy::new(1);
        run(&mut straight, &cfg(&d.path().join("a"), 15)).unwrap();

        let dir = d.path().join("b");
        run(&mut Toy::new(1), &LoopConfig { stop_after: Some(10), ..cfg(&dir, 15) }).unwrap();
        let [next, current, previous] = cfg(&dir, 15).checkpoint_pairs();
        assert_eq!(read_meta(&current.0).unwrap().step, Some(10));
        assert_eq!(read_meta(&previous.1).unwrap().step, Some(5));
        assert!(!next.0.exists() && !next.1.exists());
        // A save interrupted after the weights: a newer weights file without its state, and the
        // current state cut short.
        std::fs::copy(&current.0, &next.0).unwrap();
        let bytes = std::fs::read(&current.1).unwrap();
        std::fs::write(&current.1, &bytes[..bytes.len() / 2]).unwrap();
        let mut resumed = Toy::new(99);
        let s = run(&mut resumed, &LoopConfig { resume: true, ..cfg(&dir, 15) }).unwrap();
        assert_eq!((s.started_at, s.steps_done), (5, 15), "resumed from the previous pair");
        assert_eq!(straight.weights(), resumed.weights());

        // Files that never agree are refused with what was found.
        std::fs::remove_file(&previous.0).unwrap();
        std::fs::copy(&previous.1, &current.1).unwrap();
        let e = run(&mut Toy::new(1), &LoopConfig { resume: true, ..cfg(&dir, 20) }).unwrap_err().to_string();
        assert!(e.contains("disagree") && e.contains("(step 15)") && e.contains("(step 10)"), "{e}");
    }

    #[test]
    fn a_resume_with_other_settings_is_refused_with_the_differences() {
        let d = tempfile::tempdir().unwrap();
        let with = |steps: u64, seed: u64| LoopConfig {
            settings: serde_json::json!({"steps": steps, "seed": seed, "lr": 0.1}),
            ..cfg(d.path(), steps)
        };
        run(&mut Toy::new(1), &LoopConfig { stop_after: Some(5), ..with(10, 3) }).unwrap();
        let e = run(&mut Toy::new(1), &LoopConfig { resume: true, ..with(20, 4) }).unwrap_err().to_string();
        assert!(e.contains("seed: run 3, this command 4") && e.contains("steps: run 10, this command 20"), "{e}");
        assert!(!e.contains("lr:"), "{e}");
        let s = run(&mut Toy::new(1), &LoopConfig { resume: true, ..with(10, 3) }).unwrap();
        assert_eq!((s.started_at, s.steps_done), (5, 10));
    }

    #[test]
    fn nan_guard_stops_and_keeps_the_last_good_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let mut t = Toy::new(1);
        t.nan_at = Some(7);
        let e = run(&mut t, &cfg(d.path(), 20)).unwrap_err().to_string();
        assert!(e.contains("diverged at step 8") && e.contains("loss = NaN") && e.contains("(step 5)"), "{e}");
        assert_eq!(read_meta(&d.path().join("checkpoint.safetensors")).unwrap().step, Some(5));
        // And the run can be resumed from there.
        let s = run(&mut Toy::new(1), &LoopConfig { resume: true, ..cfg(d.path(), 10) }).unwrap();
        assert_eq!((s.started_at, s.steps_done), (5, 10));
    }
}
