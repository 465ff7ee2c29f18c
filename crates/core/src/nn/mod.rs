//! Trainable layers that Candle lacks, or whose fused kernels silently drop gradients.
//!
//! Every layer here is built from differentiable basic ops and has a finite-difference gradient
//! test in f64 (see `crate::gradcheck`).

mod attention;
mod batch_norm;
mod conv;
mod dropout;
mod gradient_reversal;
mod layer_norm;
mod linear;
mod lstm;
mod sequential;
mod softmax;
mod warp;

pub use attention::{causal_mask, MultiHeadAttention};
pub use batch_norm::{batch_norm, BatchNorm};
pub use conv::{conv2d, conv2d_no_bias, conv_transpose2d, conv_transpose2d_no_bias, Conv2d, ConvTranspose2d};
pub use dropout::{dropout, Dropout, SharedRng};
pub use gradient_reversal::{grad_reverse, GradientReversal};
pub use layer_norm::{layer_norm, LayerNorm};
pub use linear::{linear, linear_no_bias, Linear};
pub use lstm::LstmCell;
pub use sequential::{seq_t, Activation, SequentialT};
pub use softmax::{log_softmax, softmax, softmax_last};
pub use warp::{affine_warp, AffineJitter, AffineMap};
/// Matrix product `[.., m, k] x [.., k, n]` as `Tensor::matmul`, on the CPU in f32 with the
/// register-tiled kernel of zoo-kernels; see [`zoo_kernels::matmul`].
pub use zoo_kernels::matmul;
/// Max pooling over `k x k` windows with a correct one-pass backward on the CPU (Candle 0.11's
/// divides the gradient by `k * k`); see [`zoo_kernels::max_pool2d`].
pub use zoo_kernels::max_pool2d;
/// ReLU and leaky ReLU as single ops with a one-pass backward on the CPU (gradient 0, resp.
/// `slope`, at exactly 0, as in PyTorch); see [`zoo_kernels::relu`].
pub use zoo_kernels::{leaky_relu, relu};

/// A [`candle_nn::VarBuilder`] over the variables of `varmap` under `prefix` (e.g.
/// `"discriminator"`, without the dot), detached from them. Layers built from it share the
/// variables' storage and compute the same outputs, and pass gradients on to their inputs, but
/// their weights get none, so the convolution and linear kernels skip those GEMMs: for a network
/// held fixed while another trains through it, as a GAN's discriminator in the generator's
/// update. Variables that are not trained (BatchNorm running statistics,
/// [`crate::init::is_trainable_name`]) stay the variables themselves, so a BatchNorm layer in
/// training mode still updates them.
pub fn fixed_var_builder(
    varmap: &candle_nn::VarMap,
    prefix: &str,
    dtype: candle_core::DType,
    dev: &candle_core::Device,
) -> candle_nn::VarBuilder<'static> {
    let start = format!("{prefix}.");
    let data = varmap.data().lock().expect("the variable map's lock");
    let tensors = data
        .iter()
        .filter_map(|(name, var)| {
            let local = name.strip_prefix(&start)?;
            let t = var.as_tensor();
            Some((local.to_string(), if crate::init::is_trainable_name(name) { t.detach() } else { t.clone() }))
        })
        .collect::<std::collections::HashMap<_, _>>();
    candle_nn::VarBuilder::from_tensors(tensors, dtype, dev)
}
