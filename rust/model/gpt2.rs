//! GPT-2 (transformers models/gpt2/modeling_gpt2.py): learned position embeddings,
//! pre-LayerNorm blocks with fused QKV attention and a GELU MLP, LM head tied to the token
//! embedding unless an `output.weight` is given.

use super::session::{sized, Batch, Scratch};
use super::{Config, Model};
use crate::error::Result;
use crate::ops::activation::gelu_tanh;
use crate::ops::attention::Heads;
use crate::ops::matmul::matmul;
use crate::ops::norm::layer_norm;
use crate::ops::add_in_place;
use crate::tensor::{Matrix, WeightSet};

struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// A matrix with its bias.
struct Linear {
    weight: Matrix,
    bias: Vec<f32>,
}

struct Block {
    attn_norm: LayerNorm,
    /// [3 * n_embd, n_embd]: rows Q | K | V
    attn_qkv: Linear,
    /// [n_embd, n_embd]
    attn_output: Linear,
    ffn_norm: LayerNorm,
    /// [n_ff, n_embd]
    ffn_up: Linear,
    /// [n_embd, n_ff]
    ffn_down: Linear,
}

pub struct Gpt2 {
    cfg: Config,
    /// [n_vocab, n_embd]
    token_embd: Matrix,
    /// [n_ctx, n_embd]
    position_embd: Matrix,
    blocks: Vec<Block>,
    output_norm: LayerNorm,
    /// [n_vocab, n_embd]: the token embedding itself when tied.
    output: Matrix,
}

impl Gpt2 {
    pub fn new(cfg: Config, w: &WeightSet) -> Result<Self> {
        let (d, f) = (cfg.n_embd, cfg.n_ff);
        if cfg.n_kv_head != cfg.n_head || cfg.head_dim * cfg.n_head != d || cfg.rope.is_some() {
            crate::bail!("GPT-2 needs n_kv_head == n_head, head_dim * n_head == n_embd and no RoPE");
        }
        let norm = |name: &str| -> Result<LayerNorm> {
            Ok(LayerNorm { weight: w.vector(&format!("{name}.weight"), d)?, bias: w.vector(&format!("{name}.bias"), d)? })
        };
        let linear = |name: &str, n_out: usize, n_in: usize| -> Result<Linear> {
            Ok(Linear {
                weight: w.matrix(&format!("{name}.weight"), n_out, n_in)?,
                bias: w.vector(&format!("{name}.bias"), n_out)?,
            })
        };
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                Ok(Block {
                    attn_norm: norm(&format!("blk.{i}.attn_norm"))?,
                    attn_qkv: linear(&format!("blk.{i}.attn_qkv"), 3 * d, d)?,
                    attn_output: linear(&format!("blk.{i}.attn_output"), d, d)?,
                    ffn_norm: norm(&format!("blk.{i}.ffn_norm"))?,
                    ffn_up: linear(&format!("blk.{i}.ffn_up"), f, d)?,
                    ffn_down: linear(&format!("blk.{i}.ffn_down"), d, f)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let token_embd = w.matrix("token_embd.weight", cfg.n_vocab, d)?;
        let output = if w.contains("output.weight") {
            w.matrix("output.weight", cfg.n_vocab, d)?
        } else {
            token_embd.clone()
        };
        Ok(Gpt2 {
            position_embd: w.matrix("position_embd.weight", cfg.n_ctx, d)?,
            output_norm: norm("output_norm")?,
            token_embd,
            blocks,
            output,
            cfg,
        })
    }
}

impl Model for Gpt2 {
    fn config(&self) -> &Config {
        &self.cfg
    }

    fn forward(&self, batch: &mut Batch<'_>, s: &mut Scratch, logits: &mut Vec<f32>) {
        let cfg = &self.cfg;
        let (n, d) = (batch.tokens.len(), cfg.n_embd);
        let heads = Heads { n_head: cfg.n_head, n_kv_head: cfg.n_head, head_dim: cfg.head_dim };
        batch.positions(&mut s.positions);
        let x = sized(&mut s.x, n * d);
        let h = sized(&mut s.h, n * d);
        let qkv = sized(&mut s.q, n * 3 * d);
        let k = sized(&mut s.k, n * d);
        let v = sized(&mut s.v, n * d);
        let att = sized(&mut s.att, n * d);
        let ff = sized(&mut s.ff, n * cfg.n_ff);

        let rows = x.chunks_exact_mut(d).zip(h.chunks_exact_mut(d));
        for ((&tok, &pos), (x_t, h_t)) in batch.tokens.iter().zip(&s.positions).zip(rows) {
            self.token_embd.read_row(tok as usize, x_t);
            self.position_embd.read_row(pos, h_t);
            add_in_place(x_t, h_t);
        }

        for (layer, b) in self.blocks.iter().enumerate() {
            layer_norm(h, x, &b.attn_norm.weight, &b.attn_norm.bias, cfg.norm_eps);
            matmul(qkv, h, &b.attn_qkv.weight, Some(&b.attn_qkv.bias), &mut s.matmul);
            // Rows are q | k | v; keys and values go to the cache.
            for (row, (k_t, v_t)) in qkv.chunks_exact(3 * d).zip(k.chunks_exact_mut(d).zip(v.chunks_exact_mut(d))) {
                k_t.copy_from_slice(&row[d..2 * d]);
                v_t.copy_from_slice(&row[2 * d..]);
            }
            batch.store_kv(layer, k, v, d);
            batch.attend(layer, att, qkv, 3 * d, heads);
            matmul(h, att, &b.attn_output.weight, Some(&b.attn_output.bias), &mut s.matmul);
            add_in_place(x, h);

            layer_norm(h, x, &b.ffn_norm.weight, &b.ffn_norm.bias, cfg.norm_eps);
            matmul(ff, h, &b.ffn_up.weight, Some(&b.ffn_up.bias), &mut s.matmul);
            gelu_tanh(ff);
            matmul(h, ff, &b.ffn_down.weight, Some(&b.ffn_down.bias), &mut s.matmul);
            add_in_place(x, h);
        }

        // Only the rows whose logits are wanted go through the final norm and the LM head.
        let rows = batch.gather_logit_rows(x, d, k);
        let (x_out, h_out) = (&k[..rows * d], &mut h[..rows * d]);
        layer_norm(h_out, x_out, &self.output_norm.weight, &self.output_norm.bias, cfg.norm_eps);
        logits.resize(rows * cfg.n_vocab, 0.0);
        matmul(logits, h_out, &self.output, None, &mut s.matmul);
    }
}
