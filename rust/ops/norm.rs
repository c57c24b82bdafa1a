//! Normalisations, one row of `dim` features at a time.

/// LayerNorm (GPT-2): out = (x - mean) / sqrt(var + eps) * w + b, over each row of x [rows, dim].
pub fn layer_norm(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
    let dim = w.len();
    assert!(b.len() == dim && x.len() == out.len() && x.len().is_multiple_of(dim));
    for (o, xr) in out.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
        // Accumulate in f64: rows can be long and the variance is a difference of squares.
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for i in 0..dim {
            o[i] = ((xr[i] as f64 - mean) * inv) as f32 * w[i] + b[i];
        }
    }
}

/// RMSNorm (Llama): out = x / sqrt(mean(x^2) + eps) * w, over each row of x [rows, dim].
pub fn rms_norm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let dim = w.len();
    assert!(x.len() == out.len() && x.len().is_multiple_of(dim));
    for (o, xr) in out.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
        // As ggml: f32 squares summed in f64, the mean and its inverse root in f32.
        let mean_sq = (xr.iter().map(|&v| (v * v) as f64).sum::<f64>() / dim as f64) as f32;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        for i in 0..dim {
            o[i] = xr[i] * inv * w[i];
        }
    }
}
