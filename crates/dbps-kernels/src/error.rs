use thiserror::Error;

/// What can be wrong with a kernel's inputs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KernelError {
    /// A buffer's length does not match the shape it was given with.
    #[error(
        "{what} holds {got} values but its shape needs {expected}: pass a buffer of that shape"
    )]
    Shape {
        /// Which buffer.
        what: &'static str,
        /// Values the shape needs.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// The input's channel count is not the one the convolution was packed for.
    #[error("convolution expects {expected} input channels, the feature map has {got}")]
    Channels {
        /// Channels the weights expect.
        expected: usize,
        /// Channels present.
        got: usize,
    },
    /// The kernel does not fit in the padded input.
    #[error(
        "a {kernel}×{kernel} kernel with padding {padding} does not fit a {h}×{w} input: use larger patches or a shallower encoder"
    )]
    TooSmall {
        /// Kernel size.
        kernel: usize,
        /// Padding.
        padding: usize,
        /// Input rows.
        h: usize,
        /// Input columns.
        w: usize,
    },
    /// A zero size where a positive one is needed.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The residual's shape differs from the convolution's output.
    #[error("residual shape {got:?} differs from the convolution output {expected:?}")]
    Residual {
        /// Output shape.
        expected: [usize; 4],
        /// Residual shape.
        got: [usize; 4],
    },
    /// `DBPS_KERNEL_ISA` names an instruction set that is unknown or that this CPU lacks.
    #[error(
        "DBPS_KERNEL_ISA={name} is not an instruction set this CPU runs; use one of: {available}, or unset it to take the best"
    )]
    Isa {
        /// The name given.
        name: String,
        /// The names this CPU runs, best first.
        available: String,
    },
}
