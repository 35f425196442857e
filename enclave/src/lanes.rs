//! Code compiled for more than one vector width, and run on the widest this CPU has: the
//! preprocessing's loops (the resampler, [`crate::resample`], and the JPEG decoder,
//! [`crate::jpeg`]) are written once as plain Rust, and [`Lanes::run`] runs them inside a
//! function compiled for AVX2 or AVX-512F once the CPU is seen to have it, so that the
//! compiler picks that width's instructions. The same source each time, and integer
//! arithmetic, so the same bytes on every width; the tests hold each width to the reference.
//!
//! The `unsafe` here is the calls of those functions, which need the CPU to have their
//! instructions: [`Lanes::run`] checks first.
#![allow(unsafe_code)] // reason: the calls of the functions compiled for AVX2 and AVX-512F

/// The instructions some code is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lanes {
    /// The target's baseline (SSE2 on x86-64): 128-bit vectors, four 32-bit lanes.
    Baseline,
    /// AVX2: 256-bit vectors, eight 32-bit lanes.
    Avx2,
    /// AVX-512F: 512-bit vectors, sixteen 32-bit lanes.
    Avx512,
}

impl Lanes {
    pub const ALL: [Lanes; 3] = [Lanes::Baseline, Lanes::Avx2, Lanes::Avx512];

    /// The widest this CPU has.
    pub fn widest() -> Lanes {
        Lanes::ALL.into_iter().rev().find(|l| l.available()).unwrap_or(Lanes::Baseline)
    }

    /// Whether this CPU has `self`'s instructions.
    pub fn available(self) -> bool {
        match self {
            Lanes::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            Lanes::Avx2 => is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Lanes::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// `f()`, compiled for `self` (which this CPU must have). Only what is inlined into the
    /// function compiled for `self` gets its instructions: so `f` is an `#[inline(always)]`
    /// closure, and the functions it calls are `#[inline(always)]` too. (Without the closure's
    /// attribute, the compiler kept the closure a baseline function: the JPEG decode gained
    /// nothing.)
    pub fn run<R>(self, f: impl FnOnce() -> R) -> R {
        assert!(self.available(), "this CPU has no {self:?}");
        match self {
            // SAFETY: this CPU has AVX-512F (asserted above).
            #[cfg(target_arch = "x86_64")]
            Lanes::Avx512 => unsafe { on_avx512(f) },
            // SAFETY: this CPU has AVX2 (asserted above).
            #[cfg(target_arch = "x86_64")]
            Lanes::Avx2 => unsafe { on_avx2(f) },
            _ => f(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn on_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn on_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}
