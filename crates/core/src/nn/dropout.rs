//! Dropout with seeded masks (Srivastava et al. 2014, inverted scaling).
//!
//! Candle's dropout draws its mask from the unseedable CPU RNG; here the mask comes from a
//! [`ZooRng`], so a run is reproducible and resumable.

use std::sync::{Arc, Mutex};

use candle_core::{ModuleT, Result, Tensor};

use crate::ZooRng;

/// A random generator shared by the layers of one model (e.g. all its dropout layers), so that a
/// `ModuleT` chain can stay seeded. Save its state with the training checkpoint.
pub type SharedRng = Arc<Mutex<ZooRng>>;

/// Zeroes each element with probability `p` and scales the survivors by `1 / (1 - p)`.
pub fn dropout(x: &Tensor, p: f64, rng: &mut ZooRng) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        candle_core::bail!("dropout probability must be in [0, 1), got {p}");
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    let mask =
        rng.bernoulli(x.shape(), 1.0 - p, x.dtype(), x.device()).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    x.mul(&(mask * (1.0 / (1.0 - p)))?)
}

/// Dropout as a layer for [`super::SequentialT`]: active only when `train` is true.
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f64,
    rng: SharedRng,
}

impl Dropout {
    /// A dropout layer drawing its masks from `rng`.
    pub fn new(p: f64, rng: SharedRng) -> Self {
        Self { p, rng }
    }
}

impl ModuleT for Dropout {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train {
            return Ok(x.clone());
        }
        let mut rng = self.rng.lock().map_err(|_| candle_core::Error::Msg("dropout RNG lock poisoned".into()))?;
        dropout(x, self.p, &mut rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn seeded_masks_repeat_and_scale_is_inverted() {
        let x = Tensor::ones((50, 40), DType::F32, &Device::Cpu).unwrap();
        let a = dropout(&x, 0.25, &mut ZooRng::new(9)).unwrap().to_vec2::<f32>().unwrap();
        let b = dropout(&x, 0.25, &mut ZooRng::new(9)).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(a, b);
        let flat: Vec<f32> = a.into_iter().flatten().collect();
        assert!(flat.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
        let kept = flat.iter().filter(|&&v| v > 0.0).count() as f64 / flat.len() as f64;
        assert!((kept - 0.75).abs() < 0.05, "kept {kept}");
        let layer = Dropout::new(0.5, Arc::new(Mutex::new(ZooRng::new(1))));
        assert_eq!(layer.forward_t(&x, false).unwrap().to_vec2::<f32>().unwrap(), x.to_vec2::<f32>().unwrap());
        assert!(dropout(&x, 1.0, &mut ZooRng::new(1)).is_err());
    }
}
