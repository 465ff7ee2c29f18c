//! Optimisers whose state can be saved and restored, and gradient clipping.
//!
//! Candle's optimisers keep their moments private, so a resumed run cannot continue the same
//! trajectory. [`Adam`] (with L2 or decoupled AdamW weight decay) and [`Sgd`] (momentum, Nesterov,
//! weight decay) follow PyTorch's update rules exactly and expose their state through
//! [`Optimizer::state`] / [`Optimizer::load_state`]. Each optimiser owns a named list of variables,
//! so a GAN uses one for the generator and one for the discriminator ([`named_vars`]).

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::{backprop::GradStore, DType, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::init::is_trainable_name;
use zoo_kernels::{adam_in_place_supported, adam_step_in_place, AdamStep};

/// The trainable variables of `varmap` whose names start with `prefix` (all of them for `""`),
/// sorted by name. BatchNorm running statistics are excluded.
pub fn named_vars(varmap: &VarMap, prefix: &str) -> Vec<(String, Var)> {
    let data = varmap.data().lock().expect("variable map lock poisoned");
    let mut v: Vec<(String, Var)> = data
        .iter()
        .filter(|(k, _)| k.starts_with(prefix) && is_trainable_name(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// An optimiser's saveable state: scalars as JSON, per-variable buffers as named tensors.
#[derive(Debug, Clone)]
pub struct OptimizerState {
    /// Step count, learning rate and hyper-parameters.
    pub meta: serde_json::Value,
    /// Buffers keyed `"<buffer>.<variable name>"` (e.g. `"m.fc.weight"`).
    pub tensors: HashMap<String, Tensor>,
}

/// A first-order optimiser over a fixed list of named variables.
pub trait Optimizer {
    /// Applies one update from the gradients in `grads` (variables without a gradient are skipped).
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    /// The current learning rate.
    fn learning_rate(&self) -> f64;
    /// Sets the learning rate (schedules call this before each step).
    fn set_learning_rate(&mut self, lr: f64);
    /// Number of updates applied so far.
    fn steps(&self) -> u64;
    /// The variables this optimiser updates.
    fn vars(&self) -> &[(String, Var)];
    /// Everything needed to continue the same trajectory.
    fn state(&self) -> Result<OptimizerState>;
    /// Restores [`Optimizer::state`]'s output; every buffer must be present with the right shape.
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;
}

/// Hyper-parameters of [`Adam`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator term.
    pub eps: f64,
    /// Weight decay (0 for GAN recipes).
    pub weight_decay: f64,
    /// `true`: AdamW's decoupled decay `theta -= lr * wd * theta`; `false`: L2 added to the gradient.
    pub decoupled: bool,
}

impl AdamConfig {
    /// Adam with PyTorch's defaults and the given learning rate (betas 0.9/0.999, eps 1e-8, no decay).
    pub fn new(lr: f64) -> Self {
        Self { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false }
    }
    /// Sets the betas (e.g. 0.5/0.999 for DCGAN-style GANs).
    pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.beta1 = beta1;
        self.beta2 = beta2;
        self
    }
    /// AdamW with decoupled weight decay.
    pub fn adamw(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self.decoupled = true;
        self
    }
}

/// An optimiser's learning rate must be a finite number above 0.
fn check_rate(optimiser: &str, lr: f64) -> Result<()> {
    anyhow::ensure!(lr.is_finite() && lr > 0.0, "{optimiser}'s learning rate must be a number above 0, got {lr}");
    Ok(())
}

/// Adam (Kingma & Ba 2015) / AdamW (Loshchilov & Hutter 2019) with bias correction.
#[derive(Debug)]
pub struct Adam {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: u64,
    cfg: AdamConfig,
    in_place: bool,
}

fn zeros_like_f32(var: &Var) -> Result<Tensor> {
    Ok(Tensor::zeros(var.shape(), DType::F32, var.device())?)
}

impl Adam {
    /// An Adam optimiser over `vars` (see [`named_vars`]).
    /// Refuses a learning rate that is not a finite number above 0, betas outside `[0, 1)` and
    /// an `eps` that is not above 0.
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamConfig) -> Result<Self> {
        check_rate("Adam", cfg.lr)?;
        anyhow::ensure!(
            (0.0..1.0).contains(&cfg.beta1) && (0.0..1.0).contains(&cfg.beta2),
            "Adam's betas must lie in [0, 1), got {} and {}",
            cfg.beta1,
            cfg.beta2
        );
        anyhow::ensure!(cfg.eps > 0.0, "Adam's eps must be above 0, got {}", cfg.eps);
        let m = vars.iter().map(|(_, v)| zeros_like_f32(v)).collect::<Result<_>>()?;
        let v = vars.iter().map(|(_, v)| zeros_like_f32(v)).collect::<Result<_>>()?;
        Ok(Self { vars, m, v, t: 0, cfg, in_place: true })
    }

    /// Turns the in-place CPU update (zoo-kernels) on or off; on by default. Off, every step is
    /// computed with Candle's element-wise ops (the same arithmetic, more memory traffic).
    pub fn with_in_place(mut self, on: bool) -> Self {
        self.in_place = on;
        self
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamConfig {
        &self.cfg
    }
}

impl Optimizer for Adam {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.t += 1;
        let c = self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2 = 1.0 - c.beta2.powi(self.t as i32);
        let fused = AdamStep {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            bias_correction1: bc1,
            bias_correction2: bc2,
            decay: if c.decoupled { 1.0 - c.lr * c.weight_decay } else { 1.0 },
        };
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let (theta, m, v) = (var.as_tensor(), &self.m[i], &self.v[i]);
            if self.in_place && (c.weight_decay == 0.0 || c.decoupled) && adam_in_place_supported(theta, m, v, g) {
                adam_step_in_place(theta, m, v, g, &fused)?;
                continue;
            }
            let dtype = var.dtype();
            let theta = var.as_tensor().to_dtype(DType::F32)?.detach();
            let mut g = g.to_dtype(DType::F32)?.detach();
            if c.weight_decay != 0.0 && !c.decoupled {
                g = (g + (&theta * c.weight_decay)?)?;
            }
            // Detached: the moments must not keep the step's graph (and so every earlier one) alive.
            let m = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?.detach();
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?.detach();
            let denom = ((&v / bc2)?.sqrt()? + c.eps)?;
            let update = ((&m / bc1)?.div(&denom)? * c.lr)?;
            let mut next =
                if c.weight_decay != 0.0 && c.decoupled { (&theta * (1.0 - c.lr * c.weight_decay))? } else { theta };
            next = next.sub(&update)?;
            var.set(&next.to_dtype(dtype)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
    fn learning_rate(&self) -> f64 {
        self.cfg.lr
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }
    fn steps(&self) -> u64 {
        self.t
    }
    fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }
    fn state(&self) -> Result<OptimizerState> {
        let mut tensors = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            // Copies: the moments are updated in place by later steps.
            tensors.insert(format!("m.{name}"), self.m[i].copy()?);
            tensors.insert(format!("v.{name}"), self.v[i].copy()?);
        }
        Ok(OptimizerState { meta: serde_json::json!({"kind": "adam", "t": self.t, "config": self.cfg}), tensors })
    }
    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        if state.meta.get("kind").and_then(|k| k.as_str()) != Some("adam") {
            bail!("optimiser state is not an Adam state: {}", state.meta);
        }
        self.t = state.meta["t"].as_u64().context("Adam state lacks the step count 't'")?;
        self.cfg = serde_json::from_value(state.meta["config"].clone()).context("bad Adam config in state")?;
        for (i, (name, var)) in self.vars.iter().enumerate() {
            self.m[i] = take_buffer(state, "m", name, var)?;
            self.v[i] = take_buffer(state, "v", name, var)?;
        }
        Ok(())
    }
}

fn take_buffer(state: &OptimizerState, buffer: &str, name: &str, var: &Var) -> Result<Tensor> {
    let key = format!("{buffer}.{name}");
    let t = state.tensors.get(&key).with_context(|| format!("optimiser state lacks buffer '{key}'"))?;
    if t.dims() != var.dims() {
        bail!("optimiser buffer '{key}' has shape {:?}, variable has {:?}", t.dims(), var.dims());
    }
    // A private copy: the moments are updated in place.
    Ok(t.to_device(var.device())?.to_dtype(DType::F32)?.copy()?)
}

/// Hyper-parameters of [`Sgd`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum (0 for plain SGD).
    pub momentum: f64,
    /// Dampening of the momentum buffer's gradient term.
    pub dampening: f64,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl SgdConfig {
    /// SGD with momentum and no decay (DANN uses momentum 0.9).
    pub fn new(lr: f64, momentum: f64) -> Self {
        Self { lr, momentum, dampening: 0.0, weight_decay: 0.0, nesterov: false }
    }
}

/// Stochastic gradient descent with momentum, as PyTorch's `torch.optim.SGD`.
#[derive(Debug)]
pub struct Sgd {
    vars: Vec<(String, Var)>,
    buf: Vec<Option<Tensor>>,
    t: u64,
    cfg: SgdConfig,
}

impl Sgd {
    /// An SGD optimiser over `vars`.
    /// Refuses a learning rate that is not a finite number above 0 and a momentum outside
    /// `[0, 1)`.
    pub fn new(vars: Vec<(String, Var)>, cfg: SgdConfig) -> Result<Self> {
        check_rate("SGD", cfg.lr)?;
        anyhow::ensure!((0.0..1.0).contains(&cfg.momentum), "SGD's momentum must lie in [0, 1), got {}", cfg.momentum);
        let buf = vec![None; vars.len()];
        Ok(Self { vars, buf, t: 0, cfg })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.t += 1;
        let c = self.cfg;
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let dtype = var.dtype();
            let theta = var.as_tensor().to_dtype(DType::F32)?.detach();
            let mut g = g.to_dtype(DType::F32)?;
            if c.weight_decay != 0.0 {
                g = (g + (&theta * c.weight_decay)?)?;
            }
            if c.momentum != 0.0 {
                let b = match &self.buf[i] {
                    None => g.clone(),
                    Some(b) => ((b * c.momentum)? + (&g * (1.0 - c.dampening))?)?,
                }
                .detach();
                g = if c.nesterov { (g + (&b * c.momentum)?)? } else { b.clone() };
                self.buf[i] = Some(b);
            }
            var.set(&theta.sub(&(g * c.lr)?)?.to_dtype(dtype)?)?;
        }
        Ok(())
    }
    fn learning_rate(&self) -> f64 {
        self.cfg.lr
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }
    fn steps(&self) -> u64 {
        self.t
    }
    fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }
    fn state(&self) -> Result<OptimizerState> {
        let mut tensors = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            if let Some(b) = &self.buf[i] {
                tensors.insert(format!("momentum.{name}"), b.clone());
            }
        }
        Ok(OptimizerState { meta: serde_json::json!({"kind": "sgd", "t": self.t, "config": self.cfg}), tensors })
    }
    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        if state.meta.get("kind").and_then(|k| k.as_str()) != Some("sgd") {
            bail!("optimiser state is not an SGD state: {}", state.meta);
        }
        self.t = state.meta["t"].as_u64().context("SGD state lacks the step count 't'")?;
        self.cfg = serde_json::from_value(state.meta["config"].clone()).context("bad SGD config in state")?;
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let key = format!("momentum.{name}");
            self.buf[i] =
                if state.tensors.contains_key(&key) { Some(take_buffer(state, "momentum", name, var)?) } else { None };
        }
        Ok(())
    }
}

/// Scales the gradients of `vars` so that their global L2 norm is at most `max_norm` (as
/// `torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[(String, Var)], max_norm: f64) -> Result<f64> {
    let mut total = 0.0f64;
    for (_, var) in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            total += g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
        }
    }
    let norm = total.sqrt();
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for (_, var) in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let scaled = (g * scale)?;
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn quadratic_step(opt: &mut dyn Optimizer, x: &Var) {
        // loss = sum((x - 3)^2)
        let loss = x.as_tensor().affine(1.0, -3.0).unwrap().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&grads).unwrap();
    }

    #[test]
    fn adam_matches_hand_computed_first_steps_and_converges() {
        let x = Var::new(&[0.0f32, 1.0], &Device::Cpu).unwrap();
        let mut opt = Adam::new(vec![("x".into(), x.clone())], AdamConfig::new(0.1)).unwrap();
        quadratic_step(&mut opt, &x);
        // First Adam step moves each coordinate by lr * sign(g) (up to eps).
        let v = x.as_tensor().to_vec1::<f32>().unwrap();
        assert!((v[0] - 0.1).abs() < 1e-6 && (v[1] - 1.1).abs() < 1e-6, "{v:?}");
        for _ in 0..500 {
            quadratic_step(&mut opt, &x);
        }
        let v = x.as_tensor().to_vec1::<f32>().unwrap();
        assert!((v[0] - 3.0).abs() < 1e-2 && (v[1] - 3.0).abs() < 1e-2, "{v:?}");
    }

    #[test]
    fn in_place_adam_equals_the_element_wise_formulation() {
        for cfg in [AdamConfig::new(0.01).betas(0.5, 0.999), AdamConfig::new(0.003).adamw(0.1)] {
            let init: Vec<f32> = (0..40_000).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 250.0).collect();
            let a = Var::from_vec(init.clone(), (200, 200), &Device::Cpu).unwrap();
            let b = Var::from_vec(init, (200, 200), &Device::Cpu).unwrap();
            let mut fast = Adam::new(vec![("w".into(), a.clone())], cfg).unwrap();
            let mut slow = Adam::new(vec![("w".into(), b.clone())], cfg).unwrap().with_in_place(false);
            for _ in 0..5 {
                // loss = sum(sin(w) * w): a gradient that differs per element and changes each step.
                for (opt, var) in [(&mut fast, &a), (&mut slow, &b)] {
                    let w = var.as_tensor();
                    let loss = (w.sin().unwrap() * w).unwrap().sum_all().unwrap();
                    opt.step(&loss.backward().unwrap()).unwrap();
                }
            }
            let flat = |v: &Var| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(flat(&a), flat(&b), "{cfg:?}");
            // A saved state is a snapshot: later in-place steps do not change it.
            let state = fast.state().unwrap();
            let before = state.tensors["m.w"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let loss = a.as_tensor().sqr().unwrap().sum_all().unwrap();
            fast.step(&loss.backward().unwrap()).unwrap();
            assert_eq!(before, state.tensors["m.w"].flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
    }

    #[test]
    fn sgd_momentum_matches_torch_rule() {
        let x = Var::new(&[0.0f64], &Device::Cpu).unwrap();
        let mut opt = Sgd::new(vec![("x".into(), x.clone())], SgdConfig::new(0.1, 0.9)).unwrap();
        // g1 = -6 -> buf = -6 -> x = 0.6; g2 = 2(0.6-3) = -4.8 -> buf = 0.9*-6 - 4.8 = -10.2 -> x = 1.62
        quadratic_step(&mut opt, &x);
        quadratic_step(&mut opt, &x);
        let v = x.as_tensor().to_vec1::<f64>().unwrap()[0];
        assert!((v - 1.62).abs() < 1e-6, "{v}");
    }

    #[test]
    fn state_round_trip_continues_identically() {
        for kind in ["adam", "adamw", "sgd"] {
            let make = |x: &Var| -> Box<dyn Optimizer> {
                let vars = vec![("x".to_string(), x.clone())];
                match kind {
                    "adam" => Box::new(Adam::new(vars, AdamConfig::new(0.05).betas(0.5, 0.999)).unwrap()),
                    "adamw" => Box::new(Adam::new(vars, AdamConfig::new(0.05).adamw(0.1)).unwrap()),
                    _ => Box::new(
                        Sgd::new(vars, SgdConfig { nesterov: true, weight_decay: 0.01, ..SgdConfig::new(0.05, 0.9) })
                            .unwrap(),
                    ),
                }
            };
            let a = Var::new(&[0.5f32, -1.0, 2.0], &Device::Cpu).unwrap();
            let mut oa = make(&a);
            for _ in 0..3 {
                quadratic_step(oa.as_mut(), &a);
            }
            let saved = oa.state().unwrap();
            let b = Var::from_tensor(&a.as_tensor().copy().unwrap()).unwrap();
            let mut ob = make(&b);
            ob.load_state(&saved).unwrap();
            for _ in 0..3 {
                quadratic_step(oa.as_mut(), &a);
                quadratic_step(ob.as_mut(), &b);
            }
            assert_eq!(a.as_tensor().to_vec1::<f32>().unwrap(), b.as_tensor().to_vec1::<f32>().unwrap(), "{kind}");
            assert_eq!(ob.steps(), 6);
            // Buffers carry no autograd history (otherwise every step's graph stays alive).
            for (k, t) in oa.state().unwrap().tensors {
                assert!(!t.track_op(), "{kind}: buffer {k} keeps a graph");
            }
        }
        let x = Var::new(&[0.0f32], &Device::Cpu).unwrap();
        let mut sgd = Sgd::new(vec![("x".into(), x.clone())], SgdConfig::new(0.1, 0.9)).unwrap();
        let adam_state = Adam::new(vec![("x".into(), x)], AdamConfig::new(0.1)).unwrap().state().unwrap();
        assert!(sgd.load_state(&adam_state).unwrap_err().to_string().contains("not an SGD state"));
    }

    #[test]
    fn per_sub_network_optimisers_touch_only_their_own_variables() {
        let vm = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let g = candle_nn::linear(3, 3, vb.pp("generator.fc")).unwrap();
        let d = candle_nn::linear(3, 1, vb.pp("discriminator.fc")).unwrap();
        let gen_vars = named_vars(&vm, "generator.");
        let names: Vec<&str> = gen_vars.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["generator.fc.bias", "generator.fc.weight"]);
        let mut opt_d = Adam::new(named_vars(&vm, "discriminator."), AdamConfig::new(0.1)).unwrap();
        let before_g = g.weight().to_vec2::<f32>().unwrap();
        let before_d = d.weight().to_vec2::<f32>().unwrap();
        let x = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
        use candle_core::Module;
        let loss = d.forward(&g.forward(&x).unwrap()).unwrap().sum_all().unwrap();
        opt_d.step(&loss.backward().unwrap()).unwrap();
        assert_eq!(g.weight().to_vec2::<f32>().unwrap(), before_g, "the discriminator's optimiser moved G");
        assert_ne!(d.weight().to_vec2::<f32>().unwrap(), before_d);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let a = Var::new(&[3.0f32], &Device::Cpu).unwrap();
        let b = Var::new(&[4.0f32], &Device::Cpu).unwrap();
        let loss = (a.as_tensor().sqr().unwrap() * 0.5)
            .unwrap()
            .add(&(b.as_tensor().sqr().unwrap() * 0.5).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let mut grads = loss.backward().unwrap();
        let vars = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let norm = clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        let ga = grads.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0];
        let gb = grads.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0];
        assert!(((ga * ga + gb * gb).sqrt() - 1.0).abs() < 1e-5 && (ga / gb - 0.75).abs() < 1e-5);
    }

    #[test]
    fn bad_hyper_parameters_are_refused() {
        let vars = || vec![("w".to_string(), Var::zeros(3, DType::F32, &Device::Cpu).unwrap())];
        for lr in [0.0, -1e-3, f64::NAN, f64::INFINITY] {
            let e = Adam::new(vars(), AdamConfig::new(lr)).unwrap_err().to_string();
            assert!(e.contains("learning rate"), "{e}");
            let e = Sgd::new(vars(), SgdConfig::new(lr, 0.9)).unwrap_err().to_string();
            assert!(e.contains("learning rate"), "{e}");
        }
        let e = Adam::new(vars(), AdamConfig::new(1e-3).betas(1.0, 0.999)).unwrap_err().to_string();
        assert!(e.contains("betas"), "{e}");
        let e = Sgd::new(vars(), SgdConfig::new(1e-2, 1.5)).unwrap_err().to_string();
        assert!(e.contains("momentum"), "{e}");
        assert!(Adam::new(vars(), AdamConfig::new(2e-4).betas(0.5, 0.999)).is_ok());
        assert!(Sgd::new(vars(), SgdConfig::new(1e-2, 0.0)).is_ok());
    }
}
