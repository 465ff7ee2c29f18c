//! An LSTM cell with PyTorch's parameters and gate order, its gate arithmetic one fused op
//! ([`zoo_kernels::lstm_cell`]).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// One step of an LSTM (Hochreiter & Schmidhuber 1997, with forget gate), as `torch.nn.LSTMCell`:
/// `gates = x W_ih^T + b_ih + h W_hh^T + b_hh` split as `[i | f | g | o]`,
/// `c' = sigmoid(f) c + sigmoid(i) tanh(g)`, `h' = sigmoid(o) tanh(c')`.
///
/// Variables `weight_ih` `[4H, I]`, `weight_hh` `[4H, H]`, `bias_ih` and `bias_hh` `[4H]`, as in
/// PyTorch (so its checkpoints load by name), initialised as there: uniform in `±1/sqrt(H)`.
#[derive(Debug, Clone)]
pub struct LstmCell {
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
    hidden: usize,
}

impl LstmCell {
    /// A cell from `input` features to `hidden` units, variables under `vb`.
    pub fn new(input: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        if input == 0 || hidden == 0 {
            candle_core::bail!("an LSTM cell needs positive input and hidden sizes, got {input} and {hidden}");
        }
        let k = 1.0 / (hidden as f64).sqrt();
        let init = candle_nn::Init::Uniform { lo: -k, up: k };
        Ok(Self {
            weight_ih: vb.get_with_hints((4 * hidden, input), "weight_ih", init)?,
            weight_hh: vb.get_with_hints((4 * hidden, hidden), "weight_hh", init)?,
            bias_ih: vb.get_with_hints(4 * hidden, "bias_ih", init)?,
            bias_hh: vb.get_with_hints(4 * hidden, "bias_hh", init)?,
            hidden,
        })
    }

    /// Hidden units `H`.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// The zero state `(h, c)` for a batch of `batch`, in the cell's dtype and device.
    pub fn zero_state(&self, batch: usize) -> Result<(Tensor, Tensor)> {
        let z = Tensor::zeros((batch, self.hidden), self.weight_hh.dtype(), self.weight_hh.device())?;
        Ok((z.clone(), z))
    }

    /// One step: input `x` `[B, I]` and state `(h, c)`, each `[B, H]`; returns the new `(h, c)`.
    pub fn step(&self, x: &Tensor, state: &(Tensor, Tensor)) -> Result<(Tensor, Tensor)> {
        let (h, c) = state;
        let gates = (zoo_kernels::linear(x, &self.weight_ih, Some(&self.bias_ih))?
            + zoo_kernels::linear(h, &self.weight_hh, Some(&self.bias_hh))?)?;
        zoo_kernels::lstm_cell(&gates, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, randn64};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn steps_as_the_lstm_equations_and_every_variable_gets_a_gradient() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let cell = LstmCell::new(3, 4, vb.pp("lstm")).unwrap();
        let x = randn64(&[2, 3], 1);
        let state = (randn64(&[2, 4], 2), randn64(&[2, 4], 3));
        let (h, c) = cell.step(&x, &state).unwrap();

        // The equations written out, element by element, in f64.
        let data = vm.data().lock().unwrap();
        let get = |n: &str| data[&format!("lstm.{n}")].as_tensor().clone();
        let (wi, wh, bi, bh) = (get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"));
        drop(data);
        let v2 = |t: &Tensor| t.to_vec2::<f64>().unwrap();
        let (xv, hv, cv, wiv, whv) = (v2(&x), v2(&state.0), v2(&state.1), v2(&wi), v2(&wh));
        let (biv, bhv) = (bi.to_vec1::<f64>().unwrap(), bh.to_vec1::<f64>().unwrap());
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let (h_ours, c_ours) = (v2(&h), v2(&c));
        for b in 0..2 {
            let pre = |row: usize| {
                let mut s = biv[row] + bhv[row];
                s += (0..3).map(|k| wiv[row][k] * xv[b][k]).sum::<f64>();
                s += (0..4).map(|k| whv[row][k] * hv[b][k]).sum::<f64>();
                s
            };
            for j in 0..4 {
                let (i, f, g, o) = (sig(pre(j)), sig(pre(4 + j)), pre(8 + j).tanh(), sig(pre(12 + j)));
                let c_new = f * cv[b][j] + i * g;
                assert!((c_ours[b][j] - c_new).abs() < 1e-12);
                assert!((h_ours[b][j] - o * c_new.tanh()).abs() < 1e-12);
            }
        }

        // Two steps: the gradient reaches every variable, the input and the initial state.
        let loss = {
            let s1 = cell.step(&x, &state).unwrap();
            let s2 = cell.step(&x, &s1).unwrap();
            (s2.0.sum_all().unwrap() + s2.1.sqr().unwrap().sum_all().unwrap()).unwrap()
        };
        let grads = loss.backward().unwrap();
        for (name, var) in vm.data().lock().unwrap().iter() {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
            assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap() > 0.0, "{name}");
        }
        check_gradient(&x, |x| cell.step(x, &state).map(|(h, c)| (h + c.affine(0.5, 0.0)?)?.sum_all())?);
        check_gradient(&state.1, |c| cell.step(&x, &(state.0.clone(), c.clone())).map(|(h, _)| h.sum_all())?);
        check_gradient(&state.0, |h| cell.step(&x, &(h.clone(), state.1.clone())).map(|(_, c)| c.sum_all())?);

        // Zero state, and clear errors for bad sizes.
        let (h0, c0) = cell.zero_state(5).unwrap();
        assert_eq!((h0.dims(), c0.dims()), (&[5, 4][..], &[5, 4][..]));
        assert!(cell.step(&randn64(&[2, 5], 4), &state).is_err());
        assert!(cell.step(&x, &(randn64(&[2, 3], 5), state.1.clone())).is_err());
        assert!(LstmCell::new(3, 0, VarBuilder::from_varmap(&VarMap::new(), DType::F64, &Device::Cpu)).is_err());
    }
}
