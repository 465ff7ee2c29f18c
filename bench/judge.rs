//! Speed of the judge: one training step (batch 64: forward with dropout, cross-entropy,
//! backward, Adam update) and inference (batch 256), on real MNIST digits from data/mnist.
//!
//! `cargo bench --bench judge -- [--iters N] [--warmup N]` prints one JSON line:
//! `{"model": "judge", "threads": T, "train_ms": median, "infer_ms": median, "peak_rss_mb": ..}`.
//! Threads come from RAYON_NUM_THREADS (set by bench/run.py). The PyTorch twin is
//! bench/torch/judge.py.

use std::time::Instant;

mod common;
use common::{arg_usize, median, peak_rss_mb, threads};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use candle_core::Device;
use zoo_core::checkpoint::ZooModel;
use zoo_core::loss::cross_entropy;
use zoo_core::optim::{named_vars, Adam, AdamConfig, Optimizer};
use zoo_core::ZooRng;
use zoo_data::Mnist;
use zoo_eval::judge::{Judge, JudgeConfig};

fn main() -> Result<()> {
    candle_zoo::keep_freed_memory();
    let (iters, warmup) = (arg_usize("--iters", 20), arg_usize("--warmup", 3));
    let dev = Device::Cpu;
    let data = Mnist::bundled_train_subset()?;
    let judge = Judge::new(&JudgeConfig::lenet(), &dev)?;
    zoo_core::init::init_torch_default(judge.varmap(), &mut ZooRng::new(0))?;
    let mut opt = Adam::new(named_vars(judge.varmap(), ""), AdamConfig::new(1e-3))?;
    let mut rng = ZooRng::new(1);
    let (xt, yt) = data.batch(&(0..64).collect::<Vec<_>>(), &dev)?;
    let (xi, _) = data.batch(&(0..256).collect::<Vec<_>>(), &dev)?;

    let mut train = Vec::new();
    for i in 0..warmup + iters {
        let t = Instant::now();
        let loss = cross_entropy(&judge.forward_train(&xt, &mut rng)?, &yt)?;
        opt.step(&loss.backward()?)?;
        loss.to_scalar::<f32>()?;
        if i >= warmup {
            train.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut infer = Vec::new();
    for i in 0..warmup + iters {
        let t = Instant::now();
        judge.forward(&xi)?.to_vec2::<f32>()?;
        if i >= warmup {
            infer.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let threads = threads();
    println!(
        "{}",
        serde_json::json!({"model": "judge", "threads": threads, "train_ms": median(train), "infer_ms": median(infer), "peak_rss_mb": peak_rss_mb()})
    );
    Ok(())
}
