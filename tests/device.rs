//! The same computations on the CPU and on the device named by `ZOO_TEST_DEVICE` (default `cpu`;
//! e.g. `ZOO_TEST_DEVICE=cuda cargo test --features cuda --test device`) must agree: seeded random
//! tensors exactly, layers, losses and a judge training step within float tolerance, and a
//! checkpoint written from the device must load on the CPU bit-exactly.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use zoo_core::checkpoint::ZooModel;
use zoo_core::loss::{bce_with_logits, mmd2_multi_rbf, sequence_cross_entropy};
use zoo_core::nn::{grad_reverse, layer_norm, MultiHeadAttention};
use zoo_core::optim::{named_vars, Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
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
    let step = |dev: &Device| -> (Judge, Vec<(String, Vec<f32>)>) {
        let judge = Judge::new(&JudgeConfig::lenet(), dev).unwrap();
        zoo_core::init::init_torch_default(judge.varmap(), &mut ZooRng::new(5)).unwrap();
        // SGD: Adam's first step is lr * sign(g), which turns the devices' rounding noise in a
        // gradient that is zero in exact arithmetic (a bias before BatchNorm) into +-lr.
        let mut opt = Sgd::new(named_vars(judge.varmap(), ""), SgdConfig::new(0.05, 0.9)).unwrap();
        let (x, y) = data.batch(&(0..32).collect::<Vec<_>>(), dev).unwrap();
        let logits = judge.forward_train(&x, &mut ZooRng::new(6)).unwrap();
        let loss = zoo_core::loss::cross_entropy(&logits, &y).unwrap();
        let grads = loss.backward().unwrap();
        let mut out = vec![("logits".to_string(), host(&logits)), ("loss".to_string(), host(&loss))];
        for (name, v) in named_vars(judge.varmap(), "") {
            out.push((format!("gradient of {name}"), host(grads.get(v.as_tensor()).unwrap())));
        }
        opt.step(&grads).unwrap();
        out.push(("logits after one step".to_string(), host(&judge.forward(&x).unwrap())));
        (judge, out)
    };
    let (_, cpu) = step(&Device::Cpu);
    let (judge, other) = step(&dev);
    let pairs: Vec<_> = cpu.into_iter().zip(other).map(|((n, a), (_, b))| (n, a, b)).collect();
    let (grads, outputs): (Vec<_>, Vec<_>) = pairs.into_iter().partition(|(n, _, _)| n.starts_with("gradient"));
    let mut bad = compare(&outputs, 1e-4, false, "judge");
    bad.extend(compare(&grads, 1e-4, true, "judge"));
    assert!(bad.is_empty(), "out of tolerance:\n{}", bad.join("\n"));

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

/// One adversarial step's losses, and the gradient of every variable from its own player's loss.
fn adversarial_step<M: Adversarial>(
    cfg: &M::Config,
    dev: &Device,
    dtype: DType,
) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    let data = zoo_data::Mnist::bundled_train_subset().unwrap();
    let model = M::new_with_dtype(cfg, dev, dtype).unwrap();
    zoo_core::init::init_dcgan(model.varmap(), &mut ZooRng::new(11)).unwrap();
    let (x, y) = data.batch(&(0..16).collect::<Vec<_>>(), dev).unwrap();
    let x = x.to_dtype(dtype).unwrap();
    let z = model.latents(16, &mut ZooRng::new(12), dev).unwrap().to_dtype(dtype).unwrap();
    let fake = model.generator().forward_t(&z, true).unwrap();
    let batch = Batch { real: &x, labels: &y, latents: &z };
    let (l_d, _) = model.discriminator_loss(&batch, &fake.detach()).unwrap();
    let (l_g, _) = model.generator_loss(&batch, &fake).unwrap();
    let (g_d, g_g) = (l_d.backward().unwrap(), l_g.backward().unwrap());
    // Candle keeps no gradient of intermediate tensors: G's loss again, on the images as a leaf.
    let images = candle_core::Var::from_tensor(&fake.detach()).unwrap();
    let to_images = model.generator_loss(&batch, images.as_tensor()).unwrap().0.backward().unwrap();
    let grads = named_vars(model.varmap(), "")
        .into_iter()
        .map(|(name, var)| {
            let g = if name.starts_with("generator.") { g_g.get(&var) } else { g_d.get(&var) };
            let g = g.unwrap_or_else(|| panic!("{} {name} has no gradient", M::FAMILY));
            (name, host(g))
        })
        .chain([
            ("fake".to_string(), host(&fake)),
            ("d_loss_g/d_fake".to_string(), host(to_images.get(images.as_tensor()).unwrap())),
        ])
        .collect();
    (vec![host(&l_d)[0], host(&l_g)[0]], grads)
}

fn adversarial_agrees<M: Adversarial>(cfg: &M::Config) {
    // In f64 (Metal has none: f32 there). In f32 on CUDA the GAN's generator gradients differed
    // from the CPU's by up to 2e-3 of the largest one, while every layer alone (and EBGAN's
    // generator, the same network) agreed to 1e-7; its gradients pass through BatchNorm
    // backwards, which subtracts the batch mean of the incoming gradient and so can magnify
    // rounding. In f64 rounding is negligible, so a difference there is a wrong kernel.
    let dev = target();
    let dtype = if dev.is_metal() { DType::F32 } else { DType::F64 };
    let tol = if dtype == DType::F64 { 1e-6 } else { 1e-4 };
    let (cpu_losses, cpu) = adversarial_step::<M>(cfg, &Device::Cpu, dtype);
    let (dev_losses, dev) = adversarial_step::<M>(cfg, &dev, dtype);
    assert_close(&cpu_losses, &dev_losses, tol, &format!("{} losses (D, G)", M::FAMILY));
    let pairs = |prefix: &str| -> Vec<_> {
        cpu.iter()
            .zip(&dev)
            .filter(|((name, _), _)| name.starts_with(prefix))
            .map(|((n, a), (_, b))| (n.clone(), a.clone(), b.clone()))
            .collect()
    };
    let mut bad = compare(&pairs("fake"), tol, false, &format!("{} generated images", M::FAMILY));
    bad.extend(compare(&pairs("d_loss_g/d_fake"), tol, false, &format!("{} G's loss, to its images", M::FAMILY)));
    // Each player's gradients are compared at the scale of that player's largest one: some have
    // a gradient that is zero in exact arithmetic (a bias before BatchNorm) and rounding noise
    // in floats, different on every device.
    for player in ["discriminator.", "generator."] {
        bad.extend(compare(&pairs(player), tol, true, &format!("{} {player}* gradients", M::FAMILY)));
    }
    assert!(bad.is_empty(), "out of tolerance:\n{}", bad.join("\n"));
}

/// Compares named CPU/device pairs, each within `rel` of a scale: its own largest magnitude, or
/// with `shared_scale` the largest of all of them. Prints every pair's worst deviation, then
/// fails listing all the pairs out of tolerance.
fn assert_all_close(pairs: &[(String, Vec<f32>, Vec<f32>)], rel: f32, shared_scale: bool, what: &str) {
    let bad = compare(pairs, rel, shared_scale, what);
    assert!(bad.is_empty(), "{what} out of tolerance:\n{}", bad.join("\n"));
}

/// What [`assert_all_close`] checks, returning the pairs out of tolerance.
fn compare(pairs: &[(String, Vec<f32>, Vec<f32>)], rel: f32, shared_scale: bool, what: &str) -> Vec<String> {
    let largest = |v: &[f32]| v.iter().fold(1e-12f32, |m, x| m.max(x.abs()));
    let global = pairs.iter().map(|(_, a, b)| largest(a).max(largest(b))).fold(1e-12f32, f32::max);
    let mut bad = Vec::new();
    for (name, a, b) in pairs {
        assert_eq!(a.len(), b.len(), "{what}: {name}: lengths differ");
        let scale = if shared_scale { global } else { largest(a).max(largest(b)) };
        let (i, worst) =
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .enumerate()
                .fold((0, 0f32), |m, d| if d.1 > m.1 { d } else { m });
        eprintln!("{what}: {name}: worst |cpu - device| {worst:.3e} at {i} ({:.2e} of {scale:.3e})", worst / scale);
        if worst > rel * scale {
            bad.push(format!("{what}: {name}[{i}]: cpu {} vs device {} (scale {scale})", a[i], b[i]));
        }
    }
    bad
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

#[test]
fn adam_steps_alike_on_the_device() {
    // A loss whose gradient is exact on every device, so the update alone is compared.
    let step = |dev: &Device| -> Vec<f32> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, dev);
        let w = vb.get_with_hints((64, 32), "w", candle_nn::Init::Const(0.5)).unwrap();
        let c = ZooRng::new(8).normal((64, 32), 0.0, 1.0, DType::F32, dev).unwrap();
        let mut opt = Adam::new(named_vars(&vm, ""), AdamConfig::new(1e-2).adamw(1e-3)).unwrap();
        for _ in 0..3 {
            let loss = (&w * &c).unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        host(&w)
    };
    assert_close(&step(&Device::Cpu), &step(&target()), 1e-5, "weights after three Adam steps");
}

#[test]
fn each_layer_agrees_forward_and_backward() {
    use candle_core::ModuleT;
    use candle_nn::{BatchNormConfig, Conv2dConfig, ConvTranspose2dConfig, Module};
    use zoo_core::nn::{batch_norm, conv2d, conv_transpose2d, leaky_relu, linear, max_pool2d};
    let run = |dev: &Device| -> Vec<(String, Vec<f32>)> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, dev);
        let conv =
            conv2d(3, 8, 4, Conv2dConfig { stride: 2, padding: 1, ..Default::default() }, vb.pp("conv")).unwrap();
        let bn = batch_norm(8, BatchNormConfig::default(), vb.pp("bn")).unwrap();
        let up_cfg = ConvTranspose2dConfig { stride: 2, padding: 1, ..Default::default() };
        let up = conv_transpose2d(8, 4, 4, up_cfg, vb.pp("up")).unwrap();
        let fc = linear(4 * 6 * 6, 5, vb.pp("fc")).unwrap();
        zoo_core::init::init_torch_default(&vm, &mut ZooRng::new(3)).unwrap();
        let mut rng = ZooRng::new(4);
        let x = candle_core::Var::from_tensor(&rng.normal((4, 3, 12, 12), 0.0, 1.0, DType::F32, dev).unwrap()).unwrap();
        let h = conv.forward(x.as_tensor()).unwrap();
        let hb = bn.forward_t(&h, true).unwrap();
        let a = leaky_relu(&hb, 0.2).unwrap();
        let u = up.forward(&a).unwrap();
        let p = max_pool2d(&u, 2).unwrap();
        let f = fc.forward(&p.flatten_from(1).unwrap()).unwrap();
        let c = rng.normal((4, 5), 0.0, 1.0, DType::F32, dev).unwrap();
        let loss = (&f * &c).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let mut out: Vec<(String, Vec<f32>)> = [("conv", &h), ("batch_norm", &hb), ("leaky_relu", &a)]
            .into_iter()
            .chain([("conv_transpose", &u), ("max_pool", &p), ("linear", &f)])
            .map(|(n, t)| (format!("forward {n}"), host(t)))
            .collect();
        out.push(("gradient of the input".into(), host(grads.get(x.as_tensor()).unwrap())));
        for (name, v) in named_vars(&vm, "") {
            out.push((format!("gradient of {name}"), host(grads.get(v.as_tensor()).unwrap())));
        }
        out
    };
    let pairs: Vec<_> = run(&Device::Cpu).into_iter().zip(run(&target())).map(|((n, a), (_, b))| (n, a, b)).collect();
    let (forward, backward): (Vec<_>, Vec<_>) = pairs.into_iter().partition(|(n, _, _)| n.starts_with("forward"));
    assert_all_close(&forward, 1e-4, false, "layer outputs");
    // conv.bias feeds a BatchNorm: its exact gradient is zero, so only a shared scale is fair.
    assert_all_close(&backward, 1e-4, true, "layer gradients");
}
