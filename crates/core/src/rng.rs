//! One seedable random source for everything random in a run.
//!
//! Candle's CPU RNG cannot be seeded (`Device::Cpu.set_seed` is an error), so every random tensor
//! of the zoo is drawn on the host from a [`ZooRng`] and uploaded to the target device. The same
//! seed therefore gives the same numbers on every device, and the generator's exact position can be
//! saved with a checkpoint ([`ZooRng::state`]) and restored on resume ([`ZooRng::from_state`]).

use anyhow::{Context, Result};
use candle_core::{DType, Device, Shape, Tensor};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// A seedable, serialisable random generator (ChaCha8) that draws tensors on any device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZooRng {
    inner: ChaCha8Rng,
}

impl ZooRng {
    /// A generator whose whole stream is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { inner: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// An independent generator derived from this one's seed and a label (e.g. `"dropout"`,
    /// `"data"`), so that separate consumers do not shift each other's streams.
    pub fn derive(seed: u64, label: &str) -> Self {
        // FNV-1a of the label, mixed into the seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in label.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self::new(seed ^ h.rotate_left(17))
    }

    /// A generator keyed by the values of a tensor (its first 64 elements, read as f32) and a
    /// label: the same tensor gives the same stream, so draws made inside a loss from the step's
    /// own inputs repeat exactly when a run resumes.
    pub fn keyed(values: &Tensor, label: &str) -> Result<Self> {
        let seed = values
            .flatten_all()?
            .narrow(0, 0, values.elem_count().min(64))?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?
            .iter()
            .fold(0x9e37_79b9_7f4a_7c15u64, |h, v| (h ^ v.to_bits() as u64).wrapping_mul(0x0000_0100_0000_01b3));
        Ok(Self::derive(seed, label))
    }

    /// The exact generator state as JSON (seed, stream and position), for checkpoints.
    pub fn state(&self) -> String {
        serde_json::to_string(self).expect("ChaCha state always serialises")
    }

    /// Restores a generator from [`ZooRng::state`]'s output.
    pub fn from_state(state: &str) -> Result<Self> {
        serde_json::from_str(state).context("malformed random generator state")
    }

    /// The next raw 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A uniform float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        self.inner.random::<f64>()
    }

    /// A uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.inner.random_range(0..n)
    }

    /// A standard normal float.
    pub fn next_normal(&mut self) -> f64 {
        StandardNormal.sample(&mut self.inner)
    }

    /// A uniformly random permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.inner.random_range(0..=i);
            p.swap(i, j);
        }
        p
    }

    fn tensor_from<F>(&mut self, shape: &Shape, dtype: DType, dev: &Device, mut draw: F) -> Result<Tensor>
    where
        F: FnMut(&mut ChaCha8Rng) -> f64,
    {
        let n = shape.elem_count();
        let t = match dtype {
            DType::F64 => {
                let v: Vec<f64> = (0..n).map(|_| draw(&mut self.inner)).collect();
                Tensor::from_vec(v, shape.clone(), dev)?
            }
            _ => {
                let v: Vec<f32> = (0..n).map(|_| draw(&mut self.inner) as f32).collect();
                Tensor::from_vec(v, shape.clone(), dev)?.to_dtype(dtype)?
            }
        };
        Ok(t)
    }

    /// A tensor of uniform values in `[lo, hi)`.
    pub fn uniform<S: Into<Shape>>(
        &mut self,
        shape: S,
        lo: f64,
        hi: f64,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        self.tensor_from(&shape.into(), dtype, dev, |r| lo + (hi - lo) * r.random::<f64>())
    }

    /// A tensor of normal values with the given mean and standard deviation.
    pub fn normal<S: Into<Shape>>(
        &mut self,
        shape: S,
        mean: f64,
        std: f64,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        self.tensor_from(&shape.into(), dtype, dev, |r| {
            let z: f64 = StandardNormal.sample(r);
            mean + std * z
        })
    }

    /// A tensor of Bernoulli draws: 1 with probability `p`, else 0.
    pub fn bernoulli<S: Into<Shape>>(&mut self, shape: S, p: f64, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.tensor_from(&shape.into(), dtype, dev, |r| if r.random::<f64>() < p { 1.0 } else { 0.0 })
    }

    /// A tensor of uniform class indices in `0..n` (dtype u32), e.g. labels for a conditional GAN.
    pub fn categorical<S: Into<Shape>>(&mut self, shape: S, n: usize, dev: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let v: Vec<u32> = (0..shape.elem_count()).map(|_| self.inner.random_range(0..n) as u32).collect();
        Ok(Tensor::from_vec(v, shape, dev)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_state_round_trips() {
        let dev = Device::Cpu;
        let mut a = ZooRng::new(7);
        let mut b = ZooRng::new(7);
        let ta = a.normal((3, 4), 0.0, 1.0, DType::F32, &dev).unwrap();
        let tb = b.normal((3, 4), 0.0, 1.0, DType::F32, &dev).unwrap();
        assert_eq!(ta.to_vec2::<f32>().unwrap(), tb.to_vec2::<f32>().unwrap());
        let saved = a.state();
        let next_a = a.uniform(10, 0.0, 1.0, DType::F64, &dev).unwrap().to_vec1::<f64>().unwrap();
        let mut restored = ZooRng::from_state(&saved).unwrap();
        let next_r = restored.uniform(10, 0.0, 1.0, DType::F64, &dev).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(next_a, next_r);
        let mut c = ZooRng::new(8);
        let tc = c.normal((3, 4), 0.0, 1.0, DType::F32, &dev).unwrap();
        assert_ne!(ta.to_vec2::<f32>().unwrap(), tc.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn distributions_have_the_right_moments() {
        let dev = Device::Cpu;
        let mut r = ZooRng::new(1);
        let n = r.normal(20000, 2.0, 3.0, DType::F64, &dev).unwrap().to_vec1::<f64>().unwrap();
        let mean = n.iter().sum::<f64>() / n.len() as f64;
        let var = n.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n.len() as f64;
        assert!((mean - 2.0).abs() < 0.1, "mean {mean}");
        assert!((var.sqrt() - 3.0).abs() < 0.1, "std {}", var.sqrt());
        let b = r.bernoulli(20000, 0.3, DType::F32, &dev).unwrap().to_vec1::<f32>().unwrap();
        let p = b.iter().sum::<f32>() / b.len() as f32;
        assert!((p - 0.3).abs() < 0.02, "p {p}");
        assert!(b.iter().all(|&x| x == 0.0 || x == 1.0));
        let u = r.uniform(1000, -1.0, 1.0, DType::F32, &dev).unwrap().to_vec1::<f32>().unwrap();
        assert!(u.iter().all(|&x| (-1.0..1.0).contains(&x)));
        assert!(ZooRng::from_state("not json").is_err());
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut r = ZooRng::new(3);
        let mut p = r.permutation(100);
        assert_ne!(p, (0..100).collect::<Vec<_>>());
        p.sort();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
    }
}
