//! The gradient reversal layer of DANN (Ganin & Lempitsky 2015, eq. 9-10): identity in the
//! forward pass, multiplies the gradient by `-lambda` in the backward pass.

use candle_core::{Module, Result, Tensor};

/// `R_lambda(x) = x` forward, `dR/dx = -lambda I` backward.
///
/// Built as `detach(x) + (x - detach(x)) * (-lambda)`: the second term is exactly zero in the
/// forward pass (so the output equals `x` bit for bit) and carries `-lambda` times the incoming
/// gradient back to `x`. Works on every device.
pub fn grad_reverse(x: &Tensor, lambda: f64) -> Result<Tensor> {
    let d = x.detach();
    d.add(&(x.sub(&d)? * (-lambda))?)
}

/// [`grad_reverse`] as a layer with a settable coefficient (DANN schedules lambda_p over training).
#[derive(Debug, Clone, Copy)]
pub struct GradientReversal {
    /// The reversal coefficient lambda.
    pub lambda: f64,
}

impl Module for GradientReversal {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        grad_reverse(x, self.lambda)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, randn64};

    #[test]
    fn forward_is_identity_and_gradient_is_reversed_and_scaled() {
        let x = randn64(&[3, 4], 1);
        let up = randn64(&[3, 4], 2);
        let y = grad_reverse(&x, 0.7).unwrap();
        assert_eq!(y.to_vec2::<f64>().unwrap(), x.to_vec2::<f64>().unwrap());
        let v = candle_core::Var::from_tensor(&x).unwrap();
        let g = grad_reverse(v.as_tensor(), 0.7).unwrap().mul(&up).unwrap().sum_all().unwrap().backward().unwrap();
        let got = g.get(v.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        let want = (up.clone() * -0.7).unwrap().to_vec2::<f64>().unwrap();
        assert_eq!(got, want);
        // And finite differences agree with the *unreversed* function value's slope times -lambda:
        // check the composed function x -> grad_reverse(x) * up, whose forward is x*up, so the
        // finite-difference gradient is up, while autograd gives -lambda*up; with lambda = -1 they agree.
        check_gradient(&x, |x| grad_reverse(x, -1.0)?.mul(&up)?.sum_all());
    }
}
