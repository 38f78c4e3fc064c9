"""Conversion of array-like objects from other libraries to :class:`torch.Tensor`.

:func:`as_tensor` is the single entry point. It shares memory with the source
whenever the source allows it (NumPy buffer protocol, DLPack, Arrow buffers)
and copies only when it must; the rules are listed in its docstring.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["as_tensor"]

# NumPy dtype kinds torch can represent: bool, signed/unsigned int, float, complex.
_NUMERIC_KINDS = "biufc"


def as_tensor(
    x: Any,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    copy: bool | None = None,
) -> torch.Tensor:
    """Convert an array-like object to a :class:`torch.Tensor`, without copying when possible.

    Accepted inputs, and when their memory is shared with the result
    (``copy=None``, ``dtype`` and ``device`` left as ``None`` or already matching):

    ===========================  ====================================================
    input                        result
    ===========================  ====================================================
    ``torch.Tensor``             returned as is (same object).
    NumPy ``ndarray``            shared (``torch.from_numpy``; read-only arrays go
                                 through DLPack). Copied when the byte order is not
                                 native or a stride is negative (``a[::-1]``),
                                 which torch tensors cannot express.
    JAX / CuPy / any object      shared through DLPack (``torch.from_dlpack``), on the
    with ``__dlpack__``          source's device. An object with negative
                                 ``strides`` (a reversed CuPy view) is first copied
                                 with its own ``copy()``.
    ``pyarrow.Array``            shared for null-free numeric arrays
                                 (``to_numpy(zero_copy_only=True)``); copied for
                                 boolean arrays (Arrow packs them as bits).
    ``pyarrow.ChunkedArray``     shared when it has one chunk, otherwise the chunks
                                 are concatenated (a copy).
    list, tuple, scalar, other   always a new tensor, built with ``numpy.asarray``,
    objects with ``__array__``   so Python floats become ``torch.float64`` (not
                                 torch's default float32) and ints ``torch.int64``;
                                 ``__array__`` objects (pandas) may be shared if
                                 NumPy shares them.
    ===========================  ====================================================

    Memory that its owner declares immutable (a read-only NumPy array, a JAX
    array, an Arrow buffer) is shared too, but torch has no read-only tensors:
    do not modify the result in place (pass ``copy=True`` if you need to).

    Args:
        x: Array-like object of any shape ``[...]``.
        dtype: Target ``torch.dtype``; ``None`` keeps the source dtype. A
            different dtype means a copy.
        device: Target device (``"cpu"``, ``"cuda:0"``, ``torch.device``);
            ``None`` keeps the source device. A different device means a copy.
        copy: ``None`` (default) copies only when needed; ``True`` always returns
            a tensor owning fresh memory; ``False`` never copies and raises
            ``ValueError`` where a copy would be needed.

    Returns:
        Tensor with the shape of ``x``, on ``device`` (or the source device) with
        ``dtype`` (or the source dtype).

    Raises:
        ValueError: ``x`` has no numeric representation (strings, objects, dates),
            is an Arrow array with nulls, or needs a copy while ``copy=False``;
            ``dtype``, ``device`` or ``copy`` is invalid.

    Example:
        >>> import numpy as np
        >>> a = np.array([1.0, 2.0, 3.0])
        >>> t = as_tensor(a)
        >>> t[0] = 10.0
        >>> float(a[0])
        10.0
        >>> as_tensor([1.0, 2.0]).dtype
        torch.float64
    """
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype: expected a torch.dtype or None, got {dtype!r}")
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"device: expected a torch.device, a device string or None, got {device!r}"
            ) from err
    if copy not in (None, True, False):
        raise ValueError(f"copy: expected None, True or False, got {copy!r}")

    tensor, copied = _to_tensor(x, allow_copy=copy is not False)

    needs_move = (dtype is not None and tensor.dtype != dtype) or (
        device is not None and tensor.device != device
    )
    if needs_move:
        if copy is False:
            raise ValueError(
                f"x: copy=False, but converting {tensor.dtype} on {tensor.device} to "
                f"{dtype or tensor.dtype} on {device or tensor.device} needs a copy"
            )
        tensor = tensor.to(device=device, dtype=dtype)
        copied = True
    if copy is True and not copied:
        tensor = tensor.clone()
    return tensor


def _to_tensor(x: Any, *, allow_copy: bool) -> tuple[torch.Tensor, bool]:
    """Return ``(tensor, copied)`` for ``x`` with its own dtype and device."""
    if isinstance(x, torch.Tensor):
        return x, False
    if isinstance(x, np.ndarray):
        return _from_numpy(x, allow_copy=allow_copy)
    if _is_arrow(x):
        return _from_arrow(x, allow_copy=allow_copy)
    if hasattr(x, "__dlpack__"):
        return _from_dlpack(x, allow_copy=allow_copy)
    # Python scalars, lists, tuples, np.generic, objects with __array__.
    is_python = isinstance(x, (list, tuple, int, float, complex, bool))
    if is_python and not allow_copy:
        raise ValueError(
            f"x: copy=False, but a {type(x).__name__} has no buffer to share; "
            "it must be copied into a tensor"
        )
    try:
        array = np.asarray(x)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"x: expected an array-like of numbers, got {type(x).__name__} that NumPy "
            f"cannot convert ({err})"
        ) from err
    tensor, copied = _from_numpy(array, allow_copy=allow_copy)
    return tensor, copied or is_python


def _from_numpy(array: np.ndarray, *, allow_copy: bool) -> tuple[torch.Tensor, bool]:
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(
            f"x: expected a numeric (bool, int, float, complex) array, got NumPy dtype "
            f"{array.dtype}"
        )
    copied = False
    if not array.dtype.isnative:
        _require_copy(allow_copy, f"its byte order ({array.dtype.str}) is not native")
        array = array.astype(array.dtype.newbyteorder("="))
        copied = True
    if any(s < 0 for s in array.strides):
        # torch has no negative strides; torch.from_dlpack even aborts the process on them.
        _require_copy(allow_copy, f"it has negative strides {array.strides}")
        array = np.ascontiguousarray(array)
        copied = True
    if array.flags.writeable:
        return torch.from_numpy(array), copied
    # torch.from_numpy warns on read-only arrays; DLPack shares them silently.
    return torch.from_dlpack(array), copied


def _is_arrow(x: Any) -> bool:
    return type(x).__module__.partition(".")[0] == "pyarrow" and hasattr(x, "to_numpy")


def _from_arrow(x: Any, *, allow_copy: bool) -> tuple[torch.Tensor, bool]:
    import pyarrow as pa  # only reached for pyarrow objects, so pyarrow is installed

    copied = False
    if isinstance(x, pa.ChunkedArray):
        if x.num_chunks == 1:
            x = x.chunk(0)
        else:
            _require_copy(allow_copy, f"it is a ChunkedArray with {x.num_chunks} chunks")
            x = x.combine_chunks()
            copied = True
    if not isinstance(x, pa.Array):
        raise ValueError(
            f"x: expected a pyarrow.Array or pyarrow.ChunkedArray, got {type(x).__name__}"
        )
    if x.null_count:
        raise ValueError(
            f"x: Arrow array has {x.null_count} null(s); fill them first, e.g. with "
            "pyarrow.compute.fill_null"
        )
    try:
        array = x.to_numpy(zero_copy_only=True)
    except (pa.ArrowInvalid, NotImplementedError):
        _require_copy(allow_copy, f"Arrow type {x.type} has no zero-copy NumPy view")
        array = x.to_numpy(zero_copy_only=False)
        copied = True
    tensor, numpy_copied = _from_numpy(array, allow_copy=allow_copy)
    return tensor, copied or numpy_copied


def _from_dlpack(x: Any, *, allow_copy: bool) -> tuple[torch.Tensor, bool]:
    copied = False
    strides = getattr(x, "strides", None)
    if isinstance(strides, tuple) and any(s < 0 for s in strides):
        # torch.from_dlpack aborts the interpreter on negative strides (torch 2.x).
        _require_copy(allow_copy, f"it has negative strides {strides}")
        x = x.copy()
        copied = True
    try:
        return torch.from_dlpack(x), copied
    except (BufferError, RuntimeError, TypeError) as err:
        raise ValueError(
            f"x: {type(x).__name__} exposes __dlpack__ but torch cannot import it ({err})"
        ) from err


def _require_copy(allow_copy: bool, reason: str) -> None:
    if not allow_copy:
        raise ValueError(f"x: copy=False, but the input must be copied because {reason}")
