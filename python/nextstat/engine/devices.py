"""The one device resolution of the engine: which torch device a ``device`` argument names (the
differentiable session, :class:`nextstat.torch.ProfiledSession`, and the toys,
:func:`nextstat.fit_toys`).

``"auto"`` is CUDA where ``torch.cuda.is_available()``, else the CPU; ``"cuda"`` is the current
CUDA device (``"cuda:N"`` as given); ``"metal"`` is ``"mps"``. A device that is not there, or a
name that is none of these, is a ValueError naming the argument. torch is imported only for a
device other than the CPU.

>>> resolve_device("cpu"), resolve_device("CPU")
('cpu', 'cpu')
"""

from __future__ import annotations

from typing import Any

__all__ = ["resolve_device"]

_KINDS = ("cpu", "cuda", "mps")


def resolve_device(device: Any, *, kinds: tuple[str, ...] = _KINDS) -> str:
    """The canonical name (``"cpu"``, ``"cuda:N"`` or ``"mps"``) of the device that ``device``
    names: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"metal"``, ``"mps"`` or a
    ``torch.device``; ``kinds`` are the device types the caller runs on (module doc)."""
    expected = ", ".join(['"auto"', *(f'"{k}"' for k in kinds), *(['"cuda:N"'] if "cuda" in kinds else []),
                          *(['"metal"'] if "mps" in kinds else [])])
    if isinstance(device, str):
        name = device.strip().lower()
        if name == "cpu":
            return "cpu"
        name = {"metal": "mps"}.get(name, name)
    elif type(device).__name__ == "device" and type(device).__module__ == "torch":
        name = str(device)
    else:
        raise ValueError(f"device: expected {expected} or a torch.device, got {device!r}")
    import torch

    if name == "auto":
        name = "cuda" if "cuda" in kinds and torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device: expected {expected}, got {device!r}") from err
    if dev.type not in kinds:
        raise ValueError(f"device: expected {expected}, got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} requested but CUDA is not available (torch {torch.__version__}, "
                             "torch.cuda.is_available() is False); use 'cpu' or 'auto'")
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if not 0 <= index < torch.cuda.device_count():
            raise ValueError(f"device: {device!r}: there are {torch.cuda.device_count()} CUDA devices")
        return f"cuda:{index}"
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device: {device!r} requested but torch.backends.mps.is_available() is False")
    return dev.type
