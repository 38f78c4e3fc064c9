"""PyTorch layer of NextStat: differentiable histograms and array interoperability."""

from __future__ import annotations

from nextstat.torch.interop import as_tensor
from nextstat.torch.soft_histogram import SoftHistogram

__all__ = [
    "SoftHistogram",
    "as_tensor",
]
