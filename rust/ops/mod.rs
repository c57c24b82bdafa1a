//! The operations of a forward pass, over f32 activations laid out row-major [tokens, features].

pub mod activation;
pub mod attention;
pub mod matmul;
pub mod norm;
pub mod rope;

/// x[i] += y[i]: the residual connection.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len());
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
