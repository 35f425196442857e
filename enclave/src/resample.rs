//! The resampler's loops: the centre crop's pixels computed from the window of source pixels it
//! maps onto, sixteen output rows at a time. [`crate::preprocess`] says what is computed (the
//! `image` crate's `resize` then the crop, to the bit) and builds the filter taps; this module
//! runs them.
//!
//! Both passes sum their taps in order, one product and one addition at a time, as the `image`
//! crate does (never a fused multiply-add, which rounds once instead of twice), so the bytes are
//! the same on every vector width. What the vector lanes hold differs between the passes:
//! - the vertical pass runs along the source rows: [`SPAN`] window values of one output row at a
//!   time (the window's RGB bytes, converted to floats as they are read), their sums kept in
//!   registers over all the taps;
//! - the horizontal pass runs across output rows: each window value's sums for the [`ROWS`]
//!   output rows of the group form one vector, so an output pixel's taps are vector operations
//!   on [`ROWS`] pixels at once, none waiting on another.
//!
//! Between the two, each 16 x 16 block of sums is transposed; after the horizontal pass, each
//! 16 x 16 block of bytes, back into rows of RGB bytes. The code is compiled for each
//! [`Lanes`] and runs on the widest this CPU has. The `unsafe` here is the AVX-512 transpose of
//! sums (the compiler turns the plain one into sixteen-way scatters there) and the calls of the
//! AVX2 and AVX-512F copies, once the CPU is seen to have them.
#![allow(unsafe_code)] // reason: the AVX-512 transpose's loads and stores of one 16 x 16 block, and the calls of the functions compiled for AVX2 and AVX-512F

use image::RgbImage;

/// Output rows resampled together: the lanes of the horizontal pass.
const ROWS: usize = 16;

/// Window values per step of the vertical pass: four AVX-512 vectors of sums, held in registers
/// over all the taps.
const SPAN: usize = 64;

/// One output pixel's filter taps along one axis: the first source pixel it reads and the
/// normalised weights from there on.
pub struct Taps {
    pub first: usize,
    pub weights: Vec<f32>,
}

/// The instructions the resampler is compiled for. The same code each time: only the vector
/// width the compiler picks, and the transpose on AVX-512F, differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lanes {
    /// The target's baseline (SSE2 on x86-64): four floats a vector.
    Baseline,
    /// AVX2: eight floats a vector.
    Avx2,
    /// AVX-512F: sixteen floats a vector, a whole group's rows.
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
}

/// The crop, `cols.len()` x `rows.len()` RGB pixels row by row, of `img` filtered with `cols`
/// horizontally and `rows` vertically, on `lanes` (which this CPU must have).
pub fn crop(img: &RgbImage, cols: &[Taps], rows: &[Taps], lanes: Lanes) -> Vec<u8> {
    assert!(lanes.available(), "this CPU has no {lanes:?}");
    match lanes {
        // SAFETY: this CPU has AVX-512F (asserted above).
        #[cfg(target_arch = "x86_64")]
        Lanes::Avx512 => unsafe { crop_avx512(img, cols, rows) },
        // SAFETY: this CPU has AVX2 (asserted above).
        #[cfg(target_arch = "x86_64")]
        Lanes::Avx2 => unsafe { crop_avx2(img, cols, rows) },
        _ => crop_with(img, cols, rows, transpose),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn crop_avx512(img: &RgbImage, cols: &[Taps], rows: &[Taps]) -> Vec<u8> {
    crop_with(img, cols, rows, |m| transpose_avx512(m))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn crop_avx2(img: &RgbImage, cols: &[Taps], rows: &[Taps]) -> Vec<u8> {
    crop_with(img, cols, rows, transpose)
}

/// [`crop`]'s loops, inlined into each compiled copy, with the copy's transpose of sums.
#[inline(always)]
fn crop_with(img: &RgbImage, cols: &[Taps], rows: &[Taps], transpose_sums: impl Fn(&mut [[f32; ROWS]; ROWS])) -> Vec<u8> {
    // The source columns the crop reads: [first, end), `n` bytes of each row.
    let first = cols.iter().map(|t| t.first).min().unwrap_or(0);
    let end = cols.iter().map(|t| t.first + t.weights.len()).max().unwrap_or(0);
    let (src, stride) = (img.as_raw(), img.width() as usize * 3);
    let n = (end - first) * 3;
    let line = cols.len() * 3;
    // The group's vertical sums: for each window value, one per output row of the group.
    let mut sums = vec![[0f32; ROWS]; n.div_ceil(SPAN) * SPAN];
    // The group's output bytes: for each byte of an output row, one per row of the group.
    let mut bytes = vec![[0u8; ROWS]; line.div_ceil(ROWS) * ROWS];
    let mut out = vec![0u8; rows.len() * line];
    for (group, out) in rows.chunks(ROWS).zip(out.chunks_mut(ROWS * line)) {
        // Vertical pass, SPAN window values of one output row at a time, taps in order.
        for (span, sums) in sums.chunks_exact_mut(SPAN).enumerate() {
            let at = first * 3 + span * SPAN;
            let mut block = [[0f32; SPAN]; ROWS];
            for (t, block) in group.iter().zip(&mut block) {
                let mut acc = [0f32; SPAN];
                for (k, &wt) in t.weights.iter().enumerate() {
                    for (a, p) in acc.iter_mut().zip(values(src, (t.first + k) * stride + at)) {
                        *a += f32::from(p) * wt;
                    }
                }
                *block = acc;
            }
            for (q, sums) in sums.chunks_exact_mut(ROWS).enumerate() {
                let sums: &mut [[f32; ROWS]; ROWS] = sums.try_into().expect("ROWS window values");
                for (s, b) in sums.iter_mut().zip(&block) {
                    s.copy_from_slice(&b[q * ROWS..(q + 1) * ROWS]);
                }
                transpose_sums(sums);
            }
        }
        // Horizontal pass, the group's rows in the lanes, taps in order, rounded to bytes.
        for (c, pixel) in cols.iter().zip(bytes.chunks_exact_mut(3)) {
            let at = (c.first - first) * 3;
            for (channel, bytes) in pixel.iter_mut().enumerate() {
                let mut acc = [0f32; ROWS];
                for (k, &wt) in c.weights.iter().enumerate() {
                    // at + 3k + channel < n: the tap's pixel is inside the window.
                    for (a, s) in acc.iter_mut().zip(&sums[at + 3 * k + channel]) {
                        *a += s * wt;
                    }
                }
                *bytes = acc.map(to_byte);
            }
        }
        // Back to rows of RGB bytes, 16 bytes of each row at a time.
        for (q, block) in bytes.chunks_exact(ROWS).enumerate() {
            let mut block: [[u8; ROWS]; ROWS] = block.try_into().expect("ROWS bytes");
            transpose(&mut block);
            let (at, m) = (q * ROWS, ROWS.min(line - q * ROWS));
            for (row, b) in out.chunks_exact_mut(line).zip(&block) {
                row[at..at + m].copy_from_slice(&b[..m]);
            }
        }
    }
    out
}

/// The SPAN bytes of `src` from `at` on, zeros past its end: the last window values of the
/// image's last rows; values past the window are summed but never read.
#[inline(always)]
fn values(src: &[u8], at: usize) -> [u8; SPAN] {
    match src.get(at..at + SPAN) {
        Some(v) => v.try_into().expect("SPAN bytes"),
        None => {
            let mut v = [0u8; SPAN];
            let tail = src.get(at..).unwrap_or_default();
            v[..tail.len()].copy_from_slice(tail);
            v
        }
    }
}

/// `m[i][j]` and `m[j][i]` swapped.
#[inline(always)]
fn transpose<T: Copy>(m: &mut [[T; ROWS]; ROWS]) {
    let t = *m;
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = t[j][i];
        }
    }
}

/// [`transpose`] in sixteen registers: four rounds of interleaving row i with row i + 8 into
/// rows 2i and 2i + 1 (the lower halves, then the upper ones) turn rows into columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose_avx512(m: &mut [[f32; ROWS]; ROWS]) {
    use std::arch::x86_64::*;
    const HALF: usize = ROWS / 2;
    let lower = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let upper = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    // SAFETY: each row is 16 floats, one unaligned vector's load.
    let mut r: [__m512; ROWS] = std::array::from_fn(|i| unsafe { _mm512_loadu_ps(m[i].as_ptr()) });
    for _ in 0..4 {
        r = std::array::from_fn(|i| {
            let (a, b) = (r[i / 2], r[i / 2 + HALF]);
            _mm512_permutex2var_ps(a, if i % 2 == 0 { lower } else { upper }, b)
        });
    }
    for (row, v) in m.iter_mut().zip(r) {
        // SAFETY: each row is 16 floats, one unaligned vector's store.
        unsafe { _mm512_storeu_ps(row.as_mut_ptr(), v) };
    }
}

/// `v.clamp(0.0, 255.0).round() as u8` (halves away from zero, NaN to 0), in operations that
/// vectorise on every [`Lanes`]: adding 2^23 leaves the nearest integer (halves to even) in the
/// low bits, and a remainder of exactly one half means a half rounded down, so one is added.
#[inline(always)]
pub(crate) fn to_byte(v: f32) -> u8 {
    const TWO_23: f32 = 8_388_608.0;
    // Not `clamp`, which keeps a NaN: `max` makes it 0.
    #[allow(clippy::manual_clamp)]
    let v = v.max(0.0).min(255.0);
    let m = v + TWO_23;
    let nearest = m - TWO_23;
    (m.to_bits() as u8).wrapping_add(u8::from(v - nearest >= 0.5))
}

#[cfg(test)]
mod tests {
    use super::{to_byte, transpose, ROWS};

    fn reference(v: f32) -> u8 {
        v.clamp(0.0, 255.0).round() as u8
    }

    #[test]
    fn to_byte_rounds_as_round_does() {
        // A fine grid over the range and past both ends, the floats either side of every half
        // (where rounding turns) and of every integer, odd values, then a stride through all
        // 2^32 bit patterns.
        let grid = (-2048..=270 * 1024).map(|i| i as f32 / 1024.0);
        let edges = (0..=256).flat_map(|k| {
            [k as f32, k as f32 + 0.5].into_iter().flat_map(|x| {
                let b = x.to_bits();
                [f32::from_bits(b.saturating_sub(1)), x, f32::from_bits(b + 1)]
            })
        });
        let odd = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, f32::MAX, f32::MIN_POSITIVE, 1e-30];
        let bits = (0..u32::MAX / 9973).map(|i| f32::from_bits(i * 9973));
        for v in grid.chain(edges).chain(odd).chain(bits) {
            assert_eq!(to_byte(v), reference(v), "at {v:e} ({:#x})", v.to_bits());
        }
    }

    #[test]
    fn the_transposes_swap_rows_and_columns() {
        let mut m: [[u32; ROWS]; ROWS] = std::array::from_fn(|i| std::array::from_fn(|j| (i * 100 + j) as u32));
        transpose(&mut m);
        for (i, row) in m.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert_eq!(v, (j * 100 + i) as u32);
            }
        }
        #[cfg(target_arch = "x86_64")]
        if super::Lanes::Avx512.available() {
            let mut f: [[f32; ROWS]; ROWS] = std::array::from_fn(|i| std::array::from_fn(|j| (i * 100 + j) as f32));
            // SAFETY: this CPU has AVX-512F.
            unsafe { super::transpose_avx512(&mut f) };
            for (i, row) in f.iter().enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    assert_eq!(v, (j * 100 + i) as f32);
                }
            }
        }
    }
}
