//! Cross-entropy for classification and for padded sequences with label smoothing.
//!
//! Label smoothing as in Szegedy et al. 2016 and Vaswani et al. 2017 (section 5.4, eps = 0.1):
//! the target distribution is `(1 - eps) * onehot(y) + eps / V`, so the loss per token is
//! `(1 - eps) * (-log p_y) + eps * mean_v(-log p_v)`.

use candle_core::{DType, Result, Tensor, D};

use crate::nn::log_softmax;

/// Mean cross-entropy of logits `[N, C]` against class indices `[N]` (u32).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logp = log_softmax(logits, D::Minus1)?;
    let picked = logp.gather(&targets.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?;
    picked.neg()?.mean_all()
}

/// Masked, label-smoothed cross-entropy of logits `[B, T, V]` against targets `[B, T]` (u32).
///
/// Positions whose target equals `pad_id` are ignored. Returns `(mean loss per real token,
/// number of real tokens)`. With no real token the loss is zero (not NaN).
pub fn sequence_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    pad_id: u32,
    smoothing: f64,
) -> Result<(Tensor, usize)> {
    let (b, t, v) = logits.dims3()?;
    if targets.dims() != [b, t] {
        candle_core::bail!(
            "targets have shape {:?}, expected [{b}, {t}] to match logits {:?}",
            targets.dims(),
            logits.dims()
        );
    }
    if !(0.0..1.0).contains(&smoothing) {
        candle_core::bail!("label smoothing must be in [0, 1), got {smoothing}");
    }
    let logits = logits.reshape((b * t, v))?;
    let targets = targets.to_dtype(DType::U32)?.reshape(b * t)?;
    let logp = log_softmax(&logits, D::Minus1)?;
    let nll = logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    let per_token = if smoothing > 0.0 {
        let uniform = logp.mean(D::Minus1)?.neg()?;
        ((nll * (1.0 - smoothing))? + (uniform * smoothing)?)?
    } else {
        nll
    };
    let mask = targets.ne(pad_id)?.to_dtype(per_token.dtype())?;
    let count = mask.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()? as usize;
    let total = per_token.mul(&mask)?.sum_all()?;
    Ok((total.affine(1.0 / count.max(1) as f64, 0.0)?, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, randn64};
    use candle_core::Device;

    #[test]
    fn matches_hand_computation_and_ignores_padding() {
        let dev = Device::Cpu;
        let logits = randn64(&[2, 3, 4], 1);
        let targets = Tensor::new(&[[1u32, 3, 0], [2, 0, 0]], &dev).unwrap();
        let (loss, n) = sequence_cross_entropy(&logits, &targets, 0, 0.1).unwrap();
        assert_eq!(n, 3);
        let l = logits.to_vec3::<f64>().unwrap();
        let tokens = [(0usize, 0usize, 1usize), (0, 1, 3), (1, 0, 2)];
        let mut want = 0.0;
        for &(i, j, y) in &tokens {
            let row = &l[i][j];
            let lse = row.iter().map(|x| x.exp()).sum::<f64>().ln();
            let logp: Vec<f64> = row.iter().map(|x| x - lse).collect();
            want += 0.9 * -logp[y] + 0.1 * -logp.iter().sum::<f64>() / 4.0;
        }
        want /= 3.0;
        assert!((loss.to_scalar::<f64>().unwrap() - want).abs() < 1e-12);
        // Changing logits at padded positions does not change the loss.
        let mut flat: Vec<f64> = logits.flatten_all().unwrap().to_vec1().unwrap();
        for v in flat.iter_mut().skip(5 * 4) {
            *v += 10.0;
        }
        let l2 = Tensor::from_vec(flat, (2, 3, 4), &dev).unwrap();
        let (loss2, _) = sequence_cross_entropy(&l2, &targets, 0, 0.1).unwrap();
        assert_eq!(loss.to_scalar::<f64>().unwrap(), loss2.to_scalar::<f64>().unwrap());
        let all_pad = Tensor::zeros((2, 3), DType::U32, &dev).unwrap();
        let (l0, n0) = sequence_cross_entropy(&logits, &all_pad, 0, 0.1).unwrap();
        assert_eq!((l0.to_scalar::<f64>().unwrap(), n0), (0.0, 0));
        assert!(sequence_cross_entropy(&logits, &Tensor::zeros(3, DType::U32, &dev).unwrap(), 0, 0.1).is_err());
    }

    #[test]
    fn gradients_match_finite_differences() {
        let logits = randn64(&[2, 3, 5], 2);
        let targets = Tensor::new(&[[1u32, 4, 0], [2, 3, 0]], &Device::Cpu).unwrap();
        check_gradient(&logits, |x| Ok(sequence_cross_entropy(x, &targets, 0, 0.1)?.0));
        let flat = randn64(&[4, 3], 3);
        let y = Tensor::new(&[0u32, 2, 1, 2], &Device::Cpu).unwrap();
        check_gradient(&flat, |x| cross_entropy(x, &y));
        let want = candle_nn::loss::cross_entropy(&flat, &y).unwrap().to_scalar::<f64>().unwrap();
        assert!((cross_entropy(&flat, &y).unwrap().to_scalar::<f64>().unwrap() - want).abs() < 1e-12);
    }
}
