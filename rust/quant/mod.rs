//! Block-quantized weights in ggml's formats.
//!
//! Weights stay in their blocks; a matmul quantizes each activation row once into the weight
//! type's partner format (`QuantBlock::Act`, as llama.cpp pairs them) and takes integer dot
//! products block by block. Each dot product has a scalar reference and an AVX2 twin.

pub mod blocks;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod avx2;

use crate::kernels::simd_enabled;
use blocks::*;
use bytemuck::{Pod, Zeroable};

/// A quantized activation block type.
pub trait ActBlock: Pod + Zeroable + Send + Sync {
    /// Elements per block.
    const QK: usize;
    /// x.len() == out.len() * QK.
    fn quantize(x: &[f32], out: &mut [Self]);
    /// (d, s) as f32: the block's scale, and d * sum(q) where the type keeps it (else 0).
    fn scales(&self) -> (f32, f32);
}

/// Eight tokens' activation scales at one block position, side by side (token k in lane k),
/// so that eight-token kernels read them as vectors. Built once per matmul from the blocks.
#[repr(C)]
#[derive(Clone, Copy, Default, Pod, Zeroable)]
pub struct Scales8 {
    pub d: [f32; 8],
    pub s: [f32; 8],
}

/// A quantized weight block type.
pub trait QuantBlock: Pod + Send + Sync {
    /// Elements per block.
    const QK: usize;
    /// The activation format its dot product takes.
    type Act: ActBlock;
    /// out.len() == blocks.len() * QK.
    fn dequantize(blocks: &[Self], out: &mut [f32]);
    /// sum over the row of w * a, for rows of equal block count.
    fn dot(w: &[Self], a: &[Self::Act]) -> f32;

    /// `dot` of four weight rows with one activation row (equal results); types with a
    /// four-weight-row kernel keep the four running sums independent.
    fn dot_w4(w: [&[Self]; 4], a: &[Self::Act]) -> [f32; 4] {
        w.map(|row| Self::dot(row, a))
    }

    /// `dot` of one weight row with four activation rows (equal results); types with a
    /// four-row kernel unpack each weight block once for all four.
    fn dot4(w: &[Self], a: [&[Self::Act]; 4]) -> [f32; 4] {
        a.map(|row| Self::dot(w, row))
    }

    /// Whether `dot8` has its own kernel; matmuls lay out `Scales8` and call `dot8` only then.
    const EIGHT_ROW_KERNEL: bool = false;

    /// `dot` of one weight row with eight activation rows (equal results), `scales` holding
    /// their scales side by side (one per block); types with an eight-row kernel unpack each
    /// weight block once for all eight and scale them as vectors.
    fn dot8(w: &[Self], a: [&[Self::Act]; 8], scales: &[Scales8]) -> [f32; 8] {
        let _ = scales;
        let (low, high) = (Self::dot4(w, [a[0], a[1], a[2], a[3]]), Self::dot4(w, [a[4], a[5], a[6], a[7]]));
        std::array::from_fn(|k| if k < 4 { low[k] } else { high[k - 4] })
    }
}

/// `impl ActBlock`: the block's (d, s) as an expression of `$b`, the scalar quantizer, and
/// its AVX2 twin where there is one.
macro_rules! act_block {
    ($block:ty, $qk:expr, |$b:ident| $scales:expr, $quantize:ident $(, avx2: $simd:ident)?) => {
        impl ActBlock for $block {
            const QK: usize = $qk;
            fn quantize(x: &[f32], out: &mut [Self]) {
                assert_eq!(x.len(), out.len() * $qk, "quantize: length mismatch");
                $(
                #[cfg(target_arch = "x86_64")]
                if simd_enabled() {
                    // SAFETY: lengths checked above; AVX2/FMA/F16C were detected.
                    return unsafe { avx2::$simd(x, out) };
                }
                )?
                scalar::$quantize(x, out)
            }
            #[inline]
            fn scales(&self) -> (f32, f32) {
                let $b = self;
                $scales
            }
        }
    };
}

act_block!(BlockQ8_0, 32, |b| (b.d.to_f32(), 0.0), quantize_q8_0, avx2: quantize_q8_0);
act_block!(BlockQ8_1, 32, |b| (b.d, b.s), quantize_q8_1, avx2: quantize_q8_1);
act_block!(BlockQ8K, 256, |b| (b.d, 0.0), quantize_q8_k);

/// `impl QuantBlock` from the scalar and AVX2 kernels of the same names; `dot_w4` / `dot4` /
/// `dot8` name the type's multi-row kernels where it has them (else the trait's defaults).
macro_rules! quant_block {
    ($block:ty, $qk:expr, $act:ty, $dequantize:ident, $dot:ident $(, dot_w4: $dot_w4:ident)? $(, dot4: $dot4:ident)? $(, dot8: $dot8:ident)?) => {
        impl QuantBlock for $block {
            const QK: usize = $qk;
            type Act = $act;
            fn dequantize(blocks: &[Self], out: &mut [f32]) {
                assert_eq!(out.len(), blocks.len() * $qk, "dequantize: length mismatch");
                scalar::$dequantize(blocks, out)
            }
            #[inline]
            fn dot(w: &[Self], a: &[$act]) -> f32 {
                assert_eq!(w.len(), a.len(), "quantized dot: block count mismatch");
                #[cfg(target_arch = "x86_64")]
                if simd_enabled() {
                    // SAFETY: equal block counts (checked above); AVX2/FMA/F16C were detected.
                    return unsafe { avx2::$dot(w, a) };
                }
                scalar::$dot(w, a)
            }
            $(
            #[inline]
            fn dot_w4(w: [&[Self]; 4], a: &[$act]) -> [f32; 4] {
                assert!(w.iter().all(|row| row.len() == a.len()), "quantized dot: block count mismatch");
                #[cfg(target_arch = "x86_64")]
                if simd_enabled() {
                    // SAFETY: equal block counts (checked above); AVX2/FMA/F16C were detected.
                    return unsafe { avx2::$dot_w4(w, a) };
                }
                w.map(|row| scalar::$dot(row, a))
            }
            )?
            $(
            #[inline]
            fn dot4(w: &[Self], a: [&[$act]; 4]) -> [f32; 4] {
                assert!(a.iter().all(|row| row.len() == w.len()), "quantized dot: block count mismatch");
                #[cfg(target_arch = "x86_64")]
                if simd_enabled() {
                    // SAFETY: equal block counts (checked above); AVX2/FMA/F16C were detected.
                    return unsafe { avx2::$dot4(w, a) };
                }
                a.map(|row| scalar::$dot(w, row))
            }
            )?
            $(
            const EIGHT_ROW_KERNEL: bool = true;
            #[inline]
            fn dot8(w: &[Self], a: [&[$act]; 8], scales: &[Scales8]) -> [f32; 8] {
                assert!(a.iter().all(|row| row.len() == w.len()) && scales.len() == w.len(), "quantized dot: block count mismatch");
                #[cfg(target_arch = "x86_64")]
                if simd_enabled() {
                    // SAFETY: equal block counts (checked above); AVX2/FMA/F16C were detected.
                    return unsafe { avx2::$dot8(w, a, scales) };
                }
                a.map(|row| scalar::$dot(w, row))
            }
            )?
        }
    };
}

quant_block!(BlockQ4_0, 32, BlockQ8_0, dequantize_q4_0, dot_q4_0);
quant_block!(BlockQ4_1, 32, BlockQ8_1, dequantize_q4_1, dot_q4_1, dot_w4: dot_w4_q4_1, dot4: dot4_q4_1, dot8: dot8_q4_1);
quant_block!(BlockQ5_0, 32, BlockQ8_0, dequantize_q5_0, dot_q5_0);
quant_block!(BlockQ5_1, 32, BlockQ8_1, dequantize_q5_1, dot_q5_1);
quant_block!(BlockQ8_0, 32, BlockQ8_0, dequantize_q8_0, dot_q8_0, dot_w4: dot_w4_q8_0, dot4: dot4_q8_0, dot8: dot8_q8_0);
quant_block!(BlockQ4K, 256, BlockQ8K, dequantize_q4_k, dot_q4_k);
quant_block!(BlockQ6K, 256, BlockQ8K, dequantize_q6_k, dot_q6_k);
