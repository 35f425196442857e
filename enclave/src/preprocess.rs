//! Image decoding and preprocessing: encoded bytes in, a normalised NCHW
//! tensor out.
//!
//! The steps are torchvision's, which the study used: decode, convert to RGB,
//! resize so the short side is `resize` pixels (aspect ratio kept), centre
//! crop `input_size` square, scale to [0,1], subtract `mean` and divide by
//! `std` per channel.
//!
//! What it refuses, before any pixel is decoded:
//! - formats other than JPEG and PNG (only those codecs are compiled in);
//! - images wider or taller than [`MAX_IMAGE_SIDE`], or whose decoded buffer
//!   would exceed [`MAX_DECODE_ALLOC`] (the decoder reads the header, checks
//!   these [`Limits`], and only then allocates: a 60000x60000 PNG costs
//!   nothing but its header).
//!
//! Every failure is a [`PreprocessError`] whose text is shown to the client.

use std::fmt;
use std::io::Cursor;
use std::str::FromStr;

use image::imageops::{self, FilterType};
use image::{ImageError, ImageFormat, ImageReader, Limits};
use shared::frame::ErrorCode;
use shared::limits::{MAX_DECODE_ALLOC, MAX_IMAGE_SIDE};
use tract_onnx::prelude::{tract_ndarray, Tensor};

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
    fn filter(self) -> FilterType {
        match self {
            Interpolation::Bilinear => FilterType::Triangle,
            Interpolation::Bicubic => FilterType::CatmullRom,
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
}

#[derive(Debug, Clone, PartialEq)]
pub enum PreprocessError {
    /// Neither JPEG nor PNG; carries what the bytes look like, if known.
    UnsupportedFormat(String),
    /// Not decodable: corrupt, truncated, or not an image at all.
    BadImage(String),
    /// Width x height over the limits, or too large a decoded buffer.
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
                "image too large: {why} (limits: {MAX_IMAGE_SIDE} pixels per side, {} MiB decoded)",
                MAX_DECODE_ALLOC >> 20
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

fn decode_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    limits
}

impl Preprocess {
    /// Decodes `bytes` and returns the model input, shape [1, 3, input_size, input_size].
    pub fn prepare(&self, bytes: &[u8]) -> Result<Tensor, PreprocessError> {
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
        let img = reader.decode().map_err(classify_error)?;
        if img.width() == 0 || img.height() == 0 {
            return Err(PreprocessError::Empty);
        }
        let rgb = img.into_rgb8();

        // Resize the short side to `resize`, keeping the aspect ratio the way
        // torchvision does (the long side is truncated, not rounded).
        let (w, h) = (u64::from(rgb.width()), u64::from(rgb.height()));
        let r = u64::from(self.resize);
        let (nw, nh) = if w <= h { (r, (r * h / w).max(r)) } else { ((r * w / h).max(r), r) };
        // nw, nh <= resize * MAX_IMAGE_SIDE: comfortably within u32.
        let (nw, nh) = (nw as u32, nh as u32);
        let resized = imageops::resize(&rgb, nw, nh, self.interpolation.filter());

        // Centre crop, offsets rounded as torchvision's CenterCrop does.
        let s = self.input_size;
        let left = ((f64::from(nw - s)) / 2.0).round() as u32;
        let top = ((f64::from(nh - s)) / 2.0).round() as u32;
        let crop = imageops::crop_imm(&resized, left, top, s, s).to_image();

        let (mean, std) = (self.mean, self.std);
        let side = s as usize;
        let array = tract_ndarray::Array4::from_shape_fn((1, 3, side, side), |(_, c, y, x)| {
            // x, y < s and c < 3 by the array's shape.
            let v = f32::from(crop.get_pixel(x as u32, y as u32)[c]) / 255.0;
            (v - mean[c]) / std[c]
        });
        Ok(array.into())
    }
}
