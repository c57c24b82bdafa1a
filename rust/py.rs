//! The PyO3 boundary: `gptgen._native`. Python hands each weight over once as a read-only,
//! C-contiguous uint8 NumPy buffer (usually a view of a memory map) and then drives a
//! `Session` with one call per prompt and one per generated token, the GIL released.

use crate::model::{self, Arch, Config, SlidingWindow};
use crate::ops::rope::{Rope, RopePairing};
use crate::quant::{ActBlock, QuantBlock};
use crate::tensor::{with_elems, DType, Layout, Storage, Tensor, WeightSet};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::HashMap;
use std::sync::Arc;

// The engine's errors are gptgen.errors.EngineError (a GptgenError and a ValueError).
pyo3::import_exception!(gptgen.errors, EngineError);

impl From<crate::error::EngineError> for PyErr {
    fn from(e: crate::error::EngineError) -> PyErr {
        EngineError::new_err(e.0)
    }
}

fn refuse(message: String) -> PyErr {
    EngineError::new_err(message)
}

/// A NumPy buffer kept alive (and read-only) for as long as the engine reads it.
struct NumpyBuffer {
    _owner: Py<PyAny>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the buffer is immutable (checked read-only at construction) and owned by `_owner`,
// which lives as long as this value; reading it from any thread is sound.
unsafe impl Send for NumpyBuffer {}
unsafe impl Sync for NumpyBuffer {}

impl Storage for NumpyBuffer {
    fn bytes(&self) -> &[u8] {
        // SAFETY: ptr/len describe the C-contiguous data of `_owner`, validated in `from_array`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl NumpyBuffer {
    fn from_array(name: &str, array: &Bound<'_, PyArray1<u8>>) -> PyResult<Self> {
        if !array.is_c_contiguous() {
            return Err(refuse(format!("tensor {name}: buffer is not contiguous")));
        }
        let writeable: bool = array.getattr("flags")?.getattr("writeable")?.extract()?;
        if writeable {
            return Err(refuse(format!("tensor {name}: buffer must be read-only")));
        }
        Ok(NumpyBuffer { _owner: array.clone().into_any().unbind(), ptr: array.data() as *const u8, len: array.len() })
    }
}

/// Attribute `name` of a Python config object.
fn field<'py, T: FromPyObjectOwned<'py>>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<T> {
    let value = obj.getattr(name).map_err(|_| refuse(format!("config is missing {name}")))?;
    value.extract().map_err(|_| refuse(format!("config {name} has the wrong type")))
}

/// The engine's Config from gptgen.loading.config.EngineConfig (and its RopeConfig), read
/// field by field: that class is the one description of these fields.
fn config_from(obj: &Bound<'_, PyAny>) -> PyResult<(Arch, Config)> {
    let window_obj: Bound<'_, PyAny> = field(obj, "sliding_window")?;
    let sliding_window = if window_obj.is_none() {
        None
    } else {
        Some(SlidingWindow { len: field(&window_obj, "length")?, layers: field(&window_obj, "layers")?, rope: rope_from(&field(&window_obj, "rope")?)? })
    };
    let rope = rope_from(&field(obj, "rope")?)?;
    let kv_f16 = match field::<String>(obj, "kv_cache")?.as_str() {
        "f32" => false,
        "f16" => true,
        other => return Err(refuse(format!("unknown kv_cache type {other:?}"))),
    };
    let config = Config {
        n_vocab: field(obj, "n_vocab")?,
        n_ctx: field(obj, "n_ctx")?,
        n_embd: field(obj, "n_embd")?,
        n_layer: field(obj, "n_layer")?,
        n_head: field(obj, "n_head")?,
        n_kv_head: field(obj, "n_kv_head")?,
        n_ff: field(obj, "n_ff")?,
        head_dim: field(obj, "head_dim")?,
        norm_eps: field(obj, "norm_eps")?,
        rope,
        kv_f16,
        qkv_bias: field(obj, "qkv_bias")?,
        qk_norm: field(obj, "qk_norm")?,
        sliding_window,
        query_scale: field(obj, "query_scale")?,
        gelu_lookup: field(obj, "gelu_lookup")?,
        norm_weight_offset: field(obj, "norm_weight_offset")?,
    };
    Ok((Arch::parse(&field::<String>(obj, "arch")?)?, config))
}

/// A RopeConfig, or None.
fn rope_from(rope_obj: &Bound<'_, PyAny>) -> PyResult<Option<Rope>> {
    if rope_obj.is_none() {
        return Ok(None);
    }
    Ok(Some(Rope {
        base: field(rope_obj, "base")?,
        dims: field(rope_obj, "dims")?,
        pairing: match field::<String>(rope_obj, "pairing")?.as_str() {
            "adjacent" => RopePairing::Adjacent,
            "halves" => RopePairing::Halves,
            other => return Err(refuse(format!("unknown rope pairing {other:?}"))),
        },
        freq_scale: field(rope_obj, "freq_scale")?,
        factors: field::<Option<Vec<f32>>>(rope_obj, "factors")?.unwrap_or_default(),
        ext_factor: field(rope_obj, "ext_factor")?,
        corr_dims: field::<(f32, f32)>(rope_obj, "corr_dims").map(|(low, high)| [low, high])?,
        attn_factor: field(rope_obj, "attn_factor")?,
    }))
}

/// tensors: {name: (uint8 buffer, dtype name, shape, layout "out_in" | "in_out")}
fn weights_from_dict(tensors: &Bound<'_, PyDict>) -> PyResult<WeightSet> {
    let mut map = HashMap::new();
    for (key, value) in tensors.iter() {
        let name: String = key.extract()?;
        let (array, dtype, shape, layout): (Bound<'_, PyArray1<u8>>, String, Vec<usize>, String) = value
            .extract()
            .map_err(|_| refuse(format!("tensor {name}: expected (uint8 array, dtype, shape, layout)")))?;
        let layout = match layout.as_str() {
            "out_in" => Layout::OutIn,
            "in_out" => Layout::InOut,
            other => return Err(refuse(format!("tensor {name}: unknown layout {other:?}"))),
        };
        let storage = Arc::new(NumpyBuffer::from_array(&name, &array)?);
        let tensor = Tensor::new(storage, DType::parse(&dtype)?, shape)
            .map_err(|e| refuse(format!("tensor {name}: {e}")))?;
        map.insert(name, (tensor, layout));
    }
    Ok(WeightSet::new(map))
}

/// A loaded model on its own thread pool.
#[pyclass(frozen, module = "gptgen._native")]
struct Engine {
    inner: Arc<model::Engine>,
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (config, tensors, threads = 0, name = "the model"))]
    fn new(config: &Bound<'_, PyAny>, tensors: &Bound<'_, PyDict>, threads: usize, name: &str) -> PyResult<Self> {
        let (arch, config) = config_from(config)?;
        let weights = weights_from_dict(tensors)?;
        Ok(Engine { inner: Arc::new(model::Engine::new(arch, config, &weights, threads, name)?) })
    }

    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads()
    }

    #[getter]
    fn n_vocab(&self) -> usize {
        self.inner.config().n_vocab
    }

    #[getter]
    fn n_ctx(&self) -> usize {
        self.inner.config().n_ctx
    }

    /// Read bandwidth in bytes per second with the engine's threads (`model::Engine::read_bandwidth`).
    #[pyo3(signature = (megabytes = 512, rounds = 3))]
    fn read_bandwidth(&self, py: Python<'_>, megabytes: usize, rounds: usize) -> PyResult<f64> {
        if megabytes == 0 || megabytes > 1 << 16 {
            return Err(refuse(format!("megabytes must be between 1 and 65536, not {megabytes}")));
        }
        let engine = &self.inner;
        Ok(py.detach(|| engine.read_bandwidth(megabytes << 20, rounds)))
    }

    /// A new sequence able to hold `max_seq` positions.
    fn new_session(&self, max_seq: usize) -> PyResult<Session> {
        Ok(Session { engine: self.inner.clone(), inner: self.inner.new_session(max_seq)? })
    }

    /// Runs `tokens[i]` at the next positions of `sessions[i]` in one pass: the weights are read
    /// once for all of them. Returns float32 logits: every row if `all_logits`, else
    /// [len(sessions), n_vocab], the last row of each. `stepwise`: see `model::Pass`;
    /// `within[i]`: (of, first), session i's rows summed as rows first.. of a pass of `of`.
    #[pyo3(signature = (sessions, tokens, all_logits = false, stepwise = false, within = None))]
    fn forward_batch<'py>(
        &self,
        py: Python<'py>,
        sessions: Vec<PyRefMut<'py, Session>>,
        tokens: Vec<Vec<u32>>,
        all_logits: bool,
        stepwise: bool,
        within: Option<Vec<(usize, usize)>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut sessions = sessions;
        if sessions.iter().any(|s| !Arc::ptr_eq(&s.engine, &self.inner)) {
            return Err(refuse("every session must come from this engine".into()));
        }
        let mut inner: Vec<&mut model::Session> = sessions.iter_mut().map(|s| &mut s.inner).collect();
        let token_slices: Vec<&[u32]> = tokens.iter().map(|t| t.as_slice()).collect();
        let engine = &self.inner;
        let within: Option<Vec<model::Within>> = within.map(|w| w.into_iter().map(|(of, first)| model::Within { of, first }).collect());
        let pass = model::Pass { all_logits, stepwise };
        let logits = py.detach(|| engine.forward_batch(&mut inner, &token_slices, pass, within.as_deref()))?;
        logits_array(py, logits, self.inner.config().n_vocab)
    }
}

/// Logits [rows * n_vocab] as a float32 array [rows, n_vocab].
fn logits_array(py: Python<'_>, logits: Vec<f32>, n_vocab: usize) -> PyResult<Bound<'_, PyAny>> {
    let rows = logits.len() / n_vocab;
    Ok(PyArray1::from_vec(py, logits).reshape([rows, n_vocab])?.into_any())
}

/// One sequence: its KV cache and position.
#[pyclass(module = "gptgen._native")]
struct Session {
    engine: Arc<model::Engine>,
    inner: model::Session,
}

#[pymethods]
impl Session {
    /// Runs `tokens` at the next positions. Returns float32 logits [len(tokens), n_vocab]
    /// when `all_logits`, else [1, n_vocab] for the last token. `stepwise`: see `model::Pass`.
    #[pyo3(signature = (tokens, all_logits = false, stepwise = false))]
    fn forward<'py>(&mut self, py: Python<'py>, tokens: Vec<u32>, all_logits: bool, stepwise: bool) -> PyResult<Bound<'py, PyAny>> {
        let engine = &self.engine;
        let session = &mut self.inner;
        let logits = py.detach(|| engine.forward(session, &tokens, model::Pass { all_logits, stepwise }))?;
        logits_array(py, logits, self.engine.config().n_vocab)
    }

    #[getter]
    fn pos(&self) -> usize {
        self.inner.pos
    }

    #[getter]
    fn max_seq(&self) -> usize {
        self.inner.max_seq
    }

    /// Forgets every position from `pos` on (from 0, where a sliding window's ring no longer
    /// holds what `pos` needs: `pos` then says where the session stands).
    fn rewind(&mut self, pos: usize) {
        self.inner.rewind(pos)
    }
}

/// The values of `data`, a whole number of rows of `row_len` elements stored as `dtype`,
/// widened to float32 by the engine's own kernels (for tests and tools).
#[pyfunction]
fn dequantize<'py>(py: Python<'py>, data: PyReadonlyArray1<'py, u8>, dtype: &str, row_len: usize) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let tensor = rows_of(data.as_slice()?, DType::parse(dtype)?, row_len)?;
    Ok(PyArray1::from_vec(py, tensor.to_f32_vec()))
}

/// `bytes` as a tensor of rows of `row_len` elements of `dtype`, copied (into u64 words, so
/// that every block type is aligned).
fn rows_of(bytes: &[u8], dtype: DType, row_len: usize) -> PyResult<Tensor> {
    let (block_elems, block_bytes) = dtype.block();
    if row_len == 0 || !bytes.len().is_multiple_of(block_bytes) {
        return Err(refuse("data is not a whole number of blocks".into()));
    }
    let count = bytes.len() / block_bytes * block_elems;
    if !count.is_multiple_of(row_len) {
        return Err(refuse("data is not a whole number of rows".into()));
    }
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    let storage = Arc::new(TrimmedWords { words, len: bytes.len() });
    Ok(Tensor::new(storage, dtype, vec![count / row_len, row_len])?)
}

/// One quantized weight row (`weights`, stored as `dtype`) times the activations `x`, as a
/// matmul takes it: x quantized to the type's activation format, then the type's dot product
/// (for tests against llama.cpp's kernels).
#[pyfunction]
fn quant_dot(weights: PyReadonlyArray1<'_, u8>, dtype: &str, x: PyReadonlyArray1<'_, f32>) -> PyResult<f32> {
    let dtype = DType::parse(dtype)?;
    let x = x.as_slice()?;
    let tensor = rows_of(weights.as_slice()?, dtype, x.len())?;
    if tensor.shape()[0] != 1 {
        return Err(refuse(format!("weights hold {} rows of {} elements, not one", tensor.shape()[0], x.len())));
    }
    fn dot<B: QuantBlock>(w: &[B], x: &[f32]) -> f32 {
        let mut act = vec![bytemuck::Zeroable::zeroed(); x.len() / <B::Act as ActBlock>::QK];
        B::Act::quantize(x, &mut act);
        B::dot(w, &act)
    }
    with_elems!(tensor.elems(), w =>
        float {
            let _ = w;
            Err(refuse(format!("{} is not a quantized type", dtype.name())))
        },
        quant Ok(dot(w, x))
    )
}

/// u64 words of which the first `len` bytes are data.
struct TrimmedWords {
    words: Vec<u64>,
    len: usize,
}

impl Storage for TrimmedWords {
    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
}

/// Every storage type the engine reads, in its table's order (rust/tensor.rs): (name,
/// elements per block, bytes per block, alignment in bytes); floats are blocks of one.
#[pyfunction]
fn storage_types() -> Vec<(&'static str, usize, usize, usize)> {
    DType::ALL.iter().map(|&t| (t.name(), t.block().0, t.block().1, t.align())).collect()
}

/// The class of a row summed as row `index` of a pass of `of` rows: rows of equal class are
/// summed alike (see `RowPlace::sum_class`).
#[pyfunction]
fn row_sum_class(of: usize, index: usize) -> (bool, bool, bool) {
    crate::quant::RowPlace { seq_rows: of, index }.sum_class()
}

/// The SIMD kernel family in use ("avx2" or "scalar").
#[pyfunction]
fn kernel_name() -> &'static str {
    crate::kernels::kernel_name()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine>()?;
    m.add_class::<Session>()?;
    m.add_function(wrap_pyfunction!(kernel_name, m)?)?;
    m.add_function(wrap_pyfunction!(row_sum_class, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(quant_dot, m)?)?;
    m.add_function(wrap_pyfunction!(storage_types, m)?)?;
    m.add("MAX_THREADS", model::MAX_THREADS)?;
    m.add("PASS_ROWS", model::PASS_ROWS)?;
    Ok(())
}
