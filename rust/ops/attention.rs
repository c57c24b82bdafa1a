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

/// A sliding window's attention starts at a multiple of this many positions (the earliest
/// rows masked out), so that every position keeps the SIMD lane it has in llama.cpp's sums over
/// the whole cache, where masked positions add exact zeros.
pub const WINDOW_ALIGN: usize = 32;

thread_local! {
    /// Per-worker buffers, grown to the longest sequence seen and then reused: the query
    /// rounded to the cache type [head_dim], the attention weights [positions], and the
    /// per-lane partial sums of the output [lanes, head_dim].
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// One sequence's share of an attention call: its cache for this layer and which rows of the
/// call are its new tokens.
pub struct Sequence<'a, C> {
    /// [n_kv_head, slots, head_dim] each, position p in slot p % slots, already holding the
    /// positions its rows attend to (and the window's lane group before them).
    pub k_cache: &'a [C],
    pub v_cache: &'a [C],
    pub slots: usize,
    /// Each row attends to its own and the `window - 1` positions before it; None: to all.
    pub window: Option<usize>,
    /// Position of its first new row.
    pub pos0: usize,
    /// Its rows in q and out.
    pub rows: Range<usize>,
    /// Sums in tinyBLAS's lanes (rows of a pass of several), else in ggml_vec_dot's (a row
    /// alone).
    pub tiled: bool,
}

/// For each sequence s and each of its new rows r, at position p = s.pos0 + (r - s.rows.start):
/// out[r, h] = softmax(q[r, h] · K_s[kvh, w..=p]ᵀ · kq_scale) · V_s[kvh, w..=p], with
/// kvh = h / (n_head / n_kv_head) and w the window's first position (0 without one). Every
/// (row, head) of every sequence is one task of a single parallel region; rows of no sequence
/// are left as they are.
///
/// q: [rows, q_stride], head h at columns h*head_dim..; out: [rows, n_head*head_dim].
pub fn attention<C: Elem>(out: &mut [f32], q: &[f32], q_stride: usize, seqs: &[Sequence<C>], heads: Heads, kq_scale: f32) {
    let Heads { n_head, n_kv_head, head_dim } = heads;
    let group = n_head / n_kv_head;
    let n = out.len() / (n_head * head_dim);
    assert!(n_head.is_multiple_of(n_kv_head));
    assert!(q.len() >= (n.max(1) - 1) * q_stride + n_head * head_dim);
    for s in seqs {
        assert!(s.rows.end <= n && s.slots > 0);
        // Every position a row reads is still in its slot: the ring spans them all.
        let reach = s.window.map_or(usize::MAX, |w| w + WINDOW_ALIGN + s.rows.len() - 1);
        assert!(s.pos0 + s.rows.len() <= s.slots || reach <= s.slots, "attention: the cache cannot hold the positions read");
        assert!(s.k_cache.len() == n_kv_head * s.slots * head_dim && s.v_cache.len() == s.k_cache.len());
    }

    out.par_chunks_mut(head_dim).enumerate().for_each(|(idx, o)| {
        let (r, h) = (idx / n_head, idx % n_head);
        let Some(s) = seqs.iter().find(|s| s.rows.contains(&r)) else { return };
        let lanes = if s.tiled { Lanes::Tiled } else { Lanes::Vector };
        let end = s.pos0 + (r - s.rows.start) + 1;
        // Positions first..end are read; those before `visible` are masked (weight 0).
        let visible = s.window.map_or(0, |w| end.saturating_sub(w));
        let first = visible / WINDOW_ALIGN * WINDOW_ALIGN;
        let len = end - first;
        // The positions as at most two runs of slots, in position order: to the end of the
        // ring, then from its start.
        let start_slot = first % s.slots;
        let runs = [(start_slot, len.min(s.slots - start_slot)), (0, len - len.min(s.slots - start_slot))];
        let base = (h / group) * s.slots * head_dim;
        let span = |(slot, count): (usize, usize)| base + slot * head_dim..base + (slot + count) * head_dim;
        // tinyBLAS's kernels (several tokens) need rows of whole 8-lane vectors.
        let tiled = lanes == Lanes::Tiled && head_dim % 8 == 0;
        SCRATCH.with_borrow_mut(|(q_h, weights, partial)| {
            q_h.clear();
            q_h.extend_from_slice(&q[r * q_stride + h * head_dim..][..head_dim]);
            round_to::<C>(q_h);
            weights.resize(len, 0.0);
            let mut at = 0;
            for run in runs {
                let (keys, w) = (&s.k_cache[span(run)], &mut weights[at..at + run.1]);
                if tiled {
                    dot_tiled_rows(q_h, keys, w);
                } else {
                    dot_rows(q_h, keys, w);
                }
                at += run.1;
            }
            weights.iter_mut().for_each(|w| *w *= kq_scale);
            weights[..visible - first].fill(f32::NEG_INFINITY);
            let inv_sum = softmax_exp(weights);
            weights.iter_mut().for_each(|w| *w *= inv_sum);
            round_to::<C>(weights);

            // Position j adds into lane j % lanes; the lanes are combined per output element.
            // Each run starts at a whole lane group (ring sizes are multiples of WINDOW_ALIGN).
            partial.clear();
            partial.resize(lanes.count() * head_dim, 0.0);
            let mut at = 0;
            for run in runs {
                let (values, w) = (&s.v_cache[span(run)], &weights[at..at + run.1]);
                if tiled {
                    axpy_lanes8(partial, w, values);
                } else {
                    axpy_in_lanes(partial, w, values, lanes.count());
                }
                at += run.1;
            }
            lanes.reduce(partial, o);
        });
    });
}
