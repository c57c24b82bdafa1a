//! Weight tensors: validated, typed views of bytes that live elsewhere (usually a memory map
//! owned by Python), plus the 2-D `Matrix` view the matmul reads.

use crate::bail;
use crate::error::{EngineError, Result};
use crate::quant::blocks::*;
use crate::quant::QuantBlock;
use half::{bf16, f16};
use std::collections::HashMap;
use std::sync::Arc;

/// Bytes that outlive every view taken of them. Implemented by the PyO3 boundary for NumPy
/// buffers, and by plain vectors (tests, small derived tensors).
pub trait Storage: Send + Sync {
    fn bytes(&self) -> &[u8];
}

impl<T: bytemuck::Pod + Send + Sync> Storage for Vec<T> {
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self)
    }
}

/// The storage types, each defined once: the engine's name for it (ggml's is its upper
/// case), its element or block type (whose size, alignment and `QuantBlock::QK` give the
/// rest), and for a quantized type what `quant::quant_block!` makes its `QuantBlock` impl of:
/// QK, the activation format its dot product takes, and its kernels by their names in
/// `quant::scalar`, each marked `[avx2]` where `quant::avx2` has a twin of that name.
///
/// A new quantized type is a row here, its block in `quant/blocks.rs` and its scalar
/// kernels in `quant/scalar.rs` (AVX2 twins in `quant/avx2.rs` optional); the enum below,
/// `Elems`, `with_elems!`, the `QuantBlock` impls and Python's list of types
/// (`gptgen._native.storage_types`) all follow from the table.
///
/// `storage_types!([callback])` expands to `callback! { floats { .. } quants { .. } }`, and
/// `storage_types!([callback], (args))` puts `(args)` first.
macro_rules! storage_types {
    ([$($then:tt)*] $(, $args:tt)?) => {
        $($then)*! {
            $($args)?
            floats {
                F32 "f32" f32,
                F16 "f16" f16,
                BF16 "bf16" bf16,
            }
            quants {
                Q4_0 "q4_0" BlockQ4_0 { qk: 32, act: BlockQ8_0, dequantize: dequantize_q4_0, dot: dot_q4_0 [avx2] },
                Q4_1 "q4_1" BlockQ4_1 {
                    qk: 32, act: BlockQ8_1, dequantize: dequantize_q4_1, dot: dot_q4_1 [avx2],
                    dot_w4: dot_w4_q4_1 [avx2], dot_packed: dot_packed_q4_1 [avx2],
                },
                Q5_0 "q5_0" BlockQ5_0 {
                    qk: 32, act: BlockQ8_0, dequantize: dequantize_q5_0, dot: dot_q5_0 [avx2],
                    dot_packed: dot_packed_q5_0 [avx2],
                },
                Q5_1 "q5_1" BlockQ5_1 { qk: 32, act: BlockQ8_1, dequantize: dequantize_q5_1, dot: dot_q5_1 [avx2] },
                Q8_0 "q8_0" BlockQ8_0 {
                    qk: 32, act: BlockQ8_0, dequantize: dequantize_q8_0, dot: dot_q8_0 [avx2],
                    dot_w4: dot_w4_q8_0 [avx2], dot_packed: dot_packed_q8_0 [avx2],
                },
                Q4_K "q4_k" BlockQ4K {
                    qk: 256, act: BlockQ8K, dequantize: dequantize_q4_k, dot: dot_q4_k [avx2],
                    dot_gemm4: dot_gemm4_q4_k [avx2], dot_x4: dot_x4_q4_k [avx2],
                },
                Q5_K "q5_k" BlockQ5K {
                    qk: 256, act: BlockQ8K, dequantize: dequantize_q5_k, dot: dot_q5_k [avx2],
                    dot_tiled: dot_tiled_q5_k [avx2],
                },
                Q6_K "q6_k" BlockQ6K {
                    qk: 256, act: BlockQ8K, dequantize: dequantize_q6_k, dot: dot_q6_k [avx2],
                    dot_tiled: dot_tiled_q6_k [avx2], dot_x4: dot_x4_q6_k [avx2],
                },
                Q2_K "q2_k" BlockQ2K {
                    qk: 256, act: BlockQ8K, dequantize: dequantize_q2_k, dot: dot_q2_k [avx2],
                    dot_tiled: dot_tiled_q2_k [avx2],
                },
                Q3_K "q3_k" BlockQ3K {
                    qk: 256, act: BlockQ8K, dequantize: dequantize_q3_k, dot: dot_q3_k [avx2],
                    dot_tiled: dot_tiled_q3_k [avx2],
                },
                IQ4_NL "iq4_nl" BlockIQ4NL { qk: 32, act: BlockQ8_0, dequantize: dequantize_iq4_nl, dot: dot_iq4_nl [avx2] },
                IQ4_XS "iq4_xs" BlockIQ4XS {
                    qk: 256, act: BlockQ8K, dequantize: dequantize_iq4_xs, dot: dot_iq4_xs [avx2],
                    dot_tiled: dot_tiled_iq4_xs [avx2],
                },
            }
        }
    };
}
pub(crate) use storage_types;

/// `DType`, its properties and `Elems`, from the table.
macro_rules! dtypes {
    (
        floats { $($float:ident $float_name:literal $elem:ident,)* }
        quants { $($quant:ident $quant_name:literal $block:ident { $($row:tt)* },)* }
    ) => {
        /// Storage types: plain floats, and ggml's quantized blocks.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum DType {
            $($float,)*
            $($quant,)*
        }

        impl DType {
            /// Every storage type, in the table's order.
            pub const ALL: &'static [DType] = &[$(DType::$float,)* $(DType::$quant,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(DType::$float => $float_name,)*
                    $(DType::$quant => $quant_name,)*
                }
            }

            /// (elements, bytes) of one block; plain floats are blocks of one.
            pub fn block(self) -> (usize, usize) {
                use std::mem::size_of;
                match self {
                    $(DType::$float => (1, size_of::<$elem>()),)*
                    $(DType::$quant => (<$block as QuantBlock>::QK, size_of::<$block>()),)*
                }
            }

            /// Alignment the element or block type needs in memory (every block starts with
            /// or holds f16 fields).
            pub fn align(self) -> usize {
                use std::mem::align_of;
                match self {
                    $(DType::$float => align_of::<$elem>(),)*
                    $(DType::$quant => align_of::<$block>(),)*
                }
            }
        }

        /// The elements of a tensor, typed.
        #[allow(non_camel_case_types)]
        pub enum Elems<'a> {
            $($float(&'a [$elem]),)*
            $($quant(&'a [$block]),)*
        }

        impl<'a> Elems<'a> {
            /// `bytes` as elements of `dtype`; their length and alignment must fit (`Tensor::new`).
            fn cast(dtype: DType, bytes: &'a [u8]) -> Self {
                match dtype {
                    $(DType::$float => Elems::$float(bytemuck::cast_slice(bytes)),)*
                    $(DType::$quant => Elems::$quant(bytemuck::cast_slice(bytes)),)*
                }
            }
        }
    };
}

storage_types!([dtypes]);

impl DType {
    pub fn parse(name: &str) -> Result<Self> {
        match DType::ALL.iter().copied().find(|t| t.name() == name) {
            Some(t) => Ok(t),
            None => bail!("unsupported tensor type {name:?}"),
        }
    }

    pub fn is_quantized(self) -> bool {
        self.block().0 > 1
    }
}

/// Runs `$float` with `$w` bound to a float element slice, or `$quant` with it bound to a
/// quantized block slice, whatever the storage type.
macro_rules! with_elems {
    ($elems:expr, $w:ident => float $float:expr, quant $quant:expr) => {
        $crate::tensor::storage_types!([$crate::tensor::with_elems_arms], ($elems, $w, $float, $quant))
    };
}

/// `with_elems!`'s match, one arm per row of the table.
macro_rules! with_elems_arms {
    (
        ($elems:expr, $w:ident, $float_expr:expr, $quant_expr:expr)
        floats { $($float:ident $float_name:literal $elem:ident,)* }
        quants { $($quant:ident $quant_name:literal $block:ident { $($row:tt)* },)* }
    ) => {
        match $elems {
            $($crate::tensor::Elems::$float($w) => $float_expr,)*
            $($crate::tensor::Elems::$quant($w) => $quant_expr,)*
        }
    };
}
pub(crate) use {with_elems, with_elems_arms};

/// A dense tensor, row-major, `shape[0]` outermost.
#[derive(Clone)]
pub struct Tensor {
    storage: Arc<dyn Storage>,
    dtype: DType,
    shape: Vec<usize>,
}

impl Tensor {
    /// Checks that the bytes hold exactly `shape` elements of `dtype` (whole blocks along the
    /// innermost, last dimension), suitably aligned.
    pub fn new(storage: Arc<dyn Storage>, dtype: DType, shape: Vec<usize>) -> Result<Self> {
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| EngineError(format!("tensor shape {shape:?} overflows")))?;
        let (block_elems, block_bytes) = dtype.block();
        let innermost = shape.last().copied().unwrap_or(1);
        if innermost % block_elems != 0 {
            bail!("tensor rows of {innermost} elements are not whole {} blocks of {block_elems}", dtype.name());
        }
        let bytes = storage.bytes();
        if Some(bytes.len()) != (count / block_elems).checked_mul(block_bytes) {
            bail!("tensor of shape {shape:?} and type {} needs {} bytes, buffer has {}", dtype.name(), count / block_elems * block_bytes, bytes.len());
        }
        if !(bytes.as_ptr() as usize).is_multiple_of(dtype.align()) {
            bail!("tensor buffer is not aligned to {} bytes", dtype.align());
        }
        Ok(Tensor { storage, dtype, shape })
    }

    pub fn from_f32(values: Vec<f32>, shape: Vec<usize>) -> Result<Self> {
        Tensor::new(Arc::new(values), DType::F32, shape)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn elems(&self) -> Elems<'_> {
        // Length and alignment were validated in `new`, so the casts cannot fail.
        Elems::cast(self.dtype, self.storage.bytes())
    }

    /// The elements as `T`, which must be the storage type's element or block type.
    pub fn as_slice<T: bytemuck::Pod>(&self) -> &[T] {
        assert_eq!(std::mem::size_of::<T>(), self.dtype.block().1, "as_slice: not this tensor's element type");
        bytemuck::cast_slice(self.storage.bytes())
    }

    /// Widens elements `start..start + out.len()` into `out`; for quantized types both ends
    /// must fall on block boundaries (whole rows always do).
    pub fn read_f32(&self, start: usize, out: &mut [f32]) {
        use crate::kernels::Elem;
        let end = start + out.len();
        let qk = self.dtype.block().0;
        assert!(start.is_multiple_of(qk) && end.is_multiple_of(qk), "read_f32: range is not block-aligned");
        with_elems!(self.elems(), w =>
            float {
                for (o, &e) in out.iter_mut().zip(&w[start..end]) {
                    *o = e.to_f32();
                }
            },
            quant QuantBlock::dequantize(&w[start / qk..end / qk], out)
        )
    }

    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.len()];
        self.read_f32(0, &mut out);
        out
    }
}

/// How a weight matrix of logical shape [n_out, n_in] is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// [n_out, n_in]: each output is a dot product with one stored row (nn.Linear, GGUF).
    OutIn,
    /// [n_in, n_out]: each input row scales one stored row (Hugging Face GPT-2 Conv1D).
    InOut,
}

/// A weight matrix for y = W x, with y of length `n_out` and x of length `n_in`.
#[derive(Clone)]
pub struct Matrix {
    pub tensor: Tensor,
    pub layout: Layout,
    pub n_out: usize,
    pub n_in: usize,
}

impl Matrix {
    /// Row `i` of an `OutIn` matrix widened into `out` (embedding lookups).
    pub fn read_row(&self, i: usize, out: &mut [f32]) {
        assert!(self.layout == Layout::OutIn && i < self.n_out && out.len() == self.n_in);
        self.tensor.read_f32(i * self.n_in, out);
    }
}

/// The tensors of one model by canonical (GGUF-style) name, each with its layout, and the
/// checks the architectures share when they take them out.
pub struct WeightSet {
    tensors: HashMap<String, (Tensor, Layout)>,
    /// Names taken out so far, to find tensors no architecture reads.
    used: std::cell::RefCell<std::collections::HashSet<String>>,
}

impl WeightSet {
    pub fn new(tensors: HashMap<String, (Tensor, Layout)>) -> Self {
        WeightSet { tensors, used: Default::default() }
    }

    /// Fails on a tensor the model never took: a file with weights gptgen would silently
    /// ignore (a different architecture, rope frequency factors, ...) must not run.
    pub fn check_all_used(&self) -> Result<()> {
        let used = self.used.borrow();
        let mut unused: Vec<&String> = self.tensors.keys().filter(|name| !used.contains(*name)).collect();
        unused.sort();
        match unused.first() {
            Some(name) => bail!("unexpected tensor {name} ({} not used by this architecture)", unused.len()),
            None => Ok(()),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn get(&self, name: &str) -> Result<&(Tensor, Layout)> {
        let found = self.tensors.get(name).ok_or_else(|| EngineError(format!("missing tensor {name}")))?;
        self.used.borrow_mut().insert(name.to_string());
        Ok(found)
    }

    /// A weight matrix of logical shape [n_out, n_in], stored either way round.
    pub fn matrix(&self, name: &str, n_out: usize, n_in: usize) -> Result<Matrix> {
        let (tensor, layout) = self.get(name)?;
        if tensor.dtype().is_quantized() && *layout != Layout::OutIn {
            bail!("tensor {name}: quantized weights must be stored [n_out, n_in]");
        }
        let want = match layout {
            Layout::OutIn => [n_out, n_in],
            Layout::InOut => [n_in, n_out],
        };
        if tensor.shape() != want {
            bail!("tensor {name} has shape {:?}, expected {want:?} ({layout:?})", tensor.shape());
        }
        Ok(Matrix { tensor: tensor.clone(), layout: *layout, n_out, n_in })
    }

    /// A 1-D parameter (norm weight, bias) of length n, widened to f32.
    pub fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let (tensor, _) = self.get(name)?;
        if tensor.shape() != [n] {
            bail!("tensor {name} has shape {:?}, expected [{n}]", tensor.shape());
        }
        let values = tensor.to_f32_vec();
        if values.iter().any(|v| !v.is_finite()) {
            bail!("tensor {name} holds NaN or infinite values");
        }
        Ok(values)
    }
}
