//! Winograd F(2×2, 3×3) convolutions.


use super::matmul::matmul_on;
use super::{simd, Buf};


/// Winograd F(2×2, 3×3) (Lavin & Gray, 2016): a 3×3 convolution with one pixel of zero padding computed
/// per 2×2 block of output pixels from the 4×4 input tile around it, with 16 multiplications per tile
/// and channel pair instead of 36. Inputs and kernel are transformed (`Bᵀ d B`, `G g Gᵀ`), the
/// multiplications become 16 independent matrix products over (tiles × IN) · (IN × OUT), and `Aᵀ m A`
/// turns their results back into pixels. Used for the CNN's second convolution forward and for its
/// input gradient (itself a 3×3 convolution, with the kernel turned by 180° and IN/OUT swapped).
pub(crate) fn winograd_kernel(kernel: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    const G: [[f32; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
    let mut u = vec![0f32; 16 * cin * cout];
    for ci in 0..cin {
        for co in 0..cout {
            let g = |a: usize, b: usize| kernel[((a * 3 + b) * cin + ci) * cout + co];
            for r in 0..4 {
                for c in 0..4 {
                    let mut acc = 0f32;
                    for a in 0..3 {
                        for b in 0..3 {
                            acc += G[r][a] * g(a, b) * G[c][b];
                        }
                    }
                    u[((r * 4 + c) * cin + ci) * cout + co] = acc;
                }
            }
        }
    }
    u
}

/// The kernel of the input gradient: `(3, 3, IN, OUT)` → `(3, 3, OUT, IN)`, turned by 180°.
pub(crate) fn flip_kernel(kernel: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    let mut f = vec![0f32; 9 * cin * cout];
    for a in 0..3 {
        for b in 0..3 {
            for ci in 0..cin {
                for co in 0..cout {
                    f[(((2 - a) * 3 + (2 - b)) * cout + co) * cin + ci] = kernel[((a * 3 + b) * cin + ci) * cout + co];
                }
            }
        }
    }
    f
}

/// `out (m, H, W, OUT) [+]= conv3×3(x (m, H, W, IN))` with one pixel of zero padding, by Winograd
/// F(2×2, 3×3); `u` comes from [`winograd_kernel`]. Runs on the calling thread.
#[allow(clippy::too_many_arguments)]
pub(crate) fn winograd_conv(h: usize, w: usize, cin: usize, cout: usize, m: usize, x: &[f32], u: &[f32], out: &mut [f32], accumulate: bool) {
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    let tiles = m * th * tw;
    if tiles == 0 || cout == 0 {
        return;
    }
    let mut v = Buf::dirty(16 * tiles * cin);
    let mut mm = Buf::dirty(16 * tiles * cout);
    let zero = vec![0f32; cin];
    simd(#[inline(always)] || {
        let mut planes = v.chunks_exact_mut(tiles * cin);
        let mut planes: [&mut [f32]; 16] = std::array::from_fn(|_| planes.next().unwrap());
        for img in 0..m {
            let xi = &x[img * h * w * cin..][..h * w * cin];
            for ty in 0..th {
                for tx in 0..tw {
                    let t = (img * th + ty) * tw + tx;
                    let px = |r: usize, c: usize| -> &[f32] {
                        let (y, x) = ((2 * ty + r).wrapping_sub(1), (2 * tx + c).wrapping_sub(1));
                        if y < h && x < w {
                            &xi[(y * w + x) * cin..][..cin]
                        } else {
                            &zero
                        }
                    };
                    let mut d: [[&[f32]; 4]; 4] = [[&zero[..]; 4]; 4];
                    for (r, row) in d.iter_mut().enumerate() {
                        for (c, v) in row.iter_mut().enumerate() {
                            *v = px(r, c);
                        }
                    }
                    let full = cin / 8 * 8;
                    for cb in (0..full).step_by(8) {
                        winograd_in::<8>(&d, cb, &mut planes, t * cin + cb);
                    }
                    for cb in full..cin {
                        winograd_in::<1>(&d, cb, &mut planes, t * cin + cb);
                    }
                }
            }
        }
    });
    for xi in 0..16 {
        let (a, b) = (&v[xi * tiles * cin..][..tiles * cin], &u[xi * cin * cout..][..cin * cout]);
        matmul_on(false, tiles, cin, cout, a, false, b, false, &mut mm[xi * tiles * cout..][..tiles * cout], false);
    }
    simd(#[inline(always)] || {
        let mut planes: [&[f32]; 16] = [&[]; 16];
        for (k, p) in planes.iter_mut().enumerate() {
            *p = &mm[k * tiles * cout..][..tiles * cout];
        }
        for img in 0..m {
            let oi = &mut out[img * h * w * cout..][..h * w * cout];
            for ty in 0..th {
                for tx in 0..tw {
                    let t = (img * th + ty) * tw + tx;
                    let full = cout / 8 * 8;
                    for cb in (0..full).step_by(8) {
                        winograd_out::<8>(&planes, t * cout + cb, cb, oi, (ty, tx), (h, w, cout), accumulate);
                    }
                    for cb in full..cout {
                        winograd_out::<1>(&planes, t * cout + cb, cb, oi, (ty, tx), (h, w, cout), accumulate);
                    }
                }
            }
        }
    });
}

/// `L` channels from `cb` of one input tile: `Bᵀ d B`, written at `at` of the 16 planes.
/// (Plain loops over fixed-size arrays: they stay in registers and vectorise.)
#[inline(always)]
fn winograd_in<const L: usize>(src: &[[&[f32]; 4]; 4], cb: usize, planes: &mut [&mut [f32]; 16], at: usize) {
    let mut d = [[[0f32; L]; 4]; 4];
    for r in 0..4 {
        for c in 0..4 {
            d[r][c].copy_from_slice(&src[r][c][cb..cb + L]);
        }
    }
    // Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]] on the rows, then B on the columns.
    let mut t = [[[0f32; L]; 4]; 4];
    for c in 0..4 {
        for i in 0..L {
            t[0][c][i] = d[0][c][i] - d[2][c][i];
            t[1][c][i] = d[1][c][i] + d[2][c][i];
            t[2][c][i] = d[2][c][i] - d[1][c][i];
            t[3][c][i] = d[1][c][i] - d[3][c][i];
        }
    }
    for (r, t) in t.iter().enumerate() {
        let mut v = [[0f32; L]; 4];
        for i in 0..L {
            v[0][i] = t[0][i] - t[2][i];
            v[1][i] = t[1][i] + t[2][i];
            v[2][i] = t[2][i] - t[1][i];
            v[3][i] = t[1][i] - t[3][i];
        }
        for (c, v) in v.iter().enumerate() {
            planes[r * 4 + c][at..at + L].copy_from_slice(v);
        }
    }
}

/// `L` channels from `cb` of one output tile (at `at` of the 16 planes): `Aᵀ m A` with
/// `Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]`, written (or added) to the tile's pixels inside the image.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn winograd_out<const L: usize>(planes: &[&[f32]; 16], at: usize, cb: usize, out: &mut [f32], (ty, tx): (usize, usize), (h, w, cout): (usize, usize, usize), accumulate: bool) {
    let mut m = [[0f32; L]; 16];
    for (k, m) in m.iter_mut().enumerate() {
        m.copy_from_slice(&planes[k][at..at + L]);
    }
    let (mut s0, mut s1) = ([[0f32; L]; 4], [[0f32; L]; 4]);
    for c in 0..4 {
        for i in 0..L {
            s0[c][i] = m[c][i] + m[4 + c][i] + m[8 + c][i];
            s1[c][i] = m[4 + c][i] - m[8 + c][i] - m[12 + c][i];
        }
    }
    let mut y = [[[0f32; L]; 2]; 2];
    for (a, s) in [s0, s1].iter().enumerate() {
        for i in 0..L {
            y[a][0][i] = s[0][i] + s[1][i] + s[2][i];
            y[a][1][i] = s[1][i] - s[2][i] - s[3][i];
        }
    }
    for (a, row) in y.iter().enumerate() {
        for (b, v) in row.iter().enumerate() {
            let (yy, xx) = (2 * ty + a, 2 * tx + b);
            if yy >= h || xx >= w {
                continue;
            }
            let dst = &mut out[(yy * w + xx) * cout + cb..][..L];
            for i in 0..L {
                dst[i] = if accumulate { dst[i] + v[i] } else { v[i] };
            }
        }
    }
}
