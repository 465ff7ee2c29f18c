//! # zoo-cgan
//!
//! GANs whose generator takes more than noise: InfoGAN's latent codes (Chen et al. 2016), learnt
//! without labels by maximising the mutual information between the codes and the samples, and
//! AC-GAN's class labels (Odena et al. 2017) with the MSGAN mode-seeking regulariser (Mao et al.
//! 2019) as an option. They
//! train with zoo-ebgan's adversarial trainer ([`zoo_ebgan::Trainer`]), which feeds the step's
//! latents (codes included) to both players' losses.

pub mod acgan;
pub mod infogan;

pub use acgan::{AcGan, AcGanConfig};
pub use infogan::{info_loss, AuxDiscriminator, AuxOutputs, Codes, InfoGan, InfoGanConfig};

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use zoo_core::checkpoint::ZooModel;
    use zoo_core::train::TrainTask;
    use zoo_core::ZooRng;
    use zoo_ebgan::{Adversarial, TrainConfig, Trainer};

    #[test]
    fn save_load_is_bit_exact_and_other_families_are_refused() {
        let dev = Device::Cpu;
        let m = InfoGan::new(&InfoGanConfig::mnist(), &dev).unwrap();
        zoo_core::init::init_dcgan(m.varmap(), &mut ZooRng::new(0)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("infogan.safetensors");
        m.save(&p).unwrap();
        let back = InfoGan::load(&p, &dev).unwrap();
        let z = m.latents(6, &mut ZooRng::new(2), &dev).unwrap();
        let (a, b) = (m.generate(&z).unwrap(), back.generate(&z).unwrap());
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let (qa, qb) = (m.infer_category(&a).unwrap(), back.infer_category(&a).unwrap());
        assert_eq!(qa.to_vec1::<u32>().unwrap(), qb.to_vec1::<u32>().unwrap());
        let e = format!("{:#}", zoo_ebgan::Ebgan::load(&p, &dev).err().unwrap());
        assert!(e.contains("infogan") && e.contains("ebgan"), "{e}");
    }

    #[test]
    fn acgan_saves_and_loads_bit_exact_and_a_few_steps_lower_its_losses() {
        let dev = Device::Cpu;
        let m = AcGan::new(&AcGanConfig::mnist_msgan(), &dev).unwrap();
        zoo_core::init::init_dcgan(m.varmap(), &mut ZooRng::new(0)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("acgan.safetensors");
        m.save(&p).unwrap();
        let back = AcGan::load(&p, &dev).unwrap();
        assert_eq!(back.config(), m.config());
        let z = m.latents(4, &mut ZooRng::new(2), &dev).unwrap();
        let (a, b) = (m.generate(&z).unwrap(), back.generate(&z).unwrap());
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert!(InfoGan::load(&p, &dev).is_err());

        let data = zoo_data::Mnist::bundled_train_subset().unwrap().subset(0..512).unwrap();
        let cfg = TrainConfig { batch_size: 32, ..TrainConfig::default() };
        let mut t = Trainer::<AcGan>::new(&AcGanConfig::mnist(), cfg, data, &dev).unwrap();
        let value = |m: &[(String, f64)], k: &str| m.iter().find(|(n, _)| n == k).unwrap().1;
        let first = t.train_step(0).unwrap();
        let mut last = first.clone();
        for step in 1..12 {
            last = t.train_step(step).unwrap();
        }
        for k in ["loss_d", "class_loss"] {
            assert!(value(&last, k) < value(&first, k), "{k}: {} -> {}", value(&first, k), value(&last, k));
        }
    }

    #[test]
    fn a_few_steps_on_bundled_digits_lower_the_discriminator_and_information_losses() {
        let dev = Device::Cpu;
        let data = zoo_data::Mnist::bundled_train_subset().unwrap().subset(0..512).unwrap();
        let cfg = TrainConfig { batch_size: 32, ..TrainConfig::infogan(1) };
        let mut t = Trainer::<InfoGan>::new(&InfoGanConfig::mnist(), cfg, data, &dev).unwrap();
        let value = |m: &[(String, f64)], k: &str| m.iter().find(|(n, _)| n == k).unwrap().1;
        let first = t.train_step(0).unwrap();
        let mut last = first.clone();
        for step in 1..12 {
            last = t.train_step(step).unwrap();
        }
        for k in ["loss_d", "info_loss"] {
            assert!(value(&last, k) < value(&first, k), "{k}: {} -> {}", value(&first, k), value(&last, k));
        }
    }
}
