//! Profiling aids, not checks: forward + backward of notebook 7's ResNet, piece by piece, at batch 128:
//! `cargo test --release -p fashion --lib resnet_timings -- --ignored --nocapture`.

#![allow(clippy::type_complexity)] // dfdx shapes, spelled out

use std::time::Instant;

use super::*;

/// Microseconds per call of `f`, the fastest of `reps` calls after one warm-up call (the least
/// disturbed by whatever else the machine runs), printed under `name` with the median.
pub(super) fn time(name: &str, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut us: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    us.sort_by(f64::total_cmp);
    eprintln!("{name:<44} {:>9.0} µs (median {:.0})", us[0], us[us.len() / 2]);
    us[0]
}

type Block<const C: usize> = builders::Residual<(
    builders::Conv2d<C, C, 3, 1>,
    builders::BatchNorm<C>,
    ReLU,
    builders::Conv2d<C, C, 3, 1>,
    builders::BatchNorm<C>,
)>;

/// Forward + backward of a module built from `$m` on a batch of `$b` images `$h × $h × $c`, in µs.
macro_rules! piece {
    ($m:ty, $h:literal, $c:literal, $name:expr, $b:expr) => {{
        let dev = Dev::seed_from_u64(1);
        let mut m = dev.build_module::<$m, f32>();
        let x: Tensor<(usize, usize, usize, Const<$c>), f32, Dev> = dev.sample_normal_like(&($b, $h, $h, Const));
        time($name, 10, || {
            let _ = m.forward_mut(x.leaky_trace()).sum::<Rank0, _>().backward();
        })
    }};
}

#[test]
#[ignore]
fn resnet_timings() {
    fashion_kernels::keep_large_buffers();
    let b = 128;
    eprintln!("batch {b}, forward + backward (sum's own cost included)");
    let mut total = 0.0;
    total += piece!((builders::ConvReluPool<1, 32, 3, 1, 2>, builders::BatchNorm<32>), 28, 1, "stem", b);
    total += piece!((Block<32>, ReLU), 14, 32, "block 32 + relu", b);
    total += piece!((builders::ConvReluPool<32, 64, 3, 1, 2>, builders::BatchNorm<64>), 14, 32, "widen", b);
    total += piece!((Block<64>, ReLU), 7, 64, "block 64 + relu", b);
    total += piece!(
        (Flatten<3136>, builders::Linear<3136, 128>, builders::BatchNorm<128>, ReLU, builders::Linear<128, 10>),
        7,
        64,
        "head",
        b
    );
    eprintln!("{:<44} {total:>9.0} µs", "sum of pieces");
    eprintln!("-- the stem");
    piece!(builders::ConvReluPool<1, 32, 3, 1, 2>, 28, 1, "conv relu pool 1→32", b);
    piece!(builders::Conv2d<1, 32, 3, 1>, 28, 1, "conv 1→32", b);
    piece!(ReLU, 28, 32, "relu 28×28×32", b);
    piece!(MaxPool2d<2>, 28, 32, "max pool 28×28×32", b);
    piece!(builders::BatchNorm<32>, 14, 32, "batch norm 32", b);
    eprintln!("-- inside a block of 32 at 14×14");
    piece!(builders::Conv2d<32, 32, 3, 1>, 14, 32, "conv 3×3 32→32", b);
    piece!(builders::BatchNorm<32>, 14, 32, "batch norm 32", b);
    piece!(ReLU, 14, 32, "relu", b);
    piece!(ReLU, 14, 32, "relu again", b);
    piece!(builders::ConvReluPool<32, 64, 3, 1, 2>, 14, 32, "conv relu pool 32→64", b);
    eprintln!("-- inside a block of 64 at 7×7");
    piece!(builders::Conv2d<64, 64, 3, 1>, 7, 64, "conv 3×3 64→64", b);
    piece!(builders::BatchNorm<64>, 7, 64, "batch norm 64", b);
}
