//! The engine under the `fashion` tutorial crate: CPU kernels as plain loops over row-major `f32`
//! buffers and one matrix-multiply routine, kept apart from the readable layers of `fashion::model`
//! that call them (one file per operation, the way dfdx keeps `tensor_ops/<op>/cpu_kernel.rs`). None of
//! these functions is generic: they are compiled, optimised, in this crate, so a network type defined in
//! a notebook cell — whose own code evcxr compiles without optimisation — still spends its time in
//! optimised loops.
//!
//! | file | what |
//! |---|---|
//! | [`matmul`] | `c = a·b` with either operand transposed, with the `gemm` crate (AVX-512 picked at run time), column sums |
//! | [`conv`] | convolution (any stride and padding) alone or + ReLU + max-pool, forward and backward, per group of images and core |
//! | `direct` | 3×3 convolution + ReLU + max-pool of one-channel images computed in registers, forward and backward |
//! | `winograd` | Winograd F(4×4, 3×3) for 3×3 "same" convolutions over several channels: forward, input and kernel gradients |
//! | `pool` | bias + ReLU + max-pool in one pass, and its backward |
//! | [`pool2d`] | max- and average-pooling with any stride, global average pooling |
//! | [`norm`] | batch normalization: batch and running statistics, backward |
//! | [`activation`] | sigmoid, tanh, GELU, leaky ReLU, ELU; the sum of two tensors |
//! | [`augment`] | random flips, translations and erasing of training images, per image and seed |
//! | [`elementwise`] | ReLU and dropout |
//! | [`optim`] | Adam and SGD steps over one parameter tensor |
//! | [`rng`] | SplitMix64, the seeded generator of shuffles and dropout masks |
//!
//! Why not dfdx's ops: a dfdx matmul always computes the gradient of both operands (a third of the MLP's
//! work is the unused gradient of the input images), hands every product to both cores (at the MLP's
//! batch of 32 the thread hand-off costs more than it saves), and a convolution composed from gather,
//! reshape and max makes several passes over the activations where one suffices. `crate/PERFORMANCE.md`
//! measures each step.

pub mod activation;
pub mod augment;
pub mod conv;
mod direct;
pub mod elementwise;
pub mod matmul;
pub mod norm;
pub mod optim;
mod pool;
pub mod pool2d;
pub mod rng;
mod winograd;

/// Whether a forward pass keeps what its backward pass needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Inference: nothing is kept.
    Infer,
    /// Training: the pass keeps what backward reads.
    Train,
}

/// Runs `f` compiled for AVX-512 (512-bit vectors) or AVX2 + FMA when the CPU has them (checked at run
/// time), otherwise as is. The crate is built for the x86-64 baseline (SSE2) so that it runs everywhere;
/// the loops below only vectorise well with AVX2's blends and wider registers.
#[inline(always)]
fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { avx512(f) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// Runs `f` on a thread of rayon's pool while the calling thread waits, and keeps the pool's other
/// threads looking for work meanwhile. The kernels split the MLP's products and Adam's update in two
/// halves (`rayon::join`) a few times per batch; a thread of the pool that finds no work falls asleep
/// within microseconds, and waking it costs more than the half it would compute (measured on this
/// 2-core VM: a 40 µs product split in two took 22 µs back to back, 53 µs with 50 µs of other work
/// between the splits; from a thread outside the pool every hand-off costs about 20 µs).
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        // Taken by another thread of the pool (the oldest job is stolen first), it runs the halves
        // handed to it until `f` returns; with one thread it runs after `f`, finding `done` set.
        for _ in 1..rayon::current_num_threads() {
            s.spawn(|_| {
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        // Set however `f` ends, a panic included: the scope waits for the spinning jobs.
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _done = Done(&done);
        f()
    })
}

/// Tells glibc's allocator to keep freed buffers of up to 256 MB in the heap instead of returning them
/// to the kernel. Every layer's output and gradient is a fresh `Vec` of a few megabytes (dfdx tensors
/// own their data); by default glibc serves those with `mmap` and unmaps them when freed, so each is
/// zeroed again a page at a time on first touch. Measured on this crate's 2-core VM, forward + backward
/// of ReLU over 64 × 28 × 28 × 32 values took 29 ms that way and 7 ms with the heap reused. Process-wide
/// and idempotent (`Model::new` calls it); a no-op outside Linux with glibc.
pub fn keep_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes two thresholds of the allocator; any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// A buffer of `f32` borrowed from a process-wide pool and returned to it when dropped. The kernels
/// need several megabytes of scratch per batch; fresh allocations that large come straight from the
/// kernel, zeroed a page at a time on first touch, which cost a fifth of a CNN epoch.
pub(crate) struct Buf {
    /// Every value of `v` has been written once (it is never truncated), so a later, longer use of
    /// the same buffer within its length costs no zeroing.
    v: Vec<f32>,
    len: usize,
}

static POOL: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());
/// Buffers the pool keeps: a training batch of 128 images through notebook 7's ResNet holds 88 at
/// once (measured; every Winograd layer keeps its input planes per group of 16 images until
/// backward), and each one the pool cannot keep is allocated and zeroed again in the next batch.
const POOLED: usize = 96;

impl Buf {
    /// `len` values, **not zeroed**: whatever the previous user left (callers overwrite all of it).
    pub fn dirty(len: usize) -> Buf {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest pooled buffer that is long enough, else the longest (extended), else a new one.
        let best = (0..pool.len())
            .filter(|&i| pool[i].len() >= len)
            .min_by_key(|&i| pool[i].len())
            .or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].len()));
        let mut v = best.map(|i| pool.swap_remove(i)).unwrap_or_default();
        drop(pool);
        if v.len() < len {
            // A new allocation: growing this one would copy its old values (`realloc`) only to have
            // them overwritten.
            v = vec![0.0; len];
        }
        Buf { v, len }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOLED {
            pool.push(std::mem::take(&mut self.v));
        }
    }
}

impl std::ops::Deref for Buf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.v[..self.len]
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.v[..self.len]
    }
}

/// Buffers of finished tensors given back ([`recycle`]) for new outputs ([`dirty_vec`]): a layer's
/// output and its gradient are the same size and come and go every batch, and a fresh allocation is
/// zeroed before the kernel overwrites it, one more pass over megabytes. Bounded: at most
/// [`RECYCLED_COUNT`] buffers and [`RECYCLED_BYTES`] bytes are kept; the rest are freed.
static RECYCLED: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());
const RECYCLED_COUNT: usize = 32;
const RECYCLED_BYTES: usize = 64 << 20;

/// A vector of `len` values, **not zeroed** — a recycled one holds the values of its last use — for
/// an output the caller overwrites whole.
pub fn dirty_vec(len: usize) -> Vec<f32> {
    let mut pool = RECYCLED.lock().unwrap_or_else(|e| e.into_inner());
    // The shortest recycled vector that is long enough (its values are initialised up to its length)
    // and not more than twice as long: a large buffer is kept for an output of its own size.
    let fits = |v: &Vec<f32>| v.len() >= len && v.len() <= 2 * len;
    let best = (0..pool.len()).filter(|&i| fits(&pool[i])).min_by_key(|&i| pool[i].len());
    match best {
        Some(i) => {
            let mut v = pool.swap_remove(i);
            v.truncate(len);
            v
        }
        None => vec![0.0; len],
    }
}

/// Gives back a tensor's buffer that nothing reads any more, for [`dirty_vec`] to hand out again
/// (freed if the pool is full).
pub fn recycle(v: Vec<f32>) {
    if v.len() < 1024 {
        return;
    }
    let mut pool = RECYCLED.lock().unwrap_or_else(|e| e.into_inner());
    // Counted by capacity: a truncated vector still holds its whole allocation.
    let bytes: usize = pool.iter().map(|b| b.capacity() * 4).sum();
    if pool.len() < RECYCLED_COUNT && bytes + v.capacity() * 4 <= RECYCLED_BYTES {
        pool.push(v);
    }
}

/// `n` test values in [-1, 1] from `seed`.
#[cfg(test)]
pub(crate) fn seq(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rng::SplitMix64(seed);
    (0..n).map(|_| (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `on_pool` returns what `f` returns, runs it on the pool, and a panic in `f` reaches the caller
    /// instead of leaving the pool's other threads spinning (the test would hang).
    #[test]
    fn on_pool_returns_and_propagates_panics() {
        assert!(on_pool(|| rayon::current_thread_index().is_some()));
        let (a, b) = on_pool(|| rayon::join(|| 1, || 2));
        assert_eq!((a, b), (1, 2));
        let caught = std::panic::catch_unwind(|| on_pool(|| -> u8 { panic!("a layer failed") }));
        assert!(caught.is_err());
        assert_eq!(on_pool(|| 7), 7, "the pool still works after a panic");
    }

    /// Pooled buffers come back with the asked length, whatever was pooled before.
    #[test]
    fn pooled_buffers_have_the_asked_length() {
        drop(Buf::dirty(1000));
        assert_eq!(Buf::dirty(10).len(), 10);
        assert_eq!(Buf::dirty(5000).len(), 5000);
    }
}
