//! Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016), the parts [`crate::direct_conv::DirectConv`] runs a
//! 3x3 convolution of stride 1 on where the CPU has AVX-512F.
//!
//! A 2 x 2 block of outputs reads a 4 x 4 patch `d` of the padded input. With the 3 x 3 weights
//! `g` of one pair of channels transformed once, `U = G g Gt` (4 x 4), and the patch transformed,
//! `V = Bt d B`, the block is `At (sum over input channels of U * V) A`, the product taken point
//! by point: per input channel 16 multiply-adds for 4 outputs, where the convolution takes 36.
//! The sum over the input channels is 16 matrix products, one per point of the 4 x 4 transform:
//! `M[point][tile][o] = sum over c of V[point][c][tile] * U[point][o][c]`, which [`product`]
//! computes on AVX-512, thirty-two output channels by a run of tiles at a time, the tile of
//! the direct convolution's channel tiling with one tap.
//!
//! The transforms are additions and subtractions, and halves in `G`, so the error is of the
//! order of the direct sum's: `direct_conv::tests` holds the op to a term-by-term f64 sum within
//! 1e-5, and `enclave/tests/plan.rs` the served plan to tract's on every model.

#![deny(unsafe_op_in_unsafe_fn)]
#![allow(unsafe_code)] // reason: the product tile's raw-pointer loads and stores, bounds checked before the tile

use crate::direct_conv::CHANNEL_TILE as CHANNELS;

/// Points of a transformed tile: 4 x 4, row-major.
pub const POINTS: usize = 16;

/// `G g Gt` for the 3 x 3 weights `g` (row-major) of one output channel and one input channel,
/// in f64 and rounded once. `G` is `[1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]`.
pub fn transform_weights(g: &[f32]) -> [f32; POINTS] {
    const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
    assert_eq!(g.len(), 9, "3 x 3 weights");
    // `G g`, 4 x 3, then times `Gt`, 4 x 4.
    let gg: [[f64; 3]; 4] = std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| G[i][k] * g[3 * k + j] as f64).sum()));
    std::array::from_fn(|p| (0..3).map(|k| gg[p / 4][k] * G[p % 4][k]).sum::<f64>() as f32)
}

/// One input channel's row of tiles `ty` transformed, `Bt d B` for each of its `tw` tiles, into
/// `v`: point `p` of tile `tx` at `v[p * point_stride + at + tx]`.
///
/// `phases` are the channel's padded plane split into four phase planes of `phase_w` columns and
/// `phase_len` floats each, phase `(py, px)` holding the padded plane's rows `2r + py` and columns
/// `2x + px` (the direct convolution's planes at stride 2), so that every tile's columns
/// `2tx .. 2tx + 4` are two contiguous rows of each phase: column `2tx + j` is phase `j % 2`'s
/// `tx + j / 2`. `rows` is scratch of `8 * (tw + 1)` floats. `Bt` is
/// `[1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`.
///
/// Safe code; compiled for AVX-512F, so that its loops over the tiles run sixteen wide.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)] // reason: the phase planes' geometry and the transform's place, each named at the call
pub fn transform_input(
    phases: &[f32],
    phase_w: usize,
    phase_len: usize,
    ty: usize,
    tw: usize,
    rows: &mut [f32],
    v: &mut [f32],
    point_stride: usize,
    at: usize,
) {
    let n = tw + 1;
    // Row `i` of the tiles' patches (padded row `2ty + i`), its even columns (`px` 0) or odd.
    let row = |i: usize, px: usize| &phases[((i % 2) * 2 + px) * phase_len + (ty + i / 2) * phase_w..][..n];
    // `Bt d`: the four rows combined, even and odd columns apart.
    let rows = &mut rows[..8 * n];
    // (Each loop zips slices of one length, so that it runs by vectors with no bounds checks.)
    let combine = |out: &mut [f32], a: &[f32], b: &[f32], f: fn(f32, f32) -> f32| {
        out.iter_mut().zip(a).zip(b).for_each(|((v, &a), &b)| *v = f(a, b));
    };
    for px in 0..2 {
        let (r0, r1, r2, r3) = (row(0, px), row(1, px), row(2, px), row(3, px));
        let mut k = rows[4 * px * n..][..4 * n].chunks_exact_mut(n);
        let mut next = || k.next().expect("four rows");
        combine(next(), r0, r2, |a, b| a - b);
        combine(next(), r1, r2, |a, b| a + b);
        combine(next(), r2, r1, |a, b| a - b);
        combine(next(), r1, r3, |a, b| a - b);
    }
    // Then `B`: each combined row's columns `2tx + j`, even `e` and odd `o`, `tx` and `tx + 1`.
    for k in 0..4 {
        let (e, o) = (&rows[k * n..][..n], &rows[(4 + k) * n..][..n]);
        let point = |j: usize| (4 * k + j) * point_stride + at;
        combine(&mut v[point(0)..][..tw], &e[..tw], &e[1..], |a, b| a - b);
        combine(&mut v[point(1)..][..tw], &o[..tw], &e[1..], |a, b| a + b);
        combine(&mut v[point(2)..][..tw], &e[1..], &o[..tw], |a, b| a - b);
        combine(&mut v[point(3)..][..tw], &o[..tw], &o[1..], |a, b| a - b);
    }
}

/// One point's product for output channels `first .. first + CHANNELS` at the `R` tiles
/// `t0 ..`: `m[t][first + j] = sum over c of u[c][j] * v[c * stride + t]`, for `u` the point's
/// transformed weights of those channels, `[c][CHANNELS]`, and `m` rows of `o` channels per tile.
/// Fourteen or sixteen vectors of sums in registers over all the input channels; per channel, two
/// vectors of weights, each tile's value broadcast.
///
/// # Safety
/// The CPU has AVX-512F. Every other bound is checked here, before the loads.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)] // reason: the two operands' layouts and the tile's place, each named at the call
pub unsafe fn product<const R: usize>(u: &[f32], v: &[f32], stride: usize, t0: usize, m: &mut [f32], o: usize, first: usize) {
    use std::arch::x86_64::*;
    const LANES: usize = 16;
    let c = u.len() / CHANNELS;
    assert!(c > 0 && u.len() == c * CHANNELS);
    assert!((c - 1) * stride + t0 + R <= v.len());
    assert!(first + CHANNELS <= o && (t0 + R - 1) * o + first + CHANNELS <= m.len());
    // SAFETY: the asserts above bound every pointer below: `CHANNELS` weights per input channel
    // `ci < c`; `R` values from `ci * stride + t0`; `CHANNELS` floats from `first` in the rows
    // `t0 .. t0 + R` of `o` floats. Loads and stores are unaligned ones.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for ci in 0..c {
            let w = u.as_ptr().add(ci * CHANNELS);
            let w = [_mm512_loadu_ps(w), _mm512_loadu_ps(w.add(LANES))];
            let x = v.as_ptr().add(ci * stride + t0);
            for (p, a) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*x.add(p));
                a[0] = _mm512_fmadd_ps(w[0], x, a[0]);
                a[1] = _mm512_fmadd_ps(w[1], x, a[1]);
            }
        }
        for (p, a) in acc.iter().enumerate() {
            let row = m.as_mut_ptr().add((t0 + p) * o + first);
            _mm512_storeu_ps(row, a[0]);
            _mm512_storeu_ps(row.add(LANES), a[1]);
        }
    }
}

/// Tile `t`'s 2 x 2 outputs of all `o` channels from its sums, `At M A` plus the bias, into `y`:
/// output `(dy, dx)` of channel `k` at `y[(2 * dy + dx) * o + k]`. Point `p` of the tile's sums
/// is `m[p * point_stride + t * o ..][..o]`. `At` is `[1 1 1 0; 0 1 -1 -1]`.
///
/// Safe code; compiled for AVX-512F, so that its loop over the channels runs sixteen wide.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub fn transform_output(m: &[f32], point_stride: usize, t: usize, o: usize, bias: &[f32], y: &mut [f32]) {
    let p: [&[f32]; POINTS] = std::array::from_fn(|p| &m[p * point_stride + t * o..][..o]);
    let bias = &bias[..o];
    let [y00, y01, y10, y11] = y[..4 * o].get_disjoint_mut([0..o, o..2 * o, 2 * o..3 * o, 3 * o..4 * o]).expect("four outputs");
    // Every slice of one length: the loop runs by vectors with no bounds checks.
    let (y00, y01, y10, y11) = (&mut y00[..o], &mut y01[..o], &mut y10[..o], &mut y11[..o]);
    for k in 0..o {
        // `At M`: the rows' sum and difference, per column `j`.
        let s: [f32; 4] = std::array::from_fn(|j| p[j][k] + p[4 + j][k] + p[8 + j][k]);
        let d: [f32; 4] = std::array::from_fn(|j| p[4 + j][k] - p[8 + j][k] - p[12 + j][k]);
        // Then `A`.
        y00[k] = s[0] + s[1] + s[2] + bias[k];
        y01[k] = s[1] - s[2] - s[3] + bias[k];
        y10[k] = d[0] + d[1] + d[2] + bias[k];
        y11[k] = d[1] - d[2] - d[3] + bias[k];
    }
}
