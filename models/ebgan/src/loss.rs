//! The EBGAN objective, each term named as in the paper.

use candle_core::{Result, Tensor, D};

/// `L_D = mean_i ( D(x_i) + [m - D(G(z_i))]^+ )`: the hinge is applied per sample (eq. 1), not to
/// the batch mean.
pub fn discriminator_loss(energy_real: &Tensor, energy_fake: &Tensor, margin: f64) -> Result<Tensor> {
    let hinge = energy_fake.affine(-1.0, margin)?.relu()?;
    energy_real.add(&hinge)?.mean_all()
}

/// The pulling-away term (section 2.4):
/// `f_PT(S) = 1 / (N (N - 1)) sum_{i != j} (S_i^T S_j / (||S_i|| ||S_j||))^2`,
/// squared cosine similarities of the embeddings `S` `[N, code]`, diagonal excluded.
pub fn pulling_away_term(s: &Tensor) -> Result<Tensor> {
    let n = s.dim(0)?;
    if n < 2 {
        candle_core::bail!("the pulling-away term needs at least 2 embeddings, got {n}");
    }
    let norms = (s.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    let unit = s.broadcast_div(&norms)?;
    let cos2 = zoo_core::nn::matmul(&unit, &unit.t()?)?.sqr()?;
    // Each diagonal entry is exactly cos^2(S_i, S_i) = 1 up to rounding: subtract the trace.
    let diagonal = unit.sqr()?.sum(D::Minus1)?.sqr()?.sum_all()?;
    (cos2.sum_all()? - diagonal)? / (n * (n - 1)) as f64
}

/// `L_G = mean_i D(G(z_i)) + lambda_PT f_PT(S)` with `S` the encoder embeddings of the generated batch.
pub fn generator_loss(energy_fake: &Tensor, embedding_fake: &Tensor, pt_weight: f64) -> Result<Tensor> {
    let base = energy_fake.mean_all()?;
    if pt_weight == 0.0 {
        return Ok(base);
    }
    base + (pulling_away_term(embedding_fake)? * pt_weight)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use zoo_core::gradcheck::{check_gradient, randn64};

    #[test]
    fn pulling_away_term_matches_hand_values_and_excludes_the_diagonal() {
        let s = Tensor::new(&[[1.0f64, 0.0], [1.0, 1.0], [0.0, 1.0]], &Device::Cpu).unwrap();
        // Pairs (1,2) and (2,3): cos^2 = 1/2; pair (1,3): 0. Ordered pairs: 2 * (1/2 + 0 + 1/2) = 2,
        // over N(N-1) = 6. With the diagonal kept it would be (2 + 3) / 6.
        let v = pulling_away_term(&s).unwrap().to_scalar::<f64>().unwrap();
        assert!((v - 1.0 / 3.0).abs() < 1e-12, "{v}");
        // Scale invariance, and identical directions give 1, orthogonal ones 0.
        let scaled = Tensor::new(&[[3.0f64, 0.0], [2.0, 2.0], [0.0, 0.5]], &Device::Cpu).unwrap();
        assert!((pulling_away_term(&scaled).unwrap().to_scalar::<f64>().unwrap() - 1.0 / 3.0).abs() < 1e-12);
        let same = Tensor::new(&[[1.0f64, 2.0], [2.0, 4.0]], &Device::Cpu).unwrap();
        assert!((pulling_away_term(&same).unwrap().to_scalar::<f64>().unwrap() - 1.0).abs() < 1e-12);
        let orth = Tensor::new(&[[1.0f64, 0.0], [0.0, -2.0]], &Device::Cpu).unwrap();
        assert!(pulling_away_term(&orth).unwrap().to_scalar::<f64>().unwrap().abs() < 1e-12);
        assert!(pulling_away_term(&Tensor::new(&[[1.0f64, 0.0]], &Device::Cpu).unwrap()).is_err());
        check_gradient(&randn64(&[4, 3], 1), pulling_away_term);
    }

    #[test]
    fn hinge_is_per_sample() {
        let real = Tensor::new(&[0.2f64, 0.4], &Device::Cpu).unwrap();
        let fake = Tensor::new(&[0.5f64, 2.0], &Device::Cpu).unwrap();
        // Per sample: (0.2 + 0.5 + 0.4 + 0) / 2 = 0.55; on the batch mean it would be 0.3.
        let l = discriminator_loss(&real, &fake, 1.0).unwrap().to_scalar::<f64>().unwrap();
        assert!((l - 0.55).abs() < 1e-12, "{l}");
        let emb = randn64(&[2, 3], 2);
        let g = generator_loss(&fake, &emb, 0.0).unwrap().to_scalar::<f64>().unwrap();
        assert!((g - 1.25).abs() < 1e-12);
        let with_pt = generator_loss(&fake, &emb, 0.1).unwrap().to_scalar::<f64>().unwrap();
        let pt = pulling_away_term(&emb).unwrap().to_scalar::<f64>().unwrap();
        assert!((with_pt - 1.25 - 0.1 * pt).abs() < 1e-12);
    }
}
