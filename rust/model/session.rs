//! Per-sequence state: the KV cache and scratch buffers, allocated when the session is made
//! (scratch grows once to the longest prompt batch, never per generated token).

use super::Config;
use crate::ops::matmul::MatmulScratch;

pub struct Session {
    /// Positions already in the cache; the next token goes at `pos`.
    pub pos: usize,
    pub max_seq: usize,
    /// [n_layer, n_kv_head, max_seq, head_dim]
    pub k_cache: Vec<f32>,
    /// [n_layer, n_kv_head, max_seq, head_dim]
    pub v_cache: Vec<f32>,
    /// [rows, n_vocab]: the logits of the last forward call.
    pub logits: Vec<f32>,
    pub scratch: Scratch,
    shape: (usize, usize, usize),
}

/// Activation buffers of the forward pass, each [tokens, width] for the current call.
#[derive(Default)]
pub struct Scratch {
    /// residual stream [n, n_embd]
    pub x: Vec<f32>,
    /// normalised input / sublayer output [n, n_embd]
    pub h: Vec<f32>,
    /// fused query|key|value projections [n, n_embd + 2 * kv_dim]
    pub qkv: Vec<f32>,
    /// attention output [n, n_embd]
    pub att: Vec<f32>,
    /// feed-forward hidden [n, n_ff]
    pub ff: Vec<f32>,
    pub matmul: MatmulScratch,
}

impl Session {
    pub(super) fn new(cfg: &Config, max_seq: usize) -> Self {
        let kv_len = cfg.n_layer * cfg.n_kv_head * max_seq * cfg.head_dim();
        Session {
            pos: 0,
            max_seq,
            k_cache: vec![0.0; kv_len],
            v_cache: vec![0.0; kv_len],
            logits: Vec::new(),
            scratch: Scratch::default(),
            shape: (cfg.n_layer, cfg.n_kv_head, cfg.head_dim()),
        }
    }

    pub(super) fn fits(&self, cfg: &Config) -> bool {
        self.shape == (cfg.n_layer, cfg.n_kv_head, cfg.head_dim())
    }

    /// The number of floats one layer occupies in each cache: n_kv_head * max_seq * head_dim.
    pub fn layer_len(&self) -> usize {
        let (_, n_kv_head, head_dim) = self.shape;
        n_kv_head * self.max_seq * head_dim
    }

    /// Forgets positions from `pos` on (0 clears the whole sequence); the cache is kept.
    pub fn rewind(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
    }
}

/// `buf` resized to `len` (growing only when needed) and returned as a slice.
pub fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}
