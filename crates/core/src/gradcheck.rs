//! Finite-difference gradient checks and gradient-coverage assertions, for tests of layers,
//! losses and whole models (every family's "each trainable variable gets a gradient" test).

use candle_core::{backprop::GradStore, DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;

use crate::ZooRng;

/// A standard-normal f64 tensor on the CPU, deterministic in `seed`.
pub fn randn64(shape: &[usize], seed: u64) -> Tensor {
    ZooRng::new(seed).normal(shape, 0.0, 1.0, DType::F64, &Device::Cpu).expect("host tensor creation cannot fail")
}

/// Compares the autograd gradient of the scalar `f(x)` with central finite differences in f64.
///
/// Panics (this is a test helper) with the index, both values and the relative error when they
/// disagree by more than `1e-5` relative (with an absolute floor of `1e-7`).
pub fn check_gradient<F>(x: &Tensor, f: F)
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let var = Var::from_tensor(&x.to_dtype(DType::F64).unwrap()).unwrap();
    let y = f(var.as_tensor()).unwrap();
    assert_eq!(y.elem_count(), 1, "check_gradient needs a scalar function");
    let grads = y.backward().unwrap();
    let analytic = grads
        .get(var.as_tensor())
        .expect("no gradient reached the input")
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let base = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let shape = var.as_tensor().shape().clone();
    let h = 1e-6;
    let eval = |vals: &[f64]| -> f64 {
        let t = Tensor::from_vec(vals.to_vec(), shape.clone(), &Device::Cpu).unwrap();
        f(&t).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()[0]
    };
    let mut vals = base.clone();
    for i in 0..base.len() {
        vals[i] = base[i] + h;
        let up = eval(&vals);
        vals[i] = base[i] - h;
        let down = eval(&vals);
        vals[i] = base[i];
        let numeric = (up - down) / (2.0 * h);
        let err = (numeric - analytic[i]).abs() / numeric.abs().max(analytic[i].abs()).max(1e-2);
        assert!(
            err < 1e-5 || (numeric - analytic[i]).abs() < 1e-7,
            "gradient mismatch at flat index {i}: autograd {} vs finite difference {numeric} (rel err {err:e})",
            analytic[i]
        );
    }
}

/// Names of the trainable variables of `varmap`: everything except BatchNorm running statistics.
pub fn trainable_names(varmap: &VarMap) -> Vec<String> {
    trainable_names_locked(&varmap.data().lock().expect("var map lock"))
}

/// Returns the trainable variables of `varmap` that got no gradient or an all-zero gradient.
pub fn vars_without_gradient(varmap: &VarMap, grads: &GradStore) -> Vec<String> {
    let data = varmap.data().lock().expect("var map lock");
    let mut missing = Vec::new();
    for name in trainable_names_locked(&data) {
        let var = &data[&name];
        let ok = grads
            .get(var.as_tensor())
            .map(|g| {
                g.to_dtype(DType::F64)
                    .and_then(|g| g.abs()?.sum_all()?.to_scalar::<f64>())
                    .map(|s| s > 0.0 && s.is_finite())
                    .unwrap_or(false)
            })
            .unwrap_or(false);
        if !ok {
            missing.push(name);
        }
    }
    missing
}

/// Checks a pass through a network held fixed (built with [`crate::nn::fixed_var_builder`])
/// against the same loss through the trainable network: returns the trainable variables under
/// `trained` (e.g. `"generator."`) whose gradients differ between `live` and `fixed` (bit for
/// bit, or missing from either), and the other trainable variables that got a gradient in
/// `fixed` or none in `live`. Empty when the fixed pass is right.
pub fn fixed_pass_mismatches(varmap: &VarMap, live: &GradStore, fixed: &GradStore, trained: &str) -> Vec<String> {
    let data = varmap.data().lock().expect("var map lock");
    let values = |g: Option<&Tensor>| {
        g.and_then(|g| g.flatten_all().and_then(|g| g.to_dtype(DType::F64)?.to_vec1::<f64>()).ok())
    };
    trainable_names_locked(&data)
        .into_iter()
        .filter(|name| {
            let t = data[name].as_tensor();
            let (a, b) = (live.get(t), fixed.get(t));
            if name.starts_with(trained) {
                let (a, b) = (values(a), values(b));
                a.is_none() || a != b
            } else {
                a.is_none() || b.is_some()
            }
        })
        .collect()
}

fn trainable_names_locked(data: &std::collections::HashMap<String, Var>) -> Vec<String> {
    let mut names: Vec<String> = data.keys().filter(|n| crate::init::is_trainable_name(n)).cloned().collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_pass_mismatches_finds_a_fixed_weight_that_got_a_gradient_and_a_changed_one() {
        let vm = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let g = vb.get_with_hints(3, "g.w", candle_nn::init::Init::Const(0.5)).unwrap();
        let d = vb.get_with_hints(3, "d.w", candle_nn::init::Init::Const(2.0)).unwrap();
        let d_fixed = crate::nn::fixed_var_builder(&vm, "d", DType::F32, &Device::Cpu).get(3, "w").unwrap();
        let loss =
            |d: &Tensor, k: f64| (&g * d).unwrap().affine(k, 0.0).unwrap().sum_all().unwrap().backward().unwrap();
        let live = loss(&d, 1.0);
        assert!(fixed_pass_mismatches(&vm, &live, &loss(&d_fixed, 1.0), "g.").is_empty());
        assert_eq!(fixed_pass_mismatches(&vm, &live, &loss(&d, 1.0), "g."), vec!["d.w".to_string()]);
        assert_eq!(fixed_pass_mismatches(&vm, &live, &loss(&d_fixed, 2.0), "g."), vec!["g.w".to_string()]);
    }
}
