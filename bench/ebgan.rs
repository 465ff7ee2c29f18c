//! Speed of the zoo's GANs on MNIST: EBGAN and its GAN baseline (the conv presets, batch 64, Adam
//! 2e-4; `ebgan-d2` a depth-2 autoencoder with a 128-d code, the networks of `ebgan-mnist` before its encoder BatchNorm), InfoGAN in the paper's setting (batch 128, G 1e-3, D 2e-4) and AC-GAN without and with
//! the MSGAN regulariser (batch 64, 2e-4). One training step as the trainer runs it (generator
//! forward, discriminator loss, backward and Adam update, generator loss through the updated
//! discriminator, backward and Adam update), and inference (256 samples in evaluation mode), on
//! real MNIST digits from data/mnist.
//!
//! `cargo bench --bench ebgan -- --model ebgan|ebgan-d2|gan|infogan|acgan|msgan [--iters N] [--warmup N] [--only train|infer]`
//! prints one JSON line:
//! `{"model": .., "threads": T, "train_ms": median, "infer_ms": median, "peak_rss_mb": ..}`.
//! The PyTorch twins are bench/torch/ebgan.py (EBGAN, GAN) and bench/torch/cgan.py (the others).

mod common;
use common::{arg, arg_usize, report, timed_if};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use candle_core::Device;
use zoo_cgan::{AcGan, AcGanConfig, InfoGan, InfoGanConfig};
use zoo_core::train::TrainTask;
use zoo_core::ZooRng;
use zoo_data::Mnist;
use zoo_ebgan::{Adversarial, Config, Ebgan, Gan, GanConfig, TrainConfig, Trainer};

fn time<M: Adversarial>(mut trainer: Trainer<M>, iters: usize, warmup: usize) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    // `--only train|infer` times one of the two alone (for profiling); the other reports NaN.
    let train = timed_if("train", warmup, iters, |i| trainer.train_step(i as u64).map(drop))?;
    let mut rng = ZooRng::new(1);
    let infer = timed_if("infer", warmup, iters, |_| {
        trainer.model.sample(256, &mut rng, &dev)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(())
    })?;
    Ok((train, infer))
}

/// The conv preset with a depth-2 autoencoder, a 128-d code and margin 0.5 (`ebgan-mnist` adds a
/// BatchNorm to the encoder, whose cost is small beside the convolutions).
fn depth2_ebgan() -> Config {
    let mut cfg = Config::mnist_conv();
    cfg.margin = 0.5;
    if let zoo_ebgan::Architecture::Conv { d_depth, code, .. } = &mut cfg.architecture {
        *d_depth = 2;
        *code = 128;
    }
    cfg
}

fn main() -> Result<()> {
    candle_zoo::tune_runtime();
    let iters = arg_usize("--iters", 20);
    let warmup = arg_usize("--warmup", 3);
    let model = arg("--model").unwrap_or_else(|| "ebgan".into());
    let data = Mnist::bundled_train_subset()?.subset(0..6400)?;
    let recipe = TrainConfig::default();
    let dev = Device::Cpu;
    let (train, infer) = match model.as_str() {
        "ebgan" => time(Trainer::<Ebgan>::new(&Config::mnist_conv(), recipe, data, &dev)?, iters, warmup)?,
        "ebgan-d2" => time(Trainer::<Ebgan>::new(&depth2_ebgan(), recipe, data, &dev)?, iters, warmup)?,
        "gan" => time(Trainer::<Gan>::new(&GanConfig::mnist_conv(), recipe, data, &dev)?, iters, warmup)?,
        "infogan" => {
            time(Trainer::<InfoGan>::new(&InfoGanConfig::mnist(), TrainConfig::infogan(0), data, &dev)?, iters, warmup)?
        }
        "acgan" => time(Trainer::<AcGan>::new(&AcGanConfig::mnist(), recipe, data, &dev)?, iters, warmup)?,
        "msgan" => time(Trainer::<AcGan>::new(&AcGanConfig::mnist_msgan(), recipe, data, &dev)?, iters, warmup)?,
        other => anyhow::bail!("--model must be ebgan, ebgan-d2, gan, infogan, acgan or msgan, got '{other}'"),
    };
    report(&model, train, infer);
    Ok(())
}
