//! Weight tensors: validated, typed views of bytes that live elsewhere (usually a memory map
//! owned by Python), plus the 2-D `Matrix` view the matmul reads.

use crate::bail;
use crate::error::{EngineError, Result};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "f32" => DType::F32,
            "f16" => DType::F16,
            "bf16" => DType::BF16,
            _ => bail!("unsupported tensor type {name:?}"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

/// The elements of a tensor, typed.
pub enum Elems<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
}

/// Runs `$body` with `$w` bound to the typed element slice, whatever the storage type.
macro_rules! with_elems {
    ($elems:expr, $w:ident => $body:expr) => {
        match $elems {
            $crate::tensor::Elems::F32($w) => $body,
            $crate::tensor::Elems::F16($w) => $body,
            $crate::tensor::Elems::BF16($w) => $body,
        }
    };
}
pub(crate) use with_elems;

/// A dense tensor, row-major, `shape[0]` outermost.
#[derive(Clone)]
pub struct Tensor {
    storage: Arc<dyn Storage>,
    dtype: DType,
    shape: Vec<usize>,
}

impl Tensor {
    /// Checks that the bytes hold exactly `shape` elements of `dtype`, suitably aligned.
    pub fn new(storage: Arc<dyn Storage>, dtype: DType, shape: Vec<usize>) -> Result<Self> {
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| EngineError(format!("tensor shape {shape:?} overflows")))?;
        let bytes = storage.bytes();
        if count.checked_mul(dtype.size()) != Some(bytes.len()) {
            bail!("tensor of shape {shape:?} and type {} needs {count} elements, buffer has {} bytes", dtype.name(), bytes.len());
        }
        if bytes.as_ptr() as usize % dtype.size() != 0 {
            bail!("tensor buffer is not aligned to {} bytes", dtype.size());
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
        let bytes = self.storage.bytes();
        match self.dtype {
            DType::F32 => Elems::F32(bytemuck::cast_slice(bytes)),
            DType::F16 => Elems::F16(bytemuck::cast_slice(bytes)),
            DType::BF16 => Elems::BF16(bytemuck::cast_slice(bytes)),
        }
    }

    /// Widens elements `start..start + out.len()` into `out`.
    pub fn read_f32(&self, start: usize, out: &mut [f32]) {
        use crate::kernels::Elem;
        let end = start + out.len();
        with_elems!(self.elems(), w => {
            for (o, &e) in out.iter_mut().zip(&w[start..end]) {
                *o = e.to_f32();
            }
        })
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
}

impl WeightSet {
    pub fn new(tensors: HashMap<String, (Tensor, Layout)>) -> Self {
        WeightSet { tensors }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn get(&self, name: &str) -> Result<&(Tensor, Layout)> {
        self.tensors.get(name).ok_or_else(|| EngineError(format!("missing tensor {name}")))
    }

    /// A weight matrix of logical shape [n_out, n_in], stored either way round.
    pub fn matrix(&self, name: &str, n_out: usize, n_in: usize) -> Result<Matrix> {
        let (tensor, layout) = self.get(name)?;
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
