//! Pointwise activations over whole activation buffers, split across threads when large.

use crate::kernels;
use half::f16;
use rayon::prelude::*;
use std::sync::OnceLock;

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

/// gate[i] = f(gate, up) over matching chunks of both, in parallel when large.
fn gated(gate: &mut [f32], up: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    assert_eq!(gate.len(), up.len(), "gated activation: length mismatch");
    if gate.len() <= CHUNK {
        f(gate, up);
    } else {
        gate.par_chunks_mut(CHUNK).zip(up.par_chunks(CHUNK)).for_each(|(g, u)| f(g, u));
    }
}

/// gate[i] = silu(gate[i]) * up[i] (SwiGLU), in place.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    gated(gate, up, kernels::silu_mul);
}

/// gate[i] = gelu(gate[i]) * up[i] (GeGLU, GELU's tanh approximation in f32), in place.
pub fn gelu_mul(gate: &mut [f32], up: &[f32]) {
    gated(gate, up, |g, u| {
        kernels::gelu_tanh(g);
        g.iter_mut().zip(u).for_each(|(g, u)| *g *= u);
    });
}

/// gate[i] = gelu(gate[i]) * up[i] as llama.cpp's CPU backend computes GeGLU: GELU looked up
/// in a table over every f16 input (the input rounded to f16), 0 at or below -10, the identity
/// at or above 10.
pub fn gelu_lookup_mul(gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    gated(gate, up, |g, u| {
        for (g, &u) in g.iter_mut().zip(u) {
            let x = *g;
            let gelu = if x <= -10.0 {
                0.0
            } else if x >= 10.0 {
                x
            } else {
                table[f16::from_f32(x).to_bits() as usize].to_f32()
            };
            *g = gelu * u;
        }
    });
}

/// GELU at every f16 value, rounded to f16 (ggml's ggml_table_gelu_f16, computed by the same
/// f32 formula, its 1 + a·x² contracted into a fused multiply-add as GCC compiles it).
fn gelu_table() -> &'static [f16] {
    static TABLE: OnceLock<Vec<f16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        const COEF_A: f32 = 0.044715;
        (0..=u16::MAX)
            .map(|bits| {
                let x = f16::from_bits(bits).to_f32();
                f16::from_f32(0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (COEF_A * x).mul_add(x, 1.0)).tanh()))
            })
            .collect()
    })
}
