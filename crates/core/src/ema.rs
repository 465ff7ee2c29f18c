//! An exponential moving average of a model's variables, the usual way to evaluate a GAN's
//! generator (Yazıcı et al. 2019, "The Unusual Effectiveness of Averaging in GAN Training"; BigGAN,
//! StyleGAN): the averaged weights sit nearer the centre of the generator's oscillation around an
//! equilibrium than the last iterate does.
//!
//! After each optimisation step, `shadow <- d * shadow + (1 - d) * variable` with
//! `d = min(decay, (1 + n) / (10 + n))`, `n` the updates done so far (TensorFlow's
//! `ExponentialMovingAverage` with `num_updates`): early on, when the weights move fast, the average
//! follows them closely. Every entry of the variable map under the prefix is averaged, BatchNorm
//! running statistics included, so the averaged network's normalisation matches its weights.

use anyhow::{bail, Context, Result};
use candle_core::{Tensor, Var};
use candle_nn::VarMap;

use crate::train::TrainingState;

/// Shadow copies of some variables of a [`VarMap`], averaged after each step.
pub struct Ema {
    decay: f64,
    updates: u64,
    entries: Vec<(String, Var, Tensor)>,
}

impl Ema {
    /// Averages every variable of `varmap` whose name starts with `prefix` (e.g. `"generator."`),
    /// starting from their current values. `decay` must lie in `[0, 1)`.
    pub fn new(varmap: &VarMap, prefix: &str, decay: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            bail!("EMA decay must lie in [0, 1), got {decay}");
        }
        let data = varmap.data().lock().expect("variable map lock poisoned");
        let mut entries = data
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, var)| Ok((name.clone(), var.clone(), var.as_tensor().detach().copy()?)))
            .collect::<Result<Vec<_>>>()?;
        if entries.is_empty() {
            bail!("no variables named '{prefix}*' to average");
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self { decay, updates: 0, entries })
    }

    /// The decay the next [`Ema::update`] uses.
    pub fn current_decay(&self) -> f64 {
        let n = self.updates as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    /// Folds the variables' current values into the average.
    pub fn update(&mut self) -> Result<()> {
        let d = self.current_decay();
        for (_, var, shadow) in &mut self.entries {
            // Detached, so the average never holds on to a computation graph.
            let v = var.as_tensor().detach();
            *shadow = (shadow.affine(d, 0.0)? + v.affine(1.0 - d, 0.0)?)?.detach();
        }
        self.updates += 1;
        Ok(())
    }

    /// The averaged values, by variable name.
    pub fn averages(&self) -> Vec<(String, Tensor)> {
        self.entries.iter().map(|(n, _, s)| (n.clone(), s.clone())).collect()
    }

    /// Exchanges the variables' values with the averages: call once to evaluate or save the
    /// averaged model, and again to go back to the raw weights and keep training.
    pub fn swap(&mut self) -> Result<()> {
        for (_, var, shadow) in &mut self.entries {
            let raw = var.as_tensor().detach().copy()?;
            var.set(shadow)?;
            *shadow = raw;
        }
        Ok(())
    }

    /// Stores the averages and the update count under `key`.
    pub fn save_state(&self, state: &mut TrainingState, key: &str) -> Result<()> {
        state.put(&format!("{key}.updates"), &self.updates)?;
        state.put_tensors(key, &self.averages())
    }

    /// Restores what [`Ema::save_state`] stored; the names and shapes must match this average's.
    pub fn load_state(&mut self, state: &TrainingState, key: &str) -> Result<()> {
        let stored = state.get_tensors(key)?;
        if stored.len() != self.entries.len() {
            bail!(
                "training state holds {} averaged variables under '{key}', the model has {}",
                stored.len(),
                self.entries.len()
            );
        }
        let dev = self.entries[0].1.device().clone();
        let mut shadows = Vec::with_capacity(stored.len());
        for ((name, t), (own, var, _)) in stored.iter().zip(&self.entries) {
            if name != own || t.dims() != var.dims() {
                bail!(
                    "training state's average '{name}' {:?} does not match variable '{own}' {:?}",
                    t.dims(),
                    var.dims()
                );
            }
            shadows.push(t.to_device(&dev)?.to_dtype(var.dtype())?);
        }
        for ((_, _, shadow), t) in self.entries.iter_mut().zip(shadows) {
            *shadow = t;
        }
        self.updates =
            state.get(&format!("{key}.updates")).with_context(|| format!("restoring the average '{key}'"))?;
        Ok(())
    }
}

/// Reads a decay from the command line: a number in `[0, 1)` (for clap's `value_parser`).
pub fn parse_decay(s: &str) -> std::result::Result<f64, String> {
    let d: f64 = s.parse().map_err(|e| format!("'{s}' is not a number: {e}"))?;
    if (0.0..1.0).contains(&d) {
        Ok(d)
    } else {
        Err(format!("an EMA decay must lie in [0, 1), got {d}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn model() -> (VarMap, Var) {
        let vm = VarMap::new();
        let w = vm.get((3,), "g.w", candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
        vm.get((2,), "d.w", candle_nn::Init::Const(5.0), DType::F32, &Device::Cpu).unwrap();
        let var = vm.data().lock().unwrap().get("g.w").unwrap().clone();
        assert_eq!(values(&w), [0.0; 3]);
        (vm, var)
    }

    #[test]
    fn follows_the_warm_up_schedule_and_swaps_both_ways() {
        let (vm, var) = model();
        let mut ema = Ema::new(&vm, "g.", 0.999).unwrap();
        assert_eq!(ema.averages().len(), 1, "only the prefix is averaged");
        // Step 1: w = 1, d = 1/10. Step 2: w = 2, d = 2/11.
        var.set(&Tensor::new(&[1f32, 1., 1.], &Device::Cpu).unwrap()).unwrap();
        ema.update().unwrap();
        var.set(&Tensor::new(&[2f32, 2., 2.], &Device::Cpu).unwrap()).unwrap();
        ema.update().unwrap();
        let e1 = 0.1 * 0.0 + 0.9 * 1.0;
        let e2 = (2.0 / 11.0) * e1 + (9.0 / 11.0) * 2.0;
        let avg = values(&ema.averages()[0].1);
        assert!(avg.iter().all(|a| (*a as f64 - e2).abs() < 1e-6), "{avg:?} vs {e2}");
        // Far into training the decay is the configured one.
        ema.updates = 1_000_000;
        assert_eq!(ema.current_decay(), 0.999);
        ema.swap().unwrap();
        assert_eq!(values(var.as_tensor()), avg);
        ema.swap().unwrap();
        assert_eq!(values(var.as_tensor()), [2.0; 3]);
        assert_eq!(values(&ema.averages()[0].1), avg);
    }

    #[test]
    fn state_round_trips_through_a_file_and_mismatches_are_refused() {
        let (vm, var) = model();
        let mut ema = Ema::new(&vm, "g.", 0.9).unwrap();
        var.set(&Tensor::new(&[3f32, 4., 5.], &Device::Cpu).unwrap()).unwrap();
        ema.update().unwrap();
        let mut st = TrainingState::new();
        ema.save_state(&mut st, "ema").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.safetensors");
        st.save(&path, "toy", 1).unwrap();
        let (st, _) = TrainingState::load(&path, &Device::Cpu).unwrap();
        let (vm2, _) = model();
        let mut back = Ema::new(&vm2, "g.", 0.9).unwrap();
        back.load_state(&st, "ema").unwrap();
        assert_eq!(values(&back.averages()[0].1), values(&ema.averages()[0].1));
        assert_eq!(back.current_decay(), ema.current_decay());
        let mut other = Ema::new(&vm2, "d.", 0.9).unwrap();
        let e = other.load_state(&st, "ema").unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
        assert!(Ema::new(&vm2, "g.", 1.0).is_err() && Ema::new(&vm2, "x.", 0.5).is_err());
        assert_eq!(parse_decay("0.999"), Ok(0.999));
        assert!(parse_decay("1").unwrap_err().contains("[0, 1)") && parse_decay("x").is_err());
    }
}
