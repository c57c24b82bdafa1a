//! ggml's block layouts (ggml-common.h), byte for byte: each block holds `QK` elements.

use bytemuck::{Pod, Zeroable};
use half::f16;

/// 32 weights: x = d * (q - 8), q in 0..16. Low nibbles are elements 0..16, high 16..32.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; 16],
}

/// 32 weights: x = d * q + m, q in 0..16.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; 16],
}

/// 32 weights: x = d * (q - 16), q = nibble | (bit j of qh) << 4.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// 32 weights: x = d * q + m, q = nibble | (bit j of qh) << 4.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// 32 values: x = d * q. Weights, and activations paired with Q4_0 / Q5_0 / Q8_0.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; 32],
}

/// 32 activations paired with Q4_1 / Q5_1: x = d * q, and s = d * sum(q).
///
/// ggml stores d and s as f16. This block only ever lives in a matmul's scratch, so it keeps
/// the f16-rounded values already widened: the same numbers, without a conversion each time a
/// weight row meets the block.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ8_1 {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; 32],
}

/// 256 weights in 8 sub-blocks of 32, each with a 6-bit scale and min packed in `scales`:
/// x = d * sc * q - dmin * m, q in 0..16.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}

/// 256 weights in 8 sub-blocks of 32, scales and mins packed as in Q4_K:
/// x = d * sc * q - dmin * m, q 5 bits (low 4 in `qs` as in Q4_K, bit 4 of sub-block j's
/// element l is bit j of `qh[l]`).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}

/// 256 weights in 16 groups of 16, each with an 8-bit scale: x = d * sc * (q - 32), q 6 bits
/// (low 4 in `ql`, high 2 in `qh`).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: f16,
}

/// 256 weights in 16 groups of 16, each with a 4-bit scale (low nibble of `scales`) and min
/// (high nibble): x = d * sc * q - dmin * m, q 2 bits (element 128h + 32r + l is bits 2r..2r+2
/// of `qs[32h + l]`).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ2K {
    pub scales: [u8; 16],
    pub qs: [u8; 64],
    pub d: f16,
    pub dmin: f16,
}

/// 256 weights in 16 groups of 16, each with a 6-bit scale packed in `scales`
/// (`q3k_scales`): x = d * (sc - 32) * q, q = low 2 bits (as Q2_K's `qs`) - 4 where the high
/// bit (bit r of `hmask[l]` for element 32r + l) is clear, in -4..4.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ3K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: f16,
}

/// The 16 values a 4-bit IQ4_NL / IQ4_XS code stands for (ggml's kvalues_iq4nl).
pub const IQ4NL_VALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// 32 weights: x = d * IQ4NL_VALUES[code]; low nibbles are elements 0..16, high 16..32.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockIQ4NL {
    pub d: f16,
    pub qs: [u8; 16],
}

/// 256 weights in 8 sub-blocks of 32, each with a 6-bit scale (low 4 bits in `scales_l`,
/// nibble j % 2 of byte j / 2; high 2 bits at bit 2j of `scales_h`): x = d * (sc - 32) *
/// IQ4NL_VALUES[code], each sub-block's 16 bytes of codes laid out as an IQ4_NL block's.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockIQ4XS {
    pub d: f16,
    pub scales_h: u16,
    pub scales_l: [u8; 4],
    pub qs: [u8; 128],
}

/// 256 activations paired with the K-quants: x = d * q, `bsums` the sums of q per 16.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; 256],
    pub bsums: [i16; 16],
}

const _: () = {
    assert!(std::mem::size_of::<BlockQ4_0>() == 18);
    assert!(std::mem::size_of::<BlockQ4_1>() == 20);
    assert!(std::mem::size_of::<BlockQ5_0>() == 22);
    assert!(std::mem::size_of::<BlockQ5_1>() == 24);
    assert!(std::mem::size_of::<BlockQ8_0>() == 34);
    assert!(std::mem::size_of::<BlockQ8_1>() == 40);
    assert!(std::mem::size_of::<BlockQ4K>() == 144);
    assert!(std::mem::size_of::<BlockQ5K>() == 176);
    assert!(std::mem::size_of::<BlockQ6K>() == 210);
    assert!(std::mem::size_of::<BlockQ2K>() == 84);
    assert!(std::mem::size_of::<BlockQ3K>() == 110);
    assert!(std::mem::size_of::<BlockIQ4NL>() == 18);
    assert!(std::mem::size_of::<BlockIQ4XS>() == 136);
    assert!(std::mem::size_of::<BlockQ8K>() == 292);
};

/// Sub-block `j`'s 6-bit (scale, min) of a Q4_K block (ggml's get_scale_min_k4).
#[inline]
pub fn q4k_scale_min(j: usize, s: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// The 16 group scales of a Q3_K block, 6 bits each minus 32 (in -32..32), in group order:
/// low 4 bits from `s[0..8]` (low nibbles for groups 0..8, high for 8..16), high 2 bits from
/// `s[8..12]` (bits 2k..2k+2 of `s[8 + j % 4]` for group j = 4k + j % 4).
#[inline]
pub fn q3k_scales(s: &[u8; 12]) -> [i8; 16] {
    std::array::from_fn(|j| {
        let low = (s[j % 8] >> (4 * (j / 8))) & 0xF;
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        (low | high << 4) as i8 - 32
    })
}

/// Sub-block `j`'s scale of an IQ4_XS block, in -32..32.
#[inline]
pub fn iq4xs_scale(j: usize, b: &BlockIQ4XS) -> i32 {
    let low = (b.scales_l[j / 2] >> (4 * (j % 2))) & 0xF;
    let high = (b.scales_h >> (2 * j)) & 3;
    (low as u16 | high << 4) as i32 - 32
}
