//! Winograd F(4×4, 3×3) convolutions (Lavin & Gray, 2016): forward, input gradient and kernel gradient
//! of a 3×3 convolution with one pixel of zero padding over several channels, on NHWC images.
//!
//! Each 4×4 block of output pixels is computed from the 6×6 input tile around it with 36
//! multiplications per tile and channel pair instead of 144. The input tiles and the kernel are
//! transformed (`Bᵀ d B`, `G g Gᵀ`); the multiplications become 36 independent matrix products
//! `(tiles × IN) · (IN × OUT)`, one per position of the 6×6 transformed tile (a "plane"); `Aᵀ m A`
//! turns their results back into pixels. The input gradient is the same convolution with the kernel
//! turned by 180° and IN/OUT swapped. The kernel gradient is the adjoint of the forward pass:
//! `Gᵀ [Σ_tiles (Bᵀ d B) ⊙ (A δ Aᵀ)] G`, again 36 matrix products `(IN × tiles) · (tiles × OUT)`, which
//! reuse the input planes of the forward pass.
//!
//! For the CNN's 14×14×32 → 14×14×64 layer this is 1.18 M multiply-adds per image and direction, against
//! 3.6 M for a direct convolution and 1.6 M for F(2×2, 3×3) (the 4×4 blocks overhang the 14×14 image:
//! 16 tiles cover 16×16 pixels).
//!
//! Plane layout: plane `p` of a set of tiles starts at `p · stride` and holds one row of channels per
//! tile, so a chunk of tiles of every plane is a row-major matrix the products read directly. The
//! stride comes from [`plane_stride`].

use super::matmul::{matmul_serial, Mat, Store};
use super::{simd, Buf};

/// Positions of a transformed 6×6 tile, each one matrix product.
pub(crate) const PLANES: usize = 36;

/// The 4×4 output blocks of an `h × w` image ("same" padding: the output is `h × w` too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tiling {
    pub h: usize,
    pub w: usize,
    th: usize,
    tw: usize,
}

impl Tiling {
    pub fn new(h: usize, w: usize) -> Tiling {
        Tiling { h, w, th: h.div_ceil(4), tw: w.div_ceil(4) }
    }
    /// Tiles per image.
    pub fn per_image(&self) -> usize {
        self.th * self.tw
    }
}

/// The distance between planes of `values` values each: at least `values`, and one cache line past a
/// multiple of 4 KiB. A transform writes (or reads) the 36 planes of a tile at once; with planes a
/// multiple of 4 KiB apart, as 128 tiles of 32 or 64 channels are, all 36 fall in the same set of the
/// level-1 cache, which holds 8 or 12 (measured: the gradient transform took 2.3× as long).
pub(crate) fn plane_stride(values: usize) -> usize {
    values.div_ceil(1024) * 1024 + 16
}

/// `G` (6×3): the kernel transform, `U = G g Gᵀ`.
const G: [[f32; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// `Gᵀ` (3×6): the kernel gradient's transform, `Gᵀ M G`.
const GT: [[f32; 6]; 3] = {
    let mut t = [[0f32; 6]; 3];
    let mut r = 0;
    while r < 6 {
        let mut a = 0;
        while a < 3 {
            t[a][r] = G[r][a];
            a += 1;
        }
        r += 1;
    }
    t
};

/// The transformed kernel `(36, IN, OUT)` of a kernel `(3, 3, IN, OUT)`: `G g Gᵀ` for every channel
/// pair.
pub(crate) fn transform_kernel(kernel: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    let mut u = vec![0f32; PLANES * cin * cout];
    add_sandwich(&G, kernel, cin, cout, &mut u);
    u
}

/// Adds `Gᵀ M G` of the planes `m` `(36, IN, OUT)` (sums of `(Bᵀ d B) ⊙ (A δ Aᵀ)`) to the kernel
/// gradient `(3, 3, IN, OUT)`: the adjoint of [`transform_kernel`].
pub(crate) fn add_kernel_gradient(m: &[f32], cin: usize, cout: usize, grad_kernel: &mut [f32]) {
    add_sandwich(&GT, m, cin, cout, grad_kernel);
}

/// `dst += T src Tᵀ` for every channel pair: `src` holds `I×I` positions and `dst` `O×O`, each an
/// `(IN, OUT)` matrix. Rows then columns, over all OUT channels at once (vectorised).
// The loops index the transform matrix and the tiles by the same letters as the formula.
#[allow(clippy::needless_range_loop)]
fn add_sandwich<const I: usize, const O: usize>(
    t: &[[f32; I]; O],
    src: &[f32],
    cin: usize,
    cout: usize,
    dst: &mut [f32],
) {
    let mut rows = vec![0f32; O * I * cout]; // T src: (O, I, OUT)
    simd(
        #[inline(always)]
        || {
            for ci in 0..cin {
                let s = |a: usize, b: usize| &src[((a * I + b) * cin + ci) * cout..][..cout];
                rows.fill(0.0);
                for r in 0..O {
                    for b in 0..I {
                        let d = &mut rows[(r * I + b) * cout..][..cout];
                        for a in 0..I {
                            let f = t[r][a];
                            for (d, s) in d.iter_mut().zip(s(a, b)) {
                                *d += f * s;
                            }
                        }
                    }
                }
                for r in 0..O {
                    for c in 0..O {
                        let d = &mut dst[((r * O + c) * cin + ci) * cout..][..cout];
                        for b in 0..I {
                            let f = t[c][b];
                            for (d, s) in d.iter_mut().zip(&rows[(r * I + b) * cout..][..cout]) {
                                *d += s * f;
                            }
                        }
                    }
                }
            }
        },
    );
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

/// Planes of transformed tiles: plane `p` starts at `p · stride` of `values`.
#[derive(Clone, Copy)]
pub(crate) struct Planes<'a> {
    pub values: &'a [f32],
    pub stride: usize,
}

impl<'a> Planes<'a> {
    /// The first `len` values of plane `p`.
    fn plane(self, p: usize, len: usize) -> &'a [f32] {
        &self.values[p * self.stride..][..len]
    }
}

/// `out (m, H, W, OUT) [+]= conv3×3(x (m, H, W, IN))` with one pixel of zero padding, for
/// `(cin, cout)` channels; `u` comes from [`transform_kernel`]. Runs on the calling thread.
pub(crate) fn conv(
    tl: Tiling,
    (cin, cout): (usize, usize),
    m: usize,
    x: &[f32],
    u: &[f32],
    out: &mut [f32],
    store: Store,
) {
    let stride = plane_stride(m * tl.per_image() * cin);
    let mut v = Buf::dirty(PLANES * stride);
    transform_input(tl, cin, m, x, &mut v, stride);
    conv_planes(tl, (cin, cout), m, Planes { values: &v, stride }, u, out, store);
}

/// [`conv`] from input planes `v` already transformed by [`transform_input`].
pub(crate) fn conv_planes(
    tl: Tiling,
    (cin, cout): (usize, usize),
    m: usize,
    v: Planes,
    u: &[f32],
    out: &mut [f32],
    store: Store,
) {
    let tiles = m * tl.per_image();
    if tiles == 0 || cout == 0 {
        return;
    }
    let mm_stride = plane_stride(tiles * cout);
    let mut mm = Buf::dirty(PLANES * mm_stride);
    for p in 0..PLANES {
        let (a, b) = (v.plane(p, tiles * cin), &u[p * cin * cout..][..cin * cout]);
        let c = &mut mm[p * mm_stride..][..tiles * cout];
        matmul_serial((tiles, cin, cout), Mat::Plain(a), Mat::Plain(b), c, Store::Overwrite);
    }
    transform_output(tl, cout, m, Planes { values: &mm, stride: mm_stride }, out, store);
}

/// Adds to `acc` `(36, IN, OUT)` the products `Vₚᵀ · Dₚ` of input planes `v` (from
/// [`transform_input`]) and gradient planes `d` (from [`transform_grad`]) over `tiles` tiles of
/// `(cin, cout)` channels; [`add_kernel_gradient`] turns the sum into the kernel gradient.
pub(crate) fn kernel_gradient_planes(tiles: usize, (cin, cout): (usize, usize), v: Planes, d: Planes, acc: &mut [f32]) {
    for p in 0..PLANES {
        let (a, b) = (v.plane(p, tiles * cin), d.plane(p, tiles * cout));
        let c = &mut acc[p * cin * cout..][..cin * cout];
        matmul_serial((cin, tiles, cout), Mat::Transposed(a), Mat::Plain(b), c, Store::Accumulate);
    }
}

/// `Bᵀ d B` of every 6×6 input tile (one pixel of zero padding) of `m` images `x (m, H, W, C)`: tile
/// `t`'s channels go to `v[p · stride + t · C..][..C]` of each plane `p`.
pub(crate) fn transform_input(tl: Tiling, c: usize, m: usize, x: &[f32], v: &mut [f32], stride: usize) {
    to_planes::<6, InputTransform>(tl, c, m, x, v, stride)
}

/// `A δ Aᵀ` of every 4×4 block of `grad (m, H, W, C)` (zeros beyond the image), into planes as
/// [`transform_input`] lays them out.
pub(crate) fn transform_grad(tl: Tiling, c: usize, m: usize, grad: &[f32], d: &mut [f32], stride: usize) {
    to_planes::<4, GradTransform>(tl, c, m, grad, d, stride)
}

/// A 1-d transform of `N` vectors into six, applied to the columns and then the rows of a tile.
trait ToSix<const N: usize> {
    /// Pixels the `N×N` tile starts before its 4×4 output block (the padding it reads).
    const BACK: usize;
    fn apply<const L: usize>(x: &[[f32; L]; N]) -> [[f32; L]; 6];
}

/// `Bᵀ d B`: the input transform, on 6×6 tiles around each block.
struct InputTransform;
impl ToSix<6> for InputTransform {
    const BACK: usize = 1;
    #[inline(always)]
    fn apply<const L: usize>(x: &[[f32; L]; 6]) -> [[f32; L]; 6] {
        b_t(x)
    }
}

/// `A δ Aᵀ`: the output gradient's transform, on the 4×4 blocks themselves.
struct GradTransform;
impl ToSix<4> for GradTransform {
    const BACK: usize = 0;
    #[inline(always)]
    fn apply<const L: usize>(x: &[[f32; L]; 4]) -> [[f32; L]; 6] {
        a(x)
    }
}

/// The `N×N` tile of every 4×4 block of `x (m, H, W, C)` (zeros beyond the image), transformed by `T`
/// into the 36 planes.
fn to_planes<const N: usize, T: ToSix<N>>(tl: Tiling, c: usize, m: usize, x: &[f32], v: &mut [f32], stride: usize) {
    let zero = vec![0f32; c];
    simd(
        #[inline(always)]
        || {
            for img in 0..m {
                let xi = &x[img * tl.h * tl.w * c..][..tl.h * tl.w * c];
                for ty in 0..tl.th {
                    for tx in 0..tl.tw {
                        let t = (img * tl.th + ty) * tl.tw + tx;
                        let mut d: [[&[f32]; N]; N] = [[&zero[..]; N]; N];
                        for (r, row) in d.iter_mut().enumerate() {
                            for (col, px) in row.iter_mut().enumerate() {
                                let (y, x) = ((4 * ty + r).wrapping_sub(T::BACK), (4 * tx + col).wrapping_sub(T::BACK));
                                if y < tl.h && x < tl.w {
                                    *px = &xi[(y * tl.w + x) * c..][..c];
                                }
                            }
                        }
                        let full = c / 8 * 8;
                        for cb in (0..full).step_by(8) {
                            tile_to_planes::<N, 8, T>(&d, cb, v, stride, t * c + cb);
                        }
                        for cb in full..c {
                            tile_to_planes::<N, 1, T>(&d, cb, v, stride, t * c + cb);
                        }
                    }
                }
            }
        },
    )
}

/// `Aᵀ M A` of every tile of the planes `mm` (`C` channels) into the pixels of `out (m, H, W, C)`,
/// written or added; the parts of a block beyond the image are dropped.
pub(crate) fn transform_output(tl: Tiling, c: usize, m: usize, mm: Planes, out: &mut [f32], store: Store) {
    simd(
        #[inline(always)]
        || {
            for img in 0..m {
                let oi = &mut out[img * tl.h * tl.w * c..][..tl.h * tl.w * c];
                for ty in 0..tl.th {
                    for tx in 0..tl.tw {
                        let t = (img * tl.th + ty) * tl.tw + tx;
                        let full = c / 8 * 8;
                        for cb in (0..full).step_by(8) {
                            output_tile::<8>(mm, t * c + cb, cb, oi, tl, (ty, tx), c, store);
                        }
                        for cb in full..c {
                            output_tile::<1>(mm, t * c + cb, cb, oi, tl, (ty, tx), c, store);
                        }
                    }
                }
            }
        },
    )
}

// The 1-d transforms, on six (or four) vectors of `L` channels. Plain loops over fixed-size arrays:
// they stay in registers and vectorise.

/// `Bᵀ d`, with `Bᵀ` = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
/// [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]].
#[inline(always)]
fn b_t<const L: usize>(d: &[[f32; L]; 6]) -> [[f32; L]; 6] {
    let mut t = [[0f32; L]; 6];
    for i in 0..L {
        let [d0, d1, d2, d3, d4, d5] = [d[0][i], d[1][i], d[2][i], d[3][i], d[4][i], d[5][i]];
        t[0][i] = 4.0 * d0 - 5.0 * d2 + d4;
        t[1][i] = (d3 + d4) - 4.0 * (d1 + d2);
        t[2][i] = 4.0 * (d1 - d2) + (d4 - d3);
        t[3][i] = 2.0 * (d3 - d1) + (d4 - d2);
        t[4][i] = 2.0 * (d1 - d3) + (d4 - d2);
        t[5][i] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    t
}

/// `Aᵀ m`, with `Aᵀ` = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]].
#[inline(always)]
fn a_t<const L: usize>(m: &[[f32; L]; 6]) -> [[f32; L]; 4] {
    let mut y = [[0f32; L]; 4];
    for i in 0..L {
        let [m0, m1, m2, m3, m4, m5] = [m[0][i], m[1][i], m[2][i], m[3][i], m[4][i], m[5][i]];
        let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        y[0][i] = m0 + s12 + s34;
        y[1][i] = d12 + 2.0 * d34;
        y[2][i] = s12 + 4.0 * s34;
        y[3][i] = d12 + 8.0 * d34 + m5;
    }
    y
}

/// `A δ`: the transpose of [`a_t`], four vectors to six.
#[inline(always)]
fn a<const L: usize>(g: &[[f32; L]; 4]) -> [[f32; L]; 6] {
    let mut e = [[0f32; L]; 6];
    for i in 0..L {
        let [g0, g1, g2, g3] = [g[0][i], g[1][i], g[2][i], g[3][i]];
        let (s02, s13) = (g0 + g2, g1 + g3);
        let (q02, q13) = (g0 + 4.0 * g2, 2.0 * g1 + 8.0 * g3);
        e[0][i] = g0;
        e[1][i] = s02 + s13;
        e[2][i] = s02 - s13;
        e[3][i] = q02 + q13;
        e[4][i] = q02 - q13;
        e[5][i] = g3;
    }
    e
}

/// `L` channels from `cb` of one tile: `T` on the columns, then on the rows, written at `at` of the 36
/// planes.
#[inline(always)]
fn tile_to_planes<const N: usize, const L: usize, T: ToSix<N>>(
    src: &[[&[f32]; N]; N],
    cb: usize,
    v: &mut [f32],
    stride: usize,
    at: usize,
) {
    let mut t = [[[0f32; L]; 6]; N]; // t[col][row]
    for (c, t) in t.iter_mut().enumerate() {
        let col: [[f32; L]; N] = std::array::from_fn(|r| src[r][c][cb..cb + L].try_into().unwrap());
        *t = T::apply(&col);
    }
    for i in 0..6 {
        let row: [[f32; L]; N] = std::array::from_fn(|c| t[c][i]);
        for (j, vals) in T::apply(&row).iter().enumerate() {
            v[(i * 6 + j) * stride + at..][..L].copy_from_slice(vals);
        }
    }
}

/// `L` channels from `cb` of one output tile (at `at` of the 36 planes): `Aᵀ m A`, written (or added)
/// to the pixels of the 4×4 block inside the image.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn output_tile<const L: usize>(
    mm: Planes,
    at: usize,
    cb: usize,
    out: &mut [f32],
    tl: Tiling,
    (ty, tx): (usize, usize),
    c: usize,
    store: Store,
) {
    let (mm, stride, accumulate) = (mm.values, mm.stride, store == Store::Accumulate);
    // Columns of the 6×6 tile first: for each row i, Aᵀ over the six columns.
    let mut t = [[[0f32; L]; 4]; 6]; // t[row i][out col b]
    for (i, t) in t.iter_mut().enumerate() {
        let row: [[f32; L]; 6] = std::array::from_fn(|j| mm[(i * 6 + j) * stride + at..][..L].try_into().unwrap());
        *t = a_t(&row);
    }
    for b in 0..4 {
        let xx = 4 * tx + b;
        if xx >= tl.w {
            break;
        }
        let col: [[f32; L]; 6] = std::array::from_fn(|i| t[i][b]);
        for (a, vals) in a_t(&col).iter().enumerate() {
            let yy = 4 * ty + a;
            if yy >= tl.h {
                break;
            }
            let dst = &mut out[(yy * tl.w + xx) * c + cb..][..L];
            for i in 0..L {
                dst[i] = if accumulate { dst[i] + vals[i] } else { vals[i] };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq;

    /// Direct 3×3 "same" convolution in f64: `(m, H, W, IN)` with `(3, 3, IN, OUT)`.
    fn direct(h: usize, w: usize, cin: usize, cout: usize, m: usize, x: &[f32], k: &[f32]) -> Vec<f64> {
        let mut out = vec![0f64; m * h * w * cout];
        for n in 0..m {
            for i in 0..h {
                for j in 0..w {
                    for a in 0..3 {
                        for b in 0..3 {
                            let (y, xx) = ((i + a).wrapping_sub(1), (j + b).wrapping_sub(1));
                            if y >= h || xx >= w {
                                continue;
                            }
                            for ci in 0..cin {
                                let xv = x[((n * h + y) * w + xx) * cin + ci] as f64;
                                for co in 0..cout {
                                    out[((n * h + i) * w + j) * cout + co] +=
                                        xv * k[((a * 3 + b) * cin + ci) * cout + co] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The convolution against the direct one, on sizes that are and are not multiples of 4 and channel
    /// counts with and without a remainder of 8; written and accumulated.
    #[test]
    fn conv_matches_the_direct_convolution() {
        for (h, w, cin, cout, m) in
            [(14, 14, 32, 64, 3), (14, 14, 64, 32, 8), (5, 7, 3, 9, 2), (4, 4, 1, 1, 1), (1, 2, 10, 17, 2)]
        {
            let (x, k) = (seq(m * h * w * cin, 1), seq(9 * cin * cout, 2));
            let want = direct(h, w, cin, cout, m, &x, &k);
            let tl = Tiling::new(h, w);
            let u = transform_kernel(&k, cin, cout);
            let mut out = vec![0f32; want.len()];
            conv(tl, (cin, cout), m, &x, &u, &mut out, Store::Overwrite);
            let scale = 1.0 + want.iter().fold(0f64, |a, b| a.max(b.abs()));
            for (i, (g, w)) in out.iter().zip(&want).enumerate() {
                assert!((*g as f64 - w).abs() < 1e-5 * scale, "{h}×{w}×{cin}→{cout} at {i}: {g} vs {w}");
            }
            let mut acc = vec![1f32; want.len()];
            conv(tl, (cin, cout), m, &x, &u, &mut acc, Store::Accumulate);
            for (a, o) in acc.iter().zip(&out) {
                assert!((a - (o + 1.0)).abs() < 1e-5 * (scale as f32), "accumulated: {a} vs {}", o + 1.0);
            }
        }
    }

    /// The kernel gradient from the planes against its definition:
    /// `∂/∂k[a, b, i, o] Σ δ · conv(x, k) = Σ_pixels x[y + a - 1, x + b - 1, i] · δ[y, x, o]`.
    #[test]
    fn kernel_gradient_matches_its_definition() {
        for (h, w, cin, cout, m) in [(14, 14, 32, 64, 2), (5, 7, 3, 9, 3), (2, 1, 1, 2, 1)] {
            let (x, delta) = (seq(m * h * w * cin, 3), seq(m * h * w * cout, 4));
            let tl = Tiling::new(h, w);
            let tiles = m * tl.per_image();
            let (mut v, mut d) = (vec![0f32; PLANES * tiles * cin], vec![0f32; PLANES * tiles * cout]);
            transform_input(tl, cin, m, &x, &mut v, tiles * cin);
            transform_grad(tl, cout, m, &delta, &mut d, tiles * cout);
            let mut planes = vec![0f32; PLANES * cin * cout];
            kernel_gradient_planes(
                tiles,
                (cin, cout),
                Planes { values: &v, stride: tiles * cin },
                Planes { values: &d, stride: tiles * cout },
                &mut planes,
            );
            let mut gk = vec![0.5f32; 9 * cin * cout];
            add_kernel_gradient(&planes, cin, cout, &mut gk);
            // The definition in f64, and the sum of the magnitudes of each entry's terms (the scale of
            // its rounding error).
            let (mut want, mut mag) = (vec![0.5f64; gk.len()], vec![0f64; gk.len()]);
            for n in 0..m {
                for i in 0..h {
                    for j in 0..w {
                        for a in 0..3 {
                            for b in 0..3 {
                                let (y, xx) = ((i + a).wrapping_sub(1), (j + b).wrapping_sub(1));
                                if y >= h || xx >= w {
                                    continue;
                                }
                                for ci in 0..cin {
                                    for co in 0..cout {
                                        let p = x[((n * h + y) * w + xx) * cin + ci] as f64
                                            * delta[((n * h + i) * w + j) * cout + co] as f64;
                                        want[((a * 3 + b) * cin + ci) * cout + co] += p;
                                        mag[((a * 3 + b) * cin + ci) * cout + co] += p.abs();
                                    }
                                }
                            }
                        }
                    }
                }
            }
            for (i, (g, w)) in gk.iter().zip(&want).enumerate() {
                assert!((*g as f64 - w).abs() < 1e-4 * (1.0 + mag[i]), "{h}×{w}×{cin}→{cout} at {i}: {g} vs {w}");
            }
        }
    }

    /// Turning the kernel by 180° and swapping IN/OUT twice gives it back.
    #[test]
    fn flip_is_an_involution() {
        let k = seq(9 * 3 * 5, 5);
        assert_eq!(flip_kernel(&flip_kernel(&k, 3, 5), 5, 3), k);
    }
}
