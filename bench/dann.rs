//! Speed of the domain-adaptation models (the DANN MNIST -> MNIST-M network): one training step
//! as the trainer runs it (64 MNIST + 64 MNIST-M images: forward, losses, backward, SGD with
//! momentum) for DANN, DDC and the source-only baseline, and inference (classifying 500 MNIST-M
//! images), on digits from data/mnist and MNIST-M built from data/photos.
//!
//! `cargo bench --bench dann -- --model dann|ddc|source-only [--iters N] [--warmup N] [--only train|infer]` prints one
//! JSON line like the other benches. The PyTorch twin is bench/torch/dann.py.

mod common;
use common::{arg, arg_usize, report, timed_if};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use candle_core::Device;
use zoo_core::train::TrainTask;
use zoo_dann::{Adaptation, DaTrainConfig, DaTrainer, Dann, DannConfig, Method};
use zoo_data::{build_mnistm, ImageSet, Mnist, Photos};
use zoo_ddc::{Ddc, DdcConfig};

fn time<M: Adaptation>(
    mut trainer: DaTrainer<M>,
    target: &ImageSet,
    iters: usize,
    warmup: usize,
) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    let train = timed_if("train", warmup, iters, |i| trainer.train_step(i as u64).map(drop))?;
    let (x, _) = target.batch(&(0..500).collect::<Vec<_>>(), &dev)?;
    let infer = timed_if("infer", warmup, iters, |_| {
        trainer.model.classifier().forward(&x)?.argmax(1)?.to_vec1::<u32>()?;
        Ok(())
    })?;
    Ok((train, infer))
}

fn main() -> Result<()> {
    candle_zoo::tune_runtime();
    let iters = arg_usize("--iters", 20);
    let warmup = arg_usize("--warmup", 3);
    let model = arg("--model").unwrap_or_else(|| "dann".into());
    let mnist = Mnist::bundled_train_subset()?.subset(0..6400)?;
    let (source, target) = (ImageSet::from_mnist_rgb(&mnist), build_mnistm(&mnist, &Photos::bundled()?, 0)?);
    let dev = Device::Cpu;
    let recipe = |m| DaTrainConfig::paper(m, 10_000, 0);
    let (s, t) = (source, target.clone());
    let (train, infer) = match model.as_str() {
        "dann" => time(
            DaTrainer::<Dann>::new(&DannConfig::mnist(), recipe(Method::Adapt), s, t, &dev)?,
            &target,
            iters,
            warmup,
        )?,
        "source-only" => time(
            DaTrainer::<Dann>::new(&DannConfig::mnist(), recipe(Method::SourceOnly), s, t, &dev)?,
            &target,
            iters,
            warmup,
        )?,
        "ddc" => time(
            DaTrainer::<Ddc>::new(&DdcConfig::mnist(), recipe(Method::Adapt), s, t, &dev)?,
            &target,
            iters,
            warmup,
        )?,
        other => anyhow::bail!("--model must be dann, ddc or source-only, got '{other}'"),
    };
    report(&model, train, infer);
    Ok(())
}
