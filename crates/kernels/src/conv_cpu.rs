//! The CPU convolutions: one image at a time, each a GEMM on a cache-sized column buffer.
//!
//! A convolution and its transpose share one picture. The *image side* is a tensor
//! `[C, H, W]` whose patches are read (`im2col`) or written (`col2im`); the *column side* is a
//! tensor `[M, P]` with one column per patch position (`P = OH * OW`); the weight is `W [M, CK]`
//! with `CK = C * KH * KW` (rows `(c, ki, kj)`), which is both PyTorch's `[O, C, KH, KW]`
//! convolution weight and its `[C_in, C_out, KH, KW]` transposed-convolution weight.
//!
//! - convolution: image side = input, column side = output: `y = W cols(x)`;
//!   backward `dW = sum_b dy cols(x)^T`, `dx = col2im(W^T dy)`.
//! - transposed convolution: column side = input, image side = output: `y = col2im(W^T x)`;
//!   backward `dW = sum_b x cols(dy)^T`, `dx = W cols(dy)` (the same columns).
//!
//! Per image the column buffer is `CK x P` (for a 32 -> 64 channel 5x5 convolution on 14x14,
//! 627 KB): it stays in the core's cache, outputs are written in NCHW order directly, and no
//! batch-sized patch matrix is ever allocated. The batch is cut into work items of a few images,
//! which the threads take as they come free; each item keeps its own weight-gradient sum, and the
//! sums are added in the items' order at the end. A batch of one image lets the GEMM itself use
//! the threads instead.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use gemm::Parallelism;
use std::mem::MaybeUninit;
use std::sync::Mutex;

use crate::patches::PatchGeometry;
use crate::util::{
    assume_init_slice, assume_init_vec, contiguous, images_per_item, ordered_sum, self_scheduled, uninit_vec,
};

/// The range of output columns `x` in `0..ow` whose source column `x * stride + off` lies in
/// `0..w`.
#[inline]
fn valid_columns(ow: usize, stride: usize, off: isize, w: usize) -> (usize, usize) {
    let s = stride as isize;
    let x0 = if off >= 0 { 0 } else { ((-off) + s - 1) / s } as usize;
    let room = w as isize - off;
    let x1 = if room <= 0 { 0 } else { ((room + s - 1) / s) as usize };
    let x1 = x1.min(ow);
    (x0.min(x1), x1)
}

/// Copies `n` elements from `src` to `dst` inline: the rows of a patch are short (often 8-28
/// elements), where a `memcpy` call costs more than the copy.
///
/// # Safety
/// `src` must be valid for `n` reads and `dst` for `n` writes, and the two must not overlap.
#[inline(always)]
unsafe fn copy_short<T: Copy>(src: *const T, dst: *mut T, n: usize) {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`, within both ranges (caller's contract).
        unsafe { dst.add(i).cast::<[T; 8]>().write_unaligned(src.add(i).cast::<[T; 8]>().read_unaligned()) };
        i += 8;
    }
    if i + 4 <= n {
        // SAFETY: as above, `i + 4 <= n`.
        unsafe { dst.add(i).cast::<[T; 4]>().write_unaligned(src.add(i).cast::<[T; 4]>().read_unaligned()) };
        i += 4;
    }
    while i < n {
        // SAFETY: `i < n`.
        unsafe { *dst.add(i) = *src.add(i) };
        i += 1;
    }
}

/// For kernel offset `k` (row or column), the output range whose source index `o * stride + k *
/// dilation - padding` lies in `0..size`, and the source index of its first element.
#[inline]
fn valid_range(out: usize, k: usize, g: &PatchGeometry, size: usize) -> (usize, usize, usize) {
    let off = (k * g.dilation) as isize - g.padding as isize;
    let (o0, o1) = valid_columns(out, g.stride, off, size);
    let s0 = if o0 < o1 { ((o0 * g.stride) as isize + off) as usize } else { 0 };
    (o0, o1, s0)
}

/// Writes the columns `[CK, P]` of one image `[C, H, W]` (padding as zeros); row `r` starts at
/// `cols[r * rs]`.
///
/// The valid output ranges are worked out once per kernel row and column, and the rows of a patch
/// are copied inline through pointers that step one source row and one output row at a time: the
/// per-row bookkeeping, bounds checks and `memcpy` calls of a plain loop cost more than the copies
/// for the short rows (often 8-28 elements) of small images.
fn image_to_columns<T: WithDType>(img: &[T], g: &PatchGeometry, cols: &mut [T], rs: usize) {
    let (oh, ow, p) = (g.out_h(), g.out_w(), g.out_h() * g.out_w());
    let (h, w, s) = (g.height, g.width, g.stride);
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    assert!(img.len() >= g.channels * h * w, "image_to_columns: image too short");
    assert!(g.patch_len() == 0 || cols.len() >= (g.patch_len() - 1) * rs + p, "image_to_columns: columns too short");
    for kj in 0..kw {
        let (x0, x1, sx) = valid_range(ow, kj, g, w);
        let n = x1 - x0;
        // Zero columns at the left and right of every output row (padding), if any.
        let edges = x0 > 0 || x1 < ow;
        for ki in 0..kh {
            let (y0, y1, sy) = valid_range(oh, ki, g, h);
            for c in 0..g.channels {
                let r = (c * kh + ki) * kw + kj;
                let row = &mut cols[r * rs..r * rs + p];
                if n == 0 || y0 == y1 {
                    row.fill(T::zero());
                    continue;
                }
                row[..y0 * ow].fill(T::zero());
                row[y1 * ow..].fill(T::zero());
                let plane = &img[c * h * w..(c + 1) * h * w];
                // Source rows `sy + i * s` for `i < y1 - y0`, columns `sx + j * s` for `j < n`: all
                // inside the plane by construction of the two ranges (the last one read is
                // `(sy + (y1 - y0 - 1) s) w + sx + (n - 1) s`), checked once here.
                debug_assert!((sy + (y1 - y0 - 1) * s) * w + sx + (n - 1) * s < plane.len());
                let mut src = plane.as_ptr().wrapping_add(sy * w + sx);
                let mut dst = row[y0 * ow..].as_mut_ptr();
                for _ in y0..y1 {
                    // SAFETY: `dst` is the start of output row `y < y1` of `row` (`ow` elements,
                    // all inside `row`); `src` the start of a source row inside `plane` whose `n`
                    // (stride 1) or `(n - 1) s + 1` (stride `s`) elements lie in the plane (see
                    // above); `row` and `plane` are different slices.
                    unsafe {
                        if edges {
                            for j in (0..x0).chain(x1..ow) {
                                *dst.add(j) = T::zero();
                            }
                        }
                        if s == 1 {
                            copy_short(src, dst.add(x0), n);
                        } else {
                            for j in 0..n {
                                *dst.add(x0 + j) = *src.add(j * s);
                            }
                        }
                    }
                    dst = dst.wrapping_add(ow);
                    src = src.wrapping_add(s * w);
                }
            }
        }
    }
}

/// Adds the columns `[CK, P]` (row `r` at `cols[r * rs]`) back into one image `[C, H, W]` (the
/// adjoint of [`image_to_columns`]), through pointers as there.
fn columns_to_image<T: WithDType>(cols: &[T], g: &PatchGeometry, img: &mut [T], rs: usize) {
    let (oh, ow, p) = (g.out_h(), g.out_w(), g.out_h() * g.out_w());
    let (h, w, s) = (g.height, g.width, g.stride);
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    assert!(img.len() >= g.channels * h * w, "columns_to_image: image too short");
    assert!(g.patch_len() == 0 || cols.len() >= (g.patch_len() - 1) * rs + p, "columns_to_image: columns too short");
    for c in 0..g.channels {
        let plane = &mut img[c * h * w..(c + 1) * h * w];
        for ki in 0..kh {
            let (y0, y1, sy) = valid_range(oh, ki, g, h);
            for kj in 0..kw {
                let (x0, x1, sx) = valid_range(ow, kj, g, w);
                let n = x1 - x0;
                if n == 0 || y0 == y1 {
                    continue; // this kernel offset never lands inside the image
                }
                let r = (c * kh + ki) * kw + kj;
                let row = &cols[r * rs..r * rs + p];
                debug_assert!((sy + (y1 - y0 - 1) * s) * w + sx + (n - 1) * s < plane.len());
                let mut src = row[y0 * ow + x0..].as_ptr();
                let mut dst = plane.as_mut_ptr().wrapping_add(sy * w + sx);
                for _ in y0..y1 {
                    // SAFETY: `src` is element `x0` of output row `y < y1` of `row`, followed by
                    // `n` elements of that row; `dst` the start of a source row inside `plane`
                    // (as in `image_to_columns`); the two are different slices.
                    unsafe {
                        if s == 1 {
                            let d = std::slice::from_raw_parts_mut(dst, n);
                            let v = std::slice::from_raw_parts(src, n);
                            for (d, v) in d.iter_mut().zip(v) {
                                *d += *v;
                            }
                        } else {
                            for j in 0..n {
                                *dst.add(j * s) += *src.add(j);
                            }
                        }
                    }
                    src = src.wrapping_add(ow);
                    dst = dst.wrapping_add(s * w);
                }
            }
        }
    }
}

/// A row-major matrix operand: element `(i, j)` at `ptr[i * rs + j * cs]`.
#[derive(Clone, Copy)]
struct Mat<T> {
    ptr: *const T,
    rs: isize,
    cs: isize,
}

impl<T> Mat<T> {
    /// The row-major `rows x cols` matrix in `s`.
    fn of(s: &[T], cols: usize) -> Self {
        Self { ptr: s.as_ptr(), rs: cols as isize, cs: 1 }
    }
    /// The transpose of the row-major matrix with `cols` columns in `s`.
    fn t(s: &[T], cols: usize) -> Self {
        Self { ptr: s.as_ptr(), rs: 1, cs: cols as isize }
    }
}

/// `dst [m, n] (row-major) = (accumulate ? dst : 0) + a [m, k] b [k, n]`.
///
/// The callers pass operands that cover exactly the sizes named (checked by debug assertions on
/// the slices they come from).
fn gemm_into<T: WithDType>(
    dst: &mut [T],
    (m, n, k): (usize, usize, usize),
    a: Mat<T>,
    b: Mat<T>,
    accumulate: bool,
    par: Parallelism,
) {
    debug_assert!(dst.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::zero());
        }
        return;
    }
    if T::DTYPE == candle_core::DType::F32 && crate::sgemm::available() {
        let threads = match par {
            Parallelism::Rayon(t) => t.max(1),
            _ => 1,
        };
        let f = |x: Mat<T>| crate::sgemm::MatRef { ptr: x.ptr as *const f32, rs: x.rs, cs: x.cs };
        // SAFETY: T is f32 (checked above), so the pointers are to f32; the sizes and strides
        // are as described below for the `gemm` call.
        unsafe { crate::sgemm::sgemm((m, n, k), dst.as_mut_ptr() as *mut f32, n, accumulate, f(a), f(b), threads) };
        return;
    }
    // SAFETY: `dst` holds `m * n` elements in row-major order (row stride n); `a` and `b` were
    // built by `Mat::of` / `Mat::t` from slices of at least `m * k` and `k * n` elements with
    // the strides of those shapes.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

/// Elements of column buffer per GEMM (about a megabyte of f32) below which images are grouped.
const COLUMN_BUDGET: usize = 1 << 18;

/// The sum of `v`, in eight independent lanes (so that it vectorises) added at the end.
pub(crate) fn sum<T: WithDType>(v: &[T]) -> T {
    let mut lanes = [T::zero(); 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += *x;
        }
    }
    let mut s = T::zero();
    for x in lanes.iter().chain(rest) {
        s += *x;
    }
    s
}

/// `dst [M, n*P] <- src [n, M, P]`: the images' rows side by side.
fn gather<T: WithDType>(src: &[T], m: usize, p: usize, dst: &mut [T]) {
    let n = src.len() / (m * p);
    for (j, img) in src.chunks(m * p).enumerate() {
        for (r, row) in img.chunks(p).enumerate() {
            dst[r * n * p + j * p..][..p].copy_from_slice(row);
        }
    }
}

/// `dst [n, M, P] <- src [M, n*P]` (the inverse of [`gather`]), plus `bias[r]` on row `r` when
/// given. Every element of `dst` is written.
fn scatter<T: WithDType>(src: &[T], m: usize, p: usize, dst: &mut [MaybeUninit<T>], bias: Option<&[T]>) {
    let n = dst.len() / (m * p);
    for (j, img) in dst.chunks_mut(m * p).enumerate() {
        for (r, row) in img.chunks_mut(p).enumerate() {
            let from = &src[r * n * p + j * p..][..p];
            match bias {
                Some(b) => {
                    for (d, s) in row.iter_mut().zip(from) {
                        d.write(*s + b[r]);
                    }
                }
                None => {
                    for (d, s) in row.iter_mut().zip(from) {
                        d.write(*s);
                    }
                }
            }
        }
    }
}

/// Which convolution, and its sizes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvPlan {
    /// `false`: convolution (input on the image side); `true`: transposed.
    pub transposed: bool,
    /// Images in the batch.
    pub batch: usize,
    /// Rows `M` of the weight (output channels of a convolution, input channels of a transpose).
    pub m: usize,
    /// The image side's geometry.
    pub g: PatchGeometry,
}

impl ConvPlan {
    fn p(&self) -> usize {
        self.g.out_h() * self.g.out_w()
    }
    fn ck(&self) -> usize {
        self.g.patch_len()
    }
    /// Elements of one image-side image and one column-side image.
    fn image_len(&self) -> usize {
        self.g.channels * self.g.height * self.g.width
    }
    fn column_len(&self) -> usize {
        self.m * self.p()
    }
    fn input_len(&self) -> usize {
        if self.transposed {
            self.column_len()
        } else {
            self.image_len()
        }
    }
    fn output_len(&self) -> usize {
        if self.transposed {
            self.image_len()
        } else {
            self.column_len()
        }
    }
    /// Output channels: one bias value each.
    fn bias_len(&self) -> usize {
        if self.transposed {
            self.g.channels
        } else {
            self.m
        }
    }
    fn output_shape(&self) -> Shape {
        let g = &self.g;
        if self.transposed {
            Shape::from((self.batch, g.channels, g.height, g.width))
        } else {
            Shape::from((self.batch, self.m, g.out_h(), g.out_w()))
        }
    }
    /// Images per work item (see [`crate::util::images_per_item`]), images per GEMM, and the
    /// GEMMs' own parallelism.
    fn split(&self) -> (usize, usize, Parallelism) {
        let threads = rayon::current_num_threads().max(1);
        let per = images_per_item(self.batch, usize::MAX);
        // Several images share one GEMM (the weight is packed once for all of them) while their
        // columns stay within about a megabyte.
        let nb = (COLUMN_BUDGET / (self.ck() * self.p()).max(1)).clamp(1, per);
        let par = if self.batch == 1 && threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
        (per, nb, par)
    }

    /// The forward pass for one batch: input `[B, ...]`, weight `[M, CK]`, optional bias (one
    /// value per output channel).
    pub(crate) fn forward<T: WithDType>(&self, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
        let (p, ck, m) = (self.p(), self.ck(), self.m);
        let (il, ol) = (self.input_len(), self.output_len());
        // Written without a zero fill: a convolution's output is written whole by `scatter`; a
        // transposed convolution's starts as its bias (or zeros) in each item.
        let mut y = uninit_vec::<T>(self.batch * ol);
        let (per, nb, par) = self.split();
        let items: Vec<Mutex<&mut [MaybeUninit<T>]>> = y.chunks_mut(per * ol).map(Mutex::new).collect();
        let scratch = || (vec![T::zero(); ck * nb * p], vec![T::zero(); m * nb * p]);
        self_scheduled(items.len(), scratch, |(cols, side), gi| {
            let mut ys = items[gi].lock().unwrap_or_else(|e| e.into_inner());
            let ys: &mut [MaybeUninit<T>] = &mut ys;
            let xs = &x[gi * per * il..][..ys.len() / ol * il];
            for (xg, yg) in xs.chunks(nb * il).zip(ys.chunks_mut(nb * ol)) {
                let n = xg.len() / il;
                let rs = n * p;
                if self.transposed {
                    // y = col2im(W^T x) (+ bias on every pixel of its channel).
                    gather(xg, m, p, side);
                    gemm_into(cols, (ck, rs, m), Mat::t(w, ck), Mat::of(side, rs), false, par);
                    for (j, yb) in yg.chunks_mut(ol).enumerate() {
                        let plane = self.g.height * self.g.width;
                        for (c, yc) in yb.chunks_mut(plane).enumerate() {
                            let v = bias.map_or(T::zero(), |b| b[c]);
                            yc.iter_mut().for_each(|e| {
                                e.write(v);
                            });
                        }
                        // SAFETY: every element of `yb` was just written.
                        let yb = unsafe { assume_init_slice(yb) };
                        columns_to_image(&cols[j * p..], &self.g, yb, rs);
                    }
                } else {
                    // y = W cols(x) (+ bias on every column of its row).
                    for (j, xb) in xg.chunks(il).enumerate() {
                        image_to_columns(xb, &self.g, &mut cols[j * p..], rs);
                    }
                    gemm_into(side, (m, rs, ck), Mat::of(w, ck), Mat::of(cols, rs), false, par);
                    scatter(side, m, p, yg, bias);
                }
            }
        });
        drop(items);
        // SAFETY: every item of `y` was written above.
        unsafe { assume_init_vec(y) }
    }

    /// The backward pass: from the input, the weight and the output's gradient, the input's
    /// gradient (empty unless `need_dx`), the weight's `[M, CK]` and the bias's (one per output
    /// channel; both empty, their GEMM and sums skipped, unless `need_dw`: the weights of a
    /// network held fixed, e.g. a discriminator's in the generator's update, need none).
    ///
    /// Each work item's weight and bias gradients are kept apart and summed in the items' order
    /// at the end, so that the result does not depend on which thread ran which item.
    pub(crate) fn backward<T: WithDType>(
        &self,
        x: &[T],
        w: &[T],
        dy: &[T],
        need_dx: bool,
        need_dw: bool,
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let (p, ck, m) = (self.p(), self.ck(), self.m);
        let (il, ol) = (self.input_len(), self.output_len());
        let nbias = self.bias_len();
        let (nw, nbw) = if need_dw { (m * ck, nbias) } else { (0, 0) };
        // Each item initialises its own part of `dx` (zeros to add the columns into, or
        // overwritten whole by `scatter`).
        let mut dx = uninit_vec::<T>(if need_dx { self.batch * il } else { 0 });
        let (per, nb, par) = self.split();
        let count = self.batch.div_ceil(per);
        let mut dx_parts: Vec<Mutex<&mut [MaybeUninit<T>]>> =
            if need_dx { dx.chunks_mut(per * il).map(Mutex::new).collect() } else { Vec::new() };
        dx_parts.resize_with(count, || Mutex::new(&mut []));
        let scratch = || (vec![T::zero(); ck * nb * p], vec![T::zero(); m * nb * p]);
        let sums = self_scheduled(count, scratch, |(cols, side), gi| {
            let mut dw = vec![T::zero(); nw];
            let mut db = vec![T::zero(); nbw];
            let mut dxs = dx_parts[gi].lock().unwrap_or_else(|e| e.into_inner());
            let first = gi * per;
            let count = per.min(self.batch - first);
            let mut start = 0;
            while start < count {
                let n = nb.min(count - start);
                let rs = n * p;
                let xg = &x[(first + start) * il..][..n * il];
                let dyg = &dy[(first + start) * ol..][..n * ol];
                // Column side [M, n*P] and image side of these images, for the weight gradient.
                let (colside, imgside) = if self.transposed { (xg, dyg) } else { (dyg, xg) };
                // The input gradient needs the gathered output gradient of a convolution
                // and the columns of a transposed one's output gradient; the rest is for
                // the weight gradient only.
                if need_dw || !self.transposed {
                    gather(colside, m, p, side);
                }
                if need_dw || self.transposed {
                    let img_len = self.image_len();
                    for (j, img) in imgside.chunks(img_len).enumerate() {
                        image_to_columns(img, &self.g, &mut cols[j * p..], rs);
                    }
                }
                if need_dw {
                    gemm_into(&mut dw, (m, ck, rs), Mat::of(side, rs), Mat::t(cols, rs), true, par);
                    let chunk = if self.transposed { self.g.height * self.g.width } else { p };
                    for (i, row) in dyg.chunks(chunk).enumerate() {
                        db[i % nbias] += sum(row);
                    }
                }
                if need_dx {
                    let dxg = &mut dxs[start * il..(start + n) * il];
                    if self.transposed {
                        // dx = W cols(dy): the columns just made.
                        gemm_into(side, (m, rs, ck), Mat::of(w, ck), Mat::of(cols, rs), false, par);
                        scatter(side, m, p, dxg, None);
                    } else {
                        // dx = col2im(W^T dy), added into zeros.
                        dxg.iter_mut().for_each(|e| {
                            e.write(T::zero());
                        });
                        // SAFETY: every element of `dxg` was just written.
                        let dxg = unsafe { assume_init_slice(dxg) };
                        gemm_into(cols, (ck, rs, m), Mat::t(w, ck), Mat::of(side, rs), false, par);
                        for (j, dxb) in dxg.chunks_mut(il).enumerate() {
                            columns_to_image(&cols[j * p..], &self.g, dxb, rs);
                        }
                    }
                }
                start += n;
            }
            (dw, db)
        });
        drop(dx_parts);
        let (dws, dbs): (Vec<Vec<T>>, Vec<Vec<T>>) = sums.into_iter().unzip();
        let (dw, db) = (ordered_sum(dws, nw), ordered_sum(dbs, nbw));
        // SAFETY: every item wrote its whole part of `dx` (nothing when `dx` is not needed).
        (unsafe { assume_init_vec(dx) }, dw, db)
    }

    /// Whether this (f32) convolution takes the direct kernels of `conv_direct`.
    fn direct(&self) -> bool {
        !self.transposed && crate::conv_direct::applies(&self.g)
    }

    /// The forward pass in f32: the direct kernels where they apply, else [`ConvPlan::forward`].
    fn forward_f32(&self, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        use crate::conv_channels as cc;
        // `conv_direct` where it reads the images in place (vectorised along output rows, it
        // wastes nothing there); the channel-vectorised kernels where they apply otherwise.
        if !self.transposed && !crate::conv_direct::in_place(&self.g) && cc::columns_apply(self.m, &self.g) {
            cc::to_columns(self.batch, self.m, &self.g, x, w, bias)
        } else if self.direct() {
            crate::conv_direct::forward(self.batch, self.m, &self.g, x, w, bias)
        } else if self.transposed && cc::image_applies(self.m, &self.g) {
            cc::to_image(self.batch, self.m, &self.g, x, w, bias)
        } else {
            self.forward(x, w, bias)
        }
    }

    /// The input gradient from the direct kernels of `conv_channels`, where they apply: a
    /// convolution's is its adjoint's forward pass (`to_image`), a transposed one's the
    /// convolution's (`to_columns`).
    fn channels_dx(&self, w: &[f32], dy: &[f32]) -> Option<Vec<f32>> {
        use crate::conv_channels as cc;
        if self.transposed {
            cc::columns_apply(self.m, &self.g).then(|| cc::to_columns(self.batch, self.m, &self.g, dy, w, None))
        } else {
            cc::image_applies(self.m, &self.g).then(|| cc::to_image(self.batch, self.m, &self.g, dy, w, None))
        }
    }

    /// [`ConvPlan::backward`]'s three gradients packed one after the other.
    fn backward_packed<T: WithDType>(&self, x: &[T], w: &[T], dy: &[T], need_dx: bool, need_dw: bool) -> Vec<T> {
        let (mut dx, dw, db) = self.backward(x, w, dy, need_dx, need_dw);
        dx.extend_from_slice(&dw);
        dx.extend_from_slice(&db);
        dx
    }

    /// [`ConvPlan::backward_packed`] in f32, with the weight and bias gradients from the direct
    /// kernels where they apply.
    fn backward_packed_f32(&self, x: &[f32], w: &[f32], dy: &[f32], need_dx: bool, need_dw: bool) -> Vec<f32> {
        use crate::conv_channels as cc;
        let channels_dw = need_dw && cc::columns_apply(self.m, &self.g);
        let channels_dx = need_dx.then(|| self.channels_dx(w, dy)).flatten();
        if channels_dw || channels_dx.is_some() {
            let mut out = match channels_dx {
                Some(dx) => dx,
                None if need_dx => self.backward(x, w, dy, true, false).0,
                None => Vec::new(),
            };
            if need_dw {
                let (dw, db) = if channels_dw {
                    cc::weight_grad(self.batch, self.m, &self.g, self.transposed, x, dy)
                } else {
                    let (_, dw, db) = self.backward(x, w, dy, false, true);
                    (dw, db)
                };
                out.extend_from_slice(&dw);
                out.extend_from_slice(&db);
            }
            return out;
        }
        if !(need_dw && self.direct()) {
            return self.backward_packed(x, w, dy, need_dx, need_dw);
        }
        let (mut dx, _, _) = self.backward(x, w, dy, need_dx, false);
        let (dw, db) = crate::conv_direct::weight_grad(self.batch, self.m, &self.g, x, dy);
        dx.extend_from_slice(&dw);
        dx.extend_from_slice(&db);
        dx
    }

    fn check(&self, x: &Layout, w: &Layout) -> Result<()> {
        if x.shape().elem_count() != self.batch * self.input_len() || w.shape().elem_count() != self.m * self.ck() {
            bail!("convolution: input {:?} or weight {:?} does not match {self:?}", x.dims(), w.dims());
        }
        Ok(())
    }

    fn run(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        self.check(x.1, w.1)?;
        if let Some((_, l)) = b {
            if l.shape().elem_count() != self.bias_len() {
                bail!(
                    "convolution: bias {:?} does not have one value per output channel ({})",
                    l.dims(),
                    self.bias_len()
                );
            }
        }
        type Forward<T> = fn(&ConvPlan, &[T], &[T], Option<&[T]>) -> Vec<T>;
        fn typed<T: WithDType>(
            plan: &ConvPlan,
            (xs, xl): (&CpuStorage, &Layout),
            (ws, wl): (&CpuStorage, &Layout),
            b: Option<(&CpuStorage, &Layout)>,
            forward: Forward<T>,
        ) -> Result<Vec<T>> {
            let what = "convolution";
            let bias = b.map(|(s, l)| contiguous::<T>(s, l, what)).transpose()?;
            Ok(forward(plan, contiguous(xs, xl, what)?, contiguous(ws, wl, what)?, bias))
        }
        let out = match (x.0, w.0) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(typed(self, x, w, b, ConvPlan::forward_f32)?),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(typed(self, x, w, b, ConvPlan::forward)?),
            _ => bail!("the CPU convolution supports f32 and f64 (input and weight of one dtype) only"),
        };
        Ok((out, self.output_shape()))
    }

    /// The gradients of the input (when it needs one) and, when `need_dw`, of the weight and
    /// the bias (flat).
    #[allow(clippy::type_complexity)]
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
        need_dw: bool,
    ) -> Result<(Option<Tensor>, Option<(Tensor, Tensor)>)> {
        let need_dx = x.track_op();
        let packed = x.detach().apply_op3_no_bwd(
            &w.detach(),
            &grad.detach().contiguous()?,
            &ConvBackward { plan: *self, need_dx, need_dw },
        )?;
        let nx = if need_dx { self.batch * self.input_len() } else { 0 };
        let dx = if need_dx { Some(packed.narrow(0, 0, nx)?.reshape(x.shape())?) } else { None };
        if !need_dw {
            return Ok((dx, None));
        }
        let nw = self.m * self.ck();
        let nb = packed.elem_count() - nx - nw;
        let dw = packed.narrow(0, nx, nw)?.reshape(w.shape())?;
        let db = packed.narrow(0, nx + nw, nb)?;
        Ok((dx, Some((dw, db))))
    }
}

/// The backward pass as one op: input, weight and output gradient in; the input's, weight's
/// and bias's gradients out, packed one after the other in a flat tensor.
struct ConvBackward {
    plan: ConvPlan,
    need_dx: bool,
    need_dw: bool,
}

impl CustomOp3 for ConvBackward {
    fn name(&self) -> &'static str {
        "zoo-conv-backward"
    }
    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.plan.check(xl, wl)?;
        type Backward<T> = fn(&ConvPlan, &[T], &[T], &[T], bool, bool) -> Vec<T>;
        fn typed<T: WithDType>(
            op: &ConvBackward,
            (xs, xl): (&CpuStorage, &Layout),
            (ws, wl): (&CpuStorage, &Layout),
            (gs, gl): (&CpuStorage, &Layout),
            backward: Backward<T>,
        ) -> Result<Vec<T>> {
            let what = "convolution backward";
            let (x, w, g) = (contiguous(xs, xl, what)?, contiguous(ws, wl, what)?, contiguous(gs, gl, what)?);
            Ok(backward(&op.plan, x, w, g, op.need_dx, op.need_dw))
        }
        let (x, w, g) = ((xs, xl), (ws, wl), (gs, gl));
        let out = match (xs, ws, gs) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                CpuStorage::F32(typed(self, x, w, g, ConvPlan::backward_packed_f32)?)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                CpuStorage::F64(typed(self, x, w, g, ConvPlan::backward_packed)?)
            }
            _ => bail!("the CPU convolution supports f32 and f64 (all of one dtype) only"),
        };
        let n = match &out {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            _ => 0,
        };
        Ok((out, Shape::from(n)))
    }
}

/// The convolution without a bias.
pub(crate) struct ConvNoBias(pub ConvPlan);
/// The convolution with a bias.
pub(crate) struct ConvBias(pub ConvPlan);

impl CustomOp2 for ConvNoBias {
    fn name(&self) -> &'static str {
        "zoo-conv"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.0.run((s1, l1), (s2, l2), None)
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // A weight held fixed (detached, e.g. a discriminator's in the generator's update) gets
        // no gradient, and its GEMM is skipped.
        let (dx, dwb) = self.0.grads(x, w, grad, w.track_op())?;
        Ok((dx, dwb.map(|(dw, _)| dw)))
    }
}

impl CustomOp3 for ConvBias {
    fn name(&self) -> &'static str {
        "zoo-conv-bias"
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
        self.0.run((s1, l1), (s2, l2), Some((s3, l3)))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dwb) = self.0.grads(x, w, grad, w.track_op() || b.track_op())?;
        match dwb {
            Some((dw, db)) => Ok((dx, Some(dw), Some(db.reshape(b.shape())?))),
            None => Ok((dx, None, None)),
        }
    }
}

/// Applies the planned convolution to contiguous `x` and `weight` (and `bias`).
pub(crate) fn apply(plan: ConvPlan, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if x.elem_count() == 0 || weight.elem_count() == 0 {
        bail!("convolution of an empty tensor: input {:?}, weight {:?}", x.dims(), weight.dims());
    }
    let (x, w) = (x.contiguous()?, weight.contiguous()?);
    match bias {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, ConvBias(plan)),
        None => x.apply_op2(&w, ConvNoBias(plan)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The columns of one image by the definition: element `(c, ki, kj)`, `(y, x)` is the image at
    /// `(y s + ki d - p, x s + kj d - p)`, zero outside.
    fn naive_columns(img: &[f64], g: &PatchGeometry) -> Vec<f64> {
        let (oh, ow) = (g.out_h(), g.out_w());
        let mut cols = vec![0.0; g.patch_len() * oh * ow];
        for c in 0..g.channels {
            for ki in 0..g.kernel_h {
                for kj in 0..g.kernel_w {
                    let r = (c * g.kernel_h + ki) * g.kernel_w + kj;
                    for y in 0..oh {
                        for x in 0..ow {
                            let iy = (y * g.stride + ki * g.dilation) as isize - g.padding as isize;
                            let ix = (x * g.stride + kj * g.dilation) as isize - g.padding as isize;
                            if (0..g.height as isize).contains(&iy) && (0..g.width as isize).contains(&ix) {
                                let at = (c * g.height + iy as usize) * g.width + ix as usize;
                                cols[r * oh * ow + y * ow + x] = img[at];
                            }
                        }
                    }
                }
            }
        }
        cols
    }

    #[test]
    fn columns_and_their_adjoint_match_the_definition() {
        // Strides 1-3, paddings, dilations, odd sizes, a kernel wider than
        // the stride and one narrower; each case also inside a wider column buffer (`rs`).
        for (c, h, w, k, stride, padding, dilation) in [
            (2, 7, 7, 4, 2, 1, 1),
            (3, 9, 8, 3, 2, 0, 1),
            (1, 10, 11, 5, 3, 2, 1),
            (2, 6, 9, 2, 3, 0, 1),
            (2, 8, 7, 3, 2, 2, 2),
            (1, 5, 5, 3, 1, 1, 2),
            (2, 12, 12, 5, 1, 0, 1),
        ] {
            let g =
                PatchGeometry { channels: c, height: h, width: w, kernel_h: k, kernel_w: k, stride, padding, dilation };
            let (ck, pp) = (g.patch_len(), g.out_h() * g.out_w());
            let img: Vec<f64> = (0..c * h * w).map(|i| ((i * 7919) % 101) as f64 - 50.0).collect();
            let want = naive_columns(&img, &g);
            for extra in [0, 3] {
                let rs = pp + extra;
                let mut cols = vec![f64::NAN; ck * rs];
                image_to_columns(&img, &g, &mut cols, rs);
                for r in 0..ck {
                    assert_eq!(cols[r * rs..r * rs + pp], want[r * pp..(r + 1) * pp], "{g:?} row {r}");
                }
                // The adjoint: <cols(x), z> = <x, col2im(z)> for every x, so col2im(z) at pixel i
                // is the sum of z over the column entries that read pixel i.
                let z: Vec<f64> = (0..ck * rs).map(|i| ((i * 104729) % 37) as f64 - 18.0).collect();
                let mut back = vec![1.5; c * h * w];
                columns_to_image(&z, &g, &mut back, rs);
                let mut expect = vec![1.5; c * h * w];
                for (pixel, e) in expect.iter_mut().enumerate() {
                    let mut unit = vec![0.0; c * h * w];
                    unit[pixel] = 1.0;
                    let reads = naive_columns(&unit, &g);
                    for r in 0..ck {
                        for j in 0..pp {
                            *e += reads[r * pp + j] * z[r * rs + j];
                        }
                    }
                }
                assert_eq!(back, expect, "{g:?} rs {rs}");
            }
        }
    }

    #[test]
    fn gradients_are_the_same_on_every_run() {
        // Work items go to whichever thread comes free; their weight-gradient sums are added in
        // the items' order, so repeated runs agree bit for bit (a resumed training run depends on
        // it). A stride-2 convolution and a transposed one, on a pool of three threads.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let g = PatchGeometry {
            channels: 3,
            height: 9,
            width: 9,
            kernel_h: 4,
            kernel_w: 4,
            stride: 2,
            padding: 1,
            dilation: 1,
        };
        for transposed in [false, true] {
            let plan = ConvPlan { transposed, batch: 37, m: 5, g };
            let values = |n: usize, seed: usize| -> Vec<f32> {
                (0..n).map(|i| (((i + seed) * 7919) % 211) as f32 / 7.0 - 15.0).collect()
            };
            let (x, w, dy) =
                (values(37 * plan.input_len(), 1), values(5 * g.patch_len(), 2), values(37 * plan.output_len(), 3));
            let first = pool.install(|| plan.backward(&x, &w, &dy, true, true));
            assert_eq!(first.1.len(), 5 * g.patch_len());
            for _ in 0..4 {
                let again = pool.install(|| plan.backward(&x, &w, &dy, true, true));
                let bits = |v: &[f32]| v.iter().map(|e| e.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&again.0), bits(&first.0), "input gradient, transposed {transposed}");
                assert_eq!(bits(&again.1), bits(&first.1), "weight gradient, transposed {transposed}");
                assert_eq!(bits(&again.2), bits(&first.2), "bias gradient, transposed {transposed}");
            }
        }
    }

    #[test]
    fn valid_columns_cover_exactly_the_inside() {
        for (ow, stride, off, w) in [(8, 1, -2, 8), (4, 2, -1, 7), (5, 3, 2, 9), (3, 1, 5, 4), (6, 2, -9, 3)] {
            let (x0, x1) = valid_columns(ow, stride, off, w);
            for x in 0..ow {
                let src = (x * stride) as isize + off;
                let inside = src >= 0 && src < w as isize;
                assert_eq!(inside, (x0..x1).contains(&x), "ow {ow} stride {stride} off {off} w {w} x {x}");
            }
        }
    }
}
