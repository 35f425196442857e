//! An x86-64 kernel for tract's channel-last depthwise convolution.
//!
//! With the convolutions channel-last ([`crate::model::CONV_TRANSFORM`]),
//! tract runs a depthwise convolution as, for each output position, a sum
//! over the kernel's taps of whole channel vectors. tract-linalg 0.23.9 has a
//! kernel for that inner step on aarch64 and wasm, and none on x86-64, where
//! tract falls back to a plain loop that reads and writes the output vector
//! once per tap, compiled for baseline x86-64 (SSE2: four lanes, no fused
//! multiply-add). This is that kernel for x86-64 with AVX2 and FMA, written
//! against tract's own interface ([`DepthwiseCF32`]) and registered in
//! tract's routine registry, so tract picks it on the machines that have the
//! instructions and keeps its loop on the others. No tract source changes.
//!
//! What it computes is the function's contract in tract-linalg (its aarch64
//! kernel documents it): point `i`, channel `c` is `bias[c]` plus, for every
//! tap `t`, `kernel[tap_indices[t] * k_stride + c] *
//! input[i * in_stride + offsets[t] + c]`. It keeps 32 channels in four
//! registers across all the taps and stores them once. The sums are fused
//! multiply-adds, so they round once where tract's loop rounds twice:
//! `enclave/tests/plan.rs` checks the served plan against tract's default
//! plan (every probability within 1e-5, same top-5) on every model.

#![deny(unsafe_op_in_unsafe_fn)]
#![allow(unsafe_code)] // reason: the kernel's raw-pointer loads and stores, under tract's contract for it

use tract_onnx::tract_core::knobs::inventory;
use tract_onnx::prelude::DatumType;
use tract_onnx::tract_core::tract_linalg::isa::{self, Arch, Isa, IsaReq};
use tract_onnx::tract_core::tract_linalg::routines::{self, Func, Routine, RoutineFactory};

/// The registry name of the kernel, as `bench profile` and the start-up log report it.
pub const NAME: &str = "enclave_avx2_depthwise_c_f32";

inventory::submit! {
    Routine {
        func: Func::DepthwiseC,
        arch: Some(Arch::X86_64),
        isa: IsaReq::ANY.needing(&[Isa::X86_64Avx2, Isa::X86_64Fma]),
        boost: 0,
        round_trip: false,
        factory: RoutineFactory::DepthwiseCF32 { name: NAME, run: depthwise_c_f32 },
    }
}

/// The name of the channel-last depthwise kernel tract runs on this machine:
/// [`NAME`] on an x86-64 with AVX2 and FMA, `None` (tract's own loop) on
/// one without.
pub fn kernel_here() -> Option<&'static str> {
    routines::best_for(Func::DepthwiseC, DatumType::F32, &isa::native()).map(|r| r.name())
}

/// tract-linalg's `DepthwiseCF32`: `len` output positions of `channels`
/// channels each (see the module's documentation for the sum).
///
/// # Safety
/// tract's contract for the function: `input.offset(i * in_stride +
/// offsets[t] + c)` and `kernel.add(tap_indices[t] * k_stride + c)` readable
/// for every tap `t`, every `i < len` and every `c < channels`; `channels`
/// values readable from `bias` and writable from `output.offset(i *
/// out_stride)` for every `i < len`; and the CPU has AVX2 and FMA, which the
/// registry checks before it hands the function out.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn depthwise_c_f32(
    input: *const f32,
    output: *mut f32,
    kernel: *const f32,
    tap_indices: &[usize],
    offsets: &[isize],
    bias: *const f32,
    channels: usize,
    k_stride: usize,
    len: usize,
    in_stride: isize,
    out_stride: isize,
) {
    use std::arch::x86_64::*;
    // SAFETY: every pointer below stays inside the ranges the caller vouches for (the function's
    // contract above); loads and stores are unaligned ones.
    unsafe {
        for i in 0..len as isize {
            let x = input.offset(i * in_stride);
            let y = output.offset(i * out_stride);
            let mut c = 0usize;
            while c + 32 <= channels {
                let mut a0 = _mm256_loadu_ps(bias.add(c));
                let mut a1 = _mm256_loadu_ps(bias.add(c + 8));
                let mut a2 = _mm256_loadu_ps(bias.add(c + 16));
                let mut a3 = _mm256_loadu_ps(bias.add(c + 24));
                for (&tap, &off) in tap_indices.iter().zip(offsets) {
                    let k = kernel.add(tap * k_stride + c);
                    let xt = x.offset(off).add(c);
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(xt), _mm256_loadu_ps(k), a0);
                    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(xt.add(8)), _mm256_loadu_ps(k.add(8)), a1);
                    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(xt.add(16)), _mm256_loadu_ps(k.add(16)), a2);
                    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(xt.add(24)), _mm256_loadu_ps(k.add(24)), a3);
                }
                _mm256_storeu_ps(y.add(c), a0);
                _mm256_storeu_ps(y.add(c + 8), a1);
                _mm256_storeu_ps(y.add(c + 16), a2);
                _mm256_storeu_ps(y.add(c + 24), a3);
                c += 32;
            }
            while c + 8 <= channels {
                let mut a = _mm256_loadu_ps(bias.add(c));
                for (&tap, &off) in tap_indices.iter().zip(offsets) {
                    let k = kernel.add(tap * k_stride + c);
                    a = _mm256_fmadd_ps(_mm256_loadu_ps(x.offset(off).add(c)), _mm256_loadu_ps(k), a);
                }
                _mm256_storeu_ps(y.add(c), a);
                c += 8;
            }
            while c < channels {
                let mut sum = *bias.add(c);
                for (&tap, &off) in tap_indices.iter().zip(offsets) {
                    sum = (*kernel.add(tap * k_stride + c)).mul_add(*x.offset(off).add(c), sum);
                }
                *y.add(c) = sum;
                c += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sum the kernel must compute, term by term, in f64.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        input: &[f32],
        kernel: &[f32],
        taps: &[usize],
        offsets: &[isize],
        bias: &[f32],
        channels: usize,
        k_stride: usize,
        len: usize,
        in_stride: isize,
        out_stride: isize,
        base: isize,
        out_len: usize,
    ) -> Vec<f32> {
        let mut out = vec![f32::NAN; out_len];
        for i in 0..len as isize {
            for c in 0..channels {
                let mut sum = f64::from(bias[c]);
                for (&t, &off) in taps.iter().zip(offsets) {
                    let x = input[(base + i * in_stride + off) as usize + c];
                    sum += f64::from(kernel[t * k_stride + c]) * f64::from(x);
                }
                out[(i * out_stride) as usize + c] = sum as f32;
            }
        }
        out
    }

    #[test]
    fn the_kernel_is_tract_s_choice_here_and_sums_every_tap_of_every_channel() {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            assert_eq!(kernel_here(), None);
            eprintln!("no AVX2 and FMA here: tract keeps its own loop, nothing to check");
            return;
        }
        assert_eq!(kernel_here(), Some(NAME));
        let run = routines::depthwise_c_f32().expect("tract hands out a channel-last kernel");
        // Channel counts that take every path: blocks of 32, of 8, and the one-by-one tail.
        for channels in [1, 7, 8, 9, 31, 32, 33, 40, 72, 100] {
            let (taps, offsets): (Vec<usize>, Vec<isize>) = {
                // A 3x3 window over rows of 5 positions, in the order tract lists a border zone's
                // taps: some taps missing (the zone's padding), offsets relative to the centre.
                let row = 5 * channels as isize;
                let window: [(usize, isize); 7] = [
                    (0, -row - channels as isize),
                    (1, -row),
                    (3, -(channels as isize)),
                    (4, 0),
                    (5, channels as isize),
                    (7, row),
                    (8, row + channels as isize),
                ];
                window.iter().copied().unzip()
            };
            let k_stride = channels + 3;
            let len = 4;
            let (in_stride, out_stride) = (2 * channels as isize, channels as isize + 5);
            let base = 6 * channels as isize + channels as isize;
            let input: Vec<f32> = (0..40 * channels + 64).map(|v| ((v * 37 % 101) as f32 - 50.0) / 17.0).collect();
            let kernel: Vec<f32> = (0..9 * k_stride).map(|v| ((v * 53 % 89) as f32 - 44.0) / 23.0).collect();
            let bias: Vec<f32> = (0..channels).map(|c| c as f32 / 7.0 - 1.0).collect();
            let out_len = (len - 1) * out_stride as usize + channels;
            let want = reference(&input, &kernel, &taps, &offsets, &bias, channels, k_stride, len, in_stride, out_stride, base, out_len);
            let mut got = vec![f32::NAN; out_len];
            // SAFETY: the function's contract holds: the registry handed it out, so this CPU has
            // AVX2 and FMA (checked above too); the input pointer starts 7 channel vectors
            // into `input`, and the 4 positions, 2 vectors apart, each read at most one row of 5
            // vectors plus one vector either side, all inside `input` (40 vectors and more); the
            // taps read kernel rows 0 to 8 of `k_stride` values, inside `kernel`; and the output
            // writes `channels` values at 4 positions `out_stride` apart, inside `got`.
            unsafe {
                run(
                    input.as_ptr().offset(base),
                    got.as_mut_ptr(),
                    kernel.as_ptr(),
                    &taps,
                    &offsets,
                    bias.as_ptr(),
                    channels,
                    k_stride,
                    len,
                    in_stride,
                    out_stride,
                )
            };
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                // The gaps between positions are never written.
                if w.is_nan() {
                    assert!(g.is_nan(), "channels {channels}: wrote element {j} between positions");
                } else {
                    assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "channels {channels}, element {j}: {g} vs {w}");
                }
            }
        }
    }
}
