//! Speed of the judge: one training step (batch 64: forward with dropout, cross-entropy,
//! backward, Adam update) and inference (batch 256), on real MNIST digits from data/mnist.
//!
//! `cargo bench --bench judge -- [--iters N] [--warmup N] [--only train|infer]` prints one JSON line:
//! `{"model": "judge", "threads": T, "train_ms": median, "infer_ms": median, "peak_rss_mb": ..}`.
//! Threads come from RAYON_NUM_THREADS (set by bench/run.py). The PyTorch twin is
//! bench/torch/judge.py.

mod common;
use common::{arg_usize, report, timed_if};

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
    candle_zoo::tune_runtime();
    let (iters, warmup) = (arg_usize("--iters", 20), arg_usize("--warmup", 3));
    let dev = Device::Cpu;
    let data = Mnist::bundled_train_subset()?;
    let judge = Judge::new(&JudgeConfig::lenet(), &dev)?;
    zoo_core::init::init_torch_default(judge.varmap(), &mut ZooRng::new(0))?;
    let mut opt = Adam::new(named_vars(judge.varmap(), ""), AdamConfig::new(1e-3))?;
    let mut rng = ZooRng::new(1);
    let (xt, yt) = data.batch(&(0..64).collect::<Vec<_>>(), &dev)?;
    let (xi, _) = data.batch(&(0..256).collect::<Vec<_>>(), &dev)?;

    let train = timed_if("train", warmup, iters, |_| {
        let loss = cross_entropy(&judge.forward_train(&xt, &mut rng)?, &yt)?;
        opt.step(&loss.backward()?)?;
        loss.to_scalar::<f32>()?;
        Ok(())
    })?;
    let infer = timed_if("infer", warmup, iters, |_| {
        judge.forward(&xi)?.to_vec2::<f32>()?;
        Ok(())
    })?;
    report("judge", train, infer);
    Ok(())
}
