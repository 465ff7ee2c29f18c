//! The same computations on the CPU and on the device named by `ZOO_TEST_DEVICE` (default `cpu`;
//! e.g. `ZOO_TEST_DEVICE=cuda cargo test --features cuda --test device`) must agree: seeded random
//! tensors exactly, layers, losses and a judge training step within float tolerance, and a
//! checkpoint written from the device must load on the CPU bit-exactly.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use zoo_core::checkpoint::ZooModel;
use zoo_core::loss::{bce_with_logits, mmd2_multi_rbf, sequence_cross_entropy};
use zoo_core::nn::{grad_reverse, layer_norm, MultiHeadAttention};
use zoo_core::optim::{named_vars, Adam, AdamConfig, Optimizer};
use zoo_core::train::TrainTask;
use zoo_core::ZooRng;
use zoo_dann::{Adaptation, DaTrainConfig, DaTrainer, Dann, DannConfig, Method};
use zoo_ebgan::{Adversarial, Batch};
use zoo_eval::judge::{Judge, JudgeConfig};

fn target() -> Device {
    let spec = std::env::var("ZOO_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    zoo_core::device(&spec).expect("ZOO_TEST_DEVICE names a usable device")
}

fn host(t: &Tensor) -> Vec<f32> {
    t.to_device(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + x.abs().max(y.abs())), "{what}[{i}]: cpu {x} vs device {y}");
    }
}

#[test]
fn seeded_tensors_are_identical_on_every_device() {
    let dev = target();
    let a = ZooRng::new(3).normal((4, 5), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let b = ZooRng::new(3).normal((4, 5), 0.0, 1.0, DType::F32, &dev).unwrap();
    assert_eq!(host(&a), host(&b));
}

#[test]
fn layers_and_losses_agree_with_the_cpu_forward_and_backward() {
    let dev = target();
    let run = |dev: &Device| -> Vec<Vec<f32>> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, dev);
        let mha = MultiHeadAttention::new(8, 2, vb.pp("attn")).unwrap();
        zoo_core::init::init_torch_default(&vm, &mut ZooRng::new(1)).unwrap();
        let mut rng = ZooRng::new(2);
        let x = candle_core::Var::from_tensor(&rng.normal((2, 5, 8), 0.0, 1.0, DType::F32, dev).unwrap()).unwrap();
        let pad = Tensor::new(&[[0u8, 0, 0, 1, 1], [0, 0, 0, 0, 0]], dev).unwrap();
        let (y, _) = mha.forward(x.as_tensor(), x.as_tensor(), Some(&pad), true, None).unwrap();
        let w = rng.normal(8, 1.0, 0.1, DType::F32, dev).unwrap();
        let y = layer_norm(&y, &w, None, 1e-5).unwrap();
        let logits = grad_reverse(&y, 0.5).unwrap();
        let targets = Tensor::new(&[[1u32, 2, 3, 0, 0], [4, 5, 6, 7, 1]], dev).unwrap();
        let (seq, _) = sequence_cross_entropy(&logits, &targets, 0, 0.1).unwrap();
        let bce = bce_with_logits(&y.sum(D::Minus1).unwrap(), &Tensor::ones((2, 5), DType::F32, dev).unwrap()).unwrap();
        let flat = y.reshape((10, 8)).unwrap();
        let mmd = mmd2_multi_rbf(&flat.narrow(0, 0, 5).unwrap(), &flat.narrow(0, 5, 5).unwrap(), 3, 2.0).unwrap();
        let loss = (seq + bce).unwrap().add(&mmd).unwrap();
        let grads = loss.backward().unwrap();
        let mut out = vec![host(&loss), host(grads.get(x.as_tensor()).unwrap())];
        for (name, v) in named_vars(&vm, "") {
            out.push(host(grads.get(v.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"))));
        }
        out
    };
    let (cpu, other) = (run(&Device::Cpu), run(&dev));
    for (i, (a, b)) in cpu.iter().zip(&other).enumerate() {
        assert_close(a, b, 1e-4, &format!("output {i}"));
    }
}

#[test]
fn a_judge_training_step_agrees_and_checkpoints_move_between_devices() {
    let dev = target();
    let data = zoo_data::Mnist::bundled_test_slice().unwrap();
    let step = |dev: &Device| -> (Judge, Vec<f32>) {
        let judge = Judge::new(&JudgeConfig::lenet(), dev).unwrap();
        zoo_core::init::init_torch_default(judge.varmap(), &mut ZooRng::new(5)).unwrap();
        let mut opt = Adam::new(named_vars(judge.varmap(), ""), AdamConfig::new(1e-3)).unwrap();
        let (x, y) = data.batch(&(0..32).collect::<Vec<_>>(), dev).unwrap();
        let loss = zoo_core::loss::cross_entropy(&judge.forward_train(&x, &mut ZooRng::new(6)).unwrap(), &y).unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
        let logits = host(&judge.forward(&x).unwrap());
        (judge, logits)
    };
    let (_, cpu_logits) = step(&Device::Cpu);
    let (judge, dev_logits) = step(&dev);
    assert_close(&cpu_logits, &dev_logits, 1e-3, "judge logits after one step");

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("judge.safetensors");
    judge.save(&p).unwrap();
    let on_cpu = Judge::load(&p, &Device::Cpu).unwrap();
    let (x, _) = data.batch(&[0, 1, 2], &Device::Cpu).unwrap();
    let (xd, _) = data.batch(&[0, 1, 2], &dev).unwrap();
    for (name, v) in named_vars(judge.varmap(), "") {
        let back = named_vars(on_cpu.varmap(), "").into_iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(host(v.as_tensor()), host(back.as_tensor()), "{name} changed on its way through the file");
    }
    assert_close(&host(&on_cpu.forward(&x).unwrap()), &host(&judge.forward(&xd).unwrap()), 1e-4, "reloaded logits");
}

/// `a` and `b` agree within `rel` of the larger magnitude found in either (gradients of a
/// variable can be tiny everywhere; their scale, not each element's, sets what "close" means).
fn assert_close_scaled(a: &[f32], b: &[f32], rel: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    let scale = a.iter().chain(b).fold(1e-12f32, |m, x| m.max(x.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= rel * scale, "{what}[{i}]: cpu {x} vs device {y} (scale {scale})");
    }
}

/// One adversarial step's losses, and the gradient of every variable from its own player's loss.
fn adversarial_step<M: Adversarial>(cfg: &M::Config, dev: &Device) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    let data = zoo_data::Mnist::bundled_train_subset().unwrap();
    let model = M::new(cfg, dev).unwrap();
    zoo_core::init::init_dcgan(model.varmap(), &mut ZooRng::new(11)).unwrap();
    let (x, y) = data.batch(&(0..16).collect::<Vec<_>>(), dev).unwrap();
    let z = model.latents(16, &mut ZooRng::new(12), dev).unwrap();
    let fake = model.generator().forward_t(&z, true).unwrap();
    let batch = Batch { real: &x, labels: &y, latents: &z };
    let (l_d, _) = model.discriminator_loss(&batch, &fake.detach()).unwrap();
    let (l_g, _) = model.generator_loss(&batch, &fake).unwrap();
    let (g_d, g_g) = (l_d.backward().unwrap(), l_g.backward().unwrap());
    let grads = named_vars(model.varmap(), "")
        .into_iter()
        .map(|(name, var)| {
            let g = if name.starts_with("generator.") { g_g.get(&var) } else { g_d.get(&var) };
            let g = g.unwrap_or_else(|| panic!("{} {name} has no gradient", M::FAMILY));
            (name, host(g))
        })
        .collect();
    (vec![host(&l_d)[0], host(&l_g)[0]], grads)
}

fn adversarial_agrees<M: Adversarial>(cfg: &M::Config) {
    let (cpu_losses, cpu_grads) = adversarial_step::<M>(cfg, &Device::Cpu);
    let (dev_losses, dev_grads) = adversarial_step::<M>(cfg, &target());
    assert_close(&cpu_losses, &dev_losses, 1e-4, &format!("{} losses (D, G)", M::FAMILY));
    for ((name, a), (_, b)) in cpu_grads.iter().zip(&dev_grads) {
        assert_close_scaled(a, b, 2e-3, &format!("{} gradient of {name}", M::FAMILY));
    }
}

#[test]
fn every_generative_family_steps_alike_on_the_device() {
    let mut deep = zoo_ebgan::Config::mnist_conv();
    if let zoo_ebgan::Architecture::Conv { d_depth, .. } = &mut deep.architecture {
        *d_depth = 2;
    }
    adversarial_agrees::<zoo_ebgan::Ebgan>(&zoo_ebgan::Config::mnist_conv());
    adversarial_agrees::<zoo_ebgan::Ebgan>(&deep);
    adversarial_agrees::<zoo_ebgan::Gan>(&zoo_ebgan::GanConfig::matching(&zoo_ebgan::Config::mnist_conv()));
    adversarial_agrees::<zoo_cgan::InfoGan>(&zoo_cgan::InfoGanConfig::mnist());
    adversarial_agrees::<zoo_cgan::AcGan>(&zoo_cgan::AcGanConfig::mnist());
}

/// The metrics of two training steps of domain adaptation (the second after an SGD update).
fn adaptation_steps<M: Adaptation>(cfg: &M::Config, dev: &Device) -> Vec<f32> {
    let mnist = zoo_data::Mnist::bundled_train_subset().unwrap().subset(0..64).unwrap();
    let source = zoo_data::ImageSet::from_mnist_rgb(&mnist);
    let target = zoo_data::build_mnistm(&mnist, &zoo_data::Photos::bundled().unwrap(), 0).unwrap();
    let recipe = DaTrainConfig { batch_size: 16, ..DaTrainConfig::paper(Method::Adapt, 4, 3) };
    let mut run = DaTrainer::<M>::new(cfg, recipe, source, target, dev).unwrap();
    let mut out = Vec::new();
    for step in 0..2 {
        out.extend(run.train_step(step).unwrap().into_iter().map(|(_, v)| v as f32));
    }
    out
}

#[test]
fn every_adaptation_family_steps_alike_on_the_device() {
    let dev = target();
    let (a, b) = (
        adaptation_steps::<Dann>(&DannConfig::mnist(), &Device::Cpu),
        adaptation_steps::<Dann>(&DannConfig::mnist(), &dev),
    );
    assert_close(&a, &b, 1e-3, "dann step metrics");
    let cfg = zoo_ddc::DdcConfig::mnist();
    let (a, b) = (adaptation_steps::<zoo_ddc::Ddc>(&cfg, &Device::Cpu), adaptation_steps::<zoo_ddc::Ddc>(&cfg, &dev));
    assert_close(&a, &b, 1e-3, "ddc step metrics");
}
