//! GPT-2 (transformers models/gpt2/modeling_gpt2.py): token plus learned position embeddings;
//! pre-LayerNorm blocks of attention with a fused, biased QKV projection and a GELU MLP; final
//! LayerNorm; an LM head tied to the token embedding unless an `output.weight` is given.

use super::layers::{embed, Attention, Block, FeedForward, Head, Linear, Norm, QkvProjection};
use super::session::{sized, Batch, Scratch};
use super::{Config, Model};
use crate::error::Result;
use crate::ops::add_in_place;
use crate::tensor::{Matrix, WeightSet};

pub struct Gpt2 {
    cfg: Config,
    /// [n_vocab, n_embd]
    token_embd: Matrix,
    /// [n_ctx, n_embd]
    position_embd: Matrix,
    blocks: Vec<Block>,
    head: Head,
}

impl Gpt2 {
    pub fn new(cfg: Config, w: &WeightSet) -> Result<Self> {
        let (d, f, eps) = (cfg.n_embd, cfg.n_ff, cfg.norm_eps);
        let options = cfg.rope.is_some() || cfg.qkv_bias || cfg.qk_norm || cfg.sliding_window.is_some() || cfg.query_scale.is_some();
        if cfg.n_kv_head != cfg.n_head || cfg.head_dim * cfg.n_head != d || options {
            crate::bail!("GPT-2 needs n_kv_head == n_head, head_dim * n_head == n_embd, and no RoPE, window or Q/K/V options");
        }
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let name = |part: &str| format!("blk.{i}.{part}");
                Ok(Block {
                    attn_norm: Norm::layer(w, &name("attn_norm"), d, eps)?,
                    attn: Attention {
                        qkv: QkvProjection::Fused(Linear::load(w, &name("attn_qkv"), 3 * d, d, true)?),
                        q_norm: None,
                        k_norm: None,
                        rope: None,
                        query_scale: None,
                        output: Linear::load(w, &name("attn_output"), d, d, true)?,
                        heads: cfg.heads(),
                        window: None,
                    },
                    post_attn_norm: None,
                    ffn_norm: Norm::layer(w, &name("ffn_norm"), d, eps)?,
                    ffn: FeedForward::Gelu { up: Linear::load(w, &name("ffn_up"), f, d, true)?, down: Linear::load(w, &name("ffn_down"), d, f, true)? },
                    post_ffn_norm: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let token_embd = w.matrix("token_embd.weight", cfg.n_vocab, d)?;
        let head = Head::load(w, &cfg, Norm::layer(w, "output_norm", d, eps)?, &token_embd)?;
        Ok(Gpt2 { position_embd: w.matrix("position_embd.weight", cfg.n_ctx, d)?, token_embd, blocks, head, cfg })
    }
}

impl Model for Gpt2 {
    fn config(&self) -> &Config {
        &self.cfg
    }

    fn forward(&self, batch: &mut Batch<'_>, s: &mut Scratch, logits: &mut Vec<f32>) {
        let d = self.cfg.n_embd;
        batch.positions(&mut s.positions);
        let (x, h) = (sized(&mut s.x, batch.tokens.len() * d), sized(&mut s.h, batch.tokens.len() * d));
        embed(&self.token_embd, &batch.tokens, x);
        for (&pos, (x_t, h_t)) in s.positions.iter().zip(x.chunks_exact_mut(d).zip(h.chunks_exact_mut(d))) {
            self.position_embd.read_row(pos, h_t);
            add_in_place(x_t, h_t);
        }
        let rows = Block::run_all(&self.blocks, batch, x, h, &mut s.blocks);
        self.head.logits(batch, &x[..rows * d], h, logits, &mut s.blocks.matmul);
    }
}
