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

    /// `dot` of one weight row with four activation rows (equal results); types with a
    /// four-row kernel unpack each weight block once for all four.
    fn dot4(w: &[Self], a: [&[Self::Act]; 4]) -> [f32; 4] {
        a.map(|row| Self::dot(w, row))
    }
}

macro_rules! act_block {
    ($block:ty, $qk:expr, $quantize:ident) => {
        impl ActBlock for $block {
            const QK: usize = $qk;
            fn quantize(x: &[f32], out: &mut [Self]) {
                assert_eq!(x.len(), out.len() * $qk, "quantize: length mismatch");
                #[cfg(target_arch = "x86_64")]
                if simd_enabled() {
                    // SAFETY: lengths checked above; AVX2/FMA/F16C were detected.
                    return unsafe { avx2::$quantize(x, out) };
                }
                scalar::$quantize(x, out)
            }
        }
    };
    ($block:ty, $qk:expr, scalar $quantize:ident) => {
        impl ActBlock for $block {
            const QK: usize = $qk;
            fn quantize(x: &[f32], out: &mut [Self]) {
                assert_eq!(x.len(), out.len() * $qk, "quantize: length mismatch");
                scalar::$quantize(x, out)
            }
        }
    };
}

act_block!(BlockQ8_0, 32, quantize_q8_0);
act_block!(BlockQ8_1, 32, quantize_q8_1);
act_block!(BlockQ8K, 256, scalar quantize_q8_k);

macro_rules! quant_block {
    ($block:ty, $qk:expr, $act:ty, $dequantize:ident, $dot:ident, $dot4:ident) => {
        quant_block!($block, $qk, $act, $dequantize, $dot, {
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
        });
    };
    ($block:ty, $qk:expr, $act:ty, $dequantize:ident, $dot:ident) => {
        quant_block!($block, $qk, $act, $dequantize, $dot, {});
    };
    ($block:ty, $qk:expr, $act:ty, $dequantize:ident, $dot:ident, { $($extra:tt)* }) => {
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
            $($extra)*
        }
    };
}

quant_block!(BlockQ4_0, 32, BlockQ8_0, dequantize_q4_0, dot_q4_0);
quant_block!(BlockQ4_1, 32, BlockQ8_1, dequantize_q4_1, dot_q4_1, dot4_q4_1);
quant_block!(BlockQ5_0, 32, BlockQ8_0, dequantize_q5_0, dot_q5_0);
quant_block!(BlockQ5_1, 32, BlockQ8_1, dequantize_q5_1, dot_q5_1);
quant_block!(BlockQ8_0, 32, BlockQ8_0, dequantize_q8_0, dot_q8_0, dot4_q8_0);
quant_block!(BlockQ4K, 256, BlockQ8K, dequantize_q4_k, dot_q4_k);
quant_block!(BlockQ6K, 256, BlockQ8K, dequantize_q6_k, dot_q6_k);
