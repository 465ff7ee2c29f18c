//! Row-wise fused ops over the last dimension: layer normalisation, softmax, and the element-wise
//! part of an LSTM cell, each one node forward and one pass backward.
//!
//! Composed from Candle's ops, a layer normalisation is about eight graph nodes (mean, subtract,
//! square, mean, add, square root, divide, multiply, add), each a full-size temporary that the
//! backward pass differentiates again, with the broadcast gradients summed by Candle's reduction
//! over non-last dimensions; a softmax is five, an LSTM cell's gate arithmetic about fifteen.
//! Here each is one op whose forward reads the input once per row and whose backward is one pass
//! over the rows (parameter gradients summed per thread and added at the end).

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

use crate::util::{contiguous, par_init};

/// Rows per parallel task: about 32 K elements.
fn rows_per_task(d: usize) -> usize {
    ((1usize << 15) / d.max(1)).max(1)
}

/// The float types of the fused paths.
trait Float: candle_core::WithDType + Send + Sync {
    fn exp(self) -> Self;
    /// `1 / (1 + exp(-x))`.
    fn sigmoid(self) -> Self;
    fn tanh(self) -> Self;
}

impl Float for f32 {
    fn exp(self) -> Self {
        f32::exp(self)
    }
    #[inline(always)]
    fn sigmoid(self) -> Self {
        1.0 / (1.0 + exp_f32(-self))
    }
    #[inline(always)]
    fn tanh(self) -> Self {
        tanh_f32(self)
    }
}

impl Float for f64 {
    fn exp(self) -> Self {
        f64::exp(self)
    }
    #[inline(always)]
    fn sigmoid(self) -> Self {
        1.0 / (1.0 + f64::exp(-self))
    }
    fn tanh(self) -> Self {
        f64::tanh(self)
    }
}

/// `exp(x)` in f32 without a library call, so that loops over it vectorise: `x = k ln 2 + r`
/// with `|r| <= ln 2 / 2` (Cody-Waite split of ln 2), `exp(r)` by its Taylor polynomial of
/// degree 7 (truncation below 1e-8 relative), times `2^k` built in the exponent bits. Inputs are
/// clamped to `[-87, 88]` (results from 1.6e-38 to 1.7e38); relative error about 2e-7.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x * LOG2E + ROUND;
    let k = t - ROUND;
    let ki = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    f32::from_bits(((ki + 127) << 23) as u32) * p
}

/// `tanh(x) = 1 - 2 / (exp(2x) + 1)` with [`exp_f32`]: absolute error about 2e-7 (relative
/// error grows near 0, where the result is below that).
#[inline(always)]
fn tanh_f32(x: f32) -> f32 {
    1.0 - 2.0 / (exp_f32(2.0 * x) + 1.0)
}

/// Whether the fused CPU path takes these tensors: on the CPU, f32 or f64, all of one dtype.
fn fused(ts: &[&Tensor]) -> bool {
    let dtype = ts[0].dtype();
    ts.iter().all(|t| t.device().is_cpu() && t.dtype() == dtype) && matches!(dtype, DType::F32 | DType::F64)
}

// ---------------------------------------------------------------------------------------------
// Layer normalisation
// ---------------------------------------------------------------------------------------------

/// Mean and `1 / sqrt(var + eps)` of one row (two passes, biased variance, in f64).
#[inline]
fn row_stats<T: Float>(x: &[T], eps: f64) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = x.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `y = (x - mean) / sqrt(var + eps) * weight + bias` per row of `d`.
#[derive(Debug, Clone, Copy)]
struct LayerNormOp {
    d: usize,
    eps: f64,
}

impl LayerNormOp {
    fn forward<T: Float>(&self, x: &[T], w: &[T], b: &[T]) -> Vec<T> {
        let d = self.d;
        let chunk = rows_per_task(d) * d;
        // SAFETY: every part is a whole number of rows, each written element by element below.
        unsafe {
            par_init(x.len(), chunk, |off, out| {
                let len = out.len();
                for (o, xr) in out.chunks_exact_mut(d).zip(x[off..off + len].chunks_exact(d)) {
                    let (mean, inv) = row_stats(xr, self.eps);
                    let (mean, inv) = (T::from_f64(mean), T::from_f64(inv));
                    for i in 0..d {
                        o[i].write((xr[i] - mean) * inv * w[i] + b[i]);
                    }
                }
            })
        }
    }

    /// `[dx (n), dweight (d), dbias (d)]` from `x`, `weight` and `dy`:
    /// `dx = inv (g - mean(g) - xhat mean(g xhat))` with `g = dy weight`,
    /// `dweight = sum_rows dy xhat`, `dbias = sum_rows dy`.
    fn backward<T: Float>(&self, x: &[T], w: &[T], dy: &[T]) -> Vec<T> {
        let d = self.d;
        let n = x.len();
        let mut out = vec![T::zero(); n + 2 * d];
        let (dx, params) = out.split_at_mut(n);
        let chunk = rows_per_task(d) * d;
        let sums = dx
            .par_chunks_mut(chunk)
            .enumerate()
            .map(|(k, dxs)| {
                let off = k * chunk;
                let mut dw = vec![0f64; d];
                let mut db = vec![0f64; d];
                let rows = dxs.chunks_exact_mut(d).zip(x[off..].chunks_exact(d)).zip(dy[off..].chunks_exact(d));
                for ((dxr, xr), gr) in rows {
                    let (mean, inv) = row_stats(xr, self.eps);
                    let (mut sg, mut sgx) = (0f64, 0f64);
                    for i in 0..d {
                        let xhat = (xr[i].to_f64() - mean) * inv;
                        let g = gr[i].to_f64() * w[i].to_f64();
                        sg += g;
                        sgx += g * xhat;
                        dw[i] += gr[i].to_f64() * xhat;
                        db[i] += gr[i].to_f64();
                    }
                    let (mg, mgx) = (sg / d as f64, sgx / d as f64);
                    for i in 0..d {
                        let xhat = (xr[i].to_f64() - mean) * inv;
                        let g = gr[i].to_f64() * w[i].to_f64();
                        dxr[i] = T::from_f64(inv * (g - mg - xhat * mgx));
                    }
                }
                (dw, db)
            })
            .reduce(
                || (vec![0f64; d], vec![0f64; d]),
                |(mut a, mut b), (a2, b2)| {
                    a.iter_mut().zip(&a2).for_each(|(p, q)| *p += q);
                    b.iter_mut().zip(&b2).for_each(|(p, q)| *p += q);
                    (a, b)
                },
            );
        for (p, v) in params.iter_mut().zip(sums.0.iter().chain(&sums.1)) {
            *p = T::from_f64(*v);
        }
        out
    }
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "zoo-layer-norm"
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
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(self.forward(
                contiguous::<f32>(s1, l1, "layer_norm")?,
                contiguous::<f32>(s2, l2, "layer_norm")?,
                contiguous::<f32>(s3, l3, "layer_norm")?,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(self.forward(
                contiguous::<f64>(s1, l1, "layer_norm")?,
                contiguous::<f64>(s2, l2, "layer_norm")?,
                contiguous::<f64>(s3, l3, "layer_norm")?,
            )),
            _ => bail!("layer_norm's fused path supports f32 and f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let packed = x.apply_op3_no_bwd(&w.detach(), &grad, &LayerNormGrad(*self))?;
        let (n, d) = (x.elem_count(), self.d);
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = packed.narrow(0, n, d)?;
        let db = packed.narrow(0, n + d, d)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The backward pass of [`LayerNormOp`] on `(x, weight, dy)`, packed `[dx, dweight, dbias]`.
struct LayerNormGrad(LayerNormOp);

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "zoo-layer-norm-grad"
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
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(self.0.backward(
                contiguous::<f32>(s1, l1, "layer_norm")?,
                contiguous::<f32>(s2, l2, "layer_norm")?,
                contiguous::<f32>(s3, l3, "layer_norm")?,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(self.0.backward(
                contiguous::<f64>(s1, l1, "layer_norm")?,
                contiguous::<f64>(s2, l2, "layer_norm")?,
                contiguous::<f64>(s3, l3, "layer_norm")?,
            )),
            _ => bail!("layer_norm's gradient supports f32 and f64 only"),
        };
        Ok((out, Shape::from(l1.shape().elem_count() + 2 * self.0.d)))
    }
}

/// Layer normalisation over the last dimension (Ba et al. 2016):
/// `y = (x - mean) / sqrt(var + eps) * weight + bias`, biased variance, `weight` and `bias` of
/// shape `[d]`. Without `bias`, none is added.
///
/// On the CPU (f32, f64; all tensors of one dtype) one fused op forward and backward (statistics
/// in f64); elsewhere, and for f16/bf16, Candle's ops composed (statistics in f32 at least).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    if weight.dims() != [d] || bias.is_some_and(|b| b.dims() != [d]) {
        bail!(
            "layer_norm over a last dimension of {d} needs weight and bias of shape [{d}], got {:?} and {:?}",
            weight.dims(),
            bias.map(|b| b.dims().to_vec())
        );
    }
    let zeros;
    let b = match bias {
        Some(b) => b,
        None => {
            zeros = Tensor::zeros(d, weight.dtype(), weight.device())?;
            &zeros
        }
    };
    if !fused(&[x, weight, b]) || x.elem_count() == 0 {
        return layer_norm_composed(x, weight, bias, eps);
    }
    x.contiguous()?.apply_op3(&weight.contiguous()?, &b.contiguous()?, LayerNormOp { d, eps })
}

/// [`layer_norm`] from Candle's ops (the path off the CPU, and the reference in tests).
pub fn layer_norm_composed(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = if matches!(dtype, DType::F16 | DType::BF16) { x.to_dtype(DType::F32)? } else { x.clone() };
    let mean = xf.mean_keepdim(D::Minus1)?;
    let centred = xf.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?.to_dtype(dtype)?;
    let y = normed.broadcast_mul(weight)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

// ---------------------------------------------------------------------------------------------
// Softmax
// ---------------------------------------------------------------------------------------------

/// `softmax` over rows of `d`.
#[derive(Debug, Clone, Copy)]
struct SoftmaxOp {
    d: usize,
}

impl SoftmaxOp {
    fn forward<T: Float>(&self, x: &[T]) -> Vec<T> {
        let d = self.d;
        let chunk = rows_per_task(d) * d;
        // SAFETY: every part is a whole number of rows; each row's elements are all written.
        unsafe {
            par_init(x.len(), chunk, |off, out| {
                let len = out.len();
                for (o, xr) in out.chunks_exact_mut(d).zip(x[off..off + len].chunks_exact(d)) {
                    let max = xr.iter().copied().fold(xr[0], |m, v| if v > m { v } else { m });
                    let mut sum = T::zero();
                    for (o, &v) in o.iter_mut().zip(xr) {
                        let e = (v - max).exp();
                        sum += e;
                        o.write(e);
                    }
                    // A division, not a product with `1 / sum`: the same rounding as Candle's ops.
                    for o in o.iter_mut() {
                        // SAFETY: written just above.
                        let e = o.assume_init();
                        o.write(e / sum);
                    }
                }
            })
        }
    }

    /// `dx = y (dy - sum(dy y))` per row.
    fn backward<T: Float>(&self, y: &[T], dy: &[T]) -> Vec<T> {
        let d = self.d;
        let chunk = rows_per_task(d) * d;
        // SAFETY: as in `forward`.
        unsafe {
            par_init(y.len(), chunk, |off, out| {
                let rows = out.chunks_exact_mut(d).zip(y[off..].chunks_exact(d)).zip(dy[off..].chunks_exact(d));
                for ((o, yr), gr) in rows {
                    let dot = yr.iter().zip(gr).fold(T::zero(), |s, (&a, &b)| s + a * b);
                    for i in 0..d {
                        o[i].write(yr[i] * (gr[i] - dot));
                    }
                }
            })
        }
    }
}

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "zoo-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(self.forward(contiguous::<f32>(s, l, "softmax")?)),
            CpuStorage::F64(_) => CpuStorage::F64(self.forward(contiguous::<f64>(s, l, "softmax")?)),
            _ => bail!("softmax's fused path supports f32 and f64 only"),
        };
        Ok((out, l.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.detach().apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad(*self))?))
    }
}

/// The backward pass of [`SoftmaxOp`] on `(y, dy)`.
struct SoftmaxGrad(SoftmaxOp);

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "zoo-softmax-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(
                self.0.backward(contiguous::<f32>(s1, l1, "softmax")?, contiguous::<f32>(s2, l2, "softmax")?),
            ),
            CpuStorage::F64(_) => CpuStorage::F64(
                self.0.backward(contiguous::<f64>(s1, l1, "softmax")?, contiguous::<f64>(s2, l2, "softmax")?),
            ),
            _ => bail!("softmax's gradient supports f32 and f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// Softmax over the last dimension, `exp(x_i - max x) / sum_j exp(x_j - max x)`, with gradients.
/// Fused on the CPU for f32 and f64 (one op forward, one pass backward: `dx = y (dy - <dy, y>)`);
/// Candle's ops composed elsewhere.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.rank() == 0 {
        bail!("softmax needs at least one dimension, got a scalar");
    }
    let d = x.dim(D::Minus1)?;
    if !fused(&[x]) || x.elem_count() == 0 {
        return softmax_last_dim_composed(x);
    }
    x.contiguous()?.apply_op1(SoftmaxOp { d })
}

/// [`softmax_last_dim`] from Candle's ops (the path off the CPU, and the reference in tests).
pub fn softmax_last_dim_composed(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}

// ---------------------------------------------------------------------------------------------
// LSTM cell
// ---------------------------------------------------------------------------------------------

/// What the backward pass of an LSTM cell reuses, per batch row: the activated gates `i`, `f`,
/// `g`, `o` and `tanh(c)`, `SAVED * H` values.
const SAVED: usize = 5;

/// The element-wise part of an LSTM cell on `(gates [B, 4H], c_prev [B, H])`, output `[2, B, H]`
/// (`h`, then `c`: each a contiguous block). The activations the backward pass needs are kept
/// beside the graph node (in `saved`), so the backward has no exponentials to compute, as
/// Candle's composed graph, and the output holds only what callers read.
#[derive(Debug)]
struct LstmCellOp {
    h: usize,
    saved: Arc<Mutex<Option<CpuStorage>>>,
}

impl LstmCellOp {
    /// `(out [2 * B * H], saved [B * SAVED * H])`.
    fn forward<T: Float>(&self, gates: &[T], c_prev: &[T]) -> (Vec<T>, Vec<T>) {
        let h = self.h;
        let n = c_prev.len();
        let mut out = vec![T::zero(); 2 * n];
        let mut saved = vec![T::zero(); SAVED * n];
        let (hs, cs) = out.split_at_mut(n);
        let rows = rows_per_task(SAVED * h);
        hs.par_chunks_mut(rows * h)
            .zip(cs.par_chunks_mut(rows * h))
            .zip(saved.par_chunks_mut(rows * SAVED * h))
            .enumerate()
            .for_each(|(k, ((hs, cs), sv))| {
                let rows = hs.chunks_exact_mut(h).zip(cs.chunks_exact_mut(h)).zip(sv.chunks_exact_mut(SAVED * h));
                for (q, ((ho, co), so)) in rows.enumerate() {
                    let r = k * rows_per_task(SAVED * h) + q;
                    let a = &gates[r * 4 * h..(r + 1) * 4 * h];
                    let cp = &c_prev[r * h..(r + 1) * h];
                    // One contiguous pass per gate, so that each loop vectorises.
                    let (sig, rest) = so.split_at_mut(2 * h);
                    let (g, rest) = rest.split_at_mut(h);
                    let (og, tc) = rest.split_at_mut(h);
                    for (o, &v) in sig.iter_mut().zip(&a[..2 * h]) {
                        *o = v.sigmoid();
                    }
                    for (o, &v) in g.iter_mut().zip(&a[2 * h..3 * h]) {
                        *o = v.tanh();
                    }
                    for (o, &v) in og.iter_mut().zip(&a[3 * h..]) {
                        *o = v.sigmoid();
                    }
                    let (i, f) = sig.split_at(h);
                    for j in 0..h {
                        co[j] = f[j] * cp[j] + i[j] * g[j];
                    }
                    for (o, &v) in tc.iter_mut().zip(co.iter()) {
                        *o = v.tanh();
                    }
                    for j in 0..h {
                        ho[j] = og[j] * tc[j];
                    }
                }
            });
        (out, saved)
    }

    /// `[d_gates (B * 4H), d_c_prev (B * H)]` from the saved activations, `c_prev` and the
    /// output's gradient `[2, B, H]`.
    fn backward<T: Float>(h: usize, saved: &[T], c_prev: &[T], grad: &[T]) -> Vec<T> {
        let n = c_prev.len();
        let b = n / h.max(1);
        let (gh_all, gc_all) = grad.split_at(n);
        let mut out = vec![T::zero(); b * 5 * h];
        let (dgates, dcp) = out.split_at_mut(b * 4 * h);
        let rows = rows_per_task(SAVED * h);
        dgates.par_chunks_mut(rows * 4 * h).zip(dcp.par_chunks_mut(rows * h)).enumerate().for_each(|(k, (dg, dc))| {
            for (q, (dga, dcr)) in dg.chunks_exact_mut(4 * h).zip(dc.chunks_exact_mut(h)).enumerate() {
                let r = k * rows + q;
                let o = &saved[r * SAVED * h..(r + 1) * SAVED * h];
                let cp = &c_prev[r * h..(r + 1) * h];
                let (gh, gc) = (&gh_all[r * h..(r + 1) * h], &gc_all[r * h..(r + 1) * h]);
                let one = T::one();
                for j in 0..h {
                    let (i, f, g, og, tc) = (o[j], o[h + j], o[2 * h + j], o[3 * h + j], o[4 * h + j]);
                    let dc_total = gc[j] + gh[j] * og * (one - tc * tc);
                    dga[j] = dc_total * g * i * (one - i);
                    dga[h + j] = dc_total * cp[j] * f * (one - f);
                    dga[2 * h + j] = dc_total * i * (one - g * g);
                    dga[3 * h + j] = gh[j] * tc * og * (one - og);
                    dcr[j] = dc_total * f;
                }
            }
        });
        out
    }
}

impl CustomOp2 for LstmCellOp {
    fn name(&self) -> &'static str {
        "zoo-lstm-cell"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (out, saved) = match s1 {
            CpuStorage::F32(_) => {
                let (o, s) =
                    self.forward(contiguous::<f32>(s1, l1, "lstm_cell")?, contiguous::<f32>(s2, l2, "lstm_cell")?);
                (CpuStorage::F32(o), CpuStorage::F32(s))
            }
            CpuStorage::F64(_) => {
                let (o, s) =
                    self.forward(contiguous::<f64>(s1, l1, "lstm_cell")?, contiguous::<f64>(s2, l2, "lstm_cell")?);
                (CpuStorage::F64(o), CpuStorage::F64(s))
            }
            _ => bail!("lstm_cell's fused path supports f32 and f64 only"),
        };
        *self.saved.lock().map_err(|_| candle_core::Error::Msg("lstm_cell: poisoned state".into()))? = Some(saved);
        Ok((out, Shape::from((2, l2.shape().dims()[0], self.h))))
    }
    fn bwd(
        &self,
        gates: &Tensor,
        c_prev: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let op = LstmCellGrad { h: self.h, saved: self.saved.clone() };
        let packed = c_prev.detach().apply_op2_no_bwd(&grad, &op)?;
        let n = gates.elem_count();
        let dg = packed.narrow(0, 0, n)?.reshape(gates.shape())?;
        let dc = packed.narrow(0, n, c_prev.elem_count())?.reshape(c_prev.shape())?;
        Ok((Some(dg), Some(dc)))
    }
}

/// The backward pass of [`LstmCellOp`] on `(c_prev, d output)`, with the forward's saved
/// activations.
struct LstmCellGrad {
    h: usize,
    saved: Arc<Mutex<Option<CpuStorage>>>,
}

impl CustomOp2 for LstmCellGrad {
    fn name(&self) -> &'static str {
        "zoo-lstm-cell-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let guard = self.saved.lock().map_err(|_| candle_core::Error::Msg("lstm_cell: poisoned state".into()))?;
        let out = match (guard.as_ref(), s1) {
            (Some(CpuStorage::F32(sv)), CpuStorage::F32(_)) => CpuStorage::F32(LstmCellOp::backward(
                self.h,
                sv,
                contiguous::<f32>(s1, l1, "lstm_cell")?,
                contiguous::<f32>(s2, l2, "lstm_cell")?,
            )),
            (Some(CpuStorage::F64(sv)), CpuStorage::F64(_)) => CpuStorage::F64(LstmCellOp::backward(
                self.h,
                sv,
                contiguous::<f64>(s1, l1, "lstm_cell")?,
                contiguous::<f64>(s2, l2, "lstm_cell")?,
            )),
            (None, _) => bail!("lstm_cell's backward pass ran before its forward pass"),
            _ => bail!("lstm_cell's gradient supports f32 and f64 only, of the forward's dtype"),
        };
        Ok((out, Shape::from(5 * l1.shape().elem_count())))
    }
}

/// The element-wise part of an LSTM cell (Hochreiter & Schmidhuber 1997, with forget gate), gates
/// in PyTorch's order: from the pre-activations `gates = x W_ih^T + h W_hh^T + b` `[B, 4H]` =
/// `[i | f | g | o]` and the previous cell state `c_prev` `[B, H]`,
/// `c = sigmoid(f) c_prev + sigmoid(i) tanh(g)` and `h = sigmoid(o) tanh(c)`. Returns `(h, c)`.
///
/// On the CPU (f32, f64) one op forward and one pass backward (the forward keeps the activated
/// gates for it); elsewhere Candle's ops composed.
pub fn lstm_cell(gates: &Tensor, c_prev: &Tensor) -> Result<(Tensor, Tensor)> {
    let (b, h) = c_prev.dims2().map_err(|_| {
        candle_core::Error::Msg(format!("lstm_cell needs a cell state [batch, hidden], got {:?}", c_prev.dims()))
    })?;
    if gates.dims() != [b, 4 * h] {
        bail!("lstm_cell with a cell state [{b}, {h}] needs gates [{b}, {}], got {:?}", 4 * h, gates.dims());
    }
    if !fused(&[gates, c_prev]) || b * h == 0 {
        return lstm_cell_composed(gates, c_prev);
    }
    let op = LstmCellOp { h, saved: Arc::new(Mutex::new(None)) };
    let hc = gates.contiguous()?.apply_op2(&c_prev.contiguous()?, op)?;
    Ok((hc.get(0)?, hc.get(1)?))
}

/// [`lstm_cell`] from Candle's ops (the path off the CPU, and the reference in tests).
pub fn lstm_cell_composed(gates: &Tensor, c_prev: &Tensor) -> Result<(Tensor, Tensor)> {
    let h = c_prev.dim(1)?;
    let sig = |t: Tensor| -> Result<Tensor> { (t.neg()?.exp()? + 1.0)?.recip() };
    let i = sig(gates.narrow(1, 0, h)?)?;
    let f = sig(gates.narrow(1, h, h)?)?;
    let g = gates.narrow(1, 2 * h, h)?.tanh()?;
    let o = sig(gates.narrow(1, 3 * h, h)?)?;
    let c = ((f * c_prev)? + (i * g)?)?;
    let hn = (o * c.tanh()?)?;
    Ok((hn, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{max_abs_diff, test_tensor};
    use candle_core::Var;

    /// Central finite differences of `sum(f(x) * up)` against the analytic gradient, in f64.
    fn check_grad(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) {
        let v = Var::from_tensor(x).unwrap();
        let y = f(v.as_tensor()).unwrap();
        let up = test_tensor(y.dims(), 99, 1.0);
        let loss = y.mul(&up).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap().get(v.as_tensor()).expect("a gradient").flatten_all().unwrap();
        let g = g.to_vec1::<f64>().unwrap();
        let base = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let eps = 1e-6;
        for k in 0..base.len() {
            let at = |delta: f64| {
                let mut p = base.clone();
                p[k] += delta;
                let t = Tensor::from_vec(p, x.shape(), x.device()).unwrap();
                f(&t).unwrap().mul(&up).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!((numeric - g[k]).abs() < 1e-6 * (1.0 + numeric.abs()), "element {k}: {numeric} vs {}", g[k]);
        }
    }

    /// The gradients of `sum(y * up)` with respect to each of `vars`.
    fn grads(vars: &[Var], y: &Tensor) -> Vec<Tensor> {
        let up = test_tensor(y.dims(), 77, 1.0).to_dtype(y.dtype()).unwrap();
        let gs = y.mul(&up).unwrap().sum_all().unwrap().backward().unwrap();
        vars.iter().map(|v| gs.get(v.as_tensor()).expect("a gradient").clone()).collect()
    }

    #[test]
    fn f32_exponential_and_tanh_are_accurate() {
        let (mut worst_exp, mut worst_tanh, mut worst_sig) = (0f64, 0f64, 0f64);
        for k in -870_000..=880_000 {
            let x = k as f32 * 1e-4;
            let e = (x as f64).exp();
            worst_exp = worst_exp.max((exp_f32(x) as f64 - e).abs() / e);
            worst_tanh = worst_tanh.max((tanh_f32(x) as f64 - (x as f64).tanh()).abs());
            worst_sig = worst_sig.max((x.sigmoid() as f64 - 1.0 / (1.0 + (-x as f64).exp())).abs());
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        assert!(worst_tanh < 3e-7, "tanh absolute error {worst_tanh}");
        assert!(worst_sig < 2e-7, "sigmoid absolute error {worst_sig}");
        assert_eq!(exp_f32(-1000.0), exp_f32(-87.0));
        assert!(exp_f32(1000.0).is_finite() && tanh_f32(1000.0) == 1.0 && tanh_f32(-1000.0) == -1.0);
        assert!(exp_f32(f32::NAN).is_nan() && tanh_f32(f32::NAN).is_nan());
    }

    #[test]
    fn layer_norm_matches_candle_and_finite_differences() {
        let x = test_tensor(&[3, 5, 7], 1, 2.0).affine(1.0, 0.5).unwrap();
        let w = test_tensor(&[7], 2, 1.0);
        let b = test_tensor(&[7], 3, 1.0);
        check_grad(&x, |x| layer_norm(x, &w, Some(&b), 1e-5));
        check_grad(&w, |w| layer_norm(&x, w, Some(&b), 1e-5));
        check_grad(&b, |b| layer_norm(&x, &w, Some(b), 1e-5));
        check_grad(&x, |x| layer_norm(x, &w, None, 1e-3));
        for dtype in [DType::F32, DType::F64] {
            // Rows enough for several parallel tasks, and a row wider than one task.
            for shape in [vec![70, 513], vec![2, 40_000]] {
                let d = shape[1];
                let vars: Vec<Var> = [&shape[..], &[d], &[d]]
                    .iter()
                    .enumerate()
                    .map(|(k, s)| {
                        Var::from_tensor(&test_tensor(s, 10 + k as u64, 1.5).to_dtype(dtype).unwrap()).unwrap()
                    })
                    .collect();
                let (x, w, b) = (vars[0].as_tensor(), vars[1].as_tensor(), vars[2].as_tensor());
                let ours = layer_norm(x, w, Some(b), 1e-5).unwrap();
                let theirs = layer_norm_composed(x, w, Some(b), 1e-5).unwrap();
                let tol = if dtype == DType::F32 { 2e-5 } else { 1e-12 };
                assert!(max_abs_diff(&ours, &theirs) < tol, "{dtype:?} {shape:?} forward");
                for (k, (a, c)) in grads(&vars, &ours).iter().zip(grads(&vars, &theirs)).enumerate() {
                    let scale = 1.0
                        + c.abs().unwrap().max_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
                    assert!(max_abs_diff(a, &c) < tol * 20.0 * scale, "{dtype:?} {shape:?} gradient {k}");
                }
            }
        }
    }

    #[test]
    fn softmax_matches_candle_and_finite_differences() {
        let x = test_tensor(&[4, 3, 6], 4, 3.0);
        check_grad(&x, softmax_last_dim);
        let big = Tensor::new(&[[1000.0f64, 1000.0, -1000.0]], &candle_core::Device::Cpu).unwrap();
        let s = softmax_last_dim(&big).unwrap().to_vec2::<f64>().unwrap();
        assert!((s[0][0] - 0.5).abs() < 1e-12 && (s[0][1] - 0.5).abs() < 1e-12 && s[0][2] == 0.0, "{s:?}");
        for dtype in [DType::F32, DType::F64] {
            let v = Var::from_tensor(&test_tensor(&[33, 4, 257], 5, 4.0).to_dtype(dtype).unwrap()).unwrap();
            let ours = softmax_last_dim(v.as_tensor()).unwrap();
            let theirs = softmax_last_dim_composed(v.as_tensor()).unwrap();
            let tol = if dtype == DType::F32 { 1e-6 } else { 1e-14 };
            assert!(max_abs_diff(&ours, &theirs) < tol, "{dtype:?} forward");
            let (a, b) = (grads(std::slice::from_ref(&v), &ours), grads(&[v], &theirs));
            assert!(max_abs_diff(&a[0], &b[0]) < tol * 10.0, "{dtype:?} gradient");
        }
        assert!(softmax_last_dim(&Tensor::new(1.0f32, &candle_core::Device::Cpu).unwrap()).is_err());
    }

    #[test]
    fn lstm_cell_matches_candle_and_finite_differences() {
        let gates = test_tensor(&[3, 4 * 5], 6, 2.0);
        let c = test_tensor(&[3, 5], 7, 1.0);
        check_grad(&gates, |g| {
            let (h, c) = lstm_cell(g, &c)?;
            Tensor::cat(&[h, c], 1)
        });
        check_grad(&c, |c| {
            let (h, c) = lstm_cell(&gates, c)?;
            Tensor::cat(&[h, c], 1)
        });
        for dtype in [DType::F32, DType::F64] {
            let (b, h) = (70, 300);
            let g = Var::from_tensor(&test_tensor(&[b, 4 * h], 8, 3.0).to_dtype(dtype).unwrap()).unwrap();
            let cp = Var::from_tensor(&test_tensor(&[b, h], 9, 2.0).to_dtype(dtype).unwrap()).unwrap();
            let vars = [g.clone(), cp.clone()];
            let (h1, c1) = lstm_cell(g.as_tensor(), cp.as_tensor()).unwrap();
            let (h2, c2) = lstm_cell_composed(g.as_tensor(), cp.as_tensor()).unwrap();
            // f32 uses its own exponential (relative error about 2e-7).
            let tol = if dtype == DType::F32 { 3e-6 } else { 1e-14 };
            assert!(max_abs_diff(&h1, &h2) < tol && max_abs_diff(&c1, &c2) < tol, "{dtype:?} forward");
            // Both outputs feed the loss, as in a recurrent step.
            let ours = grads(&vars, &(h1 + c1.affine(0.5, 0.0).unwrap()).unwrap());
            let theirs = grads(&vars, &(h2 + c2.affine(0.5, 0.0).unwrap()).unwrap());
            for (k, (a, c)) in ours.iter().zip(&theirs).enumerate() {
                assert!(max_abs_diff(a, c) < tol * 10.0, "{dtype:?} gradient {k}");
            }
        }
        let dev = candle_core::Device::Cpu;
        let c = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        assert!(lstm_cell(&Tensor::zeros((2, 11), DType::F32, &dev).unwrap(), &c).is_err());
        assert!(lstm_cell(&Tensor::zeros((2, 12), DType::F32, &dev).unwrap(), &c.flatten_all().unwrap()).is_err());
    }
}
