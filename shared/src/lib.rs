//! The wire protocol and transports shared by the parent front and the model
//! server. This crate is part of the trusted base: it runs inside the enclave.
//!
//! - [`limits`]: every bound of the appliance, with its reason.
//! - [`frame`]: the length-prefixed frame protocol, drawn field by field.
//! - [`transport`]: `vsock:` and `unix:` addresses, listeners and streams.
//! - `fuzz` (feature `fuzzing`, never in the enclave): the fuzz harness bodies, run by
//!   `cargo test` and by cargo-fuzz.
#![forbid(unsafe_code)]

pub mod frame;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod limits;
pub mod transport;
