//! Speed of EBGAN and of its GAN baseline (the conv MNIST presets): one training step as the
//! trainer runs it (batch 64: generator forward, discriminator loss, backward and Adam update,
//! generator loss through the updated discriminator, backward and Adam update), and inference
//! (256 samples in evaluation mode), on real MNIST digits from data/mnist.
//!
//! `cargo bench --bench ebgan -- --model ebgan|gan [--iters N] [--warmup N]` prints one JSON line:
//! `{"model": .., "threads": T, "train_ms": median, "infer_ms": median, "peak_rss_mb": ..}`.
//! The PyTorch twin is bench/torch/ebgan.py.

use std::time::Instant;

mod common;
use common::{arg, arg_usize, median, peak_rss_mb, threads};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use candle_core::Device;
use zoo_core::train::TrainTask;
use zoo_core::ZooRng;
use zoo_data::Mnist;
use zoo_ebgan::{Adversarial, Config, Ebgan, Gan, GanConfig, TrainConfig, Trainer};

fn time<M: Adversarial>(mut trainer: Trainer<M>, iters: usize, warmup: usize) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    let mut train = Vec::new();
    for i in 0..warmup + iters {
        let t = Instant::now();
        trainer.train_step(i as u64)?;
        if i >= warmup {
            train.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut infer = Vec::new();
    let mut rng = ZooRng::new(1);
    for i in 0..warmup + iters {
        let t = Instant::now();
        trainer.model.sample(256, &mut rng, &dev)?.flatten_all()?.to_vec1::<f32>()?;
        if i >= warmup {
            infer.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok((median(train), median(infer)))
}

fn main() -> Result<()> {
    candle_zoo::keep_freed_memory();
    let iters = arg_usize("--iters", 20);
    let warmup = arg_usize("--warmup", 3);
    let model = arg("--model").unwrap_or_else(|| "ebgan".into());
    let data = Mnist::bundled_train_subset()?.subset(0..6400)?;
    let recipe = TrainConfig::default();
    let dev = Device::Cpu;
    let (train, infer) = match model.as_str() {
        "ebgan" => time(Trainer::<Ebgan>::new(&Config::mnist_conv(), recipe, data, &dev)?, iters, warmup)?,
        "gan" => time(Trainer::<Gan>::new(&GanConfig::mnist_conv(), recipe, data, &dev)?, iters, warmup)?,
        other => anyhow::bail!("--model must be ebgan or gan, got '{other}'"),
    };
    let threads = threads();
    println!(
        "{}",
        serde_json::json!({"model": model, "threads": threads, "train_ms": train, "infer_ms": infer, "peak_rss_mb": peak_rss_mb()})
    );
    Ok(())
}
