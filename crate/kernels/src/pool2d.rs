//! Pooling as layers of their own, on NHWC images: `K×K` max- and average-pooling with stride `S`
//! (Keras' `padding="valid"`: windows that do not fit are dropped), and global average pooling. One
//! image per task; every image's result depends on that image alone, so any thread count gives the
//! same bytes.

use rayon::prelude::*;

use super::simd;

/// `K×K` windows every `S` pixels over `(H, W, C)` images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeom {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub k: usize,
    pub s: usize,
}

impl PoolGeom {
    /// Output height and width: `(H - K) / S + 1`, 0 when the window is larger than the image.
    pub fn out_hw(&self) -> (usize, usize) {
        let o = |n: usize| if n < self.k || self.s == 0 { 0 } else { (n - self.k) / self.s + 1 };
        (o(self.h), o(self.w))
    }
    pub fn in_len(&self) -> usize {
        self.h * self.w * self.c
    }
    pub fn out_len(&self) -> usize {
        let (ho, wo) = self.out_hw();
        ho * wo * self.c
    }
}

/// Where each max-pooled value came from, for backward.
pub enum Argmax {
    /// Windows that tile the image (`S == K`, at most 255 positions): the position in its window.
    Window(Vec<u8>),
    /// Any stride: the index in its image of the (first) maximum.
    Index(Vec<u32>),
}

/// Max-pooling of `x` `(B, H, W, C)`: the output `(B, H', W', C)` and where each maximum was (the
/// first one of its window), which backward sends the gradient to.
pub fn max_pool_forward(g: &PoolGeom, x: &[f32]) -> (Vec<f32>, Argmax) {
    let (il, ol) = (g.in_len(), g.out_len());
    let n = x.len().checked_div(il).unwrap_or(0);
    let mut y = vec![0f32; n * ol];
    if g.s == g.k && g.k * g.k <= 255 {
        let mut arg = vec![0u8; n * ol];
        if ol > 0 {
            y.par_chunks_mut(ol)
                .zip(arg.par_chunks_mut(ol))
                .zip(x.par_chunks(il))
                .for_each(|((y, arg), x)| tiled_forward(g, x, y, arg));
        }
        return (y, Argmax::Window(arg));
    }
    let mut arg = vec![0u32; n * ol];
    if ol == 0 {
        return (y, Argmax::Index(arg));
    }
    y.par_chunks_mut(ol).zip(arg.par_chunks_mut(ol)).zip(x.par_chunks(il)).for_each(|((y, arg), x)| {
        simd(
            #[inline(always)]
            || {
                let (ho, wo) = g.out_hw();
                for i in 0..ho {
                    for j in 0..wo {
                        let o = (i * wo + j) * g.c;
                        let first = (i * g.s * g.w + j * g.s) * g.c;
                        y[o..o + g.c].copy_from_slice(&x[first..first + g.c]);
                        for (a, at) in arg[o..o + g.c].iter_mut().zip(first..) {
                            *a = at as u32;
                        }
                        for di in 0..g.k {
                            for dj in 0..g.k {
                                let at = ((i * g.s + di) * g.w + j * g.s + dj) * g.c;
                                for ch in 0..g.c {
                                    let v = x[at + ch];
                                    if v > y[o + ch] {
                                        y[o + ch] = v;
                                        arg[o + ch] = (at + ch) as u32;
                                    }
                                }
                            }
                        }
                    }
                }
            },
        )
    });
    (y, Argmax::Index(arg))
}

/// Tiling windows of one image (`S == K`): for each window, its output offset and, for each of its
/// positions `p` (row-major), `p` and its input offset; the loop of the tiled max-pool's forward and
/// backward.
#[inline(always)]
fn for_each_window_position(g: &PoolGeom, mut f: impl FnMut(usize, usize, usize)) {
    let (ho, wo) = g.out_hw();
    for i in 0..ho {
        for j in 0..wo {
            for p in 0..g.k * g.k {
                let (di, dj) = (p / g.k, p % g.k);
                f((i * wo + j) * g.c, p, ((i * g.k + di) * g.w + j * g.k + dj) * g.c);
            }
        }
    }
}

/// Tiling windows of one image: the maximum of each window and its position, a row of channels at a
/// time (branch-free, so it vectorises).
fn tiled_forward(g: &PoolGeom, x: &[f32], y: &mut [f32], arg: &mut [u8]) {
    let c = g.c;
    simd(
        #[inline(always)]
        || {
            for_each_window_position(g, |o, p, at| {
                let (best, pos, row) = (&mut y[o..o + c], &mut arg[o..o + c], &x[at..][..c]);
                if p == 0 {
                    best.copy_from_slice(row);
                    pos.fill(0);
                    return;
                }
                for ((b, q), &v) in best.iter_mut().zip(pos.iter_mut()).zip(row) {
                    let more = v > *b;
                    *b = if more { v } else { *b };
                    *q = if more { p as u8 } else { *q };
                }
            })
        },
    )
}

/// `grad_x += ` each output gradient at its window's maximum.
pub fn max_pool_backward(g: &PoolGeom, arg: &Argmax, grad_out: &[f32], grad_x: &mut [f32]) {
    let (il, ol) = (g.in_len(), g.out_len());
    if ol == 0 {
        return;
    }
    match arg {
        Argmax::Index(arg) => grad_x.par_chunks_mut(il).zip(grad_out.par_chunks(ol)).zip(arg.par_chunks(ol)).for_each(
            |((gx, go), arg)| {
                for (&a, &v) in arg.iter().zip(go) {
                    gx[a as usize] += v;
                }
            },
        ),
        // Each input value is in one window: the gradient goes where its window's position is the
        // maximum's, chosen lane by lane without branches (so it vectorises).
        Argmax::Window(arg) => grad_x.par_chunks_mut(il).zip(grad_out.par_chunks(ol)).zip(arg.par_chunks(ol)).for_each(
            |((gx, go), arg)| {
                let c = g.c;
                simd(
                    #[inline(always)]
                    || {
                        for_each_window_position(g, |o, p, at| {
                            let (row, pos, go) = (&mut gx[at..][..c], &arg[o..o + c], &go[o..o + c]);
                            for ((d, &q), &v) in row.iter_mut().zip(pos).zip(go) {
                                *d = if q as usize == p { *d + v } else { *d };
                            }
                        })
                    },
                )
            },
        ),
    }
}

/// Average-pooling of `x` `(B, H, W, C)` into `(B, H', W', C)`.
pub fn avg_pool_forward(g: &PoolGeom, x: &[f32]) -> Vec<f32> {
    let (il, ol) = (g.in_len(), g.out_len());
    let n = x.len().checked_div(il).unwrap_or(0);
    let mut y = vec![0f32; n * ol];
    if ol == 0 {
        return y;
    }
    let scale = 1.0 / (g.k * g.k) as f32;
    y.par_chunks_mut(ol).zip(x.par_chunks(il)).for_each(|(y, x)| {
        simd(
            #[inline(always)]
            || {
                let (ho, wo) = g.out_hw();
                for i in 0..ho {
                    for j in 0..wo {
                        let out = &mut y[(i * wo + j) * g.c..][..g.c];
                        for di in 0..g.k {
                            for dj in 0..g.k {
                                let src = &x[((i * g.s + di) * g.w + j * g.s + dj) * g.c..][..g.c];
                                out.iter_mut().zip(src).for_each(|(o, &v)| *o += v);
                            }
                        }
                        out.iter_mut().for_each(|o| *o *= scale);
                    }
                }
            },
        )
    });
    y
}

/// `grad_x += ` each output gradient spread evenly over its window.
pub fn avg_pool_backward(g: &PoolGeom, grad_out: &[f32], grad_x: &mut [f32]) {
    let (il, ol) = (g.in_len(), g.out_len());
    if ol == 0 {
        return;
    }
    let scale = 1.0 / (g.k * g.k) as f32;
    grad_x.par_chunks_mut(il).zip(grad_out.par_chunks(ol)).for_each(|(gx, go)| {
        simd(
            #[inline(always)]
            || {
                let (ho, wo) = g.out_hw();
                for i in 0..ho {
                    for j in 0..wo {
                        let src = &go[(i * wo + j) * g.c..][..g.c];
                        for di in 0..g.k {
                            for dj in 0..g.k {
                                let dst = &mut gx[((i * g.s + di) * g.w + j * g.s + dj) * g.c..][..g.c];
                                dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v * scale);
                            }
                        }
                    }
                }
            },
        )
    });
}

/// Global average pooling: `(B, P, C)` (P pixels per image) → `(B, C)`, the mean of each channel.
pub fn global_avg_forward(pixels: usize, c: usize, x: &[f32]) -> Vec<f32> {
    let n = x.len().checked_div(pixels * c).unwrap_or(0);
    let mut y = vec![0f32; n * c];
    if c == 0 || pixels == 0 {
        return y;
    }
    let scale = 1.0 / pixels as f32;
    y.par_chunks_mut(c).zip(x.par_chunks(pixels * c)).for_each(|(y, x)| {
        for p in x.chunks_exact(c) {
            y.iter_mut().zip(p).for_each(|(o, &v)| *o += v);
        }
        y.iter_mut().for_each(|o| *o *= scale);
    });
    y
}

/// `grad_x += grad_out / P` at every pixel.
pub fn global_avg_backward(pixels: usize, c: usize, grad_out: &[f32], grad_x: &mut [f32]) {
    if c == 0 || pixels == 0 {
        return;
    }
    let scale = 1.0 / pixels as f32;
    grad_x.par_chunks_mut(pixels * c).zip(grad_out.par_chunks(c)).for_each(|(gx, go)| {
        for p in gx.chunks_exact_mut(c) {
            p.iter_mut().zip(go).for_each(|(d, &v)| *d += v * scale);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq;

    /// Naive references, one value at a time.
    fn naive(g: &PoolGeom, x: &[f32], max: bool) -> Vec<f32> {
        let (ho, wo) = g.out_hw();
        let n = x.len() / g.in_len();
        let mut y = Vec::new();
        for b in 0..n {
            for i in 0..ho {
                for j in 0..wo {
                    for ch in 0..g.c {
                        let vals = (0..g.k * g.k).map(|d| {
                            let (r, c) = (i * g.s + d / g.k, j * g.s + d % g.k);
                            x[b * g.in_len() + (r * g.w + c) * g.c + ch]
                        });
                        y.push(if max {
                            vals.fold(f32::MIN, f32::max)
                        } else {
                            vals.sum::<f32>() / (g.k * g.k) as f32
                        });
                    }
                }
            }
        }
        y
    }

    #[test]
    fn pools_match_naive_references_with_any_stride() {
        for g in [
            PoolGeom { h: 7, w: 7, c: 3, k: 3, s: 2 },
            PoolGeom { h: 8, w: 6, c: 2, k: 2, s: 2 },
            PoolGeom { h: 5, w: 5, c: 1, k: 2, s: 1 },
        ] {
            let x = seq(2 * g.in_len(), 9);
            let (y, arg) = max_pool_forward(&g, &x);
            assert_eq!(y, naive(&g, &x, true), "{g:?}");
            assert_eq!(matches!(arg, Argmax::Window(_)), g.s == g.k);
            let avg = avg_pool_forward(&g, &x);
            for (a, b) in avg.iter().zip(naive(&g, &x, false)) {
                assert!((a - b).abs() < 1e-6);
            }
            // Backward is the adjoint: ⟨pool(x)', g⟩ sums the gradient into the chosen inputs.
            let go = seq(y.len(), 3);
            let mut gx = vec![0f32; x.len()];
            max_pool_backward(&g, &arg, &go, &mut gx);
            let total: f32 = gx.iter().sum();
            assert!((total - go.iter().sum::<f32>()).abs() < 1e-4);
            let mut ga = vec![0f32; x.len()];
            avg_pool_backward(&g, &go, &mut ga);
            let lhs: f64 = avg.iter().zip(&go).map(|(a, b)| (a * b) as f64).sum();
            let rhs: f64 = x.iter().zip(&ga).map(|(a, b)| (a * b) as f64).sum();
            assert!((lhs - rhs).abs() < 1e-4, "avg backward is the adjoint of forward");
        }
    }

    #[test]
    fn global_average_is_the_channel_mean() {
        let x = seq(2 * 6 * 3, 4);
        let y = global_avg_forward(6, 3, &x);
        for b in 0..2 {
            for ch in 0..3 {
                let want: f32 = (0..6).map(|p| x[b * 18 + p * 3 + ch]).sum::<f32>() / 6.0;
                assert!((y[b * 3 + ch] - want).abs() < 1e-6);
            }
        }
        let mut gx = vec![0f32; x.len()];
        global_avg_backward(6, 3, &[6.0; 6], &mut gx);
        assert!(gx.iter().all(|&v| (v - 1.0).abs() < 1e-6));
    }
}
