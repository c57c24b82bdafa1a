//! AVX2 + FMA twins of `scalar`. Callers (kernels/mod.rs) check lengths and CPU support.

use super::Elem;
use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn hsum(v: __m256) -> f32 {
    let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    let one = _mm_add_ss(pair, _mm_movehdup_ps(pair));
    _mm_cvtss_f32(one)
}

/// # Safety
/// `x.len() == w.len()`; the CPU supports AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot<W: Elem>(x: &[f32], w: &[W]) -> f32 {
    let n = x.len();
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    // Four independent accumulators hide the FMA latency; they are combined in ggml's order
    // (ggml_vec_dot_f16) and the remainder is added in f64, as ggml does.
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let o = i + 8 * k;
            *a = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(o)), W::load8(wp.add(o)), *a);
        }
        i += 32;
    }
    let lanes = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
    let quad = _mm_add_ps(_mm256_castps256_ps128(lanes), _mm256_extractf128_ps::<1>(lanes));
    let pairs = _mm_hadd_ps(quad, quad);
    let mut total = _mm_cvtss_f32(_mm_hadd_ps(pairs, pairs)) as f64;
    while i < n {
        total += (*xp.add(i) * (*wp.add(i)).to_f32()) as f64;
        i += 1;
    }
    total as f32
}

/// One 8-lane accumulator over the whole row, then `hsum`: llamafile's tinyBLAS order.
///
/// # Safety
/// `x.len() == w.len()`, a multiple of 8; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_tiled<W: Elem>(x: &[f32], w: &[W]) -> f32 {
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    let mut acc = _mm256_setzero_ps();
    for i in (0..x.len()).step_by(8) {
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(i)), W::load8(wp.add(i)), acc);
    }
    hsum(acc)
}

/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn round_to<W: Elem>(x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        _mm256_storeu_ps(c.as_mut_ptr(), W::round8(_mm256_loadu_ps(c.as_ptr())));
    }
    super::scalar::round_to::<W>(chunks.into_remainder());
}

/// # Safety
/// `out.len() == x.len()`; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn narrow<W: Elem>(out: &mut [W], x: &[f32]) {
    let whole = x.len() / 8 * 8;
    for i in (0..whole).step_by(8) {
        W::store8(out.as_mut_ptr().add(i), _mm256_loadu_ps(x.as_ptr().add(i)));
    }
    super::scalar::narrow(&mut out[whole..], &x[whole..]);
}

/// # Safety
/// `q.len() % 8 == 0`, `rows.len() == out.len() * q.len()`; the CPU supports AVX2, FMA, F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_tiled_rows<W: Elem>(q: &[f32], rows: &[W], out: &mut [f32]) {
    let d = q.len();
    let (qp, rp) = (q.as_ptr(), rows.as_ptr());
    // Four rows at a time, each in its own accumulator exactly as `dot_tiled` sums it: the
    // four chains of dependent multiply-adds overlap, and each load of q serves all four.
    let done = out.len() / 4 * 4;
    for (g, o) in out[..done].chunks_exact_mut(4).enumerate() {
        let row = |r: usize| rp.add((4 * g + r) * d);
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in (0..d).step_by(8) {
            let qv = _mm256_loadu_ps(qp.add(i));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(qv, W::load8(row(r).add(i)), *a);
            }
        }
        for (o, a) in o.iter_mut().zip(acc) {
            *o = hsum(a);
        }
    }
    for (j, o) in out.iter_mut().enumerate().skip(done) {
        *o = dot_tiled(q, rows.get_unchecked(j * d..(j + 1) * d));
    }
}

/// # Safety
/// `rows.len() == out.len() * q.len()`; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_rows<W: Elem>(q: &[f32], rows: &[W], out: &mut [f32]) {
    let d = q.len();
    for (j, o) in out.iter_mut().enumerate() {
        *o = dot(q, rows.get_unchecked(j * d..(j + 1) * d));
    }
}

/// # Safety
/// partial [8, d] with d % 8 == 0, `rows.len() == weights.len() * d`; the CPU supports AVX2,
/// FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy_lanes8<W: Elem>(partial: &mut [f32], weights: &[f32], rows: &[W]) {
    let d = partial.len() / 8;
    let (pp, rp) = (partial.as_mut_ptr(), rows.as_ptr());
    let n = weights.len();
    // Rows in blocks that stay in L1 while each 8-column slice passes over them; every lane
    // still takes its rows in order, so the sums are those of one pass over all rows.
    let block = (L1_ROW_BYTES / (d * std::mem::size_of::<W>())).max(1).next_multiple_of(8);
    for j0 in (0..n).step_by(block) {
        let j1 = (j0 + block).min(n);
        for c in (0..d).step_by(8) {
            let mut acc: [__m256; 8] = std::array::from_fn(|l| _mm256_loadu_ps(pp.add(l * d + c)));
            // Rows j.. go to lanes 0.. in turn: the lane is j % 8 as j starts at a multiple of 8.
            let lanes = |acc: &mut [__m256; 8], j: usize, count: usize| {
                for (l, a) in acc.iter_mut().enumerate().take(count) {
                    let v = W::load8(rp.add((j + l) * d + c));
                    *a = _mm256_fmadd_ps(_mm256_set1_ps(*weights.get_unchecked(j + l)), v, *a);
                }
            };
            let whole = j0 + (j1 - j0) / 8 * 8;
            for j in (j0..whole).step_by(8) {
                lanes(&mut acc, j, 8); // a constant count: the eight steps unrolled, unchecked
            }
            lanes(&mut acc, whole, j1 - whole);
            for (l, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(pp.add(l * d + c), *a);
            }
        }
    }
}

/// Bytes of value rows `axpy_lanes8` takes per block: half of a 32 KB L1 data cache.
const L1_ROW_BYTES: usize = 16 << 10;

/// # Safety
/// partial [lanes, d], `rows.len() == weights.len() * d`; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy_in_lanes<W: Elem>(partial: &mut [f32], weights: &[f32], rows: &[W], lanes: usize) {
    let d = partial.len() / lanes;
    // Row j goes to lane j % lanes: runs of `lanes` rows, lane by lane (a division per row
    // cost more than the row's multiply-adds).
    for (run_weights, run_rows) in weights.chunks(lanes).zip(rows.chunks(lanes * d)) {
        for (lane, &a) in run_weights.iter().enumerate() {
            axpy(partial.get_unchecked_mut(lane * d..(lane + 1) * d), a, run_rows.get_unchecked(lane * d..(lane + 1) * d));
        }
    }
}

/// See `kernels::sum_words`: four 256-bit accumulators, so that four loads are in flight.
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn sum_words(words: &[u64]) -> u64 {
    let mut acc = [_mm256_setzero_si256(); 4];
    let blocks = words.chunks_exact(16);
    let rest = blocks.remainder();
    for block in blocks {
        let p = block.as_ptr() as *const __m256i;
        for (k, a) in acc.iter_mut().enumerate() {
            *a = _mm256_add_epi64(*a, _mm256_loadu_si256(p.add(k)));
        }
    }
    let total = _mm256_add_epi64(_mm256_add_epi64(acc[0], acc[1]), _mm256_add_epi64(acc[2], acc[3]));
    let mut lanes = [0u64; 4];
    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, total);
    lanes.iter().chain(rest).fold(0u64, |sum, &w| sum.wrapping_add(w))
}

/// # Safety
/// `partial.len() == lanes * out.len()`, lanes 8 or 32; the CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn reduce_lanes(partial: &[f32], out: &mut [f32], lanes: usize) {
    let n = out.len();
    let whole = n / 8 * 8;
    // Eight output elements at a time, each lane k a vector of its elements d..d + 8.
    for d in (0..whole).step_by(8) {
        let l = |k: usize| _mm256_loadu_ps(partial.as_ptr().add(k * n + d));
        let sum = if lanes == 8 {
            _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(l(0), l(4)), _mm256_add_ps(l(2), l(6))), _mm256_add_ps(_mm256_add_ps(l(1), l(5)), _mm256_add_ps(l(3), l(7))))
        } else {
            let v: [__m256; 8] = std::array::from_fn(|i| _mm256_add_ps(_mm256_add_ps(l(i), l(i + 16)), _mm256_add_ps(l(i + 8), l(i + 24))));
            _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(v[0], v[4]), _mm256_add_ps(v[1], v[5])), _mm256_add_ps(_mm256_add_ps(v[2], v[6]), _mm256_add_ps(v[3], v[7])))
        };
        _mm256_storeu_ps(out.as_mut_ptr().add(d), sum);
    }
    for d in whole..n {
        *out.get_unchecked_mut(d) = super::scalar::lanes_at(partial, n, d, lanes);
    }
}

/// # Safety
/// `y.len() == w.len()`; the CPU supports AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy<W: Elem>(y: &mut [f32], a: f32, w: &[W]) {
    let n = y.len();
    let (yp, wp) = (y.as_mut_ptr(), w.as_ptr());
    let va = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        let v = _mm256_fmadd_ps(va, W::load8(wp.add(i)), _mm256_loadu_ps(yp.add(i)));
        _mm256_storeu_ps(yp.add(i), v);
        i += 8;
    }
    while i < n {
        *yp.add(i) += a * (*wp.add(i)).to_f32();
        i += 1;
    }
}

/// Tokens per register block of `axpy_block`: 6 x 2 accumulators + 2 weight vectors + 1
/// broadcast fill 15 of the 16 ymm registers.
const BLOCK_TOKENS: usize = 6;

/// # Safety
/// As `kernels::axpy_block` checks: x [n, n_in], out [n, width], rows.end <= n_in,
/// col0 + width <= n_out, w.len() >= n_in * n_out; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy_block<W: Elem>(out: &mut [f32], x: &[f32], n_in: usize, rows: std::ops::Range<usize>, w: &[W], n_out: usize, col0: usize) {
    let n = x.len() / n_in;
    let width = out.len() / n;
    let w = w.as_ptr().add(col0);
    let mut t = 0;
    while t < n {
        let (o, xt) = (out.as_mut_ptr().add(t * width), x.as_ptr().add(t * n_in));
        let r = match n - t {
            1 => token_block::<W, 1>(o, width, xt, n_in, rows.clone(), w, n_out),
            2 => token_block::<W, 2>(o, width, xt, n_in, rows.clone(), w, n_out),
            3 => token_block::<W, 3>(o, width, xt, n_in, rows.clone(), w, n_out),
            4 => token_block::<W, 4>(o, width, xt, n_in, rows.clone(), w, n_out),
            5 => token_block::<W, 5>(o, width, xt, n_in, rows.clone(), w, n_out),
            _ => token_block::<W, BLOCK_TOKENS>(o, width, xt, n_in, rows.clone(), w, n_out),
        };
        t += r;
    }
}

/// `axpy_block` for R tokens starting at `out` / `x` (`w` already offset to column 0 of the
/// block); returns R. Columns go 16 (two vectors), then 8, at a time; the last width % 8
/// are scalar, multiply then add, as `axpy`'s tail.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn token_block<W: Elem, const R: usize>(
    out: *mut f32,
    width: usize,
    x: *const f32,
    n_in: usize,
    rows: std::ops::Range<usize>,
    w: *const W,
    n_out: usize,
) -> usize {
    let mut c = 0;
    while c + 16 <= width {
        let mut acc: [[__m256; 2]; R] = std::array::from_fn(|r| [_mm256_loadu_ps(out.add(r * width + c)), _mm256_loadu_ps(out.add(r * width + c + 8))]);
        for i in rows.clone() {
            let wp = w.add(i * n_out + c);
            let (w0, w1) = (W::load8(wp), W::load8(wp.add(8)));
            for (r, a) in acc.iter_mut().enumerate() {
                let xb = _mm256_set1_ps(*x.add(r * n_in + i));
                a[0] = _mm256_fmadd_ps(xb, w0, a[0]);
                a[1] = _mm256_fmadd_ps(xb, w1, a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(r * width + c), a[0]);
            _mm256_storeu_ps(out.add(r * width + c + 8), a[1]);
        }
        c += 16;
    }
    if c + 8 <= width {
        let mut acc: [__m256; R] = std::array::from_fn(|r| _mm256_loadu_ps(out.add(r * width + c)));
        for i in rows.clone() {
            let w0 = W::load8(w.add(i * n_out + c));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(_mm256_set1_ps(*x.add(r * n_in + i)), w0, *a);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(r * width + c), *a);
        }
        c += 8;
    }
    for c in c..width {
        for i in rows.clone() {
            let wv = (*w.add(i * n_out + c)).to_f32();
            for r in 0..R {
                *out.add(r * width + c) += *x.add(r * n_in + i) * wv;
            }
        }
    }
    R
}

// Pointwise kernels: eight lanes of `scalar::exp` at a time, with the same operations in the
// same order, so every result equals the scalar kernel's bit for bit.

/// `scalar::exp` of each lane. Lanes whose exponent leaves the normal range (|n| > 126: scores
/// far below the maximum, GELU's and SiLU's large inputs) are scaled in two steps or saturated
/// as in `scalar::exp`, with blends.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp8(x: __m256) -> __m256 {
    let c = |bits: u32| _mm256_set1_ps(f32::from_bits(bits));
    let shift = c(0x4b40_0000);
    let z = _mm256_fmadd_ps(x, c(0x3fb8_aa3b), shift);
    let n = _mm256_sub_ps(z, shift);
    let neg_n = negate(n);
    let b = _mm256_fmadd_ps(neg_n, c(0x35bf_be8e), _mm256_fmadd_ps(neg_n, c(0x3f31_7200), x));
    let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
    let k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1.0))));
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)), u, _mm256_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb))),
        u,
        _mm256_mul_ps(c(0x3f7f_fff6), b),
    );
    let normal = _mm256_fmadd_ps(j, k, k);
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let out_of_range = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0));
    if _mm256_movemask_ps(out_of_range) == 0 {
        return normal;
    }
    let g = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())), _mm256_set1_epi32(0x8200_0000u32 as i32));
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let scaled = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
    let saturated = _mm256_mul_ps(s1, s1);
    let far = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
    _mm256_blendv_ps(normal, _mm256_blendv_ps(scaled, saturated, far), out_of_range)
}

/// -x, flipping the sign bit as the scalar `-x` does (0 - x would turn -0 into +0).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn negate(x: __m256) -> __m256 {
    _mm256_xor_ps(x, _mm256_set1_ps(-0.0))
}

/// Applies `vector` to whole groups of eight and `scalar` to the rest.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn map8(x: &mut [f32], vector: impl Fn(__m256) -> __m256, scalar: impl Fn(&mut [f32])) {
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        _mm256_storeu_ps(c.as_mut_ptr(), vector(_mm256_loadu_ps(c.as_ptr())));
    }
    scalar(chunks.into_remainder());
}

/// # Safety
/// `gate.len() == up.len()`; the CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let whole = gate.len() / 8 * 8;
    for i in (0..whole).step_by(8) {
        let g = _mm256_loadu_ps(gate.as_ptr().add(i));
        let e = exp8(negate(g));
        let silu = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0), e));
        _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(silu, _mm256_loadu_ps(up.as_ptr().add(i))));
    }
    super::scalar::silu_mul(&mut gate[whole..], &up[whole..])
}

/// # Safety
/// The CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gelu_tanh(x: &mut [f32]) {
    let vector = |a: __m256| {
        let cube = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715), a), a), a);
        let u = _mm256_mul_ps(_mm256_set1_ps(super::scalar::SQRT_2_OVER_PI), _mm256_add_ps(a, cube));
        let e = exp8(_mm256_max_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0), u), _mm256_set1_ps(super::scalar::GELU_MIN_EXPONENT)));
        _mm256_div_ps(a, _mm256_add_ps(_mm256_set1_ps(1.0), e))
    };
    map8(x, vector, super::scalar::gelu_tanh)
}

/// # Safety
/// The CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn softmax_exp(scores: &mut [f32]) -> f32 {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let whole = scores.len() / 8 * 8;
    let mut sum = 0.0f64;
    for i in (0..whole).step_by(8) {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(scores.as_ptr().add(i)), _mm256_set1_ps(max)));
        _mm256_storeu_ps(scores.as_mut_ptr().add(i), e);
        // hsum adds the lanes in the scalar kernel's order.
        sum += hsum(e) as f64;
    }
    super::scalar::softmax_exp_tail(&mut scores[whole..], max, sum)
}

/// # Safety
/// The CPU supports AVX2 and FMA; `head` holds both members of every pair.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn rotate_pairs(head: &mut [f32], cos: &[f32], sin: &[f32], adjacent: bool) {
    super::scalar::rotate_pairs(head, cos, sin, adjacent)
}
