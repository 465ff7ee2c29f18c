//! Kernel-level speed: the zoo's convolutions against Candle's own, forward + backward, the GEMM
//! rate (the zoo's matmul against Candle's), the GAN generators' largest linear layer against Candle's matmul and bias, and the fused
//! row-wise ops (layer norm, softmax, LSTM cell), ReLU and 2x2 max pooling against Candle's composed
//! ones, on the shapes of the reference measurements and of the zoo's GANs.
//!
//! `cargo bench --bench kernels [-- --only TEXT]` prints one JSON line per case (those whose name
//! contains TEXT):
//! `{"case", "ours_ms", "candle_ms", "speedup", "gflops"}` (medians; GFLOP/s of our version, null
//! for the row-wise ops, which are memory-bound).
//!
//! The first case, `peak fma`, measures what the cores can do at all: independent chains of fused
//! multiply-adds in the widest vectors the CPU has (AVX-512 or AVX2, detected at run time), one chain
//! set per thread (`RAYON_NUM_THREADS`, else every logical CPU). Its GFLOP/s is the machine's
//! practical fp32 peak at its current clock, the yardstick for the GEMM- and convolution-bound cases
//! (`bench/run.py` prints each as a share of it).

use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use zoo_core::ZooRng;
use zoo_kernels::{
    conv2d, conv_transpose2d, layer_norm, layer_norm_composed, linear, lstm_cell, lstm_cell_composed, matmul,
    max_pool2d, max_pool2d_by_reduction, relu, softmax_last_dim, softmax_last_dim_composed, ConvParams,
};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn time<F: FnMut() -> Result<()>>(iters: usize, mut f: F) -> Result<f64> {
    for _ in 0..2 {
        f()?;
    }
    let mut v = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(v))
}

fn randn(rng: &mut ZooRng, shape: &[usize]) -> Result<Tensor> {
    rng.normal(shape, 0.0, 1.0, DType::F32, &Device::Cpu)
}

fn main() -> Result<()> {
    candle_zoo::tune_runtime();
    let mut rng = ZooRng::new(0);
    let iters = 10;
    if selected("peak fma") {
        let threads = bench_threads();
        let (flops, ms) = peak_fma(threads);
        println!(
            "{}",
            serde_json::json!({"case": "peak fma", "threads": threads, "ours_ms": ms, "gflops": flops / ms / 1e6})
        );
    }
    if selected("conv2d 64->128 b64 14x14 k3 fwd+bwd") {
        // conv2d 64->128, batch 64, 14x14, k3 p1: forward + backward.
        let x = Var::from_tensor(&randn(&mut rng, &[64, 64, 14, 14])?)?;
        let w = Var::from_tensor(&randn(&mut rng, &[128, 64, 3, 3])?)?;
        let p = ConvParams { padding: 1, ..Default::default() };
        let flops = 3.0 * 2.0 * 64.0 * 128.0 * 14.0 * 14.0 * 64.0 * 9.0;
        let ours = time(iters, || {
            let y = conv2d(x.as_tensor(), w.as_tensor(), None, p)?;
            y.sum_all()?.backward()?;
            Ok(())
        })?;
        let theirs = time(iters, || {
            let y = x.as_tensor().conv2d(w.as_tensor(), 1, 1, 1, 1)?;
            y.sum_all()?.backward()?;
            Ok(())
        })?;
        report("conv2d 64->128 b64 14x14 k3 fwd+bwd", ours, theirs, flops);
    }

    // The LeNet-sized 5x5 convolutions of the domain-adaptation nets and the judge: the first
    // (3 -> 32 on 28x28; its input needs no gradient) and the second (32 -> 48 on 12x12).
    for (name, cin, cout, size, input_grad) in [
        ("conv2d 3->32 b64 28x28 k5 fwd+bwd", 3, 32, 28, false),
        ("conv2d 32->48 b64 12x12 k5 fwd+bwd", 32, 48, 12, true),
    ] {
        if !selected(name) {
            continue;
        }
        let x = randn(&mut rng, &[64, cin, size, size])?;
        let x = if input_grad { Var::from_tensor(&x)?.as_tensor().clone() } else { x };
        let w = Var::from_tensor(&randn(&mut rng, &[cout, cin, 5, 5])?)?;
        let out = (size - 4) as f64;
        let passes = if input_grad { 3.0 } else { 2.0 };
        let flops = passes * 2.0 * 64.0 * (cout * cin * 25) as f64 * out * out;
        let ours = time(iters * 3, || {
            conv2d(&x, w.as_tensor(), None, ConvParams::default())?.sum_all()?.backward()?;
            Ok(())
        })?;
        let theirs = time(iters, || {
            x.conv2d(w.as_tensor(), 0, 1, 1, 1)?.sum_all()?.backward()?;
            Ok(())
        })?;
        report(name, ours, theirs, flops);
    }

    if selected("conv_transpose2d 128->64 b64 7->14 k4s2 fwd+bwd") {
        // conv_transpose2d 128->64, 7->14, k4 s2 p1: forward + backward.
        let x = Var::from_tensor(&randn(&mut rng, &[64, 128, 7, 7])?)?;
        let w = Var::from_tensor(&randn(&mut rng, &[128, 64, 4, 4])?)?;
        let p = ConvParams { stride: 2, padding: 1, ..Default::default() };
        let flops = 3.0 * 2.0 * 64.0 * 49.0 * 128.0 * 64.0 * 16.0;
        let ours = time(iters, || {
            conv_transpose2d(x.as_tensor(), w.as_tensor(), None, p)?.sum_all()?.backward()?;
            Ok(())
        })?;
        let theirs = time(iters, || {
            x.as_tensor().conv_transpose2d(w.as_tensor(), 1, 0, 2, 1)?.sum_all()?.backward()?;
            Ok(())
        })?;
        report("conv_transpose2d 128->64 b64 7->14 k4s2 fwd+bwd", ours, theirs, flops);
    }

    if selected("conv2d 64->128 b64 14->7 k4s2 fwd+bwd") {
        // The GAN discriminators' second convolution (DCGAN-style, stride 2, padding 1).
        let x = Var::from_tensor(&randn(&mut rng, &[64, 64, 14, 14])?)?;
        let w = Var::from_tensor(&randn(&mut rng, &[128, 64, 4, 4])?)?;
        let p = ConvParams { stride: 2, padding: 1, ..Default::default() };
        let flops = 3.0 * 2.0 * 64.0 * 49.0 * 128.0 * 64.0 * 16.0;
        let ours = time(iters, || {
            conv2d(x.as_tensor(), w.as_tensor(), None, p)?.sum_all()?.backward()?;
            Ok(())
        })?;
        let theirs = time(iters, || {
            x.as_tensor().conv2d(w.as_tensor(), 1, 2, 1, 1)?.sum_all()?.backward()?;
            Ok(())
        })?;
        report("conv2d 64->128 b64 14->7 k4s2 fwd+bwd", ours, theirs, flops);
    }

    if selected("linear 1024->6272 b64 fwd+bwd") {
        // The GAN generators' second fully connected layer, against Candle's matmul + bias.
        let x = Var::from_tensor(&randn(&mut rng, &[64, 1024])?)?;
        let w = Var::from_tensor(&randn(&mut rng, &[6272, 1024])?)?;
        let b = Var::from_tensor(&randn(&mut rng, &[6272])?)?;
        let flops = 3.0 * 2.0 * 64.0 * 1024.0 * 6272.0;
        let ours = time(iters, || {
            linear(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()))?.sum_all()?.backward()?;
            Ok(())
        })?;
        let theirs = time(iters, || {
            x.as_tensor().matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?.sum_all()?.backward()?;
            Ok(())
        })?;
        report("linear 1024->6272 b64 fwd+bwd", ours, theirs, flops);
    }

    if selected("matmul 1024^3") {
        // GEMM 1024^3.
        let a = randn(&mut rng, &[1024, 1024])?;
        let b = randn(&mut rng, &[1024, 1024])?;
        let ours = time(iters, || {
            matmul(&a, &b)?;
            Ok(())
        })?;
        let theirs = time(iters, || {
            a.matmul(&b)?;
            Ok(())
        })?;
        report("matmul 1024^3", ours, theirs, 2.0 * 1024f64.powi(3));
    }

    if selected("layer_norm [1024, 256] fwd+bwd") {
        // Row-wise ops on the Transformer's shapes (batch 32, 32 tokens, d 256, 4 heads) and an LSTM
        // step (batch 64, hidden 512): forward + backward of a weighted sum, against Candle's ops.
        let x = Var::from_tensor(&randn(&mut rng, &[32 * 32, 256])?)?;
        let g = Var::from_tensor(&(randn(&mut rng, &[256])? + 1.0)?)?;
        let b = Var::from_tensor(&randn(&mut rng, &[256])?)?;
        let up = randn(&mut rng, &[32 * 32, 256])?;
        let ours = time(iters * 5, || {
            layer_norm(x.as_tensor(), g.as_tensor(), Some(b.as_tensor()), 1e-5)?.mul(&up)?.sum_all()?.backward()?;
            Ok(())
        })?;
        let theirs = time(iters * 5, || {
            layer_norm_composed(x.as_tensor(), g.as_tensor(), Some(b.as_tensor()), 1e-5)?
                .mul(&up)?
                .sum_all()?
                .backward()?;
            Ok(())
        })?;
        report("layer_norm [1024, 256] fwd+bwd", ours, theirs, 0.0);
    }

    if selected("softmax [128, 32, 32] fwd+bwd") {
        let x = Var::from_tensor(&randn(&mut rng, &[32 * 4, 32, 32])?)?;
        let up = randn(&mut rng, &[32 * 4, 32, 32])?;
        let ours = time(iters * 5, || {
            softmax_last_dim(x.as_tensor())?.mul(&up)?.sum_all()?.backward()?;
            Ok(())
        })?;
        let theirs = time(iters * 5, || {
            softmax_last_dim_composed(x.as_tensor())?.mul(&up)?.sum_all()?.backward()?;
            Ok(())
        })?;
        report("softmax [128, 32, 32] fwd+bwd", ours, theirs, 0.0);
    }

    if selected("lstm_cell gates [64, 2048] fwd+bwd") {
        let gates = Var::from_tensor(&randn(&mut rng, &[64, 4 * 512])?)?;
        let c = Var::from_tensor(&randn(&mut rng, &[64, 512])?)?;
        let up = randn(&mut rng, &[64, 512])?;
        let step = |f: fn(&Tensor, &Tensor) -> candle_core::Result<(Tensor, Tensor)>| -> Result<()> {
            let (h, c) = f(gates.as_tensor(), c.as_tensor())?;
            (h.mul(&up)? + c)?.sum_all()?.backward()?;
            Ok(())
        };
        let ours = time(iters * 5, || step(lstm_cell))?;
        let theirs = time(iters * 5, || step(lstm_cell_composed))?;
        report("lstm_cell gates [64, 2048] fwd+bwd", ours, theirs, 0.0);
    }

    if selected("relu [128, 32, 12, 12] fwd+bwd") {
        // DANN's first feature map after pooling.
        let x = Var::from_tensor(&randn(&mut rng, &[128, 32, 12, 12])?)?;
        let up = randn(&mut rng, &[128, 32, 12, 12])?;
        let ours = time(iters * 5, || {
            relu(x.as_tensor())?.mul(&up)?.sum_all()?.backward()?;
            Ok(())
        })?;
        let theirs = time(iters * 5, || {
            x.as_tensor().relu()?.mul(&up)?.sum_all()?.backward()?;
            Ok(())
        })?;
        report("relu [128, 32, 12, 12] fwd+bwd", ours, theirs, 0.0);
    }

    if selected("max_pool2d 2x2 [128, 32, 24, 24] fwd+bwd") {
        // DANN's first convolution's output, pooled 2x2; against the pooling from generic ops (Candle's
        // own has the wrong gradient).
        let x = Var::from_tensor(&randn(&mut rng, &[128, 32, 24, 24])?)?;
        let up = randn(&mut rng, &[128, 32, 12, 12])?;
        let pool = |f: fn(&Tensor, usize) -> candle_core::Result<Tensor>| -> Result<()> {
            f(x.as_tensor(), 2)?.mul(&up)?.sum_all()?.backward()?;
            Ok(())
        };
        let ours = time(iters * 5, || pool(max_pool2d))?;
        let theirs = time(iters * 5, || pool(max_pool2d_by_reduction))?;
        report("max_pool2d 2x2 [128, 32, 24, 24] fwd+bwd", ours, theirs, 0.0);
    }
    Ok(())
}

/// Threads of the benchmark: `RAYON_NUM_THREADS` (as `bench/run.py` sets it), else every logical CPU.
fn bench_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Floating-point operations and the median milliseconds of five rounds in which `threads`
/// threads each run [`FMA_ROUNDS`] rounds of 12 independent vector fused multiply-adds.
fn peak_fma(threads: usize) -> (f64, f64) {
    let lanes = fma_lanes();
    let times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            std::thread::scope(|s| {
                let handles: Vec<_> =
                    (0..threads).map(|_| s.spawn(|| std::hint::black_box(fma_chains(FMA_ROUNDS)))).collect();
                for h in handles {
                    h.join().expect("a peak-rate thread panicked");
                }
            });
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    (threads as f64 * FMA_ROUNDS as f64 * 12.0 * lanes as f64 * 2.0, median(times))
}

/// Rounds of the peak-rate loop per thread (about 0.1 s at 3 GHz with AVX2).
const FMA_ROUNDS: u64 = 50_000_000;

/// Whether the CPU has AVX-512F and this compiler can use it (Rust 1.89 and later).
#[rustversion::since(1.89)]
fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the CPU has AVX-512F and this compiler can use it (Rust 1.89 and later).
#[rustversion::before(1.89)]
fn avx512() -> bool {
    false
}

/// Single-precision lanes of the widest fused multiply-add the CPU runs (1: scalar fallback).
fn fma_lanes() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512() {
            return 16;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return 8;
        }
    }
    1
}

/// `rounds` rounds of 12 independent fused multiply-add chains in the widest vectors available
/// (12 chains hide the instruction's latency on two FMA units); returns their sum so that the work
/// cannot be optimised away.
fn fma_chains(rounds: u64) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512() {
            return fma_chains_avx512(rounds);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            return unsafe { fma_chains_avx2(rounds) };
        }
    }
    let mut acc = [1f32; 12];
    for _ in 0..rounds {
        for a in acc.iter_mut() {
            *a = std::hint::black_box(a.mul_add(0.999_999, 1e-7));
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_avx2(rounds: u64) -> f32 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..rounds {
        for r in acc.iter_mut() {
            *r = _mm256_fmadd_ps(*r, a, b);
        }
    }
    let mut sum = _mm256_setzero_ps();
    for r in acc {
        sum = _mm256_add_ps(sum, r);
    }
    let mut out = [0f32; 8];
    _mm256_storeu_ps(out.as_mut_ptr(), sum);
    out.iter().sum()
}

/// The AVX-512 chains; their intrinsics need Rust 1.89, the workspace's minimum is older.
#[rustversion::since(1.89)]
#[cfg(target_arch = "x86_64")]
#[allow(clippy::incompatible_msrv)]
fn fma_chains_avx512(rounds: u64) -> f32 {
    // SAFETY: called only when the CPU has AVX-512F (`avx512`).
    unsafe { fma_chains_avx512_unchecked(rounds) }
}

/// Never called: [`avx512`] is false before Rust 1.89.
#[rustversion::before(1.89)]
#[cfg(target_arch = "x86_64")]
fn fma_chains_avx512(_rounds: u64) -> f32 {
    unreachable!("AVX-512 needs Rust 1.89")
}

#[rustversion::since(1.89)]
#[cfg(target_arch = "x86_64")]
#[allow(clippy::incompatible_msrv)]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512_unchecked(rounds: u64) -> f32 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    let mut acc = [_mm512_set1_ps(1.0); 12];
    for _ in 0..rounds {
        for r in acc.iter_mut() {
            *r = _mm512_fmadd_ps(*r, a, b);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for r in acc {
        sum = _mm512_add_ps(sum, r);
    }
    _mm512_reduce_add_ps(sum)
}

/// Whether the case is to run: `--only TEXT` runs the cases whose name contains TEXT.
fn selected(case: &str) -> bool {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)) {
        Some(text) => case.contains(text.as_str()),
        None => true,
    }
}

fn report(case: &str, ours: f64, candle: f64, flops: f64) {
    println!(
        "{}",
        serde_json::json!({"case": case, "ours_ms": ours, "candle_ms": candle, "speedup": candle / ours,
            "gflops": (flops > 0.0).then(|| flops / ours / 1e6)})
    );
}
