//! Matmul and attention against naive double-precision loops.

use _native::ops::attention::{attention, Heads, Sequence};
use _native::ops::matmul::{matmul, matmul_group, MatmulScratch};
use _native::quant::blocks::{BlockQ4_1, BlockQ6K, BlockQ8_0};
use _native::quant::{ActBlock, QuantBlock};
use _native::tensor::{DType, Layout, Matrix, Tensor};
use half::{bf16, f16};
use std::sync::Arc;

mod common;
use common::Rng;

/// A matrix of logical shape [n_out, n_in] stored with `layout` and `dtype`, and its values
/// (as stored) in [n_out, n_in] order.
fn matrix(rng: &mut Rng, n_out: usize, n_in: usize, layout: Layout, dtype: DType) -> (Matrix, Vec<f64>) {
    let logical = rng.vec(n_out * n_in, 1.0);
    let stored: Vec<f32> = match layout {
        Layout::OutIn => logical.clone(),
        Layout::InOut => (0..n_in * n_out).map(|k| logical[(k % n_out) * n_in + k / n_out]).collect(),
    };
    let shape = match layout {
        Layout::OutIn => vec![n_out, n_in],
        Layout::InOut => vec![n_in, n_out],
    };
    let tensor = match dtype {
        DType::F32 => Tensor::new(Arc::new(stored), dtype, shape),
        DType::F16 => Tensor::new(Arc::new(stored.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>()), dtype, shape),
        DType::BF16 => Tensor::new(Arc::new(stored.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>()), dtype, shape),
        _ => unreachable!("float types only"),
    }
    .unwrap();
    let rounded: Vec<f64> = logical
        .iter()
        .map(|&v| match dtype {
            DType::F32 => v as f64,
            DType::F16 => f16::from_f32(v).to_f64(),
            DType::BF16 => bf16::from_f32(v).to_f64(),
            _ => unreachable!("float types only"),
        })
        .collect();
    (Matrix { tensor, layout, n_out, n_in }, rounded)
}

#[test]
fn matmul_matches_naive_for_every_layout_type_and_batch() {
    let mut rng = Rng(0x1234_5678);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for &(n_out, n_in) in &[(1, 1), (7, 5), (33, 17), (130, 64), (300, 21)] {
        for layout in [Layout::OutIn, Layout::InOut] {
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                let (w, values) = matrix(&mut rng, n_out, n_in, layout, dtype);
                let bias = rng.vec(n_out, 1.0);
                for n in [1, 2, 5, 40] {
                    let x = rng.vec(n * n_in, 1.0);
                    let mut y = vec![f32::NAN; n * n_out];
                    let mut scratch = MatmulScratch::default();
                    pool.install(|| matmul(&mut y, &x, &w, Some(&bias), &mut scratch));
                    for t in 0..n {
                        for o in 0..n_out {
                            let want: f64 = bias[o] as f64
                                + (0..n_in).map(|i| x[t * n_in + i] as f64 * values[o * n_in + i]).sum::<f64>();
                            let got = y[t * n_out + o] as f64;
                            assert!(
                                (got - want).abs() < 1e-5 * (n_in as f64).sqrt().max(1.0) * 4.0,
                                "{layout:?} {dtype:?} [{n_out}x{n_in}] n={n} t={t} o={o}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Rows [pos0[s]..][rows[s]] of two sessions over caches [n_kv_head, slots, head_dim], position
/// p in slot p % slots (those holding positions at or after `slots` are filled by `fill`).
fn attend_two(heads: Heads, slots: usize, window: Option<usize>, q: &[f32], q_stride: usize, caches: &[(Vec<f32>, Vec<f32>)], pos0: [usize; 2], rows: &[std::ops::Range<usize>; 2]) -> Vec<f32> {
    let n = rows[1].end;
    let seqs: Vec<Sequence<f32>> = (0..2)
        .map(|s| Sequence { k_cache: &caches[s].0, v_cache: &caches[s].1, slots, window, pos0: pos0[s], rows: rows[s].clone(), tiled: rows[s].len() > 1 })
        .collect();
    let mut out = vec![0.0; n * heads.n_head * heads.head_dim];
    attention(&mut out, q, q_stride, &seqs, heads, 1.0 / (heads.head_dim as f32).sqrt());
    out
}

#[test]
fn attention_matches_naive_softmax_with_grouped_heads_and_windows() {
    let mut rng = Rng(99);
    let heads = Heads { n_head: 6, n_kv_head: 2, head_dim: 5 };
    let max_seq = 60;
    // Two sessions in one call: four new rows at positions 49.. (several tokens' lane order)
    // and one new row at position 3 (one token's), each over its own cache.
    let (pos0, rows): ([usize; 2], [std::ops::Range<usize>; 2]) = ([49, 3], [0..4, 4..5]);
    let n = 5;
    let q_stride = heads.n_head * heads.head_dim + 3; // rows padded, as in a fused QKV buffer
    let q = rng.vec(n * q_stride, 1.0);
    let cache_len = heads.n_kv_head * max_seq * heads.head_dim;
    let caches: Vec<(Vec<f32>, Vec<f32>)> = (0..2).map(|_| (rng.vec(cache_len, 1.0), rng.vec(cache_len, 1.0))).collect();
    for window in [None, Some(7), Some(40)] {
        let out = attend_two(heads, max_seq, window, &q, q_stride, &caches, pos0, &rows);
        let hd = heads.head_dim;
        for s in 0..2 {
            let (k, v) = &caches[s];
            for r in rows[s].clone() {
                let pos = pos0[s] + r - rows[s].start;
                let seen = (pos + 1).saturating_sub(window.unwrap_or(usize::MAX))..pos + 1;
                for h in 0..heads.n_head {
                    let g = h / (heads.n_head / heads.n_kv_head);
                    let qh = &q[r * q_stride + h * hd..][..hd];
                    let row = |c: &[f32], j: usize| c[(g * max_seq + j) * hd..][..hd].to_vec();
                    let scores: Vec<f64> = seen
                        .clone()
                        .map(|j| row(k, j).iter().zip(qh).map(|(a, b)| (*a as f64) * (*b as f64)).sum::<f64>() / (hd as f64).sqrt())
                        .collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    for d in 0..hd {
                        let want: f64 = seen.clone().zip(&weights).map(|(j, w)| w / total * row(v, j)[d] as f64).sum();
                        let got = out[(r * heads.n_head + h) * hd + d] as f64;
                        assert!((got - want).abs() < 1e-5, "window {window:?} session {s} row {r} h={h} d={d}: {got} vs {want}");
                    }
                }
            }
        }
    }
}

#[test]
fn windowed_attention_over_a_ring_equals_it_over_the_whole_cache() {
    // Rings of 64 slots (two lane groups of 32) holding each session's newest 64 positions: a
    // window of 20 read from them gives the bits the whole caches give.
    let mut rng = Rng(7);
    let heads = Heads { n_head: 4, n_kv_head: 2, head_dim: 16 };
    let (full, ring) = (128, 64);
    let (pos0, rows): ([usize; 2], [std::ops::Range<usize>; 2]) = ([97, 70], [0..4, 4..5]);
    let q_stride = heads.n_head * heads.head_dim;
    let q = rng.vec(5 * q_stride, 1.0);
    let whole: Vec<(Vec<f32>, Vec<f32>)> = (0..2).map(|_| (rng.vec(2 * full * 16, 1.0), rng.vec(2 * full * 16, 1.0))).collect();
    let ringed: Vec<(Vec<f32>, Vec<f32>)> = whole
        .iter()
        .enumerate()
        .map(|(s, (k, v))| {
            let end = pos0[s] + rows[s].len();
            let to_ring = |c: &[f32]| {
                let mut out = vec![f32::NAN; 2 * ring * 16];
                for g in 0..2 {
                    for p in end - ring..end {
                        out[(g * ring + p % ring) * 16..][..16].copy_from_slice(&c[(g * full + p) * 16..][..16]);
                    }
                }
                out
            };
            (to_ring(k), to_ring(v))
        })
        .collect();
    let want = attend_two(heads, full, Some(20), &q, q_stride, &whole, pos0, &rows);
    let got = attend_two(heads, ring, Some(20), &q, q_stride, &ringed, pos0, &rows);
    assert_eq!(got, want);
}

#[test]
fn tensor_rejects_wrong_sizes_and_overflowing_shapes() {
    let bytes: Arc<Vec<u8>> = Arc::new(vec![0u8; 12]);
    assert!(Tensor::new(bytes.clone(), DType::F32, vec![3]).is_ok());
    assert!(Tensor::new(bytes.clone(), DType::F32, vec![4]).is_err());
    assert!(Tensor::new(bytes.clone(), DType::F16, vec![usize::MAX, 2]).is_err());
}

/// Quantized matmul: every output equals the kernel's own dot product of that weight row with
/// the quantized activation row, plus the bias, whatever the batch size and tiling.
fn check_quant_matmul<B: QuantBlock>(dtype: DType, fix: impl Fn(&mut B)) {
    let mut rng = Rng(0xABCD_EF01);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    // 270 outputs: one-token chunks of 136 and 134 rows on two threads, so four rows a quarter
    // apart at a time, and two rows left over.
    let (n_out, n_in) = (270, 512);
    let blocks_per_row = n_in / B::QK;
    let mut blocks: Vec<B> = vec![bytemuck::Zeroable::zeroed(); n_out * blocks_per_row];
    for b in blocks.iter_mut() {
        for byte in bytemuck::bytes_of_mut(b) {
            *byte = (rng.unit() * 1000.0) as i32 as u8;
        }
        fix(b);
    }
    let tensor = Tensor::new(Arc::new(blocks.clone()), dtype, vec![n_out, n_in]).unwrap();
    let w = Matrix { tensor, layout: Layout::OutIn, n_out, n_in };
    let bias = rng.vec(n_out, 1.0);
    // 70 tokens: enough blocks of eight to be split by tokens rather than by columns, and a
    // last block of six (one four-row and two single dot products).
    for n in [1, 3, 40, 70] {
        let x = rng.vec(n * n_in, 1.0);
        let mut y = vec![f32::NAN; n * n_out];
        let mut scratch = MatmulScratch::default();
        pool.install(|| matmul(&mut y, &x, &w, Some(&bias), &mut scratch));
        for t in 0..n {
            let mut act: Vec<B::Act> = vec![bytemuck::Zeroable::zeroed(); n_in / <B::Act as ActBlock>::QK];
            B::Act::quantize(&x[t * n_in..(t + 1) * n_in], &mut act);
            for o in 0..n_out {
                let want = bias[o] + B::dot(&blocks[o * blocks_per_row..(o + 1) * blocks_per_row], &act);
                assert_eq!(y[t * n_out + o], want, "{dtype:?} n={n} t={t} o={o}");
            }
        }
    }
}

#[test]
fn quantized_matmul_matches_row_dot_products() {
    check_quant_matmul::<BlockQ4_1>(DType::Q4_1, |b| (b.d, b.m) = (f16::from_f32(0.01), f16::from_f32(-0.05)));
    check_quant_matmul::<BlockQ8_0>(DType::Q8_0, |b| b.d = f16::from_f32(0.02));
    check_quant_matmul::<BlockQ6K>(DType::Q6_K, |b| b.d = f16::from_f32(0.001));
}

/// Matrices sharing one input (Q, K and V; gate and up) quantize it once: every output equals
/// that matrix's own `matmul` (with its bias, where it has one) and each row's own dot product
/// plus bias, bit for bit, for one token and for batches with and without groups of eight and
/// four rows, whose outputs are small enough to be gathered from their tiles on the calling
/// thread or (with the 6000-row matrix, n = 12) large enough not to be.
#[test]
fn matmul_group_equals_separate_matmuls() {
    let mut rng = Rng(0x5EED_0F6A_0C00);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let n_in = 256;
    let matrices: Vec<Matrix> = [192usize, 64, 100, 6000]
        .into_iter()
        .map(|n_out| {
            let blocks: Vec<BlockQ4_1> = (0..n_out * n_in / 32)
                .map(|_| BlockQ4_1 { d: f16::from_f32(0.01 + 0.01 * rng.unit().abs()), m: f16::from_f32(-0.05), qs: std::array::from_fn(|_| (rng.unit() * 1000.0) as i32 as u8) })
                .collect();
            let tensor = Tensor::new(Arc::new(blocks), DType::Q4_1, vec![n_out, n_in]).unwrap();
            Matrix { tensor, layout: Layout::OutIn, n_out, n_in }
        })
        .collect();
    let ws: Vec<&Matrix> = matrices.iter().collect();
    // Biases on the first and third matrices (Q/K/V biases come as a group).
    let bias_values: Vec<Option<Vec<f32>>> = ws.iter().enumerate().map(|(m, w)| (m % 2 == 0).then(|| rng.vec(w.n_out, 1.0))).collect();
    let biases: Vec<Option<&[f32]>> = bias_values.iter().map(|b| b.as_deref()).collect();
    for n in [1, 5, 12, 70] {
        let x = rng.vec(n * n_in, 1.0);
        let mut grouped: Vec<Vec<f32>> = ws.iter().map(|w| vec![f32::NAN; n * w.n_out]).collect();
        let mut scratch = MatmulScratch::default();
        pool.install(|| matmul_group(&mut grouped.iter_mut().map(|y| y.as_mut_slice()).collect::<Vec<_>>(), &x, &ws, &biases, &mut scratch));
        for ((w, got), bias) in ws.iter().zip(&grouped).zip(&biases) {
            let mut want = vec![f32::NAN; n * w.n_out];
            pool.install(|| matmul(&mut want, &x, w, *bias, &mut MatmulScratch::default()));
            assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "n={n}, n_out={}", w.n_out);
            // Both went through the same gathering of tiles: check every element against its
            // own row dot product too.
            let blocks = w.tensor.as_slice::<BlockQ4_1>();
            let per_row = n_in / 32;
            for t in 0..n {
                let mut act = vec![bytemuck::Zeroable::zeroed(); per_row];
                <BlockQ4_1 as QuantBlock>::Act::quantize(&x[t * n_in..(t + 1) * n_in], &mut act);
                for o in 0..w.n_out {
                    let dot = BlockQ4_1::dot(&blocks[o * per_row..(o + 1) * per_row], &act);
                    let row = match bias {
                        Some(b) => dot + b[o],
                        None => dot,
                    };
                    assert_eq!(got[t * w.n_out + o].to_bits(), row.to_bits(), "n={n}, n_out={}, t={t}, o={o}", w.n_out);
                }
            }
        }
    }
}

/// The norms over many rows (summed eight rows side by side) equal the per-row formulas
/// written out here, bit for bit: each row's f64 sums in element order, as ggml takes them.
#[test]
fn norms_equal_their_row_by_row_formulas() {
    use _native::ops::norm::{layer_norm, rms_norm};
    let mut rng = Rng(5);
    for dim in [576usize, 5] {
        for rows in [1usize, 7, 8, 9, 16, 17] {
            let mut x = rng.vec(rows * dim, 3.0);
            // special rows: all negative zeros; a sum that cancels (2^60 + 1 - 2^60 is 0 taken
            // in order, 1 in any other); and values far apart in size
            x[..dim].fill(-0.0);
            if rows > 1 && dim > 2 {
                x[dim..2 * dim].fill(0.0);
                x[dim..dim + 3].copy_from_slice(&[2f32.powi(60), 1.0, -(2f32.powi(60))]);
            }
            if rows > 2 {
                for (i, v) in x[2 * dim..3 * dim].iter_mut().enumerate() {
                    *v = if i % 2 == 0 { 1e18 } else { -1e-18 };
                }
            }
            let (w, b) = (rng.vec(dim, 1.0), rng.vec(dim, 1.0));
            let eps = 1e-5f32;
            let mut got = vec![0.0; rows * dim];
            rms_norm(&mut got, &x, &w, eps);
            let want: Vec<f32> = x
                .chunks_exact(dim)
                .flat_map(|r| {
                    let mean_sq = (r.iter().map(|&v| (v * v) as f64).sum::<f64>() / dim as f64) as f32;
                    let inv = 1.0 / (mean_sq + eps).sqrt();
                    r.iter().zip(&w).map(move |(&v, &w)| v * inv * w).collect::<Vec<_>>()
                })
                .collect();
            assert_eq!(bits(&got), bits(&want), "rms_norm dim={dim} rows={rows}");
            // with a zero bias too, which would otherwise absorb the cancelling row's outputs
            for b in [b.clone(), vec![0.0; dim]] {
                layer_norm(&mut got, &x, &w, &b, eps);
                let want: Vec<f32> = x
                    .chunks_exact(dim)
                    .flat_map(|r| {
                        let mean = r.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
                        let var = r.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
                        let inv = 1.0 / (var + eps as f64).sqrt();
                        r.iter().zip(w.iter().zip(&b)).map(move |(&v, (&w, &b))| ((v as f64 - mean) * inv) as f32 * w + b).collect::<Vec<_>>()
                    })
                    .collect();
                assert_eq!(bits(&got), bits(&want), "layer_norm dim={dim} rows={rows}");
            }
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
