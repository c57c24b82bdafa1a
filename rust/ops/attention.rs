//! Causal multi-head attention of new tokens over the KV cache, grouped-query aware.

use crate::kernels::{axpy, dot, Elem};
use crate::ops::activation::exp;
use rayon::prelude::*;
use std::cell::RefCell;

/// The geometry of one attention layer.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

thread_local! {
    /// Per-worker buffers: the query rounded to the cache type [head_dim] and the attention
    /// weights [positions]. They grow to the longest sequence seen and are then reused.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// For new tokens t at positions pos0 + t:
/// out[t, h] = softmax(q[t, h] · K[kvh, 0..=pos]ᵀ / sqrt(head_dim)) · V[kvh, 0..=pos],
/// with kvh = h / (n_head / n_kv_head).
///
/// Queries and attention weights are rounded to the cache's element type before they meet
/// K and V, as ggml converts a matmul's activations to the weights' type: with an f16 cache
/// this reproduces llama.cpp's numerics, with an f32 cache it is exact float32 attention.
///
/// q: [n, q_stride], head h at columns h*head_dim..; out: [n, n_head*head_dim];
/// k_cache, v_cache: [n_kv_head, max_seq, head_dim], already holding positions 0..pos0+n.
#[allow(clippy::too_many_arguments)]
pub fn attention<C: Elem>(
    out: &mut [f32],
    q: &[f32],
    q_stride: usize,
    k_cache: &[C],
    v_cache: &[C],
    max_seq: usize,
    pos0: usize,
    heads: Heads,
) {
    let Heads { n_head, n_kv_head, head_dim } = heads;
    let group = n_head / n_kv_head;
    let n = out.len() / (n_head * head_dim);
    assert!(n_head % n_kv_head == 0 && pos0 + n <= max_seq);
    assert!(q.len() >= (n.max(1) - 1) * q_stride + n_head * head_dim);
    assert!(k_cache.len() == n_kv_head * max_seq * head_dim && v_cache.len() == k_cache.len());
    let inv_sqrt_d = 1.0 / (head_dim as f32).sqrt();

    out.par_chunks_mut(head_dim).enumerate().for_each(|(idx, o)| {
        let (t, h) = (idx / n_head, idx % n_head);
        let len = pos0 + t + 1;
        let base = (h / group) * max_seq * head_dim;
        let keys = &k_cache[base..base + len * head_dim];
        let values = &v_cache[base..base + len * head_dim];
        SCRATCH.with_borrow_mut(|(q_h, weights)| {
            q_h.clear();
            q_h.extend(q[t * q_stride + h * head_dim..][..head_dim].iter().map(|&v| C::from_f32(v).to_f32()));
            weights.clear();
            weights.extend(keys.chunks_exact(head_dim).map(|k_j| dot(q_h, k_j) * inv_sqrt_d));
            let inv_sum = softmax_unnormalised(weights);
            o.fill(0.0);
            for (&w, v_j) in weights.iter().zip(values.chunks_exact(head_dim)) {
                axpy(o, C::from_f32(w * inv_sum).to_f32(), v_j);
            }
        });
    });
}

/// Replaces scores s with e^(s - max) and returns 1 / their sum, summing as ggml's AVX2
/// softmax does: eight at a time in f32 (pairwise), the partial sums in f64.
fn softmax_unnormalised(scores: &mut [f32]) -> f32 {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let mut sum = 0.0f64;
    let mut chunks = scores.chunks_exact_mut(8);
    for lanes in &mut chunks {
        for s in lanes.iter_mut() {
            *s = exp(*s - max);
        }
        let quad = [lanes[0] + lanes[4], lanes[1] + lanes[5], lanes[2] + lanes[6], lanes[3] + lanes[7]];
        sum += ((quad[0] + quad[2]) + (quad[1] + quad[3])) as f64;
    }
    for s in chunks.into_remainder() {
        *s = (*s - max).exp();
        sum += *s as f64;
    }
    (1.0 / sum) as f32
}
