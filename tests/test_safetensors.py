"""gptgen's memory-mapped safetensors reader against the `safetensors` library, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from checkpoints import f32_to_bf16_bits, write_safetensors

from gptgen.errors import GptgenError
from gptgen.loading.safetensors import read_safetensors


def test_reader_agrees_with_the_safetensors_library(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "a": rng.standard_normal((3, 5)).astype(np.float32),
        "b": rng.standard_normal((7,)).astype(np.float16),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"format": "np"})
    views = read_safetensors(path)
    assert set(views) == set(tensors)
    for name, values in tensors.items():
        view = views[name]
        assert view.shape == values.shape
        assert not view.data.flags.writeable
        np.testing.assert_array_equal(view.to_numpy(), values.astype(np.float32))


def test_bfloat16_is_read_without_loss(tmp_path):
    values = np.array([[1.0, -2.5, 3.140625], [1e-3, 65504.0, -0.0]], dtype=np.float32)
    path = tmp_path / "bf.safetensors"
    write_safetensors(path, {"w": values}, "bf16")
    view = read_safetensors(path)["w"]
    assert view.dtype == "bf16"
    expected = (f32_to_bf16_bits(values).astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(view.to_numpy(), expected)


def test_misaligned_tensor_is_copied_to_an_aligned_buffer(tmp_path):
    path = tmp_path / "odd.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [1, 9]}}).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" + np.array([1.5, -2.0], "<f4").tobytes())
    view = read_safetensors(path)["w"]
    assert view.data.ctypes.data % 4 == 0
    np.testing.assert_array_equal(view.to_numpy(), [1.5, -2.0])


def _file_with_header(tmp_path, header: bytes, data: bytes = b"") -> object:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)
    return path


@pytest.mark.parametrize(
    "header, data, message",
    [
        (b"{not json", b"", "not valid JSON"),
        (b"[1, 2]", b"", "not a JSON object"),
        (json.dumps({"w": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}).encode(), bytes(8), "unsupported dtype"),
        (json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode(), bytes(8), "outside the file"),
        (json.dumps({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode(), bytes(8), "needs 12 bytes"),
        (json.dumps({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}).encode(), bytes(4), "shape"),
        (json.dumps({"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 4]}}).encode(), bytes(4), "needs"),
        (b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', bytes(8), "names 'w' twice"),
    ],
)
def test_malformed_files_raise_clear_errors(tmp_path, header, data, message):
    with pytest.raises(GptgenError, match=message):
        read_safetensors(_file_with_header(tmp_path, header, data))


def test_header_length_past_the_end(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes((10**6).to_bytes(8, "little") + b"{}")
    with pytest.raises(GptgenError, match="past the end"):
        read_safetensors(path)
    path.write_bytes(b"abc")
    with pytest.raises(GptgenError, match="too short"):
        read_safetensors(path)
