//! Notebook 7's small ResNet as a type, shared by `examples/convnets.rs` and `examples/bench.rs` (the
//! notebook writes it in a cell).
use fashion::prelude::*;

/// Two 3×3 convolutions, each with batch norm, the first with ReLU, and the block's input added.
pub type Block<const C: usize> = Residual<(Conv2d<C, C, 3, 1>, BatchNorm<C>, ReLU, Conv2d<C, C, 3, 1>, BatchNorm<C>)>;

/// A fused stem to 14×14, a residual block, a fused widening to 7×7, a residual block, a dense head.
pub type ResNet = (
    AddChannel,
    (ConvReluPool<1, 32, 3, 1, 2>, BatchNorm<32>),
    (Block<32>, ReLU),
    (ConvReluPool<32, 64, 3, 1, 2>, BatchNorm<64>),
    (Block<64>, ReLU),
    (Flatten<3136>, Linear<3136, 128>, BatchNorm<128>, ReLU, Linear<128, 10>),
);
