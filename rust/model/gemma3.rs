//! Gemma 3 (llama.cpp src/models/gemma3.cpp, transformers models/gemma3): the token embedding
//! scaled by sqrt(n_embd); blocks of grouped-query attention with per-head Q/K RMSNorms, NeoX
//! RoPE and queries scaled by query_pre_attn_scalar^-1/2, and a GeGLU feed-forward, each
//! sublayer between an RMSNorm and a post-norm; most layers attend through a sliding window with
//! their own RoPE base, every sixth (as the file says) to the whole sequence; final RMSNorm;
//! the LM head tied to the embedding unless an `output.weight` is given.

use super::layers::{embed, Attention, Block, FeedForward, GateActivation, Head, Norm};
use super::session::{sized, Batch, Scratch};
use super::{Config, Model};
use crate::bail;
use crate::error::Result;
use crate::ops::rope::Rope;
use crate::tensor::{Matrix, WeightSet};

pub struct Gemma3 {
    cfg: Config,
    /// `Config::ropes`: the tables each forward pass builds.
    ropes: Vec<Rope>,
    /// [n_vocab, n_embd]
    token_embd: Matrix,
    /// sqrt(n_embd), as f32 (ggml's sqrtf and transformers' f32 normalizer agree)
    embd_scale: f32,
    blocks: Vec<Block>,
    head: Head,
}

impl Gemma3 {
    pub fn new(cfg: Config, w: &WeightSet) -> Result<Self> {
        if cfg.rope.is_none() {
            bail!("a Gemma 3 model needs RoPE settings");
        }
        if !cfg.qk_norm || cfg.qkv_bias || cfg.query_scale.is_none() {
            bail!("a Gemma 3 model has Q/K norms, no Q/K/V biases, and a query scale");
        }
        let act = if cfg.gelu_lookup { GateActivation::GeluLookup } else { GateActivation::Gelu };
        let d = cfg.n_embd;
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let norm = |part: &str| Norm::rms(w, &format!("blk.{i}.{part}"), d, &cfg);
                Ok(Block {
                    attn_norm: norm("attn_norm")?,
                    attn: Attention::load(w, &cfg, i)?,
                    post_attn_norm: Some(norm("post_attention_norm")?),
                    ffn_norm: norm("ffn_norm")?,
                    ffn: FeedForward::gated(w, &cfg, i, act)?,
                    post_ffn_norm: Some(norm("post_ffw_norm")?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let token_embd = w.matrix("token_embd.weight", cfg.n_vocab, d)?;
        let head = Head::load(w, &cfg, Norm::rms(w, "output_norm", d, &cfg)?, &token_embd)?;
        Ok(Gemma3 { ropes: cfg.ropes(), token_embd, embd_scale: (d as f32).sqrt(), blocks, head, cfg })
    }
}

impl Model for Gemma3 {
    fn config(&self) -> &Config {
        &self.cfg
    }

    fn forward(&self, batch: &mut Batch<'_>, s: &mut Scratch, logits: &mut Vec<f32>) {
        let n = batch.tokens.len() * self.cfg.n_embd;
        batch.positions(&mut s.positions);
        s.blocks.attn.rope_tables(&self.ropes, &s.positions);
        let (x, h) = (sized(&mut s.x, n), sized(&mut s.h, n));
        embed(&self.token_embd, &batch.tokens, x);
        x.iter_mut().for_each(|v| *v *= self.embd_scale);
        let rows = Block::run_all(&self.blocks, batch, x, h, &mut s.blocks);
        self.head.logits(batch, &x[..rows * self.cfg.n_embd], h, logits, &mut s.blocks.matmul);
    }
}
