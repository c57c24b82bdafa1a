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
