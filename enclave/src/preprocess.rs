//! Image decoding and preprocessing: encoded bytes in, a normalised NCHW
//! tensor out.
//!
//! The steps are torchvision's, which the study used: decode, convert to RGB,
//! resize so the short side is `resize` pixels (aspect ratio kept), centre
//! crop `input_size` square, scale to [0,1], subtract `mean` and divide by
//! `std` per channel.
//!
//! Why it is built this way: an image's cost must not depend on its shape.
//! Resizing the whole image and then cropping (what torchvision does) makes a
//! 1 x 12000 image, 103 bytes as a PNG, into 256 x 3,072,000 pixels (2.3 GB)
//! before the crop throws all but 224 x 224 of them away. So [`resample`]
//! computes only the crop's pixels, straight from the source: the same
//! separable filter, fixed-point weights and rounding as Pillow's `resize`,
//! which torchvision calls (a test checks it equals Pillow's `resize` then
//! `crop` to the last bit), over the window of source pixels that the crop
//! maps onto ([`crate::resample`]). Its cost is the crop's width times the
//! window's rows, then the crop: bounded by the crop, whatever the aspect
//! ratio.
//!
//! A baseline JPEG is decoded by our own decoder ([`crate::jpeg`]): at full size
//! to the bit as libjpeg-turbo does, so its model input is torchvision's too; and
//! when the resize shrinks it by 2 or more, at a half, a quarter or an eighth of
//! its size, the largest division that leaves its short side at least `resize`
//! (DCT scaling, as Pillow's `draft`): most of a camera photo's decode and
//! resample is then never done. The scores then move by up to a few hundredths
//! (the tests hold them to torchvision's); the manifest's `jpeg_scaling = false`
//! (or `--jpeg-scaling false`) decodes every JPEG at full size. Other JPEGs
//! (progressive, say) and PNGs go to the `image` crate.
//!
//! What it refuses, from the header, before any pixel is decoded:
//! - formats other than JPEG and PNG (only those codecs are compiled in);
//! - images wider or taller than [`MAX_IMAGE_SIDE`];
//! - images whose estimated working memory ([`memory_estimate`]: decoded
//!   pixels, their RGB copy, the decoder's own buffers) is over
//!   [`IMAGE_MEMORY_BUDGET`]; the PNG decoder's side allocations (an ICC
//!   profile, text chunks) are capped at [`DECODER_SIDE_ALLOC`] inside it.
//!
//! Every failure is a [`PreprocessError`] whose text is shown to the client.

use std::fmt;
use std::io::Cursor;
use std::str::FromStr;

use image::{ColorType, DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};
use shared::frame::ErrorCode;
use shared::limits::{DECODER_SIDE_ALLOC, IMAGE_MEMORY_BUDGET, MAX_IMAGE_SIDE};
use tract_onnx::prelude::Tensor;

use crate::jpeg;
use crate::resample::{self, Taps};
pub use crate::resample::Lanes;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    Bilinear,
    Bicubic,
}

impl FromStr for Interpolation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bilinear" => Ok(Interpolation::Bilinear),
            "bicubic" => Ok(Interpolation::Bicubic),
            _ => Err(format!("expected bilinear or bicubic, got {s:?}")),
        }
    }
}

impl Interpolation {
    /// The filter's support radius, in source pixels at scale 1.
    fn support(self) -> f64 {
        match self {
            Interpolation::Bilinear => 1.0,
            Interpolation::Bicubic => 2.0,
        }
    }

    /// The filter's weight at distance `x`: the triangle, or the cubic convolution kernel with
    /// a = -0.5 (Catmull-Rom), written term by term as Pillow evaluates them, in doubles, so
    /// that the weights are Pillow's to the last bit.
    fn kernel(self, x: f64) -> f64 {
        const A: f64 = -0.5;
        let x = x.abs();
        match self {
            Interpolation::Bilinear if x < 1.0 => 1.0 - x,
            Interpolation::Bicubic if x < 1.0 => ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0,
            Interpolation::Bicubic if x < 2.0 => (((x - 5.0) * x + 8.0) * x - 4.0) * A,
            _ => 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    pub input_size: u32,
    pub resize: u32,
    pub interpolation: Interpolation,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Whether [`decode`](Preprocess::decode) may decode a baseline JPEG at a reduced size.
    pub jpeg_scaling: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PreprocessError {
    /// Neither JPEG nor PNG; carries what the bytes look like, if known.
    UnsupportedFormat(String),
    /// Not decodable: corrupt, truncated, or not an image at all.
    BadImage(String),
    /// Width x height over the limits, or too much memory to prepare.
    TooLarge(String),
    /// A zero-sized image.
    Empty,
}

impl PreprocessError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PreprocessError::UnsupportedFormat(_) => ErrorCode::UnsupportedFormat,
            PreprocessError::BadImage(_) | PreprocessError::Empty => ErrorCode::BadImage,
            PreprocessError::TooLarge(_) => ErrorCode::ImageTooLarge,
        }
    }
}

impl fmt::Display for PreprocessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreprocessError::UnsupportedFormat(what) => write!(f, "unsupported image format {what} (send JPEG or PNG)"),
            PreprocessError::BadImage(why) => write!(f, "not a decodable JPEG or PNG image: {why}"),
            PreprocessError::TooLarge(why) => write!(
                f,
                "image too large: {why} (limits: {MAX_IMAGE_SIDE} pixels per side, {} MiB to decode and prepare \
                 one image: about 16 megapixels for a baseline JPEG, 5 for a progressive one)",
                IMAGE_MEMORY_BUDGET >> 20
            ),
            PreprocessError::Empty => write!(f, "image has zero width or height"),
        }
    }
}

/// Maps the decoder's errors onto ours; the decoder's own text is kept as detail.
fn classify_error(e: ImageError) -> PreprocessError {
    match e {
        ImageError::Limits(l) => PreprocessError::TooLarge(l.to_string()),
        ImageError::Unsupported(u) => PreprocessError::UnsupportedFormat(u.to_string()),
        other => PreprocessError::BadImage(other.to_string()),
    }
}

/// The JPEG decoder fills a truncated scan with grey rather than failing; we
/// refuse such files instead, by requiring the end-of-image marker (FF D9) at
/// the end, after any zero padding. A JPEG with other data appended after its
/// end is refused too: re-encode it.
fn ends_with_jpeg_eoi(bytes: &[u8]) -> bool {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes[..end].ends_with(&[0xff, 0xd9])
}

/// Limits handed to the decoder: the side limit, and [`DECODER_SIDE_ALLOC`]
/// for what the PNG decoder allocates beside the pixels (the pixel buffer
/// itself is bounded by [`memory_estimate`] before it is allocated).
fn decode_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(DECODER_SIDE_ALLOC);
    limits
}

/// Whether a JPEG's frame header (SOF marker) says progressive. A
/// progressive JPEG keeps every DCT coefficient of the whole image while it
/// decodes, a baseline one a few rows: their memory differs threefold.
/// Anything unclear counts as progressive, the costlier case.
fn jpeg_is_progressive(bytes: &[u8]) -> bool {
    let mut at = 2; // after the start-of-image marker
    while let (Some(&0xff), Some(&marker)) = (bytes.get(at), bytes.get(at + 1)) {
        match marker {
            0xff => at += 1, // fill byte before a marker
            0x01 | 0xd0..=0xd7 => at += 2, // markers without a length
            0xc4 | 0xc8 | 0xcc => {} // huffman, reserved, arithmetic tables: a segment
            0xc0..=0xcf => return matches!(marker, 0xc2 | 0xc6 | 0xca | 0xce),
            _ => {}
        }
        if matches!(marker, 0xff | 0x01 | 0xd0..=0xd7) {
            continue;
        }
        let Some(&[hi, lo]) = bytes.get(at + 2..at + 4) else { return true };
        at += 2 + usize::from(u16::from_be_bytes([hi, lo]));
    }
    true
}

/// Bytes needed to turn an image of this header into the model's input, at
/// most: the decoded pixels, their RGB copy (unless they are RGB already),
/// and the decoder's own buffers. Measured on image 0.25 / zune-jpeg 0.5 at
/// 12 MP (VmHWM growth per pixel): baseline JPEG 3.6-3.9 bytes for RGB and
/// 1.5 for grey, progressive 6.6 (4:2:0) to 9.9 (4:4:4) for RGB and 3.5 for
/// grey, PNG its pixels (3 bytes for RGB) plus side allocations. The
/// estimate rounds each case up: a JPEG's decoder buffers count 1 byte a
/// pixel when baseline and 10 (colour) or 4 (grey) when progressive. The
/// resampler's row and the output add [`RESAMPLE_RESERVE`].
pub fn memory_estimate(format: ImageFormat, color: ColorType, width: u32, height: u32, progressive: bool) -> u64 {
    let pixels = u64::from(width) * u64::from(height);
    let decoded = pixels * u64::from(color.bytes_per_pixel());
    let rgb_copy = if color == ColorType::Rgb8 { 0 } else { pixels * 3 };
    let decoder = match (format, progressive, color.has_color()) {
        (ImageFormat::Jpeg, false, _) => pixels,
        (ImageFormat::Jpeg, true, true) => pixels * 10,
        (ImageFormat::Jpeg, true, false) => pixels * 4,
        _ => DECODER_SIDE_ALLOC,
    };
    decoded + rgb_copy + decoder + RESAMPLE_RESERVE
}

/// What [`resample`] and the output tensor take beside the decoded image.
/// The horizontal pass's output for one band of 56 output rows: the source
/// rows the band reads (at most 59 times the scale, which is under 4,730 /
/// 224 for any image inside [`IMAGE_MEMORY_BUDGET`], whose short side is
/// under 4,730 pixels) times the crop's row padded to 64 bytes: 0.9 MiB at
/// most, at 224 or at 480; sixteen source rows of the window transposed (48
/// bytes per window pixel, 0.2 MiB); then the crop and the tensor (15 bytes
/// per input pixel: 0.7 MiB at 224 x 224, 3.3 MiB at 480 x 480; the 4096
/// that the manifest accepts would need far more, but classifiers take
/// 224-600).
const RESAMPLE_RESERVE: u64 = 5 * 1024 * 1024;

impl Preprocess {
    /// Decodes `bytes` and returns the model input, shape [1, 3, input_size, input_size]:
    /// [`decode`](Self::decode), [`resample`](Self::resample), [`input_tensor`](Self::input_tensor).
    pub fn prepare(&self, bytes: &[u8]) -> Result<Tensor, PreprocessError> {
        let rgb = self.decode(bytes)?;
        let crop = self.resample(&rgb)?;
        Ok(self.input_tensor(&crop))
    }

    /// Checks the header against the limits, then decodes `bytes` to RGB: a baseline JPEG by
    /// [`crate::jpeg`], at a half, a quarter or an eighth of its size when the resize shrinks it
    /// by that much ([`jpeg_scale`](Self::jpeg_scale)), else at full size; anything else (and a
    /// JPEG that decoder does not take) by the `image` crate at full size.
    pub fn decode(&self, bytes: &[u8]) -> Result<RgbImage, PreprocessError> {
        let format = match image::guess_format(bytes) {
            Ok(f @ (ImageFormat::Jpeg | ImageFormat::Png)) => f,
            Ok(other) => return Err(PreprocessError::UnsupportedFormat(format!("{other:?}"))),
            Err(_) => return Err(PreprocessError::BadImage("unrecognised file signature".into())),
        };
        if format == ImageFormat::Jpeg && !ends_with_jpeg_eoi(bytes) {
            return Err(PreprocessError::BadImage("JPEG is truncated (no end-of-image marker)".into()));
        }
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        reader.limits(decode_limits());
        // Reads the header only (and, for PNG, the chunks before the pixels).
        let decoder = reader.into_decoder().map_err(classify_error)?;
        let (width, height) = decoder.dimensions();
        if width == 0 || height == 0 {
            return Err(PreprocessError::Empty);
        }
        let color = decoder.color_type();
        let progressive = format == ImageFormat::Jpeg && jpeg_is_progressive(bytes);
        let need = memory_estimate(format, color, width, height, progressive);
        if need > IMAGE_MEMORY_BUDGET {
            let kind = if progressive { "progressive " } else { "" };
            return Err(PreprocessError::TooLarge(format!(
                "a {width}x{height} {kind}{color:?} {format:?} needs about {} MiB",
                need.div_ceil(1 << 20)
            )));
        }
        if format == ImageFormat::Jpeg && !progressive {
            // A file it does not decode is decoded below, as any other.
            if let Ok(rgb) = jpeg::decode(bytes, width, height, self.jpeg_scale(width, height)) {
                return Ok(rgb);
            }
        }
        Ok(DynamicImage::from_decoder(decoder).map_err(classify_error)?.into_rgb8())
    }

    /// The largest of 8, 4 and 2 that a baseline JPEG's sides can be divided by with its short
    /// side still at least `resize`, so that the resample still shrinks it; 1 (full size) when
    /// none can, or when `jpeg_scaling` is off.
    pub fn jpeg_scale(&self, width: u32, height: u32) -> u32 {
        let short = width.min(height);
        [8, 4, 2].into_iter().find(|&s| self.jpeg_scaling && short / s >= self.resize).unwrap_or(1)
    }

    /// The model input from [`resample`](Self::resample)'s crop: scaled to
    /// [0,1], normalised by `mean` and `std`, channels first.
    pub fn input_tensor(&self, crop: &[u8]) -> Tensor {
        let side = self.input_size as usize;
        let mut tensor = Tensor::zero::<f32>(&[1, 3, side, side]).expect("the model's input shape");
        let mut planes = tensor.try_as_plain_ram_mut().expect("a tensor in memory");
        let planes = planes.as_slice_mut::<f32>().expect("an f32 tensor");
        for (c, plane) in planes.chunks_exact_mut(side * side).enumerate() {
            // The formula once per byte value, then looked up: the same floats.
            let value: [f32; 256] = std::array::from_fn(|b| (b as f32 / 255.0 - self.mean[c]) / self.std[c]);
            // crop holds side x side RGB pixels, one per value of the plane.
            for (v, pixel) in plane.iter_mut().zip(crop.chunks_exact(3)) {
                *v = value[usize::from(pixel[c])];
            }
        }
        tensor
    }

    /// The centre `input_size` square of `img` resized so that its short side
    /// is `resize` (torchvision's `Resize` then `CenterCrop`), as RGB bytes,
    /// row by row. Only the crop's pixels are computed (see the module
    /// documentation); the result equals Pillow's `resize` of the whole image
    /// followed by `crop`, as torchvision does it. Runs on the widest [`Lanes`]
    /// this CPU has.
    pub fn resample(&self, img: &RgbImage) -> Result<Vec<u8>, PreprocessError> {
        self.resample_on(img, Lanes::widest())
    }

    /// [`resample`](Self::resample) compiled for `lanes`, which this CPU must
    /// have: the same bytes on each (the tests run every one there is).
    pub fn resample_on(&self, img: &RgbImage, lanes: Lanes) -> Result<Vec<u8>, PreprocessError> {
        let (w, h) = img.dimensions();
        let (r, s) = (u64::from(self.resize), self.input_size);
        // The long side is truncated, not rounded, as torchvision does.
        let (nw, nh) = if w <= h {
            (r, (r * u64::from(h) / u64::from(w)).max(r))
        } else {
            ((r * u64::from(w) / u64::from(h)).max(r), r)
        };
        let too_large = || PreprocessError::TooLarge(format!("{w}x{h} resized to a short side of {r}"));
        let nw = u32::try_from(nw).map_err(|_| too_large())?;
        let nh = u32::try_from(nh).map_err(|_| too_large())?;
        // Centre crop offsets, rounded as torchvision's CenterCrop does: Python's `round`,
        // which takes a half to the even side (an odd margin of 21 starts the crop at 10).
        let offset = |n: u32| n.checked_sub(s).map(|d| (f64::from(d) / 2.0).round_ties_even() as u32).ok_or_else(too_large);
        let cols = self.taps(w, nw, offset(nw)?, s);
        let rows = self.taps(h, nh, offset(nh)?, s);
        Ok(resample::crop(img, &cols, &rows, lanes))
    }

    /// Filter taps along one axis, as Pillow computes them: for each of the `count` output
    /// pixels from `start` on, in an axis resized from `src` to `dst` pixels, the first source
    /// pixel it reads and its weights from there, normalised to a sum of one, then rounded
    /// (halves away from zero) to fixed point of [`resample::PRECISION`] bits.
    fn taps(&self, src: u32, dst: u32, start: u32, count: u32) -> Vec<Taps> {
        let scale = f64::from(src) / f64::from(dst);
        let filter_scale = scale.max(1.0);
        let support = self.interpolation.support() * filter_scale;
        let one = f64::from(1u32 << resample::PRECISION);
        (start..start + count)
            .map(|out| {
                // The source position of the output pixel's centre; the window is truncated
                // toward zero (`as` is C's `(int)` here), then kept inside the axis. It always
                // holds the centre's pixel: 0 <= first <= centre < end <= src.
                let centre = (f64::from(out) + 0.5) * scale;
                let first = ((centre - support + 0.5) as i64).max(0);
                let end = ((centre + support + 0.5) as i64).min(i64::from(src));
                let weights: Vec<f64> =
                    (first..end).map(|i| self.interpolation.kernel((i as f64 - centre + 0.5) * (1.0 / filter_scale))).collect();
                let sum: f64 = weights.iter().sum();
                let weights = weights
                    .into_iter()
                    .map(|w| if sum != 0.0 { w / sum } else { w })
                    .map(|w| if w < 0.0 { (-0.5 + w * one) as i32 } else { (0.5 + w * one) as i32 })
                    .collect();
                Taps { first: first as usize, weights }
            })
            .collect()
    }
}
