//! CPU kernels for dbps: the whole encoder of the no-gradient selection pass, and the
//! convolutions (with both gradients) of the gradient pass.
//!
//! Selection embeds every candidate patch once, without gradients and with BatchNorm folded
//! into the convolutions, so it can run on kernels built for inference only: channels-last
//! maps ([`FeatureMap`]), convolutions whose weights are packed once ([`PackedConv`]) and whose
//! bias, residual add and ReLU happen as the output is stored, max pooling without indices and
//! global average pooling; and, for the gradient pass, convolution forward, input gradient and
//! weight gradient on channels-first buffers ([`conv2d_forward`], [`conv2d_input_grad`],
//! [`conv2d_weight_grad`]). The microkernel's instruction set ([`Isa`]) is chosen at run time,
//! so one binary runs on AVX2-only and AVX-512 machines.
//!
//! This crate knows nothing of Burn or of any network: `dbps-encoder` assembles a ResNet
//! from these parts and checks it against its own forward pass.
//!
//! ```
//! use dbps_kernels::{ConvSpec, FeatureMap, Isa, PackedConv};
//!
//! // A 3×3 convolution, 2 → 4 channels, all weights 1, bias 0.5, on a 3×3 map of ones.
//! let spec = ConvSpec { c_in: 2, c_out: 4, kernel: 3, stride: 1, padding: 1 };
//! let conv = PackedConv::new(spec, &[1.0; 4 * 2 * 9], &[0.5; 4], Isa::best()).unwrap();
//! let input = FeatureMap::new(vec![1.0; 3 * 3 * 2], [1, 3, 3, 2]).unwrap();
//! let out = conv.forward(&input, None, false).unwrap();
//! assert_eq!(out.shape(), [1, 3, 3, 4]);
//! assert_eq!(out.data[4 * 4], 2.0 * 9.0 + 0.5); // centre pixel sees all 9 taps
//! assert_eq!(out.data[0], 2.0 * 4.0 + 0.5); // a corner sees 4
//! ```

#![warn(missing_docs)]

mod batch_norm;
mod conv;
mod error;
mod feature_map;
mod gemm;
mod isa;
mod microkernel;
mod pool;
mod route;
mod train;
mod winograd;
mod winograd_grad;

pub use batch_norm::{BatchNormGrads, BatchStats, batch_norm_backward, batch_norm_forward};
pub use conv::{ConvSpec, PackedConv};
pub use error::KernelError;
pub use feature_map::FeatureMap;
pub use isa::{ISA_VARIABLE, Isa};
pub use pool::{global_average_pool, max_pool};
pub use route::same_type;
pub use train::{conv2d_forward, conv2d_input_grad, conv2d_weight_grad};
