//! Matmul micro-benchmark at SmolLM2-135M's shapes: `cargo bench --bench matmul`.
//! Prints the median time of each (shape, weight type, tokens) case and, for one token, the
//! weight bytes streamed per second.

use _native::ops::matmul::{matmul, MatmulScratch};
use _native::quant::blocks::{BlockQ4_1, BlockQ8_0};
use _native::tensor::{DType, Layout, Matrix, Tensor};
use half::f16;
use std::sync::Arc;
use std::time::Instant;

/// (n_in, n_out, label): attention q/o, k/v, ffn up/gate, ffn down, LM head.
const SHAPES: &[(usize, usize, &str)] =
    &[(576, 576, "576x576"), (576, 192, "576x192"), (576, 1536, "576x1536"), (1536, 576, "1536x576"), (576, 49152, "576x49152")];

fn weights(dtype: DType, n_out: usize, n_in: usize) -> Matrix {
    let blocks = n_out * n_in / 32;
    let tensor = match dtype {
        DType::Q4_1 => {
            let b = BlockQ4_1 { d: f16::from_f32(0.01), m: f16::from_f32(-0.05), qs: [0x5a; 16] };
            Tensor::new(Arc::new(vec![b; blocks]), dtype, vec![n_out, n_in])
        }
        DType::Q8_0 => {
            let b = BlockQ8_0 { d: f16::from_f32(0.01), qs: [7; 32] };
            Tensor::new(Arc::new(vec![b; blocks]), dtype, vec![n_out, n_in])
        }
        _ => Tensor::new(Arc::new(vec![0.01f32; n_out * n_in]), dtype, vec![n_out, n_in]),
    }
    .expect("valid benchmark tensor");
    Matrix { tensor, layout: Layout::OutIn, n_out, n_in }
}

fn main() {
    let threads = std::env::var("GPTGEN_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
    println!("threads={threads} kernels={}", _native::kernels::kernel_name());
    for &(n_in, n_out, label) in SHAPES {
        for dtype in [DType::Q4_1, DType::Q8_0, DType::F32] {
            let w = weights(dtype, n_out, n_in);
            let weight_bytes = n_out * n_in / dtype.block().0 * dtype.block().1;
            for n in [1usize, 64] {
                let x: Vec<f32> = (0..n * n_in).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
                let mut y = vec![0.0; n * n_out];
                let mut scratch = MatmulScratch::default();
                let mut times = Vec::new();
                for _ in 0..15 {
                    let start = Instant::now();
                    pool.install(|| matmul(&mut y, &x, &w, None, &mut scratch));
                    times.push(start.elapsed().as_secs_f64());
                }
                times.sort_by(f64::total_cmp);
                let median = times[times.len() / 2];
                let rate = if n == 1 { format!("{:7.2} GB/s of weights", weight_bytes as f64 / median / 1e9) } else { String::new() };
                println!("{label:>10} {:>5} n={n:<3} {:9.1} us  {rate}", dtype.name(), median * 1e6);
            }
        }
    }
}
