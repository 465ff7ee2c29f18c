//! The published checkpoints load through the manifest and still do what their manifest entry
//! says, on the bundled data (fast checks; the full metrics are measured by each `eval` command).

use candle_core::Device;
use zoo_core::checkpoint::ZooModel;
use zoo_core::manifest::Manifest;
use zoo_data::Mnist;
use zoo_eval::judge::{evaluate, Judge};

#[test]
fn judge_mnist_loads_by_id_and_classifies_unseen_digits() {
    let dev = Device::Cpu;
    let judge = Judge::from_pretrained("judge-mnist", &dev).unwrap();
    let entry = Manifest::workspace().unwrap().get("judge-mnist").unwrap().clone();
    assert_eq!(entry.params, judge.num_params() as u64);
    // The bundled slice is the first 1,000 MNIST *test* digits, never seen in training.
    let r = evaluate(&judge, &Mnist::bundled_test_slice().unwrap(), 250, &dev).unwrap();
    assert!(r.accuracy >= 0.98, "judge-mnist accuracy on the bundled test slice: {}", r.accuracy);
}

#[test]
fn a_checkpoint_of_another_family_is_refused_by_manifest_id_and_by_path() {
    // The judge's file read as another family must fail, naming both families.
    let (path, _) = zoo_core::manifest::resolve_weights("judge-mnist").unwrap();
    let ck = zoo_core::checkpoint::Checkpoint::read(&path, &Device::Cpu).unwrap();
    let e = ck.expect_family("ebgan").unwrap_err().to_string();
    assert!(e.contains("'judge'") && e.contains("'ebgan'"), "{e}");
}

#[test]
fn infogan_mnist_monitor_reports_a_code_accuracy_near_its_manifest_value() {
    use zoo_ebgan::Adversarial;
    let dev = Device::Cpu;
    let model = zoo_cgan::InfoGan::from_pretrained("infogan-mnist", &dev).unwrap();
    let judge = Judge::from_pretrained("judge-mnist", &dev).unwrap();
    let z = model.latents(1000, &mut zoo_core::ZooRng::new(3), &dev).unwrap();
    let x = model.generate(&z).unwrap();
    let extras = model.monitor_extras(&z, &x, &judge).unwrap();
    let [(name, accuracy)] = extras.as_slice() else { panic!("expected one extra score, got {extras:?}") };
    assert_eq!(name, "code_accuracy");
    // The manifest's value is 0.988 on 10,000 samples; 1,000 samples vary by about 0.01.
    assert!((0.95..=1.0).contains(accuracy), "code accuracy of infogan-mnist on 1,000 samples: {accuracy}");
    // The GAN baseline has no extra scores.
    let gan = zoo_ebgan::Gan::from_pretrained("gan-mnist", &dev).unwrap();
    let zg = gan.latents(8, &mut zoo_core::ZooRng::new(3), &dev).unwrap();
    assert!(gan.monitor_extras(&zg, &gan.generate(&zg).unwrap(), &judge).unwrap().is_empty());
}
