"""Differentiable (soft) histogram of per-event scores."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import nn

__all__ = ["SoftHistogram"]

_MODES = ("kde", "sigmoid")

# bandwidth="auto": the normal-reference rule, clipped to this range of fractions
# of the narrowest bin width.
_AUTO_MIN_FRACTION = 0.05
_AUTO_MAX_FRACTION = 0.5


class SoftHistogram(nn.Module):
    r"""Differentiable weighted histogram: each event spreads over bins with a smooth kernel.

    For an event with score :math:`x` and weight :math:`w`, bin
    :math:`[e_j, e_{j+1})` receives :math:`w\,K_j(x)` with

    * ``mode="kde"`` (Gaussian kernel): the probability mass of
      :math:`\mathcal{N}(x, h^2)` inside the bin,
      :math:`K_j(x) = \Phi\big((e_{j+1}-x)/h\big) - \Phi\big((e_j-x)/h\big)`;
    * ``mode="sigmoid"``: :math:`K_j(x) = \sigma\big((x-e_j)/h\big) - \sigma\big((x-e_{j+1})/h\big)`
      with the logistic function :math:`\sigma`, i.e. the mass of a logistic
      distribution of scale :math:`h` (standard deviation :math:`\pi h/\sqrt3`).

    Both kernels sum over all bins to the mass inside :math:`[e_0, e_B]`, so an
    event far inside the range contributes its full weight, and as
    :math:`h \to 0` the output tends to the hard histogram
    ``numpy.histogram(x, bin_edges, weights=w)``. There is no under/overflow:
    mass outside :math:`[e_0, e_B]` is dropped. Gradients flow to scores and
    weights. Cost and memory: :math:`O(N \cdot B)` for :math:`N` events and
    :math:`B` bins.

    ``bandwidth="auto"`` chooses :math:`h` per call (without gradient) from the
    batch: the normal-reference (Silverman/Scott) rule
    :math:`h = 1.06\,\hat\sigma\,n_\mathrm{eff}^{-1/5}`, where :math:`\hat\sigma`
    is the standard deviation of the scores weighted by :math:`|w|` and
    :math:`n_\mathrm{eff} = (\sum|w|)^2/\sum w^2` is the effective number of
    events; then clipped to :math:`[0.05, 0.5]` times the narrowest bin width,
    so that bins stay distinguishable and the kernel never collapses. For
    batched scores ``[..., N]`` each row gets its own :math:`h`.

    Args:
        bin_edges: Bin edges, shape ``[B + 1]`` with ``B >= 1``, strictly
            increasing and finite, in score units (tensor, array or list).
        bandwidth: Kernel width :math:`h > 0` in score units, or ``"auto"``.
            Smaller is sharper but gives noisier gradients.
        mode: ``"kde"`` (Gaussian, recommended for training) or ``"sigmoid"``.

    Shapes:
        * ``scores``: ``[..., N]`` floating tensor (usually ``[N]``).
        * ``weights``: ``None`` (all ones) or a tensor of the same shape on the
          same device.
        * output: ``[..., B]`` expected event counts, with dtype
          ``torch.promote_types(scores.dtype, weights.dtype)`` and the device of
          ``scores``.

    Raises:
        ValueError: invalid ``bin_edges``, ``bandwidth`` or ``mode`` (in
            ``__init__``); ``scores``/``weights`` of the wrong type, dtype, shape
            or device (in ``forward``).

    Example:
        >>> import torch
        >>> soft_hist = SoftHistogram(torch.linspace(0.0, 1.0, 3), bandwidth=1e-3)
        >>> scores = torch.tensor([0.25, 0.3, 0.75], dtype=torch.float64)
        >>> soft_hist(scores, torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
        tensor([3.0000, 0.5000], dtype=torch.float64)
    """

    bin_edges: torch.Tensor

    def __init__(
        self,
        bin_edges: torch.Tensor | np.ndarray | list[float],
        bandwidth: float | Literal["auto"] = 0.05,
        mode: Literal["kde", "sigmoid"] = "kde",
    ) -> None:
        super().__init__()
        edges = _validate_edges(bin_edges)
        if isinstance(bandwidth, str):
            if bandwidth != "auto":
                raise ValueError(
                    f'bandwidth: expected a positive float or "auto", got {bandwidth!r}'
                )
        elif isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)):
            raise ValueError(
                f'bandwidth: expected a positive float or "auto", got {type(bandwidth).__name__}'
            )
        elif not (math.isfinite(bandwidth) and bandwidth > 0):
            raise ValueError(f"bandwidth: expected a finite value > 0, got {bandwidth!r}")
        if mode not in _MODES:
            raise ValueError(f'mode: expected "kde" or "sigmoid", got {mode!r}')

        self.register_buffer("bin_edges", torch.from_numpy(edges))
        self.bandwidth: float | Literal["auto"] = (
            "auto" if bandwidth == "auto" else float(bandwidth)
        )
        self.mode: Literal["kde", "sigmoid"] = mode
        self._min_width = float(np.min(np.diff(edges)))
        self._range_center = 0.5 * float(edges[0] + edges[-1])

    @property
    def n_bins(self) -> int:
        """Number of bins ``B``."""
        return self.bin_edges.numel() - 1

    def extra_repr(self) -> str:
        return f"n_bins={self.n_bins}, bandwidth={self.bandwidth!r}, mode={self.mode!r}"

    def forward(self, scores: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Soft histogram of ``scores`` weighted by ``weights``.

        Args:
            scores: Floating tensor ``[..., N]`` of event scores.
            weights: Tensor of the same shape and device, or ``None`` for unit weights.

        Returns:
            Tensor ``[..., B]`` of soft bin counts (sum of weights per bin).
        """
        if not isinstance(scores, torch.Tensor):
            raise ValueError(f"scores: expected a torch.Tensor, got {type(scores).__name__}")
        if not scores.is_floating_point():
            raise ValueError(f"scores: expected a floating-point dtype, got {scores.dtype}")
        if scores.ndim < 1:
            raise ValueError("scores: expected shape [..., N] with at least 1 dimension, got []")
        if weights is None:
            weights = torch.ones_like(scores)
        elif not isinstance(weights, torch.Tensor):
            raise ValueError(
                f"weights: expected a torch.Tensor or None, got {type(weights).__name__}"
            )
        else:
            if weights.is_complex():
                raise ValueError(f"weights: expected a real dtype, got {weights.dtype}")
            if weights.shape != scores.shape:
                raise ValueError(
                    f"weights: expected shape {list(scores.shape)} (same as scores), "
                    f"got {list(weights.shape)}"
                )
            if weights.device != scores.device:
                raise ValueError(
                    f"weights: expected device {scores.device} (same as scores), "
                    f"got {weights.device}"
                )
        for name, t in (("scores", scores), ("weights", weights)):
            if t.device.type != "meta" and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name}: expected finite values, got NaN or inf")
        dtype = torch.promote_types(scores.dtype, weights.dtype)  # floating, as scores is
        scores = scores.to(dtype)
        weights = weights.to(dtype)
        edges = self.bin_edges.to(device=scores.device, dtype=dtype)

        h = self._bandwidth(scores, weights)  # float or [..., 1, 1]
        x = scores.unsqueeze(-1)  # [..., N, 1]
        z = (edges - x) / h  # [..., N, B + 1]
        # Per event, K_j = F(z_{j+1}) - F(z_j) for the kernel CDF F. Since
        # F(-z) = 1 - F(z), s * F(s * z) differs from F(z) by a per-event constant
        # that cancels in the difference; s = -1 for events in the lower half of
        # the range keeps F away from 1 on the bins near the event, avoiding
        # cancellation in 1 - 1 (matters in float32 and for tail gradients).
        s = torch.where(x >= self._range_center, 1.0, -1.0).to(dtype)
        cdf = torch.special.ndtr if self.mode == "kde" else torch.sigmoid
        kernel = torch.diff(s * cdf(s * z), dim=-1)  # [..., N, B]
        return (weights.unsqueeze(-2) @ kernel).squeeze(-2)

    def _bandwidth(self, scores: torch.Tensor, weights: torch.Tensor) -> float | torch.Tensor:
        if self.bandwidth != "auto":
            return self.bandwidth
        with torch.no_grad():
            w = weights.detach().abs()
            x = scores.detach()
            sum_w = w.sum(dim=-1, keepdim=True)
            safe_sum_w = torch.where(sum_w > 0, sum_w, torch.ones_like(sum_w))
            mean = (w * x).sum(dim=-1, keepdim=True) / safe_sum_w
            var = (w * (x - mean) ** 2).sum(dim=-1, keepdim=True) / safe_sum_w
            sum_w2 = (w * w).sum(dim=-1, keepdim=True)
            n_eff = sum_w**2 / torch.where(sum_w2 > 0, sum_w2, torch.ones_like(sum_w2))
            h = 1.06 * var.sqrt() * n_eff.clamp(min=1.0) ** -0.2
            h = torch.nan_to_num(h, nan=0.0, posinf=math.inf)
            h = h.clamp(
                min=_AUTO_MIN_FRACTION * self._min_width,
                max=_AUTO_MAX_FRACTION * self._min_width,
            )
        return h.unsqueeze(-1)  # [..., 1, 1]


def _validate_edges(bin_edges: object) -> np.ndarray:
    if isinstance(bin_edges, torch.Tensor):
        array = bin_edges.detach().cpu().numpy()
    else:
        try:
            array = np.asarray(bin_edges)
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"bin_edges: expected a 1-D array of numbers, got {type(bin_edges).__name__}"
            ) from err
    if array.dtype.kind not in "iuf":
        raise ValueError(f"bin_edges: expected a real numeric dtype, got {array.dtype}")
    if array.ndim != 1 or array.shape[0] < 2:
        raise ValueError(f"bin_edges: expected shape [B + 1] with B >= 1, got {list(array.shape)}")
    edges = array.astype(np.float64)
    if not np.all(np.isfinite(edges)):
        raise ValueError(f"bin_edges: expected finite values, got {edges.tolist()}")
    if not np.all(np.diff(edges) > 0):
        raise ValueError(f"bin_edges: expected strictly increasing values, got {edges.tolist()}")
    return edges
