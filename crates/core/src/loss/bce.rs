//! Numerically stable binary cross-entropy on logits.
//!
//! `l(x, z) = -[z log s(x) + (1 - z) log(1 - s(x))] = max(x, 0) - x z + log(1 + exp(-|x|))`.
//! Candle's `binary_cross_entropy_with_logit` returns inf for logits like +-100; this form is
//! finite for any finite logit.

use candle_core::{Result, Tensor};

/// Per-element loss `max(x, 0) - x z + log(1 + exp(-|x|))`.
pub fn bce_with_logits_elementwise(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let targets = targets.to_dtype(logits.dtype())?;
    let softplus_neg_abs = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    logits.relu()?.sub(&logits.mul(&targets)?)?.add(&softplus_neg_abs)
}

/// Mean of [`bce_with_logits_elementwise`] over all elements.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    bce_with_logits_elementwise(logits, targets)?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, randn64};
    use candle_core::Device;

    #[test]
    fn stable_for_huge_logits_and_correct_gradient() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[100.0f64, -100.0, 0.0, 2.0], &dev).unwrap();
        let z = Tensor::new(&[0.0f64, 1.0, 1.0, 0.0], &dev).unwrap();
        let l = bce_with_logits_elementwise(&x, &z).unwrap().to_vec1::<f64>().unwrap();
        assert!((l[0] - 100.0).abs() < 1e-9 && (l[1] - 100.0).abs() < 1e-9);
        assert!((l[2] - std::f64::consts::LN_2).abs() < 1e-12);
        let s = 1.0 / (1.0 + (-2.0f64).exp());
        assert!((l[3] + (1.0 - s).ln()).abs() < 1e-12);
        let x = randn64(&[3, 4], 1).affine(3.0, 0.0).unwrap();
        let z: Vec<f64> = (0..12).map(|i| (i % 3) as f64 / 2.0).collect();
        let z = Tensor::from_vec(z, (3, 4), &dev).unwrap();
        check_gradient(&x, |x| bce_with_logits(x, &z));
    }
}
