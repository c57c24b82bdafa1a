//! Llama (llama.cpp src/models/llama.cpp, transformers modeling_llama.py): RMSNorm, rotary
//! position embeddings, grouped-query attention, a SwiGLU feed-forward, and an LM head tied to
//! the token embedding unless an `output.weight` is given.

use super::session::{sized, Batch, Scratch};
use super::{Config, Model};
use crate::bail;
use crate::error::Result;
use crate::ops::activation::silu_mul;
use crate::ops::add_in_place;
use crate::ops::attention::Heads;
use crate::ops::matmul::{matmul, matmul_group};
use crate::ops::norm::rms_norm;
use crate::ops::rope::Rope;
use crate::tensor::{Matrix, WeightSet};

struct Block {
    /// [n_embd]
    attn_norm: Vec<f32>,
    /// [n_head * head_dim, n_embd]
    attn_q: Matrix,
    /// [n_kv_head * head_dim, n_embd]
    attn_k: Matrix,
    /// [n_kv_head * head_dim, n_embd]
    attn_v: Matrix,
    /// [n_embd, n_head * head_dim]
    attn_output: Matrix,
    /// [n_embd]
    ffn_norm: Vec<f32>,
    /// [n_ff, n_embd]
    ffn_gate: Matrix,
    /// [n_ff, n_embd]
    ffn_up: Matrix,
    /// [n_embd, n_ff]
    ffn_down: Matrix,
}

pub struct Llama {
    cfg: Config,
    rope: Rope,
    /// [n_vocab, n_embd]
    token_embd: Matrix,
    blocks: Vec<Block>,
    /// [n_embd]
    output_norm: Vec<f32>,
    /// [n_vocab, n_embd]: the token embedding itself when tied.
    output: Matrix,
}

impl Llama {
    pub fn new(cfg: Config, w: &WeightSet) -> Result<Self> {
        let Some(rope) = cfg.rope else { bail!("a Llama model needs RoPE settings") };
        let (d, f) = (cfg.n_embd, cfg.n_ff);
        let (q_dim, kv_dim) = (cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim);
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let name = |part: &str| format!("blk.{i}.{part}.weight");
                Ok(Block {
                    attn_norm: w.vector(&name("attn_norm"), d)?,
                    attn_q: w.matrix(&name("attn_q"), q_dim, d)?,
                    attn_k: w.matrix(&name("attn_k"), kv_dim, d)?,
                    attn_v: w.matrix(&name("attn_v"), kv_dim, d)?,
                    attn_output: w.matrix(&name("attn_output"), d, q_dim)?,
                    ffn_norm: w.vector(&name("ffn_norm"), d)?,
                    ffn_gate: w.matrix(&name("ffn_gate"), f, d)?,
                    ffn_up: w.matrix(&name("ffn_up"), f, d)?,
                    ffn_down: w.matrix(&name("ffn_down"), d, f)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let token_embd = w.matrix("token_embd.weight", cfg.n_vocab, d)?;
        let output = if w.contains("output.weight") {
            w.matrix("output.weight", cfg.n_vocab, d)?
        } else {
            token_embd.clone()
        };
        Ok(Llama { output_norm: w.vector("output_norm.weight", d)?, rope, token_embd, blocks, output, cfg })
    }
}

impl Model for Llama {
    fn config(&self) -> &Config {
        &self.cfg
    }

    fn forward(&self, batch: &mut Batch<'_>, s: &mut Scratch, logits: &mut Vec<f32>) {
        let cfg = &self.cfg;
        let (n, d) = (batch.tokens.len(), cfg.n_embd);
        let heads = Heads { n_head: cfg.n_head, n_kv_head: cfg.n_kv_head, head_dim: cfg.head_dim };
        let (q_dim, kv_dim) = (cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim);
        batch.positions(&mut s.positions);
        let x = sized(&mut s.x, n * d);
        let h = sized(&mut s.h, n * d);
        let q = sized(&mut s.q, n * q_dim);
        let k = sized(&mut s.k, n * kv_dim);
        let v = sized(&mut s.v, n * kv_dim);
        let att = sized(&mut s.att, n * q_dim);
        let gate = sized(&mut s.ff, n * cfg.n_ff);
        let up = sized(&mut s.ff_up, n * cfg.n_ff);
        let cos = sized(&mut s.rope_cos, n * self.rope.dims / 2);
        let sin = sized(&mut s.rope_sin, n * self.rope.dims / 2);
        self.rope.tables(&s.positions, cos, sin);

        for (&tok, x_t) in batch.tokens.iter().zip(x.chunks_exact_mut(d)) {
            self.token_embd.read_row(tok as usize, x_t);
        }

        for (layer, b) in self.blocks.iter().enumerate() {
            rms_norm(h, x, &b.attn_norm, cfg.norm_eps);
            matmul_group(&mut [&mut *q, &mut *k, &mut *v], h, &[&b.attn_q, &b.attn_k, &b.attn_v], &mut s.matmul);
            self.rope.apply(q, cfg.head_dim, cos, sin);
            self.rope.apply(k, cfg.head_dim, cos, sin);
            batch.store_kv(layer, k, v, kv_dim);
            batch.attend(layer, att, q, q_dim, heads);
            matmul(h, att, &b.attn_output, None, &mut s.matmul);
            add_in_place(x, h);

            rms_norm(h, x, &b.ffn_norm, cfg.norm_eps);
            matmul_group(&mut [&mut *gate, &mut *up], h, &[&b.ffn_gate, &b.ffn_up], &mut s.matmul);
            silu_mul(gate, up);
            matmul(h, gate, &b.ffn_down, None, &mut s.matmul);
            add_in_place(x, h);
        }

        // Only the rows whose logits are wanted go through the final norm and the LM head.
        let rows = batch.gather_logit_rows(x, d, att);
        let (x_out, h_out) = (&att[..rows * d], &mut h[..rows * d]);
        rms_norm(h_out, x_out, &self.output_norm, cfg.norm_eps);
        logits.resize(rows * cfg.n_vocab, 0.0);
        matmul(logits, h_out, &self.output, None, &mut s.matmul);
    }
}
