//! Max pooling over non-overlapping square windows (kernel = stride), with a one-pass backward.
//!
//! Candle's own backward of `max_pool2d` rebuilds the mask of maxima from several full-size
//! temporaries (upsampling the output, comparing, average-pooling the mask, upsampling again);
//! here the backward finds each window's maximum again and writes the window's gradient there,
//! in one pass. Like PyTorch, a window whose maximum is tied gives its whole gradient to the first
//! maximum in row-major order.
//!
//! Candle 0.11's backward is also wrong by a factor: it divides every window's gradient by the
//! window's area, so the gradient of `max_pool2d(x, 2).sum()` is 0.25 at each maximum instead of
//! 1 (the tests here check against finite differences, and against Candle's op times `k * k`).
//! Networks with two 2x2 poolings then train their first convolution with a gradient 16 times too
//! small; when the windows leave a remainder row or column, its gradients land in the wrong
//! places as well. This op is the fix.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::util::contiguous;

/// NaN is the only value not comparable with itself.
#[inline]
fn is_nan<T: PartialOrd>(v: T) -> bool {
    v.partial_cmp(&v).is_none()
}

/// Whether `v`, met after `best` in row-major order, becomes the window's maximum: when larger,
/// or as the first NaN (NaN propagates as the maximum, as in PyTorch); ties keep the first.
#[inline]
fn beats<T: PartialOrd + Copy>(v: T, best: T) -> bool {
    v > best || (is_nan(v) && !is_nan(best))
}

/// Geometry of one pooling: input planes `h x w`, windows `k x k`, output `h/k x w/k` (floor).
#[derive(Debug, Clone, Copy)]
struct Pool {
    h: usize,
    w: usize,
    k: usize,
}

impl Pool {
    fn out(&self) -> (usize, usize) {
        (self.h / self.k, self.w / self.k)
    }

    /// Offset (in the plane) of the first maximum of window `(oy, ox)` (the general window; 2x2
    /// windows take an unrolled path with the same rule, [`beats`]).
    #[inline]
    fn argmax<T: PartialOrd + Copy>(&self, plane: &[T], oy: usize, ox: usize) -> usize {
        let mut best = (oy * self.k) * self.w + ox * self.k;
        for dy in 0..self.k {
            let row = (oy * self.k + dy) * self.w + ox * self.k;
            for i in row..row + self.k {
                // NaN propagates as the maximum, as in PyTorch.
                if beats(plane[i], plane[best]) {
                    best = i;
                }
            }
        }
        best
    }

    fn forward<T: PartialOrd + Copy + Send + Sync + Default>(&self, x: &[T]) -> Vec<T> {
        let (oh, ow) = self.out();
        let plane_in = self.h * self.w;
        let planes = x.len() / plane_in;
        // SAFETY: every plane's `oh * ow` outputs are written below.
        unsafe {
            crate::util::par_init(planes * oh * ow, oh * ow, |offset, o| {
                let plane = &x[offset / (oh * ow).max(1) * plane_in..][..plane_in];
                if self.k == 2 {
                    // The common 2x2 window as a branch-free maximum that the compiler vectorises.
                    for (oy, orow) in o.chunks_mut(ow).enumerate() {
                        let r0 = &plane[2 * oy * self.w..][..2 * ow];
                        let r1 = &plane[(2 * oy + 1) * self.w..][..2 * ow];
                        for ((v, a), b) in orow.iter_mut().zip(r0.chunks_exact(2)).zip(r1.chunks_exact(2)) {
                            v.write(max2(max2(a[0], a[1]), max2(b[0], b[1])));
                        }
                    }
                    return;
                }
                for oy in 0..oh {
                    for ox in 0..ow {
                        o[oy * ow + ox].write(plane[self.argmax(plane, oy, ox)]);
                    }
                }
            })
        }
    }

    /// The gradient of the input, given the pooled output `y` and its gradient `grad`.
    fn backward<T: PartialOrd + Copy + Send + Sync + Default + 'static>(&self, x: &[T], y: &[T], grad: &[T]) -> Vec<T> {
        let (oh, ow) = self.out();
        let plane_in = self.h * self.w;
        if self.k != 2 {
            let mut out = vec![T::default(); x.len()];
            out.par_chunks_mut(plane_in).zip(x.par_chunks(plane_in)).zip(grad.par_chunks(oh * ow)).for_each(
                |((o, plane), g)| {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            o[self.argmax(plane, oy, ox)] = g[oy * ow + ox];
                        }
                    }
                },
            );
            return out;
        }
        // SAFETY: `backward_2x2_plane` writes every element of its plane.
        unsafe {
            crate::util::par_init(x.len(), plane_in, |offset, o| {
                let p = offset / plane_in;
                let plane = &x[offset..][..plane_in];
                let (y, g) = (&y[p * oh * ow..][..oh * ow], &grad[p * oh * ow..][..oh * ow]);
                backward_2x2_plane(self.h, self.w, plane, y, g, o)
            })
        }
    }
}

/// The input gradient of one plane `h x w` pooled over 2x2 windows (output `h/2 x w/2`), from
/// the plane `x`, the pooled values `y` and their gradient `g`; writes every element of `o`: each
/// window's gradient at its first element (row-major) equal to its maximum (or at its first NaN
/// when the maximum is NaN, which no element equals), zeros elsewhere, the remainder column and
/// row (if any) as zeros. f32 planes on x86-64 take four windows at a time in SSE2 registers:
/// which element of a window is its maximum is a coin toss on real data, and the scalar
/// version's branches on it were mispredicted about every other window.
fn backward_2x2_plane<T: PartialOrd + Copy + Default + 'static>(
    h: usize,
    w: usize,
    x: &[T],
    y: &[T],
    g: &[T],
    o: &mut [MaybeUninit<T>],
) {
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        let cast = |s: &[T]| {
            // SAFETY: `T` is `f32` (same type id), so the slice is a slice of f32.
            unsafe { std::slice::from_raw_parts(s.as_ptr() as *const f32, s.len()) }
        };
        // SAFETY: as above, for the output slots.
        let o = unsafe { std::slice::from_raw_parts_mut(o.as_mut_ptr() as *mut MaybeUninit<f32>, o.len()) };
        // SAFETY: every x86-64 CPU has SSE2.
        return unsafe { backward_2x2_plane_sse2(h, w, cast(x), cast(y), cast(g), o) };
    }
    let (oh, ow) = (h / 2, w / 2);
    for oy in 0..oh {
        let (top, bottom) = o[2 * oy * w..][..2 * w].split_at_mut(w);
        let (x0, x1) = (&x[2 * oy * w..][..2 * ow], &x[(2 * oy + 1) * w..][..2 * ow]);
        backward_2x2_windows(0..ow, x0, x1, &y[oy * ow..][..ow], &g[oy * ow..][..ow], top, bottom);
    }
    zero_remainders(h, w, o);
}

/// Windows `range` of one row of 2x2 windows (input rows `x0`, `x1`; pooled values `y` and their
/// gradient `g`), written into the output rows `top` and `bottom`, one window at a time.
#[inline(always)]
fn backward_2x2_windows<T: PartialOrd + Copy + Default>(
    range: std::ops::Range<usize>,
    x0: &[T],
    x1: &[T],
    y: &[T],
    g: &[T],
    top: &mut [MaybeUninit<T>],
    bottom: &mut [MaybeUninit<T>],
) {
    let zero = T::default();
    for ox in range {
        let (m, gv) = (y[ox], g[ox]);
        let hit = |v: T| (v == m) | is_nan(v);
        let a = hit(x0[2 * ox]);
        let b = !a & hit(x0[2 * ox + 1]);
        let c = !a & !b & hit(x1[2 * ox]);
        let d = !a & !b & !c;
        top[2 * ox].write(if a { gv } else { zero });
        top[2 * ox + 1].write(if b { gv } else { zero });
        bottom[2 * ox].write(if c { gv } else { zero });
        bottom[2 * ox + 1].write(if d { gv } else { zero });
    }
}

/// Zeros for the remainder column and row of a plane `h x w` that 2x2 windows leave, if any.
#[inline(always)]
fn zero_remainders<T: Copy + Default>(h: usize, w: usize, o: &mut [MaybeUninit<T>]) {
    if w % 2 == 1 {
        for row in o.chunks_mut(w).take(h / 2 * 2) {
            row[w - 1].write(T::default());
        }
    }
    if h % 2 == 1 {
        for v in &mut o[(h - 1) * w..] {
            v.write(T::default());
        }
    }
}

/// Per lane: `v` equals the window's maximum `m`, or is NaN.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[inline]
fn hit(v: std::arch::x86_64::__m128, m: std::arch::x86_64::__m128) -> std::arch::x86_64::__m128 {
    use std::arch::x86_64::*;
    _mm_or_ps(_mm_cmpeq_ps(v, m), _mm_cmpunord_ps(v, v))
}

/// [`backward_2x2_plane`] for f32: four windows (eight input columns of two rows) per step, the
/// first-maximum rule as lane masks; the windows left over take the scalar path.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn backward_2x2_plane_sse2(h: usize, w: usize, x: &[f32], y: &[f32], g: &[f32], o: &mut [MaybeUninit<f32>]) {
    use std::arch::x86_64::*;
    let (oh, ow) = (h / 2, w / 2);
    let quads = ow / 4;
    // Lanes 1 and 3 (the right-hand element of each window in a register).
    let odd = _mm_castsi128_ps(_mm_set_epi32(-1, 0, -1, 0));
    for oy in 0..oh {
        let (top, bottom) = o[2 * oy * w..][..2 * w].split_at_mut(w);
        let (x0, x1) = (&x[2 * oy * w..][..2 * ow], &x[(2 * oy + 1) * w..][..2 * ow]);
        let (yr, gr) = (&y[oy * ow..][..ow], &g[oy * ow..][..ow]);
        for q in 0..quads {
            // SAFETY: windows 4q..4q+4 exist (q < ow / 4): four values of `yr` and `gr` from 4q,
            // eight of `x0`, `x1`, `top` and `bottom` from 8q (all at least 2 * ow long).
            unsafe {
                let m4 = _mm_loadu_ps(yr.as_ptr().add(4 * q));
                let g4 = _mm_loadu_ps(gr.as_ptr().add(4 * q));
                for half in 0..2 {
                    // Two windows per register: lanes (a, b) of window j, (a, b) of window j + 1.
                    let (m, gv) = if half == 0 {
                        (_mm_unpacklo_ps(m4, m4), _mm_unpacklo_ps(g4, g4))
                    } else {
                        (_mm_unpackhi_ps(m4, m4), _mm_unpackhi_ps(g4, g4))
                    };
                    let at = 8 * q + 4 * half;
                    let t = hit(_mm_loadu_ps(x0.as_ptr().add(at)), m);
                    let u = hit(_mm_loadu_ps(x1.as_ptr().add(at)), m);
                    // Each window's left-hand hit in both its lanes, and whether its top row hit.
                    let t_left = _mm_shuffle_ps::<0b10_10_00_00>(t, t);
                    let t_any = _mm_or_ps(t_left, _mm_shuffle_ps::<0b11_11_01_01>(t, t));
                    let u_left = _mm_shuffle_ps::<0b10_10_00_00>(u, u);
                    // Top: a where it hits; b where it hits and a did not.
                    let top_sel = _mm_andnot_ps(_mm_and_ps(t_left, odd), t);
                    // Bottom: c where it hits and the top row did not; d where none of a, b, c hit.
                    let c_sel = _mm_andnot_ps(t_any, _mm_andnot_ps(odd, u));
                    let d_sel = _mm_andnot_ps(_mm_or_ps(t_any, u_left), odd);
                    let bottom_sel = _mm_or_ps(c_sel, d_sel);
                    _mm_storeu_ps(top.as_mut_ptr().add(at) as *mut f32, _mm_and_ps(top_sel, gv));
                    _mm_storeu_ps(bottom.as_mut_ptr().add(at) as *mut f32, _mm_and_ps(bottom_sel, gv));
                }
            }
        }
        backward_2x2_windows(4 * quads..ow, x0, x1, yr, gr, top, bottom);
    }
    zero_remainders(h, w, o);
}

/// The larger of `a` and `b` (`b` when it is NaN), without a branch; over a 2x2 window this gives
/// the window's maximum, or NaN when the window holds one, as PyTorch does.
#[inline(always)]
fn max2<T: PartialOrd + Copy>(a: T, b: T) -> T {
    if (b > a) | is_nan(b) {
        b
    } else {
        a
    }
}

struct MaxPool {
    b: usize,
    c: usize,
    pool: Pool,
}

struct MaxPoolGrad {
    pool: Pool,
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "zoo-max-pool2d"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (oh, ow) = self.pool.out();
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(self.pool.forward(contiguous::<f32>(s, l, "max_pool2d")?)),
            CpuStorage::F64(_) => CpuStorage::F64(self.pool.forward(contiguous::<f64>(s, l, "max_pool2d")?)),
            _ => bail!("max_pool2d supports f32 and f64 only"),
        };
        Ok((out, Shape::from((self.b, self.c, oh, ow))))
    }
    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op3_no_bwd(res, &grad.contiguous()?, &MaxPoolGrad { pool: self.pool })?))
    }
}

impl CustomOp3 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "zoo-max-pool2d-grad"
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
        fn run<T: candle_core::WithDType + PartialOrd + Default>(
            pool: &Pool,
            (s1, l1): (&CpuStorage, &Layout),
            (s2, l2): (&CpuStorage, &Layout),
            (s3, l3): (&CpuStorage, &Layout),
        ) -> Result<Vec<T>> {
            let what = "max_pool2d's gradient";
            Ok(pool.backward(
                contiguous::<T>(s1, l1, what)?,
                contiguous::<T>(s2, l2, what)?,
                contiguous::<T>(s3, l3, what)?,
            ))
        }
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                CpuStorage::F32(run::<f32>(&self.pool, (s1, l1), (s2, l2), (s3, l3))?)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                CpuStorage::F64(run::<f64>(&self.pool, (s1, l1), (s2, l2), (s3, l3))?)
            }
            _ => bail!("max_pool2d's gradient supports f32 and f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// Max pooling of `x` `[B, C, H, W]` over `k x k` windows with stride `k` (output
/// `[B, C, H/k, W/k]`, remainder rows and columns dropped, as PyTorch's `max_pool2d(x, k)`).
/// The CPU path (f32, f64) has a one-pass backward; other devices and dtypes use
/// [`max_pool2d_by_reduction`], never Candle's `max_pool2d`, whose backward is wrong.
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if k == 0 || k > h || k > w {
        bail!("max_pool2d: a {k}x{k} window does not fit images of {h}x{w}");
    }
    if !x.device().is_cpu() || !matches!(x.dtype(), DType::F32 | DType::F64) {
        return max_pool2d_by_reduction(x, k);
    }
    x.contiguous()?.apply_op1(MaxPool { b, c, pool: Pool { h, w, k } })
}

/// The same pooling from Candle's generic ops, for every device: the windows are laid out along
/// a last dimension of size `k * k`; a mask marks each window's first maximum (row-major, found
/// with a cumulative sum of the maxima), and the output is the window weighted by that mask, so
/// the backward gives each window's gradient to its first maximum alone, as the CPU op and
/// PyTorch do (ties are common: a convolution over blank background gives equal values).
pub fn max_pool2d_by_reduction(x: &Tensor, k: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if k == 0 || k > h || k > w {
        bail!("max_pool2d: a {k}x{k} window does not fit images of {h}x{w}");
    }
    let (oh, ow) = (h / k, w / k);
    let windows = x
        .narrow(2, 0, oh * k)?
        .narrow(3, 0, ow * k)?
        .reshape((b, c, oh, k, ow, k))?
        .permute((0, 1, 2, 4, 3, 5))?
        .contiguous()?
        .reshape((b, c, oh, ow, k * k))?;
    let detached = windows.detach();
    let is_max = detached.broadcast_eq(&detached.max_keepdim(4)?)?.to_dtype(x.dtype())?;
    let first = (&is_max * is_max.cumsum(4)?.eq(1.0)?.to_dtype(x.dtype())?)?;
    (windows * first)?.sum(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Distinct values in a scrambled order (no ties), so every window has one maximum.
    fn distinct(shape: &[usize], dtype: DType) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|i| ((i * 7919) % n) as f64 / n as f64 - 0.5).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn matches_candle_forward_and_its_backward_up_to_the_window_area() {
        for dtype in [DType::F32, DType::F64] {
            for (shape, k) in [([2, 3, 8, 8], 2), ([1, 2, 7, 9], 2), ([2, 1, 9, 9], 3)] {
                let x = Var::from_tensor(&distinct(&shape, dtype)).unwrap();
                let ours = max_pool2d(x.as_tensor(), k).unwrap();
                let theirs = x.as_tensor().max_pool2d(k).unwrap();
                assert_eq!(values(&ours), values(&theirs), "forward {shape:?} k {k}");
                if shape[2] % k != 0 || shape[3] % k != 0 {
                    continue; // Candle's backward also misplaces gradients when windows leave a remainder.
                }
                let up = distinct(ours.dims(), dtype).affine(3.0, 0.25).unwrap();
                let g1 = ours.mul(&up).unwrap().sum_all().unwrap().backward().unwrap();
                let g2 = theirs.mul(&up).unwrap().sum_all().unwrap().backward().unwrap();
                // Candle divides the gradient by the window's area (see the module documentation).
                let (a, b) = (g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap());
                let b = b.affine((k * k) as f64, 0.0).unwrap();
                for (u, v) in values(a).iter().zip(values(&b)) {
                    assert!((u - v).abs() <= 1e-6 * u.abs().max(1.0), "backward {shape:?} k {k}: {u} vs {v}");
                }
            }
        }
    }

    #[test]
    fn gradient_matches_finite_differences_and_ties_go_to_the_first_maximum() {
        // 7x6 leaves a remainder row, which must get no gradient.
        let x = Var::from_tensor(&distinct(&[1, 2, 7, 6], DType::F64)).unwrap();
        let loss = |t: &Tensor| max_pool2d(t, 2).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        let grads = max_pool2d(x.as_tensor(), 2).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let analytic = values(grads.get(x.as_tensor()).unwrap());
        let base = values(x.as_tensor());
        for i in 0..base.len() {
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                Tensor::from_vec(v, (1, 2, 7, 6), &Device::Cpu).unwrap()
            };
            let numeric = (loss(&at(1e-6)) - loss(&at(-1e-6))) / 2e-6;
            assert!((numeric - analytic[i]).abs() < 1e-6, "index {i}: {numeric} vs {}", analytic[i]);
        }
        // A window of equal values: the whole gradient goes to its first element.
        let flat = Var::from_tensor(&Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap()).unwrap();
        let g = max_pool2d(flat.as_tensor(), 2).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(values(g.get(flat.as_tensor()).unwrap()), [1.0, 0.0, 0.0, 0.0]);
        assert!(max_pool2d(flat.as_tensor(), 3).unwrap_err().to_string().contains("does not fit"));
    }

    #[test]
    fn nan_is_the_maximum_and_ties_go_first_in_both_window_paths() {
        // 2x2 windows take the unrolled path, 3x3 the general one; the rule is the same.
        for k in [2usize, 3] {
            let mut v = vec![0.0f32; k * k];
            v[1] = f32::NAN;
            v[k * k - 1] = f32::NAN;
            v[2] = 5.0;
            let x = Var::from_tensor(&Tensor::from_vec(v, (1, 1, k, k), &Device::Cpu).unwrap()).unwrap();
            let y = max_pool2d(x.as_tensor(), k).unwrap();
            assert!(values(&y)[0].is_nan(), "k {k}");
            let grads = y.sum_all().unwrap().backward().unwrap();
            let gx = values(grads.get(x.as_tensor()).unwrap());
            assert_eq!(gx.iter().position(|&u| u != 0.0), Some(1), "k {k}: {gx:?}");
            let ties = Var::from_tensor(
                &Tensor::from_vec(vec![2.0f32, 7.0, 7.0, 1.0, 7.0, 0.0, 0.0, 0.0, 0.0], (1, 1, 3, 3), &Device::Cpu)
                    .unwrap(),
            )
            .unwrap();
            let t = ties.as_tensor().narrow(2, 0, k).unwrap().narrow(3, 0, k).unwrap();
            let grads = max_pool2d(&t, k).unwrap().sum_all().unwrap().backward().unwrap();
            let gt = values(grads.get(ties.as_tensor()).unwrap());
            assert_eq!(gt.iter().position(|&u| u != 0.0), Some(1), "k {k}: {gt:?}");
        }
    }

    #[test]
    fn the_f32_fast_path_follows_the_scalar_rule_on_ties_and_nans() {
        // Few distinct values (many ties in every window) and some NaNs; widths with whole groups
        // of four windows, a tail of one to three windows, and a remainder column and row. The f64
        // op takes the scalar path, the f32 op the four-window one; the values are exact in both.
        for shape in [[2, 3, 6, 16], [1, 2, 7, 21], [1, 1, 4, 9], [3, 1, 5, 30]] {
            let n: usize = shape.iter().product();
            let v: Vec<f64> =
                (0..n).map(|i| if (i * 37) % 23 == 0 { f64::NAN } else { ((i * 7919 + i / 5) % 4) as f64 }).collect();
            let grads = |dtype: DType| {
                let x = Var::from_tensor(
                    &Tensor::from_vec(v.clone(), &shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap(),
                )
                .unwrap();
                let y = max_pool2d(x.as_tensor(), 2).unwrap();
                // Upstream gradients 1..=5, exact in both types and never zero.
                let up: Vec<f64> = (0..y.elem_count()).map(|i| (i % 5 + 1) as f64).collect();
                let up = Tensor::from_vec(up, y.dims(), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
                let g = y.mul(&up).unwrap().sum_all().unwrap().backward().unwrap();
                values(g.get(x.as_tensor()).unwrap())
            };
            let (fast, scalar) = (grads(DType::F32), grads(DType::F64));
            assert_eq!(fast.len(), scalar.len());
            assert_eq!(fast, scalar, "{shape:?}");
            // Exactly one element per window gets the window's (non-zero) gradient.
            let windows = shape[0] * shape[1] * (shape[2] / 2) * (shape[3] / 2);
            assert_eq!(fast.iter().filter(|g| **g != 0.0).count(), windows, "{shape:?}");
        }
    }

    #[test]
    fn the_other_devices_path_agrees_with_the_cpu_op_forward_and_backward() {
        for (shape, k) in [([2, 3, 8, 8], 2), ([1, 2, 7, 9], 2), ([2, 1, 9, 10], 3)] {
            let x = Var::from_tensor(&distinct(&shape, DType::F64)).unwrap();
            let ours = max_pool2d(x.as_tensor(), k).unwrap();
            let generic = max_pool2d_by_reduction(x.as_tensor(), k).unwrap();
            assert_eq!(values(&ours), values(&generic), "forward {shape:?} k {k}");
            let up = distinct(ours.dims(), DType::F64).affine(3.0, 0.25).unwrap();
            let g1 = ours.mul(&up).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = generic.mul(&up).unwrap().sum_all().unwrap().backward().unwrap();
            let (a, b) = (values(g1.get(x.as_tensor()).unwrap()), values(g2.get(x.as_tensor()).unwrap()));
            assert_eq!(a, b, "backward {shape:?} k {k}");
        }
        // A window of equal values: the whole gradient goes to its first element, as on the CPU.
        let flat = Var::from_tensor(&Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap()).unwrap();
        let g = max_pool2d_by_reduction(flat.as_tensor(), 2).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(values(g.get(flat.as_tensor()).unwrap()), [1.0, 0.0, 0.0, 0.0]);
        assert!(max_pool2d_by_reduction(flat.as_tensor(), 3).unwrap_err().to_string().contains("does not fit"));
    }
}
