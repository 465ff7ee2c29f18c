//! Copies of broadcast tensors in the workspace's candle-core (vendor/candle-core/PATCHES.md):
//! views repeated along their innermost dimensions are copied as runs of one value. Each copy is
//! checked element by element against the definition.

use candle_core::{DType, Device, Tensor};

/// `t` made contiguous, against the value each element should have: `src` at the index `at`
/// gives for the element's position.
fn check(t: &Tensor, src: &[f32], at: impl Fn(&[usize]) -> usize) {
    let dims = t.dims().to_vec();
    let got: Vec<f32> = t.contiguous().unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let mut idx = vec![0usize; dims.len()];
    for (n, g) in got.iter().enumerate() {
        let mut rest = n;
        for d in (0..dims.len()).rev() {
            idx[d] = rest % dims[d];
            rest /= dims[d];
        }
        assert_eq!(*g, src[at(&idx)], "element {idx:?} of a {dims:?} broadcast");
    }
}

#[test]
fn broadcast_views_copy_to_the_repeated_values() {
    let dev = Device::Cpu;
    let src: Vec<f32> = (0..60).map(|i| i as f32 * 0.5 - 7.0).collect();
    let base = Tensor::from_vec(src.clone(), 60, &dev).unwrap();
    // A scalar over a large shape (the gradient of a sum).
    let s = base.narrow(0, 5, 1).unwrap().reshape(()).unwrap().broadcast_as((4, 3, 5, 7)).unwrap();
    check(&s, &src, |_| 5);
    // One value per row, repeated along the last two dimensions ([B, C, 1, 1] -> [B, C, H, W]).
    let r = base.narrow(0, 0, 12).unwrap().reshape((4, 3, 1, 1)).unwrap().broadcast_as((4, 3, 6, 6)).unwrap();
    check(&r, &src, |i| i[0] * 3 + i[1]);
    // A broadcast dimension in the middle and a short run (below the fill path's length).
    let m = base.narrow(0, 0, 20).unwrap().reshape((4, 1, 5)).unwrap().broadcast_as((4, 3, 5)).unwrap();
    check(&m, &src, |i| i[0] * 5 + i[2]);
    let short = base.narrow(0, 0, 6).unwrap().reshape((6, 1)).unwrap().broadcast_as((6, 3)).unwrap();
    check(&short, &src, |i| i[0]);
    // A transposed (strided) source repeated along the innermost dimension.
    let t = base.narrow(0, 0, 12).unwrap().reshape((3, 4)).unwrap().t().unwrap().unsqueeze(2).unwrap();
    let t = t.broadcast_as((4, 3, 9)).unwrap();
    check(&t, &src, |i| i[1] * 4 + i[0]);
    // f64 and an offset start take the same path.
    let d = base.to_dtype(DType::F64).unwrap().narrow(0, 30, 2).unwrap().reshape((2, 1)).unwrap();
    let d = d.broadcast_as((2, 16)).unwrap().contiguous().unwrap().to_vec2::<f64>().unwrap();
    assert!(d[0].iter().all(|&v| v == src[30] as f64) && d[1].iter().all(|&v| v == src[31] as f64));
}
