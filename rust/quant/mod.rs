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
    /// The QK quantized values.
    fn quants(&self) -> &[i8];
}

/// Eight activation rows' blocks at one block position, packed for eight-row kernels: the
/// scales side by side (row k in lane k) and each row's 32 quants on a 32-byte boundary, so
/// that no load of them straddles a cache line. Built once per matmul from the rows.
#[repr(C, align(64))]
#[derive(Clone, Copy, Default, Pod, Zeroable)]
pub struct Act8 {
    /// d of each row's block.
    pub d: [f32; 8],
    /// s of each row's block (0 for types without one).
    pub s: [f32; 8],
    /// [8 rows, 32 quants]
    pub qs: [[i8; 32]; 8],
}

impl Act8 {
    /// The pack of eight blocks of 32 quants, one from each row.
    pub fn new<A: ActBlock>(blocks: [&A; 8]) -> Self {
        let scales = blocks.map(|b| b.scales());
        Self {
            d: scales.map(|(d, _)| d),
            s: scales.map(|(_, s)| s),
            qs: blocks.map(|b| b.quants().try_into().expect("blocks of 32 quants")),
        }
    }
}

/// An eight-row kernel: one weight row against eight packed activation rows.
pub type Dot8<B> = fn(&[B], &[Act8]) -> [f32; 8];

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

    /// `dot` of one weight row with the eight activation rows packed in `a` (one `Act8` per
    /// block; equal results), for the types that have such a kernel: each weight block is
    /// unpacked once for all eight rows. Matmuls pack activations only for these types.
    const DOT8: Option<Dot8<Self>> = None;
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
            #[inline]
            fn quants(&self) -> &[i8] {
                &self.qs
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
            const DOT8: Option<Dot8<Self>> = Some(|w, a| {
                assert_eq!(a.len(), w.len(), "quantized dot: block count mismatch");
                #[cfg(target_arch = "x86_64")]
                if simd_enabled() {
                    // SAFETY: equal block counts (checked above); AVX2/FMA/F16C were detected.
                    return unsafe { avx2::$dot8(w, a) };
                }
                scalar::$dot8(w, a)
            });
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
