//! The innermost loops, each with a scalar reference and an AVX2 twin chosen at run time.
//!
//! Weight elements come in several storage types (`Elem`); activations are always f32.
//! Every public function here is its doc, its length checks and one `dispatch!` to the SIMD
//! kernel or its scalar twin, so that no `unsafe` SIMD body is reached with unchecked lengths.
//! Setting `GPTGEN_FORCE_SCALAR=1` forces the scalar path everywhere (for debugging and tests).

pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod avx2;

use half::{bf16, f16};
use std::sync::OnceLock;

/// A weight storage type that widens to f32.
pub trait Elem: bytemuck::Pod + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    /// Rounds to nearest (even) for the narrow types.
    fn from_f32(v: f32) -> Self;

    /// Loads 8 consecutive elements widened to f32.
    ///
    /// # Safety
    /// `p` must be valid for reading 8 elements and the CPU must support AVX2 and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;

    /// Stores 8 values rounded to this type (`from_f32`, lane-wise).
    ///
    /// # Safety
    /// `p` must be valid for writing 8 elements and the CPU must support AVX2 and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn store8(p: *mut Self, v: std::arch::x86_64::__m256) {
        let mut lanes = [0.0f32; 8];
        std::arch::x86_64::_mm256_storeu_ps(lanes.as_mut_ptr(), v);
        for (k, x) in lanes.into_iter().enumerate() {
            p.add(k).write_unaligned(Self::from_f32(x));
        }
    }

    /// 8 values rounded to this type and widened back (`from_f32` then `to_f32`, lane-wise).
    ///
    /// # Safety
    /// The CPU must support AVX2 and F16C.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn round8(v: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
        let mut stored = [Self::zeroed(); 8];
        Self::store8(stored.as_mut_ptr(), v);
        Self::load8(stored.as_ptr())
    }
}

impl Elem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn store8(p: *mut Self, v: std::arch::x86_64::__m256) {
        std::arch::x86_64::_mm256_storeu_ps(p, v)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn round8(v: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
        v
    }
}

impl Elem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn store8(p: *mut Self, v: std::arch::x86_64::__m256) {
        use std::arch::x86_64::*;
        _mm_storeu_si128(p as *mut __m128i, _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v))
    }
}

impl Elem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // bf16 is the top half of an f32: widen to u32 and shift into place.
        let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
    }
}

/// Whether the AVX2 kernels are in use (detected once; `GPTGEN_FORCE_SCALAR=1` turns them off).
pub fn simd_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        let forced_scalar = std::env::var("GPTGEN_FORCE_SCALAR").is_ok_and(|v| v != "0" && !v.is_empty());
        !forced_scalar && cpu_has_avx2()
    })
}

/// Whether the AVX2 kernels may also use AVX-512 VNNI's byte dot product (`vpdpbusd` on
/// 256-bit registers), which does in one instruction what `maddubs` + `madd` do in two, with
/// identical integer results.
pub fn vnni_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| simd_enabled() && cpu_has_vnni())
}

/// The one way a public kernel reaches SIMD code (here and in `quant`): the AVX2 kernel when
/// `simd_enabled()`, else the scalar twin. It returns from the enclosing function, so it is
/// the function's last line, after the checks of every length and index the SIMD kernel
/// relies on (that is the caller's half of the `unsafe` contract; the CPU check is this
/// macro's).
/// - `dispatch!(f(args))`: `avx2::f(args)` or `scalar::f(args)` (with `f::<T>(args)` too);
/// - `dispatch!(avx2: simd_call, scalar: scalar_call)`: twins of other names or arguments;
///   without `avx2:` (a quantized type with scalar kernels only) just the scalar call.
macro_rules! dispatch {
    ($(avx2: $simd:expr,)? scalar: $scalar:expr $(,)?) => {{
        $(
        #[cfg(target_arch = "x86_64")]
        if $crate::kernels::simd_enabled() {
            // SAFETY: the caller checked the lengths and indices the kernel relies on (those
            // that take one slice rely on none); AVX2/FMA/F16C were detected.
            return unsafe { $simd };
        }
        )?
        $scalar
    }};
    ($f:ident $(::<$($g:ty),+>)? ($($arg:expr),* $(,)?)) => {
        $crate::kernels::dispatch!(avx2: avx2::$f$(::<$($g),+>)?($($arg),*), scalar: scalar::$f$(::<$($g),+>)?($($arg),*))
    };
}
pub(crate) use dispatch;

/// The name of the kernel family in use, for `gptgen info` and benchmarks.
pub fn kernel_name() -> &'static str {
    match (simd_enabled(), vnni_enabled()) {
        (true, true) => "avx2+vnni",
        (true, false) => "avx2",
        _ => "scalar",
    }
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_vnni() -> bool {
    is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_vnni() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_avx2() -> bool {
    false
}

/// sum_i x[i] * w[i]
#[inline]
pub fn dot<W: Elem>(x: &[f32], w: &[W]) -> f32 {
    assert_eq!(x.len(), w.len(), "dot: length mismatch");
    dispatch!(dot(x, w))
}

/// sum_i x[i] * w[i] accumulated in 8 lanes (i mod 8) and then summed pairwise; the length
/// must be a multiple of 8. The order of llamafile's tinyBLAS, which llama.cpp uses for
/// attention over several tokens.
#[inline]
pub fn dot_tiled<W: Elem>(x: &[f32], w: &[W]) -> f32 {
    assert!(x.len() == w.len() && x.len().is_multiple_of(8), "dot_tiled: lengths must match and be a multiple of 8");
    dispatch!(dot_tiled(x, w))
}

/// Rounds every value to W and back: what storing it as W keeps (ggml rounds attention queries
/// and weights to the KV cache's type before they meet the cache).
pub fn round_to<W: Elem>(x: &mut [f32]) {
    dispatch!(round_to::<W>(x))
}

/// out[i] = x[i] rounded to the storage type (`Elem::from_f32`).
pub fn narrow<W: Elem>(out: &mut [W], x: &[f32]) {
    assert_eq!(out.len(), x.len(), "narrow: length mismatch");
    dispatch!(narrow(out, x))
}

/// out[j] = dot_tiled(q, rows[j]) for rows [out.len(), q.len()]: each row summed exactly as
/// `dot_tiled` sums it, in one call (attention scores over a cache).
pub fn dot_tiled_rows<W: Elem>(q: &[f32], rows: &[W], out: &mut [f32]) {
    assert!(!q.is_empty() && q.len().is_multiple_of(8), "dot_tiled_rows: the length must be a multiple of 8");
    assert_eq!(rows.len(), out.len() * q.len(), "dot_tiled_rows: one row per output");
    dispatch!(dot_tiled_rows(q, rows, out))
}

/// out[j] = dot(q, rows[j]) for rows [out.len(), q.len()]: each row summed exactly as `dot`
/// sums it, in one call (the attention scores of one token over a cache).
pub fn dot_rows<W: Elem>(q: &[f32], rows: &[W], out: &mut [f32]) {
    assert!(!q.is_empty(), "dot_rows: empty rows");
    assert_eq!(rows.len(), out.len() * q.len(), "dot_rows: one row per output");
    dispatch!(dot_rows(q, rows, out))
}

/// partial[j % 8] += weights[j] · rows[j] for rows [weights.len(), d] and partial [8, d]:
/// each lane accumulated exactly as `axpy` row by row would, with the eight running sums held
/// in registers (attention outputs in tinyBLAS's lane order). d must be a multiple of 8.
pub fn axpy_lanes8<W: Elem>(partial: &mut [f32], weights: &[f32], rows: &[W]) {
    let d = partial.len() / 8;
    assert!(d > 0 && partial.len() == 8 * d && d.is_multiple_of(8), "axpy_lanes8: partial must be [8, d], d a multiple of 8");
    assert_eq!(rows.len(), weights.len() * d, "axpy_lanes8: one row per weight");
    dispatch!(avx2: avx2::axpy_lanes8(partial, weights, rows), scalar: scalar::axpy_in_lanes(partial, weights, rows, 8))
}

/// partial[j % lanes] += weights[j] · rows[j] for rows [weights.len(), d] and partial
/// [lanes, d], row after row, each exactly as `axpy` (one token's attention outputs in
/// ggml_vec_dot_f16's 32-lane order, or rows of any width).
pub fn axpy_in_lanes<W: Elem>(partial: &mut [f32], weights: &[f32], rows: &[W], lanes: usize) {
    assert!(lanes > 0 && partial.len().is_multiple_of(lanes), "axpy_in_lanes: partial must be [lanes, d]");
    let d = partial.len() / lanes;
    assert_eq!(rows.len(), weights.len() * d, "axpy_in_lanes: one row per weight");
    dispatch!(axpy_in_lanes(partial, weights, rows, lanes))
}

/// out[d] = the lanes partial[0..lanes, d] (partial: [lanes, out.len()]) combined as ggml
/// combines them: eight as an `_mm256` horizontal sum, ((l0 + l4) + (l2 + l6)) + ((l1 + l5) +
/// (l3 + l7)), tinyBLAS's order for attention over several tokens; 32 as ggml_vec_dot_f16
/// adds its four 8-lane accumulators, (a0 + a2) + (a1 + a3), then sums horizontally in two
/// hadds (one token's attention).
pub fn reduce_lanes(partial: &[f32], out: &mut [f32], lanes: usize) {
    assert!(lanes == 8 || lanes == 32, "reduce_lanes: 8 or 32 lanes");
    assert_eq!(partial.len(), lanes * out.len(), "reduce_lanes: partial must be [lanes, out.len()]");
    dispatch!(reduce_lanes(partial, out, lanes))
}

/// The wrapping sum of `words`: a streaming read of memory, as fast as the core can load (the
/// memory-bandwidth probe's loop, `model::Engine::read_bandwidth`).
#[inline]
pub fn sum_words(words: &[u64]) -> u64 {
    dispatch!(sum_words(words))
}

/// y[i] += a * w[i]
#[inline]
pub fn axpy<W: Elem>(y: &mut [f32], a: f32, w: &[W]) {
    assert_eq!(y.len(), w.len(), "axpy: length mismatch");
    dispatch!(axpy(y, a, w))
}


/// out[t, c] += Σ_{i in rows} x[t, i] · w[i, col0 + c] for x [n, n_in], w [n_in, n_out] and
/// out [n, width]: every element accumulated in `rows` order exactly as `axpy` over each
/// stored row would (same fused or unfused steps), but with the running sums of a block of
/// tokens x columns held in registers instead of being reloaded for every row.
pub fn axpy_block<W: Elem>(out: &mut [f32], x: &[f32], n_in: usize, rows: std::ops::Range<usize>, w: &[W], n_out: usize, col0: usize) {
    assert!(n_in > 0 && !x.is_empty() && x.len().is_multiple_of(n_in), "axpy_block: x is not whole rows");
    let n = x.len() / n_in;
    assert!(out.len().is_multiple_of(n), "axpy_block: out is not one row per token");
    let width = out.len() / n;
    assert!(rows.start <= rows.end && rows.end <= n_in, "axpy_block: rows outside the input");
    assert!(col0 + width <= n_out && w.len() >= n_in * n_out, "axpy_block: columns outside the weights");
    dispatch!(axpy_block(out, x, n_in, rows, w, n_out, col0))
}

/// e^x as ggml computes it (see `scalar::exp`).
pub use scalar::exp;

/// gate[i] = silu(gate[i]) * up[i], with ggml's exp.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul: length mismatch");
    dispatch!(silu_mul(gate, up))
}

/// GELU, tanh approximation (see `scalar::gelu_tanh`).
pub fn gelu_tanh(x: &mut [f32]) {
    dispatch!(gelu_tanh(x))
}

/// scores -> e^(score - max), returning 1 / sum (see `scalar::softmax_exp`).
pub fn softmax_exp(scores: &mut [f32]) -> f32 {
    dispatch!(softmax_exp(scores))
}

/// Rotates the pairs of one head (see `scalar::rotate_pairs`).
pub fn rotate_pairs(head: &mut [f32], cos: &[f32], sin: &[f32], adjacent: bool) {
    assert!(cos.len() == sin.len() && 2 * cos.len() <= head.len(), "rotate_pairs: sizes disagree");
    dispatch!(rotate_pairs(head, cos, sin, adjacent))
}
