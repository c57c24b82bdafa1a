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
/// `y.len() == w.len()`; the CPU supports AVX2, FMA and F16C.
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


// The pointwise kernels below are the scalar code compiled for AVX2 + FMA: `mul_add` becomes
// one instruction instead of a libm call and the loops vectorise, with identical results.

/// # Safety
/// The CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
    super::scalar::silu_mul(gate, up)
}

/// # Safety
/// The CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn softmax_exp(scores: &mut [f32]) -> f32 {
    super::scalar::softmax_exp(scores)
}

/// # Safety
/// The CPU supports AVX2 and FMA; `head` holds both members of every pair.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn rotate_pairs(head: &mut [f32], cos: &[f32], sin: &[f32], adjacent: bool) {
    super::scalar::rotate_pairs(head, cos, sin, adjacent)
}
