//! AVX2 twins of the quantized dot products in `scalar.rs`. Callers (quant/mod.rs) check that
//! both rows have the same number of blocks and that the CPU has AVX2, FMA and F16C.
//!
//! The integer products use `maddubs` (unsigned x signed bytes -> pairwise i16 sums) or VNNI's
//! `vpdpbusd`; signed weights are made unsigned by moving their sign onto the activation
//! (`_mm256_sign_epi8`), except in the packed Q8_0 kernels with VNNI, which bias the
//! activations by 128 instead (`Vnni::signed_dot`).

use super::blocks::*;
use super::scalar::{add_q4k_sums, add_tiled_block};
use super::{ActPack, SumOrder};
use crate::kernels::avx2::hsum;
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// An f16 scale widened with F16C, inline: the `half` crate's conversion checks CPU features
/// at run time on every call, which dominated these loops.
#[inline]
#[target_feature(enable = "f16c")]
unsafe fn h(x: half::f16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(x.to_bits() as i32)))
}

/// f16 fields `first` and `second` as one word, `first` in the low half (their memory order).
#[inline]
fn f16_pair(first: half::f16, second: half::f16) -> u32 {
    first.to_bits() as u32 | (second.to_bits() as u32) << 16
}

/// d_x * d_y in every lane, from the word (d_x, d_y): one conversion for both scales.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn scale_product(dx_dy: u32) -> __m256 {
    let s = _mm_cvtph_ps(_mm_cvtsi32_si128(dx_dy as i32));
    _mm256_broadcastss_ps(_mm_mul_ss(s, _mm_movehdup_ps(s)))
}

/// 16 packed bytes -> 32 nibbles: low nibbles in bytes 0..16, high nibbles in 16..32.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let packed = _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const __m128i));
    let both = _mm256_srlv_epi64(packed, _mm256_set_epi64x(4, 4, 0, 0));
    _mm256_and_si256(both, _mm256_set1_epi8(0xF))
}

/// Byte i is 0xFF where bit i of `bits` is set, else 0.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bit_mask_bytes(bits: u32) -> __m256i {
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0),
    );
    // Each byte keeps only its own bit clear in the mask, so it is all-ones iff that bit is set.
    let others = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(others, _mm256_set1_epi8(-1))
}

/// 8 lanes of pairwise sums of u8 x i8 products, as i32.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_u8_i8(x: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))
}

/// 8 lanes of pairwise sums of i8 x i8 products, as i32.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_i8(x: __m256i, y: __m256i) -> __m256i {
    dot_u8_i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load32(p: *const i8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// `scalar::dot_q4_0`'s order (llama.cpp's repacked Q4_0 GEMV and GEMM, as `dot_iq4_nl`).
///
/// # Safety
/// `w.len() == a.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let qx = _mm256_sub_epi8(nibbles(x.qs.as_ptr()), _mm256_set1_epi8(8));
        let sumi = hsum_i32(dot_i8_i8(qx, load32(y.qs.as_ptr())));
        sum = (h(x.d) * h(y.d)).mul_add(sumi as f32, sum);
    }
    sum
}

/// A kernel whose body (`$body::<D: ByteDot>`, generic over the row count R where the kernel
/// is) is compiled twice, with AVX2's byte dot product and with VNNI's, plus the function that
/// picks one at run time (`kernels::vnni_enabled()`).
macro_rules! vnni_variants {
    ($(#[$doc:meta])* fn $name:ident $(<const $r:ident: usize>)?, $avx2:ident, $vnni:ident = $body:ident($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        pub unsafe fn $name$(<const $r: usize>)?($($arg: $ty),*) -> $ret {
            if crate::kernels::vnni_enabled() {
                $vnni$(::<$r>)?($($arg),*)
            } else {
                $avx2$(::<$r>)?($($arg),*)
            }
        }

        /// # Safety
        #[doc = concat!("As `", stringify!($name), "`.")]
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $avx2$(<const $r: usize>)?($($arg: $ty),*) -> $ret {
            $body::<Maddubs $(, $r)?>($($arg),*)
        }

        /// # Safety
        #[doc = concat!("As `", stringify!($name), "`, and the CPU supports AVX-512 VNNI and VL.")]
        #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
        pub unsafe fn $vnni$(<const $r: usize>)?($($arg: $ty),*) -> $ret {
            $body::<Vnni $(, $r)?>($($arg),*)
        }
    };
}

/// How eight lanes of sums of four u8 x i8 products are formed: AVX2's `maddubs` + `madd`,
/// or VNNI's single `vpdpbusd`. The integer results are identical.
trait ByteDot {
    /// # Safety
    /// The CPU supports the instructions of the implementation.
    unsafe fn dot(x: __m256i, y: __m256i) -> __m256i;

    /// What `signed_dot` needs of a block of signed bytes x, worked out once for many y.
    type Signed: Copy;
    /// # Safety
    /// As `dot`.
    unsafe fn signed(x: __m256i) -> Self::Signed;
    /// Eight lanes of sums of four i8 x i8 products of x (as `signed` gave it) and y.
    ///
    /// # Safety
    /// As `dot`.
    unsafe fn signed_dot(x: Self::Signed, y: __m256i) -> __m256i;
}

struct Maddubs;
struct Vnni;

impl ByteDot for Maddubs {
    #[inline(always)]
    unsafe fn dot(x: __m256i, y: __m256i) -> __m256i {
        dot_u8_i8(x, y)
    }

    /// (|x|, x)
    type Signed = (__m256i, __m256i);
    #[inline(always)]
    unsafe fn signed(x: __m256i) -> Self::Signed {
        (_mm256_sign_epi8(x, x), x)
    }
    /// |x| times y with x's sign (as `dot_i8_i8`): `maddubs`' pair sums stay within i16.
    #[inline(always)]
    unsafe fn signed_dot((abs_x, x): Self::Signed, y: __m256i) -> __m256i {
        dot_u8_i8(abs_x, _mm256_sign_epi8(y, x))
    }
}

impl ByteDot for Vnni {
    #[inline(always)]
    unsafe fn dot(x: __m256i, y: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, y)
    }

    /// (x, -128 * each lane's sum of four x)
    type Signed = (__m256i, __m256i);
    #[inline(always)]
    unsafe fn signed(x: __m256i) -> Self::Signed {
        let sums_128 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(-128), x);
        (x, _mm256_sub_epi32(_mm256_setzero_si256(), sums_128))
    }
    /// y + 128 (its top bit flipped) as the unsigned side, and the 128 * x that adds taken
    /// back out by starting the sums at -128 * x: per y an exclusive-or instead of a sign
    /// instruction (eight-row Q8_0 kernel: 15.1 -> 12.8 cycles per block at 48 blocks a row,
    /// 16.4 -> 14.2 at 18). `maddubs` could not do this: its pair sums would saturate.
    #[inline(always)]
    unsafe fn signed_dot((x, minus_128x): Self::Signed, y: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(minus_128x, _mm256_xor_si256(y, _mm256_set1_epi8(-128)), x)
    }
}

vnni_variants! {
    /// # Safety
    /// `w.len() == a.len()`; AVX2, FMA and F16C available.
    fn dot_q4_1, dot_q4_1_avx2, dot_q4_1_vnni = dot_q4_1_with(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32
}

/// The body of both `dot_q4_1` variants, inlined into each with its target features.
#[inline(always)]
unsafe fn dot_q4_1_with<D: ByteDot>(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = _mm_setzero_ps(); // lane 1: the sum of m * s, block after block
    for (x, y) in w.iter().zip(a) {
        q4_1_block::<D>(x, y, load32(y.qs.as_ptr()), &mut acc, &mut mins);
    }
    hsum(acc) + _mm_cvtss_f32(_mm_movehdup_ps(mins))
}

/// One Q4_1 block into a row's running sums (`acc`, and lane 1 of `mins`), `qy` being the
/// partner block's bytes: the step `dot_q4_1` and `dot_w4_q4_1` share.
#[inline(always)]
unsafe fn q4_1_block<D: ByteDot>(x: &BlockQ4_1, y: &BlockQ8_1, qy: __m256i, acc: &mut __m256, mins: &mut __m128) {
    let products = scale_products(widen_dm(f16_pair(x.d, x.m)), y);
    *mins = _mm_add_ps(*mins, products);
    let p = _mm256_cvtepi32_ps(D::dot(nibbles(x.qs.as_ptr()), qy));
    *acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(products), p, *acc);
}

vnni_variants! {
    /// `dot_q4_1` of four weight rows with one activation row: four independent running sums,
    /// so each block's multiply-add need not wait for the previous one's. Each result is
    /// bit-identical to `dot_q4_1`'s.
    ///
    /// # Safety
    /// Every `w[r].len() == a.len()`; AVX2, FMA and F16C available.
    fn dot_w4_q4_1, dot_w4_q4_1_avx2, dot_w4_q4_1_vnni = dot_w4_q4_1_with(w: [&[BlockQ4_1]; 4], a: &[BlockQ8_1]) -> [f32; 4]
}

/// The body of both `dot_w4_q4_1` variants, inlined into each with its target features.
#[inline(always)]
unsafe fn dot_w4_q4_1_with<D: ByteDot>(w: [&[BlockQ4_1]; 4], a: &[BlockQ8_1]) -> [f32; 4] {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut mins = [_mm_setzero_ps(); 4]; // lane 1 of each: that row's sum of m * s
    for (i, y) in a.iter().enumerate() {
        let qy = load32(y.qs.as_ptr());
        for r in 0..4 {
            q4_1_block::<D>(w[r].get_unchecked(i), y, qy, &mut acc[r], &mut mins[r]);
        }
    }
    std::array::from_fn(|r| hsum(acc[r]) + _mm_cvtss_f32(_mm_movehdup_ps(mins[r])))
}

/// A weight block's (d, m) word widened: [d, m, 0, 0].
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn widen_dm(dm: u32) -> __m128 {
    _mm_cvtph_ps(_mm_cvtsi32_si128(dm as i32))
}

/// The scale products of a weight block with a min (Q4_1, Q5_1), given as `widen_dm`, and its
/// Q8_1 partner: [d_x * d_y, m_x * s_y, 0, 0], each rounded once as the scalar kernel does.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn scale_products(x_dm: __m128, y: &BlockQ8_1) -> __m128 {
    // y.d and y.s are adjacent (repr(C)): one 8-byte load gives [dy, sy, 0, 0].
    let y_ds = _mm_castsi128_ps(_mm_loadl_epi64(y as *const BlockQ8_1 as *const __m128i));
    _mm_mul_ps(x_dm, y_ds)
}

/// `scale_products` as (d_x * d_y in every lane, m_x * s_y in lane 0).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn min_scales(x_dm: __m128, y: &BlockQ8_1) -> (__m256, __m128) {
    let products = scale_products(x_dm, y);
    (_mm256_broadcastss_ps(products), _mm_movehdup_ps(products))
}

/// # Safety
/// `w.len() == a.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        let d = scale_product(f16_pair(x.d, y.d));
        let p = _mm256_cvtepi32_ps(dot_i8_i8(q5_0_values(x), load32(y.qs.as_ptr())));
        acc = _mm256_fmadd_ps(d, p, acc);
    }
    hsum(acc)
}

/// A Q5_0 block's 32 values q - 16 as i8: where the fifth bit is clear, the high nibble is set
/// (nibble - 16).
#[inline(always)]
unsafe fn q5_0_values(x: &BlockQ5_0) -> __m256i {
    let high = _mm256_andnot_si256(bit_mask_bytes(u32::from_le_bytes(x.qh)), _mm256_set1_epi8(0xF0u8 as i8));
    _mm256_or_si256(nibbles(x.qs.as_ptr()), high)
}

/// # Safety
/// `w.len() == a.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = _mm_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        let (d, m_s) = min_scales(widen_dm(f16_pair(x.d, x.m)), y);
        mins = _mm_add_ss(mins, m_s);
        let high = _mm256_and_si256(bit_mask_bytes(u32::from_le_bytes(x.qh)), _mm256_set1_epi8(0x10));
        let qx = _mm256_or_si256(nibbles(x.qs.as_ptr()), high);
        let p = _mm256_cvtepi32_ps(dot_u8_i8(qx, load32(y.qs.as_ptr())));
        acc = _mm256_fmadd_ps(d, p, acc);
    }
    hsum(acc) + _mm_cvtss_f32(mins)
}

vnni_variants! {
    /// # Safety
    /// `w.len() == a.len()`; AVX2, FMA and F16C available.
    fn dot_q8_0, dot_q8_0_avx2, dot_q8_0_vnni = dot_q8_0_with(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32
}

#[inline(always)]
unsafe fn dot_q8_0_with<D: ByteDot>(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        q8_0_block::<D>(x, y, load32(y.qs.as_ptr()), &mut acc);
    }
    hsum(acc)
}

/// One Q8_0 block into a row's running sum, `qy` being the partner block's bytes: the step
/// `dot_q8_0` and `dot_w4_q8_0` share.
#[inline(always)]
unsafe fn q8_0_block<D: ByteDot>(x: &BlockQ8_0, y: &BlockQ8_0, qy: __m256i, acc: &mut __m256) {
    let d = scale_product(f16_pair(x.d, y.d));
    let qx = load32(x.qs.as_ptr());
    // Signed x signed as unsigned |x| times y with x's sign (as `dot_i8_i8`).
    let p = _mm256_cvtepi32_ps(D::dot(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx)));
    *acc = _mm256_fmadd_ps(d, p, *acc);
}

vnni_variants! {
    /// `dot_q8_0` of four weight rows with one activation row (as `dot_w4_q4_1`); each result
    /// is bit-identical to `dot_q8_0`'s.
    ///
    /// # Safety
    /// Every `w[r].len() == a.len()`; AVX2, FMA and F16C available.
    fn dot_w4_q8_0, dot_w4_q8_0_avx2, dot_w4_q8_0_vnni = dot_w4_q8_0_with(w: [&[BlockQ8_0]; 4], a: &[BlockQ8_0]) -> [f32; 4]
}

/// The body of both `dot_w4_q8_0` variants, inlined into each with its target features.
#[inline(always)]
unsafe fn dot_w4_q8_0_with<D: ByteDot>(w: [&[BlockQ8_0]; 4], a: &[BlockQ8_0]) -> [f32; 4] {
    let mut acc = [_mm256_setzero_ps(); 4];
    for (i, y) in a.iter().enumerate() {
        let qy = load32(y.qs.as_ptr());
        for r in 0..4 {
            q8_0_block::<D>(w[r].get_unchecked(i), y, qy, &mut acc[r]);
        }
    }
    acc.map(|a| hsum(a))
}

/// A Q4_K or Q5_K block's eight sub-block (scale, min) pairs, unpacked.
#[inline]
fn k_scale_mins(scales: &[u8; 12]) -> [(u8, u8); 8] {
    std::array::from_fn(|j| q4k_scale_min(j, scales))
}

/// A Q4_K or Q5_K block's values in the 64-element chunk `chunk` (sub-blocks 2 * chunk and
/// 2 * chunk + 1), unsigned, one per byte: (the first sub-block's 32, the second's). `qh`:
/// Q5_K's high bits (bit j of byte l is bit 4 of sub-block j's element l), or None for Q4_K.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn k_chunk_values(qs: &[u8; 128], qh: Option<&[u8; 32]>, chunk: usize) -> (__m256i, __m256i) {
    let low4 = _mm256_set1_epi8(0xF);
    // 32 bytes: low nibbles are sub-block 2*chunk, high nibbles sub-block 2*chunk + 1.
    let bytes = _mm256_loadu_si256(qs.as_ptr().add(32 * chunk) as *const __m256i);
    let mut lo = _mm256_and_si256(bytes, low4);
    let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bytes), low4);
    if let Some(bits) = qh {
        let qh = _mm256_loadu_si256(bits.as_ptr() as *const __m256i);
        lo = _mm256_or_si256(lo, q5_high_bit(qh, 2 * chunk));
        hi = _mm256_or_si256(hi, q5_high_bit(qh, 2 * chunk + 1));
    }
    (lo, hi)
}

/// A chunk's values (`k_chunk_values`) against `y`, times their sub-block scales, as eight i32
/// lanes (lane k: elements 4k..4k+3 of each run of 32, as in llama.cpp's AVX2 kernels).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn k_chunk_lanes((lo, hi): (__m256i, __m256i), sm: &[(u8, u8); 8], y: &BlockQ8K, chunk: usize) -> __m256i {
    let (sc_lo, sc_hi) = (sm[2 * chunk].0, sm[2 * chunk + 1].0);
    let y_lo = load32(y.qs.as_ptr().add(64 * chunk));
    let y_hi = load32(y.qs.as_ptr().add(64 * chunk + 32));
    let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y_lo), _mm256_set1_epi16(sc_lo as i16));
    let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y_hi), _mm256_set1_epi16(sc_hi as i16));
    _mm256_add_epi32(p_lo, p_hi)
}

/// A chunk's sub-block mins times their activations' sums.
#[inline]
fn k_chunk_mins(sm: &[(u8, u8); 8], y: &BlockQ8K, chunk: usize) -> i32 {
    let (m_lo, m_hi) = (sm[2 * chunk].1, sm[2 * chunk + 1].1);
    m_lo as i32 * (y.bsums[4 * chunk] as i32 + y.bsums[4 * chunk + 1] as i32) + m_hi as i32 * (y.bsums[4 * chunk + 2] as i32 + y.bsums[4 * chunk + 3] as i32)
}

/// The totals of four vectors of i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum4_i32(v: [__m256i; 4]) -> [i32; 4] {
    // Per 128-bit half: pairs, then quads; then the halves added.
    let quads = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    let sums = _mm_add_epi32(_mm256_castsi256_si128(quads), _mm256_extracti128_si256::<1>(quads));
    std::mem::transmute::<__m128i, [i32; 4]>(sums)
}

/// Bit `bit` (0..8) of each byte of `qh`, moved to bit 4 (a Q5_K value's high bit).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q5_high_bit(qh: __m256i, bit: usize) -> __m256i {
    // A 16-bit shift, then one bit kept per byte: each byte's bit 0 is its own bit `bit`.
    let shifted = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(bit as i32));
    _mm256_slli_epi16::<4>(_mm256_and_si256(shifted, _mm256_set1_epi8(1)))
}

/// A Q4_K block's values against a Q8_K block: adds them to `acc` in `order` (the sums of
/// `scalar::q4k_chunk_sums`, per chunk for `Gemm4`, in total otherwise), `values` its
/// unpacked chunks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn add_q4k_block(acc: &mut (f32, f32), x: &BlockQ4K, (values, sm): &Q4kBlock, y: &BlockQ8K, order: SumOrder) {
    let lanes: [__m256i; 4] = std::array::from_fn(|c| k_chunk_lanes(values[c], sm, y, c));
    let mins: [i32; 4] = std::array::from_fn(|c| k_chunk_mins(sm, y, c));
    let (d, dmin) = (h(x.d), h(x.dmin));
    if order == SumOrder::Gemm4 {
        for (total, mins) in hsum4_i32(lanes).into_iter().zip(mins) {
            add_q4k_sums(acc, d, dmin, y.d, (total, mins));
        }
    } else {
        let total = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(lanes[0], lanes[1]), _mm256_add_epi32(lanes[2], lanes[3])));
        add_q4k_sums(acc, d, dmin, y.d, (total, mins.iter().sum()));
    }
}

/// A Q4_K block unpacked: its four chunks of values (`k_chunk_values`) and its sub-blocks'
/// (scale, min) pairs.
type Q4kBlock = ([(__m256i, __m256i); 4], [(u8, u8); 8]);

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q4k_unpack(x: &BlockQ4K) -> Q4kBlock {
    (std::array::from_fn(|c| k_chunk_values(&x.qs, None, c)), k_scale_mins(&x.scales))
}

/// `dot_q4_k` / `dot_gemm4_q4_k` (by `order`) of four activation rows, each weight block
/// unpacked once.
///
/// # Safety
/// Every `a[r].len() == w.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_x4_q4_k(w: &[BlockQ4K], a: [&[BlockQ8K]; 4], order: SumOrder) -> [f32; 4] {
    let mut acc = [(0.0, 0.0); 4];
    for (b, x) in w.iter().enumerate() {
        let block = q4k_unpack(x);
        for (acc, a) in acc.iter_mut().zip(a) {
            add_q4k_block(acc, x, &block, a.get_unchecked(b), order);
        }
    }
    acc.map(|(v, m)| v - m)
}

/// `scalar::dot_q4_k`'s order (llama.cpp's AVX2 GEMV over repacked Q4_K).
///
/// # Safety
/// `w.len() == a.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut acc = (0.0, 0.0);
    for (x, y) in w.iter().zip(a) {
        add_q4k_block(&mut acc, x, &q4k_unpack(x), y, SumOrder::Alone);
    }
    acc.0 - acc.1
}

/// `scalar::dot_gemm4_q4_k`'s order (llama.cpp's AVX2 GEMM over repacked Q4_K).
///
/// # Safety
/// `w.len() == a.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_gemm4_q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut acc = (0.0, 0.0);
    for (x, y) in w.iter().zip(a) {
        add_q4k_block(&mut acc, x, &q4k_unpack(x), y, SumOrder::Gemm4);
    }
    acc.0 - acc.1
}

/// `scalar::dot_q5_k`'s order (llama.cpp's AVX2 q5_K kernel): eight integer lanes per block,
/// scaled by d into eight float accumulators; the mins' integer sum times -dmin added, fused,
/// to one float sum; the accumulators' horizontal sum plus that sum at the end.
///
/// # Safety
/// `w.len() == a.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let (sumi, mins) = q5k_block_sums(x, y);
        summs = (-y.d * h(x.dmin)).mul_add(mins as f32, summs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(y.d * h(x.d)), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc) + summs
}

/// `scalar::dot_tiled_q5_k`'s order (llama.cpp's tiled matmul).
///
/// # Safety
/// `w.len() == a.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_tiled_q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    w.iter().zip(a).fold(0.0, |sum, (x, y)| {
        let (sumi, mins) = q5k_block_sums(x, y);
        add_tiled_block(sum, h(x.d), hsum_i32(sumi), Some((h(x.dmin), mins)), y.d)
    })
}

/// A Q5_K block's integer sums against `y`: the values' eight lanes and the mins' sum
/// (`k_chunk_sums` over the four chunks).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q5k_block_sums(x: &BlockQ5K, y: &BlockQ8K) -> (__m256i, i32) {
    let (mut sumi, mut mins, sm) = (_mm256_setzero_si256(), 0, k_scale_mins(&x.scales));
    for chunk in 0..4 {
        sumi = _mm256_add_epi32(sumi, k_chunk_lanes(k_chunk_values(&x.qs, Some(&x.qh), chunk), &sm, y, chunk));
        mins += k_chunk_mins(&sm, y, chunk);
    }
    (sumi, mins)
}

/// Bits SHIFT..SHIFT+2 of each byte of `qh`, moved to bits 4..6 (a Q6_K value's high part).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q6_high_bits<const SHIFT: i32>(qh: __m256i) -> __m256i {
    let two = _mm256_and_si256(_mm256_srli_epi16::<SHIFT>(qh), _mm256_set1_epi8(3));
    _mm256_slli_epi16::<4>(two)
}

/// `scalar::dot_q6_k`'s order: eight integer lanes per block (the unsigned values' products,
/// less the offset from the bsums), scaled by d into eight float accumulators (llama.cpp's
/// AVX2 q6_K kernel).
///
/// # Safety
/// `w.len() == a.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    lanes_dot(w, a, |x| x.d, |x, y| q6k_lanes(&q6k_unpack(x), y))
}

/// `scalar::dot_tiled_q6_k`'s order (llama.cpp's tiled matmul).
///
/// # Safety
/// `w.len() == a.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_tiled_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    lanes_tiled(w, a, |x| x.d, |x, y| q6k_lanes(&q6k_unpack(x), y))
}

/// llama.cpp's AVX2 vec_dot order for the K-quant and IQ4_XS blocks without mins: each
/// block's eight integer lanes (`lanes(x, y)`) times d_x * d_y (`d(x)` the block's f16 scale)
/// added, fused, to eight float accumulators; their horizontal sum at the end.
#[inline(always)]
unsafe fn lanes_dot<B>(w: &[B], a: &[BlockQ8K], d: impl Fn(&B) -> half::f16, lanes: impl Fn(&B, &BlockQ8K) -> __m256i) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h(d(x)) * y.d), _mm256_cvtepi32_ps(lanes(x, y)), acc);
    }
    hsum(acc)
}

/// The same blocks in llama.cpp's tiled order (`scalar::add_tiled_block`): each block's lanes'
/// exact total.
#[inline(always)]
unsafe fn lanes_tiled<B>(w: &[B], a: &[BlockQ8K], d: impl Fn(&B) -> half::f16, lanes: impl Fn(&B, &BlockQ8K) -> __m256i) -> f32 {
    w.iter().zip(a).fold(0.0, |sum, (x, y)| add_tiled_block(sum, h(d(x)), hsum_i32(lanes(x, y)), None, y.d))
}

/// `dot_q6_k` / `dot_tiled_q6_k` (by `order`) of four activation rows, each weight block
/// unpacked once.
///
/// # Safety
/// Every `a[r].len() == w.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_x4_q6_k(w: &[BlockQ6K], a: [&[BlockQ8K]; 4], order: SumOrder) -> [f32; 4] {
    let (mut lanes_acc, mut sums) = ([_mm256_setzero_ps(); 4], [0.0f32; 4]);
    for (b, x) in w.iter().enumerate() {
        let block = q6k_unpack(x);
        for r in 0..4 {
            let y = a[r].get_unchecked(b);
            let lanes = q6k_lanes(&block, y);
            if order == SumOrder::Tiled {
                sums[r] = add_tiled_block(sums[r], h(x.d), hsum_i32(lanes), None, y.d);
            } else {
                lanes_acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(y.d * h(x.d)), _mm256_cvtepi32_ps(lanes), lanes_acc[r]);
            }
        }
    }
    if order == SumOrder::Tiled {
        sums
    } else {
        lanes_acc.map(|acc| hsum(acc))
    }
}

/// A Q6_K block unpacked: its eight runs of 32 values, unsigned (q + 32 in 0..64), one per
/// byte; each run's two group scales as i16 (low 128 bits, high 128 bits); the 16 scales as
/// i16.
struct Q6kBlock {
    runs: [__m256i; 8],
    run_scales: [__m256i; 8],
    scales16: __m256i,
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q6k_unpack(x: &BlockQ6K) -> Q6kBlock {
    let run_scales = std::array::from_fn(|r| _mm256_set_m128i(_mm_set1_epi16(x.scales[2 * r + 1] as i16), _mm_set1_epi16(x.scales[2 * r] as i16)));
    let scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.scales.as_ptr() as *const __m128i));
    Q6kBlock { runs: q6k_values(x), run_scales, scales16 }
}

/// A Q6_K block's values, unsigned (q + 32 in 0..64), one per byte: its eight runs of 32.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q6k_values(x: &BlockQ6K) -> [__m256i; 8] {
    let low4 = _mm256_set1_epi8(0xF);
    let mut runs = [_mm256_setzero_si256(); 8];
    for half in 0..2 {
        let ql0 = _mm256_loadu_si256(x.ql.as_ptr().add(64 * half) as *const __m256i);
        let ql1 = _mm256_loadu_si256(x.ql.as_ptr().add(64 * half + 32) as *const __m256i);
        let qh = _mm256_loadu_si256(x.qh.as_ptr().add(32 * half) as *const __m256i);
        runs[4 * half] = _mm256_or_si256(_mm256_and_si256(ql0, low4), q6_high_bits::<0>(qh));
        runs[4 * half + 1] = _mm256_or_si256(_mm256_and_si256(ql1, low4), q6_high_bits::<2>(qh));
        runs[4 * half + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low4), q6_high_bits::<4>(qh));
        runs[4 * half + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low4), q6_high_bits::<6>(qh));
    }
    runs
}

/// A Q6_K block's eight integer lanes against `y` (the block from `q6k_unpack`), as
/// `scalar::dot_q6_k` splits them.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q6k_lanes(block: &Q6kBlock, y: &BlockQ8K) -> __m256i {
    // Lane k: 32 * (scale * bsum) of groups 2k and 2k + 1.
    let bsums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
    let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bsums, block.scales16));
    let mut sumi = _mm256_setzero_si256();
    for (run, (&q, &scales)) in block.runs.iter().zip(&block.run_scales).enumerate() {
        let a8 = load32(y.qs.as_ptr().add(32 * run));
        // (q + 32) * a, pairwise: at most 2 * 63 * 127, exact in i16.
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(q, a8), scales));
    }
    _mm256_sub_epi32(sumi, offset)
}

/// Pairs of i16 products of a run of 32 values, times their groups' scales: `sc_lo` for
/// elements 0..16 (the low 128 bits), `sc_hi` for 16..32, summed into eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn times_group_scales(pairs: __m256i, sc_lo: i16, sc_hi: i16) -> __m256i {
    _mm256_madd_epi16(pairs, _mm256_set_m128i(_mm_set1_epi16(sc_hi), _mm_set1_epi16(sc_lo)))
}

/// 16 per-group i16 weights times the activations' sums per 16 (`bsums`), pairwise into eight
/// i32 lanes (as `scalar::bsum_lanes`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bsum_lanes(weights: __m256i, y: &BlockQ8K) -> __m256i {
    _mm256_madd_epi16(weights, _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i))
}

/// Bits 2r..2r + 2 of each byte of `bits` (the 2-bit values of run r of a Q2_K or Q3_K half).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn two_bits(bits: __m256i, r: usize) -> __m256i {
    _mm256_and_si256(_mm256_srl_epi16(bits, _mm_cvtsi32_si128(2 * r as i32)), _mm256_set1_epi8(3))
}

/// `scalar::dot_q2_k`'s order (llama.cpp's AVX2 q2_K kernel): per block the mins' eight
/// integer lanes times -dmin, then the values' eight lanes times d, each fused into the float
/// accumulator; its horizontal sum at the end.
///
/// # Safety
/// `w.len() == a.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q2_k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        let (mins, sumi) = q2k_block_lanes(x, y);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(-y.d * h(x.dmin)), _mm256_cvtepi32_ps(mins), acc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(y.d * h(x.d)), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc)
}

/// `scalar::dot_tiled_q2_k`'s order (llama.cpp's tiled matmul).
///
/// # Safety
/// `w.len() == a.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_tiled_q2_k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    w.iter().zip(a).fold(0.0, |sum, (x, y)| {
        let (mins, sumi) = q2k_block_lanes(x, y);
        add_tiled_block(sum, h(x.d), hsum_i32(sumi), Some((h(x.dmin), hsum_i32(mins))), y.d)
    })
}

/// A Q2_K block's integer lanes against `y`, as `scalar::dot_q2_k` splits them: (the mins'
/// lanes, the values' lanes).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q2k_block_lanes(x: &BlockQ2K, y: &BlockQ8K) -> (__m256i, __m256i) {
    let packed = _mm_loadu_si128(x.scales.as_ptr() as *const __m128i);
    let mins = _mm256_cvtepu8_epi16(_mm_srli_epi16::<4>(_mm_and_si128(packed, _mm_set1_epi8(0xF0u8 as i8))));
    let mut sumi = _mm256_setzero_si256();
    for half in 0..2 {
        let bits = _mm256_loadu_si256(x.qs.as_ptr().add(32 * half) as *const __m256i);
        for r in 0..4 {
            let start = 128 * half + 32 * r;
            let g = start / 16;
            let pairs = _mm256_maddubs_epi16(two_bits(bits, r), load32(y.qs.as_ptr().add(start)));
            let (sc_lo, sc_hi) = (x.scales[g] & 0xF, x.scales[g + 1] & 0xF);
            sumi = _mm256_add_epi32(sumi, times_group_scales(pairs, sc_lo as i16, sc_hi as i16));
        }
    }
    (bsum_lanes(mins, y), sumi)
}

/// `scalar::dot_q3_k`'s order (llama.cpp's AVX2 q3_K kernel): eight integer lanes per block,
/// scaled by d into eight float accumulators, their horizontal sum at the end.
///
/// # Safety
/// `w.len() == a.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q3_k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    lanes_dot(w, a, |x| x.d, |x, y| q3k_block_lanes(x, y))
}

/// `scalar::dot_tiled_q3_k`'s order (llama.cpp's tiled matmul).
///
/// # Safety
/// `w.len() == a.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_tiled_q3_k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    lanes_tiled(w, a, |x| x.d, |x, y| q3k_block_lanes(x, y))
}

/// A Q3_K block's eight integer lanes against `y`, as `scalar::dot_q3_k` splits them.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q3k_block_lanes(x: &BlockQ3K, y: &BlockQ8K) -> __m256i {
    let one = _mm256_set1_epi8(1);
    let scales = q3k_scales(&x.scales);
    let hmask = _mm256_loadu_si256(x.hmask.as_ptr() as *const __m256i);
    let mut sumi = _mm256_setzero_si256();
    for half in 0..2 {
        let bits = _mm256_loadu_si256(x.qs.as_ptr().add(32 * half) as *const __m256i);
        for r in 0..4 {
            let start = 128 * half + 32 * r;
            let g = start / 16;
            // 4 where the value's high bit (bit 4 * half + r of its hmask byte) is clear.
            let high = _mm256_and_si256(_mm256_srl_epi16(hmask, _mm_cvtsi32_si128((4 * half + r) as i32)), one);
            let offset = _mm256_slli_epi16::<2>(_mm256_xor_si256(high, one));
            let a8 = load32(y.qs.as_ptr().add(start));
            // low * a - offset * a, pairwise: exact in i16.
            let pairs = _mm256_sub_epi16(_mm256_maddubs_epi16(two_bits(bits, r), a8), _mm256_maddubs_epi16(offset, a8));
            sumi = _mm256_add_epi32(sumi, times_group_scales(pairs, scales[g] as i16, scales[g + 1] as i16));
        }
    }
    sumi
}

/// 16 bytes of IQ4 codes -> their 32 values as i8, in element order.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn iq4_values(codes: *const u8) -> __m256i {
    let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4NL_VALUES.as_ptr() as *const __m128i));
    _mm256_shuffle_epi8(table, nibbles(codes))
}

/// Pairs of i8 x i8 products as i16 (|x| times y with x's sign; |x| <= 127 and |y| <= 127
/// keep each pair within i16).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn signed_pairs(x: __m256i, y: __m256i) -> __m256i {
    _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// `scalar::dot_iq4_xs`'s order (llama.cpp's AVX2 iq4_xs kernel): eight integer lanes per
/// block, scaled by d into eight float accumulators, their horizontal sum at the end.
///
/// # Safety
/// `w.len() == a.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_iq4_xs(w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32 {
    lanes_dot(w, a, |x| x.d, |x, y| iq4xs_block_lanes(x, y))
}

/// `scalar::dot_tiled_iq4_xs`'s order (llama.cpp's tiled matmul).
///
/// # Safety
/// `w.len() == a.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_tiled_iq4_xs(w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32 {
    lanes_tiled(w, a, |x| x.d, |x, y| iq4xs_block_lanes(x, y))
}

/// An IQ4_XS block's eight integer lanes against `y`, as `scalar::dot_iq4_xs` splits them.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn iq4xs_block_lanes(x: &BlockIQ4XS, y: &BlockQ8K) -> __m256i {
    let mut sumi = _mm256_setzero_si256();
    for sub in 0..8 {
        let pairs = signed_pairs(iq4_values(x.qs.as_ptr().add(16 * sub)), load32(y.qs.as_ptr().add(32 * sub)));
        let scale = iq4xs_scale(sub, x) as i16;
        sumi = _mm256_add_epi32(sumi, times_group_scales(pairs, scale, scale));
    }
    sumi
}

/// `scalar::dot_iq4_nl`'s order (llama.cpp's repacked IQ4_NL GEMV and GEMM): one running
/// float sum, each block's integer sum times d_w * d_a fused into it.
///
/// # Safety
/// `w.len() == a.len()`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_iq4_nl(w: &[BlockIQ4NL], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi = hsum_i32(dot_i8_i8(iq4_values(x.qs.as_ptr()), load32(y.qs.as_ptr())));
        sum = (h(x.d) * h(y.d)).mul_add(sumi as f32, sum);
    }
    sum
}

/// Blocks per pass of the packed kernels: a pass first writes the scale products of its
/// blocks to a table, then reads them back with broadcasting loads.
const PACKED_PASS: usize = 32;

/// d_x * d_y for every row of every block of a pass ([PACKED_PASS blocks, R rows]), each
/// block's row written before it is read. It starts uninitialised: zeroing its 1 KB on every
/// call is measurable on rows of 18 blocks (eight rows: 14.0 -> 13.5 cycles per block).
struct ScaleTable<const R: usize>(MaybeUninit<[[f32; R]; PACKED_PASS]>);

impl<const R: usize> ScaleTable<R> {
    #[inline(always)]
    fn new() -> Self {
        Self(MaybeUninit::uninit())
    }

    /// Writes lanes 0..R of `v` as block j's row, four lanes per store: the kernels soon read
    /// single lanes back, which one 32-byte store forwards to badly (eight rows of 18 blocks:
    /// 21 cycles per block against 14).
    ///
    /// # Safety
    /// j < PACKED_PASS, R = 4 or 8.
    #[inline(always)]
    unsafe fn write(&mut self, j: usize, v: __m256) {
        let row = (self.0.as_mut_ptr() as *mut f32).add(j * R);
        _mm_storeu_ps(row, _mm256_castps256_ps128(v));
        if R == 8 {
            _mm_storeu_ps(row.add(4), _mm256_extractf128_ps::<1>(v));
        }
    }

    /// The table as the multiply-adds must read it: from memory. Kept in registers, the
    /// compiler turns each row's broadcast into shuffles that compete with the dot products
    /// for the vector ports (measured 15.6 -> 12.6 cycles per block of eight rows).
    #[inline(always)]
    fn read_back(&self) -> WrittenScales<R> {
        WrittenScales(std::hint::black_box(self.0.as_ptr() as *const f32))
    }
}

/// A scale table's rows once written, read by broadcasting loads.
#[derive(Clone, Copy)]
struct WrittenScales<const R: usize>(*const f32);

impl<const R: usize> WrittenScales<R> {
    /// Lane k of block j's row in every lane.
    ///
    /// # Safety
    /// k < R, and block j's row was written in this pass.
    #[inline(always)]
    unsafe fn broadcast(self, j: usize, k: usize) -> __m256 {
        _mm256_broadcast_ss(&*self.0.add(j * R + k))
    }
}

/// `x` times each of a pack's per-row values (`v`: [R], R = 4 or 8), each product rounded once,
/// in lanes 0..R (lanes R.. zero). One multiply for all rows (eight rows: 12.9 -> 12.1 cycles
/// per block against two of four lanes); four rows stay at 128 bits, measured faster there.
/// Written with vector operations: as a plain loop over the rows, the compiler vectorised it
/// across blocks instead, gathering scales lane by lane (the eight-row Q8_0 kernel ran ~60%
/// slower).
#[inline(always)]
unsafe fn times_rows<const R: usize>(x: __m128, v: &[f32; R]) -> __m256 {
    if R == 8 {
        _mm256_mul_ps(_mm256_broadcastss_ps(x), _mm256_loadu_ps(v.as_ptr()))
    } else {
        _mm256_zextps128_ps256(_mm_mul_ps(_mm_broadcastss_ps(x), _mm_loadu_ps(v.as_ptr())))
    }
}

/// `hsum` of four accumulators at once, [hsum(a), hsum(b), hsum(c), hsum(d)]: the same adds
/// of the same lanes, transposed so that each step serves all four.
#[inline(always)]
unsafe fn hsum4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
    // [a0+a4 .. a3+a7 | b0+b4 .. b3+b7], and the same for c, d
    let ab = _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(a, b), _mm256_permute2f128_ps::<0x31>(a, b));
    let cd = _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(c, d), _mm256_permute2f128_ps::<0x31>(c, d));
    // [a's (0+2), (1+3), c's (0+2), (1+3) | the same for b, d]
    let pairs = _mm256_add_ps(_mm256_shuffle_ps::<0b01_00_01_00>(ab, cd), _mm256_shuffle_ps::<0b11_10_11_10>(ab, cd));
    // [a, c, a, c | b, d, b, d]
    let ones = _mm256_add_ps(_mm256_shuffle_ps::<0b10_00_10_00>(pairs, pairs), _mm256_shuffle_ps::<0b11_01_11_01>(pairs, pairs));
    _mm_unpacklo_ps(_mm256_castps256_ps128(ones), _mm256_extractf128_ps::<1>(ones))
}

/// Lanes 4c..4c + 4 of `v`, c = 0 or 1.
#[inline(always)]
unsafe fn four_lanes(v: __m256, c: usize) -> __m128 {
    if c == 0 {
        _mm256_castps256_ps128(v)
    } else {
        _mm256_extractf128_ps::<1>(v)
    }
}

/// The R row sums of a packed kernel, `hsum` of each accumulator, four rows at a time, each
/// four passed through `finish(c, sums)` for rows c * 4.., and stored four lanes per store:
/// the caller reads single lanes back, which one 32-byte store forwards to badly.
#[inline(always)]
unsafe fn row_sums<const R: usize>(acc: &[__m256; R], finish: impl Fn(usize, __m128) -> __m128) -> [f32; R] {
    let mut out = [0.0f32; R];
    for c in 0..R / 4 {
        let sums = hsum4(acc[4 * c], acc[4 * c + 1], acc[4 * c + 2], acc[4 * c + 3]);
        _mm_storeu_ps(out.as_mut_ptr().add(4 * c), finish(c, sums));
    }
    out
}

/// Row k's 32 quants in `pack`, from their 32-byte boundary.
#[inline(always)]
unsafe fn pack_quants<const R: usize>(pack: &ActPack<R>, k: usize) -> __m256i {
    _mm256_load_si256(pack.qs.get_unchecked(k).as_ptr() as *const __m256i)
}

vnni_variants! {
    /// `dot_q4_1` of one weight row with the R activation rows packed in `a`: each block is
    /// unpacked once, and its scale products for all R rows are vector multiplies. Every
    /// row's result is bit-identical to `dot_q4_1`'s.
    ///
    /// # Safety
    /// `a.len() == w.len()`; AVX2, FMA and F16C available.
    fn dot_packed_q4_1<const R: usize>, dot_packed_q4_1_avx2, dot_packed_q4_1_vnni = dot_packed_q4_1_with(w: &[BlockQ4_1], a: &[ActPack<R>]) -> [f32; R]
}

/// The body of both `dot_packed_q4_1` variants, inlined into each with its target features.
#[inline(always)]
unsafe fn dot_packed_q4_1_with<D: ByteDot, const R: usize>(w: &[BlockQ4_1], a: &[ActPack<R>]) -> [f32; R] {
    let mut mins = _mm256_setzero_ps(); // lane k: row k's sum of m * s, block after block
    let scales = |x: &BlockQ4_1, pack: &ActPack<R>| {
        // Both scales from one 32-bit load: widening a lone f16 compiles to an insert into
        // whatever register is free, which can chain each block onto the previous one.
        let x_dm = widen_dm(f16_pair(x.d, x.m));
        // Separate multiply and add: each product rounded once, as in `dot_q4_1`.
        mins = _mm256_add_ps(mins, times_rows(_mm_movehdup_ps(x_dm), &pack.s));
        times_rows(x_dm, &pack.d)
    };
    let acc = packed_passes(w, a, scales, |x| nibbles(x.qs.as_ptr()), |qx, qy| D::dot(qx, qy));
    row_sums(&acc, |c, sums| _mm_add_ps(sums, four_lanes(mins, c)))
}

/// A packed kernel's passes over w and a, PACKED_PASS blocks at a time: first each block's
/// scale products for the R rows, `scales(x, pack)`, into the table; then, per block, the
/// weights unpacked once (`unpack(x)`) and each row's eight lanes of integer sums
/// `dot(unpacked, row k's quants)` multiplied by that row's scale product and added into its
/// accumulator, in block order. Returns the R accumulators.
#[inline(always)]
unsafe fn packed_passes<B, X: Copy, const R: usize>(
    w: &[B],
    a: &[ActPack<R>],
    mut scales: impl FnMut(&B, &ActPack<R>) -> __m256,
    unpack: impl Fn(&B) -> X,
    dot: impl Fn(X, __m256i) -> __m256i,
) -> [__m256; R] {
    const { assert!(R == 4 || R == 8) };
    let mut acc = [_mm256_setzero_ps(); R];
    let mut table = ScaleTable::<R>::new();
    for start in (0..w.len()).step_by(PACKED_PASS) {
        let blocks = start..(start + PACKED_PASS).min(w.len());
        for (j, i) in blocks.clone().enumerate() {
            table.write(j, scales(w.get_unchecked(i), a.get_unchecked(i)));
        }
        let d = table.read_back();
        for (j, i) in blocks.enumerate() {
            let (x, pack) = (unpack(w.get_unchecked(i)), a.get_unchecked(i));
            for (k, acc) in acc.iter_mut().enumerate() {
                let p = _mm256_cvtepi32_ps(dot(x, pack_quants(pack, k)));
                *acc = _mm256_fmadd_ps(d.broadcast(j, k), p, *acc);
            }
        }
    }
    acc
}

vnni_variants! {
    /// `dot_q8_0` of one weight row with the R activation rows packed in `a` (as
    /// `dot_packed_q4_1`); bit-identical to `dot_q8_0` per row.
    ///
    /// # Safety
    /// `a.len() == w.len()`; AVX2, FMA and F16C available.
    fn dot_packed_q8_0<const R: usize>, dot_packed_q8_0_avx2, dot_packed_q8_0_vnni = dot_packed_q8_0_with(w: &[BlockQ8_0], a: &[ActPack<R>]) -> [f32; R]
}

/// The body of both `dot_packed_q8_0` variants, inlined into each with its target features.
#[inline(always)]
unsafe fn dot_packed_q8_0_with<D: ByteDot, const R: usize>(w: &[BlockQ8_0], a: &[ActPack<R>]) -> [f32; R] {
    // A 32-bit load for the one scale, as in `dot_packed_q4_1`.
    let scales = |x: &BlockQ8_0, pack: &ActPack<R>| times_rows(widen_dm(f16_pair(x.d, x.d)), &pack.d);
    let acc = packed_passes(w, a, scales, |x| D::signed(load32(x.qs.as_ptr())), |x, y| D::signed_dot(x, y));
    row_sums(&acc, |_, sums| sums)
}

vnni_variants! {
    /// `dot_q5_0` of one weight row with the R activation rows packed in `a` (as
    /// `dot_packed_q8_0`); bit-identical to `dot_q5_0` per row.
    ///
    /// # Safety
    /// `a.len() == w.len()`; AVX2, FMA and F16C available.
    fn dot_packed_q5_0<const R: usize>, dot_packed_q5_0_avx2, dot_packed_q5_0_vnni = dot_packed_q5_0_with(w: &[BlockQ5_0], a: &[ActPack<R>]) -> [f32; R]
}

/// The body of both `dot_packed_q5_0` variants, inlined into each with its target features.
#[inline(always)]
unsafe fn dot_packed_q5_0_with<D: ByteDot, const R: usize>(w: &[BlockQ5_0], a: &[ActPack<R>]) -> [f32; R] {
    let scales = |x: &BlockQ5_0, pack: &ActPack<R>| times_rows(widen_dm(f16_pair(x.d, x.d)), &pack.d);
    let acc = packed_passes(w, a, scales, |x| D::signed(q5_0_values(x)), |x, y| D::signed_dot(x, y));
    row_sums(&acc, |_, sums| sums)
}

// ---- activation quantization: the scalar kernels' results, eight lanes at a time ----

/// Round-to-nearest-even f32 -> f16, as `half::f16::from_f32` (and ggml) round.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn to_f16(x: f32) -> half::f16 {
    half::f16::from_bits(_mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x))) as u16)
}

/// 32 activations as four vectors, and the largest of their magnitudes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_32(x: &[f32; 32]) -> ([__m256; 4], f32) {
    let v: [__m256; 4] = std::array::from_fn(|k| _mm256_loadu_ps(x.as_ptr().add(8 * k)));
    let sign = _mm256_set1_ps(-0.0);
    let abs = v.map(|v| _mm256_andnot_ps(sign, v));
    let m = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    (v, _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2))))
}

/// q = round_half_even(v * scale) into `qs`, and as four vectors of eight i32 (for sums).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn round_32(v: [__m256; 4], scale: f32, qs: &mut [i8]) -> [__m256i; 4] {
    let scale = _mm256_set1_ps(scale);
    let q = v.map(|v| _mm256_cvtps_epi32(_mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(v, scale))));
    // packs interleave 128-bit halves; the permute puts the 32 bytes back in order.
    let bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    let ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(qs.as_mut_ptr() as *mut __m256i, ordered);
    q
}

/// One block of 32 activations: d = amax / 127, q = round_half_even(x * 127 / amax), and the
/// q as four vectors of eight i32 (for sums).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_32(x: &[f32; 32], qs: &mut [i8; 32]) -> (f32, [__m256i; 4]) {
    let (v, amax) = load_32(x);
    let q = round_32(v, if amax != 0.0 { 127.0 / amax } else { 0.0 }, qs);
    (amax / 127.0, q)
}

/// `scalar::quantize_q8_k`, bit for bit on finite input: iscale = -127 / (the first value of
/// largest magnitude), q = round_half_even(iscale * x), d = 1 / iscale, and the sums per 16.
///
/// # Safety
/// `x.len() == out.len() * 256`; AVX2 available.
#[target_feature(enable = "avx2")]
pub unsafe fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    for (xb, b) in x.chunks_exact(256).zip(out) {
        let runs: [([__m256; 4], f32); 8] = std::array::from_fn(|r| load_32(xb[32 * r..32 * r + 32].try_into().expect("32 values")));
        let amax = runs.iter().fold(0.0f32, |m, run| if run.1 > m { run.1 } else { m });
        *b = BlockQ8K { d: 0.0, qs: [0; 256], bsums: [0; 16] };
        let Some(max) = xb.iter().copied().find(|v| amax > 0.0 && v.abs() == amax) else { continue };
        let iscale = -127.0 / max;
        for (r, (v, _)) in runs.into_iter().enumerate() {
            let q = round_32(v, iscale, &mut b.qs[32 * r..32 * r + 32]);
            b.bsums[2 * r] = hsum_i32(_mm256_add_epi32(q[0], q[1])) as i16;
            b.bsums[2 * r + 1] = hsum_i32(_mm256_add_epi32(q[2], q[3])) as i16;
        }
        b.d = 1.0 / iscale;
    }
}

/// # Safety
/// `x.len() == out.len() * 32`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    for (xb, b) in x.chunks_exact(32).zip(out) {
        let (d, _) = quantize_32(xb.try_into().expect("32 values"), &mut b.qs);
        b.d = to_f16(d);
    }
}

/// # Safety
/// `x.len() == out.len() * 32`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    for (xb, b) in x.chunks_exact(32).zip(out) {
        let (d, q) = quantize_32(xb.try_into().expect("32 values"), &mut b.qs);
        let sum = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
        b.d = to_f16(d).to_f32();
        b.s = to_f16(d * sum as f32).to_f32();
    }
}
