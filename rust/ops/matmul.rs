//! y = x Wᵀ (+ b) for a batch of activation rows, threaded over output columns.
//!
//! The output columns are split into tiles; each rayon task owns one tile and computes it for
//! every token, so a tile's weights are read from memory once per call whatever the batch size.
//! With one token the tiles are contiguous pieces of y and are written in place; with several,
//! tasks write tiles into a scratch buffer that is then scattered into y row by row.

use crate::kernels::{axpy, dot, Elem};
use crate::tensor::{with_elems, Layout, Matrix};
use rayon::prelude::*;

/// Output columns per task for [n_out, n_in] weights: each column is one dot product.
const TILE_OUT_IN: usize = 32;
/// Output columns per task for [n_in, n_out] weights: wider, so each stored row segment read
/// by an axpy spans several cache lines.
const TILE_IN_OUT: usize = 128;
/// Tokens processed together while a tile's weights sit in cache.
const TOKEN_BLOCK: usize = 32;

/// y[n, n_out] = x[n, n_in] · Wᵀ + bias. `scratch` grows to n * n_out when n > 1.
pub fn matmul(y: &mut [f32], x: &[f32], w: &Matrix, bias: Option<&[f32]>, scratch: &mut Vec<f32>) {
    let (n_in, n_out) = (w.n_in, w.n_out);
    assert!(n_in > 0 && x.len() % n_in == 0, "matmul: x is not a whole number of rows");
    let n = x.len() / n_in;
    assert_eq!(y.len(), n * n_out, "matmul: y has the wrong size");
    if let Some(b) = bias {
        assert_eq!(b.len(), n_out, "matmul: bias has the wrong size");
    }
    let tile = match w.layout {
        Layout::OutIn => TILE_OUT_IN,
        Layout::InOut => TILE_IN_OUT,
    };
    let fill = |k: usize, out: &mut [f32]| {
        let col0 = k * tile;
        let width = out.len() / n;
        with_elems!(w.tensor.elems(), ws => fill_tile(out, x, n, ws, w, bias, col0, width))
    };
    if n == 1 {
        y.par_chunks_mut(tile).enumerate().for_each(|(k, out)| fill(k, out));
        return;
    }
    scratch.resize(n * n_out, 0.0);
    scratch.par_chunks_mut(tile * n).enumerate().for_each(|(k, out)| fill(k, out));
    // Tile k holds [n, width_k] row-major; y wants [n, n_out].
    let tiles: &[f32] = scratch;
    y.par_chunks_mut(n_out).enumerate().for_each(|(t, y_row)| {
        for (k, y_part) in y_row.chunks_mut(tile).enumerate() {
            let width = y_part.len();
            let start = k * tile * n + t * width;
            y_part.copy_from_slice(&tiles[start..start + width]);
        }
    });
}

/// out[n, width] = columns col0..col0+width of x[n, n_in] · Wᵀ + bias.
#[allow(clippy::too_many_arguments)]
fn fill_tile<W: Elem>(
    out: &mut [f32],
    x: &[f32],
    n: usize,
    ws: &[W],
    w: &Matrix,
    bias: Option<&[f32]>,
    col0: usize,
    width: usize,
) {
    let (n_in, n_out) = (w.n_in, w.n_out);
    for t in 0..n {
        let row = &mut out[t * width..(t + 1) * width];
        match bias {
            Some(b) => row.copy_from_slice(&b[col0..col0 + width]),
            None => row.fill(0.0),
        }
    }
    match w.layout {
        Layout::OutIn => {
            for t0 in (0..n).step_by(TOKEN_BLOCK) {
                let t1 = (t0 + TOKEN_BLOCK).min(n);
                for j in 0..width {
                    let w_row = &ws[(col0 + j) * n_in..(col0 + j + 1) * n_in];
                    for t in t0..t1 {
                        out[t * width + j] += dot(&x[t * n_in..(t + 1) * n_in], w_row);
                    }
                }
            }
        }
        Layout::InOut => {
            for i in 0..n_in {
                let w_seg = &ws[i * n_out + col0..i * n_out + col0 + width];
                for t in 0..n {
                    axpy(&mut out[t * width..(t + 1) * width], x[t * n_in + i], w_seg);
                }
            }
        }
    }
}
