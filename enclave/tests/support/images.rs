//! Test images, shared by the enclave's and the parent's tests (included with
//! `#[path]`): real PNG and JPEG encodings of generated pictures, and
//! decompression bombs whose headers claim sizes their bodies do not hold.
#![allow(dead_code)] // each test file uses its own subset

use image::{ImageEncoder, RgbImage};

/// A deterministic picture; `seed` varies it.
pub fn photo(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = x.wrapping_mul(31 + seed) ^ y.wrapping_mul(17 + 3 * seed);
        image::Rgb([(v % 251) as u8, ((x + y + seed) % 256) as u8, ((x * y) % 241) as u8])
    })
}

pub fn encode_png(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .expect("PNG encoding");
    out
}

pub fn encode_jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .expect("JPEG encoding");
    out
}

pub fn png(w: u32, h: u32) -> Vec<u8> {
    encode_png(&photo(w, h, 0))
}

pub fn jpeg(w: u32, h: u32) -> Vec<u8> {
    encode_jpeg(&photo(w, h, 0))
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A 1x1 PNG whose header (IHDR) claims `w` x `h`, with a valid CRC: a
/// decoder must refuse it from the header alone.
pub fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut v = png(1, 1);
    // IHDR data starts at byte 16: width, height (big endian); its CRC at 29..33.
    v[16..20].copy_from_slice(&w.to_be_bytes());
    v[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&v[12..29]);
    v[29..33].copy_from_slice(&crc.to_be_bytes());
    v
}

/// A 16x16 JPEG whose frame header (SOF0) claims `w` x `h`.
pub fn jpeg_bomb(w: u16, h: u16) -> Vec<u8> {
    let mut v = jpeg(16, 16);
    let sof = v.windows(2).position(|p| p == [0xff, 0xc0]).expect("baseline JPEG has SOF0");
    // FFC0, length(2), precision(1), height(2), width(2)
    v[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    v[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    v
}
