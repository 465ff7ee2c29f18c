//! Helpers the kernels share.

use std::mem::MaybeUninit;

use candle_core::{bail, CpuStorage, Layout, Result};

/// The elements of a contiguous CPU tensor (an error naming `what` otherwise).
pub(crate) fn contiguous<'a, T: candle_core::WithDType>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
        None => bail!("{what} needs a contiguous input"),
    }
}

/// A vector of `n` elements written in parallel chunks of `chunk`, without zeroing it first:
/// `fill(offset, part)` writes the elements `offset..offset + part.len()`.
///
/// # Safety
/// `fill` must initialise every element of every `part` it is given.
pub(crate) unsafe fn par_init<T: Copy + Send + Sync>(
    n: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync + Send,
) -> Vec<T> {
    use rayon::prelude::*;
    let chunk = chunk.max(1);
    let mut v = uninit_vec::<T>(n);
    v.par_chunks_mut(chunk).enumerate().for_each(|(i, part)| fill(i * chunk, part));
    // SAFETY: the caller's `fill` initialised every element.
    unsafe { assume_init_vec(v) }
}

/// `n` elements left uninitialised, for kernels that write every one of them.
pub(crate) fn uninit_vec<T>(n: usize) -> Vec<MaybeUninit<T>> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: `MaybeUninit` needs no initialisation and the capacity is `n`.
    unsafe { v.set_len(n) };
    v
}

/// The vector of [`uninit_vec`] once every element is written.
///
/// # Safety
/// Every element of `v` must be initialised.
pub(crate) unsafe fn assume_init_vec<T>(v: Vec<MaybeUninit<T>>) -> Vec<T> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, and the pointer, length and capacity come from
    // a vector of the same allocation; the caller guarantees the elements are initialised.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut T, v.len(), v.capacity()) }
}

/// Slots that have all been written, as the elements they hold.
///
/// # Safety
/// Every element of `s` must be initialised.
pub(crate) unsafe fn assume_init_slice<T>(s: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: same layout; the caller guarantees initialisation.
    unsafe { &mut *(s as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// A deterministic f64 tensor, uniform in `[-scale, scale]` (an LCG, so that the tests need no
/// random-number crate).
#[cfg(test)]
pub(crate) fn test_tensor(shape: &[usize], seed: u64, scale: f64) -> candle_core::Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0) * scale
        })
        .collect();
    candle_core::Tensor::from_vec(v, shape, &candle_core::Device::Cpu).unwrap()
}

/// [`test_tensor`] in `dtype`, scale 1.
#[cfg(test)]
pub(crate) fn test_rand(shape: &[usize], seed: u64, dtype: candle_core::DType) -> candle_core::Tensor {
    test_tensor(shape, seed, 1.0).to_dtype(dtype).unwrap()
}

/// The largest absolute difference of two tensors of one shape, as f64.
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let d = a.sub(b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    d.to_dtype(candle_core::DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// Checks a backward pass through parameters held fixed (`fixed`, run with detached copies
/// `params[2..]` of the live `params[..2]`) against the live one (`live`): the input `x` gets
/// the same gradient bit for bit, and no parameter, live or detached, gets one in the fixed pass.
#[cfg(test)]
pub(crate) fn assert_fixed_pass(
    x: &candle_core::Tensor,
    live: &candle_core::backprop::GradStore,
    fixed: &candle_core::backprop::GradStore,
    params: [&candle_core::Tensor; 4],
    what: &str,
) {
    let (a, c) = (live.get(x).unwrap(), fixed.get(x).unwrap());
    assert_eq!(max_abs_diff(a, c), 0.0, "{what}: the input's gradient differs");
    for t in params {
        assert!(fixed.get(t).is_none(), "{what}: a fixed parameter got a gradient");
    }
}
