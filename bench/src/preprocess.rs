//! The preprocessing baseline: what turning one encoded photo into the
//! model's input costs on one core, stage by stage, with no inference.
//!
//! The stages are the model server's own (`enclave::preprocess::Preprocess`,
//! configured from the model's manifest): `decode` (header checks, decode,
//! RGB), `resample` (resize and centre crop, only the crop's pixels) and
//! `tensor` (scale, normalise, channels first). Each is timed on its own over
//! the same loop, so the sum is the whole `prepare` of one image.

use std::path::Path;
use std::time::{Duration, Instant};

use enclave::config::Config;

pub struct PreprocessResult {
    pub images: u64,
    pub decode_ms: f64,
    pub resample_ms: f64,
    pub tensor_ms: f64,
}

impl PreprocessResult {
    pub fn total_ms(&self) -> f64 {
        self.decode_ms + self.resample_ms + self.tensor_ms
    }
}

/// Prepares `image` in a loop on the calling thread for about `duration`.
pub fn run(model_dir: &Path, image: &[u8], duration: Duration) -> Result<PreprocessResult, String> {
    let args = vec!["--model".to_string(), model_dir.display().to_string()];
    let pre = Config::from_args(args).map_err(|e| format!("preprocess: {e}"))?.preprocess;
    let (mut decode, mut resample, mut tensor) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut images = 0u64;
    let started = Instant::now();
    while images == 0 || started.elapsed() < duration {
        let t0 = Instant::now();
        let rgb = pre.decode(image).map_err(|e| format!("preprocess: {e}"))?;
        let t1 = Instant::now();
        let crop = pre.resample(&rgb).map_err(|e| format!("preprocess: {e}"))?;
        let t2 = Instant::now();
        std::hint::black_box(pre.input_tensor(&crop));
        let t3 = Instant::now();
        decode += t1 - t0;
        resample += t2 - t1;
        tensor += t3 - t2;
        images += 1;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0 / images as f64;
    Ok(PreprocessResult { images, decode_ms: ms(decode), resample_ms: ms(resample), tensor_ms: ms(tensor) })
}
