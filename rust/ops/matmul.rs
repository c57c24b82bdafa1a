//! y = x Wᵀ (+ b) for a batch of activation rows, threaded over output columns or tokens.
//!
//! The output columns are split into tiles; each rayon task owns one tile and computes it for
//! every token, so a tile's weights are read from memory once per call whatever the batch size.
//! With one token the tiles are contiguous pieces of y and are written in place; with several,
//! tasks write tiles into a scratch buffer that is then scattered into y row by row. Quantized
//! matmuls over many tokens (prefill) are split by blocks of tokens instead: each task writes
//! its own rows of y in place and reads the whole matrix, which stays in L2 between blocks.
//! Quantized matmuls of one token (decoding) give each thread one long contiguous share of the
//! rows, taken four rows at a time from its four quarters (see `one_token_dots`).
//!
//! Float weights (f32/f16/bf16) multiply f32 activations directly, in either layout.
//! Quantized weights ([n_out, n_in] only) first have each activation row quantized once into
//! the partner block format, then take integer dot products.

use super::add_in_place;
use crate::kernels::{axpy, axpy_block, dot, Elem};
use crate::quant::{ActBlock, ActPack, QuantBlock, RowPlace, SumOrder};
use crate::tensor::{with_elems, Layout, Matrix};
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;

/// Output columns per task for [n_out, n_in] weights: each column is one dot product.
const TILE_OUT_IN: usize = 32;
/// Output columns per task for [n_in, n_out] weights: wider, so each stored row segment read
/// by an axpy spans several cache lines.
const TILE_IN_OUT: usize = 128;
/// Tokens processed together against a tile's weights: eight tokens' quantized activations
/// (up to 15 KB for 1536-wide rows) stay in L1 while the tile's weight rows stream past them
/// (measured faster than 16 or 32 for prefill).
const TOKEN_BLOCK: usize = 8;
// Eight-token kernels start at multiples of 8 within a block.
const _: () = assert!(TOKEN_BLOCK.is_multiple_of(8));
/// Token blocks per thread from which a quantized matmul is split by tokens rather than by
/// output columns.
const TOKEN_BLOCKS_PER_THREAD: usize = 4;
/// Stored rows per band when one token meets [n_in, n_out] weights (see `in_out_single`).
const BAND_ROWS: usize = 64;
/// Rows from which a matrix is cut into several one-token tasks per thread.
const LARGE_MATRIX_ROWS: usize = 4096;
/// Quarters of a one-token task shorter than this many rows are too short to stream well
/// (measured): such tasks take their rows one at a time.
const MIN_QUARTER_ROWS: usize = 32;
/// Activation rows below this many are quantized on the calling thread: a row takes about a
/// microsecond, less than handing work to the pool costs.
const PARALLEL_QUANTIZE_ROWS: usize = 16;

/// Buffers a matmul reuses from call to call.
#[derive(Default)]
pub struct MatmulScratch {
    /// [n, n_out] in tiles, when n > 1.
    tiles: Vec<f32>,
    /// Quantized activation rows, as raw 8-byte words (aligned for every block type).
    act: Vec<u64>,
    /// [n / 8, blocks per row]: each group of eight activation rows packed block by block,
    /// for the types with packed kernels.
    packs8: Vec<ActPack<8>>,
    /// [blocks per row]: the four rows after the last group of eight, where n % 8 >= 4.
    packs4: Vec<ActPack<4>>,
    /// [n] for the matmuls until the next `place_rows`: where each activation row sits in its
    /// sequence. Empty: every row alone.
    places: Vec<RowPlace>,
}

impl MatmulScratch {
    /// Sets where each activation row of the next matmuls sits. llama.cpp sums some types in
    /// another order when a row comes with others (`QuantBlock::order_at`), deciding by the
    /// whole batch; here each sequence is taken as if alone (`Batch::row_places`): one prompt
    /// is summed as llama.cpp sums it, and a sequence's results do not depend on what else
    /// shares its batch.
    pub fn place_rows(&mut self, places: Vec<RowPlace>) {
        self.places = places;
    }
}

/// y[n, n_out] = x[n, n_in] · Wᵀ + bias.
pub fn matmul(y: &mut [f32], x: &[f32], w: &Matrix, bias: Option<&[f32]>, scratch: &mut MatmulScratch) {
    let (n_in, n_out) = (w.n_in, w.n_out);
    assert!(n_in > 0 && x.len().is_multiple_of(n_in), "matmul: x is not a whole number of rows");
    let n = x.len() / n_in;
    assert_eq!(y.len(), n * n_out, "matmul: y has the wrong size");
    if let Some(b) = bias {
        assert_eq!(b.len(), n_out, "matmul: bias has the wrong size");
    }
    let MatmulScratch { tiles, act, packs8, packs4, places } = scratch;
    with_elems!(w.tensor.elems(), ws =>
        float {
            if w.layout == Layout::InOut && n == 1 {
                in_out_single(y, x, ws, w, bias, tiles)
            } else {
                let tile = if w.layout == Layout::OutIn { TILE_OUT_IN } else { TILE_IN_OUT };
                run_tiles(&mut [y], n, tile, tiles, |_, col0, out| float_tile(out, x, n, ws, w, bias, col0))
            }
        },
        quant {
            let rows = quantize_rows(x, n_in, act, packs8, packs4, places, ws);
            quant_matmul(y, ws, w, bias, tiles, &rows)
        }
    )
}

/// ys[i] = x · W_iᵀ + b_i for several matrices reading the same input x (Q, K and V; gate and
/// up), each with an optional bias. For quantized weights of one type the activation rows are
/// quantized once for all the matrices, and one token's dot products run in one parallel
/// region; otherwise each matrix is a `matmul`. Results are identical either way.
pub fn matmul_group(ys: &mut [&mut [f32]], x: &[f32], ws: &[&Matrix], biases: &[Option<&[f32]>], scratch: &mut MatmulScratch) {
    assert!(ys.len() == ws.len() && biases.len() == ws.len(), "matmul_group: one output and one bias per matrix");
    for (w, bias) in ws.iter().zip(biases) {
        if let Some(b) = bias {
            assert_eq!(b.len(), w.n_out, "matmul_group: bias has the wrong size");
        }
    }
    let (dtype, n_in) = (ws[0].tensor.dtype(), ws[0].n_in);
    let shared = dtype.is_quantized() && ws.iter().all(|w| w.tensor.dtype() == dtype && w.n_in == n_in && w.layout == Layout::OutIn);
    if !shared {
        for ((y, w), bias) in ys.iter_mut().zip(ws).zip(biases) {
            matmul(y, x, w, *bias, scratch);
        }
        return;
    }
    assert!(n_in > 0 && x.len().is_multiple_of(n_in), "matmul_group: x is not a whole number of rows");
    with_elems!(ws[0].tensor.elems(), first =>
        float unreachable!("shared groups are quantized: {}", first.len()),
        quant quant_group(ys, x, ws, biases, scratch, first)
    )
}

/// `matmul_group` for quantized matrices of block type B (the type of `of_type`).
fn quant_group<B: QuantBlock>(ys: &mut [&mut [f32]], x: &[f32], ws: &[&Matrix], biases: &[Option<&[f32]>], scratch: &mut MatmulScratch, of_type: &[B]) {
    let MatmulScratch { tiles, act, packs8, packs4, places } = scratch;
    let rows = quantize_rows(x, ws[0].n_in, act, packs8, packs4, places, of_type);
    for (y, w) in ys.iter().zip(ws) {
        assert_eq!(y.len(), rows.n * w.n_out, "matmul_group: output has the wrong size");
    }
    if split_by_tokens(rows.n) {
        for ((y, w), bias) in ys.iter_mut().zip(ws).zip(biases) {
            quant_matmul(y, w.tensor.as_slice::<B>(), w, *bias, tiles, &rows);
        }
        return;
    }
    if rows.n > 1 {
        run_tiles(ys, rows.n, TILE_OUT_IN, tiles, |m, col0, out| quant_tile(out, ws[m].tensor.as_slice::<B>(), biases[m], col0, &rows));
        return;
    }
    // One token: every chunk of every output, as (chunk index, matrix, first row, output
    // slice), in one parallel region. Ordered chunk by chunk, so that the region's first
    // split hands each thread the same share of every matrix (ordered matrix by matrix, Q, K,
    // V split as Q and half of K, 672 rows, against 288).
    let threads = rayon::current_num_threads();
    let mut tasks: Vec<(usize, usize, usize, &mut [f32])> = Vec::new();
    for (m, y) in ys.iter_mut().enumerate() {
        let chunk = one_token_chunk(y.len(), threads);
        tasks.extend(y.chunks_mut(chunk).enumerate().map(|(k, out)| (k, m, k * chunk, out)));
    }
    tasks.sort_by_key(|&(k, m, ..)| (k, m));
    tasks.into_par_iter().for_each(|(_, m, row0, out)| one_token_dots(out, ws[m].tensor.as_slice::<B>(), rows.per_row, row0, rows.act, biases[m]));
}

/// Rows per task when one token meets a quantized matrix: each thread takes one contiguous
/// share (large matrices are cut finer, so that a slow thread's share can be taken up).
fn one_token_chunk(n_out: usize, threads: usize) -> usize {
    let chunks = threads * (n_out / LARGE_MATRIX_ROWS).max(1);
    n_out.div_ceil(chunks).next_multiple_of(4)
}

/// out[j] = W[row0 + j] · act (+ bias[row0 + j]) for one activation row, W [n_out, per_row]
/// blocks. Four rows a quarter of the chunk apart go through each kernel call: their running
/// sums are independent (one row's blocks form a chain of dependent multiply-adds), and each
/// quarter is read as one long sequential stream (four adjacent rows in step stream badly here).
fn one_token_dots<B: QuantBlock>(out: &mut [f32], blocks: &[B], per_row: usize, row0: usize, act: &[B::Act], bias: Option<&[f32]>) {
    let row = |j: usize| &blocks[(row0 + j) * per_row..(row0 + j + 1) * per_row];
    let quarter = if out.len() / 4 >= MIN_QUARTER_ROWS { out.len() / 4 } else { 0 };
    for j in 0..quarter {
        let sums = B::dot_w4(std::array::from_fn(|k| row(k * quarter + j)), act);
        for (k, sum) in sums.into_iter().enumerate() {
            out[k * quarter + j] = sum;
        }
    }
    for (j, o) in out.iter_mut().enumerate().skip(4 * quarter) {
        *o = B::dot(row(j), act);
    }
    if let Some(b) = bias {
        add_in_place(out, &b[row0..row0 + out.len()]);
    }
}

/// The first `len` elements of type T in a buffer of words grown to hold them (words keep
/// every block type aligned).
fn words_as<T: bytemuck::Pod>(words: &mut Vec<u64>, len: usize) -> &mut [T] {
    let bytes = len * std::mem::size_of::<T>();
    words.resize(bytes.div_ceil(8), 0);
    bytemuck::cast_slice_mut(&mut bytemuck::cast_slice_mut::<u64, u8>(words)[..bytes])
}

/// Outputs of at most this many elements in all are scattered from their tiles on the calling
/// thread: a copy of a few tens of KB costs less than another parallel region.
const SERIAL_SCATTER: usize = 1 << 16;

/// Fills each ys[m] [n, n_out_m] by calling `fill(m, col0, tile)` for tiles of `tile` columns,
/// the tiles of every output in one parallel region; `tile` receives [n, width] row-major.
fn run_tiles(ys: &mut [&mut [f32]], n: usize, tile: usize, tiles: &mut Vec<f32>, fill: impl Fn(usize, usize, &mut [f32]) + Sync) {
    if n == 1 {
        ys.par_iter_mut()
            .enumerate()
            .flat_map(|(m, y)| y.par_chunks_mut(tile).enumerate().map(move |(k, out)| (m, k, out)))
            .for_each(|(m, k, out)| fill(m, k * tile, out));
        return;
    }
    let total = ys.iter().map(|y| y.len()).sum();
    tiles.resize(total, 0.0);
    // [n, n_out_m] for each output m, in turn
    let mut parts: Vec<&mut [f32]> = Vec::with_capacity(ys.len());
    let mut rest = tiles.as_mut_slice();
    for y in ys.iter() {
        let (part, tail) = rest.split_at_mut(y.len());
        parts.push(part);
        rest = tail;
    }
    parts
        .par_iter_mut()
        .enumerate()
        .flat_map(|(m, part)| part.par_chunks_mut(tile * n).enumerate().map(move |(k, out)| (m, k, out)))
        .for_each(|(m, k, out)| fill(m, k * tile, out));
    for (y, part) in ys.iter_mut().zip(parts) {
        // Tile k holds [n, width_k] row-major; y wants [n, n_out].
        let n_out = y.len() / n;
        let part: &[f32] = part;
        let scatter = |(t, y_row): (usize, &mut [f32])| {
            for (k, y_part) in y_row.chunks_mut(tile).enumerate() {
                let width = y_part.len();
                let start = k * tile * n + t * width;
                y_part.copy_from_slice(&part[start..start + width]);
            }
        };
        if total <= SERIAL_SCATTER {
            y.chunks_mut(n_out).enumerate().for_each(scatter);
        } else {
            y.par_chunks_mut(n_out).enumerate().for_each(scatter);
        }
    }
}

/// y[n_out] = x[n_in] · W + bias for one token and [n_in, n_out] weights. Column tiles would
/// read every stored row in short strided pieces; instead each task streams a band of
/// BAND_ROWS whole rows into its own partial sum, and the partials are added in band order,
/// so the result does not depend on the thread count.
fn in_out_single<W: Elem>(y: &mut [f32], x: &[f32], ws: &[W], w: &Matrix, bias: Option<&[f32]>, partials: &mut Vec<f32>) {
    let (n_in, n_out) = (w.n_in, w.n_out);
    // [n_bands, n_out]
    partials.resize(n_in.div_ceil(BAND_ROWS) * n_out, 0.0);
    partials.par_chunks_mut(n_out).enumerate().for_each(|(band, part)| {
        part.fill(0.0);
        for i in band * BAND_ROWS..((band + 1) * BAND_ROWS).min(n_in) {
            axpy(part, x[i], &ws[i * n_out..(i + 1) * n_out]);
        }
    });
    match bias {
        Some(b) => y.copy_from_slice(b),
        None => y.fill(0.0),
    }
    for part in partials.chunks_exact(n_out) {
        add_in_place(y, part);
    }
}

thread_local! {
    /// Per-worker [n, width] partial sums of `float_tile`, grown once and reused.
    static BAND_SUM: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Starts each row of a tile out[n, width] at the bias (or zero).
fn init_tile(out: &mut [f32], n: usize, bias: Option<&[f32]>, col0: usize) {
    let width = out.len() / n;
    for row in out.chunks_exact_mut(width) {
        match bias {
            Some(b) => row.copy_from_slice(&b[col0..col0 + width]),
            None => row.fill(0.0),
        }
    }
}

/// out[n, width] = columns col0.. of x[n, n_in] · Wᵀ + bias, float weights.
fn float_tile<W: Elem>(out: &mut [f32], x: &[f32], n: usize, ws: &[W], w: &Matrix, bias: Option<&[f32]>, col0: usize) {
    let (n_in, n_out, width) = (w.n_in, w.n_out, out.len() / n);
    init_tile(out, n, bias, col0);
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
        Layout::InOut => BAND_SUM.with_borrow_mut(|band_sum| {
            // Summed band by band, as `in_out_single` sums, so that one token and a batch
            // get identical results. band_sum: [n, width]
            band_sum.resize(n * width, 0.0);
            for band0 in (0..n_in).step_by(BAND_ROWS) {
                band_sum.fill(0.0);
                axpy_block(band_sum, x, n_in, band0..(band0 + BAND_ROWS).min(n_in), ws, n_out, col0);
                add_in_place(out, band_sum);
            }
        }),
    }
}

/// Activation rows quantized once into the partner format of block type B, and packed for
/// its packed kernels where it has them, for every matrix of type B that reads them.
struct QuantizedRows<'a, B: QuantBlock> {
    n: usize,
    /// Activation blocks per row, also weight blocks per row (the formats pair with equal QK).
    per_row: usize,
    /// [n, per_row]
    act: &'a [B::Act],
    /// [n / 8, per_row]: rows 8g.. of group g, for DOT8.
    packs8: &'a [ActPack<8>],
    /// [per_row] where n % 8 >= 4: the four rows after the last group of eight, for DOT4.
    packs4: &'a [ActPack<4>],
    /// [n], or empty (every row alone): where each row sits, for `QuantBlock::order_at` (see
    /// `MatmulScratch::place_rows`).
    places: &'a [RowPlace],
}

/// Quantizes x [n, n_in] (and packs it) into the scratch buffers, for block type B (the type
/// of `_of_type`).
fn quantize_rows<'a, B: QuantBlock>(
    x: &[f32],
    n_in: usize,
    act_words: &'a mut Vec<u64>,
    packs8: &'a mut Vec<ActPack<8>>,
    packs4: &'a mut Vec<ActPack<4>>,
    places: &'a [RowPlace],
    _of_type: &[B],
) -> QuantizedRows<'a, B> {
    let n = x.len() / n_in;
    assert!(places.is_empty() || places.len() == n, "matmul: rows placed for {} rows, not {n}", places.len());
    let per_row = n_in / <B::Act as ActBlock>::QK;
    let act: &mut [B::Act] = words_as(act_words, n * per_row);
    let quantize_row = |(xr, ar): (&[f32], &mut [B::Act])| B::Act::quantize(xr, ar);
    if n >= PARALLEL_QUANTIZE_ROWS {
        x.par_chunks(n_in).zip(act.par_chunks_mut(per_row)).for_each(quantize_row);
    } else {
        x.chunks(n_in).zip(act.chunks_mut(per_row)).for_each(quantize_row);
    }
    let act: &[B::Act] = act;
    let packed = B::DOT8.is_some();
    let (groups, four) = if packed { (n / 8, n % 8 >= 4) } else { (0, false) };
    packs8.resize(groups * per_row, ActPack::ZERO);
    let pack_group = |(g, group): (usize, &mut [ActPack<8>])| {
        for (b, pack) in group.iter_mut().enumerate() {
            *pack = ActPack::of_rows(act, per_row, 8 * g, b);
        }
    };
    if n >= PARALLEL_QUANTIZE_ROWS {
        packs8.par_chunks_mut(per_row).enumerate().for_each(pack_group);
    } else {
        packs8.chunks_mut(per_row).enumerate().for_each(pack_group);
    }
    packs4.clear();
    if four {
        packs4.extend((0..per_row).map(|b| ActPack::of_rows(act, per_row, 8 * groups, b)));
    }
    QuantizedRows { n, per_row, act, packs8, packs4, places }
}

/// y[n, n_out] = rows · Wᵀ + bias for quantized W [n_out, n_in] of block type B.
fn quant_matmul<B: QuantBlock>(y: &mut [f32], ws: &[B], w: &Matrix, bias: Option<&[f32]>, tiles: &mut Vec<f32>, rows: &QuantizedRows<B>) {
    let &QuantizedRows { n, per_row, act, .. } = rows;
    if n == 1 {
        let chunk = one_token_chunk(w.n_out, rayon::current_num_threads());
        y.par_chunks_mut(chunk).enumerate().for_each(|(k, out)| one_token_dots(out, ws, per_row, k * chunk, act, bias));
        return;
    }
    if split_by_tokens(n) {
        // Enough token blocks to share out: each task owns a block's rows of y and writes them
        // in place, taking every weight row in turn (a layer's matrices fit in L2).
        y.par_chunks_mut(TOKEN_BLOCK * w.n_out).enumerate().for_each(|(b, out)| {
            let count = out.len() / w.n_out;
            init_tile(out, count, bias, 0);
            packed_dots(out, w.n_out, 0, b * TOKEN_BLOCK..b * TOKEN_BLOCK + count, ws, rows);
        });
    } else {
        run_tiles(&mut [y], n, TILE_OUT_IN, tiles, |_, col0, out| quant_tile(out, ws, bias, col0, rows));
    }
}

/// Whether a quantized matmul of n tokens is split across threads by blocks of tokens (else
/// by tiles of output columns).
fn split_by_tokens(n: usize) -> bool {
    n >= TOKEN_BLOCK * TOKEN_BLOCKS_PER_THREAD * rayon::current_num_threads()
}

/// out[n, width] = columns col0.. of rows · Wᵀ + bias, quantized W of block type B.
fn quant_tile<B: QuantBlock>(out: &mut [f32], ws: &[B], bias: Option<&[f32]>, col0: usize, rows: &QuantizedRows<B>) {
    let width = out.len() / rows.n;
    init_tile(out, rows.n, bias, col0);
    for t0 in (0..rows.n).step_by(TOKEN_BLOCK) {
        let t1 = (t0 + TOKEN_BLOCK).min(rows.n);
        packed_dots(&mut out[t0 * width..t1 * width], width, col0, t0..t1, ws, rows);
    }
}

/// out[t - tokens.start, j] += W[col0 + j] · act[t] for t in tokens, j < width; out is
/// [tokens.len(), width] and tokens, at most TOKEN_BLOCK of them, starts at a multiple of it.
fn packed_dots<B: QuantBlock>(out: &mut [f32], width: usize, col0: usize, tokens: Range<usize>, ws: &[B], rows: &QuantizedRows<B>) {
    let &QuantizedRows { n, per_row, act, packs8, packs4, places } = rows;
    let act_row = |t: usize| &act[t * per_row..(t + 1) * per_row];
    let w_row = |j: usize| &ws[(col0 + j) * per_row..(col0 + j + 1) * per_row];
    let at = |t: usize, j: usize| (t - tokens.start) * width + j;
    // Each token's summation order, worked out once for every weight row.
    assert!(tokens.len() <= TOKEN_BLOCK, "packed_dots: more tokens than a block");
    let orders: [SumOrder; TOKEN_BLOCK] = std::array::from_fn(|k| B::order_at(places.get(tokens.start + k).copied().unwrap_or(RowPlace::ALONE)));
    let order = |t: usize| orders[t - tokens.start];
    for j in 0..width {
        // Eight, then four tokens at a time share each unpacked weight block (groups of eight
        // start at multiples of 8, as tokens does).
        let mut t = tokens.start;
        while let Some(dot8) = B::DOT8.filter(|_| t + 8 <= tokens.end) {
            let sums = dot8(w_row(j), &packs8[t / 8 * per_row..(t / 8 + 1) * per_row]);
            for (k, sum) in sums.into_iter().enumerate() {
                out[at(t + k, j)] += sum;
            }
            t += 8;
        }
        if let Some(dot4) = B::DOT4.filter(|_| t + 4 <= tokens.end) {
            // Four rows are left only after the last group of eight: packs4's rows.
            debug_assert_eq!(t, n / 8 * 8);
            let sums = dot4(w_row(j), packs4);
            for (k, sum) in sums.into_iter().enumerate() {
                out[at(t + k, j)] += sum;
            }
            t += 4;
        }
        // The rest four at a time where four rows in a row take the same order.
        while t < tokens.end {
            if t + 4 <= tokens.end && (t + 1..t + 4).all(|u| order(u) == order(t)) {
                let sums = B::dot_x4_in(w_row(j), std::array::from_fn(|k| act_row(t + k)), order(t));
                for (k, sum) in sums.into_iter().enumerate() {
                    out[at(t + k, j)] += sum;
                }
                t += 4;
            } else {
                out[at(t, j)] += B::dot_in(w_row(j), act_row(t), order(t));
                t += 1;
            }
        }
    }
}
