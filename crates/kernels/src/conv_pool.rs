//! `relu(max_pool2d(conv2d(x, w, b), 2))` in one pass, f32, for x86-64 CPUs with AVX2 and FMA:
//! the conv blocks of LeNet-style networks at inference. Its tile is also the core of
//! `conv_channels`, the direct strided and transposed convolutions.
//!
//! The tiles hold 6 output positions x 16 output channels in 12 vector registers: per weight
//! `(c, ki, kj)`, two vector loads bring that weight of 16 channels and six broadcasts the input
//! pixel under each position, for 12 fused multiply-adds. `conv_direct` vectorises along output
//! rows instead, so it computes rows rounded up to 8 outputs (16 for 14, 32 for 28) and channels
//! rounded up to 6; here any six positions make a tile, and the only outputs computed for nothing
//! are those past the last position of an image (at most five) and past the last multiple of 16
//! channels. Each weight's values are summed in the same order, from the bias, as `conv_direct`
//! does, so the results are the same bit for bit.
//!
//! An image's outputs go to a position-major scratch `[P, M']` (channels contiguous); the 2x2
//! windows are pooled there eight channels at a time, the ReLU applied, and only the pooled
//! `[M, OH/2, OW/2]` is written out: the full-size output is never stored, read back and pooled.

use std::mem::MaybeUninit;
use std::sync::Mutex;

use crate::patches::PatchGeometry;
use crate::util::{assume_init_vec, images_per_item, self_scheduled, uninit_vec};

/// Output positions per tile.
pub(crate) const POS: usize = 6;
/// Output channels per tile (two vectors).
pub(crate) const CH: usize = 16;

/// Whether the fused kernel handles a convolution of this geometry on this CPU: where the
/// convolution alone takes `conv_direct`, whose sums it repeats exactly (so evaluation and
/// training forwards agree bit for bit), with outputs of at least 2x2.
pub(crate) fn applies(g: &PatchGeometry) -> bool {
    g.check().is_ok() && g.out_h() >= 2 && g.out_w() >= 2 && crate::conv_direct::applies(g)
}

/// The fused forward pass: `x [B, C, H, W]`, `w [M, C KH KW]`, `bias [M]`; returns `relu(max_pool2d(
/// conv2d(x, w) + bias, 2))`, `[B, M, OH/2, OW/2]`. Panics if `applies(g)` is false (the callers
/// check) or the slices are shorter than the shapes say.
pub(crate) fn forward(batch: usize, m: usize, g: &PatchGeometry, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f32> {
    assert!(applies(g), "fused convolution and pooling on an unsupported geometry {g:?}");
    let (oh, ow, k) = (g.out_h(), g.out_w(), g.patch_len());
    let (hp, wp) = (g.height + 2 * g.padding, g.width + 2 * g.padding);
    let il = g.channels * g.height * g.width;
    assert!(x.len() >= batch * il && w.len() >= m * k && bias.len() >= m, "fused convolution: input too short");
    // Offsets in a padded image of every weight, and of every output position's corner; the last
    // tile repeats the last position (its extra outputs are never read).
    let mut offsets = Vec::with_capacity(k);
    for c in 0..g.channels {
        for ki in 0..g.kernel_h {
            for kj in 0..g.kernel_w {
                offsets.push(c * hp * wp + ki * g.dilation * wp + kj * g.dilation);
            }
        }
    }
    let p = oh * ow;
    let tiles = p.div_ceil(POS);
    let corners: Vec<usize> =
        (0..tiles * POS).map(|i| i.min(p - 1)).map(|i| (i / ow) * g.stride * wp + (i % ow) * g.stride).collect();
    // Weights and bias in blocks of CH channels, weight-major (zero past the last channel).
    let blocks = m.div_ceil(CH);
    let mp = blocks * CH;
    let mut wpk = vec![0f32; blocks * k * CH];
    let mut bp = vec![0f32; mp];
    for row in 0..m {
        let (b, r) = (row / CH, row % CH);
        for (kk, v) in w[row * k..(row + 1) * k].iter().enumerate() {
            wpk[(b * k + kk) * CH + r] = *v;
        }
        bp[row] = bias[row];
    }
    let pp = (oh / 2) * (ow / 2);
    let mut y = uninit_vec::<f32>(batch * m * pp);
    let per = images_per_item(batch, usize::MAX);
    let items: Vec<Mutex<&mut [MaybeUninit<f32>]>> = y.chunks_mut(per * m * pp).map(Mutex::new).collect();
    let scratch = || (Vec::new(), vec![0f32; tiles * POS * mp]);
    self_scheduled(items.len(), scratch, |(padded, out), gi| {
        let mut ys = items[gi].lock().unwrap_or_else(|e| e.into_inner());
        for (j, yb) in ys.chunks_mut(m * pp).enumerate() {
            let xb = &x[(gi * per + j) * il..][..il];
            let img: &[f32] = if g.padding == 0 {
                xb
            } else {
                pad_into(xb, g, padded);
                &padded[..]
            };
            for b in 0..blocks {
                let wb = &wpk[b * k * CH..(b + 1) * k * CH];
                for t in 0..tiles {
                    let dst = &mut out[t * POS * mp + b * CH..];
                    // SAFETY: `applies` checked AVX2 and FMA; every read `img[corner + offset]` is
                    // inside the padded image (a valid geometry keeps every window inside it), `wb`
                    // holds `k` weights of CH channels, and the tile writes POS rows of CH values at
                    // stride `mp` from the start of `dst`, inside `out`.
                    unsafe { tile(img, &offsets, &corners[t * POS..(t + 1) * POS], wb, &bp[b * CH..], dst, mp) };
                }
            }
            // SAFETY: as above for AVX2; `out` holds the image's `p` positions of `mp` channels.
            unsafe { pool_relu(out, mp, m, oh, ow, yb) };
        }
    });
    drop(items);
    // SAFETY: `pool_relu` wrote every pooled output of every image.
    unsafe { assume_init_vec(y) }
}

/// Copies one image `[C, H, W]` into zero-bordered planes `[C, H + 2p, W + 2p]` in `out`
/// (resized; every element written).
fn pad_into(x: &[f32], g: &PatchGeometry, out: &mut Vec<f32>) {
    let (p, hp, wp) = (g.padding, g.height + 2 * g.padding, g.width + 2 * g.padding);
    out.clear();
    out.resize(g.channels * hp * wp, 0.0);
    for (plane, dst) in x.chunks_exact(g.height * g.width).zip(out.chunks_exact_mut(hp * wp)) {
        for (row, drow) in plane.chunks_exact(g.width).zip(dst[p * wp..].chunks_exact_mut(wp)) {
            drow[p..p + g.width].copy_from_slice(row);
        }
    }
}

/// One tile: the outputs of CH channels (weights `wb`, bias `bias[..CH]`) at the POS positions
/// whose corners are `corners`, written to `out[i * stride .. i * stride + CH]` for position `i`.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `img[c + o]` must be in bounds for every corner `c` and offset
/// `o`; `wb` must hold `offsets.len() * CH` values, `bias` CH and `out` `(POS - 1) * stride + CH`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn tile(
    img: &[f32],
    offsets: &[usize],
    corners: &[usize],
    wb: &[f32],
    bias: &[f32],
    out: &mut [f32],
    stride: usize,
) {
    use std::arch::x86_64::*;
    debug_assert!(wb.len() >= offsets.len() * CH && bias.len() >= CH && out.len() >= (POS - 1) * stride + CH);
    let c: [usize; POS] = std::array::from_fn(|i| corners[i]);
    let (xp, wp) = (img.as_ptr(), wb.as_ptr());
    // SAFETY (all loads and stores below): within the bounds stated in the function's contract.
    unsafe {
        let b0 = _mm256_loadu_ps(bias.as_ptr());
        let b1 = _mm256_loadu_ps(bias.as_ptr().add(8));
        let mut acc: [[__m256; 2]; POS] = [[b0, b1]; POS];
        for (kk, &o) in offsets.iter().enumerate() {
            let w0 = _mm256_loadu_ps(wp.add(kk * CH));
            let w1 = _mm256_loadu_ps(wp.add(kk * CH + 8));
            for (i, a) in acc.iter_mut().enumerate() {
                let v = _mm256_broadcast_ss(&*xp.add(c[i] + o));
                a[0] = _mm256_fmadd_ps(v, w0, a[0]);
                a[1] = _mm256_fmadd_ps(v, w1, a[1]);
            }
        }
        let op = out.as_mut_ptr();
        for (i, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(op.add(i * stride), a[0]);
            _mm256_storeu_ps(op.add(i * stride + 8), a[1]);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn tile(_: &[f32], _: &[usize], _: &[usize], _: &[f32], _: &[f32], _: &mut [f32], _: usize) {
    unreachable!("the fused convolution is only chosen on x86-64 CPUs with AVX2 and FMA")
}

/// Pools the position-major outputs `out [OH OW, mp]` over 2x2 windows, applies the ReLU and
/// writes the first `m` channels to `y [m, OH/2, OW/2]` (every element). Bit for bit as
/// `relu(max_pool2d(.))`: each window's first maximum in row-major order (the first NaN if any;
/// the maximum of each row's pair, then of the two, finds the same), then `x` above zero, else
/// `0 x` (-0 for negatives, NaN kept).
///
/// # Safety
/// The CPU must have AVX2 (`mp` is a multiple of 8, `out` holds `OH OW mp` values).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pool_relu(out: &[f32], mp: usize, m: usize, oh: usize, ow: usize, y: &mut [MaybeUninit<f32>]) {
    use std::arch::x86_64::*;
    let (ph, pw) = (oh / 2, ow / 2);
    let pp = ph * pw;
    debug_assert!(mp.is_multiple_of(8) && out.len() >= oh * ow * mp && y.len() >= m * pp);
    #[inline(always)]
    unsafe fn first_max(best: __m256, v: __m256) -> __m256 {
        let larger = _mm256_cmp_ps::<_CMP_GT_OQ>(v, best);
        let nan_first = _mm256_and_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v), _mm256_cmp_ps::<_CMP_ORD_Q>(best, best));
        _mm256_blendv_ps(best, v, _mm256_or_ps(larger, nan_first))
    }
    let zero = _mm256_setzero_ps();
    let mut lanes = [0f32; 8];
    let yp = y.as_mut_ptr().cast::<f32>();
    let op = out.as_ptr();
    // SAFETY (all loads and stores below): positions `< OH OW` of `mp` channels in `out`, outputs
    // `< m pp` in `y`.
    unsafe {
        for i in 0..ph {
            for j in 0..pw {
                let p00 = (2 * i * ow + 2 * j) * mp;
                let (p01, p10) = (p00 + mp, p00 + ow * mp);
                let p11 = p10 + mp;
                for v in 0..mp / 8 {
                    let at = |p: usize| _mm256_loadu_ps(op.add(p + v * 8));
                    let best = first_max(first_max(at(p00), at(p01)), first_max(at(p10), at(p11)));
                    let r = _mm256_blendv_ps(_mm256_mul_ps(best, zero), best, _mm256_cmp_ps::<_CMP_GT_OQ>(best, zero));
                    _mm256_storeu_ps(lanes.as_mut_ptr(), r);
                    for (l, val) in lanes.iter().enumerate().take(m.saturating_sub(v * 8).min(8)) {
                        *yp.add((v * 8 + l) * pp + i * pw + j) = *val;
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pool_relu(_: &[f32], _: usize, _: usize, _: usize, _: usize, _: &mut [MaybeUninit<f32>]) {
    unreachable!("the fused convolution is only chosen on x86-64 CPUs with AVX2 and FMA")
}
