//! Tests of `conv.rs`: im2col's adjoint, the plain convolution against naive loops, and per-part timings
//! (ignored: a profiling aid).

mod adjoint {
    use super::super::*;
    use crate::seq;

    /// col2im is the adjoint of im2col: ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩, with and without padding.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        for (h, w, cin, p) in [(5, 4, 3, 1), (6, 6, 1, 0), (3, 7, 2, 1)] {
            let g = ConvGeom { h, w, cin, cout: 1, k: 3, p, s: 1, pool: 1 };
            let x = seq(g.in_len(), 4);
            let c = seq(g.pixels() * g.patch(), 5);
            let mut cols = vec![0f32; c.len()];
            im2col(&g, &x, &mut cols);
            let mut back = vec![0f32; x.len()];
            col2im_add(&g, &c, &mut back);
            let lhs: f64 = cols.iter().zip(&c).map(|(a, b)| *a as f64 * *b as f64).sum();
            let rhs: f64 = x.iter().zip(&back).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!((lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()), "{lhs} vs {rhs}");
        }
    }
}

mod plain {
    use super::super::*;
    use crate::seq;

    /// The convolution one value at a time: `(B, H, W, IN)` ⊛ `(K, K, IN, OUT)` + bias.
    fn naive(g: &ConvGeom, b: usize, x: &[f32], kernel: &[f32], bias: &[f32]) -> Vec<f32> {
        let (ho, wo) = g.conv_hw();
        let mut y = Vec::new();
        for n in 0..b {
            for i in 0..ho {
                for j in 0..wo {
                    for o in 0..g.cout {
                        let mut acc = bias[o] as f64;
                        for di in 0..g.k {
                            for dj in 0..g.k {
                                let (r, c) = ((i * g.s + di).wrapping_sub(g.p), (j * g.s + dj).wrapping_sub(g.p));
                                if r >= g.h || c >= g.w {
                                    continue;
                                }
                                for ci in 0..g.cin {
                                    let xv = x[n * g.in_len() + (r * g.w + c) * g.cin + ci];
                                    acc += xv as f64 * kernel[((di * g.k + dj) * g.cin + ci) * g.cout + o] as f64;
                                }
                            }
                        }
                        y.push(acc as f32);
                    }
                }
            }
        }
        y
    }

    /// Stride 2, LeNet's 5×5, a 1×1 projection and the Winograd case, against the naive loops; the
    /// gradients against the adjoint identities ⟨conv(x), g⟩ = ⟨x, ∂x⟩ = ⟨kernel, ∂kernel⟩ (the
    /// convolution is linear in each).
    #[test]
    fn plain_convolution_matches_naive_loops_and_its_gradients_are_adjoints() {
        for g in [
            ConvGeom { h: 9, w: 8, cin: 3, cout: 5, k: 3, p: 1, s: 2, pool: 1 },
            ConvGeom { h: 12, w: 12, cin: 1, cout: 6, k: 5, p: 2, s: 1, pool: 1 },
            ConvGeom { h: 7, w: 7, cin: 4, cout: 8, k: 1, p: 0, s: 2, pool: 1 },
            ConvGeom { h: 10, w: 9, cin: 3, cout: 4, k: 3, p: 1, s: 1, pool: 1 },
            // One channel, 3×3, stride 1: the direct path, a block of 16 channels and the rest.
            ConvGeom { h: 9, w: 11, cin: 1, cout: 19, k: 3, p: 1, s: 1, pool: 1 },
            ConvGeom { h: 8, w: 7, cin: 1, cout: 3, k: 3, p: 0, s: 1, pool: 1 },
        ] {
            let b = 19; // more than one group
            let x = seq(b * g.in_len(), 1);
            let kernel = seq(g.patch() * g.cout, 2);
            let bias = seq(g.cout, 3);
            let (y, saved) = conv_forward(&g, b, &x, (&kernel, &bias), Pass::Train);
            let want = naive(&g, b, &x, &kernel, &bias);
            assert_eq!(y.len(), want.len());
            for (a, w) in y.iter().zip(&want) {
                assert!((a - w).abs() < 1e-4, "{g:?}: {a} vs {w}");
            }
            let (infer, _) = conv_forward(&g, b, &x, (&kernel, &bias), Pass::Infer);
            assert_eq!(infer, y);
            let gout = seq(y.len(), 4);
            let (mut gk, mut gb, mut gx) = (vec![0f32; kernel.len()], vec![0f32; g.cout], vec![0f32; x.len()]);
            let grads = ConvGrads { kernel: &mut gk, bias: &mut gb, input: Some(&mut gx) };
            conv_relu_pool_backward(&g, &saved.unwrap(), &gout, (&kernel, &bias), grads);
            let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>();
            let without_bias = naive(&g, b, &x, &kernel, &vec![0.0; g.cout]);
            let lhs = dot(&without_bias, &gout);
            assert!((lhs - dot(&x, &gx)).abs() < 1e-3 * (1.0 + lhs.abs()), "{g:?} input gradient");
            assert!((lhs - dot(&kernel, &gk)).abs() < 1e-3 * (1.0 + lhs.abs()), "{g:?} kernel gradient");
            for (o, got) in gb.iter().enumerate() {
                let want: f32 = gout.iter().skip(o).step_by(g.cout).sum();
                assert!((got - want).abs() < 1e-3);
            }
        }
    }
}

mod recycled {
    use super::super::*;
    use crate::seq;

    /// Outputs go into recycled buffers that still hold their last values: every path of the forward
    /// pass (direct, Winograd, im2col; plain and fused; odd sizes) must overwrite all of them. Buffers
    /// of NaN handed back first would show any value left unwritten.
    #[test]
    fn forward_overwrites_every_value_of_a_recycled_buffer() {
        for g in [
            ConvGeom { h: 9, w: 11, cin: 1, cout: 19, k: 3, p: 1, s: 1, pool: 1 },
            ConvGeom { h: 9, w: 11, cin: 1, cout: 19, k: 3, p: 1, s: 1, pool: 2 },
            ConvGeom { h: 10, w: 9, cin: 3, cout: 4, k: 3, p: 1, s: 1, pool: 1 },
            ConvGeom { h: 11, w: 9, cin: 3, cout: 4, k: 3, p: 1, s: 1, pool: 2 },
            ConvGeom { h: 9, w: 8, cin: 3, cout: 5, k: 3, p: 1, s: 2, pool: 1 },
            ConvGeom { h: 12, w: 12, cin: 2, cout: 6, k: 5, p: 0, s: 1, pool: 3 },
        ] {
            let b = 19;
            let x = seq(b * g.in_len(), 1);
            let (kernel, bias) = (seq(g.patch() * g.cout, 2), seq(g.cout, 3));
            let forward = if g.pool == 1 { conv_forward } else { conv_relu_pool_forward };
            for pass in [Pass::Train, Pass::Infer] {
                let (fresh, _) = forward(&g, b, &x, (&kernel, &bias), pass);
                for _ in 0..4 {
                    crate::recycle(vec![f32::NAN; fresh.len()]);
                }
                let (again, _) = forward(&g, b, &x, (&kernel, &bias), pass);
                assert!(again.iter().all(|v| v.is_finite()), "{g:?}: a value left unwritten");
                assert_eq!(fresh, again, "{g:?}");
            }
        }
    }
}

mod timing {
    use super::super::*;
    use crate::seq;
    use std::time::Instant;

    fn time(name: &str, reps: usize, mut f: impl FnMut()) {
        f();
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        eprintln!("{name:<40} {:>9.1} µs", t.elapsed().as_secs_f64() * 1e6 / reps as f64);
    }

    /// A profiling aid, not a check: per-part times of the CNN's two blocks for a batch of 64 on one
    /// thread, and of Adam on its largest tensor:
    /// `cargo test --release -p fashion-kernels timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn cnn_block_timings() {
        let n = 3136 * 128;
        let (mut p, mut gr, mut m, mut v) = (seq(n, 1), seq(n, 2), seq(n, 3), seq(n, 4));
        const STEP: crate::optim::AdamStep = crate::optim::AdamStep { t: 3, lr: 1e-3, betas: (0.9, 0.999), eps: 1e-7 };
        time("adam 3136×128 (2 threads)", 50, || crate::optim::adam(&STEP, &mut p, &mut gr, &mut m, &mut v));
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        pool.install(|| {
            time("adam 3136×128 (1 thread)", 50, || crate::optim::adam(&STEP, &mut p, &mut gr, &mut m, &mut v))
        });
        pool.install(|| {
            for g in [
                ConvGeom { h: 28, w: 28, cin: 1, cout: 32, k: 3, p: 1, s: 1, pool: 2 },
                ConvGeom { h: 14, w: 14, cin: 32, cout: 64, k: 3, p: 1, s: 1, pool: 2 },
            ] {
                let b = 64;
                let x = seq(b * g.in_len(), 1);
                let kernel = seq(g.patch() * g.cout, 2);
                let bias = seq(g.cout, 3);
                let gout = seq(b * g.out_len(), 4);
                eprintln!("{g:?}");
                time("forward (inference)", 20, || {
                    drop(conv_relu_pool_forward(&g, b, &x, (&kernel, &bias), Pass::Infer))
                });
                time("forward (train)", 20, || drop(conv_relu_pool_forward(&g, b, &x, (&kernel, &bias), Pass::Train)));
                let (_, saved) = conv_relu_pool_forward(&g, b, &x, (&kernel, &bias), Pass::Train);
                let saved = saved.unwrap();
                let (mut gk, mut gb, mut gx) = (vec![0f32; kernel.len()], vec![0f32; g.cout], vec![0f32; x.len()]);
                time("backward, no input gradient", 20, || {
                    conv_relu_pool_backward(
                        &g,
                        &saved,
                        &gout,
                        (&kernel, &bias),
                        ConvGrads { kernel: &mut gk, bias: &mut gb, input: None },
                    )
                });
                time("backward", 20, || {
                    conv_relu_pool_backward(
                        &g,
                        &saved,
                        &gout,
                        (&kernel, &bias),
                        ConvGrads { kernel: &mut gk, bias: &mut gb, input: Some(&mut gx) },
                    )
                });
                let pre = seq(g.pixels() * g.cout, 5);
                let mut o = vec![0f32; g.out_len()];
                let mut gp = vec![0f32; g.pixels() * g.cout];
                time("  pool forward ×64", 20, || (0..b).for_each(|_| relu_max_pool(&g, &pre, &bias, &mut o)));
                time("  pool backward ×64", 20, || {
                    (0..b).for_each(|_| relu_max_pool_backward(&g, &pre, &bias, &o, &mut gp))
                });
                if winograd_applies(&g) {
                    let tl = Tiling::new(g.h, g.w);
                    let t = tl.per_image() * 8;
                    let (vs, ds) = (plane_stride(t * g.cin), plane_stride(t * g.cout));
                    let mut v = vec![0f32; PLANES * vs];
                    let mut d = vec![0f32; PLANES * ds];
                    let u = transform_kernel(&kernel, g.cin, g.cout);
                    time("  transform_kernel", 20, || drop(transform_kernel(&kernel, g.cin, g.cout)));
                    let mut acc = vec![0f32; u.len()];
                    time("  add_kernel_gradient", 20, || winograd::add_kernel_gradient(&u, g.cin, g.cout, &mut acc));
                    time("  transform_input ×8", 20, || {
                        (0..8).for_each(|_| winograd::transform_input(tl, g.cin, 8, &x, &mut v, vs))
                    });
                    time("  transform_grad ×8", 20, || {
                        (0..8).for_each(|_| winograd::transform_grad(tl, g.cout, 8, &x, &mut d, ds))
                    });
                    time("  transform_output ×8", 20, || {
                        (0..8).for_each(|_| {
                            winograd::transform_output(
                                tl,
                                g.cout,
                                8,
                                Planes { values: &d, stride: ds },
                                &mut gx,
                                Store::Overwrite,
                            )
                        })
                    });
                    time("  36 products ×8", 20, || {
                        (0..8).for_each(|_| {
                            for p in 0..PLANES {
                                matmul_serial(
                                    (t, g.cin, g.cout),
                                    Mat::Plain(&v[p * vs..][..t * g.cin]),
                                    Mat::Plain(&u[p * g.cin * g.cout..][..g.cin * g.cout]),
                                    &mut d[p * ds..][..t * g.cout],
                                    Store::Overwrite,
                                );
                            }
                        })
                    });
                }
            }
        });
    }
}
