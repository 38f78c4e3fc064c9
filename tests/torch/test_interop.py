"""Tests for nextstat.torch.as_tensor: zero-copy where promised, copies where needed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nextstat.torch import as_tensor


def test_tensor_returned_as_is():
    t = torch.arange(3.0)
    assert as_tensor(t) is t
    assert as_tensor(t, dtype=torch.float32, device="cpu") is t
    converted = as_tensor(t, dtype=torch.float64)
    assert converted.dtype == torch.float64
    assert converted.data_ptr() != t.data_ptr()
    cloned = as_tensor(t, copy=True)
    assert cloned is not t and cloned.data_ptr() != t.data_ptr()
    torch.testing.assert_close(cloned, t)


def test_tensor_keeps_autograd_graph():
    t = torch.ones(2, requires_grad=True)
    out = as_tensor(t * 2, dtype=torch.float64)
    out.sum().backward()
    torch.testing.assert_close(t.grad, torch.full((2,), 2.0))


@pytest.mark.parametrize(
    "dtype", [np.float64, np.float32, np.float16, np.int64, np.uint8, np.bool_, np.complex128]
)
def test_numpy_shares_memory(dtype):
    a = np.arange(6).astype(dtype)
    t = as_tensor(a)
    assert t.data_ptr() == a.ctypes.data
    assert t.dtype == torch.from_numpy(np.zeros(1, dtype)).dtype
    assert t.shape == (6,)


def test_numpy_modify_one_see_other():
    a = np.zeros((2, 3))
    t = as_tensor(a)
    t[1, 2] = 7.0
    assert a[1, 2] == 7.0
    a[0, 0] = -1.0
    assert t[0, 0].item() == -1.0


def test_numpy_non_contiguous_shared():
    base = np.arange(24.0).reshape(4, 6)
    view = base[::2, 1::2]  # positive strides: shared, strided tensor
    assert not view.flags.c_contiguous
    t = as_tensor(view)
    np.testing.assert_array_equal(t.numpy(), view)
    t[0, 0] = 100.0
    assert base[0, 1] == 100.0


def test_numpy_fortran_order_shared():
    a = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    t = as_tensor(a)
    assert t.data_ptr() == a.ctypes.data
    np.testing.assert_array_equal(t.numpy(), a)


def test_numpy_read_only_shared_without_warning():
    # pyproject turns warnings into errors: torch.from_numpy would warn here
    a = np.arange(4.0)
    a.flags.writeable = False
    t = as_tensor(a)
    assert t.data_ptr() == a.ctypes.data
    np.testing.assert_array_equal(t.numpy(), a)

    broadcast = np.broadcast_to(np.arange(3.0), (4, 3))  # read-only, zero stride
    tb = as_tensor(broadcast)
    assert tb.data_ptr() == broadcast.ctypes.data
    assert tb.stride() == (0, 1)
    np.testing.assert_array_equal(tb.numpy(), broadcast)

    copied = as_tensor(a, copy=True)
    assert copied.data_ptr() != a.ctypes.data
    copied[0] = 5.0  # fresh memory, safe to modify
    assert a[0] == 0.0


def test_numpy_negative_strides_copied():
    base = np.arange(12.0).reshape(3, 4)
    reversed_view = base[::-1, ::-2]
    t = as_tensor(reversed_view)
    np.testing.assert_array_equal(t.numpy(), reversed_view)
    t[0, 0] = -5.0
    assert base[2, 3] == 11.0  # a copy
    with pytest.raises(ValueError, match="x: copy=False.*negative strides"):
        as_tensor(reversed_view, copy=False)
    ro = base[::-1]
    ro.flags.writeable = False
    np.testing.assert_array_equal(as_tensor(ro).numpy(), ro)


def test_numpy_non_native_byte_order_copied():
    a = np.arange(3.0).astype(">f8")
    t = as_tensor(a)
    assert t.dtype == torch.float64
    np.testing.assert_array_equal(t.numpy(), [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="byte order"):
        as_tensor(a, copy=False)


def test_numpy_scalar_and_0d():
    assert as_tensor(np.float32(2.5)).dtype == torch.float32
    t = as_tensor(np.array(3.0))
    assert t.shape == () and t.item() == 3.0


@pytest.mark.parametrize(
    ("value", "dtype", "shape"),
    [
        ([1.0, 2.0, 3.0], torch.float64, (3,)),  # float64, not torch's float32 default
        ((1, 2), torch.int64, (2,)),
        ([[True], [False]], torch.bool, (2, 1)),
        (2.5, torch.float64, ()),
        (7, torch.int64, ()),
        ([1 + 2j], torch.complex128, (1,)),
        ([], torch.float64, (0,)),
    ],
)
def test_python_objects(value, dtype, shape):
    t = as_tensor(value)
    assert t.dtype == dtype
    assert t.shape == shape
    np.testing.assert_array_equal(t.numpy(), np.asarray(value))


def test_python_list_copy_false_raises():
    with pytest.raises(ValueError, match="x: copy=False, but a list"):
        as_tensor([1.0, 2.0], copy=False)


def test_dtype_and_device_honoured():
    a = np.arange(3, dtype=np.int32)
    t = as_tensor(a, dtype=torch.float64, device="cpu")
    assert t.dtype == torch.float64 and t.device.type == "cpu"
    assert t.data_ptr() != a.ctypes.data  # conversion copies
    t = as_tensor(a, device=torch.device("cpu"))
    assert t.data_ptr() == a.ctypes.data  # same device: still shared
    t = as_tensor([1, 2], dtype=torch.float32)
    assert t.dtype == torch.float32
    assert as_tensor(a, device="meta").device.type == "meta"
    with pytest.raises(ValueError, match="x: copy=False, but converting torch.int32"):
        as_tensor(a, dtype=torch.float64, copy=False)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_cuda():
    t = as_tensor(np.arange(3.0), device="cuda")
    assert t.device.type == "cuda"
    assert as_tensor(t) is t


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_arrays_shared():
    """CuPy and JAX arrays on the GPU arrive as CUDA tensors over the same memory (DLPack)."""
    cp = pytest.importorskip("cupy")
    x = cp.arange(4.0)
    t = as_tensor(x)
    assert t.device.type == "cuda" and t.dtype == torch.float64 and t.data_ptr() == x.data.ptr
    jax = pytest.importorskip("jax")
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        pytest.skip("JAX has no GPU backend here")
    j = jax.device_put(np.arange(3.0, dtype=np.float32), gpus[0])
    tj = as_tensor(j)
    assert tj.device.type == "cuda" and tj.data_ptr() == j.unsafe_buffer_pointer()
    assert tj.tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x": ["a", "b"]}, "x: expected a numeric .* got NumPy dtype <U1"),
        ({"x": None}, "x: expected a numeric .* got NumPy dtype object"),
        ({"x": np.array(["2020-01-01"], dtype="datetime64[D]")}, "datetime64"),
        ({"x": [[1.0], [1.0, 2.0]]}, "x: expected an array-like of numbers, got list"),
        ({"x": [1.0], "dtype": np.float64}, "dtype: expected a torch.dtype"),
        ({"x": [1.0], "dtype": "float64"}, "dtype: expected a torch.dtype"),
        ({"x": [1.0], "device": "gpu7"}, "device: expected a torch.device"),
        ({"x": [1.0], "copy": "yes"}, "copy: expected None, True or False"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        as_tensor(**kwargs)


class _DLPackOnly:
    """An object exposing only the DLPack protocol (like CuPy or other libraries)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_generic_dlpack_object_shared():
    a = np.arange(5.0)
    t = as_tensor(_DLPackOnly(a))
    assert t.data_ptr() == a.ctypes.data
    copied = as_tensor(_DLPackOnly(a), copy=True)
    assert copied.data_ptr() != a.ctypes.data


class _NegativeStrides(_DLPackOnly):
    """A reversed view, as CuPy exposes one: negative ``strides`` and a ``copy()``."""

    strides = (-8,)

    def copy(self):
        return _DLPackOnly(np.ascontiguousarray(self._array[::-1]))


def test_generic_dlpack_negative_strides_copied():
    # torch.from_dlpack would abort the interpreter on negative strides
    a = np.arange(4.0)
    t = as_tensor(_NegativeStrides(a))
    assert t.tolist() == [3.0, 2.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="x: copy=False.*negative strides"):
        as_tensor(_NegativeStrides(a), copy=False)


def test_jax_cpu_shared():
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    cpu = jax.devices("cpu")[0]  # JAX's default device is a GPU where one is present
    x = jax.device_put(jnp.array([10.0, 20.0, 30.0, 40.0]), cpu)
    t = as_tensor(x)
    assert t.device.type == "cpu"
    assert t.dtype == torch.float32  # JAX default without x64
    assert t.data_ptr() == x.unsafe_buffer_pointer()
    np.testing.assert_array_equal(t.numpy(), np.asarray(x))
    d = as_tensor(x).double()  # the seed's usage
    assert d.dtype == torch.float64
    i = as_tensor(jax.device_put(jnp.arange(3), cpu))
    assert not i.is_floating_point() and i.tolist() == [0, 1, 2]
    assert as_tensor(x, dtype=torch.float64).dtype == torch.float64
    x64 = jax.device_put(np.arange(3.0), cpu)  # float32 unless jax_enable_x64
    assert as_tensor(x64).data_ptr() == x64.unsafe_buffer_pointer()


def test_arrow_shared():
    pa = pytest.importorskip("pyarrow")
    arr = pa.array([1.0, 2.0, 3.0], type=pa.float64())
    t = as_tensor(arr)
    assert t.dtype == torch.float64
    assert t.data_ptr() == arr.buffers()[1].address
    np.testing.assert_array_equal(t.numpy(), [1.0, 2.0, 3.0])
    ints = pa.array([1, 2, 3], type=pa.int32())
    ti = as_tensor(ints, copy=False)
    assert ti.dtype == torch.int32
    assert ti.data_ptr() == ints.buffers()[1].address
    sliced = arr.slice(1)  # offset into the same buffer
    assert as_tensor(sliced).data_ptr() == arr.buffers()[1].address + 8

    one_chunk = pa.chunked_array([arr])
    assert as_tensor(one_chunk).data_ptr() == arr.buffers()[1].address


def test_arrow_copies_and_errors():
    pa = pytest.importorskip("pyarrow")
    chunked = pa.chunked_array([[1.0, 2.0], [3.0]])
    t = as_tensor(chunked)
    np.testing.assert_array_equal(t.numpy(), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="ChunkedArray with 2 chunks"):
        as_tensor(chunked, copy=False)
    booleans = pa.array([True, False, True])
    assert as_tensor(booleans).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="no zero-copy NumPy view"):
        as_tensor(booleans, copy=False)
    with pytest.raises(ValueError, match="x: Arrow array has 1 null"):
        as_tensor(pa.array([1.0, None]))
    with pytest.raises(ValueError, match="x: expected a numeric"):
        as_tensor(pa.array(["a", "b"]))
