//! Causal multi-head attention of new tokens over the KV cache, grouped-query aware.

use crate::kernels::{axpy, dot, scale, Elem};
use rayon::prelude::*;

/// The geometry of one attention layer.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

/// For new tokens t at positions pos0 + t:
/// out[t, h] = softmax(q[t, h] · K[kvh, 0..=pos]ᵀ / sqrt(head_dim)) · V[kvh, 0..=pos],
/// with kvh = h / (n_head / n_kv_head).
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
        let q_h = &q[t * q_stride + h * head_dim..][..head_dim];
        let base = (h / group) * max_seq * head_dim;
        let keys = &k_cache[base..base + (pos0 + t + 1) * head_dim];
        let values = &v_cache[base..base + (pos0 + t + 1) * head_dim];
        // Online softmax: one pass over the keys, no score buffer. `o` accumulates
        // sum_j exp(s_j - m) v_j for the running maximum m; `l` is sum_j exp(s_j - m).
        o.fill(0.0);
        let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
        for (k_j, v_j) in keys.chunks_exact(head_dim).zip(values.chunks_exact(head_dim)) {
            let s = dot(q_h, k_j) * inv_sqrt_d;
            if s > m {
                let c = (m - s).exp();
                scale(o, c);
                l *= c;
                m = s;
            }
            let p = (s - m).exp();
            l += p;
            axpy(o, p, v_j);
        }
        scale(o, 1.0 / l);
    });
}
