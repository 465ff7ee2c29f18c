//! Direct stride-1 convolutions in f32 for x86-64 CPUs with AVX2 and FMA: the forward pass and
//! the weight gradient without a column buffer.
//!
//! With stride 1 and no dilation, eight neighbouring outputs of one output row read eight
//! neighbouring pixels of the input for every weight `(c, ki, kj)`: one unaligned vector load at
//! offset `c H W + ki W + kj` from the outputs' own corner. So the kernels read the image itself
//! where the GEMM path first writes its `C KH KW x OH OW` columns and then packs them (for the
//! 5x5 convolutions of LeNet-sized networks that copy costs as much as a third of the GEMM).
//!
//! - forward: a tile of 6 output channels x 16 outputs (two vectors) lives in 12 registers;
//!   per weight, two image loads and six broadcast weights feed 12 fused multiply-adds;
//! - weight gradient `dW[o, k] = sum_(b, p) dy[b, o, p] x[b, k + p]`: a tile of 6 output
//!   channels x 2 weights keeps 12 vector sums over the outputs of a block of images, added
//!   across lanes once per block.
//!
//! Padding, and output rows whose width is not a multiple of 8, go through a *wide* layout: each
//! image is copied into a zero-bordered plane `OH + KH - 1` rows high and `OW' + KW - 1` wide,
//! where `OW'` is the output width rounded up to 8; the forward pass computes `OW'` outputs per
//! row and keeps the first `OW`, and the weight gradient reads the output gradient widened with
//! zeros, so the extra outputs add nothing. Unpadded convolutions whose output width is a
//! multiple of 8 (LeNet's 28 -> 24 and 12 -> 8) read their inputs and gradients in place.
//!
//! Used for f32 when the widening wastes at most a quarter of the work and the CPU has AVX2 and
//! FMA (`ZOO_NO_DIRECT_CONV` set in the environment turns it off); every other convolution takes
//! the GEMM path (`conv_cpu`), which these kernels are tested against. Where the
//! channel-vectorised kernels of `conv_channels` fit (16-channel tiles), `conv_cpu` gives them the
//! weight gradient, and the forward pass too unless these kernels read the images in place.

use std::mem::MaybeUninit;
use std::sync::Mutex;

use crate::patches::PatchGeometry;
use crate::util::{assume_init_vec, images_per_item, ordered_sum, self_scheduled, uninit_vec};

/// Whether the direct kernels handle a convolution of this geometry on this CPU.
pub(crate) fn applies(g: &PatchGeometry) -> bool {
    let ow = g.out_w();
    let owr = ow.next_multiple_of(8);
    // Every tile reads the whole (wide) image once per weight row, from L2 when it does not fit
    // the core's L1: past a point the GEMM path is faster (see `IMAGE_BUDGET`).
    let image_bytes = 4 * g.channels * (g.out_h() + g.kernel_h - 1) * (owr + g.kernel_w - 1);
    g.stride == 1 && g.dilation == 1 && ow > 0 && owr * 4 <= ow * 5 && image_bytes <= IMAGE_BUDGET && cpu_has_avx2_fma()
}

/// Whether the direct kernels use a convolution's images and output gradients as they are (no
/// padding, output rows a multiple of eight wide): where they need no widened copies.
pub(crate) fn in_place(g: &PatchGeometry) -> bool {
    applies(g) && g.padding == 0 && g.out_w().is_multiple_of(8)
}

/// The largest (wide) image the direct kernels take, in bytes. Measured on a Zen 3 core (32 KB
/// L1, 512 KB L2): the judge's second convolution (32 -> 64, 5x5 on 14x14 padded by 2: 45 KB wide
/// images) is faster direct (judge inference 80 -> 65 ms at two threads), a 64 -> 128 3x3
/// convolution on 14x14 padded by 1 (72 KB) slower (forward and backward 110 -> 127 ms at one
/// thread).
const IMAGE_BUDGET: usize = 48 * 1024;

#[cfg(target_arch = "x86_64")]
pub(crate) fn cpu_has_avx2_fma() -> bool {
    std::env::var_os("ZOO_NO_DIRECT_CONV").is_none()
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn cpu_has_avx2_fma() -> bool {
    false
}

/// The wide layout of one convolution, and the offsets shared by both kernels.
struct Wide {
    g: PatchGeometry,
    /// Output height and width, and the width rounded up to 8.
    oh: usize,
    ow: usize,
    owr: usize,
    /// Height and width of the (padded) image planes the kernels read.
    hp: usize,
    wp: usize,
    /// Whether the images and output gradients are used as they are (no padding, `OW = OW'`).
    in_place: bool,
    /// Offset of every weight `(c, ki, kj)` in an image: `c hp wp + ki wp + kj`.
    weight: Vec<usize>,
    /// Offset in an image of the first output of every eight-output vector (`OH OW' / 8`).
    vector: Vec<usize>,
}

impl Wide {
    fn new(g: &PatchGeometry) -> Self {
        let (oh, ow) = (g.out_h(), g.out_w());
        let owr = ow.next_multiple_of(8);
        let (hp, wp) = (oh + g.kernel_h - 1, owr + g.kernel_w - 1);
        let mut weight = Vec::with_capacity(g.patch_len());
        for c in 0..g.channels {
            for ki in 0..g.kernel_h {
                for kj in 0..g.kernel_w {
                    weight.push(c * hp * wp + ki * wp + kj);
                }
            }
        }
        let vector = (0..oh * owr / 8).map(|v| (v * 8 / owr) * wp + (v * 8) % owr).collect();
        let in_place = g.padding == 0 && owr == ow;
        Self { g: *g, oh, ow, owr, hp, wp, in_place, weight, vector }
    }
    /// Elements of one image as given, and as the kernels read it.
    fn image_len(&self) -> usize {
        self.g.channels * self.g.height * self.g.width
    }
    fn plane_len(&self) -> usize {
        self.g.channels * self.hp * self.wp
    }
    /// Outputs per channel, and wide outputs per channel.
    fn p(&self) -> usize {
        self.oh * self.ow
    }
    fn pw(&self) -> usize {
        self.oh * self.owr
    }
    /// Copies images `[n, C, H, W]` into the zero-bordered planes `[n, C, hp, wp]` of `out`
    /// (resized; every element written).
    fn widen_images(&self, x: &[f32], out: &mut Vec<f32>) {
        let (g, pad) = (&self.g, self.g.padding);
        let n = x.len() / self.image_len();
        out.clear();
        out.resize(n * self.plane_len(), 0.0);
        for (img, dst) in x.chunks_exact(self.image_len()).zip(out.chunks_exact_mut(self.plane_len())) {
            for (plane, dplane) in img.chunks_exact(g.height * g.width).zip(dst.chunks_exact_mut(self.hp * self.wp)) {
                for (row, drow) in plane.chunks_exact(g.width).zip(dplane[pad * self.wp..].chunks_exact_mut(self.wp)) {
                    drow[pad..pad + g.width].copy_from_slice(row);
                }
            }
        }
    }
    /// Copies output gradients `[n, M, OH, OW]` into `[n, M, OH, OW']`, zeros in the extra
    /// columns.
    fn widen_outputs(&self, dy: &[f32], out: &mut Vec<f32>) {
        out.clear();
        out.resize(dy.len() / self.ow * self.owr, 0.0);
        for (row, drow) in dy.chunks_exact(self.ow).zip(out.chunks_exact_mut(self.owr)) {
            drow[..self.ow].copy_from_slice(row);
        }
    }
}

/// Output channels per tile.
const MR: usize = 6;
/// Output vectors (of 8) per forward tile; weights per weight-gradient tile. With [`MR`], 12
/// accumulators, two loaded vectors and one broadcast: 15 of the 16 vector registers (with a
/// 4 x 3 tile, all 16, the compiler shuffled registers and spilled in the inner loop).
const NV: usize = 2;

/// The forward pass: `x [B, C, H, W]`, `w [M, C KH KW]`, optional bias `[M]`; returns `[B, M, OH,
/// OW]`. Panics if `applies(g)` is false (the callers check) or the slices are shorter than the
/// shapes say.
pub(crate) fn forward(
    batch: usize,
    m: usize,
    g: &PatchGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert!(applies(g), "direct convolution on an unsupported geometry {g:?}");
    let wide = Wide::new(g);
    let (k, p, pw, il) = (g.patch_len(), wide.p(), wide.pw(), wide.image_len());
    assert!(x.len() >= batch * il && w.len() >= m * k, "direct convolution: input or weight too short");
    // The weight in tiles of MR rows, weight-major: tile t holds `wp[t][k][r] = w[t MR + r][k]`
    // (zero past the last row), so each step of the kernel reads MR neighbouring values.
    let tiles = m.div_ceil(MR);
    let mut wp = vec![0f32; tiles * k * MR];
    for row in 0..m {
        let (t, r) = (row / MR, row % MR);
        for (kk, v) in w[row * k..(row + 1) * k].iter().enumerate() {
            wp[(t * k + kk) * MR + r] = *v;
        }
    }
    // Written without a zero fill: the tiles cover every output (in place) or the copy out of
    // the wide outputs does.
    let mut y = uninit_vec::<f32>(batch * m * p);
    let per = images_per_item(batch, usize::MAX);
    let items: Vec<Mutex<&mut [MaybeUninit<f32>]>> = y.chunks_mut(per * m * p).map(Mutex::new).collect();
    let scratch = || (Vec::new(), vec![0f32; if wide.in_place { 0 } else { m * pw }]);
    self_scheduled(items.len(), scratch, |(plane, out), gi| {
        let mut ys = items[gi].lock().unwrap_or_else(|e| e.into_inner());
        for (j, yb) in ys.chunks_mut(m * p).enumerate() {
            let xb = &x[(gi * per + j) * il..][..il];
            let xb = if wide.in_place {
                xb
            } else {
                wide.widen_images(xb, plane);
                &plane[..]
            };
            let ywide: &mut [MaybeUninit<f32>] = if wide.in_place {
                &mut yb[..]
            } else {
                // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and only `f32` values are
                // written through the view.
                unsafe { &mut *(&mut out[..] as *mut [f32] as *mut [MaybeUninit<f32>]) }
            };
            for t in 0..tiles {
                let rows = MR.min(m - t * MR);
                let init: [f32; MR] = std::array::from_fn(|r| bias.filter(|_| r < rows).map_or(0.0, |b| b[t * MR + r]));
                let wt = &wp[t * k * MR..(t + 1) * k * MR];
                let yt = &mut ywide[t * MR * pw..(t * MR + rows) * pw];
                let mut v0 = 0;
                while v0 < wide.vector.len() {
                    let nv = NV.min(wide.vector.len() - v0);
                    // SAFETY: `applies` checked AVX2 and FMA; the kernel's reads stay inside `xb`
                    // (one wide image, see `forward_tile`) and `wt`, its writes inside `yt` (rows
                    // `< rows`, vectors `v0 .. v0 + nv` of `pw / 8`).
                    unsafe {
                        match nv {
                            2 => forward_tile::<2>(xb, &wide, v0, wt, init, yt, rows, pw),
                            _ => forward_tile::<1>(xb, &wide, v0, wt, init, yt, rows, pw),
                        }
                    }
                    v0 += nv;
                }
            }
            if !wide.in_place {
                for (row, wrow) in yb.chunks_exact_mut(wide.ow).zip(out.chunks_exact(wide.owr)) {
                    for (d, v) in row.iter_mut().zip(&wrow[..wide.ow]) {
                        d.write(*v);
                    }
                }
            }
        }
    });
    drop(items);
    // SAFETY: every output was written above (see the comment at the allocation).
    unsafe { assume_init_vec(y) }
}

/// One forward tile: `V` output vectors from `v0` for the `rows` channels of one weight tile,
/// written to `y` (row `r` at `y[r p ..]`, `p` wide outputs per channel).
///
/// # Safety
/// The CPU must have AVX2 and FMA. Every load reads `x[o + b .. o + b + 8]` for a weight offset
/// `o` and a vector offset `b`; the largest, `(C-1) hp wp + (KH-1) wp + (KW-1) + (OH-1) wp + OW'
/// - 8 + 8`, is `C hp wp` (as `hp = OH + KH - 1`, `wp = OW' + KW - 1`), so `x` must hold one
/// wide image; `wt` must hold `K * MR` values and `y` `rows * p`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_tile<const V: usize>(
    x: &[f32],
    offsets: &Wide,
    v0: usize,
    wt: &[f32],
    init: [f32; MR],
    y: &mut [MaybeUninit<f32>],
    rows: usize,
    p: usize,
) {
    use std::arch::x86_64::*;
    let k = offsets.weight.len();
    debug_assert!(wt.len() >= k * MR && y.len() >= rows * p && v0 + V <= p / 8);
    let base: [usize; V] = std::array::from_fn(|v| offsets.vector[v0 + v]);
    debug_assert!(base[V - 1] + offsets.weight[k - 1] + 8 <= x.len());
    let xp = x.as_ptr();
    let wp = wt.as_ptr();
    // SAFETY (all loads and stores below): within the bounds stated in the function's contract.
    unsafe {
        let mut acc: [[__m256; V]; MR] = std::array::from_fn(|r| [_mm256_set1_ps(init[r]); V]);
        for (kk, &o) in offsets.weight.iter().enumerate() {
            let b: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(xp.add(base[v] + o)));
            let wk = wp.add(kk * MR);
            for (r, row) in acc.iter_mut().enumerate() {
                let a = _mm256_broadcast_ss(&*wk.add(r));
                for (s, bv) in row.iter_mut().zip(&b) {
                    *s = _mm256_fmadd_ps(a, *bv, *s);
                }
            }
        }
        let yp = y.as_mut_ptr().cast::<f32>();
        for (r, row) in acc.iter().enumerate().take(rows) {
            for (v, s) in row.iter().enumerate() {
                _mm256_storeu_ps(yp.add(r * p + (v0 + v) * 8), *s);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_tile<const V: usize>(
    _: &[f32],
    _: &Wide,
    _: usize,
    _: &[f32],
    _: [f32; MR],
    _: &mut [MaybeUninit<f32>],
    _: usize,
    _: usize,
) {
    unreachable!("the direct convolution is only chosen on x86-64 CPUs with AVX2 and FMA")
}

/// The weight gradient `[M, C KH KW]` and the bias gradient `[M]` from the input `[B, C, H, W]`
/// and the output's gradient `[B, M, OH, OW]`.
pub(crate) fn weight_grad(batch: usize, m: usize, g: &PatchGeometry, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    assert!(applies(g), "direct convolution on an unsupported geometry {g:?}");
    let wide = Wide::new(g);
    let (k, p, pw) = (g.patch_len(), wide.p(), wide.pw());
    let (il, pl) = (wide.image_len(), wide.plane_len());
    assert!(x.len() >= batch * il && dy.len() >= batch * m * p, "direct convolution: input or gradient too short");
    let per = images_per_item(batch, usize::MAX);
    // Images per block: their (wide) inputs and output gradients within about 256 KB (the
    // core's cache), as each tile reads the whole block.
    let block = ((1usize << 16) / (pl + m * pw).max(1)).clamp(1, per);
    // Each work item's sums are kept apart and added in the items' order at the end, so that the
    // result does not depend on which thread ran which item.
    let count = batch.div_ceil(per);
    let sums = self_scheduled(
        count,
        || (Vec::new(), Vec::new()),
        |(planes, grads): &mut (Vec<f32>, Vec<f32>), gi| {
            let mut dw = vec![0f32; m * k];
            let mut db = vec![0f32; m];
            let (first, last) = (gi * per, ((gi + 1) * per).min(batch));
            for b in first..last {
                for (o, s) in db.iter_mut().enumerate() {
                    *s += dy[(b * m + o) * p..][..p].iter().sum::<f32>();
                }
            }
            let mut b0 = first;
            while b0 < last {
                let n = block.min(last - b0);
                let (xs, dys) = (&x[b0 * il..(b0 + n) * il], &dy[b0 * m * p..(b0 + n) * m * p]);
                let (xs, dys) = if wide.in_place {
                    (xs, dys)
                } else {
                    wide.widen_images(xs, planes);
                    wide.widen_outputs(dys, grads);
                    (&planes[..], &grads[..])
                };
                for r0 in (0..m).step_by(MR) {
                    let rows = MR.min(m - r0);
                    let mut k0 = 0;
                    while k0 < k {
                        let nk = NV.min(k - k0);
                        // SAFETY: `applies` checked AVX2 and FMA; the reads stay inside `xs` (`n`
                        // wide images, as in the forward pass) and `dys` (rows `r0 .. r0 + rows`
                        // of each image's `m` wide rows).
                        unsafe {
                            match (rows, nk) {
                                (6, 2) => weight_tile::<6, 2>(xs, dys, &wide, r0, k0, n, m, pl, &mut dw),
                                (6, _) => weight_tile::<6, 1>(xs, dys, &wide, r0, k0, n, m, pl, &mut dw),
                                (5, 2) => weight_tile::<5, 2>(xs, dys, &wide, r0, k0, n, m, pl, &mut dw),
                                (5, _) => weight_tile::<5, 1>(xs, dys, &wide, r0, k0, n, m, pl, &mut dw),
                                (4, 2) => weight_tile::<4, 2>(xs, dys, &wide, r0, k0, n, m, pl, &mut dw),
                                (4, _) => weight_tile::<4, 1>(xs, dys, &wide, r0, k0, n, m, pl, &mut dw),
                                (3, 2) => weight_tile::<3, 2>(xs, dys, &wide, r0, k0, n, m, pl, &mut dw),
                                (3, _) => weight_tile::<3, 1>(xs, dys, &wide, r0, k0, n, m, pl, &mut dw),
                                (2, 2) => weight_tile::<2, 2>(xs, dys, &wide, r0, k0, n, m, pl, &mut dw),
                                (2, _) => weight_tile::<2, 1>(xs, dys, &wide, r0, k0, n, m, pl, &mut dw),
                                (_, 2) => weight_tile::<1, 2>(xs, dys, &wide, r0, k0, n, m, pl, &mut dw),
                                (_, _) => weight_tile::<1, 1>(xs, dys, &wide, r0, k0, n, m, pl, &mut dw),
                            }
                        }
                        k0 += nk;
                    }
                }
                b0 += n;
            }
            (dw, db)
        },
    );
    let (dws, dbs): (Vec<Vec<f32>>, Vec<Vec<f32>>) = sums.into_iter().unzip();
    (ordered_sum(dws, m * k), ordered_sum(dbs, m))
}

/// One weight-gradient tile over `n` images: adds to `dw[r0 + r][k0 + j]` (rows of `C KH KW`) for
/// `r < R`, `j < J` the sum over every output of every image.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `x` must hold `n` wide images (`il` each) and `dy` `n` wide
/// output gradients (`m` rows of `OH OW'` each), with `r0 + R <= m` and `k0 + J <= C KH KW`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_tile<const R: usize, const J: usize>(
    x: &[f32],
    dy: &[f32],
    offsets: &Wide,
    r0: usize,
    k0: usize,
    n: usize,
    m: usize,
    il: usize,
    dw: &mut [f32],
) {
    use std::arch::x86_64::*;
    let p = offsets.vector.len() * 8;
    debug_assert!(x.len() >= n * il && dy.len() >= n * m * p && r0 + R <= m && k0 + J <= offsets.weight.len());
    let o: [usize; J] = std::array::from_fn(|j| offsets.weight[k0 + j]);
    // SAFETY (all loads below): within the bounds stated in the function's contract (the image
    // reads as in `forward_tile`).
    unsafe {
        let mut acc: [[__m256; J]; R] = [[_mm256_setzero_ps(); J]; R];
        for b in 0..n {
            let xp = x.as_ptr().add(b * il);
            let dp = dy.as_ptr().add((b * m + r0) * p);
            for (v, &base) in offsets.vector.iter().enumerate() {
                let xv: [__m256; J] = std::array::from_fn(|j| _mm256_loadu_ps(xp.add(base + o[j])));
                for (r, row) in acc.iter_mut().enumerate() {
                    let d = _mm256_loadu_ps(dp.add(r * p + v * 8));
                    for (s, xj) in row.iter_mut().zip(&xv) {
                        *s = _mm256_fmadd_ps(d, *xj, *s);
                    }
                }
            }
        }
        let k = offsets.weight.len();
        for (r, arow) in acc.iter().enumerate() {
            for (j, s) in arow.iter().enumerate() {
                let h = _mm_add_ps(_mm256_castps256_ps128(*s), _mm256_extractf128_ps(*s, 1));
                let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
                let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
                dw[(r0 + r) * k + k0 + j] += _mm_cvtss_f32(h);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_tile<const R: usize, const J: usize>(
    _: &[f32],
    _: &[f32],
    _: &Wide,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: &mut [f32],
) {
    unreachable!("the direct convolution is only chosen on x86-64 CPUs with AVX2 and FMA")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv_cpu::ConvPlan;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i * 7919 + seed * 104729) % 211) as f32 - 105.0) / 53.0).collect()
    }

    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{what}: element {i}: {x} against {y}");
        }
    }

    #[test]
    fn the_weight_gradient_is_the_same_on_every_run() {
        if !cpu_has_avx2_fma() {
            return;
        }
        // Items go to whichever thread comes free; their sums are added in the items' order.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let g = PatchGeometry {
            channels: 3,
            height: 10,
            width: 16,
            kernel_h: 5,
            kernel_w: 5,
            stride: 1,
            padding: 2,
            dilation: 1,
        };
        assert!(applies(&g));
        let (batch, m) = (29, 7);
        let (x, dy) = (values(batch * 3 * 10 * 16, 1), values(batch * m * 10 * 16, 2));
        let bits = |v: &[f32]| v.iter().map(|e| e.to_bits()).collect::<Vec<_>>();
        let (dw, db) = pool.install(|| weight_grad(batch, m, &g, &x, &dy));
        for _ in 0..4 {
            let (dw2, db2) = pool.install(|| weight_grad(batch, m, &g, &x, &dy));
            assert_eq!(bits(&dw2), bits(&dw));
            assert_eq!(bits(&db2), bits(&db));
        }
    }

    #[test]
    fn the_direct_kernels_agree_with_the_gemm_path() {
        if !cpu_has_avx2_fma() {
            eprintln!("this CPU has no AVX2 and FMA: the direct kernels are never used here");
            return;
        }
        let g = |channels, height, width, kernel_h, kernel_w, padding| PatchGeometry {
            channels,
            height,
            width,
            kernel_h,
            kernel_w,
            stride: 1,
            padding,
            dilation: 1,
        };
        // Remainders everywhere: output channels leaving 1-5 after tiles of 6 (and none), odd
        // numbers of output vectors and of weights `C KH KW` (tiles of 2), several vectors per
        // output row and several rows per vector tile, odd batches (split between threads);
        // in place (no padding, outputs a multiple of 8 wide) and wide (padding, or widths of
        // 13, 14, 20 and 28 outputs).
        for (batch, m, geometry) in [
            (5, 6, g(3, 10, 12, 5, 5, 0)),
            (3, 5, g(1, 9, 20, 4, 5, 0)),
            (9, 7, g(4, 12, 12, 5, 5, 0)),
            (2, 9, g(2, 3, 17, 2, 2, 0)),
            (1, 4, g(3, 28, 28, 5, 5, 0)),
            (4, 11, g(3, 7, 12, 3, 5, 0)),
            (2, 8, g(1, 5, 9, 1, 2, 0)),
            (3, 7, g(2, 28, 28, 5, 5, 2)),
            (5, 6, g(3, 14, 14, 5, 5, 2)),
            (2, 5, g(1, 9, 13, 3, 3, 1)),
            (3, 4, g(2, 8, 22, 3, 3, 0)),
            (2, 3, g(2, 6, 8, 3, 3, 4)),
        ] {
            assert!(applies(&geometry), "{geometry:?}");
            let plan = ConvPlan { transposed: false, batch, m, g: geometry };
            let (k, p) = (geometry.patch_len(), geometry.out_h() * geometry.out_w());
            let il = geometry.channels * geometry.height * geometry.width;
            let (x, w, bias) = (values(batch * il, 1), values(m * k, 2), values(m, 3));
            let what = format!("batch {batch}, {m} channels, {geometry:?}");
            close(
                &forward(batch, m, &geometry, &x, &w, Some(&bias)),
                &plan.forward(&x, &w, Some(&bias)),
                &format!("forward with a bias, {what}"),
            );
            close(
                &forward(batch, m, &geometry, &x, &w, None),
                &plan.forward(&x, &w, None),
                &format!("forward, {what}"),
            );
            let dy = values(batch * m * p, 4);
            let (dw, db) = weight_grad(batch, m, &geometry, &x, &dy);
            let (_, want_dw, want_db) = plan.backward(&x, &w, &dy, false, true);
            close(&dw, &want_dw, &format!("weight gradient, {what}"));
            close(&db, &want_db, &format!("bias gradient, {what}"));
        }
        // Images too large for the direct kernels' cache budget, too much widening, stride 2.
        assert!(!applies(&g(64, 14, 14, 3, 3, 1)), "72 KB images");
        assert!(applies(&g(32, 14, 14, 5, 5, 2)), "the judge's 45 KB images");
        assert!(!applies(&g(4, 12, 14, 3, 3, 0)), "12 outputs widened to 16");
        assert!(!applies(&PatchGeometry { stride: 2, ..g(2, 18, 18, 2, 2, 0) }), "stride 2");
    }
}
