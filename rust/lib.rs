//! gptgen's engine: the forward passes of GPT-family models on the CPU.
//!
//! Python (python/gptgen) finds and loads models, tokenizes and samples; this crate owns the
//! hot loops. Layers, top to bottom:
//! - `kernels`: SIMD/scalar twins of the innermost loops (dot, axpy), picked at run time;
//! - `tensor`: typed, validated views of weight buffers that live outside Rust (memory maps);
//! - `ops`: matmul, norms, activations, attention over the KV cache, built on the kernels;
//! - `model`: the per-architecture forward passes and the per-sequence session state;
//! - `py` (feature `python`): the PyO3 boundary, the only place that touches Python objects.

pub mod error;
pub mod kernels;
pub mod model;
pub mod ops;
pub mod quant;
pub mod tensor;

#[cfg(feature = "python")]
mod py;
