//! Causal multi-head attention of new tokens over the KV cache, grouped-query aware.
//!
//! The arithmetic follows llama.cpp's CPU attention (without flash attention) step by step:
//! queries and attention weights are rounded to the cache's element type before they meet K
//! and V (ggml converts a matmul's activations to the weights' type), softmax uses ggml's exp,
//! and every sum is split over SIMD lanes and combined as ggml combines it. With an f16 cache
//! this reproduces llama.cpp's logits bit for bit; with an f32 cache it is plain float32
//! attention, as accurate as any other order.

use crate::kernels::{axpy_in_lanes, axpy_lanes8, dot_rows, dot_tiled_rows, reduce_lanes, round_to, softmax_exp, Elem};
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;

/// The geometry of one attention layer.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

impl Heads {
    /// Width of a row of queries (and of the attention output).
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of a row of keys or values.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
}

/// How llama.cpp spreads a sum over SIMD lanes: several tokens at once go through tinyBLAS
/// (8 lanes), a single token through ggml_vec_dot_f16 (4 x 8 lanes).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lanes {
    Tiled,
    Vector,
}

impl Lanes {
    fn count(self) -> usize {
        match self {
            Lanes::Tiled => 8,
            Lanes::Vector => 32,
        }
    }

    /// out[d] = the lane values partial[l, d] (partial: [count(), out.len()]) combined as the
    /// matching ggml kernel combines them.
    fn reduce(self, partial: &[f32], out: &mut [f32]) {
        reduce_lanes(partial, out, self.count());
    }
}

thread_local! {
    /// Per-worker buffers, grown to the longest sequence seen and then reused: the query
    /// rounded to the cache type [head_dim], the attention weights [positions], and the
    /// per-lane partial sums of the output [lanes, head_dim].
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// One sequence's share of an attention call: its cache for this layer and which rows of the
/// call are its new tokens.
pub struct Sequence<'a, C> {
    /// [n_kv_head, max_seq, head_dim] each, already holding positions 0..pos0 + rows.len().
    pub k_cache: &'a [C],
    pub v_cache: &'a [C],
    pub max_seq: usize,
    /// Position of its first new row.
    pub pos0: usize,
    /// Its rows in q and out.
    pub rows: Range<usize>,
}

/// For each sequence s and each of its new rows r, at position p = s.pos0 + (r - s.rows.start):
/// out[r, h] = softmax(q[r, h] · K_s[kvh, 0..=p]ᵀ / sqrt(head_dim)) · V_s[kvh, 0..=p],
/// with kvh = h / (n_head / n_kv_head). Every (row, head) of every sequence is one task of a
/// single parallel region; rows of no sequence are left as they are.
///
/// q: [rows, q_stride], head h at columns h*head_dim..; out: [rows, n_head*head_dim].
pub fn attention<C: Elem>(out: &mut [f32], q: &[f32], q_stride: usize, seqs: &[Sequence<C>], heads: Heads) {
    let Heads { n_head, n_kv_head, head_dim } = heads;
    let group = n_head / n_kv_head;
    let n = out.len() / (n_head * head_dim);
    assert!(n_head.is_multiple_of(n_kv_head));
    assert!(q.len() >= (n.max(1) - 1) * q_stride + n_head * head_dim);
    for s in seqs {
        assert!(s.rows.end <= n && s.pos0 + s.rows.len() <= s.max_seq);
        assert!(s.k_cache.len() == n_kv_head * s.max_seq * head_dim && s.v_cache.len() == s.k_cache.len());
    }
    let inv_sqrt_d = 1.0 / (head_dim as f32).sqrt();

    out.par_chunks_mut(head_dim).enumerate().for_each(|(idx, o)| {
        let (r, h) = (idx / n_head, idx % n_head);
        let Some(s) = seqs.iter().find(|s| s.rows.contains(&r)) else { return };
        // Several new tokens of a sequence go through tinyBLAS's order, one through ggml_vec_dot's.
        let lanes = if s.rows.len() > 1 { Lanes::Tiled } else { Lanes::Vector };
        let len = s.pos0 + (r - s.rows.start) + 1;
        let base = (h / group) * s.max_seq * head_dim;
        let keys = &s.k_cache[base..base + len * head_dim];
        let values = &s.v_cache[base..base + len * head_dim];
        // tinyBLAS's kernels (several tokens) need rows of whole 8-lane vectors.
        let tiled = lanes == Lanes::Tiled && head_dim % 8 == 0;
        SCRATCH.with_borrow_mut(|(q_h, weights, partial)| {
            q_h.clear();
            q_h.extend_from_slice(&q[r * q_stride + h * head_dim..][..head_dim]);
            round_to::<C>(q_h);
            weights.resize(len, 0.0);
            if tiled {
                dot_tiled_rows(q_h, keys, weights);
            } else {
                dot_rows(q_h, keys, weights);
            }
            weights.iter_mut().for_each(|w| *w *= inv_sqrt_d);
            let inv_sum = softmax_exp(weights);
            weights.iter_mut().for_each(|w| *w *= inv_sum);
            round_to::<C>(weights);

            // Position j adds into lane j % lanes; the lanes are combined per output element.
            partial.clear();
            partial.resize(lanes.count() * head_dim, 0.0);
            if tiled {
                axpy_lanes8(partial, weights, values);
            } else {
                axpy_in_lanes(partial, weights, values, lanes.count());
            }
            lanes.reduce(partial, o);
        });
    });
}
