//! Pointwise activations.

/// GELU, tanh approximation (GPT-2's "gelu_new"):
/// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
pub fn gelu_tanh(x: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for v in x {
        let u = *v;
        *v = 0.5 * u * (1.0 + (SQRT_2_OVER_PI * (u + 0.044715 * u * u * u)).tanh());
    }
}

/// SwiGLU's gate: gate[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + e^-x).
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len());
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + exp(-*g)) * u;
    }
}

/// e^x, bit for bit as ggml's vectorised expf (ggml_v_expf, from Arm's optimized routines:
/// a degree-5 polynomial on a reduced argument, scaled by 2^n; at most 1.5 ulp from exact).
/// Softmax and SiLU use it so that logits match llama.cpp's to the last bit wherever the
/// rest of the arithmetic does. Constants are given as bits: they are exact f32 values.
pub fn exp(x: f32) -> f32 {
    let c = f32::from_bits;
    let shift = c(0x4b40_0000); // 0x1.8p23: adding it leaves round(x / ln2) in the low bits
    let z = x.mul_add(c(0x3fb8_aa3b), shift); // x * log2(e) + shift
    let n = z - shift;
    // b = x - n ln2, with ln2 split in two parts for accuracy.
    let b = (-n).mul_add(c(0x35bf_be8e), (-n).mul_add(c(0x3f31_7200), x));
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
    let u = b * b;
    let j = c(0x3c07_2010)
        .mul_add(b, c(0x3d2b_9f17))
        .mul_add(u, c(0x3e2a_af33).mul_add(b, c(0x3eff_fedb)))
        .mul_add(u, c(0x3f7f_fff6) * b);
    if n.abs() <= 126.0 {
        return j.mul_add(k, k);
    }
    // Out of the normal range: scale in two steps, or saturate to 0 / infinity.
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}
