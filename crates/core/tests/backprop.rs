//! The backward pass of the workspace's candle-core (vendor/candle-core/PATCHES.md): gradients
//! that reach a node more than once are summed exactly, the later ones in place only when no
//! other tensor shares the stored gradient.

use candle_core::{DType, Device, Tensor, Var};

fn ramp(n: usize, scale: f64, dtype: DType) -> Tensor {
    let v: Vec<f64> = (0..n).map(|i| ((i * 7919) % 1013) as f64 * scale - 3.0).collect();
    Tensor::from_vec(v, n, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().to_vec1().unwrap()
}

#[test]
fn a_variable_used_twice_gets_the_exact_sum_of_both_gradients() {
    // Small and large (above the size at which the in-place sum is split between threads).
    for n in [1000, 300_000] {
        for dtype in [DType::F32, DType::F64] {
            let x = Var::from_tensor(&ramp(n, 0.01, dtype)).unwrap();
            let (a, b) = (ramp(n, 0.003, dtype), ramp(n, -0.007, dtype));
            let loss = (x.as_tensor().mul(&a).unwrap().sum_all().unwrap()
                + x.as_tensor().mul(&b).unwrap().sum_all().unwrap())
            .unwrap();
            let grads = loss.backward().unwrap();
            let got = values(grads.get(x.as_tensor()).unwrap());
            // The same additions as Candle's own `a + b` (order included: the first gradient to
            // arrive is stored, the second added to it), so the result is exact either way.
            let want_ab = values(&a.add(&b).unwrap());
            let want_ba = values(&b.add(&a).unwrap());
            assert!(got == want_ab || got == want_ba, "n {n} {dtype:?}");
        }
    }
}

#[test]
fn a_gradient_shared_with_another_node_is_not_changed_in_place() {
    // In `(x + y) * c` the addition hands one gradient tensor to both of its operands, so the
    // stores of `x` and `y` hold the same tensor; when `x` then receives a second gradient (from
    // `x * d`), adding it in place would change `y`'s gradient too. Both orders of the two terms
    // (the backward pass meets the two gradients of `x` in either order).
    for n in [1000, 300_000] {
        for add_first in [true, false] {
            let (x, y) = (
                Var::from_tensor(&ramp(n, 0.01, DType::F32)).unwrap(),
                Var::from_tensor(&ramp(n, 0.02, DType::F32)).unwrap(),
            );
            let (c, d) = (ramp(n, 0.002, DType::F32), ramp(n, -0.005, DType::F32));
            let shared = (x.as_tensor() + y.as_tensor()).unwrap().mul(&c).unwrap().sum_all().unwrap();
            let own = x.as_tensor().mul(&d).unwrap().sum_all().unwrap();
            let loss = if add_first { (shared + own).unwrap() } else { (own + shared).unwrap() };
            let grads = loss.backward().unwrap();
            assert_eq!(values(grads.get(y.as_tensor()).unwrap()), values(&c), "n {n}, add first {add_first}: y");
            let gx = values(grads.get(x.as_tensor()).unwrap());
            let (cd, dc) = (values(&(&c + &d).unwrap()), values(&(&d + &c).unwrap()));
            assert!(gx == cd || gx == dc, "n {n}, add first {add_first}: x");
        }
    }
}
