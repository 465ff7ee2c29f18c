//! Differentiable affine warps of image batches, and random small ones ("jitter") for
//! invariance terms: an image-space augmentation through which gradients reach the images.
//!
//! Each output pixel reads its source position through a 2x2 matrix about the image centre plus a
//! shift, with bilinear interpolation and zeros outside the image. The warp is written as a
//! gather of the four neighbours and a weighted sum, so its gradient with respect to the images
//! is Candle's own (a scatter-add), on every device.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::ZooRng;

/// One affine map from output to source pixel coordinates, about the image centre:
/// `src = A (p - c) + c + t` with `p = (row, col)`, `A = [[a, b], [c, d]]` and `t = (t_row, t_col)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffineMap {
    /// `A` row by row.
    pub matrix: [f64; 4],
    /// `t` (rows, columns), in pixels.
    pub shift: [f64; 2],
}

impl AffineMap {
    /// The identity map.
    pub fn identity() -> Self {
        Self { matrix: [1.0, 0.0, 0.0, 1.0], shift: [0.0, 0.0] }
    }
}

/// Ranges of random affine jitter: each image gets a rotation, a shear, a scale and a shift drawn
/// uniformly within them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AffineJitter {
    /// Largest rotation, in degrees either way.
    pub rotation_deg: f64,
    /// Largest horizontal shear factor either way.
    pub shear: f64,
    /// Largest relative change of scale either way (0.1: from 0.9 to 1.1).
    pub scale: f64,
    /// Largest shift, in pixels, along each axis either way.
    pub shift: f64,
}

impl Default for AffineJitter {
    fn default() -> Self {
        Self::digits()
    }
}

impl AffineJitter {
    /// Jitter that keeps a handwritten digit's identity: rotation up to 15 degrees, shear up to
    /// 0.3, scale within 10 % and shifts up to 2 pixels.
    pub fn digits() -> Self {
        Self { rotation_deg: 15.0, shear: 0.3, scale: 0.1, shift: 2.0 }
    }

    /// An error unless every range is a finite number >= 0 and the scale's is below 1.
    pub fn check(&self) -> Result<()> {
        let ranges =
            [("rotation_deg", self.rotation_deg), ("shear", self.shear), ("scale", self.scale), ("shift", self.shift)];
        for (name, v) in ranges {
            if !(v.is_finite() && v >= 0.0) {
                bail!("the jitter's {name} range must be a number >= 0, got {v}");
            }
        }
        if self.scale >= 1.0 {
            bail!("the jitter's scale range must be below 1 (a scale of 1 - r must stay positive), got {}", self.scale);
        }
        Ok(())
    }

    /// `n` random maps drawn from `rng`.
    pub fn sample(&self, n: usize, rng: &mut ZooRng) -> Vec<AffineMap> {
        let mut sym = |r: f64| (2.0 * rng.next_f64() - 1.0) * r;
        (0..n)
            .map(|_| {
                let angle = sym(self.rotation_deg).to_radians();
                let shear = sym(self.shear);
                let scale = 1.0 + sym(self.scale);
                let shift = [sym(self.shift), sym(self.shift)];
                let (s, c) = angle.sin_cos();
                // Rotation times a shear of the columns by the rows, divided by the scale.
                let m = [c / scale, (c * shear - s) / scale, s / scale, (s * shear + c) / scale];
                AffineMap { matrix: m, shift }
            })
            .collect()
    }

    /// The images `x` (`[B, C, H, W]`) each warped by its own random map from `rng`.
    pub fn apply(&self, x: &Tensor, rng: &mut ZooRng) -> Result<Tensor> {
        let maps = self.sample(x.dim(0)?, rng);
        affine_warp(x, &maps)
    }
}

/// Warps each image of `x` (`[B, C, H, W]`) by its own map (one per image, applied to every
/// channel), with bilinear interpolation and zeros outside the image; differentiable with respect
/// to `x`.
pub fn affine_warp(x: &Tensor, maps: &[AffineMap]) -> Result<Tensor> {
    let (b, ch, h, w) = match x.dims() {
        &[b, c, h, w] => (b, c, h, w),
        d => bail!("affine_warp takes images [B, C, H, W], got {d:?}"),
    };
    if maps.len() != b {
        bail!("affine_warp got {} maps for {b} images", maps.len());
    }
    let hw = h * w;
    let (index, weight) = neighbours(maps, ch, h, w);
    let rows = b * ch;
    let index = Tensor::from_vec(index, (rows, 4 * hw), &Device::Cpu)?.to_device(x.device())?;
    let weight = Tensor::from_vec(weight, (rows, 4 * hw), &Device::Cpu)?.to_dtype(x.dtype())?.to_device(x.device())?;
    let flat = x.reshape((rows, hw))?;
    let picked = flat.gather(&index, 1)?.mul(&weight)?;
    Ok(picked.reshape((rows, 4, hw))?.sum(1)?.reshape((b, ch, h, w))?)
}

/// For every (image, channel) row: the four source pixels of each output pixel and their
/// bilinear weights, laid out as four blocks of `h * w` (neighbour-major). Neighbours outside the
/// image get weight 0 (and index 0).
fn neighbours(maps: &[AffineMap], ch: usize, h: usize, w: usize) -> (Vec<u32>, Vec<f32>) {
    let hw = h * w;
    let mut index = vec![0u32; maps.len() * ch * 4 * hw];
    let mut weight = vec![0f32; index.len()];
    let (cr, cc) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    for (m, map) in maps.iter().enumerate() {
        let [a, b, c, d] = map.matrix;
        let base = m * ch * 4 * hw;
        for i in 0..h {
            for j in 0..w {
                let (pr, pc) = (i as f64 - cr, j as f64 - cc);
                let sr = a * pr + b * pc + cr + map.shift[0];
                let sc = c * pr + d * pc + cc + map.shift[1];
                let (r0, c0) = (sr.floor(), sc.floor());
                let (fr, fc) = (sr - r0, sc - c0);
                let corners = [
                    (r0, c0, (1.0 - fr) * (1.0 - fc)),
                    (r0, c0 + 1.0, (1.0 - fr) * fc),
                    (r0 + 1.0, c0, fr * (1.0 - fc)),
                    (r0 + 1.0, c0 + 1.0, fr * fc),
                ];
                for (k, &(r, col, wt)) in corners.iter().enumerate() {
                    if r < 0.0 || col < 0.0 || r > (h - 1) as f64 || col > (w - 1) as f64 || wt == 0.0 {
                        continue;
                    }
                    let src = r as usize * w + col as usize;
                    let at = k * hw + i * w + j;
                    index[base + at] = src as u32;
                    weight[base + at] = wt as f32;
                }
            }
        }
        // Every channel of the image reads the same positions, offset within its own row.
        repeat_first_block(&mut index[base..base + ch * 4 * hw], 4 * hw);
        repeat_first_block(&mut weight[base..base + ch * 4 * hw], 4 * hw);
    }
    (index, weight)
}

/// Copies the first `len` elements of `v` over each following block of `len`.
fn repeat_first_block<T: Copy>(v: &mut [T], len: usize) {
    let (first, rest) = v.split_at_mut(len);
    for chunk in rest.chunks_mut(len) {
        chunk.copy_from_slice(first);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, randn64};

    fn grid(b: usize, c: usize, h: usize, w: usize) -> Tensor {
        let v: Vec<f32> = (0..b * c * h * w).map(|i| (i as f32 * 0.37).sin()).collect();
        Tensor::from_vec(v, (b, c, h, w), &Device::Cpu).unwrap()
    }

    #[test]
    fn the_identity_and_whole_pixel_shifts_move_pixels_exactly() {
        let x = grid(2, 3, 5, 6);
        let same = affine_warp(&x, &[AffineMap::identity(); 2]).unwrap();
        assert_eq!(
            same.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        // Output (i, j) reads source (i + 1, j - 2): a shift up by one row, right by two columns.
        let shifted = AffineMap { shift: [1.0, -2.0], ..AffineMap::identity() };
        let y = affine_warp(&x, &[shifted, AffineMap::identity()]).unwrap();
        let x4: Vec<Vec<Vec<Vec<f32>>>> = (0..2).map(|b| x.get(b).unwrap().to_vec3::<f32>().unwrap()).collect();
        let y4: Vec<Vec<Vec<Vec<f32>>>> = (0..2).map(|b| y.get(b).unwrap().to_vec3::<f32>().unwrap()).collect();
        for c in 0..3 {
            for i in 0..5 {
                for j in 0..6 {
                    let want = if i + 1 < 5 && j >= 2 { x4[0][c][i + 1][j - 2] } else { 0.0 };
                    assert_eq!(y4[0][c][i][j], want, "channel {c}, pixel ({i}, {j})");
                    assert_eq!(y4[1][c][i][j], x4[1][c][i][j]);
                }
            }
        }
    }

    #[test]
    fn a_quarter_turn_about_the_centre_is_a_transpose_and_flip() {
        let x = grid(1, 1, 4, 4);
        // src = [[0, -1], [1, 0]] (p - c) + c: output (i, j) reads (c + (c - j), i) = (3 - j, i).
        let turn = AffineMap { matrix: [0.0, -1.0, 1.0, 0.0], shift: [0.0, 0.0] };
        let y = affine_warp(&x, &[turn]).unwrap().get(0).unwrap().get(0).unwrap().to_vec2::<f32>().unwrap();
        let x = x.get(0).unwrap().get(0).unwrap().to_vec2::<f32>().unwrap();
        for i in 0..4 {
            for j in 0..4 {
                assert!((y[i][j] - x[3 - j][i]).abs() < 1e-6, "({i}, {j}): {} against {}", y[i][j], x[3 - j][i]);
            }
        }
    }

    #[test]
    fn half_pixel_shifts_average_neighbours() {
        let x = grid(1, 1, 3, 3);
        let half = AffineMap { shift: [0.5, 0.0], ..AffineMap::identity() };
        let y = affine_warp(&x, &[half]).unwrap().get(0).unwrap().get(0).unwrap().to_vec2::<f32>().unwrap();
        let x = x.get(0).unwrap().get(0).unwrap().to_vec2::<f32>().unwrap();
        for j in 0..3 {
            assert!((y[0][j] - 0.5 * (x[0][j] + x[1][j])).abs() < 1e-6);
            assert!((y[1][j] - 0.5 * (x[1][j] + x[2][j])).abs() < 1e-6);
            // The last row reads half of itself and half of the zeros outside.
            assert!((y[2][j] - 0.5 * x[2][j]).abs() < 1e-6);
        }
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        let maps = AffineJitter::digits().sample(2, &mut ZooRng::new(3));
        let x = randn64(&[2, 2, 6, 7], 1);
        let up = randn64(&[2, 2, 6, 7], 2);
        check_gradient(&x, |x| {
            affine_warp(x, &maps).map_err(|e| candle_core::Error::Msg(e.to_string()))?.mul(&up)?.sum_all()
        });
    }

    #[test]
    fn jitter_stays_within_its_ranges_and_bad_shapes_are_refused() {
        let j = AffineJitter::digits();
        for m in j.sample(200, &mut ZooRng::new(0)) {
            let det = m.matrix[0] * m.matrix[3] - m.matrix[1] * m.matrix[2];
            // det = 1 / scale^2 (rotation and shear keep area).
            assert!((1.0 / 1.1f64.powi(2) - 1e-9..=1.0 / 0.9f64.powi(2) + 1e-9).contains(&det), "{det}");
            assert!(m.shift.iter().all(|s| s.abs() <= 2.0));
        }
        assert!(j.check().is_ok());
        let bad = AffineJitter { scale: 1.0, ..AffineJitter::digits() };
        assert!(bad.check().unwrap_err().to_string().contains("scale"));
        let bad = AffineJitter { rotation_deg: f64::NAN, ..AffineJitter::digits() };
        assert!(bad.check().unwrap_err().to_string().contains("rotation_deg"));
        let x = grid(2, 1, 4, 4);
        assert!(affine_warp(&x, &[AffineMap::identity()]).unwrap_err().to_string().contains("1 maps for 2 images"));
        let flat = x.flatten_from(1).unwrap();
        assert!(affine_warp(&flat, &[AffineMap::identity(); 2]).unwrap_err().to_string().contains("[B, C, H, W]"));
    }
}
