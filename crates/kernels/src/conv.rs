//! Convolutions on the CPU as per-image GEMMs (see `conv_cpu`): the forward pass, the input
//! gradient and the weight gradient are each one GEMM per image on a cache-sized column buffer,
//! written straight into NCHW tensors. Other devices use Candle's own kernels.
//!
//! `conv2d`: `y = W cols(x) + b`, with `W` viewed as `[O, C*KH*KW]`; backward `dW = sum dy cols(x)^T`,
//! `dx = col2im(W^T dy)`. `conv_transpose2d` is the adjoint: `y = col2im(W^T x) + b` with `W` viewed
//! as `[C_in, C_out*KH*KW]`; backward `dW = sum x cols(dy)^T`, `dx = W cols(dy)`.

use candle_core::{bail, DType, Result, Tensor};

use crate::conv_cpu::{self, ConvPlan};
use crate::patches::PatchGeometry;

/// Stride, padding, dilation (equal in both directions) and, for transposed convolutions, the
/// extra output padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvParams {
    /// Stride.
    pub stride: usize,
    /// Zero padding.
    pub padding: usize,
    /// Dilation.
    pub dilation: usize,
    /// Transposed convolutions only: extra rows/columns added to one side of the output.
    pub output_padding: usize,
}

impl Default for ConvParams {
    fn default() -> Self {
        Self { stride: 1, padding: 0, dilation: 1, output_padding: 0 }
    }
}

fn fast_path(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

fn add_channel_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?),
        None => Ok(y),
    }
}

/// The patch geometry of a convolution of images `x` `[B, C, H, W]` by `weight` `[O, C, KH, KW]`
/// (not checked).
fn conv2d_geometry(x: &Tensor, weight: &Tensor, p: ConvParams) -> Result<PatchGeometry> {
    let (_, c, h, w) = x.dims4()?;
    let (_, _, kh, kw) = weight.dims4()?;
    Ok(PatchGeometry {
        channels: c,
        height: h,
        width: w,
        kernel_h: kh,
        kernel_w: kw,
        stride: p.stride,
        padding: p.padding,
        dilation: p.dilation,
    })
}

/// 2-D convolution of `x` `[B, C, H, W]` with `weight` `[O, C, KH, KW]` plus an optional bias
/// `[O]`, as PyTorch's `conv2d` (cross-correlation, groups = 1).
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, p: ConvParams) -> Result<Tensor> {
    let (b, c, _, _) = x.dims4()?;
    let (o, c2, _, _) = weight.dims4()?;
    if c != c2 {
        bail!("conv2d: input has {c} channels, the weight expects {c2} (weight {:?})", weight.dims());
    }
    if !fast_path(x) {
        let y = x.conv2d(weight, p.padding, p.stride, p.dilation, 1)?;
        return add_channel_bias(y, bias);
    }
    let g = conv2d_geometry(x, weight, p)?;
    g.check()?;
    conv_cpu::apply(ConvPlan { transposed: false, batch: b, m: o, g }, x, weight, bias)
}

/// Transposed 2-D convolution of `x` `[B, C_in, H, W]` with `weight` `[C_in, C_out, KH, KW]` plus
/// an optional bias `[C_out]`, as PyTorch's `conv_transpose2d` (groups = 1). Output side:
/// `(H - 1) s - 2p + d (KH - 1) + output_padding + 1`.
pub fn conv_transpose2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, p: ConvParams) -> Result<Tensor> {
    let (b, cin, h, w) = x.dims4()?;
    let (cin2, cout, kh, kw) = weight.dims4()?;
    if cin != cin2 {
        bail!("conv_transpose2d: input has {cin} channels, the weight expects {cin2} (weight {:?})", weight.dims());
    }
    if [h, w, kh, kw, p.stride, p.dilation].contains(&0) {
        bail!("conv_transpose2d: zero-sized input {:?}, kernel {:?} or {p:?}", x.dims(), weight.dims());
    }
    // An output padding of a stride or more (PyTorch allows up to the dilation) adds rows no
    // patch of the adjoint convolution reaches; Candle's kernel handles that rare case.
    if !fast_path(x) || p.output_padding >= p.stride {
        let y = x.conv_transpose2d(weight, p.padding, p.output_padding, p.stride, p.dilation)?;
        return add_channel_bias(y, bias);
    }
    let oh = (h - 1) * p.stride + p.dilation * (kh - 1) + p.output_padding + 1;
    let ow = (w - 1) * p.stride + p.dilation * (kw - 1) + p.output_padding + 1;
    if oh <= 2 * p.padding || ow <= 2 * p.padding {
        bail!("conv_transpose2d: padding {} leaves no output for input {:?}", p.padding, x.dims());
    }
    // The transposed convolution is the adjoint of a convolution from [C_out, OH, OW] to [H, W].
    let g = PatchGeometry {
        channels: cout,
        height: oh - 2 * p.padding,
        width: ow - 2 * p.padding,
        kernel_h: kh,
        kernel_w: kw,
        stride: p.stride,
        padding: p.padding,
        dilation: p.dilation,
    };
    if g.out_h() != h || g.out_w() != w {
        bail!("conv_transpose2d: inconsistent geometry for input {:?} and {p:?}", x.dims());
    }
    g.check()?;
    conv_cpu::apply(ConvPlan { transposed: true, batch: b, m: cin, g }, x, weight, bias)
}

/// `relu(max_pool2d(conv2d(x, weight, bias, p), 2))` for inference (LeNet-style blocks such as
/// the zoo's judge): on the CPU in f32, where the direct kernels take the convolution, one op
/// (`conv_pool`) that computes no padding outputs and pools each image's outputs while they are
/// in cache, so the full-size output is never written, read back and pooled; elsewhere the three
/// ops one after the other. The values are the same bit for bit. The fused op has no backward:
/// training code calls the three ops.
pub fn conv2d_max_pool2_relu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, p: ConvParams) -> Result<Tensor> {
    let (b, c, _, _) = x.dims4()?;
    let (o, c2, _, _) = weight.dims4()?;
    let g = conv2d_geometry(x, weight, p)?;
    let fused = c == c2
        && x.device().is_cpu()
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.is_none_or(|t| t.dtype() == DType::F32 && t.dims() == [o])
        && x.elem_count() > 0
        && weight.elem_count() > 0
        && crate::conv_pool::applies(&g);
    if !fused {
        return crate::relu(&crate::max_pool2d(&conv2d(x, weight, bias, p)?, 2)?);
    }
    let bias = match bias {
        Some(t) => t.contiguous()?,
        None => Tensor::zeros(o, DType::F32, x.device())?,
    };
    x.contiguous()?.apply_op3_no_bwd(&weight.contiguous()?, &bias, &ConvPoolRelu { batch: b, m: o, g })
}

/// The fused op of [`conv2d_max_pool2_relu`] (input, weight, bias; f32 on the CPU).
struct ConvPoolRelu {
    batch: usize,
    m: usize,
    g: PatchGeometry,
}

impl candle_core::CustomOp3 for ConvPoolRelu {
    fn name(&self) -> &'static str {
        "zoo-conv-max-pool2-relu"
    }
    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use crate::util::contiguous;
        let what = "conv2d_max_pool2_relu";
        let (x, w, b) =
            (contiguous::<f32>(s1, l1, what)?, contiguous::<f32>(s2, l2, what)?, contiguous::<f32>(s3, l3, what)?);
        let g = &self.g;
        if x.len() != self.batch * g.channels * g.height * g.width
            || w.len() != self.m * g.patch_len()
            || b.len() != self.m
        {
            bail!(
                "{what}: input {:?}, weight {:?} or bias {:?} does not match its plan",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let y = crate::conv_pool::forward(self.batch, self.m, g, x, w, b);
        Ok((candle_core::CpuStorage::F32(y), (self.batch, self.m, g.out_h() / 2, g.out_w() / 2).into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{max_abs_diff as max_diff, test_rand as rand};
    use candle_core::{Device, Var};

    /// Forward and all gradients of our op vs Candle's, on the same loss.
    fn compare(transposed: bool, xs: &[usize], ws: &[usize], p: ConvParams, dtype: DType, tol: f64) {
        let x = Var::from_tensor(&rand(xs, 1, dtype)).unwrap();
        let w = Var::from_tensor(&rand(ws, 2, dtype)).unwrap();
        let nb = if transposed { ws[1] } else { ws[0] };
        let bias = Var::from_tensor(&rand(&[nb], 3, dtype)).unwrap();
        let ours = if transposed {
            conv_transpose2d(x.as_tensor(), w.as_tensor(), Some(bias.as_tensor()), p).unwrap()
        } else {
            conv2d(x.as_tensor(), w.as_tensor(), Some(bias.as_tensor()), p).unwrap()
        };
        let reference = if transposed {
            x.as_tensor().conv_transpose2d(w.as_tensor(), p.padding, p.output_padding, p.stride, p.dilation).unwrap()
        } else {
            x.as_tensor().conv2d(w.as_tensor(), p.padding, p.stride, p.dilation, 1).unwrap()
        };
        let reference = reference.broadcast_add(&bias.as_tensor().reshape((1, nb, 1, 1)).unwrap()).unwrap();
        assert!(max_diff(&ours, &reference) < tol, "forward {xs:?} {ws:?} {p:?}");
        let up = rand(ours.dims(), 4, dtype);
        let g1 = ours.mul(&up).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = reference.mul(&up).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in [("x", &x), ("weight", &w), ("bias", &bias)] {
            let (a, b) = (g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap());
            assert!(max_diff(a, b) < tol, "gradient of {name}: {xs:?} {ws:?} {p:?}");
        }
    }

    #[test]
    fn conv2d_matches_candle_forward_and_backward() {
        for (p, xs, ws) in [
            (ConvParams::default(), [2, 3, 8, 8], [4, 3, 3, 3]),
            (ConvParams { stride: 2, padding: 1, ..Default::default() }, [2, 3, 9, 7], [5, 3, 4, 4]),
            (ConvParams { padding: 2, dilation: 2, ..Default::default() }, [1, 2, 6, 6], [3, 2, 3, 3]),
            (ConvParams { padding: 2, ..Default::default() }, [3, 1, 28, 28], [8, 1, 5, 5]),
            // Patch rows of 14 and 15 elements: every branch of the short inline copy.
            (ConvParams { padding: 1, ..Default::default() }, [2, 2, 5, 15], [3, 2, 3, 3]),
            // Stride 1: the direct f32 kernels (on CPUs with AVX2), in place (no padding, outputs
            // 8 wide) and on widened images (padding, outputs 14 wide).
            (ConvParams::default(), [3, 5, 12, 12], [6, 5, 5, 5]),
            (ConvParams { padding: 2, ..Default::default() }, [3, 4, 14, 14], [7, 4, 5, 5]),
        ] {
            compare(false, &xs, &ws, p, DType::F64, 1e-10);
            compare(false, &xs, &ws, p, DType::F32, 1e-4);
        }
    }

    #[test]
    fn conv_transpose2d_matches_candle_forward_and_backward() {
        for (p, xs, ws) in [
            (ConvParams::default(), [2, 3, 5, 5], [3, 4, 3, 3]),
            (ConvParams { stride: 2, padding: 1, ..Default::default() }, [2, 4, 7, 7], [4, 3, 4, 4]),
            (ConvParams { stride: 2, padding: 1, output_padding: 1, ..Default::default() }, [1, 2, 4, 5], [2, 3, 3, 3]),
            (ConvParams { stride: 1, padding: 0, dilation: 2, ..Default::default() }, [1, 2, 4, 4], [2, 2, 3, 3]),
        ] {
            compare(true, &xs, &ws, p, DType::F64, 1e-10);
            compare(true, &xs, &ws, p, DType::F32, 1e-4);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        // Central differences in f64 on a scalar loss, for input and weight of both ops.
        let loss = |t: bool, x: &Tensor, w: &Tensor| -> f64 {
            let p = ConvParams { stride: 2, padding: 1, ..Default::default() };
            let y = if t { conv_transpose2d(x, w, None, p) } else { conv2d(x, w, None, p) }.unwrap();
            y.sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
        };
        for t in [false, true] {
            let x = Var::from_tensor(&rand(&[1, 2, 5, 5], 7, DType::F64)).unwrap();
            let ws: &[usize] = if t { &[2, 3, 3, 3] } else { &[3, 2, 3, 3] };
            let w = Var::from_tensor(&rand(ws, 8, DType::F64)).unwrap();
            let p = ConvParams { stride: 2, padding: 1, ..Default::default() };
            let y = if t {
                conv_transpose2d(x.as_tensor(), w.as_tensor(), None, p)
            } else {
                conv2d(x.as_tensor(), w.as_tensor(), None, p)
            };
            let grads = y.unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &w] {
                let analytic: Vec<f64> = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                let base: Vec<f64> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
                for i in (0..base.len()).step_by(3) {
                    let mut plus = base.clone();
                    plus[i] += 1e-6;
                    let mut minus = base.clone();
                    minus[i] -= 1e-6;
                    let at = |vals: Vec<f64>| Tensor::from_vec(vals, v.dims(), &Device::Cpu).unwrap();
                    let (fp, fm) = if std::ptr::eq(v, &x) {
                        (loss(t, &at(plus), w.as_tensor()), loss(t, &at(minus), w.as_tensor()))
                    } else {
                        (loss(t, x.as_tensor(), &at(plus)), loss(t, x.as_tensor(), &at(minus)))
                    };
                    let numeric = (fp - fm) / 2e-6;
                    assert!(
                        (numeric - analytic[i]).abs() < 1e-5 * numeric.abs().max(1.0),
                        "transposed {t}, index {i}: {numeric} vs {}",
                        analytic[i]
                    );
                }
            }
        }
    }

    #[test]
    fn images_grouped_per_gemm_with_a_remainder() {
        // 8 x 5 x 5 patches over 24 x 24 positions: two images per GEMM, so five images make
        // groups of two with a remainder of one (on one thread or two).
        let p = ConvParams { padding: 2, ..Default::default() };
        compare(false, &[5, 8, 24, 24], &[4, 8, 5, 5], p, DType::F64, 1e-9);
        compare(true, &[5, 4, 24, 24], &[4, 8, 5, 5], p, DType::F64, 1e-9);
    }

    #[test]
    fn weight_gradient_alone_over_a_batch_split_between_threads() {
        // The input is data (no gradient asked for it); five images are split into groups whose
        // weight-gradient sums are added at the end.
        let p = ConvParams { stride: 2, padding: 1, ..Default::default() };
        for t in [false, true] {
            let x = rand(&[5, 3, 6, 6], 11, DType::F64);
            let ws: &[usize] = if t { &[3, 2, 4, 4] } else { &[2, 3, 4, 4] };
            let w = Var::from_tensor(&rand(ws, 12, DType::F64)).unwrap();
            let (ours, reference) = if t {
                (
                    conv_transpose2d(&x, w.as_tensor(), None, p).unwrap(),
                    x.conv_transpose2d(w.as_tensor(), p.padding, p.output_padding, p.stride, p.dilation).unwrap(),
                )
            } else {
                (
                    conv2d(&x, w.as_tensor(), None, p).unwrap(),
                    x.conv2d(w.as_tensor(), p.padding, p.stride, p.dilation, 1).unwrap(),
                )
            };
            assert!(max_diff(&ours, &reference) < 1e-10, "forward, transposed {t}");
            let g1 = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = reference.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            assert!(g1.get(&x).is_none(), "no gradient for data");
            let (a, b) = (g1.get(w.as_tensor()).unwrap(), g2.get(w.as_tensor()).unwrap());
            assert!(max_diff(a, b) < 1e-9, "weight gradient, transposed {t}: {}", max_diff(a, b));
        }
    }

    #[test]
    fn kernel_columns_that_never_land_inside_and_large_output_padding() {
        // Padding wider than the image: some kernel rows/columns see only padding.
        let cases = [
            (false, [1, 1, 3, 3], [1, 1, 3, 3], ConvParams { padding: 4, dilation: 4, ..Default::default() }),
            (false, [2, 1, 1, 1], [2, 1, 5, 5], ConvParams { padding: 2, ..Default::default() }),
            (true, [1, 1, 1, 1], [1, 1, 3, 3], ConvParams { padding: 2, dilation: 2, ..Default::default() }),
        ];
        for (t, xs, ws, p) in cases {
            compare(t, &xs, &ws, p, DType::F64, 1e-10);
        }
        // Output padding >= stride (PyTorch allows it below the dilation) goes to Candle's kernel
        // rather than being refused.
        let p = ConvParams { dilation: 2, output_padding: 1, ..Default::default() };
        let y = conv_transpose2d(&rand(&[1, 1, 4, 4], 1, DType::F64), &rand(&[1, 1, 3, 3], 2, DType::F64), None, p);
        assert_eq!(y.unwrap().dims(), [1, 1, 9, 9]);
    }

    #[test]
    fn a_fixed_weight_gets_no_gradient_and_the_input_the_same_one() {
        // A network held fixed (its weights detached, as a discriminator's in the generator's
        // update): the input gradient must equal the one with trainable weights, bit for bit,
        // and no gradient reaches the weights.
        let p = ConvParams { stride: 2, padding: 1, ..Default::default() };
        for (transposed, xs, ws) in [(false, [5, 3, 9, 8], [4, 3, 4, 4]), (true, [5, 4, 5, 6], [4, 3, 4, 4])] {
            let x = Var::from_tensor(&rand(&xs, 1, DType::F32)).unwrap();
            let w = Var::from_tensor(&rand(&ws, 2, DType::F32)).unwrap();
            let nb = if transposed { ws[1] } else { ws[0] };
            let b = Var::from_tensor(&rand(&[nb], 3, DType::F32)).unwrap();
            let run = |w: &Tensor, b: &Tensor| {
                let y = if transposed {
                    conv_transpose2d(x.as_tensor(), w, Some(b), p).unwrap()
                } else {
                    conv2d(x.as_tensor(), w, Some(b), p).unwrap()
                };
                let up = rand(y.dims(), 4, DType::F32);
                y.mul(&up).unwrap().sum_all().unwrap().backward().unwrap()
            };
            let live = run(w.as_tensor(), b.as_tensor());
            let (wd, bd) = (w.as_tensor().detach(), b.as_tensor().detach());
            let fixed = run(&wd, &bd);
            let params = [w.as_tensor(), b.as_tensor(), &wd, &bd];
            crate::util::assert_fixed_pass(x.as_tensor(), &live, &fixed, params, &format!("transposed {transposed}"));
            assert!(live.get(w.as_tensor()).is_some() && live.get(b.as_tensor()).is_some());
        }
    }

    #[test]
    fn fused_conv_pool_relu_equals_the_three_ops_bit_for_bit() {
        let bits = |t: &Tensor| {
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        // The judge's two blocks (padded, widened outputs), an unpadded one whose outputs are used
        // in place (24 wide), odd outputs (13 x 13: pooling drops the last row and column) without
        // a bias, and f64, which the direct kernels do not take (the three ops).
        for (xs, ws, p, bias, dtype) in [
            ([3, 1, 28, 28], [32, 1, 5, 5], 2, true, DType::F32),
            ([5, 32, 14, 14], [64, 32, 5, 5], 2, true, DType::F32),
            ([2, 3, 28, 28], [7, 3, 5, 5], 0, true, DType::F32),
            ([2, 2, 15, 15], [4, 2, 3, 3], 0, false, DType::F32),
            ([2, 2, 12, 12], [4, 2, 4, 4], 1, true, DType::F64),
        ] {
            let x = rand(&xs, 1, dtype);
            let w = rand(&ws, 2, dtype);
            let b = rand(&[ws[0]], 3, dtype);
            let b = bias.then_some(&b);
            let params = ConvParams { padding: p, ..Default::default() };
            let fused = conv2d_max_pool2_relu(&x, &w, b, params).unwrap();
            let three = crate::relu(&crate::max_pool2d(&conv2d(&x, &w, b, params).unwrap(), 2).unwrap()).unwrap();
            assert_eq!(fused.dims(), three.dims(), "{xs:?} {ws:?}");
            if dtype == DType::F32 {
                assert_eq!(bits(&fused), bits(&three), "{xs:?} {ws:?} padding {p}");
            } else {
                assert_eq!(max_diff(&fused, &three), 0.0);
            }
            // Some outputs are negative before the ReLU, so it did something.
            assert!(fused
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
                .contains(&0.0));
        }
        // A stride-2 convolution is not the direct kernels': the three ops, same result.
        let (x, w) = (rand(&[2, 3, 16, 16], 4, DType::F32), rand(&[5, 3, 4, 4], 5, DType::F32));
        let params = ConvParams { stride: 2, padding: 1, ..Default::default() };
        let three = crate::relu(&crate::max_pool2d(&conv2d(&x, &w, None, params).unwrap(), 2).unwrap()).unwrap();
        assert_eq!(bits(&conv2d_max_pool2_relu(&x, &w, None, params).unwrap()), bits(&three));
        // Shape errors come from the convolution.
        let bad = conv2d_max_pool2_relu(&x, &rand(&[5, 2, 4, 4], 6, DType::F32), None, params);
        assert!(bad.is_err());
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = rand(&[1, 3, 8, 8], 1, DType::F32);
        let w = rand(&[4, 2, 3, 3], 2, DType::F32);
        assert!(conv2d(&x, &w, None, ConvParams::default()).unwrap_err().to_string().contains("3 channels"));
        assert!(conv_transpose2d(&x, &w, None, ConvParams::default()).is_err());
        let empty = rand(&[0, 3, 8, 8], 1, DType::F32);
        let w3 = rand(&[4, 3, 3, 3], 2, DType::F32);
        assert!(conv2d(&empty, &w3, None, ConvParams::default()).unwrap_err().to_string().contains("empty"));
        let short_bias = rand(&[3], 3, DType::F32);
        let err = conv2d(&x, &w3, Some(&short_bias), ConvParams::default()).unwrap_err().to_string();
        assert!(err.contains("bias"), "{err}");
    }
}
