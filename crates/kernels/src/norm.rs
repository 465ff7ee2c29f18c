//! Batch normalisation in training mode, with a fused forward and a fused backward.
//!
//! Candle's `BatchNorm::forward_train` transposes the input to channels-first, copies it, and
//! builds the output from about ten full-size temporaries (subtract the mean, square, divide,
//! multiply, add, transpose back), each differentiated on its own. Here the statistics are one
//! pass over the input, the output one more, and the backward two (the per-channel sums of the
//! output gradient and of the gradient times the input, then the input gradient), all in the
//! input's own `[B, C, ...]` layout.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use std::mem::MaybeUninit;

use crate::util::{contiguous, par_init};

/// The float types the kernels run on.
trait Float: candle_core::WithDType + Send + Sync {
    fn of(v: f64) -> Self;
    fn f(self) -> f64;
}

impl Float for f32 {
    #[inline]
    fn of(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn f(self) -> f64 {
        self as f64
    }
}

impl Float for f64 {
    #[inline]
    fn of(v: f64) -> Self {
        v
    }
    #[inline]
    fn f(self) -> f64 {
        self
    }
}

/// `[B, C, S]`: batch, channels, and the product of the remaining (spatial) dimensions.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    c: usize,
    s: usize,
}

impl Dims {
    fn count(&self) -> f64 {
        (self.b * self.s) as f64
    }

    /// Per channel, `sum_i u_i` and `sum_i u_i v_i` over batch and space, accumulated in f64.
    fn sums<T: Float>(&self, u: &[T], v: &[T]) -> (Vec<f64>, Vec<f64>) {
        let Dims { b, c, s } = *self;
        if s == 1 {
            // [B, C]: each task takes a block of channels and walks the rows (contiguous over
            // channels) in order, so every channel's sum runs in the same order at any thread
            // count.
            const BLOCK: usize = 256;
            let (mut s1, mut s2) = (vec![0.0f64; c], vec![0.0f64; c]);
            s1.par_chunks_mut(BLOCK).zip(s2.par_chunks_mut(BLOCK)).enumerate().for_each(|(k, (a1, a2))| {
                let (j0, len) = (k * BLOCK, a1.len());
                for (ur, vr) in u.chunks(c).zip(v.chunks(c)).take(b) {
                    for ((p1, p2), (x, y)) in
                        a1.iter_mut().zip(a2.iter_mut()).zip(ur[j0..j0 + len].iter().zip(&vr[j0..j0 + len]))
                    {
                        let x = x.f();
                        *p1 += x;
                        *p2 += x * y.f();
                    }
                }
            });
            return (s1, s2);
        }
        (0..c)
            .into_par_iter()
            .map(|j| {
                let (mut a1, mut a2) = (0.0f64, 0.0f64);
                for i in 0..b {
                    let at = (i * c + j) * s;
                    let (mut p1, mut p2) = (0.0f64, 0.0f64);
                    for (x, y) in u[at..at + s].iter().zip(&v[at..at + s]) {
                        let x = x.f();
                        p1 += x;
                        p2 += x * y.f();
                    }
                    a1 += p1;
                    a2 += p2;
                }
                (a1, a2)
            })
            .unzip()
    }

    /// `out = k1[c] * u + k2[c] * v + k3[c]` element-wise (`v` optional), in parallel over
    /// batch rows.
    /// `spare` extra elements of capacity are reserved for the caller to append.
    fn affine<T: Float>(&self, u: &[T], v: Option<&[T]>, k: [&[f64]; 3], spare: usize) -> Vec<T> {
        let [k1, k2, k3] = k;
        let Dims { c, s, .. } = *self;
        let (k1, k2, k3): (Vec<T>, Vec<T>, Vec<T>) = (
            k1.iter().map(|&k| T::of(k)).collect(),
            k2.iter().map(|&k| T::of(k)).collect(),
            k3.iter().map(|&k| T::of(k)).collect(),
        );
        let mut out = Vec::with_capacity(u.len() + spare);
        out.resize(u.len(), T::zero());
        let row = c * s;
        out.par_chunks_mut(row).enumerate().for_each(|(i, o)| {
            let ur = &u[i * row..(i + 1) * row];
            for j in 0..c {
                let range = j * s..(j + 1) * s;
                let (a, bb, d) = (k1[j], k2[j], k3[j]);
                match v {
                    Some(v) => {
                        let vr = &v[i * row..(i + 1) * row];
                        for ((o, &x), &y) in o[range.clone()].iter_mut().zip(&ur[range.clone()]).zip(&vr[range]) {
                            *o = a * x + bb * y + d;
                        }
                    }
                    None => {
                        for (o, &x) in o[range.clone()].iter_mut().zip(&ur[range]) {
                            *o = a * x + d;
                        }
                    }
                }
            }
        });
        out
    }
}

/// The forward op; holds the batch statistics computed before it runs.
struct BatchNormOp {
    dims: Dims,
    mean: Vec<f64>,
    inv_std: Vec<f64>,
}

impl BatchNormOp {
    fn forward<T: Float>(&self, x: &[T], gamma: &[T], beta: &[T]) -> Vec<T> {
        let a: Vec<f64> = self.inv_std.iter().zip(gamma).map(|(&is, g)| is * g.f()).collect();
        let d: Vec<f64> = a.iter().zip(&self.mean).zip(beta).map(|((&a, &m), b)| b.f() - a * m).collect();
        self.dims.affine(x, None, [&a, &vec![0.0; a.len()], &d], 0)
    }

    /// `[dx (flattened), dgamma, dbeta]` packed into one vector.
    fn backward<T: Float>(&self, x: &[T], gamma: &[T], dy: &[T]) -> Vec<T> {
        let n = self.dims.count();
        let (sum_dy, sum_dy_x) = self.dims.sums(dy, x);
        let c = self.dims.c;
        let (mut k1, mut k2, mut k3) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
        let (mut dgamma, mut dbeta) = (Vec::with_capacity(c), Vec::with_capacity(c));
        for j in 0..c {
            let (m, is, g) = (self.mean[j], self.inv_std[j], gamma[j].f());
            let db = sum_dy[j];
            let dg = is * (sum_dy_x[j] - m * db); // sum dy * x_hat
            dbeta.push(T::of(db));
            dgamma.push(T::of(dg));
            k1[j] = g * is;
            k2[j] = -g * is * is * dg / n;
            k3[j] = -g * is * db / n + g * is * is * dg / n * m;
        }
        let mut out = self.dims.affine(dy, Some(x), [&k1, &k2, &k3], 2 * c);
        out.extend(dgamma);
        out.extend(dbeta);
        out
    }
}

struct BatchNormGrad<'a> {
    op: &'a BatchNormOp,
    gamma: Tensor,
}

impl CustomOp3 for BatchNormOp {
    fn name(&self) -> &'static str {
        "zoo-batch-norm"
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
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(self.forward(
                contiguous::<f32>(s1, l1, "batch_norm")?,
                contiguous::<f32>(s2, l2, "batch_norm")?,
                contiguous::<f32>(s3, l3, "batch_norm")?,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(self.forward(
                contiguous::<f64>(s1, l1, "batch_norm")?,
                contiguous::<f64>(s2, l2, "batch_norm")?,
                contiguous::<f64>(s3, l3, "batch_norm")?,
            )),
            _ => bail!("batch_norm supports f32 and f64 (all three tensors of one dtype) only"),
        };
        Ok((out, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let packed = x.apply_op2_no_bwd(&grad, &BatchNormGrad { op: self, gamma: gamma.detach() })?;
        let (n, c) = (x.elem_count(), self.dims.c);
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgamma = packed.narrow(0, n, c)?.reshape(gamma.shape())?;
        let dbeta = packed.narrow(0, n + c, c)?.reshape(gamma.shape())?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

impl CustomOp2 for BatchNormGrad<'_> {
    fn name(&self) -> &'static str {
        "zoo-batch-norm-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (gs, gl) = self.gamma.storage_and_layout();
        let candle_core::Storage::Cpu(gs) = &*gs else { bail!("batch_norm's gradient runs on the CPU only") };
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(self.op.backward(
                contiguous::<f32>(s1, l1, "batch_norm")?,
                contiguous::<f32>(gs, gl, "batch_norm")?,
                contiguous::<f32>(s2, l2, "batch_norm")?,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(self.op.backward(
                contiguous::<f64>(s1, l1, "batch_norm")?,
                contiguous::<f64>(gs, gl, "batch_norm")?,
                contiguous::<f64>(s2, l2, "batch_norm")?,
            )),
            _ => bail!("batch_norm's gradient supports f32 and f64 only"),
        };
        let len = l1.shape().elem_count() + 2 * self.op.dims.c;
        Ok((out, Shape::from(len)))
    }
}

/// Batch normalisation of `x` `[B, C, ...]` with the statistics of this batch (training mode):
/// `y = (x - mean_c) / sqrt(var_c + eps) * weight_c + bias_c`, mean and biased variance over the
/// batch and every dimension after the channels. Returns `y` and, detached, the batch mean and
/// biased variance `[C]` (for the running statistics).
///
/// The CPU path (f32, f64; `x`, `weight`, `bias` of one dtype) is fused, forward and backward;
/// other devices and dtypes compose Candle's ops. The backward is first-order only.
pub fn batch_norm_train(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    if x.rank() < 2 {
        bail!("batch_norm needs an input of rank 2 or more ([batch, channels, ...]), got {:?}", x.dims());
    }
    let (b, c) = (x.dim(0)?, x.dim(1)?);
    if weight.dims() != [c] || bias.dims() != [c] {
        bail!(
            "batch_norm over {c} channels needs weight and bias of shape [{c}], got {:?} and {:?}",
            weight.dims(),
            bias.dims()
        );
    }
    let s = x.elem_count() / (b * c).max(1);
    let fused = x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && weight.dtype() == x.dtype()
        && bias.dtype() == x.dtype();
    if !fused || b * s == 0 {
        return composed(x, weight, bias, eps);
    }
    let x = x.contiguous()?;
    let dims = Dims { b, c, s };
    let (sum, sum_sq) = {
        let (st, l) = x.storage_and_layout();
        let candle_core::Storage::Cpu(st) = &*st else { unreachable!("checked to be on the CPU") };
        match st {
            CpuStorage::F32(_) => {
                let v = contiguous::<f32>(st, l, "batch_norm")?;
                dims.sums(v, v)
            }
            _ => {
                let v = contiguous::<f64>(st, l, "batch_norm")?;
                dims.sums(v, v)
            }
        }
    };
    let n = dims.count();
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let var: Vec<f64> = sum_sq.iter().zip(&mean).map(|(q, m)| (q / n - m * m).max(0.0)).collect();
    let inv_std = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let dev = x.device();
    let mean_t = Tensor::from_vec(mean.clone(), c, dev)?.to_dtype(x.dtype())?;
    let var_t = Tensor::from_vec(var, c, dev)?.to_dtype(x.dtype())?;
    let y = x.apply_op3(weight, bias, BatchNormOp { dims, mean, inv_std })?;
    Ok((y, mean_t, var_t))
}

/// The same computation from Candle's ops (other devices and dtypes).
fn composed(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    let c = x.dim(1)?;
    let mut shape = vec![1usize; x.rank()];
    shape[1] = c;
    let dims: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
    let mean = x.mean_keepdim(dims.as_slice())?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(dims.as_slice())?;
    let y = centred
        .broadcast_div(&(&var + eps)?.sqrt()?)?
        .broadcast_mul(&weight.reshape(shape.as_slice())?)?
        .broadcast_add(&bias.reshape(shape.as_slice())?)?;
    Ok((y, mean.flatten_all()?.detach(), var.flatten_all()?.detach()))
}

/// `y[n, c, ..] = x[n, c, ..] * scale[c] + shift[c]` in one pass.
struct ChannelAffine;

impl ChannelAffine {
    fn run<T: Float>(x: &[T], scale: &[T], shift: &[T], inner: usize) -> Vec<T> {
        let c = scale.len().max(1);
        assert_eq!(x.len() % (c * inner.max(1)), 0, "channel_affine: input length is not a multiple of C x inner");
        if inner == 1 {
            // `[N, C]`: rows of C, the channel varies fastest; parts are whole rows.
            // SAFETY: every part is a whole number of rows, each written by `affine_run`.
            unsafe {
                par_init(x.len(), (CHUNK / c).max(1) * c, |off, o| {
                    let x = &x[off..off + o.len()];
                    for (o, x) in o.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                        affine_run(o, x, scale, shift);
                    }
                })
            }
        } else {
            // `[N, C, R]`: one constant pair per run of R elements; parts are whole runs.
            // SAFETY: every part is a whole number of runs, each written by `affine_const`.
            unsafe {
                par_init(x.len(), (CHUNK / inner).max(1) * inner, |off, o| {
                    let x = &x[off..off + o.len()];
                    for (k, (o, x)) in o.chunks_exact_mut(inner).zip(x.chunks_exact(inner)).enumerate() {
                        let ch = (off / inner + k) % c;
                        affine_const(o, x, scale[ch], shift[ch]);
                    }
                })
            }
        }
    }
}

/// Elements per parallel task of [`ChannelAffine`].
const CHUNK: usize = 1 << 15;

/// Writes all of `o` (as long as `x`).
#[inline(always)]
fn affine_const<T: Float>(o: &mut [MaybeUninit<T>], x: &[T], s: T, t: T) {
    for (o, &x) in o.iter_mut().zip(x) {
        o.write(x * s + t);
    }
}

/// Writes all of `o` (as long as `x`, `s` and `t`).
#[inline(always)]
fn affine_run<T: Float>(o: &mut [MaybeUninit<T>], x: &[T], s: &[T], t: &[T]) {
    for (((o, &x), &s), &t) in o.iter_mut().zip(x).zip(s).zip(t) {
        o.write(x * s + t);
    }
}

impl CustomOp3 for ChannelAffine {
    fn name(&self) -> &'static str {
        "zoo-channel-affine"
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
        let dims = l1.dims();
        let inner: usize = dims[2..].iter().product();
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(ChannelAffine::run(
                contiguous::<f32>(s1, l1, "channel_affine")?,
                contiguous::<f32>(s2, l2, "channel_affine")?,
                contiguous::<f32>(s3, l3, "channel_affine")?,
                inner,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(ChannelAffine::run(
                contiguous::<f64>(s1, l1, "channel_affine")?,
                contiguous::<f64>(s2, l2, "channel_affine")?,
                contiguous::<f64>(s3, l3, "channel_affine")?,
                inner,
            )),
            _ => bail!("channel_affine supports f32 and f64 only, all three of one type"),
        };
        Ok((out, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        _shift: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut bshape = vec![1; x.rank()];
        bshape[1] = scale.elem_count();
        let dx = grad.broadcast_mul(&scale.reshape(bshape)?)?;
        let channel_sum = |t: &Tensor| -> Result<Tensor> {
            let (n, c) = (t.dim(0)?, t.dim(1)?);
            t.reshape((n, c, t.elem_count() / (n * c).max(1)))?.sum(2)?.sum(0)
        };
        Ok((Some(dx), Some(channel_sum(&(grad * x)?)?), Some(channel_sum(grad)?)))
    }
}

/// `x * scale[c] + shift[c]` for `x` `[N, C, ...]` and `scale`, `shift` `[C]`: a per-channel
/// affine map in one pass on the CPU (f32, f64), as PyTorch computes BatchNorm in evaluation
/// mode; Candle's broadcast multiply and add elsewhere. Differentiable in all three arguments.
pub fn channel_affine(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    if x.rank() < 2 {
        bail!("channel_affine: the input must be [N, C, ...], got shape {:?}", x.dims());
    }
    let c = x.dim(1)?;
    if scale.dims() != [c] || shift.dims() != [c] {
        bail!(
            "channel_affine: scale and shift must be [{c}] for input {:?}, got {:?} and {:?}",
            x.dims(),
            scale.dims(),
            shift.dims()
        );
    }
    let same = scale.dtype() == x.dtype() && shift.dtype() == x.dtype();
    if x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && same {
        return x.contiguous()?.apply_op3(&scale.contiguous()?, &shift.contiguous()?, ChannelAffine);
    }
    let mut bshape = vec![1; x.rank()];
    bshape[1] = c;
    x.broadcast_mul(&scale.reshape(bshape.clone())?)?.broadcast_add(&shift.reshape(bshape)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        crate::util::test_tensor(shape, seed, 2.0)
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        a.sub(b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn matches_the_composed_ops_forward_and_backward_for_2d_and_4d_inputs() {
        for shape in [vec![6, 5], vec![3, 4, 5, 2], vec![2, 3, 7]] {
            let c = shape[1];
            let x = Var::from_tensor(&randn(&shape, 1).affine(1.5, 0.7).unwrap()).unwrap();
            let w = Var::from_tensor(&randn(&[c], 2)).unwrap();
            let b = Var::from_tensor(&randn(&[c], 3)).unwrap();
            let probe = randn(&shape, 4);
            let (y, m, v) = batch_norm_train(&x, &w, &b, 1e-5).unwrap();
            let (y2, m2, v2) = composed(&x, &w, &b, 1e-5).unwrap();
            assert!(max_abs_diff(&y, &y2) < 1e-12, "{shape:?}");
            assert!(max_abs_diff(&m, &m2) < 1e-12 && max_abs_diff(&v, &v2) < 1e-12, "{shape:?}");
            let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (y2 * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            for var in [&x, &w, &b] {
                let (a, e) = (g.get(var).unwrap(), g2.get(var).unwrap());
                assert!(max_abs_diff(a, e) < 1e-10, "{shape:?}: {}", max_abs_diff(a, e));
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let shape = [4, 3, 2, 2];
        let x0 = randn(&shape, 5);
        let w0 = randn(&[3], 6);
        let b0 = randn(&[3], 7);
        let probe = randn(&shape, 8);
        let f = |x: &Tensor, w: &Tensor, b: &Tensor| -> f64 {
            let (y, _, _) = batch_norm_train(x, w, b, 1e-3).unwrap();
            // A non-linear read-out so that the gradient does not vanish by symmetry.
            (y.sqr().unwrap() * &probe).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
        };
        let (x, w, b) =
            (Var::from_tensor(&x0).unwrap(), Var::from_tensor(&w0).unwrap(), Var::from_tensor(&b0).unwrap());
        let (y, _, _) = batch_norm_train(&x, &w, &b, 1e-3).unwrap();
        let grads = (y.sqr().unwrap() * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let h = 1e-6;
        for (which, var) in [(0, &x), (1, &w), (2, &b)] {
            let base = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let analytic = grads.get(var).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for i in 0..base.len() {
                let at = |d: f64| {
                    let mut v = base.clone();
                    v[i] += d;
                    let t = Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap();
                    match which {
                        0 => f(&t, &w0, &b0),
                        1 => f(&x0, &t, &b0),
                        _ => f(&x0, &w0, &t),
                    }
                };
                let numeric = (at(h) - at(-h)) / (2.0 * h);
                assert!(
                    (numeric - analytic[i]).abs() < 1e-5 * (1.0 + numeric.abs()),
                    "input {which} element {i}: {numeric} vs {}",
                    analytic[i]
                );
            }
        }
    }

    #[test]
    fn f32_matches_f64_and_bad_shapes_are_refused() {
        let x = randn(&[8, 4, 3, 3], 9);
        let (w, b) = (randn(&[4], 10), randn(&[4], 11));
        let (y64, _, _) = batch_norm_train(&x, &w, &b, 1e-5).unwrap();
        let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let (y32, _, _) = batch_norm_train(&f(&x), &f(&w), &f(&b), 1e-5).unwrap();
        assert!(max_abs_diff(&y32.to_dtype(DType::F64).unwrap(), &y64) < 1e-5);
        let e = batch_norm_train(&x, &randn(&[3], 1), &b, 1e-5).unwrap_err().to_string();
        assert!(e.contains("[4]"), "{e}");
        assert!(batch_norm_train(&randn(&[4], 1), &w, &b, 1e-5).is_err());
    }

    #[test]
    fn channel_affine_matches_broadcast_ops_and_their_gradients() {
        for shape in [vec![7, 3], vec![2, 3, 4, 5], vec![40, 3, 600]] {
            let x = candle_core::Var::from_tensor(&randn(&shape, 11)).unwrap();
            let s = candle_core::Var::from_tensor(&randn(&[3], 12)).unwrap();
            let t = candle_core::Var::from_tensor(&randn(&[3], 13)).unwrap();
            let mut b = vec![1; shape.len()];
            b[1] = 3;
            let ours = channel_affine(&x, &s, &t).unwrap();
            let theirs =
                x.broadcast_mul(&s.reshape(b.clone()).unwrap()).unwrap().broadcast_add(&t.reshape(b).unwrap()).unwrap();
            let d = (&ours - &theirs).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            assert!(d.to_scalar::<f64>().unwrap() < 1e-14, "{shape:?}");
            let probe = randn(&shape, 14);
            let g1 = (ours.sqr().unwrap() * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (theirs.sqr().unwrap() * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [x.as_tensor(), s.as_tensor(), t.as_tensor()] {
                let e = (g1.get(v).unwrap() - g2.get(v).unwrap()).unwrap().abs().unwrap().flatten_all().unwrap();
                assert!(e.max(0).unwrap().to_scalar::<f64>().unwrap() < 1e-9, "{shape:?}");
            }
        }
        let x = randn(&[2, 3, 4], 1);
        let e = channel_affine(&x, &randn(&[4], 2), &randn(&[4], 3)).unwrap_err().to_string();
        assert!(e.contains("[3]"), "{e}");
        assert!(channel_affine(&randn(&[3], 1), &randn(&[3], 2), &randn(&[3], 3)).is_err());
    }
}
