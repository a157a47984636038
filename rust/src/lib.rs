//! Rust core of caxton-models.
//!
//! Everything here is plain Rust with no Python types, so `cargo test` runs
//! without libpython. The thin PyO3 layer lives in `py/`, behind the
//! `python` feature that maturin turns on.

pub mod batch;
pub mod bm25;
pub mod download;
pub mod error;
pub mod exceptions;
pub mod hash;
pub mod http;
pub mod mapped;
pub mod onnx;
pub mod safetensors;

#[cfg(feature = "python")]
mod py;

pub use error::CoreError;
