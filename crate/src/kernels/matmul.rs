//! Matrix products (the `gemm` crate: a newer version than dfdx's, with AVX-512 kernels chosen at run
//! time) and column sums.

use gemm::Parallelism;

use super::simd;

/// Products with fewer multiply-adds than this run on one thread.
const PARALLEL_MIN_MACS: usize = 16 << 20;

/// `c (m×n) = [c +] op(a) · op(b)`, all row-major. `op(a)` is `a` stored `(m, k)`, or with `a_t` the
/// transpose of `a` stored `(k, m)`; likewise `op(b)` is `b` `(k, n)` or, with `b_t`, `b` stored `(n, k)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(m: usize, k: usize, n: usize, a: &[f32], a_t: bool, b: &[f32], b_t: bool, c: &mut [f32], accumulate: bool) {
    let parallel = m * k * n >= PARALLEL_MIN_MACS;
    matmul_on(parallel, m, k, n, a, a_t, b, b_t, c, accumulate)
}

/// [`matmul`] on the calling thread only (`parallel = false`) or on all of rayon's threads.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_on(parallel: bool, m: usize, k: usize, n: usize, a: &[f32], a_t: bool, b: &[f32], b_t: bool, c: &mut [f32], accumulate: bool) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "matmul: buffers smaller than the shapes");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    let (a_rs, a_cs) = if a_t { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if b_t { (1, k as isize) } else { (n as isize, 1) };
    let parallelism = if parallel {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    };
    // SAFETY: the assert above keeps every index the strides produce inside the three slices, and `c`
    // is borrowed mutably, so it does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
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
        for (m, k, n) in [(5, 7, 3), (1, 1, 1), (64, 300, 70), (300, 300, 300)] {
            for (a_t, b_t, acc) in [(false, false, false), (true, false, true), (false, true, false), (true, true, true)] {
                let (a, b, c0) = (seq(m * k, 1), seq(k * n, 2), seq(m * n, 3));
                let at = |i: usize, p: usize| if a_t { a[p * m + i] } else { a[i * k + p] };
                let bt = |p: usize, j: usize| if b_t { b[j * k + p] } else { b[p * n + j] };
                let mut c = c0.clone();
                matmul(m, k, n, &a, a_t, &b, b_t, &mut c, acc);
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k).map(|p| at(i, p) as f64 * bt(p, j) as f64).sum::<f64>()
                            + if acc { c0[i * n + j] as f64 } else { 0.0 };
                        let got = c[i * n + j] as f64;
                        assert!((got - want).abs() < 1e-3 * (1.0 + want.abs()), "{m}×{k}×{n} {a_t} {b_t}: {got} vs {want}");
                    }
                }
            }
        }
        let mut c = vec![1.0; 6];
        matmul(2, 0, 3, &[], false, &[], false, &mut c, false);
        assert_eq!(c, vec![0.0; 6], "k = 0 gives zeros");
    }

}
