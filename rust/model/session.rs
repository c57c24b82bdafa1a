//! Per-sequence state (`Session`: the KV cache, allocated when the session is made), the work
//! of one forward call (`Batch`: token rows of one or more sessions), and the engine's
//! activation buffers (`Scratch`: grown once to the largest batch, never per token).

use super::layers::BlockScratch;
use super::{Config, PASS_ROWS};
use crate::kernels::{narrow, Elem};
use crate::ops::attention::{attention, Heads, Sequence, WINDOW_ALIGN};
use crate::quant::RowPlace;
use half::f16;
use std::any::Any;
use std::ops::Range;

pub struct Session {
    /// Positions already in the cache; the next token goes at `pos`.
    pub pos: usize,
    pub max_seq: usize,
    pub kv: KvCache,
}

/// What a forward call gives back, and how it sums its rows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pass {
    /// Logits for every row, else only for the last row of each session.
    pub all_logits: bool,
    /// Every row summed as a pass of that row alone sums it (a decoding step's order, in the
    /// matmuls and in attention), so each row's logits equal those of running the tokens one
    /// at a time: a check of draft tokens (prompt lookup) then gives exactly the tokens plain
    /// decoding gives. Otherwise a session's rows are summed as llama.cpp sums them together.
    pub stepwise: bool,
}

/// The rows of one forward call: each segment extends one session's sequence.
pub struct Batch<'a> {
    /// [rows] token ids, segment after segment.
    pub tokens: Vec<u32>,
    pub segments: Vec<Segment<'a>>,
    pub pass: Pass,
}

pub struct Segment<'a> {
    pub kv: &'a mut KvCache,
    /// Position of the segment's first row.
    pub pos0: usize,
    /// Its rows in `Batch::tokens`.
    pub rows: Range<usize>,
    /// The pass its rows are summed as part of.
    pub within: Within,
}

/// Rows summed as rows `first..` of a pass of `of` rows of one sequence: llama.cpp picks its
/// summation orders by a row's place in its pass (`RowPlace`, and attention's lanes), so a
/// prompt run in pieces (a server's chunks) is summed exactly as the one pass of it would be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Within {
    pub of: usize,
    pub first: usize,
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
        if self.pass.all_logits {
            return self.tokens.len();
        }
        for (i, seg) in self.segments.iter().enumerate() {
            // Row seg.rows.end - 1 >= i: each move is forward or in place.
            let r = seg.rows.end - 1;
            x.copy_within(r * width..(r + 1) * width, i * width);
        }
        self.segments.len()
    }

    /// Where each row sits in the pass that sums it (`MatmulScratch::place_rows`), for all
    /// rows or (`logit_rows`) those `keep_logit_rows` keeps: a segment's own last row alone
    /// when only the last rows go on (llama.cpp's output rows), each row alone stepwise, else
    /// by the segment's `within`.
    pub fn row_places(&self, logit_rows: bool) -> Vec<RowPlace> {
        let mut places = Vec::with_capacity(self.tokens.len());
        for seg in &self.segments {
            if logit_rows && !self.pass.all_logits {
                places.push(RowPlace::ALONE);
            } else if self.pass.stepwise {
                places.extend(seg.rows.clone().map(|_| RowPlace::ALONE));
            } else {
                places.extend((0..seg.rows.len()).map(|i| RowPlace { seq_rows: seg.within.of, index: seg.within.first + i }));
            }
        }
        places
    }

    /// Writes row r's keys and values (each [kv_dim]) into its session's cache at its position.
    pub fn store_kv(&mut self, layer: usize, k: &[f32], v: &[f32], kv_dim: usize) {
        for seg in &mut self.segments {
            for (i, r) in seg.rows.clone().enumerate() {
                seg.kv.store(layer, seg.pos0 + i, &k[r * kv_dim..(r + 1) * kv_dim], &v[r * kv_dim..(r + 1) * kv_dim]);
            }
        }
    }

    /// Attention of every row's queries (q: [rows, q_stride]) over its own session's cache
    /// (scores times `kq_scale`), into out: [rows, n_head * head_dim], all sessions in one
    /// parallel region.
    pub fn attend(&self, layer: usize, out: &mut [f32], q: &[f32], q_stride: usize, heads: Heads, kq_scale: f32) {
        match self.segments.first() {
            Some(seg) if seg.kv.is_f16() => self.attend_as::<f16>(layer, out, q, q_stride, heads, kq_scale),
            Some(_) => self.attend_as::<f32>(layer, out, q, q_stride, heads, kq_scale),
            None => {}
        }
    }

    /// `attend` for caches of element type C (every session of a batch fits the model, so
    /// all of them hold C).
    fn attend_as<C: Elem>(&self, layer: usize, out: &mut [f32], q: &[f32], q_stride: usize, heads: Heads, kq_scale: f32) {
        let seqs: Vec<Sequence<C>> = self
            .segments
            .iter()
            .map(|seg| {
                let (k_cache, v_cache) = seg.kv.layer_as::<C>(layer).expect("the sessions of a batch share the cache type");
                let KvLayer { slots, window, .. } = seg.kv.layers[layer];
                // Several rows of a pass go through tinyBLAS's order, a row alone through ggml_vec_dot's.
                let tiled = seg.within.of > 1 && !self.pass.stepwise;
                Sequence { k_cache, v_cache, slots, window, pos0: seg.pos0, rows: seg.rows.clone(), tiled }
            })
            .collect();
        attention(out, q, q_stride, &seqs, heads, kq_scale);
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
        self.kv.geometry == (cfg.n_layer, cfg.n_kv_head, cfg.head_dim) && self.kv.is_f16() == cfg.kv_f16 && self.kv.windows_match(cfg)
    }

    /// Forgets positions from `pos` on (0 clears the whole sequence); the cache is kept. A ring
    /// cache (sliding-window layers) that no longer holds the window before `pos` forgets the
    /// whole sequence instead: `self.pos` says where the session now stands.
    pub fn rewind(&mut self, pos: usize) {
        let kept = self.kv.layers.iter().filter(|l| l.slots < self.max_seq).map(|l| l.slots - l.window.unwrap_or(0) - WINDOW_ALIGN).min();
        self.pos = match kept {
            Some(kept) if self.pos - self.pos.min(pos) > kept => 0,
            _ => self.pos.min(pos),
        };
    }
}

/// Keys and values of every layer, layer after layer, each [n_kv_head, slots, head_dim],
/// stored as f32 or (halving the memory, as llama.cpp does) f16. A layer of the whole sequence
/// has a slot per position; a sliding-window layer has a ring of a window and one pass's rows
/// (position p in slot p % slots), so its memory stops growing there.
pub struct KvCache {
    store: KvStore,
    layers: Vec<KvLayer>,
    /// (n_layer, n_kv_head, head_dim)
    geometry: (usize, usize, usize),
}

/// Where a layer's keys (and values) sit in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KvLayer {
    /// First element in the store.
    start: usize,
    /// Positions it holds at once.
    slots: usize,
    /// The layer's sliding window, if it has one.
    window: Option<usize>,
}

enum KvStore {
    F32 { k: Vec<f32>, v: Vec<f32> },
    F16 { k: Vec<f16>, v: Vec<f16> },
}

impl KvCache {
    fn new(cfg: &Config, max_seq: usize) -> Self {
        let layers = Self::layers(cfg, max_seq);
        let len = layers.last().map_or(0, |l| l.start + cfg.n_kv_head * l.slots * cfg.head_dim);
        // Zeroed allocations: the pages are mapped as positions are first written, so a
        // session sized for the whole context costs memory only for what it holds.
        let store = if cfg.kv_f16 {
            KvStore::F16 { k: bytemuck::zeroed_vec(len), v: bytemuck::zeroed_vec(len) }
        } else {
            KvStore::F32 { k: vec![0.0; len], v: vec![0.0; len] }
        };
        KvCache { store, layers, geometry: (cfg.n_layer, cfg.n_kv_head, cfg.head_dim) }
    }

    /// Each layer's place for a session of `max_seq` positions. A window's ring holds the
    /// window, one pass's rows, and the lane group before the window (attention starts at a
    /// whole group of lanes, `WINDOW_ALIGN`), in a whole number of groups.
    fn layers(cfg: &Config, max_seq: usize) -> Vec<KvLayer> {
        let mut start = 0;
        (0..cfg.n_layer)
            .map(|i| {
                let window = cfg.sliding_window.as_ref().filter(|w| w.layers[i]).map(|w| w.len);
                let ring = window.map_or(max_seq, |w| (w + PASS_ROWS + WINDOW_ALIGN).next_multiple_of(WINDOW_ALIGN));
                let layer = KvLayer { start, slots: ring.min(max_seq), window };
                start += cfg.n_kv_head * layer.slots * cfg.head_dim;
                layer
            })
            .collect()
    }

    fn is_f16(&self) -> bool {
        matches!(self.store, KvStore::F16 { .. })
    }

    /// Whether each layer has the sliding window (or none) `cfg` gives it.
    fn windows_match(&self, cfg: &Config) -> bool {
        self.layers.iter().enumerate().all(|(i, l)| l.window == cfg.sliding_window.as_ref().filter(|w| w.layers[i]).map(|w| w.len))
    }

    fn layer_range(&self, layer: usize) -> std::ops::Range<usize> {
        let (_, n_kv_head, head_dim) = self.geometry;
        let l = self.layers[layer];
        l.start..l.start + n_kv_head * l.slots * head_dim
    }

    /// Writes one position's keys and values, each [n_kv_head * head_dim] (heads contiguous),
    /// into the position's slot.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        fn write<C: Elem>(cache: &mut [C], values: &[f32], slot: usize, slots: usize, head_dim: usize) {
            for (g, head) in values.chunks_exact(head_dim).enumerate() {
                let at = (g * slots + slot) * head_dim;
                narrow(&mut cache[at..at + head_dim], head);
            }
        }
        let (_, n_kv_head, head_dim) = self.geometry;
        assert!(k.len() == n_kv_head * head_dim && v.len() == k.len());
        let (range, slots) = (self.layer_range(layer), self.layers[layer].slots);
        let slot = pos % slots;
        match &mut self.store {
            KvStore::F32 { k: kc, v: vc } => {
                write(&mut kc[range.clone()], k, slot, slots, head_dim);
                write(&mut vc[range], v, slot, slots, head_dim);
            }
            KvStore::F16 { k: kc, v: vc } => {
                write(&mut kc[range.clone()], k, slot, slots, head_dim);
                write(&mut vc[range], v, slot, slots, head_dim);
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
