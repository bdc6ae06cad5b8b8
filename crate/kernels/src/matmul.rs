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

/// One operand of a product: a row-major matrix as stored, or the transpose of one.
#[derive(Debug, Clone, Copy)]
pub enum Mat<'a> {
    /// The matrix as stored: `(rows, cols)` row-major.
    Plain(&'a [f32]),
    /// The transpose of the matrix stored `(cols, rows)` row-major.
    Transposed(&'a [f32]),
}

impl<'a> Mat<'a> {
    fn parts(self) -> (&'a [f32], bool) {
        match self {
            Mat::Plain(x) => (x, false),
            Mat::Transposed(x) => (x, true),
        }
    }
}

/// Whether a product replaces the output's values or adds to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// `c = a·b`.
    Overwrite,
    /// `c += a·b`.
    Accumulate,
}

/// `c (m×n) = [c +] a · b` for `(m, k, n)`, all row-major: `a` is `(m, k)` and `b` is `(k, n)`, each
/// as stored or as the transpose of what is stored ([`Mat`]). Large products use all cores;
/// middle-sized ones are split in two halves of `c` as `split` says (cheap only on a thread of
/// rayon's pool, see [`crate::on_pool`]).
pub fn matmul(split: Split, (m, k, n): (usize, usize, usize), a: Mat, b: Mat, c: &mut [f32], store: Store) {
    let macs = m * k * n;
    let halves = (SPLIT_MIN_MACS..PARALLEL_MIN_MACS).contains(&macs);
    let (a, b) = operands((m, k, n), a, b, c);
    let c_ptr = Out(c.as_mut_ptr());
    let one = Parallelism::None;
    // SAFETY (all three calls): `operands` checked that every index lies inside the slices, and `c`
    // is borrowed mutably; the two halves write disjoint parts of it.
    match split {
        Split::Columns if halves && n >= 32 => {
            let h = n / 2 / 16 * 16;
            rayon::join(
                || unsafe { gemm_raw(one, (m, k, h), a, b, c_ptr.at(0), n, store) },
                || unsafe { gemm_raw(one, (m, k, n - h), a, b.columns(h), c_ptr.at(h), n, store) },
            );
        }
        Split::Rows if halves && m >= 32 => {
            let h = m / 2 / 16 * 16;
            rayon::join(
                || unsafe { gemm_raw(one, (h, k, n), a, b, c_ptr.at(0), n, store) },
                || unsafe { gemm_raw(one, (m - h, k, n), a.rows(h), b, c_ptr.at(h * n), n, store) },
            );
        }
        _ => {
            let threads =
                if macs >= PARALLEL_MIN_MACS { Parallelism::Rayon(rayon::current_num_threads()) } else { one };
            unsafe { gemm_raw(threads, (m, k, n), a, b, c_ptr.0, n, store) }
        }
    }
}

/// Which half of the output each core computes when a product is split: the halves follow the
/// parameter tensor's, so that a core finds in its own cache the rows of the weights it updated in
/// Adam's half (measured: splitting the MLP's weight gradient by columns instead made the epoch slower
/// than on one core).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Rows,
    Columns,
}

/// [`matmul`] on the calling thread only (the kernels that spread groups of images over the cores).
pub(crate) fn matmul_serial(dims: (usize, usize, usize), a: Mat, b: Mat, c: &mut [f32], store: Store) {
    let (a, b) = operands(dims, a, b, c);
    // SAFETY: `operands` keeps every index the strides produce inside the three slices, and `c` is
    // borrowed mutably, so it does not alias `a` or `b`.
    unsafe { gemm_raw(Parallelism::None, dims, a, b, c.as_mut_ptr(), dims.2, store) }
}

/// The operands' pointers and strides, after checking that the buffers hold the shapes (a caller's
/// bug otherwise, not a user's input: the layers size every buffer from the same geometry).
fn operands((m, k, n): (usize, usize, usize), a: Mat, b: Mat, c: &[f32]) -> (Operand, Operand) {
    let ((a, a_t), (b, b_t)) = (a.parts(), b.parts());
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "matmul: buffers smaller than the shapes");
    (Operand::new(a, a_t, m, k), Operand::new(b, b_t, k, n))
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
unsafe fn gemm_raw(
    threads: Parallelism,
    (m, k, n): (usize, usize, usize),
    a: Operand,
    b: Operand,
    c: *mut f32,
    c_rs: usize,
    store: Store,
) {
    let accumulate = store == Store::Accumulate;
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
    gemm::gemm(
        m,
        n,
        k,
        c,
        1,
        c_rs as isize,
        accumulate,
        a.ptr,
        a.cs,
        a.rs,
        b.ptr,
        b.cs,
        b.rs,
        1.0,
        1.0,
        false,
        false,
        false,
        threads,
    );
}

/// `out[j] += Σ_i m[i, j]` for a row-major `(rows, out.len())` matrix (bias gradients).
pub fn add_column_sums(m: &[f32], out: &mut [f32]) {
    simd(
        #[inline(always)]
        || {
            let n = out.len();
            if n == 0 {
                return;
            }
            for row in m.chunks_exact(n) {
                for (o, v) in out.iter_mut().zip(row) {
                    *o += v;
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq;

    /// Every transpose combination, overwrite and accumulate, on one thread and on all, against the
    /// definition.
    #[test]
    fn matmul_matches_the_definition() {
        // (64, 300, 70) and (32, 784, 128) are split in halves, (300, 300, 300) goes to gemm's threads.
        for (m, k, n) in [(5, 7, 3), (1, 1, 1), (64, 300, 70), (32, 784, 128), (300, 300, 300)] {
            for (a_t, b_t, acc) in
                [(false, false, false), (true, false, true), (false, true, false), (true, true, true)]
            {
                let (a, b, c0) = (seq(m * k, 1), seq(k * n, 2), seq(m * n, 3));
                let at = |i: usize, p: usize| if a_t { a[p * m + i] } else { a[i * k + p] };
                let bt = |p: usize, j: usize| if b_t { b[j * k + p] } else { b[p * n + j] };
                for split in [Split::Rows, Split::Columns] {
                    let mut c = c0.clone();
                    let op = |x, t| if t { Mat::Transposed(x) } else { Mat::Plain(x) };
                    let store = if acc { Store::Accumulate } else { Store::Overwrite };
                    matmul(split, (m, k, n), op(&a, a_t), op(&b, b_t), &mut c, store);
                    for i in 0..m {
                        for j in 0..n {
                            let want: f64 = (0..k).map(|p| at(i, p) as f64 * bt(p, j) as f64).sum::<f64>()
                                + if acc { c0[i * n + j] as f64 } else { 0.0 };
                            let got = c[i * n + j] as f64;
                            assert!(
                                (got - want).abs() < 1e-3 * (1.0 + want.abs()),
                                "{m}×{k}×{n} {a_t} {b_t} {split:?}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
        let mut c = vec![1.0; 6];
        matmul(Split::Rows, (2, 0, 3), Mat::Plain(&[]), Mat::Plain(&[]), &mut c, Store::Overwrite);
        assert_eq!(c, vec![0.0; 6], "k = 0 gives zeros");
    }
}
