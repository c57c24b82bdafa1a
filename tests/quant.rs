//! Quantized kernels: AVX2 against scalar on random blocks, and quantized dot products against
//! f32 arithmetic on the dequantized weights (the error must be what activation quantization
//! explains, no more).

use _native::quant::blocks::*;
use _native::quant::{scalar, ActBlock, ActPack, QuantBlock, SumOrder};
use half::f16;

mod common;
use common::Rng;

/// Random blocks: random bytes, then sane scales (random f16 bits can be NaN).
fn random_blocks<B: QuantBlock>(rng: &mut Rng, n: usize, fix: impl Fn(&mut B, &mut Rng)) -> Vec<B> {
    let mut blocks: Vec<B> = vec![bytemuck::Zeroable::zeroed(); n];
    for b in blocks.iter_mut() {
        for byte in bytemuck::bytes_of_mut(b) {
            *byte = rng.next_u64() as u8;
        }
        fix(b, rng);
    }
    blocks
}

fn avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

/// One random row: weights, activations, and the activations quantized.
type Case<B> = (Vec<B>, Vec<f32>, Vec<<B as QuantBlock>::Act>);

/// Random rows of 1 to 18 blocks, 20 of each length.
fn cases<B: QuantBlock>(seed: u64, fix: impl Fn(&mut B, &mut Rng)) -> Vec<Case<B>> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for &n_blocks in &[1usize, 2, 3, 8, 18] {
        for _ in 0..20 {
            let w: Vec<B> = random_blocks(&mut rng, n_blocks, &fix);
            let x = rng.vec(n_blocks * B::QK, 1.0);
            let mut act: Vec<B::Act> = vec![bytemuck::Zeroable::zeroed(); n_blocks * B::QK / <B::Act as ActBlock>::QK];
            B::Act::quantize(&x, &mut act);
            out.push((w, x, act));
        }
    }
    out
}

/// Checks one type: SIMD == scalar (to float rounding), and quantized dot ~ f32 dot.
fn check<B: QuantBlock>(name: &str, fix: impl Fn(&mut B, &mut Rng), simd: unsafe fn(&[B], &[B::Act]) -> f32, reference: fn(&[B], &[B::Act]) -> f32) {
    assert!(avx2(), "run these tests on an AVX2 machine");
    for (w, x, act) in cases(0x9E37_79B9_7F4A_7C15, &fix) {
        let n_blocks = w.len();
        let want = reference(&w, &act);
        // SAFETY: equal block counts; AVX2/FMA/F16C asserted.
        let got = unsafe { simd(&w, &act) };
        let mut wf = vec![0.0; n_blocks * B::QK];
        B::dequantize(&w, &mut wf);
        let magnitude: f32 = wf.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum::<f32>().max(1e-3);
        assert!((got - want).abs() <= 1e-5 * magnitude, "{name}: simd {got} vs scalar {want}");
        assert_eq!(B::dot(&w, &act), got, "{name}: dispatch picks the SIMD path");
        // Quantizing x to 8 bits moves each element by at most half a step (amax / 254),
        // plus the f16 rounding of the activation scale.
        let exact: f32 = wf.iter().zip(&x).map(|(a, b)| a * b).sum();
        let step_error: f32 = wf.iter().map(|v| v.abs()).sum::<f32>() * (1.0 / 254.0 + 1e-3);
        assert!((got - exact).abs() <= step_error + 1e-4, "{name}: quantized {got} vs f32 {exact} (bound {step_error})");
    }
}

/// The first R activation rows packed block by block, as quant_matmul packs them.
fn packs<A: ActBlock, const R: usize>(acts: &[Vec<A>]) -> Vec<ActPack<R>> {
    (0..acts[0].len()).map(|b| ActPack::new(std::array::from_fn(|k| &acts[k][b]))).collect()
}

/// The activation rows a pack was made from, rebuilt from it field by field.
#[test]
fn act_pack_holds_each_rows_block() {
    let mut rng = Rng(5);
    let acts: Vec<Vec<BlockQ8_1>> = random_acts(&mut rng, 3);
    for (b, pack) in packs::<_, 8>(&acts).iter().enumerate() {
        for (k, act) in acts.iter().enumerate() {
            let y = &act[b];
            assert_eq!((pack.d[k], pack.s[k], pack.qs[k]), (y.d, y.s, y.qs), "row {k}, block {b}");
        }
    }
}

/// `DOT4` and `DOT8` (one weight row, four or eight packed activation rows) and `dot_w4` (four
/// weight rows, one activation row) must equal `dot` bit for bit: batched decoding promises the
/// tokens of separate runs, prefill those of decoding, and decoding does not depend on how
/// rows are grouped.
fn check_multi_row<B: QuantBlock>(name: &str, fix: impl Fn(&mut B, &mut Rng)) {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for &n_blocks in &[1usize, 5, 18, 48] {
        let w: Vec<B> = random_blocks(&mut rng, n_blocks, &fix);
        let acts: Vec<Vec<B::Act>> = random_acts(&mut rng, n_blocks * B::QK / <B::Act as ActBlock>::QK);
        let singles: Vec<u32> = acts.iter().map(|a| B::dot(&w, a).to_bits()).collect();
        let others: Vec<Vec<B>> = (0..3).map(|_| random_blocks(&mut rng, n_blocks, &fix)).collect();
        let rows = [&others[0][..], &w, &others[1], &others[2]];
        let want: Vec<u32> = rows.iter().map(|row| B::dot(row, &acts[0]).to_bits()).collect();
        assert_eq!(B::dot_w4(rows, &acts[0]).map(f32::to_bits), want[..], "{name}: dot_w4 with {n_blocks} blocks");
        let dot4 = B::DOT4.expect("a four-row kernel");
        assert_eq!(dot4(&w, &packs(&acts)).map(f32::to_bits), singles[..4], "{name}: DOT4 with {n_blocks} blocks");
        let dot8 = B::DOT8.expect("an eight-row kernel");
        assert_eq!(dot8(&w, &packs(&acts)).map(f32::to_bits), singles[..], "{name}: DOT8 with {n_blocks} blocks");
    }
}

type DotPacked<B, const R: usize> = unsafe fn(&[B], &[ActPack<R>]) -> [f32; R];

/// Both variants of a packed kernel, called directly (dispatch picks one of them).
fn check_packed_variants<B: QuantBlock, const R: usize>(fix: impl Fn(&mut B, &mut Rng), avx2_variant: DotPacked<B, R>, vnni_variant: DotPacked<B, R>) {
    assert!(avx2(), "run these tests on an AVX2 machine");
    let mut rng = Rng(77);
    let w: Vec<B> = random_blocks(&mut rng, 48, fix);
    let acts: Vec<Vec<B::Act>> = random_acts(&mut rng, 48);
    let packed = packs(&acts);
    let want: Vec<u32> = acts[..R].iter().map(|a| B::dot(&w, a).to_bits()).collect();
    // SAFETY: equal block counts; AVX2/FMA/F16C asserted above.
    let got = unsafe { avx2_variant(&w, &packed) };
    assert_eq!(got.map(f32::to_bits), want[..]);
    if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
        // SAFETY: as above, and VNNI/VL were detected.
        let got = unsafe { vnni_variant(&w, &packed) };
        assert_eq!(got.map(f32::to_bits), want[..]);
    } else {
        eprintln!("no AVX-512 VNNI on this CPU: the VNNI variant is not exercised");
    }
}

/// The single-row kernels' AVX2 and VNNI variants, bit for bit.
fn check_dot_variants<B: QuantBlock>(fix: impl Fn(&mut B, &mut Rng), avx2_variant: unsafe fn(&[B], &[B::Act]) -> f32, vnni_variant: unsafe fn(&[B], &[B::Act]) -> f32) {
    assert!(avx2(), "run these tests on an AVX2 machine");
    if !(is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")) {
        eprintln!("no AVX-512 VNNI on this CPU: the VNNI variants are not exercised");
        return;
    }
    let mut rng = Rng(91);
    for n_blocks in [1usize, 18, 48] {
        let w: Vec<B> = random_blocks(&mut rng, n_blocks, &fix);
        let mut act = vec![bytemuck::Zeroable::zeroed(); n_blocks];
        B::Act::quantize(&rng.vec(n_blocks * B::QK, 1.0), &mut act);
        // SAFETY: equal block counts; AVX2/FMA/F16C asserted, VNNI/VL detected.
        let (a, v) = unsafe { (avx2_variant(&w, &act), vnni_variant(&w, &act)) };
        assert_eq!(a.to_bits(), v.to_bits());
    }
}

#[test]
fn single_row_vnni_variants_equal_avx2_bit_for_bit() {
    use _native::quant::avx2;
    check_dot_variants::<BlockQ4_1>(|b, r| (b.d, b.m) = (r.scale(), f16::from_f32(0.2 * r.unit())), avx2::dot_q4_1_avx2, avx2::dot_q4_1_vnni);
    check_dot_variants::<BlockQ8_0>(|b, r| b.d = r.scale(), avx2::dot_q8_0_avx2, avx2::dot_q8_0_vnni);
}

type DotW4<B> = unsafe fn([&[B]; 4], &[<B as QuantBlock>::Act]) -> [f32; 4];

/// Both variants of a four-weight-row kernel against four single (SIMD) dot products.
fn check_dot_w4_variants<B: QuantBlock>(fix: impl Fn(&mut B, &mut Rng), avx2_variant: DotW4<B>, vnni_variant: DotW4<B>) {
    assert!(avx2(), "run these tests on an AVX2 machine");
    let mut rng = Rng(53);
    for n_blocks in [1usize, 18, 48] {
        let ws: Vec<Vec<B>> = (0..4).map(|_| random_blocks(&mut rng, n_blocks, &fix)).collect();
        let rows: [&[B]; 4] = std::array::from_fn(|r| ws[r].as_slice());
        let mut act = vec![bytemuck::Zeroable::zeroed(); n_blocks];
        B::Act::quantize(&rng.vec(n_blocks * B::QK, 1.0), &mut act);
        let want: Vec<u32> = rows.iter().map(|w| B::dot(w, &act).to_bits()).collect();
        // SAFETY: equal block counts; AVX2/FMA/F16C asserted above.
        assert_eq!(unsafe { avx2_variant(rows, &act) }.map(f32::to_bits), want[..]);
        if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
            // SAFETY: as above, and VNNI/VL were detected.
            assert_eq!(unsafe { vnni_variant(rows, &act) }.map(f32::to_bits), want[..]);
        } else {
            eprintln!("no AVX-512 VNNI on this CPU: the VNNI variant is not exercised");
        }
    }
}

#[test]
fn dot_w4_avx2_and_vnni_variants_equal_dot_bit_for_bit() {
    use _native::quant::avx2;
    check_dot_w4_variants::<BlockQ4_1>(|b, r| (b.d, b.m) = (r.scale(), f16::from_f32(-0.1 * r.unit())), avx2::dot_w4_q4_1_avx2, avx2::dot_w4_q4_1_vnni);
    check_dot_w4_variants::<BlockQ8_0>(|b, r| b.d = r.scale(), avx2::dot_w4_q8_0_avx2, avx2::dot_w4_q8_0_vnni);
}

#[test]
fn packed_avx2_and_vnni_variants_equal_dot_bit_for_bit() {
    use _native::quant::avx2;
    let q4_1 = |b: &mut BlockQ4_1, r: &mut Rng| (b.d, b.m) = (r.scale(), f16::from_f32(-0.1 * r.unit()));
    check_packed_variants::<BlockQ4_1, 8>(q4_1, avx2::dot_packed_q4_1_avx2, avx2::dot_packed_q4_1_vnni);
    check_packed_variants::<BlockQ4_1, 4>(q4_1, avx2::dot_packed_q4_1_avx2, avx2::dot_packed_q4_1_vnni);
    let q8_0 = |b: &mut BlockQ8_0, r: &mut Rng| b.d = r.scale();
    check_packed_variants::<BlockQ8_0, 8>(q8_0, avx2::dot_packed_q8_0_avx2, avx2::dot_packed_q8_0_vnni);
    check_packed_variants::<BlockQ8_0, 4>(q8_0, avx2::dot_packed_q8_0_avx2, avx2::dot_packed_q8_0_vnni);
    let q5_0 = |b: &mut BlockQ5_0, r: &mut Rng| b.d = r.scale();
    check_packed_variants::<BlockQ5_0, 8>(q5_0, avx2::dot_packed_q5_0_avx2, avx2::dot_packed_q5_0_vnni);
    check_packed_variants::<BlockQ5_0, 4>(q5_0, avx2::dot_packed_q5_0_avx2, avx2::dot_packed_q5_0_vnni);
}

/// The packed Q8_0 kernels at the byte extremes (weights -128 and ±127, activations ±127),
/// where the VNNI variant's biased unsigned bytes and the AVX2 variant's signs both reach
/// their limits: equal to the one-row dot product bit for bit.
#[test]
fn packed_q8_0_kernels_at_the_byte_extremes() {
    use _native::quant::avx2;
    assert!(avx2(), "run these tests on an AVX2 machine");
    let extremes = [-128i8, -127, 127, 0, 1, -1];
    let w: Vec<BlockQ8_0> = (0..20)
        .map(|b| BlockQ8_0 { d: f16::from_f32(0.5), qs: std::array::from_fn(|i| extremes[(b * 7 + i) % extremes.len()]) })
        .collect();
    let acts: Vec<Vec<BlockQ8_0>> = (0..8)
        .map(|row| (0..20).map(|b| BlockQ8_0 { d: f16::from_f32(0.25), qs: std::array::from_fn(|i| if (row + b + i) % 3 == 0 { -127 } else { 127 }) }).collect())
        .collect();
    let want: Vec<u32> = acts.iter().map(|a| BlockQ8_0::dot(&w, a).to_bits()).collect();
    let exact: Vec<f64> = acts.iter().map(|a| w.iter().zip(a).map(|(x, y)| 0.125 * x.qs.iter().zip(&y.qs).map(|(&p, &q)| p as f64 * q as f64).sum::<f64>()).sum()).collect();
    for (k, (&bits, &e)) in want.iter().zip(&exact).enumerate() {
        assert_eq!(f32::from_bits(bits) as f64, e, "row {k}: the one-row dot product is exact here");
    }
    // SAFETY: equal block counts; AVX2/FMA/F16C asserted above.
    assert_eq!(unsafe { avx2::dot_packed_q8_0_avx2::<8>(&w, &packs(&acts)) }.map(f32::to_bits), want[..]);
    if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
        // SAFETY: as above, and VNNI/VL were detected.
        assert_eq!(unsafe { avx2::dot_packed_q8_0_vnni::<8>(&w, &packs(&acts)) }.map(f32::to_bits), want[..]);
        assert_eq!(unsafe { avx2::dot_packed_q8_0_vnni::<4>(&w, &packs(&acts)) }.map(f32::to_bits), want[..4]);
    }
}

#[test]
fn multi_row_dots_equal_dot_bit_for_bit() {
    check_multi_row::<BlockQ4_1>("q4_1", |b, r| (b.d, b.m) = (r.scale(), f16::from_f32(-0.1 * r.unit())));
    check_multi_row::<BlockQ8_0>("q8_0", |b, r| b.d = r.scale());
}

#[test]
fn q4_0() {
    check::<BlockQ4_0>("q4_0", |b, r| b.d = r.scale(), _native::quant::avx2::dot_q4_0, scalar::dot_q4_0);
}

#[test]
fn q4_1() {
    check::<BlockQ4_1>("q4_1", |b, r| (b.d, b.m) = (r.scale(), f16::from_f32(-0.1 * r.unit())), _native::quant::avx2::dot_q4_1, scalar::dot_q4_1);
}

#[test]
fn q5_0() {
    check::<BlockQ5_0>("q5_0", |b, r| b.d = r.scale(), _native::quant::avx2::dot_q5_0, scalar::dot_q5_0);
}

#[test]
fn q5_1() {
    check::<BlockQ5_1>("q5_1", |b, r| (b.d, b.m) = (r.scale(), f16::from_f32(0.1 * r.unit())), _native::quant::avx2::dot_q5_1, scalar::dot_q5_1);
}

#[test]
fn q8_0() {
    check::<BlockQ8_0>("q8_0", |b, r| b.d = r.scale(), _native::quant::avx2::dot_q8_0, scalar::dot_q8_0);
}

#[test]
fn q4_k() {
    check::<BlockQ4K>("q4_k", |b, r| (b.d, b.dmin) = (r.scale(), r.scale()), _native::quant::avx2::dot_q4_k, scalar::dot_q4_k);
}

#[test]
fn q5_k() {
    check::<BlockQ5K>("q5_k", |b, r| (b.d, b.dmin) = (r.scale(), r.scale()), _native::quant::avx2::dot_q5_k, scalar::dot_q5_k);
}

/// The kernels that follow llama.cpp's AVX2 summation order (K-quants, IQ4) have scalar twins
/// in the same order: equal bit for bit, not just to rounding.
#[test]
fn llama_cpp_order_avx2_dots_equal_scalar_bit_for_bit() {
    fn same<B: QuantBlock>(name: &str, fix: impl Fn(&mut B, &mut Rng), simd: unsafe fn(&[B], &[B::Act]) -> f32, reference: fn(&[B], &[B::Act]) -> f32) {
        assert!(avx2(), "run these tests on an AVX2 machine");
        for (w, _, act) in cases(0x2545_F491_4F6C_DD1D, fix) {
            // SAFETY: equal block counts; AVX2/FMA/F16C asserted.
            let got = unsafe { simd(&w, &act) };
            assert_eq!(got.to_bits(), reference(&w, &act).to_bits(), "{name}: {} blocks", w.len());
        }
    }
    let q4k = |b: &mut BlockQ4K, r: &mut Rng| (b.d, b.dmin) = (r.scale(), r.scale());
    same::<BlockQ4K>("q4_k", q4k, _native::quant::avx2::dot_q4_k, scalar::dot_q4_k);
    same::<BlockQ4K>("q4_k gemm4", q4k, _native::quant::avx2::dot_gemm4_q4_k, scalar::dot_gemm4_q4_k);
    let q5k = |b: &mut BlockQ5K, r: &mut Rng| (b.d, b.dmin) = (r.scale(), r.scale());
    same::<BlockQ5K>("q5_k", q5k, _native::quant::avx2::dot_q5_k, scalar::dot_q5_k);
    same::<BlockQ5K>("q5_k tiled", q5k, _native::quant::avx2::dot_tiled_q5_k, scalar::dot_tiled_q5_k);
    let q6k = |b: &mut BlockQ6K, r: &mut Rng| b.d = f16::from_f32(0.01 * r.scale().to_f32());
    same::<BlockQ6K>("q6_k", q6k, _native::quant::avx2::dot_q6_k, scalar::dot_q6_k);
    same::<BlockQ6K>("q6_k tiled", q6k, _native::quant::avx2::dot_tiled_q6_k, scalar::dot_tiled_q6_k);
    let q2k = |b: &mut BlockQ2K, r: &mut Rng| (b.d, b.dmin) = (r.scale(), r.scale());
    same::<BlockQ2K>("q2_k", q2k, _native::quant::avx2::dot_q2_k, scalar::dot_q2_k);
    same::<BlockQ2K>("q2_k tiled", q2k, _native::quant::avx2::dot_tiled_q2_k, scalar::dot_tiled_q2_k);
    same::<BlockQ3K>("q3_k", |b, r| b.d = r.scale(), _native::quant::avx2::dot_q3_k, scalar::dot_q3_k);
    same::<BlockQ3K>("q3_k tiled", |b, r| b.d = r.scale(), _native::quant::avx2::dot_tiled_q3_k, scalar::dot_tiled_q3_k);
    same::<BlockIQ4XS>("iq4_xs", |b, r| b.d = r.scale(), _native::quant::avx2::dot_iq4_xs, scalar::dot_iq4_xs);
    same::<BlockIQ4XS>("iq4_xs tiled", |b, r| b.d = r.scale(), _native::quant::avx2::dot_tiled_iq4_xs, scalar::dot_tiled_iq4_xs);
    same::<BlockQ4_0>("q4_0", |b, r| b.d = r.scale(), _native::quant::avx2::dot_q4_0, scalar::dot_q4_0);
    same::<BlockIQ4NL>("iq4_nl", |b, r| b.d = r.scale(), _native::quant::avx2::dot_iq4_nl, scalar::dot_iq4_nl);
}

#[test]
fn q2_k() {
    check::<BlockQ2K>("q2_k", |b, r| (b.d, b.dmin) = (r.scale(), r.scale()), _native::quant::avx2::dot_q2_k, scalar::dot_q2_k);
}

#[test]
fn q3_k() {
    check::<BlockQ3K>("q3_k", |b, r| b.d = r.scale(), _native::quant::avx2::dot_q3_k, scalar::dot_q3_k);
}

#[test]
fn iq4_nl() {
    check::<BlockIQ4NL>("iq4_nl", |b, r| b.d = r.scale(), _native::quant::avx2::dot_iq4_nl, scalar::dot_iq4_nl);
}

#[test]
fn iq4_xs() {
    check::<BlockIQ4XS>("iq4_xs", |b, r| b.d = r.scale(), _native::quant::avx2::dot_iq4_xs, scalar::dot_iq4_xs);
}

#[test]
fn q6_k() {
    check::<BlockQ6K>("q6_k", |b, r| b.d = f16::from_f32(0.01 * r.scale().to_f32()), _native::quant::avx2::dot_q6_k, scalar::dot_q6_k);
}

#[test]
fn activation_quantization_rounds_half_to_even_and_keeps_sums() {
    // amax = 127 makes the scale exactly 1, so x * id is x itself: 2.5 -> 2, 3.5 -> 4, -0.5 -> 0.
    let mut x = vec![0.0f32; 32];
    x[..5].copy_from_slice(&[127.0, 2.5, 3.5, -0.5, -1.5]);
    let mut b8 = [BlockQ8_1 { d: 0.0, s: 0.0, qs: [0; 32] }];
    BlockQ8_1::quantize(&x, &mut b8);
    assert_eq!(&b8[0].qs[..5], &[127, 2, 4, 0, -2]);
    assert_eq!(b8[0].d, 1.0);
    assert_eq!(b8[0].s, 131.0);
    // Q8_K: the largest-magnitude element maps to -127 * sign flip, bsums per 16.
    let mut rng = Rng(5);
    let x = rng.vec(256, 1.0);
    let mut k = [BlockQ8K { d: 0.0, qs: [0; 256], bsums: [0; 16] }];
    BlockQ8K::quantize(&x, &mut k);
    for g in 0..16 {
        assert_eq!(k[0].bsums[g] as i32, k[0].qs[16 * g..16 * g + 16].iter().map(|&q| q as i32).sum::<i32>());
    }
    for (q, v) in k[0].qs.iter().zip(&x) {
        assert!((*q as f32 * k[0].d - v).abs() <= k[0].d.abs() * 0.5 + 1e-6);
    }
    let zeros = [0.0f32; 256];
    BlockQ8K::quantize(&zeros, &mut k);
    assert_eq!(k[0].d, 0.0);
}

#[test]
fn avx2_activation_quantization_equals_scalar_bit_for_bit() {
    assert!(avx2(), "run these tests on an AVX2 machine");
    let mut rng = Rng(11);
    let mut cases: Vec<Vec<f32>> = (0..50).map(|_| rng.vec(32 * 6, 1.0)).collect();
    // Halfway cases (amax 127: scale 1), an all-zero block, and large magnitudes.
    let mut ties = vec![0.0f32; 64];
    ties[..6].copy_from_slice(&[127.0, 2.5, 3.5, -0.5, -1.5, -126.5]);
    cases.push(ties);
    cases.push(rng.vec(32, 1.0).iter().map(|v| v * 3e4).collect());
    for x in &cases {
        let n = x.len() / 32;
        let (mut simd0, mut ref0) = (vec![bytemuck::Zeroable::zeroed(); n], vec![bytemuck::Zeroable::zeroed(); n]);
        // SAFETY: x.len() == 32 * n; AVX2/FMA/F16C asserted.
        unsafe { _native::quant::avx2::quantize_q8_0(x, &mut simd0) };
        scalar::quantize_q8_0(x, &mut ref0);
        assert_eq!(bytemuck::cast_slice::<BlockQ8_0, u8>(&simd0), bytemuck::cast_slice::<BlockQ8_0, u8>(&ref0));
        let (mut simd1, mut ref1) = (vec![bytemuck::Zeroable::zeroed(); n], vec![bytemuck::Zeroable::zeroed(); n]);
        // SAFETY: as above.
        unsafe { _native::quant::avx2::quantize_q8_1(x, &mut simd1) };
        scalar::quantize_q8_1(x, &mut ref1);
        assert_eq!(bytemuck::cast_slice::<BlockQ8_1, u8>(&simd1), bytemuck::cast_slice::<BlockQ8_1, u8>(&ref1));
    }
    // Q8_K: random blocks; halfway cases with -127 before +127 (the first of the largest
    // magnitude gives the scale's sign) and an all-zero block; large magnitudes.
    let mut cases: Vec<Vec<f32>> = (0..20).map(|_| rng.vec(256 * 3, 1.0)).collect();
    let mut ties = vec![0.0f32; 512];
    ties[..7].copy_from_slice(&[2.5, -127.0, 3.5, 127.0, -0.5, -1.5, -126.5]);
    cases.push(ties);
    cases.push(rng.vec(256, 1.0).iter().map(|v| v * 3e4).collect());
    for x in &cases {
        let n = x.len() / 256;
        let (mut simd, mut reference) = (vec![bytemuck::Zeroable::zeroed(); n], vec![bytemuck::Zeroable::zeroed(); n]);
        // SAFETY: x.len() == 256 * n; AVX2 asserted.
        unsafe { _native::quant::avx2::quantize_q8_k(x, &mut simd) };
        scalar::quantize_q8_k(x, &mut reference);
        assert_eq!(bytemuck::cast_slice::<BlockQ8K, u8>(&simd), bytemuck::cast_slice::<BlockQ8K, u8>(&reference));
    }
}

/// Eight quantized activation rows of `n_blocks` blocks each, from random values.
fn random_acts<A: ActBlock>(rng: &mut Rng, n_blocks: usize) -> Vec<Vec<A>> {
    (0..8)
        .map(|_| {
            let mut act = vec![bytemuck::Zeroable::zeroed(); n_blocks];
            A::quantize(&rng.vec(n_blocks * A::QK, 1.0), &mut act);
            act
        })
        .collect()
}

/// The packed kernels' scalar twins (the path without AVX2) equal the scalar one-row dot
/// product of each row bit for bit.
#[test]
fn scalar_packed_dots_equal_scalar_dot_bit_for_bit() {
    let mut rng = Rng(91);
    for n_blocks in [1usize, 33, 48] {
        let w: Vec<BlockQ4_1> = random_blocks(&mut rng, n_blocks, |b: &mut BlockQ4_1, r| (b.d, b.m) = (r.scale(), f16::from_f32(-0.1 * r.unit())));
        let acts = random_acts::<BlockQ8_1>(&mut rng, n_blocks);
        let want: Vec<u32> = acts.iter().map(|a| scalar::dot_q4_1(&w, a).to_bits()).collect();
        assert_eq!(scalar::dot_packed_q4_1::<8>(&w, &packs(&acts)).map(f32::to_bits), want[..], "q4_1, {n_blocks} blocks");
        assert_eq!(scalar::dot_packed_q4_1::<4>(&w, &packs(&acts)).map(f32::to_bits), want[..4], "q4_1 x4, {n_blocks} blocks");

        let w: Vec<BlockQ8_0> = random_blocks(&mut rng, n_blocks, |b: &mut BlockQ8_0, r| b.d = r.scale());
        let acts = random_acts::<BlockQ8_0>(&mut rng, n_blocks);
        let want: Vec<u32> = acts.iter().map(|a| scalar::dot_q8_0(&w, a).to_bits()).collect();
        assert_eq!(scalar::dot_packed_q8_0::<8>(&w, &packs(&acts)).map(f32::to_bits), want[..], "q8_0, {n_blocks} blocks");
        assert_eq!(scalar::dot_packed_q8_0::<4>(&w, &packs(&acts)).map(f32::to_bits), want[..4], "q8_0 x4, {n_blocks} blocks");

        let w: Vec<BlockQ5_0> = random_blocks(&mut rng, n_blocks, |b: &mut BlockQ5_0, r| b.d = r.scale());
        let acts = random_acts::<BlockQ8_0>(&mut rng, n_blocks);
        let want: Vec<u32> = acts.iter().map(|a| scalar::dot_q5_0(&w, a).to_bits()).collect();
        assert_eq!(scalar::dot_packed_q5_0::<8>(&w, &packs(&acts)).map(f32::to_bits), want[..], "q5_0, {n_blocks} blocks");
        assert_eq!(scalar::dot_packed_q5_0::<4>(&w, &packs(&acts)).map(f32::to_bits), want[..4], "q5_0 x4, {n_blocks} blocks");
    }
}

/// The storage-type table lists every type once, each name parses back to its type, and the
/// block sizes and alignments are ggml's layouts (what Python reads through
/// `gptgen._native.storage_types`).
#[test]
fn storage_type_table_lists_every_type() {
    use _native::tensor::DType;
    let want = [
        ("f32", 1, 4, 4),
        ("f16", 1, 2, 2),
        ("bf16", 1, 2, 2),
        ("q4_0", 32, 18, 2),
        ("q4_1", 32, 20, 2),
        ("q5_0", 32, 22, 2),
        ("q5_1", 32, 24, 2),
        ("q8_0", 32, 34, 2),
        ("q4_k", 256, 144, 2),
        ("q5_k", 256, 176, 2),
        ("q6_k", 256, 210, 2),
        ("q2_k", 256, 84, 2),
        ("q3_k", 256, 110, 2),
        ("iq4_nl", 32, 18, 2),
        ("iq4_xs", 256, 136, 2),
    ];
    let got: Vec<(&str, usize, usize, usize)> = DType::ALL.iter().map(|t| (t.name(), t.block().0, t.block().1, t.align())).collect();
    assert_eq!(got, want);
    for &t in DType::ALL {
        assert_eq!(DType::parse(t.name()).unwrap(), t);
        assert_eq!(t.is_quantized(), t.block().0 > 1);
    }
    assert!(DType::parse("f64").is_err());
}

/// The four-activation-row kernels equal four one-row kernels of the same order, bit for bit
/// (in every order the type has), whichever path `dot_x4_in` dispatches to.
#[test]
fn four_row_dots_equal_one_row_dots_bit_for_bit() {
    fn same<B: QuantBlock>(name: &str, fix: impl Fn(&mut B, &mut Rng), orders: &[SumOrder]) {
        assert!(avx2(), "run these tests on an AVX2 machine");
        for &n_blocks in &[1usize, 3, 19] {
            let mut rng = Rng(0x5851_F42D_4C95_7F2D ^ n_blocks as u64);
            let w: Vec<B> = random_blocks(&mut rng, n_blocks, &fix);
            let acts = random_acts::<B::Act>(&mut rng, n_blocks);
            for &order in orders {
                let rows: [&[B::Act]; 4] = std::array::from_fn(|r| &acts[r][..]);
                let want = rows.map(|a| B::dot_in(&w, a, order).to_bits());
                assert_eq!(B::dot_x4_in(&w, rows, order).map(f32::to_bits), want, "{name} {order:?}, {n_blocks} blocks");
            }
        }
    }
    same::<BlockQ4K>("q4_k", |b, r| (b.d, b.dmin) = (r.scale(), r.scale()), &[SumOrder::Alone, SumOrder::Gemm4]);
    same::<BlockQ6K>("q6_k", |b, r| b.d = f16::from_f32(0.01 * r.scale().to_f32()), &[SumOrder::Alone, SumOrder::Tiled]);
}
