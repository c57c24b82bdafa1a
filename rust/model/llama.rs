//! Llama (llama.cpp src/models/llama.cpp, transformers modeling_llama.py): token embedding;
//! pre-RMSNorm blocks of grouped-query attention with RoPE (and, as configured, Q/K/V biases
//! and per-head Q/K norms) and a SwiGLU feed-forward; final RMSNorm; an LM head tied to the
//! token embedding unless an `output.weight` is given.

use super::layers::{embed, Attention, Block, FeedForward, GateActivation, Head, Norm};
use super::session::{sized, Batch, Scratch};
use super::{Config, Model};
use crate::bail;
use crate::error::Result;
use crate::ops::rope::Rope;
use crate::tensor::{Matrix, WeightSet};

pub struct Llama {
    cfg: Config,
    /// `Config::ropes`: the tables each forward pass builds.
    ropes: Vec<Rope>,
    /// [n_vocab, n_embd]
    token_embd: Matrix,
    blocks: Vec<Block>,
    head: Head,
}

impl Llama {
    pub fn new(cfg: Config, w: &WeightSet) -> Result<Self> {
        if cfg.rope.is_none() {
            bail!("a Llama model needs RoPE settings");
        }
        let d = cfg.n_embd;
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                Ok(Block {
                    attn_norm: Norm::rms(w, &format!("blk.{i}.attn_norm"), d, &cfg)?,
                    attn: Attention::load(w, &cfg, i)?,
                    post_attn_norm: None,
                    ffn_norm: Norm::rms(w, &format!("blk.{i}.ffn_norm"), d, &cfg)?,
                    ffn: FeedForward::gated(w, &cfg, i, GateActivation::Silu)?,
                    post_ffn_norm: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let token_embd = w.matrix("token_embd.weight", cfg.n_vocab, d)?;
        let head = Head::load(w, &cfg, Norm::rms(w, "output_norm", d, &cfg)?, &token_embd)?;
        Ok(Llama { ropes: cfg.ropes(), token_embd, blocks, head, cfg })
    }
}

impl Model for Llama {
    fn config(&self) -> &Config {
        &self.cfg
    }

    fn forward(&self, batch: &mut Batch<'_>, s: &mut Scratch, logits: &mut Vec<f32>) {
        let n = batch.tokens.len() * self.cfg.n_embd;
        batch.positions(&mut s.positions);
        s.blocks.attn.rope_tables(&self.ropes, &s.positions);
        let (x, h) = (sized(&mut s.x, n), sized(&mut s.h, n));
        embed(&self.token_embd, &batch.tokens, x);
        let rows = Block::run_all(&self.blocks, batch, x, h, &mut s.blocks);
        self.head.logits(batch, &x[..rows * self.cfg.n_embd], h, logits, &mut s.blocks.matmul);
    }
}
