//! Scalar references for the quantized formats: dequantization, activation quantization and
//! the integer dot products, written for clarity. The AVX2 twins in `avx2.rs` must agree.

use super::blocks::*;
use crate::kernels::scalar::lanes8_at;
use super::ActPack;
use half::f16;

// ---- dequantization (weights -> f32), used for embedding rows and as the test reference ----

pub fn dequantize_q4_0(blocks: &[BlockQ4_0], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(32)) {
        let d = b.d.to_f32();
        for j in 0..16 {
            y[j] = ((b.qs[j] & 0xF) as i32 - 8) as f32 * d;
            y[j + 16] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub fn dequantize_q4_1(blocks: &[BlockQ4_1], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(32)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for j in 0..16 {
            y[j] = (b.qs[j] & 0xF) as f32 * d + m;
            y[j + 16] = (b.qs[j] >> 4) as f32 * d + m;
        }
    }
}

/// The 5-bit values of a Q5 block, 0..32, in element order.
fn q5_values(qh: [u8; 4], qs: &[u8; 16]) -> [i32; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut q = [0i32; 32];
    for j in 0..16 {
        q[j] = ((qs[j] & 0xF) as u32 | ((qh >> j) & 1) << 4) as i32;
        q[j + 16] = ((qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4) as i32;
    }
    q
}

pub fn dequantize_q5_0(blocks: &[BlockQ5_0], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(32)) {
        let d = b.d.to_f32();
        for (yj, q) in y.iter_mut().zip(q5_values(b.qh, &b.qs)) {
            *yj = (q - 16) as f32 * d;
        }
    }
}

pub fn dequantize_q5_1(blocks: &[BlockQ5_1], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(32)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for (yj, q) in y.iter_mut().zip(q5_values(b.qh, &b.qs)) {
            *yj = q as f32 * d + m;
        }
    }
}

pub fn dequantize_q8_0(blocks: &[BlockQ8_0], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(32)) {
        let d = b.d.to_f32();
        for (yj, &q) in y.iter_mut().zip(&b.qs) {
            *yj = q as f32 * d;
        }
    }
}

/// The 4-bit values of a Q4_K (or the low bits of a Q5_K) block's `qs`, 0..16, in element
/// order.
fn q4k_values(qs: &[u8; 128]) -> [u8; 256] {
    let mut q = [0u8; 256];
    for chunk in 0..4 {
        for l in 0..32 {
            let byte = qs[32 * chunk + l];
            q[64 * chunk + l] = byte & 0xF;
            q[64 * chunk + 32 + l] = byte >> 4;
        }
    }
    q
}

/// The 5-bit values of a Q5_K block, 0..32, in element order.
fn q5k_values(b: &BlockQ5K) -> [u8; 256] {
    let mut q = q4k_values(&b.qs);
    for (i, v) in q.iter_mut().enumerate() {
        *v |= ((b.qh[i % 32] >> (i / 32)) & 1) << 4;
    }
    q
}

/// One block of 256 values with Q4_K's packed sub-block scales and mins, as gguf-py computes
/// it: x = (d * sc) * q - (dmin * m).
fn dequantize_scale_min(d: f16, dmin: f16, scales: &[u8; 12], q: &[u8; 256], y: &mut [f32]) {
    let (d, dmin) = (d.to_f32(), dmin.to_f32());
    for sub in 0..8 {
        let (sc, m) = q4k_scale_min(sub, scales);
        let (scale, min) = (d * sc as f32, dmin * m as f32);
        for l in 0..32 {
            y[32 * sub + l] = scale * q[32 * sub + l] as f32 - min;
        }
    }
}

pub fn dequantize_q4_k(blocks: &[BlockQ4K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(256)) {
        dequantize_scale_min(b.d, b.dmin, &b.scales, &q4k_values(&b.qs), y);
    }
}

pub fn dequantize_q5_k(blocks: &[BlockQ5K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(256)) {
        dequantize_scale_min(b.d, b.dmin, &b.scales, &q5k_values(b), y);
    }
}

/// The 6-bit values of a Q6_K block minus 32, in element order.
fn q6k_values(b: &BlockQ6K) -> [i8; 256] {
    let mut q = [0i8; 256];
    for half in 0..2 {
        let (ql, qh) = (&b.ql[64 * half..], &b.qh[32 * half..]);
        let y = &mut q[128 * half..];
        for l in 0..32 {
            y[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            y[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            y[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            y[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    q
}

pub fn dequantize_q6_k(blocks: &[BlockQ6K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(256)) {
        let d = b.d.to_f32();
        for (i, q) in q6k_values(b).into_iter().enumerate() {
            y[i] = d * b.scales[i / 16] as f32 * q as f32;
        }
    }
}

/// The 2-bit values of a Q2_K or Q3_K block's `qs`, 0..4, in element order.
fn q2k_values(qs: &[u8; 64]) -> [u8; 256] {
    std::array::from_fn(|i| (qs[32 * (i / 128) + i % 32] >> (2 * (i % 128 / 32))) & 3)
}

/// The values of a Q3_K block, -4..4, in element order.
fn q3k_values(b: &BlockQ3K) -> [i8; 256] {
    let low = q2k_values(&b.qs);
    std::array::from_fn(|i| low[i] as i8 - if (b.hmask[i % 32] >> (i / 32)) & 1 == 1 { 0 } else { 4 })
}

/// As gguf-py computes it: x = (d * sc) * q - (dmin * m).
pub fn dequantize_q2_k(blocks: &[BlockQ2K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(256)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for (i, q) in q2k_values(&b.qs).into_iter().enumerate() {
            let sm = b.scales[i / 16];
            y[i] = d * (sm & 0xF) as f32 * q as f32 - dmin * (sm >> 4) as f32;
        }
    }
}

/// As gguf-py computes it: x = (d * sc) * q.
pub fn dequantize_q3_k(blocks: &[BlockQ3K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(256)) {
        let (d, scales) = (b.d.to_f32(), q3k_scales(&b.scales));
        for (i, q) in q3k_values(b).into_iter().enumerate() {
            y[i] = d * scales[i / 16] as f32 * q as f32;
        }
    }
}

/// The 32 values of 16 bytes of IQ4 codes (an IQ4_NL block, or an IQ4_XS sub-block), in
/// element order.
fn iq4_values(qs: &[u8; 16]) -> [i8; 32] {
    std::array::from_fn(|j| IQ4NL_VALUES[((qs[j % 16] >> (4 * (j / 16))) & 0xF) as usize])
}

pub fn dequantize_iq4_nl(blocks: &[BlockIQ4NL], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(32)) {
        let d = b.d.to_f32();
        for (yj, v) in y.iter_mut().zip(iq4_values(&b.qs)) {
            *yj = d * v as f32;
        }
    }
}

/// The 256 values of an IQ4_XS block, in element order.
fn iq4xs_values(b: &BlockIQ4XS) -> [i8; 256] {
    let mut q = [0i8; 256];
    for (sub, codes) in b.qs.chunks_exact(16).enumerate() {
        q[32 * sub..32 * sub + 32].copy_from_slice(&iq4_values(codes.try_into().expect("16 bytes")));
    }
    q
}

/// As gguf-py computes it: x = (d * sc) * value.
pub fn dequantize_iq4_xs(blocks: &[BlockIQ4XS], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(256)) {
        let d = b.d.to_f32();
        for (i, v) in iq4xs_values(b).into_iter().enumerate() {
            y[i] = d * iq4xs_scale(i / 32, b) as f32 * v as f32;
        }
    }
}

// ---- activation quantization, exactly as llama.cpp's x86 build does it ----

/// Round half to even, like `_mm256_round_ps(_MM_ROUND_NEAREST)` and ggml's nearest_int.
#[inline]
fn round_even(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// d = amax / 127 and q = round(x * 127 / amax).
fn quantize_32(x: &[f32]) -> (f32, [i8; 32]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; 32];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = round_even(v * id) as i8;
    }
    (d, qs)
}

pub fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    for (xb, b) in x.chunks_exact(32).zip(out) {
        let (d, qs) = quantize_32(xb);
        *b = BlockQ8_0 { d: f16::from_f32(d), qs };
    }
}

pub fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    for (xb, b) in x.chunks_exact(32).zip(out) {
        let (d, qs) = quantize_32(xb);
        let sum: i32 = qs.iter().map(|&q| q as i32).sum();
        *b = BlockQ8_1 { d: f16::from_f32(d).to_f32(), s: f16::from_f32(d * sum as f32).to_f32(), qs };
    }
}

/// The Q8_K scale is set by the element of largest magnitude, keeping its sign: q = -127 there.
pub fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    for (xb, b) in x.chunks_exact(256).zip(out) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        *b = BlockQ8K { d: 0.0, qs: [0; 256], bsums: [0; 16] };
        if amax == 0.0 {
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = round_even(iscale * v).min(127) as i8;
        }
        for (s, group) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = group.iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
    }
}

// ---- dot products: one weight row (blocks) with one quantized activation row ----

fn dot_i8(a: impl Iterator<Item = i32>, b: &[i8]) -> i32 {
    a.zip(b).map(|(x, &y)| x * y as i32).sum()
}

/// In the order of llama.cpp's repacked Q4_0 kernels on AVX2 (`q4_0_8x8_q8_0`: every matrix of
/// 8k rows), as `dot_iq4_nl`: one running float sum, each block's exact integer sum times
/// d_w * d_a added to it (fused).
pub fn dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    w.iter().zip(a).fold(0.0, |sum, (x, y)| {
        let lo = dot_i8(x.qs.iter().map(|&q| (q & 0xF) as i32 - 8), &y.qs[..16]);
        let hi = dot_i8(x.qs.iter().map(|&q| (q >> 4) as i32 - 8), &y.qs[16..]);
        (x.d.to_f32() * y.d.to_f32()).mul_add((lo + hi) as f32, sum)
    })
}

pub fn dot_q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    w.iter().zip(a).fold(0.0, |sum, (x, y)| sum + q4_1_term(x, y.d, y.s, &y.qs))
}

/// One Q4_1 block times an activation block given as (d, s, quants).
fn q4_1_term(x: &BlockQ4_1, d: f32, s: f32, qs: &[i8; 32]) -> f32 {
    let lo = dot_i8(x.qs.iter().map(|&q| (q & 0xF) as i32), &qs[..16]);
    let hi = dot_i8(x.qs.iter().map(|&q| (q >> 4) as i32), &qs[16..]);
    (lo + hi) as f32 * (x.d.to_f32() * d) + x.m.to_f32() * s
}

/// `dot_q4_1` of one weight row with R packed activation rows.
pub fn dot_packed_q4_1<const R: usize>(w: &[BlockQ4_1], a: &[ActPack<R>]) -> [f32; R] {
    std::array::from_fn(|k| w.iter().zip(a).fold(0.0, |sum, (x, p)| sum + q4_1_term(x, p.d[k], p.s[k], &p.qs[k])))
}

pub fn dot_q5_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    w.iter().zip(a).fold(0.0, |sum, (x, y)| sum + q5_0_term(x, y.d.to_f32(), &y.qs))
}

/// One Q5_0 block times an activation block given as (d, quants).
fn q5_0_term(x: &BlockQ5_0, d: f32, qs: &[i8; 32]) -> f32 {
    let q = q5_values(x.qh, &x.qs);
    dot_i8(q.iter().map(|&v| v - 16), qs) as f32 * (x.d.to_f32() * d)
}

/// `dot_q5_0` of one weight row with R packed activation rows.
pub fn dot_packed_q5_0<const R: usize>(w: &[BlockQ5_0], a: &[ActPack<R>]) -> [f32; R] {
    std::array::from_fn(|k| w.iter().zip(a).fold(0.0, |sum, (x, p)| sum + q5_0_term(x, p.d[k], &p.qs[k])))
}

pub fn dot_q5_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0.0;
    for (x, y) in w.iter().zip(a) {
        let q = q5_values(x.qh, &x.qs);
        sum += dot_i8(q.iter().copied(), &y.qs) as f32 * (x.d.to_f32() * y.d) + x.m.to_f32() * y.s;
    }
    sum
}

pub fn dot_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    w.iter().zip(a).fold(0.0, |sum, (x, y)| sum + q8_0_term(x, y.d.to_f32(), &y.qs))
}

/// One Q8_0 block times an activation block given as (d, quants).
fn q8_0_term(x: &BlockQ8_0, d: f32, qs: &[i8; 32]) -> f32 {
    dot_i8(x.qs.iter().map(|&q| q as i32), qs) as f32 * (x.d.to_f32() * d)
}

/// `dot_q8_0` of one weight row with R packed activation rows.
pub fn dot_packed_q8_0<const R: usize>(w: &[BlockQ8_0], a: &[ActPack<R>]) -> [f32; R] {
    std::array::from_fn(|k| w.iter().zip(a).fold(0.0, |sum, (x, p)| sum + q8_0_term(x, p.d[k], &p.qs[k])))
}

/// A block of 256 values with Q4_K's packed sub-block scales and mins (Q4_K's, Q5_K's) against
/// a Q8_K block, per 64-element chunk (sub-blocks 2c and 2c + 1): the values' sum sc * q * a
/// and the mins' sum m * (sum of a), both exact integers.
fn scale_min_chunk_sums(scales: &[u8; 12], q: &[u8; 256], y: &BlockQ8K) -> [(i32, i32); 4] {
    std::array::from_fn(|chunk| {
        let mut sums = (0, 0);
        for sub in [2 * chunk, 2 * chunk + 1] {
            let (sc, m) = q4k_scale_min(sub, scales);
            let r = 32 * sub..32 * sub + 32;
            sums.0 += sc as i32 * dot_i8(q[r.clone()].iter().map(|&v| v as i32), &y.qs[r]);
            sums.1 += m as i32 * (y.bsums[2 * sub] as i32 + y.bsums[2 * sub + 1] as i32);
        }
        sums
    })
}

/// The block totals of `scale_min_chunk_sums`.
fn block_sums(chunks: [(i32, i32); 4]) -> (i32, i32) {
    chunks.into_iter().fold((0, 0), |s, c| (s.0 + c.0, s.1 + c.1))
}

fn q4k_chunk_sums(x: &BlockQ4K, y: &BlockQ8K) -> [(i32, i32); 4] {
    scale_min_chunk_sums(&x.scales, &q4k_values(&x.qs), y)
}

/// Adds integer sums (values, mins) times the block's d * d_y and dmin * d_y to the two float
/// accumulators, fused, as llama.cpp's repacked Q4_K kernels do.
pub(super) fn add_q4k_sums(acc: &mut (f32, f32), d: f32, dmin: f32, d_y: f32, (values, mins): (i32, i32)) {
    acc.0 = (d * d_y).mul_add(values as f32, acc.0);
    acc.1 = (dmin * d_y).mul_add(mins as f32, acc.1);
}

/// One block's term in the order of llama.cpp's tiled matmul (ggml-cpu/tiled, a prefill of
/// eight rows or more): d times the values' exact integer sum, less dmin times the mins' sum
/// (fused, for the types with mins), times d_y added (fused) to the running sum.
pub(super) fn add_tiled_block(sum: f32, d: f32, values: i32, dmin_mins: Option<(f32, i32)>, d_y: f32) -> f32 {
    let mut r = d * values as f32;
    if let Some((dmin, mins)) = dmin_mins {
        r = (-dmin).mul_add(mins as f32, r);
    }
    r.mul_add(d_y, sum)
}

/// In the order of llama.cpp's AVX2 GEMV over Q4_K weights repacked 8x8 (how it multiplies one
/// activation row by a matrix whose row count is a multiple of 8): per block, the integer sums
/// of all 256 values and of the mins, each added (fused, times d * d_y and dmin * d_y) to its
/// own float accumulator; the mins' accumulator subtracted at the end.
pub fn dot_q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut acc = (0.0, 0.0);
    for (x, y) in w.iter().zip(a) {
        add_q4k_sums(&mut acc, x.d.to_f32(), x.dmin.to_f32(), y.d, block_sums(q4k_chunk_sums(x, y)));
    }
    acc.0 - acc.1
}

/// `dot_q4_k` in the order of llama.cpp's AVX2 GEMM over repacked Q4_K weights (activation
/// rows in whole groups of four): the two accumulators take each 64-element chunk's sums.
pub fn dot_gemm4_q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut acc = (0.0, 0.0);
    for (x, y) in w.iter().zip(a) {
        for chunk in q4k_chunk_sums(x, y) {
            add_q4k_sums(&mut acc, x.d.to_f32(), x.dmin.to_f32(), y.d, chunk);
        }
    }
    acc.0 - acc.1
}

/// In llama.cpp's AVX2 order: per block, eight integer lanes, lane k summing elements 4k..4k+3
/// of each run of 32 unsigned values q + 32 (times their group's scale), less 32 times the
/// scaled activation sums of groups 2k and 2k + 1 (the offset, taken from the block's bsums);
/// each lane then multiplied by the block's d and added (fused) to its own float accumulator,
/// block after block; the eight accumulators summed at the end as an `_mm256` horizontal sum.
pub fn dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in w.iter().zip(a) {
        let scale = |g: usize| x.scales[g] as i32;
        let mut lanes = eight_lanes(q6k_values(x).into_iter().map(|q| q as i32 + 32), |i| scale(i / 16), &y.qs);
        for (k, lane) in lanes.iter_mut().enumerate() {
            *lane -= 32 * (scale(2 * k) * y.bsums[2 * k] as i32 + scale(2 * k + 1) * y.bsums[2 * k + 1] as i32);
        }
        add_lanes(&mut acc, y.d * x.d.to_f32(), lanes);
    }
    lanes8_at(|k| acc[k])
}

/// In the order of llama.cpp's tiled matmul (`add_tiled_block`), from the first block.
pub fn dot_tiled_q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    w.iter().zip(a).fold(0.0, |sum, (x, y)| {
        let (values, mins) = block_sums(scale_min_chunk_sums(&x.scales, &q5k_values(x), y));
        add_tiled_block(sum, x.d.to_f32(), values, Some((x.dmin.to_f32(), mins)), y.d)
    })
}

/// In the order of llama.cpp's tiled matmul (`add_tiled_block`), from the first block.
pub fn dot_tiled_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    w.iter().zip(a).fold(0.0, |sum, (x, y)| {
        let values = q6k_values(x).iter().zip(&y.qs).enumerate().map(|(i, (&q, &v))| x.scales[i / 16] as i32 * q as i32 * v as i32).sum();
        add_tiled_block(sum, x.d.to_f32(), values, None, y.d)
    })
}

/// The integer lanes of llama.cpp's AVX2 K-quant kernels: lane k sums elements 4k..4k+3 of
/// each run of 32 values, each product times its element's scale.
fn eight_lanes(q: impl Iterator<Item = i32>, scale: impl Fn(usize) -> i32, a: &[i8; 256]) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    for (i, (q, &v)) in q.zip(a).enumerate() {
        lanes[i % 32 / 4] += scale(i) * q * v as i32;
    }
    lanes
}

/// The integer lanes of llama.cpp's AVX2 K-quant kernels over the activations' sums per 16
/// (`bsums`), as `_mm256_madd_epi16` of 16 per-group weights and those sums forms them: lane k
/// is weight(2k) * bsums[2k] + weight(2k + 1) * bsums[2k + 1].
fn bsum_lanes(y: &BlockQ8K, weight: impl Fn(usize) -> i32) -> [i32; 8] {
    std::array::from_fn(|k| weight(2 * k) * y.bsums[2 * k] as i32 + weight(2 * k + 1) * y.bsums[2 * k + 1] as i32)
}

/// Each lane times d, added (fused) to its own float accumulator.
fn add_lanes(acc: &mut [f32; 8], d: f32, lanes: [i32; 8]) {
    for (sum, lane) in acc.iter_mut().zip(lanes) {
        *sum = d.mul_add(lane as f32, *sum);
    }
}

/// In llama.cpp's AVX2 order: the values' eight integer lanes per block scaled by d into eight
/// float accumulators (as `dot_q6_k`); the mins' integer sum (sub-block min times the sum of
/// its 32 activations) times -dmin (-d_y times the weight's dmin) added, fused, to one float
/// sum, block after block; at the end the accumulators' `_mm256` horizontal sum plus that sum.
pub fn dot_q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let scale_min: [(u8, u8); 8] = std::array::from_fn(|sub| q4k_scale_min(sub, &x.scales));
        let mins: i32 = (0..8).map(|sub| scale_min[sub].1 as i32 * (y.bsums[2 * sub] as i32 + y.bsums[2 * sub + 1] as i32)).sum();
        summs = (-y.d * x.dmin.to_f32()).mul_add(mins as f32, summs);
        let lanes = eight_lanes(q5k_values(x).into_iter().map(|q| q as i32), |i| scale_min[i / 32].0 as i32, &y.qs);
        add_lanes(&mut acc, y.d * x.d.to_f32(), lanes);
    }
    lanes8_at(|k| acc[k]) + summs
}

/// In llama.cpp's AVX2 order (ggml_vec_dot_q2_K_q8_K): per block, first the mins' eight
/// integer lanes (lane k: groups 2k and 2k + 1, min times the sum of its 16 activations) times
/// -dmin (-d_y times the weight's dmin), then the values' eight lanes (as `dot_q6_k`, 4-bit
/// group scales) times d, each added (fused) to its lane's float accumulator; the eight
/// accumulators' `_mm256` horizontal sum at the end.
pub fn dot_q2_k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in w.iter().zip(a) {
        add_lanes(&mut acc, -y.d * x.dmin.to_f32(), bsum_lanes(y, |g| (x.scales[g] >> 4) as i32));
        let lanes = eight_lanes(q2k_values(&x.qs).into_iter().map(|q| q as i32), |i| (x.scales[i / 16] & 0xF) as i32, &y.qs);
        add_lanes(&mut acc, y.d * x.d.to_f32(), lanes);
    }
    lanes8_at(|k| acc[k])
}

/// In llama.cpp's AVX2 order (ggml_vec_dot_q3_K_q8_K), as `dot_q6_k`: per block the values'
/// eight integer lanes (times their group scales) times d into eight float accumulators,
/// their `_mm256` horizontal sum at the end.
pub fn dot_q3_k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in w.iter().zip(a) {
        let scales = q3k_scales(&x.scales);
        let lanes = eight_lanes(q3k_values(x).into_iter().map(|q| q as i32), |i| scales[i / 16] as i32, &y.qs);
        add_lanes(&mut acc, y.d * x.d.to_f32(), lanes);
    }
    lanes8_at(|k| acc[k])
}

/// In llama.cpp's AVX2 order (ggml_vec_dot_iq4_xs_q8_K), as `dot_q6_k`: per block the values'
/// eight integer lanes (times their sub-block scales) times d into eight float accumulators,
/// their `_mm256` horizontal sum at the end.
pub fn dot_iq4_xs(w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in w.iter().zip(a) {
        let lanes = eight_lanes(iq4xs_values(x).into_iter().map(|q| q as i32), |i| iq4xs_scale(i / 32, x), &y.qs);
        add_lanes(&mut acc, x.d.to_f32() * y.d, lanes);
    }
    lanes8_at(|k| acc[k])
}

/// In the order of llama.cpp's tiled matmul (`add_tiled_block`), from the first block.
pub fn dot_tiled_q2_k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    w.iter().zip(a).fold(0.0, |sum, (x, y)| {
        let mins = bsum_lanes(y, |g| (x.scales[g] >> 4) as i32).iter().sum();
        let values = eight_lanes(q2k_values(&x.qs).into_iter().map(|q| q as i32), |i| (x.scales[i / 16] & 0xF) as i32, &y.qs).iter().sum();
        add_tiled_block(sum, x.d.to_f32(), values, Some((x.dmin.to_f32(), mins)), y.d)
    })
}

/// In the order of llama.cpp's tiled matmul (`add_tiled_block`), from the first block.
pub fn dot_tiled_q3_k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    w.iter().zip(a).fold(0.0, |sum, (x, y)| {
        let scales = q3k_scales(&x.scales);
        let values = eight_lanes(q3k_values(x).into_iter().map(|q| q as i32), |i| scales[i / 16] as i32, &y.qs).iter().sum();
        add_tiled_block(sum, x.d.to_f32(), values, None, y.d)
    })
}

/// In the order of llama.cpp's tiled matmul (`add_tiled_block`), from the first block.
pub fn dot_tiled_iq4_xs(w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32 {
    w.iter().zip(a).fold(0.0, |sum, (x, y)| {
        let values = eight_lanes(iq4xs_values(x).into_iter().map(|q| q as i32), |i| iq4xs_scale(i / 32, x), &y.qs).iter().sum();
        add_tiled_block(sum, x.d.to_f32(), values, None, y.d)
    })
}

/// In the order of llama.cpp's product for IQ4_NL weights on AVX2, which repacks matrices whose
/// row count is a multiple of 8 (`iq4_nl_8x8_q8_0`, real models' matrices): one running float
/// sum, each block's exact integer sum times d_w * d_a added to it (fused), block after block.
/// Its one-row GEMV (ggml_gemv_iq4_nl_8x8_q8_0) and its GEMM over groups of four activation
/// rows (ggml_gemm_iq4_nl_8x8_q8_0, AVX2 path) both sum each output so, and the GEMM's
/// activations (ggml_quantize_mat_q8_0_4x8) are quantize_row_q8_0's values: so this is also
/// the order for rows in groups of four, and IQ4_NL needs no `dot_gemm4` of its own.
///
/// Matrices with a row count not a multiple of 8 are not repacked, and llama.cpp takes their
/// one-row products with ggml_vec_dot_iq4_nl_q8_0 and their batches with llamafile's
/// tinyBLAS, each in another order: for them this differs by float rounding.
pub fn dot_iq4_nl(w: &[BlockIQ4NL], a: &[BlockQ8_0]) -> f32 {
    w.iter().zip(a).fold(0.0, |sum, (x, y)| {
        let sumi = dot_i8(iq4_values(&x.qs).iter().map(|&v| v as i32), &y.qs);
        (x.d.to_f32() * y.d.to_f32()).mul_add(sumi as f32, sum)
    })
}
