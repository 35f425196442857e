//! One correction to tract's choice of matrix-product kernel on x86-64 with
//! AVX-512 or AVX2 and FMA.
//!
//! tract-linalg picks the kernel of each product from a cost model fitted on
//! plain products (`intel_avx512_linear.rs`, `amd_fma_linear.rs` and their
//! kin), asking a ladder of "tiers" in turn. For products of few terms over many columns
//! (`k` at most [`MAX_K`], `n` at least [`MIN_N`]: a first convolution over
//! three colour channels, whose patches tract gathers from the image as the
//! product runs), it picks a narrow kernel of three columns
//! (`fma_mmm_f32_32x3`) on both kinds of machine. A kernel of eight columns
//! runs such a product at two to three times the speed, its patches (which
//! tract then gathers beforehand) included. Measured with `bench profile`,
//! every x86 kernel forced in turn (BENCHMARKS.md "Engine levers"), on
//! EfficientNet-Lite0's stem (m 32, k 27, n 12544):
//! - a 2-core Intel Xeon (family 6 model 167, AVX-512): 1.33-1.38 ms with
//!   tract's pick, 0.62-0.75 ms with [`AVX512_KERNEL`];
//! - a 2-core AMD EPYC (family 25 model 1, AVX2 and FMA, no AVX-512):
//!   1.81 ms with tract's pick and its padding, 1.06 ms with [`FMA_KERNEL`]
//!   (the least of 16 runs each).
//!
//! The other products of EfficientNet-Lite0 and ResNet18 lose little to
//! their fastest kernel (on the Xeon at most 0.14 ms each, 2-7% in all), so
//! this tier answers for this shape alone and leaves every other product to
//! tract's own tiers.
//!
//! It is a tier in tract's own registry (`MmmTier`, through tract's re-export
//! of `inventory`), above tract's x86-64 tiers; no tract source changes and
//! no `unsafe`. On a machine with neither, the tier does not apply and tract
//! asks its own tiers, as it does for every query this tier declines. Being
//! in the registry, the tier holds for every plan the process builds,
//! tract's default plan that `enclave/tests/plan.rs` compares against
//! included; the served answers are also checked against the PyTorch
//! reference (`enclave/tests/server.rs`, Chelsea's top-5).

use tract_onnx::prelude::DatumType;
use tract_onnx::tract_core::knobs::inventory;
use tract_onnx::tract_core::tract_linalg::isa::{Arch, Isa, IsaSet};
use tract_onnx::tract_core::tract_linalg::mmm::{Query, Suitable};
use tract_onnx::tract_core::tract_linalg::mmm_tiers::MmmTier;
use tract_onnx::tract_core::tract_linalg::MmmDispatch;

/// The kernel this tier names for the products it claims, with AVX-512...
pub const AVX512_KERNEL: &str = "avx512_mmm_f32_16x8";
/// ...and with AVX2 and FMA but not AVX-512.
pub const FMA_KERNEL: &str = "fma_mmm_f32_8x8";
/// Products of at most this many terms per output...
pub const MAX_K: usize = 64;
/// ...over at least this many columns are claimed.
pub const MIN_N: usize = 1024;

/// Whether the tier applies on a machine: AVX-512, or AVX2 and FMA.
pub fn applies(isa: &IsaSet) -> bool {
    isa.has(Isa::X86_64Avx512f) || (isa.has(Isa::X86_64Avx2) && isa.has(Isa::X86_64Fma))
}

/// The tier's answer: for an f32 product of known `k <= MAX_K` and
/// `n >= MIN_N`, [`AVX512_KERNEL`] with AVX-512 and [`FMA_KERNEL`] without;
/// no opinion otherwise.
pub fn preferred(isa: &IsaSet, accumulator: DatumType, query: &Query, _suitable: &[Suitable]) -> Option<&'static str> {
    let claimed = accumulator == DatumType::F32
        && query.k.is_some_and(|k| k <= MAX_K)
        && query.n.is_some_and(|n| n >= MIN_N);
    let kernel = if isa.has(Isa::X86_64Avx512f) { AVX512_KERNEL } else { FMA_KERNEL };
    claimed.then_some(kernel)
}

/// The kernel tract runs on this machine for a product this tier claims
/// (EfficientNet-Lite0's stem: m 32, k 27, n 12544): this tier's kernel
/// where it applies, tract's own pick elsewhere. The start-up log names it.
pub fn kernel_here() -> String {
    let query = Query::plain(DatumType::F32, Some(32), Some(27), Some(12544));
    MmmDispatch::native().pick(&query).map_or_else(|| "none".into(), |s| s.0.name().to_string())
}

inventory::submit! {
    MmmTier {
        arch: Some(Arch::X86_64),
        // tract's x86-64 tiers use 1 to 8; a tier is asked in descending order.
        precedence: 9,
        name: "enclave-few-terms-many-columns",
        applies,
        preferred,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tract_runs_the_kernel_for_the_claimed_shape_only() {
        // tract's own dispatch, asked for EfficientNet-Lite0's stem on this machine.
        let stem = kernel_here();
        if std::is_x86_feature_detected!("avx512f") {
            assert_eq!(stem, AVX512_KERNEL);
        } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            assert_eq!(stem, FMA_KERNEL);
        } else {
            assert!(stem != AVX512_KERNEL && stem != FMA_KERNEL, "neither: tract's own tiers answer, not {stem}");
        }
        // The tier's answers on tract's x86-64 rungs; ResNet18's first
        // convolution has k 147: not claimed.
        let rung = |level| IsaSet::ladder(Arch::X86_64, level);
        let (avx, fma, avx512) = (rung(1), rung(2), rung(3));
        assert!(!applies(&avx) && applies(&fma) && applies(&avx512));
        let query = |k, n| Query::plain(DatumType::F32, Some(32), Some(k), Some(n));
        assert_eq!(preferred(&avx512, DatumType::F32, &query(27, 12544), &[]), Some(AVX512_KERNEL));
        assert_eq!(preferred(&fma, DatumType::F32, &query(27, 12544), &[]), Some(FMA_KERNEL));
        for isa in [fma, avx512] {
            assert_eq!(preferred(&isa, DatumType::F32, &query(147, 12544), &[]), None);
            assert_eq!(preferred(&isa, DatumType::F32, &query(27, 96), &[]), None);
            assert_eq!(preferred(&isa, DatumType::I32, &query(27, 12544), &[]), None);
            let unknown_n = Query::plain(DatumType::F32, Some(32), Some(27), None);
            assert_eq!(preferred(&isa, DatumType::F32, &unknown_n, &[]), None);
        }
    }
}
