//! Matrix products (the `gemm` crate: a newer version than dfdx's, with AVX-512 kernels chosen at run
//! time) and column sums.

use gemm::Parallelism;

use super::simd;

/// Products with at least this many multiply-adds are handed to `gemm`'s own threads.
const PARALLEL_MIN_MACS: usize = 16 << 20;
/// Products with at least this many (and fewer than [`PARALLEL_MIN_MACS`]) are split into two column
/// halves computed side by side with `rayon::join` — the MLP's products at a batch of 32, where
/// `gemm`'s own threading costs more than it saves (measured: its epoch went from 0.31 to 0.58 s).
/// The split depends on the shapes only, so the results are the same on any number of threads.
const SPLIT_MIN_MACS: usize = 1 << 20;

/// `c (m×n) = [c +] op(a) · op(b)`, all row-major. `op(a)` is `a` stored `(m, k)`, or with `a_t` the
/// transpose of `a` stored `(k, m)`; likewise `op(b)` is `b` `(k, n)` or, with `b_t`, `b` stored `(n, k)`.
/// Large products use all cores; middle-sized ones are split in two halves of `c` as `split` says
/// (cheap only on a thread of rayon's pool, see [`super::on_pool`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(split: Split, m: usize, k: usize, n: usize, a: &[f32], a_t: bool, b: &[f32], b_t: bool, c: &mut [f32], accumulate: bool) {
    let macs = m * k * n;
    let halves = (SPLIT_MIN_MACS..PARALLEL_MIN_MACS).contains(&macs);
    check(m, k, n, a, b, c);
    let (a, b, c_ptr) = (Operand::new(a, a_t, m, k), Operand::new(b, b_t, k, n), Out(c.as_mut_ptr()));
    // SAFETY (all three calls): `check` keeps every index inside the slices, and `c` is borrowed
    // mutably; the two halves write disjoint parts of it.
    match split {
        Split::Columns if halves && n >= 32 => {
            let h = n / 2 / 16 * 16;
            rayon::join(
                || unsafe { gemm_raw(false, m, k, h, a, b, c_ptr.at(0), n, accumulate) },
                || unsafe { gemm_raw(false, m, k, n - h, a, b.columns(h), c_ptr.at(h), n, accumulate) },
            );
        }
        Split::Rows if halves && m >= 32 => {
            let h = m / 2 / 16 * 16;
            rayon::join(
                || unsafe { gemm_raw(false, h, k, n, a, b, c_ptr.at(0), n, accumulate) },
                || unsafe { gemm_raw(false, m - h, k, n, a.rows(h), b, c_ptr.at(h * n), n, accumulate) },
            );
        }
        _ => unsafe { gemm_raw(macs >= PARALLEL_MIN_MACS, m, k, n, a, b, c_ptr.0, n, accumulate) },
    }
}

/// Which half of the output each core computes when a product is split: the halves follow the
/// parameter tensor's, so that a core finds in its own cache the rows of the weights it updated in
/// Adam's half (measured: splitting the MLP's weight gradient by columns instead made the epoch slower
/// than on one core).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Split {
    Rows,
    Columns,
}

/// [`matmul`] on the calling thread only (the kernels that spread groups of images over the cores).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_serial(m: usize, k: usize, n: usize, a: &[f32], a_t: bool, b: &[f32], b_t: bool, c: &mut [f32], accumulate: bool) {
    check(m, k, n, a, b, c);
    let (a, b) = (Operand::new(a, a_t, m, k), Operand::new(b, b_t, k, n));
    // SAFETY: `check` keeps every index the strides produce inside the three slices, and `c` is
    // borrowed mutably, so it does not alias `a` or `b`.
    unsafe { gemm_raw(false, m, k, n, a, b, c.as_mut_ptr(), n, accumulate) }
}

fn check(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &[f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "matmul: buffers smaller than the shapes");
}

/// A matrix operand: a pointer and its row and column strides.
#[derive(Clone, Copy)]
struct Operand {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}
// SAFETY: an `Operand` only reads, from a slice borrowed for the whole product.
unsafe impl Send for Operand {}
unsafe impl Sync for Operand {}

impl Operand {
    /// `op(x)` of shape `(rows, cols)`: `x` stored that way, or (`t`) its transpose stored `(cols, rows)`.
    fn new(x: &[f32], t: bool, rows: usize, cols: usize) -> Operand {
        let (rs, cs) = if t { (1, rows as isize) } else { (cols as isize, 1) };
        Operand { ptr: x.as_ptr(), rs, cs }
    }
    /// The operand from column `j` on.
    fn columns(self, j: usize) -> Operand {
        Operand { ptr: self.ptr.wrapping_offset(j as isize * self.cs), ..self }
    }
    /// The operand from row `i` on.
    fn rows(self, i: usize) -> Operand {
        Operand { ptr: self.ptr.wrapping_offset(i as isize * self.rs), ..self }
    }
}

/// The output's pointer, shared by the two halves of a split product (which write disjoint columns).
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: see `matmul`: each half writes only its own columns.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    fn at(self, j: usize) -> *mut f32 {
        self.0.wrapping_add(j)
    }
}

/// `c (m×n, row stride c_rs) = [c +] a · b` with `gemm`.
///
/// # Safety
/// Every element the shapes and strides address must lie inside live allocations, `c`'s not
/// overlapping `a`'s or `b`'s nor written by anyone else meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(parallel: bool, m: usize, k: usize, n: usize, a: Operand, b: Operand, c: *mut f32, c_rs: usize, accumulate: bool) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::slice::from_raw_parts_mut(c.add(i * c_rs), n).fill(0.0);
            }
        }
        return;
    }
    let parallelism = if parallel { Parallelism::Rayon(rayon::current_num_threads()) } else { Parallelism::None };
    gemm::gemm(m, n, k, c, 1, c_rs as isize, accumulate, a.ptr, a.cs, a.rs, b.ptr, b.cs, b.rs, 1.0, 1.0, false, false, false, parallelism);
}

/// `out[j] += Σ_i m[i, j]` for a row-major `(rows, out.len())` matrix (bias gradients).
pub(crate) fn add_column_sums(m: &[f32], out: &mut [f32]) {
    simd(#[inline(always)] || {
        let n = out.len();
        if n == 0 {
            return;
        }
        for row in m.chunks_exact(n) {
            for (o, v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::seq;



    /// Every transpose combination, overwrite and accumulate, on one thread and on all, against the
    /// definition.
    #[test]
    fn matmul_matches_the_definition() {
        // (64, 300, 70) and (32, 784, 128) are split in halves, (300, 300, 300) goes to gemm's threads.
        for (m, k, n) in [(5, 7, 3), (1, 1, 1), (64, 300, 70), (32, 784, 128), (300, 300, 300)] {
            for (a_t, b_t, acc) in [(false, false, false), (true, false, true), (false, true, false), (true, true, true)] {
                let (a, b, c0) = (seq(m * k, 1), seq(k * n, 2), seq(m * n, 3));
                let at = |i: usize, p: usize| if a_t { a[p * m + i] } else { a[i * k + p] };
                let bt = |p: usize, j: usize| if b_t { b[j * k + p] } else { b[p * n + j] };
                for split in [Split::Rows, Split::Columns] {
                    let mut c = c0.clone();
                    matmul(split, m, k, n, &a, a_t, &b, b_t, &mut c, acc);
                    for i in 0..m {
                        for j in 0..n {
                            let want: f64 = (0..k).map(|p| at(i, p) as f64 * bt(p, j) as f64).sum::<f64>()
                                + if acc { c0[i * n + j] as f64 } else { 0.0 };
                            let got = c[i * n + j] as f64;
                            assert!((got - want).abs() < 1e-3 * (1.0 + want.abs()), "{m}×{k}×{n} {a_t} {b_t} {split:?}: {got} vs {want}");
                        }
                    }
                }
            }
        }
        let mut c = vec![1.0; 6];
        matmul(Split::Rows, 2, 0, 3, &[], false, &[], false, &mut c, false);
        assert_eq!(c, vec![0.0; 6], "k = 0 gives zeros");
    }

}
