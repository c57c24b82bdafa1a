//! Pointwise activations over whole activation buffers, split across threads when large.

use crate::kernels;
use rayon::prelude::*;

/// Elements per task: below this, one thread is faster than handing out work.
const CHUNK: usize = 1 << 14;

/// GELU, tanh approximation (GPT-2's "gelu_new"), in place.
pub fn gelu_tanh(x: &mut [f32]) {
    if x.len() <= CHUNK {
        kernels::gelu_tanh(x);
    } else {
        x.par_chunks_mut(CHUNK).for_each(kernels::gelu_tanh);
    }
}

/// gate[i] = silu(gate[i]) * up[i] (SwiGLU), in place.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    if gate.len() <= CHUNK {
        kernels::silu_mul(gate, up);
    } else {
        assert_eq!(gate.len(), up.len(), "silu_mul: length mismatch");
        gate.par_chunks_mut(CHUNK).zip(up.par_chunks(CHUNK)).for_each(|(g, u)| kernels::silu_mul(g, u));
    }
}
