//! The Adam update in place: three passes over contiguous f32 buffers, no allocation.
//!
//! Written with Candle's element-wise ops, one Adam step on a tensor allocates and fills about ten
//! temporaries of its size; for a generator with millions of weights that is a tenth of a GAN
//! training step. Here the first moment, the second moment and the parameter are each updated in
//! place, in the same order of floating-point operations as the element-wise formulation.

use candle_core::{CpuStorage, DType, Device, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
use rayon::prelude::*;

/// The scalars of one Adam step (PyTorch's formulation, L2 weight decay excluded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator term.
    pub eps: f64,
    /// `1 - beta1^t`.
    pub bias_correction1: f64,
    /// `1 - beta2^t`.
    pub bias_correction2: f64,
    /// Factor applied to the parameter before the update (`1 - lr * wd` for AdamW, else 1).
    pub decay: f64,
}

const CHUNK: usize = 1 << 14;

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("adam: expected a contiguous f32 buffer"),
    }
}

fn contiguous_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("adam: expected a contiguous f32 buffer"),
    }
}

/// `m = beta * m + (1 - beta) * g` (`square`: `g^2`).
struct Moment {
    beta: f32,
    one_minus_beta: f32,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adam-moment"
    }
    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let (m, g) = (contiguous_mut(s1, l1)?, contiguous(s2, l2)?);
        let (b, one_minus_b) = (self.beta, self.one_minus_beta);
        m.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(m, g)| {
            for (m, &g) in m.iter_mut().zip(g) {
                let g = if self.square { g * g } else { g };
                *m = *m * b + g * one_minus_b;
            }
        });
        Ok(())
    }
}

/// `theta = decay * theta - lr * (m / bc1) / (sqrt(v / bc2) + eps)`.
struct Update {
    lr: f32,
    inv_bc1: f32,
    inv_bc2: f32,
    eps: f32,
    decay: f32,
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "adam-update"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let (theta, m, v) = (contiguous_mut(s1, l1)?, contiguous(s2, l2)?, contiguous(s3, l3)?);
        theta.par_chunks_mut(CHUNK).zip(m.par_chunks(CHUNK)).zip(v.par_chunks(CHUNK)).for_each(|((t, m), v)| {
            for ((t, &m), &v) in t.iter_mut().zip(m).zip(v) {
                let denom = (v * self.inv_bc2).sqrt() + self.eps;
                let update = (m * self.inv_bc1) / denom * self.lr;
                let base = if self.decay == 1.0 { *t } else { *t * self.decay };
                *t = base - update;
            }
        });
        Ok(())
    }
}

/// Whether [`adam_step_in_place`] handles these tensors: all f32, contiguous, same shape, on the CPU.
pub fn adam_in_place_supported(theta: &Tensor, m: &Tensor, v: &Tensor, grad: &Tensor) -> bool {
    let ts = [theta, m, v, grad];
    ts.iter().all(|t| {
        matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32 && t.is_contiguous() && t.dims() == theta.dims()
    })
}

/// One Adam step in place on `theta`, with moments `m` and `v` updated in place from `grad`.
/// The caller checks [`adam_in_place_supported`] first; other cases fail. `m` and `v` must not
/// share storage with any tensor the caller still reads.
pub fn adam_step_in_place(theta: &Tensor, m: &Tensor, v: &Tensor, grad: &Tensor, s: &AdamStep) -> Result<()> {
    if !adam_in_place_supported(theta, m, v, grad) {
        candle_core::bail!("adam: in-place update needs contiguous f32 CPU tensors of one shape");
    }
    let moment = |beta: f64, square| Moment { beta: beta as f32, one_minus_beta: (1.0 - beta) as f32, square };
    m.inplace_op2(grad, &moment(s.beta1, false))?;
    v.inplace_op2(grad, &moment(s.beta2, true))?;
    let update = Update {
        lr: s.lr as f32,
        inv_bc1: (1.0 / s.bias_correction1) as f32,
        inv_bc2: (1.0 / s.bias_correction2) as f32,
        eps: s.eps as f32,
        decay: s.decay as f32,
    };
    theta.inplace_op3(m, v, &update)
}
