//! One correction to tract's choice of matrix-product kernel on x86-64 with
//! AVX-512.
//!
//! tract-linalg picks the kernel of each product from a cost model fitted on
//! plain products (`intel_avx512_linear.rs`, `amd_avx512_linear.rs`), asking
//! a ladder of "tiers" in turn. For products of few terms over many columns
//! (`k` at most [`MAX_K`], `n` at least [`MIN_N`]: a first convolution over
//! three colour channels, whose patches tract gathers from the image as the
//! product runs), it picks a narrow 256-bit kernel (`fma_mmm_f32_32x3`) that
//! runs such a product at a third of the speed of the 16 x 8 AVX-512 kernel.
//! Measured with `bench profile` on a 2-core Intel Xeon (family 6 model 167),
//! every x86 kernel forced in turn (BENCHMARKS.md "Engine levers"):
//! EfficientNet-Lite0's stem (m 32, k 27, n 12544) takes 1.33-1.38 ms with
//! tract's pick, 0.62-0.75 ms with [`KERNEL`] (its patches, which tract then
//! gathers beforehand, included);
//! the other products of EfficientNet-Lite0 and ResNet18 lose at most 0.14 ms
//! each to their fastest kernel (2-7% in all), so this tier answers for this
//! shape alone and leaves every other product to tract's own tiers.
//!
//! It is a tier in tract's own registry (`MmmTier`, through tract's re-export
//! of `inventory`), above tract's x86-64 tiers; no tract source changes and
//! no `unsafe`. On a machine without AVX-512, tract finds no such kernel
//! suitable and asks its own tiers, as it does for every query this tier
//! declines. Being in the registry, the tier holds for every plan the process
//! builds, tract's default plan that `enclave/tests/plan.rs` compares against
//! included; the served answers are also checked against the PyTorch
//! reference (`enclave/tests/server.rs`, Chelsea's top-5).

use tract_onnx::prelude::DatumType;
use tract_onnx::tract_core::knobs::inventory;
use tract_onnx::tract_core::tract_linalg::isa::{Arch, Isa, IsaSet};
use tract_onnx::tract_core::tract_linalg::mmm::{Query, Suitable};
use tract_onnx::tract_core::tract_linalg::mmm_tiers::MmmTier;
use tract_onnx::tract_core::tract_linalg::MmmDispatch;

/// The kernel this tier names for the products it claims.
pub const KERNEL: &str = "avx512_mmm_f32_16x8";
/// Products of at most this many terms per output...
pub const MAX_K: usize = 64;
/// ...over at least this many columns are claimed.
pub const MIN_N: usize = 1024;

/// The tier's answer: [`KERNEL`] for an f32 product of known `k <= MAX_K` and
/// `n >= MIN_N`, no opinion otherwise.
pub fn preferred(_isa: &IsaSet, accumulator: DatumType, query: &Query, _suitable: &[Suitable]) -> Option<&'static str> {
    let claimed = accumulator == DatumType::F32
        && query.k.is_some_and(|k| k <= MAX_K)
        && query.n.is_some_and(|n| n >= MIN_N);
    claimed.then_some(KERNEL)
}

/// The kernel tract runs on this machine for a product this tier claims
/// (EfficientNet-Lite0's stem: m 32, k 27, n 12544): [`KERNEL`] on an x86-64
/// with AVX-512, tract's own pick elsewhere. The start-up log names it.
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
        applies: |isa| isa.has(Isa::X86_64Avx512f),
        preferred,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tract_runs_the_kernel_for_the_claimed_shape_only() {
        // tract's own dispatch, asked for EfficientNet-Lite0's stem.
        let stem = kernel_here();
        if std::is_x86_feature_detected!("avx512f") {
            assert_eq!(stem, KERNEL);
        } else {
            assert_ne!(stem, KERNEL, "no AVX-512: tract's own tiers answer");
        }
        // The tier's answers; ResNet18's first convolution has k 147: not claimed.
        let isa = IsaSet::of_arch(Arch::X86_64);
        let query = |k, n| Query::plain(DatumType::F32, Some(32), Some(k), Some(n));
        assert_eq!(preferred(&isa, DatumType::F32, &query(27, 12544), &[]), Some(KERNEL));
        assert_eq!(preferred(&isa, DatumType::F32, &query(147, 12544), &[]), None);
        assert_eq!(preferred(&isa, DatumType::F32, &query(27, 96), &[]), None);
        assert_eq!(preferred(&isa, DatumType::I32, &query(27, 12544), &[]), None);
        let unknown_n = Query::plain(DatumType::F32, Some(32), Some(27), None);
        assert_eq!(preferred(&isa, DatumType::F32, &unknown_n, &[]), None);
    }
}
