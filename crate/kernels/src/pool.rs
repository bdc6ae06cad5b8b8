//! Bias + ReLU + `POOL×POOL` max-pooling of a convolution's output in one pass, and its backward.

use super::conv::ConvGeom;
use super::simd;

/// Bias, ReLU and max-pool of one image's convolution output `pre` `(H'·W', OUT)` (without bias) into the
/// pooled image `(H'/POOL · W'/POOL, OUT)`. The bias is the same across a window and ReLU commutes with
/// max, so this takes the window max, adds the bias and clamps at 0: one pass, and the convolution's
/// matrix product writes `pre` without reading it.
#[inline(never)]
pub(crate) fn relu_max_pool(g: &ConvGeom, pre: &[f32], bias: &[f32], out: &mut [f32]) {
    simd(
        #[inline(always)]
        || {
            for_each_window(
                g,
                #[inline(always)]
                |cell, window| {
                    let out = &mut out[cell..][..g.cout];
                    // Eight channels at a time in registers, then one at a time for the rest.
                    let full = g.cout / 8 * 8;
                    for cb in (0..full).step_by(8) {
                        pool_forward::<8>(pre, window, cb, &bias[cb..], &mut out[cb..]);
                    }
                    for cb in full..g.cout {
                        pool_forward::<1>(pre, window, cb, &bias[cb..], &mut out[cb..]);
                    }
                },
            )
        },
    )
}

/// Backward of [`relu_max_pool`] for one image: writes the gradient of every pre-activation into
/// `grad_pre` `(H'·W', OUT)`. Each pooled value's gradient goes to the first position of its window
/// holding the maximum (as a forward that kept the first maximum would say), and nowhere when the
/// maximum plus bias was not positive (ReLU gave 0); every other position gets 0. Recomputing the
/// maximum here keeps the forward pass a plain max.
#[inline(never)]
pub(crate) fn relu_max_pool_backward(g: &ConvGeom, pre: &[f32], bias: &[f32], grad_out: &[f32], grad_pre: &mut [f32]) {
    simd(
        #[inline(always)]
        || {
            let (ho, wo) = g.conv_hw();
            let (hp, wp) = g.out_hw();
            if hp * g.pool < ho || wp * g.pool < wo {
                grad_pre.fill(0.0); // rows or columns no window covers
            }
            for_each_window(
                g,
                #[inline(always)]
                |cell, window| {
                    let go = &grad_out[cell..][..g.cout];
                    let full = g.cout / 8 * 8;
                    for cb in (0..full).step_by(8) {
                        pool_backward::<8>(pre, window, cb, &bias[cb..], &go[cb..], grad_pre);
                    }
                    for cb in full..g.cout {
                        pool_backward::<1>(pre, window, cb, &bias[cb..], &go[cb..], grad_pre);
                    }
                },
            )
        },
    )
}

/// Calls `f(offset of the pooled cell in the output, offsets of its POOL×POOL positions in pre)`.
#[inline(always)]
fn for_each_window(g: &ConvGeom, mut f: impl FnMut(usize, &[usize])) {
    let (_, wo) = g.conv_hw();
    let (hp, wp) = g.out_hw();
    let mut window = vec![0usize; g.pool * g.pool];
    for i in 0..hp {
        for j in 0..wp {
            for (w, at) in window.iter_mut().enumerate() {
                *at = ((i * g.pool + w / g.pool) * wo + j * g.pool + w % g.pool) * g.cout;
            }
            f((i * wp + j) * g.cout, &window);
        }
    }
}

/// `L` channels from `cb` of one pooled cell: `out = max(max over the window + bias, 0)`.
#[inline(always)]
fn pool_forward<const L: usize>(pre: &[f32], window: &[usize], cb: usize, bias: &[f32], out: &mut [f32]) {
    let mut m = [f32::NEG_INFINITY; L];
    for &at in window {
        let v: &[f32; L] = pre[at + cb..][..L].try_into().unwrap();
        for t in 0..L {
            m[t] = if v[t] > m[t] { v[t] } else { m[t] };
        }
    }
    for t in 0..L {
        let v = m[t] + bias[t];
        out[t] = if v > 0.0 { v } else { 0.0 };
    }
}

/// `L` channels from `cb` of one pooled cell: hands `grad_out` to the first window position holding
/// the maximum (none when ReLU gave 0) and writes 0 to the others.
#[inline(always)]
fn pool_backward<const L: usize>(
    pre: &[f32],
    window: &[usize],
    cb: usize,
    bias: &[f32],
    grad_out: &[f32],
    grad_pre: &mut [f32],
) {
    let mut m = [f32::NEG_INFINITY; L];
    for &at in window {
        let v: &[f32; L] = pre[at + cb..][..L].try_into().unwrap();
        for t in 0..L {
            m[t] = if v[t] > m[t] { v[t] } else { m[t] };
        }
    }
    // The gradient not yet handed to a position.
    let mut left = [0f32; L];
    for t in 0..L {
        left[t] = if m[t] + bias[t] > 0.0 { grad_out[t] } else { 0.0 };
    }
    for &at in window {
        let v: &[f32; L] = pre[at + cb..][..L].try_into().unwrap();
        let gp: &mut [f32; L] = (&mut grad_pre[at + cb..][..L]).try_into().unwrap();
        for t in 0..L {
            let hit = v[t] == m[t];
            gp[t] = if hit { left[t] } else { 0.0 };
            left[t] = if hit { 0.0 } else { left[t] };
        }
    }
}
