//! # zoo-kernels
//!
//! CPU kernels that make Candle train faster, as Candle custom ops with forward and backward
//! passes. On CUDA and Metal every function here falls back to Candle's own kernels, so results
//! agree across devices within float tolerance.
//!
//! - [`conv2d`] and [`conv_transpose2d`]: convolutions as GEMMs over small groups of images, on
//!   column buffers of about a megabyte that stay in cache; the forward pass, the input gradient
//!   and the weight gradient are each one GEMM per group, written straight into NCHW tensors
//!   (Candle computes the input gradient of a convolution with a direct transposed-convolution
//!   loop, and the weight gradient as many thin GEMMs). In f32 on CPUs with AVX2 and FMA
//!   (detected at run time) most convolutions, strided and transposed ones included, compute
//!   all three passes straight from the images with register-tiled vector kernels, with no
//!   columns.
//! - [`linear`]: a fully connected layer as one op, forward one GEMM and backward three, every
//!   gradient contiguous (Candle's composed version hands the weight a transposed gradient that
//!   is accumulated in strided order, and sums the bias gradient with a scalar loop).
//! - [`matmul`]: matrix products on a register-tiled kernel of this crate (6 x 16 tiles over
//!   packed operands with AVX2 and FMA, 6 x 32 where the CPU has AVX-512F), also behind the convolutions' and the linear layer's GEMMs in
//!   f32; strided and transposed operands are read without copies.
//! - [`im2col`] / [`col2im`]: the patch-matrix transforms, each the other's adjoint (and so each
//!   the other's backward pass).
//! - [`max_pool2d`]: max pooling whose backward is one pass (Candle's builds several full-size
//!   temporaries to find the maxima again).
//! - [`batch_norm_train`]: batch normalisation with the batch's statistics, one fused op forward
//!   and one backward (Candle composes about ten full-size temporaries, each differentiated).
//! - [`relu`] and [`leaky_relu`]: one op each, with a one-pass backward (Candle builds masks
//!   and converts them, in several full-size temporaries).
//! - [`layer_norm`], [`softmax_last_dim`] and [`lstm_cell`] (the gate arithmetic of an LSTM
//!   step): one op each over the last dimension, forward and backward (Candle composes 5-15
//!   differentiated temporaries; its own fused layer norm and softmax have no backward pass).
//! - [`adam_step_in_place`]: the Adam update without temporaries (zoo-core's `Adam` uses it on the
//!   CPU).

mod activation;
mod adam;
mod conv;
mod conv_channels;
mod conv_cpu;
mod conv_direct;
mod conv_pool;
mod linear;
mod matmul;
mod norm;
mod patches;
mod pool;
mod rowwise;
mod sgemm;
mod util;

pub use activation::{leaky_relu, relu};
pub use adam::{adam_in_place_supported, adam_step_in_place, AdamStep};
pub use conv::{conv2d, conv2d_max_pool2_relu, conv_transpose2d, ConvParams};
pub use linear::linear;
pub use matmul::matmul;
pub use norm::{batch_norm_train, channel_affine};
pub use patches::{col2im, im2col, im2col_with_ones, PatchGeometry};
pub use pool::{max_pool2d, max_pool2d_by_reduction};
pub use rowwise::{
    layer_norm, layer_norm_composed, lstm_cell, lstm_cell_composed, softmax_last_dim, softmax_last_dim_composed,
};
