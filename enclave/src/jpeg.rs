//! Baseline JPEG decoding, at full size exactly as libjpeg-turbo decodes (and so as Pillow and
//! torchvision do), or at a half, a quarter or an eighth of the size by DCT scaling when the
//! model's resize would shrink the photo that much anyway ([`crate::preprocess`] decides).
//!
//! Full size: libjpeg's accurate integer inverse DCT ("islow"), its "fancy" upsampling of
//! 4:2:0 and 4:2:2 chroma, and its fixed-point YCbCr tables, each to the bit, so the decoded
//! pixels are Pillow's byte for byte (the tests hold them to Pillow's own decode of every test
//! photo) and, with the resampler's Pillow arithmetic, the model input is torchvision's. Why:
//! two decoders' rounding differ by a level here and there, which moves the scores by up to a
//! hundredth and decides near ties (chelsea.jpg's top two are 0.003 apart).
//!
//! Reduced: the resample throws most of a camera photo's pixels away, and decoding them is
//! most of the preprocessing (2.6-2.9 of 3.0-3.6 ms for the study's 960 x 640 photo on a Zen 4,
//! see BENCHMARKS.md). Each 8 x 8 block of DCT coefficients holds the block's spatial
//! frequencies; keeping the lowest n x n of them and running an n-point inverse DCT (n = 8 /
//! scale) gives the block's n x n low-passed pixels directly. The entropy decoding is the same
//! work as at full size; the inverse DCT, the colour conversion and the resample after them
//! shrink with the pixel count. A component sampled at half the resolution (4:2:0 and 4:2:2
//! chroma) is run at twice the n, so that every component comes out at the output size with no
//! upsampling step (libjpeg-turbo chooses its sizes the same way). Not the same bytes as
//! libjpeg-turbo's own scaled decode: the tests hold it to that and to a full decode averaged
//! over scale x scale boxes.
//!
//! What it decodes: baseline and extended sequential Huffman frames (SOF0, SOF1) of 8-bit
//! samples, grey or YCbCr, sampling factors of 1 or 2 (at full size: 4:4:4, 4:2:2 and 4:2:0),
//! one scan holding every component, restart intervals. Anything else (progressive, arithmetic
//! coding, 12-bit, CMYK, RGB, scans per component), and any file in which it finds an error (a
//! table missing or over-full, a code that is no code, a coefficient past its block, a restart
//! marker out of place, a scan that ends early), is [`NotHandled`]: the caller then decodes it
//! with the `image` crate at full size, whose errors are the ones the client sees. So this
//! module is never the one to refuse a file; it decides how fast, and how exactly, one is
//! decoded.
//!
//! Memory: one row of MCUs per component (three at full size, for the upsampling's rows above
//! and below) and the output image. No `unsafe`; no index that the input decides is used
//! unchecked.

use std::num::Wrapping;

use image::RgbImage;

use crate::lanes::Lanes;

/// Why a file is left to the general decoder (for tests and debugging; the caller only falls back).
#[derive(Debug, PartialEq, Eq)]
pub struct NotHandled(pub &'static str);

/// The natural (row-major) index of each coefficient, in the order the stream codes them.
const ZIGZAG: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
    28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54,
    47, 55, 62, 63,
];

/// Codes (and, for AC coefficients, code and value bits together) up to this many bits are
/// decoded by one table look-up. 10 measured fastest of 9-12 on the study's photo.
const FAST_BITS: u32 = 10;

/// A Huffman table, canonical as JPEG defines it (Annex C of ITU T.81).
struct Huffman {
    /// For each `FAST_BITS`-bit prefix: the code's length << 8 | its symbol, or 0 if the code is longer.
    fast: [u16; 1 << FAST_BITS],
    /// For AC tables, each prefix that holds a whole code and its value bits:
    /// value << 8 | zero run << 4 | bits taken; 0 otherwise.
    fast_ac: [i32; 1 << FAST_BITS],
    /// For each length: one past the largest code of that length. A code of this length not
    /// matched at a shorter one is below it exactly when it is of this length.
    max_code: [u32; 17],
    /// For each length: the index in `symbols` of its first code, less that code.
    offset: [i32; 17],
    symbols: [u8; 256],
}

impl Huffman {
    /// `counts[l - 1]` codes of length l, for `symbols` in order.
    fn new(counts: &[u8; 16], symbols: &[u8]) -> Result<Self, NotHandled> {
        let bad = NotHandled("bad Huffman table");
        if symbols.len() > 256 {
            return Err(bad);
        }
        let mut table = Huffman {
            fast: [0; 1 << FAST_BITS],
            fast_ac: [0; 1 << FAST_BITS],
            max_code: [0; 17],
            offset: [0; 17],
            symbols: [0; 256],
        };
        table.symbols[..symbols.len()].copy_from_slice(symbols);
        let (mut code, mut index) = (0u32, 0usize);
        for len in 1..=16u32 {
            table.offset[len as usize] = index as i32 - code as i32;
            for _ in 0..counts[len as usize - 1] {
                // Every code of this length must fit in it (which also bounds `index`).
                if code >= 1 << len || index >= symbols.len() {
                    return Err(bad);
                }
                if len <= FAST_BITS {
                    let shift = FAST_BITS - len;
                    let entry = (len as u16) << 8 | u16::from(symbols[index]);
                    table.fast[(code << shift) as usize..((code + 1) << shift) as usize].fill(entry);
                }
                code += 1;
                index += 1;
            }
            table.max_code[len as usize] = code;
            code <<= 1;
        }
        for (prefix, &entry) in table.fast.iter().enumerate() {
            let (len, symbol) = (u32::from(entry >> 8), entry as u8);
            let (run, size) = (i32::from(symbol >> 4), u32::from(symbol & 15));
            if len == 0 || size == 0 || len + size > FAST_BITS {
                continue;
            }
            let bits = (prefix as i32 >> (FAST_BITS - len - size)) & ((1 << size) - 1);
            table.fast_ac[prefix] = extend(bits, size) << 8 | run << 4 | (len + size) as i32;
        }
        Ok(table)
    }
}

/// The signed value that `size` bits (1 to 16) code: those below 2^(size-1) are negative.
#[inline(always)]
fn extend(bits: i32, size: u32) -> i32 {
    if bits < 1 << (size - 1) { bits - (1 << size) + 1 } else { bits }
}

/// The entropy-coded bits of a scan, most significant first.
struct Bits<'a> {
    data: &'a [u8],
    /// The next byte to load.
    at: usize,
    /// `count` bits not yet taken, from the top; below them, bits of the bytes after `at`.
    acc: u64,
    count: u32,
    /// Zero bytes loaded in place of data, at a marker or past the end.
    padding: usize,
}

impl Bits<'_> {
    /// Loads bytes until more than 56 bits are held. A stuffed 0xFF 0x00 is the byte 0xFF; at
    /// a marker (0xFF then anything else) or the end, zeros are loaded and `at` stays.
    #[inline(always)]
    fn refill(&mut self) {
        // Eight bytes at once where none of them is 0xFF (the test for a byte of all ones
        // finds a zero byte in the complement). The bits past `count` come from the bytes
        // after the new `at`, and are loaded again, the same, next time.
        if let Some(word) = self.data.get(self.at..self.at + 8) {
            let word = u64::from_be_bytes(word.try_into().unwrap_or_default());
            if (!word).wrapping_sub(0x0101_0101_0101_0101) & word & 0x8080_8080_8080_8080 == 0 {
                self.acc |= word >> self.count;
                self.at += (63 - self.count as usize) >> 3;
                self.count |= 56;
                return;
            }
        }
        while self.count <= 56 {
            let mut byte = 0;
            match (self.data.get(self.at), self.data.get(self.at + 1)) {
                (Some(0xff), Some(0x00)) => {
                    byte = 0xff;
                    self.at += 2;
                }
                (Some(&b), _) if b != 0xff => {
                    byte = b;
                    self.at += 1;
                }
                _ => self.padding += 1,
            }
            self.acc |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    /// Whether bits loaded as padding were taken: the scan ended before its data did.
    fn overran(&self) -> bool {
        self.padding * 8 > self.count as usize
    }

    /// The next symbol of `table`.
    #[inline(always)]
    fn symbol(&mut self, table: &Huffman) -> Result<u8, NotHandled> {
        if self.count < 16 {
            self.refill();
        }
        let entry = table.fast[(self.acc >> (64 - FAST_BITS)) as usize];
        if entry != 0 {
            self.take(u32::from(entry >> 8));
            return Ok(entry as u8);
        }
        let peek = (self.acc >> 48) as u32;
        for len in FAST_BITS + 1..=16 {
            let code = peek >> (16 - len);
            if code < table.max_code[len as usize] {
                self.take(len);
                let index = table.offset[len as usize] + code as i32;
                return Ok(table.symbols[index as usize & 255]);
            }
        }
        Err(NotHandled("bad Huffman code"))
    }

    /// The signed value coded by the next `size` bits (1 to 16).
    #[inline(always)]
    fn value(&mut self, size: u32) -> i32 {
        if self.count < size {
            self.refill();
        }
        let bits = (self.acc >> (64 - size)) as i32;
        self.take(size);
        extend(bits, size)
    }

    #[inline(always)]
    fn take(&mut self, n: u32) {
        self.acc <<= n;
        self.count -= n;
    }

    /// Drops what is left of the interval's last byte and steps past the restart marker RSTn,
    /// which must be next.
    fn restart(&mut self, n: u8) -> Result<(), NotHandled> {
        if self.data.get(self.at..self.at + 2) != Some(&[0xff, 0xd0 + n]) {
            return Err(NotHandled("restart marker missing"));
        }
        self.at += 2;
        (self.acc, self.count, self.padding) = (0, 0, 0);
        Ok(())
    }
}

/// A component of the frame, as the frame and scan headers give it.
struct Component {
    id: u8,
    /// Sampling factors.
    h: usize,
    v: usize,
    quant: usize,
    dc_table: usize,
    ac_table: usize,
    /// The last block's DC value (each block codes the difference).
    dc: i32,
}

/// Decodes a baseline JPEG of `width` x `height` (what the caller's header check saw) to RGB at
/// 1/`scale` of that, rounded up; `scale` is 1 (libjpeg-turbo's decode, to the bit), 2, 4 or 8.
/// The scan is decoded by code compiled for AVX2 where this CPU has it: AVX-512F was slower
/// at full size (the study photo 2.50 ms against 2.23 on a Zen 4, the baseline 3.01) and no
/// faster reduced (1.78 ms at a half on all three).
pub fn decode(bytes: &[u8], width: u32, height: u32, scale: u32) -> Result<RgbImage, NotHandled> {
    let lanes = if Lanes::Avx2.available() { Lanes::Avx2 } else { Lanes::Baseline };
    decode_on(bytes, width, height, scale, lanes)
}

/// [`decode`], the scan decoded by the copy compiled for `lanes` (which this CPU must have):
/// the same bytes on every one.
pub fn decode_on(bytes: &[u8], width: u32, height: u32, scale: u32, lanes: Lanes) -> Result<RgbImage, NotHandled> {
    if !matches!(scale, 1 | 2 | 4 | 8) {
        return Err(NotHandled("scale other than 1, 2, 4 or 8"));
    }
    let mut quant = [[0i32; 64]; 4];
    let mut quant_defined = [false; 4];
    let mut dc_tables: [Option<Box<Huffman>>; 4] = Default::default();
    let mut ac_tables: [Option<Box<Huffman>>; 4] = Default::default();
    let mut components: Vec<Component> = Vec::new();
    let mut restart_interval = 0;
    if bytes.get(..2) != Some(&[0xff, 0xd8]) {
        return Err(NotHandled("no start-of-image marker"));
    }
    let mut at = 2;
    loop {
        let (Some(0xff), Some(&marker)) = (bytes.get(at), bytes.get(at + 1)) else {
            return Err(NotHandled("a marker expected"));
        };
        if marker == 0xff {
            at += 1; // a fill byte
            continue;
        }
        if matches!(marker, 0x01 | 0xd0..=0xd9) {
            return Err(NotHandled("a marker without a segment before the scan"));
        }
        let Some(&[hi, lo]) = bytes.get(at + 2..at + 4) else { return Err(NotHandled("truncated segment")) };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let Some(segment) = bytes.get(at + 4..at + 2 + len.max(2)) else {
            return Err(NotHandled("truncated segment"));
        };
        at += 2 + len.max(2);
        match marker {
            // Quantisation tables: 8-bit or 16-bit entries, in zigzag order.
            0xdb => {
                let mut s = segment;
                while let Some((&pq_tq, rest)) = s.split_first() {
                    let (wide, id) = (pq_tq >> 4, usize::from(pq_tq & 15));
                    let n = if wide == 0 { 64 } else { 128 };
                    if id > 3 || wide > 1 || rest.len() < n {
                        return Err(NotHandled("bad quantisation table"));
                    }
                    for (k, &z) in ZIGZAG.iter().enumerate() {
                        let q = if wide == 0 { u16::from(rest[k]) } else { u16::from_be_bytes([rest[2 * k], rest[2 * k + 1]]) };
                        quant[id][usize::from(z)] = i32::from(q);
                    }
                    quant_defined[id] = true;
                    s = &rest[n..];
                }
            }
            // Huffman tables: class (DC, AC) and id, 16 counts, then the symbols.
            0xc4 => {
                let mut s = segment;
                while let Some((&tc_th, rest)) = s.split_first() {
                    let (class, id) = (tc_th >> 4, usize::from(tc_th & 15));
                    let Some(counts) = rest.get(..16) else { return Err(NotHandled("bad Huffman table")) };
                    let counts: [u8; 16] = counts.try_into().unwrap_or_default();
                    let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
                    let Some(symbols) = rest.get(16..16 + total) else { return Err(NotHandled("bad Huffman table")) };
                    if class > 1 || id > 3 {
                        return Err(NotHandled("bad Huffman table"));
                    }
                    let table = Some(Box::new(Huffman::new(&counts, symbols)?));
                    if class == 0 { dc_tables[id] = table } else { ac_tables[id] = table }
                    s = &rest[16 + total..];
                }
            }
            0xdd => {
                let &[hi, lo, ..] = segment else { return Err(NotHandled("bad restart interval")) };
                restart_interval = usize::from(u16::from_be_bytes([hi, lo]));
            }
            // Adobe's marker: a transform flag other than 1 (YCbCr) means RGB or CMYK samples.
            0xee if segment.starts_with(b"Adobe") && segment.get(11) != Some(&1) => {
                return Err(NotHandled("Adobe colour transform"));
            }
            0xc0 | 0xc1 => {
                let &[precision, h1, h0, w1, w0, n, ref rest @ ..] = segment else {
                    return Err(NotHandled("bad frame header"));
                };
                let n = usize::from(n);
                if !components.is_empty()
                    || precision != 8
                    || u16::from_be_bytes([h1, h0]) as u32 != height
                    || u16::from_be_bytes([w1, w0]) as u32 != width
                    || !(n == 1 || n == 3)
                    || rest.len() < 3 * n
                {
                    return Err(NotHandled("frame not one 8-bit grey or colour frame of the size checked"));
                }
                for c in rest.chunks_exact(3).take(n) {
                    let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
                    if !(1..=2).contains(&h) || !(1..=2).contains(&v) || c[2] > 3 {
                        return Err(NotHandled("sampling factors other than 1 and 2"));
                    }
                    // One component alone is coded block by block, whatever its factors say.
                    let (h, v) = if n == 1 { (1, 1) } else { (h, v) };
                    components.push(Component { id: c[0], h, v, quant: usize::from(c[2]), dc_table: 0, ac_table: 0, dc: 0 });
                }
                if components.iter().map(|c| c.id).eq(*b"RGB") {
                    return Err(NotHandled("RGB samples"));
                }
            }
            0xc2..=0xcf => return Err(NotHandled("not a sequential Huffman frame")),
            0xda => {
                let Some((&n, rest)) = segment.split_first() else { return Err(NotHandled("bad scan header")) };
                let n = usize::from(n);
                if components.is_empty() || n != components.len() || rest.len() != 2 * n + 3 {
                    return Err(NotHandled("a scan without every component"));
                }
                for (c, s) in components.iter_mut().zip(rest.chunks_exact(2)) {
                    (c.dc_table, c.ac_table) = (usize::from(s[1] >> 4), usize::from(s[1] & 15));
                    if c.id != s[0] || c.dc_table > 3 || c.ac_table > 3 || !quant_defined[c.quant] {
                        return Err(NotHandled("bad scan header"));
                    }
                }
                // Spectral selection 0-63, no successive approximation: sequential.
                if rest[2 * n..] != [0, 63, 0] {
                    return Err(NotHandled("not a sequential scan"));
                }
                let frame = Frame { width: width as usize, height: height as usize, scale: scale as usize, restart_interval };
                return lanes.run(#[inline(always)] || frame.scan(&bytes[at..], &mut components, &quant, &dc_tables, &ac_tables));
            }
            _ => {}
        }
    }
}

struct Frame {
    width: usize,
    height: usize,
    scale: usize,
    restart_interval: usize,
}

type Tables = [Option<Box<Huffman>>; 4];

/// One component's decoded samples, one row of MCUs per strip.
struct Plane {
    /// Each block's samples across and down: 8 x 8 at full size; reduced, the block's share of
    /// the output (1 to 8 each way), so that every component comes out at the output size.
    block: (usize, usize),
    /// Samples per strip row (the MCU row's width) and rows per strip.
    stride: usize,
    rows: usize,
    /// The component's real size in samples, at full size (libjpeg's `downsampled_width` and
    /// `downsampled_height`): the blocks past it only pad the MCUs.
    size: (usize, usize),
    /// Output pixels per sample across and down at full size: (2, 2) for 4:2:0 chroma, (2, 1)
    /// for 4:2:2, else (1, 1).
    factor: (usize, usize),
    /// `samples.len() / (stride * rows)` strips, used in turn.
    samples: Vec<u8>,
}

impl Plane {
    /// Sample row `r` of the component (in the strip that holds it now).
    #[inline(always)]
    fn row(&self, r: usize) -> &[u8] {
        let strips = self.samples.len() / (self.stride * self.rows);
        let at = ((r / self.rows) % strips * self.rows + r % self.rows) * self.stride;
        &self.samples[at..at + self.stride]
    }

    /// Output row `y` of this component, at least the output's width: the sample row itself
    /// when the component is not sampled down, else upsampled into `out` (twice the
    /// component's width), `sums` a row of scratch. Upsampled as libjpeg's "fancy" upsampling
    /// does (the default, and so Pillow's): each output sample is 3/4 of the nearest sample and
    /// 1/4 of the next nearest, down and then across, in sixteenths with libjpeg's rounding, the
    /// edges repeating the component's last real sample.
    #[inline(always)]
    fn upsample<'a>(&'a self, y: usize, sums: &mut [u16], out: &'a mut [u8]) -> &'a [u8] {
        let (fh, fv) = self.factor;
        if (fh, fv) == (1, 1) {
            return self.row(y);
        }
        // Only 4:2:2 and 4:2:0 chroma come here (fh = 2), at least three samples wide.
        let (w, h) = self.size;
        let near = y / fv;
        let far = match (fv, y % 2) {
            (1, _) => near,
            (_, 0) => near.saturating_sub(1),
            _ => (near + 1).min(h - 1),
        };
        let (a, b, sums) = (&self.row(near)[..w], &self.row(far)[..w], &mut sums[..w]);
        // Down: 3 x the nearest row + the next nearest (4 x the one row when not sampled down).
        if fv == 2 {
            sums.iter_mut().zip(a.iter().zip(b)).for_each(|(s, (&a, &b))| *s = 3 * u16::from(a) + u16::from(b));
        } else {
            sums.iter_mut().zip(a).for_each(|(s, &a)| *s = 4 * u16::from(a));
        }
        // Across, with libjpeg's rounding: its 2 x 2 adds 8 and 7 sixteenths to the even and the
        // odd output columns, its 2 x 1 1/4 and 2/4.
        let (even, odd) = if fv == 2 { (8, 7) } else { (4, 8) };
        let out = &mut out[..2 * w];
        for (pair, s) in out[2..2 * w - 2].chunks_exact_mut(2).zip(sums.windows(3)) {
            let near = 3 * s[1];
            pair[0] = ((near + s[0] + even) >> 4) as u8;
            pair[1] = ((near + s[2] + odd) >> 4) as u8;
        }
        let (first, last) = (sums[0], sums[w - 1]);
        out[0] = ((4 * first + even) >> 4) as u8;
        out[1] = ((3 * first + sums[1] + odd) >> 4) as u8;
        out[2 * w - 2] = ((3 * last + sums[w - 2] + even) >> 4) as u8;
        out[2 * w - 1] = ((4 * last + odd) >> 4) as u8;
        out
    }
}

impl Frame {
    /// Decodes the scan in `data` (from just after its header) row of MCUs by row.
    #[inline(always)]
    fn scan(
        &self,
        data: &[u8],
        components: &mut [Component],
        quant: &[[i32; 64]; 4],
        dc_tables: &Tables,
        ac_tables: &Tables,
    ) -> Result<RgbImage, NotHandled> {
        let hmax = components.iter().map(|c| c.h).max().unwrap_or(1);
        let vmax = components.iter().map(|c| c.v).max().unwrap_or(1);
        let (scale, full) = (self.scale, self.scale == 1);
        let mut tables = Vec::with_capacity(components.len());
        for c in components.iter() {
            let (Some(dc), Some(ac)) = (dc_tables[c.dc_table].as_deref(), ac_tables[c.ac_table].as_deref()) else {
                return Err(NotHandled("a Huffman table missing"));
            };
            tables.push((dc, ac));
        }
        let (mcu_w, mcu_h) = (8 * hmax, 8 * vmax);
        let (mcus_x, mcus_y) = (self.width.div_ceil(mcu_w), self.height.div_ceil(mcu_h));
        let (out_w, out_h) = (self.width.div_ceil(scale), self.height.div_ceil(scale));
        // At full size a strip is turned into pixels once the next one is decoded (upsampling
        // reads a sample row past it), so three are kept: the one before, it and the next.
        let strips = if full { 3 } else { 1 };
        let mut planes = Vec::with_capacity(components.len());
        for c in components.iter() {
            let block = if full { (8, 8) } else { (8 * hmax / (c.h * scale), 8 * vmax / (c.v * scale)) };
            let (stride, rows) = (mcus_x * c.h * block.0, c.v * block.1);
            planes.push(Plane {
                block,
                stride,
                rows,
                size: ((self.width * c.h).div_ceil(hmax), (self.height * c.v).div_ceil(vmax)),
                factor: if full { (hmax / c.h, vmax / c.v) } else { (1, 1) },
                samples: vec![0; strips * rows * stride],
            });
        }
        // libjpeg upsamples these otherwise (repeating samples), or by factors Pillow cannot write
        // a test file for (4:4:0).
        let upsampled = |p: &Plane| p.factor == (1, 1) || (p.factor.0 == 2 && p.size.0 > 2);
        if full && (planes[0].factor != (1, 1) || !planes.iter().all(upsampled)) {
            return Err(NotHandled("at full size, chroma other than 4:4:4, 4:2:2 or 4:2:0"));
        }
        // Rows at the output size, one sample over when it is odd (upsampled in pairs).
        let mut rows = vec![vec![0u8; out_w + out_w % 2]; planes.len()];
        let mut sums = vec![0u16; out_w];
        let mut rgb = vec![0u8; out_w * out_h * 3];
        let mut bits = Bits { data, at: 0, acc: 0, count: 0, padding: 0 };
        let (mut mcus_left, mut next_restart) = (self.restart_interval, 0u8);
        let idct = Idct::new();
        let mut block = [0i32; 64];
        for my in 0..mcus_y {
            for mx in 0..mcus_x {
                if self.restart_interval > 0 {
                    if mcus_left == 0 {
                        bits.restart(next_restart)?;
                        next_restart = (next_restart + 1) & 7;
                        mcus_left = self.restart_interval;
                        components.iter_mut().for_each(|c| c.dc = 0);
                    }
                    mcus_left -= 1;
                }
                for ((c, plane), &(dc, ac)) in components.iter_mut().zip(&mut planes).zip(&tables) {
                    let (nh, nv) = plane.block;
                    let top = my % strips * plane.rows;
                    for by in 0..c.v {
                        for bx in 0..c.h {
                            block.fill(0);
                            let used = decode_block(&mut bits, dc, ac, &quant[c.quant], &mut c.dc, &mut block)?;
                            let at = (top + by * nv) * plane.stride + (mx * c.h + bx) * nh;
                            let out = &mut plane.samples[at..];
                            if full {
                                islow(&block, used, out, plane.stride);
                            } else {
                                idct.run(&block, used, (nh, nv), out, plane.stride);
                            }
                        }
                    }
                }
            }
            if bits.overran() {
                return Err(NotHandled("the scan ends early"));
            }
            match (full, my) {
                (false, _) => self.convert(my, mcu_h / scale, &planes, &mut rows, &mut sums, &mut rgb),
                (true, 0) => {}
                (true, _) => self.convert(my - 1, mcu_h, &planes, &mut rows, &mut sums, &mut rgb),
            }
        }
        if full {
            self.convert(mcus_y - 1, mcu_h, &planes, &mut rows, &mut sums, &mut rgb);
        }
        RgbImage::from_raw(out_w as u32, out_h as u32, rgb).ok_or(NotHandled("output size"))
    }

    /// Turns strip `s` (`strip_h` output rows) into RGB pixels in `rgb`, each component
    /// upsampled to the output size in `rows` where it is sampled down (`sums` the
    /// upsampling's scratch).
    #[inline(always)]
    fn convert(&self, s: usize, strip_h: usize, planes: &[Plane], rows: &mut [Vec<u8>], sums: &mut [u16], rgb: &mut [u8]) {
        let out_w = self.width.div_ceil(self.scale);
        let out_h = rgb.len() / (3 * out_w);
        for y in s * strip_h..((s + 1) * strip_h).min(out_h) {
            let mut lines: [&[u8]; 3] = [&[]; 3];
            for ((plane, row), line) in planes.iter().zip(rows.iter_mut()).zip(&mut lines) {
                *line = plane.upsample(y, sums, row);
            }
            let line = &mut rgb[y * out_w * 3..(y + 1) * out_w * 3];
            match &lines[..planes.len()] {
                [grey] => line.chunks_exact_mut(3).zip(*grey).for_each(|(px, &g)| px.fill(g)),
                [y, cb, cr] => ycbcr_to_rgb(&y[..out_w], &cb[..out_w], &cr[..out_w], line),
                _ => {} // not reached: the frame has 1 or 3 components
            }
        }
    }
}

/// JFIF's conversion (ITU-R BT.601 at full range) in libjpeg's fixed point, to the bit: 16
/// fraction bits, each coefficient rounded to them as its `FIX` does; red and blue round their
/// term before adding Y, green sums its two terms and rounds once.
#[inline(always)]
fn ycbcr_to_rgb(y: &[u8], cb: &[u8], cr: &[u8], out: &mut [u8]) {
    const HALF: i32 = 1 << 15;
    const CR_R: i32 = 91_881; // FIX(1.40200)
    const CB_G: i32 = 22_554; // FIX(0.34414)
    const CR_G: i32 = 46_802; // FIX(0.71414)
    const CB_B: i32 = 116_130; // FIX(1.77200)
    let byte = |v: i32| v.clamp(0, 255) as u8;
    for (((px, &y), &cb), &cr) in out.chunks_exact_mut(3).zip(y).zip(cb).zip(cr) {
        let (y, cb, cr) = (i32::from(y), i32::from(cb) - 128, i32::from(cr) - 128);
        px[0] = byte(y + ((CR_R * cr + HALF) >> 16));
        px[1] = byte(y + ((HALF - CB_G * cb - CR_G * cr) >> 16));
        px[2] = byte(y + ((CB_B * cb + HALF) >> 16));
    }
}

/// How many rows and columns of a block's coefficients hold any that is not zero.
#[derive(Clone, Copy)]
struct Used {
    rows: usize,
    cols: usize,
}

/// Decodes one block's coefficients into `block` (zeroed before), dequantised, in natural order.
#[inline(always)]
fn decode_block(
    bits: &mut Bits,
    dc: &Huffman,
    ac: &Huffman,
    quant: &[i32; 64],
    pred: &mut i32,
    block: &mut [i32; 64],
) -> Result<Used, NotHandled> {
    let size = u32::from(bits.symbol(dc)?);
    if size > 11 {
        return Err(NotHandled("bad DC difference"));
    }
    if size > 0 {
        *pred = pred.wrapping_add(bits.value(size));
    }
    // As libjpeg keeps coefficients: 16 bits each.
    block[0] = i32::from(*pred as i16).wrapping_mul(quant[0]);
    let mut used = Used { rows: 1, cols: 1 };
    let mut k = 1;
    while k < 64 {
        // A short code and its value bits in one look-up, the common case ...
        if bits.count < FAST_BITS {
            bits.refill();
        }
        let fast = ac.fast_ac[(bits.acc >> (64 - FAST_BITS)) as usize];
        let (run, value) = if fast != 0 {
            bits.take((fast & 15) as u32);
            (((fast >> 4) & 15) as usize, fast >> 8)
        } else {
            // ... else the symbol (zero run << 4 | value size), then the value.
            let rs = bits.symbol(ac)?;
            let (run, size) = (usize::from(rs >> 4), u32::from(rs & 15));
            if size == 0 {
                if run == 15 {
                    k += 16; // sixteen zeros
                    continue;
                }
                break; // the rest are zeros
            }
            (run, bits.value(size))
        };
        k += run;
        let Some(&z) = ZIGZAG.get(k) else { return Err(NotHandled("a coefficient past the block")) };
        let z = usize::from(z);
        block[z] = i32::from(value as i16).wrapping_mul(quant[z]);
        used = Used { rows: used.rows.max((z >> 3) + 1), cols: used.cols.max((z & 7) + 1) };
        k += 1;
    }
    Ok(used)
}

/// The inverse DCT of an 8 x 8 block to nh x nv pixels (each 1, 2, 4 or 8): the block's lowest
/// nh x nv frequencies through the nh- and nv-point transforms. With the factor 1/2 for every
/// size, a flat block keeps its level at every size.
struct Idct {
    /// For n = 1, 2, 4, 8 (index log2 n): C(u) cos((2x + 1) u pi / 2n) / 2, indexed [u][x],
    /// C(0) = 1/sqrt(2), C(u) = 1 otherwise.
    basis: [[[f32; 8]; 8]; 4],
}

impl Idct {
    fn new() -> Self {
        let basis = std::array::from_fn(|log| {
            let n = 1usize << log;
            std::array::from_fn(|u| {
                let c = if u == 0 { std::f64::consts::FRAC_1_SQRT_2 } else { 1.0 };
                std::array::from_fn(|x| {
                    let angle = ((2 * x + 1) * u) as f64 * std::f64::consts::PI / (2 * n) as f64;
                    if x < n { (c * angle.cos() / 2.0) as f32 } else { 0.0 }
                })
            })
        });
        Idct { basis }
    }

    /// Writes the pixels to `out`, rows `stride` apart, offset by 128 and rounded.
    #[inline(always)]
    fn run(&self, block: &[i32; 64], used: Used, (nh, nv): (usize, usize), out: &mut [u8], stride: usize) {
        macro_rules! sizes {
            ($(($h:literal, $v:literal)),*) => {
                match (nh, nv) {
                    $(($h, $v) => self.sized::<$h, $v>(block, used, out, stride),)*
                    _ => {} // not reached: the frame's factors give 8 * (1 or 2) / (2, 4 or 8)
                }
            };
        }
        sizes!((1, 1), (1, 2), (2, 1), (2, 2), (2, 4), (4, 2), (4, 4), (4, 8), (8, 4), (8, 8), (1, 4), (4, 1), (2, 8), (8, 2), (1, 8), (8, 1))
    }

    #[inline(always)]
    fn sized<const NH: usize, const NV: usize>(&self, block: &[i32; 64], used: Used, out: &mut [u8], stride: usize) {
        if used.rows == 1 && used.cols == 1 {
            // A flat block: its DC over 8 at every pixel.
            let level = to_byte(block[0] as f32 / 8.0 + 128.0);
            for y in 0..NV {
                out[y * stride..y * stride + NH].fill(level);
            }
            return;
        }
        let vertical = &self.basis[NV.trailing_zeros() as usize];
        let horizontal = &self.basis[NH.trailing_zeros() as usize];
        // Frequencies at or above n do not reach n pixels.
        let (rows, cols) = (used.rows.min(NV), used.cols.min(NH));
        for y in 0..NV {
            // Down the columns: t[u] = sum over v of basis[v][y] block[v][u] ...
            let mut t = [0f32; 8];
            for (coefficients, basis) in block.chunks_exact(8).zip(vertical).take(rows) {
                for (t, &c) in t.iter_mut().zip(coefficients) {
                    *t += basis[y] * c as f32;
                }
            }
            // ... then along the row.
            let mut pixels = [128.0f32; NH];
            for (&t, basis) in t.iter().zip(horizontal).take(cols) {
                for (p, &b) in pixels.iter_mut().zip(basis) {
                    *p += t * b;
                }
            }
            for (o, p) in out[y * stride..y * stride + NH].iter_mut().zip(pixels) {
                *o = to_byte(p);
            }
        }
    }
}

/// libjpeg's accurate integer inverse DCT ("islow", its default and so Pillow's), to the bit:
/// the Loeffler-Ligtenberg-Moschytz factorisation in 13-bit fixed point, columns first, their
/// results kept with 2 more bits, then rows, each output rounded, offset by 128 and clamped.
/// Arithmetic wraps as libjpeg-turbo's 32-bit vector code does; no valid file comes near it.
#[inline(always)]
fn islow(block: &[i32; 64], used: Used, out: &mut [u8], stride: usize) {
    const PASS1_BITS: usize = 2;
    let sample = |v: Wrapping<i32>| (v.0.clamp(-128, 127) + 128) as u8;
    if used.rows == 1 && used.cols == 1 {
        // What both passes give a block that is only its DC.
        let level = sample(((Wrapping(block[0]) << PASS1_BITS) + Wrapping(16)) >> 5);
        for y in 0..8 {
            out[y * stride..y * stride + 8].fill(level);
        }
        return;
    }
    let rows: [[Wrapping<i32>; 8]; 8] = std::array::from_fn(|v| std::array::from_fn(|u| Wrapping(block[8 * v + u])));
    let columns = idct_down(&rows, CONST_BITS - PASS1_BITS);
    // The same transform along the rows: on the transpose, down its columns.
    let turned = std::array::from_fn(|u| std::array::from_fn(|v| columns[v][u]));
    let pixels = idct_down(&turned, CONST_BITS + PASS1_BITS + 3);
    for y in 0..8 {
        for (x, o) in out[y * stride..y * stride + 8].iter_mut().enumerate() {
            *o = sample(pixels[x][y]);
        }
    }
}

/// Fraction bits of [`islow`]'s constants.
const CONST_BITS: usize = 13;

/// libjpeg's 8-point islow transform down each of the 8 columns of `v` (frequency `f` in row
/// `f`), each output rounded and shifted down by `shift`.
#[inline(always)]
fn idct_down(v: &[[Wrapping<i32>; 8]; 8], shift: usize) -> [[Wrapping<i32>; 8]; 8] {
    // The factorisation's constants: each value times 2^13, rounded (libjpeg's FIX_0_298631336 ...).
    let k = |c: i32| Wrapping(c);
    let (c0_298, c0_390, c0_541, c0_765) = (k(2446), k(3196), k(4433), k(6270));
    let (c0_899, c1_175, c1_501, c1_847) = (k(7373), k(9633), k(12299), k(15137));
    let (c1_961, c2_053, c2_562, c3_072) = (k(16069), k(16819), k(20995), k(25172));
    let round = Wrapping(1 << (shift - 1));
    let mut out = [[Wrapping(0); 8]; 8];
    for l in 0..8 {
        let x = |f: usize| v[f][l];
        // Even part: frequencies 0, 2, 4, 6.
        let z1 = (x(2) + x(6)) * c0_541;
        let (t2, t3) = (z1 - x(6) * c1_847, z1 + x(2) * c0_765);
        let (t0, t1) = ((x(0) + x(4)) << CONST_BITS, (x(0) - x(4)) << CONST_BITS);
        let (e0, e1, e2, e3) = (t0 + t3, t1 + t2, t1 - t2, t0 - t3);
        // Odd part: frequencies 7, 5, 3, 1.
        let (a, b, c, d) = (x(7), x(5), x(3), x(1));
        let z5 = (a + c + b + d) * c1_175;
        let (z1, z2) = (-(a + d) * c0_899, -(b + c) * c2_562);
        let (z3, z4) = (z5 - (a + c) * c1_961, z5 - (b + d) * c0_390);
        let (o0, o1) = (a * c0_298 + z1 + z3, b * c2_053 + z2 + z4);
        let (o2, o3) = (c * c3_072 + z2 + z3, d * c1_501 + z1 + z4);
        let sums = [e0 + o3, e1 + o2, e2 + o1, e3 + o0, e3 - o0, e2 - o1, e1 - o2, e0 - o3];
        for (row, s) in out.iter_mut().zip(sums) {
            row[l] = (s + round) >> shift;
        }
    }
    out
}

/// `v.clamp(0.0, 255.0).round() as u8` (halves away from zero, NaN to 0), in operations that
/// vectorise: adding 2^23 leaves the nearest integer (halves to even) in the
/// low bits, and a remainder of exactly one half means a half rounded down, so one is added.
#[inline(always)]
fn to_byte(v: f32) -> u8 {
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
    use super::{extend, to_byte, Bits, Huffman, NotHandled, FAST_BITS};

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

    /// A table with codes of every length from 1 to 16 (one each, the last two of length 16):
    /// 0, 10, 110, ... so long codes take the slow path. Symbols: run 0, size = length % 12.
    fn ladder() -> (Huffman, Vec<(u32, u32, u8)>) {
        let mut counts = [1u8; 16];
        counts[15] = 2;
        let symbols: Vec<u8> = (1..=17u8).map(|l| l.min(16) % 12).collect();
        let table = Huffman::new(&counts, &symbols).unwrap();
        // (code, length, symbol): length l is l-1 ones then a zero; the last is all ones.
        let mut codes: Vec<(u32, u32, u8)> = (1..=16).map(|l| (((1u32 << l) - 2), l, symbols[l as usize - 1])).collect();
        codes.push((0xffff, 16, symbols[16]));
        (table, codes)
    }

    /// The bits of `codes` one after another, padded with ones, as a scan's bytes (0xFF stuffed).
    fn stream(codes: &[(u32, u32)]) -> Vec<u8> {
        let (mut acc, mut n, mut out) = (0u64, 0u32, Vec::new());
        for &(code, len) in codes {
            acc = acc << len | u64::from(code);
            n += len;
            while n >= 8 {
                let byte = (acc >> (n - 8)) as u8;
                out.push(byte);
                if byte == 0xff {
                    out.push(0);
                }
                n -= 8;
            }
        }
        if n > 0 {
            let byte = ((acc << (8 - n)) as u8) | ((1 << (8 - n)) - 1);
            out.push(byte);
            if byte == 0xff {
                out.push(0);
            }
        }
        out
    }

    #[test]
    fn every_code_decodes_by_the_fast_table_or_the_slow_path() {
        let (table, codes) = ladder();
        // Each code twice, in an order that puts long and short codes side by side.
        let order: Vec<usize> = (0..codes.len()).chain((0..codes.len()).rev()).collect();
        let data = stream(&order.iter().map(|&i| (codes[i].0, codes[i].1)).collect::<Vec<_>>());
        let mut bits = Bits { data: &data, at: 0, acc: 0, count: 0, padding: 0 };
        for &i in &order {
            assert_eq!(bits.symbol(&table), Ok(codes[i].2), "code {i} ({} bits)", codes[i].1);
        }
        assert!(!bits.overran());
        // Past the data: zeros are loaded, and taking them is seen.
        for _ in 0..5 {
            let _ = bits.symbol(&table);
        }
        assert!(bits.overran());
    }

    #[test]
    fn the_fast_ac_table_gives_the_code_s_run_and_value() {
        // Two codes: 0 -> run 2, size 3; 10 -> run 0, size 1.
        let table = Huffman::new(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[0x23, 0x01]).unwrap();
        // 0 then value bits 010 (= -5), then 10 and value bit 1 (= 1).
        let entry = table.fast_ac[0b00_1010_1000 >> (10 - FAST_BITS)];
        assert_eq!((entry >> 8, (entry >> 4) & 15, entry & 15), (-5, 2, 4));
        let entry = table.fast_ac[0b10_1000_0000 >> (10 - FAST_BITS)];
        assert_eq!((entry >> 8, (entry >> 4) & 15, entry & 15), (1, 0, 3));
        // The values a size codes, both signs, as T.81's table F.1.
        assert_eq!([extend(0, 1), extend(1, 1), extend(0, 3), extend(3, 3), extend(4, 3), extend(7, 3)], [-1, 1, -7, -4, 4, 7]);
        assert_eq!([extend(0, 11), extend(2047, 11)], [-2047, 2047]);
    }

    #[test]
    fn over_full_tables_and_unknown_codes_are_refused() {
        // Three codes of length 1 do not fit.
        let bad = Huffman::new(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[1, 2, 3]);
        assert_eq!(bad.err(), Some(NotHandled("bad Huffman table")));
        // One code, 0: a stream of ones is no code.
        let table = Huffman::new(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[5]).unwrap();
        let data = [0xff, 0x00, 0xff, 0x00, 0xff, 0x00];
        let mut bits = Bits { data: &data, at: 0, acc: 0, count: 0, padding: 0 };
        assert_eq!(bits.symbol(&table), Err(NotHandled("bad Huffman code")));
    }
}
