//! A fully connected layer as one op: `y = x W^T + b`.
//!
//! Candle composes `x.matmul(w.t()) + b` from four differentiated nodes (transpose, matmul,
//! broadcast, add). Its backward then hands the weight a *transposed* gradient, which the
//! gradient store adds to a fresh zero tensor element by element in strided order (for a
//! 6272 x 1024 weight this alone cost about a fifth of an InfoGAN step), and it sums the bias
//! gradient over the batch with a scalar loop. Here the forward pass is one GEMM that starts from
//! the bias, and the backward pass is three GEMMs whose results are all contiguous:
//! `dx = dy W`, `dW = dy^T x`, `db = 1^T dy`.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use gemm::Parallelism;

use crate::util::contiguous;

fn parallelism() -> Parallelism {
    match candle_core::utils::get_num_threads() {
        n if n > 1 => Parallelism::Rayon(n),
        _ => Parallelism::None,
    }
}

/// `dst [m, n] = x [m, k] (row-major) * w [n, k]^T (row-major)`, plus `bias [n]` on every row
/// when given.
fn forward<T: candle_core::WithDType>(x: &[T], w: &[T], bias: Option<&[T]>, m: usize, n: usize, k: usize) -> Vec<T> {
    let mut dst = match bias {
        Some(b) => {
            let mut d = Vec::with_capacity(m * n);
            for _ in 0..m {
                d.extend_from_slice(b);
            }
            d
        }
        // An empty inner dimension: the product is zero.
        None if k == 0 => vec![T::zero(); m * n],
        // Not zeroed: with `read_dst` false the GEMM below writes every element without reading.
        None => Vec::with_capacity(m * n),
    };
    if m > 0 && n > 0 && k > 0 && T::DTYPE == DType::F32 && crate::sgemm::available() {
        let threads = candle_core::utils::get_num_threads();
        let xm = crate::sgemm::MatRef { ptr: x.as_ptr() as *const f32, rs: k as isize, cs: 1 };
        let wt = crate::sgemm::MatRef { ptr: w.as_ptr() as *const f32, rs: 1, cs: k as isize };
        // SAFETY: T is f32 (checked above); x is [m, k] row-major, w^T is read from w [n, k]
        // row-major, dst has capacity m * n (row stride n) and holds the bias rows when given;
        // without a bias every element is written (accumulate = false).
        unsafe { crate::sgemm::sgemm((m, n, k), dst.as_mut_ptr() as *mut f32, n, bias.is_some(), xm, wt, threads) };
    } else if m > 0 && n > 0 {
        // SAFETY: the pointers and strides describe the slices above: x is [m, k] row-major
        // (row stride k), w^T is read from w [n, k] row-major (column j of w^T is row j of w),
        // dst is [m, n] row-major; all three have exactly those sizes.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                bias.is_some(),
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                k as isize,
                1,
                T::one(),
                T::one(),
                false,
                false,
                false,
                parallelism(),
            )
        }
    }
    if dst.len() < m * n {
        // SAFETY: only the unzeroed case (no bias, k > 0) gets here, and there the GEMM
        // (read_dst = false) wrote all `m * n` elements; the capacity is `m * n`.
        unsafe { dst.set_len(m * n) };
    }
    dst
}

struct LinearOp {
    m: usize,
    n: usize,
    k: usize,
}

impl LinearOp {
    fn run(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, n, k) = (self.m, self.n, self.k);
        let out = match (x, w) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let bias = b.map(|(s, l)| contiguous::<f32>(s, l, "linear")).transpose()?;
                CpuStorage::F32(forward(contiguous(x, xl, "linear")?, contiguous(w, wl, "linear")?, bias, m, n, k))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let bias = b.map(|(s, l)| contiguous::<f64>(s, l, "linear")).transpose()?;
                CpuStorage::F64(forward(contiguous(x, xl, "linear")?, contiguous(w, wl, "linear")?, bias, m, n, k))
            }
            _ => bail!("linear supports f32 and f64 (input and weight of one dtype) only"),
        };
        Ok((out, Shape::from((m, n))))
    }

    /// `dx = dy W`, `dW = dy^T x`, and (with a bias) `db = 1^T dy`, all contiguous.
    /// `dx` is skipped (`None`) when `x` needs no gradient (data, or a detached batch), `dW` and
    /// `db` when `need_dw` is false (a weight held fixed, e.g. detached).
    #[allow(clippy::type_complexity)]
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
        bias: bool,
        need_dw: bool,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let needs_dx = x.track_op();
        let (x, w, grad) = (x.detach(), w.detach(), grad.detach().contiguous()?);
        let dx = if needs_dx { Some(crate::matmul(&grad, &w)?) } else { None };
        if !need_dw {
            return Ok((dx, None, None));
        }
        let dw = crate::matmul(&grad.t()?, &x)?;
        let db = if bias {
            let ones = Tensor::ones((1, self.m), grad.dtype(), grad.device())?;
            Some(crate::matmul(&ones, &grad)?.reshape(self.n)?)
        } else {
            None
        };
        Ok((dx, Some(dw), db))
    }
}

struct LinearNoBias(LinearOp);
struct LinearBias(LinearOp);

impl CustomOp2 for LinearNoBias {
    fn name(&self) -> &'static str {
        "zoo-linear"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.0.run(s1, l1, s2, l2, None)
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.0.grads(x, w, grad, false, w.track_op())?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for LinearBias {
    fn name(&self) -> &'static str {
        "zoo-linear-bias"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.0.run(s1, l1, s2, l2, Some((s3, l3)))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.0.grads(x, w, grad, true, w.track_op() || b.track_op())
    }
}

/// A fully connected layer, as PyTorch's `linear`: `x [.., K]` times `weight [N, K]` transposed,
/// plus an optional `bias [N]`, giving `[.., N]`.
///
/// On the CPU in f32 and f64 the forward pass is one GEMM and the backward three (input, weight
/// and bias gradients, all contiguous); elsewhere it composes Candle's `matmul` and
/// `broadcast_add`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (n, k) = weight.dims2()?;
    let dims = x.dims();
    if dims.is_empty() || dims[dims.len() - 1] != k {
        bail!("linear: input {:?} does not end in the weight's {k} input features (weight {:?})", dims, weight.dims());
    }
    if let Some(b) = bias {
        if b.dims() != [n] {
            bail!("linear: bias must be [{n}] for weight {:?}, got {:?}", weight.dims(), b.dims());
        }
    }
    let m = x.elem_count() / k.max(1);
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().unwrap() = n;
    let same_dtype = weight.dtype() == x.dtype() && bias.is_none_or(|b| b.dtype() == x.dtype());
    if !(x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && same_dtype) {
        let x2 = x.reshape((m, k))?;
        let y = x2.matmul(&weight.t()?)?;
        let y = match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        return y.reshape(out_dims);
    }
    let x2 = x.reshape((m, k))?.contiguous()?;
    let w = weight.contiguous()?;
    let op = LinearOp { m, n, k };
    let y = match bias {
        Some(b) => x2.apply_op3(&w, &b.contiguous()?, LinearBias(op))?,
        None => x2.apply_op2(&w, LinearNoBias(op))?,
    };
    y.reshape(out_dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{max_abs_diff as max_diff, test_rand as rand};
    use candle_core::{Device, Var};

    #[test]
    fn a_fixed_weight_gets_no_gradient_and_the_input_the_same_one() {
        let x = Var::from_tensor(&rand(&[6, 5], 1, DType::F32)).unwrap();
        let w = Var::from_tensor(&rand(&[3, 5], 2, DType::F32)).unwrap();
        let b = Var::from_tensor(&rand(&[3], 3, DType::F32)).unwrap();
        let up = rand(&[6, 3], 4, DType::F32);
        for bias in [false, true] {
            let run = |w: &Tensor, b: &Tensor| {
                let y = linear(x.as_tensor(), w, bias.then_some(b)).unwrap();
                y.mul(&up).unwrap().sum_all().unwrap().backward().unwrap()
            };
            let live = run(w.as_tensor(), b.as_tensor());
            let (wd, bd) = (w.as_tensor().detach(), b.as_tensor().detach());
            let fixed = run(&wd, &bd);
            let params = [w.as_tensor(), b.as_tensor(), &wd, &bd];
            crate::util::assert_fixed_pass(x.as_tensor(), &live, &fixed, params, &format!("bias {bias}"));
            assert!(live.get(w.as_tensor()).is_some());
        }
    }

    #[test]
    fn matches_candle_forward_and_backward() {
        for (xs, n, with_bias) in
            [(vec![5, 7], 3, true), (vec![2, 4, 6], 9, true), (vec![1, 3], 2, false), (vec![64, 33], 17, true)]
        {
            for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-4)] {
                let k = *xs.last().unwrap();
                let x = Var::from_tensor(&rand(&xs, 1, dtype)).unwrap();
                let w = Var::from_tensor(&rand(&[n, k], 2, dtype)).unwrap();
                let b = Var::from_tensor(&rand(&[n], 3, dtype)).unwrap();
                let bias = with_bias.then(|| b.as_tensor());
                let ours = linear(x.as_tensor(), w.as_tensor(), bias).unwrap();
                let mut reference = x.as_tensor().broadcast_matmul(&w.as_tensor().t().unwrap()).unwrap();
                if with_bias {
                    reference = reference.broadcast_add(b.as_tensor()).unwrap();
                }
                assert!(max_diff(&ours, &reference) < tol, "forward {xs:?} {n}");
                let up = rand(ours.dims(), 4, dtype);
                let g1 = ours.mul(&up).unwrap().sum_all().unwrap().backward().unwrap();
                let g2 = reference.mul(&up).unwrap().sum_all().unwrap().backward().unwrap();
                for (name, v) in [("x", &x), ("weight", &w), ("bias", &b)] {
                    match (g1.get(v.as_tensor()), g2.get(v.as_tensor())) {
                        (Some(a), Some(r)) => {
                            assert!(a.is_contiguous(), "gradient of {name} is not contiguous");
                            assert!(max_diff(a, r) < tol, "gradient of {name}: {xs:?} {n}");
                        }
                        (None, None) => assert!(!with_bias && name == "bias"),
                        _ => panic!("gradient of {name} present in one version only"),
                    }
                }
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let x = Var::from_tensor(&rand(&[3, 4], 5, DType::F64)).unwrap();
        let w = Var::from_tensor(&rand(&[2, 4], 6, DType::F64)).unwrap();
        let b = Var::from_tensor(&rand(&[2], 7, DType::F64)).unwrap();
        let loss = |x: &Tensor, w: &Tensor, b: &Tensor| -> f64 {
            linear(x, w, Some(b)).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
        };
        let grads = linear(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()))
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for which in 0..3 {
            let v = [&x, &w, &b][which];
            let analytic: Vec<f64> = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let base: Vec<f64> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            for i in 0..base.len() {
                let at = |delta: f64| {
                    let mut vals = base.clone();
                    vals[i] += delta;
                    let t = Tensor::from_vec(vals, v.dims(), &Device::Cpu).unwrap();
                    let mut args = [x.as_tensor().clone(), w.as_tensor().clone(), b.as_tensor().clone()];
                    args[which] = t;
                    loss(&args[0], &args[1], &args[2])
                };
                let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
                assert!(
                    (numeric - analytic[i]).abs() < 1e-6 * numeric.abs().max(1.0),
                    "{which}/{i}: {numeric} vs {}",
                    analytic[i]
                );
            }
        }
    }

    #[test]
    fn an_input_without_gradient_gets_none_and_the_weight_still_gets_its_own() {
        let x = rand(&[6, 4], 1, DType::F64); // data: not a variable
        let w = Var::from_tensor(&rand(&[3, 4], 2, DType::F64)).unwrap();
        let grads = linear(&x, w.as_tensor(), None).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_none());
        // d/dW sum(x W^T) = column sums of x, for every output row.
        let expected = x.sum_keepdim(0).unwrap().broadcast_as((3, 4)).unwrap();
        assert!(max_diff(grads.get(w.as_tensor()).unwrap(), &expected) < 1e-12);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = rand(&[2, 5], 1, DType::F32);
        let w = rand(&[3, 4], 2, DType::F32);
        assert!(linear(&x, &w, None).unwrap_err().to_string().contains("4 input features"));
        let w = rand(&[3, 5], 2, DType::F32);
        let b = rand(&[4], 3, DType::F32);
        assert!(linear(&x, &w, Some(&b)).unwrap_err().to_string().contains("bias must be [3]"));
    }
}
