//! The resampler's loops: the centre crop's pixels computed from the window of source pixels it
//! maps onto. [`crate::preprocess`] says what is computed (Pillow's `resize` then the crop, to
//! the bit) and builds the filter taps; this module runs them, [`BAND`] output rows at a time.
//!
//! The arithmetic is Pillow's (`Resample.c`, 8 bits per channel): integer weights of
//! [`PRECISION`] fractional bits, sums in 32-bit integers from a half for rounding, the
//! horizontal pass first, its result rounded and clamped to bytes, then the vertical pass over
//! those bytes, rounded and clamped again. Integer sums are exact in any order, so the bytes are
//! the same on every vector width. What the vector lanes hold differs between the passes:
//! - the horizontal pass runs across source rows: each window byte of the [`ROWS`] source rows
//!   of a group forms one vector (the group's window transposed in blocks of 16 x 16 bytes), so
//!   an output pixel's taps are vector operations on [`ROWS`] rows at once, none waiting on
//!   another; its bytes are transposed back into rows;
//! - the vertical pass runs along the rows it reads: [`SPAN`] bytes of one output row at a time,
//!   their sums kept in registers over all the taps.
//!
//! The code is compiled for each [`Lanes`] and runs on the widest this CPU has
//! ([`crate::lanes`]); no `unsafe` here.

use image::RgbImage;

pub use crate::lanes::Lanes;

/// Fractional bits of the filter weights: Pillow's 32 - 8 - 2, so that a sum of 8-bit values
/// times weights whose magnitudes add up to less than 2 stays inside 32 bits.
pub const PRECISION: u32 = 22;

/// Source rows resampled together: the lanes of the horizontal pass.
const ROWS: usize = 16;

/// Output rows resampled together: the horizontal pass keeps the source rows of one band, so
/// its memory is bounded by the band, whatever the image (see `RESAMPLE_RESERVE` in
/// [`crate::preprocess`]); the rows two bands share are filtered twice.
const BAND: usize = 56;

/// Bytes per step of the vertical pass: four AVX-512 vectors of sums, held in registers over
/// all the taps.
const SPAN: usize = 64;

/// One output pixel's filter taps along one axis: the first source pixel it reads and the
/// weights from there on, normalised to a sum of one and in fixed point of [`PRECISION`] bits.
pub struct Taps {
    pub first: usize,
    pub weights: Vec<i32>,
}

/// The crop, `cols.len()` x `rows.len()` RGB pixels row by row, of `img` filtered with `cols`
/// horizontally and `rows` vertically, on `lanes` (which this CPU must have).
pub fn crop(img: &RgbImage, cols: &[Taps], rows: &[Taps], lanes: Lanes) -> Vec<u8> {
    lanes.run(#[inline(always)] || crop_with(img, cols, rows))
}

/// [`crop`]'s loops, inlined into each compiled copy: [`BAND`] output rows at a time, each band
/// the horizontal pass over the source rows its taps read, then the vertical pass over those.
#[inline(always)]
fn crop_with(img: &RgbImage, cols: &[Taps], rows: &[Taps]) -> Vec<u8> {
    let span = |taps: &[Taps]| {
        let first = taps.iter().map(|t| t.first).min().unwrap_or(0);
        (first, taps.iter().map(|t| t.first + t.weights.len()).max().unwrap_or(first))
    };
    // The columns the crop reads: source columns [left, right).
    let (left, right) = span(cols);
    let (src, stride) = (img.as_raw(), img.width() as usize * 3);
    // Window bytes of one source row, and bytes of one output row (padded to SPAN in `mid`).
    let (n, line) = ((right - left) * 3, cols.len() * 3);
    let padded = line.div_ceil(SPAN) * SPAN;
    // The group's window, transposed: for each window byte, one per row of the group.
    let mut window = vec![[0u8; ROWS]; n.div_ceil(ROWS) * ROWS];
    // The group's output bytes: for each byte of an output row, one per row of the group.
    let mut bytes = vec![[0u8; ROWS]; line.div_ceil(ROWS) * ROWS];
    // The horizontal pass's rows of one band, as many as the largest band reads. Every byte the
    // vertical pass keeps was written for the band; the padding's stale bytes are never kept.
    let most = rows.chunks(BAND).map(span).map(|(top, bottom)| bottom - top).max().unwrap_or(0);
    let mut mid = vec![0u8; most * padded];
    let mut out = vec![0u8; rows.len() * line];
    for (band, out) in rows.chunks(BAND).zip(out.chunks_mut(BAND * line)) {
        // The source rows the band reads: [top, bottom).
        let (top, bottom) = span(band);

        // Horizontal pass: those rows filtered along the row, ROWS rows at a time.
        let mid = &mut mid[..(bottom - top) * padded];
        for (group, mid) in (top..bottom).step_by(ROWS).zip(mid.chunks_mut(ROWS * padded)) {
            let count = ROWS.min(bottom - group);
            for (q, window) in window.chunks_exact_mut(ROWS).enumerate() {
                let (at, m) = (q * ROWS, ROWS.min(n - q * ROWS));
                let mut block = [[0u8; ROWS]; ROWS];
                for (r, b) in block.iter_mut().enumerate().take(count) {
                    // Inside the image: rows below `bottom` <= height, bytes below `right` * 3.
                    let from = (group + r) * stride + left * 3 + at;
                    match src.get(from..from + ROWS) {
                        Some(whole) if m == ROWS => b.copy_from_slice(whole),
                        _ => b[..m].copy_from_slice(&src[from..from + m]),
                    }
                }
                transpose(&mut block);
                let window: &mut [[u8; ROWS]; ROWS] = window.try_into().expect("ROWS window bytes");
                *window = block;
            }
            for (c, pixel) in cols.iter().zip(bytes.chunks_exact_mut(3)) {
                let at = (c.first - left) * 3;
                for (channel, bytes) in pixel.iter_mut().enumerate() {
                    let mut acc = [HALF; ROWS];
                    for (&w, values) in c.weights.iter().zip(window[at + channel..].iter().step_by(3)) {
                        for (a, &v) in acc.iter_mut().zip(values) {
                            *a = a.wrapping_add(i32::from(v).wrapping_mul(w));
                        }
                    }
                    *bytes = acc.map(clip);
                }
            }
            for (q, block) in bytes.chunks_exact(ROWS).enumerate() {
                let mut block: [[u8; ROWS]; ROWS] = block.try_into().expect("ROWS bytes");
                transpose(&mut block);
                // Whole blocks: the bytes past `line` land in the row's padding, never read.
                for (row, b) in mid.chunks_exact_mut(padded).zip(&block).take(count) {
                    row[q * ROWS..(q + 1) * ROWS].copy_from_slice(b);
                }
            }
        }

        // Vertical pass: each output row from the rows of `mid` its taps read, SPAN bytes at a time.
        for (t, out) in band.iter().zip(out.chunks_exact_mut(line)) {
            let first = (t.first - top) * padded;
            for (at, out) in (0..padded).step_by(SPAN).zip(out.chunks_mut(SPAN)) {
                let mut acc = [HALF; SPAN];
                for (k, &w) in t.weights.iter().enumerate() {
                    let values: &[u8; SPAN] = mid[first + k * padded + at..][..SPAN].try_into().expect("SPAN bytes");
                    for (a, &v) in acc.iter_mut().zip(values) {
                        *a = a.wrapping_add(i32::from(v).wrapping_mul(w));
                    }
                }
                for (o, &a) in out.iter_mut().zip(&acc) {
                    *o = clip(a);
                }
            }
        }
    }
    out
}

/// A sum's starting value: one half in fixed point, so that the shift in [`clip`] rounds.
const HALF: i32 = 1 << (PRECISION - 1);

/// A sum of bytes times weights back to a byte: its integer part, clamped to 0..=255.
/// (Wrapping arithmetic in the sums only keeps a bug from becoming a panic: the weights'
/// magnitudes add up to less than 2, so 255 x 2 x 2^22 + 2^21 < 2^31 and no sum wraps.)
#[inline(always)]
fn clip(sum: i32) -> u8 {
    (sum >> PRECISION).clamp(0, 255) as u8
}

/// `m[i][j]` and `m[j][i]` swapped, in four rounds that each interleave row i with row i + 8
/// into rows 2i and 2i + 1 (their first halves, then their second ones): byte shuffles that the
/// compiler emits as vector unpacks, where a plain element-by-element swap is 256 loads and stores.
#[inline(always)]
fn transpose(m: &mut [[u8; ROWS]; ROWS]) {
    const HALF: usize = ROWS / 2;
    let mut r = *m;
    for _ in 0..4 {
        r = std::array::from_fn(|i| {
            let (a, b, from) = (&r[i / 2], &r[i / 2 + HALF], (i % 2) * HALF);
            std::array::from_fn(|k| if k % 2 == 0 { a[from + k / 2] } else { b[from + k / 2] })
        });
    }
    *m = r;
}

#[cfg(test)]
mod tests {
    use super::{clip, transpose, PRECISION, ROWS};

    #[test]
    fn clip_rounds_and_clamps_as_pillow_does() {
        let one = 1 << PRECISION;
        assert_eq!(clip(super::HALF), 0);
        assert_eq!(clip(one - 1), 0);
        assert_eq!(clip(one), 1);
        assert_eq!(clip(254 * one + super::HALF), 254);
        assert_eq!(clip(300 * one), 255);
        assert_eq!(clip(i32::MAX), 255);
        assert_eq!(clip(-1), 0);
        assert_eq!(clip(i32::MIN), 0);
    }

    #[test]
    fn the_transpose_swaps_rows_and_columns() {
        let mut m: [[u8; ROWS]; ROWS] = std::array::from_fn(|i| std::array::from_fn(|j| (i * ROWS + j) as u8));
        transpose(&mut m);
        for (i, row) in m.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert_eq!(v, (j * ROWS + i) as u8);
            }
        }
    }
}
