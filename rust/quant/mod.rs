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

/// R activation rows' blocks at one block position, packed for R-row kernels: the scales
/// side by side (row k in lane k) and each row's 32 quants on a 32-byte boundary, so that no
/// load of them straddles a cache line. Built once per matmul from the rows.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct ActPack<const R: usize> {
    /// d of each row's block.
    pub d: [f32; R],
    /// s of each row's block (0 for types without one).
    pub s: [f32; R],
    /// [R rows, 32 quants]
    pub qs: [[i8; 32]; R],
}

impl<const R: usize> ActPack<R> {
    /// All zeros: what a pack buffer is grown with before it is filled.
    pub const ZERO: Self = Self { d: [0.0; R], s: [0.0; R], qs: [[0; 32]; R] };

    /// The pack of R blocks of 32 quants, one from each row.
    pub fn new<A: ActBlock>(blocks: [&A; R]) -> Self {
        let scales = blocks.map(|b| b.scales());
        Self {
            d: scales.map(|(d, _)| d),
            s: scales.map(|(_, s)| s),
            qs: blocks.map(|b| b.quants().try_into().expect("blocks of 32 quants")),
        }
    }

    /// The pack of block `block` of rows `first..first + R` of act [rows, per_row].
    pub fn of_rows<A: ActBlock>(act: &[A], per_row: usize, first: usize, block: usize) -> Self {
        Self::new(std::array::from_fn(|k| &act[(first + k) * per_row + block]))
    }
}

/// An R-row kernel: one weight row against R packed activation rows.
pub type DotPacked<B, const R: usize> = fn(&[B], &[ActPack<R>]) -> [f32; R];

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

    /// `dot` of one weight row with the eight activation rows packed in `a` (one pack per
    /// block; equal results), for the types that have such a kernel: each weight block is
    /// unpacked once for all eight rows. Matmuls pack activations only for these types.
    const DOT8: Option<DotPacked<Self, 8>> = None;
    /// `DOT8` for four rows (a batch's or a prefill's last rows).
    const DOT4: Option<DotPacked<Self, 4>> = None;
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

/// `impl QuantBlock` from the scalar and AVX2 kernels of the same names; `dot_w4` and
/// `dot_packed` name the type's multi-row kernels where it has them (else the trait's defaults).
macro_rules! quant_block {
    ($block:ty, $qk:expr, $act:ty, $dequantize:ident, $dot:ident $(, dot_w4: $dot_w4:ident)? $(, dot_packed: $dot_packed:ident)?) => {
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
            const DOT8: Option<DotPacked<Self, 8>> = Some(|w, a| dot_packed!(w, a, $dot_packed));
            const DOT4: Option<DotPacked<Self, 4>> = Some(|w, a| dot_packed!(w, a, $dot_packed));
            )?
        }
    };
}

/// A packed kernel's call: block counts checked, the AVX2 kernel where the CPU has it, else
/// the scalar twin (the number of rows follows from the packs' type).
macro_rules! dot_packed {
    ($w:ident, $a:ident, $kernel:ident) => {{
        assert_eq!($a.len(), $w.len(), "quantized dot: block count mismatch");
        #[cfg(target_arch = "x86_64")]
        if simd_enabled() {
            // SAFETY: equal block counts (checked above); AVX2/FMA/F16C were detected.
            return unsafe { avx2::$kernel($w, $a) };
        }
        scalar::$kernel($w, $a)
    }};
}

quant_block!(BlockQ4_0, 32, BlockQ8_0, dequantize_q4_0, dot_q4_0);
quant_block!(BlockQ4_1, 32, BlockQ8_1, dequantize_q4_1, dot_q4_1, dot_w4: dot_w4_q4_1, dot_packed: dot_packed_q4_1);
quant_block!(BlockQ5_0, 32, BlockQ8_0, dequantize_q5_0, dot_q5_0);
quant_block!(BlockQ5_1, 32, BlockQ8_1, dequantize_q5_1, dot_q5_1);
quant_block!(BlockQ8_0, 32, BlockQ8_0, dequantize_q8_0, dot_q8_0, dot_w4: dot_w4_q8_0, dot_packed: dot_packed_q8_0);
quant_block!(BlockQ4K, 256, BlockQ8K, dequantize_q4_k, dot_q4_k);
quant_block!(BlockQ6K, 256, BlockQ8K, dequantize_q6_k, dot_q6_k);
