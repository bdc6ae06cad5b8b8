//! Every layer against a naive reference: outputs, and gradients against numerical ones.

use dfdx::optim::Sgd;

use super::*;

mod families;
mod timings;

type Dev = Cpu;

/// Naive reference: direct 4-loop convolution in f64 of `(b, h, w, cin)` NHWC images.
fn naive_conv(x: &[f32], dims: (usize, usize, usize, usize), kern: &[f32], bias: &[f32], k: usize) -> Vec<f64> {
    naive_conv_p(x, dims, kern, bias, k, 0)
}

/// Naive reference with `p` pixels of zero padding.
fn naive_conv_p(
    x: &[f32],
    (b, h, w, cin): (usize, usize, usize, usize),
    kern: &[f32],
    bias: &[f32],
    k: usize,
    p: usize,
) -> Vec<f64> {
    let cout = bias.len();
    let (ho, wo) = (h + 2 * p - k + 1, w + 2 * p - k + 1);
    let mut out = vec![0f64; b * ho * wo * cout];
    for n in 0..b {
        for i in 0..ho {
            for j in 0..wo {
                for o in 0..cout {
                    let mut acc = bias[o] as f64;
                    for di in 0..k {
                        for dj in 0..k {
                            let (r, col) = ((i + di).wrapping_sub(p), (j + dj).wrapping_sub(p));
                            if r >= h || col >= w {
                                continue;
                            }
                            for c in 0..cin {
                                let xv = x[((n * h + r) * w + col) * cin + c] as f64;
                                let kv = kern[((di * k + dj) * cin + c) * cout + o] as f64;
                                acc += xv * kv;
                            }
                        }
                    }
                    out[((n * ho + i) * wo + j) * cout + o] = acc;
                }
            }
        }
    }
    out
}

fn naive_pool(x: &[f32], b: usize, h: usize, w: usize, c: usize, k: usize) -> Vec<f32> {
    let (ho, wo) = (h / k, w / k);
    let mut out = vec![f32::MIN; b * ho * wo * c];
    for n in 0..b {
        for i in 0..ho * k {
            for j in 0..wo * k {
                for ch in 0..c {
                    let o = &mut out[((n * ho + i / k) * wo + j / k) * c + ch];
                    *o = o.max(x[((n * h + i) * w + j) * c + ch]);
                }
            }
        }
    }
    out
}

fn close(a: &[f32], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((*x as f64 - y).abs() <= tol * (1.0 + y.abs()), "index {i}: {x} vs {y}");
    }
}

/// Like [`close`], against the largest magnitude of `b`: for sums whose terms cancel (a kernel
/// gradient summed over thousands of pixels), whose rounding is that of the terms, not of the result.
fn close_scaled(a: &[f32], b: &[f64], tol: f64) {
    let scale = 1.0 + b.iter().fold(0f64, |m, y| m.max(y.abs()));
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((*x as f64 - y).abs() <= tol * scale, "index {i}: {x} vs {y} (scale {scale})");
    }
}

#[test]
fn conv_forward_matches_naive_reference() {
    let dev = Dev::seed_from_u64(1);
    let conv = dev.build_module::<builders::Conv2d<3, 4, 3>, f32>();
    let x: Tensor<(usize, usize, usize, Const<3>), f32, Dev> = dev.sample_normal_like(&(2, 7, 6, Const));
    let y = conv.forward(x.clone());
    assert_eq!(y.shape().concrete(), [2, 5, 4, 4]);
    let want = naive_conv(&x.as_vec(), (2, 7, 6, 3), &conv.weight.as_vec(), &conv.bias.as_vec(), 3);
    close(&y.as_vec(), &want, 1e-5);
}

#[test]
fn padded_conv_forward_and_gradients_match_naive_reference() {
    let dev = Dev::seed_from_u64(5);
    let conv = dev.build_module::<builders::Conv2d<2, 3, 3, 1>, f32>();
    let x: Tensor<(usize, usize, usize, Const<2>), f32, Dev> = dev.sample_normal_like(&(2, 5, 4, Const));
    let y = conv.forward(x.clone());
    assert_eq!(y.shape().concrete(), [2, 5, 4, 3], "same padding keeps the size");
    let (xv, wv, bv) = (x.as_vec(), conv.weight.as_vec(), conv.bias.as_vec());
    close(&y.as_vec(), &naive_conv_p(&xv, (2, 5, 4, 2), &wv, &bv, 3, 1), 1e-5);
    // Input gradient of sum(conv(x)) against central differences.
    let g = conv.forward(x.clone().traced(Gradients::leaky())).sum::<Rank0, _>().backward();
    let gx = g.get(&x).as_vec();
    let f = |v: &[f32]| -> f64 { naive_conv_p(v, (2, 5, 4, 2), &wv, &bv, 3, 1).iter().sum() };
    let num: Vec<f64> = (0..xv.len())
        .map(|i| {
            let (mut a, mut b) = (xv.clone(), xv.clone());
            a[i] += 1e-2;
            b[i] -= 1e-2;
            (f(&a) - f(&b)) / 2e-2
        })
        .collect();
    close(&gx, &num, 1e-3);
}

#[test]
fn pool_forward_matches_naive_reference_including_odd_sizes() {
    let dev = Dev::seed_from_u64(2);
    for (h, w) in [(4, 6), (11, 11), (5, 3)] {
        let x: Tensor<(usize, usize, usize, Const<3>), f32, Dev> = dev.sample_normal_like(&(2, h, w, Const));
        let y = MaxPool2d::<2>.forward(x.clone());
        assert_eq!(y.shape().concrete(), [2, h / 2, w / 2, 3]);
        let want = naive_pool(&x.as_vec(), 2, h, w, 3, 2);
        assert_eq!(y.as_vec(), want);
    }
}

/// Gradients of `sum(conv(x) * r)` w.r.t. input, kernel and bias, against central differences.
#[test]
fn conv_gradients_match_numerical_gradients() {
    let dev = Dev::seed_from_u64(3);
    let mut conv = dev.build_module::<builders::Conv2d<2, 3, 3>, f32>();
    let shape = (2, 5, 4, Const::<2>);
    let x: Tensor<(usize, usize, usize, Const<2>), f32, Dev> = dev.sample_normal_like(&shape);
    let r: Tensor<(usize, usize, usize, Const<3>), f32, Dev> = dev.sample_normal_like(&(2, 3, 2, Const));
    // Analytical.
    let xt = x.clone().traced(Gradients::leaky());
    let loss = (conv.forward(xt) * r.clone()).sum::<Rank0, _>();
    let grads = loss.backward();
    let gx = grads.get(&x).as_vec();
    let gw = grads.get(&conv.weight).as_vec();
    let gb = grads.get(&conv.bias).as_vec();
    // Numerical (f64 reference conv, so differences are exact up to rounding of inputs).
    let f = |xv: &[f32], wv: &[f32], bv: &[f32]| -> f64 {
        naive_conv(xv, (2, 5, 4, 2), wv, bv, 3).iter().zip(r.as_vec()).map(|(a, b)| a * b as f64).sum()
    };
    let (xv, wv, bv) = (x.as_vec(), conv.weight.as_vec(), conv.bias.as_vec());
    let eps = 1e-2f32;
    let num = |which: usize, i: usize| {
        let (mut a, mut b, mut c) = (xv.clone(), wv.clone(), bv.clone());
        let (mut a2, mut b2, mut c2) = (xv.clone(), wv.clone(), bv.clone());
        match which {
            0 => {
                a[i] += eps;
                a2[i] -= eps;
            }
            1 => {
                b[i] += eps;
                b2[i] -= eps;
            }
            _ => {
                c[i] += eps;
                c2[i] -= eps;
            }
        }
        (f(&a, &b, &c) - f(&a2, &b2, &c2)) / (2.0 * eps as f64)
    };
    let gx_num: Vec<f64> = (0..xv.len()).map(|i| num(0, i)).collect();
    let gw_num: Vec<f64> = (0..wv.len()).map(|i| num(1, i)).collect();
    let gb_num: Vec<f64> = (0..bv.len()).map(|i| num(2, i)).collect();
    close(&gx, &gx_num, 1e-3);
    close(&gw, &gw_num, 1e-3);
    close(&gb, &gb_num, 1e-3);
    // The optimizer sees the parameters.
    let mut sgd = Sgd::new(&conv, SgdConfig { lr: 0.1, momentum: None, weight_decay: None });
    let before = conv.weight.as_vec();
    sgd.update(&mut conv, &grads).unwrap();
    assert_ne!(before, conv.weight.as_vec());
}

#[test]
fn pool_gradient_goes_to_the_window_maximum() {
    let dev = Dev::seed_from_u64(4);
    let x: Tensor<(usize, usize, usize, Const<1>), f32, Dev> =
        dev.tensor_from_vec(vec![1., 5., 2., 0., 3., 4., 9., 8., 7.], (1, 3, 3, Const));
    let y = MaxPool2d::<2>.forward(x.leaky_trace());
    assert_eq!(y.as_vec(), vec![5.0]);
    let g = y.sum::<Rank0, _>().backward();
    assert_eq!(g.get(&x).as_vec(), vec![0., 1., 0., 0., 0., 0., 0., 0., 0.]);
}

/// The fused CPU layer against `(Conv2d, ReLU, MaxPool2d)` from dfdx ops (checked against the naive
/// references in `families.rs`): outputs and the gradients of input, kernel and bias of `n` images;
/// then 40 images a row and a column smaller without a tape (inference goes in chunks). Outputs
/// within `tol` (relative, plus `tol` absolute), the input gradient within 1e-4, the kernel and bias
/// gradients within 1e-5 of their largest value.
fn check_fused<const IN: usize, const OUT: usize, const P: usize>(
    seed: u64,
    (h, w): (usize, usize),
    n: usize,
    tol: f64,
) {
    let dev = Dev::seed_from_u64(seed);
    let fused = dev.build_module::<builders::ConvReluPool<IN, OUT, 3, P, 2>, f32>();
    let conv = Conv2d::<IN, OUT, 3, P, 1, f32, Dev> {
        weight: fused.weight.clone(),
        bias: fused.bias.clone(),
        input_is_data: false,
    };
    let reference = |x| pool::reference_pool(conv.reference_forward(x).unwrap().relu(), (2, 2), true).unwrap();
    let reference_traced = |x| pool::reference_pool(conv.reference_forward(x).unwrap().relu(), (2, 2), true).unwrap();
    let f64s = |t: Vec<f32>| t.iter().map(|&v| v as f64).collect::<Vec<_>>();
    let x: Tensor<(usize, usize, usize, Const<IN>), f32, Dev> = dev.sample_normal_like(&(n, h, w, Const));
    let y = fused.forward(x.clone());
    let (ho, wo) = ((h + 2 * P - 2) / 2, (w + 2 * P - 2) / 2);
    assert_eq!(y.shape().concrete(), [n, ho, wo, OUT]);
    close(&y.as_vec(), &f64s(reference(x.clone()).as_vec()), tol);

    // The gradient of `sum(y · r)`. Where a window's two largest values (or its maximum and 0, for
    // ReLU) are within rounding of each other, which one the gradient goes to depends on the last
    // bits of the convolution: there `r` is 0, so both layers' choices give the same gradients.
    let pre = naive_conv_p(&x.as_vec(), (n, h, w, IN), &fused.weight.as_vec(), &fused.bias.as_vec(), 3, P);
    let (hc, wc) = (h + 2 * P - 2, w + 2 * P - 2);
    let mut rv: Vec<f32> = dev.sample_normal_like(&(n, ho, wo, Const::<OUT>)).as_vec();
    for (cell, r) in rv.iter_mut().enumerate() {
        let (o, j, i, b) = (cell % OUT, cell / OUT % wo, cell / OUT / wo % ho, cell / OUT / wo / ho);
        let mut window: Vec<f64> =
            (0..4).map(|k| pre[((b * hc + 2 * i + k / 2) * wc + 2 * j + k % 2) * OUT + o]).collect();
        window.sort_by(|p, q| q.total_cmp(p));
        if window[0] - window[1] < 1e-3 || window[0].abs() < 1e-3 {
            *r = 0.0;
        }
    }
    let r: Tensor<(usize, usize, usize, Const<OUT>), f32, Dev> = dev.tensor_from_vec(rv, (n, ho, wo, Const));
    let g1 = (fused.forward(x.leaky_trace()) * r.clone()).sum::<Rank0, _>().backward();
    let g2 = (reference_traced(x.leaky_trace()) * r.clone()).sum::<Rank0, _>().backward();
    close(&g1.get(&x).as_vec(), &f64s(g2.get(&x).as_vec()), 1e-4);
    close_scaled(&g1.get(&fused.weight).as_vec(), &f64s(g2.get(&fused.weight).as_vec()), 1e-5);
    close_scaled(&g1.get(&fused.bias).as_vec(), &f64s(g2.get(&fused.bias).as_vec()), 1e-5);

    let many: Tensor<(usize, usize, usize, Const<IN>), f32, Dev> = dev.sample_normal_like(&(40, h - 1, w - 1, Const));
    let want = f64s(reference(many.clone()).as_vec());
    close(&fused.forward(many).as_vec(), &want, tol);
}

/// "Same" padding with several input channels: the Winograd kernels, on odd sizes (a dropped row
/// and column, blocks overhanging the image), and on the CNN's second layer with 21 images: groups
/// of 16 and 5, steps of 8, 8 and 5. F(4×4, 3×3) rounds more than a direct sum (its transforms
/// scale by up to 8 and divide by 24): about 2e-5 on values near 1 here, so the bound is 1e-4.
#[test]
fn fused_conv_relu_pool_matches_the_composed_layers_winograd() {
    check_fused::<3, 4, 1>(6, (7, 9), 5, 1e-4);
    check_fused::<32, 64, 1>(11, (14, 14), 21, 1e-4);
}

/// No padding: the im2col kernels.
#[test]
fn fused_conv_relu_pool_matches_the_composed_layers_im2col() {
    check_fused::<2, 3, 0>(9, (8, 9), 5, 1e-5);
}

/// One input channel: the direct kernels, with and without padding, on odd sizes, and on the CNN's
/// first layer with 21 images (channels in blocks of 16 and one at a time).
#[test]
fn fused_conv_relu_pool_matches_the_composed_layers_direct() {
    check_fused::<1, 3, 1>(10, (7, 6), 5, 1e-5);
    check_fused::<1, 5, 0>(12, (9, 8), 3, 1e-5);
    check_fused::<1, 32, 1>(13, (28, 28), 21, 1e-5);
    check_fused::<1, 17, 1>(14, (6, 6), 2, 1e-5);
}

/// True when backward allocated no gradient for `t` (dfdx's `get` panics then).
fn no_gradient<S: Shape>(g: &Gradients<f32, Dev>, t: &Tensor<S, f32, Dev>) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.get(t))).is_err()
}

/// On a network's first layer the input gradient is skipped; the parameter gradients are unchanged.
#[test]
fn input_is_data_skips_only_the_input_gradient() {
    let dev = Dev::seed_from_u64(7);
    let mut fused = dev.build_module::<builders::ConvReluPool<1, 2, 3, 1, 2>, f32>();
    let x: Tensor<(usize, usize, usize, Const<1>), f32, Dev> = dev.sample_normal_like(&(3, 4, 4, Const));
    let g1 = fused.forward(x.leaky_trace()).sum::<Rank0, _>().backward();
    fused.input_is_data = true;
    let g2 = fused.forward(x.leaky_trace()).sum::<Rank0, _>().backward();
    assert_eq!(g1.get(&fused.weight).as_vec(), g2.get(&fused.weight).as_vec());
    assert_eq!(g1.get(&fused.bias).as_vec(), g2.get(&fused.bias).as_vec());
    assert!(g1.get(&x).as_vec().iter().any(|&v| v != 0.0));
    assert!(no_gradient(&g2, &x), "no gradient is computed for the data");
}

/// Our `Linear` against dfdx's (same weights): output and all gradients, with and without
/// `input_is_data`.
#[test]
fn linear_matches_dfdx_linear() {
    let dev = Dev::seed_from_u64(8);
    let mut ours = dev.build_module::<builders::Linear<6, 4>, f32>();
    let mut theirs = dev.build_module::<dfdx::nn::builders::Linear<6, 4>, f32>();
    theirs.weight = ours.weight.clone();
    theirs.bias = ours.bias.clone();
    let x: Tensor<(usize, Const<6>), f32, Dev> = dev.sample_normal_like(&(5, Const));
    let r: Tensor<(usize, Const<4>), f32, Dev> = dev.sample_normal_like(&(5, Const));
    let want: Vec<f64> = theirs.forward(x.clone()).as_vec().iter().map(|&v| v as f64).collect();
    close(&ours.forward(x.clone()).as_vec(), &want, 1e-6);
    let g1 = (ours.forward(x.leaky_trace()) * r.clone()).sum::<Rank0, _>().backward();
    let g2 = (theirs.forward(x.leaky_trace()) * r.clone()).sum::<Rank0, _>().backward();
    for (a, b) in [
        (g1.get(&x).as_vec(), g2.get(&x).as_vec()),
        (g1.get(&ours.weight).as_vec(), g2.get(&theirs.weight).as_vec()),
        (g1.get(&ours.bias).as_vec(), g2.get(&theirs.bias).as_vec()),
    ] {
        close(&a, &b.iter().map(|&v| v as f64).collect::<Vec<_>>(), 1e-5);
    }
    ours.input_is_data = true;
    let g3 = (ours.forward(x.leaky_trace()) * r).sum::<Rank0, _>().backward();
    assert!(no_gradient(&g3, &x));
    assert_eq!(g3.get(&ours.weight).as_vec(), g1.get(&ours.weight).as_vec());
}

#[test]
fn flatten_and_add_channel_shapes() {
    let dev = Dev::default();
    let x: Tensor<(usize, Const<28>, Const<28>), f32, Dev> = dev.zeros_like(&(3, Const, Const));
    let y = AddChannel.forward(x.clone());
    assert_eq!(y.shape().concrete(), [3, 28, 28, 1]);
    let f: Tensor<(usize, Const<784>), f32, Dev> = Flatten::<784>.forward(x);
    assert_eq!(f.shape().concrete(), [3, 784]);
}
