//! Rotary position embeddings. Dimension pair i of a head is rotated by pos * base^(-2i/dims);
//! which two elements form pair i depends on how the weights were stored (see `RopePairing`).

use crate::kernels::rotate_pairs;

/// Which elements of a head rotate together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopePairing {
    /// (2i, 2i + 1): GGUF `llama` weights, whose Q/K rows the converter permuted ("normal").
    Adjacent,
    /// (i, i + dims/2): Hugging Face checkpoints, rotate_half ("neox").
    Halves,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    pub base: f32,
    /// Leading dimensions of each head that rotate (the rest pass through).
    pub dims: usize,
    pub pairing: RopePairing,
    /// Every angle times this (linear RoPE scaling: 1 / factor; 1 without scaling).
    pub freq_scale: f32,
    /// [dims / 2] divisors of each pair's angle (Llama 3's `llama3` scaling, GGUF's
    /// `rope_freqs.weight`); empty without.
    pub factors: Vec<f32>,
    /// YaRN (0: none): pair i's angle blends the scaled and the unscaled angle by
    /// ext_factor * ramp(i), the ramp falling from 1 to 0 over pairs corr_dims[0]..corr_dims[1].
    pub ext_factor: f32,
    pub corr_dims: [f32; 2],
    /// cos and sin times this (times YaRN's 1 + 0.1 ln(1 / freq_scale) where it applies).
    pub attn_factor: f32,
}

impl Rope {
    /// cos and sin of every pair's angle for each of `positions`: each [positions, dims/2].
    ///
    /// The angles are built in f32 exactly as ggml builds them (pos times repeated products of
    /// base^(-2/dims)): an angle one ulp off can, through 8-bit activation quantization, flip a
    /// later rounding and move logits visibly away from llama.cpp's.
    pub fn tables(&self, positions: &[usize], cos: &mut [f32], sin: &mut [f32]) {
        let half = self.dims / 2;
        assert!(cos.len() == positions.len() * half && sin.len() == positions.len() * half);
        let theta_scale = self.base.powf(-2.0 / self.dims as f32);
        let mscale = if self.ext_factor != 0.0 { self.attn_factor * (1.0 + 0.1 * (1.0 / self.freq_scale).ln()) } else { self.attn_factor };
        for (t, &pos) in positions.iter().enumerate() {
            let mut theta = pos as f32;
            for i in 0..half {
                // As ggml (rope_yarn): freq_scale * (theta / factor), both exact no-ops at 1.
                let factor = self.factors.get(i).copied().unwrap_or(1.0);
                let extrapolated = theta / factor;
                let interpolated = self.freq_scale * extrapolated;
                let angle = if self.ext_factor != 0.0 {
                    let mix = self.yarn_ramp(i) * self.ext_factor;
                    interpolated * (1.0 - mix) + extrapolated * mix
                } else {
                    interpolated
                };
                cos[t * half + i] = angle.cos() * mscale;
                sin[t * half + i] = angle.sin() * mscale;
                theta *= theta_scale;
            }
        }
    }

    /// YaRN's ramp at pair i: 1 below corr_dims[0], 0 above corr_dims[1], linear between.
    fn yarn_ramp(&self, i: usize) -> f32 {
        let [low, high] = self.corr_dims;
        let y = (i as f32 - low) / (high - low).max(0.001);
        1.0 - y.clamp(0.0, 1.0)
    }

    /// Rotates every head of x [n, n_heads * head_dim] in place, with tables from `tables`.
    pub fn apply(&self, x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
        let half = self.dims / 2;
        let n = cos.len() / half.max(1);
        assert!(self.dims <= head_dim && x.len().is_multiple_of(n.max(1) * head_dim));
        let heads_per_row = x.len() / n.max(1) / head_dim;
        for (t, row) in x.chunks_exact_mut(heads_per_row * head_dim).enumerate() {
            let (c, s) = (&cos[t * half..(t + 1) * half], &sin[t * half..(t + 1) * half]);
            for head in row.chunks_exact_mut(head_dim) {
                rotate_pairs(&mut head[..self.dims], c, s, self.pairing == RopePairing::Adjacent);
            }
        }
    }
}
