//! Preprocessing on its own: shapes, normalisation, and every way an image is
//! refused before (or instead of) being decoded. The end-to-end tests check
//! the same refusals through the server; these pin the exact variants.

#[path = "support/images.rs"]
mod images;

use enclave::preprocess::{Interpolation, Preprocess, PreprocessError};
use image::RgbImage;
use images::{encode_png, jpeg, jpeg_bomb, png, png_bomb};
use shared::frame::ErrorCode;

fn pre() -> Preprocess {
    Preprocess {
        input_size: 32,
        resize: 36,
        interpolation: Interpolation::Bilinear,
        mean: [0.5, 0.5, 0.5],
        std: [0.25, 0.25, 0.25],
    }
}

#[test]
fn output_has_the_model_shape_and_normalisation() {
    // Blue is a constant 128 everywhere, so it survives resizing exactly.
    let img = RgbImage::from_fn(100, 50, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let t = pre().prepare(&encode_png(&img)).unwrap();
    assert_eq!(t.shape(), &[1, 3, 32, 32]);
    let v = t.to_plain_array_view::<f32>().unwrap();
    let want = (128.0 / 255.0 - 0.5) / 0.25;
    assert!((v[[0, 2, 5, 5]] - want).abs() < 1e-3);
}

#[test]
fn tiny_and_thin_images_are_upscaled_not_refused() {
    for (w, h) in [(1, 1), (1, 300), (300, 1)] {
        assert_eq!(pre().prepare(&png(w, h)).unwrap().shape(), &[1, 3, 32, 32]);
    }
    assert_eq!(pre().prepare(&jpeg(5, 7)).unwrap().shape(), &[1, 3, 32, 32]);
}

#[test]
fn decompression_bombs_are_refused_from_the_header() {
    let e = pre().prepare(&png_bomb(60_000, 60_000)).unwrap_err();
    assert!(matches!(e, PreprocessError::TooLarge(_)), "{e:?}");
    assert_eq!(e.code(), ErrorCode::ImageTooLarge);
    // Within the side limit but over the allocation limit.
    let e = pre().prepare(&png_bomb(11_000, 11_000)).unwrap_err();
    assert!(matches!(e, PreprocessError::TooLarge(_)), "{e:?}");
    let e = pre().prepare(&jpeg_bomb(65_000, 65_000)).unwrap_err();
    assert!(matches!(e, PreprocessError::TooLarge(_)), "{e:?}");
}

#[test]
fn garbage_truncated_and_foreign_formats() {
    assert!(matches!(pre().prepare(b"hello world").unwrap_err(), PreprocessError::BadImage(_)));
    assert!(matches!(pre().prepare(&[]).unwrap_err(), PreprocessError::BadImage(_)));
    let full = png(64, 64);
    assert!(matches!(pre().prepare(&full[..full.len() / 2]).unwrap_err(), PreprocessError::BadImage(_)));
    // The JPEG decoder would fill a truncated scan with grey: refused instead.
    let full = jpeg(64, 64);
    assert!(matches!(pre().prepare(&full[..full.len() / 2]).unwrap_err(), PreprocessError::BadImage(_)));
    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;";
    let e = pre().prepare(gif).unwrap_err();
    assert!(matches!(e, PreprocessError::UnsupportedFormat(_)), "{e:?}");
    assert_eq!(e.code(), ErrorCode::UnsupportedFormat);
    assert!(matches!(pre().prepare(b"\xff\xd8\xff\xe0").unwrap_err(), PreprocessError::BadImage(_)));
    // Zero padding after the end-of-image marker is fine.
    let mut padded = jpeg(16, 16);
    padded.extend_from_slice(&[0; 64]);
    assert!(pre().prepare(&padded).is_ok());
}
