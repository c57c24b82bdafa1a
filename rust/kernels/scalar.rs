//! Scalar references for every kernel in `kernels`: plain loops, the ground truth for tests.

use super::Elem;

pub fn dot<W: Elem>(x: &[f32], w: &[W]) -> f32 {
    x.iter().zip(w).map(|(&a, &b)| a * b.to_f32()).sum()
}

/// Lane i of 8 sums the products at i, i + 8, ...; lanes are then summed pairwise.
pub fn dot_tiled<W: Elem>(x: &[f32], w: &[W]) -> f32 {
    let mut lanes = [0.0f32; 8];
    for (xc, wc) in x.chunks_exact(8).zip(w.chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] = xc[l].mul_add(wc[l].to_f32(), lanes[l]);
        }
    }
    (lanes[0] + lanes[4] + (lanes[2] + lanes[6])) + (lanes[1] + lanes[5] + (lanes[3] + lanes[7]))
}

pub fn round_to<W: Elem>(x: &mut [f32]) {
    for v in x {
        *v = W::from_f32(*v).to_f32();
    }
}

pub fn narrow<W: Elem>(out: &mut [W], x: &[f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = W::from_f32(v);
    }
}

/// `dot_tiled` of `q` with each row of `rows`: see `kernels::dot_tiled_rows`.
pub fn dot_tiled_rows<W: Elem>(q: &[f32], rows: &[W], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(q.len())) {
        *o = dot_tiled(q, row);
    }
}

/// `dot` of `q` with each row of `rows`: see `kernels::dot_rows`.
pub fn dot_rows<W: Elem>(q: &[f32], rows: &[W], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(q.len())) {
        *o = dot(q, row);
    }
}

/// `axpy` of each weighted row into lane j % lanes: see `kernels::axpy_in_lanes`, and
/// `kernels::axpy_lanes8`, its register-blocked form for eight lanes.
pub fn axpy_in_lanes<W: Elem>(partial: &mut [f32], weights: &[f32], rows: &[W], lanes: usize) {
    let d = partial.len() / lanes;
    for (j, (&a, row)) in weights.iter().zip(rows.chunks_exact(d)).enumerate() {
        axpy(&mut partial[j % lanes * d..(j % lanes + 1) * d], a, row);
    }
}

/// Element d of eight lanes combined as `_mm256` hsum combines them: see
/// `kernels::reduce_lanes` (eight lanes).
#[inline(always)]
pub fn lanes8_at(l: impl Fn(usize) -> f32) -> f32 {
    (l(0) + l(4) + (l(2) + l(6))) + (l(1) + l(5) + (l(3) + l(7)))
}

/// Element d of 32 lanes combined as ggml_vec_dot_f16 combines them: see
/// `kernels::reduce_lanes` (32 lanes).
#[inline(always)]
pub fn lanes32_at(l: impl Fn(usize) -> f32) -> f32 {
    let v: [f32; 8] = std::array::from_fn(|i| (l(i) + l(i + 16)) + (l(i + 8) + l(i + 24)));
    (v[0] + v[4] + (v[1] + v[5])) + (v[2] + v[6] + (v[3] + v[7]))
}

/// Element d of `lanes` (8 or 32) lanes, partial [lanes, n]: see `kernels::reduce_lanes`.
#[inline(always)]
pub fn lanes_at(partial: &[f32], n: usize, d: usize, lanes: usize) -> f32 {
    let l = |k: usize| partial[k * n + d];
    if lanes == 8 {
        lanes8_at(l)
    } else {
        lanes32_at(l)
    }
}

/// See `kernels::reduce_lanes`.
pub fn reduce_lanes(partial: &[f32], out: &mut [f32], lanes: usize) {
    let n = out.len();
    for (d, o) in out.iter_mut().enumerate() {
        *o = lanes_at(partial, n, d, lanes);
    }
}

/// See `kernels::sum_words`.
pub fn sum_words(words: &[u64]) -> u64 {
    words.iter().fold(0u64, |sum, &w| sum.wrapping_add(w))
}

pub fn axpy<W: Elem>(y: &mut [f32], a: f32, w: &[W]) {
    for (yi, &wi) in y.iter_mut().zip(w) {
        *yi += a * wi.to_f32();
    }
}

/// `axpy` repeated over stored rows `rows` for every token: see `kernels::axpy_block`.
pub fn axpy_block<W: Elem>(out: &mut [f32], x: &[f32], n_in: usize, rows: std::ops::Range<usize>, w: &[W], n_out: usize, col0: usize) {
    let width = out.len() / (x.len() / n_in);
    for i in rows {
        let w_seg = &w[i * n_out + col0..i * n_out + col0 + width];
        for (out_t, x_t) in out.chunks_exact_mut(width).zip(x.chunks_exact(n_in)) {
            axpy(out_t, x_t[i], w_seg);
        }
    }
}


/// e^x, bit for bit as ggml's vectorised expf (ggml_v_expf, from Arm's optimized routines:
/// a degree-5 polynomial on a reduced argument, scaled by 2^n; at most 1.5 ulp from exact).
/// Softmax and SiLU use it so that logits match llama.cpp's to the last bit wherever the
/// rest of the arithmetic does. Constants are given as bits: they are exact f32 values.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let c = f32::from_bits;
    let shift = c(0x4b40_0000); // 0x1.8p23: adding it leaves round(x / ln2) in the low bits
    let z = x.mul_add(c(0x3fb8_aa3b), shift); // x * log2(e) + shift
    let n = z - shift;
    // b = x - n ln2, with ln2 split in two parts for accuracy.
    let b = (-n).mul_add(c(0x35bf_be8e), (-n).mul_add(c(0x3f31_7200), x));
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
    let u = b * b;
    let j = c(0x3c07_2010)
        .mul_add(b, c(0x3d2b_9f17))
        .mul_add(u, c(0x3e2a_af33).mul_add(b, c(0x3eff_fedb)))
        .mul_add(u, c(0x3f7f_fff6) * b);
    if n.abs() <= 126.0 {
        return j.mul_add(k, k);
    }
    // Out of the normal range: scale in two steps, or saturate to 0 / infinity.
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// gate[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + e^-x).
#[inline(always)]
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + exp(-*g)) * u;
    }
}

/// sqrt(2 / pi), GELU's constant.
pub const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// GELU, tanh approximation (GPT-2's "gelu_new"): 0.5 x (1 + tanh(u)) with
/// u = sqrt(2/pi) (x + 0.044715 x^3), computed as x / (1 + e^(-2u)) (the same function:
/// 1 + tanh(u) = 2 / (1 + e^(-2u))) so that it needs only ggml's exp and vectorises.
#[inline(always)]
pub fn gelu_tanh(x: &mut [f32]) {
    for v in x {
        let a = *v;
        let u = SQRT_2_OVER_PI * (a + 0.044715 * a * a * a);
        *v = a / (1.0 + exp((-2.0 * u).max(GELU_MIN_EXPONENT)));
    }
}

/// Below this, 1 + e^t rounds to exactly 1 in f32 (e^-30 < 2^-24): GELU clamps its exponent
/// here, which changes no result and keeps large inputs out of exp's slow (sub-normal) range.
pub const GELU_MIN_EXPONENT: f32 = -30.0;

/// Replaces scores s with e^(s - max) and returns 1 / their sum, summed as ggml's AVX2
/// softmax sums them: eight at a time in f32 (the last group padded with zeros, as the masked
/// tail of llama.cpp's padded KV window is), the group sums in f64.
#[inline(always)]
pub fn softmax_exp(scores: &mut [f32]) -> f32 {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    softmax_exp_tail(scores, max, 0.0)
}

/// `softmax_exp` over `scores` given the maximum and the sum so far (the SIMD kernel hands
/// over its last partial group here).
#[inline(always)]
pub fn softmax_exp_tail(scores: &mut [f32], max: f32, mut sum: f64) -> f32 {
    for chunk in scores.chunks_mut(8) {
        let mut l = [0.0f32; 8];
        for (lane, s) in l.iter_mut().zip(chunk.iter_mut()) {
            *s = exp(*s - max);
            *lane = *s;
        }
        sum += ((l[0] + l[4] + (l[2] + l[6])) + (l[1] + l[5] + (l[3] + l[7]))) as f64;
    }
    (1.0 / sum) as f32
}

/// Rotates pairs (a_i, b_i) of `head` by angles with the given cos and sin; pair i is
/// (2i, 2i+1) when `adjacent`, else (i, i + half). Fused as GCC fuses ggml's
/// `x0*cos - x1*sin`: the first product goes into the sum unrounded.
#[inline(always)]
pub fn rotate_pairs(head: &mut [f32], cos: &[f32], sin: &[f32], adjacent: bool) {
    let half = cos.len();
    for i in 0..half {
        let (a, b) = if adjacent { (2 * i, 2 * i + 1) } else { (i, i + half) };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0.mul_add(cos[i], -(x1 * sin[i]));
        head[b] = x0.mul_add(sin[i], x1 * cos[i]);
    }
}
