//! `im2col` and `col2im`: between images `[B, C, H, W]` and patch matrices `[B*OH*OW, C*KH*KW]`.
//!
//! Row `(b, oh, ow)` of the patch matrix holds the `C x KH x KW` input values that the kernel sees
//! at output position `(oh, ow)` of image `b` (zero where the window falls into the padding).
//! `col2im` is the adjoint: it adds every patch entry back into the image position it came from.

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::util::contiguous;
use std::mem::MaybeUninit;

/// The geometry shared by a convolution's input and its patch matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchGeometry {
    /// Channels of the image.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Stride (both directions).
    pub stride: usize,
    /// Zero padding (both directions).
    pub padding: usize,
    /// Dilation (both directions).
    pub dilation: usize,
}

impl PatchGeometry {
    /// Output height `(H + 2p - d(KH - 1) - 1) / s + 1`.
    pub fn out_h(&self) -> usize {
        (self.height + 2 * self.padding - self.dilation * (self.kernel_h - 1) - 1) / self.stride + 1
    }
    /// Output width.
    pub fn out_w(&self) -> usize {
        (self.width + 2 * self.padding - self.dilation * (self.kernel_w - 1) - 1) / self.stride + 1
    }
    /// Width of a patch row: `C * KH * KW`.
    pub fn patch_len(&self) -> usize {
        self.channels * self.kernel_h * self.kernel_w
    }
    pub(crate) fn check(&self) -> Result<()> {
        if self.stride == 0 || self.dilation == 0 || self.kernel_h == 0 || self.kernel_w == 0 {
            bail!("patch geometry needs positive stride, dilation and kernel size: {self:?}");
        }
        if self.height + 2 * self.padding < self.dilation * (self.kernel_h - 1) + 1
            || self.width + 2 * self.padding < self.dilation * (self.kernel_w - 1) + 1
        {
            bail!("kernel larger than the padded image: {self:?}");
        }
        Ok(())
    }
}

/// For output row `o` and kernel row `k`, the input row, if inside the image.
#[inline]
fn src_index(o: usize, k: usize, g_stride: usize, g_dil: usize, pad: usize, size: usize) -> Option<usize> {
    let i = (o * g_stride + k * g_dil) as isize - pad as isize;
    (i >= 0 && (i as usize) < size).then_some(i as usize)
}

fn im2col_slice<T: Copy + Default + Send + Sync>(x: &[T], batch: usize, g: &PatchGeometry, extra: Option<T>) -> Vec<T> {
    let (oh, ow, plen) = (g.out_h(), g.out_w(), g.patch_len());
    let (h, w) = (g.height, g.width);
    let stride = plen + usize::from(extra.is_some());
    let zero = T::default();
    // Every element is written below (padding as explicit zeros), so the buffer starts
    // uninitialised instead of being cleared first.
    let n = batch * oh * ow * stride;
    let mut out: Vec<MaybeUninit<T>> = Vec::with_capacity(n);
    // SAFETY: `MaybeUninit<T>` needs no initialisation; the length stays within the capacity.
    unsafe { out.set_len(n) };
    // One chunk per output image row (b, y); each patch row is written left to right.
    out.par_chunks_mut(ow * stride).enumerate().for_each(|(by, chunk)| {
        let (b, y) = (by / oh, by % oh);
        let image = &x[b * g.channels * h * w..(b + 1) * g.channels * h * w];
        for xo in 0..ow {
            let row = &mut chunk[xo * stride..(xo + 1) * stride];
            let mut col = 0;
            for c in 0..g.channels {
                let plane = &image[c * h * w..(c + 1) * h * w];
                for ki in 0..g.kernel_h {
                    match src_index(y, ki, g.stride, g.dilation, g.padding, h) {
                        None => {
                            for slot in &mut row[col..col + g.kernel_w] {
                                *slot = MaybeUninit::new(zero);
                            }
                        }
                        Some(iy) => {
                            let src_row = &plane[iy * w..(iy + 1) * w];
                            for kj in 0..g.kernel_w {
                                let v = match src_index(xo, kj, g.stride, g.dilation, g.padding, w) {
                                    Some(ix) => src_row[ix],
                                    None => zero,
                                };
                                row[col + kj] = MaybeUninit::new(v);
                            }
                        }
                    }
                    col += g.kernel_w;
                }
            }
            if let Some(v) = extra {
                row[plen] = MaybeUninit::new(v);
            }
        }
    });
    // SAFETY: every element was initialised above; `MaybeUninit<T>` has the layout of `T`.
    let mut out = std::mem::ManuallyDrop::new(out);
    unsafe { Vec::from_raw_parts(out.as_mut_ptr() as *mut T, out.len(), out.capacity()) }
}

fn col2im_slice<T: Copy + Default + Send + Sync + std::ops::AddAssign>(
    cols: &[T],
    batch: usize,
    g: &PatchGeometry,
    skip_extra: bool,
) -> Vec<T> {
    let (oh, ow) = (g.out_h(), g.out_w());
    // Row stride of the patch matrix: one more when it carries a constant column.
    let plen = g.patch_len() + usize::from(skip_extra);
    let (h, w) = (g.height, g.width);
    let mut out = vec![T::default(); batch * g.channels * h * w];
    // One chunk per (b, c) plane: no two threads write the same pixel.
    out.par_chunks_mut(h * w).enumerate().for_each(|(bc, plane)| {
        let (b, c) = (bc / g.channels, bc % g.channels);
        let rows = &cols[b * oh * ow * plen..(b + 1) * oh * ow * plen];
        let kk = g.kernel_h * g.kernel_w;
        for y in 0..oh {
            for xo in 0..ow {
                // The channel's kernel-sized block of this patch row, read contiguously.
                let block = &rows[(y * ow + xo) * plen + c * kk..][..kk];
                for ki in 0..g.kernel_h {
                    let Some(iy) = src_index(y, ki, g.stride, g.dilation, g.padding, h) else { continue };
                    let dst_row = &mut plane[iy * w..(iy + 1) * w];
                    for kj in 0..g.kernel_w {
                        if let Some(ix) = src_index(xo, kj, g.stride, g.dilation, g.padding, w) {
                            dst_row[ix] += block[ki * g.kernel_w + kj];
                        }
                    }
                }
            }
        }
    });
    out
}

/// `extra`: append a constant column (1 for a bias folded into the GEMM, 0 for a gradient).
struct Im2Col {
    batch: usize,
    geometry: PatchGeometry,
    extra: Option<f64>,
}

/// `skip_extra`: the patch matrix has one more (constant) column, which is ignored.
struct Col2Im {
    batch: usize,
    geometry: PatchGeometry,
    skip_extra: bool,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "zoo-im2col"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let width = g.patch_len() + usize::from(self.extra.is_some());
        let shape = Shape::from((self.batch * g.out_h() * g.out_w(), width));
        let out = match s {
            CpuStorage::F32(_) => {
                let x = contiguous::<f32>(s, l, "im2col")?;
                CpuStorage::F32(im2col_slice(x, self.batch, g, self.extra.map(|v| v as f32)))
            }
            CpuStorage::F64(_) => {
                CpuStorage::F64(im2col_slice(contiguous::<f64>(s, l, "im2col")?, self.batch, g, self.extra))
            }
            _ => bail!("im2col supports f32 and f64 only"),
        };
        Ok((out, shape))
    }
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // The constant column has no input behind it: col2im skips it.
        Ok(Some(col2im(grad, self.batch, self.geometry)?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "zoo-col2im"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let shape = Shape::from((self.batch, g.channels, g.height, g.width));
        let out = match s {
            CpuStorage::F32(_) => {
                CpuStorage::F32(col2im_slice(contiguous::<f32>(s, l, "col2im")?, self.batch, g, self.skip_extra))
            }
            CpuStorage::F64(_) => {
                CpuStorage::F64(col2im_slice(contiguous::<f64>(s, l, "col2im")?, self.batch, g, self.skip_extra))
            }
            _ => bail!("col2im supports f32 and f64 only"),
        };
        Ok((out, shape))
    }
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // The skipped column did not influence the output: its gradient is zero.
        let extra = self.skip_extra.then_some(0.0);
        patches(grad, self.geometry, extra).map(Some)
    }
}

fn check_cpu_float(x: &Tensor, what: &str) -> Result<()> {
    if !x.device().is_cpu() || !matches!(x.dtype(), DType::F32 | DType::F64) {
        bail!("{what} runs on the CPU in f32 or f64, got {:?} on {:?}", x.dtype(), x.device().location());
    }
    Ok(())
}

fn patches(x: &Tensor, geometry: PatchGeometry, extra: Option<f64>) -> Result<Tensor> {
    check_cpu_float(x, "im2col")?;
    geometry.check()?;
    let (b, c, h, w) = x.dims4()?;
    if (c, h, w) != (geometry.channels, geometry.height, geometry.width) {
        bail!("im2col: input {:?} does not match the geometry {geometry:?}", x.dims());
    }
    x.contiguous()?.apply_op1(Im2Col { batch: b, geometry, extra })
}

/// Patch matrix `[B*OH*OW, C*KH*KW]` of images `[B, C, H, W]` (CPU, f32/f64; differentiable).
pub fn im2col(x: &Tensor, geometry: PatchGeometry) -> Result<Tensor> {
    patches(x, geometry, None)
}

/// Patch matrix with an extra last column of ones, `[B*OH*OW, C*KH*KW + 1]`: multiplying it by a
/// weight matrix whose last column is the bias adds the bias inside the GEMM, and the bias
/// gradient comes out of the weight-gradient GEMM with no separate reduction.
pub fn im2col_with_ones(x: &Tensor, geometry: PatchGeometry) -> Result<Tensor> {
    patches(x, geometry, Some(1.0))
}

/// Adds the patch rows `[B*OH*OW, C*KH*KW]` back into images `[B, C, H, W]` (the adjoint of
/// [`im2col`]; CPU, f32/f64; differentiable). A patch matrix with one extra column (as made by
/// [`im2col_with_ones`]) is accepted; that column is ignored.
pub fn col2im(cols: &Tensor, batch: usize, geometry: PatchGeometry) -> Result<Tensor> {
    check_cpu_float(cols, "col2im")?;
    geometry.check()?;
    let (rows, len) = cols.dims2()?;
    let plen = geometry.patch_len();
    if rows != batch * geometry.out_h() * geometry.out_w() || (len != plen && len != plen + 1) {
        bail!("col2im: patch matrix {:?} does not match batch {batch} and {geometry:?}", cols.dims());
    }
    cols.contiguous()?.apply_op1(Col2Im { batch, geometry, skip_extra: len == plen + 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn seq(shape: &[usize], dtype: DType) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|i| ((i * 37 % 101) as f64 - 50.0) / 25.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), y> == <x, col2im(y)> for every geometry: stride, padding, dilation.
        for (s, p, d) in [(1, 0, 1), (2, 1, 1), (1, 2, 2), (3, 1, 1), (2, 0, 2)] {
            let g = PatchGeometry {
                channels: 3,
                height: 7,
                width: 6,
                kernel_h: 3,
                kernel_w: 2,
                stride: s,
                padding: p,
                dilation: d,
            };
            let x = seq(&[2, 3, 7, 6], DType::F64);
            let cols = im2col(&x, g).unwrap();
            let y = seq(cols.dims(), DType::F64).affine(0.3, 0.1).unwrap();
            let lhs = cols.mul(&y).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
            let rhs = x.mul(&col2im(&y, 2, g).unwrap()).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
            assert!((lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0), "{g:?}: {lhs} vs {rhs}");
        }
    }

    #[test]
    fn the_ones_column_carries_a_bias_and_no_input_gradient() {
        let g = PatchGeometry {
            channels: 2,
            height: 5,
            width: 5,
            kernel_h: 3,
            kernel_w: 3,
            stride: 2,
            padding: 1,
            dilation: 1,
        };
        let x = candle_core::Var::from_tensor(&seq(&[2, 2, 5, 5], DType::F64)).unwrap();
        let plain = im2col(x.as_tensor(), g).unwrap();
        let ones = im2col_with_ones(x.as_tensor(), g).unwrap();
        assert_eq!(ones.dims(), &[2 * 9, 19]);
        assert_eq!(ones.narrow(1, 0, 18).unwrap().to_vec2::<f64>().unwrap(), plain.to_vec2::<f64>().unwrap());
        assert!(ones
            .narrow(1, 18, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .all(|&v| v == 1.0));
        // The gradient through the ones column equals the gradient through the plain matrix.
        let up = seq(&[18, 19], DType::F64);
        let g1 = ones.mul(&up).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = plain.mul(&up.narrow(1, 0, 18).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(
            g1.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            g2.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
        );
    }

    #[test]
    fn im2col_picks_the_right_pixels() {
        let g = PatchGeometry {
            channels: 1,
            height: 3,
            width: 3,
            kernel_h: 2,
            kernel_w: 2,
            stride: 1,
            padding: 1,
            dilation: 1,
        };
        let x = Tensor::arange(1f32, 10., &Device::Cpu).unwrap().reshape((1, 1, 3, 3)).unwrap();
        let cols = im2col(&x, g).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(cols.len(), 16);
        assert_eq!(cols[0], vec![0., 0., 0., 1.]); // top-left: only pixel (0,0) inside
        assert_eq!(cols[5], vec![1., 2., 4., 5.]); // output (1,1)
        assert_eq!(cols[15], vec![9., 0., 0., 0.]);
        let bad = Tensor::zeros((1, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(im2col(&bad, g).is_err());
        assert!(im2col(&x.to_dtype(DType::U8).unwrap(), g).is_err());
    }
}
