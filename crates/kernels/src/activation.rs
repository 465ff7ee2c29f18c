//! ReLU and leaky ReLU as single ops with a one-pass backward.
//!
//! Candle differentiates `relu` by building a `x >= 0` mask, converting it to the float type and
//! multiplying (three full-size temporaries), and a leaky ReLU written as `max(x, a x)` costs two
//! graph nodes whose backward compares, converts and multiplies twice. Here each activation is
//! one node: the forward is one pass, the backward one pass over the input and the gradient.
//! The gradient at exactly 0 is 0 for ReLU and `slope` for the leaky ReLU (PyTorch's convention).

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use std::mem::MaybeUninit;

use crate::util::{contiguous, par_init};

/// Elements per parallel task.
const CHUNK: usize = 1 << 15;

/// `y = x` where `x > 0`, else `slope * x` (ReLU for slope 0).
#[derive(Debug, Clone, Copy)]
struct Leaky {
    slope: f64,
}

impl Leaky {
    fn forward<T: candle_core::WithDType + Send + Sync>(&self, x: &[T]) -> Vec<T> {
        let (zero, a) = (T::zero(), T::from_f64(self.slope));
        // SAFETY: `leaky_chunk` writes every element of its part (`x` is as long as the output).
        unsafe { par_init(x.len(), CHUNK, move |off, o| leaky_chunk(o, &x[off..off + o.len()], &x[off..], zero, a)) }
    }

    fn backward<T: candle_core::WithDType + Send + Sync>(&self, x: &[T], g: &[T]) -> Vec<T> {
        let (zero, a) = (T::zero(), T::from_f64(self.slope));
        assert_eq!(x.len(), g.len(), "leaky_relu: input and gradient lengths differ");
        // SAFETY: `leaky_chunk` writes every element of its part (`x` and `g` are as long as
        // the output).
        unsafe { par_init(x.len(), CHUNK, move |off, o| leaky_chunk(o, &x[off..off + o.len()], &g[off..], zero, a)) }
    }
}

/// `o = v` where `x > 0`, else `a * v`, element by element. The constants come by value and the
/// loop is a select, so the compiler vectorises it (captured by reference in the parallel
/// closure they were reloaded every element and the loop stayed scalar with a branch).
/// Writes all of `o`; `x` and `v` must be at least as long.
#[inline(always)]
fn leaky_chunk<T: candle_core::WithDType>(o: &mut [MaybeUninit<T>], x: &[T], v: &[T], zero: T, a: T) {
    let n = o.len();
    let (x, v) = (&x[..n], &v[..n]);
    for i in 0..n {
        let (xi, vi) = (x[i], v[i]);
        let scaled = a * vi;
        o[i].write(if xi > zero { vi } else { scaled });
    }
}

impl CustomOp1 for Leaky {
    fn name(&self) -> &'static str {
        "zoo-leaky-relu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(self.forward(contiguous::<f32>(s, l, "leaky_relu")?)),
            CpuStorage::F64(_) => CpuStorage::F64(self.forward(contiguous::<f64>(s, l, "leaky_relu")?)),
            _ => bail!("leaky_relu supports f32 and f64 only"),
        };
        Ok((out, l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &LeakyGrad(*self))?))
    }
}

struct LeakyGrad(Leaky);

impl CustomOp2 for LeakyGrad {
    fn name(&self) -> &'static str {
        "zoo-leaky-relu-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(
                self.0.backward(contiguous::<f32>(s1, l1, "leaky_relu")?, contiguous::<f32>(s2, l2, "leaky_relu")?),
            ),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(
                self.0.backward(contiguous::<f64>(s1, l1, "leaky_relu")?, contiguous::<f64>(s2, l2, "leaky_relu")?),
            ),
            _ => bail!("leaky_relu's gradient supports f32 and f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
}

fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// `max(x, 0)`, one op forward and backward on the CPU (f32, f64); Candle's `relu` elsewhere.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if !fused(x) {
        return x.relu();
    }
    x.contiguous()?.apply_op1(Leaky { slope: 0.0 })
}

/// `x` where `x > 0`, else `slope * x`, for `slope` in `[0, 1]`; one op forward and backward on
/// the CPU (f32, f64), `max(x, slope x)` from Candle's ops elsewhere.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&slope) {
        bail!("leaky_relu: the negative slope must be in [0, 1], got {slope}");
    }
    if !fused(x) {
        return x.maximum(&(x * slope)?);
    }
    x.contiguous()?.apply_op1(Leaky { slope })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn values() -> Tensor {
        // Both signs, an exact zero, and a non-contiguous view.
        let v: Vec<f64> = (0..24).map(|i| (i as f64 - 11.0) * 0.37).collect();
        Tensor::from_vec(v, (4, 6), &Device::Cpu).unwrap().t().unwrap()
    }

    #[test]
    fn forward_matches_candle_and_the_gradient_is_the_slope_below_zero_and_one_above() {
        for slope in [0.0, 0.2] {
            let x = values();
            let ours = leaky_relu(&x, slope).unwrap();
            let theirs = x.maximum(&(&x * slope).unwrap()).unwrap();
            assert_eq!(ours.to_vec2::<f64>().unwrap(), theirs.to_vec2::<f64>().unwrap());
            let var = Var::from_tensor(&x.contiguous().unwrap()).unwrap();
            let probe = Tensor::arange(0f64, 24.0, &Device::Cpu).unwrap().reshape((6, 4)).unwrap();
            let g = (leaky_relu(&var, slope).unwrap() * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let g = g.get(&var).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let (xs, ps) = (
                var.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
                probe.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            );
            for i in 0..xs.len() {
                let expected = if xs[i] > 0.0 { ps[i] } else { slope * ps[i] };
                assert_eq!(g[i], expected, "slope {slope}, x = {}", xs[i]);
            }
        }
        assert_eq!(
            relu(&values()).unwrap().to_vec2::<f64>().unwrap(),
            values().relu().unwrap().to_vec2::<f64>().unwrap()
        );
        assert!(leaky_relu(&values(), 1.5).is_err());
    }

    #[test]
    fn f32_and_large_inputs_are_handled_in_chunks() {
        let n = 3 * CHUNK + 17;
        let v: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { -(i as f32) } else { i as f32 }).collect();
        let x = Tensor::from_vec(v.clone(), n, &Device::Cpu).unwrap();
        let y = leaky_relu(&x, 0.5).unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in y.iter().zip(&v) {
            assert_eq!(*a, if *b > 0.0 { *b } else { 0.5 * b });
        }
    }
}
