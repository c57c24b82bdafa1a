//! Scalar references for every kernel in `kernels`: plain loops, the ground truth for tests.

use super::Elem;

pub fn dot<W: Elem>(x: &[f32], w: &[W]) -> f32 {
    x.iter().zip(w).map(|(&a, &b)| a * b.to_f32()).sum()
}

pub fn axpy<W: Elem>(y: &mut [f32], a: f32, w: &[W]) {
    for (yi, &wi) in y.iter_mut().zip(w) {
        *yi += a * wi.to_f32();
    }
}

