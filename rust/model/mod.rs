//! Models: an architecture's weights and forward pass (`Model`), the per-sequence state
//! (`Session`), and the `Engine` that runs one on its own thread pool.

pub mod gemma3;
pub mod gpt2;
pub mod layers;
pub mod llama;
pub mod session;

use crate::bail;
use crate::error::{EngineError, Result};
use crate::ops::attention::Heads;
use crate::ops::rope::Rope;
use crate::tensor::WeightSet;
pub use session::{Batch, Pass, Scratch, Segment, Session, Within};
use std::sync::Mutex;

/// The hyperparameters every architecture shares.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub n_vocab: usize,
    /// Longest sequence the model was trained for.
    pub n_ctx: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub n_ff: usize,
    pub head_dim: usize,
    pub norm_eps: f32,
    /// Rotary embeddings (Llama); None for learned positions (GPT-2).
    pub rope: Option<Rope>,
    /// Store the KV cache in f16 (as llama.cpp does) instead of f32.
    pub kv_f16: bool,
    /// Biases on the Q, K and V projections (Qwen2).
    pub qkv_bias: bool,
    /// RMSNorm of each query and key head before RoPE (Qwen3).
    pub qk_norm: bool,
    /// Sliding-window attention on some layers (Gemma 3); None: every layer sees the whole
    /// sequence.
    pub sliding_window: Option<SlidingWindow>,
    /// Queries multiplied by this after RoPE, the attention scores then left unscaled (Gemma's
    /// query_pre_attn_scalar^-1/2); None: scores scaled by 1/sqrt(head_dim).
    pub query_scale: Option<f32>,
    /// GELU read from ggml's table over f16 inputs (llama.cpp's CPU GELU) instead of computed
    /// in f32 (transformers').
    pub gelu_lookup: bool,
    /// Added to every RMSNorm weight at load: Gemma's Hugging Face checkpoints store w - 1
    /// (GGUF files have the 1 added already).
    pub norm_weight_offset: f32,
}

/// Layers that attend only to the last `len` positions (their own and len - 1 before).
#[derive(Debug, Clone, PartialEq)]
pub struct SlidingWindow {
    pub len: usize,
    /// [n_layer]: whether the layer is windowed.
    pub layers: Vec<bool>,
    /// RoPE of the windowed layers, where it differs from `Config::rope` (Gemma 3's local base).
    pub rope: Option<Rope>,
}

impl Config {
    pub fn heads(&self) -> Heads {
        Heads { n_head: self.n_head, n_kv_head: self.n_kv_head, head_dim: self.head_dim }
    }

    /// The RoPEs whose tables a forward pass builds (`AttnScratch::rope_tables`): the model's,
    /// then the windowed layers' own where they have one.
    pub fn ropes(&self) -> Vec<Rope> {
        self.rope.iter().chain(self.sliding_window.as_ref().and_then(|w| w.rope.as_ref())).cloned().collect()
    }

    /// Layer `layer`'s RoPE and the index of its table in `ropes()`; None without RoPE.
    pub fn rope_of(&self, layer: usize) -> Option<(Rope, usize)> {
        let local = self.sliding_window.as_ref().filter(|w| w.layers[layer]).and_then(|w| w.rope.clone());
        match (local, &self.rope) {
            (Some(local), Some(_)) => Some((local, 1)),
            (_, rope) => rope.clone().map(|rope| (rope, 0)),
        }
    }

    /// Rejects sizes no model can have, before any buffer is sized from them.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("n_vocab", self.n_vocab),
            ("n_ctx", self.n_ctx),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_kv_head", self.n_kv_head),
            ("n_ff", self.n_ff),
            ("head_dim", self.head_dim),
        ];
        for (name, value) in sizes {
            if value == 0 || value > 1 << 24 {
                bail!("config {name} = {value} is out of range");
            }
        }
        if let Some(window) = &self.sliding_window {
            if window.len == 0 || window.layers.len() != self.n_layer {
                bail!("a sliding window of {} over {} of {} layers", window.len, window.layers.len(), self.n_layer);
            }
        }
        if let Some(scale) = self.query_scale {
            if !(scale.is_finite() && scale > 0.0) {
                bail!("query scale {scale} must be a positive number");
            }
        }
        if !self.norm_weight_offset.is_finite() {
            bail!("norm weight offset {} must be a number", self.norm_weight_offset);
        }
        for rope in &self.ropes() {
            if rope.dims == 0 || rope.dims % 2 != 0 || rope.dims > self.head_dim {
                bail!("rope dimensions {} must be even and at most head_dim {}", rope.dims, self.head_dim);
            }
            if !(rope.base.is_finite() && rope.base > 0.0) {
                bail!("rope base {} must be a positive number", rope.base);
            }
            if !(rope.freq_scale.is_finite() && rope.freq_scale > 0.0) {
                bail!("rope frequency scale {} must be a positive number", rope.freq_scale);
            }
            if !rope.factors.is_empty() && rope.factors.len() != rope.dims / 2 {
                bail!("{} rope frequency factors for {} rotated dimensions (want {})", rope.factors.len(), rope.dims, rope.dims / 2);
            }
            if rope.factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
                bail!("rope frequency factors must be positive numbers");
            }
        }
        if !self.n_head.is_multiple_of(self.n_kv_head) {
            bail!("n_head {} is not divisible by n_kv_head {}", self.n_head, self.n_kv_head);
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            bail!("norm epsilon {} must be a positive number", self.norm_eps);
        }
        Ok(())
    }
}

/// An architecture: weights plus the forward pass over them.
pub trait Model: Send + Sync {
    fn config(&self) -> &Config;

    /// Runs the batch's rows (each segment at its session's next positions), appending keys and
    /// values to the sessions' caches, and writes the logits of `batch.keep_logit_rows`' rows into
    /// `logits` [those rows, n_vocab]. Inputs were validated by `Engine::forward_batch`.
    fn forward(&self, batch: &mut Batch<'_>, scratch: &mut Scratch, logits: &mut Vec<f32>);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Gpt2,
    Llama,
    Gemma3,
}

impl Arch {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "gpt2" => Ok(Arch::Gpt2),
            "llama" => Ok(Arch::Llama),
            "gemma3" => Ok(Arch::Gemma3),
            _ => bail!("unsupported architecture {name:?}"),
        }
    }
}

/// A loaded model, the thread pool its forward passes run on, and their activation buffers
/// (one forward pass at a time: callers on several threads take turns).
pub struct Engine {
    model: Box<dyn Model>,
    /// What error messages call the model (its path).
    name: String,
    pool: rayon::ThreadPool,
    scratch: Mutex<Scratch>,
}

/// The most worker threads an engine starts (ggml's limit too): more than the cores of any
/// CPU this runs on, and a mistyped count does not start thousands of threads.
pub const MAX_THREADS: usize = 512;

/// The most rows of one session a forward pass takes (llama.cpp's default ubatch, so that a long
/// prompt is summed in the passes llama.cpp sums it in); sliding-window layers' ring caches are
/// sized for a window plus this many. Activation buffers stay within this many rows a session.
pub const PASS_ROWS: usize = 512;

impl Engine {
    /// `threads` = 0 means one per physical core; `name` is what error messages call the model.
    pub fn new(arch: Arch, config: Config, weights: &WeightSet, threads: usize, name: &str) -> Result<Self> {
        if threads > MAX_THREADS {
            bail!("threads must be at most {MAX_THREADS}, not {threads}");
        }
        config.validate()?;
        let model: Box<dyn Model> = match arch {
            Arch::Gpt2 => Box::new(gpt2::Gpt2::new(config, weights)?),
            Arch::Llama => Box::new(llama::Llama::new(config, weights)?),
            Arch::Gemma3 => Box::new(gemma3::Gemma3::new(config, weights)?),
        };
        weights.check_all_used()?;
        let threads = if threads == 0 { num_cpus::get_physical().max(1) } else { threads };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("gptgen-{i}"))
            .build()
            .map_err(|e| EngineError(format!("cannot start {threads} threads: {e}")))?;
        Ok(Engine { model, name: name.to_string(), pool, scratch: Mutex::new(Scratch::default()) })
    }

    pub fn config(&self) -> &Config {
        self.model.config()
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Read bandwidth in bytes per second as decoding meets it: the engine's own threads each
    /// stream their share of a `bytes` buffer (`kernels::sum_words`); the fastest of `rounds`
    /// timed reads after an untimed one. Decode reads every weight once per token and writes
    /// almost nothing, so this over the weights' size is its ceiling.
    pub fn read_bandwidth(&self, bytes: usize, rounds: usize) -> f64 {
        use rayon::prelude::*;
        // Written, so that every page is mapped before the reads are timed.
        let words = vec![1u64; (bytes / 8).max(1)];
        let share = words.len().div_ceil(self.threads());
        let best = self.pool.install(|| {
            (0..=rounds.max(1))
                .map(|_| {
                    let start = std::time::Instant::now();
                    let sum = words.par_chunks(share).map(crate::kernels::sum_words).reduce(|| 0, u64::wrapping_add);
                    std::hint::black_box(sum);
                    start.elapsed().as_secs_f64()
                })
                .skip(1)
                .fold(f64::INFINITY, f64::min)
        });
        (words.len() * 8) as f64 / best
    }

    /// A fresh session able to hold `max_seq` positions (at most the model's context).
    pub fn new_session(&self, max_seq: usize) -> Result<Session> {
        let cfg = self.config();
        if max_seq == 0 || max_seq > cfg.n_ctx {
            bail!("session length {max_seq} must be between 1 and the model context {}", cfg.n_ctx);
        }
        Ok(Session::new(cfg, max_seq))
    }

    /// Runs `tokens` at the session's next positions. Returns the logits, [rows, n_vocab]:
    /// every row if `pass.all_logits`, else the last.
    pub fn forward(&self, session: &mut Session, tokens: &[u32], pass: Pass) -> Result<Vec<f32>> {
        self.forward_batch(&mut [session], &[tokens], pass, None)
    }

    /// Runs `tokens[i]` at the next positions of `sessions[i]`, all in one pass (the weights are
    /// read once for every row). Returns the logits [rows, n_vocab]: every row if
    /// `pass.all_logits`, else the last row of each session, in order.
    ///
    /// A session given more than `PASS_ROWS` tokens runs alone, in passes of that many from
    /// its first token (as llama.cpp's ubatches of 512). `within[i]`: the pass session i's
    /// rows are summed as part of (default: a pass of their own).
    pub fn forward_batch(&self, sessions: &mut [&mut Session], tokens: &[&[u32]], pass: Pass, within: Option<&[Within]>) -> Result<Vec<f32>> {
        let cfg = self.config();
        if sessions.is_empty() || sessions.len() != tokens.len() {
            bail!("a batch needs one token list per session");
        }
        for (session, toks) in sessions.iter().zip(tokens) {
            if toks.is_empty() {
                bail!("no tokens to process");
            }
            if let Some(&bad) = toks.iter().find(|&&t| t as usize >= cfg.n_vocab) {
                bail!("token id {bad} is outside the vocabulary of {}", cfg.n_vocab);
            }
            if !session.fits(cfg) {
                bail!("this session belongs to a model of another shape");
            }
            if session.pos + toks.len() > session.max_seq {
                bail!("{} tokens at position {} exceed the session length {}", toks.len(), session.pos, session.max_seq);
            }
        }
        if let Some(within) = within {
            if within.len() != tokens.len() {
                bail!("a batch needs one pass place per session");
            }
            if let Some((w, toks)) = within.iter().zip(tokens).find(|(w, t)| w.of > PASS_ROWS || w.first + t.len() > w.of) {
                bail!("{} rows from row {} do not fit a pass of {} rows (at most {PASS_ROWS})", toks.len(), w.first, w.of);
            }
        }
        if tokens.iter().all(|t| t.len() <= PASS_ROWS) {
            let own: Vec<Within> = tokens.iter().map(|t| Within { of: t.len(), first: 0 }).collect();
            return self.run_pass(sessions, tokens, pass, within.unwrap_or(&own));
        }
        let mut logits = Vec::new();
        for (session, toks) in sessions.iter_mut().zip(tokens) {
            let passes = toks.len().div_ceil(PASS_ROWS);
            for (i, part) in toks.chunks(PASS_ROWS).enumerate() {
                let part_logits = self.run_pass(&mut [&mut **session], &[part], pass, &[Within { of: part.len(), first: 0 }])?;
                if pass.all_logits || i + 1 == passes {
                    logits.extend_from_slice(&part_logits);
                }
            }
        }
        Ok(logits)
    }

    /// One forward pass over validated rows.
    fn run_pass(&self, sessions: &mut [&mut Session], tokens: &[&[u32]], pass: Pass, within: &[Within]) -> Result<Vec<f32>> {
        let mut batch = Batch { tokens: Vec::new(), segments: Vec::with_capacity(sessions.len()), pass };
        for ((session, toks), &within) in sessions.iter_mut().zip(tokens).zip(within) {
            let start = batch.tokens.len();
            batch.tokens.extend_from_slice(toks);
            batch.segments.push(Segment { kv: &mut session.kv, pos0: session.pos, rows: start..batch.tokens.len(), within });
        }
        let mut logits = Vec::new();
        {
            // A panic in another forward pass leaves only scratch space behind: reuse it.
            let mut guard = self.scratch.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let scratch: &mut Scratch = &mut guard;
            self.pool.install(|| self.model.forward(&mut batch, scratch, &mut logits));
        }
        for (session, toks) in sessions.iter_mut().zip(tokens) {
            session.pos += toks.len();
        }
        if !all_finite(&logits) {
            bail!("{}: the forward pass produced NaN or infinite logits (broken weights, or activations beyond float32's range)", self.name);
        }
        Ok(logits)
    }
}

/// Whether no value is NaN or infinite: a branch-free pass over the exponent bits, cheaper
/// than an early-exit search over a vocabulary's logits.
fn all_finite(values: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    values.iter().fold(0u32, |non_finite, v| non_finite | u32::from(v.to_bits() & EXPONENT == EXPONENT)) == 0
}
