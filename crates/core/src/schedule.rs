//! Learning-rate schedules, as functions of the step count (0-based), so that a resumed run gets
//! the same rates.

use serde::{Deserialize, Serialize};

/// A learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// `lr` at every step.
    Constant {
        /// The rate.
        lr: f64,
    },
    /// `lr * gamma^floor(step / every)`.
    StepDecay {
        /// Initial rate.
        lr: f64,
        /// Steps between decays.
        every: u64,
        /// Factor per decay.
        gamma: f64,
    },
    /// DANN's annealing (Ganin et al. 2016, section 5.2.2): `mu_p = mu0 / (1 + alpha p)^beta`,
    /// `p = step / total_steps` going from 0 to 1.
    InverseDecay {
        /// Initial rate (0.01 in the paper).
        mu0: f64,
        /// 10 in the paper.
        alpha: f64,
        /// 0.75 in the paper.
        beta: f64,
        /// The training length that defines p.
        total_steps: u64,
    },
    /// The Transformer's warm-up (Vaswani et al. 2017, eq. 3):
    /// `factor * d_model^-0.5 * min(s^-0.5, s * warmup^-1.5)` with `s = step + 1`.
    Noam {
        /// Model width.
        d_model: usize,
        /// Warm-up steps (4000 in the paper).
        warmup: u64,
        /// Overall scale (1 in the paper).
        factor: f64,
    },
}

impl Schedule {
    /// The learning rate for (0-based) `step`.
    pub fn lr_at(&self, step: u64) -> f64 {
        match *self {
            Schedule::Constant { lr } => lr,
            Schedule::StepDecay { lr, every, gamma } => lr * gamma.powi((step / every.max(1)) as i32),
            Schedule::InverseDecay { mu0, alpha, beta, total_steps } => {
                let p = (step as f64 / total_steps.max(1) as f64).min(1.0);
                mu0 / (1.0 + alpha * p).powf(beta)
            }
            Schedule::Noam { d_model, warmup, factor } => {
                let s = (step + 1) as f64;
                factor * (d_model as f64).powf(-0.5) * s.powf(-0.5).min(s * (warmup.max(1) as f64).powf(-1.5))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_match_their_formulas() {
        assert_eq!(Schedule::Constant { lr: 0.1 }.lr_at(1000), 0.1);
        let s = Schedule::StepDecay { lr: 1.0, every: 10, gamma: 0.5 };
        assert_eq!((s.lr_at(9), s.lr_at(10), s.lr_at(25)), (1.0, 0.5, 0.25));
        let d = Schedule::InverseDecay { mu0: 0.01, alpha: 10.0, beta: 0.75, total_steps: 100 };
        assert_eq!(d.lr_at(0), 0.01);
        assert!((d.lr_at(100) - 0.01 / 11f64.powf(0.75)).abs() < 1e-15);
        assert!((d.lr_at(50) - 0.01 / 6f64.powf(0.75)).abs() < 1e-15);
        let n = Schedule::Noam { d_model: 512, warmup: 4000, factor: 1.0 };
        let peak = n.lr_at(3999);
        assert!((peak - 512f64.powf(-0.5) * 4000f64.powf(-0.5)).abs() < 1e-12);
        assert!(n.lr_at(100) < peak && n.lr_at(20000) < peak);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), d);
    }
}
