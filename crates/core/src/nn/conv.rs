//! Convolution layers backed by the zoo's fast CPU kernels ([`zoo_kernels`]): im2col/col2im plus
//! one large GEMM per pass. Drop-in replacements for `candle_nn::Conv2d` / `ConvTranspose2d`:
//! same constructors, configs and parameter names (`weight`, `bias`), so checkpoints are
//! interchangeable. Grouped convolutions and non-CPU devices use Candle's kernels.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, ConvTranspose2dConfig, VarBuilder};
use zoo_kernels::ConvParams;

/// A 2-D convolution layer, `weight` `[out, in, k, k]`, optional `bias` `[out]`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: Conv2dConfig,
}

impl Conv2d {
    /// A layer from existing tensors.
    pub fn new(weight: Tensor, bias: Option<Tensor>, cfg: Conv2dConfig) -> Self {
        Self { weight, bias, cfg }
    }
    /// The kernel.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
    /// `relu(max_pool2d(self.forward(x), 2))` for inference, fused on the CPU where the direct
    /// kernels apply ([`zoo_kernels::conv2d_max_pool2_relu`]; the same values bit for bit). The
    /// result has no gradient path: train with the three ops.
    pub fn forward_max_pool2_relu(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.cfg;
        if c.groups != 1 {
            return zoo_kernels::relu(&zoo_kernels::max_pool2d(&self.forward(x)?, 2)?);
        }
        let p = ConvParams { stride: c.stride, padding: c.padding, dilation: c.dilation, output_padding: 0 };
        zoo_kernels::conv2d_max_pool2_relu(x, &self.weight, self.bias.as_ref(), p)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.cfg;
        if c.groups != 1 {
            let y = x.conv2d(&self.weight, c.padding, c.stride, c.dilation, c.groups)?;
            return match &self.bias {
                Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?),
                None => Ok(y),
            };
        }
        let p = ConvParams { stride: c.stride, padding: c.padding, dilation: c.dilation, output_padding: 0 };
        zoo_kernels::conv2d(x, &self.weight, self.bias.as_ref(), p)
    }
}

/// A transposed 2-D convolution layer, `weight` `[in, out, k, k]`, optional `bias` `[out]`.
#[derive(Debug, Clone)]
pub struct ConvTranspose2d {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: ConvTranspose2dConfig,
}

impl ConvTranspose2d {
    /// A layer from existing tensors.
    pub fn new(weight: Tensor, bias: Option<Tensor>, cfg: ConvTranspose2dConfig) -> Self {
        Self { weight, bias, cfg }
    }
    /// The kernel.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.cfg;
        let p =
            ConvParams { stride: c.stride, padding: c.padding, dilation: c.dilation, output_padding: c.output_padding };
        zoo_kernels::conv_transpose2d(x, &self.weight, self.bias.as_ref(), p)
    }
}

fn init_bound(fan_in: usize) -> candle_nn::Init {
    let b = 1.0 / (fan_in as f64).sqrt();
    candle_nn::Init::Uniform { lo: -b, up: b }
}

/// Creates `weight` of `shape` and, if asked, `bias` of `[out_c]` under `vb`, both
/// `U(+-1/sqrt(fan_in))` as PyTorch initialises them.
fn parameters(
    shape: (usize, usize, usize, usize),
    fan_in: usize,
    out_c: usize,
    bias: bool,
    vb: &VarBuilder,
) -> Result<(Tensor, Option<Tensor>)> {
    let weight = vb.get_with_hints(shape, "weight", init_bound(fan_in))?;
    let bias = if bias { Some(vb.get_with_hints(out_c, "bias", init_bound(fan_in))?) } else { None };
    Ok((weight, bias))
}

fn conv2d_layer(
    in_c: usize,
    out_c: usize,
    kernel: usize,
    cfg: Conv2dConfig,
    bias: bool,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let fan_in = in_c / cfg.groups * kernel * kernel;
    let (weight, bias) = parameters((out_c, in_c / cfg.groups, kernel, kernel), fan_in, out_c, bias, &vb)?;
    Ok(Conv2d::new(weight, bias, cfg))
}

fn conv_transpose2d_layer(
    in_c: usize,
    out_c: usize,
    kernel: usize,
    cfg: ConvTranspose2dConfig,
    bias: bool,
    vb: VarBuilder,
) -> Result<ConvTranspose2d> {
    let (weight, bias) = parameters((in_c, out_c, kernel, kernel), out_c * kernel * kernel, out_c, bias, &vb)?;
    Ok(ConvTranspose2d::new(weight, bias, cfg))
}

/// A [`Conv2d`] with bias, parameters created under `vb` (PyTorch's default initialisation).
pub fn conv2d(in_c: usize, out_c: usize, kernel: usize, cfg: Conv2dConfig, vb: VarBuilder) -> Result<Conv2d> {
    conv2d_layer(in_c, out_c, kernel, cfg, true, vb)
}

/// A [`Conv2d`] without bias (e.g. before a BatchNorm).
pub fn conv2d_no_bias(in_c: usize, out_c: usize, kernel: usize, cfg: Conv2dConfig, vb: VarBuilder) -> Result<Conv2d> {
    conv2d_layer(in_c, out_c, kernel, cfg, false, vb)
}

/// A [`ConvTranspose2d`] with bias, parameters created under `vb`.
pub fn conv_transpose2d(
    in_c: usize,
    out_c: usize,
    kernel: usize,
    cfg: ConvTranspose2dConfig,
    vb: VarBuilder,
) -> Result<ConvTranspose2d> {
    conv_transpose2d_layer(in_c, out_c, kernel, cfg, true, vb)
}

/// A [`ConvTranspose2d`] without bias.
pub fn conv_transpose2d_no_bias(
    in_c: usize,
    out_c: usize,
    kernel: usize,
    cfg: ConvTranspose2dConfig,
    vb: VarBuilder,
) -> Result<ConvTranspose2d> {
    conv_transpose2d_layer(in_c, out_c, kernel, cfg, false, vb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{randn64, vars_without_gradient};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn layers_match_candle_nn_and_train() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let cfg = Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
        let ours = conv2d(3, 4, 3, cfg, vb.pp("c")).unwrap();
        let theirs = candle_nn::Conv2d::new(ours.weight().clone(), ours.bias().cloned(), cfg);
        let x = randn64(&[2, 3, 9, 9], 1);
        let a = ours.forward(&x).unwrap();
        let b = theirs.forward(&x).unwrap();
        assert!(a.sub(&b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap() < 1e-12);
        let tcfg = ConvTranspose2dConfig { padding: 1, stride: 2, output_padding: 1, dilation: 1 };
        let up = conv_transpose2d(4, 2, 3, tcfg, vb.pp("t")).unwrap();
        let y = up.forward(&a).unwrap();
        assert_eq!(y.dims(), &[2, 2, 10, 10]);
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(vars_without_gradient(&vm, &grads), Vec::<String>::new());
        let grouped = conv2d(4, 4, 3, Conv2dConfig { groups: 2, ..Default::default() }, vb.pp("g")).unwrap();
        assert_eq!(grouped.forward(&a).unwrap().dims(), &[2, 4, 3, 3]);
    }
}
