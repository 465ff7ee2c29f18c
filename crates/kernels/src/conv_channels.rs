//! Direct strided and transposed convolutions vectorised along channels, f32, for x86-64 CPUs
//! with AVX2 and FMA (detected at run time).
//!
//! A convolution's two data passes, in the terms of [`crate::conv_cpu`]'s plans (weight
//! `[M, C KH KW]`, image side `[C, H, W]`, column side `[M, OH, OW]`):
//!
//! - [`to_columns`]: `out[r, o] = sum_{c, ki, kj} w[r, c, ki, kj] img[c, o s - p + k d]`, the
//!   forward pass of a convolution and the input gradient of a transposed one;
//! - [`to_image`]: `out[c, y] = sum_{r, ki, kj : y = o s - p + k d} w[r, c, ki, kj] col[r, o]`, the
//!   forward pass of a transposed convolution and the input gradient of a convolution.
//!
//! Both run on `conv_pool`'s tile: 6 output positions x 16 output channels in 12 vector
//! registers, per term two vector loads of 16 channels' weights and six broadcasts of the input
//! under each position. Any six positions make a tile, also across the images of a group, so no
//! output is computed for rounding except past the batch's last position and the last multiple of
//! 16 channels. For [`to_image`] the outputs are split into the stride's `s x s` phases (outputs
//! `y = i s + a`): within a phase every output sees the same taps `k` (those with `a + p - k d`
//! a multiple of `s`), at input row `i + (a + p - k d) / s`, so a phase is a stride-1 correlation
//! of the zero-bordered column side, with no multiply-adds spent on taps that miss. (The GEMM
//! path computes every tap's product into columns and adds them back into the image.)
//!
//! The weight gradient stays a GEMM (`conv_cpu`): its reduction runs over the batch's positions,
//! which one GEMM of the patch columns covers well.
//!
//! Each output's sum runs in a fixed order from its bias, the same whichever thread computes it.

use std::mem::MaybeUninit;
use std::sync::Mutex;

use crate::conv_pool::{tile, CH, POS};
use crate::patches::PatchGeometry;
use crate::util::{assume_init_vec, images_per_item, ordered_sum, self_scheduled, transpose, uninit_vec};

/// Padded input images per group, in bytes: the group's tiles all read it, so it should stay
/// in L2 beside the weights of a channel block.
const GROUP_BYTES: usize = 256 * 1024;

/// Whether output channels `n` fill the 16-channel tiles well enough (at most a quarter
/// computed for nothing).
fn channels_fit(n: usize) -> bool {
    n >= CH && n.next_multiple_of(CH) * 4 <= n * 5
}

/// Whether the kernels take a plan of this geometry on this CPU at all.
fn geometry_applies(g: &PatchGeometry) -> bool {
    g.check().is_ok() && g.out_h() > 0 && g.out_w() > 0 && crate::conv_direct::cpu_has_avx2_fma()
}

/// Whether [`to_columns`] handles weight rows `m` over geometry `g`.
pub(crate) fn columns_apply(m: usize, g: &PatchGeometry) -> bool {
    geometry_applies(g) && channels_fit(m)
}

/// Whether [`to_image`] handles weight rows `m` over geometry `g`: also, at least three quarters
/// of its multiply-adds must count. Each output of a phase sums all the phase's taps, over a
/// zero-bordered column side, so taps that fall outside it multiply zeros: a 5x5 kernel taking
/// 8x8 outputs back to 12x12 inputs (unpadded) would spend 56 % of its work on zeros, where the
/// GEMM path and `col2im` spend none.
pub(crate) fn image_applies(m: usize, g: &PatchGeometry) -> bool {
    geometry_applies(g) && channels_fit(g.channels) && m > 0 && 4 * useful_share(g).0 >= 3 * useful_share(g).1
}

/// `(useful, computed)` multiply-adds per channel pair of [`to_image`] over one image: the terms
/// whose input lies inside the column side, and those its phases compute.
fn useful_share(g: &PatchGeometry) -> (usize, usize) {
    let axis = |size: usize, inputs: usize, kernel: usize| {
        let (s, p, d) = (g.stride as isize, g.padding as isize, g.dilation as isize);
        let useful = (0..inputs as isize)
            .flat_map(|o| (0..kernel as isize).map(move |k| o * s - p + k * d))
            .filter(|&y| y >= 0 && y < size as isize)
            .count();
        let computed: usize = axis_phases(size, inputs, kernel, g).0.iter().map(|(_, n, taps)| n * taps.len()).sum();
        (useful, computed)
    };
    let (uy, cy) = axis(g.height, g.out_h(), g.kernel_h);
    let (ux, cx) = axis(g.width, g.out_w(), g.kernel_w);
    (uy * ux, cy * cx)
}

/// Weights packed for the tiles: blocks of CH output channels, each `terms x CH` in term order,
/// zero past the last channel; `weight_at(t, o)` is the index in `w` of term `t`'s weight for
/// output channel `o`.
fn pack(
    w: &[f32],
    outputs: usize,
    terms: usize,
    weight_at: impl Fn(usize, usize) -> usize, // (term, output channel) -> index into w
) -> Vec<f32> {
    let blocks = outputs.div_ceil(CH);
    let mut out = vec![0f32; blocks * terms * CH];
    for o in 0..outputs {
        let (b, r) = (o / CH, o % CH);
        for t in 0..terms {
            out[(b * terms + t) * CH + r] = w[weight_at(t, o)];
        }
    }
    out
}

/// The bias (or zeros) padded to whole channel blocks.
fn padded_bias(bias: Option<&[f32]>, outputs: usize) -> Vec<f32> {
    let mut b = vec![0f32; outputs.next_multiple_of(CH)];
    if let Some(bias) = bias {
        b[..outputs].copy_from_slice(&bias[..outputs]);
    }
    b
}

/// Copies images `[n, C, H, W]` into zero-bordered planes `[n, C, H + top + bottom, W + left +
/// right]` in `out` (resized; every element written).
fn pad_images(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    (top, bottom, left, right): (usize, usize, usize, usize),
    out: &mut Vec<f32>,
) {
    let (hp, wp) = (h + top + bottom, w + left + right);
    let planes = x.len() / (h * w);
    debug_assert_eq!(planes % c, 0);
    out.clear();
    out.resize(planes * hp * wp, 0.0);
    for (plane, dst) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(hp * wp)) {
        for (row, drow) in plane.chunks_exact(w).zip(dst[top * wp..].chunks_exact_mut(wp)) {
            drow[left..left + w].copy_from_slice(row);
        }
    }
}

/// One pass of tiles over a group: for every channel block of `wpk` (`terms` terms each), the
/// outputs at `corners` (a multiple of POS long) into `out [corners, mp]`.
fn run_tiles(img: &[f32], offsets: &[usize], corners: &[usize], wpk: &[f32], bias: &[f32], out: &mut [f32]) {
    let mp = bias.len();
    let terms = offsets.len();
    debug_assert!(corners.len().is_multiple_of(POS) && out.len() >= corners.len() * mp);
    debug_assert!(
        corners.iter().max().zip(offsets.iter().max()).is_none_or(|(c, o)| c + o < img.len()),
        "a tile would read past the padded images"
    );
    for b in 0..mp / CH {
        let wb = &wpk[b * terms * CH..(b + 1) * terms * CH];
        for (t, cs) in corners.chunks_exact(POS).enumerate() {
            // SAFETY: the callers check AVX2 and FMA (`geometry_applies`); every read
            // `img[corner + offset]` is inside `img` (asserted above in debug builds, by
            // construction of the zero border otherwise), `wb` holds `terms` weights of CH
            // channels and `bias[b CH..]` CH values, and the tile writes POS rows of CH values at
            // stride `mp` from `out[t POS mp + b CH]`, inside `out`.
            unsafe { tile(img, offsets, cs, wb, &bias[b * CH..], &mut out[t * POS * mp + b * CH..], mp) };
        }
    }
}

/// Corners of `n` images' `p` positions each (`corner(i)` within an image of `len` elements),
/// rounded up to whole tiles by repeating the last position.
fn group_corners(n: usize, p: usize, len: usize, corner: impl Fn(usize) -> usize, out: &mut Vec<usize>) {
    let total = n * p;
    out.clear();
    out.extend((0..total.next_multiple_of(POS)).map(|i| i.min(total - 1)).map(|i| (i / p) * len + corner(i % p)));
}

/// The offset of every term `(c, ki, kj)` of a patch from its corner, in images padded by
/// `g.padding` on every side.
fn patch_offsets(g: &PatchGeometry) -> Vec<usize> {
    let (hp, wp) = (g.height + 2 * g.padding, g.width + 2 * g.padding);
    let mut offsets = Vec::with_capacity(g.patch_len());
    for c in 0..g.channels {
        for ki in 0..g.kernel_h {
            for kj in 0..g.kernel_w {
                offsets.push(c * hp * wp + ki * g.dilation * wp + kj * g.dilation);
            }
        }
    }
    offsets
}

/// `[B, M, OH, OW]` from images `x [B, C, H, W]` and weights `w [M, C KH KW]` (plus `bias[r]` on
/// row `r` when given): a convolution's forward pass, a transposed convolution's input gradient.
/// Panics unless [`columns_apply`] holds (the callers check) or if the slices are too short.
pub(crate) fn to_columns(
    batch: usize,
    m: usize,
    g: &PatchGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert!(columns_apply(m, g), "channel-vectorised convolution on an unsupported geometry {g:?}");
    let (oh, ow, k) = (g.out_h(), g.out_w(), g.patch_len());
    let (hp, wp) = (g.height + 2 * g.padding, g.width + 2 * g.padding);
    let (il, plen, p) = (g.channels * g.height * g.width, g.channels * hp * wp, oh * ow);
    assert!(x.len() >= batch * il && w.len() >= m * k, "convolution: input or weight too short");
    let offsets = patch_offsets(g);
    let wpk = pack(w, m, k, |t, r| r * k + t);
    let bp = padded_bias(bias, m);
    let mp = bp.len();
    let corner = |i: usize| (i / ow) * g.stride * wp + (i % ow) * g.stride;
    let mut y = uninit_vec::<f32>(batch * m * p);
    let per = images_per_item(batch, usize::MAX);
    let group = (GROUP_BYTES / (4 * (plen + p * mp)).max(1)).clamp(1, per);
    let items: Vec<Mutex<&mut [MaybeUninit<f32>]>> = y.chunks_mut(per * m * p).map(Mutex::new).collect();
    let scratch = || (Vec::new(), Vec::new(), vec![0f32; (group * p).next_multiple_of(POS) * mp]);
    self_scheduled(items.len(), scratch, |(padded, corners, out), gi| {
        let mut ys = items[gi].lock().unwrap_or_else(|e| e.into_inner());
        let first = gi * per;
        for (j, yg) in ys.chunks_mut(group * m * p).enumerate() {
            let n = yg.len() / (m * p);
            let xg = &x[(first + j * group) * il..][..n * il];
            pad_images(xg, (g.channels, g.height, g.width), (g.padding, g.padding, g.padding, g.padding), padded);
            group_corners(n, p, plen, corner, corners);
            run_tiles(padded, &offsets, corners, &wpk, &bp, out);
            for (yb, ob) in yg.chunks_mut(m * p).zip(out.chunks(p * mp)) {
                // SAFETY: `ob` holds `p` rows of `mp >= m` values, `yb` `m` rows of `p`.
                unsafe { transpose(ob.as_ptr(), mp, yb.as_mut_ptr().cast::<f32>(), p, p, m) };
            }
        }
    });
    drop(items);
    // SAFETY: every item wrote every position of every row of its images.
    unsafe { assume_init_vec(y) }
}

/// The taps of one phase `a` (outputs `a, a + s, ...` along one axis of `size` outputs) of a
/// kernel of `kernel` taps: `(tap, input offset)` for the taps `k` with `a + p - k d` a multiple
/// of `s`, the offset `(a + p - k d) / s` (possibly negative).
fn phase_taps(a: usize, kernel: usize, g: &PatchGeometry) -> Vec<(usize, isize)> {
    let (s, p, d) = (g.stride as isize, g.padding as isize, g.dilation as isize);
    (0..kernel)
        .filter_map(|k| {
            let v = a as isize + p - k as isize * d;
            (v.rem_euclid(s) == 0).then_some((k, v.div_euclid(s)))
        })
        .collect()
}

/// The phases of one axis: `(a, outputs in the phase, taps)` for `a` in `0..min(s, size)`,
/// and the zero border `(before, after)` the column side needs so that every tap of every
/// output of every phase reads inside it (`inputs` along the axis).
#[allow(clippy::type_complexity)]
fn axis_phases(
    size: usize,
    inputs: usize,
    kernel: usize,
    g: &PatchGeometry,
) -> (Vec<(usize, usize, Vec<(usize, isize)>)>, usize, usize) {
    let mut phases = Vec::new();
    let (mut before, mut after) = (0isize, 0isize);
    for a in 0..g.stride.min(size) {
        let count = (size - a).div_ceil(g.stride);
        let taps = phase_taps(a, kernel, g);
        for &(_, off) in &taps {
            before = before.max(-off);
            after = after.max(count as isize - 1 + off - (inputs as isize - 1));
        }
        phases.push((a, count, taps));
    }
    (phases, before as usize, after as usize)
}

/// `[B, C, H, W]` from the column side `x [B, M, OH, OW]` and weights `w [M, C KH KW]` (plus
/// `bias[c]` on channel `c` when given): a transposed convolution's forward pass, a
/// convolution's input gradient. Panics unless [`image_applies`] holds (the callers check) or if
/// the slices are too short.
pub(crate) fn to_image(
    batch: usize,
    m: usize,
    g: &PatchGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert!(image_applies(m, g), "channel-vectorised transposed convolution on an unsupported geometry {g:?}");
    let (oh, ow, k) = (g.out_h(), g.out_w(), g.patch_len());
    let (c_out, h, wd) = (g.channels, g.height, g.width);
    let (il, ol) = (m * oh * ow, c_out * h * wd);
    assert!(x.len() >= batch * il && w.len() >= m * k, "transposed convolution: input or weight too short");
    let (rows, top, bottom) = axis_phases(h, oh, g.kernel_h, g);
    let (cols, left, right) = axis_phases(wd, ow, g.kernel_w, g);
    let (hp, wp) = (oh + top + bottom, ow + left + right);
    let plen = m * hp * wp;
    let khw = g.kernel_h * g.kernel_w;
    // Per phase (a, b): the offsets of its terms (r, ki, kj) in a padded image, the packed
    // weights, the outputs per image and each one's corner and place in the output plane.
    struct Phase {
        offsets: Vec<usize>,
        wpk: Vec<f32>,
        count: usize,
        corner: Vec<usize>,
        place: Vec<usize>,
    }
    let mut phases = Vec::new();
    for (a, na, taps_a) in &rows {
        for (b, nb, taps_b) in &cols {
            let mut offsets = Vec::new();
            let mut index = Vec::new();
            for r in 0..m {
                for &(ki, di) in taps_a {
                    for &(kj, dj) in taps_b {
                        let (iy, ix) = ((di + top as isize) as usize, (dj + left as isize) as usize);
                        offsets.push(r * hp * wp + iy * wp + ix);
                        index.push(r * k + ki * g.kernel_w + kj);
                    }
                }
            }
            let wpk = pack(w, c_out, offsets.len(), |t, c| index[t] + c * khw);
            let count = na * nb;
            let corner = (0..count).map(|i| (i / nb) * wp + i % nb).collect();
            let place = (0..count).map(|i| (a + (i / nb) * g.stride) * wd + b + (i % nb) * g.stride).collect();
            phases.push(Phase { offsets, wpk, count, corner, place });
        }
    }
    let bp = padded_bias(bias, c_out);
    let mp = bp.len();
    let mut y = uninit_vec::<f32>(batch * ol);
    let per = images_per_item(batch, usize::MAX);
    let most = phases.iter().map(|ph| ph.count).max().unwrap_or(0);
    let group = (GROUP_BYTES / (4 * (plen + most * mp)).max(1)).clamp(1, per);
    let items: Vec<Mutex<&mut [MaybeUninit<f32>]>> = y.chunks_mut(per * ol).map(Mutex::new).collect();
    let scratch = || (Vec::new(), Vec::new(), vec![0f32; (group * most).next_multiple_of(POS) * mp], Vec::new());
    self_scheduled(items.len(), scratch, |(padded, corners, out, planes), gi| {
        let mut ys = items[gi].lock().unwrap_or_else(|e| e.into_inner());
        let first = gi * per;
        for (j, yg) in ys.chunks_mut(group * ol).enumerate() {
            let n = yg.len() / ol;
            let xg = &x[(first + j * group) * il..][..n * il];
            pad_images(xg, (m, oh, ow), (top, bottom, left, right), padded);
            for ph in &phases {
                group_corners(n, ph.count, plen, |i| ph.corner[i], corners);
                run_tiles(padded, &ph.offsets, corners, &ph.wpk, &bp, out);
                for (yb, ob) in yg.chunks_mut(ol).zip(out.chunks(ph.count * mp)) {
                    let yp = yb.as_mut_ptr().cast::<f32>();
                    if ph.count == h * wd {
                        // One phase covering the image in order (stride 1): straight into it.
                        // SAFETY: `ob` holds `count` rows of `mp >= c_out` values, `yb`
                        // `c_out` planes of `count` values.
                        unsafe { transpose(ob.as_ptr(), mp, yp, ph.count, ph.count, c_out) };
                        continue;
                    }
                    planes.resize(c_out * ph.count, 0.0);
                    // SAFETY: as above into `planes`, `c_out` rows of `count` values.
                    unsafe { transpose(ob.as_ptr(), mp, planes.as_mut_ptr(), ph.count, ph.count, c_out) };
                    for (c, plane) in planes.chunks_exact(ph.count).enumerate() {
                        let yc = &mut yb[c * h * wd..(c + 1) * h * wd];
                        for (v, &at) in plane.iter().zip(&ph.place) {
                            yc[at].write(*v);
                        }
                    }
                }
            }
        }
    });
    drop(items);
    // SAFETY: the phases cover every output position (rows `a + i s` for every `a < s` and
    // `i` up to the phase's count cover `0..H`, and likewise the columns), and every item wrote
    // every channel of every position of its images.
    unsafe { assume_init_vec(y) }
}

/// The weight and bias gradients of a plan of weight rows `m` over geometry `g`: `dw [M, C KH
/// KW]` with `dw[r, t] = sum_{images, o} col[r, o] img[t at o]` (the column side `col` is the
/// output gradient of a convolution and the input of a transposed one, the image side the
/// other), and the bias gradient, the output gradient summed per channel (`M` of them for a
/// convolution, `C` for a transposed one). Panics unless [`columns_apply`] holds or if the
/// slices are too short.
///
/// The tiles hold 16 rows x 6 terms `(c, ki, kj)` in 12 registers and run over the positions of
/// a group of images: per position two vector loads of the column side (transposed to
/// position-major first) and six broadcasts of the image side. Each work item sums its images
/// in order; the items' sums are added in the items' order.
pub(crate) fn weight_grad(
    batch: usize,
    m: usize,
    g: &PatchGeometry,
    transposed: bool,
    x: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    assert!(columns_apply(m, g), "channel-vectorised weight gradient on an unsupported geometry {g:?}");
    let (oh, ow, k) = (g.out_h(), g.out_w(), g.patch_len());
    let (hp, wp) = (g.height + 2 * g.padding, g.width + 2 * g.padding);
    let (il, plen, p) = (g.channels * g.height * g.width, g.channels * hp * wp, oh * ow);
    let cl = m * p;
    let (img, col) = if transposed { (dy, x) } else { (x, dy) };
    assert!(img.len() >= batch * il && col.len() >= batch * cl, "weight gradient: input or gradient too short");
    let mut offsets = patch_offsets(g);
    // The last tile of terms repeats the last term (its sums are dropped).
    let last = offsets[k - 1];
    offsets.resize(k.next_multiple_of(TERMS), last);
    let kp = offsets.len();
    let mp = m.next_multiple_of(CH);
    let corner = |i: usize| (i / ow) * g.stride * wp + (i % ow) * g.stride;
    let per = images_per_item(batch, usize::MAX);
    let group = (GROUP_BYTES / (4 * (plen + p * mp)).max(1)).clamp(1, per);
    let (bias_channels, bias_plane) = if transposed { (g.channels, g.height * g.width) } else { (m, p) };
    let items = batch.div_ceil(per);
    let scratch = || (Vec::new(), Vec::new(), Vec::new());
    let sums = self_scheduled(items, scratch, |(padded, corners, colt): &mut (Vec<f32>, Vec<usize>, Vec<f32>), gi| {
        // Block layout: [mp / CH][kp][CH].
        let mut dw = vec![0f32; mp * kp];
        let mut db = vec![0f32; bias_channels];
        let first = gi * per;
        let count = per.min(batch - first);
        let mut start = 0;
        while start < count {
            let n = group.min(count - start);
            let ig = &img[(first + start) * il..][..n * il];
            let cg = &col[(first + start) * cl..][..n * cl];
            pad_images(ig, (g.channels, g.height, g.width), (g.padding, g.padding, g.padding, g.padding), padded);
            corners.clear();
            corners.extend((0..n * p).map(|i| (i / p) * plen + corner(i % p)));
            // Column side position-major: colt[(image, o) mp + r].
            colt.clear();
            colt.resize(n * p * mp, 0.0);
            for (j, cb) in cg.chunks_exact(cl).enumerate() {
                // SAFETY: `cb` holds `m` rows of `p` values; `colt` from `j p mp` holds `p` rows
                // of `mp >= m`.
                unsafe { transpose(cb.as_ptr(), p, colt[j * p * mp..].as_mut_ptr(), mp, m, p) };
            }
            for b in 0..mp / CH {
                for t in (0..kp).step_by(TERMS) {
                    let acc = &mut dw[(b * kp + t) * CH..(b * kp + t + TERMS) * CH];
                    // SAFETY: `columns_apply` checked AVX2 and FMA; every corner plus every
                    // offset lies inside the group's padded images, `colt` holds `n p` rows of
                    // `mp` values (so CH from `b CH` in each), and `acc` TERMS x CH sums.
                    unsafe { weight_tile(padded, &offsets[t..t + TERMS], corners, &colt[b * CH..], mp, acc) };
                }
            }
            let grad = if transposed { ig } else { cg };
            for (i, plane) in grad.chunks_exact(bias_plane).enumerate() {
                db[i % bias_channels] += crate::conv_cpu::sum(plane);
            }
            start += n;
        }
        (dw, db)
    });
    let (dws, dbs): (Vec<Vec<f32>>, Vec<Vec<f32>>) = sums.into_iter().unzip();
    let (blocked, db) = (ordered_sum(dws, mp * kp), ordered_sum(dbs, bias_channels));
    let mut dw = vec![0f32; m * k];
    for (r, row) in dw.chunks_exact_mut(k).enumerate() {
        let (b, l) = (r / CH, r % CH);
        for (t, v) in row.iter_mut().enumerate() {
            *v = blocked[(b * kp + t) * CH + l];
        }
    }
    (dw, db)
}

/// Terms per weight-gradient tile.
const TERMS: usize = 6;

/// Adds to `acc [TERMS][CH]` the sums over the positions at `corners` (position `i`'s column
/// values `colt[i stride..][..CH]`) of `colt` times the image at `corner + offsets[term]`.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `img[c + o]` must be in bounds for every corner `c` and offset
/// `o`; `colt` must hold `(corners.len() - 1) * stride + CH` values, `offsets` TERMS and `acc`
/// TERMS x CH.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_tile(img: &[f32], offsets: &[usize], corners: &[usize], colt: &[f32], stride: usize, acc: &mut [f32]) {
    use std::arch::x86_64::*;
    debug_assert!(offsets.len() == TERMS && acc.len() == TERMS * CH);
    debug_assert!(corners.is_empty() || colt.len() >= (corners.len() - 1) * stride + CH);
    let o: [usize; TERMS] = std::array::from_fn(|i| offsets[i]);
    let (xp, cp, ap) = (img.as_ptr(), colt.as_ptr(), acc.as_mut_ptr());
    // SAFETY (all loads and stores below): within the bounds stated in the function's contract.
    unsafe {
        let mut s: [[__m256; 2]; TERMS] =
            std::array::from_fn(|i| [_mm256_loadu_ps(ap.add(i * CH)), _mm256_loadu_ps(ap.add(i * CH + 8))]);
        for (i, &c) in corners.iter().enumerate() {
            let v0 = _mm256_loadu_ps(cp.add(i * stride));
            let v1 = _mm256_loadu_ps(cp.add(i * stride + 8));
            let x = xp.add(c);
            for (t, a) in s.iter_mut().enumerate() {
                let b = _mm256_broadcast_ss(&*x.add(o[t]));
                a[0] = _mm256_fmadd_ps(b, v0, a[0]);
                a[1] = _mm256_fmadd_ps(b, v1, a[1]);
            }
        }
        for (t, a) in s.iter().enumerate() {
            _mm256_storeu_ps(ap.add(t * CH), a[0]);
            _mm256_storeu_ps(ap.add(t * CH + 8), a[1]);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn weight_tile(_: &[f32], _: &[usize], _: &[usize], _: &[f32], _: usize, _: &mut [f32]) {
    unreachable!("the channel-vectorised kernels are only chosen on x86-64 CPUs with AVX2 and FMA")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every term of a convolution by the definition: `f(image index, column index, weight
    /// index)` for each image, weight row, input channel, tap and output position whose input
    /// lies inside the image (flat indices into `[B, C, H, W]`, `[B, M, OH, OW]` and `[M, C KH KW]`).
    fn each_term(batch: usize, m: usize, g: &PatchGeometry, mut f: impl FnMut(usize, usize, usize)) {
        let (oh, ow, k) = (g.out_h(), g.out_w(), g.patch_len());
        let (c, h, wd) = (g.channels, g.height, g.width);
        let (s, p, d) = (g.stride as isize, g.padding as isize, g.dilation as isize);
        for bi in 0..batch {
            for r in 0..m {
                for ci in 0..c {
                    for ki in 0..g.kernel_h {
                        for kj in 0..g.kernel_w {
                            for oy in 0..oh {
                                for ox in 0..ow {
                                    let iy = oy as isize * s - p + ki as isize * d;
                                    let ix = ox as isize * s - p + kj as isize * d;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let img = ((bi * c + ci) * h + iy as usize) * wd + ix as usize;
                                    let col = ((bi * m + r) * oh + oy) * ow + ox;
                                    f(img, col, r * k + (ci * g.kernel_h + ki) * g.kernel_w + kj);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `v` summed per channel in f64 (`v` holds planes of `plane` values, channel-major per image).
    fn channel_sums(v: &[f32], channels: usize, plane: usize) -> Vec<f64> {
        let mut b = vec![0f64; channels];
        for (j, pl) in v.chunks_exact(plane).enumerate() {
            b[j % channels] += pl.iter().map(|&x| x as f64).sum::<f64>();
        }
        b
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// (batch, m, channels, height, width, kernel, stride, padding, dilation): the GANs' 4x4
    /// stride-2 layers, padded stride-1 ones, odd sizes (phases of unequal length), a stride larger than the kernel
    /// (phases without taps), dilation, channels not a multiple of 16, patch lengths that are
    /// not a multiple of the weight gradient's six terms (256, 112, 400), and batches that leave
    /// a partial group and a partial tile.
    const CASES: [[usize; 9]; 8] = [
        [5, 32, 16, 14, 14, 4, 2, 1, 1],
        [3, 16, 32, 7, 9, 3, 2, 1, 1],
        [2, 40, 28, 11, 8, 2, 3, 0, 1],
        [3, 28, 16, 13, 12, 3, 2, 2, 2],
        [7, 16, 16, 15, 15, 5, 3, 2, 1],
        [4, 48, 16, 6, 10, 4, 2, 1, 1],
        [3, 32, 16, 10, 9, 5, 1, 2, 1],
        [2, 16, 28, 7, 7, 3, 1, 1, 1],
    ];

    /// Batch, weight rows and geometry of a case.
    fn case([batch, m, c, h, w, k, s, p, d]: [usize; 9]) -> (usize, usize, PatchGeometry) {
        let g = PatchGeometry {
            channels: c,
            height: h,
            width: w,
            kernel_h: k,
            kernel_w: k,
            stride: s,
            padding: p,
            dilation: d,
        };
        (batch, m, g)
    }

    fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (j, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((*a as f64 - b).abs() <= tol, "{what}, element {j}: {a} against {b}");
        }
    }

    #[test]
    fn both_passes_match_the_definition() {
        if !crate::conv_direct::cpu_has_avx2_fma() {
            return;
        }
        for (i, &c) in CASES.iter().enumerate() {
            let (batch, m, g) = case(c);
            assert!(columns_apply(m, &g) && image_applies(m, &g), "case {i} should apply");
            let (il, cl) = (g.channels * g.height * g.width, m * g.out_h() * g.out_w());
            let wt = values(m * g.patch_len(), 1 + i as u64);
            let (bm, bc) = (values(m, 2 + i as u64), values(g.channels, 3 + i as u64));
            let (img, col) = (values(batch * il, 4 + i as u64), values(batch * cl, 5 + i as u64));
            let mut fwd: Vec<f64> = (0..batch * cl).map(|j| bm[j / (cl / m) % m] as f64).collect();
            let plane = g.height * g.width;
            let mut adj: Vec<f64> = (0..batch * il).map(|j| bc[j / plane % g.channels] as f64).collect();
            each_term(batch, m, &g, |xi, ci, wi| {
                fwd[ci] += wt[wi] as f64 * img[xi] as f64;
                adj[xi] += wt[wi] as f64 * col[ci] as f64;
            });
            let tol = 4e-5 * (g.patch_len() as f64).sqrt();
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let got = pool.install(|| to_columns(batch, m, &g, &img, &wt, Some(&bm)));
                assert_close(&got, &fwd, tol, &format!("to_columns, case {i}, {threads} threads"));
                let got = pool.install(|| to_image(batch, m, &g, &col, &wt, Some(&bc)));
                assert_close(&got, &adj, tol, &format!("to_image, case {i}, {threads} threads"));
            }
        }
    }

    #[test]
    fn the_weight_gradient_matches_the_definition() {
        if !crate::conv_direct::cpu_has_avx2_fma() {
            return;
        }
        for (i, &c) in CASES.iter().enumerate() {
            let (batch, m, g) = case(c);
            let (plane, p) = (g.height * g.width, g.out_h() * g.out_w());
            let img = values(batch * g.channels * plane, 10 + i as u64);
            let col = values(batch * m * p, 11 + i as u64);
            let mut want = vec![0f64; m * g.patch_len()];
            each_term(batch, m, &g, |xi, ci, wi| want[wi] += img[xi] as f64 * col[ci] as f64);
            let tol = 4e-5 * ((batch * p) as f64).sqrt();
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                // A convolution (input = image side, gradient = column side), then a transposed
                // one (input = column side, gradient = image side).
                for transposed in [false, true] {
                    let (x, dy) = if transposed { (&col, &img) } else { (&img, &col) };
                    let (dw, db) = pool.install(|| weight_grad(batch, m, &g, transposed, x, dy));
                    let what = format!("case {i}, transposed {transposed}, {threads} threads");
                    assert_close(&dw, &want, tol, &format!("weight gradient, {what}"));
                    let want_db =
                        if transposed { channel_sums(&img, g.channels, plane) } else { channel_sums(&col, m, p) };
                    assert_close(&db, &want_db, tol, &format!("bias gradient, {what}"));
                }
            }
        }
    }

    #[test]
    fn results_are_the_same_on_every_run() {
        if !crate::conv_direct::cpu_has_avx2_fma() {
            return;
        }
        let g = PatchGeometry {
            channels: 32,
            height: 14,
            width: 14,
            kernel_h: 4,
            kernel_w: 4,
            stride: 2,
            padding: 1,
            dilation: 1,
        };
        let (batch, m) = (9, 48);
        let wt = values(m * g.patch_len(), 7);
        let img = values(batch * 32 * 14 * 14, 8);
        let col = values(batch * m * 49, 9);
        let run = |t: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
            pool.install(|| {
                let dw = weight_grad(batch, m, &g, false, &img, &col);
                (to_columns(batch, m, &g, &img, &wt, None), to_image(batch, m, &g, &col, &wt, None), dw.0, dw.1)
            })
        };
        let one = run(1);
        let same =
            |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
        // Each output of the two passes is one tile's sum, whichever thread computes it. The
        // weight gradient's work items follow the thread count (as the GEMM path's do), so it
        // is the same on every run with the same threads, whichever thread takes which item.
        let three = run(3);
        for t in [2, 3, 4] {
            let r = run(t);
            assert!(same(&r.0, &one.0), "to_columns with {t} threads");
            assert!(same(&r.1, &one.1), "to_image with {t} threads");
        }
        for _ in 0..3 {
            let r = run(3);
            assert!(same(&r.2, &three.2) && same(&r.3, &three.3), "weight_grad, repeated with 3 threads");
        }
    }

    #[test]
    fn unsuitable_geometries_are_declined() {
        let g = PatchGeometry {
            channels: 64,
            height: 14,
            width: 14,
            kernel_h: 4,
            kernel_w: 4,
            stride: 2,
            padding: 1,
            dilation: 1,
        };
        // One output channel fills a sixteenth of a tile.
        assert!(!image_applies(64, &PatchGeometry { channels: 1, ..g }));
        // The GANs' layers compute 26 x 26 of 28 x 28 terms; a 5x5 kernel from 8x8 outputs back
        // to 12x12 (unpadded) 40 x 40 of 60 x 60, the judge's (14x14, padded by 2) 64 x 64 of 70 x 70.
        assert_eq!(useful_share(&g), (26 * 26, 28 * 28));
        let back = PatchGeometry {
            channels: 32,
            height: 12,
            width: 12,
            kernel_h: 5,
            kernel_w: 5,
            stride: 1,
            padding: 0,
            dilation: 1,
        };
        assert_eq!(useful_share(&back), (40 * 40, 60 * 60));
        assert!(!image_applies(48, &back) && columns_apply(48, &back));
        let judge = PatchGeometry { height: 14, width: 14, padding: 2, ..back };
        assert_eq!(useful_share(&judge), (64 * 64, 70 * 70));
        assert!(image_applies(64, &judge));
        assert!(!columns_apply(1, &g));
        // 20 channels round up to 32 (more than a quarter for nothing), 40 to 48.
        assert!(!columns_apply(20, &g) && columns_apply(40, &g) && columns_apply(64, &g));
    }
}
