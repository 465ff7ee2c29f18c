//! Matrix products, `[.., m, k] x [.., k, n]`, on the register-tiled kernel of [`crate::sgemm`].
//!
//! Candle multiplies with the `gemm` crate, which on an AVX2 CPU reaches about two thirds of the
//! machine's fused multiply-add rate on a 1024^3 product; the kernel here packs both operands
//! and keeps a 6 x 16 tile in registers (6 x 32 where the CPU has AVX-512F). Operands are read through their strides, so transposed
//! views (`t()`) are multiplied without copies, forward and backward.

use candle_core::{bail, CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};

use crate::sgemm::{self, MatRef};

/// The matrices of a tensor `[.., r, c]`: the offset of each (leading indices in row-major
/// order) and the strides of its rows and columns.
fn matrices(l: &Layout) -> (Vec<usize>, isize, isize) {
    let dims = l.dims();
    let stride = l.stride();
    let r = dims.len();
    let (rs, cs) = (stride[r - 2] as isize, stride[r - 1] as isize);
    let mut offsets = vec![l.start_offset()];
    for d in 0..r - 2 {
        offsets = offsets.iter().flat_map(|&o| (0..dims[d]).map(move |i| o + i * stride[d])).collect();
    }
    (offsets, rs, cs)
}

struct MatMul;

impl CustomOp2 for MatMul {
    fn name(&self) -> &'static str {
        "zoo-matmul"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, b) = match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => (a, b),
            _ => bail!("zoo-matmul: f32 operands only"),
        };
        let (da, db) = (l1.dims(), l2.dims());
        let r = da.len();
        let (m, k, n) = (da[r - 2], da[r - 1], db[r - 1]);
        let (oa, ars, acs) = matrices(l1);
        let (ob, brs, bcs) = matrices(l2);
        // Not zeroed: every product below writes its whole [m, n] block (k = 0 included).
        let mut out: Vec<f32> = Vec::with_capacity(oa.len() * m * n);
        // SAFETY: f32 has no invalid bit patterns, and every element is written before the vector
        // is read (the products below cover the blocks of every matrix in the batch).
        #[allow(clippy::uninit_vec)]
        unsafe {
            out.set_len(oa.len() * m * n)
        };
        let threads = candle_core::utils::get_num_threads().max(1);
        let one = |(i, c): (usize, &mut [f32]), threads: usize| {
            let am = MatRef { ptr: a[oa[i]..].as_ptr(), rs: ars, cs: acs };
            let bm = MatRef { ptr: b[ob[i]..].as_ptr(), rs: brs, cs: bcs };
            // SAFETY: the layouts describe [m, k] and [k, n] matrices inside the storages from
            // these offsets (Candle checked the views when it made them); `c` is one [m, n]
            // row-major output matrix, a distinct allocation.
            unsafe { sgemm::sgemm((m, n, k), c.as_mut_ptr(), n, false, am, bm, threads) }
        };
        if m * n > 0 {
            if oa.len() >= threads && threads > 1 {
                // Many products (heads of attention, batches): one per thread at a time.
                use rayon::prelude::*;
                out.par_chunks_mut(m * n).enumerate().for_each(|x| one(x, 1));
            } else {
                out.chunks_mut(m * n).enumerate().for_each(|x| one(x, threads));
            }
        }
        let mut shape = da.to_vec();
        shape[r - 1] = n;
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (need_a, need_b) = (a.track_op(), b.track_op());
        let (a, b, grad) = (a.detach(), b.detach(), grad.detach());
        let da = if need_a { Some(matmul(&grad, &b.t()?)?) } else { None };
        let db = if need_b { Some(matmul(&a.t()?, &grad)?) } else { None };
        Ok((da, db))
    }
}

/// The matrix product of `a [.., m, k]` and `b [.., k, n]` (the same leading dimensions), as
/// Candle's [`Tensor::matmul`], differentiable in both operands.
///
/// On CPUs with AVX2 and FMA in f32 it runs the register-tiled kernel of this crate (strided and
/// transposed operands without copies; many small products, as attention's heads, one per thread);
/// on other devices, types and CPUs it is Candle's own `matmul`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (ra, rb) = (a.rank(), b.rank());
    if ra < 2 || ra != rb {
        bail!("matmul: operands of rank 2 or more and of one rank, got {:?} and {:?}", a.dims(), b.dims());
    }
    let (da, db) = (a.dims(), b.dims());
    if da[..ra - 2] != db[..rb - 2] || da[ra - 1] != db[rb - 2] {
        bail!(
            "matmul: shapes {:?} and {:?} do not multiply ([.., m, k] x [.., k, n], same leading dimensions)",
            da,
            db
        );
    }
    let fast =
        matches!(a.device(), Device::Cpu) && a.dtype() == DType::F32 && b.dtype() == DType::F32 && sgemm::available();
    if !fast {
        return a.matmul(b);
    }
    a.apply_op2(b, MatMul)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Var, D};

    fn close(a: &Tensor, b: &Tensor, tol: f64) {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!(d <= tol, "largest difference {d} above {tol}");
    }

    #[test]
    fn agrees_with_candle_forward_and_backward_on_transposed_and_batched_operands() {
        let dev = Device::Cpu;
        for &(batch, m, k, n) in &[(0usize, 7usize, 300usize, 19usize), (3, 5, 8, 33), (0, 64, 1, 1)] {
            let shape_a: Vec<usize> = if batch > 0 { vec![batch, m, k] } else { vec![m, k] };
            let shape_b: Vec<usize> = if batch > 0 { vec![batch, n, k] } else { vec![n, k] };
            let a = Var::randn(0f32, 1.0, shape_a, &dev).unwrap();
            // b is used transposed: a strided view.
            let b = Var::randn(0f32, 1.0, shape_b, &dev).unwrap();
            let bt = b.as_tensor().t().unwrap();
            let ours = matmul(a.as_tensor(), &bt).unwrap();
            let theirs = a.as_tensor().matmul(&bt.contiguous().unwrap()).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            close(&ours, &theirs, 1e-4);
            let w = Tensor::randn(0f32, 1.0, theirs.dims(), &dev).unwrap();
            let g1 = (ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (theirs * &w).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&a, &b] {
                close(g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap(), 1e-4);
            }
        }
    }

    #[test]
    fn f64_and_mismatched_shapes() {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f64, 1.0, (4, 3), &dev).unwrap();
        let b = Tensor::randn(0f64, 1.0, (3, 2), &dev).unwrap();
        let want = a.matmul(&b).unwrap();
        let d = (matmul(&a, &b).unwrap() - want).unwrap().abs().unwrap().max_keepdim(D::Minus1).unwrap();
        assert_eq!(d.max_all().unwrap().to_scalar::<f64>().unwrap(), 0.0);
        let err = matmul(&a, &a).unwrap_err().to_string();
        assert!(err.contains("do not multiply"), "{err}");
        let err = matmul(&a, &Tensor::zeros(3, DType::F64, &dev).unwrap()).unwrap_err().to_string();
        assert!(err.contains("rank"), "{err}");
    }
}
