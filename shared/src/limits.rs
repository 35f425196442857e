//! Every limit of the appliance, in one place.
//!
//! Each bound is checked before anything derived from the input is allocated.
//! The parent front enforces the HTTP-side limits and the model server the
//! frame- and image-side ones; both read them from here, so the two sides can
//! never disagree. The README's "Limits" table lists every one of them (a test,
//! shared/tests/docs.rs, fails when one is missing).

use std::time::Duration;

// ---- Frames (parent <-> model server) ----

/// Largest frame body, in bytes: the largest HTTP body the parent accepts
/// ([`MAX_HTTP_BODY`], which as one raw image becomes one frame) plus room for
/// the per-image headers of [`MAX_IMAGES`] images and nothing more. A JSON
/// body decodes to less (base64 is 4/3 of its bytes).
pub const MAX_FRAME_LEN: u32 = MAX_HTTP_BODY as u32 + 64 * 1024;

/// Most images in one inference request. The study sends batches of 2; 64
/// keeps one request's work (64 x ~60 ms) well under the request deadline.
pub const MAX_IMAGES: usize = 64;

/// Most classes returned per image through the study API (`top_k`), the
/// sealed route and the Open Inference Protocol's classification extension.
/// A client wanting the whole distribution asks for the OIP's full FP32
/// output instead, which the parent fetches with [`MAX_FRAME_TOP_K`].
pub const MAX_TOP_K: usize = 100;

/// Most scores per image in a frame: the `top_k` of an `Infer` frame and the
/// `k` of each image in a `Result` frame. Above [`MAX_TOP_K`] so that the
/// parent can ask for every class of a model (the OIP's full FP32
/// `[N, num_classes]` output); the model server answers min(top_k,
/// num_classes) scores, best first. Bounded so that the largest `Result`
/// frame fits [`MAX_FRAME_LEN`]: 2 (image count) + [`MAX_IMAGES`] x (12
/// (timings) + 2 (k) + 32,768 x 8 (class id and score)) = 2 + 64 x 262,158 =
/// 16,778,114 bytes, under 16,842,752. `u16::MAX` (65,535) scores would make
/// it 33,554,818 bytes, twice the limit. ImageNet-21k's 21,843 classes fit; a
/// model with more classes is served top-k only (`full_output_refused`). A
/// reply never holds more scores than the model has classes: for
/// EfficientNet-Lite0's 1000, at most 2 + 64 x 8,014 = 512,898 bytes.
pub const MAX_FRAME_TOP_K: usize = 32_768;

/// Longest string in a frame (model name, label, error message), in bytes.
pub const MAX_STRING_LEN: usize = 4096;

/// Most labels a model-info reply may carry (ImageNet-21k has 21,843).
pub const MAX_LABELS: usize = 100_000;

/// Most seed bytes the parent may send to the enclave in one frame. 64 bytes
/// are plenty to mix in; 4096 is the kernel's own per-write cap for RNG input.
pub const MAX_SEED_LEN: usize = 4096;

// ---- Attestation and sealed requests (docs/SEALED.md) ----

/// Longest client nonce in an attestation request, in bytes. The NSM takes
/// up to 512; 64 is twice what a fresh random nonce needs.
pub const MAX_NONCE_LEN: usize = 64;

/// Largest attestation document, in bytes. The NSM driver's response buffer
/// is 12 KiB and a real document is about 4.5 KiB.
pub const MAX_DOCUMENT_LEN: usize = 16 * 1024;

/// Largest key configuration list (`application/ohttp-keys`) in a frame: the
/// one key offered takes 43 bytes.
pub const MAX_KEYS_LEN: usize = 1024;

/// Sealed answers are padded to a multiple of this many bytes, so their
/// length does not tell the class, the label or the error they carry.
pub const SEALED_REPLY_PAD: usize = 4096;

/// How long a rotated-out key still opens requests (sealed just before the
/// rotation, by clients that have not yet re-attested).
pub const KEY_GRACE: Duration = Duration::from_secs(600);

/// Default key lifetime (the model server's `--key-rotation`).
pub const DEFAULT_KEY_ROTATION: Duration = Duration::from_secs(24 * 3600);

/// How long the model server waits for the development NSM's answer.
pub const NSM_TIMEOUT: Duration = Duration::from_secs(5);

/// A frame must arrive whole within this time of its first byte (one
/// deadline for the whole frame, not a per-read timeout: a peer trickling one
/// byte at a time is cut off at the same moment as one that stalls), and a
/// reply must be taken within the same time. 10 s moves a
/// [`MAX_FRAME_LEN`] frame at 13 Mbit/s; vsock and Unix sockets move it in
/// milliseconds.
pub const FRAME_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// After a malformed frame the model server reads and drops what the peer
/// still sends (so that closing does not reset the connection and destroy
/// the error frame before the peer reads it): at most this many bytes...
pub const DRAIN_MAX_BYTES: u64 = 1 << 20;

/// ...and for at most this long, whatever the peer's pace.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

// ---- Images (model server) ----

/// Largest accepted image width or height, in pixels, read from the header
/// before any pixel is decoded (a 60000x60000 PNG is refused here).
pub const MAX_IMAGE_SIDE: u32 = 12_000;

/// Memory one worker may use to turn one encoded image into the model's
/// input: the decoded pixels, their RGB conversion, the decoder's own
/// working buffers and the resampler's, all estimated from the image's
/// header before a pixel is decoded (enclave/src/preprocess.rs). An image
/// whose estimate is over this is refused with `image_too_large`. 64 MiB
/// takes a 16-megapixel baseline JPEG (4 bytes a pixel: a 12 MP phone photo
/// needs 46 MiB), a 5.5-megapixel progressive one (12 bytes a pixel) and a
/// 19-megapixel RGB PNG; a classifier looks at 224 x 224 of it. The enclave's
/// memory counts it once per worker (docs/DEPLOY.md, "Memory budget").
pub const IMAGE_MEMORY_BUDGET: u64 = 64 * 1024 * 1024;

/// What the PNG decoder may allocate beside the pixels (ancillary chunks
/// such as an ICC profile, text, and its row buffers). Real ICC profiles are
/// under 1 MiB; an 8x8 PNG whose iCCP chunk inflates to 400 MiB is refused
/// at this bound. Counted inside [`IMAGE_MEMORY_BUDGET`].
pub const DECODER_SIDE_ALLOC: u64 = 4 * 1024 * 1024;

// ---- Model server ----

/// Most simultaneous connections to one model server. The parent keeps a
/// small pool (see [`BACKEND_POOL_SIZE`]); anything beyond this gets a `busy`
/// error frame and is closed.
pub const MAX_CONNECTIONS: usize = 64;

/// Default depth of the model server's image queue, per worker. A request
/// whose images do not fit in the queue gets `busy` at once.
pub const QUEUE_DEPTH_PER_WORKER: usize = 32;

/// Frame bodies one model server holds in memory at once, over all its
/// connections, in bytes. A frame's length is reserved from this budget when
/// its header arrives, before its body is allocated, and given back when the
/// last image of it has been processed; a frame that does not fit gets `busy`
/// and its connection is closed. It is exactly what the parent can send at
/// once ([`BACKEND_POOL_SIZE`] connections, each one frame of at most
/// [`MAX_FRAME_LEN`]), so the parent itself never meets `busy` from it; other
/// local clients do, instead of exhausting the enclave's memory.
pub const FRAME_MEMORY_BUDGET: u64 = BACKEND_POOL_SIZE as u64 * MAX_FRAME_LEN as u64;

/// How long a shutting-down model server waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

// ---- Parent front (HTTP) ----

/// Largest HTTP request body, in bytes. The study's nginx allowed 50 MiB; 16
/// MiB carries the study's batch of two photos (520 KB) thirty times over, or
/// one raw image far larger than [`IMAGE_MEMORY_BUDGET`] lets a worker
/// decode, and keeps [`FRAME_MEMORY_BUDGET`] (8 frames of this size) inside
/// the 512 MiB an EfficientNet-Lite0 enclave gets (docs/DEPLOY.md).
pub const MAX_HTTP_BODY: usize = 16 * 1024 * 1024;

/// JSON values (objects, arrays, scalars, keys) in one Open Inference
/// Protocol request header, at most (413 above). The header is parsed into a
/// value tree; a real request has a few dozen, and the budget keeps a hostile
/// 16 MiB header of `[[[[...` from costing more than its own size.
pub const MAX_JSON_VALUES: usize = 1024;

/// Bytes of an Open Inference Protocol request's `id`, which the reply echoes.
pub const MAX_ID_LEN: usize = 256;

/// Connections the parent keeps open to each model server (`--pool` may only
/// lower it: the model server's [`FRAME_MEMORY_BUDGET`] is sized for it).
pub const BACKEND_POOL_SIZE: usize = 8;

/// How long a request may wait for a free backend connection before 503.
/// Waiters are served first come, first served.
pub const BACKEND_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// Deadline for one backend round trip (send the frame, get the reply), else 504.
pub const BACKEND_DEADLINE: Duration = Duration::from_secs(30);

/// Default number of HTTP handler threads in the parent.
pub const HTTP_THREADS: usize = 16;

/// Most HTTP handler threads `--threads` may ask for. Each holds at most one
/// request body (up to [`MAX_HTTP_BODY`]) in memory: 256 x 16 MiB is already
/// far more memory than the parent should ever commit.
pub const MAX_HTTP_THREADS: usize = 256;

/// Longest per-request backend deadline `--deadline-ms` may set. Past ten
/// minutes a client has long given up, and the connection would be held for nothing.
pub const MAX_BACKEND_DEADLINE: Duration = Duration::from_secs(600);

/// Per-read and per-write idle timeout of every HTTP connection
/// (`SO_RCVTIMEO`/`SO_SNDTIMEO`, set on the listening socket and inherited by
/// every accepted one). A client that sends nothing for this long while the
/// parent waits for its request line, headers or body, or that stops taking
/// its reply, is dropped; tiny_http sets no timeout of its own. Ten seconds is
/// what a person on a bad mobile link needs between two packets, and short
/// enough that an idle keep-alive connection does not hold a thread for long.
pub const HTTP_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest `--io-timeout-ms`.
pub const MAX_HTTP_IO_TIMEOUT: Duration = Duration::from_secs(300);

/// A request body must arrive at [`HTTP_BODY_MIN_RATE`] on average once this
/// much time has passed since its first byte was asked for; otherwise 408.
/// The idle timeout alone would let a client trickle one byte every nine
/// seconds and hold a handler thread for days.
pub const HTTP_BODY_GRACE: Duration = Duration::from_secs(2);

/// Slowest average body rate accepted after [`HTTP_BODY_GRACE`], in bytes per
/// second. 8 KiB/s (64 kbit/s) is what each of 300 clients gets sharing the
/// study's 25 Mbit/s residential uplink, so legitimate uploads pass even
/// there (64 KiB/s, the first value, refused 15% of requests at 50 clients
/// on that link: BENCHMARKS.md); a client trickling a body must still spend
/// real bandwidth, 8 KiB/s per handler thread it wants to hold.
pub const HTTP_BODY_MIN_RATE: u64 = 8 * 1024;

/// Most header lines one request may carry (431 above). Browsers send ~20,
/// curl 3; AWS's load balancers allow 100.
pub const MAX_HTTP_HEADERS: usize = 100;

/// Most bytes of header names and values in one request (431 above); the
/// same 64 KiB an AWS Application Load Balancer allows. tiny_http reads the
/// whole header block before the parent sees the request, so this bounds
/// what is passed on, not what tiny_http buffers (see THREAT_MODEL.md).
pub const MAX_HTTP_HEADER_BYTES: usize = 64 * 1024;

/// First wait before reconnecting to a backend that refused a connection; it
/// doubles per failure up to [`BACKEND_BACKOFF_MAX`]. Requests arriving while
/// a backend backs off get 503 at once instead of each paying a connect attempt.
pub const BACKEND_BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Longest reconnect backoff: a restarted backend is used again within a second
/// (sooner when the readiness checker sees it first).
pub const BACKEND_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How often the parent pings each backend for `/ready` and the `up` gauges.
pub const READY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Deadline of one readiness ping (Ping never queues behind inference, so a
/// healthy server answers in well under a millisecond).
pub const READY_PING_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_limit_covers_largest_http_body() {
        // A raw-image HTTP body becomes one image in one frame: it must fit.
        assert!(MAX_HTTP_BODY + 1024 < MAX_FRAME_LEN as usize);
        // Every image header of a full request fits beside the body.
        assert!(MAX_FRAME_LEN as usize - MAX_HTTP_BODY >= 4 + MAX_IMAGES * 4);
        // A Result frame of MAX_IMAGES images of MAX_FRAME_TOP_K scores each fits, and k fits its u16.
        assert!(2 + MAX_IMAGES * (12 + 2 + MAX_FRAME_TOP_K * 8) <= MAX_FRAME_LEN as usize);
        assert!(MAX_TOP_K <= MAX_FRAME_TOP_K && MAX_FRAME_TOP_K <= usize::from(u16::MAX));
        // The parent's pool, full, fits the model server's frame budget.
        assert!(BACKEND_POOL_SIZE as u64 * u64::from(MAX_FRAME_LEN) <= FRAME_MEMORY_BUDGET);
        // A 12 MP baseline JPEG (4 bytes a pixel with the decoder's buffers) is served.
        assert!(IMAGE_MEMORY_BUDGET >= 4 * 4032 * 3024 + DECODER_SIDE_ALLOC);
    }

    #[test]
    fn body_grace_is_shorter_than_the_io_timeout() {
        assert!(HTTP_BODY_GRACE < HTTP_IO_TIMEOUT);
    }
}
