//! The model server. Inside the Nitro Enclave it listens on vsock; on the
//! parent it runs the same code on a Unix socket as the public server.
//!
//! The crate is small on purpose; read it in this order: `main.rs` (start-up),
//! `server.rs` (connections and the hostile-input policy), `pool.rs`
//! (workers and the bounded queue), `model.rs` (tract), `direct_conv.rs` (the
//! 3x3 and 7x7 convolutions without im2col), `winograd.rs` (its transform for
//! the 3x3 ones of stride 1), `max_pool.rs` (max pooling by rows),
//! `depthwise.rs` (tract's x86-64 depthwise kernel), `matmul.rs` (one
//! correction to tract's choice of matrix-product kernel), `llc.rs` (the
//! share of the last-level cache tract blocks products against),
//! `preprocess.rs` (image decoding under limits), `jpeg.rs` (its baseline JPEG
//! decode, libjpeg-turbo's to the bit at full size, or at a half, a quarter or
//! an eighth of the size), `resample.rs` (its resize and crop, sixteen rows at
//! a time), `lanes.rs` (both compiled for each vector width), `config.rs`
//! (flags and manifest),
//! `sealed.rs` (sealed requests: OHTTP keys, the inner request, the answer),
//! `nsm.rs` (attestation documents), `entropy.rs`, then
//! `shared/src/frame.rs` (the wire).
//! `entropy.rs` and `nsm.rs` (three system calls), `depthwise.rs`,
//! `direct_conv.rs` and `winograd.rs` (SIMD kernels' loads and stores) and
//! `lanes.rs` (the calls of code compiled for AVX2 and AVX-512F) hold the only
//! `unsafe`.
//! It is a library too, so that tests can compare the server's answers with
//! the same preprocessing run directly through tract.
#![deny(unsafe_code)] // reason: allowed in entropy.rs (two system calls), nsm.rs (one ioctl), depthwise.rs (one kernel), direct_conv.rs (two tiles), winograd.rs (one tile) and lanes.rs (the calls of code compiled for AVX2 and AVX-512F) alone

pub mod config;
#[cfg(target_arch = "x86_64")]
pub mod direct_conv;
#[cfg(target_arch = "x86_64")]
pub mod depthwise;
pub mod entropy;
pub mod jpeg;
pub mod lanes;
pub mod llc;
pub mod max_pool;
#[cfg(target_arch = "x86_64")]
pub mod matmul;
pub mod model;
pub mod nsm;
pub mod pool;
pub mod preprocess;
pub mod resample;
pub mod sealed;
pub mod server;
#[cfg(target_arch = "x86_64")]
pub mod winograd;

use std::time::Instant;

/// Where the enclave changes tract's choice of kernel, what tract runs on
/// this machine, one line each: the start-up log and `bench profile` print them.
pub fn engine_kernels() -> Vec<String> {
    #[cfg(target_arch = "x86_64")]
    return vec![
        direct_conv::describe(),
        max_pool::describe(),
        format!("channel-last depthwise kernel {}", depthwise::kernel_here().unwrap_or("none (tract's loop)")),
        format!("products of few terms over many columns on {}", matmul::kernel_here()),
        llc::describe(),
    ];
    #[cfg(not(target_arch = "x86_64"))]
    vec![max_pool::describe(), llc::describe()]
}

/// Numbers in [-0.5, 0.5), the same from the same `seed`: the unit tests' inputs and weights.
#[cfg(test)]
pub(crate) fn test_numbers(mut seed: u32) -> impl FnMut() -> f32 {
    move || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
    }
}

use shared::frame::{ErrorCode, ErrorReply};

use crate::model::{top_k, Model, WorkerState};
use crate::pool::{micros, Classified, Engine};

/// The real engine: decode and preprocess, then the tract plan.
impl Engine for Model {
    type State = WorkerState;

    fn new_state(&self) -> Result<WorkerState, String> {
        Model::new_state(self).map_err(|e| e.to_string())
    }

    fn classify(&self, state: &mut WorkerState, image: &[u8], k: usize) -> Result<Classified, ErrorReply> {
        let t0 = Instant::now();
        let input = self.preprocess.prepare(image).map_err(|e| ErrorReply::new(e.code(), e.to_string()))?;
        let t1 = Instant::now();
        let scores = self.scores(state, input).map_err(|e| ErrorReply::new(ErrorCode::Internal, e.to_string()))?;
        let t2 = Instant::now();
        Ok(Classified {
            top: top_k(&scores, k),
            decode_us: micros((t1 - t0).as_micros()),
            infer_us: micros((t2 - t1).as_micros()),
        })
    }
}
