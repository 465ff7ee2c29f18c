//! Multi-head scaled dot-product attention (Vaswani et al. 2017, section 3.2), trainable.
//!
//! `Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V`, with `h` heads projected by `W^Q_i, W^K_i,
//! W^V_i` and concatenated through `W^O`. Candle's `sdpa`/flash attention are inference-only; this
//! is composed of matmuls and the differentiable [`super::softmax`]. Parameter names follow
//! PyTorch/Marian (`q_proj`, `k_proj`, `v_proj`, `out_proj`).

use super::Linear;
use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{Module, VarBuilder};

use super::{dropout, softmax};
use crate::ZooRng;

/// A `[tq, tk]` u8 mask with 1 where query `i` must not see key `j` (`j > i + tk - tq`).
pub fn causal_mask(tq: usize, tk: usize, dev: &Device) -> Result<Tensor> {
    let offset = tk as i64 - tq as i64;
    let v: Vec<u8> = (0..tq).flat_map(|i| (0..tk).map(move |j| u8::from(j as i64 > i as i64 + offset))).collect();
    Tensor::from_vec(v, (tq, tk), dev)
}

/// Multi-head attention with optional key-padding and causal masks and attention dropout.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl MultiHeadAttention {
    /// `d_model` must be divisible by `num_heads`. Parameters live under `vb`.
    pub fn new(d_model: usize, num_heads: usize, vb: VarBuilder) -> Result<Self> {
        if num_heads == 0 || !d_model.is_multiple_of(num_heads) {
            candle_core::bail!("d_model {d_model} is not divisible by the number of heads {num_heads}");
        }
        Ok(Self {
            q_proj: super::linear(d_model, d_model, vb.pp("q_proj"))?,
            k_proj: super::linear(d_model, d_model, vb.pp("k_proj"))?,
            v_proj: super::linear(d_model, d_model, vb.pp("v_proj"))?,
            out_proj: super::linear(d_model, d_model, vb.pp("out_proj"))?,
            num_heads,
            head_dim: d_model / num_heads,
        })
    }

    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        x.reshape((b, t, self.num_heads, self.head_dim))?.transpose(1, 2)?.contiguous()
    }

    /// Attends from `query` `[B, Tq, D]` to `key_value` `[B, Tk, D]`.
    ///
    /// - `key_padding_mask`: `[B, Tk]`, non-zero where the key is padding (never attended to).
    /// - `causal`: position `i` of the query sees keys up to `i + Tk - Tq` only.
    /// - `dropout`: `(p, rng)` applies seeded dropout to the attention weights (training).
    ///
    /// Returns the output `[B, Tq, D]` and the attention weights `[B, H, Tq, Tk]`.
    pub fn forward(
        &self,
        query: &Tensor,
        key_value: &Tensor,
        key_padding_mask: Option<&Tensor>,
        causal: bool,
        dropout_p: Option<(f64, &mut ZooRng)>,
    ) -> Result<(Tensor, Tensor)> {
        let (b, tq, d) = query.dims3()?;
        let (bk, tk, dk) = key_value.dims3()?;
        if b != bk || d != dk {
            candle_core::bail!(
                "attention: query {:?} and key/value {:?} disagree in batch or width",
                query.dims(),
                key_value.dims()
            );
        }
        let q = self.split_heads(&self.q_proj.forward(query)?)?;
        let k = self.split_heads(&self.k_proj.forward(key_value)?)?;
        let v = self.split_heads(&self.v_proj.forward(key_value)?)?;
        let in_dtype = q.dtype();
        // Scores and softmax in at least f32, so that masking constants do not overflow f16.
        let work = if in_dtype == DType::F64 { DType::F64 } else { DType::F32 };
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut scores = (zoo_kernels::matmul(&q.to_dtype(work)?, &k.to_dtype(work)?.t()?)? * scale)?;
        let neg = -1e9;
        if let Some(mask) = key_padding_mask {
            if mask.dims() != [b, tk] {
                candle_core::bail!("key padding mask has shape {:?}, expected [{b}, {tk}]", mask.dims());
            }
            let bias = (mask.ne(0u8)?.to_dtype(work)? * neg)?.reshape((b, 1, 1, tk))?;
            scores = scores.broadcast_add(&bias)?;
        }
        if causal {
            let bias = (causal_mask(tq, tk, query.device())?.to_dtype(work)? * neg)?;
            scores = scores.broadcast_add(&bias)?;
        }
        let weights = softmax(&scores, D::Minus1)?.to_dtype(in_dtype)?;
        let attended = match dropout_p {
            Some((p, rng)) if p > 0.0 => dropout(&weights, p, rng)?,
            _ => weights.clone(),
        };
        let out = zoo_kernels::matmul(&attended, &v)?.transpose(1, 2)?.reshape((b, tq, d))?;
        Ok((self.out_proj.forward(&out)?, weights))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, randn64, vars_without_gradient};
    use candle_nn::VarMap;

    fn mha(d: usize, h: usize) -> (VarMap, MultiHeadAttention) {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let m = MultiHeadAttention::new(d, h, vb.pp("attn")).unwrap();
        (vm, m)
    }

    #[test]
    fn masks_are_respected() {
        let (_vm, m) = mha(8, 2);
        let q = randn64(&[2, 3, 8], 1);
        let kv = randn64(&[2, 4, 8], 2);
        let pad = Tensor::new(&[[0u8, 0, 1, 1], [0, 0, 0, 0]], &Device::Cpu).unwrap();
        let (_, w) = m.forward(&q, &kv, Some(&pad), false, None).unwrap();
        let w4: Vec<f64> = w.flatten_all().unwrap().to_vec1().unwrap();
        // batch 0: keys 2 and 3 are padding
        for h in 0..2 {
            for i in 0..3 {
                let base = ((h) * 3 + i) * 4;
                assert!(w4[base + 2] < 1e-12 && w4[base + 3] < 1e-12);
                let s: f64 = w4[base..base + 4].iter().sum();
                assert!((s - 1.0).abs() < 1e-12);
            }
        }
        // Causal self-attention: changing a later position leaves earlier outputs unchanged.
        let x = randn64(&[1, 5, 8], 3);
        let (y1, w) = m.forward(&x, &x, None, true, None).unwrap();
        let wc: Vec<f64> = w.flatten_all().unwrap().to_vec1().unwrap();
        for i in 0..5 {
            for j in (i + 1)..5 {
                assert!(wc[i * 5 + j] < 1e-12, "query {i} sees key {j}");
            }
        }
        let mut xv: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
        for v in xv.iter_mut().skip(4 * 8) {
            *v += 1.0;
        }
        let x2 = Tensor::from_vec(xv, (1, 5, 8), &Device::Cpu).unwrap();
        let (y2, _) = m.forward(&x2, &x2, None, true, None).unwrap();
        let a: Vec<f64> = y1.narrow(1, 0, 4).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f64> = y2.narrow(1, 0, 4).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b);
        assert!(MultiHeadAttention::new(10, 3, VarBuilder::zeros(DType::F32, &Device::Cpu)).is_err());
    }

    #[test]
    fn gradients_match_finite_differences_and_reach_every_parameter() {
        let (vm, m) = mha(6, 3);
        let q = randn64(&[2, 3, 6], 4);
        let kv = randn64(&[2, 4, 6], 5);
        let up = randn64(&[2, 3, 6], 6);
        let pad = Tensor::new(&[[0u8, 0, 0, 1], [0, 1, 1, 1]], &Device::Cpu).unwrap();
        check_gradient(&q, |q| m.forward(q, &kv, Some(&pad), false, None)?.0.mul(&up)?.sum_all());
        check_gradient(&kv, |kv| m.forward(&q, kv, Some(&pad), false, None)?.0.mul(&up)?.sum_all());
        let x = randn64(&[2, 3, 6], 7);
        check_gradient(&x, |x| m.forward(x, x, None, true, None)?.0.mul(&up)?.sum_all());
        let loss = m.forward(&q, &kv, Some(&pad), false, None).unwrap().0.mul(&up).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        assert_eq!(vars_without_gradient(&vm, &grads), Vec::<String>::new());
    }
}
