//! The pieces decoders are built from: linear maps with optional biases, norms, the attention
//! block (separate or fused Q/K/V, optional biases, optional per-head Q/K norms, optional
//! RoPE, optional sliding window), the feed-forward variants, the pre-norm residual block
//! (optionally post-normed too), and the token embedding and LM head at either end. A family's
//! forward (gpt2.rs, llama.rs, gemma3.rs) strings them together.

use super::session::{sized, Batch};
use super::Config;
use crate::error::Result;
use crate::ops::activation::{gelu_lookup_mul, gelu_mul, gelu_tanh, silu_mul};
use crate::ops::add_in_place;
use crate::ops::attention::Heads;
use crate::ops::matmul::{matmul, matmul_group, MatmulScratch};
use crate::ops::norm::{layer_norm, rms_norm};
use crate::ops::rope::Rope;
use crate::tensor::{Matrix, WeightSet};

/// y = x Wᵀ (+ b).
pub struct Linear {
    /// [n_out, n_in]
    pub weight: Matrix,
    /// [n_out]
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    /// `{name}.weight`, and `{name}.bias` when `bias`.
    pub fn load(w: &WeightSet, name: &str, n_out: usize, n_in: usize, bias: bool) -> Result<Self> {
        Ok(Linear {
            weight: w.matrix(&format!("{name}.weight"), n_out, n_in)?,
            bias: if bias { Some(w.vector(&format!("{name}.bias"), n_out)?) } else { None },
        })
    }

    /// y [n, n_out] from x [n, n_in].
    pub fn forward(&self, y: &mut [f32], x: &[f32], scratch: &mut MatmulScratch) {
        matmul(y, x, &self.weight, self.bias.as_deref(), scratch)
    }
}

/// Linear maps reading the same input, run as one `matmul_group`.
fn forward_group<const N: usize>(ys: [&mut [f32]; N], x: &[f32], linears: [&Linear; N], scratch: &mut MatmulScratch) {
    let mut ys = ys;
    matmul_group(&mut ys, x, &linears.map(|l| &l.weight), &linears.map(|l| l.bias.as_deref()), scratch)
}

/// A normalisation over each row of its width.
pub enum Norm {
    /// x / sqrt(mean(x²) + eps) · w
    Rms { weight: Vec<f32>, eps: f32 },
    /// (x - mean) / sqrt(var + eps) · w + b
    Layer { weight: Vec<f32>, bias: Vec<f32>, eps: f32 },
}

impl Norm {
    /// RMSNorm with weight `{name}.weight` [n] (plus the config's norm_weight_offset) and the
    /// config's epsilon.
    pub fn rms(w: &WeightSet, name: &str, n: usize, cfg: &Config) -> Result<Self> {
        let mut weight = w.vector(&format!("{name}.weight"), n)?;
        if cfg.norm_weight_offset != 0.0 {
            weight.iter_mut().for_each(|v| *v += cfg.norm_weight_offset);
        }
        Ok(Norm::Rms { weight, eps: cfg.norm_eps })
    }

    /// LayerNorm with `{name}.weight` and `{name}.bias` [n].
    pub fn layer(w: &WeightSet, name: &str, n: usize, eps: f32) -> Result<Self> {
        Ok(Norm::Layer { weight: w.vector(&format!("{name}.weight"), n)?, bias: w.vector(&format!("{name}.bias"), n)?, eps })
    }

    /// out [rows, width] = the norm of each row of x [rows, width].
    pub fn apply(&self, out: &mut [f32], x: &[f32]) {
        match self {
            Norm::Rms { weight, eps } => rms_norm(out, x, weight, *eps),
            Norm::Layer { weight, bias, eps } => layer_norm(out, x, weight, bias, *eps),
        }
    }

    /// x [rows, width] normalised in place, through `staging`.
    pub fn apply_in_place(&self, x: &mut [f32], staging: &mut Vec<f32>) {
        let staged = sized(staging, x.len());
        self.apply(staged, x);
        x.copy_from_slice(staged);
    }
}

/// How the queries, keys and values are projected from the block's input.
pub enum QkvProjection {
    /// Three matrices: [n_head * head_dim | n_kv_head * head_dim (twice), n_embd].
    Separate { q: Linear, k: Linear, v: Linear },
    /// One matrix [(n_head + 2 n_kv_head) * head_dim, n_embd], rows q | k | v (GPT-2's c_attn).
    Fused(Linear),
}

/// Causal self-attention over the KV cache.
pub struct Attention {
    pub qkv: QkvProjection,
    /// RMSNorm of each query and key head (weights [head_dim]) before RoPE.
    pub q_norm: Option<Norm>,
    pub k_norm: Option<Norm>,
    /// The RoPE and which of `AttnScratch::rope_tables`' tables are its (`Config::rope_of`).
    pub rope: Option<(Rope, usize)>,
    /// Queries times this after RoPE, scores then unscaled; None: scores / sqrt(head_dim).
    pub query_scale: Option<f32>,
    /// [n_embd, n_head * head_dim]
    pub output: Linear,
    pub heads: Heads,
    /// Each row sees only its own and the window - 1 positions before it; None: all.
    pub window: Option<usize>,
}

/// The attention block's buffers, each [rows, width] for the current call.
#[derive(Default)]
pub struct AttnScratch {
    /// fused projections [n, q_dim + 2 kv_dim]
    qkv: Vec<f32>,
    /// [n, n_head * head_dim]
    q: Vec<f32>,
    /// [n, n_kv_head * head_dim]
    k: Vec<f32>,
    v: Vec<f32>,
    /// attention output [n, n_head * head_dim]
    out: Vec<f32>,
    /// the per-head norms' staging buffer [n, n_head * head_dim]
    staging: Vec<f32>,
    /// per RoPE (`rope_tables`' order): cos and sin of every row's position, each
    /// [n, rope_dims / 2]
    rope: Vec<(Vec<f32>, Vec<f32>)>,
}

impl AttnScratch {
    /// The tables of each of `ropes` (the layers' `Attention::rope` index them) for this
    /// call's rows, at `positions`, shared by every layer.
    pub fn rope_tables(&mut self, ropes: &[Rope], positions: &[usize]) {
        self.rope.resize_with(ropes.len(), Default::default);
        for (rope, (cos, sin)) in ropes.iter().zip(&mut self.rope) {
            let half = rope.dims / 2;
            rope.tables(positions, sized(cos, positions.len() * half), sized(sin, positions.len() * half));
        }
    }
}

impl Attention {
    /// The GGUF-named attention of block `layer` as `cfg` describes it (Llama-style: Q/K/V as
    /// `blk.N.attn_{q,k,v}`, or fused as `blk.N.attn_qkv` (Phi-3); no output bias).
    pub fn load(w: &WeightSet, cfg: &Config, layer: usize) -> Result<Self> {
        let name = |part: &str| format!("blk.{layer}.{part}");
        let heads = cfg.heads();
        let (d, q_dim, kv_dim) = (cfg.n_embd, heads.q_dim(), heads.kv_dim());
        let head_norm = |part: &str| cfg.qk_norm.then(|| Norm::rms(w, &name(part), cfg.head_dim, cfg)).transpose();
        let window = cfg.sliding_window.as_ref().filter(|window| window.layers[layer]);
        let qkv = if w.contains(&name("attn_qkv.weight")) {
            QkvProjection::Fused(Linear::load(w, &name("attn_qkv"), q_dim + 2 * kv_dim, d, cfg.qkv_bias)?)
        } else {
            QkvProjection::Separate {
                q: Linear::load(w, &name("attn_q"), q_dim, d, cfg.qkv_bias)?,
                k: Linear::load(w, &name("attn_k"), kv_dim, d, cfg.qkv_bias)?,
                v: Linear::load(w, &name("attn_v"), kv_dim, d, cfg.qkv_bias)?,
            }
        };
        Ok(Attention {
            qkv,
            q_norm: head_norm("attn_q_norm")?,
            k_norm: head_norm("attn_k_norm")?,
            rope: cfg.rope_of(layer),
            query_scale: cfg.query_scale,
            output: Linear::load(w, &name("attn_output"), d, q_dim, false)?,
            heads,
            window: window.map(|window| window.len),
        })
    }

    /// h [n, n_embd]: in, the normalised input; out, the attention block's output. Appends the
    /// rows' keys and values to their sessions' caches at `layer`. RoPE tables come from
    /// `AttnScratch::rope_tables` for this call.
    pub fn forward(&self, layer: usize, batch: &mut Batch<'_>, h: &mut [f32], s: &mut AttnScratch, mm: &mut MatmulScratch) {
        let n = batch.tokens.len();
        let (q_dim, kv_dim, head_dim) = (self.heads.q_dim(), self.heads.kv_dim(), self.heads.head_dim);
        let q = sized(&mut s.q, n * q_dim);
        let k = sized(&mut s.k, n * kv_dim);
        let v = sized(&mut s.v, n * kv_dim);
        match &self.qkv {
            QkvProjection::Separate { q: wq, k: wk, v: wv } => forward_group([&mut *q, &mut *k, &mut *v], h, [wq, wk, wv], mm),
            QkvProjection::Fused(w) => {
                let qkv = sized(&mut s.qkv, n * (q_dim + 2 * kv_dim));
                w.forward(qkv, h, mm);
                let rows = q.chunks_exact_mut(q_dim).zip(k.chunks_exact_mut(kv_dim)).zip(v.chunks_exact_mut(kv_dim));
                for (row, ((q_t, k_t), v_t)) in qkv.chunks_exact(q_dim + 2 * kv_dim).zip(rows) {
                    q_t.copy_from_slice(&row[..q_dim]);
                    k_t.copy_from_slice(&row[q_dim..q_dim + kv_dim]);
                    v_t.copy_from_slice(&row[q_dim + kv_dim..]);
                }
            }
        }
        for (norm, x) in [(&self.q_norm, &mut *q), (&self.k_norm, &mut *k)] {
            if let Some(norm) = norm {
                // Rows of head_dim: every head of every token.
                norm.apply_in_place(x, &mut s.staging);
            }
        }
        if let Some((rope, table)) = &self.rope {
            let (cos, sin) = &s.rope[*table];
            let half = rope.dims / 2;
            rope.apply(q, head_dim, &cos[..n * half], &sin[..n * half]);
            rope.apply(k, head_dim, &cos[..n * half], &sin[..n * half]);
        }
        let kq_scale = match self.query_scale {
            Some(scale) => {
                q.iter_mut().for_each(|v| *v *= scale);
                1.0
            }
            None => 1.0 / (head_dim as f32).sqrt(),
        };
        batch.store_kv(layer, k, v, kv_dim);
        let out = sized(&mut s.out, n * q_dim);
        batch.attend(layer, out, q, q_dim, self.heads, kq_scale);
        self.output.forward(h, out, mm);
    }
}

/// The position-wise feed-forward network.
pub enum FeedForward {
    /// down(act(gate x) · up x): SwiGLU (Llama), GeGLU (Gemma). Without `gate`, `up` holds the
    /// gate's rows and then the up rows [2 n_ff, n_embd] (Phi-3's fused gate_up).
    Gated { gate: Option<Linear>, up: Linear, down: Linear, act: GateActivation },
    /// down(gelu(up x)), GELU's tanh approximation (GPT-2).
    Gelu { up: Linear, down: Linear },
}

/// The activation of a gated feed-forward's gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateActivation {
    Silu,
    /// GELU (tanh approximation) computed in f32.
    Gelu,
    /// GELU read from ggml's table over f16 inputs, as llama.cpp's CPU backend computes it.
    GeluLookup,
}

/// The feed-forward buffers [n, n_ff].
#[derive(Default)]
pub struct FfnScratch {
    gate: Vec<f32>,
    up: Vec<f32>,
}

impl FeedForward {
    /// The GGUF-named gated feed-forward of block `layer`: `blk.N.ffn_{gate,up,down}`, or
    /// without `ffn_gate` the fused `ffn_up` [2 n_ff, n_embd]; no biases.
    pub fn gated(w: &WeightSet, cfg: &Config, layer: usize, act: GateActivation) -> Result<Self> {
        let name = |part: &str| format!("blk.{layer}.{part}");
        let (d, f) = (cfg.n_embd, cfg.n_ff);
        let fused = !w.contains(&name("ffn_gate.weight"));
        Ok(FeedForward::Gated {
            gate: if fused { None } else { Some(Linear::load(w, &name("ffn_gate"), f, d, false)?) },
            up: Linear::load(w, &name("ffn_up"), if fused { 2 * f } else { f }, d, false)?,
            down: Linear::load(w, &name("ffn_down"), d, f, false)?,
            act,
        })
    }

    /// h [n, n_embd]: in, the normalised input; out, the network's output.
    pub fn forward(&self, h: &mut [f32], s: &mut FfnScratch, mm: &mut MatmulScratch) {
        match self {
            FeedForward::Gated { gate: w_gate, up: w_up, down, act } => {
                let (n, f) = (h.len() / w_up.weight.n_in, down.weight.n_in);
                let (gate, up) = (sized(&mut s.gate, n * f), sized(&mut s.up, n * w_up.weight.n_out));
                match w_gate {
                    Some(w_gate) => forward_group([&mut *gate, &mut *up], h, [w_gate, w_up], mm),
                    None => {
                        // [n, 2f] rows of gate | up: the gates to `gate`, the up halves to the front of `up`.
                        w_up.forward(up, h, mm);
                        for t in 0..n {
                            gate[t * f..(t + 1) * f].copy_from_slice(&up[2 * t * f..(2 * t + 1) * f]);
                            up.copy_within((2 * t + 1) * f..(2 * t + 2) * f, t * f);
                        }
                    }
                }
                let up = &up[..n * f];
                match act {
                    GateActivation::Silu => silu_mul(gate, up),
                    GateActivation::Gelu => gelu_mul(gate, up),
                    GateActivation::GeluLookup => gelu_lookup_mul(gate, up),
                }
                down.forward(h, gate, mm);
            }
            FeedForward::Gelu { up: w_up, down } => {
                let up = sized(&mut s.up, h.len() / w_up.weight.n_in * w_up.weight.n_out);
                w_up.forward(up, h, mm);
                gelu_tanh(up);
                down.forward(h, up, mm);
            }
        }
    }
}

/// A pre-norm residual block: x += attn(norm(x)); x += ffn(norm(x)); with post-norms
/// (Gemma), x += post_norm(attn(norm(x))) and likewise for the feed-forward.
pub struct Block {
    pub attn_norm: Norm,
    pub attn: Attention,
    pub post_attn_norm: Option<Norm>,
    pub ffn_norm: Norm,
    pub ffn: FeedForward,
    pub post_ffn_norm: Option<Norm>,
}

/// The per-call buffers of the blocks.
#[derive(Default)]
pub struct BlockScratch {
    pub attn: AttnScratch,
    pub ffn: FfnScratch,
    pub matmul: MatmulScratch,
    /// the post-norms' staging buffer [n, n_embd]
    staging: Vec<f32>,
}

impl Block {
    /// Runs the blocks in order over the residual stream x [n, n_embd]; h [n, n_embd] is
    /// working space. After the last block's attention only the rows whose logits are wanted
    /// go on (as llama.cpp's graphs do): they end at the front of x, and their count is
    /// returned.
    pub fn run_all(blocks: &[Block], batch: &mut Batch<'_>, x: &mut [f32], h: &mut [f32], s: &mut BlockScratch) -> usize {
        let width = x.len() / batch.tokens.len();
        let mut rows = batch.tokens.len();
        s.matmul.place_rows(batch.row_places(false));
        for (layer, b) in blocks.iter().enumerate() {
            b.attn_norm.apply(&mut h[..rows * width], &x[..rows * width]);
            b.attn.forward(layer, batch, &mut h[..rows * width], &mut s.attn, &mut s.matmul);
            if layer + 1 == blocks.len() {
                rows = batch.keep_logit_rows(x, width);
                batch.keep_logit_rows(h, width);
                s.matmul.place_rows(batch.row_places(true));
            }
            let (x, h) = (&mut x[..rows * width], &mut h[..rows * width]);
            if let Some(norm) = &b.post_attn_norm {
                norm.apply_in_place(h, &mut s.staging);
            }
            add_in_place(x, h);
            b.ffn_norm.apply(h, x);
            b.ffn.forward(h, &mut s.ffn, &mut s.matmul);
            if let Some(norm) = &b.post_ffn_norm {
                norm.apply_in_place(h, &mut s.staging);
            }
            add_in_place(x, h);
        }
        rows
    }
}

/// x [n, n_embd] = the embedding rows of `tokens`.
pub fn embed(token_embd: &Matrix, tokens: &[u32], x: &mut [f32]) {
    for (&tok, x_t) in tokens.iter().zip(x.chunks_exact_mut(token_embd.n_in)) {
        token_embd.read_row(tok as usize, x_t);
    }
}

/// The final norm and the LM head.
pub struct Head {
    pub norm: Norm,
    /// [n_vocab, n_embd]: the token embedding itself when tied.
    pub output: Matrix,
}

impl Head {
    /// `output.weight` if the file has one, else the head tied to `token_embd`.
    pub fn load(w: &WeightSet, cfg: &Config, norm: Norm, token_embd: &Matrix) -> Result<Self> {
        let output = if w.contains("output.weight") { w.matrix("output.weight", cfg.n_vocab, cfg.n_embd)? } else { token_embd.clone() };
        Ok(Head { norm, output })
    }

    /// logits [rows, n_vocab] for x [rows, n_embd], the batch's logit rows (`Block::run_all`
    /// leaves them). `h` is working space.
    pub fn logits(&self, batch: &Batch<'_>, x: &[f32], h: &mut [f32], logits: &mut Vec<f32>, mm: &mut MatmulScratch) {
        let h = &mut h[..x.len()];
        self.norm.apply(h, x);
        logits.resize(x.len() / self.output.n_in * self.output.n_out, 0.0);
        mm.place_rows(batch.row_places(true));
        matmul(logits, h, &self.output, None, mm);
    }
}
