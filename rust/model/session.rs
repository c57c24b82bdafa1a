//! Per-sequence state: the KV cache and scratch buffers, allocated when the session is made
//! (scratch grows once to the longest prompt batch, never per generated token).

use super::Config;
use crate::kernels::Elem;
use crate::ops::attention::{attention, Heads};
use crate::ops::matmul::MatmulScratch;
use half::f16;

pub struct Session {
    /// Positions already in the cache; the next token goes at `pos`.
    pub pos: usize,
    pub max_seq: usize,
    pub kv: KvCache,
    /// [rows, n_vocab]: the logits of the last forward call.
    pub logits: Vec<f32>,
    pub scratch: Scratch,
}

/// Activation buffers of the forward pass, each [tokens, width] for the current call.
#[derive(Default)]
pub struct Scratch {
    /// residual stream [n, n_embd]
    pub x: Vec<f32>,
    /// normalised input / sublayer output [n, n_embd]
    pub h: Vec<f32>,
    /// queries [n, n_head * head_dim] (GPT-2: fused q|k|v [n, 3 * n_embd])
    pub q: Vec<f32>,
    /// keys [n, n_kv_head * head_dim]
    pub k: Vec<f32>,
    /// values [n, n_kv_head * head_dim]
    pub v: Vec<f32>,
    /// attention output [n, n_head * head_dim]
    pub att: Vec<f32>,
    /// feed-forward hidden [n, n_ff] (SwiGLU: the gate)
    pub ff: Vec<f32>,
    /// SwiGLU's up projection [n, n_ff]
    pub ff_up: Vec<f32>,
    /// RoPE cos and sin [n, rope_dims / 2]
    pub rope_cos: Vec<f32>,
    pub rope_sin: Vec<f32>,
    pub matmul: MatmulScratch,
}

impl Session {
    pub(super) fn new(cfg: &Config, max_seq: usize) -> Self {
        Session { pos: 0, max_seq, kv: KvCache::new(cfg, max_seq), logits: Vec::new(), scratch: Scratch::default() }
    }

    pub(super) fn fits(&self, cfg: &Config) -> bool {
        self.kv.geometry == (cfg.n_layer, cfg.n_kv_head, cfg.head_dim) && self.kv.is_f16() == cfg.kv_f16
    }

    /// Forgets positions from `pos` on (0 clears the whole sequence); the cache is kept.
    pub fn rewind(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
    }
}

/// Keys and values of every layer, each [n_layer, n_kv_head, max_seq, head_dim], stored as
/// f32 or (halving the memory, as llama.cpp does) f16.
pub struct KvCache {
    store: KvStore,
    max_seq: usize,
    /// (n_layer, n_kv_head, head_dim)
    geometry: (usize, usize, usize),
}

enum KvStore {
    F32 { k: Vec<f32>, v: Vec<f32> },
    F16 { k: Vec<f16>, v: Vec<f16> },
}

impl KvCache {
    fn new(cfg: &Config, max_seq: usize) -> Self {
        let len = cfg.n_layer * cfg.n_kv_head * max_seq * cfg.head_dim;
        let store = if cfg.kv_f16 {
            KvStore::F16 { k: vec![f16::ZERO; len], v: vec![f16::ZERO; len] }
        } else {
            KvStore::F32 { k: vec![0.0; len], v: vec![0.0; len] }
        };
        KvCache { store, max_seq, geometry: (cfg.n_layer, cfg.n_kv_head, cfg.head_dim) }
    }

    fn is_f16(&self) -> bool {
        matches!(self.store, KvStore::F16 { .. })
    }

    fn layer_range(&self, layer: usize) -> std::ops::Range<usize> {
        let (_, n_kv_head, head_dim) = self.geometry;
        let len = n_kv_head * self.max_seq * head_dim;
        layer * len..(layer + 1) * len
    }

    /// Writes one position's keys and values, each [n_kv_head * head_dim] (heads contiguous).
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        fn write<C: Elem>(cache: &mut [C], values: &[f32], pos: usize, max_seq: usize, head_dim: usize) {
            for (g, head) in values.chunks_exact(head_dim).enumerate() {
                let at = (g * max_seq + pos) * head_dim;
                for (c, &x) in cache[at..at + head_dim].iter_mut().zip(head) {
                    *c = C::from_f32(x);
                }
            }
        }
        let (_, n_kv_head, head_dim) = self.geometry;
        assert!(pos < self.max_seq && k.len() == n_kv_head * head_dim && v.len() == k.len());
        let (range, max_seq) = (self.layer_range(layer), self.max_seq);
        match &mut self.store {
            KvStore::F32 { k: kc, v: vc } => {
                write(&mut kc[range.clone()], k, pos, max_seq, head_dim);
                write(&mut vc[range], v, pos, max_seq, head_dim);
            }
            KvStore::F16 { k: kc, v: vc } => {
                write(&mut kc[range.clone()], k, pos, max_seq, head_dim);
                write(&mut vc[range], v, pos, max_seq, head_dim);
            }
        }
    }

    /// Attention of the queries of tokens at pos0.. over this layer's cache (see `attention`).
    pub fn attend(&self, layer: usize, out: &mut [f32], q: &[f32], q_stride: usize, pos0: usize, heads: Heads) {
        let range = self.layer_range(layer);
        match &self.store {
            KvStore::F32 { k, v } => attention(out, q, q_stride, &k[range.clone()], &v[range], self.max_seq, pos0, heads),
            KvStore::F16 { k, v } => attention(out, q, q_stride, &k[range.clone()], &v[range], self.max_seq, pos0, heads),
        }
    }
}

/// `buf` resized to `len` (growing only when needed) and returned as a slice.
pub fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}
