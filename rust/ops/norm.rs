//! Normalisations, one row of `dim` features at a time.
//!
//! Each row's statistics are f64 sums taken element by element (as ggml takes them), a chain
//! of dependent additions; rows are summed ROW_GROUP at a time, each row still in its own
//! order, so that the independent chains overlap instead of each waiting on its adds.

/// Rows whose sums run side by side (eight chains keep both f64 adders busy).
const ROW_GROUP: usize = 8;

/// Σ_i f(r, x[r, i]) for each row r of x [rows, dim] (rows = ROW_GROUP, or 1 for the rows
/// after the last whole group, its other sums then left at zero), element by element from
/// -0.0 as `Iterator::sum` starts.
#[inline(always)]
fn row_sums(x: &[f32], rows: usize, dim: usize, f: impl Fn(usize, f32) -> f64) -> [f64; ROW_GROUP] {
    #[inline(always)]
    fn chains<const R: usize>(x: &[f32], dim: usize, f: impl Fn(usize, f32) -> f64) -> [f64; R] {
        let mut sums = [-0.0f64; R];
        for i in 0..dim {
            for (r, sum) in sums.iter_mut().enumerate() {
                *sum += f(r, x[r * dim + i]);
            }
        }
        sums
    }
    let mut sums = [0.0; ROW_GROUP];
    if rows == ROW_GROUP {
        sums = chains::<ROW_GROUP>(x, dim, f);
    } else {
        sums[0] = chains::<1>(x, dim, f)[0];
    }
    sums
}

/// Normalises each row of x [rows, dim] into out: `stats(rows, x rows)` gives the statistics
/// of ROW_GROUP rows at a time (then of one row at a time for the rest), and
/// `apply(stats of row r, x row r, out row r)` writes each row.
fn normalise_rows<S: Copy>(
    out: &mut [f32],
    x: &[f32],
    dim: usize,
    stats: impl Fn(usize, &[f32]) -> [S; ROW_GROUP],
    apply: impl Fn(S, &[f32], &mut [f32]),
) {
    let whole = x.len() / (ROW_GROUP * dim) * ROW_GROUP * dim;
    let (x_groups, x_rest) = x.split_at(whole);
    let (out_groups, out_rest) = out.split_at_mut(whole);
    let groups = out_groups.chunks_exact_mut(ROW_GROUP * dim).zip(x_groups.chunks_exact(ROW_GROUP * dim));
    let rest = out_rest.chunks_exact_mut(dim).zip(x_rest.chunks_exact(dim));
    for (rows, (o, xr)) in groups.map(|g| (ROW_GROUP, g)).chain(rest.map(|r| (1, r))) {
        let s = stats(rows, xr);
        for (r, (o, xr)) in o.chunks_exact_mut(dim).zip(xr.chunks_exact(dim)).enumerate() {
            apply(s[r], xr, o);
        }
    }
}

/// LayerNorm (GPT-2): out = (x - mean) / sqrt(var + eps) * w + b, over each row of x [rows, dim].
pub fn layer_norm(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
    let dim = w.len();
    assert!(dim > 0 && b.len() == dim && x.len() == out.len() && x.len().is_multiple_of(dim));
    let stats = |rows, xr: &[f32]| {
        // Accumulated in f64: rows can be long and the variance is a difference of squares.
        let mean = row_sums(xr, rows, dim, |_, v| v as f64).map(|s| s / dim as f64);
        let var = row_sums(xr, rows, dim, |r, v| (v as f64 - mean[r]).powi(2)).map(|s| s / dim as f64);
        std::array::from_fn(|r| (mean[r], 1.0 / (var[r] + eps as f64).sqrt()))
    };
    normalise_rows(out, x, dim, stats, |(mean, inv), xr, o| {
        for i in 0..dim {
            o[i] = ((xr[i] as f64 - mean) * inv) as f32 * w[i] + b[i];
        }
    });
}

/// RMSNorm (Llama): out = x / sqrt(mean(x^2) + eps) * w, over each row of x [rows, dim].
pub fn rms_norm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let dim = w.len();
    assert!(dim > 0 && x.len() == out.len() && x.len().is_multiple_of(dim));
    let stats = |rows, xr: &[f32]| {
        // As ggml: f32 squares summed in f64, the mean and its inverse root in f32.
        let sums = row_sums(xr, rows, dim, |_, v| (v * v) as f64);
        sums.map(|sum| 1.0 / ((sum / dim as f64) as f32 + eps).sqrt())
    };
    normalise_rows(out, x, dim, stats, |inv, xr, o| {
        for i in 0..dim {
            o[i] = xr[i] * inv * w[i];
        }
    });
}
