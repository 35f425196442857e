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

/// A real PNG of one grey level, `w` x `h`, 8 or 16 bits: megapixels of
/// zeros compress to a few hundred kilobytes (the review's 140 KB all-black
/// 12000 x 12000 image).
pub fn grey_png(w: u32, h: u32, sixteen_bits: bool) -> Vec<u8> {
    let (color, bytes) = if sixteen_bits { (image::ExtendedColorType::L16, 2) } else { (image::ExtendedColorType::L8, 1) };
    let pixels = vec![0u8; w as usize * h as usize * bytes];
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(&pixels, w, h, color).expect("PNG encoding");
    out
}

/// A real PNG of one colour, `w` x `h`, RGB.
pub fn flat_rgb_png(w: u32, h: u32) -> Vec<u8> {
    encode_png(&RgbImage::new(w, h))
}

/// A baseline grey JPEG of `w` x `h`, all black (`image`'s own encoder):
/// 144 megapixels in 1.7 MB.
pub fn grey_jpeg(w: u32, h: u32) -> Vec<u8> {
    let pixels = vec![0u8; w as usize * h as usize];
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .write_image(&pixels, w, h, image::ExtendedColorType::L8)
        .expect("JPEG encoding");
    out
}

/// Deflate bits, least significant first (RFC 1951 3.1.1).
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u64, count: u32) {
        self.acc |= value << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code, sent most significant bit first.
    fn code(&mut self, code: u64, count: u32) {
        let reversed = (0..count).fold(0, |r, i| (r << 1) | ((code >> i) & 1));
        self.put(reversed, count);
    }
}

/// A zlib stream that inflates to `1 + 258 * matches` zero bytes: one
/// literal zero, then back-references of 258 bytes at distance 1, in one
/// fixed-Huffman block (13 bits per 258 bytes).
pub fn zlib_zeros(matches: usize) -> Vec<u8> {
    let mut b = Bits { out: vec![0x78, 0x01], acc: 0, n: 0 };
    b.put(1, 1); // BFINAL
    b.put(1, 2); // BTYPE = fixed Huffman
    b.code(0x30, 8); // literal 0
    for _ in 0..matches {
        b.code(0xc5, 8); // length code 285: 258 bytes
        b.code(0, 5); // distance code 0: distance 1
    }
    b.code(0, 7); // end of block
    if b.n > 0 {
        b.out.push(b.acc as u8);
    }
    let len = 1 + 258 * matches as u64;
    let adler = ((len % 65521) << 16) | 1; // Adler-32 of zeros: a = 1, b = len
    b.out.extend_from_slice(&(adler as u32).to_be_bytes());
    b.out
}

/// An 8x8 PNG with an iCCP chunk (an ICC colour profile) whose zlib stream
/// inflates to `inflated` bytes at least: the review's 400 KB file that
/// inflated to 400 MiB and cost 190 MiB.
pub fn png_iccp_bomb(inflated: usize) -> Vec<u8> {
    let mut v = png(8, 8);
    let mut data = b"bomb\0\0".to_vec(); // profile name, compression method 0
    data.extend(zlib_zeros(inflated / 258 + 1));
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(b"iCCP");
    chunk.extend_from_slice(&data);
    let crc = crc32(&chunk[4..]);
    chunk.extend_from_slice(&crc.to_be_bytes());
    // After the signature (8) and IHDR (4 + 4 + 13 + 4).
    v.splice(33..33, chunk);
    v
}
