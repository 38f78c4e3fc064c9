"""PyTorch layer of NextStat: differentiable histograms, the profiled significance, CLs and POI
variance as losses (with gradients through histosys templates), and array interoperability."""

from __future__ import annotations

from nextstat.torch.interop import as_tensor
from nextstat.torch.session import ProfiledSession
from nextstat.torch.significance import (
    SignificanceLoss,
    batch_profiled_q0_loss,
    profiled_cls_loss,
    profiled_poi_variance_loss,
    profiled_q0_loss,
    profiled_qmu_loss,
    signal_jacobian,
    signal_jacobian_numpy,
)
from nextstat.torch.soft_histogram import SoftHistogram

__all__ = [
    "ProfiledSession",
    "SignificanceLoss",
    "SoftHistogram",
    "as_tensor",
    "batch_profiled_q0_loss",
    "profiled_cls_loss",
    "profiled_poi_variance_loss",
    "profiled_q0_loss",
    "profiled_qmu_loss",
    "signal_jacobian",
    "signal_jacobian_numpy",
]
