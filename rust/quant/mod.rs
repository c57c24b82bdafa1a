//! Block-quantized weights in ggml's formats.
//!
//! Weights stay in their blocks; a matmul quantizes each activation row once into the weight
//! type's partner format (`QuantBlock::Act`, as llama.cpp pairs them) and takes integer dot
//! products block by block. Each kernel has a scalar reference, and most an AVX2 twin.
//! The types themselves, with their kernels, are rows of the table in `tensor.rs`
//! (`storage_types!`), turned into `QuantBlock` impls by `quant_block!` below.

pub mod blocks;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod avx2;

use crate::kernels::dispatch;
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

/// Where an activation row sits among the rows a matmul multiplies: llama.cpp sums some types
/// in another order when a row comes with others (see `QuantBlock::order_at`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowPlace {
    /// Rows of the row's sequence in this matmul (1 for a row alone).
    pub seq_rows: usize,
    /// The row's index among them.
    pub index: usize,
}

impl RowPlace {
    /// A row multiplied on its own, as a decoding step's.
    pub const ALONE: RowPlace = RowPlace { seq_rows: 1, index: 0 };

    /// Rows from which llama.cpp multiplies the K-quant and IQ4_XS types with its tiled
    /// kernels (ggml-cpu/tiled: `ggml_tiled_min_batch`).
    pub const TILED_MIN_ROWS: usize = 8;

    /// In one of the sequence's whole groups of four rows, from its first.
    pub fn in_group_of_four(self) -> bool {
        self.index < self.seq_rows / 4 * 4
    }

    /// What the summation orders of a row at this place depend on, for every type's
    /// `order_at` and for attention's lanes (several rows or one): rows at places of equal
    /// class are summed alike, so their keys, values and logits are equal.
    pub fn sum_class(self) -> (bool, bool, bool) {
        (self.seq_rows > 1, self.seq_rows >= Self::TILED_MIN_ROWS, self.in_group_of_four())
    }
}

/// The summation orders of llama.cpp's kernels that `QuantBlock::order_at` chooses between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SumOrder {
    /// `dot`: a row multiplied alone (llama.cpp's vec_dot, or its GEMV over repacked weights).
    Alone,
    /// `DOT_GEMM4`: a row in one of its sequence's whole groups of four.
    Gemm4,
    /// `DOT_TILED`: a row of a prefill of eight rows or more.
    Tiled,
}

/// A one-row dot product kernel.
pub type Dot<B> = fn(&[B], &[<B as QuantBlock>::Act]) -> f32;

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

    /// The order of the kernel llama.cpp's AVX2 build uses for a row at `place` (see
    /// `dot_in`): `Tiled` in a sequence of at least `RowPlace::TILED_MIN_ROWS` rows where the
    /// type has `DOT_TILED`, `Gemm4` in its sequence's whole groups of four where it has
    /// `DOT_GEMM4`, `Alone` otherwise.
    fn order_at(place: RowPlace) -> SumOrder {
        if Self::DOT_TILED.is_some() && place.seq_rows >= RowPlace::TILED_MIN_ROWS {
            SumOrder::Tiled
        } else if Self::DOT_GEMM4.is_some() && place.in_group_of_four() {
            SumOrder::Gemm4
        } else {
            SumOrder::Alone
        }
    }
    /// `dot` in the given order (one the type has).
    fn dot_in(w: &[Self], a: &[Self::Act], order: SumOrder) -> f32 {
        let kernel = match order {
            SumOrder::Tiled => Self::DOT_TILED,
            SumOrder::Gemm4 => Self::DOT_GEMM4,
            SumOrder::Alone => None,
        };
        kernel.unwrap_or(Self::dot)(w, a)
    }
    /// `dot_in` of one weight row with four activation rows in the same order (equal
    /// results); types with such a kernel unpack each weight block once for the four.
    fn dot_x4_in(w: &[Self], a: [&[Self::Act]; 4], order: SumOrder) -> [f32; 4] {
        a.map(|a| Self::dot_in(w, a, order))
    }
    /// The order of llama.cpp's GEMM over this type's repacked weights, for rows in whole
    /// groups of four, where it differs from `dot`'s (its GEMV's).
    const DOT_GEMM4: Option<Dot<Self>> = None;
    /// The order of llama.cpp's tiled matmul of this type (a prefill of eight rows or more),
    /// where it has one.
    const DOT_TILED: Option<Dot<Self>> = None;

    /// `dot` of four weight rows with one activation row (equal results); types with a
    /// four-weight-row kernel keep the four running sums independent.
    fn dot_w4(w: [&[Self]; 4], a: &[Self::Act]) -> [f32; 4] {
        w.map(|row| Self::dot(row, a))
    }

    /// `dot` of one weight row with the eight activation rows packed in `a` (one pack per
    /// block; equal results), for the types that have such a kernel: each weight block is
    /// unpacked once for all eight rows. Matmuls pack activations only for these types, and
    /// use them for every row: a type with `DOT_GEMM4` or `DOT_TILED` has none.
    const DOT8: Option<DotPacked<Self, 8>> = None;
    /// `DOT8` for four rows (a batch's or a prefill's last rows).
    const DOT4: Option<DotPacked<Self, 4>> = None;
}

/// `impl ActBlock`: the block's (d, s) as an expression of `$b`, and its scalar quantizer,
/// marked `[avx2]` where `avx2` has a twin of the same name.
macro_rules! act_block {
    ($block:ty, $qk:expr, |$b:ident| $scales:expr, $quantize:ident $([$simd:ident])?) => {
        impl ActBlock for $block {
            const QK: usize = $qk;
            fn quantize(x: &[f32], out: &mut [Self]) {
                assert_eq!(x.len(), out.len() * $qk, "quantize: length mismatch");
                dispatch!($(avx2: $simd::$quantize(x, out),)? scalar: scalar::$quantize(x, out))
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

act_block!(BlockQ8_0, 32, |b| (b.d.to_f32(), 0.0), quantize_q8_0 [avx2]);
act_block!(BlockQ8_1, 32, |b| (b.d, b.s), quantize_q8_1 [avx2]);
act_block!(BlockQ8K, 256, |b| (b.d, 0.0), quantize_q8_k [avx2]);

/// `impl QuantBlock` from one quantized row of `tensor::storage_types!`: QK, the activation
/// format, and the kernels by their names in `scalar`, each marked `[avx2]` where `avx2` has
/// a twin of the same name (a type may have scalar kernels only). `dot_gemm4` and `dot_tiled`
/// name the kernels behind `DOT_GEMM4` and `DOT_TILED`, where the type has them, `dot_x4` an
/// AVX2 kernel behind `dot_x4_in` (its scalar fallback is four `dot_in`s), `dot_w4` a
/// four-weight-row SIMD kernel (its scalar fallback is four `dot`s, as the trait's default),
/// `dot_packed` the R-row kernels behind `DOT8`/`DOT4`, where the type has them.
macro_rules! quant_block {
    ($block:ty {
        qk: $qk:literal, act: $act:ty, dequantize: $dequantize:ident, dot: $dot:ident $([$simd:ident])?
        $(, dot_gemm4: $dot_gemm4:ident $([$gemm4_simd:ident])?)?
        $(, dot_tiled: $dot_tiled:ident $([$tiled_simd:ident])?)?
        $(, dot_x4: $dot_x4:ident [avx2])?
        $(, dot_w4: $dot_w4:ident $([$w4_simd:ident])?)?
        $(, dot_packed: $dot_packed:ident $([$packed_simd:ident])?)? $(,)?
    }) => {
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
                dispatch!($(avx2: $simd::$dot(w, a),)? scalar: scalar::$dot(w, a))
            }
            $(
            const DOT_GEMM4: Option<Dot<Self>> = Some(|w, a| one_row!(w, a, $dot_gemm4 $([$gemm4_simd])?));
            )?
            $(
            const DOT_TILED: Option<Dot<Self>> = Some(|w, a| one_row!(w, a, $dot_tiled $([$tiled_simd])?));
            )?
            $(
            #[inline]
            fn dot_x4_in(w: &[Self], a: [&[$act]; 4], order: SumOrder) -> [f32; 4] {
                assert!(a.iter().all(|row| row.len() == w.len()), "quantized dot: block count mismatch");
                dispatch!(avx2: avx2::$dot_x4(w, a, order), scalar: a.map(|a| Self::dot_in(w, a, order)))
            }
            )?
            $(
            #[inline]
            fn dot_w4(w: [&[Self]; 4], a: &[$act]) -> [f32; 4] {
                assert!(w.iter().all(|row| row.len() == a.len()), "quantized dot: block count mismatch");
                dispatch!($(avx2: $w4_simd::$dot_w4(w, a),)? scalar: w.map(|row| scalar::$dot(row, a)))
            }
            )?
            $(
            const DOT8: Option<DotPacked<Self, 8>> = Some(|w, a| dot_packed!(w, a, $dot_packed $([$packed_simd])?));
            const DOT4: Option<DotPacked<Self, 4>> = Some(|w, a| dot_packed!(w, a, $dot_packed $([$packed_simd])?));
            )?
        }
    };
}

/// A one-row kernel's call: block counts checked, then dispatched.
macro_rules! one_row {
    ($w:ident, $a:ident, $kernel:ident $([$simd:ident])?) => {{
        assert_eq!($w.len(), $a.len(), "quantized dot: block count mismatch");
        dispatch!($(avx2: $simd::$kernel($w, $a),)? scalar: scalar::$kernel($w, $a))
    }};
}

/// A packed kernel's call: block counts checked, then dispatched (the number of rows follows
/// from the packs' type).
macro_rules! dot_packed {
    ($w:ident, $a:ident, $kernel:ident $([$simd:ident])?) => {{
        assert_eq!($a.len(), $w.len(), "quantized dot: block count mismatch");
        dispatch!($(avx2: $simd::$kernel($w, $a),)? scalar: scalar::$kernel($w, $a))
    }};
}

/// `quant_block!` for each quantized row of the table.
macro_rules! quant_blocks {
    (floats { $($floats:tt)* } quants { $($variant:ident $name:literal $block:ident { $($row:tt)* },)* }) => {
        $(quant_block!($block { $($row)* });)*
    };
}

crate::tensor::storage_types!([quant_blocks]);

#[cfg(test)]
mod tests {
    //! A type with scalar kernels only: a row without `[avx2]` marks, registered by the same
    //! `quant_block!`, dispatches to its scalar kernels whatever the CPU.
    use super::*;

    /// Q8_0's layout under a new name, standing for a new type that has no SIMD kernels yet.
    #[repr(transparent)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct ScalarOnly(BlockQ8_0);

    /// Its scalar kernels (where `quant_block!` looks them up): Q8_0's, on the same bytes.
    mod scalar {
        use super::{ActPack, BlockQ8_0, ScalarOnly};
        use crate::quant::scalar as q8;

        pub fn dequantize_scalar_only(blocks: &[ScalarOnly], out: &mut [f32]) {
            q8::dequantize_q8_0(bytemuck::cast_slice(blocks), out)
        }
        pub fn dot_scalar_only(w: &[ScalarOnly], a: &[BlockQ8_0]) -> f32 {
            q8::dot_q8_0(bytemuck::cast_slice(w), a)
        }
        pub fn dot_packed_scalar_only<const R: usize>(w: &[ScalarOnly], a: &[ActPack<R>]) -> [f32; R] {
            q8::dot_packed_q8_0(bytemuck::cast_slice(w), a)
        }
    }

    quant_block!(ScalarOnly {
        qk: 32, act: BlockQ8_0, dequantize: dequantize_scalar_only, dot: dot_scalar_only,
        dot_packed: dot_packed_scalar_only,
    });

    #[test]
    fn a_type_with_scalar_kernels_only_dispatches_to_them() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let n_blocks = 9;
        let w: Vec<ScalarOnly> = (0..n_blocks)
            .map(|_| ScalarOnly(BlockQ8_0 { d: half::f16::from_f32(0.01), qs: std::array::from_fn(|_| next() as i8) }))
            .collect();
        let acts: Vec<Vec<BlockQ8_0>> = (0..8)
            .map(|_| {
                let x: Vec<f32> = (0..n_blocks * 32).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
                let mut act = vec![BlockQ8_0::zeroed(); n_blocks];
                BlockQ8_0::quantize(&x, &mut act);
                act
            })
            .collect();
        let w8: &[BlockQ8_0] = bytemuck::cast_slice(&w);
        let want: Vec<u32> = acts.iter().map(|a| crate::quant::scalar::dot_q8_0(w8, a).to_bits()).collect();
        let got: Vec<u32> = acts.iter().map(|a| ScalarOnly::dot(&w, a).to_bits()).collect();
        assert_eq!(got, want, "dot is the scalar kernel");
        let rows = [&w[..], &w[..], &w[..], &w[..]];
        assert_eq!(ScalarOnly::dot_w4(rows, &acts[3]).map(f32::to_bits), [want[3]; 4], "dot_w4 is four dots");
        let packs: Vec<ActPack<8>> = (0..n_blocks).map(|b| ActPack::of_rows(&acts.concat(), n_blocks, 0, b)).collect();
        let dot8 = ScalarOnly::DOT8.expect("a packed kernel");
        assert_eq!(dot8(&w, &packs).map(f32::to_bits), want[..], "DOT8 is the scalar packed kernel");
        let mut values = vec![0.0; n_blocks * 32];
        ScalarOnly::dequantize(&w, &mut values);
        let mut want_values = vec![0.0; n_blocks * 32];
        BlockQ8_0::dequantize(w8, &mut want_values);
        assert_eq!(values, want_values);
    }
}
