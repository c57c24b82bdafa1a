//! Every SIMD kernel against its scalar twin, on random and edge-case lengths and values.

use _native::kernels::{self, scalar, Elem};
use half::{bf16, f16};

mod common;
use common::Rng;

const LENGTHS: &[usize] = &[0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 255, 256, 257, 1000, 4099];

fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// |simd - scalar| bounded by the rounding error of a length-n float32 sum of |x||w|.
fn dot_tolerance(x: &[f32], w: &[f32]) -> f32 {
    let magnitude: f32 = x.iter().zip(w).map(|(a, b)| (a * b).abs()).sum();
    1e-6 * (x.len() as f32 + 1.0) * magnitude.max(1.0)
}

fn check_dot<W: Elem>(convert: fn(f32) -> W) {
    assert!(avx2_available(), "these tests compare the AVX2 kernels: run them on an AVX2 machine");
    let mut rng = Rng(42);
    for &n in LENGTHS {
        for scale in [1.0, 1e-3, 100.0] {
            let x = rng.vec(n, scale);
            let w: Vec<W> = rng.vec(n, 1.0).into_iter().map(convert).collect();
            let w_f32: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
            let want = scalar::dot(&x, &w);
            // SAFETY: equal lengths; AVX2/FMA/F16C asserted above.
            let got = unsafe { kernels::avx2::dot(&x, &w) };
            let tol = dot_tolerance(&x, &w_f32);
            assert!((got - want).abs() <= tol, "dot n={n} scale={scale}: simd {got} scalar {want} (tol {tol})");
            // The dispatching wrapper gives the same answer as the path it picks.
            assert_eq!(kernels::dot(&x, &w), got);
        }
    }
}

fn check_axpy<W: Elem>(convert: fn(f32) -> W) {
    assert!(avx2_available(), "these tests compare the AVX2 kernels: run them on an AVX2 machine");
    let mut rng = Rng(7);
    for &n in LENGTHS {
        let y0 = rng.vec(n, 10.0);
        let w: Vec<W> = rng.vec(n, 1.0).into_iter().map(convert).collect();
        let a = rng.unit() * 3.0;
        let mut want = y0.clone();
        scalar::axpy(&mut want, a, &w);
        let mut got = y0.clone();
        // SAFETY: equal lengths; AVX2/FMA/F16C asserted above.
        unsafe { kernels::avx2::axpy(&mut got, a, &w) };
        for i in 0..n {
            // FMA rounds once where the scalar path rounds twice.
            assert!((got[i] - want[i]).abs() <= 1e-6 * want[i].abs().max(1.0), "axpy n={n} i={i}");
        }
    }
}

#[test]
fn dot_f32_simd_matches_scalar() {
    check_dot::<f32>(|v| v);
}

#[test]
fn dot_f16_simd_matches_scalar() {
    check_dot::<f16>(f16::from_f32);
}

#[test]
fn dot_bf16_simd_matches_scalar() {
    check_dot::<bf16>(bf16::from_f32);
}

#[test]
fn axpy_simd_matches_scalar_for_every_type() {
    check_axpy::<f32>(|v| v);
    check_axpy::<f16>(f16::from_f32);
    check_axpy::<bf16>(bf16::from_f32);
}

/// The register-blocked `axpy_block` must equal the AVX2 `axpy` applied row by row exactly
/// (one token and a batch get identical sums), and the scalar twin the scalar `axpy`.
fn check_axpy_block<W: Elem>(convert: fn(f32) -> W) {
    assert!(avx2_available(), "these tests compare the AVX2 kernels: run them on an AVX2 machine");
    let mut rng = Rng(13);
    let (n_in, n_out) = (70, 61);
    let w: Vec<W> = rng.vec(n_in * n_out, 1.0).into_iter().map(convert).collect();
    for n in [1usize, 2, 5, 6, 7, 13] {
        let x = rng.vec(n * n_in, 2.0);
        for (col0, width) in [(0, 61), (3, 16), (8, 37), (40, 8), (50, 7)] {
            let out0 = rng.vec(n * width, 5.0);
            let rows = 4..67;
            let (mut want, mut want_scalar) = (out0.clone(), out0.clone());
            for i in rows.clone() {
                let w_seg = &w[i * n_out + col0..i * n_out + col0 + width];
                for t in 0..n {
                    // SAFETY: equal lengths; AVX2/FMA/F16C asserted above.
                    unsafe { kernels::avx2::axpy(&mut want[t * width..(t + 1) * width], x[t * n_in + i], w_seg) };
                    scalar::axpy(&mut want_scalar[t * width..(t + 1) * width], x[t * n_in + i], w_seg);
                }
            }
            let mut got = out0.clone();
            kernels::axpy_block(&mut got, &x, n_in, rows.clone(), &w, n_out, col0);
            assert_eq!(got, want, "axpy_block n={n} col0={col0} width={width}");
            let mut got_scalar = out0.clone();
            scalar::axpy_block(&mut got_scalar, &x, n_in, rows.clone(), &w, n_out, col0);
            assert_eq!(got_scalar, want_scalar, "scalar axpy_block n={n} col0={col0} width={width}");
        }
    }
}

#[test]
fn axpy_block_equals_axpy_row_by_row_for_every_type() {
    check_axpy_block::<f32>(|v| v);
    check_axpy_block::<f16>(f16::from_f32);
    check_axpy_block::<bf16>(bf16::from_f32);
}


#[test]
fn widening_loads_are_exact_on_special_values() {
    assert!(avx2_available());
    // Subnormals, infinities, signed zeros and extremes widen exactly. y = -0 + 1 * w reads each
    // element back through the SIMD load unchanged (-0 is the additive identity for both zeros).
    let specials = [0.0f32, -0.0, 1.0, -1.0, 65504.0, 6.1e-5, 5.96e-8, f32::INFINITY, f32::NEG_INFINITY, 3.0e38, 1e-40, 0.1, -7.25, 1e5, -2e-3, 42.0];
    let f16s: Vec<f16> = specials.iter().map(|&v| f16::from_f32(v)).collect();
    let bf16s: Vec<bf16> = specials.iter().map(|&v| bf16::from_f32(v)).collect();
    let mut from_f16 = vec![-0.0f32; specials.len()];
    let mut from_bf16 = vec![-0.0f32; specials.len()];
    // SAFETY: equal lengths; AVX2/FMA/F16C asserted above.
    unsafe {
        kernels::avx2::axpy(&mut from_f16, 1.0, &f16s);
        kernels::avx2::axpy(&mut from_bf16, 1.0, &bf16s);
    }
    for i in 0..specials.len() {
        assert_eq!(from_f16[i].to_bits(), f16s[i].to_f32().to_bits(), "f16 element {i}");
        assert_eq!(from_bf16[i].to_bits(), bf16s[i].to_f32().to_bits(), "bf16 element {i}");
    }
}

#[test]
fn dot_tiled_simd_equals_scalar_exactly() {
    assert!(avx2_available());
    // The scalar twin performs the same fused operations in the same order: equal bits.
    let mut rng = Rng(11);
    for n in [8, 16, 64, 128, 1000] {
        let x = rng.vec(n, 3.0);
        let w32 = rng.vec(n, 1.0);
        let w16: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
        // SAFETY: equal lengths, multiples of 8; AVX2/FMA/F16C asserted above.
        unsafe {
            assert_eq!(kernels::avx2::dot_tiled(&x, &w32).to_bits(), scalar::dot_tiled(&x, &w32).to_bits(), "f32 n={n}");
            assert_eq!(kernels::avx2::dot_tiled(&x, &w16).to_bits(), scalar::dot_tiled(&x, &w16).to_bits(), "f16 n={n}");
        }
    }
}

#[test]
fn pointwise_kernels_simd_equal_scalar_exactly() {
    assert!(avx2_available());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let mut rng = Rng(12);
    // Scale 300 sends some exponents outside the normal range (scaled in two steps, or
    // saturated); the fixed values sit at the edges of those ranges.
    let edges = [87.0f32, 87.4, 87.5, 88.0, 88.8, 89.0, 133.0, 133.2, 134.0, 1e4, f32::INFINITY];
    let edges: Vec<f32> = edges.iter().flat_map(|&v| [v, -v]).chain([0.0, -0.0]).collect();
    for (n, scale) in [(1, 12.0), (7, 12.0), (8, 12.0), (9, 12.0), (100, 12.0), (1536, 12.0), (64, 300.0), (1000, 300.0), (0, 1.0)] {
        let with_edges = |mut v: Vec<f32>| {
            if n == 0 {
                v.extend(&edges);
            }
            v
        };
        let gate = with_edges(rng.vec(n, scale));
        let up = with_edges(rng.vec(n, 2.0));
        let (mut a, mut b) = (gate.clone(), gate.clone());
        scalar::silu_mul(&mut a, &up);
        // SAFETY: AVX2/FMA asserted above.
        unsafe { kernels::avx2::silu_mul(&mut b, &up) };
        assert_eq!(bits(&a), bits(&b), "silu_mul n={n}");
        let scores = with_edges(rng.vec(n, 2.0 * scale)).into_iter().filter(|s| s.is_finite()).collect::<Vec<_>>();
        let (mut a, mut b) = (scores.clone(), scores.clone());
        let (sa, sb) = (scalar::softmax_exp(&mut a), unsafe { kernels::avx2::softmax_exp(&mut b) });
        assert_eq!((bits(&a), sa.to_bits()), (bits(&b), sb.to_bits()), "softmax_exp n={n}");
        let x = with_edges(rng.vec(n, scale));
        let (mut a, mut b) = (x.clone(), x.clone());
        scalar::gelu_tanh(&mut a);
        // SAFETY: AVX2/FMA asserted above.
        unsafe { kernels::avx2::gelu_tanh(&mut b) };
        assert_eq!(bits(&a), bits(&b), "gelu_tanh n={n}");
    }
}

#[test]
fn gelu_tanh_agrees_with_the_tanh_formula() {
    let mut rng = Rng(21);
    let mut x = rng.vec(4096, 10.0);
    x.extend([0.0, -0.0, 1e-30, -1e-30, 3.5, 4.0, 4.5, 5.0, 9.0, 60.0, -60.0, 1e4, -1e4]);
    let mut got = x.clone();
    scalar::gelu_tanh(&mut got);
    for (&v, &g) in x.iter().zip(&got) {
        let v64 = v as f64;
        let want = 0.5 * v64 * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v64 + 0.044715 * v64.powi(3))).tanh());
        assert!((g as f64 - want).abs() <= 1e-6 * want.abs().max(1.0), "gelu({v}) = {g}, want {want}");
        // The clamped exponent changes nothing: the same as x / (1 + e^(-2u)) unclamped.
        let u = scalar::SQRT_2_OVER_PI * (v + 0.044715 * v * v * v);
        assert_eq!(g.to_bits(), (v / (1.0 + scalar::exp(-2.0 * u))).to_bits(), "gelu({v}) against the unclamped formula");
    }
}

#[test]
fn ggml_exp_is_accurate_and_saturates() {
    // Within 2 ulp of the correctly rounded value over the range softmax and SiLU use.
    for i in -8700..=8800 {
        let x = i as f32 * 0.01;
        let want = (x as f64).exp();
        let got = kernels::exp(x) as f64;
        assert!(((got - want) / want).abs() < 2.5e-7, "exp({x}) = {got}, want {want}");
    }
    assert_eq!(kernels::exp(f32::NEG_INFINITY), 0.0);
    assert_eq!(kernels::exp(-200.0), 0.0);
    assert_eq!(kernels::exp(200.0), f32::INFINITY);
    assert_eq!(kernels::exp(0.0), 1.0);
}

/// `axpy_in_lanes` (SIMD and scalar) equals `axpy` of each row into lane j % lanes, bit for bit.
fn check_axpy_in_lanes<W: Elem>(rng: &mut Rng, convert: fn(f32) -> W, d: usize, len: usize) {
    let rows: Vec<W> = rng.vec(len * d, 1.0).into_iter().map(convert).collect();
    let weights = rng.vec(len, 1.0);
    for lanes in [8, 32] {
        let start = rng.vec(lanes * d, 1.0);
        let (mut got, mut want) = (start.clone(), start.clone());
        kernels::axpy_in_lanes(&mut got, &weights, &rows, lanes);
        for (j, (&a, row)) in weights.iter().zip(rows.chunks_exact(d)).enumerate() {
            kernels::axpy(&mut want[j % lanes * d..(j % lanes + 1) * d], a, row);
        }
        assert_eq!(got, want, "axpy_in_lanes lanes={lanes} d={d} len={len}");
        let (mut got_scalar, mut want_scalar) = (start.clone(), start);
        scalar::axpy_in_lanes(&mut got_scalar, &weights, &rows, lanes);
        for (j, (&a, row)) in weights.iter().zip(rows.chunks_exact(d)).enumerate() {
            scalar::axpy(&mut want_scalar[j % lanes * d..(j % lanes + 1) * d], a, row);
        }
        assert_eq!(got_scalar, want_scalar);
    }
}

/// The lane reductions equal their scalar twins exactly, and every element equals the
/// horizontal sum of its lanes as the SIMD dot products take it (the lanes dotted with ones,
/// each product exact): `dot_tiled` for eight lanes, `dot` (ggml_vec_dot_f16's order) for 32.
#[test]
fn lane_reductions_equal_the_dot_products_sums() {
    assert!(avx2_available(), "these tests compare the AVX2 kernels: run them on an AVX2 machine");
    let mut rng = Rng(47);
    for n in [1usize, 5, 8, 64, 67] {
        for lanes in [8usize, 32] {
            let partial = rng.vec(lanes * n, 10.0);
            let (mut got, mut got_scalar) = (vec![0.0; n], vec![0.0; n]);
            kernels::reduce_lanes(&partial, &mut got, lanes);
            scalar::reduce_lanes(&partial, &mut got_scalar, lanes);
            let ones = vec![1.0f32; lanes];
            for d in 0..n {
                let column: Vec<f32> = (0..lanes).map(|k| partial[k * n + d]).collect();
                let want = if lanes == 8 { kernels::dot_tiled(&column, &ones) } else { kernels::dot(&column, &ones) };
                assert_eq!(got[d].to_bits(), want.to_bits(), "lanes={lanes} n={n} d={d}");
            }
            assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), got_scalar.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "scalar twin, lanes={lanes} n={n}");
        }
    }
}

/// The batched attention kernels equal their one-row-at-a-time definitions exactly, on the
/// SIMD path and on the scalar path.
fn check_attention_kernels<W: Elem>(convert: fn(f32) -> W) {
    assert!(avx2_available(), "these tests compare the AVX2 kernels: run them on an AVX2 machine");
    let mut rng = Rng(31);
    for (d, len) in [(8usize, 1usize), (64, 7), (64, 8), (64, 9), (64, 100), (16, 33), (64, 300), (8, 1100)] {
        let q = rng.vec(d, 2.0);
        let rows: Vec<W> = rng.vec(len * d, 1.0).into_iter().map(convert).collect();
        let mut got = vec![0.0; len];
        kernels::dot_tiled_rows(&q, &rows, &mut got);
        let want: Vec<f32> = rows.chunks_exact(d).map(|r| kernels::dot_tiled(&q, r)).collect();
        assert_eq!(got, want, "dot_tiled_rows d={d} len={len}");
        let mut got_scalar = vec![0.0; len];
        scalar::dot_tiled_rows(&q, &rows, &mut got_scalar);
        let want_scalar: Vec<f32> = rows.chunks_exact(d).map(|r| scalar::dot_tiled(&q, r)).collect();
        assert_eq!(got_scalar, want_scalar);
        kernels::dot_rows(&q, &rows, &mut got);
        let want: Vec<f32> = rows.chunks_exact(d).map(|r| kernels::dot(&q, r)).collect();
        assert_eq!(got, want, "dot_rows d={d} len={len}");
        scalar::dot_rows(&q, &rows, &mut got_scalar);
        let want_scalar: Vec<f32> = rows.chunks_exact(d).map(|r| scalar::dot(&q, r)).collect();
        assert_eq!(got_scalar, want_scalar);

        let weights = rng.vec(len, 1.0);
        let start = rng.vec(8 * d, 1.0);
        let (mut got, mut want) = (start.clone(), start.clone());
        kernels::axpy_lanes8(&mut got, &weights, &rows);
        for (j, (&a, row)) in weights.iter().zip(rows.chunks_exact(d)).enumerate() {
            kernels::axpy(&mut want[j % 8 * d..(j % 8 + 1) * d], a, row);
        }
        assert_eq!(got, want, "axpy_lanes8 d={d} len={len}");
        let (mut got_scalar, mut want_scalar) = (start.clone(), start.clone());
        scalar::axpy_in_lanes(&mut got_scalar, &weights, &rows, 8);
        for (j, (&a, row)) in weights.iter().zip(rows.chunks_exact(d)).enumerate() {
            scalar::axpy(&mut want_scalar[j % 8 * d..(j % 8 + 1) * d], a, row);
        }
        assert_eq!(got_scalar, want_scalar);
    }
    for (d, len) in [(64usize, 1usize), (64, 33), (12, 70), (64, 300)] {
        check_axpy_in_lanes(&mut rng, convert, d, len);
    }
    // Rounding to the cache type, including ties, tiny and huge values.
    let mut x = rng.vec(37, 100.0);
    x.extend([1.0 + 1.0 / 2048.0, 65520.0, -1e-8, 3e38, 0.0, -0.0]);
    let (mut got, mut want) = (x.clone(), x.clone());
    // SAFETY: AVX2/FMA/F16C asserted above.
    unsafe { kernels::avx2::round_to::<W>(&mut got) };
    scalar::round_to::<W>(&mut want);
    assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    // Storing into the cache type (the KV cache's writes): the same values, each from_f32.
    let mut stored: Vec<W> = vec![bytemuck::Zeroable::zeroed(); x.len()];
    // SAFETY: AVX2/FMA/F16C asserted above; equal lengths.
    unsafe { kernels::avx2::narrow(&mut stored, &x) };
    let want: Vec<W> = x.iter().map(|&v| W::from_f32(v)).collect();
    assert_eq!(bytemuck::cast_slice::<W, u8>(&stored), bytemuck::cast_slice::<W, u8>(&want));
}

#[test]
fn attention_kernels_equal_their_definitions() {
    check_attention_kernels::<f32>(|v| v);
    check_attention_kernels::<f16>(f16::from_f32);
    check_attention_kernels::<bf16>(bf16::from_f32);
}

/// The streaming read of the bandwidth probe sums words exactly as its scalar twin.
#[test]
fn sum_words_equals_its_scalar_twin() {
    assert!(avx2_available(), "these tests compare the AVX2 kernels: run them on an AVX2 machine");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for n in [0usize, 1, 15, 16, 17, 64, 1000] {
        let words: Vec<u64> = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                state
            })
            .collect();
        assert_eq!(kernels::sum_words(&words), scalar::sum_words(&words), "n={n}");
    }
}
