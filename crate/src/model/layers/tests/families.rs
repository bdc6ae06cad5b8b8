//! The layers of the next chapters — activations, strided and larger convolutions, pooling, batch
//! normalization, residual blocks, dropout by rate — against references: dfdx's own operations or
//! naive loops for the outputs, central differences for the gradients.

#![allow(clippy::type_complexity)] // dfdx shapes, spelled out

use super::super::pool::{reference_global_avg, reference_pool};
use super::*;

/// `Σ y·r` for a fixed random `r`: its gradient is that of every output at once.
fn weighted_sum(y: &[f32], r: &[f32]) -> f64 {
    y.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Central differences of `loss` at `v`, for the first `max` values (all when `max` is large).
fn numerical(v: &[f32], max: usize, h: f32, loss: impl Fn(&[f32]) -> f64) -> Vec<f64> {
    (0..v.len().min(max))
        .map(|i| {
            let (mut a, mut b) = (v.to_vec(), v.to_vec());
            a[i] += h;
            b[i] -= h;
            (loss(&a) - loss(&b)) / (2.0 * h as f64)
        })
        .collect()
}

/// Each activation against its formula in f64, and its input gradient against central differences.
#[test]
fn activations_match_their_formulas_and_numerical_gradients() {
    let dev = Dev::seed_from_u64(21);
    let x: Tensor<(usize, Const<7>), f32, Dev> = dev.sample_normal_like(&(9, Const));
    let x = x * 2.0;
    let r: Tensor<(usize, Const<7>), f32, Dev> = dev.sample_normal_like(&(9, Const));
    let (xv, rv) = (x.as_vec(), r.as_vec());
    fn check<
        M: Module<
                Tensor<(usize, Const<7>), f32, Dev, OwnedTape<f32, Dev>>,
                Output = Tensor<(usize, Const<7>), f32, Dev, OwnedTape<f32, Dev>>,
            > + Module<Tensor<(usize, Const<7>), f32, Dev>, Output = Tensor<(usize, Const<7>), f32, Dev>>,
    >(
        name: &str,
        m: M,
        (x, xv, rv): (&Tensor<(usize, Const<7>), f32, Dev>, &[f32], &[f32]),
        f: fn(f64) -> f64,
    ) {
        let want: Vec<f64> = xv.iter().map(|&v| f(v as f64)).collect();
        let y = m.forward(x.clone()).as_vec();
        close(&y, &want, 2e-6);
        let r = x.device().tensor_from_vec(rv.to_vec(), *x.shape());
        let g = (m.forward(x.leaky_trace()) * r).sum::<Rank0, _>().backward();
        let num = numerical(xv, usize::MAX, 1e-3, |v| v.iter().zip(rv).map(|(a, b)| f(*a as f64) * *b as f64).sum());
        close(&g.get(x).as_vec(), &num, 1e-3);
        assert!(g.get(x).as_vec().iter().all(|v| v.is_finite()), "{name}");
    }
    check("sigmoid", Sigmoid, (&x, &xv, &rv), |x| 1.0 / (1.0 + (-x).exp()));
    check("tanh", Tanh, (&x, &xv, &rv), f64::tanh);
    check("gelu", Gelu, (&x, &xv, &rv), |x| x * 0.5 * (1.0 + libm_erf(x / std::f64::consts::SQRT_2)));
    check("leaky", LeakyReLU::<30>, (&x, &xv, &rv), |x| if x > 0.0 { x } else { 0.3 * x });
    check("leaky 1%", LeakyReLU::<1>, (&x, &xv, &rv), |x| if x > 0.0 { x } else { 0.01 * x });
    check("elu", Elu, (&x, &xv, &rv), |x| if x > 0.0 { x } else { x.exp_m1() });
    // GELU also against dfdx's own (erf-based) kernel.
    let theirs = x.clone().accurate_gelu().as_vec();
    close(&Gelu.forward(x.clone()).as_vec(), &theirs.iter().map(|&v| v as f64).collect::<Vec<_>>(), 1e-6);
}

/// erf in f64 by its Taylor series: the test's own reference, independent of the kernel's rational
/// approximation (beyond |x| = 4, erf is ±1 within 2e-8).
fn libm_erf(x: f64) -> f64 {
    if x.abs() > 4.0 {
        return x.signum();
    }
    let (mut term, mut sum) = (x, x);
    for n in 1..200 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// Strided, 5×5 and 1×1 convolutions: the fast layer against the dfdx-ops reference (outputs and
/// gradients of input, kernel and bias), and the reference against a naive loop with a stride.
#[test]
fn strided_and_larger_convolutions_match_the_reference() {
    fn check<const IN: usize, const OUT: usize, const K: usize, const P: usize, const S: usize>(
        seed: u64,
        (h, w): (usize, usize),
    ) {
        let dev = Dev::seed_from_u64(seed);
        let conv = dev.build_module::<builders::Conv2d<IN, OUT, K, P, S>, f32>();
        let x: Tensor<(usize, usize, usize, Const<IN>), f32, Dev> = dev.sample_normal_like(&(3, h, w, Const));
        let y = conv.forward(x.clone());
        let want = conv.reference_forward(x.clone()).unwrap();
        assert_eq!(y.shape().concrete(), want.shape().concrete());
        let f64s = |t: Vec<f32>| t.iter().map(|&v| v as f64).collect::<Vec<_>>();
        close(&y.as_vec(), &f64s(want.as_vec()), 1e-5);
        let r: Tensor<(usize, usize, usize, Const<OUT>), f32, Dev> = dev.sample_normal_like(y.shape());
        let g1 = (conv.forward(x.leaky_trace()) * r.clone()).sum::<Rank0, _>().backward();
        let g2 = (conv.reference_forward(x.leaky_trace()).unwrap() * r.clone()).sum::<Rank0, _>().backward();
        close(&g1.get(&x).as_vec(), &f64s(g2.get(&x).as_vec()), 1e-4);
        close_scaled(&g1.get(&conv.weight).as_vec(), &f64s(g2.get(&conv.weight).as_vec()), 1e-5);
        close_scaled(&g1.get(&conv.bias).as_vec(), &f64s(g2.get(&conv.bias).as_vec()), 1e-5);
        // The reference's input gradient against central differences of the naive loop.
        let (wv, bv, rv) = (conv.weight.as_vec(), conv.bias.as_vec(), r.as_vec());
        let (ho, wo) = (y.shape().1, y.shape().2);
        let naive = |xv: &[f32]| -> Vec<f64> {
            let mut out = Vec::new();
            for n in 0..3 {
                for i in 0..ho {
                    for j in 0..wo {
                        for o in 0..OUT {
                            let mut acc = bv[o] as f64;
                            for d in 0..K * K {
                                let (r, c) = ((i * S + d / K).wrapping_sub(P), (j * S + d % K).wrapping_sub(P));
                                if r < h && c < w {
                                    for ci in 0..IN {
                                        acc += xv[((n * h + r) * w + c) * IN + ci] as f64
                                            * wv[(d * IN + ci) * OUT + o] as f64;
                                    }
                                }
                            }
                            out.push(acc);
                        }
                    }
                }
            }
            out
        };
        close(&want.as_vec(), &naive(&x.as_vec()), 1e-5);
        let num = numerical(&x.as_vec(), 60, 1e-2, |v| naive(v).iter().zip(&rv).map(|(a, b)| a * *b as f64).sum());
        close(&g1.get(&x).as_vec()[..num.len()], &num, 1e-3);
    }
    check::<3, 4, 3, 1, 2>(31, (9, 8)); // stride 2, "same"
    check::<1, 6, 5, 2, 1>(32, (12, 11)); // LeNet's 5×5, one channel (im2col, not the fused direct path)
    check::<4, 8, 1, 0, 2>(33, (7, 7)); // 1×1 projection, stride 2
    check::<6, 5, 3, 1, 1>(34, (10, 9)); // Winograd
    check::<2, 3, 5, 0, 1>(35, (9, 9)); // 5×5 "valid"
}

/// Max- and average-pooling with strides other than the window, and global average pooling, against
/// dfdx's operations; the gradients against central differences.
#[test]
fn pools_with_any_stride_match_the_reference() {
    let dev = Dev::seed_from_u64(41);
    let x: Tensor<(usize, usize, usize, Const<3>), f32, Dev> = dev.sample_normal_like(&(2, 9, 8, Const));
    let xv = x.as_vec();
    let f64s = |t: Vec<f32>| t.iter().map(|&v| v as f64).collect::<Vec<_>>();
    // Max 3/2 and 2/2, average 2/2 and 3/2.
    let cases: [(&str, usize, usize, bool); 4] =
        [("max 3/2", 3, 2, true), ("max 2", 2, 2, true), ("avg 2", 2, 2, false), ("avg 3/2", 3, 2, false)];
    for (name, k, s, max) in cases {
        let (y, yt) = match (k, s, max) {
            (3, 2, true) => (MaxPool2d::<3, 2>.forward(x.clone()), MaxPool2d::<3, 2>.forward(x.leaky_trace())),
            (2, 2, true) => (MaxPool2d::<2>.forward(x.clone()), MaxPool2d::<2>.forward(x.leaky_trace())),
            (2, 2, false) => (AvgPool2d::<2>.forward(x.clone()), AvgPool2d::<2>.forward(x.leaky_trace())),
            _ => (AvgPool2d::<3, 2>.forward(x.clone()), AvgPool2d::<3, 2>.forward(x.leaky_trace())),
        };
        let want = reference_pool(x.clone(), (k, s), max).unwrap();
        assert_eq!(y.shape().concrete(), want.shape().concrete(), "{name}");
        close(&y.as_vec(), &f64s(want.as_vec()), 1e-6);
        let r: Tensor<(usize, usize, usize, Const<3>), f32, Dev> = dev.sample_normal_like(y.shape());
        let g = (yt * r.clone()).sum::<Rank0, _>().backward();
        let rv = r.as_vec();
        let loss = |v: &[f32]| {
            let t = dev.tensor_from_vec(v.to_vec(), *x.shape());
            weighted_sum(&reference_pool(t, (k, s), max).unwrap().as_vec(), &rv)
        };
        close(&g.get(&x).as_vec(), &numerical(&xv, usize::MAX, 1e-3, loss), 2e-3);
    }
    let y = GlobalAvgPool.forward(x.clone());
    assert_eq!(y.shape().concrete(), [2, 3]);
    close(&y.as_vec(), &f64s(reference_global_avg(x.clone()).unwrap().as_vec()), 1e-6);
    let g = GlobalAvgPool.forward(x.leaky_trace()).sum::<Rank0, _>().backward();
    assert!(g.get(&x).as_vec().iter().all(|&v| (v - 1.0 / 72.0).abs() < 1e-7));
}

/// Batch normalization: while training, each channel of the output has mean β and deviation γ, the
/// gradients match central differences, and the running statistics move by 1% towards the batch's;
/// at inference, running statistics equal to a batch's give that batch's training output.
#[test]
fn batch_norm_trains_on_batch_statistics_and_infers_on_running_ones() {
    let dev = Dev::seed_from_u64(51);
    let mut bn = dev.build_module::<builders::BatchNorm<3>, f32>();
    bn.gamma = dev.tensor([1.5, 0.5, 2.0]);
    bn.beta = dev.tensor([0.1, -0.2, 0.3]);
    let x: Tensor<(usize, usize, usize, Const<3>), f32, Dev> = dev.sample_normal_like(&(4, 3, 2, Const));
    let x = x * 2.0 + 1.0;
    let xv = x.as_vec();
    let y = bn.forward_mut(x.leaky_trace());
    let yv = y.as_vec();
    let (gamma, beta) = (bn.gamma.as_vec(), bn.beta.as_vec());
    let rows = xv.len() / 3;
    for ch in 0..3 {
        let col = |v: &[f32]| v.iter().skip(ch).step_by(3).map(|&a| a as f64).collect::<Vec<f64>>();
        let (xs, ys) = (col(&xv), col(&yv));
        let mean = xs.iter().sum::<f64>() / rows as f64;
        let var = xs.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / rows as f64;
        for (a, b) in xs.iter().zip(&ys) {
            let want = gamma[ch] as f64 * (a - mean) / (var + 1e-3).sqrt() + beta[ch] as f64;
            assert!((want - b).abs() < 1e-5, "{want} vs {b}");
        }
        assert!((bn.moving_mean.as_vec()[ch] as f64 - 0.01 * mean).abs() < 1e-6);
        assert!((bn.moving_variance.as_vec()[ch] as f64 - (0.99 + 0.01 * var)).abs() < 1e-6);
    }
    // Gradients of Σ y·r (train mode) for x, γ and β.
    let r: Tensor<(usize, usize, usize, Const<3>), f32, Dev> = dev.sample_normal_like(x.shape());
    let rv = r.as_vec();
    let g = (bn.forward_mut(x.leaky_trace()) * r.clone()).sum::<Rank0, _>().backward();
    let train_loss = |v: &[f32], gamma: &[f32], beta: &[f32]| {
        let mut m = bn.clone();
        m.gamma = dev.tensor_from_vec(gamma.to_vec(), (Const,));
        m.beta = dev.tensor_from_vec(beta.to_vec(), (Const,));
        let t = dev.tensor_from_vec(v.to_vec(), *x.shape());
        weighted_sum(&m.forward_mut(t.leaky_trace()).as_vec(), &rv)
    };
    close(&g.get(&x).as_vec(), &numerical(&xv, usize::MAX, 1e-2, |v| train_loss(v, &gamma, &beta)), 2e-3);
    close(&g.get(&bn.gamma).as_vec(), &numerical(&gamma, 3, 1e-2, |gm| train_loss(&xv, gm, &beta)), 2e-3);
    close(&g.get(&bn.beta).as_vec(), &numerical(&beta, 3, 1e-2, |b| train_loss(&xv, &gamma, b)), 2e-3);
    // Inference with a batch's statistics gives that batch's training output.
    let mut inf = bn.clone();
    let (mean, var): (Vec<f32>, Vec<f32>) = (0..3)
        .map(|ch| {
            let xs: Vec<f64> = xv.iter().skip(ch).step_by(3).map(|&a| a as f64).collect();
            let m = xs.iter().sum::<f64>() / rows as f64;
            (m as f32, (xs.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / rows as f64) as f32)
        })
        .unzip();
    inf.moving_mean = dev.tensor_from_vec(mean, (Const,));
    inf.moving_variance = dev.tensor_from_vec(var, (Const,));
    close(&inf.forward(x.clone()).as_vec(), &yv.iter().map(|&v| v as f64).collect::<Vec<_>>(), 1e-5);
    // After a dense layer: (B, C).
    let mut bn1 = dev.build_module::<builders::BatchNorm<4>, f32>();
    let d: Tensor<(usize, Const<4>), f32, Dev> = dev.sample_normal_like(&(6, Const));
    let out = bn1.forward_mut(d.leaky_trace()).as_vec();
    let m0: f32 = out.iter().step_by(4).sum::<f32>() / 6.0;
    assert!(m0.abs() < 1e-5);
    // The optimizer leaves the running statistics alone and trains γ, β.
    assert_eq!(bn1.num_trainable_params(), 8);
}

/// `x + F(x)` and `P(x) + F(x)`: values and gradients against the same sums from dfdx's operations.
#[test]
fn residual_blocks_add_the_shortcut() {
    let dev = Dev::seed_from_u64(61);
    type Block = Residual<(builders::Conv2d<4, 4, 3, 1>, ReLU, builders::Conv2d<4, 4, 3, 1>)>;
    type Down = ResidualProjection<(builders::Conv2d<4, 6, 3, 1, 2>, ReLU), builders::Conv2d<4, 6, 1, 0, 2>>;
    let block = dev.build_module::<Block, f32>();
    let down = dev.build_module::<Down, f32>();
    let x: Tensor<(usize, usize, usize, Const<4>), f32, Dev> = dev.sample_normal_like(&(2, 6, 5, Const));
    let f64s = |t: Vec<f32>| t.iter().map(|&v| v as f64).collect::<Vec<_>>();
    let want = {
        let a = block.0 .0.reference_forward(x.clone()).unwrap().relu();
        block.0 .2.reference_forward(a).unwrap() + x.clone()
    };
    close(&block.forward(x.clone()).as_vec(), &f64s(want.as_vec()), 1e-5);
    let want_down = {
        let f = down.f.0.reference_forward(x.clone()).unwrap().relu();
        f + down.proj.reference_forward(x.clone()).unwrap()
    };
    let got = down.forward(x.clone());
    assert_eq!(got.shape().concrete(), [2, 3, 3, 6]);
    close(&got.as_vec(), &f64s(want_down.as_vec()), 1e-5);
    // Gradients: through both paths.
    let r: Tensor<(usize, usize, usize, Const<6>), f32, Dev> = dev.sample_normal_like(got.shape());
    let g1 = (down.forward(x.leaky_trace()) * r.clone()).sum::<Rank0, _>().backward();
    let reference = |x: Tensor<(usize, usize, usize, Const<4>), f32, Dev, OwnedTape<f32, Dev>>| {
        let f = down.f.0.reference_forward(x.with_empty_tape()).unwrap().relu();
        f + down.proj.reference_forward(x).unwrap()
    };
    let g2 = (reference(x.leaky_trace()) * r).sum::<Rank0, _>().backward();
    close(&g1.get(&x).as_vec(), &f64s(g2.get(&x).as_vec()), 1e-4);
    close_scaled(&g1.get(&down.proj.weight).as_vec(), &f64s(g2.get(&down.proj.weight).as_vec()), 1e-5);
    close_scaled(&g1.get(&down.f.0.weight).as_vec(), &f64s(g2.get(&down.f.0.weight).as_vec()), 1e-5);
}

/// `Dropout<20>` drops about a fifth while training, scales the rest by 1.25, and does nothing at
/// inference.
#[test]
fn dropout_by_rate() {
    let dev = Dev::seed_from_u64(71);
    let x: Tensor<(usize, Const<100>), f32, Dev> = dev.ones_like(&(100, Const));
    let y = Dropout::<20>.forward_mut(x.leaky_trace()).as_vec();
    let dropped = y.iter().filter(|&&v| v == 0.0).count();
    assert!((1800..2200).contains(&dropped), "{dropped} of 10000");
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.25).abs() < 1e-6));
    assert_eq!(Dropout::<20>.forward(x.clone()).as_vec(), x.as_vec());
}

/// A profiling aid, not a check: forward + backward of `(Conv2d, ReLU, MaxPool2d)` against
/// `ConvReluPool` for a batch, per layer:
/// `cargo test --release -p fashion --lib keras_way_timings -- --ignored --nocapture`.
#[test]
#[ignore]
fn keras_way_timings() {
    use super::timings::time;
    fn case<const IN: usize, const OUT: usize>(b: usize, hw: usize) {
        let dev = Dev::seed_from_u64(1);
        let fused = dev.build_module::<builders::ConvReluPool<IN, OUT, 3, 1, 2>, f32>();
        let conv = dev.build_module::<builders::Conv2d<IN, OUT, 3, 1>, f32>();
        let x: Tensor<(usize, usize, usize, Const<IN>), f32, Dev> = dev.sample_normal_like(&(b, hw, hw, Const));
        eprintln!("batch {b}, {hw}×{hw}×{IN} → {OUT}");
        time("fused forward+backward", 20, || {
            let _ = fused.forward(x.leaky_trace()).sum::<Rank0, _>().backward();
        });
        time("conv forward+backward", 20, || {
            let _ = conv.forward(x.leaky_trace()).sum::<Rank0, _>().backward();
        });
        let c = conv.forward(x.clone());
        time("relu forward+backward", 20, || {
            let _ = ReLU.forward(c.leaky_trace()).sum::<Rank0, _>().backward();
        });
        time("pool forward+backward", 20, || {
            let _ = MaxPool2d::<2>.forward(c.leaky_trace()).sum::<Rank0, _>().backward();
        });
        time("sum alone (the timing's own cost)", 20, || {
            let _ = c.leaky_trace().sum::<Rank0, _>().backward();
        });
        time("three layers forward+backward", 20, || {
            let _ = MaxPool2d::<2>.forward(ReLU.forward(conv.forward(x.leaky_trace()))).sum::<Rank0, _>().backward();
        });
    }
    for tuned in [false, true] {
        if tuned {
            eprintln!("--- glibc keeping large buffers (M_MMAP_THRESHOLD 256 MB, M_TRIM_THRESHOLD 1 GB)");
            fashion_kernels::keep_large_buffers();
        }
        case::<1, 16>(32, 28);
        case::<1, 32>(64, 28);
        case::<32, 64>(64, 14);
    }
}

/// A profiling aid, not a check: seconds per epoch of 6,000 images for the Keras-way networks against
/// their fused forms: `cargo test --release -p fashion --lib keras_way_epochs -- --ignored --nocapture`.
#[test]
#[ignore]
fn keras_way_epochs() {
    use crate::model::{CnnArch, Network};
    use crate::train::{Adam, FitOptions, Model, Verbosity};
    type KerasWay =
        (AddChannel, builders::Conv2d<1, 16, 3, 1>, ReLU, MaxPool2d<2>, Flatten<3136>, builders::Linear<3136, 10>);
    type Fused = (AddChannel, builders::ConvReluPool<1, 16, 3, 1, 2>, Flatten<3136>, builders::Linear<3136, 10>);
    type KerasCnn = (
        AddChannel,
        (builders::Conv2d<1, 32, 3, 1>, ReLU, MaxPool2d<2>),
        (builders::Conv2d<32, 64, 3, 1>, ReLU, MaxPool2d<2>),
        Flatten<3136>,
        (builders::Linear<3136, 128>, ReLU, DropoutOneIn<2>),
        builders::Linear<128, 10>,
    );
    let n = 6000;
    let x = ndarray::Array3::from_shape_fn((n, 28, 28), |(i, r, c)| ((i * 7 + r * 3 + c) % 11) as f32 / 10.0);
    let y = ndarray::Array1::from_iter((0..n).map(|i| (i % 10) as u8));
    fn secs<N: Network>(x: &ndarray::Array3<f32>, y: &ndarray::Array1<u8>, batch: usize) -> Vec<f64> {
        let mut m: Model<N> = Model::new(1).unwrap();
        m.verbosity = Verbosity::Silent;
        m.compile(Adam::default());
        let h = m.fit(x, y, FitOptions { epochs: 3, batch_size: batch, ..Default::default() }).unwrap();
        h.epochs.iter().map(|e| (e.seconds * 1000.0).round() / 1000.0).collect()
    }
    for _ in 0..2 {
        eprintln!("keras-way 16 {:?}  fused {:?}", secs::<KerasWay>(&x, &y, 32), secs::<Fused>(&x, &y, 32));
        eprintln!("keras cnn    {:?}  fused {:?}", secs::<KerasCnn>(&x, &y, 64), secs::<CnnArch>(&x, &y, 64));
    }
}
