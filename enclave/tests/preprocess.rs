//! Preprocessing on its own: shapes, normalisation, and every way an image is
//! refused before (or instead of) being decoded. The end-to-end tests check
//! the same refusals through the server; these pin the exact variants.

#[path = "support/images.rs"]
mod images;

use enclave::preprocess::{Interpolation, Lanes, Preprocess, PreprocessError};
use image::RgbImage;
use std::path::Path;
use images::{encode_png, jpeg, jpeg_bomb, png, png_bomb};
use shared::frame::ErrorCode;

fn pre() -> Preprocess {
    Preprocess {
        input_size: 32,
        resize: 36,
        interpolation: Interpolation::Bilinear,
        mean: [0.5, 0.5, 0.5],
        std: [0.25, 0.25, 0.25],
        jpeg_scaling: true,
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
fn the_input_tensor_is_the_normalisation_formula_to_the_bit_channels_first() {
    // Every byte value in every channel, at positions that differ per channel.
    let p = Preprocess { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], ..pre() };
    let side = p.input_size as usize;
    let crop: Vec<u8> = (0..side * side * 3).map(|i| (i * 7 + i / 3) as u8).collect();
    let t = p.input_tensor(&crop);
    assert_eq!(t.shape(), &[1, 3, side, side]);
    let v = t.to_plain_array_view::<f32>().unwrap();
    for y in 0..side {
        for x in 0..side {
            for c in 0..3 {
                let byte = crop[(y * side + x) * 3 + c];
                let want = (f32::from(byte) / 255.0 - p.mean[c]) / p.std[c];
                assert_eq!(v[[0, c, y, x]].to_bits(), want.to_bits(), "channel {c} at ({x}, {y}), byte {byte}");
            }
        }
    }
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

/// tools/models/testdata.py's `pillow/`: each line names a source PNG, a filter, a resize, a crop
/// size, and the raw RGB crop Pillow made of it (torchvision's `Resize` then `CenterCrop`).
fn pillow_crops() -> Vec<(String, Interpolation, u32, u32, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/pillow");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("pillow/{name}: {e} (run `make testdata`)"));
    let index = String::from_utf8(read("index.txt")).unwrap();
    let lines = index.lines().filter(|l| !l.starts_with('#'));
    lines
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let [source, filter, resize, size, crop] = f[..] else { panic!("pillow/index.txt: {line:?}") };
            (source.to_string(), filter.parse().unwrap(), resize.parse().unwrap(), size.parse().unwrap(), read(crop))
        })
        .collect()
}

#[test]
fn the_crop_is_pillows_resize_then_crop_to_the_bit() {
    // Pillow's own: the test photos as it decodes them, and shapes square, landscape, portrait,
    // thin both ways, smaller than the crop (upscaled) and odd; both filters; the deployed
    // 256 -> 224, and small resizes where one output pixel spans many source pixels.
    let crops = pillow_crops();
    assert!(crops.len() >= 6 * 14 && crops.iter().any(|c| c.0 == "chelsea_study-jpg.png"), "pillow/ is incomplete");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/pillow");
    let mut wrong = Vec::new();
    for (source, interpolation, resize, input_size, theirs) in crops {
        let img = image::open(dir.join(&source)).unwrap().into_rgb8();
        let p = Preprocess { resize, input_size, interpolation, ..pre() };
        for lanes in Lanes::ALL.into_iter().filter(|l| l.available()) {
            let ours = p.resample_on(&img, lanes).unwrap();
            assert_eq!(ours.len(), theirs.len());
            let differ = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
            if differ > 0 {
                wrong.push(format!("{source}, {interpolation:?}, {resize}->{input_size} on {lanes:?}: {differ} bytes differ"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn thin_images_cost_what_their_crop_costs() {
    // 1 x 12000 resized to a short side of 256 would be 256 x 3,072,000
    // pixels (2.3 GB) before the crop; the resampler computes the crop only.
    let p = Preprocess { resize: 256, input_size: 224, ..pre() };
    for (w, h) in [(1, 12_000), (12_000, 1), (2, 12_000)] {
        let t = p.prepare(&images::grey_png(w, h, false)).unwrap();
        assert_eq!(t.shape(), &[1, 3, 224, 224]);
    }
}

#[test]
fn images_over_the_memory_budget_are_refused_from_the_header() {
    use shared::limits::IMAGE_MEMORY_BUDGET;
    let p = pre();
    // A 140 KB all-black 12000 x 12000 grey PNG: 576 MB to decode and convert.
    let e = p.prepare(&images::grey_png(12_000, 12_000, false)).unwrap_err();
    assert!(matches!(&e, PreprocessError::TooLarge(m) if m.contains("12000x12000 L8 Png")), "{e:?}");
    assert!(e.to_string().contains(&format!("{} MiB", IMAGE_MEMORY_BUDGET >> 20)), "{e}");
    // The estimate counts what decoding really takes; an image just inside is decoded.
    let need = enclave::preprocess::memory_estimate(image::ImageFormat::Png, image::ColorType::L16, 3300, 3300, false);
    assert!(need <= IMAGE_MEMORY_BUDGET);
    assert!(p.prepare(&images::grey_png(3300, 3300, true)).is_ok());
    let e = p.prepare(&images::grey_png(3700, 3700, true)).unwrap_err();
    assert!(matches!(&e, PreprocessError::TooLarge(m) if m.contains("3700x3700 L16 Png")), "{e:?}");
}

#[test]
fn an_icc_profile_bomb_is_cut_short_and_the_image_served() {
    // The profile would inflate to 400 MiB; the decoder stops at its side
    // allowance, drops the profile, and decodes the 8 x 8 pixels.
    let t = pre().prepare(&images::png_iccp_bomb(400 << 20)).unwrap();
    assert_eq!(t.shape(), &[1, 3, 32, 32]);
}
