//! Per-sequence state (`Session`: the KV cache, allocated when the session is made), the work
//! of one forward call (`Batch`: token rows of one or more sessions), and the engine's
//! activation buffers (`Scratch`: grown once to the largest batch, never per token).

use super::layers::BlockScratch;
use super::Config;
use crate::kernels::{narrow, Elem};
use crate::ops::attention::{attention, Heads, Sequence};
use half::f16;
use std::any::Any;
use std::ops::Range;

pub struct Session {
    /// Positions already in the cache; the next token goes at `pos`.
    pub pos: usize,
    pub max_seq: usize,
    pub kv: KvCache,
}

/// The rows of one forward call: each segment extends one session's sequence.
pub struct Batch<'a> {
    /// [rows] token ids, segment after segment.
    pub tokens: Vec<u32>,
    pub segments: Vec<Segment<'a>>,
    /// Logits for every row, or only for the last row of each segment.
    pub all_logits: bool,
}

pub struct Segment<'a> {
    pub kv: &'a mut KvCache,
    /// Position of the segment's first row.
    pub pos0: usize,
    /// Its rows in `Batch::tokens`.
    pub rows: Range<usize>,
}

impl Batch<'_> {
    /// The position of every row: [rows].
    pub fn positions(&self, out: &mut Vec<usize>) {
        out.clear();
        for seg in &self.segments {
            out.extend(seg.pos0..seg.pos0 + seg.rows.len());
        }
    }

    /// Moves the rows whose logits are wanted (every row, or the last of each segment) of
    /// x [rows, width] to its front, in order; returns how many.
    pub fn keep_logit_rows(&self, x: &mut [f32], width: usize) -> usize {
        if self.all_logits {
            return self.tokens.len();
        }
        for (i, seg) in self.segments.iter().enumerate() {
            // Row seg.rows.end - 1 >= i: each move is forward or in place.
            let r = seg.rows.end - 1;
            x.copy_within(r * width..(r + 1) * width, i * width);
        }
        self.segments.len()
    }

    /// How many of `keep_logit_rows`' rows each segment has, segment after segment.
    pub fn logit_rows_per_segment(&self) -> impl Iterator<Item = usize> + '_ {
        self.segments.iter().map(|s| if self.all_logits { s.rows.len() } else { 1 })
    }

    /// Writes row r's keys and values (each [kv_dim]) into its session's cache at its position.
    pub fn store_kv(&mut self, layer: usize, k: &[f32], v: &[f32], kv_dim: usize) {
        for seg in &mut self.segments {
            for (i, r) in seg.rows.clone().enumerate() {
                seg.kv.store(layer, seg.pos0 + i, &k[r * kv_dim..(r + 1) * kv_dim], &v[r * kv_dim..(r + 1) * kv_dim]);
            }
        }
    }

    /// Attention of every row's queries (q: [rows, q_stride]) over its own session's cache,
    /// into out: [rows, n_head * head_dim], all sessions in one parallel region.
    pub fn attend(&self, layer: usize, out: &mut [f32], q: &[f32], q_stride: usize, heads: Heads) {
        match self.segments.first() {
            Some(seg) if seg.kv.is_f16() => self.attend_as::<f16>(layer, out, q, q_stride, heads),
            Some(_) => self.attend_as::<f32>(layer, out, q, q_stride, heads),
            None => {}
        }
    }

    /// `attend` for caches of element type C (every session of a batch fits the model, so
    /// all of them hold C).
    fn attend_as<C: Elem>(&self, layer: usize, out: &mut [f32], q: &[f32], q_stride: usize, heads: Heads) {
        let seqs: Vec<Sequence<C>> = self
            .segments
            .iter()
            .map(|seg| {
                let (k_cache, v_cache) = seg.kv.layer_as::<C>(layer).expect("the sessions of a batch share the cache type");
                Sequence { k_cache, v_cache, max_seq: seg.kv.max_seq, pos0: seg.pos0, rows: seg.rows.clone() }
            })
            .collect();
        attention(out, q, q_stride, &seqs, heads);
    }
}

/// Activation buffers of the forward pass, each [rows, width] for the current call.
#[derive(Default)]
pub struct Scratch {
    /// position of each row [rows]
    pub positions: Vec<usize>,
    /// residual stream [n, n_embd]
    pub x: Vec<f32>,
    /// normalised input / sublayer output [n, n_embd]
    pub h: Vec<f32>,
    pub blocks: BlockScratch,
}

impl Session {
    pub(super) fn new(cfg: &Config, max_seq: usize) -> Self {
        Session { pos: 0, max_seq, kv: KvCache::new(cfg, max_seq) }
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
                narrow(&mut cache[at..at + head_dim], head);
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

    /// This layer's keys and values, if the cache holds elements of type C.
    fn layer_as<C: Elem>(&self, layer: usize) -> Option<(&[C], &[C])> {
        let (k, v): (&dyn Any, &dyn Any) = match &self.store {
            KvStore::F32 { k, v } => (k, v),
            KvStore::F16 { k, v } => (k, v),
        };
        let range = self.layer_range(layer);
        Some((&k.downcast_ref::<Vec<C>>()?[range.clone()], &v.downcast_ref::<Vec<C>>()?[range]))
    }
}

/// `buf` resized to `len` (growing only when needed) and returned as a slice.
pub fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}
