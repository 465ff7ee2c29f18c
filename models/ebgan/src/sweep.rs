//! The paper's robustness experiment (section 4.1): train EBGAN and the GAN baseline over a grid
//! of hyper-parameters, score every run with the judge, and compare the distributions of scores.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use zoo_core::train::TrainTask;
use zoo_data::Mnist;
use zoo_eval::gan::GanMetrics;

use crate::{Adversarial, Architecture, Config, Ebgan, Gan, GanConfig, Monitor, TrainConfig, Trainer};

/// One point of the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    /// `ebgan` or `gan`.
    pub family: String,
    /// Adam learning rate of both networks.
    pub lr: f64,
    /// Hidden layers (see [`Architecture::FullyConnected`]).
    pub depth: usize,
    /// Hidden width.
    pub width: usize,
    /// EBGAN's margin (ignored by the GAN).
    pub margin: f64,
}

impl Setting {
    /// A short name, e.g. `ebgan-lr0.001-d3-w512-m10`.
    pub fn name(&self) -> String {
        let m = if self.family == "ebgan" { format!("-m{}", self.margin) } else { String::new() };
        format!("{}-lr{}-d{}-w{}{m}", self.family, self.lr, self.depth, self.width)
    }

    /// The EBGAN configuration of this setting: the paper's fully-connected networks with this
    /// depth, width and margin.
    pub fn ebgan_config(&self) -> Config {
        let base = Config::paper_mnist_fc();
        let code = match base.architecture {
            Architecture::FullyConnected { code, .. } => code,
            Architecture::Conv { code, .. } => code,
        };
        Config {
            architecture: Architecture::FullyConnected { hidden: self.width, code, depth: self.depth },
            margin: self.margin,
            ..base
        }
    }
}

/// The default grid: learning rates {3e-4, 1e-3, 3e-3} x depths {2, 3} x widths {256, 512}, for
/// both families (EBGAN at the paper's margin of 10), 24 runs.
pub fn default_grid() -> Vec<Setting> {
    let mut grid = Vec::new();
    for family in ["ebgan", "gan"] {
        for lr in [3e-4, 1e-3, 3e-3] {
            for depth in [2, 3] {
                for width in [256, 512] {
                    grid.push(Setting { family: family.into(), lr, depth, width, margin: 10.0 });
                }
            }
        }
    }
    grid
}

/// The outcome of one run of the sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// The setting.
    pub setting: Setting,
    /// Training steps run.
    pub steps: u64,
    /// The judge's scores of the final generator.
    pub metrics: GanMetrics,
    /// Whether a step produced a non-finite loss (the run then stops and is scored as it is).
    pub diverged: bool,
}

fn train_and_score<M: Adversarial>(
    model_cfg: &M::Config,
    setting: &Setting,
    data: &Mnist,
    monitor: &Monitor,
    steps: u64,
    seed: u64,
    dev: &Device,
) -> Result<Outcome> {
    let recipe = TrainConfig { lr_g: setting.lr, lr_d: setting.lr, seed, ..Default::default() };
    let mut trainer = Trainer::<M>::new(model_cfg, recipe, data.clone(), dev)?;
    let mut diverged = false;
    for step in 0..steps {
        let metrics = trainer.train_step(step)?;
        if metrics.iter().any(|(_, v)| !v.is_finite()) {
            diverged = true;
            break;
        }
    }
    let (metrics, _) = monitor.measure(&trainer.model, dev)?;
    Ok(Outcome { setting: setting.clone(), steps, metrics, diverged })
}

/// Trains one setting for `steps` steps from `seed` and scores it with `monitor`.
pub fn run_setting(
    setting: &Setting,
    data: &Mnist,
    monitor: &Monitor,
    steps: u64,
    seed: u64,
    dev: &Device,
) -> Result<Outcome> {
    let cfg = setting.ebgan_config();
    match setting.family.as_str() {
        "ebgan" => train_and_score::<Ebgan>(&cfg, setting, data, monitor, steps, seed, dev),
        "gan" => train_and_score::<Gan>(&GanConfig::matching(&cfg), setting, data, monitor, steps, seed, dev),
        other => anyhow::bail!("unknown family '{other}' in a sweep setting (expected ebgan or gan)"),
    }
}

/// Reads the outcomes already in a sweep log (JSON Lines), so an interrupted sweep continues.
pub fn read_outcomes(path: &Path) -> Result<Vec<Outcome>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{} line {}", path.display(), i + 1)))
        .collect()
}

/// A markdown table of outcomes, one row per run, and per family the median score and the
/// fraction of runs that cover all ten digits with an inception score of at least `good`.
pub fn markdown_table(outcomes: &[Outcome], good: f64) -> String {
    let mut s = String::from(
        "| run | lr | depth | width | margin | inception score | modes | KL to uniform | judge FD |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let m = &o.metrics;
        let margin = if o.setting.family == "ebgan" { format!("{}", o.setting.margin) } else { "-".into() };
        s += &format!(
            "| {} | {} | {} | {} | {margin} | {:.2} | {} | {:.3} | {:.1} |\n",
            o.setting.family,
            o.setting.lr,
            o.setting.depth,
            o.setting.width,
            m.inception_score,
            m.modes_covered,
            m.kl_to_uniform,
            m.judge_fd
        );
    }
    s += "\n| family | runs | median inception score | runs with 10/10 modes and IS >= ";
    s += &format!("{good} |\n|---|---|---|---|\n");
    for family in ["ebgan", "gan"] {
        let mut scores: Vec<f64> =
            outcomes.iter().filter(|o| o.setting.family == family).map(|o| o.metrics.inception_score).collect();
        if scores.is_empty() {
            continue;
        }
        scores.sort_by(f64::total_cmp);
        let median = scores[scores.len() / 2];
        let ok = outcomes
            .iter()
            .filter(|o| {
                o.setting.family == family && o.metrics.modes_covered == 10 && o.metrics.inception_score >= good
            })
            .count();
        s += &format!("| {family} | {} | {median:.2} | {ok} |\n", scores.len());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_has_both_families_and_names_are_unique() {
        let g = default_grid();
        assert_eq!(g.iter().filter(|s| s.family == "ebgan").count(), 12);
        assert_eq!(g.iter().filter(|s| s.family == "gan").count(), 12);
        let mut names: Vec<String> = g.iter().map(Setting::name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 24);
        let cfg = g[3].ebgan_config();
        assert!(matches!(cfg.architecture, Architecture::FullyConnected { depth: 3, hidden: 512, .. }), "{cfg:?}");
    }

    #[test]
    fn a_short_run_is_scored_and_the_table_summarises_it() {
        let dev = Device::Cpu;
        let data = Mnist::bundled_train_subset().unwrap().subset(0..256).unwrap();
        let test = Mnist::bundled_test_slice().unwrap().subset(0..200).unwrap();
        let judge = zoo_core::checkpoint::ZooModel::from_pretrained("judge-mnist", &dev).unwrap();
        let monitor = Monitor::new(judge, &test, &data, 100).unwrap();
        let s = Setting { family: "gan".into(), lr: 1e-3, depth: 2, width: 64, margin: 10.0 };
        let o = run_setting(&s, &data, &monitor, 3, 0, &dev).unwrap();
        assert_eq!(o.metrics.n, 100);
        assert!(o.metrics.inception_score >= 1.0 && !o.diverged, "{o:?}");
        let table = markdown_table(&[o], 9.0);
        assert!(table.contains("| gan | 0.001 | 2 | 64 | - |") && table.contains("| gan | 1 |"), "{table}");
        let bad = Setting { family: "vae".into(), ..s };
        assert!(run_setting(&bad, &data, &monitor, 1, 0, &dev).unwrap_err().to_string().contains("unknown family"));
    }
}
