//! The parent front: the appliance's only HTTP surface.
//!
//! It runs on the EC2 parent instance, outside the enclave, and turns HTTP
//! requests into frames for two model servers running the same binary: the
//! *secure* one inside the Nitro Enclave (reached over vsock) and the *public*
//! one on the parent itself (reached over a Unix socket). It holds no model.
//!
//! - [`cli`]: flags and the `ping` subcommand.
//! - [`api`]: request bodies to frames, replies to JSON, errors to statuses.
//! - [`backend`]: pooled frame connections, reconnects, deadlines, the seed.
//! - [`server`]: tiny_http, the handler threads, the routes, the access log.
//! - [`metrics`]: Prometheus text.
//! - [`v2`]: the Open Inference Protocol V2 routes (`/v2/...`).
//! - [`sealed`]: the relay for attestation and sealed (Oblivious HTTP) requests.
//! - [`listen`]: the listening socket and its timeouts.
//! - [`fuzz`]: the request-parsing fuzz harness body (`cargo test` and `fuzz/`).
//!
//! The property everything here protects: the secure route is answered by the
//! enclave or not at all (503), and nothing from a request reaches a log.
#![forbid(unsafe_code)]

pub mod api;
pub mod backend;
pub mod cli;
pub mod fuzz;
pub mod listen;
pub mod metrics;
pub mod sealed;
pub mod server;
pub mod v2;
