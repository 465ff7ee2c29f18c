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

/// Runs `work(state, item)` for the items `0..n`, shared out to the rayon threads as each comes
/// free (one task per thread takes the next item from a shared counter), each task with its own
/// scratch `state` from `init`, made when it takes its first item. Returns the items' results in
/// the items' order.
///
/// A fixed share per thread finishes only as fast as the slower thread: on a shared machine the
/// two cores' speeds often differ by a quarter or more from moment to moment, and one core also
/// runs the caller's serial work. Which task runs an item varies from run to run, so `work` must
/// give the same result whichever state it is handed (the state is scratch space, not a sum).
pub(crate) fn self_scheduled<S, R: Send>(
    n: usize,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, usize) -> R + Sync,
) -> Vec<R> {
    use rayon::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let tasks = rayon::current_num_threads().clamp(1, n.max(1));
    let done: Vec<Vec<(usize, R)>> = (0..tasks)
        .into_par_iter()
        .with_max_len(1)
        .map(|_| {
            let (mut state, mut out) = (None, Vec::new());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                out.push((i, work(state.get_or_insert_with(&init), i)));
            }
            out
        })
        .collect();
    let mut slots: Vec<Option<R>> = (0..n).map(|_| None).collect();
    for (i, r) in done.into_iter().flatten() {
        slots[i] = Some(r);
    }
    // Every item was taken by exactly one task, so every slot is filled.
    slots.into_iter().flatten().collect()
}

/// Work items for a batch of `batch` images split among the rayon threads: about four per
/// thread (so that a thread that comes free takes over work, see [`self_scheduled`]), each at
/// most `most` images. Returns the images per item.
pub(crate) fn images_per_item(batch: usize, most: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let per = if threads == 1 { batch } else { batch.div_ceil(4 * threads) };
    per.clamp(1, most.max(1))
}

/// Sums `parts` (each `len` long, in order) into one vector, in parallel over its elements; the
/// result is the same for any number of threads (each element's sum runs in `parts`' order).
pub(crate) fn ordered_sum<T: candle_core::WithDType>(mut parts: Vec<Vec<T>>, len: usize) -> Vec<T> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 14;
    if parts.len() == 1 && parts[0].len() == len {
        return parts.pop().unwrap_or_default();
    }
    let mut out = vec![T::zero(); len];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
        for part in &parts {
            for (d, v) in o.iter_mut().zip(&part[c * CHUNK..]) {
                *d += *v;
            }
        }
    });
    out
}

/// `dst[j * ds + i] = src[i * ss + j]` for `i < rows`, `j < cols`: a strided matrix copied
/// transposed, in 8 x 8 blocks transposed in AVX registers where the CPU has AVX2 (one vector
/// load and store per row of a block instead of eight scattered stores), the edges one by one.
/// Used between the position-major tiles of `conv_channels` and NCHW tensors.
///
/// # Safety
/// `src` must be valid for reads at every `i * ss + j` and `dst` for writes at every
/// `j * ds + i`, and the two must not overlap.
pub(crate) unsafe fn transpose(src: *const f32, ss: usize, dst: *mut f32, ds: usize, rows: usize, cols: usize) {
    let (r8, c8) = if cfg!(target_arch = "x86_64") && crate::conv_direct::cpu_has_avx2_fma() {
        (rows / 8 * 8, cols / 8 * 8)
    } else {
        (0, 0)
    };
    // SAFETY (whole body): every index below is `i * ss + j` into `src` and `j * ds + i` into
    // `dst` for some `i < rows`, `j < cols`, as the caller guarantees.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        for i in (0..r8).step_by(8) {
            for j in (0..c8).step_by(8) {
                transpose_8x8(src.add(i * ss + j), ss, dst.add(j * ds + i), ds);
            }
        }
        for i in 0..rows {
            let from = if i < r8 { c8 } else { 0 };
            for j in from..cols {
                *dst.add(j * ds + i) = *src.add(i * ss + j);
            }
        }
    }
}

/// One 8 x 8 block of [`transpose`].
///
/// # Safety
/// The CPU must have AVX2; eight rows of eight floats at stride `ss` from `src` readable, at
/// stride `ds` from `dst` writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_8x8(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
    use std::arch::x86_64::*;
    // SAFETY: within the rows stated in the contract.
    unsafe {
        let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * ss)));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let cols = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (j, c) in cols.into_iter().enumerate() {
            _mm256_storeu_ps(dst.add(j * ds), c);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn self_scheduling_runs_every_item_once_and_keeps_their_order() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for n in [0, 1, 2, 7, 40] {
            let runs: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            let states = AtomicUsize::new(0);
            let results = pool.install(|| {
                self_scheduled(
                    n,
                    || states.fetch_add(1, Ordering::Relaxed),
                    |_, i| {
                        runs[i].fetch_add(1, Ordering::Relaxed);
                        i * 3
                    },
                )
            });
            assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1), "{n} items");
            assert_eq!(results, (0..n).map(|i| i * 3).collect::<Vec<_>>());
            // Scratch states only for the tasks that took items, at most one per thread.
            let made = states.load(Ordering::Relaxed);
            assert!(made <= 3 && made <= n && (n == 0 || made > 0), "{n} items, {made} states");
        }
    }

    #[test]
    fn items_are_about_four_per_thread() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        assert_eq!(pool.install(|| images_per_item(64, usize::MAX)), 8);
        assert_eq!(pool.install(|| images_per_item(64, 5)), 5);
        assert_eq!(pool.install(|| images_per_item(3, usize::MAX)), 1);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(one.install(|| images_per_item(64, usize::MAX)), 64);
    }

    #[test]
    fn the_ordered_sum_adds_the_parts_in_order() {
        // Values whose sum depends on the order of the additions in f32.
        let parts: Vec<Vec<f32>> =
            (0..5).map(|p| (0..40_000).map(|i| ((i * 7 + p * 13) % 17) as f32 * 10f32.powi(p - 2)).collect()).collect();
        let got = ordered_sum(parts.clone(), 40_000);
        for (i, g) in got.iter().enumerate() {
            let mut want = 0f32;
            for part in &parts {
                want += part[i];
            }
            assert_eq!(g.to_bits(), want.to_bits(), "element {i}");
        }
        assert_eq!(ordered_sum(vec![parts[1].clone()], 40_000), parts[1]);
        assert!(ordered_sum::<f32>(Vec::new(), 0).is_empty());
        assert_eq!(ordered_sum::<f64>(Vec::new(), 3), vec![0.0; 3]);
    }

    #[test]
    fn transpose_copies_every_element_and_nothing_else() {
        // Full 8 x 8 blocks, edges in both directions, strides wider than the rows.
        for (rows, cols) in [(19, 13), (8, 8), (16, 3), (5, 24), (0, 4)] {
            let (ss, ds) = (cols + 3, rows + 5);
            let src: Vec<f32> = (0..rows * ss).map(|v| v as f32).collect();
            let mut dst = vec![-1f32; cols.max(1) * ds];
            // SAFETY: `src` holds `rows` rows at stride `ss`, `dst` `cols` rows at stride `ds`.
            unsafe { transpose(src.as_ptr(), ss, dst.as_mut_ptr(), ds, rows, cols) };
            for j in 0..cols {
                for i in 0..ds {
                    let want = if i < rows { src[i * ss + j] } else { -1.0 };
                    assert_eq!(dst[j * ds + i], want, "{rows} x {cols}: row {j}, column {i}");
                }
            }
        }
    }
}
